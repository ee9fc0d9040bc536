"""LLM routing with a scripted LLM; the LlamaIndex retrievers (top k, async, embeddings, metadata) and
LlamaIndex retrievers as ragroute sources, in code and from a routing config."""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import CancelProbe, NoneFirst, shared_id_pipeline  # noqa: E402
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle

from ragroute.errors import InvalidArgumentError, RagrouteError
from ragroute.index.build import build_index
from ragroute.integrations.llamaindex import IndexLlamaRetriever, LlamaRetrieverAdapter, RoutedLlamaRetriever
from ragroute.pipeline import Pipeline
from ragroute.pipeline.build import pipeline_from_settings
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
    assert "decision" not in nodes[0].node.metadata  # kept once, on the retriever
    assert retriever.decision_of(nodes[0]) is retriever.last_decision
    assert retriever.last_decision.chosen == ["astro"]
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = engine.query("galaxy orbit")
    assert response.source_nodes and response.source_nodes[0].node.metadata["source"] == "astro"
    assert retriever.last_decision.chosen == ["astro"]
    assert retriever.decision_of(response.source_nodes[0]) is retriever.last_decision
    assert retriever.decision_of(nodes[0]) is not retriever.last_decision  # each query its own


def test_index_retriever_async(sources):
    retriever = IndexLlamaRetriever(sources[1].retriever, k=2)
    nodes = asyncio.run(retriever.aretrieve("flour yeast"))
    assert len(nodes) == 2 and nodes[0].node.metadata["source"] == "cook"


# --------------------------------------------------------------------------- LlamaIndex conventions


def test_similarity_top_k_with_k_as_alias(sources):
    routed = pipeline_from_settings(sources, {"kind": "fixed", "fusion": "rrf"}, encoder=None)
    retriever = RoutedLlamaRetriever(routed, similarity_top_k=2)
    assert len(retriever.retrieve("galaxy flour vpn")) == 2 and retriever.k == 2
    retriever.similarity_top_k = 7
    assert len(retriever.retrieve("galaxy flour vpn")) == 7
    retriever.k = 4
    assert retriever.similarity_top_k == 4 and len(retriever.retrieve("galaxy flour vpn")) == 4
    assert len(RoutedLlamaRetriever(routed, k=3).retrieve("galaxy")) == 3
    assert len(RoutedLlamaRetriever(routed).retrieve("galaxy")) == 5  # LlamaIndex-like default
    with pytest.raises(RagrouteError, match="similarity_top_k=2 and k=3 disagree"):
        RoutedLlamaRetriever(routed, similarity_top_k=2, k=3)
    with pytest.raises(RagrouteError, match="must be >= 1"):
        RoutedLlamaRetriever(routed, similarity_top_k=0)
    index = sources[1].retriever
    assert len(IndexLlamaRetriever(index, similarity_top_k=3).retrieve("flour")) == 3
    for bad in ("5", 2.5, True):  # were coerced with int(): "5" -> 5, 2.5 -> 2, True -> 1
        with pytest.raises(InvalidArgumentError, match="similarity_top_k must be a whole number"):
            RoutedLlamaRetriever(routed, similarity_top_k=bad)
        with pytest.raises(InvalidArgumentError, match="k must be a whole number"):
            IndexLlamaRetriever(index, k=bad)
        with pytest.raises(InvalidArgumentError, match="k must be a whole number"):
            retriever.k = bad
    assert retriever.k == 4
    assert len(IndexLlamaRetriever(sources[1], similarity_top_k=6).retrieve("flour")) == 6  # a Source too


class SleepyIndex:
    """A ragroute retriever whose every search sleeps ``delay`` seconds (like a remote store)."""

    def __init__(self, index, delay: float = 0.2):
        self.index, self.delay, self.name = index, delay, index.name

    def search_many(self, queries, k=10, *, filters=None):
        time.sleep(self.delay)
        return self.index.search_many(queries, k, filters=filters)


def _timed(coroutine_factory) -> float:
    async def run():
        start = time.perf_counter()
        await coroutine_factory()
        return time.perf_counter() - start

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["routed", "index"])
def test_concurrent_aretrieve_overlaps_and_does_not_block_the_loop(sources, kind):
    slow = SleepyIndex(sources[0].retriever, delay=0.2)
    if kind == "routed":
        pipeline = pipeline_from_settings([Source("astro", slow)], {"kind": "fixed"}, encoder=None)
        retriever = RoutedLlamaRetriever(pipeline, similarity_top_k=3)
    else:
        retriever = IndexLlamaRetriever(slow, similarity_top_k=3)
    one = _timed(lambda: retriever.aretrieve("galaxy telescope"))
    two = _timed(lambda: asyncio.gather(retriever.aretrieve("galaxy"), retriever.aretrieve("comet orbit")))
    assert one >= 0.2 and two < 1.5 * one, (one, two)

    async def ticking_while_retrieving():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        nodes = await retriever.aretrieve("galaxy")
        task.cancel()
        return nodes, ticks

    nodes, ticks = asyncio.run(ticking_while_retrieving())
    assert len(nodes) == 3 and ticks >= 5  # the loop ran other tasks during the 0.2 s search


def test_async_embeddings_encode_off_the_event_loop(hashing_encoder):
    import threading

    from ragroute.integrations.llamaindex_embedding import EncoderEmbedding

    threads: list[int] = []
    encode = hashing_encoder._encode

    def recording(texts):
        threads.append(threading.get_ident())
        return encode(texts)

    hashing_encoder._encode = recording
    model = EncoderEmbedding(hashing_encoder)

    async def run():
        loop_thread = threading.get_ident()
        query = await model.aget_query_embedding("galaxy telescope")
        texts = await model.aget_text_embedding_batch(["comet orbit", "bread oven"])
        return loop_thread, query, texts

    loop_thread, query, texts = asyncio.run(run())
    assert threads and loop_thread not in threads  # encoding never ran on the loop's thread
    assert len(threads) == 2  # the batch is one encoder call, not one per text
    assert query == model.get_query_embedding("galaxy telescope")
    assert texts == model.get_text_embedding_batch(["comet orbit", "bread oven"])


