"""Dense indexes whose vectors live in an external vector store (Qdrant, LanceDB): what they share.

Such an index is a ragroute index like the others (a document store, a manifest, routing,
filters, caller scopes) whose vectors are held by the store. :class:`ExternalVectorIndex` does
everything but talk to the store: documents get their internal ids from the document store,
vectors are encoded (or handed over) and written in batches with a payload of what filters can
match (:func:`payload`), each build writes a new collection (``<collection>-<random id>``) that the
manifest names (so a failed or killed build leaves the previous index and its collection
untouched), searches go one query vector at a time with the filters pushed down, and loading
checks that the collection holds vectors of the encoder's width and one per document. A store
adds one module: a subclass with the ``_create`` / ``_upsert`` / ``_remove`` / ``_query`` /
``_width`` / ``_count`` / ``drop_collection`` methods, registered as an index kind.

Filters push down exactly what the faiss flat index applies: a metadata key matches when the
document's value is one of the wanted strings or integers (type and value), ``modality`` and
``parent_id`` are fields of their own, and a caller's scope (:class:`ragroute.scopes.Visible`)
admits public documents and those whose access labels meet the scopes. Credentials are never
written to the manifest (stores read them from the environment).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragroute.errors import (
    EncoderMismatchError,
    IndexFormatError,
    RagrouteError,
    check_k,
    check_query_vectors,
)
from ragroute.index.dense import aligned_vectors
from ragroute.index.docstore import DocumentStore, check_have_text, filter_value, saved_form
from ragroute.index.io import FAMILY
from ragroute.index.local import VectorIndex
from ragroute.scopes import ACCESS_KEY, Visible, labels_of, visible
from ragroute.store.locks import crash_point
from ragroute.store.outside import CREATED_IN, created_in, note_outside
from ragroute.types import Document, Hit


@dataclass
class StoreParams:
    """Where the vectors go: ``location`` (a server URL, a folder, or ``:memory:`` where the store
    has one), a collection name prefix, and how many vectors one write carries."""

    location: str = ":memory:"
    collection: str = "ragroute"
    batch_size: int = 256

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(str(self.location)) if "://" in str(self.location) else None
        if parts is not None and (parts.username or parts.password):
            raise RagrouteError(
                f"the store URL {parts.scheme}://{parts.hostname or ''}... holds credentials, which would "
                "be written to the index's manifest and shown in errors: give the URL without them, and "
                "the key in $QDRANT_API_KEY"
            )
        folder = local_folder(str(self.location))
        if folder is not None:  # recorded absolute, for any working directory, and one client per
            self.location = str(folder.resolve())  # folder however it is spelt (until session 39
            # only the CLI did this: an index saved from Python with "vectors" loaded only from its cwd)
        # until session 54 a batch_size of another type ("256", 2.5) failed the first write with a
        # TypeError after the documents were added: they stayed in the index without their vectors
        batch = self.batch_size
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise RagrouteError(
                f"batch_size must be a positive integer: the vectors one write carries (got {batch!r})"
            )
        self.batch_size = int(batch)  # a numpy integer as the int the manifest's JSON takes

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        batch = known.get("batch_size")
        if isinstance(batch, int) and not isinstance(batch, bool) and batch < 1:
            known["batch_size"] = 1  # recorded before session 54, when it was read as 1
        return cls(**known)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of a store client's exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def payload(doc: Document) -> dict[str, Any]:
    """What filters can match: scalar metadata under ``meta`` (access labels apart), ``modality``,
    ``parent_id`` (when the document has one) and ``access`` (sorted labels, when any)."""
    from ragroute.scopes import ACCESS_KEY, labels_of

    meta = {}
    for key, value in doc.metadata.items():
        value = stored_scalar(value)
        if isinstance(value, (str, int, float, bool)) and key != ACCESS_KEY:
            meta[key] = value
    out: dict[str, Any] = {"meta": meta, "modality": doc.modality}
    if doc.parent_id is not None:
        out["parent_id"] = doc.parent_id
    labels = sorted(labels_of(doc.metadata.get(ACCESS_KEY)))
    if labels:
        out["access"] = labels
    return out


#: the integers a store holds and matches exactly (Qdrant's are 64-bit): ``[low, high)``
_INT64 = (-(2**63), 2**63)


def stored_scalar(value: Any) -> Any:
    """A metadata value as a store keeps it: as the document store reads it for filters
    (:func:`ragroute.index.docstore.saved_form`: numpy scalars as Python numbers, tuples and arrays
    as lists), and a float holding a whole number (within int64) as that integer, which a filter
    on the integer matches in a local index (``1.0 == 1``). Until session 44 a numpy integer
    (``np.int64(2001)``) was left out of the payload and a whole float stored as a float, so a
    filter ``year=2001`` matched them in a faiss index and silently not in a store."""
    value = saved_form(value)
    if isinstance(value, float) and value.is_integer() and _INT64[0] <= value < _INT64[1]:
        return int(value)
    return value


@dataclass(frozen=True)
class FilterClause:
    """One pushed-down condition: ``field`` (``modality``, ``parent_id`` or a metadata key, ``meta``
    true for the latter) is one of ``values``; or, with ``scopes`` set, the caller's visibility."""

    field: str = ""
    values: tuple[Any, ...] = ()
    meta: bool = True
    scopes: frozenset[str] | None = None


