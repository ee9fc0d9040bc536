"""Per-caller exposure accounting: how much of each corpus a caller has been shown, with a budget.

Extraction attacks on RAG ("Silent Leaks": benign-looking queries, each mutated from what the
last ones returned) enumerate a knowledge base a few documents at a time; no single query looks
wrong. What they cannot hide is how many *distinct* documents they get to see. An
:class:`ExposureLedger` counts, per caller and per source, the distinct documents returned within
a sliding time window, and compares each count with the source's budget:
``max(min_documents, max_fraction x source size)`` (:class:`ExposureBudget`).

* When a caller first crosses ``alert_at`` x budget on a source, the ledger calls its alert hook
  (and, with ``warn=True``, issues an :class:`ExposureWarning`) once per window.
* With ``hard_stop=True``, a caller at its budget on a source is shown nothing *new* from it:
  hits it has already seen in the window are still returned, new ones are withheld, so a normal
  user who re-reads is not cut off while an enumerator learns nothing more.

The pipeline calls :meth:`ExposureLedger.admit` on every query's final hits (after scopes and the
reranker) and records an ``exposure`` step in the trace: the caller's distinct documents per
source touched, the budget, and what was withheld.

Sources over the same documents (an expert set's experts, config sources naming one index or one
``corpus:``: :attr:`Source.collection <ragroute.route.sources.Source.collection>`) count as one:
a document shown by two experts is one document seen, ``per: source`` gives their collection one
budget, and ``per: pipeline`` counts its size once. A budget is a fraction of what the caller may
read: documents with access labels outside the caller's scopes, or of a collection none of whose
sources the caller may read, are not in the size (:mod:`ragroute.scopes`). A source whose retriever
is another pipeline counts as that pipeline's sources (behind its own access labels too): its hits
count in their inner collections, and when both pipelines hold one ledger only the outer one admits
(:meth:`ExposureLedger.admitting`), so a document returned is counted once and what the inner
pipeline finds for the outer one is not counted as shown; nor is what the library searches for its
own use (a gate's retrieval probes, fusion calibration, score scales, confidence probes, expert
gains: :func:`internal_searches`), whichever ledger a nested pipeline holds. Callers are named by
:attr:`ragroute.context.QueryContext.caller` (``""``: one shared anonymous caller). The ledger is
in memory and thread-safe; one process serves one ledger (share it between pipelines to count a
caller across them).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ragroute.errors import RagrouteError, check_keys, is_finite_number
from ragroute.index.base import content_key
from ragroute.scopes import ACCESS_KEY, caller_id, labels_of, visible
from ragroute.types import Hit, TraceStep

EXPOSURE_KEYS = frozenset(
    {"per", "max_fraction", "min_documents", "window_s", "alert_at", "hard_stop", "warn"}
)
#: the bucket every hit counts in when the budget is ``per: pipeline``
ALL_SOURCES = "*"
#: the ledgers admitting in the current call chain (``id()``; :meth:`ExposureLedger.admitting`), and
#: :data:`_INTERNAL` within :func:`internal_searches`
_ADMITTING: contextvars.ContextVar[frozenset[Any]] = contextvars.ContextVar(
    "ragroute_exposure_admitting", default=frozenset()
)
_INTERNAL = "internal searches"


def explanations_confined() -> bool:
    """Whether the hits searched now may be shown under an exposure budget: a pipeline holding a
    ledger runs this call (in this thread, or one it handed work to). A source whose explanations
    name other documents' content (a graph's facts, seeds and walk paths) then explains each hit by
    what its own document holds: an explanation is shown with a hit the ledger counts once, so it
    must not carry what the ledger never counts (until session 53 a caller at a hard stop re-reading
    one graph passage was told five facts of any passage with each new query)."""
    return any(item != _INTERNAL for item in _ADMITTING.get())


@contextlib.contextmanager
def internal_searches() -> Iterator[None]:
    """Searches the library makes for its own use (a gate's retrieval probes, fusion calibration,
    score scales, confidence probes, expert gains) show nothing to a caller: no pipeline admits
    them to an exposure ledger. Until a review of session 38 a nested pipeline holding a ledger
    charged the pseudo-queries of its outer pipeline's calibration to the anonymous caller."""
    token = _ADMITTING.set(_ADMITTING.get() | {_INTERNAL})
    try:
        yield
    finally:
        _ADMITTING.reset(token)


