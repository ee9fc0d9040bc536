"""Errors raised by ragroute.

Every error a user can trigger with bad input is a :class:`RagrouteError` whose
message is one line naming the problem; the CLI prints it as ``error: ...`` and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import difflib
import errno
import math
import numbers
import os
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: the characters ``str.splitlines`` breaks a line at
_LINE_BREAKS = "\\n\\r\\v\\f\\x1c\\x1d\\x1e\\x85\\u2028\\u2029"
#: a line break, and a run of whitespace holding one
_LINE_BREAK = re.compile(f"[{_LINE_BREAKS}]")
_BROKEN_RUN = re.compile(rf"(?<!\s)\s*[{_LINE_BREAKS}]\s*")


def one_line(text: str) -> str:
    """``text`` on one line: each run of whitespace holding a line break becomes one space, the ends
    are stripped, and spaces within a line stay as they are, so a quoted value or a path with two
    spaces in it is shown as it is (until session 51 every run of whitespace became one space, and
    an error named ``/data/my  folder`` as ``/data/my folder``, a path that is not there)."""
    return _BROKEN_RUN.sub(" ", str(text)).strip()


class RagrouteError(Exception):
    """Base class of user-facing errors: the message is one line, fit for a terminal."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class InvalidQueryError(RagrouteError, ValueError):
    """The query is not text ragroute can search with: empty, not valid Unicode, or too long
    (see :func:`check_query`)."""


class EmptyQueryError(InvalidQueryError):
    """The query is empty or only whitespace."""


class InvalidArgumentError(RagrouteError, ValueError):
    """An argument of the Python API has the wrong type or value (``k=0``, ``k=2.5``, a bare string
    where a list of queries is expected, filters that are not a mapping): one line, raised at the
    call rather than as an AttributeError from deep inside or, worse, as a silently empty result."""


def is_whole_number(value: Any) -> bool:
    """Whether ``value`` is a whole number: a Python or numpy integer (not a boolean), or a float
    with no fraction such as 3.0 (not NaN or infinite)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def check_k(k: Any, name: str = "k") -> int:
    """``k`` as an ``int`` (a Python or numpy integer, or a float with no fraction such as 3.0), at
    least 1; else :class:`InvalidArgumentError`."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a whole number >= 1, got {value_type_name(k)}")
    if not is_whole_number(k):
        raise InvalidArgumentError(f"{name} must be a whole number >= 1, got {k!r}")
    if k < 1:
        raise InvalidArgumentError(f"{name} must be >= 1, got {k!r}")
    return int(k)


def check_batch(values: Any, what: str = "queries") -> list[Any]:
    """``values`` as a list; a bare string (which would be split into one query per character) or a
    non-iterable is :class:`InvalidArgumentError`; so is a mapping, whose keys alone a list of it
    would hold (until session 51 ``retrieve_many({"q1": "text"})`` searched for ``q1``)."""
    if isinstance(values, (str, bytes)):
        raise InvalidArgumentError(f"{what} must be a list, not a single string (wrap it: [{values[:20]!r}])")
    if isinstance(values, Mapping):
        raise InvalidArgumentError(
            f"{what} must be a list, got {value_type_name(values)} (a list of it holds its keys alone: "
            "pass list(d.values()) for its values)"
        )
    try:
        return list(values)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be a list, got {value_type_name(values)}") from None


def check_booleans(values: Any, what: str, meaning: str, hint: str = "") -> list[Any]:
    """``values`` as a list of booleans (or 0/1 integers), else one :class:`RagrouteError` line
    ``WHAT must hold booleans (True: MEANING), got VALUE[: HINT]``: ``bool("no")`` is True, so a
    label string would silently mean True."""
    flags = check_batch(values, what)
    # a null (None) and integers other than 0 and 1 too: until session 55 None passed as False (the
    # None ``next`` returned for "nothing wrong" hid it) and a 2 or -1 as True
    for flag in flags:
        if not _is_flag(flag):
            raise RagrouteError(f"{what} must hold booleans (True: {meaning}), got {flag!r}{hint}")
    return flags


