"""Property-based tests (hypothesis, deterministic) of the framework integrations against ragroute's
own API as the oracle, and plain regression tests of what they found.

* the routed and gated LlamaIndex retrievers and the routed LangChain retriever return
  ``pipeline.retrieve``'s hits: the same ids in the same order, the same scores, text, title and
  document metadata (a document's own scalar fields, none renamed or lost), sync and async alike,
  the decision reachable from every node or document; no two nodes share a mutable metadata value
  (an edit to one node's ``explain`` or ``gate`` changes no other node, no later result and no
  recorded decision);
* the LlamaIndex and LangChain adapters filter a framework's nodes and documents as a ragroute
  index filters the same documents: equality, a list of wanted values, a list metadata value
  (any of its items), and a node's ``title``.
"""

from __future__ import annotations

import asyncio

import numpy as np
from conftest import PROPERTY_SETTINGS, HashingEncoder
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document as LangChainDocument
from langchain_core.retrievers import BaseRetriever as LangChainBaseRetriever
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

from ragroute.context import QueryContext
from ragroute.gate.controller import StepwiseController
from ragroute.gate.planners import ScriptedPlanner
from ragroute.index.build import build_index
from ragroute.index.docstore import value_matches
from ragroute.integrations.langchain import LangChainRetrieverAdapter, RoutedLangChainRetriever
from ragroute.integrations.llamaindex import HIDDEN_METADATA_KEYS, LlamaRetrieverAdapter, RoutedLlamaRetriever
from ragroute.integrations.llamaindex_embedding import EncoderEmbedding
from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever, StepwiseLlamaRetriever
from ragroute.pipeline import GateDecision, Pipeline, RoutingOptions
from ragroute.route.sources import Source
from ragroute.types import Document

FAST = settings(PROPERTY_SETTINGS, max_examples=25)

WORDS = ["telescope", "star", "orbit", "bread", "flour", "oven", "printer", "laptop", "vpn"]
COLOURS = ("red", "blue", "green")
TAGS = ("x", "y", "z")
ENCODER = HashingEncoder()


def _docs(prefix: str, n: int, seed: int) -> list[Document]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        metadata: dict = {"colour": COLOURS[i % 3], "year": 2020 + i % 4, "flag": bool(i % 2)}
        if i % 5 == 0:
            metadata["source"] = f"/files/{prefix}{i}.pdf"  # a document's own key that is ragroute's too
        out.append(
            Document(f"{prefix}{i}", " ".join(rng.choice(WORDS, 8)), title=f"{prefix} {i}", metadata=metadata)
        )
    return out


DOCS = {"one": _docs("a", 18, 1), "two": _docs("b", 18, 2)}
SOURCES = [
    Source(name, build_index(docs, "dense", encoder=ENCODER, name=name)) for name, docs in DOCS.items()
]
BY_ID = {(name, d.id): d for name, docs in DOCS.items() for d in docs}


class FixedRoutes:
    """Both sources, always (the probabilities are the decision's routes)."""

    name = "fixed"
    labels = ["one", "two"]

    def route_many(self, queries, *, query_vectors=None):
        from ragroute.types import Decision

        return [Decision(["one", "two"], {"one": 0.6, "two": 0.4}, decided_by=self.name) for _ in queries]


PIPELINE = Pipeline(
    SOURCES, FixedRoutes(), encoder=ENCODER, options=RoutingOptions(threshold=0.1, max_routes=2)
)


class Retrieve:
    """A gate that always retrieves (with the caller's k)."""

    name = "always"

    def gate_many(self, contexts):
        return [GateDecision("retrieve", 0.9, reason="scripted") for _ in contexts]


queries = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
filters = st.one_of(
    st.none(),
    st.sampled_from(COLOURS).map(lambda c: {"colour": c}),
    st.lists(st.integers(2020, 2023), min_size=1, max_size=2).map(lambda years: {"year": years}),
    st.booleans().map(lambda flag: {"flag": flag}),
)


def _node_view(node):
    meta = node.node.metadata
    return (meta["source"], meta["doc_id"], node.score, node.node.get_content(), meta["title"])


