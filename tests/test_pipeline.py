"""The query pipeline: context vectors, stages, concurrency, failures, nesting, gate, rerank, registries."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time

import numpy as np
import pytest
from conftest import HashingEncoder, untimed

from ragroute.context import QueryContext, query_vectors
from ragroute.errors import InvalidArgumentError, RagrouteError, UnknownKindError
from ragroute.index.build import build_index
from ragroute.pipeline import GateDecision, Pipeline, PipelineResult, RoutingOptions
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.registry import ROUTERS, Registry
from ragroute.route.base import BaseRouter, decision_from_probs
from ragroute.route.prototype import PrototypeRouter
from ragroute.route.sources import Source
from ragroute.types import Document, Hit


class CountingEncoder(HashingEncoder):
    """Counts how many times each text was encoded as a query."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: dict[str, int] = {}

    def encode_queries(self, texts, **kwargs):
        for text in texts:
            self.seen[text] = self.seen.get(text, 0) + 1
        return super().encode_queries(texts, **kwargs)


class FixedRouter(BaseRouter):
    """Sends every query to the given routes with the given probabilities; counts batch calls."""

    name = "fixed"

    def __init__(self, routes: dict[str, float]):
        self.routes = routes
        self.labels = list(routes)
        self.batches: list[int] = []

    def route_many(self, queries, *, query_vectors=None):
        self.batches.append(len(queries))
        return [
            decision_from_probs(self.labels, [self.routes[n] for n in self.labels], decided_by=self.name)
            for _ in queries
        ]


class SlowRetriever:
    """Sleeps, then returns one hit; or raises if ``fail``."""

    def __init__(self, name: str, delay: float = 0.0, fail: bool = False):
        self.name, self.delay, self.fail = name, delay, fail
        self.threads: set[str] = set()

    def search_many(self, queries, k=10, *, filters=None):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("disk on fire")
        return [[Hit(f"{self.name}-doc", 1.0, self.name, rank=1, text=q)] for q in queries]


def _sources(encoder, small_docs, method="dense"):
    return [
        Source(
            t,
            build_index([d for d in small_docs if d.metadata["topic"] == t], method, encoder=encoder, name=t),
        )
        for t in ("astro", "cook", "it")
    ]


def test_each_query_is_encoded_once_per_encoder(small_docs):
    first, second = CountingEncoder(), CountingEncoder(model_id="test/other", dim=32)
    sources = _sources(first, small_docs)
    sources.append(
        Source(
            "it2",
            build_index([d for d in small_docs if d.metadata["topic"] == "it"], "dense", encoder=second),
        )
    )
    router = PrototypeRouter(sources, first)
    pipeline = Pipeline(
        sources, router, options=RoutingOptions(threshold=0.0, max_routes=4, hedge_below=None)
    ).calibrate()  # fusion statistics encode pseudo-queries once, up front
    first.seen.clear()
    second.seen.clear()
    queries = ["telescope orbit", "bread oven", "printer vpn", "comet yeast laptop"]
    results = pipeline.retrieve_many(queries, k=3)
    assert all(len(r.decision.chosen) == 4 for r in results)  # every source visited
    assert first.seen == dict.fromkeys(queries, 1)  # the router and three sources share one vector
    assert second.seen == dict.fromkeys(queries, 1)  # the fourth source has its own encoder, once
    assert set(results[0].context.encoders_used) == {"test/hashing|hashing|64", "test/other|hashing|32"}


def test_context_vectors_batch_and_preset():
    encoder = CountingEncoder()
    contexts = [QueryContext.of("a b"), QueryContext.of("c d"), QueryContext.of("a b")]
    contexts[1].set_vector(encoder, encoder.encode_queries(["c d"])[0])
    encoder.seen.clear()
    vectors = query_vectors(contexts, encoder)
    assert vectors.shape == (3, 64) and encoder.seen == {"a b": 1}  # duplicates and preset ones skipped
    assert QueryContext.of(contexts[0]) is contexts[0]
    with pytest.raises(RagrouteError):
        QueryContext.of("   ")


class RetrainedEncoder(HashingEncoder):
    """A model folder's encoder: same model id, backend and dimension whatever its ``weights``
    (``cache_variant``, as the real encoders name them), whose vectors differ with the weights."""

    def __init__(self, weights: str) -> None:
        super().__init__(model_id="/models/tuned")
        self.cache_variant = weights

    def encode_queries(self, texts, *, batch_size: int = 64, show_progress=None):
        rows = super().encode_queries(texts)
        return rows if self.cache_variant == "v1" else np.roll(rows, 1, axis=1)


def test_a_context_keeps_the_vectors_of_other_weights_apart():
    """A model folder trained again in place keeps its model id: a context (or a batch) searched
    with the old weights then the new ones was handed the old weights' vector (one cache key)."""
    old, new = RetrainedEncoder("v1"), RetrainedEncoder("v2")
    context = QueryContext.of("comet tails")
    assert np.allclose(context.vector(old), old.encode_queries(["comet tails"])[0])
    assert np.allclose(context.vector(new), new.encode_queries(["comet tails"])[0])
    assert np.allclose(query_vectors([context], new)[0], new.encode_queries(["comet tails"])[0])
    assert len(context.encoders_used) == 2


def test_a_contexts_filters_are_its_own():
    """Contexts built from one filters mapping (as ``search_many(..., filters=)`` and each step of a
    step-wise run build them) shared it: an edit of one context's filters (by a stage, or by the
    caller reusing its dict for the next query) changed the filters of the others."""
    filters = {"topic": ["astro"], "year": 2024}
    first, second = QueryContext.of("comet", filters=filters), QueryContext.of("oven", filters=filters)
    first.filters["topic"].append("cook")  # type: ignore[index]
    filters["year"] = 1999
    assert second.filters == {"topic": ["astro"], "year": 2024}
    assert first.filters == {"topic": ["astro", "cook"], "year": 2024}


def test_routes_are_batched_and_sources_searched_concurrently():
    slow = [SlowRetriever(name, delay=0.3) for name in ("a", "b", "c")]
    router = FixedRouter({"a": 0.34, "b": 0.33, "c": 0.33})
    pipeline = Pipeline([Source(r.name, r) for r in slow], router, options=RoutingOptions(threshold=0.3))
    start = time.perf_counter()
    results = pipeline.retrieve_many(["q1", "q2"], k=3)
    elapsed = time.perf_counter() - start
    assert router.batches == [2]  # one router call for the batch
    assert elapsed < 0.75  # three 0.3 s sources (each called once for both queries) ran side by side
    assert len({t for r in slow for t in r.threads}) == 3
    assert {h.source for h in results[0].hits} == {"a", "b", "c"}
    wall = [s for s in results[0].trace if s.stage == "retrieve-time"][0].detail
    assert wall["sources"] == 3 and wall["ms"] < 750


def test_callers_querying_at_once_search_their_sources_side_by_side():
    """The retrieve stage's pool is shared by every caller: until session 53 it held one thread per
    source, so 10 callers over two sources waiting on the network queued behind two threads. Each
    search here waits until all 20 (10 callers x 2 sources) are running at once."""
    from concurrent.futures import ThreadPoolExecutor

    callers = 10
    meeting = threading.Barrier(2 * callers, timeout=5)

    class Meeting(SlowRetriever):
        def search_many(self, queries, k=10, *, filters=None):
            meeting.wait()  # breaks (and this source fails) unless all searches run side by side
            return super().search_many(queries, k, filters=filters)

    sources = [Source(name, Meeting(name)) for name in ("a", "b")]
    pipeline = Pipeline(sources, FixedRouter({"a": 0.5, "b": 0.5}), options=RoutingOptions(threshold=0.0))
    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(lambda i: pipeline.retrieve(f"q{i}", k=2), range(callers)))
    assert [sorted(h.source for h in r.hits) for r in results] == [["a", "b"]] * callers


def test_sources_searched_in_the_pool_see_the_callers_context():
    """A framework's tracing span lives in a context variable: a source searched in a pool thread ran
    without it (its span orphaned) while the one searched on the calling thread had it (session 37)."""
    import contextvars

    span: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="none")
    seen: dict[str, str] = {}

    class Traced(SlowRetriever):
        def search_many(self, queries, k=10, *, filters=None):
            seen[self.name] = span.get()
            return super().search_many(queries, k, filters=filters)

    sources = [Source(name, Traced(name)) for name in ("a", "b", "c")]
    pipeline = Pipeline(
        sources, FixedRouter({"a": 0.34, "b": 0.33, "c": 0.33}), options=RoutingOptions(threshold=0.3)
    )
    token = span.set("outer")
    try:
        pipeline.retrieve("q", k=3)
    finally:
        span.reset(token)
    assert seen == {"a": "outer", "b": "outer", "c": "outer"}


