"""``ragroute bench route-labels``: trained routers against baselines on a LABELS train/test pair.

Every router is fitted on ``--train`` only and scored on ``--data`` (a held-out file: the same
file twice, or a test file whose every query is in the training file, is refused; test queries
whose text is also in the training file are counted in a note on stderr) in the same
run, on the same query embeddings (computed once; encoding time is reported
separately and excluded from routing latency). Reported per router: accuracy,
macro-F1 (over the labels in the test file or predicted), recall of the
no-retrieval label (``none_recall``; ``--none-label``, default ``no``), and the
median time to route one query (``latency_ms_p50``, one call per query).

Baselines, re-measured here:

* ``majority``: always the most frequent training label;
* ``knn5_embedding``: majority vote of the 5 nearest training queries (cosine on
  embeddings; ties go to the larger summed similarity);
* ``logreg_embedding``: scikit-learn logistic regression on the embeddings alone
  (defaults: C=1, no class weights), the baseline of the issue, whose reference
  numbers (:data:`BASELINE_REFERENCE`) are printed next to the measured ones when the
  data is the UniversalRAG routing set (:data:`REFERENCE_DATA` in the ``--data`` path).

Ours (:class:`~ragroute.route.trained.TrainedRouter`, balanced class weights,
temperature-calibrated on a held-out 20% of train): ``trained_features``
(embedding + cheap features), ``trained_features_hashed`` (+ 4096 hashed word
1-2-grams and character 3-5-grams), ``trained_features_hashed_nonebias`` (the
same with a ``none_bias`` chosen by 5-fold cross-validation on train as the
smallest one whose recall of ``none`` reaches ``--none-recall-target``),
``trained_mlp_features_hashed`` (one hidden layer) and ``trained_no_encoder``
(cheap features + hashed n-grams only: no embedding model at all).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.display import counted
from ragroute.errors import RagrouteError, unknown_keys_message
from ragroute.evaluation.evaluators import measured_reference
from ragroute.route.features import QueryFeatures
from ragroute.route.trained import TrainedRouter, choose_none_bias, cross_val_logits

BASELINE_REFERENCE = {
    "router": "logistic regression on MiniLM embeddings",
    "accuracy": 0.874,
    "none_recall": 0.67,
    "source": "issue (reference numbers, not re-measured)",
}
#: The data set the reference numbers were measured on (a folder name in the --data path), and
#: how many test queries its dev file holds: a slice or a changed copy is other data
REFERENCE_DATA = "universalrag_routing"
REFERENCE_QUERIES = 2833
GOALS = {"accuracy": 0.90, "none_recall": 0.85}
HASHED_DIM = 4096
KNN_K = 5

Log = Callable[[str], None]
Predict = Callable[[Sequence[str], np.ndarray], list[str]]


# --------------------------------------------------------------------------- data


@dataclass
class LabelledQueries:
    """Texts and labels of a LABELS file; ``multi_label`` counts records whose first label was used."""

    texts: list[str]
    labels: list[str]
    multi_label: int = 0


def read_labels(path: Path) -> LabelledQueries:
    """Read a LABELS ``.jsonl`` file (``{"_id", "text", "label": str or list, "metadata"}``).

    A list of labels counts as its first label (``multi_label`` says how many).
    Raises :class:`CorpusFormatError` (one line) for a missing or malformed file
    (see :func:`ragroute.loaders.labels.load_labels`).
    """
    from ragroute.loaders.labels import load_labels

    records = load_labels(path)
    multi = sum(len(r.labels) > 1 for r in records)
    return LabelledQueries([r.text for r in records], [r.label for r in records], multi)


def _reference(data_path: Path, n_test: int, say: Log) -> dict[str, Any] | None:
    """:data:`BASELINE_REFERENCE` when the test data is the file it was measured on (in a
    :data:`REFERENCE_DATA` folder, :data:`REFERENCE_QUERIES` queries), else ``None``; a cut or
    changed copy (the folder's name alone matched, until session 40) is said through ``say``."""
    if REFERENCE_DATA not in data_path.parts:
        return None
    differs = f"{n_test} queries, measured on {REFERENCE_QUERIES}" if n_test != REFERENCE_QUERIES else ""
    return measured_reference(BASELINE_REFERENCE, f"the {REFERENCE_DATA} dev file", differs, say)


def refuse_same_file(train_path: Path | None, data_path: Path, alternative: str = "") -> None:
    """One line when ``train_path`` and ``data_path`` are one file: every model would be scored on
    the queries it was fitted on, an in-sample number printed next to held-out goals.
    ``alternative`` names the command's other protocol (``" or --folds N"``)."""
    if train_path is None:
        return
    train, data = Path(train_path), Path(data_path)
    same = train.exists() and data.exists() and train.samefile(data)
    if same or train.resolve() == data.resolve():
        raise RagrouteError(
            f"--train and --data are the same file ({data}): the scores would be in-sample; "
            f"score a held-out file{alternative}"
        )


def shared_texts(
    train_texts: Sequence[str], test_texts: Sequence[str], say: Log, alternative: str = ""
) -> int:
    """How many test queries have a text (case and spacing ignored) found in the training file too:
    a note through ``say`` when some do, one line (:class:`RagrouteError`) when all do (the same
    data under another name: an in-sample score). Returns the count."""
    from ragroute.route.folds import normalized_text

    seen = {normalized_text(t) for t in train_texts}
    shared = sum(normalized_text(t) in seen for t in test_texts)
    if test_texts and shared == len(test_texts):
        raise RagrouteError(
            f"every one of the {shared} test queries is also in the training file: the scores would be "
            f"in-sample; score a held-out file{alternative}"
        )
    if shared:
        say(
            f"note: {shared} of {len(test_texts)} test queries also appear in the training file "
            "(same text, case and spacing ignored): their scores are in-sample"
        )
    return shared


# --------------------------------------------------------------------------- metrics


def classification_metrics(truth: Sequence[str], pred: Sequence[str], none_label: str) -> dict[str, Any]:
    """Accuracy, macro-F1 (labels in ``truth`` or ``pred``), recall of ``none_label`` and per-label recall."""
    y, p = np.asarray(list(truth)), np.asarray(list(pred))
    f1s, recall = [], {}
    for label in sorted(set(y) | set(p)):
        tp = float(np.sum((y == label) & (p == label)))
        support, predicted = float(np.sum(y == label)), float(np.sum(p == label))
        f1s.append(2 * tp / (support + predicted) if support + predicted else 0.0)
        if support:
            recall[label] = round(tp / support, 4)
    return {
        "accuracy": round(float(np.mean(y == p)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "none_recall": recall.get(none_label),
        "recall": recall,
    }


def _p50_ms(predict: Predict, texts: Sequence[str], vectors: np.ndarray, n: int) -> float:
    """Median milliseconds to route one query (one call per query, first ``n`` queries, after a warm-up)."""
    n = min(n, len(texts))
    predict(texts[:1], vectors[:1])
    times = []
    for i in range(n):
        start = time.perf_counter()
        predict(texts[i : i + 1], vectors[i : i + 1])
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 4) if times else 0.0


# --------------------------------------------------------------------------- baselines


def majority_baseline(train_labels: Sequence[str]) -> Predict:
    """Always the most frequent training label (ties: alphabetical)."""
    counts = Counter(train_labels)
    label = min(counts, key=lambda name: (-counts[name], name))
    return lambda texts, _vectors: [label] * len(texts)


def knn_baseline(train_vectors: np.ndarray, train_labels: Sequence[str], k: int = KNN_K) -> Predict:
    """Majority vote of the ``k`` most cosine-similar training queries (ties: larger summed similarity)."""
    names = sorted(set(train_labels))
    codes = np.array([names.index(label) for label in train_labels])
    matrix = np.asarray(train_vectors, dtype=np.float32)

    def predict(_texts: Sequence[str], vectors: np.ndarray) -> list[str]:
        sims = np.asarray(vectors, dtype=np.float32) @ matrix.T
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        out = []
        for row, idx in enumerate(top):
            votes = np.bincount(codes[idx], minlength=len(names)).astype(np.float64)
            votes += np.bincount(codes[idx], weights=sims[row, idx], minlength=len(names)) * 1e-3
            out.append(names[int(votes.argmax())])
        return out

    return predict


def logreg_baseline(train_vectors: np.ndarray, train_labels: Sequence[str], seed: int = 0) -> Predict:
    """scikit-learn ``LogisticRegression`` with default settings on the embeddings alone."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=3000, random_state=seed).fit(train_vectors, list(train_labels))
    return lambda _texts, vectors: [str(label) for label in model.predict(vectors)]


def router_predict(router: TrainedRouter) -> Predict:
    """Route through :meth:`TrainedRouter.route_many` and name ``none`` back as the data's none label."""
    back = {"none": router.none_label} if router.none_label else {}

    def predict(texts: Sequence[str], vectors: np.ndarray) -> list[str]:
        decisions = router.route_many(texts, query_vectors=vectors if router.encoder_info else None)
        return [back.get(d.chosen[0], d.chosen[0]) for d in decisions]

    return predict


# --------------------------------------------------------------------------- ours

OURS: dict[str, dict[str, Any]] = {
    "trained_features": {"features": QueryFeatures()},
    "trained_features_hashed": {"features": QueryFeatures(hashed_dim=HASHED_DIM)},
    "trained_features_hashed_nonebias": {"features": QueryFeatures(hashed_dim=HASHED_DIM), "none_bias": "cv"},
    "trained_mlp_features_hashed": {
        "features": QueryFeatures(hashed_dim=HASHED_DIM),
        "model": "mlp",
        "hidden": 128,
        "C": 1000.0,
    },
    "trained_no_encoder": {"features": QueryFeatures(hashed_dim=HASHED_DIM), "use_encoder": False},
}
"""Our variants: keyword arguments of :meth:`TrainedRouter.fit` (``none_bias: "cv"`` = chosen on train)."""
BASELINES = ("majority", "knn5_embedding", "logreg_embedding")
ROUTERS = (*BASELINES, *OURS)


def _fit_ours(
    name: str,
    train: LabelledQueries,
    train_vectors: np.ndarray,
    encoder: Any,
    none_label: str | None,
    none_recall_target: float,
    seed: int,
) -> tuple[TrainedRouter, dict[str, Any]]:
    spec = dict(OURS[name])
    use_encoder = spec.pop("use_encoder", True)
    enc, vecs = (encoder, train_vectors) if use_encoder else (None, None)
    extra: dict[str, Any] = {}
    if spec.get("none_bias") == "cv":
        spec.pop("none_bias")
        route_labels, logits = cross_val_logits(
            train.texts, train.labels, enc, query_vectors=vecs, none_label=none_label, seed=seed, **spec
        )
        truth = ["none" if label == none_label else label for label in train.labels]
        bias, cv = choose_none_bias(route_labels, logits, truth, target_recall=none_recall_target)
        spec["none_bias"] = bias
        extra = {"none_bias": bias, "cv_at_bias": {k: round(v, 4) for k, v in cv.items()}}
    router = TrainedRouter.fit(
        train.texts, train.labels, enc, none_label=none_label, seed=seed, query_vectors=vecs, **spec
    )
    extra.update(temperature=round(router.temperature, 4), fit_metrics=router.metrics)
    return router, extra


def run_route_labels_bench(
    train_path: Path,
    data_path: Path,
    *,
    encoder: Any = None,
    routers: Sequence[str] = ROUTERS,
    none_label: str = "no",
    none_recall_target: float = GOALS["none_recall"],
    latency_queries: int = 500,
    seed: int = 0,
    log: Log | None = None,
) -> dict[str, Any]:
    """Fit every router in ``routers`` on ``train_path``, score it on ``data_path``; a JSON-ready dict.

    The two must be held apart: one file given as both is refused (:func:`refuse_same_file`), and so
    is a test file whose every query text is in the training file; when only some are, a note
    through ``log`` says how many (:func:`shared_texts`).

    ``encoder`` defaults to :func:`ragroute.encode.load_encoder` (all-MiniLM-L6-v2).
    """
    say = log or (lambda _msg: None)
    unknown = [name for name in routers if name not in ROUTERS]
    if unknown:
        raise RagrouteError(unknown_keys_message(unknown, ROUTERS, "router"))
    refuse_same_file(train_path, data_path)
    train, test = read_labels(train_path), read_labels(data_path)
    shared_texts(train.texts, test.texts, say)
    if encoder is None:
        from ragroute.encode import load_encoder

        encoder = load_encoder()
    problems = label_problems(train.labels, test.labels, none_label)
    if problems[0]:
        raise RagrouteError(problems[0])
    for warning in problems[1:]:
        say(f"warning: {warning}")
    none = none_label if none_label in set(train.labels) else None
    start = time.perf_counter()
    train_vectors = encoder.encode_queries(train.texts, show_progress=False)
    test_vectors = encoder.encode_queries(test.texts, show_progress=False)
    encode_ms = (time.perf_counter() - start) * 1000 / (len(train.texts) + len(test.texts))

    results: dict[str, dict[str, Any]] = {}
    for name in routers:
        say(f"{name}: fitting on {len(train.texts)} queries")
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        if name == "majority":
            predict = majority_baseline(train.labels)
        elif name == "knn5_embedding":
            predict = knn_baseline(train_vectors, train.labels)
        elif name == "logreg_embedding":
            predict = logreg_baseline(train_vectors, train.labels, seed)
        else:
            router, extra = _fit_ours(name, train, train_vectors, encoder, none, none_recall_target, seed)
            predict = router_predict(router)
        fit_s = time.perf_counter() - start
        metrics = classification_metrics(test.labels, predict(test.texts, test_vectors), none_label)
        latency = _p50_ms(predict, test.texts, test_vectors, latency_queries)
        results[name] = {**metrics, "latency_ms_p50": latency, "fit_s": round(fit_s, 2), **extra}
    return {
        "train": str(train_path),
        "data": str(data_path),
        "n_train": len(train.texts),
        "n_test": len(test.texts),
        "train_label_counts": dict(sorted(Counter(train.labels).items())),
        "test_label_counts": dict(sorted(Counter(test.labels).items())),
        "multi_label_records": {"train": train.multi_label, "test": test.multi_label},
        "none_label": none_label,
        "encoder": _describe(encoder),
        "encode_ms_per_query": round(encode_ms, 3),
        "routers": results,
        # the row the others are read against, when it ran (until session 55 named when not run)
        "baseline": "logreg_embedding" if "logreg_embedding" in results else None,
        # the numbers belong to the UniversalRAG routing dev file only
        "baseline_reference": _reference(Path(data_path), len(test.texts), say),
        "goals": GOALS,
    }


def label_problems(train: Sequence[str], test: Sequence[str], none_label: str) -> list[str]:
    """What is wrong with the two files' labels: first a refusal ("" when none: every router needs
    two training labels to tell apart), then warnings (test labels no router can predict, a none
    label neither file holds: a typo would silently turn the none route off)."""
    seen = set(train)
    refusal = (
        ""
        if len(seen) >= 2
        else f"the training file holds {counted(len(seen), 'distinct label')} {sorted(seen)}: "
        "a router needs two"
    )
    warnings = []
    unseen = Counter(label for label in test if label not in seen)
    if unseen:
        listed = ", ".join(f"{label!r} ({n})" for label, n in sorted(unseen.items()))
        warnings.append(
            f"{sum(unseen.values())} test queries carry labels the training file lacks "
            f"(scored as errors): {listed}"
        )
    if none_label not in seen and none_label not in set(test):
        warnings.append(f"--none-label {none_label!r} is in neither file: no router learns a none route")
    return [refusal, *warnings]


def _describe(encoder: Any) -> dict[str, Any]:
    try:
        return dict(encoder.describe())
    except Exception:  # noqa: BLE001 - a description is informative only
        return {"model_id": getattr(encoder, "model_id", "?"), "dim": getattr(encoder, "dim", None)}


# --------------------------------------------------------------------------- output


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(result: dict[str, Any]) -> str:
    """Routers as rows: accuracy, macro-F1, none recall, p50 latency, fit time."""
    ref = result["baseline_reference"]
    names = list(result["routers"])
    width = max([len(n) for n in names] + [len("reference (issue)")]) + 2
    header = f"{'router':<{width}}{'accuracy':>10}{'macro-F1':>10}{'none rec':>10}{'p50 ms':>10}{'fit s':>9}"
    lines = [
        f"route-labels: train {result['n_train']} queries ({result['train']}), "
        f"test {result['n_test']} ({result['data']}), none label {result['none_label']!r}",
        header,
        "-" * len(header),
    ]
    if ref:  # only on the data the numbers were measured on
        accuracy, none_recall = _pct(ref["accuracy"]), _pct(ref["none_recall"])
        lines.append(f"{'reference (issue)':<{width}}{accuracy:>10}{'-':>10}{none_recall:>10}")
    for name, r in result["routers"].items():
        lines.append(
            f"{name:<{width}}{_pct(r['accuracy']):>10}{_pct(r['macro_f1']):>10}"
            f"{_pct(r['none_recall']):>10}{r['latency_ms_p50']:>10.3f}{r['fit_s']:>9.1f}"
        )
    lines.append(
        f"goals: accuracy >= {_pct(result['goals']['accuracy'])}, none recall >= "
        f"{_pct(result['goals']['none_recall'])}; latency excludes encoding "
        f"({result['encode_ms_per_query']:.2f} ms/query batched, {result['encoder'].get('model_id')})"
    )
    for name, r in result["routers"].items():
        if "none_bias" in r:
            lines.append(
                f"{name}: none_bias {r['none_bias']} chosen by 5-fold CV on train ({r['cv_at_bias']})"
            )
    for split, count in result["multi_label_records"].items():
        if count:
            lines.append(f"note: {count} {split} records had several labels; the first one was used")
    return "\n".join(lines)
