"""Errors raised by ragroute.

Every error a user can trigger with bad input is a :class:`RagrouteError` whose
message is one line naming the problem; the CLI prints it as ``error: ...`` and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


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


def check_query(text: str) -> str:
    """Return ``text`` stripped, or raise :class:`EmptyQueryError` if nothing is left."""
    if not isinstance(text, str):
        raise EmptyQueryError(f"query must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise EmptyQueryError("query is empty or whitespace only")
    return stripped