def test_local_sources_are_packed_one_group_per_core_largest_first(monkeypatch, hashing_encoder):
    import ragroute.pipeline.stages as stages

    docs = [Document(id=f"d{i}", text=f"telescope star {i}") for i in range(100)]
    sizes = {"big": 100, "mid": 60, "small": 50, "tiny": 5}
    sources = [Source(n, build_index(docs[:size], "bm25", name=n)) for n, size in sizes.items()]
    sources.append(Source("remote", SlowRetriever("remote", delay=0.0)))
    every = RoutingOptions(threshold=0.1, max_routes=5)
    pipeline = Pipeline(sources, FixedRouter({n: 0.2 for n in [*sizes, "remote"]}), options=every)
    retrieve = pipeline._retrieve
    monkeypatch.setattr(stages, "usable_cpus", lambda: 2)
    # two cores: largest first onto the lighter group (big | mid, then small joins mid, tiny joins
    # big); "remote" (not a local index: maybe waiting on I/O) gets a thread of its own
    groups = retrieve._groups(["small", "remote", "big", "mid", "tiny"])
    assert groups == [["big", "tiny"], ["mid", "small"], ["remote"]]
    monkeypatch.setattr(stages, "usable_cpus", lambda: 8)
    assert retrieve._groups(["small", "big", "mid"]) == [["big"], ["mid"], ["small"]]
    monkeypatch.setattr(stages, "usable_cpus", lambda: 2)
    grouped = pipeline.retrieve("telescope star 7", k=20)
    serial = Pipeline(
        sources, FixedRouter({n: 0.2 for n in [*sizes, "remote"]}), options=every, max_workers=1
    )
    expected = serial.retrieve("telescope star 7", k=20)

    def per_source(result):
        steps = [s.detail for s in result.trace if s.stage == "retrieve"]
        return sorted((d["source"], d["hits"], d["top_score"]) for d in steps)

    assert per_source(grouped) == per_source(expected) and len(per_source(grouped)) == 5
    assert [(h.doc_id, h.source, h.score) for h in grouped.hits] == [
        (h.doc_id, h.source, h.score) for h in expected.hits
    ]


def test_hybrid_sources_start_their_scans_first_and_return_what_a_serial_search_does(hashing_encoder):
    from concurrent.futures import ThreadPoolExecutor

    from ragroute.index.hybrid import HybridIndex

    docs = [
        Document(id=f"d{i}", text=f"telescope star {i} galaxy {i % 7}", metadata={"part": i % 3})
        for i in range(120)
    ]
    names = ("big", "mid", "small")
    sources = [
        Source(n, build_index(docs[: 120 - 30 * j], "hybrid", encoder=hashing_encoder, name=n))
        for j, n in enumerate(names)
    ]
    assert all(isinstance(s.retriever, HybridIndex) for s in sources)
    # phase one hands the dense scans to the executor (one per filter group); finishing gives
    # exactly what search_contexts gives, filters and their groups included
    contexts = [QueryContext("telescope star 7"), QueryContext("galaxy 3", filters={"part": 1}),
                QueryContext("star 11 galaxy 4")]  # fmt: skip
    submitted = []
    with ThreadPoolExecutor(2) as pool:

        def submit(fn, *args):
            submitted.append(fn.__name__)
            return pool.submit(fn, *args)

        finish = sources[0].retriever.start_contexts(contexts, 5, submit)
        assert submitted == ["ranked_positions", "ranked_positions"]  # two filter groups, scans only
        phased = finish()
    serial = sources[0].retriever.search_contexts(contexts, 5)
    assert [[(h.doc_id, h.score) for h in hits] for hits in phased] == [
        [(h.doc_id, h.score) for h in hits] for hits in serial
    ]
    assert all(h.metadata["part"] == 1 for h in phased[1]) and all(len(hits) == 5 for hits in phased)

    # in a pipeline: the same fused hits and per-source rows as one source after another
    every = RoutingOptions(threshold=0.1, max_routes=3)
    router = {n: 1 / 3 for n in names}
    together = Pipeline(sources, FixedRouter(router), options=every).retrieve_many(
        ["telescope star 7", "galaxy 5"], k=8
    )
    alone = Pipeline(sources, FixedRouter(router), options=every, max_workers=1).retrieve_many(
        ["telescope star 7", "galaxy 5"], k=8
    )
    for a, b in zip(together, alone):
        assert [(h.doc_id, h.source, h.score) for h in a.hits] == [
            (h.doc_id, h.source, h.score) for h in b.hits
        ]
        rows = [s.detail for s in a.trace if s.stage == "retrieve"]
        assert sorted(d["source"] for d in rows) == sorted(names) and all("error" not in d for d in rows)

    # two_phase off: each source searched whole in its own group, the same hits, phase one never asked
    whole = Pipeline(sources, FixedRouter(router), options=every)
    whole._retrieve.two_phase = False
    for source in sources:
        source.start_contexts = None  # would raise if called
    assert [(h.doc_id, h.source, h.score) for h in whole.retrieve("telescope star 7", k=8).hits] == [
        (h.doc_id, h.source, h.score) for h in together[0].hits
    ]
    for source in sources:
        del source.start_contexts

    # beside a source that does not search in phases (any other retriever: searched in the pool)
    mixed = [*sources, Source("remote", SlowRetriever("remote"))]
    four = RoutingOptions(threshold=0.1, max_routes=4)
    pipeline = Pipeline(mixed, FixedRouter({**router, "remote": 0.25}), options=four)
    result = pipeline.retrieve("telescope star 7", k=40)
    assert {h.source for h in result.hits} == {*names, "remote"}

    # a phased source whose scan fails loses only its own hits, and says why
    def broken(*_args, **_kwargs):
        raise RuntimeError("scan failed")

    sources[1].retriever.dense.ranked_positions = broken
    result = Pipeline(sources, FixedRouter(router), options=every).retrieve("telescope star 7", k=8)
    failed = [s.detail for s in result.trace if s.stage == "retrieve" and "error" in s.detail]
    assert [(d["source"], d["error"]) for d in failed] == [("mid", "RuntimeError: scan failed")]
    assert {h.source for h in result.hits} == {"big", "small"}


def test_a_failing_source_keeps_the_other_hits_and_is_traced():
    sources = [Source("good", SlowRetriever("good")), Source("bad", SlowRetriever("bad", fail=True))]
    pipeline = Pipeline(sources, FixedRouter({"good": 0.5, "bad": 0.5}))
    result = pipeline.retrieve("anything", k=5)
    assert [h.source for h in result.hits] == ["good"]
    failed = [s.detail for s in result.trace if s.stage == "retrieve" and "error" in s.detail]
    assert failed == [{"source": "bad", "ms": failed[0]["ms"], "error": "RuntimeError: disk on fire"}]


def test_with_fusion_scores_a_nested_pipelines_fused_value_is_not_read_as_this_fusions():
    """``scores: fusion``: a hit's score is the fusion value, and ``explain["fused"]`` (what a
    cross-encoder reads as the stage-1 score) is no other value. Until session 55 a nested pipeline's
    hits kept the inner pipeline's ``fused`` (the value that ordered the inner list) beside the outer
    fusion's score."""
    inner = Pipeline(
        [Source("a", RankedRetriever("a", [1, 2, 3])), Source("b", RankedRetriever("b", [4, 5]))],
        FixedRouter({"a": 0.5, "b": 0.5}),
        name="inner",
    )
    sources = [Source("inner", inner), Source("c", RankedRetriever("c", [7, 8]))]
    outer = Pipeline(sources, FixedRouter({"inner": 0.5, "c": 0.5}), options=RoutingOptions(scores="fusion"))
    hits = outer.retrieve("q", k=4).hits
    assert {h.source for h in hits} == {"inner", "c"}
    assert all(h.explain.get("fused", h.score) == h.score for h in hits)


class MisbehavingRetriever:
    """A user's retriever with a bug: ``mode`` picks which."""

    def __init__(self, mode: str):
        self.mode = mode

    def search_many(self, queries, k=10, *, filters=None):
        if self.mode == "extra list":  # an off-by-one: one list more than queries
            return [[]] + [[Hit(f"for-{q}", 0.9, text=q)] for q in queries]
        score = {"nan": float("nan"), "text score": "high", "none text": 0.5}[self.mode]
        return [[Hit("x", score, text=None if self.mode == "none text" else "t")] for _ in queries]


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("extra list", "returned 3 result lists for 2 queries"),
        ("nan", "hit 'x' has score nan, not a finite number"),
        ("text score", "hit 'x' has score 'high', not a number"),
    ],
)
def test_a_source_returning_malformed_results_fails_alone_and_is_traced(mode, error):
    """Before: the extra list shifted every hit onto the next query, a NaN scored above every hit
    (its score map mapped NaN to the top), a text score crashed the query."""
    sources = [Source("good", SlowRetriever("good")), Source("bad", MisbehavingRetriever(mode))]
    pipeline = Pipeline(sources, FixedRouter({"good": 0.5, "bad": 0.5}))
    for result in pipeline.retrieve_many(["first", "second"], k=5):
        assert [h.source for h in result.hits] == ["good"]
        failed = [s.detail for s in result.trace if s.stage == "retrieve" and "error" in s.detail]
        assert [d["source"] for d in failed] == ["bad"] and failed[0]["error"].endswith(error)


def test_a_hit_without_text_is_kept_with_empty_text():
    pipeline = Pipeline([Source("plain", MisbehavingRetriever("none text"))], FixedRouter({"plain": 1.0}))
    (hit,) = pipeline.retrieve("q", k=5).hits
    assert (hit.doc_id, hit.text, hit.score) == ("x", "", 0.5)


