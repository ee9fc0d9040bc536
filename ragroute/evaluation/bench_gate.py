"""``ragroute bench gate``: retrieval gates against baselines on LABELS files.

The label says whether a query needs retrieval: ``no``, ``none`` and ``no_tool``
mean "answer directly", any other label means "retrieve". Two protocols:

* ``--train`` and ``--data``: every gate is fitted on the training file and scored on the test file
  (one file given as both is refused, and so is a test file whose every query text is in the
  training file; a note on stderr counts the test queries whose text is in it too);
* ``--folds N`` (``--data`` only): N-fold cross-validation, stratified, identical texts in one fold
  (:func:`ragroute.route.folds.grouped_stratified_folds`, seed ``--seed``); each fold is scored by
  gates fitted on the other folds and the out-of-fold scores are pooled. Nothing is ever scored by
  a gate that saw it.

Per gate: AUROC (of the gate's logit), accuracy and balanced accuracy at its default operating
point (class-imbalance aware: see :mod:`ragroute.gate.trained`), the retrieval rate there, the
curve of retrieval rate vs recall of needed retrieval at 5 operating points (target retrieval rates
:data:`CURVE_RATES` turned into thresholds from the *training* scores, the cost knob a user turns),
and the median decision time for one query (encoding excluded: vectors are precomputed).

Gates: single-signal threshold gates (``threshold_<signal>``: one signal value, a one-feature
calibrated logistic regression), ``trained_signals`` (all LLM-free signals but the text probe),
``trained_all`` (the default signals, with the text probe); only when ``gates`` names them
(:data:`OPT_IN_GATES`, fitting fine-tunes a model per fold): ``threshold_tuned_probe`` (the
``tuned_probe`` signal alone: MiniLM fine-tuned here as a retrieve/answer classifier) and
``trained_all_tuned`` (the default signals plus ``tuned_probe``), and both again with
``final: soup`` (``*_tuned_soup``: the fold models averaged decide) and with ``members: 3``
(``*_tuned_ensemble``: three fine-tunes per fit, their logits averaged). A signal with an encoder of its
own has its test queries encoded before the timing, like the gate encoder's. Baselines in the same run:
``logreg_embedding`` (scikit-learn logistic regression on the MiniLM embeddings, defaults,
threshold 0.5: the issue's baseline) and ``knn5_embedding`` (majority vote of the 5 nearest
training queries, all of them where a fit split holds fewer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError, unknown_keys_message
from ragroute.evaluation.bench_route_labels import read_labels, refuse_same_file, shared_texts
from ragroute.evaluation.evaluators import measured_reference
from ragroute.evaluation.metrics import auroc, auroc_interval, balanced_accuracy
from ragroute.gate.selection import CANDIDATE_GATES, select_gate
from ragroute.gate.signals import (
    DEFAULT_SIGNALS,
    fold_ids,
    forget_queries,
    needs_retrieval,
    normalise,
    shared_tuned_probe_fits,
)
from ragroute.gate.trained import TrainedGate

CURVE_RATES = (0.5, 0.7, 0.8, 0.9, 0.95)
TRAIN_OR_FOLDS = "give one of --train TRAIN.jsonl or --folds N (cross-validation on --data), not both"
"""The error when neither or both of the training sources of the benchmark are given."""
GATES: dict[str, dict[str, Any]] = {
    **CANDIDATE_GATES,
    "threshold_tuned_probe": {"signals": ["tuned_probe"], "columns": ["tuned_probe.logit"]},
    "trained_all_tuned": {"signals": [*DEFAULT_SIGNALS, "tuned_probe"]},
    "threshold_tuned_soup": {
        "signals": [{"kind": "tuned_probe", "final": "soup"}],
        "columns": ["tuned_probe.logit"],
    },
    "trained_all_tuned_soup": {"signals": [*DEFAULT_SIGNALS, {"kind": "tuned_probe", "final": "soup"}]},
    "threshold_tuned_ensemble": {
        "signals": [{"kind": "tuned_probe", "members": 3}],
        "columns": ["tuned_probe.logit"],
    },
    "trained_all_tuned_ensemble": {"signals": [*DEFAULT_SIGNALS, {"kind": "tuned_probe", "members": 3}]},
}
"""Our gates: keyword arguments of :meth:`TrainedGate.fit` (the candidates a gate selection chooses
among, then the opt-in ones). ``selected`` (:data:`SELECTED`) is the product's
:func:`~ragroute.gate.selection.select_gate` over the candidates, on each fit split."""
SELECTED = "selected"
OPT_IN_GATES = (
    "threshold_tuned_probe",
    "trained_all_tuned",
    "threshold_tuned_soup",
    "trained_all_tuned_soup",
    "threshold_tuned_ensemble",
    "trained_all_tuned_ensemble",
)
"""Gates run only when ``--gates`` names them: fitting fine-tunes a model (minutes, not seconds)."""
BASELINES = ("logreg_embedding", "knn5_embedding")
DEFAULT_GATE = "trained_all"
"""The gate ``TrainedGate.fit`` (and ``ragroute gate fit``) gives without ``signals``: the default signals."""
ALL_GATES = (*BASELINES, *(g for g in GATES if g not in OPT_IN_GATES), SELECTED)
KNOWN_GATES = (*BASELINES, *GATES, SELECTED)
BASELINE_REFERENCE = {
    "universalrag_routing": {"logreg_embedding": (0.990, 0.595), "knn5_embedding": (0.872, 0.664)},
    "metatool_need_tool": {"logreg_embedding": (0.955, 0.869), "knn5_embedding": (0.919, 0.855)},
}
"""The issue's numbers (AUROC, balanced accuracy), printed next to the measured ones."""
REFERENCE_QUERIES = {"universalrag_routing": 2833, "metatool_need_tool": 520}
"""How many test queries each task's reference numbers were measured on (its dev file): a slice or
a changed copy is other data, and the reference is left out (:func:`_reference`)."""
GOALS = {
    "universalrag_routing": {"auroc": 0.995, "balanced_accuracy": 0.95},
    "metatool_need_tool": {"auroc": 0.97, "balanced_accuracy": 0.92},
}

