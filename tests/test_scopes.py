"""Caller scopes (issue #13 item 5): tests that try on purpose to leak a source or document outside
the caller's scope, through routers that prefer it, multi-route fusion, rerankers, graph walks, a
nested pipeline, the LlamaIndex and LangChain adapters and the ``none`` route. Every test asserts
zero leaked hits, and that nothing the caller may not read is named in the trace.

All offline and deterministic (the hashing encoder of ``conftest.py``).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import HashingEncoder, untimed

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.graph.index import WalkParams
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.pipeline import GateDecision, Pipeline, RoutingOptions
from ragroute.route.base import BaseRouter, decision_from_probs
from ragroute.route.prototype import PrototypeRouter
from ragroute.route.rules import Policy
from ragroute.route.sources import Source
from ragroute.scopes import caller_scopes, labels_of, visible
from ragroute.types import Document, Hit

SECRET = "payroll_vault"  # a source name that appears nowhere else, so any mention of it is a leak

PUBLIC_WORDS = "telescope star galaxy orbit planet comet nebula"
SECRET_WORDS = "salary payroll bonus ledger pension invoice audit"
MIXED_WORDS = "printer laptop password network vpn email driver"


def _docs(prefix: str, words: str, n: int = 8, access=None) -> list[Document]:
    vocab = words.split()
    docs = []
    for i in range(n):
        text = " ".join(vocab[(i + j) % len(vocab)] for j in range(10))
        metadata = {"topic": prefix}
        if access is not None:
            metadata["access"] = access
        docs.append(Document(id=f"{prefix}-{i}", text=text, title=f"{prefix} {i}", metadata=metadata))
    return docs


def _mixed_docs() -> list[Document]:
    """One store holding public documents and documents labelled ``it`` and ``hr,legal`` (flat)."""
    public = _docs("helpdesk", MIXED_WORDS, 6)
    it = _docs("it-internal", MIXED_WORDS + " " + SECRET_WORDS, 6, access=["it"])
    hr = _docs("hr-internal", SECRET_WORDS + " " + MIXED_WORDS, 6, access="hr,legal")
    return public + it + hr


@pytest.fixture
def encoder() -> HashingEncoder:
    return HashingEncoder()


@pytest.fixture
def sources(encoder) -> list[Source]:
    return [
        Source("science", build_index(_docs("sci", PUBLIC_WORDS), "dense", encoder=encoder, name="science")),
        Source(
            SECRET,
            build_index(_docs("pay", SECRET_WORDS), "hybrid", encoder=encoder, name=SECRET),
            description="salaries and payroll",
            access=frozenset({"hr"}),
        ),
        Source("helpdesk", build_index(_mixed_docs(), "hybrid", encoder=encoder, name="helpdesk")),
    ]


class FixedRouter(BaseRouter):
    """Sends every query to the given routes with the given probabilities."""

    name = "fixed"

    def __init__(self, routes: dict[str, float]):
        self.routes = routes
        self.labels = list(routes)

    def route_many(self, queries, *, query_vectors=None):
        return [
            decision_from_probs(self.labels, [self.routes[n] for n in self.labels], decided_by=self.name)
            for _ in queries
        ]


def assert_no_leak(result, scopes, forbidden_sources=(SECRET,)):
    """No hit from a hidden source or of a hidden document; no hidden source named anywhere."""
    for hit in result.hits:
        assert hit.source not in forbidden_sources or set(scopes) & {"hr"}, hit
        assert visible(labels_of(hit.metadata.get("access")), scopes), hit
    if not set(scopes) & {"hr"}:
        text = json.dumps(result.to_dict(), default=str)
        for name in forbidden_sources:
            assert name not in text
        assert "pay-" not in text  # no document of the hidden source either


def scope_step(result):
    steps = [s.detail for s in result.trace if s.stage == "scope"]
    assert len(steps) == 1
    return steps[0]


# --------------------------------------------------------------------------- semantics


def test_an_access_label_that_reads_as_everyone_is_warned_about(tmp_path):
    """`access: public` hid a document from every caller without the scope 'public' (the CLI's
    included), silently: build and config check say what the label does."""
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.scopes import open_sounding

    assert open_sounding({"Public", "hr", "*"}) == ["*", "Public"] and open_sounding({"hr"}) == []
    rows = [{"_id": "t1", "text": "vpn", "access": "public"}, {"_id": "t2", "text": "printer"}]
    corpus = tmp_path / "t.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    built = CliRunner().invoke(main, ["build", str(corpus), "--out", str(tmp_path / "i"), "--method", "bm25"])
    assert built.exit_code == 0, built.output
    said = "warning: 1 document (t1): the access label 'public' is a label like any other"
    assert said in built.stderr
    config = tmp_path / "r.yaml"
    config.write_text(f"sources:\n  t: {{index: {tmp_path / 'i'}, access: everyone}}\n")
    checked = CliRunner().invoke(main, ["config", "check", str(config)])
    assert checked.exit_code == 0, checked.output
    assert "source 't': this source: the access label 'everyone' is a label like any other" in checked.stderr


def test_labels_scopes_and_visibility():
    assert labels_of(None) == labels_of("") == labels_of([]) == frozenset()
    assert labels_of("hr") == {"hr"} and labels_of("hr, legal") == {"hr", "legal"}
    assert labels_of(["hr", "it,ops"]) == {"hr", "it", "ops"} and labels_of(7) == {"7"}
    assert visible((), ()) and visible((), ("hr",))  # no labels: public
    assert not visible({"hr"}, ()) and not visible({"hr"}, ("it",))  # no scopes: only public
    assert visible({"hr", "legal"}, ("legal",))
    assert caller_scopes("hr") == ("hr",) and caller_scopes(["it", "hr", "it"]) == ("hr", "it")
    assert QueryContext.of("q", scopes="hr").scopes == ("hr",)  # one label, not two letters
    for bad in ([""], ["a,b"], [3], 5):
        with pytest.raises(RagrouteError):
            QueryContext.of("q", scopes=bad)
    with pytest.raises(RagrouteError, match="access"):
        Source("x", object(), access=[1])  # type: ignore[list-item]


def test_redact_drops_every_mention_of_a_hidden_name():
    from ragroute.scopes import REDACTED, redact

    hidden = frozenset({"s"})
    assert redact(["a", "s"], hidden) == ["a"] and redact(("s", "a", "s"), hidden) == ["a"]
    assert redact("s", hidden) == REDACTED and redact("a", hidden) == "a" and redact(0.5, hidden) == 0.5
    detail = {
        "chosen": ["a", "s"],
        "routes": {"a": 0.6, "s": 0.4},
        "steps": [{"best": "s", "p": 0.9}, {"best": "a", "p": 0.7}, ["s", ("x", "s")], "s", "a"],
        "s": {"a": 1},
    }
    assert redact(detail, hidden) == {
        "chosen": ["a"],
        "routes": {"a": 0.6},
        "steps": [{"redacted": REDACTED}, {"best": "a", "p": 0.7}, [["x"]], "a"],
    }
    assert redact({"best": "s", "p": 0.9}, hidden) == {"redacted": REDACTED}
    assert redact(detail, frozenset()) is detail  # nothing hidden: the value itself


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize("scopes", [(), ("it",), ("sales", "legal")])
def test_a_router_strongly_preferring_a_forbidden_source_never_reaches_it(sources, scopes):
    router = FixedRouter({SECRET: 0.9, "science": 0.06, "helpdesk": 0.02, "none": 0.02})
    pipeline = Pipeline(sources, router)
    result = pipeline.retrieve("salary payroll bonus ledger", k=5, scopes=scopes)
    assert SECRET not in result.decision.chosen and SECRET not in result.decision.routes
    assert result.decision.chosen == ["science"]
    assert sum(result.decision.routes.values()) == pytest.approx(1.0)  # renormalised over the allowed
    assert result.decision.routes["science"] == pytest.approx(0.6)
    assert scope_step(result) == {"scopes": sorted(scopes), "hidden_sources": 1}
    assert_no_leak(result, scopes)
    # the same query with the scope: the source is routed to (the test can see a leak)
    allowed = pipeline.retrieve("salary payroll bonus ledger", k=5, scopes=["hr"])
    assert allowed.decision.chosen == [SECRET] and allowed.hits[0].source == SECRET
    assert scope_step(allowed) == {"scopes": ["hr"], "hidden_sources": 0}


class PayrollMindedLLM:
    """Answers the hidden source whenever the prompt offers it, else helpdesk; keeps its prompts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return SECRET if SECRET in prompt else "helpdesk"


