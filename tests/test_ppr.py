"""Personalized PageRank engine (ragroute.graph.ppr): igraph's semantics, batches, per-query weights.

Small random graphs, deterministic seeds, no network; igraph's PRPACK solver is the reference.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import igraph
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg

from ragroute.graph.ppr import PPREngine, PPRResult, top_k


def random_graph(
    seed: int, n: int, m: int, *, directed: bool, dangling: int = 0, zero_weights: int = 0
) -> tuple[sp.csr_array, igraph.Graph]:
    """The same weighted random multigraph as a scipy adjacency and an igraph graph.

    Self-loops and parallel edges are kept; ``dangling`` nodes lose their out-edges
    (directed graphs only), ``zero_weights`` edges get weight 0.
    """
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, m)
    dst = rng.integers(0, n, m)
    weight = rng.random(m) + 0.05
    if directed and dangling:
        sinks = rng.choice(n, dangling, replace=False)
        keep = ~np.isin(src, sinks)
        src, dst, weight = src[keep], dst[keep], weight[keep]
    if zero_weights:
        weight[rng.choice(weight.size, zero_weights, replace=False)] = 0.0
    graph = igraph.Graph(n=n, edges=np.c_[src, dst].tolist(), directed=directed)
    graph.es["weight"] = weight.tolist()
    if directed:
        rows, cols, data = src, dst, weight
    else:  # both directions; an undirected self-loop stands twice, as igraph counts it
        rows, cols, data = np.r_[src, dst], np.r_[dst, src], np.r_[weight, weight]
    return sp.csr_array((data, (rows, cols)), shape=(n, n)), graph


def igraph_ppr(graph: igraph.Graph, reset: np.ndarray, damping: float = 0.5) -> np.ndarray:
    """igraph's (PRPACK) personalized PageRank of ``graph`` for ``reset``."""
    scores = graph.personalized_pagerank(
        reset=(reset / reset.sum()).tolist(),
        damping=damping,
        directed=graph.is_directed(),
        weights="weight",
    )
    return np.asarray(scores)


def sparse_reset(rng: np.random.Generator, n: int, seeds: int = 3) -> np.ndarray:
    """A reset vector on a few random seed nodes, like a query's matched phrases."""
    reset = np.zeros(n)
    reset[rng.choice(n, seeds, replace=False)] = rng.random(seeds) + 0.5
    return reset


GRAPHS = [
    pytest.param(dict(seed=1, n=60, m=240, directed=True, dangling=6), id="directed-dangling"),
    pytest.param(
        dict(seed=2, n=80, m=400, directed=True, dangling=10, zero_weights=30), id="directed-zero-w"
    ),
    pytest.param(dict(seed=3, n=50, m=150, directed=False), id="undirected"),
    pytest.param(dict(seed=4, n=120, m=360, directed=False, zero_weights=20), id="undirected-zero-w"),
]


def assert_same_top(ours: np.ndarray, reference: np.ndarray, k: int = 5) -> None:
    """Same top-k as the reference; when fewer than k nodes are reached, the same reached nodes."""
    reached = int(np.count_nonzero(reference > 1e-12))
    assert np.count_nonzero(ours) == reached  # unreached nodes score exactly 0
    k = min(k, reached)
    best = np.sort(reference)[::-1]
    assert best[k - 1] - best[k] > 1e-5, "ambiguous reference top-k: pick another seed"
    assert list(top_k(ours, k)) == list(top_k(reference, k))


@pytest.mark.parametrize("spec", GRAPHS)
@pytest.mark.parametrize("damping", [0.5, 0.85])
def test_scores_match_igraph(spec: dict, damping: float) -> None:
    adjacency, graph = random_graph(**spec)
    engine = PPREngine(adjacency)
    n = adjacency.shape[0]
    rng = np.random.default_rng(spec["seed"] + 100)
    if spec["directed"]:
        assert engine.dangling.any()
    for reset in (sparse_reset(rng, n), sparse_reset(rng, n, seeds=1), rng.random(n)):
        result = engine.run(reset, damping=damping)
        reference = igraph_ppr(graph, reset, damping)
        assert result.converged
        assert result.scores.dtype == np.float32 and result.scores.shape == (n,)
        np.testing.assert_allclose(result.scores, reference, rtol=0, atol=1e-5)
        assert abs(float(result.scores.sum()) - 1.0) < 1e-5
        assert_same_top(result.scores, reference)


