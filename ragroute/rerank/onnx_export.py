"""ONNX exports of a cross-encoder reranker: fp32 (fused) and dynamic int8, checked against torch.

:func:`export_onnx` writes ``model.onnx`` and ``model.int8.onnx`` plus the fast
``tokenizer.json`` into a reranker build folder. The fp32 graph is exported with
``torch.onnx.export`` (dynamic batch and sequence axes) and fused by
onnxruntime's transformer optimiser when that keeps the logits within
:data:`FP32_MAX_ERROR` of torch on probe pairs; the int8 copy quantises every
MatMul with per-channel weights and is kept only if its logits stay within
:data:`INT8_MAX_ERROR` and keep the probe pairs' order. What each copy measured
is returned (and stored in the artifact's manifest).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode.onnx_export import OPSET, fuse_bert_graph
from ragroute.encode.onnx_session import quiet
from ragroute.rerank.cross_encoder import ONNX_FP32, ONNX_INT8, _OnnxScorer

FP32_MAX_ERROR = 1e-3
INT8_MAX_ERROR = 0.35
ORDER_MARGIN = 0.2  # probe pairs whose torch logits differ by more must keep their order in int8

PROBE_PAIRS = [
    ("find the weather forecast for paris", "Weather API | get_forecast: daily forecast for a city name"),
    ("find the weather forecast for paris", "Currency converter | convert an amount between currencies"),
    ("who directed the film Jaws", "Jaws (film) | Jaws is a 1975 film directed by Steven Spielberg."),
    ("who directed the film Jaws", "Sharks | Sharks are a group of elasmobranch fish."),
    ("send an email to my team", "Gmail | send_message: send an email to recipients with a subject"),
    ("send an email to my team", "Calendar | create_event: add an event to a calendar"),
    ("aerodynamic heating of slender bodies", "heat transfer at hypersonic speeds on slender cones"),
    ("aerodynamic heating of slender bodies", "the library catalogue of a university"),
]


def export_onnx(model: Any, folder: Path, max_length: int) -> dict[str, Any]:
    """Write the fp32 and int8 ONNX copies of ``model`` (a sentence-transformers CrossEncoder)."""
    import torch

    net, tokenizer = model.model, model.tokenizer
    net.eval()
    folder = Path(folder)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    queries, texts = [q for q, _ in PROBE_PAIRS], [t for _, t in PROBE_PAIRS]
    features = tokenizer(
        queries, texts, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt"
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]
    with torch.inference_mode():
        reference = net(**features).logits.view(-1).numpy()

    class _Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).logits

    raw = folder / "raw.onnx"
    with quiet(), torch.no_grad():
        torch.onnx.export(
            _Logits(net),
            tuple(features[n] for n in names),
            str(raw),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    report: dict[str, Any] = {}
    fused = folder / "fused.onnx"
    try:
        fuse_bert_graph(raw, fused, net.config)
        if _error(folder, fused, max_length, queries, texts, reference) <= FP32_MAX_ERROR:
            os.replace(fused, raw)
            report["fp32_graph"] = "fused"
    except Exception:  # noqa: BLE001 - fusion is an optimisation; the plain graph is kept
        report["fp32_graph"] = "plain"
    fused.unlink(missing_ok=True)
    os.replace(raw, folder / ONNX_FP32)
    report["fp32_max_logit_error"] = round(
        _error(folder, folder / ONNX_FP32, max_length, queries, texts, reference), 6
    )
    report.setdefault("fp32_graph", "plain")

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = folder / ONNX_INT8
    with quiet():
        quantize_dynamic(
            folder / ONNX_FP32,
            int8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    scores = _OnnxScorer(folder, int8, max_length, None, alone=True)(queries, texts)
    error = float(np.max(np.abs(scores - reference)))
    same_order = all(  # the relevant/irrelevant order of each probe pair, where torch separates them
        (scores[i] > scores[i + 1]) == (reference[i] > reference[i + 1])
        for i in range(0, len(scores), 2)
        if abs(reference[i] - reference[i + 1]) > ORDER_MARGIN
    )
    report["int8_max_logit_error"] = round(error, 4)
    report["int8_same_pair_order"] = same_order
    if error > INT8_MAX_ERROR or not same_order:
        int8.unlink()
        report["int8"] = "dropped: too far from fp32"
    return report


def _error(
    folder: Path, file: Path, max_length: int, queries: list[str], texts: list[str], ref: np.ndarray
) -> float:
    scores = _OnnxScorer(folder, file, max_length, None)(queries, texts)
    return float(np.max(np.abs(scores - ref)))