class ExposureWarning(UserWarning):
    """A caller crossed its exposure alert level on a source."""


@dataclass(frozen=True)
class ExposureBudget:
    """How much of each source one caller may see within ``window_s`` seconds.

    The budget of a source of ``n`` documents is ``max(min_documents, max_fraction * n)``
    distinct documents (a source of unknown size: ``min_documents``). ``per``: ``pipeline`` (one
    budget over all sources, of their total size) or ``source`` (each source has its budget).
    The defaults (``pipeline``, 2%, at least 200) were chosen with ``ragroute bench exposure
    --seed 0`` and reported on ``--seed 1`` (docs/exposure.md).
    """

    per: str = "pipeline"
    max_fraction: float = 0.02
    min_documents: int = 200
    window_s: float = 86_400.0
    alert_at: float = 1.0
    hard_stop: bool = False
    warn: bool = False

    def __post_init__(self) -> None:
        if self.per not in ("source", "pipeline"):
            raise RagrouteError(f"exposure: per must be 'source' or 'pipeline', not {self.per!r}")
        if not 0.0 < self.max_fraction <= 1.0:
            raise RagrouteError(f"exposure: max_fraction must be in (0, 1], not {self.max_fraction!r}")
        if self.min_documents < 1:
            raise RagrouteError(f"exposure: min_documents must be >= 1, not {self.min_documents!r}")
        if not self.window_s > 0:  # NaN too: until session 51 nothing ever left its window
            raise RagrouteError(f"exposure: window_s must be > 0, not {self.window_s!r}")
        if not 0.0 < self.alert_at <= 1.0:
            raise RagrouteError(f"exposure: alert_at must be in (0, 1], not {self.alert_at!r}")

    def limit(self, size: int | None) -> int:
        """The budget, in distinct documents, of a source holding ``size`` documents."""
        if not size:
            return self.min_documents
        # the fraction as written: in floats 0.29 x 100 is 28.999999999999996, a budget of 28 (until
        # session 51)
        return max(self.min_documents, int(_as_written(self.max_fraction) * size))

    def alert_level(self, limit: int) -> int:
        """How many distinct documents of a budget of ``limit`` raise the alert: ``alert_at`` x
        ``limit``, rounded up (until session 51 compared in floats: 0.07 x 100 is
        7.000000000000001, and the alert came at the 8th document)."""
        return math.ceil(_as_written(self.alert_at) * limit)

    @classmethod
    def from_settings(cls, settings: Any, where: str = "exposure") -> ExposureBudget:
        """A budget from an ``exposure:`` mapping of a routing config (unknown keys refused)."""
        if not isinstance(settings, Mapping):
            raise RagrouteError(f"{where}: 'exposure:' must be a mapping")
        check_keys(settings, EXPOSURE_KEYS, where, "exposure key")
        values: dict[str, Any] = {}
        for key, kind in (("max_fraction", float), ("window_s", float), ("alert_at", float)):
            if key in settings:
                values[key] = _number(settings[key], key, where, kind)
        if "min_documents" in settings:
            values["min_documents"] = _number(settings["min_documents"], "min_documents", where, int)
        if "per" in settings:
            values["per"] = str(settings["per"])
        for key in ("hard_stop", "warn"):
            if key in settings:
                if not isinstance(settings[key], bool):
                    raise RagrouteError(f"{where}: {key!r} must be true or false, not {settings[key]!r}")
                values[key] = settings[key]
        try:
            return cls(**values)
        except RagrouteError as exc:  # the range checks of __post_init__, said for this file
            raise RagrouteError(f"{where}: {str(exc).removeprefix('exposure: ')}") from None


