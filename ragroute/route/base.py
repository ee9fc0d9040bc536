"""The router protocol, and the helpers every router shares (calibration, route selection).

A router maps a query to a :class:`~ragroute.types.Decision` whose ``routes``
are probabilities over its labels (source names, plus ``"none"`` = answer
without retrieval, when the router knows that route), with the scores and
signals behind them. Which routes are then queried is decided by
:func:`select_routes` (a probability threshold and a maximum number of routes),
so every router can hedge across sources it cannot tell apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragroute.types import Decision, TraceStep

NONE_ROUTE = "none"


@runtime_checkable
class Router(Protocol):
    """Anything that routes queries: ``labels`` are the routes it can output."""

    name: str
    labels: list[str]

    def route(self, query: str, *, query_vector: np.ndarray | None = None) -> Decision: ...

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]: ...


class BaseRouter(ABC):
    """Implements ``route`` through the batched ``route_many``."""

    name: str = "router"
    labels: list[str]

    def route(self, query: str, *, query_vector: np.ndarray | None = None) -> Decision:
        vectors = None if query_vector is None else np.atleast_2d(query_vector)
        return self.route_many([query], query_vectors=vectors)[0]

    @abstractmethod
    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]: ...


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature`` (numerically stable)."""
    z = np.atleast_2d(np.asarray(scores, dtype=np.float64)) / max(temperature, 1e-9)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, targets: np.ndarray, grid: Sequence[float] | None = None) -> float:
    """Temperature minimising the negative log-likelihood of ``targets`` (class indices).

    A one-parameter calibration (temperature scaling): it keeps the ranking of
    routes and makes the probabilities honest on the given data.
    """
    grid = grid if grid is not None else np.geomspace(1e-3, 10.0, 120)
    rows = np.arange(len(targets))
    best, best_nll = 1.0, np.inf
    for t in grid:
        p = softmax(scores, float(t))[rows, targets]
        nll = -np.mean(np.log(np.clip(p, 1e-12, None)))
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def decision_from_probs(
    labels: Sequence[str],
    probs: np.ndarray,
    *,
    decided_by: str,
    signals: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
) -> Decision:
    """A decision whose ``chosen`` is the most probable label (selection happens later)."""
    routes = {label: round(float(p), 6) for label, p in zip(labels, probs)}
    best = max(routes, key=lambda label: routes[label])
    return Decision(
        chosen=[best],
        routes=routes,
        signals=dict(signals or {}),
        decided_by=decided_by,
        trace=[
            TraceStep("router", {"router": decided_by, "best": best, "p": routes[best], **(detail or {})})
        ],
    )


def select_routes(probs: Mapping[str, float], *, threshold: float = 0.25, max_routes: int = 3) -> list[str]:
    """Routes to query: every route with probability >= ``threshold`` (at most ``max_routes``).

    The most probable route is always chosen. If it is ``none``, no source is
    queried; otherwise ``none`` is dropped from the selection.
    """
    if not probs:
        return []
    ranked = sorted(probs, key=lambda label: (-probs[label], label))
    if ranked[0] == NONE_ROUTE:
        return [NONE_ROUTE]
    chosen = [label for label in ranked if label != NONE_ROUTE and probs[label] >= threshold]
    return (chosen or [ranked[0]])[:max_routes]
