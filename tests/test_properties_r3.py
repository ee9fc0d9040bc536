"""Property-based tests (hypothesis, deterministic), round 3: invariants of the query pipeline and
its wrappers (rounds 1 and 2, ``test_properties.py`` and ``test_properties_r2.py``, checked the
components).

* a rerank stage (a cross-encoder reranker whose model is a script of logits, and a plain reranker
  that only re-orders) returns a permutation of a prefix of the fused pool: no hit lost or
  repeated, at most ``k``, by probability with ties in stage-1 order, probabilities in [0, 1];
* ``scores: similarity``: a quantile map is monotone non-decreasing and finite; one mapped (BM25)
  route alone keeps the source's order, its scores non-increasing down the list, the source's own
  score in ``explain["fused"]``;
* a pipeline whose one route is an inner pipeline over one source returns the inner pipeline's
  ids, order and scores, each hit naming the inner source (``inner_source``);
* a gate: ``answer`` / ``stop`` searches no source and returns nothing (the trace says the gate
  decided), ``retrieve`` with a depth returns at most that many hits, a failing gate retrieves as
  if there were none;
* the LlamaIndex and LangChain routed retrievers return ``pipeline.retrieve``'s ids, order and
  scores for any query, ``k``, filters, scopes and caller; ``RagrouteRerank`` returns a permutation
  of a prefix of any node list;
* the step-wise controller (a ``ScriptedPlanner``): evidence is the steps' hits once each, in the
  documented interleaved order, ``retrieval_calls`` the steps that retrieved, never more steps
  than ``max_steps``;
* ``retrieve_many`` over contexts with different filters and scopes answers as ``retrieve`` one
  query at a time;
* every result's ranks are 1..n in order and ``json.dumps(result.to_dict())`` never fails, for
  documents with any unicode metadata.

The bugs they found have plain regression tests below (docstrings "until session 44").
``PROP_N`` (an environment variable) sets how many examples each property tries (25 by default).
"""

from __future__ import annotations

import json
import math
import os
import threading

import numpy as np
import pytest
from conftest import HashingEncoder, untimed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pipeline import FixedRouter

from ragroute.context import QueryContext
from ragroute.gate.controller import StepwiseController, interleave
from ragroute.gate.planners import ScriptedPlanner
from ragroute.index.build import build_index
from ragroute.pipeline import GateDecision, Pipeline, PipelineResult, RoutingOptions
from ragroute.pipeline.score_scale import fit_quantile_map
from ragroute.rerank.cross_encoder import Calibration, CrossEncoderReranker
from ragroute.route.sources import Source
from ragroute.types import Document, Hit

