"""The router protocol, and the helpers every router shares (calibration, route selection).

A router maps a query to a :class:`~ragroute.types.Decision` whose ``routes``
are probabilities over its labels (source names, plus ``"none"`` = answer
without retrieval, when the router knows that route), with the scores and
signals behind them. Which routes are then queried is decided by
:func:`select_routes` (a probability threshold and a maximum number of routes),
so every router can hedge across sources it cannot tell apart.
"""

from __future__ import annotations

import functools
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragroute.errors import CalibrationWarning, check_batch, check_query, check_query_vectors
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
    """Implements ``route`` through the batched ``route_many``, and ``route_contexts`` for the pipeline.

    ``encoder`` (when the router embeds queries) lets the pipeline hand it the
    query contexts' cached vectors instead of encoding again. Every subclass's ``route_many``
    refuses a bare string (which it would route as one query per character) with
    :class:`~ragroute.errors.InvalidArgumentError`, and gets its queries as a list.
    """

    name: str = "router"
    labels: list[str]
    encoder: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        implemented = cls.__dict__.get("route_many")
        if implemented is not None and not getattr(implemented, "__isabstractmethod__", False):
            cls.route_many = _checked_batch(implemented)  # type: ignore[method-assign]

    def route_contexts(self, contexts: Sequence[Any]) -> list[Decision]:
        """Route a batch of :class:`~ragroute.context.QueryContext` s (vectors from the contexts)."""
        return _route_with_context_vectors(self, contexts)

    def restricted_to(self, labels: Collection[str]) -> Router | None:
        """A router that chooses among ``labels`` only (``none`` kept when known), or None.

        The pipeline asks for it when a caller may not read some sources. None (the default)
        says the router's probabilities are per route, so dropping the hidden routes and
        renormalising the rest is what it would have answered. A router that spends one choice
        per query (the LLM router) returns a copy that never offers the hidden routes, since
        a choice spent on one would leave the visible routes tied.
        """
        return None

    def route(self, query: str, *, query_vector: np.ndarray | None = None) -> Decision:
        vectors = None if query_vector is None else np.atleast_2d(query_vector)
        return self.route_many([query], query_vectors=vectors)[0]

    @abstractmethod
    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        """One :class:`~ragroute.types.Decision` per query; ``query_vectors``: their embeddings,
        one row per query, where the caller computed them already."""


def _checked_batch(route_many: Any) -> Any:
    """``route_many`` with its queries checked first: the batch by :func:`~ragroute.errors.check_batch`,
    each text by :func:`~ragroute.errors.check_query` (an empty one was routed), and the
    ``query_vectors`` by :func:`check_query_vectors`."""
    if getattr(route_many, "checks_batch", False):
        return route_many

    @functools.wraps(route_many)
    def checked(self: Any, queries: Sequence[str], *args: Any, **kwargs: Any) -> list[Decision]:
        texts, vectors = checked_queries(self, queries, kwargs.get("query_vectors"))
        if vectors is not None:
            kwargs["query_vectors"] = vectors
        return route_many(self, texts, *args, **kwargs)

    checked.checks_batch = True  # type: ignore[attr-defined]
    return checked


def checked_queries(router: Any, queries: Any, query_vectors: Any = None) -> tuple[list[Any], Any]:
    """A router's queries and query vectors, checked: a list (not a string, one query per letter),
    each text searchable (query contexts pass as they are), the vectors one finite row per query of
    the router's encoder's dimension (:func:`~ragroute.errors.check_query_vectors`)."""
    texts = [q if hasattr(q, "text") else check_query(q) for q in check_batch(queries)]
    if query_vectors is not None:
        query_vectors = check_query_vectors(query_vectors, len(texts), getattr(router, "encoder", None))
    return texts, query_vectors


def route_contexts(router: Any, contexts: Sequence[Any]) -> list[Decision]:
    """Route a batch of query contexts with any router: through its own ``route_contexts`` if it
    has one, else ``route_many`` with the contexts' cached vectors for the router's ``encoder``."""
    if hasattr(router, "route_contexts"):
        return router.route_contexts(list(contexts))
    return _route_with_context_vectors(router, contexts)


def router_for(router: Any, hidden: Collection[str]) -> Any:
    """``router`` for callers who may not read the sources ``hidden``: restricted to the other
    routes where it offers that (:meth:`BaseRouter.restricted_to`: an LLM router's prompt then
    names no hidden source), else ``router`` itself (its hidden routes are dropped after it
    answers)."""
    restrict = getattr(router, "restricted_to", None) if hidden else None
    if restrict is None:
        return router
    restricted = restrict([label for label in router.labels if label not in hidden])
    return restricted if restricted is not None else router


def _route_with_context_vectors(router: Any, contexts: Sequence[Any]) -> list[Decision]:
    """``route_many`` with the contexts' cached vectors for the router's ``encoder`` (if it has one)."""
    from ragroute.context import query_vectors

    encoder = getattr(router, "encoder", None)
    vectors = query_vectors(contexts, encoder) if encoder is not None else None
    return router.route_many([c.text for c in contexts], query_vectors=vectors)