def test_a_calls_own_decision_also_without_nodes_and_under_concurrency(sources):
    """A query routed to none returns no node to read its decision from, and last_decision belongs to
    whichever query ended last: its decision could not be had under concurrency."""

    retriever = RoutedLlamaRetriever(NoneFirst(sources[1].retriever), similarity_top_k=2)
    queries = ["what is the capital of Italy", "flour oven"] * 3

    async def concurrently():
        return await asyncio.gather(*(retriever.aretrieve_with_decision(q) for q in queries))

    for query, (nodes, decision) in zip(queries, asyncio.run(concurrently())):
        assert decision.decided_by == query
        assert (decision.chosen, len(nodes)) == ((["none"], 0) if "capital" in query else (["cook"], 2))
        assert all(retriever.decision_of(node) is decision for node in nodes)
    assert retriever.last_decision.chosen == ["cook"]  # the slow query's, whatever came first
    with ThreadPoolExecutor(4) as pool:  # worker threads, each with its own call
        for query, (nodes, decision) in zip(queries, pool.map(retriever.retrieve_with_decision, queries)):
            assert decision.decided_by == query and len(nodes) == (0 if "capital" in query else 2)
    nodes, decision = retriever.retrieve_with_decision(QueryBundle("the capital of France"))
    assert nodes == [] and decision.chosen == ["none"]
    # a copy per caller keeps its own decisions
    twin = retriever.with_scopes(["hr"])
    assert twin.retrieve_with_decision("flour")[1].chosen == ["cook"]


def test_concurrent_queries_get_the_answers_of_sequential_ones(sources, hashing_encoder):
    """The pipeline, its router and its indexes are shared by the worker threads of aretrieve."""
    routed = pipeline_from_settings(sources, {"kind": "prototype", "max_routes": 2}, encoder=hashing_encoder)
    retriever = RoutedLlamaRetriever(routed, similarity_top_k=4)
    queries = [
        "galaxy telescope",
        "flour oven",
        "vpn password",
        "comet bread",
        "printer star",
        "knife email",
    ] * 3
    sequential = [[(n.node.node_id, n.score) for n in retriever.retrieve(q)] for q in queries]

    async def concurrently():
        return await asyncio.gather(*(retriever.aretrieve(q) for q in queries))

    results = asyncio.run(concurrently())
    assert [[(n.node.node_id, n.score) for n in nodes] for nodes in results] == sequential
    for query, nodes in zip(queries, results):  # each node names its own query's decision
        decision = retriever.decision_of(nodes[0])
        assert nodes[0].node.metadata["source"] in decision.chosen, query


def test_a_query_bundle_embedding_is_used_instead_of_encoding(sources, hashing_encoder):
    routed = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    retriever = RoutedLlamaRetriever(routed, similarity_top_k=3)
    query = "galaxy telescope orbit"
    embedding = hashing_encoder.encode_queries([query])[0].tolist()
    calls = hashing_encoder.calls
    with_embedding = retriever.retrieve(QueryBundle(query, embedding=embedding))
    assert hashing_encoder.calls == calls  # neither the router nor the dense search encoded it
    plain = retriever.retrieve(query)
    assert hashing_encoder.calls == calls + 1
    assert [n.node.node_id for n in with_embedding] == [n.node.node_id for n in plain]
    assert retriever.last_decision.chosen == ["astro"]
    # an embedding of another dimension (another model) is ignored: the query is encoded
    retriever.retrieve(QueryBundle(query, embedding=[0.1] * 8))
    assert hashing_encoder.calls == calls + 2
    # so is one holding NaN (every similarity with it would be NaN: no route, no hits)
    unusable = retriever.retrieve(QueryBundle(query, embedding=[float("nan")] * len(embedding)))
    assert hashing_encoder.calls == calls + 3
    assert [n.node.node_id for n in unusable] == [n.node.node_id for n in plain]
    # and one of zeros (no direction: every similarity 0, no route, no hits, silently)
    zeros = retriever.retrieve(QueryBundle(query, embedding=[0.0] * len(embedding)))
    assert hashing_encoder.calls == calls + 4
    assert [n.node.node_id for n in zeros] == [n.node.node_id for n in plain]
    # a plain index too (its first query fits its score scale, encoding pseudo-queries, once)
    index = IndexLlamaRetriever(sources[0].retriever, similarity_top_k=2)
    index.retrieve("comet nebula")
    calls = hashing_encoder.calls
    assert len(index.retrieve(QueryBundle(query, embedding=embedding))) == 2
    assert hashing_encoder.calls == calls


def test_node_metadata_is_small_and_split_between_llm_and_bookkeeping(sources):
    routed = pipeline_from_settings(sources, {"kind": "fixed", "fusion": "rrf"}, encoder=None)
    retriever = RoutedLlamaRetriever(routed, similarity_top_k=4)
    nodes = retriever.retrieve("galaxy bread")
    node = nodes[0].node
    hidden = {
        "source",
        "doc_id",
        "rank",
        "modality",
        "parent_id",
        "route_probability",
        "decision_id",
        "explain",
    }
    assert hidden <= set(node.metadata) and set(node.metadata) - hidden == {"title", "topic"}
    assert set(node.excluded_llm_metadata_keys) == set(node.excluded_embed_metadata_keys) == hidden
    for mode in ("llm", "embed"):
        shown = node.get_content(metadata_mode=mode)
        assert f"title: {node.metadata['title']}" in shown and "topic: " in shown
        for key in hidden:
            assert f"{key}: " not in shown, (mode, key)
    assert len(json.dumps(node.metadata)) < 600  # no decision trace copied into nodes
    decision = retriever.decision_of(nodes[0])
    assert decision is retriever.last_decision and set(decision.chosen) == {"astro", "cook", "it"}
    assert len({n.node.metadata["decision_id"] for n in nodes}) == 1


# --------------------------------------------------------------------------- LlamaIndex retrievers as sources


@pytest.fixture
def vector_index(hashing_encoder, small_docs):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from ragroute.integrations.llamaindex_embedding import EncoderEmbedding

    nodes = [
        TextNode(id_=f"li-{d.id}", text=d.text, metadata={"title": d.title, **d.metadata})
        for d in small_docs
        if d.metadata["topic"] == "cook"
    ]
    return VectorStoreIndex(nodes, embed_model=EncoderEmbedding(hashing_encoder))


