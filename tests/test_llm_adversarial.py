"""Everything that asks an LLM, against LLMs that misbehave (adversarial audit): raising, timing
out, unparseable, empty, huge, non-ASCII or control-character text, text that is not valid Unicode,
log-probabilities that are missing, NaN, infinite, positive or of another length than the tokens;
the LLM gate falls back to its LLM-free gate and says so, the step-wise controller never raises and
its run is one JSON-serialisable trace, the LLM router and planner read huge answers in linear time.
Scripted and fake LLMs only (no model, no network)."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from conftest import PROPERTY_SETTINGS
from hypothesis import given
from hypothesis import strategies as st

from ragroute.cli.output import json_safe
from ragroute.context import QueryContext
from ragroute.errors import has_visible_text, lone_surrogate
from ragroute.gate.controller import StepwiseController
from ragroute.gate.llm_signals import AgreementSignal, LLMGate, LogprobSignal, SelfAssessSignal
from ragroute.gate.planners import LLMPlanner, ScriptedPlanner, parse_plan
from ragroute.index.build import build_index
from ragroute.llm import ScriptedLLM, complete_safely
from ragroute.pipeline import GateDecision
from ragroute.route.llm import LlmRouter
from ragroute.route.sources import Source
from ragroute.types import Document

DOCS = [
    Document("ada", "Ada Brennan was a painter born in Kellow.", title="Ada Brennan"),
    Document("kellow", "Kellow is a town on the Varne River. Its mayor is Tomas Reed.", title="Kellow"),
    Document("varne", "The Varne River flows through Kellow and Dunmore.", title="Varne River"),
    Document("otto", "Otto Lind was a sculptor from Dunmore.", title="Otto Lind"),
]


@pytest.fixture(scope="module")
def bm25():
    return build_index(DOCS, "bm25", name="people")


class FallbackGate:
    """An LLM-free gate that always retrieves, and records what it was asked."""

    name = "recording"

    def __init__(self):
        self.seen: list[str] = []

    def gate_many(self, contexts):
        self.seen.extend(c.text for c in contexts)
        return [
            GateDecision("retrieve", 0.77, {"rule": "always"}, reason="always retrieve") for _ in contexts
        ]


class FakeLLM:
    """Answers every prompt with ``response`` (raised when an exception), thread-safe."""

    def __init__(self, response):
        self.response = response

    def complete(self, prompt, **kwargs):
        if isinstance(self.response, BaseException):
            raise self.response
        return self.response


# --------------------------------------------------------------------------- strategies

TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "   ",
            "\u200b\ufeff",
            "\x00\x01\x1b[2J",
            "Yes",
            "no",
            "Paris",
            "Yes \ud800",
            "\udcff",
            "Ünïcødé ✓ 東京",
            "y" * 5000,
            "\n" * 3000,
        ]
    ),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.1, -0.5, -2.0, 0.0, 1e-9, float("nan"), float("inf"), -float("inf"), 3.0]),
)
LOGPROBS = st.one_of(st.none(), st.lists(FLOATS, max_size=6))


@st.composite
def responses(draw):
    """What an LLM's ``complete`` may give back, or raise."""
    kind = draw(st.sampled_from(["response", "response", "response", "raise", "not-text", "tokens"]))
    if kind == "raise":
        return draw(
            st.sampled_from(
                [ConnectionError("down"), TimeoutError("slow"), ValueError("\ud800"), RuntimeError("")]
            )
        )
    if kind == "not-text":
        return SimpleNamespace(text=draw(st.sampled_from([None, b"bytes", 5, ["x"]])))
    text = draw(TEXTS)
    values = draw(LOGPROBS)
    extra = {} if values is None else {"token_logprobs": values}
    if kind == "tokens" and values:
        extra["tokens"] = ["t"] * draw(st.integers(0, 8))
    rows = None
    if values is not None and draw(st.booleans()):
        rows = [[SimpleNamespace(token="t", logprob=v)] for v in values]
    return SimpleNamespace(text=text, logprobs=rows, additional_kwargs=extra)


def _json_round_trip(value):
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- the LLM gate


