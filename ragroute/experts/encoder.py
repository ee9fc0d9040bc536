"""Loading a trained expert as an :class:`~ragroute.encode.base.Encoder`.

A ``query-lora`` expert encodes queries with the base model plus its LoRA
adapter merged into the weights, and documents with the base model itself: its
documents live in the base embedding space, so it searches the base model's
document index (:class:`QueryAdapterEncoder`). A ``full`` expert is a complete
sentence-transformers model with its own embedding space (and index).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import encode_unit_vectors
from ragroute.errors import ModelNotFoundError, RagrouteError
from ragroute.experts.train import ADAPTER_CONFIG, ADAPTER_FILE, FAMILY, MODEL_DIR


class QueryAdapterEncoder:
    """Queries through base + merged LoRA adapter; documents through ``document_encoder`` (the base).

    ``model_id`` is the base model's (the document space is the base model's, so
    base indexes accept it); ``query_space`` names the adapter, and is what the
    query contexts cache vectors under (see :func:`ragroute.context.encoder_key`).
    """

    backend = "torch"

    def __init__(self, model: Any, document_encoder: Any, name: str, build: str = "") -> None:
        self.model = model
        self.document_encoder = document_encoder
        self.model_id = document_encoder.model_id
        self.dim = int(document_encoder.dim)
        self.name = name
        # the whole build id: its first 12 digits are a timestamp to 0.1 s, so two experts of one
        # folder name published within it shared a query-vector cache key until session 36
        self.query_space = f"{self.model_id}+expert:{name}@{build}"

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return encode_unit_vectors(
            self.model, texts, self.dim, batch_size=batch_size, show_progress=show_progress
        )

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return self.document_encoder.encode_documents(
            texts, batch_size=batch_size, show_progress=show_progress
        )

    def describe(self) -> dict[str, Any]:
        return {**self.document_encoder.describe(), "query_space": self.query_space}

    def __repr__(self) -> str:
        return f"QueryAdapterEncoder({self.name!r}, base={self.model_id!r})"


def merge_lora(transformer: Any, tensors: dict[str, np.ndarray], scales: Any, where: str) -> int:
    """Add ``scale * B @ A`` to the weight of every adapted linear layer; returns how many were merged.
    An adapter whose scales or matrices are not what training writes (a mapping of layer names to
    finite numbers; 2-D float matrices that multiply) is one :class:`RagrouteError`, not a
    traceback from inside torch (the expert set then reports and excludes the expert)."""
    import torch

    if not isinstance(scales, dict) or not scales:
        raise RagrouteError(
            f"{where}: adapter 'scales' must map layer names to numbers, not {scales!r}"[:200]
        )
    modules = dict(transformer.named_modules())
    merged = 0
    for module_name, scale in scales.items():
        module = modules.get(module_name)
        a, b = tensors.get(f"{module_name}.A"), tensors.get(f"{module_name}.B")
        if module is None or a is None or b is None or not hasattr(module, "weight"):
            raise RagrouteError(f"{where}: adapter layer {module_name!r} does not match the base model")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale):
            raise RagrouteError(f"{where}: adapter layer {module_name!r} has scale {scale!r}, not a number")
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
        delta = torch.from_numpy(b) @ torch.from_numpy(a) * float(scale)
        if tuple(delta.shape) != tuple(module.weight.shape):
            raise RagrouteError(
                f"{where}: adapter layer {module_name!r} has shape {tuple(delta.shape)}, "
                f"the base model {tuple(module.weight.shape)}"
            )
        with torch.no_grad():
            module.weight += delta
        merged += 1
    return merged


def load_expert_encoder(
    path: str | Path, base_encoder: Any | None = None, *, threads: int | None = None
) -> Any:
    """The query encoder of the expert artifact at ``path``.

    ``base_encoder`` (the base model's encoder, for documents) is loaded when not
    given. Raises :class:`ModelNotFoundError` with the reason when the expert
    cannot be loaded (the expert set reports and excludes it).
    """
    from ragroute.encode.load import load_encoder
    from ragroute.encode.resolve import expert_model, resolve_model
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
        base_id = str(params.get("base", ""))
        document_encoder = base_encoder
        if document_encoder is None:
            document_encoder = load_encoder(base_id or "all-MiniLM-L6-v2", backend="torch", threads=threads)
        elif base_id and document_encoder.model_id != base_id:
            raise RagrouteError(
                f"expert {path} adapts {base_id!r}, but the document encoder is {document_encoder.model_id!r}"
            )
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:  # files that pass their checksums but were damaged before (or written by something else)
            config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
            scales = config["scales"]
            tensors = load_file(str(folder / ADAPTER_FILE))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, SafetensorError) as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise ModelNotFoundError(
                f"expert {path}: its adapter cannot be read ({reason}); "
                "train it again with `ragroute expert train`"
            ) from None
        model = load_sentence_transformer(resolve_model(base_id or "all-MiniLM-L6-v2").path)
        merge_lora(model[0].auto_model, tensors, scales, str(path))
        model.eval()
        return QueryAdapterEncoder(model, document_encoder, manifest.name or path.name, manifest.build)

    return read_artifact(path, read, family=FAMILY)