FAST = settings(
    max_examples=int(os.environ.get("PROP_N", "25")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

WORDS = [
    "telescope",
    "star",
    "orbit",
    "comet",
    "bread",
    "flour",
    "yeast",
    "oven",
    "printer",
    "laptop",
    "vpn",
    "email",
]
COLOURS = ("red", "blue", "green")


def _docs(prefix: str, n: int, seed: int, *, access: bool = False) -> list[Document]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        meta: dict = {"colour": COLOURS[i % 3]}
        if access and i % 4 == 0:
            meta["access"] = "hr"
        out.append(
            Document(f"{prefix}{i}", " ".join(rng.choice(WORDS, 8)), title=f"{prefix} {i}", metadata=meta)
        )
    return out


ENCODER = HashingEncoder()
DENSE = Source("dense", build_index(_docs("d", 24, 1, access=True), "dense", encoder=ENCODER, name="dense"))
BM25 = Source("bm25", build_index(_docs("b", 24, 2), "bm25", name="bm25"))
SECRET = Source(
    "secret", build_index(_docs("s", 12, 3), "dense", encoder=ENCODER, name="secret"), access=["hr"]
)
ALL = [DENSE, BM25, SECRET]
ROUTES = {"dense": 0.5, "bm25": 0.3, "secret": 0.2}
OPTIONS = RoutingOptions(threshold=0.1, max_routes=3)

queries = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)


def gate_scripts(*, max_depth: int, max_size: int) -> st.SearchStrategy:
    """Distinct queries, each with the gate action and depth (``None``: the caller's k) it gets."""
    return st.lists(
        st.tuples(
            queries,
            st.sampled_from(["retrieve", "answer", "stop"]),
            st.one_of(st.none(), st.integers(1, max_depth)),
        ),
        min_size=1,
        max_size=max_size,
        unique_by=lambda t: t[0],
    )
filters = st.one_of(st.none(), st.sampled_from(COLOURS).map(lambda c: {"colour": c}))
scopes = st.sampled_from([(), ("hr",)])


def _pipeline(**kwargs) -> Pipeline:
    return Pipeline(ALL, FixedRouter(ROUTES), encoder=ENCODER, options=OPTIONS, **kwargs)


PLAIN = _pipeline()


def _key(hit: Hit) -> tuple[str, str]:
    return (hit.source, hit.doc_id)


def _check_ranks(hits: list[Hit]) -> None:
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


# --------------------------------------------------------------------------- rerank


WITH_STAGE1 = Calibration(1.0, -0.5, 0.3, True, 0.2)
LOGIT_ONLY = Calibration(1.0, 0.0, 0.0, True, 0.0)  # ties of equal logits stay ties


def scripted_cross_encoder(
    logit_of: dict[str, float], candidates: int, calibration: Calibration = WITH_STAGE1
) -> CrossEncoderReranker:
    """A :class:`CrossEncoderReranker` whose model is a script: the logit of a candidate is
    ``logit_of`` its text's first word (0 for any other), through ``calibration``."""
    reranker = CrossEncoderReranker.__new__(CrossEncoderReranker)
    reranker.model_ref = "script"
    reranker.candidates = candidates
    reranker.batch_size = 4
    reranker.body = True
    reranker._lock = threading.Lock()
    reranker._scorer = lambda qs, texts: np.asarray(
        [logit_of.get(t.split(" | ", 1)[-1].split()[0], 0.0) for t in texts], dtype=np.float32
    )
    reranker.calibration = calibration
    reranker.info = {"name": "script", "backend": "script"}
    reranker.backend = "script"
    reranker.reading = {"title_words": False, "compact_bodies": False}
    reranker.stage1 = "documents"
    return reranker


class Reordering:
    """A plain reranker that only re-orders what it is handed (by text), cutting nothing."""

    name = "reordering"
    candidates = 12

    def rerank(self, context, hits, k):
        return sorted(hits, key=lambda h: h.text)


@FAST
@given(
    query=queries,
    k=st.integers(1, 15),
    candidates=st.integers(1, 20),
    logits=st.lists(st.integers(-2, 2), min_size=len(WORDS), max_size=len(WORDS)),
    scope=scopes,
    calibration=st.sampled_from([WITH_STAGE1, LOGIT_ONLY]),
)
def test_a_rerank_stage_returns_a_permutation_of_a_prefix_of_the_fused_pool(
    query, k, candidates, logits, scope, calibration
):
    reranker = scripted_cross_encoder(dict(zip(WORDS, map(float, logits))), candidates, calibration)
    result = _pipeline(reranker=reranker).retrieve(query, k, scopes=scope)
    pool = PLAIN.retrieve(query, max(k, candidates), scopes=scope).hits
    hits = result.hits
    keys = [_key(h) for h in hits]
    assert len(set(keys)) == len(keys) and len(hits) == min(k, len(pool))
    position = {_key(h): i for i, h in enumerate(pool)}
    assert set(keys) <= set(position)
    probs = [h.score for h in hits]
    assert all(0.0 <= p <= 1.0 for p in probs)
    # by probability, ties in stage-1 order; the best of the pool are kept
    assert [(-p, position[key]) for p, key in zip(probs, keys)] == sorted(
        (-p, position[key]) for p, key in zip(probs, keys)
    )
    for hit in hits:
        assert hit.explain["rerank"]["stage1_rank"] == position[_key(hit)] + 1
    _check_ranks(hits)
    json.dumps(result.to_dict())


@FAST
@given(query=queries, k=st.integers(1, 15), scope=scopes)
def test_a_reranker_that_only_reorders_still_returns_at_most_k_hits(query, k, scope):
    result = _pipeline(reranker=Reordering()).retrieve(query, k, scopes=scope)
    pool = PLAIN.retrieve(query, max(k, Reordering.candidates), scopes=scope).hits
    keys = [_key(h) for h in result.hits]
    assert len(set(keys)) == len(keys) and len(keys) == min(k, len(pool))
    assert set(keys) <= {_key(h) for h in pool}
    _check_ranks(result.hits)


# --------------------------------------------------------------------------- score scale


huge = st.sampled_from([-1.7e308, -9e307, 9e307, 1.7e308])


@settings(FAST, max_examples=FAST.max_examples * 16)  # cheap: no index, no pipeline
@given(
    raw=st.lists(st.one_of(st.floats(-1e6, 1e6), huge), min_size=2, max_size=40),
    cosine=st.lists(st.floats(-1, 1), min_size=2, max_size=40),
    probes=st.lists(
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), huge), min_size=1, max_size=20
    ),
)
def test_a_quantile_map_is_monotone_and_finite(raw, cosine, probes):
    n = min(len(raw), len(cosine))
    scale = fit_quantile_map(raw[:n], cosine[:n])
    values = sorted(probes + raw[:n])
    mapped = [scale.map(v) for v in values]
    assert all(math.isfinite(m) and -1.0 <= m <= 1.0 for m in mapped)
    assert all(a <= b + 1e-12 for a, b in zip(mapped, mapped[1:]))


