"""Text encoders: sentence-transformers on torch, or the same weights on onnxruntime (fp32 / int8).

``load_encoder()`` gives the default, offline, cached encoder::

    from ragroute.encode import load_encoder

    enc = load_encoder()  # all-MiniLM-L6-v2, backend "auto"
    vecs = enc.encode_documents(["first passage", "second passage"])

Heavy libraries (torch, sentence-transformers, onnxruntime) load only when an
encoder does, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragroute.encode.base import Encoder
from ragroute.encode.cache import CachedEncoder, EmbeddingCache
from ragroute.encode.resolve import (
    AUTO_BACKEND,
    BACKENDS,
    DEFAULT_ENCODER,
    ResolvedModel,
    default_cache_dir,
    load_encoder,
    resolve_model,
)

if TYPE_CHECKING:
    from ragroute.encode.onnx import OnnxEncoder
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


def __getattr__(name: str) -> Any:
    # The backend classes are importable from here without importing their modules eagerly.
    if name == "OnnxEncoder":
        from ragroute.encode.onnx import OnnxEncoder

        return OnnxEncoder
    if name == "SentenceTransformerEncoder":
        from ragroute.encode.sentence_transformers import SentenceTransformerEncoder

        return SentenceTransformerEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
