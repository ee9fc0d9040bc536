"""Writing and reading artifact folders so that readers never see a half-written or mixed build.

Layout of an artifact folder ``NAME/``::

    NAME/CURRENT                      one JSON line: the published build and its manifest's sha256
    NAME/.lock                        the writers' lock (see ragroute.store.locks)
    NAME/builds/<build-id>/           one immutable folder per build
        manifest.json                 see ragroute.store.manifest
        ...                           the artifact's own files

A write takes the artifact's writer lock (a second writer of the same artifact waits for it,
then publishes after it; after ``RAGROUTE_LOCK_TIMEOUT`` seconds, 600 by default, it gives up
with a one-line :class:`ArtifactBusyError`), removes the temporary folders of writers that died
(holding the lock proves no live writer owns them), fills a fresh temporary folder, checksums
it, renames it into ``builds/`` under a fresh id that sorts after every build's (the clock,
unless it went back), then atomically replaces ``CURRENT`` (write a temporary file,
``os.replace``): one step a kill cannot leave half done. A build killed at any point leaves the
previous build published. After publishing, every build but the current and the previous one is
removed, except a build a reader still holds: readers take a shared lock on the manifest of the
build they read, and a build is removed only under the exclusive lock (renamed aside first, so
no reader can open it afterwards). :func:`clean_artifact` does the same cleaning without writing
(``ragroute inspect PATH --clean``).

A reader (:func:`read_artifact`) resolves ``CURRENT`` once, checks the manifest
against the pointer, the manifest against its own checksum and every file
against the manifest, and reads files of that build only, under its shared
lock. Should the build vanish anyway (a file system without ``flock``), it starts
again from the new pointer rather than mix builds. Folders written by ragroute
0.1 (``manifest.json`` at the top, format ``ragroute-index`` v1) are still read,
without the consistency guarantee.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from ragroute.errors import ArtifactFormatError, is_nul_path_error, refused_path_message
from ragroute.store.locks import LOCK_NAME, crash_point, shared, try_exclusive, writer_lock
from ragroute.store.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ArtifactManifest,
    NotRegularFileError,
    open_regular,
    read_manifest_or_none,
    read_regular,
    sha256_file,
    write_synced,
)
from ragroute.store.outside import (
    PENDING_PREFIX,
    build_manifests,
    outside_writes,
    release_outside,
    settle_dead_notes,
)

POINTER_NAME = "CURRENT"
BUILDS_DIR = "builds"
LEGACY_FORMAT = "ragroute-index"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
# in builds/ and never a build: temporary folders, builds being removed, notes (ragroute.store.outside)
DEBRIS_PREFIXES = (TMP_PREFIX, TRASH_PREFIX, PENDING_PREFIX, f".draft{PENDING_PREFIX}")
_STALE_TMP_SECONDS = 3600
_DRAFT_SECONDS = 60  # a note is renamed into place right after it is written
_READ_ATTEMPTS = 5
_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# what a write, flush or fsync says when the data did not reach the disk: it names no file
_DATA_LOST = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG)

T = TypeVar("T")


@dataclass
class Snapshot:
    """One published build of an artifact: read every file through :meth:`file`."""

    root: Path
    path: Path
    manifest: ArtifactManifest
    legacy: bool = False

    def file(self, name: str) -> Path:
        """Path of a file of this build (it must be listed in the manifest)."""
        if name not in self.manifest.files:
            raise ArtifactFormatError(f"{self.root}: build {self.manifest.build} has no file {name!r}")
        return self.path / name

    def has(self, name: str) -> bool:
        return name in self.manifest.files


@dataclass
class PendingBuild:
    """A build being written: put files under ``path``; ``manifest`` may still be edited."""

    path: Path
    manifest: ArtifactManifest


def artifact_exists(root: str | Path) -> bool:
    """Whether ``root`` holds a published artifact (a pointer, or a 0.1 manifest); ``False`` for a
    path the system cannot even look at (a name too long, a loop of links...)."""
    root = Path(root)
    try:
        return (root / POINTER_NAME).is_file() or (root / MANIFEST_NAME).is_file()
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False


def holds_artifact(root: str | Path) -> bool:
    """Whether ``root`` is a folder ragroute wrote, which a build may replace and a cleaner
    clean: its ``CURRENT`` names a build under ``builds/`` that exists; or, the pointer damaged
    (a rebuild is how it is repaired), ``builds/`` holds a build whose manifest is ragroute's;
    or its ``manifest.json`` is a 0.1 index's (format ``ragroute-index``, the name kept even in a
    damaged one). Until session 41 any file named ``CURRENT`` or ``manifest.json`` made a folder
    an artifact (:func:`artifact_exists`, which readers still use to say what is wrong): a
    web app's folder was built over and the files its ``manifest.json`` listed deleted, a
    LevelDB folder's ``CURRENT`` overwritten."""
    root = Path(root)
    try:
        if not root.is_dir():
            return False
        pointer = root / POINTER_NAME
        if os.path.lexists(pointer) and not pointer.is_symlink():
            with contextlib.suppress(ArtifactFormatError, OSError):
                build = root / BUILDS_DIR / _read_pointer(root, ArtifactFormatError)["build"]
                if build.is_dir() and not build.is_symlink():
                    return True
            if _has_own_build(root):
                return True
        return _is_legacy_manifest(root / MANIFEST_NAME)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False