def _is_flag(value: Any) -> bool:
    """Whether ``value`` is a boolean (Python's or numpy's) or the integer 0 or 1."""
    if isinstance(value, (bool, np.bool_)):
        return True
    return isinstance(value, (int, np.integer)) and value in (0, 1)


def check_path(value: Any, needs: str) -> Any:
    """``value`` when it is a path (a ``str`` or an ``os.PathLike`` such as ``pathlib.Path``); else
    :class:`InvalidArgumentError` ``NEEDS, got TYPE`` (``load_corpus needs a file or folder path,
    got NoneType``) rather than the TypeError pathlib raises from inside."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError(f"{needs}, got {type(value).__name__}")
    return value


def check_encoder_object(encoder: Any, where: str) -> Any:
    """``encoder`` when it is ``None`` or an encoder object (``encode_queries``, as
    :func:`ragroute.encode.load_encoder` returns, or a stand-in naming its space with ``model_id``
    for vectors computed elsewhere); else :class:`InvalidArgumentError`. A model name or folder is
    refused with how to load it: the Python API takes encoder objects (names are the command
    line's and the configs'), so one loaded model serves every index and router."""
    if encoder is None or (
        not isinstance(encoder, (str, os.PathLike))
        and (hasattr(encoder, "encode_queries") or hasattr(encoder, "model_id"))
    ):
        return encoder
    if isinstance(encoder, (str, os.PathLike)):
        name = os.fspath(encoder)
        raise InvalidArgumentError(
            f"{where}: encoder= takes an encoder object, not the name {name!r}: load it with "
            f"ragroute.encode.load_encoder({name!r})"
        )
    raise InvalidArgumentError(
        f"{where}: encoder= takes an encoder object (ragroute.encode.load_encoder(NAME)), "
        f"got {type(encoder).__name__}"
    )


def check_query_vectors(vectors: Any, n: int, encoder: Any = None) -> np.ndarray:
    """``vectors`` as a 2-D array of one finite row per query (and of the ``encoder``'s dimension,
    when it says one), else :class:`InvalidArgumentError`: a router given one row
    for two queries answered one, and a NaN row routed by NaN probabilities (until session 37)."""
    array = np.asarray(vectors)
    dim = getattr(encoder, "dim", None)
    if array.ndim != 2 or array.shape[0] != n:
        raise InvalidArgumentError(
            f"query_vectors must hold one row per query ({n}), got shape {array.shape}"
        )
    if isinstance(dim, int) and array.shape[1] != dim:
        raise InvalidArgumentError(f"query_vectors have {array.shape[1]} dimensions; the encoder gives {dim}")
    if not np.isfinite(array).all():
        raise InvalidArgumentError("query_vectors hold NaN or infinity")
    return array


def check_document_ids(ids: Any) -> list[str]:
    """``ids`` as a list of document id strings; a bare string (which would be split into one id
    per character: ``delete("12")`` deleting "1" and "2") is :class:`InvalidArgumentError`."""
    out = check_batch(ids, "document ids")
    for value in out:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"document ids must be strings, got {value_type_name(value)}")
    return out


def check_filters(filters: Any) -> Any:
    """``filters`` when it is ``None`` or a mapping (metadata key -> value or list of values); else
    :class:`InvalidArgumentError` (a string would otherwise match nothing, silently). A value
    that cannot be compared by equality (a mapping such as ``{"$eq": "hr"}``) is refused too."""
    if filters is None:
        return filters
    if not isinstance(filters, Mapping):
        raise InvalidArgumentError(
            f"filters must be a mapping of metadata key to value, got {value_type_name(filters)}"
        )
    for key, value in filters.items():
        members = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        for member in members:
            try:
                hash(tuple(member) if isinstance(member, list) else member)
            except TypeError:
                raise InvalidArgumentError(
                    f"filters: {key!r} must be a value or a list of values (equality; a list matches "
                    f"any of them), not {type(member).__name__}: operators such as $eq are not supported"
                ) from None
    return filters


#: document fields that are not metadata: a filter naming one matches no document (filters match
#: metadata keys, and the fields ``modality`` and ``parent_id``), so it is refused with a hint
DOCUMENT_FIELDS = ("id", "doc_id", "title", "text")

#: how many of the keys the documents carry a refused filter key's message lists
LISTED_FILTER_KEYS = 8


def accepts_missing(wanted: Any) -> bool:
    """Whether a filter value admits ``None`` (null, or a list holding it): it then matches the
    documents that lack its key, so a key no document carries is not a mistake there (until session
    36 it was refused, and a routed query dropped exactly the sources that lack it)."""
    if wanted is None:
        return True
    return isinstance(wanted, (list, tuple, set, frozenset)) and any(v is None for v in wanted)


def check_filter_keys(
    filters: Mapping[str, Any] | None, carried: Iterable[str] | None, fields: Collection[str] = ()
) -> None:
    """Raise :class:`InvalidArgumentError` for the first key of ``filters`` that no document carries
    (a typo such as ``pth`` for ``path``, or a document field such as ``title``): such a filter
    matches nothing, and an empty answer would look like a true one. ``carried``: the metadata keys
    the documents hold (``None``: the documents are unknown, e.g. a framework's retriever or an
    empty index, and nothing is refused); ``fields``: keys matched by other means (``modality``,
    ``parent_id``, access labels), always allowed. One line, listing a few of the keys there are:
    ``filters: no document has metadata key 'pth' (keys: lang, path, year); did you mean 'path'?``"""
    if not filters or carried is None:
        return
    known = carried if isinstance(carried, (set, frozenset)) else frozenset(carried)
    for key in filters:
        if key in known or key in fields:  # the common case: no set built per query
            continue
        if accepts_missing(filters[key]):  # null matches documents without the key: all of them here
            continue
        listed = sorted(str(name) for name in known)
        shown = ", ".join(listed[:LISTED_FILTER_KEYS])
        if len(listed) > LISTED_FILTER_KEYS:
            shown += f", ... ({len(listed)} in all)"
        keys = f"keys: {shown}" if listed else "the documents carry no metadata"
        if str(key) in DOCUMENT_FIELDS:
            keys = f"a document field, not metadata; {keys}"
        guess = difflib.get_close_matches(str(key), listed, n=1, cutoff=0.6)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        raise InvalidArgumentError(f"filters: no document has metadata key {key!r} ({keys}){hint}")


def filter_value_kind(value: Any) -> str:
    """The kind of a metadata or filter value as a filter compares them, JSON's (``text``,
    ``number``: integer or not, ``boolean``: no number, ``null``, ``list``, ``mapping``): a filter
    value matches only values of its kind (:func:`check_filter_value_kinds`)."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "list"
    return "mapping" if isinstance(value, Mapping) else type(value).__name__


