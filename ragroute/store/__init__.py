"""The artifact store: one on-disk format for everything ragroute persists.

Indexes, trained routers, and later graphs, rerankers, gates and experts are
*artifacts*: a folder of files described by a checksummed manifest (family,
kind, format version, library version, parameters, encoder identity, sha256 of
every file). Writes never touch a build that readers may be using: each build
goes into its own immutable folder, and a one-line pointer file is swapped
atomically to publish it. A reader resolves the pointer once and reads only
that build, so it can never mix two builds (see :mod:`ragroute.store.artifact`).
"""

from ragroute.store.artifact import (
    Snapshot,
    artifact_exists,
    artifact_lock,
    building,
    check_replaceable,
    check_writable,
    clean_artifact,
    load_artifact,
    open_snapshot,
    read_artifact,
    write_artifact,
)
from ragroute.store.manifest import ArtifactManifest, sha256_file

__all__ = [
    "ArtifactManifest",
    "Snapshot",
    "artifact_exists",
    "artifact_lock",
    "building",
    "check_replaceable",
    "check_writable",
    "clean_artifact",
    "load_artifact",
    "open_snapshot",
    "read_artifact",
    "sha256_file",
    "write_artifact",
]
