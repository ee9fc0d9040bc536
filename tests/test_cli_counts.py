"""Counts in the command line's output take their noun in the singular or the plural as the count
needs (``ragroute.display.counted``): "1 files", "1 leftovers", "1 judged query ids" until session 50."""

from __future__ import annotations

from click.testing import CliRunner

from ragroute.cli import main
from ragroute.display import counted
from ragroute.store import write_artifact


def test_counted_takes_the_singular_for_one_only():
    assert [counted(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]
    assert counted(1, "query", "queries") == "1 query" and counted(3, "query", "queries") == "3 queries"


def _publish(target, tag: str) -> None:
    with write_artifact(target, "test", "one", params={"tag": tag}) as build:
        (build.path / "a.txt").write_text(tag)


def test_inspect_and_its_clean_count_in_the_singular(tmp_path):
    art = tmp_path / "art"
    _publish(art, "x")
    _publish(art, "y")  # the previous build is kept: nothing superseded to remove
    (art / "builds" / ".tmp-dead").mkdir()  # what a killed build leaves
    result = CliRunner().invoke(main, ["inspect", str(art), "--clean"])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"cleaned {art}: 1 leftover of killed builds, 0 superseded builds removed\n"
    assert "\n  1 file, 0.00 MB, checksums verified\n" in result.stdout
    assert not (art / "builds" / ".tmp-dead").exists()