Log = Callable[[str], None]

FOLDS_INSTEAD = ", or cross-validate on it alone with --folds N"


class _Scored:
    """One fitted gate's scores on test queries: logits, decisions, and training-score quantiles."""

    def __init__(
        self,
        scores: np.ndarray,
        decide: np.ndarray,
        thresholds: dict[float, float],
        ms: float,
        chosen: str | None = None,
    ):
        self.scores, self.decide, self.thresholds, self.ms = scores, decide, thresholds, ms
        self.chosen = chosen  # the candidate a gate selection chose


def _contexts(texts: Sequence[str], vectors: np.ndarray, encoder: Any) -> list[QueryContext]:
    contexts = [QueryContext(t) for t in texts]
    for context, vector in zip(contexts, vectors):
        context.set_vector(encoder, vector)
    return contexts


def _p50_ms(decide: Callable[[list[QueryContext]], Any], contexts: list[QueryContext], n: int) -> float:
    n = min(n, len(contexts))
    if not n:
        return 0.0
    decide(contexts[:1])
    forget_queries()  # each timed query new to the gate's caches, as in use (the scoring pass read them)
    times = []
    for context in contexts[:n]:
        start = time.perf_counter()
        decide([context])
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 4)


def _score_gate(
    name: str,
    train: tuple[list[str], np.ndarray, np.ndarray],
    test: tuple[list[str], np.ndarray],
    encoder: Any,
    latency_queries: int,
    seed: int,
) -> _Scored:
    texts, y, vectors = train
    test_texts, test_vectors = test
    if name == "logreg_embedding":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=3000, random_state=seed).fit(vectors, y)
        train_scores = model.decision_function(vectors)
        scores = model.decision_function(test_vectors)
        thresholds = {r: float(np.quantile(train_scores, 1 - r)) for r in CURVE_RATES}
        ms = _p50_ms(
            lambda c: model.decision_function(c[0].vector(encoder)[None]),
            _contexts(test_texts, test_vectors, encoder),
            latency_queries,
        )
        return _Scored(scores, scores >= 0.0, thresholds, ms)
    if name == "knn5_embedding":
        bank = normalise(vectors)
        # the 5 nearest, or every training query when there are fewer: until session 54 a fit split of
        # under 5 queries (a small --train file, a fold of a small --data) raised numpy's ValueError
        # "kth(=4) out of bounds"
        near = min(5, len(bank))

        def vote(q: np.ndarray) -> np.ndarray:
            sims = normalise(q) @ bank.T
            top = np.argpartition(-sims, near - 1, axis=1)[:, :near]
            return y[top].mean(axis=1) + 1e-3 * np.take_along_axis(sims, top, axis=1).mean(axis=1)

        train_scores = vote(vectors)
        scores = vote(test_vectors)
        thresholds = {r: float(np.quantile(train_scores, 1 - r)) for r in CURVE_RATES}
        ms = _p50_ms(
            lambda c: vote(c[0].vector(encoder)[None]),
            _contexts(test_texts, test_vectors, encoder),
            latency_queries,
        )
        return _Scored(scores, scores >= 0.5, thresholds, ms)
    if name == SELECTED:  # the choice among the candidates made on this fit split alone
        gate = select_gate(texts, y, encoder, query_vectors=vectors, seed=seed)
    else:
        gate = TrainedGate.fit(texts, y, encoder, query_vectors=vectors, seed=seed, name=name, **GATES[name])
    contexts = _contexts(test_texts, test_vectors, encoder)
    for own in (e for signal in gate.signals for e in signal.encoders()):  # encoded here, not timed
        for context, vector in zip(contexts, own.encode_queries(test_texts, show_progress=False)):
            context.set_vector(own, vector)
    # the decisions are the gate's own (what a pipeline's gate stage acts on); the scores its
    # logits, unrounded, turned the way its probabilities order the queries: until session 49 the
    # raw logits, which a Platt slope fitted negative (a signal ranking the wrong way on the
    # held-out part) reverses against the probabilities the gate decides by, so AUROC read 1 - the
    # gate's and every curve point took the other tail. Kept raw otherwise: pooled over folds they
    # rank as before
    decide = np.array([d.action == "retrieve" for d in gate.gate_many(contexts)])
    sign = gate.model.direction
    logits = sign * gate.model.logits(gate.signal_matrix(contexts))[0]
    thresholds = {r: gate.threshold_for_rate(r) for r in CURVE_RATES}
    ms = _p50_ms(gate.gate_many, contexts, latency_queries)
    # curve thresholds are on probabilities: map them to these scores so one array serves all
    inverse = {r: sign * _prob_to_logit(gate, t) for r, t in thresholds.items()}
    return _Scored(logits, decide, inverse, ms, gate.metrics.get("selection", {}).get("chosen"))


