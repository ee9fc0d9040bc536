"""Shared pieces of the corpus loaders: the bad-record policy, load reports and id checks.

Bad-record policy (every loader follows it):

* ``on_error="skip"`` (the default for corpora): a record that cannot be read
  (invalid UTF-8, broken JSON, a key written twice in one JSON object, a
  missing required field, an unreadable file in a folder) is skipped,
  recorded in the optional :class:`LoadReport`, and after the file has been
  read ONE :class:`CorpusWarning` summarises what was skipped in it, e.g.
  ``skipped 2 bad lines in corpus.jsonl (lines 17, 40; line 17: invalid
  JSON (...))``. Large corpora scraped from the web almost always hold
  a few broken lines; refusing the whole file would be unhelpful, hiding the
  loss would be dishonest.
* ``on_error="raise"``: the first bad record raises
  :class:`~ragroute.errors.CorpusFormatError` with a one-line message naming
  the file and line, e.g. ``corpus.jsonl line 17: invalid JSON (...)``.

Files that hold nothing to index are not bad records: an empty file in a
folder corpus, or one of a type it does not read, is left out whatever
``on_error`` says, recorded in :attr:`LoadReport.ignored` and said in one
:class:`CorpusWarning` per folder and kind (``skipped 1 empty file in docs
(notes/todo.txt)``, ``docs: 1 file not read (1 .jsonl: tickets.jsonl): ...``);
a BEIR corpus row with neither text nor title is left out the same way (one warning per file
naming its ids; qrels judging it still load); a record of another format with neither is
loaded, and dropped with a warning naming it when the documents are cut into units
(:func:`ragroute.chunking.chunk_documents`).

Some problems are never skipped, whatever ``on_error`` says, because skipping
would silently change results: duplicate document ids, malformed qrels lines,
a missing required column, a CSV header naming a column twice, a missing or
unknown file.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ragroute.display import counted
from ragroute.errors import CorpusFormatError, InvalidArgumentError, lone_surrogate

T = TypeVar("T")

OnError = Literal["skip", "raise"]
ON_ERROR_CHOICES = ("skip", "raise")


class CorpusWarning(UserWarning):
    """Some records of a corpus file were skipped, or files or documents with nothing to index left
    out (one warning per file or folder, with counts and a few of them named)."""


class BadRecord(ValueError):
    """Raised by a record converter to reject one record; the reader skips or raises per ``on_error``."""


@dataclass(frozen=True)
class Skipped:
    """One skipped record: the file it came from, where in it, and why."""

    source: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source} {self.where}: {self.reason}"


@dataclass
class LoadReport:
    """What the loaders skipped; pass one as ``report=`` to any loader to get the counts back.

    ``skipped``: bad records (per ``on_error``); ``ignored``: files of a folder corpus left out
    although not bad, whatever ``on_error`` says, with the reason ``"empty"`` or ``"not read"`` (a
    type a folder corpus does not read); ``columns``: the columns table files were read with.
    """

    skipped: list[Skipped] = field(default_factory=list)
    ignored: list[Skipped] = field(default_factory=list)
    #: per table file read (``.csv``, ``.tsv``, ``.jsonl`` rows): the column each role (``text``,
    #: ``id``, ``title``) was read from, named or found by default
    columns: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        """Number of records (lines, items, rows or files) skipped so far."""
        return len(self.skipped)

    @property
    def n_ignored(self) -> int:
        """Number of files left out so far although not bad (empty or not read)."""
        return len(self.ignored)

    def skipped_in(self, source: str) -> list[Skipped]:
        """The skipped records of one file (as displayed in messages)."""
        return [s for s in self.skipped if s.source == source]


def name_a_few(names: Sequence[str], limit: int = 3) -> str:
    """``a, b, c and 4 more``: the first ``limit`` of ``names``, then how many others."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` argument (a programming error: :class:`InvalidArgumentError`, a
    ``ValueError``)."""
    if on_error not in ON_ERROR_CHOICES:
        raise InvalidArgumentError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    return on_error  # type: ignore[return-value]


class SkipLog:
    """Applies the bad-record policy to one file: raise at once, or collect and warn once at the end.

    ``unit`` names the records ("line", "item", "file"); a numbered unit gives
    messages like ``corpus.jsonl line 17: ...``, the unit ``"file"`` gives
    ``docs/a.txt: ...``.
    """

    def __init__(self, source: str, unit: str, on_error: str, report: LoadReport | None) -> None:
        self.source = source
        self.unit = unit
        self.on_error = check_on_error(on_error)
        self.report = report
        self.entries: list[Skipped] = []
        self.ignored: list[Skipped] = []

    def _where(self, key: int | str) -> str:
        return str(key) if self.unit == "file" else f"{self.unit} {key}"

    def bad(self, key: int | str, reason: str) -> None:
        """Record one bad record, or raise :class:`CorpusFormatError` when ``on_error="raise"``."""
        if self.on_error == "raise":
            if self.unit == "file":
                raise CorpusFormatError(f"{self.source}/{key}: {reason}")
            raise CorpusFormatError(f"{self.source} {self._where(key)}: {reason}")
        entry = Skipped(self.source, self._where(key), reason)
        self.entries.append(entry)
        if self.report is not None:
            self.report.skipped.append(entry)

    def ignore(self, key: int | str, adjective: str) -> None:
        """Record one record left out although not bad (``adjective``: ``"empty"``), whatever
        ``on_error`` says; :meth:`finish` says how many."""
        entry = Skipped(self.source, self._where(key), adjective)
        self.ignored.append(entry)
        if self.report is not None:
            self.report.ignored.append(entry)

    def finish(self) -> None:
        """Emit the one summary :class:`CorpusWarning` for this file, if anything was skipped, and
        one per kind of record left out (``skipped 2 empty files in docs (a.txt, b/c.md)``)."""
        if self.entries:
            warnings.warn(self.summary(), CorpusWarning, stacklevel=3)
        for adjective in dict.fromkeys(entry.reason for entry in self.ignored):
            keys = [self._key(e) for e in self.ignored if e.reason == adjective]
            plural = "" if len(keys) == 1 else "s"
            message = f"skipped {len(keys)} {adjective} {self.unit}{plural} in {self.source}"
            warnings.warn(f"{message} ({name_a_few(keys)})", CorpusWarning, stacklevel=3)

    def _key(self, entry: Skipped) -> str:
        """The key an entry was recorded under (``17`` of ``line 17``; a file's path, spaces and all)."""
        return entry.where if self.unit == "file" else entry.where.split(" ", 1)[-1]

    def summary(self) -> str:
        """``skipped 2 bad lines in corpus.jsonl (lines 17, 40; line 17: invalid JSON (...))``."""
        n = len(self.entries)
        plural = "" if n == 1 else "s"
        first = self.entries[0]
        keys = [self._key(e) for e in self.entries[:10]]
        more = ", ..." if n > 10 else ""
        if self.unit == "file":
            listing = f"{', '.join(keys)}{more}"
        else:
            listing = f"{self.unit}{plural} {', '.join(keys)}{more}"
        detail = f"{listing}; {first.where}: {first.reason}"
        return f"skipped {n} bad {self.unit}{plural} in {self.source} ({detail})"


class IdRegistry:
    """Remembers where each id was seen; a second sighting raises :class:`CorpusFormatError`."""

    def __init__(self, what: str = "document") -> None:
        self.what = what
        self._seen: dict[str, str] = {}

    def add(self, item_id: str, where: str) -> None:
        """Register ``item_id`` found at ``where`` (e.g. ``"corpus.jsonl line 3"``)."""
        first = self._seen.get(item_id)
        if first is not None:
            raise CorpusFormatError(f"duplicate {self.what} id {item_id!r} ({first} and {where})")
        self._seen[item_id] = where


def record_id(row: dict, key: str) -> str:
    """The id in ``row[key]`` as a string; :class:`BadRecord` if it is missing, empty or not a scalar."""
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRecord(f"missing or invalid {key!r} (got {type(value).__name__})")
    text = str(value)
    if not text.strip():
        raise BadRecord(f"empty {key!r}")
    return text


def optional_str(row: dict, key: str) -> str:
    """``row[key]`` as a string ("" when absent or null); :class:`BadRecord` for non-strings, and for
    NaN and infinity (:func:`not_text_reason`)."""
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRecord(f"{key!r} must be a string, got {type(value).__name__}")
    reason = not_text_reason(key, value)
    if reason is not None:
        raise BadRecord(reason)
    return str(value)


def not_text_reason(key: str, value: Any) -> str | None:
    """Why the value of ``key``, read where text is expected, is no text when it is a float that is
    not finite, else ``None``: Python's json reads ``NaN``, ``Infinity`` and ``-Infinity``, which are
    not JSON, and ``1e400`` as infinity, and ``{"text": NaN}`` was the text "nan" (until session 51)."""
    if not isinstance(value, float) or math.isfinite(value):
        return None
    what = "NaN" if math.isnan(value) else "infinite (Infinity, or a number beyond a float's range: 1e400)"
    return f"{key!r} is {what}, not text (JSON has no NaN or Infinity: write null, or the text as a string)"


def decode_error_reason(exc: UnicodeDecodeError, data: bytes) -> str:
    """``invalid UTF-8 (byte 0xff at column 5)`` for a decode error in one line."""
    return f"invalid UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start + 1})"


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]|\\U0000[dD][89a-fA-F]")


