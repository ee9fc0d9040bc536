"""Evaluators: objects that take a pipeline (or any retriever) plus a dataset and return results.

Following the sentence-transformers pattern, an evaluator is built once from
the data (queries, relevance judgements, gold routes) and then called on any
number of pipelines; each call returns a result object with the metrics, one row
per query (for error reports), and latencies. Benchmarks only build pipelines,
call evaluators and print, so what they measure is what users run.

* :class:`RetrievalEvaluator` — ranking metrics (nDCG, recall, ...) of a retriever;
* :class:`RoutingEvaluator` — routing accuracy and routed-retrieval quality of a
  :class:`~ragroute.pipeline.Pipeline`, queried one query at a time as a user
  would, with the routing overhead read from the pipeline's own trace.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import InvalidArgumentError
from ragroute.evaluation.metrics import (
    check_grouped,
    check_run_and_qrels,
    evaluate_run,
    is_scorable,
    macro_mean,
    parse_metric,
)
from ragroute.index.base import search_contexts
from ragroute.route.base import NONE_ROUTE, top_route


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 and p95 of ``values``, numpy's default method (linear interpolation between the closest
    ranks, as every benchmark's ``np.percentile`` reads them); 0.0 for no value."""
    if not values:
        return {"p50": 0.0, "p95": 0.0}
    return {
        "p50": round(float(np.percentile(values, 50)), 4),
        "p95": round(float(np.percentile(values, 95)), 4),
    }


def macro_average(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    groups: Mapping[str, str] | None,
    metric: str,
) -> float:
    """``metric`` averaged per group (e.g. per collection), then over groups; micro without groups.
    A group with no scored query (see :func:`~ragroute.evaluation.metrics.is_scorable`) is left out
    of the mean over groups; 0.0 when no group has one."""
    return macro_averages(run, qrels, groups, (metric,))[metric]


def macro_averages(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    groups: Mapping[str, str] | None,
    metrics: Sequence[str],
) -> dict[str, float]:
    """:func:`macro_average` of each of ``metrics``, the run scored once for all of them."""
    if not groups:
        scores = evaluate_run(run, qrels, metrics)
        return {metric: float(scores[metric]) for metric in metrics}
    # only a query that is scored needs a group: one judged with grade 0 only (no group) was refused
    # as "scored" until session 56
    ungrouped = {qid: rels for qid, rels in qrels.items() if qid not in groups}
    check_run_and_qrels({}, ungrouped)
    check_grouped([qid for qid, rels in ungrouped.items() if is_scorable(rels)], groups)
    names = sorted(set(groups.values()))
    values: dict[str, list[float | None]] = {metric: [] for metric in metrics}
    for name in names:
        sub_qrels = {qid: rels for qid, rels in qrels.items() if groups.get(qid) == name}
        sub_run = {qid: run.get(qid, []) for qid in sub_qrels}
        scores = evaluate_run(sub_run, sub_qrels, metrics)
        for metric, found in values.items():
            found.append(scores[metric] if scores["queries"] else None)
    return {metric: macro_mean(found) for metric, found in values.items()}


@dataclass
class RetrievalResult:
    """Metrics of one retriever on one dataset, with per-query rows and speed.

    ``latency_ms`` (p50/p95) when queries ran one at a time; ``queries_per_s``
    either way.
    """

    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    latency_ms: dict[str, float]
    queries_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "latency_ms": self.latency_ms, "queries_per_s": self.queries_per_s}


def judged_ids(hits: Sequence[Any]) -> list[str]:
    """Ids a ranking is judged by: chunks count as their parent document, first occurrence wins."""
    return list(dict.fromkeys(h.parent_id or h.doc_id for h in hits))


def check_depth(k: int, metrics: Sequence[str]) -> None:
    """Refuse (one line) ``k`` hits read per query for a metric whose cutoff is deeper: ``ndcg@10``
    over 5 hits scores every query as if its 6th to 10th documents were misses (until session 50
    an evaluator took it without a word)."""
    deepest = max((parse_metric(m)[1] for m in metrics), default=0)
    if deepest > k:
        deep = next(m for m in metrics if parse_metric(m)[1] == deepest)
        raise InvalidArgumentError(f"k={k} reads fewer hits than {deep} scores: give k >= {deepest}")


#: how much deeper than ``k`` a query of a chunk index is searched at most to fill ``k`` documents
DEEPER_AT_MOST = 16


def hits_of_k_documents(hits: Sequence[Any], k: int, search: Callable[[int], Sequence[Any]]) -> Sequence[Any]:
    """A query's ``k`` hits, or deeper ones until they hold ``k`` documents. Chunks count as their
    parent, so ``k`` hits of a chunk index can hold far fewer than ``k`` documents (one with 120
    matching chunks scored @10 on 1 document until session 37): the query is searched again
    (``search(depth)``), twice as deep each time, until its hits hold ``k`` documents, the retriever
    has no more, or :data:`DEEPER_AT_MOST` x ``k``."""
    depth = k
    while len(judged_ids(hits)) < k and len(hits) >= depth and depth < DEEPER_AT_MOST * k:
        depth *= 2
        hits = search(depth)
    return hits


