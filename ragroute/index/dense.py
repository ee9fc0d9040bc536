"""Dense retrieval on faiss: exact inner product by default, HNSW and IVF-PQ as options.

Vectors are L2-normalised by the encoder, so inner product is cosine similarity.
Documents keep stable integer ids (see :class:`DocumentStore`), so ``add`` and
``delete`` never renumber anything. HNSW cannot remove vectors, so deleted
documents stay in its graph as tombstones and are excluded at search time; the
other kinds remove them physically.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ragroute.draws import drawn
from ragroute.encode.base import Encoder
from ragroute.errors import (
    EncoderMismatchError,
    IndexFormatError,
    RagrouteError,
    check_k,
    check_query_vectors,
)
from ragroute.index.docstore import DocumentStore, check_have_text
from ragroute.index.local import VectorIndex
from ragroute.store.arrays import numpy_read
from ragroute.types import Document, Hit

FAISS_NAME = "dense.faiss"
EXACT_NAME = "exact.npy"  # float32 vectors by internal id, for re-ranking IVF-PQ candidates
FACTORIES = ("flat", "hnsw", "ivfpq")
MIN_POINTS_PER_LIST = 39  # faiss k-means: fewer training points per centroid than this warns
SMALL_BATCH = 20  # faiss's own threshold below which flat search does not use BLAS


HNSW_EXACT_BELOW = 4096
"""An HNSW search that a filter, a caller's scope or deleted documents restrict to at most this
many documents scans them exactly (their stored vectors) instead of walking the graph, whose
``ef_search`` candidates hold few of them (a 10-document filter got 7 of its 10, not the best)."""


@dataclass
class DenseParams:
    """How the faiss index is laid out and searched.

    ``factory``: ``flat`` (exact), ``hnsw`` (graph, fast, approximate, no physical
    delete) or ``ivfpq`` (inverted lists + product quantisation, small memory).
    ``refine`` (IVF-PQ): read ``k x refine`` candidates from the codes and re-rank them by the
    exact inner product with the float32 vectors, kept in ``exact.npy`` (0: no re-ranking, no
    vectors kept). ``train_sample``: at most this many vectors train the coarse quantiser and
    the codebooks (a random sample of the first batch added), raised to 39 per inverted list
    when the lists need more (faiss's k-means minimum), and to the 4 x max(lists, 2^pq_bits)
    training takes at all. ``mmap``: load the faiss index and
    the exact vectors memory-mapped, so an index larger than RAM can be queried (pages are read
    on demand; the first queries are slower).
    """

    factory: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16
    pq_m: int | None = None
    pq_bits: int = 8
    refine: int = 0
    train_sample: int = 100_000
    mmap: bool = False

    def __post_init__(self) -> None:
        if self.factory not in FACTORIES:
            raise RagrouteError(
                f"unknown dense index type {self.factory!r}: choose one of {', '.join(FACTORIES)}"
            )
        # until session 41 only refine, ivf_nlist and ivf_nprobe were checked: hnsw_m=0 aborted the
        # process in faiss, hnsw_m=-1 hung, pq_bits=0 crashed it and ef_search=-5 passed unnoticed
        for name, (least, most, does) in _INTEGER_FIELDS.items():
            _check_integer(name, getattr(self, name), least, most, does)
            if isinstance(getattr(self, name), np.integer):  # faiss's constructors and JSON take int only
                setattr(self, name, int(getattr(self, name)))
        if self.refine and self.factory != "ivfpq":
            raise RagrouteError(f"refine applies to ivfpq indexes only, as a factor >= 1 (got {self.refine})")
        if not isinstance(self.mmap, bool):
            raise RagrouteError(f"mmap must be True or False (got {self.mmap!r})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DenseParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


_INTEGER_FIELDS: dict[str, tuple[int, int | None, str]] = {
    # field: (least, most, what it is), as faiss accepts them
    "hnsw_m": (2, None, "the links per HNSW node"),
    "ef_construction": (1, None, "the HNSW candidates kept while inserting"),
    "ef_search": (1, None, "the HNSW candidates kept while searching"),
    "ivf_nlist": (1, None, ""),
    "ivf_nprobe": (1, None, ""),
    "pq_m": (1, None, "the sub-vectors of a PQ code, a divisor of the dimension"),
    "pq_bits": (1, 16, "the bits per PQ sub-vector code"),
    "refine": (0, None, "0 is off, N re-ranks N x k candidates"),
    "train_sample": (0, None, "0 trains on every vector"),
}
"""The integer fields of :class:`DenseParams` with their least and most values (None: no bound)
and what they are; ``ivf_nlist`` and ``pq_m`` may be None (chosen from the data)."""


def _check_integer(name: str, value: Any, least: int, most: int | None, does: str) -> None:
    """``value`` of field ``name`` as an integer in [``least``, ``most``] (None passes for the
    fields chosen from the data), else a one-line :class:`RagrouteError`."""
    if value is None and name in ("ivf_nlist", "pq_m"):
        return
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if integer and value >= least and (most is None or value <= most):
        return
    if most is not None:
        wanted = f"an integer from {least} to {most}"
    elif least == 1:
        wanted = "a positive integer"
    else:
        wanted = f"an integer >= {least}"
    about = f": {does}" if does else ""
    raise RagrouteError(f"{name} must be {wanted}{about} (got {value!r})")


def check_encoder(
    recorded: Mapping[str, Any] | None, model_id: str, dim: int | None, where: str, encoder: Any = None
) -> None:
    """Raise :class:`EncoderMismatchError` unless ``model_id`` (and ``dim``, when known) match the
    record, and ``encoder`` (when given) has the recorded weights (:mod:`ragroute.encode.identity`)."""
    if not recorded:
        raise IndexFormatError(f"{where}: manifest records no encoder for a dense index")
    from ragroute.encode.identity import check_weights, same_model

    if not same_model(recorded, model_id, dim, encoder):
        shown = f" (dim {dim})" if dim is not None else ""
        raise EncoderMismatchError(
            f"{where} was built with encoder {recorded.get('model_id')!r} (dim {recorded.get('dim')}), "
            f"not {model_id!r}{shown}; rebuild the index or pass the same encoder"
        )
    if encoder is not None:
        check_weights(recorded, encoder, f"index {where}")


class DenseIndex(VectorIndex):
    """A faiss index over encoder embeddings of ``Document.full_text()``."""

    kind = "dense"

    def __init__(
        self,
        encoder: Encoder,
        params: DenseParams | None = None,
        store: DocumentStore | None = None,
        faiss_index: faiss.Index | None = None,
        name: str = "",
    ) -> None:
        super().__init__(store if store is not None else DocumentStore(), name)
        self.encoder = encoder
        self.params = params or DenseParams()
        self.faiss_index = faiss_index
        self.exact: np.ndarray | None = None  # rows by internal id (``refine``)
        self.mapped: Path | None = None  # the file loaded memory-mapped: read into memory before a change
        self._mapped_files: _MappedFiles | None = None  # its handles and checksums (read())

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        encoder: Encoder,
        params: DenseParams | None = None,
        *,
        name: str = "",
        show_progress: bool | None = None,
    ) -> DenseIndex:
        """Encode ``documents`` and index them."""
        index = cls(encoder, params, name=name)
        index.add(documents, show_progress=show_progress)
        return index

    @classmethod
    def from_options(cls, documents, options, *, encoder=None, name="", show_progress=None) -> DenseIndex:
        return cls.build(documents, encoder, options.dense, name=name, show_progress=show_progress)

    def add(self, documents: Sequence[Document], *, show_progress: bool | None = None) -> None:
        """Encode and add new documents (their ids must not be in the index yet)."""
        docs = list(documents)
        if not docs:
            return
        check_have_text(docs)
        vectors = self.encoder.encode_documents([d.full_text() for d in docs], show_progress=show_progress)
        self.add_vectors(docs, vectors)

    def add_vectors(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        """Add documents with precomputed embeddings (rows aligned with ``documents``)."""
        vectors = aligned_vectors(documents, vectors, self.encoder.dim)
        with self.store.writing():  # no search runs meanwhile (faiss crashed on an HNSW insert under one)
            # ids first: an IVF-PQ index trained on a batch refused for a duplicate id kept that
            # training, and answered otherwise than one built from the corrected batch
            self.store.check_new_ids(documents)
            if self.faiss_index is None:
                self.faiss_index = _new_faiss_index(self.params, vectors, [d.id for d in documents])
                self._fit_nprobe(len(vectors))
            self._writable()
            iids = self.store.add(documents)
            omp_threads_for(len(vectors))
            self.faiss_index.add_with_ids(vectors, iids)
            if self.params.refine:
                self._keep_exact(np.asarray(iids, dtype=np.int64), vectors)

    def _fit_nprobe(self, documents: int) -> None:
        """``ivf_nprobe`` above the lists the index was given (``ivf_nlist`` left to its default,
        4 sqrt(documents)) is recorded as that many (every list, as faiss searches them) and said
        in a warning: the manifest recorded the asked 500 for an index of 128 lists until session 36."""
        if self.params.factory != "ivfpq" or self.faiss_index is None:
            return
        nlist = int(faiss.extract_index_ivf(self.faiss_index).nlist)
        if self.params.ivf_nprobe > nlist:
            chosen = (  # until session 41 an ivf_nlist given was said "chosen for N documents"
                "inverted lists ivf_nlist asks for"
                if self.params.ivf_nlist
                else f"inverted lists chosen for {documents:,} documents"
            )
            warnings.warn(
                f"ivf_nprobe {self.params.ivf_nprobe} is above the {nlist} {chosen}: {nlist} recorded "
                "(a query searches every list)",
                UserWarning,
                stacklevel=4,
            )
            self.params = replace(self.params, ivf_nprobe=nlist)
            faiss.extract_index_ivf(self.faiss_index).nprobe = nlist

    def _writable(self) -> None:
        """A memory-mapped index is read-only (faiss crashes on writes to mapped lists): copy it
        into memory first, from the files it was loaded from, read through the handles kept since
        (:class:`_MappedFiles`: the build may have been pruned since) and checked against the
        manifest it was loaded from. Until session 41 the faiss file was read again by name,
        unchecked, and once two later builds had pruned its build ``add`` failed with faiss's
        ``No such file or directory``."""
        if self.mapped is not None and self.faiss_index is not None:
            files = self._mapped_files
            if files is None:  # not loaded by read(): nothing kept to read back
                raise IndexFormatError(
                    f"{self.mapped}: cannot change a memory-mapped index that kept no handle on its "
                    "file; load the index again without mmap to change it"
                )
            data = files.read(FAISS_NAME)
            try:
                faiss_index = faiss.deserialize_index(data)
            except RuntimeError as exc:
                raise IndexFormatError(
                    f"{self.mapped}: cannot read the memory-mapped index back to change it "
                    f"({str(exc).splitlines()[0]})"
                ) from None
            exact = self.exact
            if exact is not None and files.has(EXACT_NAME):
                buffer = io.BytesIO(files.read(EXACT_NAME).tobytes())
                exact = numpy_read(lambda: np.load(buffer, allow_pickle=False))
            elif exact is not None:
                exact = np.array(exact)
            self.faiss_index, self.exact = faiss_index, exact
            self.mapped, self._mapped_files = None, None
            files.close()

    def _keep_exact(self, iids: np.ndarray, vectors: np.ndarray) -> None:
        rows = int(iids.max()) + 1 if len(iids) else 0
        current = self.exact if self.exact is not None else np.zeros((0, vectors.shape[1]), np.float32)
        if rows > len(current):
            grown = np.zeros((max(rows, 2 * len(current)), vectors.shape[1]), dtype=np.float32)
            grown[: len(current)] = current
            current = grown
        current[iids] = vectors
        self.exact = current

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents by id; return how many were deleted. Unknown ids raise."""
        with self.store.writing():
            self._writable()
            iids = self.store.delete(doc_ids)
            # only a flat index is compacted: removing from an id-mapped IVF squeezed the id map
            # while its lists kept the old positions, so every later hit named a neighbour's
            # document (and a later removal aborted the process) until session 40; HNSW and IVF-PQ
            # keep the vectors and leave deleted documents out by a selector (_tombstones)
            if len(iids) and self.params.factory == "flat" and self.faiss_index is not None:
                self.faiss_index.remove_ids(faiss.IDSelectorBatch(iids))
            return len(iids)

    # -- searching --------------------------------------------------------------------------
    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Search with precomputed query embeddings (one row per query)."""
        k = check_k(k)  # faiss's own refusals were bare AssertionErrors (until session 37)
        vectors = np.atleast_2d(vectors)
        vectors = check_query_vectors(vectors, len(vectors), self.encoder)
        with self.store.reading():  # positions and the documents they point at from one version
            return [
                [self.store.hit(p, s, rank, self.name) for rank, (p, s) in enumerate(ranked, 1)]
                for ranked in self.ranked_positions(vectors, k, filters)
            ]

    def ranked_positions(
        self, vectors: np.ndarray, k: int, filters: Mapping[str, Any] | None
    ) -> list[list[tuple[int, float]]]:
        """(document position, score) of each query vector's top ``k``, best first (no Hit built)."""
        with self.store.reading():
            found = self._search_ids(vectors, k, filters)
            if found is None:
                return [[] for _ in range(len(np.atleast_2d(vectors)))]
            positions = self.store.positions_by_iid()
        results = []
        for row_scores, row_ids in zip(found[0].tolist(), found[1].tolist()):
            results.append(
                [(positions[iid], score) for score, iid in zip(row_scores, row_ids) if iid in positions]
            )
        return results

    def best_scores(
        self, vectors: np.ndarray, k: int, filters: Mapping[str, Any] | None = None
    ) -> list[list[float]]:
        """Each query vector's top ``k`` scores, best first: what :meth:`ranked_positions` finds
        (documents the store holds), not mapped back to them (what a router reading how well the
        index answers needs). An exact (flat) index's scores are read from one search: which of
        several documents of equal score ranks first (:meth:`_flat_in_tie_order`) changes no
        score, and ordering them cost the confidence router's probe of each small Glasgow
        collection about as much as the search itself (until session 45)."""
        if self.params.factory != "flat" or self.exact is not None:
            return [[score for _, score in ranked] for ranked in self.ranked_positions(vectors, k, filters)]
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        with self.store.reading():
            if self.faiss_index is None or len(self.store) == 0:
                return [[] for _ in range(len(vectors))]
            omp_threads_for(len(vectors))
            top = min(k, len(self.store))
            scores, ids = self.faiss_index.search(vectors, top, params=self._params(filters))
        return [row[found >= 0].tolist() for row, found in zip(scores, ids)]

    def _search_ids(
        self, vectors: np.ndarray, k: int, filters: Mapping[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """faiss's (scores, ids) of each query vector's top ``k`` (id -1: none); None when empty.
        Deleted documents are never among them (removed from faiss, or excluded by a selector)."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if self.faiss_index is None or len(self.store) == 0:
            return None
        omp_threads_for(len(vectors))
        top = min(k, len(self.store))
        refine = self.params.refine if self.exact is not None else 0
        wanted = min(top * refine, len(self.store)) if refine else top
        params = self._params(filters)
        if self.params.factory == "hnsw" and getattr(params, "sel", None) is not None:
            mask = self.store.filter_mask(filters)
            if (len(self.store) if mask is None else int(mask.sum())) <= HNSW_EXACT_BELOW:
                return self._exact_top(vectors, wanted, mask)  # few allowed: exact, and cheap
        if self.params.factory == "flat":
            return self._flat_in_tie_order(vectors, wanted, params)
        scores, ids = self.faiss_index.search(vectors, wanted, params=params)
        if self.params.factory in ("ivfpq", "hnsw") and params is not None:
            scores, ids = self._probe_wider(vectors, wanted, params, scores, ids, filters)
        if refine:
            scores, ids = self._rerank_exact(vectors, ids, top)
        return _in_tie_order(scores, ids)

    def _flat_in_tie_order(
        self, vectors: np.ndarray, wanted: int, params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """An exact search's top ``wanted``, documents of equal score in the order they were added
        (as a BM25 index orders them), whatever ``wanted`` is: faiss's heap orders ties as it
        happens to, so a document's rank among equals moved with ``k`` (a duplicate ranked second at
        ``k=1`` and first at ``k=2`` until session 38). The search reads :data:`TIE_MARGIN` past
        ``wanted``; a query whose tie still runs past that is read again by a range search down to
        its cut score (one more scan, its memory the size of the tie: doubling the depth scanned an
        index of 20,000 documents twelve times when all of them tied)."""
        assert self.faiss_index is not None
        n = len(self.store)
        depth = min(wanted + TIE_MARGIN, n)
        scores, ids = self.faiss_index.search(vectors, depth, params=params)
        if (scores[:, 1:] < scores[:, :-1]).all():
            # no two scores equal in any row (nor a padded row's -1s): faiss's order is the tie
            # order, and the sort below (half of a small collection's search) would keep it
            return scores[:, :wanted], ids[:, :wanted]
        order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=-1)[:, :wanted]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_ids = np.take_along_axis(ids, order, axis=1)
        if depth == n:
            return top_scores, top_ids
        open_tie = (scores[:, -1] == scores[:, wanted - 1]) & (ids[:, -1] >= 0)
        for row in np.flatnonzero(open_tie):
            # a little below the cut: a one-query scan may round a score a bit differently from a
            # batched one, and the row is then ordered on the range search's own scores alone
            radius = float(scores[row, wanted - 1]) - TIE_SLACK
            _, found_scores, found_ids = self.faiss_index.range_search(
                vectors[row : row + 1], radius, params=params
            )
            best = np.lexsort((found_ids, -found_scores))[:wanted]
            top_scores[row, : len(best)] = found_scores[best]
            top_ids[row, : len(best)] = found_ids[best]
        return top_scores, top_ids

    def _probe_wider(
        self,
        vectors: np.ndarray,
        wanted: int,
        params: Any,
        scores: np.ndarray,
        ids: np.ndarray,
        filters: Mapping[str, Any] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """An IVF search visits ``ivf_nprobe`` lists, and a filter or a caller's scope keeps only the
        documents it allows inside them: a narrow one left fewer than ``k`` hits, often none. Rows
        short of what the filter allows are searched again over 4x the lists, up to all of them
        (then the search is exhaustive over the allowed documents).

        An HNSW search keeps ``ef_search`` candidates, and a filter, a caller's scope or deleted
        documents (excluded by a selector until the index is rebuilt) leave only those it allows
        among them: until session 36 a narrow filter or many deletes returned fewer hits than
        allowed, silently, and not the best ones. Short rows are searched again with 4x the
        candidates, up to the whole graph; rows still short (the graph's links do not reach every
        allowed node) are scored exactly over the allowed documents' stored vectors. (When a
        filter, a scope or deletes allow at most :data:`HNSW_EXACT_BELOW` documents, the search
        is that exact scan from the start: the graph would find few of them, and the scan is
        cheap.)"""
        index = self.faiss_index
        assert index is not None  # searched just before
        mask = self.store.filter_mask(filters)
        allowed = int(mask.sum()) if mask is not None else len(self.store)
        target = min(wanted, allowed)
        short = (ids >= 0).sum(axis=1) < target
        if self.params.factory == "hnsw":
            limit, knob = int(index.ntotal), "efSearch"
        else:
            limit, knob = int(faiss.extract_index_ivf(index).nlist), "nprobe"
        width = int(getattr(params, knob))
        while short.any() and width < limit:
            width = min(width * 4, limit)
            setattr(params, knob, width)
            rows = np.flatnonzero(short)
            scores[rows], ids[rows] = index.search(vectors[rows], wanted, params=params)
            short[rows] = (ids[rows] >= 0).sum(axis=1) < target
        if short.any() and self.params.factory == "hnsw":
            rows = np.flatnonzero(short)
            scores[rows], ids[rows] = self._exact_top(vectors[rows], wanted, mask)
        return scores, ids

    def _exact_top(
        self, vectors: np.ndarray, wanted: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss's (scores, ids) of each vector's top ``wanted`` by an exact scan of the documents
        ``mask`` allows (all when None), from the vectors the index stores."""
        positions = np.flatnonzero(mask) if mask is not None else np.arange(len(self.store))
        stored = self._stored_vectors(positions)
        assert stored is not None  # HNSW-Flat keeps the vectors it links
        products = vectors @ stored.T
        take = min(wanted, len(positions))
        order = np.argsort(-products, axis=1, kind="stable")[:, :take]
        scores = np.full((len(vectors), wanted), -np.inf, dtype=np.float32)
        ids = np.full((len(vectors), wanted), -1, dtype=np.int64)
        scores[:, :take] = np.take_along_axis(products, order, axis=1)
        ids[:, :take] = self.store.iids[positions][order]
        return scores, ids

    def _rerank_exact(self, vectors: np.ndarray, ids: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-score each query's candidate ids by the exact inner product; keep the best ``top``."""
        assert self.exact is not None
        valid = ids >= 0
        safe = np.where(valid, ids, 0)
        exact = np.einsum(
            "qd,qcd->qc", vectors, np.asarray(self.exact[safe.ravel()]).reshape(*safe.shape, -1)
        )
        exact = np.where(valid, exact, -np.inf)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :top]
        scores = np.take_along_axis(exact, order, axis=1).astype(np.float32)
        chosen = np.take_along_axis(ids, order, axis=1)
        return scores, np.where(np.isfinite(scores), chosen, -1)

    def _params(self, filters: Mapping[str, Any] | None) -> faiss.SearchParameters | None:
        selector = self._selector(filters)
        if self.params.factory == "hnsw":
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stubs
            params.efSearch = max(self.params.ef_search, 1)
        elif self.params.factory == "ivfpq":
            params = faiss.SearchParametersIVF()
            params.nprobe = self.params.ivf_nprobe
        elif selector is None:
            return None
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    def _selector(self, filters: Mapping[str, Any] | None) -> faiss.IDSelector | None:
        mask = self.store.filter_mask(filters)
        if mask is not None:
            return faiss.IDSelectorBatch(self.store.iids[mask])
        tombstones = self._tombstones()
        if len(tombstones):
            return faiss.IDSelectorNot(faiss.IDSelectorBatch(tombstones))
        return None

    def _tombstones(self) -> np.ndarray:
        """Ids faiss still holds whose documents were deleted (HNSW and IVF-PQ keep them)."""
        if self.params.factory == "flat" or self.faiss_index is None:
            return np.empty(0, dtype=np.int64)
        id_map = faiss.downcast_index(self.faiss_index).id_map  # type: ignore[attr-defined]  # an IndexIDMap2
        stored = faiss.vector_to_array(id_map)
        return np.setdiff1d(stored, self.store.iids, assume_unique=True)

    def stored_vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """The embeddings of the documents at store ``positions`` (rows aligned), read back from faiss
        instead of encoded again; ``None`` when the index keeps no exact vectors (IVF-PQ keeps codes)."""
        with self.store.reading():
            return self._stored_vectors(positions)

    def _stored_vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray | None:
        if self.exact is not None:
            return np.asarray(
                self.exact[self.store.iids[np.asarray(positions, dtype=np.int64)]], dtype=np.float32
            )
        if self.faiss_index is None or self.params.factory not in ("flat", "hnsw"):
            return None
        iids = np.ascontiguousarray(self.store.iids[np.asarray(positions, dtype=np.int64)], dtype=np.int64)
        if len(iids) == 0:
            return np.zeros((0, self.faiss_index.d), dtype=np.float32)
        try:
            vectors = self.faiss_index.reconstruct_batch(iids)
        except RuntimeError:  # an index type without reconstruction
            return None
        return np.asarray(vectors, dtype=np.float32).reshape(len(iids), self.faiss_index.d)

    # -- persistence ------------------------------------------------------------------------
    def write_files(self, directory: Path) -> None:
        if self.faiss_index is None:
            self.faiss_index = _new_faiss_index(self.params, np.zeros((0, self.encoder.dim), np.float32))
        # serialised here and written by Python, so a full disk or a refused write is an OSError
        # naming the file (faiss.write_index reports it as a RuntimeError from C++)
        files = self._mapped_files if self.mapped is not None else None
        if files is not None and files.has(FAISS_NAME):
            # the file it was loaded from, unchanged since (a change reads it into memory first):
            # faiss serialises memory-mapped IVF lists as a reference to a file of no name, which
            # load refused as corrupt, or crashed the process loading it memory-mapped (until session 45)
            data = files.read(FAISS_NAME)
        else:
            data = faiss.serialize_index(self.faiss_index)
        (Path(directory) / FAISS_NAME).write_bytes(data.data)
        if self.exact is not None:
            rows = self.store.next_iid
            with open(Path(directory) / EXACT_NAME, "wb") as handle:
                np.save(handle, np.ascontiguousarray(self.exact[:rows], dtype=np.float32))

    def manifest_params(self) -> dict[str, Any]:
        return {"dense": asdict(self.params), "next_iid": self.store.next_iid}

    @classmethod
    def read(
        cls, directory: Path, params: Mapping[str, Any], store: DocumentStore, name: str, encoder: Encoder
    ) -> DenseIndex:
        path = Path(directory) / FAISS_NAME
        dense = DenseParams.from_dict(params.get("dense", {}))
        try:
            faiss_index = faiss.read_index(str(path), _mmap_flags(dense))
        except RuntimeError as exc:
            raise IndexFormatError(f"{path} is corrupt: {str(exc).splitlines()[0]}") from None
        if faiss_index.d != encoder.dim:
            raise EncoderMismatchError(
                f"{path} holds vectors of dim {faiss_index.d}, encoder gives {encoder.dim}"
            )
        if dense.factory == "ivfpq":
            _check_ivf_positions(faiss_index, path)
        index = cls(encoder, dense, store, faiss_index, name)
        index.mapped = path if dense.mmap else None
        if dense.mmap:  # handles kept to read the files back to change the index (_writable)
            index._mapped_files = _MappedFiles(Path(directory), (FAISS_NAME, EXACT_NAME))
        exact_path = Path(directory) / EXACT_NAME
        if exact_path.is_file():
            try:
                mapped = dense.mmap
                exact = numpy_read(
                    lambda: np.load(exact_path, mmap_mode="r" if mapped else None, allow_pickle=False)
                )
            except ValueError as exc:
                raise IndexFormatError(f"{exact_path} is corrupt: {exc}") from None
            if exact.ndim != 2 or exact.shape[1] != faiss_index.d or exact.dtype != np.float32:
                raise IndexFormatError(f"{exact_path} is corrupt: shape {exact.shape}, dtype {exact.dtype}")
            index.exact = exact
        elif dense.refine:  # loaded without it, searches silently skipped the re-ranking (until session 54)
            raise IndexFormatError(
                f"{exact_path} is missing: the index re-ranks its candidates by the vectors kept there "
                f"(refine {dense.refine}); rebuild the index"
            )
        return index


def _mmap_flags(dense: DenseParams) -> int:
    """faiss's read flags for ``dense.mmap``: ``IO_FLAG_MMAP`` maps an IVF-PQ index's inverted
    lists, and reads a flat or HNSW index's vectors into memory all the same (until session 54
    ``mmap`` loaded those whole, silently); ``IO_FLAG_MMAP_IFC`` maps them (faiss 1.10 and later;
    an older faiss reads them into memory)."""
    if not dense.mmap:
        return 0
    if dense.factory == "ivfpq":
        return int(faiss.IO_FLAG_MMAP)
    return int(getattr(faiss, "IO_FLAG_MMAP_IFC", 0))


class _MappedFiles:
    """Open handles on the files a memory-mapped index was loaded from, with the size and sha256
    its build's manifest records for each: read back through the handle (the build may have been
    pruned since, its folder gone) and checked, or a one-line :class:`IndexFormatError`. A file
    the manifest does not list (a folder without one) is checked against its digest at load."""

    def __init__(self, directory: Path, names: Sequence[str]) -> None:
        import weakref

        from ragroute.store.manifest import read_manifest_or_none

        self.directory = directory
        manifest = read_manifest_or_none(directory)  # the store's reader (never blocks on a FIFO)
        listed: dict[str, Any] = manifest.files if manifest is not None else {}
        self.held: dict[str, tuple[int, int, str]] = {}  # name -> (fd, bytes, sha256)
        for name in names:
            try:
                fd = os.open(directory / name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.close()
                raise IndexFormatError(f"cannot read {directory / name}: {exc.strerror or exc}") from None
            info = listed.get(name)
            if isinstance(info, dict) and isinstance(info.get("sha256"), str):
                self.held[name] = (fd, int(info.get("bytes", -1)), str(info["sha256"]))
            else:
                size = os.fstat(fd).st_size
                self.held[name] = (fd, size, hashlib.sha256(_read_fd(fd, size)).hexdigest())
        self._closer = weakref.finalize(self, _close_all, [fd for fd, _, _ in self.held.values()])

    def has(self, name: str) -> bool:
        return name in self.held

    def read(self, name: str) -> np.ndarray:
        """The bytes of file ``name`` as loaded (uint8), checked against the manifest."""
        where = self.directory / name
        if name not in self.held:
            raise IndexFormatError(f"{where}: no handle kept on this file since the index was loaded")
        fd, size, sha = self.held[name]
        try:
            data = _read_fd(fd, os.fstat(fd).st_size)
        except OSError as exc:
            raise IndexFormatError(f"cannot read {where} back: {exc.strerror or exc}") from None
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            pruned = "" if where.exists() else " (its build was pruned since the index was loaded)"
            raise IndexFormatError(
                f"{where} is corrupt: it no longer matches the checksum in the manifest the index was "
                f"loaded from{pruned}; load the index again"
            )
        return np.frombuffer(data, dtype=np.uint8)

    def close(self) -> None:
        fds = [fd for fd, _, _ in self.held.values()]
        self.held = {}
        if hasattr(self, "_closer"):
            self._closer.detach()
        _close_all(fds)


def _read_fd(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of an open file (from its start, whatever its offset)."""
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 24, size - offset), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _check_ivf_positions(faiss_index: faiss.Index, path: Path) -> None:
    """One line for an IVF-PQ index that documents were deleted from before session 40: removal
    squeezed its id map while its lists kept the old positions, so its hits name other documents.
    Its lists then hold a position past the end of the map (or fewer positions than the map).
    Also one line for a file saved from a memory-mapped IVF-PQ index before session 45, which
    crashed the process loading it memory-mapped (loaded into memory, faiss refuses it)."""
    ivf = faiss.extract_index_ivf(faiss_index)
    invlists: Any = ivf.invlists  # faiss's stubs lack release_ids
    lists = faiss.downcast_InvertedLists(invlists)
    if isinstance(lists, faiss.OnDiskInvertedLists) and lists.ptr is None and lists.totsize:
        raise IndexFormatError(  # lists read memory-mapped, none of them mapped: they name no file
            f"{path}: an IVF-PQ index saved from a memory-mapped one before session 45 (its lists "
            "name no file): rebuild it"
        )
    held, largest = 0, -1
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if not size:
            continue
        ids = invlists.get_ids(list_no)
        try:
            positions = faiss.rev_swig_ptr(ids, size)
            largest = max(largest, int(positions.max()))
        finally:
            invlists.release_ids(list_no, ids)
        held += size
    mapped = faiss.downcast_index(faiss_index).id_map.size()  # type: ignore[attr-defined]  # an IndexIDMap2
    if held != mapped or largest >= mapped:
        raise IndexFormatError(
            f"{path}: an IVF-PQ index documents were deleted from before session 40 (its hits name other "
            "documents): rebuild it"
        )


def aligned_vectors(documents: Sequence[Document], vectors: Any, dim: int) -> np.ndarray:
    """``vectors`` as contiguous float32, one finite row of width ``dim`` per document (else a
    one-line error: a document added with a NaN row could never be found, until session 37)."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape != (len(documents), dim):
        raise RagrouteError(f"expected {len(documents)} vectors of dim {dim}, got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = documents[int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])].id
        raise RagrouteError(f"the vector of document {bad!r} holds NaN or infinity")
    return array


def stored_document_vectors(
    retriever: Any, positions: Sequence[int] | np.ndarray, encoder: Any
) -> np.ndarray | None:
    """Embeddings of ``retriever.documents[positions]`` as its dense index holds them, or ``None``.

    ``retriever`` is a :class:`DenseIndex` or holds one over the same document store as ``dense``
    (a hybrid or graph index); its vectors count only when they are in ``encoder``'s space (same
    ``model_id`` and width). Anything else (BM25 only, IVF-PQ, a retriever from another library)
    gives ``None``: the caller encodes the documents instead. Routers read their document banks
    here, so a new routing config over built indexes re-encodes nothing the indexes already hold.
    """
    dense = retriever if isinstance(retriever, DenseIndex) else getattr(retriever, "dense", None)
    if not isinstance(dense, DenseIndex) or dense.store is not getattr(retriever, "store", None):
        return None
    if getattr(dense.encoder, "model_id", None) != getattr(encoder, "model_id", None):
        return None
    if getattr(dense.encoder, "dim", None) != getattr(encoder, "dim", None):
        return None
    return dense.stored_vectors(positions)


_OMP = threading.local()  # per thread: the OpenMP team size it had, and the one it has now


#: results an exact search reads past ``k``, so documents tied at the cut are ordered alike at any ``k``
TIE_MARGIN = 8
#: how far below a tie's score the range search that reads the whole tie reaches
TIE_SLACK = 1e-5


def _in_tie_order(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's documents of equal score in the order they were added (by id), as an exact
    search orders them (:meth:`DenseIndex._flat_in_tie_order`): an HNSW or IVF-PQ search left them
    as its graph walk or lists met them, so of 20 duplicates ``k=1`` gave the second added, ``k=3``
    the eighth first and ``k=20`` the last first, where flat gives the first (until session 52)."""
    if not (scores[:, 1:] == scores[:, :-1]).any():
        return scores, ids
    order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def omp_threads_for(n_queries: int) -> None:
    """One OpenMP thread for small batches (fewer than :data:`SMALL_BATCH` queries), the thread's own
    team size for anything larger (big batches, adding, training). faiss scans a handful of queries
    on one thread anyway, and starting a thread team cost ~0.5 ms per search here (0.95 vs 1.49 ms on
    11k vectors, 2 cores). ``omp_set_num_threads`` applies to the calling thread only, so concurrent
    searches do not interfere.

    The setting is changed only when it must be, and left in place: every faiss call releases and
    re-takes the GIL, and with sources searched in threads a get-set-restore around each search
    waited ~0.1 ms per search for the other threads' Python work. (A team size a caller sets with
    ``faiss.omp_set_num_threads`` in a thread after its first search here is not seen.)
    """
    if not hasattr(_OMP, "own"):
        _OMP.own = _OMP.now = faiss.omp_get_max_threads()
    wanted = 1 if n_queries < SMALL_BATCH else _OMP.own
    if _OMP.now != wanted:
        faiss.omp_set_num_threads(wanted)
        _OMP.now = wanted


def _new_faiss_index(params: DenseParams, sample: np.ndarray, ids: Sequence[str] = ()) -> faiss.Index:
    """Create (and for IVF-PQ, train on ``sample``, the vectors of documents ``ids``) an id-mapped
    faiss index."""
    dim = sample.shape[1]
    if params.factory == "flat":
        inner: faiss.Index = faiss.IndexFlatIP(dim)
    elif params.factory == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = params.ef_construction
    else:
        inner = _trained_ivfpq(params, sample, ids)
    return faiss.IndexIDMap2(inner)


def _trained_ivfpq(params: DenseParams, sample: np.ndarray, ids: Sequence[str] = ()) -> faiss.Index:
    """An IVF-PQ index trained on ``sample`` (the vectors of documents ``ids``), or a subsample of
    it, drawn and ordered by document id: k-means reads its points in order, and until session 41
    the same corpus shuffled trained other lists and codebooks (cran nDCG@10 0.379 -> 0.371)."""
    n, dim = sample.shape
    nlist = params.ivf_nlist or max(1, min(4096, int(4 * np.sqrt(max(n, 1)))))  # from all vectors
    # faiss's k-means wants at least 39 training points per list (it warns below that): the
    # sample grows to that many when nlist needs it (1M vectors: 4,000 lists -> 156,000 points),
    # and to the least training takes at all (until session 52 a train_sample of 500 refused a
    # corpus of 3,000 documents as "needs at least 1024 documents to train ..., got 500")
    least = max(nlist, 2**params.pq_bits) * 4
    wanted = max(params.train_sample, MIN_POINTS_PER_LIST * nlist, least) if params.train_sample > 0 else 0
    names = [str(i) for i in ids] if len(ids) == n else [f"{i:012d}" for i in range(n)]
    rows = drawn(names, wanted, seed=0, key="ivfpq-train") if n > wanted > 0 else np.arange(n)
    rows = rows[np.argsort(np.asarray([names[int(r)] for r in rows], dtype=object), kind="stable")]
    sample, n = sample[rows], len(rows)
    pq_m = params.pq_m or _largest_divisor_at_most(dim, max(1, dim // 8))
    if dim % pq_m:  # known only now: faiss's own refusal was a multi-line RuntimeError
        divisors = [d for d in range(1, dim + 1) if dim % d == 0 and d <= pq_m]
        raise RagrouteError(
            f"pq_m {pq_m} does not divide the vectors' {dim} dimensions: choose a divisor of {dim} "
            f"(the nearest below is {divisors[-1]}), or leave pq_m unset"
        )
    bits, needed = params.pq_bits, least
    if n < needed:
        fewer = "a smaller --ivf-nlist, or " if params.ivf_nlist and nlist > 2**bits else ""
        raise RagrouteError(
            f"ivfpq needs at least {needed} documents to train (nlist={nlist}, pq_bits={bits}), got {n}; "
            f"use {fewer}the flat layout (DenseParams(factory='flat'), --dense-index flat) for small corpora"
        )
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, bits, faiss.METRIC_INNER_PRODUCT)
    _warn_few_training_points(index, n, nlist, pq_m, bits)
    omp_threads_for(len(sample))
    index.train(sample)
    index.nprobe = params.ivf_nprobe
    return index


def _warn_few_training_points(index: faiss.Index, n: int, nlist: int, pq_m: int, bits: int) -> None:
    """One warning when ``n`` training points are fewer than faiss's k-means asks for (39 a
    centroid), in place of faiss's own: until session 41 its raw ``WARNING clustering ...`` line
    reached stderr once for the coarse quantiser and once for each of the ``pq_m`` codebooks (49
    lines for 1,460 documents). faiss's ``min_points_per_centroid`` only decides that warning."""
    short = []
    if n < MIN_POINTS_PER_LIST * nlist:
        short.append(f"{MIN_POINTS_PER_LIST * nlist:,} for the {nlist:,} inverted lists")
    if n < MIN_POINTS_PER_LIST * 2**bits:
        codes = 2**bits
        short.append(f"{MIN_POINTS_PER_LIST * codes:,} for the {codes:,} codes of each of {pq_m} codebooks")
    ivf: Any = index  # faiss.IndexIVFPQ: its stubs type it as the base Index
    ivf.cp.min_points_per_centroid = 1
    ivf.pq.cp.min_points_per_centroid = 1
    if short:
        warnings.warn(
            f"ivfpq trains on {n:,} vectors, fewer than faiss's k-means asks for "
            f"({' and '.join(short)}, 39 a centroid): the clusters may be poor; a larger corpus "
            "trains better, or use the flat or hnsw layout",
            UserWarning,
            stacklevel=5,
        )


def _largest_divisor_at_most(value: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if value % d == 0)
