"""LangChain: retrievers over a ragroute pipeline and a plain index, LangChain retrievers as ragroute
sources (in code and from a routing config). Needs the ``langchain`` extra (part of ``test``)."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("langchain_core", reason="install the langchain extra: pip install -e '.[langchain]'")

from conftest import CancelProbe, NoneFirst, shared_id_pipeline  # noqa: E402
from langchain_core.documents import Document as LangChainDocument  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from ragroute.errors import InvalidArgumentError, RagrouteError  # noqa: E402
from ragroute.index.build import build_index  # noqa: E402
from ragroute.integrations.langchain import (  # noqa: E402
    IndexLangChainRetriever,
    LangChainRetrieverAdapter,
    RoutedLangChainRetriever,
)
from ragroute.pipeline.build import pipeline_from_settings  # noqa: E402
from ragroute.route.sources import Source  # noqa: E402


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


class HashingEmbeddings(Embeddings):
    """LangChain embeddings over the tests' hashing encoder (offline, deterministic)."""

    def __init__(self, encoder):
        self.encoder = encoder

    def embed_documents(self, texts):
        return self.encoder.encode_documents(texts).tolist()

    def embed_query(self, text):
        return self.encoder.encode_queries([text])[0].tolist()


class KeywordRetriever(BaseRetriever):
    """A LangChain retriever with a ``k`` field and no scores: documents sharing most words first."""

    documents: list[LangChainDocument]
    k: int = 2

    def _get_relevant_documents(self, query, *, run_manager):
        words = set(query.lower().split())
        ranked = sorted(self.documents, key=lambda d: -len(words & set(d.page_content.lower().split())))
        return ranked[: self.k]


def test_routed_retriever_returns_documents_with_small_metadata(sources, hashing_encoder, small_docs):
    pipeline = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    retriever = RoutedLangChainRetriever(pipeline, k=3)
    documents = retriever.invoke("galaxy telescope orbit")
    assert len(documents) == 3
    first = documents[0]
    assert set(first.metadata) == {
        "doc_id",
        "source",
        "score",
        "title",
        "route_probability",
        "decision_id",
        "topic",
    }
    assert first.metadata["source"] == "astro" and first.id == f"astro:{first.metadata['doc_id']}"
    assert first.metadata["score"] >= documents[1].metadata["score"]
    assert len(json.dumps(first.metadata)) < 300  # no decision trace copied into documents
    assert (
        retriever.last_decision.chosen == ["astro"]
        and retriever.decision_of(first) is retriever.last_decision
    )
    assert len(RoutedLangChainRetriever(pipeline=pipeline, k=5).invoke("flour")) == 5
    everything = pipeline_from_settings(
        [Source("all", build_index(small_docs, "bm25", name="all"))], {"kind": "fixed"}, encoder=None
    )
    unfiltered = RoutedLangChainRetriever(everything, k=6).invoke("galaxy bread flour")
    filtered = RoutedLangChainRetriever(everything, k=6, filters={"topic": "cook"}).invoke(
        "galaxy galaxy bread"
    )
    assert {d.metadata["topic"] for d in unfiltered} == {"astro", "cook"}
    assert len(filtered) == 6 and {d.metadata["topic"] for d in filtered} == {"cook"}


def test_index_retriever_over_an_index_or_a_source(sources):
    index = sources[1].retriever
    documents = IndexLangChainRetriever(index, k=2).invoke("flour yeast")
    assert [d.metadata["doc_id"] for d in documents] == [h.doc_id for h in index.search("flour yeast", 2)]
    assert "route_probability" not in documents[0].metadata and documents[0].metadata["source"] == "cook"
    assert len(IndexLangChainRetriever(sources[1], k=4).invoke("flour")) == 4
    with pytest.raises(ValueError):
        IndexLangChainRetriever(index, k=0)


def test_an_unknown_keyword_is_one_error_line_not_ignored(sources, hashing_encoder):
    """filter=, scope=, top_k= and similarity_top_k= were accepted and ignored: a typo dropped a
    filter or a caller's scopes without a word."""
    pipeline = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    for keyword, hint in [
        ("filter", "did you mean 'filters'"),
        ("scope", "did you mean 'scopes'"),
        ("top_k", "known: caller, filters, k, keep_decisions"),
        ("similarity_top_k", "known: caller, filters, k, keep_decisions"),
    ]:
        with pytest.raises(
            InvalidArgumentError, match=f"RoutedLangChainRetriever: unknown keyword '{keyword}'; {hint}"
        ):
            RoutedLangChainRetriever(pipeline, **{keyword: 1})
    with pytest.raises(
        InvalidArgumentError, match="IndexLangChainRetriever: unknown keyword 'keep_decisions'"
    ):
        IndexLangChainRetriever(sources[1], keep_decisions=3)
    # LangChain's own fields still pass
    retriever = RoutedLangChainRetriever(pipeline, k=2, tags=["t"], metadata={"m": 1}, name="routed")
    assert retriever.tags == ["t"] and retriever.metadata == {"m": 1} and retriever.get_name() == "routed"
    assert len(retriever.invoke("flour")) == 2


