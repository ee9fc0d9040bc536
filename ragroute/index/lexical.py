"""BM25 retrieval over a document store, with scores identical to ``rank_bm25.BM25Okapi``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError
from ragroute.index.bm25_counts import TermCounts, TermCountsKeeper
from ragroute.index.bm25_scoring import BM25Scorer, check_params
from ragroute.index.bm25_tokenize import TokenizerConfig, check_can_tokenize, tokenize_many
from ragroute.index.docstore import DocumentStore, check_have_text
from ragroute.index.local import LocalIndex
from ragroute.types import Document, Hit


@dataclass
class BM25Params:
    """BM25Okapi parameters (rank-bm25's defaults) and the tokenizer."""

    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self) -> None:
        """Refuse parameters out of range, or of the wrong type, here: until session 49 they were
        first read when the index was fitted, after ``add`` had put the documents into its store
        (the add raised, yet kept them: adding them again said "duplicate document id"), and text
        or ``None`` raised a bare ``TypeError``. A tokenizer that cannot run here (stemming without
        PyStemmer) is refused here too: its add kept the documents it had failed to index (adding
        them again said "duplicate document id"), and a hybrid build encoded every document first."""
        check_params(self.k1, self.b, self.epsilon)
        if not isinstance(self.tokenizer, TokenizerConfig):
            raise RagrouteError(
                f"BM25 tokenizer must be a TokenizerConfig, got {type(self.tokenizer).__name__}"
            )
        check_can_tokenize(self.tokenizer)

    def to_dict(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "epsilon": self.epsilon, "tokenizer": self.tokenizer.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BM25Params:
        return cls(
            k1=float(data.get("k1", 1.5)),
            b=float(data.get("b", 0.75)),
            epsilon=float(data.get("epsilon", 0.25)),
            tokenizer=TokenizerConfig.from_dict(data.get("tokenizer") or {}),
        )


class BM25Index(LocalIndex):
    """Lexical index: tokenised ``Document.full_text()`` scored with BM25Okapi.

    ``add`` and ``delete`` refit the scorer over the whole store: BM25's idf and
    average length depend on every document, so this is what keeps scores exact. The term counts
    of the documents are kept from the first refit on, so a refit tokenizes only the documents
    added since (and, after a delete, the few where a term now first occurs): the scorer is bit for
    bit the one a fit on every document gives. A store shared with another index (a hybrid's, an
    expert set's base) may change through that index: a search first refits when the store's
    ``version`` is not the one it was fitted on (its positions would otherwise point at other
    documents). An index whose documents were all deleted finds nothing until documents are added
    (saved, it is a build of no documents that loads back as such). ``counts``: the term counts
    ``scorer`` was fitted from (of the store's documents, in order), kept as a build keeps them
    (a Ray build passes its shards' merged counts).
    """

    kind = "bm25"

    def __init__(
        self,
        params: BM25Params | None = None,
        store: DocumentStore | None = None,
        scorer: BM25Scorer | None = None,
        name: str = "",
        counts: TermCounts | None = None,
    ) -> None:
        super().__init__(store if store is not None else DocumentStore(), name)
        self.params = params or BM25Params()
        self.scorer = scorer
        self._fitted_version = self.store.version if scorer is not None else -1
        self._counts = TermCountsKeeper()  # the documents' term counts, kept between refits
        if counts is not None:
            # the term counts ``scorer`` was fitted from (a Ray build's merged shards), kept as a
            # build here keeps them: until session 49 a Ray-built index's first add tokenized every document
            self._counts.keep(counts, self.store.iids, self.params.tokenizer)

    @classmethod
    def build(
        cls, documents: Sequence[Document], params: BM25Params | None = None, *, name: str = ""
    ) -> BM25Index:
        index = cls(params, name=name)
        index.add(documents)
        return index

    @classmethod
    def from_options(cls, documents, options, *, encoder=None, name="", show_progress=None) -> BM25Index:
        return cls.build(documents, options.bm25, name=name)

    def add(self, documents: Sequence[Document]) -> None:
        check_have_text(documents)
        with self.store.writing():
            self.store.add(documents)
            self.refit()

    def delete(self, doc_ids: Sequence[str]) -> int:
        with self.store.writing():
            removed = len(self.store.delete(doc_ids))
            self.refit()
            return removed

    def refit(self) -> None:
        """Recompute the BM25 statistics from the documents in the store (none: no scorer; deleting
        every document raised after the store had dropped them until session 38)."""
        with self.store.reading():  # the statistics of one version of the documents
            version = self.store.version
            counts = self._term_counts()
            self.scorer = (
                BM25Scorer.from_counts(
                    counts, k1=self.params.k1, b=self.params.b, epsilon=self.params.epsilon
                )
                if counts.n_docs
                else None
            )
            self._fitted_version = version

    def _term_counts(self) -> TermCounts:
        """The term counts of the documents in the store, updated from the kept ones
        (:class:`~ragroute.index.bm25_counts.TermCountsKeeper`)."""
        tokenizer = self.params.tokenizer
        return self._counts.update(
            self.store.documents, self.store.iids, lambda texts: tokenize_many(texts, tokenizer), tokenizer
        )

    def _current(self) -> BM25Scorer | None:
        """The scorer, fitted again first if the (possibly shared) store changed since."""
        if self._fitted_version != self.store.version and (self.scorer is not None or len(self.store)):
            self.refit()
        return self.scorer

    def _search_many(self, queries: list[str], k: int, filters: Mapping[str, Any] | None) -> list[list[Hit]]:
        return [
            [self.store.hit(p, s, rank, self.name) for rank, (p, s) in enumerate(matched, 1)]
            for matched in self.ranked_positions(queries, k, filters)
        ]

    def ranked_positions(
        self, queries: list[str], k: int, filters: Mapping[str, Any] | None
    ) -> list[list[tuple[int, float]]]:
        """(document position, score) of each query's top ``k`` matches, best first (no Hit built)."""
        with self.store.reading():  # the scorer, the mask and the positions of one version
            scorer = self._current()
            if scorer is None or len(self.store) == 0:
                return [[] for _ in queries]
            mask = self.store.filter_mask(filters)
            tokens = tokenize_many(queries, self.params.tokenizer)
            # documents holding a query term, scoring other than 0 (negative scores included); the
            # int64 positions and float64 scores made Python numbers by tolist (until session 53 by
            # int() and float() on each numpy scalar: a fifth of this method's time at k = 100)
            return [
                list(zip(positions.tolist(), scores.tolist()))
                for positions, scores in scorer.top_k_matching_many(tokens, k, mask=mask)
            ]

    def query_terms(self, query: str) -> list[str]:
        """The terms BM25 reads from ``query`` (stopwords, punctuation and symbols are left out):
        a query of none finds nothing."""
        return tokenize_many([query], self.params.tokenizer)[0]

    def weightless_terms(self, query: str) -> list[str]:
        """The query's terms that occur in the index but weigh nothing: BM25Okapi's idf is 0 for a
        term in exactly half of the documents (rank-bm25 floors only negative idf), so such a term
        finds nothing on its own. For the trace: a query of only such terms returns no hits."""
        scorer = self._current()
        if scorer is None:
            return []
        vocab, idf = scorer.vocab, scorer.idf
        terms = tokenize_many([query], self.params.tokenizer)[0]
        return sorted({t for t in terms if t in vocab and idf[vocab[t]] == 0.0})

    def write_files(self, directory: Path) -> None:
        scorer = self._saved_scorer()
        if scorer is not None:  # an index with no documents has no scorer files
            scorer.write_parts(Path(directory))

    def manifest_params(self) -> dict[str, Any]:
        """BM25 parameters, and the fitted scorer's statistics (its files hold only terms and numbers);
        for an index with no documents, the statistics of none (``n_docs`` 0)."""
        scorer = self._saved_scorer()
        stats = scorer.statistics() if scorer is not None else self._empty_statistics()
        return {"bm25": self.params.to_dict(), "bm25_stats": stats}

    def _saved_scorer(self) -> BM25Scorer | None:
        """The scorer of the documents in the store, fitted first if need be; ``None`` when the store
        holds none. An emptied index saves as one (manifest ``documents: 0``, no scorer files) and
        loads back as one that finds nothing until documents are added: until session 44 saving it
        raised "holds no documents: there is nothing to save" (a dense index saved), so a user who
        deleted every document could not persist that and the old build stayed on disk."""
        if self.scorer is None:
            self.refit()
        return self._current()

    def _empty_statistics(self) -> dict[str, Any]:
        return {
            "k1": self.params.k1,
            "b": self.params.b,
            "epsilon": self.params.epsilon,
            "n_docs": 0,
            "total_tokens": 0,
            "avgdl": 0.0,
            "average_idf": 0.0,
            "nnz": 0,
        }

    @classmethod
    def read(
        cls,
        directory: Path,
        params: Mapping[str, Any],
        store: DocumentStore,
        name: str,
        encoder: Any = None,
    ) -> BM25Index:
        stats = params.get("bm25_stats")  # None: a 0.1 index
        if len(store) == 0 and isinstance(stats, Mapping) and stats.get("n_docs") == 0:
            scorer = None  # saved with no documents: no scorer files (since session 44)
        else:
            scorer = BM25Scorer.read_parts(Path(directory), stats)
        return cls(BM25Params.from_dict(params.get("bm25") or {}), store, scorer, name)


__all__ = ["BM25Index", "BM25Params"]
