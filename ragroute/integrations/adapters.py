"""What the LlamaIndex and LangChain integrations share (no framework is imported here).

* :class:`DecisionLog`: the decisions of a framework retriever's latest queries, kept once
  per query (nodes and documents carry only a small ``decision_id``), safe across threads; its
  :meth:`~DecisionLog.capture` gives one call its own decision (the ``*_with_decision`` methods);
* :class:`ExternalRetriever`: the base of the adapters that make a framework's retriever a
  ragroute retriever (``search``, ``search_many``, ``search_contexts``), so it can be a
  :class:`~ragroute.route.sources.Source` of a pipeline; a query context's caller scope is
  pushed down into the framework where the adapter has a ``scope_filters`` builder, and always
  applied to what comes back (:func:`scoped_hits`);
* :func:`~ragroute.integrations.targets.check_target` (in :mod:`ragroute.integrations.targets`,
  imported here): the pipeline or index a framework retriever is built over, checked at its
  constructor; :func:`query_encoder`: its query encoder; :func:`index_scale`: how the
  retrievers over one index score its hits (as a pipeline over that index alone does);
* :func:`~ragroute.integrations.targets.framework_of` (there too): which framework an object
  comes from, read from its classes' modules (so nothing is imported to find out).
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import inspect
import math
import textwrap
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragroute import pyast
from ragroute.context import encoder_key
from ragroute.errors import check_batch, check_filters, check_k, check_query
from ragroute.index.base import by_filter_groups
from ragroute.index.docstore import access_value, filter_value, value_matches
from ragroute.pipeline.score_scale import SourceScale
from ragroute.route.sources import Source
from ragroute.scopes import ACCESS_KEY, Visible, labels_of, readable, scope_of, visible
from ragroute.types import Document, Hit, plain_values

#: scalar metadata types a node or document may carry (nested values stay in ``explain``)
SCALARS = (str, int, float, bool)


def query_encoder(obj: Any, _depth: int = 0) -> Any:
    """The query encoder of a ragroute pipeline, index or source (``None`` when it has none).

    A pipeline without its own encoder answers with its sources' encoder when they all share one.
    """
    if obj is None or _depth > 4:
        return None
    encoder = getattr(obj, "encoder", None)
    if encoder is not None:
        return encoder
    for attribute in ("dense", "retriever"):
        found = query_encoder(getattr(obj, attribute, None), _depth + 1)
        if found is not None:
            return found
    if isinstance(obj, (list, tuple)) or hasattr(obj, "retrieve_contexts"):
        encoders = [query_encoder(s, _depth + 1) for s in getattr(obj, "sources", obj)]
        keys = {encoder_key(e) for e in encoders if e is not None}
        if len(keys) == 1 and all(e is not None for e in encoders):
            return encoders[0]
    return None


def index_scale(target: Any, known: SourceScale | None = None) -> SourceScale:
    """How the retrievers over one index, source or retriever (``IndexLlamaRetriever``,
    ``IndexLangChainRetriever``) score their hits: as a pipeline over that one source with its
    query encoder (:func:`query_encoder`) does, on the encoder's cosine scale
    (:class:`~ragroute.pipeline.score_scale.SourceScale`; docs/scores.md), so a cutoff means the
    same on their nodes as on a routed retriever's. Without an encoder (a BM25 index alone) there
    is no such scale: the index's own scores, as a pipeline without an encoder gives them.
    ``known``: the scale made before, kept while it is over ``target`` (and fitted once)."""
    if known is not None and (known.source is target or known.source.retriever is target):
        return known
    name = str(getattr(target, "name", "") or "index")
    return SourceScale(target if isinstance(target, Source) else Source(name, target), query_encoder(target))


def run_coroutine(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a framework's async call (``make()`` gives the awaitable) to completion from sync code:
    on this thread when no event loop runs here, else on a thread of its own (a running loop
    cannot be blocked on), in a copy of this thread's context either way."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(make))
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(_awaited(make))
        except BaseException as exc:  # noqa: BLE001 - raised again on the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def _awaited(make: Callable[[], Awaitable[Any]]) -> Any:
    return await make()


#: the framework retriever classes that answer only asynchronously (True) or not (False), found once
#: per class: from then on they are searched straight through the path that answers
_ASYNC_ONLY: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def sync_or_async(
    retriever: Any,
    base: type,
    async_method: str,
    sync: Callable[[], Any],
    asynchronous: Callable[[], Awaitable[Any]],
    *,
    sync_method: str = "",
) -> Any:
    """``sync()``, or for a retriever that answers only asynchronously (its class overrides ``base``'s
    ``async_method`` and its ``sync_method`` raises ``NotImplementedError``) ``asynchronous()`` run to
    completion (:func:`run_coroutine`); any other ``NotImplementedError`` is raised.

    Such a class is told once, without a search where its sync method's body is only that
    ``raise``, else by the first sync search that raises it; from then on its searches go straight
    to the async path (trying the sync one first logged a failed run, with the error, in the
    framework's callbacks and traces on every search)."""
    cls = type(retriever)
    if getattr(cls, async_method, None) is getattr(base, async_method, None):
        return sync()  # no async path written: a NotImplementedError is raised as it is
    if cls not in _ASYNC_ONLY:
        _ASYNC_ONLY[cls] = bool(sync_method) and _only_raises_not_implemented(getattr(cls, sync_method, None))
    if _ASYNC_ONLY[cls]:
        return run_coroutine(asynchronous)
    try:
        return sync()
    except NotImplementedError:
        _ASYNC_ONLY[cls] = True
        return run_coroutine(asynchronous)


def _only_raises_not_implemented(method: Any) -> bool:
    """Whether ``method``'s body (its docstring aside) is only ``raise NotImplementedError(...)``
    (``False`` when its source cannot be read)."""
    try:
        tree = pyast.parse(textwrap.dedent(inspect.getsource(method)))  # other threads may be parsing
    except (OSError, TypeError, SyntaxError):
        return False
    function = tree.body[0] if tree.body else None
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = [s for s in function.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    raised = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"


def framework_score(value: Any) -> float | None:
    """A score another framework gave a document, as a float, or ``None`` (the hit then scores
    ``1/rank``) when it gave none or one that is not a finite number (NaN, a flag): one odd score
    must not cost the source every hit of the query."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return None
    score = float(value)
    return score if math.isfinite(score) else None


def scalar_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``metadata`` whose values are scalars (or ``None``); access labels
    (:data:`~ragroute.scopes.ACCESS_KEY`) are always kept, as one comma-separated string, so a
    document never turns public on its way through a framework."""
    # numpy scalars (an index built in memory keeps them as given) as Python's: np.int64, np.float32
    # and np.bool_ are no SCALARS and were dropped, silently, np.str_ kept as numpy (until session 49)
    plain = ((k, plain_values(v)) for k, v in metadata.items())
    out = {k: v for k, v in plain if v is None or isinstance(v, SCALARS)}
    if metadata.get(ACCESS_KEY) is not None:
        out[ACCESS_KEY] = ",".join(sorted(labels_of(metadata[ACCESS_KEY])))
    return out


def framework_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata a framework's own node or document keeps on its hit: its scalar entries
    (:func:`scalar_metadata`) and its lists of scalars (a ``tags`` list, as an index's documents
    hold them), so ragroute's filters match them as they match an index's: until now the lists were
    dropped and a filter on one matched nothing, silently."""
    out = scalar_metadata(metadata)
    for key, value in metadata.items():
        if key in out or not isinstance(value, (list, tuple)):
            continue
        items = [plain_values(v) for v in value]
        if all(v is None or isinstance(v, SCALARS) for v in items):
            out[key] = items
    return out


#: the prefix under which a node or document made by ragroute keeps its document's own value for one
#: of ragroute's metadata keys (a document's ``source`` is ``document_source``: ``source`` is the route)
OWN_PREFIX = "document_"


def merged_metadata(
    own: Mapping[str, Any], ours: Mapping[str, Any], reserved: Iterable[str]
) -> dict[str, Any]:
    """The metadata of a node or document ragroute makes: the document's ``own`` entries, then
    ragroute's (``ours``). A document's own value under one of ragroute's ``reserved`` keys (written
    this time or not) is kept as ``document_KEY`` (:data:`OWN_PREFIX`), never overwritten, so
    ragroute's keys always mean ragroute's values and nothing of the document's is lost."""
    reserved = set(reserved)
    out: dict[str, Any] = {}
    for key, value in own.items():
        if key in reserved:
            name = OWN_PREFIX + key
            while name in own or name in out:  # a document's own `document_source` stays its own
                name = OWN_PREFIX + name
            out[name] = value
        else:
            out[key] = value
    out.update(ours)
    return out


def own_metadata(metadata: Mapping[str, Any], reserved: Iterable[str]) -> dict[str, Any]:
    """The document's own metadata back from a node or document ragroute made
    (:func:`merged_metadata`): ragroute's ``reserved`` keys left out, ``document_KEY`` as ``KEY``."""
    reserved = set(reserved)
    out = {k: v for k, v in metadata.items() if k not in reserved}
    back: dict[str, str] = {}  # the name each reserved key's value is under -> the key
    for key in reserved:
        # the value of ``key`` is under the last name of its chain (``document_KEY``,
        # ``document_document_KEY``, ...): the names before it are the document's own, kept as they
        # were (its own `document_source` came back as `source`, its `source` lost, until session 43)
        name = OWN_PREFIX + key
        if name not in out:
            continue
        while OWN_PREFIX + name in out:
            name = OWN_PREFIX + name
        back[name] = key
    # each key back where its value stands, as merged_metadata wrote the document's own order: until
    # session 52 they were appended in the order of the set ``reserved``, which PYTHONHASHSEED
    # decides, so a hit's metadata (and the JSON showing it) had another key order in every process
    return {back.get(k, k): v for k, v in out.items()}


def hit_id(hit: Hit) -> str:
    """The id of the node or document ragroute's retrievers make for ``hit``: ``SOURCE:DOC_ID``, or
    ``SOURCE/INNER:DOC_ID`` for a hit a nested pipeline found in its source ``INNER`` (its
    ``explain["inner_source"]``): two inner sources' documents may share an id, and LlamaIndex keeps
    one node per id (the other was dropped, silently, until session 49); ``DOC_ID`` without a source."""
    inner = hit.explain.get("inner_source") if isinstance(hit.explain, dict) else None
    source = f"{hit.source}/{inner}" if hit.source and inner else hit.source
    return f"{source}:{hit.doc_id}" if source else hit.doc_id


def made_by_ragroute(item_id: Any, metadata: Mapping[str, Any] | None) -> bool:
    """Whether a LlamaIndex node or LangChain document (its id and metadata) is one ragroute's own
    retrievers made (``hit_to_node`` / ``hit_to_document``): its id is ``SOURCE:DOC_ID``,
    ``SOURCE/INNER:DOC_ID`` (:func:`hit_id`) or ``DOC_ID`` of its ``source`` and ``doc_id`` metadata."""
    doc_id = (metadata or {}).get("doc_id")
    if not doc_id:
        return False
    source = (metadata or {}).get("source")
    if item_id in (f"{source}:{doc_id}", str(doc_id)):
        return True
    nested = isinstance(item_id, str) and bool(source) and item_id.startswith(f"{source}/")
    return nested and item_id.endswith(f":{doc_id}") and len(item_id) > len(f"{source}/:{doc_id}")


def keeps_source_ids(target: Any, items: Iterable[tuple[Any, Mapping[str, Any] | None]]) -> bool:
    """Whether an adapter over ``target`` keeps the ``SOURCE:DOC_ID`` ids of the nodes or documents
    ragroute made: two sources' documents may share an id (both were kept as one hit until session
    40). Decided by what one of ragroute's own retrievers searches (its ``_several_sources``: a
    pipeline over several sources always, one index never), so a document's id is the same on every
    query; for any other retriever (an ensemble over ragroute's), by the ``(id, metadata)`` ``items``
    at hand: those ragroute made coming from several sources."""
    several = getattr(target, "_several_sources", None)
    if callable(several):
        return bool(several())
    return len({(m or {}).get("source") for i, m in items if made_by_ragroute(i, m)}) > 1


def several_sources(searched: Any) -> bool:
    """Whether what one of ragroute's framework retrievers searches may return hits of several
    sources (whose document ids may collide): a pipeline (``retrieve_contexts`` / ``retrieve``) over
    other than exactly one source, or over one that does; a ``Source`` over such a pipeline; an
    index, any other ``Source`` or a retriever gives one source's."""
    if hasattr(searched, "retrieve_contexts") or hasattr(searched, "retrieve"):
        sources = getattr(searched, "sources", None)
        if sources is None or len(sources) != 1:
            return True
        searched = sources[0]
    # a Source (a pipeline's one source, or the one searched) over a nested pipeline: that pipeline's
    # sources' (it was read as one source's, its hits' shared ids kept as one, until session 49)
    inner = getattr(searched, "retriever", None) if isinstance(searched, Source) else None
    return inner is not None and several_sources(inner)


def scoped_hits(hits: Iterable[Hit], scopes: Iterable[str], source: Any = None) -> list[Hit]:
    """The ``hits`` a caller holding ``scopes`` may read: none when ``source`` (a
    :class:`~ragroute.route.sources.Source`, optional) is outside the scopes, else those whose
    document's access labels are public or meet the scopes."""
    scopes = frozenset(scopes)
    if source is not None and not visible(getattr(source, "access", ()), scopes):
        return []
    return readable(hits, scopes)


@dataclass
class Captured:
    """What :meth:`DecisionLog.capture` collected: the ``decision`` of the one query made inside
    (``None`` until that query reports one)."""

    decision: Any = None


#: the capture open in this thread or asyncio task (and in the worker threads it starts with
#: ``asyncio.to_thread``, which copy the context): the log it listens to and where it puts what it hears
_CAPTURE: ContextVar[tuple[DecisionLog, Captured] | None] = ContextVar(
    "ragroute_decision_capture", default=None
)


class DecisionLog:
    """The decisions of the last ``size`` queries, by id; ``last`` is the latest one recorded.

    ``last`` belongs to whichever query ended last, and a decision kept by id is reachable only
    through a result that names it; :meth:`capture` gives one call its own decision, results or
    not, however many queries run at once."""

    def __init__(self, size: int = 128) -> None:
        self.size = check_k(size, "keep_decisions")
        self._decisions: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.last: Any = None

    def record(self, decision: Any, decision_id: str = "") -> str:
        """Keep ``decision`` under ``decision_id`` (a new one when empty), make it ``last`` and
        :meth:`report` it; returns its id."""
        decision_id = decision_id or uuid.uuid4().hex[:12]
        with self._lock:
            self._decisions[decision_id] = decision
            self._decisions.move_to_end(decision_id)
            while len(self._decisions) > self.size:
                self._decisions.popitem(last=False)
            self.last = decision
        self.report(decision)
        return decision_id

    def report(self, outcome: Any) -> None:
        """Hand ``outcome`` to the :meth:`capture` of this log open around the current call, if any
        (a capture of another retriever's log, e.g. an outer one, hears nothing from this one)."""
        open_capture = _CAPTURE.get()
        if open_capture is not None and open_capture[0] is self:
            open_capture[1].decision = outcome

    @contextmanager
    def capture(self) -> Iterator[Captured]:
        """Collect what the one query run inside reports (``with log.capture() as got: ...;
        got.decision``): per thread and per asyncio task, so concurrent queries never see each
        other's, and also when the query returns nothing (routed to ``none``, or a gate answered)."""
        captured = Captured()
        token = _CAPTURE.set((self, captured))
        try:
            yield captured
        finally:
            _CAPTURE.reset(token)

    def get(self, decision_id: str) -> Any:
        with self._lock:
            return self._decisions.get(decision_id)

    def __deepcopy__(self, memo: dict[int, Any]) -> DecisionLog:
        """A new, empty log of the same size: a copy of a retriever starts its own decisions (a
        decision names what only its own caller's scopes may see); the lock is never copied."""
        return DecisionLog(self.size)


def matches(hit: Hit, filters: Mapping[str, Any] | None) -> bool:
    """Whether ``hit`` passes ragroute's metadata ``filters`` as an index's documents do (a list/tuple/
    set value: any of them; a metadata list: any of its items; ``True`` is no ``1``; a
    :class:`~ragroute.scopes.Visible` value: the caller's scope). Until session 43 a hit whose
    metadata held a list raised ``TypeError: unhashable type`` and ``True`` matched ``1``."""
    for key, wanted in (filters or {}).items():
        if isinstance(wanted, Visible):
            if not wanted(hit.metadata.get(wanted.key)):
                return False
            continue
        # as an index filters its documents (access labels read as labels: filter_value)
        if not value_matches(_field(hit, key), filter_value(key, wanted)):
            return False
    return True


def _field(hit: Hit, key: str) -> Any:
    """The value a filter on ``key`` reads on an adapter's hit: its metadata, or the hit's own field
    for the node or document metadata that became one (``title``, ``modality``, ``parent_id``); a
    filter on a node's ``title`` matched nothing, silently, until the title was read here; the
    ``access`` labels are read as an index reads them: ``"hr,finance"`` holds ``hr``."""
    if key == "title" and key not in hit.metadata:
        return hit.title or None
    if key == "modality":
        return hit.modality
    if key == "parent_id":
        return hit.parent_id
    if key == ACCESS_KEY:  # the labels, however written, as an index reads them
        return access_value(hit.metadata.get(key))
    return hit.metadata.get(key)


class ExternalRetriever:
    """A ragroute retriever over another framework's retriever: subclasses implement :meth:`fetch`.

    ``filters`` are applied to the hits the framework returns (ragroute's semantics: equal
    metadata, a list means any of), so a filtered query may return fewer than ``k`` hits;
    filter inside the framework's retriever to get ``k`` matching ones. ``documents``
    (optional) are what training-free routers build a source's prototype from.

    Caller scopes (:meth:`search_contexts`, or a :class:`~ragroute.scopes.Visible` filter) are
    always applied to the returned hits by their ``access`` metadata; with ``scope_filters`` (a
    builder from the caller's scopes to the framework's own filter, see the subclasses) they are
    also pushed down into the framework's search (:meth:`fetch_scoped`), so the store returns
    ``k`` visible documents instead of ``k`` documents of which some are then dropped.

    Who asks (a context's ``caller``) is handed on only where :attr:`passes_caller` is set (the
    adapters set it over ragroute's own framework retrievers, which take a caller): contexts of
    different callers are then searched apart and :meth:`fetch_scoped` gets each group's caller,
    so a pipeline behind the wrapped retriever counts each caller against its own exposure budget.
    """

    framework = ""
    #: whether the wrapped retriever takes who asks with each search (one of ragroute's own: the
    #: adapters set it per instance); a third-party framework retriever takes no caller
    passes_caller = False

    def __init__(
        self,
        name: str,
        documents: Sequence[Document] = (),
        *,
        scope_filters: Callable[[frozenset[str]], Any] | None = None,
    ) -> None:
        self.name = name
        self._documents = list(documents)
        self.scope_filters = scope_filters

    @property
    def documents(self) -> Sequence[Document]:
        return self._documents

    def fetch(self, query: str, k: int) -> list[Hit]:  # pragma: no cover - abstract
        """Up to ``k`` hits for one query, best first (ranks and source are set afterwards)."""
        raise NotImplementedError

    def fetch_many(self, queries: list[str], k: int) -> list[list[Hit]]:
        """:meth:`fetch` for each query (a framework with a batch call overrides this)."""
        return [self.fetch(query, k) for query in queries]

    def fetch_scoped(
        self, queries: list[str], k: int, scopes: frozenset[str], caller: str | None = None
    ) -> list[list[Hit]]:
        """:meth:`fetch_many` with the caller's scope pushed down into the framework (subclasses
        that can push it override this; the hits are checked afterwards either way). ``caller``
        (who asks) is given only where :attr:`passes_caller` is set, for the wrapped retriever."""
        return self.fetch_many(queries, k)

    def search_contexts(self, contexts: Sequence[Any], k: int = 10) -> list[list[Hit]]:
        """Hits for query contexts, each with its filters and its caller's scope (and, where
        :attr:`passes_caller` is set, its caller: one search per caller)."""
        if not self.passes_caller:  # as always: the texts, each group's filters and scope
            return by_filter_groups(
                contexts,
                lambda group, filters: self.search_many([c.text for c in group], k, filters=filters),
                scoped=True,
            )
        return by_filter_groups(
            contexts,
            lambda group, filters: self._search_many(
                [c.text for c in group], k, filters, str(getattr(group[0], "caller", ""))
            ),
            scoped=True,
            by_caller=True,
        )

    def search(self, query: str, k: int = 10, *, filters: Mapping[str, Any] | None = None) -> list[Hit]:
        return self.search_many([query], k, filters=filters)[0]

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        return self._search_many(queries, k, filters, None)

    def _search_many(
        self, queries: Sequence[str], k: int, filters: Mapping[str, Any] | None, caller: str | None
    ) -> list[list[Hit]]:
        """:meth:`search_many`, the wrapped retriever asked for ``caller`` (``None``: its own)."""
        k, filters = check_k(k), check_filters(filters)
        out = []
        cleaned = [check_query(q) for q in check_batch(queries)]
        scope = scope_of(filters)
        if scope is not None and self.scope_filters is not None:
            # a subclass's own fetch_scoped of three arguments keeps working: the caller is handed
            # on only where passes_caller is set (ragroute's own adapters, which take it)
            asked = {} if caller is None else {"caller": caller}
            found = self.fetch_scoped(cleaned, k, scope.scopes, **asked)
        else:
            found = self.fetch_many(cleaned, k)
        for hits in found:
            # a framework may return one document twice (the same id, or the same text without
            # one): the first, best-ranked copy is kept, as every ragroute index returns each once
            kept: dict[str, Hit] = {}
            for hit in hits:
                if matches(hit, filters):
                    kept.setdefault(hit.doc_id, hit)
            hits = list(kept.values())[:k]
            for rank, hit in enumerate(hits, 1):
                hit.rank = rank
                hit.source = self.name
            out.append(hits)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
