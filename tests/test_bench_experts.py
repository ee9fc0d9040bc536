"""``ragroute bench experts`` scoring on hand-made expert data (no expert trained, no model loaded)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ragroute.context import QueryContext
from ragroute.evaluation.bench_experts import ExpertData, score_router
from ragroute.index.build import build_index
from ragroute.route.fixed import FixedRoutes
from ragroute.route.sources import Source
from ragroute.types import Document


def test_routing_to_any_of_tied_best_experts_is_correct(hashing_encoder):
    # a query's gold is every expert tied for its best nDCG@10; RoutingRow reads several gold routes
    # as "all needed", so a top-1 router that picked one of two tied experts counted as wrong (every
    # query on which all experts score 0 too): accuracy 0.5 here instead of 1.0
    docs = [Document(id="d1", text="cats purr loudly"), Document(id="d2", text="ships sail the sea")]
    sources = [
        Source(name, build_index(docs, kind, encoder=hashing_encoder, name="c"), metadata={"corpus": "c"})
        for name, kind in (("e1", "dense"), ("e2", "dense"))
    ]
    contexts = [QueryContext("cats purr", id="q1"), QueryContext("ships sail", id="q2")]
    for context in contexts:
        context.set_vector(hashing_encoder, hashing_encoder.encode_queries([context.text])[0])
    data = ExpertData(
        names=["e1", "e2"],
        collections=["c"],
        sources={"c": sources},
        contexts=contexts,
        labels=["c", "c"],
        qrels={"q1": {"d1": 1}, "q2": {"d2": 1}},
        gains=np.array([[1.0, 1.0], [1.0, 0.0]]),  # q1: both experts best; q2: e1 alone
        experts=SimpleNamespace(query_encoders=lambda chosen: []),
    )
    row = score_router(data, [(FixedRoutes(["e1"]), [0, 1])], {"max_routes": 1}, hashing_encoder)
    assert row["accuracy"] == 1.0
    row = score_router(data, [(FixedRoutes(["e2"]), [0, 1])], {"max_routes": 1}, hashing_encoder)
    assert row["accuracy"] == 0.5
    assert row["ndcg@10"] == pytest.approx(1.0) and row["per_collection"] == {"c": 1.0}
    assert row["per_query"] == pytest.approx({"q1": 1.0, "q2": 1.0})  # each query's own, for pairing


def test_queries_judged_with_grade_0_only_are_not_scored(hashing_encoder):
    # a query with no relevant judgement has no nDCG: the evaluator skips it, but the expert rows and
    # both oracles counted it as 0 for every expert (and, every expert tied, as routed correctly), and
    # a collection with only such queries counted as 0 in the macro average
    docs = [Document(id="d1", text="cats purr loudly"), Document(id="d2", text="ships sail the sea")]
    sources = [
        Source(name, build_index(docs, "dense", encoder=hashing_encoder, name="c"), metadata={"corpus": "c"})
        for name in ("e1", "e2")
    ]
    contexts = [QueryContext("cats purr", id=q) for q in ("q1", "q2", "q3")]
    for context in contexts:
        context.set_vector(hashing_encoder, hashing_encoder.encode_queries([context.text])[0])
    data = ExpertData(
        names=["e1", "e2"],
        collections=["c", "z"],
        sources={"c": sources, "z": sources},
        contexts=contexts,
        labels=["c", "c", "z"],
        qrels={"q1": {"d1": 1}, "q2": {"d2": 0}, "q3": {"d1": 0}},  # q2, q3: nothing relevant
        gains=np.array([[1.0, 0.5], [0.0, 0.0], [0.0, 0.0]]),
        experts=SimpleNamespace(query_encoders=lambda chosen: []),
    )
    assert data.macro(data.gains[:, 1]) == 0.5  # was 0.125: (0.5 + 0) / 2 in c, then z's 0
    assert data.per_collection(data.gains[:, 0]) == {"c": 1.0, "z": 0.0}
    assert data.macro(data.gains.max(axis=1)) == 1.0  # instance oracle (was 0.25)
    assert data.dataset_oracle() == 1.0
    row = score_router(data, [(FixedRoutes(["e2"]), [0, 1, 2])], {"max_routes": 1}, hashing_encoder)
    assert row["accuracy"] == 0.0  # q1 wanted e1; q2 and q3 have no best expert to route to
    assert row["ndcg@10"] == pytest.approx(1.0) and row["per_collection"] == {"c": 1.0, "z": 0.0}
    assert set(row["per_query"]) == {"q1"} and data.per_query(data.gains[:, 1]) == {"q1": 0.5}  # scored only


def test_the_best_router_is_compared_with_the_better_baseline_per_query_by_collection():
    from ragroute.evaluation.bench_experts import compare_to_baselines

    # two collections of unequal size; the single expert "s" beats fusion_all (macro 0.5 vs 0.45),
    # so it is the baseline the router is measured against; every difference is one of macro means
    ids = [f"a{i}" for i in range(8)] + [f"b{i}" for i in range(2)]
    labels = ["a"] * 8 + ["b"] * 2
    data = ExpertData(
        names=["s", "t"], collections=["a", "b"], sources={}, labels=labels,
        contexts=[QueryContext("x", id=i) for i in ids], qrels={i: {"d": 1} for i in ids},
        gains=np.zeros((10, 2)), experts=SimpleNamespace(),
    )  # fmt: skip
    value = dict.fromkeys
    per_query = {
        "expert s": {**value(ids[:8], 0.5), **value(ids[8:], 0.5)},
        "expert t": value(ids, 0.1),
        "fusion_all": {**value(ids[:8], 0.4), **value(ids[8:], 0.5)},
        "router r": {**value(ids[:8], 0.6), **value(ids[8:], 0.6)},
        "instance_oracle": value(ids, 0.9),
    }
    out = compare_to_baselines(data, per_query, "r", {"s": 0.5, "t": 0.1}, 0.45)
    assert out["best_baseline"] == "expert s" and out["best_single_expert"] == "s"
    assert out["best_router - best_baseline"]["diff"] == pytest.approx(0.1)
    assert out["best_router - best_baseline"]["ci95"] == pytest.approx([0.1, 0.1])
    assert out["best_router - fusion_all"]["diff"] == pytest.approx(0.15)  # (0.2 + 0.1) / 2, not 0.18
    assert out["oracle_gap_closed"]["share"] == pytest.approx(0.25)  # 0.1 of the 0.4 up to the oracle
    assert out["oracle_gap_closed"]["queries"] == 10
    assert "pilot-domain+generalists - best_baseline" not in out  # that router did not run
    per_query["router pilot-domain+generalists"] = value(ids, 0.45)  # the label-free router, when it ran
    labels_free = compare_to_baselines(data, per_query, "r", {"s": 0.5, "t": 0.1}, 0.45)
    assert labels_free["pilot-domain+generalists - best_baseline"]["diff"] == pytest.approx(-0.05)


def test_nothing_to_score_is_one_clear_error(tmp_path):
    # with every query judged grade 0 the routers' rows would be empty (nan): refused before any encoding
    import json

    from ragroute.errors import RagrouteError
    from ragroute.evaluation.bench_experts import prepare

    folder = tmp_path / "root" / "c"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "cats purr"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "cats"}) + "\n")
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    with pytest.raises(RagrouteError, match="no query under .* has a relevant judgement"):
        prepare(tmp_path / "root", "dev", None, tmp_path / "experts")


def test_without_labelled_queries_the_router_that_reads_none_is_still_scored(hashing_encoder):
    """`bench experts` without --train-split reported no router at all, though pilot-domain reads no
    labelled query (a bench audit)."""
    from ragroute.evaluation.bench_experts import router_fits

    topics = {"e1": "cats purr and sleep on warm mats", "e2": "ships sail across the stormy sea"}
    documents = {
        name: [Document(id=f"{name}-{i}", text=f"{text} {i}") for i in range(12)]
        for name, text in topics.items()
    }
    contexts = [QueryContext("cats purr", id="q1"), QueryContext("ships sail", id="q2")]
    data = ExpertData(
        names=["base", "e1", "e2"],
        collections=["c"],
        sources={},
        contexts=contexts,
        labels=["c", "c"],
        qrels={},
        gains=np.zeros((2, 3)),
        experts=SimpleNamespace(),
        domains={
            name: hashing_encoder.encode_documents([d.text for d in docs]) for name, docs in documents.items()
        },
        domain_documents=documents,
    )
    fits = router_fits(data, None, False, hashing_encoder)
    assert list(fits) == ["pilot-domain"]
    ((router, rows),) = fits["pilot-domain"]
    assert rows == [0, 1]
    decisions = router.route_contexts(contexts)
    assert [max(d.routes, key=d.routes.get) for d in decisions] == ["e1", "e2"]
    assert all(d.routes.get("base", 0.0) == 0.0 for d in decisions)  # no domain, no pilot


def _report(gap_closed, routers=("pilot-domain+generalists",)):
    """A small ``run_experts_bench`` result, as its --json line prints it, for ``format_report``."""
    experts = {"base": 0.98, "bm25": 0.93, "expert-astronomy": 0.98}
    per_collection = {name: {"astronomy": value} for name, value in experts.items()}
    detail = {
        "ndcg@10": 0.98,
        "routes_per_query": 1.0,
        "encoders_per_query": 2.0,
        "latency_ms_p50": 0.1,
        "per_collection": {"astronomy": 0.98},
    }
    return {
        "queries": 10,
        "split": "test",
        "train_split": None,
        "train_s": 1.0,
        "experts": experts,
        "expert_encoders": {"base": 1, "bm25": 0, "expert-astronomy": 1},
        "fusion_all_detail": {"ndcg@10": 0.97, "routes_per_query": 3.0, "encoders_per_query": 2.0},
        "router_detail": {name: detail for name in routers},
        "dataset_oracle": 0.98,
        "instance_oracle": 0.98,
        "best_router": routers[0],
        "gain_over_best_baseline": 0.0,
        "oracle_gap_closed": gap_closed,
        "comparisons": {},
        "experts_per_collection": per_collection,
        "problems": [],
        "skipped": {},
    }


def test_report_says_when_there_is_no_oracle_gap_to_close():
    # the best baseline already equals the instance oracle: oracle_gap_closed is None, not a share
    from ragroute.evaluation.bench_experts import format_report

    text = format_report(_report(None))
    assert "None" not in text and "no gap to the instance oracle to close" in text
    assert "closes 0.25 of the gap to the instance oracle" in format_report(_report(0.25))


def test_report_columns_fit_the_longest_row_name():
    # "expert expert-astronomy" and "router pilot-domain+generalists" are longer than the default column
    from ragroute.evaluation.bench_experts import format_report

    lines = format_report(_report(None)).splitlines()
    header = next(line for line in lines if line.startswith("row "))
    column = header.index("nDCG@10") + len("nDCG@10")  # right edge of the nDCG@10 column
    rows = [
        line for line in lines if line.startswith(("expert ", "router ", "fusion_all", "instance_oracle"))
    ]
    assert len(rows) == 6
    for line in rows:
        assert line[column - 6 : column] in ("0.9800", "0.9300", "0.9700"), line
    per_collection = [line for line in lines if line.startswith("  ") and line.strip()[0].isalpha()]
    assert len({line.index("0.9") for line in per_collection}) == 1, per_collection


def test_a_train_split_no_collection_has_is_one_line_before_any_encoding(tmp_path, monkeypatch):
    # the training split was read by a second prepare, after the collections were encoded and scored
    import json

    from click.testing import CliRunner

    import ragroute.encode
    from ragroute.cli.bench import experts_command
    from ragroute.errors import RagrouteError
    from ragroute.evaluation.bench_experts import run_experts_bench

    for name in ("a", "b"):
        folder = tmp_path / "root" / name
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text(json.dumps({"_id": f"{name}1", "text": "cats purr"}) + "\n")
        (folder / "queries.jsonl").write_text(json.dumps({"_id": f"{name}q", "text": "cats"}) + "\n")
        (folder / "qrels" / "dev.tsv").write_text(f"query-id\tcorpus-id\tscore\n{name}q\t{name}1\t1\n")

    def no_encoder(*_args, **_kwargs):
        raise AssertionError("the encoder was loaded before the options were checked")

    with pytest.raises(RagrouteError, match="--train-split test: no BEIR folder under .* has qrels/test.tsv"):
        run_experts_bench(tmp_path / "root", "dev", "test", None, tmp_path / "experts")
    monkeypatch.setattr(ragroute.encode, "load_encoder", no_encoder)
    args = ["--data", str(tmp_path / "root"), "--experts", str(tmp_path / "experts")]
    result = CliRunner().invoke(experts_command, [*args, "--train-split", "test"])
    assert result.exit_code == 2 and "error: --train-split test: no BEIR folder" in result.output
    result = CliRunner().invoke(experts_command, [*args, "--folds", "3"])  # no cross-validation to fold
    assert result.exit_code == 2 and "error: --folds does not apply unless --train-split" in result.output


def test_the_experts_are_trained_over_the_encoder_that_embedded_the_documents(tmp_path, monkeypatch):
    # `bench experts --encoder X` embedded the collections with X, then trained every expert over the
    # bundled MiniLM against those vectors (until session 51): each was then left out of every row
    # (it adapts MiniLM, not X), or training raised a torch traceback where the widths differed
    import json

    from conftest import HashingEncoder

    import ragroute.experts.train as train_module
    from ragroute.evaluation.bench_experts import prepare

    folder = tmp_path / "root" / "c"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "cats purr"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "cats"}) + "\n")
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    trained: list[dict] = []
    monkeypatch.setattr(train_module, "train_expert", lambda docs, out, *a, **k: trained.append(k))
    encoder = HashingEncoder(dim=32, model_id="test/other-base")
    data = prepare(tmp_path / "root", "dev", encoder, tmp_path / "experts")
    assert len(trained) == 1 and trained[0]["base"] == "test/other-base"
    assert trained[0]["document_vectors"].shape == (1, 32)
    assert data.names == ["base", "bm25"]  # nothing was published here: that expert is left out


def test_a_collection_too_small_to_train_an_expert_on_is_named(tmp_path):
    """Until session 51 `bench experts` stopped with "cannot cut pseudo-queries from 1 document
    with text: an expert needs at least 50" without saying which collection."""
    import json

    from conftest import HashingEncoder

    from ragroute.errors import RagrouteError
    from ragroute.evaluation.bench_experts import prepare

    folder = tmp_path / "root" / "tiny"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "cats purr"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "cats"}) + "\n")
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(RagrouteError, match=r"^collection tiny: cannot cut pseudo-queries from 1 document"):
        prepare(tmp_path / "root", "dev", HashingEncoder(dim=384), tmp_path / "experts")


