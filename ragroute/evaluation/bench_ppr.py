"""``ragroute bench ppr``: graph build, incremental add, and PPR latency against igraph.

Three measurements (issue #8):

* **build**: the graph index of a BEIR corpus (``../shared/data/2wiki_corpus``,
  ``corpus.jsonl`` only) through the product path ``build_index(docs, "graph",
  encoder=...)``, timed end to end (extraction, passage and phrase encoding, synonym
  search, adjacency). The CLI loads the encoder without the embedding cache, so the
  time includes all encoding. Peak memory is the process's peak resident set size
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) right after the build; it includes
  the encoder model and the Python runtime, so the peak before the build is reported
  too. The build time is split into passage encoding, phrase encoding and the rest
  (extraction, synonym search, adjacency, faiss), timed around the encoder's calls.
* **add**: a graph built over the first ``N - add`` passages (not timed; its encoder
  replays the vectors of the full build) gets the last ``add`` passages through
  :meth:`GraphIndex.add <ragroute.graph.index.GraphIndex.add>`, timed with live
  encoding (``add_s``; ``add_100_s`` in the JSON when ``add`` is 100).
* **ppr**: per query, :meth:`PPREngine.run(reset, damping=0.5, top_k=5, among=...)
  <ragroute.graph.ppr.PPREngine.run>` against igraph's
  ``Graph.personalized_pagerank(reset=..., damping=0.5, directed=True, weights=...)``
  (PRPACK) on the same weighted directed graph, one query at a time, the two taking
  turns on each query, on (a) the built corpus graph (top 5 among the passage nodes)
  and (b) a synthetic skewed random graph of about 97k nodes and 1.4M directed edges
  (top 5 among all nodes). The corpus has no questions, so resets are made the way the
  walk makes them from a fixed RNG: 5 seed phrases weighted ``u / passages containing
  the phrase`` (``u`` uniform in [0.3, 0.9], as a fact score) plus 100 seed passages
  weighted ``0.05 * u`` (``u`` uniform in [0, 1], the dense prior); on the synthetic
  graph 5 strong and 100 weak seeds of the same weights among all nodes.
  ``ms_per_query`` is the mean over the queries (one warm-up query first; p50 too),
  ``speedup_vs_igraph`` the ratio of the means, ``top5_agreement`` the share of queries
  whose top 5 (in order) is identical to igraph's. The engine runs its default
  ``method="auto"``: for these single few-seed queries on symmetric graphs, the local
  push; ``methods`` counts the method each query ended with (``push``, ``power``, or
  ``push+power`` when a push handed over to power iteration) and ``iterations_mean``
  its rounds (push) or steps (power).

The JSON object (last line with ``--json``) has ``ms_per_query``, ``igraph_ms``,
``speedup_vs_igraph`` and ``top5_agreement`` as ``{"2wiki": ..., "synthetic": ...}``
(the first key is the corpus folder's name less a ``_corpus`` suffix; ``corpus`` where that
would be ``synthetic``), ``build_s`` and
``add_100_s`` as numbers, and the goals with whether each is met.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ragroute.errors import RagrouteError

GOALS = {
    "ppr_ms_synthetic": 30.0,  # ms per query on the 1.4M-edge graph, at most
    "speedup_vs_igraph": 10.0,  # at least
    "top5_agreement": 0.95,  # at least
    "build_s": 300.0,  # at most (2 cores)
    "add_100_s": 15.0,  # at most
}
PHRASE_SEEDS = 5
PASSAGE_SEEDS = 100
PASSAGE_PRIOR = 0.05
DAMPING = 0.5
TOP = 5


def run_ppr_bench(
    root: Path,
    encoder: Any,
    *,
    add: int = 100,
    queries: int = 30,
    synthetic_nodes: int = 97_000,
    synthetic_edges: int = 1_400_000,
    seed: int = 0,
    show_progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build, add and PPR measurements (see the module docstring); the JSON-able result.

    ``root`` is a folder with a BEIR ``corpus.jsonl``; ``synthetic_edges`` counts
    directed edges (half as many random undirected edges, stored both ways).
    """
    from ragroute.index.build import build_index
    from ragroute.loaders.beir import load_beir_corpus

    say = log or (lambda _msg: None)
    root = Path(root)
    corpus_file = root / "corpus.jsonl"
    if not corpus_file.is_file():
        raise RagrouteError(f"data missing: {corpus_file} not found (see ../shared/data/README.md)")
    docs = load_beir_corpus(corpus_file, on_error="raise")  # strict, as every benchmark reads its data
    if len(docs) < 2:
        raise RagrouteError(f"{corpus_file}: the bench needs at least 2 passages, found {len(docs)}")
    add = max(1, min(int(add), len(docs) - 1))
    name = root.name.removesuffix("_corpus") or "corpus"  # 2wiki_corpus -> "2wiki"
    if name == "synthetic":  # until session 54 the synthetic graph's rows replaced this corpus's
        name = "corpus"

    say(f"building the graph of {len(docs)} passages ...")
    timed = TimedEncoder(encoder)
    peak_before = peak_rss_mib()
    start = time.perf_counter()
    full: Any = build_index(docs, "graph", encoder=timed, name=name, show_progress=show_progress)
    build_s = time.perf_counter() - start
    peak_after = peak_rss_mib()
    counts = full.manifest_params()["counts"]
    breakdown = {
        "encode_passages": round(timed.seconds["documents"], 2),
        "encode_phrases": round(timed.seconds["queries"], 2),
        "rest": round(build_s - sum(timed.seconds.values()), 2),
    }
    say(f"built in {build_s:.1f} s ({breakdown}): {counts}")

    say(f"building on the first {len(docs) - add} passages, then adding the last {add} ...")
    replay = ReplayEncoder.from_index(encoder, full)
    base: Any = build_index(docs[:-add], "graph", encoder=replay, name=name, show_progress=show_progress)
    replay.live = True
    start = time.perf_counter()
    base.add(docs[-add:], show_progress=show_progress)
    add_s = time.perf_counter() - start
    grown = base.manifest_params()["counts"]
    say(f"added {add} passages in {add_s:.2f} s: {grown}")
    del base, replay

    rng = np.random.default_rng(seed)
    tables = full.tables
    passages = np.asarray(full._passage_nodes)
    resets = [
        _walk_like_reset(rng, tables.phrase_passages, tables.n_phrases, len(passages)) for _ in range(queries)
    ]
    say(f"ppr on the {name} graph ({full.engine.num_nodes} nodes, {full.engine.num_edges} edges) ...")
    ppr = {name: compare_with_igraph(full.engine, tables.adjacency, resets, among=passages)}
    del full, tables

    say(f"synthetic graph: {synthetic_nodes} nodes, ~{synthetic_edges} directed edges ...")
    adjacency = synthetic_graph(synthetic_nodes, synthetic_edges, seed=seed)
    from ragroute.graph.ppr import PPREngine

    engine = PPREngine(adjacency)
    weights = np.ones(adjacency.shape[0], dtype=np.float32)
    resets = [_walk_like_reset(rng, weights, 0, adjacency.shape[0]) for _ in range(queries)]
    ppr["synthetic"] = compare_with_igraph(engine, adjacency, resets, among=None)

    result: dict[str, Any] = {
        "root": str(root),
        "passages": len(docs),
        "encoder": encoder.describe(),
        "queries": queries,
        "ms_per_query": {g: row["ms_per_query"] for g, row in ppr.items()},
        "igraph_ms": {g: row["igraph_ms"] for g, row in ppr.items()},
        "speedup_vs_igraph": {g: row["speedup_vs_igraph"] for g, row in ppr.items()},
        "top5_agreement": {g: row["top5_agreement"] for g, row in ppr.items()},
        "build_s": round(build_s, 4),
        "build_breakdown_s": breakdown,
        "add_s": round(add_s, 4),
        "add": add,
        "peak_rss_mib": {"before_build": peak_before, "after_build": peak_after, "method": "ru_maxrss"},
        "graph": counts,
        "graph_after_add": grown,
        "ppr": ppr,
    }
    if add == 100:
        result["add_100_s"] = result["add_s"]
    result["goals"] = goals(result, name)
    return result


