"""``ragroute bench scale`` on sizes too small for a layout: the layout is skipped and said so."""

from __future__ import annotations

from ragroute.evaluation.bench_scale import run_scale_bench


def test_ivfpq_below_its_training_minimum_is_skipped_with_the_reason():
    said: list[str] = []
    result = run_scale_bench([1000], layouts=("flat", "ivfpq"), queries=5, log=said.append)
    assert result["recall@10"]["flat"]["1000"] == 1.0 and "1000" in result["latency_ms_p50"]["flat"]
    assert "ivfpq needs at least 1024 documents" in result["skipped"]["ivfpq"]["1000"]
    assert all(not values for row, values in result["latency_ms_p50"].items() if row.startswith("ivfpq"))
    assert any("ivfpq: skipped" in line for line in said)


def test_the_store_rows_return_flat_top10_and_say_so():
    import pytest

    pytest.importorskip("lancedb")
    pytest.importorskip("qdrant_client")
    result = run_scale_bench([2000], layouts=("flat", "qdrant", "lancedb"), queries=10)
    assert result["recall@10"]["qdrant"]["2000"] == 1.0 and result["recall@10"]["lancedb"]["2000"] == 1.0
    assert result["store_identical"] is True and result["latency_ms_p50"]["lancedb"]["2000"] > 0


def test_bench_dense_skips_ivfpq_on_a_collection_too_small_to_train_it(tmp_path):
    """`ragroute bench dense` on a small collection (Glasgow ADI, 82 documents) stopped with IVF-PQ's
    training error and printed no row at all (a bench audit)."""
    from pathlib import Path

    from ragroute.evaluation.bench_dense import format_dense_report, run_dense_bench

    data = Path(__file__).parent / "data" / "stepwise_musique"
    result = run_dense_bench(
        data, encoder_name="all-MiniLM-L6-v2", backend="torch", cache_dir=tmp_path, split="dev"
    )
    assert set(result["layouts"]) == {"flat", "hnsw"}
    assert result["layouts"]["flat"]["recall@10_vs_exact"] == 1.0
    assert "ivfpq needs at least" in result["skipped"]["ivfpq"]
    assert "ivfpq   skipped: ivfpq needs at least" in format_dense_report(result)


def test_bench_scale_reads_every_option_before_the_layouts_run(monkeypatch):
    # --routing-sources, --ppr-edges and --ray-workers were read after the layouts (an hour at the
    # documented sizes); --ppr-edges -1 ended in a numpy traceback, --ray-workers 0 was accepted
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.evaluation import bench_scale

    def never(*args, **kwargs):
        raise AssertionError("the layouts ran before the options were checked")

    monkeypatch.setattr(bench_scale, "run_scale_bench", never)
    for option, value, said in [
        ("--ppr-edges", "-1", "error: --ppr-edges '-1': give integers of at least 1\n"),
        ("--routing-sources", "x", "error: --routing-sources 'x': give comma-separated integers\n"),
        ("--routing-sources", "0", "error: --routing-sources '0': give integers of at least 1\n"),
        ("--ray-workers", "0", "error: --ray-workers '0': give integers of at least 1\n"),
        ("--ray-workers", "2", "error: --ray-workers does not apply without --ray-corpus"),
    ]:
        result = CliRunner().invoke(main, ["bench", "scale", "--sizes", "1000", option, value])
        assert result.exit_code == 2 and result.output.startswith(said), result.output


def test_bench_scale_refuses_ray_options_without_ray_and_names_what_it_leaves_out(monkeypatch):
    # --encoder nonexistent-model --backend torch without --ray-corpus (the only thing they set), and
    # every optional row switched off, exited 0 without a word
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.evaluation import bench_scale

    monkeypatch.setattr(bench_scale, "run_scale_bench", lambda *a, **k: {"rows": []})
    monkeypatch.setattr(bench_scale, "format_report", lambda result: "report")
    base = ["bench", "scale", "--sizes", "1000", "--queries", "20"]
    result = CliRunner().invoke(main, [*base, "--encoder", "nonexistent-model", "--backend", "torch"])
    assert result.exit_code == 2 and result.output == (
        "error: --encoder and --backend do not apply without --ray-corpus (they build that corpus)\n"
    )
    off = ["--routing-sources", "", "--ppr-edges", "", "--qdrant-max", "0", "--lancedb-max", "0"]
    result = CliRunner().invoke(main, [*base, *off])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "left out as asked: the Qdrant row (--qdrant-max 0), the LanceDB row (--lancedb-max 0), "
        "the routing cost (--routing-sources empty), the PPR cost (--ppr-edges empty)\n"
    )


