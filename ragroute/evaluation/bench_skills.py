"""``ragroute bench skills``: skill / tool selection quality and latency of the skill router.

On a folder in the SKILLS layout (``skills.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), ONE
:class:`~ragroute.skills.router.SkillRouter` is built (the one ``ragroute skills build`` gives:
adaptive fusion, default overlap handling) and every row is that router with one setting changed
(:meth:`~ragroute.skills.router.SkillRouter.with_options`), scored by a
:class:`~ragroute.evaluation.evaluators.RetrievalEvaluator`:

* ``bm25``, ``dense``: stage 1 with one method; ``hybrid``: the adaptive fusion;
  ``rrf_k60``: the naive baseline (reciprocal rank fusion of the same two lists);
* ``hybrid+rerank``: stage 2 reranks the top ``candidates`` (20) with the body;
  ``hybrid+rerank_no_body``: the same reranker reading only name and first description line.

``candidate_ceiling``: the share of queries with a gold skill among hybrid's top ``candidates``
(the reranker's Hit@1 ceiling) and recall at that depth, on the same queries.

Metrics: Hit@1, nDCG@10, MRR@10, Recall@10 and full coverage@5 (every gold skill in the top 5).
With a reranker trained by ``ragroute rerank train`` on this set (its manifest has a
``fold_rule`` and lists the set among those it drew pairs from), only fold-1 queries
(``query_fold(set, id) == 1``, never trained on) are scored, for ALL rows. Without one, or with
one that never saw this set (a catalogue from elsewhere), rows are reported on all queries and
on fold 1 (``methods_fold1``, left out when fold 1 holds no scored query). The fold and the set
go by the folder's name, so with any reranker trained here every query whose text (case and
spacing ignored) it may have trained on is left out too, for ALL rows, read back from the training
sets its manifest records (:func:`~ragroute.rerank.train.training_queries`): a copy or slice of a
training set under another name is not scored on training queries. ``scored_queries`` says how
many were left out, or that the training sets could not be found (then nothing is claimed held out
beyond the folder's name).

Latency: p50 of ``route(task)`` (retrieve + rerank) one query at a time on ``latency_queries``
queries, on the set's catalogue and on a catalogue scaled to ``scale`` skills: the set's skills,
the skills of the other SKILLS sets beside it (``../toollens`` etc., ids prefixed), then synthetic
variants of those (name suffixed ``vN``, description and body word order rotated, so each is a
distinct text with its own embedding) until ``scale`` skills.

Abstention: with LABELS data (``--abstain-data``; default ``../metatool_need_tool/dev.jsonl`` when
the set is metatool), a model is fitted on fold 0 of the labels (tool = a skill applies) and
balanced accuracy is reported on fold 1, next to the shipped default model's; on every set the
Hit@1 of the final row with abstentions counted as misses shows what abstaining costs.

Gate abstention (``abstention.gate``, the same LABELS data): the router abstains through a
text-probe gate (:class:`~ragroute.gate.trained.TrainedGate` over ``text_probe.logit``, the best
gate of ``ragroute bench gate``), cross-validated: 5 grouped stratified folds
(:func:`~ragroute.route.folds.grouped_stratified_folds`, seed 0), each fold routed through a gate
fitted on the other folds; balanced accuracy and AUROC of ``p_applies`` pooled over the folds at
the gate's default threshold. Its Hit@1 cost: one gate fitted on every labelled query whose text is
not among the set's judged queries routes those queries (all need a skill); abstentions count as
misses.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.context import QueryContext
from ragroute.errors import RagrouteError
from ragroute.evaluation.evaluators import RetrievalEvaluator, measured_reference
from ragroute.evaluation.metrics import (
    evaluate_run,
    hit_at_k,
    is_scorable,
    paired_difference,
    per_query_scores,
)

METRICS = {
    "hit@1": "hit@1",
    "ndcg@10": "ndcg@10",
    "mrr@10": "mrr@10",
    "recall@10": "recall@10",
    "fullcov@5": "full_chain_recall@5",
}
REFERENCE = {
    "toollens": {"bm25": (0.344, 0.295), "dense": (0.254, 0.293), "hybrid_rrf": (0.338, 0.351)},
    "metatool": {"bm25": (0.287, 0.381), "dense": (0.585, 0.722), "hybrid_rrf": (0.415, 0.540)},
    "seal_tools": {"bm25": (0.940, 0.873), "dense": (0.691, 0.614), "hybrid_rrf": (0.880, 0.792)},
    "note": "issue #9 baselines (Hit@1, nDCG@10) on the dev splits, MiniLM, text = name | description | body",
}
SETS = ("toollens", "metatool", "seal_tools")
#: (skills, queries scored) of each set's dev split when the :data:`REFERENCE` numbers were measured
#: (all its judged queries): fold 1, a ``--max-queries`` cut or a cut copy is other data
REFERENCE_SIZES = {"toollens": (464, 2000), "metatool": (199, 10521), "seal_tools": (4076, 1400)}


SkillSet = tuple[Any, list[tuple[str, str]], dict[str, dict[str, int]]]
"""What :func:`load_skill_set` gives: ``(catalogue, [(query id, text)], qrels)``."""


def load_skill_set(root: Path, split: str) -> SkillSet:
    """``(catalogue, [(query id, text)], qrels)`` of a SKILLS folder; one clear error if data is missing
    or broken (a bad line, a qrels id naming no query or skill, an empty or absent split: nothing is
    skipped, since a skipped line would change what is scored)."""
    import warnings

    from ragroute.loaders.beir import check_judged, load_judged_queries
    from ragroute.skills import load_catalogue

    root = Path(root)
    missing = [name for name in ("skills.jsonl", "queries.jsonl") if not (root / name).is_file()]
    if missing:
        raise RagrouteError(
            f"data missing: {root} lacks {', '.join(missing)} (a SKILLS folder: skills.jsonl, queries.jsonl, "
            f"qrels/{split}.tsv; see ../shared/data/README.md)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        catalogue = load_catalogue(root / "skills.jsonl", on_error="raise")
    judged, qrels = load_judged_queries(root, split, on_error="raise")
    source = str(root / "qrels" / f"{split}.tsv")
    check_judged(qrels, {q.id for q in judged}, {s.id for s in catalogue}, source, on_error="raise")
    queries = [(q.id, q.text) for q in judged]
    return catalogue, queries, {q: dict(r) for q, r in qrels.items()}


def read_labels(path: Path) -> list[tuple[str, str, bool]]:
    """``(id, text, a skill applies)`` from a LABELS file (``no_tool``, ``no`` or ``none``: no skill
    applies, as a gate reads them; any other label: one does; a list: its first label); one
    :class:`~ragroute.errors.CorpusFormatError` line if it is missing or malformed."""
    from ragroute.gate.signals import needs_retrieval
    from ragroute.loaders.labels import load_labels

    return [(r.id, r.text, needs_retrieval(r.label)) for r in load_labels(path)]


#: the catalogue size the issue's ``latency_ms_p50_10k`` is measured on
TEN_THOUSAND = 10_000


def scaled_catalogue(catalogue: Any, root: Path, size: int) -> Any:
    """The set's skills, the other SKILLS sets' skills beside it, then synthetic variants, up to ``size``."""
    import warnings

    from ragroute.skills import Catalogue, Skill, load_catalogue

    skills = list(catalogue)
    root = Path(root)
    if root.parent.is_dir():
        for other in sorted(root.parent.iterdir()):
            if other.resolve() == root.resolve() or not (other / "skills.jsonl").is_file():
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    extra = load_catalogue(other / "skills.jsonl")
            except RagrouteError:
                continue  # not a usable catalogue: synthetic variants fill the gap
            skills += [
                Skill(f"{other.name}:{s.id}", s.name, s.description, s.body, s.metadata) for s in extra
            ]
            if len(skills) >= size:
                break
    base = list(skills)
    variant = 1
    while len(skills) < size:
        for s in base:
            if len(skills) >= size:
                break
            skills.append(
                Skill(
                    f"synthetic{variant}:{s.id}",
                    f"{s.name} v{variant}",
                    _rotate(s.description, variant),
                    _rotate(s.body, variant),
                    {"synthetic": True},
                )
            )
        variant += 1
    return Catalogue(skills[:size], kind="scaled")


def _rotate(text: str, n: int) -> str:
    words = text.split()
    if not words:
        return text
    n %= len(words)
    return " ".join(words[n:] + words[:n])


def reranker_folds(reranker: Any, set_name: str | None = None) -> bool:
    """True when the reranker was trained here on fold 0 of ``set_name``'s queries.

    Its manifest records the fold rule and, since training reports them, the sets it drew
    pairs from (``params.report.sets``, ``params.data.roots``). A set that is not among them
    (a catalogue the reranker never saw) has no trained-on fold: every query counts. A manifest
    with the fold rule but no list of sets is taken to cover every set (the safe side).
    """
    info = getattr(reranker, "info", {}) or {}
    params = info.get("params") or {}
    if not params.get("fold_rule"):
        return False
    if set_name is None:
        return True
    sets = (params.get("report") or {}).get("sets") or {}
    roots = (params.get("data") or {}).get("roots") or []
    if not sets and not roots:
        return True
    trained = {str(s) for s in sets} | {str(s).rsplit("/", 1)[-1] for s in sets}
    trained |= {Path(str(r)).name for r in roots}
    return set_name in trained


def _without_training_queries(
    reranker: Any, queries: list[tuple[str, str]], log: Callable[[str], None]
) -> tuple[list[tuple[str, str]], int, str]:
    """``queries`` less those whose text a reranker trained here may have trained on
    (:func:`~ragroute.rerank.train.training_queries`), how many were left out, and why the
    training queries could not be read back (``""`` when they were, or when the reranker was not
    trained here: then there is nothing to leave out)."""
    from ragroute.rerank.train import training_queries
    from ragroute.route.folds import normalized_text

    info = getattr(reranker, "info", {}) or {}
    params = info.get("params") or {}
    if reranker is None or not params.get("fold_rule"):
        return queries, 0, ""
    texts, unread = training_queries(params, info.get("path"))
    if texts is None:
        log(f"  the reranker's training queries cannot be read back ({unread}): none is left out by text")
        return queries, 0, unread
    kept = [(qid, text) for qid, text in queries if normalized_text(text) not in texts]
    if len(kept) < len(queries):
        log(
            f"  left out {len(queries) - len(kept)} of {len(queries)} queries "
            "whose text the reranker trained on"
        )
    return kept, len(queries) - len(kept), ""


def fold1_ids(set_name: str, queries: list[tuple[str, str]], fold0_texts: list[str]) -> set[str]:
    """Ids of ``queries`` in fold 1 (``query_fold(set_name, id) == 1``) whose text
    (:func:`~ragroute.route.folds.normalized_text`) is none of ``fold0_texts``: the fold goes by id,
    and a fold-1 copy of a fold-0 text was scored by a blend or an abstention model fitted on it
    (until session 45)."""
    from ragroute.rerank.train import query_fold
    from ragroute.route.folds import normalized_text

    seen = {normalized_text(text) for text in fold0_texts}
    return {
        qid for qid, text in queries if query_fold(set_name, qid) == 1 and normalized_text(text) not in seen
    }


def _scored_label(folds_only: bool, reranked: bool, set_name: str, left_out: int, unread: str) -> str:
    """The result's ``scored_queries``: which queries every row is scored on, and what is known of
    the reranker's training on them (``left_out`` and ``unread`` of :func:`_without_training_queries`)."""
    if unread:
        unread = f"the reranker's training queries cannot be read back: {unread}"
    if folds_only:
        label = "fold 1 only (reranker trained on fold 0)"
        if left_out:
            label += f", less {left_out} whose text the reranker trained on"
        return label + (f" ({unread}; fold 1 goes by the folder's name only)" if unread else "")
    if not reranked:
        return "all judged queries"
    if left_out:
        return f"all judged queries but {left_out} whose text the reranker trained on"
    if unread:
        return f"all judged queries ({unread}; {set_name} is not a training set by name, no more is known)"
    return f"all judged queries (the reranker never trained on {set_name})"


