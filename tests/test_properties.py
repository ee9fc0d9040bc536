"""Property-based tests (hypothesis, deterministic) of core invariants:

* a BM25 index after any sequence of adds and deletes answers exactly (ids, scores, tie order) as a
  fresh build over the documents left, and its scores are rank-bm25's ``BM25Okapi``'s;
* a flat dense index with a metadata filter answers as a numpy brute force over the documents the
  filter keeps (documents added first first among equal scores), for any ``k``, after adds and
  deletes and after a save / load round trip;
* a hybrid index after adds and deletes answers as a fresh build over the documents left;
* ``value_matches`` and ``DocumentStore.filter_mask`` agree with a plain reading of the documented
  filter semantics;
* ``select_routes`` / ``top_route`` / ``decision_from_probs`` keep their documented invariants;
* ``pool_zscores`` is finite and order preserving, and a calibration's probability is monotone in
  the logit;
* the kept BM25 term counts after adds and deletes are ``count_terms``'s for the documents left;
* personalized PageRank (power iteration and push) equals ``networkx.pagerank`` with the same
  personalization and damping (dangling nodes, zero-weight edges and self-loops included);
* every registered fusion method keeps every input document once, with finite scores in order,
  the same whatever the order of the sources;
* filters answer alike on metadata as added and as saved and loaded again.

``PROP_N`` (an environment variable) sets how many examples each property tries (60 by default).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import HashingEncoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragroute.errors import InvalidArgumentError
from ragroute.index.bm25_tokenize import tokenize_many
from ragroute.index.dense import DenseIndex
from ragroute.index.docstore import DocumentStore, value_matches
from ragroute.index.hybrid import HybridIndex
from ragroute.index.lexical import BM25Index
from ragroute.types import Document

FAST = settings(
    max_examples=int(__import__("os").environ.get("PROP_N", "60")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)

WORDS = ["apple", "berry", "cherry", "delta", "echo", "fox", "golf", "the", "and"]

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
colours = st.one_of(st.none(), st.sampled_from(["red", "blue", "green"]))


@st.composite
def corpora(draw, min_size=1, max_size=10):
    """Documents with short texts over a small vocabulary (many ties; sometimes only a few distinct
    texts, so that runs of equal scores cross any cut) and a ``colour`` metadata."""
    n = draw(st.integers(min_size, max_size))
    docs = []
    pool = draw(st.one_of(st.just(texts), st.lists(texts, min_size=1, max_size=3).map(st.sampled_from)))
    for i in range(n):
        meta = {}
        colour = draw(st.one_of(colours, st.just("missing")))
        if colour != "missing":
            meta["colour"] = colour
        docs.append(Document(id=f"d{i}", text=draw(pool), metadata=meta))
    return docs


@st.composite
def edit_scripts(draw, max_size=8):
    """Initial documents, then a few adds (new ids, possibly a deleted one again) and deletes."""
    docs = draw(corpora(1, max_size))
    pool = st.sampled_from([d.text for d in docs]) | texts  # new documents often repeat old texts
    steps = []
    alive = [d.id for d in docs]
    next_id = len(docs)
    deleted: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        if alive and draw(st.booleans()):
            drop = draw(st.lists(st.sampled_from(alive), min_size=1, max_size=len(alive), unique=True))
            alive = [a for a in alive if a not in drop]
            deleted += drop
            steps.append(("delete", drop))
        else:
            new = []
            for _ in range(draw(st.integers(1, 3))):
                if deleted and draw(st.booleans()):
                    doc_id = deleted.pop()
                else:
                    doc_id = f"d{next_id}"
                    next_id += 1
                meta = {"colour": draw(colours)}
                new.append(Document(id=doc_id, text=draw(pool), metadata=meta))
            alive += [d.id for d in new]
            steps.append(("add", new))
    return docs, steps


def replay(index, docs, steps) -> list[Document]:
    """Apply the edit script; return the documents left, in store order."""
    current = list(docs)
    for kind, arg in steps:
        if kind == "delete":
            index.delete(arg)
            current = [d for d in current if d.id not in set(arg)]
        else:
            index.add(arg)
            current += arg
    return current


def answers(index, queries, k, filters=None):
    return [[(h.doc_id, h.score) for h in hits] for hits in index.search_many(queries, k, filters=filters)]


queries = st.lists(texts, min_size=1, max_size=3)


# ------------------------------------------------------------------------------------------- BM25
@FAST
@given(script=edit_scripts(), qs=queries, k=st.integers(1, 12), use_filter=st.booleans())
def test_bm25_after_adds_and_deletes_equals_a_fresh_build(tmp_path_factory, script, qs, k, use_filter):
    from ragroute.index.io import load_index, save_index

    docs, steps = script
    index = BM25Index.build(docs)
    left = replay(index, docs, steps)
    assert [d.id for d in index.store.documents] == [d.id for d in left]
    folder = tmp_path_factory.mktemp("bm25")
    save_index(index, folder)
    loaded = load_index(folder)
    if not left:
        assert answers(index, qs, k) == answers(loaded, qs, k) == [[] for _ in qs]
        return
    filters = colour_filter_of(left, "red") if use_filter else None
    expected = answers(BM25Index.build(left), qs, k, filters)
    assert answers(index, qs, k, filters) == expected
    assert answers(loaded, qs, k, filters) == expected


@FAST
@given(script=edit_scripts())
def test_kept_term_counts_after_adds_and_deletes_equal_counting_the_documents_left(script):
    """What the exact refit rests on: the counts updated by removal and merge are :func:`count_terms`'s
    for the documents left (vocabulary in first-occurrence order, frequencies, lengths)."""
    from ragroute.index.bm25_counts import count_terms

    docs, steps = script
    index = BM25Index.build(docs)
    left = replay(index, docs, steps)
    if not left:
        return
    counts = index._term_counts()
    fresh = count_terms(tokenize_many([d.full_text() for d in left], index.params.tokenizer))
    assert counts.terms == fresh.terms
    assert counts.doc_len.tolist() == fresh.doc_len.tolist()
    assert (counts.matrix.toarray() == fresh.matrix.toarray()).all()


#: the scorer's query-time tuning, set so each of its top-k paths runs on small corpora
TUNINGS = {
    "default": {},
    "every path small": {"_SMALL_POOL": 0, "_SORT_ALL": 0, "_BOUND_SAMPLE": 1, "_DENSE_DF_FRACTION": 0.0},
    "bound from samples": {"_SMALL_POOL": 0, "_BOUND_SAMPLE": 1},
}


@pytest.mark.parametrize("tuning", TUNINGS)
@FAST
@given(docs=corpora(1, 30), qs=queries, k=st.integers(1, 12), use_filter=st.booleans())
def test_bm25_scores_are_rank_bm25s(monkeypatch, tuning, docs, qs, k, use_filter):
    from rank_bm25 import BM25Okapi

    from ragroute.index import bm25_scoring

    for name, value in TUNINGS[tuning].items():
        monkeypatch.setattr(bm25_scoring, name, value)
    index = BM25Index.build(docs)
    tokenizer = index.params.tokenizer
    corpus = tokenize_many([d.full_text() for d in docs], tokenizer)
    filters = colour_filter_of(docs, "red") if use_filter else None
    allowed = [filters is None or d.metadata.get("colour") == "red" for d in docs]
    if not any(corpus):  # no term at all (rank-bm25 divides by its empty vocabulary)
        assert answers(index, qs, k, filters) == [[] for _ in qs]
        return
    okapi = BM25Okapi(corpus)
    for query, hits in zip(qs, index.search_many(qs, k, filters=filters)):
        expected = okapi.get_scores(tokenize_many([query], tokenizer)[0])
        # documents holding a query term and scoring other than 0, best first, first added first
        ranked = sorted(
            (i for i, s in enumerate(expected) if s != 0.0 and allowed[i]), key=lambda i: (-expected[i], i)
        )
        got = [(h.doc_id, h.score) for h in hits]
        assert len(got) == min(k, len(ranked))
        for (doc_id, score), i in zip(got, ranked):
            assert allowed[int(doc_id[1:])]
            assert score == pytest.approx(expected[int(doc_id[1:])], abs=1e-9)
            assert score == pytest.approx(expected[i], abs=1e-9)  # a tie may reorder in the last bits


# ------------------------------------------------------------------------------------------ dense
def brute_force(encoder, docs, query, k, colour_filter):
    """The flat index's documented answer: cosine, best first, the document added first first."""
    kept = [
        (i, d)
        for i, d in enumerate(docs)
        if colour_filter is None or value_matches(d.metadata.get("colour"), colour_filter)
    ]
    if not kept:
        return []
    vectors = encoder.encode_documents([d.full_text() for _, d in kept]).astype(np.float32)
    q = encoder.encode_queries([query]).astype(np.float32)[0]
    scores = vectors @ q
    order = sorted(range(len(kept)), key=lambda j: (-float(scores[j]), kept[j][0]))[:k]
    return [(kept[j][1].id, float(scores[j])) for j in order]


