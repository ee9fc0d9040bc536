"""Train a domain expert here, offline, without labels: pseudo-queries cut from the domain's documents.

Two modes, both starting from the bundled all-MiniLM-L6-v2:

``query-lora`` (default; RouterRetriever's design)
    A LoRA adapter (``peft``) on the *query* side only. Documents stay in the base
    model's embedding space, so one document index serves the base model and
    every adapter expert, and adding an expert re-encodes nothing. Because the
    document vectors are frozen, the loss can use the whole corpus as negatives:
    a softmax over every document of the domain (in-batch and every mined hard
    negative included), temperature 0.05 (sentence-transformers'
    ``MultipleNegativesRankingLoss`` scale of 20). Only short query texts are
    forwarded, so training takes a minute or two on 2 cores.

``full``
    Both towers fine-tuned with sentence-transformers'
    ``MultipleNegativesRankingLoss`` (in-batch negatives) plus one mined hard
    negative per pseudo-query (a document the base model ranks 3rd-30th that is
    not the positive). The expert needs its own document index.

The artifact (family ``expert``) records the mode, base model, training
parameters, corpus fingerprint, pseudo-query counts and training time. LoRA
weights are stored as plain safetensors (per adapted linear layer: ``A``, ``B``
and the scale) and merged into the base weights at load, so loading an
expert needs neither ``peft`` nor pickle.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import document_prompt, query_prompt
from ragroute.encode.resolve import EXPERT_FAMILY, EXPERT_MODEL_DIR
from ragroute.errors import RagrouteError
from ragroute.experts.pseudo_queries import KINDS, PseudoQuery, cut_pseudo_queries
from ragroute.training import model_inputs
from ragroute.types import Document

FAMILY = EXPERT_FAMILY
MODES = ("query-lora", "full")
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
MODEL_DIR = EXPERT_MODEL_DIR
LORA_TARGETS = ("query", "key", "value", "dense")


@dataclass
class ExpertTrainParams:
    """How an expert is trained (recorded in its manifest)."""

    mode: str = "query-lora"
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float | None = None  # None: 5e-4 for query-lora, 2e-5 for full
    temperature: float = 0.05
    rank: int = 8
    alpha: int = 16
    max_queries: int = 6000
    max_length: int = 256  # document tokens in ``full`` mode (queries are short)
    kinds: tuple[str, ...] = KINDS
    seed: int = 0
    threads: int | None = None
    # where the model trains: "cpu", or a torch device such as "cuda"; the published adapter or model
    # is read on the CPU either way
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RagrouteError(f"unknown expert mode {self.mode!r}: choose {' or '.join(MODES)}")
        self.kinds = tuple(self.kinds)
        from ragroute.training import check_training_settings

        # temperature: the softmax temperature of the query-lora loss (the scale of the full one):
        # until session 49 0 trained NaN after the corpus was encoded and a negative one trained the
        # expert to rank its positives last, without a word
        check_training_settings(
            self,
            "expert training",
            counts=("epochs", "batch_size", "rank", "alpha", "max_queries", "max_length"),
            above_zero=("temperature",),
        )

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 5e-4 if self.mode == "query-lora" else 2e-5


def corpus_fingerprint(documents: Sequence[Document]) -> str:
    """sha256 over the documents' ids and texts (which corpus an expert was trained on)."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.id.encode())
        digest.update(b"\0")
        digest.update(doc.full_text().encode())
        digest.update(b"\1")
    return digest.hexdigest()


