"""Scores with one meaning: the deployment encoder's cosine, on every source and for one route or several."""

from __future__ import annotations

import numpy as np
import pytest
from test_pipeline import FixedRouter

from ragroute.errors import RagrouteError
from ragroute.index.build import build_index
from ragroute.pipeline import Pipeline, RoutingOptions
from ragroute.pipeline.build import routing_options
from ragroute.pipeline.score_scale import fit_quantile_map, fit_score_scales
from ragroute.route.sources import Source


def _sources(small_docs, encoder, method: str = "dense") -> list[Source]:
    return [
        Source(
            t,
            build_index([d for d in small_docs if d.metadata["topic"] == t], method, encoder=encoder, name=t),
        )
        for t in ("astro", "cook", "it")
    ]


def test_quantile_map_sends_quantiles_onto_quantiles_and_extends_linearly():
    raw = np.linspace(0.0, 20.0, 101)
    cosine = 0.2 + 0.03 * raw  # a monotone relation: the map recovers it
    scale = fit_quantile_map(raw, cosine)
    for value in (0.0, 5.0, 12.5, 20.0):
        assert scale.map(value) == pytest.approx(0.2 + 0.03 * value, abs=1e-9)
    assert scale.map(25.0) == pytest.approx(0.95, abs=1e-6)  # beyond the fitted range: the same slope
    assert scale.map(1e6) == 1.0 and scale.map(-1e6) == -1.0  # clipped to the cosine range
    # monotone even for a noisy, non-linear relation
    rng = np.random.default_rng(0)
    noisy = fit_quantile_map(rng.gamma(2.0, 3.0, 500), rng.uniform(0.1, 0.8, 500))
    values = [noisy.map(v) for v in np.linspace(-5, 40, 200)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_tied_scores_map_to_the_middle_of_their_cosines_not_the_lowest():
    """18 of 20 scores tied at 1.0 (a source capped there) mapped to the sample's lowest cosine: a
    run of knots on one raw value kept its first quantile (until session 43). It now maps to the
    mean of the run's cosine quantiles; the map stays non-decreasing."""
    raw = [0.2, 0.5] + [1.0] * 18
    cosine = np.linspace(0.1, 0.6, 20)
    scale = fit_quantile_map(raw, cosine)
    knots = np.linspace(0.0, 1.0, 21)
    tied = np.quantile(raw, knots) == 1.0
    assert scale.map(1.0) == pytest.approx(float(np.mean(np.quantile(cosine, knots)[tied])))
    assert 0.3 < scale.map(1.0) < 0.45
    assert scale.map(0.2) == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(scale.cosine_knots, scale.cosine_knots[1:]))
    assert all(a < b for a, b in zip(scale.raw_knots, scale.raw_knots[1:]))


def test_scores_are_each_sources_cosine_for_one_route_or_several(small_docs, hashing_encoder):
    sources = _sources(small_docs, hashing_encoder)
    query = "telescope galaxy printer"
    own = {s.name: {h.doc_id: h.score for h in s.retriever.search(query, 5)} for s in sources}
    one = Pipeline(sources, FixedRouter({"astro": 0.9, "cook": 0.05, "it": 0.05}), encoder=hashing_encoder)
    two = Pipeline(sources, FixedRouter({"astro": 0.5, "cook": 0.0, "it": 0.5}), encoder=hashing_encoder)
    hits_one = one.retrieve(query, 5).hits
    hits_two = two.retrieve(query, 8).hits  # deep enough for both sources under calibrated fusion
    assert {h.source for h in hits_one} == {"astro"} and {h.source for h in hits_two} == {"astro", "it"}
    for hit in hits_one + hits_two:  # the same number the source itself gives: one meaning
        assert hit.score == pytest.approx(own[hit.source][hit.doc_id], abs=1e-6)
        assert "fused" in hit.explain
    trace = two.retrieve(query, 5).decision.trace
    scores_step = next(s for s in trace if s.stage == "scores")
    assert scores_step.detail["meaning"] == "similarity" and scores_step.detail["astro"] == {"kind": "cosine"}
    # scores: fusion keeps the fusion method's values (the old behaviour)
    fusion = Pipeline(
        sources,
        FixedRouter({"astro": 0.5, "cook": 0.0, "it": 0.5}),
        encoder=hashing_encoder,
        options=RoutingOptions(scores="fusion"),
    )
    fused = fusion.retrieve(query, 8).hits
    assert [h.doc_id for h in fused] == [h.doc_id for h in hits_two]  # same ranking either way
    assert fused[0].score == pytest.approx(hits_two[0].explain["fused"])
    assert not any(s.stage == "scores" for s in fusion.retrieve(query, 5).decision.trace)