def test_dangling_seed_sends_mass_back_to_reset() -> None:
    # 0 -> 1 -> 2, node 2 is dangling; with reset on 0, igraph returns 2's mass to node 0.
    adjacency = sp.csr_array((np.ones(2), ([0, 1], [1, 2])), shape=(3, 3))
    graph = igraph.Graph(n=3, edges=[(0, 1), (1, 2)], directed=True)
    graph.es["weight"] = [1.0, 1.0]
    reset = np.array([1.0, 0.0, 0.0])
    result = PPREngine(adjacency).run(reset, tol=1e-8)
    np.testing.assert_allclose(result.scores, igraph_ppr(graph, reset), atol=1e-6)
    np.testing.assert_array_equal(PPREngine(adjacency).dangling, [False, False, True])


def test_batch_equals_queries_one_by_one() -> None:
    adjacency, _ = random_graph(seed=5, n=200, m=1200, directed=True, dangling=15)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(5)
    resets = np.stack([sparse_reset(rng, 200), sparse_reset(rng, 200, 1), rng.random(200)], axis=1)
    # A tolerance out of reach: batch and single runs go to float32's fixed point (or max_iter).
    batch = engine.run(resets, tol=1e-15, max_iter=60)
    assert batch.scores.shape == (200, 3) and batch.scores.dtype == np.float32
    assert isinstance(batch.residual, np.ndarray) and batch.residual.shape == (3,)
    for column in range(3):
        single = engine.run(resets[:, column], tol=1e-15, max_iter=60)
        np.testing.assert_allclose(batch.scores[:, column], single.scores, rtol=0, atol=2e-7)
    # With the default tolerance, the batch runs until its slowest column converges.
    batch = engine.run(resets)
    assert batch.converged and np.all(batch.residual < 1e-6)
    for column in range(3):
        single = engine.run(resets[:, column])
        assert single.iterations <= batch.iterations
        np.testing.assert_allclose(batch.scores[:, column], single.scores, rtol=0, atol=2e-6)
        assert list(top_k(batch.scores[:, column], 5)) == list(top_k(single.scores, 5))


def test_edge_scale_is_per_call_and_matches_reweighted_igraph() -> None:
    adjacency, graph = random_graph(seed=6, n=90, m=500, directed=True, dangling=8)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(6)
    reset = sparse_reset(rng, 90)
    before = engine.run(reset)
    scale = rng.random(engine.num_edges) * 2.0
    scale[rng.choice(engine.num_edges, 40, replace=False)] = 0.0  # some edges switched off
    scaled = engine.run(reset, edge_scale=scale)
    assert np.abs(scaled.scores - before.scores).max() > 1e-3
    # The scale follows the adjacency's CSR order: same as an engine on re-weighted data.
    reweighted = sp.csr_array((adjacency.data * scale, adjacency.indices, adjacency.indptr), shape=(90, 90))
    np.testing.assert_allclose(scaled.scores, PPREngine(reweighted).run(reset).scores, atol=1e-6)
    sources, targets, weights = engine.edges()
    reference_graph = igraph.Graph(n=90, edges=np.c_[sources, targets].tolist(), directed=True)
    reference_graph.es["weight"] = (weights * scale).tolist()
    np.testing.assert_allclose(scaled.scores, igraph_ppr(reference_graph, reset), atol=1e-5)
    # The engine itself is untouched.
    after = engine.run(reset)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert after.iterations == before.iterations
    assert graph.ecount() > 0


def test_edge_scale_follows_unsorted_csr_order() -> None:
    # Row 0 stores its edges as 0->2 then 0->1 (unsorted); switching off the first stored
    # edge must cut 0->2, not 0->1.
    adjacency = sp.csr_array(
        (np.array([1.0, 1.0, 1.0, 1.0]), np.array([2, 1, 0, 0]), np.array([0, 2, 3, 4])), shape=(3, 3)
    )
    engine = PPREngine(adjacency)
    sources, targets, _ = engine.edges()
    assert list(zip(sources.tolist(), targets.tolist())) == [(0, 2), (0, 1), (1, 0), (2, 0)]
    result = engine.run(np.array([1.0, 0.0, 0.0]), edge_scale=np.array([0.0, 1.0, 1.0, 1.0]), tol=1e-8)
    assert result.scores[2] == 0.0 and result.scores[1] > 0.1


