"""Routers, route selection and the routed retriever, on three tiny topical sources."""

import json
import warnings

import numpy as np
import pytest
from conftest import topic_sources, untimed

from ragroute.context import QueryContext
from ragroute.errors import CalibrationWarning, EmptyQueryError, RagrouteError
from ragroute.index.build import build_index
from ragroute.pipeline import Pipeline, RoutingOptions
from ragroute.route import Policy
from ragroute.route.base import (
    NONE_ROUTE,
    BaseRouter,
    decision_from_probs,
    fit_temperature,
    select_routes,
    softmax,
)
from ragroute.route.confidence import ConfidenceConfig, ConfidenceRouter
from ragroute.route.ensemble import EnsembleRouter
from ragroute.route.knn import KnnRouter
from ragroute.route.prototype import PrototypeConfig, PrototypeRouter
from ragroute.route.pseudo import pseudo_queries
from ragroute.route.sources import Source, SourceProblem, collapse_to_parents, granularity_views
from ragroute.types import Document, Hit

QUERIES = {"astro": "galaxy telescope orbit", "cook": "flour yeast oven", "it": "printer vpn password"}


def test_softmax_and_temperature_fit():
    probs = softmax(np.array([[1.0, 2.0, 3.0]]), 1.0)
    assert probs.sum() == pytest.approx(1.0) and probs.argmax() == 2
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 300)
    scores = rng.normal(size=(300, 3))
    scores[np.arange(300), targets] += 0.5  # weakly informative scores want a high temperature
    weak = fit_temperature(scores, targets)
    scores[np.arange(300), targets] += 5.0  # strongly informative ones a low temperature
    assert fit_temperature(scores, targets) < weak