def test_bench_scale_help_says_the_smallest_size_its_check_takes(monkeypatch):
    """Until session 50 only the error said that --sizes must be at least 1000, not --help."""
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.evaluation import bench_scale

    def never(*args, **kwargs):
        raise AssertionError("a size below the smallest was measured")

    monkeypatch.setattr(bench_scale, "run_scale_bench", never)
    help_text = " ".join(CliRunner().invoke(main, ["bench", "scale", "--help"]).output.split())
    assert "Comma-separated corpus sizes (synthetic 384-d vectors), each at least 1000." in help_text
    refused = CliRunner().invoke(main, ["bench", "scale", "--sizes", "999"])
    assert refused.exit_code == 2 and refused.output == "error: --sizes: give sizes of at least 1000\n"


def test_bench_dense_times_each_query_one_at_a_time_after_another_one(tmp_path, monkeypatch):
    # the timing set repeated each judged query 20 times in place: the one-at-a-time pass (its first
    # 500 rows) timed the first 25 queries only, each 20 times in a row, warm from the search before
    # (until session 52)
    from pathlib import Path

    import numpy as np
    from conftest import HashingEncoder

    from ragroute.evaluation import bench_dense
    from ragroute.index.dense import DenseIndex

    monkeypatch.setattr("ragroute.encode.load_encoder", lambda *a, **k: HashingEncoder(dim=64))
    single: list[np.ndarray] = []
    search = DenseIndex.search_vectors

    def recording(self, vectors, k=10, **kwargs):
        if len(vectors) == 1 and self.params.factory == "flat":
            single.append(np.asarray(vectors[0]))
        return search(self, vectors, k, **kwargs)

    monkeypatch.setattr(DenseIndex, "search_vectors", recording)
    data = Path(__file__).parent / "data" / "stepwise_musique"
    result = bench_dense.run_dense_bench(data, encoder_name="x", backend="torch", cache_dir=tmp_path)
    n = result["queries"]
    assert n >= 2 and len(single) == min(500, 20 * n)
    for before, after in zip(single, single[1:]):  # a new query every time
        assert float(before @ after) < 0.999


def test_every_row_warms_up_on_queries_it_does_not_time(monkeypatch):
    # the dense layouts warmed up on the first 5 timed queries (their pages then read warm for
    # those) and the store rows not at all (their first query's set-up timed in their rows alone),
    # until session 55: each row's first search is now one batch of other queries, then the timed
    # queries one at a time
    import pytest

    pytest.importorskip("lancedb")
    pytest.importorskip("qdrant_client")
    from ragroute.evaluation import bench_scale
    from ragroute.index.dense import DenseIndex
    from ragroute.registry import INDEX_KINDS

    calls: dict[str, list[list[bytes]]] = {}
    kinds = {"dense": DenseIndex, "qdrant": INDEX_KINDS.get("qdrant"), "lancedb": INDEX_KINDS.get("lancedb")}
    for name, cls in kinds.items():
        search = cls.search_vectors

        def spy(self, vectors, k, *args, _search=search, _name=name, **kwargs):
            calls.setdefault(_name, []).append([row.tobytes() for row in vectors])
            return _search(self, vectors, k, *args, **kwargs)

        monkeypatch.setattr(cls, "search_vectors", spy)
    queries = 20
    run_scale_bench([1000], layouts=("flat", "qdrant", "lancedb"), queries=queries)
    timed = {row.tobytes() for row in bench_scale.clustered_vectors(queries, seed=99)}
    for name in ("qdrant", "lancedb", "dense"):
        first, rest = calls[name][0], calls[name][1:]
        warmed_on_timed = bool(timed & set(first))
        assert len(first) > 1 and not warmed_on_timed, (name, len(first), warmed_on_timed)
        assert len(rest) == queries and all(len(c) == 1 and c[0] in timed for c in rest), name


def test_bench_scale_times_enough_queries_for_the_p95_it_reports(monkeypatch):
    # --queries took 10 (until session 55): latency_ms_p95 was then interpolated between the two
    # slowest of ten queries, and nothing said so
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.evaluation import bench_scale

    def never(*args, **kwargs):
        raise AssertionError("a p95 over too few queries was measured")

    monkeypatch.setattr(bench_scale, "run_scale_bench", never)
    refused = CliRunner().invoke(main, ["bench", "scale", "--sizes", "1000", "--queries", "19"])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output
    assert "--queries" in refused.output and "20" in refused.output
    help_text = " ".join(CliRunner().invoke(main, ["bench", "scale", "--help"]).output.split())
    assert "at least 20" in help_text
