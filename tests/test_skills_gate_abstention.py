"""Skill-router abstention through a retrieval gate (issue #9 with #11's gates): a scripted gate
makes the router abstain or not, p_applies and the trace, the router's threshold over the gate's,
a gate folder by path, save / load round trip, one-line errors, and the CLI's --abstain-gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import HashingEncoder

from ragroute.errors import RagrouteError
from ragroute.pipeline.stages import GateDecision
from ragroute.skills import load_catalogue
from ragroute.skills.router import GateAbstention, SkillRouter, balanced_accuracy

DATA = Path(__file__).parent / "data" / "skills" / "router"


class ScriptedGate:
    """'answer' (no skill applies) for tasks naming one of ``answer_words``; records its calls."""

    name = "scripted"
    threshold = 0.5

    def __init__(self, answer_words=("haiku", "joke", "poetry")):
        self.answer_words = answer_words
        self.calls: list[list[str]] = []

    def gate_many(self, contexts):
        self.calls.append([c.text for c in contexts])
        out = []
        for c in contexts:
            answer = any(w in c.text for w in self.answer_words)
            p = 0.2 if answer else 0.9
            action = "answer" if answer else "retrieve"
            out.append(GateDecision(action, p, {"values": {"scripted.p": p}}, reason=f"scripted {action}"))
        return out


def _labels():
    rows = [json.loads(line) for line in (DATA / "need_tool.jsonl").read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows], [r["label"] == "tool" for r in rows]


@pytest.fixture(scope="module")
def router() -> SkillRouter:
    return SkillRouter.build(load_catalogue(DATA), HashingEncoder(dim=256))


@pytest.fixture(scope="module")
def gate_dir(tmp_path_factory, router) -> Path:
    """A text-probe gate (the #11 gate) fitted on the toy labels with the router's encoder."""
    from ragroute.gate import TrainedGate

    texts, applies = _labels()
    gate = TrainedGate.fit(
        texts, applies, router.index.encoder, signals=["text_probe"], columns=["text_probe.logit"]
    )
    folder = tmp_path_factory.mktemp("gates") / "need_tool"
    gate.save(folder)
    return folder


def test_scripted_gate_decides_abstention_with_p_applies_and_trace(router):
    gate = ScriptedGate()
    gated = router.with_options(abstention=gate)
    routes = gated.route_many(["write a haiku about rain", "send an email to my boss"], k=3)
    assert gate.calls == [["write a haiku about rain", "send an email to my boss"]]  # one batch
    haiku, email = routes
    assert haiku.abstain and haiku.p_applies == 0.2 and haiku.best is None and haiku.skills
    assert not email.abstain and email.p_applies == 0.9 and email.best is not None
    step = haiku.trace[-1]
    assert step.stage == "abstain" and step.detail["model"] == "gate:scripted"
    assert step.detail["gate"]["action"] == "answer" and step.detail["gate"]["reason"] == "scripted answer"
    assert step.detail["gate"]["values"] == {"scripted.p": 0.2} and step.detail["threshold"] == 0.5
    assert "dense_top" in step.detail["signals"]  # the stage-1 signals stay in the trace
    assert haiku.to_dict()["p_applies"] == 0.2 and haiku.to_dict()["abstain"] is True
    assert gated.describe()["abstention"] == {"gate": None, "name": "scripted"}
    # a gate that sends everything to retrieval never abstains; without a gate nothing is asked
    assert not any(
        r.abstain for r in router.with_options(abstention=ScriptedGate(())).route_many(["a haiku"])
    )
    plain = gated.with_options(abstention=None)
    assert plain.abstention_gate is None and plain.route("a haiku").p_applies is None


def test_router_threshold_replaces_the_gates_operating_point(router):
    gated = router.with_options(abstention={"gate": ScriptedGate()})
    assert gated.with_options(threshold=0.1).route("a haiku please").abstain is False  # 0.2 >= 0.1
    strict = gated.with_options(threshold=0.95).route("send an email")
    assert strict.abstain is True and strict.threshold == 0.95  # 0.9 < 0.95


def test_gate_folder_by_path_abstains_and_round_trips(router, gate_dir, tmp_path):
    texts, applies = _labels()
    gated = router.with_options(abstention={"gate": str(gate_dir)})
    assert isinstance(gated.abstention_gate, GateAbstention) and gated.abstention == {}
    routes = gated.route_many(texts, 1)
    assert all(0.0 <= r.p_applies <= 1.0 for r in routes)
    assert all(r.abstain == (r.trace[-1].detail["gate"]["action"] != "retrieve") for r in routes)
    # the gate reads its own examples as it was fitted on them, out of fold (in-sample they read
    # separable, 1.0, until session 40): better than chance on these toy labels, not perfect
    assert balanced_accuracy(applies, [r.abstain for r in routes]) >= 0.75
    gated.save(tmp_path / "skills")
    manifest = json.loads(next((tmp_path / "skills").glob("builds/*/manifest.json")).read_text())
    assert manifest["params"]["router"]["abstention"] == {"gate": str(gate_dir.resolve())}
    assert not [p for p in (tmp_path / "skills").rglob("*") if p.suffix in (".pkl", ".pickle")]
    loaded = SkillRouter.load(tmp_path / "skills", encoder=router.index.encoder)
    assert loaded.abstention_gate is not None and loaded.abstention_gate.path == gate_dir.resolve()
    for task in texts:
        a, b = loaded.route(task, k=3), gated.route(task, k=3)
        assert a.to_dict() == b.to_dict() and a.trace[-1].detail == b.trace[-1].detail


def test_bad_gates_are_one_line_errors(router, tmp_path):
    with pytest.raises(RagrouteError, match="abstention gate .*nope") as err:
        router.with_options(abstention={"gate": tmp_path / "nope"})
    assert "\n" not in str(err.value)
    with pytest.raises(RagrouteError, match="only 'gate'"):
        router.with_options(abstention={"gate": ScriptedGate(), "stage1": {}})
    with pytest.raises(RagrouteError, match="given as an object"):
        router.with_options(abstention=ScriptedGate()).save(tmp_path / "skills")


def test_cli_build_with_abstain_gate(gate_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ragroute.cli.skills import build_command

    monkeypatch.setattr("ragroute.encode.load_encoder", lambda *a, **k: HashingEncoder(dim=256))
    out = tmp_path / "skills"
    args = [str(DATA / "skills.jsonl"), "--out", str(out), "--abstain-gate", str(gate_dir)]
    result = CliRunner().invoke(build_command, args)
    assert result.exit_code == 0, result.output
    loaded = SkillRouter.load(out, encoder=HashingEncoder(dim=256))
    assert loaded.abstention_gate is not None and loaded.abstention_gate.path == gate_dir.resolve()
    bad = CliRunner().invoke(build_command, [*args[:3], "--abstain-gate", str(tmp_path / "nope")])
    assert bad.exit_code != 0 and bad.output.count("\n") == 1 and "abstention gate" in bad.output
    both = CliRunner().invoke(build_command, [*args, "--abstain-data", str(DATA / "need_tool.jsonl")])
    assert both.exit_code != 0 and "not both" in both.output


def test_cli_build_abstain_data_reads_the_labels_files_of_gate_fit(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ragroute.cli.skills import build_command

    monkeypatch.setattr("ragroute.encode.load_encoder", lambda *a, **k: HashingEncoder(dim=256))
    rows = [json.loads(line) for line in (DATA / "need_tool.jsonl").read_text().splitlines() if line.strip()]
    labels = tmp_path / "labels.jsonl"  # as `gate fit` and `route fit` read them: no "_id", a list label
    labels.write_text("".join(json.dumps({"text": r["text"], "label": [r["label"]]}) + "\n" for r in rows))
    out = tmp_path / "skills"
    args = [str(DATA / "skills.jsonl"), "--out", str(out), "--abstain-data", str(labels)]
    result = CliRunner().invoke(build_command, args)
    assert result.exit_code == 0, result.output
    assert f"abstention fitted on {len(rows)} labelled tasks of {labels}" in result.output
    assert SkillRouter.load(out, encoder=HashingEncoder(dim=256)).abstention
    # "no-tool" is no_tool, and the counts per label show how each was read: until session 38 the
    # hyphenated label trained the tasks it marks as tasks a skill applies to, without a word
    labels.write_text(
        "".join(
            json.dumps({"text": r["text"], "label": "No-Tool" if r["label"] == "no_tool" else r["label"]})
            + "\n"
            for r in rows
        )
    )
    result = CliRunner().invoke(build_command, args)
    n_none = sum(r["label"] == "no_tool" for r in rows)
    assert result.exit_code == 0 and n_none
    assert f"where none does (No-Tool {n_none}" in result.output


def test_bench_reports_cross_validated_gate_abstention_and_its_cost():
    from ragroute.evaluation.bench_skills import format_report, run_skills_bench

    result = run_skills_bench(
        DATA, HashingEncoder(dim=256), scale=0, latency_queries=2, abstain_data=DATA / "need_tool.jsonl"
    )
    gate = result["abstention"]["gate"]
    assert gate["queries"] == 12 and "fold" in gate["protocol"] and len(gate["thresholds"]) == 5
    assert 0.0 <= gate["balanced_accuracy"] <= 1.0 and 0.0 <= gate["auroc"] <= 1.0
    cost = gate["cost"]
    assert cost["queries"] == result["queries"] and cost["gate_fitted_on"] <= 12
    assert cost["hit@1"] == result["methods"]["hybrid"]["hit@1"]
    assert cost["hit@1_with_abstention"] <= cost["hit@1"]
    assert cost["hit@1_cost"] == round(cost["hit@1"] - cost["hit@1_with_abstention"], 4)
    assert "text-probe gate" in format_report(result)


def _with_a_query_judged_grade_0_only(tmp_path: Path) -> Path:
    """The toy set plus q17, judged only with grade 0: no relevant skill, so no row scores it."""
    import shutil

    root = tmp_path / "router"
    shutil.copytree(DATA, root)
    with (root / "queries.jsonl").open("a") as f:
        f.write(
            json.dumps({"_id": "q17", "text": "will it be sunny in rome tomorrow", "metadata": {}}) + "\n"
        )
    with (root / "qrels" / "dev.tsv").open("a") as f:
        f.write("q17\tweather_forecast\t0\n")
    return root


def test_the_gate_cost_is_the_hit_at_1_of_the_rows_queries_not_of_every_judged_one(tmp_path):
    """The gate's Hit@1 cost averaged over every judged query: one judged with grade 0 only (which
    no row scores, see is_scorable) counted as a miss, and "hit@1" read 11/17 beside the row's 11/16
    (until session 47)."""
    from ragroute.evaluation.bench_skills import run_skills_bench

    root = _with_a_query_judged_grade_0_only(tmp_path)
    result = run_skills_bench(
        root, HashingEncoder(dim=256), scale=0, latency_queries=2, abstain_data=root / "need_tool.jsonl"
    )
    cost = result["abstention"]["gate"]["cost"]
    assert result["queries"] == 17 and cost["queries"] == 16
    assert cost["hit@1"] == result["methods"]["hybrid"]["hit@1"]
    assert cost["hit@1_cost"] == round(cost["hit@1"] - cost["hit@1_with_abstention"], 4)


def test_the_default_models_cost_is_the_hit_at_1_of_the_rows_queries():
    """The same rule for the shipped default abstention model's Hit@1 (a scripted router here)."""
    from types import SimpleNamespace

    from ragroute.context import QueryContext
    from ragroute.evaluation.bench_skills import _abstention
    from ragroute.evaluation.metrics import evaluate_run

    class Scripted:
        def __init__(self):
            self.routed: list[str] = []

        def with_options(self, **options):
            return self

        def _model(self):
            return SimpleNamespace(info={"name": "scripted"})

        def route_many(self, texts, k):
            self.routed += texts
            return [SimpleNamespace(abstain=text == "hit") for text in texts]

    judged = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": ["a"], "q2": ["x"], "q3": ["c"]}
    contexts = [QueryContext(text, id=qid) for qid, text in (("q1", "hit"), ("q2", "miss"), ("q3", "none"))]
    router = Scripted()
    out = _abstention(router, contexts, judged, run, DATA, None, lambda _: None)
    assert out["hit@1"] == evaluate_run(run, judged, ("hit@1",))["hit@1"] == 0.5  # not 1/3
    assert out["hit@1_with_abstention"] == 0.0 and out["hit@1_cost"] == 0.5
    assert out["abstain_rate"] == 0.5 and router.routed == ["hit", "miss"]


def test_the_gate_that_prices_abstention_never_fitted_a_judged_query_in_another_unicode_form(router):
    """Labelled texts equal to a judged query are left out of the gate that routes the judged
    queries; until session 49 "equal" was lower case only, so a full-width copy was fitted on."""
    from ragroute.context import QueryContext
    from ragroute.evaluation.bench_skills import _gate_abstention, read_labels

    labels = read_labels(DATA / "need_tool.jsonl")
    contexts = [
        QueryContext("WILL IT RAIN IN \uff30\uff21\uff32\uff29\uff33  tomorrow", id="q1"),  # full-width PARIS
        QueryContext("Send an email to my boss", id="q2"),
    ]
    judged = {"q1": {"weather_forecast": 1}, "q2": {"send_email": 1}}
    run = {"q1": ["weather_forecast"], "q2": ["send_email"]}
    report = _gate_abstention(router, labels, "need_tool", contexts, judged, run, lambda _: None)
    assert report["cost"]["left_out_overlapping_texts"] == 2
    assert report["cost"]["gate_fitted_on"] == len(labels) - 2