class UnlabelledRetriever:
    """A user's retriever whose hits carry ``metadata`` (and ``explain``) of the wrong kind."""

    def __init__(self, metadata):
        self.metadata = metadata

    def search_many(self, queries, k=10, *, filters=None):
        return [[Hit("x", 0.5, text="t", metadata=self.metadata, explain=None)] for _ in queries]


def test_a_hit_without_metadata_is_kept_and_one_with_other_metadata_fails_its_source_alone():
    """A hit whose metadata was None (or not a mapping) raised AttributeError in the scope check,
    failing every query of the batch, every other source's hits lost."""
    pipeline = Pipeline([Source("plain", UnlabelledRetriever(None))], FixedRouter({"plain": 1.0}))
    (hit,) = pipeline.retrieve("q", k=5).hits
    assert (hit.doc_id, hit.metadata, hit.explain["route_probability"]) == ("x", {}, 1.0)
    sources = [Source("good", SlowRetriever("good")), Source("bad", UnlabelledRetriever(["hr"]))]
    pipeline = Pipeline(sources, FixedRouter({"good": 0.5, "bad": 0.5}))
    for result in pipeline.retrieve_many(["first", "second"], k=5):
        assert [h.source for h in result.hits] == ["good"]
        failed = [s.detail for s in result.trace if s.stage == "retrieve" and "error" in s.detail]
        assert [d["source"] for d in failed] == ["bad"]
        assert failed[0]["error"].endswith("hit 'x' has metadata of type list, not a mapping")


class BrokenStage:
    """A gate or reranker with a bug: raises, or answers with the wrong shape."""

    name = "broken"

    def __init__(self, mode: str = "raise"):
        self.mode = mode

    def gate_many(self, contexts):
        if self.mode == "raise":
            raise RuntimeError("gate exploded")
        return [GateDecision("maybe", 0.5) for _ in contexts]  # not an action

    def rerank(self, context, hits, k):
        if self.mode == "raise":
            raise RuntimeError("reranker exploded")
        return None


@pytest.mark.parametrize(
    ("mode", "error"), [("raise", "RuntimeError: gate exploded"), ("shape", "not a decision")]
)
def test_a_failing_gate_sends_the_queries_to_retrieval_with_the_error_traced(mode, error):
    """Before: the query raised the gate's exception (or an unknown action went unnoticed)."""
    sources = [Source("good", SlowRetriever("good"))]
    result = Pipeline(sources, FixedRouter({"good": 1.0}), gate=BrokenStage(mode)).retrieve("anything", k=5)
    assert [h.source for h in result.hits] == ["good"]
    (gate,) = [s.detail for s in result.trace if s.stage == "gate"]
    assert (
        gate["action"] == "retrieve"
        and error in gate["error"]
        and gate["reason"] == "gate failed: retrieving"
    )


def test_a_failing_gates_trace_is_strict_json():
    """Before: the gate step and signals held ``p_retrieve: NaN`` (no probability was computed), so
    ``json.dumps(result.to_dict(), allow_nan=False)`` raised and a plain dump wrote no JSON."""
    sources = [Source("good", SlowRetriever("good"))]
    result = Pipeline(sources, FixedRouter({"good": 1.0}), gate=BrokenStage()).retrieve("anything", k=5)
    (gate,) = [s.detail for s in result.trace if s.stage == "gate"]
    assert "p_retrieve" not in gate and "p_retrieve" not in result.decision.signals["gate"]
    json.dumps(result.to_dict(), allow_nan=False)


class NumpyGate:
    """A user's gate whose probability and signals are numpy values (a model's ``predict_proba``)."""

    name = "numpy"

    def gate_many(self, contexts):
        return [GateDecision("retrieve", np.float32(0.75), {"margin": np.float32(0.5)}) for _ in contexts]


def test_a_decision_with_numpy_values_is_plain_data():
    """Before: ``Decision.to_dict`` handed a gate's (or router's) numpy values on as they were, and
    ``json.dumps(result.to_dict())`` raised on them (a hit's were made plain, the trace's not)."""
    sources = [Source("good", SlowRetriever("good"))]
    result = Pipeline(sources, FixedRouter({"good": 1.0}), gate=NumpyGate()).retrieve("anything", k=5)
    data = result.to_dict()
    back = json.loads(json.dumps(data, allow_nan=False))
    assert back == data and back["decision"]["trace"][0]["p_retrieve"] == 0.75
    assert PipelineResult.from_dict(back).to_dict() == data


@pytest.mark.parametrize(
    ("mode", "error"), [("raise", "RuntimeError: reranker exploded"), ("shape", "TypeError")]
)
def test_a_failing_reranker_keeps_the_fused_order_with_the_error_traced(mode, error):
    sources = [Source("good", RankedRetriever("good", [3, 1, 2]))]
    plain = Pipeline(sources, FixedRouter({"good": 1.0})).retrieve("anything", k=2)
    result = Pipeline(sources, FixedRouter({"good": 1.0}), reranker=BrokenStage(mode)).retrieve(
        "anything", k=2
    )
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in plain.hits] == ["d3", "d1"]
    (rerank,) = [s.detail for s in result.trace if s.stage == "rerank"]
    assert error in rerank["error"] and rerank["kept"] == "fused order"


class MisbehavingReranker:
    """Returns a hit that was no candidate, one candidate twice, or a NaN score."""

    name = "misbehaving"

    def __init__(self, mode: str):
        self.mode = mode

    def rerank(self, context, hits, k):
        if self.mode == "foreign":
            return [Hit("secret", 9.0, source="good"), *hits]
        if self.mode == "twice":
            return [hits[1], hits[1], hits[0]]
        return [Hit(h.doc_id, float("nan"), source=h.source) for h in hits]


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("foreign", "1 hit that was not among its candidates"),
        ("twice", "twice"),
        ("nan", "score nan"),
    ],
)
def test_a_reranker_that_returns_other_hits_than_its_candidates_keeps_the_fused_order(mode, error):
    """Before (session 45): the extra document, the repeat and the NaN score reached the caller."""
    sources = [Source("good", RankedRetriever("good", [3, 1, 2]))]
    result = Pipeline(sources, FixedRouter({"good": 1.0}), reranker=MisbehavingReranker(mode)).retrieve(
        "anything", k=3
    )
    assert [h.doc_id for h in result.hits] == ["d3", "d1", "d2"]
    (rerank,) = [s.detail for s in result.trace if s.stage == "rerank"]
    assert error in rerank["error"] and rerank["kept"] == "fused order"


class WordRouter(BaseRouter):
    """Routes a query to the sources named by its words (each 0.5)."""

    name = "words"

    def __init__(self, labels):
        self.labels = list(labels)

    def route_many(self, queries, *, query_vectors=None):
        return [
            decision_from_probs(
                self.labels, [0.5 if n in q.split() else 0.0 for n in self.labels], decided_by="words"
            )
            for q in queries
        ]


def test_a_query_reads_as_deep_in_a_batch_as_alone():
    """A batch was read at its deepest query's depth: one query routed to two sources over the same
    documents made every query of the batch read 100 hits per source, and zscore fusion then
    ranked another query's hits differently than alone (found by a service-use audit)."""
    rng = __import__("random").Random(0)
    orders = {name: rng.sample(range(200), 200) for name in ("a", "b", "c", "d")}
    sources = [
        Source("a", RankedRetriever("a", orders["a"]), metadata={"corpus": "shared"}),
        Source("b", RankedRetriever("b", orders["b"]), metadata={"corpus": "shared"}),
        Source("c", RankedRetriever("c", orders["c"])),
        Source("d", RankedRetriever("d", orders["d"])),
    ]
    pipeline = Pipeline(sources, WordRouter(orders), options=RoutingOptions(fusion="zscore", threshold=0.1))
    queries = ["c d", "a b"]
    alone = [[h.doc_id for h in pipeline.retrieve(q, k=3).hits] for q in queries]
    batched = [[h.doc_id for h in r.hits] for r in pipeline.retrieve_many(queries, k=3)]
    assert batched == alone
    depths = [
        [s.detail["depth"] for s in r.decision.trace if s.stage == "retrieve-time"]
        for r in pipeline.retrieve_many(queries, k=3)
    ]
    assert depths == [[3], [100]]


class TextRouter(BaseRouter):
    """Routes each query by the probabilities given for its text."""

    name = "by-text"

    def __init__(self, routes: dict[str, dict[str, float]]):
        self.routes = routes
        self.labels = sorted({name for probs in routes.values() for name in probs})

    def route_many(self, queries, *, query_vectors=None):
        return [
            decision_from_probs(
                self.labels, [self.routes[q].get(n, 0.0) for n in self.labels], decided_by="t"
            )
            for q in queries
        ]