def test_k_and_the_other_fields_are_checked_strictly_at_construction_and_assignment(sources):
    """k="3" and k=True were accepted (pydantic's lax parsing), k=0 was a multi-line pydantic error,
    and assigning k=0 or filters="x" after construction was not checked at all."""
    index = sources[1].retriever
    for bad, message in [
        ("3", "k must be a whole number >= 1, got a string"),
        (True, "k must be a whole number >= 1, got a boolean"),
        (2.5, "k must be a whole number >= 1, got 2.5"),
        (0, "k must be >= 1, got 0"),
    ]:
        with pytest.raises(InvalidArgumentError, match=f"^IndexLangChainRetriever: {message}$"):
            IndexLangChainRetriever(index, k=bad)
    with pytest.raises(InvalidArgumentError, match="keep_decisions must be >= 1"):
        RoutedLangChainRetriever(NoneFirst(index), keep_decisions=0)
    with pytest.raises(InvalidArgumentError, match="filters must be a mapping"):
        IndexLangChainRetriever(index, filters="x")
    retriever = IndexLangChainRetriever(index, k=2)
    for field, bad in [("k", 0), ("k", "2"), ("filters", "x"), ("caller", 5)]:
        with pytest.raises(InvalidArgumentError, match=f"^IndexLangChainRetriever: {field} must be"):
            setattr(retriever, field, bad)
    retriever.k, retriever.scopes = 3, "hr"  # one label, as in the constructor
    assert len(retriever.invoke("flour")) == 3 and retriever.scopes == ("hr",)


def test_constructors_refuse_what_they_cannot_search(sources, hashing_encoder):
    """A path or None was accepted and failed at the first query with an AttributeError."""
    index = sources[1].retriever
    with pytest.raises(
        InvalidArgumentError,
        match=r"^IndexLangChainRetriever: index must be .*not a path .*: load it first with .*load_index",
    ):
        IndexLangChainRetriever("indexes/demo/cooking")
    with pytest.raises(InvalidArgumentError, match=r"^IndexLangChainRetriever: index must be .*not empty"):
        IndexLangChainRetriever(None)
    with pytest.raises(
        InvalidArgumentError,
        match="not a LangChain IndexLangChainRetriever: wrap it in LangChainRetrieverAdapter",
    ):
        IndexLangChainRetriever(IndexLangChainRetriever(index))
    with pytest.raises(
        InvalidArgumentError,
        match=r"^RoutedLangChainRetriever: pipeline must be a ragroute Pipeline .*load_routing",
    ):
        RoutedLangChainRetriever("corpora/routing.yaml")
    with pytest.raises(
        InvalidArgumentError,
        match="^RoutedLangChainRetriever: pipeline must be .*not a BM25Index|not a HybridIndex",
    ):
        RoutedLangChainRetriever(index)
    with pytest.raises(InvalidArgumentError, match="^RoutedLangChainRetriever: pipeline is required$"):
        RoutedLangChainRetriever()
    pipeline = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    assert RoutedLangChainRetriever(pipeline=pipeline).invoke("galaxy")


def test_a_calls_own_decision_also_without_documents_and_under_concurrency(sources):
    """A query routed to none returns no document to read its decision from, and last_decision
    belongs to whichever query ended last."""

    retriever = RoutedLangChainRetriever(NoneFirst(sources[1].retriever), k=2)
    queries = ["what is the capital of Italy", "flour oven"] * 3

    async def concurrently():
        return await asyncio.gather(*(retriever.ainvoke_with_decision(q) for q in queries))

    for query, (documents, decision) in zip(queries, asyncio.run(concurrently())):
        assert decision.decided_by == query
        assert (decision.chosen, len(documents)) == ((["none"], 0) if "capital" in query else (["cook"], 2))
        assert all(retriever.decision_of(document) is decision for document in documents)
    assert retriever.last_decision.chosen == ["cook"]  # the slow query's, whatever came first
    with ThreadPoolExecutor(4) as pool:
        for query, (documents, decision) in zip(queries, pool.map(retriever.invoke_with_decision, queries)):
            assert decision.decided_by == query and len(documents) == (0 if "capital" in query else 2)
    documents, decision = retriever.invoke_with_decision("flour", k=1, scopes=["hr"])  # invoke's arguments
    assert len(documents) == 1 and decision.chosen == ["cook"]


