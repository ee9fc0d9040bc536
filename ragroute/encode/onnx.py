"""The ``onnx`` and ``onnx-int8`` backends: onnxruntime on CPU, pooling in numpy.

The sentence-transformers model is exported once per ``model_id`` into
``cache_dir/<slug>/`` (``model.onnx`` + ``tokenizer.json`` + ``ragroute_onnx.json``),
written to a temporary folder and renamed into place atomically, so concurrent
processes never see half an export. Only the transformer is exported (legacy
TorchScript exporter, dynamic batch and sequence axes); pooling and
normalisation follow the model's ``modules.json`` and run in numpy.

Export steps, each checked against sentence-transformers on probe sentences
(cosine >= :data:`EXPORT_MIN_COSINE` or the export is refused):

1. ``torch.onnx.export`` of the HF model with eager attention (its attention
   pattern is one onnxruntime recognises);
2. onnxruntime's transformer optimiser fuses attention, GELU, layer norms and the
   embedding block into single kernels (BERT-family models; others keep the
   plain graph), which is what makes fp32 ONNX faster than torch here;
3. ``onnx-int8``: ``quantize_dynamic`` on the fused graph: int8 per-channel
   weights for every MatMul and attention projection, word embeddings kept in
   fp32 (see :func:`quantize_int8`); it runs one text per call so its vectors
   do not depend on batching (:data:`INT8_TEXTS_PER_RUN`).

Nothing is ever written next to the source model (it may live in site-packages).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import (
    PromptedEncoder,
    check_batch_size,
    check_texts,
    document_prompt,
    l2_normalize,
    query_prompt,
    want_progress,
)
from ragroute.encode.resolve import (
    DEFAULT_ENCODER,
    ResolvedModel,
    default_cache_dir,
    model_slug,
    resolve_model,
    set_offline_env,
)
from ragroute.errors import RagrouteError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "ragroute_onnx.json"
INT8_META_FILE = "ragroute_onnx_int8.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
OPSET = 17

EXPORT_MIN_COSINE = 0.9999
"""fp32 ONNX must agree with sentence-transformers at least this well on every probe sentence."""

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

MAX_BATCH_TOKENS = 2048
"""fp32: a batch holds at most ``batch_size`` texts and at most this many (padded) tokens.

Small batches of similar length beat big ones on CPU (the activations stay in
cache): on 2 cores, 256-token passages ran fastest 4-8 to a batch.
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

PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "What are the effects of maternal glucose levels on the fetus?",
    "Boundary layer flow over a flat plate at supersonic speeds was measured in the wind tunnel.",
    "hi",
    "",
    "Émile Zola wrote « J'accuse » in 1898 — über naïve café, 東京 and Ωmega.",
    "SELECT * FROM users WHERE id = 42; -- numbers 3.14159, 2.71828 and 1e-9",
    "correlation between maternal and fetal plasma levels of glucose and free fatty acids . " * 30,
    "Retrieval-augmented generation decides when to look things up.",
    "A B C D E F G",
)

_SUPPORTED_POOLING = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_FUSABLE_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "albert"}


# --------------------------------------------------------------------------- layout


def read_layout(model_path: Path) -> dict[str, Any]:
    """Read the module stack of a sentence-transformers folder (``modules.json``, pooling config).

    Returns ``{"transformer_path", "pooling", "include_prompt", "normalize"}``.
    A plain Hugging Face folder (no ``modules.json``) means mean pooling, which is
    what sentence-transformers does with it. Modules the ONNX backend cannot run
    (Dense, ...) raise :class:`RagrouteError`.
    """
    layout: dict[str, Any] = {"transformer_path": "", "pooling": ["mean"], "include_prompt": True}
    layout["normalize"] = False
    modules_file = model_path / "modules.json"
    if not modules_file.is_file():
        return layout
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RagrouteError(f"cannot read {modules_file}: {exc}") from exc
    seen_transformer = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = str(module.get("path", "") or "")
        if kind == "Transformer" and not seen_transformer:
            layout["transformer_path"] = sub
            seen_transformer = True
        elif kind == "Pooling":
            layout.update(_read_pooling(model_path / sub / "config.json"))
        elif kind == "Normalize":
            layout["normalize"] = True
        else:
            raise RagrouteError(
                f"onnx backend cannot run module {kind or '?'} of {model_path.name}; use backend 'torch'"
            )
    if not seen_transformer:
        raise RagrouteError(f"onnx backend needs a Transformer module in {modules_file}; use backend 'torch'")
    return layout


