"""Export of a sentence-transformers model to ONNX (torch -> ``model.onnx``), once per model.

The sentence-transformers model is exported once per ``model_id`` into
``cache_dir/<slug>/`` (``model.onnx`` + ``tokenizer.json`` + ``ragroute_onnx.json``),
written to a temporary folder and renamed into place atomically, so no process
ever sees half an export. One process exports a model at a time (a lock file
``cache_dir/.<slug>.lock``, :mod:`ragroute.store.locks`); the lock holder first
removes what killed exports left (``.<slug>.*`` folders). The metadata records
the size and SHA-256 of every file; an export whose files do not match is
never used: it is exported again (with a :class:`CacheWarning`). Exports
written before the checksums existed get them recorded on first use. Only the transformer is exported (legacy
TorchScript exporter, dynamic batch and sequence axes); pooling and
normalisation follow the model's ``modules.json`` (:func:`read_layout`) and run
in numpy (:mod:`ragroute.encode.onnx_session`).

Export steps, each checked against sentence-transformers on probe sentences
(cosine >= :data:`EXPORT_MIN_COSINE` or the export is refused):

1. ``torch.onnx.export`` of the HF model with eager attention (its attention
   pattern is one onnxruntime recognises);
2. onnxruntime's transformer optimiser fuses attention, GELU, layer norms and the
   embedding block into single kernels (BERT-family models; others keep the
   plain graph), which is what makes fp32 ONNX faster than torch here.

The ``onnx-int8`` copy is quantised from the fused graph by
:mod:`ragroute.encode.onnx_quantize`.

Nothing is ever written next to the source model (it may live in site-packages).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from ragroute.encode._common import default_prompt
from ragroute.encode.cache import CacheWarning
from ragroute.encode.onnx_session import (
    FORMAT_VERSION,
    FP32_FILE,
    META_DIGEST,
    META_FILE,
    PROBE_TEXTS,
    TOKENIZER_FILE,
    agreement,
    file_digests,
    first_bad_file,
    lock_file,
    quiet,
    read_meta,
    umask_mode,
    write_meta,
)
from ragroute.encode.resolve import ResolvedModel, default_cache_dir, model_slug, set_offline_env
from ragroute.errors import RagrouteError
from ragroute.progress import say_progress
from ragroute.store.locks import crash_point, writer_lock

log = logging.getLogger(__name__)

OPSET = 17

EXPORT_MIN_COSINE = 0.9999
"""fp32 ONNX must agree with sentence-transformers at least this well on every probe sentence."""

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


def _meta_is_current(meta: dict[str, Any] | None, resolved: ResolvedModel) -> bool:
    """Whether the export was made from the model folder as it is now: by the digest of its contents
    (:meth:`~ragroute.encode.resolve.ResolvedModel.content_digest`) where the export records one;
    an export from before session 38 by file names, sizes and times only (a folder edited with its
    sizes and times kept, as ``cp -p`` and ``rsync -a`` keep them, reused the stale export)."""
    if not (meta and meta.get("format") == FORMAT_VERSION and meta.get("model_id") == resolved.model_id):
        return False
    if "weights" in meta:
        return bool(meta["weights"] == resolved.content_digest())
    return bool(meta.get("fingerprint") == resolved.fingerprint())


def export_dir(resolved: ResolvedModel, cache_root: Path) -> Path:
    """Where the ONNX export of ``resolved`` lives (``cache_root/<slug>``)."""
    return Path(cache_root) / model_slug(resolved.model_id)


def ensure_export(
    resolved: ResolvedModel, cache_root: Path | None = None, *, verify_model: bool = True
) -> Path:
    """Export ``resolved`` to ONNX under ``cache_root`` unless a current, intact export is there.

    ``verify_model`` checks ``model.onnx`` against its recorded checksum too (callers
    that run the int8 copy only skip it; the int8 file is checked on its own).
    """
    target = export_dir(resolved, cache_root or default_cache_dir(create=True))
    if _usable(target, resolved, verify_model) is True:
        remove_export_debris(target)
        return target
    layout = read_layout(resolved.path)  # refuse unsupported models before loading torch
    target.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(lock_file(target), f"the ONNX export of {resolved.model_id} ({target})"):
        state = _usable(target, resolved, verify_model, warn=True)
        if state is True:
            return target  # another process finished the same export meanwhile
        if state is None:  # written before exports carried checksums (or a weights digest): record them now
            meta = read_meta(target / META_FILE) or {}
            if not isinstance(meta.get("files"), dict):
                meta["files"] = file_digests(target, _export_files(target))
            meta.setdefault("weights", resolved.content_digest())  # the folder its fingerprint matched
            write_meta(target / META_FILE, meta)
            _remove_debris(target)
            return target
        _remove_debris(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            crash_point("onnx export: started")
            say_progress(
                f"exporting {resolved.model_id} to ONNX in {target} (once per model; seconds to a minute)"
            )
            _export_into(resolved, layout, tmp)
            os.chmod(tmp, umask_mode(0o777))
            stale = None
            if target.exists():
                stale = target.parent / f".{target.name}.stale.{os.getpid()}.{time.monotonic_ns()}"
                os.replace(target, stale)
                crash_point("onnx export: previous export moved aside")
            os.replace(tmp, target)
            crash_point("onnx export: published")
            if stale is not None:
                shutil.rmtree(stale, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _usable(target: Path, resolved: ResolvedModel, verify_model: bool, *, warn: bool = False) -> bool | None:
    """``True``: current and intact; ``False``: export again; ``None``: current, no checksums recorded."""
    meta = read_meta(target / META_FILE)
    if meta is None and warn and (target / META_FILE).is_file():
        warnings.warn(
            f"ONNX export {target}: {META_FILE} is unreadable or does not match its checksum; "
            "exporting it again",
            CacheWarning,
            stacklevel=3,
        )
    if not _meta_is_current(meta, resolved) or not (target / FP32_FILE).is_file():
        return False
    files = (meta or {}).get("files")
    if not isinstance(files, dict):
        return None
    bad = first_bad_file(target, {k: v for k, v in files.items() if verify_model or k != FP32_FILE})
    if bad is None:
        # an export from before session 38 (no weights digest, no digest of its metadata): its
        # files checked, the digests are recorded now (the folder's fingerprint matched it)
        return True if "weights" in (meta or {}) and META_DIGEST in (meta or {}) else None
    if warn:
        warnings.warn(
            f"ONNX export {target} is corrupt ({bad} does not match its checksum); exporting it again",
            CacheWarning,
            stacklevel=3,
        )
    return False


def _export_files(folder: Path) -> list[str]:
    """The files an export consists of (the int8 copy and metadata files are checked on their own)."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix != ".json" and ".int8" not in p.name
    ) + sorted(p.name for p in folder.glob("*.json") if p.name.startswith(("tokenizer", "special_tokens")))


