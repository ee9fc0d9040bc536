import pytest

from ragroute.errors import RagrouteError
from ragroute.index.fusion import fuse
from ragroute.types import Hit


def hits(source, pairs):
    return [Hit(doc_id=d, score=s, source=source, rank=i + 1) for i, (d, s) in enumerate(pairs)]


def test_rrf_scores_and_order():
    lists = {"bm25": hits("s", [("a", 9.0), ("b", 5.0)]), "dense": hits("s", [("b", 0.9), ("c", 0.8)])}
    fused = fuse(lists, method="rrf", rrf_k=60)
    assert [h.doc_id for h in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0].explain["bm25"] == {"rank": 2, "score": 5.0}
    assert fused[0].explain["dense"]["rank"] == 1
    assert [h.rank for h in fused] == [1, 2, 3]


def test_rrf_weights_change_order():
    lists = {"bm25": hits("s", [("a", 1.0)]), "dense": hits("s", [("c", 1.0)])}
    fused = fuse(lists, weights={"bm25": 1.0, "dense": 2.0})
    assert fused[0].doc_id == "c"


def test_minmax_missing_gets_list_minimum():
    lists = {"x": hits("s", [("a", 10.0), ("b", 0.0)]), "y": hits("s", [("b", 1.0), ("c", 0.5)])}
    fused = {h.doc_id: h.score for h in fuse(lists, method="minmax")}
    assert fused == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.0})


def test_same_doc_in_two_sources_stays_apart_and_limit():
    lists = {"one": hits("s1", [("a", 1.0)]), "two": hits("s2", [("a", 1.0)])}
    fused = fuse(lists, limit=1)
    assert len(fused) == 1
    assert len(fuse(lists)) == 2


def test_unknown_method():
    with pytest.raises(RagrouteError, match="unknown fusion method"):
        fuse({}, method="borda")


def test_existing_explanations_survive_fusion():
    inner = Hit(
        doc_id="a",
        score=0.5,
        source="s1",
        rank=1,
        explain={"bm25": {"rank": 3, "score": 2.0}, "route_probability": 0.7},
    )
    fused = fuse({"s1": [inner], "s2": hits("s2", [("b", 1.0)])}, method="minmax")
    explained = {h.doc_id: h.explain for h in fused}["a"]
    assert explained["bm25"] == {"rank": 3, "score": 2.0} and explained["route_probability"] == 0.7
    assert explained["fusion"] == "minmax" and explained["s1"] == {"rank": 1, "score": 0.5}
