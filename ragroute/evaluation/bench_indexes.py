"""Indexes for the routing benchmarks: the library's own indexes over precomputed embeddings.

Routing benchmarks embed every document and every query once and reuse the
vectors for every source, the merged index and every router. :class:`KnownQueries`
hands those query vectors back whenever an index or a router asks to encode a
known query, so routing latency excludes query encoding for every router, and
:func:`bench_index` builds a :class:`~ragroute.index.dense.DenseIndex` (``dense``)
or a :class:`~ragroute.index.hybrid.HybridIndex` (``hybrid``: BM25 + dense, fused
by RRF as ``ragroute build --method hybrid`` does) from precomputed document vectors, or a
:class:`~ragroute.index.lexical.BM25Index` (``bm25``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError
from ragroute.index.dense import DenseIndex
from ragroute.types import Document

METHODS = ("dense", "hybrid", "bm25")


class KnownQueries:
    """An encoder that returns precomputed vectors for the query texts it was given.

    Unknown texts and all documents go to the wrapped encoder.
    """

    def __init__(self, encoder: Any, texts: Sequence[str], vectors: np.ndarray):
        self.encoder = encoder
        self.model_id, self.backend, self.dim = encoder.model_id, encoder.backend, encoder.dim
        self._vectors = dict(zip(texts, np.asarray(vectors, dtype=np.float32)))

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        fresh = dict(zip(missing, self.encoder.encode_queries(missing, **kwargs))) if missing else {}
        return np.vstack([self._vectors[t] if t in self._vectors else fresh[t] for t in texts])

    def encode_documents(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encoder.encode_documents(texts, **kwargs)

    def describe(self) -> dict[str, Any]:
        return self.encoder.describe()


def check_method(method: str) -> str:
    if method not in METHODS:
        raise RagrouteError(f"unknown method {method!r}: choose {' or '.join(METHODS)}")
    return method


def bench_index(name: str, documents: Sequence[Document], vectors: np.ndarray, encoder: Any, method: str):
    """A dense, hybrid or BM25 index over ``documents`` (dense parts from their precomputed ``vectors``)."""
    dense = DenseIndex(encoder, name=name)
    dense.add_vectors(list(documents), vectors)
    if check_method(method) == "dense":
        return dense
    from ragroute.index.hybrid import HybridIndex
    from ragroute.index.lexical import BM25Index

    bm25 = BM25Index(store=dense.store, name=name)
    bm25.refit()
    return bm25 if method == "bm25" else HybridIndex(bm25, dense, name=name)