@pytest.mark.parametrize("ensemble", [False, True])
def test_an_llm_router_offers_a_scoped_caller_only_the_sources_it_may_read(sources, encoder, ensemble):
    """The LLM spends one choice per query: offered a hidden source, its choice was dropped and the
    visible routes were left tied (chosen by name, the none route among them), so the prompt of a
    caller who may not read a source must not offer it."""
    from ragroute.route.ensemble import EnsembleRouter
    from ragroute.route.llm import LlmRouter

    llm = PayrollMindedLLM()
    router = LlmRouter(sources, llm)
    if ensemble:
        router = EnsembleRouter([router, FixedRouter({"science": 0.5, SECRET: 0.5})])
    pipeline = Pipeline(sources, router)
    result = pipeline.retrieve("printer vpn password", k=3, scopes=["it"])
    assert SECRET not in llm.prompts[-1] and "helpdesk" in llm.prompts[-1] and "science" in llm.prompts[-1]
    assert result.decision.chosen[0] == "helpdesk" and result.hits[0].source == "helpdesk"
    assert_no_leak(result, ["it"])
    # a caller holding the scope is offered the source (and the LLM takes it)
    allowed = pipeline.retrieve("printer vpn password", k=3, scopes=["hr"])
    assert SECRET in llm.prompts[-1] and allowed.decision.chosen[0] == SECRET
    # one batch, two callers: each routed with its own offer
    both = pipeline.retrieve_many(
        [QueryContext.of("printer vpn", scopes=["it"]), QueryContext.of("printer vpn", scopes=["hr"])], k=3
    )
    assert [r.decision.chosen[0] for r in both] == ["helpdesk", SECRET]


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_retrieval_gate_signal_asks_an_llm_router_only_of_the_sources_the_caller_may_see(
    sources, encoder, ensemble
):
    """The gate's retrieval signal routed every caller's query with the pipeline's router as it is:
    until session 51 an LLM router's prompt then listed the hidden source (name and description),
    and its router_max read the visible routes left tied when the LLM took the hidden one (1/3 for
    a caller outside it, where the route stage, offering only what it may see, routed at 0.9)."""
    from ragroute.gate.signals import make_signal
    from ragroute.gate.trained import ThresholdGate
    from ragroute.route.ensemble import EnsembleRouter
    from ragroute.route.llm import LlmRouter

    llm = PayrollMindedLLM()
    router = LlmRouter(sources, llm)
    if ensemble:
        router = EnsembleRouter([router, FixedRouter({"science": 0.5, SECRET: 0.5})])
    gate = ThresholdGate(make_signal("retrieval", sources=sources), "router_max", above=2.0)
    pipeline = Pipeline(sources, router, encoder=encoder, gate=gate)
    result = pipeline.retrieve("printer vpn password", k=3, scopes=["it"])
    assert llm.prompts and not any(SECRET in prompt or "salaries" in prompt for prompt in llm.prompts)
    assert_no_leak(result, ["it"])
    if not ensemble:
        values = [step.detail for step in result.trace if step.stage == "gate"][0]["values"]
        assert values["retrieval.router_max"] == pytest.approx(0.9)
    pipeline.retrieve("printer vpn password", k=3, scopes=["hr"])
    assert any(SECRET in prompt for prompt in llm.prompts)  # a caller holding the scope is offered it


def test_the_router_trace_of_a_scoped_caller_holds_only_what_it_may_see(sources):
    """Raw numbers computed beside a hidden source gave its share away (raw p of the visible best
    against the renormalised one), and redacting only when the hidden source won told that it won:
    a caller without every scope gets one shape, the visible renormalised routes, whatever the query."""
    from ragroute.scopes import REDACTED

    shapes = []
    hidden_wins = {SECRET: 0.9, "science": 0.06, "helpdesk": 0.04}
    visible_wins = {SECRET: 0.1, "science": 0.9}
    for routes in (hidden_wins, visible_wins):
        result = Pipeline(sources, FixedRouter(routes)).retrieve("salary payroll", k=3, scopes=["it"])
        steps = [s.detail for s in result.decision.trace if s.stage == "router"]
        assert steps == [{"routes": result.decision.routes, "redacted": REDACTED}]
        assert result.decision.signals == {"redacted": REDACTED}
        shapes.append(sorted(steps[0]))
        assert_no_leak(result, ["it"])
    assert shapes[0] == shapes[1]
    full = Pipeline(sources, FixedRouter(hidden_wins)).retrieve("salary", k=3, scopes=["hr"])
    assert [s.detail for s in full.decision.trace if s.stage == "router"][0] != {"redacted": REDACTED}


def test_the_retrieval_gate_signal_reads_only_sources_the_caller_may_see(sources, encoder):
    """The gate's retrieval-confidence values were the hidden source's own scores for a caller
    outside it: a word oracle through gate reasons and signals."""
    from ragroute.context import QueryContext
    from ragroute.gate.signals import RetrievalConfidenceSignal

    signal = RetrievalConfidenceSignal(sources, router=FixedRouter({SECRET: 0.8, "science": 0.2}), k=3)
    query = "salary payroll bonus ledger pension invoice audit"
    contexts = [QueryContext.of(query, scopes=scopes) for scopes in ((), ("hr",))]
    for context in contexts:
        context.set_vector(encoder, encoder.encode_queries([query])[0])
    outside, inside = signal.values(contexts, None)
    alone = RetrievalConfidenceSignal([s for s in sources if s.name != SECRET], k=3)
    assert outside[:3].tolist() == alone.values(contexts[:1], None)[0][:3].tolist()  # as if absent
    assert outside[3] == pytest.approx(1.0)  # the router's best visible route, renormalised
    assert inside[3] == pytest.approx(0.8) and inside[2] != outside[2]  # its top joins the spread


def test_the_retrieval_gate_signal_does_not_read_0_when_a_hidden_source_wins(sources, encoder):
    """Beside a hidden winner every visible route probability rounds to 0: until session 49 the
    gate's router_max and router_none then read exactly 0 (in the gate's trace step, and in its
    decision), which told a caller outside the hidden source that it had won. They are now the
    router's own softmax over the visible routes, as the route stage renormalises them."""
    from ragroute.gate.signals import RetrievalConfidenceSignal

    router = PrototypeRouter(sources, encoder)
    router.config.temperature = 0.05
    query = "salary payroll bonus ledger pension invoice audit printer"
    routed = router.route(query)
    assert routed.chosen == [SECRET] and routed.routes["science"] == routed.routes["helpdesk"] == 0
    signal = RetrievalConfidenceSignal(sources, router=router, k=3)
    (values,) = signal.values([QueryContext.of(query)], None)
    decision = Pipeline(sources, router, encoder=encoder).decide(query)  # what the caller routes by
    assert values[3] == pytest.approx(max(decision.routes.values()), abs=1e-9)
    assert values[3] > 0.5


def test_a_prototype_router_and_decide_hide_the_source(sources, encoder):
    router = PrototypeRouter(sources, encoder)
    pipeline = Pipeline(sources, router, encoder=encoder)
    assert router.route("salary payroll bonus").chosen == [SECRET]  # unscoped, it prefers it
    for query in ["salary payroll bonus pension", "ledger audit invoice", "payroll_vault salary"]:
        result = pipeline.retrieve(query, k=6)
        assert_no_leak(result, ())
        decision = pipeline.decide(query)
        assert SECRET not in json.dumps(decision.to_dict())
    assert pipeline.decide("salary payroll", scopes=["hr"]).chosen == [SECRET]


def test_a_hidden_winner_that_rounds_the_visible_routes_to_0_keeps_the_routers_order(sources, encoder):
    """Beside a hidden source with p ~ 1 every visible route rounds to 0; until session 39 the
    caller's sources then shared the query evenly (saying that a hidden source had won, and
    dropping the router's order). Now the visible routes are the router's own softmax over them,
    through the unrounded log-probabilities routers give (``Decision.log_routes()``)."""
    from ragroute.route.confidence import ConfidenceConfig, ConfidenceRouter
    from ragroute.route.ensemble import EnsembleRouter

    query = "salary payroll bonus ledger pension invoice audit printer"
    prototype = PrototypeRouter(sources, encoder)
    prototype.config.temperature = 0.05
    confidence = ConfidenceRouter(sources, ConfidenceConfig(temperature=0.05))
    for router in (prototype, confidence, EnsembleRouter([prototype, confidence])):
        routed = router.route(query)
        assert routed.chosen == [SECRET] and routed.routes["science"] == routed.routes["helpdesk"] == 0
        logs = routed.log_routes()  # computed on demand (routing pays for them only when hidden)
        assert sum(np.exp(list(logs.values()))) == pytest.approx(1.0)
        want = 1 / (1 + np.exp(logs["science"] - logs["helpdesk"]))  # the softmax over the two
        assert 0.5 < want < 1  # helpdesk holds the query's "printer": preferred, not certain
        if router is prototype:  # the same from the similarities it shows (rounded to 4 places)
            sims = routed.signals["similarity"]
            assert want == pytest.approx(
                1 / (1 + np.exp((sims["science"] - sims["helpdesk"]) / 0.05)), abs=1e-2
            )
        decision = Pipeline(sources, router, encoder=encoder).decide(query)  # no scopes: SECRET hidden
        assert decision.routes["helpdesk"] == pytest.approx(want, abs=1e-9)
        assert decision.routes["science"] == pytest.approx(1 - want, abs=1e-9)
        assert SECRET not in json.dumps(decision.to_dict())
        assert "log_routes" not in decision.to_dict() and "log_routes" not in repr(decision)


def test_multi_route_fusion_always_routes_and_documents_of_a_mixed_store(sources, encoder):
    for fusion in ("rrf", "calibrated", "minmax"):
        router = FixedRouter({SECRET: 0.34, "science": 0.33, "helpdesk": 0.33})
        options = RoutingOptions(threshold=0.0, max_routes=3, fusion=fusion, always=(SECRET,))
        pipeline = Pipeline(sources, router, options=options)
        for scopes in [(), ("it",), ("legal",)]:
            result = pipeline.retrieve("salary payroll printer password telescope", k=20, scopes=scopes)
            assert set(result.decision.chosen) == {"science", "helpdesk"}
            assert_no_leak(result, scopes)
            ids = {h.doc_id.split("-")[0] for h in result.hits if h.source == "helpdesk"}
            assert ("it" in ids) == ("it" in scopes) and ("hr" in ids) == ("legal" in scopes)
            assert not [s for s in result.trace if s.stage == "scope-check"]  # nothing got that far
    everything = pipeline.retrieve("salary payroll printer", k=40, scopes=["hr", "it"])
    assert {h.source for h in everything.hits} == {SECRET, "science", "helpdesk"}


