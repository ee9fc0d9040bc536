import pytest

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.index.fusion import fuse
from ragroute.types import Document, Hit


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


def test_calibrated_fusion_adds_log_route_probability_to_null_z_scores():
    import math

    from ragroute.index.fusion import calibrated

    a = [Hit("a1", 0.80, "a", rank=1), Hit("a2", 0.50, "a", rank=2)]
    b = [Hit("b1", 0.60, "b", rank=1), Hit("b2", 0.55, "b", rank=2)]
    stats = {"a": {"mean": 0.5, "std": 0.1}, "b": {"mean": 0.3, "std": 0.1}}
    # z: a1 3.0, a2 0.0, b1 3.0, b2 2.5; route a is twice as likely as b
    fused = calibrated({"a": a, "b": b}, stats=stats, routes={"a": 2 / 3, "b": 1 / 3})
    assert [h.doc_id for h in fused] == ["a1", "b1", "b2", "a2"]
    assert fused[0].score == pytest.approx(3.0 + math.log(2 / 3))
    assert fused[1].explain["b"]["z"] == pytest.approx(3.0) and fused[1].explain["fusion"] == "calibrated"
    # one document in two lists of one collection: the best list's value, and every list's detail
    # (until session 36 only the best list's rank and z were in the explanation)
    twin = [Hit("a1", 0.40, "b", rank=1)]
    merged = calibrated({"a": a, "b": twin}, stats=stats, documents_of={"a": "c", "b": "c"})
    assert merged[0].doc_id == "a1" and merged[0].explain["a"]["z"] == pytest.approx(3.0)
    assert merged[0].explain["b"] == {"rank": 1, "score": 0.4, "z": pytest.approx(1.0), "log_p": 0.0}
    # equally likely routes and no statistics: each list is standardised by itself
    alone = calibrated({"a": a, "b": b}, routes={"a": 0.5, "b": 0.5}, limit=2)
    assert {h.doc_id for h in alone} == {"a1", "b1"} and [h.rank for h in alone] == [1, 2]  # z = 1 each


def test_null_statistics_come_from_other_sources_pseudo_queries(hashing_encoder, small_docs):
    from ragroute.index.build import build_index
    from ragroute.pipeline.calibration import null_score_stats
    from ragroute.route.sources import Source

    sources = [
        Source(
            t,
            build_index(
                [d for d in small_docs if d.metadata["topic"] == t], "dense", encoder=hashing_encoder
            ),
        )
        for t in ("astro", "cook", "it")
    ]
    stats = null_score_stats(sources, per_source=5)
    assert set(stats) == {"astro", "cook", "it"}
    assert all(s["pseudo_queries"] == 10 for s in stats.values())  # 5 from each of the two others
    own = [h[0].score for h, _ in sources[0].search_contexts([QueryContext("telescope orbit star")], 1)]
    assert stats["astro"]["mean"] < own[0]  # a foreign question scores lower than a native one
    assert null_score_stats(sources, per_source=5) is stats  # memoised per set of sources


def test_a_sources_null_is_measured_on_at_most_about_1200_pseudo_queries(hashing_encoder):
    """Beside many sources each gives fewer pseudo-queries (its first ones): until session 53 every
    source searched all (S - 1) x 60 of the others', so a pipeline's first query grew with the
    square of its sources (15 s at 100 sources of 80 documents)."""
    from ragroute.index.build import build_index
    from ragroute.pipeline.calibration import null_score_stats
    from ragroute.route.sources import Source

    def sources(n):
        return [
            Source(
                f"s{j}",
                build_index(
                    [Document(f"s{j}-{i}", f"topic{j} item{i} " + "word " * 8) for i in range(61)],
                    "dense",
                    encoder=hashing_encoder,
                ),
            )
            for j in range(n)
        ]

    few, many = null_score_stats(sources(12)), null_score_stats(sources(30))
    assert {s["pseudo_queries"] for s in few.values()} == {11 * 60}  # up to 21 sources: as before
    assert {s["pseudo_queries"] for s in many.values()} == {29 * 42}  # 42 = ceil(1200 / 29) of each


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore"])
def test_hybrid_fuses_positions_exactly_as_fuse_does_hits(hashing_encoder, small_docs, method):
    """The hybrid index fuses document positions and builds hits only for the top k: same result as
    fusing full hit lists with `fuse`."""
    from ragroute.index.build import build_index
    from ragroute.index.hybrid import FusionParams

    params = FusionParams(method=method, bm25_weight=0.7, candidates=12)
    index = build_index(small_docs, "hybrid", encoder=hashing_encoder, fusion=params, name="h")
    for query in ["telescope orbit", "bread oven yeast", "printer", "comet flour vpn", "zebra"]:
        want = fuse(
            {"bm25": index.bm25.search(query, 12), "dense": index.dense.search(query, 12)},
            method=method,
            weights={"bm25": 0.7, "dense": 1.0},
            limit=8,
        )
        got = index.search(query, 8)
        assert [(h.doc_id, h.rank, h.explain) for h in got] == [(h.doc_id, h.rank, h.explain) for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-12)


