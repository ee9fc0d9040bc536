"""Saving and loading whole indexes through the artifact store (:mod:`ragroute.store`).

An index is an artifact of family ``index`` whose kind is a registered index kind
(:data:`ragroute.registry.INDEX_KINDS`): its build folder holds ``docs.jsonl``
plus the kind's own files. Loading reads one published build only, so a query
never mixes two builds even while another process rebuilds the same index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragroute.encode.base import Encoder
from ragroute.errors import (
    IndexFormatError,
    InvalidArgumentError,
    RagrouteError,
    UnknownKindError,
    check_encoder_object,
    check_path,
)
from ragroute.index.dense import check_encoder
from ragroute.index.docstore import DocumentStore
from ragroute.index.local import LocalIndex
from ragroute.registry import INDEX_KINDS
from ragroute.store import ArtifactManifest, Snapshot, open_snapshot, read_artifact, write_artifact

FAMILY = "index"


def index_kinds() -> list[str]:
    """The registered index kinds (``bm25``, ``dense``, ``hybrid``, ...)."""
    return INDEX_KINDS.names()


def save_index(index: LocalIndex, directory: str | os.PathLike[str]) -> ArtifactManifest:
    """Publish ``index`` as a new build at ``directory``; a crash leaves the previous build current."""
    if not isinstance(index, LocalIndex):  # an AttributeError from inside until session 37
        raise InvalidArgumentError(f"save_index needs an index (build_index's), got {type(index).__name__}")
    check_path(directory, "save_index needs a folder path")
    # one version of the documents from the manifest to the last file: an add or delete another
    # thread makes meanwhile waits (until session 38 it landed between them, and the published
    # build said 150 documents beside a docs.jsonl of 50, or loaded into wrong answers)
    with (
        index.store.reading(),
        write_artifact(
            Path(directory),
            FAMILY,
            index.kind,
            name=index.name,
            params={**index.manifest_params(), "documents": len(index.store)},
            encoder=index.encoder_info(),
            error=IndexFormatError,
        ) as build,
    ):
        index.store.save(build.path)
        index.write_files(build.path)
    return build.manifest


def read_index_manifest(directory: str | os.PathLike[str], *, verify: bool = True) -> ArtifactManifest:
    """The manifest of the published build (checked; with ``verify``, every file's checksum too)."""
    return open_snapshot(Path(directory), family=FAMILY, verify=verify, error=IndexFormatError).manifest


def load_index(
    directory: str | os.PathLike[str],
    encoder: Encoder | None = None,
    *,
    backend: str = "auto",
    name: str | None = None,
    verify: bool = True,
) -> LocalIndex:
    """Load the published build of an index folder written by :func:`save_index`.

    Dense and hybrid indexes need an encoder: pass one (it must embed into the
    recorded space, else :class:`EncoderMismatchError`), or let the recorded
    encoder be loaded by name with ``backend``. ``verify`` checks every file's
    checksum first (a corrupt or missing file raises :class:`IndexFormatError`), and what an
    index keeps outside its files (an external store's collection) after loading.
    """
    path = Path(check_path(directory, "load_index needs an index folder path"))
    given = check_encoder_object(encoder, "load_index")
    return load_index_choosing(path, lambda _manifest: given, backend=backend, name=name, verify=verify)


def load_index_choosing(
    directory: str | os.PathLike[str],
    choose: Callable[[ArtifactManifest], Encoder | None],
    *,
    backend: str = "auto",
    name: str | None = None,
    verify: bool = True,
) -> LocalIndex:
    """:func:`load_index` with the encoder ``choose`` returns for the manifest of the very build it
    loads (None: the recorded one, loaded by name with ``backend``), called under that build's
    shared lock: an encoder picked from an index's manifest always belongs to the build read.

    Until session 47 ``ragroute query`` and ``eval --index`` picked it from one read of the
    manifest and loaded the index in a second: a rebuild with another encoder published between
    the two failed the query with "built with encoder X, not Y; rebuild the index".
    """
    path = Path(check_path(directory, "load_index needs an index folder path"))
    recorded: dict[str, Encoder] = {}  # loaded by name: once per model id, however often a read is retried

    def read(snapshot: Snapshot) -> LocalIndex:
        index = _read_index(snapshot, choose(snapshot.manifest), recorded, backend, name)
        if verify:
            index.verify_contents()
        return index

    return read_artifact(path, read, family=FAMILY, verify=verify, error=IndexFormatError)


def _read_index(
    snapshot: Snapshot, encoder: Encoder | None, recorded: dict[str, Encoder], backend: str, name: str | None
) -> LocalIndex:
    manifest = snapshot.manifest
    where = str(snapshot.root)
    try:
        cls = INDEX_KINDS.get(manifest.kind, where)
    except UnknownKindError as exc:
        raise IndexFormatError(str(exc)) from None
    label = name if name is not None else (manifest.name or snapshot.root.name)
    params = manifest.params
    store = DocumentStore.load(snapshot.path, next_iid=params.get("next_iid"))
    if len(store) != params.get("documents"):
        raise IndexFormatError(
            f"{where}: docs.jsonl holds {len(store)} documents, manifest says {params.get('documents')}"
        )
    if cls.needs_encoder:
        if encoder is None:
            model_id = str((manifest.encoder or {}).get("model_id"))
            if model_id not in recorded:
                recorded[model_id] = encoder_for_manifest(manifest, backend=backend, where=where)
            encoder = recorded[model_id]
        check_encoder(manifest.encoder, encoder.model_id, encoder.dim, where, encoder)
    index = cls.read(snapshot.path, params, store, label, encoder)
    index.manifest = manifest
    return index


class RecordedEncoder:
    """Stands in for the encoder an index records, for work that never embeds (graph stats and
    export, checking what an index keeps outside its files)."""

    backend = "recorded"

    def __init__(self, info: dict[str, Any] | None) -> None:
        info = info or {}
        self.model_id = str(info.get("model_id", ""))
        self.dim = int(info.get("dim") or 0)

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}

    def encode_queries(self, *_args: Any, **_kwargs: Any) -> Any:
        raise RagrouteError("this command does not embed text")

    encode_documents = encode_queries