@pytest.mark.parametrize("max_workers", [1, None])
def test_a_query_in_a_batch_names_the_sources_and_steps_it_names_alone(max_workers):
    """Until session 49 a query's source lists (and ``retrieve`` steps) came in the order the batch's
    sources were searched, set by the other queries' choices: fusion keeps the first list's copy of a
    document two sources over the same documents both found, so "a b" in a batch after "b a" gave
    its hits source "one" and that route's probability, and alone "two" and its own."""
    shared = RankedRetriever("x", list(range(6)))
    sources = [
        Source("one", shared, metadata={"corpus": "shared"}),
        Source("two", shared, metadata={"corpus": "shared"}),
        Source("other", RankedRetriever("other", [7, 8])),
    ]
    routes = {"b a": {"one": 0.6, "two": 0.4}, "a b": {"two": 0.5, "one": 0.3, "other": 0.2}}
    options = RoutingOptions(threshold=0.1, scores="fusion")
    pipeline = Pipeline(sources, TextRouter(routes), options=options, max_workers=max_workers)
    batch = pipeline.retrieve_many(["b a", "a b"], k=4)
    for query, result in zip(["b a", "a b"], batch):
        alone = pipeline.retrieve(query, k=4)
        assert [h.to_dict() for h in result.hits] == [h.to_dict() for h in alone.hits]
        assert untimed(result.decision.to_dict()) == untimed(alone.decision.to_dict())
        searched = [s.detail["source"] for s in result.trace if s.stage == "retrieve"]
        assert searched == result.decision.chosen  # best route first
    assert batch[1].hits[0].source == "two" and batch[1].hits[0].explain["route_probability"] == 0.5


class KeepingRetriever:
    """Hands out the same hit objects for a text every time (a retriever with a cache)."""

    def __init__(self):
        self.kept: dict[str, list[Hit]] = {}

    def search_many(self, queries, k=10, *, filters=None):
        for q in queries:
            self.kept.setdefault(
                q, [Hit(f"d{i}", 1.0 - i / 10, rank=i + 1, explain={"own": i}) for i in range(3)]
            )
        return [self.kept[q][:k] for q in queries]


def test_a_pipeline_never_writes_on_hits_a_retriever_keeps():
    """Until session 49 the retrieve stage wrote each query's route probability (and the pipeline its
    ranks) onto the hits a source returned: with a retriever that keeps them (a cache) a later query
    changed an earlier result's hits, and the retriever's cache held the pipeline's stamps."""
    keeping = KeepingRetriever()
    sources = [Source("kept", keeping), Source("empty", RankedRetriever("empty", []))]
    options = RoutingOptions(scores="fusion")  # one list: its hits are handed on as they are
    first = Pipeline(sources, FixedRouter({"kept": 0.6, "empty": 0.4}), options=options)
    second = Pipeline(sources, FixedRouter({"kept": 1.0}), options=options)
    earlier = first.retrieve("q", k=3)
    assert [h.explain["route_probability"] for h in earlier.hits] == [0.6] * 3
    later = second.retrieve_many(["q", "q"], k=2)
    assert [h.explain["route_probability"] for h in earlier.hits] == [0.6] * 3
    assert [h.rank for h in earlier.hits] == [1, 2, 3]
    assert [h.explain["route_probability"] for r in later for h in r.hits] == [1.0] * 4
    assert later[0].hits[0] is not later[1].hits[0]
    assert [h.explain for h in keeping.kept["q"]] == [{"own": i} for i in range(3)]


def test_two_sources_over_one_keeping_retriever_each_name_their_own_hits():
    """Until session 50 a source wrote its name onto the hits its retriever returned, and the
    retrieve stage copied them only once every source had answered: two sources over one retriever
    that keeps its hits (a cache) both stamped the same objects, and the first source's hits read as
    the second's (with the second's collection); the retriever's cache held the last name too."""
    keeping = KeepingRetriever()
    sources = [Source("a", keeping), Source("b", keeping, metadata={"corpus": "shelf"})]
    pipeline = Pipeline(sources, FixedRouter({"a": 0.6, "b": 0.4}), options=RoutingOptions(scores="fusion"))
    hits = pipeline.retrieve("q", k=6).hits
    named = sorted((h.source, h.doc_id, h.explain.get("collection")) for h in hits)
    assert named == [("a", f"d{i}", None) for i in range(3)] + [("b", f"d{i}", "shelf") for i in range(3)]
    assert [h.source for h in keeping.kept["q"]] == ["", "", ""]
    assert [h.explain for h in keeping.kept["q"]] == [{"own": i} for i in range(3)]


def test_search_refuses_filters_or_scopes_beside_a_query_context():
    """``retrieve`` refuses scopes= beside a context; until session 49 ``search`` / ``search_many``
    searched the context's own filters and scopes and silently dropped the ones given."""
    sources = [Source("good", RankedRetriever("good", [1, 2]))]
    pipeline = Pipeline(sources, FixedRouter({"good": 1.0}))
    context = QueryContext.of("q")
    for given in ({"filters": {"colour": "red"}}, {"scopes": ["hr"]}):
        with pytest.raises(RagrouteError, match="a QueryContext carries its own"):
            pipeline.search(context, 2, **given)
    assert [h.doc_id for h in pipeline.search(context, 2)] == ["d1", "d2"]  # nothing given: its own
    assert [h.doc_id for h in pipeline.search("q", 2, scopes=["hr"])] == ["d1", "d2"]


class DepthGate:
    """Sends every query to retrieval asking for ``depth`` hits."""

    name = "depth"

    def __init__(self, depth):
        self.depth = depth

    def gate_many(self, contexts):
        return [GateDecision("retrieve", 0.9, depth=self.depth) for _ in contexts]


@pytest.mark.parametrize("depth", [2.5, -3, "4", True])
def test_a_gate_asking_for_no_whole_depth_fails_and_the_query_retrieves_at_k(depth):
    """Until session 49 a gate's depth was taken as given: 2.5, -3 and True asked each source for that
    many hits, every source refused, and the query silently got none; "4" raised a bare TypeError out
    of retrieve."""
    sources = [Source("good", RankedRetriever("good", [1, 2, 3, 4, 5]))]
    result = Pipeline(sources, FixedRouter({"good": 1.0}), gate=DepthGate(depth)).retrieve("q", k=3)
    assert [h.doc_id for h in result.hits] == ["d1", "d2", "d3"]
    (gate,) = [s.detail for s in result.trace if s.stage == "gate"]
    assert gate["reason"] == "gate failed: retrieving" and "depth" in gate["error"]
    assert not any("error" in s.detail for s in result.trace if s.stage == "retrieve")


def test_a_gate_depth_of_a_whole_float_or_numpy_integer_is_read_as_that_many_and_0_as_k():
    sources = [Source("good", RankedRetriever("good", [1, 2, 3, 4, 5]))]
    for depth, want in ((2.0, 2), (np.int64(2), 2), (0, 4), (None, 4)):
        result = Pipeline(sources, FixedRouter({"good": 1.0}), gate=DepthGate(depth)).retrieve("q", k=4)
        assert [h.doc_id for h in result.hits] == [f"d{i}" for i in range(1, want + 1)]
        assert not any("error" in s.detail for s in result.trace)


class TypedScores:
    """Returns one hit per query scored ``score`` (a bool, a numpy float...), or one list too few."""

    def __init__(self, score=0.5, fewer: bool = False):
        self.score, self.fewer = score, fewer

    def search_many(self, queries, k=10, *, filters=None):
        out = [[Hit("x", self.score, text="t")] for _ in queries]
        return out[1:] if self.fewer else out


def test_a_source_returning_too_few_lists_or_a_bool_score_fails_alone():
    """Too few lists gave some queries no hits of that source, silently; a bool passed as a score."""
    for bad in (TypedScores(fewer=True), TypedScores(True)):
        sources = [Source("good", SlowRetriever("good")), Source("bad", bad)]
        for result in Pipeline(sources, FixedRouter({"good": 0.5, "bad": 0.5})).retrieve_many(
            ["a", "b"], k=5
        ):
            assert [h.source for h in result.hits] == ["good"]
            failed = [s.detail for s in result.trace if s.stage == "retrieve" and "error" in s.detail]
            assert [d["source"] for d in failed] == ["bad"]
    with pytest.raises(RagrouteError, match="returned 1 result lists for 2 queries"):
        Source("p", TypedScores(fewer=True)).search_many(["a", "b"], 3)
    with pytest.raises(RagrouteError, match="not a finite number"):
        Source("p", TypedScores(float("nan"))).search_many(["a"], 3)
    (hits,) = Source("p", TypedScores(np.float32(0.5))).search_many(["a"], 3)
    assert type(hits[0].score) is float and hits[0].source == "p"


class ShortGate:
    name = "short"

    def gate_many(self, contexts):
        return [GateDecision("stop", 0.5)]  # one decision for the whole batch


def test_a_gate_answering_for_fewer_queries_sends_the_batch_to_retrieval():
    results = Pipeline(
        [Source("good", SlowRetriever("good"))], FixedRouter({"good": 1.0}), gate=ShortGate()
    ).retrieve_many(["a", "b"], k=5)
    assert [[h.source for h in r.hits] for r in results] == [["good"], ["good"]]
    for result in results:
        (gate,) = [s.detail for s in result.trace if s.stage == "gate"]
        assert "1 decisions for 2 queries" in gate["error"]


class ReversingReranker(BrokenStage):
    """Reverses the hits it is handed in place, then returns non-hits or raises."""

    candidates = 10

    def rerank(self, context, hits, k):
        hits.reverse()
        if self.mode == "objects":
            return [1, 2]
        raise RuntimeError("after reordering in place")


