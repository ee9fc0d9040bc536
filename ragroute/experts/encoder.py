"""Loading a trained expert as an :class:`~ragroute.encode.base.Encoder`.

A ``query-lora`` expert encodes queries with the base model plus its LoRA
adapter merged into the weights, and documents with the base model itself: its
documents live in the base embedding space, so it searches the base model's
document index (:class:`QueryAdapterEncoder`). A ``full`` expert is a complete
sentence-transformers model with its own embedding space (and index).

A query-lora expert's deltas only mean something over the weights it was trained on: the
document encoder (and the index it searches) must be that base model, by the weights its manifest
records (:func:`expert_base`, :func:`check_expert_base`): a byte-identical copy under another path
or name is the same base, another model under the base's name (a folder replaced or retrained in
place) is not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import encode_unit_vectors, query_prompt
from ragroute.encode.identity import weights_of
from ragroute.errors import (
    EncoderMismatchError,
    ModelNotFoundError,
    RagrouteError,
    error_summary,
    is_finite_number,
)
from ragroute.experts.train import ADAPTER_CONFIG, ADAPTER_FILE, FAMILY, MODEL_DIR


class QueryAdapterEncoder:
    """Queries through base + merged LoRA adapter; documents through ``document_encoder`` (the base).

    ``model_id`` is the base model's (the document space is the base model's, so
    base indexes accept it); ``query_space`` names the adapter, and is what the
    query contexts cache vectors under (see :func:`ragroute.context.encoder_key`). Queries carry
    the base model's ``query`` prompt, as the base encoder's do (until session 40 they went
    without it). ``base`` is what the expert records of its base model (:func:`expert_base`).
    """

    backend = "torch"

    def __init__(
        self,
        model: Any,
        document_encoder: Any,
        name: str,
        build: str = "",
        base: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.document_encoder = document_encoder
        self.model_id = document_encoder.model_id
        self.dim = int(document_encoder.dim)
        self.name = name
        self.base = dict(base or {"model_id": self.model_id})
        self._query_prompt = query_prompt(dict(getattr(model, "prompts", None) or {}))
        # the whole build id: its first 12 digits are a timestamp to 0.1 s, so two experts of one
        # folder name published within it shared a query-vector cache key until session 36
        self.query_space = f"{self.model_id}+expert:{name}@{build}"

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return encode_unit_vectors(
            self.model,
            texts,
            self.dim,
            batch_size=batch_size,
            show_progress=show_progress,
            prompt=self._query_prompt,
        )

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return self.document_encoder.encode_documents(
            texts, batch_size=batch_size, show_progress=show_progress
        )

    def count_truncated(self, texts: Sequence[str]) -> tuple[int, int, bool] | None:
        """The document encoder's count (:func:`ragroute.encode.truncation.count_truncated`)."""
        from ragroute.encode.truncation import count_for_encoder

        return count_for_encoder(self.document_encoder, texts)

    def describe(self) -> dict[str, Any]:
        return {**self.document_encoder.describe(), "query_space": self.query_space}

    def __repr__(self) -> str:
        return f"QueryAdapterEncoder({self.name!r}, base={self.model_id!r})"


def expert_base(params: Mapping[str, Any]) -> dict[str, str]:
    """What a query-lora expert's manifest ``params`` record of the base model it was trained over:
    ``model_id`` and, where known, ``weights`` (the content digest of its model folder, see
    :mod:`ragroute.encode.identity`). Training records it as ``base_weights`` (since session 40);
    an older expert gives the weights of the encoder that embedded its documents when that was the
    base, else those of the base's folder now when its files are unchanged since training (the
    ``base_fingerprint`` of names, sizes and times it recorded); else none (checked by id only)."""
    from ragroute.encode.resolve import BUNDLED_MODEL_ID, resolve_model

    record = {"model_id": str(params.get("base") or BUNDLED_MODEL_ID)}
    made_by = params.get("document_vectors")
    weights = params.get("base_weights")
    if not weights and isinstance(made_by, Mapping) and made_by.get("model_id") == record["model_id"]:
        weights = made_by.get("weights")
    if not weights and params.get("base_fingerprint"):
        try:
            resolved = resolve_model(record["model_id"])
            if resolved.fingerprint() == params["base_fingerprint"]:
                weights = resolved.content_digest()
        except (RagrouteError, OSError):
            weights = None
    if weights:
        record["weights"] = str(weights)
    return record