def test_editing_a_hits_access_labels_changes_nothing_the_index_matches(encoder):
    """A caller who appends to the access-label list of a hit it may read (or to any list or mapping
    in a hit's metadata) must not widen what the index shows later callers: hits carried the
    stored lists until session 40, and the next rebuilt access index read the edited list."""
    docs = [
        Document(id=f"it-{i}", text="printer vpn password", metadata={"access": ["it"], "m": {"k": [1]}})
        for i in range(3)
    ]
    index = build_index(docs, "dense", encoder=encoder, name="helpdesk")
    for hit in index.search_contexts([QueryContext.of("printer vpn", scopes=["it"])], k=3)[0]:
        hit.metadata["access"].append("hr")
        hit.metadata["m"]["k"].append(2)
    index.add(
        [Document(id="it-new", text="network driver", metadata={"access": ["it"]})]
    )  # access index rebuilt
    assert index.search_contexts([QueryContext.of("printer vpn", scopes=["hr"])], k=3)[0] == []
    assert [d.metadata for d in index.store.documents][:1] == [{"access": ["it"], "m": {"k": [1]}}]


def test_the_documents_an_index_holds_refuse_edits_of_their_metadata(encoder, tmp_path):
    """Editing a held document's metadata in place (``index.documents``) changed hits and the
    post-search scope check at once, but filters and the access index only when their caches were
    next rebuilt (a document hidden from the public yet not found by the new label's filter). Such
    an edit now raises in one line; reading, copying and saving are unchanged."""
    docs = [Document(id="t-1", text="printer vpn", metadata={"category": "vpn", "access": ["it"]})]
    index = build_index(docs, "dense", encoder=encoder, name="helpdesk")
    held = index.documents[0]
    for edit in (
        lambda: held.metadata.update(access="secret"),
        lambda: held.metadata.__setitem__("category", "x"),
        lambda: held.metadata.pop("access"),
        lambda: held.metadata["access"].append("hr"),
    ):
        with pytest.raises(RagrouteError, match=r"^an index's documents are read-only, their metadata too"):
            edit()
    assert docs[0].metadata == {"category": "vpn", "access": ["it"]}  # the caller's own stay writable
    docs[0].metadata["access"].append("hr")
    assert held.metadata == {"category": "vpn", "access": ["it"]}
    mine = dict(held.metadata) | held.to_dict()["metadata"]
    mine["category"] = "printers"
    held.to_dict()["metadata"]["access"].append("x")
    assert held.metadata["category"] == "vpn" and json.loads(json.dumps(held.metadata)) == held.metadata
    assert index.search_contexts(
        [QueryContext.of("printer", scopes=["it"], filters={"category": "vpn"})], k=1
    )[0]
    save_index(index, tmp_path / "i")
    loaded = load_index(tmp_path / "i", encoder=encoder)
    with pytest.raises(RagrouteError, match="read-only"):
        loaded.documents[0].metadata["access"].append("hr")
    assert loaded.documents[0].metadata == {"category": "vpn", "access": ["it"]}


def test_the_none_route_and_rules_naming_a_forbidden_source(sources):
    # A router whose whole probability went to a hidden source (a softmax at a low temperature
    # underflows the others to 0): the caller's sources share it evenly. Until session 37 the query
    # went nowhere, which also said that a hidden source had won (at 0.9 it searched the others).
    pipeline = Pipeline(sources, FixedRouter({SECRET: 1.0, "science": 0.0, "helpdesk": 0.0}))
    result = pipeline.retrieve("salary payroll", k=5)
    assert result.decision.routes == {"science": 0.5, "helpdesk": 0.5}
    assert sorted(result.decision.chosen) == ["helpdesk", "science"] and result.hits
    assert scope_step(result)["hidden_sources"] == 1
    assert_no_leak(result, ())
    alone = Pipeline(sources, FixedRouter({SECRET: 1.0}))  # routes naming only a hidden source: none
    assert alone.retrieve("salary payroll", k=5).decision.chosen == ["none"]
    policy = Policy.from_yaml(
        "signals:\n  pay: {type: keywords, any: [salary]}\n"
        f"rules:\n  - {{name: payroll, when: pay, then: {{route: {SECRET}}}}}\n"
    )
    ruled = Pipeline(sources, FixedRouter({"science": 1.0}), policy=policy)
    result = ruled.retrieve("salary of a telescope", k=5)
    assert result.decision.chosen == ["none"] and result.hits == []
    assert result.decision.decided_by == "rule"  # "rule:payroll" until session 37: which rule fired
    assert_no_leak(result, ())
    assert ruled.retrieve("salary of a telescope", k=5, scopes=["hr"]).decision.chosen == [SECRET]


def test_a_gate_that_skips_retrieval_still_records_the_scope(sources):
    class No:
        name = "no"

        def gate_many(self, contexts):
            return [GateDecision("answer", 0.0) for _ in contexts]

    pipeline = Pipeline(sources, FixedRouter({SECRET: 1.0}), gate=No())
    result = pipeline.retrieve("salary", k=3, scopes=["it"])
    assert result.hits == [] and scope_step(result) == {"scopes": ["it"], "hidden_sources": 1}


def test_sources_that_failed_to_open_are_not_named_to_callers_outside_them(sources):
    from ragroute.route.sources import SourceProblem

    problems = [SourceProblem("hr_archive", "index missing", frozenset({"hr"})), SourceProblem("w", "down")]
    pipeline = Pipeline(sources, FixedRouter({"science": 1.0}), problems=problems)
    result = pipeline.retrieve("telescope", k=2)
    assert result.decision.signals["unavailable_sources"] == {"w": "down"}
    assert "hr_archive" not in json.dumps(result.to_dict())
    assert scope_step(result)["hidden_sources"] == 2
    assert (
        "hr_archive"
        in pipeline.retrieve("telescope", k=2, scopes=["hr"]).decision.signals["unavailable_sources"]
    )


# --------------------------------------------------------------------------- rerankers and the final check


class SpyReranker:
    """Remembers what it was shown; ``inject`` adds hits of its own (a reranker gone wrong)."""

    name = "spy"

    def __init__(self, inject=()):
        self.seen: list[Hit] = []
        self.inject = list(inject)

    def rerank(self, context, hits, k):
        self.seen.extend(hits)
        return (list(self.inject) + list(hits))[:k]


def test_a_reranker_sees_only_in_scope_hits_and_cannot_add_forbidden_ones(sources):
    leaked = [
        Hit("pay-0", 99.0, SECRET, text="salary"),
        Hit("it-internal-0", 98.0, "helpdesk", metadata={"access": ["it"]}),
        Hit("x-1", 97.0, "no-such-source"),
        Hit("helpdesk-0", 96.0, "helpdesk"),
    ]
    reranker = SpyReranker(inject=leaked)
    router = FixedRouter({SECRET: 0.5, "helpdesk": 0.5})
    pipeline = Pipeline(sources, router, reranker=reranker, options=RoutingOptions(threshold=0.0))
    result = pipeline.retrieve("salary payroll printer password", k=8)
    assert reranker.seen and all(h.source == "helpdesk" for h in reranker.seen)
    assert all(not h.metadata.get("access") for h in reranker.seen)
    # a reranker that adds hits is broken: the fused order is kept (until session 45 its in-scope
    # additions were kept and the final scope check dropped the others), and the trace names no hit
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in reranker.seen][: len(result.hits)]
    assert_no_leak(result, ())
    (rerank,) = [s.detail for s in result.trace if s.stage == "rerank"]
    assert rerank["error"] == "ValueError: returned 3 hits that were not among its candidates"
    assert rerank["kept"] == "fused order"


def test_the_final_scope_check_drops_a_candidate_a_reranker_relabelled(sources):
    """A reranker that hands back a candidate with other access labels is caught after it."""

    class Relabelling:
        name = "relabelling"

        def rerank(self, context, hits, k):
            return [replace(h, metadata={**h.metadata, "access": ["it"]}) for h in hits[:1]] + hits[1:k]

    router = FixedRouter({SECRET: 0.5, "helpdesk": 0.5})
    pipeline = Pipeline(sources, router, reranker=Relabelling(), options=RoutingOptions(threshold=0.0))
    result = pipeline.retrieve("salary payroll printer password", k=8)
    assert result.hits and all(not h.metadata.get("access") for h in result.hits)
    assert [s.detail for s in result.trace if s.stage == "scope-check"] == [{"dropped": 1}]


def test_a_reread_counts_each_dropped_hit_once():
    """A parents reranker reads again, deeper, when one document's chunks fill the pool; until
    session 50 the scope check's count added both reads, so a hidden hit a careless source returned
    to both read as two dropped hits."""
    from ragroute.rerank.parents import ParentsReranker

    class Chunks:
        def search_many(self, queries, k=10, *, filters=None):
            chunks = [Hit(f"a#{i}", 10.0 - i / 100, parent_id="a") for i in range(30)]
            chunks[10] = Hit("b#0", 9.9 - 10 / 100, parent_id="b")
            return [chunks[:k] for _ in queries]

    class Careless:
        def search_many(self, queries, k=10, *, filters=None):
            return [[Hit("closed", 1.0, metadata={"access": "finance"})] for _ in queries]

    sources = [Source("chunks", Chunks()), Source("careless", Careless())]
    router = FixedRouter({"chunks": 0.5, "careless": 0.5})
    pipeline = Pipeline(sources, router, reranker=ParentsReranker(), options=RoutingOptions(threshold=0.0))
    result = pipeline.retrieve("anything", k=2)
    assert [h.parent_id for h in result.hits] == ["a", "b"]
    assert [s.stage for s in result.trace].count("reread") == 1
    assert [s.detail for s in result.trace if s.stage == "scope-check"] == [{"dropped": 1}]


