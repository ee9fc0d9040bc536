"""Line-by-line JSONL reading that survives (and reports) bad lines.

The file is read as bytes and each line is decoded on its own, so one line of
invalid UTF-8 is detected and reported with its line number instead of
failing the whole file. See :mod:`ragroute.loaders.common` for the policy.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ragroute.errors import CorpusFormatError
from ragroute.loaders.common import (
    BadRecord,
    LoadReport,
    SkipLog,
    check_on_error,
    check_unicode,
    decode_error_reason,
    json_error,
    parse_json,
    wide_encoding_reason,
)

T = TypeVar("T")


def open_binary(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading bytes; a missing file or a folder raises :class:`CorpusFormatError`."""
    p = Path(path)
    if not p.exists():
        raise CorpusFormatError(f"{p}: no such file")
    if p.is_dir():
        raise CorpusFormatError(f"{p}: is a folder, expected a file")
    return p.open("rb")


def decode_line(raw: bytes, first: bool = False) -> str:
    """Decode one line of UTF-8 (dropping a BOM on the first line); :class:`BadRecord` if invalid
    (naming the encoding of a first line that starts with a UTF-16 or UTF-32 byte order mark)."""
    wide = wide_encoding_reason(raw) if first else None
    if wide is not None:
        raise BadRecord(wide)
    if first and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(decode_error_reason(exc, raw)) from None


def parse_object(text: str) -> dict[str, Any]:
    """Parse one JSON object; :class:`BadRecord` for broken JSON, a non-object value, a key written
    twice in one object (:func:`~ragroute.loaders.common.parse_json`) or a lone surrogate escape in a
    string."""
    text = text.rstrip("\r\n")  # an error at the line's end is reported at its column, not line 2
    try:
        value = parse_json(text)
    except json.JSONDecodeError as exc:
        raise BadRecord(f"invalid JSON ({json_error(exc)})") from None
    except RecursionError:  # thousands of nested [ or {: a bad record, not a traceback
        raise BadRecord("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRecord(f"expected a JSON object, got {type(value).__name__}")
    return check_unicode(value, text)


def read_records(
    path: str | Path,
    convert: Callable[[dict[str, Any], int], T],
    *,
    on_error: str = "skip",
    report: LoadReport | None = None,
) -> Iterator[tuple[int, T]]:
    """Yield ``(line_number, convert(obj, line_number))`` for each JSON object line of ``path``.

    ``convert`` may raise :class:`BadRecord` to reject a record; rejected and
    unreadable lines follow ``on_error`` (skip + one warning per file, or raise
    :class:`CorpusFormatError` naming file and line). Blank lines are ignored.
    Line numbers are 1-based physical line numbers.
    """
    log = SkipLog(str(path), "line", on_error, report)
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            wide = wide_encoding_reason(raw) if lineno == 1 else None
            if wide is not None:  # no line of it can be read: the file, not its lines, is refused
                raise CorpusFormatError(f"{path}: {wide}")
            text = None
            try:
                text = decode_line(raw, first=lineno == 1)
                if not text.strip():
                    continue
                value = convert(parse_object(text), lineno)
            except BadRecord as exc:
                log.bad(lineno, str(exc) + _bare_cr_hint(text))
                continue
            yield lineno, value
    log.finish()


def _bare_cr_hint(text: str | None) -> str:
    """A hint for a bad line holding a bare ``\\r`` (a file with old Mac line ends, all its records
    one "line"; JSON allows a raw ``\\r`` only between tokens), else ``""``."""
    if text is None or "\r" not in text.rstrip("\r\n"):
        return ""
    return (
        "; the line holds bare \\r line breaks: a JSONL record ends at \\n "
        "(convert the file, e.g. tr '\\r' '\\n')"
    )


def _identity(obj: dict[str, Any], lineno: int) -> dict[str, Any]:
    return obj


def read_jsonl(
    path: str | Path, *, on_error: str = "skip", report: LoadReport | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    The default ``on_error="skip"`` skips lines with invalid UTF-8, broken JSON
    or a non-object value, records them in ``report`` (a
    :class:`~ragroute.loaders.common.LoadReport`, if given) and, once the file
    is exhausted, emits ONE :class:`~ragroute.loaders.common.CorpusWarning`
    such as ``skipped 2 bad lines in corpus.jsonl (lines 17, 40; ...)``.
    ``on_error="raise"`` raises :class:`~ragroute.errors.CorpusFormatError`
    (``corpus.jsonl line 17: invalid JSON (Expecting ',' delimiter at column 12)``)
    at the first bad line.
    """
    check_on_error(on_error)
    return read_records(path, _identity, on_error=on_error, report=report)
