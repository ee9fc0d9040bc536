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
    assert len(file_cases(artifacts["hybrid"])) == 6 * len(files)
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