def _reference_fuse(results, method, weights, rrf_k=60, limit=None):
    """Plain-Python statement of the fusion rules, to check the vectorised implementation against."""
    import statistics

    contributions = {}
    for name, hits in results.items():
        if not hits:
            continue
        scores = [h.score for h in hits]
        if method == "rrf":
            values, floor = [1.0 / (rrf_k + r) for r in range(1, len(hits) + 1)], 0.0
        elif method == "minmax":
            low, span = min(scores), max(scores) - min(scores)
            values = [(x - low) / span if span > 0 else 1.0 for x in scores]
            floor = min(values)
        else:
            mean, std = statistics.fmean(scores), statistics.pstdev(scores)
            values = [(x - mean) / std if std > 0 else 0.0 for x in scores]
            floor = min(values)
        contributions[name] = ({(h.source, h.doc_id): v for h, v in zip(hits, values)}, floor)
    keys = {(h.source, h.doc_id) for hits in results.values() for h in hits}
    totals = {}
    for key in keys:
        total = 0.0
        for name, (values, floor) in contributions.items():
            total += weights.get(name, 1.0) * values.get(key, floor)
        totals[key] = total
    order = sorted(totals, key=lambda key: (-totals[key], key[1], key[0]))[:limit]
    return [(key, totals[key]) for key in order]


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore"])
def test_fusion_matches_a_plain_python_statement_of_the_rules(method):
    import random

    rng = random.Random(method)
    for _ in range(50):
        results = {}
        for name in ("a", "b", "c")[: rng.randint(1, 3)]:
            ids = rng.sample(range(30), rng.randint(0, 12))
            scores = sorted((round(rng.uniform(0, 3), rng.choice([1, 6])) for _ in ids), reverse=True)
            results[name] = hits(rng.choice(["s1", "s2"]), [(f"d{i}", x) for i, x in zip(ids, scores)])
        weights = {name: rng.choice([0.5, 1.0, 2.0]) for name in results}
        limit = rng.choice([None, 5])
        got = fuse(results, method=method, weights=weights, limit=limit)
        want = _reference_fuse(results, method, weights, limit=limit)
        assert [(h.source, h.doc_id) for h in got] == [key for key, _ in want]
        assert [h.score for h in got] == pytest.approx([total for _, total in want], rel=1e-12, abs=1e-12)


def test_best_first_equals_sorting_every_key_by_total_then_order():
    """Fused lists order only the keys that can reach the top ``limit`` by ``order``; the result must
    be what sorting all keys by (total desc, order, position) gives, ties and cut-offs included."""
    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ragroute.index.fusion import _best_first

    @settings(max_examples=400, derandomize=True, database=None, deadline=None)
    @given(
        st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, -1.0]), st.integers(0, 6)), max_size=30),
        st.one_of(st.none(), st.integers(-3, 35)),
    )
    def check(rows: list[tuple[float, int]], limit: int | None) -> None:
        total = np.array([t for t, _ in rows], dtype=np.float64)
        keys = [f"k{name}" for _, name in rows]  # repeated names: ties in order, broken by position
        tie = np.empty(len(keys), dtype=np.int64)
        tie[sorted(range(len(keys)), key=lambda i: keys[i])] = np.arange(len(keys))
        want = np.lexsort((tie, -total)).tolist()
        want = want if limit is None else want[:limit]
        assert _best_first(total, keys, lambda key: key, limit) == want

    check()