def test_concurrent_edge_scales_match_serial_runs() -> None:
    adjacency, _ = random_graph(seed=7, n=300, m=2400, directed=False)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(7)
    reset = sparse_reset(rng, 300)
    scales = [None, rng.random(engine.num_edges), rng.random(engine.num_edges) ** 4]
    serial = [engine.run(reset, edge_scale=scale).scores for scale in scales]
    assert np.abs(serial[1] - serial[2]).max() > 1e-4
    jobs = [i % 3 for i in range(24)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: engine.run(reset, edge_scale=scales[i]).scores, jobs))
    for i, scores in zip(jobs, results):
        np.testing.assert_array_equal(scores, serial[i])


def test_zero_reset_column_gives_zeros() -> None:
    adjacency, _ = random_graph(seed=8, n=40, m=160, directed=True, dangling=4)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(8)
    resets = np.stack([sparse_reset(rng, 40), np.zeros(40), rng.random(40)], axis=1)
    batch = engine.run(resets, top_k=5)
    assert not np.isnan(batch.scores).any()
    np.testing.assert_array_equal(batch.scores[:, 1], np.zeros(40, dtype=np.float32))
    np.testing.assert_array_equal(batch.zero_reset, [False, True, False])
    assert batch.residual[1] == 0.0 and batch.converged
    for column in (0, 2):  # the batch stopped early (top 5 settled): same top 5, scores near converged
        alone = engine.run(resets[:, column])
        assert list(top_k(batch.scores[:, column], 5)) == list(top_k(alone.scores, 5))
        np.testing.assert_allclose(batch.scores[:, column], alone.scores, atol=1e-4)
    single = engine.run(np.zeros(40))
    assert isinstance(single, PPRResult)
    assert single.zero_reset is True and single.converged and single.residual == 0.0
    np.testing.assert_array_equal(single.scores, np.zeros(40, dtype=np.float32))


def test_top_k_early_stop_saves_iterations_and_keeps_the_top() -> None:
    rng = np.random.default_rng(9)
    n = 3000
    # A skewed (hub-heavy) graph, as knowledge graphs are.
    popularity = rng.pareto(1.5, n) + 1.0
    src = rng.choice(n, 12000, p=popularity / popularity.sum())
    dst = rng.integers(0, n, 12000)
    weight = rng.random(12000) + 0.1
    adjacency = sp.csr_array((np.r_[weight, weight], (np.r_[src, dst], np.r_[dst, src])), shape=(n, n))
    engine = PPREngine(adjacency)
    passages = np.arange(0, n, 3)  # e.g. passage nodes among phrase nodes
    for _ in range(5):
        reset = sparse_reset(rng, n)
        exact = engine.run(reset, tol=1e-9)
        early = engine.run(reset, top_k=5, method="power")
        assert early.converged and early.iterations < exact.iterations
        assert early.iterations < engine.run(reset).iterations  # fewer than the default tol=1e-6 too
        # stopped by the stable-set rule (residual < 1e-4) or by the certificate (gaps > 2 bounds)
        best = np.sort(early.scores)[::-1][:6].astype(np.float64)
        assert early.residual < 1e-4 or np.min(best[:-1] - best[1:]) > 2 * early.residual
        assert list(top_k(early.scores, 5)) == list(top_k(exact.scores, 5))
        restricted = engine.run(reset, top_k=5, among=passages, method="power")
        assert restricted.converged and restricted.iterations < exact.iterations
        assert list(top_k(restricted.scores, 5, among=passages)) == list(top_k(exact.scores, 5, passages))


def test_certified_top_k_stops_once_no_later_step_can_reorder_it() -> None:
    rng = np.random.default_rng(4)
    n = 2000
    src, dst = rng.integers(0, n, 10000), rng.integers(0, n, 10000)
    adjacency = sp.csr_array((np.ones(20000), (np.r_[src, dst], np.r_[dst, src])), shape=(n, n))
    engine = PPREngine(adjacency)
    reset = np.zeros(n)
    reset[[5, 50, 500, 900, 1500, 1900]] = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # well separated seeds
    exact = engine.run(reset, tol=1e-10, max_iter=500)
    early = engine.run(reset, top_k=5, method="power")
    assert early.converged and early.residual > 1e-4  # the stable-set rule alone would go on
    assert early.iterations < 8
    assert list(top_k(early.scores, 5)) == list(top_k(exact.scores, 5))
    # tied seeds can never be certified in order: the run goes on to the stable-set rule
    tied = np.zeros(n)
    tied[[5, 50, 500, 900, 1500, 1900]] = 1.0
    assert engine.run(tied, top_k=5, method="power").residual < 1e-4