@pytest.mark.parametrize("mode", ["objects", "raise"])
def test_a_failing_reranker_that_touched_its_input_still_leaves_the_fused_order_cut_at_k(mode):
    sources = [Source("good", RankedRetriever("good", [3, 1, 2]))]
    plain = Pipeline(sources, FixedRouter({"good": 1.0})).retrieve("anything", k=2)
    result = Pipeline(sources, FixedRouter({"good": 1.0}), reranker=ReversingReranker(mode)).retrieve(
        "x", k=2
    )
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in plain.hits] == ["d3", "d1"]


def test_a_pipeline_is_a_retriever_and_nests(hashing_encoder, small_docs):
    inner = Pipeline(
        _sources(hashing_encoder, small_docs), FixedRouter({"astro": 0.9, "cook": 0.1, "it": 0.0})
    )
    assert inner.search("telescope", k=2)[0].source == "astro"
    outer = Pipeline(
        [Source("science", inner), Source("misc", SlowRetriever("misc"))],
        FixedRouter({"science": 0.8, "misc": 0.2}),
    )
    result = outer.retrieve("telescope comet", k=3)
    assert {h.source for h in result.hits} == {"science"}
    assert all(h.explain["inner_source"] == "astro" for h in result.hits)
    nested = [s.detail for s in result.trace if s.stage == "retrieve" and s.detail["source"] == "science"][0]
    assert nested["decision"]["chosen"] == ["astro"]
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in inner.search("telescope comet", k=3)]


def test_a_result_read_back_from_json_is_the_result_written(hashing_encoder, small_docs):
    """Results, decisions and hits had to_dict but no way back: a logged trace could not be read
    into the objects again (session 40). One round trip through JSON gives the same dict."""
    from ragroute.pipeline import PipelineResult
    from ragroute.types import Decision, TraceStep

    pipeline = Pipeline(
        _sources(hashing_encoder, small_docs),
        PrototypeRouter(_sources(hashing_encoder, small_docs), hashing_encoder),
    )
    result = pipeline.retrieve("telescope comet flour", k=3)
    logged = json.loads(json.dumps({"query": "telescope comet flour", **result.to_dict()}))
    again = PipelineResult.from_dict(logged)
    assert again.to_dict() == result.to_dict() and again.decision.chosen == result.decision.chosen
    assert isinstance(again.hits[0], Hit) and isinstance(again.trace[0], TraceStep)
    assert again.hits == result.hits
    # a hit made by hand with numpy numbers (a caller's retriever): JSON raised on them until session 51
    made = Hit(doc_id="a", score=np.float32(0.5), rank=np.int64(1), metadata={np.int64(7): "x"}).to_dict()
    assert json.loads(json.dumps(made))["score"] == 0.5 and type(made["rank"]) is int
    assert made["metadata"] == {7: "x"} and type(next(iter(made["metadata"]))) is int  # a numpy key too
    with pytest.raises(InvalidArgumentError, match=r"^hit: unknown key 'docid'; did you mean 'doc_id'\?$"):
        Hit.from_dict({"docid": "a", "score": 1.0})
    with pytest.raises(
        InvalidArgumentError, match=r"^hit: unknown key 'zzz'; known: doc_id, explain, metadata,"
    ):
        Hit.from_dict({"doc_id": "a", "score": 1.0, "zzz": 1})
    with pytest.raises(InvalidArgumentError, match=r"^hit: needs 'doc_id' and 'score'$"):
        Hit.from_dict({"doc_id": "a"})
    with pytest.raises(InvalidArgumentError, match=r"^decision: needs 'chosen'"):
        Decision.from_dict({"routes": {}})
    with pytest.raises(InvalidArgumentError, match="what to_dict wrote"):
        PipelineResult.from_dict([1, 2])


@pytest.mark.parametrize(
    "routes, shown",
    [
        ({"astro": None}, "empty (null)"),
        ({"astro": float("nan")}, "nan"),
        ({"astro": float("inf")}, "inf"),
        ({"astro": "0.5"}, "a string"),
        ({"astro": [0.5]}, "a list"),
        ({"astro": True}, "a boolean"),
        ({"astro": 10**400}, "an integer past a float's range"),
    ],
)
def test_a_logged_decision_with_a_route_that_is_no_number_is_one_line(routes, shown):
    """Decision.from_dict read each route with float(): until session 51 a null or a list was a
    TypeError, a 400-digit number an OverflowError, and NaN or infinity was read back as it was."""
    from ragroute.types import Decision

    logged = {"chosen": ["astro"], "routes": {"cook": 0.25, **routes}}
    with pytest.raises(InvalidArgumentError) as info:
        Decision.from_dict(logged)
    assert str(info.value) == (
        f"decision routes: 'astro' must be a finite number (its probability), got {shown}"
    )
    with pytest.raises(InvalidArgumentError, match=r"^decision: needs 'chosen' \(a list of route names\)$"):
        Decision.from_dict({"chosen": [None], "routes": {"astro": 1.0}})  # was a route named 'None'
    assert Decision.from_dict({"chosen": ["astro"], "routes": {"astro": 1, "cook": 0.0}}).routes == {
        "astro": 1.0,
        "cook": 0.0,
    }


@pytest.mark.parametrize(
    "entry, error",
    [
        ({"score": None}, "hit 'a': 'score' must be a finite number, got empty (null)"),
        ({"score": "0.5"}, "hit 'a': 'score' must be a finite number, got a string"),
        ({"score": float("nan")}, "hit 'a': 'score' must be a finite number, got nan"),
        ({"score": True}, "hit 'a': 'score' must be a finite number, got a boolean"),
        ({"score": 0.5, "rank": "1"}, "hit 'a': 'rank' must be a whole number, got '1'"),
        ({"score": 0.5, "rank": None}, "hit 'a': 'rank' must be a whole number, got None"),
        ({"score": 0.5, "metadata": [1]}, "hit metadata must be a mapping (what to_dict wrote), got a list"),
    ],
)
def test_a_logged_hit_with_a_score_that_is_no_number_is_one_line(entry, error):
    """Hit.from_dict took any score (a null, text, NaN) as it was, unlike a decision's routes: until
    session 56 the result read back printed with a bare ValueError or TypeError, and metadata given
    as a list raised dict()'s TypeError."""
    logged = {"hits": [{"doc_id": "a", **entry}], "decision": {"chosen": ["astro"]}}
    with pytest.raises(InvalidArgumentError) as info:
        PipelineResult.from_dict(logged)
    assert str(info.value) == error
    read = PipelineResult.from_dict({"hits": [{"doc_id": "a", "score": 1}], "decision": {"chosen": []}})
    assert type(read.hits[0].score) is float and "a 1" in repr(read)
    ranked = Hit.from_dict({"doc_id": "a", "score": 1.0, "rank": np.int64(3)})  # a caller's numpy rank
    assert type(ranked.rank) is int and ranked.rank == 3


class KeywordGate:
    """Answers 'hello' queries from the model; asks for 2 hits on 'brief' ones."""

    name = "keyword"

    def gate_many(self, contexts):
        out = []
        for c in contexts:
            if "hello" in c.text:
                out.append(GateDecision("answer", 0.1, {"why": "greeting"}))
            else:
                out.append(GateDecision("retrieve", 0.9, depth=2 if "brief" in c.text else None))
        return out


def test_gate_runs_first(hashing_encoder, small_docs):
    sources = _sources(hashing_encoder, small_docs)
    router = FixedRouter({"astro": 1.0, "cook": 0.0, "it": 0.0})
    pipeline = Pipeline(sources, router, gate=KeywordGate())
    hello, brief, full = pipeline.retrieve_many(["hello there", "brief telescope", "telescope"], k=5)
    assert hello.hits == [] and hello.decision.chosen == ["none"] and hello.trace[0].stage == "gate"
    assert hello.trace[0].detail["action"] == "answer" and hello.trace[0].detail["why"] == "greeting"
    assert router.batches == [2]  # the gated-out query never reached the router
    assert len(brief.hits) == 2 and len(full.hits) == 5
    assert [s.stage for s in full.trace][:2] == ["gate", "router"]


def test_routing_config_names_registered_parts(tmp_path, hashing_encoder, small_docs):
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    chunks = [
        Document(id=f"{d.id}#{i}", text=d.text, parent_id=d.id, metadata=d.metadata)
        for d in small_docs
        for i in range(3)
    ]
    save_index(build_index(chunks, "bm25", name="parts"), tmp_path / "parts")
    config = {
        "sources": {"parts": {"index": "parts"}},
        "router": {"kind": "centroid"},
        "reranker": {"kind": "parents"},
    }
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    result = load_routing(tmp_path / "r.yaml", encoder=hashing_encoder).retrieve("telescope galaxy", k=4)
    assert len(result.hits) == 4 and len({h.parent_id for h in result.hits}) == 4
    assert [s.stage for s in result.trace][-1] == "rerank"
    assert [h.rank for h in result.hits] == [1, 2, 3, 4]

    config["router"] = {"kind": "routr"}
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    with pytest.raises(
        UnknownKindError, match="unknown router 'routr': registered ones are prototype, centroid"
    ):
        load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)
    config["router"] = {"kind": "centroid", "fusion": "magic"}
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    with pytest.raises(UnknownKindError, match="unknown fusion method 'magic'"):
        load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)
    config["router"] = {"kind": "centroid", "treshold": 0.3}
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    with pytest.raises(RagrouteError, match="unknown router key 'treshold'; did you mean 'threshold'\\?"):
        load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)
    config.pop("router")
    config["routr"] = {"kind": "centroid"}
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    with pytest.raises(RagrouteError, match="unknown key 'routr'; did you mean 'router'\\?"):
        load_routing(tmp_path / "r.yaml", encoder=hashing_encoder)