def test_a_source_that_ignores_filters_is_checked_after(sources):
    class Careless:
        """Returns labelled documents whatever the filters say."""

        name = "careless"

        def search_many(self, queries, k=10, *, filters=None):
            return [
                [
                    Hit("open-1", 2.0, "careless", text=q),
                    Hit("closed-1", 3.0, "careless", metadata={"access": "finance"}),
                ]
                for q in queries
            ]

    pipeline = Pipeline([*sources, Source("careless", Careless())], FixedRouter({"careless": 1.0}))
    result = pipeline.retrieve("anything", k=5)
    assert [h.doc_id for h in result.hits] == ["open-1"]
    assert [s.detail for s in result.trace if s.stage == "scope-check"] == [{"dropped": 1}]
    # its retrieve step counts and scores only what was kept (3.0 was the hidden document's score)
    (step,) = [s.detail for s in result.trace if s.detail.get("source") == "careless"]
    assert step["hits"] == 1 and step["top_score"] == 2.0
    assert {h.doc_id for h in pipeline.retrieve("anything", k=5, scopes=["finance"]).hits} == {
        "closed-1",
        "open-1",
    }


def test_a_framework_sources_hidden_documents_do_not_keep_it_routed_for_a_filter(sources):
    """A source that lists its documents but cannot tell its keys (a framework's retriever): until
    session 49 the keys of every document it listed counted, so a filter on a key only a hidden
    document held kept the source routed (no ``filters`` step naming it), where without that
    document it was routed around: the trace told a caller that a document it may not read holds
    the key."""

    class Framework:
        name = "fw"

        def __init__(self, documents):
            self.documents = documents

        def search_many(self, queries, k=10, *, filters=None):
            hits = [Hit(d.id, 1.0, "fw", text=d.text, metadata=dict(d.metadata)) for d in self.documents]
            return [list(hits) for _ in queries]

    public = Document(id="p1", text="printer laptop", metadata={"topic": "it"})
    secret = Document(id="s1", text="salary", metadata={"salary_band": "B", "access": "hr"})

    def decision(documents, scopes=()):
        pipeline = Pipeline(
            [sources[0], Source("fw", Framework(documents))],
            FixedRouter({"science": 0.5, "fw": 0.5}),
            options=RoutingOptions(threshold=0.0),
        )
        context = QueryContext.of("salary", filters={"salary_band": "B"}, scopes=scopes)
        return pipeline.retrieve(context, k=3).decision.to_dict()

    assert untimed(decision([public, secret])) == untimed(decision([public]))
    assert decision([public, secret])["chosen"] == ["none"]
    assert decision([public, secret], ("hr",))["chosen"] == ["fw"]  # the hr caller's filter matches it


def test_a_sources_error_never_names_a_document_the_caller_may_not_read(sources):
    """A retriever that does not filter by scope returned a labelled document with a broken score:
    the source's error (in the trace of every caller that chose it) named that document's id until
    session 49, and its score's text."""

    class Careless:
        name = "careless"

        def __init__(self, score):
            self.score = score

        def search_many(self, queries, k=10, *, filters=None):
            closed = Hit("closed-secret", 1.0, "careless", metadata={"access": "finance"})
            closed.score = self.score  # as a framework might hand it over
            return [[Hit("open-1", 2.0, "careless", text=q), closed] for q in queries]

    for score in (float("nan"), "salary 90k"):
        pipeline = Pipeline([sources[0], Source("careless", Careless(score))], FixedRouter({"careless": 1.0}))
        result = pipeline.retrieve("anything", k=5)
        (step,) = [s.detail for s in result.trace if s.detail.get("source") == "careless"]
        assert "a hit with access labels has score" in step["error"]
        text = json.dumps(result.to_dict(), default=str)
        assert "closed-secret" not in text and "90k" not in text


# --------------------------------------------------------------------------- graph walks

# Two corpora in one graph. The public passages link, through the phrase "Kellow", to a passage
# of the "geo" corpus; "Zorbin Vault" and "Crown of Osric" occur only in labelled passages.
GRAPH = [
    Document(id="g1", title="Ada Brennan", text="Ada Brennan was a painter. She was born in Kellow in 1901."),
    Document(
        id="g2",
        title="Kellow",
        text="Kellow is a market town. The Varne River flows through Kellow. "
        "The Zorbin Vault lies under Kellow.",
        metadata={"access": ["geo"]},
    ),
    Document(id="g3", title="Varne River", text="The Varne River rises in the Marl Hills and meets the sea."),
    Document(
        id="g4",
        title="Zorbin Vault",
        text="The Zorbin Vault holds the Crown of Osric. Kellow guards the Zorbin Vault.",
        metadata={"access": "vault"},
    ),
    Document(id="g5", title="Painting", text="Painting is the practice of applying paint to a surface."),
]
HIDDEN_WORDS = ("g2", "g4", "zorbin", "osric")


def _graph_leaks(hits) -> list[str]:
    """Hidden passages, phrases or links named by the hits (the query's own words aside)."""
    shown = [
        {**h.to_dict(), "explain": {k: v for k, v in h.explain.items() if k != "unmatched_terms"}}
        for h in hits
    ]
    text = json.dumps(shown, default=str).lower()
    leaks = [
        w for w in HIDDEN_WORDS if f'"{w}"' in text or f"passage {w}" in text or (len(w) > 2 and w in text)
    ]
    for hit in hits:  # "The Varne River flows through Kellow" is said only in g2
        path = hit.explain.get("path") or []
        leaks += [f"{a} -> {b}" for a, b in zip(path, path[1:]) if {a, b} == {"kellow", "varne river"}]
    return leaks


WALKS = {
    "default": WalkParams(),
    "static": WalkParams.static(),
    "boost": WalkParams(fact_passage_boost=1.0, passage_prior=0.5),
    "power": WalkParams(damping=0.85),  # above the push method's limit: power iteration
    "lexical": WalkParams(lexical_edges=50.0, anchor_similarity=0.1),
}


@pytest.mark.parametrize("walk", list(WALKS))
def test_a_graph_walk_never_returns_or_names_a_passage_of_a_forbidden_corpus(encoder, walk):
    graph = build_index(GRAPH, "graph", encoder=encoder, name="kg")
    graph.walk = WALKS[walk]
    queries = [
        "Which river flows through the city where Ada Brennan was born?",
        "What does the Zorbin Vault under Kellow hold?",
        "Crown of Osric Zorbin Vault Kellow",
        "Kellow",
    ]
    unscoped = graph.search_contexts([QueryContext.of(q) for q in queries], k=5)
    for hits in unscoped:
        assert {h.doc_id for h in hits} <= {"g1", "g3", "g5"}
        assert _graph_leaks(hits) == []
    # the same queries with the scopes reach the labelled passages (the test can see a leak)
    geo = graph.search_contexts([QueryContext.of(q, scopes=["geo"]) for q in queries], k=5)
    assert "g2" in {h.doc_id for h in geo[0]} and not any(h.doc_id == "g4" for hits in geo for h in hits)
    both = graph.search_contexts([QueryContext.of(queries[2], scopes=["geo", "vault"])], k=5)[0]
    assert "g4" in {h.doc_id for h in both}
    # a direct search (no context) is not scoped: whoever holds the index reads it all
    assert "g2" in {h.doc_id for h in graph.search(queries[0], k=5)}


def test_a_graph_walk_shows_a_fact_filter_only_visible_facts(encoder):
    graph = build_index(GRAPH, "graph", encoder=encoder, name="kg")
    shown = []

    def keep_all(text, facts):
        shown.extend(facts)
        return facts

    graph.fact_filter = keep_all
    hits = graph.search_contexts([QueryContext.of("What does the Zorbin Vault under Kellow hold?")], k=5)[0]
    assert _graph_leaks(hits) == []
    assert not [f for f in shown if "zorbin" in str(f) or "osric" in str(f)]


def test_a_scoped_walk_does_not_depend_on_the_facts_of_a_hidden_passage(encoder):
    """The fact boost spreads a fact's mass over the passages carrying it: only those the caller
    may read (a hidden one took its share, so what it holds showed in the visible scores)."""
    import scipy.sparse as sp

    graph = build_index(GRAPH, "graph", encoder=encoder, name="kg")
    graph.walk = WalkParams(fact_passage_boost=1.0)
    queries = ["Which river flows through the city where Ada Brennan was born?", "Kellow"]

    def scores():
        found = graph.search_contexts([QueryContext.of(q, scopes=["geo"]) for q in queries], k=5)
        return [[(h.doc_id, h.score) for h in hits] for hits in found]

    before = scores()
    # g5 (public) gets no mass and comes last; g4 ("vault") never
    assert [[doc for doc, _ in hits] for hits in before] == [["g1", "g2", "g3", "g5"]] * 2
    hidden = [d.id for d in GRAPH].index("g4")  # "vault": hidden from a "geo" caller
    facts = graph.tables.fact_passages.toarray()
    assert 0 < facts[:, hidden].sum() < len(facts)  # it shares some facts with visible passages
    for carried in (1.0, 0.0):  # the hidden passage carries every fact, then none
        facts[:, hidden] = carried
        graph.tables.fact_passages = sp.csr_array(facts)
        assert scores() == before


def test_a_graph_over_two_corpora_as_a_source_in_a_pipeline(encoder, sources):
    graph = Source("kg", build_index(GRAPH, "graph", encoder=encoder, name="kg"))
    pipeline = Pipeline(
        [*sources, graph], FixedRouter({"kg": 0.7, SECRET: 0.3}), options=RoutingOptions(threshold=0.0)
    )
    result = pipeline.retrieve("Which river flows through the city where Ada Brennan was born?", k=5)
    assert result.hits and {h.doc_id for h in result.hits} <= {"g1", "g3", "g5"}
    assert _graph_leaks(result.hits) == []
    assert_no_leak(result, ())


# --------------------------------------------------------------------------- nesting