def test_a_source_whose_null_scores_do_not_vary_is_standardised_by_its_own_list(hashing_encoder):
    """The other sources' pseudo-queries all found nothing in a BM25 source of other words: its null
    sd was floored at 1e-6, a weak match scored z ~ 7e5 and outranked the chosen source's answer,
    whatever the router said (a helper audit of session 38). Such a source gets no null now."""
    from test_pipeline import FixedRouter

    from ragroute.index.build import build_index
    from ragroute.pipeline import Pipeline
    from ragroute.pipeline.calibration import null_score_stats
    from ragroute.pipeline.stages import RoutingOptions
    from ragroute.route.sources import Source
    from ragroute.types import Document

    garden = [Document(id=f"g{i}", text=f"compost roses tomatoes mulch soil{i} leaves") for i in range(12)]
    volcanoes = [
        Document(id=f"v{i}", text=f"vesuvius lava magma eruption crater{i} pompeii") for i in range(12)
    ]
    volcanoes.append(Document(id="pompeii", text="vesuvius buried the roman city of pompeii under ash"))
    sources = [
        Source("garden", build_index(garden, "bm25", name="garden")),
        Source("volcanoes", build_index(volcanoes, "dense", encoder=hashing_encoder, name="volcanoes")),
    ]
    stats = null_score_stats(sources)
    assert "std" not in stats["garden"] and stats["garden"]["degenerate"] == 0.0
    options = RoutingOptions(fusion="calibrated", always=("garden",))
    pipeline = Pipeline(sources, FixedRouter({"garden": 0.0, "volcanoes": 1.0}), options=options)
    result = pipeline.retrieve("which roman city did vesuvius bury under ash and leaves", k=3)
    assert result.hits[0].doc_id == "pompeii"
    fuse = next(s for s in result.decision.trace if s.stage == "fuse")
    assert fuse.detail["null_stats"]["garden"]["standardised"] == "by its own list"


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore"])
def test_a_document_repeated_in_one_list_counts_at_its_first_rank(method) -> None:
    """The last copy's rank and score overwrote the first's: rrf([a, b, a]) put b above a."""
    lists = {"s": hits("s", [("a", 0.9), ("b", 0.5), ("a", 0.1)])}
    fused = fuse(lists, method=method)
    assert [h.doc_id for h in fused] == ["a", "b"]
    assert fused[0].explain["s"] == {"rank": 1, "score": 0.9}
    if method == "rrf":
        assert fused[0].score == pytest.approx(1 / 61)
        assert fused[1].score == pytest.approx(1 / 62)


