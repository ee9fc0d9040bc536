"""Memos: scoped to one decision (:func:`scoped_memo`: a computation several stages or signals need
for the same query is done once inside the block, and nothing is kept after it, so a repeated query
costs what a new one costs), and kept while the retrievers they were computed over live
(:class:`RetrieverMemo`)."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RetrieverMemo(Generic[T]):
    """Values computed over a set of retrievers (a pipeline's score maps, its fusion statistics),
    kept while those retrievers live: a pipeline loaded again over the same indexes reuses them.

    An entry is found by its key and only when it was computed over these very retrievers (an
    ``id`` in the key can be reused after garbage collection); entries whose retrievers are gone
    are dropped whenever one is added (a service reloading its config kept one per load)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple[Any, ...], T]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, retrievers: Sequence[Any]) -> T | None:
        with self._lock:
            entry = self._entries.get(key)
        # as many retrievers too: zip stopped at the shorter list until session 55
        if entry is None or len(entry[0]) != len(retrievers):
            return None
        if all(ref() is r for ref, r in zip(entry[0], retrievers)):
            return entry[1]
        return None

    def put(self, key: Hashable, retrievers: Sequence[Any], value: T) -> None:
        with self._lock:
            self._entries = {k: e for k, e in self._entries.items() if all(ref() is not None for ref in e[0])}
            self._entries[key] = (tuple(_ref(r) for r in retrievers), value)


def _ref(obj: Any) -> Any:
    try:
        return weakref.ref(obj)
    except TypeError:  # an object without weak references: kept alive with its entry
        return lambda: obj


@contextlib.contextmanager
def scoped_memo(var: contextvars.ContextVar[Any]) -> Iterator[None]:
    """Open an empty memo dict in ``var`` for the block; a block already inside one keeps it (the
    outermost block owns the memo). Thread- and task-local, as context variables are."""
    if var.get() is not None:
        yield
        return
    token = var.set({})
    try:
        yield
    finally:
        var.reset(token)
