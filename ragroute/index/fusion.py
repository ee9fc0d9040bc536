"""Fusing ranked lists: reciprocal rank fusion and normalised score fusion.

Both take named result lists (``{"bm25": hits, "dense": hits}``) with optional
per-list weights, merge hits of the same ``(source, doc_id)``, and record each
list's rank and raw score in ``Hit.explain`` (keeping what the hit already
explained, e.g. a hybrid index's own BM25 and dense ranks) so the fused score can be explained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from ragroute.errors import RagrouteError
from ragroute.types import Hit

FUSION_METHODS = ("rrf", "minmax", "zscore")


def fuse(
    results: Mapping[str, Sequence[Hit]],
    *,
    method: str = "rrf",
    weights: Mapping[str, float] | None = None,
    rrf_k: int = 60,
    limit: int | None = None,
) -> list[Hit]:
    """Fuse named ranked lists into one list, best first.

    ``rrf``: score = sum of ``w / (rrf_k + rank)``. ``minmax`` / ``zscore``: each
    list's scores are normalised (to [0, 1], or to zero mean and unit variance),
    then summed with weights; a hit absent from a list gets that list's minimum.
    """
    if method not in FUSION_METHODS:
        raise RagrouteError(f"unknown fusion method {method!r}: choose one of {', '.join(FUSION_METHODS)}")
    weights = dict(weights or {})
    contributions = {name: _contributions(hits, method, rrf_k) for name, hits in results.items() if hits}
    first_seen: dict[tuple[str, str], Hit] = {}
    explain: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for name, hits in results.items():
        for hit in hits:
            key = (hit.source, hit.doc_id)
            first_seen.setdefault(key, hit)
            explain.setdefault(key, {})[name] = {"rank": hit.rank, "score": hit.score}
    fused: dict[tuple[str, str], float] = {}
    for key in first_seen:
        total = 0.0
        for name, (per_hit, floor) in contributions.items():
            total += weights.get(name, 1.0) * per_hit.get(key, floor)
        fused[key] = total
    order = sorted(fused, key=lambda key: (-fused[key], key[1], key[0]))
    if limit is not None:
        order = order[:limit]
    return [
        replace(
            first_seen[key],
            score=fused[key],
            rank=i + 1,
            explain={**first_seen[key].explain, "fusion": method, **explain[key]},
        )
        for i, key in enumerate(order)
    ]


def _contributions(
    hits: Sequence[Hit], method: str, rrf_k: int
) -> tuple[dict[tuple[str, str], float], float]:
    """Per-hit contribution of one list, and the value used for hits the list lacks."""
    keys = [(h.source, h.doc_id) for h in hits]
    if method == "rrf":
        return {key: 1.0 / (rrf_k + rank) for rank, key in enumerate(keys, 1)}, 0.0
    scores = np.asarray([h.score for h in hits], dtype=np.float64)
    if method == "minmax":
        low, span = scores.min(), scores.max() - scores.min()
        normed = (scores - low) / span if span > 0 else np.ones_like(scores)
    else:
        std = scores.std()
        normed = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    values = dict(zip(keys, normed.tolist()))
    return values, float(normed.min())


# --------------------------------------------------------------------------- registered fusion methods
# Entries of ragroute.registry.FUSIONS: fuse(results, *, weights, limit, **context) -> hits. The
# pipeline passes ``stats`` (per-source score statistics) and ``routes`` (route probabilities) as
# context; methods ignore what they do not use.


def rrf(results: Mapping[str, Sequence[Hit]], *, weights=None, limit=None, rrf_k: int = 60, **_: object):
    """Reciprocal rank fusion: sum of ``w / (rrf_k + rank)``."""
    return fuse(results, method="rrf", weights=weights, rrf_k=rrf_k, limit=limit)


def minmax(results: Mapping[str, Sequence[Hit]], *, weights=None, limit=None, **_: object):
    """Each list's scores scaled to [0, 1], then summed with weights."""
    return fuse(results, method="minmax", weights=weights, limit=limit)


def zscore(results: Mapping[str, Sequence[Hit]], *, weights=None, limit=None, **_: object):
    """Each list's scores standardised (zero mean, unit variance), then summed with weights."""
    return fuse(results, method="zscore", weights=weights, limit=limit)


def raw_score(results: Mapping[str, Sequence[Hit]], *, weights=None, limit=None, **_: object):
    """Merge by raw score times the list's weight (for sources whose scores share one scale,
    such as cosine similarities of one encoder)."""
    weights = dict(weights or {})
    best: dict[tuple[str, str], Hit] = {}
    score: dict[tuple[str, str], float] = {}
    for name, hits in results.items():
        for hit in hits:
            key = (hit.source, hit.doc_id)
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
    **_: object,
):
    """Calibrated fusion: each hit scores ``z + prior_weight * log(p(route))``.

    ``z`` is the hit's score standardised against its source's null distribution
    (``stats[source] = {"mean", "std"}``: the top-1 scores the source returns for
    questions from other sources, see :mod:`ragroute.pipeline.calibration`); a list
    without statistics is standardised by itself. ``routes`` are the route
    probabilities (``weights`` when absent). Both terms are in the hit's explanation.
    """
    priors = dict(routes or weights or {})
    stats = stats or {}
    scored: list[tuple[float, str, str, Hit, dict]] = []
    for name, hits in results.items():
        if not hits:
            continue
        if name in stats:
            mean, std = float(stats[name]["mean"]), float(stats[name]["std"])
        else:
            values = np.asarray([h.score for h in hits], dtype=np.float64)
            mean, std = float(values.mean()), float(values.std()) or 1.0
        log_p = float(np.log(max(float(priors.get(name, 1.0)), 1e-6)))
        for hit in hits:
            z = (hit.score - mean) / max(std, 1e-9)
            value = z + prior_weight * log_p
            detail = {"rank": hit.rank, "score": hit.score, "z": round(z, 4), "log_p": round(log_p, 4)}
            scored.append((value, hit.doc_id, hit.source, hit, {name: detail}))
    best: dict[tuple[str, str], tuple[float, Hit, dict]] = {}
    for value, doc_id, source, hit, detail in scored:
        key = (source, doc_id)
        if key not in best or value > best[key][0]:
            best[key] = (value, hit, detail)
    order = sorted(best, key=lambda key: (-best[key][0], key[1], key[0]))[:limit]
    return [
        replace(
            best[key][1],
            score=best[key][0],
            rank=i + 1,
            explain={**best[key][1].explain, "fusion": "calibrated", **best[key][2]},
        )
        for i, key in enumerate(order)
    ]


calibrated.needs_stats = True  # the pipeline computes per-source null statistics for it
