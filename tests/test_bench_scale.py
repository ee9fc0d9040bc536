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
