"""The retriever protocol: one interface for every source ragroute can search."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ragroute.types import Hit


@runtime_checkable
class Retriever(Protocol):
    """Anything that answers a text query with ranked :class:`~ragroute.types.Hit` s.

    ``name`` is the source name stamped on every hit. ``filters`` keeps only
    documents whose metadata equals each given value (a list/tuple/set value
    means "any of these").
    """

    name: str

    def search(self, query: str, k: int = 10, *, filters: Mapping[str, Any] | None = None) -> list[Hit]: ...

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]: ...
