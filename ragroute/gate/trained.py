"""Gates over LLM-free signals: a trained (stacked logistic-regression) gate with calibration, and
a threshold gate over one signal value.

Fitting a :class:`TrainedGate`::

    gate = TrainedGate.fit(texts, retrieve, encoder)            # retrieve[i]: query i needs retrieval
    gate.gate_many([QueryContext.of("What is 2 + 2?")])[0]      # GateDecision(action="answer", ...)
    gate.with_operating_point(retrieval_rate=0.7)               # the cost knob
    gate.save("gates/mine"); TrainedGate.load("gates/mine", encoder)

How it is fitted: every signal gives its values for the training queries as
unseen queries would get them (leave-one-out or out-of-fold, see
:mod:`ragroute.gate.signals`); the columns are standardised; a logistic
regression with balanced class weights is fitted on a stratified part of the
data (identical texts on one side only) and Platt-calibrated on the held-out
rest (``validation_fraction``); then it is refitted on everything, keeping the
calibration. The *default threshold* is class-imbalance aware:

* ``"prior"`` (default): the calibrated probability at the balanced model's
  logit 0, i.e. the prior-corrected decision point (a query is sent to
  retrieval when its odds beat the training prior's);
* ``"balanced_accuracy"``: the threshold maximising balanced accuracy on the
  held-out part (the middle of the best interval).

Operating points (:meth:`TrainedGate.with_operating_point`): a threshold on the
calibrated probability; a target retrieval rate (quantiles of the training
queries' probabilities); or a budget, ``retrieve_cost`` = the cost of one
retrieval relative to the cost of answering wrongly without needed retrieval
(retrieve when ``p * 1 > retrieve_cost``).

scikit-learn fits; the gate keeps numpy arrays only and saves itself through the
artifact store (family ``gate``, kind ``trained``; each signal's learned state in
``signals/<kind>/``; no pickle). Loading with ``signals=`` that differ from the
saved ones fails with one line.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.context import QueryContext, contexts_of, query_vectors
from ragroute.display import shown_numbers, shown_pair
from ragroute.encode.identity import check_fitted_encoder, encoder_record
from ragroute.errors import (
    IndexFormatError,
    RagrouteError,
    check_batch,
    check_booleans,
    check_k,
    check_query,
    check_query_vectors,
    is_finite_number,
    unknown_keys_message,
)
from ragroute.evaluation.metrics import auroc, balanced_accuracy
from ragroute.gate.signals import (
    DEFAULT_SIGNALS,
    Examples,
    GateSignal,
    make_signal,
    multihop_cues,
    normalise,
    shared_example_similarities,
)
from ragroute.pipeline.stages import GateDecision
from ragroute.route.features import shared_cheap_features
from ragroute.route.folds import grouped_holdout, normalized_text
from ragroute.store.arrays import check_arrays, read_arrays

ARTIFACT_FAMILY = "gate"
FORMAT = "ragroute.gate"
FORMAT_VERSION = 1
WEIGHTS_FILE = "gate.npz"
THRESHOLD_RULES = ("prior", "balanced_accuracy")
QUANTILES = 201
TOP_VALUES = 4


class GateSignalMismatchError(RagrouteError):
    """A saved gate was fitted on other signals than the ones configured."""


@dataclass
class DepthPolicy:
    """How deep a retrieve decision goes: *deep* when the query holds at least ``deep_cues``
    multi-hop cues (:func:`~ragroute.gate.signals.multihop_cues`), else *shallow*.

    ``*_k``: hits to ask for (``None``: the caller's k); ``*_steps``: retrieval steps
    a multi-step caller should plan.
    """

    shallow_k: int | None = None
    deep_k: int | None = None
    shallow_steps: int = 1
    deep_steps: int = 2
    deep_cues: int = 2

    def of(self, text: str) -> tuple[str, int | None, int]:
        if multihop_cues(text) >= self.deep_cues:
            return "deep", self.deep_k, self.deep_steps
        return "shallow", self.shallow_k, self.shallow_steps


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=np.float64), -500, 500)))


def checked_max_steps(max_steps: Any) -> int | None:
    """A gate's step budget: ``None`` (none), or a whole number of at least 1 (as a ``gate:``
    setting must be); else one line. Until session 52 ``max_steps=0`` (or -1) made a gate that
    stopped every query, the first included, so a pipeline over it returned no hits at all."""
    return None if max_steps is None else check_k(max_steps, "max_steps")


def stop_reason(context: QueryContext, max_steps: int | None) -> str:
    """Why a step should not retrieve at all ("" when it may): the step budget, or a sub-query
    that repeats an earlier step's (``history`` items with a ``query`` or ``text``)."""
    if max_steps is not None and context.step >= max_steps:
        return f"step budget spent (step {context.step}, max_steps {max_steps})"
    seen = normalized_text(context.text)
    for i, item in enumerate(context.history):
        previous = item.get("query") or item.get("text") if isinstance(item, Mapping) else None
        if isinstance(previous, str) and normalized_text(previous) == seen:
            return f"sub-query repeats step {item.get('step', i)}"
    return ""


