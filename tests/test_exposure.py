"""Per-caller exposure accounting: distinct documents per source in a window, alerts, hard stop."""

from __future__ import annotations

import json

import pytest
from test_pipeline import FixedRouter

from ragroute.errors import RagrouteError
from ragroute.exposure import ExposureAlert, ExposureBudget, ExposureLedger, ExposureWarning
from ragroute.index.build import build_index
from ragroute.pipeline import Pipeline
from ragroute.route.sources import Source
from ragroute.types import Hit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _hits(source: str, ids) -> list[Hit]:
    return [Hit(f"d{i}", 1.0, source, rank=r) for r, i in enumerate(ids, 1)]


def test_budget_is_a_fraction_of_each_source_with_a_floor():
    budget = ExposureBudget(max_fraction=0.02, min_documents=50)
    assert budget.limit(100_000) == 2000 and budget.limit(1000) == 50 and budget.limit(None) == 50


def test_ledger_counts_distinct_documents_per_caller_and_source_within_the_window():
    clock = Clock()
    ledger = ExposureLedger(ExposureBudget(per="source", min_documents=5, window_s=100), clock=clock)
    ledger.admit("alice", _hits("a", [1, 2, 3]))
    ledger.admit("alice", _hits("a", [2, 3, 4]))  # re-reading costs nothing
    ledger.admit("alice", _hits("b", [1]))
    ledger.admit("bob", _hits("a", [9]))
    assert ledger.distinct("alice", "a") == 4 and ledger.distinct("alice", "b") == 1
    assert ledger.distinct("bob", "a") == 1
    clock.now = 50
    ledger.admit("alice", _hits("a", [1]))  # seen again: its time is renewed
    clock.now = 120  # d2-d4 (shown at 0) have left the window, d1 (shown at 50) has not
    assert ledger.distinct("alice", "a") == 1 and ledger.distinct("bob", "a") == 0
    ledger.admit("bob", _hits("a", [9]))
    clock.now = 145  # d1 (shown at 50) is still in the window; nothing else is left to expire
    assert ledger.distinct("alice", "a") == 1
    clock.now = 151  # now it has left too (the window reads its earliest time, kept since the last expiry)
    assert ledger.distinct("alice", "a") == 0
    ledger.admit("alice", _hits("a", [1]))
    ledger.reset("alice")
    assert ledger.distinct("alice", "a") == 0 and ledger.distinct("bob", "a") == 1


def test_alert_fires_once_per_window_and_hard_stop_withholds_only_new_documents():
    clock = Clock()
    alerts: list[ExposureAlert] = []
    budget = ExposureBudget(per="source", min_documents=4, window_s=100, alert_at=0.5, hard_stop=True)
    ledger = ExposureLedger(budget, on_alert=alerts.append, clock=clock)
    shown, step = ledger.admit("eve", _hits("a", [1, 2]))
    assert len(shown) == 2 and [a.distinct for a in alerts] == [2]  # half the budget reached
    shown, step = ledger.admit("eve", _hits("a", [3, 4, 5, 6]))
    assert [h.doc_id for h in shown] == ["d3", "d4"] and step.detail["withheld"] == 2
    assert step.detail["sources"]["a"] == {"distinct": 4, "budget": 4}
    assert len(alerts) == 1  # not again within the window
    shown, _ = ledger.admit("eve", _hits("a", [1, 7, 2]))  # already seen: still shown
    assert [h.doc_id for h in shown] == ["d1", "d2"]
    shown, _ = ledger.admit("bob", _hits("a", [7]))  # other callers are not affected
    assert [h.doc_id for h in shown] == ["d7"]
    clock.now = 500  # the window has passed: new documents again, and the alert re-arms
    shown, _ = ledger.admit("eve", _hits("a", [8, 9]))
    assert len(shown) == 2 and len(alerts) == 2
    warned = ExposureLedger(ExposureBudget(per="source", min_documents=1, warn=True))
    with pytest.warns(ExposureWarning, match="caller mallory has seen 1 distinct documents of a"):
        warned.admit("mallory", _hits("a", [1]))


