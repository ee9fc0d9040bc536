"""``ragroute bench rerank``: nDCG@10 of dense and hybrid retrieval with and without a reranker.

For every BEIR collection under ``--data`` (one folder, or a folder of them such as
``../shared/data/glasgow``), the library's dense and hybrid indexes are each put
in a one-source pipeline (:func:`~ragroute.pipeline.build.pipeline_from_settings`,
the path users get) once without and once with the cross-encoder reranker
(``reranker: {kind: cross-encoder, model: ...}``), and scored by a
:class:`~ragroute.evaluation.evaluators.RetrievalEvaluator`.

Only held-out queries are scored: when the reranker was trained by ``ragroute
rerank train``, fold 0 of each set trained it (see
:func:`~ragroute.rerank.train.query_fold`), so only fold-1 queries count, for
every row. The fold goes by the folder's name, so a copy or slice of a training set under
another name would hold training queries in its "fold 1": every query whose text (case and
spacing ignored) the reranker may have trained on is left out too, read back from the training
sets its manifest records (:func:`~ragroute.rerank.train.training_queries`), and the result says
how many. When those sets cannot be found here, the result says so instead of claiming the
queries are held out. Collections are macro-averaged, the routed row too (each collection's nDCG@10 over
its own queries, then the mean over collections); a collection with no scored query
(:func:`~ragroute.evaluation.metrics.is_scorable`: judged with grade 0 only) is left out of the mean.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.evaluation.evaluators import RetrievalEvaluator
from ragroute.evaluation.metrics import is_scorable, macro_mean, paired_difference, per_query_scores


def run_rerank_bench(
    root: Path,
    encoder: Any,
    model: str | Path,
    *,
    split: str = "dev",
    candidates: int = 20,
    backend: str = "auto",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score dense/hybrid with and without the reranker on each collection; the JSON-able result.
    Folders left out (not BEIR, no ``split``, no held-out query) are said through ``log`` and listed
    under ``skipped``."""
    from ragroute.evaluation.bench_corpus_routing import missing_split
    from ragroute.index.build import build_index
    from ragroute.loaders import load_beir
    from ragroute.loaders.beir import collection_folders
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.rerank.cross_encoder import CrossEncoderReranker
    from ragroute.rerank.train import expand_roots, query_fold, training_queries
    from ragroute.route.folds import normalized_text
    from ragroute.route.sources import Source

    root = Path(root)
    if not root.exists():
        raise RagrouteError(f"data missing: {root} (see ../shared/data/README.md)")
    folders = expand_roots([root])  # the data is checked before the reranker loads
    for _name, folder in folders:
        if not (folder / "corpus.jsonl").is_file():
            raise RagrouteError(f"{folder}: bench rerank needs BEIR folders (corpus.jsonl)")
    reranker = CrossEncoderReranker(model, backend=backend, candidates=candidates)
    held_out = "fold_rule" in reranker.info.get("params", {})
    trained_texts, unread = training_queries(reranker.info["params"], model) if held_out else (None, "")
    trained_left_out = 0  # fold-1 queries whose text was a training query (a copy under another name)
    collections: dict[str, dict[str, Any]] = {}
    scored: set[str] = set()  # collections with a scored query (the others have no nDCG to average)
    routed_parts: list[tuple[str, Any, list[QueryContext], Any]] = []
    skipped: dict[str, str] = {}
    documents_of: list[set[str]] = []
    # each row's nDCG@10 per scored query ("collection<TAB>query id"), for the paired intervals
    per_query: dict[str, dict[str, float]] = {}
    collection_of: dict[str, str] = {}

    def skip(name: str, why: str) -> None:
        skipped[name] = why
        if log is not None:
            log(f"skipped {name}: {why}")

    if root.is_dir() and not (root / "corpus.jsonl").is_file():  # a folder of collections
        for folder in collection_folders(root):
            if not (folder / "corpus.jsonl").is_file():
                skip(f"{root.name}/{folder.name}", "not a BEIR collection (no corpus.jsonl)")
    for name, folder in folders:
        reason = missing_split(folder, split)
        if reason is not None:
            skip(name, reason)
            continue
        data = load_beir(folder, split=split, on_error="raise")
        queries = [q for q in data.queries if not held_out or query_fold(name, q.id) == 1]
        if trained_texts is not None:
            fresh = [q for q in queries if normalized_text(q.text) not in trained_texts]
            if len(fresh) < len(queries) and log is not None:
                log(
                    f"{name}: left out {len(queries) - len(fresh)} of {len(queries)} fold-1 queries "
                    "whose text the reranker trained on"
                )
            trained_left_out += len(queries) - len(fresh)
            queries = fresh
        if not queries:
            skip(name, f"no {split} query" + (" in the held-out fold" if held_out else ""))
            continue
        contexts = [QueryContext(q.text, id=q.id) for q in queries]
        vectors = np.asarray(encoder.encode_queries([c.text for c in contexts], show_progress=False))
        for context, vector in zip(contexts, vectors):
            context.set_vector(encoder, vector)
        evaluator = RetrievalEvaluator(contexts, data.qrels, metrics=("ndcg@10",), k=10)
        rows: dict[str, Any] = {"queries": len(contexts), "documents": len(data.corpus)}
        judged = {c.id: data.qrels[c.id] for c in contexts if c.id in data.qrels}
        sources = {}
        for method in ("dense", "hybrid"):
            source = sources[method] = Source(
                name, build_index(data.corpus, method, encoder=encoder, name=name)
            )
            for label, stage in ((method, None), (f"{method}+rerank", reranker)):
                pipeline = pipeline_from_settings(
                    [source], {"kind": "centroid"}, encoder=encoder, reranker=stage
                )
                result = evaluator(pipeline)
                rows[label] = {"ndcg@10": result.metrics["ndcg@10"], "ms_p50": result.latency_ms.get("p50")}
                run = {row["id"]: row["hits"] for row in result.rows}
                for qid, score in per_query_scores(run, judged, "ndcg@10").items():
                    per_query.setdefault(label, {})[f"{name}\t{qid}"] = score
                    collection_of[f"{name}\t{qid}"] = name
        collections[name] = rows
        if any(is_scorable(data.qrels[c.id]) for c in contexts):
            scored.add(name)
        routed_parts.append((name, sources["hybrid"], contexts, data.qrels))
        documents_of.append({d.id for d in data.corpus})
    if not collections:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise RagrouteError(
            f"{root}: no queries to score (split {split!r}, held-out fold)" + (f": {why}" if why else "")
        )
    routed = None
    clash = _repeated_ids(routed_parts, documents_of)
    if clash:  # one qrels over all collections would judge a query or document of one by another's
        skip("routed", f"ids repeat across collections ({clash}): the routed row needs unique ids")
    elif len(routed_parts) > 1:
        routed = routed_rows(routed_parts, encoder, reranker)
    labels = ("dense", "dense+rerank", "hybrid", "hybrid+rerank")
    # from each collection's unrounded nDCG@10 (its per-query mean; the rows hold it rounded): the
    # gains below are differences of these, rounded once, as the paired gains are
    macro = {label: _macro(per_query.get(label, {}), collection_of, scored) for label in labels}
    return {
        "root": str(root),
        "split": split,
        "encoder": encoder.describe(),
        "reranker": reranker.describe(),
        "queries": _held_out_label(held_out, trained_texts is not None, unread, trained_left_out),
        "collections": collections,
        "macro_ndcg@10": {k: round(v, 4) for k, v in macro.items()},
        "routed": routed,
        "skipped": skipped,
        "rerank_gain": {
            "dense": round(macro["dense+rerank"] - macro["dense"], 4),
            "hybrid": round(macro["hybrid+rerank"] - macro["hybrid"], 4),
        },
        # the same gains paired per query, with 95% bootstrap intervals resampled within collections
        "rerank_gain_ci95": {
            method: paired_difference(
                per_query.get(f"{method}+rerank", {}), per_query.get(method, {}), groups=collection_of
            )
            for method in ("dense", "hybrid")
        },
    }