def test_a_nested_pipeline_applies_the_callers_scope_inside(sources, encoder):
    inner = Pipeline(
        sources, FixedRouter({SECRET: 0.9, "helpdesk": 0.1}), options=RoutingOptions(threshold=0.0)
    )
    restricted = Source(
        "restricted",
        build_index(_docs("restricted", SECRET_WORDS), "bm25", name="restricted"),
        access=frozenset({"board"}),
    )
    outer = Pipeline(
        [Source("inner", inner), restricted],
        FixedRouter({"restricted": 0.6, "inner": 0.4}),
        options=RoutingOptions(threshold=0.0),
    )
    for scopes in [(), ("it",)]:
        result = outer.retrieve("salary payroll printer password", k=10, scopes=scopes)
        assert result.decision.chosen == ["inner"] and result.hits
        assert_no_leak(result, scopes, forbidden_sources=(SECRET, "restricted"))
        nested = [s.detail["decision"] for s in result.trace if s.stage == "retrieve"][0]
        assert [s for s in nested["trace"] if s["stage"] == "scope"][0]["scopes"] == list(scopes)
    full = outer.retrieve("salary payroll printer password", k=30, scopes=["hr", "board", "it"])
    assert {h.source for h in full.hits} == {"inner", "restricted"}
    assert any(h.explain["inner_source"] == SECRET for h in full.hits)


# --------------------------------------------------------------------------- integrations


def test_llamaindex_retrievers_carry_the_callers_scope(sources, encoder):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import QueryBundle, TextNode

    from ragroute.integrations.llamaindex import (
        IndexLlamaRetriever,
        LlamaRetrieverAdapter,
        RoutedLlamaRetriever,
        llama_scope_filters,
    )
    from ragroute.integrations.llamaindex_embedding import EncoderEmbedding
    from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever

    pipeline = Pipeline(
        sources, FixedRouter({SECRET: 0.8, "helpdesk": 0.2}), options=RoutingOptions(threshold=0.0)
    )
    routed = RoutedLlamaRetriever(pipeline, similarity_top_k=10)
    nodes = routed.retrieve(QueryBundle("salary payroll printer"))
    assert nodes and all(n.node.metadata["source"] == "helpdesk" for n in nodes)
    assert all(not n.node.metadata.get("access") for n in nodes)
    assert SECRET not in json.dumps(routed.last_decision.to_dict())
    hr = routed.with_scopes(["hr"])
    assert {n.node.metadata["source"] for n in hr.retrieve(QueryBundle("salary payroll printer"))} >= {SECRET}
    assert routed.scopes == () and hr.scopes == ("hr",)
    # the public retriever's log never holds the hr caller's decision (it named the hidden source)
    assert SECRET not in json.dumps(routed.last_decision.to_dict()) and SECRET in hr.last_decision.chosen
    assert IndexLlamaRetriever(sources[1], similarity_top_k=3).retrieve(QueryBundle("salary")) == []

    class Yes:
        name = "yes"

        def gate_many(self, contexts):
            return [GateDecision("retrieve", 1.0) for _ in contexts]

    gated = GatedLlamaRetriever(Yes(), pipeline, k=10)
    assert {n.node.metadata["source"] for n in gated.retrieve(QueryBundle("salary payroll printer"))} == {
        "helpdesk"
    }
    gated_hr = GatedLlamaRetriever(Yes(), pipeline, k=10, scopes=["hr"])
    assert SECRET in {n.node.metadata["source"] for n in gated_hr.retrieve(QueryBundle("salary payroll"))}
    labelled = IndexLlamaRetriever(sources[2].retriever, similarity_top_k=18, scopes=["it"])
    ids = {n.node.metadata["doc_id"].split("-")[0] for n in labelled.retrieve(QueryBundle("printer salary"))}
    assert ids == {"helpdesk", "it"}

    # an external LlamaIndex store mixing public and labelled nodes, as a source
    docs = _mixed_docs()
    store = VectorStoreIndex(
        [TextNode(id_=d.id, text=d.text, metadata={"title": d.title, **d.metadata}) for d in docs],
        embed_model=EncoderEmbedding(encoder),
    )
    after = LlamaRetrieverAdapter(store, name="store")
    pushed = LlamaRetrieverAdapter(store, name="store", scope_filters=llama_scope_filters)
    for adapter in (after, pushed):
        outer = Pipeline([Source("store", adapter)], FixedRouter({"store": 1.0}))
        for scopes in [(), ("it",), ("legal",)]:
            result = outer.retrieve("salary payroll printer password", k=6, scopes=scopes)
            assert result.hits and all(
                visible(labels_of(h.metadata.get("access")), scopes) for h in result.hits
            )
            assert not [s for s in result.trace if s.stage == "scope-check"]  # the adapter filtered already
    # pushed down, the store returns k visible nodes; checked after only, some of the k are dropped
    k = 6
    assert len(outer.retrieve("salary payroll ledger", k=k).hits) == k
    assert (
        len(
            Pipeline([Source("store", after)], FixedRouter({"store": 1.0}))
            .retrieve("salary payroll ledger", k=k)
            .hits
        )
        < k
    )
    # a ragroute retriever wrapped for LlamaIndex and back gets the caller's scopes passed on
    back = LlamaRetrieverAdapter(IndexLlamaRetriever(sources[2].retriever, similarity_top_k=5), name="back")
    through = Pipeline([Source("back", back)], FixedRouter({"back": 1.0}))
    for scopes in [(), ("it",)]:
        hits = through.retrieve("printer salary password", k=18, scopes=scopes).hits
        assert {h.doc_id.split("-")[0] for h in hits} == {"helpdesk", *(["it"] if scopes else [])}


def test_langchain_retrievers_carry_the_callers_scope(sources, encoder):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document as LangChainDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    from ragroute.integrations.langchain import (
        IndexLangChainRetriever,
        LangChainRetrieverAdapter,
        RoutedLangChainRetriever,
        document_filter,
    )

    pipeline = Pipeline(
        sources, FixedRouter({SECRET: 0.8, "helpdesk": 0.2}), options=RoutingOptions(threshold=0.0)
    )
    routed = RoutedLangChainRetriever(pipeline, k=10)
    documents = routed.invoke("salary payroll printer")
    assert documents and all(
        d.metadata["source"] == "helpdesk" and not d.metadata.get("access") for d in documents
    )
    assert SECRET not in json.dumps(routed.last_decision.to_dict())
    per_call = routed.invoke("salary payroll printer", scopes=["hr"])
    assert SECRET in {d.metadata["source"] for d in per_call}
    scoped = RoutedLangChainRetriever(pipeline, k=10, scopes=["hr"])
    assert SECRET in {d.metadata["source"] for d in scoped.invoke("salary payroll printer")}
    # a string is one label, as everywhere in ragroute (it was split into the labels 'h' and 'r')
    as_text = routed.invoke("salary payroll printer", scopes="hr")
    assert [d.metadata["doc_id"] for d in as_text] == [d.metadata["doc_id"] for d in per_call]
    assert RoutedLangChainRetriever(pipeline, k=10, scopes="hr").scopes == ("hr",)
    assert IndexLangChainRetriever(sources[1], k=3).invoke("salary") == []
    it = IndexLangChainRetriever(sources[2].retriever, k=18).invoke("printer salary", scopes=["it"])
    assert {d.metadata["doc_id"].split("-")[0] for d in it} == {"helpdesk", "it"}

    class Hashing(Embeddings):
        def embed_documents(self, texts):
            return encoder.encode_documents(texts).tolist()

        def embed_query(self, text):
            return encoder.encode_queries([text])[0].tolist()

    store = InMemoryVectorStore(Hashing())
    store.add_documents(
        [LangChainDocument(page_content=d.text, metadata={**d.metadata}, id=d.id) for d in _mixed_docs()]
    )
    after = LangChainRetrieverAdapter(store.as_retriever(), name="store")
    pushed = LangChainRetrieverAdapter(
        store.as_retriever(), name="store", scope_filters=lambda s: {"filter": document_filter(s)}
    )
    k = 6
    for adapter in (after, pushed):
        outer = Pipeline([Source("store", adapter)], FixedRouter({"store": 1.0}))
        for scopes in [(), ("it",), ("hr",), ("legal",)]:
            result = outer.retrieve("salary payroll ledger pension", k=k, scopes=scopes)
            assert all(visible(labels_of(h.metadata.get("access")), scopes) for h in result.hits)
            assert ("hr" in {h.doc_id.split("-")[0] for h in result.hits}) == bool(
                {"hr", "legal"} & set(scopes)
            )
    assert len(outer.retrieve("salary payroll ledger", k=k).hits) == k  # pushed down: k visible
    # a ragroute LangChain retriever wrapped back as a source gets the caller's scopes (its ids are
    # SOURCE:DOC_ID: it routes over several sources)
    back = LangChainRetrieverAdapter(RoutedLangChainRetriever(pipeline, k=10), name="back")
    through = Pipeline([Source("back", back)], FixedRouter({"back": 1.0}))
    assert all(
        h.explain and h.doc_id.split(":")[-1].split("-")[0] != "pay"
        for h in through.retrieve("salary payroll", k=10).hits
    )
    assert any(
        h.doc_id.split(":")[-1].startswith("pay-")
        for h in through.retrieve("salary payroll", k=10, scopes=["hr"]).hits
    )


# --------------------------------------------------------------------------- routing configs


