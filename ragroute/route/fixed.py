"""A router that always picks the same routes, with equal probability.

Useful on its own (a pipeline that always fuses the same sources, e.g. every
expert) and as a baseline: dataset-level expert routing is a fixed route per
collection, chosen on training queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragroute.errors import RagrouteError
from ragroute.route.base import BaseRouter, decision_from_probs


class FixedRoutes(BaseRouter):
    """Every query gets the same ``routes``, each with probability ``1 / len(routes)``."""

    name = "fixed"

    def __init__(self, routes: Sequence[str]) -> None:
        self.labels = list(dict.fromkeys(str(r) for r in routes))
        if not self.labels:
            raise RagrouteError("a fixed router needs at least one route")

    @property
    def selection_defaults(self) -> dict[str, Any]:
        """Query every fixed route (unless the settings say otherwise)."""
        return {"threshold": 0.0, "max_routes": len(self.labels)}

    def route_many(self, queries: Sequence[str], *, query_vectors: Any = None) -> list:
        share = 1.0 / len(self.labels)
        return [
            decision_from_probs(self.labels, [share] * len(self.labels), decided_by=self.name)
            for _ in queries
        ]
