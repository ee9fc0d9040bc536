"""ragroute's own framework retrievers wrapped back as sources of an outer pipeline hand each
query's caller to the pipeline behind them, as they hand its scopes: the adapters passed the scopes
only, and every query reached the inner pipeline as the anonymous caller "" (one caller's queries
spent everyone's exposure budget there)."""

from __future__ import annotations

import pytest
from conftest import TOPICS
from test_pipeline import FixedRouter

from ragroute.context import QueryContext
from ragroute.exposure import ExposureBudget, ExposureLedger
from ragroute.index.base import by_filter_groups, filter_groups
from ragroute.index.build import build_index
from ragroute.pipeline import Pipeline
from ragroute.route.sources import Source
from ragroute.types import Document, Hit

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from ragroute.integrations.langchain import (  # noqa: E402
    IndexLangChainRetriever,
    LangChainRetrieverAdapter,
    RoutedLangChainRetriever,
)
from ragroute.integrations.llamaindex import (  # noqa: E402
    IndexLlamaRetriever,
    LlamaRetrieverAdapter,
    RoutedLlamaRetriever,
)

ASTRO = TOPICS["astro"].split()


def _astro(encoder, budget: ExposureBudget | None = None) -> tuple[ExposureLedger, Pipeline]:
    """An inner pipeline over 10 astro documents (2 of them for "hr" only) counting per caller."""
    docs = [
        Document(
            id=f"a{i}",
            text=" ".join(ASTRO[(i + j) % len(ASTRO)] for j in range(5)),
            metadata={"access": "hr"} if i >= 8 else {},
        )
        for i in range(10)
    ]
    ledger = ExposureLedger(budget or ExposureBudget(per="pipeline", max_fraction=1.0, min_documents=1))
    inner = Pipeline(
        [Source("astro", build_index(docs, "dense", encoder=encoder, name="astro"))],
        FixedRouter({"astro": 1.0}),
        encoder=encoder,
        exposure=ledger,
    )
    return ledger, inner


WRAPPERS = {
    "langchain-routed": lambda p: LangChainRetrieverAdapter(RoutedLangChainRetriever(p, k=3), name="wrapped"),
    "langchain-index": lambda p: LangChainRetrieverAdapter(IndexLangChainRetriever(p, k=3), name="wrapped"),
    "llamaindex-routed": lambda p: LlamaRetrieverAdapter(RoutedLlamaRetriever(p, k=3), name="wrapped"),
    "llamaindex-index": lambda p: LlamaRetrieverAdapter(IndexLlamaRetriever(p, k=3), name="wrapped"),
}


@pytest.mark.parametrize("wrap", sorted(WRAPPERS))
def test_a_wrapped_ragroute_retriever_charges_each_caller_in_the_inner_pipeline(wrap, hashing_encoder):
    ledger, inner = _astro(hashing_encoder)
    outer = Pipeline([Source("wrapped", WRAPPERS[wrap](inner))], FixedRouter({"wrapped": 1.0}))
    assert len(outer.retrieve("telescope star galaxy", k=2, caller="eve").hits) == 2
    # two callers in one batch: searched apart, each under its own name (and with its own scopes)
    batch = outer.retrieve_contexts(
        [
            QueryContext("comet nebula orbit", caller="bob"),
            QueryContext("comet nebula orbit", caller="carol", scopes=["hr"]),
            QueryContext("galaxy nebula star", caller="dan"),  # bob's scopes: one search until now
            QueryContext("planet orbit star", caller="bob"),
        ],
        k=2,
    )
    assert [len(r.hits) for r in batch] == [2, 2, 2, 2]
    counted = {c: ledger.distinct(c, "*") for c in ("eve", "bob", "carol", "dan", "")}
    assert counted["eve"] == 2 and counted["bob"] >= 2 and counted["carol"] == 2 and counted["dan"] == 2
    assert counted[""] == 0  # nobody asked anonymously


