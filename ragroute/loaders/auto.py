"""``load_corpus``: load any supported corpus, detecting its format from the path.

Detection rules, first match wins:

=====================================  ===========================================
path                                   loaded with
=====================================  ===========================================
folder holding ``corpus*.jsonl``       :func:`~ragroute.loaders.beir.load_beir_corpus` (all corpus files)
any other folder                       :func:`~ragroute.loaders.folder.load_text_folder`
``*.json``                             :func:`~ragroute.loaders.hipporag.load_hipporag_corpus`
``*.jsonl`` whose first record has     :func:`~ragroute.loaders.beir.load_beir_corpus`
``_id`` (and no column option given)
other ``*.jsonl``, ``*.csv``, ``*.tsv`` :func:`~ragroute.loaders.tabular.load_table_file` (a BEIR-shaped
                                       ``.jsonl`` read as a table, because a column option was
                                       given, keeps BEIR's ids and titles: ``id_column`` defaults
                                       to ``_id``; any table file's ``title_column`` defaults to
                                       ``title`` when it has one)
``*.txt``, ``*.md``                    :func:`~ragroute.loaders.folder.load_text_file` (one document)
=====================================  ===========================================
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, check_path, unknown_keys_message
from ragroute.loaders.beir import corpus_files, load_beir_corpus
from ragroute.loaders.common import BadRecord, CorpusWarning, LoadReport, Skipped, check_on_error, name_a_few
from ragroute.loaders.folder import (
    READ_SUFFIXES,
    TEXT_SUFFIXES,
    folder_files,
    load_text_file,
    load_text_folder,
)
from ragroute.loaders.hipporag import load_hipporag_corpus
from ragroute.loaders.jsonl import decode_line, open_binary, parse_object
from ragroute.loaders.tabular import (
    COLUMN_OPTION_OF_ROLE,
    DELIMITERS,
    Columns,
    load_table_file,
    read_csv_rows,
)
from ragroute.types import Document

COLUMN_OPTIONS = tuple(COLUMN_OPTION_OF_ROLE.values())
ROLE_OF_COLUMN_OPTION = {option: role for role, option in COLUMN_OPTION_OF_ROLE.items()}

# format name -> (loader, options it accepts besides on_error / report)
LOADERS: dict[str, tuple[Callable[..., list[Document]], tuple[str, ...]]] = {
    "beir": (load_beir_corpus, ("modality",)),
    "folder": (load_text_folder, ()),
    "hipporag": (load_hipporag_corpus, ("id_prefix",)),
    "table": (load_table_file, (*COLUMN_OPTIONS, "modality")),
    "text": (load_text_file, ()),
}


def _first_record(path: Path) -> dict[str, Any] | None:
    """The first line of a JSONL file that parses as a JSON object, the first record the loaders
    read (a line before it that does not is a bad line they skip), or ``None`` if none does. Only
    the first non-blank line was read before: a BEIR file whose first line was cut off (or held
    only a BOM) loaded as a table, every document renumbered, silently. A line is read as the
    loaders read it (:func:`~ragroute.loaders.jsonl.parse_object`): until session 51 a line they
    skip (``NaN``, a key written twice) could be the first record here, and one holding a number
    of more digits than Python reads was a ``ValueError`` traceback."""
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                return parse_object(decode_line(raw, first=lineno == 1))
            except BadRecord:
                continue
    return None


def _detect_file(path: Path, options: dict[str, Any]) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "hipporag"
    if suffix == ".jsonl":
        first = _first_record(path)
        is_beir = first is not None and "_id" in first and not any(o in options for o in COLUMN_OPTIONS)
        return "beir" if is_beir else "table"
    if suffix in (".csv", ".tsv"):
        return "table"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise CorpusFormatError(
        f"{path}: unknown corpus format {suffix or '(no extension)'!r} "
        f"(expected a folder, .json, .jsonl, {', '.join(READ_SUFFIXES[:-1])} or {READ_SUFFIXES[-1]})"
    )


def detect_format(path: str | os.PathLike[str], **options: Any) -> str:
    """The format :func:`load_corpus` would use for ``path``: beir, folder, hipporag, table or text."""
    p = Path(path)
    if not p.exists():
        raise CorpusFormatError(f"{p}: no such file or folder")
    if p.is_dir():
        try:  # an unreadable folder would otherwise look empty (glob ignores the error)
            with os.scandir(p) as entries:
                next(entries, None)
        except OSError as exc:
            raise CorpusFormatError(f"{p}: cannot read this folder ({exc.strerror or exc})") from None
        return "beir" if corpus_files(p) else "folder"
    return _detect_file(p, options)


def load_corpus(
    path: str | os.PathLike[str], *, on_error: str = "skip", report: LoadReport | None = None, **options: Any
) -> list[Document]:
    """Load a corpus from a folder or file, detecting the format (see the module docstring).

    ``options`` go to the chosen loader (``text_column``, ``id_column``,
    ``title_column``, ``metadata_columns`` and ``modality`` for table files,
    ``id_prefix`` for HippoRAG JSON, ``modality`` for BEIR); an option the
    format does not take raises :class:`CorpusFormatError`. Bad records follow
    ``on_error`` (default: skip + one CorpusWarning per file, counts in
    ``report``); duplicate document ids always raise :class:`CorpusFormatError`.
    """
    check_path(path, "load_corpus needs a corpus file or folder path")
    check_on_error(on_error)
    fmt = detect_format(path, **options)
    loader = LOADERS[fmt][0]
    check_options(path, fmt, options)
    if fmt == "table":
        options = {**_beir_columns(Path(path)), **options}
    if fmt == "beir" and Path(path).is_dir():
        _say_beir_leaves_out(Path(path), report)
    return loader(path, on_error=on_error, report=report, **options)


def _say_beir_leaves_out(root: Path, report: LoadReport | None) -> None:
    """One :class:`CorpusWarning` naming the text and table files of ``root``, a folder read as a
    BEIR folder because it holds a ``corpus*.jsonl``, which that format does not read (its qrels
    excepted), each also in ``report.ignored`` (``"not read"``): a folder of markdown files beside a
    ``corpus_export.jsonl`` loaded that file alone, its markdown left out without a word (until
    session 42)."""
    files = [p for p in folder_files(root)[0] if p.relative_to(root).parts[0] != "qrels"]
    if not files:
        return
    names = [p.relative_to(root).as_posix() for p in files]
    if report is not None:
        report.ignored.extend(Skipped(str(root), name, "not read") for name in names)
    corpus = ", ".join(p.name for p in corpus_files(root))
    warnings.warn(
        f"{root}: {counted(len(files), 'file')} not read ({name_a_few(names)}): a folder holding "
        f"corpus*.jsonl ({corpus}) is read as a BEIR folder, which reads only those; move them to a "
        "folder of their own to load them",
        CorpusWarning,
        stacklevel=3,
    )


def _columns(options: Mapping[str, Any]) -> Columns:
    """The table columns the loader options name (their types checked by :class:`Columns`)."""
    return Columns(**{ROLE_OF_COLUMN_OPTION[o]: v for o, v in options.items() if o in ROLE_OF_COLUMN_OPTION})


def check_table_header(path: str | Path, fmt: str, options: Mapping[str, Any]) -> None:
    """Refuse, as loading would, a table file (format ``fmt``, :func:`detect_format`'s) whose header
    lacks a column the options name (the ``text`` column by default), reading only its header:
    ``config check`` said ok for a CSV without a ``text`` column, whose build then failed (until
    session 37). Folders and other formats: nothing."""
    path = Path(path)
    if fmt != "table" or not path.is_file():
        return
    columns = _columns({**_beir_columns(path), **options})
    if path.suffix.lower() == ".jsonl":
        first = _first_record(path)
        header = list(first) if first is not None else None
    else:
        row = next(read_csv_rows(path, DELIMITERS[path.suffix.lower()]), None)
        header = row[1] if row is not None and row[2] is None else None
    if header is not None:  # an unreadable header is loading's to report, with its line
        columns.with_defaults_from(header).check(header, str(path))


def _beir_columns(path: Path) -> dict[str, str]:
    """The id column of a BEIR-shaped ``.jsonl`` read as a table (a column option was given):
    ``_id``, as without the option (its ids were renumbered, silently, when a column option was
    added); its ``title`` is the title as any table file's is (``Columns.with_defaults_from``)."""
    first = _first_record(path) if path.suffix.lower() == ".jsonl" else None
    if first is None or "_id" not in first:
        return {}
    return {"id_column": "_id"}


def check_options(path: str | os.PathLike[str], fmt: str, options: Mapping[str, Any]) -> None:
    """Refuse ``options`` that the loader of format ``fmt`` does not take (one line, closest option named)."""
    accepted = LOADERS[fmt][1]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        message = unknown_keys_message(unknown, accepted, "option")
        raise CorpusFormatError(f"{path} is a {fmt} corpus: {message}")
    if any(k in COLUMN_OPTIONS for k in options):  # their types, here where `config check` reads them
        try:  # too (a string was read one column per letter)
            _columns(options)
        except CorpusFormatError as exc:
            raise CorpusFormatError(f"{path}: {exc}") from None
