"""Dense retrieval in LanceDB: the vectors live in a LanceDB table, the documents in the artifact.

An index of kind ``lancedb`` keeps its vectors in an embedded, on-disk LanceDB database
(``lancedb`` on PyPI, extra ``ragroute[lancedb]``; ``location`` a folder, or any URI LanceDB
connects to, such as ``s3://bucket/path``, with credentials from the environment, never
written). Each build writes a new table (``<collection>-<id>``) that the manifest names, so a
failed or killed build leaves the previous index and its table untouched; a superseded table is
dropped when the artifact store prunes its build. Shared behaviour:
:mod:`ragroute.index.external`.

Searches are exact (no ANN index is built on the table: LanceDB scans the vectors) with inner
product scores, and filters are pushed down as a SQL ``WHERE`` evaluated before the search
(``prefilter``), so a filtered query returns the top ``k`` *matching* documents, exactly as the
faiss flat index does on the same vectors. Metadata is one list column of ``key<US>type:value``
tokens (``s:`` strings, ``i:`` integers; other scalars are not filterable, as in Qdrant), so
documents may carry any keys and a filter matches type and value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ragroute.errors import RagrouteError
from ragroute.index.external import ExternalVectorIndex, FilterClause, StoreParams, first_line

_UNIT = "\x1f"  # between a metadata key and its value in a token
_CONNECTIONS: dict[str, Any] = {}
_CONNECTIONS_LOCK = threading.Lock()


class LanceDBParams(StoreParams):
    """Where the vectors go: a LanceDB folder (or URI); no default location (it must be given)."""


def connect(location: str) -> Any:
    """A LanceDB connection for ``location`` (one per location); one-line error if it cannot be had."""
    try:
        import lancedb
    except ImportError:
        raise RagrouteError("a lancedb index needs lancedb: pip install 'ragroute[lancedb]'") from None
    if not location or location == ":memory:":
        raise RagrouteError("a lancedb index needs a folder or URI for its tables (--lancedb PATH)")
    with _CONNECTIONS_LOCK:
        if location not in _CONNECTIONS:
            try:
                _CONNECTIONS[location] = lancedb.connect(location)
            except Exception as exc:  # noqa: BLE001 - the client raises many kinds
                raise RagrouteError(f"lancedb at {location} is unreachable: {first_line(exc)}") from None
        return _CONNECTIONS[location]


def _token(key: str, value: Any) -> str | None:
    """The metadata token of one scalar (None: not filterable). A unit separator in the key is
    doubled, so the key ends at the first lone one (which a type letter follows) and no two
    different (key, value) pairs share a token: until session 51 key ``"a"`` with value
    ``"b<US>s:c"`` and key ``"a<US>s:b"`` with value ``"c"`` gave one token, so a filter on either
    matched both documents, silently (keys without the separator keep their tokens)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return f"{key.replace(_UNIT, _UNIT * 2)}{_UNIT}{'s' if isinstance(value, str) else 'i'}:{value}"


def _tokens(meta: dict[str, Any]) -> list[str]:
    """The filterable metadata of one document as tokens."""
    return [t for t in (_token(k, v) for k, v in meta.items()) if t is not None]


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_sql_string(v) for v in values) + "]"


def lancedb_where(clauses: Sequence[FilterClause]) -> str | None:
    """The pushed-down clauses as a LanceDB SQL ``WHERE`` (None: no filter)."""
    parts = []
    for clause in clauses:
        if clause.scopes is not None:  # public documents, or labels the caller's scopes meet
            public = "array_length(access) = 0"
            scoped = f" OR array_has_any(access, {_sql_list(sorted(clause.scopes))})" if clause.scopes else ""
            parts.append(f"({public}{scoped})")
        elif clause.meta:
            tokens = [t for t in (_token(clause.field, v) for v in clause.values) if t is not None]
            parts.append(f"array_has_any(meta, {_sql_list(tokens)})")
        elif clause.field == "access":  # a list column: any of the wanted labels
            labels = [v for v in clause.values if isinstance(v, str)]
            parts.append(f"array_has_any(access, {_sql_list(labels)})" if labels else "false")
        else:  # modality, parent_id: text fields, which an integer never matches (until session 44
            texts = [v for v in clause.values if isinstance(v, str)]  # parent_id=1 matched "1")
            parts.append(f"{clause.field} IN ({', '.join(map(_sql_string, texts))})" if texts else "false")
    return " AND ".join(parts) or None