def test_a_collection_without_training_queries_is_one_line_before_any_encoding(tmp_path, monkeypatch):
    """Collection b is judged on --split dev but not on --train-split test: until session 54 the whole
    bench ran, then the dataset router (fitted per collection on test) died on b with KeyError: 'b'."""
    import json

    from click.testing import CliRunner

    import ragroute.encode
    from ragroute.cli.bench import experts_command
    from ragroute.errors import RagrouteError
    from ragroute.evaluation.bench_experts import run_experts_bench

    for name, splits in (("a", ("dev", "test")), ("b", ("dev",))):
        folder = tmp_path / "root" / name
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text(json.dumps({"_id": f"{name}1", "text": "cats purr"}) + "\n")
        (folder / "queries.jsonl").write_text(json.dumps({"_id": f"{name}q", "text": "cats"}) + "\n")
        for split in splits:
            (folder / "qrels" / f"{split}.tsv").write_text(
                f"query-id\tcorpus-id\tscore\n{name}q\t{name}1\t1\n"
            )

    def no_encoder(*_args, **_kwargs):
        raise AssertionError("the encoder was loaded before the collections were checked")

    said = r"--train-split test: b under .* has qrels/dev.tsv but no qrels/test.tsv"
    with pytest.raises(RagrouteError, match=said):
        run_experts_bench(tmp_path / "root", "dev", "test", None, tmp_path / "experts")
    monkeypatch.setattr(ragroute.encode, "load_encoder", no_encoder)
    args = ["--data", str(tmp_path / "root"), "--experts", str(tmp_path / "experts"), "--train-split", "test"]
    result = CliRunner().invoke(experts_command, args)
    assert result.exit_code == 2 and "error: --train-split test: b under" in result.output
