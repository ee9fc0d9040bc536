"""A readers-writer lock for a document store and the indexes over it.

Searches read (many at once); ``add`` and ``delete`` write (alone). Without it a search could
run while an index changed under it: faiss crashed when an HNSW index was searched during an
insert, and a search could read positions of one document list and documents of another (a hit
built from the wrong document, an access mask of the old list served to later callers).

Reads are re-entrant: a thread already reading never waits. A new reader lets a writer that is
waiting go first, so searches that keep overlapping cannot hold an ``add`` back for ever (with
readers first, four threads searching a 3,000-document index without pause kept one ``add``
waiting for minutes). A reader defers to a waiting writer for at most :data:`DEFER_S` seconds,
then goes in anyway: a thread that holds a read and waits for another thread wanting a new read
(work handed to a pool inside a search) would otherwise wait with the writer for ever. Nothing in
ragroute waits so (a hybrid index's two phases wait for their pool scans before reading again);
the bound makes a caller's own such wait a pause, not a hang. A writer waits for the readers
inside to leave, and may write again or read inside its own write; a write from inside a read of
the same thread (a callback changing the index it is searched from) is refused in one line rather
than waiting for itself. Copies and pickles of a store get a fresh lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from ragroute.errors import RagrouteError

#: The longest a new reader lets a waiting writer go first (seconds); see the module docstring.
DEFER_S = 0.5


class ReadWriteLock:
    """Many readers or one writer (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting = 0  # writers waiting: new readers let them go first (for up to DEFER_S)
        self._held = threading.local()  # per thread: how many reads it holds

    def reading(self) -> AbstractContextManager[None]:
        """Hold a read (see the module docstring): ``with lock.reading(): ...``."""
        return _Read(self)

    def _enter_read(self) -> None:
        """Count a thread's first read in, after any writer inside (and, for up to
        :data:`DEFER_S`, any waiting) has gone."""
        with self._cond:
            deadline = None
            while self._writer is not None or self._waiting:
                if self._writer is None:  # only waiting writers: defer to them, for a while
                    deadline = deadline or time.monotonic() + DEFER_S
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            self._readers += 1

    def _leave_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        me = threading.get_ident()
        reads: int = getattr(self._held, "reads", 0)
        if self._writer != me and reads > 0:
            raise RagrouteError(
                "an index cannot be changed from inside a search of it (its own thread would wait "
                "for itself): add or delete after the search returns"
            )
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
                    self._cond.notify_all()  # readers deferring to this writer see it go in (or give up)
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._cond.notify_all()

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadWriteLock:
        return ReadWriteLock()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (ReadWriteLock, ())


class _Read:
    """One read of a :class:`ReadWriteLock`. A thread's reads inside its own read or write only
    count on the thread (the outer one keeps writers out), so the nested reads a search makes
    (store, index, mask: dozens per routed query) take no lock."""

    __slots__ = ("_lock", "_counted")

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock
        self._counted = False

    def __enter__(self) -> None:
        lock = self._lock
        held = lock._held
        reads: int = getattr(held, "reads", 0)
        # only this thread sets _writer to its own id: comparing without the lock is safe
        if not reads and lock._writer != threading.get_ident():
            lock._enter_read()
            self._counted = True
        held.reads = reads + 1

    def __exit__(self, *exc: object) -> None:
        self._lock._held.reads -= 1
        if self._counted:
            self._lock._leave_read()


def reading(retriever: Any) -> AbstractContextManager[Any]:
    """Hold ``retriever``'s documents still (its document store's read lock; a retriever without
    one, such as a framework's, gets a no-op): what a router reading documents and their vectors
    outside a search takes, so both come from one version."""
    store = getattr(retriever, "store", None)
    read = getattr(store, "reading", None)
    return read() if callable(read) else nullcontext()