def test_constructors_refuse_what_they_cannot_search(sources, vector_index, hashing_encoder):
    """A path, None or a LlamaIndex retriever or index was accepted and failed at the first query with
    an AttributeError; filters="x" skipped the filter check; keep_decisions=-1 was a KeyError there."""
    routed = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    with pytest.raises(
        InvalidArgumentError,
        match=r"^RoutedLlamaRetriever: pipeline must be a .*not a path .*: load it first with .*load_routing",
    ):
        RoutedLlamaRetriever("corpora/routing.yaml")
    with pytest.raises(
        InvalidArgumentError, match="not a LlamaIndex VectorIndexRetriever: route to it as a Source"
    ):
        RoutedLlamaRetriever(vector_index.as_retriever())
    with pytest.raises(
        InvalidArgumentError,
        match=r"^IndexLlamaRetriever: index must be a ragroute index, Source or retriever .*not empty",
    ):
        IndexLlamaRetriever(None)
    for foreign in (vector_index, vector_index.as_retriever()):
        with pytest.raises(
            InvalidArgumentError, match="not a LlamaIndex .*: wrap it in LlamaRetrieverAdapter"
        ):
            IndexLlamaRetriever(foreign)
    with pytest.raises(
        InvalidArgumentError,
        match=r"not a path \('indexes/x'\): load it first with ragroute.index.io.load_index",
    ):
        IndexLlamaRetriever("indexes/x")
    with pytest.raises(InvalidArgumentError, match="filters must be a mapping"):
        IndexLlamaRetriever(sources[0], filters="x")
    with pytest.raises(InvalidArgumentError, match="keep_decisions must be >= 1, got -1"):
        RoutedLlamaRetriever(routed, keep_decisions=-1)
    # what they can search still goes in: a pipeline, an index, a Source, an adapted LlamaIndex retriever
    assert RoutedLlamaRetriever(routed).retrieve("galaxy")
    assert IndexLlamaRetriever(LlamaRetrieverAdapter(vector_index), similarity_top_k=2).retrieve("flour")


def test_a_llamaindex_index_or_retriever_as_a_ragroute_source(sources, vector_index):
    adapter = LlamaRetrieverAdapter(vector_index, name="recipes")
    hits = adapter.search("flour bread oven", 3)
    assert len(hits) == 3 and all(h.doc_id.startswith("li-cook-") and h.source == "recipes" for h in hits)
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].title.startswith("cook ") and hits[0].metadata == {"topic": "cook"}
    assert len(adapter.search("flour", 7)) == 7  # k per call
    assert len(adapter.documents) == 10  # from the index's docstore, for prototype routers
    assert [h.metadata["topic"] for h in adapter.search("flour", 4, filters={"topic": "astro"})] == []

    retriever = vector_index.as_retriever(similarity_top_k=2)
    from_retriever = LlamaRetrieverAdapter(retriever, name="recipes")
    assert len(from_retriever.search("flour", 5)) == 5 and retriever.similarity_top_k == 2  # not changed
    assert [h.doc_id for h in from_retriever.search("flour", 3)] == [
        h.doc_id for h in adapter.search("flour", 3)
    ]

    mixed = [sources[0], Source("recipes", adapter, description="recipes")]
    pipeline = pipeline_from_settings(
        mixed, {"kind": "prototype"}, encoder=sources[0].retriever.dense.encoder
    )
    result = pipeline.retrieve("flour yeast oven bread", k=4)
    assert result.decision.chosen[0] == "recipes" and result.hits[0].source == "recipes"
    assert result.hits[0].doc_id.startswith("li-cook-")
    with pytest.raises(RagrouteError, match="not a LlamaIndex retriever or index"):
        LlamaRetrieverAdapter(object())


def test_round_trip_ragroute_index_through_llamaindex_and_back(sources, hashing_encoder):
    index = sources[1].retriever
    adapter = LlamaRetrieverAdapter(IndexLlamaRetriever(index, similarity_top_k=2), name="cook")
    back = adapter.search("flour bread butter", 4)
    direct = index.search("flour bread butter", 4)
    assert [h.doc_id for h in back] == [h.doc_id for h in direct]
    # scored as a pipeline over the index alone scores them (tests/test_index_retriever_scores.py)
    alone = pipeline_from_settings([sources[1]], {"kind": "centroid"}, encoder=hashing_encoder)
    assert [h.score for h in back] == pytest.approx([h.score for h in alone.search("flour bread butter", 4)])
    assert back[0].metadata == {"topic": "cook"} and back[0].title == direct[0].title
    routed = RoutedLlamaRetriever(
        pipeline_from_settings(sources, {"kind": "fixed"}, encoder=None), similarity_top_k=3
    )
    outer = pipeline_from_settings(
        [Source("inner", LlamaRetrieverAdapter(routed))], {"kind": "fixed"}, encoder=None
    )
    hits = outer.retrieve("flour galaxy", k=3).hits
    assert len(hits) == 3 and all(h.source == "inner" for h in hits)
    # a pipeline over several sources: ids keep their source (two sources' documents may share one)
    assert {h.doc_id.split("-")[0] for h in hits} <= {"astro:astro", "cook:cook", "it:it"}


# --------------------------------------------------------------------------- external sources in a config

FACTORIES = """
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

from ragroute.integrations.llamaindex_embedding import EncoderEmbedding
from ragroute.types import Hit
from conftest import HashingEncoder


class Faq:
    def __init__(self, answer):
        self.answer = answer

    def search_many(self, queries, k=10, *, filters=None):
        return [[Hit("faq-1", 1.0, text=self.answer)] for _ in queries]


def make_faq(answer="ask the help desk"):
    return Faq(answer)


def make_index(words):
    nodes = [TextNode(id_=f"w{i}", text=w) for i, w in enumerate(words)]
    return VectorStoreIndex(nodes, embed_model=EncoderEmbedding(HashingEncoder()))


def broken():
    raise ConnectionError("store unreachable")


def make_from_file(path, config_dir):
    return Faq((config_dir / path).read_text().strip())


def make_forwarding(**options):
    return Faq(**options)  # a constructor that would refuse a config_dir it was never asked for
"""