def test_a_copy_keeps_its_own_decisions(sources):
    """model_copy() shared the original's log: the copy's queries overwrote its last_decision (and a
    deep copy raised TypeError on the log's lock)."""
    import copy

    retriever = RoutedLangChainRetriever(NoneFirst(sources[1].retriever), k=2)
    retriever.invoke("flour oven")
    for twin in (retriever.model_copy(), retriever.model_copy(deep=True), copy.copy(retriever)):
        documents, decision = twin.invoke_with_decision("the capital of Peru")
        assert twin.last_decision is decision and decision.chosen == ["none"]
        assert retriever.last_decision.chosen == ["cook"]
    assert retriever.model_copy(update={"k": 1}).invoke("flour")[0].metadata["decision_id"]


class SleepyIndex:
    def __init__(self, index, delay: float = 0.2):
        self.index, self.delay, self.name = index, delay, index.name

    def search_many(self, queries, k=10, *, filters=None):
        time.sleep(self.delay)
        return self.index.search_many(queries, k, filters=filters)


def _timed(make) -> float:
    async def run():
        start = time.perf_counter()
        await make()
        return time.perf_counter() - start

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["routed", "index"])
def test_concurrent_ainvoke_overlaps(sources, kind):
    slow = SleepyIndex(sources[0].retriever)
    if kind == "routed":
        retriever = RoutedLangChainRetriever(
            pipeline_from_settings([Source("astro", slow)], {"kind": "fixed"}, encoder=None), k=2
        )
    else:
        retriever = IndexLangChainRetriever(slow, k=2)
    one = _timed(lambda: retriever.ainvoke("galaxy"))
    two = _timed(lambda: asyncio.gather(retriever.ainvoke("galaxy"), retriever.ainvoke("comet")))
    assert one >= 0.2 and two < 1.5 * one, (one, two)


def test_langchain_retrievers_as_ragroute_sources(sources, hashing_encoder, small_docs):
    cook = [d for d in small_docs if d.metadata["topic"] == "cook"]
    store = InMemoryVectorStore(HashingEmbeddings(hashing_encoder))
    store.add_documents(
        [
            LangChainDocument(page_content=d.text, metadata={"title": d.title, **d.metadata}, id=d.id)
            for d in cook
        ]
    )
    adapter = LangChainRetrieverAdapter(store.as_retriever(search_kwargs={"k": 2}), name="recipes")
    hits = adapter.search("flour bread oven", 5)  # k per call, passed to the vector store
    assert len(hits) == 5 and all(h.doc_id.startswith("cook-") and h.source == "recipes" for h in hits)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5] and hits[0].title.startswith("cook ")
    assert hits[0].metadata == {"topic": "cook"}
    many = adapter.search_many(["flour", "butter knife"], 3)  # one batch call
    assert [len(h) for h in many] == [3, 3]

    keyword_docs = [
        LangChainDocument(page_content=t) for t in ("vpn password reset", "printer driver", "oven")
    ]
    keyword = KeywordRetriever(documents=keyword_docs, k=1)
    by_keywords = LangChainRetrieverAdapter(keyword, name="kb")
    hits = by_keywords.search("vpn password", 2)
    assert len(hits) == 2 and keyword.k == 1  # a copy with k=2 answered; the retriever is unchanged
    assert hits[0].text == "vpn password reset" and hits[0].score == 1.0 and hits[1].score == 0.5  # 1/rank
    assert hits[0].doc_id == by_keywords.search("vpn password", 1)[0].doc_id  # stable id from the text

    mixed = [sources[0], Source("recipes", adapter), Source("kb", by_keywords)]
    pipeline = pipeline_from_settings(mixed, {"kind": "fixed", "fusion": "rrf"}, encoder=None)
    result = pipeline.retrieve("flour bread vpn", k=6)
    assert {h.source for h in result.hits} == {"astro", "recipes", "kb"}
    with pytest.raises(RagrouteError, match="not a LangChain retriever"):
        LangChainRetrieverAdapter(object())


class FilterRetriever(BaseRetriever):
    """A retriever whose search takes a keyword of its own (``filter``) but not ``k``."""

    def _get_relevant_documents(self, query, *, run_manager, filter=None):
        return [LangChainDocument(page_content=f"doc {i} telescope", id=f"f{i}") for i in range(6)]


class OddRetriever(BaseRetriever):
    """Documents a real store can return: one twice (by id, and by text without one), odd scores."""

    def _get_relevant_documents(self, query, *, run_manager):
        return [
            LangChainDocument(page_content="nan", id="n", metadata={"score": float("nan")}),
            LangChainDocument(page_content="twice", metadata={"score": 0.9}),
            LangChainDocument(page_content="twice", metadata={"score": 0.8}),
            LangChainDocument(page_content="flag", id="b", metadata={"score": True, "similarity": 0.4}),
            LangChainDocument(page_content="x1", id="x", metadata={"score": 0.5}),
            LangChainDocument(page_content="x2", id="x", metadata={"score": 0.3}),
        ]


