"""Hybrid retrieval: BM25 and dense over one document store, fused per query."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragroute.context import query_vectors
from ragroute.encode.base import Encoder
from ragroute.errors import InvalidArgumentError, RagrouteError, check_k
from ragroute.index.base import filter_groups
from ragroute.index.dense import DenseIndex, DenseParams
from ragroute.index.docstore import DocumentStore
from ragroute.index.fusion import FUSION_METHODS, finite_at_least_0, fuse_ranked
from ragroute.index.lexical import BM25Index, BM25Params
from ragroute.index.local import LocalIndex
from ragroute.types import Document, Hit


@dataclass
class FusionParams:
    """How the two ranked lists are fused.

    ``candidates``: how deep each list is read (at least ``k``); ``weights`` per list
    name (``bm25``, ``dense``).
    """

    method: str = "rrf"
    rrf_k: int = 60
    candidates: int = 100
    bm25_weight: float = 1.0
    dense_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise RagrouteError(
                f"unknown fusion method {self.method!r}: choose one of {', '.join(FUSION_METHODS)}"
            )
        # checked here: until session 49 a build embedded every document and then each search
        # failed (a negative weight or rrf_k in one line, a candidates of text or None as a bare
        # TypeError, candidates=2.5 as "k must be a non-negative integer")
        numbers = {"rrf_k": self.rrf_k, "bm25_weight": self.bm25_weight, "dense_weight": self.dense_weight}
        for key, value in numbers.items():
            if not finite_at_least_0(value):  # what fuse_ranked checks rrf_k and each weight by
                raise RagrouteError(f"fusion {key} must be a finite number of at least 0, got {value!r}")
        candidates = self.candidates
        if not (finite_at_least_0(candidates) and float(candidates).is_integer()):
            raise RagrouteError(f"fusion candidates must be a whole number of at least 0, got {candidates!r}")
        self.candidates = int(candidates)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FusionParams:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class HybridIndex(LocalIndex):
    """A BM25 index and a dense index sharing one document store; results fused."""

    kind = "hybrid"
    needs_encoder = True

    def __init__(
        self, bm25: BM25Index, dense: DenseIndex, fusion: FusionParams | None = None, name: str = ""
    ):
        if bm25.store is not dense.store:
            # a RagrouteError (one line at the CLI) that is still a ValueError (a plain one until session 49)
            raise InvalidArgumentError(
                "the BM25 and dense parts of a hybrid index must share one document store"
            )
        super().__init__(bm25.store, name)
        self.bm25 = bm25
        self.dense = dense
        self.fusion = fusion or FusionParams()

    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        encoder: Encoder,
        *,
        bm25_params: BM25Params | None = None,
        dense_params: DenseParams | None = None,
        fusion: FusionParams | None = None,
        name: str = "",
        show_progress: bool | None = None,
    ) -> HybridIndex:
        docs = list(documents)
        dense = DenseIndex.build(docs, encoder, dense_params, name=name, show_progress=show_progress)
        bm25 = BM25Index(bm25_params, store=dense.store, name=name)
        bm25.refit()
        return cls(bm25, dense, fusion, name)

    @classmethod
    def from_options(cls, documents, options, *, encoder=None, name="", show_progress=None) -> HybridIndex:
        return cls.build(
            documents,
            encoder,
            bm25_params=options.bm25,
            dense_params=options.dense,
            fusion=options.fusion,
            name=name,
            show_progress=show_progress,
        )

    @property
    def confidence_probe(self) -> DenseIndex:
        """What a retrieval-confidence router should search to judge how well this index
        matches a query: the dense part (fused RRF scores depend only on ranks)."""
        return self.dense

    def add(self, documents: Sequence[Document], *, show_progress: bool | None = None) -> None:
        self.dense.add(documents, show_progress=show_progress)
        self.bm25.refit()  # now rather than at the next search (which would refit it too)

    def delete(self, doc_ids: Sequence[str]) -> int:
        removed = self.dense.delete(doc_ids)
        self.bm25.refit()
        return removed

    def query_encoders(self) -> list[Any]:
        return [self.dense.encoder]

    def _search_contexts(
        self, contexts: Sequence[Any], k: int, filters: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        depth = max(k, self.fusion.candidates)
        vectors = query_vectors(contexts, self.dense.encoder)
        return self._fuse([c.text for c in contexts], vectors, depth, k, filters)

    def start_contexts(
        self, contexts: Sequence[Any], k: int, submit: Callable[..., Future[Any]]
    ) -> Callable[[], list[list[Hit]]]:
        """:meth:`search_contexts` in two phases, for searching several sources at once: the dense
        scans (faiss releases the GIL) are handed to ``submit`` (an executor's) now; the function
        returned scores BM25, waits for the scans and fuses, returning what ``search_contexts``
        would. The caller starts every source's scans before finishing any, so the GIL-bound BM25
        and fusion of all sources run on one thread while the scans run beside them."""
        k = check_k(k)
        depth = max(k, self.fusion.candidates)
        scan, encoder = self.dense.ranked_positions, self.dense.encoder
        version = self.store.version  # the scans' positions hold for this version only
        started = [
            (positions, group, filters, submit(scan, query_vectors(group, encoder), depth, filters))
            for positions, group, filters in filter_groups(contexts, scoped=True)
        ]

        def finish() -> list[list[Hit]]:
            out: list[list[Hit]] = [[] for _ in contexts]
            # the scans are waited for before reading the store: a thread holding a read must not
            # wait for another thread's new read (a writer waiting in between goes first)
            scanned = [pending.result() for *_, pending in started]
            with self.store.reading():
                for (positions, group, filters, _), semantic in zip(started, scanned):
                    texts = [c.text for c in group]
                    if self.store.version != version:  # documents changed since: scan again, now
                        semantic = scan(query_vectors(group, encoder), depth, filters)
                    lexical = self.bm25.ranked_positions(texts, depth, filters)
                    for i, hits in zip(positions, self._fuse_lists(lexical, semantic, k)):
                        out[i] = hits
            return out

        return finish

    def _fuse(
        self, queries: list[str], vectors: Any, depth: int, k: int, filters: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        """Fuse both lists on document positions; build hits only for the ``k`` returned."""
        lexical = self.bm25.ranked_positions(queries, depth, filters)
        semantic = self.dense.ranked_positions(vectors, depth, filters)
        return self._fuse_lists(lexical, semantic, k)

    def _fuse_lists(
        self, lexical: list[list[tuple[int, float]]], semantic: list[list[tuple[int, float]]], k: int
    ) -> list[list[Hit]]:
        """Fuse each query's BM25 and dense (position, score) lists; hits for the ``k`` returned."""
        weights = {"bm25": self.fusion.bm25_weight, "dense": self.fusion.dense_weight}
        docs = self.store.documents
        out = []
        for lex, sem in zip(lexical, semantic):
            lists = {
                "bm25": [(p, s, rank) for rank, (p, s) in enumerate(lex, 1)],
                "dense": [(p, s, rank) for rank, (p, s) in enumerate(sem, 1)],
            }
            fused = fuse_ranked(
                lists,
                method=self.fusion.method,
                weights=weights,
                rrf_k=self.fusion.rrf_k,
                limit=k,
                order=lambda p: docs[p].id,
            )
            hits = []
            for rank, (position, total, detail) in enumerate(fused, 1):
                hit = self.store.hit(position, total, rank, self.name)
                hit.explain = {"fusion": self.fusion.method, **detail}
                hits.append(hit)
            out.append(hits)
        return out

    def weightless_terms(self, query: str) -> list[str]:
        """:meth:`BM25Index.weightless_terms` of the lexical half."""
        return self.bm25.weightless_terms(query)

    def write_files(self, directory: Path) -> None:
        self.bm25.write_files(directory)
        self.dense.write_files(directory)

    def manifest_params(self) -> dict[str, Any]:
        return {**self.bm25.manifest_params(), **self.dense.manifest_params(), "fusion": asdict(self.fusion)}

    def encoder_info(self) -> dict[str, Any] | None:
        return self.dense.encoder_info()

    @classmethod
    def read(
        cls, directory: Path, params: Mapping[str, Any], store: DocumentStore, name: str, encoder: Encoder
    ) -> HybridIndex:
        bm25 = BM25Index.read(directory, params, store, name)
        dense = DenseIndex.read(directory, params, store, name, encoder)
        return cls(bm25, dense, FusionParams.from_dict(params.get("fusion") or {}), name)