def test_a_temperature_fitted_at_an_end_of_its_grid_is_warned_about():
    """Calibration data that separate the routes perfectly drive the fit to the lowest temperature
    tried (every later query then reads as certain, one from no source too); scores that carry no
    signal drive it to the highest. Either is said, in one line; a fit inside the grid is silent."""
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 60)
    separable = np.zeros((60, 3))
    separable[np.arange(60), targets] = 1.0
    with pytest.warns(
        CalibrationWarning, match=r"lowest value tried \(0.01\): the 60 calibration queries sep"
    ):
        assert fit_temperature(separable, targets, grid=[0.01, 0.1, 1.0]) == 0.01
    with pytest.warns(CalibrationWarning, match=r"highest value tried \(10\).* barely tell"):
        assert fit_temperature(rng.normal(size=(60, 3)), targets, grid=[0.1, 1.0, 10.0]) == 10.0
    noisy = separable + rng.normal(scale=0.5, size=(60, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 1e-3 < fit_temperature(noisy, targets) < 10.0


def test_select_routes_threshold_max_and_none():
    assert select_routes({"a": 0.5, "b": 0.3, "c": 0.2}, threshold=0.25) == ["a", "b"]
    assert select_routes({"a": 0.5, "b": 0.3, "c": 0.2}, threshold=0.1, max_routes=2) == ["a", "b"]
    assert select_routes({"a": 0.2, "b": 0.19}, threshold=0.5) == ["a"]
    assert select_routes({NONE_ROUTE: 0.6, "a": 0.4}) == [NONE_ROUTE]
    assert select_routes({"a": 0.5, NONE_ROUTE: 0.4}) == ["a"]
    assert select_routes({}) == []


def test_a_best_route_exactly_at_hedge_below_is_queried_alone():
    probs = {"a": 0.6, "b": 0.4}
    assert select_routes(probs, threshold=0.25, hedge_below=0.6) == ["a"]  # at least hedge_below
    assert select_routes(probs, threshold=0.25, hedge_below=0.6000001) == ["a", "b"]
    assert select_routes(probs, threshold=0.25, hedge_below=None) == ["a", "b"]


@pytest.mark.parametrize("make", ["prototype", "confidence"])
def test_training_free_routers_route_by_topic(sources, hashing_encoder, make):
    router = PrototypeRouter(sources, hashing_encoder) if make == "prototype" else ConfidenceRouter(sources)
    assert router.calibration["pseudo_queries"] > 0
    for topic, query in QUERIES.items():
        decision = router.route(query)
        assert decision.chosen == [topic]
        assert sum(decision.routes.values()) == pytest.approx(1.0, abs=1e-4)
        assert decision.signals and decision.trace[0].stage == "router"


def test_confidence_router_probes_the_dense_part_of_hybrid_sources(hashing_encoder, small_docs):
    hybrid = [
        Source(
            topic,
            build_index(
                [d for d in small_docs if d.metadata["topic"] == topic],
                "hybrid",
                encoder=hashing_encoder,
                name=topic,
            ),
        )
        for topic in ("astro", "cook", "it")
    ]
    router = ConfidenceRouter(hybrid)
    assert {p["retriever"] for p in router.calibration["probes"].values()} == {"DenseIndex"}
    decision = router.route(QUERIES["cook"])
    assert decision.chosen == ["cook"]
    # raw top scores are cosines of the dense part, not RRF's 1/(60 + rank)
    assert max(decision.signals["top_score"].values()) > 0.1


def test_prototype_none_threshold(sources, hashing_encoder):
    router = PrototypeRouter(sources, hashing_encoder, PrototypeConfig(none_threshold=0.9))
    assert NONE_ROUTE in router.labels
    assert router.route("zebra quantum sonnet").chosen == [NONE_ROUTE]


@pytest.mark.parametrize("described", [True, False])
def test_prototype_none_threshold_is_on_the_weighted_similarity_of_the_best_source(
    hashing_encoder, small_docs, described
):
    """``none`` wins when the best source's similarity (its weighted mean of the three cosines)
    is below the threshold. Until session 50 the none route's score left the description's weight
    out: with described sources a threshold just above that similarity still routed to the source
    (it had to exceed it by a quarter)."""
    sources = topic_sources(small_docs, hashing_encoder, describe=described)
    query = "telescope recipe"
    vector = hashing_encoder.encode_queries([query])
    plain = PrototypeRouter(sources, hashing_encoder, PrototypeConfig(temperature=0.05))
    cfg = plain.config
    weight = cfg.centroid_weight + cfg.bank_weight + (cfg.description_weight if described else 0.0)
    best = float(plain.scores(vector)[0].max()) / weight
    assert best > 0.05
    for threshold, routed_none in ((best + 0.01, True), (best - 0.01, False)):
        config = PrototypeConfig(temperature=0.05, none_threshold=threshold)
        decision = PrototypeRouter(sources, hashing_encoder, config).route(query)
        assert (decision.chosen == [NONE_ROUTE]) is routed_none, (threshold, decision.routes)


def test_prototype_compares_sources_with_different_terms_by_their_weighted_mean(hashing_encoder, small_docs):
    """A source's terms were summed (until session 52): a source with no documents listed (a
    framework retriever, routed by its description) scored its description's cosine times 0.5
    against the documented sources' two or three cosines, and lost a query matching its description
    to a topic it shares no word with (or to none); a described source got its description's
    cosine on top of the others'. Each source now competes on its weighted mean."""

    class Remote:
        def search_many(self, queries, k=10, *, filters=None):
            return [[] for _ in queries]

    weather = Source("weather", Remote(), description="weather forecast rain snow wind storm")
    sources = [*topic_sources(small_docs, hashing_encoder), weather]
    config = PrototypeConfig(temperature=0.05, none_threshold=0.6)
    router = PrototypeRouter(sources, hashing_encoder, config)
    decision = router.route("rain snow forecast")  # its description's cosine: 0.71
    assert decision.chosen == ["weather"], decision.signals
    # the none route reads the best source's weighted mean: 0.71 clears 0.6, the best topic's 0.38 not
    assert router.route("telescope flour vpn").chosen == [NONE_ROUTE]
    # sources with the same terms score as before: each term weighed by its own weight
    plain = PrototypeRouter(sources[:3], hashing_encoder, PrototypeConfig(temperature=0.05))
    mixed = PrototypeRouter(sources, hashing_encoder, PrototypeConfig(temperature=0.05))
    vector = hashing_encoder.encode_queries(["telescope orbit"])
    np.testing.assert_allclose(mixed.scores(vector)[0, :3], plain.scores(vector)[0], rtol=1e-6)


def test_prototype_scores_banks_of_unequal_sizes_in_one_partition(hashing_encoder, small_docs):
    uneven = []
    for keep, topic in ((None, "astro"), (2, "cook"), (1, "it")):  # one bank smaller than top_n
        docs = [d for d in small_docs if d.metadata["topic"] == topic][:keep]
        uneven.append(Source(topic, build_index(docs, "dense", encoder=hashing_encoder, name=topic)))
    router = PrototypeRouter(uneven, hashing_encoder, PrototypeConfig(bank_top_n=3))
    sizes = [len(bank) for bank in router._banks]
    assert sizes[0] > 3 > sizes[1] > sizes[2] == 1
    queries = hashing_encoder.encode_queries(["telescope orbit galaxy", "oven bread", "python code"])
    fast = router.scores(queries)
    # nothing excluded, but through the per-source loop the calibration uses
    loop = router.scores(queries, exclude=[(-1, 0)] * len(queries))
    np.testing.assert_allclose(fast, loop, rtol=1e-6, atol=1e-6)


def test_prototype_bank_in_fewer_dimensions(sources, hashing_encoder):
    exact = PrototypeRouter(sources, hashing_encoder)
    rows = sum(len(bank) for bank in exact._banks)
    queries = hashing_encoder.encode_queries(list(QUERIES.values()))
    # as many components as bank rows span the whole (centred) bank: the same scores as exact
    spanning = PrototypeRouter(sources, hashing_encoder, PrototypeConfig(bank_dim=rows))
    assert spanning._bank.stacked.shape == (rows, rows)
    np.testing.assert_allclose(spanning.scores(queries), exact.scores(queries), atol=1e-5)
    # fewer dimensions: an approximation that still routes by topic
    small = PrototypeRouter(sources, hashing_encoder, PrototypeConfig(bank_dim=3))
    assert small._bank.stacked.shape == (rows, 3)
    assert not np.allclose(small.scores(queries), exact.scores(queries), atol=1e-5)
    assert [d.chosen[0] for d in small.route_many(list(QUERIES.values()))] == list(QUERIES)
    with pytest.raises(RagrouteError, match="bank_dim"):
        PrototypeRouter(sources, hashing_encoder, PrototypeConfig(bank_dim=0))
    # from a routing config's router mapping
    from ragroute.pipeline.build import pipeline_from_settings

    router = pipeline_from_settings(
        sources, {"kind": "prototype", "bank_dim": 3}, encoder=hashing_encoder
    ).router
    assert router._bank.stacked.shape == (rows, 3)
    with pytest.raises(RagrouteError, match="bank_dim"):
        pipeline_from_settings(sources, {"kind": "prototype", "bank_dim": 0}, encoder=hashing_encoder)


def test_knn_router_votes_and_explains(hashing_encoder):
    router = KnnRouter(
        ["galaxy orbit", "star telescope", "bread oven", "yeast flour"],
        ["astro", "astro", "cook", "cook"],
        hashing_encoder,
        k=3,
    )
    decision = router.route("telescope galaxy")
    assert decision.chosen == ["astro"]
    assert len(decision.signals["neighbours"]) == 3
    with pytest.raises(RagrouteError):
        KnnRouter(["a"], [], hashing_encoder)


def test_ensemble_weights_confident_members(sources, hashing_encoder):
    proto = PrototypeRouter(sources, hashing_encoder)
    knn = KnnRouter(["printer vpn"], ["it"], hashing_encoder)  # knows only one route
    ensemble = EnsembleRouter([proto, knn], early_exit=None)  # every member consulted
    decision = ensemble.route(QUERIES["astro"])
    assert set(decision.routes) == {"astro", "cook", "it"}
    assert decision.chosen == ["astro"]
    assert set(decision.signals["weights"]) == {"prototype", "knn"}
    # what each member read is in the ensemble's signals, not only the routes it returned
    member = decision.signals["member_signals"]["prototype"]
    assert member == proto.route(QUERIES["astro"]).signals
    assert set(member["similarity"]) == set(decision.routes)


def test_an_ensemble_of_two_encoders_refuses_one_vector_set(sources, hashing_encoder):
    from conftest import HashingEncoder

    other = HashingEncoder(model_id="test/other")  # the same dimension: no member's check caught it
    proto = PrototypeRouter(sources, hashing_encoder)
    knn = KnnRouter(["printer vpn", "bread oven"], ["it", "cook"], other)
    vectors = hashing_encoder.encode_queries([QUERIES["astro"]])
    mixed = EnsembleRouter([proto, EnsembleRouter([knn])], early_exit=None)  # nested: still seen
    with pytest.raises(RagrouteError, match="members use different encoders .*route_contexts"):
        mixed.route_many([QUERIES["astro"]], query_vectors=vectors)
    assert mixed.route(QUERIES["astro"]).chosen == ["astro"]  # each member encodes for itself
    same = EnsembleRouter([proto, KnnRouter(["galaxy"], ["astro"], hashing_encoder)], early_exit=None)
    assert same.route_many([QUERIES["astro"]], query_vectors=vectors)[0].chosen == ["astro"]


def test_routed_retriever_hits_remember_source_and_probability(sources, hashing_encoder):
    retriever = Pipeline(sources, PrototypeRouter(sources, hashing_encoder), encoder=hashing_encoder)
    result = retriever.retrieve(QUERIES["cook"], k=4)
    assert result.hits and all(h.source == "cook" for h in result.hits)
    assert result.hits[0].explain["route_probability"] == result.decision.routes["cook"]
    stages = [step.stage for step in result.decision.trace]
    assert stages[0] == "router" and "select" in stages and "retrieve" in stages
    with pytest.raises(EmptyQueryError):
        retriever.retrieve("  ")


def test_multi_route_fuses_two_sources(sources, hashing_encoder):
    router = PrototypeRouter(sources, hashing_encoder, PrototypeConfig(temperature=100.0))  # flat: hedge
    retriever = Pipeline(sources, router, options=RoutingOptions(threshold=0.1, max_routes=2))
    result = retriever.retrieve("galaxy bread", k=6)
    assert len(result.decision.chosen) == 2
    assert {h.source for h in result.hits} == set(result.decision.chosen)
    assert any(step.stage == "fuse" for step in result.decision.trace)


POLICY = """
signals:
  math: {type: regex, pattern: '\\d+\\s*[*x+]\\s*\\d+'}
  printers: {type: keywords, any: [printer]}
rules:
  - {name: arithmetic, priority: 10, when: math, then: {route: none}}
  - {name: printer_to_it, priority: 5, when: printers, then: {route: it}}
  - {name: no_cooking_for_tech, priority: 1, when: {not: math}, then: {defer: true, block: [cook]}}
"""


def test_policy_decides_first_and_defers_with_blocks(sources, hashing_encoder):
    policy = Policy.from_yaml(POLICY)
    retriever = Pipeline(sources, PrototypeRouter(sources, hashing_encoder), policy=policy)
    none = retriever.retrieve("what is 17 x 3", k=3)
    assert none.hits == [] and none.decision.chosen == [NONE_ROUTE]
    assert none.decision.decided_by == "rule:arithmetic"
    printer = retriever.retrieve("my printer jams", k=3)
    assert printer.decision.chosen == ["it"] and printer.decision.decided_by == "rule:printer_to_it"
    blocked = retriever.retrieve(QUERIES["cook"], k=3)
    assert "cook" not in blocked.decision.routes and "cook" not in blocked.decision.chosen
    assert any(step.stage == "policy-adjust" for step in blocked.decision.trace)


def test_a_boost_only_rule_adjusts_the_routers_probabilities(sources):
    from ragroute.route.base import BaseRouter, decision_from_probs

    class Fixed(BaseRouter):
        name = "fixed"
        labels = ["astro", "cook", "it"]

        def route_many(self, queries, *, query_vectors=None):
            return [decision_from_probs(self.labels, [0.5, 0.3, 0.2], decided_by="fixed") for _ in queries]

    policy = Policy.from_yaml(
        "rules:\n  - {name: lift_it, when: true, then: {defer: true, boost: {it: 0.3}}}\n"
    )
    options = RoutingOptions(threshold=0.35, hedge_below=None)
    plain = Pipeline(sources, Fixed(), options=options).decide("my laptop")
    assert plain.routes == {"astro": 0.5, "cook": 0.3, "it": 0.2} and plain.chosen == ["astro"]
    boosted = Pipeline(sources, Fixed(), policy=policy, options=options).decide("my laptop")
    adjust = [step.detail for step in boosted.trace if step.stage == "policy-adjust"]
    expected = {"astro": 0.5 / 1.3, "cook": 0.3 / 1.3, "it": (0.2 + 0.3) / 1.3}
    assert adjust == [{"boosts": {"it": 0.3}, "blocks": [], "routes": expected}]
    assert boosted.routes == pytest.approx(expected) and boosted.chosen == ["astro", "it"]
    assert boosted.routes["it"] > plain.routes["it"] and boosted.decided_by == "fixed"
    # a boost of a route the router does not score (here `none`) does nothing, and the step says so
    # (until session 43 it read as made)
    lift_none = Policy.from_yaml(
        "rules:\n  - {name: lift_none, when: true, then: {defer: true, boost: {none: 0.9}}}\n"
    )
    unchanged = Pipeline(sources, Fixed(), policy=lift_none, options=options).decide("my laptop")
    (step,) = [step.detail for step in unchanged.trace if step.stage == "policy-adjust"]
    assert step["ignored"] == {"routes": ["none"], "why": "not scored by the router"}
    assert unchanged.routes == pytest.approx(plain.routes)


def test_broken_source_is_reported_and_routed_around(sources, hashing_encoder):
    policy = Policy.from_yaml("rules:\n  - {name: all, when: true, then: {routes: [astro, wiki]}}\n")
    problems = [SourceProblem("wiki", "index missing: /x/manifest.json")]
    retriever = Pipeline(sources, policy=policy, problems=problems)
    result = retriever.retrieve("galaxy", k=3)
    assert result.decision.chosen == ["astro"]
    assert result.decision.signals["unavailable_sources"] == {"wiki": "index missing: /x/manifest.json"}
    dropped = [s.detail for s in result.decision.trace if s.stage == "unavailable-routes"]
    assert dropped == [{"dropped": {"wiki": "index missing: /x/manifest.json"}, "routes": {"astro": 1.0}}]
    # a router preferring the broken source: its share was chosen, then skipped, and the query got
    # nothing (until session 37); the sources that opened share it now
    from ragroute.route.base import BaseRouter, decision_from_probs

    class PrefersWiki(BaseRouter):
        labels = ["wiki", "astro", "cook", "it"]

        def route_many(self, queries, *, query_vectors=None):
            return [
                decision_from_probs(self.labels, [0.9, 0.05, 0.03, 0.02], decided_by="x") for _ in queries
            ]

    routed = Pipeline(sources, PrefersWiki(), problems=problems).retrieve("galaxy", k=3)
    assert routed.decision.chosen[0] == "astro" and routed.hits
    assert routed.decision.routes["astro"] == pytest.approx(0.5)
    always = Pipeline(sources, PrefersWiki(), problems=problems, options=RoutingOptions(always=("wiki",)))
    skip = [s.detail for s in always.retrieve("galaxy", k=3).decision.trace if s.stage == "skip"]
    assert skip == [{"sources": {"wiki": "index missing: /x/manifest.json"}}]  # an `always:` one, still said


def test_granularity_views_map_hits_to_parents(hashing_encoder):
    docs = [
        Document(id=f"d{i}", text=f"alpha {i}\n\nbeta gamma words here {i}\n\ndelta {i} more text")
        for i in range(3)
    ]
    views = granularity_views(
        "wiki", docs, ["document", "paragraph"], lambda units, name: build_index(units, "bm25", name=name)
    )
    assert [v.name for v in views] == ["wiki/document", "wiki/paragraph"]
    hits = views[1].search_many(["beta gamma"], 10)[0]
    assert all(h.parent_id in {"d0", "d1", "d2"} for h in hits)
    collapsed = collapse_to_parents(hits, 10)
    assert len(collapsed) == len({h.parent_id for h in hits}) and [h.rank for h in collapsed] == [1, 2, 3]


def test_collapse_keeps_sources_apart():
    hits = [Hit("a#p0", 3.0, "s1", parent_id="a"), Hit("a#p1", 2.0, "s1", parent_id="a"), Hit("a", 1.0, "s2")]
    assert [(h.source, h.doc_id) for h in collapse_to_parents(hits, 5)] == [("s1", "a#p0"), ("s2", "a")]


def test_collapse_groups_documents_by_collection_not_by_a_name_prefix(hashing_encoder):
    """The collection was the source name before a `/`: `kb/en` and `kb/de` (two corpora) lost one
    of their `faq-1` hits, and two sources naming one `corpus:` kept a document twice (until
    session 37). Sources stamp their collection on the hits they return when it is not their name."""
    faq = [Document(id="faq-1", text="reset the vpn password")] + [
        Document(id=f"faq-{i}", text=f"printer toner {i}") for i in range(2, 6)
    ]
    en, de = (Source(n, build_index(faq, "bm25", name=n)) for n in ("kb/en", "kb/de"))
    hits = [h for s in (en, de) for h in s.search_many(["vpn password"], 1)[0]]
    assert [(h.source, h.doc_id) for h in collapse_to_parents(hits, 5)] == [
        ("kb/en", "faq-1"),
        ("kb/de", "faq-1"),
    ]
    chunks = [Document(id="d#p0", text="vpn password", parent_id="d")] + [
        Document(id=f"e{i}", text=f"printer toner {i}") for i in range(4)
    ]
    shared = [
        Source(n, build_index(chunks, "bm25", name=n), metadata={"corpus": "manuals"})
        for n in ("bm25", "other")
    ]
    hits = [h for s in shared for h in s.search_many(["vpn password"], 1)[0]]
    assert [h.explain["collection"] for h in hits] == ["manuals", "manuals"]
    assert len(collapse_to_parents(hits, 5)) == 1


def test_pseudo_queries_deterministic():
    docs = [Document(id=str(i), text=" ".join(f"w{j}" for j in range(30))) for i in range(10)]
    assert pseudo_queries(docs, 5, seed=1) == pseudo_queries(docs, 5, seed=1)
    assert all(5 <= len(text.split()) <= 12 for _, text in pseudo_queries(docs, 5))


def test_pseudo_queries_are_drawn_by_document_id_not_by_position():
    """Until session 41 the draw went over positions: the same documents in another order, or one
    more document, gave other pseudo-queries (and routers calibrated on them other probabilities)."""
    docs = [Document(id=f"d{i}", text=" ".join(f"w{i}x{j}" for j in range(30))) for i in range(40)]
    first = pseudo_queries(docs, 8, seed=3, key="src")
    texts = {docs[p].id: t for p, t in first}
    flipped = docs[::-1]
    assert {flipped[p].id: t for p, t in pseudo_queries(flipped, 8, seed=3, key="src")} == texts
    grown = [*docs[:20], Document(id="new", text=" ".join(f"n{j}" for j in range(30))), *docs[20:]]
    again = {grown[p].id: t for p, t in pseudo_queries(grown, 8, seed=3, key="src")}
    assert len(set(again.items()) - set(texts.items())) <= 1  # the new one can take one place
    assert pseudo_queries(docs, 8, seed=3, key="other") != first  # sources draw apart


def test_router_probabilities_do_not_depend_on_the_order_of_sources_or_documents(hashing_encoder, small_docs):
    """Calibration drew its pseudo-queries with ``seed + the source's position`` and over document
    positions (and the prototype bank over positions) until session 41: on six Glasgow collections
    a reversed source list moved probabilities by up to 0.24 and changed the routes of 15 queries."""
    import random

    queries = ["telescope orbit comet", "bread flour oven", "printer vpn password", "star sauce network"]
    shuffled = list(small_docs)
    random.Random(5).shuffle(shuffled)
    layouts = [
        topic_sources(small_docs, hashing_encoder, describe=True),
        topic_sources(small_docs, hashing_encoder, describe=True)[::-1],
        topic_sources(shuffled, hashing_encoder, describe=True),
    ]

    def probabilities(make):
        out = []
        for sources in layouts:
            router = make(sources)
            out.append([{n: round(p, 9) for n, p in d.routes.items()} for d in router.route_many(queries)])
        return out

    for make in (
        lambda srcs: PrototypeRouter(
            srcs, hashing_encoder, PrototypeConfig(max_docs=4, calibration_queries=5)
        ),
        lambda srcs: ConfidenceRouter(srcs),
    ):
        first, *others = probabilities(make)
        assert all(other == first for other in others)


class _DownRetriever:
    """A retriever with documents whose every search raises (a store that went down)."""

    def __init__(self, documents):
        self.documents = documents

    def search_many(self, queries, k=10, **kwargs):
        raise RuntimeError("store is down")


@pytest.mark.parametrize("router", ["prototype", "confidence"])
def test_a_source_that_raises_loses_only_its_own_hits(sources, hashing_encoder, small_docs, router):
    # the score-scale fit, the calibrated-fusion statistics and the confidence router searched
    # every source without a guard: one failing source was a traceback for every query
    from ragroute.pipeline.build import pipeline_from_settings

    down = Source("down", _DownRetriever(small_docs[:10]), description="documents about astro")
    pipeline = pipeline_from_settings(
        [*sources, down], {"kind": router, "threshold": 0.0, "max_routes": 4}, encoder=hashing_encoder
    )
    result = pipeline.retrieve(QUERIES["cook"], k=3)
    assert result.hits and all(hit.source != "down" for hit in result.hits)
    assert "down" in result.decision.chosen
    failed = [s for s in result.decision.trace if s.stage == "retrieve" and s.detail.get("source") == "down"]
    assert failed and failed[0].detail["error"] == "RuntimeError: store is down"
    if router == "confidence":
        assert result.decision.routes["down"] == 0.0
        assert result.decision.signals["errors"] == {"down": "RuntimeError: store is down"}


def test_a_router_refusal_names_the_config_it_is_about(sources, hashing_encoder):
    # "source 'blank' has neither documents nor a description" did not say which config held it
    from ragroute.pipeline.build import pipeline_from_settings

    class Nothing:
        def search_many(self, queries, k=10, *, filters=None):
            return [[] for _ in queries]

    blank = Source("blank", Nothing())
    with pytest.raises(RagrouteError, match=r"^routing\.yaml: source 'blank' has neither documents"):
        pipeline_from_settings(
            [*sources, blank], {"kind": "prototype"}, encoder=hashing_encoder, where="routing.yaml"
        )
    with pytest.raises(
        RagrouteError, match=r"^routing\.yaml: router: a knn router needs 'examples:'"
    ) as caught:
        pipeline_from_settings(sources, {"kind": "knn"}, encoder=hashing_encoder, where="routing.yaml")
    assert str(caught.value).count("routing.yaml") == 1  # already named: not twice


class _FixedRouter:
    """Answers every query with the same probabilities; restricted_to keeps the given labels."""

    def __init__(self, name, probs, restricts=False):
        self.name, self.probs, self.restricts = name, dict(probs), restricts
        self.labels = list(self.probs)

    def route_many(self, queries, *, query_vectors=None):
        from ragroute.route.base import decision_from_probs

        return [
            decision_from_probs(self.labels, list(self.probs.values()), decided_by=self.name) for _ in queries
        ]

    def restricted_to(self, labels):
        if not self.restricts:
            return None
        kept = {k: v for k, v in self.probs.items() if k in labels}
        total = sum(kept.values())
        return _FixedRouter(self.name, {k: v / total for k, v in kept.items()})


class _Counting:
    """A member that records the queries (and vectors) it was asked to route."""

    def __init__(self, router):
        self.router, self.name, self.labels = router, router.name, router.labels
        self.asked, self.vectors = [], []

    def route_many(self, queries, *, query_vectors=None):
        self.asked.append(list(queries))
        self.vectors.append(query_vectors)
        return self.router.route_many(queries, query_vectors=query_vectors)


def test_ensemble_member_weights_and_sharpness():
    a = _FixedRouter("a", {"x": 0.9, "y": 0.1})
    b = _FixedRouter("b", {"x": 0.4, "y": 0.6})
    only_a = EnsembleRouter([a, b], weights=[1.0, 0.0], early_exit=None).route("q")
    assert only_a.routes == {"x": 0.9, "y": 0.1}
    # top probabilities 0.9 and 0.6 weigh 0.81 and 0.36 at sharpness 2
    both = EnsembleRouter([a, b], sharpness=2.0, early_exit=None).route("q")
    assert both.signals["weights"] == {"a": 0.81, "b": 0.36}
    x = (0.81 * 0.9 + 0.36 * 0.4) / (0.81 + 0.36)
    assert both.routes == {"x": round(x, 6), "y": round(1 - x, 6)}
    # sharpness 1: the top probabilities themselves
    flat = EnsembleRouter([a, b], sharpness=1.0, early_exit=None).route("q")
    assert flat.signals["weights"] == {"a": 0.9, "b": 0.6}
    x = (0.9 * 0.9 + 0.6 * 0.4) / 1.5
    assert flat.routes == {"x": round(x, 6), "y": round(1 - x, 6)}
    weighted = EnsembleRouter([a, b], weights=[1.0, 3.0], early_exit=None).route("q")
    assert weighted.signals["weights"] == {"a": 0.81, "b": round(3 * 0.36, 4)}


def test_ensemble_members_of_one_name_are_each_shown_in_the_signals():
    """Two members of one name (two trained routers, or `members: [knn, knn]`) each weigh in the
    decision, so each is shown: keyed by name, the second member's routes, weight and signals
    replaced the first's, and the decision could not be explained from its signals."""
    a = _FixedRouter("trained", {"x": 0.9, "y": 0.1})
    b = _FixedRouter("trained", {"x": 0.2, "y": 0.8})
    c = _FixedRouter("knn", {"x": 0.5, "y": 0.5})
    decision = EnsembleRouter([a, b, c], early_exit=None).route("q")
    assert decision.signals["members"] == {
        "trained": {"x": 0.9, "y": 0.1},
        "trained#2": {"x": 0.2, "y": 0.8},
        "knn": {"x": 0.5, "y": 0.5},
    }
    assert decision.signals["weights"] == {"trained": 0.81, "trained#2": 0.64, "knn": 0.25}
    assert list(decision.signals["member_signals"]) == ["trained", "trained#2", "knn"]
    x = (0.81 * 0.9 + 0.64 * 0.2 + 0.25 * 0.5) / (0.81 + 0.64 + 0.25)
    assert decision.routes == {"x": round(x, 6), "y": round(1 - x, 6)}
    sure = EnsembleRouter([_FixedRouter("trained", {"x": 0.95, "y": 0.05}), b]).route("q")
    assert sure.signals["skipped"] == ["trained#2"]


def test_a_sure_first_member_decides_alone_and_the_others_are_not_run():
    a = _FixedRouter("a", {"x": 0.95, "y": 0.05})
    b = _Counting(_FixedRouter("b", {"x": 0.1, "y": 0.9}))
    decision = EnsembleRouter([a, b], early_exit=0.9).route("q")
    assert b.asked == []  # never run
    assert decision.routes == {"x": 0.95, "y": 0.05} and decision.chosen == ["x"]
    assert decision.signals["early_exit"] == 0.9 and decision.signals["skipped"] == ["b"]
    assert set(decision.signals["weights"]) == {"a"}
    # below the threshold every member has its say, as without an early exit
    unsure = _FixedRouter("a", {"x": 0.6, "y": 0.4})
    decision = EnsembleRouter([unsure, b], early_exit=0.9).route("q")
    assert b.asked == [["q"]] and "skipped" not in decision.signals
    assert decision.routes == EnsembleRouter([unsure, b], early_exit=None).route("q").routes


def test_the_early_exit_runs_later_members_only_for_the_queries_the_first_is_unsure_of():
    class _ByQuery(_FixedRouter):
        def route_many(self, queries, *, query_vectors=None):
            sure = {"x": 0.99, "y": 0.01}
            return [
                decision_from_probs(
                    ["x", "y"],
                    list((sure if q.startswith("sure") else self.probs).values()),
                    decided_by=self.name,
                )
                for q in queries
            ]

    a = _ByQuery("a", {"x": 0.5, "y": 0.5})
    b = _Counting(_FixedRouter("b", {"x": 0.2, "y": 0.8}))
    queries = ["sure 1", "unsure 1", "sure 2", "unsure 2"]
    decisions = EnsembleRouter([a, b]).route_many(queries, query_vectors=np.eye(4, 3))
    assert b.asked == [["unsure 1", "unsure 2"]]
    assert b.vectors[0].tolist() == np.eye(4, 3)[[1, 3]].tolist()  # each query with its own vector
    assert [d.chosen for d in decisions] == [["x"], ["y"], ["x"], ["y"]]
    assert ["skipped" in d.signals for d in decisions] == [True, False, True, False]


def test_the_early_exit_is_off_when_the_first_member_has_no_weight_and_checked():
    a = _FixedRouter("a", {"x": 0.95, "y": 0.05})
    b = _Counting(_FixedRouter("b", {"x": 0.1, "y": 0.9}))
    decision = EnsembleRouter([a, b], weights=[0.0, 1.0]).route("q")  # a alone would give no decision
    assert b.asked == [["q"]] and decision.chosen == ["y"]
    for bad in (0, 1.5, -0.1, float("nan"), True, "0.9"):
        with pytest.raises(RagrouteError, match="early_exit"):
            EnsembleRouter([a, b], early_exit=bad)


def test_a_restricted_ensemble_keeps_its_weights_and_sharpness():
    a = _FixedRouter("a", {"x": 0.5, "y": 0.3, "z": 0.2}, restricts=True)
    b = _FixedRouter("b", {"x": 0.1, "y": 0.1, "z": 0.8})
    ensemble = EnsembleRouter([a, b], weights=[2.0, 0.5], sharpness=3.0)
    assert EnsembleRouter([b]).restricted_to({"x"}) is None
    restricted = ensemble.restricted_to({"x", "y"})
    assert restricted.weights == [2.0, 0.5] and restricted.sharpness == 3.0
    assert restricted.routers[1] is b
    assert restricted.routers[0].probs == pytest.approx({"x": 0.625, "y": 0.375})
    decision = restricted.route("q")
    assert decision.signals["weights"] == {"a": round(2.0 * 0.625**3, 4), "b": round(0.5 * 0.8**3, 4)}


class _TableEncoder:
    """Each text's vector read from a table."""

    def __init__(self, table):
        self.table = table

    def encode_queries(self, texts, show_progress=False):
        return np.asarray([self.table[t] for t in texts], dtype=np.float32)


def test_knn_votes_are_weighted_by_similarity_and_smoothed():
    encoder = _TableEncoder({"a": [1.0, 0.0], "b": [0.5, 0.5], "c": [-1.0, 0.0], "d": [0.0, 1.0]})
    router = KnnRouter(["a", "b", "c", "d"], ["x", "y", "y", "z"], encoder, k=3, smoothing=0.25)
    decision = router.route("q", query_vector=np.array([1.0, 0.0], dtype=np.float32))
    # neighbours a (1.0, x), b (0.5, y), d (0.0, z); c (-1.0) is not among the 3
    votes = {"x": 0.25 + 1.0, "y": 0.25 + 0.5, "z": 0.25 + 0.0}
    total = sum(votes.values())
    assert decision.routes == {label: round(v / total, 6) for label, v in votes.items()}
    # a negative similarity casts no (negative) vote
    everyone = KnnRouter(["a", "b", "c", "d"], ["x", "y", "y", "z"], encoder, k=4, smoothing=0.0)
    routes = everyone.route("q", query_vector=np.array([1.0, 0.0], dtype=np.float32)).routes
    assert routes == {"x": round(1 / 1.5, 6), "y": round(0.5 / 1.5, 6), "z": 0.0}


def test_knn_without_smoothing_splits_a_query_with_no_similar_neighbour_evenly():
    """Until session 43 ``smoothing=0`` routed such a query with NaN probabilities (0 / 0), and a
    negative or NaN smoothing was taken as given (negative probabilities, NaN)."""
    encoder = _TableEncoder({"a": [1.0, 0.0], "b": [0.5, 0.5], "d": [0.0, 1.0]})
    router = KnnRouter(["a", "b", "d"], ["x", "y", "z"], encoder, k=2, smoothing=0.0)
    decision = router.route("q", query_vector=np.array([-1.0, 0.0], dtype=np.float32))
    assert decision.routes == {"x": round(1 / 3, 6), "y": round(1 / 3, 6), "z": round(1 / 3, 6)}
    assert decision.chosen == ["x"]  # a tie goes to the first label in sorted order, as everywhere
    for smoothing in (-0.5, float("nan"), float("inf")):
        with pytest.raises(RagrouteError, match="smoothing"):
            KnnRouter(["a", "b", "d"], ["x", "y", "z"], encoder, smoothing=smoothing)


def test_prototype_none_threshold_of_zero_adds_the_none_route(sources, hashing_encoder):
    """0 is a cosine like any other (config accepts it); until session 43 it added no ``none``
    route, as if the key were absent."""
    router = PrototypeRouter(sources, hashing_encoder, PrototypeConfig(none_threshold=0.0, temperature=0.05))
    assert router.labels[-1] == NONE_ROUTE
    # a query like no source's documents: every similarity is 0, the none route's too
    assert set(router.route("qqq").routes) == {"astro", "cook", "it", NONE_ROUTE}


def test_a_dropped_winners_share_goes_by_the_routers_order_when_the_rest_round_to_0(sources):
    """A sharp router (a trained one's temperature can be 0.001) certain of a route that failed to
    open, or that names no source: every other route's probability rounds to 0. Until session 43
    the query then went to ``none`` (no hits) whatever the router ranked next; the unrounded
    ``log_routes`` rank them now, as for a caller's hidden sources."""
    from ragroute.route.base import log_routes_of

    class Sharp(BaseRouter):
        name = "sharp"
        labels = ["gone", "astro", "cook", "it"]

        def route_many(self, queries, *, query_vectors=None):
            logits = np.array([0.0, -900.0, -800.0, -950.0])
            return [
                decision_from_probs(
                    self.labels,
                    softmax(logits)[0],
                    decided_by=self.name,
                    log_routes=log_routes_of(self.labels, logits),
                )
                for _ in queries
            ]

    unknown = Pipeline(sources, Sharp()).retrieve("galaxy", k=3)
    broken = Pipeline(
        [s for s in sources if s.name != "it"], Sharp(), problems=[SourceProblem("gone", "index missing")]
    ).retrieve("galaxy", k=3)
    for result in (unknown, broken):
        assert result.decision.chosen == ["cook"] and result.hits
        assert max(result.decision.routes, key=result.decision.routes.get) == "cook"


def test_prototype_calibration_leaves_out_each_pseudo_querys_own_bank_row(
    sources, hashing_encoder, monkeypatch
):
    from ragroute.route import prototype

    seen = []
    real = prototype.fit_temperature

    def spy(raw, targets, *args, **kwargs):
        seen.append((np.array(raw), np.array(targets)))
        return real(raw, targets, *args, **kwargs)

    monkeypatch.setattr(prototype, "fit_temperature", spy)
    config = PrototypeConfig(description_weight=0.0, centroid_weight=0.0, bank_top_n=1)
    router = PrototypeRouter(sources, hashing_encoder, config)
    ((raw, targets),) = seen
    texts, owners = [], []
    for s, source in enumerate(sources):
        rows = {int(p): row for row, p in enumerate(router._bank_positions[s])}
        for position, text in pseudo_queries(
            source.documents, config.calibration_queries, seed=config.seed, key=source.name
        ):
            texts.append(text)
            owners.append((s, rows.get(position, -1)))
    vectors = hashing_encoder.encode_queries(texts, show_progress=False)
    expected = np.zeros((len(texts), len(sources)))
    for i, (s, own) in enumerate(owners):
        for t, bank in enumerate(router._banks):
            sims = bank @ vectors[i]
            if t == s and own >= 0:
                sims = np.delete(sims, own)
            expected[i, t] = sims.max()
    assert targets.tolist() == [s for s, _ in owners] and any(own >= 0 for _, own in owners)
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-6)


def test_prototype_centroids_are_unit_vectors_along_the_bank_mean(sources, hashing_encoder):
    router = PrototypeRouter(sources, hashing_encoder)
    for s, bank in enumerate(router._banks):
        centroid = router._centroids[s]
        assert np.linalg.norm(centroid) == pytest.approx(1.0, abs=1e-6)
        mean = bank.mean(axis=0)
        np.testing.assert_allclose(centroid, mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-7)


def test_routes_to_sources_the_config_no_longer_has_are_dropped_before_selection(sources):
    """A trained router fitted on a source later removed from the config sent its queries there:
    the route was chosen, then skipped, and the query got nothing (session 36)."""

    class Stale(BaseRouter):
        name = "stale"
        labels = ["gone", "astro", "cook"]

        def route_many(self, queries, *, query_vectors=None):
            return [decision_from_probs(self.labels, [0.7, 0.2, 0.1], decided_by=self.name) for _ in queries]

    result = Pipeline(sources, Stale()).retrieve("galaxy", k=3)
    assert result.decision.chosen and "gone" not in result.decision.chosen and result.hits
    step = next(s.detail for s in result.decision.trace if s.stage == "unknown-routes")
    assert step["dropped"] == ["gone"] and step["routes"] == pytest.approx({"astro": 2 / 3, "cook": 1 / 3})


@pytest.mark.parametrize(
    "options",
    [
        RoutingOptions(),
        RoutingOptions(threshold=0.4),
        RoutingOptions(max_routes=1),
        RoutingOptions(hedge_below=0.3),
    ],
)
def test_a_rules_routes_are_all_queried_in_its_order_whatever_the_selection(sources, options):
    """`routes:` means "query these sources": the even 1/n shares went through threshold,
    max_routes and hedge_below (ties broken by name), which dropped routes the rule listed."""
    policy = Policy.from_yaml(
        "signals:\n  all: {type: keywords, any: [everything]}\n"
        "rules:\n  - {name: fanout, when: all, then: {routes: [it, cook, astro]}}\n"
    )
    decision = Pipeline(sources, policy=policy, options=options).decide("search everything")
    assert decision.chosen == ["it", "cook", "astro"] and decision.decided_by == "rule:fanout"
    select = [step.detail for step in decision.trace if step.stage == "select"]
    assert select[0]["chosen_by"] == "rule:fanout" and select[0]["chosen"] == ["it", "cook", "astro"]
    # what no rule decides is still selected as before
    probs = {"astro": 0.5, "cook": 0.3, "it": 0.2}
    routed = Pipeline(sources, _FixedRouter("fixed", probs), policy=policy, options=options)
    plain = routed.decide("galaxy")
    assert "chosen_by" not in [s.detail for s in plain.trace if s.stage == "select"][0]
    expected = select_routes(
        plain.routes,
        threshold=options.threshold,
        max_routes=options.max_routes,
        hedge_below=options.hedge_below,
    )
    assert plain.chosen == expected


def test_a_rules_routes_keep_always_scopes_unopened_sources_and_none(sources):
    from ragroute.route.sources import Source

    policy = Policy.from_yaml(
        "signals:\n  all: {type: keywords, any: [everything]}\n  nil: {type: keywords, any: [nothing]}\n"
        "rules:\n  - {name: fanout, when: all, then: {routes: [vault, it, wiki, cook]}}\n"
        "  - {name: skip, priority: 5, when: nil, then: {route: none}}\n"
    )
    vault = Source("vault", sources[0].retriever, access=frozenset({"hr"}))
    problems = [SourceProblem("wiki", "index missing")]
    options = RoutingOptions(max_routes=1, always=("astro",))
    pipeline = Pipeline([*sources, vault], policy=policy, options=options, problems=problems)
    public = pipeline.decide("search everything")  # vault hidden, never named; wiki did not open
    assert public.chosen == ["it", "cook", "astro"] and public.decided_by == "rule"
    assert "vault" not in json.dumps(public.to_dict(), default=str)
    assert pipeline.decide("search everything", scopes=["hr"]).chosen == ["vault", "it", "cook", "astro"]
    assert pipeline.decide("search everything and nothing").chosen == ["none"]  # `always` not added
    hidden_only = Policy.from_yaml(
        "signals:\n  all: {type: keywords, any: [everything]}\n"
        "rules:\n  - {name: secret, when: all, then: {routes: [vault]}}\n"
    )
    alone = Pipeline([*sources, vault], policy=hidden_only, options=RoutingOptions(max_routes=1))
    assert alone.decide("search everything").chosen == ["none"]


class _FlakyRetriever:
    """A dense index whose searches raise while ``down`` (a store that was down at start-up)."""

    def __init__(self, index):
        self.index, self.documents, self.down = index, index.documents, True

    def search_many(self, queries, k=10, **kwargs):
        if self.down:
            raise RuntimeError("store is down")
        return self.index.search_many(queries, k, **kwargs)


def test_a_source_down_while_the_confidence_router_calibrated_is_scaled_once_it_answers(
    sources, hashing_encoder, small_docs
):
    """Until session 52 its score scale was (0, 1e-9): once it answered, its z-scores were about
    1e9 and every query went to it."""
    flaky = _FlakyRetriever(build_index(small_docs[:10], "dense", encoder=hashing_encoder, name="astro2"))
    router = ConfidenceRouter([*sources, Source("astro2", flaky)], ConfidenceConfig(temperature=0.5))
    assert router.calibration["errors"] == {"astro2": "RuntimeError: store is down"}
    down = router.route(QUERIES["cook"])
    assert down.routes["astro2"] == 0.0 and down.chosen == ["cook"]
    assert down.signals["errors"] == {"astro2": "RuntimeError: store is down"}
    flaky.down = False
    for topic, query in QUERIES.items():
        decision = router.route(query)
        assert decision.chosen[0] in ({"astro", "astro2"} if topic == "astro" else {topic}), decision.routes
        assert abs(decision.signals["z"]["astro2"]) < 10 and "errors" not in decision.signals
    assert "errors" not in router.calibration  # calibrated again, the temperature kept
    assert router.config.temperature == 0.5


class _PickyRetriever:
    """A dense index that refuses any search holding a query with ``refused`` in its text or
    ``{"topic": "astro"}`` as its filter (a query it cannot handle, a filter it does not offer)."""

    def __init__(self, index):
        self.index, self.documents = index, index.documents

    def search_many(self, queries, k=10, filters=None, **kwargs):
        if any("refused" in q for q in queries) or (filters or {}).get("topic") == "astro":
            raise RuntimeError("query refused")
        return self.index.search_many(queries, k, filters=filters, **kwargs)


@pytest.mark.parametrize(
    "bad", [QueryContext("refused galaxy orbit"), QueryContext("galaxy orbit", filters={"topic": "astro"})]
)
def test_a_query_a_confidence_source_refuses_does_not_change_its_batch_neighbours_routes(
    sources, hashing_encoder, small_docs, bad
):
    """Until session 52 a source whose probe raised for one query of a batch got no probability
    for every query of it: a query's route depended on what was routed beside it."""
    picky = _PickyRetriever(build_index(small_docs[:10], "dense", encoder=hashing_encoder, name="astro2"))
    router = ConfidenceRouter([*sources, Source("astro2", picky)], ConfidenceConfig(temperature=0.5))
    assert "errors" not in router.calibration
    good = QueryContext(QUERIES["astro"])
    bad_decision, batched = router.route_contexts([bad, good])
    alone = router.route_contexts([QueryContext(QUERIES["astro"])])[0]
    assert untimed(batched.to_dict()) == untimed(alone.to_dict())
    assert batched.routes["astro2"] > 0.0 and "errors" not in batched.signals
    assert bad_decision.routes["astro2"] == 0.0  # the refused query alone loses the source
    assert bad_decision.signals["errors"] == {"astro2": "RuntimeError: query refused"}


def test_a_repeated_knn_example_is_one_neighbour():
    """Until session 52 each copy of a repeated row voted and took one of the k places: the labels
    file given twice (a merge) routed this query to y, whose one neighbour's copies crowded x out."""
    encoder = _TableEncoder({"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.6, 0.8]})
    query = np.array([1.0, 0.0], dtype=np.float32)
    once = KnnRouter(["a", "b", "c"], ["y", "x", "x"], encoder, k=3, smoothing=0.0)
    twice = KnnRouter(["a", "b", "c"] * 2, ["y", "x", "x"] * 2, encoder, k=3, smoothing=0.0)
    assert once.route("q", query_vector=query).chosen == ["x"]
    decision = twice.route("q", query_vector=query)
    assert decision.routes == once.route("q", query_vector=query).routes and decision.chosen == ["x"]
    assert [n["text"] for n in decision.signals["neighbours"]] == ["a", "b", "c"]
    # one text under two labels stays two examples, one vote each
    both = KnnRouter(["a", "a"], ["x", "y"], encoder, k=2, smoothing=0.0)
    assert both.route("q", query_vector=query).routes == {"x": 0.5, "y": 0.5}


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), "0.5", True])
def test_a_router_temperature_that_is_no_positive_number_is_refused(hashing_encoder, small_docs, temperature):
    """A config's ``temperature:`` is refused unless positive; until session 52 the Python API took
    ``temperature=0`` and routed at another one without a word (the confidence router at 1.0, the
    prototype router at 0.05), and a negative one made the least similar source the likeliest."""
    from ragroute.errors import RagrouteError
    from ragroute.route.confidence import ConfidenceConfig, ConfidenceRouter
    from ragroute.route.prototype import PrototypeConfig, PrototypeRouter

    sources = topic_sources(small_docs, hashing_encoder)
    with pytest.raises(RagrouteError, match=r"^'temperature' must be (above 0|a number), not "):
        ConfidenceRouter(sources, ConfidenceConfig(temperature=temperature))
    with pytest.raises(RagrouteError, match=r"^'temperature' must be (above 0|a number), not "):
        PrototypeRouter(sources, hashing_encoder, PrototypeConfig(temperature=temperature))