def _has_own_build(root: Path) -> bool:
    """Whether ``root/builds`` (a real folder) holds a build whose manifest names ragroute's format."""
    builds = root / BUILDS_DIR
    if builds.is_symlink() or not builds.is_dir():
        return False
    return any(_is_own_build(build) for build in builds.iterdir())


def _is_own_build(build: Path) -> bool:
    """Whether ``build`` is a real folder named like a build whose manifest names ragroute's format."""
    if build.name.startswith(".") or not _BUILD_ID.match(build.name) or build.is_symlink():
        return False
    with contextlib.suppress(OSError):
        return f'"{FORMAT_NAME}"'.encode() in read_regular(build / MANIFEST_NAME, 1 << 20)
    return False


def _is_legacy_manifest(path: Path) -> bool:
    """Whether ``path`` is the manifest of a 0.1 index folder (also when damaged: its format's
    name is still in it)."""
    try:
        raw = read_regular(path, 1 << 24)
    except OSError:
        return False
    with contextlib.suppress(ValueError):
        data = json.loads(raw.decode("utf-8"))
        return isinstance(data, dict) and data.get("format") == LEGACY_FORMAT
    return f'"{LEGACY_FORMAT}"'.encode() in raw


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once, at import (os.umask is process-wide: not around each build)

_WRITING: set[str] = set()  # temporary folders this process is filling now (never cleaned)


@contextlib.contextmanager
def write_artifact(
    target: str | Path,
    family: str,
    kind: str,
    *,
    name: str = "",
    params: dict[str, Any] | None = None,
    encoder: dict[str, Any] | None = None,
    error: type[ArtifactFormatError] = ArtifactFormatError,
    supersedes: Sequence[str] = (),
) -> Iterator[PendingBuild]:
    """Write a new build of the artifact at ``target`` and publish it when the body succeeds.

    If the body raises (or the process dies), nothing is published and the
    previous build stays current; the temporary folder is removed on exceptions
    (and, after a kill, by the next writer). Holds the artifact's writer lock
    throughout (see the module docstring). ``supersedes``: the files of this family's 0.1
    layout (e.g. a trained router's ``router.json``): a folder holding only those is rewritten
    in place, and they are removed once the new build is published.
    """
    target = _writable_target(target, error, supersedes)
    builds = target / BUILDS_DIR
    builds.mkdir(parents=True, exist_ok=True)
    manifest = ArtifactManifest(
        family=family, kind=kind, params=dict(params or {}), encoder=encoder, name=name
    )
    with writer_lock(target / LOCK_NAME, str(target)) as locked:
        crash_point("write: locked")
        check_replaceable(target, family, error)
        _clean_debris(target, locked)
        # builds a dead (or failed) writer renamed in but never published: after this publish they
        # would sort below it and be kept as "the previous build" in place of the one published
        # now (until session 49 the build published before this write was pruned instead)
        _prune(target, locked, unpublished_only=True)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=builds))
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it 0700: a published build reads like any folder
        _WRITING.add(str(tmp))
        crash_point("write: temporary folder made")
        try:
            yield PendingBuild(tmp, manifest)
            crash_point("write: files written")
            _publish(target, tmp, manifest)
            for name in supersedes:  # the 0.1 files this build replaces (readers now follow CURRENT)
                with contextlib.suppress(OSError):
                    (target / name).unlink()
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.filename is None and exc.errno in _DATA_LOST:
                # a failed write() or fsync() names no file: until session 53 a full disk was
                # "error: no space left on device (the disk is full)", with no word of where
                raise OSError(exc.errno, exc.strerror, str(target)) from exc
            raise
        finally:
            _WRITING.discard(str(tmp))
        _prune(target, locked)
        crash_point("write: done")


def _remove_unpublished(target: Path, build: str) -> None:
    """After a publish that failed (a full disk while writing the pointer...): remove the build it
    renamed into ``builds/`` and its pointer file, unless the pointer names it (it was published).
    Until session 49 they stayed (the build, a whole copy of the artifact, until two more writes)."""
    with contextlib.suppress(OSError):
        (target / f".{POINTER_NAME}.{build}").unlink(missing_ok=True)
    try:
        if _read_pointer(target, ArtifactFormatError)["build"] == build:
            return
    except FileNotFoundError:
        pass  # a first build: nothing is published
    except (ArtifactFormatError, OSError):
        return  # unclear which build is published: the next writer's lock settles it
    shutil.rmtree(target / BUILDS_DIR / build, ignore_errors=True)