def test_bm25_sources_are_mapped_onto_the_encoder_cosine_scale(small_docs, hashing_encoder):
    sources = _sources(small_docs, hashing_encoder, method="bm25")
    scales = fit_score_scales(sources, hashing_encoder)
    assert {scale.kind for scale in scales.values()} == {"mapped"}
    pipeline = Pipeline(sources, FixedRouter({"astro": 0.5, "cook": 0.5, "it": 0.0}), encoder=hashing_encoder)
    hits = pipeline.retrieve("telescope bread oven star", 10).hits
    assert hits and all(-1.0 <= h.score <= 1.0 for h in hits)
    for source in ("astro", "cook"):  # monotone in the source's own BM25 score
        own = sorted((h.explain[source]["score"], h.score) for h in hits if h.source == source)
        assert all(b[1] >= a[1] for a, b in zip(own, own[1:]))
    # no encoder: nothing to map onto, scores stay the sources' own
    assert {s.kind for s in fit_score_scales(sources, None).values()} == {"raw"}


def test_hybrid_sources_report_their_dense_cosine(small_docs, hashing_encoder):
    sources = _sources(small_docs, hashing_encoder, method="hybrid")
    pipeline = Pipeline(sources, FixedRouter({"astro": 1.0, "cook": 0.0, "it": 0.0}), encoder=hashing_encoder)
    hits = pipeline.retrieve("telescope galaxy orbit", 5).hits
    assert any("dense" in hit.explain for hit in hits)
    for hit in hits:
        if "dense" in hit.explain:
            assert hit.score == pytest.approx(hit.explain["dense"]["score"])


def test_a_hybrid_too_small_to_fit_a_map_keeps_its_dense_cosine(hashing_encoder):
    """A one-document hybrid source gave too few pseudo-query hits for a map and fell back to its
    raw RRF values (0.016), so its exact match scored below an unrelated hit of a larger source."""
    from ragroute.types import Document

    tiny = Source(
        "tiny",
        build_index([Document("only", "lighthouse foghorn keeper")], "hybrid", encoder=hashing_encoder),
    )
    scales = fit_score_scales([tiny], hashing_encoder)
    assert scales["tiny"].kind == "hybrid" and "no pseudo-queries could be cut" in scales["tiny"].error
    pipeline = Pipeline([tiny], FixedRouter({"tiny": 1.0}), encoder=hashing_encoder)
    result = pipeline.retrieve("lighthouse foghorn keeper", 1)
    assert (
        result.hits[0].score == pytest.approx(result.hits[0].explain["dense"]["score"])
        and result.hits[0].score > 0.9
    )
    step = next(s.detail for s in result.trace if s.stage == "scores")
    assert step["tiny"]["kind"] == "hybrid" and step["tiny"]["error"]
    # a few pseudo-queries, too few hits for a map: the same
    few = [Document(f"d{i}", f"Lighthouse {i} keeps a foghorn. Keepers trim the lamp.") for i in range(2)]
    small = Source("small", build_index(few, "hybrid", encoder=hashing_encoder))
    scale = fit_score_scales([small], hashing_encoder)["small"]
    assert scale.kind == "hybrid" and "fewer than the 10 a map needs" in scale.error


def test_scores_setting_is_checked():
    assert routing_options({"scores": "fusion"}).scores == "fusion"
    with pytest.raises(RagrouteError, match="scores must be 'similarity' or 'fusion'"):
        routing_options({"scores": "probability"}, "r.yaml")


def test_the_slope_beyond_the_map_is_read_over_the_inner_knots():
    raw = np.linspace(0.0, 20.0, 101)  # the 21 quantiles are 0, 1, ..., 20

    def f(r):  # steep tails, 0.03 per unit between the 10% and 90% knots (2 and 18)
        return np.where(r <= 2, 0.1 * r, np.where(r <= 18, 0.2 + 0.03 * (r - 2), 0.68 + 0.1 * (r - 18)))

    scale = fit_quantile_map(raw, f(raw))
    assert scale.raw_knots == pytest.approx(list(range(21)))
    assert scale.slope == pytest.approx(0.03, abs=1e-12)
    assert scale.map(21.0) == pytest.approx(0.88 + 0.03, abs=1e-12)
    assert scale.map(-1.0) == pytest.approx(-0.03, abs=1e-12)