@pytest.mark.parametrize("method", ["minmax", "zscore", "calibrated", "score"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_score_is_a_one_line_error_naming_its_list(method, bad) -> None:
    """One NaN made every normalised score of its list NaN and the fused order arbitrary (minmax put
    the NaN list's documents anywhere); now the call names the list and the document."""
    from ragroute.index import fusion

    lists = {"good": hits("s1", [("a", 2.0), ("b", 1.0)]), "broken": hits("s2", [("c", 3.0), ("d", bad)])}
    call = {
        "minmax": fusion.minmax,
        "zscore": fusion.zscore,
        "calibrated": fusion.calibrated,
        "score": fusion.raw_score,
    }[method]
    with pytest.raises(RagrouteError, match=r"list 'broken'.*'d'.*not a finite number"):
        call(lists)
    assert [h.doc_id for h in fusion.rrf(lists)] == ["a", "c", "b", "d"]  # ranks alone: still fused


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore"])
def test_the_fused_order_does_not_depend_on_the_order_of_the_lists(method) -> None:
    """x ranks (1, 2, 7) in lists a, b, c and y ranks (7, 1, 2): equal RRF totals, a tie broken by
    document id. The totals were summed list by list in the order the lists came in (the retrieve
    stage's, which follows each source's size and the machine's cores), and float addition rounds
    differently in each order: a, b, c put x first, c, a, b put y first."""
    import itertools

    ranks = {"a": {"x": 1, "y": 7}, "b": {"x": 2, "y": 1}, "c": {"x": 7, "y": 2}}

    def ranked(name: str) -> list[Hit]:
        at = {rank: doc for doc, rank in ranks[name].items()}
        ids = [at.get(r, f"{name}-filler{r}") for r in range(1, 8)]
        return hits("s", [(d, 8.0 - r) for r, d in enumerate(ids)])

    orders = set()
    for names in itertools.permutations("abc"):
        fused = fuse({name: ranked(name) for name in names}, method=method)
        orders.add(tuple((h.doc_id, h.score) for h in fused))
    assert len(orders) == 1
    if method == "rrf":
        assert [h.doc_id for h in fused][:2] == ["x", "y"]  # equal totals: by document id


def test_a_null_of_too_few_pseudo_queries_is_not_used_and_the_trace_says_so(hashing_encoder):
    """Beside a source of two documents, a source's null (its top scores for the others' questions)
    was the mean and sd of two pseudo-queries: any two numbers, and a z against them can be
    anything (an sd of 0.001 made a weak match z ~ 100). The trace showed that mean and sd as if
    measured. Such a list is standardised by itself now, and the trace says why."""
    from test_pipeline import FixedRouter

    from ragroute.index.build import build_index
    from ragroute.pipeline import Pipeline
    from ragroute.pipeline.calibration import MIN_NULL_QUERIES, null_score_stats
    from ragroute.pipeline.stages import RoutingOptions
    from ragroute.route.sources import Source
    from ragroute.types import Document

    garden = [Document(id=f"g{i}", text=f"compost roses tomatoes mulch soil{i} leaves") for i in range(30)]
    volcanoes = [
        Document(id="v1", text="vesuvius buried the roman city of pompeii under ash"),
        Document(id="v2", text="the roman city of herculaneum lies near naples and its bay"),
    ]
    sources = [
        Source("garden", build_index(garden, "dense", encoder=hashing_encoder, name="garden")),
        Source("volcanoes", build_index(volcanoes, "dense", encoder=hashing_encoder, name="volcanoes")),
    ]
    stats = null_score_stats(sources)
    assert stats["garden"]["pseudo_queries"] == 2 < MIN_NULL_QUERIES and "std" not in stats["garden"]
    assert "std" in stats["volcanoes"] and stats["volcanoes"]["pseudo_queries"] == 30
    router = FixedRouter({"garden": 0.3, "volcanoes": 0.7})
    pipeline = Pipeline(sources, router, options=RoutingOptions(fusion="calibrated"), encoder=hashing_encoder)
    result = pipeline.retrieve("which roman city did vesuvius bury under ash", k=3)
    fuse = next(s.detail for s in result.decision.trace if s.stage == "fuse")
    assert fuse["null_stats"]["garden"] == {
        "pseudo_queries": 2,
        "standardised": "by its own list",
        "why": f"a null needs {MIN_NULL_QUERIES} pseudo-queries",
    }
    assert set(fuse["null_stats"]["volcanoes"]) == {"mean", "sd"}


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore", "calibrated", "score"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "heavy", "3"])
def test_a_weight_that_is_no_finite_number_of_at_least_0_is_a_one_line_error(method, bad) -> None:
    """A NaN weight made every fused score of its list NaN (NaN totals sort anywhere), and a
    negative one turned its list upside down (its last hit first), with no word said."""
    from ragroute.index import fusion

    lists = {"a": hits("s1", [("a1", 2.0), ("a2", 1.0)]), "b": hits("s2", [("b1", 3.0), ("b2", 1.0)])}
    call = getattr(fusion, "raw_score" if method == "score" else method)
    with pytest.raises(RagrouteError, match=r"^weight of list 'a' is .*: not a finite number of at least 0$"):
        call(lists, weights={"a": bad, "b": 1.0})
    if method == "calibrated":  # route probabilities are its weights
        with pytest.raises(RagrouteError, match=r"^route probability of list 'a' is .*: not a finite"):
            call(lists, routes={"a": bad, "b": 0.5})
    assert [h.doc_id for h in call(lists, weights={"a": 0, "b": 1.0})][0] == "b1"  # 0: allowed


@pytest.mark.parametrize("rrf_k", [-1, -60, float("nan")])
def test_an_rrf_constant_below_0_is_a_one_line_error(rrf_k) -> None:
    """rrf_k=-1 divided by zero at rank 1 (an infinite fused score), and below it ranked the first
    hits of a list last."""
    with pytest.raises(RagrouteError, match=r"^rrf_k must be a finite number of at least 0"):
        fuse({"a": hits("s", [("a1", 2.0), ("a2", 1.0)])}, rrf_k=rrf_k)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"candidates": "100"}, "candidates must be a whole number"),
        ({"candidates": None}, "candidates must be a whole number"),
        ({"candidates": 2.5}, "candidates must be a whole number"),
        ({"candidates": -1}, "candidates must be a whole number"),
        ({"rrf_k": -1}, "rrf_k must be a finite number of at least 0"),
        ({"bm25_weight": float("nan")}, "bm25_weight must be a finite number"),
        ({"dense_weight": -0.5}, "dense_weight must be a finite number"),
    ],
)
def test_bad_fusion_params_are_refused_before_a_hybrid_build(hashing_encoder, small_docs, params, message):
    """Until session 49 FusionParams were first read at a search: a hybrid build embedded every
    document, then every search failed, a candidates of text or None with a bare TypeError."""
    from ragroute.index.build import build_index
    from ragroute.index.hybrid import FusionParams

    calls = hashing_encoder.calls
    with pytest.raises(RagrouteError, match=message) as info:
        build_index(small_docs, "hybrid", encoder=hashing_encoder, fusion=FusionParams(**params))
    assert "\n" not in str(info.value) and hashing_encoder.calls == calls  # nothing was embedded
    assert FusionParams(candidates=12.0).candidates == 12 and FusionParams(rrf_k=0).rrf_k == 0


