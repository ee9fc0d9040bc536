"""``ragroute bench scale``: how query cost, memory and recall grow with the corpus, per index layout.

Vectors are synthetic (no encoder could embed millions of passages here: ~70 passages/s on two
cores): 384-d, the width of all-MiniLM-L6-v2, L2-normalised, each a random one of 2,000 centres
plus a point of a 24-d latent space mapped into the 384 dimensions, plus a little isotropic
noise: a clustered cloud of low intrinsic dimension, as sentence embeddings are (isotropic noise
in all 384 dimensions would make every neighbour nearly tied, a worst case no real corpus shows).
Queries are drawn the same way, apart from the corpus. Each layout is the product's
:class:`~ragroute.index.dense.DenseIndex` with :class:`~ragroute.index.dense.DenseParams`:

* ``flat`` — exact inner product (the reference of recall@10);
* ``hnsw`` — M 32, efConstruction 200, efSearch 128 (the product defaults);
* ``ivfpq`` — nlist 4 sqrt(n) (at most 4096), 48 sub-quantisers of 8 bits (48 bytes a vector),
  trained on 100,000 vectors (or 39 per list if more); searched with nprobe 16 (the product
  default), 64 and 256;
* ``ivfpq+refine`` — the same, re-ranking 50 x k candidates by exact scores from the float32
  vectors (loaded memory-mapped, as for an index larger than RAM), nprobe 16, 64, 256 and 1024
  (rows ``ivfpq+refine@64`` ...: one index, searched with each).

* ``qdrant`` — the vectors in a Qdrant collection (:class:`~ragroute.index.qdrant.QdrantIndex`,
  qdrant-client's embedded in-memory mode: a brute-force scan in the client, so its latency says
  nothing of a Qdrant server's; it is here for ``store_identical``: top-10 equal to flat's);
* ``lancedb`` — the vectors in a LanceDB table on disk
  (:class:`~ragroute.index.lancedb_store.LanceDBIndex`, embedded; exact scan, no ANN index), also
  counted in ``store_identical``.

Cost growth beyond the vector index: :func:`routing_cost` (the prototype router's latency
against the number of sources, ``routing_ms_p50`` -> {sources: ms}) and :func:`ppr_cost` (PPR
against the number of graph edges, ``ppr_ms_p50`` -> {edges: ms}).

With ``--ray-synthetic N`` it builds a hybrid index of N generated documents on Ray and in one
process and checks they are identical (:func:`ray_synthetic_identity`; ``ray_identical`` is then
false if either check fails). With ``--ray-corpus`` it also builds a real corpus (documents
encoded by the real encoder) with the Ray engine
(:func:`ragroute.scale.ray_build.measure_build_throughput`) at each worker count
(``build_docs_per_s``: Ray and model start-up excluded, reported apart; each worker one thread)
beside the single-process build, and checks that every Ray build is identical to it
(``ray_identical``).

For every size: ``latency_ms_p50`` of one query at a time (k = 10, one thread), recall@10 against
``flat``, build seconds; ``bytes_per_vector`` is the size of the index files written, per vector
(what a process loads, or maps). Larger sizes than measured are not extrapolated here.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from ragroute.display import counted
from ragroute.errors import RagrouteError
from ragroute.index.dense import DenseIndex, DenseParams
from ragroute.types import Document

DIM = 384
CENTRES = 2000
K = 10
LAYOUTS: dict[str, DenseParams] = {
    "flat": DenseParams(factory="flat"),
    "hnsw": DenseParams(factory="hnsw"),
    "ivfpq": DenseParams(factory="ivfpq", pq_m=48, ivf_nprobe=16),
    "ivfpq+refine": DenseParams(factory="ivfpq", pq_m=48, ivf_nprobe=16, refine=50, mmap=True),
}
#: nprobe values each IVF layout is searched with (one built index); the first is the product default
PROBES = {"ivfpq": (16, 64, 256), "ivfpq+refine": (16, 64, 256, 1024)}
LATENT = 24
#: queries searched (one batch) before a row's timed ones: drawn apart from those (another seed)
WARMUP_QUERIES = 5
GOALS = {"ivfpq_refine_recall@10": 0.95, "ivfpq_refine_speedup_vs_flat": 5.0}


class SyntheticEncoder:
    """Stands for an encoder of width ``dim`` (the vectors are given, never encoded)."""

    backend = "synthetic"

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.model_id = f"synthetic/{dim}d"

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}


def clustered_vectors(n: int, *, dim: int = DIM, seed: int = 0, centres_seed: int = 12345) -> np.ndarray:
    """``n`` L2-normalised vectors: a random one of :data:`CENTRES` fixed centres, plus a point of a
    :data:`LATENT`-d latent space mapped into ``dim`` dimensions, plus a little noise (float32)."""
    fixed = np.random.default_rng(centres_seed)
    centres = fixed.normal(size=(CENTRES, dim)).astype(np.float32)
    mapping = (fixed.normal(size=(LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = 0.5 * centres[rng.integers(0, CENTRES, stop - start)]
        block += rng.normal(size=(stop - start, LATENT)).astype(np.float32) @ mapping
        block += 0.05 * rng.normal(size=block.shape).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


#: the external stores the benchmark can measure (registered index kinds), and where each keeps vectors
STORES = ("qdrant", "lancedb")


def _store_latencies(
    kind: str, vectors: np.ndarray, queries: np.ndarray, encoder: SyntheticEncoder, warmup: np.ndarray
) -> tuple[list[float], list[list[str]], float]:
    """One query at a time against ``kind`` holding ``vectors`` (Qdrant in memory, LanceDB in a
    temporary folder), after ``warmup`` as every layout; the latencies, each query's top ids, and
    the build seconds."""
    from ragroute.index.external import StoreParams
    from ragroute.registry import INDEX_KINDS

    with tempfile.TemporaryDirectory(prefix=f"ragroute-bench-{kind}-") as folder:
        location = ":memory:" if kind == "qdrant" else folder
        start = time.perf_counter()
        # Qdrant takes points one request at a time; each LanceDB write is a data fragment
        batch = 2_000 if kind == "qdrant" else 50_000
        params = StoreParams(location=location, collection="bench", batch_size=batch)
        index = INDEX_KINDS.get(kind)(encoder, params)
        index.add_vectors([Document(id=str(i), text="") for i in range(len(vectors))], vectors)
        built = time.perf_counter() - start
        try:
            times, found = _latencies(index, queries, warmup)  # type: ignore[arg-type]
        finally:
            index.drop_collection()
    return times, found, built


def _index(params: DenseParams, vectors: np.ndarray, encoder: SyntheticEncoder) -> DenseIndex:
    index = DenseIndex(cast(Any, encoder), DenseParams(**{**params.__dict__, "mmap": False}))
    index.add_vectors(
        [Document(id=str(i), text="") for i in range(len(vectors))], vectors
    )  # one add: nlist from n
    return index


def _saved_and_reloaded(index: DenseIndex, params: DenseParams, folder: Path) -> tuple[DenseIndex, int]:
    """The index written (as the artifact store would) and read back with ``params``; bytes written."""
    index.write_files(folder)
    size = sum(p.stat().st_size for p in folder.iterdir())
    loaded = DenseIndex.read(folder, {"dense": params.__dict__}, index.store, index.name, index.encoder)
    return loaded, size


def _latencies(
    index: DenseIndex, queries: np.ndarray, warmup: np.ndarray
) -> tuple[list[float], list[list[str]]]:
    """Milliseconds and top-``K`` ids of each of ``queries``, one at a time, after one untimed search
    of ``warmup`` (first pages of a map, first-call costs). Until session 55 the dense layouts warmed
    up on the first 5 timed queries themselves (their candidates' pages then read warm) and the
    stores not at all (their first query's set-up timed in their rows alone)."""
    index.search_vectors(warmup, K)
    times, found = [], []
    for row in queries:
        start = time.perf_counter()
        hits = index.search_vectors(row[None, :], K)[0]
        times.append((time.perf_counter() - start) * 1000)
        found.append([h.doc_id for h in hits])
    return times, found


def run_scale_bench(
    sizes: Sequence[int],
    *,
    layouts: Sequence[str] = (*LAYOUTS, *STORES),
    max_size: Mapping[str, int] | None = None,
    queries: int = 200,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every layout at every size (up to ``max_size[layout]``); see the module docstring."""
    say = log or (lambda _msg: None)
    encoder = SyntheticEncoder()
    query_vectors = clustered_vectors(queries, seed=99)
    warmup_vectors = clustered_vectors(WARMUP_QUERIES, seed=98)
    limits = dict(max_size or {})
    rows = [_row(name, probe) for name in layouts for probe in PROBES.get(name, (None,))]
    identical: list[bool] = []
    latency: dict[str, dict[str, float]] = {row: {} for row in rows}
    p95: dict[str, dict[str, float]] = {row: {} for row in rows}
    recall: dict[str, dict[str, float]] = {row: {} for row in rows}
    build_s: dict[str, dict[str, float]] = {name: {} for name in layouts}
    size_bytes: dict[str, dict[str, float]] = {name: {} for name in layouts}
    skipped: dict[str, dict[str, str]] = {}  # layout -> {size: why}
    for n in sorted(sizes):
        say(f"{n:,} vectors ...")
        vectors = clustered_vectors(n, seed=1)
        truth: list[list[str]] | None = None
        for name in ("flat", *[layout for layout in layouts if layout != "flat"]):
            if name != "flat" and n > limits.get(name, n):
                continue
            key = str(n)
            if name in STORES:
                times, found, built = _store_latencies(name, vectors, query_vectors, encoder, warmup_vectors)
                latency[name][key] = round(float(np.percentile(times, 50)), 3)
                p95[name][key] = round(float(np.percentile(times, 95)), 3)
                build_s[name][key] = round(built, 2)
                assert truth is not None
                recall[name][key] = _recall(found, truth)
                identical.append(found == truth)
                say(f"  {name}: p50 {latency[name][key]} ms, top-10 equal to flat: {found == truth}")
                continue
            params = LAYOUTS[name]
            start = time.perf_counter()
            try:
                index = _index(params, vectors, encoder)
            except RagrouteError as exc:  # e.g. IVF-PQ below the vectors it needs to train
                if name == "flat":
                    raise
                skipped.setdefault(name, {})[key] = str(exc)
                say(f"  {name}: skipped ({exc})")
                continue
            built = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as folder:
                loaded, written = _saved_and_reloaded(index, params, Path(folder))
                del index
                for probe in PROBES.get(name, (None,)):
                    if probe is not None:
                        loaded.params.ivf_nprobe = probe
                    times, found = _latencies(loaded, query_vectors, warmup_vectors)
                    if name == "flat":
                        truth = found
                    if name not in layouts:
                        continue
                    row = _row(name, probe)
                    latency[row][key] = round(float(np.percentile(times, 50)), 3)
                    p95[row][key] = round(float(np.percentile(times, 95)), 3)
                    assert truth is not None
                    recall[row][key] = _recall(found, truth)
                    say(f"  {row}: p50 {latency[row][key]} ms, recall@10 {recall[row][key]}")
                del loaded
            if name in layouts:
                build_s[name][key] = round(built, 2)
                size_bytes[name][key] = round(written / n, 1)
    largest = str(max(sizes))
    speedup: dict[str, float] = {}
    for row in latency:
        if row.startswith("ivfpq+refine") and largest in latency[row] and largest in latency.get("flat", {}):
            speedup[row] = round(latency["flat"][largest] / latency[row][largest], 2)
    return {
        "vectors": f"synthetic, {DIM}-d, normalised, {CENTRES} centres + {LATENT}-d latent variation",
        "queries": queries,
        "k": K,
        "sizes": [int(n) for n in sorted(sizes)],
        "latency_ms_p50": latency,
        "latency_ms_p95": p95,
        "recall@10": recall,
        "build_s": build_s,
        "bytes_per_vector": {
            name: values[max(values, key=int)] for name, values in size_bytes.items() if values
        },
        "bytes_per_vector_by_size": size_bytes,
        "ivfpq_refine_speedup_vs_flat": speedup,
        "skipped": skipped,
        "goals": GOALS,
        # other parts of the scale issue, not measured by this command yet
        "build_docs_per_s": None,
        "ray_identical": None,
        "store_identical": all(identical) if identical else None,
    }


def ray_throughput(
    corpus: Path, encoder_name: str, backend: str, workers: Sequence[int], method: str = "dense"
) -> dict[str, Any]:
    """Ray build throughput per worker count on ``corpus`` (any format ``ragroute build`` reads)."""

    from ragroute.encode import load_encoder
    from ragroute.loaders import load_corpus
    from ragroute.scale.ray_build import measure_build_throughput

    documents = load_corpus(corpus, on_error="raise")  # strict, as every benchmark reads its data
    # No embedding cache: every build encodes (a cached run would measure the cache, not the engine).
    # Each Ray worker's encoder runs one thread, as `ragroute build --engine ray` loads it; the
    # single-process build beside them uses every core.
    factory = functools.partial(load_encoder, encoder_name, backend=backend, use_cache=False, threads=1)
    single = load_encoder(encoder_name, backend=backend, use_cache=False)
    result = measure_build_throughput(
        documents, single, list(workers), method=method, encoder_factory=factory
    )
    result["corpus"] = str(corpus)
    return result


def ray_synthetic_identity(n: int, workers: int = 2) -> dict[str, Any]:
    """A hybrid index of ``n`` generated documents built on Ray with ``workers`` workers and in one
    process, compared (:func:`~ragroute.scale.ray_build.indexes_identical`: ids, vectors, BM25
    statistics and term weights). The encoder is the reliability harnesses' word-hashing one (no
    model: at ~70 passages/s a real encoder would take hours on 100k documents here); what is
    checked is the engine's sharding and exact merging at that size, not an encoder."""
    from ragroute.index.build import build_index
    from ragroute.reliability.workload import WordHashEncoder, corpus_records, documents
    from ragroute.scale.ray_build import build_index_ray, indexes_identical

    docs = documents(corpus_records(7, n))
    encoder = WordHashEncoder(dim=64)
    start = time.perf_counter()
    single = build_index(docs, "hybrid", encoder=encoder, show_progress=False)
    single_s = time.perf_counter() - start
    timings: dict[str, float] = {}
    built = build_index_ray(docs, "hybrid", encoder=encoder, workers=workers, timings=timings)
    return {
        "documents": n,
        "workers": workers,
        "method": "hybrid",
        "identical": indexes_identical(single, built),
        "single_process_s": round(single_s, 1),
        "ray_build_s": round(timings["build_s"], 1),
    }


def _per_call_ms(run: Callable[[Any], Any], items: Sequence[Any], warmup: Any) -> dict[str, float]:
    """p50 and p95 milliseconds of ``run(item)``, one item at a time, after ``run(warmup)``."""
    run(warmup)  # first-touch costs
    times = []
    for item in items:
        start = time.perf_counter()
        run(item)
        times.append((time.perf_counter() - start) * 1000)
    return {"ms_p50": round(float(np.median(times)), 3), "ms_p95": round(float(np.percentile(times, 95)), 3)}


def ppr_cost(edge_counts: Sequence[int], *, queries: int = 50, seed: int = 0) -> dict[str, Any]:
    """PPR latency against graph size: for each directed edge count, ``bench ppr``'s skewed random
    graph (:func:`~ragroute.evaluation.bench_ppr.synthetic_graph`, ~14.4 edges per node, as its
    1.4M-edge graph) and walk-like resets (5 strong and 100 weak seeds), one query at a time through
    the product's :class:`~ragroute.graph.ppr.PPREngine` (``method="auto"``, top 5)."""
    from ragroute.evaluation.bench_ppr import DAMPING, TOP, _walk_like_reset, synthetic_graph
    from ragroute.graph.ppr import PPREngine

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for edges in sorted(edge_counts):
        adjacency = synthetic_graph(max(100, int(edges / 14.4)), edges, seed=seed)
        engine = PPREngine(adjacency)
        ones = np.ones(adjacency.shape[0], dtype=np.float32)
        resets = [_walk_like_reset(rng, ones, 0, adjacency.shape[0]) for _ in range(queries + 1)]
        walk = functools.partial(engine.run, damping=DAMPING, top_k=TOP)
        timed = _per_call_ms(walk, resets[1:], warmup=resets[0])
        out[str(int(adjacency.nnz))] = {"nodes": int(adjacency.shape[0]), **timed}
    return out


def routing_cost(
    source_counts: Sequence[int], *, docs_per_source: int = 500, queries: int = 100
) -> dict[str, Any]:
    """Router latency against the number of sources: the router the product pipeline builds
    (:func:`~ragroute.pipeline.build.pipeline_from_settings`) with the prototype router (default
    settings: a bank of up to 500 documents per source) over ``n`` generated sources of
    ``docs_per_source`` documents, one query at a time with its vector computed up front (routing
    alone, encoding excluded). The encoder is the word-hashing one at 384 dimensions (no model: the
    cost measured is the router's, which depends on the width, not on the weights)."""
    from ragroute.context import QueryContext
    from ragroute.index.dense import DenseIndex
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.reliability.workload import WordHashEncoder, corpus_records, documents
    from ragroute.route.sources import Source

    encoder = WordHashEncoder(dim=DIM)
    out: dict[str, Any] = {}
    probe = [f"question {i} about {w}" for i, w in enumerate(("orbit", "dough", "vpn", "verdict") * queries)]
    for n in sorted(source_counts):
        sources = []
        for s in range(n):
            index = DenseIndex(encoder, name=f"s{s}")
            index.add(
                documents(corpus_records(1000 + s, docs_per_source, prefix=f"s{s}-")), show_progress=False
            )
            sources.append(Source(f"s{s}", index, description=f"source {s}"))
        router = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=encoder).router
        contexts = [QueryContext(text) for text in probe[:queries]]
        for context, vector in zip(contexts, encoder.encode_queries([c.text for c in contexts])):
            context.set_vector(encoder, vector)
        route_one = functools.partial(_route_one, router)
        out[str(n)] = _per_call_ms(route_one, contexts, warmup=contexts[0])
    return out


def _route_one(router: Any, context: Any) -> Any:
    from ragroute.route.base import route_contexts

    return route_contexts(router, [context])


def _recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)])), 4)