def _remove_debris(target: Path) -> None:
    """Folders killed exports left beside ``target`` (call with the export lock held)."""
    for path in target.parent.glob(f".{target.name}.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    for path in target.glob(".int8.*"):  # killed int8 quantisations
        path.unlink(missing_ok=True)


def remove_export_debris(target: Path) -> bool:
    """Remove what killed exports or quantisations of ``target`` left, unless one is running now.

    Returns whether anything was left over. Cheap when there is nothing (two
    directory listings); takes the export lock without waiting, so a live
    exporter's folder is never touched.
    """
    found = any(p.is_dir() for p in target.parent.glob(f".{target.name}.*")) or any(target.glob(".int8.*"))
    if found:
        try:
            with writer_lock(lock_file(target), f"the ONNX export in {target}", timeout=0):
                _remove_debris(target)
        except RagrouteError:
            pass  # an export is running: its folder is not debris; the next run cleans up
    return found


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
    with quiet(), torch.no_grad():
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
        "weights": resolved.content_digest(),
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
    # a model's default prompt (``default_prompt_name``) is put before texts by the encoder, not
    # the graph: the graph is checked on the bare texts (until session 38 the reference had the
    # prompt and the graph not, so such a model never exported)
    meta["default_prompt"] = default_prompt(prompts, getattr(st, "default_prompt_name", None))
    reference = st.encode(list(PROBE_TEXTS), prompt="", convert_to_numpy=True, normalize_embeddings=True)

    candidates: list[tuple[str, Path]] = []
    model_type = str(getattr(hf_model.config, "model_type", "")).lower()
    if model_type in _FUSABLE_MODEL_TYPES:
        fused = out / "fused.onnx"
        try:
            fuse_bert_graph(raw, fused, hf_model.config)
            candidates.append(("fused", fused))
        except Exception as exc:  # noqa: BLE001 - fusion is an optimisation; fall back to the plain graph
            log.info("onnx fusion of %s failed (%s); using the plain graph", resolved.model_id, exc)
    candidates.append(("plain", raw))
    problems = []
    for graph, path in candidates:
        cosine = agreement(out, meta, path, reference)
        if cosine >= EXPORT_MIN_COSINE:
            os.replace(path, out / FP32_FILE)
            meta.update(graph=graph, min_cosine_vs_torch=round(cosine, 6))
            break
        problems.append(f"{graph} min cosine {cosine:.4f}")
    else:
        raise RagrouteError(f"onnx export of {resolved.model_id} does not match torch: {'; '.join(problems)}")
    for leftover in (raw, out / "fused.onnx"):
        leftover.unlink(missing_ok=True)
    meta["files"] = file_digests(out, _export_files(out))
    write_meta(out / META_FILE, meta)


def fuse_bert_graph(source: Path, target: Path, config: Any) -> None:
    """Fuse attention/GELU/LayerNorm with onnxruntime's transformer optimiser (BERT family)."""
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet():
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
            hidden_size=int(getattr(config, "hidden_size", 0) or 0),
            opt_level=1,
            use_gpu=False,
        )
        optimized.save_model_to_file(str(target))