def test_a_factory_with_config_dir_resolves_its_options_paths_against_the_config(
    tmp_path, hashing_encoder, monkeypatch
):
    """``options: {path: ../faq.txt}`` was read from wherever the command ran (the source left
    out, "nothing at ../faq.txt"), while ``index:`` paths are the config's. A factory naming a
    ``config_dir`` parameter is given the config's folder; ``**kwargs`` is not given it."""
    from ragroute.route.config import load_routing

    (tmp_path / "cfg").mkdir()
    (tmp_path / "faq.txt").write_text("restart the router\n")
    (tmp_path / "cfg" / "factories.py").write_text(FACTORIES)
    config = {
        "sources": {
            "faq": {
                "kind": "python",
                "factory": "factories.py:make_from_file",
                "options": {"path": "../faq.txt"},
            },
            "fwd": {"kind": "python", "factory": "factories.py:make_forwarding", "options": {"answer": "ok"}},
        },
        "router": {"kind": "fixed"},
    }
    (tmp_path / "cfg" / "r.yaml").write_text(json.dumps(config))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    pipeline = load_routing(tmp_path / "cfg" / "r.yaml", encoder=hashing_encoder)
    assert pipeline.problems == [] and [s.name for s in pipeline.sources] == ["faq", "fwd"]
    texts = {h.source: h.text for h in pipeline.retrieve("router", k=4).hits}
    assert texts == {"faq": "restart the router", "fwd": "ok"}


def test_routing_config_with_python_and_llamaindex_sources(tmp_path, hashing_encoder, small_docs):
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    save_index(build_index(small_docs, "dense", encoder=hashing_encoder, name="all"), tmp_path / "all")
    (tmp_path / "factories.py").write_text(FACTORIES)
    config = {
        "sources": {
            "all": {"index": "all"},
            "faq": {"kind": "python", "factory": "factories.py:make_faq", "options": {"answer": "reboot"}},
            "words": {
                "kind": "llamaindex",
                "factory": "factories.py:make_index",
                "options": {"words": ["galaxy star", "bread oven", "vpn laptop"]},
                "corpus": "words",
            },
            "down": {"kind": "python", "factory": "factories.py:broken"},
            "gone": {"kind": "python", "factory": "nowhere.py:make"},
            "plain": {"kind": "llamaindex", "factory": "factories.py:make_faq"},
        },
        "router": {"kind": "fixed", "fusion": "rrf"},
    }
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    pipeline = load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)
    assert [s.name for s in pipeline.sources] == ["all", "faq", "words"]
    assert pipeline.sources[2].metadata == {"corpus": "words"}
    problems = {p.name: p.error for p in pipeline.problems}
    assert "ConnectionError: store unreachable" in problems["down"]
    assert "factory file" in problems["gone"] and "does not exist" in problems["gone"]
    assert "not a LlamaIndex retriever or index" in problems["plain"]
    result = pipeline.retrieve("galaxy star", k=6)
    by_source: dict = {}
    for hit in result.hits:
        by_source.setdefault(hit.source, hit)  # each source's best
    assert set(by_source) == {"all", "faq", "words"}
    assert by_source["faq"].text == "reboot" and by_source["words"].doc_id == "w0"

    def refused(entry, match):
        (tmp_path / "r.yaml").write_text(json.dumps({**config, "sources": {"x": entry}}))
        with pytest.raises(RagrouteError, match=match):
            load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)

    refused(
        {"kind": "lamaindex", "factory": "factories.py:make_faq"},
        "source 'x': unknown source kind 'lamaindex': registered ones are index, llamaindex, langchain, py",
    )
    refused({"kind": "python"}, "source 'x' \\(kind python\\) needs 'factory'")
    refused({"kind": "python", "factory": "make_faq"}, "is not 'package.module:function'")
    refused({"kind": "python", "factory": "f.py:g", "index": "all"}, "\\(kind python\\): unknown key 'index'")
    refused({"description": "no index"}, "source 'x' \\(kind index\\) needs 'index'")


def test_a_node_without_a_finite_score_scores_by_rank_and_repeats_are_dropped():
    """A retriever's NaN score cost its source every hit until session 37 (the pipeline refuses a
    non-finite score), and a node returned twice came back as two hits with one id."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    class Odd(BaseRetriever):
        def _retrieve(self, query_bundle):
            return [
                NodeWithScore(node=TextNode(text="nan", id_="n"), score=float("nan")),
                NodeWithScore(node=TextNode(text="a", id_="a"), score=0.7),
                NodeWithScore(node=TextNode(text="a again", id_="a"), score=0.6),
                NodeWithScore(node=TextNode(text="inf", id_="i"), score=float("inf")),
            ]

    hits = LlamaRetrieverAdapter(Odd(), name="odd").search("q", 4)
    assert [(h.doc_id, h.score, h.rank) for h in hits] == [
        ("n", 1.0, 1),
        ("a", 0.7, 2),
        ("i", pytest.approx(1 / 3), 3),
    ]


def test_a_llamaindex_retriever_that_answers_only_asynchronously_is_searched_through_that_path():
    """Its hits were lost on every query until session 37 (NotImplementedError in the trace only)."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    class AsyncOnly(BaseRetriever):
        def _retrieve(self, query_bundle):
            raise NotImplementedError("async only")

        async def _aretrieve(self, query_bundle):
            return [
                NodeWithScore(node=TextNode(text=query_bundle.query_str, id_=f"n{i}"), score=1.0 - i / 10)
                for i in range(3)
            ]

    hits = LlamaRetrieverAdapter(AsyncOnly(), name="async").search("q", 2)
    assert [(h.doc_id, h.text) for h in hits] == [("n0", "q"), ("n1", "q")]


