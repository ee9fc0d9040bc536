"""Saving and loading whole index directories (manifest, document store, index files)."""

from __future__ import annotations

from pathlib import Path

from ragroute.encode.base import Encoder
from ragroute.errors import IndexFormatError
from ragroute.index.dense import DenseIndex, check_encoder
from ragroute.index.docstore import DocumentStore
from ragroute.index.hybrid import HybridIndex
from ragroute.index.lexical import BM25Index
from ragroute.index.local import LocalIndex
from ragroute.index.manifest import Manifest, atomic_directory, read_manifest, write_manifest

INDEX_KINDS = ("bm25", "dense", "hybrid")


def save_index(index: LocalIndex, directory: Path) -> Manifest:
    """Write ``index`` to ``directory`` atomically: a crash leaves the previous contents intact."""
    with atomic_directory(Path(directory)) as tmp:
        index.store.save(tmp)
        index.write_files(tmp)
        manifest = Manifest(
            kind=index.kind,
            documents=len(index.store),
            encoder=index.encoder_info(),
            params=index.manifest_params(),
            name=index.name,
        )
        write_manifest(tmp, manifest)
    return manifest


def load_index(
    directory: Path,
    encoder: Encoder | None = None,
    *,
    backend: str = "auto",
    name: str | None = None,
    verify: bool = True,
) -> LocalIndex:
    """Load an index directory written by :func:`save_index`.

    Dense and hybrid indexes need an encoder: pass one (it must embed into the
    recorded space, else :class:`EncoderMismatchError`), or let the recorded
    encoder be loaded by name with ``backend``. ``verify`` checks every file's
    checksum first (a corrupt or missing file raises :class:`IndexFormatError`).
    """
    directory = Path(directory)
    manifest = read_manifest(directory, verify=verify)
    if manifest.kind not in INDEX_KINDS:
        raise IndexFormatError(f"{directory}: unknown index kind {manifest.kind!r}")
    label = name if name is not None else (manifest.name or directory.name)
    store = DocumentStore.load(directory, next_iid=manifest.params.get("next_iid"))
    if len(store) != manifest.documents:
        raise IndexFormatError(
            f"{directory}: docs.jsonl holds {len(store)} documents, manifest says {manifest.documents}"
        )
    if manifest.kind == "bm25":
        return BM25Index.read(directory, manifest.params, store, label)
    if encoder is None:
        encoder = encoder_for_manifest(manifest, backend=backend, where=str(directory))
    check_encoder(manifest.encoder, encoder.model_id, encoder.dim, str(directory))
    reader = DenseIndex if manifest.kind == "dense" else HybridIndex
    return reader.read(directory, manifest.params, encoder, store, label)


def encoder_for_manifest(manifest: Manifest, *, backend: str = "auto", where: str = "") -> Encoder:
    """Load the encoder an index was built with, by its recorded model id."""
    from ragroute.encode import load_encoder

    if not manifest.encoder or not manifest.encoder.get("model_id"):
        raise IndexFormatError(f"{where}: manifest records no encoder for a {manifest.kind} index")
    return load_encoder(manifest.encoder["model_id"], backend=backend)