def check_filter_value_kinds(key: Any, wanted: Any, kinds: Collection[str] | None) -> None:
    """Raise :class:`InvalidArgumentError` when no value of the filter ``key`` = ``wanted`` (one
    value, or a list of them) is of a kind the documents' ``key`` values are (``kinds``:
    :func:`filter_value_kind` of each value, and of each item of a list value): it would match
    nothing, and an empty answer would look like a true one (``{"year": "2020"}`` against integer
    years, until session 52). ``kinds`` empty or ``None`` (unknown), a filter admitting ``None``
    (it matches a missing key) or one of no values refuses nothing. One line naming the key and
    both kinds: ``filters: 'year' is text ('2020') but the documents' 'year' values are numbers;
    filter on 2020``."""
    if not kinds or accepts_missing(wanted):
        return
    members = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    asked = {filter_value_kind(member) for member in members}
    if not members or asked & set(kinds):
        return
    first = members[0]
    held = " or ".join(_KIND_PLURALS.get(kind, kind) for kind in sorted(kinds))
    hint = ""
    if isinstance(first, str) and "number" in kinds and _spells_number(first):
        number = float(first)
        hint = f"; filter on {int(number) if number.is_integer() and 'e' not in first.lower() else number}"
    elif isinstance(first, str) and "boolean" in kinds and first.strip().lower() in ("true", "false"):
        hint = f"; filter on {first.strip().lower() == 'true'}"
    elif not isinstance(first, str) and "text" in kinds:
        hint = f"; filter on {str(first)!r}"
    value = repr(first) if len(repr(first)) <= 60 else repr(first)[:57] + "..."
    shown = f"{_KIND_NAMES.get(filter_value_kind(first), filter_value_kind(first))} ({value})"
    raise InvalidArgumentError(
        one_line(f"filters: {key!r} is {shown} but the documents' {key!r} values are {held}{hint}")
    )