def test_framework_nodes_keep_their_exclusions_and_their_chunks_through_ragroute():
    """A node's `excluded_llm_metadata_keys` were lost on the way through ragroute (an internal path
    reached the LLM's prompt), and chunks sharing a user's `doc_id` metadata collapsed into one hit
    (until session 37)."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from ragroute.integrations.llamaindex import hit_to_node

    class Chunks(BaseRetriever):
        def _retrieve(self, query_bundle):
            return [
                NodeWithScore(
                    node=TextNode(
                        text=f"chunk {i}",
                        id_=f"c{i}",
                        metadata={"doc_id": "report-7", "internal_path": "/srv/secret"},
                        excluded_llm_metadata_keys=["internal_path"],
                    ),
                    score=1.0 - i / 10,
                )
                for i in range(3)
            ]

    hits = LlamaRetrieverAdapter(Chunks(), name="reports").search("q", 5)
    assert [h.doc_id for h in hits] == ["c0", "c1", "c2"]
    node = hit_to_node(hits[0]).node
    assert "/srv/secret" not in node.get_content(metadata_mode=MetadataMode.LLM)
    assert node.metadata["internal_path"] == "/srv/secret"  # kept for the application, not shown
    assert "internal_path" in node.excluded_llm_metadata_keys


def test_llamaindex_retrievers_check_top_k_at_assignment_and_copies_own_their_filters(sources):
    """`similarity_top_k` set after construction was never checked (a step-wise retriever returned no
    node at 0, every node at None), and `with_scopes` copies shared one filters dict (until session 37)."""
    retriever = IndexLlamaRetriever(sources[0].retriever, similarity_top_k=2, filters={"topic": "astro"})
    for bad in (0, -5, "5", 2.5, True, None):
        with pytest.raises(InvalidArgumentError, match="similarity_top_k must be"):
            retriever.similarity_top_k = bad
    assert retriever.similarity_top_k == 2
    twin = retriever.with_scopes(["hr"])
    twin.filters["topic"] = "cook"
    assert retriever.filters == {"topic": "astro"}


def test_ragroute_rerank_reads_each_nodes_parent():
    """A ParentsReranker behind RagrouteRerank kept every chunk: the nodes' parents were left out."""
    from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

    from ragroute.integrations.llamaindex_rerank import RagrouteRerank
    from ragroute.rerank.parents import ParentsReranker

    nodes = []
    for parent in ("docA", "docB"):
        for i in range(3):
            node = TextNode(text=f"{parent} part {i}", id_=f"{parent}-c{i}")
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=parent)
            nodes.append(NodeWithScore(node=node, score=1.0 - len(nodes) / 10))
    kept = RagrouteRerank(ParentsReranker(), top_n=5).postprocess_nodes(nodes, query_str="q")
    assert [n.node.node_id for n in kept] == ["docA-c0", "docB-c0"]
    # nodes out of score order keep their own scores (not 6.0, 5.0..., the order they were read by,
    # until session 51); an unscored node keeps none
    nodes[0].score, nodes[3].score = 0.1, None
    kept = RagrouteRerank(ParentsReranker(), top_n=5).postprocess_nodes(nodes, query_str="q")
    assert [(n.node.node_id, n.score) for n in kept] == [("docA-c0", 0.1), ("docB-c0", None)]


def test_ragroute_rerank_keeps_a_nodes_own_rerank_metadata():
    """A node's own `rerank` metadata (a document's field, another postprocessor's numbers) was
    overwritten by the reranker's: it is kept under `document_rerank`."""
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragroute.integrations.llamaindex_rerank import RagrouteRerank
    from ragroute.rerank.parents import ParentsReranker

    own = TextNode(text="a", id_="a", metadata={"rerank": "editor's pick", "topic": "x"})
    plain = TextNode(text="b", id_="b")
    kept = RagrouteRerank(ParentsReranker(), top_n=2).postprocess_nodes(
        [NodeWithScore(node=own, score=1.0), NodeWithScore(node=plain, score=0.5)], query_str="q"
    )
    first, second = (n.node.metadata for n in kept)
    assert first["document_rerank"] == "editor's pick" and isinstance(first["rerank"], dict)
    assert first["topic"] == "x" and "document_rerank" not in second
    assert own.metadata == {"rerank": "editor's pick", "topic": "x"}  # the caller's node unchanged