@PROPERTY_SETTINGS
@given(responses(), st.sampled_from(["llm_logprob", "llm_self", "llm_agreement", "all"]))
def test_the_llm_gate_never_raises_and_falls_back_when_every_signal_failed(response, which):
    llm = FakeLLM(response)
    made = {
        "llm_logprob": LogprobSignal(llm),
        "llm_self": SelfAssessSignal(llm),
        "llm_agreement": AgreementSignal(llm, samples=2),
    }
    signals = list(made.values()) if which == "all" else [made[which]]
    fallback = FallbackGate()
    gate = LLMGate(signals, fallback=fallback)
    decision = gate.gate_many([QueryContext("Who founded the Zorblat Orrin Works?")])[0]
    assert decision.action in ("retrieve", "answer")
    if fallback.seen:  # every LLM signal failed: the LLM-free gate decided, said in the reason
        assert decision.probability == 0.77
        assert decision.reason.startswith("LLM signals failed (")
        assert decision.signals["fallback"].startswith("recording: ")
    else:
        assert 0.0 <= decision.probability <= 1.0
        assert all(math.isfinite(v) for v in decision.signals["confidence"].values())
    values = decision.signals.get("values", {})
    if "llm_logprob.ok" in values:  # the draft's log-probabilities are read only when they are some
        assert values["llm_logprob.ok"] == (1.0 if _usable_logprobs(response) else 0.0)
    # whatever the LLM said, the decision is plain data that JSON writes and any UTF-8 output prints
    text = json.dumps(
        {"reason": decision.reason, "signals": decision.signals}, default=str, ensure_ascii=False
    )
    text.encode("utf-8")
    _json_round_trip(decision.signals)


def _usable_logprobs(response) -> bool:
    """Whether ``response`` is text with one log-probability (finite, at most 0) per token."""
    if isinstance(response, BaseException) or not isinstance(response.text, str):
        return False
    if lone_surrogate(response.text):
        return False
    values = response.additional_kwargs.get("token_logprobs")
    if not values:
        return False
    values = [-100.0 if v == -math.inf else v for v in values]
    if not all(math.isfinite(v) and v <= 1e-4 for v in values):
        return False
    tokens = response.additional_kwargs.get("tokens")
    return tokens is None or len(tokens) == len(values)


# --------------------------------------------------------------------------- the controller


class PlanningLLM:
    """A planner and answerer LLM: plans from ``plans`` in turn (the last repeats), answers with
    ``answer`` (raised when an exception)."""

    def __init__(self, plans, answer):
        self.plans, self.answer, self.turn = list(plans), answer, 0

    def complete(self, prompt, **kwargs):
        if prompt.startswith("Answer the question from the passages"):
            reply = self.answer
        else:
            reply = self.plans[min(self.turn, len(self.plans) - 1)]
            self.turn += 1
        if isinstance(reply, BaseException):
            raise reply
        return SimpleNamespace(text=reply, logprobs=None, additional_kwargs={})


PLANS = st.one_of(
    TEXTS,
    st.sampled_from(
        [
            '{"action": "search", "query": "Where was Ada Brennan born?"}',
            '{"action": "search", "query": "Which river flows through #1?"}',
            '{"action": "search", "query": "Which river flows through #7?"}',
            '{"action": "answer", "answer": "Varne River"}',
            '{"action": "answer", "answer": "\\u200b"}',
            '{"action": "search", "query": "\\ud800"}',
            "SEARCH: Kellow mayor",
            "ANSWER: Tomas Reed",
            '{"action": "search", "query": "' + "Kellow " * 3000 + '"}',
        ]
    ),
    st.just(ConnectionError("planner down")),
)


