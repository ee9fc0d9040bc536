"""Build an index of any registered kind from documents: one entry point for the CLI and the API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragroute import types
from ragroute.encode.base import Encoder
from ragroute.errors import RagrouteError
from ragroute.graph.build import GraphParams
from ragroute.index.dense import DenseParams
from ragroute.index.hybrid import FusionParams
from ragroute.index.lexical import BM25Params
from ragroute.index.local import LocalIndex
from ragroute.registry import INDEX_KINDS
from ragroute.types import Document


@dataclass
class IndexOptions:
    """Parameters of every part an index kind may have (each kind reads the ones it needs)."""

    bm25: BM25Params | None = None
    dense: DenseParams | None = None
    fusion: FusionParams | None = None
    graph: GraphParams | None = None
    extractor: Any = None  # graph extractor: a registered name, an extractor object, or None (rules)
    qdrant: Any = None  # ragroute.index.qdrant.QdrantParams: where a qdrant index keeps its vectors
    store: Any = None  # ragroute.index.external.StoreParams: where an external-store index keeps them


def check_documents(documents: Sequence[Document]) -> list[Document]:
    """``documents`` as a list, or a one-line error: none at all, a bare string or a non-iterable,
    or items that are not :class:`Document` (what every index build refuses, here or on Ray)."""
    docs = types.check_documents(documents)
    if not docs:
        raise RagrouteError("no documents to index")
    return docs


def build_index(
    documents: Sequence[Document],
    method: str = "hybrid",
    *,
    encoder: Encoder | None = None,
    bm25_params: BM25Params | None = None,
    dense_params: DenseParams | None = None,
    fusion: FusionParams | None = None,
    graph_params: GraphParams | None = None,
    extractor: Any = None,
    qdrant_params: Any = None,
    store_params: Any = None,
    name: str = "",
    show_progress: bool | None = None,
) -> LocalIndex:
    """Index ``documents`` with ``method``, a registered index kind (``bm25``, ``dense``, ``hybrid``,
    ``graph``, ``qdrant``, ``lancedb``; ``graph_params`` and ``extractor`` apply to graphs,
    ``store_params`` (:class:`ragroute.index.external.StoreParams`: location and collection) to an
    index whose vectors live in an external store; ``qdrant_params`` is the same for Qdrant).

    Kinds that embed text need an ``encoder`` (see :func:`ragroute.encode.load_encoder`).
    """
    cls = INDEX_KINDS.get(method)
    documents = check_documents(documents)
    if cls.needs_encoder and encoder is None:
        raise RagrouteError(f"a {method} index needs an encoder")
    if cls.needs_encoder and encoder is not None:
        from ragroute.encode.truncation import warn_truncated

        warn_truncated(documents, encoder)  # said nothing until session 41
    options = IndexOptions(
        bm25=bm25_params,
        dense=dense_params,
        fusion=fusion,
        graph=graph_params,
        extractor=extractor,
        qdrant=qdrant_params,
        store=store_params,
    )
    return cls.from_options(documents, options, encoder=encoder, name=name, show_progress=show_progress)