@FAST
@given(query=queries, k=st.integers(1, 20), wanted=filters)
def test_one_mapped_route_keeps_the_sources_order_with_non_increasing_scores(query, k, wanted):
    pipeline = Pipeline([BM25], FixedRouter({"bm25": 1.0}), encoder=ENCODER)
    result = pipeline.retrieve(QueryContext.of(query, filters=wanted), k)
    own = BM25.retriever.search(query, k, filters=wanted)
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in own]
    assert [h.explain["fused"] for h in result.hits] == [h.score for h in own]
    scores = [h.score for h in result.hits]
    assert all(math.isfinite(s) for s in scores)
    assert all(a >= b for a, b in zip(scores, scores[1:]))
    if own:
        (step,) = [s for s in result.trace if s.stage == "scores"]
        assert step.detail["bm25"]["kind"] in ("mapped", "raw")


# --------------------------------------------------------------------------- nested pipelines


@FAST
@given(
    query=queries,
    k=st.integers(1, 15),
    wanted=filters,
    which=st.sampled_from(["dense", "bm25"]),
    rerank=st.booleans(),
)
def test_an_outer_pipeline_over_one_inner_pipeline_answers_as_the_inner_one(query, k, wanted, which, rerank):
    source = {"dense": DENSE, "bm25": BM25}[which]
    reranker = scripted_cross_encoder({"star": 2.0, "oven": 1.0}, 5) if rerank else None
    inner = Pipeline([source], FixedRouter({which: 1.0}), encoder=ENCODER, reranker=reranker)
    outer = Pipeline([Source("inner", inner)], FixedRouter({"inner": 1.0}), encoder=ENCODER)
    got = outer.retrieve(QueryContext.of(query, filters=wanted), k)
    want = inner.retrieve(QueryContext.of(query, filters=wanted), k)
    assert [h.doc_id for h in got.hits] == [h.doc_id for h in want.hits]
    if not rerank:  # the inner pipeline's cosines are passed on; its probabilities are mapped
        assert [h.score for h in got.hits] == pytest.approx([h.score for h in want.hits])
    scores = [h.score for h in got.hits]
    assert all(a >= b for a, b in zip(scores, scores[1:]))
    assert all(h.source == "inner" and h.explain["inner_source"] == which for h in got.hits)
    _check_ranks(got.hits)
    json.dumps(got.to_dict())


