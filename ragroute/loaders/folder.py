"""Folders of plain files: one Document per ``.txt`` / ``.md`` file, one table Document per ``.csv``.

Files are found recursively and sorted by relative path, so ids and order are
deterministic; hidden files and folders (name starting with ".") and other
file types are ignored. An empty file (only whitespace, or a CSV without a
line) is left out with one :class:`~ragroute.loaders.common.CorpusWarning`
per folder naming a few (``skipped 1 empty file in docs (todo.txt)``). A
file that cannot be read follows the bad-record policy of
:mod:`ragroute.loaders.common` (default: skip + one warning per folder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import (
    BadRecord,
    IdRegistry,
    LoadReport,
    SkipLog,
    check_on_error,
    decode_utf8_file,
)
from ragroute.loaders.jsonl import open_binary
from ragroute.loaders.tabular import DELIMITERS, read_csv_rows
from ragroute.types import Document

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
MARKDOWN_SUFFIXES = (".md", ".markdown")
TABLE_SUFFIXES = (".csv", ".tsv")

_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def first_heading(text: str) -> str | None:
    """The text of the first markdown ATX heading (``# Title``), or ``None``."""
    match = _HEADING.search(text)
    return match.group(1).strip() if match else None


def read_text(path: Path) -> str:
    """Decode a whole UTF-8 file (BOM dropped); :class:`BadRecord` naming the line if invalid."""
    with open_binary(path) as fh:
        return decode_utf8_file(fh.read())


def linearise_table(columns: list[str], rows: list[list[str]]) -> str:
    """Header line then one line per row, cells joined by ``" | "``."""
    return "\n".join(" | ".join(cells) for cells in [columns, *rows])


def _doc_id(rel: Path) -> str:
    return rel.with_suffix("").as_posix()


def text_document(path: Path, rel: Path) -> Document | None:
    """One Document for a text/markdown file (``None`` if empty); title = first heading or stem."""
    text = read_text(path)
    if not text.strip():
        return None
    is_markdown = path.suffix.lower() in MARKDOWN_SUFFIXES
    title = (first_heading(text) if is_markdown else None) or path.stem
    return Document(id=_doc_id(rel), text=text, title=title, metadata={"path": rel.as_posix()})


def table_document(path: Path, rel: Path) -> Document | None:
    """One table Document for a CSV/TSV file (``None`` if empty), its cells kept in metadata."""
    rows: list[list[str]] = []
    for _line, fields, problem in read_csv_rows(path, DELIMITERS[path.suffix.lower()]):
        if problem is not None:
            raise BadRecord(problem)
        rows.append(fields)
    if not rows:
        return None
    columns, body = rows[0], rows[1:]
    metadata: dict[str, Any] = {"columns": columns, "rows": body, "path": rel.as_posix()}
    text = linearise_table(columns, body)
    return Document(id=_doc_id(rel), text=text, title=path.stem, metadata=metadata, modality="table")


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def corpus_files(folder: Path) -> list[Path]:
    """Text and table files under ``folder`` (recursive, hidden ones excluded), sorted by relative path."""
    suffixes = TEXT_SUFFIXES + TABLE_SUFFIXES
    found = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in suffixes and p.is_file() and not _is_hidden(p.relative_to(folder))
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def file_document(path: Path, rel: Path) -> Document | None:
    """The Document of one file of a folder corpus, by suffix (``None`` for an empty file)."""
    if path.suffix.lower() in TABLE_SUFFIXES:
        return table_document(path, rel)
    return text_document(path, rel)


def load_text_folder(
    folder: str | Path, *, on_error: str = "skip", report: LoadReport | None = None
) -> list[Document]:
    """Load every ``.txt`` / ``.md`` / ``.csv`` file under ``folder`` (recursively, sorted) as Documents.

    Text files: id = relative path without extension (posix, e.g.
    ``guides/setup``), title = first markdown heading (``.md`` only) or the
    file stem, text = the whole file, metadata ``{"path": "guides/setup.md"}``.
    CSV/TSV files: ONE table Document (modality ``"table"``), text = header
    line then rows as ``a | b | c``, metadata ``{"columns", "rows", "path"}``.
    A file with invalid UTF-8 follows ``on_error`` (default: skip + one
    :class:`~ragroute.loaders.common.CorpusWarning` for the folder); an empty
    file is left out with one such warning, whatever ``on_error`` says
    (in ``report.ignored``); two files with the same id (``a.md`` and
    ``a.txt``) raise :class:`CorpusFormatError`.
    """
    check_on_error(on_error)
    root = Path(folder)
    if not root.is_dir():
        raise CorpusFormatError(f"{root}: no such folder")
    files = corpus_files(root)
    if not files:
        _refuse_data_files_alone(root)
    log = SkipLog(str(root), "file", on_error, report)
    ids = IdRegistry("document")
    docs = []
    for path in files:
        rel = path.relative_to(root)
        try:
            doc = file_document(path, rel)
        except BadRecord as exc:
            log.bad(rel.as_posix(), str(exc))
            continue
        if doc is None:
            log.ignore(rel.as_posix(), "empty")
            continue
        ids.add(doc.id, rel.as_posix())
        docs.append(doc)
    log.finish()
    return docs


DATA_SUFFIXES = (".jsonl", ".json", ".gz")
"""Files a folder corpus does not read, but ``load_corpus`` reads when named itself."""


def _refuse_data_files_alone(root: Path) -> None:
    """A folder with no text or table file but with corpus files of another kind (``tickets.jsonl``)
    would load as an empty corpus: say which file to name instead (one line)."""
    data = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in DATA_SUFFIXES and p.is_file() and not _is_hidden(p.relative_to(root))
    )
    if data:
        shown = ", ".join(data[:3]) + (f" and {len(data) - 3} more" if len(data) > 3 else "")
        raise CorpusFormatError(
            f"{root}: a folder corpus reads {', '.join(TEXT_SUFFIXES + TABLE_SUFFIXES)} files and this one "
            f"has none; it holds {shown}: give that file as the corpus (e.g. {root / data[0]})"
        )


def load_text_file(
    path: str | Path, *, on_error: str = "skip", report: LoadReport | None = None
) -> list[Document]:
    """Load one ``.txt`` / ``.md`` file as a one-Document corpus (id = file stem); an empty file gives
    ``[]`` and a :class:`~ragroute.loaders.common.CorpusWarning` saying so."""
    check_on_error(on_error)
    p = Path(path)
    log = SkipLog(str(p.parent), "file", on_error, report)
    doc = None
    try:
        doc = text_document(p, Path(p.name))
    except BadRecord as exc:
        log.bad(p.name, str(exc))
    else:
        if doc is None:
            log.ignore(p.name, "empty")
    log.finish()
    return [doc] if doc is not None else []
