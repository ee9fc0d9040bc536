"""LlamaIndex retrievers backed by ragroute, and LlamaIndex retrievers as ragroute sources.

* :class:`RoutedLlamaRetriever` routes each query with a :class:`~ragroute.pipeline.Pipeline`
  (gate, policy, router, multi-route fusion, rerank) and returns ``NodeWithScore`` s;
* :class:`IndexLlamaRetriever` wraps one ragroute index, source or any ragroute retriever;
* :class:`LlamaRetrieverAdapter` goes the other way: any LlamaIndex ``BaseRetriever`` (or a
  ``VectorStoreIndex``, through ``as_retriever``) as a ragroute retriever, so it can be a
  :class:`~ragroute.route.sources.Source` that ragroute routes to and fuses with others.

Both retrievers take ``similarity_top_k`` (``k`` is an alias) and search in a worker thread
under ``aretrieve``, so concurrent queries overlap and the event loop is never blocked. A
``QueryBundle`` that carries an ``embedding`` of the query encoder's dimension is used as the
query vector (nothing is encoded again): the embedding must come from the same model as
ragroute's query encoder, e.g. through :class:`~ragroute.integrations.llamaindex_embedding.EncoderEmbedding`.

Node metadata is small. The LLM and the embedder see the title and the document's own scalar
metadata; ``source``, ``doc_id``, ``rank``, ``modality``, ``parent_id``, ``route_probability``,
``decision_id`` and ``explain`` (the numbers behind the score) are hidden from both
(:data:`HIDDEN_METADATA_KEYS`). The routing decision is kept once per query on the retriever
(``last_decision``, or ``decision_of(node)`` under concurrency), never copied into nodes.
Node ids are ``SOURCE:DOC_ID`` so hits from different sources never collide (LlamaIndex drops
nodes with duplicate ids).
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from ragroute.context import QueryContext, encoder_key
from ragroute.errors import RagrouteError
from ragroute.index.base import search_contexts
from ragroute.integrations.adapters import DecisionLog, ExternalRetriever, scalar_metadata
from ragroute.route.sources import Source
from ragroute.types import Decision, Document, Hit

#: ragroute's node metadata keys that neither the LLM nor the embedder sees
HIDDEN_METADATA_KEYS = (
    "source",
    "doc_id",
    "rank",
    "modality",
    "parent_id",
    "route_probability",
    "decision_id",
    "explain",
)
DEFAULT_TOP_K = 5
_NOT_DOCUMENT_FIELDS = {*HIDDEN_METADATA_KEYS, "title"}  # ragroute's own node keys, not a document's


def hit_to_node(hit: Hit, decision: Decision | None = None, *, decision_id: str = "") -> NodeWithScore:
    """A LlamaIndex node for one hit: small metadata, ragroute's keys hidden from the LLM.

    ``decision`` (when routed) gives the node its route's probability; the decision itself
    stays on the retriever (``decision_id`` names it).
    """
    metadata: dict[str, Any] = {
        **scalar_metadata(hit.metadata),  # the document's own fields first: ragroute's keys win
        "title": hit.title,
        "source": hit.source,
        "doc_id": hit.doc_id,
        "rank": hit.rank,
        "modality": hit.modality,
        "parent_id": hit.parent_id,
        "explain": hit.explain,
    }
    if decision is not None:
        metadata["route_probability"] = float(decision.routes.get(hit.source, 0.0))
    if decision_id:
        metadata["decision_id"] = decision_id
    node = TextNode(
        id_=f"{hit.source}:{hit.doc_id}" if hit.source else hit.doc_id,
        text=hit.text,
        metadata=metadata,
        excluded_llm_metadata_keys=list(HIDDEN_METADATA_KEYS),
        excluded_embed_metadata_keys=list(HIDDEN_METADATA_KEYS),
    )
    return NodeWithScore(node=node, score=float(hit.score))


def _top_k(similarity_top_k: int | None, k: int | None) -> int:
    if similarity_top_k is not None and k is not None and similarity_top_k != k:
        raise RagrouteError(f"similarity_top_k={similarity_top_k} and k={k} disagree: give one")
    top_k = similarity_top_k if similarity_top_k is not None else k if k is not None else DEFAULT_TOP_K
    if int(top_k) < 1:
        raise RagrouteError(f"similarity_top_k must be >= 1, got {top_k}")
    return int(top_k)


def query_encoder(obj: Any, _depth: int = 0) -> Any:
    """The query encoder of a ragroute pipeline, index or source (``None`` when it has none).

    A pipeline without its own encoder answers with its sources' encoder when they all share one.
    """
    if obj is None or _depth > 4:
        return None
    encoder = getattr(obj, "encoder", None)
    if encoder is not None:
        return encoder
    for attribute in ("dense", "retriever"):
        found = query_encoder(getattr(obj, attribute, None), _depth + 1)
        if found is not None:
            return found
    if isinstance(obj, (list, tuple)) or hasattr(obj, "retrieve_contexts"):
        encoders = [query_encoder(s, _depth + 1) for s in getattr(obj, "sources", obj)]
        keys = {encoder_key(e) for e in encoders if e is not None}
        if len(keys) == 1 and all(e is not None for e in encoders):
            return encoders[0]
    return None


def query_context(
    query_bundle: QueryBundle, encoder: Any, filters: Mapping[str, Any] | None = None
) -> QueryContext:
    """A context for the bundle's query; its ``embedding`` becomes ``encoder``'s query vector when
    the dimensions match (it is assumed to come from the same model)."""
    context = QueryContext.of(query_bundle.query_str, filters=dict(filters) if filters else None)
    embedding = query_bundle.embedding
    dim = getattr(encoder, "dim", None)
    if embedding is not None and encoder is not None and dim and len(embedding) == int(dim):
        context.set_vector(encoder, embedding)
    return context


class _TopK:
    """``similarity_top_k`` with ``k`` as an alias (read and set)."""

    similarity_top_k: int

    @property
    def k(self) -> int:
        return self.similarity_top_k

    @k.setter
    def k(self, value: int) -> None:
        self.similarity_top_k = _top_k(value, None)


class RoutedLlamaRetriever(_TopK, BaseRetriever):
    """A LlamaIndex retriever that routes with a :class:`~ragroute.pipeline.Pipeline`.

    ``last_decision`` is the decision of the latest query; with concurrent queries, read a
    node's own with :meth:`decision_of` (each node's ``decision_id`` names it; the last
    ``keep_decisions`` are kept). ``filters`` (ragroute metadata filters) apply to every query.
    """

    def __init__(
        self,
        routed: Any,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        keep_decisions: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.routed = routed
        self.similarity_top_k = _top_k(similarity_top_k, k)
        self.filters = dict(filters) if filters else None
        self.encoder = query_encoder(routed)
        self.decisions = DecisionLog(keep_decisions)

    @property
    def last_decision(self) -> Decision | None:
        return self.decisions.last

    def decision_of(self, node: NodeWithScore | Any) -> Decision | None:
        """The decision of the query that returned ``node`` (if still kept)."""
        inner = getattr(node, "node", node)
        return self.decisions.get(str(inner.metadata.get("decision_id", "")))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        context = query_context(query_bundle, self.encoder, self.filters)
        if hasattr(self.routed, "retrieve_contexts"):
            result = self.routed.retrieve_contexts([context], self.similarity_top_k)[0]
        else:  # anything with retrieve(query, k) -> hits and decision
            result = self.routed.retrieve(context.text, self.similarity_top_k)
        decision_id = self.decisions.record(result.decision)
        return [hit_to_node(hit, result.decision, decision_id=decision_id) for hit in result.hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


class IndexLlamaRetriever(_TopK, BaseRetriever):
    """A LlamaIndex retriever over one ragroute index, source or retriever (no routing)."""

    def __init__(
        self,
        index: Any,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.similarity_top_k = _top_k(similarity_top_k, k)
        self.filters = dict(filters) if filters else None
        self.encoder = query_encoder(index)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        context = query_context(query_bundle, self.encoder, self.filters)
        if isinstance(self.index, Source):
            hits = self.index.search_contexts([context], self.similarity_top_k)[0][0]
        else:
            hits = search_contexts(self.index, [context], self.similarity_top_k)[0]
        return [hit_to_node(hit) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


# --------------------------------------------------------------------------- LlamaIndex -> ragroute


def node_to_hit(node: NodeWithScore, rank: int, source: str = "") -> Hit:
    """A ragroute hit for a LlamaIndex node: ``doc_id`` is the node's ``doc_id`` metadata (nodes
    from ragroute's own retrievers) or its node id; ``parent_id`` its source document's id."""
    inner = node.node
    metadata = dict(inner.metadata or {})
    doc_id = str(metadata.get("doc_id") or inner.node_id)
    parent = metadata.get("parent_id") or getattr(inner, "ref_doc_id", None)
    raw = None if node.score is None else float(node.score)
    return Hit(
        doc_id=doc_id,
        score=raw if raw is not None else 1.0 / rank,
        source=source,
        rank=rank,
        text=inner.get_content(metadata_mode=MetadataMode.NONE),
        title=str(metadata.get("title") or ""),
        metadata={k: v for k, v in scalar_metadata(metadata).items() if k not in _NOT_DOCUMENT_FIELDS},
        parent_id=str(parent) if parent and str(parent) != doc_id else None,
        modality=str(metadata.get("modality") or "text"),
        explain={"llamaindex": {"rank": rank, "score": raw, "node_id": inner.node_id}},
    )


class LlamaRetrieverAdapter(ExternalRetriever):
    """Any LlamaIndex retriever, or an index with ``as_retriever`` (a ``VectorStoreIndex``), as a
    ragroute retriever: ``Source("docs", LlamaRetrieverAdapter(index.as_retriever()))``.

    ``k`` is honoured per call: an index gets ``as_retriever(similarity_top_k=k)``, a retriever
    with a ``similarity_top_k`` attribute a shallow copy with it set (one per ``k``, so
    concurrent searches never change a shared retriever); any other retriever's nodes are cut
    to ``k``. A node without a score (``None``) scores ``1/rank``. ``documents`` default to
    an index's docstore (what training-free routers build a prototype of the source from).
    """

    framework = "llamaindex"

    def __init__(
        self, retriever: Any, *, name: str = "llamaindex", documents: Sequence[Document] = ()
    ) -> None:
        if not hasattr(retriever, "retrieve") and not hasattr(retriever, "as_retriever"):
            raise RagrouteError(
                f"{type(retriever).__name__} is not a LlamaIndex retriever or index "
                "(it has neither retrieve nor as_retriever)"
            )
        self.target = retriever
        self._by_k: dict[int, Any] = {}
        self._lock = threading.Lock()
        super().__init__(name, documents)

    @property
    def documents(self) -> Sequence[Document]:
        if not self._documents:  # read an index's docstore on first use
            self._documents = _docstore_documents(self.target)
        return self._documents

    def retriever_for(self, k: int) -> Any:
        """The LlamaIndex retriever that answers with ``k`` nodes (made once per ``k``)."""
        with self._lock:
            if k not in self._by_k:
                target = self.target
                if not hasattr(target, "retrieve"):  # an index
                    self._by_k[k] = target.as_retriever(similarity_top_k=k)
                elif hasattr(target, "similarity_top_k"):
                    retriever = copy.copy(target)
                    retriever.similarity_top_k = k
                    self._by_k[k] = retriever
                else:
                    self._by_k[k] = target
            return self._by_k[k]

    def fetch(self, query: str, k: int) -> list[Hit]:
        nodes = self.retriever_for(k).retrieve(query)
        return [node_to_hit(node, rank, self.name) for rank, node in enumerate(nodes[:k], 1)]


def _docstore_documents(target: Any) -> list[Document]:
    """The nodes of an index's (or a vector index retriever's) docstore as ragroute documents."""
    docstore = getattr(target, "docstore", None) or getattr(target, "_docstore", None)  # index, retriever
    docs = getattr(docstore, "docs", None) or {}
    out = []
    for node_id, node in docs.items():
        try:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
        except (AttributeError, TypeError, ValueError):
            continue
        metadata = scalar_metadata(getattr(node, "metadata", None) or {})
        out.append(
            Document(id=str(node_id), text=text, title=str(metadata.get("title") or ""), metadata=metadata)
        )
    return out