def test_pipeline_accounts_per_caller_and_records_the_trace(small_docs, hashing_encoder):
    sources = [
        Source(
            t,
            build_index(
                [d for d in small_docs if d.metadata["topic"] == t], "dense", encoder=hashing_encoder
            ),
        )
        for t in ("astro", "cook")
    ]
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1, hard_stop=True))
    pipeline = Pipeline(
        sources, FixedRouter({"astro": 1.0, "cook": 0.0}), encoder=hashing_encoder, exposure=ledger
    )
    assert ledger.sizes == {"astro": 10, "cook": 10, "*": 20}  # budgets follow each source's size
    first = pipeline.retrieve("telescope star galaxy", k=4, caller="eve")
    step = next(s for s in first.decision.trace if s.stage == "exposure")
    assert step.detail["caller"] == "eve" and step.detail["sources"]["astro"] == {"distinct": 4, "budget": 5}
    second = pipeline.retrieve("comet nebula orbit planet", k=4, caller="eve")
    new = [h for h in second.hits if h.doc_id not in {x.doc_id for x in first.hits}]
    assert ledger.distinct("eve", "astro") == 5 and len(new) <= 1  # at most one more, then the stop
    assert len(pipeline.retrieve("comet nebula orbit planet", k=4, caller="alice").hits) == 4
    assert ledger.distinct("", "astro") == 0  # the anonymous caller has asked nothing


def test_exposure_in_a_routing_config(tmp_path, hashing_encoder, small_docs):
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing
    from ragroute.route.config_check import check_config

    save_index(build_index(small_docs, "bm25", name="all"), tmp_path / "all")
    config = {
        "sources": {"all": {"index": "all"}},
        "exposure": {"max_fraction": 0.1, "min_documents": 3, "hard_stop": True},
    }
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    pipeline = load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)
    assert pipeline.exposure is not None and pipeline.exposure.budget.limit(30) == 3
    assert len(pipeline.retrieve("bread flour yeast oven", k=5, caller="x").hits) == 3
    for bad, message in (
        ({"max_fractoin": 0.1}, "did you mean 'max_fraction'"),
        ({"min_documents": "many"}, "'min_documents' must be an integer"),
        ({"hard_stop": "yes"}, "'hard_stop' must be true or false"),
        ({"max_fraction": 2}, "max_fraction must be in"),
    ):
        config["exposure"] = bad
        (tmp_path / "bad.yaml").write_text(json.dumps(config))
        with pytest.raises(RagrouteError, match=message) as raised:
            load_routing(tmp_path / "bad.yaml", encoder=hashing_encoder)
        assert str(raised.value).startswith(f"{tmp_path / 'bad.yaml'}: exposure")  # the file is named
        assert any(
            message.split("'")[0] in p or message in p for p in check_config(tmp_path / "bad.yaml").problems
        )


def test_one_budget_over_the_whole_pipeline():
    ledger = ExposureLedger(ExposureBudget(per="pipeline", max_fraction=0.1, min_documents=1, hard_stop=True))
    ledger.add_sizes({"a": 20, "b": 30})
    assert ledger.sizes["*"] == 50 and ledger.budget.limit(ledger.sizes["*"]) == 5
    shown, step = ledger.admit("eve", _hits("a", [1, 2, 3]) + _hits("b", [1, 2, 3]))
    assert len(shown) == 5 and step.detail["sources"] == {"*": {"distinct": 5, "budget": 5}}
    with pytest.raises(RagrouteError, match="per must be 'source' or 'pipeline'"):
        ExposureBudget(per="corpus")


def test_sources_over_one_collection_share_one_count_and_one_size(small_docs):
    """An expert set's experts search the same documents: three experts must not triple the
    budget (the pipeline total) nor give three budgets (per source), and a document two experts
    show is one document seen."""
    index = build_index(small_docs, "bm25", name="all")
    experts = [Source(n, index, metadata={"corpus": "all"}) for n in ("base", "bm25", "expert-x")]
    other = Source("other", build_index(small_docs[:10], "bm25", name="other"))
    pooled = ExposureLedger(ExposureBudget(per="pipeline", max_fraction=0.1, min_documents=1, hard_stop=True))
    pooled.add_sources([*experts, other])
    assert pooled.size("*") == 40  # 30 documents counted once, plus the other source's 10
    shown, step = pooled.admit("eve", _hits("base", [1, 2]) + _hits("expert-x", [1, 2, 3, 4]))
    assert [h.doc_id for h in shown] == ["d1", "d2", "d1", "d2", "d3", "d4"]  # d1, d2 re-read
    assert step.detail["sources"] == {"*": {"distinct": 4, "budget": 4}}
    assert pooled.admit("eve", _hits("bm25", [5]))[0] == []  # at the budget of 4, not 12
    apart = ExposureLedger(ExposureBudget(per="source", max_fraction=0.1, min_documents=1, hard_stop=True))
    apart.add_sources([*experts, other])
    shown, step = apart.admit("eve", _hits("expert-x", [1, 2, 3]) + _hits("other", [1]))
    assert step.detail["sources"] == {
        "expert-x": {"distinct": 3, "budget": 3},
        "other": {"distinct": 1, "budget": 1},
    }
    assert apart.distinct("eve", "base") == 3 and apart.tripped("eve", "bm25")  # one count for the three
    assert apart.admit("eve", _hits("base", [7]))[0] == []


