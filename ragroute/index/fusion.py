"""Fusing ranked lists: reciprocal rank fusion and normalised score fusion.

Both take named result lists (``{"bm25": hits, "dense": hits}``) with optional
per-list weights, merge hits of the same ``(source, doc_id)`` (sources that hold the same documents,
such as the experts of one expert set, count as one: ``documents_of`` maps a source name to the
collection it searches; a nested pipeline's hits count by the inner source that found them too, see
:func:`document_key`), and record each
list's rank and raw score in ``Hit.explain`` (keeping what the hit already
explained, e.g. a hybrid index's own BM25 and dense ranks) so the fused score can be explained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ragroute.errors import RagrouteError, is_finite_number
from ragroute.types import Hit

FUSION_METHODS = ("rrf", "minmax", "zscore")

K = TypeVar("K")


def document_key(hit: Hit, documents_of: Mapping[str, str] | None = None) -> tuple[str, str]:
    """What identifies a hit's document across lists: (collection of its source, doc id); for a hit
    a nested pipeline found in its source ``INNER`` (``explain["inner_source"]``), the collection is
    ``COLLECTION/INNER``: two inner sources' documents may share an id (until session 51 fusion kept
    one of them and dropped the other, and ``scores: similarity`` gave both the better one's score)."""
    source = hit.source
    collection = (documents_of or {}).get(source, source)
    inner = hit.explain.get("inner_source") if isinstance(hit.explain, Mapping) else None
    if isinstance(inner, str) and inner:
        collection = f"{collection}/{inner}"
    return (collection, hit.doc_id)


def fuse(
    results: Mapping[str, Sequence[Hit]],
    *,
    method: str = "rrf",
    weights: Mapping[str, float] | None = None,
    rrf_k: int = 60,
    limit: int | None = None,
    documents_of: Mapping[str, str] | None = None,
) -> list[Hit]:
    """Fuse named ranked lists into one list, best first.

    ``rrf``: score = sum of ``w / (rrf_k + rank)``. ``minmax`` / ``zscore``: each
    list's scores are normalised (to [0, 1], or to zero mean and unit variance),
    then summed with weights; a hit absent from a list gets that list's minimum. A document repeated
    within one list counts once, at its first rank (later copies are dropped before ranking).
    """
    first_seen: dict[tuple[str, str], Hit] = {}
    ranked: dict[str, list[tuple[tuple[str, str], float, int]]] = {}
    for name, hits in results.items():
        entries = []
        for hit in hits:
            key = document_key(hit, documents_of)
            first_seen.setdefault(key, hit)
            entries.append((key, hit.score, hit.rank))
        ranked[name] = entries
    fused = fuse_ranked(
        ranked, method=method, weights=weights, rrf_k=rrf_k, limit=limit, order=lambda key: (key[1], key[0])
    )
    return [
        replace(
            first_seen[key],
            score=total,
            rank=i + 1,
            explain={**first_seen[key].explain, "fusion": method, **detail},
        )
        for i, (key, total, detail) in enumerate(fused)
    ]


def _best_first(total: np.ndarray, keys: list[K], order: Callable[[K], Any], limit: int | None) -> list[int]:
    """Positions of the ``limit`` best totals, ties broken by ``order(key)`` (then by position).

    Only keys that can reach the top ``limit`` (a total at least the ``limit``-th best) are ordered
    by ``order``: a hybrid search fuses ~200 candidates per query to return 10, and calling
    ``order`` on all of them was most of its Python time.
    """
    if limit is not None and 0 < limit < len(keys):
        cutoff = -np.partition(-total, limit - 1)[limit - 1]
        candidates = np.flatnonzero(total >= cutoff).tolist()
    else:
        candidates = list(range(len(keys)))
    values = total.tolist()
    ranked = sorted(candidates, key=lambda i: (-values[i], order(keys[i])))
    return ranked if limit is None else ranked[:limit]