#: how :func:`check_filter_value_kinds` names a filter value's kind, and the documents' kinds
_KIND_NAMES = {"text": "text", "number": "a number", "boolean": "a boolean", "list": "a list"}
_KIND_PLURALS = {"text": "text", "number": "numbers", "boolean": "booleans", "null": "null",
                 "list": "lists", "mapping": "mappings"}  # fmt: skip


class CorpusFormatError(RagrouteError, ValueError):
    """A corpus file cannot be parsed (bad UTF-8, broken JSON, missing column...)."""


class ArtifactFormatError(RagrouteError):
    """A stored artifact (index, router, ...) is missing, incomplete, corrupt, or of an unknown format."""


class IndexFormatError(ArtifactFormatError):
    """An index directory is missing, incomplete, corrupt, or of an unknown format."""


class UnknownKindError(RagrouteError, KeyError):
    """A configuration names a kind (index, router, fusion...) that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EncoderMismatchError(RagrouteError):
    """An index is queried with an encoder other than the one that built it."""


class ModelNotFoundError(RagrouteError):
    """An encoder name or path does not resolve to a model available offline."""


class SourceWarning(UserWarning):
    """A configured source was left out (its index is missing or broken, its factory failed...);
    the pipeline still runs without it and reports it in every decision (``unavailable_sources``)."""


class CalibrationWarning(UserWarning):
    """A router's softmax temperature was fitted at an end of the values it tries: the lowest when
    the calibration queries separate the routes perfectly (every query then reads as certain, one
    from no source too), the highest when the scores barely tell the routes apart."""


#: the longest query :func:`check_query` accepts, in characters (encoders read at most a few
#: hundred tokens of it; a longer one is a mistake, e.g. a whole file passed as the query)
MAX_QUERY_CHARS = 100_000

#: Unicode categories of characters that are not content: controls (NUL...), format characters
#: (zero-width spaces, direction marks, the BOM) and separators
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def has_visible_text(text: str) -> bool:
    """Whether ``text`` holds a character that is not whitespace, a control or a format character
    (zero-width spaces, direction marks, the BOM): a query or document of none has nothing to match."""
    return any(unicodedata.category(char) not in _INVISIBLE for char in text)


def check_query(text: str, what: str = "query") -> str:
    """Return ``text`` stripped, or raise an :class:`InvalidQueryError` (one line) when it cannot be
    searched with.

    Refused (never repaired, so a query is never silently changed): ``None``, an empty or
    whitespace-only text (:class:`EmptyQueryError`), any other non-string, text that is not valid
    Unicode (a lone surrogate, e.g. the undecodable bytes Python keeps from a command line in
    another encoding than UTF-8), and text longer than :data:`MAX_QUERY_CHARS`. Control characters
    (NUL included) are kept: they are valid text and the tokenizers treat them as separators; but a
    text of nothing else (NUL, zero-width spaces, direction marks, a BOM) is refused as empty, since it
    has nothing to search with and would still return the nearest documents.

    ``what`` names the text in the messages (``TEXT 2 is empty or whitespace only``): a text to
    score against a query is refused alike.
    """
    if not isinstance(text, str):  # None is no query (empty); 123 is not empty, but not text
        error = EmptyQueryError if text is None else InvalidQueryError
        raise error(f"{what} must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise EmptyQueryError(f"{what} is empty or whitespace only")
    if not has_visible_text(stripped):
        raise EmptyQueryError(
            f"{what} has no visible characters (only control or format characters such as NUL, "
            f"first U+{ord(stripped[0]):04X})"
        )
    if len(stripped) > MAX_QUERY_CHARS:
        raise InvalidQueryError(
            f"{what} is {len(stripped):,} characters long; the limit is {MAX_QUERY_CHARS:,}"
        )
    problem = lone_surrogate(stripped)
    if problem is not None:
        raise InvalidQueryError(f"{what} is not valid text: {problem}")
    return stripped


def argument_text(text: str) -> str:
    """``text``, an argument Python decoded from the command line or a file name from the file
    system, with its undecodable bytes read as UTF-8 where they are UTF-8. Under a C or POSIX locale
    without UTF-8 mode (``LC_ALL=C PYTHONUTF8=0``) Python keeps every byte past ASCII as a lone
    surrogate (``U+DCxx``), so ``東京`` typed there was refused as "undecodable byte 0xe6 (not
    UTF-8)" until session 52. Bytes that are not UTF-8 (a latin-1 terminal) stay as they are, for
    :func:`lone_surrogate` to name; under a UTF-8 locale nothing changes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return text


