"""The kill harness, short: real SIGKILLs of `ragroute build` at crash points; nothing is lost."""

from __future__ import annotations

from ragroute.reliability.kill import _kill_points, debris, run_kill_scenario, scenarios


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