def _routed_hits(pipeline: Any, context: QueryContext, depth: int) -> Sequence[Any]:
    """A pipeline's ``depth`` hits for one query (routed again: routers decide the same)."""
    return pipeline.retrieve_contexts([context], depth)[0].hits


class RetrievalEvaluator:
    """Ranking metrics of any retriever (an index, a :class:`~ragroute.pipeline.Pipeline`) on
    queries with relevance judgements.

    ``queries`` are :class:`QueryContext` s with ids (precomputed vectors welcome);
    ``k`` hits are read per query (at least the largest metric cutoff); hits of
    chunks are judged as their parent documents; ``groups`` (query id -> group)
    makes every metric a macro average over groups. Metrics average over
    ``queries`` only: judgements of other queries in ``qrels`` (another fold, a
    ``--max-queries`` cut) are not counted as misses.
    """

    def __init__(
        self,
        queries: Sequence[QueryContext],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        metrics: Sequence[str] = ("ndcg@10",),
        k: int = 10,
        groups: Mapping[str, str] | None = None,
    ) -> None:
        self.queries = list(queries)
        asked = {c.id for c in self.queries}
        self.qrels = {qid: rels for qid, rels in qrels.items() if qid in asked}
        self.metrics = tuple(metrics)
        check_depth(k, self.metrics)
        self.k = k
        self.groups = groups

    def _judged(self, retriever: Any, context: Any, hits: Sequence[Any]) -> list[str]:
        """The first ``k`` documents of a query's ranking (searched deeper where its ``k`` hits are
        chunks of fewer documents: :func:`hits_of_k_documents`)."""
        hits = hits_of_k_documents(
            hits, self.k, lambda depth: search_contexts(retriever, [context], depth)[0]
        )
        return judged_ids(hits)[: self.k]

    def __call__(
        self, retriever: Any, *, batch_size: int | None = None, progress: bool | None = False
    ) -> RetrievalResult:
        """Score ``retriever``: one query per call (latencies measured), or ``batch_size`` per call.
        ``progress``: a bar (``None``: on a terminal only, see :mod:`ragroute.progress`)."""
        from tqdm.auto import tqdm

        from ragroute.progress import progress_enabled

        rows: list[Any] = []
        latencies: list[float] = []
        size = batch_size or 1
        starts = range(0, len(self.queries), size)
        began = time.perf_counter()
        bar = tqdm(starts, desc="queries", unit="batch", leave=False, disable=not progress_enabled(progress))
        for offset in bar:
            batch = self.queries[offset : offset + size]
            start = time.perf_counter()
            results = search_contexts(retriever, batch, self.k)
            if batch_size is None:
                latencies.append((time.perf_counter() - start) * 1000)
            rows.extend(
                {"id": c.id, "hits": self._judged(retriever, c, hits)} for c, hits in zip(batch, results)
            )
        elapsed = time.perf_counter() - began
        run = {row["id"]: row["hits"] for row in rows}
        averages = macro_averages(run, self.qrels, self.groups, self.metrics)
        metrics = {m: round(averages[m], 4) for m in self.metrics}
        return RetrievalResult(
            metrics,
            rows,
            _percentiles(latencies) if latencies else {},
            round(len(self.queries) / elapsed, 2) if elapsed > 0 else 0.0,
        )


@dataclass
class RoutingRow:
    """One query's routing outcome; ``gold`` holds every correct route (several when the answer
    needs them all)."""

    id: str
    gold: tuple[str, ...]
    best: str
    chosen: list[str]
    routes: dict[str, float]
    hits: list[str]
    scores: list[float]
    route_ms: float
    total_ms: float

    @property
    def correct(self) -> bool:
        """One gold route: the best route is it. Several: exactly they are selected."""
        if len(self.gold) == 1:
            return self.best == self.gold[0]
        return set(self.chosen) == set(self.gold)


@dataclass
class RoutingResult:
    """Routing accuracy and routed-retrieval quality of one pipeline.

    ``quality`` is the evaluator's retrieval metric (``metric``, nDCG@10 by default).
    """

    accuracy: float
    quality: float
    routes_per_query: float
    gold_in_chosen: float
    top1_in_gold: float
    exact_selection: float
    route_latency_ms: dict[str, float]
    total_latency_ms: dict[str, float]
    errors: dict[str, int]
    metric: str = "ndcg@10"
    rows: list[RoutingRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            self.metric: self.quality,
            "routes_per_query": self.routes_per_query,
            "gold_in_chosen": self.gold_in_chosen,
            "top1_in_label": self.top1_in_gold,
            "exact_selection": self.exact_selection,
            "latency_ms_p50": self.route_latency_ms["p50"],
            "latency_ms_p95": self.route_latency_ms["p95"],
            "pipeline_ms_p50": self.total_latency_ms["p50"],
            "errors": self.errors,
        }


