"""Readers during rebuilds, short: a writer process rebuilds an index while this process and
`ragroute query` read it; every answer is one build's, and no read fails."""

from __future__ import annotations

from ragroute.reliability.race import run_race


def test_readers_during_rebuilds_get_one_builds_answer(tmp_path):
    report = run_race(tmp_path, method="bm25", reads=80, cli_reads=1, threads=2, cli_workers=1)
    assert report.rebuilds >= 5  # the index really was replaced while being read
    assert report.reads >= 80 and report.cli_reads >= 1
    assert report.wrong == 0 and report.errors == 0, report.examples