def run_skills_bench(
    root: Path,
    encoder: Any,
    *,
    split: str = "dev",
    reranker: Any = None,
    candidates: int = 20,
    scale: int = TEN_THOUSAND,
    latency_queries: int = 200,
    max_queries: int | None = None,
    abstain_data: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
    skill_set: SkillSet | None = None,
    tune_blend: int | None = None,
) -> dict[str, Any]:
    """Build the router, score every row, time it; the JSON-able result.

    ``tune_blend``: fit the catalogue's rerank blend (:func:`~ragroute.skills.blend.fit_rerank_blend`)
    on up to this many fold-0 queries and add the row ``hybrid+rerank_tuned``, never scored on the
    queries it was fitted on: with a reranker trained on this set only fold 1 is scored anyway; on
    a set it never saw, the row is in ``methods_fold1`` only.

    ``skill_set`` is ``load_skill_set(root, split)`` when the caller has loaded it already
    (``ragroute bench skills`` does, to fail before loading a model); ``None`` loads it here.
    ``root`` still names the set and finds the catalogues beside it.
    """
    from ragroute.rerank.cross_encoder import remembered_logits
    from ragroute.rerank.train import query_fold
    from ragroute.skills.router import SkillRouter

    if tune_blend and reranker is None:  # the blend weighs the reranker's probability: nothing to fit
        raise RagrouteError("tune_blend needs a reranker (it fits the blend of the reranker's rows)")
    root = Path(root)
    catalogue, queries, qrels = skill_set if skill_set is not None else load_skill_set(root, split)
    set_name = root.name
    folds_only = reranker is not None and reranker_folds(reranker, set_name)
    # the blend is fitted on the set's own fold 0 (the texts a reranker trained here read): drawn
    # before the scored queries lose those texts
    fold0 = [(qid, text) for qid, text in queries if query_fold(set_name, qid) == 0 and qid in qrels]
    queries, left_out, unread = _without_training_queries(reranker, queries, log)
    fold1 = fold1_ids(set_name, queries, [text for _, text in fold0])
    if folds_only:
        queries = [(qid, text) for qid, text in queries if qid in fold1]
    if max_queries is not None:
        queries = queries[:max_queries]
    if not queries:
        raise RagrouteError(f"{root}: no judged queries to score in split {split!r}")
    log(f"{set_name}: {len(catalogue)} skills, {len(queries)} queries; building the skill router")
    began = time.perf_counter()
    router = SkillRouter(catalogue, reranker, encoder=encoder, candidates=candidates)
    build_s = time.perf_counter() - began
    index = router.index
    rrf_index = copy.copy(index)
    rrf_index.params = dataclasses.replace(index.params, fusion="rrf")
    rows: dict[str, Any] = {
        "bm25": router.with_options(method="bm25", reranker=None),
        "dense": router.with_options(method="dense", reranker=None),
        "rrf_k60": router.with_options(index=rrf_index, reranker=None),
        "hybrid": router.with_options(reranker=None),
    }
    if reranker is not None:
        no_body = copy.copy(reranker)
        no_body.body = False
        rows["hybrid+rerank"] = router
        rows["hybrid+rerank_no_body"] = router.with_options(reranker=no_body)
    blend_report: dict[str, Any] | None = None
    fold1_only: set[str] = set()
    if tune_blend and reranker is not None:
        from ragroute.skills import blend as blending

        tasks = fold0[:tune_blend]
        if len(tasks) < blending.MIN_TASKS:
            blend_report = {
                "note": f"not fitted: {len(tasks)} judged fold-0 queries (< {blending.MIN_TASKS})"
            }
        else:
            log(f"  fitting the rerank blend on {len(tasks)} fold-0 queries ...")
            start = time.perf_counter()
            blend = blending.fit_rerank_blend(router, tasks, qrels, name=f"{set_name} {split} fold 0")
            blend_report = {**blend.to_dict(), "fit_s": round(time.perf_counter() - start, 1)}
            rows["hybrid+rerank_tuned"] = router.with_options(rerank_blend=blend)
            if not folds_only:  # its fitting queries are among all queries: it is scored on fold 1 only
                fold1_only.add("hybrid+rerank_tuned")

    contexts = [QueryContext(text, id=qid) for qid, text in queries]
    judged = {qid: qrels[qid] for qid, _ in queries}
    evaluator = RetrievalEvaluator(contexts, judged, metrics=tuple(METRICS.values()), k=10)
    methods: dict[str, dict[str, float]] = {}
    methods_fold1: dict[str, dict[str, float]] = {}
    runs: dict[str, dict[str, list[str]]] = {}
    seconds: dict[str, float] = {}
    fold1_judged = {q: r for q, r in judged.items() if q in fold1}
    # rows over fold 1 only where it holds a scored query: until session 54 a fold 1 with none (a
    # --max-queries cut of fold-0 queries) printed every row, hybrid+rerank_tuned too, as 0.000
    by_fold1 = not folds_only and any(is_scorable(r) for r in fold1_judged.values())
    if not folds_only and not by_fold1:
        log("  no scored fold-1 query among these: no fold-1 rows")
    # the abstention passes below route these queries again: each query's pool is scored once
    with remembered_logits() as logits:
        for name, variant in rows.items():
            log(f"  {name} ...")
            start = time.perf_counter()
            scored = evaluator(variant.with_options(abstention=None), batch_size=64)
            seconds[name] = round(time.perf_counter() - start, 1)
            runs[name] = {row["id"]: row["hits"] for row in scored.rows}
            if name not in fold1_only:
                methods[name] = {key: scored.metrics[metric] for key, metric in METRICS.items()}
            if by_fold1:
                sub = fold1_judged
                scores = evaluate_run({q: runs[name].get(q, []) for q in sub}, sub, tuple(METRICS.values()))
                methods_fold1[name] = {key: round(scores[metric], 4) for key, metric in METRICS.items()}

    comparisons = _comparisons(methods, runs, judged)
    log(f"  candidate ceiling (hybrid top {candidates}) ...")
    # the pool a reranker reads is stage 1's top `candidates` before near-duplicates are moved
    ceiling = _candidate_ceiling(rows["hybrid"].with_options(overlap="keep"), contexts, judged, candidates)

    final_name = "hybrid+rerank" if reranker is not None else "hybrid"
    final = rows[final_name]
    sample = contexts[: max(1, latency_queries)]
    timer = RetrievalEvaluator(sample, {c.id: judged[c.id] for c in sample}, metrics=("hit@1",), k=10)
    log(f"  latency of {final_name} on {len(index)} skills ({len(sample)} queries) ...")
    index.clear_query_cache()  # the timed queries must be encoded as a user's would
    latency = timer(final).latency_ms
    result: dict[str, Any] = {
        "set": set_name,
        "split": split,
        "skills": len(index),
        "queries": len(queries),
        "scored_queries": _scored_label(folds_only, reranker is not None, set_name, left_out, unread),
        "methods": methods,
        "comparisons": comparisons,
        "candidate_ceiling": ceiling,
        "latency_ms_p50": latency.get("p50"),
        "latency_ms_p95": latency.get("p95"),
        "latency_of": final_name,
        "router": router.describe(),
        "encoder": encoder.describe(),
        "tuning": index.tuning,
        "build_s": round(build_s, 1),
        "seconds": seconds,
        "reference": _reference(set_name, split, len(index), len(queries), log),
    }
    if blend_report is not None:
        result["rerank_blend"] = blend_report
    if methods_fold1:
        result["methods_fold1"] = methods_fold1
        result["fold1_queries"] = sum(1 for q in judged if q in fold1)
    with remembered_logits(logits):  # untimed: the latency above computed every logit afresh
        result["abstention"] = _abstention(final, contexts, judged, runs[final_name], root, abstain_data, log)
    if scale and scale > 0:
        big = scaled_catalogue(catalogue, root, scale)
        log(f"  scaled catalogue: {len(big)} skills; building ...")
        start = time.perf_counter()
        big_router = SkillRouter(big, final.reranker, encoder=encoder, candidates=candidates)
        result["build_s_scaled"] = round(time.perf_counter() - start, 1)
        result["latency_ms_p50_scaled"] = timer(big_router).latency_ms.get("p50")
        result["skills_scaled"] = len(big)
    # the issue's key holds a latency on 10,000 skills only (not on another --scale, nor on a
    # catalogue that could not be filled up to it)
    at_10k = result.get("skills_scaled") == TEN_THOUSAND
    result["latency_ms_p50_10k"] = result["latency_ms_p50_scaled"] if at_10k else None
    return result


