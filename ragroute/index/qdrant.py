"""Dense retrieval in Qdrant: the vectors live in a Qdrant collection, the documents in the artifact.

An index of kind ``qdrant`` is a ragroute index like the others (a document store, a manifest,
routing, filters, caller scopes) whose vectors are held by Qdrant (``qdrant-client``, extra
``ragroute[qdrant]``): a server (``location`` an ``http(s)://`` URL; an API key, if any, comes
from ``$QDRANT_API_KEY`` and is never written anywhere), an embedded on-disk store (a folder
path), or ``:memory:`` (tests). Each build writes a new collection (``<collection>-<id>``) and
the manifest names it, so a failed or killed build leaves the previous index, and its
collection, untouched; a superseded collection is dropped when the artifact store prunes its build
(:mod:`ragroute.index.external`).

Searches are exact (a server is asked for ``SearchParams(exact=True)``, a scan rather than its HNSW
graph; the embedded store always scans). Metadata filters and caller scopes are pushed down into
Qdrant's own filter language
(``payload`` fields ``meta.<key>``, ``modality``, ``parent_id`` and ``access``), so a filtered
query returns the top ``k`` *matching* documents, exactly as the faiss flat index does on the
same vectors (``tests/test_external_stores.py``, ``ragroute bench scale`` ``store_identical``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import InvalidArgumentError, RagrouteError
from ragroute.index.external import ExternalVectorIndex, FilterClause, StoreParams, filter_clauses, first_line

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


class QdrantParams(StoreParams):
    """Where the vectors go: a server URL, an embedded store's folder, or ``:memory:`` (the default)."""


def is_server(location: str) -> bool:
    """Whether ``location`` names a Qdrant server: an ``http://`` or ``https://`` URL (a URL's
    scheme in any case, ``HTTP://`` too)."""
    return "://" in location and location.split("://", 1)[0].lower() in ("http", "https")


def connect(location: str) -> Any:
    """A Qdrant client for ``location`` (shared per embedded folder); one-line error if it cannot be had."""
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise RagrouteError("a qdrant index needs qdrant-client: pip install 'ragroute[qdrant]'") from None
    if "://" in location and not is_server(location):
        # until session 54 any other URL (``HTTP://`` too) was taken for a folder: an embedded store
        # was made in the working directory (./qdrant:/host:6333), silently, and the saved index
        # loaded only from there
        raise RagrouteError(
            f"qdrant at {location}: a qdrant index keeps its vectors at an http:// or https:// server "
            "URL, in a folder, or in :memory:, not at a URL of another scheme"
        )
    with _CLIENTS_LOCK:
        if location in _CLIENTS:
            return _CLIENTS[location]
        try:
            if location == ":memory:":
                client = QdrantClient(location=":memory:")
            elif is_server(location):
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
            damaged = _damaged_collections(location)
            if damaged:  # the embedded client opens every collection of the folder, or none
                raise RagrouteError(
                    f"qdrant folder {location} cannot be opened: collection {', '.join(damaged)} is "
                    f"damaged ({first_line(exc)}), and the embedded store opens all its collections or "
                    "none: rebuild the index that uses it elsewhere, or remove that collection's folder"
                ) from None
            raise RagrouteError(f"qdrant at {location} is unreachable: {first_line(exc)}") from None
        _CLIENTS[location] = client
        return client


def _damaged_collections(location: str) -> list[str]:
    """The collections of an embedded Qdrant folder whose storage SQLite cannot read."""
    import sqlite3

    if location == ":memory:" or "://" in location:
        return []
    damaged = []
    for database in sorted(Path(location).expanduser().glob("collection/*/storage.sqlite")):
        try:
            uri = database.resolve().as_uri() + "?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
                ok = connection.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                damaged.append(database.parent.name)
        except sqlite3.Error:
            damaged.append(database.parent.name)
    return damaged