def test_similarities_keep_the_higher_of_two_sources_for_one_document():
    from ragroute.pipeline.score_scale import ScoreScale, similarities
    from ragroute.types import Hit

    scales = {"a": ScoreScale("raw"), "b": ScoreScale("raw")}
    documents_of = {"a": "shared", "b": "shared"}
    for first, second in ((0.3, 0.7), (0.7, 0.3)):
        lists = {
            "a": [Hit("d", first, source="a"), Hit("e", 0.2, source="a")],
            "b": [Hit("d", second, source="b")],
        }
        assert similarities(lists, scales, documents_of) == {("shared", "d"): 0.7, ("shared", "e"): 0.2}
    # without a shared collection the two sources' documents are told apart
    lists = {"a": [Hit("d", 0.3, source="a")], "b": [Hit("d", 0.7, source="b")]}
    assert similarities(lists, scales) == {("a", "d"): 0.3, ("b", "d"): 0.7}


def test_each_pseudo_query_hit_is_paired_with_its_own_query(hashing_encoder):
    from ragroute.context import QueryContext
    from ragroute.pipeline.score_scale import _fit_source
    from ragroute.types import Hit

    queries = ["galaxy orbit", "bread oven", "printer vpn", "yeast flour", "star telescope"]
    texts = ["galaxy orbit star", "oven bread crust", "vpn printer network", "flour yeast dough", "telescope"]

    class Fake:
        def search_contexts(self, contexts, k):
            # each query finds its own text and the next query's text
            out = []
            for i, _ in enumerate(contexts):
                j = (i + 1) % len(texts)
                hits = [Hit(f"t{i}", 10.0 + i, text=texts[i]), Hit(f"t{j}", 1.0 + i, text=texts[j])]
                out.append((hits, None))
            return out

    contexts = [QueryContext(q) for q in queries]
    vectors = hashing_encoder.encode_queries(queries, show_progress=False)
    docs = hashing_encoder.encode_documents(texts, show_progress=False)
    raw, cosine = [], []
    for i in range(len(queries)):
        j = (i + 1) % len(texts)
        raw += [10.0 + i, 1.0 + i]
        cosine += [float(vectors[i] @ docs[i]), float(vectors[i] @ docs[j])]
    scale = _fit_source(Fake(), "mapped", contexts, vectors, hashing_encoder)
    assert scale == fit_quantile_map(raw, cosine)
    assert scale.cosine_knots[-1] > 0.5  # the own-text hits are close to their queries


def test_the_fitted_scales_are_memoised_per_seed(small_docs, hashing_encoder, monkeypatch):
    from ragroute.pipeline import score_scale

    sources = _sources(small_docs, hashing_encoder, method="bm25")
    from ragroute.memo import RetrieverMemo

    monkeypatch.setattr(score_scale, "_memo", RetrieverMemo())
    first = fit_score_scales(sources, hashing_encoder, seed=1)
    monkeypatch.setattr(score_scale, "_memo", RetrieverMemo())
    zero = fit_score_scales(sources, hashing_encoder, seed=0)
    assert fit_score_scales(sources, hashing_encoder, seed=0) is zero  # memoised
    again = fit_score_scales(sources, hashing_encoder, seed=1)
    assert again is not zero and again == first
    assert {n: s.raw_knots for n, s in zero.items()} != {n: s.raw_knots for n, s in first.items()}


def test_a_memo_entry_is_found_only_over_as_many_retrievers():
    """``get`` compared the retrievers with zip, which stops at the shorter list: an entry put over
    [a, b] was handed back for [a] (and for [a, b, c]) until session 55."""
    from ragroute.memo import RetrieverMemo

    class Retriever:
        pass

    a, b, c = Retriever(), Retriever(), Retriever()
    memo: RetrieverMemo[str] = RetrieverMemo()
    memo.put("key", [a, b], "over a and b")
    assert memo.get("key", [a, b]) == "over a and b"
    assert memo.get("key", [a]) is None and memo.get("key", [a, b, c]) is None
    assert memo.get("key", [b, a]) is None


def test_the_memo_tells_an_encoders_weights_apart(small_docs, hashing_encoder, monkeypatch):
    """The scales were memoised by the encoder's model id alone until session 50: the same model
    retrained in place (other weights, ``cache_variant``), or on another backend, was handed the
    scales fitted on the first one's cosines."""
    import copy

    from ragroute.memo import RetrieverMemo
    from ragroute.pipeline import score_scale

    monkeypatch.setattr(score_scale, "_memo", RetrieverMemo())
    sources = _sources(small_docs, hashing_encoder, method="bm25")
    first = fit_score_scales(sources, hashing_encoder)
    retrained = copy.copy(hashing_encoder)
    retrained.cache_variant = "weights:2"
    assert fit_score_scales(sources, retrained) is not first
    assert fit_score_scales(sources, hashing_encoder) is first


