import math

import numpy as np
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
    for odd in ("ndcg@²", "ndcg@١٠"):  # digits int() refuses, or reads: not a cut-off written in ASCII
        with pytest.raises(ValueError, match="unknown metric .* expected NAME@K"):
            parse_metric(odd)


def test_retrieval_evaluator_scores_only_the_queries_it_is_given():
    # bench rerank passed a fold's queries with the whole split's qrels: every judged query of the
    # other fold counted as a miss (nDCG@10 0.5 here instead of 1.0)
    from ragroute.context import QueryContext
    from ragroute.evaluation.evaluators import RetrievalEvaluator
    from ragroute.index.build import build_index
    from ragroute.types import Document

    texts = ["cats purr", "dogs bark", "fish swim"]
    docs = [Document(id=f"d{i}", text=text) for i, text in enumerate(texts, 1)]
    index = build_index(docs, "bm25")
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    result = RetrievalEvaluator([QueryContext("cats purr", id="q1")], qrels, metrics=("ndcg@10",))(index)
    assert result.metrics["ndcg@10"] == 1.0


def test_a_document_returned_twice_counts_once():
    # ndcg_at_k summed the gain of every copy: ["a", "a"] scored 1.0 against {a, b} (a perfect
    # ranking would need b second) and a graded repeat went above 1 (["a"] * 3 gave 2.13)
    qrels = {"a": 1, "b": 1}
    once = 1 / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "a"], qrels, 10) == pytest.approx(once)
    assert ndcg_at_k(["a", "a", "a"], {"a": 3}, 10) == pytest.approx(1.0)
    # a copy is dropped before the cut-off: the next distinct id moves up a rank
    assert ndcg_at_k(["a", "a", "b"], qrels, 2) == pytest.approx(1.0)
    assert mrr_at_k(["x", "x", "a"], qrels, 2) == 0.5
    assert hit_at_k(["x", "x", "a"], qrels, 2) == 1.0
    assert recall_at_k(["a", "a", "b"], qrels, 2) == 1.0
    assert full_chain_recall_at_k(["a", "a", "b"], qrels, 2) == 1.0
    assert evaluate_run({"q": ["a", "a"]}, {"q": qrels}, ["ndcg@10"])["ndcg@10"] == pytest.approx(once)


def test_routing_evaluator_scores_only_the_rows_it_is_given():
    # scoring one fold's rows must not count the other fold's judged queries as misses
    from ragroute.evaluation.evaluators import RoutingEvaluator, RoutingRow

    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    evaluator = RoutingEvaluator([], {"q1": "s", "q2": "s"}, qrels)
    row = RoutingRow("q1", ("s",), "s", ["s"], {"s": 1.0}, ["a"], [1.0], 0.1, 0.2)
    assert evaluator.score([row]).quality == 1.0
    missed = RoutingRow("q2", ("s",), "s", ["s"], {"s": 1.0}, ["x"], [1.0], 0.1, 0.2)
    assert evaluator.score([row, missed]).quality == 0.5


def test_only_queries_with_a_relevant_judgement_are_scorable():
    from ragroute.evaluation.metrics import is_scorable, macro_mean

    assert is_scorable({"a": 1}) and is_scorable({"a": 0, "b": 2})
    assert not is_scorable({"a": 0}) and not is_scorable({})
    assert macro_mean([1.0, None, 0.5]) == 0.75
    assert macro_mean([None, None]) == 0.0 and macro_mean([]) == 0.0


def test_macro_average_leaves_out_groups_with_nothing_to_score():
    # a group whose queries are all judged grade 0 (or have no judgement among the rows scored) has no
    # nDCG: it counted as 0 in the mean over groups (0.5 here instead of 1.0)
    from ragroute.evaluation.evaluators import RoutingEvaluator, RoutingRow, macro_average

    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    run = {"q1": ["a"], "q2": ["b"]}
    groups = {"q1": "x", "q2": "y"}
    assert macro_average(run, qrels, groups, "ndcg@10") == 1.0
    assert macro_average(run, {"q2": {"b": 0}}, groups, "ndcg@10") == 0.0  # nothing to score at all
    # one fold's rows: group y's query has no row here, so y has nothing to score either
    qrels = {"q1": {"a": 1}, "q3": {"c": 1}}
    evaluator = RoutingEvaluator([], {"q1": "s", "q3": "s"}, qrels, groups={"q1": "x", "q3": "y"})
    row = RoutingRow("q1", ("s",), "s", ["s"], {"s": 1.0}, ["a"], [1.0], 0.1, 0.2)
    assert evaluator.score([row]).quality == 1.0