def base_problem(base: Mapping[str, str], model_id: str, weights: str | None, against: str) -> str | None:
    """Why the model ``model_id`` (of content digest ``weights``, None when unknown) is not the base
    ``base`` (:func:`expert_base`) an expert was trained over, or None when it is: the same weights
    (a copy under another path or name included), or, where either side has no digest, the same
    id. ``against`` names the model checked ("the document encoder", "the index's encoder")."""
    before = base.get("weights")
    if before and weights:
        if before == weights:
            return None
        if model_id == base["model_id"]:
            return (
                f"was trained over {model_id!r} with weights {before}, but {against} has weights "
                f"{weights} (the model's files changed since)"
            )
    elif model_id == base["model_id"]:
        return None
    return f"adapts {base['model_id']!r}, but {against} is {model_id!r}"


def check_expert_base(
    expert: Any, base: Mapping[str, str], model_id: str, weights: str | None, against: str
) -> None:
    """:class:`EncoderMismatchError` naming the ``expert`` when ``model_id`` / ``weights`` are not
    its ``base`` (:func:`base_problem`): its LoRA deltas would be merged into other weights."""
    problem = base_problem(base, model_id, weights, against)
    if problem:
        raise EncoderMismatchError(
            f"expert {expert} {problem}: retrain the expert over this model "
            "(`ragroute expert train --encoder MODEL`), or use the base model it was trained on"
        )


def merge_lora(
    transformer: Any,
    tensors: dict[str, np.ndarray],
    scales: Any,
    where: str,
    *,
    expected_scale: float | None = None,
) -> int:
    """Add ``scale * B @ A`` to the weight of every adapted linear layer; returns how many were merged.
    An adapter whose scales or matrices are not what training writes (a mapping of layer names to
    finite numbers, each ``expected_scale`` where given: alpha / rank, as peft scales; 2-D float
    matrices that multiply, to finite numbers; no matrices of a layer without a scale) is one
    :class:`RagrouteError`, not a traceback from inside torch (the expert set then reports and
    excludes the expert)."""
    import torch

    if not isinstance(scales, dict) or not scales:
        raise RagrouteError(
            f"{where}: adapter 'scales' must map layer names to numbers, not {scales!r}"[:200]
        )
    # until session 55 the matrices of a layer missing from 'scales' were left out without a word
    # (the expert served queries without that layer's update)
    unscaled = sorted(name for name in tensors if not name.endswith((".A", ".B")) or name[:-2] not in scales)
    if unscaled:
        raise RagrouteError(f"{where}: adapter matrix {unscaled[0]!r} is of no layer its 'scales' name")
    modules = dict(transformer.named_modules())
    merged = 0
    for module_name, scale in scales.items():
        module = modules.get(module_name)
        a, b = tensors.get(f"{module_name}.A"), tensors.get(f"{module_name}.B")
        if module is None or a is None or b is None or not hasattr(module, "weight"):
            raise RagrouteError(f"{where}: adapter layer {module_name!r} does not match the base model")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale):
            raise RagrouteError(f"{where}: adapter layer {module_name!r} has scale {scale!r}, not a number")
        if expected_scale is not None and not np.isclose(scale, expected_scale, rtol=1e-6, atol=0.0):
            raise RagrouteError(
                f"{where}: adapter layer {module_name!r} has scale {scale!r}, not its alpha / rank "
                f"({expected_scale!r})"
            )
        if (
            a.ndim != 2
            or b.ndim != 2
            or b.shape[1] != a.shape[0]
            or a.dtype.kind != "f"
            or b.dtype.kind != "f"
        ):
            raise RagrouteError(
                f"{where}: adapter layer {module_name!r} has matrices B {b.shape} {b.dtype} and "
                f"A {a.shape} {a.dtype}, not two float matrices B @ A"
            )
        # in the weight's dtype: until session 55 matrices of two float dtypes (float16 and float32)
        # raised torch's "expected m1 and m2 to have the same dtype" out of the expert set
        dtype = module.weight.dtype
        delta = torch.from_numpy(b).to(dtype) @ torch.from_numpy(a).to(dtype) * float(scale)
        if tuple(delta.shape) != tuple(module.weight.shape):
            raise RagrouteError(
                f"{where}: adapter layer {module_name!r} has shape {tuple(delta.shape)}, "
                f"the base model {tuple(module.weight.shape)}"
            )
        if not bool(torch.isfinite(delta).all()):  # NaN or infinity was merged, silently, until session 55
            raise RagrouteError(f"{where}: adapter layer {module_name!r} holds numbers that are not finite")
        with torch.no_grad():
            module.weight += delta
        merged += 1
    return merged


