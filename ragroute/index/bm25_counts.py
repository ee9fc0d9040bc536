"""BM25 term counts: what :class:`~ragroute.index.bm25_scoring.BM25Scorer` is fitted from, and how the
counts of corpus shards merge into the counts of the whole corpus.

:func:`count_terms` turns token lists into a :class:`TermCounts` (terms in order of first
occurrence, document lengths, a CSR ``(terms x documents)`` matrix of term frequencies).
:func:`merge_term_counts` joins the counts of consecutive shards: the vocabulary in order of first
occurrence over the concatenated shards, term frequencies re-numbered onto it, document lengths
concatenated. Document frequencies and the total length are then sums over the shards, and
``BM25Scorer.from_counts(merge_term_counts(shards))`` is bit for bit the scorer
``BM25Scorer.fit`` builds from all token lists at once (distributed builds count shards in parallel
workers: :mod:`ragroute.scale.ray_build`). :func:`remove_documents` drops documents from counts, with the
vocabulary re-ordered as :func:`count_terms` would order it for the documents left: a BM25 index
updated by adds and deletes keeps its counts and fits exactly the scorer a fit on all its documents
gives, tokenizing only what changed (:class:`~ragroute.index.lexical.BM25Index`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import scipy.sparse as sp

from ragroute.errors import RagrouteError

__all__ = ["TermCounts", "TermCountsKeeper", "count_terms", "merge_term_counts", "remove_documents"]


@dataclass
class TermCounts:
    """Term frequencies of a run of documents.

    ``terms``: the vocabulary in order of first occurrence (row ``i`` of ``matrix`` is
    ``terms[i]``); ``doc_len``: tokens per document (int64); ``matrix``: float64 CSR of shape
    ``(len(terms), len(doc_len))``, duplicates summed and column indices sorted within each row.
    """

    terms: list[str]
    doc_len: np.ndarray
    matrix: sp.csr_array

    @property
    def n_docs(self) -> int:
        """Number of documents counted."""
        return int(self.doc_len.shape[0])


def count_terms(token_lists: Sequence[Sequence[str]]) -> TermCounts:
    """Count the terms of one token list per document (raise on non-string tokens)."""
    docs = token_lists if isinstance(token_lists, Sequence) else list(token_lists)
    n_docs = len(docs)
    # Term ids in order of first occurrence over the concatenated corpus: the
    # insertion order of BM25Okapi's document-frequency dict, which fixes the
    # order in which it sums idf values for average_idf.
    # (dict.fromkeys keeps first occurrences in order; both passes run in C.)
    try:
        vocab = {term: i for i, term in enumerate(dict.fromkeys(chain.from_iterable(docs)))}
    except TypeError as exc:  # a document that is no token list, or a token that is a list
        raise RagrouteError(f"BM25 takes one list of string tokens per document ({exc})") from None
    doc_len = np.fromiter(map(len, docs), dtype=np.int64, count=n_docs)
    total_tokens = int(doc_len.sum())
    # a None token passed this check until session 51 (``next`` gave the None it found): the
    # scorer fitted on it saved a vocabulary its own load refused
    for term in vocab:
        if not isinstance(term, str):
            raise RagrouteError(f"BM25 tokens must be strings, got {type(term).__name__} {term!r}")
    term_ids = np.fromiter(
        map(vocab.__getitem__, chain.from_iterable(docs)), dtype=np.int64, count=total_tokens
    )
    doc_ids = np.repeat(np.arange(n_docs, dtype=np.int64), doc_len)
    # Term frequencies: (terms x docs) counts, duplicates summed, indices sorted.
    matrix = sp.csr_array(
        (np.ones(term_ids.shape[0], dtype=np.float64), (term_ids, doc_ids)), shape=(len(vocab), n_docs)
    )
    matrix.sum_duplicates()
    return TermCounts(list(vocab), doc_len, matrix)


def merge_term_counts(shards: Sequence[TermCounts]) -> TermCounts:
    """The counts of the concatenation of ``shards`` (in the order given): the same
    :class:`TermCounts` :func:`count_terms` returns for all their documents at once."""
    if not shards:
        raise RagrouteError("no BM25 shards to merge")
    if len(shards) == 1:
        return shards[0]
    # First occurrence over the concatenated corpus = first occurrence over the shards' own
    # vocabularies (each already in first-occurrence order), taken shard after shard.
    vocab = {term: i for i, term in enumerate(dict.fromkeys(chain.from_iterable(s.terms for s in shards)))}
    rows, cols, values = [], [], []
    offset = 0
    for shard in shards:
        coo = shard.matrix.tocoo()
        remap = np.fromiter(map(vocab.__getitem__, shard.terms), dtype=np.int64, count=len(shard.terms))
        rows.append(remap[coo.row.astype(np.int64)] if coo.nnz else np.zeros(0, np.int64))
        cols.append(coo.col.astype(np.int64) + offset)
        values.append(coo.data.astype(np.float64, copy=False))
        offset += shard.n_docs
    matrix = sp.csr_array(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(len(vocab), offset)
    )
    matrix.sum_duplicates()
    doc_len = np.concatenate([s.doc_len.astype(np.int64, copy=False) for s in shards])
    return TermCounts(list(vocab), doc_len, matrix)


def remove_documents(
    counts: TermCounts,
    drop: np.ndarray,
    tokens_of: Callable[[list[int]], list[list[str]]],
) -> TermCounts:
    """The counts of the documents left when those at positions ``drop`` are removed: the same
    :class:`TermCounts` :func:`count_terms` returns for the token lists of the documents left.

    The vocabulary is in order of first occurrence over the documents left. A term whose first
    document stays keeps its place relative to the other terms first seen there; a term first seen
    in a removed document now first occurs in a later one, where only the token order tells its
    place: ``tokens_of(positions)`` returns the token lists of those documents (positions among the
    documents left), the only ones tokenized again.
    """
    n_docs = counts.n_docs
    keep = np.ones(n_docs, dtype=bool)
    keep[np.asarray(drop, dtype=np.int64)] = False
    new_position = np.cumsum(keep) - 1
    old = counts.matrix
    first_old = old.indices[old.indptr[:-1]]  # rows are never empty, indices sorted within a row
    coo = old.tocoo()
    kept = keep[coo.col]
    matrix = sp.csr_array(
        (
            coo.data[kept].astype(np.float64, copy=False),
            (coo.row[kept].astype(np.int64), new_position[coo.col[kept]].astype(np.int64)),
        ),
        shape=(len(counts.terms), int(keep.sum())),
    )
    matrix.sum_duplicates()
    alive = np.flatnonzero(np.diff(matrix.indptr) > 0)  # terms still in some document
    matrix = matrix[alive]
    first_new = matrix.indices[matrix.indptr[:-1]].astype(np.int64)
    # within one document, terms first seen there are in token order: the old order where they
    # were first seen there before (old ids), else that document's own token order
    within = alive.astype(np.int64)
    moved = ~keep[first_old[alive]]
    again = np.unique(first_new[moved])
    if again.size:
        terms_alive = [counts.terms[i] for i in alive]
        rows = np.flatnonzero(np.isin(first_new, again))
        rows = rows[np.argsort(first_new[rows], kind="stable")]
        starts = np.searchsorted(first_new[rows], again)
        ends = np.append(starts[1:], rows.size)
        for tokens, start, end in zip(tokens_of([int(p) for p in again]), starts, ends):
            place = {term: i for i, term in enumerate(dict.fromkeys(tokens))}
            for row in rows[start:end]:
                within[row] = place[terms_alive[row]]
    order = np.lexsort((within, first_new))
    terms = [counts.terms[i] for i in alive[order]]
    doc_len = counts.doc_len[keep].astype(np.int64, copy=False)
    return TermCounts(terms, doc_len, matrix[order])


class TermCountsKeeper:
    """The term counts of a document store's documents, kept between changes and updated from the
    ones counted before: a store's iids ascend with position and are never reused, so what changed
    since is some counted documents deleted and new ones appended. Only those are tokenized (and,
    after a delete, the few documents where a term now first occurs: :func:`remove_documents`).
    Counts are kept compact (:func:`compact_counts`); ``key`` (the tokenizer's settings) must be the
    one they were counted with, else everything is counted again. Used by BM25 indexes and by a
    graph's passage terms; not thread-safe by itself (callers hold their store's lock)."""

    def __init__(self) -> None:
        self._kept: tuple[TermCounts, np.ndarray, Any] | None = None

    @property
    def kept(self) -> TermCounts | None:
        """The counts kept (compact), if any."""
        return None if self._kept is None else self._kept[0]

    def keep(self, counts: TermCounts, iids: np.ndarray, key: Any = None) -> None:
        """Keep ``counts``, counted elsewhere, as those of the documents whose iids are ``iids``
        (counted with ``key``'s tokenizer settings): a distributed build's merged shard counts
        (:mod:`ragroute.scale.ray_build`), so the index's first change tokenizes only what changed."""
        if counts.n_docs != len(iids):
            raise RagrouteError(f"term counts of {counts.n_docs} documents kept for {len(iids)}")
        self._kept = (compact_counts(counts), np.array(iids, copy=True), key)

    def update(
        self,
        documents: Sequence[Any],
        iids: np.ndarray,
        tokenize: Callable[[list[str]], list[list[str]]],
        key: Any = None,
    ) -> TermCounts:
        """The counts of a store's ``documents`` (one version of them) whose iids are ``iids``;
        ``tokenize(texts)`` gives the token lists of texts (``Document.full_text()``)."""

        def tokens_of(positions: Sequence[int]) -> list[list[str]]:
            return tokenize([documents[p].full_text() for p in positions])

        counts: TermCounts | None = None
        if self._kept is not None and self._kept[2] == key:
            counts, counted, _ = self._kept
            gone = ~np.isin(counted, iids)
            left = int(counted.size - gone.sum())
            if not np.array_equal(counted[~gone], iids[:left]):  # not a delete-then-append: count anew
                counts = None
            else:
                if gone.any():
                    counts = remove_documents(counts, np.flatnonzero(gone), tokens_of)
                if left < len(iids):
                    added = count_terms(tokens_of(range(left, len(iids))))
                    counts = merge_term_counts([counts, added]) if left else added
        if counts is None:
            counts = count_terms(tokens_of(range(len(iids))))
        self._kept = (compact_counts(counts), np.array(iids, copy=True), key)
        return counts


def compact_counts(counts: TermCounts) -> TermCounts:
    """Counts as kept between changes: term frequencies as uint16 (float32 when a term occurs
    65,536 times or more in one document) and 32-bit indices where they fit, 6 bytes a posting
    against a fitted BM25 scorer's 12 (the float64 counts fitted from take 16). Every consumer
    reads frequencies as float64 again, exactly."""
    matrix = counts.matrix
    data = matrix.data
    small = not data.size or float(data.max()) < 65536
    data = data.astype(np.uint16 if small else np.float32)
    wide = matrix.nnz >= 2**31 or matrix.shape[1] >= 2**31
    index_type = np.int64 if wide else np.int32
    kept = sp.csr_array(
        (data, matrix.indices.astype(index_type), matrix.indptr.astype(index_type)), shape=matrix.shape
    )
    return TermCounts(counts.terms, counts.doc_len, kept)
