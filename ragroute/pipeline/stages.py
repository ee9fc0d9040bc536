"""The stages of the query pipeline: gate -> route -> retrieve -> fuse -> rerank.

Each stage is a small class with one job that reads a batch of
:class:`~ragroute.context.QueryContext` s and appends what it did to each
query's :class:`~ragroute.types.Decision` trace. The protocols a user implements
to plug in their own parts are :class:`Gate` and :class:`Reranker` (routers
follow :class:`ragroute.route.base.Router`; fusion methods are functions in
:data:`ragroute.registry.FUSIONS`).
"""

from __future__ import annotations

import contextvars
import functools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Protocol, runtime_checkable

from ragroute.context import QueryContext, query_vectors
from ragroute.cpus import usable_cpus
from ragroute.display import counted
from ragroute.errors import (
    InvalidArgumentError,
    RagrouteError,
    accepts_missing,
    check_filter_keys,
    check_k,
    check_setting,
    error_summary,
)
from ragroute.index.base import carried_keys, content_key, filter_groups
from ragroute.index.docstore import FIELD_KEYS
from ragroute.index.fusion import auto_method, document_key, first_per_document
from ragroute.index.hybrid import FusionParams
from ragroute.pipeline.score_scale import ScoreScale, fit_score_scales, rescored
from ragroute.registry import FUSIONS
from ragroute.route.base import (
    NONE_ROUTE,
    moved_by_a_quarter,
    route_contexts,
    router_for,
    select_routes,
)
from ragroute.route.sources import Source, SourceProblem
from ragroute.scopes import ACCESS_KEY, REDACTED, labels_of, redact, visible
from ragroute.types import Decision, Hit, TraceStep

# Sources over the same documents (an expert set's experts) are read this deep when fused, as the
# hybrid index reads its BM25 and dense lists: a document 11th in two lists still gathers both votes
# (bench experts: +1.5 points at 100 against 10 for the specialist + generalists, docs/experts.md).
SHARED_DOCUMENTS_DEPTH = FusionParams().candidates

# --------------------------------------------------------------------------- protocols


@dataclass
class GateDecision:
    """What a gate decided for one query: ``retrieve``, ``answer`` (from the model) or ``stop``.

    ``probability`` is the calibrated probability that retrieval is needed;
    ``depth`` (optional) asks for that many hits instead of the caller's ``k``;
    ``steps`` (optional) how many retrieval steps a multi-step caller should plan
    (1: shallow, more: deep); ``reason`` says in words why (it appears in the trace).
    """

    action: str
    probability: float
    signals: dict[str, Any] = field(default_factory=dict)
    depth: int | None = None
    steps: int | None = None
    reason: str = ""


@runtime_checkable
class Gate(Protocol):
    """Decides, before routing, whether a query needs retrieval at all."""

    name: str

    def gate_many(self, contexts: Sequence[QueryContext]) -> list[GateDecision]: ...


@runtime_checkable
class Reranker(Protocol):
    """Re-orders (and may cut) the fused hits of one query; records its scores in ``Hit.explain``.
    The pipeline keeps the first ``k`` hits it returns."""

    name: str

    def rerank(self, context: QueryContext, hits: list[Hit], k: int) -> list[Hit]: ...


@dataclass
class RoutingOptions:
    """How routes are selected and their results fused.

    A route is queried when its probability is at least ``threshold`` (at most
    ``max_routes``; the best route always). ``hedge_below``: when the best route's
    probability reaches it, only the best route is queried (hedging costs nothing
    when the router is sure). ``fusion`` names a registered fusion method;
    ``route_weights`` is ``even`` or ``probability`` (weight each route's list by
    its probability; ``calibrated`` fusion, what the default ``auto`` runs for sources with
    documents of their own, uses the probabilities itself; ``auto`` runs ``rrf`` for lists
    over the same documents); ``depth`` is the number of hits read per route (default k, or
    :data:`SHARED_DOCUMENTS_DEPTH` when a query fuses sources over the same
    documents, such as an expert set's experts); ``always``
    names routes queried on top of the selection for every query that retrieves
    (e.g. generalist experts beside the specialist a router picks). ``scores``: what a hit's
    score is: ``similarity`` (default), the deployment encoder's cosine similarity or a source's
    score mapped onto that scale (:mod:`ragroute.pipeline.score_scale`; the same meaning on
    every source and for one route or several, so cutoffs transfer), or ``fusion``, the fusion
    method's own value (the source's own score when one route answers).

    The defaults were chosen on Glasgow dev (cross-validated routers, dense and
    hybrid sources): calibrated fusion never scored below querying the top route
    alone for any router, for thresholds 0.1-0.3 and 2-3 routes (docs/benchmarks.md).
    """

    threshold: float = 0.25
    max_routes: int = 3
    fusion: str = "auto"
    depth: int | None = None
    route_weights: str = "even"
    hedge_below: float | None = None
    always: tuple[str, ...] = ()
    scores: str = "similarity"

    def __post_init__(self) -> None:
        # as a routing config's router: mapping is checked (pipeline.build.routing_options): until
        # session 44 RoutingOptions(max_routes=0) built a pipeline that never retrieved anything, and
        # a threshold of nan or -1 was taken as given
        for key, kind in SELECTION_TYPES.items():
            if key != "always":
                check_setting(
                    getattr(self, key),
                    kind,
                    "RoutingOptions",
                    key,
                    minimum=SELECTION_MINIMA.get(key),
                    maximum=SELECTION_MAXIMA.get(key),
                    optional=key in ("depth", "hedge_below"),
                )
        check_selection_words({"route_weights": self.route_weights, "scores": self.scores}, "RoutingOptions")
        self.always = check_always(self.always, "RoutingOptions")


#: the type of each selection key of a ``router:`` mapping and :class:`RoutingOptions` (the others
#: are strings), and their ranges
SELECTION_TYPES = {
    "threshold": "number",
    "hedge_below": "number",
    "max_routes": "integer",
    "depth": "integer",
    "always": "strings",
}
SELECTION_MINIMA = {"max_routes": 1, "depth": 1, "threshold": 0, "hedge_below": 0}
SELECTION_MAXIMA = {"threshold": 1, "hedge_below": 1}  # route probabilities
#: the selection keys that take one of a few words
SELECTION_CHOICES = {"route_weights": ("even", "probability"), "scores": ("similarity", "fusion")}


