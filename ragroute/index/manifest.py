"""The on-disk format of an index directory: a JSON manifest with checksums, written atomically.

An index directory holds ``manifest.json`` plus the files it lists. The manifest
records the format version, the index kind, the encoder (for dense indexes), the
document count, free parameters, and the SHA-256 and size of every file. Loading
verifies all of it and fails with a one-line :class:`IndexFormatError` naming the
file at fault.

Builds write into a temporary sibling directory and only then take the target's
place (:func:`atomic_directory`), so a build killed half-way leaves the previous
index untouched and loadable. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragroute.errors import IndexFormatError

FORMAT_NAME = "ragroute-index"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass
class Manifest:
    """What an index directory contains; see the module docstring."""

    kind: str
    documents: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    encoder: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    created: str = ""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "kind": self.kind,
            "name": self.name,
            "created": self.created,
            "documents": self.documents,
            "encoder": self.encoder,
            "params": self.params,
            "files": self.files,
        }


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """Checksum every file in ``directory`` (but the manifest) and write ``manifest.json``."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest.files = {
        p.relative_to(directory).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in files
    }
    manifest.created = manifest.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = directory / MANIFEST_NAME
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest.to_dict(), handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return manifest


def read_manifest(directory: Path, *, verify: bool = True) -> Manifest:
    """Read and validate ``directory/manifest.json``; with ``verify``, check every file's checksum."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexFormatError(f"no index at {directory}: directory does not exist")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise IndexFormatError(f"{path} is missing: not a ragroute index (or an interrupted build)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path} is corrupt (truncated or not JSON: {exc})") from None
    manifest = _manifest_from_dict(data, path)
    if verify:
        verify_files(directory, manifest)
    return manifest


def _manifest_from_dict(data: Any, path: Path) -> Manifest:
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not a {FORMAT_NAME} manifest")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format_version {version!r}; this ragroute reads version {FORMAT_VERSION}"
        )
    required = {"kind": str, "documents": int, "files": dict}
    for key, expected in required.items():
        if not isinstance(data.get(key), expected):
            raise IndexFormatError(
                f"{path} is corrupt: field {key!r} is missing or not a {expected.__name__}"
            )
    return Manifest(
        kind=data["kind"],
        documents=data["documents"],
        files=data["files"],
        encoder=data.get("encoder"),
        params=data.get("params") or {},
        name=data.get("name", ""),
        created=data.get("created", ""),
    )


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Raise :class:`IndexFormatError` if a listed file is missing, resized or altered."""
    for name, info in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise IndexFormatError(f"{path} is missing (listed in {MANIFEST_NAME})")
        if path.stat().st_size != info.get("bytes"):
            raise IndexFormatError(f"{path} is corrupt: size {path.stat().st_size} != {info.get('bytes')}")
        if sha256_file(path) != info.get("sha256"):
            raise IndexFormatError(f"{path} is corrupt: checksum mismatch")


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``target``; on success it replaces ``target``.

    If the body raises (or the process dies), ``target`` is untouched; the
    temporary directory is removed on exceptions (a killed process leaves a
    ``.NAME.tmp-*`` sibling, which the next build ignores and load never reads).
    The swap renames the old directory aside, renames the new one in, then
    deletes the old one, so ``target`` is missing only between two renames.
    """
    target = Path(target).absolute()
    if target.exists() and not (target / MANIFEST_NAME).is_file() and any(target.iterdir()):
        raise IndexFormatError(f"refusing to overwrite {target}: it exists and is not a ragroute index")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
