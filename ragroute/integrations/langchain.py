"""LangChain retrievers backed by ragroute, and LangChain retrievers as ragroute sources.

Needs the ``langchain`` extra (``pip install 'ragroute[langchain]'``: ``langchain-core``); this is
the only module that imports it.

* :class:`RoutedLangChainRetriever`: a ``langchain_core`` ``BaseRetriever`` that routes each query
  with a :class:`~ragroute.pipeline.Pipeline`;
* :class:`IndexLangChainRetriever`: one over a plain ragroute index, source or retriever;
* :class:`LangChainRetrieverAdapter`: any LangChain retriever as a ragroute retriever, so it can be
  a :class:`~ragroute.route.sources.Source` that ragroute routes to and fuses with others.

Returned ``Document`` s carry small metadata: ``doc_id``, ``source``, ``score`` (plus ``title``,
``parent_id`` (a chunk's document), ``modality`` (other than text), ``route_probability`` and
``decision_id`` when there are any, and the document's own scalar
fields; a document's own value under one of those keys, e.g. a loader's ``source`` path, is
kept as ``document_source``); their ``id`` is ``SOURCE:DOC_ID``. The routing decision is kept
once per query on the retriever (``last_decision``, or ``decision_of(document)`` under concurrency;
``invoke_with_decision(query)`` returns the documents and their query's decision, also when there
are none). ``ainvoke`` runs the search in a worker thread, so concurrent queries overlap and the
event loop is never blocked.

Caller scopes (:mod:`ragroute.scopes`): both retrievers take a ``scopes`` field (the caller's
labels; none: only public sources and documents), and per call ``invoke(query, scopes=[...])``;
likewise ``caller`` (who asks, for a pipeline's per-caller exposure budget, :mod:`ragroute.exposure`;
``""``: one shared anonymous caller), per call ``invoke(query, caller="user-42")``.
:class:`LangChainRetrieverAdapter` drops the documents whose ``access`` metadata the caller's
scope does not meet, and with ``scope_filters`` (``scopes -> keyword arguments of invoke``, e.g.
``lambda s: {"filter": document_filter(s)}`` for an ``InMemoryVectorStore``) pushes the scope
down into the store; ragroute's own retrievers get ``scopes=`` passed on, and the ``caller=`` of
each query (each caller's queries asked apart).
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document as LangChainDocument
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableConfig
    from langchain_core.runnables.config import set_config_context
except ImportError as exc:  # the optional extra: say which one, not only the module that is missing
    raise ImportError(
        f"ragroute.integrations.langchain needs langchain-core: pip install 'ragroute[langchain]' ({exc})"
    ) from exc
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ragroute.context import QueryContext, checked_caller, in_worker_thread
from ragroute.errors import InvalidArgumentError, RagrouteError, check_filters, check_k, check_keys
from ragroute.index.base import search_contexts
from ragroute.integrations.adapters import (
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
    scalar_metadata,
    scoped_hits,
    several_sources,
    sync_or_async,
)
from ragroute.integrations.targets import SEARCHABLE, check_target
from ragroute.pipeline.score_scale import SourceScale
from ragroute.route.sources import Source
from ragroute.scopes import ACCESS_KEY, caller_scopes, labels_of, visible
from ragroute.types import Decision, Document, Hit

_RAGROUTE_KEYS = (
    "doc_id",
    "source",
    "score",
    "title",
    "parent_id",
    "modality",
    "route_probability",
    "decision_id",
)
_SCORE_KEYS = ("score", "relevance_score", "similarity", "_similarity_score")
_UNSET: Any = object()  # a positional pipeline or index not given (None is given, and refused)
#: what ``invoke`` / ``ainvoke`` (and ``batch``) take per call, besides LangChain's own ``run_id``
_PER_CALL = ("scopes", "k", "caller", "filters")


def hit_to_document(
    hit: Hit, decision: Decision | None = None, *, decision_id: str = ""
) -> LangChainDocument:
    """A LangChain document for one hit, with small metadata (see the module's docstring)."""
    ours: dict[str, Any] = {"doc_id": hit.doc_id, "source": hit.source, "score": float(hit.score)}
    if hit.title:
        ours["title"] = hit.title
    # a chunk names its document, a table or image its modality: both were left out until session 43, so
    # a LangChainRetrieverAdapter over this retriever returned every chunk as a document of its own
    if hit.parent_id:
        ours["parent_id"] = hit.parent_id
    if hit.modality != "text":
        ours["modality"] = hit.modality
    if decision is not None:
        ours["route_probability"] = float(decision.routes.get(hit.source, 0.0))
    if decision_id:
        ours["decision_id"] = decision_id
    # the document's own fields first, then ragroute's; a document's own value under one of ragroute's
    # keys (a loader's `source` path) is kept as `document_source`: it was overwritten until session 40
    metadata = merged_metadata(scalar_metadata(hit.metadata), ours, _RAGROUTE_KEYS)
    return LangChainDocument(
        page_content=hit.text,
        metadata=metadata,
        id=hit_id(hit),
    )


def _one_line(error: ValidationError, where: str) -> InvalidArgumentError:
    """A pydantic validation error as ragroute's one line: the first problem, naming the field
    (the checks of :mod:`ragroute.errors` name it themselves)."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    missing = first["type"] == "missing"
    message = f"{field} is required" if missing else str(first["msg"]).removeprefix("Value error, ")
    if not message.startswith(field):
        message = f"{field}: {message}"
    return InvalidArgumentError(f"{where}: {message}")


class _RagrouteRetriever(BaseRetriever):
    """What both retrievers share: ``k``, ``filters``, ``scopes`` and ``caller`` (also per call:
    ``invoke(query, scopes=..., caller=..., k=..., filters=...)``, each in place of the field for
    that call) and searching in a thread under ``ainvoke``.

    An unknown keyword (``filter=``, ``scope=``, ``top_k=``, ``similarity_top_k=``), at the
    constructor, in ``model_copy(update=...)`` or per call, is refused with one line naming it
    (``extra="forbid"``), not ignored: a typo would otherwise drop a filter or a caller's scopes
    without a word. A copy (``model_copy()``, ``copy.copy``, ``copy.deepcopy``) shares what it
    searches (the pipeline or index and their models) and checks ``update``'s fields as the
    constructor does."""

    #: what a deep copy shares instead of copying (what it searches: models, ONNX sessions)
    _SHARED: ClassVar[tuple[str, ...]] = ()

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=True)

    k: int = Field(default=5, ge=1, description="Documents returned per query.")
    filters: dict[str, Any] | None = Field(default=None, description="ragroute metadata filters.")
    scopes: tuple[str, ...] = Field(
        default=(), description="The caller's scopes (none: only public sources and documents)."
    )
    caller: str = Field(default="", description="Who asks, for per-caller exposure budgets ('': anonymous).")

    def __init__(self, **kwargs: Any) -> None:
        check_keys(kwargs, type(self).model_fields, type(self).__name__, "keyword", InvalidArgumentError)
        try:
            super().__init__(**kwargs)
        except ValidationError as error:
            raise _one_line(error, type(self).__name__) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)  # fields are checked as in the constructor
        except ValidationError as error:
            raise _one_line(error, type(self).__name__) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy with ``update``'s fields set as assignments are, so checked as in the constructor
        (pydantic sets them unchecked: ``filters=["category"]`` failed only at the query, with a
        ValueError, until session 40)."""
        update = dict(update or {})
        check_keys(update, type(self).model_fields, type(self).__name__, "field", InvalidArgumentError)
        twin = super().model_copy(deep=deep)
        for name, value in update.items():
            setattr(twin, name, value)
        return twin

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        """A deep copy (``model_copy(deep=True)``, ``copy.deepcopy``) shares what it searches (a
        pipeline's models cannot be copied: an ONNX session raised TypeError until session 40) and
        copies the rest; a routed one starts its own decisions (:class:`DecisionLog`'s own copy)."""
        memo = {} if memo is None else memo
        for name in self._SHARED:
            shared = getattr(self, name, None)
            memo.setdefault(id(shared), shared)
        return super().__deepcopy__(memo)

    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[LangChainDocument]:
        self._check_call(kwargs)
        return super().invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[LangChainDocument]:
        self._check_call(kwargs)
        return await super().ainvoke(input, config, **kwargs)

    def _check_call(self, kwargs: Mapping[str, Any]) -> None:
        """One line for a keyword ``invoke`` does not take (a raw TypeError from inside LangChain's
        run, naming a private method, until session 40)."""
        check_keys(
            kwargs, (*_PER_CALL, "run_id"), f"{type(self).__name__}.invoke", "keyword", InvalidArgumentError
        )

    def _several_sources(self) -> bool:
        """Whether this retriever's documents may come from several sources (ids that may collide): a
        :class:`LangChainRetrieverAdapter` over it then keeps each hit's ``SOURCE:DOC_ID`` as its id."""
        return True

    @field_validator("k", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> int:
        return check_k(value)  # the check of invoke(query, k=...): "3", 2.5 and True are refused

    @field_validator("filters", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        return check_filters(value)

    @field_validator("caller", mode="before")
    @classmethod
    def _who(cls, value: Any) -> str:
        return checked_caller(value)

    @field_validator("scopes", mode="before")
    @classmethod
    def _one_label_or_many(cls, value: Any) -> tuple[str, ...]:
        return caller_scopes(value)  # "hr" is one label, as everywhere in ragroute, not two letters

    def _search(self, context: QueryContext, k: int) -> list[LangChainDocument]:  # pragma: no cover
        raise NotImplementedError

    def _context(
        self,
        query: str,
        scopes: Sequence[str] | None = None,
        caller: str | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> QueryContext:
        filters = self.filters if filters is None else check_filters(filters)  # a call's own, in place
        return QueryContext.of(
            query,
            filters=dict(filters) if filters else None,
            scopes=caller_scopes(self.scopes if scopes is None else scopes),
            caller=self.caller if caller is None else checked_caller(caller),
        )

    def _run(
        self,
        query: str,
        scopes: Sequence[str] | None,
        k: int | None,
        caller: str | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[LangChainDocument]:
        context = self._context(query, scopes, caller, filters)
        return self._search(context, self.k if k is None else check_k(k))

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        scopes: Sequence[str] | None = None,
        k: int | None = None,
        caller: str | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[LangChainDocument]:
        with set_config_context({"callbacks": run_manager.get_child()}) as context:
            return context.run(self._run, query, scopes, k, caller, filters)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        scopes: Sequence[str] | None = None,
        k: int | None = None,
        caller: str | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[LangChainDocument]:
        # LangChain retrievers searched as sources run as this run's children (their callbacks
        # nested under it), as inside LangChain's own composite runnables
        with set_config_context({"callbacks": run_manager.get_sync().get_child()}) as context:
            return await in_worker_thread(self._run, query, scopes, k, caller, filters, context=context)


class RoutedLangChainRetriever(_RagrouteRetriever):
    """A LangChain retriever that routes with a ragroute pipeline: ``RoutedLangChainRetriever(p, k=5)``.

    ``last_decision`` is the decision of the latest query; with concurrent queries, read a
    document's own with :meth:`decision_of` (the last ``keep_decisions`` are kept), or a call's own
    with :meth:`invoke_with_decision` / :meth:`ainvoke_with_decision` (also when it returns no
    documents).
    """

    pipeline: Any = Field(description="A ragroute Pipeline (anything with retrieve_contexts).")
    keep_decisions: int = Field(default=128, ge=1)

    @field_validator("pipeline")
    @classmethod
    def _routes(cls, value: Any) -> Any:
        return check_target(value, "pipeline", ("retrieve_contexts",))

    @field_validator("keep_decisions", mode="before")
    @classmethod
    def _kept(cls, value: Any) -> int:
        return check_k(value, "keep_decisions")

    _decisions: DecisionLog = PrivateAttr()
    _SHARED = ("pipeline",)

    def __init__(self, pipeline: Any = _UNSET, /, **kwargs: Any) -> None:
        if pipeline is not _UNSET:
            kwargs["pipeline"] = pipeline
        super().__init__(**kwargs)
        self._decisions = DecisionLog(self.keep_decisions)

    def __copy__(self) -> RoutedLangChainRetriever:
        """A shallow copy (``model_copy()``) shares the pipeline, not the log of decisions: the
        copy's queries never become the original's ``last_decision``."""
        twin = super().__copy__()
        twin._decisions = DecisionLog(self.keep_decisions)
        return twin

    @property
    def last_decision(self) -> Decision | None:
        return self._decisions.last

    def _several_sources(self) -> bool:
        return several_sources(self.pipeline)

    def decision_of(self, document: LangChainDocument) -> Decision | None:
        """The decision of the query that returned ``document`` (if still kept)."""
        return self._decisions.get(str(document.metadata.get("decision_id", "")))

    def invoke_with_decision(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> tuple[list[LangChainDocument], Decision | None]:
        """``invoke(input, config, **kwargs)`` and the decision of that very query, also when it
        returns no documents (routed to ``none``) and whatever other queries run at once
        (``last_decision`` belongs to whichever ended last)."""
        with self._decisions.capture() as captured:
            documents = self.invoke(input, config, **kwargs)
        return documents, captured.decision

    async def ainvoke_with_decision(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> tuple[list[LangChainDocument], Decision | None]:
        """:meth:`invoke_with_decision` through ``ainvoke`` (the search in a worker thread)."""
        with self._decisions.capture() as captured:
            documents = await self.ainvoke(input, config, **kwargs)
        return documents, captured.decision

    def _search(self, context: QueryContext, k: int) -> list[LangChainDocument]:
        result = self.pipeline.retrieve_contexts([context], k)[0]
        decision_id = self._decisions.record(result.decision)
        return [hit_to_document(hit, result.decision, decision_id=decision_id) for hit in result.hits]


class IndexLangChainRetriever(_RagrouteRetriever):
    """A LangChain retriever over one ragroute index, source or retriever (no routing)."""

    index: Any = Field(description="A ragroute index, Source, or anything with search_many.")

    @field_validator("index")
    @classmethod
    def _searchable(cls, value: Any) -> Any:
        return check_target(value, "index", SEARCHABLE)

    _scale: SourceScale | None = PrivateAttr(default=None)
    _SHARED = ("index", "_scale")

    def __init__(self, index: Any = _UNSET, /, **kwargs: Any) -> None:
        if index is not _UNSET:
            kwargs["index"] = index
        super().__init__(**kwargs)

    def _several_sources(self) -> bool:
        # a pipeline or a Source over one searched as the index: its sources' (False until session 49,
        # and an adapter over this retriever kept two sources' documents of one id as one hit)
        return several_sources(self.index)

    def _search(self, context: QueryContext, k: int) -> list[LangChainDocument]:
        if isinstance(self.index, Source):
            if not self.index.visible_to(context.scopes):
                return []
            hits = self.index.search_contexts([context], k)[0][0]
        else:
            hits = search_contexts(self.index, [context], k)[0]
        self._scale = scale = index_scale(self.index, self._scale)  # scores as a pipeline over it gives
        return [hit_to_document(hit) for hit in scale.rescore(scoped_hits(hits, context.scopes))]


# --------------------------------------------------------------------------- LangChain -> ragroute


def document_to_hit(
    document: LangChainDocument, rank: int, source: str = "", *, qualified: bool = False
) -> Hit:
    """A ragroute hit for a LangChain document.

    ``doc_id``: a document ragroute's own retrievers made
    (:func:`~ragroute.integrations.adapters.made_by_ragroute`): its ``doc_id`` metadata, or with
    ``qualified`` (its retriever's documents may come from several sources) its ``SOURCE:DOC_ID``
    id; any other document's ``doc_id`` metadata, its ``id``, its ``id`` metadata, or a hash of its
    text. ``score``: the first numeric ``score`` / ``relevance_score`` / ``similarity`` metadata
    that is a finite number, else ``1/rank``. Metadata: for a document ragroute made, the metadata
    of the document it shows (ragroute's keys left out, ``document_KEY`` back as ``KEY``); any
    other document's scalar entries and lists of scalars but its title and what gave the id and the
    score, a loader's ``source`` included (it was dropped until session 40).
    """
    metadata = dict(document.metadata or {})
    ours = made_by_ragroute(document.id, metadata)
    if ours:
        doc_id = document.id if qualified else metadata["doc_id"]
    else:
        doc_id = metadata.get("doc_id") or document.id or metadata.get("id")
    if not doc_id:
        doc_id = hashlib.sha1(document.page_content.encode("utf-8")).hexdigest()[:16]
    scores = ((key, framework_score(metadata.get(key))) for key in _SCORE_KEYS)
    score_key, raw = next(((key, score) for key, score in scores if score is not None), ("", None))
    if ours:
        own = own_metadata(metadata, _RAGROUTE_KEYS)
    else:
        used = {"title", score_key, "doc_id" if metadata.get("doc_id") else ""}
        own = {k: v for k, v in metadata.items() if k not in used}
    parent = metadata.get("parent_id")
    return Hit(
        doc_id=str(doc_id),
        score=raw if raw is not None else 1.0 / rank,
        source=source,
        rank=rank,
        text=document.page_content,
        title=str(metadata.get("title") or ""),
        metadata=framework_metadata(own),
        parent_id=str(parent) if parent else None,
        modality=str(metadata.get("modality") or "text"),
        explain={"langchain": {"rank": rank, "score": raw}},
    )


class LangChainRetrieverAdapter(ExternalRetriever):
    """Any LangChain retriever as a ragroute retriever: ``Source("docs", LangChainRetrieverAdapter(r))``.

    ``k`` is honoured per call where the retriever allows: a retriever whose search takes ``k``
    or any keyword (a vector store's ``as_retriever()``) gets ``k=k``; one with a ``k`` field a copy
    with it set (one per ``k``); any other's documents are cut to ``k``. Several queries are
    asked with ``retriever.batch`` (concurrently). ``documents`` (optional) are what
    training-free routers build the source's prototype from.

    A caller's scope is checked on every document returned (its ``access`` metadata). With
    ``scope_filters`` (``scopes -> keyword arguments of invoke``) it is also pushed down, for
    retrievers that take keyword arguments (a vector store's ``as_retriever()``); ragroute's own
    LangChain retrievers get ``scopes=`` without it, and each query's ``caller=`` (who asks, for the
    exposure budget of a pipeline behind them; the queries of different callers are asked apart).
    """

    framework = "langchain"

    def __init__(
        self,
        retriever: Any,
        *,
        name: str = "langchain",
        documents: Sequence[Document] = (),
        scope_filters: Callable[[frozenset[str]], dict[str, Any]] | None = None,
    ) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise RagrouteError(
                f"{type(retriever).__name__} is not a LangChain retriever (langchain_core BaseRetriever)"
            )
        ours = isinstance(retriever, _RagrouteRetriever)
        if scope_filters is None and ours:
            scope_filters = _pass_scopes
        super().__init__(name, documents, scope_filters=scope_filters)
        # ragroute's own retrievers take who asks per call (invoke(query, caller=...)): each
        # caller's queries are asked apart, under that caller (before, all were "")
        self.passes_caller = ours
        self.target = retriever
        self._by_k: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _call(self, k: int) -> tuple[Any, dict[str, Any]]:
        """The retriever to ask for ``k`` documents and the keyword arguments to ask with."""
        target = self.target
        if _takes_k(target):
            return target, {"k": k}
        if "k" not in type(target).model_fields:
            return target, {}
        with self._lock:
            if k not in self._by_k:
                self._by_k[k] = target.model_copy(update={"k": k})
            return self._by_k[k], {}

    def fetch(self, query: str, k: int) -> list[Hit]:
        return self.fetch_many([query], k)[0]

    def fetch_many(self, queries: list[str], k: int, extra: dict[str, Any] | None = None) -> list[list[Hit]]:
        retriever, kwargs = self._call(k)
        kwargs = {**kwargs, **(extra or {})}
        found = sync_or_async(  # a retriever that answers only asynchronously: through abatch
            retriever,
            BaseRetriever,
            "_aget_relevant_documents",
            lambda: (
                [retriever.invoke(query, **kwargs) for query in queries]
                if len(queries) < 2
                else retriever.batch(list(queries), **kwargs)
            ),
            lambda: retriever.abatch(list(queries), **kwargs),
            sync_method="_get_relevant_documents",
        )
        out = []
        for documents in _document_lists(found, len(queries), self.name, retriever):
            qualified = keeps_source_ids(self.target, ((d.id, d.metadata) for d in documents[:k]))
            out.append(
                [
                    document_to_hit(d, rank, self.name, qualified=qualified)
                    for rank, d in enumerate(documents[:k], 1)
                ]
            )
        return out

    def fetch_scoped(
        self, queries: list[str], k: int, scopes: frozenset[str], caller: str | None = None
    ) -> list[list[Hit]]:
        build = self.scope_filters
        if build is None or not getattr(self.target, "_expects_other_args", False):  # no keyword arguments
            return self.fetch_many(queries, k)
        # ``caller`` comes only for ragroute's own retrievers (passes_caller); a builder of the
        # user's that names a caller itself keeps it
        extra = {} if caller is None else {"caller": caller}
        return self.fetch_many(queries, k, {**extra, **build(scopes)})


def _document_lists(
    found: Any, expected: int, name: str, retriever: Any
) -> list[Sequence[LangChainDocument]]:
    """``found`` (what a LangChain retriever returned for ``expected`` queries), checked: one list (or
    tuple) of ``Document`` s per query; anything else is one :class:`RagrouteError` line naming the
    source and the retriever (an ``AttributeError: 'str' object has no attribute 'id'`` from inside
    ragroute, or ``'NoneType' object is not subscriptable``, until session 49)."""
    where = f"source {name!r}: the LangChain retriever {type(retriever).__name__} returned"
    if not isinstance(found, list) or len(found) != expected:
        raise RagrouteError(f"{where} {type(found).__name__} for {expected} queries, not one list per query")
    for documents in found:
        if not isinstance(documents, (list, tuple)):
            what = "None" if documents is None else f"a {type(documents).__name__}"
            raise RagrouteError(f"{where} {what}, not a list of Documents")
        odd = next((d for d in documents if not isinstance(d, LangChainDocument)), None)
        if odd is not None:
            raise RagrouteError(f"{where} a {type(odd).__name__} in its list, not a Document")
    return found


def _takes_k(retriever: Any) -> bool:
    """Whether ``retriever.invoke(query, k=...)`` reaches its search: its ``_get_relevant_documents``
    names ``k`` or takes any keyword (``**kwargs``, as a vector store's ``as_retriever()`` does). One
    with other keywords only (``filter=None``) would raise on ``k``."""
    if not getattr(retriever, "_expects_other_args", False):
        return False
    try:
        parameters = inspect.signature(type(retriever)._get_relevant_documents).parameters.values()
    except (TypeError, ValueError):  # no signature to read: LangChain said it takes other arguments
        return True
    return any(p.name == "k" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _pass_scopes(scopes: frozenset[str]) -> dict[str, Any]:
    """The keyword arguments that hand a caller's scopes to ragroute's own LangChain retrievers."""
    return {"scopes": sorted(scopes)}


def document_filter(scopes: Sequence[str] | frozenset[str], key: str = ACCESS_KEY) -> Callable[[Any], bool]:
    """A predicate on LangChain documents: whether a caller holding ``scopes`` may read one (its
    ``key`` metadata public or meeting the scopes); an ``InMemoryVectorStore`` takes it as
    ``filter``: ``scope_filters=lambda s: {"filter": document_filter(s)}``."""
    scopes = frozenset(scopes)
    return lambda document: visible(labels_of((document.metadata or {}).get(key)), scopes)
