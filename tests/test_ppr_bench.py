"""``ragroute bench ppr`` on a tiny corpus with the hashing encoder (no model, no shared data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ragroute.cli.bench import ppr_command
from ragroute.errors import RagrouteError
from ragroute.evaluation.bench_ppr import ReplayEncoder, format_report, run_ppr_bench, synthetic_graph
from ragroute.registry import BENCHMARKS

PEOPLE = ["Ada Brennan", "Otto Lind", "Mara Quill", "Ivo Stern", "Lena Holm", "Piet Vos"]
TOWNS = ["Kellow", "Dressel", "Amberley", "Marlow Heath", "Tarn", "Oskby"]


@pytest.fixture
def tiny_corpus(tmp_path):
    rows = []
    for i in range(24):
        person, town, other = PEOPLE[i % 6], TOWNS[i % 6], TOWNS[(i + 1) % 6]
        rows.append(
            {
                "_id": f"d{i}",
                "title": f"{person} {i}",
                "text": f"{person} was born in {town} in {1900 + i}. The River {other} flows near {town}.",
            }
        )
    root = tmp_path / "tiny_corpus"
    root.mkdir()
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return root


def test_bench_refuses_a_broken_corpus_line(tiny_corpus, hashing_encoder):
    # the corpus was read leniently: a broken line was skipped with a warning and the graph measured
    # on fewer passages, exit 0
    from ragroute.errors import CorpusFormatError

    with open(tiny_corpus / "corpus.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"_id": "d99", "text": \n')
    with pytest.raises(CorpusFormatError, match="line 25"):
        run_ppr_bench(tiny_corpus, hashing_encoder, add=5, queries=4, synthetic_nodes=0, synthetic_edges=0)


def test_bench_reports_build_add_and_ppr_against_igraph(tiny_corpus, hashing_encoder):
    result = run_ppr_bench(
        tiny_corpus, hashing_encoder, add=5, queries=4, synthetic_nodes=800, synthetic_edges=6000, seed=1
    )
    assert result["passages"] == 24 and result["add"] == 5
    for key in ("ms_per_query", "igraph_ms", "speedup_vs_igraph", "top5_agreement"):
        assert set(result[key]) == {"tiny", "synthetic"}
    for graph in ("tiny", "synthetic"):
        assert result["ms_per_query"][graph] > 0 and result["igraph_ms"][graph] > 0
        assert result["speedup_vs_igraph"][graph] > 0
        assert 0.0 <= result["top5_agreement"][graph] <= 1.0
        assert result["ppr"][graph]["queries"] == 4
        methods = result["ppr"][graph]["methods"]
        assert set(methods) <= {"push", "power", "push+power"} and sum(methods.values()) == 4
    assert result["top5_agreement"]["synthetic"] == 1.0  # clear-cut tops on a small graph
    assert result["ppr"]["synthetic"]["nodes"] == 800
    assert 5000 < result["ppr"]["synthetic"]["edges"] <= 6000
    assert result["build_s"] > 0 and result["add_s"] > 0
    breakdown = result["build_breakdown_s"]
    assert set(breakdown) == {"encode_passages", "encode_phrases", "rest"}
    assert min(breakdown.values()) >= 0 and sum(breakdown.values()) <= result["build_s"] + 0.05
    assert "add_100_s" not in result and "add_100_s<=15" not in result["goals"]
    assert result["graph"]["passages"] == 24 and result["graph_after_add"]["passages"] == 24
    assert result["peak_rss_mib"]["after_build"] >= result["peak_rss_mib"]["before_build"] > 0
    assert all(set(goal) == {"value", "bound", "met"} for goal in result["goals"].values())
    json.dumps(result)  # JSON-able as it is
    report = format_report(result)
    assert "igraph" in report and "goals:" in report


def test_add_100_is_reported_when_adding_100(tmp_path, hashing_encoder):
    root = tmp_path / "c"
    root.mkdir()
    rows = [
        {"_id": f"x{i}", "title": f"Town {i}", "text": f"Town {i} lies on the Varne in {1800 + i}."}
        for i in range(110)
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = run_ppr_bench(root, hashing_encoder, queries=2, synthetic_nodes=300, synthetic_edges=2000)
    assert result["add"] == 100 and result["add_100_s"] == result["add_s"]
    assert result["goals"]["add_100_s<=15"]["met"] is (result["add_100_s"] <= 15)


def test_corpus_folder_named_synthetic_keeps_its_own_rows(tiny_corpus, hashing_encoder):
    # `--data x/synthetic_corpus` named the corpus graph "synthetic": the synthetic graph's rows
    # replaced it in every key, and the corpus graph's goals were gone (until session 54)
    root = tiny_corpus.rename(tiny_corpus.parent / "synthetic_corpus")
    result = run_ppr_bench(root, hashing_encoder, add=2, queries=2, synthetic_nodes=300, synthetic_edges=2000)
    assert set(result["ppr"]) == {"corpus", "synthetic"}
    assert result["ppr"]["corpus"]["nodes"] != result["ppr"]["synthetic"]["nodes"] == 300
    assert set(result["ms_per_query"]) == {"corpus", "synthetic"}
    assert "speedup_corpus>=10" in result["goals"] and "top5_corpus>=0.95" in result["goals"]


def test_corpus_graph_without_phrases_is_measured(tmp_path, hashing_encoder):
    # passages the extractor finds no phrase in give a graph of passage nodes only: the resets were
    # weighed by the (empty) phrase counts, an IndexError traceback (until session 54)
    root = tmp_path / "plain_corpus"
    root.mkdir()
    rows = [
        {"_id": f"p{i}", "title": "", "text": text}
        for i, text in enumerate(["the of and", "is a to", "it was in"])
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = run_ppr_bench(root, hashing_encoder, add=1, queries=2, synthetic_nodes=300, synthetic_edges=2000)
    assert result["graph"]["phrases"] == 0
    assert result["ppr"]["plain"]["queries"] == 2 and result["ppr"]["plain"]["nodes"] == 3


def test_missing_data_is_one_line(tmp_path, hashing_encoder):
    with pytest.raises(RagrouteError, match="data missing"):
        run_ppr_bench(tmp_path / "nowhere", hashing_encoder)
    outcome = CliRunner().invoke(ppr_command, ["--data", str(tmp_path / "nowhere")])
    assert outcome.exit_code == 2
    assert (
        outcome.output.strip().startswith("error: data missing")
        and len(outcome.output.strip().splitlines()) == 1
    )
    assert BENCHMARKS.get("ppr") is ppr_command


def test_replay_encoder_replays_until_live(hashing_encoder):
    vector = np.full(hashing_encoder.dim, 0.5, dtype=np.float32)
    replay = ReplayEncoder(hashing_encoder, {"doc": vector}, {"phrase": vector})
    assert np.array_equal(replay.encode_documents(["doc"])[0], vector)
    assert np.array_equal(replay.encode_queries(["phrase"])[0], vector)
    calls = hashing_encoder.calls
    replay.live = True
    assert not np.array_equal(replay.encode_documents(["doc"])[0], vector)
    assert hashing_encoder.calls == calls + 1


def test_synthetic_graph_is_symmetric_skewed_and_fixed():
    a, b = synthetic_graph(500, 4000, seed=3), synthetic_graph(500, 4000, seed=3)
    assert (a != b).nnz == 0 and abs(a - a.T).max() < 1e-6
    degree = np.diff(a.indptr)
    assert degree.max() > 5 * np.median(degree)