def check_selection_words(values: Mapping[str, Any], where: str) -> None:
    """A one-line :class:`~ragroute.errors.RagrouteError` when ``route_weights`` or ``scores`` in
    ``values`` is none of its words (a misspelt one was read as the other word: even weights,
    fusion scores)."""
    for key, choices in SELECTION_CHOICES.items():
        if key in values and values[key] not in choices:
            words = " or ".join(repr(word) for word in choices)
            raise RagrouteError(f"{where}: {key} must be {words}, not {values[key]!r}")


def check_always(always: Any, where: str) -> tuple[str, ...]:
    """``always`` as a tuple of source names, each once, else a one-line
    :class:`~ragroute.errors.RagrouteError` (a string was read one letter per source, a number as a
    source of that name: routed nowhere). A name listed twice was chosen twice until session 56:
    searched twice per query, and named twice in the trace's ``chosen``."""
    if not isinstance(always, (list, tuple)) or not all(isinstance(name, str) for name in always):
        raise RagrouteError(f"{where}: 'always' must be a list of source names")
    return tuple(dict.fromkeys(always))


# --------------------------------------------------------------------------- stages


GATE_ACTIONS = ("retrieve", "answer", "stop")

_GATE_ROUTER: contextvars.ContextVar[Any] = contextvars.ContextVar("ragroute_gate_router", default=None)


def gate_router() -> Any:
    """The router of the pipeline (or step-wise controller) whose gate is deciding now, ``None``
    outside one: what a gate's ``retrieval`` signal given no router of its own reads."""
    return _GATE_ROUTER.get()


def gate_decisions(gate: Gate, contexts: Sequence[QueryContext], router: Any = None) -> list[GateDecision]:
    """``gate``'s decisions, checked: one :class:`GateDecision` per query, each a known action (a
    ``retrieve`` one with a ``depth`` that is ``None`` or 0, both meaning the caller's ``k``, or a
    whole number); else ``ValueError`` (the pipeline's gate stage and the step-wise controller then
    retrieve). ``router``: the router of what runs the gate (:func:`gate_router` while it decides;
    until session 52 a pipeline wrote its router into the gate's signals once, and a gate shared by
    two pipelines read the first one's router in the second)."""
    token = _GATE_ROUTER.set(router)
    try:
        decisions = list(gate.gate_many(contexts))
    finally:
        _GATE_ROUTER.reset(token)
    if len(decisions) != len(contexts):
        raise ValueError(f"{len(decisions)} decisions for {len(contexts)} queries")
    for decision in decisions:
        if not isinstance(decision, GateDecision) or decision.action not in GATE_ACTIONS:
            raise ValueError(f"not a decision to {' / '.join(GATE_ACTIONS)}: {decision!r}"[:200])
        depth = decision.depth
        unset = depth is None or (isinstance(depth, Number) and depth == 0)
        if decision.action == "retrieve" and not unset:
            # until session 49 taken as given: 2.5 or -3 asked every source for that many hits, each
            # refused it, and the query silently got none; "4" raised a bare TypeError
            try:
                decision.depth = check_k(depth, "depth")
            except InvalidArgumentError as exc:
                raise ValueError(f"{exc}: {decision!r}"[:200]) from None
    return decisions


class GateStage:
    """Runs the gate; queries it does not send to retrieval get the ``none`` route.

    A gate that raises, or answers with something other than one :class:`GateDecision` per query
    (``retrieve``, ``answer`` or ``stop``), sends every query of the batch to retrieval (the
    safe side, as the step-wise controller does) with the error in the trace, instead of failing
    the queries. ``router``: the router of the pipeline it runs in (:func:`gate_router`)."""

    def __init__(self, gate: Gate, router: Any = None) -> None:
        self.gate = gate
        self.router = router

    def _decide(self, contexts: Sequence[QueryContext]) -> list[GateDecision]:
        return gate_decisions(self.gate, contexts, self.router)

    def run(self, contexts: Sequence[QueryContext]) -> list[GateDecision]:
        start = time.perf_counter()
        try:
            decisions = self._decide(contexts)
        except Exception as exc:  # noqa: BLE001 - a failing gate means: retrieve, recorded
            # each caller's queries on their own: one caller's filter that a source refuses failed
            # every caller's gate, and its error (naming keys only that caller may read) was in every
            # trace (until session 37)
            decisions = by_caller(contexts, self._decide, _gate_failed, exc)
        ms = (time.perf_counter() - start) * 1000 / max(len(contexts), 1)
        for decision in decisions:
            decision.signals = {**decision.signals, "ms": round(ms, 4)}
        return decisions


def by_caller(
    contexts: Sequence[QueryContext],
    call: Callable[[list[QueryContext]], Sequence[Any]],
    failed: Callable[[Exception], Any],
    error: Exception,
) -> list[Any]:
    """After ``call(contexts)`` raised ``error`` for a whole batch: ``call`` again for each group of
    its queries that share filters and scopes (one caller's, as a rule), so a failure one caller
    caused stays that caller's. One entry per query: what its group's call gave, or ``failed(exc)``
    of the exception it raised. A batch of one group is not called again: ``failed(error)`` each."""
    groups = filter_groups(contexts, scoped=True)
    if len(groups) < 2:
        return [failed(error) for _ in contexts]
    out: list[Any] = [None] * len(contexts)
    for positions, group, _filters in groups:
        try:
            found = list(call(group))
        except Exception as exc:  # noqa: BLE001 - this group's failure stays this group's
            found = [failed(exc) for _ in group]
        for position, entry in zip(positions, found):
            out[position] = entry
    return out


def _gate_failed(exc: Exception) -> GateDecision:
    """What a failing gate answers: retrieve (the safe side), with the error in its signals."""
    error = error_summary(exc)
    return GateDecision("retrieve", float("nan"), {"error": error}, reason="gate failed: retrieving")


