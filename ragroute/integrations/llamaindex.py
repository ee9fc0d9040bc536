"""LlamaIndex retrievers backed by ragroute, and LlamaIndex retrievers as ragroute sources.

* :class:`RoutedLlamaRetriever` routes each query with a :class:`~ragroute.pipeline.Pipeline`
  (gate, policy, router, multi-route fusion, rerank) and returns ``NodeWithScore`` s;
* :class:`IndexLlamaRetriever` wraps one ragroute index, source or any ragroute retriever;
* :class:`LlamaRetrieverAdapter` goes the other way: any LlamaIndex ``BaseRetriever`` (or a
  ``VectorStoreIndex``, through ``as_retriever``) as a ragroute retriever, so it can be a
  :class:`~ragroute.route.sources.Source` that ragroute routes to and fuses with others.

Both retrievers take ``similarity_top_k`` (``k`` is an alias) and search in a worker thread
under ``aretrieve``, so concurrent queries overlap and the event loop is never blocked. A
``QueryBundle`` that carries an ``embedding`` of the query encoder's dimension is used as the
query vector (nothing is encoded again): the embedding must come from the same model as
ragroute's query encoder, e.g. through :class:`~ragroute.integrations.llamaindex_embedding.EncoderEmbedding`.

Node metadata is small. The LLM and the embedder see the title and the document's own scalar
metadata; ``source``, ``doc_id``, ``rank``, ``modality``, ``parent_id``, ``route_probability``,
``decision_id`` and ``explain`` (the numbers behind the score) are hidden from both
(:data:`HIDDEN_METADATA_KEYS`). The routing decision is kept once per query on the retriever
(``last_decision``, or ``decision_of(node)`` under concurrency; ``retrieve_with_decision(query)``
returns the nodes and their query's decision, also when there are no nodes), never copied into nodes.
Node ids are ``SOURCE:DOC_ID`` so hits from different sources never collide (LlamaIndex drops
nodes with duplicate ids).

Caller scopes (:mod:`ragroute.scopes`): both retrievers take ``scopes=`` (the caller's labels;
none: only public sources and documents), and :meth:`~RoutedLlamaRetriever.with_scopes` gives a
copy for another caller (``QueryBundle`` has no room for them). :class:`LlamaRetrieverAdapter`
drops the nodes whose ``access`` metadata the caller's scope does not meet, and with
``scope_filters=llama_scope_filters`` (or a builder of your own) pushes the scope down into the
vector store as ``MetadataFilters``.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

import numpy as np
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from ragroute.context import QueryContext, checked_caller, in_worker_thread
from ragroute.errors import (
    InvalidArgumentError,
    RagrouteError,
    check_filters,
    check_k,
    check_keys,
    check_query,
)
from ragroute.integrations.adapters import (
    OWN_PREFIX,
    DecisionLog,
    ExternalRetriever,
    framework_metadata,
    framework_score,
    hit_id,
    index_scale,
    keeps_source_ids,
    made_by_ragroute,
    merged_metadata,
    own_metadata,
    query_encoder,
    scalar_metadata,
    scoped_hits,
    several_sources,
    sync_or_async,
)
from ragroute.integrations.targets import SEARCHABLE, check_target
from ragroute.route.sources import hits_of
from ragroute.scopes import ACCESS_KEY, caller_scopes
from ragroute.types import Decision, Document, Hit

#: ragroute's node metadata keys that neither the LLM nor the embedder sees
HIDDEN_METADATA_KEYS = (
    "source",
    "doc_id",
    "rank",
    "modality",
    "parent_id",
    "route_probability",
    "decision_id",
    "explain",
)
DEFAULT_TOP_K = 5
_NOT_DOCUMENT_FIELDS = {*HIDDEN_METADATA_KEYS, "title"}  # ragroute's own node keys, not a document's
#: what a LlamaIndex node's own metadata keys become on a hit: its title, parent and modality (not
#: metadata any more); every other scalar entry stays, ``source`` and ``doc_id`` included
_HIT_FIELDS = {"title", "parent_id", "modality"}


def hit_to_node(hit: Hit, decision: Decision | None = None, *, decision_id: str = "") -> NodeWithScore:
    """A LlamaIndex node for one hit: small metadata, ragroute's keys hidden from the LLM.

    ``decision`` (when routed) gives the node its route's probability; the decision itself
    stays on the retriever (``decision_id`` names it).
    """
    ours: dict[str, Any] = {
        "title": hit.title,
        "source": hit.source,
        "doc_id": hit.doc_id,
        "rank": hit.rank,
        "modality": hit.modality,
        "parent_id": hit.parent_id,
        # the node's own copy: the hit's is the one a step-wise run (its decision) keeps, and a
        # change to a node's numbers changed that run's until it was copied here
        "explain": copy.deepcopy(hit.explain),
    }
    if decision is not None:
        ours["route_probability"] = float(decision.routes.get(hit.source, 0.0))
    if decision_id:
        ours["decision_id"] = decision_id
    # the document's own fields first, then ragroute's; a document's own value under one of ragroute's
    # keys (its `source`, a file) is kept as `document_source`: it was overwritten until session 40
    metadata = merged_metadata(scalar_metadata(hit.metadata), ours, _NOT_DOCUMENT_FIELDS)
    # keys a LlamaIndex node this hit came from kept from the LLM / the embedder stay kept from them
    # (its `excluded_*_metadata_keys` were lost on the way through ragroute until session 37)
    framework = hit.explain.get("llamaindex") if isinstance(hit.explain, dict) else None
    framework = framework if isinstance(framework, dict) else {}

    def excluded(name: str) -> list[str]:
        kept = [OWN_PREFIX + k if k in _NOT_DOCUMENT_FIELDS else k for k in framework.get(name, ())]
        return [*HIDDEN_METADATA_KEYS, *kept]

    node = TextNode(
        id_=hit_id(hit),
        text=hit.text,
        metadata=metadata,
        excluded_llm_metadata_keys=excluded("excluded_llm_metadata_keys"),
        excluded_embed_metadata_keys=excluded("excluded_embed_metadata_keys"),
    )
    return NodeWithScore(node=node, score=float(hit.score))


def resolve_top_k(similarity_top_k: int | None, k: int | None) -> int:
    """The hits a LlamaIndex retriever returns: ``similarity_top_k``, or its alias ``k`` (the two must
    agree when both are given), else :data:`DEFAULT_TOP_K`; each a whole number >= 1
    (:func:`~ragroute.errors.check_k`: ``"5"``, ``2.5`` and ``True`` are refused, not coerced)."""
    if similarity_top_k is not None:
        similarity_top_k = check_k(similarity_top_k, "similarity_top_k")
    if k is not None:
        k = check_k(k)
    if similarity_top_k is not None and k is not None and similarity_top_k != k:
        raise RagrouteError(f"similarity_top_k={similarity_top_k} and k={k} disagree: give one")
    return similarity_top_k if similarity_top_k is not None else k if k is not None else DEFAULT_TOP_K


def check_keywords(kwargs: Mapping[str, Any], retriever: type) -> None:
    """One :class:`~ragroute.errors.InvalidArgumentError` line for a keyword neither ``retriever``'s
    constructor nor LlamaIndex's ``BaseRetriever`` takes (``filter=``, ``top_k=``), naming the
    retriever and the keyword it may have meant, as the LangChain retrievers do (it was LlamaIndex's
    ``TypeError: BaseRetriever.__init__() got an unexpected keyword argument`` until session 43)."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    known = {
        name
        for cls in (retriever, BaseRetriever)  # a class's signature: its constructor's, without self
        for name, parameter in inspect.signature(cls).parameters.items()
        if name != "self" and parameter.kind not in variadic
    }
    check_keys(kwargs, known, retriever.__name__, "keyword", InvalidArgumentError)


