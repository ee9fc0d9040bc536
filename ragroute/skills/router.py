"""Skill routing: retrieve (stage 1), rerank the top N with the body (stage 2), handle
near-duplicates, and abstain when no skill applies.

``SkillRouter(index, reranker=...).route(task, k)`` returns a :class:`SkillRoute`: the ranked
skills with scores, ``abstain`` (no skill applies) with the calibrated probability behind it, and
a trace of every stage (stage-1 BM25 / dense / fused scores of the candidates, the reranker's
probabilities and stage-1 ranks, the duplicate handling, the abstention features).

* **Stage 1** is :class:`~ragroute.skills.index.SkillIndex` (``method``: ``hybrid``, ``bm25`` or
  ``dense``; the benchmark ablates them through this same router).
* **Stage 2** (when a reranker is given) reorders the first ``candidates`` (default 20) by the
  cross-encoder's probability, reading name, description and body
  (:func:`~ragroute.rerank.cross_encoder.candidate_text`).
* **Overlap** (``overlap``): near-duplicate groups found at build time are ``"collapse"`` d (only
  the best-ranked member stays; the others are listed in its ``duplicates``), ``"diversify"`` d
  (later members move behind every skill of a new group; nothing is dropped) or kept as they are
  (``"keep"``).
* **Abstention**: a logistic model over signals of the ranking (the best dense cosine and how
  far it stands out of the catalogue's cosines, the dense margin between the first two skills,
  how far the best BM25 score stands out, and the best reranker probability when a reranker runs)
  gives ``p_applies``, the probability that the best skill applies at all; below ``threshold``
  the route abstains. The default models
  (:data:`DEFAULT_ABSTENTION`) were fitted on the training fold (``query_fold == 0``) of
  ``metatool_need_tool`` (tool / no_tool queries against the metatool catalogue, MiniLM);
  :func:`fit_abstention` fits one on any labelled queries (or constructed negatives). A model
  fitted with another encoder is not applied (``p_applies`` is then ``None``).
* **Caller scopes**: ``route(task, scopes=...)`` and a pipeline's query contexts route over the
  skills whose metadata ``access`` labels the caller's scopes meet, as if the others were not in
  the catalogue (ranks, z-scores, duplicate groups, reranker pool, abstention signals); BM25's idf
  and the build-time dense weight stay the whole catalogue's (docs/skills.md, "Access labels").
* **Abstention through a gate**: ``abstention=<gate>`` (any :class:`~ragroute.pipeline.stages.Gate`:
  ``gate_many(contexts)`` returning decisions with ``action`` and ``probability``) or
  ``abstention={"gate": PATH}`` (a folder written by ``ragroute gate fit``, loaded with the index's
  encoder). The gate's ``retrieve`` means "a skill applies"; ``answer`` (or ``stop``) means "no
  skill applies": the route abstains. ``p_applies`` is the gate's probability; ``threshold``, when
  set on the router, replaces the gate's own operating point (``p_applies < threshold`` abstains).
  A router saved with a gate loaded from a path keeps that path (absolute) in its manifest.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclasses_fields
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.display import shown_value
from ragroute.errors import (
    InvalidArgumentError,
    RagrouteError,
    check_batch,
    check_booleans,
    check_k,
    check_query,
    check_setting,
    unknown_keys_message,
)
from ragroute.rerank import rerank_every
from ragroute.skills.index import METHODS, ScopedView, SkillIndex, SkillIndexParams
from ragroute.skills.records import FIELDS_KEY, Catalogue, Skill, jsonable
from ragroute.types import Hit, TraceStep, plain_values

OVERLAP_MODES = ("collapse", "diversify", "keep")
STAGE1_FEATURES = ("dense_top", "dense_margin", "dense_top_z", "bm25_top_z")
RERANK_FEATURES = (*STAGE1_FEATURES, "rerank_top")


def check_abstention_features(features: Sequence[str], what: str) -> None:
    """One line unless ``features`` names at least one abstention signal, each a known one."""
    if not features or any(f not in RERANK_FEATURES for f in features):
        known = ", ".join(RERANK_FEATURES)
        raise InvalidArgumentError(f"{what} must be some of {known}; got {list(features)!r}")


@dataclass
class AbstentionModel:
    """``p_applies = sigmoid(coef . (x - mean) / scale + intercept)`` over named signals."""

    features: list[str]
    coef: list[float]
    intercept: float
    mean: list[float]
    scale: list[float]
    threshold: float = 0.5
    encoder: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # until session 44 an unknown signal or a coef / mean / scale of another length was taken,
        # and every route then failed with a KeyError or a numpy shape traceback
        check_abstention_features(self.features, "abstention model features")
        # a threshold outside [0, 1] abstained always or never, silently (until session 49)
        check_setting(self.threshold, "number", "abstention model", "threshold", minimum=0, maximum=1)
        sizes = {name: len(getattr(self, name)) for name in ("coef", "mean", "scale")}
        if any(size != len(self.features) for size in sizes.values()):
            raise InvalidArgumentError(
                f"abstention model has {len(self.features)} features but "
                + ", ".join(f"{size} {name}" for name, size in sizes.items())
            )
        # until session 51 a scale of 0 or a NaN or infinite number was taken: every p_applies was
        # then NaN (written as null, and never abstaining) or pinned at 0 or 1, without a word
        check_setting(plain_values(self.intercept), "number", "abstention model", "intercept")
        for name in ("coef", "mean", "scale"):
            for i, value in enumerate(getattr(self, name)):
                number = plain_values(value)  # a numpy number as Python's
                check_setting(number, "number", "abstention model", f"{name}[{i}]", positive=name == "scale")

    def probability(self, signals: Mapping[str, float]) -> float:
        x = np.asarray([float(signals[f]) for f in self.features])
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(np.dot(self.coef, z) + self.intercept)
        return float(1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AbstentionModel:
        missing = [k for k in ("features", "coef", "intercept", "mean", "scale") if k not in data]
        if missing:  # a TypeError about __init__'s positional arguments until session 44
            raise InvalidArgumentError(
                f"abstention model without {', '.join(missing)}: refit it (fit_abstention)"
            )
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# The model ``ragroute bench skills --data ../shared/data/metatool --no-reranker`` fits
# (``abstention.labels.fitted_model``): fold 0 of metatool_need_tool (252 tasks) against the metatool
# catalogue, all-MiniLM-L6-v2, class-balanced logistic regression; balanced accuracy 0.7689 on fold 1
# (268 tasks). Refitted in session 20, when skill BM25 began leaving out NLTK's stopwords (the
# previous model's bm25_top_z had mean 6.08 and scale 1.82; the same signal now reads 7.34 and
# 2.47). Stage-1 signals only: a reranker's ``rerank_top`` is used once a "rerank" model is fitted.
DEFAULT_ABSTENTION: dict[str, dict[str, Any]] = {
    "stage1": {
        "features": ["dense_top", "dense_margin", "dense_top_z", "bm25_top_z"],
        "coef": [2.725892, 0.12228, -0.403258, -0.315167],
        "intercept": 0.332649,
        "mean": [0.369135, 0.085051, 4.205519, 7.339379],
        "scale": [0.154423, 0.096451, 1.277384, 2.470526],
        "threshold": 0.5,
        "encoder": "sentence-transformers/all-MiniLM-L6-v2",
        "info": {
            "name": "default: metatool_need_tool fold 0",
            "tasks": 252,
            "applies": 136,
            "catalogue": "metatool (199 tools)",
            "fold_rule": "query_fold(set, id) == 0 trains; fold 1 is reported",
            "balanced_accuracy_fold1": 0.7689,
            "bm25_stopwords": "nltk",
        },
    }
}


@dataclass
class RoutedSkill:
    """One ranked skill: id, name, score (reranker probability, or stage-1 fused score), rank,
    metadata, the near-duplicates collapsed into it, and its stage signals."""

    id: str
    name: str
    score: float
    rank: int
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    duplicates: list[str] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, signals: bool = False) -> dict[str, Any]:
        """The skill as plain data, as JSON writes it (numpy values in the metadata a catalogue built
        in code holds, or in the signals, as Python numbers; ``json.dumps`` raised on them). The
        metadata reads as a saved index gives it back (:func:`~ragroute.skills.records.jsonable`):
        until session 54 a date or a set in the metadata of a catalogue built in code was kept as
        it was, and ``json.dumps(route.to_dict())`` raised a TypeError on it."""
        out = {
            "id": self.id,
            "name": self.name,
            "score": round(float(self.score), 6),
            "metadata": jsonable(self.metadata),
        }
        if self.duplicates:
            out["duplicates"] = list(self.duplicates)
        if signals:
            out["signals"] = plain_values(self.signals)
        return out


def _renewed(routed: RoutedSkill, **changes: Any) -> RoutedSkill:
    """``RoutedSkill(**{**asdict(routed), **changes})``: a copy sharing no dict or list with
    ``routed`` (nor with the catalogue or the trace), built by :func:`_plain_copy`: ``asdict``'s
    generic recursion (a dataclass check and a ``deepcopy`` per value) was half of a small
    catalogue's route (~0.15 ms of 0.3 ms for five skills)."""
    fields = {name: _plain_copy(getattr(routed, name)) for name in _ROUTED_FIELDS}
    return RoutedSkill(**{**fields, **changes})


