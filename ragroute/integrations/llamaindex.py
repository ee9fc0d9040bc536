"""LlamaIndex retrievers backed by ragroute.

* :class:`RoutedLlamaRetriever` routes each query (policy, router, multi-route
  fusion) and returns ``NodeWithScore`` s whose metadata carries the source, the
  route probability and the decision trace;
* :class:`IndexLlamaRetriever` wraps a single ragroute index or source.

Node ids are ``SOURCE:DOC_ID`` so hits from different sources never collide
(LlamaIndex drops nodes with duplicate ids). The trace lives in metadata but is
excluded from what the LLM and the embedder see.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from ragroute.types import Decision, Hit

_HIDDEN_KEYS = ["decision", "explain"]


def hit_to_node(hit: Hit, decision: Decision | None = None) -> NodeWithScore:
    """A LlamaIndex node for one hit; ``decision`` (when routed) is attached as metadata."""
    metadata: dict[str, Any] = {
        "source": hit.source,
        "doc_id": hit.doc_id,
        "title": hit.title,
        "rank": hit.rank,
        "modality": hit.modality,
        "parent_id": hit.parent_id,
        **{k: v for k, v in hit.metadata.items() if isinstance(v, (str, int, float, bool)) or v is None},
        "explain": hit.explain,
    }
    if decision is not None:
        metadata["route_probability"] = decision.routes.get(hit.source, 0.0)
        metadata["decision"] = decision.to_dict()
    node = TextNode(
        id_=f"{hit.source}:{hit.doc_id}" if hit.source else hit.doc_id,
        text=hit.text,
        metadata=metadata,
        excluded_llm_metadata_keys=list(_HIDDEN_KEYS),
        excluded_embed_metadata_keys=list(_HIDDEN_KEYS),
    )
    return NodeWithScore(node=node, score=float(hit.score))


class RoutedLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever that routes with a :class:`~ragroute.pipeline.Pipeline`.

    ``last_decision`` holds the decision of the latest query (also in every node's metadata).
    """

    def __init__(self, routed: Any, *, k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.routed = routed
        self.k = k
        self.last_decision: Decision | None = None

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self.routed.retrieve(query_bundle.query_str, self.k)
        self.last_decision = result.decision
        return [hit_to_node(hit, result.decision) for hit in result.hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._retrieve(query_bundle)


class IndexLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever over one ragroute index (anything with ``search``)."""

    def __init__(self, index: Any, *, k: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.k = k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [hit_to_node(hit) for hit in self.index.search(query_bundle.query_str, self.k)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._retrieve(query_bundle)
