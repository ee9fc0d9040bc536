"""The ``onnx-int8`` model: dynamic int8 quantisation of an ONNX export.

``quantize_dynamic`` runs on the fused fp32 graph of
:mod:`ragroute.encode.onnx_export`: int8 per-channel weights for every MatMul and
attention projection, word embeddings kept in fp32 (see :func:`quantize_int8`).
The int8 model runs one text per call so its vectors do not depend on batching
(:data:`INT8_TEXTS_PER_RUN`), and its worst probe cosine to fp32 is recorded
next to it (``backend="auto"`` refuses it below :data:`INT8_MIN_COSINE`), with
its size and SHA-256: an int8 file that does not match is quantised again. The
export's lock (:func:`ragroute.encode.onnx_session.lock_file`) serialises
quantisations; its holder removes what killed ones left (``.int8.*`` files).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ragroute.encode.onnx_session import (
    FORMAT_VERSION,
    FP32_FILE,
    META_FILE,
    PROBE_TEXTS,
    Runner,
    agreement,
    file_digests,
    first_bad_file,
    lock_file,
    quiet,
    read_meta,
    umask_mode,
    write_meta,
)
from ragroute.errors import RagrouteError
from ragroute.progress import say_progress
from ragroute.store.locks import crash_point, writer_lock

INT8_META_FILE = "ragroute_onnx_int8.json"
INT8_FILE = "model.int8.onnx"

INT8_MIN_COSINE = 0.97
"""An int8 copy whose worst probe cosine to fp32 is below this is refused by ``backend="auto"``."""

INT8_FP32_FFN_OUT_LAYERS = 0
"""FFN down-projections of the first N layers to keep in fp32 in the int8 model (default none).

Measured on all-MiniLM-L6-v2 (quantising one MatMul at a time on 150 med
passages): the FFN down-projections of layers 0-2 cause about half of the int8
error (their input is the GELU output, whose outliers stretch the uint8
activation scale). Keeping those three in fp32 lifts the mean cosine to torch
from 0.995 to 0.998 but costs ~15% speed, and nDCG@10 held on med and cran
either way, so the default quantises them too.
"""

INT8_TEXTS_PER_RUN = 1
"""int8 runs one text per session call, which makes its vectors independent of batching.

Dynamic quantisation picks one activation scale per tensor, i.e. per batch, so
in a batch a text's vector would depend on its neighbours (cosine ~0.995
between two batchings), and an index rebuilt incrementally through the
embedding cache would differ from one built at once. One text per call also
has no padding and, measured on med passages and short queries, costs
nothing on passages and ~7% on short queries.
"""


def ffn_down_projections(model: Any) -> list[str]:
    """Names of the MatMuls whose weight is taller than wide (FFN down-projections), in graph order."""
    from onnx import numpy_helper

    shapes = {init.name: tuple(numpy_helper.to_array(init).shape) for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2:
            shape = shapes.get(node.input[1])
            if shape is not None and len(shape) == 2 and shape[0] > shape[1]:
                names.append(node.name)
    return names


def quantize_int8(
    model_dir: Path, fp32_layers: int = INT8_FP32_FFN_OUT_LAYERS, target_name: str = INT8_FILE
) -> Path:
    """Write ``model.int8.onnx`` next to ``model.onnx`` (dynamic int8, per-channel weights).

    MatMul and fused Attention weights are quantised; word embeddings and the FFN
    down-projections of the first ``fp32_layers`` layers stay fp32. The worst
    cosine to fp32 on the probe sentences is recorded in ``ragroute_onnx_int8.json``
    (``auto`` refuses the int8 model below :data:`INT8_MIN_COSINE`).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = read_meta(model_dir / META_FILE)
    if meta is None:
        raise RagrouteError(f"no ONNX export in {model_dir}")
    source = model_dir / FP32_FILE
    files = meta.get("files")
    recorded: dict[str, Any] = files if isinstance(files, dict) else {}
    if FP32_FILE in recorded and first_bad_file(model_dir, {FP32_FILE: recorded[FP32_FILE]}):
        raise RagrouteError(
            f"ONNX export {model_dir} is corrupt ({FP32_FILE}); delete the folder to export again"
        )
    keep = ffn_down_projections(onnx.load(str(source), load_external_data=False))[: max(0, fp32_layers)]
    fd, tmp_name = tempfile.mkstemp(prefix=".int8.", suffix=".onnx", dir=model_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with quiet():
            quantize_dynamic(
                source,
                tmp,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Attention"],
                nodes_to_exclude=keep,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        reference = Runner(model_dir, meta, source, None).encode(
            list(PROBE_TEXTS), 4, False, int(meta["dim"])
        )
        cosine = agreement(model_dir, meta, tmp, reference, max_texts=INT8_TEXTS_PER_RUN)
        info = {
            "format": FORMAT_VERSION,
            "fingerprint": meta["fingerprint"],
            "fp32_ffn_out_layers": fp32_layers,
            "file": target_name,
            "per_channel": True,
            "fp32_nodes": keep,
            "min_cosine_vs_fp32": round(cosine, 6),
            **file_digests(tmp.parent, [tmp.name])[tmp.name],
        }
        os.chmod(tmp, umask_mode(0o666))
        crash_point("int8: quantised")
        os.replace(tmp, model_dir / target_name)
        crash_point("int8: model replaced")
        info_file = model_dir / (INT8_META_FILE if target_name == INT8_FILE else f"{target_name}.json")
        write_meta(info_file, info)
    finally:
        tmp.unlink(missing_ok=True)
    return model_dir / target_name


def ensure_int8(model_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The int8 model in ``model_dir`` (quantising it first if missing, stale or corrupt) and its info."""
    state = _int8_state(model_dir)
    if state is not True:
        with writer_lock(lock_file(model_dir), f"the int8 model in {model_dir}"):
            state = _int8_state(model_dir)
            if state is None:  # quantised before the checksums existed: record them now
                info = read_meta(model_dir / INT8_META_FILE) or {}
                write_meta(
                    model_dir / INT8_META_FILE, {**info, **file_digests(model_dir, [INT8_FILE])[INT8_FILE]}
                )
            elif state is False:
                for leftover in model_dir.glob(".int8.*"):  # killed quantisations (we hold the lock)
                    leftover.unlink(missing_ok=True)
                crash_point("int8: quantising")
                say_progress(f"quantising the ONNX model in {model_dir} to int8 (once per model)")
                quantize_int8(model_dir)
    return model_dir / INT8_FILE, read_meta(model_dir / INT8_META_FILE) or {}


def int8_ready(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a current int8 model (intact, or from before checksums)."""
    return _int8_state(model_dir) is not False


def _int8_state(model_dir: Path) -> bool | None:
    """``True``: current and intact; ``False``: quantise again; ``None``: current, no checksum recorded."""
    meta = read_meta(model_dir / META_FILE) or {}
    info = read_meta(model_dir / INT8_META_FILE)
    if not (
        info
        and info.get("format") == FORMAT_VERSION
        and info.get("fingerprint") == meta.get("fingerprint")
        and info.get("fp32_ffn_out_layers") == INT8_FP32_FFN_OUT_LAYERS
        and (model_dir / INT8_FILE).is_file()
    ):
        return False
    if "sha256" not in info:
        return None
    return (
        first_bad_file(model_dir, {INT8_FILE: {"bytes": info.get("bytes"), "sha256": info["sha256"]}}) is None
    )
