"""An expert set: several retrieval experts over the same documents, each exposed as a source.

Kinds of expert (:class:`ExpertSpec`):

``base``
    the base encoder (all-MiniLM-L6-v2 by default) over its document index;
``bm25``
    the lexical expert, a BM25 index over the same document store;
``adapter``
    an expert trained by ``ragroute expert train``: a ``query-lora`` expert
    searches the base document index with its own query encoder (no second
    index: the faiss index and document store are shared, not copied), a
    ``full`` expert gets its own index;
``dense``
    any other sentence-transformers or ONNX encoder, by name or path, with its
    own index.

Experts are independent: adding or removing one changes nothing about the
others (no retraining, no rebuild). An expert that cannot be loaded is
reported in :attr:`ExpertSet.problems` and left out; the rest still work.
Routers choose among an expert set's sources by name (``pilot``, ``quality``,
``fixed``; see :mod:`ragroute.route.pilot`, :mod:`ragroute.route.expert_quality`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError
from ragroute.index.dense import DenseIndex
from ragroute.route.expert_gains import check_unique_expert_names
from ragroute.route.sources import Source, SourceProblem
from ragroute.types import Document

KINDS = ("base", "bm25", "adapter", "dense")


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: a unique ``name``, a ``kind`` of :data:`KINDS`, and for ``adapter`` the expert
    artifact's folder or for ``dense`` the encoder's name or path (``path``)."""

    name: str
    kind: str
    path: str | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RagrouteError(
                f"expert {self.name!r}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}"
            )
        if self.kind in ("adapter", "dense") and not self.path:
            raise RagrouteError(f"expert {self.name!r}: {self.kind!r} experts need a path")


class ExpertSet:
    """Loaded experts (their query encoders) that build sources over any corpus.

    ``base_encoder`` embeds documents for the base index (and queries for the
    ``base`` expert and for routing).
    """

    def __init__(self, specs: Sequence[ExpertSpec], base_encoder: Any, *, threads: int | None = None) -> None:
        check_unique_expert_names([s.name for s in specs])
        self.base_encoder = base_encoder
        self.specs: list[ExpertSpec] = []
        self.encoders: dict[str, Any] = {}
        self.problems: list[SourceProblem] = []
        for spec in specs:
            try:
                self.encoders[spec.name] = self._load(spec, threads)
            except RagrouteError as exc:
                self.problems.append(SourceProblem(spec.name, str(exc)))
                continue
            self.specs.append(spec)

    def _load(self, spec: ExpertSpec, threads: int | None) -> Any:
        if spec.kind == "base":
            return self.base_encoder
        if spec.kind == "bm25":
            return None
        if spec.kind == "adapter":
            from ragroute.experts.encoder import load_expert_encoder

            return load_expert_encoder(str(spec.path), self.base_encoder, threads=threads)
        from ragroute.encode.load import load_encoder

        return load_encoder(str(spec.path), backend=spec.backend, threads=threads)

    @property
    def names(self) -> list[str]:
        """The experts' names, in the order given."""
        return [s.name for s in self.specs]

    def query_encoders(self, names: Sequence[str]) -> list[str]:
        """Distinct query encoders a query routed to ``names`` runs (the routing encoder not counted;
        BM25 runs none, the base expert shares the routing encoder's vector)."""
        from ragroute.context import encoder_key

        keys = set()
        for name in names:
            encoder = self.encoders.get(name)
            if encoder is not None:
                keys.add(encoder_key(encoder))
        # by key, as the contexts cache vectors: until session 55 a dense expert of the base model
        # itself (another object, the same key) was counted though its queries reuse the base vector
        keys.discard(encoder_key(self.base_encoder))
        return sorted(keys)

    def sources(
        self,
        corpus: str,
        documents: Sequence[Document],
        *,
        base_vectors: np.ndarray | None = None,
        show_progress: bool | None = None,
    ) -> list[Source]:
        """One source per loaded expert over ``documents`` (named by the expert).

        The base index is built once (from ``base_vectors`` when given) and shared by
        the base, BM25 and query-side adapter experts.
        """
        from ragroute.experts.encoder import QueryAdapterEncoder
        from ragroute.index.dense import DenseIndex
        from ragroute.index.lexical import BM25Index

        documents = list(documents)
        base = DenseIndex(self.base_encoder, name=corpus)
        if base_vectors is None:
            base_vectors = self.base_encoder.encode_documents(
                [d.full_text() for d in documents], show_progress=show_progress
            )
        base.add_vectors(documents, base_vectors)
        out = []
        for spec in self.specs:
            encoder = self.encoders[spec.name]
            if spec.kind == "base":
                index: Any = base
            elif spec.kind == "bm25":
                index = BM25Index(store=base.store, name=corpus)
                index.refit()
            elif isinstance(encoder, QueryAdapterEncoder):
                index = adapter_view(base, encoder)
            else:
                index = DenseIndex.build(documents, encoder, name=corpus, show_progress=show_progress)
            out.append(
                Source(
                    spec.name,
                    index,
                    description=f"{spec.kind} expert {spec.name} over {corpus}",
                    metadata={"expert": spec.kind, "corpus": corpus},
                )
            )
        return out