@FAST
@given(query=queries, k=st.integers(1, 15), wanted=filters, scope=scopes)
def test_a_scoped_nested_pipeline_answers_as_the_inner_one_and_names_nothing_hidden(query, k, wanted, scope):
    outer = Pipeline([Source("inner", PLAIN)], FixedRouter({"inner": 1.0}), encoder=ENCODER)
    got = outer.retrieve(QueryContext.of(query, filters=wanted, scopes=scope), k)
    want = PLAIN.retrieve(QueryContext.of(query, filters=wanted, scopes=scope), k)
    assert [(h.explain["inner_source"], h.doc_id) for h in got.hits] == [
        (h.source, h.doc_id) for h in want.hits
    ]
    assert [h.score for h in got.hits] == pytest.approx([h.score for h in want.hits])
    _check_ranks(got.hits)
    text = json.dumps(got.to_dict())
    if not scope:
        assert "secret" not in text and all("access" not in h.metadata for h in got.hits)


# --------------------------------------------------------------------------- gate


class ScriptGate:
    """Answers each query's action (and depth) from a script keyed by its text; raises if ``fail``."""

    name = "script"

    def __init__(self, script: dict[str, tuple[str, int | None]], fail: bool = False):
        self.script, self.fail = script, fail

    def gate_many(self, contexts):
        if self.fail:
            raise RuntimeError("gate down")
        return [GateDecision(self.script[c.text][0], 0.5, depth=self.script[c.text][1]) for c in contexts]


@FAST
@given(
    batch=gate_scripts(max_depth=6, max_size=5),
    k=st.integers(1, 12),
    fail=st.booleans(),
)
def test_a_gate_answering_searches_nothing_and_a_depth_caps_the_hits(batch, k, fail):
    gate = ScriptGate({q: (a, d) for q, a, d in batch}, fail=fail)
    results = _pipeline(gate=gate).retrieve_many([q for q, _, _ in batch], k)
    for (query, action, depth), result in zip(batch, results):
        stages = [s.stage for s in result.trace]
        assert stages[0] == "gate"
        if fail:
            assert "error" in result.trace[0].detail
            assert [h.doc_id for h in result.hits] == [h.doc_id for h in PLAIN.retrieve(query, k).hits]
        elif action != "retrieve":
            searched = [s.detail for s in result.trace if s.stage == "retrieve"]
            assert result.hits == [] and searched == [{"sources": [], "reason": "no retrieval"}]
            assert result.trace[0].detail["action"] == action
            assert result.decision.chosen == ["none"] and result.decision.decided_by == "gate:script"
        else:
            assert len(result.hits) <= (depth or k)
            assert [h.doc_id for h in result.hits] == [
                h.doc_id for h in PLAIN.retrieve(query, depth or k).hits
            ]
        _check_ranks(result.hits)
        json.dumps(result.to_dict())


# --------------------------------------------------------------------------- integrations


@FAST
@given(query=queries, k=st.integers(1, 12), wanted=filters, scope=scopes, caller=st.sampled_from(["", "ann"]))
def test_the_framework_retrievers_return_what_the_pipeline_returns(query, k, wanted, scope, caller):
    from ragroute.integrations.langchain import RoutedLangChainRetriever
    from ragroute.integrations.llamaindex import RoutedLlamaRetriever

    want = PLAIN.retrieve(QueryContext.of(query, filters=wanted, scopes=scope, caller=caller), k).hits
    ids = [f"{h.source}:{h.doc_id}" for h in want]
    llama = RoutedLlamaRetriever(PLAIN, similarity_top_k=k, filters=wanted, scopes=scope, caller=caller)
    nodes = llama.retrieve(query)
    assert [n.node.node_id for n in nodes] == ids
    assert [n.score for n in nodes] == [h.score for h in want]
    twin = RoutedLlamaRetriever(PLAIN, similarity_top_k=k, filters=wanted).with_scopes(scope, caller=caller)
    assert [(n.node.node_id, n.score) for n in twin.retrieve(query)] == [
        (n.node.node_id, n.score) for n in nodes
    ]
    chain = RoutedLangChainRetriever(PLAIN, k=k)
    documents = chain.invoke(query, k=k, filters=wanted, scopes=scope, caller=caller)
    assert [d.id for d in documents] == ids
    assert [d.metadata["score"] for d in documents] == [h.score for h in want]
    other = "bread " + query
    both = chain.batch([other, query], k=k, filters=wanted, scopes=scope, caller=caller)
    assert [d.id for d in both[1]] == ids
    assert [d.id for d in both[0]] == [
        f"{h.source}:{h.doc_id}"
        for h in PLAIN.retrieve(QueryContext.of(other, filters=wanted, scopes=scope, caller=caller), k).hits
    ]