def goals(result: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Each issue #8 goal: the measured value, the bound, and whether it is met."""
    speed, agree = result["speedup_vs_igraph"], result["top5_agreement"]
    rows = {
        "ppr_ms_synthetic<=30": (result["ms_per_query"]["synthetic"], GOALS["ppr_ms_synthetic"], "max"),
        "speedup_synthetic>=10": (speed["synthetic"], GOALS["speedup_vs_igraph"], "min"),
        f"speedup_{name}>=10": (speed[name], GOALS["speedup_vs_igraph"], "min"),
        "top5_synthetic>=0.95": (agree["synthetic"], GOALS["top5_agreement"], "min"),
        f"top5_{name}>=0.95": (agree[name], GOALS["top5_agreement"], "min"),
        "build_s<=300": (result["build_s"], GOALS["build_s"], "max"),
    }
    if "add_100_s" in result:
        rows["add_100_s<=15"] = (result["add_100_s"], GOALS["add_100_s"], "max")
    return {
        key: {
            "value": value,
            "bound": bound,
            "met": bool(value <= bound if kind == "max" else value >= bound),
        }
        for key, (value, bound, kind) in rows.items()
    }


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (``ru_maxrss``), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


class TimedEncoder:
    """Passes every call to an encoder and adds up the seconds spent in documents and queries."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.backend = getattr(encoder, "backend", "")
        self.dim = encoder.dim
        self.seconds = {"documents": 0.0, "queries": 0.0}

    def _timed(self, kind: str, encode: Callable[..., Any], texts: Sequence[str], kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return encode(texts, **kwargs)
        finally:
            self.seconds[kind] += time.perf_counter() - start

    def encode_documents(self, texts: Sequence[str], **kwargs: Any) -> Any:
        """The wrapped encoder's passage vectors (timed)."""
        return self._timed("documents", self.encoder.encode_documents, texts, kwargs)

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> Any:
        """The wrapped encoder's query (phrase) vectors (timed)."""
        return self._timed("queries", self.encoder.encode_queries, texts, kwargs)

    def describe(self) -> dict[str, Any]:
        """The wrapped encoder's description."""
        return self.encoder.describe()


class ReplayEncoder:
    """Wraps an encoder and answers texts it has vectors for from memory, until ``live`` is set.

    Used to rebuild the base graph of the add measurement without encoding the corpus
    twice; once ``live`` is True every call goes to the wrapped encoder.
    """

    def __init__(
        self, encoder: Any, documents: dict[str, np.ndarray], queries: dict[str, np.ndarray]
    ) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.backend = getattr(encoder, "backend", "")
        self.dim = encoder.dim
        self.live = False
        self._documents = documents
        self._queries = queries

    @classmethod
    def from_index(cls, encoder: Any, index: Any) -> ReplayEncoder:
        """Replay the passage vectors of a graph index's dense part and its phrase vectors."""
        dense = index.dense
        vectors = dense.faiss_index.reconstruct_batch(dense.store.iids)
        documents = {d.full_text(): v for d, v in zip(dense.store.documents, vectors)}
        queries = dict(zip(index.tables.phrases, index.tables.phrase_vectors))
        return cls(encoder, documents, queries)

    def _replay(
        self, texts: Sequence[str], memo: dict[str, np.ndarray], encode: Callable[..., Any]
    ) -> np.ndarray:
        if not self.live and all(t in memo for t in texts):
            return np.vstack([memo[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        return np.asarray(encode(list(texts), show_progress=False), dtype=np.float32)

    def encode_documents(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        """Passage vectors (replayed unless ``live``)."""
        return self._replay(texts, self._documents, self.encoder.encode_documents)

    def encode_queries(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        """Query (phrase) vectors (replayed unless ``live``)."""
        return self._replay(texts, self._queries, self.encoder.encode_queries)

    def describe(self) -> dict[str, Any]:
        """The wrapped encoder's description."""
        return self.encoder.describe()


def _walk_like_reset(
    rng: np.random.Generator, phrase_passages: np.ndarray, n_phrases: int, n_passages: int
) -> np.ndarray:
    """A reset like the walk's: strong phrase seeds over their passage counts, weak passage seeds.

    With ``n_phrases == 0`` (a graph without phrase nodes) both kinds of seed are drawn
    among all nodes, the strong ones weighted by ``1 / phrase_passages``.
    """
    reset = np.zeros(n_phrases + n_passages, dtype=np.float32)
    pool = n_phrases or n_passages
    strong = rng.choice(pool, min(PHRASE_SEEDS, pool), replace=False)
    # a corpus graph without phrase nodes has no passage counts to weigh by (until session 54 an
    # IndexError: the corpus's counts are of its phrases, none): the strong seeds weigh 1 each
    counts = phrase_passages[strong] if len(phrase_passages) >= pool else np.ones(strong.size)
    reset[strong] = rng.uniform(0.3, 0.9, strong.size) / np.maximum(counts, 1.0)
    weak = rng.choice(n_passages, min(PASSAGE_SEEDS, n_passages), replace=False)
    reset[n_phrases + weak] += PASSAGE_PRIOR * rng.uniform(0.0, 1.0, weak.size).astype(np.float32)
    return reset


def synthetic_graph(nodes: int, edges: int, *, seed: int = 0) -> sp.csr_array:
    """A skewed weighted random graph: ``edges // 2`` undirected edges stored both ways.

    One end of each edge is drawn by a Pareto popularity (hubs, as in knowledge graphs),
    the other uniformly; weights are uniform in [0.1, 1.1). Parallel edges are summed, so
    the stored edge count is slightly below ``edges``.
    """
    rng = np.random.default_rng(seed)
    half = edges // 2
    popularity = rng.pareto(1.5, nodes) + 1.0
    src = rng.choice(nodes, half, p=popularity / popularity.sum())
    dst = rng.integers(0, nodes, half)
    weight = (rng.random(half) + 0.1).astype(np.float32)
    adjacency = sp.csr_array(
        (np.r_[weight, weight], (np.r_[src, dst], np.r_[dst, src])), shape=(nodes, nodes), dtype=np.float32
    )
    adjacency.sum_duplicates()
    return adjacency


def compare_with_igraph(
    engine: Any, adjacency: sp.csr_array, resets: Sequence[np.ndarray], *, among: np.ndarray | None
) -> dict[str, Any]:
    """Time ``engine.run`` against igraph's PRPACK on each reset (taking turns); compare the top 5."""
    import igraph

    from ragroute.graph.ppr import top_k

    coo = sp.csr_array(adjacency).tocoo()
    graph = igraph.Graph(n=adjacency.shape[0], edges=np.c_[coo.row, coo.col].tolist(), directed=True)
    graph.es["weight"] = coo.data.astype(np.float64).tolist()  # set once: igraph's fastest way in
    weights = "weight"

    def ours(reset: np.ndarray) -> np.ndarray:
        return engine.run(reset, damping=DAMPING, top_k=TOP, among=among).scores

    def reference(values: list[float]) -> np.ndarray:
        scores = graph.personalized_pagerank(
            reset=values, damping=DAMPING, directed=True, weights=weights, implementation="prpack"
        )
        return np.asarray(scores)

    ours(resets[0])  # warm-up: first-touch costs
    reference((resets[0] / resets[0].sum()).astype(np.float64).tolist())
    our_ms, ref_ms, same, same_set, iterations = [], [], 0, 0, []
    methods: dict[str, int] = {}
    for reset in resets:
        values = (reset / reset.sum()).astype(np.float64).tolist()
        start = time.perf_counter()
        result = engine.run(reset, damping=DAMPING, top_k=TOP, among=among)
        our_ms.append((time.perf_counter() - start) * 1000)
        iterations.append(result.iterations)
        methods[result.method] = methods.get(result.method, 0) + 1
        start = time.perf_counter()
        expected = reference(values)
        ref_ms.append((time.perf_counter() - start) * 1000)
        mine, theirs = top_k(result.scores, TOP, among), top_k(expected, TOP, among)
        same += int(np.array_equal(mine, theirs))
        same_set += int(set(mine.tolist()) == set(theirs.tolist()))
    ours_mean, ref_mean = float(np.mean(our_ms)), float(np.mean(ref_ms))
    return {
        "nodes": int(adjacency.shape[0]),
        "edges": int(adjacency.nnz),
        "queries": len(resets),
        "ms_per_query": round(ours_mean, 3),
        "ms_p50": round(float(np.median(our_ms)), 3),
        "igraph_ms": round(ref_mean, 3),
        "igraph_ms_p50": round(float(np.median(ref_ms)), 3),
        "speedup_vs_igraph": round(ref_mean / ours_mean, 2) if ours_mean > 0 else None,
        "top5_agreement": round(same / len(resets), 4),
        "top5_set_agreement": round(same_set / len(resets), 4),
        "iterations_mean": round(float(np.mean(iterations)), 2),
        "methods": methods,
    }


def format_report(result: dict[str, Any]) -> str:
    """The readable report: build, add, the PPR table, and the goals."""
    counts = result["graph"]
    peak = result["peak_rss_mib"]
    lines = [
        f"graph of {result['root']}: {result['passages']} passages -> {counts['phrases']} phrases, "
        f"{counts['facts']} facts, {counts['edges']} stored edges ({counts['synonym_edges']} synonym pairs)",
        f"build (product path, encoding included): {result['build_s']:.1f} s; "
        f"peak RSS {peak['after_build']:.0f} MiB (ru_maxrss; {peak['before_build']:.0f} before the build)",
        "  of which encoding passages {encode_passages} s, phrases {encode_phrases} s, "
        "the rest {rest} s".format(**result["build_breakdown_s"]),
        f"add {result['add']} passages to a graph of {result['passages'] - result['add']}: "
        f"{result['add_s']:.2f} s",
        f"{'graph':<14} {'nodes':>8} {'edges':>9} {'ours ms':>8} {'p50':>7} {'igraph ms':>10} {'speedup':>8} "
        f"{'same top5':>10} {'iters':>6}  methods",
    ]
    for graph, row in result["ppr"].items():
        methods = ", ".join(f"{m} {c}" for m, c in sorted(row.get("methods", {}).items()))
        lines.append(
            f"{graph:<14} {row['nodes']:>8} {row['edges']:>9} {row['ms_per_query']:>8.2f} "
            f"{row['ms_p50']:>7.2f} {row['igraph_ms']:>10.2f} {row['speedup_vs_igraph']:>7.1f}x "
            f"{row['top5_agreement']:>10.2f} {row['iterations_mean']:>6.1f}  {methods}"
        )
    lines.append(
        "goals: "
        + ", ".join(
            f"{key} {'met' if goal['met'] else 'NOT met'} ({goal['value']})"
            for key, goal in result["goals"].items()
        )
    )
    return "\n".join(lines)
