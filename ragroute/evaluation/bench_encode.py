"""Encoder backend benchmark: speed, agreement with torch fp32, and retrieval quality.

For each backend (torch fp32 is the baseline) and each BEIR collection given:

* ``passages_per_s``: documents (``Document.full_text()``, what an index encodes) encoded per second,
  best of ``repeats`` timed runs, summed over collections;
* ``speedup``: passages/s over torch fp32 passages/s;
* ``min_cosine`` / ``mean_cosine``: agreement with torch fp32 over every encoded document;
* ``ndcg@10`` (mean over collections, and per collection): exact inner-product
  search over the full corpus with queries from ``queries.jsonl`` and judgements
  from ``qrels/dev.tsv``, scored by :func:`ragroute.evaluation.metrics.evaluate_run`
  (a collection with no scored query, see ``is_scorable``, is left out of the mean);
* ``top10_overlap``: mean fraction of each query's top 10 shared with torch fp32.

A backend's quality "holds" (``quality_holds``) when its nDCG@10 is no more than
:data:`GOAL_NDCG_DROP` below torch fp32 on every collection (a gain is fine), and
it "meets the goal" (``meets_goal``) when it is also at least
:data:`GOAL_SPEEDUP` times as fast. ``recommended`` is the fastest backend whose
quality holds: what ``backend="auto"`` should be. Mind the noise: with 15
judged queries (med) one query moving a relevant document across rank 10 shifts
nDCG@10 by ~0.005, so per-collection deltas below ~0.01 are within noise.
Run ``ragroute bench encode --help``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.cpus import usable_cpus
from ragroute.encode.load import AUTO_BACKEND, BACKENDS, load_encoder
from ragroute.encode.resolve import DEFAULT_ENCODER
from ragroute.errors import RagrouteError
from ragroute.evaluation.metrics import evaluate_run, is_scorable, macro_mean

GOAL_SPEEDUP = 2.0
GOAL_NDCG_DROP = 0.005
BASELINE = "torch"
METRIC = "ndcg@10"


@dataclass
class BeirCollection:
    """A BEIR-format collection, read by :func:`read_beir`."""

    name: str
    path: Path
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def read_beir(path: Path, max_docs: int | None = None) -> BeirCollection:
    """Read a BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/dev.tsv`` (else ``test.tsv``).

    Loaded strictly, as every benchmark loads its data (``ragroute.loaders.beir`` with
    ``on_error="raise"``): a bad line, a record without ``_id`` or ``text``, a qrels id naming no
    query or document, or an empty split is one :class:`~ragroute.errors.CorpusFormatError` line,
    never a skipped record. With ``max_docs`` only the first ``max_docs`` documents are kept
    (judgements for the others then count as misses).
    """
    from ragroute.loaders.beir import load_beir

    path = Path(path)
    if not path.is_dir():
        raise RagrouteError(f"{path}: no such data folder")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (path / name).is_file():
            raise RagrouteError(f"{path}: no {name} (expected a BEIR folder)")
    split = next((n for n in ("dev", "test") if (path / "qrels" / f"{n}.tsv").is_file()), None)
    if split is None:
        raise RagrouteError(f"{path}: no qrels/dev.tsv")
    dataset = load_beir(path, split, on_error="raise")
    corpus, queries, qrels = dataset.corpus, dataset.queries, dataset.qrels
    if max_docs is not None:
        corpus = corpus[: max(0, max_docs)]
    return BeirCollection(
        name=path.name,
        path=path,
        doc_ids=[d.id for d in corpus],
        doc_texts=[d.full_text() for d in corpus],  # what an index encodes
        query_ids=[q.id for q in queries],
        query_texts=[q.text for q in queries],
        qrels={q: dict(rels) for q, rels in qrels.items()},
    )


def search_top_k(queries: np.ndarray, docs: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact inner-product top ``k`` document rows per query, best first."""
    scores = queries @ docs.T
    k = min(k, docs.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _ndcg(collection: BeirCollection, top: np.ndarray) -> float:
    run = {
        qid: [collection.doc_ids[j] for j in row] for qid, row in zip(collection.query_ids, top, strict=True)
    }
    return float(evaluate_run(run, collection.qrels, [METRIC])[METRIC])


def distinct_folder_names(paths: Sequence[Path]) -> None:
    """One line when two ``--data`` folders share a folder name: results are keyed by it, and one
    would overwrite the other (``bench encode``, ``bench dense``)."""
    by_name: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.name in by_name:
            raise RagrouteError(
                f"--data {by_name[path.name]} and {path} share the folder name {path.name!r}: "
                "give each collection once, under names of their own"
            )
        by_name[path.name] = path


def run_encode_bench(
    data_dirs: Sequence[Path],
    max_docs: int | None = None,
    *,
    backends: Sequence[str] = BACKENDS,
    model: str = DEFAULT_ENCODER,
    batch_size: int = 64,
    repeats: int = 2,
    slice_docs: int = 128,
    cache_dir: Path | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark encoder backends on BEIR collections; see the module docstring for the numbers.

    ``torch`` is always measured first (it is the baseline). A missing data folder (or one
    without ``corpus.jsonl``, ``queries.jsonl`` or dev/test qrels) is a :class:`RagrouteError`,
    one whose files are broken a :class:`CorpusFormatError`, before anything is measured.
    Returns a JSON-ready dict whose ``"backends"`` maps each backend to its numbers.
    """
    say = log or (lambda _msg: None)
    order = [BASELINE] + [b for b in dict.fromkeys(backends) if b != BASELINE]
    for name in order:
        if name not in BACKENDS:
            raise RagrouteError(f"unknown encoder backend {name!r}: expected {', '.join(BACKENDS)}")

    # a folder that is missing or broken is one error before anything is measured: measuring the
    # rest would hide it
    collections = [read_beir(Path(data_dir), max_docs) for data_dir in data_dirs]
    distinct_folder_names([coll.path for coll in collections])
    if not any(is_scorable(r) for c in collections for r in c.qrels.values()):  # nDCG@10 would read 0.0000
        raise RagrouteError(
            f"{', '.join(str(c.path) for c in collections)}: no query has a relevant judgement (grade "
            "above 0) to score nDCG@10 by"
        )
    result: dict[str, Any] = {
        "model": model,
        "baseline": BASELINE,
        "batch_size": batch_size,
        "repeats": repeats,
        "slice_docs": slice_docs,
        "max_docs": max_docs,
        "cpu_cores": usable_cpus(),
        "threads": threads,
        "load_avg_start": round(os.getloadavg()[0], 2),
        "collections": {
            c.name: {"path": str(c.path), "docs": len(c.doc_ids), "queries": len(c.query_ids)}
            for c in collections
        },
        "goal": {"speedup": GOAL_SPEEDUP, "max_ndcg_drop": GOAL_NDCG_DROP},
        "backends": {},
        "notes": [
            "torch: sentence-transformers already sorts each call's texts by length before batching, "
            "so a separate length-sorted torch run would be identical",
        ],
    }
    if not collections:
        return result

    encoders: dict[str, Any] = {}
    for name in order:
        say(f"loading {name} ...")
        start = time.perf_counter()
        encoders[name] = load_encoder(
            model, backend=name, cache_dir=cache_dir, use_cache=False, threads=threads
        )
        encoders[name].encode_documents(
            collections[0].doc_texts[:8], batch_size=batch_size, show_progress=False
        )
        result["backends"][name] = {"load_s": round(time.perf_counter() - start, 2)}
        result["model_id"] = encoders[name].model_id

    per_base: dict[str, Any] = {}
    # Timing: every collection is cut into slices of ``slice_docs`` documents and each
    # slice is encoded by every backend in turn (rotating who goes first), ``repeats``
    # times; a backend's time is the sum over slices of its best time. Background load
    # (this machine is shared) then hits all backends alike, and bursts are dropped.
    best: dict[tuple[str, str, int], float] = {}
    parts: dict[tuple[str, str, int], np.ndarray] = {}
    slices = [
        (coll, i, coll.doc_texts[i : i + slice_docs])
        for coll in collections
        for i in range(0, len(coll.doc_texts), max(1, slice_docs))
    ]
    cpu: dict[str, float] = dict.fromkeys(order, 0.0)
    for rep in range(max(1, repeats)):
        for n, (coll, offset, texts) in enumerate(slices):
            shift = (n + rep) % len(order)
            for name in order[shift:] + order[:shift]:
                cpu_start, start = time.process_time(), time.perf_counter()
                vecs = encoders[name].encode_documents(texts, batch_size=batch_size, show_progress=False)
                elapsed = time.perf_counter() - start
                cpu[name] += time.process_time() - cpu_start
                key = (name, coll.name, offset)
                best[key] = min(best.get(key, float("inf")), elapsed)
                parts[key] = vecs
        total = sum(len(t) for _, _, t in slices)
        rates = ", ".join(
            f"{name} {total / sum(best[(name, c.name, o)] for c, o, _ in slices):.1f}" for name in order
        )
        say(f"run {rep + 1}/{repeats}: {rates} passages/s (load avg {os.getloadavg()[0]:.1f})")
    docs: dict[tuple[str, str], np.ndarray] = {}
    seconds: dict[tuple[str, str], float] = {}
    for name in order:
        for coll in collections:
            keys = [(name, coll.name, o) for c, o, _ in slices if c is coll]
            docs[(name, coll.name)] = np.concatenate([parts[k] for k in keys])
            seconds[(name, coll.name)] = sum(best[k] for k in keys)

    for name in order:
        entry = result["backends"][name]
        per: dict[str, Any] = {}
        cosines: list[np.ndarray] = []
        overlaps: list[float] = []
        for coll in collections:
            d = docs[(name, coll.name)]
            q = encoders[name].encode_queries(coll.query_texts, batch_size=batch_size, show_progress=False)
            top = search_top_k(q, d)
            base_top = top if name == BASELINE else per_base[coll.name]["top"]
            cos = np.sum(d * docs[(BASELINE, coll.name)], axis=1)
            cosines.append(cos)
            overlap = float(
                np.mean([len(set(a) & set(b)) / top.shape[1] for a, b in zip(top, base_top, strict=True)])
            )
            overlaps.append(overlap)
            per[coll.name] = {
                METRIC: round(_ndcg(coll, top), 4),
                "passages_per_s": round(len(coll.doc_ids) / seconds[(name, coll.name)], 2),
                "min_cosine": round(float(cos.min()), 5),
                "top10_overlap": round(overlap, 4),
                "top": top,
            }
        if name == BASELINE:
            per_base = per
        total_docs = sum(len(c.doc_ids) for c in collections)
        total_s = sum(seconds[(name, c.name)] for c in collections)
        all_cos = np.concatenate(cosines)
        entry.update(
            passages_per_s=round(total_docs / total_s, 2),
            min_cosine=round(float(all_cos.min()), 5),
            mean_cosine=round(float(all_cos.mean()), 5),
            top10_overlap=round(float(np.mean(overlaps)), 4),
            encode_s=round(total_s, 2),
            cpu_s_per_passage=round(cpu[name] / (total_docs * max(1, repeats)), 4),
        )
        scored = {c.name for c in collections if any(is_scorable(rels) for rels in c.qrels.values())}
        entry[METRIC] = round(macro_mean(p[METRIC] if n in scored else None for n, p in per.items()), 4)
        for coll_name, p in per.items():
            entry[f"{METRIC}/{coll_name}"] = p[METRIC]
        entry["per_collection"] = per

    base = result["backends"][BASELINE]
    for name in order:
        entry = result["backends"][name]
        entry["speedup"] = round(entry["passages_per_s"] / base["passages_per_s"], 3)
        drops = []
        for coll_name, p in entry["per_collection"].items():
            p.pop("top")
            p[f"{METRIC}_delta"] = round(p[METRIC] - base["per_collection"][coll_name][METRIC], 4)
            drops.append(-p[f"{METRIC}_delta"])
        entry["max_ndcg_drop"] = round(max(drops), 4) + 0.0  # + 0.0 turns -0.0 into 0.0
        entry["quality_holds"] = bool(max(drops) <= GOAL_NDCG_DROP)
        entry["meets_goal"] = bool(entry["quality_holds"] and entry["speedup"] >= GOAL_SPEEDUP)
    holding = [n for n in order if result["backends"][n]["quality_holds"]]
    result["recommended"] = max(holding, key=lambda n: result["backends"][n]["passages_per_s"])
    result["auto_backend"] = AUTO_BACKEND
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A human-readable table of :func:`run_encode_bench`'s result, ratios side by side."""
    names = list(result["collections"])
    head = ["backend", "passages/s", "speedup", "min cos", "mean cos", "top10 ovl"]
    head += [f"{METRIC} {n} (Δ)" for n in names] + ["quality", "goal"]
    rows = []
    for backend, e in result["backends"].items():
        row = [
            backend,
            f"{e['passages_per_s']:.1f}",
            f"{e['speedup']:.2f}x",
            f"{e['min_cosine']:.4f}",
            f"{e['mean_cosine']:.4f}",
            f"{e['top10_overlap']:.3f}",
        ]
        for n in names:
            p = e["per_collection"][n]
            row.append(f"{p[METRIC]:.4f} ({p[f'{METRIC}_delta']:+.4f})")
        row.append("holds" if e["quality_holds"] else "drops")
        row.append("met" if e["meets_goal"] else "-")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    info = ", ".join(
        f"{n} {c['docs']} docs / {c['queries']} queries" for n, c in result["collections"].items()
    )
    lines.append("")
    lines.append(
        f"model {result.get('model_id', result['model'])}; {info}; {result['cpu_cores']} cores; "
        f"load avg {result['load_avg_start']} -> {result['load_avg_end']}"
    )
    lines.append(
        f"goal: >= {GOAL_SPEEDUP:g}x torch passages/s and nDCG@10 drop <= {GOAL_NDCG_DROP} "
        "on every collection; "
        f"recommended (fastest whose quality holds): {result['recommended']}; "
        f"auto = {result['auto_backend']}"
    )
    return "\n".join(lines)
