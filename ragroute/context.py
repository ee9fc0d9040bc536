"""The query context: one object for a query in flight through the pipeline.

It carries the text, an id, metadata filters, the caller's scopes (the access labels
it holds, see :mod:`ragroute.scopes`; none: only public sources and documents), the step
number and history of a multi-step answer, and the query's vectors, computed lazily per
encoder and cached: any stage may ask for the vector of any encoder, and each query is
encoded at most once per encoder (:func:`query_vectors` batches the encoding of many
contexts at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ragroute.errors import (
    InvalidArgumentError,
    RagrouteError,
    check_batch,
    check_filters,
    check_query,
    value_type_name,
)
from ragroute.scopes import caller_id, caller_scopes


def encoder_key(encoder: Any) -> str:
    """What identifies an encoder's query vectors: model id (or ``query_space``, for encoders that
    share a document space but encode queries their own way, such as query-side expert adapters),
    backend and dimension, and the exact weights where the encoder names them (``cache_variant``,
    as the embedding cache keys them): a model folder trained again in place keeps its model id, and
    a context searched before and after was handed the old weights' vector."""
    space = getattr(encoder, "query_space", None) or getattr(encoder, "model_id", type(encoder).__name__)
    key = f"{space}|{getattr(encoder, 'backend', '')}|{getattr(encoder, 'dim', '')}"
    weights = getattr(encoder, "cache_variant", None)
    return f"{key}|{weights}" if weights else key


def own_filters(filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``filters`` (checked) for one context, its list and set values copied too: contexts
    built from one mapping (``search_many(..., filters=)``, the steps of a step-wise run) shared it,
    so an edit of one context's filters (by a stage, or by a caller reusing its dict for the next
    query) changed the filters of the others."""
    if filters is None:
        return None
    return {key: _own_value(value) for key, value in filters.items()}


def _own_value(value: Any) -> Any:
    """A filter value as a context keeps it: a list or set copied, anything else as it is."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, set):
        return set(value)
    return value


def checked_caller(caller: Any) -> str:
    """``caller`` (who asks, for exposure budgets) as the ledger counts it
    (:func:`~ragroute.scopes.caller_id`); anything but a string is a one-line error."""
    return caller_id(caller)


@dataclass
class QueryContext:
    """A query in flight (its text checked by :func:`~ragroute.errors.check_query`).

    ``caller`` names who asks, for per-caller exposure accounting (:mod:`ragroute.exposure`;
    ``""``: one shared anonymous caller); ``scopes`` are what that caller may read.
    """

    text: str
    id: str = ""
    filters: Mapping[str, Any] | None = None
    scopes: tuple[str, ...] = ()
    caller: str = ""
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    #: one lock per encoder key, held while this query's vector by that encoder is being encoded
    _encoding: dict[str, threading.Lock] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.text = check_query(self.text)  # a context built directly was searched with "" (session 37)
        # a sorted tuple of labels ("hr" is one label, not two letters); bad labels raise
        self.scopes = caller_scopes(self.scopes)
        self.caller = checked_caller(self.caller)
        self.filters = own_filters(check_filters(self.filters))
        checked_metadata(self.metadata)

    @classmethod
    def of(cls, query: str | QueryContext, **fields: Any) -> QueryContext:
        """A context for ``query`` (a context passes through unchanged); empty text raises."""
        if isinstance(query, QueryContext):
            return query
        return cls(query, **fields)

    def has_vector(self, encoder: Any) -> bool:
        """Whether the query's vector for ``encoder`` is computed (or was set) already."""
        return encoder_key(encoder) in self._vectors

    def set_vector(self, encoder: Any, vector: np.ndarray | Sequence[float]) -> None:
        """Hand the context a vector computed elsewhere (e.g. a precomputed embedding); one that is
        empty or holds NaN or infinity is refused (every similarity with it would be NaN, and a
        router or gate reading NaN decides nothing sensible)."""
        row = np.asarray(vector, dtype=np.float32).reshape(-1)
        if row.size == 0 or not np.isfinite(row).all():
            raise InvalidArgumentError(
                f"query vector for {self.text[:40]!r} is empty or not finite (NaN or infinity)"
            )
        dim = getattr(encoder, "dim", None)
        if isinstance(dim, int) and row.size != dim:  # a search with it answered nothing (session 37)
            raise InvalidArgumentError(
                f"query vector for {self.text[:40]!r} has {row.size} dimensions; the encoder gives {dim}"
            )
        self._vectors[encoder_key(encoder)] = row

    def vector(self, encoder: Any) -> np.ndarray:
        """This query's embedding by ``encoder``, encoded on first request only."""
        key = encoder_key(encoder)
        if key not in self._vectors:
            query_vectors([self], encoder)
        return self._vectors[key]

    def _encoding_lock(self, key: str) -> threading.Lock:
        """The lock held while this query is encoded by the encoder of ``key`` (:func:`encoder_key`)."""
        with self._lock:
            return self._encoding.setdefault(key, threading.Lock())

    @property
    def encoders_used(self) -> list[str]:
        """Keys of the encoders this query has vectors for so far (encoded, or handed in by
        :meth:`set_vector`): how many encoders a query cost (``bench experts`` reports it per
        router; a trace does not)."""
        return list(self._vectors)


