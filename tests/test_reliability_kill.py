"""The kill harness, short: real SIGKILLs of `ragroute build` at crash points; nothing is lost."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from ragroute.errors import RagrouteError
from ragroute.reliability.kill import Scenario, _kill_points, debris, run_kill_scenario, run_kills, scenarios


def test_kill_points_cover_every_crash_point_then_time_offsets():
    points = _kill_points(crash_points=5, seconds=2.0, points=8)
    assert [w for how, w in points if how == "at"] == [1, 2, 3, 4, 5]
    offsets = [w for how, w in points if how == "time"]
    assert len(offsets) == 3 and all(0 < t < 2.0 for t in offsets) and offsets == sorted(offsets)
    sampled = _kill_points(crash_points=12, seconds=1.0, points=4)
    assert [w for _, w in sampled] == [1, 4, 7, 10]


def test_sigkilled_builds_never_lose_the_index(tmp_path):
    # 3 of the ~12 crash points of a bm25 build (lock taken, a file checksummed, the build
    # renamed into builds/ but not published), then one rerun that must clean up after them
    report = run_kill_scenario(scenarios("bm25")["build"], tmp_path, points=3, rerun_every=3)
    assert report.crash_points >= 10
    assert report.killed == 3 and report.finished_first == 0
    assert report.survived == 3, report.failures
    assert report.reruns == 1 and report.reruns_ok == 1, report.failures
    assert report.failures == []
    assert debris(tmp_path / "index") == []


def test_sigkilled_store_builds_leave_no_collection_that_no_build_names(tmp_path):
    # a lancedb build's 12 crash points, killed at 4 of them: right after its collection was
    # created (1), files written (4), build renamed into builds/ (7) and, in the prune, an old
    # build set aside (10); the rerun must leave no collection behind that no build names
    pytest.importorskip("lancedb")
    from ragroute.reliability.kill import unnamed_collections

    report = run_kill_scenario(scenarios("lancedb")["build"], tmp_path, points=4, rerun_every=4)
    assert report.crash_points == 12 and report.crash_point_kills == 4
    assert report.survived == 4 and report.reruns_ok == 1, report.failures
    assert unnamed_collections(tmp_path / "index", "lancedb", tmp_path / "vectors") == []


def test_sigkilled_skill_router_builds_never_lose_the_router(tmp_path):
    # `ragroute skills build` (the real command, default encoder) killed at 2 of its crash points;
    # the router it replaces answers as before, the rerun publishes the other catalogue's router
    report = run_kill_scenario(scenarios()["skills build"], tmp_path, points=2, rerun_every=2)
    assert report.crash_points >= 10
    assert report.killed == 2 and report.survived == 2, report.failures
    assert report.reruns == 1 and report.reruns_ok == 1, report.failures
    assert debris(tmp_path / "skills") == []


def test_an_unknown_kill_command_is_refused_with_the_known_ones(tmp_path):
    refused = r"unknown kill command 'skils build': choose from .*'skills build'"
    with pytest.raises(RagrouteError, match=refused):
        run_kills(tmp_path, commands=["skils build"])
    assert not (tmp_path / "skils-build").exists()


# a wrapper of the real command: it counts its runs in a file; run N (`hang`) sleeps instead of
# running and writes its pid, or every run from N on (`noop`) exits 0 at once, doing nothing
_WRAPPER = """
import pathlib, os, sys, time
runs = pathlib.Path(sys.argv[1])
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
action, first = sys.argv[2], int(sys.argv[3])
if action == "hang" and n == first:
    runs.with_name("hung.pid").write_text(str(os.getpid()))
    time.sleep(30)
    sys.exit(3)
if action == "noop" and n >= first:
    sys.exit(0)
sys.argv = ["ragroute", *sys.argv[4:]]
from ragroute.cli import main
main()
"""


def _wrapped(scenario: Scenario, action: str, first: int) -> Scenario:
    def argv(workdir, variant):
        real = scenario.argv(workdir, variant)  # [python, -c, code, *args]
        return [real[0], "-c", _WRAPPER, str(workdir / "runs"), action, str(first), *real[3:]]

    return dataclasses.replace(scenario, argv=argv)


@pytest.mark.parametrize(
    ("run", "failure"),
    [(4, "point 0 (at 1): hung, killed after 2 s"), (5, "point 0: rerun hung")],
)
def test_a_hung_command_is_killed_and_counted_not_waited_for(tmp_path, run, failure):
    # runs 1-3 learn both results and the crash points; run 4 is the one killed at crash point 1,
    # run 5 its rerun: either hanging used to hang the harness (both waited without a timeout)
    start = time.monotonic()
    build = _wrapped(scenarios("bm25")["build"], "hang", run)
    report = run_kill_scenario(build, tmp_path, points=1, timeout=2)
    assert time.monotonic() - start < 20
    assert any(f.startswith(failure) for f in report.failures), report.failures
    assert report.survived == 0  # a kill whose rerun hung did not survive
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(int((tmp_path / "hung.pid").read_text()), 0)


def test_a_hung_kill_point_counts_as_tried_and_lost(tmp_path):
    # run 4, the one to be killed at crash point 1, hangs and is killed after the timeout: the
    # point was left out of both totals, so `kills survived / tried` read 0 / 0 (N / N in a run of
    # more points) beside a hung command
    build = _wrapped(scenarios("bm25")["build"], "hang", 4)
    report = run_kill_scenario(build, tmp_path, points=1, timeout=2)
    assert report.points == 1 and report.killed == 1 and report.survived == 0
    assert report.failures[0].startswith("point 0 (at 1): hung"), report.failures


def test_a_run_that_killed_nothing_is_a_failure_not_a_clean_report(tmp_path):
    # from run 4 on the command ends at once: neither its crash point nor the earlier time kill that
    # replaces it kills anything; the report said 0 failures for a run that killed nothing
    build = _wrapped(scenarios("bm25")["build"], "noop", 4)
    report = run_kill_scenario(build, tmp_path, points=1)
    assert report.killed == 0 and report.finished_first == 2
    assert report.failures == ["only 0 of 1 kill points killed a running command (2 runs finished first)"]