def verify_outside_contents(directory: Path) -> bool:
    """Check what the published index at ``directory`` keeps outside its files (an external
    store's collection) against what was saved, without loading its encoder; a one-line
    :class:`IndexFormatError` when it differs. False when its kind keeps nothing outside."""
    manifest = read_index_manifest(Path(directory), verify=False)
    cls = INDEX_KINDS.get(manifest.kind, str(directory))
    if getattr(cls, "verify_contents", None) is LocalIndex.verify_contents:
        return False
    # the encoder record of the build loaded (of the one read above until session 47: a rebuild
    # with another encoder between the two was "built with encoder X, not Y")
    load_index_choosing(Path(directory), lambda loaded: RecordedEncoder(loaded.encoder), verify=True)
    return True


def encoder_for_manifest(manifest: ArtifactManifest, *, backend: str = "auto", where: str = "") -> Encoder:
    """Load the encoder an index was built with, by its recorded model id."""
    from ragroute.encode import load_encoder

    if not manifest.encoder or not manifest.encoder.get("model_id"):
        raise IndexFormatError(f"{where}: manifest records no encoder for a {manifest.kind} index")
    return load_encoder(manifest.encoder["model_id"], backend=backend)


def release_build(removed: ArtifactManifest, kept: list[ArtifactManifest]) -> None:
    """Drop the external store collection of an index build the artifact store pruned, unless a
    kept build names the same collection (``RELEASES``; local indexes hold nothing outside)."""
    cls = INDEX_KINDS.get(removed.kind) if removed.kind in INDEX_KINDS else None
    release = getattr(cls, "release_collection", None)
    if release is not None:
        release(removed.params, [m.params for m in kept if m.kind == removed.kind])