def test_the_documented_query_engine_snippet_runs_offline(tmp_path, monkeypatch, minilm):
    """docs/integrations.md's query-engine example passed an `llm` it never defined (a user
    walkthrough): it runs as written, offline, over the demo's indexes (built here, as `ragroute
    demo` builds them, so a fresh clone needs no earlier run)."""
    from pathlib import Path

    from ragroute.cli.demo import build_sources
    from ragroute.corpora import load_corpus_specs

    root = Path(__file__).resolve().parents[1]
    corpora = root / "corpora"
    build_sources(load_corpus_specs(corpora / "corpora.yaml"), "hybrid", minilm, tmp_path / "indexes")
    routing = (corpora / "routing.yaml").read_text(encoding="utf-8")
    routing = routing.replace("corpora: corpora.yaml", f"corpora: {corpora / 'corpora.yaml'}")
    routing = routing.replace("index_dir: ../indexes/demo", f"index_dir: {tmp_path / 'indexes'}")
    (tmp_path / "routing.yaml").write_text(routing, encoding="utf-8")
    page = (root / "docs" / "integrations.md").read_text("utf-8")
    section = page.split("## ragroute inside LlamaIndex", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'load_routing("corpora/routing.yaml")' in snippet
    snippet = snippet.replace('"corpora/routing.yaml"', repr(str(tmp_path / "routing.yaml")))
    monkeypatch.chdir(root)
    names: dict = {}
    exec(compile(snippet, "integrations.md", "exec"), names)  # noqa: S102 - the page's own example
    assert names["response"].source_nodes and names["retriever"].last_decision.chosen


def test_a_routed_retriever_over_sources_sharing_ids_loses_no_node_as_a_source(hashing_encoder):
    """Two sources' documents sharing the id H1 came back as one hit through the adapter (the node's
    `doc_id` metadata was its id, then de-duplicated) until session 40."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore

    from ragroute.context import QueryContext

    pipeline = shared_id_pipeline(hashing_encoder)
    routed = RoutedLlamaRetriever(pipeline, similarity_top_k=4)
    nodes = routed.retrieve("payroll salary")
    expected = ["itpay:H1", "itpay:H9", "payroll:H1", "payroll:H2"]
    assert sorted(n.node.node_id for n in nodes) == expected
    hits = LlamaRetrieverAdapter(routed, name="x").search_contexts([QueryContext.of("payroll salary")], 4)[0]
    assert sorted(h.doc_id for h in hits) == expected
    assert {h.text for h in hits} == {n.node.get_content() for n in nodes}

    class Both(BaseRetriever):
        """Not one of ragroute's: an ensemble of two of ragroute's retrievers over one source each."""

        def _retrieve(self, query_bundle) -> list[NodeWithScore]:
            return [n for s in pipeline.sources for n in IndexLlamaRetriever(s, k=2).retrieve(query_bundle)]

    assert (
        sorted(h.doc_id for h in LlamaRetrieverAdapter(Both(), name="b").search("payroll salary", 4))
        == expected
    )
    # over one index the ids stay the documents' own
    one = LlamaRetrieverAdapter(IndexLlamaRetriever(pipeline.sources[0], k=2), name="y")
    assert sorted(h.doc_id for h in one.search("payroll salary", 2)) == ["H1", "H2"]


def test_a_documents_own_source_and_rank_are_kept_in_node_metadata_not_overwritten():
    """A document's own `source`, `rank`, `doc_id` and `title` metadata were overwritten by ragroute's
    in node metadata while filters matched the original value, and a LlamaIndex node's own `source`
    was dropped on the way into ragroute (until session 40)."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from ragroute.types import Document

    docs = [
        Document(
            id=f"d{i}",
            text=f"payroll salary {i}",
            title=f"Doc {i}",
            metadata={"source": f"/hr/{i}.pdf", "rank": "senior", "doc_id": "X", "title": "own"},
        )
        for i in range(3)
    ]
    pipeline = pipeline_from_settings(
        [Source("hr", build_index(docs, "bm25", name="hr"))], {"kind": "fixed"}, encoder=None
    )
    retriever = RoutedLlamaRetriever(pipeline, similarity_top_k=3, filters={"source": "/hr/1.pdf"})
    (node,) = [n.node for n in retriever.retrieve("payroll salary")]
    assert (node.metadata["source"], node.metadata["doc_id"], node.metadata["rank"]) == ("hr", "d1", 1)
    assert node.metadata["document_source"] == "/hr/1.pdf" and node.metadata["document_rank"] == "senior"
    assert node.metadata["document_doc_id"] == "X" and node.metadata["document_title"] == "own"
    assert "document_source: /hr/1.pdf" in node.get_content(metadata_mode=MetadataMode.LLM)  # its own field
    back = LlamaRetrieverAdapter(retriever, name="again").search("payroll salary", 3)
    assert [h.metadata for h in back] == [
        {"source": "/hr/1.pdf", "rank": "senior", "doc_id": "X", "title": "own"}
    ]

    class Files(BaseRetriever):
        def _retrieve(self, query_bundle):
            node = TextNode(
                text="handbook page",
                id_="p1",
                metadata={"source": "/docs/handbook.pdf", "secret": "s"},
                excluded_llm_metadata_keys=["source"],
            )
            return [NodeWithScore(node=node, score=0.5)]

    (hit,) = LlamaRetrieverAdapter(Files(), name="files").search(
        "q", 1, filters={"source": "/docs/handbook.pdf"}
    )
    assert hit.metadata == {"source": "/docs/handbook.pdf", "secret": "s"}
    from ragroute.integrations.llamaindex import hit_to_node

    again = hit_to_node(hit).node
    assert again.metadata["source"] == "files" and again.metadata["document_source"] == "/docs/handbook.pdf"
    assert "/docs/handbook.pdf" not in again.get_content(metadata_mode=MetadataMode.LLM)  # still kept from it


def test_an_async_only_llamaindex_source_is_not_first_tried_synchronously():
    """Each search first tried the sync path, which failed (an error span and a retrieval start with
    no end in LlamaIndex's instrumentation) before the async one answered (until session 40)."""
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.retrieval import RetrievalStartEvent
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    class AsyncOnly(BaseRetriever):
        def _retrieve(self, query_bundle):
            raise NotImplementedError("async only")

        async def _aretrieve(self, query_bundle):
            return [NodeWithScore(node=TextNode(text="a", id_="n0"), score=1.0)]

    class Starts(BaseEventHandler):
        count: int = 0

        def handle(self, event, **kwargs):
            if isinstance(event, RetrievalStartEvent):
                self.count += 1

    dispatcher, starts = get_dispatcher(), Starts()
    dispatcher.add_event_handler(starts)
    try:
        adapter = LlamaRetrieverAdapter(AsyncOnly(), name="async")
        for _ in range(2):
            assert [h.doc_id for h in adapter.search("q", 1)] == ["n0"]
    finally:
        dispatcher.event_handlers.remove(starts)
    assert starts.count == 2  # one retrieval per search: the async one


def test_ragroute_rerank_checks_top_n_at_assignment():
    """top_n = 0, "3" or None was taken and failed only at postprocessing, naming k (until session 40)."""
    from ragroute.integrations.llamaindex_rerank import RagrouteRerank
    from ragroute.rerank.parents import ParentsReranker

    rerank = RagrouteRerank(ParentsReranker(), top_n=5)
    for bad, message in [
        (0, "top_n must be >= 1, got 0"),
        ("3", "top_n must be a whole number"),
        (None, "top_n must be"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            rerank.top_n = bad
    assert rerank.top_n == 5
    rerank.top_n = 2
    assert rerank.top_n == 2


def test_encoder_embedding_refuses_what_is_not_an_encoder_in_one_line():
    """Session 43: a model name or None was an AttributeError on ``model_id``."""
    from ragroute.integrations.llamaindex_embedding import EncoderEmbedding

    with pytest.raises(InvalidArgumentError, match=r"load_encoder\('minilm'\)"):
        EncoderEmbedding("minilm")
    for wrong in (None, object()):
        with pytest.raises(InvalidArgumentError, match="needs a ragroute encoder"):
            EncoderEmbedding(wrong)


def test_the_llamaindex_retrievers_refuse_an_unknown_keyword_naming_it(hashing_encoder, small_docs):
    """Session 43: ``filter=`` or ``top_k=`` was LlamaIndex's TypeError naming BaseRetriever.__init__."""
    from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever, StepwiseLlamaRetriever
    from ragroute.pipeline.stages import GateDecision

    class Yes:
        def gate_many(self, contexts):
            return [GateDecision("retrieve", 1.0) for _ in contexts]

    class Controller:
        def run(self, context):
            return None

    index = build_index(small_docs, "dense", encoder=hashing_encoder, name="all")
    pipeline = pipeline_from_settings([Source("all", index)], {"kind": "fixed"}, encoder=None)
    with pytest.raises(InvalidArgumentError, match="Retriever: unknown keyword 'filter'; did you"):
        RoutedLlamaRetriever(pipeline, filter={})
    with pytest.raises(InvalidArgumentError, match="IndexLlamaRetriever: unknown keyword 'top_k'"):
        IndexLlamaRetriever(index, top_k=3)
    with pytest.raises(InvalidArgumentError, match="GatedLlamaRetriever: unknown keyword 'scope'"):
        GatedLlamaRetriever(Yes(), index, scope=["hr"])
    with pytest.raises(InvalidArgumentError, match="StepwiseLlamaRetriever: unknown keyword 'similarity_t"):
        StepwiseLlamaRetriever(Controller(), similarity_topk=3)
    assert IndexLlamaRetriever(index, verbose=True).similarity_top_k == 5  # LlamaIndex's own keywords pass


def test_a_with_scopes_copy_starts_without_the_last_callers_outcome(hashing_encoder, small_docs):
    """A gated or step-wise retriever's copy for another caller kept the original's ``last_routing``,
    ``last_decision`` and ``last_result``: a caller without scopes read an ``hr`` caller's routing
    decision, naming the source hidden from it, until its own first query."""
    from ragroute.gate.controller import StepwiseController
    from ragroute.gate.planners import ScriptedPlanner
    from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever, StepwiseLlamaRetriever
    from ragroute.pipeline.stages import GateDecision

    class Yes:
        def gate_many(self, contexts):
            return [GateDecision("retrieve", 1.0) for _ in contexts]

    public = Source("public", build_index(small_docs[:10], "dense", encoder=hashing_encoder, name="public"))
    vault = build_index(small_docs[10:], "dense", encoder=hashing_encoder, name="vault")
    pipeline = pipeline_from_settings(
        [public, Source("vault", vault, access=frozenset({"hr"}))], {"kind": "fixed"}, encoder=None
    )
    gated = GatedLlamaRetriever(Yes(), RoutedLlamaRetriever(pipeline, scopes=["hr"]))
    assert any(n.node.metadata["source"] == "vault" for n in gated.retrieve("bread flour printer"))
    twin = gated.with_scopes([], caller="bob")
    assert (twin.last_decision, twin.last_routing) == (None, None)
    assert gated.last_routing is not None and "vault" in gated.last_routing.chosen  # the original's own
    controller = StepwiseController(ScriptedPlanner(["bread flour"], answer="done"), pipeline, k=3)
    stepwise = StepwiseLlamaRetriever(controller, scopes=["hr"])
    assert stepwise.retrieve("bread") and stepwise.last_result is not None
    assert stepwise.with_scopes([], caller="bob").last_result is None


def test_node_metadata_keeps_a_documents_numpy_scalars_as_python_values(hashing_encoder):
    """Until session 49 a document's np.int64, np.float32 and np.bool_ metadata (an index built in
    memory keeps them as given) were no scalars to the node and were dropped, silently, and np.str_
    stayed numpy; a LlamaIndex node's own numpy values likewise on the way into ragroute."""
    import json

    import numpy as np
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragroute.types import Document

    own = {"year": np.int64(2021), "price": np.float32(1.5), "ok": np.bool_(True), "code": np.str_("x")}
    plain = {"year": 2021, "price": 1.5, "ok": True, "code": "x"}
    doc = Document(id="d1", text="printer toner", title="T", metadata=own)
    index = build_index([doc], "dense", encoder=hashing_encoder, name="m")
    node = IndexLlamaRetriever(index, k=1).retrieve("printer")[0]
    assert {key: node.node.metadata.get(key) for key in plain} == plain
    assert all(type(node.node.metadata[key]) is type(value) for key, value in plain.items())
    json.dumps(node.node.metadata)

    class NumpyNodes(BaseRetriever):
        def _retrieve(self, query_bundle) -> list[NodeWithScore]:
            metadata = {**own, "tags": [np.int64(1), np.int64(2)]}
            return [NodeWithScore(node=TextNode(text="printer", id_="n1", metadata=metadata), score=0.5)]

    hit = LlamaRetrieverAdapter(NumpyNodes(), name="n").search("printer", 1)[0]
    assert hit.metadata == {**plain, "tags": [1, 2]}
    assert LlamaRetrieverAdapter(NumpyNodes(), name="n").search("printer", 1, filters={"year": 2021})


def test_a_nested_pipelines_nodes_of_two_inner_sources_sharing_an_id_are_all_returned(hashing_encoder):
    """A pipeline whose source is a pipeline over two sources sharing the id H1: the outer pipeline
    returns both, but their nodes were both `outer:H1` and LlamaIndex keeps one node per id, so one
    was dropped, silently, until session 49 (now `outer/INNER:DOC_ID`); an index retriever over a
    pipeline, wrapped back as a source, kept both H1 as one hit."""
    from ragroute.context import QueryContext
    from ragroute.integrations.llamaindex_rerank import node_fused_value

    inner = shared_id_pipeline(hashing_encoder)
    outer = pipeline_from_settings([Source("outer", inner)], {"kind": "fixed"}, encoder=None)
    assert len(outer.search("payroll salary", 4)) == 4
    routed = RoutedLlamaRetriever(outer, similarity_top_k=4)
    nodes = routed.retrieve("payroll salary")
    expected = ["outer/itpay:H1", "outer/itpay:H9", "outer/payroll:H1", "outer/payroll:H2"]
    assert sorted(n.node.node_id for n in nodes) == expected
    assert all(node_fused_value(n) is not None for n in nodes)  # still read as ragroute's own nodes
    hits = LlamaRetrieverAdapter(routed, name="x").search_contexts([QueryContext.of("payroll salary")], 4)[0]
    assert sorted(h.doc_id for h in hits) == expected and all(h.metadata == {} for h in hits)
    # one index retriever over the (inner) pipeline: its nodes come from two sources
    both = LlamaRetrieverAdapter(IndexLlamaRetriever(inner, k=4), name="y").search("payroll salary", 4)
    assert sorted(h.doc_id for h in both) == ["itpay:H1", "itpay:H9", "payroll:H1", "payroll:H2"]


def test_a_cancelled_aretrieve_stops_before_its_next_stage():
    """A thread cannot be interrupted: until session 50 a cancelled ``aretrieve`` ran on to its
    end in its worker thread (reranked, its hits admitted to the caller's exposure budget) for an
    answer nobody awaited. It now stops at the next stage boundary."""
    probe = CancelProbe()
    retriever = RoutedLlamaRetriever(probe.pipeline, k=1)
    assert [n.node.node_id for n in retriever.retrieve("first")] and probe.reranked == ["first"]
    probe.cancel_midway(retriever.aretrieve)
    assert probe.reranked == ["first"]
    # an awaited query that is not cancelled runs as before
    assert asyncio.run(retriever.aretrieve("third")) and probe.reranked[-1] == "third"


def test_a_failed_gates_node_metadata_holds_no_nan(hashing_encoder, small_docs):
    """Until session 52 a gate that raised left ``p_retrieve: NaN`` in every node's ``gate`` metadata
    (no probability was computed), which no strict JSON writer takes; a numpy one stayed numpy."""
    import numpy as np

    from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever
    from ragroute.pipeline.stages import GateDecision

    class Broken:
        name = "broken"

        def gate_many(self, contexts):
            raise RuntimeError("gate exploded")

    class Numpy:
        name = "numpy"

        def gate_many(self, contexts):
            return [GateDecision("retrieve", np.float32(0.75)) for _ in contexts]

    index = build_index(small_docs, "dense", encoder=hashing_encoder, name="all")
    pipeline = pipeline_from_settings([Source("all", index)], {"kind": "fixed"}, encoder=None)
    (node, *_) = GatedLlamaRetriever(Broken(), RoutedLlamaRetriever(pipeline)).retrieve("bread flour")
    gate = node.node.metadata["gate"]
    assert "gate exploded" in gate["error"] and "p_retrieve" not in gate
    json.dumps(gate, allow_nan=False)
    (node, *_) = GatedLlamaRetriever(Numpy(), RoutedLlamaRetriever(pipeline)).retrieve("bread flour")
    assert type(node.node.metadata["gate"]["p_retrieve"]) is float


def test_a_gated_retrievers_latest_decisions_are_one_querys_under_concurrency(hashing_encoder, small_docs):
    """``last_decision`` and ``last_routing`` belong to the query that ended last: until session 53
    the gate's was written when it decided and the routing's when retrieval ended, so a query that
    gated first and retrieved last left its routing beside a later query's gate decision."""
    import threading

    from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever
    from ragroute.pipeline.stages import GateDecision
    from ragroute.route.base import BaseRouter
    from ragroute.types import Decision

    released, first_gated = threading.Event(), threading.Event()

    class Named:
        def gate_many(self, contexts):
            first_gated.set()
            return [GateDecision("retrieve", 1.0, reason=c.text) for c in contexts]

    class Slow(BaseRouter):
        name = "slow"

        def route_many(self, queries, *, query_vectors=None):
            if "first" in queries[0]:
                assert released.wait(10)  # the first query routes only after the second ended
            return [Decision(chosen=["all"], routes={"all": 1.0}, signals={"query": q}) for q in queries]

    index = build_index(small_docs, "dense", encoder=hashing_encoder, name="all")
    gated = GatedLlamaRetriever(Named(), RoutedLlamaRetriever(Pipeline([Source("all", index)], Slow())))
    first = threading.Thread(target=gated.retrieve, args=("first bread",))
    first.start()
    assert first_gated.wait(10)
    gated.retrieve("second printer")
    released.set()
    first.join(10)
    assert gated.last_decision is not None and gated.last_routing is not None
    assert (gated.last_decision.reason, gated.last_routing.signals["query"]) == ("first bread",) * 2


def test_ragroute_rerank_takes_a_pipeline_reranker_with_a_candidates_pool():
    """A reranker of the pipeline's protocol, ``rerank(context, hits, k)``, with a ``candidates``
    attribute (the pool the pipeline fuses for it) failed in RagrouteRerank until session 54: it was
    passed ``candidates=`` and raised ``TypeError: unexpected keyword argument 'candidates'``."""
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragroute.integrations.llamaindex_rerank import RagrouteRerank

    class ByText:
        name = "by-text"
        candidates = 12

        def rerank(self, context, hits, k):
            return sorted(hits, key=lambda h: h.text)[:k]

    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=t), score=s) for t, s in (("c", 0.9), ("a", 0.5), ("b", 0.1))
    ]
    kept = RagrouteRerank(ByText(), top_n=2).postprocess_nodes(nodes, query_str="q")
    assert [n.node.node_id for n in kept] == ["a", "b"]