def _read_pooling(config_file: Path) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    for name in modes:
        if name not in _SUPPORTED_POOLING:
            raise RagrouteError(f"onnx backend does not support pooling mode {name!r}; use backend 'torch'")
    return {"pooling": modes, "include_prompt": bool(config.get("include_prompt", True))}


def pool(hidden: np.ndarray, mask: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Pool ``(batch, seq, dim)`` token states under a right-padded ``mask`` like sentence-transformers."""
    hidden = hidden.astype(np.float32, copy=False)
    m = mask.astype(np.float32)[:, :, None]
    lengths = mask.sum(axis=1).astype(np.int64)
    parts: list[np.ndarray] = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(np.where(m > 0, hidden, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            summed = (hidden * m).sum(axis=1)
            count = np.maximum(m.sum(axis=1), 1e-9)
            parts.append(summed / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            weights = m * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
            parts.append((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            parts.append(hidden[np.arange(hidden.shape[0]), np.maximum(lengths - 1, 0)])
        else:  # pragma: no cover - read_layout rejects unknown modes
            raise RagrouteError(f"unsupported pooling mode {mode!r}")
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------- runtime


def _umask_mode(mode: int) -> int:
    """``mode`` minus the process umask (mkdtemp/mkstemp create 0700/0600 entries)."""
    umask = 0o022
    with contextlib.suppress(OSError, ValueError, IndexError):  # Linux: read it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return mode & ~umask


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def make_session(model_file: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session: all graph optimisations, intra-op threads = cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads or _cpu_count())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


class _Runner:
    """Tokenise, batch by length, run a session, pool and normalise."""

    def __init__(self, model_dir: Path, meta: dict[str, Any], model_file: Path, threads: int | None) -> None:
        from tokenizers import Tokenizer

        self.meta = meta
        self.tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self.tokenizer.no_padding()
        max_len = int(meta["max_seq_length"])
        if max_len > 0:
            self.tokenizer.enable_truncation(max_length=max_len)
        else:
            self.tokenizer.no_truncation()
        self.pad_id = int(meta.get("pad_id") or 0)
        self.max_tokens = MAX_BATCH_TOKENS
        self.max_texts: int | None = None  # cap on texts per session call, whatever batch_size says
        self.pooling = list(meta["pooling"])
        self.session = make_session(model_file, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def run_batch(self, encodings: Sequence[Any]) -> np.ndarray:
        lengths = [len(e.ids) for e in encodings]
        width = max(1, *lengths)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, (enc, n) in enumerate(zip(encodings, lengths, strict=True)):
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feed_all = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {name: feed_all[name] for name in self.inputs}
        hidden = self.session.run([self.output], feed)[0]
        return pool(hidden, mask, self.pooling)

    def encode(self, texts: list[str], batch_size: int, progress: bool, dim: int) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="Encoding", unit="text")
        try:
            # Tokenise a window at a time, then run the window longest-first so that
            # every batch holds texts of similar length (little padding).
            window = max(batch_size * 32, 2048)
            for start in range(0, len(texts), window):
                encodings = self.tokenizer.encode_batch(texts[start : start + window])
                lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
                order = np.argsort(-lengths, kind="stable")
                b = 0
                while b < len(order):
                    # Longest first, so the first text sets the padded width of the batch.
                    count = min(batch_size, max(1, self.max_tokens // max(1, int(lengths[order[b]]))))
                    if self.max_texts:
                        count = min(count, self.max_texts)
                    idx = order[b : b + count]
                    out[start + idx] = self.run_batch([encodings[i] for i in idx])
                    b += len(idx)
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return l2_normalize(out)


# --------------------------------------------------------------------------- export


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _meta_is_current(meta: dict[str, Any] | None, resolved: ResolvedModel) -> bool:
    return bool(
        meta
        and meta.get("format") == FORMAT_VERSION
        and meta.get("model_id") == resolved.model_id
        and meta.get("fingerprint") == resolved.fingerprint()
    )


def export_dir(resolved: ResolvedModel, cache_root: Path) -> Path:
    """Where the ONNX export of ``resolved`` lives (``cache_root/<slug>``)."""
    return Path(cache_root) / model_slug(resolved.model_id)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter/optimiser chatter (tracer warnings, fusion logs)."""
    loggers = [logging.getLogger(name) for name in ("onnxruntime", "onnx", "root", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def ensure_export(resolved: ResolvedModel, cache_root: Path | None = None) -> Path:
    """Export ``resolved`` to ONNX under ``cache_root`` unless a current export is already there."""
    target = export_dir(resolved, cache_root or default_cache_dir())
    if _meta_is_current(_read_meta(target / META_FILE), resolved) and (target / FP32_FILE).is_file():
        return target
    layout = read_layout(resolved.path)  # refuse unsupported models before loading torch
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _export_into(resolved, layout, tmp)
        os.chmod(tmp, _umask_mode(0o777))
        if _meta_is_current(_read_meta(target / META_FILE), resolved):
            return target  # another process finished the same export meanwhile: keep theirs
        stale = None
        if target.exists():
            stale = target.parent / f".{target.name}.stale.{os.getpid()}.{time.monotonic_ns()}"
            os.replace(target, stale)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _meta_is_current(_read_meta(target / META_FILE), resolved):
                raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _export_into(resolved: ResolvedModel, layout: dict[str, Any], out: Path) -> None:
    set_offline_env()
    import torch

    from ragroute.encode.sentence_transformers import embedding_dimension, load_sentence_transformer

    try:
        st = load_sentence_transformer(resolved.path, model_kwargs={"attn_implementation": "eager"})
    except RagrouteError:
        st = load_sentence_transformer(resolved.path)
    st.eval()
    transformer = st[0]
    hf_model = getattr(transformer, "auto_model", None) or getattr(transformer, "model", None)
    tokenizer = getattr(transformer, "tokenizer", None) or st.tokenizer
    if hf_model is None or tokenizer is None or not getattr(tokenizer, "is_fast", True):
        raise RagrouteError(f"onnx backend cannot export {resolved.model_id}: no HF model or fast tokenizer")

    import inspect

    accepted = inspect.signature(hf_model.forward).parameters
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]

    class _Wrapper(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            outputs = self.model(**dict(zip(input_names, args, strict=True)))
            return outputs[0]

    sample = tokenizer(
        ["a padded sample", "a longer sample sentence for export"], padding=True, return_tensors="pt"
    )
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in input_names)
    dynamic = {n: {0: "batch", 1: "sequence"} for n in [*input_names, "last_hidden_state"]}
    raw = out / "raw.onnx"
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            _Wrapper(hf_model),
            args,
            str(raw),
            input_names=input_names,
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )

    tokenizer.backend_tokenizer.save(str(out / TOKENIZER_FILE))
    tok_dir = resolved.path / layout["transformer_path"]
    for name in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "sentencepiece.bpe.model"):
        if (tok_dir / name).is_file():
            shutil.copy2(tok_dir / name, out / name)

    prompts = {k: v for k, v in (getattr(st, "prompts", None) or {}).items() if isinstance(v, str)}
    if not layout["include_prompt"] and any(prompts.values()):
        raise RagrouteError(f"onnx backend cannot pool {resolved.model_id} without its prompt; use 'torch'")
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "model_id": resolved.model_id,
        "source": str(resolved.path),
        "fingerprint": resolved.fingerprint(),
        "inputs": input_names,
        "max_seq_length": int(st.max_seq_length or 0),
        "pooling": layout["pooling"],
        "normalize": layout["normalize"],
        "dim": embedding_dimension(st),
        "pad_id": int(tokenizer.pad_token_id or 0),
        "prompts": prompts,
        "opset": OPSET,
        "torch": torch.__version__,
    }
    reference = st.encode(list(PROBE_TEXTS), convert_to_numpy=True, normalize_embeddings=True)

    candidates: list[tuple[str, Path]] = []
    model_type = str(getattr(hf_model.config, "model_type", "")).lower()
    if model_type in _FUSABLE_MODEL_TYPES:
        fused = out / "fused.onnx"
        try:
            _fuse(raw, fused, hf_model.config)
            candidates.append(("fused", fused))
        except Exception as exc:  # noqa: BLE001 - fusion is an optimisation; fall back to the plain graph
            log.info("onnx fusion of %s failed (%s); using the plain graph", resolved.model_id, exc)
    candidates.append(("plain", raw))
    problems = []
    for graph, path in candidates:
        cosine = _agreement(out, meta, path, reference)
        if cosine >= EXPORT_MIN_COSINE:
            os.replace(path, out / FP32_FILE)
            meta.update(graph=graph, min_cosine_vs_torch=round(cosine, 6))
            break
        problems.append(f"{graph} min cosine {cosine:.4f}")
    else:
        raise RagrouteError(f"onnx export of {resolved.model_id} does not match torch: {'; '.join(problems)}")
    for leftover in (raw, out / "fused.onnx"):
        leftover.unlink(missing_ok=True)
    (out / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _fuse(source: Path, target: Path, config: Any) -> None:
    """Fuse attention/GELU/LayerNorm with onnxruntime's transformer optimiser (BERT family)."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet():
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
            hidden_size=int(getattr(config, "hidden_size", 0) or 0),
            opt_level=1,
            use_gpu=False,
        )
        optimized.save_model_to_file(str(target))


def _agreement(
    model_dir: Path,
    meta: dict[str, Any],
    model_file: Path,
    reference: np.ndarray,
    max_texts: int | None = None,
) -> float:
    """Worst cosine between ``model_file``'s probe embeddings and ``reference``."""
    runner = _Runner(model_dir, meta, model_file, threads=None)
    runner.max_texts = max_texts
    got = runner.encode(list(PROBE_TEXTS), batch_size=4, progress=False, dim=int(meta["dim"]))
    return float(np.min(np.sum(got * l2_normalize(reference), axis=1)))


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

    meta = _read_meta(model_dir / META_FILE)
    if meta is None:
        raise RagrouteError(f"no ONNX export in {model_dir}")
    source = model_dir / FP32_FILE
    keep = ffn_down_projections(onnx.load(str(source), load_external_data=False))[: max(0, fp32_layers)]
    fd, tmp_name = tempfile.mkstemp(prefix=".int8.", suffix=".onnx", dir=model_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _quiet():
            quantize_dynamic(
                source,
                tmp,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Attention"],
                nodes_to_exclude=keep,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        reference = _Runner(model_dir, meta, source, None).encode(
            list(PROBE_TEXTS), 4, False, int(meta["dim"])
        )
        cosine = _agreement(model_dir, meta, tmp, reference, max_texts=INT8_TEXTS_PER_RUN)
        info = {
            "format": FORMAT_VERSION,
            "fingerprint": meta["fingerprint"],
            "fp32_ffn_out_layers": fp32_layers,
            "file": target_name,
            "per_channel": True,
            "fp32_nodes": keep,
            "min_cosine_vs_fp32": round(cosine, 6),
        }
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, model_dir / target_name)
        info_file = model_dir / (INT8_META_FILE if target_name == INT8_FILE else f"{target_name}.json")
        info_tmp = info_file.with_name(f".{info_file.name}.{os.getpid()}")
        info_tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        os.replace(info_tmp, info_file)
    finally:
        tmp.unlink(missing_ok=True)
    return model_dir / target_name


def ensure_int8(model_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The int8 model in ``model_dir`` (quantising it first if missing or stale) and its info."""
    meta = _read_meta(model_dir / META_FILE) or {}
    info = _read_meta(model_dir / INT8_META_FILE)
    if not (
        info
        and info.get("format") == FORMAT_VERSION
        and info.get("fingerprint") == meta.get("fingerprint")
        and info.get("fp32_ffn_out_layers") == INT8_FP32_FFN_OUT_LAYERS
        and (model_dir / INT8_FILE).is_file()
    ):
        quantize_int8(model_dir)
        info = _read_meta(model_dir / INT8_META_FILE) or {}
    return model_dir / INT8_FILE, info


# --------------------------------------------------------------------------- encoder


class OnnxEncoder(PromptedEncoder):
    """Encoder backends ``"onnx"`` (fp32) and ``"onnx-int8"``: onnxruntime on CPU.

    Build one with :meth:`from_model` (exports on first use); the constructor
    takes an existing export folder and never imports torch, so loading a cached
    export takes well under a second.
    """

    def __init__(self, model_dir: Path, *, int8: bool = False, threads: int | None = None) -> None:
        model_dir = Path(model_dir)
        meta = _read_meta(model_dir / META_FILE)
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
        self.cache_variant = str(meta.get("fingerprint", ""))
        if self.int8:
            recipe = (self.quantization.get("fp32_ffn_out_layers"), INT8_TEXTS_PER_RUN, FORMAT_VERSION)
            self.cache_variant += "|int8:" + ",".join(map(str, recipe))
        self.dim = int(meta["dim"])
        self.max_seq_length = int(meta["max_seq_length"])
        self._runner = _Runner(model_dir, meta, model_file, threads)
        if self.int8:
            self._runner.max_texts = INT8_TEXTS_PER_RUN
        prompts = dict(meta.get("prompts") or {})
        self._query_prompt = query_prompt(prompts)
        self._document_prompt = document_prompt(prompts)

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
            model_dir = ensure_export(resolved, cache_dir)
            encoder = cls(model_dir, int8=int8, threads=threads)
        except RagrouteError:
            raise
        except Exception as exc:  # noqa: BLE001 - report export/quantisation failures as one line
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            step = "int8 quantisation" if int8 else "onnx export"
            raise RagrouteError(f"{step} of {resolved.model_id} failed: {text}") from exc
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

    def __repr__(self) -> str:
        return f"OnnxEncoder(model_id={self.model_id!r}, backend={self.backend!r}, dim={self.dim})"
