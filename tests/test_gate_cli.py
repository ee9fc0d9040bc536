"""``ragroute gate fit / decide`` and ``ragroute bench gate`` on tiny LABELS files (no model loaded:
the signals used here read only the text, or the test hashing encoder)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import HashingEncoder, occupied_out
from test_gate import ANSWER, RETRIEVE

from ragroute.cli import main


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"_id": f"r{i}", "text": t, "label": "document"} for i, t in enumerate(RETRIEVE)]
    rows += [{"_id": f"a{i}", "text": t, "label": "no"} for i, t in enumerate(ANSWER)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_fit_then_decide(tmp_path, labels):
    out = tmp_path / "gate"
    fit = CliRunner().invoke(
        main, ["gate", "fit", str(labels), "--out", str(out), "--signals", "rarity,complexity"]
    )
    assert fit.exit_code == 0, fit.output
    assert "gate saved to" in fit.output and "24 answer directly" in fit.output
    decide = CliRunner().invoke(
        main, ["gate", "decide", str(out), "Who founded the Xylofrant company?", "--json"]
    )
    assert decide.exit_code == 0, decide.output
    payload = json.loads(decide.output.strip().splitlines()[-1])
    assert payload["action"] == "retrieve" and payload["p_retrieve"] > payload["threshold"]
    assert "rarity.min_zipf" in payload["signals"]["values"]
    easy = CliRunner().invoke(
        main, ["gate", "decide", str(out), "What is 2 plus 3?", "--retrieval-rate", "0.1"]
    )
    assert easy.exit_code == 0 and easy.output.startswith("answer")
    assert "reason: p_retrieve" in easy.output


def test_cli_errors_are_one_line(tmp_path, labels):
    missing = CliRunner().invoke(
        main, ["gate", "fit", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "g")]
    )
    assert missing.exit_code == 2 and missing.output.strip().startswith("error: data missing")
    bad = CliRunner().invoke(
        main, ["gate", "fit", str(labels), "--out", str(tmp_path / "g"), "--signals", "vibes"]
    )
    assert bad.exit_code == 2 and "unknown gate signal 'vibes'" in bad.output
    # the same signal twice was fitted (its values twice), and "" meant the default signals
    for given, said in [
        ("rarity,rarity", "error: signal rarity given more than once: give each signal once\n"),
        ("", "error: --signals is empty: name at least one signal (without --signals: knn_vote, "),
        ("rarity,,complexity", "error: --signals 'rarity,,complexity' has an empty signal name"),
    ]:
        result = CliRunner().invoke(
            main, ["gate", "fit", str(labels), "--out", str(tmp_path / "g"), "--signals", given]
        )
        assert result.exit_code == 2 and result.output.startswith(said), result.output
        assert not (tmp_path / "g").exists()
    for strength in ("0", "-1", "nan", "inf", "strong"):  # scikit-learn would raise a traceback
        result = CliRunner().invoke(
            main, ["gate", "fit", str(labels), "--out", str(tmp_path / "g"), "--C", strength]
        )
        assert result.exit_code == 2
        assert result.output == f"error: --C must be a positive number or auto, not {strength!r}\n"
    needless = CliRunner().invoke(
        main,
        ["gate", "fit", str(labels), "--out", str(tmp_path / "g"), "--signals", "rarity", "--encoder", "x"],
    )
    assert needless.exit_code == 2
    assert needless.output == "error: --encoder does not apply to signals that embed nothing (rarity)\n"
    # --cache-dir likewise: accepted and ignored until session 55 (gate decide refuses it)
    cached = ["--signals", "rarity", "--cache-dir", str(tmp_path / "cache")]
    needless = CliRunner().invoke(main, ["gate", "fit", str(labels), "--out", str(tmp_path / "g"), *cached])
    assert needless.exit_code == 2 and not (tmp_path / "g").exists()
    assert needless.output == "error: --cache-dir does not apply to signals that embed nothing (rarity)\n"
    # deciding with such a gate: --backend was accepted and ignored until session 36
    cheap = tmp_path / "cheap"
    fit = ["gate", "fit", str(labels), "--out", str(cheap), "--signals", "rarity"]
    fitted = CliRunner().invoke(main, fit)
    assert fitted.exit_code == 0, fitted.output
    for option in (["--backend", "onnx"], ["--cache-dir", str(tmp_path)]):
        result = CliRunner().invoke(main, ["gate", "decide", str(cheap), "Who founded Zorblat?", *option])
        assert result.exit_code == 2
        said = f"error: {option[0]} does not apply to gate {cheap}: its signals embed nothing\n"
        assert result.output == said
    assert CliRunner().invoke(main, ["gate", "decide", str(cheap), "Who founded Zorblat?"]).exit_code == 0
    both = CliRunner().invoke(
        main, ["gate", "decide", str(tmp_path / "g"), "hi", "--threshold", "0.9", "--retrieval-rate", "0.5"]
    )
    assert both.exit_code == 2 and both.output == (
        "error: give one operating point, not --threshold and --retrieval-rate\n"
    )
    for cost in ("nan", "inf"):  # "retrieve_cost must be a number, got nan"; inf decided (session 50)
        result = CliRunner().invoke(
            main, ["gate", "decide", str(tmp_path / "nowhere"), "hello", "--retrieve-cost", cost]
        )
        assert result.exit_code == 2
        said = f"error: Invalid value for '--retrieve-cost': '{cost}' is not a finite number."
        assert result.output.startswith(said)
    nothing = CliRunner().invoke(main, ["gate", "decide", str(tmp_path / "nowhere"), "hello"])
    assert nothing.exit_code == 2 and len(nothing.output.strip().splitlines()) == 1


def test_an_operating_point_of_a_config_file_yields_to_another_one_given(tmp_path, labels):
    out = tmp_path / "gate"
    fit = ["gate", "fit", str(labels), "--out", str(out), "--signals", "rarity,complexity"]
    assert CliRunner().invoke(main, fit).exit_code == 0
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("gate:\n  decide: {threshold: 0.3}\n")

    def threshold(*args: str, config: bool = True) -> float:
        head = ["--config", str(defaults)] if config else []
        result = CliRunner().invoke(
            main, [*head, "gate", "decide", str(out), "Who founded Xylofrant?", *args]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])["threshold"]

    assert threshold("--json") == 0.3  # the file's default is used ...
    by_rate = threshold("--retrieval-rate", "0.7", "--json", config=False)
    assert threshold("--retrieval-rate", "0.7", "--json") == by_rate != 0.3  # ... unless another is typed
    assert threshold("--threshold", "0.6", "--json") == 0.6
    defaults.write_text("gate:\n  decide: {threshold: 0.3, retrieve_cost: 0.5}\n")
    both = CliRunner().invoke(main, ["--config", str(defaults), "gate", "decide", str(out), "hi"])
    assert both.exit_code == 2 and both.output == (
        f"error: give one operating point, not --threshold and --retrieve-cost (set by --config {defaults})\n"
    )


def test_fit_on_too_few_examples_of_a_kind(tmp_path):
    def fit(n_answer):
        path = tmp_path / f"few{n_answer}.jsonl"
        rows = [{"_id": f"r{i}", "text": t, "label": "document"} for i, t in enumerate(RETRIEVE[:5])]
        rows += [{"_id": f"a{i}", "text": t, "label": "no"} for i, t in enumerate(ANSWER[:n_answer])]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        out = tmp_path / f"g{n_answer}"
        signals = ["--signals", "rarity,complexity"]
        return CliRunner().invoke(main, ["gate", "fit", str(path), "--out", str(out), *signals])

    one = fit(1)  # the out-of-fold signals had no example of that kind to learn from
    assert one.exit_code == 2 and one.output == (
        "error: a gate needs at least 2 examples of each kind (its signals are fitted out of fold): "
        "got 5 that need retrieval, 1 that answer directly\n"
    )
    three = fit(3)
    assert three.exit_code == 0 and "gate saved to" in three.stdout
    assert "warning: only 3 examples of one kind: the held-out AUROC below" in three.stderr


def test_bench_gate_cross_validation(labels, monkeypatch):
    from ragroute.evaluation import bench_gate

    result = bench_gate.run_gate_bench(
        labels,
        folds=3,
        encoder=HashingEncoder(dim=128),
        gates=["knn5_embedding", "threshold_rarity", "trained_signals"],
    )
    gates = result["gates"]
    assert set(gates) == {"knn5_embedding", "threshold_rarity", "trained_signals"}
    for r in gates.values():
        assert {"auroc", "accuracy", "balanced_accuracy"} <= set(r) and len(r["curve"]) == 5
        assert r["auroc_ci95"][0] <= r["auroc"] <= r["auroc_ci95"][1]  # its bootstrap interval
    assert gates["trained_signals"]["auroc"] > 0.9 and gates["trained_signals"]["balanced_accuracy"] > 0.8
    assert result["protocol"].startswith("3-fold") and result["n_test"] == 48
    assert "trained_signals" in bench_gate.format_report(result)
    assert "AUROC 95% bootstrap intervals" in bench_gate.format_report(result)
    with pytest.raises(Exception, match="--train"):
        bench_gate.run_gate_bench(labels, encoder=HashingEncoder(), gates=["threshold_rarity"])


def test_bench_gate_with_an_empty_gate_list_is_refused(labels):
    """``--gates ,`` measured nothing and exited 0 with ``"gates": {}`` until session 37."""
    result = CliRunner().invoke(
        main, ["bench", "gate", "--train", str(labels), "--data", str(labels), "--gates", ","]
    )
    assert (
        result.exit_code == 2
        and result.output == "error: --gates ',' names nothing: give comma-separated names\n"
    )


def test_bench_gate_refuses_scoring_on_the_training_file(labels, tmp_path):
    # `--train X --data X` printed AUROC 1.0 [1.0, 1.0] for the 5-NN baseline, without a word
    from ragroute.errors import RagrouteError
    from ragroute.evaluation import bench_gate

    result = CliRunner().invoke(
        main, ["bench", "gate", "--train", str(labels), "--data", str(labels), "--gates", "threshold_rarity"]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "the same file" in result.output and "--folds N" in result.output
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    test = tmp_path / "test.jsonl"  # one query of the training file among new ones
    test.write_text("\n".join(json.dumps({**r, "text": f"new {r['text']}"}) for r in rows[1:]) + "\n")
    test.write_text(test.read_text() + json.dumps(rows[0]) + "\n")
    said: list[str] = []
    bench_gate.run_gate_bench(
        test, train_path=labels, encoder=HashingEncoder(dim=64), gates=["threshold_rarity"], log=said.append
    )
    assert f"note: 1 of {len(rows)} test queries also appear in the training file" in said[0]
    copy = tmp_path / "copy.jsonl"  # the training file under another name: in-sample all the same
    copy.write_text(labels.read_text())
    with pytest.raises(RagrouteError, match="every one of the 48 test queries is also in the training"):
        bench_gate.run_gate_bench(copy, train_path=labels, gates=["threshold_rarity"])


def test_gate_fit_select_chooses_the_signals_and_bench_scores_the_selection_per_fold(
    tmp_path, labels, monkeypatch
):
    """`gate fit --select` (session 44) chooses the candidate gate by cross-validation on the
    training file; not with --signals. `bench gate`'s `selected` row makes that choice again on each
    fold's fit split, and says which candidate each chose. (Two candidates reading only the text,
    to keep it fast: the selection fits every candidate on every fold.)"""
    from ragroute.evaluation import bench_gate
    from ragroute.gate import TrainedGate, selection

    candidates = {
        "threshold_complexity": {"signals": ["complexity"], "columns": ["complexity.multihop_cues"]},
        "threshold_rarity": {"signals": ["rarity"], "columns": ["rarity.min_zipf"]},
    }
    monkeypatch.setattr(selection, "CANDIDATE_GATES", candidates)
    out = tmp_path / "g"
    fit = CliRunner().invoke(main, ["gate", "fit", str(labels), "--out", str(out), "--select"])
    assert fit.exit_code == 0, fit.output
    assert "selected threshold_rarity by cross-validated AUROC (threshold_complexity 0.5000, " in fit.output
    gate = TrainedGate.load(out)
    assert gate.metrics["selection"]["chosen"] == "threshold_rarity" and gate.columns == ["rarity.min_zipf"]
    both = ["gate", "fit", str(labels), "--out", str(out), "--select", "--signals", "rarity"]
    refused = CliRunner().invoke(main, both)
    assert refused.exit_code == 2 and "give one of --signals and --select" in refused.output
    result = bench_gate.run_gate_bench(labels, folds=2, encoder=HashingEncoder(dim=128), gates=["selected"])
    assert result["gates"]["selected"]["chosen"] == ["threshold_rarity"] * 2
    report = bench_gate.format_report(result)
    assert "selected: chose threshold_rarity, threshold_rarity (per fit split)" in report


@pytest.mark.parametrize("held", ["artifact", "folder", "under a file"])
def test_fit_checks_its_out_before_reading_the_queries(tmp_path, labels, monkeypatch, held):
    """`gate fit --out` at another family's artifact, a folder of the user's files or a path under a
    file was refused only when saving, after the queries were read, encoded and fitted (until
    session 53)."""
    router = ("router", "trained", "router_weights.npz", "a router (trained), not a gate")
    out, message = occupied_out(tmp_path, held, router)

    def no_work(*_args, **_kwargs):
        raise AssertionError("the queries were read before --out was checked")

    monkeypatch.setattr("ragroute.route.labels.read_labelled_queries", no_work)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
    result = CliRunner().invoke(main, ["gate", "fit", str(labels), "--out", str(out), "--signals", "rarity"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before


def test_decide_shows_the_probability_and_threshold_on_the_side_of_each_other_they_were_compared(
    tmp_path, labels
):
    """The decision's probability is rounded for its trace's rounded threshold; until session 56
    `decide` set it beside the gate's exact threshold, so a threshold between the two read
    "retrieve  p_retrieve=0.0728220  threshold=0.0728222" (and so did --json)."""
    from ragroute.gate import TrainedGate

    out = tmp_path / "gate"
    fit = ["gate", "fit", str(labels), "--out", str(out), "--signals", "rarity,complexity"]
    assert CliRunner().invoke(main, fit).exit_code == 0
    for query in ("What is 2 plus 3?", "Who founded the Xylofrant company?", "How many legs has a dog?"):
        p = float(TrainedGate.load(out).probabilities([query])[0])
        between = (p + round(p, 6)) / 2  # the rounded probability is on the other side of it
        args = ["gate", "decide", str(out), query, "--threshold", repr(between)]
        text = CliRunner().invoke(main, args)
        payload = json.loads(CliRunner().invoke(main, [*args, "--json"]).output.strip().splitlines()[-1])
        action, shown_p, shown_threshold = text.output.splitlines()[0].split()
        assert action == payload["action"] == ("retrieve" if p >= between else "answer")
        retrieves = float(shown_p.split("=")[1]) >= float(shown_threshold.split("=")[1])
        assert retrieves == (payload["p_retrieve"] >= payload["threshold"]) == (action == "retrieve")