def test_top_k_helper_orders_and_breaks_ties_by_index() -> None:
    scores = np.array([0.1, 0.5, 0.3, 0.5, 0.0, 0.3])
    assert list(top_k(scores, 3)) == [1, 3, 2]
    assert list(top_k(scores, 10)) == [1, 3, 2, 5, 0, 4]
    assert list(top_k(scores, 2, among=np.array([5, 0, 2]))) == [2, 5]
    assert list(top_k(scores, 0)) == []
    with pytest.raises(ValueError):
        top_k(np.zeros((2, 2)), 1)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="square"):
        PPREngine(sp.csr_array(np.ones((2, 3))))
    with pytest.raises(ValueError, match="non-negative"):
        PPREngine(sp.csr_array(np.array([[0.0, -1.0], [1.0, 0.0]])))
    engine = PPREngine(sp.csr_array(np.array([[0.0, 1.0], [1.0, 0.0]])))
    with pytest.raises(ValueError, match="reset"):
        engine.run(np.ones(3))
    with pytest.raises(ValueError, match="reset"):
        engine.run(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="edge_scale"):
        engine.run(np.ones(2), edge_scale=np.ones(3))
    with pytest.raises(ValueError, match="damping"):
        engine.run(np.ones(2), damping=1.0)


@pytest.mark.parametrize("method", ["power", "push"])
def test_nan_and_fractional_settings_are_one_line_errors(method: str) -> None:
    # until session 54 max_iter=NaN ran no step and returned the reset as the scores
    # (converged False, no error), tol=NaN ran every walk to max_iter, and top_k=2.5 / NaN
    # failed deep in the run with a TypeError / NaN-conversion traceback
    engine = PPREngine(sp.csr_array(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])))
    reset = np.array([1.0, 0.0, 0.0])
    for settings, name in (
        ({"max_iter": float("nan")}, "max_iter"),
        ({"tol": float("nan")}, "tol"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": float("nan")}, "top_k"),
        ({"top_k": True}, "top_k"),
    ):
        with pytest.raises(ValueError, match=name):
            engine.run(reset, method=method, **({"top_k": 1} | settings))
    assert list(top_k(engine.run(reset, method=method, top_k=np.int64(1)).scores, 1)) == [0]


@pytest.mark.parametrize("method", ["power", "push"])
def test_among_ids_outside_the_graph_are_one_line_errors(method: str) -> None:
    # until session 54 among=[-1] ranked node n - 1 silently and among=[n] failed with an
    # IndexError traceback (a boolean mask was read as the node ids 0 and 1)
    engine = PPREngine(sp.csr_array(np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])))
    reset = np.array([1.0, 0.0, 0.0])
    for among in ([-1], [3], [0, 5], np.array([True, False, True])):
        with pytest.raises(ValueError, match="among"):
            engine.run(reset, top_k=1, among=np.asarray(among), method=method)
    assert list(top_k(engine.run(reset, top_k=1, among=[1, 2], method=method).scores, 1, [1, 2])) == [1]
    assert engine.run(reset, top_k=1, among=[], method=method).scores.shape == (3,)


# ---------------------------------------------------------------- forward push (method="push")


def symmetric_graph(
    seed: int, n: int, m: int, *, isolated: int = 0, skew: bool = False
) -> tuple[sp.csr_array, igraph.Graph]:
    """A weighted undirected multigraph (self-loops, parallel edges; ``isolated`` nodes without
    edges) as a symmetric scipy adjacency and an igraph graph; ``skew`` draws one end of
    each edge by a Pareto popularity (hubs, as in knowledge graphs)."""
    rng = np.random.default_rng(seed)
    pool = np.arange(isolated, n)  # nodes 0 .. isolated - 1 get no edge
    if skew:
        popularity = rng.pareto(1.5, pool.size) + 1.0
        src = rng.choice(pool, m, p=popularity / popularity.sum())
    else:
        src = rng.choice(pool, m)
    dst = rng.choice(pool, m)
    weight = rng.random(m) + 0.1
    graph = igraph.Graph(n=n, edges=np.c_[src, dst].tolist(), directed=False)
    graph.es["weight"] = weight.tolist()
    adjacency = sp.csr_array((np.r_[weight, weight], (np.r_[src, dst], np.r_[dst, src])), shape=(n, n))
    return adjacency, graph