def _writable_target(
    target: str | Path, error: type[ArtifactFormatError], supersedes: Sequence[str] = ()
) -> Path:
    """``target`` made absolute, or ``error`` when it is a file or a folder that is no artifact."""
    target = Path(target).absolute()
    if target.is_symlink() and not target.exists():  # until session 41: "error: TARGET: File exists"
        raise error(
            f"cannot write an artifact at {target}: it is a symbolic link to {os.readlink(target)}, "
            "which does not exist; create that folder or remove the link"
        )
    if target.exists() and not target.is_dir():
        raise error(f"refusing to write an artifact at {target}: it is a file")
    _check_can_create(target, error)
    check_no_links(target, error)
    if target.is_dir() and not holds_artifact(target) and not _only_store_files(target, supersedes):
        raise error(f"refusing to overwrite {target}: it exists and is not a ragroute artifact{_why(target)}")
    return target


def _check_can_create(target: Path, error: type[ArtifactFormatError]) -> None:
    """Raise ``error`` when the folder ``target`` (absolute) could not be written: the nearest of it
    and its parents that exists is no folder (``--out notes.txt/idx``), or is one this process may
    not write in (read-only). Until session 53 neither was seen before the write itself, after the
    whole build, with the message naming a path that was not the problem (``OUT/builds: Not a
    directory``)."""
    existing = target
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():  # (``target`` itself, a file or a link to nothing, was refused before)
        dangling = existing.is_symlink() and not existing.exists()
        what = "a symbolic link to nothing" if dangling else "a file, not a folder"
        raise error(f"cannot write an artifact at {target}: {existing} is {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == target else str(existing)
        raise error(f"cannot write an artifact at {target}: {where} is a folder this user may not write in")


def _why(target: Path) -> str:
    """Which file made a folder look like an artifact without being ragroute's, if one did."""
    for name, what in ((POINTER_NAME, "pointer"), (MANIFEST_NAME, "manifest")):
        with contextlib.suppress(OSError, ValueError):
            if os.path.lexists(target / name):
                return f" (its {name} is not a ragroute {what})"
    return ""


def check_no_links(target: Path, error: type[ArtifactFormatError] = ArtifactFormatError) -> None:
    """Refuse an artifact whose ``builds/`` or ``CURRENT`` is a symbolic link: writing, pruning or
    cleaning through one would rename and delete folders wherever it points (an artifact folder
    from elsewhere, with ``builds -> ..``, removed its neighbours)."""
    for name in (BUILDS_DIR, POINTER_NAME):
        path = target / name
        if path.is_symlink():
            raise error(
                f"refusing to write or clean the artifact at {target}: its {name} is a symbolic link "
                f"(to {os.readlink(path)}); ragroute never writes or deletes through one"
            )


@contextlib.contextmanager
def building(
    target: str | Path, family: str, error: type[ArtifactFormatError] = ArtifactFormatError
) -> Iterator[None]:
    """Around the whole build of a ``family`` artifact that may create things outside its folder
    (an external store's collection): a path that cannot take it is refused before any work,
    and whatever the build creates outside and does not publish (it failed, was interrupted or
    killed) is released (see :mod:`ragroute.store.outside`)."""
    target = check_writable(target, family, error)
    with outside_writes(target / BUILDS_DIR):
        yield


def check_writable(
    target: str | Path,
    family: str,
    error: type[ArtifactFormatError] = ArtifactFormatError,
    supersedes: Sequence[str] = (),
) -> Path:
    """``target`` made absolute, or ``error`` if :func:`write_artifact` would refuse to publish a
    build of ``family`` there: a file, a path that cannot be created or written, a folder that is
    no ragroute artifact (but for the ``supersedes`` files of a 0.1 layout), another family's
    artifact. What a command that works long calls before any work (until session 53 ``graph
    build``, ``route fit`` and ``gate fit`` did not, and ``rerank train`` and ``expert train``
    checked only :func:`check_replaceable`, which lets a folder of the user's files through)."""
    target = _writable_target(target, error, supersedes)
    check_replaceable(target, family, error)
    return target


def check_replaceable(
    target: str | Path, family: str, error: type[ArtifactFormatError] = ArtifactFormatError
) -> None:
    """Raise ``error`` if a build of ``family`` may not be published at ``target`` (see below); the
    long trainers call it before any work, :func:`write_artifact` again under the lock.

    A new build may replace one of its own family (an index another index, whatever its kind),
    never another family's: ``build --out`` pointed at a trained router by mistake would otherwise
    leave every config naming that router broken. A published build that cannot be read does not
    stop a rebuild (rebuilding is how a damaged artifact is repaired); one a newer ragroute wrote
    (a format this one does not read) is no damaged one: its family is read all the same (until
    session 47 it was not, and ``build --out`` replaced a newer ragroute's gate with an index)."""
    target = Path(target)
    if not artifact_exists(target):
        return
    if not holds_artifact(target):  # a CURRENT or manifest.json that is not ragroute's
        refused = f"refusing to overwrite {target.absolute()}: it exists and is not a ragroute artifact"
        raise error(refused + _why(target))
    held: tuple[str, str] | None
    try:
        current = open_snapshot(target, verify=False).manifest
        held = (current.family, current.kind)
    except ArtifactFormatError:
        held = _newer_format_family(target)
    if held is not None and held[0] != family:
        raise error(
            f"refusing to replace {target}: it holds {family_with_article(held[0])} "
            f"({held[1]}), not {family_with_article(family)}; remove it first or choose another path"
        )


def _newer_format_family(target: Path) -> tuple[str, str] | None:
    """``(family, kind)`` of the published manifest of ``target`` when it is intact (it matches the
    checksum ``CURRENT`` records) and in a newer format than this ragroute reads; else None."""
    with contextlib.suppress(ArtifactFormatError, OSError, ValueError, RecursionError):
        pointer = _read_pointer(target, ArtifactFormatError)
        raw = read_regular(target / BUILDS_DIR / pointer["build"] / MANIFEST_NAME)
        data = json.loads(raw.decode("utf-8"))
        if hashlib.sha256(raw).hexdigest() == pointer["manifest_sha256"] and isinstance(data, dict):
            version, family = data.get("format_version"), data.get("family")
            newer = isinstance(version, int) and version > FORMAT_VERSION
            if data.get("format") == FORMAT_NAME and newer and isinstance(family, str):
                return family, str(data.get("kind"))
    return None


_FAMILY_NOUNS = {"skills": "skill index", "llm": "cache of LLM weights"}


def family_with_article(family: str) -> str:
    """``an index``, ``a router``, ``a skill index``: a family named in a sentence."""
    noun = _FAMILY_NOUNS.get(family, family)
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


@contextlib.contextmanager
def artifact_lock(target: str | Path) -> Iterator[None]:
    """Hold the writer lock of an existing artifact around a read-modify-write (``graph add``).

    :func:`write_artifact` inside the body re-enters it; another writer waits, so
    two updates never both start from the same build and lose one another. A
    ``target`` that holds no artifact is not locked (reading it will say why).
    """
    target = Path(target).absolute()
    if not holds_artifact(target) or not (target / BUILDS_DIR).is_dir():
        yield
        return
    with writer_lock(target / LOCK_NAME, str(target)):
        yield


def _only_store_files(target: Path, superseded: Sequence[str] = ()) -> bool:
    """Whether ``target`` holds nothing but what a killed first build leaves (lock, temporary
    folders, a build never published, the notes of :func:`building`) and the ``superseded``
    files of a 0.1 layout. Temporary folders, builds and pointer files are made only under the
    lock, so they count as the store's only
    beside a ``.lock`` (until session 41 a folder of anyone's ``builds/.tmp-*`` was written over
    and cleaned); a note is written before the lock is taken."""
    lock = target / LOCK_NAME
    has_lock = lock.is_file() and not lock.is_symlink()
    notes = (PENDING_PREFIX, f".draft{PENDING_PREFIX}")
    for entry in target.iterdir():
        if entry.name == LOCK_NAME or entry.name in superseded:
            continue
        if entry.name.startswith(f".{POINTER_NAME}.") and has_lock:
            continue
        if entry.name != BUILDS_DIR or not entry.is_dir() or entry.is_symlink():
            return False
        for child in entry.iterdir():
            if child.name.startswith(notes):
                continue
            # a build renamed in but never published (a first build killed before its pointer
            # was written) is made under the lock too: until session 49 it made every later
            # build and clean refuse the folder as "not a ragroute artifact"
            if not (has_lock and (child.name.startswith(DEBRIS_PREFIXES) or _is_own_build(child))):
                return False
    return True


def _store_leftovers(root: Path) -> bool:
    """Whether ``root`` holds what a first build killed before it published leaves, and nothing
    else (see :func:`_only_store_files`): a lock, or notes and temporary folders in ``builds/``."""
    builds = root / BUILDS_DIR
    if not root.is_dir() or not _only_store_files(root):
        return False
    return (root / LOCK_NAME).is_file() or (builds.is_dir() and any(builds.iterdir()))


def _publish(target: Path, tmp: Path, manifest: ArtifactManifest) -> None:
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest.files = {}
    for path in files:
        manifest.files[path.relative_to(tmp).as_posix()] = {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
        _fsync_file(path)  # on disk before the pointer names it (a power cut then loses nothing)
        crash_point("publish: file checksummed")
    manifest.build = f"{_next_stamp(target / BUILDS_DIR):020d}-{os.getpid()}-{secrets.token_hex(3)}"
    manifest.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    write_synced(tmp / MANIFEST_NAME, text)
    crash_point("publish: manifest written")
    final = target / BUILDS_DIR / manifest.build
    os.replace(tmp, final)
    try:
        _fsync_dir(final)
        _fsync_dir(final.parent)
        crash_point("publish: build renamed into builds/")
        pointer = {"build": manifest.build, "manifest_sha256": sha256_file(final / MANIFEST_NAME)}
        pointer_tmp = target / f".{POINTER_NAME}.{manifest.build}"
        write_synced(pointer_tmp, json.dumps(pointer) + "\n")
        crash_point("publish: new pointer written")
        os.replace(pointer_tmp, target / POINTER_NAME)
    except BaseException:
        _remove_unpublished(target, manifest.build)
        raise
    crash_point("publish: pointer replaced")
    _fsync_dir(target)
    _remove_legacy_files(target)


def _next_stamp(builds: Path) -> int:
    """The time stamp that starts a new build's id: the clock in nanoseconds, or one past the
    largest stamp of a build already in ``builds`` (published, kept, or set aside) when the clock
    is behind it. Pruning orders builds by their ids, so the ids must grow: until session 41 a
    clock set back (NTP, a VM restored) gave the new build an id below the published one, which
    pruning then took for a killed writer's debris newer than the pointer and deleted - the
    previous build, which every build keeps."""
    latest = 0
    with contextlib.suppress(OSError):
        for entry in builds.iterdir():
            stamp = entry.name.removeprefix(TRASH_PREFIX).split("-", 1)[0]
            if len(stamp) == 20 and stamp.isdigit():
                latest = max(latest, int(stamp))
    return max(time.time_ns(), latest + 1)


def _fsync_file(path: Path) -> None:
    """``fsync`` a file of a build. A file system that cannot (``EINVAL``, ``EROFS``) is let be; one
    that says the data did not reach the disk (``EIO``, ``ENOSPC``, ``EDQUOT``: NFS says a full disk
    or quota only here) fails the build. Until session 53 that was ignored too and the build
    published, its files checksummed from memory: after a restart (or on another NFS client) every
    load failed its checksums, the previous build no longer published."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in _DATA_LOST:
            raise
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_legacy_files(target: Path) -> None:
    """A 0.1 folder rewritten in place: its top-level files are superseded by the new build.

    Only a 0.1 index's own manifest is removed, and of the files it lists only regular files
    inside ``target`` (until session 41 any ``manifest.json`` went, with every file it listed:
    ``../x`` deleted ``x`` beside the folder); never the store's own ``CURRENT``, ``builds/``, lock."""
    legacy = target / MANIFEST_NAME
    if legacy.is_symlink() or not _is_legacy_manifest(legacy):
        return
    try:
        files = json.loads(read_regular(legacy).decode("utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        files = {}
    legacy.unlink(missing_ok=True)
    for name in files if isinstance(files, dict) else ():
        path = _legacy_file(target, name)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def _legacy_file(target: Path, name: Any) -> Path | None:
    """``target / name`` when it is a regular file inside ``target`` (no ``..``, not absolute, no
    link on the way) that is not the store's own; else None."""
    try:
        if not isinstance(name, str) or not name or Path(name).is_absolute():
            return None
        parts = Path(name).parts
        if not parts or ".." in parts or parts[0] in (BUILDS_DIR, POINTER_NAME, LOCK_NAME, MANIFEST_NAME):
            return None
        if parts[0].startswith(f".{POINTER_NAME}."):
            return None
        folder = target
        for part in parts[:-1]:
            folder = folder / part
            if folder.is_symlink() or not folder.is_dir():
                return None
        path = target / name
        if path.is_symlink() or not path.is_file():
            return None
        return path
    except (OSError, ValueError):
        return None


def _clean_debris(target: Path, locked: bool) -> list[str]:
    """Remove temporary folders and pointer files of dead writers; returns their names.

    Called with the writer lock held: then every temporary folder but this
    process's own belongs to a writer that died. Without a working lock only
    debris older than an hour goes.
    """
    now = time.time()
    builds = target / BUILDS_DIR
    removed = settle_dead_notes(builds, locked=locked, stale_seconds=_STALE_TMP_SECONDS)
    candidates = [*builds.glob(f"{TMP_PREFIX}*"), *builds.glob(f"{TRASH_PREFIX}*")]
    for draft in builds.glob(f".draft{PENDING_PREFIX}*"):  # a note killed before it had its name
        with contextlib.suppress(OSError):
            if now - draft.stat().st_mtime > _DRAFT_SECONDS:
                candidates.append(draft)
    candidates += list(target.glob(f".{POINTER_NAME}.*"))
    for path in candidates:
        if str(path) in _WRITING:
            continue
        with contextlib.suppress(OSError):
            if locked or now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                if path.name.startswith(TRASH_PREFIX):  # a pruner died between its two steps
                    if not _discard(path, f"{path} (a build being pruned): what it"):
                        continue
                elif path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path.relative_to(target).as_posix())
                crash_point("clean: debris removed")
    # sorted: in the order the folder listed them until session 52, which the file system decides
    # (ext4 lists by a hash of the name), so one folder's debris came back in another order elsewhere
    return sorted(removed)


def _prune(target: Path, locked: bool, *, unpublished_only: bool = False) -> list[str]:
    """Remove every build but the published one and the one before it; returns the removed ids.

    Under the writer lock, builds newer than the published one are debris of a
    writer killed before its pointer swap; without a working lock they may belong
    to a racing writer and are kept. Under the lock, in a folder with no ``CURRENT`` at all
    (nothing was ever published there), every build is such debris. A build a reader holds
    is kept for a later pass. ``unpublished_only``: remove only that debris (before a write).
    """
    builds = target / BUILDS_DIR
    try:
        current = _read_pointer(target, ArtifactFormatError)["build"]
    except FileNotFoundError:
        if not locked or os.path.lexists(target / POINTER_NAME):
            return []
        current = ""  # nothing was ever published: every build is a dead writer's (sorts above "")
    except (ArtifactFormatError, OSError):
        return []  # never delete builds while it is unclear which one is published
    # only folders a build could be: named like one, real (a link is never followed to delete)
    done = sorted(
        p.name
        for p in builds.iterdir()
        if not p.name.startswith(".") and _BUILD_ID.match(p.name) and p.is_dir() and not p.is_symlink()
    )
    older = [b for b in done if b < current]
    keep = {current, *(older if unpublished_only else older[-1:])}
    removed = []
    for build in done:
        if build in keep or (build > current and not locked):
            continue
        trash = _set_aside(builds, build)
        if trash is not None:
            removed.append(build)
            _discard(trash, f"build {build} was pruned, but what it")
    return removed


def _discard(trash: Path, what: str) -> bool:
    """Release what a build set aside held outside its folder (an external store's collection,
    unless a build still in ``builds/`` names it), then delete it. When the release fails, only
    its manifest is kept (``False``), for a later pass to try again. A build set aside by a pruner
    killed before this is discarded the same way by the next cleaner, so no collection outlives
    its build unsaid."""
    manifest = read_manifest_or_none(trash)
    kept = build_manifests(trash.parent)
    if manifest is not None and not release_outside(manifest, kept, what, trash.parent):
        for entry in trash.iterdir():
            if entry.name != MANIFEST_NAME:
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return False
    crash_point("prune: released")
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _set_aside(builds: Path, build: str) -> Path | None:
    """Rename ``builds/build`` aside (``.trash-<build>``), unless a reader holds its manifest's
    lock; the new path, or None when it stays."""
    path = builds / build
    trash = builds / f"{TRASH_PREFIX}{build}"
    try:
        fd = os.open(path / MANIFEST_NAME, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO would block
    except FileNotFoundError:
        fd = -1  # no manifest: an unfinished folder no reader can open
    except OSError:
        return None
    try:
        if fd >= 0 and not try_exclusive(fd):
            return None
        os.replace(path, trash)
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    crash_point("prune: build renamed aside")
    return trash


@dataclass
class CleanReport:
    """What :func:`clean_artifact` removed."""

    debris: list[str]
    builds: list[str]


def clean_artifact(root: str | Path, *, wait: float = 0.0) -> CleanReport:
    """Remove a dead writer's temporary folders and superseded builds of the artifact at ``root``.

    Takes the writer lock (waiting ``wait`` seconds at most; a live writer makes
    this an :class:`ArtifactBusyError`), so a live writer's folder is never
    touched; builds held by readers are kept.
    """
    root = Path(root).absolute()
    check_no_links(root)
    # until session 41 any folder with a builds/ subfolder (or a CURRENT or manifest.json) was
    # cleaned: a project's builds/.tmp-* and .CURRENT.* deleted, a .lock left in it
    if not holds_artifact(root) and not _store_leftovers(root):
        raise ArtifactFormatError(
            f"nothing to clean at {root}: it holds no ragroute artifact{_why(root) if root.is_dir() else ''}"
        )
    with writer_lock(root / LOCK_NAME, str(root), timeout=wait) as locked:
        debris = _clean_debris(root, locked)
        pruned = _prune(root, locked) if (root / BUILDS_DIR).is_dir() else []
    return CleanReport(debris, pruned)


def _read_pointer(root: Path, error: type[ArtifactFormatError]) -> dict[str, str]:
    path = root / POINTER_NAME
    try:
        raw = read_regular(path)  # until session 41 a FIFO here hung
    except (IsADirectoryError, NotRegularFileError) as exc:
        if path.is_dir():
            raise error(f"{path} is corrupt: a directory, not a pointer file") from None
        raise error(f"{exc}; rebuild the artifact to replace it") from None
    except PermissionError:
        raise error(f"cannot read {path}: permission denied") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, a number of more digits than Python
        # reads or arrays nested past the recursion limit (the last two tracebacks until session 51)
        raise error(f"{path} is corrupt: not a JSON pointer to a build") from None
    if not isinstance(data, dict) or not _BUILD_ID.match(str(data.get("build"))):
        raise error(f"{path} is corrupt: it names no build")
    if not isinstance(data.get("build"), str) or not _SHA256.match(str(data.get("manifest_sha256"))):
        raise error(f"{path} is corrupt: it records no manifest checksum")
    return data


def open_snapshot(
    root: str | Path,
    *,
    family: str | None = None,
    verify: bool = True,
    error: type[ArtifactFormatError] = ArtifactFormatError,
) -> Snapshot:
    """Resolve the published build of ``root`` and check it (see the module docstring)."""
    return read_artifact(root, lambda snapshot: snapshot, family=family, verify=verify, error=error)


def read_artifact(
    root: str | Path,
    read: Callable[[Snapshot], T],
    *,
    family: str | None = None,
    verify: bool = True,
    error: type[ArtifactFormatError] = ArtifactFormatError,
) -> T:
    """``read(snapshot)`` on the published build, under that build's shared reader lock.

    The lock keeps writers from pruning the build meanwhile. Where locks do not
    work, a build that vanishes during the read is read again from the new
    pointer (a retry means the reader raced two complete rebuilds); a file
    missing from a build that is still published is reported as such.
    """
    root = Path(root)
    try:
        if root.is_file():  # e.g. a YAML file given where a gate, index or router folder is expected
            what = family_with_article(family) if family else "an artifact"
            raise error(f"{root} is a file, not {what} folder (the folder a ragroute command wrote)")
        return _read_retrying(root, read, family, verify, error)
    except OSError as exc:  # a path or file the OS refuses (a missing file is said by _read_retrying)
        raise error(f"cannot read {refused_path_message(exc, root)}") from None
    except ValueError as exc:
        if not is_nul_path_error(exc):
            raise
        raise error(f"cannot read {str(root)!r}: the path contains a NUL character") from None


def _read_retrying(
    root: Path,
    read: Callable[[Snapshot], T],
    family: str | None,
    verify: bool,
    error: type[ArtifactFormatError],
) -> T:
    for attempt in range(_READ_ATTEMPTS):
        build = _published_build(root, error)
        try:
            with _opened(root, family, verify, error) as snapshot:
                return read(snapshot)
        except FileNotFoundError as exc:
            if build is None or _published_build(root, error) == build:
                if build is not None and not (root / BUILDS_DIR / build).is_dir():
                    raise error(
                        f"{root / POINTER_NAME} is corrupt or stale: it names build {build}, "
                        "which does not exist"
                    ) from None
                raise error(
                    f"{root}: file {Path(exc.filename or '?').name} of the published build is missing"
                ) from None
            if attempt == _READ_ATTEMPTS - 1:
                raise error(f"{root}: the artifact kept changing while being read; try again") from None
    raise AssertionError("unreachable")


def published_path(root: str | Path) -> Path:
    """The folder of the build ``root`` publishes now (for tools and tests; readers use snapshots)."""
    root = Path(root)
    build = _published_build(root, ArtifactFormatError)
    return root if build is None else root / BUILDS_DIR / build


def load_artifact(root: str | Path, **kwargs: Any) -> Any:
    """Load any artifact by its family's loader (:data:`ragroute.registry.ARTIFACTS`).

    ``kwargs`` go to the loader (e.g. ``encoder=`` for indexes and trained routers).
    """
    from ragroute.registry import ARTIFACTS

    root = Path(root)
    if not artifact_exists(root) and (root / "router.json").is_file():
        family = "router"  # a trained router saved by ragroute 0.1
    else:
        family = open_snapshot(root, verify=False).manifest.family
    return ARTIFACTS.get(family, str(root))(root, **kwargs)


def _published_build(root: Path, error: type[ArtifactFormatError]) -> str | None:
    try:
        return _read_pointer(root, error)["build"]
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _opened(
    root: Path, family: str | None, verify: bool, error: type[ArtifactFormatError]
) -> Iterator[Snapshot]:
    """The published build, checked, with its manifest's shared lock held for the body."""
    if not root.is_dir():
        raise error(f"nothing at {root}: directory does not exist")
    if not (root / POINTER_NAME).is_file():
        outer = root.parent.parent
        if root.parent.name == BUILDS_DIR and (outer / POINTER_NAME).is_file():
            # a build's own folder (its manifest.json is the store's, not a 0.1 index's): until
            # session 40 "manifest.json is not a ragroute manifest"
            raise error(
                f"{root} is a build inside the artifact folder {outer}: name the artifact folder "
                f"({outer}) instead, which publishes its current build"
            )
        if (root / MANIFEST_NAME).is_file():
            yield _checked(_open_legacy(root, error), family, verify, error)
            return
        if (root / BUILDS_DIR).is_dir():  # builds started here, none published
            raise error(f"{root} holds no ragroute artifact ({POINTER_NAME} is missing; interrupted build?)")
        raise error(
            f"{root} holds no ragroute artifact (no {POINTER_NAME} file; if it holds documents, "
            f"build an index from it first: ragroute build {root} --out DIR)"
        )
    pointer = _read_pointer(root, error)
    path = root / BUILDS_DIR / pointer["build"]
    manifest_path = path / MANIFEST_NAME
    try:  # FileNotFoundError -> pruned meanwhile: retried
        fd = open_regular(manifest_path)
    except NotRegularFileError as exc:  # until session 41 a FIFO here hung the reader
        raise error(f"{exc}; rebuild the artifact to replace it") from None
    with os.fdopen(fd, "rb") as handle:
        shared(handle.fileno())
        if os.fstat(handle.fileno()).st_ino != os.stat(manifest_path).st_ino:
            raise FileNotFoundError(2, "pruned while opened", str(manifest_path))
        raw = handle.read()
        if hashlib.sha256(raw).hexdigest() != pointer["manifest_sha256"]:
            raise error(f"{manifest_path} is corrupt: it does not match the checksum in {POINTER_NAME}")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # as the pointer's (above)
            raise error(f"{manifest_path} is corrupt (not JSON: {exc})") from None
        manifest = ArtifactManifest.from_dict(data, str(manifest_path), error)
        if manifest.build != pointer["build"]:
            raise error(f"{manifest_path} is corrupt: it describes build {manifest.build!r}")
        yield _checked(Snapshot(root, path, manifest), family, verify, error)


def _checked(
    snapshot: Snapshot, family: str | None, verify: bool, error: type[ArtifactFormatError]
) -> Snapshot:
    if family is not None and snapshot.manifest.family != family:
        held = f"{family_with_article(snapshot.manifest.family)} ({snapshot.manifest.kind})"
        raise error(f"{snapshot.root} holds {held}, not {family_with_article(family)}")
    for name, info in snapshot.manifest.files.items():
        parts = Path(name).parts
        if not isinstance(info, dict) or not parts or Path(name).is_absolute() or ".." in parts:
            raise error(f"{snapshot.root}: manifest lists a bad file entry {name!r}")
        size, digest = info.get("bytes"), info.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or not isinstance(digest, str):
            # what inspect adds up and verifying compares (a size "abc" was a traceback without --verify)
            raise error(f"{snapshot.root}: manifest lists a bad file entry {name!r} (no size or checksum)")
    if verify:
        _verify_files(snapshot, error)
    return snapshot


def _verify_files(snapshot: Snapshot, error: type[ArtifactFormatError]) -> None:
    for name, info in snapshot.manifest.files.items():
        path = snapshot.path / name
        if not path.is_file():
            if not snapshot.legacy:
                raise FileNotFoundError(2, "missing", str(path))
            raise error(f"{path} is missing (listed in {MANIFEST_NAME})")
        size = path.stat().st_size
        if size != info.get("bytes"):
            raise error(f"{path} is corrupt: size {size} != {info.get('bytes')}")
        if sha256_file(path) != info.get("sha256"):
            raise error(f"{path} is corrupt: checksum mismatch")


def _open_legacy(root: Path, error: type[ArtifactFormatError]) -> Snapshot:
    """An index folder written by ragroute 0.1 (``ragroute-index`` format version 1)."""
    path = root / MANIFEST_NAME
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # as the pointer's (above)
        raise error(f"{path} is corrupt (truncated or not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != LEGACY_FORMAT:
        raise error(f"{path} is not a ragroute manifest")
    if data.get("format_version") != 1:
        raise error(
            f"{path} has format_version {data.get('format_version')!r}; this ragroute reads "
            f"{LEGACY_FORMAT} version 1; rebuild the index with `ragroute build`"
        )
    for key, expected in {"kind": str, "documents": int, "files": dict}.items():
        if not isinstance(data.get(key), expected):
            raise error(f"{path} is corrupt: field {key!r} is missing or not a {expected.__name__}")
    if data.get("encoder") is not None and not isinstance(data["encoder"], dict):
        raise error(f"{path} is corrupt: field 'encoder' is not a dict")
    manifest = ArtifactManifest(
        family="index",
        kind=data["kind"],
        params={**(data.get("params") or {}), "documents": data["documents"]},
        encoder=data.get("encoder"),
        name=data.get("name", ""),
        files=data["files"],
        build="legacy",
        created=data.get("created", ""),
        library_version="0.1",
        format_version=1,
    )
    return Snapshot(root, root, manifest, legacy=True)