def adapter_view(index: Any, encoder: Any) -> Any:
    """The dense ``index`` searched with a query-side expert ``encoder``: a second
    :class:`~ragroute.index.dense.DenseIndex` sharing the faiss index and document store (no copy).
    The index's encoder must be the base the expert was trained over
    (:func:`~ragroute.experts.encoder.check_expert_base`)."""
    if not isinstance(index, DenseIndex):
        raise RagrouteError(
            f"a query-side expert needs a dense index of base-model embeddings, not a {type(index).__name__}"
        )
    from ragroute.experts.encoder import QueryAdapterEncoder

    if not isinstance(encoder, QueryAdapterEncoder):
        raise RagrouteError(
            f"expert {getattr(encoder, 'model_id', encoder)!r} is not a query-side adapter: a full expert "
            "has its own embedding space, so index the corpus with it (`ragroute build --encoder "
            "EXPERT_FOLDER`) and list that index as a source"
        )
    from ragroute.encode.identity import weights_of
    from ragroute.experts.encoder import check_expert_base

    # the expert's base by its weights: a copy of it under another name is it, another model under
    # its name is not (until session 40 only the names were compared)
    check_expert_base(
        repr(encoder.name),
        encoder.base,
        str(index.encoder.model_id),
        weights_of(index.encoder),
        "the index's encoder",
    )
    return AdapterView(index, encoder)


class AdapterView(DenseIndex):
    """A base dense index searched with a query-side expert's encoder: its faiss index and document
    store, no copy. A base loaded memory-mapped swaps in a new faiss index when it is changed; the
    view takes it up before it reads vectors (it would otherwise search the old one: no new
    documents, and scores of deleted ones). Documents added or deleted through the view are added
    to or deleted from the base (its documents are the base's)."""

    def __init__(self, base: DenseIndex, encoder: Any) -> None:
        super().__init__(encoder, base.params, store=base.store, faiss_index=base.faiss_index, name=base.name)
        self.base = base
        self._follow_base()

    def _follow_base(self) -> None:
        base = self.base
        if self.faiss_index is not base.faiss_index or self.exact is not base.exact:
            self.faiss_index, self.exact, self.mapped = base.faiss_index, base.exact, base.mapped

    def add_vectors(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        """Added to the base index. Until session 53 the view wrote its own faiss index: into a
        memory-mapped base's (IVF-PQ: faiss's read-only error, the documents already in the shared
        store; flat and HNSW: vectors the base dropped at its next change, reading its files back),
        or a new one the view let go of at its next search (a base with no faiss index yet)."""
        self.base.add_vectors(documents, vectors)
        self._follow_base()

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Deleted from the base index (as :meth:`add_vectors` adds to it)."""
        deleted = self.base.delete(doc_ids)
        self._follow_base()
        return deleted

    def _search_ids(
        self, vectors: np.ndarray, k: int, filters: Mapping[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        self._follow_base()
        return super()._search_ids(vectors, k, filters)

    def stored_vectors(self, positions: Sequence[int] | np.ndarray) -> np.ndarray | None:
        self._follow_base()
        return super().stored_vectors(positions)

    def best_scores(
        self, vectors: np.ndarray, k: int, filters: Mapping[str, Any] | None = None
    ) -> list[list[float]]:
        """The base's current faiss index's top scores (an exact index's are read without
        :meth:`_search_ids`, which is where the view otherwise takes up the base's changes)."""
        self._follow_base()
        return super().best_scores(vectors, k, filters)
