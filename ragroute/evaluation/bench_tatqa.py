"""``ragroute bench tatqa``: route TAT-QA questions between a table source and a text source.

TAT-QA (financial reports) has one corpus of tables and one of paragraphs, and
labels every question with where its answer lies: ``table``, ``text`` or
``table-text`` (both). The tables and the paragraphs become two sources
(``tables`` and ``text``), each a dense index (all-MiniLM-L6-v2 by default; with
``--method hybrid`` BM25 + dense fused by RRF). A question's gold routes:
``table`` -> tables, ``text`` -> text, ``table-text`` -> both.

As in ``bench corpus-routing``, every question is embedded once, and every
router is scored through the product pipeline
(:func:`~ragroute.pipeline.build.pipeline_from_settings`, one question per call,
read ``depth`` 20 hits per route before fusion):

* ``accuracy``: the top-1 route equals the label; a ``table-text`` question is
  right only when the pipeline's selection queries both routes;
  ``top1_in_label``: the top-1 route is one of the label's routes;
  ``exact_selection``: the selected routes are exactly the label's;
* ``recall@5`` of routed retrieval (selected routes, fused; ``--route-weights``);
* ``latency_ms_p50``: the pipeline's route stage for one question, query encoding
  excluded (the confidence router's own retrieval included), one BLAS/OpenMP thread.

Baselines in the same run: one merged index over both corpora, both routes
always (no routing), and the oracle routes. Routers: ``prototype`` and
``confidence`` (training-free); ``modality-cues`` (training-free wording cues,
:func:`modality_cues`) alone and as a second member of an
:class:`~ragroute.route.ensemble.EnsembleRouter` with each of them; and a kNN
router and the trained router over the labelled questions, scored by k-fold
cross-validation (stratified by label; each question routed by a model that never
saw its text; a ``table-text`` question is one example for each of its routes).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.evaluation.bench_corpus_routing import (
    Collection,
    RoutingData,
    cross_validated,
    score_pipelines,
    single_pipeline,
)
from ragroute.evaluation.bench_indexes import bench_index, check_method
from ragroute.evaluation.evaluators import RoutingEvaluator
from ragroute.evaluation.metrics import evaluate_run
from ragroute.pipeline.calibration import null_score_stats
from ragroute.registry import FUSIONS
from ragroute.route.base import BaseRouter, Router, decision_from_probs, softmax
from ragroute.route.sources import Source
from ragroute.types import Decision, Hit

TABLES, TEXT = "tables", "text"
ROUTES = (TABLES, TEXT)
LABEL_ROUTES: dict[str, tuple[str, ...]] = {"table": (TABLES,), "text": (TEXT,), "table-text": (TABLES, TEXT)}
"""TAT-QA ``answer_from`` -> the routes whose documents hold the answer."""

METRIC = "recall@5"
DESCRIPTIONS = {
    TABLES: "Financial tables from annual reports: line items with amounts per year, totals and percentages.",
    TEXT: "Paragraphs from annual reports explaining policies, definitions, events and reasons in prose.",
}


# --------------------------------------------------------------------------- data


DEPTH = 20  # hits read per route before fusion


@dataclass
class TatqaData:
    """What every router is scored on: the shared routing data and each question's gold routes."""

    routing: RoutingData
    gold: list[tuple[str, ...]]

    def evaluator(self) -> RoutingEvaluator:
        data = self.routing
        return RoutingEvaluator(
            data.contexts, dict(zip(data.query_ids, self.gold)), data.qrels, k=5, metric=METRIC
        )


def load_tatqa(root: Path, split: str = "dev"):
    """The TAT-QA BEIR folder (tables get modality ``table``); one-line RagrouteError if missing."""
    from ragroute.loaders import load_beir

    root = Path(root)
    needed = [root / "queries.jsonl"]  # a missing split: load_beir names the ones there are
    if not root.is_dir() or not all(p.is_file() for p in needed) or not list(root.glob("corpus*.jsonl")):
        raise RagrouteError(
            f"data missing: {root} has no TAT-QA BEIR folder (corpus_tables.jsonl, corpus_paragraphs.jsonl, "
            f"queries.jsonl, qrels/{split}.tsv); see ../shared/data/README.md"
        )
    return load_beir(root, split=split, on_error="raise")