class QdrantIndex(ExternalVectorIndex):
    """Dense retrieval with the vectors in a Qdrant collection (see the module docstring)."""

    kind = "qdrant"
    store_name = "qdrant"
    params_key = "qdrant"
    default_params = QdrantParams()

    def _connect(self) -> Any:
        return connect(self.params.location)

    def _create(self, dim: int) -> None:
        from qdrant_client import models

        self.client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
        )

    def _upsert(self, iids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(id=iid, vector=vector.tolist(), payload=payload)
            for iid, vector, payload in zip(iids, vectors, payloads)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def _remove(self, iids: Sequence[int]) -> None:
        from qdrant_client import models

        self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(iids)), wait=True)

    def _query(self, vector: np.ndarray, limit: int, clauses: list[FilterClause]) -> list[tuple[int, float]]:
        from qdrant_client import models

        # a full scan on a server, as faiss flat (and LanceDB): until session 51 a server searched its
        # HNSW graph past its full-scan threshold (about 6,500 vectors of 384 dimensions), approximate
        # where the index promises flat's answer; the embedded store always scans (and warns that
        # search parameters do nothing there)
        remote = is_server(self.params.location)
        response = self.client.query_points(
            self.collection,
            query=vector.tolist(),
            limit=limit,
            query_filter=_qdrant_filter(clauses),
            search_params=models.SearchParams(exact=True) if remote else None,
            with_payload=False,
        )
        return [(int(point.id), float(point.score)) for point in response.points]

    def _rows(self) -> Iterator[tuple[int, np.ndarray, Any]]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, limit=1024, offset=offset, with_payload=True, with_vectors=True
            )
            for point in points:
                yield int(point.id), np.asarray(point.vector, dtype=np.float32), point.payload or {}
            if offset is None:
                return

    def _width(self) -> int | None:
        info = self.client.get_collection(self.collection)
        return getattr(getattr(info.config.params, "vectors", None), "size", None)

    def _count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def _drop(self) -> None:
        self.client.delete_collection(self.collection)

    def _names(self) -> list[str]:
        return [c.name for c in self.client.get_collections().collections]


def qdrant_filter(filters: Mapping[str, Any] | None) -> Any:
    """ragroute metadata filters (and a caller's scope) as a Qdrant ``Filter`` (None: no filter)."""
    return _qdrant_filter(filter_clauses(filters, "qdrant"))


def _meta_path(key: str) -> str:
    """The payload path of metadata ``key``: quoted unless it is a plain identifier, since Qdrant
    reads ``meta.dept.name`` as a nested path (until session 36 a filter on a key holding a dot
    matched nothing, silently, and one holding a space failed as "Invalid path")."""
    if re.fullmatch(r"[A-Za-z0-9_]+", key):
        return f"meta.{key}"
    if '"' in key or "\\" in key:
        raise InvalidArgumentError(
            f"metadata key {key!r} cannot be filtered in a Qdrant index (it holds a quote or a backslash)"
        )
    return f'meta."{key}"'


def _qdrant_filter(clauses: list[FilterClause]) -> Any:
    if not clauses:
        return None
    from qdrant_client import models

    must: list[Any] = []
    for clause in clauses:
        if clause.scopes is not None:  # public documents, or labels the caller's scopes meet
            public = models.IsEmptyCondition(is_empty=models.PayloadField(key="access"))
            should: list[Any] = [public]
            if clause.scopes:
                should.append(
                    models.FieldCondition(key="access", match=models.MatchAny(any=sorted(clause.scopes)))
                )
            must.append(models.Filter(should=should))
            continue
        field = _meta_path(clause.field) if clause.meta else clause.field
        # one MatchAny holds values of one type: strings and integers are matched apart
        strings = [v for v in clause.values if isinstance(v, str)]
        integers = [v for v in clause.values if isinstance(v, int)]
        matches: list[Any] = [
            models.FieldCondition(key=field, match=models.MatchAny(any=values))
            for values in (strings, integers)
            if values
        ]
        if not matches:  # one of no values: an empty "should" would match every document
            matches = [models.HasIdCondition(has_id=[])]
        must.append(matches[0] if len(matches) == 1 else models.Filter(should=matches))
    return models.Filter(must=must)
