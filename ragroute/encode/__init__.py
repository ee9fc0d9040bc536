"""Text encoders: sentence-transformers on torch, or the same weights on onnxruntime (fp32 / int8).

``load_encoder()`` gives the default, offline, cached encoder::

    from ragroute.encode import load_encoder

    enc = load_encoder()  # all-MiniLM-L6-v2, backend "auto"
    vecs = enc.encode_documents(["first passage", "second passage"])

Heavy libraries (torch, sentence-transformers, onnxruntime) load only when an
encoder does, so importing this package is cheap.

Modules: :mod:`~ragroute.encode.resolve` (name -> local model folder),
:mod:`~ragroute.encode.load` (:func:`load_encoder`, backend choice), the backends
:mod:`~ragroute.encode.sentence_transformers` (torch) and
:mod:`~ragroute.encode.onnx_runtime` (onnxruntime; export in
:mod:`~ragroute.encode.onnx_export`, int8 in :mod:`~ragroute.encode.onnx_quantize`,
inference loop in :mod:`~ragroute.encode.onnx_session`), and
:mod:`~ragroute.encode.cache` (embedding cache), and :mod:`~ragroute.encode.identity` (which
encoder an artifact was made with: id, dimension, weights digest).
"""

from __future__ import annotations

from ragroute.encode.base import Encoder
from ragroute.encode.cache import CachedEncoder, EmbeddingCache
from ragroute.encode.load import AUTO_BACKEND, BACKENDS, load_encoder
from ragroute.encode.onnx_runtime import OnnxEncoder
from ragroute.encode.resolve import DEFAULT_ENCODER, ResolvedModel, default_cache_dir, resolve_model
from ragroute.encode.sentence_transformers import SentenceTransformerEncoder

__all__ = [
    "AUTO_BACKEND",
    "BACKENDS",
    "DEFAULT_ENCODER",
    "CachedEncoder",
    "EmbeddingCache",
    "Encoder",
    "OnnxEncoder",
    "ResolvedModel",
    "SentenceTransformerEncoder",
    "default_cache_dir",
    "load_encoder",
    "resolve_model",
]