def test_a_retrievers_own_keywords_odd_scores_and_repeated_documents(sources):
    # until session 37 `k=` was passed to any retriever taking some keyword, and it raised TypeError:
    # as a pipeline source it lost every hit of every query (the error only in the trace)
    filtered = LangChainRetrieverAdapter(FilterRetriever(), name="filt")
    assert [h.doc_id for h in filtered.search("telescope", 3)] == ["f0", "f1", "f2"]
    pipeline = pipeline_from_settings([Source("filt", filtered)], {"kind": "fixed"}, encoder=None)
    assert len(pipeline.retrieve("telescope", k=4).hits) == 4
    # a NaN score cost the source all its hits (the pipeline refuses a non-finite score), a flag read
    # as 1.0, and a document returned twice came back as two hits with one id
    odd = LangChainRetrieverAdapter(OddRetriever(), name="odd")
    hits = odd.search("anything", 5)
    assert [(h.doc_id, h.text, h.score) for h in hits] == [
        ("n", "nan", 1.0),  # no finite score: 1/rank
        (hits[1].doc_id, "twice", 0.9),
        ("b", "flag", 0.4),  # the flag is no score: the next key's
        ("x", "x1", 0.5),
    ]
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    result = pipeline_from_settings([Source("odd", odd)], {"kind": "fixed"}, encoder=None).retrieve("q", k=5)
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in hits]


def test_round_trip_ragroute_through_langchain_and_back(sources, hashing_encoder):
    index = sources[1].retriever
    back = LangChainRetrieverAdapter(IndexLangChainRetriever(index, k=2), name="cook").search(
        "flour bread", 4
    )
    direct = index.search("flour bread", 4)
    assert [h.doc_id for h in back] == [h.doc_id for h in direct]
    # scored as a pipeline over the index alone scores them (tests/test_index_retriever_scores.py)
    alone = pipeline_from_settings([sources[1]], {"kind": "centroid"}, encoder=hashing_encoder)
    assert [h.score for h in back] == pytest.approx([h.score for h in alone.search("flour bread", 4)])
    assert back[0].metadata == {"topic": "cook"} and back[0].title == direct[0].title
    routed = RoutedLangChainRetriever(
        pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    )
    outer = pipeline_from_settings(
        [Source("inner", LangChainRetrieverAdapter(routed))], {"kind": "fixed"}, encoder=None
    )
    hits = outer.retrieve("galaxy telescope", k=3).hits
    # a pipeline over several sources: ids keep their source (two sources' documents may share one)
    assert len(hits) == 3 and all(h.source == "inner" and h.doc_id.startswith("astro:astro-") for h in hits)


FACTORIES = """
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


class Fixed(BaseRetriever):
    texts: list[str]
    k: int = 4

    def _get_relevant_documents(self, query, *, run_manager):
        docs = [Document(page_content=t, metadata={"score": 1.0 / (i + 1)}) for i, t in enumerate(self.texts)]
        return docs[: self.k]


def make(texts):
    return Fixed(texts=texts)


def not_langchain():
    return object()
"""


def test_routing_config_with_a_langchain_source(tmp_path, hashing_encoder, small_docs):
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    save_index(build_index(small_docs, "bm25", name="all"), tmp_path / "all")
    (tmp_path / "lc.py").write_text(FACTORIES)
    config = {
        "sources": {
            "all": {"index": "all"},
            "notes": {
                "kind": "langchain",
                "factory": "lc.py:make",
                "options": {"texts": ["galaxy notes", "x"]},
            },
            "auto": {"kind": "python", "factory": "lc.py:make", "options": {"texts": ["auto detected"]}},
            "wrong": {"kind": "langchain", "factory": "lc.py:not_langchain"},
        },
        "router": {"kind": "fixed", "fusion": "rrf"},
    }
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    pipeline = load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)
    assert [s.name for s in pipeline.sources] == ["all", "notes", "auto"]
    assert isinstance(pipeline.sources[2].retriever, LangChainRetrieverAdapter)  # python kind: detected
    assert "not a LangChain retriever" in {p.name: p.error for p in pipeline.problems}["wrong"]
    hits = pipeline.retrieve("galaxy", k=8).hits
    notes = [h for h in hits if h.source == "notes"]
    assert [h.text for h in notes] == ["galaxy notes", "x"] and notes[0].explain["langchain"]["score"] == 1.0


