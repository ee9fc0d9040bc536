"""Knowledge-graph building: phrase and passage nodes, fact, passage-phrase and synonym edges.

Node ids: phrases first (``0 .. P-1``), then passages (``P .. P+N-1``, in the
order of the passage store). Edges (undirected, stored in both directions):

* fact edges between two phrases that co-occur in a sentence (weight = number of
  sentences in which they do);
* passage-phrase edges (weight 1) between a passage and every phrase it contains;
* synonym edges between phrases whose embeddings have cosine >= ``synonym_threshold``
  (weight = the cosine), found by a faiss kNN of every phrase over the phrase index.
  A pair ``(i, j)``, ``i < j``, is kept when ``j`` is among the ``synonym_k``
  nearest phrases of ``i``.

Facts are kept as a table of unique phrase pairs with the passages they come from,
for seeding walks. :func:`build_graph` works on any documents the loaders give.

:func:`extend_graph` adds passages to built tables without touching what is there:
old phrases keep their ids (new ones are appended), only the new phrases are
encoded and searched for synonyms (old synonym links are never recomputed; a pair
of an old phrase ``o`` and a new phrase ``n`` is kept when ``o`` is among the
``synonym_k`` nearest phrases of ``n``), and the adjacency is renumbered (adding
phrases shifts every passage node). :func:`build_graph` is :func:`extend_graph`
from empty tables, so both follow one code path; a graph grown by adding
passages equals the graph built over all of them in the same order except for
the old-new synonym pairs, which a full build finds from the old phrase's side.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ragroute.errors import RagrouteError
from ragroute.graph.extract import Extraction, ExtractionWarning, RuleExtractor, normalise
from ragroute.types import Document


def check_params(params: Any, limits: dict[str, tuple[str, float | None, float | None]]) -> None:
    """Each field of the ``params`` dataclass of the type and within the [least, most] bounds of
    ``limits`` (``field: (type, least, most)``), else one line naming the class and field."""
    from ragroute.errors import InvalidArgumentError, RagrouteError, check_setting

    for name, (expected, least, most) in limits.items():
        try:
            check_setting(
                getattr(params, name), expected, type(params).__name__, name, minimum=least, maximum=most
            )
        except RagrouteError as exc:
            raise InvalidArgumentError(str(exc)) from None


@dataclass
class GraphParams:
    """How the graph is built."""

    synonym_threshold: float = 0.8
    synonym_k: int = 10
    encode_batch: int = 256

    def __post_init__(self) -> None:  # until session 36 a negative synonym_k failed an assert at build
        check_params(
            self,
            {
                "synonym_threshold": ("number", 0, 1),
                "synonym_k": ("integer", 0, None),
                "encode_batch": ("integer", 1, None),
            },
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphParams:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GraphTables:
    """The graph's arrays (what :class:`~ragroute.graph.index.GraphIndex` writes and reads)."""

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

    @property
    def n_passages(self) -> int:
        """Passage nodes (the adjacency's nodes after the phrases)."""
        return int(self.adjacency.shape[0]) - self.n_phrases

    @classmethod
    def empty(cls, dim: int) -> GraphTables:
        """The tables of a graph without passages, for embeddings of dimension ``dim``."""
        return cls(
            phrases=[],
            phrase_vectors=np.zeros((0, dim), dtype=np.float32),
            phrase_passages=np.zeros(0, dtype=np.float32),
            fact_subject=np.zeros(0, dtype=np.int64),
            fact_object=np.zeros(0, dtype=np.int64),
            fact_passages=sp.csr_array((0, 0), dtype=np.float32),
            adjacency=sp.csr_array((0, 0), dtype=np.float32),
            synonym_edges=0,
        )


def build_graph(
    documents: Sequence[Document],
    encoder: Any,
    *,
    extractor: Any = None,
    params: GraphParams | None = None,
    show_progress: bool | None = None,
) -> GraphTables:
    """Extract phrases and facts from ``documents`` and build the graph's tables."""
    extractions = extract_passages(documents, extractor or RuleExtractor(), show_progress)
    return extend_graph(
        GraphTables.empty(encoder.dim), extractions, encoder, params=params, show_progress=show_progress
    )


