"""Plain data types that flow through ragroute.

Documents go in at build time; queries go in at query time; hits and decisions
come out. Hits remember which source they came from, and decisions carry the
scores and signals behind them, so every answer can be explained.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

_READ_ONLY = (
    "an index's documents are read-only, their metadata too (an edit would change what filters and "
    "scopes match, half of it until the index is rebuilt): copy it (dict(doc.metadata)), or delete "
    "the document and add it again with new metadata"
)


class ReadOnlyDict(dict):  # type: ignore[type-arg]
    """The metadata of a document an index holds (and mappings inside it): a ``dict`` for every
    reader (``isinstance``, JSON, ``{**metadata}``), whose edits raise
    :class:`~ragroute.errors.InvalidArgumentError`. Copies (``copy.copy``, ``dict(...)``, pickling)
    are plain, writable dicts."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        from ragroute.errors import InvalidArgumentError

        raise InvalidArgumentError(_READ_ONLY)

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[str, Any]:
        return writable_copy(self)

    def __deepcopy__(self, memo: Any) -> dict[str, Any]:
        return writable_copy(self)

    def __reduce__(self) -> Any:
        return (dict, (writable_copy(self),))


class ReadOnlyList(list):  # type: ignore[type-arg]
    """A list value inside a held document's metadata (access labels are lists): a ``list`` for
    every reader, whose edits raise :class:`~ragroute.errors.InvalidArgumentError`."""

    __slots__ = ()

    _refuse = ReadOnlyDict._refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = pop = remove = _refuse
    clear = reverse = sort = _refuse

    def __copy__(self) -> list[Any]:
        return writable_copy(self)

    def __deepcopy__(self, memo: Any) -> list[Any]:
        return writable_copy(self)

    def __reduce__(self) -> Any:
        return (list, (writable_copy(self),))


_CONTAINERS = (dict, list)


def read_only(value: Any) -> Any:
    """``value`` with every dict and list in it made read-only (:class:`ReadOnlyDict`,
    :class:`ReadOnlyList`); other values are kept (a set too: an index cannot save one anyway).
    A value read-only already is returned as it is; flat metadata costs one dict copy (loading an
    index reads every document's through here)."""
    if isinstance(value, dict):
        if type(value) is ReadOnlyDict and _is_read_only(value):
            return value
        for item in value.values():
            if isinstance(item, _CONTAINERS):
                return ReadOnlyDict((k, read_only(v)) for k, v in value.items())
        return ReadOnlyDict(value)
    if isinstance(value, list):
        return value if _is_read_only(value) else ReadOnlyList(read_only(v) for v in value)
    return value


def _is_read_only(value: dict[Any, Any] | list[Any]) -> bool:
    """Whether ``value`` and every container in it is read-only already (a held document's)."""
    if type(value) is ReadOnlyDict:
        return all(not isinstance(v, _CONTAINERS) or _is_read_only(v) for v in value.values())
    if type(value) is ReadOnlyList:
        return all(not isinstance(v, _CONTAINERS) or _is_read_only(v) for v in value)
    return False


def writable_copy(value: Any) -> Any:
    """A copy of ``value`` sharing no dict, list or set with it (what a hit and ``to_dict`` hand
    out: editing them changes nothing an index holds); other values are shared (immutable)."""
    # only the containers are copied again (a hit's metadata is copied for every hit of every
    # search: until session 49 each value took a call of its own, a fifth of a small collection's
    # search for metadata holding a list of authors)
    if isinstance(value, dict):
        out = dict(value)
        for key, item in out.items():
            if isinstance(item, _COPIED):
                out[key] = writable_copy(item)
        return out
    if isinstance(value, list):
        return [writable_copy(item) if isinstance(item, _COPIED) else item for item in value]
    if isinstance(value, set):
        return set(value)
    return value


_COPIED = (dict, list, set)


def _plain_key(key: Any) -> Any:
    """A mapping's key as JSON writes it: a numpy scalar as a Python number or boolean."""
    return key.item() if isinstance(key, np.generic) else key