def test_langchain_sources_run_as_children_of_the_routed_retrievers_run(small_docs):
    """A callback handler saw only the outer retriever until session 37: the LangChain retrievers it
    searched as sources ran with no parent run (and, in pool threads, with no config at all)."""
    from langchain_core.callbacks import BaseCallbackHandler

    class Handler(BaseCallbackHandler):
        def __init__(self):
            self.starts = []

        def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs):
            self.starts.append(
                (kwargs.get("metadata") or {}).get("ls_retriever_name", "?") + str(parent_run_id is not None)
            )

    def source(topic):
        docs = [
            LangChainDocument(page_content=d.text, id=d.id)
            for d in small_docs
            if d.metadata["topic"] == topic
        ]
        return Source(topic, LangChainRetrieverAdapter(KeywordRetriever(documents=docs), name=topic))

    sources = [source(t) for t in ("astro", "cook", "it")]
    retriever = RoutedLangChainRetriever(
        pipeline_from_settings(sources, {"kind": "fixed"}, encoder=None), k=3
    )
    for call in (
        lambda h: retriever.invoke("star bread printer", config={"callbacks": [h]}),
        lambda h: asyncio.run(retriever.ainvoke("star bread printer", config={"callbacks": [h]})),
    ):
        handler = Handler()
        call(handler)
        assert sorted(handler.starts) == ["keywordTrue"] * 3 + ["routedlangchainFalse"]


class AsyncOnlyRetriever(BaseRetriever):
    """A retriever that answers only through its async path (its sync one says so)."""

    def _get_relevant_documents(self, query, *, run_manager):
        raise NotImplementedError("async only")

    async def _aget_relevant_documents(self, query, *, run_manager):
        await asyncio.sleep(0)
        return [LangChainDocument(page_content=f"{query} {i}", id=f"a{i}") for i in range(3)]


def test_a_retriever_that_answers_only_asynchronously_is_searched_through_that_path():
    """Its hits were lost on every query until session 37 (NotImplementedError in the trace only)."""
    adapter = LangChainRetrieverAdapter(AsyncOnlyRetriever(), name="async")
    assert [h.doc_id for h in adapter.search("q", 2)] == ["a0", "a1"]
    assert [[h.doc_id for h in hits] for hits in adapter.search_many(["x", "y"], 1)] == [["a0"], ["a0"]]
    retriever = RoutedLangChainRetriever(
        pipeline_from_settings([Source("async", adapter)], {"kind": "fixed"}, encoder=None), k=3
    )
    assert len(retriever.invoke("q")) == 3
    assert len(asyncio.run(retriever.ainvoke("q"))) == 3  # a loop runs on the calling thread here

    async def inside_a_loop():
        return adapter.search("q", 2)  # sync code called where an event loop runs

    assert [h.doc_id for h in asyncio.run(inside_a_loop())] == ["a0", "a1"]
    with pytest.raises(NotImplementedError):  # a sync path that is simply missing still says so
        LangChainRetrieverAdapter(FilterRetrieverMissing(), name="m").search("q", 1)


class FilterRetrieverMissing(BaseRetriever):
    def _get_relevant_documents(self, query, *, run_manager):
        raise NotImplementedError("not written yet")


def test_a_routed_retriever_over_sources_sharing_ids_loses_no_document_as_a_source(hashing_encoder):
    """Two sources' documents sharing the id H1 came back as one hit through the adapter (its id
    was read from the `doc_id` metadata, then de-duplicated) until session 40."""
    pipeline = shared_id_pipeline(hashing_encoder)
    routed = RoutedLangChainRetriever(pipeline, k=4)
    documents = routed.invoke("payroll salary")
    assert sorted(d.id for d in documents) == ["itpay:H1", "itpay:H9", "payroll:H1", "payroll:H2"]
    adapter = LangChainRetrieverAdapter(routed, name="x")
    from ragroute.context import QueryContext

    hits = adapter.search_contexts([QueryContext.of("payroll salary")], 4)[0]
    assert sorted(h.doc_id for h in hits) == ["itpay:H1", "itpay:H9", "payroll:H1", "payroll:H2"]
    assert {h.text for h in hits} == {d.page_content for d in documents}
    # over one index the ids stay the documents' own
    one = LangChainRetrieverAdapter(IndexLangChainRetriever(pipeline.sources[0], k=2), name="y")
    assert sorted(h.doc_id for h in one.search("payroll salary", 2)) == ["H1", "H2"]


class LoaderRetriever(BaseRetriever):
    """Documents as a LangChain loader makes them: `source` is the file they came from."""

    def _get_relevant_documents(self, query, *, run_manager):
        return [
            LangChainDocument(
                page_content=f"page {i} of the handbook",
                id=f"p{i}",
                metadata={"source": "/docs/handbook.pdf", "page": i, "score": 0.9 - i / 10},
            )
            for i in range(3)
        ]