def moved_by_a_quarter(now: int, then: int) -> bool:
    """Whether a source's number of documents moved by more than a quarter from ``then`` (any move
    from none): when routers that learned from its documents sample or calibrate again."""
    return abs(now - then) > max(then, 1) // 4


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature`` (numerically stable)."""
    z = np.atleast_2d(np.asarray(scores, dtype=np.float64)) / max(temperature, 1e-9)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise log of :func:`softmax` (finite where the probability underflows to 0)."""
    z = np.atleast_2d(np.asarray(scores, dtype=np.float64)) / max(temperature, 1e-9)
    z = z - z.max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def log_routes_of(
    labels: Sequence[str], scores: np.ndarray, temperature: float = 1.0
) -> Callable[[], dict[str, float]]:
    """What computes a decision's :meth:`~ragroute.types.Decision.log_routes` from one row of the
    ``scores`` its probabilities are ``softmax(scores, temperature)`` of: on demand, so routing
    pays for the logs only when a caller's hidden sources need them."""
    return functools.partial(_log_routes, tuple(labels), np.asarray(scores), temperature)


def _log_routes(labels: Sequence[str], scores: np.ndarray, temperature: float) -> dict[str, float]:
    return dict(zip(labels, log_softmax(scores, temperature)[0].tolist()))


def fit_temperature(
    scores: np.ndarray,
    targets: np.ndarray,
    grid: Sequence[float] | np.ndarray | None = None,
    *,
    warn: bool = True,
) -> float:
    """Temperature minimising the negative log-likelihood of ``targets`` (class indices).

    A one-parameter calibration (temperature scaling): it keeps the ranking of
    routes and makes the probabilities honest on the given data.

    A fit at an end of ``grid`` is a :class:`~ragroute.errors.CalibrationWarning`: at the lowest
    value the data separate the routes perfectly and every later query reads as certain. ``warn``
    off for a fit whose value is thrown away (an out-of-fold search's inner fits).
    """
    candidates = [float(t) for t in (grid if grid is not None else np.geomspace(1e-3, 10.0, 120))]
    rows = np.arange(len(targets))
    best, best_nll = 1.0, np.inf
    for t in candidates:
        p = softmax(scores, t)[rows, targets]
        nll = -np.mean(np.log(np.clip(p, 1e-12, None)))
        if nll < best_nll:
            best, best_nll = t, nll
    if warn and len(candidates) > 1 and best in (min(candidates), max(candidates)):
        lowest = best == min(candidates)
        warnings.warn(_edge_message(best, lowest=lowest, n=len(targets)), CalibrationWarning, stacklevel=2)
    return best


def _edge_message(temperature: float, *, lowest: bool, n: int) -> str:
    if lowest:
        return (
            f"routing temperature fitted at the lowest value tried ({temperature:g}): the {n} calibration "
            "queries separate the routes perfectly, so every query will read as certain of its route (one "
            "from no source too); calibrate on more or harder queries for probabilities that hedge"
        )
    return (
        f"routing temperature fitted at the highest value tried ({temperature:g}): the scores barely tell "
        f"the routes apart on the {n} calibration queries, so every query is split near evenly"
    )


def top_route(probs: Mapping[str, float]) -> str:
    """The most probable route; a tie goes to the label first in sorted order, as
    :func:`select_routes` ranks them (so a decision, its selection and a benchmark's "best" agree)."""
    return min(probs, key=lambda label: (-probs[label], label))


def decision_from_probs(
    labels: Sequence[str],
    probs: np.ndarray | Sequence[float],
    *,
    decided_by: str,
    signals: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
    log_routes: Callable[[], dict[str, float]] | None = None,
) -> Decision:
    """A decision whose ``chosen`` is the most probable label (selection happens later);
    ``log_routes`` computes its unrounded log-probabilities on demand (:func:`log_routes_of`)."""
    values = probs.tolist() if isinstance(probs, np.ndarray) else [float(p) for p in probs]
    routes = {label: round(p, 6) for label, p in zip(labels, values)}
    best = top_route(routes)
    decision = Decision(
        chosen=[best],
        routes=routes,
        signals=dict(signals or {}),
        decided_by=decided_by,
        trace=[
            TraceStep("router", {"router": decided_by, "best": best, "p": routes[best], **(detail or {})})
        ],
    )
    decision.log_routes_of = log_routes
    return decision


def select_routes(
    probs: Mapping[str, float],
    *,
    threshold: float = 0.25,
    max_routes: int = 3,
    hedge_below: float | None = None,
) -> list[str]:
    """Routes to query: every route with probability >= ``threshold`` (at most ``max_routes``).

    The most probable route is always chosen. If it is ``none``, no source is
    queried; otherwise ``none`` is dropped from the selection. When the best
    route's probability is at least ``hedge_below``, it is queried alone.
    """
    if not probs:
        return []
    ranked = sorted(probs, key=lambda label: (-probs[label], label))
    if ranked[0] == NONE_ROUTE:
        return [NONE_ROUTE]
    if hedge_below is not None and probs[ranked[0]] >= hedge_below:
        return [ranked[0]]
    chosen = [label for label in ranked if label != NONE_ROUTE and probs[label] >= threshold]
    return (chosen or [ranked[0]])[:max_routes]