def test_budget_size_counts_only_what_the_caller_may_read(small_docs, hashing_encoder):
    from ragroute.types import Document

    labelled = [
        Document(d.id, d.text, d.title, {**d.metadata, "access": "hr"} if i % 3 else d.metadata)
        for i, d in enumerate(small_docs)
    ]  # 10 public documents, 20 for "hr" only
    index = build_index(labelled, "bm25", name="mixed")
    secret = Source("secret", build_index(small_docs[:10], "bm25", name="secret"), access="board")
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1))
    ledger.add_sources([Source("mixed", index), secret])
    assert ledger.size("mixed") == 10 and ledger.size("mixed", ["hr"]) == 30
    assert ledger.size("secret") == 0 and ledger.size("secret", ["board"]) == 10
    assert ledger.admit("eve", _hits("mixed", [1]))[1].detail["sources"]["mixed"]["budget"] == 5
    assert ledger.admit("hr-bob", _hits("mixed", [1]), ["hr"])[1].detail["sources"]["mixed"]["budget"] == 15
    pooled = ExposureLedger(ExposureBudget(per="pipeline", max_fraction=0.5, min_documents=1))
    pipeline = Pipeline(
        [Source("mixed", index), secret], FixedRouter({"mixed": 1.0, "secret": 0.0}), exposure=pooled
    )
    public = pipeline.retrieve("telescope star", k=2, caller="eve")
    step = next(s for s in public.decision.trace if s.stage == "exposure")
    assert step.detail["sources"]["*"]["budget"] == 5  # half of the 10 documents eve may read, not of 40
    scoped = pipeline.retrieve("telescope star", k=2, caller="bob", scopes=["hr", "board"])
    step = next(s for s in scoped.decision.trace if s.stage == "exposure")
    assert step.detail["sources"]["*"]["budget"] == 20


def _astro_half_budget(small_docs, encoder):
    """A ledger with a hard stop at half of each source, and a pipeline over the astronomy documents."""
    astro = [d for d in small_docs if d.metadata["topic"] == "astro"]
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1, hard_stop=True))
    pipeline = Pipeline(
        [Source("astro", build_index(astro, "dense", encoder=encoder))],
        FixedRouter({"astro": 1.0}),
        encoder=encoder,
        exposure=ledger,
    )
    return ledger, pipeline


def test_framework_retrievers_tell_callers_apart(small_docs, hashing_encoder):
    """Behind LangChain or LlamaIndex every query counted under the anonymous caller: one user's
    traffic spent everyone's budget (`invoke(..., caller=)` was a TypeError)."""
    pytest.importorskip("langchain_core")
    from ragroute.integrations.langchain import RoutedLangChainRetriever
    from ragroute.integrations.llamaindex import IndexLlamaRetriever, RoutedLlamaRetriever

    ledger, pipeline = _astro_half_budget(small_docs, hashing_encoder)
    chain = RoutedLangChainRetriever(pipeline, k=4)
    assert len(chain.invoke("telescope star galaxy", caller="eve")) == 4
    assert len(RoutedLangChainRetriever(pipeline, k=4, caller="bob").invoke("telescope star galaxy")) == 4
    llama = RoutedLlamaRetriever(pipeline, k=3).with_scopes((), caller="carol")
    assert len(llama.retrieve("comet nebula orbit planet")) == 3
    # the index retriever over a pipeline dropped its caller: charged to "" (until session 40)
    plain = IndexLlamaRetriever(pipeline, k=2).with_scopes((), caller="dan")
    assert len(plain.retrieve("comet nebula orbit planet")) == 2
    assert len(IndexLlamaRetriever(pipeline, k=2, caller="fay").retrieve("telescope star galaxy")) == 2
    assert {c: ledger.distinct(c, "astro") for c in ("eve", "bob", "carol", "dan", "fay", "")} == {
        "eve": 4,
        "bob": 4,
        "carol": 3,
        "dan": 2,
        "fay": 2,
        "": 0,
    }
    with pytest.raises(RagrouteError, match="caller must be a string"):
        chain.invoke("telescope", caller=7)


