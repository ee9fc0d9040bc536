"""The whole command line under fault injection (``ragroute.reliability.faults``): bad paths, corrupt
inputs, bad queries, failing writes; every run ends normally or in one ``error: ...`` line (exit 2),
never in a traceback. Plus the strict-configuration and one-line-error cases behind it.

The long run (every bad path for every parameter, writes failing after 0, 1, 2, ... writes) is
``ragroute bench reliability``.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import ragroute.graph.views
from ragroute.cli import main
from ragroute.cli import testing as cli_testing
from ragroute.cli.testing import command_tree
from ragroute.reliability.faults import BASE_ARGS, FAIL_ONLY, HELP_ONLY, inject, run_cli_faults


def test_every_command_under_faults_ends_without_a_traceback():
    result = run_cli_faults(quick=True)
    assert result["commands"] == len(command_tree()) >= 30
    assert result["cli_cases"] > 4 * result["commands"]
    assert result["tracebacks"] == 0, "\n".join(result["traceback_cases"])
    assert result["unclear"] == 0, "\n".join(result["unclear_cases"])


def _plain_click_group() -> click.Group:
    """A click group without ragroute's one-line errors: a usage error is click's multi-line dump."""

    @click.group()
    def plain() -> None: ...

    @plain.command()
    @click.argument("index")
    @click.argument("text")
    def query(index: str, text: str) -> None: ...

    return plain


def test_only_a_single_error_line_counts_as_a_one_line_error(monkeypatch):
    monkeypatch.setattr(cli_testing, "_main", _plain_click_group)
    dump = cli_testing.invoke(["--config", "x.yaml", "query", "idx", "comets"])
    assert dump.exit_code == 2 and "Usage: " in dump.stderr and "Error: " in dump.stderr
    assert not dump.one_line_error  # click's usage dump, not one line
    outcome = functools.partial(cli_testing.CliOutcome, ("query",), 2, "")
    assert outcome("error: no index at idx\n").one_line_error
    assert outcome("warning: 1 source left out\nerror: no index at idx\n").one_line_error
    assert not outcome("Error: no index at idx\n").one_line_error
    assert not outcome("error: no index\n  at idx\n").one_line_error  # runs on over two lines
    assert not outcome("error: one\nerror: two\n").one_line_error
    assert not outcome("").one_line_error
    assert not cli_testing.CliOutcome(("query",), 1, "", "error: no index at idx\n").one_line_error
    monkeypatch.undo()
    real = cli_testing.invoke(["--bogus", "query", "idx", "comets"])
    assert real.one_line_error, real.stderr


def test_the_fuzz_harness_catches_a_usage_dump(monkeypatch, tmp_path):
    from ragroute.reliability.fuzz import FuzzWorkspace, LoaderBug, fuzz_cli_defaults

    workspace = FuzzWorkspace(root=tmp_path, encoder=None)
    fuzz_cli_defaults(workspace, b"query:\n  k: 0\n")  # ragroute's own one-line refusal passes
    monkeypatch.setattr(cli_testing, "_main", _plain_click_group)
    with pytest.raises(LoaderBug, match="without a one-line error"):
        fuzz_cli_defaults(workspace, b"query:\n  k: 3\n")


def test_every_command_has_a_normal_form_or_is_fail_only():
    for command in command_tree():
        name = " ".join(command.path)
        known = name in BASE_ARGS or name in HELP_ONLY or name in FAIL_ONLY or command.path[0] in FAIL_ONLY
        assert known, f"{name}: no normal form in BASE_ARGS"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "comets.md").write_text("# Comets\n\nComets have an ion tail pushed by the solar wind.\n")
    (folder / "bread.md").write_text("# Bread\n\nSourdough needs a long fermentation.\n")
    return folder


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(lines) == 1, (result.exit_code, result.output)
    return lines[0]


# ----------------------------------------------------------------------------- options that do not apply


def test_encoder_options_given_to_bm25_are_errors(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    line = _error_line(runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25",
                                            "--encoder", "all-MiniLM-L6-v2"]))  # fmt: skip
    assert line == "error: --encoder does not apply to --method bm25 (BM25 encodes nothing)"
    line = _error_line(runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25",
                                            "--fusion", "rrf", "--dense-index", "hnsw"]))  # fmt: skip
    assert "--dense-index and --fusion do not apply" in line
    assert not out.exists()
    assert runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]).exit_code == 0
    for extra in (["--encoder", "x"], ["--backend", "onnx"], ["--cache-dir", str(tmp_path / "c")]):
        line = _error_line(runner.invoke(main, ["query", str(out), "comets", *extra]))
        assert f"error: {extra[0]} does not apply to {out}, a bm25 index" in line


def test_defaults_of_a_config_file_do_not_count_as_given(runner, corpus, tmp_path):
    from ragroute.index.io import read_index_manifest

    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("build: {encoder: all-MiniLM-L6-v2, method: bm25}\nquery: {encoder: x, k: 1}\n")
    out = tmp_path / "idx"
    result = runner.invoke(main, ["--config", str(defaults), "build", str(corpus), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = read_index_manifest(out)  # the file's method was used (not the default hybrid)
    assert (manifest.kind, manifest.encoder) == ("bm25", None)
    result = runner.invoke(main, ["--config", str(defaults), "query", str(out), "comets"])
    assert result.exit_code == 0, result.output
    assert "retrieve: method=bm25, k=1," in result.stdout  # the file's k was used (not 10)


def test_defaults_of_a_config_file_are_left_out_where_they_do_not_apply(runner, corpus, tmp_path):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("build: {refine: 4, dense_index: flat}\n")  # a default for ivfpq builds only
    out = tmp_path / "idx"
    result = runner.invoke(main, ["--config", str(defaults), "build", str(corpus), "--out", str(out),
                                  "--method", "bm25"])  # fmt: skip
    assert result.exit_code == 0, result.output
    typed = ["--config", str(defaults), "build", str(corpus), "--out", str(out), "--method", "dense"]
    line = _error_line(runner.invoke(main, [*typed, "--refine", "8"]))  # given, it is refused
    assert line == (
        "error: --refine does not apply to --dense-index flat "
        "(it re-ranks the candidates of --dense-index ivfpq)"
    )


def test_ivfpq_lists_are_set_from_the_command_line(runner, tmp_path, monkeypatch):
    """`--ivf-nlist` and `--ivf-nprobe` set DenseParams.ivf_nlist / ivf_nprobe of an ivfpq build (they
    had no option: every CLI build got 4 sqrt(n) lists searched 16 at a time); they are recorded
    with the index, which is searched with them."""
    import faiss
    from conftest import HashingEncoder

    import ragroute.cli.build as cli_build
    from ragroute.index.io import load_index, read_index_manifest

    monkeypatch.setattr(cli_build, "open_encoder", lambda name, backend, cache_dir: HashingEncoder())
    words = ["comet", "orbit", "bread", "flour", "printer", "laptop", "river", "valley", "tower", "garden"]
    rows = [{"_id": f"d{i}", "text": f"{words[i % 10]} {words[(i * 7) % 10]} note {i}"} for i in range(1100)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ivf"
    args = ["build", str(corpus), "--out", str(out), "--method", "dense", "--dense-index", "ivfpq"]
    result = runner.invoke(main, [*args, "--ivf-nlist", "8", "--ivf-nprobe", "3"])
    assert result.exit_code == 0, result.output
    dense = read_index_manifest(out).params["dense"]
    assert (dense["ivf_nlist"], dense["ivf_nprobe"]) == (8, 3)
    index = load_index(out, HashingEncoder())
    assert faiss.extract_index_ivf(index.faiss_index).nlist == 8 and index.params.ivf_nprobe == 3
    assert index.search("comet orbit", k=3)
    default = runner.invoke(main, [*args[:3], str(tmp_path / "auto"), *args[4:]])
    assert default.exit_code == 0, default.output
    auto = read_index_manifest(tmp_path / "auto").params["dense"]
    assert (auto["ivf_nlist"], auto["ivf_nprobe"]) == (None, 16)  # 4 sqrt(n) lists, searched 16 at a time


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--dense-index", "ivfpq", "--ivf-nlist", "0"],
            "Invalid value for '--ivf-nlist': 0 is not in the range x>=1",
        ),
        (
            ["--dense-index", "ivfpq", "--ivf-nprobe", "two"],
            "Invalid value for '--ivf-nprobe': 'two' is not a valid",
        ),
        (
            ["--dense-index", "ivfpq", "--ivf-nlist", "8", "--ivf-nprobe", "16"],
            "--ivf-nprobe 16 is more than --ivf-nlist 8 (a query searches at most every list)",
        ),
        (
            ["--ivf-nlist", "8"],
            "--ivf-nlist does not apply to --dense-index flat (it sets how many inverted lists --dense-index "
            "ivfpq clusters the vectors into)",
        ),
        (
            ["--dense-index", "hnsw", "--ivf-nprobe", "4"],
            "--ivf-nprobe does not apply to --dense-index hnsw (it sets how many inverted lists of "
            "--dense-index ivfpq a query searches)",
        ),
        (["--method", "bm25", "--ivf-nprobe", "4"], "--ivf-nprobe does not apply to --method bm25"),
        (["--method", "graph", "--ivf-nlist", "4"], "--ivf-nlist does not apply to --method graph"),
    ],
)
def test_ivf_options_are_checked_in_one_line(runner, corpus, tmp_path, extra, message):
    args = ["build", str(corpus), "--out", str(tmp_path / "i"), "--method", "dense", *extra]
    line = _error_line(runner.invoke(main, args))
    assert message in line, line
    assert not (tmp_path / "i").exists()


def test_ivf_defaults_of_a_config_file_are_left_out_for_other_layouts(runner, corpus, tmp_path, monkeypatch):
    from conftest import HashingEncoder

    import ragroute.cli.build as cli_build
    from ragroute.index.io import read_index_manifest

    monkeypatch.setattr(cli_build, "open_encoder", lambda name, backend, cache_dir: HashingEncoder())
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("build: {ivf_nlist: 8, ivf_nprobe: 4}\n")
    out = tmp_path / "flat"
    result = runner.invoke(
        main, ["--config", str(defaults), "build", str(corpus), "--out", str(out), "--method", "dense"]
    )
    assert result.exit_code == 0, result.output
    assert read_index_manifest(out).params["dense"]["factory"] == "flat"


def test_dense_params_refuse_lists_that_are_not_positive_integers():
    from ragroute.errors import RagrouteError
    from ragroute.index.dense import DenseParams

    for bad in ({"ivf_nlist": 0}, {"ivf_nprobe": -1}, {"ivf_nprobe": 2.5}, {"ivf_nlist": True}):
        with pytest.raises(RagrouteError, match="must be a positive integer"):
            DenseParams(factory="ivfpq", **bad)


def test_fusion_is_only_for_hybrid_builds(runner, corpus, tmp_path):
    line = _error_line(
        runner.invoke(
            main,
            ["build", str(corpus), "--out", str(tmp_path / "i"), "--method", "dense", "--fusion", "zscore"],
        )  # fmt: skip
    )
    assert "--fusion does not apply to --method dense" in line


def test_fusion_given_to_bm25_is_refused_for_its_own_reason(runner, corpus, tmp_path):
    """`build --method bm25 --fusion rrf` said "(BM25 encodes nothing)", which is not why a BM25
    index takes no fusion method (a user audit); with an encoder option too, each reason is given."""
    args = ["build", str(corpus), "--out", str(tmp_path / "i"), "--method", "bm25"]
    line = _error_line(runner.invoke(main, [*args, "--fusion", "rrf"]))
    assert line == "error: --fusion does not apply to --method bm25 (only a hybrid index fuses two lists)"
    line = _error_line(runner.invoke(main, [*args, "--fusion", "rrf", "--dense-index", "hnsw"]))
    assert line == (
        "error: --dense-index and --fusion do not apply to --method bm25 "
        "(BM25 encodes nothing; only a hybrid index fuses two lists)"
    )


# ----------------------------------------------------------------------------- --config files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("query: {kk: 1}\n", "query: unknown option 'kk'; did you mean 'k'?"),
        ("qury: {k: 1}\n", "unknown command 'qury'; did you mean 'query'?"),
        ("query: {k: abc}\n", "query: k: 'abc' is not a valid integer range (expected an integer)"),
        ("query: {k: 0}\n", "query: k: 0 is not in the range x>=1"),
        ("query: 'k:3'\n", "query must be a mapping of option defaults, not a string"),
        ("query:\n  k:\n", "query: k: empty (give a value or remove the key)"),
        ("query: {filters: a}\n", "query: filters: expected a list, not a string"),
        ("build: {method: foo}\n", "build: method: 'foo' is not one of"),
        ("route: {fit: {modle: mlp}}\n", "route: fit: unknown option 'modle'; did you mean 'model'?"),
        ("- query\n", "the file must be a mapping of option defaults, not a list"),
        ("progress: 10\n", "progress: expected true or false, not an integer"),
        ("query: {k: 1\n", "is not valid YAML"),
    ],
)
def test_config_file_problems_are_one_line_errors(runner, tmp_path, text, message):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text(text)
    line = _error_line(runner.invoke(main, ["--config", str(defaults), "query", str(tmp_path), "comets"]))
    assert message in line


def test_config_file_with_several_problems_names_the_first_and_counts(runner, tmp_path):
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("query: {kk: 1, k: x}\nbuidl: {}\n")
    line = _error_line(runner.invoke(main, ["--config", str(defaults), "query", str(tmp_path), "x"]))
    assert "unknown option 'kk'" in line and "(and 2 more: ragroute config check" in line


def test_paths_of_a_config_file_are_relative_to_its_folder(runner, corpus, tmp_path, monkeypatch):
    from ragroute.index.io import read_index_manifest

    folder = tmp_path / "conf"
    folder.mkdir()
    defaults = folder / "defaults.yaml"
    defaults.write_text("build: {out_dir: built/idx, method: bm25}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(main, ["--config", "../conf/defaults.yaml", "build", str(corpus)])
    assert result.exit_code == 0, result.output
    assert read_index_manifest(folder / "built" / "idx").kind == "bm25" and not (elsewhere / "built").exists()
    typed = runner.invoke(main, ["--config", str(defaults), "build", str(corpus), "--out", "here"])
    assert typed.exit_code == 0 and (elsewhere / "here" / "CURRENT").is_file()  # typed: from the cwd
    absolute = tmp_path / "abs"
    defaults.write_text(f"build: {{out_dir: {absolute}, method: bm25}}\n")
    assert runner.invoke(main, ["--config", str(defaults), "build", str(corpus)]).exit_code == 0
    assert (absolute / "CURRENT").is_file()


def test_only_the_path_options_of_a_config_file_are_read_beside_it(tmp_path):
    from ragroute.cli.config import paths_beside

    data = {
        "progress": False,
        "bench": {"dense": {"data_dirs": ["a", "/b"], "split": "test"}},  # a repeatable path option
        "graph": {"build": {"cache_dir": "~/c", "out_dir": "g", "extractor": "rules"}},
        "query": {"k": 3, "filters": ["year=2001"]},
    }
    assert paths_beside(main, data, tmp_path) == {
        "progress": False,
        "bench": {"dense": {"data_dirs": [str(tmp_path / "a"), "/b"], "split": "test"}},
        "graph": {
            "build": {
                "cache_dir": str(Path.home() / "c"),
                "out_dir": str(tmp_path / "g"),
                "extractor": "rules",
            }
        },
        "query": {"k": 3, "filters": ["year=2001"]},
    }


def test_text_options_naming_a_local_path_are_read_beside_the_config_file(tmp_path):
    """Options typed as text that may name a file or folder (a model folder, an LLM settings file, a
    store's folder, a corpus) are read beside the --config file when they name one; names, URLs,
    references to modules and `:memory:` stay as written (they were all read from the cwd)."""
    from ragroute.cli.config import paths_beside

    (tmp_path / "models" / "mini").mkdir(parents=True)
    (tmp_path / "all-MiniLM-L6-v2").mkdir()  # a folder named like the bundled model: still the name
    (tmp_path / "factories.py").write_text("def make(): ...\n")
    data = {
        "build": {
            "encoder": "models/mini",
            "qdrant_location": "store/q",
            "lancedb_location": "s3://bucket/db",
        },
        "query": {"encoder": "all-MiniLM-L6-v2"},
        "gate": {"fit": {"encoder": "BAAI/bge-small-en-v1.5"}},  # a hub name, no such folder here
        "skills": {"build": {"encoder": "./absent"}},  # can only be a path: read here, then refused
        "graph": {"build": {"llm_spec": "llm.yaml"}, "add": {"llm_spec": "factories.py:make"}},
        "bench": {"encode": {"model": "~/m"}, "scale": {"encoder": "/abs/m"}},
        "expert": {"fit-router": {"domains": ["med=corpora/med", "law=/data/law", "bad"]}},
    }
    here = str(tmp_path)
    assert paths_beside(main, data, tmp_path) == {
        "build": {
            "encoder": f"{here}/models/mini",
            "qdrant_location": f"{here}/store/q",
            "lancedb_location": "s3://bucket/db",
        },
        "query": {"encoder": "all-MiniLM-L6-v2"},
        "gate": {"fit": {"encoder": "BAAI/bge-small-en-v1.5"}},
        "skills": {"build": {"encoder": f"{here}/absent"}},
        "graph": {
            "build": {"llm_spec": f"{here}/llm.yaml"},
            "add": {"llm_spec": f"{here}/factories.py:make"},
        },
        "bench": {"encode": {"model": str(Path.home() / "m")}, "scale": {"encoder": "/abs/m"}},
        "expert": {"fit-router": {"domains": [f"med={here}/corpora/med", "law=/data/law", "bad"]}},
    }
    kept = {
        "build": {"qdrant_location": ":memory:"},
        "graph": {"build": {"llm_spec": "local"}, "add": {"llm_spec": "pkg.mod:make"}},
    }
    assert paths_beside(main, kept, tmp_path) == kept
    assert paths_beside(main, {"build": {"qdrant_location": "http://localhost:6333"}}, tmp_path) == {
        "build": {"qdrant_location": "http://localhost:6333"}
    }

    # rerankers and the router's encoder: a folder beside the file, or a hub name kept (a hub name
    # was made a path beside the file, and `route fit --encoder` was read from the cwd)
    (tmp_path / "rr").mkdir()
    hub = "cross-encoder/ms-marco-MiniLM-L-6-v2"
    named = {
        "skills": {"route": {"reranker_path": "rr"}, "tune": {"reranker_path": hub}},
        "bench": {"rerank": {"model": hub}, "skills": {"reranker_path": "rr"}},
        "route": {"fit": {"encoder": "models/mini"}},
    }
    assert paths_beside(main, named, tmp_path) == {
        "skills": {"route": {"reranker_path": f"{here}/rr"}, "tune": {"reranker_path": hub}},
        "bench": {"rerank": {"model": hub}, "skills": {"reranker_path": f"{here}/rr"}},
        "route": {"fit": {"encoder": f"{here}/models/mini"}},
    }


def test_a_config_files_encoder_folder_and_store_folder_are_beside_it(runner, corpus, tmp_path, monkeypatch):
    """`ragroute build` with the encoder and the embedded Qdrant store named in a --config file in
    another folder: both are that folder's, not the working directory's."""
    from conftest import HashingEncoder

    import ragroute.cli.build as cli_build

    opened = []

    def open_encoder(name, backend, cache_dir):
        opened.append(name)
        return HashingEncoder()

    monkeypatch.setattr(cli_build, "open_encoder", open_encoder)
    folder = tmp_path / "conf"
    (folder / "models" / "mini").mkdir(parents=True)
    defaults = folder / "defaults.yaml"
    defaults.write_text(
        "build: {out_dir: idx, method: qdrant, qdrant_location: store, encoder: models/mini}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(main, ["--config", "../conf/defaults.yaml", "build", str(corpus)])
    assert result.exit_code == 0, result.output
    assert [Path(name).resolve() for name in opened] == [folder / "models" / "mini"]
    assert (folder / "store").is_dir() and not (elsewhere / "store").exists()


def test_progress_may_be_set_in_a_config_file(runner, corpus, tmp_path, monkeypatch):
    import ragroute.index.build
    from ragroute.progress import PROGRESS_ENV, forced_progress

    seen = []
    build_index = ragroute.index.build.build_index

    def spy(*args, **kwargs):  # what the progress bars of the build would read
        seen.append(forced_progress())
        return build_index(*args, **kwargs)

    monkeypatch.setattr(ragroute.index.build, "build_index", spy)
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("progress: false\n")
    assert runner.invoke(main, ["--config", str(defaults), "config", "check", "--help"]).exit_code == 0
    for value, outside in (("false", "1"), ("true", "0")):
        defaults.write_text(f"progress: {value}\n")
        monkeypatch.setenv(PROGRESS_ENV, outside)  # forced the other way outside the command
        build = ["build", str(corpus), "--out", str(tmp_path / "idx"), "--method", "bm25"]
        result = runner.invoke(main, ["--config", str(defaults), *build])
        assert result.exit_code == 0, result.output
        assert os.environ[PROGRESS_ENV] == outside  # restored when the command ended
    assert seen == [False, True]


# ----------------------------------------------------------------------------- OS errors and queries


def test_out_under_a_file_and_unwritable_places_are_one_line_errors(runner, corpus, tmp_path):
    (tmp_path / "plain").write_text("x")
    line = _error_line(runner.invoke(main, ["build", str(corpus), "--out", str(tmp_path / "plain" / "idx"),
                                            "--method", "bm25"]))  # fmt: skip
    # before any work, naming the file (until session 53: `.../plain/idx/builds: Not a directory`)
    assert line.endswith(f"{tmp_path / 'plain'} is a file, not a folder")
    out = tmp_path / "idx"
    with inject(f"eacces:{out}", tmp_path):
        line = _error_line(runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]))
    assert "Permission denied" in line


@pytest.mark.parametrize("after", range(0, 12))
def test_disk_full_at_any_write_of_a_build_keeps_the_previous_index(runner, corpus, tmp_path, after):
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]).exit_code == 0
    before = runner.invoke(main, ["query", str(out), "solar wind", "--json"]).stdout
    with inject(f"enospc:{out}@{after}", tmp_path):
        result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code:
        assert "no space left on device" in _error_line(result).lower()
    after_run = runner.invoke(main, ["query", str(out), "solar wind", "--json"])
    assert after_run.exit_code == 0
    hits = [h["doc_id"] for h in json.loads(after_run.stdout.splitlines()[-1])["hits"]]
    assert hits == [h["doc_id"] for h in json.loads(before.splitlines()[-1])["hits"]]


def test_os_error_messages_are_one_line():
    from ragroute.errors import RagrouteError, os_error_message

    disk_full = OSError(errno.ENOSPC, "No space left on device", "/data/idx/docs.jsonl")
    assert os_error_message(disk_full) == "/data/idx/docs.jsonl: no space left on device (the disk is full)"
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
    assert os_error_message(moved) == "/a -> /b: Invalid cross-device link"
    assert os_error_message(PermissionError(errno.EACCES, "Permission denied")) == "Permission denied"
    # a path's own spaces kept (the error named "/data/my dir", a path that is not there, until
    # session 51); a line break in it still does not split the line
    spaced = FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/my  dir/x\ny")
    assert os_error_message(spaced) == "/data/my  dir/x y: No such file or directory"
    assert str(RagrouteError("  /data/my  dir:\n    not an index\r\n")) == "/data/my  dir: not an index"


def test_undecodable_query_bytes_are_refused_and_nul_is_searched(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]).exit_code == 0
    text = b"com\xe8te".decode("utf-8", "surrogateescape")  # what Python makes of a latin-1 argv
    line = _error_line(runner.invoke(main, ["query", str(out), text]))
    assert line == "error: query is not valid text: undecodable byte 0xe8 at character 4 (not UTF-8)"
    result = runner.invoke(main, ["query", str(out), "solar\x00wind", "--json"])
    assert result.exit_code == 0
    line = _error_line(runner.invoke(main, ["query", str(out), "wind " * 30_000]))
    assert "the limit is 100,000" in line


def test_fault_injection_restores_everything(tmp_path):
    import builtins
    import os

    before = (builtins.open, os.open, os.mkdir, os.replace)
    with inject(f"enospc:{tmp_path}", tmp_path):
        with pytest.raises(OSError) as caught:
            (tmp_path / "x").write_text("x")
        assert caught.value.errno == errno.ENOSPC
        Path(os.devnull).open("w").close()  # outside the target: untouched
    with inject(f"unreadable:{tmp_path}", tmp_path), pytest.raises(PermissionError):
        (tmp_path / "x").read_text()
    assert (builtins.open, os.open, os.mkdir, os.replace) == before
    (tmp_path / "x").write_text("fine")


@pytest.mark.parametrize(
    ("stderr", "clean"),
    [
        ("error: /x/idx: no such index\n", True),
        ("warning: 2 records skipped\nerror: /x/idx: no such index\n", True),
        # click's usage dump (ragroute says one error line instead)
        ("Usage: ragroute [OPTIONS] COMMAND\nTry 'ragroute --help'.\n\nError: No such option: --x\n", False),
        # what the harnesses counted as one line: "Error: " anywhere (an exception's name ends so)...
        ("Traceback (most recent call last):\n  File 'x.py'\nValueError: Error: bad\n", False),
        ("warning: a source failed (KeyError: 'k')\n", False),
        ("error: first\nerror: second\nwarning: OSError: full\n", False),
        # ...and a message running on below its one error line, or a traceback beside it
        ("error: the index is damaged\n  (manifest.json, line 3)\n", False),
        ("Traceback (most recent call last):\n  File 'x.py'\nValueError: bad\nerror: bad\n", False),
        ("", False),
    ],
)
def test_a_one_line_error_is_the_last_and_only_error_line_and_no_traceback(stderr, clean):
    from ragroute.cli.testing import CliOutcome

    assert CliOutcome(("query",), 2, "", stderr).one_line_error is clean
    assert not CliOutcome(("query",), 1, "", stderr).one_line_error  # exit 2 only


def test_an_unreadable_folder_refuses_sqlite_too_and_counts_what_it_refused(tmp_path):
    """The embedding cache is a SQLite file, opened in C past the patched opens: a cache folder
    "that cannot be read" was read as usual, and its cases tested nothing."""
    import sqlite3

    (tmp_path / "cache").mkdir()
    sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite").close()
    with inject(f"unreadable:{tmp_path}", tmp_path) as injected:
        with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
            sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite")
        sqlite3.connect(":memory:").close()  # outside the path: untouched
    assert injected.refused == 1
    with inject(f"enospc:{tmp_path}@5", tmp_path) as injected:
        (tmp_path / "x").write_text("x")  # the first of the 5 writes that still succeed
    assert injected.refused == 0
    sqlite3.connect(tmp_path / "fine.sqlite").close()


def test_the_fault_cases_of_graph_export_reach_their_faults(monkeypatch):
    """After its normal run wrote edges.tsv, every later `graph export` case (a missing or corrupt
    graph, a disk full under --out...) stopped at "edges.tsv exists: give --force", counted clean."""
    import ragroute.cli.testing as testing

    real, said = testing.invoke, []
    monkeypatch.setattr(testing, "invoke", lambda args, **kw: said.append(o := real(args, **kw)) or o)
    result = run_cli_faults(quick=True, commands=["graph export"])
    assert result["cli_cases"] >= 5 and result["tracebacks"] == result["unclear"] == 0
    assert [o.args for o in said if "give --force" in o.stderr] == []
    # every fault fired but the cache's (it reads a graph: it encodes nothing)
    assert [case.split(" (fault")[0] for case in result["not_reached_cases"]] == [
        "graph export [writes to cache fail after 0: eacces]"
    ]


# a run that exits with status 1 without saying why in an ``error: ...`` line (click's own ``Error:
# ...`` dump, a printed traceback) is unclear: until session 55 any "error" in its stderr passed


def _click_error(*_args, **_kwargs):
    raise click.ClickException("could not read the graph\n  (planted)")  # exit 1, "Error: ..."


def _printed_traceback(*_args, **_kwargs):
    sys.stderr.write("Traceback (most recent call last):\n  ...\nValueError: planted\n")
    raise SystemExit(1)


@pytest.mark.parametrize("planted", [_click_error, _printed_traceback])
def test_an_exit_1_without_an_error_line_is_unclear(monkeypatch, planted):
    monkeypatch.setattr(ragroute.graph.views, "graph_stats", planted)
    result = run_cli_faults(quick=True, commands=["graph stats"])
    assert result["unclear"] > 0, result
    assert any("graph stats [normal]: exit 1" in case for case in result["unclear_cases"]), result


def test_config_check_listing_problems_with_exit_1_stays_clear(tmp_path):
    from ragroute.cli.testing import invoke
    from ragroute.reliability.faults import said_why

    config = tmp_path / "routing.yaml"
    config.write_text("sources: {a: {index: missing}}\n", encoding="utf-8")
    outcome = invoke(["config", "check", str(config)])
    assert outcome.exit_code == 1 and said_why(outcome.stderr), outcome.stderr