@FAST
@given(query=queries, k=st.integers(1, 12), wanted=filters)
def test_llamaindex_retrievers_return_the_pipelines_hits_with_their_documents_metadata(query, k, wanted):
    want = PIPELINE.retrieve(QueryContext.of(query, filters=wanted), k).hits
    expected = [(h.source, h.doc_id, h.score, h.text, h.title) for h in want]
    routed = RoutedLlamaRetriever(PIPELINE, similarity_top_k=k, filters=wanted)
    gated = GatedLlamaRetriever(Retrieve(), routed)
    nodes, decision = routed.retrieve_with_decision(query)
    for got in (
        nodes,
        asyncio.run(routed.aretrieve(query)),
        gated.retrieve(query),
        asyncio.run(gated.aretrieve(query)),
    ):
        assert [_node_view(n) for n in got] == expected
        assert [n.node.node_id for n in got] == [f"{h.source}:{h.doc_id}" for h in want]
    assert decision is not None and all(routed.decision_of(n) is decision for n in nodes)
    for node in nodes:
        meta = node.node.metadata
        document = BY_ID[(meta["source"], meta["doc_id"])]
        own = {k: v for k, v in meta.items() if k not in (*HIDDEN_METADATA_KEYS, "title")}
        assert own == {("document_source" if k == "source" else k): v for k, v in document.metadata.items()}
    # no mutable metadata value is shared between two nodes of one result, or with a later one
    gated_nodes = gated.retrieve(query)
    for group in (nodes, gated_nodes):
        ids = [id(v) for n in group for v in n.node.metadata.values() if isinstance(v, (dict, list))]
        assert len(ids) == len(set(ids))
    if gated_nodes:
        gated_nodes[0].node.metadata["gate"]["reason"] = "edited"
        gated_nodes[0].node.metadata["explain"]["edited"] = True
        assert all(n.node.metadata["gate"]["reason"] == "scripted" for n in gated_nodes[1:])
        again = gated.retrieve(query)
        assert all("edited" not in n.node.metadata["explain"] for n in again)


@FAST
@given(query=queries, k=st.integers(1, 12), wanted=filters)
def test_the_langchain_retriever_returns_the_pipelines_hits_sync_async_and_batched(query, k, wanted):
    want = PIPELINE.retrieve(QueryContext.of(query, filters=wanted), k).hits
    expected = [(h.source, h.doc_id, h.score, h.text) for h in want]
    retriever = RoutedLangChainRetriever(PIPELINE, k=3)  # the call's own k and filters, in place
    documents, decision = retriever.invoke_with_decision(query, k=k, filters=wanted)
    batched = retriever.batch([query, query], k=k, filters=wanted)
    for got in (documents, asyncio.run(retriever.ainvoke(query, k=k, filters=wanted)), *batched):
        view = [
            (d.metadata["source"], d.metadata["doc_id"], d.metadata["score"], d.page_content) for d in got
        ]
        assert view == expected
    assert all(retriever.decision_of(d) is decision for d in documents)
    for document in documents:
        own = BY_ID[(document.metadata["source"], document.metadata["doc_id"])]
        assert document.metadata["title"] == own.title
        for key, value in own.metadata.items():
            assert document.metadata["document_source" if key == "source" else key] == value


# --------------------------------------------------------------------------- adapters filter as an index

ITEMS = [
    {
        "id": f"n{i}",
        "text": " ".join(WORDS[(i * j) % len(WORDS)] for j in range(1, 6)),
        "metadata": {
            "title": f"T{i % 4}",
            "colour": COLOURS[i % 3],
            "tags": [TAGS[i % 3]] if i % 2 else [TAGS[i % 3], TAGS[(i + 1) % 3]],
            "year": 2020 + i % 4,
        },
    }
    for i in range(12)
]
NATIVE = build_index(
    [
        Document(it["id"], it["text"], metadata={k: v for k, v in it["metadata"].items() if k != "title"})
        for it in ITEMS
    ],
    "dense",
    encoder=ENCODER,
    name="native",
)
LLAMA = LlamaRetrieverAdapter(
    VectorStoreIndex(
        [TextNode(id_=it["id"], text=it["text"], metadata=dict(it["metadata"])) for it in ITEMS],
        embed_model=EncoderEmbedding(ENCODER),
    )
)


class FixedDocuments(LangChainBaseRetriever):
    """Every item, as LangChain documents (in the items' order)."""

    def _get_relevant_documents(self, query, *, run_manager):
        return [
            LangChainDocument(page_content=it["text"], id=it["id"], metadata=dict(it["metadata"]))
            for it in ITEMS
        ]


LANGCHAIN = LangChainRetrieverAdapter(FixedDocuments())

adapter_filters = st.one_of(
    st.sampled_from(TAGS).map(lambda t: {"tags": t}),
    st.lists(st.sampled_from(TAGS), min_size=1, max_size=2).map(lambda t: {"tags": t}),
    st.sampled_from(COLOURS).map(lambda c: {"colour": c}),
    st.tuples(st.sampled_from(TAGS), st.integers(2020, 2023)).map(lambda t: {"tags": t[0], "year": t[1]}),
)