def test_per_query_scores_are_what_evaluate_run_averages():
    from ragroute.evaluation.metrics import per_query_scores

    run = {"q1": ["a", "b"], "q2": ["c"]}
    qrels = {"q1": {"b": 1}, "q2": {"d": 1}, "q3": {"x": 0}, "q4": {"e": 1}}  # q3 unscorable, q4 unranked
    scores = per_query_scores(run, qrels, "mrr@10")
    assert scores == {"q1": 0.5, "q2": 0.0, "q4": 0.0}
    assert evaluate_run(run, qrels, ("mrr@10",))["mrr@10"] == pytest.approx(sum(scores.values()) / 3)


def test_paired_difference_interval_brackets_the_mean_and_is_seeded():
    from ragroute.evaluation.metrics import paired_difference

    a = {f"q{i}": float(i % 4 == 0) for i in range(200)}  # 50 hits
    same = paired_difference(a, dict(a))
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["queries"] == 200
    better = {**a, **{f"q{i}": 1.0 for i in range(1, 41, 4)}}  # 10 more hits: +0.05
    shown = paired_difference(better, a)
    assert shown["diff"] == 0.05 and 0.0 < shown["ci95"][0] < 0.05 < shown["ci95"][1] < 0.1
    assert paired_difference(better, a) == shown  # seeded: the same interval every run
    swapped = paired_difference(a, better)
    assert swapped["diff"] == -0.05 and swapped["ci95"][1] < 0.0
    one = {**a, "q1": 1.0}  # a single query's gain: its interval reaches 0
    assert paired_difference(one, a)["ci95"][0] == 0.0
    only = paired_difference({"x": 1.0}, {"y": 0.0})  # no query in common
    assert only == {"diff": None, "ci95": None, "queries": 0}


def test_paired_difference_by_collection_is_the_difference_of_macro_means():
    from ragroute.evaluation.metrics import macro_mean, paired_difference

    # collection "big": 90 queries, the row gains nothing; "small": 10 queries, it gains 1.0 on each
    a = {**{f"big{i}": 0.5 for i in range(90)}, **{f"small{i}": 1.0 for i in range(10)}}
    b = {**{f"big{i}": 0.5 for i in range(90)}, **{f"small{i}": 0.0 for i in range(10)}}
    groups = {key: key.rstrip("0123456789") for key in a}
    macro = paired_difference(a, b, groups=groups)
    by_query = paired_difference(a, b)
    assert by_query["diff"] == 0.1  # a query-weighted mean
    assert macro["diff"] == 0.5 == macro_mean([1.0, 0.0]) - macro_mean([0.0, 0.0])  # collections weigh alike
    assert macro["ci95"] == [0.5, 0.5]  # every resample keeps ten small and ninety big queries
    assert macro["queries"] == 100