class RouteStage:
    """Policy rules first, then the router; then the caller's scope; then route selection.

    Sources outside a query's scope (:meth:`hidden`) are removed from the candidate routes
    before selection (the others' probabilities renormalised; nothing left: ``none``), and the
    router's and policy's trace and signals are redacted of their names (:func:`ragroute.scopes.redact`);
    the ``scope`` step records the caller's scopes and how many sources were hidden (a count:
    the caller is not told their names).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        router: Any = None,
        policy: Any = None,
        options: RoutingOptions | None = None,
        problems: Sequence[SourceProblem] = (),
    ) -> None:
        self.router = router
        self.policy = policy
        self.options = options or RoutingOptions()
        self.problems = list(problems)
        self._names = {s.name for s in sources}
        self._access = {p.name: p.access for p in self.problems}
        self._access.update({s.name: s.access for s in sources})
        self._hidden: dict[tuple[str, ...], frozenset[str]] = {}
        self._restricted: dict[frozenset[str], Any] = {}
        self._sources = list(sources)
        self._misses: dict[tuple[Any, ...], frozenset[str]] = {}

    def hidden(self, scopes: Sequence[str]) -> frozenset[str]:
        """Names of the sources (opened or not) a caller holding ``scopes`` may not read."""
        key = tuple(scopes)
        found = self._hidden.get(key)
        if found is None:
            found = frozenset(n for n, labels in self._access.items() if not visible(labels, key))
            if len(self._hidden) >= 4096:  # many distinct callers: start over rather than grow
                self._hidden = {}
            self._hidden[key] = found
        return found

    def filter_misses(self, filters: Mapping[str, Any] | None, scopes: Sequence[str] = ()) -> frozenset[str]:
        """Sources that cannot match ``filters`` for a caller holding ``scopes``: their documents
        are known (a local index: those the caller may read; or the documents a framework source
        lists) and none holds one of the filter's metadata keys (``modality`` and ``parent_id``
        are fields every document has). Read once per set of keys and scopes, and again when a
        source's documents change (:func:`~ragroute.index.base.content_key`)."""
        keys = metadata_filter_keys(filters)
        if not keys:
            return frozenset()
        contents = tuple(content_key(s) for s in self._sources)  # an index that changed: read again
        nullable = frozenset(k for k in keys if accepts_missing((filters or {}).get(k)))
        cache_key = (keys, nullable, tuple(scopes), contents)
        found = self._misses.get(cache_key)
        if found is None:
            found = frozenset(
                s.name for s in self._sources if absent_filter_keys(known_keys(s, scopes), filters)
            )
            if len(self._misses) >= 256:
                self._misses = {}
            self._misses[cache_key] = found
        return found

    def check_filter_keys(self, context: QueryContext) -> None:
        """Refuse, in one line (:func:`ragroute.errors.check_filter_keys`), a query whose filter
        names a key no document of the sources its caller may read carries: it would match nothing
        on any route. Only when every such source can tell (its metadata keys are known:
        :func:`~ragroute.index.base.metadata_keys_of`); a framework's retriever, a source of
        unknown documents or an empty index may hold the key, so then nothing is refused and the
        route stage routes past the sources known to lack it (:meth:`filter_misses`)."""
        if context.filters:
            check_filter_keys(context.filters, self.carried_keys(context.scopes), FIELD_KEYS)

    def carried_keys(self, scopes: Sequence[str] | None = None) -> frozenset[str] | None:
        """The metadata keys of the sources' documents (with ``scopes``: of the sources and
        documents a caller holding them may read, so a refusal names no key of hidden ones);
        ``None`` when one of those sources cannot tell."""
        if scopes is None:
            return carried_keys(self._sources)
        hidden = self.hidden(scopes)
        return carried_keys((s for s in self._sources if s.name not in hidden), scopes)

    def _router_for(self, hidden: frozenset[str]) -> Any:
        """The router for callers who may not read ``hidden``: the router restricted to the other
        routes where it offers that (:meth:`~ragroute.route.base.BaseRouter.restricted_to`), else
        the router itself (its hidden routes are dropped after it answers)."""
        if not hidden or getattr(self.router, "restricted_to", None) is None:
            return self.router
        if hidden not in self._restricted:
            if len(self._restricted) >= 256:
                self._restricted = {}
            self._restricted[hidden] = router_for(self.router, hidden)
        return self._restricted[hidden]

    def scope_step(self, context: QueryContext) -> TraceStep:
        """The trace step that records a query's scope: the caller's scopes, sources hidden (count)."""
        return TraceStep(
            "scope", {"scopes": list(context.scopes), "hidden_sources": len(self.hidden(context.scopes))}
        )

    def run(self, contexts: Sequence[QueryContext]) -> list[Decision]:
        start = time.perf_counter()
        decisions: list[Decision | None] = [None] * len(contexts)
        policy_results: list[Any] = [None] * len(contexts)
        if self.policy is not None:
            vectors = None
            if self.policy.encoder is not None and self.policy.needs_encoder:
                vectors = query_vectors(contexts, self.policy.encoder)
            for i, context in enumerate(contexts):
                result = self.policy.evaluate(
                    context.text, query_vector=None if vectors is None else vectors[i]
                )
                policy_results[i] = result
                if result.action in ("route", "none"):
                    routes = result.routes if result.action == "route" else [NONE_ROUTE]
                    decisions[i] = self._finish(
                        {n: 1.0 / len(routes) for n in routes},
                        f"rule:{result.decided_by}",
                        {"policy": result.to_dict()},
                        list(result.trace),
                        context,
                        ruled=True,
                    )
        pending = [i for i, d in enumerate(decisions) if d is None]
        if pending and self.router is None:
            for i in pending:
                signals = {"policy": policy_results[i].to_dict()} if policy_results[i] is not None else {}
                trace = list(policy_results[i].trace) if policy_results[i] is not None else []
                decisions[i] = self._finish(
                    {NONE_ROUTE: 1.0}, "policy:no-router", signals, trace, contexts[i]
                )
        elif pending:
            by_scope: dict[frozenset[str], list[int]] = {}
            for i in pending:
                by_scope.setdefault(self.hidden(contexts[i].scopes), []).append(i)
            for hidden, rows in by_scope.items():
                routed = route_contexts(self._router_for(hidden), [contexts[i] for i in rows])
                for i, decision in zip(rows, routed):
                    decisions[i] = self._after_router(decision, policy_results[i], contexts[i])
        ms = (time.perf_counter() - start) * 1000 / max(len(contexts), 1)
        out = [d for d in decisions if d is not None]
        for decision in out:
            decision.trace.append(TraceStep("route-time", {"ms": round(ms, 4)}))
        return out

    def _after_router(self, routed: Decision, policy_result: Any, context: QueryContext) -> Decision:
        trace = [] if policy_result is None else list(policy_result.trace)
        signals: dict[str, Any] = {} if policy_result is None else {"policy": policy_result.to_dict()}
        trace.extend(routed.trace)
        signals.update(routed.signals)
        probs = dict(routed.routes)
        log_routes = routed.log_routes
        if policy_result is not None and (policy_result.boosts or policy_result.blocks):
            # a boost or block of a route the router does not score does nothing: the step says so
            # (until session 43 the rule read as fired and the adjustment as made)
            ignored = sorted({*policy_result.boosts, *policy_result.blocks} - set(probs))
            probs = _renormalise(policy_result.apply(probs))
            log_routes = dict  # they no longer describe probs: none
            detail = {"boosts": policy_result.boosts, "blocks": policy_result.blocks, "routes": probs}
            if ignored:
                detail["ignored"] = {"routes": ignored, "why": "not scored by the router"}
            trace.append(TraceStep("policy-adjust", detail))
        return self._finish(probs, routed.decided_by, signals, trace, context, log_routes)

    def _finish(
        self,
        probs: dict[str, float],
        decided_by: str,
        signals: dict,
        trace: list,
        context: QueryContext,
        log_routes: Callable[[], Mapping[str, float]] = dict,
        *,
        ruled: bool = False,
    ) -> Decision:
        """The decision over ``probs``: hidden, unopened, unknown and filter-missing routes dropped,
        then the routes chosen. ``ruled``: ``probs`` are a rule's ``route``/``routes`` (each an even
        share), and every one left is queried, in the rule's order: threshold, ``max_routes`` and
        ``hedge_below`` select among a router's routes, never among the sources a rule names (they
        used to trim a rule's list, ties broken by name)."""
        options = self.options
        hidden = self.hidden(context.scopes)
        if hidden:  # the router and policy saw every source: the caller learns nothing of hidden ones
            allowed = {name: p for name, p in probs.items() if name not in hidden}
            if len(allowed) < len(probs):
                probs = visible_routes(allowed, log_routes())
            # Every number the router and policy computed was computed beside the hidden sources (a
            # raw probability against the renormalised one gives a hidden source's share; whether a
            # step is redacted tells whether a hidden source won). So for a caller who cannot see
            # every source, each step keeps only its stage and the visible, renormalised routes:
            # the same shape whatever the query.
            trace = [TraceStep(step.stage, scoped_step(probs)) for step in trace]
            signals = {"redacted": REDACTED}
            # a rule's name says which rule fired, also one routing only to a hidden source (its
            # name survived until session 37): such callers read "rule"
            decided_by = "rule" if decided_by.startswith("rule:") else str(redact(decided_by, hidden))
        trace.append(self.scope_step(context))
        problems = {p.name: p.error for p in self.problems if p.name not in hidden}
        unopened = sorted(n for n in probs if n in problems)
        if unopened:  # sources that failed to open: their share was chosen, then skipped, and a query
            # whose router preferred one got nothing (until session 37); the others share it now
            probs = _without(probs, unopened, log_routes)
            dropped = {n: problems[n] for n in unopened}
            trace.append(TraceStep("unavailable-routes", {"dropped": dropped, "routes": probs}))
        unknown = sorted(n for n in probs if n != NONE_ROUTE and n not in self._names)
        if unknown:  # labels of a router fitted on sources the config no longer has: never searchable
            probs = _without(probs, unknown, log_routes)
            trace.append(
                TraceStep(
                    "unknown-routes",
                    {
                        "dropped": unknown,
                        "routes": probs,
                        # until session 36 their share was chosen, then skipped: a query could get nothing
                        "reason": "the router routes to sources the config does not have: refit it",
                    },
                )
            )
        misses = self.filter_misses(context.filters, context.scopes) - hidden
        if misses & probs.keys():
            kept = {name: p for name, p in probs.items() if name not in misses}
            if any(p > 0 for name, p in kept.items() if name != NONE_ROUTE):
                probs = _renormalise(kept)
                reason = "no document of theirs holds the filter's keys"
            else:  # no routed source can match (the keys are split among them, or held by none of
                # the routes): none is searched (each would refuse the key), and this says why
                reason = "no routed source's documents hold all the filter's keys: none is searched"
            keys = sorted(metadata_filter_keys(context.filters))
            trace.append(
                TraceStep("filters", {"keys": keys, "sources_without": sorted(misses), "reason": reason})
            )
        if ruled:  # "query these sources": all of them, in the order the rule lists them
            chosen = [name for name in probs if name != NONE_ROUTE and probs[name] > 0] or [NONE_ROUTE]
        else:
            chosen = select_routes(
                probs,
                threshold=options.threshold,
                max_routes=options.max_routes,
                hedge_below=options.hedge_below,
            )
        if options.always and chosen != [NONE_ROUTE]:
            chosen += [name for name in options.always if name not in chosen and name not in hidden]
        if misses & set(chosen):  # never searched: an index refuses a key its documents lack
            chosen = [name for name in chosen if name not in misses] or [NONE_ROUTE]
        unavailable = [name for name in chosen if name != NONE_ROUTE and name not in self._names]
        if unavailable:  # an `always:` source that failed to open
            trace.append(
                TraceStep("skip", {"sources": {n: problems.get(n, "unknown source") for n in unavailable}})
            )
            chosen = [name for name in chosen if name not in unavailable]
        trace.append(
            TraceStep(
                "select",
                {
                    "threshold": options.threshold,
                    "max_routes": options.max_routes,
                    "hedge_below": options.hedge_below,
                    **({"always": [n for n in options.always if n not in hidden]} if options.always else {}),
                    **({"chosen_by": decided_by} if ruled else {}),
                    "chosen": chosen,
                },
            )
        )
        if problems:
            signals["unavailable_sources"] = problems
        return Decision(chosen=chosen, routes=probs, signals=signals, trace=trace, decided_by=decided_by)