def assert_same_hits(got, expected):
    assert [doc_id for doc_id, _ in got] == [doc_id for doc_id, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        assert a == pytest.approx(b, abs=1e-5)


colour_filters = st.one_of(st.none(), colours, st.lists(colours, min_size=1, max_size=2))


def colour_filter_of(docs, wanted):
    """The filters mapping (None when unfiltered or when no document carries the key: refused)."""
    if wanted is None or not any("colour" in d.metadata for d in docs):
        return None
    return {"colour": wanted}


@FAST
@given(script=edit_scripts(25), query=texts, k=st.integers(1, 14), wanted=colour_filters)
def test_flat_dense_with_a_filter_equals_brute_force_after_edits_and_a_reload(
    tmp_path_factory, script, query, k, wanted
):
    from ragroute.index.io import load_index, save_index

    encoder = HashingEncoder(dim=16)  # few dimensions: many equal scores
    docs, steps = script
    index = DenseIndex.build(docs, encoder)
    left = replay(index, docs, steps)
    if not left:
        assert index.search(query, k) == []
        return
    filters = colour_filter_of(left, wanted)
    expected = brute_force(encoder, left, query, k, None if filters is None else wanted)
    assert_same_hits(answers(index, [query], k, filters)[0], expected)
    folder = tmp_path_factory.mktemp("dense")
    save_index(index, folder)
    loaded = load_index(folder, encoder)
    assert_same_hits(answers(loaded, [query], k, filters)[0], expected)


@FAST
@given(script=edit_scripts(25), qs=queries, k=st.integers(1, 14), wanted=colour_filters)
def test_hybrid_after_adds_and_deletes_equals_a_fresh_build(tmp_path_factory, script, qs, k, wanted):
    from ragroute.index.io import load_index, save_index

    encoder = HashingEncoder(dim=16)
    docs, steps = script
    index = HybridIndex.build(docs, encoder)
    left = replay(index, docs, steps)
    if not left:
        assert answers(index, qs, k) == [[] for _ in qs]
        return
    filters = colour_filter_of(left, wanted)
    fresh = answers(HybridIndex.build(left, encoder), qs, k, filters)
    folder = tmp_path_factory.mktemp("hybrid")
    save_index(index, folder)
    for got in (answers(index, qs, k, filters), answers(load_index(folder, encoder), qs, k, filters)):
        assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in fresh]
        for row, other in zip(got, fresh):
            for (_, a), (_, b) in zip(row, other):
                assert a == pytest.approx(b, abs=1e-9)


