"""Build an index of any kind from documents: one entry point for the CLI and the API."""

from __future__ import annotations

from collections.abc import Sequence

from ragroute.encode.base import Encoder
from ragroute.errors import RagrouteError
from ragroute.index.dense import DenseIndex, DenseParams
from ragroute.index.hybrid import FusionParams, HybridIndex
from ragroute.index.io import INDEX_KINDS
from ragroute.index.lexical import BM25Index, BM25Params
from ragroute.index.local import LocalIndex
from ragroute.types import Document


def build_index(
    documents: Sequence[Document],
    method: str = "hybrid",
    *,
    encoder: Encoder | None = None,
    bm25_params: BM25Params | None = None,
    dense_params: DenseParams | None = None,
    fusion: FusionParams | None = None,
    name: str = "",
    show_progress: bool | None = None,
) -> LocalIndex:
    """Index ``documents`` with ``method`` (``bm25``, ``dense`` or ``hybrid``).

    Dense and hybrid need an ``encoder`` (see :func:`ragroute.encode.load_encoder`).
    """
    if method not in INDEX_KINDS:
        raise RagrouteError(f"unknown index method {method!r}: choose one of {', '.join(INDEX_KINDS)}")
    if not documents:
        raise RagrouteError("no documents to index")
    if method == "bm25":
        return BM25Index.build(documents, bm25_params, name=name)
    if encoder is None:
        raise RagrouteError(f"a {method} index needs an encoder")
    if method == "dense":
        return DenseIndex.build(documents, encoder, dense_params, name=name, show_progress=show_progress)
    return HybridIndex.build(
        documents,
        encoder,
        bm25_params=bm25_params,
        dense_params=dense_params,
        fusion=fusion,
        name=name,
        show_progress=show_progress,
    )