#: the probability fusion, and the trace, give a route the router did not score: an ``always:``
#: source outside the router's routes is queried for every query by the config's word, so its list
#: competes unpenalised (until session 49 ``calibrated`` fused it as 1.0 while the trace and
#: ``probability`` weights read 0.0, which searched it and then dropped its hits)
UNSCORED_ROUTE_PROBABILITY = 1.0


def route_prior(decision: Decision, name: str) -> float:
    """The probability fusion weighs route ``name``'s list by: the router's, else
    :data:`UNSCORED_ROUTE_PROBABILITY` (a route the router did not score, such as an ``always:``
    source outside its routes)."""
    return float(decision.routes.get(name, UNSCORED_ROUTE_PROBABILITY))


def metadata_filter_keys(filters: Mapping[str, Any] | None) -> frozenset[str]:
    """The metadata keys ``filters`` name (``modality`` and ``parent_id`` are document fields)."""
    return frozenset(str(k) for k in (filters or {}) if k not in ("modality", "parent_id"))


def known_keys(source: Source, scopes: Sequence[str] | None = None) -> frozenset[str] | None:
    """The metadata keys ``source``'s documents carry: its index's (computed once per content; with
    ``scopes``, of the documents a caller holding them may read), else those of the documents it
    lists (a framework source given some; with ``scopes``, of those the caller may read); ``None``
    when it cannot tell (an empty index, nothing the caller may read, no documents listed)."""
    if callable(getattr(source.retriever, "metadata_keys", None)):
        return source.metadata_keys(scopes)
    documents = source.documents
    if scopes is not None:  # until session 49 a hidden document's keys counted: a filter on a key only
        # it held kept the source routed (no `filters` step), which told the caller that it existed
        held = frozenset(scopes)
        documents = [doc for doc in documents if visible(labels_of(doc.metadata.get(ACCESS_KEY)), held)]
    return frozenset(key for doc in documents for key in doc.metadata) if documents else None


