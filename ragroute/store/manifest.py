"""The artifact manifest: what a build contains, checksummed, itself included.

``manifest.json`` records the format and its version, the artifact family
(``index``, ``router``, ...) and kind within it (``dense``, ``trained``...), the
ragroute version that wrote it, free parameters, the encoder identity (for
artifacts that embed text), and the SHA-256 and size of every other file. Its
own ``checksum`` is the SHA-256 of the canonical JSON of all other fields, so a
flipped bit anywhere in the manifest is caught as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT_NAME = "ragroute-artifact"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"


def library_version() -> str:
    try:
        return metadata.version("ragroute")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def newer_format_message(where: str, version: int, reads: int, what: str = "") -> str:
    """The one line for a file written in a newer ``what`` format (``"gate "``, ...) than this
    library reads: manifests, trained routers and gates say it alike."""
    return (
        f"{where} has {what}format version {version}, newer than this ragroute "
        f"({library_version()}) reads (up to {reads}); upgrade ragroute"
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_checksum(data: dict[str, Any]) -> str:
    """SHA-256 of ``data`` without its ``checksum`` field, as canonical JSON."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass
class ArtifactManifest:
    """What one build of an artifact holds; see the module docstring."""

    family: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] | None = None
    name: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    build: str = ""
    created: str = ""
    library_version: str = field(default_factory=library_version)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": self.format,
            "format_version": self.format_version,
            "family": self.family,
            "kind": self.kind,
            "name": self.name,
            "build": self.build,
            "created": self.created,
            "library_version": self.library_version,
            "encoder": self.encoder,
            "params": self.params,
            "files": self.files,
        }
        data["checksum"] = canonical_checksum(data)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str, error: type[Exception]) -> ArtifactManifest:
        """Validate a parsed manifest (format, version, checksum, field types)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise error(f"{where} is not a {FORMAT_NAME} manifest")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise error(f"{where} is corrupt: format_version {version!r} is not a number")
        if version > FORMAT_VERSION:
            raise error(newer_format_message(where, version, FORMAT_VERSION))
        if data.get("checksum") != canonical_checksum(data):
            raise error(f"{where} is corrupt: the manifest's own checksum does not match its content")
        required = {"family": str, "kind": str, "files": dict, "params": dict}
        for key, expected in required.items():
            if not isinstance(data.get(key), expected):
                raise error(f"{where} is corrupt: field {key!r} is missing or not a {expected.__name__}")
        if data.get("encoder") is not None and not isinstance(data["encoder"], dict):
            # every reader (inspect, loading) reads it as a mapping: a string was a traceback
            raise error(f"{where} is corrupt: field 'encoder' is not a dict")
        return cls(
            family=data["family"],
            kind=data["kind"],
            params=data["params"],
            encoder=data.get("encoder"),
            name=data.get("name", ""),
            files=data["files"],
            build=data.get("build", ""),
            created=data.get("created", ""),
            library_version=data.get("library_version", ""),
            format_version=version,
        )


class NotRegularFileError(OSError):
    """A path where the store expects one of its files (``CURRENT``, a manifest) is a FIFO, a
    device or a socket: reading it could block for ever, so it is never read."""


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (``a FIFO``, ``a directory``...)."""
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def open_regular(path: Path | str, flags: int = os.O_RDONLY) -> int:
    """A descriptor of ``path`` opened without blocking, or :class:`NotRegularFileError` when it is
    no regular file (until session 41 a FIFO as ``CURRENT`` or as a manifest hung every reader
    and writer of the artifact); other errors (missing, permission) are raised as they come."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFileError(f"{path} is not a regular file ({file_kind(mode)})")
    return fd


def read_regular(path: Path | str, limit: int = -1) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), never blocking on a FIFO
    (see :func:`open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as handle:
        return handle.read(limit)


def read_manifest_or_none(build: Path) -> ArtifactManifest | None:
    """The manifest of a build folder, or None when it cannot be read."""
    from ragroute.errors import ArtifactFormatError

    try:
        data = json.loads(read_regular(build / MANIFEST_NAME).decode("utf-8"))
        return ArtifactManifest.from_dict(data, str(build), ArtifactFormatError)
    except (OSError, ValueError, ArtifactFormatError):
        return None


def write_synced(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and fsync it before returning (a note, a manifest, a pointer)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