def test_access_in_a_routing_config(tmp_path, encoder):
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing
    from ragroute.route.config_check import check_config

    save_index(build_index(_docs("sci", PUBLIC_WORDS), "bm25", name="sci"), tmp_path / "sci")
    save_index(build_index(_docs("pay", SECRET_WORDS), "bm25", name="pay"), tmp_path / "pay")
    config = {
        "sources": {
            "science": {"index": "sci"},
            SECRET: {"index": "pay", "access": ["hr", "finance"], "description": "salaries"},
            "gone": {"index": "missing", "access": "hr"},
        },
        "router": {"kind": "prototype"},
    }
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    with pytest.warns(Warning):
        pipeline = load_routing(tmp_path / "r.yaml", encoder=encoder)
    assert {s.name: s.access for s in pipeline.sources} == {"science": frozenset(), SECRET: {"hr", "finance"}}
    result = pipeline.retrieve("salary payroll bonus", k=4)
    assert_no_leak(result, ())
    assert "gone" not in json.dumps(result.to_dict()) and scope_step(result)["hidden_sources"] == 2
    assert pipeline.retrieve("salary payroll bonus", k=4, scopes=["finance"]).hits[0].source == SECRET
    for bad in ({"admins": 1}, [""], ["a,b"], 3):
        config["sources"][SECRET]["access"] = bad
        (tmp_path / "bad.yaml").write_text(json.dumps(config))
        with pytest.raises(RagrouteError, match="access"):
            load_routing(tmp_path / "bad.yaml", encoder=encoder)
        report = check_config(tmp_path / "bad.yaml")
        assert any("access" in problem for problem in report.problems)


def test_corpora_yaml_access_labels_reach_the_routing_sources(tmp_path):
    from ragroute.route.config import RoutingConfig

    (tmp_path / "corpora.yaml").write_text(
        "corpora:\n  payroll: {path: payroll, access: [hr, finance]}\n  handbook: {path: handbook}\n"
    )
    (tmp_path / "routing.yaml").write_text("corpora: corpora.yaml\nindex_dir: indexes\n")
    sources = RoutingConfig.read(tmp_path / "routing.yaml").data["sources"]
    assert sources["payroll"]["access"] == ["finance", "hr"] and "access" not in sources["handbook"]
    (tmp_path / "corpora.yaml").write_text("corpora:\n  payroll: {path: payroll, access: 3}\n")
    with pytest.raises(RagrouteError, match="access"):
        RoutingConfig.read(tmp_path / "routing.yaml")


def test_a_graph_explanation_names_only_terms_of_passages_the_caller_may_read(encoder):
    """`unmatched_terms` listed query terms "some passage holds": a word oracle over hidden ones."""
    from ragroute.context import QueryContext

    passages = [
        Document(id="g1", title="Ada Brennan", text="Ada Brennan was a painter born in Kellow."),
        Document(id="g3", title="Varne River", text="The Varne River meets the sea."),
        Document(id="g4", title="Zorbin Vault", text="Talks with Quentaro.", metadata={"access": "vault"}),
    ]
    graph = build_index(passages, "graph", encoder=encoder, name="kg")
    hits = graph.search_contexts([QueryContext.of("Ada Brennan painter quentaro")], k=3)[0]
    assert hits and hits[0].explain["unmatched_terms"] == ["painter"]  # 'quentaro' is only in g4
    assert "quentaro" not in json.dumps([h.explain for h in hits]).lower()


def test_the_rarity_gate_signal_counts_only_public_documents(sources):
    from ragroute.context import QueryContext

    """Its corpus counts were a word oracle over documents a caller may not read."""
    from ragroute.gate.signals import make_signal

    rarity = make_signal({"kind": "rarity", "corpus": True}, sources=sources)
    unseen = rarity.names.index("unseen_share")
    row = rarity.values([QueryContext.of("pension ledger")], None)[0]
    assert row[unseen] == 1.0  # the secret source's words count as unseen, for everyone


def test_a_source_given_where_a_retriever_is_expected_is_searched_within_its_access(sources):
    """GatedLlamaRetriever and the step-wise controller took a Source's (hits, decision) pairs for
    hits and crashed; a hidden source must give nothing to a caller outside it."""
    from llama_index.core.schema import QueryBundle

    from ragroute.gate.controller import StepwiseController
    from ragroute.gate.planners import ScriptedPlanner
    from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever
    from ragroute.route.sources import hits_of

    class Yes:
        name = "yes"

        def gate_many(self, contexts):
            return [GateDecision("retrieve", 1.0) for _ in contexts]

    secret, helpdesk = sources[1], sources[2]
    assert GatedLlamaRetriever(Yes(), secret, k=3).retrieve(QueryBundle("salary payroll")) == []
    assert GatedLlamaRetriever(Yes(), helpdesk, k=3).retrieve(QueryBundle("printer"))
    run = StepwiseController(ScriptedPlanner(["printer password"]), helpdesk, max_steps=1).run("printer")
    assert run.steps and run.steps[0].hits
    asked = [QueryContext.of("salary", scopes=["hr"]), QueryContext.of("salary")]
    inside, outside = hits_of(secret, asked, 3)
    assert inside and outside == []


def test_each_step_of_a_stepwise_run_keeps_the_callers_scopes(sources):
    """Step contexts are built afresh from the planner's question: they must carry the root
    context's scopes, or a caller inside a source finds nothing in it (and one outside, more)."""
    from ragroute.gate.controller import StepwiseController
    from ragroute.gate.planners import ScriptedPlanner
    from ragroute.route.sources import hits_of

    secret = sources[1]  # access: hr
    direct = [h.doc_id for h in hits_of(secret, [QueryContext.of("salary payroll", scopes=["hr"])], 3)[0]]
    assert len(direct) == 3 and all(doc_id.startswith("pay-") for doc_id in direct)
    pipeline = Pipeline([secret], FixedRouter({SECRET: 1.0}))
    for retriever in (secret, pipeline):
        controller = StepwiseController(ScriptedPlanner(["salary payroll"]), retriever, max_steps=1, k=3)
        run = controller.run(QueryContext.of("salary", scopes=["hr"]))
        assert [h.doc_id for h in run.steps[0].hits] == direct
        assert run.steps[0].sources == [SECRET]
        outside = controller.run(QueryContext.of("salary"))
        assert outside.steps[0].hits == []


def test_a_labelled_document_added_to_an_unlabelled_store_is_hidden_at_once():
    from ragroute.index.docstore import DocumentStore

    store = DocumentStore()
    store.add([Document(id=f"p{i}", text="public") for i in range(3)])
    assert store.access_mask(()) is None  # nothing labelled: remembered as such
    store.add([Document(id="p3", text="public too")])
    assert store.access_mask(()) is None
    store.add([Document(id="s", text="secret", metadata={"access": "hr"})])
    assert store.access_mask(()).tolist() == [True, True, True, True, False]
    assert store.access_mask(["hr"]) is None  # the hr caller reads all of them
    store.delete(["s"])
    assert store.access_mask(()) is None


def test_a_label_in_another_unicode_form_is_the_same_label():
    """A document labelled with a decomposed "José" was hidden from a caller holding the composed
    one (until session 48): labels are compared in NFC form, as caller ids are counted."""
    import unicodedata

    from ragroute.index.docstore import DocumentStore
    from ragroute.scopes import caller_scopes, labels_of, readable

    composed, decomposed = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    assert composed != decomposed
    assert labels_of(f" {decomposed} , hr") == {composed, "hr"} == labels_of([decomposed, "hr"])
    assert caller_scopes([decomposed, composed]) == (composed,)
    store = DocumentStore()
    store.add(
        [Document(id="a", text="public"), Document(id="b", text="his", metadata={"access": decomposed})]
    )
    assert store.access_mask(caller_scopes(composed)) is None  # he reads both
    assert store.access_mask(()).tolist() == [True, False]
    hit = Hit(doc_id="b", score=1.0, rank=1, metadata={"access": [decomposed]})
    assert readable([hit], caller_scopes(composed)) == [hit]


def test_an_odd_access_value_is_a_label_everywhere_not_public():
    from ragroute.index.docstore import DocumentStore
    from ragroute.scopes import is_public

    assert is_public({}) and is_public({"access": None}) and is_public({"access": ""})
    assert not is_public({"access": 0}) and not is_public({"access": False})
    store = DocumentStore()
    store.add([Document(id="a", text="public"), Document(id="b", text="zero", metadata={"access": 0})])
    assert store.access_mask(()).tolist() == [True, False]  # as the pipeline's ScopeCheck reads it
    assert store.access_mask(["0"]) is None


def test_routers_calibrate_and_build_their_banks_on_public_documents_only(hashing_encoder, small_docs):
    from conftest import topic_sources

    from ragroute.route.prototype import PrototypeRouter
    from ragroute.route.pseudo import pseudo_queries

    secret_text = "zebra quantum sonnet harpsichord glacier " * 3
    secret = Document(id="secret", text=secret_text, metadata={"topic": "it", "access": "hr"})
    assert [p for p, _ in pseudo_queries([*small_docs, secret], 100)] == list(range(len(small_docs)))

    def routes(with_secret):
        sources = topic_sources(small_docs, hashing_encoder, extra={"it": [secret]} if with_secret else None)
        return PrototypeRouter(sources, hashing_encoder).route(secret_text)

    with_secret, without = routes(True), routes(False)
    # what a caller sees of its routing does not depend on a document it may not read
    assert with_secret.signals == without.signals and with_secret.routes == without.routes


