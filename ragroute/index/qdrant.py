"""Dense retrieval in Qdrant: the vectors live in a Qdrant collection, the documents in the artifact.

An index of kind ``qdrant`` is a ragroute index like the others (a document store, a manifest,
routing, filters, caller scopes) whose vectors are held by Qdrant (``qdrant-client``, extra
``ragroute[qdrant]``): a server (``location`` an ``http(s)://`` URL; an API key, if any, comes
from ``$QDRANT_API_KEY`` and is never written anywhere), an embedded on-disk store (a folder
path), or ``:memory:`` (tests). Each build writes a new collection (``<collection>-<id>``) and
the manifest names it, so a failed or killed build leaves the previous index, and its
collection, untouched; a superseded collection is not deleted (say
:meth:`QdrantIndex.drop_collection` when no reader needs it).

Metadata filters and caller scopes are pushed down into Qdrant's own filter language
(``payload`` fields ``meta.<key>``, ``modality``, ``parent_id`` and ``access``), so a filtered
query returns the top ``k`` *matching* documents, exactly as the faiss flat index does on the
same vectors (``tests/test_qdrant.py``, ``ragroute bench scale`` ``store_identical``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import EncoderMismatchError, IndexFormatError, RagrouteError
from ragroute.index.dense import aligned_vectors
from ragroute.index.docstore import DocumentStore
from ragroute.index.local import VectorIndex
from ragroute.scopes import Visible
from ragroute.types import Document, Hit

_CLIENTS: dict[str, Any] = {}  # one client per embedded folder: Qdrant locks the folder per client
_CLIENTS_LOCK = threading.Lock()


@atexit.register
def _close_clients() -> None:
    """Close the shared clients before the interpreter tears modules down (their ``__del__``
    would otherwise fail noisily at exit)."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            with contextlib.suppress(Exception):
                client.close()
        _CLIENTS.clear()