def test_share_of_gap_is_the_ratio_of_macro_gains_with_one_resample_for_both():
    from ragroute.evaluation.metrics import share_of_gap

    # "big" (90 queries): the router gains 0.1 of a 0.4 gap; "small" (10): 0.3 of a 0.4 gap.
    # Macro: (0.1 + 0.3) / 2 = 0.2 of (0.4 + 0.4) / 2 = 0.4, a share of 0.5 (query-weighted: 0.3).
    base = {**{f"big{i}": 0.2 for i in range(90)}, **{f"small{i}": 0.2 for i in range(10)}}
    router = {**{f"big{i}": 0.3 for i in range(90)}, **{f"small{i}": 0.5 for i in range(10)}}
    oracle = {key: 0.6 for key in base}
    groups = {key: key.rstrip("0123456789") for key in base}
    macro = share_of_gap(router, base, oracle, groups=groups)
    assert macro["share"] == 0.5 and macro["queries"] == 100
    assert macro["ci95"] == [0.5, 0.5]  # constant within each collection: every resample agrees
    assert share_of_gap(router, base, oracle)["share"] == 0.3  # 0.12 / 0.4, weighted by query

    # noisy per-query gains: the interval brackets the share, is seeded, and the ratio is taken per
    # resample (a share well inside (0, 1) whose interval is not the ratio of the two intervals)
    rng = np.random.default_rng(0)
    keys = [f"q{i}" for i in range(300)]
    base = {k: float(rng.random() * 0.5) for k in keys}
    oracle = {k: base[k] + 0.3 for k in keys}
    router = {k: base[k] + float(rng.choice([0.0, 0.3], p=[0.7, 0.3])) for k in keys}
    noisy = share_of_gap(router, base, oracle)
    assert noisy["ci95"][0] < noisy["share"] < noisy["ci95"][1] and 0.2 < noisy["share"] < 0.4
    assert share_of_gap(router, base, oracle) == noisy
    # no gap to close (the baseline already at the ceiling): no share
    assert share_of_gap(router, oracle, oracle)["share"] is None
    assert share_of_gap({"x": 1.0}, {"y": 0.0}, {"x": 1.0}) == {"share": None, "ci95": None, "queries": 0}


def test_auroc_interval_brackets_auroc_keeps_class_counts_and_is_seeded():
    from ragroute.evaluation.metrics import auroc, auroc_interval

    rng = np.random.default_rng(3)
    y = rng.random(600) < 0.1
    scores = np.round(rng.normal(size=600) + 1.5 * y, 1)  # rounded: ties between the classes
    low, high = auroc_interval(y, scores)
    assert low < auroc(y, scores) < high < 1.0 and high - low < 0.2
    assert auroc_interval(y, scores) == [low, high]  # seeded
    assert auroc_interval(y, np.where(y, 1.0, 0.0)) == [1.0, 1.0]  # separated in every resample
    assert auroc_interval(y, np.zeros(600)) == [0.5, 0.5]  # one tie: every resample 0.5
    assert auroc_interval(np.ones(5, dtype=bool), np.arange(5.0)) is None  # a single class


def test_ideal_gain_is_cut_at_k():
    # two relevant documents, one slot: the ideal top 1 holds one of them, so nDCG@1 is 1.0
    assert ndcg_at_k(["a"], {"a": 1, "b": 1}, 1) == 1.0
    assert ndcg_at_k(["a", "x"], {"a": 3, "b": 2, "c": 1}, 2) == pytest.approx(3 / (3 + 2 / math.log2(3)))


def test_recall_divides_by_every_relevant_document_not_by_k():
    assert recall_at_k(["a"], {"a": 1, "b": 1, "c": 1}, 1) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b"], {"a": 1, "b": 1, "c": 1, "d": 1}, 2) == 0.5


def _rebuilt_means(values, resamples, seed):
    rng = np.random.default_rng(seed)
    rows = np.asarray(values, dtype=np.float64)
    return rows[rng.integers(0, len(rows), size=(resamples, len(rows)))].mean(axis=1)


def test_paired_difference_interval_is_the_2_5_and_97_5_percentiles_of_the_seeded_resamples():
    from ragroute.evaluation.metrics import paired_difference

    a = {f"q{i}": float(i % 7) / 7 for i in range(40)}
    b = {f"q{i}": float(i % 3) / 3 for i in range(40)}
    keys = sorted(a)
    drawn = _rebuilt_means([a[k] - b[k] for k in keys], 500, 3)
    low, high = np.percentile(drawn, [2.5, 97.5])
    result = paired_difference(a, b, resamples=500, seed=3)
    assert result["ci95"] == [round(float(low), 4), round(float(high), 4)]
    assert result["diff"] == round(float(np.mean([a[k] - b[k] for k in keys])), 4)
    # not a narrower or wider pair of percentiles
    assert result["ci95"] != [round(float(v), 4) for v in np.percentile(drawn, [5, 95])]
    assert result["ci95"] != [round(float(v), 4) for v in np.percentile(drawn, [0.5, 99.5])]