def _reference(set_name: str, split: str, skills: int, queries: int, log: Callable[[str], None]) -> Any:
    """The issue's rows of ``set_name`` (:data:`REFERENCE`) when the rows are scored on the data they
    were measured on (the dev split, :data:`REFERENCE_SIZES`), else ``None``: a fold-1, a
    ``--max-queries`` or a cut copy's rows differ from them, said through ``log``. Until session 52
    they printed under the rows of any set of these names, whatever its split and size."""
    if set_name not in REFERENCE_SIZES or split != "dev":
        return None
    measured = REFERENCE_SIZES[set_name]
    differs = (
        f"{skills} skills and {queries} queries scored, measured on {measured[0]} and {measured[1]}"
        if (skills, queries) != measured
        else ""
    )
    return measured_reference(REFERENCE[set_name], f"the {set_name} dev split", differs, log)


#: the differences the skills issue's goals name, each ``(row, baseline)``; ``best_single`` is the
#: better of BM25 and dense by nDCG@10 on the scored queries
COMPARISONS = (
    ("hybrid", "best_single"),
    ("hybrid+rerank", "hybrid"),
    ("hybrid+rerank", "best_single"),
    ("hybrid+rerank_tuned", "hybrid"),
)
COMPARED = ("hit@1", "ndcg@10")


