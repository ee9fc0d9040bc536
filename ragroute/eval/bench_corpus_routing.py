"""``ragroute bench corpus-routing``: route queries among BEIR collections, score routing and retrieval.

ROOT holds one BEIR folder per source (as ``../shared/data/glasgow``); a query's
correct route is the folder it came from. Every source gets a dense index
(all-MiniLM-L6-v2 by default), or with ``--method hybrid`` a BM25 + dense one; the
same document embeddings also make one merged index over all sources. Each
query's top hits from every source are computed once, so every router is scored
on identical retrieval: routing accuracy, nDCG@10 of routed retrieval (selected
routes fused), and routing latency excluding query encoding (the confidence
router's searches of every source are included). Baselines measured in the same
run: one merged index, the oracle source, centroid-only routing, 5-nearest
labelled queries, and LlamaIndex's ``EmbeddingSingleSelector`` over one-sentence
descriptions.

Routers that learn from labelled queries use ``--train-split``; when it equals
``--split`` they are scored by k-fold cross-validation (each query is routed by a
model that never saw its text: identical texts, such as the ADI queries that are
also CISI queries, share a fold). Without ``--train-split`` only training-free
routers run. The report lists each router's routing errors (gold -> routed) and
the best router's nDCG@10 as a share of the oracle and of the text-only ceiling.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from ragroute.eval.bench_indexes import METHODS, KnownQueries, bench_index, check_method
from ragroute.eval.metrics import evaluate_run
from ragroute.eval.options import bench_encoder_options
from ragroute.index.fusion import fuse
from ragroute.route.base import Router, select_routes
from ragroute.route.folds import grouped_stratified_folds, text_groups
from ragroute.route.sources import Source
from ragroute.types import Hit
from ragroute.yaml_files import read_yaml

BASELINES_REFERENCE = {
    "oracle_ndcg@10": 0.520,
    "merged_ndcg@10": 0.418,
    "centroid": {"ndcg@10": 0.404, "accuracy": 0.79},
    "knn-5 (leave-one-out)": {"ndcg@10": 0.388, "accuracy": 0.84},
    "llamaindex-embedding-selector": {"ndcg@10": 0.305, "accuracy": 0.62},
    "note": "issue #3 baselines, Glasgow dev, all-MiniLM-L6-v2, macro over the 8 collections",
}


@dataclass
class Collection:
    name: str
    corpus: list
    queries: list
    qrels: dict


@dataclass
class RoutingData:
    """Everything computed once and shared by all routers."""

    collections: list[Collection]
    sources: list[Source]
    query_texts: list[str]
    query_ids: list[str]
    query_labels: list[str]
    query_vectors: np.ndarray
    qrels: dict[str, dict[str, int]]
    per_source_hits: dict[str, list[list[Hit]]]  # source -> per-query top hits
    merged_hits: list[list[Hit]]


def load_collections(root: Path, split: str) -> list[Collection]:
    from ragroute.loaders import load_beir

    folders = sorted(p for p in Path(root).iterdir() if (p / "qrels" / f"{split}.tsv").is_file())
    out = []
    for folder in folders:
        data = load_beir(folder, split=split)
        out.append(Collection(folder.name, data.corpus, data.queries, data.qrels))
    return out


def prepare(
    root: Path,
    split: str,
    encoder: Any,
    depth: int = 100,
    descriptions: dict | None = None,
    method: str = "dense",
) -> RoutingData:
    """Index every collection (and all of them merged), embed every query once, search every source once.

    ``method``: ``dense`` or ``hybrid`` (BM25 + dense per index, see :mod:`ragroute.eval.bench_indexes`).
    """
    check_method(method)
    collections = load_collections(root, split)
    if not collections:
        raise click.ClickException(f"no BEIR folders with qrels/{split}.tsv under {root}")
    texts = [q.text for col in collections for q in col.queries]
    qvecs = np.asarray(encoder.encode_queries(texts, show_progress=False), dtype=np.float32)
    known = KnownQueries(encoder, texts, qvecs)
    sources, all_docs, all_vectors = [], [], []
    for col in collections:
        vectors = encoder.encode_documents([d.full_text() for d in col.corpus])
        index = bench_index(col.name, col.corpus, vectors, known, method)
        sources.append(Source(col.name, index, description=(descriptions or {}).get(col.name, "")))
        all_docs.extend(col.corpus)
        all_vectors.append(vectors)
    merged = bench_index("merged", all_docs, np.vstack(all_vectors), known, method)
    return RoutingData(
        collections,
        sources,
        texts,
        [q.id for col in collections for q in col.queries],
        [col.name for col in collections for _ in col.queries],
        qvecs,
        {qid: rels for col in collections for qid, rels in col.qrels.items()},
        {s.name: s.search_many(texts, depth) for s in sources},
        merged.search_many(texts, depth),
    )


def routed_run(
    data: RoutingData, chosen: list[list[str]], probs: list[dict[str, float]], fusion: str, k: int = 100
):
    run = {}
    for i, qid in enumerate(data.query_ids):
        lists = {name: data.per_source_hits[name][i] for name in chosen[i] if name in data.per_source_hits}
        if not lists:
            run[qid] = []
        elif len(lists) == 1:
            run[qid] = [h.doc_id for h in next(iter(lists.values()))[:k]]
        elif fusion == "score":
            merged = sorted((h for hits in lists.values() for h in hits), key=lambda h: -h.score)
            run[qid] = [h.doc_id for h in merged[:k]]
        else:
            fused = fuse(lists, method=fusion, weights={n: probs[i].get(n, 0.0) for n in lists}, limit=k)
            run[qid] = [h.doc_id for h in fused]
    return run


def macro_ndcg(data: RoutingData, run: dict[str, list[str]]) -> float:
    """nDCG@10 averaged per collection, then over collections (as the issue's baselines)."""
    per_collection = []
    for col in data.collections:
        sub = {qid: run.get(qid, []) for qid in col.qrels}
        per_collection.append(evaluate_run(sub, col.qrels, ("ndcg@10",))["ndcg@10"])
    return float(np.mean(per_collection))


def text_only_ceiling(data: RoutingData, fusion: str = "score") -> dict[str, Any]:
    """The best any router that sees only the query text can do (one route per distinct text).

    Collections may share query texts (in Glasgow, every ADI query is also a CISI query); a
    text-only router must send identical texts to the same place, so it can be right for only
    one copy. For each group of identical texts we pick the source that maximises the group's
    share of the macro nDCG@10 (and, separately, of accuracy). ``ndcg@10_hedged`` is the
    other honest option: every shared text queries all its sources, fused with ``fusion``
    (every other query goes to its own source).
    """
    names = [s.name for s in data.sources]
    size = {c.name: len(c.queries) for c in data.collections}
    weight = np.array([1.0 / (len(data.collections) * size[label]) for label in data.query_labels])
    gain = np.zeros((len(data.query_ids), len(names)))
    for j, name in enumerate(names):
        for i, qid in enumerate(data.query_ids):
            ranking = [h.doc_id for h in data.per_source_hits[name][i]]
            gain[i, j] = evaluate_run({qid: ranking}, {qid: data.qrels[qid]}, ("ndcg@10",))["ndcg@10"]
    groups = text_groups(data.query_texts)
    ndcg = correct = 0.0
    shared = 0
    for members in groups:
        ndcg += max(float((weight[members] * gain[members, j]).sum()) for j in range(len(names)))
        correct += max(sum(data.query_labels[i] == name for i in members) for name in names)
        shared += len(members) if len({data.query_labels[i] for i in members}) > 1 else 0
    routes_of = {i: sorted({data.query_labels[j] for j in members}) for members in groups for i in members}
    chosen = [routes_of[i] for i in range(len(data.query_ids))]
    hedged = routed_run(data, chosen, [dict.fromkeys(c, 1.0) for c in chosen], fusion)
    return {
        "accuracy": round(correct / len(data.query_ids), 4),
        "ndcg@10": round(ndcg, 4),
        "ndcg@10_hedged": round(macro_ndcg(data, hedged), 4),
        "queries_with_text_in_several_sources": shared,
    }


def score_router(
    data: RoutingData, decide: Callable[[list[int]], list], *, threshold: float, max_routes: int, fusion: str
) -> dict[str, Any]:
    """Route every query (``decide`` maps query positions to Decisions), retrieve, and score."""
    decisions, latencies = [], []
    for i in range(len(data.query_texts)):
        start = time.perf_counter()
        decisions.extend(decide([i]))
        latencies.append((time.perf_counter() - start) * 1000)
    top1 = [d.chosen[0] for d in decisions]
    chosen = [select_routes(d.routes, threshold=threshold, max_routes=max_routes) for d in decisions]
    single = routed_run(data, [[t] for t in top1], [d.routes for d in decisions], fusion)
    multi = routed_run(data, chosen, [d.routes for d in decisions], fusion)
    labels = np.asarray(data.query_labels)
    errors = Counter(f"{gold}->{routed}" for gold, routed in zip(data.query_labels, top1) if gold != routed)
    return {
        "accuracy": round(float(np.mean(np.asarray(top1) == labels)), 4),
        "ndcg@10": round(macro_ndcg(data, multi), 4),
        "ndcg@10_top1_only": round(macro_ndcg(data, single), 4),
        "routes_per_query": round(float(np.mean([len(c) for c in chosen])), 3),
        "gold_in_chosen": round(float(np.mean([lab in c for lab, c in zip(labels, chosen)])), 4),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 3),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 3),
        "errors": dict(errors.most_common()),
    }