def test_share_of_gap_interval_is_the_2_5_and_97_5_percentiles_of_the_seeded_ratios():
    from ragroute.evaluation.metrics import share_of_gap

    base = {f"q{i}": 0.0 for i in range(30)}
    router = {f"q{i}": float(i % 4) / 4 for i in range(30)}
    oracle = {f"q{i}": 0.5 + float(i % 5) / 10 for i in range(30)}
    keys = sorted(base)
    rng = np.random.default_rng(7)
    cols = np.array([[router[k] - base[k], oracle[k] - base[k]] for k in keys])
    drawn = cols[rng.integers(0, len(keys), size=(400, len(keys)))].mean(axis=1)
    ratios = drawn[:, 0] / drawn[:, 1]
    low, high = np.percentile(ratios, [2.5, 97.5])
    result = share_of_gap(router, base, oracle, resamples=400, seed=7)
    assert result["ci95"] == [round(float(low), 4), round(float(high), 4)]
    assert result["ci95"] != [round(float(v), 4) for v in np.percentile(ratios, [5, 95])]
    assert result["share"] == round(float(cols[:, 0].mean() / cols[:, 1].mean()), 4)


def test_share_of_gap_interval_leaves_out_resamples_with_no_gap():
    from ragroute.evaluation.metrics import share_of_gap

    # one query of three has a gap: about 30% of resamples draw it never and have no ratio
    base = {"q0": 0.0, "q1": 0.0, "q2": 0.0}
    router = {"q0": 0.5, "q1": 0.0, "q2": 0.0}
    oracle = {"q0": 1.0, "q1": 0.0, "q2": 0.0}
    result = share_of_gap(router, base, oracle, resamples=200, seed=0)
    assert result["share"] == 0.5
    assert result["ci95"] == [0.5, 0.5]
    # ... and says how many: the interval is conditional on a positive gap
    assert 40 <= result["resamples_without_gap"] <= 80  # (2/3)^3 of 200 = 59 expected


def test_auroc_gives_tied_scores_their_average_rank():
    from ragroute.evaluation.metrics import auroc

    # positive at 0.5 ties one negative: counts half; beats the negative at 0.1
    assert auroc([True, False, False], [0.5, 0.5, 0.1]) == 0.75
    # all tied: 0.5 whatever the order of the labels
    assert auroc([True, False, True, False], [1.0, 1.0, 1.0, 1.0]) == 0.5
    assert auroc([False, True, True], [0.2, 0.2, 0.9]) == 0.75


def test_auroc_of_a_nan_score_is_nan_not_a_number_that_means_nothing():
    # a nan score sorted somewhere gave 0.5 here (sklearn refuses such input)
    from ragroute.evaluation.metrics import auroc, auroc_interval

    assert np.isnan(auroc([1, 0, 1, 0], [0.2, float("nan"), 0.3, 0.1]))
    assert auroc_interval([1, 0, 1, 0], [0.2, float("nan"), 0.3, 0.1]) is None
    assert auroc([1, 0, 1, 0], [0.2, 0.0, 0.3, 0.1]) == 1.0


def test_a_tie_between_routes_is_broken_as_the_router_breaks_it():
    # the evaluator's "best" route took the label last in sorted order on a tie, the product's
    # selection the first: a query the pipeline routed right was counted as misrouted
    from types import SimpleNamespace

    from ragroute.context import QueryContext
    from ragroute.evaluation.evaluators import RoutingEvaluator
    from ragroute.route.base import decision_from_probs, select_routes, top_route

    routes = {"cisi": 0.5, "adi": 0.5}
    decision = decision_from_probs(list(routes), list(routes.values()), decided_by="test")
    assert decision.chosen == ["adi"] == select_routes(routes, max_routes=1) == [top_route(routes)]

    class Tied:
        def retrieve_contexts(self, contexts, k):
            return [SimpleNamespace(decision=decision, hits=[])]

    evaluator = RoutingEvaluator([QueryContext("q", id="q1")], {"q1": "adi"}, {"q1": {"a": 1}})
    (row,) = evaluator.run(Tied())
    assert row.best == "adi" and evaluator.score([row]).accuracy == 1.0