def _row(name: str, probe: int | None) -> str:
    return name if probe is None else f"{name}@{probe}"


def format_report(result: Mapping[str, Any]) -> str:
    """Latency, recall and memory per layout and size."""
    sizes = [str(n) for n in result["sizes"]]
    lines = [
        f"{result['vectors']}; {result['queries']} queries one at a time, k = {result['k']}, one thread",
        "",
        f"{'layout':<18}" + "".join(f"{int(n):>12,}" for n in sizes) + f"{'B/vector':>11}",
    ]
    for metric, label in (("latency_ms_p50", "p50 ms"), ("recall@10", "recall@10"), ("build_s", "build s")):
        lines.append(f"-- {label}")
        for name, values in result[metric].items():
            cells = "".join(f"{values[n]:>12}" if n in values else f"{'-':>12}" for n in sizes)
            size = result["bytes_per_vector"].get(name.split("@")[0], "-")
            extra = f"{size:>11}" if metric == "latency_ms_p50" else ""
            lines.append(f"{name:<18}{cells}{extra}")
    for row, speedup in (result["ivfpq_refine_speedup_vs_flat"] or {}).items():
        lines.append(
            # a ratio of p50 latencies (until session 55 called "the queries/s of flat", which is
            # one over the mean latency: the median query's speed-up is what is measured)
            f"{row} at {int(sizes[-1]):,}: {speedup}x faster than flat at p50 (p50 latency ratio) "
            f"(goal {GOALS['ivfpq_refine_speedup_vs_flat']}x), recall@10 "
            f"{result['recall@10'][row].get(sizes[-1])} (goal {GOALS['ivfpq_refine_recall@10']})"
        )
    ray = result.get("ray")
    if ray:
        rates = ", ".join(
            f"{counted(int(n), 'worker')} {rate:.1f}" for n, rate in ray["build_docs_per_s"].items()
        )
        lines.append(
            f"Ray builds of {ray['corpus']} ({ray['documents']} documents, {ray['method']}): docs/s {rates}; "
            f"single process {ray['single_process_docs_per_s']:.1f}; "
            f"Ray start-up {ray['ray_startup_s']:.1f} s; "
            f"identical to the single-process build: {ray['ray_identical']}"
        )
    if result.get("routing_cost"):
        cells = ", ".join(f"{n} sources {row['ms_p50']} ms" for n, row in result["routing_cost"].items())
        lines.append(f"routing (prototype router, one query, p50): {cells}")
    if result.get("ppr_cost"):
        cells = ", ".join(f"{int(n):,} edges {row['ms_p50']} ms" for n, row in result["ppr_cost"].items())
        lines.append(f"PPR (top 5, one query, p50): {cells}")
    synthetic = result.get("ray_synthetic")
    if synthetic:
        s = synthetic
        lines.append(
            f"Ray build of {s['documents']:,} generated documents ({s['method']}, word-hashing encoder, "
            f"{s['workers']} workers): identical to the single-process build: {s['identical']} "
            f"({s['ray_build_s']} s on Ray, {s['single_process_s']} s in one process)"
        )
    return "\n".join(lines)
