"""Ensembles of routers, combined by confidence.

Trained routers are sharp in-domain and brittle out of domain; training-free
ones are the opposite (UniversalRAG found a confidence ensemble the most robust).
Each member's distribution is weighted by its confidence (its top probability,
raised to ``sharpness``) and the weighted average is renormalised; routes a
member does not know get probability 0 from it.

With ``early_exit`` (default :data:`EARLY_EXIT`), a query whose first member is already sure (its
top probability at least that; a first member weighted 0 never is) is decided by the first member
alone: the other members are not run for it (the cheaper router listed first saves the costlier
ones' work), and its signals say so (``early_exit``, ``skipped``). On the Glasgow dev queries the
default ensemble's first member, the prototype router, is that sure of 55% of them, and the whole
ensemble routed all but one of those alike (docs/benchmarks.md, "The ensemble's early exit").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from ragroute.errors import InvalidArgumentError, RagrouteError, check_batch
from ragroute.route.base import BaseRouter, Router, decision_from_probs, route_contexts
from ragroute.types import Decision

#: the first member's top probability from which the others are not consulted (None: always)
EARLY_EXIT: float | None = 0.9


class EnsembleRouter(BaseRouter):
    """Confidence-weighted average of several routers' probabilities."""

    name = "ensemble"

    def __init__(
        self,
        routers: Sequence[Router],
        *,
        weights: Sequence[float] | None = None,
        sharpness: float = 2.0,
        early_exit: float | None = EARLY_EXIT,
    ):
        routers = check_batch(routers, "an ensemble's routers")
        if not routers:
            raise RagrouteError("an ensemble needs at least one router")
        odd = next((r for r in routers if not (hasattr(r, "route_many") and hasattr(r, "labels"))), None)
        if odd is not None:
            raise RagrouteError(f"an ensemble's members must be routers, got {type(odd).__name__}")
        self.routers = list(routers)
        self.weights = _member_weights(weights, len(self.routers))
        if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)) or not sharpness >= 0:
            raise RagrouteError(f"an ensemble's sharpness must be a number >= 0, got {sharpness!r}")
        self.sharpness = float(sharpness)
        if early_exit is not None and (
            isinstance(early_exit, bool)
            or not isinstance(early_exit, (int, float))
            or not 0 < early_exit <= 1
        ):
            raise RagrouteError(
                f"an ensemble's early_exit must be a number in (0, 1] or None, got {early_exit!r}"
            )
        self.early_exit = None if early_exit is None else float(early_exit)
        self.labels = list(dict.fromkeys(label for r in self.routers for label in r.labels))
        self.member_names = _member_names(self.routers)

    def restricted_to(self, labels: Collection[str]) -> EnsembleRouter | None:
        """The ensemble with each member that spends one choice per query restricted to ``labels``
        (see :meth:`BaseRouter.restricted_to`); None when no member needs it."""
        restricted = [
            restrict(labels) if (restrict := getattr(r, "restricted_to", None)) else None
            for r in self.routers
        ]
        if all(r is None for r in restricted):
            return None
        members = [new if new is not None else old for new, old in zip(restricted, self.routers)]
        return EnsembleRouter(
            members, weights=self.weights, sharpness=self.sharpness, early_exit=self.early_exit
        )

    def describe(self) -> dict[str, Any]:
        """The members (each one's own ``describe()`` where it has one), weights, sharpness and early exit."""
        return {
            "kind": self.name,
            "members": [
                r.describe() if hasattr(r, "describe") else {"kind": getattr(r, "name", type(r).__name__)}
                for r in self.routers
            ],
            "weights": list(self.weights),
            "sharpness": self.sharpness,
            "early_exit": self.early_exit,
        }

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        """One decision per query: the members' route probabilities, weighted and combined.
        ``query_vectors`` are handed to every member: members of different encoders refuse them
        (route query contexts instead, which are encoded once per encoder)."""
        if query_vectors is not None and len(keys := _encoder_keys(self)) > 1:
            # until session 49 each member read the one vector set, whichever encoder made it
            raise InvalidArgumentError(
                "an ensemble whose members use different encoders "
                f"({', '.join(sorted(keys))}) cannot take one set of query_vectors: route query "
                "contexts (route_contexts), or give no vectors"
            )

        def run(router: Router, rows: list[int] | None) -> list[Decision]:
            if rows is None:
                return router.route_many(queries, query_vectors=query_vectors)
            vectors = None if query_vectors is None else np.asarray(query_vectors)[rows]
            return router.route_many([queries[i] for i in rows], query_vectors=vectors)

        return self._route(len(queries), run)

    def route_contexts(self, contexts: Sequence[Any]) -> list[Decision]:
        def run(router: Router, rows: list[int] | None) -> list[Decision]:
            return route_contexts(router, contexts if rows is None else [contexts[i] for i in rows])

        return self._route(len(contexts), run)

    def _route(self, n: int, run: Callable[[Router, list[int] | None], list[Decision]]) -> list[Decision]:
        """Every member's decisions (``run(member, rows)``: for the queries at ``rows``, None: all),
        combined; with ``early_exit``, the members after the first run only for the queries the
        first is not sure of."""
        first = run(self.routers[0], None)
        # a first member weighted 0 cannot decide alone (it would give every route the same share)
        if self.early_exit is None or self.weights[0] <= 0:
            return self._combine(n, [first, *(run(r, None) for r in self.routers[1:])])
        threshold = self.early_exit
        unsure = [i for i, d in enumerate(first) if not max(d.routes.values(), default=0.0) >= threshold]
        per_router: list[list[Decision | None]] = [list(first)]
        for router in self.routers[1:]:
            column: list[Decision | None] = [None] * n
            if unsure:
                for i, decision in zip(unsure, run(router, unsure)):
                    column[i] = decision
            per_router.append(column)
        return self._combine(n, per_router)

    def _combine(self, n: int, per_router: Sequence[Sequence[Decision | None]]) -> list[Decision]:
        # a handful of members over a handful of routes: plain Python beats numpy's per-call cost
        labels = self.labels
        out = []
        for i in range(n):
            # a member left out by the early exit (None) has no say in this query's decision
            ran = [
                (name, w, column[i])
                for name, w, column in zip(self.member_names, self.weights, per_router)
                if column[i] is not None
            ]
            names = [name for name, _, _ in ran]
            members = [d for _, _, d in ran if d is not None]
            rows = [[d.routes.get(label, 0.0) for label in labels] for d in members]
            member_weights = [
                weight * max(row, default=0.0) ** self.sharpness for (_, weight, _), row in zip(ran, rows)
            ]
            combined = [sum(w * row[j] for w, row in zip(member_weights, rows)) for j in range(len(labels))]
            total = sum(combined)
            probs = [p / total for p in combined] if total > 0 else [1 / len(labels)] * len(labels)
            decision = decision_from_probs(
                labels,
                probs,
                decided_by=self.name,
                signals={
                    "members": dict(zip(names, (d.routes for d in members))),
                    "weights": {name: round(w, 4) for name, w in zip(names, member_weights)},
                    # what each member read (similarities, score z, logit margins), not only its routes
                    "member_signals": dict(zip(names, (d.signals for d in members))),
                    **self._exit_signals(len(names)),
                },
                log_routes=(
                    functools.partial(_log_mixture, labels, members, member_weights) if total > 0 else None
                ),
            )
            decision.trace = [step for d in members for step in d.trace] + decision.trace
            out.append(decision)
        return out

    def _exit_signals(self, ran: int) -> dict[str, Any]:
        """``early_exit`` (the threshold) and ``skipped`` (the members not run) for a query the first
        member decided alone (``ran``: how many members ran); nothing when every member ran."""
        if ran == len(self.routers):
            return {}
        return {"early_exit": self.early_exit, "skipped": self.member_names[ran:]}