class RoutingEvaluator:
    """Routes every query through a pipeline (one call per query, as a user would) and scores it.

    ``gold`` maps query id -> correct route, or a tuple of routes that are all
    needed; ``groups`` (query id -> collection) makes ``metric`` a macro average.
    The routing overhead of each query is the
    route stage's time from the pipeline's trace (query vectors preset on the
    contexts are not re-encoded, so it excludes query encoding).
    """

    def __init__(
        self,
        queries: Sequence[QueryContext],
        gold: Mapping[str, str | tuple[str, ...]],
        qrels: Mapping[str, Mapping[str, int]],
        *,
        groups: Mapping[str, str] | None = None,
        k: int = 10,
        metric: str = "ndcg@10",
    ) -> None:
        self.queries = list(queries)
        self.gold = {qid: (g,) if isinstance(g, str) else tuple(g) for qid, g in gold.items()}
        self.qrels = qrels
        self.groups = groups
        check_depth(k, (metric,))
        self.k = k
        self.metric = metric

    def run(self, pipeline: Any, positions: Sequence[int] | None = None) -> list[RoutingRow]:
        """Rows for the queries at ``positions`` (all by default)."""
        rows = []
        for i in range(len(self.queries)) if positions is None else positions:
            context = self.queries[i]
            start = time.perf_counter()
            result = pipeline.retrieve_contexts([context], self.k)[0]
            total = (time.perf_counter() - start) * 1000
            decision = result.decision
            route_ms = sum(s.detail.get("ms", 0.0) for s in decision.trace if s.stage == "route-time")
            routes = dict(decision.routes)
            best = top_route(routes) if routes else NONE_ROUTE
            # judged as RetrievalEvaluator judges them: a chunk counts as its parent document, first
            # occurrence wins (scores kept beside it), searched deeper where the k hits hold fewer
            # documents (until session 48 they were scored on those few). Until session 43 a routed
            # chunk hit was judged by its own id ("doc#p3"), which no qrels line names: every metric read 0
            hits = hits_of_k_documents(
                result.hits, self.k, functools.partial(_routed_hits, pipeline, context)
            )
            judged: dict[str, float] = {}
            for hit in hits:
                judged.setdefault(hit.parent_id or hit.doc_id, hit.score)
            judged = dict(list(judged.items())[: self.k])
            rows.append(
                RoutingRow(
                    id=context.id,
                    gold=self.gold[context.id],
                    best=best,
                    chosen=list(decision.chosen),
                    routes=routes,
                    hits=list(judged),
                    scores=list(judged.values()),
                    route_ms=route_ms,
                    total_ms=total,
                )
            )
        return rows

    def score(self, rows: Sequence[RoutingRow]) -> RoutingResult:
        """Metrics over ``rows`` only: judgements of queries without a row (another fold) are not misses."""
        run = {row.id: row.hits for row in rows}
        judged = {qid: rels for qid, rels in self.qrels.items() if qid in run}
        errors = Counter(
            f"{'+'.join(row.gold)}->{'+'.join(row.chosen) if len(row.gold) > 1 else row.best}"
            for row in rows
            if not row.correct
        )
        return RoutingResult(
            accuracy=round(float(np.mean([row.correct for row in rows])), 4),
            quality=round(macro_average(run, judged, self.groups, self.metric), 4),
            routes_per_query=round(float(np.mean([len(row.chosen) for row in rows])), 3),
            gold_in_chosen=round(float(np.mean([set(row.gold) <= set(row.chosen) for row in rows])), 4),
            top1_in_gold=round(float(np.mean([row.best in row.gold for row in rows])), 4),
            exact_selection=round(float(np.mean([set(row.chosen) == set(row.gold) for row in rows])), 4),
            route_latency_ms=_percentiles([row.route_ms for row in rows]),
            total_latency_ms=_percentiles([row.total_ms for row in rows]),
            errors=dict(errors.most_common()),
            metric=self.metric,
            rows=list(rows),
        )

    def __call__(self, pipeline: Any) -> RoutingResult:
        return self.score(self.run(pipeline))


def measured_reference(reference: Any, what: str, differs: str, log: Callable[[str], None] | None) -> Any:
    """``reference`` (an issue's numbers, printed beside a benchmark's) when the data is the one it
    was measured on (``differs`` empty); else ``None``, and ``differs`` (how the sizes differ) said
    through ``log``: a cut or changed copy whose name alone matched ``what`` printed them as its
    baseline until session 40."""
    if not differs:
        return reference
    if log is not None:
        log(f"issue reference left out: the data differs from {what} it was measured on ({differs})")
    return None