def plain_values(value: Any) -> Any:
    """``value`` as JSON writes and reads it back: numpy scalars as Python numbers and booleans,
    numpy arrays and tuples as lists, through dicts and lists (how an index reads metadata for its
    filters and saves it: ``index.docstore.saved_form``); anything else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):  # a numpy key too (json.dumps raised on one until session 51)
        return {_plain_key(key): plain_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_values(item) for item in value]
    return value


@dataclass(frozen=True)
class Document:
    """A unit of retrieval: a passage, section, whole document, table or caption.

    ``parent_id`` links a chunk back to the document it was cut from (``None`` for
    a whole document); ``modality`` is ``"text"``, ``"table"``, ``"image"``...
    """

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    modality: str = "text"

    def __post_init__(self) -> None:
        # an integer id becomes its text (it would come back as text from a saved index anyway);
        # other wrong types fail here, in one line, not deep inside an index build
        if isinstance(self.id, (int, np.integer)) and not isinstance(self.id, bool):
            object.__setattr__(self, "id", str(self.id))
        for name, expected in (("id", str), ("text", str), ("title", str), ("metadata", dict)):
            value = getattr(self, name)
            if not isinstance(value, expected):
                from ragroute.errors import InvalidArgumentError, value_type_name

                which = f"document {self.id!r}: " if isinstance(self.id, str) else "document: "
                raise InvalidArgumentError(
                    f"{which}{name} must be {'a mapping' if expected is dict else 'a string'}, "
                    f"got {value_type_name(value)}"
                )

    def full_text(self) -> str:
        """Title and text joined the way indexes see them."""
        return f"{self.title}\n{self.text}" if self.title else self.text

    def to_dict(self) -> dict[str, Any]:
        """The document as plain data (:meth:`from_dict` reads it back)."""
        data = asdict(self)
        data["metadata"] = writable_copy(self.metadata)  # an index's documents hold read-only ones
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Document:
        """The document :meth:`to_dict` wrote (``id`` required; other keys optional)."""
        return cls(
            id=str(data["id"]),
            text=data.get("text", ""),
            title=data.get("title", "") or "",
            metadata=dict(data.get("metadata") or {}),
            parent_id=data.get("parent_id"),
            modality=data.get("modality", "text") or "text",
        )


@dataclass(frozen=True)
class Query:
    """A query with an id (for evaluation) and free metadata."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    """One retrieved document with its score, rank and the source it came from.

    ``explain`` holds the numbers behind the score, e.g. each retriever's rank and
    score before fusion.
    """

    doc_id: str
    score: float
    source: str = ""
    rank: int = 0
    text: str = ""
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    modality: str = "text"
    explain: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The hit as plain data, as JSON writes it: numpy values and tuples in its metadata (which
        documents may hold, common in notebooks) as Python numbers and lists (:func:`plain_values`).
        Until session 44 they were handed on as they were: ``json.dumps(result.to_dict())`` raised
        on numpy values, and a tuple came back from JSON a list, another dict than the one written."""
        data = asdict(self)
        data["metadata"], data["explain"] = plain_values(data["metadata"]), plain_values(data["explain"])
        # a score or rank a caller's retriever gave as numpy (np.float32): json.dumps raised on it
        # (until session 51)
        data["score"], data["rank"] = plain_values(data["score"]), plain_values(data["rank"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hit:
        """The hit :meth:`to_dict` wrote (read back from JSON: a logged answer); a key that is no
        field, a missing ``doc_id`` / ``score``, a score that is no finite number, a rank that is no
        whole number, or metadata or explain that is no mapping, is
        :class:`~ragroute.errors.InvalidArgumentError` (as a decision's routes are: until session 56
        a null, text or NaN score was read back as it was, and printing the result raised)."""
        from ragroute.errors import InvalidArgumentError, is_finite_number, not_a_number_shown

        data = _mapping(data, "hit")
        _known_keys(data, _HIT_FIELDS, "hit")
        if "doc_id" not in data or "score" not in data:
            raise InvalidArgumentError("hit: needs 'doc_id' and 'score'")
        score, rank = data["score"], data.get("rank", 0)
        if not is_finite_number(score):
            raise InvalidArgumentError(
                f"hit {data['doc_id']!r}: 'score' must be a finite number, got {not_a_number_shown(score)}"
            )
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
            raise InvalidArgumentError(f"hit {data['doc_id']!r}: 'rank' must be a whole number, got {rank!r}")
        return cls(
            **{
                **data,
                "score": float(score),
                "rank": int(rank),
                "metadata": dict(_mapping(data.get("metadata") or {}, "hit metadata")),
                "explain": dict(_mapping(data.get("explain") or {}, "hit explain")),
            }
        )


@dataclass
class TraceStep:
    """One step of a decision trace: what ran, and the numbers it produced."""

    stage: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``stage`` beside the detail's keys (:meth:`from_dict` reads it back), as plain data
        (:func:`plain_values`)."""
        return {"stage": self.stage, **plain_values(self.detail)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceStep:
        """The step :meth:`to_dict` wrote (``stage`` beside the detail's keys)."""
        data = _mapping(data, "trace step")
        if not isinstance(data.get("stage"), str):
            from ragroute.errors import InvalidArgumentError

            raise InvalidArgumentError("trace step: needs a 'stage' (text)")
        return cls(data["stage"], {k: v for k, v in data.items() if k != "stage"})


@dataclass
class Decision:
    """What a router or gate decided, with the scores and signals behind it.

    ``routes`` maps route names to scores (probabilities where the router is
    calibrated); ``chosen`` lists the routes that will be queried, best first.
    :meth:`log_routes` gives the unrounded natural-log probabilities where the
    router computes them from scores (computed on demand, never serialised): the
    pipeline renormalises over a caller's visible routes with them, where every
    visible route rounds to 0 beside a hidden winner.
    """

    chosen: list[str]
    routes: dict[str, float] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)
    trace: list[TraceStep] = field(default_factory=list)
    decided_by: str = ""
    #: computes :meth:`log_routes` (set by routers that have scores to compute them from)
    log_routes_of: Callable[[], dict[str, float]] | None = field(default=None, repr=False, compare=False)

    def log_routes(self) -> dict[str, float]:
        """The unrounded log-probability of each route, where the router can give them ({} else)."""
        return self.log_routes_of() if self.log_routes_of is not None else {}

    def to_dict(self) -> dict[str, Any]:
        """The decision as plain data (:meth:`from_dict` reads it back; ``log_routes`` is left out):
        numpy values a gate, router or reranker gave (a ``np.float32`` probability) as Python
        numbers, as :meth:`Hit.to_dict` writes them (until session 52 ``json.dumps`` raised on them)."""
        return {
            "chosen": list(self.chosen),
            "routes": plain_values(dict(self.routes)),
            "signals": plain_values(dict(self.signals)),
            "decided_by": self.decided_by,
            "trace": [step.to_dict() for step in self.trace],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """The decision :meth:`to_dict` wrote (read back from JSON: a logged trace to study or
        compare; :meth:`log_routes` is then empty, as it is never written). Two decisions of the same
        query compare equal only with the same timings (the trace's ``ms``): compare what matters
        (``chosen``, ``routes``) or the ``to_dict()`` of each without them."""
        data = _mapping(data, "decision")
        _known_keys(data, {"chosen", "routes", "signals", "decided_by", "trace"}, "decision")
        from ragroute.errors import InvalidArgumentError

        chosen = data.get("chosen")
        if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
            raise InvalidArgumentError("decision: needs 'chosen' (a list of route names)")
        return cls(
            chosen=list(chosen),
            routes=_route_scores(_mapping(data.get("routes") or {}, "decision routes")),
            signals=dict(_mapping(data.get("signals") or {}, "decision signals")),
            trace=[TraceStep.from_dict(step) for step in data.get("trace") or ()],
            decided_by=str(data.get("decided_by") or ""),
        )


def _route_scores(routes: Mapping[str, Any]) -> dict[str, float]:
    """A logged decision's routes, each a finite number: until session 51 a null, a list or text
    was a TypeError or ValueError from ``float()``, and NaN or infinity was read back as it was
    (a decision no router makes, whose best route no comparison finds)."""
    from ragroute.errors import InvalidArgumentError, is_finite_number, not_a_number_shown

    for name, score in routes.items():
        if not is_finite_number(score):
            raise InvalidArgumentError(
                f"decision routes: {str(name)!r} must be a finite number (its probability), "
                f"got {not_a_number_shown(score)}"
            )
    return {str(name): float(score) for name, score in routes.items()}


_HIT_FIELDS = frozenset(
    {"doc_id", "score", "source", "rank", "text", "title", "metadata", "parent_id", "modality", "explain"}
)


def _mapping(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        from ragroute.errors import InvalidArgumentError, value_type_name

        raise InvalidArgumentError(
            f"{what} must be a mapping (what to_dict wrote), got {value_type_name(data)}"
        )
    return data


def _known_keys(data: Mapping[str, Any], known: Collection[str], what: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        from ragroute.errors import InvalidArgumentError, unknown_keys_message

        raise InvalidArgumentError(f"{what}: {unknown_keys_message(unknown, known)}")


def check_documents(documents: Any) -> list[Document]:
    """``documents`` as a list of :class:`~ragroute.types.Document`; one document given bare, a
    string, or anything else in the list is :class:`InvalidArgumentError`."""
    from ragroute.errors import InvalidArgumentError, check_batch, value_type_name

    if isinstance(documents, Document):
        raise InvalidArgumentError(
            f"documents must be a list, not one Document (wrap it: [document {documents.id!r}])"
        )
    docs = check_batch(documents, "documents")
    for doc in docs:
        if not isinstance(doc, Document):
            raise InvalidArgumentError(
                f"documents must be Document objects (Document(id, text, ...)), got {value_type_name(doc)}"
            )
    return docs
