"""What a build holds outside its artifact folder (an external vector store's collection), and
how it is released when nothing names it any more.

An index whose vectors live in Qdrant or LanceDB creates its collection while it is built, long
before the artifact store publishes the build that names it. A build that fails, is interrupted
(Ctrl-C) or is killed in between would leave that collection in the store for good, named by no
manifest. So a builder that knows its artifact folder wraps the work in
:func:`outside_writes`; while it runs, a store about to create something calls
:func:`note_outside`, which leaves a note in ``NAME/builds/.pending-<id>.json`` (family, kind
and the manifest parameters that name the thing, written and synced *before* it is created)
and holds a shared ``flock`` on it for as long as the process lives.

* When the builder's body ends (published, failed or interrupted), each of its notes is
  settled: released unless a build in ``builds/`` names the same thing, then removed.
* A note whose process died (its lock is free) is settled the same way by the next writer of
  that artifact or by ``ragroute inspect PATH --clean`` (:func:`settle_dead_notes`) - only when
  it was written for this very folder: a note records the real path of the artifact's
  ``builds/`` and its inode (:func:`_folder_identity`), which a copied, downloaded or crafted
  folder does not share. A note that does not match (or records neither, as notes written
  before session 41 do) is removed with a warning naming what it names, never acted on: until
  session 41 a note carried in a folder from elsewhere dropped the collection it named, the
  user's own index's included.

Releasing goes through the ``RELEASES`` registry, as for a build the store prunes
(:func:`release_outside`); a failure is a warning naming what was left, and the note stays for
a later pass.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import secrets
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.store.locks import shared, try_exclusive
from ragroute.store.manifest import (
    ArtifactManifest,
    NotRegularFileError,
    open_regular,
    read_manifest_or_none,
    write_synced,
)

PENDING_PREFIX = ".pending-"


@dataclass
class _Notes:
    """The notes one :func:`outside_writes` block has written: path and the descriptor holding
    its shared lock."""

    builds: Path
    held: list[tuple[Path, int]] = field(default_factory=list)


_CURRENT: contextvars.ContextVar[_Notes | None] = contextvars.ContextVar("ragroute_outside", default=None)
_LIVE: set[str] = set()  # notes this process holds (never settled by its own cleaners)


@contextlib.contextmanager
def outside_writes(builds: Path) -> Iterator[None]:
    """Note what the body creates outside the artifact folder whose builds are in ``builds`` (see
    the module docstring); on leaving, release whatever no build there names."""
    notes = _Notes(builds)
    token = _CURRENT.set(notes)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        for path, fd in notes.held:
            try:
                _settle(path, notes.builds)
            finally:
                _LIVE.discard(str(path))
                os.close(fd)


def note_outside(family: str, kind: str, params: dict[str, Any]) -> None:
    """Before creating something outside the artifact folder: write the note that names it (a
    no-op outside :func:`outside_writes`). ``params`` are the manifest parameters that will name
    it, as the family's ``RELEASES`` hook reads them."""
    notes = _CURRENT.get()
    if notes is None:
        return
    notes.builds.mkdir(parents=True, exist_ok=True)
    name = f"{PENDING_PREFIX}{secrets.token_hex(6)}.json"
    draft = notes.builds / f".draft{name}"
    note = {"family": family, "kind": kind, "params": params, "artifact": _folder_identity(notes.builds)}
    write_synced(draft, json.dumps(note) + "\n")
    fd = os.open(draft, os.O_RDONLY)
    shared(fd)  # taken before the note has its name: no cleaner can see it unlocked
    path = notes.builds / name
    os.replace(draft, path)
    _LIVE.add(str(path))
    notes.held.append((path, fd))


def settle_dead_notes(builds: Path, *, locked: bool, stale_seconds: float) -> list[str]:
    """Settle the notes of builders that died (called by the artifact's cleaners); returns the
    names of the notes removed. Without a working writer lock (no ``flock``) only notes older
    than ``stale_seconds`` are taken for dead."""
    removed = []
    for path in sorted(builds.glob(f"{PENDING_PREFIX}*")):
        if str(path) in _LIVE:
            continue
        try:
            fd = open_regular(path)
        except NotRegularFileError as exc:  # until session 49 a FIFO here hung every writer and cleaner
            warnings.warn(f"{exc}: not a note of an interrupted build; it was removed", stacklevel=2)
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        except OSError:
            continue
        try:
            recent = time.time() - os.fstat(fd).st_mtime <= stale_seconds
            alive = not try_exclusive(fd) or (not locked and recent)
            if not alive and _settle(path, builds, own_only=True):
                removed.append(f"{builds.name}/{path.name}")
        finally:
            os.close(fd)
    return removed


