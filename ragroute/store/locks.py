"""Advisory file locks for artifact writers and readers, and the crash points of the kill harness.

* :func:`writer_lock` — one writer per artifact (or per cache entry): an exclusive
  ``flock`` on a lock file, held from the start of a write until it is published.
  A second writer *waits* for it (up to :func:`lock_timeout` seconds, then a
  one-line :class:`ArtifactBusyError`); the lock belongs to the open file, so a
  killed writer never leaves a stale lock behind. Re-entrant within one thread,
  so a read-modify-write (``graph add``) can hold it around its own write.
  Holding the lock also proves that every temporary folder of that artifact is
  debris of a dead writer, which is what lets writers clean them up safely.
* :func:`try_exclusive` / :func:`shared` — a reader holds a shared lock on the
  manifest of the build it reads; the pruner deletes a build only when it can
  take the exclusive lock, so a build is never removed under a reader.
* :func:`crash_point` — with ``RAGROUTE_KILL_AT=N`` in the environment the
  process SIGKILLs itself at the N-th crash point it passes (a real kill, placed
  between the steps of a write), and with ``RAGROUTE_KILL_TRACE=FILE`` it appends
  every crash point's name to ``FILE``; used by :mod:`ragroute.reliability.kill`.
  Without those variables it does nothing.

Where ``flock`` is not supported (some network file systems) the locks degrade
to no-ops and writers fall back to age-based cleanup.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ragroute.errors import RagrouteError

LOCK_NAME = ".lock"
LOCK_TIMEOUT_ENV = "RAGROUTE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 600.0
KILL_AT_ENV = "RAGROUTE_KILL_AT"
KILL_TRACE_ENV = "RAGROUTE_KILL_TRACE"
_POLL_SECONDS = 0.05
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class ArtifactBusyError(RagrouteError):
    """Another process kept writing the same artifact (or cache entry) longer than the lock timeout."""


def lock_timeout() -> float:
    """Seconds a writer waits for another writer of the same artifact (``RAGROUTE_LOCK_TIMEOUT``)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "")
    if not raw.strip():
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise RagrouteError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:  # until session 41 nan (and -5) became 0: no wait at all
        raise RagrouteError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds >= 0 (finite)")
    return value


class _Held(threading.local):
    def __init__(self) -> None:
        self.locks: dict[str, tuple[int, int, bool]] = {}  # path -> (fd, depth, locked)


_HELD = _Held()


@contextlib.contextmanager
def writer_lock(lock_file: str | Path, what: str, *, timeout: float | None = None) -> Iterator[bool]:
    """Hold the exclusive lock ``lock_file`` (created if missing) for the body.

    Yields whether the lock is real (``False`` where the file system has no
    ``flock``). Waits up to ``timeout`` seconds (default :func:`lock_timeout`) for
    another holder, then raises :class:`ArtifactBusyError` naming ``what`` and the
    holder's pid.
    """
    key = os.path.abspath(lock_file)
    held = _HELD.locks.get(key)
    if held is not None:  # re-entered by the thread that holds it
        fd, depth, locked = held
        _HELD.locks[key] = (fd, depth + 1, locked)
        try:
            yield locked
        finally:
            fd, depth, locked = _HELD.locks[key]
            _HELD.locks[key] = (fd, depth - 1, locked)
        return
    wait = lock_timeout() if timeout is None else timeout  # a bad setting fails before the lock file is made
    fd = _open_lock_file(key, what)
    try:
        locked = _acquire(fd, key, what, wait)
        if locked:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        _HELD.locks[key] = (fd, 1, locked)
        try:
            yield locked
        finally:
            _HELD.locks.pop(key, None)
    finally:
        os.close(fd)  # releases the lock


def _open_lock_file(key: str, what: str) -> int:
    """Open (or create) the lock file, never through a link and only a regular file: the lock
    file is truncated and written (the holder's pid). Until session 41 a ``.lock`` that was a
    symbolic link (an artifact folder from elsewhere) had the file it pointed to, anywhere,
    truncated and overwritten by ``build --out`` and ``inspect --clean``."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(key, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(key):
            raise RagrouteError(
                f"refusing to lock {what}: its lock file {key} is a symbolic link (to "
                f"{os.readlink(key)}); ragroute never writes through one - remove the link"
            ) from None
        raise RagrouteError(f"cannot write {what}: {exc.strerror or exc} ({key})") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise RagrouteError(f"cannot write {what}: {exc.strerror or exc} ({key})") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise RagrouteError(f"refusing to lock {what}: its lock file {key} is not a regular file; remove it")
    return fd


def _acquire(fd: int, key: str, what: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in _BUSY:
                return False  # no flock here (ENOLCK, EOPNOTSUPP...): unlocked mode
        if time.monotonic() >= deadline:
            raise ArtifactBusyError(
                f"another process (pid {_holder(fd)}) is writing {what}; waited {timeout:g} s "
                f"(set {LOCK_TIMEOUT_ENV} to wait longer) - try again when it has finished"
            )
        time.sleep(_POLL_SECONDS)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):  # read through the open lock file, not its name
        return str(int(os.pread(fd, 64, 0).decode().strip()))
    return "?"


def try_exclusive(fd: int) -> bool:
    """Take the exclusive lock of an open file without waiting; ``True`` also where flock is missing."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        return exc.errno not in _BUSY


def shared(fd: int) -> None:
    """Take a shared lock on an open file, waiting for an exclusive holder (a pruner, briefly)."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_SH)


_KILL_AT = os.environ.get(KILL_AT_ENV, "")
_KILL_TRACE = os.environ.get(KILL_TRACE_ENV, "")
_passed = 0


def crash_point(name: str) -> None:
    """A point where the kill harness may SIGKILL this process (see the module docstring)."""
    global _passed
    if not (_KILL_AT or _KILL_TRACE):
        return
    _passed += 1
    if _KILL_TRACE:
        with open(_KILL_TRACE, "a", encoding="utf-8") as handle:
            handle.write(f"{_passed}\t{name}\n")
    if _KILL_AT and _KILL_AT.isdigit() and _passed == int(_KILL_AT):
        os.kill(os.getpid(), signal.SIGKILL)