# ---------------------------------------------------------------------------------------- filters
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, 1.5]),
    st.sampled_from(["a", "b", "1", ""]),
)
metadata_values = st.one_of(scalars, st.lists(scalars, max_size=3))
filter_values = st.one_of(scalars, st.lists(scalars, max_size=3), st.tuples(scalars, scalars))


def same(a, b) -> bool:
    """Equality as filters read it: a boolean equals no number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return a == b


def plain_match(value, wanted) -> bool:
    """The documented semantics: a list of wanted values matches any member; a list value matches
    when it is wanted or any of its items is."""
    members = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
    candidates = [value] + (list(value) if isinstance(value, list) else [])
    for member in members:
        for candidate in candidates:
            if isinstance(member, list) or isinstance(candidate, list):
                both = isinstance(member, list) and isinstance(candidate, list)
                if both and len(member) == len(candidate) and all(map(same, member, candidate)):
                    return True
                continue
            if same(candidate, member):
                return True
    return False


@FAST
@given(
    values=st.lists(st.one_of(metadata_values, st.just("<missing>")), min_size=1, max_size=8),
    wanted=filter_values,
)
def test_filters_match_a_plain_reading_of_the_documented_semantics(values, wanted):
    docs = [
        Document(id=f"d{i}", text="x", metadata={} if v == "<missing>" else {"key": v})
        for i, v in enumerate(values)
    ]
    expected = [plain_match(None if v == "<missing>" else v, wanted) for v in values]
    assert [value_matches(None if v == "<missing>" else v, wanted) for v in values] == expected
    store = DocumentStore()
    store.add(docs)
    if any("key" in d.metadata for d in docs):
        answer = mask_or_refusal(store, {"key": wanted})
        # a value of no kind the key's values are is refused (session 52): it matched nothing
        assert answer == expected if isinstance(answer, list) else not any(expected)


def mask_or_refusal(store, filters):
    """The store's filter mask as a list, or the one-line refusal of a value of another kind."""
    try:
        return store.filter_mask(filters).tolist()
    except InvalidArgumentError as exc:
        assert "values are" in str(exc)
        return str(exc)