def extract_passages(
    documents: Sequence[Document], extractor: Any, show_progress: bool | None = None, *, batch: int = 64
) -> list[Extraction]:
    """``extractor.extract`` of every document, in order (with a progress bar on a terminal).

    An extractor with ``extract_many`` gets the documents in batches of ``batch`` (spaCy
    pipes them). When the extractor records failures (a ``failures`` list, as the LLM
    extractor does), an :class:`~ragroute.graph.extract.ExtractionWarning` says how many
    of these passages failed.
    """
    documents = list(documents)
    failures = getattr(extractor, "failures", None)
    failed_before = len(failures) if isinstance(failures, list) else 0
    many = getattr(extractor, "extract_many", None)
    out: list[Extraction] = []
    with tqdm(
        total=len(documents), desc="extracting", unit="passage", disable=not _progress(show_progress)
    ) as bar:
        for start in range(0, len(documents), batch if callable(many) else 1):
            chunk = documents[start : start + (batch if callable(many) else 1)]
            out.extend(many(chunk) if callable(many) else [extractor.extract(d) for d in chunk])
            bar.update(len(chunk))
    if isinstance(failures, list) and len(failures) > failed_before:
        warnings.warn(
            f"graph extractor {getattr(extractor, 'name', extractor)!r}: {len(failures) - failed_before} of "
            f"{len(documents)} passages could not be extracted and keep title-only phrases "
            "(see the extractor's failures)",
            ExtractionWarning,
            stacklevel=2,
        )
    _warn_if_mostly_unlinked(documents, out, extractor)
    return out


def _warn_if_mostly_unlinked(
    documents: Sequence[Document], extractions: Sequence[Extraction], extractor: Any
) -> None:
    """An :class:`ExtractionWarning` when more than half of the passages with letters in their text
    gave no phrase but their title: the graph links them by nothing they say, and queries about
    them fall back to dense search (a corpus in a script without capitals, read by the rule
    extractor, built such a graph without a word until session 41)."""
    with_text = [(d, e) for d, e in zip(documents, extractions) if any(c.isalpha() for c in d.text)]
    unlinked = sum(1 for d, e in with_text if not set(e.phrases) - {normalise(d.title or "")})
    if with_text and unlinked * 2 > len(with_text):
        hint = (
            ": it reads capitalised names, numbers and quoted titles, so text in a script without "
            "capitals (Chinese, Japanese, Arabic, Hebrew, ...) or in lower case gives none; an LLM "
            "extractor (--extractor llm) reads any language"
            if getattr(extractor, "name", None) == "rules"
            else ""
        )
        warnings.warn(
            f"graph extractor {getattr(extractor, 'name', extractor)!r}: {unlinked} of {len(with_text)} "
            f"passages gave no phrase (but their title) to link them by{hint}",
            ExtractionWarning,
            stacklevel=3,
        )