@FAST
@given(query=queries, wanted=adapter_filters)
def test_the_adapters_filter_a_frameworks_nodes_as_an_index_filters_the_same_documents(query, wanted):
    native = {h.doc_id for h in NATIVE.search(query, len(ITEMS), filters=wanted)}
    for adapter in (LLAMA, LANGCHAIN):
        assert {h.doc_id for h in adapter.search(query, len(ITEMS), filters=wanted)} == native


def test_an_adapter_keeps_a_nodes_list_metadata_and_filters_on_it():
    """A node's or document's list metadata (``tags``) was dropped on its way to a hit, so a filter on
    it matched nothing, silently, where an index holding the same documents matched them."""
    for adapter in (LLAMA, LANGCHAIN):
        hits = {h.doc_id: h for h in adapter.search("printer", len(ITEMS))}
        assert hits["n1"].metadata["tags"] == ["y"] and hits["n0"].metadata["tags"] == ["x", "y"]
        found = {h.doc_id for h in adapter.search("printer", len(ITEMS), filters={"tags": "z"})}
        assert found == {it["id"] for it in ITEMS if "z" in it["metadata"]["tags"]}


def test_an_adapter_filters_on_a_nodes_title():
    """A node's title metadata becomes the hit's title, not metadata: a filter on ``title`` matched
    no node of a LlamaIndex or LangChain retriever, silently."""
    for adapter in (LLAMA, LANGCHAIN):
        found = {h.doc_id for h in adapter.search("printer", len(ITEMS), filters={"title": "T1"})}
        assert found == {it["id"] for it in ITEMS if it["metadata"]["title"] == "T1"}
        assert value_matches("T1", ["T1", "T2"])  # the filter semantics the adapter follows


# --------------------------------------------------------------------------- shared metadata values


def test_the_gated_retrievers_nodes_each_own_their_gate_metadata():
    """Every node of a gated query held one and the same ``gate`` dict: an edit to one node's changed
    every other node's."""
    nodes = GatedLlamaRetriever(Retrieve(), RoutedLlamaRetriever(PIPELINE, similarity_top_k=4)).retrieve(
        "star orbit"
    )
    assert len(nodes) == 4
    nodes[0].node.metadata["gate"]["reason"] = "edited"
    assert [n.node.metadata["gate"]["reason"] for n in nodes[1:]] == ["scripted"] * 3


def test_a_stepwise_nodes_explain_is_its_own_not_the_runs():
    """A step-wise node's ``explain`` was the hit of the recorded run itself: an edit to a node's
    metadata changed the run that ``decision_of(node)`` returns."""
    controller = StepwiseController(
        ScriptedPlanner(["star orbit", "bread oven"], answer="done"), PIPELINE, k=3
    )
    nodes, run = StepwiseLlamaRetriever(controller, similarity_top_k=4).retrieve_with_decision("q")
    assert nodes
    nodes[0].node.metadata["explain"]["edited"] = True
    assert all("edited" not in hit.explain for hit in run.evidence())


def test_an_adapter_filters_on_access_labels_as_an_index_does():
    """A filter on ``access`` matches a document holding any of the wanted labels however they are
    written (``"hr,finance"``, ``" hr "`` or a list) in every index kind; an adapter compared the raw
    metadata value, so a framework's node labelled ``"hr,finance"`` was dropped, silently, by a
    filter ``access="hr"`` that an index holding the same documents matched."""
    labelled = [("s", "hr,finance"), ("p", " hr "), ("l", ["hr"]), ("f", ["finance"]), ("e", "")]
    nodes = [TextNode(id_=i, text=f"printer {i}", metadata={"access": a}) for i, a in labelled]
    adapter = LlamaRetrieverAdapter(VectorStoreIndex(nodes, embed_model=EncoderEmbedding(ENCODER)))
    native = build_index(
        [Document(i, f"printer {i}", metadata={"access": a}) for i, a in labelled], "dense", encoder=ENCODER
    )
    found = {}
    for wanted in ("hr", ["finance"], None):
        context = QueryContext("printer", filters={"access": wanted}, scopes=("hr", "finance"))
        found[str(wanted)] = {h.doc_id for h in native.search_contexts([context], 10)[0]}
        assert {h.doc_id for h in adapter.search_contexts([context], 10)[0]} == found[str(wanted)], wanted
    assert found == {"hr": {"s", "p", "l"}, "['finance']": {"s", "f"}, "None": {"e"}}
