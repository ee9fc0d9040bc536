"""Errors raised by ragroute.

Every error a user can trigger with bad input is a :class:`RagrouteError` whose
message is one line naming the problem; the CLI prints it as ``error: ...`` and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class RagrouteError(Exception):
    """Base class of user-facing errors: the message is one line, fit for a terminal."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class EmptyQueryError(RagrouteError, ValueError):
    """The query is empty or only whitespace."""


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


def check_query(text: str) -> str:
    """Return ``text`` stripped, or raise :class:`EmptyQueryError` if nothing is left."""
    if not isinstance(text, str):
        raise EmptyQueryError(f"query must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise EmptyQueryError("query is empty or whitespace only")
    return stripped


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
