"""Which passages hold which terms: the lexical signal behind query-conditioned edge weights.

A multi-hop question names its first hop (the walk's seeds) and describes the next
one in words no seed phrase covers ("... the *director* of the film whose *composer*
..."). :class:`PassageTerms` keeps a binary passage x term incidence (BM25
tokens: lower-case, stop words dropped) with each term's idf, so a walk can scale
the edges into passages that contain the query's unmatched terms (see
:class:`~ragroute.graph.index.WalkParams` ``lexical_edges``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ragroute.index.bm25_counts import TermCounts, count_terms
from ragroute.index.bm25_tokenize import tokenize, tokenize_many
from ragroute.types import Document


class PassageTerms:
    """Binary incidence of BM25 terms in passages, with idf = log(N / df)."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self._read(count_terms(tokenize_many([d.full_text() for d in documents])))

    @classmethod
    def from_counts(cls, counts: TermCounts) -> PassageTerms:
        """The same incidence, from the term counts of the passages (BM25's default tokenizer),
        kept and updated by the graph as passages are added (until session 38 the first walk after
        every ``add`` tokenized every passage again)."""
        terms = cls.__new__(cls)
        terms._read(counts)
        return terms

    def _read(self, counts: TermCounts) -> None:
        """Vocabulary (first occurrence order), binary incidence and idf from term counts."""
        self.vocabulary = {term: i for i, term in enumerate(counts.terms)}
        incidence = sp.csc_array(counts.matrix.T)  # passages x terms
        incidence.data = np.ones(incidence.nnz, dtype=np.float32)
        self.incidence = incidence
        df = np.diff(incidence.indptr)
        self.idf = np.log(max(counts.n_docs, 1) / np.maximum(df, 1)).astype(np.float32)

    def unmatched_terms(self, query: str, covered: Iterable[str]) -> list[str]:
        """The query's terms (BM25 tokens, first occurrence order) that no ``covered`` phrase
        contains and that some passage does."""
        words = {w for phrase in covered for w in tokenize(phrase)}
        return [t for t in dict.fromkeys(tokenize(query)) if t not in words and t in self.vocabulary]

    def held_by(self, terms: Sequence[str], allowed: np.ndarray) -> list[str]:
        """The ``terms`` some ``allowed`` passage holds (a boolean mask over passages): what a caller
        who may read only those passages may be told the graph holds."""
        out = []
        for term in terms:
            column = self.vocabulary.get(term)
            if column is None:
                continue
            rows = self.incidence.indices[self.incidence.indptr[column] : self.incidence.indptr[column + 1]]
            if allowed[rows].any():
                out.append(term)
        return out

    def overlap(self, terms: Sequence[str]) -> np.ndarray:
        """Per passage, the idf-weighted share of ``terms`` it contains (0..1)."""
        ids = [self.vocabulary[t] for t in terms]
        if not ids:
            return np.zeros(self.incidence.shape[0], dtype=np.float32)
        weights = self.idf[ids]
        total = float(weights.sum())
        if total <= 0:
            return np.zeros(self.incidence.shape[0], dtype=np.float32)
        return np.asarray(self.incidence[:, ids] @ weights, dtype=np.float32) / total