def test_a_chunk_index_is_scored_on_k_documents_not_k_chunks():
    """Chunks count as their parent, so the first k hits of a chunk index can hold far fewer than k
    documents: one document with many matching chunks left the relevant one outside the read hits,
    and every metric read 0 (until session 37). Such a query is searched deeper."""
    from ragroute.context import QueryContext
    from ragroute.evaluation.evaluators import RetrievalEvaluator
    from ragroute.index.build import build_index
    from ragroute.types import Document

    chunks = [Document(id=f"big#p{i}", text=f"vpn portal login {i}", parent_id="big") for i in range(30)]
    chunks += [Document(id="small#p0", text="portal help desk hours", parent_id="small")]
    chunks += [Document(id=f"other{i}", text=f"printer toner {i}") for i in range(30)]
    index = build_index(chunks, "bm25")
    evaluator = RetrievalEvaluator(
        [QueryContext("vpn portal login", id="q")], {"q": {"small": 1}}, metrics=("recall@10",), k=10
    )
    result = evaluator(index)
    assert result.rows[0]["hits"][:2] == ["big", "small"]
    assert result.metrics["recall@10"] == 1.0


def test_routed_chunk_hits_are_judged_as_their_parent_documents():
    """A routed pipeline over chunk indexes returns hits "doc#p0": the routing evaluator judged them
    by that id, which no qrels line names, so every metric read 0 (until session 43); they count as
    their parent, first occurrence wins, with its score."""
    from types import SimpleNamespace

    from ragroute.context import QueryContext
    from ragroute.evaluation.evaluators import RoutingEvaluator
    from ragroute.route.base import decision_from_probs
    from ragroute.types import Hit

    decision = decision_from_probs(["docs"], [1.0], decided_by="test")
    hits = [
        Hit(doc_id="a#p2", score=0.9, rank=1, parent_id="a"),
        Hit(doc_id="a#p0", score=0.8, rank=2, parent_id="a"),
        Hit(doc_id="b", score=0.7, rank=3),
    ]

    class Chunked:
        def retrieve_contexts(self, contexts, k):
            return [SimpleNamespace(decision=decision, hits=hits)]

    evaluator = RoutingEvaluator([QueryContext("q", id="q1")], {"q1": "docs"}, {"q1": {"a": 1}})
    (row,) = evaluator.run(Chunked())
    assert (row.hits, row.scores) == (["a", "b"], [0.9, 0.7])
    assert evaluator.score([row]).quality == 1.0


def test_a_routed_chunk_index_is_scored_on_k_documents_not_k_chunks():
    """The routing evaluator scored a routed query on the documents of its k hits, however few
    (until session 48): k chunks of one document read as a miss of the relevant one below them. It
    now searches deeper, as the retrieval evaluator does, and keeps k documents."""
    from ragroute.context import QueryContext
    from ragroute.evaluation.evaluators import RoutingEvaluator
    from ragroute.index.build import build_index
    from ragroute.pipeline import Pipeline
    from ragroute.route.fixed import FixedRoutes
    from ragroute.route.sources import Source
    from ragroute.types import Document

    chunks = [Document(id=f"big#p{i}", text=f"vpn portal login {i}", parent_id="big") for i in range(30)]
    chunks += [Document(id="small#p0", text="portal help desk hours", parent_id="small")]
    chunks += [Document(id=f"other{i}", text=f"portal printer toner {i}") for i in range(30)]
    pipeline = Pipeline([Source("docs", build_index(chunks, "bm25"))], FixedRoutes(["docs"]))
    evaluator = RoutingEvaluator(
        [QueryContext("vpn portal login", id="q")], {"q": "docs"}, {"q": {"small": 1}}, metric="recall@10"
    )
    (row,) = evaluator.run(pipeline)
    assert row.hits[:2] == ["big", "small"] and len(row.hits) == 10 and len(row.scores) == 10
    assert evaluator.score([row]).quality == 1.0