def test_a_hybrid_of_two_stores_is_one_ragroute_line(hashing_encoder, small_docs):
    """A plain ValueError until session 49 (the CLI's one-line errors catch RagrouteError)."""
    from ragroute.errors import RagrouteError
    from ragroute.index.build import build_index
    from ragroute.index.hybrid import HybridIndex

    bm25 = build_index(small_docs, "bm25")
    dense = build_index(small_docs, "dense", encoder=hashing_encoder)
    with pytest.raises(RagrouteError, match="must share one document store"):
        HybridIndex(bm25, dense)


def test_calibrated_counts_a_document_repeated_in_one_list_at_its_first_rank() -> None:
    """A document twice in one list kept its first copy's value beside the last copy's rank, score
    and z in its explanation, and both copies counted in the list's own mean and spread."""
    from ragroute.index.fusion import calibrated

    lists = {"a": hits("a", [("x", 0.9), ("y", 0.5), ("x", 0.1)]), "b": hits("b", [("z", 0.7), ("w", 0.2)])}
    fused = {h.doc_id: h for h in calibrated(lists)}
    assert set(fused) == {"x", "y", "z", "w"}
    assert fused["x"].explain["a"] == {"rank": 1, "score": 0.9, "z": 1.0, "log_p": 0.0}
    assert fused["x"].score == pytest.approx(1.0) and fused["y"].score == pytest.approx(-1.0)