def _macro(scores: dict[str, float], collection_of: dict[str, str], scored: set[str]) -> float:
    """The mean over the ``scored`` collections of each one's mean per-query score, unrounded."""
    by_collection: dict[str, list[float]] = {}
    for key, value in scores.items():
        by_collection.setdefault(collection_of[key], []).append(value)
    return macro_mean(float(np.mean(v)) if n in scored else None for n, v in by_collection.items())


def _held_out_label(held_out: bool, checked: bool, unread: str, left_out: int) -> str:
    """What the scored queries are (the result's ``queries``): all of them for a reranker not trained
    here; else fold 1, held out only when the training queries could be read back and left out."""
    if not held_out:
        return "all"
    if not checked:
        return (
            f"fold-1 by folder name only (the reranker's training queries cannot be read back: {unread}; "
            "a copy of a training set under another folder name would mix them in)"
        )
    label = "fold-1 (held out from reranker training)"
    if left_out:
        label += f", less {left_out} whose text the reranker trained on"
    return label


def _repeated_ids(parts: list[tuple[str, Any, list[QueryContext], Any]], documents_of: list[set[str]]) -> str:
    """The first query or document id found in two collections (``""`` when there is none)."""
    from ragroute.evaluation.bench_corpus_routing import first_shared_id

    for what, id_sets in (
        ("query", [{c.id for c in contexts} for _, _, contexts, _ in parts]),
        ("document", documents_of),
    ):
        shared = first_shared_id(id_sets)
        if shared is not None:
            return f"{what} id {shared!r}"
    return ""