_ROUTED_FIELDS = tuple(f.name for f in dataclasses_fields(RoutedSkill))
_ATOMIC = frozenset({str, int, float, bool, type(None)})


@dataclass
class _Box:
    value: Any


def _plain_copy(value: Any) -> Any:
    """What :func:`dataclasses.asdict` makes of ``value`` as a field: plain dicts and lists copied
    (recursively), strings, numbers, booleans and None as they are (``deepcopy`` returns them
    unchanged), anything else through ``asdict`` itself."""
    kind = type(value)
    if kind in _ATOMIC:
        return value
    if kind is dict:
        return {_plain_copy(key): _plain_copy(item) for key, item in value.items()}
    if kind is list:
        return [_plain_copy(item) for item in value]
    return asdict(_Box(value))["value"]


@dataclass
class SkillRoute:
    """The router's answer for one task.

    ``skills`` best first (also when ``abstain`` is true: the caller may still look);
    ``p_applies`` the probability that the best skill applies (``None`` without an abstention
    model); ``abstain`` is ``p_applies < threshold``; ``trace`` one step per stage.
    """

    task: str
    skills: list[RoutedSkill]
    abstain: bool
    p_applies: float | None
    threshold: float
    trace: list[TraceStep] = field(default_factory=list)
    id: str = ""

    @property
    def best(self) -> RoutedSkill | None:
        """The best skill, or ``None`` where the router abstains (or found none)."""
        return None if self.abstain or not self.skills else self.skills[0]

    def __repr__(self) -> str:
        """The task and the skills as ``id score`` on one line (the dataclass's repr printed every
        skill's whole description, metadata and signals, and the trace)."""
        shown = ", ".join(f"{s.id} {s.score:.3g}" for s in self.skills[:5])
        more = f", ... {len(self.skills) - 5} more" if len(self.skills) > 5 else ""
        task = self.task if len(self.task) <= 60 else self.task[:57] + "..."
        p = "None" if self.p_applies is None else f"{self.p_applies:.3g}"
        return f"SkillRoute(task={task!r}, skills=[{shown}{more}], abstain={self.abstain}, p_applies={p})"

    def to_dict(self, *, trace: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "skills": [s.to_dict() for s in self.skills],
            "abstain": self.abstain,
            "p_applies": (None if self.p_applies is None else shown_value(self.p_applies, self.threshold)),
        }
        if trace:
            out["trace"] = [step.to_dict() for step in self.trace]
        return out


class GateAbstention:
    """Abstention through a retrieval gate: its ``retrieve`` is "a skill applies", anything else
    ("answer" from the model, "stop") abstains; ``path`` is where it was loaded from (``None``: an
    object given in code, which a saved router cannot reference)."""

    def __init__(self, gate: Any, path: str | Path | None = None) -> None:
        if not callable(getattr(gate, "gate_many", None)):
            raise RagrouteError(f"an abstention gate needs gate_many(contexts); got {type(gate).__name__}")
        self.gate = gate
        self.path = None if path is None else Path(path).resolve()

    @property
    def name(self) -> str:
        return str(getattr(self.gate, "name", type(self.gate).__name__))

    @property
    def threshold(self) -> float | None:
        value = getattr(self.gate, "threshold", None)
        return None if value is None else float(value)

    @classmethod
    def load(cls, path: str | Path, encoder: Any = None) -> GateAbstention:
        """The gate saved at ``path`` by ``ragroute gate fit`` (one-line error when it is not one)."""
        from ragroute.gate.trained import TrainedGate

        try:
            gate = TrainedGate.load(path, encoder)
        except RagrouteError as exc:
            raise RagrouteError(f"abstention gate {path}: {exc}") from None
        return cls(gate, path)

    def decide(self, tasks: Sequence[str], index: SkillIndex, scopes: Sequence[str] = ()) -> list[Any]:
        """One gate decision per task (its context holding the caller's ``scopes``); the index's
        cached query vectors are handed to the gate when it embeds with the same encoder (each task
        encoded once)."""
        from ragroute.context import QueryContext, encoder_key

        contexts = [QueryContext(task, scopes=tuple(scopes)) for task in tasks]
        encoder = getattr(self.gate, "encoder", None)
        if (
            getattr(self.gate, "uses_encoder", False)
            and encoder is not None
            and index.encoder is not None
            and encoder_key(encoder) == encoder_key(index.encoder)
        ):
            for context, vector in zip(contexts, index.query_vectors(tasks)):
                context.set_vector(encoder, vector)
        decisions = list(self.gate.gate_many(contexts))
        if len(decisions) != len(contexts):
            raise RagrouteError(
                f"abstention gate {self.name} returned {len(decisions)} decisions for {len(contexts)} tasks"
            )
        return decisions

    def to_dict(self) -> dict[str, Any]:
        return {"gate": None if self.path is None else str(self.path), "name": self.name}


