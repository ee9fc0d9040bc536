"""The document store of an index: documents in a JSONL file, with stable integer ids.

Each document gets an internal integer id (``iid``) the first time it is added;
iids are never reused, so faiss ids stay valid across adds and deletes. The
store answers id lookups and metadata filters for every index kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.errors import IndexFormatError, RagrouteError
from ragroute.types import Document, Hit

DOCS_NAME = "docs.jsonl"


class DocumentStore:
    """Documents in insertion order, addressable by string id, position or iid."""

    def __init__(self) -> None:
        self._docs: list[Document] = []
        self._iids: list[int] = []
        self._pos_by_id: dict[str, int] = {}
        self._next_iid = 0

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def documents(self) -> Sequence[Document]:
        return self._docs

    @property
    def iids(self) -> np.ndarray:
        return np.asarray(self._iids, dtype=np.int64)

    @property
    def next_iid(self) -> int:
        return self._next_iid

    def add(self, docs: Iterable[Document]) -> np.ndarray:
        """Append documents (ids must be new) and return their iids."""
        new = list(docs)
        seen: set[str] = set()
        for doc in new:
            if doc.id in self._pos_by_id or doc.id in seen:
                raise RagrouteError(f"duplicate document id {doc.id!r}")
            seen.add(doc.id)
        iids = np.arange(self._next_iid, self._next_iid + len(new), dtype=np.int64)
        for doc, iid in zip(new, iids):
            self._pos_by_id[doc.id] = len(self._docs)
            self._docs.append(doc)
            self._iids.append(int(iid))
        self._next_iid += len(new)
        return iids

    def delete(self, ids: Iterable[str]) -> np.ndarray:
        """Remove documents by id and return the iids they had; unknown ids raise."""
        drop = set(ids)
        missing = drop - self._pos_by_id.keys()
        if missing:
            raise RagrouteError(f"cannot delete unknown document id {sorted(missing)[0]!r}")
        removed = [iid for doc, iid in zip(self._docs, self._iids) if doc.id in drop]
        kept = [(doc, iid) for doc, iid in zip(self._docs, self._iids) if doc.id not in drop]
        self._docs = [doc for doc, _ in kept]
        self._iids = [iid for _, iid in kept]
        self._pos_by_id = {doc.id: i for i, doc in enumerate(self._docs)}
        return np.asarray(removed, dtype=np.int64)

    def position(self, doc_id: str) -> int:
        return self._pos_by_id[doc_id]

    def get(self, doc_id: str) -> Document:
        return self._docs[self._pos_by_id[doc_id]]

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._pos_by_id

    def filter_mask(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Boolean mask over positions of documents whose metadata matches ``filters``.

        A filter value that is a list, tuple or set matches any of its members; the
        keys ``modality`` and ``parent_id`` match the document fields of that name.
        ``None`` filters give ``None`` (no restriction).
        """
        if not filters:
            return None
        mask = np.ones(len(self._docs), dtype=bool)
        for key, wanted in filters.items():
            allowed = set(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else {wanted}
            values = [_field(doc, key) for doc in self._docs]
            mask &= np.fromiter((v in allowed for v in values), dtype=bool, count=len(values))
        return mask

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
            metadata=dict(doc.metadata),
            parent_id=doc.parent_id,
            modality=doc.modality,
        )

    def save(self, directory: Path) -> str:
        """Write ``docs.jsonl`` (one document per line, with its iid) into ``directory``."""
        path = Path(directory) / DOCS_NAME
        with open(path, "w", encoding="utf-8") as handle:
            for doc, iid in zip(self._docs, self._iids):
                row = {"iid": iid, **doc.to_dict()}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return DOCS_NAME

    @classmethod
    def load(cls, directory: Path, next_iid: int | None = None) -> DocumentStore:
        """Read ``docs.jsonl``; ``next_iid`` (from the manifest) keeps deleted iids retired."""
        path = Path(directory) / DOCS_NAME
        store = cls()
        line_no = 0
        try:
            with open(path, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):  # noqa: B007 (read in except)
                    row = json.loads(line)
                    store._pos_by_id[str(row["id"])] = len(store._docs)
                    store._iids.append(int(row.pop("iid")))
                    store._docs.append(Document.from_dict(row))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{path} line {line_no} is corrupt: {exc}") from None
        store._next_iid = max(next_iid or 0, max(store._iids, default=-1) + 1)
        return store


def _field(doc: Document, key: str) -> Any:
    if key == "modality":
        return doc.modality
    if key == "parent_id":
        return doc.parent_id
    return doc.metadata.get(key)
