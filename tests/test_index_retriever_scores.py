"""The LlamaIndex / LangChain retrievers over one index returned the index's raw scores (a hybrid
index's fused RRF values, ~0.03) where the routed retrievers return cosine-scale similarities
(~0.5), so one ``SimilarityPostprocessor(similarity_cutoff=0.3)`` kept the routed nodes and dropped
every index node. They now score as a pipeline over that one index does (docs/scores.md), in the
index's own order, the raw score kept in the node's ``explain["fused"]``."""

from __future__ import annotations

import pytest
from llama_index.core.postprocessor import SimilarityPostprocessor

from ragroute.index.build import build_index
from ragroute.integrations.llamaindex import IndexLlamaRetriever, RoutedLlamaRetriever
from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.pipeline.stages import GateDecision
from ragroute.route.sources import Source

QUERY = "flour bread butter oven"


@pytest.fixture
def cook(hashing_encoder, small_docs):
    return build_index(
        [d for d in small_docs if d.metadata["topic"] == "cook"],
        "hybrid",
        encoder=hashing_encoder,
        name="cook",
    )


class Retrieve:
    """A gate that always retrieves."""

    name = "always"

    def gate_many(self, contexts):
        return [GateDecision("retrieve", 1.0) for _ in contexts]


def _alone(index, encoder):
    """A routed pipeline over the one index, with the index's encoder."""
    return pipeline_from_settings([Source(index.name, index)], {"kind": "centroid"}, encoder=encoder)


def test_index_nodes_score_as_a_pipeline_over_the_index_does(cook, hashing_encoder):
    raw = cook.search(QUERY, k=5)
    assert max(h.score for h in raw) < 0.05  # fused RRF values
    nodes = IndexLlamaRetriever(cook, similarity_top_k=5).retrieve(QUERY)
    routed = RoutedLlamaRetriever(_alone(cook, hashing_encoder), similarity_top_k=5).retrieve(QUERY)
    assert [n.node.metadata["doc_id"] for n in nodes] == [h.doc_id for h in raw]  # the index's order
    assert [n.score for n in nodes] == pytest.approx([n.score for n in routed])
    assert [n.node.metadata["doc_id"] for n in nodes] == [n.node.metadata["doc_id"] for n in routed]
    assert [n.node.metadata["explain"]["fused"] for n in nodes] == pytest.approx([h.score for h in raw])
    assert [n.node.metadata["explain"]["fused"] for n in routed] == pytest.approx([h.score for h in raw])
    # one cutoff keeps the same nodes of both
    cutoff = SimilarityPostprocessor(similarity_cutoff=0.3)
    kept = cutoff.postprocess_nodes(nodes)
    assert kept and [n.node.node_id for n in kept] == [
        n.node.node_id for n in cutoff.postprocess_nodes(routed)
    ]
    # a Source over the index, and a gated retriever over the index, score the same way
    as_source = IndexLlamaRetriever(Source("cook", cook), similarity_top_k=5).retrieve(QUERY)
    assert [n.score for n in as_source] == pytest.approx([n.score for n in nodes])
    gated = GatedLlamaRetriever(Retrieve(), IndexLlamaRetriever(cook, similarity_top_k=5)).retrieve(QUERY)
    assert [n.node.metadata["doc_id"] for n in gated] == [h.doc_id for h in raw]
    assert [n.score for n in gated] == pytest.approx([n.score for n in nodes])


def test_a_dense_index_keeps_its_cosines_and_one_without_an_encoder_its_own_scores(
    hashing_encoder, small_docs
):
    dense = build_index(small_docs, "dense", encoder=hashing_encoder, name="all")
    nodes = IndexLlamaRetriever(dense, similarity_top_k=4).retrieve(QUERY)
    assert [n.score for n in nodes] == pytest.approx([h.score for h in dense.search(QUERY, k=4)])
    bm25 = build_index(small_docs, "bm25", name="words")  # no encoder: no cosine scale to map onto
    nodes = IndexLlamaRetriever(bm25, similarity_top_k=4).retrieve(QUERY)
    assert [n.score for n in nodes] == pytest.approx([h.score for h in bm25.search(QUERY, k=4)])


def test_index_documents_score_as_a_pipeline_over_the_index_does(cook, hashing_encoder):
    pytest.importorskip("langchain_core", reason="install the langchain extra")
    from ragroute.integrations.langchain import IndexLangChainRetriever, RoutedLangChainRetriever

    raw = cook.search(QUERY, k=5)
    documents = IndexLangChainRetriever(cook, k=5).invoke(QUERY)
    routed = RoutedLangChainRetriever(_alone(cook, hashing_encoder), k=5).invoke(QUERY)
    assert [d.metadata["doc_id"] for d in documents] == [h.doc_id for h in raw]
    assert [d.metadata["score"] for d in documents] == pytest.approx([d.metadata["score"] for d in routed])
    assert min(d.metadata["score"] for d in documents) > 0.3 > max(h.score for h in raw)
    # a copy (deep or not) scores the same
    for twin in (
        IndexLangChainRetriever(cook, k=5).model_copy(),
        IndexLangChainRetriever(cook, k=5).model_copy(deep=True),
    ):
        assert [d.metadata["score"] for d in twin.invoke(QUERY)] == pytest.approx(
            [d.metadata["score"] for d in documents]
        )