def lora_scale(config: Mapping[str, Any]) -> float | None:
    """``alpha / rank``, the scale peft gives every layer of a plain LoRA adapter (what training
    records per layer), when ``config`` (``adapter.json``) records both as positive numbers."""
    rank: Any = config.get("rank")
    alpha: Any = config.get("alpha")
    if not (is_finite_number(rank) and is_finite_number(alpha)) or rank <= 0:
        return None
    return float(alpha) / float(rank)


def load_expert_encoder(
    path: str | Path, base_encoder: Any | None = None, *, threads: int | None = None
) -> Any:
    """The query encoder of the expert artifact at ``path``.

    ``base_encoder`` (the base model's encoder, for documents) is loaded when not
    given; it must be the base the expert was trained over, by its weights
    (:func:`check_expert_base`), and the adapter is merged into that encoder's
    model folder (the recorded base's otherwise). Raises a :class:`RagrouteError`
    with the reason when the expert cannot be loaded (the expert set reports and
    excludes it).
    """
    from ragroute.encode.load import load_encoder
    from ragroute.encode.resolve import ResolvedModel, expert_model, resolve_model
    from ragroute.encode.sentence_transformers import SentenceTransformerEncoder, load_sentence_transformer
    from ragroute.store import artifact_exists, read_artifact

    path = Path(path)
    if not artifact_exists(path):
        raise ModelNotFoundError(f"no expert at {path} (train one with `ragroute expert train`)")

    def read(snapshot: Any) -> Any:
        manifest = snapshot.manifest
        params = manifest.params
        folder = Path(snapshot.path)
        if manifest.kind == "full":
            weights = folder / MODEL_DIR / "model.safetensors"
            if not weights.is_file():  # training writes safetensors; another weights file may be a pickle
                raise ModelNotFoundError(
                    f"expert {path}: its model holds no model.safetensors (the only weights ragroute "
                    "loads: a pytorch_model.bin is a pickle); train it again with `ragroute expert train`"
                )
            # under the expert folder's id, as `--encoder EXPERT` resolves it (not the build's path,
            # which a later retrain removes)
            return SentenceTransformerEncoder(expert_model(path, folder, str(path)), threads=threads)
        base = expert_base(params)
        document_encoder = base_encoder
        if document_encoder is None:
            document_encoder = load_encoder(base["model_id"], backend="torch", threads=threads)
        # the same weights, not the same name: a copy of the base is the base (until session 40 it
        # was refused), another model in the base's folder is not (it was merged into, silently)
        check_expert_base(
            path, base, str(document_encoder.model_id), weights_of(document_encoder), "the document encoder"
        )
        from safetensors import SafetensorError
        from safetensors.numpy import load as load_tensors

        try:  # files that pass their checksums but were damaged before (or written by something else)
            config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
            scales = config["scales"]
            # read here: safetensors' own FileNotFoundError names no file, so a missing adapter file
            # was "file ? of the published build is missing" until session 55
            tensors = load_tensors((folder / ADAPTER_FILE).read_bytes())
            expected_scale = lora_scale(config)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, SafetensorError) as exc:
            reason = error_summary(exc, 200)
            raise ModelNotFoundError(
                f"expert {path}: its adapter cannot be read ({reason}); "
                "train it again with `ragroute expert train`"
            ) from None
        resolved = getattr(document_encoder, "resolved", None)
        if not isinstance(resolved, ResolvedModel):  # an encoder not read from a folder: the base's own
            resolved = resolve_model(base["model_id"])
            check_expert_base(
                path, base, resolved.model_id, resolved.content_digest(), "its base model's folder"
            )
        model = load_sentence_transformer(resolved.path)
        merge_lora(model[0].auto_model, tensors, scales, str(path), expected_scale=expected_scale)
        model.eval()
        return QueryAdapterEncoder(model, document_encoder, manifest.name or path.name, manifest.build, base)

    return read_artifact(path, read, family=FAMILY)
