import math

import pytest

from ragroute.evaluation.metrics import (
    evaluate_run,
    full_chain_recall_at_k,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    recall_at_k,
)

QRELS = {"a": 1, "b": 1, "c": 0}


def test_ndcg_binary_by_hand():
    ranking = ["x", "a", "y", "b"]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranking, QRELS, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranking, QRELS, 1) == 0.0


def test_ndcg_graded_uses_grades():
    qrels = {"a": 4, "b": 1}
    assert ndcg_at_k(["a", "b"], qrels, 2) == pytest.approx(1.0)
    worse = ndcg_at_k(["b", "a"], qrels, 2)
    assert worse == pytest.approx((1 + 4 / math.log2(3)) / (4 + 1 / math.log2(3)))


def test_recall_mrr_hit_fullchain():
    ranking = ["x", "a", "y", "b"]
    assert recall_at_k(ranking, QRELS, 2) == 0.5
    assert recall_at_k(ranking, QRELS, 4) == 1.0
    assert mrr_at_k(ranking, QRELS, 10) == 0.5
    assert mrr_at_k(ranking, QRELS, 1) == 0.0
    assert hit_at_k(ranking, QRELS, 1) == 0.0
    assert hit_at_k(ranking, QRELS, 2) == 1.0
    assert full_chain_recall_at_k(ranking, QRELS, 2) == 0.0
    assert full_chain_recall_at_k(ranking, QRELS, 4) == 1.0


def test_evaluate_run_skips_unjudged_and_scores_missing_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": ["a"]}
    result = evaluate_run(run, qrels, ["recall@10", "mrr@10"])
    assert result["queries"] == 2
    assert result["recall@10"] == 0.5
    assert result["mrr@10"] == 0.5


def test_parse_metric_rejects_unknown():
    assert parse_metric("ndcg@10") == ("ndcg", 10)
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric("precision@5")
    with pytest.raises(ValueError):
        parse_metric("ndcg@0")