@pytest.mark.parametrize("wrap", sorted(WRAPPERS))
def test_a_per_caller_hard_stop_behind_a_wrapped_retriever_stops_only_that_caller(wrap, hashing_encoder):
    """A budget of 3 documents per caller: one caller reading 3 used up the anonymous caller's
    budget, which every caller of the outer pipeline shared, so the next caller got nothing new."""
    budget = ExposureBudget(per="pipeline", max_fraction=0.1, min_documents=3, hard_stop=True)
    ledger, inner = _astro(hashing_encoder, budget)
    outer = Pipeline([Source("wrapped", WRAPPERS[wrap](inner))], FixedRouter({"wrapped": 1.0}))
    first = outer.retrieve("telescope star galaxy", k=3, caller="eve")
    assert len(first.hits) == 3
    other = outer.retrieve("comet nebula orbit planet", k=3, caller="bob")
    assert len(other.hits) == 3  # bob's own budget, untouched by eve's queries
    assert ledger.distinct("eve", "*") == 3 and ledger.distinct("bob", "*") == 3


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_an_anonymous_outer_query_is_anonymous_behind_a_wrapped_retriever_made_for_a_caller(
    framework, hashing_encoder
):
    """The outer query's caller is who asks, as its scopes are the scopes: a wrapped retriever made
    with ``caller="svc"`` hands on the outer callers, and the anonymous one as anonymous."""
    ledger, inner = _astro(hashing_encoder)
    if framework == "langchain":
        adapter = LangChainRetrieverAdapter(RoutedLangChainRetriever(inner, caller="svc"), name="wrapped")
    else:
        adapter = LlamaRetrieverAdapter(RoutedLlamaRetriever(inner, caller="svc"), name="wrapped")
    outer = Pipeline([Source("wrapped", adapter)], FixedRouter({"wrapped": 1.0}))
    assert len(outer.retrieve("telescope star galaxy", k=2).hits) == 2
    assert len(outer.retrieve("comet nebula orbit", k=3, caller="eve").hits) == 3
    assert (ledger.distinct("", "*"), ledger.distinct("eve", "*"), ledger.distinct("svc", "*")) == (2, 3, 0)


def test_a_third_party_retriever_is_still_asked_without_a_caller():
    """Only ragroute's own retrievers take ``caller``: a LangChain retriever of another kind is
    asked as before, each distinct scope once, whoever the callers are."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document as LangChainDocument
    from langchain_core.retrievers import BaseRetriever

    class Recording(BaseRetriever):
        calls: list = []

        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs
        ) -> list[LangChainDocument]:
            self.calls.append((query, dict(kwargs)))
            return [LangChainDocument(page_content=f"about {query}", id=f"x-{query}")]

    recording = Recording()
    adapter = LangChainRetrieverAdapter(recording, name="x", scope_filters=lambda s: {"labels": sorted(s)})
    contexts = [QueryContext("one", caller="eve"), QueryContext("two", caller="bob")]
    found = adapter.search_contexts(contexts, k=2)
    assert [[h.doc_id for h in hits] for hits in found] == [["x-one"], ["x-two"]]
    assert sorted(recording.calls, key=lambda c: c[0]) == [
        ("one", {"k": 2, "labels": []}),
        ("two", {"k": 2, "labels": []}),
    ]


def test_contexts_are_grouped_by_caller_only_when_asked():
    contexts = [
        QueryContext("a", caller="eve"),
        QueryContext("b", caller="bob"),
        QueryContext("c", caller="eve"),
        QueryContext("d", caller="bob", scopes=["hr"]),
    ]
    assert [positions for positions, _, _ in filter_groups(contexts, scoped=True)] == [[0, 1, 2], [3]]
    grouped = filter_groups(contexts, scoped=True, by_caller=True)
    assert [positions for positions, _, _ in grouped] == [[0, 2], [1], [3]]
    seen: list[tuple[str, ...]] = []

    def search(group, filters):
        seen.append(tuple(c.caller for c in group))
        return [[Hit(c.text, 1.0, "s")] for c in group]

    found = by_filter_groups(contexts, search, scoped=True, by_caller=True)
    assert [hits[0].doc_id for hits in found] == ["a", "b", "c", "d"]
    assert seen == [("eve", "eve"), ("bob",), ("bob",)]