HYBRID = Source("hybrid", build_index(_docs("h", 24, 4), "hybrid", encoder=ENCODER, name="hybrid"))


@FAST
@given(
    query=queries, k=st.integers(1, 12), wanted=filters, which=st.sampled_from(["dense", "bm25", "hybrid"])
)
def test_the_index_retrievers_score_as_a_pipeline_over_that_index_alone(query, k, wanted, which):
    from ragroute.integrations.langchain import IndexLangChainRetriever
    from ragroute.integrations.llamaindex import IndexLlamaRetriever

    source = {"dense": DENSE, "bm25": BM25, "hybrid": HYBRID}[which]
    encoder = None if which == "bm25" else ENCODER
    alone = Pipeline([source], FixedRouter({which: 1.0}), encoder=encoder)
    want = alone.retrieve(QueryContext.of(query, filters=wanted), k).hits
    (own,) = source.retriever.search_contexts([QueryContext.of(query, filters=wanted)], k)  # public only
    assert [h.doc_id for h in want] == [h.doc_id for h in own]
    nodes = IndexLlamaRetriever(source.retriever, similarity_top_k=k, filters=wanted).retrieve(query)
    assert [n.node.metadata["doc_id"] for n in nodes] == [h.doc_id for h in own]
    assert [n.score for n in nodes] == pytest.approx([h.score for h in want])
    documents = IndexLangChainRetriever(source.retriever, k=k, filters=wanted).invoke(query)
    assert [d.metadata["doc_id"] for d in documents] == [h.doc_id for h in own]
    assert [d.metadata["score"] for d in documents] == pytest.approx([h.score for h in want])


@FAST
@given(
    n=st.integers(1, 12),
    top_n=st.integers(1, 12),
    logits=st.lists(st.integers(-2, 2), min_size=len(WORDS), max_size=len(WORDS)),
    scored=st.sampled_from(["sorted", "tied", "unsorted", "none"]),
)
def test_the_llamaindex_postprocessor_returns_a_permutation_of_a_prefix(n, top_n, logits, scored):
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragroute.integrations.llamaindex_rerank import RagrouteRerank

    score_of = {
        "sorted": lambda i: 1.0 - i / 20,
        "tied": lambda i: 0.5,
        "unsorted": lambda i: float((i * 7) % 5),
        "none": lambda i: None,
    }[scored]
    nodes = [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=f"{WORDS[i % len(WORDS)]} text {i}"), score=score_of(i))
        for i in range(n)
    ]
    reranker = scripted_cross_encoder(dict(zip(WORDS, map(float, logits))), 3)
    out = RagrouteRerank(reranker, top_n=top_n).postprocess_nodes(nodes, query_str="which one")
    ids = [o.node.node_id for o in out]
    assert len(ids) == len(set(ids)) == min(n, top_n) and set(ids) <= {f"n{i}" for i in range(n)}
    assert all(0.0 <= o.score <= 1.0 for o in out)
    assert [n.node.metadata for n in nodes] == [{}] * n  # the caller's nodes are left as they were


# --------------------------------------------------------------------------- step-wise


@FAST
@given(
    steps=st.lists(queries, min_size=0, max_size=5),
    max_steps=st.integers(1, 4),
    k=st.integers(1, 6),
    gated=st.booleans(),
)
def test_stepwise_evidence_is_the_steps_hits_once_each_in_interleaved_order(steps, max_steps, k, gated):
    script = {q: ("answer" if i % 2 else "retrieve", None) for i, q in enumerate(steps)}
    gate = ScriptGate(script) if gated else None
    controller = StepwiseController(
        ScriptedPlanner(steps, answer="done"), PLAIN, gate=gate, max_steps=max_steps, k=k
    )
    result = controller.run("root question")
    assert len(result.steps) <= max_steps
    assert result.retrieval_calls == sum(1 for s in result.steps if s.action == "retrieve")
    evidence = result.evidence()
    keys = [(h.source, h.parent_id or h.doc_id) for h in evidence]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(h.source, h.parent_id or h.doc_id) for s in result.steps for h in s.hits}
    assert evidence == interleave([s.hits for s in result.steps])
    for step in result.steps:
        assert len(step.hits) <= k
        assert [h.doc_id for h in step.hits] == (
            [h.doc_id for h in PLAIN.retrieve(step.question, k).hits] if step.action == "retrieve" else []
        )
    json.dumps(result.to_dict())