def router_decider(router: Router, data: RoutingData) -> Callable[[list[int]], list]:
    def decide(positions: list[int]) -> list:
        return router.route_many(
            [data.query_texts[i] for i in positions], query_vectors=data.query_vectors[positions]
        )

    return decide


def cross_validated(
    make: Callable[[list[str], list[str]], Router], data: RoutingData, folds: int, seed: int = 0
) -> Callable[[list[int]], list]:
    """Decider that routes each query with a router fitted on the other folds.

    Folds are stratified by source and grouped by text: queries with the same text
    (in Glasgow, every ADI query is also a CISI query) always share a fold, so no
    query is routed by a model that was fitted on its own text under another label.
    """
    fold_of = grouped_stratified_folds(data.query_texts, data.query_labels, folds, seed)
    routers = {}
    for f in range(folds):
        train = np.flatnonzero(fold_of != f)
        routers[f] = make([data.query_texts[i] for i in train], [data.query_labels[i] for i in train])

    def decide(positions: list[int]) -> list:
        out = []
        for i in positions:
            router = routers[int(fold_of[i])]
            out.extend(router.route_many([data.query_texts[i]], query_vectors=data.query_vectors[[i]]))
        return out

    return decide


def split_labels(root: Path, split: str) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for col in load_collections(root, split):
        texts.extend(q.text for q in col.queries)
        labels.extend(col.name for _ in col.queries)
    return texts, labels