def lone_surrogate(value: Any) -> str | None:
    """Where the first lone surrogate is in ``value`` (a string, or the keys and values of nested
    mappings and lists), as a one-line description; ``None`` when every string is valid Unicode.

    Lone surrogates are not text: no encoder, tokenizer or UTF-8 file can take them. They come from
    undecodable bytes (Python's ``surrogateescape``: ``U+DC80``-``U+DCFF`` stand for the bytes
    0x80-0xFF) and from ``\\ud800``-style escapes in JSON and YAML.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                code = ord(item[exc.start])
                if 0xDC80 <= code <= 0xDCFF:
                    return f"undecodable byte 0x{code - 0xDC00:02x} at character {exc.start + 1} (not UTF-8)"
                return f"lone surrogate U+{code:04X} at character {exc.start + 1}"
        # pushed last first, so the first one written is found first (until session 55 the last
        # string of a list was read first, and a message named a later lone surrogate)
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                stack.extend((child, key))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
    return None


#: what :func:`check_setting` accepts per expected type
_SETTING_TYPES = {
    "number": "a number",
    "number_or_auto": 'a number or "auto"',
    "integer": "an integer",
    "string": "a string",
    "boolean": "true or false",
    "strings": "a list of strings",
    "list": "a list",
    "mapping": "a mapping",
}


def value_type_name(value: Any) -> str:
    """How a configuration value's type is named in messages (``a list``, ``a string``, ``empty``)."""
    if value is None:
        return "empty (null)"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", tuple: "a list"}  # fmt: skip
    return names.get(type(value), f"a {type(value).__name__}")


