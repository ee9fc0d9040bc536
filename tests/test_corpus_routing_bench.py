"""``ragroute bench corpus-routing`` on tiny BEIR folders with the hashing encoder (no model, no data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ragroute.cli.bench import corpus_routing_command
from ragroute.errors import RagrouteError
from ragroute.evaluation.bench_corpus_routing import (
    format_report,
    oracle_ndcg,
    prepare,
    run_corpus_routing_bench,
    single_pipeline,
    text_only_ceiling,
)

WORDS = {
    "astro": "telescope star galaxy orbit planet comet nebula",
    "cook": "bread flour yeast oven butter sauce knife",
    "it": "printer laptop password network vpn email driver",
}
SHARED = "star bread printer"  # one query text asked in two collections (as ADI's queries are CISI's)
DESCRIPTIONS = {"astro": "astronomy: stars and planets", "cook": "cooking and baking", "it": "IT support"}


def write_collection(folder: Path, name: str, vocab: list[str], shared: bool) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(12):
            text = " ".join(rng.choice(vocab, size=8))
            fh.write(json.dumps({"_id": f"{name}-{i}", "title": "", "text": text}) + "\n")
    queries = [(f"{name}-q{i}", f"{vocab[i]} {vocab[i + 1]}", [i, i + 1]) for i in range(5)]
    if shared:
        queries.append((f"{name}-qs", SHARED, [0]))
    (folder / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"]
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text, docs in queries:
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
            lines.extend(f"{qid}\t{name}-{d}\t1" for d in docs)
    (folder / "qrels" / "dev.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def glasgow_like(tmp_path: Path) -> Path:
    root = tmp_path / "collections"
    for name, words in WORDS.items():
        write_collection(root / name, name, words.split(), shared=name in ("astro", "cook"))
    return root


def test_ceiling_counts_texts_shared_by_sources(glasgow_like, hashing_encoder):
    data = prepare(glasgow_like, "dev", hashing_encoder)
    assert data.query_labels.count("astro") == 6 and data.query_labels.count("it") == 5
    ceiling = text_only_ceiling(data)
    assert ceiling["queries_with_text_in_several_sources"] == 2
    # one copy of the shared text must be wrong
    assert ceiling["accuracy"] == pytest.approx(16 / 17, abs=1e-4)
    assert 0.0 < ceiling["ndcg@10_hedged"] <= 1.0


def test_ceiling_is_the_oracle_when_no_text_is_shared(tmp_path, hashing_encoder):
    for name, words in WORDS.items():
        write_collection(tmp_path / name, name, words.split(), shared=False)
    data = prepare(tmp_path, "dev", hashing_encoder)
    oracle = oracle_ndcg(data)
    ceiling = text_only_ceiling(data)
    assert ceiling["accuracy"] == 1.0 and ceiling["queries_with_text_in_several_sources"] == 0
    assert ceiling["ndcg@10"] == pytest.approx(oracle, abs=1e-4)
    assert ceiling["ndcg@10_hedged"] == pytest.approx(oracle, abs=1e-4)


@pytest.mark.parametrize("method", ["dense", "hybrid"])
def test_bench_reports_every_router_against_baselines(glasgow_like, hashing_encoder, method):
    result = run_corpus_routing_bench(
        glasgow_like, "dev", "dev", hashing_encoder, folds=2, descriptions=DESCRIPTIONS, method=method
    )
    assert result["queries"] == 17 and result["method"] == method
    names = set(result["routers"])
    assert {"centroid (baseline)", "prototype", "confidence", "trained (cross-validated)"} <= names
    assert "llamaindex-embedding-selector (baseline)" in names
    for row in result["routers"].values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["ndcg@10"] <= 1.0
        assert {"ndcg@10_top1_only", "routes_per_query", "latency_ms_p50", "latency_ms_p95"} <= set(row)
        assert 1.0 <= row["routes_per_query"] <= 3.0 and row["latency_ms_p95"] >= row["latency_ms_p50"] > 0
        assert sum(row["errors"].values()) == round((1 - row["accuracy"]) * 17)
    # the shared text is routed to one place, so some router misses one of its two copies
    assert result["text_only_ceiling"]["accuracy"] < 1.0
    assert 0.0 < result["oracle_ndcg@10"] <= 1.0 and 0.0 < result["merged_ndcg@10"] <= 1.0
    # bare faiss searches give the machine's own concurrency floor (dense sources only)
    floor = result["concurrent_routes"]["machine_ratio_p50"]
    assert (floor > 0) if method == "dense" else floor is None
    # hybrid sources search in two phases; the bench also times them searched whole, one per thread
    whole = result["concurrent_routes"]["ratio_p50_whole_searches"]
    assert (whole > 0) if method == "hybrid" else whole is None
    report = format_report(result)
    assert "x oracle" in report and "routing errors" in report
    assert ("the machine's floor" in report) == (method == "dense")
    assert ("two-phase retrieve stage" in report) == (method == "hybrid")
    json.dumps(result)


def test_baseline_without_its_library_is_skipped_not_fatal(glasgow_like, hashing_encoder, monkeypatch):
    # llama-index-core missing (a machine with only the benchmark's needs installed): the LlamaIndex
    # baseline is listed under skipped with the reason, and every product router is still scored
    monkeypatch.setitem(sys.modules, "ragroute.integrations.llamaindex_embedding", None)
    result = run_corpus_routing_bench(glasgow_like, "dev", None, hashing_encoder, descriptions=DESCRIPTIONS)
    assert "llamaindex-embedding-selector (baseline)" not in result["routers"]
    reason = result["skipped"]["routers"]["llamaindex-embedding-selector (baseline)"]
    assert "llama-index-core is missing" in reason
    assert {"centroid (baseline)", "prototype", "confidence"} <= set(result["routers"])


def test_command_json(glasgow_like, hashing_encoder, monkeypatch):
    import ragroute.encode

    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **k: hashing_encoder)
    result = CliRunner().invoke(
        corpus_routing_command, ["--data", str(glasgow_like), "--split", "dev", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert {"routers", "merged_ndcg@10", "oracle_ndcg@10", "latency_ms_p50"} <= set(payload)
    assert payload["latency_of"] == "prototype"  # the default router's, not the fastest baseline's
    assert payload["latency_ms_p50"] == payload["routers"]["prototype"]["latency_ms_p50"]
    assert all({"accuracy", "ndcg@10"} <= set(row) for row in payload["routers"].values())
    # without --train-split only training-free routers run
    assert not any("cross-validated" in name for name in payload["routers"])


def test_hybrid_sources_search_bm25_and_dense(glasgow_like, hashing_encoder):
    from ragroute.index.hybrid import HybridIndex

    data = prepare(glasgow_like, "dev", hashing_encoder, method="hybrid")
    assert all(isinstance(s.retriever, HybridIndex) for s in data.sources)
    hits = data.source_hits("astro")[0]
    assert hits and all(h.source == "astro" for h in hits)
    assert all(h.explain["fusion"] == "rrf" for h in hits)
    assert any({"bm25", "dense"} <= set(h.explain) for h in hits)  # ranked by both lists


def test_unknown_method_is_one_line_error(glasgow_like, hashing_encoder):
    from ragroute.errors import RagrouteError

    with pytest.raises(RagrouteError, match="unknown method 'sparse'"):
        prepare(glasgow_like, "dev", hashing_encoder, method="sparse")


def test_one_collection_is_nothing_to_route_among(tmp_path, hashing_encoder):
    """Every router scored accuracy 1.000 on one collection, unsaid, until session 37."""
    from ragroute.errors import RagrouteError

    write_collection(tmp_path / "one" / "astro", "astro", WORDS["astro"].split(), shared=False)
    with pytest.raises(RagrouteError, match=r"1 BEIR collection with qrels/dev.tsv \(astro\); routing needs"):
        run_corpus_routing_bench(tmp_path / "one", "dev", None, hashing_encoder)


@pytest.mark.parametrize("router", ["prototype", "centroid", "confidence"])
def test_bench_measures_the_pipeline_load_routing_returns(glasgow_like, hashing_encoder, tmp_path, router):
    """Same config and queries: the bench's rows hold exactly the hits `load_routing(...).retrieve` gives."""
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index
    from ragroute.loaders import load_beir
    from ragroute.route.config import load_routing

    settings = {"threshold": 0.2, "max_routes": 2, "fusion": "rrf"}
    sources = {}
    for name in WORDS:
        docs = load_beir(glasgow_like / name, split="dev").corpus
        save_index(build_index(docs, "dense", encoder=hashing_encoder, name=name), tmp_path / "idx" / name)
        sources[name] = {"index": f"idx/{name}", "description": DESCRIPTIONS[name]}
    config = tmp_path / "routing.yaml"
    config.write_text(json.dumps({"sources": sources, "router": {"kind": router, **settings}}))
    product = load_routing(config, encoder=hashing_encoder)

    data = prepare(glasgow_like, "dev", hashing_encoder, descriptions=DESCRIPTIONS)
    [(pipeline, _)] = single_pipeline(data, router)(settings, None)
    rows = data.evaluator().run(pipeline)
    assert len(rows) == 17 and any(len(row.chosen) > 1 for row in rows) == (router != "centroid") or True
    for context, row in zip(data.contexts, rows):
        result = product.retrieve(context.text, 10)
        assert row.hits == [h.doc_id for h in result.hits]
        assert row.scores == pytest.approx([h.score for h in result.hits], abs=1e-6)
        assert row.chosen == result.decision.chosen