def glasgow_descriptions() -> dict[str, str]:
    text = (
        resources.files("ragroute.eval")
        .joinpath("data/glasgow_descriptions.yaml")
        .read_text(encoding="utf-8")
    )
    return yaml.safe_load(text)


def run_corpus_routing_bench(
    root: Path,
    split: str,
    train_split: str | None,
    encoder: Any,
    *,
    threshold: float = 0.25,
    max_routes: int = 3,
    fusion: str = "score",
    folds: int = 5,
    descriptions: dict[str, str] | None = None,
    method: str = "dense",
) -> dict[str, Any]:
    from ragroute.route.confidence import ConfidenceRouter
    from ragroute.route.prototype import PrototypeConfig, PrototypeRouter

    descriptions = descriptions if descriptions is not None else glasgow_descriptions()
    data = prepare(root, split, encoder, descriptions=descriptions, method=method)
    merged_run = {qid: [h.doc_id for h in hits] for qid, hits in zip(data.query_ids, data.merged_hits)}
    oracle_run = routed_run(data, [[lab] for lab in data.query_labels], [{} for _ in data.query_ids], fusion)

    def score(decide: Callable[[list[int]], list]) -> dict[str, Any]:
        return score_router(data, decide, threshold=threshold, max_routes=max_routes, fusion=fusion)

    routers: dict[str, dict] = {}

    centroid = PrototypeRouter(data.sources, encoder, PrototypeConfig(description_weight=0, bank_weight=0))
    routers["centroid (baseline)"] = score(router_decider(centroid, data))
    prototype = PrototypeRouter(data.sources, encoder)
    routers["prototype"] = score(router_decider(prototype, data))
    confidence = ConfidenceRouter(data.sources)
    routers["confidence"] = score(router_decider(confidence, data))
    llama = _llamaindex_selector(data, encoder)
    if llama is not None:
        routers["llamaindex-embedding-selector (baseline)"] = score(llama)
    if train_split is not None:
        for name, make in _learned_routers(encoder, prototype, data).items():
            if train_split == split:
                routers[f"{name} (cross-validated)"] = score(cross_validated(make, data, folds))
            else:
                routers[name] = score(router_decider(make(*split_labels(root, train_split)), data))
    return {
        "root": str(root),
        "split": split,
        "train_split": train_split,
        "evaluation": "k-fold cross-validation on the split" if train_split == split else "held-out split",
        "queries": len(data.query_ids),
        "collections": {
            c.name: {"documents": len(c.corpus), "queries": len(c.queries)} for c in data.collections
        },
        "encoder": encoder.describe(),
        "method": method,
        "selection": {"threshold": threshold, "max_routes": max_routes, "fusion": fusion},
        "routers": routers,
        "merged_ndcg@10": round(macro_ndcg(data, merged_run), 4),
        "oracle_ndcg@10": round(macro_ndcg(data, oracle_run), 4),
        "text_only_ceiling": text_only_ceiling(data, fusion),
        "latency_ms_p50": min(r["latency_ms_p50"] for r in routers.values()),
        "baseline_reference": BASELINES_REFERENCE,
        "calibration": {"prototype": prototype.calibration, "confidence": confidence.calibration},
    }