def _encoder_keys(router: Any) -> set[str]:
    """The encoders (by :func:`~ragroute.context.encoder_key`) whose query vectors ``router`` and,
    for an ensemble, its members (nested ensembles too) read."""
    from ragroute.context import encoder_key

    encoder = getattr(router, "encoder", None)
    keys = {encoder_key(encoder)} if encoder is not None else set()
    for member in getattr(router, "routers", ()) if isinstance(router, EnsembleRouter) else ():
        keys |= _encoder_keys(member)
    return keys


def _member_names(routers: Sequence[Router]) -> list[str]:
    """Each member's name as its decisions' signals show it: its ``name``, with ``#2``, ``#3``, ...
    after the second and later members of one name (two trained routers, ``members: [knn, knn]``):
    keyed by name alone, the later member's routes, weight and signals replaced the earlier's."""
    names: list[str] = []
    for router in routers:
        name = shown = str(getattr(router, "name", type(router).__name__))
        count = 1
        while shown in names:
            count += 1
            shown = f"{name}#{count}"
        names.append(shown)
    return names


def _log_mixture(
    labels: Sequence[str], members: Sequence[Decision], weights: Sequence[float]
) -> dict[str, float]:
    """The log of the weighted mixture of the members' probabilities, from each member's unrounded
    :meth:`~ragroute.types.Decision.log_routes` where it has them (its rounded routes otherwise),
    normalised over ``labels``: a caller whose visible routes all round to 0 beside a hidden winner
    still gets their order."""
    logs = [decision.log_routes() if weight > 0 else {} for decision, weight in zip(members, weights)]
    columns = []
    for label in labels:
        terms = []
        for decision, member_logs, weight in zip(members, logs, weights):
            if weight <= 0:
                continue
            logged = member_logs.get(label)
            if logged is None:
                p = decision.routes.get(label, 0.0)
                logged = math.log(p) if p > 0 else -math.inf
            terms.append(math.log(weight) + logged)
        columns.append(_logsumexp(terms))
    total = _logsumexp(columns)
    return {label: c - total if math.isfinite(total) else -math.inf for label, c in zip(labels, columns)}


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values, default=-math.inf)
    if not math.isfinite(top):
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _member_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """One finite, non-negative weight per member, not all 0 (default: 1 each). Until session 37 a
    short list dropped the members past its end (``zip``) and a negative or NaN weight made every
    decision uniform."""
    if weights is None:
        return [1.0] * n
    values = check_batch(weights, "an ensemble's weights")
    numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in values)
    ok = numbers and all(math.isfinite(w) and w >= 0 for w in values)
    if len(values) != n or not ok or not any(values):
        raise RagrouteError(
            f"an ensemble needs one finite weight >= 0 per member ({n}), not all 0; got {list(values)!r}"
        )
    return [float(w) for w in values]