def _folder_identity(builds: Path) -> dict[str, Any]:
    """What ties a note to the ``builds/`` folder it was written in: its real path and inode. A
    copy (``cp -r``, a download, an unpacked archive) has another inode; the same folder reached
    by another spelling (a symbolic link above it) has the same real path."""
    return {"builds": os.path.realpath(builds), "inode": os.stat(builds).st_ino}


def _identifies(recorded: Any, builds: Path) -> bool:
    """Whether ``recorded`` (a note's or a manifest's) is the identity of ``builds`` (see
    :func:`_folder_identity`); False for anything else, or a folder that cannot be read."""
    if not isinstance(recorded, dict):
        return False
    try:
        return recorded == _folder_identity(builds)
    except OSError:
        return False


def _settle(path: Path, builds: Path, *, own_only: bool = False) -> bool:
    """Release what the note at ``path`` names unless a build in ``builds`` names it too, then
    remove the note; ``False`` (note kept) when the release failed. ``own_only`` (a note another
    process wrote): a note not written in this very folder is removed without acting on it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        family, kind, params = str(data["family"]), str(data["kind"]), dict(data["params"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        warnings.warn(f"{path}: an unreadable note of an interrupted build was removed ({exc})", stacklevel=2)
        path.unlink(missing_ok=True)
        return True
    if own_only and not _identifies(data.get("artifact"), builds):
        warnings.warn(
            f"{path}: a note of an unfinished build written for another folder (copied or downloaded "
            f"here, or written before session 41) was removed without releasing what it names "
            f"({_named(params)}); if that is a leftover of yours, delete it in its store",
            stacklevel=2,
        )
        path.unlink(missing_ok=True)
        return True
    noted = ArtifactManifest(family=family, kind=kind, params=params)
    if not release_outside(
        noted, build_manifests(builds), f"what the unfinished build noted in {path}", builds
    ):
        return False
    path.unlink(missing_ok=True)
    return True


CREATED_IN = "created_in"
"""The key under which a family records, among what names a thing it created outside (its
manifest parameters), the identity of the ``builds/`` folder it was created for
(:func:`created_in`): a copy of the folder never releases it (:func:`release_outside`)."""


def created_in() -> dict[str, Any] | None:
    """The identity of the artifact folder the running :func:`outside_writes` block builds (None
    outside one), for a family to record with what it creates outside (:data:`CREATED_IN`)."""
    notes = _CURRENT.get()
    if notes is None:
        return None
    notes.builds.mkdir(parents=True, exist_ok=True)
    return _folder_identity(notes.builds)


def _recorded_owner(params: dict[str, Any]) -> Any:
    for value in params.values():
        if isinstance(value, dict) and CREATED_IN in value:
            return value[CREATED_IN]
    return None


def _named(params: dict[str, Any]) -> str:
    """What a note's parameters name, for a warning: ``collection C at LOCATION``."""
    for value in params.values():
        if isinstance(value, dict) and "collection_name" in value:
            return f"collection {value.get('collection_name')} at {value.get('location')}"
    return json.dumps(params)[:200]


def build_manifests(builds: Path) -> list[ArtifactManifest]:
    """The readable manifests of the builds in ``builds`` (published or kept: not the temporary
    folders, notes and builds being removed, whose names start with a dot)."""
    done = [b for b in sorted(builds.iterdir()) if not b.name.startswith(".")] if builds.is_dir() else []
    return [m for b in done if (m := read_manifest_or_none(b))]


def release_outside(
    removed: ArtifactManifest, kept: list[ArtifactManifest], what: str, builds: Path | None = None
) -> bool:
    """Release what ``removed`` (a pruned build, or the note of an unfinished one; ``what`` says
    which, as the subject of the warning) held outside its folder, unless one of ``kept`` names
    it (the family's ``RELEASES`` hook), or it records that it was created for another folder than
    ``builds`` (:data:`CREATED_IN`: a build copied here with its folder, whose collection the
    original still uses; until session 41 two rebuilds of a ``cp -r`` copy of a Qdrant or LanceDB
    index dropped the original's collection). A failure is a warning naming what was left, never
    an error; returns whether it succeeded (or was not this folder's to do)."""
    from ragroute.registry import RELEASES

    if removed.family not in RELEASES:
        return True
    owner = _recorded_owner(removed.params)
    if builds is not None and owner is not None and not _identifies(owner, builds):
        warnings.warn(
            f"{what} held outside its folder was created for another folder (this one is a copy, "
            f"or was moved): it is left ({_named(removed.params)})",
            stacklevel=2,
        )
        return True
    try:
        RELEASES.get(removed.family)(removed, kept)
    except Exception as exc:  # noqa: BLE001 - what is left is only said
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warnings.warn(f"{what} held outside its folder was not released: {reason}", stacklevel=2)
        return False
    return True