def test_a_scored_query_without_a_group_is_one_line_not_left_out():
    """macro_average left a judged query with no group out of every mean, and a grouped paired
    difference raised a bare KeyError (until session 43)."""
    from ragroute.errors import RagrouteError
    from ragroute.evaluation.evaluators import macro_average
    from ragroute.evaluation.metrics import paired_difference

    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    run = {"q1": ["a"], "q2": ["x"], "q3": ["c"]}
    groups = {"q1": "adi", "q2": "med"}
    with pytest.raises(RagrouteError, match=r"1 scored queries have no group \(collection\): 'q3'"):
        macro_average(run, qrels, groups, "ndcg@10")
    with pytest.raises(RagrouteError, match="no group"):
        paired_difference({"q1": 1.0, "q3": 0.5}, {"q1": 0.0, "q3": 0.5}, groups=groups)
    assert macro_average(run, qrels, {**groups, "q3": "med"}, "ndcg@10") == pytest.approx(0.75)


# --------------------------------------------------------------------------- against references
# Brute-force definitions written apart from metrics.py (trec_eval / BEIR conventions for the ranking
# metrics; the Mann-Whitney statistic for AUROC), checked on generated rankings and judgements:
# graded and negative grades, grade-0-only queries, ids retrieved twice, k past the list, empty runs.

from conftest import PROPERTY_SETTINGS  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DOC_IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
RANKINGS = st.lists(DOC_IDS, max_size=9)
GRADED = st.dictionaries(DOC_IDS, st.integers(-1, 4), max_size=6)
CUTOFFS = st.integers(1, 12)


def _reference_scores(ranking, qrels, k):
    """nDCG (gain = grade, log2(rank + 1) discount, ideal from every relevant judgement), recall,
    reciprocal rank, hit and full coverage at ``k``; duplicates keep their first rank."""
    top = []
    for doc in ranking:
        if doc not in top:
            top.append(doc)
    top = top[:k]
    relevant = {doc: grade for doc, grade in qrels.items() if grade > 0}
    found = [doc for doc in top if doc in relevant]
    if not relevant:
        return {"ndcg": 0.0, "recall": 0.0, "mrr": 0.0, "hit": 0.0, "full_chain_recall": 0.0}
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(top, 1))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, 1))
    first = next((rank for rank, doc in enumerate(top, 1) if doc in relevant), None)
    return {
        "ndcg": dcg / idcg,
        "recall": len(found) / len(relevant),
        "mrr": 1 / first if first else 0.0,
        "hit": float(bool(found)),
        "full_chain_recall": float(len(found) == len(relevant)),
    }


@PROPERTY_SETTINGS
@given(RANKINGS, GRADED, CUTOFFS)
def test_ranking_metrics_match_their_reference_definitions(ranking, qrels, k):
    from ragroute.evaluation.metrics import METRICS

    expected = _reference_scores(ranking, qrels, k)
    for name, metric in METRICS.items():
        assert metric(ranking, qrels, k) == pytest.approx(expected[name], abs=1e-12), name
    assert 0.0 <= ndcg_at_k(ranking, qrels, k) <= 1.0 + 1e-12


@PROPERTY_SETTINGS
@given(st.dictionaries(st.sampled_from(["q1", "q2", "q3", "q4", "q5"]), GRADED, max_size=5), st.data())
def test_macro_average_weighs_every_collection_with_a_scored_query_alike(qrels, data):
    from ragroute.evaluation.evaluators import macro_average

    run = {qid: data.draw(RANKINGS) for qid in data.draw(st.sets(st.sampled_from(sorted(qrels) or ["q1"])))}
    groups = {qid: data.draw(st.sampled_from(["x", "y"])) for qid in qrels}
    by_group: dict[str, list[float]] = {}
    for qid, rels in qrels.items():
        if any(grade > 0 for grade in rels.values()):  # a query judged grade <= 0 only is not scored
            by_group.setdefault(groups[qid], []).append(_reference_scores(run.get(qid, []), rels, 10)["ndcg"])
    means = [sum(values) / len(values) for values in by_group.values()]
    expected = sum(means) / len(means) if means else 0.0
    assert macro_average(run, qrels, groups, "ndcg@10") == pytest.approx(expected, abs=1e-12)