def test_fusion_is_independent_of_list_order_and_keeps_inner_sources_apart() -> None:
    """Property: for every registered method, any order of the lists gives the same documents and
    values; a nested pipeline's hits of two inner sources that share an id stay two documents."""
    import itertools

    from conftest import PROPERTY_SETTINGS
    from hypothesis import given
    from hypothesis import strategies as st

    from ragroute.registry import FUSIONS

    inners = st.sampled_from(["", "p", "q"])
    entry = st.tuples(st.sampled_from(["a", "b", "c", "d"]), inners, st.floats(-5, 5))

    @PROPERTY_SETTINGS
    @given(st.lists(st.lists(entry, max_size=5), min_size=1, max_size=3), st.integers(1, 12))
    def check(raw_lists, k):
        lists = {}
        for n, rows in enumerate(raw_lists):
            name = f"s{n}"
            rows = sorted(rows, key=lambda row: -row[2])
            lists[name] = [
                Hit(d, s, name, rank=i + 1, explain={"inner_source": inner} if inner else {})
                for i, (d, inner, s) in enumerate(rows)
            ]
        documents_of = dict.fromkeys(lists, "one")
        for method in ("rrf", "minmax", "zscore", "score", "calibrated"):
            seen = set()
            for names in itertools.permutations(lists):
                fused = FUSIONS.get(method)({n: lists[n] for n in names}, limit=k, documents_of=documents_of)
                keys = [(h.doc_id, h.explain.get("inner_source", "")) for h in fused]
                assert len(keys) == len(set(keys))
                seen.add(tuple((key, round(h.score, 9)) for key, h in zip(keys, fused)))
            assert len(seen) == 1, method
            distinct = {(d, inner) for rows in raw_lists for d, inner, _ in rows}
            assert len(fused) == min(k, len(distinct))

    check()


def _many_lists(n_lists: int, per_list: int, seed: int) -> dict[str, list[Hit]]:
    import random

    rng = random.Random(seed)
    return {
        f"s{j}": [
            Hit(f"d{rng.randrange(per_list * n_lists)}", rng.gauss(0, 3), f"s{j}") for _ in range(per_list)
        ]
        for j in range(n_lists)
    }


def test_many_lists_are_summed_without_a_value_per_list_and_key(monkeypatch):
    """100 lists of 50 hits are ~4,000 keys: each key's total was fsum of a value from every list
    (400,000 values; 200 lists of 100 hits took 0.4 s a query, growing as the lists squared). The
    values handed to fsum are counted, not time."""
    import math
    import types

    from ragroute.index import fusion

    summed = 0

    def fsum(values):
        nonlocal summed
        values = list(values)
        summed += len(values)
        return math.fsum(values)

    monkeypatch.setattr(fusion, "math", types.SimpleNamespace(fsum=fsum))
    results = _many_lists(100, 50, seed=3)
    for method in ("rrf", "zscore"):
        summed = 0
        hits = fuse(results, method=method, limit=10)
        assert len(hits) == 10
        assert summed < 60_000, (method, summed)


def test_sums_of_many_lists_are_the_sums_of_whole_rows():
    """Three or more lists are summed from each key's own values and the lists' floors: the same
    correctly rounded totals as fsum over whole rows, bit for bit (zero totals, negative and
    weighted floors, weights of 0 included)."""
    import numpy as np

    from ragroute.index.fusion import _Column, _order_free_sum, _row_sums

    rng = np.random.default_rng(11)
    for trial in range(60):
        size = int(rng.integers(1, 300))
        columns = []
        for _ in range(int(rng.integers(3, 12))):
            held = rng.choice(size, size=int(rng.integers(0, size + 1)), replace=False)
            values = rng.standard_normal(len(held)) * 10.0 ** rng.integers(-8, 8)
            if trial % 3 == 0:  # small integers: many exact ties and zero totals
                values = rng.integers(-2, 3, size=len(held)).astype(np.float64)
            floor = float(values.min()) if len(values) and trial % 2 else 0.0
            weight = [0.0, 1.0, 2, 0.1][int(rng.integers(0, 4))]
            weighted = weight * np.append(values, floor)
            columns.append(_Column(held.astype(np.int64), weighted[:-1], float(weighted[-1])))
        expected = _row_sums(columns, range(size), size)
        assert _order_free_sum(columns, size).tobytes() == expected.tobytes()
    for method in ("rrf", "minmax", "zscore"):  # and through fuse: the same as lists in another order
        results = _many_lists(7, 30, seed=5)
        forward = fuse(results, method=method, weights={"s1": 0.0, "s2": 3})
        backward = fuse(dict(reversed(results.items())), method=method, weights={"s1": 0.0, "s2": 3})
        assert [(h.doc_id, h.score) for h in forward] == [(h.doc_id, h.score) for h in backward]
