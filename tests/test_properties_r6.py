"""Property-based tests (hypothesis, deterministic), round 6: graph retrieval and expert sets.

* personalized PageRank: scores are a distribution, invariant to relabelling the nodes and to
  the reset's scale; a component the seeds cannot reach gets 0; the push's certified top k is the
  converged walk's, in order; a ``target_scale`` is the ``edge_scale`` of the edges into each
  node; a batch is its columns run one at a time; ``top_k`` orders by score, ties by index;
* a graph index's search: valid, distinct passages, scores descending, ``min(k, N)`` of them,
  the walked ones first; filters and a caller's scope respected; each walked hit's path ends at
  its passage and starts at a seed or the dense prior; ``delete`` refused;
* triples: a GraphML export builds back the same passages, phrases and fact weights;
* expert sets: an expert that cannot load is left out and changes nothing about the others,
  a pipeline routed to one expert returns that expert's own hits.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import PROPERTY_SETTINGS, HashingEncoder
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ragroute.errors import RagrouteError
from ragroute.graph.build import GraphParams
from ragroute.graph.index import WalkParams
from ragroute.graph.ppr import PPREngine, top_k
from ragroute.index.build import build_index
from ragroute.scopes import scoped_filters
from ragroute.types import Document

SETTINGS = PROPERTY_SETTINGS
FEW = settings(SETTINGS, max_examples=12)


# --------------------------------------------------------------------------- PageRank


@st.composite
def symmetric_graphs(draw, min_nodes=2, max_nodes=12, directed=False):
    """A symmetric weighted adjacency (an undirected graph stored both ways; self-loops and
    isolated nodes possible; with ``directed``, maybe one way only) and a reset on a few nodes."""
    n = draw(st.integers(min_nodes, max_nodes))
    one_way = directed and draw(st.booleans())
    edges = draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.integers(1, 40)),
            max_size=3 * n,
            unique_by=lambda e: (min(e[0], e[1]), max(e[0], e[1])),
        )
    )
    back = [] if one_way else [(b, a, w) for a, b, w in edges if a != b]
    rows = [a for a, b, _ in edges + back]
    cols = [b for a, b, _ in edges + back]
    data = [w / 8.0 for _, _, w in edges + back]
    adjacency = sp.csr_array((np.asarray(data, dtype=np.float64), (rows, cols)), shape=(n, n))
    seeds = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
    reset = np.zeros(n)
    for s in seeds:
        reset[s] = draw(st.integers(1, 5))
    return adjacency, reset


def _converged(engine, reset, damping, **kwargs):
    return engine.run(reset, damping=damping, tol=1e-9, max_iter=5000, method="power", **kwargs).scores


@SETTINGS
@given(
    graph=symmetric_graphs(directed=True),
    damping=st.sampled_from([0.3, 0.5, 0.85]),
    method=st.sampled_from(["power", "push", "auto"]),
    k=st.one_of(st.none(), st.integers(1, 4)),
    data=st.data(),
)
def test_ppr_scores_are_a_distribution_and_the_push_certifies_the_converged_top_k(
    graph, damping, method, k, data
):
    adjacency, reset = graph
    n = adjacency.shape[0]
    engine = PPREngine(adjacency)
    among = None
    if k is not None and data.draw(st.booleans()):
        among = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=1, unique=True)))
    result = engine.run(reset, damping=damping, top_k=k, method=method, max_iter=5000, among=among)
    scores = result.scores
    assert scores.dtype == np.float32 and scores.shape == reset.shape
    assert np.all(scores >= 0) and float(scores.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    exact = _converged(engine, reset, damping)
    if k is None:
        assert np.allclose(scores, exact, atol=1e-4)
        return
    # the top k of the converged walk, in order, wherever its scores leave no near tie
    best = top_k(exact, k + 1, among)
    values = exact[best]
    if values.size > 1 and np.min(values[:-1] - values[1:]) > 1e-4:
        assert top_k(scores, k, among).tolist() == best[:k].tolist()


@SETTINGS
@given(graph=symmetric_graphs(), data=st.data(), damping=st.sampled_from([0.5, 0.85]))
def test_ppr_scores_follow_the_nodes_when_they_are_relabelled(graph, data, damping):
    adjacency, reset = graph
    n = adjacency.shape[0]
    perm = np.asarray(data.draw(st.permutations(range(n))))  # old node i is new node perm[i]
    coo = adjacency.tocoo()
    moved = sp.csr_array((coo.data, (perm[coo.row], perm[coo.col])), shape=(n, n))
    new_reset = np.zeros(n)
    new_reset[perm] = reset
    before = _converged(PPREngine(adjacency), reset, damping)
    after = _converged(PPREngine(moved), new_reset, damping)
    np.testing.assert_allclose(after[perm], before, atol=1e-5)


@SETTINGS
@given(
    graph=symmetric_graphs(max_nodes=8),
    extra=symmetric_graphs(min_nodes=1, max_nodes=5),
    factor=st.sampled_from([0.001, 3.0, 1e6]),
    method=st.sampled_from(["power", "push", "auto"]),
    k=st.one_of(st.none(), st.integers(1, 3)),
)
def test_a_component_the_seeds_cannot_reach_gets_nothing_and_the_resets_scale_does_not_matter(
    graph, extra, factor, method, k
):
    adjacency, reset = graph
    other, _ = extra
    n, m = adjacency.shape[0], other.shape[0]
    union = sp.block_diag([adjacency, other], format="csr")
    engine = PPREngine(union)
    full_reset = np.concatenate([reset, np.zeros(m)])
    a = engine.run(full_reset, damping=0.5, top_k=k, method=method, max_iter=5000).scores
    assert np.all(a[n:] == 0)
    b = engine.run(full_reset * factor, damping=0.5, top_k=k, method=method, max_iter=5000).scores
    np.testing.assert_allclose(a, b, atol=1e-5)
    alone = _converged(PPREngine(adjacency), reset, 0.5)
    np.testing.assert_allclose(_converged(engine, full_reset, 0.5)[:n], alone, atol=1e-5)


@SETTINGS
@given(
    graph=symmetric_graphs(),
    scale=st.lists(st.sampled_from([0.0, 0.25, 1.0, 2.0, 7.0]), min_size=12, max_size=12),
    method=st.sampled_from(["power", "push"]),
)
def test_a_target_scale_is_the_edge_scale_of_the_edges_into_each_node(graph, scale, method):
    adjacency, reset = graph
    n = adjacency.shape[0]
    engine = PPREngine(adjacency)
    target = np.asarray(scale[:n])
    _, targets, _ = engine.edges()
    by_edge = _converged(engine, reset, 0.5, edge_scale=target[targets])
    by_target = engine.run(reset, damping=0.5, tol=1e-9, max_iter=5000, method=method, target_scale=target)
    np.testing.assert_allclose(by_target.scores, by_edge, atol=1e-4)
    ones = _converged(engine, reset, 0.5, target_scale=np.full(n, 2.5))
    np.testing.assert_allclose(ones, _converged(engine, reset, 0.5), atol=1e-5)


@SETTINGS
@given(graph=symmetric_graphs(), data=st.data(), k=st.one_of(st.none(), st.integers(1, 3)))
def test_a_batch_of_resets_scores_each_column_as_a_query_of_its_own(graph, data, k):
    adjacency, reset = graph
    n = adjacency.shape[0]
    second = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 0.0, 1.0]), min_size=n, max_size=n)))
    batch = np.stack([reset, second, np.zeros(n)], axis=1)
    engine = PPREngine(adjacency)
    result = engine.run(batch, damping=0.5, tol=1e-9, max_iter=5000, method="power")
    assert result.scores.shape == (n, 3)
    assert result.zero_reset.tolist() == [False, second.sum() == 0, True]
    np.testing.assert_allclose(result.scores[:, 0], _converged(engine, reset, 0.5), atol=1e-5)
    assert np.all(result.scores[:, 2] == 0)
    if second.sum() > 0:
        np.testing.assert_allclose(result.scores[:, 1], _converged(engine, second, 0.5), atol=1e-5)
    else:
        assert np.all(result.scores[:, 1] == 0)


@SETTINGS
@given(
    values=st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.5, 1.0, 2.0]), min_size=0, max_size=10),
    k=st.integers(0, 12),
    data=st.data(),
)
def test_top_k_orders_by_score_then_index_among_the_candidates(values, k, data):
    scores = np.asarray(values, dtype=np.float32)
    among = None
    candidates = list(range(len(values)))
    if values and data.draw(st.booleans()):
        candidates = data.draw(st.lists(st.integers(0, len(values) - 1), unique=True))
        among = np.asarray(candidates, dtype=np.intp)
    expected = sorted(candidates, key=lambda i: (-values[i], i))[:k]
    assert top_k(scores, k, among).tolist() == expected


# --------------------------------------------------------------------------- graph index

NAMES = ["Ada Brennan", "Kellow", "Varne River", "Otto Lind", "Dressel", "Amber Lake", "Paris"]
VERBS = ["was born in", "flows through", "is near", "studied in"]
WORDS = ["river", "town", "painter", "bridge", "born"]


@st.composite
def passages(draw, min_size=2, max_size=7):
    n = draw(st.integers(min_size, max_size))
    docs = []
    for i in range(n):
        sentences = []
        for _ in range(draw(st.integers(1, 3))):
            a, b = draw(st.sampled_from(NAMES)), draw(st.sampled_from(NAMES))
            sentences.append(f"{a} {draw(st.sampled_from(VERBS))} {b} {draw(st.sampled_from(WORDS))}.")
        docs.append(
            Document(
                id=f"p{i}",
                title=draw(st.sampled_from(NAMES)),
                text=" ".join(sentences),
                metadata={
                    "group": draw(st.sampled_from(["a", "b"])),
                    **({"access": "hr"} if draw(st.booleans()) else {}),
                },
            )
        )
    return docs


QUERIES = st.lists(st.sampled_from(NAMES + VERBS + WORDS), min_size=1, max_size=4).map(" ".join)


WALKS = st.builds(
    WalkParams,
    top_facts=st.integers(0, 6),
    passage_prior=st.sampled_from([0.0, 0.05, 1.0]),
    prior_depth=st.integers(0, 5),
    damping=st.sampled_from([0.01, 0.5, 0.85, 0.99]),
    fact_score=st.sampled_from(["max", "mean"]),
    anchor_weight=st.sampled_from([0.0, 1.0, 3.0]),
    anchor_similarity=st.sampled_from([0.0, 0.8, 1.0]),
    fact_passage_boost=st.sampled_from([0.0, 0.5]),
    hub_damping=st.sampled_from([0.0, 0.5, 2.0]),
    lexical_edges=st.sampled_from([0.0, 8.0]),
)


def _graph(docs, walk=None):
    graph = build_index(
        docs,
        "graph",
        encoder=HashingEncoder(dim=32),
        name="kg",
        graph_params=GraphParams(synonym_k=4, synonym_threshold=0.8),
    )
    graph.walk = walk or WalkParams()
    return graph


def seed_phrases(graph, hit):
    """Every seed phrase of the walk (``explain["seeds"]`` lists the 8 strongest)."""
    return (
        set(hit.explain["seeds"])
        | set(hit.explain["anchors"])
        | {p for f in hit.explain["facts"] for p in f.rsplit(" (", 1)[0].split(" | ")}
    )


def _check_hits(hits, docs, k, allowed_ids):
    ids = [h.doc_id for h in hits]
    assert len(ids) == len(set(ids)) == min(k, len(allowed_ids))
    assert set(ids) <= allowed_ids
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    methods = [h.explain.get("method") for h in hits]
    # the walked passages first (positive mass), then those it gave none (score 0)
    walked = [m == "ppr" for m in methods]
    assert walked == sorted(walked, reverse=True)
    for hit, is_walked in zip(hits, walked):
        assert (hit.score > 0) if is_walked else (hit.score == 0 or methods[0] == "dense")


@pytest.mark.filterwarnings("ignore::UserWarning")
@FEW
@given(docs=passages(), queries=st.lists(QUERIES, min_size=1, max_size=3), k=st.integers(1, 9), walk=WALKS)
def test_a_graph_search_returns_distinct_passages_best_first_up_to_k_and_explains_each(
    docs, queries, k, walk
):
    graph = _graph(docs, walk)
    everyone = {d.id for d in docs}
    for query in queries:
        hits = graph.search(query, k=k)
        _check_hits(hits, docs, k, everyone)
        for hit in hits:
            if hit.explain["method"] != "ppr":
                continue
            path = hit.explain["path"]
            assert path[-1].startswith(f"passage {hit.doc_id}")
            # back from the passage to a seed or the dense prior, never through a node twice (until
            # session 52 at most 4 hops, and a longer path began at a node that was neither)
            assert len(set(path)) == len(path)
            assert path[0] == "(dense prior)" or path[0] in seed_phrases(graph, hit), path
        # filters: only the group asked for; a scope: only what it may read
        group = {d.id for d in docs if d.metadata["group"] == "a"}
        _check_hits(graph.search(query, k=k, filters={"group": "a"}), docs, k, group)
        public = {d.id for d in docs if "access" not in d.metadata}
        _check_hits(graph.search(query, k=k, filters=scoped_filters(None, [])), docs, k, public)
        # a scope that hides nothing walks as an unscoped search
        scoped = graph.search(query, k=k, filters=scoped_filters(None, ["hr"]))
        assert [(h.doc_id, round(h.score, 5)) for h in scoped] == [
            (h.doc_id, round(h.score, 5)) for h in hits
        ]


@pytest.mark.filterwarnings("ignore::UserWarning")
@FEW
@given(docs=passages(), queries=st.lists(QUERIES, min_size=1, max_size=3), k=st.integers(1, 5))
def test_a_batch_search_of_a_graph_is_each_query_searched_alone_and_delete_is_refused(docs, queries, k):
    graph = _graph(docs)
    batch = graph.search_many(queries, k=k)
    for query, hits in zip(queries, batch):
        alone = graph.search(query, k=k)
        assert [(h.doc_id, h.score) for h in hits] == [(h.doc_id, h.score) for h in alone]
    with pytest.raises(RagrouteError, match="cannot be deleted"):
        graph.delete([docs[0].id])
    assert [h.doc_id for h in graph.search(queries[0], k=k)] == [h.doc_id for h in batch[0]]


# --------------------------------------------------------------------------- triples and GraphML

PHRASES = ["ada", "kellow", "varne", "otto", "paris", "lake"]


@st.composite
def triple_rows(draw):
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PHRASES),
                st.sampled_from(["born in", "near", ""]),
                st.sampled_from(PHRASES),
                st.sampled_from(["", "", "t1", "t2"]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return [
        {"subject": s, "predicate": p, "object": o, **({"passage": pid} if pid else {})}
        for s, p, o, pid in rows
    ]


def _shape(graph):
    """Passages (id, text), and by name: phrase-passage links and phrase-phrase weights."""
    t = graph.tables
    docs = graph.store.documents
    names = t.phrases + [f"passage {d.id}" for d in docs]
    coo = sp.coo_array(t.adjacency)
    edges = {
        (names[a], names[b]): round(float(w), 5) for a, b, w in zip(coo.row, coo.col, coo.data) if w != 0
    }
    return sorted((d.id, d.text) for d in docs), sorted(t.phrases), edges


@pytest.mark.filterwarnings("ignore::UserWarning")
@FEW
@given(rows=triple_rows())
@example(  # "ada" and "lake" share a hashing bucket: cosine 1, in a graph without synonym edges
    rows=[{"subject": "ada", "predicate": p, "object": "lake", "passage": "t1"} for p in ("born in", "near")]
)
def test_a_graphml_export_builds_back_the_same_passages_phrases_and_fact_weights(tmp_path_factory, rows):
    from ragroute.graph.triples import build_graph_from_triples
    from ragroute.graph.views import write_graphml

    encoder = HashingEncoder(dim=32)
    params = GraphParams(synonym_k=0)
    original = build_graph_from_triples(rows, encoder, graph_params=params)
    path = write_graphml(original, tmp_path_factory.mktemp("g") / "g.graphml")
    back = build_graph_from_triples(path, encoder, graph_params=params)
    assert _shape(back) == _shape(original)


# --------------------------------------------------------------------------- expert sets

TOPIC_WORDS = ["telescope", "star", "bread", "flour", "printer", "laptop", "comet", "oven"]


@st.composite
def corpora(draw):
    texts = draw(
        st.lists(
            st.lists(st.sampled_from(TOPIC_WORDS), min_size=1, max_size=6).map(" ".join),
            min_size=2,
            max_size=8,
        )
    )
    return [Document(id=f"d{i}", text=t) for i, t in enumerate(texts)]


def _hits(index_or_source, query, k):
    index = getattr(index_or_source, "retriever", index_or_source)
    return [(h.doc_id, round(h.score, 6)) for h in index.search(query, k=k)]


@FEW
@given(
    docs=corpora(),
    order=st.permutations(["base", "bm25", "broken"]),
    query=st.lists(st.sampled_from(TOPIC_WORDS), min_size=1, max_size=3).map(" ".join),
    k=st.integers(1, 6),
)
def test_an_expert_set_leaves_out_an_expert_that_cannot_load_and_the_others_do_not_change(
    tmp_path_factory, docs, order, query, k
):
    from ragroute.experts.expert_set import ExpertSet, ExpertSpec
    from ragroute.pipeline.build import pipeline_from_settings

    missing = tmp_path_factory.mktemp("e") / "no-such-model"
    specs = {
        "base": ExpertSpec("base", "base"),
        "bm25": ExpertSpec("bm25", "bm25"),
        "broken": ExpertSpec("broken", "dense", path=str(missing)),
    }
    encoder = HashingEncoder(dim=32)
    full = ExpertSet([specs[n] for n in order], encoder)
    assert full.names == [n for n in order if n != "broken"]
    assert [p.name for p in full.problems] == ["broken"]
    assert "\n" not in full.problems[0].error.strip()
    sources = {s.name: s for s in full.sources("c", docs)}
    for name in ("base", "bm25"):
        alone = ExpertSet([specs[name]], encoder).sources("c", docs)[0]
        assert _hits(sources[name], query, k) == _hits(alone, query, k)
        pipeline = pipeline_from_settings(
            list(sources.values()), {"kind": "fixed", "routes": [name]}, encoder=encoder
        )
        routed = pipeline.retrieve(query, k=k)
        assert routed.decision.chosen == [name]
        assert [h.doc_id for h in routed.hits] == [d for d, _ in _hits(alone, query, k)]
