"""``ragroute bench stepwise``: step-wise retrieval (plan, gate, retrieve per sub-question) on a
multi-hop set, against single-shot dense and BM25 over the same indexes.

Every retriever is the library's own index (:func:`~ragroute.index.build.build_index`), and
the step-wise rows run :class:`~ragroute.gate.controller.StepwiseController` as a user
would, one question at a time.

**How the steps' hits become one ranking "@5"** (decided before measuring): each step
retrieves its top 5; the steps' rankings are *interleaved* (rank 1 of step 1, rank 1 of
step 2, ..., then rank 2 of each, ...; a passage already taken is skipped) and the first 5
are kept (:func:`~ragroute.gate.controller.interleave`). So a step-wise run is judged on
exactly 5 passages, as single-shot retrieval is. A 2-step question gets 3 + 2 passages, a
4-step one 2 + 1 + 1 + 1. Two other cuts are reported beside it, never in its place:
``fcr@5_split`` (each step's top ``max(1, 5 // steps)``, so at most 5 and often fewer) and
``fcr_all`` (the whole union of the steps' top 5s: up to 5 x steps passages, an upper
bound that is *not* comparable to @5).

Planners: ``decomposition`` (MuSiQue's ``question_decomposition``, ``#N`` replaced by step
N's gold answer: an oracle that measures the retrieval side alone) or ``llm`` (the local
SmolLM2, or any llama-index LLM passed in, plans and answers each step; honest numbers of a
135M model). Gated rows put a gate before each sub-question and count what it skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.evaluation.bench_graph import musique_reference
from ragroute.evaluation.evaluators import RetrievalEvaluator, judged_ids
from ragroute.evaluation.metrics import evaluate_run

K = 5
METRICS = ("recall@5", "full_chain_recall@5")
REFERENCE = {
    "dense": {"recall@5": 0.622, "fcr@5": 0.320},
    # bench graph (docs/benchmarks.md): rules extractor versions 5 to 7, sessions 48 to 50 (0.724 / 0.460
    # with version 4, session 41: the label this stood under until session 51)
    "aware graph walk": {"recall@5": 0.714, "fcr@5": 0.440},
    "goal": "stepwise (decomposition) fcr@5 >= dense fcr@5 + 0.15",
}
#: The documented example of an unfitted gate (docs/gating.md): retrieve when a content word is rare.
RARITY_GATE = {"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": 3.0}


def _ids(hits: Sequence[Any]) -> list[str]:
    return judged_ids(hits)


def split_cut(step_hits: Sequence[Sequence[Any]], k: int = K) -> list[str]:
    """Each step's top ``max(1, k // steps)`` (first occurrence wins): at most ``k`` when steps <= k."""
    per = max(1, k // max(1, len(step_hits)))
    return list(dict.fromkeys(i for hits in step_hits for i in _ids(hits)[:per]))


def stepwise_rows(
    results: Sequence[Any], qrels: dict[str, dict[str, int]], ids: Sequence[str], k: int = K
) -> dict[str, Any]:
    """Metrics of step-wise runs under the three cuts, plus steps, calls and skips."""
    from ragroute.gate.controller import interleave

    main = {qid: _ids(r.evidence(k)) for qid, r in zip(ids, results)}
    split = {qid: split_cut([s.hits for s in r.steps], k) for qid, r in zip(ids, results)}
    union = {qid: _ids(interleave([s.hits for s in r.steps])) for qid, r in zip(ids, results)}
    scores = evaluate_run(main, qrels, METRICS)
    split_scores = evaluate_run(split, qrels, METRICS)
    # at least one step's depth: with no step taken by any run (an LLM planner answering every
    # question outright) the cut read 0 and scoring raised "unknown metric 'recall@0'" (until session 51)
    big = 10 * k * max([len(r.steps) for r in results] + [1])
    all_scores = evaluate_run(union, qrels, (f"recall@{big}", f"full_chain_recall@{big}"))
    steps = [len(r.steps) for r in results]
    return {
        "recall@5": round(scores["recall@5"], 4),
        "fcr@5": round(scores["full_chain_recall@5"], 4),
        "recall@5_split": round(split_scores["recall@5"], 4),
        "fcr@5_split": round(split_scores["full_chain_recall@5"], 4),
        "recall_all": round(all_scores[f"recall@{big}"], 4),
        "fcr_all": round(all_scores[f"full_chain_recall@{big}"], 4),
        "passages_all_mean": round(float(np.mean([len(u) for u in union.values()])), 2),
        "retrieval_calls": int(sum(r.retrieval_calls for r in results)),
        "steps_mean": round(float(np.mean(steps)), 3) if steps else 0.0,
        "gate_skipped": int(sum(len(r.skipped) for r in results)),
        "gate_stopped": int(sum(r.stopped_by == "gate" for r in results)),
        "incomplete": int(sum(not r.complete for r in results)),
        "planner_fallbacks": int(
            sum(1 for r in results for t in r.trace if t.stage == "plan" and t.detail.get("fallback"))
        ),
        "ms_p50": round(float(np.percentile([r.ms for r in results], 50)), 2) if results else 0.0,
    }


def run_stepwise_bench(
    root: Path,
    encoder: Any,
    *,
    split: str = "dev",
    planner: str = "decomposition",
    llm: Any = None,
    limit: int | None = None,
    max_steps: int = 4,
    graph: bool = True,
    gate: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Build the indexes, run single-shot and step-wise retrieval, score them; the JSON-able result."""
    from ragroute.gate.controller import StepwiseController
    from ragroute.gate.factories import threshold as threshold_gate
    from ragroute.gate.planners import DecompositionPlanner, LLMPlanner, Planner
    from ragroute.index.build import build_index
    from ragroute.loaders import load_beir
    from ragroute.route.factories import RouterBuild

    root = Path(root)
    if not (root / "queries.jsonl").is_file():  # a missing split: load_beir names the ones there are
        raise RagrouteError(
            f"data missing: {root} is not a BEIR folder with qrels/{split}.tsv (see ../shared/data)"
        )
    if planner not in ("decomposition", "llm"):
        raise RagrouteError(f"unknown planner {planner!r}: decomposition or llm")
    data = load_beir(root, split=split, on_error="raise")
    queries = list(data.queries)[: limit or None]
    if planner == "decomposition":  # every question needs its script, or no step is ever run
        for query in queries:
            try:
                DecompositionPlanner().parts(query.metadata)
            except RagrouteError as exc:
                raise RagrouteError(f"{root / 'queries.jsonl'}: query {query.id!r}: {exc}") from None
    qrels = {q.id: data.qrels[q.id] for q in queries if q.id in data.qrels}
    contexts = [QueryContext(q.text, id=q.id) for q in queries]
    vectors = np.asarray(encoder.encode_queries([c.text for c in contexts], show_progress=False))
    for context, vector in zip(contexts, vectors):
        context.set_vector(encoder, vector)
    evaluator = RetrievalEvaluator(contexts, qrels, metrics=METRICS, k=K)
    indexes: dict[str, Any] = {}
    build_s: dict[str, float] = {}
    for name, kind in (("bm25", "bm25"), ("dense", "dense")):
        start = time.perf_counter()
        indexes[name] = build_index(data.corpus, kind, encoder=None if kind == "bm25" else encoder, name=kind)
        build_s[name] = round(time.perf_counter() - start, 2)
    log(f"indexes built: {build_s}")
    methods: dict[str, dict[str, Any]] = {}
    for name, label in (("bm25", "single-shot bm25"), ("dense", "single-shot dense (MiniLM)")):
        result = evaluator(indexes[name])
        methods[label] = {
            "recall@5": round(result.metrics["recall@5"], 4),
            "fcr@5": round(result.metrics["full_chain_recall@5"], 4),
            "retrieval_calls": len(contexts),
            "steps_mean": 1.0,
            "ms_p50": result.latency_ms.get("p50"),
        }
    if graph:
        start = time.perf_counter()
        index = build_index(data.corpus, "graph", encoder=encoder, extractor="rules", name="graph")
        build_s["graph"] = round(time.perf_counter() - start, 2)
        result = evaluator(index)
        methods["reference: graph aware walk (single-shot)"] = {
            "recall@5": round(result.metrics["recall@5"], 4),
            "fcr@5": round(result.metrics["full_chain_recall@5"], 4),
            "retrieval_calls": len(contexts),
            "steps_mean": 1.0,
            "ms_p50": result.latency_ms.get("p50"),
        }
    plan: Planner
    if planner == "decomposition":
        plan = DecompositionPlanner()
        answerer = None
    else:
        if llm is None:
            from ragroute.llm.local import LocalLLM

            llm = LocalLLM(max_new_tokens=48, threads=1)
        plan = LLMPlanner(llm)
        answerer = llm
    runs: list[tuple[str, Any, Any]] = [
        (f"stepwise ({planner}) over dense", indexes["dense"], None),
        (f"stepwise ({planner}) over bm25", indexes["bm25"], None),
    ]
    if gate:
        rarity = threshold_gate(RARITY_GATE, RouterBuild([], encoder, where="bench stepwise"))
        runs.append((f"stepwise ({planner}) over dense + rarity gate", indexes["dense"], rarity))
    if planner == "llm":
        runs = runs[:1]  # one LLM run: the LLM's time dominates
    ids = [q.id for q in queries]
    examples: dict[str, Any] = {}
    for name, retriever, step_gate in runs:
        controller = StepwiseController(
            plan, retriever, gate=step_gate, max_steps=max_steps, k=K, answerer=answerer
        )
        results = []
        for i, query in enumerate(queries):
            results.append(controller.run(QueryContext(query.text, id=query.id), metadata=query.metadata))
            if planner == "llm" and (i + 1) % 5 == 0:
                log(f"{name}: {i + 1}/{len(queries)} questions")
        methods[name] = stepwise_rows(results, qrels, ids)
        examples[name] = results[0].to_dict() if results else None
        log(f"{name}: FCR@5 {methods[name]['fcr@5']}")
    dense_fcr = methods["single-shot dense (MiniLM)"]["fcr@5"]
    best = methods[f"stepwise ({planner}) over dense"]["fcr@5"]
    return {
        "root": str(root),
        "split": split,
        "planner": planner,
        "queries": len(queries),
        "passages": len(data.corpus),
        "encoder": encoder.describe(),
        "k": K,
        "max_steps": max_steps,
        "cut": "interleave: round robin over the steps' top-5 rankings, first 5 distinct passages",
        "methods": methods,
        "goal": {
            "stepwise_fcr@5": best,
            "dense_fcr@5": dense_fcr,
            "gain": round(best - dense_fcr, 4),
            "met": bool(planner == "decomposition" and best >= dense_fcr + 0.15 - 1e-9),
        },
        "build_s": build_s,
        "rarity_gate": RARITY_GATE if gate else None,
        "llm": None if llm is None else type(llm).__name__,
        "example": examples,
        # the numbers belong to all MuSiQue dev questions, not to other data or a --limit subset
        "reference": musique_reference(root, split, REFERENCE, (len(queries), len(data.corpus)), log)
        if limit is None
        else None,
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"step-wise retrieval on {result['root']} [{result['split']}]: {result['queries']} questions, "
        f"{result['passages']} passages; planner {result['planner']}, max_steps {result['max_steps']}",
        f"@5 cut: {result['cut']}",
        f"{'method':<46} {'R@5':>6} {'FCR@5':>6} {'FCR@5s':>7} {'FCRall':>7} {'calls':>6} {'steps':>6} "
        f"{'skip':>5} {'inc':>4}",
    ]
    for name, row in result["methods"].items():
        lines.append(
            f"{name:<46} {row['recall@5']:>6.3f} {row['fcr@5']:>6.3f} "
            f"{row.get('fcr@5_split', float('nan')):>7.3f} {row.get('fcr_all', float('nan')):>7.3f} "
            f"{row['retrieval_calls']:>6} {row.get('steps_mean', 1.0):>6.2f} {row.get('gate_skipped', 0):>5} "
            f"{row.get('incomplete', 0):>4}"
        )
    goal = result["goal"]
    if result["planner"] == "decomposition":
        lines.append(
            f"goal (decomposition): stepwise FCR@5 {goal['stepwise_fcr@5']:.3f} "
            f"vs dense {goal['dense_fcr@5']:.3f} + 0.15: {'met' if goal['met'] else 'not met'} "
            f"(gain {goal['gain']:+.3f})"
        )
    else:  # the goal is the oracle planner's; the LLM planner is reported, not judged
        lines.append(
            f"stepwise ({result['planner']}) FCR@5 {goal['stepwise_fcr@5']:.3f} vs dense "
            f"{goal['dense_fcr@5']:.3f} (gain {goal['gain']:+.3f}); the goal is the decomposition planner's"
        )
    rows = result["methods"].items()
    fallbacks = {name: row["planner_fallbacks"] for name, row in rows if row.get("planner_fallbacks")}
    if fallbacks:
        lines.append(
            "planner fell back (an LLM plan unreadable, failed or repeated): "
            + ", ".join(f"{name} {n} times" for name, n in fallbacks.items())
        )
    lines.append(
        "FCR@5s: each step's top 5//steps; FCRall: whole union of the steps' top 5 (not an @5 number)"
    )
    return "\n".join(lines)
