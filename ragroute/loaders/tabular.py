"""CSV / TSV / JSONL files with a text column: one Document per row.

Rows are read line by line so that one row of invalid UTF-8 is skipped (or
raised, per ``on_error``) with its line number; see
:mod:`ragroute.loaders.common` for the policy. A column named in the options
but absent from the file is a configuration error and always raises, and so
is a CSV/TSV header that names one column twice (a row could keep only one
of the two cells).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import (
    BadRecord,
    IdRegistry,
    LoadReport,
    SkipLog,
    check_on_error,
    optional_str,
    record_id,
)
from ragroute.loaders.jsonl import decode_line, open_binary, read_records
from ragroute.types import Document

DELIMITERS = {".csv": ",", ".tsv": "\t"}
#: the column ids come from when no ``id_column`` is named and a file has it
DEFAULT_ID_COLUMN = "id"
#: the column titles come from when no ``title_column`` is named and a file has it (before, a
#: ``title`` went into the metadata unless ``title_column`` named it)
DEFAULT_TITLE_COLUMN = "title"
TABLE_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl")
#: the loader option (``load_table_file`` argument, ``corpora.yaml`` option) naming each column role
COLUMN_OPTION_OF_ROLE = {
    "text": "text_column",
    "id": "id_column",
    "title": "title_column",
    "metadata": "metadata_columns",
}

# Long passages exceed csv's default 128 KiB field limit.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


class _DecodedLines:
    """Physical lines decoded one by one; invalid UTF-8 lines are replaced and remembered."""

    def __init__(self, raw_lines: Iterable[bytes]) -> None:
        self._raw = raw_lines
        self.bad: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        for lineno, raw in enumerate(self._raw, 1):
            try:
                yield decode_line(raw, first=lineno == 1)
            except BadRecord as exc:
                self.bad[lineno] = str(exc)
                yield raw.decode("utf-8", errors="replace")

    def first_bad(self, start: int, end: int) -> tuple[int, str] | None:
        """The first invalid line in ``start..end`` (inclusive), if any."""
        for lineno in range(start, end + 1):
            if lineno in self.bad:
                return lineno, self.bad[lineno]
        return None


#: a line read after the last line of a CSV/TSV file: a row of its own, unless a quoted field that
#: is never closed takes it in (with every line after its opening quote)
END_MARK = "\x1eragroute: end of file\x1e"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def with_end_mark(lines: Iterable[str]) -> Iterator[str]:
    """``lines``, then a line break and :data:`END_MARK` on a line of its own (for
    :func:`check_quotes_closed`: what a csv reader makes of them tells whether a quote was left open)."""
    yield from lines
    yield "\n"
    yield END_MARK + "\n"


def check_quotes_closed(
    fields: Sequence[str], path: str | Path, last_line: int, line_break: re.Pattern[str] = _LINE_BREAK
) -> None:
    """Raise :class:`CorpusFormatError` if the row ``fields`` of a file of ``last_line`` lines (ended
    at ``line_break``), read from :func:`with_end_mark`, ends in a quoted field that is never closed,
    naming the line of its opening quote. Until session 41 such a field silently took in every row
    after it as its text (Python's csv reader, not strict, ends the field at the end of the file)."""
    if not fields or END_MARK not in fields[-1]:
        return
    text = fields[-1][: fields[-1].index(END_MARK) - 1]  # without the mark's line break
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith(("\r", "\n")):
        text = text[:-1]  # the last line's own break
    opened = last_line - len(line_break.findall(text))
    after = last_line - opened
    lines = "the line" if after == 1 else f"all {after} lines"
    taken = f" (it would take in {lines} after it)" if after else ""
    raise CorpusFormatError(
        f"{path} line {opened}: a quoted field opened on this line is never closed{taken}; close it "
        'with ", and write a " inside a quoted field as ""'
    )


def quote_problem(row: Sequence[bytes], start: int, delimiter: str) -> str | None:
    """Why the row of the raw lines ``row`` (from line ``start``) is bad when a quoted field of it
    has text after its closing quote (``"Best" phone``), else ``None``: Python's csv reader, not
    strict, read such a field without its quotes (``Best phone``), silently. The line is named when
    it is not ``start`` (:func:`read_csv_rows`)."""
    if not any(b'"' in line for line in row):
        return None
    lines = [line.decode("utf-8", errors="replace") for line in row]
    if start == 1:
        lines[0] = lines[0].removeprefix("\ufeff")
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        for _ in reader:
            pass
    except csv.Error:
        return (
            f'text follows the closing " of a quoted field{_on_line(start + reader.line_num - 1, start)}; '
            'quote the whole field and write a " inside it as ""'
        )
    return None


def _on_line(line: int, start: int) -> str:
    """`` on line 9``, where a row starting on line ``start`` is bad, when that is not ``start``
    (which the messages of a bad row name already: ``c.csv line 2: ...``)."""
    return "" if line == start else f" on line {line}"


def read_csv_rows(path: str | Path, delimiter: str = ",") -> Iterator[tuple[int, list[str], str | None]]:
    """Yield ``(start_line, fields, problem)`` for each non-blank row of a CSV/TSV file.

    ``problem`` is ``None`` for a good row, else why the row is unreadable (``invalid UTF-8 ...``,
    text after a quoted field: :func:`quote_problem`), naming the line only when it is not
    ``start_line`` (``... on line 9``: a quoted field may span lines; a row is bad if any of its lines
    is). Until session 51 the line was named always, and the messages that name the row's line
    said it twice (``c.csv line 2: invalid UTF-8 (byte 0xe9 at column 6) on line 2``). Structural
    CSV errors raise :class:`CorpusFormatError` naming file and line.
    """
    with open_binary(path) as fh:
        raw = fh.read().splitlines(keepends=True)
    lines = _DecodedLines(raw)
    reader = csv.reader(with_end_mark(lines), delimiter=delimiter)
    end = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CorpusFormatError(f"{path} line {reader.line_num}: {exc}") from None
        if fields == [END_MARK]:
            return
        check_quotes_closed(fields, path, len(raw))
        start, end = end + 1, reader.line_num
        if not fields:
            continue
        bad = lines.first_bad(start, end)
        if bad is not None:
            yield start, fields, f"{bad[1]}{_on_line(bad[0], start)}"
        else:
            yield start, fields, quote_problem(raw[start - 1 : end], start, delimiter)


@dataclass(frozen=True)
class Columns:
    """Which columns of a table file hold the text, id, title and metadata of each Document."""

    text: str = "text"
    id: str | None = None
    title: str | None = None
    metadata: Sequence[str] | None = None

    def __post_init__(self) -> None:
        # a corpus definition's `metadata_columns: notalist` was read one column per letter (session 37)
        for role in ("text", "id", "title"):
            value = getattr(self, role)
            if value is not None and not isinstance(value, str):
                raise CorpusFormatError(f"{COLUMN_OPTION_OF_ROLE[role]} must be a column name, not {value!r}")
        listed = self.metadata
        if listed is not None and (isinstance(listed, str) or not all(isinstance(c, str) for c in listed)):
            raise CorpusFormatError(f"metadata_columns must be a list of column names, not {listed!r}")

    def named(self) -> list[tuple[str, str]]:
        """``(role, column)`` for every column named in the options."""
        pairs = [("text", self.text), ("id", self.id), ("title", self.title)]
        pairs += [("metadata", c) for c in self.metadata or ()]
        return [(role, col) for role, col in pairs if col is not None]

    def with_defaults_from(self, available: Sequence[str]) -> Columns:
        """These columns, reading ids from a column named ``id`` and titles from one named ``title``
        when no such column was named and the file has one (else ids are row numbers, and there
        are no titles); a column another role names is not taken."""
        columns, ids, titles = self, DEFAULT_ID_COLUMN, DEFAULT_TITLE_COLUMN
        if self.id is None and ids in available and ids not in (self.text, self.title):
            columns = replace(columns, id=ids)
        if self.title is None and titles in available and titles not in (columns.text, columns.id):
            columns = replace(columns, title=titles)
        return columns

    def resolved(
        self, available: Sequence[str], where: str, report: LoadReport | None, file: str | None = None
    ) -> Columns:
        """The columns a file with the columns ``available`` is read with (:meth:`with_defaults_from`),
        checked (:meth:`check`, errors naming ``where``) and recorded in ``report.columns`` under
        ``file`` (default: ``where``)."""
        columns = self.with_defaults_from(available)
        columns.check(available, where)
        if report is not None:
            report.columns[file or where] = {role: col for role, col in columns.named() if role != "metadata"}
        return columns

    def check(self, available: Sequence[str], source: str) -> None:
        """Raise :class:`CorpusFormatError` if a named column is absent from ``available``: one line
        naming the columns the file has and the option that names another (``text_column``, which
        ``ragroute build`` spells ``--text-column``)."""
        for role, col in self.named():
            if col not in available:
                have = ", ".join(str(a) for a in available) or "none"
                option = COLUMN_OPTION_OF_ROLE[role]
                flag = "--" + option.replace("_", "-")
                raise CorpusFormatError(
                    f"{source}: no {role} column {col!r} (available columns: {have}); name the {role} "
                    f"column with the loader option {option} ({flag} on the command line)"
                )

    def _metadata(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.metadata is not None:
            return {c: row[c] for c in self.metadata if c in row}
        used = {self.text, self.id, self.title}
        meta: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        for key, value in row.items():
            if key == "metadata" and isinstance(value, dict):
                nested = value
            elif key not in used:
                meta[key] = value
        # the metadata object wins a clash, as in a BEIR row (the key written last in the line won)
        return {**meta, **nested}

    def document(self, row: dict[str, Any], default_id: str, modality: str) -> Document:
        """Build one Document from a row; :class:`BadRecord` if its text or id is missing."""
        if row.get(self.text) is None:
            raise BadRecord(f"missing {self.text!r}")
        return Document(
            id=record_id(row, self.id) if self.id else default_id,
            text=optional_str(row, self.text),
            title=optional_str(row, self.title) if self.title else "",
            metadata=self._metadata(row),
            modality=modality,
        )


def check_unique_header(header: Sequence[str], source: str) -> None:
    """Raise :class:`CorpusFormatError` naming every column name the header holds twice or more
    (each row would otherwise keep only the last of the cells under one name, silently)."""
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(header, 1):
        positions.setdefault(name, []).append(number)
    repeated = [(name, where) for name, where in positions.items() if len(where) > 1]
    if repeated:
        listing = "; ".join(
            f"{name!r} in columns {', '.join(str(n) for n in where)}" for name, where in repeated
        )
        raise CorpusFormatError(
            f"{source}: the header names a column twice ({listing}): a row would keep only one of "
            "their cells; rename the columns so that each name is unique"
        )


def _csv_documents(
    path: Path, columns: Columns, modality: str, log: SkipLog, report: LoadReport | None, ids: IdRegistry
) -> Iterator[Document]:
    rows = read_csv_rows(path, DELIMITERS[path.suffix.lower()])
    first = next(rows, None)
    if first is None:
        raise CorpusFormatError(f"{path}: empty file, expected a header row")
    header_line, header, problem = first
    if problem is not None:
        raise CorpusFormatError(f"{path} line {header_line} (the header): {problem}")
    check_unique_header(header, str(path))
    columns = columns.resolved(header, str(path), report)
    for row_number, (lineno, fields, problem) in enumerate(rows, 1):
        try:
            if problem is not None:
                raise BadRecord(problem)
            if len(fields) != len(header):
                raise BadRecord(f"expected {len(header)} fields, got {len(fields)}")
            doc = columns.document(dict(zip(header, fields)), f"{path.stem}-{row_number}", modality)
        except BadRecord as exc:
            log.bad(lineno, str(exc))
            continue
        ids.add(doc.id, f"{path.name} line {lineno}")
        yield doc


def _jsonl_documents(
    path: Path, columns: Columns, modality: str, on_error: str, report: LoadReport | None, ids: IdRegistry
) -> Iterator[Document]:
    checked = False

    def convert(row: dict[str, Any], lineno: int) -> Document:
        nonlocal checked, columns
        if not checked:  # the first good record names the columns
            columns = columns.resolved(list(row), f"{path} line {lineno}", report, str(path))
            checked = True
        return columns.document(row, f"{path.stem}-{lineno}", modality)

    for lineno, doc in read_records(path, convert, on_error=on_error, report=report):
        ids.add(doc.id, f"{path.name} line {lineno}")
        yield doc


def load_table_file(
    path: str | Path,
    text_column: str = "text",
    id_column: str | None = None,
    title_column: str | None = None,
    metadata_columns: Sequence[str] | None = None,
    *,
    modality: str = "text",
    on_error: str = "skip",
    report: LoadReport | None = None,
) -> list[Document]:
    """Load a ``.csv``, ``.tsv`` or ``.jsonl`` file with one Document per row.

    The id comes from ``id_column``, else from a column named ``id`` when the file has one
    (the CSV header, or the first JSONL record), else is ``f"{stem}-{row_number}"``; the title
    from ``title_column``, else from a column named ``title`` when the file has one, else is
    empty. Row ids: for
    CSV/TSV the 1-based data row number (header excluded, bad rows counted,
    so one skipped row does not shift later ids), for JSONL the 1-based line
    number. ``metadata_columns=None`` puts every other column in the metadata
    (a JSONL ``metadata`` object is merged in, its keys winning a clash); ``[]`` keeps none.

    A named column missing from the CSV header (or from the first JSONL
    record) raises :class:`CorpusFormatError` listing the available columns, and
    so does a CSV/TSV header naming one column twice.
    Unreadable rows, rows without text and rows with the wrong field count
    follow ``on_error`` (default: skip + one CorpusWarning per file); a
    duplicate id always raises.
    """
    check_on_error(on_error)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in TABLE_FILE_SUFFIXES:
        expected = ", ".join(TABLE_FILE_SUFFIXES)
        raise CorpusFormatError(f"{p}: unsupported table file type {suffix!r} (expected {expected})")
    columns = Columns(text_column, id_column, title_column, metadata_columns)
    ids = IdRegistry("document")
    if suffix == ".jsonl":
        return list(_jsonl_documents(p, columns, modality, on_error, report, ids))
    log = SkipLog(str(p), "line", on_error, report)
    docs = list(_csv_documents(p, columns, modality, log, report, ids))
    log.finish()
    return docs