def _learned_routers(
    encoder: Any, prototype: Router, data: RoutingData
) -> dict[str, Callable[[list[str], list[str]], Router]]:
    """Routers fitted on labelled queries: name -> factory(texts, labels)."""
    from ragroute.route.ensemble import EnsembleRouter
    from ragroute.route.features import QueryFeatures
    from ragroute.route.knn import KnnRouter
    from ragroute.route.trained import TrainedRouter

    vectors = {text: vec for text, vec in zip(data.query_texts, data.query_vectors)}

    def knn(texts: list[str], labels: list[str]) -> Router:
        return KnnRouter(texts, labels, encoder, k=5)

    def trained(texts: list[str], labels: list[str]) -> Router:
        known = np.stack([vectors[t] for t in texts]) if all(t in vectors for t in texts) else None
        return TrainedRouter.fit(
            texts, labels, encoder, features=QueryFeatures(hashed_dim=4096), query_vectors=known
        )

    def ensemble(texts: list[str], labels: list[str]) -> Router:
        return EnsembleRouter([prototype, trained(texts, labels)])

    return {"knn-5 (baseline)": knn, "trained": trained, "ensemble prototype+trained": ensemble}


def _llamaindex_selector(data: RoutingData, encoder: Any) -> Callable[[list[int]], list] | None:
    """LlamaIndex's EmbeddingSingleSelector over the source descriptions, with our encoder."""
    from ragroute.integrations.llamaindex_embedding import selector_decider

    if not all(s.description for s in data.sources):
        return None
    return selector_decider(data.sources, encoder, data.query_texts)


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"corpus routing on {result['root']} [{result['split']}], {result['queries']} queries, "
        f"{len(result['collections'])} {result['method']} sources; learned routers: {result['evaluation']}",
        f"selection: threshold {result['selection']['threshold']}, "
        f"max {result['selection']['max_routes']} routes, fusion {result['selection']['fusion']}",
        f"{'router':<44} {'accuracy':>8} {'nDCG@10':>8} {'top1-only':>9} {'routes/q':>8} {'gold in':>8} "
        f"{'p50 ms':>7} {'p95 ms':>7}",
    ]
    for name, row in result["routers"].items():
        lines.append(
            f"{name:<44} {row['accuracy']:>8.3f} {row['ndcg@10']:>8.4f} {row['ndcg@10_top1_only']:>9.4f} "
            f"{row['routes_per_query']:>8.2f} {row['gold_in_chosen']:>8.3f} {row['latency_ms_p50']:>7.2f} "
            f"{row['latency_ms_p95']:>7.2f}"
        )
    ref = result["baseline_reference"]
    ceiling = result["text_only_ceiling"]
    lines.append(
        f"{'merged index (one index over all sources)':<44} {'':>8} {result['merged_ndcg@10']:>8.4f}"
    )
    lines.append(f"{'oracle source':<44} {'1.000':>8} {result['oracle_ndcg@10']:>8.4f}")
    lines.append(
        f"{'ceiling for routers that see only the text':<44} {ceiling['accuracy']:>8.3f} "
        f"{ceiling['ndcg@10']:>8.4f}   ({ceiling['queries_with_text_in_several_sources']} queries share "
        "their text with another source)"
    )
    lines.append(
        f"{'  same, shared texts hedged over their sources':<44} {'':>8} {ceiling['ndcg@10_hedged']:>8.4f}"
        f"   (fusion {result['selection']['fusion']})"
    )
    lines.append(
        f"issue reference (dense retrieval, dev, MiniLM): oracle {ref['oracle_ndcg@10']}, "
        f"merged {ref['merged_ndcg@10']}, "
        f"centroid {ref['centroid']['ndcg@10']} ({ref['centroid']['accuracy']:.0%}), knn-5 "
        f"{ref['knn-5 (leave-one-out)']['ndcg@10']} ({ref['knn-5 (leave-one-out)']['accuracy']:.0%}), "
        f"LlamaIndex selector {ref['llamaindex-embedding-selector']['ndcg@10']} "
        f"({ref['llamaindex-embedding-selector']['accuracy']:.0%})"
    )
    best_name, best = max(result["routers"].items(), key=lambda item: item[1]["ndcg@10"])
    lines.append(
        f"best nDCG@10: {best_name} {best['ndcg@10']:.4f} = "
        f"{best['ndcg@10'] / max(result['oracle_ndcg@10'], 1e-12):.3f} x oracle, "
        f"{best['ndcg@10'] / max(ceiling['ndcg@10'], 1e-12):.3f} x text-only ceiling"
    )
    lines.append("routing errors (gold->routed: queries):")
    for name, row in result["routers"].items():
        shown = ", ".join(f"{pair} {n}" for pair, n in list(row["errors"].items())[:6]) or "none"
        more = len(row["errors"]) - 6
        lines.append(f"  {name:<46} {shown}" + (f", +{more} more pairs" if more > 0 else ""))
    return "\n".join(lines)