def test_callers_gone_quiet_are_forgotten_once_their_window_is_over():
    """Every caller ever seen was kept (about 1 KB each): a service with many one-off callers grew
    without bound. Once per window the ledger drops callers whose window is empty."""
    clock = Clock()
    ledger = ExposureLedger(ExposureBudget(per="source", min_documents=5, window_s=100), clock=clock)
    ledger.add_sizes({"s": 1000})
    for i in range(500):
        clock.now = i * 0.1
        ledger.admit(f"one-off-{i}", _hits("s", [i]))
    assert len(ledger.callers()) == 500
    clock.now = 149.0  # the first 490 callers' documents left the window (the last ten's did not)
    ledger.admit("late", _hits("s", [1]))
    assert ledger.callers() == {"late", *(f"one-off-{i}" for i in range(490, 500))}
    assert ledger.distinct("one-off-499", "s") == 1 and ledger.distinct("one-off-0", "s") == 0


def test_budgets_follow_documents_added_deleted_and_labelled_after_the_pipeline_was_built(hashing_encoder):
    """Sizes were counted once: a source grown tenfold kept its first budget (withholding what the
    caller may see), one shrunk kept it too (an enumerator could read all of it), and labelled
    documents added later counted for no one."""
    from ragroute.types import Document

    docs = [Document(id=f"d{i}", text=f"printer laptop note {i}") for i in range(10)]
    index = build_index(docs, "dense", encoder=hashing_encoder, name="helpdesk")
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1, hard_stop=True))
    pipeline = Pipeline([Source("helpdesk", index)], FixedRouter({"helpdesk": 1.0}), exposure=ledger)
    assert ledger.size("helpdesk") == 10
    index.add([Document(id=f"n{i}", text=f"printer laptop more {i}") for i in range(90)])
    result = pipeline.retrieve("printer laptop", k=10, caller="alice")
    assert len(result.hits) == 10 and ledger.size("helpdesk") == 100
    index.delete([f"n{i}" for i in range(90)] + [f"d{i}" for i in range(8)])
    assert ledger.size("helpdesk") == 2
    index.add([Document(id=f"h{i}", text="payroll", metadata={"access": "hr"}) for i in range(5)])
    assert ledger.size("helpdesk") == 2 and ledger.size("helpdesk", ["hr"]) == 7


def test_the_exposure_bench_lists_the_folders_it_left_out(tmp_path, hashing_encoder):
    """A folder of the root without the split was said on stderr only, not in the report or JSON
    (until session 37): the numbers read as if measured on every collection."""
    from test_corpus_routing_bench import WORDS, write_collection

    from ragroute.evaluation.bench_exposure import format_report, run_exposure_bench

    root = tmp_path / "glasgow"
    for name in ("astro", "cook"):
        write_collection(root / name, name, WORDS[name].split(), shared=False)
    (root / "med" / "qrels").mkdir(parents=True)
    (root / "med" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    result = run_exposure_bench(root, hashing_encoder, users=3, max_queries=5)
    assert set(result["skipped"]) == {"med"} and "dev" in result["skipped"]["med"]
    assert f"skipped med: {result['skipped']['med']}" in format_report(result)


def test_an_admit_does_not_read_every_time_the_caller_has_seen(monkeypatch):
    """The window's check took the minimum over every document a caller had seen, per hit: an admit
    cost O(documents seen), 5.6 ms after 40k (until session 37)."""
    import ragroute.exposure as exposure

    clock = Clock()
    ledger = ExposureLedger(ExposureBudget(per="source", min_documents=10**6, window_s=100), clock=clock)
    ledger.admit("alice", _hits("a", list(range(2000))))
    scanned = []
    monkeypatch.setattr(exposure, "min", lambda *a, **k: scanned.append(1) or min(*a, **k), raising=False)
    clock.now = 10
    for i in range(10):
        ledger.admit("alice", _hits("a", [5000 + i]))
    assert scanned == [] and ledger.distinct("alice", "a") == 2010


def _docs(prefix: str, n: int, **metadata):
    from ragroute.types import Document

    return [Document(f"{prefix}{i}", f"star comet orbit word{i}", metadata=dict(metadata)) for i in range(n)]


def _exposure_step(result):
    return next(s for s in result.decision.trace if s.stage == "exposure").detail


def test_a_nested_pipelines_budget_is_a_fraction_of_what_the_caller_may_read_of_it():
    """A source whose retriever is another pipeline was sized from all the inner documents: the
    inner sources' access labels were dropped, so a caller without scopes got a budget of half of
    40 documents where it may read 10."""
    docs = _docs("p", 10) + _docs("h", 10, access="hr")  # the public source: 10 public, 10 for "hr"
    inner = Pipeline(
        [
            Source("pub", build_index(docs, "bm25", name="pub")),
            Source("sec", build_index(_docs("s", 20), "bm25", name="sec"), access="board"),
        ],
        FixedRouter({"pub": 1.0, "sec": 1.0}),
    )
    ledger = ExposureLedger(ExposureBudget(per="pipeline", max_fraction=0.5, min_documents=1))
    outer = Pipeline([Source("nested", inner)], FixedRouter({"nested": 1.0}), exposure=ledger)
    assert _exposure_step(outer.retrieve("star comet", k=3, caller="eve"))["sources"]["*"]["budget"] == 5
    scoped = outer.retrieve("star comet", k=3, caller="bob", scopes=["board", "hr"])
    assert _exposure_step(scoped)["sources"]["*"]["budget"] == 20
    assert ledger.size("*") == 10 and ledger.size("*", ["board"]) == 30
    # the outer source's own labels apply to everything behind it
    guarded = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1))
    guarded.add_sources([Source("nested", inner, access="hr")])
    assert guarded.size("pub") == 0 and guarded.size("pub", ["hr"]) == 20
    assert guarded.size("sec", ["hr"]) == 0 and guarded.size("sec", ["hr", "board"]) == 20


