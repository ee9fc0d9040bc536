"""BEIR-format datasets: ``corpus*.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

A BEIR folder holds one or several corpus files (``corpus.jsonl``, or e.g.
``corpus_tables.jsonl`` + ``corpus_paragraphs.jsonl``), all loaded into one
corpus; documents from a file whose name contains ``table`` get modality
``"table"``. Corpus and query lines follow the bad-record policy of
:mod:`ragroute.loaders.common` (default: skip + one warning per file); qrels
lines are labels, so a malformed one always raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, InvalidQueryError, check_query, has_visible_text
from ragroute.loaders.common import (
    BadRecord,
    CorpusWarning,
    IdRegistry,
    LoadReport,
    Skipped,
    check_on_error,
    name_a_few,
    optional_str,
    record_id,
)
from ragroute.loaders.jsonl import decode_line, open_binary, read_records
from ragroute.types import Document, Query

Qrels = dict[str, dict[str, int]]


@dataclass
class BeirDataset:
    """A loaded BEIR folder: the whole corpus, the queries judged in ``split`` and their qrels."""

    corpus: list[Document]
    queries: list[Query]
    qrels: Qrels
    name: str = ""
    split: str | None = "dev"
    report: LoadReport = field(default_factory=LoadReport)

    def __repr__(self) -> str:
        n_qrels = sum(len(v) for v in self.qrels.values())
        return (
            f"BeirDataset(name={self.name!r}, split={self.split!r}, docs={len(self.corpus)}, "
            f"queries={len(self.queries)}, qrels={n_qrels}, skipped={self.report.n_skipped})"
        )


def corpus_files(folder: str | Path) -> list[Path]:
    """The ``corpus*.jsonl`` files of a BEIR folder, sorted by name (empty if none)."""
    return sorted(p for p in Path(folder).glob("corpus*.jsonl") if p.is_file())


def collection_folders(root: str | Path) -> list[Path]:
    """The folders under ``root`` in name order, hidden ones (starting with ``.`` or ``_``) left out:
    the candidate BEIR collections of a folder of collections (benchmark roots, ``rerank train``)."""
    return [p for p in sorted(Path(root).iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))]


def modality_for(path: str | Path) -> str:
    """``"table"`` for a corpus file whose name contains "table", else ``"text"``."""
    return "table" if "table" in Path(path).name.lower() else "text"


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    value = row.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRecord(f"'metadata' must be an object, got {type(value).__name__}")
    return dict(value)


def _required_text(row: dict[str, Any]) -> str:
    if "text" not in row:
        raise BadRecord("missing 'text'")
    return optional_str(row, "text")


_DOCUMENT_FIELDS = frozenset({"_id", "title", "text", "metadata"})


def beir_document(row: dict[str, Any], modality: str = "text") -> Document:
    """Convert one corpus row ``{"_id", "title", "text", "metadata"}``; :class:`BadRecord` if malformed.

    Other top-level fields (``{"_id": "d1", "text": "...", "year": 2019}``) are kept as metadata
    beside the ``metadata`` object's keys (which win on a clash), so they can still be filtered on.
    """
    extra = {key: value for key, value in row.items() if key not in _DOCUMENT_FIELDS}
    return Document(
        id=record_id(row, "_id"),
        text=_required_text(row),
        title=optional_str(row, "title"),
        metadata={**extra, **_metadata(row)},
        modality=modality,
    )


def _load_corpus_file(
    path: Path, modality: str | None, on_error: str, report: LoadReport | None, ids: IdRegistry
) -> tuple[list[Document], list[str]]:
    """The documents of one corpus file, and the ids of its rows left out as empty (see
    :func:`load_beir_corpus`)."""
    kind = modality or modality_for(path)
    docs, empty = [], []
    for lineno, doc in read_records(
        path, lambda row, _n: beir_document(row, kind), on_error=on_error, report=report
    ):
        ids.add(doc.id, f"{path.name} line {lineno}")
        if has_visible_text(doc.text) or has_visible_text(doc.title):
            docs.append(doc)
            continue
        empty.append(doc.id)
        if report is not None:
            report.ignored.append(Skipped(str(path), f"line {lineno}", "empty"))
    if empty:
        warnings.warn(
            f"skipped {len(empty)} document{'s' if len(empty) > 1 else ''} with neither text nor title "
            f"in {path} (nothing to index: {name_a_few([repr(i) for i in empty])})",
            CorpusWarning,
            stacklevel=4,
        )
    return docs, empty


def _load_corpus(
    path: str | Path, modality: str | None, on_error: str, report: LoadReport | None
) -> tuple[list[Document], set[str]]:
    check_on_error(on_error)
    p = Path(path)
    files = corpus_files(p) if p.is_dir() else [p]
    if not files:
        raise CorpusFormatError(f"{p}: no corpus*.jsonl file in this folder")
    ids = IdRegistry("document")
    docs: list[Document] = []
    empty: set[str] = set()
    for file in files:
        found, left_out = _load_corpus_file(file, modality, on_error, report, ids)
        docs.extend(found)
        empty.update(left_out)
    return docs, empty


def load_beir_corpus(
    path: str | Path,
    *,
    on_error: str = "skip",
    modality: str | None = None,
    report: LoadReport | None = None,
) -> list[Document]:
    """Load a BEIR corpus: one ``corpus*.jsonl`` file, or every ``corpus*.jsonl`` of a folder.

    Rows ``{"_id", "title", "text", "metadata"}`` become ``Document(id=_id, ...)`` (other fields of
    a row join its metadata);
    ``modality`` defaults to ``"table"`` for files whose name contains "table",
    else ``"text"``. Bad lines follow ``on_error`` (default: skip + one
    :class:`CorpusWarning` per file); a duplicate ``_id`` (within or across
    files) always raises :class:`CorpusFormatError`. Rows whose text and title hold no visible
    character (two of Cranfield's 1,400) are not bad but hold nothing to index (an index refuses
    them): they are left out whatever ``on_error`` says, in ``report.ignored`` (``"empty"``) and
    one :class:`CorpusWarning` per file naming them; qrels judging them still load.
    """
    return _load_corpus(path, modality, on_error, report)[0]


def beir_query(row: dict[str, Any]) -> Query:
    """Convert one query row ``{"_id", "text", "metadata"}``; :class:`BadRecord` if malformed, or if
    its text is no query (:func:`~ragroute.errors.check_query`: empty, invisible, too long). Until
    session 55 such a query loaded, and ``ragroute eval`` stopped at it with "query is empty or
    whitespace only", naming neither file nor line, whatever ``--strict`` said."""
    query_id, text = record_id(row, "_id"), _required_text(row)
    try:
        check_query(text, "'text'")
    except InvalidQueryError as exc:
        raise BadRecord(str(exc)) from None
    return Query(id=query_id, text=text, metadata=_metadata(row))