def prepare(root: Path, encoder: Any, *, split: str = "dev", method: str = "dense") -> TatqaData:
    """Index both corpora and a merged one, and embed every question once.

    ``routing.query_labels`` are the ``answer_from`` labels; ``gold`` each question's routes.
    """
    check_method(method)
    data = load_tatqa(root, split)
    judged = [q for q in data.queries if q.id in data.qrels]
    unlabelled = sorted({str(q.metadata.get("answer_from")) for q in judged} - set(LABEL_ROUTES))
    if unlabelled:
        raise RagrouteError(
            f"{root}: questions with answer_from {unlabelled}; expected table, text or table-text"
        )
    if not judged:
        raise RagrouteError(f"{root}: no judged questions in split {split!r}")
    parts = {
        TABLES: [d for d in data.corpus if d.modality == "table"],
        TEXT: [d for d in data.corpus if d.modality != "table"],
    }
    if not all(parts.values()):
        raise RagrouteError(f"{root}: needs both table documents (corpus_tables.jsonl) and paragraphs")
    contexts = [QueryContext(q.text, id=q.id) for q in judged]
    qvecs = np.asarray(encoder.encode_queries([c.text for c in contexts], show_progress=False))
    for context, vector in zip(contexts, qvecs):
        context.set_vector(encoder, vector)
    doc_vectors = {
        name: encoder.encode_documents([d.full_text() for d in docs]) for name, docs in parts.items()
    }
    sources = [
        Source(
            name,
            bench_index(name, docs, doc_vectors[name], encoder, method),
            DESCRIPTIONS[name],
            modality=docs[0].modality,
        )
        for name, docs in parts.items()
    ]
    merged = bench_index(
        "merged",
        [d for docs in parts.values() for d in docs],
        np.vstack(list(doc_vectors.values())),
        encoder,
        method,
    )
    routing = RoutingData(
        collections=[Collection(root.name or "tatqa", data.corpus, judged, data.qrels)],
        sources=sources,
        contexts=contexts,
        query_labels=[str(q.metadata["answer_from"]) for q in judged],
        qrels={q.id: data.qrels[q.id] for q in judged},
        merged=merged,
        encoder=encoder,
    )
    return TatqaData(routing, [LABEL_ROUTES[label] for label in routing.query_labels])


# --------------------------------------------------------------------------- modality cues

_TABLE_CUES = re.compile(
    r"\b(?:change|changes|changed|percentage|percent|average|ratio|proportion|difference|increase|decrease|"
    r"growth|total|sum|combined|which year|which years|in which year|how many years)\b|%",
    re.I,
)
_YEAR = re.compile(r"\b(?:19|20)\d\d\b")
_TEXT_CUES = re.compile(
    r"^(?:how|why)\b(?! (?:much|many)\b)|"
    r"\b(?:what does|what do|what is meant|mean|means|represent|represents|"
    r"consist|consists|comprise|comprises|include|includes|describe|reason|reasons|purpose|policy|method|"
    r"determined|recognized|recognised|defined|based on)\b",
    re.I,
)


def modality_cues(text: str) -> dict[str, float]:
    """Counts of wording cues: ``table`` (arithmetic, two or more years), ``text`` (definitions, how/why).

    Training-free: TAT-QA's table questions are mostly arithmetic over line items
    and years; text questions ask what something means, includes, or why.
    """
    years = len(set(_YEAR.findall(text)))
    table = len(_TABLE_CUES.findall(text)) + (1.0 if years >= 2 else 0.0)
    return {"table": float(table), "text": float(len(_TEXT_CUES.findall(text))), "years": float(years)}