def test_a_ledger_shared_by_an_outer_and_an_inner_pipeline_counts_a_document_once():
    """Both pipelines admitted the same hits (the inner under its source, the outer under the
    nested source): three documents returned counted six, and the inner documents twice in the
    size of the whole pipeline."""
    ledger = ExposureLedger(ExposureBudget(per="pipeline", max_fraction=0.5, min_documents=1, hard_stop=True))
    inner = Pipeline(
        [Source("a", build_index(_docs("a", 10), "bm25", name="a"))], FixedRouter({"a": 1.0}), exposure=ledger
    )
    outer = Pipeline([Source("nested", inner)], FixedRouter({"nested": 1.0}), exposure=ledger)
    result = outer.retrieve("star comet", k=3, caller="eve")
    assert len(result.hits) == 3 and ledger.distinct("eve", "*") == 3
    assert ledger.size("*") == 10 and _exposure_step(result)["sources"]["*"] == {"distinct": 3, "budget": 5}
    again = inner.retrieve("star comet", k=3, caller="eve")  # the inner pipeline asked directly
    assert len(again.hits) == 3 and ledger.distinct("eve", "*") == 3  # the same three documents


def test_a_gates_probe_of_a_nested_pipeline_is_not_counted_as_shown():
    """A retrieval-confidence gate searches the sources before deciding; a nested pipeline holding
    the ledger admitted what the probe found, though the gate answered and nothing was returned."""
    from ragroute.gate.signals import RetrievalConfidenceSignal
    from ragroute.pipeline.stages import GateDecision

    class ProbeThenAnswer:
        name = "probe"

        def __init__(self, sources) -> None:
            self.signal = RetrievalConfidenceSignal(sources, k=3)

        def gate_many(self, contexts):
            self.signal.values(contexts, None)
            return [GateDecision("answer", 0.0) for _ in contexts]

    ledger = ExposureLedger(ExposureBudget(per="pipeline", max_fraction=0.5, min_documents=1))
    inner = Pipeline(
        [Source("a", build_index(_docs("a", 10), "bm25", name="a"))], FixedRouter({"a": 1.0}), exposure=ledger
    )
    sources = [Source("nested", inner)]
    outer = Pipeline(sources, FixedRouter({"nested": 1.0}), gate=ProbeThenAnswer(sources), exposure=ledger)
    result = outer.retrieve("star comet", k=3, caller="eve")
    assert result.hits == [] and ledger.distinct("eve", "*") == 0


def test_a_collection_is_sized_for_what_any_of_its_sources_lets_the_caller_read():
    """The size of a collection came from the first source naming it: a restricted source listed
    before a public one over the same index left a caller without scopes a size of 0 (budget
    min_documents), and the hard stop withheld what it may read through the public source."""
    index = build_index(_docs("x", 20), "bm25", name="x")
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1, hard_stop=True))
    pipeline = Pipeline(
        [
            Source("board", index, access="board", metadata={"corpus": "x"}),
            Source("open", index, metadata={"corpus": "x"}),
        ],
        FixedRouter({"board": 0.0, "open": 1.0}),
        exposure=ledger,
    )
    assert ledger.size("open") == 20 and ledger.size("board") == 20
    result = pipeline.retrieve("star comet", k=5, caller="eve")
    assert len(result.hits) == 5
    assert _exposure_step(result)["sources"]["open"] == {"distinct": 5, "budget": 10}
    only_restricted = ExposureLedger(ExposureBudget(per="source", min_documents=1))
    only_restricted.add_sources([Source("board", index, access="board", metadata={"corpus": "x"})])
    assert only_restricted.size("board") == 0 and only_restricted.size("board", ["board"]) == 20


