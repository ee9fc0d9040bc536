"""Folders of plain files: one Document per ``.txt`` / ``.md`` file, one table Document per ``.csv``.

Files are found recursively and sorted by relative path, so ids and order are
deterministic; hidden files and folders (name starting with ".") are ignored,
and so are files that are plainly not text (images, media, compiled code:
:data:`NOT_TEXT_SUFFIXES`). A sub-folder a ragroute command wrote (an index
built with ``--out`` inside the corpus folder) is left out with one warning
naming it. Any other file of a type the folder does not read
(``.jsonl``, ``.json``, ``.html``, ``.rst``, ``.pdf``, ...) is counted, by
suffix with a few named, in one :class:`~ragroute.loaders.common.CorpusWarning`
(a ``.jsonl`` or ``.json`` file is a corpus of its own: a folder's CSV files are
already one table document each, and a JSONL file beside documents is as often
queries or labels as documents, so they are not read as rows here). An empty
file (no visible character: only whitespace, or only control and format characters such as
NUL bytes or zero-width spaces; or a CSV with no row under its header) is left out with one warning
per folder naming a few (``skipped 1 empty file in docs (todo.txt)``). A file
that cannot be read (invalid UTF-8, UTF-16, a name that is not UTF-8, a CSV whose quoted field
is never closed, removed while the folder is read) follows the bad-record policy of
:mod:`ragroute.loaders.common` (default: skip + one warning per folder). Links
to files are read (those leading outside the folder left out with a warning);
links to folders and broken links are not followed, and are named in one warning.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, RagrouteError, argument_text, has_visible_text, lone_surrogate
from ragroute.loaders.common import (
    BadRecord,
    CorpusWarning,
    IdRegistry,
    LoadReport,
    SkipLog,
    Skipped,
    check_on_error,
    decode_utf8_file,
    name_a_few,
    without_outside_links,
)
from ragroute.loaders.jsonl import open_binary
from ragroute.loaders.tabular import DELIMITERS, read_csv_rows
from ragroute.markdown import markdown_lines
from ragroute.types import Document

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
MARKDOWN_SUFFIXES = (".md", ".markdown")
TABLE_SUFFIXES = (".csv", ".tsv")


def first_heading(text: str) -> str | None:
    """The text of the first markdown ATX heading (``# Title``) outside fenced code blocks, or
    ``None`` (:func:`ragroute.markdown.markdown_lines`, the rule sections are cut by). Until session
    42 a ``# comment`` in a code block before the first heading was the title, a file with bare
    ``\r`` line ends had its whole text up to the first ``\n`` as title, and ``# Intro to C#`` was
    titled 'Intro to C'."""
    return next((match.group(2).strip() for _, match in markdown_lines(text) if match is not None), None)


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
    """One Document for a text/markdown file (``None`` if empty: no visible character, as
    :func:`~ragroute.errors.has_visible_text` reads it; until session 56 a file of NUL bytes or
    zero-width spaces was indexed as a document of its file name alone, found by any dense query);
    title = first heading or stem."""
    text = read_text(path)
    if not has_visible_text(text):
        return None
    is_markdown = path.suffix.lower() in MARKDOWN_SUFFIXES
    title = (first_heading(text) if is_markdown else None) or rel.stem
    return Document(id=_doc_id(rel), text=text, title=title, metadata={"path": rel.as_posix()})


def table_document(path: Path, rel: Path) -> Document | None:
    """One table Document for a CSV/TSV file (``None`` if it has no row under its header), its cells
    kept in metadata."""
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for line, fields, problem in read_csv_rows(path, DELIMITERS[path.suffix.lower()]):
            if problem is not None:
                raise BadRecord(f"line {line}: {problem}")
            rows.append(fields)
            lines.append(line)
    except CorpusFormatError as exc:
        # a file of the folder whose structure is broken (a quoted field never closed) is a bad
        # file, as one with a bad row is: until session 56 it stopped the whole folder's load
        # whatever on_error said; a file gone meanwhile is the caller's to say
        if not path.is_file():
            raise
        raise BadRecord(str(exc).removeprefix(f"{path} ")) from None
    if len(rows) < 2:  # no row under the header: a table of nothing (it was indexed as its header)
        return None
    columns, body = rows[0], rows[1:]
    _say_ragged_rows(path, columns, body, lines[1:])
    metadata: dict[str, Any] = {"columns": columns, "rows": body, "path": rel.as_posix()}
    text = linearise_table(columns, body)
    return Document(id=_doc_id(rel), text=text, title=rel.stem, metadata=metadata, modality="table")


def _say_ragged_rows(path: Path, columns: list[str], body: list[list[str]], lines: list[int]) -> None:
    """One :class:`CorpusWarning` naming the rows of the table file ``path`` whose cell count is not the
    header's (kept as written: their cells no longer line up with the columns). Until session 54
    they were kept without a word (an unquoted ``1,299.00`` shifted every cell after it)."""
    ragged = [
        f"line {line}: {counted(len(row), 'cell')}"
        for line, row in zip(lines, body)
        if len(row) != len(columns)
    ]
    if ragged:
        warnings.warn(
            f"{path}: {counted(len(ragged), 'row')} with a number of cells other than the "
            f"header's {len(columns)}, kept as written ({name_a_few(ragged)}); quote a cell holding "
            "the delimiter",
            CorpusWarning,
            stacklevel=4,
        )


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


READ_SUFFIXES = TEXT_SUFFIXES + TABLE_SUFFIXES
"""The files a folder corpus reads."""

DATA_SUFFIXES = (".jsonl", ".json")
"""Files a folder corpus does not read, but ``load_corpus`` reads when named itself."""

#: Files that are plainly not text (images, media, compiled code, fonts, arrays, model weights,
#: databases): a folder corpus passes over them without a word. Any other file it does not read
#: (``.html``, ``.rst``, ``.pdf``, ``.jsonl``, ...) is counted in a warning.
# fmt: off
NOT_TEXT_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ico", ".svg", ".heic",
    ".mp3", ".wav", ".flac", ".ogg", ".m4a", ".mp4", ".mov", ".avi", ".mkv", ".webm",
    ".pyc", ".pyo", ".so", ".o", ".a", ".dll", ".dylib", ".exe", ".class", ".jar", ".whl",
    ".woff", ".woff2", ".ttf", ".otf", ".eot",
    ".npy", ".npz", ".pt", ".pth", ".onnx", ".safetensors", ".faiss", ".parquet", ".arrow",
    ".sqlite", ".sqlite3", ".db",
})
# fmt: on


def folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The files under ``folder`` (recursive, hidden ones excluded, and those of a sub-folder a
    ragroute command wrote) that a folder corpus reads, and those it does not read, plainly binary
    ones excepted; each list sorted by relative path."""
    read, unread, _, _ = _walk(folder)
    return read, unread


def _walk(folder: Path) -> tuple[list[Path], list[Path], list[Path], list[str]]:
    """:func:`folder_files`, the links (not hidden) that are not followed: links to folders
    (the walk does not enter them) and broken links, sorted by relative path; and the sub-folders
    left out as artifacts (:func:`_outside_artifacts`)."""
    found, links = [], []
    for p in folder.rglob("*"):
        if _is_hidden(p.relative_to(folder)):
            continue
        if p.is_file():
            found.append(p)
        elif p.is_symlink():
            links.append(p)
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    links.sort(key=lambda p: p.relative_to(folder).as_posix())
    found, artifacts = _outside_artifacts(folder, found)
    links, _ = _outside_artifacts(folder, links)
    read = [p for p in found if p.suffix.lower() in READ_SUFFIXES]
    unread = [
        p
        for p in found
        if p.suffix.lower() not in READ_SUFFIXES and p.suffix.lower() not in NOT_TEXT_SUFFIXES
    ]
    return read, unread, links, artifacts


def _outside_artifacts(folder: Path, paths: list[Path]) -> tuple[list[Path], list[str]]:
    """``paths`` (under ``folder``) without those in a sub-folder that holds what a ragroute command
    wrote (an index built with ``--out`` inside the corpus folder: ``holds_artifact``), and those
    sub-folders, as posix paths relative to ``folder``. Until session 56 an index's files were
    counted as files not read, its ``docs.jsonl`` named as "a corpus of its own", and a folder
    holding only an index was refused with "give that file as the corpus (e.g.
    idx/builds/ID/bm25_vocab.json)", as a corpus folder that is an index itself was until session 53."""
    from ragroute.store.artifact import holds_artifact

    verdicts: dict[Path, bool] = {}  # a sub-folder: whether it holds an artifact
    kept: list[Path] = []
    for path in paths:
        above = path.relative_to(folder).parents[:-1]  # its folders below ``folder``, innermost first
        for sub in reversed(above):  # the outermost first: an artifact's own files are not asked
            if sub not in verdicts:
                verdicts[sub] = holds_artifact(folder / sub)
            if verdicts[sub]:
                break
        else:
            kept.append(path)
    return kept, sorted(sub.as_posix() for sub, held in verdicts.items() if held)


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
    Rows with more or fewer cells than the header are kept as written and
    named, with their lines, in one :class:`~ragroute.loaders.common.CorpusWarning`.
    A file with invalid UTF-8, or a CSV/TSV file with a bad row or a quoted field
    never closed, follows ``on_error`` (default: skip + one
    :class:`~ragroute.loaders.common.CorpusWarning` for the folder); an empty
    file (no visible character), and a file of a type not read here (``tickets.jsonl``, ``page.html``;
    images, media and compiled files excepted), are left out with one such
    warning each kind, whatever ``on_error`` says (in ``report.ignored``, with
    the reason ``"empty"`` or ``"not read"``); two files with the same id
    (``a.md`` and ``a.txt``) raise :class:`CorpusFormatError`.
    """
    check_on_error(on_error)
    root = Path(folder)
    if not root.is_dir():
        what = "is a file, expected a folder" if root.exists() else "no such folder"
        raise CorpusFormatError(f"{root}: {what}")
    files, unread, links, artifacts = _walk(root)
    files = without_outside_links(files, root, "file")
    if not files:
        _refuse_an_artifact(root)
        _refuse_data_files_alone(root, unread)
    _say_artifacts_left_out(root, artifacts, alone=not files)
    _say_unread(root, unread, report)
    _say_links_not_followed(root, links)
    log = SkipLog(str(root), "file", on_error, report)
    ids = IdRegistry("document")
    docs = []
    for path in files:
        key = shown_path(path.relative_to(root))
        rel = file_name_text(path.relative_to(root))
        try:
            _check_file_name(rel)
            doc = file_document(path, rel)
        except BadRecord as exc:
            log.bad(key, str(exc))
            continue
        except OSError as exc:  # unreadable (permissions, I/O): a bad file, not the end of the load
            log.bad(key, f"cannot be read ({exc.strerror or exc})")
            continue
        except CorpusFormatError:
            if path.is_file():
                raise
            log.bad(key, "no longer a file (removed or replaced while the folder was read)")
            continue
        if doc is None:
            log.ignore(key, "empty")
            continue
        ids.add(doc.id, key)
        docs.append(doc)
    log.finish()
    return docs


def shown_path(rel: Path) -> str:
    """``rel`` as text to show: posix, undecodable bytes of a file name written ``\\xe9``."""
    return os.fsencode(rel.as_posix()).decode("utf-8", "backslashreplace")


def file_name_text(rel: Path) -> Path:
    """``rel`` with its name read as UTF-8 under any locale (:func:`~ragroute.errors.argument_text`):
    the document's id, title and ``path``. Under ``LC_ALL=C PYTHONUTF8=0`` a file named ``東京.md``
    was skipped as "the file name is not valid UTF-8" until session 52."""
    return Path(argument_text(rel.as_posix()))


def _check_file_name(rel: Path) -> None:
    """:class:`BadRecord` when the name ``rel`` (the document's id, title and ``path``) is not valid
    UTF-8: its id could not be written to an index, and the build stopped at the first such file
    with an error naming a document id, not the file (until session 42)."""
    problem = lone_surrogate(rel.as_posix())
    if problem is not None:
        raise BadRecord(f"the file name is not valid UTF-8 ({problem}); rename the file")


def _say_links_not_followed(root: Path, links: list[Path]) -> None:
    """One :class:`CorpusWarning` naming the links of ``root`` a folder corpus does not follow:
    links to folders (their files were left out without a word until session 42) and
    broken links."""
    if not links:
        return
    names = [shown_path(p.relative_to(root)) for p in links]
    warnings.warn(
        f"{root}: {counted(len(links), 'link')} not followed ({name_a_few(names)}): a folder corpus reads "
        "the files in it and links to files, not links to folders or broken links; copy the files "
        "in, or load that folder as a corpus of its own",
        CorpusWarning,
        stacklevel=3,
    )


def _refuse_an_artifact(root: Path) -> None:
    """A folder a ragroute command wrote (an index, a skill index...) given as a corpus: say so (one
    line). Until session 53 its files were taken for a corpus's, and the error said to give one of
    them as the corpus (``e.g. IDX/builds/ID/bm25_vocab.json``)."""
    from ragroute.store.artifact import family_with_article, holds_artifact, open_snapshot

    if not holds_artifact(root):
        return
    held = "a ragroute artifact"
    with contextlib.suppress(RagrouteError, OSError):
        held = family_with_article(open_snapshot(root, verify=False).manifest.family)
    raise CorpusFormatError(
        f"{root} holds {held} (a folder a ragroute command wrote), not a corpus: give a corpus folder "
        "or file (an index's is the one it was built from)"
    )


def _say_artifacts_left_out(root: Path, artifacts: list[str], *, alone: bool) -> None:
    """One :class:`CorpusWarning` naming the sub-folders of ``root`` left out because a ragroute
    command wrote them (:func:`_outside_artifacts`); a :class:`CorpusFormatError` line when they are
    all the folder holds (``alone``)."""
    if not artifacts:
        return
    held = (
        f"{counted(len(artifacts), 'folder')} not read ({name_a_few(artifacts)}): "
        f"{'it holds' if len(artifacts) == 1 else 'they hold'} what a ragroute command wrote "
        "(an index, a skill index...), not corpus files"
    )
    if alone:
        raise CorpusFormatError(
            f"{root}: a folder corpus reads {', '.join(READ_SUFFIXES)} files and this one has none; "
            f"{held}: give the corpus folder or file an index was built from"
        )
    warnings.warn(f"{root}: {held}", CorpusWarning, stacklevel=3)


def _refuse_data_files_alone(root: Path, unread: list[Path]) -> None:
    """A folder with no text or table file but with corpus files of another kind (``tickets.jsonl``)
    would load as an empty corpus: say which file to name instead (one line)."""
    data = [p.relative_to(root).as_posix() for p in unread if p.suffix.lower() in DATA_SUFFIXES]
    if data:
        raise CorpusFormatError(
            f"{root}: a folder corpus reads {', '.join(READ_SUFFIXES)} files and this one "
            f"has none; it holds {name_a_few(data)}: give that file as the corpus (e.g. {root / data[0]})"
        )


def _say_unread(root: Path, unread: list[Path], report: LoadReport | None) -> None:
    """One :class:`CorpusWarning` counting the files of ``root`` a folder corpus does not read, by
    suffix with a few named (``2 .jsonl: tickets.jsonl, faq.jsonl``), each also in ``report.ignored``."""
    if not unread:
        return
    by_suffix: dict[str, list[str]] = {}
    for path in unread:
        rel = path.relative_to(root).as_posix()
        by_suffix.setdefault(path.suffix.lower() or "(no extension)", []).append(rel)
        if report is not None:
            report.ignored.append(Skipped(str(root), rel, "not read"))
    kinds = sorted(by_suffix.items(), key=lambda item: (-len(item[1]), item[0]))
    named = kinds if len(kinds) <= 6 else kinds[:5]
    shown = [f"{len(names)} {suffix}: {name_a_few(names, 2)}" for suffix, names in named]
    if len(named) < len(kinds):
        others = kinds[len(named) :]
        count = sum(len(names) for _, names in others)
        shown.append(f"{count} of {len(others)} other types: {name_a_few([s for s, _ in others])}")
    message = (
        f"{root}: {counted(len(unread), 'file')} not read ({'; '.join(shown)}): a folder corpus reads "
        f"{', '.join(READ_SUFFIXES)} files"
    )
    alone = [rel for suffix in DATA_SUFFIXES for rel in by_suffix.get(suffix, [])]
    if alone:
        message += f"; a {' or '.join(DATA_SUFFIXES)} file is a corpus of its own (e.g. {root / alone[0]})"
    warnings.warn(message, CorpusWarning, stacklevel=3)


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
        rel = file_name_text(Path(p.name))
        _check_file_name(rel)  # said as in a folder (the build refused the title, naming no file)
        doc = text_document(p, rel)
    except BadRecord as exc:
        log.bad(p.name, str(exc))
    else:
        if doc is None:
            log.ignore(p.name, "empty")
    log.finish()
    return [doc] if doc is not None else []