def _prob_to_logit(gate: TrainedGate, p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return (np.log(p / (1 - p)) - gate.model.platt_b) / gate.model.platt_a


def _metrics(y: np.ndarray, scores: np.ndarray, decide: np.ndarray, curve: list[dict[str, float]]) -> dict:
    return {
        "auroc": round(auroc(y, scores), 4),
        "auroc_ci95": auroc_interval(y, scores),
        "accuracy": round(float(np.mean(decide == y)), 4),
        "balanced_accuracy": round(balanced_accuracy(y, decide), 4),
        "retrieval_rate": round(float(np.mean(decide)), 4),
        "recall_needed": round(float(np.mean(decide[y])), 4) if y.any() else None,
        "recall_answer": round(float(np.mean(~decide[~y])), 4) if (~y).any() else None,
        "curve": curve,
    }


def _curve(y: np.ndarray, retrieve_at: dict[float, np.ndarray]) -> list[dict[str, float]]:
    return [
        {
            "target_rate": rate,
            "retrieval_rate": round(float(np.mean(pred)), 4),
            "recall_needed": round(float(np.mean(pred[y])), 4) if y.any() else 0.0,
        }
        for rate, pred in retrieve_at.items()
    ]


def _task_name(path: Path) -> str:
    for task in BASELINE_REFERENCE:
        if task in str(path):
            return task
    return ""


def _reference(task: str, n_test: int, say: Log) -> dict[str, Any]:
    """The issue's numbers for ``task`` when the test data is the one they were measured on (its
    :data:`REFERENCE_QUERIES`), else ``{}``, and why through ``say`` (the folder's name alone matched)."""
    if task not in BASELINE_REFERENCE:
        return {}
    measured = REFERENCE_QUERIES[task]
    differs = f"{n_test} queries, measured on {measured}" if n_test != measured else ""
    return measured_reference(BASELINE_REFERENCE[task], f"the {task} dev file", differs, say) or {}


def run_gate_bench(
    data_path: Path,
    *,
    train_path: Path | None = None,
    folds: int | None = None,
    encoder: Any = None,
    gates: Sequence[str] = ALL_GATES,
    latency_queries: int = 200,
    seed: int = 0,
    log: Log | None = None,
) -> dict[str, Any]:
    """Fit and score every gate in ``gates``; a JSON-ready dict (see the module docstring)."""
    say = log or (lambda _msg: None)
    unknown = [g for g in gates if g not in KNOWN_GATES]
    if unknown:
        raise RagrouteError(unknown_keys_message(unknown, KNOWN_GATES, "gate"))
    if (train_path is None) == (folds is None):
        raise RagrouteError(TRAIN_OR_FOLDS)
    refuse_same_file(train_path, data_path, FOLDS_INSTEAD)
    test = read_labels(data_path)
    test_y = np.array([needs_retrieval(label) for label in test.labels])
    train = read_labels(train_path) if train_path is not None else None
    if train is not None:
        shared_texts(train.texts, test.texts, say, FOLDS_INSTEAD)
    if test_y.all() or not test_y.any():
        raise RagrouteError(f"{data_path} needs queries of both kinds (retrieve and answer directly)")
    if encoder is None:
        from ragroute.encode import load_encoder

        encoder = load_encoder()
    start = time.perf_counter()
    test_vectors = np.asarray(encoder.encode_queries(test.texts, show_progress=False), dtype=np.float32)
    train_vectors = None
    if train is not None:
        train_vectors = np.asarray(encoder.encode_queries(train.texts, show_progress=False), dtype=np.float32)
    n_encoded = len(test.texts) + (len(train.texts) if train is not None else 0)
    encode_ms = (time.perf_counter() - start) * 1000 / n_encoded

    if train is not None:
        train_y = np.array([needs_retrieval(label) for label in train.labels])
        if train_y.all() or not train_y.any():
            raise RagrouteError(
                "the training data needs queries of both kinds (retrieve and answer directly)"
            )
        splits = [(np.arange(len(train.texts)), np.arange(len(test.texts)))]
        assert train_vectors is not None  # encoded above, with the training file
        pool_texts, pool_y, pool_vectors = train.texts, train_y, train_vectors
    else:
        assert folds is not None  # one of the two was given (checked above)
        fold_of = fold_ids(test.texts, test_y, int(folds), seed)  # type: ignore[arg-type]
        splits = [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(int(folds))]
        pool_texts, pool_y, pool_vectors = test.texts, test_y, test_vectors

    results: dict[str, Any] = {}
    with shared_tuned_probe_fits():  # gates sharing a tuned probe fine-tune it once per fold
        for name in gates:
            start = time.perf_counter()
            scores = np.zeros(len(test.texts))
            decide = np.zeros(len(test.texts), dtype=bool)
            retrieve_at = {r: np.zeros(len(test.texts), dtype=bool) for r in CURVE_RATES}
            times, chosen = [], []
            for k, (fit_idx, test_idx) in enumerate(splits):
                say(
                    f"{name}: fitting on {len(fit_idx)} queries"
                    + (f" (fold {k + 1}/{len(splits)})" if folds else "")
                )
                scored = _score_gate(
                    name,
                    ([pool_texts[i] for i in fit_idx], pool_y[fit_idx], pool_vectors[fit_idx]),
                    ([test.texts[i] for i in test_idx], test_vectors[test_idx]),
                    encoder,
                    latency_queries,
                    seed,
                )
                scores[test_idx] = scored.scores
                decide[test_idx] = scored.decide
                for rate, cut in scored.thresholds.items():
                    retrieve_at[rate][test_idx] = scored.scores >= cut
                times.append(scored.ms)
                if scored.chosen:
                    chosen.append(scored.chosen)
            results[name] = {
                **_metrics(test_y, scores, decide, _curve(test_y, retrieve_at)),
                "latency_ms_p50": round(float(np.median(times)), 4),
                "fit_s": round(time.perf_counter() - start, 1),
                **({"chosen": chosen} if chosen else {}),  # per fit split
            }
    task = _task_name(Path(data_path))
    ours = [g for g in gates if g not in BASELINES]
    best = max(ours, key=lambda g: results[g]["auroc"]) if ours else None
    return {
        "task": task,
        "protocol": f"{folds}-fold cross-validation on data" if folds else "fit on train, score data",
        "train": None if train_path is None else str(train_path),
        "data": str(data_path),
        "n_train": len(train.texts) if train is not None else len(test.texts),
        "n_test": len(test.texts),
        "test_retrieve_share": round(float(np.mean(test_y)), 4),
        "encoder": {
            "model_id": getattr(encoder, "model_id", "?"),
            "backend": getattr(encoder, "backend", ""),
        },
        "encode_ms_per_query": round(encode_ms, 3),
        "gates": results,
        "best_gate": best,
        "baseline_reference": _reference(task, len(test.texts), say),
        "goals": GOALS.get(task, {}),
        "seed": seed,
    }


def format_report(result: dict[str, Any]) -> str:
    """Gates as rows (AUROC, accuracy, balanced accuracy, retrieval rate, p50 ms), then the curves."""
    names = list(result["gates"])
    width = max([len(n) for n in names] + [24]) + 2
    header = (
        f"{'gate':<{width}}{'AUROC':>8}{'acc':>8}{'bal acc':>9}{'retr rate':>10}{'p50 ms':>9}{'fit s':>8}"
    )
    lines = [
        f"gate: {result['protocol']}; train {result['train'] or '-'}, data {result['data']} "
        f"({result['n_test']} queries, {result['test_retrieve_share']:.1%} need retrieval)",
        header,
        "-" * len(header),
    ]
    for name, ref in result["baseline_reference"].items():
        lines.append(f"{name + ' (issue)':<{width}}{ref[0]:>8.3f}{'-':>8}{ref[1]:>9.3f}")
    for name, r in result["gates"].items():
        lines.append(
            f"{name:<{width}}{r['auroc']:>8.4f}{r['accuracy']:>8.4f}{r['balanced_accuracy']:>9.4f}"
            f"{r['retrieval_rate']:>10.3f}{r['latency_ms_p50']:>9.3f}{r['fit_s']:>8.1f}"
        )
    lines.append(
        "retrieval rate / recall of needed retrieval at target rates " + ", ".join(map(str, CURVE_RATES))
    )
    intervals = [
        f"{name} [{r['auroc_ci95'][0]:.4f}, {r['auroc_ci95'][1]:.4f}]"
        for name, r in result["gates"].items()
        if r.get("auroc_ci95")
    ]
    if intervals:
        lines.append("AUROC 95% bootstrap intervals (each class resampled apart): " + ", ".join(intervals))
    for name, r in result["gates"].items():
        if r.get("chosen"):
            lines.append(f"{name}: chose {', '.join(r['chosen'])} (per fit split)")
    for name, r in result["gates"].items():
        points = "  ".join(f"{p['retrieval_rate']:.3f}/{p['recall_needed']:.3f}" for p in r["curve"])
        lines.append(f"{name:<{width}}{points}")
    goals = result["goals"]
    if goals and result["best_gate"]:
        # the best gate is the maximum over the gates' AUROC on the very queries it is scored on, so
        # its verdict leans high by the choice itself; the gate a user gets without choosing
        # (`gate fit`'s default signals) is judged on its own line when it ran (session 43: the best
        # line alone read "met" where the default gate missed the goals)
        ours = [name for name in result["gates"] if name not in BASELINES]
        judged = [(result["best_gate"], f"best of {len(ours)} gates by AUROC on these queries")]
        if DEFAULT_GATE in result["gates"] and result["best_gate"] != DEFAULT_GATE:
            judged.append((DEFAULT_GATE, "the default gate, chosen before scoring"))
        if SELECTED in result["gates"] and result["best_gate"] != SELECTED:
            # chosen among the candidates by cross-validation inside each fit split: a choice made
            # without the scored queries (session 44)
            judged.append((SELECTED, "the gate selected on each fit split alone"))
        for name, what in judged:
            row = result["gates"][name]
            met = row["auroc"] >= goals["auroc"] and row["balanced_accuracy"] >= goals["balanced_accuracy"]
            interval = row.get("auroc_ci95")
            shown = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
            lines.append(
                f"{what}, {name}: AUROC {row['auroc']:.4f}{shown} (goal {goals['auroc']}), "
                f"balanced accuracy {row['balanced_accuracy']:.4f} (goal {goals['balanced_accuracy']}): "
                f"{'met' if met else 'not met'}"
            )
    lines.append(f"latency excludes encoding ({result['encode_ms_per_query']:.2f} ms/query batched)")
    return "\n".join(lines)