def test_a_documents_own_source_score_and_title_are_kept_not_overwritten(small_docs, hashing_encoder):
    """A document's own `source` (a loader's file path), `score` and `title` metadata were overwritten
    by ragroute's in LangChain documents, while filters matched the original value; a loader's
    `source` was dropped on the way into ragroute (until session 40)."""
    from ragroute.types import Document

    docs = [
        Document(
            id=f"d{i}",
            text=f"payroll salary {i}",
            title=f"Doc {i}",
            metadata={"source": f"/hr/{i}.pdf", "score": "high", "title": "own", "doc_id": "X"},
        )
        for i in range(3)
    ]
    index = build_index(docs, "bm25", name="hr")
    retriever = RoutedLangChainRetriever(
        pipeline_from_settings([Source("hr", index)], {"kind": "fixed"}, encoder=None), k=3
    )
    filtered = retriever.invoke("payroll salary", filters={"source": "/hr/1.pdf"})
    assert [d.metadata["document_source"] for d in filtered] == ["/hr/1.pdf"]  # the filter's value, shown
    metadata = filtered[0].metadata
    assert metadata["source"] == "hr" and metadata["doc_id"] == "d1" and isinstance(metadata["score"], float)
    assert metadata["document_score"] == "high" and metadata["document_title"] == "own"
    assert metadata["title"] == "Doc 1" and metadata["document_doc_id"] == "X"
    # and back into ragroute: the document's own values under their own keys again
    back = LangChainRetrieverAdapter(retriever, name="again").search("payroll salary", 3)
    assert back[0].metadata == {"source": "/hr/0.pdf", "score": "high", "title": "own", "doc_id": "X"}
    # a loader's documents keep their `source` as ragroute metadata, and show it as document_source
    loader = LangChainRetrieverAdapter(LoaderRetriever(), name="handbook")
    hits = loader.search("handbook", 2)
    assert hits[0].metadata == {"source": "/docs/handbook.pdf", "page": 0} and hits[0].score == 0.9
    assert [h.doc_id for h in loader.search("x", 3, filters={"source": "/docs/handbook.pdf"})] == [
        "p0",
        "p1",
        "p2",
    ]
    outer = RoutedLangChainRetriever(
        pipeline_from_settings([Source("handbook", loader)], {"kind": "fixed"}, encoder=None), k=1
    )
    (document,) = outer.invoke("handbook")
    assert document.metadata["source"] == "handbook" and document.metadata["document_source"] == (
        "/docs/handbook.pdf"
    )


class Unpicklable:
    """Stands for a model a pipeline holds (an ONNX InferenceSession): it cannot be copied."""

    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle 'onnxruntime.capi.onnxruntime_pybind11_state.InferenceSession' object")


def test_a_deep_copy_shares_the_pipeline_and_keeps_its_own_decisions(sources, hashing_encoder):
    """model_copy(deep=True) and copy.deepcopy copied the pipeline: with a real model inside, a
    TypeError (cannot pickle InferenceSession) until session 40."""
    import copy

    pipeline = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=hashing_encoder)
    pipeline.model = Unpicklable()
    retriever = RoutedLangChainRetriever(pipeline, k=3)
    retriever.invoke("galaxy telescope")
    for twin in (retriever.model_copy(deep=True), copy.deepcopy(retriever)):
        assert twin.pipeline is pipeline
        documents, decision = twin.invoke_with_decision("flour oven bread")
        assert len(documents) == 3 and twin.last_decision is decision
        assert retriever.last_decision is not decision and retriever.last_decision.chosen == ["astro"]
    index = IndexLangChainRetriever(sources[1], k=2)
    assert copy.deepcopy(index).index is sources[1]


def test_per_call_keywords_are_checked_and_filters_taken_per_call(small_docs):
    """invoke(query, scope=[...]) raised a raw TypeError naming a private method, and filters= could
    not be given per call (until session 40)."""
    everything = pipeline_from_settings(
        [Source("all", build_index(small_docs, "bm25", name="all"))], {"kind": "fixed"}, encoder=None
    )
    retriever = RoutedLangChainRetriever(everything, k=4, filters={"topic": "astro"})
    for keyword, hint in [("scope", "did you mean 'scopes'"), ("filter", "did you mean 'filters'")]:
        with pytest.raises(
            InvalidArgumentError,
            match=f"^RoutedLangChainRetriever.invoke: unknown keyword '{keyword}'; {hint}",
        ):
            retriever.invoke("galaxy bread", **{keyword: ["hr"]})
        with pytest.raises(InvalidArgumentError, match=f"unknown keyword '{keyword}'"):
            asyncio.run(retriever.ainvoke("galaxy bread", **{keyword: ["hr"]}))
    assert {d.metadata["topic"] for d in retriever.invoke("galaxy bread flour")} == {"astro"}
    per_call = retriever.invoke("galaxy bread flour", filters={"topic": "cook"})  # in place of the field's
    assert len(per_call) == 4 and {d.metadata["topic"] for d in per_call} == {"cook"}
    assert {
        d.metadata["topic"] for d in asyncio.run(retriever.ainvoke("printer vpn", filters={"topic": "it"}))
    } == {"it"}
    assert retriever.filters == {"topic": "astro"}
    with pytest.raises(InvalidArgumentError, match="filters must be a mapping"):
        retriever.invoke("bread", filters=["topic"])