def exposure_problems(settings: Any, where: str = "exposure") -> list[str]:
    """Every problem of an ``exposure:`` mapping, one line each (``config check`` lists them all;
    :meth:`ExposureBudget.from_settings` stops at the first): unknown keys, then each known key's
    value read alone."""
    if not isinstance(settings, Mapping):
        return [f"{where}: 'exposure:' must be a mapping"]
    problems = []
    try:
        check_keys(settings, EXPOSURE_KEYS, where, "exposure key")
    except RagrouteError as exc:
        problems.append(str(exc))
    for key in (key for key in settings if key in EXPOSURE_KEYS):
        try:
            ExposureBudget.from_settings({key: settings[key]}, where)
        except RagrouteError as exc:
            problems.append(str(exc))
    if not problems:  # each value right alone: together too (no check spans two keys today)
        try:
            ExposureBudget.from_settings(settings, where)
        except RagrouteError as exc:
            problems.append(str(exc))
    return problems


@functools.lru_cache(maxsize=64)
def _as_written(value: float) -> Fraction:
    """``value`` as the decimal it is written as (its shortest repr: 0.29 is 29/100, where the
    float is a hair below it), for budgets and alert levels exact in whole documents."""
    return Fraction(repr(float(value)))


def _number(value: Any, key: str, where: str, kind: type) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not isinstance(value, int))
    ):
        expected = "an integer" if kind is int else "a number"
        raise RagrouteError(f"{where}: {key!r} must be {expected}, not {type(value).__name__}")
    if kind is float and isinstance(value, int) and not is_finite_number(value):
        # until session 51 an OverflowError (a traceback from loading and from `config check`)
        raise RagrouteError(f"{where}: {key!r} must be a number, not an integer past a float's range")
    return kind(value)


@dataclass
class ExposureAlert:
    """What the alert hook receives (``source``: the source whose hit crossed the level; its
    collection's other sources count with it)."""

    caller: str
    source: str
    distinct: int
    budget: int
    window_s: float
    hard_stop: bool


@dataclass
class _Seen:
    """One caller's documents of one bucket: (source, doc id) -> last time shown, and when it alerted."""

    shown: dict[tuple[str, str], float] = field(default_factory=dict)
    alerted_at: float | None = None
    # at most the earliest time in `shown` (times only grow): the window's check reads this, not
    # the minimum of every time, per hit (an admit cost O(documents seen), until session 37)
    oldest: float = math.inf