ROUTE_CHUNK_CELLS = 1_000_000
""":meth:`SkillRouter.route_many` scores at most about this many task x skill cells at once (each
score matrix of a batch 8 MB), and never fewer than :data:`MIN_CHUNK_TASKS` tasks."""

MIN_CHUNK_TASKS = 8
"""The fewest tasks :meth:`SkillRouter.route_many` scores at once (a short last batch joins the one
before it); a task's scores do not depend on it (:func:`~ragroute.encode.base.row_products`)."""


def route_chunks(tasks: int, skills: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the batches :meth:`SkillRouter.route_many` scores ``tasks`` tasks over
    ``skills`` skills in: about :data:`ROUTE_CHUNK_CELLS` cells each, at least
    :data:`MIN_CHUNK_TASKS` tasks (a short last batch joins the one before it). A task's scores
    are the same in any batch and alone (:func:`~ragroute.encode.base.row_products`)."""
    size = max(MIN_CHUNK_TASKS, ROUTE_CHUNK_CELLS // max(skills, 1))
    bounds = [(start, min(start + size, tasks)) for start in range(0, tasks, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_CHUNK_TASKS:
        bounds[-2:] = [(bounds[-2][0], tasks)]
    return bounds


def _check_threshold(threshold: Any) -> None:
    """An abstention threshold is a probability (``None``: the model's own)."""
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise InvalidArgumentError(f"threshold must be a probability in [0, 1], got {threshold!r}")


def _check_settings(method: Any, overlap: Any, candidates: Any, threshold: Any) -> int:
    """The constructor's and :meth:`SkillRouter.with_options`'s settings checked (one-line
    :class:`InvalidArgumentError`, a ``ValueError``); ``candidates`` as an ``int``."""
    if method not in METHODS:
        raise InvalidArgumentError(f"unknown stage-1 method {method!r}: choose one of {', '.join(METHODS)}")
    if overlap not in OVERLAP_MODES:
        raise InvalidArgumentError(
            f"unknown overlap mode {overlap!r}: choose one of {', '.join(OVERLAP_MODES)}"
        )
    checked = check_k(candidates, "candidates")
    _check_threshold(threshold)
    return checked


ROUTER_OPTIONS = (
    "method", "reranker", "candidates", "overlap", "abstention", "threshold", "rerank_blend", "name", "index",
)  # fmt: skip
"""What :meth:`SkillRouter.with_options` may change (``index``: another index of the same skills)."""


class SkillRouter:
    """Retrieve-and-rerank over a skill catalogue, with overlap handling and abstention.

    ``index``: a :class:`SkillIndex`, or a :class:`Catalogue` / list of skills (indexed here with
    ``encoder`` and ``params``). ``reranker``: ``None``, a reranker object with
    ``rerank(context, hits, k)`` (one with a ``candidates`` attribute, e.g.
    :class:`~ragroute.rerank.cross_encoder.CrossEncoderReranker`, is passed ``candidates=`` too)
    or a path to load one from.
    ``abstention``: ``None`` (the default: never abstain), ``"default"`` (:data:`DEFAULT_ABSTENTION`,
    fitted on metatool; it does not transfer: on toollens, where every query needs a tool, it
    abstained on 58% of them), an :class:`AbstentionModel` fitted on your own catalogue with
    :func:`fit_abstention` (``ragroute skills build --abstain-data``), a mapping ``{"stage1":
    model, "rerank": model}``, or a retrieval gate: a gate object (``gate_many``) or ``{"gate":
    PATH}`` (a folder written by ``ragroute gate fit``; ``ragroute skills build --abstain-gate``),
    whose "answer without retrieval" is "no skill applies" (see :class:`GateAbstention`).
    ``rerank_blend``: ``None`` or a :class:`~ragroute.skills.blend.RerankBlend` (or its dict)
    fitted on labelled tasks of this catalogue with :func:`~ragroute.skills.blend.fit_rerank_blend`
    (``ragroute skills tune``): how much stage 1 weighs against the reranker here; it applies only to
    the reranker build it was fitted with (the trace says when it does not).
    """

    #: every abstention signal computed, also without a model (what :func:`fit_abstention` reads)
    _all_signals = False

    def __init__(
        self,
        index: SkillIndex | Catalogue | Sequence[Skill],
        reranker: Any = None,
        *,
        encoder: Any = None,
        params: SkillIndexParams | None = None,
        method: str = "hybrid",
        candidates: int = 20,
        overlap: str = "diversify",
        abstention: Any = None,
        threshold: float | None = None,
        name: str = "skills",
        rerank_blend: Any = None,
    ) -> None:
        candidates = _check_settings(method, overlap, candidates, threshold)
        if not isinstance(index, SkillIndex):
            index = SkillIndex.build(index, encoder, params)
        self.index = index
        self.reranker = _reranker_setting(reranker)
        self.method = method
        self.candidates = int(candidates)
        self.overlap = overlap
        self.abstention, self.abstention_gate = _abstention_setting(abstention, index.encoder)
        self.threshold = threshold
        self.name = name
        self.rerank_blend = _blend_setting(rerank_blend)
        if threshold is not None:
            # as with_options refuses it since session 40: until session 44 the constructor took a
            # threshold on a router that cannot abstain, which then never abstained without a word
            self._check_threshold_applies(threshold)

    @classmethod
    def build(
        cls,
        catalogue: Catalogue | Sequence[Skill],
        encoder: Any,
        params: SkillIndexParams | None = None,
        **kwargs: Any,
    ) -> SkillRouter:
        """Index ``catalogue`` and return a router over it (``kwargs`` as in the constructor)."""
        return cls(SkillIndex.build(catalogue, encoder, params), **kwargs)

    def __repr__(self) -> str:
        return (
            f"SkillRouter({len(self.index)} skills, method={self.method!r}, "
            f"reranker={type(self.reranker).__name__ if self.reranker is not None else None}, "
            f"threshold={self.threshold})"
        )

    @property
    def catalogue(self) -> Catalogue:
        """The skills it routes over."""
        return self.index.catalogue

    def with_options(self, **changes: Any) -> SkillRouter:
        """A router sharing this one's index with some settings changed (``method``, ``reranker``: an
        object or a folder to load one from, as in the constructor; ``overlap``, ``candidates``,
        ``abstention``, ``threshold``, ``rerank_blend``)."""
        other = copy.copy(self)
        for key, value in changes.items():
            if key == "abstention":
                other.abstention, other.abstention_gate = _abstention_setting(value, other.index.encoder)
                continue
            if key == "rerank_blend":
                other.rerank_blend = _blend_setting(value)
                continue
            if key not in ROUTER_OPTIONS:  # until session 44 any attribute, a method too, was replaced
                unknown = unknown_keys_message([key], ROUTER_OPTIONS, "skill router setting")
                raise InvalidArgumentError(unknown)
            if key == "index" and not isinstance(value, SkillIndex):
                raise InvalidArgumentError(f"index must be a SkillIndex, got {type(value).__name__}")
            setattr(other, key, _reranker_setting(value) if key == "reranker" else value)
        other.candidates = _check_settings(other.method, other.overlap, other.candidates, other.threshold)
        if changes.get("threshold") is not None:
            # a threshold on a router that cannot abstain never abstained, without a word (until
            # session 40; `skills route --threshold` refused it)
            other._check_threshold_applies(changes["threshold"])
        return other

    def _check_threshold_applies(self, threshold: float) -> None:
        """A one-line error when this router cannot abstain, so ``threshold`` would never act."""
        abstains, why = self.abstention_status()
        if not abstains:
            raise InvalidArgumentError(
                f"threshold={threshold!r} does not apply: this router cannot abstain ({why}); "
                "give abstention= a model (fit_abstention), 'default' or a gate"
            )

    def describe(self) -> dict[str, Any]:
        """Its settings as plain data: stage-1 method and fusion, candidates, reranker, abstention."""
        reranker = None
        if self.reranker is not None:
            info = getattr(self.reranker, "info", {}) or {}
            reranker = {
                "model": info.get("name", type(self.reranker).__name__),
                "backend": info.get("backend"),  # bf16 torch and int8 ONNX rank slightly differently
                "body": self.reranker_body,
                "calibration": getattr(self.reranker, "stage1", None),  # which first stage's
                "blend": self._stage2()[1],
            }
        model = self._model() if self.abstention_gate is None else None
        return {
            "skills": len(self.index),
            "method": self.method,
            "fusion": self.index.params.fusion,
            "dense_weight": self.index.dense_weight,
            "candidates": self.candidates,
            "overlap": self.overlap,
            "duplicate_groups": len(self.index.duplicates),
            "reranker": reranker,
            "abstention": (
                self.abstention_gate.to_dict()
                if self.abstention_gate is not None
                else (model.to_dict() if model else None)
            ),
        }

    @property
    def reranker_body(self) -> bool:
        """Whether the reranker reads each skill's body beside its name and description."""
        return bool(getattr(self.reranker, "body", True))

    # ------------------------------------------------------------------ routing

    def route(self, task: str, k: int = 5, *, scopes: Any = None) -> SkillRoute:
        """The ``k`` best skills for ``task``, whether to abstain, and the trace.

        ``scopes``: ``None`` (the default) routes over the whole catalogue, as whoever holds the
        router may; a caller's scopes (a label or a list; ``()``: a caller without scopes) route
        over the skills it may read only, as if the others were not in the catalogue (ranks,
        z-scores, duplicates, the reranker's pool and the abstention signals alike; BM25's idf stays
        the whole catalogue's, see docs/skills.md)."""
        return self.route_many([task], k, scopes=scopes)[0]

    def route_many(
        self,
        tasks: Sequence[str],
        k: int = 5,
        *,
        ids: Sequence[str] | None = None,
        scopes: Any = None,
    ) -> list[SkillRoute]:
        """:meth:`route` for many tasks (stage 1 scored in batches of :func:`route_chunks`)."""
        k = check_k(k)
        view = None
        held: tuple[str, ...] = ()
        if scopes is not None:
            from ragroute.scopes import caller_scopes

            held = caller_scopes(scopes)
            view = self.index.scoped_view(held)
        tasks = check_batch(tasks, "tasks")
        if ids is not None:  # too few ids raised IndexError, a string was one id per letter (session 37)
            ids = check_batch(ids, "ids")
            if len(ids) != len(tasks):
                raise InvalidArgumentError(f"{len(ids)} ids for {len(tasks)} tasks: give one id per task")
        for task in tasks:  # every task checked before any is scored
            check_query(task)
        out: list[SkillRoute] = []
        # until session 41 the whole batch was scored at once: several tasks x skills float64
        # matrices held to the end (10,000 skills: 6,000 tasks took 2.7 GB more)
        for start, stop in route_chunks(len(tasks), len(self.index)):
            out.extend(self._route_chunk(tasks[start:stop], k, view, held))
        if ids is not None:
            for route, route_id in zip(out, ids):
                route.id = route_id
        return out

    def _route_chunk(
        self, tasks: list[str], k: int, view: ScopedView | None = None, scopes: Sequence[str] = ()
    ) -> list[SkillRoute]:
        """The routes of ``tasks``, stage 1 scored as one batch (``view``: over the skills a
        caller's scopes let it read only)."""
        columns = None if view is None else view.columns
        if columns is not None and not len(columns):
            return [self._nothing_visible(task) for task in tasks]
        began = time.perf_counter()
        scoped = {} if columns is None else {"columns": columns}  # an unscoped call as it was
        scores = self.index.score(tasks, self.method, **scoped)
        stage1_ms = (time.perf_counter() - began) * 1000 / len(tasks)
        decisions: list[Any] = [None] * len(tasks)
        if self.abstention_gate is not None:
            decisions = self.abstention_gate.decide(tasks, self.index, scopes)
        other: dict[str, np.ndarray] = {}
        if self.method != "hybrid" and (self._model() is not None or self._all_signals):
            # a bm25 or dense stage 1 scores one side only: the abstention model's other signals are
            # computed from the index, for the batch at once (as the trace note says; until session 36
            # they were not, and the route failed with a KeyError traceback)
            side = self.index.score(tasks, "dense" if self.method == "bm25" else "bm25", **scoped)
            other = {key: rows for key, rows in side.items() if key != "fused"}
        out = []
        for row, task in enumerate(tasks):
            route = self._route_one(
                task,
                {key: value[row] for key, value in scores.items()},
                k,
                stage1_ms,
                decisions[row],
                {key: value[row] for key, value in other.items()},
                view,
            )
            route.id = ""
            out.append(route)
        return out

    def _route_one(
        self,
        task: str,
        scores: dict[str, np.ndarray],
        k: int,
        stage1_ms: float,
        decision: Any = None,
        other: Mapping[str, np.ndarray] | None = None,
        view: ScopedView | None = None,
    ) -> SkillRoute:
        """One task's route from its stage-1 score rows; ``other``: the rows of the side a one-sided
        stage 1 did not score, read only by the abstention model's signals. ``view``: the rows hold
        the columns of the skills a caller may read (:meth:`SkillIndex.scoped_view`) and the
        duplicate groups are theirs; ``None``: every skill."""
        index = self.index
        # whose duplicate groups: the catalogue's, or the visible skills'
        shown = index if view is None else view
        duplicates, group_of = shown.duplicates, shown.group_of
        depth = max(self.candidates, k) if self.reranker is not None else k
        if self.overlap != "keep" and duplicates:
            depth = 2 * depth  # duplicates collapsed or moved behind leave room for k others
        # ties in the fused score go by the dense cosine: with a dense weight of 0 (or a task sharing
        # no word with any skill) every skill can tie, and until session 40 they went by catalogue
        # order, so the reranker's pool and the ranking missed the dense side's best skills
        tiebreak = scores.get("dense") if self.method == "hybrid" else None
        rows = index.top(scores["fused"], depth, tiebreak)
        if self.overlap != "keep" and duplicates:
            rows = self._past_duplicates(rows, scores["fused"], tiebreak, k, view, group_of)
        positions = rows if view is None else view.columns[rows]  # the skills' catalogue positions
        stage1 = []
        for rank, (row, pos) in enumerate(zip(rows.tolist(), positions.tolist()), 1):
            entry = {
                "id": index.catalogue[pos].id,
                "rank": rank,
                "fused": round(float(scores["fused"][row]), 4),
            }
            for key in ("bm25", "dense", "bm25_z", "dense_z"):
                if key in scores:
                    entry[key] = round(float(scores[key][row]), 4)
            stage1.append(entry)
        trace = [
            TraceStep(
                "retrieve",
                {
                    "method": self.method,
                    "fusion": index.params.fusion if self.method == "hybrid" else self.method,
                    # reciprocal rank fusion weighs no side: until session 55 this named the
                    # index's dense weight (0.5), which the fused scores never applied
                    "dense_weight": (
                        index.dense_weight
                        if self.method == "hybrid" and index.params.fusion != "rrf"
                        else None
                    ),
                    "ms": round(stage1_ms, 3),
                    "candidates": stage1,
                },
            )
        ]
        ranked: list[RoutedSkill] = [
            self._routed(pos, float(scores["fused"][row]), rank, {"stage1": stage1[rank - 1]})
            for rank, (row, pos) in enumerate(zip(rows.tolist(), positions.tolist()), 1)
        ]
        rerank_top = None
        if self.reranker is not None:
            began = time.perf_counter()
            reranker, blend_note = self._stage2()
            # asked for more skills than the reranker reads: it reads every one retrieved, so the
            # scores returned are all probabilities (until session 36 those past the pool kept
            # their stage-1 z-scores, in one list with the probabilities, unmarked)
            # so are those a near-duplicate moved out of the pool leaves room for: until session 43
            # the skills that filled those places kept their stage-1 fused scores (-0.5 after 0.98)
            pool = ranked[: self.candidates]
            if k > len(pool) - self._folded(pool, group_of):
                pool = ranked
            hits = [self._hit(r) for r in pool]
            reranked = rerank_every(reranker, task, hits, len(hits))
            by_id = {r.id: r for r in pool}
            new = []
            for rank, hit in enumerate(reranked, 1):
                skill = by_id[hit.doc_id]
                detail = hit.explain.get("rerank", {})
                skill.signals["rerank"] = {
                    "probability": detail.get("probability", round(hit.score, 4)),
                    "logit": detail.get("logit"),
                    "stage1_rank": detail.get("stage1_rank"),
                    "stage1_z": detail.get("stage1_z"),
                }
                new.append(_renewed(skill, score=float(hit.score), rank=rank))
            ranked = new + ranked[len(pool) :]
            rerank_top = float(reranked[0].score) if reranked else None
            trace.append(
                TraceStep(
                    "rerank",
                    {
                        "model": (getattr(self.reranker, "info", {}) or {}).get(
                            "name", type(self.reranker).__name__
                        ),
                        "body": self.reranker_body,
                        "blend": blend_note,
                        "candidates": len(pool),
                        "ms": round((time.perf_counter() - began) * 1000, 3),
                        "scores": [
                            {"id": r.id, **{k2: v for k2, v in r.signals["rerank"].items()}} for r in new
                        ],
                    },
                )
            )
        unread = None
        if self.overlap == "collapse" and duplicates:
            unread = functools.partial(self._unread_members, duplicates, scores["fused"], tiebreak, view)
        ranked, overlap_detail = self._handle_overlap(ranked, group_of, k, unread)
        if overlap_detail is not None:
            trace.append(TraceStep("overlap", overlap_detail))
        ranked = [_renewed(r, rank=i) for i, r in enumerate(ranked[:k], 1)]
        model = self._model()
        signals = self.signals({**(other or {}), **scores}, rerank_top)
        if self.abstention_gate is not None:
            return self._gate_route(task, ranked, trace, signals, decision)
        threshold = self._threshold(model)
        p_applies = model.probability(signals) if model is not None else None
        abstain = p_applies is not None and p_applies < threshold
        trace.append(
            TraceStep(
                "abstain",
                {
                    "signals": {key: round(float(v), 4) for key, v in signals.items()},
                    "model": None if model is None else model.info.get("name", "custom"),
                    "features": None if model is None else model.features,
                    "p_applies": None if p_applies is None else shown_value(p_applies, threshold),
                    "threshold": threshold,
                    "abstain": abstain,
                    "note": self._abstention_note(),
                },
            )
        )
        return SkillRoute(task, ranked, abstain, p_applies, threshold, trace)

    def _unread_members(
        self,
        groups: Sequence[Sequence[str]],
        fused: np.ndarray,
        tiebreak: np.ndarray | None,
        view: ScopedView | None,
        group: int,
        read: set[str],
    ) -> list[str]:
        """The members of ``groups[group]`` not in ``read``, in the order :meth:`SkillIndex.top`
        ranks them by the fused row (then ``tiebreak``, then column); ``view``: the rows hold a
        caller's visible columns."""
        members = [sid for sid in groups[group] if sid not in read]
        positions = self.index.positions
        columns = [positions[sid] for sid in members]
        if view is not None:
            columns = np.searchsorted(view.columns, columns).tolist()

        def order(i: int) -> tuple[float, float, int]:
            column = columns[i]
            second = 0.0 if tiebreak is None else -float(tiebreak[column])
            return -float(fused[column]), second, column

        return [members[i] for i in sorted(range(len(members)), key=order)]

    def _past_duplicates(
        self,
        rows: np.ndarray,
        fused: np.ndarray,
        tiebreak: np.ndarray | None,
        k: int,
        view: ScopedView | None,
        group_of: Mapping[str, int],
    ) -> np.ndarray:
        """``rows`` (stage 1's best, in order) read further until they hold ``k`` skills of distinct
        near-duplicate groups (or every skill): twice the depth suffices for pairs, not for larger
        groups. Until session 44 a group of 5 copies at the top left ``collapse`` with 1 skill for
        k=2 and ``diversify`` with a copy in the top 2."""
        catalogue = self.index.catalogue
        while len(rows) < len(fused):
            positions = rows if view is None else view.columns[rows]
            groups = [group_of.get(catalogue[pos].id) for pos in positions.tolist()]
            found = [g for g in groups if g is not None]
            distinct = len(groups) - (len(found) - len(set(found)))
            if distinct >= k:
                break
            rows = self.index.top(fused, len(rows) + k - distinct, tiebreak)
        return rows

    def _stage2(self) -> tuple[Any, dict[str, Any] | None]:
        """``(reranker to use, blend note)``: the reranker re-balanced by :attr:`rerank_blend` when
        that was fitted for it (:mod:`ragroute.skills.blend`); the note is ``None`` without a blend."""
        if self.rerank_blend is None or self.reranker is None:
            return self.reranker, None
        cached = getattr(self, "_blended", None)  # (reranker, blend, reranker to use, note)
        if cached is None or cached[0] is not self.reranker or cached[1] is not self.rerank_blend:
            cached = (self.reranker, self.rerank_blend, *self.rerank_blend.apply(self.reranker))
            self._blended = cached
        return cached[2], cached[3]

    def _gate_route(
        self,
        task: str,
        ranked: list[RoutedSkill],
        trace: list[TraceStep],
        signals: dict[str, float],
        decision: Any,
    ) -> SkillRoute:
        gate = self.abstention_gate
        assert gate is not None
        p_applies = float(decision.probability)
        threshold = self._threshold()
        # a threshold set on the router decides by the probability; else the gate's own decision
        abstain = p_applies < threshold if self.threshold is not None else str(decision.action) != "retrieve"
        values = (getattr(decision, "signals", None) or {}).get("values")
        trace.append(
            TraceStep(
                "abstain",
                {
                    "signals": {key: round(float(v), 4) for key, v in signals.items()},
                    "model": f"gate:{gate.name}",
                    "gate": {
                        "name": gate.name,
                        "path": None if gate.path is None else str(gate.path),
                        "action": str(decision.action),
                        "reason": str(getattr(decision, "reason", "")),
                        "values": values,
                    },
                    "p_applies": shown_value(p_applies, threshold),
                    "threshold": threshold,
                    "abstain": abstain,
                    "note": (
                        "gate: retrieve = a skill applies; answer / stop = abstain"
                        if self.threshold is None
                        else "gate probability against the router's threshold"
                    ),
                },
            )
        )
        return SkillRoute(task, ranked, abstain, p_applies, threshold, trace)

    def signals(self, scores: Mapping[str, np.ndarray], rerank_top: float | None) -> dict[str, float]:
        """The scale-free signals the abstention model reads, from one task's full score rows."""
        out: dict[str, float] = {}
        dense = scores.get("dense")
        if dense is not None and len(dense):
            top2 = np.sort(dense)[-2:] if len(dense) > 1 else np.array([dense[0], dense[0]])
            out["dense_top"] = float(top2[-1])
            out["dense_margin"] = float(top2[-1] - top2[0])
            std = float(np.std(dense))
            out["dense_top_z"] = float((top2[-1] - np.mean(dense)) / std) if std > 0 else 0.0
        bm25_z = scores.get("bm25_z")
        if bm25_z is not None and len(bm25_z):
            out["bm25_top_z"] = float(np.max(bm25_z))
        if rerank_top is not None:
            out["rerank_top"] = rerank_top
        return out

    def _model(self) -> AbstentionModel | None:
        models = self.abstention or {}
        model = models.get("rerank") if self.reranker is not None and self.reranker_body else None
        model = model or models.get("stage1")
        if model is None:
            return None
        encoder = str(getattr(self.index.encoder, "model_id", ""))
        if model.encoder and encoder and model.encoder != encoder:
            return None
        return model

    def abstention_status(self) -> tuple[bool, str]:
        """Whether this router can abstain as configured (a gate, or a model it can apply: fitted
        with its encoder, and with a reranker when the model reads one), and why not."""
        return self.abstention_gate is not None or self._model() is not None, self._abstention_note()

    @property
    def abstention_needs_reranker(self) -> bool:
        """True when this router's only abstention model was fitted with a reranker's probability
        (``rerank_top``) and it routes without a reranker that reads bodies: the model is not applied."""
        models = self.abstention or {}
        return (
            self.abstention_gate is None
            and "rerank" in models
            and "stage1" not in models
            and (self.reranker is None or not self.reranker_body)
        )

    def _abstention_note(self) -> str:
        if self.abstention_gate is not None:
            return f"abstention gate {self.abstention_gate.name}"
        if not self.abstention:
            return "no abstention model: never abstains"
        if self.abstention_needs_reranker:  # said as "another encoder or other signals" until session 40
            without = (
                "without a reranker" if self.reranker is None else "with a reranker that reads no bodies"
            )
            return (
                "the abstention model was fitted with the reranker's probability (rerank_top): not applied "
                f"{without}; route with the reranker"
            )
        if self._model() is None:
            return "abstention model fitted with another encoder: not applied"
        if self.method != "hybrid":
            return f"stage-1 method {self.method}: missing signals are computed from the index"
        return ""

    def _routed(self, pos: int, score: float, rank: int, signals: dict[str, Any]) -> RoutedSkill:
        skill = self.index.catalogue[pos]
        return RoutedSkill(
            skill.id, skill.name, score, rank, dict(skill.metadata), skill.description, [], dict(signals)
        )

    def _hit(self, routed: RoutedSkill) -> Hit:
        """The candidate the reranker reads: the skill as its Document reads, with its fields (so a
        reranker trained on compact bodies finds where the body starts)."""
        skill = self.index.catalogue.by_id(routed.id)
        text = skill.document_text()
        return Hit(
            doc_id=skill.id,
            score=routed.score,
            source=self.name,
            rank=routed.rank,
            text=text,
            title=skill.name,
            metadata={FIELDS_KEY: skill.fields(text)},
        )

    def _threshold(self, model: Any = None) -> float:
        """The abstention threshold in force: the router's own, else the abstention gate's, else
        ``model``'s (the stage-1 abstention model), else 0.5."""
        if self.threshold is not None:
            return float(self.threshold)
        if self.abstention_gate is not None:
            gate = self.abstention_gate.threshold
            return float(gate) if gate is not None else 0.5
        return float(model.threshold) if model is not None else 0.5

    def _nothing_visible(self, task: str) -> SkillRoute:
        """The route of a caller who may read no skill of the catalogue: nothing, abstaining."""
        threshold = self._threshold(self._model() if self.abstention_gate is None else None)
        trace = [
            TraceStep("retrieve", {"method": self.method, "candidates": []}),
            TraceStep(
                "abstain",
                {"p_applies": None, "abstain": True, "note": "no skill the caller may read"},
            ),
        ]
        return SkillRoute(task, [], True, None, float(threshold), trace)

    def _folded(self, ranked: list[RoutedSkill], group_of: Mapping[str, int]) -> int:
        """How many of ``ranked`` the overlap handling collapses or moves behind (members of a
        near-duplicate group after its first, in any order of ``ranked``)."""
        if self.overlap == "keep" or not group_of:
            return 0
        groups = [group_of[r.id] for r in ranked if r.id in group_of]
        return len(groups) - len(set(groups))

    def _handle_overlap(
        self,
        ranked: list[RoutedSkill],
        group_of: Mapping[str, int] | None = None,
        k: int | None = None,
        unread: Callable[[int, set[str]], list[str]] | None = None,
    ) -> tuple[list[RoutedSkill], dict[str, Any] | None]:
        """Near-duplicates of ``ranked`` collapsed or moved down; ``group_of``: the duplicate groups
        (default: the whole catalogue's; a scoped route gives those among visible skills). The
        trace detail (``None`` when nothing changed) names what changed the first ``k`` (default:
        all): the members folded into a skill among them, or moved out of (or down within) them;
        until session 44 it named every member moved among the candidates read, also those folded
        into a skill the route did not return, and the step was there when nothing changed.

        ``unread(group, read)``: the members of a group that ``ranked`` does not hold, in stage 1's
        order; ``collapse`` folds them too into the member kept among the first ``k``, so its
        ``duplicates`` name every other member of its group. Until session 51 they named only the
        members among the candidates read (twice k): with k=1 a group of three listed one of the
        two it hid, and the same skill listed more of them for a larger k."""
        group_of = self.index.group_of if group_of is None else group_of
        if self.overlap == "keep" or not group_of:
            return ranked, None
        seen: dict[int, RoutedSkill] = {}
        kept: list[RoutedSkill] = []
        later: list[RoutedSkill] = []
        moved: list[str] = []
        for r in ranked:
            group = group_of.get(r.id)
            if group is None or group not in seen:
                if group is not None:
                    seen[group] = r
                kept.append(r)
                continue
            moved.append(r.id)
            if self.overlap == "collapse":
                seen[group].duplicates.append(r.id)
            else:
                later.append(r)
        out = kept + later
        cut = len(ranked) if k is None else k
        if self.overlap == "collapse" and unread is not None:
            read = {r.id for r in ranked}
            for r in kept[:cut]:
                group = group_of.get(r.id)
                if group is not None:
                    rest = unread(group, read)
                    r.duplicates.extend(rest)
                    moved.extend(rest)
        if self.overlap == "collapse":
            folded = {sid for r in out[:cut] for sid in r.duplicates}
            listed = [sid for sid in moved if sid in folded]
        else:
            before = {r.id for r in ranked[:cut]}
            listed = [sid for sid in moved if sid in before]
        if not listed:
            return out, None
        return out, {
            "mode": self.overlap,
            ("collapsed" if self.overlap == "collapse" else "moved_down"): listed,
        }

    # ------------------------------------------------------------------ retriever protocol

    def search(self, query: str, k: int = 10, *, filters: Mapping[str, Any] | None = None) -> list[Hit]:
        """The routed skills as hits (the retriever protocol: a router can be a pipeline's source)."""
        return self.search_many([query], k, filters=filters)[0]

    def search_contexts(self, contexts: Sequence[Any], k: int = 10) -> list[list[Hit]]:
        """Routes as hits for query contexts: how a pipeline searches a skill source.

        Each context is routed within its caller's scopes (:meth:`route`'s ``scopes``): skills
        whose access labels (metadata ``access``) the scopes do not meet are left out before
        anything is ranked, so they shape neither the ranks, z-scores, duplicates, reranker pool
        nor abstention of what the caller sees (docs/skills.md, "Access labels")."""
        from ragroute.index.base import by_filter_groups

        return by_filter_groups(
            list(contexts),
            lambda group, filters: self.search_many([c.text for c in group], k, filters=filters),
            scoped=True,
        )

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Routes as hits (``Retriever`` protocol, so evaluators and pipelines can use the router);
        metadata ``filters`` are not supported on skills, apart from a caller's scope
        (:func:`ragroute.scopes.scoped_filters`: only the skills it may read are routed)."""
        from ragroute.scopes import SCOPE_FILTER, scope_of

        if any(key != SCOPE_FILTER for key in filters or {}):
            raise RagrouteError("the skill router does not filter by metadata")
        scope = scope_of(filters)
        if scope is None and SCOPE_FILTER in (filters or {}):  # never read as "not scoped"
            raise RagrouteError(f"the skill router's scope filter must be a Visible, not {filters!r}")
        out = []
        for route in self.route_many(queries, k, scopes=None if scope is None else sorted(scope.scopes)):
            out.append(
                [
                    Hit(
                        doc_id=r.id,
                        score=r.score,
                        source=self.name,
                        rank=r.rank,
                        title=r.name,
                        text=r.description,
                        metadata=r.metadata,
                        explain={"skill": r.signals, "abstain": route.abstain, "p_applies": route.p_applies},
                    )
                    for r in route.skills
                ]
            )
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, target: str | os.PathLike[str]) -> Any:
        """Publish the index with this router's settings and abstention (family ``skills``): the
        stage-1 models as numbers, an abstention gate by the absolute path it was loaded from."""
        abstention: dict[str, Any] = {key: m.to_dict() for key, m in (self.abstention or {}).items()}
        if self.abstention_gate is not None:
            if self.abstention_gate.path is None:
                raise RagrouteError(
                    f"abstention gate {self.abstention_gate.name} was given as an object: save it "
                    "(`ragroute gate fit`, TrainedGate.save) and pass abstention={'gate': PATH} "
                    "to save this router"
                )
            abstention = {"gate": str(self.abstention_gate.path)}
        router = {
            "method": self.method,
            "candidates": self.candidates,
            "overlap": self.overlap,
            "threshold": self.threshold,
            "abstention": abstention,
        }
        if self.rerank_blend is not None:
            router["rerank_blend"] = self.rerank_blend.to_dict()
        return self.index.save(target, extra={"router": router})

    @classmethod
    def load(
        cls,
        target: str | os.PathLike[str],
        *,
        reranker: Any = None,
        encoder: Any = None,
        backend: str = "auto",
        **overrides: Any,
    ) -> SkillRouter:
        """A router saved by :meth:`save` (``overrides`` replace saved settings)."""
        index, params = SkillIndex.load(target, encoder=encoder, backend=backend)
        saved = dict(params.get("router") or {})
        settings = {
            "method": saved.get("method", "hybrid"),
            "candidates": int(saved.get("candidates", 20)),
            "overlap": saved.get("overlap", "diversify"),
            # none saved (an index published by SkillIndex.save alone): none, as SkillRouter(index)
            # has none; until session 55 the shipped metatool model, which abstains on tasks of
            # other catalogues that need a tool
            "abstention": saved.get("abstention"),
            "rerank_blend": saved.get("rerank_blend"),
        }
        settings.update(overrides)
        router = cls(index, reranker, **settings)
        if "threshold" not in overrides:  # the saved one, kept as saved (with or without a model)
            _check_threshold(saved.get("threshold"))
            router.threshold = saved.get("threshold")
        return router


def _reranker_setting(value: Any) -> Any:
    """A ``reranker=`` value (``None``, a reranker, or a folder to load a cross-encoder from), ready
    for the skill router's stage 1; the constructor and :meth:`SkillRouter.with_options` share it."""
    if isinstance(value, (str, Path)):
        from ragroute.rerank.cross_encoder import CrossEncoderReranker

        value = CrossEncoderReranker(value)
    elif value is not None and not callable(getattr(value, "rerank", None)):
        # checked here, not at the first route: before, `reranker=...` (or any object without
        # `rerank`) was kept and every route failed with "'ellipsis' object has no attribute 'rerank'"
        raise InvalidArgumentError(
            "reranker must be None, a reranker (with rerank(query, hits, k)) or the folder of a "
            f"cross-encoder (e.g. 'rerank/default'), not {type(value).__name__}"
        )
    return _after_skill_stage1(value)


def _blend_setting(value: Any) -> Any:
    """A ``rerank_blend=`` value: ``None``, a :class:`~ragroute.skills.blend.RerankBlend` or its dict."""
    if value is None:
        return None
    from ragroute.skills.blend import RerankBlend

    if isinstance(value, RerankBlend):
        return value
    if isinstance(value, Mapping):
        return RerankBlend.from_dict(value)
    raise RagrouteError(f"rerank_blend must be a RerankBlend or its dict, got {type(value).__name__}")


def _after_skill_stage1(reranker: Any) -> Any:
    """A reranker that knows the first stage it follows (``for_stage1``) gets its calibration for
    the skill router's stage 1, where the fused score's lead is worth more than after documents'."""
    return reranker.for_stage1("skills") if hasattr(reranker, "for_stage1") else reranker


def _abstention_setting(
    value: Any, encoder: Any = None
) -> tuple[dict[str, AbstentionModel], GateAbstention | None]:
    """``(stage-1 models, gate)`` of an ``abstention=`` value (at most one of them is set)."""
    if isinstance(value, GateAbstention):
        return {}, value
    if value is not None and callable(getattr(value, "gate_many", None)):
        return {}, GateAbstention(value, getattr(value, "path", None))
    if isinstance(value, Mapping) and "gate" in value:
        extra = sorted(set(value) - {"gate", "name"})
        if extra:
            raise RagrouteError(f"an abstention gate mapping takes only 'gate'; got also {', '.join(extra)}")
        gate = value["gate"]
        if isinstance(gate, (str, Path)):
            return {}, GateAbstention.load(gate, encoder)
        if gate is None:
            raise RagrouteError("abstention gate has no path: save the gate and give its folder")
        return {}, GateAbstention(gate)
    return _abstention_models(value), None


def _abstention_models(value: Any) -> dict[str, AbstentionModel]:
    if value is None:
        return {}
    if isinstance(value, str):
        if value != "default":
            raise RagrouteError(f"abstention must be 'default', a model, a mapping or None; got {value!r}")
        value = DEFAULT_ABSTENTION
    if isinstance(value, AbstentionModel):
        key = "rerank" if "rerank_top" in value.features else "stage1"
        return {key: value}
    if isinstance(value, Mapping):
        return {
            str(key): m if isinstance(m, AbstentionModel) else AbstentionModel.from_dict(m)
            for key, m in value.items()
            if m
        }
    raise RagrouteError(
        f"abstention must be 'default', a model, a mapping or None; got {type(value).__name__}"
    )


def fit_abstention(
    router: SkillRouter,
    tasks: Sequence[str],
    applies: Sequence[bool],
    *,
    features: Sequence[str] | None = None,
    threshold: float = 0.5,
    name: str = "custom",
    info: Mapping[str, Any] | None = None,
) -> AbstentionModel:
    """Fit an abstention model on tasks labelled "a skill applies" (True) or not (False).

    Signals come from ``router`` as it runs (with its reranker: ``rerank_top`` is used when
    ``features`` is None and a reranker is set). Class-balanced logistic regression on
    standardised signals, so its probability is calibrated for a mix of as many tasks of each kind,
    not for the fitted mix; ``info`` records what it was fitted on.
    """
    from sklearn.linear_model import LogisticRegression

    tasks, applies = check_batch(tasks, "tasks"), check_batch(applies, "applies")
    if len(tasks) != len(applies):  # scikit-learn's ValueError until session 44
        raise InvalidArgumentError(f"{len(applies)} labels for {len(tasks)} tasks: give one per task")
    # label strings refused: until session 49 bool("no") made a task labelled "no" one a skill applies to
    labels = np.asarray([bool(a) for a in check_booleans(applies, "applies", "a skill applies")])
    if len(set(labels.tolist())) < 2:
        raise RagrouteError(
            "abstention needs tasks where a skill applies and tasks where none does (labels no_tool, "
            f"no or none); these {len(labels)} are all {'applies' if labels.all() else 'no skill'}"
        )
    if features is None:
        features = (
            RERANK_FEATURES if router.reranker is not None and router.reranker_body else STAGE1_FEATURES
        )
    if "rerank_top" in features and (router.reranker is None or not router.reranker_body):
        raise InvalidArgumentError(
            "the abstention feature rerank_top needs a router with a reranker that reads bodies"
        )
    check_abstention_features(features, "abstention features")  # a KeyError traceback until session 44
    plain = router.with_options(abstention=None)
    # a bm25 or dense stage 1 scores one side only: the signals of the other are computed as a
    # model's route computes them (a KeyError traceback until session 44)
    plain._all_signals = True
    routes = plain.route_many(list(tasks), 1)
    rows = []
    for route in routes:
        signals = route.trace[-1].detail["signals"]
        rows.append([float(signals[f]) for f in features])
    x = np.asarray(rows)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    fit = LogisticRegression(class_weight="balanced", C=1.0).fit((x - mean) / scale, labels)
    model = AbstentionModel(
        list(features),
        [float(c) for c in fit.coef_[0]],
        float(fit.intercept_[0]),
        [float(m) for m in mean],
        [float(s) for s in scale],
        threshold=threshold,
        encoder=str(getattr(router.index.encoder, "model_id", "")),
        info={"name": name, "tasks": len(labels), "applies": int(labels.sum()), **dict(info or {})},
    )
    return model


def balanced_accuracy(applies: Sequence[bool] | np.ndarray, abstained: Sequence[bool] | np.ndarray) -> float:
    """Mean of the recall of "applies" (not abstained) and of "no skill" (abstained)."""
    from ragroute.evaluation.metrics import balanced_accuracy as of_classes

    return of_classes(applies, ~np.asarray(abstained, dtype=bool))