# --------------------------------------------------------------------------------- route selection
labels = st.sampled_from(["a", "b", "c", "d", "none"])
prob_maps = st.dictionaries(labels, st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0]), min_size=1)


@FAST
@given(
    probs=prob_maps,
    threshold=st.sampled_from([0.0, 0.2, 0.25, 0.5, 0.9]),
    max_routes=st.integers(1, 4),
    hedge_below=st.one_of(st.none(), st.sampled_from([0.3, 0.5, 0.9])),
)
def test_select_routes_keeps_its_documented_invariants(probs, threshold, max_routes, hedge_below):
    from ragroute.route.base import decision_from_probs, select_routes, top_route

    chosen = select_routes(probs, threshold=threshold, max_routes=max_routes, hedge_below=hedge_below)
    best = top_route(probs)
    assert chosen[0] == best  # the most probable route is always chosen, first
    assert len(set(chosen)) == len(chosen) <= max(1, max_routes)
    if best == "none":
        assert chosen == ["none"]
        return
    assert "none" not in chosen
    if hedge_below is not None and probs[best] >= hedge_below:
        assert chosen == [best]
    else:
        assert all(probs[r] >= threshold for r in chosen[1:])
        wanted = sorted(
            (r for r in probs if r != "none" and probs[r] >= threshold), key=lambda r: (-probs[r], r)
        )
        assert chosen == (wanted or [best])[:max_routes]
    names = list(probs)
    decision = decision_from_probs(names, [probs[n] for n in names], decided_by="test")
    assert decision.chosen == [best]


# --------------------------------------------------------------------------------- rerank scores
finite_or_not = st.one_of(
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([math.inf, -math.inf, math.nan]),
)


@FAST
@given(scores=st.lists(finite_or_not, max_size=12))
def test_pool_zscores_are_finite_and_keep_the_order_of_finite_scores(scores):
    from ragroute.rerank.cross_encoder import pool_zscores

    z = pool_zscores(scores)
    assert z.shape == (len(scores),)
    assert np.isfinite(z).all()
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    for i in finite:
        for j in finite:
            if scores[i] < scores[j]:
                assert z[i] <= z[j]
    for i, s in enumerate(scores):
        if not math.isfinite(s) and finite:  # the pool's lowest
            assert z[i] == pytest.approx(min(z[j] for j in finite))