def test_two_calls_passing_one_context_object_at_once_are_both_admitted():
    """The first pipeline call claimed its contexts by id() in a set every thread shared: a second
    call passing the same context object while the first ran was never admitted (8 documents shown
    under a hard stop of 3). The call chain, not the object, now decides."""
    import threading

    from ragroute.context import QueryContext

    entered, go = threading.Event(), threading.Event()

    class Slow:
        """A retriever that holds the first search until the second call has run."""

        def __init__(self, index):
            self.index, self.first = index, True

        def search_contexts(self, contexts, k):
            if self.first:
                self.first = False
                entered.set()
                go.wait(5)
            return self.index.search_contexts(contexts, k)

    ledger = ExposureLedger(ExposureBudget(per="pipeline", max_fraction=0.1, min_documents=3, hard_stop=True))
    slow = Pipeline(
        [Source("a", Slow(build_index(_docs("a", 10), "bm25", name="a")))],
        FixedRouter({"a": 1.0}),
        exposure=ledger,
    )
    quick = Pipeline(
        [Source("b", build_index(_docs("b", 10), "bm25", name="b"))], FixedRouter({"b": 1.0}), exposure=ledger
    )
    context = QueryContext.of("star comet", caller="eve")
    results = {}
    worker = threading.Thread(target=lambda: results.update(slow=slow.retrieve_contexts([context], 5)[0]))
    worker.start()
    entered.wait(5)
    results["quick"] = quick.retrieve_contexts([context], 5)[0]
    go.set()
    worker.join(10)
    shown = {h.doc_id for r in results.values() for h in r.hits}
    assert len(shown) == 3 and ledger.distinct("eve", "*") == 3
    assert all(any(s.stage == "exposure" for s in r.decision.trace) for r in results.values())


def test_fusion_calibration_through_a_nested_pipeline_is_not_charged_to_anyone():
    """The outer pipeline's fusion statistics are fitted (at its first query) on pseudo-queries
    searched through its sources; a nested pipeline holding the ledger admitted them to the
    anonymous caller "", whose later real queries the hard stop then cut."""
    from ragroute.types import Document

    stars = [Document(id=f"a{i}", text=f"star comet nebula w{i} orbit{i % 3}") for i in range(40)]
    planets = [Document(id=f"b{i}", text=f"planet comet moon v{i} ring{i % 4}") for i in range(40)]
    ledger = ExposureLedger(
        ExposureBudget(per="pipeline", max_fraction=0.05, min_documents=4, hard_stop=True)
    )
    inner = Pipeline(
        [Source("a", build_index(stars, "bm25", name="a"))], FixedRouter({"a": 1.0}), exposure=ledger
    )
    other = Source("b", build_index(planets, "bm25", name="b"))
    outer = Pipeline(
        [Source("nested", inner), other], FixedRouter({"nested": 0.5, "b": 0.5}), exposure=ledger
    )
    outer.retrieve("star comet", k=3, caller="eve")
    assert ledger.callers() == {"eve"} and ledger.distinct("", "*") == 0


def test_two_nested_pipelines_with_sources_of_one_name_are_two_collections():
    """Nested sources were declared under their bare names: a second nested "main" over other
    documents was never counted, and its documents passed a hard stop as the first's (a review of
    session 38). They are declared by path now ("wiki/main", "hr/main"), each its own collection."""
    wiki = Pipeline(
        [Source("main", build_index(_docs("w", 100), "bm25", name="main"))], FixedRouter({"main": 1.0})
    )
    hr = Pipeline(
        [Source("main", build_index(_docs("doc", 4), "bm25", name="main"))], FixedRouter({"main": 1.0})
    )
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1, hard_stop=True))
    outer = Pipeline(
        [Source("wiki", wiki), Source("hr", hr)], FixedRouter({"wiki": 0.0, "hr": 1.0}), exposure=ledger
    )
    assert ledger.size("wiki/main") == 100 and ledger.size("hr/main") == 4 and ledger.size("*") == 104
    result = outer.retrieve("star comet", k=4, caller="eve")
    assert len(result.hits) == 2  # half of hr's 4 documents
    assert _exposure_step(result)["sources"]["hr/main"] == {"distinct": 2, "budget": 2}