@dataclass
class QdrantParams:
    """Where the vectors go: ``location`` (URL, folder or ``:memory:``) and a collection name prefix."""

    location: str = ":memory:"
    collection: str = "ragroute"
    batch_size: int = 256

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QdrantParams:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def connect(location: str) -> Any:
    """A Qdrant client for ``location`` (shared per embedded folder); one-line error if it cannot be had."""
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise RagrouteError("a qdrant index needs qdrant-client: pip install 'ragroute[qdrant]'") from None
    with _CLIENTS_LOCK:
        if location in _CLIENTS:
            return _CLIENTS[location]
        try:
            if location == ":memory:":
                client = QdrantClient(location=":memory:")
            elif location.startswith(("http://", "https://")):
                client = QdrantClient(
                    url=location,
                    api_key=os.environ.get("QDRANT_API_KEY"),
                    timeout=10,
                    check_compatibility=False,
                )
                client.get_collections()  # fail now, in one line, when the server is down
            else:
                client = QdrantClient(path=str(Path(location).expanduser()))
        except RagrouteError:
            raise
        except Exception as exc:  # the client raises many kinds (connection, lock, HTTP)
            raise RagrouteError(f"qdrant at {location} is unreachable: {_first_line(exc)}") from None
        _CLIENTS[location] = client
        return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class QdrantIndex(VectorIndex):
    """Dense retrieval with the vectors in a Qdrant collection (see the module docstring)."""

    kind = "qdrant"

    def __init__(
        self,
        encoder: Any,
        params: QdrantParams | None = None,
        store: DocumentStore | None = None,
        collection: str | None = None,
        name: str = "",
    ) -> None:
        super().__init__(store if store is not None else DocumentStore(), name)
        self.encoder = encoder
        self.params = params or QdrantParams()
        self.client = connect(self.params.location)
        self.collection = collection

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_options(cls, documents, options, *, encoder=None, name="", show_progress=None) -> QdrantIndex:
        index = cls(encoder, getattr(options, "qdrant", None) or QdrantParams(), name=name)
        index.add(documents, show_progress=show_progress)
        return index

    def add(self, documents: Sequence[Document], *, show_progress: bool | None = None) -> None:
        docs = list(documents)
        if docs:
            vectors = self.encoder.encode_documents(
                [d.full_text() for d in docs], show_progress=show_progress
            )
            self.add_vectors(docs, vectors)

    def add_vectors(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        """Add documents with precomputed embeddings (rows aligned with ``documents``)."""
        from qdrant_client import models

        vectors = aligned_vectors(documents, vectors, self.encoder.dim)
        if self.collection is None:
            self.collection = f"{self.params.collection}-{secrets.token_hex(4)}"
            self._call(
                "create a collection",
                self.client.create_collection,
                self.collection,
                vectors_config=models.VectorParams(size=self.encoder.dim, distance=models.Distance.DOT),
            )
        iids = self.store.add(documents)
        positions = [self.store.position(d.id) for d in documents]
        step = max(1, self.params.batch_size)
        for start in range(0, len(documents), step):
            points = [
                models.PointStruct(
                    id=int(iids[i]),
                    vector=vectors[i].tolist(),
                    payload=_payload(self.store.documents[positions[i]]),
                )
                for i in range(start, min(start + step, len(documents)))
            ]
            self._call("write vectors", self.client.upsert, self.collection, points=points, wait=True)

    def delete(self, doc_ids: Sequence[str]) -> int:
        from qdrant_client import models

        iids = self.store.delete(doc_ids)
        if len(iids):
            selector = models.PointIdsList(points=[int(i) for i in iids])
            self._call(
                "delete vectors", self.client.delete, self.collection, points_selector=selector, wait=True
            )
        return len(iids)

    def drop_collection(self) -> None:
        """Delete this build's collection from Qdrant (the index can no longer be queried)."""
        if self.collection is not None:
            self._call("drop the collection", self.client.delete_collection, self.collection)

    # -- searching --------------------------------------------------------------------------
    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Search with precomputed query embeddings; ``filters`` are pushed down into Qdrant."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.collection is None or len(self.store) == 0:
            return [[] for _ in range(len(vectors))]
        condition = qdrant_filter(filters)
        out = []
        for vector in vectors:
            response = self._call(
                "search",
                self.client.query_points,
                self.collection,
                query=vector.tolist(),
                limit=min(k, len(self.store)),
                query_filter=condition,
                with_payload=False,
            )
            hits: list[Hit] = []
            positions = self.store.positions_by_iid()
            for point in response.points:
                position = positions.get(int(point.id))
                if position is not None:
                    hits.append(self.store.hit(position, float(point.score), len(hits) + 1, self.name))
            out.append(hits)
        return out

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            where = f"qdrant at {self.params.location} (collection {self.collection})"
            raise RagrouteError(f"{where}: could not {what}: {_first_line(exc)}") from None

    # -- persistence ------------------------------------------------------------------------
    def write_files(self, directory: Path) -> None:
        """Nothing of its own: the vectors are in Qdrant, where the manifest says."""

    def manifest_params(self) -> dict[str, Any]:
        return {
            "qdrant": {**asdict(self.params), "collection_name": self.collection},
            "next_iid": self.store.next_iid,
        }

    @classmethod
    def read(
        cls, directory: Path, params: Mapping[str, Any], store: DocumentStore, name: str, encoder: Any
    ) -> QdrantIndex:
        recorded = dict(params.get("qdrant") or {})
        collection = recorded.get("collection_name")
        if not isinstance(collection, str):
            raise IndexFormatError(f"{directory}: the manifest names no qdrant collection")
        index = cls(encoder, QdrantParams.from_dict(recorded), store, collection, name)
        info = index._call("read the collection", index.client.get_collection, collection)
        size = getattr(getattr(info.config.params, "vectors", None), "size", None)
        if size is not None and size != encoder.dim:
            raise EncoderMismatchError(
                f"qdrant collection {collection} at {index.params.location} holds vectors of dim {size}, "
                f"the encoder gives {encoder.dim}"
            )
        count = index._call("count the vectors", index.client.count, collection, exact=True).count
        if count != len(store):
            raise IndexFormatError(
                f"qdrant collection {collection} at {index.params.location} holds {count} vectors, "
                f"the index {len(store)} documents"
            )
        return index


def _payload(doc: Document) -> dict[str, Any]:
    """What filters can match in Qdrant: scalar metadata under ``meta.``, modality, parent, access."""
    from ragroute.scopes import ACCESS_KEY, labels_of

    meta = {
        k: v for k, v in doc.metadata.items() if isinstance(v, (str, int, float, bool)) and k != ACCESS_KEY
    }
    payload: dict[str, Any] = {"meta": meta, "modality": doc.modality}
    if doc.parent_id is not None:
        payload["parent_id"] = doc.parent_id
    labels = sorted(labels_of(doc.metadata.get(ACCESS_KEY)))
    if labels:
        payload["access"] = labels
    return payload


def qdrant_filter(filters: Mapping[str, Any] | None) -> Any:
    """ragroute metadata filters (and a caller's scope) as a Qdrant ``Filter`` (None: no filter)."""
    if not filters:
        return None
    from qdrant_client import models

    must: list[Any] = []
    for key, wanted in filters.items():
        if isinstance(wanted, Visible):  # public documents, or labels the caller's scopes meet
            public = models.IsEmptyCondition(is_empty=models.PayloadField(key="access"))
            should: list[Any] = [public]
            if wanted.scopes:
                should.append(
                    models.FieldCondition(key="access", match=models.MatchAny(any=sorted(wanted.scopes)))
                )
            must.append(models.Filter(should=should))
            continue
        field = key if key in ("modality", "parent_id") else f"meta.{key}"
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise RagrouteError(f"a qdrant index filters on strings and integers; {key!r} has {values!r}")
        must.append(models.FieldCondition(key=field, match=models.MatchAny(any=values)))
    return models.Filter(must=must)
