"""Shared behaviour of the indexes ragroute builds locally (BM25, dense, hybrid), and of those that
search by query embeddings (:class:`VectorIndex`: dense, qdrant)."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragroute.context import QueryContext, query_vectors
from ragroute.errors import (
    check_batch,
    check_document_ids,
    check_filters,
    check_k,
    check_query,
)
from ragroute.index.base import by_filter_groups
from ragroute.index.docstore import DocumentStore
from ragroute.types import Document, Hit, check_documents


class LocalIndex(ABC):
    """An index over a :class:`DocumentStore` that implements the ``Retriever`` protocol.

    Subclasses say how to score (``search_many``), which files they write
    (``write_files``) and what goes into the manifest (``manifest_params``,
    ``encoder_info``). Saving and loading whole directories, with manifest and
    atomic replacement, is done by :mod:`ragroute.index.io`.
    """

    kind: str = ""
    needs_encoder: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's ``add``, ``add_vectors`` and ``delete`` check their argument first: a list
        of documents, a list of id strings (a bare string would otherwise be taken one character per
        id)."""
        super().__init_subclass__(**kwargs)
        checks = (("add", check_documents), ("add_vectors", check_documents), ("delete", check_document_ids))
        for method, check in checks:
            implemented = cls.__dict__.get(method)
            if implemented is not None and not getattr(implemented, "checks_argument", False):
                setattr(cls, method, _checked_argument(implemented, check))

    @classmethod
    def from_options(
        cls,
        documents: Sequence[Document],
        options: Any,
        *,
        encoder: Any = None,
        name: str = "",
        show_progress: bool | None = None,
    ) -> LocalIndex:
        """Build from ``documents`` with :class:`ragroute.index.build.IndexOptions` (registry entry)."""
        raise NotImplementedError

    def __init__(self, store: DocumentStore, name: str = "") -> None:
        self.store = store
        self.name = name
        self.manifest: Any = None  # the ArtifactManifest of the build this index was loaded from

    def __len__(self) -> int:
        return len(self.store)

    def __repr__(self) -> str:
        """Kind, name, size and model, never the documents (the default said only an address)."""
        model = getattr(getattr(self, "encoder", None), "model_id", None)
        shown = f", model={model!r}" if model else ""
        return f"{type(self).__name__}(name={self.name!r}, documents={len(self)}{shown})"

    def verify_contents(self) -> None:
        """Check what the index holds outside its artifact's files against what was saved (loading
        with ``verify`` calls it after the files' checksums); nothing for an index kept in files."""
        return None

    @property
    def documents(self) -> Sequence[Document]:
        return self.store.documents

    def metadata_keys(self, scopes: Sequence[str] | None = None) -> frozenset[str] | None:
        """The metadata keys the documents carry (with ``scopes``: those a caller holding them may
        read), ``None`` while there is none (it cannot tell); a filter on another key is refused
        (:meth:`DocumentStore.check_filter_keys`)."""
        return self.store.metadata_keys(scopes)

    def search(self, query: str, k: int = 10, *, filters: Mapping[str, Any] | None = None) -> list[Hit]:
        """Top ``k`` hits for one query (see :meth:`search_many`)."""
        return self.search_many([query], k, filters=filters)[0]

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Top ``k`` hits for each query; empty or whitespace queries raise ``EmptyQueryError``."""
        cleaned = [check_query(q) for q in check_batch(queries)]
        k, filters = check_k(k), check_filters(filters)
        if self.query_encoders():
            contexts = [QueryContext(q) for q in cleaned]
            self.encode_contexts(contexts)
            with self.store.reading():  # the documents hold still while they are searched
                return self._search_contexts(contexts, k, filters)
        with self.store.reading():
            return self._search_many(cleaned, k, filters)

    def search_contexts(self, contexts: Sequence[Any], k: int = 10) -> list[list[Hit]]:
        """Top ``k`` hits for each :class:`~ragroute.context.QueryContext` (its filters applied, and
        its caller's scope: documents whose access labels the scopes do not meet are never returned).

        Indexes that embed queries take the context's cached vector for their
        encoder, so a query is encoded once however many sources it visits.
        """
        k = check_k(k)
        self.encode_contexts(contexts)
        with self.store.reading():  # the documents hold still while they are searched
            return by_filter_groups(
                contexts, lambda group, filters: self._search_contexts(group, k, filters), scoped=True
            )

    def query_encoders(self) -> list[Any]:
        """The encoders whose query vectors this index searches by (none: it reads the text)."""
        return []

    def encode_contexts(self, contexts: Sequence[Any]) -> None:
        """Encode ``contexts`` by each of :meth:`query_encoders` (cached on the contexts) before a
        search takes the read lock: a writer then waits for searches, never for query encodings."""
        for encoder in self.query_encoders():
            query_vectors(contexts, encoder)

    def _search_contexts(
        self, contexts: Sequence[Any], k: int, filters: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        """Score ``contexts`` (their vectors already encoded) under the read lock. Indexes that
        search by query vectors implement this; the others, :meth:`_search_many`."""
        return self._search_many([c.text for c in contexts], k, filters)

    def _search_many(self, queries: list[str], k: int, filters: Mapping[str, Any] | None) -> list[list[Hit]]:
        """Score query texts under the read lock (indexes with no :meth:`query_encoders`)."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither _search_many nor _search_contexts"
        )

    @abstractmethod
    def write_files(self, directory: Path) -> None:
        """Write this index's own files (not the document store or manifest) into ``directory``."""

    def manifest_params(self) -> dict[str, Any]:
        """Parameters recorded in the manifest and needed to load the index again."""
        return {}

    def encoder_info(self) -> dict[str, Any] | None:
        """The encoder description recorded in the manifest, for indexes that embed text."""
        return None


class VectorIndex(LocalIndex):
    """A :class:`LocalIndex` that searches by query embeddings of one encoder (dense on faiss,
    vectors in an external store): text queries are encoded, contexts hand over their cached
    vector, and both go to :meth:`search_vectors`. Its scores are inner products of the encoder's
    unit vectors (cosines), which :mod:`ragroute.pipeline.score_scale` relies on."""

    needs_encoder = True
    encoder: Any

    @abstractmethod
    def search_vectors(
        self, vectors: Any, k: int = 10, *, filters: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Top ``k`` hits for each query embedding (one row per query)."""

    def query_encoders(self) -> list[Any]:
        return [self.encoder]

    def _search_contexts(
        self, contexts: Sequence[Any], k: int, filters: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        return self.search_vectors(query_vectors(contexts, self.encoder), k, filters=filters)

    def encoder_info(self) -> dict[str, Any] | None:
        return self.encoder.describe()


def _checked_argument(method: Any, check: Any) -> Any:
    """``method`` with its first argument passed through ``check`` (the other arguments as given)."""

    @functools.wraps(method)
    def checked(self: Any, values: Any, *args: Any, **kwargs: Any) -> Any:
        return method(self, check(values), *args, **kwargs)

    checked.checks_argument = True  # type: ignore[attr-defined]
    return checked