def checked_metadata(metadata: Any, what: str = "metadata") -> Mapping[str, Any]:
    """``metadata`` (``None``: none) when it is a mapping, else one :class:`InvalidArgumentError`
    line: a string or a number raised dict.update's bare ValueError or TypeError out of a step-wise
    run ("dictionary update sequence element #0 has length 1"), and in ``run_many`` only once the
    questions before it had run (until session 51)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"{what} must be a mapping of the query's metadata, got {value_type_name(metadata)}"
        )
    return metadata


def contexts_of(queries: Sequence[str | QueryContext]) -> list[QueryContext]:
    """A context per query; a bare string (not a list of queries) is refused."""
    return [QueryContext.of(q) for q in check_batch(queries)]


def query_vectors(contexts: Sequence[QueryContext], encoder: Any) -> np.ndarray:
    """Vectors of ``contexts`` by ``encoder`` (one row each); the missing ones are encoded in one batch."""
    key = encoder_key(encoder)
    missing = [c for c in contexts if key not in c._vectors]
    if missing:
        # each missing query's lock for this encoder, taken in one order (two callers never wait on
        # each other's), and what is missing read again under them: a caller that finds another one
        # encoding the same queries waits for their vectors. Until session 52 two sources searched
        # in two threads (nested pipelines) both found the vectors missing, and both encoded them.
        locks = {id(c): c._encoding_lock(key) for c in missing}
        with contextlib.ExitStack() as held:
            for _, lock in sorted(locks.items()):
                held.enter_context(lock)
            missing = [c for c in missing if key not in c._vectors]
            if missing:
                texts = list(dict.fromkeys(c.text for c in missing))
                rows = np.asarray(encoder.encode_queries(texts, show_progress=False), dtype=np.float32)
                by_text = dict(zip(texts, rows))
                for context in missing:
                    context._vectors.setdefault(key, by_text[context.text])
    dim = getattr(encoder, "dim", None) or 0
    if not contexts:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([c._vectors[key] for c in contexts])


# --------------------------------------------------------------------------- cancellation

T = TypeVar("T")

#: set in the worker thread of an awaited search (:func:`in_worker_thread`), and in the pool
#: threads it starts (they run in copies of its context): set once the awaiting task is cancelled
_CANCELLED: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "ragroute_query_cancelled", default=None
)


class QueryCancelled(RagrouteError):
    """The task awaiting this search was cancelled: the search stopped at a stage boundary."""


def check_cancelled() -> None:
    """Raise :class:`QueryCancelled` when the task awaiting the search running here was cancelled
    (the pipeline asks between its stages, a step-wise run before each step)."""
    event = _CANCELLED.get()
    if event is not None and event.is_set():
        raise QueryCancelled("the query was cancelled: its search stopped before the next stage")


async def in_worker_thread(
    function: Callable[..., T], *args: Any, context: contextvars.Context | None = None
) -> T:
    """``await asyncio.to_thread(function, *args)`` (in ``context`` when given) that stops once the
    awaiting task is cancelled: a thread cannot be interrupted, and until session 50 a cancelled
    ``aretrieve`` ran on to its end, its hits admitted to the caller's exposure budget (and a
    step-wise run kept calling its LLM) for an answer nobody would read. The search now stops at
    its next stage boundary (:func:`check_cancelled`)."""
    cancelled = threading.Event()

    def call() -> T:
        _CANCELLED.set(cancelled)
        return function(*args)

    try:
        if context is None:
            return await asyncio.to_thread(call)
        # in a copy of ``context``: the caller may leave its own block (LangChain's
        # set_config_context enters its context again on the way out) while a cancelled search
        # still runs; in ``context`` itself that raised "cannot enter context: ... is already
        # entered" in place of the CancelledError, until session 50
        return await asyncio.to_thread(context.copy().run, call)
    except asyncio.CancelledError:
        cancelled.set()
        raise
