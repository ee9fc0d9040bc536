"""Loading an encoder: :func:`load_encoder` picks a backend and builds it, offline.

This module sits above the backends (:mod:`ragroute.encode.sentence_transformers`,
:mod:`ragroute.encode.onnx_runtime`) and name resolution
(:mod:`ragroute.encode.resolve`); none of those imports it back. The heavy
libraries (torch, sentence-transformers, onnxruntime) are imported only when an
encoder is actually loaded, so importing it stays fast.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from ragroute.encode.base import Encoder
from ragroute.encode.cache import CachedEncoder, EmbeddingCache
from ragroute.encode.onnx_runtime import OnnxEncoder
from ragroute.encode.resolve import DEFAULT_ENCODER, ResolvedModel, default_cache_dir, with_resolved_model
from ragroute.encode.sentence_transformers import SentenceTransformerEncoder
from ragroute.errors import InvalidArgumentError, RagrouteError, check_k, check_path

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
"""Explicit backends accepted by :func:`load_encoder` (besides ``"auto"``)."""

AUTO_BACKEND = "onnx-int8"
"""What ``backend="auto"`` runs: the fastest backend whose retrieval quality held when measured.

``ragroute bench encode --data .../med --data .../cran --repeats 2``
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
    ``cache_dir`` (default :func:`default_cache_dir`: ``$RAGROUTE_CACHE``, else
    ``$XDG_CACHE_HOME/ragroute``, else ``~/.cache/ragroute``) holds the ONNX exports and
    ``embeddings.sqlite``; with ``use_cache`` the encoder is wrapped in a
    :class:`~ragroute.encode.cache.CachedEncoder` so unchanged documents are
    never re-encoded. ``threads`` (a whole number >= 1) defaults to the number of usable cores
    (until session 53 it went unchecked: -1 failed inside torch with a bare RuntimeError and ran
    onnxruntime on its default, 0 ran on every core, 2.5 on 2). The model itself is
    loaded once per process while an encoder of it is in use: a second call with the same model
    files, backend, cache folder and threads shares its weights (see :func:`_shared_model`).
    """
    check_path(name_or_path, "load_encoder needs a model name or folder path")
    backend_key = (backend or "auto").strip().lower()
    if backend_key not in (*BACKENDS, "auto"):
        raise RagrouteError(f"unknown encoder backend {backend!r}: expected auto, {', '.join(BACKENDS)}")
    if threads is not None:
        threads = check_k(threads, "load_encoder: threads")
    if cache_dir is not None and not os.fspath(check_path(cache_dir, "load_encoder: cache_dir")).strip():
        # until session 56 the working directory, which got the ONNX exports and the embedding cache
        raise InvalidArgumentError(
            "load_encoder: cache_dir is empty: give a folder, or None for the per-user cache folder"
        )

    def load(resolved: ResolvedModel) -> tuple[Encoder, Path]:
        if cache_dir is not None:
            cache_root = Path(cache_dir).expanduser()
        else:  # made (and announced) only when something will be written there
            cache_root = default_cache_dir(create=use_cache or backend_key != "torch")
        return _shared_model(resolved, backend_key, cache_root, threads), cache_root

    # a full expert's model loads while its build's reader lock is held: until session 47 it loaded
    # after the lock was let go, and two retrains publishing meanwhile could prune it mid-load
    encoder, cache_root = with_resolved_model(name_or_path, load)

    if use_cache:
        encoder = CachedEncoder(encoder, EmbeddingCache.in_dir(cache_root))
    return encoder


_MODELS: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()
_LOADING: dict[tuple[Any, ...], threading.Lock] = {}  # a lock per model being loaded


def _shared_model(
    resolved: ResolvedModel, backend_key: str, cache_root: Path, threads: int | None
) -> Encoder:
    """The model of ``resolved`` on ``backend_key``, loaded once per process while one is in use.

    A second :func:`load_encoder` of the same folder (same files: names, sizes, mtimes), backend,
    cache folder and threads gets the model already in memory (each call still gets its own
    encoder object, :func:`_own_view`, and its own embedding-cache wrapper). Until session 42 every
    call loaded the weights again: two ``load_routing`` of one config held two ONNX sessions (about
    65 MB each for MiniLM int8)."""
    key = (
        backend_key,
        str(resolved.path),
        resolved.model_id,
        resolved.fingerprint(),
        str(cache_root),
        threads,
    )
    with _MODELS_LOCK:
        encoder: Encoder | None = _MODELS.get(key)
        loading = None if encoder is not None else _LOADING.setdefault(key, threading.Lock())
    if loading is not None:
        # one load of a model at a time (two threads asking for it load it once); other models
        # load meanwhile (until session 42 one lock held through every load: a first-time export of
        # one model kept the threads asking for another, even one loaded already, waiting)
        with loading:
            with _MODELS_LOCK:
                encoder = _MODELS.get(key)
            try:
                if encoder is None:
                    encoder = _load_model(resolved, backend_key, cache_root, threads)
                    with _MODELS_LOCK:
                        _MODELS[key] = encoder
            finally:
                with _MODELS_LOCK:
                    _LOADING.pop(key, None)
    assert encoder is not None
    return _own_view(encoder)


def _load_model(resolved: ResolvedModel, backend_key: str, cache_root: Path, threads: int | None) -> Encoder:
    if backend_key == "auto":
        return _load_auto(resolved, cache_root, threads)
    if backend_key == "torch":
        return SentenceTransformerEncoder(resolved, threads=threads)
    return OnnxEncoder.from_model(resolved, cache_root, int8=backend_key == "onnx-int8", threads=threads)


def _own_view(model: Encoder) -> Encoder:
    """A caller's own encoder over a shared model: a shallow copy, so the weights, ONNX session and
    tokenizer are shared while what a caller sets on its encoder (its prompts) is
    its own (until session 42 every caller got the one object, and one caller's setting changed
    the others' vectors); it keeps the shared model alive while it is in use."""
    view = copy.copy(model)
    vars(view)["_shared_with"] = model
    return view


def _load_auto(resolved: ResolvedModel, cache_root: Path, threads: int | None) -> Encoder:
    """Load :data:`AUTO_BACKEND`, falling back to slower backends (with a warning) when it is unavailable."""
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
    return SentenceTransformerEncoder(resolved, threads=threads)
