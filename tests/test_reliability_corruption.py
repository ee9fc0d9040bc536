"""The corruption matrix, short: every file case and a sample of manifest/pointer bit flips end in
a one-line error, in-process and through the command line."""

from __future__ import annotations

import pytest

from ragroute.reliability.corruption import (
    Case,
    applied,
    artifact_files,
    bit_flip_cases,
    file_cases,
    run_cli_matrix,
    run_matrix,
)
from ragroute.reliability.workload import (
    WordHashEncoder,
    build_artifact,
    corpus_records,
)

KINDS = ("bm25", "hybrid", "graph", "skills", "scorer")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    encoder = WordHashEncoder()
    return {kind: build_artifact(kind, root / kind, encoder=encoder) for kind in KINDS}


def test_cases_cover_pointer_manifest_and_every_data_file(artifacts):
    files = artifact_files(artifacts["hybrid"])
    assert files[0] == "CURRENT" and files[1].endswith("/manifest.json") and len(files) >= 5
    assert len(file_cases(artifacts["hybrid"])) == 8 * len(files)
    flips = bit_flip_cases(artifacts["hybrid"])
    assert len(flips) == 8 * sum((artifacts["hybrid"] / f).stat().st_size for f in files[:2])
    case = Case(files[2], "truncate-half")
    before = (artifacts["hybrid"] / files[2]).read_bytes()
    with applied(artifacts["hybrid"], case):
        assert (artifacts["hybrid"] / files[2]).read_bytes() == before[: len(before) // 2]
    assert (artifacts["hybrid"] / files[2]).read_bytes() == before


def test_every_corruption_ends_in_a_one_line_error(artifacts):
    report = run_matrix(artifacts, encoder=WordHashEncoder(), bit_stride=41)
    assert report.tried > 500
    assert report.clean == report.tried, report.failures
    assert set(report.by_kind) == set(KINDS)


def test_corruptions_through_the_command_line_exit_2_with_one_line(tmp_path):
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.reliability.workload import documents

    save_index(build_index(documents(corpus_records(5, 20)), "bm25"), tmp_path / "idx")
    # a flipped byte in the pointer, the manifest and the first data file
    report = run_cli_matrix({"bm25": tmp_path / "idx"}, file_actions=("flip-middle",), files=3)
    assert report.tried == 3 and report.clean == report.tried, report.failures


def test_a_changed_line_of_inspect_is_a_wrong_answer_and_only_durations_are_ignored():
    """Until session 44 the harness compared `inspect` output without every line holding " s" or
    "ms": the encoder line ("encoder: sentence-transformers/...") among them, so a damaged artifact
    that changed it counted as unnoticed, not wrong. Only durations are left out now."""
    import subprocess

    from ragroute.reliability.corruption import cli_answer, cli_outcome

    reference = "idx: index / dense\n  encoder: sentence-transformers/all-MiniLM-L6-v2 (onnx, dim 384)\n"
    changed = reference.replace("dim 384", "dim 12")
    assert cli_answer(changed) != cli_answer(reference)
    done = subprocess.CompletedProcess([], 0, changed, "")
    assert cli_outcome(done, cli_answer(reference)) == ("wrong", "")
    timed = "built 4 items in 1.25 s\nsearched in 12 ms\n"
    assert cli_answer(timed) == cli_answer(timed.replace("1.25 s", "3.5 s").replace("12 ms", "9ms"))
    assert cli_answer(timed) == ["built 4 items in <time>", "searched in <time>"]


def test_a_hung_command_fails_its_case_and_never_hangs_the_harness(monkeypatch):
    """The race and corruption harnesses ran their `ragroute` commands without a timeout until
    session 50: one hanging on a damaged artifact hung the harness. It is killed after the timeout
    and fails its case; and an error line with text running on below it is not a clean error."""
    import subprocess
    import sys
    import time

    from ragroute.reliability import workload
    from ragroute.reliability.corruption import cli_outcome

    sleeping = [sys.executable, "-c", "import time; time.sleep(30)"]
    monkeypatch.setattr(workload, "ragroute_argv", lambda *a: sleeping)
    start = time.monotonic()
    done = workload.run_ragroute("query", "idx", "q", timeout=1)
    assert time.monotonic() - start < 10
    assert (done.returncode, done.stderr) == (workload.HUNG, "hung: killed after 1 s")
    outcome, detail = cli_outcome(done, [])
    assert outcome != "clean_error" and "hung" in detail
    spilled = subprocess.CompletedProcess([], 2, "", "error: the index is damaged\n  and more below\n")
    assert cli_outcome(spilled, [])[0] == "multi_line"
    assert cli_outcome(subprocess.CompletedProcess([], 2, "", "warning: slow\nerror: damaged\n"), []) == (
        "clean_error",
        "",
    )


@pytest.mark.parametrize("message", ["", "   ", "\n"])
def test_an_error_that_says_nothing_is_not_a_clean_error(message):
    """Until session 54 `classify` counted any ragroute error without a line break in it as a clean
    one-line error, an empty one included (``RagrouteError(str(exc))`` of an exception with no
    message): the command line's rule (`is_one_line_error_output`) and the fuzzer's (`is_one_line`)
    refuse a message that says nothing."""
    from ragroute.errors import RagrouteError
    from ragroute.reliability.corruption import classify

    def fails(text):
        def load():
            raise RagrouteError(text)

        return load

    assert classify(fails(message), None)[0] == "multi_line"
    assert classify(fails("x.npy is corrupt: checksum mismatch"), None) == ("clean_error", "")