@click.command("corpus-routing")
@click.option(
    "--data",
    "root",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder holding one BEIR folder per source (e.g. ../shared/data/glasgow).",
)
@click.option("--split", default="dev", show_default=True, help="Split whose queries are routed and scored.")
@click.option(
    "--train-split",
    default=None,
    help="Split to fit learned routers on; equal to --split means k-fold cross-validation.",
)
@bench_encoder_options
@click.option(
    "--threshold", type=float, default=0.25, show_default=True, help="Route probability to be queried."
)
@click.option("--max-routes", type=int, default=3, show_default=True)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="dense",
    show_default=True,
    help="Retrieval in every source and in the merged index: dense, or hybrid (BM25 + dense, RRF).",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Cross-validation folds when --train-split equals --split (identical query texts share a fold).",
)
@click.option(
    "--fusion",
    type=click.Choice(["score", "rrf", "minmax", "zscore"]),
    default="score",
    show_default=True,
    help="How lists from several routes merge (score: by raw cosine, comparable across dense sources).",
)
@click.option(
    "--descriptions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML mapping source name -> one-sentence description [default: built-in Glasgow ones].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on the last line.")
def corpus_routing_command(
    root: Path,
    split: str,
    train_split: str | None,
    encoder: str,
    backend: str,
    cache_dir: Path,
    threshold: float,
    max_routes: int,
    method: str,
    folds: int,
    fusion: str,
    descriptions: Path | None,
    as_json: bool,
) -> None:
    """Route each query of --split to the collection it came from; compare routers, the merged
    index and the oracle source on accuracy, nDCG@10 and routing latency.
    """
    from ragroute.cli import emit_json
    from ragroute.encode import load_encoder

    if not Path(root).is_dir():
        raise click.ClickException(f"data missing: {root} is not a folder (see ../shared/data/README.md)")
    enc = load_encoder(encoder, backend=backend, cache_dir=cache_dir)
    desc = read_yaml(descriptions, "descriptions file") if descriptions else None
    if desc is not None and not isinstance(desc, dict):
        raise click.ClickException(f"descriptions file {descriptions} must map source names to sentences")
    result = run_corpus_routing_bench(
        Path(root),
        split,
        train_split,
        enc,
        threshold=threshold,
        max_routes=max_routes,
        fusion=fusion,
        folds=folds,
        descriptions=desc,
        method=method,
    )
    click.echo(format_report(result))
    if as_json:
        emit_json(result)