class ModalityCueRouter(BaseRouter):
    """Routes by :func:`modality_cues`: a softmax over ``weight * cue count`` (ties stay 50/50)."""

    name = "modality-cues"

    def __init__(self, table_route: str = TABLES, text_route: str = TEXT, *, weight: float = 1.0):
        self.labels = [table_route, text_route]
        self.weight = weight

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        out = []
        for query in queries:
            cues = modality_cues(query)
            probs = softmax(np.array([[cues["table"], cues["text"]]]) * self.weight)[0]
            out.append(
                decision_from_probs(self.labels, probs, decided_by=self.name, signals={"modality_cues": cues})
            )
        return out


# --------------------------------------------------------------------------- scoring


def _route_pairs(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """One (text, route) example per route of each label: a table-text question teaches both."""
    pairs = [(text, route) for text, label in zip(texts, labels) for route in LABEL_ROUTES[label]]
    return [t for t, _ in pairs], [r for _, r in pairs]


def _knn_factory(encoder: Any, k: int) -> Callable[[list[str], list[str]], Router]:
    """A kNN router fitted on labelled questions; a table-text question votes for both routes."""
    from ragroute.route.knn import KnnRouter

    def make(texts: list[str], labels: list[str]) -> Router:
        return KnnRouter(*_route_pairs(texts, labels), encoder, k=k)

    return make


def _trained_factory(encoder: Any) -> Callable[[list[str], list[str]], Router]:
    """The trained router (embedding + cheap features + hashed n-grams, calibrated) on route pairs,
    so a question like the table-text ones gets about even odds and selects both routes."""
    from ragroute.route.trained import TrainedRouter

    def make(texts: list[str], labels: list[str]) -> Router:
        return TrainedRouter.fit(*_route_pairs(texts, labels), encoder)  # `route fit`'s defaults

    return make


def score_router(bench: TatqaData, build: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Score the pipelines ``build`` makes
    (see :func:`~ragroute.evaluation.bench_corpus_routing.score_pipelines`) with one BLAS / OpenMP
    thread: a single query gains nothing from more, and idle worker threads spinning between
    calls distort the timings."""
    with _single_thread():
        row = score_pipelines(bench.routing, build, settings, bench.evaluator())
    result = row.pop("result")
    run = {r.id: r.hits for r in result.rows}
    # by query id: cross-validated rows come fold by fold, not in question order (until session 49
    # the per-label accuracy of the kNN and trained rows read other questions' outcomes)
    correct = {r.id: r.correct for r in result.rows}
    right = [correct[qid] for qid in bench.routing.query_ids]
    row.pop("errors", None)
    row.pop("gold_in_chosen", None)
    row["by_label"] = _by_label(bench.routing, bench.gold, right, run)
    return row


def _single_thread() -> contextlib.AbstractContextManager:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _reference_run(data: RoutingData, routes: Sequence[Sequence[str]], fusion: str) -> dict[str, list[str]]:
    """Each question searched in the given routes (even weights, ``fusion``): the reference rows."""
    per_source = {s.name: data.source_hits(s.name, DEPTH) for s in data.sources}
    fuse = FUSIONS.get(fusion)
    stats = null_score_stats(data.sources) if getattr(fuse, "needs_stats", False) else {}
    run = {}
    for i, qid in enumerate(data.query_ids):
        lists: dict[str, list[Hit]] = {name: per_source[name][i] for name in routes[i]}
        even = dict.fromkeys(lists, 1.0 / len(lists))
        hits = (
            next(iter(lists.values()))[:5]
            if len(lists) == 1
            else fuse(lists, limit=5, stats=stats, routes=even)
        )
        run[qid] = [h.doc_id for h in hits]
    return run


def _recall(data: RoutingData, run: Mapping[str, list[str]], ids: Sequence[str] | None = None) -> float:
    ids = data.query_ids if ids is None else ids
    result = evaluate_run({q: run.get(q, []) for q in ids}, {q: data.qrels[q] for q in ids}, (METRIC,))
    return round(result[METRIC], 4)


def _by_label(
    data: RoutingData,
    gold: Sequence[tuple[str, ...]],
    right: Sequence[bool] | None,
    run: Mapping[str, list[str]],
) -> dict[str, dict[str, float]]:
    out = {}
    for label in LABEL_ROUTES:
        rows = [i for i, lab in enumerate(data.query_labels) if lab == label]
        if not rows:
            continue
        entry = {METRIC: _recall(data, run, [data.query_ids[i] for i in rows]), "queries": len(rows)}
        if right is not None:
            entry["accuracy"] = round(float(np.mean([right[i] for i in rows])), 4)
        out[label] = entry
    return out


def run_tatqa_bench(
    root: Path,
    encoder: Any,
    *,
    split: str = "dev",
    method: str = "dense",
    threshold: float | None = None,
    fusion: str | None = None,
    folds: int = 5,
    knn_k: int = 10,
    cue_weight: float = 1.0,
    route_weights: str | None = None,
) -> dict[str, Any]:
    """Run the whole benchmark; the JSON-able result (see the module docstring).

    ``threshold``, ``fusion`` and ``route_weights`` default to the product's
    (:class:`~ragroute.pipeline.RoutingOptions`).
    """
    from ragroute.pipeline.build import routing_options
    from ragroute.route.ensemble import EnsembleRouter

    if folds < 2:
        raise RagrouteError(f"folds must be at least 2, got {folds}")
    chosen = {"threshold": threshold, "fusion": fusion, "route_weights": route_weights}
    options = routing_options({k: v for k, v in chosen.items() if v is not None})  # before any indexing
    bench = prepare(Path(root), encoder, split=split, method=method)
    data, gold = bench.routing, bench.gold
    threshold, fusion, route_weights = options.threshold, options.fusion, options.route_weights
    settings = {
        "threshold": threshold,
        "max_routes": len(ROUTES),
        "fusion": fusion,
        "route_weights": route_weights,
        "depth": DEPTH,
    }
    merged_hits = data.merged.search_contexts(data.contexts, 5)
    merged_run = {qid: [h.doc_id for h in hits] for qid, hits in zip(data.query_ids, merged_hits)}
    oracle_run = _reference_run(data, gold, fusion)
    both_run = _reference_run(data, [ROUTES] * len(gold), fusion)

    def score(build: Any) -> dict[str, Any]:
        return score_router(bench, build, settings)

    build = single_pipeline(data, "prototype")
    prototype = build(settings, None)[0][0].router
    confidence = single_pipeline(data, "confidence")(settings, None)[0][0].router
    cues = ModalityCueRouter(weight=cue_weight)
    candidates: dict[str, Router] = {
        "prototype": prototype,
        "confidence": confidence,
        "modality-cues": cues,
        "prototype + modality-cues": EnsembleRouter([prototype, cues]),
        "confidence + modality-cues": EnsembleRouter([confidence, cues]),
    }
    routers = {name: score(single_pipeline(data, None, router)) for name, router in candidates.items()}
    counts = {label: data.query_labels.count(label) for label in LABEL_ROUTES}
    learned = [f"knn-{knn_k} (cross-validated)", "trained (cross-validated)"]
    few = sorted(label for label, n in counts.items() if n < folds)
    skipped = {}
    if few:  # each fold needs a question of every label: say so, never drop the rows unsaid
        held = ", ".join(f"{x} ({counts[x]})" for x in few)
        label, hold = ("label", "holds") if len(few) == 1 else ("labels", "hold")
        reason = f"{label} {held} {hold} fewer questions than {folds} folds"
        skipped = {name: reason for name in learned}
    else:
        make_knn = _knn_factory(encoder, knn_k)
        routers[learned[0]] = score(cross_validated(data, "knn", make_knn, folds))
        make_trained = _trained_factory(encoder)
        routers[learned[1]] = score(cross_validated(data, "trained", make_trained, folds))

    return {
        "root": str(root),
        "split": split,
        "queries": len(data.query_ids),
        "labels": counts,
        "sources": {s.name: {"documents": len(s.documents), "modality": s.modality} for s in data.sources},
        "encoder": encoder.describe(),
        "method": method,
        "selection": {
            "threshold": threshold,
            "max_routes": len(ROUTES),
            "fusion": fusion,
            "route_weights": route_weights,
            "depth": DEPTH,
        },
        "evaluation": (
            f"kNN and trained: skipped ({next(iter(skipped.values()))})"
            if skipped
            else f"kNN and trained: {folds}-fold cross-validation over the questions "
            "(stratified by label, identical texts in one fold)"
        ),
        "routers": routers,
        "skipped_routers": skipped,
        f"merged_{METRIC}": _recall(data, merged_run),
        f"oracle_{METRIC}": _recall(data, oracle_run),
        f"both_routes_{METRIC}": _recall(data, both_run),
        "by_label": {
            "merged": _by_label(data, gold, None, merged_run),
            "oracle": _by_label(data, gold, None, oracle_run),
            "both_routes": _by_label(data, gold, None, both_run),
        },
        "calibration": {"prototype": prototype.calibration, "confidence": confidence.calibration},
    }


def format_report(result: dict[str, Any]) -> str:
    sel = result["selection"]
    sources = ", ".join(f"{name} ({v['documents']} docs)" for name, v in result["sources"].items())
    lines = [
        f"TAT-QA routing on {result['root']} [{result['split']}]: {result['queries']} questions "
        f"{result['labels']}, {result['method']} sources {sources}",
        f"selection: threshold {sel['threshold']}, fusion {sel['fusion']} "
        f"({sel['route_weights']} route weights); {result['evaluation']}",
        f"{'router':<32} {'accuracy':>8} {'top1 in':>8} {'exact':>6} {'R@5':>7} {'R@5 top1':>8} "
        f"{'routes/q':>8} {'p50 ms':>7} {'p95 ms':>7}",
    ]
    for name, row in result["routers"].items():
        lines.append(
            f"{name:<32} {row['accuracy']:>8.3f} {row['top1_in_label']:>8.3f} {row['exact_selection']:>6.3f} "
            f"{row[METRIC]:>7.4f} {row[METRIC + '_top1_only']:>8.4f} {row['routes_per_query']:>8.2f} "
            f"{row['latency_ms_p50']:>7.3f} {row['latency_ms_p95']:>7.3f}"
        )
    for label, key, accuracy in (
        ("merged index (both corpora)", f"merged_{METRIC}", ""),
        ("both routes always (no routing)", f"both_routes_{METRIC}", ""),
        ("oracle routes", f"oracle_{METRIC}", "1.000"),
    ):
        lines.append(f"{label:<32} {accuracy:>8} {'':>8} {'':>6} {result[key]:>7.4f}")
    for name, reason in result.get("skipped_routers", {}).items():
        lines.append(f"{name:<32} skipped: {reason}")
    rows = {**{name: row["by_label"] for name, row in result["routers"].items()}, **result["by_label"]}
    lines.append("Recall@5 (routing accuracy) by label:")
    for name, by_label in rows.items():
        cells = [
            f"{label} {v[METRIC]:.3f}" + (f" ({v['accuracy']:.2f})" if "accuracy" in v else "")
            for label, v in by_label.items()
        ]
        lines.append(f"  {name:<30} " + ", ".join(cells))
    if any("modality-cues" in name for name in result["routers"]):
        lines.append(
            "modality-cues: wording cues written for TAT-QA after reading its dev questions; a router of "
            "this benchmark only, not a registered one (no routing config names it)"
        )
    return "\n".join(lines)