# --------------------------------------------------------------------------- batches, ranks, JSON


@FAST
@given(
    batch=st.lists(
        st.tuples(queries, filters, scopes, st.sampled_from(["", "ann", "bob"])), min_size=1, max_size=6
    ),
    k=st.integers(1, 12),
)
def test_retrieve_many_with_mixed_filters_and_scopes_answers_as_retrieve(batch, k):
    contexts = [QueryContext.of(q, filters=f, scopes=s, caller=c) for q, f, s, c in batch]
    together = PLAIN.retrieve_contexts(contexts, k)
    for (q, f, s, c), result in zip(batch, together):
        alone = PLAIN.retrieve(QueryContext.of(q, filters=f, scopes=s, caller=c), k)
        assert [(h.source, h.doc_id, h.score) for h in result.hits] == [
            (h.source, h.doc_id, h.score) for h in alone.hits
        ]
        assert result.decision.chosen == alone.decision.chosen
        _check_ranks(result.hits)


numpy_values = st.one_of(
    st.integers(-5, 5).map(np.int64),
    st.floats(-1e3, 1e3).map(np.float32),
    st.booleans().map(np.bool_),
    st.lists(st.integers(-5, 5), max_size=3).map(np.asarray),
    st.lists(st.integers(-5, 5), max_size=3).map(tuple),
)
meta_values = st.recursive(
    st.one_of(
        st.text(max_size=8),
        st.integers(-5, 5),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
        numpy_values,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@FAST
@given(
    metas=st.lists(
        st.dictionaries(st.text(min_size=1, max_size=6), meta_values, max_size=3), min_size=2, max_size=6
    ),
    titles=st.lists(st.text(max_size=10), min_size=6, max_size=6),
    query=queries,
    k=st.integers(1, 8),
)
def test_results_rank_one_to_n_and_always_write_as_json(metas, titles, query, k):
    docs = [
        Document(
            f"u{i}", f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]}", title=titles[i], metadata=m
        )
        for i, m in enumerate(metas)
    ]
    sources = [
        Source("u", build_index(docs, "dense", encoder=ENCODER, name="u")),
        Source("v", build_index(docs, "bm25", name="v")),
    ]
    for reranker in (None, scripted_cross_encoder({}, 5)):
        pipeline = Pipeline(
            sources, FixedRouter({"u": 0.6, "v": 0.4}), encoder=ENCODER, options=OPTIONS, reranker=reranker
        )
        result = pipeline.retrieve(query, k)
        _check_ranks(result.hits)
        written = result.to_dict()
        text = json.dumps(written)
        again = PipelineResult.from_dict(json.loads(text))
        assert again.to_dict() == written  # the documented round trip: the same dict
        assert [h.doc_id for h in again.hits] == [h.doc_id for h in result.hits]


SHARED = [
    Source("one", DENSE.retriever, metadata={"corpus": "d"}),
    Source("two", DENSE.retriever, metadata={"corpus": "d"}),
    BM25,
    SECRET,
]


