"""LLM gate signals and the LLM gate (ragroute.gate.llm_signals), with scripted LLMs only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragroute.context import QueryContext
from ragroute.gate import TrainedGate
from ragroute.gate.controller import StepwiseController
from ragroute.gate.llm_signals import (
    AgreementSignal,
    LLMGate,
    LogprobSignal,
    SelfAssessSignal,
    make_llm_signal,
    normalise_answer,
)
from ragroute.gate.planners import ScriptedPlanner
from ragroute.index.build import build_index
from ragroute.llm import ScriptedLLM, complete_safely, token_logprobs
from ragroute.pipeline import GateDecision
from ragroute.types import Document

SURE = [-0.05, -0.1, -0.02]
UNSURE = [-1.2, -2.5, -0.9]


def contexts(*texts: str) -> list[QueryContext]:
    return [QueryContext(t) for t in texts]


def knowing_llm(**extra) -> ScriptedLLM:
    """Sure about capitals, unsure about Zorblat; says yes/no accordingly."""
    return ScriptedLLM(
        rules={
            "Reply with yes or no.\nQuestion: What is the capital": "Yes.",
            "own knowledge": "No, I would need to look it up.",
            "capital": "Paris",
            "Zorblat": "Blorp",
        },
        logprobs=[[-0.5], [-0.5], SURE, UNSURE],
        **extra,
    )


def test_calls_and_logprob_reading():
    llm = ScriptedLLM(replies=["Paris"], logprobs=SURE)
    reply = complete_safely(llm, "q")
    assert reply.ok and reply.logprobs == SURE and reply.mean_logprob == pytest.approx(np.mean(SURE))
    assert token_logprobs(object()) is None
    failing = complete_safely(ScriptedLLM(replies=[TimeoutError("slow")]), "q")
    assert not failing.ok and failing.error == "TimeoutError: slow" and failing.text == ""
    own = complete_safely(ScriptedLLM(replies=[TimeoutError("slow")]), "q", timeout_s=5)
    assert own.error == "TimeoutError: slow"  # the LLM's own error, not our timeout
    late = complete_safely(ScriptedLLM(replies=["x"], delay_s=0.3), "q", timeout_s=0.05)
    assert late.error == "TimeoutError: no answer within 0.05 s"


def test_hung_llm_calls_never_block_later_calls():
    # until session 36 the calls shared four pool workers: four hung calls made the next healthy
    # call time out without reaching its LLM, and it still ran later, after its caller gave up
    import threading

    release = threading.Event()

    class Hung:
        def complete(self, prompt, **kwargs):
            release.wait(10)
            return "late"

    try:
        for _ in range(5):
            assert complete_safely(Hung(), "q", timeout_s=0.05).error.startswith("TimeoutError")
        healthy = complete_safely(ScriptedLLM(replies=["Paris"]), "q", timeout_s=2)
        assert healthy.ok and healthy.text == "Paris" and healthy.ms < 1000
    finally:
        release.set()


def test_logprob_signal_values_and_missing_logprobs():
    signal = LogprobSignal(knowing_llm())
    values = signal.values(contexts("What is the capital of France?", "Who founded Zorblat?"), None)
    assert signal.columns() == ["llm_logprob.mean_logprob", "llm_logprob.min_logprob", "llm_logprob.ok"]
    assert values[0].tolist() == pytest.approx([np.mean(SURE), -0.1, 1.0])
    assert values[1, 1] == -2.5
    assert signal.confidence(values[0]) > 0.9 > 0.1 > signal.confidence(values[1])
    assert signal.explain(QueryContext("What is the capital of France?"), None)["draft"] == "Paris"
    blind = LogprobSignal(ScriptedLLM(replies=["Paris"]))  # an LLM without log-probabilities
    row = blind.values(contexts("What is the capital of France?"), None)[0]
    assert row.tolist() == [0.0, 0.0, 0.0]
    assert (
        "no token log-probabilities"
        in blind.explain(QueryContext("What is the capital of France?"), None)["error"]
    )


@pytest.mark.parametrize("llm", [ScriptedLLM(replies=[" "], logprobs=[]), ScriptedLLM(replies=[""])])
def test_an_empty_draft_is_said_to_be_empty_not_an_llm_without_log_probabilities(llm):
    """The local LLM that ends its draft at once returns no tokens, so no log-probabilities: until
    session 53 the signal said the LLM exposes none, which it does."""
    signal = LogprobSignal(llm)
    assert signal.values(contexts("Who founded Zorblat?"), None)[0].tolist() == [0.0, 0.0, 0.0]
    error = signal.explain(QueryContext("Who founded Zorblat?"), None)["error"]
    assert error == "the LLM's draft answer is empty: no tokens to read log-probabilities of"


def test_agreement_signal_counts_normalised_answers_and_passes_sampling_settings():
    llm = ScriptedLLM(replies=["Paris", "paris.", "The Lyon"], cycle=True)
    signal = AgreementSignal(llm, samples=3)
    row = signal.values(contexts("What is the capital of France?"), None)[0]
    assert row.tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert normalise_answer("The  Lyon!") == "lyon"
    with pytest.raises(ValueError):
        AgreementSignal(llm, samples=1)
    empty = AgreementSignal(ScriptedLLM(replies=["   "]), samples=2)
    assert empty.values(contexts("q"), None)[0, 2] == 0.0 and "empty" in empty.error("q")


def test_self_assessment_yes_no_and_unparseable():
    llm = ScriptedLLM(rules={"France": "Yes, I can.", "Zorblat": "no", "weather": "Hmm, it depends."})
    signal = SelfAssessSignal(llm)
    values = signal.values(contexts("capital of France?", "Zorblat founder?", "weather tomorrow?"), None)
    assert values.tolist() == [[1.0, 1.0], [0.0, 1.0], [0.5, 0.0]]
    assert "unparseable self-assessment" in signal.error("weather tomorrow?")
    # "I can't" starts like "I can": it was read as yes, so the gate skipped retrieval
    for reply, known in (
        ("I can't answer that.", 0.0),
        ("I can\u2019t", 0.0),
        ("I cant", 0.0),
        ("I don't know.", 0.0),
        ("I cannot", 0.0),
        ("I can answer it", 1.0),
        ("Sure", 1.0),
    ):
        assert SelfAssessSignal(ScriptedLLM(replies=[reply])).values(contexts("q"), None)[0, 0] == known, (
            reply
        )
    assert make_llm_signal({"kind": "llm_agreement", "samples": 4}, llm).samples == 4
    from ragroute.errors import RagrouteError

    with pytest.raises(RagrouteError, match="unknown LLM gate signal"):
        make_llm_signal("llm_magic", llm)


def test_llm_gate_answers_when_sure_retrieves_when_not():
    llm = knowing_llm()
    gate = LLMGate([LogprobSignal(llm), SelfAssessSignal(llm)])
    sure, unsure = gate.gate_many(contexts("What is the capital of France?", "Who founded Zorblat?"))
    assert sure.action == "answer" and sure.probability < 0.1
    assert unsure.action == "retrieve" and unsure.probability > 0.9
    assert "LLM confidence llm_logprob" in unsure.reason
    assert sure.signals["values"]["llm_self.known"] == 1.0 and "fallback" not in sure.signals


class RecordingGate:
    name = "recording"

    def __init__(self):
        self.seen = []

    def gate_many(self, contexts):
        self.seen.extend(c.text for c in contexts)
        return [
            GateDecision("retrieve", 0.77, {"rule": "always"}, reason="always retrieve") for _ in contexts
        ]


@pytest.mark.parametrize(
    "reply",
    [ConnectionError("server went away"), "Well, that depends on many things."],
)
def test_llm_gate_falls_back_to_llm_free_signals_with_the_reason(reply):
    fallback = RecordingGate()
    llm = ScriptedLLM(replies=[reply])
    gate = LLMGate([SelfAssessSignal(llm)], fallback=fallback)
    decision = gate.gate_many(contexts("Who founded Zorblat?"))[0]
    assert fallback.seen == ["Who founded Zorblat?"]
    assert decision.action == "retrieve" and decision.probability == 0.77
    assert decision.reason.startswith("LLM signals failed (llm_self: ")
    assert "fell back to the recording gate: always retrieve" in decision.reason
    assert decision.signals["fallback"].startswith("recording: llm_self:")


@pytest.mark.parametrize(
    "logprobs, shown",
    [
        ([float("nan"), -0.2], "nan"),
        ([6.0, 5.0], "6.0"),
        ([-0.1, float("inf")], "inf"),
        ([0.5, -0.1], "0.5"),  # one raw logit among log-probabilities
    ],
)
def test_log_probabilities_that_are_none_are_a_failed_signal_not_a_confidence(logprobs, shown):
    # NaN was read as ok (mean -100: retrieve), raw logits as confidence 1.00 (answer, no retrieval)
    signal = LogprobSignal(ScriptedLLM(replies=["Paris"], logprobs=logprobs))
    row = signal.values(contexts("What is the capital of France?"), None)[0]
    assert row.tolist() == [0.0, 0.0, 0.0]  # ok = 0
    assert complete_safely(ScriptedLLM(replies=["Paris"], logprobs=logprobs), "q").mean_logprob is None
    error = signal.explain(QueryContext("What is the capital of France?"), None)["error"]
    assert "are not log-probabilities" in error and shown in error
    fallback = RecordingGate()
    llm = ScriptedLLM(replies=["Paris"], logprobs=logprobs)
    decision = LLMGate([LogprobSignal(llm)], fallback=fallback).gate_many(contexts("Capital of France?"))[0]
    assert fallback.seen == ["Capital of France?"] and decision.probability == 0.77
    assert decision.reason.startswith("LLM signals failed (llm_logprob: the LLM's token log-probabilities")


def test_each_query_reads_its_own_llm_outcome_when_two_share_a_text():
    # the first call fails, the second answers unsure; until session 36 the outcome was kept by
    # text, so the first query read the second's success over its own neutral values (ok = 0,
    # confidence 0.97 for llm_logprob) and answered without retrieval instead of falling back
    llm = ScriptedLLM(replies=[ConnectionError("flaky"), "Zorblat Inc"], logprobs=[-3.0, -4.0])
    fallback = RecordingGate()
    query = "Who founded the Zorblat Orrin Works company?"
    first, second = LLMGate([LogprobSignal(llm)], fallback=fallback).gate_many(contexts(query, query))
    assert fallback.seen == [query]
    assert first.signals["fallback"].endswith("llm_logprob: ConnectionError: flaky")
    assert second.action == "retrieve"
    assert second.signals["llm_logprob"] == {"draft": "Zorblat Inc", "tokens": 2}
    signal = LogprobSignal(ScriptedLLM(replies=[ConnectionError("flaky"), "Paris"], logprobs=[-0.1]))
    batch = contexts(query, query)
    signal.values(batch, None)
    assert "flaky" in signal.explain(batch[0], None)["error"]
    assert signal.explain(batch[1], None)["draft"] == "Paris"


def test_llm_settings_that_would_decide_nonsense_are_refused():
    # each was accepted until session 36: NaN probabilities, a flipped confidence, a prompt that
    # never sends the query, a threshold no probability reaches, weights that decide nothing
    llm = ScriptedLLM(replies=["x"])
    for bad in ({"scale": 0}, {"scale": -0.15}, {"center": float("nan")}):
        with pytest.raises(ValueError, match="scale|center"):
            LogprobSignal(llm, **bad)
    with pytest.raises(ValueError, match="must hold the {query} placeholder"):
        SelfAssessSignal(llm, prompt="Reply yes or no: are you ready?")
    with pytest.raises(ValueError, match="temperature"):
        AgreementSignal(llm, temperature=-1)
    for threshold in (-1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            LLMGate([SelfAssessSignal(llm)], threshold=threshold)
    with pytest.raises(ValueError, match="weighted 0"):
        LLMGate([SelfAssessSignal(llm)], weights={"llm_self": 0})
    with pytest.raises(ValueError, match=">= 0"):
        LLMGate([SelfAssessSignal(llm)], weights={"llm_self": -1})


def test_a_weight_of_no_signal_of_the_gate_is_refused():
    """A `gate:` config's weights: refused a name none of the gate's signals has; LLMGate took it
    (a typo, or a signal left out) and decided with every signal weighted 1 (until session 52)."""
    llm = ScriptedLLM(replies=["yes"])
    for weights in ({"llm_slf": 3}, {"llm_self": 1, "llm_logprob": 5}):
        with pytest.raises(ValueError) as info:
            LLMGate([SelfAssessSignal(llm)], weights=weights)
        assert str(info.value) == f"weights: {list(weights)[-1]!r} is none of the gate's signals (llm_self)"
    assert LLMGate([SelfAssessSignal(llm)], weights={"llm_self": 2}).weights == {"llm_self": 2.0}


def test_a_signal_weighted_0_informs_but_never_decides_alone():
    # llm_logprob fails, llm_self (weight 0) answers "yes": the weighted mean had no weight, and
    # `or 1.0` made it p_retrieve 1.0 while the reason read "LLM confidence llm_self 1.00"
    llm = ScriptedLLM(rules={"Zorblat": "Yes"})  # no log-probabilities
    fallback = RecordingGate()
    gate = LLMGate([LogprobSignal(llm), SelfAssessSignal(llm)], fallback=fallback, weights={"llm_self": 0})
    decision = gate.gate_many(contexts("Who founded Zorblat?"))[0]
    assert fallback.seen == ["Who founded Zorblat?"] and decision.probability == 0.77
    assert "llm_self: answered but weighted 0" in decision.signals["fallback"]


def test_llm_gate_default_fallback_is_the_rarity_threshold_and_partial_failures_are_kept():
    broken = ScriptedLLM(replies=[RuntimeError("boom")])
    gate = LLMGate([LogprobSignal(broken)])
    rare, common = gate.gate_many(contexts("Who founded Zorblatquix Vreemond?", "What is the time now?"))
    assert "rarity" in rare.signals["fallback"] or "threshold" in rare.signals["fallback"]
    assert rare.action == "retrieve" and common.action == "answer"
    mixed = LLMGate(
        [LogprobSignal(ScriptedLLM(replies=["Paris"])), SelfAssessSignal(ScriptedLLM(replies=["yes"]))]
    )
    decision = mixed.gate_many(contexts("What is the capital of France?"))[0]
    assert decision.action == "answer" and "llm_logprob" in decision.signals["errors"]
    assert "(llm_logprob failed)" in decision.reason


def test_llm_gate_stops_without_calling_the_llm_and_reports_fallback_in_the_controller():
    llm = knowing_llm()
    gate = LLMGate([LogprobSignal(llm)], max_steps=1)
    stop = gate.gate_many([QueryContext("What is the capital of France?", step=1)])[0]
    assert stop.action == "stop" and llm.calls == 0
    # no LLM asked, no probability computed: none reported (it read 1.0, a certainty from nothing)
    assert math.isnan(stop.probability)
    repeat = QueryContext("Capital of France?", step=0, history=[{"step": 0, "query": "capital of france?"}])
    assert math.isnan(gate.gate_many([repeat])[0].probability) and llm.calls == 0
    docs = [Document("d1", "Zorblat was founded by Ada Brennan in 1901.", title="Zorblat")]
    index = build_index(docs, "bm25", name="kb")
    failing = LLMGate(
        [SelfAssessSignal(ScriptedLLM(replies=[ConnectionError("down")]))], fallback=RecordingGate()
    )
    result = StepwiseController(ScriptedPlanner(["Who founded Zorblat?"]), index, gate=failing).run("q")
    gate_step = [t.detail for t in result.trace if t.stage == "gate"][0]
    assert "ConnectionError: down" in gate_step["fallback"] and gate_step["action"] == "retrieve"
    assert result.retrieval_calls == 1


def test_llm_signal_stacks_in_a_trained_gate():
    llm = knowing_llm()
    texts = [f"What is the capital of country {i}?" for i in range(12)] + [
        f"Who founded Zorblat number {i}?" for i in range(12)
    ]
    retrieve = [False] * 12 + [True] * 12
    gate = TrainedGate.fit(texts, retrieve, signals=[LogprobSignal(llm)], C=1.0)
    decisions = gate.gate_many(contexts("What is the capital of Peru?", "Who founded Zorblat Inc?"))
    assert [d.action for d in decisions] == ["answer", "retrieve"]


def test_llm_gate_from_settings():
    from ragroute.errors import RagrouteError
    from ragroute.gate.factories import llm as llm_gate
    from ragroute.route.factories import RouterBuild

    build = RouterBuild([], None, where="test.yaml")
    settings = {
        "kind": "llm",
        "llm": {"kind": "scripted", "rules": {"yes or no": "yes"}, "default": "Paris", "logprobs": [-0.1]},
        "signals": ["llm_self", {"kind": "llm_logprob", "center": -0.3}],
        "fallback": {"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": 2.0},
        "timeout_s": 5,
    }
    gate = llm_gate(settings, build)
    assert [s.kind for s in gate.signals] == ["llm_self", "llm_logprob"] and gate.signals[1].center == -0.3
    assert gate.signals[0].timeout_s == 5 and gate.fallback.name == "threshold"
    assert gate.gate_many(contexts("What is the capital of France?"))[0].action == "answer"
    with pytest.raises(RagrouteError, match="unknown llm gate key"):
        llm_gate({"kind": "llm", "llm": "scripted", "colour": "red"}, build)
    with pytest.raises(RagrouteError, match="must not need an LLM"):
        llm_gate({"kind": "llm", "llm": "scripted", "fallback": {"kind": "llm"}}, build)


def test_a_trained_gate_over_llm_signals_fits_in_process_but_refuses_to_save(tmp_path):
    """Saved, it could never load (its LLM is not stored): `gate decide` then failed with
    'unknown gate signal'. Saving now refuses in one line, and nothing is written."""
    from ragroute.errors import RagrouteError
    from ragroute.gate.trained import TrainedGate

    texts = ["capital of France?", "capital of Peru?", "Zorblat founder?", "Zorblat age?"] * 3
    retrieve = [False, False, True, True] * 3
    llm = ScriptedLLM(rules={"capital": "Paris", "Zorblat": "Blorp"}, logprobs=[SURE, UNSURE], cycle=True)
    gate = TrainedGate.fit(texts, retrieve, signals=[LogprobSignal(llm)])
    assert gate.gate_many(["capital of Chile?"])[0].action == "answer"  # usable where it was fitted
    with pytest.raises(RagrouteError, match=r"cannot save a gate over LLM signals \(llm_logprob\)"):
        gate.save(tmp_path / "gate")
    assert not (tmp_path / "gate").exists()


class _OddLogprobs:
    """An LLM whose response carries log-probabilities in a shape no llama-index LLM uses."""

    def __init__(self, logprobs):
        self.logprobs = logprobs

    def complete(self, prompt, **kwargs):
        from types import SimpleNamespace

        return SimpleNamespace(text="Paris", logprobs=self.logprobs, additional_kwargs={})


@pytest.mark.parametrize(
    "logprobs",
    [[{"token": "Paris"}], [[type("P", (), {"logprob": "high"})()]], 5, [[-0.1], {"x": 1}]],
)
def test_log_probabilities_in_an_odd_shape_are_none_not_a_crash(logprobs):
    # until session 43 reading them raised out of complete_safely (KeyError, ValueError, TypeError)
    reply = complete_safely(_OddLogprobs(logprobs), "q")
    assert reply.ok and reply.text == "Paris" and reply.logprobs is None
    fallback = RecordingGate()
    gate = LLMGate([LogprobSignal(_OddLogprobs(logprobs))], fallback=fallback)
    decision = gate.gate_many(contexts("Capital of France?"))[0]
    assert fallback.seen == ["Capital of France?"]
    assert "exposes no token log-probabilities" in decision.reason


def test_an_llm_gate_refuses_two_signals_of_one_kind():
    """Values, confidences and weights are the kind's: until session 49 the later of two
    ``llm_logprob`` signals (over two LLMs, or two centres) replaced the earlier's outcome, whose
    LLM was asked and never heard (a sure LLM and an unsure one: p_retrieve 1.0, as the unsure alone)."""
    sure, unsure = ScriptedLLM(default="Paris", logprobs=SURE), ScriptedLLM(default="Paris", logprobs=UNSURE)
    with pytest.raises(ValueError, match="two signals of kind 'llm_logprob'"):
        LLMGate([LogprobSignal(sure), LogprobSignal(unsure)])
    with pytest.raises(ValueError, match="two signals of kind 'llm_self'"):
        LLMGate([SelfAssessSignal(sure), LogprobSignal(sure), SelfAssessSignal(unsure)])
    assert LLMGate([LogprobSignal(sure), SelfAssessSignal(unsure)]).signals  # one of each kind is fine


def test_a_gate_not_fitted_on_an_llm_signals_failure_retrieves_when_it_fails():
    """A failed llm_logprob reads (0.0, 0.0, ok 0): a log-probability of 0 is certainty, so until
    session 52 a threshold gate on it, or a trained gate that never saw the LLM fail, answered
    directly from the very model that had just failed. It retrieves now, and says why."""
    from ragroute.gate.trained import ThresholdGate

    down = ScriptedLLM(replies=[ConnectionError("down")])
    threshold = ThresholdGate(LogprobSignal(down), "mean_logprob", below=-0.5)
    decision = threshold.gate_many(contexts("What is the capital of Peru?"))[0]
    assert decision.action == "retrieve" and decision.probability >= 0.5
    assert decision.reason.startswith("llm_logprob failed, which this gate was not fitted to read")
    assert "ConnectionError: down" in decision.signals["llm_logprob"]["error"]
    assert decision.signals["p_retrieve_from_failed_values"] < 0.5  # what the neutral values said

    texts = [f"What is the capital of country {i}?" for i in range(12)] + [
        f"Who founded Zorblat number {i}?" for i in range(12)
    ]
    retrieve = [False] * 12 + [True] * 12
    trained = TrainedGate.fit(texts, retrieve, signals=[LogprobSignal(knowing_llm())], C=1.0)
    assert trained.gate_many(contexts("What is the capital of Peru?"))[0].action == "answer"
    trained.signals[0].llm = ScriptedLLM(replies=[ConnectionError("down")])
    failed = trained.gate_many(contexts("What is the capital of Peru?"))[0]
    assert failed.action == "retrieve" and "was not fitted to read" in failed.reason

    # fitted where the LLM failed too (its ok column carries a weight): the model decides, as fitted
    flaky = ScriptedLLM(rules={"capital": "Paris", "Zorblat": ConnectionError("down")}, logprobs=[SURE, SURE])
    seen = TrainedGate.fit(texts, retrieve, signals=[LogprobSignal(flaky)], C=1.0)
    seen.signals[0].llm = ScriptedLLM(replies=[ConnectionError("down")])
    read = seen.gate_many(contexts("What is the capital of Peru?"))[0]
    assert read.action == "retrieve" and "not fitted to read" not in read.reason
    assert "p_retrieve_from_failed_values" not in read.signals


@pytest.mark.parametrize(
    ("reply", "known"), [("No doubt, yes.", 1.0), ("No problem! It is Paris.", 1.0), ("No.", 0.0)]
)
def test_no_doubt_and_no_problem_are_a_yes(reply, known):
    """A reply starting "No doubt" or "No problem" says the LLM can answer: until session 55 its
    leading "no" read it as a no (known 0), and the gate retrieved for the model that was sure."""
    signal = SelfAssessSignal(ScriptedLLM(replies=[reply]))
    assert signal.values(contexts("What is the capital of France?"), None)[0].tolist() == [known, 1.0]


def test_agreement_compares_answers_case_folded_and_in_one_unicode_form():
    """Samples that differ only by case folding ("Straße", "STRASSE") or by how an accent is
    encoded (composed or decomposed) are one answer: until session 55 (lower case alone) each was
    an answer of its own, and the agreement read 1/3 where the LLM agreed with itself."""
    assert normalise_answer("Hauptstraße") == normalise_answer("HAUPTSTRASSE") == "hauptstrasse"
    assert normalise_answer("Caf\u00e9 Flore") == normalise_answer("Cafe\u0301 flore.")
    llm = ScriptedLLM(replies=["Hauptstraße", "HAUPTSTRASSE", "Hauptstrasse"], cycle=True)
    row = AgreementSignal(llm, samples=3).values(contexts("Which street?"), None)[0]
    assert row.tolist() == pytest.approx([1.0, 1 / 3, 1.0])


@pytest.mark.parametrize("reply", ["I can not answer that without looking it up.", "i can  not", "Can not"])
def test_i_can_not_is_a_no_not_a_yes(reply):
    """A reply of "I can not" starts like "I can": until session 54 it was read as yes (known 1), so the gate
    answered from the model that had just said it could not."""
    signal = SelfAssessSignal(ScriptedLLM(replies=[reply]))
    assert signal.values(contexts("Who founded Zorblat?"), None)[0].tolist() == [0.0, 1.0]
    gate = LLMGate([SelfAssessSignal(ScriptedLLM(replies=[reply]))], fallback=RecordingGate())
    assert gate.gate_many(contexts("Who founded Zorblat?"))[0].action == "retrieve"


def test_a_probability_that_reaches_the_threshold_retrieves_despite_float_rounding():
    """4 of 5 samples agree: p_retrieve is 1 - 0.8, which reaches a threshold of 0.2; computed as
    0.19999999999999996 it answered without retrieving until session 54."""
    llm = ScriptedLLM(replies=["Paris", "Paris", "Paris", "Paris", "Lyon"], cycle=True)
    decision = LLMGate([AgreementSignal(llm, samples=5)], threshold=0.2).gate_many(contexts("Capital?"))[0]
    assert decision.action == "retrieve" and decision.probability == 0.2
    assert decision.reason.startswith("p_retrieve 0.200 >= threshold 0.200")
    below = ScriptedLLM(replies=["Paris", "Paris", "Paris", "Paris", "Paris"], cycle=True)
    sure = LLMGate([AgreementSignal(below, samples=5)], threshold=0.2).gate_many(contexts("Capital?"))[0]
    assert sure.action == "answer"


@pytest.mark.parametrize("prompt", ["Q: {query[0]}", "Q: {query.text}", "Q: {query} {0}", "Q: {query} {}"])
def test_a_prompt_with_another_field_than_query_is_refused_in_one_line(prompt):
    """Until session 54 "{query[0]}" passed the check and sent the LLM the query's first letter, and
    "{query.text}" was an AttributeError traceback at load and in `config check`."""
    from ragroute.errors import RagrouteError

    with pytest.raises(ValueError, match="may hold only the {query} placeholder"):
        SelfAssessSignal(ScriptedLLM(), prompt=prompt)
    with pytest.raises(RagrouteError, match="may hold only the {query} placeholder"):
        make_llm_signal({"kind": "llm_logprob", "prompt": prompt}, None)
    assert SelfAssessSignal(ScriptedLLM(), prompt="Q: {query} {{x}}").prompt == "Q: {query} {{x}}"


def test_an_empty_signals_list_is_refused_not_read_as_the_default_signals():
    """`signals: []` was read as the default [llm_logprob, llm_self] (until session 54): a gate the
    config said nothing of, asking the LLM twice per query."""
    from ragroute.errors import RagrouteError
    from ragroute.gate.factories import llm as llm_gate
    from ragroute.route.factories import RouterBuild

    build = RouterBuild([], None, where="test.yaml")
    with pytest.raises(RagrouteError, match="not an empty list"):
        llm_gate({"kind": "llm", "llm": {"kind": "scripted", "default": "yes"}, "signals": []}, build)
    gate = llm_gate({"kind": "llm", "llm": {"kind": "scripted", "default": "yes"}}, build)
    assert [s.kind for s in gate.signals] == ["llm_logprob", "llm_self"]