def query_context(
    query_bundle: QueryBundle,
    encoder: Any,
    filters: Mapping[str, Any] | None = None,
    scopes: Sequence[str] = (),
    caller: str = "",
) -> QueryContext:
    """A context for the bundle's query (with the caller's ``scopes``, and who asks: ``caller``, for
    per-caller exposure budgets); its ``embedding`` becomes
    ``encoder``'s query vector when the dimensions match (it is assumed to come from the same model)
    and every value is finite and not all are zero; otherwise the query is encoded as if there were
    none."""
    context = QueryContext.of(
        query_bundle.query_str,
        filters=dict(check_filters(filters)) if filters else None,
        scopes=caller_scopes(scopes),
        caller=caller,
    )
    embedding = query_bundle.embedding
    dim = getattr(encoder, "dim", None)
    if embedding is not None and encoder is not None and dim and len(embedding) == int(dim):
        row = np.asarray(embedding, dtype=np.float32)
        if np.isfinite(row).all() and row.any():  # NaN or all zeros: no direction to search in
            context.set_vector(encoder, row)
    return context


#: what a retriever keeps of its latest query (the gated one's decisions, the step-wise one's run):
#: a :meth:`_TopK.with_scopes` copy starts without them (it was handed the original caller's routing
#: decision, naming sources hidden from the copy's caller, until its own first query)
_LAST_OUTCOMES = ("last_decision", "last_routing", "last_result")