def fuse_ranked(
    lists: Mapping[str, Sequence[tuple[K, float, int]]],
    *,
    method: str = "rrf",
    weights: Mapping[str, float] | None = None,
    rrf_k: int = 60,
    limit: int | None = None,
    order: Callable[[K], Any] = lambda key: key,
) -> list[tuple[K, float, dict[str, dict[str, float]]]]:
    """:func:`fuse` on plain ``(key, score, rank)`` entries: ``(key, fused score, per-list rank and
    score)`` best first, ties broken by ``order(key)``.

    Indexes fuse document positions with it before building any :class:`Hit`, so
    only the hits that are returned are materialised.
    """
    if method not in FUSION_METHODS:
        raise RagrouteError(f"unknown fusion method {method!r}: choose one of {', '.join(FUSION_METHODS)}")
    if not finite_at_least_0(rrf_k):  # -1 divided by zero at rank 1, below it first hits came last
        raise RagrouteError(f"rrf_k must be a finite number of at least 0, not {rrf_k!r}")
    weights = _checked_weights(weights)
    # a key repeated within one list counts once, at its first (best) rank, as in the metrics: the
    # last copy's rank and score overwrote the first's (rrf([a, b, a]) put b above a)
    lists = {name: _first_of_each(entries, itemgetter(0)) for name, entries in lists.items()}
    slot: dict[K, int] = {}
    for entries in lists.values():
        for entry in entries:
            slot.setdefault(entry[0], len(slot))
    keys = list(slot)
    columns = []
    for name, entries in lists.items():
        if not entries:
            continue
        contribution, floor = _contributions(name, entries, method, rrf_k)
        weight = weights.get(name, 1.0)
        positions = np.fromiter((slot[e[0]] for e in entries), dtype=np.int64, count=len(entries))
        # weighted as a whole column was (weight times a float64 array), floor and entries alike
        weighted_floor = float((weight * np.array([floor], dtype=np.float64))[0])
        columns.append(_Column(positions, weight * contribution, weighted_floor))
    total = _order_free_sum(columns, len(keys))
    best = _best_first(total, keys, order, limit)
    chosen = [keys[i] for i in best]
    detail: dict[K, dict[str, dict[str, float]]] = {key: {} for key in chosen}
    for name, entries in lists.items():
        for key, score, rank in entries:
            if key in detail:
                detail[key][name] = {"rank": rank, "score": score}
    return [(key, float(total[i]), detail[key]) for key, i in zip(chosen, best)]


def finite_at_least_0(value: Any) -> bool:
    """Whether ``value`` is a finite number (not a bool, nor text: ``"3"`` passed and then failed in
    numpy's multiplication) of at least 0."""
    return is_finite_number(value) and value >= 0


def _checked_weights(weights: Mapping[str, float] | None, what: str = "weight") -> dict[str, float]:
    """``weights`` as a dict, or a one-line error naming the first list whose ``what`` is not a finite
    number of at least 0: a NaN weight made every fused score of its list NaN (NaN totals sort
    anywhere), and a negative one turned its list upside down, silently."""
    checked = dict(weights or {})
    for name, value in checked.items():
        if not finite_at_least_0(value):
            raise RagrouteError(f"{what} of list {name!r} is {value!r}: not a finite number of at least 0")
    return checked


class _Column(NamedTuple):
    """One list's weighted values: ``values`` at ``positions``, ``floor`` at every other key."""

    positions: np.ndarray
    values: np.ndarray
    floor: float

    def dense(self, size: int) -> np.ndarray:
        column = np.full(size, self.floor, dtype=np.float64)
        column[self.positions] = self.values
        return column


#: values past this magnitude are summed over whole rows (see :func:`_order_free_sum`)
_SPARSE_SUM_LIMIT = 1e300