def absent_filter_keys(carried: frozenset[str] | None, filters: Mapping[str, Any] | None) -> list[str]:
    """The metadata keys ``filters`` names (:func:`metadata_filter_keys`) that are not among
    ``carried`` (a source's documents' keys, :func:`known_keys`), sorted: the filter matches none of
    its documents (a source to route around). Keys unknown (``None``): none is said to be absent."""
    if carried is None:
        return []
    wanted = filters or {}
    return sorted(
        key
        for key in metadata_filter_keys(filters)
        if key not in carried and not accepts_missing(wanted.get(key))  # null matches a missing key
    )


def _without(
    probs: Mapping[str, float],
    dropped: Sequence[str],
    log_routes: Callable[[], Mapping[str, float]] = dict,
) -> dict[str, float]:
    """``probs`` without the ``dropped`` routes, the rest renormalised (nothing left: ``none``).
    When every route left rounds to 0 beside a dropped winner, they share it by the router's
    unrounded ``log_routes`` where it gives them (until session 43 a sharp trained router's query
    whose best route had failed to open, or named no source, went to ``none`` whatever it ranked
    next)."""
    kept = {name: p for name, p in probs.items() if name not in dropped}
    if any(p > 0 for p in kept.values()):
        return _renormalise(kept)
    logged = log_routes() if kept else {}
    if kept and all(name in logged for name in kept) and any(math.isfinite(logged[n]) for n in kept):
        return visible_routes(kept, logged)
    return {NONE_ROUTE: 1.0}


def visible_routes(allowed: Mapping[str, float], log_routes: Mapping[str, float]) -> dict[str, float]:
    """A router's probabilities over the routes a caller may see (``allowed``), renormalised: from
    the router's unrounded ``log_routes`` where it gave them for every visible route (since session
    39: beside a hidden winner every visible probability rounds to 0, and the visible sources then
    shared the query evenly, which said that a hidden source won and dropped the router's order),
    else from the probabilities. A router without them (an LLM, a fixed split) whose visible routes
    are all 0 gets the even share: sending the query nowhere would say that a hidden source won,
    and the caller's sources would never be searched."""
    logged = {name: log_routes[name] for name in allowed if name in log_routes}
    if len(logged) == len(allowed) and any(math.isfinite(value) for value in logged.values()):
        top = max(logged.values())
        shares = {name: math.exp(value - top) for name, value in logged.items()}
        total = sum(shares.values())
        return {name: share / total for name, share in shares.items()}
    if sum(max(p, 0.0) for p in allowed.values()) > 0:
        return _renormalise(allowed)
    sources = [name for name in allowed if name != NONE_ROUTE]
    return {name: 1.0 / len(sources) for name in sources} if sources else {NONE_ROUTE: 1.0}


def _renormalise(scores: Mapping[str, float]) -> dict[str, float]:
    clipped = {name: max(score, 0.0) for name, score in scores.items()}
    total = sum(clipped.values())
    if total <= 0:
        return {NONE_ROUTE: 1.0}
    return {name: score / total for name, score in clipped.items()}


#: the most threads a retrieve stage's pool starts by default (Python's own pool default for many cores)
POOL_THREADS = 32