SCORES = st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0])  # few values: ties within and across classes


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(st.booleans(), SCORES), min_size=1, max_size=20))
def test_auroc_is_the_mann_whitney_statistic_with_ties_counted_half(rows):
    from ragroute.evaluation.metrics import auroc

    pos = [score for truth, score in rows if truth]
    neg = [score for truth, score in rows if not truth]
    value = auroc([truth for truth, _ in rows], [score for _, score in rows])
    if not pos or not neg:
        assert math.isnan(value)
        return
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert value == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=20))
def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present(rows):
    from ragroute.evaluation.metrics import balanced_accuracy

    recalls = []
    for cls in (True, False):
        of_class = [pred for truth, pred in rows if truth == cls]
        if of_class:
            recalls.append(sum(pred == cls for pred in of_class) / len(of_class))
    expected = sum(recalls) / len(recalls) if recalls else 0.0
    value = balanced_accuracy([t for t, _ in rows], [p for _, p in rows])
    assert value == pytest.approx(expected, abs=1e-12)


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(SCORES, SCORES, st.sampled_from(["x", "y", "z"])), min_size=1, max_size=20))
def test_a_grouped_paired_difference_is_the_difference_of_macro_means_inside_its_interval(rows):
    from ragroute.evaluation.metrics import paired_difference

    a = {f"q{i}": row[0] for i, row in enumerate(rows)}
    b = {f"q{i}": row[1] for i, row in enumerate(rows)}
    groups = {f"q{i}": row[2] for i, row in enumerate(rows)}
    by_group: dict[str, list[float]] = {}
    for key in a:
        by_group.setdefault(groups[key], []).append(a[key] - b[key])
    expected = sum(sum(v) / len(v) for v in by_group.values()) / len(by_group)
    result = paired_difference(a, b, groups=groups, resamples=200)
    assert result["diff"] == pytest.approx(round(expected, 4), abs=1e-12)
    low, high = result["ci95"]
    assert low <= result["diff"] <= high
    assert paired_difference(a, b, groups=groups, resamples=200) == result  # seeded


def test_an_evaluator_refuses_to_read_fewer_hits_than_its_metric_scores():
    """``ndcg@10`` over k=5 hits scored every query as if its 6th to 10th documents were misses,
    without a word, until session 50."""
    from ragroute.errors import InvalidArgumentError
    from ragroute.evaluation.evaluators import RetrievalEvaluator, RoutingEvaluator

    refused = r"^k=5 reads fewer hits than ndcg@10 scores: give k >= 10$"
    with pytest.raises(InvalidArgumentError, match=refused):
        RetrievalEvaluator([], {}, metrics=("hit@1", "ndcg@10"), k=5)
    with pytest.raises(InvalidArgumentError, match=r"recall@20 scores: give k >= 20"):
        RoutingEvaluator([], {}, {}, k=10, metric="recall@20")
    RetrievalEvaluator([], {}, metrics=("recall@5",), k=5)  # as deep as it scores: fine


@pytest.mark.parametrize(
    ("run", "qrels", "named"),
    [
        ({"q1": [1, "d2"]}, {"q1": {"1": 1}}, "run document id 1 is an integer"),
        ({1: ["d1"]}, {"1": {"d1": 1}}, "run query id 1 is an integer"),
        ({"q1": ["d1"]}, {"q1": {7: 1}}, "qrels document id 7 is an integer"),
    ],
)
def test_an_id_that_is_no_text_is_refused_not_scored_0(run, qrels, named):
    """A run or qrels built in code with int ids matched nothing and scored 0, silently (until
    session 53)."""
    from ragroute.errors import RagrouteError

    with pytest.raises(RagrouteError, match=rf"^{named}: ids are text"):
        evaluate_run(run, qrels)