def test_a_registered_router_kind_is_one_registration(hashing_encoder, small_docs):
    ROUTERS.register(
        "always-cook", lambda settings, build: FixedRouter({"astro": 0.0, "cook": 1.0, "it": 0.0})
    )
    try:
        pipeline = pipeline_from_settings(
            _sources(hashing_encoder, small_docs), {"kind": "always-cook"}, encoder=None
        )
        assert pipeline.retrieve("telescope", k=2).decision.chosen == ["cook"]
    finally:
        ROUTERS.unregister("always-cook")
    registry = Registry("widget", {"a": "json:dumps"})
    assert registry.get("a") is json.dumps
    with pytest.raises(UnknownKindError, match="unknown widget 'b': registered ones are a"):
        registry.get("b")


def test_every_existing_router_kind_builds_from_settings(tmp_path, hashing_encoder, small_docs):
    sources = _sources(hashing_encoder, small_docs)
    (tmp_path / "labels.jsonl").write_text(
        "\n".join(
            json.dumps({"text": t, "label": lab}) for t, lab in [("telescope", "astro"), ("bread", "cook")]
        )
    )
    settings = {
        "prototype": {},
        "centroid": {},
        "confidence": {},
        "knn": {"examples": "labels.jsonl"},
        "ensemble": {"members": ["prototype", "confidence"]},
        "llm": {"llm": "llama_index.core.llms.mock:MockLLM", "fallback": "prototype"},
        "fixed": {"routes": ["astro"]},
        "pilot": {"model": "pilot"},
        "quality": {"model": "quality"},
    }
    from ragroute.route.expert_gains import ExpertGains
    from ragroute.route.expert_quality import QualityRouter
    from ragroute.route.pilot import PilotRouter

    texts = ["telescope orbit", "bread oven", "printer vpn", "galaxy star"]
    gains = ExpertGains(
        ["astro", "cook", "it"],
        texts,
        hashing_encoder.encode_queries(texts),
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]],
    )
    PilotRouter.fit(gains, encoder=hashing_encoder).save(tmp_path / "pilot")
    QualityRouter.fit(gains, encoder=hashing_encoder).save(tmp_path / "quality")
    for kind, extra in settings.items():
        pipeline = pipeline_from_settings(
            sources, {"kind": kind, **extra}, encoder=hashing_encoder, base=tmp_path
        )
        result = pipeline.retrieve("telescope orbit galaxy", k=2)
        assert result.decision.chosen, kind
    assert set(settings) | {"trained"} == set(ROUTERS.names())


def test_hedging_costs_nothing_when_the_router_is_sure(hashing_encoder, small_docs):
    sources = _sources(hashing_encoder, small_docs)
    sure = FixedRouter({"astro": 0.7, "cook": 0.3, "it": 0.0})
    hedged = Pipeline(sources, sure, options=RoutingOptions(threshold=0.25, hedge_below=0.9))
    assert hedged.retrieve("telescope", k=3).decision.chosen == ["astro", "cook"]
    alone = Pipeline(sources, sure, options=RoutingOptions(threshold=0.25, hedge_below=0.6))
    assert alone.retrieve("telescope", k=3).decision.chosen == ["astro"]


def test_a_source_listed_twice_in_always_is_chosen_and_searched_once(hashing_encoder, small_docs):
    """``always: [it, it]`` chose ``it`` twice until session 56 (``chosen`` named it twice, and the
    source was searched with each query twice); from a ``router:`` mapping too."""
    sources = _sources(hashing_encoder, small_docs)
    router = FixedRouter({"astro": 0.9, "cook": 0.1, "it": 0.0})
    assert RoutingOptions(always=["it", "astro", "it"]).always == ("it", "astro")
    pipeline = Pipeline(sources, router, options=RoutingOptions(always=("it", "it")))
    result = pipeline.retrieve("telescope printer", k=3)
    assert result.decision.chosen == ["astro", "it"]
    timing = [s.detail for s in result.trace if s.stage == "retrieve-time"]
    assert timing[0]["sources"] == 2
    built = pipeline_from_settings(sources, {"kind": "fixed", "always": ["it", "it"]}, encoder=None)
    assert built.options.always == ("it",)


def test_a_filter_no_document_of_a_source_could_match_routes_past_it(hashing_encoder):
    """A filter key only one source's documents hold (``year``: tickets) went to the router's pick,
    whose documents have no year at all: nothing came back, and nothing said why."""
    tickets = [
        Document(f"t{i}", f"printer toner ticket {i}", metadata={"year": 2024 - i % 2}) for i in range(4)
    ]
    products = [
        Document(f"p{i}", f"printer toner cartridge {i}", metadata={"price": 10 + i}) for i in range(4)
    ]
    sources = [
        Source("products", build_index(products, "bm25", name="products")),
        Source("tickets", build_index(tickets, "bm25", name="tickets")),
        Source("web", SlowRetriever("web")),  # documents unknown: it might match
    ]
    pipeline = Pipeline(sources, FixedRouter({"products": 0.7, "tickets": 0.25, "web": 0.05}))
    result = pipeline.retrieve(QueryContext.of("printer toner", filters={"year": 2024}), k=5)
    assert result.decision.chosen == ["tickets"]
    assert result.decision.routes == pytest.approx({"tickets": 5 / 6, "web": 1 / 6})
    assert {h.doc_id for h in result.hits} == {"t0", "t2"}
    step = next(s.detail for s in result.decision.trace if s.stage == "filters")
    assert step["keys"] == ["year"] and step["sources_without"] == ["products"]
    # no filter, or one every source may match: the router's routes as they were
    assert pipeline.retrieve("printer toner", k=5).decision.chosen == ["products", "tickets"]
    plain = pipeline.retrieve(QueryContext.of("printer toner", filters={"modality": "text"}), k=5)
    assert plain.decision.chosen == ["products", "tickets"]
    assert not [s for s in plain.trace if s.stage == "filters"]
    # a source that gains documents with the key is routed to again
    sources[0].retriever.add([Document("p9", "printer toner cartridge 9", metadata={"year": 2024})])
    grown = pipeline.retrieve(QueryContext.of("printer toner", filters={"year": 2024}), k=5)
    assert grown.decision.chosen == ["products", "tickets"] and "p9" in [h.doc_id for h in grown.hits]
    # ... and so is one that swaps a document for one with the key, keeping its number of documents
    sources[0].retriever.delete(["p9"])
    assert pipeline.retrieve(
        QueryContext.of("printer toner", filters={"year": 2024}), k=5
    ).decision.chosen == ["tickets"]
    sources[0].retriever.delete(["p3"])
    sources[0].retriever.add([Document("p8", "printer toner cartridge 8", metadata={"year": 2024})])
    swapped = pipeline.retrieve(QueryContext.of("printer toner", filters={"year": 2024}), k=5)
    assert swapped.decision.chosen == ["products", "tickets"] and "p8" in [h.doc_id for h in swapped.hits]
    # a key no source holds, every source able to tell: refused in one line (test_filter_keys.py)
    fresh = [
        Source("products", build_index(products, "bm25", name="products")),
        Source("tickets", build_index(tickets, "bm25", name="tickets")),
    ]
    pipeline = Pipeline(fresh, FixedRouter({"products": 0.7, "tickets": 0.3}))
    with pytest.raises(InvalidArgumentError, match=r"metadata key 'colour' \(keys: price, year\)"):
        pipeline.retrieve(QueryContext.of("printer toner", filters={"colour": "red"}), k=5)
    # keys each held by some source, by none both: no routed source can match, none is searched
    split = pipeline.retrieve(QueryContext.of("printer toner", filters={"price": 10, "year": 2024}), k=5)
    assert split.decision.chosen == ["none"] and split.hits == []
    assert "none is searched" in next(s.detail for s in split.trace if s.stage == "filters")["reason"]


def test_every_registered_entry_resolves():
    from ragroute import registry

    registries = [value for value in vars(registry).values() if isinstance(value, Registry)]
    assert len(registries) == 11
    for reg in registries:
        for name in reg.names():
            assert reg.get(name) is not None, f"{reg.kind} {name}"


def test_contexts_with_different_filters_are_searched_per_filter_set(hashing_encoder, small_docs):
    from ragroute.index.base import search_contexts

    index = build_index(small_docs, "dense", encoder=hashing_encoder)
    contexts = [
        QueryContext("telescope bread printer", filters={"topic": "cook"}),
        QueryContext("telescope bread printer"),
        QueryContext("telescope bread printer", filters={"topic": "it"}),
    ]
    plain = SlowRetriever("plain")
    for results in (index.search_contexts(contexts, 5), search_contexts(index, contexts, 5)):
        assert {h.metadata["topic"] for h in results[0]} == {"cook"}
        assert {h.metadata["topic"] for h in results[2]} == {"it"}
        assert len({h.metadata["topic"] for h in results[1]}) > 1
    assert [hits[0].text for hits in search_contexts(plain, contexts, 5)] == [c.text for c in contexts]