def extend_graph(
    tables: GraphTables,
    extractions: Sequence[Extraction],
    encoder: Any,
    *,
    params: GraphParams | None = None,
    show_progress: bool | None = None,
) -> GraphTables:
    """New tables: ``tables`` plus the passages of ``extractions``, appended in order.

    ``tables`` is left unchanged. Old phrases, facts and synonym links keep their ids
    and weights; new phrases are appended to the phrase table, encoded (only they) and
    searched against all phrase vectors for synonyms (only they, see the module
    docstring); new facts are appended to the fact table; passage nodes move to after
    the new phrases.
    """
    params = params or GraphParams()
    old_phrases, old_passages = tables.n_phrases, tables.n_passages
    phrase_id = {phrase: i for i, phrase in enumerate(tables.phrases)}
    for extraction in extractions:
        for phrase in extraction.phrases:
            phrase_id.setdefault(phrase, len(phrase_id))
    for extraction in extractions:  # an extractor's contract: facts join phrases it returned
        # its own phrases: until session 55 any passage's of the batch (or the graph's) passed, and
        # the fact's edge was made without the passage's link to the phrase
        own = set(extraction.phrases)
        for fact in extraction.facts:
            for phrase in (fact.subject, fact.object):
                if phrase not in own:  # a bare KeyError until session 43
                    raise RagrouteError(
                        f"passage {extraction.passage!r}: the extractor's fact ({fact.subject!r}, "
                        f"{fact.object!r}) names {phrase!r}, which is not among its phrases"
                    )
    phrases = list(phrase_id)
    n_phrases, n_passages = len(phrases), old_passages + len(extractions)
    # passage-phrase links of the new passages (columns: new passage positions)
    rows, cols = [], []
    for position, extraction in enumerate(extractions):
        for phrase in extraction.phrases:
            rows.append(phrase_id[phrase])
            cols.append(position)
    contains = sp.csr_array(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_phrases, len(extractions))
    )
    contains.data[:] = 1.0
    phrase_passages = np.zeros(n_phrases, dtype=np.float32)
    phrase_passages[:old_phrases] = tables.phrase_passages
    phrase_passages += np.asarray(contains.sum(axis=1)).reshape(-1).astype(np.float32)
    # facts: unique phrase pairs (old ones keep their ids), passages, and new sentence counts
    old_pairs = zip(tables.fact_subject.tolist(), tables.fact_object.tolist())
    fact_id: dict[tuple[int, int], int] = dict(zip(old_pairs, range(len(tables.fact_subject))))
    old_facts = len(fact_id)
    fact_rows: list[int] = []
    fact_cols: list[int] = []
    pair_counts: dict[tuple[int, int], int] = {}
    for position, extraction in enumerate(extractions):
        # a pair counts once per sentence of the passage stating it (the weight is how many
        # sentences do): until session 44 an extractor listing it twice in one sentence counted 2
        counted_here: set[tuple[int, int, int]] = set()
        for fact in extraction.facts:
            a, b = phrase_id[fact.subject], phrase_id[fact.object]
            key = (min(a, b), max(a, b))
            # a fact naming one phrase twice links nothing (as a triple "X is X" adds no fact): until
            # session 50 it was a self-loop of the walk that no export, edge type or stat showed
            if a == b or (*key, fact.sentence) in counted_here:
                continue
            counted_here.add((*key, fact.sentence))
            fid = fact_id.setdefault(key, len(fact_id))
            fact_rows.append(fid)
            fact_cols.append(old_passages + position)
            pair_counts[key] = pair_counts.get(key, 0) + 1
    new_pairs = np.array(list(fact_id)[old_facts:], dtype=np.int64).reshape(-1, 2)
    old_links = tables.fact_passages.tocoo()
    fact_passages = sp.csr_array(
        (
            np.ones(old_links.nnz + len(fact_rows), dtype=np.float32),
            (
                np.concatenate([old_links.row, np.asarray(fact_rows, dtype=np.int64)]),
                np.concatenate([old_links.col, np.asarray(fact_cols, dtype=np.int64)]),
            ),
        ),
        shape=(len(fact_id), n_passages),
    )
    fact_passages.data[:] = 1.0
    counted = np.array(list(pair_counts), dtype=np.int64).reshape(-1, 2)
    counts = np.fromiter(pair_counts.values(), dtype=np.float32, count=len(pair_counts))
    # only the new phrases are encoded and searched for synonyms
    new_vectors = _encode_phrases(phrases[old_phrases:], encoder, params, show_progress)
    vectors = np.ascontiguousarray(np.vstack([tables.phrase_vectors, new_vectors]), dtype=np.float32)
    synonyms = _synonym_pairs(vectors, params, start=old_phrases)
    adjacency = _extend_adjacency(
        tables.adjacency, old_phrases, n_phrases, n_passages, contains, counted, counts, synonyms
    )
    return GraphTables(
        phrases=phrases,
        phrase_vectors=vectors,
        phrase_passages=phrase_passages,
        fact_subject=np.concatenate([tables.fact_subject.astype(np.int64), new_pairs[:, 0]]),
        fact_object=np.concatenate([tables.fact_object.astype(np.int64), new_pairs[:, 1]]),
        fact_passages=fact_passages,
        adjacency=adjacency,
        synonym_edges=tables.synonym_edges + len(synonyms),
    )


def _progress(show: bool | None) -> bool:
    from ragroute.progress import progress_enabled

    return progress_enabled(show)


