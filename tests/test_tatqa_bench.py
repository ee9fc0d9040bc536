"""``ragroute bench tatqa`` on a tiny TAT-QA-like folder with the hashing encoder (no model, no data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragroute.cli.bench import tatqa_command
from ragroute.evaluation.bench_tatqa import (
    LABEL_ROUTES,
    ModalityCueRouter,
    format_report,
    modality_cues,
    prepare,
    run_tatqa_bench,
)

TABLES = {
    "c1": ["Revenue | 2019 | 2018", "Product sales | 1,200 | 1,100", "Service revenue | 300 | 250"],
    "c2": ["Inventory | 2019 | 2018", "Raw materials | 45 | 40", "Work in process | 12 | 15"],
    "c3": ["Debt | 2019 | 2018", "Term loan | 500 | 600", "Revolving credit facility | 100 | 0"],
    "c4": ["Employees | 2019 | 2018", "Engineering staff | 900 | 850", "Total headcount | 1,200 | 1,170"],
}
PARAGRAPHS = {
    "c1": [
        "Product sales are recognised when control of the goods passes to the customer at shipment.",
        "Service revenue consists of maintenance contracts billed monthly over the contract term.",
    ],
    "c2": [
        "Inventories are stated at the lower of cost and net realisable value using first-in first-out.",
        "Raw materials are amounts in thousands of dollars held at our main manufacturing plant.",
    ],
    "c3": [
        "The term loan bears interest at a floating rate and matures in five years from signing.",
        "The revolving credit facility was entered into to fund general corporate purposes and acquisitions.",
    ],
    "c4": [
        "Our employees are not represented by unions and we consider relations with staff to be good.",
        "Headcount figures include full time engineering and sales staff at the end of the fiscal year.",
    ],
}
QUERIES = [
    # (id, text, answer_from, context, paragraph orders)
    ("q1", "What is the percentage change in total revenue from 2018 to 2019?", "table", "c1", []),
    ("q2", "What was the average raw materials inventory in 2019 and 2018?", "table", "c2", []),
    ("q3", "What is the change in total debt between 2018 and 2019?", "table", "c3", []),
    ("q4", "What was the total headcount in 2019?", "table", "c4", []),
    ("q5", "When are product sales recognised?", "text", "c1", [1]),
    ("q6", "How are inventories stated?", "text", "c2", [1]),
    ("q7", "Why was the revolving credit facility entered into?", "text", "c3", [2]),
    ("q8", "What does the relation with employees and unions look like?", "text", "c4", [1]),
    ("q9", "What was the service revenue in 2019?", "table-text", "c1", [2]),
    ("q10", "What were the raw materials in 2019 in thousands?", "table-text", "c2", [2]),
    ("q11", "What was the term loan in 2019?", "table-text", "c3", [1]),
    ("q12", "What was the engineering staff headcount in 2019?", "table-text", "c4", [2]),
]


def write_tatqa(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "corpus_tables.jsonl").open("w", encoding="utf-8") as fh:
        for ctx, rows in TABLES.items():
            fh.write(json.dumps({"_id": f"{ctx}-table", "title": "", "text": "\n".join(rows)}) + "\n")
    with (root / "corpus_paragraphs.jsonl").open("w", encoding="utf-8") as fh:
        for ctx, paragraphs in PARAGRAPHS.items():
            for order, text in enumerate(paragraphs, 1):
                fh.write(json.dumps({"_id": f"{ctx}-p{order}", "title": "", "text": text}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"]
    with (root / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text, answer_from, ctx, orders in QUERIES:
            fh.write(json.dumps({"_id": qid, "text": text, "metadata": {"answer_from": answer_from}}) + "\n")
            if answer_from in ("table", "table-text"):
                lines.append(f"{qid}\t{ctx}-table\t1")
            lines.extend(f"{qid}\t{ctx}-p{order}\t1" for order in orders)
    (root / "qrels" / "dev.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def tatqa_dir(tmp_path: Path) -> Path:
    return write_tatqa(tmp_path / "tatqa")


def test_prepare_splits_sources_and_labels(tatqa_dir, hashing_encoder):
    bench = prepare(tatqa_dir, hashing_encoder)
    data = bench.routing
    assert [s.name for s in data.sources] == ["tables", "text"]
    assert len(data.sources[0].documents) == 4 and len(data.sources[1].documents) == 8
    assert all(d.modality == "table" for d in data.sources[0].documents)
    assert len(data.query_ids) == 12
    assert bench.gold == [LABEL_ROUTES[label] for label in data.query_labels]
    assert [len(data.source_hits(name)) for name in ("tables", "text")] == [12, 12]
    assert all(c.has_vector(hashing_encoder) for c in data.contexts)  # embedded once, up front


@pytest.mark.parametrize("method", ["dense", "hybrid"])
def test_bench_keys_and_ranges(tatqa_dir, hashing_encoder, method):
    result = run_tatqa_bench(tatqa_dir, hashing_encoder, method=method, folds=2)
    assert result["queries"] == 12
    assert result["labels"] == {"table": 4, "text": 4, "table-text": 4}
    expected = {
        "prototype",
        "confidence",
        "modality-cues",
        "knn-10 (cross-validated)",
        "trained (cross-validated)",
    }
    assert expected <= set(result["routers"])
    for row in result["routers"].values():
        for key in ("accuracy", "top1_in_label", "exact_selection", "recall@5"):
            assert 0.0 <= row[key] <= 1.0
        assert row["latency_ms_p50"] >= 0.0
        assert 1.0 <= row["routes_per_query"] <= 2.0
        assert set(row["by_label"]) == {"table", "text", "table-text"}
    for key in ("merged_recall@5", "oracle_recall@5", "both_routes_recall@5"):
        assert 0.0 <= result[key] <= 1.0
    # the oracle never retrieves from a route without an answer, so it can only gain over "both"
    assert result["oracle_recall@5"] >= result["both_routes_recall@5"] - 1e-9
    json.dumps(result)  # JSON-able as is
    assert "a router of this benchmark only, not a registered one" in format_report(result)


def test_modality_cues():
    table = modality_cues("What is the percentage change in revenue from 2018 to 2019?")
    text = modality_cues("What does adjusted EBITDA represent?")
    assert table["table"] >= 2 and table["text"] == 0
    assert text["text"] >= 1 and text["table"] == 0
    router = ModalityCueRouter()
    decisions = router.route_many(["What is the average total debt in 2019 and 2018?", "Why did sales fall?"])
    assert decisions[0].chosen == ["tables"] and decisions[1].chosen == ["text"]
    assert abs(sum(decisions[0].routes.values()) - 1.0) < 1e-6


def test_command_json(tatqa_dir, hashing_encoder, monkeypatch):
    import ragroute.encode

    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **k: hashing_encoder)
    result = CliRunner().invoke(tatqa_command, ["--data", str(tatqa_dir), "--folds", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["queries"] == 12
    assert {"accuracy", "recall@5", "latency_ms_p50"} <= set(payload["routers"]["prototype"])
    assert "merged_recall@5" in payload and "oracle_recall@5" in payload


def test_command_missing_data(tmp_path):
    result = CliRunner().invoke(tatqa_command, ["--data", str(tmp_path / "absent")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: data missing")


def test_learned_rows_that_cannot_be_cross_validated_are_said_skipped(
    tatqa_dir, hashing_encoder, monkeypatch
):
    """Until session 37 the kNN and trained rows (the best of the docs' table) vanished without a
    word when a label held fewer questions than folds, and --folds 0 ran, still claiming "0-fold"."""
    import ragroute.encode

    result = run_tatqa_bench(tatqa_dir, hashing_encoder, folds=5)  # 4 questions per label
    assert "trained (cross-validated)" not in result["routers"]
    reason = "labels table (4), table-text (4), text (4) hold fewer questions than 5 folds"
    assert result["skipped_routers"] == {
        "knn-10 (cross-validated)": reason,
        "trained (cross-validated)": reason,
    }
    assert result["evaluation"] == f"kNN and trained: skipped ({reason})"
    assert f"trained (cross-validated)        skipped: {reason}" in format_report(result)
    with pytest.raises(Exception, match="folds must be at least 2"):
        run_tatqa_bench(tatqa_dir, hashing_encoder, folds=1)
    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **k: hashing_encoder)
    refused = CliRunner().invoke(tatqa_command, ["--data", str(tatqa_dir), "--folds", "0"])
    assert refused.exit_code == 2 and "0 is not in the range x>=2" in refused.output


def test_accuracy_by_label_follows_each_question_whatever_the_order_rows_come_in(tatqa_dir, hashing_encoder):
    """Cross-validated rows come fold by fold, not in question order: until session 49 the accuracy
    by label was read by position, so each label's accuracy mixed other questions' outcomes."""
    import numpy as np

    from ragroute.evaluation.bench_corpus_routing import single_pipeline
    from ragroute.evaluation.bench_tatqa import score_router
    from ragroute.route.fixed import FixedRoutes

    bench = prepare(tatqa_dir, hashing_encoder)
    settings = {"threshold": 0.5, "max_routes": 2, "fusion": "rrf", "route_weights": "even", "depth": 20}
    one = single_pipeline(bench.routing, None, FixedRoutes(["tables"]))  # right on table questions only
    n = len(bench.routing.query_ids)

    def backwards(chosen, positions):  # the same pipeline, its questions routed last first
        return [(pipeline, list(range(n))[::-1]) for pipeline, _ in one(chosen, positions)]

    in_order = score_router(bench, one, settings)
    reversed_ = score_router(bench, backwards, settings)
    assert {label: v["accuracy"] for label, v in in_order["by_label"].items()} == {
        "table": 1.0,
        "text": 0.0,
        "table-text": 0.0,
    }
    assert reversed_["by_label"] == in_order["by_label"]
    rows = bench.evaluator().run(one(settings, None)[0][0])
    for label, entry in in_order["by_label"].items():
        mine = [row.correct for row, lab in zip(rows, bench.routing.query_labels) if lab == label]
        assert entry["accuracy"] == round(float(np.mean(mine)), 4)
