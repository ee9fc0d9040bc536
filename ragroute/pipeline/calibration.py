"""Per-source score calibration for fusing lists from several sources, learned without labels.

Raw scores from different sources are not comparable: cosines drift with each
corpus's style and BM25 scores with its statistics. For every source we measure
what its top hit scores when the source is the *wrong* place to look: the top-1
scores it returns for pseudo-queries cut from the *other* sources' documents
(:func:`ragroute.route.pseudo.pseudo_queries`). A hit's calibrated score is then
its z-score against that null distribution — how far it stands above what this
source returns for a question it cannot answer — and the ``calibrated`` fusion
method (:func:`ragroute.index.fusion.calibrated`) adds the log of the route's
probability.

Statistics are computed once per set of sources (memoised in the process) and
are reported in the trace of every fused query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.exposure import internal_searches
from ragroute.index.base import content_key
from ragroute.memo import RetrieverMemo
from ragroute.route.pseudo import pseudo_queries
from ragroute.route.sources import Source
from ragroute.scopes import readable

PSEUDO_QUERIES_PER_SOURCE = 60
#: the most pseudo-queries of the other sources one source's null is measured on: beside more than
#: 20 other sources each gives fewer than :data:`PSEUDO_QUERIES_PER_SOURCE` (its first ones, the
#: same for every pipeline it is in), so the first query of a pipeline over S sources searches about
#: S x 1,200 of them, not S x (S - 1) x 60 (until session 53: 15 s at 100 sources of 80 documents,
#: growing with the square; with a model encoder, 6,000 pseudo-queries encoded besides)
NULL_QUERIES = 1200
#: fewer of the other sources' pseudo-queries than this are no null: their mean and sd are any two
#: numbers (a source beside one of two documents was standardised against two of them)
MIN_NULL_QUERIES = 10
#: a null distribution with less spread than this is no scale to standardise against
MIN_NULL_SD = 1e-6

_memo: RetrieverMemo[dict[str, dict[str, float]]] = RetrieverMemo()


def null_score_stats(
    sources: Sequence[Source], *, per_source: int = PSEUDO_QUERIES_PER_SOURCE, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per source: mean and standard deviation of its top-1 score on other sources' pseudo-queries
    (``per_source`` of each, fewer beside more than 20 others: :data:`NULL_QUERIES`).

    A pseudo-query that finds nothing in a source (possible with BM25) counts as
    a top score of 0. Sources without documents, or whose search raises, get no statistics
    (fusion then standardises their list by itself; a failed source is tried again next time); a
    source whose null scores do not vary (every pseudo-query found nothing) gets ``degenerate``
    (that score) instead of a mean and sd, and one whose null rests on fewer than
    :data:`MIN_NULL_QUERIES` pseudo-queries gets only their number: the lists of both are
    standardised by themselves too.
    """
    key = (per_source, seed, *((s.name, id(s.retriever), content_key(s)) for s in sources))
    cached = _memo.get(key, [s.retriever for s in sources])
    if cached is not None:
        return cached
    contexts: list[QueryContext] = []
    owner: list[int] = []
    each = min(per_source, -(-NULL_QUERIES // max(len(sources) - 1, 1)))
    for j, source in enumerate(sources):
        for _, text in pseudo_queries(source.documents, each, seed=seed, key=source.name):
            contexts.append(QueryContext(text))
            owner.append(j)
    owners = np.asarray(owner)
    stats: dict[str, dict[str, float]] = {}
    failed = False
    for j, source in enumerate(sources):
        others = [c for c, o in zip(contexts, owners) if o != j]
        if not others or not source.documents:
            continue
        try:
            with internal_searches():  # pseudo-queries: nothing is shown to a caller
                found = source.search_contexts(others, 1)
        except Exception:  # noqa: BLE001 - one failing source must not sink the pipeline
            failed = True
            continue
        # the hits a caller of no scopes may read: a retriever that does not filter by scope returned
        # documents with access labels too, and their scores were the null (until session 51)
        visible_hits = [readable(hits, context.scopes) for (hits, _), context in zip(found, others)]
        top = np.array([hits[0].score if hits else 0.0 for hits in visible_hits])
        if len(top) < MIN_NULL_QUERIES:  # said in the trace (see describe_null)
            stats[source.name] = {"pseudo_queries": int(len(top))}
            continue
        if float(top.std()) < MIN_NULL_SD:
            # no spread (the others' questions all found nothing here, as BM25 may): a z against
            # it is a score over 1e-6, and a weak match outranked every other source's best
            # whatever the router said (until session 38); its list is standardised by itself
            stats[source.name] = {"pseudo_queries": int(len(top)), "degenerate": round(float(top.mean()), 6)}
            continue
        stats[source.name] = {
            "mean": round(float(top.mean()), 6),
            "std": round(float(top.std()), 6),
            "pseudo_queries": int(len(top)),
        }
    if not failed:
        _memo.put(key, [s.retriever for s in sources], stats)
    return stats


def describe(stats: dict[str, Any]) -> dict[str, Any]:
    """What the trace shows of the statistics (null mean and sd per source)."""
    return {
        name: {"null_mean": s["mean"], "null_sd": s["std"]}
        if "std" in s
        else {"null": "degenerate" if "degenerate" in s else "too few pseudo-queries"}
        for name, s in stats.items()
    }


def describe_null(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the fuse step of a trace shows of one source's null: its mean and sd, or why its list
    was standardised by itself (no spread, or too few pseudo-queries to measure one)."""
    if "std" in entry:
        return {"mean": entry["mean"], "sd": entry["std"]}
    if "degenerate" in entry:
        return {"degenerate": entry["degenerate"], "standardised": "by its own list"}
    return {
        "pseudo_queries": entry.get("pseudo_queries", 0),
        "standardised": "by its own list",
        "why": f"a null needs {MIN_NULL_QUERIES} pseudo-queries",
    }