def _comparisons(
    methods: dict[str, dict[str, float]], runs: dict[str, dict[str, list[str]]], judged: dict[str, Any]
) -> dict[str, Any]:
    """Paired per-query differences (with 95% bootstrap intervals) between the rows the goals compare,
    over the queries ``methods`` scores: is a gain real on these queries, or the size of their noise?"""
    if not {"bm25", "dense"} <= set(methods):
        return {}
    best = max(("bm25", "dense"), key=lambda name: methods[name]["ndcg@10"])
    named = {"best_single": best}
    out: dict[str, Any] = {"best_single": best}
    for row, baseline in COMPARISONS:
        a, b = named.get(row, row), named.get(baseline, baseline)
        if a not in methods or b not in methods:
            continue
        out[f"{row} - {baseline}"] = {
            key: paired_difference(
                per_query_scores(runs[a], judged, METRICS[key]),
                per_query_scores(runs[b], judged, METRICS[key]),
            )
            for key in COMPARED
        }
    return out


def _candidate_ceiling(
    stage1: Any, contexts: list[QueryContext], judged: dict[str, dict[str, int]], candidates: int
) -> dict[str, Any]:
    """What a reranker of the top ``candidates`` can reach: the share of queries with a gold skill
    among stage 1's first ``candidates`` (its Hit@1 ceiling), and their recall (of all gold skills,
    the share among them); on the same queries as the rows."""
    metrics = (f"hit@{candidates}", f"recall@{candidates}")
    result = RetrievalEvaluator(contexts, judged, metrics=metrics, k=candidates)(stage1, batch_size=64)
    return {
        "candidates": candidates,
        "hit": round(result.metrics[metrics[0]], 4),
        "recall": round(result.metrics[metrics[1]], 4),
    }