def test_two_pipelines_sharing_a_ledger_with_sources_of_one_name_count_each_in_its_own():
    """Two pipelines sharing one ledger (as the docs suggest for a caller across pipelines), each
    with a source called "docs" over other documents: the second's hits were counted in the
    first's collection by their source's name, so its documents were held to the first's budget
    (and any id eve had seen there passed as "already seen") (session 40 audit). Each pipeline's
    hits now count in its own source's collection."""
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1, hard_stop=True))
    first = Pipeline(
        [Source("docs", build_index(_docs("d", 4), "bm25", name="docs"))],
        FixedRouter({"docs": 1.0}),
        exposure=ledger,
    )
    second = Pipeline(
        [Source("docs", build_index(_docs("e", 8), "bm25", name="docs"))],
        FixedRouter({"docs": 1.0}),
        exposure=ledger,
    )
    assert len(first.retrieve("star comet", k=4, caller="eve").hits) == 2  # half of 4
    shown = second.retrieve("star comet", k=8, caller="eve")
    assert len(shown.hits) == 4 and _exposure_step(shown)["withheld"] == 4  # its own budget: half of 8
    assert _exposure_step(shown)["sources"]["docs"] == {"distinct": 4, "budget": 4}
    assert len(first.retrieve("star comet", k=4, caller="eve").hits) == 2  # the first's count unchanged


def test_one_caller_spelled_with_spaces_or_decomposed_accents_is_counted_once(small_docs, hashing_encoder):
    """A caller id is read with surrounding whitespace dropped (as scope labels are) and in NFC form.
    Until session 44 "eve", " eve" and "eve\\n" were three callers, each with its own budget, so a
    hard stop could be walked around by respelling who asks; a name of only whitespace (a missing
    name padded) was a caller of its own too and is now a one-line error."""
    from ragroute.context import QueryContext
    from ragroute.errors import InvalidArgumentError

    ledger, pipeline = _astro_half_budget(small_docs, hashing_encoder)
    pipeline.retrieve("telescope star galaxy", k=4, caller="eve")
    respelled = pipeline.retrieve("comet nebula orbit planet", k=4, caller=" eve\n")
    step = next(s for s in respelled.decision.trace if s.stage == "exposure")
    assert step.detail["caller"] == "eve" and ledger.callers() == {"eve"}
    assert ledger.distinct("eve", "astro") == 5 == ledger.distinct("eve ", "astro")  # the stop held
    ledger.admit("Jose\u0301", _hits("astro", [1]))  # decomposed: e + combining acute
    assert ledger.distinct("Jos\u00e9", "astro") == 1 and "Jos\u00e9" in ledger.callers()
    ledger.reset(" eve")
    assert ledger.distinct("eve", "astro") == 0
    for blank in (" ", "\t\n"):
        with pytest.raises(InvalidArgumentError, match="only whitespace"):
            QueryContext("q", caller=blank)
        with pytest.raises(InvalidArgumentError, match="only whitespace"):
            ledger.admit(blank, _hits("astro", [1]))
    assert QueryContext("q", caller="").caller == ""  # the anonymous caller stays as it is


def test_budgets_and_alert_levels_are_exact_for_fractions_a_float_cannot_hold():
    """In floats 0.29 x 100 is 28.999999999999996 (a budget of 28 where 29 was asked) and 0.07 x 100
    is 7.000000000000001 (the alert came at the 8th document, not the 7th), until session 51."""
    assert ExposureBudget(max_fraction=0.29, min_documents=1).limit(100) == 29
    assert ExposureBudget(max_fraction=0.58, min_documents=1).limit(100) == 58
    alerts: list[ExposureAlert] = []
    budget = ExposureBudget(per="source", max_fraction=0.5, min_documents=1, alert_at=0.07)
    ledger = ExposureLedger(budget, sizes={"a": 200}, on_alert=alerts.append)
    for i in range(7):
        ledger.admit("eve", _hits("a", [i]))
    assert [(a.distinct, a.budget) for a in alerts] == [(7, 100)]


def test_a_window_of_nan_or_a_number_past_a_floats_range_is_a_one_line_error():
    """window_s: .nan was accepted (nothing ever left the window, the alert never re-armed), and an
    integer past a float's range was an OverflowError, from loading and from `config check`, until
    session 51."""
    from ragroute.exposure import exposure_problems

    for bad, message in (
        ({"window_s": float("nan")}, "window_s must be > 0, not nan"),
        ({"window_s": 10**400}, "'window_s' must be a number, not an integer past a float's range"),
        ({"max_fraction": 10**400}, "'max_fraction' must be a number, not an integer past"),
    ):
        with pytest.raises(RagrouteError, match=message):
            ExposureBudget.from_settings(bad, "r.yaml: exposure")
        assert [p for p in exposure_problems(bad, "r.yaml: exposure") if message.split(",")[0] in p]
    with pytest.raises(RagrouteError, match="window_s must be > 0"):
        ExposureBudget(window_s=float("nan"))


