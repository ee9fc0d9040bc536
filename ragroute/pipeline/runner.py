"""The pipeline: gate -> route -> retrieve -> fuse -> rerank, as one retriever with one trace.

:class:`Pipeline` runs the stages of :mod:`ragroute.pipeline.stages` over a
batch of query contexts. It is itself a retriever (``search``/``search_many``/
``search_contexts``), so a source may be another pipeline (a graph, a skill
catalogue, an expert set...), whose decision then appears in the outer trace.
Every query gets one :class:`~ragroute.types.Decision` whose ``trace`` each
stage appends to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ragroute.context import QueryContext, check_cancelled, contexts_of
from ragroute.errors import (
    InvalidArgumentError,
    RagrouteError,
    check_batch,
    check_encoder_object,
    check_k,
    is_finite_number,
    value_type_name,
)
from ragroute.exposure import ExposureLedger
from ragroute.index.base import content_key
from ragroute.integrations.targets import check_target
from ragroute.pipeline.stages import (
    SHARED_DOCUMENTS_DEPTH,
    FuseStage,
    Gate,
    GateStage,
    Reranker,
    RerankStage,
    RetrieveStage,
    RouteStage,
    RoutingOptions,
    ScopeCheck,
)
from ragroute.route.base import NONE_ROUTE
from ragroute.route.sources import Source, SourceProblem, check_sources
from ragroute.scopes import ACCESS_KEY, caller_scopes, is_public
from ragroute.types import Decision, Document, Hit, TraceStep

#: a reranker that keeps one hit per parent document and comes up short is given a pool four times
#: as deep, again, while the pool is below this many times the hits asked for (3 -> 12 -> 48 -> 192)
MAX_REREAD_FACTOR = 100


@dataclass
class PipelineResult:
    """Hits (best first, each remembering its source) and the decision trace that produced them."""

    hits: list[Hit]
    decision: Decision
    context: QueryContext | None = None

    @property
    def trace(self) -> list[TraceStep]:
        """The decision's trace: one step per stage that ran."""
        return self.decision.trace

    def __repr__(self) -> str:
        """The hits as ``source:doc_id score`` and what was decided, on one line (the dataclass's
        repr printed every hit's whole text, metadata and explain: pages for a notebook cell)."""
        shown = ", ".join(
            f"{h.source + ':' if h.source else ''}{h.doc_id} {h.score:.3g}" for h in self.hits[:5]
        )
        more = f", ... {len(self.hits) - 5} more" if len(self.hits) > 5 else ""
        return (
            f"PipelineResult({len(self.hits)} hits: [{shown}{more}], chosen={self.decision.chosen!r}, "
            f"decided_by={self.decision.decided_by!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [h.to_dict() for h in self.hits], "decision": self.decision.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineResult:
        """The result :meth:`to_dict` wrote (``ragroute route --json`` prints the same keys), read
        back from JSON (:meth:`Hit.from_dict`, :meth:`Decision.from_dict`); no query context."""
        if not isinstance(data, Mapping) or not isinstance(data.get("decision"), Mapping):
            raise InvalidArgumentError(
                "a pipeline result is a mapping with 'hits' and 'decision' (what to_dict wrote)"
            )
        return cls([Hit.from_dict(h) for h in data.get("hits") or ()], Decision.from_dict(data["decision"]))


class Pipeline:
    """Routes each query to one or more sources (or none), retrieves, fuses and reranks.

    ``router`` and/or ``policy`` decide the routes; ``gate`` (optional) decides
    first whether to retrieve at all; ``reranker`` (optional) re-orders the fused
    hits. ``encoder`` is the deployment's default query encoder (used by
    :meth:`decide` for policies); every stage encodes through the query context,
    so each query is encoded at most once per encoder. ``fusion_stats`` are
    per-source score statistics for fusion methods that need them.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        router: Any = None,
        *,
        policy: Any = None,
        encoder: Any = None,
        options: RoutingOptions | None = None,
        problems: Sequence[SourceProblem] = (),
        gate: Gate | None = None,
        reranker: Reranker | None = None,
        fusion_stats: Mapping[str, Any] | None = None,
        name: str = "pipeline",
        max_workers: int | None = None,
        exposure: ExposureLedger | None = None,
    ) -> None:
        if router is None and policy is None:
            raise RagrouteError("a pipeline needs a router, a policy, or both")
        # checked here, as pipeline_from_settings checks them: until session 56 a model name as the
        # encoder silently left every source's scores raw (no score scale could be fitted), a
        # ``router:`` mapping as the options raised AttributeError, and a kind name as the gate
        # (``"threshold"``) raised AttributeError at every query, as the reranker failed every one
        check_encoder_object(encoder, "Pipeline")
        if options is not None and not isinstance(options, RoutingOptions):
            raise InvalidArgumentError(
                f"Pipeline: options must be RoutingOptions(...) (a router: mapping is read by "
                f"pipeline_from_settings), got {value_type_name(options)}"
            )
        if gate is not None:
            check_target(gate, "gate", ("gate_many",), "Pipeline")
        if reranker is not None:
            check_target(reranker, "reranker", ("rerank",), "Pipeline")
        self.name = name
        self._sources = tuple(check_sources(sources))
        self.router = router
        self.policy = policy
        self.encoder = encoder
        self.options = options or RoutingOptions()
        self.problems = list(problems)
        self.gate = gate
        self.reranker = reranker
        # a `retrieval` signal given no router reads this pipeline's while its gate stage runs
        # (router_max, router_none: 0 for every query until session 37; a router written into the
        # signal, the first pipeline's in a second one sharing the gate, until session 52)
        self._gate = GateStage(gate, router) if gate is not None else None
        self._route = RouteStage(self.sources, router, policy, self.options, self.problems)
        self._retrieve = RetrieveStage(self.sources, max_workers=max_workers)
        self._fuse = FuseStage(self.options, self.sources, fusion_stats, encoder)
        self._rerank = RerankStage(reranker) if reranker is not None else None
        self._scope = ScopeCheck(self.sources)
        self._documents_memo: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None
        self.exposure = exposure
        # its sources' collections in the ledger (two pipelines sharing a ledger may each have a
        # source of one name over other documents: its hits are counted in its own)
        self._collections: dict[str, str] = {}
        if exposure is not None:  # budgets are fractions of what a caller may read of each collection
            self._collections = exposure.add_sources(self.sources)

    @property
    def sources(self) -> tuple[Source, ...]:
        """Its sources, read-only: the stages hold them from construction, so a pipeline over
        other sources is a new ``Pipeline`` (editing a list here once changed nothing, silently)."""
        return self._sources

    def __repr__(self) -> str:
        names = [s.name for s in self.sources]
        parts = [f"sources={names!r}", f"router={type(self.router).__name__}"]
        parts += [
            f"{what}={type(v).__name__}"
            for what, v in (("gate", self.gate), ("reranker", self.reranker))
            if v is not None
        ]
        return f"Pipeline({', '.join(parts)})"

    @property
    def route_names(self) -> list[str]:
        """The names a decision can choose: each source's, then ``none`` (retrieve nothing)."""
        return [*(s.name for s in self.sources), NONE_ROUTE]

    @property
    def documents(self) -> tuple:
        """Every source's documents, as one tuple per state of its sources' contents
        (:func:`~ragroute.index.base.content_key`): read per query by fusion and exposure, it was a
        new list of every document each time. A source's access labels go with its documents
        (:func:`listed_documents`), so what learns from public documents only (a prototype bank,
        pseudo-queries, rarity counts) leaves out those of a nested pipeline's restricted sources."""
        key = tuple(content_key(source) for source in self.sources)
        memo = self._documents_memo
        if memo is None or memo[0] != key:
            memo = self._documents_memo = (
                key,
                tuple(doc for source in self.sources for doc in listed_documents(source)),
            )
        return memo[1]

    def metadata_keys(self, scopes: Sequence[str] | None = None) -> frozenset[str] | None:
        """The metadata keys the documents of its sources carry (with ``scopes``: of the sources and
        documents a caller holding them may read), when every such source can tell
        (:func:`~ragroute.index.base.metadata_keys_of`), else ``None``."""
        return self._route.carried_keys(scopes)

    # ------------------------------------------------------------------ the pipeline

    def retrieve(
        self,
        query: str | QueryContext,
        k: int = 10,
        *,
        scopes: Sequence[str] | None = None,
        caller: str | None = None,
    ) -> PipelineResult:
        """Route, retrieve, fuse and rerank one query (text or :class:`QueryContext`): its ``k`` best
        hits and the decision behind them (:class:`PipelineResult`).

        ``scopes``: the caller's scopes for a text query (a context carries its own); none: the
        caller sees only public sources and documents (see :mod:`ragroute.scopes`). ``caller``:
        who asks, for exposure accounting (:mod:`ragroute.exposure`).
        """
        return self.retrieve_many([query], k, scopes=scopes, caller=caller)[0]

    def retrieve_many(
        self,
        queries: Sequence[str | QueryContext],
        k: int = 10,
        *,
        scopes: Sequence[str] | None = None,
        caller: str | None = None,
    ) -> list[PipelineResult]:
        """:meth:`retrieve` for a batch: routers, encoders and sources are called once per batch."""
        queries = check_batch(queries)
        if scopes is None and caller is None:
            return self.retrieve_contexts(contexts_of(queries), k)
        if any(isinstance(q, QueryContext) for q in queries):
            raise RagrouteError("scopes= and caller= apply to text queries: a QueryContext carries its own")
        # the labels once, for every query: a generator of labels gave them to the first query only
        given: dict[str, Any] = {"scopes": caller_scopes(scopes)} if scopes is not None else {}
        if caller is not None:
            given["caller"] = caller
        return self.retrieve_contexts([QueryContext.of(q, **given) for q in queries], k)

    def retrieve_contexts(self, contexts: Sequence[QueryContext], k: int = 10) -> list[PipelineResult]:
        """:meth:`retrieve_many` for :class:`QueryContext` objects, each carrying its own filters,
        scopes and caller."""
        k = check_k(k)
        contexts = check_batch(contexts, "contexts")
        for context in contexts:
            if not isinstance(context, QueryContext):
                raise InvalidArgumentError(
                    f"contexts must be QueryContext objects (QueryContext.of(text)), got "
                    f"{type(context).__name__}: retrieve_many takes texts"
                )
        if self.exposure is None:
            return self._retrieve_contexts(contexts, k, admit=False)
        # admitted here unless an outer pipeline holding the same ledger admits what it returns,
        # or the library searches for its own use (ExposureLedger.admitting, internal_searches)
        with self.exposure.admitting() as admit:
            return self._retrieve_contexts(contexts, k, admit=admit)

    def _retrieve_contexts(
        self, contexts: Sequence[QueryContext], k: int, *, admit: bool
    ) -> list[PipelineResult]:
        for position, context in enumerate(contexts):  # before any stage runs: a filter that cannot match
            try:  # is refused, naming the query of a batch that holds it
                self._route.check_filter_keys(context)
            except InvalidArgumentError as exc:
                if all(other.filters == context.filters for other in contexts):
                    raise  # one query, or a filter every query shares (the CLI's --filter)
                named = f" (id {context.id!r})" if context.id else ""
                raise InvalidArgumentError(f"query {position + 1} of {len(contexts)}{named}: {exc}") from None
        decisions: list[Decision | None] = [None] * len(contexts)
        depths = [k] * len(contexts)
        if self._gate is not None:
            gate_name = str(getattr(self._gate.gate, "name", "?"))  # as the rerank step names its reranker
            for i, gated in enumerate(self._gate.run(contexts)):
                step = TraceStep(
                    "gate",
                    {
                        "gate": gate_name,
                        "action": gated.action,
                        # a failed gate computed none (NaN): left out, as the step-wise controller
                        # leaves it (until session 52 a NaN no strict JSON writer takes)
                        **({"p_retrieve": gated.probability} if is_finite_number(gated.probability) else {}),
                        **({"reason": gated.reason} if gated.reason else {}),
                        **({"depth": gated.depth} if gated.depth else {}),
                        **({"steps": gated.steps} if gated.steps else {}),
                        **gated.signals,
                    },
                )
                if gated.action != "retrieve":
                    gate_signals: dict[str, Any] = {"gate": gated.action}
                    if gated.reason:
                        gate_signals["reason"] = gated.reason
                    decisions[i] = Decision(
                        chosen=[NONE_ROUTE],
                        routes={NONE_ROUTE: 1.0},
                        decided_by=f"gate:{gate_name}",
                        signals=gate_signals,
                        trace=[step, self._route.scope_step(contexts[i])],
                    )
                else:
                    decisions[i] = Decision(chosen=[], trace=[step])
                    depths[i] = gated.depth or k
        check_cancelled()  # between stages: an awaited search whose caller gave up stops here
        to_route = [i for i, d in enumerate(decisions) if d is None or not d.chosen]
        for i, routed in zip(to_route, self._route.run([contexts[i] for i in to_route])):
            gated_through = decisions[i]
            if gated_through is not None:  # the gate let it through: keep its step and probability
                routed.trace = gated_through.trace + routed.trace
                routed.signals["gate"] = {k: v for k, v in gated_through.trace[0].detail.items() if k != "ms"}
            decisions[i] = routed
        final = [d for d in decisions if d is not None]
        pool = [self._candidates(want) for want in depths]
        # each query reads as deep as it would alone: one retrieve call per distinct depth (a batch
        # read at its deepest query's depth fused other queries' lists differently: zscore and
        # minmax fusion, and a hybrid source's own fusion, depend on how deep the lists are)
        by_depth: dict[int, list[int]] = {}
        for i, (decision, candidates) in enumerate(zip(final, pool)):
            by_depth.setdefault(self._depth(decision, candidates), []).append(i)
        per_source: list[dict[str, list[Hit]]] = [{} for _ in contexts]
        check_cancelled()
        for depth, positions in by_depth.items():
            group = self._retrieve.run([contexts[i] for i in positions], [final[i] for i in positions], depth)
            for i, lists in zip(positions, group):
                per_source[i] = lists
        results = []
        check_cancelled()
        for context, decision, lists, want, candidates in zip(contexts, final, per_source, depths, pool):
            hits, dropped, full = self._fuse_and_rerank(context, decision, lists, want, candidates)
            while full and len(hits) < want and self._collapses() and candidates < want * MAX_REREAD_FACTOR:
                # a reranker that keeps one hit per parent document came up short on a full pool:
                # one document's chunks filled it (until session 45 the query got fewer than k hits
                # while other documents matched); read again, four times as deep
                candidates *= 4
                decision.trace.append(
                    TraceStep("reread", {"why": "too few parents", "candidates": candidates})
                )
                depth = self._depth(decision, candidates)
                lists = self._retrieve.run([context], [decision], depth)[0]
                # the deeper read holds the first one's hits: its count replaces the first one's
                # (until session 50 added to it, a hidden hit both reads returned counted twice)
                hits, dropped, full = self._fuse_and_rerank(context, decision, lists, want, candidates)
            if dropped:
                decision.trace.append(TraceStep("scope-check", {"dropped": dropped}))
            if self.exposure is not None and admit:
                check_cancelled()  # nothing admitted to the budget for an answer nobody awaits
                hits, step = self.exposure.admit(
                    context.caller, hits, context.scopes, collections=self._collections
                )
                decision.trace.append(step)
            for rank, hit in enumerate(hits, 1):
                hit.rank = rank
            results.append(PipelineResult(hits, decision, context))
        return results

    def _fuse_and_rerank(
        self,
        context: QueryContext,
        decision: Decision,
        lists: dict[str, list[Hit]],
        want: int,
        candidates: int,
    ) -> tuple[list[Hit], int, bool]:
        """``(hits, dropped by the scope check, whether the fused pool was full)`` of one query's
        source lists. The caller's scope is checked again on every source's hits, on what the
        reranker sees and on what is returned (defence in depth: the sources filter already)."""
        dropped = 0
        for name, found in lists.items():
            lists[name], n = self._scope.keep(context, found)
            dropped += n
            if n:  # the source's trace step counted and scored what the caller may not read
                _rescore_retrieve_step(decision, name, lists[name])
        hits = self._fuse.run(decision, lists, candidates)
        full = len(hits) >= candidates
        hits, n = self._scope.keep(context, hits)
        dropped += n
        if self._rerank is not None and hits:
            hits, n = self._scope.keep(context, self._rerank.run(context, decision, hits, want))
            dropped += n
        return hits, dropped, full

    def _collapses(self) -> bool:
        """Whether the reranker keeps fewer hits than it reads, one per parent (``candidates_per_hit``)."""
        return self.reranker is not None and int(getattr(self.reranker, "candidates_per_hit", 1) or 1) > 1

    def calibrate(self) -> Pipeline:
        """Compute now what fusion needs from the sources (else done by the first fused query)."""
        self._fuse.calibrate()
        return self

    def _depth(self, decision: Decision, candidates: int) -> int:
        """How many hits one query reads per source: its fused pool, at least ``options.depth``, and
        :data:`SHARED_DOCUMENTS_DEPTH` when its routes search the same documents."""
        depth = max(candidates, self.options.depth or 0)
        if self.options.depth is None and self._fuse.shares_documents(decision.chosen):
            depth = max(depth, SHARED_DOCUMENTS_DEPTH)
        return depth

    def _candidates(self, want: int) -> int:
        """Hits fused per query: ``want``, or more when a reranker picks from a deeper pool."""
        if self.reranker is None:
            return want
        pool = getattr(self.reranker, "candidates", None)  # a reranker that reads a fixed pool
        if pool:
            return max(want, int(pool))
        return want * max(1, int(getattr(self.reranker, "candidates_per_hit", 1)))

    def decide(self, query: str | QueryContext, *, scopes: Sequence[str] | None = None) -> Decision:
        """The routing decision alone (no retrieval, and no gate: what a query the gate sends to
        retrieval gets): policy first, then the router, then the scope."""
        if scopes is not None:
            if isinstance(query, QueryContext):  # as retrieve: a context carries its own
                raise RagrouteError("scopes= applies to a text query: a QueryContext carries its own")
            query = QueryContext.of(query, scopes=scopes)
        return self._route.run([QueryContext.of(query)])[0]

    # ------------------------------------------------------------------ the Retriever protocol

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        filters: Mapping[str, Any] | None = None,
        scopes: Sequence[str] = (),
    ) -> list[Hit]:
        """The hits of :meth:`retrieve` for one text with optional metadata ``filters`` (the
        retriever protocol: a pipeline can be another pipeline's source)."""
        return self.search_many([query], k, filters=filters, scopes=scopes)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        filters: Mapping[str, Any] | None = None,
        scopes: Sequence[str] = (),
    ) -> list[list[Hit]]:
        """Hits for each query; ``scopes``: the caller's (none: only public sources and documents)."""
        scopes = caller_scopes(scopes)  # once: a generator of labels gave them to the first query only
        queries = check_batch(queries)
        if (filters is not None or scopes) and any(isinstance(q, QueryContext) for q in queries):
            # as retrieve_many: until session 49 a context's own filters and scopes were searched,
            # and the ones given here silently dropped
            raise RagrouteError("filters= and scopes= apply to text queries: a QueryContext carries its own")
        contexts = [QueryContext.of(q, filters=filters, scopes=scopes) for q in queries]
        return self.search_contexts(contexts, k)

    def search_contexts(self, contexts: Sequence[QueryContext], k: int = 10) -> list[list[Hit]]:
        """The hits of :meth:`retrieve_contexts` for each context (the retriever protocol)."""
        return [r.hits for r in self.retrieve_contexts(contexts, k)]


def listed_documents(source: Source) -> Iterator[Document]:
    """``source``'s documents as a pipeline over it lists them: a public one of a source with access
    labels carries the source's labels (only the callers the source lets in may read it; until now
    it read as public to every router, gate signal and calibration learning from the nested
    pipeline's public documents), any other as it is (its labels, if any, already make it not
    public)."""
    labels = sorted(source.access)
    for doc in source.documents:
        if labels and is_public(doc.metadata):
            yield replace(doc, metadata={**doc.metadata, ACCESS_KEY: labels})
        else:
            yield doc


def _rescore_retrieve_step(decision: Decision, source: str, kept: list[Hit]) -> None:
    """Make a source's ``retrieve`` trace step describe only the hits the scope check kept (the
    steps of the latest read: those after the last ``reread`` step)."""
    for step in reversed(decision.trace):
        if step.stage == "reread":
            break
        if step.stage == "retrieve" and step.detail.get("source") == source and "hits" in step.detail:
            step.detail.update(hits=len(kept), top_score=kept[0].score if kept else None)
