"""The document store of an index: documents in a JSONL file, with stable integer ids.

Each document gets an internal integer id (``iid``) the first time it is added;
iids are never reused, so faiss ids stay valid across adds and deletes. The
store answers id lookups and metadata filters for every index kind.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ragroute.display import counted
from ragroute.errors import (
    IndexFormatError,
    InvalidArgumentError,
    RagrouteError,
    check_filter_keys,
    check_filter_value_kinds,
    filter_value_kind,
    has_visible_text,
    lone_surrogate,
)
from ragroute.index.rwlock import ReadWriteLock
from ragroute.scopes import ACCESS_KEY, Visible, is_public, label_form, labels_of
from ragroute.types import Document, Hit, plain_values, read_only, writable_copy

DOCS_NAME = "docs.jsonl"

#: filter keys that match without being a metadata key of any document: the document fields
#: ``modality`` and ``parent_id``, and the access labels (:func:`_field`); every index allows them
FIELD_KEYS = frozenset({"modality", "parent_id", ACCESS_KEY})
#: filter masks kept per content of the store (a new set of filters past it starts the cache over)
FILTER_PARTS = 256


T = TypeVar("T")


def _read_locked(method: Callable[..., T]) -> Callable[..., T]:
    """Run a store method under the store's read lock: what it computes (and caches) comes from one
    version of the documents, never from a list a concurrent add or delete is changing."""

    @functools.wraps(method)
    def locked(self: DocumentStore, *args: Any, **kwargs: Any) -> T:
        with self.reading():
            return method(self, *args, **kwargs)

    return locked


class DocumentStore:
    """Documents in insertion order, addressable by string id, position or iid."""

    def __init__(self) -> None:
        self._docs: list[Document] = []
        self._iids: list[int] = []
        self._pos_by_id: dict[str, int] = {}
        self._pos_by_iid: dict[int, int] | None = None  # built on first use, dropped on every change
        self._next_iid = 0
        self._access: dict[str, tuple[np.ndarray, dict[str, np.ndarray]] | None] = {}
        self._keys: frozenset[str] | None = None  # metadata keys: read on first use, dropped on change
        self._scoped_keys: dict[tuple[str, frozenset[str]], frozenset[str] | None] = {}  # per caller scope
        self._version = 0
        self._frozen: tuple[int, tuple[Document, ...]] | None = None  # (version, documents) handed out
        self._filter_parts: dict[tuple[str, frozenset[Any]], np.ndarray] = {}  # per content
        self._kinds: dict[tuple[str, Any], frozenset[str]] = {}  # per key and caller scope, per content
        self.lock = ReadWriteLock()  # searches read, add and delete write (ragroute.index.rwlock)

    def reading(self) -> Any:
        """Context manager: hold the documents still while searching them (many readers at once)."""
        return self.lock.reading()

    def writing(self) -> Any:
        """Context manager: change the documents (and the indexes over them) alone."""
        return self.lock.writing()

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def documents(self) -> Sequence[Document]:
        """The documents in index order, as a tuple (one per version of the store): the list the
        store searches by was handed out until session 37, and sorting or appending to it changed
        every later search and id lookup."""
        frozen = self._frozen
        if frozen is None or frozen[0] != self._version:
            frozen = self._frozen = (self._version, tuple(self._docs))
        return frozen[1]

    @property
    def version(self) -> int:
        """A number that changes whenever documents are added or deleted (what a copy of anything
        read from them, such as the confidence router's score probe, checks before it is used)."""
        return self._version

    @property
    def iids(self) -> np.ndarray:
        return np.asarray(self._iids, dtype=np.int64)

    @property
    def next_iid(self) -> int:
        return self._next_iid

    def add(self, docs: Iterable[Document]) -> np.ndarray:
        """Append documents (ids must be new) and return their iids."""
        with self.writing():
            return self._add(list(docs))

    def check_new_ids(self, docs: Iterable[Document]) -> None:
        """A one-line :class:`RagrouteError` for an id of ``docs`` the store holds or ``docs`` repeat:
        what :meth:`add` refuses, for an index to check before it changes anything of its own."""
        seen: set[str] = set()
        for doc in docs:
            if doc.id in self._pos_by_id or doc.id in seen:
                raise RagrouteError(f"duplicate document id {doc.id!r}")
            seen.add(doc.id)

    def _add(self, new: list[Document]) -> np.ndarray:
        self.check_new_ids(new)
        iids = np.arange(self._next_iid, self._next_iid + len(new), dtype=np.int64)
        # the store keeps its own metadata: a caller editing its documents' dicts after an add
        # changed hits, filters and (stale) access labels live (until session 37)
        new = [_own_metadata(doc) for doc in new]
        for doc, iid in zip(new, iids):
            self._pos_by_id[doc.id] = len(self._docs)
            self._docs.append(doc)
            self._iids.append(int(iid))
        self._next_iid += len(new)
        self._content_changed(added=new)
        return iids

    def _content_changed(self, added: Sequence[Document] | None = None) -> None:
        """Drop what was read from the documents (access index, metadata keys, iid positions).

        A key no document labels stays known as unlabelled while the change (a delete, or an add
        of ``added``, documents that do not label it either) cannot have labelled one: searches after
        each single-document add would otherwise scan every document's metadata again."""
        self._version += 1
        self._access = {
            key: None
            for key, index in self._access.items()
            if index is None and all(is_public(doc.metadata, key) for doc in added or ())
        }
        self._keys = None
        self._scoped_keys = {}
        self._filter_parts = {}
        self._kinds = {}
        self._pos_by_iid = None

    def delete(self, ids: Iterable[str]) -> np.ndarray:
        """Remove documents by id and return the iids they had; unknown ids raise."""
        with self.writing():
            return self._delete(set(ids))

    def _delete(self, drop: set[str]) -> np.ndarray:
        missing = drop - self._pos_by_id.keys()
        if missing:
            first = sorted(missing)[0]
            chunks = [doc.id for doc in self._docs if doc.parent_id == first]
            # an index of sections or paragraphs holds a document's chunks, not the document: say
            # which ids to delete (until session 43 the error named no way on)
            hint = (
                f": this index holds its {len(chunks)} chunks ({', '.join(repr(c) for c in chunks[:3])}"
                f"{', ...' if len(chunks) > 3 else ''}); delete those ids"
                if chunks
                else ""
            )
            raise RagrouteError(f"cannot delete unknown document id {first!r}{hint}")
        removed = [iid for doc, iid in zip(self._docs, self._iids) if doc.id in drop]
        kept = [(doc, iid) for doc, iid in zip(self._docs, self._iids) if doc.id not in drop]
        self._docs = [doc for doc, _ in kept]
        self._iids = [iid for _, iid in kept]
        self._pos_by_id = {doc.id: i for i, doc in enumerate(self._docs)}
        self._content_changed()
        return np.asarray(removed, dtype=np.int64)

    def position(self, doc_id: str) -> int:
        return self._pos_by_id[doc_id]

    @_read_locked
    def positions_by_iid(self) -> dict[int, int]:
        """iid -> position of every stored document (what vector indexes map their ids back with)."""
        if self._pos_by_iid is None:
            self._pos_by_iid = {iid: pos for pos, iid in enumerate(self._iids)}
        return self._pos_by_iid

    def get(self, doc_id: str) -> Document:
        return self._docs[self._pos_by_id[doc_id]]

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._pos_by_id

    @_read_locked
    def filter_mask(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Boolean mask over positions of documents whose metadata matches ``filters``.

        A filter value that is a list, tuple or set matches any of its members; a document whose
        metadata value is a list matches when any of its items is wanted; the
        keys ``modality`` and ``parent_id`` match the document fields of that name; a
        :class:`~ragroute.scopes.Visible` value (a caller's scope) keeps the documents whose
        access labels are public or meet the scope (:meth:`access_mask`); a filter value ``None``
        matches documents whose value is null or that lack the key. ``None`` when nothing is
        restricted. A key no document carries is refused (:meth:`check_filter_keys`).
        """
        if not filters:
            return None
        self.check_filter_keys(filters)
        mask: np.ndarray | None = None
        for key, wanted in filters.items():
            if isinstance(wanted, Visible):
                part = self.access_mask(wanted.scopes, wanted.key)
                if part is None:
                    continue
            else:
                part = self._filter_part(key, wanted)
            mask = part if mask is None else mask & part
        return mask

    def _filter_part(self, key: str, wanted: Any) -> np.ndarray:
        """The (read-only) mask of the documents whose ``key`` matches ``wanted``, kept per content
        for the last :data:`FILTER_PARTS` filters: every query read every document's metadata in
        Python, several times per pipeline query (33 ms at 80k documents, until session 37)."""
        allowed = _allowed(filter_value(key, wanted))
        cache_key = (key, frozenset(allowed))
        part = self._filter_parts.get(cache_key)
        if part is None:
            values = [_field(doc, key) for doc in self._docs]
            part = np.fromiter((_matches(v, allowed) for v in values), dtype=bool, count=len(values))
            part.flags.writeable = False  # shared by the queries that use it
            if len(self._filter_parts) >= FILTER_PARTS:
                self._filter_parts = {}
            self._filter_parts[cache_key] = part
        return part

    @_read_locked
    def metadata_keys(
        self, scopes: Iterable[str] | None = None, key: str = ACCESS_KEY
    ) -> frozenset[str] | None:
        """The metadata keys of the stored documents, computed once per content; with ``scopes``,
        of the documents a caller holding them may read (:meth:`access_mask`; once per scope set),
        so a caller learns no key of documents hidden from it. ``None`` when there is no such
        document (an empty store, or nothing visible): there are no keys to tell."""
        if not self._docs:
            return None
        if self._keys is None:
            self._keys = frozenset(k for doc in self._docs for k in doc.metadata)
        if scopes is None:
            return self._keys
        scope = (key, frozenset(scopes))
        if scope not in self._scoped_keys:
            mask = self.access_mask(scope[1], key)
            keys: frozenset[str] | None = self._keys
            if mask is not None:  # some documents hidden: the keys of the visible ones
                visible_keys = (k for doc, seen in zip(self._docs, mask) if seen for k in doc.metadata)
                keys = frozenset(visible_keys) if bool(mask.any()) else None
            if len(self._scoped_keys) >= 256:  # many distinct callers: start over rather than grow
                self._scoped_keys = {}
            self._scoped_keys[scope] = keys
        return self._scoped_keys[scope]

    def check_filter_keys(self, filters: Mapping[str, Any] | None) -> None:
        """A one-line :class:`~ragroute.errors.InvalidArgumentError` for a filter key no stored
        document carries (it would match nothing, silently): what every index kind checks before it
        filters, local or pushed down into an external store. The field keys (:data:`FIELD_KEYS`)
        always pass; a caller's scope (a :class:`~ragroute.scopes.Visible` value) is no key, and
        only the documents it lets the caller read are counted. A store with no such document
        refuses nothing (it has no keys to tell)."""
        if not filters or not self._docs:
            return
        named = {key: value for key, value in filters.items() if not isinstance(value, Visible)}
        if not named:
            return
        scope = next((value for value in filters.values() if isinstance(value, Visible)), None)
        carried = self.metadata_keys() if scope is None else self.metadata_keys(scope.scopes, scope.key)
        check_filter_keys(named, carried, FIELD_KEYS)
        # a value of no kind the key's values are matches nothing: refused as a key no document
        # carries is ({"year": "2020"} against integer years returned nothing, silently, until session 52)
        for key, wanted in named.items():
            if key not in FIELD_KEYS and carried is not None and key in carried:
                check_filter_value_kinds(key, filter_value(key, wanted), self._value_kinds(key, scope))

    @_read_locked
    def _value_kinds(self, key: str, scope: Visible | None) -> frozenset[str]:
        """The kinds (:func:`~ragroute.errors.filter_value_kind`) of the ``key`` values of the
        documents that carry it (with ``scope``: those its caller may read), and of the items of
        list values, nulls and empty lists left out (none: nothing is refused); once per key and
        scope, per content."""
        cache_key = (key, None if scope is None else (scope.key, frozenset(scope.scopes)))
        kinds = self._kinds.get(cache_key)
        if kinds is None:
            mask = None if scope is None else self.access_mask(scope.scopes, scope.key)
            found: set[str] = set()
            for position, doc in enumerate(self._docs):
                if key in doc.metadata and (mask is None or mask[position]):
                    value = saved_form(doc.metadata[key])
                    if value is None or value == []:  # tell no kind (a filter value None is never refused)
                        continue
                    found.add(filter_value_kind(value))
                    if isinstance(value, list):  # a list value matches by its items too (_matches)
                        found.update(filter_value_kind(v) for v in value if not isinstance(v, (list, dict)))
            if len(self._kinds) >= FILTER_PARTS:
                self._kinds = {}
            kinds = self._kinds[cache_key] = frozenset(found)
        return kinds

    @_read_locked
    def access_mask(self, scopes: Iterable[str], key: str = "access") -> np.ndarray | None:
        """Mask over positions of the documents a caller holding ``scopes`` may read (public ones
        and those whose ``key`` labels meet the scopes); ``None`` when that is every document
        (nothing labelled: no cost for stores that do not use access labels)."""
        index = self._access_index(key)
        if index is None:
            return None
        labelled, by_label = index
        mask = ~labelled
        for scope in scopes:
            positions = by_label.get(scope)
            if positions is not None:
                mask[positions] = True
        return None if bool(mask.all()) else mask

    def _access_index(self, key: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """(labelled documents, label -> positions of the documents holding it), computed once per
        content. Positions, not a mask per label: a mask per label took documents x labels (400 MB
        for 20k documents labelled per user, until session 37)."""
        if key not in self._access:
            if all(is_public(doc.metadata, key) for doc in self._docs):  # the common case
                self._access[key] = None
                return None
            labelled = np.zeros(len(self._docs), dtype=bool)
            holders: dict[str, list[int]] = {}
            for position, doc in enumerate(self._docs):
                labels = labels_of(doc.metadata.get(key))
                if labels:
                    labelled[position] = True
                    for label in labels:
                        holders.setdefault(label, []).append(position)
            by_label = {label: np.asarray(found, dtype=np.int64) for label, found in holders.items()}
            self._access[key] = (labelled, by_label) if labelled.any() else None
        return self._access[key]

    def hit(self, position: int, score: float, rank: int, source: str) -> Hit:
        """Build a :class:`Hit` for the document at ``position``."""
        doc = self._docs[position]
        return Hit(
            doc_id=doc.id,
            score=float(score),
            source=source,
            rank=rank,
            text=doc.text,
            title=doc.title,
            metadata=writable_copy(doc.metadata),
            parent_id=doc.parent_id,
            modality=doc.modality,
        )

    def save(self, directory: Path) -> str:
        """Write ``docs.jsonl`` (one document per line, with its iid) into ``directory``."""
        path = Path(directory) / DOCS_NAME
        with open(path, "w", encoding="utf-8") as handle:
            for doc, iid in zip(self._docs, self._iids):
                row = {"iid": iid, **doc.to_dict()}
                try:
                    _check_text_keys(doc.metadata)
                    line = json.dumps(row, ensure_ascii=False, default=_json_value)
                except TypeError as exc:
                    raise InvalidArgumentError(f"document {doc.id!r}: metadata {exc}") from None
                try:
                    handle.write(line + "\n")
                except UnicodeEncodeError:
                    # a lone surrogate in an id or in metadata (text and title are refused when
                    # added): no UTF-8 file can hold it (until session 44 the bare UnicodeEncodeError)
                    in_id = lone_surrogate(doc.id)
                    where, problem = ("its id", in_id) if in_id else ("metadata", lone_surrogate(row))
                    raise InvalidArgumentError(
                        f"document {doc.id!r}: {where} is not valid Unicode ({problem}), "
                        "which cannot be saved"
                    ) from None
        return DOCS_NAME

    @classmethod
    def load(cls, directory: Path, next_iid: int | None = None) -> DocumentStore:
        """Read ``docs.jsonl``; ``next_iid`` (from the manifest) keeps deleted iids retired."""
        path = Path(directory) / DOCS_NAME
        store = cls()
        line_no = 0
        seen_iids: set[int] = set()
        try:
            with open(path, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):  # noqa: B007 (read in except)
                    row = json.loads(line)
                    doc_id, iid = str(row["id"]), int(row.pop("iid"))
                    # a repeated id or iid is refused as any corrupt line is: until session 54 it
                    # loaded (verify=False), one id named two documents and a dense hit on the
                    # shared iid named the later one (the earlier was never found)
                    if doc_id in store._pos_by_id or iid in seen_iids:
                        what = f"document id {doc_id!r}" if doc_id in store._pos_by_id else f"iid {iid}"
                        raise ValueError(f"{what} is repeated")
                    seen_iids.add(iid)
                    store._pos_by_id[doc_id] = len(store._docs)
                    store._iids.append(iid)
                    doc = Document.from_dict(row)
                    object.__setattr__(doc, "metadata", read_only(doc.metadata))  # as _own_metadata
                    store._docs.append(doc)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{path} line {line_no} is corrupt: {exc}") from None
        store._next_iid = max(next_iid or 0, max(store._iids, default=-1) + 1)
        return store


class _Bool:
    """A boolean as a set member that equals no integer (``True == 1`` in Python; a filter on 1
    must not match a document whose value is ``True``, as in the external stores)."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Bool) and other.value is self.value

    def __hash__(self) -> int:
        return hash((_Bool, self.value))


def _own_metadata(doc: Document) -> Document:
    """``doc`` holding a read-only copy of its metadata (:func:`~ragroute.types.read_only`): the
    caller's dicts and lists stay theirs, and an edit of a held document's raises rather than
    changing hits at once and filters and access labels only when their caches are next rebuilt."""
    held = read_only(doc.metadata)
    if held is doc.metadata:
        return doc  # a document this or another index holds: nothing to copy
    own = copy.copy(doc)  # not dataclasses.replace: the fields were checked when the document was made
    object.__setattr__(own, "metadata", held)
    return own


def check_have_text(docs: Sequence[Document]) -> None:
    """Refuse, in one line, documents an index would read from their text but that have neither
    text nor title holding a visible character: they match no query, and a dense index would still
    return them as hits. (Documents added with their own vectors, and a graph's passages known only
    from triples, need no text.)"""
    blank = [doc.id for doc in docs if not has_visible_text(doc.text) and not has_visible_text(doc.title)]
    if blank:
        raise InvalidArgumentError(
            f"{counted(len(blank), 'document')} with neither text nor title to index (nothing added): "
            f"{', '.join(map(repr, blank[:3]))}{' ...' if len(blank) > 3 else ''}"
        )
    for doc in docs:  # a lone surrogate: the encoder's tokenizer raised an internal TypeError
        for field_name in ("text", "title"):
            problem = lone_surrogate(getattr(doc, field_name))
            if problem:
                raise InvalidArgumentError(
                    f"document {doc.id!r}: its {field_name} is not valid Unicode ({problem}; nothing added)"
                )


def value_matches(value: Any, wanted: Any) -> bool:
    """Whether a metadata ``value`` passes the filter value ``wanted`` as in an index
    (:meth:`DocumentStore.filter_mask`: a list of wanted values, any of them; a list value, any of its
    items; a boolean equal to no number): what filters hits of retrievers that are not ragroute's."""
    return _matches(saved_form(value), _allowed(wanted))


def _allowed(wanted: Any) -> set[Any]:
    """The values a filter value ``wanted`` (one, or a list of them) lets through, as set members."""
    members = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    return {_hashable(saved_form(v)) for v in members}


def _matches(value: Any, allowed: set[Any]) -> bool:
    """Whether a document's metadata ``value`` is wanted: the value itself, or for a list value
    (``"tags": ["hardware", "printer"]``) any of its items, as vector stores match arrays."""
    if _hashable(value) in allowed:
        return True
    return isinstance(value, list) and any(
        _hashable(item) in allowed for item in value if not isinstance(item, (list, dict))
    )


def _hashable(value: Any) -> Any:
    """A metadata value as a set member (a list value, e.g. access labels, as a tuple; a boolean
    apart from the integers; a mapping, or a list holding one or a list, frozen all the way down:
    no filter value equals one, but every value must be looked up)."""
    if isinstance(value, bool):
        return _Bool(value)
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return (_Mapping, tuple(sorted((str(k), _hashable(v)) for k, v in value.items())))
    return value


class _Mapping:
    """Marks a frozen mapping in :func:`_hashable` (so it equals no tuple a filter could hold)."""


def _field(doc: Document, key: str) -> Any:
    if key == "modality":
        return doc.modality
    if key == "parent_id":
        return doc.parent_id
    if key == ACCESS_KEY:
        return access_value(doc.metadata.get(key))
    return saved_form(doc.metadata.get(key))


def access_value(value: Any) -> list[str] | None:
    """The access labels a metadata ``value`` holds, as a filter on ``access`` reads them however
    they are written (``"hr,finance"`` or ``["hr", "finance"]``; :func:`~ragroute.scopes.labels_of`):
    sorted, ``None`` when there is none (public). What an index's documents and an adapter's hits
    are both filtered on (an adapter compared the raw value until session 48)."""
    labels = labels_of(value)
    return sorted(labels) if labels else None


def filter_value(key: str, wanted: Any) -> Any:
    """A filter value ``wanted`` on ``key`` as it is compared: on the access labels, each text in
    the one spelling labels are read in (:func:`~ragroute.scopes.label_form`: stripped, NFC), as the
    documents' labels and a caller's scopes are (until session 48 ``access="Jose\u0301"``, or
    ``" hr"``, matched no document labelled ``"Jos\u00e9"`` or ``"hr"``); on any other key, as
    given."""
    if key != ACCESS_KEY:
        return wanted
    members = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    return [label_form(v) if isinstance(v, str) else v for v in members]


def saved_form(value: Any) -> Any:
    """A metadata or filter value as saving and loading the index gives it back (:meth:`DocumentStore.
    save`): numpy scalars as Python numbers and booleans, numpy arrays and tuples as lists
    (:func:`ragroute.types.plain_values`, what a hit's ``to_dict`` writes too). Until session 43 an
    index matched filters on the values as added, and the same index loaded again answered
    otherwise: ``np.True_`` matched no filter ``True`` (and a filter ``np.True_`` matched ``1`` but
    not ``True``), a tuple of tags was one value, not its items, and an array raised ``TypeError:
    unhashable type``."""
    return plain_values(value)


def _check_text_keys(value: Any) -> None:
    """``TypeError`` for a mapping key in ``value`` that is not text: JSON writes ``1`` as ``"1"``,
    so the loaded index would hold another key than the one added (until session 45 it did)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"has the key {key!r} ({type(key).__name__}), which a saved index would read back "
                    "as text: use text keys"
                )
            _check_text_keys(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_text_keys(item)


def _json_value(value: Any) -> Any:
    """Metadata values JSON lacks: numpy scalars and arrays (common in notebooks) become numbers and
    lists (as :func:`saved_form` reads them for filters); anything else (a set, bytes, an object)
    is a one-line error naming its type."""
    if isinstance(value, (np.generic, np.ndarray)):
        return saved_form(value)
    kind = type(value).__name__
    raise TypeError(f"holds a {kind}, which cannot be saved: use text, numbers, lists or mappings")