@pytest.mark.parametrize("make", ["prototype", "confidence"])
def test_a_router_config_reused_for_another_router_is_calibrated_again(hashing_encoder, small_docs, make):
    """Calibrating wrote the fitted temperature into the caller's config: a second router built
    with the same config took it as given and was never calibrated on its own sources."""
    sources = topic_sources(small_docs, hashing_encoder)
    config = PrototypeConfig() if make == "prototype" else ConfidenceConfig()

    def build(srcs):
        if make == "prototype":
            return PrototypeRouter(srcs, hashing_encoder, config)
        return ConfidenceRouter(srcs, config)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        first = build(sources)
        second = build(sources[:2])
    assert config.temperature is None  # the caller's config is left as given
    assert first.calibration.get("source", "pseudo-queries") == "pseudo-queries"
    assert second.calibration.get("source", "pseudo-queries") == "pseudo-queries"
    assert second.calibration["pseudo_queries"] < first.calibration["pseudo_queries"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"none_threshold": float("nan")}, r"^'none_threshold' must be a number, not nan"),
        ({"none_threshold": 1.5}, r"^'none_threshold' must be at most 1, not 1.5"),
        ({"bank_top_n": 0}, r"^'bank_top_n' must be at least 1, not 0"),
        ({"bank_top_n": 2.5}, r"^'bank_top_n' must be an integer, not 2.5"),
        ({"bank_weight": float("nan")}, r"^'bank_weight' must be a number, not nan"),
        ({"bank_dim": "8"}, r"^'bank_dim' must be an integer, not a string"),
    ],
)
def test_a_prototype_setting_it_cannot_route_by_is_refused(hashing_encoder, small_docs, setting, message):
    """Until session 54 a NaN none_threshold (or weight) made every probability NaN, and a
    bank_top_n below 1 (or not whole) ended in numpy's traceback: one line now, as a config says."""
    sources = topic_sources(small_docs, hashing_encoder)
    with pytest.raises(RagrouteError, match=message):
        PrototypeRouter(sources, hashing_encoder, PrototypeConfig(temperature=0.05, **setting))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"k": 0}, r"^'k' must be at least 1, not 0"),
        ({"top_n": 0}, r"^'top_n' must be at least 1, not 0"),
        ({"k": 2.5}, r"^'k' must be an integer, not 2.5"),
        ({"top_n": "3"}, r"^'top_n' must be an integer, not a string"),
        ({"calibration_queries": -1}, r"^'calibration_queries' must be at least 0, not -1"),
    ],
)
def test_a_confidence_setting_it_cannot_route_by_is_refused(hashing_encoder, small_docs, setting, message):
    """Until session 54 k=0, top_n=0, k=2.5 or top_n="3" routed every query uniformly (each source's
    probe read no score), without a word: one line now, as the prototype router's settings."""
    sources = topic_sources(small_docs, hashing_encoder)
    with pytest.raises(RagrouteError, match=message):
        ConfidenceRouter(sources, ConfidenceConfig(temperature=0.5, **setting))
