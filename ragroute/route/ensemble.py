"""Ensembles of routers, combined by confidence.

Trained routers are sharp in-domain and brittle out of domain; training-free
ones are the opposite (UniversalRAG found a confidence ensemble the most robust).
Each member's distribution is weighted by its confidence (its top probability,
raised to ``sharpness``) and the weighted average is renormalised; routes a
member does not know get probability 0 from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError
from ragroute.route.base import BaseRouter, Router, decision_from_probs, route_contexts
from ragroute.types import Decision


class EnsembleRouter(BaseRouter):
    """Confidence-weighted average of several routers' probabilities."""

    name = "ensemble"

    def __init__(
        self, routers: Sequence[Router], *, weights: Sequence[float] | None = None, sharpness: float = 2.0
    ):
        if not routers:
            raise RagrouteError("an ensemble needs at least one router")
        self.routers = list(routers)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.routers)
        self.sharpness = sharpness
        self.labels = list(dict.fromkeys(label for r in self.routers for label in r.labels))

    def route_many(
        self, queries: Sequence[str], *, query_vectors: np.ndarray | None = None
    ) -> list[Decision]:
        return self._combine(
            len(queries), [r.route_many(queries, query_vectors=query_vectors) for r in self.routers]
        )

    def route_contexts(self, contexts: Sequence[Any]) -> list[Decision]:
        return self._combine(len(contexts), [route_contexts(r, contexts) for r in self.routers])

    def _combine(self, n: int, per_router: list[list[Decision]]) -> list[Decision]:
        position = {label: j for j, label in enumerate(self.labels)}
        out = []
        for i in range(n):
            members = [decisions[i] for decisions in per_router]
            member_probs = np.zeros((len(members), len(self.labels)))
            for m, decision in enumerate(members):
                for label, p in decision.routes.items():
                    member_probs[m, position[label]] = p
            confidence = member_probs.max(axis=1)
            member_weights = np.asarray(self.weights) * confidence**self.sharpness
            combined = member_weights @ member_probs
            total = combined.sum()
            probs = combined / total if total > 0 else np.full(len(self.labels), 1 / len(self.labels))
            decision = decision_from_probs(
                self.labels,
                probs,
                decided_by=self.name,
                signals={
                    "members": {r.name: d.routes for r, d in zip(self.routers, members)},
                    "weights": {r.name: round(float(w), 4) for r, w in zip(self.routers, member_weights)},
                },
            )
            decision.trace = [step for d in members for step in d.trace] + decision.trace
            out.append(decision)
        return out