def not_a_number_shown(value: Any) -> str:
    """How an error shows a value that is no finite number where one is expected: a float as it is
    (``nan``), a whole number too large for a float as such, anything else by its type."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return "an integer past a float's range"
    return value_type_name(value)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a real number (Python's or numpy's, not a boolean) that is finite, as a
    float too: an integer past a float's range (JSON's ``1`` and 400 zeros) is not (until session 51
    ``math.isfinite`` raised OverflowError on it, a traceback from whatever checked the value)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_setting(
    value: Any,
    expected: str,
    where: str,
    key: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    optional: bool = False,
) -> Any:
    """``value`` of setting ``key`` when it has the ``expected`` type (``number``, ``number_or_auto``,
    ``integer``, ``string``, ``boolean``, ``strings``, ``list``, ``mapping``) and lies in
    [``minimum``, ``maximum``] (above 0 when ``positive``); else a one-line :class:`RagrouteError`
    naming the expected type: ``routing.yaml: router: 'threshold' must be a number, not a list``.
    ``optional``: ``None`` passes."""
    if value is None and optional:
        return value
    if expected == "number_or_auto" and value == "auto":
        return value
    if expected in ("number", "number_or_auto"):
        # an integer past a float's range is no number a setting can be (OverflowError until session 51)
        ok = isinstance(value, (int, float)) and is_finite_number(value)
    elif expected == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected == "string":
        ok = isinstance(value, str)
    elif expected == "boolean":
        ok = isinstance(value, bool)
    elif expected == "strings":
        ok = isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
    elif expected == "list":
        ok = isinstance(value, (list, tuple))
    elif expected == "mapping":
        ok = isinstance(value, dict)
    else:
        raise ValueError(f"unknown setting type {expected!r}")
    prefix = f"{where}: " if where else ""
    if not ok:
        numeric = expected in ("number", "number_or_auto")
        got = not_a_number_shown(value) if numeric or isinstance(value, float) else value_type_name(value)
        hint = number_text_hint(value) if numeric else ""
        odd = value
        if expected == "strings" and isinstance(value, (list, tuple)):
            odd = next(item for item in value if not isinstance(item, str))
            got = f"a list holding {value_type_name(odd)} ({odd!r})"
        if expected in ("string", "strings") and isinstance(odd, bool):
            hint = " (YAML reads unquoted yes, no, on, off, true and false as booleans: quote them, 'yes')"
        raise RagrouteError(f"{prefix}{key!r} must be {_SETTING_TYPES[expected]}, not {got}{hint}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if minimum is not None and value < minimum:
            raise RagrouteError(f"{prefix}{key!r} must be at least {minimum:g}, not {value!r}")
        if maximum is not None and value > maximum:
            raise RagrouteError(f"{prefix}{key!r} must be at most {maximum:g}, not {value!r}")
        if positive and value <= 0:
            raise RagrouteError(f"{prefix}{key!r} must be above 0, not {value!r}")
    return value


def check_listed_setting(
    key: str,
    value: Any,
    types: Mapping[str, tuple[str, float | None]],
    where: str,
    *,
    maxima: Mapping[str, float] | None = None,
    positive: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> None:
    """:func:`check_setting` for a section whose settings are listed in ``types`` (key -> expected
    type and least value), with per-key ``maxima``, keys that must be ``positive`` and keys that
    may be ``optional`` (null); a key not listed is checked where it is read."""
    if key not in types:
        return
    expected, minimum = types[key]
    check_setting(
        value,
        expected,
        where,
        key,
        minimum=minimum,
        maximum=(maxima or {}).get(key),
        positive=key in positive,
        optional=key in optional,
    )


def _spells_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def number_text_hint(value: Any) -> str:
    """Why a YAML number came as text, for an error that refuses it (`` ('5e-1': YAML reads an
    exponent without a dot as text; write it as 1.0e-9 does)``), or ``""`` when ``value`` is no
    text spelling a number."""
    if not isinstance(value, str) or not _spells_number(value):
        return ""
    if "e" in value.lower():
        return f" ({value!r}: YAML reads an exponent without a dot as text; write it as 1.0e-9 does)"
    return f" ({value!r} is in quotes: write the number without them)"


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, at most ``limit`` characters: how a failure a stage kept going
    past (a source, a gate, a reranker, an LLM call) is written into a trace."""
    text = f"{type(exc).__name__}: {one_line(str(exc))}"
    # a lone surrogate in the message (undecodable bytes an error quotes) as a \udXXX escape: the
    # trace it goes in is printed and written as UTF-8 (`ragroute ask --json` raised on one); cut
    # after escaping (until session 55 before, and each escape made the line 5 characters longer)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when the message is empty: what a
    one-line error quotes of a third-party failure."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def is_one_line(message: str) -> bool:
    """Whether an error message is what the rules ask of every error a user can trigger: one line,
    not empty."""
    return bool(message.strip()) and _LINE_BREAK.search(message) is None