class RetrieveStage:
    """Searches every chosen source: one batched call per source, sources concurrently (local
    indexes packed into one group per usable core, see :meth:`_groups`).

    A source that raises loses only its own hits: the error is recorded in the
    trace of every query that chose it, and the other sources' hits are kept.
    A source that is itself a pipeline contributes its own decision to the trace.
    """

    def __init__(
        self, sources: Sequence[Source], max_workers: int | None = None, two_phase: bool = True
    ) -> None:
        from ragroute.index.external import ExternalVectorIndex
        from ragroute.index.local import LocalIndex

        self.sources = {s.name: s for s in sources}
        # checked here: until session 52 -1 or "4" made every query of several sources fail in each of
        # them (its hits empty, the pool's error in the trace only), and 0 or 2.5 were taken as given
        self.max_workers = None if max_workers is None else check_k(max_workers, "max_workers")
        # several sources that search in two phases (hybrid) start all their scans first; False
        # searches each whole in its own group (what the corpus-routing bench compares against)
        self.two_phase = two_phase
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # indexes this process searches itself (CPU- and memory-bound), packed by core in _groups
        self._local = {
            s.name: isinstance(s.retriever, LocalIndex) and not isinstance(s.retriever, ExternalVectorIndex)
            for s in sources
        }

    def _executor(self) -> ThreadPoolExecutor:
        """One thread pool per stage, created on first use and reused (a pool per query costs more
        than a small search). It is shared by every caller querying the pipeline at once, so by
        default it may grow to :data:`POOL_THREADS` (a thread is started only when none is idle: one
        query uses one fewer than its groups, :meth:`_groups`). Until session 53 it held one thread
        per source (at most 8): 20 callers at once over two sources answering in 0.1 s each (a
        store or framework retriever waiting on the network) took 1 s, not 0.1 s."""
        with self._pool_lock:
            if self._pool is None:
                workers = self.max_workers or POOL_THREADS
                self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragroute-retrieve")
            return self._pool

    def run(
        self, contexts: Sequence[QueryContext], decisions: Sequence[Decision], depth: int
    ) -> list[dict[str, list[Hit]]]:
        wanted: dict[str, list[int]] = {}
        for i, decision in enumerate(decisions):
            for name in decision.chosen:
                if name != NONE_ROUTE and name in self.sources:
                    wanted.setdefault(name, []).append(i)
        per_query: list[dict[str, list[Hit]]] = [{} for _ in contexts]
        for decision in decisions:
            if not any(n in wanted for n in decision.chosen):
                decision.trace.append(TraceStep("retrieve", {"sources": [], "reason": "no retrieval"}))
        if not wanted:
            return per_query
        start = time.perf_counter()
        self._prefetch_vectors(contexts, wanted)

        def outcome(name: str, call: Any, begin: float) -> tuple[str, Any, float]:
            """``call()``'s result (or the exception it raised) and the ms since ``begin``."""
            try:
                result: Any = call() if callable(call) else call
            except Exception as exc:  # noqa: BLE001 - one failing source must not sink the others
                result = exc
            return name, result, (time.perf_counter() - begin) * 1000

        def search(name: str) -> tuple[str, Any, float]:
            begin = time.perf_counter()
            batch = [contexts[i] for i in wanted[name]]
            return outcome(name, lambda: self.sources[name].search_contexts(batch, depth), begin)

        if len(wanted) == 1 or self.max_workers == 1:
            outcomes = [search(name) for name in wanted]
        else:
            # Sources that search in two phases (hybrid indexes) start their GIL-free dense scans
            # in the pool first; their GIL-bound parts (BM25, fusion) then run one after another on
            # this thread while the scans run beside them (see :meth:`_start_phased`).
            phased = self._start_phased(contexts, wanted, depth) if self.two_phase else {}
            groups = self._groups([n for n in wanted if n not in phased])
            # The first group (it holds the largest source) runs on the calling thread, the others
            # in the pool: one hand-off fewer, and measured faster than sending all of them there.
            # With phased sources the calling thread finishes those, and every group goes to the pool.
            own = [] if phased or not groups else groups[0]
            pooled = groups if phased else groups[1:]
            # each pool thread runs in a copy of the caller's context: a framework's tracing span
            # (LlamaIndex instrumentation, OpenTelemetry) then parents the sources searched there
            # as it does the one searched here
            futures = [
                self._executor().submit(contextvars.copy_context().run, lambda g: [search(n) for n in g], g)
                for g in pooled
            ]
            outcomes = [search(name) for name in own]
            # smallest first: the largest source's scan, the longest, has the most time to finish
            # while the others' BM25 and fusion run here
            # (a source whose phase one raised holds that exception instead of its finishing call)
            for name in sorted(phased, key=lambda n: len(self.sources[n].documents)):
                begin, finish = phased[name]
                outcomes.append(outcome(name, finish, begin))
            for future in futures:
                outcomes.extend(future.result())
        found: list[dict[str, tuple[list[Hit], dict[str, Any]]]] = [{} for _ in contexts]
        for name, result, ms in outcomes:
            if isinstance(result, Exception):  # one caller's refused filter: the others keep their hits
                batch = [contexts[i] for i in wanted[name]]
                search_group = functools.partial(self.sources[name].search_contexts, k=depth)
                result = by_caller(batch, search_group, lambda exc: exc, result)
            for j, i in enumerate(wanted[name]):
                detail: dict[str, Any] = {"source": name, "ms": round(ms, 3)}
                entry = result[j]
                if isinstance(entry, Exception):
                    detail["error"] = error_summary(entry)
                    found[i][name] = ([], detail)
                else:
                    hits, nested = entry
                    prior = route_prior(decisions[i], name)
                    # the source's own copies (Source._stamped), one per query: stamped in place
                    for hit in hits:
                        hit.explain = {**hit.explain, "route_probability": prior}
                    found[i][name] = (hits, detail)
                    detail.update(hits=len(hits), top_score=hits[0].score if hits else None)
                    if nested is not None:
                        detail["decision"] = nested.to_dict()
        for i, decision in enumerate(decisions):
            # in the order the query chose its routes, whatever the batch: until session 49 in the
            # order its sources finished and other queries chose theirs, and fusion keeps the first
            # list's copy of a document that sources over the same documents both found (its
            # source, its route probability), so a query in a batch named another source than alone
            for name in dict.fromkeys(decision.chosen):
                if name in found[i]:
                    hits, detail = found[i][name]
                    per_query[i][name] = hits
                    decision.trace.append(TraceStep("retrieve", detail))
        wall = round((time.perf_counter() - start) * 1000, 3)
        for i in {i for positions in wanted.values() for i in positions}:
            decisions[i].trace.append(
                TraceStep("retrieve-time", {"sources": len(decisions[i].chosen), "depth": depth, "ms": wall})
            )
        return per_query

    def _start_phased(
        self, contexts: Sequence[QueryContext], wanted: Mapping[str, list[int]], depth: int
    ) -> dict[str, tuple[float, Any]]:
        """Start every chosen local source that searches in two phases (``Source.start_contexts``):
        name -> (start time, the function finishing its search, or the exception starting it raised).

        Measured on the Glasgow dev queries with the three largest collections as hybrid sources
        (a one-off script scheduling the same way, best of 3 per query): three searched at once
        took 1.77-1.84 x the slowest alone with each source's whole search in its own thread,
        1.33-1.34 x with the scans started first, on a 16-core machine; on 2 cores the two ways
        measure alike (docs/benchmarks.md).
        """
        started: dict[str, tuple[float, Any]] = {}
        for name, positions in wanted.items():
            if not self._local[name]:
                continue
            begin = time.perf_counter()
            finish: Any
            try:
                finish = self.sources[name].start_contexts(
                    [contexts[i] for i in positions], depth, self._executor().submit
                )
            except Exception as exc:  # noqa: BLE001 - reported as this source's failure
                finish = exc
            if finish is not None:
                started[name] = (begin, finish)
        return started

    def _groups(self, names: list[str]) -> list[list[str]]:
        """The chosen sources as groups searched one after another, the groups concurrently.

        Sources this process searches itself (local indexes: CPU- and memory-bound) are packed
        into at most one group per usable core, largest first onto the least-loaded group (more
        threads than cores only time-slice the same cores, and the slowest source finishes
        later); every other source (a nested pipeline, an external store or framework retriever,
        often waiting on I/O) is a group of its own.
        """
        size = {name: len(self.sources[name].documents) for name in names}
        packed = sorted((n for n in names if self._local[n]), key=lambda n: -size[n])
        groups: list[list[str]] = [[] for _ in range(min(len(packed), usable_cpus()))]
        loads = [0] * len(groups)
        for name in packed:
            slot = loads.index(min(loads))
            groups[slot].append(name)
            loads[slot] += size[name]
        groups += [[n] for n in names if not self._local[n]]
        return sorted(groups, key=lambda g: -max(size[n] for n in g))

    def _prefetch_vectors(self, contexts: Sequence[QueryContext], wanted: Mapping[str, list[int]]) -> None:
        """Encode every query once per encoder, in one batch, before the sources run in threads."""
        seen: set[int] = set()
        for name, positions in wanted.items():
            encoder = getattr(self.sources[name].retriever, "encoder", None)
            if encoder is None or id(encoder) in seen:
                continue
            seen.add(id(encoder))
            query_vectors([contexts[i] for i in positions], encoder)


