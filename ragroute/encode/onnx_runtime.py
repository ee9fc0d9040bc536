"""The ``onnx`` and ``onnx-int8`` backends: :class:`OnnxEncoder`, onnxruntime on CPU, pooling in numpy.

:meth:`OnnxEncoder.from_model` exports the model on first use
(:mod:`ragroute.encode.onnx_export`) and, for ``onnx-int8``, quantises the export
(:mod:`ragroute.encode.onnx_quantize`); the graph then runs through
:class:`ragroute.encode.onnx_session.Runner`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import (
    PromptedEncoder,
    check_batch_size,
    check_texts,
    encoder_prompts,
    want_progress,
)
from ragroute.encode.onnx_export import ensure_export
from ragroute.encode.onnx_quantize import INT8_MIN_COSINE, INT8_TEXTS_PER_RUN, ensure_int8, int8_ready
from ragroute.encode.onnx_session import FORMAT_VERSION, FP32_FILE, META_FILE, Runner, read_meta
from ragroute.encode.resolve import DEFAULT_ENCODER, ResolvedModel, resolve_model
from ragroute.errors import RagrouteError, first_line


class OnnxEncoder(PromptedEncoder):
    """Encoder backends ``"onnx"`` (fp32) and ``"onnx-int8"``: onnxruntime on CPU.

    Build one with :meth:`from_model` (exports on first use); the constructor
    takes an existing export folder and never imports torch, so loading a cached
    export takes well under a second.
    """

    def __init__(self, model_dir: Path, *, int8: bool = False, threads: int | None = None) -> None:
        model_dir = Path(model_dir)
        meta = read_meta(model_dir / META_FILE)
        if meta is None or meta.get("format") != FORMAT_VERSION:
            raise RagrouteError(f"no usable ONNX export in {model_dir}")
        self.model_dir = model_dir
        self.meta = meta
        self.int8 = bool(int8)
        self.quantization: dict[str, Any] = {}
        model_file = model_dir / FP32_FILE
        if self.int8:
            model_file, self.quantization = ensure_int8(model_dir)
        self.model_file = model_file
        self.backend = "onnx-int8" if self.int8 else "onnx"
        self.model_id = str(meta["model_id"])
        # vectors cached under the digest of the model folder the export was made from (an export
        # from before session 38: its file-times fingerprint)
        self.cache_variant = str(meta.get("weights") or meta.get("fingerprint", ""))
        # the identity indexes record (describe()), whichever way the export is opened: until
        # session 56 an encoder opened on its folder recorded none, so its indexes took any weights
        self.weights = str(meta["weights"]) if meta.get("weights") else None
        if self.int8:
            # the int8 file's own digest too: a re-quantisation (the file was lost or corrupt) by
            # another onnxruntime may round otherwise, and its vectors must not meet the old ones
            recipe = (
                self.quantization.get("fp32_ffn_out_layers"),
                INT8_TEXTS_PER_RUN,
                FORMAT_VERSION,
                str(self.quantization.get("sha256", ""))[:16],
            )
            self.cache_variant += "|int8:" + ",".join(map(str, recipe))
        self.dim = int(meta["dim"])
        self._max_seq_length = int(meta["max_seq_length"])
        self._runner = Runner(model_dir, meta, model_file, threads)
        if self.int8:
            self._runner.max_texts = INT8_TEXTS_PER_RUN
        prompts = dict(meta.get("prompts") or {})
        default = str(meta.get("default_prompt") or "")  # sentence-transformers' default_prompt_name
        self._set_model_prompts(*encoder_prompts(prompts, default))

    @classmethod
    def from_model(
        cls,
        model: ResolvedModel | str | os.PathLike[str] = DEFAULT_ENCODER,
        cache_dir: Path | None = None,
        *,
        int8: bool = False,
        threads: int | None = None,
        require_agreement: bool = False,
    ) -> OnnxEncoder:
        """Export ``model`` into ``cache_dir`` if needed and load it.

        With ``require_agreement`` an int8 model whose probe cosine to fp32 is
        below :data:`INT8_MIN_COSINE` raises :class:`RagrouteError` (``auto`` then
        falls back to fp32).
        """
        resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
        try:
            # the int8 backend reads model.onnx only to quantise it, so only then is it checked
            model_dir = ensure_export(resolved, cache_dir, verify_model=not int8)
            if int8 and not int8_ready(model_dir):
                model_dir = ensure_export(resolved, cache_dir)
            encoder = cls(model_dir, int8=int8, threads=threads)
            # of the folder it was exported from (recorded at export; the folder as it is now, which
            # the export was checked against, for an export from before session 38)
            encoder.weights = str(encoder.meta.get("weights") or resolved.content_digest())
        except RagrouteError:
            raise
        except Exception as exc:  # noqa: BLE001 - report export/quantisation failures as one line
            step = "int8 quantisation" if int8 else "onnx export"
            raise RagrouteError(f"{step} of {resolved.model_id} failed: {first_line(exc)}") from exc
        if int8 and require_agreement:
            cosine = float(encoder.quantization.get("min_cosine_vs_fp32", 0.0))
            if cosine < INT8_MIN_COSINE:
                raise RagrouteError(
                    f"int8 {resolved.model_id} agrees with fp32 only to cosine {cosine:.3f}"
                    f" (< {INT8_MIN_COSINE})"
                )
        return encoder

    def _encode(
        self, texts: Sequence[str], prompt: str, batch_size: int, show_progress: bool | None
    ) -> np.ndarray:
        items = check_texts(texts)
        check_batch_size(batch_size)
        if prompt:
            items = [prompt + text for text in items]
        return self._runner.encode(items, batch_size, want_progress(show_progress, len(items)), self.dim)

    def fast_tokenizer(self) -> Any:
        """The runner's tokenizer (it truncates to ``max_seq_length``, keeping the rest in each
        encoding's ``overflowing``)."""
        return self._runner.tokenizer

    def __repr__(self) -> str:
        return f"OnnxEncoder(model_id={self.model_id!r}, backend={self.backend!r}, dim={self.dim})"