def walk_reset(rng: np.random.Generator, n: int, strong: int = 4, weak: int = 40) -> np.ndarray:
    """A reset like the graph walk's: a few strong seeds and many weak ones."""
    reset = np.zeros(n)
    reset[rng.choice(n, strong, replace=False)] = rng.uniform(0.3, 0.9, strong)
    reset[rng.choice(n, weak, replace=False)] += 0.05 * rng.random(weak)
    return reset


def reference_top(reference: np.ndarray, k: int, among: np.ndarray | None = None) -> list[int]:
    """igraph's top ``k``, asserting that it is not a near tie (so any correct engine agrees)."""
    pool = reference if among is None else reference[among]
    best = np.sort(pool)[::-1][: k + 1]
    assert np.min(best[:-1] - best[1:]) > 1e-9, "ambiguous reference top-k: pick another seed"
    return list(top_k(reference, k, among))


PUSH_GRAPHS = [
    pytest.param(dict(seed=11, n=400, m=1600), id="uniform"),
    pytest.param(dict(seed=12, n=600, m=3000, skew=True), id="hubs"),
    pytest.param(dict(seed=13, n=300, m=900, isolated=12), id="isolated"),
]


@pytest.mark.parametrize("spec", PUSH_GRAPHS)
@pytest.mark.parametrize("damping", [0.5, 0.85])
def test_push_certifies_igraphs_top_k_on_symmetric_graphs(spec: dict, damping: float) -> None:
    adjacency, graph = symmetric_graph(**spec)
    engine = PPREngine(adjacency)
    n = adjacency.shape[0]
    rng = np.random.default_rng(spec["seed"])
    among = np.sort(rng.choice(n, n // 3, replace=False))  # e.g. the passage nodes
    resets = [sparse_reset(rng, n, 1), sparse_reset(rng, n, 3), walk_reset(rng, n, weak=n // 12)]
    if spec.get("isolated"):  # a seed without edges: igraph sends its mass back to the reset
        resets.append(walk_reset(rng, n, weak=n // 12) + np.eye(n)[3] * 0.5)
    for reset in resets:
        reference = igraph_ppr(graph, reset, damping)
        # auto pushes a single, few-seed query with a top k on a symmetric graph (damping <= 0.8)
        assert engine.run(reset, damping=damping, top_k=5).method == ("push" if damping < 0.8 else "power")
        for candidates in (None, among):
            result = engine.run(reset, damping=damping, top_k=5, among=candidates, method="push")
            assert result.method in ("push", "push+power")
            assert result.converged and result.scores.dtype == np.float32
            assert abs(float(result.scores.sum()) - 1.0) < 1e-5
            assert list(top_k(result.scores, 5, candidates)) == reference_top(reference, 5, candidates)
            # the scores are close to igraph's, not only ordered like them
            assert np.abs(result.scores - reference).max() < 0.05


def test_push_orders_a_near_tie_like_igraph() -> None:
    # Two leaves hang off a hub with weights differing by 1e-4 (relative): their scores
    # differ by about as little, so the push must resolve them before it can stop.
    adjacency, _ = symmetric_graph(seed=21, n=500, m=2500, skew=True)
    a = adjacency.tolil()
    for leaf, weight in ((498, 1.0), (499, 1.0001)):
        a[leaf, :] = 0
        a[:, leaf] = 0
        a[0, leaf] = a[leaf, 0] = weight
    adjacency = sp.csr_array(a.tocsr())
    coo = adjacency.tocoo()
    graph = igraph.Graph(n=500, edges=np.c_[coo.row, coo.col].tolist(), directed=True)
    graph.es["weight"] = coo.data.tolist()
    engine = PPREngine(adjacency)
    reset = np.zeros(500)
    reset[[0, 7, 8]] = [1.0, 0.2, 0.1]
    among = np.arange(490, 500)
    reference = igraph_ppr(graph, reset)
    assert 0 < reference[499] - reference[498] < 1e-3 * reference[499]
    result = engine.run(reset, top_k=3, among=among, method="push")
    assert result.method == "push" and result.converged
    assert list(top_k(result.scores, 3, among)) == reference_top(reference, 3, among)
    assert result.scores[499] > result.scores[498]


def test_push_without_top_k_runs_to_the_tolerance() -> None:
    adjacency, graph = symmetric_graph(seed=14, n=300, m=1200, isolated=5)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(14)
    for reset in (walk_reset(rng, 300), np.eye(300)[2] + sparse_reset(rng, 300)):
        result = engine.run(reset, method="push", tol=1e-5)
        assert result.method == "push" and result.residual < 1e-5
        np.testing.assert_allclose(result.scores, igraph_ppr(graph, reset), rtol=0, atol=1e-5)


def test_push_target_scale_is_per_call_and_matches_reweighted_igraph() -> None:
    adjacency, _ = symmetric_graph(seed=15, n=400, m=2000, skew=True)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(15)
    scale = rng.uniform(0.2, 3.0, 400)
    scale[rng.choice(400, 20, replace=False)] = 0.0  # edges into these nodes switched off
    sources, targets, weights = engine.edges()
    reweighted = igraph.Graph(n=400, edges=np.c_[sources, targets].tolist(), directed=True)
    reweighted.es["weight"] = (weights * scale[targets]).tolist()
    among = np.arange(0, 400, 2)
    before = engine.run(walk_reset(rng, 400), top_k=5).scores
    for reset in (walk_reset(rng, 400), sparse_reset(rng, 400, 2)):
        reference = igraph_ppr(reweighted, reset)
        for method in ("push", "power"):
            result = engine.run(reset, top_k=5, among=among, target_scale=scale, method=method)
            assert result.method == method
            assert list(top_k(result.scores, 5, among)) == reference_top(reference, 5, among)
        # the same scale as an edge_scale (power iteration on a re-weighted transition)
        full = engine.run(reset, tol=1e-9, target_scale=scale)
        np.testing.assert_allclose(full.scores, reference, atol=1e-5)
        by_edge = engine.run(reset, tol=1e-9, edge_scale=scale[targets])
        np.testing.assert_allclose(by_edge.scores, reference, atol=1e-5)
        both = engine.run(reset, tol=1e-9, edge_scale=np.sqrt(scale[targets]), target_scale=np.sqrt(scale))
        np.testing.assert_allclose(both.scores, reference, atol=1e-5)  # given both, they multiply
    # the engine itself is untouched
    rng = np.random.default_rng(15)
    rng.uniform(0.2, 3.0, 400), rng.choice(400, 20, replace=False)
    np.testing.assert_array_equal(engine.run(walk_reset(rng, 400), top_k=5).scores, before)


def test_concurrent_pushes_with_target_scales_match_serial_runs() -> None:
    adjacency, _ = symmetric_graph(seed=16, n=800, m=4000, skew=True)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(16)
    reset = walk_reset(rng, 800)
    scales = [None, rng.uniform(0.5, 2.0, 800), rng.uniform(0.0, 1.0, 800) ** 4]
    serial = [engine.run(reset, top_k=5, target_scale=scale).scores for scale in scales]
    assert np.abs(serial[1] - serial[2]).max() > 1e-4
    jobs = [i % 3 for i in range(24)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: engine.run(reset, top_k=5, target_scale=scales[i]).scores, jobs))
    for i, scores in zip(jobs, results):
        np.testing.assert_array_equal(scores, serial[i])


def test_push_stays_near_its_seeds_on_a_large_graph() -> None:
    # A long weighted ring with chords between nearby nodes: the top 5 around two seeds is
    # settled by nodes a few hops away, and the push never reaches most of the graph.
    n = 20000
    rng = np.random.default_rng(17)
    src = np.r_[np.arange(n), np.arange(n)]
    dst = np.r_[(np.arange(n) + 1) % n, (np.arange(n) + rng.integers(2, 6, n)) % n]
    weight = rng.random(src.size) + 0.5
    adjacency = sp.csr_array((np.r_[weight, weight], (np.r_[src, dst], np.r_[dst, src])), shape=(n, n))
    engine = PPREngine(adjacency)
    reset = np.zeros(n)
    reset[[100, 5000]] = [1.0, 0.7]
    pushed = engine.run(reset, top_k=5)
    assert pushed.method == "push"
    assert np.count_nonzero(pushed.scores) < n // 20
    exact = engine.run(reset, tol=1e-10, max_iter=200, method="power")
    assert list(top_k(pushed.scores, 5)) == list(top_k(exact.scores, 5))


def test_push_on_a_directed_graph_uses_the_general_bound() -> None:
    adjacency, graph = random_graph(seed=18, n=300, m=1500, directed=True, dangling=20)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(18)
    reset = sparse_reset(rng, 300, 3)
    assert engine.run(reset, top_k=5).method == "power"  # auto: no tight bounds here
    result = engine.run(reset, top_k=5, method="push")
    assert result.method in ("push", "push+power") and result.converged
    assert list(top_k(result.scores, 5)) == reference_top(igraph_ppr(graph, reset), 5)


def test_push_terminates_on_exact_ties() -> None:
    # Nodes 1 and 2 are interchangeable (same neighbours, same weights, same reset): their
    # scores are equal, no bound can order them, and the push must still stop.
    edges = [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (4, 5), (0, 5)]
    src, dst = np.array(edges).T
    adjacency = sp.csr_array((np.ones(14), (np.r_[src, dst], np.r_[dst, src])), shape=(6, 6))
    engine = PPREngine(adjacency)
    reset = np.array([1.0, 0.3, 0.3, 0.0, 0.0, 0.1])
    result = engine.run(reset, top_k=2, method="push")
    assert result.converged
    assert set(top_k(result.scores, 3)) == {0, 1, 2}


def test_auto_method_pushes_only_where_it_pays() -> None:
    adjacency, _ = symmetric_graph(seed=19, n=400, m=2000)
    engine = PPREngine(adjacency)
    rng = np.random.default_rng(19)
    reset = sparse_reset(rng, 400, 3)
    assert engine.run(reset, top_k=5).method == "push"
    assert engine.run(reset).method == "power"  # no top k to certify
    assert engine.run(rng.random(400) + 0.1, top_k=5).method == "power"  # seeds everywhere
    assert engine.run(np.stack([reset, reset], axis=1), top_k=5).method == "power"  # a batch
    assert engine.run(reset, top_k=5, edge_scale=np.ones(engine.num_edges)).method == "power"
    assert engine.run(reset, top_k=5, target_scale=np.ones(400)).method == "push"
    assert engine.run(reset, top_k=5, method="power").method == "power"


def test_push_arguments_are_checked() -> None:
    adjacency, _ = symmetric_graph(seed=20, n=50, m=200)
    engine = PPREngine(adjacency)
    reset = np.eye(50)[0]
    with pytest.raises(ValueError, match="one-dimensional"):
        engine.run(np.stack([reset, reset], axis=1), method="push")
    with pytest.raises(ValueError, match="edge_scale"):
        engine.run(reset, method="push", edge_scale=np.ones(engine.num_edges))
    with pytest.raises(ValueError, match="method"):
        engine.run(reset, method="gauss")
    with pytest.raises(ValueError, match="target_scale"):
        engine.run(reset, target_scale=np.ones(49))
    with pytest.raises(ValueError, match="target_scale"):
        engine.run(reset, target_scale=-np.ones(50))
    with pytest.raises(ValueError, match="reset"):
        engine.run(np.where(np.arange(50) == 3, np.nan, 0.0))


def test_push_with_no_candidates_returns_scores() -> None:
    adjacency, graph = symmetric_graph(seed=22, n=100, m=400)
    engine = PPREngine(adjacency)
    reset = np.eye(100)[5]
    result = engine.run(reset, top_k=3, among=np.empty(0, dtype=np.intp), method="push")
    assert result.converged and abs(float(result.scores.sum()) - 1.0) < 1e-5
    assert int(np.argmax(result.scores)) == int(np.argmax(igraph_ppr(graph, reset)))


def test_certified_top_k_at_damping_085_matches_igraphs_top_5() -> None:
    """At damping 0.85 a later step can still move a score by residual * 0.85 / 0.15: the certificate
    must wait for gaps wider than twice that (here it stops before the stable-set rule would)."""
    n = 6 * 4 + 100
    src, dst = [], []
    for i in range(6):  # six stars of three leaves, then a path of 100 nodes nothing reaches
        src += [4 * i] * 3
        dst += [4 * i + 1, 4 * i + 2, 4 * i + 3]
    src += list(range(24, n - 1))
    dst += list(range(25, n))
    src_a, dst_a = np.array(src), np.array(dst)
    weight = 1.0 + np.arange(len(src_a)) * 0.37 % 1.0  # distinct weights: no tied leaves
    adjacency = sp.csr_array(
        (np.r_[weight, weight], (np.r_[src_a, dst_a], np.r_[dst_a, src_a])), shape=(n, n)
    )
    graph = igraph.Graph(n=n, edges=np.c_[src_a, dst_a].tolist(), directed=False)
    graph.es["weight"] = weight.tolist()
    reset = np.zeros(n)
    reset[[0, 4, 8, 12, 16, 20]] = [32.0, 16.0, 8.0, 4.0, 2.0, 1.0]
    reference = igraph_ppr(graph, reset, 0.85)
    early = PPREngine(adjacency).run(reset, damping=0.85, top_k=5, method="power")
    assert early.converged and early.residual > 1e-4  # stopped by the certificate
    assert list(top_k(early.scores, 5)) == list(top_k(reference, 5)) == [0, 4, 3, 2, 8]
    best = np.sort(early.scores)[::-1][:6].astype(np.float64)
    assert np.min(best[:-1] - best[1:]) > 2 * early.residual * 0.85 / 0.15


def test_power_iteration_with_top_k_returns_dangling_mass_at_damping_085() -> None:
    adjacency, graph = random_graph(seed=1, n=60, m=240, directed=True, dangling=6)
    engine = PPREngine(adjacency)
    assert engine.dangling.any()
    reset = sparse_reset(np.random.default_rng(0), 60)
    result = engine.run(reset, damping=0.85, top_k=5, method="power")
    reference = igraph_ppr(graph, reset, 0.85)
    assert result.converged and list(top_k(result.scores, 5)) == list(top_k(reference, 5))
    np.testing.assert_allclose(result.scores, reference, rtol=0, atol=1e-4)


def _exact_ppr(adjacency: sp.csr_array, reset: np.ndarray, damping: float) -> np.ndarray:
    """PPR by a direct solve of ``(I - d P^T) x = (1 - d) r`` (float64; no dangling node here)."""
    out = np.asarray(adjacency.sum(axis=1)).ravel()
    assert np.all(out > 0)
    transition = sp.csr_array(sp.diags_array(1.0 / out) @ adjacency)
    n = adjacency.shape[0]
    system = sp.csc_array(sp.identity(n, format="csc") - damping * transition.T)
    scores = scipy.sparse.linalg.spsolve(system, (1.0 - damping) * reset / reset.sum())
    return np.asarray(scores / scores.sum())


@pytest.mark.parametrize(
    ("damping", "bridge", "side"), [(0.9, 0.003, 0.0046), (0.95, 0.003, 0.0102), (0.97, 0.003, 0.0169)]
)
def test_stable_set_rule_scales_with_damping(damping: float, bridge: float, side: float) -> None:
    """A walk-like phrase/passage graph whose second cluster fills slowly through a weak fact edge:
    the top-5 set settles early while passage B1 (node 8) is still gaining. The stable-set rule
    stopped once the residual was under 1e-4, whatever the damping; at damping 0.9-0.97 the error
    left is up to d / (1 - d) times that (B1 read 24% low at 0.95), and the top 5 came back with
    passage C (node 11) above B1 although B1's exact score is 6-9% higher."""
    # phrases 0..4 (s, a, b, t, u); passages 5..11 (A1, A2, A3, B1, B2, B3, C)
    edges = [
        (5, 0, 1.0),
        (5, 1, 1.0),
        (6, 1, 1.0),
        (6, 2, 1.0),
        (7, 0, 1.0),
        (7, 2, 1.0),  # cluster 1
        (0, 1, 1.0),
        (1, 2, 1.0),  # its facts
        (2, 3, bridge),  # the weak fact edge into cluster 2
        (8, 3, 1.0),
        (8, 4, 1.0),
        (9, 3, 1.0),
        (10, 4, 1.0),
        (3, 4, 1.0),  # cluster 2
        (11, 1, side),  # passage C, weakly on phrase a
    ]
    src, dst, weight = (np.array(column) for column in zip(*edges))
    adjacency = sp.csr_array((np.r_[weight, weight], (np.r_[src, dst], np.r_[dst, src])), shape=(12, 12))
    passages = np.arange(5, 12)
    reset = np.zeros(12)
    reset[0] = 1.0
    exact = _exact_ppr(adjacency, reset, damping)
    want = list(top_k(exact, 5, passages))
    assert want[3:] == [8, 11] and exact[8] > 1.05 * exact[11]  # a clear gap, not a near tie
    engine = PPREngine(adjacency)
    for method in ("auto", "power"):
        result = engine.run(reset, damping=damping, top_k=5, among=passages, method=method, max_iter=2000)
        assert result.converged
        assert list(top_k(result.scores, 5, passages)) == want
