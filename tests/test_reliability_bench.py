"""`ragroute bench reliability`: the JSON keys, the table with goals, null for harnesses not run."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ragroute.cli import main
from ragroute.evaluation.bench_reliability import KEYS, format_report
from ragroute.registry import BENCHMARKS


def test_bench_reliability_prints_goals_and_the_json_keys():
    assert "reliability" in BENCHMARKS.names()
    result = CliRunner().invoke(main, ["bench", "reliability", "--quick", "--only", "scope", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(KEYS) <= set(payload)
    assert payload["scope_leaks"] == 0
    assert payload["kills_tried"] is None and payload["fuzz_cases"] is None  # not run
    assert "scope leaks" in result.stdout and "goal" in result.stdout


def test_format_report_shows_each_number_next_to_its_goal():
    result = {key: 0 for key in KEYS} | {"kills_tried": 260, "kills_survived": 260, "details": {}}
    text = format_report(result)
    assert "260 / 260" in text and ">= 50 kill points per command" in text
    assert "100% end in a one-line error" in text


def test_kill_options_without_the_kill_harness_are_refused():
    """They were echoed into the JSON settings and never used (a typo'd command name passed too)."""
    args = [
        "bench",
        "reliability",
        "--quick",
        "--only",
        "fuzz",
        "--kill-command",
        "biuld",
        "--kill-points",
        "3",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output == "error: --kill-points and --kill-command do not apply without --only kill\n"