@pytest.mark.parametrize(
    ("grade", "shown"),
    [(0.5, r"0\.5"), (1.5, r"1\.5"), (float("nan"), "nan"), ("1", "'1'"), (None, "None")],
)
def test_a_grade_that_is_no_whole_number_is_refused_not_cut(grade, shown):
    """A grade of 0.5 was cut to 0 (the query left out as judged with nothing relevant), 1.5 to a
    gain of 1, and NaN, a string or None raised a bare ValueError or TypeError (until session 56)."""
    from ragroute.errors import RagrouteError
    from ragroute.evaluation.metrics import per_query_scores

    qrels = {"q1": {"a": grade, "b": 1}}
    refused = rf"^qrels grade {shown} of query 'q1', document 'a' is no whole number .*: grades are whole"
    with pytest.raises(RagrouteError, match=refused):
        evaluate_run({"q1": ["b", "a"]}, qrels, ["ndcg@10"])
    with pytest.raises(RagrouteError, match=refused):
        per_query_scores({"q1": ["b", "a"]}, qrels, "ndcg@10")
    # whole numbers of any kind are grades: numpy's, and floats with no fraction
    expected = ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 10)
    for whole in (np.int64(2), 2.0, np.float32(2.0)):
        assert evaluate_run({"q1": ["b", "a"]}, {"q1": {"a": whole, "b": 1}}, ["ndcg@10"])["ndcg@10"] == (
            pytest.approx(expected)
        )


def test_a_ranking_given_as_one_string_is_refused_not_split_into_characters():
    """``{"q1": "abc"}`` judged the characters a, b, c as three documents: hit@3 read 1.0 for a query
    whose relevant document is "a" (until session 56)."""
    from ragroute.errors import RagrouteError

    with pytest.raises(
        RagrouteError, match=r"^the ranking of run query 'q1' is one string, 'abc': a ranking is a list"
    ):
        evaluate_run({"q1": "abc"}, {"q1": {"a": 1}}, ["hit@3"])
    assert evaluate_run({"q1": ["abc"]}, {"q1": {"a": 1}}, ["hit@3"])["hit@3"] == 0.0


def test_truth_and_scores_of_different_lengths_are_one_line():
    """auroc, auroc_interval and balanced_accuracy raised a bare numpy IndexError (until session 56)."""
    from ragroute.errors import InvalidArgumentError
    from ragroute.evaluation.metrics import auroc, auroc_interval, balanced_accuracy

    with pytest.raises(InvalidArgumentError, match=r"^3 truth values and 2 scores: give one per case$"):
        auroc([True, False, True], [0.1, 0.2])
    with pytest.raises(InvalidArgumentError, match=r"^3 truth values and 2 scores"):
        auroc_interval([True, False, True], [0.1, 0.2])
    with pytest.raises(InvalidArgumentError, match=r"^3 truth values and 2 predictions"):
        balanced_accuracy([True, False, True], [True, False])


def test_a_bootstrap_of_no_resample_is_one_line():
    """resamples=0 raised a bare IndexError from the percentiles of no resample (until session 56)."""
    from ragroute.errors import InvalidArgumentError
    from ragroute.evaluation.metrics import auroc_interval, paired_difference, share_of_gap

    a, b, top = {"q1": 1.0, "q2": 0.0}, {"q1": 0.5, "q2": 0.2}, {"q1": 1.0, "q2": 1.0}
    with pytest.raises(InvalidArgumentError, match=r"^resamples must be >= 1, got 0$"):
        paired_difference(a, b, resamples=0)
    with pytest.raises(InvalidArgumentError, match=r"^resamples must be >= 1, got 0$"):
        share_of_gap(a, b, top, resamples=0)
    with pytest.raises(InvalidArgumentError, match=r"^resamples must be >= 1, got 0$"):
        auroc_interval([True, False], [0.6, 0.4], resamples=0)


def test_a_query_that_is_not_scored_needs_no_group():
    """A query judged with grade 0 only and no group was refused as "1 scored queries have no
    group", though no mean reads it (until session 56)."""
    from ragroute.evaluation.evaluators import macro_average

    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": ["a"], "q2": ["x"], "q3": ["c"]}
    groups = {"q1": "adi", "q2": "med"}
    assert macro_average(run, qrels, groups, "ndcg@10") == pytest.approx(0.5)
