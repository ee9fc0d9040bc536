"""Readers during rebuilds, short: a writer process rebuilds an index while this process and
`ragroute query` read it; every answer is one build's, and no read fails (also when a rebuild with
another encoder lands between a command's reading of the manifest and its loading)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import HashingEncoder

from ragroute.cli import main
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.reliability.race import run_race
from ragroute.types import Document


def test_readers_during_rebuilds_get_one_builds_answer(tmp_path):
    report = run_race(tmp_path, method="bm25", reads=80, cli_reads=1, threads=2, cli_workers=1)
    assert report.rebuilds >= 5  # the index really was replaced while being read
    assert report.reads >= 80 and report.cli_reads >= 1
    assert report.wrong == 0 and report.errors == 0, report.examples


@pytest.mark.parametrize("command", ["query", "eval"])
def test_a_rebuild_with_another_encoder_between_reads_answers_from_one_build(tmp_path, monkeypatch, command):
    """`ragroute query` and `eval --index` picked the encoder from one read of the manifest and
    loaded the index in a second: a rebuild with another encoder published between the two failed
    with "built with encoder 'test/new' (dim 32), not 'test/old' (dim 64); rebuild the index" (until
    session 47). Here the rebuild lands while the reader opens the encoder: it answers from the
    build it opened, and the next reader from the new one."""
    import ragroute.encode

    old, new = HashingEncoder(64, "test/old"), HashingEncoder(32, "test/new")
    folder = tmp_path / "idx"
    texts = ["comet tail solar wind", "bread flour yeast", "printer toner laptop"]
    save_index(
        build_index([Document(id=f"old{i}", text=t) for i, t in enumerate(texts)], "dense", encoder=old),
        folder,
    )
    rebuilt = build_index([Document(id=f"new{i}", text=t) for i, t in enumerate(texts)], "dense", encoder=new)
    opened: list[str] = []

    def load_encoder(name, **_kwargs):
        opened.append(name)
        if len(opened) == 1:  # another process publishes the rebuild meanwhile
            save_index(rebuilt, folder)
        return {"test/old": old, "test/new": new}[name]

    monkeypatch.setattr(ragroute.encode, "load_encoder", load_encoder)
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"old{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "solar wind"}) + "\n")
    (data / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\told0\t1\n")
    args = {
        "query": ["query", str(folder), "solar wind", "--json"],
        "eval": ["eval", "--index", str(folder), "--data", str(data), "--json"],
    }[command]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout.strip().splitlines()[-1])
    if command == "query":  # every hit and the trace from the build opened
        assert {hit["doc_id"] for hit in payload["hits"]} == {"old0", "old1", "old2"}
        assert payload["trace"][0]["built_with"]["model_id"] == "test/old"
    else:  # the old build holds the judged document: found first
        assert payload["ndcg@10"] == 1.0
    second = CliRunner().invoke(main, args)  # the next reader: the new build, with its own encoder
    assert second.exit_code == 0, second.output
    assert opened == ["test/old", "test/new"]
    if command == "query":
        assert json.loads(second.stdout.strip().splitlines()[-1])["hits"][0]["doc_id"] == "new0"


def test_readers_start_only_once_the_writer_has_replaced_the_index(tmp_path, monkeypatch):
    """Until session 49 the readers started 0.2 s after the writer process, before it had imported
    ragroute: a quick run read one unchanging build throughout and reported a race that never
    happened. Now the first read in a reader thread sees a build the writer published."""
    import ragroute.reliability.race as race
    from ragroute.store.artifact import POINTER_NAME

    pointers: list[bytes] = []
    original = race.in_process_answer

    def in_process_answer(index_dir, encoder, k=5):
        pointers.append((index_dir / POINTER_NAME).read_bytes())
        return original(index_dir, encoder, k)

    monkeypatch.setattr(race, "in_process_answer", in_process_answer)
    report = run_race(tmp_path, method="bm25", reads=5, cli_reads=0, threads=1)
    assert report.reads >= 5 and report.wrong == 0 and report.errors == 0, report.examples
    # calls 1-2 compute the answers of the two builds; call 3 is the first read of the race
    assert pointers[2] != pointers[1], "the readers read before the writer published anything"