def test_always_adds_routes_to_every_selection_that_retrieves(hashing_encoder, small_docs):
    sources = _sources(hashing_encoder, small_docs)
    router = FixedRouter({"astro": 0.7, "cook": 0.3, "it": 0.0})
    pipeline = pipeline_from_settings(
        sources, {"max_routes": 1, "always": ["it"], "fusion": "rrf"}, encoder=hashing_encoder, router=router
    )
    result = pipeline.retrieve("telescope", k=3)
    assert result.decision.chosen == ["astro", "it"]
    assert {h.source for h in result.hits} <= {"astro", "it"}
    nowhere = FixedRouter({"astro": 0.1, "none": 0.9})
    gated = pipeline_from_settings(sources, {"always": ["it"]}, encoder=hashing_encoder, router=nowhere)
    assert gated.retrieve("hello", k=3).decision.chosen == ["none"]
    with pytest.raises(RagrouteError, match="'always' names space, which is not a source"):
        pipeline_from_settings(sources, {"always": ["space"]}, encoder=hashing_encoder, router=router)
    with pytest.raises(RagrouteError, match="must be a list"):
        pipeline_from_settings(sources, {"always": "it"}, encoder=hashing_encoder, router=router)


class RankedRetriever:
    """Returns the documents ``order`` (best first, at most k); records the depth it is asked for."""

    def __init__(self, name: str, order: list[int]):
        self.name, self.order = name, order
        self.asked: list[int] = []

    def search_many(self, queries, k=10, *, filters=None):
        self.asked.append(k)
        return [
            [Hit(f"d{i}", 1.0 / r, self.name, rank=r) for r, i in enumerate(self.order[:k], 1)]
            for _ in queries
        ]


def test_sources_over_the_same_documents_are_read_deep_before_fusing():
    """Experts over one corpus: each list is read 100 deep, so a document 11th in both lists (RRF
    2 / 71) beats every document only one list holds (at best 1 / 61); sources over different
    documents are read to k, and an explicit ``depth`` wins."""
    from ragroute.pipeline.stages import SHARED_DOCUMENTS_DEPTH

    assert SHARED_DOCUMENTS_DEPTH == 100
    a = RankedRetriever("a", [*range(10), 99])
    b = RankedRetriever("b", [*range(10, 20), 99])
    shared = [Source(r.name, r, metadata={"corpus": "docs"}) for r in (a, b)]
    settings = {"threshold": 0.0, "fusion": "rrf"}
    router = FixedRouter({"a": 0.5, "b": 0.5})
    result = pipeline_from_settings(shared, settings, router=router, encoder=None).retrieve("q", k=3)
    assert a.asked == b.asked == [SHARED_DOCUMENTS_DEPTH]
    assert [h.doc_id for h in result.hits][0] == "d99"
    assert [s.detail["depth"] for s in result.trace if s.stage == "retrieve-time"] == [100]  # explained
    shallow = pipeline_from_settings(shared, {**settings, "depth": 10}, router=router, encoder=None).retrieve(
        "q", k=3
    )
    assert a.asked[-1] == 10 and "d99" not in [h.doc_id for h in shallow.hits]
    apart = [Source(r.name, r) for r in (RankedRetriever("a", [0]), RankedRetriever("b", [1]))]
    pipeline_from_settings(apart, settings, router=router, encoder=None).retrieve("q", k=3)
    assert [s.retriever.asked for s in apart] == [[3], [3]]


def test_rerank_step_names_the_backend_that_ran(hashing_encoder, small_docs):
    # docs/rerank.md: "`reranker.backend` and the trace say which ran" (auto picks per machine);
    # the trace's rerank step had only the reranker's name, pool size and time
    class BackendReranker:
        name = "cross-encoder"

        def __init__(self, backend):
            self.backend = backend

        def rerank(self, context, hits, k):
            return list(reversed(hits))[:k]

    source = Source("docs", build_index(small_docs, "bm25", name="docs"))
    for backend, expected in (("onnx-int8", {"backend": "onnx-int8"}), (None, {})):
        pipeline = pipeline_from_settings(
            [source], {"kind": "centroid"}, encoder=hashing_encoder, reranker=BackendReranker(backend)
        )
        step = pipeline.retrieve("telescope galaxy", k=2).trace[-1]
        assert step.stage == "rerank" and step.detail["in"] >= 2 and step.detail["out"] == 2
        assert {key: step.detail[key] for key in step.detail if key == "backend"} == expected


def test_ragroute_query_refuses_a_filter_key_no_document_holds_the_route_stage_routes_past_one(tmp_path):
    """`ragroute query` with a filter key no document holds warned and exited 0 with no hits; now
    the index refuses it (`error: ...`, exit 2, naming the key and the keys there are), while the
    route stage still routes past the sources lacking a key (absent_filter_keys) that another
    source holds, `modality` never among the keys said to be absent."""
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.index.io import save_index
    from ragroute.pipeline.stages import absent_filter_keys

    products = [
        Document(f"p{i}", f"printer toner cartridge {i}", metadata={"price": 10 + i}) for i in range(3)
    ]
    index = build_index(products, "bm25", name="products")
    save_index(index, tmp_path / "products")
    filters = {"zone": ["eu"], "colour": ["red"], "modality": ["text"], "price": [10]}
    args = ["query", str(tmp_path / "products"), "printer"]
    result = CliRunner().invoke(main, [*args, *(f"--filter={k}={v[0]}" for k, v in filters.items())])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: filters: no document has metadata key 'zone' (keys: price)"
    ok = CliRunner().invoke(main, [*args, "--filter=price=10"])
    assert ok.exit_code == 0 and "p0" in ok.output and "p1" not in ok.output
    tickets = [Document("t0", "printer toner ticket", metadata={"zone": "eu", "colour": "red"})]
    sources = [Source("products", index), Source("tickets", build_index(tickets, "bm25", name="tickets"))]
    pipeline = Pipeline(sources, FixedRouter({"products": 1.0, "tickets": 0.0}))
    decision = pipeline.retrieve(QueryContext.of("printer", filters=filters), k=3).decision
    step = next(s.detail for s in decision.trace if s.stage == "filters")
    assert step["keys"] == ["colour", "price", "zone"]
    assert step["sources_without"] == ["products", "tickets"] and decision.chosen == ["none"]
    assert absent_filter_keys(index.metadata_keys(), filters) == ["colour", "zone"]
    assert absent_filter_keys(None, filters) == []  # keys unknown: nothing said to be absent


def test_default_fusion_is_rrf_for_sources_over_the_same_documents_and_calibrated_otherwise(hashing_encoder):
    """Until session 36 the default was calibrated everywhere: over an expert set's lists (one
    collection) it kept each document's single best z-score, so the list with the smallest score
    spread mostly came back alone, and the other lists' ranks were missing from `explain`."""
    docs = [Document(f"d{i}", f"star telescope orbit {'comet ' * i}galaxy") for i in range(8)]
    dense = build_index(docs, "dense", encoder=hashing_encoder)
    bm25 = build_index(docs, "bm25")
    shared = [Source(n, r, metadata={"corpus": "space"}) for n, r in (("dense", dense), ("bm25", bm25))]
    both = FixedRouter({"dense": 0.5, "bm25": 0.5})
    result = Pipeline(shared, both).retrieve("comet comet galaxy", k=5)
    fuse = next(t.detail for t in result.decision.trace if t.stage == "fuse")
    assert fuse["method"] == "rrf" and fuse["auto"] == "rrf: two lists hold the same documents"
    assert all({"dense", "bm25"} <= set(hit.explain) for hit in result.hits)  # every list's rank
    rrf = Pipeline(shared, both, options=RoutingOptions(fusion="rrf"))
    expected = rrf.retrieve("comet comet galaxy", k=5)
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in expected.hits]
    apart = [Source("a", dense), Source("b", build_index(docs[:4], "dense", encoder=hashing_encoder))]
    result = Pipeline(apart, FixedRouter({"a": 0.5, "b": 0.5})).retrieve("comet comet galaxy", k=5)
    fuse = next(t.detail for t in result.decision.trace if t.stage == "fuse")
    assert fuse["method"] == "calibrated" and fuse["auto"].startswith("calibrated: every list")
    assert "route_probabilities" in fuse