def train_expert(
    documents: Sequence[Document],
    out: str | Path,
    params: ExpertTrainParams | None = None,
    *,
    name: str = "",
    base: str = "all-MiniLM-L6-v2",
    document_vectors: np.ndarray | None = None,
    document_encoder: Mapping[str, Any] | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Cut pseudo-queries from ``documents``, train an expert and publish it at ``out``.

    ``document_vectors`` (rows aligned with ``documents``, base-model embeddings)
    saves re-encoding the corpus when the caller already has them (query-lora
    mode and hard-negative mining); ``document_encoder`` describes what made them
    (``Encoder.describe()``: its backend changes the training targets, so the manifest
    records it). Returns the training report (also in the manifest).
    """
    import torch

    from ragroute.encode.resolve import resolve_model, set_offline_env
    from ragroute.encode.sentence_transformers import embedding_dimension, load_sentence_transformer
    from ragroute.progress import progress_enabled
    from ragroute.store import write_artifact
    from ragroute.training import check_device

    params = params or ExpertTrainParams()
    check_device(params.device)
    if params.mode == "query-lora":
        check_peft()
    documents = list(documents)
    queries = cut_pseudo_queries(
        documents, kinds=params.kinds, max_queries=params.max_queries, seed=params.seed
    )
    set_offline_env()
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    if params.threads:
        torch.set_num_threads(int(params.threads))
    resolved = resolve_model(base)
    model = load_sentence_transformer(resolved.path, device=params.device)
    # what embedded the documents the expert is trained against (a backend changes the targets:
    # until session 38 two runs differing only in it wrote identical parameters)
    made_by = dict(document_encoder or {}) if document_vectors is not None else {}
    base_weights = resolved.content_digest()
    if document_vectors is None:
        made_by = {"model_id": resolved.model_id, "backend": "torch"}
        document_vectors = model.encode(
            [d.full_text() for d in documents],
            # as the base encoder embeds documents (the index the expert searches)
            prompt=document_prompt(dict(getattr(model, "prompts", None) or {})) or None,
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress_enabled(show_progress),
        )
    document_vectors = np.asarray(document_vectors, dtype=np.float32)
    if document_vectors.ndim != 2 or document_vectors.shape[0] != len(documents):
        raise RagrouteError(
            f"document_vectors has shape {document_vectors.shape}, not one row per document "
            f"({len(documents)})"
        )
    dim = embedding_dimension(model)  # the shared getter: the old method name warns (FutureWarning)
    # another model's vectors: until session 51 a torch traceback once training began
    if dim and document_vectors.shape[1] != dim:
        raise RagrouteError(
            f"document_vectors are {document_vectors.shape[1]}-d, but the base model {resolved.model_id} "
            f"embeds in {dim}-d: give its own document vectors (or none: it encodes the documents)"
        )
    position = {doc.id: i for i, doc in enumerate(documents)}
    start = time.perf_counter()
    if params.mode == "query-lora":
        losses, adapter = _train_query_lora(model, queries, position, document_vectors, params, show_progress)
    else:
        losses = _train_full(model, queries, documents, position, document_vectors, params, show_progress)
        adapter = None
    train_s = time.perf_counter() - start
    report = {
        "mode": params.mode,
        "documents": len(documents),
        "pseudo_queries": len(queries),
        "pseudo_query_kinds": dict(sorted(Counter(q.kind for q in queries).items())),
        "train_s": round(train_s, 1),
        "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
    }
    manifest_params = {
        "mode": params.mode,
        "base": resolved.model_id,
        "base_fingerprint": resolved.fingerprint(),
        # the base's weights, which loading compares (a copy of the base is it, another model in
        # its folder is not: ragroute.experts.encoder.check_expert_base)
        "base_weights": base_weights,
        "train": {**asdict(params), "learning_rate": params.lr, "kinds": list(params.kinds)},
        "corpus_sha256": corpus_fingerprint(documents),
        "document_vectors": made_by or "given (their encoder not said)",
        "report": report,
    }
    with write_artifact(
        out, FAMILY, params.mode, name=name or Path(out).name, params=manifest_params
    ) as pending:
        if adapter is not None:
            from safetensors.numpy import save_file

            save_file(adapter["tensors"], str(pending.path / ADAPTER_FILE))
            (pending.path / ADAPTER_CONFIG).write_text(
                json.dumps(adapter["config"], indent=1), encoding="utf-8"
            )
        else:
            model.save(str(pending.path / MODEL_DIR))
    return report


def _fit(
    trainable: list[Any], n: int, batch_loss: Any, params: ExpertTrainParams, show: bool | None
) -> list[float]:
    """The shared fine-tuning loop with this expert's settings (warm-up: a tenth of the steps)."""
    from ragroute.training import fine_tune

    return fine_tune(
        trainable,
        n,
        batch_loss,
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.lr,
        warmup=0.1,
        seed=params.seed,
        desc="training expert",
        show_progress=show,
    )


def check_peft() -> None:
    """One line naming the extra when peft (query-side LoRA training) is not installed: said before
    any corpus is read or encoded."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise RagrouteError(
            "training a query-lora expert needs peft: pip install 'ragroute[experts]' "
            "(or --mode full, which trains without it)"
        ) from None


def _train_query_lora(
    model: Any,
    queries: Sequence[PseudoQuery],
    position: dict[str, int],
    document_vectors: np.ndarray,
    params: ExpertTrainParams,
    show_progress: bool | None,
) -> tuple[list[float], dict[str, Any]]:
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    transformer = model[0].auto_model
    # a rank above a layer's width adds nothing a full update would not, and a huge one exhausted
    # memory with a traceback (session 36): refuse it before the adapter is made
    widths = [
        min(module.in_features, module.out_features)
        for name, module in transformer.named_modules()
        if name.split(".")[-1] in LORA_TARGETS and hasattr(module, "in_features")
    ]
    if widths and params.rank > min(widths):
        raise RagrouteError(
            f"LoRA rank {params.rank} is above the width of the adapted layers ({min(widths)}): "
            f"choose --rank {min(widths)} or less (default {ExpertTrainParams.rank})"
        )
    config = LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
    )
    inject_adapter_in_model(config, transformer)
    for pname, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in pname)
    trainable = [p for p in model.parameters() if p.requires_grad]
    docs = torch.from_numpy(document_vectors).to(model.device)
    targets = torch.tensor([position[q.doc_id] for q in queries], device=model.device)
    # with the base's query prompt, as the expert encodes queries (until session 40 raw texts)
    prompt = query_prompt(dict(getattr(model, "prompts", None) or {}))
    texts = [prompt + q.text for q in queries]

    def batch_loss(batch: list[int]) -> Any:
        embedded = model(model_inputs(model, [texts[i] for i in batch]))["sentence_embedding"]
        embedded = torch.nn.functional.normalize(embedded, dim=-1)
        logits = embedded @ docs.T / params.temperature
        return torch.nn.functional.cross_entropy(logits, targets[batch])

    model.train()
    losses = _fit(trainable, len(queries), batch_loss, params, show_progress)
    model.eval()
    return losses, _lora_weights(transformer, params)


def _lora_weights(transformer: Any, params: ExpertTrainParams) -> dict[str, Any]:
    """The trained LoRA matrices as plain arrays: ``NAME.A`` (r x in), ``NAME.B`` (out x r), and scales."""
    tensors: dict[str, np.ndarray] = {}
    scales: dict[str, float] = {}
    for module_name, module in transformer.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or "default" not in lora_a:
            continue
        for part, layer in (("A", lora_a["default"]), ("B", module.lora_B["default"])):
            tensors[f"{module_name}.{part}"] = layer.weight.detach().cpu().numpy().astype(np.float32)
        scales[module_name] = float(module.scaling["default"])
    if not tensors:
        raise RagrouteError("no LoRA layers were trained (the base model has none of the target modules)")
    return {"tensors": tensors, "config": {"rank": params.rank, "alpha": params.alpha, "scales": scales}}


def _train_full(
    model: Any,
    queries: Sequence[PseudoQuery],
    documents: Sequence[Document],
    position: dict[str, int],
    document_vectors: np.ndarray,
    params: ExpertTrainParams,
    show_progress: bool | None,
) -> list[float]:
    try:  # sentence-transformers >= 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss  # type: ignore[no-redef]

    model.max_seq_length = params.max_length
    # with the base's query and document prompts, as the published expert encodes (its model keeps
    # them); until session 43 it was trained on raw texts and then served with the prompts
    prompts = dict(getattr(model, "prompts", None) or {})
    query, passage = query_prompt(prompts), document_prompt(prompts)
    negatives = _mine_hard_negatives(
        model, queries, position, document_vectors, params.seed, show_progress=show_progress
    )
    texts = [passage + d.full_text() for d in documents]
    loss_fn = MultipleNegativesRankingLoss(model, scale=1.0 / params.temperature)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def batch_loss(batch: list[int]) -> Any:
        features = [
            model_inputs(model, [query + queries[i].text for i in batch]),
            model_inputs(model, [texts[position[queries[i].doc_id]] for i in batch]),
            model_inputs(model, [texts[negatives[i]] for i in batch]),
        ]
        return loss_fn(features, None)

    model.train()
    losses = _fit(trainable, len(queries), batch_loss, params, show_progress)
    model.eval()
    return losses


def _mine_hard_negatives(
    model: Any,
    queries: Sequence[PseudoQuery],
    position: dict[str, int],
    document_vectors: np.ndarray,
    seed: int,
    *,
    show_progress: bool | None = None,
) -> list[int]:
    """For each pseudo-query, one document the base model ranks 3rd-30th that is not its positive
    (the top two are skipped: near-duplicates of the positive are too often false negatives)."""
    from ragroute.progress import progress_enabled

    vectors = model.encode(  # as the base encoder embeds queries (the document vectors: documents)
        [q.text for q in queries],
        prompt=query_prompt(dict(getattr(model, "prompts", None) or {})) or None,
        batch_size=64,
        convert_to_numpy=True,
        normalize_embeddings=True,
        # a bar on a terminal only: until session 52 sentence-transformers drew one wherever its
        # logger was at INFO (a log file, a service), whatever show_progress said
        show_progress_bar=progress_enabled(show_progress),
    )
    rng = random.Random(seed)
    depth = min(30, len(document_vectors))
    out = []
    for q, scores in zip(queries, vectors @ document_vectors.T):
        top = np.argpartition(-scores, depth - 1)[:depth]
        ranked = [int(i) for i in top[np.argsort(-scores[top])] if i != position[q.doc_id]]
        pool = ranked[2:] or ranked
        out.append(rng.choice(pool))
    return out
