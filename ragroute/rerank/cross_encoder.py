"""Cross-encoder rerankers: any sentence-transformers ``CrossEncoder``, its ONNX export, calibrated.

A cross-encoder reads the query and one candidate together and returns a logit
(relevant or not). :class:`CrossEncoderReranker` loads

* a reranker trained by ``ragroute rerank train`` (an artifact of family
  ``reranker`` under ``rerank/NAME``: the model, its ONNX exports and the Platt
  calibration fitted on held-out training queries), or
* any sentence-transformers ``CrossEncoder`` by local path or by name (from the
  offline Hugging Face cache; nothing is downloaded), whose scores are the
  model's own activation and flagged ``calibrated: false``,

and runs it with torch in fp32 or bfloat16 (``backend="torch"`` / ``"torch-bf16"``), or with
onnxruntime on the fp32 or int8 export (``"onnx"`` / ``"onnx-int8"``). ``"auto"`` takes
``torch-bf16`` on a CPU with AMX (3x faster than fp32 and 1.8x faster than int8 ONNX on such a
machine, logits within 0.01 of fp32), else the int8 export when the artifact has it (on a CPU with
AVX512-BF16 but no AMX it beat bf16 torch: 108.5 against 134.4 ms p50 for 20 candidates), else
``torch-bf16`` where bfloat16 is native at all, else ``torch``. Calibrated probabilities:
``sigmoid(a * logit + c / stage1_rank + d * stage1_z + b)`` with ``a, b, c, d`` fitted on
held-out training pairs (:class:`Calibration`; ``stage1_z``: the candidate's stage-1 score
standardised within its pool), so the first stage's rank and score count as much as they proved to.

As a pipeline stage it reorders the fused hits of a query by that probability,
reading ``candidates`` hits (default 20) whatever ``k`` is, and records the logit,
the probability and the hit's stage-1 rank in ``hit.explain["rerank"]``. It is
registered as reranker kind ``cross-encoder`` (``reranker: {kind: cross-encoder,
model: rerank/NAME}`` in a routing config).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import (
    ArtifactFormatError,
    InvalidArgumentError,
    RagrouteError,
    check_batch,
    check_k,
    check_keys,
    check_query,
    check_setting,
    first_line,
    value_type_name,
)
from ragroute.identifiers import name_with_words
from ragroute.skills.compact import compact_body
from ragroute.skills.records import FIELDS_KEY
from ragroute.types import Hit

FAMILY = "reranker"
KIND = "cross-encoder"
CALIBRATION_FILE = "calibration.json"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")

#: the open :func:`remembered_logits` block's logits, by (scorer, queries, texts) of one call; None
#: outside one
_REMEMBERED: contextvars.ContextVar[dict[tuple[Any, ...], np.ndarray] | None] = contextvars.ContextVar(
    "ragroute_remembered_logits", default=None
)


@contextlib.contextmanager
def remembered_logits(
    memo: dict[tuple[Any, ...], np.ndarray] | None = None,
) -> Iterator[dict[tuple[Any, ...], np.ndarray]]:
    """Within the block, a reranker asked again for the logits of the same (query, candidates) pool
    reads back those it computed the first time (for runs that route the same queries several
    times, such as ``ragroute bench skills``' abstention passes). Only whole calls are reused, never
    single pairs (in torch and fp32 ONNX float rounding can differ with a batch's padding), and
    every logit read back is exactly what the call computes outside a block. Yields the memo;
    passing it to a later block keeps its logits across an untimed gap (timing belongs outside any
    block). Nothing is kept outside a block; thread-local, as context variables are."""
    token = _REMEMBERED.set({} if memo is None else memo)
    try:
        yield _REMEMBERED.get()  # type: ignore[misc]
    finally:
        _REMEMBERED.reset(token)


@dataclass(frozen=True)
class Calibration:
    """The probability of relevance from a logit and the candidate's stage-1 rank and score:
    ``sigmoid(a * logit + c / stage1_rank + d * stage1_z + b)`` (Platt scaling with a stage-1 prior).

    ``stage1_z`` is the candidate's stage-1 score standardised within the pool being reranked
    (:func:`pool_zscores`), so it reads any first stage on the same scale: how far a candidate's
    score stands out of its pool, which the rank alone cannot say (a near-perfect BM25 puts its
    right answers far ahead; a hesitant one does not). ``c`` and ``d`` (fitted with ``a`` and
    ``b`` on held-out training pairs) say how much the first stage's rank and score add to the
    cross-encoder's logit; a candidate scored without them (``score``) gets ``a * logit + b``.
    Calibrations fitted before ``d`` existed load with ``d = 0``.

    How much the first stage deserves depends on which first stage it is, so ``by_stage1`` holds
    calibrations fitted on the pools of one kind of first stage (``"skills"``: the skill
    router's); :meth:`for_stage1` picks one, falling back to this one (fitted on document pools).
    """

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    fitted: bool = False
    d: float = 0.0
    by_stage1: Mapping[str, Calibration] = field(default_factory=dict)

    def for_stage1(self, kind: str) -> Calibration:
        """The calibration for candidates from a ``kind`` first stage (this one when none was fitted)."""
        return self.by_stage1.get(kind, self)

    def blended(self, stage1_weight: float, scale: float = 1.0, shift: float = 0.0) -> Calibration:
        """This calibration with its stage-1 terms weighted ``stage1_weight`` times, then Platt-rescaled:
        ``sigmoid(scale * (a * logit + b + stage1_weight * (c / rank + d * z)) + shift)``, again of
        the form ``sigmoid(a' * logit + b' + c' / rank + d' * z)`` (how a catalogue's labelled tasks
        re-balance stage 1 against the cross-encoder: :mod:`ragroute.skills.blend`)."""
        s, k = float(stage1_weight), float(scale)
        return Calibration(k * self.a, k * self.b + float(shift), k * s * self.c, True, k * s * self.d)

    def __call__(
        self, logits: np.ndarray, ranks: np.ndarray | None = None, stage1_z: np.ndarray | None = None
    ) -> np.ndarray:
        """Probabilities; ``ranks`` 1-based (0: not retrieved by stage 1), ``stage1_z`` from
        :func:`pool_zscores`."""
        return probability(self.log_odds(logits, ranks, stage1_z))

    def log_odds(
        self, logits: np.ndarray, ranks: np.ndarray | None = None, stage1_z: np.ndarray | None = None
    ) -> np.ndarray:
        """``a * logit + c / stage1_rank + d * stage1_z + b``, the probability's log-odds, unclipped:
        what reranking orders by. The probability rounds to 1.0 above a log-odds of about 37 (and is
        clipped below -50), where it cannot tell candidates apart; until session 48 such candidates
        tied and kept the stage-1 order, whatever the cross-encoder read."""
        z = self.a * np.asarray(logits, dtype=np.float64) + self.b
        if ranks is not None and self.c:
            ranks = np.asarray(ranks, dtype=np.float64)
            z = z + self.c * np.where(ranks > 0, 1.0 / np.maximum(ranks, 1.0), 0.0)
        if stage1_z is not None and self.d:
            z = z + self.d * np.asarray(stage1_z, dtype=np.float64)
        return z

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.a, "b": self.b, "c": self.c, "d": self.d, "fitted": self.fitted}
        if self.by_stage1:
            out["stage1"] = {kind: cal.to_dict() for kind, cal in self.by_stage1.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """The calibration ``to_dict`` wrote; :class:`ValueError` naming the key for anything else
        (a coefficient that is not a finite number, ``fitted`` not a boolean, a ``stage1`` that is not
        a mapping)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a calibration is a mapping, not a {type(data).__name__}")

        def number(key: str, default: float) -> float:
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{key!r} is {value!r}, not a finite number")
            return float(value)

        fitted = data.get("fitted", False)
        if not isinstance(fitted, bool):  # bool("false") read as fitted until session 44
            raise ValueError(f"'fitted' is {fitted!r}, not true or false")
        stage1 = data.get("stage1") or {}
        if not isinstance(stage1, Mapping):
            raise ValueError(f"'stage1' is a {type(stage1).__name__}, not a mapping")
        return cls(
            number("a", 1.0),
            number("b", 0.0),
            number("c", 0.0),
            fitted,
            number("d", 0.0),
            {str(kind): cls.from_dict(cal) for kind, cal in stage1.items()},
        )


def pool_zscores(scores: Sequence[float], reference: int | None = None) -> np.ndarray:
    """Stage-1 scores standardised within their pool (0 for all when they do not vary; non-finite
    scores count as the pool's lowest). ``reference``: the mean and spread are those of the first
    ``reference`` scores (the pool the calibration was fitted on), the rest read on their scale, so
    a longer list does not change the first ones' z-scores. Scores near the float range are scaled
    down first (a z-score does not change with the scale): until session 44 a pool of two scores of
    9e307 overflowed the mean and gave NaN, and with it NaN probabilities from the reranker's
    calibration."""
    values = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(len(values))
    head = slice(None) if reference is None else slice(0, max(int(reference), 1))
    lowest = values[head][finite[head]].min() if finite[head].any() else values[finite].min()
    values = np.where(finite, values, lowest)
    largest = float(np.abs(values).max())
    if largest > 1e150:  # squares and sums of such scores overflow
        values = values / largest
    spread = values[head].std()
    return (values - values[head].mean()) / spread if spread > 1e-12 else np.zeros(len(values))


def stage1_score(hit: Hit) -> float:
    """The score that put ``hit`` where it is in the first stage's list: a pipeline's fused value
    (``explain["fused"]``: its hits carry a cosine-scale similarity as their score, which does not
    follow the fused order), else the hit's score. The calibration's ``stage1_z`` was fitted on the
    first stage's own scores (a hybrid index's fused values); until session 46 a pipeline's rerank
    stage standardised the cosine-scale scores instead, out of step with the order and the fit."""
    fused = fused_value(hit.explain)
    return hit.score if fused is None else fused


def fused_value(explain: Any) -> float | None:
    """The finite fused value a pipeline hit's explanation holds (``explain["fused"]``), else None."""
    fused = explain.get("fused") if isinstance(explain, Mapping) else None
    if isinstance(fused, Real) and not isinstance(fused, bool) and math.isfinite(float(fused)):
        return float(fused)
    return None


def candidate_text(
    hit: Hit, *, body: bool = True, title_words: bool = False, compact_bodies: bool = False
) -> str:
    """What the cross-encoder reads of a candidate: title, then text (or only the title and
    the first line when ``body`` is False, the skills ablation). With ``title_words`` (rerankers
    trained so, see ``TrainParams.title_words``) a one-word identifier title is followed by its
    words: ``analyzeSpeechEmotion analyze Speech Emotion | ...``. With ``compact_bodies`` (see
    ``TrainParams.compact_bodies``) a skill's body (a hit carrying the skill's fields, as
    :meth:`~ragroute.skills.records.Skill.to_document` records them) is read without what it
    repeats of the name and description (:func:`~ragroute.skills.compact.compact_body`)."""
    fields = hit.metadata.get(FIELDS_KEY) if compact_bodies and body else None
    if isinstance(fields, dict):
        start = int(fields.get("body_start", len(hit.text)))
        description = str(fields.get("description", ""))
        rest = compact_body(hit.text[start:], str(fields.get("name", hit.title or "")), description)
        text = "\n\n".join(part for part in (description, rest) if part)
    else:
        text = hit.text if body else hit.text.split("\n", 1)[0]
    title = hit.title
    if title_words and title and not any(c.isspace() for c in title):
        title = name_with_words(title)
    return f"{title} | {text}" if title else text


#: How models trained before each reading setting existed read candidates (a manifest without the key).
READING_BEFORE = {"title_words": False, "compact_bodies": False}


def reading(params: Mapping[str, Any]) -> dict[str, bool]:
    """How a reranker artifact (its manifest ``params``) reads candidates, as its model was trained:
    the keyword arguments of :func:`candidate_text` (``title_words``, ``compact_bodies``); a setting
    the manifest predates reads as before it existed (:data:`READING_BEFORE`)."""
    train = params.get("train") or {}
    return {key: bool(train.get(key, before)) for key, before in READING_BEFORE.items()}


#: ``explain["rerank"]["unread"]`` of a candidate without title or text (scored 0, placed after the rest)
UNREAD = "no title or text to read: after the candidates read, in stage-1 order, probability 0"


class CrossEncoderReranker:
    """Reorders a query's hits by a cross-encoder's calibrated probability of relevance."""

    name = "cross-encoder"

    def __init__(
        self,
        model: str | Path = "rerank/default",
        *,
        backend: str = "auto",
        candidates: int = 20,
        batch_size: int = 32,
        max_length: int | None = None,
        threads: int | None = None,
        body: bool = True,
    ) -> None:
        if backend not in BACKENDS:
            raise RagrouteError(_unknown_backend(backend))
        if not isinstance(model, (str, os.PathLike)):
            raise InvalidArgumentError(f"reranker model must be a path or a name, got {type(model).__name__}")
        if not str(model).strip():  # Path("") is the working directory
            raise InvalidArgumentError("reranker model is empty: give a reranker folder or CrossEncoder name")
        self.model_ref = str(model)
        self.candidates = check_k(candidates, "candidates")
        self.batch_size = check_k(batch_size, "batch_size")
        if max_length is not None:
            max_length = check_k(max_length, "max_length")
        if threads is not None:  # 0, -1 or "2" ran with all cores, or failed inside onnxruntime
            threads = check_k(threads, "threads")
        self.body = body
        self._scorer, self.calibration, self.info = _load(
            Path(model), backend=backend, max_length=max_length, threads=threads
        )
        self.backend = self.info["backend"]
        self.reading = reading(self.info.get("params", {}))
        self.stage1 = "documents"  # which first stage's calibration is in use (see for_stage1)

    def for_stage1(self, kind: str) -> CrossEncoderReranker:
        """This reranker (sharing its model) with the calibration fitted after a ``kind`` first
        stage (``"skills"``: the skill router's), when the artifact has one."""
        other = copy.copy(self)
        other.calibration = self.calibration.for_stage1(kind)
        other.stage1 = kind if kind in self.calibration.by_stage1 else self.stage1
        return other

    def with_calibration(self, calibration: Calibration, label: str) -> CrossEncoderReranker:
        """This reranker (sharing its model) scoring through ``calibration``; ``label`` names it in
        :meth:`describe` (``calibration_stage1``)."""
        other = copy.copy(self)
        other.calibration = calibration
        other.stage1 = label
        return other

    def logits(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Raw logits of ``(query, text)`` pairs."""
        return self._batched([query] * len(texts), list(texts))

    def logits_pairs(self, pairs: Sequence[Any]) -> np.ndarray:
        """Raw logits of objects with ``query`` and ``text`` (e.g. training pairs), in order."""
        return self._batched([p.query for p in pairs], [p.text for p in pairs])

    def _batched(self, queries: list[str], texts: list[str]) -> np.ndarray:
        """The scorer over ``(queries[i], texts[i])`` in batches of :attr:`batch_size` (read back when
        the same call came before inside a :func:`remembered_logits` block)."""
        memo = _REMEMBERED.get()
        if memo is None:
            return self._computed(queries, texts)
        key = (self._scorer, tuple(queries), tuple(texts))
        if key not in memo:
            memo[key] = self._computed(queries, texts)
        return memo[key].copy()

    def _computed(self, queries: list[str], texts: list[str]) -> np.ndarray:
        out = [
            self._scorer(queries[start : start + self.batch_size], texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Probabilities that each text is relevant to ``query`` (calibrated when the model is)."""
        texts = check_batch(texts, "texts")
        wrong = [t for t in texts if not isinstance(t, str)]
        if wrong:  # the tokenizer's TypeError until session 36
            raise InvalidArgumentError(f"texts must be strings, got {value_type_name(wrong[0])}")
        return self.calibration(self.logits(check_query(query), texts))

    def rerank(self, context: Any, hits: list[Hit], k: int, *, candidates: int | None = None) -> list[Hit]:
        """The ``k`` best of the first ``candidates`` hits (default :attr:`candidates`; at least
        ``k``, so asking for more hits than ``candidates`` reranks that many: until session 36 the
        list was cut to ``candidates`` hits) by probability; ties keep the stage-1 order."""
        k = check_k(k)
        if not hits:  # before the pool size: callers pass candidates=len(hits)
            return []
        # candidates=0 read as "the default" until session 44 (``0 or self.candidates``)
        read = check_k(self.candidates if candidates is None else candidates, "candidates")
        pool = hits[: max(read, k)]
        query = check_query(getattr(context, "text", context))
        texts = [candidate_text(h, body=self.body, **self.reading) for h in pool]
        # a candidate with no title and no text (an image without a caption, a framework's empty
        # node) gives the model nothing to read: it comes after those read, in stage-1 order, with
        # probability 0 (until session 53 it was scored as the query against nothing, which a model
        # may rate above every real passage)
        read_at = [i for i, text in enumerate(texts) if text.strip()]
        logits = np.full(len(pool), np.nan, dtype=np.float32)
        if read_at:
            logits[read_at] = self.logits(query, [texts[i] for i in read_at])
        stage1 = [stage1_score(h) for h in pool]
        # standardised as within the candidates alone (until session 50 within all k hits when k
        # was more: asking for more hits changed the first candidates' probabilities)
        stage1_z = pool_zscores(stage1, reference=read)
        # by log-odds, which order as the probabilities do where those differ (and where they
        # round to one value, still by what the cross-encoder read); exact ties: stage-1 order
        odds = self.calibration.log_odds(logits, np.arange(1, len(pool) + 1), stage1_z)
        probs = probability(odds)
        unread = [i for i in range(len(pool)) if not np.isfinite(logits[i])]
        order = [*sorted(read_at, key=lambda i: (-odds[i], i)), *unread][:k]
        out = []
        for rank, i in enumerate(order, 1):
            hit = pool[i]
            seen = bool(np.isfinite(logits[i]))
            explain = {
                "kind": self.name,
                "model": self.info.get("name", self.model_ref),
                **(
                    {"logit": round(float(logits[i]), 4), "probability": round(float(probs[i]), 4)}
                    if seen
                    else {"unread": UNREAD}
                ),
                "calibrated": self.calibration.fitted,
                "stage1_rank": i + 1,
                "stage1_score": stage1[i],
                "stage1_z": round(float(stage1_z[i]), 4),
            }
            out.append(
                Hit(
                    doc_id=hit.doc_id,
                    score=float(probs[i]) if seen else 0.0,
                    source=hit.source,
                    rank=rank,
                    text=hit.text,
                    title=hit.title,
                    metadata=hit.metadata,
                    parent_id=hit.parent_id,
                    modality=hit.modality,
                    explain={**hit.explain, "rerank": explain},
                )
            )
        return out

    def trace_summary(self) -> dict[str, Any]:
        """What the pipeline's rerank trace step names (the hits' explanations name the model too):
        the model and its build, the candidates read, and the calibration in use (the first stage
        it was fitted after, or ``uncalibrated``)."""
        return {
            "model": self.info.get("name", self.model_ref),
            **({"build": self.info["build"]} if self.info.get("build") else {}),
            "candidates": self.candidates,
            "calibration": self.stage1 if self.calibration.fitted else "uncalibrated",
        }

    def describe(self) -> dict[str, Any]:
        """The model's description, candidate count and calibration, as plain data."""
        return {
            **self.info,
            "candidates": self.candidates,
            "calibration": self.calibration.to_dict(),
            "calibration_stage1": self.stage1,
        }


#: the type (and least value) of each ``reranker: {kind: cross-encoder, ...}`` setting
SETTING_TYPES: dict[str, tuple[str, float | None]] = {
    "model": ("string", None),
    "backend": ("string", None),
    "candidates": ("integer", 1),
    "batch_size": ("integer", 1),
    "max_length": ("integer", 1),
}


def check_cross_encoder_value(key: str, value: Any, section: str) -> None:
    """A one-line :class:`RagrouteError` if a ``reranker:`` setting has the wrong type, range or
    backend name (what loading refuses; ``ragroute config check`` calls it too)."""
    if key in SETTING_TYPES:
        expected, minimum = SETTING_TYPES[key]
        check_setting(value, expected, section, key, minimum=minimum, optional=key == "max_length")
    if key == "backend" and value not in BACKENDS:
        raise RagrouteError(f"{section}: {_unknown_backend(value)}")


def _unknown_backend(backend: Any) -> str:
    return f"unknown reranker backend {backend!r}: choose one of {', '.join(BACKENDS)}"


def cross_encoder_reranker(settings: Mapping[str, Any], build: Any) -> CrossEncoderReranker:
    """Registry entry: ``reranker: {kind: cross-encoder, model: PATH, backend: auto, candidates: 20}``."""
    from ragroute.rerank import RERANKER_SETTINGS, settings_where

    known = RERANKER_SETTINGS[KIND] | {"kind"}
    where = getattr(build, "where", "") or "reranker"
    check_keys(settings, known, settings_where(build), f"{KIND} reranker key")
    section = f"{where}: reranker" if getattr(build, "where", "") else "reranker"
    for key, value in settings.items():
        check_cross_encoder_value(key, value, section)
    model = str(settings.get("model", "rerank/default"))
    beside = build.resolve(model) if callable(getattr(build, "resolve", None)) else None
    return CrossEncoderReranker(
        beside if beside is not None and beside.exists() else model,  # beside the config, else as given
        backend=str(settings.get("backend", "auto")),
        candidates=int(settings.get("candidates", 20)),
        batch_size=int(settings.get("batch_size", 32)),
        max_length=settings.get("max_length"),
    )


# ---------------------------------------------------------------------------- loading


def _load(model: Path, *, backend: str, max_length: int | None, threads: int | None) -> tuple[Any, ...]:
    from ragroute.store import artifact_exists, read_artifact

    if artifact_exists(model):

        def read(snapshot: Any) -> tuple[Any, ...]:
            manifest = snapshot.manifest
            if manifest.family != FAMILY:
                raise RagrouteError(f"{model} holds a {manifest.family} artifact, not a reranker")
            folder = Path(snapshot.path)
            calibration = read_calibration(folder)
            params = manifest.params
            length = _fit_length(folder, max_length, int(params.get("max_length") or 256), str(model))
            chosen = backend
            if backend == "auto":
                chosen = (
                    "torch-bf16"
                    if amx_bfloat16()
                    else "onnx-int8"
                    if (folder / ONNX_INT8).is_file()
                    else "torch-bf16"
                    if native_bfloat16()
                    else "torch"
                )
            scorer = _scorer(folder, chosen, length, threads, str(model))
            info = {
                "name": manifest.name or model.name,
                "path": str(model),
                "backend": chosen,
                "max_length": length,
                "build": manifest.build,
                "params": params,
            }
            return scorer, calibration, info

        return read_artifact(model, read, family=FAMILY)
    resolved = _resolve_plain(model)
    chosen = ("torch-bf16" if native_bfloat16() else "torch") if backend == "auto" else backend
    if not chosen.startswith("torch"):
        raise RagrouteError(
            f"reranker {model}: ONNX backends need a reranker artifact (`ragroute rerank train` writes "
            "its ONNX exports); use 'torch'"
        )
    length = _fit_length(resolved, max_length, 512, str(model))
    scorer = _scorer(resolved, chosen, length, threads, str(model))
    # a local folder is named by its absolute path (a model name by that name): a rerank blend is
    # bound to this name (skills/blend.py), which until session 52 was the path as the caller spelt
    # it, so a blend fitted through "models/ce" was dropped when loaded through /abs/models/ce, a
    # symlink or from another directory (and applied to whatever "models/ce" named there)
    name = str(resolved) if model.is_dir() else str(model)
    info = {"name": name, "path": str(resolved), "backend": chosen, "max_length": length}
    return scorer, Calibration(fitted=False), info


def probability(log_odds: np.ndarray) -> np.ndarray:
    """The sigmoid of ``log_odds`` (clipped to [-50, 50] first, so no overflow warning)."""
    return 1.0 / (1.0 + np.exp(-np.clip(log_odds, -50.0, 50.0)))


def read_calibration(folder: Path) -> Calibration:
    """The calibration in a reranker build ``folder`` (loading and ``ragroute config check`` both
    read it here); :class:`ArtifactFormatError` naming the file when its contents are not one."""
    try:
        return Calibration.from_dict(json.loads((folder / CALIBRATION_FILE).read_text(encoding="utf-8")))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError included; nesting without end
        # (a RecursionError traceback until session 51)
        raise ArtifactFormatError(f"{folder / CALIBRATION_FILE} is corrupt: {first_line(exc)}") from None


def model_positions(folder: Path) -> int | None:
    """How many tokens the model in ``folder`` can read (its ``config.json``'s position embeddings,
    less RoBERTa's two offset positions), or None when it does not say."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        positions = int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    offset = 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else 0
    return positions - offset


def _fit_length(folder: Path, asked: int | None, default: int, label: str) -> int:
    """The token limit to read pairs at: ``asked``, else ``default`` cut to what the model reads.
    Until session 36 a limit above the model's positions failed inside the model on the first long
    document (a traceback on the command line; in a pipeline the reranker fell back to the fused
    order, said only in the trace)."""
    positions = model_positions(folder)
    if asked is not None and positions is not None and asked > positions:
        raise RagrouteError(
            f"reranker {label}: max_length {asked} is above the {positions} tokens its model reads"
        )
    return int(asked or (default if positions is None else min(default, positions)))


def _resolve_plain(model: Path) -> Path:
    """A local model folder, or the offline Hugging Face cache snapshot of a model name."""
    if model.is_dir():
        return model.resolve()
    from ragroute.encode.resolve import resolve_model

    try:
        return Path(resolve_model(str(model)).path)
    except RagrouteError:
        raise RagrouteError(
            f"reranker model {str(model)!r} cannot be loaded: not a reranker artifact, not a local folder, "
            "not in the offline model cache (train one with `ragroute rerank train`)"
        ) from None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none); read once."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return frozenset(flags)


def native_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (AMX or AVX512-BF16; elsewhere False):
    without it bfloat16 is emulated and slower than fp32."""
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def amx_bfloat16() -> bool:
    """Whether this CPU has AMX bfloat16 tiles: there torch runs a bfloat16 model about 3x faster
    than fp32 and faster than int8 ONNX (a 3-layer MiniLM cross-encoder over 20 pairs of 96 tokens
    on 2 cores: 59-89 ms bf16, 105-120 int8, 181 fp32). With AVX512-BF16 alone (an AMD EPYC, session
    22) int8 ONNX was the faster: 108.5 against 134.4 ms p50 reranking 20 toollens candidates with
    the default 6-layer model, the two alternating query by query."""
    return "amx_bf16" in _cpu_flags()


def _scorer(folder: Path, backend: str, max_length: int, threads: int | None, label: str) -> Any:
    if backend.startswith("torch"):
        return _TorchScorer(folder, max_length, threads, label, bfloat16=backend == "torch-bf16")
    file = folder / (ONNX_INT8 if backend == "onnx-int8" else ONNX_FP32)
    if not file.is_file():
        raise RagrouteError(
            f"reranker {label} has no {file.name} (`ragroute rerank train` writes it; "
            "train again, or use the backend 'torch')"
        )
    try:
        return _OnnxScorer(folder, file, max_length, threads, alone=backend == "onnx-int8")
    except Exception as exc:  # noqa: BLE001 - as the torch scorer's: one line naming the model
        # (onnxruntime's InvalidProtobuf or the tokenizers' bare Exception until session 51)
        raise RagrouteError(
            f"reranker model {label} cannot be loaded: {type(exc).__name__}: {first_line(exc)}"
        ) from None


class _TorchScorer:
    def __init__(
        self, folder: Path, max_length: int, threads: int | None, label: str, *, bfloat16: bool = False
    ) -> None:
        from sentence_transformers import CrossEncoder

        from ragroute.encode.resolve import set_offline_env
        from ragroute.encode.sentence_transformers import (
            check_vocabulary,
            check_weights_loaded,
            quiet_transformers,
        )

        set_offline_env()
        try:
            with quiet_transformers():
                self.model = CrossEncoder(
                    str(folder), max_length=max_length, local_files_only=True, device="cpu"
                )
        except Exception as exc:  # noqa: BLE001 - any loading failure is one line naming the model
            raise RagrouteError(
                f"reranker model {label} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from None
        if int(self.model.config.num_labels) != 1:
            raise RagrouteError(f"reranker model {label} has {self.model.config.num_labels} labels; need 1")
        # weights the folder lacks (a sentence embedding model's classifier head, a checkpoint of
        # another architecture) or a tokenizer of special tokens only: until session 51 such a
        # folder loaded, with random weights or every word [UNK], and scored without an error
        lead = f"reranker model {label} cannot be loaded"
        check_vocabulary(self.model, folder, lead=lead)
        check_weights_loaded(self.model, folder, lead=lead, unused=())
        if bfloat16:
            import torch

            self.model.model.to(torch.bfloat16)
        self.max_length = max_length

    def __call__(self, queries: list[str], texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model = self.model.tokenizer, self.model.model
        features = tokenizer(
            queries,
            texts,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            return model(**features).logits.view(-1).float().numpy()


class _OnnxScorer:
    """Logits of an ONNX export. With ``alone`` (the int8 copy) each pair is its own inference, with
    no padding: dynamic int8 quantises activations per tensor, over the whole batch, so a pair
    scored in a batch read a logit that moved with the other pairs of its batch and their padding
    (by up to 0.23 with ``rerank/default`` over 20 toollens candidates, no padding involved). The
    pairs are shared among ``threads`` Python threads running a session of one intra-op thread
    each (onnxruntime runs concurrent calls of one session): as fast as the batched run on 2 cores,
    where one pair at a time on a two-thread session cost 55-60% more."""

    def __init__(
        self, folder: Path, file: Path, max_length: int, threads: int | None, *, alone: bool = False
    ) -> None:
        from tokenizers import Tokenizer

        from ragroute.cpus import usable_cpus
        from ragroute.encode.onnx_session import make_session

        self.alone = alone
        self.workers = int(threads or usable_cpus()) if alone else 1
        self.session = make_session(file, 1 if alone else threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        self.tokenizer.no_padding()

    def __call__(self, queries: list[str], texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(zip(queries, texts)))
        if not self.alone:
            return self._run(encodings)
        if self.workers < 2 or len(encodings) < 2:
            return (
                np.concatenate([self._run([e]) for e in encodings]) if encodings else np.zeros(0, np.float32)
            )
        from concurrent.futures import ThreadPoolExecutor

        # a pool per call: no idle threads kept, nothing to go stale in a forked process
        with ThreadPoolExecutor(min(self.workers, len(encodings))) as pool:
            return np.concatenate(list(pool.map(lambda e: self._run([e]), encodings)))

    def _run(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in self.inputs}
        for row, e in enumerate(encodings):
            n = len(e.ids)
            feeds["input_ids"][row, :n] = e.ids
            if "attention_mask" in feeds:
                feeds["attention_mask"][row, :n] = e.attention_mask
            if "token_type_ids" in feeds:
                feeds["token_type_ids"][row, :n] = e.type_ids
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32).reshape(-1)