class SignalGate:
    """What gates over :class:`~ragroute.gate.signals.GateSignal` s share: computing the signal
    matrix for a batch of contexts (each query encoded at most once), stop rules, depth, decisions."""

    name = "gate"

    def __init__(
        self,
        signals: Sequence[GateSignal],
        encoder: Any = None,
        *,
        threshold: float = 0.5,
        depth: DepthPolicy | None = None,
        max_steps: int | None = None,
    ) -> None:
        self.signals = list(signals)
        self.encoder = encoder
        self.threshold = float(threshold)
        self.depth = depth or DepthPolicy()
        self.max_steps = checked_max_steps(max_steps)
        self.columns = [c for s in self.signals for c in s.columns()]

    def __repr__(self) -> str:
        names = [getattr(s, "name", type(s).__name__) for s in self.signals]
        return f"{type(self).__name__}(name={self.name!r}, signals={names!r}, threshold={self.threshold:.3g})"

    @property
    def uses_encoder(self) -> bool:
        """Whether any signal reads the query's embedding (the gate then needs its encoder)."""
        return any(s.uses_encoder for s in self.signals)

    def _vectors(self, contexts: Sequence[QueryContext]) -> np.ndarray | None:
        if not self.uses_encoder:
            return None
        if self.encoder is None:
            raise RagrouteError(f"gate {self.name} has signals that embed queries: give it an encoder")
        return normalise(query_vectors(contexts, self.encoder))

    def signal_matrix(
        self, contexts: Sequence[QueryContext], vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """The ``(len(contexts), len(columns))`` signal values (``vectors``: already computed ones)."""
        contexts = list(contexts)
        if vectors is None:
            vectors = self._vectors(contexts)
        blocks = [s.values(contexts, vectors) for s in self.signals]
        return np.hstack(blocks) if blocks else np.zeros((len(contexts), 0))

    def probabilities(self, queries: Sequence[str | QueryContext]) -> np.ndarray:
        """Calibrated probabilities that each query needs retrieval."""
        contexts = contexts_of(queries)
        return self._probabilities(self.signal_matrix(contexts))[0]

    def _probabilities(self, matrix: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _explain_row(self, row: np.ndarray, extra: Any, i: int) -> dict[str, Any]:
        return {}

    def _unread_failures(self, signals: Mapping[str, Any]) -> list[str]:
        """The LLM signals that failed for one query (an ``error`` in its explanation ``signals``)
        whose failure this gate cannot read: its values are then neutral defaults, not evidence."""
        return [
            s.kind
            for s in self.signals
            if getattr(s, "needs_llm", False)
            and "error" in (signals.get(s.kind) or {})
            and not self._reads_failure(s.kind)
        ]

    def _reads_failure(self, kind: str) -> bool:
        """Whether the gate was fitted on failures of signal ``kind`` (a single-signal threshold never is)."""
        return False

    def gate_many(self, contexts: Sequence[QueryContext | str]) -> list[GateDecision]:
        """One decision per query (a :class:`QueryContext`, or a text): ``retrieve`` (with depth),
        ``answer``, or ``stop``."""
        return self.decide_many(contexts)[0]

    def decide_many(self, contexts: Sequence[QueryContext | str]) -> tuple[list[GateDecision], np.ndarray]:
        """:meth:`gate_many`'s decisions and the unrounded probabilities they were taken on (a
        decision's ``probability`` is rounded for its trace), from one computation of the signals."""
        contexts = contexts_of(contexts)
        if not contexts:
            return [], np.zeros(0)
        vectors = self._vectors(contexts)
        # signals reading the cheap query features, or the similarities to one example bank,
        # compute them once per decision (values and explanations alike)
        with shared_cheap_features(), shared_example_similarities():
            return self._decisions(contexts, vectors)

    def _decisions(
        self, contexts: list[QueryContext], vectors: np.ndarray | None
    ) -> tuple[list[GateDecision], np.ndarray]:
        matrix = self.signal_matrix(contexts, vectors)
        probs, extra = self._probabilities(matrix)
        out = []
        for i, context in enumerate(contexts):
            p = float(probs[i])
            # both to the digits that keep their order: the threshold rounded alone to 6 could read
            # equal to (or past) a probability on its other side (until session 45)
            shown, shown_threshold = shown_numbers(p, self.threshold, 6)
            signals: dict[str, Any] = {
                "threshold": shown_threshold,
                "values": dict(zip(self.columns, np.round(matrix[i], 4).tolist())),
                **self._explain_row(matrix[i], extra, i),
            }
            for signal in self.signals:
                detail = signal.explain(context, None if vectors is None else vectors[i])
                if detail:
                    signals[signal.kind] = detail
            stop = stop_reason(context, self.max_steps)
            blind = self._unread_failures(signals)
            depth = steps = None
            if stop:
                action, reason = "stop", stop
            elif not math.isfinite(p):
                # signal values that are no number (an encoder's NaN vector, a plugin signal's NaN)
                # give no probability: retrieve, the safe side, as for a gate that fails (until
                # session 56 it answered directly, its reason "p_retrieve nan < threshold 0.5")
                level, depth, steps = self.depth.of(context.text)
                action = "retrieve"
                signals["depth_level"] = level
                unread = [c for c, v in zip(self.columns, matrix[i]) if not math.isfinite(float(v))]
                named = f" ({', '.join(unread)} not finite)" if unread else ""
                reason = f"no probability: the signal values are not numbers{named}: retrieving ({level})"
            elif blind and p < self.threshold:
                # a failed LLM signal's values are neutral defaults (llm_logprob's 0.0 reads as
                # certainty): a gate that never saw such a failure cannot decide on them, so it
                # retrieves, the safe side (until session 52 it answered from the model that failed)
                level, depth, steps = self.depth.of(context.text)
                action = "retrieve"
                signals["depth_level"] = level
                signals["p_retrieve_from_failed_values"] = shown
                shown = max(shown, shown_threshold)
                failed = ", ".join(blind)
                reason = f"{failed} failed, which this gate was not fitted to read: retrieving ({level})"
            elif p >= self.threshold:
                level, depth, steps = self.depth.of(context.text)
                action = "retrieve"
                p_text, t_text = shown_pair(p, self.threshold)  # digits that do not cross the threshold
                reason = f"p_retrieve {p_text} >= threshold {t_text} ({level})"
                signals["depth_level"] = level
            else:
                action = "answer"
                p_text, t_text = shown_pair(p, self.threshold)
                reason = f"p_retrieve {p_text} < threshold {t_text}"
            top = signals.get("top")
            if top and action != "stop" and math.isfinite(p):
                reason += ": " + ", ".join(f"{name} {signals['values'][name]}" for name in list(top)[:3])
            out.append(GateDecision(action, shown, signals, depth=depth, steps=steps, reason=reason))
        return out, np.asarray(probs, dtype=np.float64)


# --------------------------------------------------------------------------- the trained gate


@dataclass
class _Model:
    """Standardisation, logistic-regression weights and Platt calibration, all numpy."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    platt_a: float = 1.0
    platt_b: float = 0.0

    def logits(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (matrix - self.mean) / self.scale
        return z @ self.coef + self.intercept, z

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.platt_a * logits + self.platt_b)

    @property
    def direction(self) -> float:
        """-1.0 when the Platt slope is negative (the held-out part ranked the logits the wrong way
        round, and the probabilities order queries against them), else 1.0: ``direction * logits``
        orders queries as the gate's probabilities do, unrounded (what an AUROC of the gate reads)."""
        return -1.0 if self.platt_a < 0 else 1.0


def _fit_logreg(x: np.ndarray, y: np.ndarray, C: float, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=seed)
        model.fit(x, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
"""Regularisation strengths ``C="auto"`` chooses among (by cross-validation on the training data)."""


def choose_C(
    z: np.ndarray, y: np.ndarray, texts: Sequence[str], seed: int = 0
) -> tuple[float, dict[str, float]]:
    """The ``C`` of :data:`C_GRID` with the best grouped, stratified 5-fold AUROC on ``(z, y)``."""
    from ragroute.route.folds import grouped_stratified_folds

    folds = min(5, int(y.sum()), int((~y).sum()))
    if folds < 2:
        return 1.0, {}
    fold_of = grouped_stratified_folds(texts, ["r" if v else "a" for v in y], folds, seed)
    scores: dict[str, float] = {}
    for c in C_GRID:
        out = np.zeros(len(y))
        for f in range(folds):
            train, test = fold_of != f, fold_of == f
            if len(set(y[train])) < 2:
                continue
            coef, intercept = _fit_logreg(z[train], y[train], c, seed)
            out[test] = z[test] @ coef + intercept
        scores[str(c)] = round(auroc(y, out), 5)
    best = max(scores.values())
    chosen = min(float(c) for c, v in scores.items() if v >= best - 1e-3)
    return chosen, scores


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` with ``sigmoid(a * logit + b)`` calibrated on ``y`` (Platt's smoothed targets)."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return 1.0, 0.0
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    logits = np.asarray(logits, dtype=np.float64)

    def loss(a: float, b: float) -> float:
        z = a * logits + b
        return float(np.sum(np.logaddexp(0.0, z) - target * z))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(100):  # Newton's method with backtracking on the log-loss (2 parameters)
        p = sigmoid(a * logits + b)
        grad = np.array([np.sum((p - target) * logits), np.sum(p - target)])
        w = p * (1 - p) + 1e-12
        hess = np.array([[np.sum(w * logits * logits), np.sum(w * logits)], [np.sum(w * logits), np.sum(w)]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        size = 1.0
        while size > 1e-8 and loss(a - size * step[0], b - size * step[1]) > current:
            size /= 2
        a, b = a - size * step[0], b - size * step[1]
        new = loss(a, b)
        if current - new < 1e-10:
            break
        current = new
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
        return 1.0, 0.0
    return float(a), float(b)


def best_balanced_threshold(probs: np.ndarray, truth: np.ndarray) -> float:
    """The threshold maximising balanced accuracy (the middle of the best run of candidates)."""
    values = np.unique(probs)
    candidates = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2, [1.0]])
    scores = np.array([balanced_accuracy(truth, probs >= t) for t in candidates])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(candidates[best[len(best) // 2]])


MIN_EXAMPLES_PER_KIND = 2
"""Fewest examples of each kind (retrieve, answer directly) a gate is fitted on: out-of-fold signal
values need one of each kind outside every fold."""
FEW_EXAMPLES = 20
"""Below this many examples of a kind, ``ragroute gate fit`` warns that its held-out AUROC is noise."""


def check_operating_point(
    threshold: float | None = None, retrieval_rate: float | None = None, retrieve_cost: float | None = None
) -> None:
    """A one-line :class:`RagrouteError` unless at most one operating point is given and it is in
    range (what :meth:`TrainedGate.with_operating_point` and ``ragroute config check`` refuse)."""
    given = [v for v in (threshold, retrieval_rate, retrieve_cost) if v is not None]
    if len(given) > 1:
        raise RagrouteError("give one of threshold, retrieval_rate and retrieve_cost")
    for name, value, low, high in (
        ("threshold", threshold, 0.0, 1.0),
        ("retrieval_rate", retrieval_rate, 0.0, 1.0),
        ("retrieve_cost", retrieve_cost, 0.0, math.inf),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise RagrouteError(f"{name} must be a number, got {value!r}")
        if not low <= value <= high:
            span = f"[{low:g}, {high:g}]" if high < math.inf else f">= {low:g}"
            raise RagrouteError(f"{name} must be {'in ' if high < math.inf else ''}{span}, got {value}")


def check_flags(retrieve: Sequence[bool] | np.ndarray) -> list[Any]:
    """``retrieve`` as a list of booleans (or 0/1), else one line: ``bool("no")`` is True, so a
    label string would silently mean "retrieve"."""
    return check_booleans(
        retrieve,
        "retrieve",
        "the query needs retrieval",
        ": turn labels into them with ragroute.gate.needs_retrieval",
    )


def check_example_kinds(retrieve: Sequence[bool] | np.ndarray, where: str = "") -> None:
    """One line unless the examples hold both kinds: with one, a neighbour vote can only ever
    say that kind, and nothing can be fitted."""
    y = np.asarray(retrieve, dtype=bool)
    if y.all() or not y.any():
        kind = "need retrieval" if y.any() else "answer directly"
        prefix = f"{where}: " if where else ""
        raise RagrouteError(
            f"{prefix}a gate needs examples that need retrieval and examples that do not "
            f"(all {len(y)} {kind})"
        )


class TrainedGate(SignalGate):
    """A logistic regression over signal values, Platt-calibrated; see the module docstring."""

    name = "trained"

    def __init__(
        self,
        signals: Sequence[GateSignal],
        model: _Model,
        *,
        encoder: Any = None,
        encoder_info: dict[str, Any] | None = None,
        threshold: float = 0.5,
        default_threshold: float | None = None,
        threshold_rule: str = "prior",
        quantiles: np.ndarray | None = None,
        depth: DepthPolicy | None = None,
        max_steps: int | None = None,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(signals, encoder, threshold=threshold, depth=depth, max_steps=max_steps)
        self.model = model
        self.encoder_info = encoder_info
        self.default_threshold = float(threshold if default_threshold is None else default_threshold)
        self.threshold_rule = threshold_rule
        self.quantiles = np.asarray(quantiles if quantiles is not None else np.linspace(0, 1, QUANTILES))
        self.params = dict(params or {})
        self.metrics = dict(metrics or {})
        if name:
            self.name = name

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        retrieve: Sequence[bool] | np.ndarray,
        encoder: Any = None,
        *,
        signals: Sequence[str | Mapping[str, Any] | GateSignal] = DEFAULT_SIGNALS,
        columns: Sequence[str] | None = None,
        query_vectors: np.ndarray | None = None,
        sources: Sequence[Any] = (),
        C: float | str = "auto",
        validation_fraction: float = 0.25,
        default_threshold: str = "prior",
        depth: DepthPolicy | None = None,
        max_steps: int | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> TrainedGate:
        """Fit on ``texts`` and whether each needs retrieval; see the module docstring.

        ``signals``: kinds, ``{kind: ..., setting: ...}`` mappings, or built
        signals; ``columns``: use only these signal values (e.g. one value: a
        single-signal threshold gate); ``query_vectors``: the encoder's
        embeddings of ``texts`` (skips encoding). ``C``: the logistic
        regression's inverse regularisation, or ``"auto"``: the value of
        :data:`C_GRID` with the best 5-fold cross-validated AUROC on the training
        signal values (the smallest within 0.001 of the best).
        """
        texts = check_batch(texts, "texts")
        for text in texts:  # refused if empty; kept as given (the signals were measured on raw texts)
            check_query(text)
        flags = check_flags(retrieve)
        signals = check_batch(signals, "signals")
        y = np.asarray(flags, dtype=bool)
        if len(texts) != len(y):
            raise RagrouteError(f"{len(texts)} texts but {len(y)} labels")
        check_example_kinds(y)
        if min(int(y.sum()), int((~y).sum())) < MIN_EXAMPLES_PER_KIND:
            raise RagrouteError(
                f"a gate needs at least {MIN_EXAMPLES_PER_KIND} examples of each kind (its signals are "
                f"fitted out of fold): got {int(y.sum())} that need retrieval, {int((~y).sum())} that "
                "answer directly"
            )
        max_steps = checked_max_steps(max_steps)  # before the fitting, not after it
        if default_threshold not in THRESHOLD_RULES:
            raise RagrouteError(
                f"default_threshold must be one of {', '.join(THRESHOLD_RULES)}, not {default_threshold!r}"
            )
        if isinstance(validation_fraction, bool) or not (
            isinstance(validation_fraction, (int, float)) and 0 < validation_fraction < 1
        ):
            raise RagrouteError(
                f"validation_fraction must be a share between 0 and 1, got {validation_fraction!r}"
            )
        if C != "auto" and not (
            isinstance(C, (int, float)) and not isinstance(C, bool) and math.isfinite(C) and C > 0
        ):
            raise RagrouteError(f"C must be a positive number or 'auto', not {C!r}")
        built = [
            s if isinstance(s, GateSignal) else make_signal(s, encoder=encoder, sources=sources)
            for s in signals
        ]
        if not built:
            raise RagrouteError("a gate needs at least one signal")
        twice = sorted({s.kind for s in built if [t.kind for t in built].count(s.kind) > 1})
        if twice:  # the same values twice, and one saved state for both
            raise RagrouteError(
                f"{'signal' if len(twice) == 1 else 'signals'} {', '.join(twice)} given more than once: "
                "give each signal once"
            )
        if columns is not None and not check_batch(columns, "columns"):
            # an empty list fitted a regression over no value: scikit-learn's traceback (until session 49)
            raise RagrouteError("columns names no signal value: give at least one, or leave it out for all")
        vectors = None
        if any(s.uses_encoder for s in built):
            if encoder is None and query_vectors is None:
                raise RagrouteError("these gate signals embed queries: give an encoder")
            if query_vectors is None:
                # a bar on a terminal for a long pass, as every other encode (until session 55 `gate fit`
                # encoded its examples silently: show_progress=False)
                query_vectors = encoder.encode_queries(texts)
            else:  # a NaN row was scikit-learn's multi-line traceback (until session 49)
                query_vectors = check_query_vectors(query_vectors, len(texts), encoder)
            vectors = normalise(query_vectors)
        examples = Examples(texts, y, vectors)
        matrix = np.hstack([s.fit_values(examples) for s in built])
        all_columns = [c for s in built for c in s.columns()]
        if columns is not None:
            missing = [c for c in columns if c not in all_columns]
            if missing:
                raise RagrouteError(unknown_keys_message(missing, all_columns, "signal value"))
            keep = [all_columns.index(c) for c in columns]
            matrix = matrix[:, keep]
        else:
            keep = list(range(len(all_columns)))
        mean = matrix.mean(axis=0)
        scale = matrix.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = (matrix - mean) / scale
        labels = ["r" if v else "a" for v in y]
        cv_scores: dict[str, float] = {}
        if C == "auto":
            C, cv_scores = choose_C(z, y, texts, seed)
        C = float(C)
        train_idx, held_idx = grouped_holdout(texts, labels, validation_fraction, seed)
        platt, rule_threshold, held_metrics = (1.0, 0.0), None, {}
        if len(held_idx) and len(set(y[train_idx])) == 2 and len(set(y[held_idx])) == 2:
            coef, intercept = _fit_logreg(z[train_idx], y[train_idx], C, seed)
            held_logits = z[held_idx] @ coef + intercept
            platt = fit_platt(held_logits, y[held_idx])
            held_probs = sigmoid(platt[0] * held_logits + platt[1])
            if default_threshold == "balanced_accuracy":
                rule_threshold = best_balanced_threshold(held_probs, y[held_idx])
            held_metrics = {
                "n_validation": len(held_idx),
                "validation_auroc": round(auroc(y[held_idx], held_logits), 4),
                "validation_balanced_accuracy_prior": round(
                    balanced_accuracy(y[held_idx], held_logits >= 0), 4
                ),
            }
        coef, intercept = _fit_logreg(z, y, C, seed)
        model = _Model(mean, scale, coef, intercept, *platt)
        threshold = float(model.calibrated(np.zeros(1))[0]) if rule_threshold is None else rule_threshold
        train_probs = model.calibrated(model.logits(matrix)[0])
        quantiles = np.quantile(train_probs, np.linspace(0, 1, QUANTILES))
        gate_signals = _restrict(built, [all_columns[k] for k in keep])
        gate = cls(
            gate_signals,
            model,
            encoder=encoder,
            encoder_info=encoder_record(encoder) if any(s.uses_encoder for s in gate_signals) else None,
            threshold=threshold,
            default_threshold=threshold,
            threshold_rule=default_threshold,
            quantiles=quantiles,
            depth=depth,
            max_steps=max_steps,
            params={"C": C, "validation_fraction": validation_fraction, "seed": seed},
            metrics={
                "n_train": len(texts),
                "n_retrieve": int(y.sum()),
                **held_metrics,
                **({"cv_auroc_by_C": cv_scores} if cv_scores else {}),
            },
            name=name,
        )
        gate.columns = [all_columns[k] for k in keep]
        return gate

    # ------------------------------------------------------------------ deciding

    def _probabilities(self, matrix: np.ndarray) -> tuple[np.ndarray, Any]:
        matrix = self._select(matrix)
        logits, z = self.model.logits(matrix)
        return self.model.calibrated(logits), z

    def signal_matrix(
        self, contexts: Sequence[QueryContext], vectors: np.ndarray | None = None
    ) -> np.ndarray:
        return self._select(super().signal_matrix(contexts, vectors), full=True)

    def _select(self, matrix: np.ndarray, full: bool = False) -> np.ndarray:
        """Keep the gate's columns from a matrix of all its signals' values."""
        if matrix.shape[1] == len(self.columns) and not full:
            return matrix
        every = [c for s in self.signals for c in s.columns()]
        if every == self.columns:
            return matrix
        return matrix[:, [every.index(c) for c in self.columns]]

    def _reads_failure(self, kind: str) -> bool:
        # fitted on examples where the signal failed too: its ``ok`` column then carries a weight
        column = f"{kind}.ok"
        return column in self.columns and float(self.model.mean[self.columns.index(column)]) < 1.0

    def _explain_row(self, row: np.ndarray, z: Any, i: int) -> dict[str, Any]:
        contrib = z[i] * self.model.coef
        order = np.argsort(-np.abs(contrib), kind="stable")[:TOP_VALUES]
        return {"top": {self.columns[j]: round(float(contrib[j]), 4) for j in order}}

    # ------------------------------------------------------------------ operating points

    def threshold_for_rate(self, retrieval_rate: float) -> float:
        """The threshold sending about ``retrieval_rate`` of queries like the training ones to retrieval."""
        if not 0.0 <= retrieval_rate <= 1.0:
            raise RagrouteError(f"retrieval_rate must be in [0, 1], got {retrieval_rate}")
        if retrieval_rate >= 1.0:  # every query, an unseen one below the examples' lowest too
            return 0.0
        if retrieval_rate <= 0.0:
            return 1.0
        grid = np.linspace(0, 1, len(self.quantiles))
        return float(np.interp(1.0 - retrieval_rate, grid, self.quantiles))

    def with_operating_point(
        self,
        *,
        threshold: float | None = None,
        retrieval_rate: float | None = None,
        retrieve_cost: float | None = None,
    ) -> TrainedGate:
        """A copy deciding at another operating point (give exactly one; none: the default threshold).

        ``retrieve_cost``: the cost of one retrieval relative to a wrong direct
        answer (1): retrieving pays when ``p_retrieve > retrieve_cost``.
        """
        check_operating_point(threshold, retrieval_rate, retrieve_cost)
        gate = copy.copy(self)
        if threshold is not None:
            gate.threshold = float(threshold)
        elif retrieval_rate is not None:
            gate.threshold = self.threshold_for_rate(retrieval_rate)
        elif retrieve_cost is not None:
            gate.threshold = min(float(retrieve_cost), 1.0)
        else:
            gate.threshold = self.default_threshold
        return gate

    # ------------------------------------------------------------------ persistence

    def save(self, path_dir: str | os.PathLike[str]) -> Path:
        """Publish this gate as a new build of the artifact at ``path_dir`` (atomic, checksummed).
        A gate over LLM signals is refused: its LLM cannot be stored, so it could never load."""
        from ragroute.store import write_artifact

        over_llm = [s.kind for s in self.signals if getattr(s, "needs_llm", False)]
        if over_llm:
            raise RagrouteError(
                f"cannot save a gate over LLM signals ({', '.join(over_llm)}): the LLM is not stored, "
                "so it could not be loaded; use it in the process that fitted it, or fit on signals "
                "without an LLM (an LLM gate in a routing config takes its LLM from `llm:`)"
            )

        arrays: dict[str, Any] = {
            "mean": self.model.mean,
            "scale": self.model.scale,
            "coef": self.model.coef,
            "quantiles": self.quantiles,
        }
        with write_artifact(
            Path(path_dir),
            ARTIFACT_FAMILY,
            "trained",
            name=Path(path_dir).name,
            params=self._manifest(),
            encoder=self.encoder_info,
            error=IndexFormatError,
        ) as build:
            np.savez(build.path / WEIGHTS_FILE, **arrays)
            for signal in self.signals:
                signal.save(build.path / "signals" / signal.kind)
        return Path(path_dir)

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "signals": [s.describe() for s in self.signals],
            "columns": self.columns,
            "intercept": self.model.intercept,
            "platt": [self.model.platt_a, self.model.platt_b],
            "default_threshold": self.default_threshold,
            # the operating point it decides at: until session 52 a gate saved after
            # with_operating_point() loaded at its default threshold, deciding otherwise
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "depth": asdict(self.depth),
            "max_steps": self.max_steps,
            "params": self.params,
            "metrics": self.metrics,
        }

    @classmethod
    def load(
        cls,
        path_dir: str | os.PathLike[str],
        encoder: Any = None,
        *,
        signals: Sequence[str | Mapping[str, Any]] | None = None,
        sources: Sequence[Any] = (),
    ) -> TrainedGate:
        """Load a saved gate. ``signals`` (kinds or mappings), when given, must be the saved ones;
        ``encoder`` must match the one it was fitted with when a signal embeds queries."""
        from ragroute.store import read_artifact

        folder = Path(path_dir)
        return read_artifact(
            folder,
            lambda snap: cls._from_snapshot(folder, snap, encoder, signals, sources),
            family=ARTIFACT_FAMILY,
            error=IndexFormatError,
        )

    @classmethod
    def _from_snapshot(
        cls, folder: Path, snap: Any, encoder: Any, configured: Any, sources: Sequence[Any]
    ) -> TrainedGate:
        manifest = check_gate_settings(folder, snap.manifest.params)
        saved = [dict(s) for s in manifest["signals"]]
        check_configured_signals(folder, saved, configured)
        info = snap.manifest.encoder
        check_fitted_encoder(f"gate {folder}", info, encoder)
        built = [make_signal(s, encoder=encoder, sources=sources) for s in saved]
        for signal in built:
            signal.load(snap.path / "signals" / signal.kind, encoder=encoder)
        where = f"gate {folder}: {WEIGHTS_FILE}"
        arrays = read_arrays(snap.file(WEIGHTS_FILE), where)
        columns = [str(c) for c in manifest["columns"]]
        n = len(columns)
        check_arrays(arrays, where, {"coef": (n,), "mean": (n,), "scale": (n,), "quantiles": (None,)})
        arrays = {name: np.asarray(array, dtype=np.float64) for name, array in arrays.items()}
        model = _Model(
            arrays["mean"], arrays["scale"], arrays["coef"], float(manifest["intercept"]), *manifest["platt"]
        )
        gate = cls(
            built,
            model,
            encoder=encoder,
            encoder_info=info,
            threshold=float(manifest.get("threshold", manifest["default_threshold"])),
            default_threshold=float(manifest["default_threshold"]),
            threshold_rule=str(manifest.get("threshold_rule", "prior")),
            quantiles=arrays["quantiles"],
            depth=DepthPolicy(**manifest.get("depth", {})),
            max_steps=manifest.get("max_steps"),
            params=manifest.get("params"),
            metrics=manifest.get("metrics"),
            name=manifest.get("name"),
        )
        gate.columns = columns
        return gate


def check_gate_settings(folder: Path, manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """A saved gate's settings when this version reads them: a newer format says to upgrade,
    another one to refit (loading and ``ragroute config check`` both call it)."""
    version = manifest.get("version")
    if manifest.get("format") == FORMAT and isinstance(version, int) and version > FORMAT_VERSION:
        from ragroute.store.manifest import newer_format_message

        raise IndexFormatError(newer_format_message(str(folder), version, FORMAT_VERSION, "gate "))
    if manifest.get("format") != FORMAT or version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{folder} is not a {FORMAT} v{FORMAT_VERSION} gate (format {manifest.get('format')!r}, "
            f"version {version!r}); refit it with `ragroute gate fit`"
        )
    return manifest


UNKEPT_SIGNAL_SETTINGS = frozenset({"device"})
"""Signal settings a fitted gate does not keep because they do not change its values (``device``:
where a tuned probe's fine-tunes run): accepted in a trained gate's ``signals:`` as they are."""


def check_configured_signals(folder: Path, saved: Sequence[Mapping[str, Any]], configured: Any) -> None:
    """A trained gate's configured ``signals:`` (kinds or ``{kind: ..., setting: ...}``) against the
    ones it was fitted with (``saved``: their descriptions): the same kinds in the same order, each
    mapping's settings known to its kind (an unknown one is refused as on a threshold gate) and
    equal to the fitted ones (a loaded gate cannot apply another: refit it). Loading and ``ragroute
    config check`` both call it; ``None`` (no ``signals:``) means the saved ones."""
    if configured is None:
        return
    if not isinstance(configured, Sequence) or isinstance(configured, str):
        raise RagrouteError(f"gate {folder}: 'signals:' must be a list of signal kinds or mappings")
    wanted = [str(s.get("kind")) if isinstance(s, Mapping) else str(s) for s in configured]
    have = [str(s["kind"]) for s in saved]
    if wanted != have:
        if sorted(wanted) == sorted(have):  # the same signals: said so, not "other signals"
            raise GateSignalMismatchError(
                f"gate {folder} was fitted on signals {', '.join(have)}, in that order (its weights "
                f"are read in it), but they are configured as {', '.join(wanted)}: list them in that order"
            )
        raise GateSignalMismatchError(
            f"gate {folder} was fitted on signals {', '.join(have)}, but "
            f"{', '.join(wanted) or 'none'} are configured: refit it with "
            "`ragroute gate fit --signals ...` or configure those signals"
        )
    for spec, fitted in zip(configured, saved):
        if isinstance(spec, str):
            continue
        make_signal(spec)  # unknown settings and wrong types: the threshold gate's one-line refusals
        kind = fitted["kind"]
        for key, value in spec.items():
            if key == "kind" or key in UNKEPT_SIGNAL_SETTINGS:
                continue
            if key not in fitted:
                raise GateSignalMismatchError(
                    f"gate {folder}: signal {kind} was fitted without '{key}:' (a saved gate does not "
                    f"keep it), so '{key}: {value}' cannot apply: remove it, or refit the gate with it"
                )
            if value != fitted[key]:
                raise GateSignalMismatchError(
                    f"gate {folder}: signal {kind} was fitted with {key}: {fitted[key]}, but {key}: "
                    f"{value} is configured: refit it with `ragroute gate fit` or configure "
                    f"{key}: {fitted[key]}"
                )


def _restrict(signals: Sequence[GateSignal], columns: Sequence[str]) -> list[GateSignal]:
    """The signals that contribute at least one of ``columns``."""
    wanted = set(columns)
    return [s for s in signals if wanted & set(s.columns())]


def _encoder_info(encoder: Any) -> dict[str, Any] | None:
    if encoder is None:
        return None
    return {"model_id": str(getattr(encoder, "model_id", type(encoder).__name__)), "dim": int(encoder.dim)}


# --------------------------------------------------------------------------- threshold gate


class ThresholdGate(SignalGate):
    """Retrieve when one signal value is above (or below) a threshold you set (no fitting).

    ``signal`` is a :class:`GateSignal`, or its kind / ``{kind: ...}`` settings as in a ``gate:``
    config; ``value`` names one of its values (``"min_zipf"`` or ``"rarity.min_zipf"``);
    give ``above`` (retrieve when value >= above) or ``below`` (retrieve when value <=
    below). The probability is ``sigmoid(±(value - threshold) / scale)``: 0.5 at the
    threshold (uncalibrated; for a calibrated single-signal gate fit a
    :class:`TrainedGate` with ``columns=[value]``). Signals that learn from examples
    are fitted on ``examples`` (texts, needs-retrieval flags).
    """

    name = "threshold"

    def __init__(
        self,
        signal: GateSignal | str | Mapping[str, Any],
        value: str | None = None,
        *,
        above: float | None = None,
        below: float | None = None,
        scale: float = 1.0,
        encoder: Any = None,
        examples: tuple[Sequence[str], Sequence[bool]] | None = None,
        depth: DepthPolicy | None = None,
        max_steps: int | None = None,
    ) -> None:
        if (above is None) == (below is None):
            raise RagrouteError("a threshold gate needs exactly one of 'above' and 'below'")
        # a NaN cut or scale made every probability NaN ("p_retrieve nan < threshold 0.500"), as a
        # config's gate: refuses it
        for key, number in (("above", above), ("below", below), ("scale", scale)):
            if number is not None and not is_finite_number(number):
                raise RagrouteError(f"{key} must be a finite number, got {number!r}")
        if scale <= 0:
            raise RagrouteError(f"scale must be positive, got {scale}")
        if not isinstance(signal, GateSignal):  # ThresholdGate("rarity", "min_zipf", below=3.0)
            signal = make_signal(signal, encoder=encoder)
        super().__init__([signal], encoder, threshold=0.5, depth=depth, max_steps=max_steps)
        name = signal.primary if value is None else value  # '' named no value (the first until session 44)
        name = name.split(".", 1)[1] if name.startswith(f"{signal.kind}.") else name
        if name not in signal.names:
            raise RagrouteError(
                f"signal {signal.kind} has no value {name!r}: it has {', '.join(signal.names)}"
            )
        self.value = name
        self.cut = float(above if above is not None else below)  # type: ignore[arg-type]
        self.sign = 1.0 if above is not None else -1.0
        self.scale = float(scale)
        self._column = signal.names.index(name)
        if signal.needs_examples:
            if examples is None:
                raise RagrouteError(f"signal {signal.kind} learns from labelled examples: give 'examples'")
            texts, flags = examples
            # label strings are refused (bool("no") is True): until session 49 they read as "retrieve",
            # and the refusal that followed said every example needs retrieval
            flags = check_flags(flags)
            check_example_kinds(flags, f"signal {signal.kind}")
            vectors = None
            if signal.uses_encoder:
                if encoder is None:
                    raise RagrouteError(f"signal {signal.kind} embeds queries: give an encoder")
                vectors = encoder.encode_queries(list(texts), show_progress=False)
            signal.fit(Examples(list(texts), np.asarray(list(flags), dtype=bool), vectors))
        elif examples is not None:  # accepted and left unread until session 56
            raise RagrouteError(
                f"signal {signal.kind} learns nothing from labelled queries: leave 'examples' out"
            )

    def _probabilities(self, matrix: np.ndarray) -> tuple[np.ndarray, Any]:
        past = self.sign * (matrix[:, self._column] - self.cut)
        probs = sigmoid(past / self.scale)
        # a value a hair short of the cut rounds to 0.5 (retrieve) once divided by a large scale:
        # kept just below it, so the gate retrieves exactly when the value is at or past the cut
        return np.where((past < 0) & (probs >= 0.5), np.nextafter(0.5, 0.0), probs), None

    def _explain_row(self, row: np.ndarray, extra: Any, i: int) -> dict[str, Any]:
        column = self.columns[self._column]
        return {
            "top": {column: round(float(row[self._column]), 4)},
            "rule": f"{column} {'>=' if self.sign > 0 else '<='} {self.cut}",
        }
