"""Writing and reading artifact folders so that readers never see a half-written or mixed build.

Layout of an artifact folder ``NAME/``::

    NAME/CURRENT                      one JSON line: the published build and its manifest's sha256
    NAME/builds/<build-id>/           one immutable folder per build
        manifest.json                 see ragroute.store.manifest
        ...                           the artifact's own files

A write fills a temporary folder, checksums it, renames it into ``builds/``
under a fresh, time-ordered id, then atomically replaces ``CURRENT`` (write a
temporary file, ``os.replace``). A build killed at any point leaves the
previous build published; two builds racing both complete and the later
pointer wins. Old builds are pruned, keeping the previous one, so a reader
that resolved the pointer just before a swap still finds its files.

A reader (:func:`read_artifact`) resolves ``CURRENT`` once, checks the manifest
against the pointer, the manifest against its own checksum and every file
against the manifest, and reads files of that build only. If the build is
pruned while being read, it starts again from the new pointer rather than mix
builds. Folders written by ragroute 0.1 (``manifest.json`` at the top, format
``ragroute-index`` v1) are still read, without the consistency guarantee.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from ragroute.errors import ArtifactFormatError
from ragroute.store.manifest import MANIFEST_NAME, ArtifactManifest, sha256_file

POINTER_NAME = "CURRENT"
BUILDS_DIR = "builds"
LEGACY_FORMAT = "ragroute-index"
_STALE_TMP_SECONDS = 3600
_READ_ATTEMPTS = 5

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
    root = Path(root)
    return (root / POINTER_NAME).is_file() or (root / MANIFEST_NAME).is_file()


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
) -> Iterator[PendingBuild]:
    """Write a new build of the artifact at ``target`` and publish it when the body succeeds.

    If the body raises (or the process dies), nothing is published and the
    previous build stays current; the temporary folder is removed on exceptions.
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise error(f"refusing to write an artifact at {target}: it is a file")
    if target.is_dir() and not artifact_exists(target) and any(target.iterdir()):
        raise error(f"refusing to overwrite {target}: it exists and is not a ragroute artifact")
    builds = target / BUILDS_DIR
    builds.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=builds))
    manifest = ArtifactManifest(
        family=family, kind=kind, params=dict(params or {}), encoder=encoder, name=name
    )
    try:
        yield PendingBuild(tmp, manifest)
        _publish(target, tmp, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(target, manifest.build)


def _publish(target: Path, tmp: Path, manifest: ArtifactManifest) -> None:
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest.files = {
        p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
    }
    manifest.build = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}"
    manifest.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    _write_synced(tmp / MANIFEST_NAME, text)
    final = target / BUILDS_DIR / manifest.build
    os.replace(tmp, final)
    pointer = {"build": manifest.build, "manifest_sha256": sha256_file(final / MANIFEST_NAME)}
    pointer_tmp = target / f".{POINTER_NAME}.{manifest.build}"
    _write_synced(pointer_tmp, json.dumps(pointer) + "\n")
    os.replace(pointer_tmp, target / POINTER_NAME)
    _fsync_dir(target)
    _remove_legacy_files(target)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_legacy_files(target: Path) -> None:
    """A 0.1 folder rewritten in place: its top-level files are superseded by the new build."""
    legacy = target / MANIFEST_NAME
    if not legacy.is_file():
        return
    try:
        files = json.loads(legacy.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError):
        files = {}
    legacy.unlink(missing_ok=True)
    for name in files:
        with contextlib.suppress(OSError):
            (target / name).unlink()


def _prune(target: Path, published: str) -> None:
    """Delete builds older than the one before ``published``; newer ones belong to racing writers."""
    builds = target / BUILDS_DIR
    try:
        current = _read_pointer(target, ArtifactFormatError)["build"]
    except (ArtifactFormatError, OSError):
        return
    done = sorted(p.name for p in builds.iterdir() if not p.name.startswith("."))
    older = [b for b in done if b < current]
    for build in older[:-1]:
        shutil.rmtree(builds / build, ignore_errors=True)
    now = time.time()
    for stale in builds.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)


def _read_pointer(root: Path, error: type[ArtifactFormatError]) -> dict[str, str]:
    path = root / POINTER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise error(f"{path} is corrupt: not a JSON pointer to a build") from None
    if not isinstance(data, dict) or not isinstance(data.get("build"), str) or "/" in data["build"]:
        raise error(f"{path} is corrupt: it names no build")
    if not isinstance(data.get("manifest_sha256"), str):
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
    """``read(snapshot)`` on the published build, started again if that build vanishes meanwhile.

    A build is pruned only after two newer ones are published, so a retry means a
    reader raced two complete rebuilds; a file missing from a build that is
    still published is reported as such.
    """
    root = Path(root)
    for attempt in range(_READ_ATTEMPTS):
        build = _published_build(root, error)
        try:
            snapshot = _open_once(root, family, verify, error)
            return read(snapshot)
        except FileNotFoundError as exc:
            if build is None or _published_build(root, error) == build:
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


def _open_once(root: Path, family: str | None, verify: bool, error: type[ArtifactFormatError]) -> Snapshot:
    if not root.is_dir():
        raise error(f"nothing at {root}: directory does not exist")
    if not (root / POINTER_NAME).is_file():
        if (root / MANIFEST_NAME).is_file():
            snapshot = _open_legacy(root, error)
        else:
            raise error(f"{root} holds no ragroute artifact ({POINTER_NAME} is missing; interrupted build?)")
    else:
        pointer = _read_pointer(root, error)
        path = root / BUILDS_DIR / pointer["build"]
        manifest_path = path / MANIFEST_NAME
        raw = manifest_path.read_bytes()  # FileNotFoundError -> pruned meanwhile: retried
        if hashlib.sha256(raw).hexdigest() != pointer["manifest_sha256"]:
            raise error(f"{manifest_path} is corrupt: it does not match the checksum in {POINTER_NAME}")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise error(f"{manifest_path} is corrupt (not JSON: {exc})") from None
        manifest = ArtifactManifest.from_dict(data, str(manifest_path), error)
        if manifest.build != pointer["build"]:
            raise error(f"{manifest_path} is corrupt: it describes build {manifest.build!r}")
        snapshot = Snapshot(root, path, manifest)
    if family is not None and snapshot.manifest.family != family:
        raise error(f"{root} holds a {snapshot.manifest.family} ({snapshot.manifest.kind}), not a {family}")
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