class FuseStage:
    """Merges one query's per-source lists into one ranking with a registered fusion method.

    Methods that need per-source score statistics (``calibrated``) get them from
    :func:`~ragroute.pipeline.calibration.null_score_stats`, computed on first use
    (or eagerly by :meth:`calibrate`) unless given.
    """

    def __init__(
        self,
        options: RoutingOptions,
        sources: Sequence[Source] = (),
        stats: Mapping[str, Any] | None = None,
        encoder: Any = None,
    ) -> None:
        FUSIONS.check(options.fusion)
        self.options = options
        self.sources = list(sources)
        self.stats: dict[str, Any] | None = dict(stats) if stats is not None else None
        self._stats_given = stats is not None
        self.encoder = encoder
        self.scales: dict[str, ScoreScale] | None = None
        self._fitted_sizes: list[int] | None = None  # each source's documents when last fitted
        self._lock = threading.Lock()
        # sources over the same documents (an expert set's experts) share a collection, so
        # fusion merges their hits of one document instead of listing it once per source
        self.documents_of = {s.name: s.collection for s in self.sources}

    def shares_documents(self, chosen: Sequence[str]) -> bool:
        """Whether two of the ``chosen`` sources hold the same documents (their lists fuse by document)."""
        collections = [self.documents_of[name] for name in chosen if name in self.documents_of]
        return len(set(collections)) < len(collections)

    @property
    def needs_stats(self) -> bool:
        if self.options.fusion == "auto":  # calibrated runs only for lists over different documents
            return len(set(self.documents_of.values())) > 1
        return bool(getattr(FUSIONS.get(self.options.fusion), "needs_stats", False)) and len(self.sources) > 1

    def _moved(self) -> bool:
        """Whether a source's number of documents moved by more than a quarter since the statistics
        and score scales were fitted (they are fitted again then, as the confidence router's scale
        is: until a review of session 38 they were fitted once, whatever the indexes became)."""
        sizes = self._fitted_sizes
        return sizes is not None and any(
            moved_by_a_quarter(len(source.documents), then) for source, then in zip(self.sources, sizes)
        )

    def calibrate(self) -> dict[str, Any]:
        """The per-source statistics the fusion method uses (computed on first use, and again once
        a source's documents moved by more than a quarter; statistics handed in are kept)."""
        with self._lock:
            # fitted into locals and published together, sizes last: queries read them without the
            # lock, and one reading between ``scales = None`` and the new fit was rescored with no
            # scale at all (its hits kept their raw scores)
            stats, scales = self.stats, self.scales
            if self._moved():
                scales = None
                if not self._stats_given:
                    stats = None
            if stats is None or scales is None:
                sizes = [len(source.documents) for source in self.sources]
                if stats is None:
                    from ragroute.pipeline.calibration import null_score_stats

                    stats = null_score_stats(self.sources) if self.needs_stats else {}
                if scales is None:
                    wanted = self.options.scores == "similarity"
                    scales = fit_score_scales(self.sources, self.encoder) if wanted else {}
                self.stats, self.scales = stats, scales
                self._fitted_sizes = sizes
            return stats

    def rescore(self, decision: Decision, lists: Mapping[str, list[Hit]], fused: list[Hit]) -> list[Hit]:
        """``fused`` with cosine-scale similarities as scores (``scores: similarity``); the fusion
        value goes to ``explain["fused"]``."""
        if self.options.scores != "similarity":
            return fused
        scales = self.scales  # later queries read it without the lock: once fitted, never None
        if scales is None or self._moved():
            self.calibrate()
            scales = self.scales
        scales = scales or {}
        out = rescored(fused, lists, scales, self.documents_of)
        described = {name: scales[name].describe() for name in lists if name in scales}
        decision.trace.append(TraceStep("scores", {"meaning": "similarity", **described}))
        return out

    def run(self, decision: Decision, per_source: Mapping[str, list[Hit]], k: int) -> list[Hit]:
        lists = {name: hits for name, hits in per_source.items() if hits}  # failed or empty sources drop out
        if not lists:
            return []
        if len(lists) == 1:
            # a document the source listed twice counts once, at its first rank, as fusion counts it
            # for two routes or more (until session 52 one route returned both copies, and a reranker
            # handing its candidates back was refused for returning one twice)
            (only,) = lists.values()
            return self.rescore(decision, lists, list(first_per_document(only, self.documents_of))[:k])
        priors = {name: route_prior(decision, name) for name in lists}
        even = self.options.route_weights != "probability"
        weights = dict.fromkeys(lists, 1.0) if even else dict(priors)
        method = self.options.fusion
        if method == "auto":  # the trace names the method that ran, and why
            method = auto_method(list(lists), self.documents_of)
        fuse = FUSIONS.get(method)
        stats = self.calibrate() if getattr(fuse, "needs_stats", False) and len(self.sources) > 1 else {}
        fused = fuse(
            lists,
            weights=weights,
            limit=k,
            stats=stats,
            routes=priors,
            documents_of=self.documents_of,
        )
        detail: dict[str, Any] = {"method": method}
        if self.options.fusion == "auto":
            detail["auto"] = (
                "rrf: two lists hold the same documents"
                if method == "rrf"
                else "calibrated: every list holds documents of its own"
            )
        if getattr(fuse, "needs_stats", False):  # weighs routes by their probabilities itself
            detail["route_probabilities"] = priors
        else:
            detail["weights"] = weights
        if stats:
            from ragroute.pipeline.calibration import describe_null

            detail["null_stats"] = {n: describe_null(stats[n]) for n in lists if n in stats}
        decision.trace.append(TraceStep("fuse", detail))
        if self.options.scores != "similarity":
            # the hit's score is the fusion value: an ``explain["fused"]`` a hit brought along (a nested
            # pipeline's, the value that ordered its own list) is not what ordered this one, and a
            # cross-encoder reads ``fused`` as the stage-1 score (until session 55 it was kept)
            for hit in fused:
                if "fused" in hit.explain:
                    hit.explain = {key: value for key, value in hit.explain.items() if key != "fused"}
        return self.rescore(decision, lists, fused)


