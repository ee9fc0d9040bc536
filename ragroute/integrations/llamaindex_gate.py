"""LlamaIndex retrievers that gate: retrieve only when a gate says so, or step by step.

* :class:`GatedLlamaRetriever`: a gate (any :class:`~ragroute.pipeline.stages.Gate`)
  decides per query; ``retrieve`` searches the wrapped retriever (a
  :class:`~ragroute.pipeline.Pipeline` or any ragroute retriever; ragroute's LlamaIndex
  retrievers are unwrapped, any other LlamaIndex retriever or index is adapted) with the gate's
  depth, else ``similarity_top_k`` (``k`` is an alias),
  ``answer`` / ``stop`` return no nodes. Inside a ``RetrieverQueryEngine`` that means LlamaIndex's
  synthesizer answers "Empty Response" without calling the LLM: to let the LLM answer from its own
  knowledge, call :meth:`~GatedLlamaRetriever.retrieve_with_decision` and ask the LLM yourself
  when it returns no nodes (its :class:`GateOutcome` says why).
  ``last_decision`` is the gate's decision (every node's metadata carries it, hidden from the
  LLM); ``last_routing`` the routing decision of a routed retriever. Both belong to whichever
  query ended last: with concurrent queries read a node's own, ``node.metadata["gate"]`` and
  :meth:`GatedLlamaRetriever.decision_of` (its ``decision_id`` names the routing decision); a
  call's own, also when the gate answered and there are no nodes:
  :meth:`~GatedLlamaRetriever.retrieve_with_decision` (a :class:`GateOutcome`).
* :class:`StepwiseLlamaRetriever`: runs a
  :class:`~ragroute.gate.controller.StepwiseController` and returns the run's evidence
  (the steps' hits interleaved, top ``k``) as nodes; ``last_result`` holds the whole run
  (steps, gate decisions, trace, the planner's answer); ``decision_of(node)`` the run behind a
  node, ``retrieve_with_decision(query)`` a call's own.

Both plug into a ``RetrieverQueryEngine`` like any LlamaIndex retriever and search in a worker
thread under ``aretrieve``; node ids are ``SOURCE:DOC_ID`` (see :mod:`ragroute.integrations.llamaindex`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from ragroute.context import QueryContext, checked_caller, in_worker_thread
from ragroute.errors import InvalidArgumentError, is_finite_number, value_type_name
from ragroute.gate.controller import StepwiseResult
from ragroute.integrations.adapters import OWN_PREFIX, DecisionLog, index_scale, scoped_hits, several_sources
from ragroute.integrations.llamaindex import (
    IndexLlamaRetriever,
    LlamaRetrieverAdapter,
    RoutedLlamaRetriever,
    _Decisions,
    _TopK,
    check_keywords,
    hit_to_node,
    query_context,
    query_encoder,
    resolve_top_k,
)
from ragroute.integrations.targets import check_target
from ragroute.pipeline.score_scale import SourceScale
from ragroute.pipeline.stages import GateDecision, GateStage
from ragroute.route.sources import hits_of
from ragroute.scopes import caller_scopes
from ragroute.types import Decision


class GateOutcome(NamedTuple):
    """What one gated query decided: the ``gate``'s decision, and the ``routing`` decision when it
    retrieved through a routed retriever (``None`` when the gate answered or nothing routes)."""

    gate: GateDecision
    routing: Decision | None


class GatedLlamaRetriever(_Decisions[Decision, GateOutcome], _TopK, BaseRetriever):
    """Retrieves through ``retriever`` only when ``gate`` decides ``retrieve``; ``scopes``: the
    caller's (none: only public sources and documents, see :mod:`ragroute.scopes`); ``caller``: who
    asks (for a pipeline's per-caller exposure budget).

    Wrapping one of ragroute's LlamaIndex retrievers keeps what it was set up with: its filters,
    and, unless given here, its ``similarity_top_k``, ``scopes`` and ``caller`` (an ``hr`` caller's
    retriever stays the ``hr`` caller's, its exposure counted against that caller). A
    ``QueryBundle``'s ``embedding`` is the query vector when it fits the retriever's query encoder
    (see :func:`~ragroute.integrations.llamaindex.query_context`).

    ``decision_of(node)`` is the routing decision behind a node (``None`` when the wrapped retriever
    does not route); ``retrieve_with_decision(query)`` returns the nodes and that call's
    :class:`GateOutcome`, also when the gate answered and there are no nodes.
    """

    def __init__(
        self,
        gate: Any,
        retriever: Any,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        scopes: Sequence[str] | None = None,
        caller: str | None = None,
        keep_decisions: int = 128,
        **kwargs: Any,
    ) -> None:
        check_keywords(kwargs, type(self))
        super().__init__(**kwargs)
        self.gate = check_target(gate, "gate", ("gate_many",), type(self).__name__)
        self.retriever, wrapped = _searchable(retriever)
        self.filters: dict[str, Any] | None = getattr(wrapped, "filters", None)
        if similarity_top_k is None and k is None and wrapped is not None:
            similarity_top_k = wrapped.similarity_top_k
        self.similarity_top_k = resolve_top_k(similarity_top_k, k)
        self.scopes = caller_scopes(scopes if scopes is not None else getattr(wrapped, "scopes", ()))
        self.caller = checked_caller(caller if caller is not None else getattr(wrapped, "caller", ""))
        self.encoder = query_encoder(self.retriever)
        self._scale: SourceScale | None = None
        self.last_decision: GateDecision | None = None
        self.last_routing: Decision | None = None
        self.decisions = DecisionLog(keep_decisions)

    def _several_sources(self) -> bool:
        return several_sources(self.retriever)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        context = query_context(query_bundle, self.encoder, self.filters, self.scopes, self.caller)
        # through the pipeline's gate stage: a gate that raises (or answers nonsense) means
        # "retrieve", with the error in the decision, as in a pipeline and the controller
        decision = GateStage(self.gate, getattr(self.retriever, "router", None)).run([context])[0]
        if decision.action != "retrieve":
            self.last_decision, self.last_routing = decision, None
            self.decisions.report(GateOutcome(decision, None))
            return []
        k = decision.depth or self.similarity_top_k
        if hasattr(self.retriever, "retrieve_contexts"):
            result = self.retriever.retrieve_contexts([context], k)[0]
            hits, routed = result.hits, result.decision
        else:  # one index: scored as IndexLlamaRetriever scores it (a pipeline over it alone)
            self._scale = index_scale(self.retriever, self._scale)
            hits = self._scale.rescore(scoped_hits(hits_of(self.retriever, [context], k)[0], self.scopes))
            routed = None
        # both when the query ends, one tuple: until session 53 the gate's decision was kept when the
        # gate decided, so a query retrieving past a later one's end left its routing beside that
        # query's gate decision
        self.last_decision, self.last_routing = decision, routed
        decision_id = self.decisions.record(routed) if routed is not None else ""
        self.decisions.report(GateOutcome(decision, routed))
        gate: dict[str, Any] = {"action": decision.action, "reason": decision.reason}
        if is_finite_number(decision.probability):  # a failed gate computed none: NaN until session 52
            gate["p_retrieve"] = float(decision.probability)
        if "error" in decision.signals:
            gate["error"] = decision.signals["error"]
        nodes = []
        for hit in hits:
            node = hit_to_node(hit, routed, decision_id=decision_id)
            _set_hidden(node, "gate", dict(gate))  # each node its own: one node's edit changed them all
            nodes.append(node)
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await in_worker_thread(self._retrieve, query_bundle)


def _searchable(retriever: Any) -> tuple[Any, _TopK | None]:
    """What a gated retriever searches, and the ragroute LlamaIndex retriever it came in (whose
    filters, top k, scopes and caller come with it): a ragroute pipeline, index or retriever as it
    is; ragroute's own LlamaIndex retrievers unwrapped; any other LlamaIndex retriever or index
    through :class:`LlamaRetrieverAdapter`; anything else is
    :class:`~ragroute.errors.InvalidArgumentError`."""
    if isinstance(retriever, RoutedLlamaRetriever):
        return _searchable(retriever.routed)[0], retriever
    if isinstance(retriever, IndexLlamaRetriever):
        return retriever.index, retriever
    ragroute_like = ("retrieve_contexts", "search_contexts", "search_many")
    if any(callable(getattr(retriever, name, None)) for name in ragroute_like):
        return retriever, None
    if isinstance(retriever, BaseRetriever) or hasattr(retriever, "as_retriever"):
        return LlamaRetrieverAdapter(retriever), None
    raise InvalidArgumentError(
        f"GatedLlamaRetriever searches a ragroute Pipeline, index or retriever, or a LlamaIndex "
        f"retriever or index, not {value_type_name(retriever)}"
    )


class StepwiseLlamaRetriever(_Decisions[StepwiseResult, StepwiseResult], _TopK, BaseRetriever):
    """The step-wise controller's evidence as LlamaIndex nodes (``metadata["step"]``: which step);
    ``similarity_top_k`` nodes at most (``k`` is an alias, as on the other retrievers);
    ``scopes``: the caller's, passed to every step (none: only public sources and documents);
    ``caller``: who asks (every step counts against that caller's exposure budget).
    ``decision_of(node)`` and ``retrieve_with_decision(query)`` give the run
    (:class:`~ragroute.gate.controller.StepwiseResult`: steps, gate decisions, trace)."""

    def __init__(
        self,
        controller: Any,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        scopes: Sequence[str] = (),
        caller: str = "",
        keep_decisions: int = 128,
        **kwargs: Any,
    ) -> None:
        check_keywords(kwargs, type(self))
        super().__init__(**kwargs)
        self.controller = check_target(controller, "controller", ("run",), type(self).__name__)
        self.caller = checked_caller(caller)
        self.similarity_top_k = resolve_top_k(similarity_top_k, k)
        self.scopes = caller_scopes(scopes)
        self.last_result: Any = None
        self.decisions = DecisionLog(keep_decisions)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self.controller.run(
            QueryContext.of(query_bundle.query_str, scopes=self.scopes, caller=self.caller)
        )
        self.last_result = result
        decision_id = self.decisions.record(result)
        nodes = []
        for hit in scoped_hits(result.evidence(self.similarity_top_k), self.scopes):
            node = hit_to_node(hit, decision_id=decision_id)
            _set_hidden(node, "step", hit.explain.get("step"))
            _set_hidden(node, "complete", result.complete)
            nodes.append(node)
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await in_worker_thread(self._retrieve, query_bundle)


def _set_hidden(node: NodeWithScore, key: str, value: Any) -> None:
    """Put ``key`` in a node's metadata for the caller, out of what the LLM reads and what is embedded
    (as the routed retrievers keep their numbers out). A document's own value under ``key`` is kept
    as ``document_KEY``, as :func:`~ragroute.integrations.adapters.merged_metadata` keeps ragroute's
    other keys' (it was overwritten until session 40)."""
    metadata = node.node.metadata
    if key in metadata:
        name = OWN_PREFIX + key
        while name in metadata:
            name = OWN_PREFIX + name
        metadata[name] = metadata.pop(key)
    metadata[key] = value
    node.node.excluded_llm_metadata_keys.append(key)
    node.node.excluded_embed_metadata_keys.append(key)