def _abstention(
    router: Any,
    contexts: list[QueryContext],
    judged: dict[str, dict[str, int]],
    run: dict[str, list[str]],
    root: Path,
    abstain_data: Path | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from ragroute.rerank.train import query_fold
    from ragroute.skills.router import balanced_accuracy, fit_abstention

    out: dict[str, Any] = {}
    router = router.with_options(abstention="default")  # what the shipped default model would do here
    model = router._model()
    if model is not None:
        scored = _scored_contexts(contexts, judged)
        routes = router.route_many([c.text for c in scored], 1)
        out["default_model"] = model.info.get("name", "default")
        out.update(_abstention_cost(scored, judged, run, [r.abstain for r in routes]))
    path = abstain_data
    if path is None and root.name == "metatool":
        candidate = root.parent / "metatool_need_tool" / "dev.jsonl"
        path = candidate if candidate.is_file() else None
    if path is None:
        return out
    path = Path(path)
    if path.is_dir():
        path = path / "dev.jsonl"
    if not path.is_file():
        raise RagrouteError(f"abstention data missing: {path} (a LABELS file with tool / no_tool labels)")
    labels = read_labels(path)
    name = path.parent.name
    train = [row for row in labels if query_fold(name, row[0]) == 0]
    fold1 = fold1_ids(name, [(qid, text) for qid, text, _ in labels], [text for _, text, _ in train])
    test = [row for row in labels if row[0] in fold1]
    log(f"  abstention: fitting on {len(train)} labelled queries of {name} (fold 0), testing on {len(test)}")
    fitted = fit_abstention(
        router,
        [t for _, t, _ in train],
        [a for _, _, a in train],
        name=f"{name} fold 0",
        info={"data": str(path), "fold_rule": "query_fold(set, id) == 0 trains; fold 1 is reported"},
    )
    evaluated = {"fitted": router.with_options(abstention=fitted)}
    if model is not None:
        evaluated["default"] = router
    report: dict[str, Any] = {"data": str(path), "train": len(train), "test": len(test)}
    for key, variant in evaluated.items():
        routes = variant.route_many([t for _, t, _ in test], 1)
        abstained = [r.abstain for r in routes]
        report[key] = {
            "balanced_accuracy": round(balanced_accuracy([a for _, _, a in test], abstained), 4),
            "threshold": routes[0].threshold if routes else None,
        }
    report["fitted_model"] = fitted.to_dict()
    out["labels"] = report
    out["gate"] = _gate_abstention(router, labels, name, contexts, judged, run, log)
    return out


GATE_FIT: dict[str, Any] = {"signals": ["text_probe"], "columns": ["text_probe.logit"]}
"""How the benchmark's abstention gate is fitted (``ragroute bench gate``'s threshold_text_probe)."""


def _gate_abstention(
    router: Any,
    labels: list[tuple[str, str, bool]],
    name: str,
    contexts: list[QueryContext],
    judged: dict[str, dict[str, int]],
    run: dict[str, list[str]],
    log: Callable[[str], None],
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated gate abstention on ``labels`` and its Hit@1 cost on ``contexts``."""
    from ragroute.evaluation.metrics import auroc
    from ragroute.gate.trained import TrainedGate
    from ragroute.route.folds import grouped_stratified_folds
    from ragroute.skills.router import balanced_accuracy

    encoder = router.index.encoder
    texts = [t for _, t, _ in labels]
    applies = np.asarray([a for _, _, a in labels], dtype=bool)
    folds = max(2, min(folds, int(applies.sum()), int((~applies).sum())))
    fold_of = grouped_stratified_folds(texts, ["tool" if a else "no_tool" for a in applies], folds, seed)
    router = router.with_options(abstention=None, threshold=None)
    vectors = np.asarray(router.index.query_vectors(texts))
    abstained = np.zeros(len(texts), dtype=bool)
    p_applies = np.zeros(len(texts))
    log(
        f"  gate abstention: {folds}-fold cross-validation of a text-probe gate "
        f"on {len(texts)} {name} queries"
    )
    thresholds = []
    for fold in range(folds):
        train, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        gate = TrainedGate.fit(
            [texts[i] for i in train],
            applies[train],
            encoder,
            query_vectors=vectors[train],
            seed=seed,
            **GATE_FIT,
        )
        thresholds.append(gate.threshold)
        routes = router.with_options(abstention=gate).route_many([texts[i] for i in test], 1)
        abstained[test] = [r.abstain for r in routes]
        p_applies[test] = [r.p_applies for r in routes]
    report: dict[str, Any] = {
        "gate": "trained text_probe (text_probe.logit), default threshold",
        "protocol": f"{folds}-fold grouped stratified CV (seed {seed}); "
        "each fold routed by a gate fitted on the others",
        "queries": len(texts),
        "balanced_accuracy": round(balanced_accuracy(applies, abstained), 4),
        "auroc": round(auroc(applies, p_applies), 4),
        "abstain_rate": round(float(abstained.mean()), 4),
        "thresholds": [round(t, 4) for t in thresholds],
    }
    from ragroute.route.folds import normalized_text

    # the one rule for "the same text" (NFKC, case-folded): until session 49 lower case only, so a
    # labelled copy of a judged query in another Unicode form fitted the gate that routes it
    seen = {normalized_text(c.text) for c in contexts}
    keep = [i for i, t in enumerate(texts) if normalized_text(t) not in seen]
    log(f"  gate abstention: Hit@1 cost on {len(contexts)} queries (gate fitted on {len(keep)} labels)")
    gate = TrainedGate.fit(
        [texts[i] for i in keep], applies[keep], encoder, query_vectors=vectors[keep], seed=seed, **GATE_FIT
    )
    scored = _scored_contexts(contexts, judged)
    routes = router.with_options(abstention=gate).route_many([c.text for c in scored], 1)
    report["cost"] = {
        "queries": len(scored),
        "gate_fitted_on": len(keep),
        "left_out_overlapping_texts": len(texts) - len(keep),
        **_abstention_cost(scored, judged, run, [r.abstain for r in routes]),
    }
    return report


def _scored_contexts(contexts: list[QueryContext], judged: dict[str, dict[str, int]]) -> list[QueryContext]:
    """The queries a row's Hit@1 averages over (:func:`~ragroute.evaluation.metrics.is_scorable`)."""
    from ragroute.evaluation.metrics import is_scorable

    return [c for c in contexts if is_scorable(judged[c.id])]


def _abstention_cost(
    scored: list[QueryContext],
    judged: dict[str, dict[str, int]],
    run: dict[str, list[str]],
    abstained: list[bool],
) -> dict[str, float]:
    """Abstain rate, Hit@1 and Hit@1 with abstentions counted as misses on the ``scored`` queries
    (:func:`_scored_contexts`), so that ``hit@1`` is the final row's Hit@1 (0.0 with none, as
    ``evaluate_run`` gives). Until session 47 every judged query was averaged: one judged with grade 0
    only counted as a miss, and the Hit@1 here read below the row's."""
    hits = np.asarray([hit_at_k(run.get(c.id, []), judged[c.id], 1) for c in scored], dtype=np.float64)
    held = np.asarray(abstained, dtype=bool)
    if not len(hits):
        return {"abstain_rate": 0.0, "hit@1": 0.0, "hit@1_with_abstention": 0.0, "hit@1_cost": 0.0}
    hit1 = round(float(hits.mean()), 4)
    with_abstention = round(float(np.where(held, 0.0, hits).mean()), 4)
    return {
        "abstain_rate": round(float(held.mean()), 4),
        "hit@1": hit1,
        "hit@1_with_abstention": with_abstention,
        "hit@1_cost": round(hit1 - with_abstention, 4),
    }


def format_report(result: dict[str, Any]) -> str:
    """A table: one row per method, then latency and abstention lines."""
    lines = [
        f"{result['set']} ({result['split']}): {result['skills']} skills, {result['queries']} queries "
        f"({result['scored_queries']}); hybrid dense weight {result['router']['dense_weight']:.2f} (adaptive)"
    ]
    header = f"{'method':26s}" + "".join(f"{k:>11s}" for k in METRICS)
    lines.append(header)
    for name, values in result["methods"].items():
        lines.append(f"{name:26s}" + "".join(f"{values[k]:11.3f}" for k in METRICS))
    if result.get("reference"):  # the issue's baselines, only on the data they were measured on
        for name, (hit, ndcg) in result["reference"].items():
            lines.append(f"{name + ' (issue)':26s}{hit:11.3f}{ndcg:11.3f}")
    if result.get("methods_fold1"):
        lines.append(f"fold 1 only ({result['fold1_queries']} queries):")
        for name, values in result["methods_fold1"].items():
            lines.append(f"{name:26s}" + "".join(f"{values[k]:11.3f}" for k in METRICS))
    comparisons = result.get("comparisons") or {}
    for name, by_metric in comparisons.items():
        if name == "best_single":
            continue
        label = name.replace("best_single", comparisons["best_single"])
        parts = [
            f"{key} {d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            for key, d in by_metric.items()
            if d["diff"] is not None
        ]
        queries = by_metric["hit@1"]["queries"]
        lines.append(f"{label} (paired, 95% bootstrap interval, {queries} queries): " + ", ".join(parts))
    encoder = result.get("encoder") or {}
    lines.append(f"encoder {encoder.get('model_id', '?')} ({encoder.get('backend', '?')} backend)")
    reranker = result["router"].get("reranker")
    if reranker:
        lines.append(f"reranker {reranker['model']} ({reranker.get('backend')} backend)")
    blend = result.get("rerank_blend")
    if blend and "stage1_weight" in blend:
        from ragroute.skills.blend import RerankBlend

        chosen, curve = RerankBlend.from_dict(blend).summary()
        lines.append(
            f"rerank blend (hybrid+rerank_tuned): {chosen}, fitted on "
            f"{blend['report']['tasks']} fold-0 queries in {blend['fit_s']} s "
            f"(their nDCG@10 by weight: {curve})"
        )
    elif blend:
        lines.append(f"rerank blend: {blend['note']}")
    if result.get("candidate_ceiling"):
        c = result["candidate_ceiling"]
        lines.append(
            f"candidate ceiling: a gold skill is among hybrid's top {c['candidates']} (what the reranker "
            f"reads) for {c['hit']:.3f} of the queries; recall@{c['candidates']} {c['recall']:.3f}"
        )
    scaled = (
        f"; {result['latency_ms_p50_scaled']} ms on {result.get('skills_scaled', '-')} skills"
        if result.get("latency_ms_p50_scaled") is not None
        else ""
    )
    lines.append(
        f"latency p50 ({result['latency_of']}, one query at a time): {result['latency_ms_p50']} ms on "
        f"{result['skills']} skills{scaled}"
    )
    abst = result.get("abstention") or {}
    if "abstain_rate" in abst:
        lines.append(
            f"abstention (default model): abstains on {abst['abstain_rate']:.1%} of these queries; "
            f"Hit@1 {abst['hit@1']:.3f} -> {abst['hit@1_with_abstention']:.3f} with abstentions as misses"
        )
    if "labels" in abst:
        lab = abst["labels"]
        parts = [
            f"{k}: balanced accuracy {v['balanced_accuracy']:.3f}"
            for k, v in lab.items()
            if isinstance(v, dict) and "balanced_accuracy" in v
        ]
        lines.append(f"abstention on {lab['test']} held-out labelled queries (fold 1): " + "; ".join(parts))
    if "gate" in abst:
        g, c = abst["gate"], abst["gate"]["cost"]
        lines.append(
            f"abstention through a text-probe gate ({g['protocol']}): balanced accuracy "
            f"{g['balanced_accuracy']:.3f}, AUROC {g['auroc']:.3f} on {g['queries']} labelled queries; "
            f"on the {c['queries']} tool queries it abstains on {c['abstain_rate']:.1%}: Hit@1 "
            f"{c['hit@1']:.3f} -> {c['hit@1_with_abstention']:.3f}"
        )
    return "\n".join(lines)