class _TopK:
    """``similarity_top_k`` with ``k`` as an alias (read and set), the caller's ``scopes`` and who
    asks (``caller``, for per-caller exposure budgets; ``""``: one shared anonymous caller)."""

    caller: str = ""
    _top_k: int = DEFAULT_TOP_K
    _scopes: tuple[str, ...] = ()

    @property
    def scopes(self) -> tuple[str, ...]:
        return self._scopes

    @scopes.setter
    def scopes(self, value: Any) -> None:
        # read at the assignment as the constructor reads it ("hr" one label, checked): the gated and
        # step-wise retrievers checked their nodes against the raw value, so `scopes = "hr"` assigned
        # later dropped the hr caller's documents as if the labels were "h" and "r" (until session 49)
        self._scopes = caller_scopes(value)

    @property
    def similarity_top_k(self) -> int:
        return self._top_k

    @similarity_top_k.setter
    def similarity_top_k(self, value: int) -> None:
        # checked at the assignment, as `k` was: 0, -5, "5" or None failed only at the next query,
        # and a step-wise retriever returned no node (0) or every node (None) (until session 37)
        self._top_k = check_k(value, "similarity_top_k")

    def with_scopes(self, scopes: Sequence[str], *, caller: str | None = None) -> Any:
        """A copy of this retriever for a caller holding ``scopes`` (and named ``caller``, when
        given): it shares the index or pipeline, not the log of decisions nor the latest query's
        outcome (a caller's decision names what only its scopes may see). LlamaIndex's ``retrieve``
        takes no per-call arguments: one copy per caller is how a server tells callers apart."""
        twin = copy.copy(self)
        filters = getattr(self, "filters", None)
        if isinstance(filters, dict):  # its own: an edit to one copy's filters changed every copy's
            setattr(twin, "filters", dict(filters))  # noqa: B010 - only some retrievers filter
        twin.scopes = caller_scopes(scopes)
        if caller is not None:
            twin.caller = checked_caller(caller)
        decisions = getattr(self, "decisions", None)
        if isinstance(decisions, DecisionLog):
            setattr(twin, "decisions", DecisionLog(decisions.size))  # noqa: B010 - only routed retrievers log
        for name in _LAST_OUTCOMES:  # the latest query's: the original's caller's, not this copy's
            if name in vars(twin):
                setattr(twin, name, None)
        return twin

    def _several_sources(self) -> bool:
        """Whether this retriever's nodes may come from several sources (ids that may collide): a
        :class:`LlamaRetrieverAdapter` over it then keeps each hit's ``SOURCE:DOC_ID`` as its id."""
        return True

    def retrieve(self, str_or_query_bundle: str | QueryBundle) -> list[NodeWithScore]:
        # a query that is neither text nor a QueryBundle (None, 123) is one InvalidQueryError line, as
        # LangChain's invoke says it: until session 54 LlamaIndex's instrumentation failed first,
        # with a multi-line pydantic ValidationError of its RetrievalStartEvent
        if not isinstance(str_or_query_bundle, QueryBundle):
            check_query(str_or_query_bundle)
        return cast(BaseRetriever, super()).retrieve(str_or_query_bundle)

    async def aretrieve(self, str_or_query_bundle: str | QueryBundle) -> list[NodeWithScore]:
        if not isinstance(str_or_query_bundle, QueryBundle):
            check_query(str_or_query_bundle)
        return await cast(BaseRetriever, super()).aretrieve(str_or_query_bundle)

    @property
    def k(self) -> int:
        return self.similarity_top_k

    @k.setter
    def k(self, value: int) -> None:
        self.similarity_top_k = resolve_top_k(None, value)