@PROPERTY_SETTINGS
@given(
    plans=st.lists(PLANS, min_size=1, max_size=6),
    answer=st.one_of(TEXTS, st.just(TimeoutError("slow"))),
    gate_reply=responses(),
    max_steps=st.integers(1, 4),
)
def test_the_controller_never_raises_and_its_run_is_one_json_trace(
    bm25, plans, answer, gate_reply, max_steps
):
    gate = LLMGate(
        [LogprobSignal(FakeLLM(gate_reply)), SelfAssessSignal(FakeLLM(gate_reply))], fallback=FallbackGate()
    )
    llm = PlanningLLM(plans, answer)
    controller = StepwiseController(LLMPlanner(llm), bm25, gate=gate, max_steps=max_steps, k=2, answerer=llm)
    result = controller.run("Which river flows through the town where Ada Brennan was born?")
    assert len(result.steps) <= max_steps
    assert result.stopped_by in ("planner", "budget", "gate", "error")
    if result.stopped_by == "budget":
        assert not result.complete and any(t.stage == "budget" for t in result.trace)
    if result.answer:  # an answer, whoever gave it, is text one can read and print
        assert has_visible_text(result.answer) and lone_surrogate(result.answer) is None
    for step in result.steps:
        assert step.gate is not None  # every sub-question was gated ...
        if step.retrieved:  # ... and the ones sent to retrieval were retrieved, in the trace
            assert any(t.stage == "retrieve" and t.detail["step"] == step.index for t in result.trace)
        if step.gate.get("fallback"):
            assert step.gate["reason"].startswith("LLM signals failed (")
        if step.answer:
            assert has_visible_text(step.answer) and lone_surrogate(step.answer) is None
    # one trace, steps and decisions included: strict JSON that any UTF-8 output can print
    payload = result.to_dict()
    text = json.dumps(json_safe(payload), ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    assert json.loads(text)["trace"][-1]["stage"] == "final"


# --------------------------------------------------------------------------- regressions


def test_a_plan_of_thousands_of_blank_lines_is_read_at_once():
    # the SEARCH:/ANSWER: line pattern let a line's start and end run over the following lines:
    # 20,000 newlines took 15 s to refuse (the time grew as the square of the reply's length)
    for text in ("\n" * 20000, " \n" * 20000, "x\n" * 20000):
        start = time.perf_counter()
        with pytest.raises(ValueError, match="unparseable plan"):
            parse_plan(text)
        assert time.perf_counter() - start < 2.0
    assert parse_plan("Thinking...\n\n  ANSWER:  Tomas Reed  \r\n") == ("answer", "Tomas Reed")
    assert parse_plan("\n\nsearch - Kellow mayor\n") == ("ask", "Kellow mayor")


def test_a_huge_router_answer_repeating_labels_is_read_at_once():
    # every label found was compared with every other one found: an answer of 100,000 characters
    # repeating two labels took 15 s to read
    class Nothing:
        def search_many(self, queries, k, **kwargs):
            return [[] for _ in queries]

    router = LlmRouter([Source(n, Nothing()) for n in ("wiki", "tickets", "product", "product tables")], None)
    start = time.perf_counter()
    assert router.parse("wiki tickets " * 8000, "q") == "wiki"
    assert time.perf_counter() - start < 2.0
    start = time.perf_counter()  # "product" inside each "product tables": the longer label is named
    assert router.parse("product tables " * 8000, "q") == "product tables"
    assert time.perf_counter() - start < 2.0


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8)), max_size=30))
def test_spans_inside_a_longer_span_are_those_the_pairwise_comparison_finds(pairs):
    from ragroute.route.llm import _inside_another

    spans = {(s, s + n) for s, n in pairs}
    naive = {(s, e) for s, e in spans if any(o <= s and e <= c and c - o > e - s for o, c in spans)}
    assert _inside_another(spans) == naive