def load_beir_queries(
    path: str | Path, *, on_error: str = "skip", report: LoadReport | None = None
) -> list[Query]:
    """Load ``queries.jsonl`` (all splits, in file order); a duplicate ``_id`` raises CorpusFormatError."""
    check_on_error(on_error)
    ids = IdRegistry("query")
    queries = []
    rows = read_records(path, lambda row, _n: beir_query(row), on_error=on_error, report=report)
    for lineno, query in rows:
        ids.add(query.id, f"{Path(path).name} line {lineno}")
        queries.append(query)
    return queries


def _parse_score(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = float(text)  # may raise ValueError again: the caller reports it
        if not value.is_integer():
            raise
        return int(value)


def _split_fields(line: str) -> list[str]:
    return line.split("\t") if "\t" in line else line.split()


_HEADER_WORDS = {"query-id", "query_id", "qid", "query", "corpus-id", "corpus_id", "score", "relevance"}


def _is_header(fields: list[str]) -> bool:
    """A header names its columns (``query-id corpus-id score``) instead of holding a numeric score."""
    names = {f.strip().lower() for f in fields}
    if not names & _HEADER_WORDS:
        return False
    try:  # a score the data lines may hold (1.0, +1): until session 44 only digits were one, so a
        _parse_score(fields[-1].strip())  # first judgement of query "query" scored 1.0 was dropped
    except ValueError:
        return True
    return False


def parse_qrels_line(line: str) -> tuple[str, str, int]:
    """Parse ``query-id<TAB>corpus-id<TAB>score`` (or TREC ``qid 0 docid score``); ``ValueError`` if bad."""
    fields = [f.strip() for f in _split_fields(line.rstrip("\r\n"))]
    if len(fields) == 4:
        fields = [fields[0], fields[2], fields[3]]
    if len(fields) != 3:
        raise ValueError(f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}")
    qid, doc_id, score = fields
    if not qid or not doc_id:
        raise ValueError("empty query-id or corpus-id")
    try:
        return qid, doc_id, _parse_score(score)
    except ValueError:
        raise ValueError(f"score must be an integer, got {score!r}") from None


def _qrels_lines(tsv_path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for the non-blank lines; invalid UTF-8 raises."""
    with open_binary(tsv_path) as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = decode_line(raw, first=lineno == 1)
            except BadRecord as exc:
                raise CorpusFormatError(f"{tsv_path} line {lineno}: {exc}") from None
            if line.strip():
                yield lineno, line


def load_qrels(tsv_path: str | Path, *, on_error: str = "skip") -> Qrels:
    """Load a qrels TSV into ``{query_id: {doc_id: score}}`` with integer scores.

    The header line (``query-id corpus-id score``) is recognised as a first
    line whose last field is not a number, and skipped; blank lines are
    ignored. Any malformed line raises :class:`CorpusFormatError` naming file
    and line: qrels are labels, and silently dropping one would bias every
    metric. A (query, document) pair judged on several lines keeps its last
    score with one :class:`CorpusWarning` counting such pairs and naming a few
    (``on_error="skip"``), or is a :class:`CorpusFormatError` (``"raise"``).
    """
    check_on_error(on_error)
    qrels: Qrels = {}
    repeated: dict[tuple[str, str], list[int]] = {}  # a pair judged twice -> its scores, in file order
    for index, (lineno, line) in enumerate(_qrels_lines(tsv_path)):
        if index == 0 and _is_header(_split_fields(line)):
            continue
        try:
            qid, doc_id, score = parse_qrels_line(line)
        except ValueError as exc:
            raise CorpusFormatError(f"{tsv_path} line {lineno}: {exc}") from None
        judged = qrels.setdefault(qid, {})
        if doc_id in judged:
            repeated.setdefault((qid, doc_id), [judged[doc_id]]).append(score)
        judged[doc_id] = score
    if repeated:
        pairs = [f"{q} {d}: {' then '.join(map(str, scores))}" for (q, d), scores in repeated.items()]
        message = (
            f"{tsv_path}: {counted(len(pairs), '(query-id, corpus-id) pair')} judged "
            f"on more than one line ({name_a_few(pairs)})"
        )
        if on_error == "raise":
            raise CorpusFormatError(f"{message}: judge each pair once")
        warnings.warn(f"{message}: the last line's score is kept", CorpusWarning, stacklevel=2)
    return qrels


def _folder(folder: str | Path) -> Path:
    p = Path(folder)
    if not p.exists():
        raise CorpusFormatError(f"{p}: no such folder")
    if not p.is_dir():
        raise CorpusFormatError(f"{p}: not a folder (a BEIR dataset is a folder with corpus*.jsonl)")
    return p


def available_splits(folder: str | Path) -> list[str]:
    """The splits a BEIR or SKILLS folder judges: the stems of its ``qrels/*.tsv``, sorted."""
    return sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv") if p.is_file())


def _qrels_path(folder: Path, split: str) -> Path:
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        known = ", ".join(available_splits(folder)) or "none"
        raise CorpusFormatError(f"{folder}: no qrels/{split}.tsv (available splits: {known})")
    return path


def check_judged(
    qrels: Qrels, query_ids: set[str], doc_ids: set[str], source: str, *, on_error: str = "skip"
) -> None:
    """Qrels naming a query or document that was not loaded: one :class:`CorpusWarning` (``skip``)
    or a :class:`CorpusFormatError` (``raise``) with the count and the first such id of each kind
    (``doc_ids`` names the corpus or skill catalogue the ``corpus-id`` column refers to)."""
    lost_q = sorted(q for q in qrels if q not in query_ids)
    lost_d = sorted({d for rels in qrels.values() for d in rels if d not in doc_ids})
    parts = []
    if lost_q:
        parts.append(f"{counted(len(lost_q), 'judged query id')} not in queries.jsonl (e.g. {lost_q[0]!r})")
    if lost_d:
        parts.append(f"{counted(len(lost_d), 'judged doc id')} not in the corpus (e.g. {lost_d[0]!r})")
    if not parts:
        return
    if check_on_error(on_error) == "raise":
        raise CorpusFormatError(f"{source}: {'; '.join(parts)}")
    warnings.warn(f"{source}: {'; '.join(parts)}", CorpusWarning, stacklevel=3)


def load_judged_queries(
    folder: str | Path, split: str, *, on_error: str = "skip", report: LoadReport | None = None
) -> tuple[list[Query], Qrels]:
    """``qrels/<split>.tsv`` of a BEIR or SKILLS folder and the queries of ``queries.jsonl`` it judges,
    in file order (the file may hold several splits). A missing split names the available ones;
    with ``on_error="raise"`` an empty qrels file raises too, and a pair judged twice
    (:func:`load_qrels`). Judged ids are not checked here: see
    :func:`check_judged`."""
    root = Path(folder)
    path = _qrels_path(root, split)
    qrels = load_qrels(path, on_error=on_error)
    if not qrels and check_on_error(on_error) == "raise":
        raise CorpusFormatError(f"{path}: no judged pairs (split {split!r} is empty)")
    queries = load_beir_queries(root / "queries.jsonl", on_error=on_error, report=report)
    return [q for q in queries if q.id in qrels], qrels


def load_beir(
    folder: str | Path,
    split: str | None = "dev",
    *,
    on_error: str = "skip",
    report: LoadReport | None = None,
) -> BeirDataset:
    """Load a BEIR folder: every ``corpus*.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

    ``queries`` keeps only the queries judged in ``split`` (``queries.jsonl``
    may hold several splits), in file order. ``split=None`` loads no qrels and
    every query (none if ``queries.jsonl`` is absent: a corpus-only folder).
    Corpus and query lines follow ``on_error`` (default: skip + one
    :class:`CorpusWarning` per file; the counts are in ``dataset.report``);
    qrels naming unknown queries or documents give one :class:`CorpusWarning`
    and are kept as they are, and so do pairs judged twice (the last score
    kept). ``on_error="raise"`` (what the benchmarks use: a skipped line would
    change what is scored) refuses all of these, and an empty split, with one
    :class:`CorpusFormatError` line.
    """
    check_on_error(on_error)
    root = _folder(folder)
    report = report if report is not None else LoadReport()
    corpus, empty = _load_corpus(root, None, on_error, report)
    if split is None:
        queries_path = root / "queries.jsonl"
        queries = []
        if queries_path.exists():
            queries = load_beir_queries(queries_path, on_error=on_error, report=report)
        return BeirDataset(corpus, queries, {}, name=root.resolve().name, split=split, report=report)
    queries, qrels = load_judged_queries(root, split, on_error=on_error, report=report)
    check_judged(
        qrels,
        {q.id for q in queries},
        {d.id for d in corpus} | empty,  # a judged empty document: in the corpus, never retrievable
        f"{root / 'qrels' / f'{split}.tsv'}",
        on_error=on_error,
    )
    return BeirDataset(corpus, queries, qrels, name=root.resolve().name, split=split, report=report)
