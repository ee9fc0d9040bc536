"""The command line: happy paths on BM25 (no model) and one-line errors on bad input."""

import json

import pytest
from click.testing import CliRunner

from ragroute.cli import main
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.store.artifact import published_path
from ragroute.store.manifest import MANIFEST_NAME


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "comets.md").write_text("# Comets\n\nComets have an ion tail pushed by the solar wind.\n")
    (folder / "bread.md").write_text("# Bread\n\nSourdough needs a long fermentation of flour and water.\n")
    (folder / "printers.csv").write_text("model,toner\nP350,QT-350\nP200,QT-200\n")
    return folder


def beir(tmp_path, corpus_lines):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(b"\n".join(corpus_lines) + b"\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "solar wind tail"}) + "\n")
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_build_query_json_and_trace(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 0, result.output
    assert "built bm25 index of 3 units" in result.output
    result = runner.invoke(main, ["query", str(out), "solar wind", "-k", "2", "--json"])
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["hits"][0]["doc_id"] == "comets" and payload["hits"][0]["source"] == "idx"
    assert [step["stage"] for step in payload["trace"]] == ["load", "retrieve"]
    result = runner.invoke(main, ["query", str(out), "toner", "--filter", "modality=table"])
    assert "printers" in result.output and "trace:" in result.output


def test_eval_json_keys(runner, tmp_path):
    data = beir(
        tmp_path,
        [
            json.dumps({"_id": f"d{i}", "title": "", "text": t}).encode()
            for i, t in enumerate(["rain", "solar wind tail", "bread"])
        ],
    )
    out = tmp_path / "idx"
    assert runner.invoke(main, ["build", str(data), "--out", str(out), "--method", "bm25"]).exit_code == 0
    result = runner.invoke(
        main, ["eval", "--index", str(out), "--data", str(data), "--split", "dev", "--json"]
    )
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "queries"} <= payload.keys()
    assert payload["ndcg@10"] == 1.0 and payload["queries"] == 1


def test_bad_corpus_lines_skip_with_count_or_fail_with_line(runner, tmp_path):
    lines = [
        b'{"_id": "d1", "text": "fine"}',
        b'{"_id": "d2", "text": broken',
        b'{"_id": "d3", "text": "caf\xff"}',
        b'{"_id": "d4", "text": "also fine"}',
    ]
    data = beir(tmp_path, lines)
    result = runner.invoke(main, ["build", str(data), "--out", str(tmp_path / "i"), "--method", "bm25"])
    assert result.exit_code == 0
    assert "warning: skipped 2 bad lines" in result.output and "(2 bad records skipped)" in result.output
    result = runner.invoke(
        main, ["build", str(data), "--out", str(tmp_path / "j"), "--method", "bm25", "--on-error", "raise"]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip() == "error: corpus.jsonl line 2: invalid JSON (Expecting value at column 20)"
        or (
            result.output.startswith("error: ")
            and "line 2" in result.output
            and len(result.output.splitlines()) == 1
        )
    )
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize("query", ["", "   \t"])
def test_empty_query_is_one_line_error(runner, corpus, tmp_path, query):
    out = tmp_path / "idx"
    runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    result = runner.invoke(main, ["query", str(out), query])
    assert result.exit_code == 2
    assert result.output == "error: query is empty or whitespace only\n"


def test_truncated_manifest_and_missing_index(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    manifest = published_path(out) / MANIFEST_NAME
    manifest.write_text(manifest.read_text()[:40])
    result = runner.invoke(main, ["query", str(out), "comets"])
    assert result.exit_code == 2 and "manifest.json is corrupt" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(main, ["query", str(tmp_path / "nope"), "comets"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_missing_model_path_is_one_line_error(runner, corpus, tmp_path):
    result = runner.invoke(
        main,
        [
            "build",
            str(corpus),
            "--out",
            str(tmp_path / "idx"),
            "--method",
            "dense",
            "--encoder",
            str(tmp_path / "no-such-model"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: encoder") and "not found" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "idx").exists()


def test_query_with_another_encoder_is_refused(runner, tmp_path, hashing_encoder, small_docs):
    save_index(build_index(small_docs, "dense", encoder=hashing_encoder), tmp_path / "idx")
    result = runner.invoke(
        main,
        [
            "query",
            str(tmp_path / "idx"),
            "galaxy",
            "--encoder",
            "all-MiniLM-L6-v2",
            "--backend",
            "torch",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 2
    assert "was built with encoder 'test/hashing' (dim 64)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_config_file_supplies_defaults(runner, corpus, tmp_path):
    config = tmp_path / "ragroute.yaml"
    config.write_text("build:\n  method: bm25\nquery:\n  k: 1\n")
    out = tmp_path / "idx"
    assert (
        runner.invoke(main, ["--config", str(config), "build", str(corpus), "--out", str(out)]).exit_code == 0
    )
    result = runner.invoke(main, ["--config", str(config), "query", str(out), "solar wind comets", "--json"])
    assert len(json.loads(result.stdout.strip().splitlines()[-1])["hits"]) == 1


def test_every_command_has_help(runner):
    for args in (
        ["--help"],
        ["build", "--help"],
        ["query", "--help"],
        ["eval", "--help"],
        ["demo", "--help"],
        ["route", "--help"],
        ["bench", "--help"],
        ["bench", "bm25", "--help"],
        ["bench", "corpus-routing", "--help"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage:" in result.output, args


def test_refine_and_mmap_only_where_they_apply(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "bm25", "--refine", "4"]
    )
    assert result.exit_code == 2 and "--refine does not apply to --method bm25" in result.output
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "dense", "--refine", "4"]
    )
    assert result.exit_code == 2 and "--refine applies to --dense-index ivfpq, not flat" in result.output
    assert not out.exists()


def test_qdrant_option_only_with_the_qdrant_method(runner, corpus, tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "dense", "--qdrant", "x"]
    )
    assert result.exit_code == 2 and "--qdrant does not apply to --method dense" in result.output
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "qdrant"])
    assert result.exit_code == 2 and "--method qdrant needs --qdrant URL|FOLDER" in result.output
    assert not out.exists()


def test_lancedb_build_records_its_folder_absolute_and_queries_from_anywhere(
    runner, corpus, tmp_path, monkeypatch
):
    pytest.importorskip("lancedb")
    out = tmp_path / "idx"
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "lancedb", "--qdrant", "x"]
    )
    assert result.exit_code == 2 and "--qdrant does not apply to --method lancedb" in result.output
    result = runner.invoke(main, ["build", str(corpus), "--out", str(out), "--method", "lancedb"])
    assert result.exit_code == 2 and "--method lancedb needs --lancedb FOLDER|URI" in result.output
    assert not out.exists()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # a relative folder, then another working directory
    result = runner.invoke(
        main, ["build", str(corpus), "--out", str(out), "--method", "lancedb", "--lancedb", "vectors"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((published_path(out) / MANIFEST_NAME).read_text())
    assert manifest["params"]["lancedb"]["location"] == str(tmp_path / "work" / "vectors")
    monkeypatch.chdir(tmp_path)
    dense = tmp_path / "dense"
    assert (
        runner.invoke(main, ["build", str(corpus), "--out", str(dense), "--method", "dense"]).exit_code == 0
    )
    top = [runner.invoke(main, ["query", str(ix), "telescope orbit", "--json"]) for ix in (out, dense)]
    ids = [[h["doc_id"] for h in json.loads(r.output.strip().splitlines()[-1])["hits"]] for r in top]
    assert ids[0] == ids[1] and len(ids[0]) > 0