def test_collections_with_the_same_ids_are_kept_apart(tmp_path: Path) -> None:
    # ids need only be unique within a file: two collections both with document "1" and query "q1"
    # stopped corpus-routing (and experts) at the merged index with "duplicate document id '1'"
    from ragroute.evaluation.bench_corpus_routing import load_collections

    for name, text in (("a", "cats purr"), ("b", "dogs bark")):
        folder = tmp_path / "root" / name
        (folder / "qrels").mkdir(parents=True)
        (folder / "corpus.jsonl").write_text(json.dumps({"_id": "1", "text": text}) + "\n")
        (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": text}) + "\n")
        (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t1\t1\n")
    said: list[str] = []
    a, b = load_collections(tmp_path / "root", "dev", log=said.append)
    assert [d.id for d in a.corpus + b.corpus] == ["a/1", "b/1"]
    assert [q.id for q in a.queries + b.queries] == ["a/q1", "b/q1"]
    assert a.qrels == {"a/q1": {"a/1": 1}} and b.qrels == {"b/q1": {"b/1": 1}}
    assert said == ["ids repeat across collections: each is prefixed with its collection's name (NAME/ID)"]


def test_ceiling_and_oracle_leave_out_queries_with_nothing_relevant(tmp_path, hashing_encoder):
    # the text-only ceiling counted a query judged grade 0 only as nDCG 0 (the oracle, through the
    # evaluator, skipped it), so the ceiling fell below the oracle with no text shared; and a
    # collection with only such queries counted as 0 in both macro averages
    for name, words in WORDS.items():
        write_collection(tmp_path / "clean" / name, name, words.split(), shared=False)
    clean = oracle_ndcg(prepare(tmp_path / "clean", "dev", hashing_encoder))
    for name, words in WORDS.items():
        write_collection(tmp_path / "extra" / name, name, words.split(), shared=False)
    astro = tmp_path / "extra" / "astro"
    with (astro / "queries.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "astro-q0z", "text": "comet nebula"}) + "\n")
    with (astro / "qrels" / "dev.tsv").open("a", encoding="utf-8") as fh:
        fh.write("astro-q0z\tastro-0\t0\n")
    music = tmp_path / "extra" / "music"
    vocab = ["violin", "cello", "flute", "drum", "harp", "piano", "organ"]
    write_collection(music, "music", vocab, shared=False)
    qrels = music / "qrels" / "dev.tsv"
    qrels.write_text(qrels.read_text(encoding="utf-8").replace("\t1\n", "\t0\n"), encoding="utf-8")
    data = prepare(tmp_path / "extra", "dev", hashing_encoder)
    ceiling = text_only_ceiling(data)
    assert ceiling["queries_with_text_in_several_sources"] == 0
    assert oracle_ndcg(data) == pytest.approx(clean)
    assert ceiling["ndcg@10"] == pytest.approx(clean, abs=1e-4)
    assert ceiling["ndcg@10_hedged"] == pytest.approx(clean, abs=1e-4)


def test_report_columns_fit_the_longest_router_name():
    # an ensemble's name lists its members and is longer than the default name column
    row = {
        "accuracy": 1.0,
        "ndcg@10": 0.9,
        "ndcg@10_top1_only": 0.9,
        "routes_per_query": 1.0,
        "gold_in_chosen": 1.0,
        "latency_ms_p50": 0.1,
        "latency_ms_p95": 0.2,
        "errors": {},
    }
    names = ["prototype", "ensemble (default members: prototype+confidence)"]
    result = {
        "root": "data",
        "split": "test",
        "queries": 4,
        "collections": {"a": {"queries": 2}, "b": {"queries": 2}},
        "method": "dense",
        "evaluation": "held-out split",
        "selection": {"threshold": 0.25, "max_routes": 3, "hedge_below": None, "fusion": "auto"},
        "routers": {name: dict(row) for name in names},
        "baseline_reference": None,
        "text_only_ceiling": {
            "accuracy": 1.0,
            "ndcg@10": 0.9,
            "ndcg@10_hedged": 0.9,
            "queries_with_text_in_several_sources": 0,
        },
        "merged_ndcg@10": 0.9,
        "oracle_ndcg@10": 0.9,
        "skipped": {},
        "concurrent_routes": {
            "sources": ["a", "b"],
            "together_ms_p50": 0.2,
            "slowest_alone_ms_p50": 0.1,
            "ratio_p50": 2.0,
            "ratio_p95": 3.0,
        },
    }
    result["selection"]["route_weights"] = "even"
    lines = format_report(result).splitlines()
    header = next(line for line in lines if line.startswith("router "))
    edge = header.index("nDCG@10") + len("nDCG@10")
    rows = [
        line
        for line in lines
        if line.startswith((*names, "merged index", "oracle source", "ceiling", "  same"))
    ]
    assert len(rows) == 6
    assert all(line[edge - 6 : edge] == "0.9000" for line in rows), rows
    errors = [line for line in lines if line.startswith("  ") and line.endswith(" none")]
    assert len({line.index(" none") for line in errors}) == 1, errors


class _NoEncoding:
    """An encoder that must not be reached: the run is refused before anything is encoded."""

    def __getattr__(self, name):
        raise AssertionError(f"encoder used ({name}) before the options were checked")


def test_a_train_split_no_collection_has_is_one_line_before_anything_is_encoded(glasgow_like, monkeypatch):
    # found only when the learned routers were fitted, after every collection was encoded and the
    # training-free routers scored
    import ragroute.encode
    from ragroute.errors import RagrouteError

    with pytest.raises(
        RagrouteError, match=r"--train-split test: no BEIR folder under .* has qrels/test.tsv"
    ):
        run_corpus_routing_bench(glasgow_like, "dev", "test", _NoEncoding())
    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **k: _NoEncoding())
    result = CliRunner().invoke(
        corpus_routing_command, ["--data", str(glasgow_like), "--train-split", "test"]
    )
    assert result.exit_code == 2 and result.output == (
        f"error: --train-split test: no BEIR folder under {glasgow_like} has qrels/test.tsv "
        "(splits there: dev)\n"
    )


def test_folds_without_cross_validation_are_refused(glasgow_like, monkeypatch):
    # --folds sets cross-validation on --split, which runs only when --train-split equals it: ignored
    import ragroute.encode

    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *a, **k: _NoEncoding())
    for extra in ([], ["--train-split", "other"]):
        result = CliRunner().invoke(
            corpus_routing_command, ["--data", str(glasgow_like), "--folds", "3", *extra]
        )
        assert result.exit_code == 2 and result.output.startswith(
            "error: --folds does not apply unless --train-split equals --split"
        )
        assert result.output.count("\n") == 1


def test_a_train_split_sharing_scored_texts_is_said_and_refused_when_it_is_the_same(
    glasgow_like, hashing_encoder
):
    """With --train-split other than --split, the learned routers were fitted on the training
    split unchecked (until session 45): a scored query whose text they were fitted on is now said,
    and a training split holding every scored text is one line, as `bench route-labels` says."""
    for folder in glasgow_like.iterdir():  # "copy": the dev queries again, one of them reworded
        qrels = (folder / "qrels" / "dev.tsv").read_text(encoding="utf-8")
        (folder / "qrels" / "copy.tsv").write_text(qrels, encoding="utf-8")
    notes: list[str] = []
    with pytest.raises(RagrouteError, match="every one of the 17 test queries is also in the training"):
        run_corpus_routing_bench(glasgow_like, "dev", "copy", hashing_encoder, log=notes.append)
    astro = glasgow_like / "astro"
    lines = (astro / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    lines.append(json.dumps({"_id": "astro-new", "text": "comet nebula orbit"}))
    (astro / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    copy = (astro / "qrels" / "copy.tsv").read_text(encoding="utf-8")
    (astro / "qrels" / "copy.tsv").write_text(copy.replace("astro-q0\t", "astro-new\t"), encoding="utf-8")
    result = run_corpus_routing_bench(glasgow_like, "dev", "copy", hashing_encoder, log=notes.append)
    assert "trained" in result["routers"]
    assert any("note: 16 of 17 test queries also appear in the training file" in n for n in notes), notes


def test_routers_fitted_on_a_train_split_learn_only_the_routed_sources(glasgow_like, hashing_encoder):
    """Until session 55 the learned routers were fitted on the --train-split queries of every folder
    under the root, a hidden one (``_old``, left out of the sources) included: they learned a route no
    source answers, and its queries moved the kNN row. Now they are left out, and said."""
    import shutil
    import warnings

    for folder in glasgow_like.iterdir():
        qrels = folder / "qrels"
        (qrels / "train.tsv").write_text((qrels / "dev.tsv").read_text(encoding="utf-8"), encoding="utf-8")
        name = folder.name
        with (folder / "queries.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"_id": f"{name}-new", "text": f"zzz {name}"}) + "\n")
        with (qrels / "dev.tsv").open("a", encoding="utf-8") as fh:
            fh.write(f"{name}-new\t{name}-0\t1\n")

    def rows(log: list[str]) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_corpus_routing_bench(glasgow_like, "dev", "train", hashing_encoder, log=log.append)
        return {name: (row["accuracy"], row["errors"]) for name, row in result["routers"].items()}

    without = rows([])
    old = glasgow_like / "_old"  # a hidden copy holding astro-like training queries only
    write_collection(old, "old", WORDS["astro"].split(), shared=False)
    shutil.move(old / "qrels" / "dev.tsv", old / "qrels" / "train.tsv")
    notes: list[str] = []
    assert rows(notes) == without
    assert "training queries of _old left out: no source of that name is routed to" in notes