class ExposureLedger:
    """Counts what each caller has seen; see the module docstring.

    ``sizes``: documents per source (or collection), all public; the pipeline declares its sources
    instead (:meth:`add_sources`), with their collections and access labels. ``on_alert``: called
    with an :class:`ExposureAlert`; ``clock``: seconds (``time.monotonic`` by default; the
    benchmark replays streams on a simulated clock).
    """

    def __init__(
        self,
        budget: ExposureBudget | None = None,
        *,
        sizes: Mapping[str, int] | None = None,
        on_alert: Callable[[ExposureAlert], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget or ExposureBudget()
        self.sizes: dict[str, int] = {}
        #: source name -> its collection (sources over the same documents share one)
        self.collection_of: dict[str, str] = {}
        # collection -> how many of its documents carry each set of access labels
        self._access: dict[str, Counter[frozenset[str]]] = {}
        # collection -> the ways a caller reaches it: per declared source, the access labels a caller
        # must meet on the way (the pipelines' sources it is nested in, outermost first, then its own)
        self._paths: dict[str, set[tuple[frozenset[str], ...]]] = {}
        # collection named after a source -> the retriever it is (two sources of one name over other
        # documents are two collections)
        self._owners: dict[str, Any] = {}
        # collection -> the source its documents were counted from, and its content_key then
        self._counted: dict[str, tuple[Any, Any]] = {}
        self.on_alert = on_alert
        self.clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._swept_at = clock()
        self._lock = threading.Lock()
        if sizes:
            self.add_sizes(sizes)

    def distinct(self, caller: str, source: str) -> int:
        """Distinct documents of ``source`` (its collection; :data:`ALL_SOURCES` or any source
        with ``per: pipeline``) shown to ``caller`` within the window, now."""
        caller = caller_id(caller)
        with self._lock:
            seen = self._seen.get((caller, self._bucket_of(source)))
            return 0 if seen is None else len(self._expire(seen, self.clock()))

    def tripped(self, caller: str, source: str, scopes: Iterable[str] = ()) -> bool:
        """Whether ``caller`` (holding ``scopes``) has reached its budget on ``source``."""
        # size() reads a source's name: given its collection, it read the collection of a source so
        # named (until session 51)
        return self.distinct(caller, source) >= self.budget.limit(self.size(source, scopes))

    def admit(
        self,
        caller: str,
        hits: Sequence[Hit],
        scopes: Iterable[str] = (),
        *,
        collections: Mapping[str, str] | None = None,
    ) -> tuple[list[Hit], TraceStep]:
        """Account ``hits`` shown to ``caller`` (holding ``scopes``, which set the budget's size);
        returns what may be shown, and a trace step.

        With a hard stop, a hit that is new to the caller on a source at its budget is withheld.
        ``collections``: the collection of each source of the pipeline the hits come from (what
        :meth:`add_sources` returned for it): two pipelines sharing the ledger may each have a
        source of one name over other documents, and a hit's source name alone then named the
        first one's collection (its documents passed a hard stop as already seen, or uncounted,
        until session 40).
        """
        caller = caller_id(caller)
        names = self.collection_of if collections is None else {**self.collection_of, **collections}
        scopes = frozenset(scopes)
        alerts: list[ExposureAlert] = []
        shown: list[Hit] = []
        detail: dict[str, Any] = {}
        withheld = 0
        with self._lock:
            # read under the lock: until session 51 a call that read the clock, then waited for the
            # lock while another admitted the same document later, set its time back (it left the
            # window early, and a hard stop let a new document through)
            now = self.clock()
            self._sweep(now)
            self._follow_sources()
            limits: dict[str, int] = {}
            levels: dict[str, int] = {}  # bucket -> distinct documents that raise the alert
            shown_as: dict[str, str] = {}  # bucket -> the name the trace gives it: a source the caller reads
            for hit in hits:
                origin = self._origin(hit, names)
                bucket = self._bucket_of(origin, names)
                seen = self._seen.setdefault((caller, bucket), _Seen())
                current = self._expire(seen, now)
                if bucket not in limits:
                    limits[bucket] = self.budget.limit(self._size(bucket, scopes))
                    levels[bucket] = self.budget.alert_level(limits[bucket])
                    shown_as[bucket] = bucket if bucket == ALL_SOURCES else origin
                limit = limits[bucket]
                # ids are unique within a collection only; sources of one collection share them
                doc = (names.get(origin, origin), hit.doc_id)
                if doc not in current and len(current) >= limit and self.budget.hard_stop:
                    withheld += 1
                    continue
                current[doc] = now
                if now < seen.oldest:
                    seen.oldest = now
                shown.append(hit)
                if len(current) >= levels[bucket] and seen.alerted_at is None:
                    seen.alerted_at = now
                    alerts.append(
                        ExposureAlert(
                            caller,
                            shown_as[bucket],
                            len(current),
                            limit,
                            self.budget.window_s,
                            self.budget.hard_stop,
                        )
                    )
            for bucket, limit in limits.items():
                distinct = len(self._seen[(caller, bucket)].shown)
                detail[shown_as[bucket]] = {"distinct": distinct, "budget": limit}
        for alert in alerts:
            if self.budget.warn:
                warnings.warn(
                    f"caller {alert.caller or '(anonymous)'} has seen {alert.distinct} distinct documents of "
                    f"{alert.source} within {alert.window_s:g} s (budget {alert.budget})",
                    ExposureWarning,
                    stacklevel=3,
                )
            if self.on_alert is not None:
                self.on_alert(alert)
        step = {"caller": caller, "sources": detail, "withheld": withheld}
        if alerts:
            step["alerts"] = [a.source for a in alerts]
        return shown, TraceStep("exposure", step)

    def add_sizes(self, sizes: Mapping[str, int]) -> None:
        """Declare sources' sizes, every document public (a source already known keeps its size);
        the total, the size of the :data:`ALL_SOURCES` bucket, follows."""
        with self._lock:
            for name, size in sizes.items():
                if name != ALL_SOURCES:
                    self.sizes.setdefault(name, int(size))
            self._total()

    def add_sources(self, sources: Sequence[Any]) -> dict[str, str]:
        """Declare a pipeline's sources (:class:`~ragroute.route.sources.Source`): each counts in
        its collection, whose size is the number of its documents the caller may read (through any
        of the collection's sources; a collection already known keeps its documents), counted again
        whenever they change (:func:`~ragroute.index.base.content_key`: an index that grew, shrank
        or relabelled documents after the pipeline was built). A source holding no documents (a
        plain or external retriever, or an empty index) has no known size: its budget is
        ``min_documents``. A source whose retriever is a pipeline is declared as that pipeline's
        sources, behind its own access labels: its hits count in their inner collections.

        Returns each declared source's collection (by name, a nested one by its path), for
        :meth:`admit`'s ``collections``."""
        declared: dict[str, str] = {}
        with self._lock:
            self._declare(sources, (), (), declared)
            self._total()
        return declared

    def _declare(
        self,
        sources: Sequence[Any],
        outer: tuple[frozenset[str], ...],
        names: tuple[str, ...],
        declared: dict[str, str],
    ) -> None:
        for source in sources:
            path = (*outer, frozenset(getattr(source, "access", ())))
            name = "/".join((*names, source.name))  # a nested source by its path: "outer/inner"
            # a nested pipeline (what Source.search_contexts reads as one): its sources
            nested = hasattr(source.retriever, "retrieve_contexts")
            inner = getattr(source.retriever, "sources", None) if nested else None
            if isinstance(inner, (list, tuple)) and inner:
                self._declare(inner, path, (*names, source.name), declared)
                continue
            collection = self._collection_for(source)
            self.collection_of.setdefault(name, collection)
            declared[name] = collection
            self._paths.setdefault(collection, set()).add(path)
            if collection in self.sizes or collection in self._counted:
                continue
            self._count(collection, source)

    def _collection_for(self, source: Any) -> str:
        """The collection ``source`` counts in: the corpus it names (sources over one index), else
        its own name, made unique per retriever: two nested pipelines each with a source called
        ``main`` over other documents are two collections (until a review of session 38 the second
        was never counted, and its documents passed a hard stop as the first's)."""
        named = str(getattr(source, "collection", source.name))
        if named != source.name:
            return named
        key, n = named, 1
        while key in self._owners and self._owners[key] is not source.retriever:
            n += 1
            key = f"{named}#{n}"
        self._owners.setdefault(key, source.retriever)
        return key

    def _count(self, collection: str, source: Any) -> None:
        self._counted[collection] = (source, content_key(source))
        documents = source.documents
        if not documents:
            self.sizes.pop(collection, None)
            self._access.pop(collection, None)
            return
        self.sizes[collection] = len(documents)
        self._access[collection] = Counter(
            labels_of((doc.metadata or {}).get(ACCESS_KEY)) for doc in documents
        )

    def _follow_sources(self) -> None:
        """Count again the collections whose documents changed since they were counted."""
        changed = [c for c, (source, key) in self._counted.items() if content_key(source) != key]
        for collection in changed:
            self._count(collection, self._counted[collection][0])
        if changed:
            self._total()

    def size(self, source: str, scopes: Iterable[str] = ()) -> int | None:
        """Documents of ``source``'s bucket (its collection, or :data:`ALL_SOURCES`) a caller
        holding ``scopes`` may read; ``None`` when unknown."""
        with self._lock:
            self._follow_sources()
            return self._size(self._bucket_of(source), frozenset(scopes))

    def bucket(self, hit: Hit) -> str:
        """Where ``hit`` is counted: its source's collection (of the source in a nested pipeline
        that found it), or :data:`ALL_SOURCES` (``per: pipeline``)."""
        return self._bucket_of(self._origin(hit))

    @contextlib.contextmanager
    def admitting(self) -> Iterator[bool]:
        """The block of one pipeline call: yields whether that pipeline admits its hits (and records
        the ``exposure`` step). Within the block, in the calling thread and in the threads it hands
        work to (their context is copied), a pipeline holding this ledger does not admit: it is
        nested in the one that does, which admits what it returns. Nor does any pipeline within
        :func:`internal_searches`. Until a review of session 38 the first pipeline claimed its query
        contexts by ``id()`` in a set every thread shared, so a second call passing the same context
        object while the first ran was never admitted (a hard stop passed)."""
        current = _ADMITTING.get()
        admits = _INTERNAL not in current and id(self) not in current
        token = _ADMITTING.set(current | {id(self)})
        try:
            yield admits
        finally:
            _ADMITTING.reset(token)

    def callers(self) -> set[str]:
        """The callers with documents shown to them within the window, or an alert still armed
        (what the ledger holds in memory, up to one window of callers gone quiet)."""
        with self._lock:
            return {caller for caller, _ in self._seen}

    def reset(self, caller: str | None = None) -> None:
        """Forget one caller's exposure (or everyone's)."""
        caller = None if caller is None else caller_id(caller)
        with self._lock:
            for key in [k for k in self._seen if caller is None or k[0] == caller]:
                del self._seen[key]

    def _origin(self, hit: Hit, names: Mapping[str, str] | None = None) -> str:
        """The declared source that found ``hit``: in a nested pipeline, the path to its innermost
        source (``outer/inner``, as :meth:`add_sources` declares it)."""
        inner = (hit.explain or {}).get("inner_source")
        if isinstance(inner, str) and inner:
            path = f"{hit.source}/{inner}"
            if path in (self.collection_of if names is None else names):
                return path
        return hit.source

    def _bucket_of(self, source: str, names: Mapping[str, str] | None = None) -> str:
        if self.budget.per == "pipeline" or source == ALL_SOURCES:
            return ALL_SOURCES
        return (self.collection_of if names is None else names).get(source, source)

    def _size(self, bucket: str, scopes: frozenset[str]) -> int | None:
        if bucket == ALL_SOURCES:
            known = [self._size(c, scopes) for c in self.sizes if c != ALL_SOURCES]
            return sum(n for n in known if n) or None
        access = self._access.get(bucket)
        if access is None:
            return self.sizes.get(bucket)
        paths = self._paths.get(bucket, ())
        if not any(all(visible(labels, scopes) for labels in path) for path in paths):
            return 0  # no source of the collection the caller may read
        return sum(n for labels, n in access.items() if visible(labels, scopes))

    def _total(self) -> None:
        self.sizes[ALL_SOURCES] = sum(v for k, v in self.sizes.items() if k != ALL_SOURCES)

    def _sweep(self, now: float) -> None:
        """At most once per window, forget every caller whose window is empty (a caller who never
        comes back would otherwise be kept forever: memory grew with every caller ever seen)."""
        if now - self._swept_at < self.budget.window_s:
            return
        self._swept_at = now
        for key in list(self._seen):
            seen = self._seen[key]
            if not self._expire(seen, now) and seen.alerted_at is None:
                del self._seen[key]

    def _expire(self, seen: _Seen, now: float) -> dict[tuple[str, str], float]:
        """Drop what left the window; an alert re-arms one window after it fired (so it fires at
        most once per window while the caller stays above the alert level)."""
        horizon = now - self.budget.window_s
        if seen.shown and seen.oldest < horizon:
            seen.shown = {doc: t for doc, t in seen.shown.items() if t >= horizon}
            seen.oldest = min(seen.shown.values(), default=math.inf)
        if seen.alerted_at is not None and seen.alerted_at < horizon:
            seen.alerted_at = None
        return seen.shown