def _order_free_sum(columns: Sequence[_Column], size: int) -> np.ndarray:
    """The element-wise sum of ``columns``, correctly rounded: the same in any order of the lists.

    A running sum rounds after each list, so three or more lists summed in another order could
    differ in the last bit: documents of equal totals (ranks 1, 2, 7 against 7, 1, 2) were ordered
    by that rounding, which followed the order the retrieve stage handed the lists over in (each
    source's size, the machine's cores), not by document id. One or two lists need one rounding
    at most, which addition already gives (a hybrid index's two lists sum as they always did).

    Three or more lists: each key's sum is ``math.fsum`` of the floors of all lists (once, as exact
    partials), its own values, and the floors of the lists that hold it, negated: the exact sum of
    its row, so the same correctly rounded total. Until session 52 each row was read whole, one
    value per list and key: 200 lists of 100 hits were 20,000 keys by 200 lists (0.4 s a query,
    as the square of the lists). A zero total is summed over its whole row (fsum's zero sign), as
    are totals with values past :data:`_SPARSE_SUM_LIMIT` (where partial sums may overflow).
    """
    if not columns:
        return np.zeros(size, dtype=np.float64)
    if len(columns) <= 2:
        dense = [column.dense(size) for column in columns]
        return dense[0] + dense[1] if len(dense) == 2 else dense[0]
    floors = [column.floor for column in columns]
    if max(abs(f) for f in floors) > _SPARSE_SUM_LIMIT or any(
        not np.all(np.abs(column.values) <= _SPARSE_SUM_LIMIT) for column in columns
    ):
        return _row_sums(columns, range(size), size)
    every_floor = _exact_partials(floors)
    rows = [list(every_floor) for _ in range(size)]
    for column in columns:
        own_floor = -column.floor
        for position, value in zip(column.positions.tolist(), column.values.tolist()):
            rows[position].append(value)
            if own_floor:
                rows[position].append(own_floor)
    total = np.fromiter((math.fsum(row) for row in rows), dtype=np.float64, count=size)
    zero = np.flatnonzero(total == 0)
    if len(zero):
        total[zero] = _row_sums(columns, zero.tolist(), size)
    return total


def _row_sums(columns: Sequence[_Column], positions: Iterable[int], size: int) -> np.ndarray:
    """``math.fsum`` of each row at ``positions``, read whole (one value per list)."""
    wanted = list(positions)
    rows = np.stack([column.dense(size)[wanted] for column in columns], axis=1).tolist()
    return np.fromiter((math.fsum(row) for row in rows), dtype=np.float64, count=len(wanted))


def _exact_partials(values: Sequence[float]) -> list[float]:
    """Non-overlapping floats whose exact sum is the exact sum of ``values`` (Shewchuk's partials,
    as ``math.fsum`` keeps them; the values are finite and far from overflow)."""
    partials: list[float] = []
    for x in values:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[i] = low
                i += 1
            x = high
        partials[i:] = [x]
    return partials


E = TypeVar("E")


def first_per_document(hits: Sequence[Hit], documents_of: Mapping[str, str] | None = None) -> Sequence[Hit]:
    """``hits`` without the later copies of a document (:func:`document_key`): a document repeated
    within one list counts once, at its first rank (the list itself when none repeats)."""
    return _first_of_each(hits, lambda hit: document_key(hit, documents_of))


def _first_of_each(entries: Sequence[E], key: Callable[[E], Any]) -> Sequence[E]:
    """``entries`` without the later copies of a ``key`` (the list itself when no key repeats)."""
    first: dict[Any, E] = {}
    for entry in entries:
        first.setdefault(key(entry), entry)
    return entries if len(first) == len(entries) else list(first.values())


def _contributions(
    name: str, entries: Sequence[tuple[Any, float, int]], method: str, rrf_k: int
) -> tuple[np.ndarray, float]:
    """Each entry's contribution in list ``name``, and the value used for keys the list lacks."""
    if method == "rrf":
        return 1.0 / (rrf_k + np.arange(1, len(entries) + 1, dtype=np.float64)), 0.0
    scores = _within_range(
        _finite_scores(name, [entry[1] for entry in entries], [entry[0] for entry in entries])
    )
    if method == "minmax":
        low, span = scores.min(), scores.max() - scores.min()
        normed = (scores - low) / span if span > 0 else np.ones_like(scores)
    else:
        std = scores.std()
        normed = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    return normed, float(normed.min())


#: scores larger than this (in absolute value) are scaled down before they are normalised
LARGE_SCORE = 1e150