def routed_rows(parts: list[tuple[str, Any, list[QueryContext], Any]], encoder: Any, reranker: Any) -> dict:
    """All collections as routed sources (prototype router, product selection and fusion), with
    and without the reranker re-ordering the fused lists; every collection's held-out queries,
    nDCG@10 macro-averaged over the collections (as the per-collection rows are)."""
    from ragroute.pipeline.build import pipeline_from_settings

    sources = [source for _, source, _, _ in parts]  # each collection's hybrid source
    contexts = [c for _, _, cs, _ in parts for c in cs]
    # the scored queries' own judgements: a part's qrels hold its fold-0 queries too, and one of a
    # later collection with a scored query's id replaced that query's judgements (until session 55)
    qrels = {c.id: rels[c.id] for _, _, cs, rels in parts for c in cs if c.id in rels}
    groups = {c.id: name for name, _, cs, _ in parts for c in cs}
    evaluator = RetrievalEvaluator(contexts, qrels, metrics=("ndcg@10",), k=10, groups=groups)
    out = {"sources": len(sources), "queries": len(contexts), "router": "prototype"}
    for label, stage in (("hybrid routed", None), ("hybrid routed+rerank", reranker)):
        pipeline = pipeline_from_settings(sources, {"kind": "prototype"}, encoder=encoder, reranker=stage)
        result = evaluator(pipeline)
        out[label] = {"ndcg@10": result.metrics["ndcg@10"], "ms_p50": result.latency_ms.get("p50")}
    return out


def format_report(result: dict[str, Any]) -> str:
    reranker = result["reranker"]
    header = ("collection", "queries", "dense", "+rerank", "hybrid", "+rerank", "ms p50")
    lines = [
        f"reranker {reranker.get('name')} ({reranker.get('backend')}, {reranker.get('candidates')} "
        f"candidates) on {result['root']} [{result['split']}], queries: {result['queries']}",
        "{:<22} {:>7} {:>7} {:>8} {:>7} {:>8} {:>7}".format(*header),
    ]
    for name, row in result["collections"].items():
        scores = [row[label]["ndcg@10"] for label in ("dense", "dense+rerank", "hybrid", "hybrid+rerank")]
        lines.append(
            "{:<22} {:>7} {:>7.4f} {:>8.4f} {:>7.4f} {:>8.4f} {:>7.1f}".format(
                name, row["queries"], *scores, row["hybrid+rerank"]["ms_p50"] or 0.0
            )
        )
    m = result["macro_ndcg@10"]
    lines.append(
        "{:<22} {:>7} {:>7.4f} {:>8.4f} {:>7.4f} {:>8.4f}".format(
            "macro nDCG@10", "", m["dense"], m["dense+rerank"], m["hybrid"], m["hybrid+rerank"]
        )
    )
    for method, gain in (result.get("rerank_gain_ci95") or {}).items():
        if gain["diff"] is not None:
            lines.append(
                f"reranker gain over {method}, macro nDCG@10 (paired per query, 95% bootstrap interval "
                f"within collections, {gain['queries']} queries): {gain['diff']:+.4f} "
                f"[{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]"
            )
    routed = result.get("routed")
    if routed:
        lines.append(
            f"routed over all {routed['sources']} collections ({routed['router']} router, "
            f"{routed['queries']} queries): nDCG@10 {routed['hybrid routed']['ndcg@10']:.4f} -> "
            f"{routed['hybrid routed+rerank']['ndcg@10']:.4f} with the reranker"
        )
    for name, why in result.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)