def test_tripped_reads_a_sources_collection_once():
    """`tripped` mapped the source to its collection, then read that collection's name as a source
    again: a source "docs" searching the index "wiki" was sized as the other source called "wiki"
    (4 documents), and read tripped at 3 of its budget of 50 (until session 51)."""
    ledger = ExposureLedger(ExposureBudget(per="source", max_fraction=0.5, min_documents=1))
    ledger.add_sources(
        [
            Source("docs", build_index(_docs("w", 100), "bm25"), metadata={"corpus": "wiki"}),
            Source("wiki", build_index(_docs("o", 4), "bm25"), metadata={"corpus": "other"}),
        ]
    )
    ledger.admit("eve", _hits("docs", [1, 2, 3]))
    assert ledger.size("docs") == 100 and not ledger.tripped("eve", "docs")
    ledger.admit("eve", _hits("wiki", [1, 2]))
    assert ledger.tripped("eve", "wiki")  # 2 of half of 4


def test_a_call_waiting_for_the_ledger_does_not_set_a_documents_time_back():
    """admit read the clock before taking the lock: a call that read it, then waited while another
    call showed the same document later, wrote its earlier time over the later one. The document
    left the window early, and a hard stop of one document let a second through (until session 51)."""
    import threading

    class StallingClock(Clock):
        """Its first read from a worker thread lets another request run first (up to 0.3 s)."""

        def __init__(self) -> None:
            super().__init__()
            self.stall = True
            self.others: list[threading.Thread] = []

        def __call__(self) -> float:
            value = self.now
            if self.stall and threading.current_thread() is not threading.main_thread():
                self.stall = False
                later = threading.Thread(target=self.later)
                self.others.append(later)
                later.start()
                later.join(0.3)  # it may be waiting for the ledger's lock, held by this call
            return value

        def later(self) -> None:
            self.now = 10.0
            ledger.admit("eve", _hits("s", [1]))  # d1 shown at 10

    clock = StallingClock()
    budget = ExposureBudget(per="source", min_documents=1, window_s=100, hard_stop=True)
    ledger = ExposureLedger(budget, clock=clock)
    first = threading.Thread(target=lambda: ledger.admit("eve", _hits("s", [1])))  # d1 shown at 0
    first.start()
    first.join(5)
    for other in clock.others:
        other.join(5)
    assert len(clock.others) == 1
    clock.now = 105.0  # d1 was last shown at 10: in the window until 110
    assert ledger.distinct("eve", "s") == 1
    shown, step = ledger.admit("eve", _hits("s", [2]))
    assert shown == [] and step.detail["withheld"] == 1


def test_a_graph_hit_under_a_budget_explains_only_what_its_own_passage_holds(hashing_encoder):
    """A graph hit's explanation named the query's top facts, seeds and walk path of any passage:
    until session 53 a caller at a hard stop re-reading one passage was told facts of the passages
    withheld from it with each new query."""
    from test_graph import CORPUS

    index = build_index(CORPUS, "graph", encoder=hashing_encoder, name="kg")
    ledger = ExposureLedger(ExposureBudget(max_fraction=0.1, min_documents=1, hard_stop=True))
    budgeted = Pipeline([Source("kg", index)], FixedRouter({"kg": 1.0}), exposure=ledger)
    free = Pipeline([Source("kg", index)], FixedRouter({"kg": 1.0}))
    first = "Which river flows through the city where Ada Brennan was born?"
    assert [h.doc_id for h in budgeted.retrieve(first, k=3, caller="eve").hits] == ["p1"]  # budget spent
    again = "Ada Brennan Kellow Varne River Marl Hills"
    (shown,) = budgeted.retrieve(again, k=3, caller="eve").hits  # p1, re-read
    unbudgeted = next(h for h in free.retrieve(again, k=3, caller="eve").hits if h.doc_id == "p1")
    # without a budget the hit's explanation names other passages' facts (the test can see a leak)
    assert any("marl hills" in fact or "varne river" in fact for fact in unbudgeted.explain["facts"])
    assert "path" in unbudgeted.explain and "confined" not in unbudgeted.explain
    p1 = CORPUS[0].text.lower()
    assert shown.explain["facts"] and all(
        all(part in p1 for part in fact.rsplit(" (", 1)[0].split(" | ")) for fact in shown.explain["facts"]
    )
    named = set(shown.explain["seeds"]) | set(shown.explain["anchors"])
    assert named <= {"ada brennan", "kellow", "1901", "painter"}
    assert "path" not in shown.explain and shown.explain["confined"].startswith("an exposure budget")
    assert not [w for w in shown.explain["unmatched_terms"] if w not in p1]