def test_an_llm_reply_that_is_not_valid_text_fails_the_call_and_ask_json_prints(tmp_path):
    # the LLM gate kept its draft, the LLM router its answer in the trace: `ragroute ask --json`
    # raised UnicodeEncodeError (exit 1) on a "\ud800" in either
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.index.io import save_index

    reply = complete_safely(ScriptedLLM(replies=["people \ud800"]), "q")
    assert not reply.ok and "not valid text" in reply.error and reply.text == ""
    save_index(build_index(DOCS, "bm25", name="people"), tmp_path / "indexes" / "people")
    (tmp_path / "llms.py").write_text(
        "from ragroute.llm import ScriptedLLM\n\n"
        "def router():\n    return ScriptedLLM(default='people \\ud800')\n\n"
        "def gate():\n    return ScriptedLLM(default='Yes \\ud800', logprobs=[-0.1])\n\n"
        "def planner():\n"
        "    return ScriptedLLM(rules={'Answer the question from the passages': 'Kellow',\n"
        '        \'No searches yet\': \'{"action": "search", "query": "Where was Ada Brennan born?"}\'},\n'
        '        default=\'{"action": "answer", "answer": "Kellow"}\')\n'
    )
    (tmp_path / "ask.yaml").write_text(
        "backend: torch\ncache_dir: cache\n"
        "sources:\n  people: {index: indexes/people, description: People and places.}\n"
        "router: {kind: llm, llm: llms.py:router, fallback: prototype}\n"
        "gate: {kind: llm, llm: llms.py:gate, threshold: 0.0,\n"
        "       fallback: {kind: threshold, signal: rarity, value: min_zipf, below: 9.0}}\n"
        "llm: llms.py:planner\n"
    )
    result = CliRunner().invoke(
        main, ["ask", str(tmp_path / "ask.yaml"), "Where was Ada Brennan born?", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "answer: Kellow"
    fell_back = "the llm router fell back to prototype (LLM call failed: the LLM's answer is not valid text"
    assert fell_back in result.output
    assert "the llm gate's LLM signals failed" in result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["complete"] is True


def test_an_error_message_that_is_not_valid_text_is_escaped_in_the_trace():
    from ragroute.errors import error_summary

    assert error_summary(ValueError("bad byte \udcff")) == "ValueError: bad byte \\udcff"
    fallback = FallbackGate()
    gate = LLMGate([SelfAssessSignal(FakeLLM(ConnectionError("\ud800 reset")))], fallback=fallback)
    decision = gate.gate_many([QueryContext("Who founded Zorblat?")])[0]
    assert fallback.seen and lone_surrogate([decision.reason, decision.signals]) is None
    assert "ConnectionError: \\ud800 reset" in decision.reason


def test_an_error_summary_with_escapes_keeps_to_its_limit():
    """Until session 55 the message was cut to ``limit`` before its lone surrogates were escaped,
    each escape 5 characters longer: 40 of them made a 160-character line 360."""
    from ragroute.errors import error_summary

    summary = error_summary(ValueError("\udcff" * 200), 160)
    assert len(summary) == 160 and summary.startswith("ValueError: \\udcff")
    assert error_summary(ValueError("x" * 500), 40) == "ValueError: " + "x" * 28


@pytest.mark.parametrize("blank", ["\u200b", "\x00\x01", " \ufeff\u200b "])
def test_an_answerer_answering_only_invisible_characters_gave_no_answer(bm25, blank):
    # it was the step's answer, filled in for #1 ("Which river flows through \u200b?") and the run's
    planner = ScriptedPlanner(["Where was Ada Brennan born?", "Which river flows through #1?"])
    controller = StepwiseController(planner, bm25, answerer=ScriptedLLM(replies=[blank]))
    result = controller.run("Which river flows through the town where Ada Brennan was born?")
    assert [s.question for s in result.steps] == [
        "Where was Ada Brennan born?",
        "Which river flows through Ada Brennan?",  # step 1's top hit stands in for its answer
    ]
    assert all(s.answer == "" and s.answer_from == "top_hit" for s in result.steps)
    assert result.answer and has_visible_text(result.answer) and result.answer_from == "top_hit"
    answered = [t.detail for t in result.trace if t.stage == "step-answer"]
    assert all(d["error"].startswith("the LLM answered with nothing") for d in answered)


class _BrokenResponse:
    """A response whose text raises when read (a stream cut short)."""

    @property
    def text(self):
        raise RuntimeError("stream broke")


def test_a_response_that_raises_when_read_is_a_failed_call_not_a_crash(bm25):
    # reading the response was outside the guarded call: the answerer's raised out of run, the gate's
    # out of the LLM gate (no fallback to its LLM-free gate)
    llm = FakeLLM(_BrokenResponse())
    reply = complete_safely(llm, "q")
    assert not reply.ok and reply.error == "RuntimeError: stream broke"
    fallback = FallbackGate()
    decision = LLMGate([SelfAssessSignal(llm)], fallback=fallback).gate_many([QueryContext("Who?")])[0]
    assert fallback.seen == ["Who?"] and "stream broke" in decision.reason
    result = StepwiseController(ScriptedPlanner(["Where was Ada Brennan born?"]), bm25, answerer=llm).run(
        "Where was Ada Brennan born?"
    )
    assert result.complete and result.steps[0].hits and result.steps[0].answer_from == "top_hit"


@pytest.mark.parametrize(
    "logprobs, extra, shown",
    [
        (
            None,
            {"token_logprobs": [-0.01], "tokens": ["The", " Var", "ne"]},
            "1 log-probabilities for 3 tokens",
        ),
        (None, {"token_logprobs": [-0.01, -0.02], "tokens": ["Paris"]}, "2 log-probabilities for 1 tokens"),
        ([[SimpleNamespace(logprob=-0.01)], [], []], {}, "1 log-probabilities for 3 tokens"),
    ],
)
def test_log_probabilities_not_one_per_token_are_a_failed_signal(logprobs, extra, shown):
    # a mean over the tokens that had one (a very sure first token) read as the draft's confidence:
    # the gate answered from the model without retrieving
    response = SimpleNamespace(text="The Varne", logprobs=logprobs, additional_kwargs=extra)
    reply = complete_safely(FakeLLM(response), "q")
    assert reply.ok and reply.mean_logprob is None and shown in reply.logprob_problem
    fallback = FallbackGate()
    decision = LLMGate([LogprobSignal(FakeLLM(response))], fallback=fallback).gate_many(
        [QueryContext("Who?")]
    )[0]
    assert fallback.seen == ["Who?"] and decision.action == "retrieve"
    assert "do not match its tokens" in decision.reason
    whole = SimpleNamespace(
        text="Paris", logprobs=None, additional_kwargs={"token_logprobs": [-0.1], "tokens": ["Paris"]}
    )
    assert complete_safely(FakeLLM(whole), "q").mean_logprob == pytest.approx(-0.1)


def test_the_scripted_llm_gives_each_reply_once_from_many_threads():
    # two threads read the same turn: one reply given twice, another never
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(10):
            llm = ScriptedLLM(replies=[str(i) for i in range(400)])
            got: list[str] = []

            def ask(llm=llm, got=got):
                for _ in range(50):
                    got.append(llm.complete("q").text)

            threads = [threading.Thread(target=ask) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert Counter(got) == Counter(str(i) for i in range(400))
            assert llm.turn == llm.calls == len(llm.prompts) == 400
    finally:
        sys.setswitchinterval(switch)


def test_the_gating_wrappers_give_the_same_results_sync_and_async_over_an_llm_gate(bm25):
    import asyncio

    from ragroute.integrations.llamaindex_gate import GatedLlamaRetriever, StepwiseLlamaRetriever

    llm = ScriptedLLM(rules={"Kellow": "No.", "capital": "Yes."}, default="zzz", logprobs=[-0.1])
    gate = LLMGate([SelfAssessSignal(llm)], fallback=FallbackGate())
    gated = GatedLlamaRetriever(gate, bm25, similarity_top_k=2)
    controller = StepwiseController(
        ScriptedPlanner(["Where was Ada Brennan born?", "Who is the mayor of #1?"]), bm25
    )
    stepwise = StepwiseLlamaRetriever(controller, similarity_top_k=3)
    for query in ("Who is the mayor of Kellow?", "What is the capital of France?", "Where is Dunmore?"):
        nodes, outcome = gated.retrieve_with_decision(query)
        anodes, aoutcome = asyncio.run(gated.aretrieve_with_decision(query))
        assert [(n.node.node_id, n.score) for n in nodes] == [(n.node.node_id, n.score) for n in anodes]
        assert (outcome.gate.action, outcome.gate.reason) == (aoutcome.gate.action, aoutcome.gate.reason)
        steps, run = stepwise.retrieve_with_decision(query)
        asteps, arun = asyncio.run(stepwise.aretrieve_with_decision(query))
        assert [n.node.node_id for n in steps] == [n.node.node_id for n in asteps]
        assert run.answer == arun.answer and run.complete == arun.complete


@pytest.mark.parametrize("timeout_s", [1e10, 1e300])
def test_a_timeout_longer_than_a_thread_can_wait_lets_the_call_answer(timeout_s):
    # a wait past threading.TIMEOUT_MAX raised OverflowError: every call with such a timeout (no
    # timeout, in effect) failed at once, and the router or gate asking fell back on every query
    reply = complete_safely(ScriptedLLM(replies=["astro"], delay_s=0.05), "q", timeout_s=timeout_s)
    assert reply.ok and reply.text == "astro", reply.error
    router = LlmRouter(
        [Source("astro", build_index(DOCS, "bm25", name="astro"))],
        ScriptedLLM(replies=["astro"], delay_s=0.05),
        timeout_s=timeout_s,
    )
    decision = router.route("Where was Ada Brennan born?")
    assert decision.chosen == ["astro"] and decision.decided_by == "llm"


# --------------------------------------------------------------------------- the local LLM's settings


def _fake_local_llm(monkeypatch, **settings):
    """A LocalLLM over a fake model (greedy 'Paris' then EOS) and tokenizer: no SmolLM2 loaded."""
    import torch

    import ragroute.llm.local as local

    class Tokenizer:
        chat_template = None
        eos_token_id = 0

        def __call__(self, text, **kwargs):
            return {"input_ids": torch.ones((1, 3), dtype=torch.long)}

        def decode(self, ids, skip_special_tokens=False):
            return "".join("Paris" if int(i) == 5 else "" for i in ids)

    def generate(input_ids, **kwargs):
        logits = torch.zeros((1, 8))
        logits[0, 5] = 4.0
        sequences = torch.cat([input_ids, torch.tensor([[5, 0]])], dim=1)
        return SimpleNamespace(sequences=sequences, logits=(logits, logits))

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192), generate=generate)
    llm = local.LocalLLM(**settings)
    monkeypatch.setattr(
        local, "_LOADED", {(str(llm.cache_folder()), llm.cache): (model, Tokenizer(), "cache", 0.1)}
    )
    return llm


def test_the_local_llm_refuses_a_per_call_setting_it_does_not_apply(monkeypatch):
    """`stop=[...]` or `max_tokens=3` were taken and ignored until session 55 (the answer went on
    past the stop sequence, to max_new_tokens): now a one-line error every caller falls back on."""
    llm = _fake_local_llm(monkeypatch)
    reply = complete_safely(llm, "What is the capital of France?", temperature=0, seed=1, max_new_tokens=4)
    assert reply.ok and reply.text == "Paris" and len(reply.logprobs) == 1
    reply = complete_safely(llm, "What is the capital of France?", stop=["."], max_tokens=3)
    assert reply.error == (
        "RagrouteError: SmolLM2-135M-Instruct-Q4_1 takes max_new_tokens, temperature, seed per call, "
        "not max_tokens, stop"
    )


def test_the_local_llm_sets_its_threads_also_on_a_model_another_loaded(monkeypatch):
    """Two LocalLLMs share one loaded model; until session 55 only the one that loaded it set torch's
    threads, and `threads: 1` of the other (a gate's LLM beside `ragroute ask`'s) was ignored."""
    import torch

    set_to: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    llm = _fake_local_llm(monkeypatch, threads=1)
    assert llm.complete("q").text == "Paris"
    assert set_to == [1]


def test_the_local_llm_cache_dir_reads_the_home_folder(monkeypatch, tmp_path):
    """`cache_dir="~/llm"` (or `llm_from_settings` without a config folder) made a folder named "~"
    in the working folder until session 55."""
    from ragroute.llm.local import LocalLLM

    monkeypatch.setenv("HOME", str(tmp_path))
    assert LocalLLM(cache_dir="~/llm").cache_folder() == tmp_path / "llm" / "SmolLM2-135M-Instruct-Q4_1"


@pytest.mark.parametrize("logprobs", [["x"], [[-0.1], "x"], [True], [-0.1, [-0.2]]])
def test_scripted_logprobs_that_no_call_can_read_are_refused_at_load(logprobs):
    """Accepted until session 55, and every call of the scripted LLM then failed."""
    from ragroute.errors import RagrouteError
    from ragroute.llm.settings import llm_from_settings

    with pytest.raises(RagrouteError, match="'logprobs' must be numbers"):
        llm_from_settings({"kind": "scripted", "default": "Paris", "logprobs": logprobs})
    llm = llm_from_settings({"kind": "scripted", "default": "Paris", "logprobs": [[-0.1], [-0.2, -0.3]]})
    assert complete_safely(llm, "q").logprobs == [-0.1]
