"""Route, retrieve, fuse: the query-time pipeline that turns a query into hits plus a decision.

``policy`` (signals and rules from YAML) may decide first; otherwise, or when a
rule defers, the ``router`` gives probabilities over routes. Every route whose
probability passes ``threshold`` (up to ``max_routes``) is queried, and the
lists are fused with the route probabilities as weights. Sources that failed
to open are skipped and named in the decision. The query is embedded at most
once and shared by the policy and the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError, check_query
from ragroute.index.fusion import fuse
from ragroute.route.base import NONE_ROUTE, Router, select_routes
from ragroute.route.sources import Source, SourceProblem
from ragroute.types import Decision, Hit, TraceStep


@dataclass
class RoutedResult:
    """Hits (best first, each remembering its source) and the decision that produced them."""

    hits: list[Hit]
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [h.to_dict() for h in self.hits], "decision": self.decision.to_dict()}


@dataclass
class RoutingOptions:
    """How routes are selected and their results fused."""

    threshold: float = 0.25
    max_routes: int = 3
    fusion: str = "rrf"
    depth: int | None = None  # hits read per route (default: k)
    # "even": every selected route weighs the same in fusion (selection already used the
    # probabilities; measured better on TAT-QA and the demo); "probability": weight by them.
    route_weights: str = "even"


@dataclass
class RoutedRetriever:
    """Routes each query to one or more sources (or none) and fuses what they return."""

    sources: Sequence[Source]
    router: Router | None = None
    policy: Any = None  # ragroute.route.Policy; typed loosely to keep YAML support optional
    encoder: Any = None
    options: RoutingOptions = field(default_factory=RoutingOptions)
    problems: Sequence[SourceProblem] = ()

    def __post_init__(self) -> None:
        self._by_name = {s.name: s for s in self.sources}
        if self.router is None and self.policy is None:
            raise RagrouteError("a routed retriever needs a router, a policy, or both")

    @property
    def route_names(self) -> list[str]:
        return [*self._by_name, NONE_ROUTE]

    def retrieve(self, query: str, k: int = 10) -> RoutedResult:
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[RoutedResult]:
        texts = [check_query(q) for q in queries]
        vectors = self._embed(texts)
        results = []
        for i, text in enumerate(texts):
            vector = None if vectors is None else vectors[i]
            decision = self.decide(text, vector)
            results.append(RoutedResult(self._retrieve(text, decision, k), decision))
        return results

    def decide(self, query: str, query_vector: np.ndarray | None = None) -> Decision:
        """The routing decision alone (no retrieval): policy first, then the router."""
        trace: list[TraceStep] = []
        signals: dict[str, Any] = {}
        policy_result = None
        if self.policy is not None:
            policy_result = self.policy.evaluate(query, query_vector=query_vector)
            trace.extend(policy_result.trace)
            signals["policy"] = policy_result.to_dict()
            if policy_result.action in ("route", "none"):
                routes = policy_result.routes if policy_result.action == "route" else [NONE_ROUTE]
                probs = {name: 1.0 / len(routes) for name in routes}
                return self._finish(probs, f"rule:{policy_result.decided_by}", signals, trace)
        if self.router is None:
            return self._finish({NONE_ROUTE: 1.0}, "policy:no-router", signals, trace)
        routed = self.router.route(query, query_vector=query_vector)
        trace.extend(routed.trace)
        signals.update(routed.signals)
        probs = dict(routed.routes)
        if policy_result is not None and (policy_result.boosts or policy_result.blocks):
            probs = _renormalise(policy_result.apply(probs))
            trace.append(
                TraceStep(
                    "policy-adjust",
                    {"boosts": policy_result.boosts, "blocks": policy_result.blocks, "routes": probs},
                )
            )
        return self._finish(probs, routed.decided_by, signals, trace)

    def _finish(self, probs: dict[str, float], decided_by: str, signals: dict, trace: list) -> Decision:
        chosen = select_routes(probs, threshold=self.options.threshold, max_routes=self.options.max_routes)
        unavailable = [name for name in chosen if name != NONE_ROUTE and name not in self._by_name]
        if unavailable:
            problems = {p.name: p.error for p in self.problems}
            trace.append(
                TraceStep("skip", {"sources": {n: problems.get(n, "unknown source") for n in unavailable}})
            )
            chosen = [name for name in chosen if name not in unavailable]
        trace.append(
            TraceStep(
                "select",
                {
                    "threshold": self.options.threshold,
                    "max_routes": self.options.max_routes,
                    "chosen": chosen,
                },
            )
        )
        if self.problems:
            signals["unavailable_sources"] = {p.name: p.error for p in self.problems}
        return Decision(chosen=chosen, routes=probs, signals=signals, trace=trace, decided_by=decided_by)

    def _retrieve(self, query: str, decision: Decision, k: int) -> list[Hit]:
        names = [name for name in decision.chosen if name != NONE_ROUTE]
        if not names:
            decision.trace.append(TraceStep("retrieve", {"sources": [], "reason": "no retrieval"}))
            return []
        depth = max(k, self.options.depth or k)
        per_route = {name: self._by_name[name].search_many([query], depth)[0] for name in names}
        for name, hits in per_route.items():
            for hit in hits:
                hit.explain = {**hit.explain, "route_probability": decision.routes.get(name, 0.0)}
            decision.trace.append(
                TraceStep(
                    "retrieve",
                    {"source": name, "hits": len(hits), "top_score": hits[0].score if hits else None},
                )
            )
        if len(per_route) == 1:
            return per_route[names[0]][:k]
        if self.options.route_weights == "probability":
            weights = {name: decision.routes.get(name, 0.0) for name in names}
        else:
            weights = dict.fromkeys(names, 1.0)
        fused = fuse(per_route, method=self.options.fusion, weights=weights, limit=k)
        decision.trace.append(TraceStep("fuse", {"method": self.options.fusion, "weights": weights}))
        return fused

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        if self.encoder is None:
            return None
        return self.encoder.encode_queries(texts, show_progress=False)


def _renormalise(scores: dict[str, float]) -> dict[str, float]:
    clipped = {name: max(score, 0.0) for name, score in scores.items()}
    total = sum(clipped.values())
    if total <= 0:
        return {NONE_ROUTE: 1.0}
    return {name: score / total for name, score in clipped.items()}