def collection_digest(rows: Iterable[tuple[int, np.ndarray, Any]]) -> tuple[int, str]:
    """The number of rows and an order-free digest of ``(iid, vector, payload)`` rows, as a store
    gives them back: the sum, modulo 2**256, of each row's sha256 over its id (8 bytes), its vector
    (float32) and its payload (canonical JSON). Order-free, so no store has to return rows sorted."""
    total, count = 0, 0
    for iid, vector, row_payload in rows:
        digest = hashlib.sha256(int(iid).to_bytes(8, "little", signed=True))
        digest.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
        digest.update(json.dumps(row_payload, sort_keys=True, ensure_ascii=True).encode())
        total = (total + int.from_bytes(digest.digest(), "big")) % (1 << 256)
        count += 1
    return count, f"{total:064x}"


def local_folder(location: str) -> Path | None:
    """The folder of an embedded store's ``location`` (None for a URL or ``:memory:``)."""
    if not location or location == ":memory:" or "://" in location:
        return None
    return Path(location).expanduser()


def store_matches(value: Any) -> bool:
    """Whether a store index can match filter value ``value``: strings and integers of 64 bits (not
    booleans, numbers with a fraction or null), what every store matches exactly. Until session 51
    a larger integer was pushed down, and missed the documents holding it as a whole float
    (``1e20``, kept a float by :func:`stored_scalar`), which a local index matches (``1e20 ==
    10**20``), silently."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    return isinstance(value, str) or _INT64[0] <= value < _INT64[1]


def filter_clauses(filters: Mapping[str, Any] | None, store: str) -> list[FilterClause]:
    """ragroute metadata filters (and a caller's scope) as clauses every store translates; values
    must be strings or integers (what every store matches exactly). A filter on ``access`` matches
    documents holding any of the wanted labels, as in a local index."""
    from ragroute.scopes import ACCESS_KEY

    clauses = []
    for key, wanted in (filters or {}).items():
        if isinstance(wanted, Visible):  # public documents, or labels the caller's scopes meet
            if wanted.key != ACCESS_KEY:  # the payload holds the labels of ACCESS_KEY only
                raise RagrouteError(
                    f"a {store} index scopes callers by the {ACCESS_KEY!r} labels, not {wanted.key!r}"
                )
            clauses.append(FilterClause(scopes=frozenset(wanted.scopes)))
            continue
        wanted = filter_value(key, wanted)  # access labels stripped and in NFC, as the payload holds them
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        values = [saved_form(v) for v in values]  # np.int64(3) is 3, as in a local index
        if not all(store_matches(v) for v in values):
            raise RagrouteError(
                f"a {store} index filters on strings and integers (of 64 bits); {key!r} has {values!r}"
            )
        # modality, parent_id and the access labels are fields of their own (see payload)
        clauses.append(
            FilterClause(key, tuple(values), meta=key not in ("modality", "parent_id", ACCESS_KEY))
        )
    return clauses


#: calls on the store that do not read an existing collection (its absence explains nothing)
_NOT_READS = frozenset(
    {
        "create a collection",
        "list the collections",
        "drop the collection",
        "drop the collection of a pruned build",
    }
)


class ExternalVectorIndex(VectorIndex):
    """Dense retrieval with the vectors in an external store (see the module docstring).

    Subclasses set ``kind``, ``store_name`` (for messages), ``params_key`` (the manifest entry) and
    ``default_params``, and implement the store calls.
    """

    store_name: ClassVar[str] = ""
    #: which filter values the store matches (the CLI's ``--filter`` offers only those)
    filter_value_matched: ClassVar[Any] = staticmethod(store_matches)
    params_key: ClassVar[str] = ""
    default_params: ClassVar[StoreParams] = StoreParams()

    def __init__(
        self,
        encoder: Any,
        params: StoreParams | None = None,
        store: DocumentStore | None = None,
        collection: str | None = None,
        name: str = "",
    ) -> None:
        super().__init__(store if store is not None else DocumentStore(), name)
        self.encoder = encoder
        self.params = params or type(self.default_params)(**asdict(self.default_params))
        self.collection = collection
        self.client = self._connect()

    # -- the store: one subclass per store ---------------------------------------------------
    def _connect(self) -> Any:
        """A client for ``params.location``; :class:`RagrouteError` in one line if unreachable."""
        raise NotImplementedError

    def _create(self, dim: int) -> None:
        """Create ``self.collection`` for vectors of ``dim`` (inner-product scores)."""
        raise NotImplementedError

    def _upsert(self, iids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        """Write one batch of vectors with their ids and payloads."""
        raise NotImplementedError

    def _remove(self, iids: Sequence[int]) -> None:
        """Delete the vectors of ``iids``."""
        raise NotImplementedError

    def _query(self, vector: np.ndarray, limit: int, clauses: list[FilterClause]) -> list[tuple[int, float]]:
        """The ``limit`` best ``(iid, inner product)`` pairs matching every clause, best first."""
        raise NotImplementedError

    def _width(self) -> int | None:
        """The vector width of ``self.collection`` (None when the store does not say)."""
        raise NotImplementedError

    def _count(self) -> int:
        """How many vectors ``self.collection`` holds."""
        raise NotImplementedError

    def _drop(self) -> None:
        """Delete ``self.collection`` from the store."""
        raise NotImplementedError

    def _rows(self) -> Iterator[tuple[int, np.ndarray, Any]]:
        """Every ``(iid, vector, payload)`` of ``self.collection``, in any order, read in batches;
        the payload as the store holds it (JSON-able)."""
        raise NotImplementedError

    def _names(self) -> list[str]:
        """The names of every collection at ``params.location``."""
        raise NotImplementedError

    @classmethod
    def collections_at(cls, params: StoreParams) -> list[str]:
        """The collections builds with ``params`` write (``<params.collection>-<id>``) that the store
        at ``params.location`` holds, sorted: what the kill harness checks no build leaves behind."""
        index = cls(None, params)
        names = index._call("list the collections", index._names)
        return sorted(name for name in names if name.startswith(f"{params.collection}-"))

    @classmethod
    def release_collection(cls, params: Mapping[str, Any], kept: Sequence[Mapping[str, Any]]) -> None:
        """Drop the collection a pruned build's manifest ``params`` name, unless one of the ``kept``
        builds' params name it too (the artifact store's ``RELEASES`` hook). A store folder that is
        gone, or a collection already dropped, leaves nothing to release."""
        recorded = dict(params.get(cls.params_key) or {})
        collection = recorded.get("collection_name")
        if not isinstance(collection, str):
            return
        for other in kept:
            other_recorded = other.get(cls.params_key) or {}
            if other_recorded.get("collection_name") == collection and other_recorded.get(
                "location"
            ) == recorded.get("location"):
                return
        folder = local_folder(str(recorded.get("location", "")))
        if folder is not None and not folder.is_dir():
            return
        index = cls(None, StoreParams.from_dict(recorded), collection=collection)
        index._call("drop the collection of a pruned build", index._drop_if_present)

    def _drop_if_present(self) -> None:
        try:
            self._count()
        except Exception:  # noqa: BLE001 - no such collection: nothing to drop
            return
        self._drop()

    def drop_collection(self) -> None:
        """Delete this build's collection from the store (the index can no longer be queried)."""
        if self.collection is not None:
            self._call("drop the collection", self._drop)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_options(
        cls, documents, options, *, encoder=None, name="", show_progress=None
    ) -> ExternalVectorIndex:
        params = getattr(options, "store", None) or getattr(options, cls.params_key, None)
        index = cls(encoder, params, name=name)
        try:
            index.add(documents, show_progress=show_progress)
        except BaseException:  # failed or interrupted (Ctrl-C): the caller never gets the index
            with contextlib.suppress(Exception):
                index.drop_collection()
            raise
        return index

    def add(self, documents: Sequence[Document], *, show_progress: bool | None = None) -> None:
        docs = list(documents)
        if docs:
            check_have_text(docs)
            vectors = self.encoder.encode_documents(
                [d.full_text() for d in docs], show_progress=show_progress
            )
            self.add_vectors(docs, vectors)

    def add_vectors(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        """Add documents with precomputed embeddings (rows aligned with ``documents``)."""
        vectors = aligned_vectors(documents, vectors, self.encoder.dim)
        with self.store.writing():
            self._add_vectors(documents, vectors)

    def _add_vectors(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        self._check_writable("add documents to")
        if self.collection is None:
            self.collection = f"{self.params.collection}-{secrets.token_hex(4)}"
            self._created_in = created_in()  # the artifact folder it is built for, if known
            recorded = {**asdict(self.params), "collection_name": self.collection, **self._owner()}
            note_outside(FAMILY, self.kind, {self.params_key: recorded})  # released if never published
            try:
                self._call("create a collection", self._create, self.encoder.dim)
            except BaseException:  # not made: the next add makes one (until session 54 the index kept
                self.collection = None  # naming it, and every later add failed "the collection no
                raise  # longer exists in the store ...: rebuild the index")
            crash_point("external: collection created")
        iids = self.store.add(documents)
        positions = [self.store.position(d.id) for d in documents]
        step = max(1, self.params.batch_size)
        try:
            for start in range(0, len(documents), step):
                stop = min(start + step, len(documents))
                self._call(
                    "write vectors",
                    self._upsert,
                    [int(i) for i in iids[start:stop]],
                    vectors[start:stop],
                    [payload(self.store.documents[p]) for p in positions[start:stop]],
                )
        except BaseException:  # a failed or interrupted write: none of these documents is added
            # (until session 44 the documents stayed, the vectors of the batches not yet written
            # missing: searches silently left them out, and adding them again was a duplicate id)
            with contextlib.suppress(Exception):
                self._remove([int(i) for i in iids])
            self.store.delete([d.id for d in documents])
            raise

    def delete(self, doc_ids: Sequence[str]) -> int:
        with self.store.writing():
            self._check_writable("delete documents from")
            if any(doc_id not in self.store for doc_id in doc_ids):
                self.store.delete(doc_ids)  # its one-line error for the unknown id, nothing deleted
            # the vectors first: when the store fails, the documents (and their hits) stay (until
            # session 44 they were gone, their vectors kept, and searches returned fewer than k)
            ids = list(dict.fromkeys(doc_ids))
            every = self.store.iids
            iids = [int(every[self.store.position(doc_id)]) for doc_id in ids]
            if iids:
                self._call("delete vectors", self._remove, iids)
            self.store.delete(ids)
            return len(iids)

    # -- searching --------------------------------------------------------------------------
    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Search with precomputed query embeddings; ``filters`` are pushed down into the store."""
        k = check_k(k)  # as a local index: the store's own refusals (limit 0), or none (2.5, True)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        vectors = check_query_vectors(vectors, len(vectors), self.encoder)  # a NaN row found nothing
        # the documents and their positions hold still while the store is searched: a vector found
        # then has a document, unless another program changed the collection
        with self.store.reading():
            return self._search_vectors(vectors, k, filters)

    def _search_vectors(
        self, vectors: np.ndarray, k: int, filters: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        if self.collection is None or len(self.store) == 0:
            return [[] for _ in range(len(vectors))]
        self.store.check_filter_keys(filters)  # pushed down, a key no document carries would match nothing
        clauses = filter_clauses(filters, self.store_name)
        self._check_scalar_keys(clauses)
        if any(c.scopes is None and not c.values for c in clauses):  # "one of no values": nothing
            return [[] for _ in range(len(vectors))]  # (Qdrant read an empty condition as everything)
        positions = self.store.positions_by_iid()
        out = []
        for vector in vectors:
            found = self._call("search", self._query, vector, min(k, len(self.store)), clauses)
            hits: list[Hit] = []
            for iid, score in found:
                position = positions.get(int(iid))
                if position is None:  # written by another program (until session 44 it was skipped,
                    raise RagrouteError(  # silently: the answer came back short)
                        f"{self.store_name} collection {self.collection} at {self.params.location} holds "
                        f"a vector the index has no document for (id {int(iid)}): the collection was "
                        "changed by another program (or a failed write could not be undone); rebuild "
                        "the index (ragroute build)"
                    )
                hits.append(self.store.hit(position, float(score), len(hits) + 1, self.name))
            out.append(hits)
        return out

    def _check_scalar_keys(self, clauses: list[FilterClause]) -> None:
        """A one-line error for a filter on a metadata key some document holds a list (or mapping)
        under: the store keeps only scalar values (:func:`payload`), so it would match none of them
        where a local index matches a list's items. With a caller's scope among the clauses, only
        the documents it may read count (until session 49 a hidden document's list refused the
        filter, which told the caller what a document it may not read holds; the scope keeps
        such documents out of the answer anyway)."""
        keys = {c.field for c in clauses if c.scopes is None and c.meta}
        if not keys:
            return
        # read again whenever the documents change: a count kept (a delete and an add) kept a stale
        # answer, and a key now holding a list in a document was pushed down, missing it silently
        version = self.store.version
        if getattr(self, "_nested_keys", (None, None))[0] != version:
            # a tuple or an array too, which a local index matches item by item (until session 44
            # the store matched none of them, silently); with the access labels of the documents
            # holding one
            nested: dict[str, set[frozenset[str]]] = {}
            for d in self.store.documents:
                for k, v in d.metadata.items():
                    if isinstance(saved_form(v), (list, dict)):
                        nested.setdefault(k, set()).add(labels_of(d.metadata.get(ACCESS_KEY)))
            self._nested_keys = (version, nested)
        scope = next((c.scopes for c in clauses if c.scopes is not None), None)
        held = self._nested_keys[1]
        found = sorted(
            k
            for k in keys & held.keys()
            if scope is None or any(visible(labels, scope) for labels in held[k])
        )
        if found:
            raise RagrouteError(
                f"a {self.store_name} index keeps scalar metadata only, and {', '.join(map(repr, found))} "
                "holds lists in some documents, which it cannot match: filter a local index (flat, hnsw, "
                "ivfpq)"
            )

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except RagrouteError:
            raise
        except Exception as exc:  # store clients raise many kinds (connection, lock, HTTP, schema)
            where = f"{self.store_name} at {self.params.location} (collection {self.collection})"
            gone = self._gone_reason() if what not in _NOT_READS else None
            raise RagrouteError(f"{where}: could not {what}: {gone or first_line(exc)}") from None

    def _gone_reason(self) -> str | None:
        """Why a call on the collection failed when the collection (or the store's folder) no longer
        exists; None when it exists or the store cannot say. Until session 41 an index loaded in a
        long-lived process failed every search with the store's own words (``lance error: Not
        found: .../local.rs:273:40``) once two later builds of its artifact had pruned its build
        and dropped the collection with it."""
        if self.collection is None:
            return None
        folder = local_folder(str(self.params.location))
        try:
            if folder is not None and not folder.is_dir():
                lost = f"the {self.store_name} folder {folder} is gone"
            elif self.collection not in self._names():
                lost = "the collection no longer exists in the store"
            else:
                return None
        except Exception:  # noqa: BLE001 - the store cannot say: its own error is reported
            return None
        if self.manifest is not None:  # loaded from a saved index
            return (
                f"{lost}: the index was rebuilt since this process loaded it, and a later build's "
                "pruning dropped the collection it used (or it was deleted); load the index again"
            )
        return (
            f"{lost} (dropped by drop_collection(), by another program, or by the pruning of another "
            "artifact folder naming it): rebuild the index (ragroute build)"
        )

    # -- persistence ------------------------------------------------------------------------
    def write_files(self, directory: Path) -> None:
        """Nothing of its own: the vectors are in the store, where the manifest says. From now on
        the collection is published: readers share it, so it is never changed in place."""
        self._published = True

    def _check_writable(self, what: str) -> None:
        """A one-line error before changing a published collection (saved, or loaded from a saved
        index): every reader of that index shares it, and would find its vector count changed."""
        if getattr(self, "_published", False) or self.manifest is not None:
            raise RagrouteError(
                f"cannot {what} {self.store_name} collection {self.collection}: a saved index uses it, "
                "and every reader shares it; build a new index with the documents (ragroute build)"
            )

    def _owner(self) -> dict[str, Any]:
        """The artifact folder the collection was created for, as the manifest records it
        (:data:`ragroute.store.outside.CREATED_IN`; none for an index built outside
        ``building()``): only that folder's pruning drops it, never a copy's."""
        owner = getattr(self, "_created_in", None)
        return {CREATED_IN: owner} if owner is not None else {}

    def manifest_params(self) -> dict[str, Any]:
        recorded: dict[str, Any] = {
            **asdict(self.params),
            "collection_name": self.collection,
            **self._owner(),
        }
        if self.collection is not None:
            count, digest = self._call("read the collection back", lambda: collection_digest(self._rows()))
            if count != len(self.store):
                raise RagrouteError(
                    f"{self.store_name} collection {self.collection} at {self.params.location} holds "
                    f"{count} vectors, the index {len(self.store)} documents: not saved"
                )
            recorded["content_sha256"] = digest
        return {self.params_key: recorded, "next_iid": self.store.next_iid}

    def verify_contents(self) -> None:
        """Read the collection back and compare it with the digest saved with the index (a
        one-line :class:`IndexFormatError` when they differ; indexes saved before the digest was
        recorded are checked by their vector count only, at load)."""
        recorded = (self.manifest.params.get(self.params_key) or {}) if self.manifest is not None else {}
        expected = recorded.get("content_sha256")
        if not isinstance(expected, str) or self.collection is None:
            return
        count, digest = self._call("read the collection back", lambda: collection_digest(self._rows()))
        if digest != expected:
            raise IndexFormatError(
                f"{self.store_name} collection {self.collection} at {self.params.location} no longer holds "
                f"what the index saved ({count} vectors; their digest differs: a damaged store file, or "
                "rows changed by another program): rebuild the index (ragroute build)"
            )

    @classmethod
    def read(
        cls, directory: Path, params: Mapping[str, Any], store: DocumentStore, name: str, encoder: Any
    ) -> ExternalVectorIndex:
        recorded = dict(params.get(cls.params_key) or {})
        collection = recorded.get("collection_name")
        if collection is None and len(store) == 0 and params.get("documents", 0) == 0:
            # saved before any document was added: no collection was ever created, and the index
            # loads back empty (it was saved, but loading it failed "names no collection" before)
            return cls(encoder, StoreParams.from_dict(recorded), store, None, name)
        if not isinstance(collection, str):
            raise IndexFormatError(f"{directory}: the manifest names no {cls.store_name} collection")
        folder = local_folder(str(recorded.get("location", "")))
        if folder is not None and not folder.is_dir():
            raise IndexFormatError(
                f"the {cls.store_name} folder holding the index's vectors, {folder}, is gone: "
                "rebuild the index (ragroute build)"
            )
        index = cls(encoder, StoreParams.from_dict(recorded), store, collection, name)
        index._created_in = recorded.get(CREATED_IN)  # saved again elsewhere, still not that folder's
        where = f"{cls.store_name} collection {collection} at {index.params.location}"
        width = index._call("read the collection", index._width)
        if width is not None and width != encoder.dim:
            raise EncoderMismatchError(
                f"{where} holds vectors of dim {width}, the encoder gives {encoder.dim}"
            )
        count = index._call("count the vectors", index._count)
        if count != len(store):
            raise IndexFormatError(f"{where} holds {count} vectors, the index {len(store)} documents")
        return index
