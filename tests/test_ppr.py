"""Personalized PageRank engine (ragroute.graph.ppr): igraph's semantics, batches, per-query weights.

Small random graphs, deterministic seeds, no network; igraph's PRPACK solver is the reference.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import igraph
import numpy as np
import pytest
import scipy.sparse as sp

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
        early = engine.run(reset, top_k=5)
        assert early.converged and early.iterations < exact.iterations
        assert early.iterations < engine.run(reset).iterations  # fewer than the default tol=1e-6 too
        # stopped by the stable-set rule (residual < 1e-4) or by the certificate (gaps > 2 bounds)
        best = np.sort(early.scores)[::-1][:6].astype(np.float64)
        assert early.residual < 1e-4 or np.min(best[:-1] - best[1:]) > 2 * early.residual
        assert list(top_k(early.scores, 5)) == list(top_k(exact.scores, 5))
        restricted = engine.run(reset, top_k=5, among=passages)
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
    early = engine.run(reset, top_k=5)
    assert early.converged and early.residual > 1e-4  # the stable-set rule alone would go on
    assert early.iterations < 8
    assert list(top_k(early.scores, 5)) == list(top_k(exact.scores, 5))
    # tied seeds can never be certified in order: the run goes on to the stable-set rule
    tied = np.zeros(n)
    tied[[5, 50, 500, 900, 1500, 1900]] = 1.0
    assert engine.run(tied, top_k=5).residual < 1e-4


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