def test_scales_are_fitted_again_when_documents_change_even_if_their_number_does_not(
    small_docs, hashing_encoder, monkeypatch
):
    from ragroute.memo import RetrieverMemo
    from ragroute.pipeline import score_scale
    from ragroute.types import Document

    monkeypatch.setattr(score_scale, "_memo", RetrieverMemo())
    source = _sources(small_docs, hashing_encoder, method="bm25")[0]
    before = fit_score_scales([source], hashing_encoder)
    assert fit_score_scales([source], hashing_encoder) is before  # nothing changed: memoised
    source.retriever.delete(["astro-0"])
    source.retriever.add([Document(id="astro-new", text="comet nebula " * 6)])
    assert len(source.documents) == 10
    assert fit_score_scales([source], hashing_encoder) is not before  # one out, one in: fitted again


@pytest.mark.parametrize("score", [float("nan"), "high"])
def test_a_source_whose_hits_are_malformed_keeps_raw_scores_and_says_why(small_docs, hashing_encoder, score):
    """Fitting the maps runs every source on pseudo-queries when the pipeline is built: a NaN score
    was mapped to the top of the cosine scale (every hit of the source scored alike, NaN first),
    a text score crashed the whole config with a traceback."""
    from ragroute.route.sources import Source
    from ragroute.types import Hit

    class Odd:
        def search_many(self, queries, k=10, *, filters=None):
            return [
                [Hit("n0", score, text="telescope star"), Hit("n1", 0.5, text="oven bread")] for _ in queries
            ]

    sources = [*_sources(small_docs, hashing_encoder, method="bm25"), Source("odd", Odd())]
    scales = fit_score_scales(sources, hashing_encoder)
    assert scales["odd"].kind == "raw" and "hit 'n0' has score" in scales["odd"].error
    assert scales["astro"].kind == "mapped"


def test_memos_drop_what_was_computed_over_retrievers_that_are_gone(small_docs, hashing_encoder, monkeypatch):
    """A service reloading its config kept one score map and one set of fusion statistics per load,
    forever (a service-use audit: 40 each after 40 reloads)."""
    import gc

    from ragroute.memo import RetrieverMemo
    from ragroute.pipeline import calibration, score_scale

    monkeypatch.setattr(score_scale, "_memo", RetrieverMemo())
    monkeypatch.setattr(calibration, "_memo", RetrieverMemo())
    for _ in range(5):  # five loads, each over new indexes; the last one's live on
        sources = _sources(small_docs, hashing_encoder, method="bm25")
        fit_score_scales(sources, hashing_encoder)
        calibration.null_score_stats(sources)
        gc.collect()
    assert len(score_scale._memo) == 1 and len(calibration._memo) == 1
    assert calibration.null_score_stats(sources) is calibration.null_score_stats(sources)  # still reused


def test_a_memo_entry_is_read_only_for_the_retrievers_it_was_computed_over():
    from ragroute.memo import RetrieverMemo

    class Retriever:
        pass

    memo, a, b = RetrieverMemo(), Retriever(), Retriever()
    memo.put("key", [a], {"x": 1})
    assert memo.get("key", [a]) == {"x": 1} and memo.get("key", [b]) is None


def test_a_pipeline_sources_content_key_follows_the_documents_inside_it(small_docs, hashing_encoder):
    from ragroute.index.base import content_key
    from ragroute.types import Document

    inner = _sources(small_docs, hashing_encoder, method="bm25")
    nested = Source("nested", Pipeline(inner, FixedRouter({"astro": 0.5, "cook": 0.3, "it": 0.2})))
    before = content_key(nested)
    inner[0].retriever.delete(["astro-1"])
    inner[0].retriever.add([Document(id="astro-new", text="comet nebula " * 6)])
    assert content_key(nested) != before