def test_model_copy_checks_its_update_as_the_constructor_does(sources):
    """model_copy(update={"filters": ["category"]}) was taken unchecked and failed at the query with
    `ValueError: dictionary update sequence element #0` (until session 40)."""
    retriever = IndexLangChainRetriever(sources[1], k=2)
    for update, message in [
        ({"filters": ["category"]}, "filters must be a mapping"),
        ({"k": 0}, "k must be >= 1"),
        ({"filter": {"topic": "cook"}}, "unknown field 'filter'; did you mean 'filters'"),
    ]:
        with pytest.raises(InvalidArgumentError, match=f"^IndexLangChainRetriever: {message}"):
            retriever.model_copy(update=update)
    twin = retriever.model_copy(update={"k": 3, "filters": {"topic": "cook"}})
    assert len(twin.invoke("flour")) == 3 and retriever.k == 2 and retriever.filters is None


def test_an_async_only_source_runs_once_without_a_failed_run():
    """Each search of an async-only retriever first tried its sync path: its callbacks saw a failed
    run (NotImplementedError) before the one that answered, on every search (until session 40)."""
    from langchain_core.callbacks import BaseCallbackHandler

    class Handler(BaseCallbackHandler):
        def __init__(self):
            self.events = []

        def on_retriever_start(self, serialized, query, **kwargs):
            self.events.append("start")

        def on_retriever_end(self, documents, **kwargs):
            self.events.append("end")

        def on_retriever_error(self, error, **kwargs):
            self.events.append(f"error {type(error).__name__}")

    class AsyncOnlyAgain(AsyncOnlyRetriever):
        """A class of its own: what was learnt about AsyncOnlyRetriever in other tests is not used."""

        def _get_relevant_documents(self, query, *, run_manager):
            raise NotImplementedError

    retriever = RoutedLangChainRetriever(
        pipeline_from_settings(
            [Source("async", LangChainRetrieverAdapter(AsyncOnlyAgain(), name="async"))],
            {"kind": "fixed"},
            encoder=None,
        ),
        k=2,
    )
    for _ in range(2):
        handler = Handler()
        assert len(retriever.invoke("q", config={"callbacks": [handler]})) == 2
        assert handler.events == ["start", "start", "end", "end"]  # the routed run, its one child


def test_a_chunks_parent_and_modality_reach_the_documents_and_come_back_through_the_adapter(hashing_encoder):
    """Session 43: a LangChain document carried neither the chunk's parent nor its modality, so a
    LangChainRetrieverAdapter over ragroute's retriever returned every chunk as a text document of its
    own (the LlamaIndex round trip kept both): a parents reranker kept every chunk."""
    from ragroute.integrations.llamaindex import IndexLlamaRetriever, LlamaRetrieverAdapter
    from ragroute.types import Document

    docs = [
        Document(id="d1#p0", text="printer laptop", parent_id="d1", modality="table", metadata={"x": 1}),
        Document(id="d1#p1", text="printer vpn", parent_id="d1", metadata={"x": 2}),
        Document(id="d2", text="printer oven", metadata={"x": 3}),
    ]
    index = build_index(docs, "dense", encoder=hashing_encoder, name="manuals")
    first = IndexLangChainRetriever(index, k=3).invoke("printer laptop")[0]
    assert first.metadata["parent_id"] == "d1" and first.metadata["modality"] == "table"

    def fields(hits):
        return [(h.doc_id, h.parent_id, h.modality, h.metadata) for h in hits]

    direct = fields(index.search("printer laptop", 3))
    lang = LangChainRetrieverAdapter(IndexLangChainRetriever(index, k=3)).search("printer laptop", 3)
    llama = LlamaRetrieverAdapter(IndexLlamaRetriever(index, k=3)).search("printer laptop", 3)
    assert fields(lang) == fields(llama) == direct
    assert direct[0][1:3] == ("d1", "table")


