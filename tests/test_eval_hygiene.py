"""Evaluation hygiene: what is fitted never sees what is reported (folds, held-apart texts, intervals)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from conftest import HashingEncoder

from ragroute.evaluation.metrics import evaluate_run, macro_mean, paired_difference
from ragroute.rerank.train import query_fold
from ragroute.route.folds import grouped_holdout, grouped_stratified_folds, normalized_text

ROUTER_DATA = Path(__file__).parent / "data" / "skills" / "router"
# one text under case, spacing and Unicode form: composed / decomposed accent, sharp s, a ligature
VARIANTS = [
    ("Café straße ﬁle", "CAFE\u0301  STRASSE file"),
    ("naïve query", "nai\u0308ve   QUERY"),
]


def ids_in_fold(set_name: str, fold: int, n: int, prefix: str = "x") -> list[str]:
    return [f"{prefix}{i}" for i in range(200) if query_fold(set_name, f"{prefix}{i}") == fold][:n]


def test_one_text_under_case_spacing_and_unicode_form_is_one_text():
    for a, b in VARIANTS:
        assert normalized_text(a) == normalized_text(b)


def test_folds_and_holdouts_never_split_one_text():
    for a, b in VARIANTS:
        fold_of = grouped_stratified_folds([a, b], ["x", "x"], 2)
        assert fold_of[0] == fold_of[1]
        texts = [a, b, "other one", "other two", "other three", "other four"]
        train, held = grouped_holdout(texts, ["x"] * 6, 0.5)
        assert {0, 1} <= set(train.tolist()) or {0, 1} <= set(held.tolist())


def test_gate_folds_group_texts_and_spread_both_kinds():
    from ragroute.gate.signals import fold_ids

    texts = [f"query {i}" for i in range(20)] + ["Query 3", "QUERY  7"]
    retrieve = [i % 2 == 0 for i in range(20)] + [True, False]
    fold_of = fold_ids(texts, retrieve, 4)
    assert fold_of[20] == fold_of[3] and fold_of[21] == fold_of[7]
    for f in range(4):
        kinds = {retrieve[i] for i in np.flatnonzero(fold_of == f)}
        assert kinds == {True, False}


def test_scored_queries_without_a_run_count_zero_and_unjudged_ones_are_left_out():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 0}}
    result = evaluate_run({"a": ["d1"], "c": ["d3"]}, qrels, ("hit@1",))
    assert result["queries"] == 2 and result["hit@1"] == 0.5  # b missing from the run: a miss
    assert macro_mean([1.0, None, 0.0]) == 0.5  # a collection with no scored query is left out


def test_grouped_intervals_resample_within_each_collection():
    # one collection of one query (difference 1) and one of 50 (difference 0): the macro difference
    # is 0.5 in every resample drawn within collections, never when queries move between them
    a = {"solo": 1.0, **{f"q{i}": 0.0 for i in range(50)}}
    b = dict.fromkeys(a, 0.0)
    groups = {"solo": "small", **{f"q{i}": "big" for i in range(50)}}
    result = paired_difference(a, b, groups=groups, resamples=500)
    assert result["diff"] == 0.5 and result["ci95"] == [0.5, 0.5]
    pooled = paired_difference(a, b, resamples=500)
    assert pooled["diff"] < 0.05  # the micro mean: the groups do change what is averaged


def test_rerank_calibration_texts_are_never_trained_on_in_another_set(hashing_encoder):
    from ragroute.rerank.train import LabelledSet, TrainParams, build_pairs
    from ragroute.types import Document

    def labelled(name: str, copy_of: str = "") -> LabelledSet:
        ids = ids_in_fold(name, 0, 20)
        texts = {q: f"topic {name} number {i}" for i, q in enumerate(ids)}
        docs = [Document(id=f"d{i}", text=f"{texts[q]} tool", title=f"tool{i}") for i, q in enumerate(ids)]
        if copy_of:  # every query of this set is also a query of the other (ADI and CISI)
            texts = {q: f"TOPIC {copy_of}  number {i}" for i, q in enumerate(ids)}
        return LabelledSet(name, docs, texts, {q: {f"d{i}": 1} for i, q in enumerate(ids)})

    pairs = build_pairs(
        [labelled("adi"), labelled("cisi", copy_of="adi")], hashing_encoder, TrainParams(hard_pool=5)
    )
    apart = {normalized_text(p.query) for p in pairs.calibration}
    assert apart and not apart & {normalized_text(p.query) for p in pairs.train}
    for name in ("adi", "cisi"):
        mine = [p for p in pairs.train + pairs.calibration if p.set_name == name]
        assert pairs.counts[name]["pairs"] == len(mine)


def test_bench_skills_fold1_and_abstention_test_leave_out_copies_of_fold0_texts(tmp_path):
    from ragroute.evaluation.bench_skills import run_skills_bench

    root = tmp_path / "dups"
    shutil.copytree(ROUTER_DATA, root)
    queries = [json.loads(line) for line in (root / "queries.jsonl").read_text().splitlines()]
    qrels = (root / "qrels" / "dev.tsv").read_text().splitlines()
    fold0 = [q for q in queries if query_fold("dups", q["_id"]) == 0]
    copies = ids_in_fold("dups", 1, 2, prefix="copy")
    for new_id, original in zip(copies, fold0):
        queries.append({"_id": new_id, "text": original["text"].upper() + " ", "metadata": {}})
        qrels += [f"{new_id}\t{line.split()[1]}\t1" for line in qrels if line.split()[0] == original["_id"]]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels" / "dev.tsv").write_text("\n".join(qrels) + "\n")
    labels = [json.loads(line) for line in (root / "need_tool.jsonl").read_text().splitlines()]
    label_fold0 = [r for r in labels if query_fold("dups", r["_id"]) == 0]
    label_copies = ids_in_fold("dups", 1, 2, prefix="lcopy")
    labels += [{**r, "_id": i, "text": r["text"].title()} for i, r in zip(label_copies, label_fold0)]
    (root / "need_tool.jsonl").write_text("\n".join(json.dumps(r) for r in labels) + "\n")

    result = run_skills_bench(
        root, HashingEncoder(dim=256), scale=0, latency_queries=2, abstain_data=root / "need_tool.jsonl"
    )
    seen = {normalized_text(q["text"]) for q in fold0}
    fresh = [
        q for q in queries if query_fold("dups", q["_id"]) == 1 and normalized_text(q["text"]) not in seen
    ]
    assert result["fold1_queries"] == len(fresh) < sum(query_fold("dups", q["_id"]) == 1 for q in queries)
    seen = {normalized_text(r["text"]) for r in label_fold0}
    held = [r for r in labels if query_fold("dups", r["_id"]) == 1 and normalized_text(r["text"]) not in seen]
    assert (
        result["abstention"]["labels"]["test"]
        == len(held)
        < sum(query_fold("dups", r["_id"]) == 1 for r in labels)
    )
    assert result["abstention"]["labels"]["train"] == len(label_fold0)