def test_a_nested_pipeline_with_a_reranker_has_its_probabilities_mapped(small_docs, hashing_encoder):
    """A nested pipeline's scores were taken as cosines whenever it scored ``similarity`` with the
    same encoder, also when a reranker had replaced them by its probabilities of relevance (session
    43); the ``parents`` reranker keeps the scores, so it still passes them on."""
    from dataclasses import replace

    from ragroute.rerank.parents import ParentsReranker

    class Probabilities:
        name = "probabilities"

        def rerank(self, context, hits, k):
            return [replace(hit, score=0.99 - 0.01 * i) for i, hit in enumerate(hits[:k])]

    inner = _sources(small_docs, hashing_encoder)
    router = FixedRouter({"astro": 0.5, "cook": 0.3, "it": 0.2})
    reranked = Pipeline(inner, router, encoder=hashing_encoder, reranker=Probabilities())
    parents = Pipeline(inner, router, encoder=hashing_encoder, reranker=ParentsReranker())
    scales = fit_score_scales([Source("reranked", reranked), Source("parents", parents)], hashing_encoder)
    assert scales["reranked"].kind == "mapped"
    assert scales["parents"].kind == "cosine"


class _UnscopedRetriever:
    """Scores by words shared with the query and returns documents whatever their access labels, as
    a retriever that does not filter by scope does (labelled documents score ten times higher)."""

    def __init__(self, documents):
        self.documents = documents

    def search_many(self, queries, k=10, *, filters=None):
        from ragroute.types import Hit

        out = []
        for query in queries:
            words = set(query.split())

            def score(doc, words=words):
                return len(words & set(doc.text.split())) * (10.0 if doc.metadata else 1.0)

            ranked = sorted(self.documents, key=lambda doc: -score(doc))[:k]
            found = enumerate(ranked, 1)
            hits = [Hit(d.id, score(d), "x", n, d.text, metadata=d.metadata) for n, d in found]
            out.append(hits)
        return out


def test_a_scale_is_fitted_on_what_a_caller_of_no_scopes_may_read(hashing_encoder):
    """A retriever that does not filter by scope returned the documents with access labels to the
    pseudo-queries too: their scores and texts were fitted into the map whose ends every caller's
    trace shows (raw ends 30-70 beside 3-7 without them: a caller learnt that such documents exist)."""
    from ragroute.pipeline.calibration import null_score_stats
    from ragroute.scopes import readable
    from ragroute.types import Document

    rng = np.random.default_rng(7)
    from conftest import TOPICS

    words = TOPICS["astro"].split()
    public = [Document(f"p{i}", " ".join(rng.choice(words, size=12))) for i in range(30)]
    secret = [
        Document(f"s{i}", "merger " + " ".join(rng.choice(words, size=12)), metadata={"access": "board"})
        for i in range(30)
    ]

    class Readable(_UnscopedRetriever):  # the same retriever, keeping only what a caller of no scopes reads
        def search_many(self, queries, k=10, *, filters=None):
            return [readable(hits, ()) for hits in super().search_many(queries, k, filters=filters)]

    both = public + secret
    got = fit_score_scales([Source("plain", _UnscopedRetriever(both))], hashing_encoder)["plain"]
    want = fit_score_scales([Source("plain", Readable(both))], hashing_encoder)["plain"]
    assert got.describe() == want.describe()
    dense = Source("d", build_index(public[:15], "dense", encoder=hashing_encoder, name="d"))
    got_null = null_score_stats([Source("plain", _UnscopedRetriever(both)), dense])["plain"]
    assert got_null == null_score_stats([Source("plain", Readable(both)), dense])["plain"]


def test_two_inner_sources_documents_of_one_id_keep_their_own_scores(hashing_encoder):
    """A nested pipeline's hits of two inner sources whose documents share the id H1 are two
    documents: both got the better one's similarity with one route (0.80 for a cosine of 0.32), and
    fusing a second route dropped one of them (until session 51)."""
    from conftest import shared_id_pipeline

    from ragroute.types import Document

    inner = shared_id_pipeline(hashing_encoder)
    docs = [Document("o1", "payroll stuff"), Document("o2", "salary things")]
    other = Source("other", build_index(docs, "dense", encoder=hashing_encoder, name="other"))
    alone = {(h.source, h.doc_id): h.score for h in inner.retrieve("payroll salary", k=4).hits}
    for routes in ({"inner": 1.0, "other": 0.0}, {"inner": 0.5, "other": 0.5}):
        outer = Pipeline([Source("inner", inner), other], FixedRouter(routes), encoder=hashing_encoder)
        found = outer.retrieve("payroll salary", k=6).hits
        nested = {(h.explain["inner_source"], h.doc_id): h.score for h in found if h.source == "inner"}
        assert nested == pytest.approx(alone)
