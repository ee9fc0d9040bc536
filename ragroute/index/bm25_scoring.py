"""BM25 scoring: an exact, fast BM25 scorer (:class:`BM25Scorer`) and its top-k search.

:class:`BM25Scorer` gives the same scores as ``rank_bm25.BM25Okapi`` for the same
token lists, but answers queries hundreds of times faster. Every (term, document)
contribution

    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))

is computed once at fit time, with BM25Okapi's float64 operations in BM25Okapi's
order, and stored in a CSR matrix of shape ``(vocabulary, documents)``; scoring a
query sums a few of its rows. Per-term values are therefore bit-identical to
BM25Okapi's and a document's total can differ only in the last bits, from adding
the same terms in another order (about 1e-15 in practice).

BM25Okapi conventions reproduced here: ``idf = log(N - df + 0.5) - log(df + 0.5)``;
``average_idf`` is the mean idf over *all* terms before flooring; terms whose idf is
strictly negative (in more than half of the documents) get ``epsilon * average_idf``
instead; a term repeated in the query counts once per occurrence; terms not in the
vocabulary contribute nothing. One deliberate difference: with ``b == 1`` an empty
document scores 0 here, where BM25Okapi computes 0/0 = NaN.

How queries stay fast (measured on 100k synthetic documents, see
``ragroute.evaluation.bench_bm25``): the postings of the query terms are summed into a
dense score vector with one ``np.bincount``; rows of terms found in a quarter or more
of the documents are also kept dense (within the sparse matrix's own memory) and
added with one vectorised pass, which is several times cheaper than scattering their
postings. The top-k then avoids a partition of the whole vector: a lower bound on
the k-th best score, taken from the rarest query term's documents, leaves only a
handful of candidates to sort exactly. ``top_k_many`` runs the same kernel per query
(the batched alternatives it documents measured slower).

Tokens come from :mod:`ragroute.index.bm25_tokenize`; the scorer's files are
written and read by :mod:`ragroute.index.bm25_store`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ragroute.errors import IndexFormatError, RagrouteError, is_finite_number
from ragroute.index.bm25_counts import TermCounts, count_terms
from ragroute.index.bm25_store import compact_matrix, load_scorer_parts, save_scorer_parts

__all__ = ["BM25Scorer"]

# Query-time tuning (see the module docstring); tests override these to force each path.
# rows of terms in at least this fraction of the documents are also kept dense, so a
# query adds them with one vectorised pass instead of a scatter over their postings;
_DENSE_DF_FRACTION = 0.25
# query postings up to this many: the top-k is chosen among the documents holding a term;
_SMALL_POOL = 8192
# documents sampled from the rarest term's postings to bound the k-th best score;
_BOUND_SAMPLE = 4096
# candidates up to this many are simply sorted;
_SORT_ALL = 256


def _check_mask(mask: np.ndarray | None, n_docs: int) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != (n_docs,):
        raise RagrouteError(
            f"mask must be a boolean array of shape ({n_docs},), got {mask.dtype} array of shape {mask.shape}"
        )
    return mask


def check_params(k1: float, b: float, epsilon: float) -> None:
    """Raise :class:`RagrouteError` on BM25 parameters out of range or that are no number (text,
    ``None``, a boolean: a bare ``TypeError`` from ``math.isfinite`` until session 49)."""
    if not (is_finite_number(k1) and k1 > 0):
        raise RagrouteError(f"BM25 k1 must be a positive number, got {k1!r}")
    if not (is_finite_number(b) and 0.0 <= b <= 1.0):
        raise RagrouteError(f"BM25 b must be between 0 and 1, got {b!r}")
    if not is_finite_number(epsilon):
        raise RagrouteError(f"BM25 epsilon must be a finite number, got {epsilon!r}")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise RagrouteError(f"k must be a non-negative integer, got {k!r}")
    return int(k)


def _select(scores: np.ndarray, ids: np.ndarray | None, k: int) -> np.ndarray:
    """Positions of the ``k`` best ``scores``, best first, ties broken by lower id.

    ``ids`` are the document ids of ``scores`` (``None`` means ``arange``); the
    result indexes into ``scores``.
    """
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if n <= _SORT_ALL:
        order = np.lexsort((np.arange(n) if ids is None else ids, -scores))
        return order[:k]
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        pos = np.flatnonzero(scores >= kth)
    else:
        pos = np.arange(n)
    tie = pos if ids is None else ids[pos]
    order = np.lexsort((tie, -scores[pos]))
    return pos[order[:k]]


class BM25Scorer:
    """BM25Okapi scores over a fixed corpus of token lists, precomputed for fast queries.

    Build with :meth:`fit`; query with :meth:`get_scores`, :meth:`top_k` or
    :meth:`top_k_many`; persist with :meth:`save` / :meth:`load`. Documents are
    numbered ``0..n_docs-1`` in the order given to :meth:`fit`.
    """

    def __init__(
        self,
        matrix: sp.csr_array,
        vocab: dict[str, int],
        idf: np.ndarray,
        *,
        k1: float,
        b: float,
        epsilon: float,
        avgdl: float,
        average_idf: float,
        total_tokens: int,
    ) -> None:
        """Wrap precomputed parts; use :meth:`fit` or :meth:`load` rather than calling this."""
        self._matrix = matrix
        self._vocab = vocab
        self._idf = idf
        self.k1 = float(k1)
        self.b = float(b)
        self.epsilon = float(epsilon)
        self.avgdl = float(avgdl)
        self.average_idf = float(average_idf)
        self.total_tokens = int(total_tokens)
        # Python ints: per-term lookups in the query path are several times cheaper
        # on a list than on an ndarray.
        self._indptr: list[int] = matrix.indptr.tolist()
        self._indices = matrix.indices
        self._data = matrix.data
        self._dense_rows = _dense_rows(matrix)

    # ------------------------------------------------------------------ building

    @classmethod
    def fit(
        cls,
        token_lists: Sequence[Sequence[str]],
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> BM25Scorer:
        """Index a corpus given as one token list per document.

        ``k1``, ``b`` and ``epsilon`` mean what they mean in ``rank_bm25.BM25Okapi``
        (same defaults). Raises :class:`RagrouteError` on an empty corpus, a string
        where a token list is expected, non-string tokens, or out-of-range parameters.
        """
        check_params(k1, b, epsilon)
        docs = token_lists if isinstance(token_lists, Sequence) else list(token_lists)
        n_docs = len(docs)
        if n_docs == 0:
            raise RagrouteError("cannot fit BM25 on an empty corpus")
        if isinstance(docs, str) or any(isinstance(doc, str) for doc in docs):
            raise RagrouteError(
                "BM25Scorer.fit takes one token list per document, got a string (tokenize first)"
            )
        return cls.from_counts(count_terms(docs), k1=k1, b=b, epsilon=epsilon)

    @classmethod
    def from_counts(
        cls,
        counts: TermCounts,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> BM25Scorer:
        """Fit from term counts (:func:`count_terms`, or shards merged by :func:`merge_term_counts`):
        the same scorer, bit for bit, as :meth:`fit` on the token lists the counts were taken from."""
        check_params(k1, b, epsilon)
        n_docs = int(counts.doc_len.shape[0])
        if n_docs == 0:
            raise RagrouteError("cannot fit BM25 on an empty corpus")
        vocab = {term: i for i, term in enumerate(counts.terms)}
        doc_len = counts.doc_len
        total_tokens = int(doc_len.sum())
        n_terms = len(vocab)
        avgdl = total_tokens / n_docs
        df = np.diff(counts.matrix.indptr)
        counts_matrix = counts.matrix

        # idf exactly as BM25Okapi computes it (math.log on Python floats), one
        # log pair per distinct document frequency.
        uniq_df, inverse = np.unique(df, return_inverse=True)
        uniq_idf = np.array(
            [math.log(n_docs - int(d) + 0.5) - math.log(int(d) + 0.5) for d in uniq_df], dtype=np.float64
        )
        idf = uniq_idf[inverse.reshape(-1)] if n_terms else np.zeros(0, dtype=np.float64)
        # Sequential left-to-right sum, as BM25Okapi's Python loop does.
        idf_sum = float(np.cumsum(idf)[-1]) if n_terms else 0.0
        average_idf = idf_sum / n_terms if n_terms else 0.0
        idf = np.where(idf < 0, epsilon * average_idf, idf)

        # Per-entry contribution with BM25Okapi's operation order:
        # idf * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))).
        norm = k1 * ((1 - b) + b * doc_len.astype(np.float64) / avgdl) if total_tokens else None
        tf = counts_matrix.data.astype(np.float64, copy=False)  # counts may be kept as float32
        if tf.size:
            assert norm is not None  # documents with terms have tokens
            row_of = np.repeat(np.arange(n_terms, dtype=np.int64), df)
            contrib = idf[row_of] * (tf * (k1 + 1) / (tf + norm[counts_matrix.indices]))
        else:
            contrib = tf
        matrix = sp.csr_array((contrib, counts_matrix.indices, counts_matrix.indptr), shape=(n_terms, n_docs))
        return cls(
            compact_matrix(matrix),
            vocab,
            idf,
            k1=k1,
            b=b,
            epsilon=epsilon,
            avgdl=avgdl,
            average_idf=average_idf,
            total_tokens=total_tokens,
        )

    # ------------------------------------------------------------------ properties

    @property
    def n_docs(self) -> int:
        """Number of indexed documents."""
        return int(self._matrix.shape[1])

    @property
    def vocab(self) -> dict[str, int]:
        """Term -> row id of the score matrix (do not modify)."""
        return self._vocab

    @property
    def idf(self) -> np.ndarray:
        """Floored idf per term id, as used in the scores (read-only view)."""
        view = self._idf.view()
        view.flags.writeable = False
        return view

    @property
    def matrix(self) -> sp.csr_array:
        """The (terms x documents) CSR matrix of precomputed term contributions."""
        return self._matrix

    def __repr__(self) -> str:
        return (
            f"BM25Scorer(n_docs={self.n_docs}, vocab={len(self._vocab)}, k1={self.k1}, b={self.b}, "
            f"epsilon={self.epsilon})"
        )

    # ------------------------------------------------------------------ scoring

    def _term_ids(self, query_tokens: Sequence[str]) -> list[int]:
        if isinstance(query_tokens, str):
            raise RagrouteError("query_tokens must be a list of tokens, not a string (tokenize it first)")
        get = self._vocab.get
        return [tid for tid in map(get, query_tokens) if tid is not None]

    def _scores(self, term_ids: list[int]) -> np.ndarray:
        """Dense float64 scores for query term ids (one id per occurrence, query order)."""
        indptr, indices, data, dense_rows = self._indptr, self._indices, self._data, self._dense_rows
        sparse = [t for t in term_ids if t not in dense_rows] if dense_rows else term_ids
        if len(sparse) > 1:
            # bincount adds each document's contributions in query order, from 0.0:
            # the same float additions BM25Okapi performs.
            slices = [slice(indptr[t], indptr[t + 1]) for t in sparse]
            idx = np.concatenate([indices[sl] for sl in slices])
            weights = np.concatenate([data[sl] for sl in slices])
            scores = np.bincount(idx, weights=weights, minlength=self.n_docs)
        else:
            scores = np.zeros(self.n_docs, dtype=np.float64)
            if sparse:
                start, end = indptr[sparse[0]], indptr[sparse[0] + 1]
                scores[indices[start:end]] = data[start:end]
        if len(sparse) < len(term_ids):
            for t in term_ids:
                row = dense_rows.get(t)
                if row is not None:
                    scores += row
        return scores

    def _lower_bound(self, scores: np.ndarray, term_ids: list[int], k: int, mask: np.ndarray | None) -> float:
        """A value <= the k-th best allowed score (0.0 when none is found cheaply).

        The k-th best score among any k allowed documents is such a bound; the
        documents are taken from the rarest query term's postings (sampled when long),
        which tend to hold the best scores.
        """
        indptr, indices = self._indptr, self._indices
        for t in sorted(set(term_ids), key=lambda t: indptr[t + 1] - indptr[t]):
            start, end = indptr[t], indptr[t + 1]
            if end - start < k:
                continue
            step = max(1, (end - start) // max(_BOUND_SAMPLE, k))
            docs = indices[start:end:step]
            if mask is not None:
                docs = docs[mask[docs]]
            if docs.shape[0] < k:
                continue
            vals = scores[docs]
            return float(np.partition(vals, vals.shape[0] - k)[vals.shape[0] - k])
        return 0.0

    def _top(
        self, scores: np.ndarray, term_ids: list[int], k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of a dense score vector (best first, ties by lower index)."""
        if k == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        indptr, indices = self._indptr, self._indices
        if term_ids:
            unique_ids = set(term_ids)
            if sum([indptr[t + 1] - indptr[t] for t in unique_ids]) <= _SMALL_POOL:
                # Few postings: the documents holding a query term are the only ones
                # that can score above 0.
                if len(unique_ids) == 1:
                    (t,) = unique_ids
                    cand = indices[indptr[t] : indptr[t + 1]]
                else:
                    cand = np.sort(np.concatenate([indices[indptr[t] : indptr[t + 1]] for t in unique_ids]))
                    cand = cand[np.concatenate(([True], cand[1:] != cand[:-1]))]
                cand = cand[scores[cand] > 0]
                if mask is not None:
                    cand = cand[mask[cand]]
                if cand.shape[0] >= k:
                    return self._pick(scores, cand, k)
            else:
                bound = self._lower_bound(scores, term_ids, k, mask)
                if bound > 0:
                    hit = scores >= bound
                    if mask is not None:
                        hit &= mask
                    return self._pick(scores, np.flatnonzero(hit), k)
        # General case: zero (or negative) scores may be needed to fill k.
        cand = np.flatnonzero(scores > 0)
        if mask is not None:
            cand = cand[mask[cand]]
        if cand.shape[0] >= k:
            return self._pick(scores, cand, k)
        if mask is not None:
            return self._pick(scores, np.flatnonzero(mask), k)
        pos = _select(scores, None, k)
        return pos.astype(np.int64, copy=False), scores[pos]

    @staticmethod
    def _pick(scores: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        cand_scores = scores[cand]
        pos = _select(cand_scores, cand, k)
        return cand[pos].astype(np.int64, copy=False), cand_scores[pos]

    def get_scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for one tokenized query: float64 array of shape (n_docs,)."""
        return self._scores(self._term_ids(query_tokens))

    def top_k(
        self, query_tokens: Sequence[str], k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best documents for one tokenized query.

        Returns ``(doc_indices int64, scores float64)``, best first, ties broken by the
        lower document index. ``mask`` (bool, shape ``(n_docs,)``) restricts results to
        documents where it is true; fewer than ``k`` rows come back only when fewer
        documents are allowed. Documents scoring 0 are included when needed to fill ``k``.
        """
        k = _check_k(k)
        mask = _check_mask(mask, self.n_docs)
        term_ids = self._term_ids(query_tokens)
        return self._top(self._scores(term_ids), term_ids, k, mask)

    def top_k_many(
        self, queries: Sequence[Sequence[str]], k: int, mask: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`top_k` for many tokenized queries; results are identical to calling it on each.

        Arguments are checked once and every query runs the single-query kernel.
        Alternatives measured slower on 100k documents: one sparse (queries x terms)
        @ (terms x documents) product per chunk (~6x slower), a single offset
        ``bincount`` over a chunk of queries (~2x slower), and two threads (~1.1x faster
        on a big corpus, ~2x slower on a small one: the kernel mostly holds the GIL).
        """
        k = _check_k(k)
        mask = _check_mask(mask, self.n_docs)
        if isinstance(queries, str):
            raise RagrouteError("queries must be a list of token lists")
        results = []
        for query in queries:
            term_ids = self._term_ids(query)
            results.append(self._top(self._scores(term_ids), term_ids, k, mask))
        return results

    def top_k_matching_many(
        self, queries: Sequence[Sequence[str]], k: int, mask: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``k`` best *matching* documents of each tokenized query: those holding a query term
        with a score other than 0 (what a search returns), best first, ties by lower index.

        :meth:`top_k` fills ``k`` with documents scoring 0 when fewer score above it; a term in
        more than half of the documents gets ``epsilon * average_idf``, negative when the average
        idf is (small or uniform corpora), so its documents score below 0 and were pushed out of
        the top ``k`` by non-matching ones, then dropped (until session 37: ``"alpha"`` over
        ``alpha`` / ``alpha beta`` / ``beta`` found nothing at k = 1). Only such queries are ranked
        again, among the documents of their terms' postings.
        """
        out = []
        indptr, indices = self._indptr, self._indices
        for (positions, scores), query in zip(self.top_k_many(queries, k, mask), queries):
            if scores.shape[0] == 0 or scores[-1] > 0:  # k positive scores: every match ranks lower
                out.append((positions, scores))
                continue
            term_ids = self._term_ids(query)
            postings = [indices[indptr[t] : indptr[t + 1]] for t in set(term_ids)]
            cand = np.unique(np.concatenate(postings)) if postings else np.empty(0, dtype=np.int64)
            if mask is not None:
                cand = cand[mask[cand]]
            all_scores = self._scores(term_ids)
            cand = cand[all_scores[cand] != 0]
            out.append(self._pick(all_scores, cand, k))
        return out

    # ------------------------------------------------------------------ persistence

    def statistics(self) -> dict[str, Any]:
        """What the manifest records beside the scorer's files (see :mod:`ragroute.index.bm25_store`)."""
        return {
            "k1": self.k1,
            "b": self.b,
            "epsilon": self.epsilon,
            "n_docs": int(self._matrix.shape[1]),
            "total_tokens": self.total_tokens,
            "avgdl": self.avgdl,
            "average_idf": self.average_idf,
            "nnz": int(self._matrix.nnz),
        }

    def write_parts(self, directory: Path | str) -> list[str]:
        """Write the matrix and vocabulary into a build folder; its manifest records :meth:`statistics`."""
        return save_scorer_parts(directory, self._matrix, self._vocab, self._idf)

    @classmethod
    def read_parts(cls, directory: Path | str, statistics: Mapping[str, Any] | None) -> BM25Scorer:
        """Read what :meth:`write_parts` wrote, with the statistics from the manifest."""
        matrix, vocab, idf, params = load_scorer_parts(directory, statistics)
        return cls(matrix, vocab, idf, **params)

    def save(self, directory: Path | str) -> list[str]:
        """Publish the scorer on its own as an artifact (family ``scorer``, kind ``bm25``) at ``directory``;
        return the names of the files of the build."""
        from ragroute.store import write_artifact

        with write_artifact(
            Path(directory), "scorer", "bm25", params=self.statistics(), error=IndexFormatError
        ) as build:
            names = self.write_parts(build.path)
        return names

    @classmethod
    def load(cls, directory: Path | str) -> BM25Scorer:
        """Read a scorer written by :meth:`save` (or a 0.1 scorer folder); raise :class:`IndexFormatError`
        naming a bad file."""
        from ragroute.store import artifact_exists, read_artifact

        directory = Path(directory)
        if not artifact_exists(directory):
            return cls.read_parts(directory, None)
        return read_artifact(
            directory,
            lambda snap: cls.read_parts(snap.path, snap.manifest.params),
            family="scorer",
            error=IndexFormatError,
        )


def _dense_rows(matrix: sp.csr_array) -> dict[int, np.ndarray]:
    """Dense copies of the rows of very common terms, within the sparse matrix's own size."""
    n_terms, n_docs = matrix.shape
    df = np.diff(matrix.indptr)
    common = np.flatnonzero(df >= max(1.0, _DENSE_DF_FRACTION * n_docs))
    budget = matrix.data.nbytes + matrix.indices.nbytes
    rows: dict[int, np.ndarray] = {}
    for t in common[np.argsort(-df[common], kind="stable")]:
        if (len(rows) + 1) * n_docs * 8 > budget:
            break
        row = np.zeros(n_docs, dtype=np.float64)
        start, end = matrix.indptr[t], matrix.indptr[t + 1]
        row[matrix.indices[start:end]] = matrix.data[start:end]
        row.flags.writeable = False
        rows[int(t)] = row
    return rows