def test_fusion_statistics_and_score_scales_are_fitted_again_after_a_large_change(hashing_encoder):
    """They were fitted once, whatever the indexes became after (docs/architecture.md said they
    followed the change); now again once a source's documents moved by more than a quarter."""
    from ragroute.index.build import build_index
    from ragroute.types import Document

    def docs(prefix, words, n, start=0):
        return [Document(id=f"{prefix}{i}", text=f"{words} w{i} n{i % 5}") for i in range(start, start + n)]

    stars = build_index(docs("s", "star comet orbit", 20), "bm25", name="stars")
    cakes = build_index(docs("c", "cake flour oven", 20), "dense", encoder=hashing_encoder, name="cakes")
    sources = [Source("stars", stars), Source("cakes", cakes)]
    pipeline = Pipeline(sources, FixedRouter({"stars": 0.5, "cakes": 0.5}), encoder=hashing_encoder)
    pipeline.retrieve("star cake", k=3)
    stats, scales = pipeline._fuse.stats, pipeline._fuse.scales
    stars.add(docs("s", "star comet orbit", 2, start=20))  # a tenth: kept
    pipeline.retrieve("star cake", k=3)
    assert pipeline._fuse.stats is stats and pipeline._fuse.scales is scales
    stars.add(docs("s", "nebula galaxy dust", 30, start=40))  # more than a quarter: fitted again
    after = pipeline.retrieve("star cake", k=3)
    fresh = Pipeline(sources, FixedRouter({"stars": 0.5, "cakes": 0.5}), encoder=hashing_encoder)
    assert pipeline._fuse.stats is not stats and pipeline._fuse.stats == fresh.calibrate()._fuse.stats
    expected = fresh.retrieve("star cake", k=3)
    assert [(h.doc_id, h.score) for h in after.hits] == [(h.doc_id, h.score) for h in expected.hits]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"max_routes": 0}, "'max_routes' must be at least 1, not 0"),
        ({"threshold": float("nan")}, "'threshold' must be a number, not nan"),
        ({"threshold": -0.1}, "'threshold' must be at least 0, not -0.1"),
        ({"hedge_below": 2}, "'hedge_below' must be at most 1, not 2"),
        ({"depth": 0}, "'depth' must be at least 1, not 0"),
        ({"max_routes": 2.5}, "'max_routes' must be an integer"),
        # a string was read one letter per source, [3] as a source named 3: each routed nowhere
        ({"always": "generalist"}, "'always' must be a list of source names"),
        ({"always": [3]}, "'always' must be a list of source names"),
        # a misspelt word read as the other choice: even weights, fusion scores
        ({"route_weights": "probabilities"}, "route_weights must be 'even' or 'probability'"),
        ({"scores": "similarities"}, "scores must be 'similarity' or 'fusion'"),
    ],
)
def test_routing_options_are_checked_as_a_configs_router_mapping_is(options, said):
    """RoutingOptions from Python are held to the rules of a routing config's router: mapping; until
    session 44 RoutingOptions(max_routes=0) built a pipeline that never retrieved anything, and a
    threshold of nan or below 0 was taken as given."""
    from ragroute.errors import RagrouteError

    with pytest.raises(RagrouteError, match="RoutingOptions: " + re.escape(said)):
        RoutingOptions(**options)
    assert RoutingOptions(depth=None, hedge_below=None).max_routes == 3  # None: the defaults


@pytest.mark.parametrize("fusion", ["rrf", "calibrated"])
def test_an_always_route_the_router_did_not_score_is_fused_as_its_trace_says(
    hashing_encoder, small_docs, fusion
):
    # until session 49 such a route read 0.0 in the trace and in `probability` weights (its hits,
    # searched for every query, sank below every other list's) while `calibrated` fused it as 1.0
    sources = _sources(hashing_encoder, small_docs)
    settings = {"max_routes": 1, "always": ["it"], "fusion": fusion, "route_weights": "probability"}
    pipeline = pipeline_from_settings(
        sources, settings, encoder=hashing_encoder, router=FixedRouter({"astro": 1.0})
    )
    result = pipeline.retrieve("telescope printer", k=6)
    assert result.decision.chosen == ["astro", "it"]
    fuse = next(s.detail for s in result.trace if s.stage == "fuse")
    used = fuse["weights"] if fusion == "rrf" else fuse["route_probabilities"]
    assert used == {"astro": 1.0, "it": 1.0}
    if fusion == "rrf":  # even weights interleave the two lists
        assert {h.source for h in result.hits} == {"astro", "it"}
    assert all(h.explain["route_probability"] == 1.0 for h in result.hits)


class _BarrierEncoder(HashingEncoder):
    """Records the texts it encodes; a call waits (up to half a second) for a second one to arrive,
    so two threads that both found a query's vector missing both encode it, whatever the timing."""

    def __init__(self):
        super().__init__()
        self.texts: list[str] = []
        self.barrier = threading.Barrier(2, timeout=0.5)

    def encode_queries(self, texts, **kwargs):
        self.texts.extend(texts)
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait()
        return super().encode_queries(texts, **kwargs)


def test_nested_pipelines_searched_in_threads_encode_a_query_once():
    from ragroute.route.fixed import FixedRoutes

    encoder = _BarrierEncoder()

    def nested(name, words):
        docs = [Document(id=f"{name}{i}", text=f"{word} thing") for i, word in enumerate(words)]
        index = build_index(docs, "dense", encoder=encoder, name=name)
        return Source(name, Pipeline([Source(f"{name}-docs", index)], FixedRoutes([f"{name}-docs"])))

    sources = [nested("n1", ["apple", "pear"]), nested("n2", ["car", "bus"])]
    outer = Pipeline(sources, FixedRoutes(["n1", "n2"]))
    encoder.texts.clear()
    result = outer.retrieve("plum train", 3)
    assert {hit.source for hit in result.hits} == {"n1", "n2"}
    assert encoder.texts == ["plum train"]  # encoded twice, once in each source's thread, before


def test_reranker_may_return_both_documents_of_one_id_from_a_nested_pipeline():
    from conftest import shared_id_pipeline

    from ragroute.route.fixed import FixedRoutes

    class Reversing:
        name = "reversing"

        def rerank(self, context, hits, k):
            return list(reversed(hits))[:k]

    inner = shared_id_pipeline(HashingEncoder())
    outer = Pipeline([Source("inner", inner)], FixedRoutes(["inner"]), reranker=Reversing())
    fused = Pipeline([Source("inner", inner)], FixedRoutes(["inner"])).retrieve("payroll salary", 4).hits
    result = outer.retrieve("payroll salary", 4)
    step = next(s for s in result.trace if s.stage == "rerank")
    assert "error" not in step.detail  # "returned 'H1' from 'inner' twice", the fused order kept
    shown = [(h.doc_id, h.explain["inner_source"]) for h in result.hits]
    assert shown == [(h.doc_id, h.explain["inner_source"]) for h in reversed(fused)]
    assert sorted(shown).count(("H1", "payroll")) == sorted(shown).count(("H1", "itpay")) == 1


def test_parents_reranker_keeps_two_inner_sources_documents_of_one_id():
    # until session 52 a nested pipeline's hits were collapsed by (outer source, id): the parents
    # reranker kept H1 of payroll and dropped H1 of itpay, another document
    from conftest import shared_id_pipeline

    from ragroute.rerank.parents import ParentsReranker
    from ragroute.route.fixed import FixedRoutes
    from ragroute.route.sources import granularity_views

    inner = shared_id_pipeline(HashingEncoder())
    outer = Pipeline([Source("inner", inner)], FixedRoutes(["inner"]), reranker=ParentsReranker())
    shown = sorted((h.doc_id, h.explain["inner_source"]) for h in outer.retrieve("payroll salary", 4).hits)
    assert shown == [("H1", "itpay"), ("H1", "payroll"), ("H2", "payroll"), ("H9", "itpay")]
    # two views of one corpus inside a nested pipeline still count as one document's hits
    docs = [Document(id="d", text="vpn password reset\n\nprinter toner")]
    docs += [Document(id="e", text="oven bread"), Document(id="f", text="cake flour")]
    views = granularity_views(
        "wiki", docs, ["document", "paragraph"], lambda u, n: build_index(u, "bm25", name=n)
    )
    nested = Pipeline(views, FixedRoutes([v.name for v in views]))
    outer = Pipeline([Source("kb", nested)], FixedRoutes(["kb"]), reranker=ParentsReranker())
    hits = outer.retrieve("vpn password", 5).hits
    assert [(h.parent_id or h.doc_id) for h in hits] == ["d"]
    assert hits[0].explain["collection"] == "kb/wiki"


def test_one_route_lists_a_document_its_source_repeats_once():
    from ragroute.route.fixed import FixedRoutes

    class Repeating:
        def search_many(self, queries, k=10, *, filters=None):
            listed = [Hit("a", 0.9, text="x"), Hit("a", 0.8, text="x"), Hit("b", 0.5, text="y")]
            return [list(listed) for _ in queries]

    class Kept:
        name = "kept"

        def rerank(self, context, hits, k):
            return hits[:k]

    alone = Pipeline([Source("rep", Repeating())], FixedRoutes(["rep"]))
    assert [h.doc_id for h in alone.retrieve("q", 3).hits] == ["a", "b"]  # a twice, as two routes never
    reranked = Pipeline([Source("rep", Repeating())], FixedRoutes(["rep"]), reranker=Kept()).retrieve("q", 3)
    assert [h.doc_id for h in reranked.hits] == ["a", "b"]
    assert "error" not in next(s for s in reranked.trace if s.stage == "rerank").detail


@pytest.mark.parametrize("max_workers", [-1, 0, "4", 2.5, True])
def test_max_workers_is_checked_when_the_pipeline_is_built(hashing_encoder, small_docs, max_workers):
    # until session 52 -1 or "4" built a pipeline whose every query of several sources came back
    # empty (each source "failed" with the thread pool's error, in the trace only)
    from ragroute.route.fixed import FixedRoutes

    sources = _sources(hashing_encoder, small_docs)
    with pytest.raises(InvalidArgumentError, match=r"^max_workers must be"):
        Pipeline(sources, FixedRoutes(["astro", "it"]), max_workers=max_workers)
    pipeline = Pipeline(sources, FixedRoutes(["astro", "it"]), max_workers=2)
    assert pipeline.retrieve("telescope printer", 4).hits
