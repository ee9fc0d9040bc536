"""The kill harness, short: real SIGKILLs of `ragroute build` at crash points; nothing is lost."""

from __future__ import annotations

import pytest

from ragroute.errors import RagrouteError
from ragroute.reliability.kill import _kill_points, debris, run_kill_scenario, run_kills, scenarios


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
