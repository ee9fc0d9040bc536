"""A query classifier fine-tuned here for retrieval gates: "does this query need retrieval?".

The bundled all-MiniLM-L6-v2 is fine-tuned end to end (its transformer and a linear head on its
unit-length sentence embedding; the word-embedding table stays frozen) on the gate's labelled
queries, with class-balanced binary cross-entropy (the answer-directly class is often rare).
The result is two parts:

* a :class:`ProbeEncoder`: a query encoder of its own, whose vectors the query contexts cache under
  its own key (so a query is encoded once by it, like by any other encoder, and the encoding is
  counted as encoding, not as decision time);
* the head: ``logit = vector @ weight + bias`` (retrieve minus answer), a dot product per decision.

A gate stacks the probe on its examples' *out-of-fold* logits, while by default it decides with a
probe refitted on all examples (``final: refit``), a sharper model than the ones its calibration
saw. ``final: soup`` decides with :func:`soup` of the fold models instead (their weights averaged:
all are fine-tuned from the same weights and head initialisation with the same settings, a
"model soup"): one model and one encoder pass, on the fold models' scale, and one fine-tune fewer.

:class:`~ragroute.gate.signals.TunedProbeSignal` wraps it as the gate signal ``tuned_probe``. The
model is saved as a sentence-transformers folder (safetensors) inside the gate's artifact; nothing
is downloaded, nothing is pickled. Training reuses :func:`ragroute.training.fine_tune`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.encode._common import encode_unit_vectors
from ragroute.errors import RagrouteError

BASE_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ProbeTrainParams:
    """How a tuned probe is fine-tuned (defaults: common fine-tuning settings, not tuned on a test set)."""

    epochs: int = 3
    learning_rate: float = 3e-5
    batch_size: int = 16
    max_length: int = 128
    warmup: float = 0.1
    seed: int = 0
    threads: int | None = None
    """torch threads while training (restored afterwards); None: every usable core."""
    device: str = "cpu"
    """Where the fine-tune runs (a torch device such as ``cuda``); the fitted probe decides on the CPU."""

    def __post_init__(self) -> None:
        from ragroute.training import check_training_settings

        check_training_settings(
            self,
            "tuned probe training",
            counts=("epochs", "batch_size", "max_length"),
            shares=("warmup",),
            above_zero=("learning_rate",),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProbeEncoder:
    """The fine-tuned model as a query encoder (unit-length float32 vectors).

    ``model_id`` names this very model (``tuned-probe:<build>``), so query contexts cache its
    vectors apart from the base model's. It encodes queries only: no index is built with it.
    """

    backend = "torch"

    def __init__(self, model: Any, build: str) -> None:
        from ragroute.encode.sentence_transformers import embedding_dimension

        self.model = model
        self.build = build
        self.model_id = f"tuned-probe:{build}"
        self.dim = embedding_dimension(model)

    def encode_queries(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return encode_unit_vectors(
            self.model, texts, self.dim, batch_size=batch_size, show_progress=show_progress
        )

    def encode_documents(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        raise RagrouteError("a tuned probe encodes queries only (it classifies them; it indexes nothing)")

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}

    def save(self, folder: Path) -> None:
        self.model.save(str(folder))

    @classmethod
    def load(cls, folder: Path, build: str) -> ProbeEncoder:
        from ragroute.encode.sentence_transformers import load_sentence_transformer

        model = load_sentence_transformer(folder)
        model.eval()
        return cls(model, build)

    def __repr__(self) -> str:
        return f"ProbeEncoder({self.model_id!r}, dim={self.dim})"


@dataclass
class TunedProbe:
    """A fitted probe: its encoder and the linear head on that encoder's vectors."""

    encoder: ProbeEncoder
    weight: np.ndarray
    bias: float

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """Retrieve-minus-answer logits of the encoder's (unit-length) query vectors."""
        return np.asarray(vectors, dtype=np.float64) @ self.weight + self.bias


def soup(probes: Sequence[TunedProbe]) -> TunedProbe:
    """One probe whose transformer weights and head are the mean of ``probes``' (fine-tuned from
    the same initialisation with the same settings)."""
    import copy

    from ragroute.training import average_weights

    if not probes:
        raise RagrouteError("a probe soup needs at least one probe")
    model = copy.deepcopy(probes[0].encoder.model)
    averaged = average_weights([p.encoder.model for p in probes])
    model.load_state_dict(averaged)
    model.eval()
    weight = np.mean([p.weight for p in probes], axis=0)
    bias = float(np.mean([p.bias for p in probes]))
    return TunedProbe(ProbeEncoder(model, _digest(weight, bias)), weight, bias)


def _digest(weight: np.ndarray, bias: float) -> str:
    return hashlib.sha256(weight.tobytes() + np.float64(bias).tobytes()).hexdigest()[:12]


def train_probe(
    texts: Sequence[str],
    retrieve: Sequence[bool] | np.ndarray,
    params: ProbeTrainParams = ProbeTrainParams(),
    *,
    show_progress: bool | None = None,
) -> TunedProbe:
    """Fine-tune the bundled MiniLM and a linear head to predict ``retrieve`` from ``texts``."""
    import torch

    texts = [str(t) for t in texts]
    y = np.asarray(list(retrieve), dtype=bool)
    if len(texts) != len(y):
        raise RagrouteError(f"{len(texts)} texts but {len(y)} labels")
    if y.all() or not y.any():
        raise RagrouteError("a tuned probe needs queries that need retrieval and queries that do not")
    from ragroute.cpus import usable_cpus
    from ragroute.training import check_device

    check_device(params.device, "set the tuned_probe signal's device: cpu")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(params.threads or usable_cpus())
    try:
        return _train(texts, y, params, show_progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    texts: list[str], y: np.ndarray, params: ProbeTrainParams, show_progress: bool | None
) -> TunedProbe:
    import torch

    from ragroute.encode.resolve import resolve_model
    from ragroute.encode.sentence_transformers import embedding_dimension, load_sentence_transformer
    from ragroute.training import fine_tune, model_inputs

    torch.manual_seed(params.seed)
    model = load_sentence_transformer(resolve_model(BASE_MODEL).path, device=params.device)
    model.max_seq_length = params.max_length
    model[0].auto_model.embeddings.word_embeddings.requires_grad_(False)
    dim = embedding_dimension(model)
    head = torch.nn.Linear(dim, 1).to(params.device)  # initialised on the CPU's generator either way
    trainable = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    targets = torch.tensor(y, dtype=torch.float32, device=params.device)
    # balanced classes: a positive (retrieve) example weighs n_answer / n_retrieve
    pos_weight = torch.tensor(float((~y).sum()) / float(y.sum()), device=params.device)

    def batch_loss(positions: list[int]) -> Any:
        embedding = model(model_inputs(model, [texts[i] for i in positions]))["sentence_embedding"]
        logits = head(embedding).view(-1)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, targets[positions], pos_weight=pos_weight
        )

    model.train()
    fine_tune(
        trainable,
        len(texts),
        batch_loss,
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        warmup=params.warmup,
        seed=params.seed,
        desc="tuning gate probe",
        show_progress=show_progress,
    )
    model.eval()
    model.to("cpu")  # the gate decides on the CPU, wherever the probe was tuned
    weight = head.weight.detach().cpu().numpy().reshape(-1).astype(np.float64)
    bias = float(head.bias.detach().cpu().numpy()[0])
    return TunedProbe(ProbeEncoder(model, _digest(weight, bias)), weight, bias)