#: how the lines of click's own usage-error output begin (``ragroute`` says one ``error:`` line instead)
CLICK_USAGE_LINES = ("Usage: ", "Try '", 'Try "', "Error: ")


def is_one_line_error_output(stderr: str) -> bool:
    """Whether what a failed command wrote on stderr is one error line: exactly one ``error: ...``
    line with a message, the last one (what the command said before it, a ``warning: ...``, is
    allowed). A traceback anywhere, click's own usage dump (``Usage: ...``, ``Try '... --help'``,
    ``Error: ...``), a second error line, or a message running on below its ``error:`` line is not."""
    if "Traceback (most recent call last)" in stderr:
        return False
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    return (
        len(errors) == 1
        and lines[-1] == errors[0]
        and len(errors[0].strip()) > len("error:")
        and not any(line.startswith(CLICK_USAGE_LINES) for line in lines)
    )


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error (permissions, a missing folder, a file where a folder
    should be, a full disk...): ``/data/idx/builds: Permission denied``.

    The CLI prints it as ``error: ...`` and exits with status 2: such errors come from the
    environment the user gave a command, not from a bug.
    """
    reason = exc.strerror or one_line(str(exc)) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device (the disk is full)"
    elif exc.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    names = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return one_line(f"{' -> '.join(names)}: {reason}" if names else reason)


def refused_path_message(exc: OSError, default: Any) -> str:
    """``WHERE: REASON`` for a path the operating system refused to open or look at (a name too
    long, a link loop...): the path it names (else ``default``), cut to 200 characters, and why."""
    where = str(exc.filename or default)
    where = where if len(where) <= 200 else where[:200] + "..."
    return f"{where}: {exc.strerror or exc}"


def is_nul_path_error(exc: ValueError) -> bool:
    """Whether ``exc`` is Python refusing a path with a NUL character in it."""
    return "null byte" in str(exc)


def unknown_keys_message(unknown: Iterable[Any], known: Iterable[Any], what: str = "key") -> str:
    """One line for ``unknown`` keys of a mapping: each with the closest ``known`` one when there is one.

    ``unknown key 'sorces'; did you mean 'sources'?``; when some key is like no known one, the
    known ones are listed (``unknown key 'zzz'; known: a, b``). Every loader that refuses keys
    (routing configs, corpus definitions, router, reranker, gate, llm and policy settings) says it
    this way.
    """
    keys = [str(key) for key in unknown]
    choices = sorted({str(key) for key in known})
    guesses = {key: difflib.get_close_matches(key, choices, n=1, cutoff=0.6) for key in keys}
    listed = "; known: " + (", ".join(choices) or "none")
    if len(keys) == 1:
        key = keys[0]
        tail = f"; did you mean {guesses[key][0]!r}?" if guesses[key] else listed
        return f"unknown {what} {key!r}{tail}"
    parts = [f"{key!r} (did you mean {guesses[key][0]!r}?)" if guesses[key] else repr(key) for key in keys]
    tail = "" if all(guesses.values()) else listed
    return f"unknown {what}s {', '.join(parts)}{tail}"


def not_one_of(what: str, value: Any, allowed: Iterable[Any]) -> str:
    """One line for a setting whose value is none of ``allowed``: ``granularity 'sectoin' is not
    one of paragraph, section, document; did you mean 'section'?`` (the guess when one is close)."""
    choices = [str(choice) for choice in allowed]
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return f"{what} {value!r} is not one of {', '.join(choices)}{guess}"


def check_keys(
    mapping: Iterable[Any],
    known: Iterable[Any],
    where: str,
    what: str = "key",
    error: type[RagrouteError] = RagrouteError,
) -> None:
    """Raise ``error`` (``"WHERE: unknown key 'x'; did you mean 'y'?"``) for keys of ``mapping``
    not in ``known``, in the order written."""
    allowed = {str(key) for key in known}
    unknown = [key for key in mapping if str(key) not in allowed]
    if unknown:
        prefix = f"{where}: " if where else ""
        raise error(prefix + unknown_keys_message(unknown, allowed, what))