@FAST
@given(
    batch=st.lists(
        st.tuples(
            queries,
            filters,
            scopes,
            st.sampled_from(["retrieve", "answer"]),
            st.one_of(st.none(), st.integers(1, 6)),
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda t: t[0],
    ),
    k=st.integers(1, 12),
    rerank=st.booleans(),
    shared=st.booleans(),
)
def test_a_gated_reranked_batch_answers_as_each_query_alone(batch, k, rerank, shared):
    """Mixed filters, scopes, gate actions and depths in one batch, with a reranker and sources over
    the same documents: each query answers as it does alone."""
    sources = SHARED if shared else ALL
    routes = {s.name: 1.0 / len(sources) for s in sources}
    gate = ScriptGate({q: (a, d) for q, _, _, a, d in batch})
    reranker = scripted_cross_encoder({"star": 2.0, "bread": 1.0, "vpn": -1.0}, 6) if rerank else None
    pipeline = Pipeline(
        sources, FixedRouter(routes), encoder=ENCODER, options=OPTIONS, gate=gate, reranker=reranker
    )
    contexts = [QueryContext.of(q, filters=f, scopes=s) for q, f, s, _, _ in batch]
    together = pipeline.retrieve_contexts(contexts, k)
    for (q, f, s, action, depth), result in zip(batch, together):
        alone = pipeline.retrieve(QueryContext.of(q, filters=f, scopes=s), k)
        assert [(h.source, h.doc_id, h.score) for h in result.hits] == [
            (h.source, h.doc_id, h.score) for h in alone.hits
        ]
        keys = [_key(h) for h in result.hits]
        assert len(keys) == len(set(keys)) and len(keys) <= (depth or k)
        if action == "answer":
            assert keys == []
        _check_ranks(result.hits)
        json.dumps(result.to_dict())


class HashRouter(FixedRouter):
    """Routes each query by probabilities drawn from its text (queries choose different sources)."""

    def route_many(self, queries, *, query_vectors=None):
        from ragroute.route.base import decision_from_probs

        out = []
        for q in queries:
            raw = [1 + sum(map(ord, f"{q}|{name}")) * 7919 % 97 for name in self.labels]
            out.append(decision_from_probs(self.labels, [r / sum(raw) for r in raw], decided_by=self.name))
        return out


NESTED = Source("nested", Pipeline([DENSE, BM25], HashRouter({"dense": 1, "bm25": 1}), encoder=ENCODER))
MIXED = [*SHARED, NESTED]


@FAST
@given(
    batch=st.lists(
        st.tuples(
            queries, filters, scopes, st.sampled_from(["retrieve", "answer"]), st.sampled_from([None, 2])
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda t: t[0],
    ),
    repeat=st.lists(st.integers(0, 5), max_size=3),
    k=st.integers(1, 12),
    scores=st.sampled_from(["similarity", "fusion"]),
)
def test_every_query_of_a_batch_gets_its_hits_and_trace_alone(batch, repeat, k, scores):
    """Queries routed to different sources (two over one collection, a nested pipeline), with mixed
    filters, scopes, gate actions and depths, some asked twice: each query's hits (every field) and
    decision (apart from timings) are those it gets alone. Until session 49 the source a fused hit
    named, and the order of the ``retrieve`` steps, followed the other queries' choices."""
    batch = batch + [batch[i] for i in repeat if i < len(batch)]
    gate = ScriptGate({q: (a, d) for q, _, _, a, d in batch})
    options = RoutingOptions(threshold=0.1, max_routes=4, scores=scores)
    router = HashRouter({s.name: 1 for s in MIXED})
    pipeline = Pipeline(MIXED, router, encoder=ENCODER, options=options, gate=gate)
    contexts = [QueryContext.of(q, filters=f, scopes=s) for q, f, s, _, _ in batch]
    together = pipeline.retrieve_contexts(contexts, k)
    for (q, f, s, _, _), result in zip(batch, together):
        alone = pipeline.retrieve(QueryContext.of(q, filters=f, scopes=s), k)
        assert [h.to_dict() for h in result.hits] == [h.to_dict() for h in alone.hits]
        assert untimed(result.decision.to_dict()) == untimed(alone.decision.to_dict())
        _check_ranks(result.hits)


@FAST
@given(
    steps=gate_scripts(max_depth=4, max_size=4),
    k=st.integers(1, 6),
)
def test_stepwise_over_a_gated_pipeline_follows_the_pipelines_gate(steps, k):
    gated = _pipeline(gate=ScriptGate({q: (a, d) for q, a, d in steps}))
    controller = StepwiseController(
        ScriptedPlanner([q for q, _, _ in steps], answer="done"), gated, max_steps=4, k=k
    )
    result = controller.run("root question")
    expected = []
    for q, action, depth in steps:
        if action == "stop":
            break
        expected.append((q, action, depth))
    assert [(s.question, s.action) for s in result.steps] == [(q, a) for q, a, _ in expected]
    assert result.stopped_by == ("gate" if len(expected) < len(steps) else "planner")
    assert result.retrieval_calls == sum(1 for _, a, _ in expected if a == "retrieve")
    for step, (q, action, depth) in zip(result.steps, expected):
        if action == "retrieve":
            assert [h.doc_id for h in step.hits] == [h.doc_id for h in PLAIN.retrieve(q, depth or k).hits]
        else:
            assert step.hits == []
    assert result.evidence() == interleave([s.hits for s in result.steps])
    json.dumps(result.to_dict())


# --------------------------------------------------------------------------- regression tests


def test_a_reranker_that_only_reorders_is_cut_at_k():
    """Until session 44 a reranker returning its whole pool re-ordered (cutting nothing, as the
    ``Reranker`` protocol allows) made ``retrieve(q, k=1)`` return ``candidates`` hits (12 here)."""
    result = _pipeline(reranker=Reordering()).retrieve("telescope", 1)
    assert len(result.hits) == 1 and result.hits[0].rank == 1
    (step,) = [s.detail for s in result.trace if s.stage == "rerank"]
    assert step["in"] == 12 and step["out"] == 1


def test_a_quantile_map_of_scores_near_the_float_range_stays_finite_and_monotone():
    """Until session 44 differences of raw scores near the float range overflowed: a flat map
    (every raw score -1.7e308) gave 0 * inf = NaN for a score above it, and quantiles of +-1.7e308
    gave an infinite knot and NaN between knots."""
    flat = fit_quantile_map([-1.7e308, -1.7e308], [0.0, 0.0])
    assert flat.map(9.769313486231587e306) == 0.0
    spread = fit_quantile_map([-1.7e308, 1.7e308] * 6, [0.1, 0.9] * 6)
    assert all(math.isfinite(v) for v in spread.raw_knots)
    values = [-1.7e308, -1e308, -1.0, 0.0, 1.0, 1e308, 1.7e308]
    mapped = [spread.map(v) for v in values]
    assert all(math.isfinite(m) for m in mapped) and mapped == sorted(mapped)
    assert mapped[0] == pytest.approx(0.1) and mapped[-1] == pytest.approx(0.9)
    # scores of ordinary size map as before (knots and slope unchanged)
    ordinary = fit_quantile_map([0.0, 1.0, 2.0, 3.0] * 3, [0.1, 0.2, 0.4, 0.8] * 3)
    assert ordinary.map(1.5) == pytest.approx(0.3) and ordinary.raw_knots[0] == 0.0


def test_a_result_with_numpy_or_tuple_metadata_writes_as_json_and_reads_back_the_same():
    """Until session 44 ``Hit.to_dict`` handed numpy metadata on as it was (documents may hold it:
    ``json.dumps(result.to_dict())`` raised ``Object of type int64 is not JSON serializable``), and
    a tuple came back from JSON a list: ``from_dict`` gave another dict than the one written."""
    docs = [
        Document("u0", "telescope star", metadata={"n": np.int64(3), "x": np.float32(1.5), "t": (1, 2)}),
        Document(
            "u1", "bread oven", metadata={"flag": np.bool_(True), "v": np.arange(2), "l": [np.int64(4)]}
        ),
    ]
    source = Source("u", build_index(docs, "dense", encoder=ENCODER, name="u"))
    result = Pipeline([source], FixedRouter({"u": 1.0}), encoder=ENCODER).retrieve("telescope", 2)
    written = result.to_dict()
    assert [h["metadata"] for h in written["hits"]] == [
        {"n": 3, "x": 1.5, "t": [1, 2]},
        {"flag": True, "v": [0, 1], "l": [4]},
    ]
    assert PipelineResult.from_dict(json.loads(json.dumps(written))).to_dict() == written
    assert isinstance(result.hits[0].metadata["n"], np.int64)  # the hit itself is left as it was