def test_a_documents_own_source_and_document_source_come_back_under_their_own_names(hashing_encoder):
    """Session 43: a document holding both ``source`` and ``document_source`` came back through an
    adapter with its ``document_source`` as ``source`` and its ``source`` as ``document_document_source``."""
    from ragroute.integrations.llamaindex import IndexLlamaRetriever, LlamaRetrieverAdapter
    from ragroute.types import Document

    own = {"source": "/copy.pdf", "document_source": "/original.pdf", "title": "own"}
    index = build_index(
        [Document(id="d1", text="printer laptop", title="T", metadata=own)], "dense", encoder=hashing_encoder
    )
    for adapter in (
        LangChainRetrieverAdapter(IndexLangChainRetriever(index, k=1)),
        LlamaRetrieverAdapter(IndexLlamaRetriever(index, k=1)),
    ):
        assert adapter.search("printer", 1)[0].metadata == own


def test_document_metadata_keeps_a_documents_numpy_scalars_as_python_values(hashing_encoder):
    """Until session 49 a document's np.int64, np.float32 and np.bool_ metadata were dropped from its
    LangChain document, silently, and np.str_ stayed numpy."""
    import numpy as np

    from ragroute.types import Document

    own = {"year": np.int64(2021), "price": np.float32(1.5), "ok": np.bool_(True), "code": np.str_("x")}
    plain = {"year": 2021, "price": 1.5, "ok": True, "code": "x"}
    index = build_index([Document(id="d1", text="printer", metadata=own)], "dense", encoder=hashing_encoder)
    document = IndexLangChainRetriever(index, k=1).invoke("printer")[0]
    assert {key: document.metadata.get(key) for key in plain} == plain
    assert all(type(document.metadata[key]) is type(value) for key, value in plain.items())
    json.dumps(document.metadata)


def test_nested_pipeline_documents_sharing_an_id_keep_ids_of_their_own(hashing_encoder):
    """Two inner sources' H1 under one nested pipeline were both `outer:H1` (and one hit through an
    adapter) until session 49; an index retriever over a pipeline, wrapped back as a source, kept
    both H1 as one hit."""
    inner = shared_id_pipeline(hashing_encoder)
    outer = pipeline_from_settings([Source("outer", inner)], {"kind": "fixed"}, encoder=None)
    routed = RoutedLangChainRetriever(outer, k=4)
    expected = ["outer/itpay:H1", "outer/itpay:H9", "outer/payroll:H1", "outer/payroll:H2"]
    assert sorted(d.id for d in routed.invoke("payroll salary")) == expected
    hits = LangChainRetrieverAdapter(routed, name="x").search("payroll salary", 4)
    assert sorted(h.doc_id for h in hits) == expected
    both = LangChainRetrieverAdapter(IndexLangChainRetriever(inner, k=4), name="y").search(
        "payroll salary", 4
    )
    assert sorted(h.doc_id for h in both) == ["itpay:H1", "itpay:H9", "payroll:H1", "payroll:H2"]


@pytest.mark.parametrize(
    ("returned", "says"),
    [
        (["a string"], "returned a str in its list, not a Document"),
        (None, "returned None, not a list of Documents"),
    ],
)
def test_a_langchain_retriever_returning_no_documents_is_one_line(returned, says):
    """Until session 49 an AttributeError (`'str' object has no attribute 'id'`) or a TypeError
    from inside the adapter."""

    class Odd(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager):
            return returned

    adapter = LangChainRetrieverAdapter(Odd(), name="odd")
    with pytest.raises(RagrouteError, match=f"source 'odd': the LangChain retriever Odd {says}"):
        adapter.search("printer", 2)
    pipeline = pipeline_from_settings(
        [Source("odd", adapter, description="odd")], {"kind": "fixed"}, encoder=None
    )
    result = pipeline.retrieve("printer", 2)
    errors = [s.detail["error"] for s in result.decision.trace if s.stage == "retrieve"]
    assert result.hits == [] and errors == [
        f"RagrouteError: source 'odd': the LangChain retriever Odd {says}"
    ]


def test_a_cancelled_ainvoke_stops_before_its_next_stage():
    """A cancelled ``ainvoke`` ran on to its end in its worker thread until session 50 (reranked,
    admitted to the caller's exposure budget); it stops at the next stage boundary, inside the
    LangChain run's own context (its callbacks) as before."""
    probe = CancelProbe()
    retriever = RoutedLangChainRetriever(probe.pipeline, k=1)
    assert retriever.invoke("first") and probe.reranked == ["first"]
    probe.cancel_midway(retriever.ainvoke)
    assert probe.reranked == ["first"]
    assert asyncio.run(retriever.ainvoke("third")) and probe.reranked[-1] == "third"
