"""``ragroute bench graph``: multi-hop passage retrieval with BM25, dense, and graph walks.

On a multi-hop set in BEIR form (``../shared/data/musique``), every method is the
library's own index built by :func:`~ragroute.index.build.build_index` (``bm25``,
``dense``, ``graph``) and scored by a
:class:`~ragroute.evaluation.evaluators.RetrievalEvaluator`: Recall@2, Recall@5 and
full-chain recall@5 (all gold passages of a question in the top 5), one query at
a time. One graph is built; its walk settings (:class:`~ragroute.graph.index.WalkParams`)
give the rows: the static walk in the HippoRAG 2 manner (same extractor and
encoder; top facts by embedding, passage prior 0.05, damping 0.5), the
query-aware walk (the product default), and one ablation row per switch of the
query-aware walk. Build times are reported per index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.evaluation.evaluators import RetrievalEvaluator, measured_reference
from ragroute.graph.index import WalkParams

METRICS = ("recall@2", "recall@5", "full_chain_recall@5")
REFERENCE = {
    "bm25": {"recall@2": 0.348, "recall@5": 0.459, "fcr@5": 0.140},
    "dense": {"recall@2": 0.472, "recall@5": 0.622, "fcr@5": 0.320},
    "note": "issue #8 baselines on ../shared/data/musique (100 questions, MiniLM)",
}
#: (questions, passages) of MuSiQue dev as loaded when the reference numbers were measured
MUSIQUE_SIZE = (100, 1890)


def musique_reference(
    root: Path,
    split: str,
    reference: dict[str, Any],
    size: tuple[int, int],
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """``reference`` (the issue's numbers on MuSiQue dev) when ``root`` is the ``musique`` folder,
    ``split`` is dev and ``size`` (questions, passages scored) is :data:`MUSIQUE_SIZE`; ``None`` for
    other data, so reports show no unrelated numbers. A ``musique`` folder of another size (a cut
    copy) is said through ``log``."""
    if Path(root).resolve().name != "musique" or split != "dev":
        return None
    differs = (
        f"{size[0]} questions over {size[1]} passages, measured on {MUSIQUE_SIZE[0]} over {MUSIQUE_SIZE[1]}"
        if tuple(size) != MUSIQUE_SIZE
        else ""
    )
    return measured_reference(reference, "MuSiQue dev", differs, log)


def run_graph_bench(
    root: Path,
    encoder: Any,
    *,
    split: str = "dev",
    extractor: Any = "rules",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build every index over the corpus (the graph with ``extractor``), score every method;
    the JSON-able result (why the issue's reference is left out, when it is, said through ``log``)."""
    from ragroute.index.build import build_index
    from ragroute.loaders import load_beir

    root = Path(root)
    if not (root / "queries.jsonl").is_file():  # a missing split: load_beir names the ones there are
        raise RagrouteError(
            f"data missing: {root} is not a BEIR folder with qrels/{split}.tsv (see ../shared/data)"
        )
    data = load_beir(root, split=split, on_error="raise")
    contexts = [QueryContext(q.text, id=q.id) for q in data.queries]
    vectors = np.asarray(encoder.encode_queries([c.text for c in contexts], show_progress=False))
    for context, vector in zip(contexts, vectors):
        context.set_vector(encoder, vector)
    evaluator = RetrievalEvaluator(contexts, data.qrels, metrics=METRICS, k=5)
    methods: dict[str, dict[str, Any]] = {}
    build_s: dict[str, float] = {}
    indexes: dict[str, Any] = {}
    for name, kind in (
        ("bm25", "bm25"),
        ("dense (MiniLM)", "dense"),
        ("static ppr (HippoRAG 2 style)", "graph"),
    ):
        start = time.perf_counter()
        indexes[name] = build_index(
            data.corpus,
            kind,
            encoder=None if kind == "bm25" else encoder,
            extractor=extractor if kind == "graph" else None,
            name=kind,
        )
        build_s[name] = round(time.perf_counter() - start, 2)
    graph = indexes.pop("static ppr (HippoRAG 2 style)")
    aware = WalkParams()
    walks = {
        "static ppr (HippoRAG 2 style)": WalkParams.static(),
        "aware walk (default)": aware,
        "aware - query anchors": replace(aware, anchor_weight=0.0),
        "aware - max fact score (mean)": replace(aware, fact_score="mean"),
        "aware - passage prior": replace(aware, passage_prior=0.0),
        "aware - hub damping": replace(aware, hub_damping=0.0),
        "aware - lexical edges": replace(aware, lexical_edges=0.0),
        "aware + key-fact boost 0.05": replace(aware, fact_passage_boost=0.05),
    }
    runs = {**indexes, **dict.fromkeys(walks, graph)}
    for name, index in runs.items():
        if name in walks:
            index.walk = walks[name]
        result = evaluator(index)
        methods[name] = {
            "recall@2": result.metrics["recall@2"],
            "recall@5": result.metrics["recall@5"],
            "fcr@5": result.metrics["full_chain_recall@5"],
            "ms_p50": result.latency_ms.get("p50"),
        }
    graph.walk = aware
    return {
        "root": str(root),
        "split": split,
        "queries": len(contexts),
        "passages": len(data.corpus),
        "encoder": encoder.describe(),
        "methods": methods,
        "build_s": build_s,
        "graph": graph.manifest_params()["counts"],
        "walk": graph.manifest_params()["walk"],
        "extractor": graph.extractor,
        "build_note": "the graph rows share one graph (built once, as the static row's build time)",
        "reference": musique_reference(root, split, REFERENCE, (len(contexts), len(data.corpus)), log),
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"multi-hop retrieval on {result['root']} [{result['split']}]: {result['queries']} questions, "
        f"{result['passages']} passages; graph {result['graph']}",
        f"{'method':<34} {'R@2':>6} {'R@5':>6} {'FCR@5':>6} {'ms p50':>7} {'build s':>8}",
    ]
    graph_build = result["build_s"].get("static ppr (HippoRAG 2 style)", 0.0)
    for name, row in result["methods"].items():
        lines.append(
            f"{name:<34} {row['recall@2']:>6.3f} {row['recall@5']:>6.3f} {row['fcr@5']:>6.3f} "
            f"{row['ms_p50']:>7.2f} {result['build_s'].get(name, graph_build):>8.1f}"
        )
    ref = result["reference"]
    if ref:  # only on MuSiQue dev, the data these numbers belong to
        lines.append(
            f"issue reference (MuSiQue dev): bm25 {ref['bm25']['recall@2']}/{ref['bm25']['recall@5']}/"
            f"{ref['bm25']['fcr@5']}, dense {ref['dense']['recall@2']}/{ref['dense']['recall@5']}/"
            f"{ref['dense']['fcr@5']} (R@2/R@5/FCR@5)"
        )
    return "\n".join(lines)
