"""Personalized PageRank over a weighted knowledge graph (HippoRAG 2 style retrieval).

:class:`PPREngine` holds the transition matrix of a weighted directed graph (float32
CSRs of ``P`` and ``P^T``) and computes personalized PageRank for one query or a batch
of queries. The scores ``x`` for damping ``d`` and reset (personalization) vector ``r``
are the fixed point of

    x = (1 - d) * r + d * (P^T @ x) + d * dangling_mass(x) * r

where ``P[i, j] = w(i -> j) / sum_k w(i -> k)`` and ``dangling_mass(x)`` is the score
held by nodes without out-weight: a dangling node sends its mass back to the reset
vector. These are the semantics of igraph's PRPACK solver,
``Graph.personalized_pagerank(reset=r, damping=d, directed=True, weights=w)`` (the
tests check the scores against it to 1e-5). An undirected graph is passed with both
directions of every edge; an undirected self-loop of weight ``w`` then stands as
``2 * w`` on the diagonal, which is what igraph does too.

HippoRAG 2 runs PPR with damping 0.5 over phrase and passage nodes and ranks the
passages: :func:`top_k` with ``among=passage_ids`` picks them, and ``run(top_k=...,
among=passage_ids)`` may stop as soon as the best passages are settled.

Two methods (:meth:`PPREngine.run`, ``method=``):

* **power iteration** (``"power"``), for batches too: the iterate is the fixed-point
  equation above, one sparse product per step; ``top_k`` stops it once no later step
  can reorder the top k (:func:`_certified`) or once the top-k set is stable with the
  error still possible (the residual times ``max(1, d / (1 - d))``) under 1e-4. While a
  query's scores still cover few nodes, a step pushes from those nodes' rows of ``P``
  instead of a full product.
* **forward push** (``"push"``, one query; Andersen, Chung and Lang): residual mass is
  pushed from the seeds outwards, only where it is large per unit of out-weight, so a
  query touches the neighbourhood that matters rather than the graph. On a symmetric
  adjacency the walk is reversible, which bounds how much any node can still gain by
  its out-weight times the largest residual ratio; the push stops as soon as those
  bounds certify the ordered top k (:class:`_Push`). ``"auto"`` (the default) pushes
  single few-seed queries with ``top_k`` on symmetric graphs, and iterates otherwise.

Per-query edge weights never touch the engine: ``edge_scale`` (one factor per edge; a
re-weighted transition per call, power iteration) or ``target_scale`` (one factor per
node, scaling the edges into it; applied on the fly by both methods, and it keeps a
symmetric graph's walk reversible). So one engine serves queries from several threads.

Speed (single core, float32): the engine numbers nodes internally by decreasing degree,
so the hub entries of the score vector that most edges read share cache lines (about
twice as fast a product on a skewed graph). Scores come back in the adjacency's own
numbering. A batch shares the steps' overheads but scipy's multi-vector product costs
about as much per query as single products, so batching is a convenience rather than a
speed-up. Measured by ``ragroute bench ppr`` (damping 0.5, walk-like queries with 5
strong and 100 weak seeds, ``top_k=5``, the default method: the push; two busy cores,
see docs/graph.md): on a synthetic skewed graph of 97k nodes and 1.4M directed edges,
7.0 ms per query against 235 ms for igraph's ``personalized_pagerank`` (33.6x); on the
2wiki knowledge graph (50k nodes, 704k edges, top 5 among the passages) 6.5 ms against
86 ms (13.1x); the same top 5 as igraph on every query. Power iteration alone measured
9.1x and 5.2x there (on a quiet machine).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: The methods of :meth:`PPREngine.run`.
METHODS = ("auto", "power", "push")
#: Error bound (the residual times ``max(1, d / (1 - d))``) under which the ``top_k`` early stop
#: may apply (with the top-k set stable).
TOP_K_RESIDUAL = 1e-4
#: Iterations for which every top-k set must be unchanged before the ``top_k`` early stop.
TOP_K_STABLE_ITERATIONS = 2
#: Top-k sets are tracked once the residual is below this multiple of the early-stop bound.
TOP_K_TRACK_FACTOR = 8.0
#: Early iterations, while the scores reach few nodes, push from those nodes' rows of ``P``
#: instead of a full product, as long as those rows hold under 1 / PUSH_FRACTION of the edges
#: (a push round over more edges than that is a full product too).
PUSH_FRACTION = 4

# Forward push (method="push", see _Push). Numbers picked on the bench graphs (2wiki, synthetic).
#: The first residual threshold (per unit of out-weight) is the seeds' largest over this.
PUSH_START = 4.0
#: The threshold is divided by this once no node is above it (a level) ...
PUSH_FACTOR = 4.0
#: ... or by this after a level that pushed under 1 / PUSH_FAST_BELOW of the edges (such
#: levels cost mostly their fixed overhead).
PUSH_FACTOR_FAST = 16.0
PUSH_FAST_BELOW = 64
#: A round over more edges than 1 / PUSH_ROW_FRACTION of the nodes multiplies by the front's
#: rows of ``P`` (scipy) instead of gathering edge by edge (numpy).
PUSH_ROW_FRACTION = 4
#: A level stops once its front has at most PUSH_TAIL_EDGES edges and no ratio above
#: PUSH_TAIL_RATIO times the threshold: those few nodes go with the next level (and the
#: bounds use their ratio), which saves rounds of pure overhead.
PUSH_TAIL_EDGES = 1024
PUSH_TAIL_RATIO = 1.25
#: Once a level's front holds more than 1 / PUSH_SWEEP_FRACTION of the edges, every later
#: step pushes all the residual at once: one full product (a sweep), cheaper per edge.
PUSH_SWEEP_FRACTION = 8
#: A push hands its estimate over to power iteration after this many products' worth of
#: edge work (near ties that no bound can order in reasonable time).
PUSH_BUDGET = 16.0
#: ``method="auto"`` pushes when the reset has at most 1 / PUSH_SEED_FRACTION of the nodes
#: and the damping is at most PUSH_MAX_DAMPING (at 0.85 push and power iteration cost the
#: same on the 2wiki graph; at 0.5 and 0.7 the push is two to three times faster).
PUSH_SEED_FRACTION = 8
PUSH_MAX_DAMPING = 0.8
#: Relative margin by which a certified lower bound must clear an upper bound (float32 sums).
PUSH_SLACK = 4e-6


@dataclass(frozen=True)
class PPRResult:
    """Scores of one :meth:`PPREngine.run`.

    ``scores`` is float32, shaped like the reset (``(n,)`` or ``(n, q)``); each column sums
    to 1, or is all zeros where its reset was all zeros (``zero_reset`` then says so).
    ``method`` is how the scores were found: ``"power"`` (power iteration), ``"push"``
    (forward push) or ``"push+power"`` (a push that handed over to power iteration).
    For power iteration ``residual`` is the L1 change of the last iteration (a float for
    one query, a ``(q,)`` array for a batch) and ``iterations`` counts its steps; for a
    push, ``residual`` is the mass not yet pushed (an L1 bound on the error of the
    scores before normalisation) and ``iterations`` counts its rounds. ``converged`` is
    True when the run stopped on ``tol`` or on the ``top_k`` criterion rather than on
    ``max_iter``.
    """

    scores: np.ndarray
    iterations: int
    residual: float | np.ndarray
    converged: bool
    zero_reset: bool | np.ndarray = False
    method: str = "power"


def top_k(scores: np.ndarray, k: int, among: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest ``scores``, best first, ties broken by the smaller index.

    ``scores`` is one-dimensional. ``among`` (an index array, e.g. the passage nodes)
    restricts the choice to those indices; fewer than ``k`` candidates give them all.
    """
    values_all = np.asarray(scores)
    if values_all.ndim != 1:
        raise ValueError(f"top_k expects one-dimensional scores, got shape {values_all.shape}")
    if among is None:
        candidates = np.arange(values_all.shape[0])
        values = values_all
    else:
        candidates = np.asarray(among, dtype=np.intp).ravel()
        values = values_all[candidates]
    size = values.shape[0]
    k = min(int(k), size)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if k < size:
        kth = np.partition(values, size - k)[size - k]
        keep = np.flatnonzero(values >= kth)  # the k best and everything tied with the k-th
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values.astype(np.float64)))[:k]
    return candidates[order].astype(np.intp, copy=False)