@FAST
@given(
    a=st.floats(0.01, 5),
    b=st.floats(-5, 5),
    c=st.floats(-2, 2),
    d=st.floats(-2, 2),
    logits=st.lists(st.floats(-50, 50), min_size=2, max_size=6),
    rank=st.integers(1, 50),
    z=st.floats(-5, 5),
)
def test_a_calibrations_probability_is_monotone_in_the_logit(a, b, c, d, logits, rank, z):
    from ragroute.rerank.cross_encoder import Calibration

    calibration = Calibration(a=a, b=b, c=c, d=d, fitted=True)
    logits = sorted(logits)
    n = len(logits)
    probs = calibration(np.asarray(logits), np.full(n, rank), np.full(n, z)).tolist()
    assert all(0.0 <= p <= 1.0 and math.isfinite(p) for p in probs)
    assert probs == sorted(probs)


# ---------------------------------------------------------------------------------------- PageRank
@st.composite
def weighted_graphs(draw):
    """A small directed graph as a CSR adjacency (zero-weight edges, self-loops and dangling nodes
    included) and a non-negative reset vector with some mass."""
    import scipy.sparse as sp

    n = draw(st.integers(1, 9))
    edges = draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
            max_size=3 * n,
            unique_by=lambda e: (e[0], e[1]),
        )
    )
    rows = [e[0] for e in edges]
    cols = [e[1] for e in edges]
    data = [e[2] for e in edges]
    adjacency = sp.csr_array((data, (rows, cols)), shape=(n, n))  # explicit zeros are kept
    reset = np.asarray(draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0]), min_size=n, max_size=n)))
    if reset.sum() == 0:
        reset[draw(st.integers(0, n - 1))] = 1.0
    return adjacency, reset


@FAST
@given(
    graph=weighted_graphs(),
    damping=st.sampled_from([0.15, 0.5, 0.85]),
    method=st.sampled_from(["power", "push"]),
)
def test_ppr_scores_equal_networkx_pagerank(graph, damping, method):
    """networkx with ``dangling=None`` sends a dangling node's mass along the personalization, as
    the engine's fixed point does; a node whose out-edges all weigh 0 is dangling in both."""
    import networkx as nx

    from ragroute.graph.ppr import PPREngine

    adjacency, reset = graph
    n = adjacency.shape[0]
    engine = PPREngine(adjacency)
    result = engine.run(reset, damping=damping, tol=1e-7, max_iter=1000, method=method)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    coo = adjacency.tocoo()
    g.add_weighted_edges_from(zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist()))
    expected = nx.pagerank(
        g, alpha=damping, personalization=dict(enumerate(reset.tolist())), tol=1e-12, max_iter=10000
    )
    assert result.scores.shape == (n,)
    assert np.allclose(result.scores, [expected[i] for i in range(n)], atol=1e-5)


def test_pool_zscores_of_scores_near_the_float_range_are_finite():
    """Until session 44 two stage-1 scores of 9e307 overflowed the pool's mean: z-scores NaN, and the
    reranker's calibrated probabilities NaN with them (found by the property above)."""
    from ragroute.rerank.cross_encoder import pool_zscores

    assert pool_zscores([8.988465674311579e307, 8.98846567431158e307]).tolist() == [0.0, 0.0]
    z = pool_zscores([1.7e308, 1.7e308, -1.7e308])
    assert np.isfinite(z).all() and z[0] == z[1] > 0 > z[2]
    assert pool_zscores([1.0, 2.0, 3.0]).tolist() == pytest.approx([-1.2247448714, 0.0, 1.2247448714])


# ------------------------------------------------------------------------------------------ fusion
@st.composite
def ranked_lists(draw, score_range):
    """Named ranked lists of hits (scores descending; a document may be in several lists)."""
    from ragroute.types import Hit

    names = draw(st.lists(st.sampled_from(["s1", "s2", "s3"]), min_size=1, max_size=3, unique=True))
    results = {}
    for name in names:
        ids = draw(st.lists(st.sampled_from([f"d{i}" for i in range(8)]), max_size=6, unique=True))
        scores = sorted((draw(score_range) for _ in ids), reverse=True)
        results[name] = [
            Hit(doc_id=i, score=s, source=name, rank=r) for r, (i, s) in enumerate(zip(ids, scores), 1)
        ]
    return results