#: what a retriever keeps per query for :meth:`_Decisions.decision_of` (a node's)
Recorded = TypeVar("Recorded")
#: what one call reports for :meth:`_Decisions.retrieve_with_decision` (a call's own)
Outcome = TypeVar("Outcome")


class _Decisions(Generic[Recorded, Outcome]):
    """A retriever that keeps each query's decision in ``decisions`` (a :class:`DecisionLog`):
    :meth:`decision_of` reads a node's (a ``Recorded``), :meth:`retrieve_with_decision` returns a
    call's own (an ``Outcome``): the routing decision on both for the routed retriever; a
    :class:`~ragroute.integrations.llamaindex_gate.GateOutcome` from the gated one's call (its
    nodes name the routing decision); the whole run on both for the step-wise one."""

    decisions: DecisionLog

    def decision_of(self, node: NodeWithScore | Any) -> Recorded | None:
        """The decision of the query that returned ``node`` (if still kept)."""
        inner = getattr(node, "node", node)
        return cast("Recorded | None", self.decisions.get(str(inner.metadata.get("decision_id", ""))))

    def retrieve_with_decision(self, query: str | QueryBundle) -> tuple[list[NodeWithScore], Outcome]:
        """``retrieve(query)`` and the decision of that very query, also when it returns no nodes
        (routed to ``none``, a gate answered) and whatever other queries run at once (``last_decision``
        belongs to whichever ended last)."""
        with self.decisions.capture() as captured:
            nodes = cast(BaseRetriever, self).retrieve(query)
        return nodes, cast(Outcome, captured.decision)

    async def aretrieve_with_decision(self, query: str | QueryBundle) -> tuple[list[NodeWithScore], Outcome]:
        """:meth:`retrieve_with_decision` through ``aretrieve`` (the search in a worker thread)."""
        with self.decisions.capture() as captured:
            nodes = await cast(BaseRetriever, self).aretrieve(query)
        return nodes, cast(Outcome, captured.decision)


