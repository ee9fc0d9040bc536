"""Knowledge-graph building: phrase and passage nodes, fact, passage-phrase and synonym edges.

Node ids: phrases first (``0 .. P-1``), then passages (``P .. P+N-1``, in the
order of the passage store). Edges (undirected, stored in both directions):

* fact edges between two phrases that co-occur in a sentence (weight = number of
  sentences in which they do);
* passage-phrase edges (weight 1) between a passage and every phrase it contains;
* synonym edges between phrases whose embeddings have cosine >= ``synonym_threshold``
  (weight = the cosine), found by a faiss kNN of every phrase over the phrase index.

Facts are kept as a table of unique phrase pairs with the passages they come from,
for seeding walks. :func:`build_graph` works on any documents the loaders give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ragroute.graph.extract import RuleExtractor
from ragroute.types import Document


@dataclass
class GraphParams:
    """How the graph is built."""

    synonym_threshold: float = 0.8
    synonym_k: int = 10
    encode_batch: int = 256

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphParams:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GraphTables:
    """The graph's arrays (what :mod:`ragroute.graph.store` writes and reads)."""

    phrases: list[str]
    phrase_vectors: np.ndarray  # (P, dim) float32, L2-normalised
    phrase_passages: np.ndarray  # (P,) number of passages containing each phrase
    fact_subject: np.ndarray  # (F,) phrase ids
    fact_object: np.ndarray  # (F,) phrase ids
    fact_passages: sp.csr_array  # (F, N) which passages each fact comes from
    adjacency: sp.csr_array  # (P+N, P+N) float32 edge weights
    synonym_edges: int

    @property
    def n_phrases(self) -> int:
        return len(self.phrases)


def build_graph(
    documents: Sequence[Document],
    encoder: Any,
    *,
    extractor: Any = None,
    params: GraphParams | None = None,
    show_progress: bool | None = None,
) -> GraphTables:
    """Extract phrases and facts from ``documents`` and build the graph's tables."""
    extractor = extractor or RuleExtractor()
    params = params or GraphParams()
    extractions = [
        extractor.extract(d)
        for d in tqdm(documents, desc="extracting", unit="passage", disable=not _progress(show_progress))
    ]
    phrase_id: dict[str, int] = {}
    for extraction in extractions:
        for phrase in extraction.phrases:
            phrase_id.setdefault(phrase, len(phrase_id))
    phrases = list(phrase_id)
    n_phrases, n_passages = len(phrases), len(documents)
    # passage-phrase links
    rows, cols = [], []
    for position, extraction in enumerate(extractions):
        for phrase in extraction.phrases:
            rows.append(phrase_id[phrase])
            cols.append(position)
    contains = sp.csr_array(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_phrases, n_passages)
    )
    contains.data[:] = 1.0
    phrase_passages = np.asarray(contains.sum(axis=1)).reshape(-1).astype(np.float32)
    # facts: unique phrase pairs, with the passages they come from and a sentence count
    fact_id: dict[tuple[int, int], int] = {}
    fact_rows, fact_cols, pair_counts = [], [], {}
    for position, extraction in enumerate(extractions):
        for fact in extraction.facts:
            a, b = phrase_id[fact.subject], phrase_id[fact.object]
            key = (min(a, b), max(a, b))
            fid = fact_id.setdefault(key, len(fact_id))
            fact_rows.append(fid)
            fact_cols.append(position)
            pair_counts[key] = pair_counts.get(key, 0) + 1
    pairs = np.array(list(fact_id), dtype=np.int64).reshape(-1, 2)
    fact_passages = sp.csr_array(
        (np.ones(len(fact_rows), dtype=np.float32), (fact_rows, fact_cols)), shape=(len(fact_id), n_passages)
    )
    fact_passages.data[:] = 1.0
    vectors = _encode_phrases(phrases, encoder, params, show_progress)
    synonyms = _synonym_pairs(vectors, params)
    adjacency = _adjacency(n_phrases, n_passages, contains, pairs, pair_counts, synonyms)
    return GraphTables(
        phrases=phrases,
        phrase_vectors=vectors,
        phrase_passages=phrase_passages,
        fact_subject=pairs[:, 0].copy(),
        fact_object=pairs[:, 1].copy(),
        fact_passages=fact_passages,
        adjacency=adjacency,
        synonym_edges=len(synonyms),
    )


def _progress(show: bool | None) -> bool:
    import sys

    return sys.stderr.isatty() if show is None else show


def _encode_phrases(phrases: list[str], encoder: Any, params: GraphParams, show: bool | None) -> np.ndarray:
    if not phrases:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    chunks = []
    starts = range(0, len(phrases), params.encode_batch)
    for start in tqdm(starts, desc="encoding phrases", unit="batch", disable=not _progress(show)):
        batch = phrases[start : start + params.encode_batch]
        chunks.append(np.asarray(encoder.encode_queries(batch, show_progress=False), dtype=np.float32))
    return np.ascontiguousarray(np.vstack(chunks))


def _synonym_pairs(vectors: np.ndarray, params: GraphParams) -> list[tuple[int, int, float]]:
    """Phrase pairs with cosine >= threshold among each phrase's ``synonym_k`` nearest phrases."""
    if len(vectors) < 2:
        return []
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    k = min(params.synonym_k + 1, len(vectors))
    scores, ids = index.search(vectors, k)
    out = []
    for i, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        for score, j in zip(row_scores, row_ids):
            if j > i and score >= params.synonym_threshold:
                out.append((i, int(j), float(score)))
    return out


def _adjacency(
    n_phrases: int,
    n_passages: int,
    contains: sp.csr_array,
    pairs: np.ndarray,
    pair_counts: dict[tuple[int, int], int],
    synonyms: list[tuple[int, int, float]],
) -> sp.csr_array:
    n = n_phrases + n_passages
    coo = contains.tocoo()
    rows = [coo.row, coo.col + n_phrases]
    cols = [coo.col + n_phrases, coo.row]
    data = [np.ones(coo.nnz, dtype=np.float32)] * 2
    if len(pairs):
        weights = np.array([pair_counts[(int(a), int(b))] for a, b in pairs], dtype=np.float32)
        rows += [pairs[:, 0], pairs[:, 1]]
        cols += [pairs[:, 1], pairs[:, 0]]
        data += [weights, weights]
    if synonyms:
        syn = np.array(synonyms, dtype=np.float64)
        a, b, w = syn[:, 0].astype(np.int64), syn[:, 1].astype(np.int64), syn[:, 2].astype(np.float32)
        rows += [a, b]
        cols += [b, a]
        data += [w, w]
    matrix = sp.coo_array(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    ).tocsr()
    matrix.sum_duplicates()
    return sp.csr_array(matrix, dtype=np.float32)