class LanceDBIndex(ExternalVectorIndex):
    """Dense retrieval with the vectors in a LanceDB table (see the module docstring)."""

    kind = "lancedb"
    store_name = "lancedb"
    params_key = "lancedb"
    default_params = LanceDBParams(location="")
    _handle: Any = None  # the opened table

    def _connect(self) -> Any:
        return connect(self.params.location)

    def _schema(self, dim: int) -> Any:
        import pyarrow as pa

        return pa.schema(
            [
                pa.field("iid", pa.int64()),
                pa.field("vector", pa.list_(pa.float32(), dim)),
                pa.field("meta", pa.list_(pa.string())),
                pa.field("access", pa.list_(pa.string())),
                pa.field("modality", pa.string()),
                pa.field("parent_id", pa.string()),
            ]
        )

    def _create(self, dim: int) -> None:
        self._handle = self.client.create_table(self.collection, schema=self._schema(dim))

    def _table(self) -> Any:
        """The table, opened once (not on every query: opening reads its manifest from disk)."""
        if self._handle is None:
            self._handle = self.client.open_table(self.collection)
        return self._handle

    def _upsert(self, iids: Sequence[int], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        columns = {
            "iid": pa.array(list(iids), pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            "meta": pa.array([_tokens(p["meta"]) for p in payloads], pa.list_(pa.string())),
            "access": pa.array([p.get("access", []) for p in payloads], pa.list_(pa.string())),
            "modality": pa.array([p["modality"] for p in payloads], pa.string()),
            "parent_id": pa.array([p.get("parent_id") for p in payloads], pa.string()),
        }
        self._table().add(pa.table(columns, schema=self._schema(vectors.shape[1])))

    def _remove(self, iids: Sequence[int]) -> None:
        self._table().delete(f"iid IN ({', '.join(str(int(i)) for i in iids)})")

    def _query(self, vector: np.ndarray, limit: int, clauses: list[FilterClause]) -> list[tuple[int, float]]:
        search = self._table().search(vector.tolist()).distance_type("dot").limit(limit)
        where = lancedb_where(clauses)
        if where is not None:
            search = search.where(where, prefilter=True)
        found = search.select(["iid", "_distance"]).to_arrow()
        # LanceDB's dot "distance" is 1 - inner product
        return [
            (int(iid), 1.0 - float(distance))
            for iid, distance in zip(found["iid"].to_pylist(), found["_distance"].to_pylist())
        ]

    def _rows(self) -> Iterator[tuple[int, np.ndarray, Any]]:
        columns = ["iid", "vector", "meta", "access", "modality", "parent_id"]
        for batch in self._table().search().select(columns).limit(None).to_batches(4096):
            data = {name: batch.column(name).to_pylist() for name in columns if name != "vector"}
            vectors = np.asarray(batch.column("vector").values.to_numpy(zero_copy_only=False), np.float32)
            vectors = vectors.reshape(batch.num_rows, -1)
            for row, iid in enumerate(data["iid"]):
                extra = [data[name][row] for name in columns[2:]]
                yield int(iid), vectors[row], extra

    def _width(self) -> int | None:
        return int(self._table().schema.field("vector").type.list_size)

    def _count(self) -> int:
        return int(self._table().count_rows())

    def _drop(self) -> None:
        self._handle = None
        self.client.drop_table(self.collection)

    def _names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:  # paged
            page = self.client.list_tables(page_token=token)
            names += [str(name) for name in page.tables]
            token = page.page_token
            if not token:
                return names