def check_unicode(value: T, raw: str | None = None) -> T:
    """``value`` (parsed JSON or YAML) when all its strings are valid Unicode; :class:`BadRecord`
    naming the first lone surrogate otherwise (an escape such as ``\\ud800`` is half a character:
    no encoder or UTF-8 file can take it). ``raw``, the parsed text, skips the walk when it holds no
    such escape."""
    if raw is not None and _SURROGATE_ESCAPE.search(raw) is None:
        return value
    problem = lone_surrogate(value)
    if problem is not None:
        raise BadRecord(f"not valid text: {problem} of a string (an escape of half a surrogate pair)")
    return value


class RepeatedKeys:
    """The keys a JSON text writes twice in one object (``{"id": "a", "text": "x", "id": "b"}``), which
    JSON parsers resolve silently by keeping the last value: the ``object_pairs_hook`` of
    :func:`parse_json` notes them per object, so a reader can refuse the record or warn."""

    def __init__(self) -> None:
        # id of each object that repeats a key -> (the object, kept alive so its id stays its own; keys)
        self._objects: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def __bool__(self) -> bool:
        return bool(self._objects)

    def hook(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """Build one object, noting the keys it repeats (the last value is kept, as JSON does)."""
        obj = dict(pairs)
        if len(obj) != len(pairs):
            self._objects[id(obj)] = (obj, _repeated(pairs))
        return obj

    def names(self) -> list[str]:
        """Every repeated key, once each, in the order their objects were closed."""
        return list(dict.fromkeys(key for _, keys in self._objects.values() for key in keys))

    def first_in(self, value: Any) -> str | None:
        """The first key repeated by ``value`` or an object inside it (one record of a parsed file)."""
        if not self._objects:
            return None
        stack = [value]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                noted = self._objects.get(id(node))
                if noted is not None and noted[0] is node:
                    return noted[1][0]
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return None


def duplicate_key_reason(key: str) -> str:
    """Why a record that writes ``key`` twice is refused (one line, for :class:`BadRecord`)."""
    return f"duplicate key {key!r} (JSON keeps only its last value; write each key once)"


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _repeated(pairs: list[tuple[str, Any]]) -> list[str]:
    """The keys ``pairs`` write again after their first time, once each, in order."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for key, _ in pairs:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    return list(repeated)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _RepeatedKey(_repeated(pairs)[0])
    return obj


#: one decoder (building one per call, as ``json.loads`` with a hook does, doubles the time of a line)
_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def json_error(exc: json.JSONDecodeError, *, line: bool = False) -> str:
    """``exc``'s message and where it is (its column; its line too when ``line``). Python ends some
    messages with " at" (``Invalid control character at``, ``Unterminated string starting at``) and
    others not (``Expecting value``): until session 53 the MCP, OpenAPI and triples loaders wrote
    "at at" after the first kind, and the HippoRAG loader gave no column at all."""
    where = f"line {exc.lineno} column {exc.colno}" if line else f"column {exc.colno}"
    return f"{exc.msg}{'' if exc.msg.endswith(' at') else ' at'} {where}"


def parse_json(text: str, repeats: RepeatedKeys | None = None) -> Any:
    """``json.loads(text)`` for the JSON files and lines users give, which does not silently keep one
    of two values of a repeated key: a :class:`BadRecord` naming the key (:func:`duplicate_key_reason`),
    or, when ``repeats`` is given, the key noted there (the last value kept) for the caller to
    refuse a record of a larger file or warn. A whole number of more digits than Python reads
    (4,300 by default) is a :class:`BadRecord` naming its field (a ``ValueError`` traceback until
    session 51). Broken JSON raises :class:`json.JSONDecodeError` (and ``RecursionError`` when
    nested too deeply), as ``json.loads`` does; ``text`` holds no BOM. ``NaN`` and ``Infinity`` (not
    JSON) are read as Python reads them; where text is expected they are refused
    (:func:`not_text_reason`)."""
    try:
        if repeats is not None:
            return json.JSONDecoder(object_pairs_hook=repeats.hook).decode(text)
        return _STRICT_DECODER.decode(text)
    except _RepeatedKey as exc:
        raise BadRecord(duplicate_key_reason(exc.key)) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # Python's limit on the digits of a whole number
        where = _long_number_field(text)
        if where is None:
            raise
        raise BadRecord(
            f"{where} is a whole number of more digits than Python reads ({sys.get_int_max_str_digits():,}); "
            "write it as a string"
        ) from None


class _LongNumber:
    """A whole number of more digits than Python reads, as :func:`_long_number_field` reads it."""


def _long_int(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return _LongNumber()


#: reads a whole number :func:`parse_json` cannot read as a marker, to find where it is
_LOCATING_DECODER = json.JSONDecoder(parse_int=_long_int)


def _long_number_field(text: str) -> str | None:
    """Where the first whole number of the JSON ``text`` too long for Python is: ``'metadata.ids[2]'``
    (``the value``: the whole text); ``None`` if there is none (another ``ValueError``)."""
    try:
        value = _LOCATING_DECODER.decode(text)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _LongNumber):
            return repr(path) if path else "the value"
        if isinstance(node, dict):
            items = [(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()]
        elif isinstance(node, list):
            items = [(v, f"{path}[{i}]") for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(items))  # in the order they are written
    return None


#: byte order marks of the wide Unicode encodings (UTF-32 first: its little-endian mark starts
#: with UTF-16's)
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def wide_encoding_reason(data: bytes) -> str | None:
    """Why a file starting with ``data`` cannot be read, when it starts with a UTF-16 or UTF-32 byte
    order mark (what Windows tools write as "Unicode"), or is plainly UTF-16 or UTF-32 without one
    (:func:`_bomless_wide_encoding`), else ``None``. Such a file was "invalid UTF-8" with a hint to
    re-encode it from Latin-1, and a JSONL one was skipped line by line (counting lines split inside
    its characters) into an empty corpus (until session 42); one without a mark was read as UTF-8,
    a text file indexed as its letters with a NUL between each two (until session 51)."""
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            return (
                f"the file is {name} (it starts with a {name} byte order mark), not UTF-8; re-encode "
                f"it as UTF-8 (e.g. iconv -f {name.lower()} -t utf-8 FILE > NEW)"
            )
    encoding = _bomless_wide_encoding(data)
    if encoding is not None:
        return (
            f"the file looks like {encoding} without a byte order mark (NUL bytes between its "
            f"letters), not UTF-8; re-encode it as UTF-8 (e.g. iconv -f {encoding.lower()} -t utf-8 "
            "FILE > NEW)"
        )
    return None


def _bomless_wide_encoding(data: bytes, sample: int = 4096) -> str | None:
    """``UTF-16LE``, ``UTF-16BE``, ``UTF-32LE`` or ``UTF-32BE`` when the start of ``data`` is text of
    that encoding written without a byte order mark, told by its NUL bytes: the high bytes of Latin
    letters, digits and punctuation, at every other (UTF-16) or three of every four (UTF-32)
    positions; ``None`` otherwise (UTF-8 text holds no NUL byte, save a stray one)."""
    head = data[:sample]
    if b"\x00" not in head:
        return None
    head = head[: len(head) - len(head) % 4] if len(head) >= 8 else head[: len(head) - len(head) % 2]
    if len(head) < 4:
        return None

    def mostly_nul(part: bytes) -> bool:
        return part.count(0) >= 0.9 * len(part)

    def rarely_nul(part: bytes) -> bool:
        return part.count(0) <= 0.1 * len(part)

    if len(head) >= 8:
        lanes = [head[i::4] for i in range(4)]
        if rarely_nul(lanes[0]) and all(mostly_nul(lane) for lane in lanes[1:]):
            return "UTF-32LE"
        if rarely_nul(lanes[3]) and all(mostly_nul(lane) for lane in lanes[:3]):
            return "UTF-32BE"
    even, odd = head[0::2], head[1::2]
    if rarely_nul(even) and odd.count(0) >= 0.5 * len(odd):
        return "UTF-16LE"
    if rarely_nul(odd) and even.count(0) >= 0.5 * len(even):
        return "UTF-16BE"
    return None


def decode_utf8_file(data: bytes) -> str:
    """A whole file's bytes as text (UTF-8, BOM dropped); :class:`BadRecord` naming the line if
    invalid, or the encoding if the file is UTF-16 or UTF-32 (:func:`wide_encoding_reason`)."""
    wide = wide_encoding_reason(data)
    if wide is not None:
        raise BadRecord(wide)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        # what to do about it, said where a user reads it: a Latin-1 / cp1252 file was "invalid UTF-8"
        # and nothing more before
        raise BadRecord(
            f"invalid UTF-8 on line {line} (byte 0x{data[exc.start]:02x}); re-encode the file as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8 FILE > NEW)"
        ) from None


def links_outside(path: Path, root: Path) -> bool:
    """Whether ``path`` (found under ``root``) leads to a file outside ``root``, through a link of its
    own or of a folder on its way: a corpus or catalogue folder from elsewhere could otherwise make
    ragroute read (and index) any file the user can read (``pw.txt -> /etc/passwd``)."""
    return not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def without_outside_links(paths: Sequence[Path], root: Path, what: str) -> list[Path]:
    """``paths`` without the links to files outside ``root`` (:func:`links_outside`), those left
    out said in one :class:`CorpusWarning` (``what``: the kind of file, singular: ``spec file``)."""
    outside = [p for p in paths if links_outside(p, root)]
    if outside:
        names = [p.relative_to(root).as_posix() for p in outside]
        warnings.warn(
            f"left out {counted(len(outside), what)} in {root} that "
            f"{'links to a file' if len(outside) == 1 else 'link to files'} outside it: {name_a_few(names)}",
            CorpusWarning,
            stacklevel=3,
        )
    return [p for p in paths if p not in outside]