def test_the_llamaindex_retrievers_refuse_a_query_that_is_not_text_in_one_line(hashing_encoder, small_docs):
    """``retrieve(None)`` / ``retrieve(123)`` failed inside LlamaIndex's instrumentation with a
    multi-line pydantic ValidationError of its RetrievalStartEvent until session 54; LangChain's
    ``invoke`` says it in one line, and now so do the LlamaIndex retrievers, sync and async."""
    from ragroute.errors import InvalidQueryError

    index = build_index(small_docs, "dense", encoder=hashing_encoder, name="all")
    from ragroute.route.fixed import FixedRoutes

    routed = RoutedLlamaRetriever(
        Pipeline([Source("all", index)], FixedRoutes(["all"]), encoder=hashing_encoder)
    )
    for retriever in (routed, IndexLlamaRetriever(index)):
        for bad, name in ((None, "NoneType"), (123, "int")):
            with pytest.raises(InvalidQueryError, match=f"query must be a string, got {name}"):
                retriever.retrieve(bad)
            with pytest.raises(InvalidQueryError, match=f"query must be a string, got {name}"):
                asyncio.run(retriever.aretrieve(bad))
        assert retriever.retrieve(QueryBundle("bread oven"))
        assert asyncio.run(retriever.aretrieve("bread oven"))
