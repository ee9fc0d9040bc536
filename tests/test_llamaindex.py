"""LLM routing with a scripted LLM, and the LlamaIndex retrievers inside a query engine."""

import asyncio

import pytest
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.query_engine import RetrieverQueryEngine

from ragroute.index.build import build_index
from ragroute.integrations.llamaindex import IndexLlamaRetriever, RoutedLlamaRetriever
from ragroute.pipeline import Pipeline
from ragroute.route.knn import KnnRouter
from ragroute.route.llm import LlmRouter, UnknownRouteLabel
from ragroute.route.sources import Source


class ScriptedLLM(CustomLLM):
    """Answers with the next scripted reply and remembers the prompts it saw."""

    replies: list[str] = []
    prompts: list[str] = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs):
        self.prompts.append(prompt)
        return CompletionResponse(text=self.replies.pop(0))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        raise NotImplementedError


@pytest.fixture
def sources(hashing_encoder, small_docs):
    return [
        Source(
            t,
            build_index(
                [d for d in small_docs if d.metadata["topic"] == t], "hybrid", encoder=hashing_encoder, name=t
            ),
            description=f"all about {t}",
        )
        for t in ("astro", "cook", "it")
    ]


def test_llm_router_parses_label_and_prompts_with_descriptions(sources):
    llm = ScriptedLLM(replies=["Cook.", "none", "The answer is: it"])
    router = LlmRouter(sources, llm)
    assert router.route("how to bake bread").chosen == ["cook"]
    assert "- cook: all about cook" in llm.prompts[0] and "Answer with exactly one label" in llm.prompts[0]
    assert router.route("what is 2+2").chosen == ["none"]
    decision = router.route("vpn broken")
    assert decision.chosen == ["it"] and decision.routes["it"] == pytest.approx(0.9)


def test_unknown_llm_label_falls_back_or_raises(sources, hashing_encoder):
    fallback = KnnRouter(["galaxy star"], ["astro"], hashing_encoder)
    router = LlmRouter(sources, ScriptedLLM(replies=["banana"]), fallback=fallback)
    decision = router.route("galaxy")
    assert decision.chosen == ["astro"] and "fallback" in decision.decided_by
    assert decision.trace[0].detail["error"] == "unknown route label"
    with pytest.raises(UnknownRouteLabel, match="not one of"):
        LlmRouter(sources, ScriptedLLM(replies=["banana"])).route("galaxy")


def test_routed_retriever_in_query_engine(sources):
    llm = ScriptedLLM(replies=["astro", "astro"])
    routed = Pipeline(sources, LlmRouter(sources, llm))
    retriever = RoutedLlamaRetriever(routed, k=3)
    nodes = retriever.retrieve("galaxy telescope")
    assert nodes and all(n.node.metadata["source"] == "astro" for n in nodes)
    assert all(n.node.node_id.startswith("astro:") for n in nodes)
    assert nodes[0].node.metadata["route_probability"] == pytest.approx(0.9)
    assert nodes[0].node.metadata["decision"]["chosen"] == ["astro"]
    assert "decision" not in nodes[0].node.get_content(metadata_mode="llm")
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = engine.query("galaxy orbit")
    assert response.source_nodes and response.source_nodes[0].node.metadata["source"] == "astro"
    assert retriever.last_decision.chosen == ["astro"]


def test_index_retriever_async(sources):
    retriever = IndexLlamaRetriever(sources[1].retriever, k=2)
    nodes = asyncio.run(retriever.aretrieve("flour yeast"))
    assert len(nodes) == 2 and nodes[0].node.metadata["source"] == "cook"
