"""``ragroute bench dense``: recall / speed / memory of the faiss layouts on a real corpus.

Documents are embedded once (through the embedding cache), then the same vectors
go into a flat (exact), an HNSW and an IVF-PQ index. For each layout we report
build time, queries/s (batched and one at a time), recall@10 of the exact top-10,
nDCG@10 against the collection's judgements, and bytes per vector.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ragroute.errors import RagrouteError
from ragroute.evaluation.metrics import evaluate_run
from ragroute.index.dense import FACTORIES, DenseIndex, DenseParams


def _qps(index: DenseIndex, vectors: np.ndarray, k: int, batched: bool) -> tuple[float, list]:
    start = time.perf_counter()
    if batched:
        results = index.search_vectors(vectors, k)
    else:
        results = [index.search_vectors(v[None, :], k)[0] for v in vectors]
    return len(vectors) / (time.perf_counter() - start), results


def _bytes_per_vector(index: DenseIndex) -> float:
    assert index.faiss_index is not None
    blob = faiss.serialize_index(index.faiss_index)
    return len(blob) / max(1, len(index))


def run_dense_bench(
    data_dir: Path,
    *,
    encoder_name: str,
    backend: str,
    cache_dir: Path | None,
    split: str = "dev",
    repeat_queries: int = 20,
    k: int = 10,
) -> dict[str, Any]:
    """Measure every faiss layout on one BEIR collection, on the judged queries of ``split``;
    returns a JSON-ready dict.

    The data is loaded strictly (``on_error="raise"``), before the encoder: a bad line, a qrels id
    naming no query or document, or an empty split is one
    :class:`~ragroute.errors.CorpusFormatError`, never a skipped record.
    """
    from ragroute.encode import load_encoder
    from ragroute.loaders import load_beir

    dataset = load_beir(data_dir, split=split, on_error="raise")
    encoder = load_encoder(encoder_name, backend=backend, cache_dir=cache_dir)
    doc_vectors = encoder.encode_documents([d.full_text() for d in dataset.corpus])
    query_vectors = encoder.encode_queries([q.text for q in dataset.queries], show_progress=False)
    # Repeat the judged queries (with tiny noise) so throughput is measured over enough calls: the
    # whole set again and again, so each query timed one at a time follows another one (until session
    # 52 each was repeated in place, and the one-at-a-time pass timed the first 25 queries 20 times
    # in a row each, an ANN index finding its last search's nodes in the CPU caches)
    rng = np.random.default_rng(0)
    timing_vectors = np.tile(query_vectors, (repeat_queries, 1))
    timing_vectors += rng.normal(0, 1e-3, timing_vectors.shape).astype(np.float32)
    timing_vectors /= np.linalg.norm(timing_vectors, axis=1, keepdims=True)
    layouts: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    exact: list[list[str]] = []
    for factory in FACTORIES:
        start = time.perf_counter()
        index = DenseIndex(encoder, DenseParams(factory=factory))
        try:
            index.add_vectors(dataset.corpus, doc_vectors)
        except RagrouteError as exc:  # IVF-PQ below the vectors it needs to train: the others still run
            if factory == "flat":
                raise
            skipped[factory] = str(exc)
            continue
        build_s = time.perf_counter() - start
        batch_qps, _ = _qps(index, timing_vectors, k, batched=True)
        single_qps, _ = _qps(index, timing_vectors[: min(len(timing_vectors), 500)], k, batched=False)
        ranked = [[h.doc_id for h in hits] for hits in index.search_vectors(query_vectors, 100)]
        if factory == "flat":
            exact = [r[:k] for r in ranked]
        overlap = np.mean([len(set(a[:k]) & set(b)) / max(1, len(b)) for a, b in zip(ranked, exact)])
        quality = evaluate_run(
            {q.id: r for q, r in zip(dataset.queries, ranked)}, dataset.qrels, ("ndcg@10", "recall@100")
        )
        layouts[factory] = {
            "build_s": round(build_s, 3),
            "batch_qps": round(batch_qps, 1),
            "single_qps": round(single_qps, 1),
            f"recall@{k}_vs_exact": round(float(overlap), 4),
            "ndcg@10": round(quality["ndcg@10"], 4),
            "recall@100": round(quality["recall@100"], 4),
            "bytes_per_vector": round(_bytes_per_vector(index), 1),
        }
    flat = layouts["flat"]
    for row in layouts.values():
        row["batch_speedup_vs_flat"] = round(row["batch_qps"] / flat["batch_qps"], 2)
        row["single_speedup_vs_flat"] = round(row["single_qps"] / flat["single_qps"], 2)
    return {
        "data": str(data_dir),
        "split": split,
        "documents": len(dataset.corpus),
        "queries": len(dataset.queries),
        "encoder": encoder.describe(),
        "layouts": layouts,
        "skipped": skipped,
    }


def format_dense_report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['data']}: {result['documents']} docs, {result['queries']} judged queries "
        f"(split {result.get('split', 'dev')})"
    ]
    header = (
        f"{'layout':<7} {'build s':>8} {'batch q/s':>10} {'x flat':>7} {'1-by-1 q/s':>11} {'x flat':>7} "
        f"{'R@10 vs exact':>14} {'nDCG@10':>8} {'R@100':>7} {'bytes/vec':>10}"
    )
    lines.append(header)
    for name, row in result["layouts"].items():
        lines.append(
            f"{name:<7} {row['build_s']:>8.2f} {row['batch_qps']:>10.0f} "
            f"{row['batch_speedup_vs_flat']:>7.2f} {row['single_qps']:>11.0f} "
            f"{row['single_speedup_vs_flat']:>7.2f} {row['recall@10_vs_exact']:>14.3f} "
            f"{row['ndcg@10']:>8.4f} {row['recall@100']:>7.4f} {row['bytes_per_vector']:>10.0f}"
        )
    lines += [f"{name:<7} skipped: {why}" for name, why in result.get("skipped", {}).items()]
    return "\n".join(lines)