def test_a_nested_pipelines_documents_behind_access_labels_are_not_public(hashing_encoder, small_docs):
    """A nested pipeline listed the documents of its sources with access labels as public: an outer
    prototype router's bank and centroid, and the pseudo-queries and rarity counts read from a
    nested source, took in a hidden source's documents, so a caller without scopes read, in its
    routing similarities and signals, that the nested source held words only the hidden one has."""
    from conftest import topic_sources

    from ragroute.context import QueryContext
    from ragroute.gate.signals import make_signal
    from ragroute.route.prototype import PrototypeRouter
    from ragroute.route.pseudo import pseudo_queries
    from ragroute.scopes import is_public

    secret_text = "zebra quantum sonnet harpsichord glacier " * 3
    vault = build_index([Document(id="v1", text=secret_text)], "dense", encoder=hashing_encoder, name="vault")

    def outer(with_vault):
        inner_sources = topic_sources(small_docs, hashing_encoder)[2:]
        if with_vault:
            inner_sources.append(Source("vault", vault, access=frozenset({"hr"})))
        inner = Pipeline(inner_sources, FixedRouter({s.name: 1.0 for s in inner_sources}))
        return [*topic_sources(small_docs, hashing_encoder)[:2], Source("inner", inner)]

    with_vault, without = outer(True), outer(False)
    routed = [
        PrototypeRouter(sources, hashing_encoder).route(secret_text) for sources in (with_vault, without)
    ]
    assert routed[0].signals == routed[1].signals and routed[0].routes == routed[1].routes
    rarity = [make_signal({"kind": "rarity", "corpus": True}, sources=s) for s in (with_vault, without)]
    unseen = rarity[0].names.index("unseen_share")
    shares = [r.values([QueryContext.of("zebra harpsichord")], None)[0][unseen] for r in rarity]
    assert shares[0] == shares[1] == 1.0
    nested = with_vault[2].documents
    assert len(nested) == len(without[2].documents) + 1  # every document is still listed
    assert [doc.id for doc in nested if not is_public(doc.metadata)] == ["v1"]
    assert [p for p, _ in pseudo_queries(nested, 100)] == list(range(len(without[2].documents)))


def test_the_prototype_router_follows_deleted_relabelled_and_added_documents(hashing_encoder, small_docs):
    """A router built once kept its bank: a deleted document still steered routing, and one
    re-added with an access label stayed readable in every caller's similarity signals."""
    from conftest import topic_sources

    from ragroute.route.prototype import PrototypeRouter

    secret_text = "zebra quantum sonnet harpsichord glacier " * 3

    def sources_of(extra):
        return topic_sources(small_docs, hashing_encoder, extra={"it": extra})

    def similarity(router):
        return router.route(secret_text).signals["similarity"]

    sources = sources_of([Document(id="odd", text=secret_text, metadata={"topic": "it"})])
    router = PrototypeRouter(sources, hashing_encoder)
    assert similarity(router)["it"] > similarity(PrototypeRouter(sources_of([]), hashing_encoder))["it"]
    it = sources[2].retriever
    it.delete(["odd"])
    assert similarity(router) == similarity(PrototypeRouter(sources_of([]), hashing_encoder))
    it.add([Document(id="odd", text=secret_text, metadata={"topic": "it", "access": "hr"})])
    assert similarity(router) == similarity(PrototypeRouter(sources_of([]), hashing_encoder))
    fresh = Document(id="new", text="printer vpn driver laptop " * 3, metadata={"topic": "it"})
    it.add([fresh])
    assert similarity(router) == similarity(PrototypeRouter(sources_of([fresh]), hashing_encoder))
    # an edit (deleted and added again under its id, with other text): the bank reads the new text
    # (it kept the old vector, matched by id, until session 40)
    edited = Document(id="new", text=secret_text, metadata={"topic": "it"})
    it.delete(["new"])
    it.add([edited])
    assert similarity(router) == pytest.approx(
        similarity(PrototypeRouter(sources_of([edited]), hashing_encoder))
    )
    assert similarity(router)["it"] > similarity(PrototypeRouter(sources_of([fresh]), hashing_encoder))["it"]


def test_the_rarity_signal_counts_again_when_a_document_is_relabelled(hashing_encoder, small_docs):
    from ragroute.context import QueryContext
    from ragroute.gate.signals import make_signal
    from ragroute.index.build import build_index

    secret = Document(id="x", text="zorblax merger acquisition codename zorblax")
    index = build_index([*small_docs, secret], "bm25", name="helpdesk")
    rarity = make_signal({"kind": "rarity", "corpus": True}, sources=[Source("helpdesk", index)])
    unseen = rarity.names.index("unseen_share")
    assert rarity.values([QueryContext.of("zorblax")], None)[0][unseen] == 0.0  # public: counted
    index.delete(["x"])
    index.add([Document(id="x", text=secret.text, metadata={"access": "hr"})])
    assert rarity.values([QueryContext.of("zorblax")], None)[0][unseen] == 1.0  # hidden: not counted


def test_the_access_index_grows_with_label_occurrences_not_documents_times_labels():
    """A mask per label took documents x labels: 400 MB for 20k documents labelled per user (until
    session 37). Positions per label take what the labels themselves hold."""
    from ragroute.index.docstore import DocumentStore

    store = DocumentStore()
    n = 3000
    store.add([Document(id=f"d{i}", text="x", metadata={"access": [f"user{i}", "staff"]}) for i in range(n)])
    labelled, by_label = store._access_index("access")
    assert len(by_label) == n + 1
    assert sum(a.nbytes for a in by_label.values()) <= 8 * 2 * n  # two labels per document
    mask = store.access_mask(["user7", "nobody"])
    assert mask is not None and list(np.flatnonzero(mask)) == [7]
    assert store.access_mask(["staff"]) is None  # every document readable: no mask


class _Unscoped:
    """A retriever that knows nothing of scopes (any object with ``search_many``): it returns the
    documents of every label, and the reader must keep only what the caller may read."""

    def __init__(self, index):
        self.index = index

    def search_many(self, queries, k=10, *, filters=None):
        return self.index.search_many(queries, k)


def _mixed_index(encoder):
    from ragroute.index.build import build_index

    public = [Document(id=f"pub-{i}", text=f"telescope star galaxy {i}") for i in range(4)]
    secret = [
        Document(
            id=f"sec-{i}", text=f"salary payroll bonus ledger {i}", metadata={"access": "hr", "band": "b"}
        )
        for i in range(4)
    ]
    return build_index(public + secret, "dense", encoder=encoder, name="kb")


def test_the_retrieval_gate_signal_reads_only_documents_the_caller_may_read(encoder):
    """Over a retriever that does not filter by scope, the gate read the score of a document only
    `hr` may read and decided a public caller's query by it (until session 37)."""
    from ragroute.gate.signals import make_signal
    from ragroute.gate.trained import ThresholdGate

    sources = [Source("kb", _Unscoped(_mixed_index(encoder)))]
    gate = ThresholdGate(make_signal("retrieval", sources=sources), "top", above=0.5)
    pipeline = Pipeline(sources, FixedRouter({"kb": 1.0}), encoder=encoder, gate=gate)
    public = pipeline.retrieve("salary payroll bonus ledger", k=3).trace[0].detail
    staff = pipeline.retrieve("salary payroll bonus ledger", k=3, scopes=["hr"]).trace[0].detail
    assert staff["values"]["retrieval.top"] > 0.5 and public["values"]["retrieval.top"] < 0.5
    assert public["action"] == "answer"


def test_one_callers_failing_search_or_gate_costs_the_others_of_a_batch_nothing(encoder):
    """A source or gate refusing one caller's filter emptied every query of the batch and put that
    caller's error (naming keys only it may read) in every trace (until session 37)."""
    from ragroute.gate.signals import make_signal
    from ragroute.gate.trained import ThresholdGate

    class Picky(_Unscoped):  # a store that refuses a filter it does not support
        def search_many(self, queries, k=10, *, filters=None):
            if filters and "patient_id" in filters:
                raise ValueError(f"unsupported filter {filters}")
            return self.index.search_many(queries, k)

    picky = Pipeline([Source("kb", Picky(_mixed_index(encoder)))], FixedRouter({"kb": 1.0}), encoder=encoder)
    results = picky.retrieve_contexts(
        [QueryContext.of("telescope star", filters={"patient_id": "P-1"}), QueryContext.of("telescope star")],
        3,
    )
    assert results[0].hits == [] and len(results[1].hits) == 3
    assert "P-1" not in json.dumps(results[1].decision.to_dict(), default=str)
    from ragroute.index.build import build_index

    news = build_index(
        [Document(id="n1", text="telescope news", metadata={"year": 2020})], "bm25", name="news"
    )
    sources = [Source("kb", _mixed_index(encoder)), Source("news", news)]
    alice = QueryContext.of("telescope star", filters={"year": 2020}, scopes=["hr"])
    bob = QueryContext.of("telescope star")
    gate = ThresholdGate(make_signal("retrieval", sources=sources), "top", above=0.5)
    gated = Pipeline(sources, FixedRouter({"kb": 0.5, "news": 0.5}), encoder=encoder, gate=gate)
    steps = [r.trace[0].detail for r in gated.retrieve_contexts([alice, bob], 3)]
    assert steps[0]["reason"] == "gate failed: retrieving" and "error" not in steps[1]
    assert "band" not in json.dumps(steps[1], default=str)


class _SameBM25Statistics:
    """The BM25 scorer of a whole catalogue read on some of its skills only: a reference router
    over the visible skills with this scorer shares the whole catalogue's idf, the one statistic a
    scoped skill route keeps unscoped (docs/skills.md, "Access labels")."""

    def __init__(self, scorer, positions):
        self.scorer, self.positions = scorer, np.asarray(positions)

    def get_scores(self, tokens):
        return self.scorer.get_scores(tokens)[self.positions]

    def __getattr__(self, name):  # its other statistics (average_idf, idf, vocab) are the whole one's
        return getattr(self.scorer, name)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("ms", "total_ms", "timings")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _skill_pipeline(router, **settings):
    return Pipeline(
        [Source("skills", router.with_options(**settings) if settings else router)],
        FixedRouter({"skills": 1.0}),
        options=RoutingOptions(threshold=0.0),
    )


def _reference(router, hidden, encoder, params=None):
    """A router over ``router``'s catalogue without the ``hidden`` skills, sharing its BM25 idf."""
    from ragroute.skills.router import SkillRouter

    shown = [i for i, s in enumerate(router.catalogue) if s.id not in hidden]
    reference = SkillRouter.build([router.catalogue[i] for i in shown], encoder, params)
    reference.index.scorer = _SameBM25Statistics(router.index.scorer, shown)
    return reference