def _within_range(values: np.ndarray) -> np.ndarray:
    """``values`` divided by their largest magnitude when that is near the float range, where their
    mean, spread or range overflows (normalised scores do not change with the scale): until session
    44 a list of two scores of 9e307 fused to NaN (``minmax``, ``calibrated``, ``auto``), NaN totals
    sorted anywhere, and wildly different scores standardised to 0 (``zscore``)."""
    largest = float(np.abs(values).max(initial=0.0))
    return values / largest if largest > LARGE_SCORE else values


def _finite_scores(name: str, scores: Sequence[float], keys: Sequence[Any]) -> np.ndarray:
    """``scores`` as floats, or a one-line error naming list ``name`` and the first key whose score is
    NaN or infinite: one such score made every normalised score of its list NaN, and NaN totals
    sorted anywhere (the pipeline's sources refuse them earlier, see ``sources.check_hit``)."""
    values = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise RagrouteError(f"list {name!r}: {keys[bad]!r} has score {values[bad]}, not a finite number")
    return values


# --------------------------------------------------------------------------- registered fusion methods
# Entries of ragroute.registry.FUSIONS: fuse(results, *, weights, limit, **context) -> hits. The
# pipeline passes ``stats`` (per-source score statistics) and ``routes`` (route probabilities) as
# context; methods ignore what they do not use.


def rrf(
    results: Mapping[str, Sequence[Hit]],
    *,
    weights=None,
    limit=None,
    rrf_k: int = 60,
    documents_of=None,
    **_: object,
):
    """Reciprocal rank fusion: sum of ``w / (rrf_k + rank)``."""
    return fuse(results, method="rrf", weights=weights, rrf_k=rrf_k, limit=limit, documents_of=documents_of)


def minmax(results: Mapping[str, Sequence[Hit]], *, weights=None, limit=None, documents_of=None, **_: object):
    """Each list's scores scaled to [0, 1], then summed with weights."""
    return fuse(results, method="minmax", weights=weights, limit=limit, documents_of=documents_of)


def zscore(results: Mapping[str, Sequence[Hit]], *, weights=None, limit=None, documents_of=None, **_: object):
    """Each list's scores standardised (zero mean, unit variance), then summed with weights."""
    return fuse(results, method="zscore", weights=weights, limit=limit, documents_of=documents_of)


def raw_score(
    results: Mapping[str, Sequence[Hit]], *, weights=None, limit=None, documents_of=None, **_: object
):
    """Merge by raw score times the list's weight (for sources whose scores share one scale,
    such as cosine similarities of one encoder)."""
    weights = _checked_weights(weights)
    best: dict[tuple[str, str], Hit] = {}
    score: dict[tuple[str, str], float] = {}
    for name, hits in results.items():
        _finite_scores(name, [h.score for h in hits], [h.doc_id for h in hits])
        for hit in hits:
            key = document_key(hit, documents_of)
            value = weights.get(name, 1.0) * hit.score
            if key not in score or value > score[key]:
                best[key], score[key] = hit, value
    order = sorted(score, key=lambda key: (-score[key], key[1], key[0]))[:limit]
    return [
        replace(best[key], score=score[key], rank=i + 1, explain={**best[key].explain, "fusion": "score"})
        for i, key in enumerate(order)
    ]