def _encode_phrases(phrases: list[str], encoder: Any, params: GraphParams, show: bool | None) -> np.ndarray:
    if not phrases:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    chunks = []
    starts = range(0, len(phrases), params.encode_batch)
    for start in tqdm(starts, desc="encoding phrases", unit="batch", disable=not _progress(show)):
        batch = phrases[start : start + params.encode_batch]
        chunks.append(np.asarray(encoder.encode_queries(batch, show_progress=False), dtype=np.float32))
    return np.ascontiguousarray(np.vstack(chunks))


def nearest_phrases(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of the ``k`` phrases of ``vectors`` nearest each row of ``queries`` (exact IP)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index.search(queries, k)


def _synonym_pairs(
    vectors: np.ndarray, params: GraphParams, *, start: int = 0
) -> list[tuple[int, int, float]]:
    """Synonym pairs ``(i, j, cosine)``, ``i < j``, that involve a phrase ``start ..`` (a new one).

    Only the new phrases are searched: from new phrase ``i``'s ``synonym_k`` nearest
    phrases, a pair is kept with every old phrase, and with every new phrase ``j > i``
    (a pair of new phrases is taken from its smaller id's side, as a full build does).
    """
    if len(vectors) < 2 or start >= len(vectors) or params.synonym_k <= 0:
        return []
    k = min(params.synonym_k + 1, len(vectors))
    scores, ids = nearest_phrases(vectors, vectors[start:], k)
    out = []
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        i = start + row
        # the synonym_k nearest other phrases: a phrase is its own nearest, but one whose vector
        # equals another's (a tie) may come after it, so it is left out by id, not as the first hit
        # (until session 50 a tie could push the phrase itself out of the synonym_k + 1 hits:
        # synonym_k 0 then linked tied phrases, and others kept synonym_k + 1 neighbours)
        others = [(score, int(j)) for score, j in zip(row_scores, row_ids) if j >= 0 and j != i]
        for score, j in others[: params.synonym_k]:
            if (j > i or j < start) and score >= params.synonym_threshold:
                out.append((min(i, j), max(i, j), float(score)))
    return out


def _extend_adjacency(
    adjacency: sp.csr_array,
    old_phrases: int,
    n_phrases: int,
    n_passages: int,
    contains: sp.csr_array,
    pairs: np.ndarray,
    pair_counts: np.ndarray,
    synonyms: list[tuple[int, int, float]],
) -> sp.csr_array:
    """The old adjacency renumbered (passage nodes move past the new phrases) plus the new edges.

    ``contains`` links phrases to the new passages (the last ``contains.shape[1]``);
    ``pairs``/``pair_counts`` add fact weights; ``synonyms`` add synonym edges.
    """
    n = n_phrases + n_passages
    old = adjacency.tocoo()
    shift = n_phrases - old_phrases  # old passage nodes move by the number of new phrases
    first_new = n_phrases + n_passages - contains.shape[1]
    links = contains.tocoo()
    rows = [old.row + np.where(old.row >= old_phrases, shift, 0), links.row, links.col + first_new]
    cols = [old.col + np.where(old.col >= old_phrases, shift, 0), links.col + first_new, links.row]
    data = [np.asarray(old.data, dtype=np.float32), np.ones(links.nnz, dtype=np.float32)]
    data.append(data[-1])
    if len(pairs):
        rows += [pairs[:, 0], pairs[:, 1]]
        cols += [pairs[:, 1], pairs[:, 0]]
        data += [pair_counts, pair_counts]
    if synonyms:
        syn = np.array(synonyms, dtype=np.float64)
        a, b, w = syn[:, 0].astype(np.int64), syn[:, 1].astype(np.int64), syn[:, 2].astype(np.float32)
        rows += [a, b]
        cols += [b, a]
        data += [w, w]
    matrix = sp.coo_array(
        (
            np.concatenate(data),
            (
                np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]),
                np.concatenate([np.asarray(c, dtype=np.int64) for c in cols]),
            ),
        ),
        shape=(n, n),
    ).tocsr()
    matrix.sum_duplicates()
    return sp.csr_array(matrix, dtype=np.float32)