class RoutedLlamaRetriever(_Decisions[Decision, "Decision | None"], _TopK, BaseRetriever):
    """A LlamaIndex retriever that routes with a :class:`~ragroute.pipeline.Pipeline`.

    ``last_decision`` is the decision of the latest query; with concurrent queries, read a
    node's own with :meth:`decision_of` (each node's ``decision_id`` names it; the last
    ``keep_decisions`` are kept), or a call's own with :meth:`retrieve_with_decision` /
    :meth:`aretrieve_with_decision` (also when it returns no nodes). ``filters`` (ragroute metadata
    filters) apply to every query; ``scopes`` are the caller's (none: only public sources and
    documents), ``caller`` who asks (for the pipeline's per-caller exposure budget;
    :meth:`with_scopes` makes a copy per caller).
    """

    def __init__(
        self,
        routed: Any,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        scopes: Sequence[str] = (),
        caller: str = "",
        keep_decisions: int = 128,
        **kwargs: Any,
    ) -> None:
        check_keywords(kwargs, type(self))
        super().__init__(**kwargs)
        self.routed = check_target(routed, "pipeline", ("retrieve_contexts", "retrieve"), type(self).__name__)
        self.caller = checked_caller(caller)
        self.similarity_top_k = resolve_top_k(similarity_top_k, k)
        self.filters = dict(check_filters(filters)) if filters else None
        if self.filters and not hasattr(routed, "retrieve_contexts"):  # it would drop them, silently
            raise InvalidArgumentError(
                f"filters need a ragroute Pipeline to route with; {type(routed).__name__} takes only "
                "the query text (filter inside it, or wrap a Pipeline)"
            )
        self.scopes = caller_scopes(scopes)
        self.encoder = query_encoder(routed)
        self.decisions = DecisionLog(keep_decisions)

    @property
    def last_decision(self) -> Decision | None:
        return self.decisions.last

    def _several_sources(self) -> bool:
        return several_sources(self.routed)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        context = query_context(query_bundle, self.encoder, self.filters, self.scopes, self.caller)
        if hasattr(self.routed, "retrieve_contexts"):
            result = self.routed.retrieve_contexts([context], self.similarity_top_k)[0]
        else:  # anything with retrieve(query, k) -> hits and decision
            result = self.routed.retrieve(context.text, self.similarity_top_k)
            result.hits = scoped_hits(result.hits, self.scopes)
        decision_id = self.decisions.record(result.decision)
        return [hit_to_node(hit, result.decision, decision_id=decision_id) for hit in result.hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await in_worker_thread(self._retrieve, query_bundle)


class IndexLlamaRetriever(_TopK, BaseRetriever):
    """A LlamaIndex retriever over one ragroute index, source or retriever (no routing).

    ``scopes``: the caller's; a source outside them returns nothing, documents whose access
    labels they do not meet are never returned (filtered in ragroute's indexes, checked after
    any other retriever). ``caller``: who asks, for the per-caller exposure budget of a pipeline
    searched through it (it was dropped, every search charged to the anonymous caller, until
    session 40).
    """

    def __init__(
        self,
        index: Any,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        scopes: Sequence[str] = (),
        caller: str = "",
        **kwargs: Any,
    ) -> None:
        check_keywords(kwargs, type(self))
        super().__init__(**kwargs)
        self.index = check_target(index, "index", SEARCHABLE, type(self).__name__)
        self.caller = checked_caller(caller)
        self.similarity_top_k = resolve_top_k(similarity_top_k, k)
        self.filters = dict(check_filters(filters)) if filters else None
        self.scopes = caller_scopes(scopes)
        self.encoder = query_encoder(index)
        self._scale = index_scale(self.index)

    def _several_sources(self) -> bool:
        # a pipeline or a Source over one searched as the index: its sources' (False until session 49,
        # and an adapter over this retriever kept two sources' documents of one id as one hit)
        return several_sources(self.index)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        context = query_context(query_bundle, self.encoder, self.filters, self.scopes, self.caller)
        hits = hits_of(self.index, [context], self.similarity_top_k)[0]
        self._scale = index_scale(self.index, self._scale)  # scores as a pipeline over the index gives
        return [hit_to_node(hit) for hit in self._scale.rescore(scoped_hits(hits, context.scopes))]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await in_worker_thread(self._retrieve, query_bundle)


# --------------------------------------------------------------------------- LlamaIndex -> ragroute


def node_parent(node: NodeWithScore) -> str | None:
    """The document a node was cut from: ragroute's ``parent_id`` metadata, else LlamaIndex's
    ``ref_doc_id`` (None when the node names none)."""
    parent = (node.node.metadata or {}).get("parent_id") or getattr(node.node, "ref_doc_id", None)
    return str(parent) if parent else None


def node_to_hit(node: NodeWithScore, rank: int, source: str = "", *, qualified: bool = False) -> Hit:
    """A ragroute hit for a LlamaIndex node: ``doc_id`` is the node's ``doc_id`` metadata (nodes
    from ragroute's own retrievers; with ``qualified``, their ``SOURCE:DOC_ID`` node id, for nodes
    that may come from several sources) or its node id; ``parent_id`` its source document's id.

    Metadata: for a node ragroute made, the metadata of the document it shows (ragroute's keys
    left out, ``document_KEY`` back as ``KEY``); any other node's scalar entries but its title,
    ``parent_id`` and ``modality`` (the hit's own fields), its ``source`` and ``doc_id`` included."""
    inner = node.node
    metadata = dict(inner.metadata or {})
    # a node ragroute made (`source:doc_id`) names its document in `doc_id`; any other node is its own
    # (a user's `doc_id` metadata, shared by a document's chunks, made them one hit until session 37)
    ours = made_by_ragroute(inner.node_id, metadata)
    doc_id = str(metadata["doc_id"]) if ours and not qualified else str(inner.node_id)
    parent = node_parent(node)
    raw = framework_score(node.score)
    if ours:
        own = own_metadata(metadata, _NOT_DOCUMENT_FIELDS)
    else:
        own = {k: v for k, v in metadata.items() if k not in _HIT_FIELDS}
    return Hit(
        doc_id=doc_id,
        score=raw if raw is not None else 1.0 / rank,
        source=source,
        rank=rank,
        text=inner.get_content(metadata_mode=MetadataMode.NONE),
        title=str(metadata.get("title") or ""),
        metadata=framework_metadata(own),
        parent_id=parent if parent != doc_id else None,
        modality=str(metadata.get("modality") or "text"),
        explain={
            "llamaindex": {
                "rank": rank,
                "score": raw,
                "node_id": inner.node_id,
                **{
                    name: _own_keys(getattr(inner, name), ours)
                    for name in ("excluded_llm_metadata_keys", "excluded_embed_metadata_keys")
                    if getattr(inner, name, None)
                },
            }
        },
    )


def _own_keys(keys: Sequence[str], ours: bool) -> list[str]:
    """A node's excluded metadata keys named as on the hit: a ragroute node's less ragroute's own
    keys, ``document_KEY`` as ``KEY`` (as :func:`own_metadata` names them)."""
    if not ours:
        return list(keys)
    prefixed = {OWN_PREFIX + key: key for key in _NOT_DOCUMENT_FIELDS}
    return [prefixed.get(key, key) for key in keys if key not in _NOT_DOCUMENT_FIELDS]


class LlamaRetrieverAdapter(ExternalRetriever):
    """Any LlamaIndex retriever, or an index with ``as_retriever`` (a ``VectorStoreIndex``), as a
    ragroute retriever: ``Source("docs", LlamaRetrieverAdapter(index.as_retriever()))``.

    ``k`` is honoured per call: an index gets ``as_retriever(similarity_top_k=k)``, a retriever
    with a ``similarity_top_k`` attribute a shallow copy with it set (one per ``k``, so
    concurrent searches never change a shared retriever); any other retriever's nodes are cut
    to ``k``. A node without a score (``None``) scores ``1/rank``. ``documents`` default to
    an index's docstore (what training-free routers build a prototype of the source from).

    A caller's scope is checked on every node returned (its ``access`` metadata). With
    ``scope_filters`` (``scopes -> MetadataFilters``, e.g. :func:`llama_scope_filters`) it is
    also pushed down: an index is asked through ``as_retriever(filters=...)``, a retriever with
    a ``_filters`` attribute and none set (a ``VectorIndexRetriever``) through a copy with them;
    ragroute's own LlamaIndex retrievers always get the caller's scopes and who asks (a copy per
    query group: ``with_scopes(scopes, caller=...)``; the queries of different callers asked apart).
    """

    framework = "llamaindex"

    def __init__(
        self,
        retriever: Any,
        *,
        name: str = "llamaindex",
        documents: Sequence[Document] = (),
        scope_filters: Any = None,
    ) -> None:
        if not hasattr(retriever, "retrieve") and not hasattr(retriever, "as_retriever"):
            raise RagrouteError(
                f"{type(retriever).__name__} is not a LlamaIndex retriever or index "
                "(it has neither retrieve nor as_retriever)"
            )
        self.target = retriever
        self._by_k: dict[int, Any] = {}
        self._lock = threading.Lock()
        ours = isinstance(retriever, _TopK)
        if scope_filters is None and ours:  # ragroute's own: pass the scopes on
            scope_filters = frozenset
        super().__init__(name, documents, scope_filters=scope_filters)
        # and who asks: each caller's queries go to a copy for that caller (with_scopes(caller=)),
        # so a pipeline behind it counts each against its own budget (before, all were "")
        self.passes_caller = ours

    @property
    def documents(self) -> Sequence[Document]:
        if not self._documents:  # read an index's docstore on first use
            self._documents = _docstore_documents(self.target)
        return self._documents

    def retriever_for(self, k: int) -> Any:
        """The LlamaIndex retriever that answers with ``k`` nodes (made once per ``k``)."""
        with self._lock:
            if k not in self._by_k:
                target = self.target
                if not hasattr(target, "retrieve"):  # an index
                    self._by_k[k] = target.as_retriever(similarity_top_k=k)
                elif hasattr(target, "similarity_top_k"):
                    retriever = copy.copy(target)
                    retriever.similarity_top_k = k
                    self._by_k[k] = retriever
                else:
                    self._by_k[k] = target
            return self._by_k[k]

    def fetch(self, query: str, k: int) -> list[Hit]:
        return self._hits(self.retriever_for(k), query, k)

    def _hits(self, retriever: Any, query: str, k: int) -> list[Hit]:
        nodes = sync_or_async(  # a retriever that answers only asynchronously: through aretrieve
            retriever,
            BaseRetriever,
            "_aretrieve",
            lambda: retriever.retrieve(query),
            lambda: retriever.aretrieve(query),
            sync_method="_retrieve",
        )[:k]
        qualified = keeps_source_ids(self.target, ((n.node.node_id, n.node.metadata) for n in nodes))
        return [node_to_hit(node, rank, self.name, qualified=qualified) for rank, node in enumerate(nodes, 1)]

    def fetch_scoped(
        self, queries: list[str], k: int, scopes: frozenset[str], caller: str | None = None
    ) -> list[list[Hit]]:
        retriever = self.scoped_retriever(k, scopes, caller=caller)
        if retriever is None:
            return self.fetch_many(queries, k)
        return [self._hits(retriever, query, k) for query in queries]

    def scoped_retriever(self, k: int, scopes: frozenset[str], *, caller: str | None = None) -> Any:
        """The LlamaIndex retriever that answers with ``k`` nodes a caller holding ``scopes`` may
        read (``None`` when the scope cannot be pushed down into this retriever). One of ragroute's
        own is a copy for that caller: its ``scopes``, and its ``caller`` when given (who asks, for
        the exposure budget of a pipeline behind it; ``None`` keeps the retriever's own)."""
        target = self.target
        if isinstance(target, _TopK):
            twin = target.with_scopes(sorted(scopes), caller=caller)
            twin.similarity_top_k = k
            return twin
        if self.scope_filters is None:  # no builder: the scope cannot be pushed down
            return None
        filters = self.scope_filters(scopes)
        if not hasattr(target, "retrieve"):  # an index
            return target.as_retriever(similarity_top_k=k, filters=filters)
        if hasattr(target, "_filters") and getattr(target, "_filters", None) is None:
            retriever = copy.copy(target)
            retriever._filters = filters
            if hasattr(retriever, "similarity_top_k"):
                retriever.similarity_top_k = k
            return retriever
        return None


def llama_scope_filters(scopes: frozenset[str] | Sequence[str], key: str = ACCESS_KEY) -> MetadataFilters:
    """LlamaIndex ``MetadataFilters`` for a caller holding ``scopes``: nodes whose ``key`` metadata
    is empty (public), or one of the scopes (one label), or a list holding one (``ANY``; on a
    comma-separated string a store may match substrings: the adapter's own check drops those).
    The built-in ``SimpleVectorStore`` supports all three operators; check yours does."""
    scopes = sorted(scopes)
    filters: list[MetadataFilter | MetadataFilters] = [
        MetadataFilter(key=key, value=None, operator=FilterOperator.IS_EMPTY)
    ]
    if scopes:
        filters += [
            MetadataFilter(key=key, value=scopes, operator=FilterOperator.IN),
            MetadataFilter(key=key, value=scopes, operator=FilterOperator.ANY),
        ]
    return MetadataFilters(filters=filters, condition=FilterCondition.OR)


def _docstore_documents(target: Any) -> list[Document]:
    """The nodes of an index's (or a vector index retriever's) docstore as ragroute documents."""
    docstore = getattr(target, "docstore", None) or getattr(target, "_docstore", None)  # index, retriever
    docs = getattr(docstore, "docs", None) or {}
    out = []
    for node_id, node in docs.items():
        try:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
        except (AttributeError, TypeError, ValueError):
            continue
        metadata = scalar_metadata(getattr(node, "metadata", None) or {})
        out.append(
            Document(id=str(node_id), text=text, title=str(metadata.get("title") or ""), metadata=metadata)
        )
    return out