def test_a_skill_router_serves_each_caller_the_skills_it_may_read_as_if_alone(encoder):
    """Hidden skills are left out before anything is ranked: a caller without 'hr' gets the ranks,
    scores, explanations and trace of a catalogue without the hr skills (BM25's idf aside, the
    whole catalogue's); before, such a router was refused as a source, and before that
    a caller without scopes got 'vpn' at stage-1 rank 3 behind two payroll skills."""
    from ragroute.skills import Skill
    from ragroute.skills.router import AbstentionModel, SkillRouter

    skills = [
        Skill(
            id="pay-run",
            name="run payroll",
            description="run the payroll salary ledger vpn",
            metadata={"access": ["hr"]},
        ),
        Skill(
            id="pay-fix", name="fix payroll", description="fix the payroll ledger", metadata={"access": "hr"}
        ),
        Skill(id="printer", name="fix printer", description="fix the office printer driver"),
        Skill(id="vpn", name="reset vpn", description="reset the vpn password"),
        Skill(id="mail", name="send mail", description="send an email to the office"),
    ]
    model = AbstentionModel(
        ["dense_top", "dense_margin", "dense_top_z", "bm25_top_z"],
        [1.0, 0.5, -0.3, 0.2],
        0.1,
        [0.3, 0.1, 1.0, 1.0],
        [0.2, 0.1, 1.0, 1.0],
    )
    router = SkillRouter.build(skills, encoder, abstention=model)
    reference = _reference(router, {"pay-run", "pay-fix"}, encoder).with_options(abstention=model)
    task = "run the payroll salary ledger vpn"
    for settings in [{}, {"method": "dense"}, {"method": "bm25"}, {"overlap": "collapse"}]:
        result = _skill_pipeline(router, **settings).retrieve(task, k=3, scopes=())
        alone = _skill_pipeline(reference, **settings).retrieve(task, k=3)
        assert_no_leak(result, ())
        assert [h.doc_id for h in result.hits][0] == "vpn"
        assert [(h.doc_id, h.score, h.rank, h.explain) for h in result.hits] == [
            (h.doc_id, h.score, h.rank, h.explain) for h in alone.hits
        ]
        assert _without_timings(result.to_dict()) == _without_timings(alone.to_dict())
        assert not [s for s in result.trace if s.stage == "scope-check"]  # nothing dropped, no count
        # called directly with the caller's scopes: the same route, trace included
        direct = router.with_options(**settings).route(task, 3, scopes=[])
        assert _without_timings(direct.to_dict(trace=True)) == _without_timings(
            reference.with_options(**settings).route(task, 3).to_dict(trace=True)
        )
        assert "pay-" not in json.dumps(direct.to_dict(trace=True))
    hr = _skill_pipeline(router).retrieve(task, k=3, scopes=["hr"])  # a caller holding hr sees them
    assert hr.hits[0].doc_id == "pay-run" and "pay-fix" in [h.doc_id for h in hr.hits]
    assert [s.id for s in router.route(task, 3).skills] == [h.doc_id for h in hr.hits]  # direct: all
    with pytest.raises(RagrouteError, match="does not filter by metadata"):
        router.search(task, filters={"access": "hr"})


def test_a_hidden_near_duplicate_neither_collapses_nor_joins_visible_skills(encoder):
    """Duplicate groups are the visible skills': a hidden copy of 'printer' ranked before it does
    not collapse it, and a hidden skill close to two visible ones that are not close to each other
    does not make them one group."""
    from ragroute.skills import Skill
    from ragroute.skills.index import SkillIndexParams
    from ragroute.skills.router import SkillRouter

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
    skills = [
        Skill(
            id="printer-hr",
            name="fix printer",
            description="fix the office printer driver",
            metadata={"access": "hr"},
        ),
        Skill(id="printer", name="fix printer", description="fix the office printer driver"),
        Skill(id="left", name="alpha", description=" ".join(words[:6])),
        Skill(id="bridge", name="alpha", description=" ".join(words), metadata={"access": "hr"}),
        Skill(id="right", name="alpha", description=" ".join(words[3:])),
        Skill(id="mail", name="send mail", description="send an email to the office"),
    ]
    params = SkillIndexParams(duplicate_threshold=0.8)
    router = SkillRouter.build(skills, encoder, params, overlap="collapse")
    vectors = dict(zip(router.catalogue.ids, router.index.vectors["full"]))
    assert vectors["left"] @ vectors["bridge"] >= 0.8 and vectors["right"] @ vectors["bridge"] >= 0.8
    assert vectors["left"] @ vectors["right"] < 0.8  # joined only through the hidden skill
    assert sorted(map(sorted, router.index.duplicates)) == [
        ["bridge", "left", "right"],
        ["printer", "printer-hr"],
    ]
    reference = _reference(router, {"printer-hr", "bridge"}, encoder, params)
    for task in ["fix the office printer driver", "alpha beta gamma delta epsilon zeta"]:
        route = router.route(task, 4, scopes=())
        assert _without_timings(route.to_dict(trace=True)) == _without_timings(
            reference.route(task, 4).to_dict(trace=True)
        )
        assert "printer-hr" not in json.dumps(route.to_dict(trace=True))
        assert "bridge" not in json.dumps(route.to_dict(trace=True))
        assert not [s for s in route.trace if s.stage == "overlap"]  # no visible duplicates at all
    printer = router.route("fix the office printer driver", 4, scopes=())
    assert printer.skills[0].id == "printer" and printer.skills[0].duplicates == []
    both = router.route("alpha beta gamma delta epsilon zeta", 4, scopes=())
    assert {"left", "right"} <= {s.id for s in both.skills}
    held = router.route("fix the office printer driver", 4, scopes=["hr"])  # hr: one group again
    assert held.skills[0].id == "printer-hr" and held.skills[0].duplicates == ["printer"]
    unscoped = router.route("fix the office printer driver", 4)
    assert unscoped.skills[0].duplicates == ["printer"]


def test_a_labelled_skill_leaves_no_count_and_a_caller_who_may_read_none_gets_nothing(encoder):
    """The pipeline's scope check drops nothing (so reports no count) whatever the caller holds,
    and a caller who may read no skill gets no hit and an abstaining route."""
    from ragroute.skills import Skill
    from ragroute.skills.router import SkillRouter

    skills = [
        Skill(
            id=f"hr-{i}",
            name=f"payroll {i}",
            description=f"payroll salary ledger {i}",
            metadata={"access": "hr,finance"},
        )
        for i in range(4)
    ] + [Skill(id="vpn", name="reset vpn", description="reset the vpn password payroll")]
    pipeline = _skill_pipeline(SkillRouter.build(skills, encoder))
    for scopes, expected in [((), 1), (("finance",), 5), (("hr", "it"), 5)]:
        result = pipeline.retrieve("payroll salary ledger", k=10, scopes=scopes)
        assert len(result.hits) == expected
        assert not [s for s in result.trace if s.stage == "scope-check"]
        assert scope_step(result)["hidden_sources"] == 0
    assert "hr-" not in json.dumps(pipeline.retrieve("payroll", k=10).to_dict(), default=str)
    only = SkillRouter.build(skills[:4], encoder)
    route = only.route("payroll", 3, scopes=["it"])
    assert route.skills == [] and route.abstain and route.best is None
    assert _skill_pipeline(only).retrieve("payroll", k=3, scopes=["it"]).hits == []


def test_a_graph_walks_lexical_weights_say_nothing_of_words_only_hidden_passages_hold(encoder):
    """A query term that only a hidden passage held took its share of the lexical edges' idf, so
    the visible passages' scores and `lexical_scale` said whether a hidden passage holds a word."""
    from ragroute.context import QueryContext

    passages = [
        Document(id="g1", title="Ada Brennan", text="Ada Brennan was a painter born in Kellow."),
        Document(id="g3", title="Varne River", text="The Varne River meets the sea."),
        Document(id="g4", title="Zorbin Vault", text="Talks with Quentaro.", metadata={"access": "vault"}),
    ]
    graph = build_index(passages, "graph", encoder=encoder, name="kg")

    def seen(word):
        hits = graph.search_contexts([QueryContext.of(f"Ada Brennan painter {word}")], k=3)[0]
        return [(h.doc_id, h.score, h.explain.get("lexical_scale")) for h in hits]

    hidden, absent = seen("quentaro"), seen("zzyzx")  # 'quentaro' is only in g4
    assert hidden[0][2] is not None and hidden[0][2] > 1  # the lexical edges weigh 'painter'
    # the word only g4 holds and a word no passage holds: the same walk, both encoded alike
    assert [(d, s) for d, _, s in hidden] == [(d, s) for d, _, s in absent]


def test_a_hidden_source_searched_directly_tells_a_caller_none_of_its_metadata_keys():
    """Until session 51 a Source whose access labels keep a caller out answered that caller no hit
    but listed its documents' metadata keys (what a filter's error quotes: a step-wise controller
    over a bare Source said "known: dept" to a caller who may not read the source)."""
    from ragroute.gate.controller import StepwiseController
    from ragroute.gate.planners import ScriptedPlanner

    index = build_index([Document(id="a", text="salary bands", metadata={"dept": "x"})], "bm25")
    hidden = Source("hr", index, access=frozenset({"hr"}))
    assert hidden.metadata_keys(()) == frozenset() and hidden.metadata_keys(("hr",)) == {"dept"}
    assert hidden.metadata_keys(None) == {"dept"}  # no caller: the documents' own keys
    controller = StepwiseController(ScriptedPlanner(["salary bands"]), hidden)
    with pytest.raises(RagrouteError) as refused:
        controller.run(QueryContext("salary bands", filters={"dpt": "x"}))
    assert "dept" not in str(refused.value)
    run = controller.run(QueryContext("salary bands", filters={"dept": "x"}, scopes=("hr",)))
    assert [h.doc_id for h in run.evidence()] == ["a"]