@pytest.mark.parametrize("method", ["auto", "rrf", "minmax", "zscore", "score", "calibrated"])
@FAST
@given(
    results=ranked_lists(st.one_of(st.floats(-1e6, 1e6), st.floats(allow_nan=False, allow_infinity=False))),
    same_documents=st.booleans(),
    data=st.data(),
)
def test_fusion_keeps_every_document_once_with_finite_scores_whatever_the_source_order(
    method, results, same_documents, data
):
    from ragroute.registry import FUSIONS

    fuse = FUSIONS.get(method)
    documents_of = {name: "one" for name in results} if same_documents else None
    fused = fuse(results, weights=None, limit=None, routes=None, documents_of=documents_of)
    keys = [((documents_of or {}).get(h.source, h.source), h.doc_id) for h in fused]
    expected = {((documents_of or {}).get(n, n), h.doc_id) for n, hits in results.items() for h in hits}
    assert len(keys) == len(set(keys)) and set(keys) == expected
    assert all(math.isfinite(h.score) for h in fused)
    assert [h.rank for h in fused] == list(range(1, len(fused) + 1))
    assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)
    names = data.draw(st.permutations(list(results)))
    again = fuse(
        {n: results[n] for n in names}, weights=None, limit=None, routes=None, documents_of=documents_of
    )
    scores = {((documents_of or {}).get(h.source, h.source), h.doc_id): h.score for h in again}
    assert set(scores) == expected
    for key, hit in zip(keys, fused):
        assert scores[key] == pytest.approx(hit.score, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", ["auto", "minmax", "zscore", "calibrated"])
def test_fusion_of_scores_near_the_float_range_is_finite_and_ordered(method):
    """Until session 44 a list of two scores of 9e307 fused to NaN (``minmax``, ``calibrated`` and
    ``auto``: their mean or range overflowed), and ``zscore`` standardised scores of +-1.7e308 to 0
    (found by the property above)."""
    from ragroute.registry import FUSIONS
    from ragroute.types import Hit

    hits = [
        Hit(doc_id="a", score=1.7e308, source="s1", rank=1),
        Hit(doc_id="b", score=8.98846567431158e307, source="s1", rank=2),
        Hit(doc_id="c", score=-1.7e308, source="s1", rank=3),
    ]
    fused = FUSIONS.get(method)({"s1": hits}, weights=None, limit=None, routes=None, documents_of=None)
    assert [h.doc_id for h in fused] == ["a", "b", "c"]
    assert all(math.isfinite(h.score) for h in fused)
    assert fused[0].score > fused[1].score > fused[2].score


nested_values = st.recursive(
    scalars | st.sampled_from([np.int64(1), np.float64(1.5), np.bool_(True)]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2)
    ),
    max_leaves=6,
)


@FAST
@given(values=st.lists(nested_values, min_size=1, max_size=6), wanted=st.one_of(nested_values, filter_values))
def test_filters_answer_the_same_after_a_save_and_load(tmp_path_factory, values, wanted):
    """Metadata as added (numpy scalars, tuples, nested lists, mappings) and as saved and loaded
    again match every filter alike."""
    docs = [Document(id=f"d{i}", text="x", metadata={"key": v}) for i, v in enumerate(values)]
    store = DocumentStore()
    store.add(docs)
    folder = tmp_path_factory.mktemp("store")
    store.save(folder)
    loaded = DocumentStore.load(folder)
    before = mask_or_refusal(store, {"key": wanted})
    assert mask_or_refusal(loaded, {"key": wanted}) == before
    matched = [value_matches(v, wanted) for v in values]
    assert matched == before if isinstance(before, list) else not any(matched)