class ScopeCheck:
    """The last line of defence (the retrieve stage and ragroute's indexes already filter): keeps
    only the hits whose source and document a query's caller may read (a hit of no known source
    is dropped too). The pipeline runs it on every source's hits before fusion, on the fused
    hits before the reranker, and on what it returns."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.access = {s.name: s.access for s in sources}

    def allows(self, hit: Hit, scopes: Sequence[str]) -> bool:
        labels = self.access.get(hit.source)
        if labels is None:
            return False
        return visible(labels, scopes) and visible(labels_of(hit.metadata.get(ACCESS_KEY)), scopes)

    def keep(self, context: QueryContext, hits: list[Hit]) -> tuple[list[Hit], int]:
        """The hits ``context``'s caller may read, and how many were dropped."""
        kept = [hit for hit in hits if self.allows(hit, context.scopes)]
        return kept, len(hits) - len(kept)


class RerankStage:
    """Runs the reranker on one query's fused hits and records it in the trace."""

    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker

    def run(self, context: QueryContext, decision: Decision, hits: list[Hit], k: int) -> list[Hit]:
        """The reranked hits, at most ``k``; a reranker that raises, returns something other than a
        list of hits, or returns a hit that was not a candidate, one twice or a score that is not
        finite, leaves the fused order, cut at ``k``, with the error in the trace."""
        start = time.perf_counter()
        detail: dict[str, Any] = {"reranker": getattr(self.reranker, "name", "?")}
        try:
            out = self.reranker.rerank(context, list(hits), k)
            if not isinstance(out, list) or not all(isinstance(hit, Hit) for hit in out):
                raise TypeError(f"returned a {type(out).__name__}, not a list of hits")
            # at most k, as asked: a reranker that only re-orders its pool returned the whole pool
            # (``candidates`` hits, 20 by default, for k=1) until session 44
            out = out[:k]
            _check_reranked(hits, out)
        except Exception as exc:  # noqa: BLE001 - a failing reranker keeps the fused order, recorded
            detail["error"] = error_summary(exc)
            detail["kept"] = "fused order"
            out = hits[:k]
        summary = getattr(self.reranker, "trace_summary", None)
        if callable(summary):  # which model and calibration ran (none named until session 49)
            detail.update(summary())
        backend = getattr(self.reranker, "backend", None)
        if isinstance(backend, str):  # which one ran (``auto`` chooses per machine): docs/rerank.md
            detail["backend"] = backend
        detail["in"], detail["out"] = len(hits), len(out)
        detail["ms"] = round((time.perf_counter() - start) * 1000, 3)
        decision.trace.append(TraceStep("rerank", detail))
        return out


def _check_reranked(candidates: list[Hit], out: list[Hit]) -> None:
    """A reranker re-orders (and may cut) its candidates: each hit it returns must be one of them
    (by source and document id), once, with a finite score. Until session 45 a reranker's extra
    hits (a document the caller's scope or filters had kept out of the fused list), repeats and NaN
    scores were handed to the caller as they came."""
    known = {(hit.source, hit.doc_id) for hit in candidates}
    foreign = sum((hit.source, hit.doc_id) not in known for hit in out)
    if foreign:  # not named: the hit may be one the caller's scope kept out of the candidates
        raise ValueError(
            f"returned {counted(foreign, 'hit')} that {'was' if foreign == 1 else 'were'} not among its "
            "candidates"
        )
    seen: set[tuple[str, str]] = set()
    for hit in out:
        # by source and id, and the inner source of a nested pipeline's hit (fusion.document_key): two
        # inner sources' documents that share an id are two candidates (until session 52 a reranker
        # returning both was refused, and the query kept the fused order)
        key = document_key(hit)
        if key in seen:
            raise ValueError(f"returned {hit.doc_id!r} from {hit.source!r} twice")
        if not math.isfinite(hit.score):
            raise ValueError(f"returned {hit.doc_id!r} with score {hit.score!r}")
        seen.add(key)


def scoped_step(routes: dict[str, float]) -> dict[str, Any]:
    """A router or policy trace step as a caller who cannot see every source gets it: the routes it
    may see, renormalised, and nothing the step computed over the others."""
    return {"routes": dict(routes), "redacted": REDACTED}