def calibrated(
    results: Mapping[str, Sequence[Hit]],
    *,
    weights=None,
    limit=None,
    stats: Mapping[str, Mapping[str, float]] | None = None,
    routes: Mapping[str, float] | None = None,
    prior_weight: float = 1.0,
    documents_of: Mapping[str, str] | None = None,
    **_: object,
):
    """Calibrated fusion: each hit scores ``z + prior_weight * log(p(route))``.

    ``z`` is the hit's score standardised against its source's null distribution
    (``stats[source] = {"mean", "std"}``: the top-1 scores the source returns for
    questions from other sources, see :mod:`ragroute.pipeline.calibration`); a list
    without statistics, or whose null has no spread, is standardised by itself. ``routes`` are the route
    probabilities (``weights`` when absent). Both terms are in the hit's explanation. A document
    repeated within one list counts once, at its first rank (as in :func:`fuse`).
    """
    weights = _checked_weights(weights)
    priors = _checked_weights(routes, "route probability") if routes else weights
    stats = stats or {}
    scored: list[tuple[float, Hit, dict]] = []
    for name, hits in results.items():
        # a document repeated within one list counts once, at its first rank, as in fuse: until
        # session 51 its best copy's value was kept beside the last copy's rank, score and z
        hits = first_per_document(hits, documents_of)
        if not hits:
            continue
        values = _finite_scores(name, [h.score for h in hits], [h.doc_id for h in hits])
        if "std" in stats.get(name, {}):  # not a degenerate null (see calibration.null_score_stats)
            mean, std = float(stats[name]["mean"]), float(stats[name]["std"])
        else:
            scaled = _within_range(values)  # standardised by itself: at a scale its mean can take
            values, mean, std = scaled, float(scaled.mean()), float(scaled.std()) or 1.0
        log_p = float(np.log(max(float(priors.get(name, 1.0)), 1e-6)))
        for hit, value_of_hit in zip(hits, values.tolist()):
            z = (value_of_hit - mean) / max(std, 1e-9)
            value = z + prior_weight * log_p
            detail = {"rank": hit.rank, "score": hit.score, "z": round(z, 4), "log_p": round(log_p, 4)}
            scored.append((value, hit, {name: detail}))
    best: dict[tuple[str, str], tuple[float, Hit, dict]] = {}
    details: dict[tuple[str, str], dict] = {}  # every list's rank and z for the document, not only the best's
    for value, hit, detail in scored:
        key = document_key(hit, documents_of)
        details.setdefault(key, {}).update(detail)
        if key not in best or value > best[key][0]:
            best[key] = (value, hit, detail)
    order = sorted(best, key=lambda key: (-best[key][0], key[1], key[0]))[:limit]
    return [
        replace(
            best[key][1],
            score=best[key][0],
            rank=i + 1,
            explain={**best[key][1].explain, "fusion": "calibrated", **details[key]},
        )
        for i, key in enumerate(order)
    ]


calibrated.needs_stats = True  # type: ignore[attr-defined] # the pipeline computes per-source null statistics for it


def lists_share_documents(names: Sequence[str], documents_of: Mapping[str, str] | None = None) -> bool:
    """Whether two of the lists ``names`` come from sources over the same documents (one collection
    in ``documents_of``: an expert set's experts, two views of one index)."""
    collections = [(documents_of or {}).get(name, name) for name in names]
    return len(set(collections)) < len(collections)


def auto_method(names: Sequence[str], documents_of: Mapping[str, str] | None = None) -> str:
    """What ``auto`` fusion runs for these lists: ``rrf`` when two of them hold the same documents,
    else ``calibrated``."""
    return "rrf" if lists_share_documents(names, documents_of) else "calibrated"


def auto(results: Mapping[str, Sequence[Hit]], *, documents_of=None, **context: Any):
    """The default: reciprocal rank fusion when two lists come from sources over the same
    documents, calibrated fusion when every list has documents of its own.

    Lists over different documents (corpus routing) have no document in common: only their scores
    can order them against each other, and calibrated fusion (standardised scores plus the route's
    log-probability) never scored below sending each query to its top route on Glasgow
    (docs/benchmarks.md). Lists over the same documents (experts, views of one index) vote on
    shared documents by rank: on Glasgow's expert set RRF beat every score-based fusion on every
    row (fusing all experts 0.5509 against calibrated's 0.5306, docs/experts.md), and calibrated,
    which keeps each document's single best standardised score, mostly returned the list with the
    smallest score spread (session 36)."""
    if auto_method(list(results), documents_of) == "rrf":
        return rrf(results, documents_of=documents_of, **context)
    return calibrated(results, documents_of=documents_of, **context)


auto.needs_stats = True  # type: ignore[attr-defined] # for calibrated, when the lists hold different documents