def _index_dtype(nnz: int, n: int) -> type[np.integer]:
    return np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64


class PPREngine:
    """Personalized PageRank over a fixed weighted directed graph.

    ``adjacency`` is an ``n x n`` non-negative sparse matrix (anything
    ``scipy.sparse.csr_array`` accepts; a ``csr_array`` is used as given), entry
    ``[i, j]`` being the weight of the edge ``i -> j``. Its stored entries, in CSR order,
    are the engine's edges: :attr:`num_edges`, :meth:`edges` and the ``edge_scale`` of
    :meth:`run` follow that order (duplicate entries count as separate parallel edges).
    A node whose out-weight is zero is dangling. On a symmetric adjacency (an undirected
    graph stored both ways) the walk is reversible, which gives the local push of
    :meth:`run` its tight bounds.
    """

    def __init__(self, adjacency: sp.sparray | sp.spmatrix | np.ndarray) -> None:
        """Precompute the float32 CSRs of ``P^T`` and ``P`` from ``adjacency`` (see the class docstring)."""
        adj = sp.csr_array(adjacency)
        if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adjacency must be square, got shape {adj.shape}")
        n = int(adj.shape[0])
        weights = np.asarray(adj.data, dtype=np.float64).copy()
        if not np.all(np.isfinite(weights)):
            raise ValueError("adjacency weights must be finite")
        if np.any(weights < 0):
            raise ValueError("adjacency weights must be non-negative")
        idx_dtype = _index_dtype(weights.shape[0], n)
        self._n = n
        self._weights = weights
        self._indptr = np.asarray(adj.indptr, dtype=idx_dtype).copy()
        self._targets = np.asarray(adj.indices, dtype=idx_dtype).copy()
        self._out_degree = np.diff(self._indptr)
        sources = np.repeat(np.arange(n, dtype=idx_dtype), self._out_degree)
        # Internal node order: by decreasing degree (stable), so that the most visited
        # entries of the score vector sit together in cache (about 2x faster products on
        # skewed graphs). Internal node i is node order[i] of the adjacency.
        degree = np.bincount(sources, minlength=n) + np.bincount(self._targets, minlength=n)
        order = np.argsort(-degree, kind="stable").astype(idx_dtype)
        position = np.empty(n, dtype=idx_dtype)
        position[order] = np.arange(n, dtype=idx_dtype)
        self._order = order
        self._position = position
        # The CSRs of P (rows = sources) and P^T (rows = targets), in the internal numbering,
        # keep per stored entry the position of its edge in the adjacency (forward / _t_edge).
        nnz = weights.shape[0]
        numbered = sp.csr_array(
            (np.arange(1, nnz + 1, dtype=np.int64), self._targets, self._indptr), shape=(n, n)
        )
        rows = numbered[order]
        forward = sp.csr_array((rows.data, position[rows.indices], rows.indptr), shape=(n, n))
        forward.sort_indices()
        backward = forward.T.tocsr()
        if forward.nnz != nnz or backward.nnz != nnz:  # pragma: no cover - scipy keeps stored entries
            raise RuntimeError("reordering the adjacency lost entries")
        self._t_edge = (backward.data - 1).astype(idx_dtype)
        self._t_cols = backward.indices.astype(idx_dtype)
        self._t_indptr = backward.indptr.astype(idx_dtype)
        self._row_starts = self._indptr[:-1][self._out_degree > 0].astype(np.intp)
        out_weight = np.zeros(n, dtype=np.float64)
        if self._row_starts.size:
            out_weight[self._out_degree > 0] = np.add.reduceat(weights, self._row_starts)
        self._mu = out_weight[order].astype(np.float32)  # the push's reversible measure, unscaled
        self._inv_mu = np.zeros(n, dtype=np.float32)
        np.divide(1.0, self._mu, out=self._inv_mu, where=self._mu > 0)
        self._mu_order = np.argsort(-self._mu, kind="stable")
        self._mu_max = float(self._mu.max(initial=0.0))
        self._symmetric = _is_symmetric(adj)
        self._transition, probability, self._dangling = self._build_transition(weights)
        # P itself serves the push (its rows), and power iteration's first steps while a
        # query's scores cover few nodes (queries with an edge_scale skip those: they would
        # need their own P).
        self._forward = sp.csr_array(
            (
                np.take(probability, forward.data - 1),
                forward.indices.astype(idx_dtype),
                forward.indptr.astype(idx_dtype),
            ),
            shape=(n, n),
        )
        self._forward_degree = np.diff(self._forward.indptr)

    @property
    def num_nodes(self) -> int:
        """Number of nodes ``n``."""
        return self._n

    @property
    def num_edges(self) -> int:
        """Number of stored edges (the length an ``edge_scale`` must have)."""
        return int(self._weights.shape[0])

    @property
    def dangling(self) -> np.ndarray:
        """Boolean mask of the nodes without out-weight (their mass returns to the reset)."""
        if self._dangling is None:
            return np.zeros(self._n, dtype=bool)
        return self._dangling[self._position] > 0

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sources, targets, weights)`` of the stored edges, in the order ``edge_scale`` uses."""
        sources = np.repeat(np.arange(self._n, dtype=np.intp), self._out_degree)
        return sources, self._targets.astype(np.intp), self._weights.copy()

    def _build_transition(self, weights: np.ndarray) -> tuple[sp.csr_array, np.ndarray, np.ndarray | None]:
        """The transition for edge weights ``weights``: ``(P^T, probabilities, dangling)``.

        ``P^T`` is a float32 CSR in the internal numbering; the probabilities ``P[i, j]``
        are float32, one per edge in the adjacency's order; the float32 dangling indicator
        is in the internal numbering (None when no node is dangling).
        """
        n = self._n
        out_weight = np.zeros(n, dtype=np.float64)
        if self._row_starts.size:
            out_weight[self._out_degree > 0] = np.add.reduceat(weights, self._row_starts)
        has_out = out_weight > 0
        inverse = np.zeros(n, dtype=np.float64)
        np.divide(1.0, out_weight, out=inverse, where=has_out)
        probability = (weights * np.repeat(inverse, self._out_degree)).astype(np.float32)
        transition = sp.csr_array(
            (np.take(probability, self._t_edge), self._t_cols, self._t_indptr), shape=(n, n)
        )
        dangling = None if bool(has_out.all()) else (~has_out[self._order]).astype(np.float32)
        return transition, probability, dangling

    def run(
        self,
        reset: np.ndarray,
        *,
        damping: float = 0.5,
        tol: float = 1e-6,
        max_iter: int = 100,
        top_k: int | None = None,
        edge_scale: np.ndarray | None = None,
        target_scale: np.ndarray | None = None,
        among: np.ndarray | None = None,
        method: str = "auto",
    ) -> PPRResult:
        """Personalized PageRank for the reset vector(s) ``reset``.

        ``reset`` is ``(n,)`` for one query or ``(n, q)`` for ``q`` queries (columns),
        non-negative; each column is normalised to sum 1 here, and an all-zero column gives
        all-zero scores (flagged in ``zero_reset``). A NaN ``tol`` or ``max_iter``, a ``top_k``
        that is no whole number and an ``among`` id outside ``[0, n)`` are a ValueError.

        ``method="power"``: power iteration in float32 (one sparse-dense product per step
        for the whole batch) until the L1 change of every column is below ``tol``, or
        ``max_iter`` steps. ``top_k`` also stops the run once the top-``top_k`` node set of
        every column (restricted to ``among`` when given: node ids, e.g. the passage nodes) is
        certified (see :func:`_certified`), or has been unchanged for 2 consecutive
        iterations with every residual times ``max(1, damping / (1 - damping))`` (a bound on
        what later steps can still move) below ``max(tol, 1e-4)``.

        ``method="push"`` (one query only): seed-local forward push (Andersen, Chung and
        Lang) from the reset's nodes, touching only the neighbourhood that holds mass (see
        :class:`_Push`), until the ordered top ``top_k`` (among ``among``) is certified by
        bounds on the mass still to be pushed, or, without ``top_k``, until that mass is
        below ``tol``. Once the mass covers much of the graph, each step pushes all of it
        with one product, and the stable-set rule above applies too. The top ``top_k``
        scores are then those of the converged walk, in the same order; the other scores
        are lower bounds, normalised (their L1 error is at most ``residual``). A push that
        has done ``PUSH_BUDGET`` products' worth of work hands its estimate to power
        iteration, which finishes by the rules above (``max_iter`` then counts its steps).

        ``method="auto"`` (the default) pushes for one query with ``top_k`` and no
        ``edge_scale``, on a symmetric adjacency (where the push's bounds are tight: a
        reversible walk), whose reset holds at most 1/8 of the nodes, with damping at most
        0.8; it iterates otherwise.

        ``edge_scale`` multiplies the edge weights for this call only (a ``(num_edges,)``
        non-negative vector in the adjacency's CSR order, see :meth:`edges`): a re-weighted
        transition is built for the call (O(num_edges)) and power iteration runs on it.
        ``target_scale`` (``(n,)``, non-negative) multiplies the weight of every edge *into*
        node ``v`` by ``target_scale[v]`` for this call only: the push applies it on the
        fly (one product finds the new out-weights) and keeps its tight bounds, since such
        a scaling of a symmetric adjacency leaves the walk reversible; power iteration
        builds a re-weighted transition. Neither scale changes the engine, so concurrent
        calls are safe. Each is one vector, so it serves one query (``q == 1``) or a batch
        whose queries all share it; given both, they multiply.
        """
        n = self._n
        if not 0.0 <= damping < 1.0:
            raise ValueError(f"damping must be in [0, 1), got {damping}")
        # until session 54 a NaN max_iter passed (no step ran: the reset came back as the scores)
        # and so did a NaN tol (every walk ran to max_iter); a top_k that is no whole number
        # failed deep in the run with a TypeError traceback (2.5) or a NaN conversion error
        if not max_iter >= 1:
            raise ValueError(f"max_iter must be at least 1, got {max_iter}")
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1
        ):
            raise ValueError(f"top_k must be a whole number of at least 1, got {top_k!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        values = np.asarray(reset)
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)
        single = values.ndim == 1
        if values.ndim not in (1, 2) or values.shape[0] != n:
            raise ValueError(f"reset must have shape ({n},) or ({n}, q), got {values.shape}")
        # Only nonzero entries need checking (NaN is nonzero), and non-negative values sum to
        # a finite number only when all are finite.
        seeds = np.flatnonzero(values != 0) if single else None  # (much faster than on floats)
        checked = values if seeds is None else values[seeds]
        sums = checked.sum(axis=0, dtype=np.float64)
        if not (np.all(np.isfinite(sums)) and np.all(checked.min(axis=0, initial=0.0) >= 0)):
            raise ValueError("reset must be finite and non-negative")
        scale = None
        if edge_scale is not None:
            scale = np.asarray(edge_scale, dtype=np.float64)
            if scale.shape != (self.num_edges,):
                raise ValueError(f"edge_scale must have shape ({self.num_edges},), got {scale.shape}")
            if not np.all(np.isfinite(scale)) or np.any(scale < 0):
                raise ValueError("edge_scale must be finite and non-negative")
        node_scale = None
        if target_scale is not None:
            node_scale = np.asarray(target_scale, dtype=np.float64)
            if node_scale.shape != (n,):
                raise ValueError(f"target_scale must have shape ({n},), got {node_scale.shape}")
            if not np.all(np.isfinite(node_scale)) or np.any(node_scale < 0):
                raise ValueError("target_scale must be finite and non-negative")
        if among is not None:  # until session 54 a negative id stood for another node, silently,
            # and one past the nodes failed with an IndexError traceback
            among = np.asarray(among)
            if among.size and (
                not np.issubdtype(among.dtype, np.integer) or among.min() < 0 or among.max() >= n
            ):
                raise ValueError(f"among must hold node ids in [0, {n}), got {among.ravel()[:8].tolist()}")
        if method == "push" and not single:
            raise ValueError("method='push' runs one query: give a one-dimensional reset")
        if method == "push" and scale is not None:
            raise ValueError("method='push' takes no edge_scale (a target_scale works with it)")
        if scale is not None and node_scale is not None:  # both: one per-edge scale
            scale = scale * node_scale[self._targets]
            node_scale = None
        inner_scale = None if node_scale is None else node_scale[self._order].astype(np.float32)
        zero = sums <= 0
        if single and zero:
            seeds = None
        if method == "auto":
            push = (
                seeds is not None
                and top_k is not None
                and scale is None
                and self._symmetric
                and seeds.size * PUSH_SEED_FRACTION <= n
                and damping <= PUSH_MAX_DAMPING
            )
            method = "push" if push else "power"
        rounds, start = 0, None
        if method == "push" and seeds is not None:
            mass = (checked / sums).astype(np.float32)
            found = self._push(self._position[seeds], mass, damping, tol, top_k, among, inner_scale)
            if isinstance(found, PPRResult):
                return found
            rounds, start = found
        r = np.ascontiguousarray((values / np.where(zero, 1.0, sums))[self._order], dtype=np.float32)
        candidates = None if among is None else _distinct(self._position[np.asarray(among, dtype=np.intp)])
        forward: sp.csr_array | None = None
        if scale is not None:
            transition, _, dangling = self._build_transition(self._weights * scale)
        elif inner_scale is not None:
            transition, forward, dangling = self._scaled_transition(inner_scale)
        else:
            transition, forward, dangling = self._transition, self._forward, self._dangling
        result = self._power(
            r, start, transition, forward, dangling, damping, tol, max_iter, top_k, candidates, zero
        )
        if start is None:
            return result
        return dataclasses.replace(result, iterations=result.iterations + rounds, method="push+power")

    def _scaled_transition(
        self, node_scale: np.ndarray
    ) -> tuple[sp.csr_array, sp.csr_array, np.ndarray | None]:
        """``(P'^T, P', dangling)`` for edges into node ``v`` scaled by ``node_scale[v]``
        (internal numbering): ``P'[u, v] = P[u, v] * s[v] / (P @ s)[u]``."""
        n = self._n
        weights = np.asarray(self._forward @ node_scale, dtype=np.float64)  # (P s)[u]
        inverse = np.zeros(n, dtype=np.float64)
        np.divide(1.0, weights, out=inverse, where=weights > 0)
        fwd = self._forward
        row_factor = np.repeat(inverse, self._forward_degree)
        data = (fwd.data * node_scale[fwd.indices] * row_factor).astype(np.float32)
        forward = sp.csr_array((data, fwd.indices, fwd.indptr), shape=(n, n))
        transition = sp.csr_array(forward.T)  # CSC of P' read as the CSR of P'^T
        transition = transition.tocsr()
        dangling = None if bool((weights > 0).all()) else (weights <= 0).astype(np.float32)
        return transition, forward, dangling

    def _power(
        self,
        r: np.ndarray,
        start: np.ndarray | None,
        transition: sp.csr_array,
        forward: sp.csr_array | None,
        dangling: np.ndarray | None,
        damping: float,
        tol: float,
        max_iter: int,
        top_k: int | None,
        candidates: np.ndarray | None,
        zero: np.ndarray,
    ) -> PPRResult:
        """Power iteration from ``r`` (or from the estimate ``start``) in the internal numbering."""
        n = self._n
        single = r.ndim == 1
        d = np.float32(damping)
        teleport = np.float32(1.0 - damping)
        q = 1 if single else r.shape[1]
        # Column sums by BLAS (numpy's own axis-0 sum of an (n, q) array is many times slower).
        column_ones = np.ones(n, dtype=np.float32)
        row_ones = None if single else np.ones(q, dtype=np.float32)
        seeds = np.flatnonzero(r > 0) if single else np.flatnonzero(r @ row_ones > 0)
        seed_reset = r[seeds] if seeds.size * 8 < n else None  # few seeds: update only those rows
        x = r.copy() if start is None else start
        scratch = np.empty_like(r)
        top_bound = max(tol, TOP_K_RESIDUAL)
        # The stable-set rule bounds what later steps can still move (residual * d / (1 - d),
        # see _certified), never less than the residual itself: at damping 0.5 and below it is
        # the residual (as it always was); at 0.95 the residual must be 19 times smaller. Until
        # session 50 it read the residual alone, so a walk at damping 0.85 to 0.97 stopped with
        # 5.7 to 32 times the error and could return its top k in the wrong order, or set.
        error_per_residual = max(1.0, damping / (1.0 - damping))
        active = np.flatnonzero(~np.atleast_1d(zero)) if top_k is not None else np.empty(0, dtype=np.intp)
        previous: dict[int, np.ndarray] = {}
        floors = np.zeros(q, dtype=np.float64)
        stable = np.zeros(q, dtype=np.int64)
        residual: float | np.ndarray = 0.0 if single else np.zeros(q, dtype=np.float64)
        sparse_phase = forward is not None and start is None
        certify_below = np.inf  # certification is tried while 2 * bound is below this
        converged = False
        iterations = 0
        while iterations < max_iter:
            iterations += 1
            y = None
            if sparse_phase and forward is not None:
                y = self._sparse_product(forward, x, row_ones)
                sparse_phase = y is not None
            if y is None:
                y = transition @ x
            y *= d
            coef = teleport if dangling is None else teleport + d * (dangling @ x)
            if seed_reset is not None:
                y[seeds] += seed_reset * coef
            else:
                np.multiply(r, coef, out=scratch)
                y += scratch
            np.subtract(y, x, out=scratch)
            np.abs(scratch, out=scratch)
            residual = float(scratch.sum()) if single else (column_ones @ scratch).astype(np.float64)
            x = y
            worst = residual if isinstance(residual, float) else float(np.max(residual, initial=0.0))
            if worst < tol:
                converged = True
                break
            if not active.size or top_k is None:  # active is empty when top_k is None
                continue
            bound = worst * damping / (1.0 - damping)
            certify = 2 * bound < certify_below
            track = worst * error_per_residual < TOP_K_TRACK_FACTOR * top_bound
            if not (certify or track):
                continue
            # One selection of the top k + 1 per column serves both stop rules.
            columns: list[int] = active.tolist()
            tops: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            for column in columns:
                values = x if single else x[:, column]
                tops[column], floors[column] = _top_values(values, top_k, candidates, floors[column])
            if certify:
                certify_below = _certified([tops[c][1] for c in columns], bound)
                if certify_below == np.inf:
                    converged = True
                    break
            if track:
                for column in columns:
                    current = np.sort(tops[column][0][:top_k])
                    before = previous.get(column)
                    stable[column] = (
                        stable[column] + 1 if before is not None and np.array_equal(before, current) else 0
                    )
                    previous[column] = current
                settled = bool(np.all(stable[active] >= TOP_K_STABLE_ITERATIONS))
                if worst * error_per_residual < top_bound and settled:
                    converged = True
                    break

        scores = x[self._position]  # back to the adjacency's node numbering
        totals = scores.sum(dtype=np.float64) if single else column_ones @ scores
        scores /= np.where(zero, 1.0, totals).astype(np.float32)
        if single:
            return PPRResult(scores, iterations, float(residual), converged, bool(zero))
        return PPRResult(scores, iterations, np.asarray(residual, dtype=np.float64), converged, zero)

    def _sparse_product(
        self, forward: sp.csr_array, x: np.ndarray, row_ones: np.ndarray | None
    ) -> np.ndarray | None:
        """``P^T @ x`` from the rows of ``P`` at the nonzeros of ``x``; None when too many to pay off."""
        rows = np.flatnonzero(x > 0) if row_ones is None else np.flatnonzero(x @ row_ones > 0)  # x >= 0
        if int(self._forward_degree[rows].sum()) * PUSH_FRACTION > forward.nnz:
            return None
        if rows.size == 0:
            return np.zeros_like(x)
        return np.asarray(forward[rows].T @ x[rows], dtype=np.float32)

    def _push(
        self,
        seeds: np.ndarray,
        seed_mass: np.ndarray,
        damping: float,
        tol: float,
        k: int | None,
        among: np.ndarray | None,
        node_scale: np.ndarray | None,
    ) -> PPRResult | tuple[int, np.ndarray]:
        """Forward push from ``seed_mass`` on ``seeds`` (internal numbering, sums to 1); see
        :class:`_Push`. Returns the result, or ``(rounds, estimate)`` for power iteration to
        finish once the work passed ``PUSH_BUDGET`` products."""
        push = _Push(self, seeds, seed_mass, damping, node_scale)
        candidates = None  # None: every node
        if among is not None:
            mask = np.zeros(self._n, dtype=bool)
            mask[self._position[np.asarray(among, dtype=np.intp)]] = True
            candidates = np.flatnonzero(mask)
        k_eff = None if k is None else min(k, self._n if candidates is None else candidates.size)
        budget = PUSH_BUDGET * max(self._forward.nnz, 1)
        ratios = seed_mass / np.where(push.mu[seeds] > 0, push.mu[seeds], np.inf)
        theta = float(ratios.max(initial=0.0)) / PUSH_START
        front = seeds[seed_mass > theta * push.mu[seeds]]
        nnz = self._forward.nnz
        sweeping = False
        stable, previous = 0, None
        level_work = 0
        while True:
            if sweeping:  # the residual is everywhere: push all of it, one product
                eps = push.sweep()
            else:
                while front.size:
                    front = push.spread(front, theta)
                    if push.work > budget:
                        return push.rounds, push.handover()
                    if push.edges(front) <= PUSH_TAIL_EDGES and push.ratio(front) <= PUSH_TAIL_RATIO * theta:
                        break  # a few nodes just above theta: leave them for the next level
                # Every residual is at most eps * mu: nodes off the front are below theta.
                eps = max(theta, push.ratio(front))
            push.level_done()
            total = push.residual() if k_eff is None or sweeping or not self._symmetric else None
            if total is not None and (total <= 0 or (k_eff is None and total < tol)):
                break  # every residual pushed to the end, or the residual is below tol
            if k_eff is not None:
                if push.certified(k_eff, eps, candidates):
                    break
                if sweeping:  # sweeps are power iteration steps: its stable-set rule applies
                    current = None if push.top is None else np.sort(push.top)
                    same = current is not None and previous is not None and np.array_equal(current, previous)
                    stable, previous = (stable + 1 if same else 0), current
                    settled = stable >= TOP_K_STABLE_ITERATIONS
                    if settled and total is not None and total < max(tol, TOP_K_RESIDUAL):
                        break
            if push.work > budget:
                return push.rounds, push.handover()
            if not sweeping:
                # Levels that touched few edges cost mostly their overhead: step down faster.
                theta /= PUSH_FACTOR_FAST if push.work - level_work < nnz // PUSH_FAST_BELOW else PUSH_FACTOR
                level_work = push.work
                front = push.above(theta)
                if not front.size and push.residual() <= 0:
                    break  # no residual left: the scores are exact (the top k has ties)
                sweeping = push.edges(front) * PUSH_SWEEP_FRACTION > nnz
        return PPRResult(push.scores(), push.rounds, max(push.residual(), 0.0), True, False, method="push")


class _Push:
    """The state of one forward push (Andersen, Chung and Lang) over a :class:`PPREngine`.

    The estimate ``p`` and the residual ``s`` start at ``0`` and the reset; pushing node
    ``u`` adds ``(1 - d) s[u]`` to ``p[u]`` and ``d s[u] P[u, v]`` to each ``s[v]``, and
    empties ``s[u]``. The exact scores are ``p + PPR(s)``, ``PPR(s)`` being the walk from
    ``s`` (total mass ``sum(s)``), so ``p[v] + (1 - d) s[v]`` bounds node ``v``'s score from
    below. A dangling node's pushed mass is dropped: that walk's scores are proportional
    to igraph's (whose dangling mass restarts from the reset), and the result is
    normalised. A round pushes, at once, every node whose residual exceeds ``theta * mu``
    (``mu``: its out-weight); when none is left the caller lowers ``theta``. Only nodes
    that hold or held residual are visited, until the residual covers much of the graph:
    then a step pushes all of it with one product (a *sweep*, a power iteration step on
    the residual).

    Upper bounds: a walk from ``u != v`` ends at ``v`` with probability at most ``d``, so
    ``PPR(s)[v] <= s[v] + d (sum(s) - s[v])``. On a symmetric adjacency (with or without a
    ``target_scale``) the walk is reversible: ``mu(u) PPR_u[v] = mu(v) PPR_v[u]``, ``mu``
    being the scaled out-weight times the node's own scale. With ``f = s / mu`` that gives
    ``PPR(s)[v] = mu(v) <f, PPR_v> = mu(v) (1 - d) sum_t d^t (P^t f)[v]``, and when every
    ``f <= theta``, ``p[v] + (1 - d) s[v] + (1 - d) d mu(v) (P f)[v]`` is a lower bound and
    adding ``d^2 mu(v) theta`` gives an upper bound (the local push's bound, tight where
    the residual is spread thin); nodes not refined so get ``p[v] + (1 - d) s[v] +
    d mu(v) theta``. :meth:`certified` accepts the ordered top ``k`` when each lower bound
    is above the next one's upper bound and the ``k``-th above every other candidate's: no
    further push can change it.
    """

    def __init__(
        self,
        engine: PPREngine,
        seeds: np.ndarray,
        seed_mass: np.ndarray,
        damping: float,
        node_scale: np.ndarray | None,
    ) -> None:
        n = engine._n
        self.engine = engine
        forward = engine._forward
        self.indptr, self.indices, self.data = forward.indptr, forward.indices, forward.data
        self.degree = engine._forward_degree
        self.alpha = np.float32(1.0 - damping)
        self.d = np.float32(damping)
        self.node_scale = node_scale
        if node_scale is None:
            self.mu, self.inv_mu, self.row_factor = engine._mu, engine._inv_mu, None
        else:  # P'[u, v] = P[u, v] s[v] / (P s)[u]
            weights = np.asarray(forward @ node_scale, dtype=np.float32)
            self.row_factor = np.zeros(n, dtype=np.float32)
            np.divide(1.0, weights, out=self.row_factor, where=weights > 0)
            self.mu = engine._mu * weights * node_scale
            self.inv_mu = np.zeros(n, dtype=np.float32)
            np.divide(1.0, self.mu, out=self.inv_mu, where=self.mu > 0)
        self.res = np.zeros(n, dtype=np.float32)
        self.res[seeds] = seed_mass
        self.p = np.zeros(n, dtype=np.float32)  # p > 0 exactly at the nodes pushed so far
        self.reached = np.zeros(n, dtype=bool)  # the nodes that hold or held residual
        self.reached[seeds] = True
        self.ids = seeds  # the reached nodes, as of the last level
        self.local = True  # False once a product spread residual over the graph
        self.total = float(seed_mass.sum(dtype=np.float64))  # residual mass, when asked
        self.work = 0
        self.rounds = 0
        self.refined: tuple[np.ndarray, np.ndarray] | None = None
        self.top: np.ndarray | None = None  # the ordered top k of the last check
        self.floor = 0.0  # the (2k + 2)-th best lower bound at the last check
        self.dead: np.ndarray | None = None  # nodes without mu, found on the first sweep

    def _rows(self, rows: np.ndarray, counts: np.ndarray, edges: int) -> tuple[np.ndarray, np.ndarray]:
        """``(targets, P'[row, target])`` of the ``counts`` edges (``edges`` in all) of each of
        ``rows``, in order."""
        first = np.repeat(self.indptr[rows] - (np.cumsum(counts) - counts), counts)
        at = first + np.arange(edges, dtype=first.dtype)
        targets = self.indices[at]
        values = self.data[at]  # a copy (fancy indexing)
        if self.node_scale is not None:
            assert self.row_factor is not None  # set with node_scale
            values *= self.node_scale[targets]
            values *= np.repeat(self.row_factor[rows], counts)
        return targets, values

    def edges(self, nodes: np.ndarray) -> int:
        """How many edges leave ``nodes``."""
        return int(self.degree[nodes].sum())

    def spread(self, front: np.ndarray, theta: float) -> np.ndarray:
        """Push the nodes ``front`` (distinct); the nodes now above ``theta * mu``.

        A round with few edges gathers them one by one (numpy, some 20 ns an edge); one
        with more edges than 1 / PUSH_ROW_FRACTION of the nodes multiplies by the rows of
        ``front`` (scipy: a few ns an edge, plus O(nodes)); one with 1 / PUSH_FRACTION of
        all edges or more multiplies by the whole transition (about 1 ns an edge).
        """
        self.rounds += 1
        res, mu, engine = self.res, self.mu, self.engine
        mass = res[front]
        res[front] = 0.0
        self.p[front] += self.alpha * mass
        counts = self.degree[front]
        edges = int(counts.sum())
        self.work += edges
        sent = mass * self.d
        if edges * PUSH_FRACTION > engine._forward.nnz or edges * PUSH_ROW_FRACTION > engine._n:
            if self.row_factor is not None:
                sent *= self.row_factor[front]
            if edges * PUSH_FRACTION > engine._forward.nnz:
                spread = np.zeros(engine._n, dtype=np.float32)
                spread[front] = sent
                received = engine._transition @ spread
            else:
                received = engine._forward[front].T @ sent
            if self.node_scale is not None:
                received *= self.node_scale
            res += received
            self.reached |= received > 0
            self.local = False
            return np.flatnonzero(res > theta * mu)
        if not edges:
            return front[:0]
        targets, values = self._rows(front, counts, edges)  # P' (row factors included)
        values *= np.repeat(sent, counts)
        np.add.at(res, targets, values)
        self.reached[targets] = True
        return _distinct(targets[res[targets] > theta * mu[targets]])

    def sweep(self) -> float:
        """Push every node at once (one product with the whole transition: a power iteration
        step on the residual); the largest ``residual / mu`` after it."""
        self.rounds += 1
        engine = self.engine
        res = self.res
        self.p += self.alpha * res
        res *= self.d
        if self.row_factor is not None:
            res *= self.row_factor
        received = engine._transition @ res
        if self.node_scale is not None:
            received *= self.node_scale
        self.res = received
        self.reached |= received > 0
        self.local = False
        self.work += engine._forward.nnz
        if self.dead is None:
            self.dead = np.flatnonzero(self.inv_mu <= 0)
        if np.any(received[self.dead] > 0):
            return np.inf
        return float(np.max(received * self.inv_mu, initial=0.0))

    def ratio(self, nodes: np.ndarray) -> float:
        """The largest ``residual / mu`` among ``nodes`` (inf where mu is 0 and residual is not)."""
        if not nodes.size:
            return 0.0
        inv = self.inv_mu[nodes]
        if np.any(inv <= 0):
            return np.inf
        return float((self.res[nodes] * inv).max())

    def level_done(self) -> None:
        """Note the nodes that hold or held residual, at the end of a level."""
        self.ids = np.flatnonzero(self.reached)

    def residual(self) -> float:
        """The residual mass left (after :meth:`level_done`)."""
        self.total = float(self.res[self.ids].sum(dtype=np.float64))
        return self.total

    def above(self, theta: float) -> np.ndarray:
        """The nodes whose residual is above ``theta * mu`` (after :meth:`level_done`)."""
        ids = self.ids
        return ids[self.res[ids] > theta * self.mu[ids]]

    def certified(self, k: int, theta: float, candidates: np.ndarray | None) -> bool:
        """Whether the ordered top ``k`` among ``candidates`` (all nodes when None) is final
        (see the class docstring); every ``residual / mu`` is at most ``theta``. The cheap
        tests go first."""
        res, p, mu, alpha, d = self.res, self.p, self.mu, self.alpha, self.d
        self.top = None
        if k <= 0:  # no candidate: nothing to order
            return True
        if not np.isfinite(theta):  # a node without out-weight still holds residual
            return False
        reached = candidates is None
        ids = self.ids if candidates is None else candidates  # unreached nodes: p = s = 0
        if ids.size < k:
            return False
        low = p[ids] + alpha * res[ids]
        if not self.engine._symmetric:
            own = res[ids]
            high = p[ids] + own + d * (np.float32(self.total) - own)
            order = np.argsort(-low, kind="stable")
            top = order[:k]
            self.top = ids[top]
            floor = low[top].astype(np.float64) * (1.0 - PUSH_SLACK)
            if np.any(floor[:-1] <= high[top[1:]]):
                return False
            kth = float(floor[-1])
            # An unreached node ends below d * the residual mass.
            return kth > float(high[order[k:]].max(initial=0.0)) and kth > self.total
        # Refine the best 2k + 2 lower bounds: one step of the walk from the residual, exactly.
        # Lower bounds never decrease, so the last check's (2k + 2)-th one narrows the search.
        many = ids.size > 2 * k + 2
        if not many:
            best = np.arange(ids.size)
        else:
            pool = np.flatnonzero(low >= self.floor) if self.floor > 0 else None
            if pool is not None and pool.size >= 2 * k + 2:
                best = pool[np.argpartition(-low[pool], 2 * k + 1)[: 2 * k + 2]]
            else:
                best = np.argpartition(-low, 2 * k + 1)[: 2 * k + 2]
            self.floor = float(low[best].min())
        chosen = ids[best]
        counts = self.degree[chosen]
        targets, values = self._rows(chosen, counts, int(counts.sum()))
        values *= res[targets] * self.inv_mu[targets]
        step = np.bincount(np.repeat(np.arange(chosen.size), counts), weights=values, minlength=chosen.size)
        sharper = low[best] + alpha * d * mu[chosen] * step.astype(np.float32)
        self.refined = (chosen, sharper)
        order = np.argsort(-sharper, kind="stable")
        top = order[:k]
        self.top = chosen[top]
        floor = sharper[top].astype(np.float64) * (1.0 - PUSH_SLACK)
        high = sharper + d * d * np.float32(theta) * mu[chosen]
        if np.any(floor[:-1] <= high[top[1:]]):
            return False
        kth = float(floor[-1])
        if kth <= float(high[order[k:]].max(initial=0.0)):
            return False
        if many:  # the candidates not refined: p + (1 - d) s + d mu theta
            others = np.ones(ids.size, dtype=bool)
            others[best] = False
            if kth <= float((low[others] + d * np.float32(theta) * mu[ids[others]]).max(initial=0.0)):
                return False
        if not reached:
            return True
        # Unreached nodes end below d * mu * theta: the largest mu first, then exactly.
        engine = self.engine
        if kth > d * theta * (engine._mu_max if mu is engine._mu else float(mu.max(initial=0.0))):
            return True
        if mu is engine._mu:
            head = engine._mu_order[: 1 << 12]
            free = head[~self.reached[head]]
            if free.size:
                return bool(kth > d * theta * float(mu[free[0]]))
        return bool(kth > d * theta * float(mu[~self.reached].max(initial=0.0)))

    def scores(self) -> np.ndarray:
        """The lower bounds (sharpened where refined), in the adjacency's numbering, summing to 1."""
        ids, n = self.ids, self.engine._n
        chosen, sharper = self.refined if self.refined is not None else (ids[:0], self.p[:0])
        if not self.local:  # mass all over the graph: dense
            estimate = self.p + self.alpha * self.res
            estimate[chosen] = np.maximum(estimate[chosen], sharper)  # both are lower bounds
            norm = float(estimate.sum(dtype=np.float64))
            scores = estimate[self.engine._position]
        else:
            extra = chosen[~self.reached[chosen]]
            ids = np.concatenate([ids, extra])
            estimate = self.p[ids] + self.alpha * self.res[ids]
            lookup = np.zeros(n, dtype=np.float32)
            lookup[ids] = estimate
            lookup[chosen] = np.maximum(lookup[chosen], sharper)
            estimate = lookup[ids]
            norm = float(estimate.sum(dtype=np.float64))
            scores = np.zeros(n, dtype=np.float32)
            scores[self.engine._order[ids]] = estimate
        if norm > 0:
            scores /= np.float32(norm)
        return scores

    def handover(self) -> np.ndarray:
        """The estimate ``p + s``, normalised, for power iteration to start from."""
        estimate = self.p + self.res
        left = float(estimate.sum(dtype=np.float64))
        if left > 0:
            estimate /= np.float32(left)
        return estimate


def _certified(columns: list[np.ndarray], bound: float) -> float:
    """``inf`` when the ordered top ``k`` of every column is already final, else the smallest
    gap found (no later step can certify before ``2 * bound`` falls below it).

    ``columns`` holds each column's ``k + 1`` best values, best first. Power iteration
    contracts: after a step whose L1 change was ``r``, all later steps together move the
    scores by at most ``bound = r * d / (1 - d)`` in L1, so any one score by at most
    ``bound``. When each of the ``k + 1`` best scores of a column lies more than
    ``2 * bound`` above the next, no later step can reorder them: the top ``k`` (in order)
    is that of the converged scores.
    """
    smallest = np.inf
    for best in columns:
        if best.shape[0] < 2:
            continue
        gap = float(np.min(best[:-1] - best[1:]))
        if gap <= 2 * bound:
            smallest = min(smallest, gap)
    return smallest


def _top_values(
    values: np.ndarray, k: int, candidates: np.ndarray | None, floor: float
) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """The ``k + 1`` best of ``values`` (among sorted ``candidates``): ``(ids, float64 values)``,
    best first (ties by the smaller index), and the next floor (the last value, halved).

    ``floor`` narrows the search: when at least ``k + 1`` values reach it, the ``k + 1``
    best do too.
    """
    pool = values if candidates is None else values[candidates]
    take = min(k + 1, pool.shape[0])
    chosen = None
    if floor > 0:
        keep = np.flatnonzero(pool >= floor)
        if keep.size >= take:
            chosen = keep[top_k(pool[keep], take)]
    if chosen is None:
        chosen = top_k(pool, take)
    best = pool[chosen].astype(np.float64)
    ids = chosen if candidates is None else candidates[chosen]
    return (ids, best), 0.5 * float(best[-1]) if best.size else 0.0


def _distinct(ids: np.ndarray) -> np.ndarray:
    """The distinct values of ``ids``, sorted (``np.unique``, which is many times slower on
    small integer arrays in recent numpy)."""
    if ids.size < 2:
        return ids
    ids = np.sort(ids)
    keep = np.empty(ids.size, dtype=bool)
    keep[0] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return ids[keep]


def _is_symmetric(adjacency: sp.csr_array) -> bool:
    """Whether ``adjacency`` equals its transpose (weights to a relative 1e-6; duplicates summed)."""
    a = sp.csr_array(adjacency, dtype=np.float64, copy=True)
    a.sum_duplicates()
    a.eliminate_zeros()
    t = sp.csr_array(a.T)
    excess = abs(a - t) - 1e-6 * (a + t)
    return excess.nnz == 0 or float(excess.max()) <= 0.0
