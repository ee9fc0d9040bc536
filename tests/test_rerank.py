"""Cross-encoder rerankers: training here (tiny), the artifact, torch/ONNX agreement, calibration,
the pipeline stage and the LlamaIndex postprocessor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragroute.errors import RagrouteError
from ragroute.rerank.cross_encoder import CrossEncoderReranker, amx_bfloat16
from ragroute.rerank.train import (
    Pair,
    PairSet,
    TrainParams,
    listwise_batch,
    listwise_loss,
    pool_mrr,
    query_batch_loss,
    query_fold,
    query_groups,
    train_reranker,
)
from ragroute.types import Hit

TOPICS = {
    "weather": ("forecast rain tomorrow in paris", "Weather | daily forecast, rain and temperature by city"),
    "email": ("send a message to my team", "Mail | send an email message to recipients"),
    "stocks": ("share price of apple today", "Stocks | latest share price quote for a ticker"),
    "maps": ("route by car to the airport", "Maps | driving directions and routes between places"),
}


def _pairs() -> PairSet:
    train, calibration = [], []
    for topic, (query, text) in TOPICS.items():
        for other, (_, wrong) in TOPICS.items():
            pair = Pair(query, text, 1.0) if other == topic else Pair(query, wrong, 0.0)
            train.extend([pair] * (3 if other == topic else 1))
            calibration.append(pair)
    return PairSet(train=train, calibration=calibration, counts={"toy": {"queries": 4}})


def _toy_params(**changes: Any) -> TrainParams:
    """The toy recipe these tests train (one layer, 32 tokens, 40 epochs) with ``changes``."""
    settings: dict[str, Any] = dict(
        layers=1, max_length=32, epochs=40, batch_size=8, learning_rate=1e-3, threads=1
    )
    return TrainParams(**{**settings, **changes})


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory):
    out = tmp_path_factory.mktemp("rr") / "toy"
    params = _toy_params()
    report = train_reranker(_pairs(), out, params, name="toy", show_progress=False)
    return out, report


def test_a_calibration_fitted_on_few_queries_is_said_to_be_rough(tiny_reranker):
    # fitted on a pool or two its coefficients can be anything; published in silence until session 36
    from pathlib import Path

    from ragroute.rerank.train import MIN_CALIBRATION_QUERIES, warn_few_calibration_queries

    _, report = tiny_reranker
    assert 0 < report["calibration"]["queries_all"] < MIN_CALIBRATION_QUERIES  # the toy set is small
    with pytest.warns(
        UserWarning, match=r"fitted on 3 held-apart queries \(< 20\): its probabilities are rough"
    ):
        warn_few_calibration_queries({"queries_all": 3}, Path("rerank/toy"))


def test_training_learns_the_pairs_and_publishes_a_calibrated_artifact(tiny_reranker):
    out, report = tiny_reranker
    manifest = json.loads(next(out.glob("builds/*/manifest.json")).read_text())
    assert manifest["family"] == "reranker" and manifest["kind"] == "cross-encoder"
    assert manifest["params"]["train"]["layers"] == 1
    assert manifest["params"]["train"]["device"] == "cpu"  # where it trained; not part of the recipe
    assert "fold 1 is held out" in manifest["params"]["fold_rule"]
    assert {"calibration.json", "model.onnx", "tokenizer.json"} <= set(manifest["files"])
    assert report["calibration"]["fitted"] and report["calibration"]["a"] > 0
    reranker = CrossEncoderReranker(out, backend="torch")
    for topic, (query, _) in TOPICS.items():
        texts = [t for _, t in TOPICS.values()]
        probs = reranker.score(query, texts)
        assert int(np.argmax(probs)) == list(TOPICS).index(topic), (topic, probs)
        assert np.all((probs > 0) & (probs < 1))


def test_training_reports_how_well_the_logit_ranks_held_apart_pairs(tiny_reranker):
    _, report = tiny_reranker
    calibration = report["calibration"]
    assert calibration["pairs_all"] == len(_pairs().calibration)
    assert calibration["logit_auroc_all"] == 1.0  # each toy query's own text scores above the three others


def test_listwise_loss_is_each_positive_against_its_own_querys_negatives():
    import torch

    logits = torch.tensor([2.0, 1.0, 0.0, 3.0, -1.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])  # query A: 2.0+, 1.0-, 0.0+; query B: 3.0-, -1.0+

    def nll(positive: float, negatives: list[float]) -> float:
        return float(np.log(np.exp([positive, *negatives]).sum()) - positive)

    expected = np.mean(
        [nll(2.0, [1.0]), nll(0.0, [1.0]), nll(-1.0, [3.0])]
    )  # never against A's other positive
    assert float(listwise_loss(logits, labels, [3, 2])) == pytest.approx(expected, abs=1e-6)
    shifted = logits + torch.tensor([5.0, 5.0, 5.0, -2.0, -2.0])  # a constant per query changes nothing
    assert float(listwise_loss(shifted, labels, [3, 2])) == pytest.approx(expected, abs=1e-5)
    raised = logits + torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0])  # B's positive moved above its negative
    assert float(listwise_loss(raised, labels, [3, 2])) < expected


def test_the_summed_loss_adds_the_pairs_cross_entropy_to_the_listwise_one():
    import torch

    logits = torch.tensor([2.0, 0.5, -1.0, 0.3, 1.2])
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    listwise = float(listwise_loss(logits, labels, [3, 2]))
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    assert float(query_batch_loss(logits, labels, [3, 2], "listwise")) == pytest.approx(listwise)
    assert float(query_batch_loss(logits, labels, [3, 2], "bce+listwise")) == pytest.approx(listwise + bce)
    # unlike the listwise term alone, the sum is not blind to a shift of a whole query's logits
    shifted = logits + torch.tensor([5.0, 5.0, 5.0, 0.0, 0.0])
    assert float(query_batch_loss(shifted, labels, [3, 2], "listwise")) == pytest.approx(listwise, abs=1e-5)
    assert float(query_batch_loss(shifted, labels, [3, 2], "bce+listwise")) > listwise + bce + 1


def test_listwise_batches_hold_whole_queries_with_both_labels():
    pairs = [
        Pair("q1", "a", 1.0, "s"),
        Pair("q1", "b", 0.0, "s"),
        Pair("q2", "c", 0.0, "s"),
        Pair("q1", "d", 0.0, "t"),
        Pair("q1", "e", 1.0, "t"),
        Pair("q1", "f", 0.0, "s"),
    ]
    # q2 has no relevant candidate; q1 of set t is another query than q1 of set s
    assert query_groups(pairs) == [[0, 1, 5], [3, 4]]
    assert listwise_batch(32, [[0] * 7] * 3) == 5 and listwise_batch(2, [[0] * 7]) == 1


def test_pool_mrr_orders_each_pool_apart_and_counts_ties_against_it():
    pools = ["a", "a", "a", "b", "b", "c"]
    labels = np.array([0, 0, 1, 0, 1, 0])  # pool c has nothing relevant: left out
    assert pool_mrr(pools, np.array([2.0, 1.0, 0.0, 3.0, -1.0, 9.0]), labels) == pytest.approx(
        (1 / 3 + 1 / 2) / 2
    )
    assert pool_mrr(pools, np.array([0.0, 0.0, 0.0, 1.0, 2.0, 0.0]), labels) == pytest.approx((1 / 3 + 1) / 2)


def test_listwise_training_learns_the_pairs_and_is_recorded(tmp_path):
    out = tmp_path / "listwise"
    params = _toy_params(loss="listwise", epochs=100)  # one query a step: more steps than the pairwise toy
    report = train_reranker(_pairs(), out, params, name="lw", show_progress=False)
    manifest = json.loads(next(out.glob("builds/*/manifest.json")).read_text())
    assert manifest["params"]["train"]["loss"] == "listwise"
    assert report["calibration"]["logit_mrr"] == 1.0 and report["calibration"]["mrr"] == 1.0
    reranker = CrossEncoderReranker(out, backend="torch")
    texts = [t for _, t in TOPICS.values()]
    for topic, (query, _) in TOPICS.items():
        assert int(np.argmax(reranker.score(query, texts))) == list(TOPICS).index(topic), topic
    with pytest.raises(
        RagrouteError,
        match="unknown reranker training loss 'hinge'; choose one of bce, listwise, bce\\+listwise",
    ):
        TrainParams(loss="hinge")
    assert TrainParams.from_manifest({"train": {"layers": 2}}).loss == "bce"  # models trained before


def test_a_model_whose_logit_does_not_rank_is_not_published(tmp_path):
    """Held-apart pairs the logit cannot tell apart (one query and text, labelled both ways: the
    same logit up to float rounding) stand for a training run that collapsed: one error line,
    nothing written."""
    from ragroute.rerank.train import MIN_LOGIT_AUROC, check_learned

    query, text = TOPICS["weather"]
    pairs = PairSet(train=_pairs().train, calibration=[Pair(query, text, 1.0), Pair(query, text, 0.0)] * 3)
    out = tmp_path / "collapsed"
    params = _toy_params(epochs=1)
    with pytest.raises(RagrouteError, match=r"did not learn to rank: .* 6 held-apart .* AUROC 0\.[0-5]\d\d "):
        train_reranker(pairs, out, params, name="collapsed", show_progress=False)
    assert not out.exists()
    check_learned({"logit_auroc_all": MIN_LOGIT_AUROC, "pairs_all": 6}, out)  # at the bar: published
    check_learned({"note": "too few calibration pairs: raw sigmoid"}, out)  # nothing to judge


def test_calibration_pairs_of_one_label_are_refused_before_any_training(tmp_path, monkeypatch):
    """Until session 52 a reranker whose held-apart calibration pairs held one label (a small set's
    only calibration pool without its relevant candidate) trained and was published with the raw
    sigmoid as its calibration, in silence; `--draws` trained every draw before the average was
    refused."""
    import ragroute.rerank.train as train_module
    from ragroute.rerank.average import draws_folder, train_draws

    def no_training(*_: Any, **__: Any) -> Any:
        raise AssertionError("trained on pairs whose calibration cannot be fitted")

    monkeypatch.setattr(train_module, "fit_reranker", no_training)
    query, text = TOPICS["weather"]
    for label in (0.0, 1.0):
        pairs = PairSet(train=_pairs().train, calibration=[Pair(query, text, label)] * 3)
        out = tmp_path / f"one-label-{label:g}"
        message = rf"^no calibration can be fitted for the reranker: its 3 calibration pairs .* at {out} "
        with pytest.raises(RagrouteError, match=message):
            train_reranker(pairs, out, _toy_params(), show_progress=False)
        assert not out.exists()
        with pytest.raises(RagrouteError, match="no calibration can be fitted"):
            train_draws(pairs, out, _toy_params(), 2, show_progress=False)
        assert not draws_folder(out).exists() and not out.exists()
    with pytest.raises(RagrouteError, match=r"its 0 calibration pairs"):
        train_reranker(PairSet(train=_pairs().train), tmp_path / "none", _toy_params(), show_progress=False)


def test_a_device_torch_cannot_use_is_one_line_before_any_training(tmp_path):
    out = tmp_path / "nowhere"
    error = r"^cannot train on device 'nosuchdevice' here \(.*\); use --device cpu$"
    with pytest.raises(RagrouteError, match=error):
        train_reranker(_pairs(), out, _toy_params(device="nosuchdevice"), show_progress=False)
    assert not out.exists()


def test_remembered_logits_score_each_pool_once_inside_a_block_only(tiny_reranker):
    import copy

    from ragroute.rerank.cross_encoder import remembered_logits

    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch")
    scored: list[int] = []
    scorer = reranker._scorer

    class Counting:
        def __call__(self, queries, texts):
            scored.append(len(texts))
            return scorer(queries, texts)

    reranker._scorer = Counting()
    query, texts = "forecast rain in paris", [t for _, t in TOPICS.values()]
    fresh = reranker.logits(query, texts)
    with remembered_logits() as memo:
        first = reranker.logits(query, texts)
        again = copy.copy(reranker).logits(query, texts)  # a copy shares the model: read back
        again[:] = 0.0  # a caller's changes do not reach the memo
        assert np.array_equal(reranker.logits(query, texts), fresh) and scored == [len(texts)] * 2
        # another pool, even one made of known pairs, is computed whole: a pair's logit may
        # depend on its batch, so only whole calls are read back
        reranker.logits(query, texts[:2])
        reranker.logits("convert euros to dollars", texts)
    assert np.array_equal(first, fresh) and len(memo) == 3 and scored[2:] == [2, len(texts)]
    with remembered_logits(memo):  # a later block given the memo keeps its logits
        assert np.array_equal(reranker.logits(query, texts), fresh) and len(scored) == 4
    reranker.logits(query, texts)  # outside any block: computed again
    assert len(scored) == 5


@pytest.mark.parametrize(
    ("flags", "with_int8", "without_int8"),
    [
        ({"amx_bf16", "avx512_bf16"}, "torch-bf16", "torch-bf16"),
        ({"avx512_bf16"}, "onnx-int8", "torch-bf16"),
        (set(), "onnx-int8", "torch"),
    ],
    ids=["amx", "avx512-bf16-only", "no-bf16"],
)
def test_auto_backend_follows_the_cpu(tiny_reranker, monkeypatch, flags, with_int8, without_int8):
    """bf16 torch first only with AMX: with AVX512-BF16 alone the int8 export was measured faster;
    without an int8 export, bf16 wherever it is native, else fp32."""
    out, report = tiny_reranker
    monkeypatch.setattr("ragroute.rerank.cross_encoder._cpu_flags", lambda: flags)
    kept_int8 = report["onnx"].get("int8") is None
    assert CrossEncoderReranker(out).backend == (with_int8 if kept_int8 else without_int8)


def test_onnx_copies_agree_with_torch(tiny_reranker):
    out, report = tiny_reranker
    query, texts = "forecast rain in paris", [t for _, t in TOPICS.values()]
    torch_logits = CrossEncoderReranker(out, backend="torch").logits(query, texts)
    onnx_logits = CrossEncoderReranker(out, backend="onnx").logits(query, texts)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-3)
    if report["onnx"].get("int8") is None:  # kept: it stays close to fp32
        int8 = CrossEncoderReranker(out, backend="onnx-int8")
        assert np.max(np.abs(int8.logits(query, texts) - torch_logits)) < 0.35
        # auto prefers bfloat16 torch where the CPU has AMX, else the int8 copy
        assert CrossEncoderReranker(out).backend == ("torch-bf16" if amx_bfloat16() else "onnx-int8")
    bf16 = CrossEncoderReranker(out, backend="torch-bf16")
    assert bf16.backend == "torch-bf16" and bf16.describe()["backend"] == "torch-bf16"
    bf16_logits = bf16.logits(query, texts)
    assert bf16_logits.dtype == np.float32
    np.testing.assert_allclose(bf16_logits, torch_logits, atol=0.05)
    assert np.array_equal(np.argsort(-bf16_logits), np.argsort(-torch_logits))


def test_an_int8_logit_is_a_function_of_its_pair_not_of_its_batch(tiny_reranker, tmp_path):
    """Dynamic int8 quantises activations over the whole batch: a pair scored with others (and their
    padding) read another logit than scored alone, until each pair became its own inference."""
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ragroute.encode.onnx_session import quiet
    from ragroute.rerank.cross_encoder import _scorer

    out, _ = tiny_reranker
    build = next(p.parent for p in out.rglob("model.onnx"))
    shutil.copy(build / "tokenizer.json", tmp_path / "tokenizer.json")
    with quiet():  # the export's own settings, whether or not the fixture kept its int8 copy
        quantize_dynamic(
            build / "model.onnx",
            tmp_path / "model.int8.onnx",
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    for threads in (1, 2):
        scorer = _scorer(tmp_path, "onnx-int8", 32, threads, "toy")
        query = "forecast rain in paris"
        texts = [t for _, t in TOPICS.values()] + ["a much longer candidate about the weather " * 4]
        together = scorer([query] * len(texts), texts)
        alone = np.concatenate([scorer([query], [t]) for t in texts])
        assert np.array_equal(together, alone), threads
        assert np.array_equal(scorer([query] * 2, texts[-2:]), alone[-2:])


@pytest.mark.parametrize("threads", [0, -1, "2", 1.5])
def test_a_thread_count_that_is_not_a_whole_number_above_zero_is_refused(tiny_reranker, threads):
    from ragroute.errors import InvalidArgumentError

    out, _ = tiny_reranker
    with pytest.raises(InvalidArgumentError, match="threads"):
        CrossEncoderReranker(out, backend="onnx", threads=threads)


def test_rerank_reorders_the_pool_and_explains_each_hit(tiny_reranker):
    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch", candidates=3)
    texts = [t for _, t in TOPICS.values()]
    hits = [Hit(doc_id=f"d{i}", score=1.0 - i / 10, rank=i + 1, text=t) for i, t in enumerate(texts)]
    ranked = reranker.rerank("send a message to my team", hits, k=2)
    assert [h.doc_id for h in ranked] == ["d1", "d0"] or ranked[0].doc_id == "d1"
    assert all(h.doc_id != "d3" for h in ranked)  # only the first 3 candidates are read
    explain = ranked[0].explain["rerank"]
    assert explain["stage1_rank"] == 2 and explain["calibrated"] is True
    assert ranked[0].score == pytest.approx(explain["probability"], abs=1e-4)
    assert [h.rank for h in ranked] == [1, 2]
    everything = reranker.rerank("route by car to the airport", hits, k=1, candidates=4)
    assert everything[0].doc_id == "d3"
    # more hits asked for than candidates: that many are reranked (the list was cut to 3 until
    # session 36, whatever k asked)
    assert sorted(h.doc_id for h in reranker.rerank("send a message", hits, k=4)) == ["d0", "d1", "d2", "d3"]


def test_a_candidate_with_nothing_to_read_comes_after_those_read(tiny_reranker, monkeypatch):
    """A hit without title or text (an image without a caption, an empty framework node) was scored
    as the query against nothing, which a model may rate above every real passage (until session
    53); it is not read now, and comes after the candidates read, in stage-1 order, at 0."""
    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch")
    read: list[str] = []
    logits = reranker.logits
    monkeypatch.setattr(reranker, "logits", lambda query, texts: read.extend(texts) or logits(query, texts))
    texts = [t for _, t in TOPICS.values()]
    hits = [Hit(doc_id="blank", score=2.0, rank=1, text="  "), Hit(doc_id="empty", score=1.5, rank=2)]
    hits += [Hit(doc_id=f"d{i}", score=1.0 - i / 10, rank=i + 3, text=t) for i, t in enumerate(texts)]
    ranked = reranker.rerank("send a message to my team", hits, k=len(hits))
    assert read == texts  # only what has words
    assert [h.doc_id for h in ranked][-2:] == ["blank", "empty"] and [h.score for h in ranked][-2:] == [0, 0]
    assert ranked[-1].explain["rerank"]["unread"].startswith("no title or text")
    assert "logit" not in ranked[-1].explain["rerank"] and "logit" in ranked[0].explain["rerank"]
    assert [h.doc_id for h in reranker.rerank("send a message", hits[:2], k=2)] == ["blank", "empty"]


def test_asking_for_more_hits_than_candidates_keeps_the_candidates_scores(tiny_reranker):
    """More hits asked for than ``candidates`` reranks that many, and the stage-1 z-scores are taken
    over the first ``candidates`` (the pool the calibration was fitted on); until session 50 they
    were taken over all of them, and asking for more hits changed the probabilities (and the
    order) of the candidates a smaller k returned."""
    from dataclasses import replace

    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch", candidates=3)
    reranker.calibration = replace(reranker.calibration, d=2.0, fitted=True)
    texts = [t for _, t in TOPICS.values()] * 2
    hits = [Hit(doc_id=f"d{i}", score=10.0 - i**2, rank=i + 1, text=t) for i, t in enumerate(texts)]
    query = "send a message to my team"
    few = {h.doc_id: h.explain["rerank"] for h in reranker.rerank(query, hits, k=3)}
    many = {h.doc_id: h.explain["rerank"] for h in reranker.rerank(query, hits, k=len(hits))}
    assert set(few) == {"d0", "d1", "d2"} and len(many) == len(hits)
    for doc_id, explain in few.items():
        assert many[doc_id]["stage1_z"] == explain["stage1_z"]
        assert many[doc_id]["probability"] == explain["probability"]


def test_candidates_whose_probabilities_round_to_one_value_keep_the_cross_encoders_order(tiny_reranker):
    """A probability rounds to 1.0 above a log-odds of about 37 and was clipped below -50: a steep
    calibration (or a plain CrossEncoder with large logits) made such candidates tie, and they kept
    the stage-1 order whatever the cross-encoder read, until session 48."""
    from ragroute.rerank.cross_encoder import Calibration

    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch")
    query = "forecast rain tomorrow in paris"
    texts = [t for _, t in TOPICS.values()] + ["Forecast | will it rain in paris", "Weather | rain in paris"]
    hits = [Hit(doc_id=f"d{i}", score=1.0 - i / 10, rank=i + 1, text=t) for i, t in enumerate(texts)]
    logits = reranker.logits(query, texts)
    by_logit = [f"d{i}" for i in np.argsort(-logits, kind="stable")]
    assert len(set(logits.tolist())) == len(texts) and by_logit != [h.doc_id for h in hits]
    for shift in (0.0, 2000.0, -2000.0):  # probabilities at 1.0, at the clip, at both ends
        steep = reranker.with_calibration(Calibration(a=100.0, b=shift, fitted=True), "steep")
        ranked = steep.rerank(query, hits, k=len(hits))
        assert [h.doc_id for h in ranked] == by_logit, shift
        assert all(0.0 <= h.score <= 1.0 for h in ranked)


def test_reranker_in_a_routed_pipeline_and_as_llamaindex_postprocessor(tiny_reranker, hashing_encoder):
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragroute.integrations.llamaindex_rerank import RagrouteRerank
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.sources import Source
    from ragroute.types import Document

    out, _ = tiny_reranker
    docs = [Document(id=t, text=text) for t, (_, text) in TOPICS.items()]
    from ragroute.index.build import build_index

    source = Source("tools", build_index(docs, "dense", encoder=hashing_encoder, name="tools"))
    pipeline = pipeline_from_settings(
        [source],
        {"kind": "centroid"},
        encoder=hashing_encoder,
        reranker={"kind": "cross-encoder", "model": str(out)},
    )
    result = pipeline.retrieve("share price of apple today", k=1)
    assert result.hits[0].doc_id == "stocks"
    (step,) = [s.detail for s in result.decision.trace if s.stage == "rerank"]
    assert step["in"] == 4
    # the trace names the model, its build and the calibration that ran (none until session 49)
    reranker = CrossEncoderReranker(out)
    assert step["model"] == reranker.info["name"] and step["build"] == reranker.info["build"]
    assert step["calibration"] == ("documents" if reranker.calibration.fitted else "uncalibrated")
    assert step["candidates"] == 20
    nodes = [NodeWithScore(node=TextNode(text=text, id_=t), score=0.5) for t, (_, text) in TOPICS.items()]
    kept = RagrouteRerank(CrossEncoderReranker(out, backend="torch"), top_n=2).postprocess_nodes(
        nodes, query_str="route by car to the airport"
    )
    assert kept[0].node.id_ == "maps" and len(kept) == 2
    assert kept[0].score == pytest.approx(kept[0].node.metadata["rerank"]["probability"], abs=1e-4)
    # the reranker's numbers stay out of what the LLM reads, and the caller's nodes are unchanged
    from llama_index.core.schema import MetadataMode

    assert "probability" not in kept[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "probability" not in kept[0].node.get_content(metadata_mode=MetadataMode.EMBED)
    assert all("rerank" not in n.node.metadata for n in nodes)
    # a node without a score read 0.0 and fell to the bottom of the pool's stage-1 z (session 36):
    # nodes not all scored, in order, are read by their order
    texts = [text for _, text in TOPICS.values()]
    mixed = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=s)
        for i, (t, s) in enumerate(zip(texts, (0.9, None, 0.5, 0.4)))
    ]
    read = RagrouteRerank(CrossEncoderReranker(out, backend="torch"), top_n=4).postprocess_nodes(
        mixed, query_str="q"
    )
    z = {n.node.id_: n.node.metadata["rerank"]["stage1_z"] for n in read}
    assert z["n0"] > z["n1"] > z["n2"] > z["n3"]
    assert all(n.node.metadata["rerank"]["stage1_from"].startswith("order") for n in read)
    for bad in (0, -1, 2.5):
        with pytest.raises(RagrouteError, match="top_n must be"):
            RagrouteRerank(CrossEncoderReranker(out, backend="torch"), top_n=bad)
    with pytest.raises(RagrouteError, match="needs a reranker object"):
        RagrouteRerank(str(out))
    reranker, hits = CrossEncoderReranker(out, backend="torch"), result.hits
    for bad in (0, -1, None, 1.5):  # -1 returned all but the last hit, None every hit
        with pytest.raises(RagrouteError, match="k must be"):
            reranker.rerank("share price", hits, bad)
    for bad in (0, -3):  # until session 44 candidates=0 reranked the default 20, silently
        with pytest.raises(RagrouteError, match="candidates must be"):
            reranker.rerank("share price", hits, 1, candidates=bad)
    for query in ("", None):  # None was scored as the text "None"
        with pytest.raises(RagrouteError, match="query"):
            reranker.rerank(query, hits, 1)
    with pytest.raises(RagrouteError, match="texts must be a list, not a single string"):
        reranker.score("mayo", "split mayo")
    for setting in ({"batch_size": 0}, {"candidates": "x"}, {"max_length": 0}):
        with pytest.raises(RagrouteError, match=f"{next(iter(setting))} must be"):
            CrossEncoderReranker(out, backend="torch", **setting)


def test_rerank_score_says_when_a_model_is_not_calibrated(tiny_reranker, tmp_path):
    """Until session 44 `rerank score` printed any CrossEncoder's sigmoid as a "calibrated
    probability" (its help said so), and its --backend help said auto falls back to an int8 ONNX
    export, which a plain CrossEncoder folder never has."""
    import shutil

    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.store import open_snapshot

    out, _ = tiny_reranker
    plain = tmp_path / "plain"  # the same model as a plain sentence-transformers folder
    shutil.copytree(open_snapshot(out, family="reranker").path, plain)
    for name in ("manifest.json", "calibration.json", "model.onnx", "model.int8.onnx"):
        (plain / name).unlink(missing_ok=True)
    args = ["rerank", "score", "--backend", "torch"]
    calibrated = CliRunner().invoke(main, [*args, str(out), "send a message to my team", "Mail | send"])
    uncalibrated = CliRunner().invoke(main, [*args, str(plain), "send a message to my team", "Mail | send"])
    assert calibrated.exit_code == 0 and uncalibrated.exit_code == 0, uncalibrated.output
    assert "no fitted calibration" not in calibrated.output
    assert "no fitted calibration" in uncalibrated.output
    help_text = CliRunner().invoke(main, ["rerank", "score", "--help"]).output
    assert "calibrated probability" not in help_text and "torch only" in help_text


def test_unloadable_models_and_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(RagrouteError, match="no-such-reranker"):
        CrossEncoderReranker(tmp_path / "no-such-reranker")
    with pytest.raises(RagrouteError, match="unknown reranker backend"):
        CrossEncoderReranker(tmp_path, backend="gpu")
    from ragroute.rerank.cross_encoder import cross_encoder_reranker

    with pytest.raises(
        RagrouteError, match="^reranker: unknown cross-encoder reranker key .modle.; did you mean .model."
    ):
        cross_encoder_reranker({"kind": "cross-encoder", "modle": "x"}, None)


def _plain_copy(out, folder, drop=()):
    """The trained reranker's model as a plain sentence-transformers folder, less ``drop``."""
    import shutil

    from ragroute.store import open_snapshot

    shutil.copytree(open_snapshot(out, family="reranker").path, folder)
    for name in ("manifest.json", "calibration.json", "model.onnx", "model.int8.onnx", *drop):
        (folder / name).unlink(missing_ok=True)
    return folder


def test_a_model_folder_that_would_score_at_random_is_one_line(tiny_reranker, tmp_path):
    """A sentence embedding model (no classifier head), a checkpoint of another architecture and a
    folder without its tokenizer files loaded as rerankers until session 51: the missing weights
    random (another order at every load), every word [UNK], and no error."""
    from ragroute.encode.resolve import resolve_model

    out, _ = tiny_reranker
    embedder = resolve_model("all-MiniLM-L6-v2").path  # the bundled bi-encoder
    with pytest.raises(RagrouteError, match=r"cannot be loaded: 2 of the \d+ weights .*classifier") as caught:
        CrossEncoderReranker(embedder, backend="torch")
    assert str(embedder) in str(caught.value) and "\n" not in str(caught.value)
    other = _plain_copy(out, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2ForSequenceClassification"])
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(RagrouteError, match="other cannot be loaded: .* would be random"):
        CrossEncoderReranker(other, backend="torch")
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
    untokenized = _plain_copy(out, tmp_path / "untokenized", drop=tokenizer_files)
    with pytest.raises(RagrouteError, match="untokenized cannot be loaded: its tokenizer knows only"):
        CrossEncoderReranker(untokenized, backend="torch")
    # the same model, whole, still loads and scores
    whole = CrossEncoderReranker(_plain_copy(out, tmp_path / "whole"), backend="torch")
    assert whole.score("q", ["t"]).shape == (1,)


def test_an_onnx_export_onnxruntime_cannot_read_is_one_line_naming_the_model(tiny_reranker, tmp_path):
    """An export this onnxruntime cannot parse, or an artifact without a readable tokenizer.json,
    raised onnxruntime's InvalidProtobuf or the tokenizers' bare Exception until session 51 (a
    traceback on the command line)."""
    import shutil

    from ragroute.store import open_snapshot, write_artifact

    out, _ = tiny_reranker
    built = open_snapshot(out, family="reranker").path
    for name, damage in (("garbled", "model.onnx"), ("untokenized", "tokenizer.json")):
        with write_artifact(tmp_path / name, "reranker", "cross-encoder") as build:
            for file in ("calibration.json", "config.json", "model.onnx", "tokenizer.json"):
                shutil.copy(built / file, build.path / file)
            (build.path / damage).write_bytes(b"not a model")
        with pytest.raises(RagrouteError, match=f"reranker model .*{name} cannot be loaded: ") as caught:
            CrossEncoderReranker(tmp_path / name, backend="onnx")
        assert "\n" not in str(caught.value)


def test_query_folds_are_stable_and_ignore_the_parent_folder():
    folds = [query_fold("toollens", str(i)) for i in range(400)]
    assert 150 < sum(folds) < 250  # about half held out
    assert query_fold("glasgow/cran", "q7") == query_fold("cran", "q7")
    assert folds == [query_fold("toollens", str(i)) for i in range(400)]


def _write_beir(folder, topics, prefix):
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"{prefix}-{t}", "title": "", "text": text} for t, (_, text) in topics.items()]
    queries = [{"_id": f"{prefix}-q{i}", "text": q} for i, (q, _) in enumerate(topics.values())]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus))
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{prefix}-q{i}\t{prefix}-{t}\t1" for i, t in enumerate(topics)]
    (folder / "qrels" / "dev.tsv").write_text("\n".join(lines))


def test_labelled_sets_read_beir_folders_with_several_corpus_files(tmp_path):
    from ragroute.rerank.train import expand_roots, load_labelled_set

    items = list(TOPICS.items())
    _write_beir(tmp_path / "sets" / "one", dict(items[:2]), "one")
    two = tmp_path / "sets" / "two"  # TAT-QA's layout: tables and paragraphs in two corpus files
    _write_beir(two, dict(items[2:]), "two")
    lines = (two / "corpus.jsonl").read_text().splitlines()
    (two / "corpus_tables.jsonl").write_text(lines[0])
    (two / "corpus_paragraphs.jsonl").write_text("\n".join(lines[1:]))
    (two / "corpus.jsonl").unlink()
    assert [name for name, _ in expand_roots([tmp_path / "sets"])] == ["sets/one", "sets/two"]
    assert expand_roots([two]) == [("two", two)]
    loaded = load_labelled_set(two)
    assert sorted(d.id for d in loaded.documents) == sorted(f"two-{t}" for t, _ in items[2:])
    assert set(loaded.qrels) == {f"two-q{i}" for i in range(len(items) - 2)}
    (tmp_path / "empty").mkdir()
    with pytest.raises(RagrouteError, match="neither a BEIR folder"):
        load_labelled_set(tmp_path / "empty")


def test_bench_rerank_scores_only_held_out_queries_through_pipelines(
    tiny_reranker, tmp_path, hashing_encoder
):
    from ragroute.evaluation.bench_rerank import format_report, run_rerank_bench
    from ragroute.rerank.train import query_fold

    out, _ = tiny_reranker
    items = list(TOPICS.items())
    _write_beir(tmp_path / "sets" / "a", dict(items[:2]), "a")
    _write_beir(tmp_path / "sets" / "b", dict(items[2:]), "b")
    _write_beir(tmp_path / "sets" / "c", dict(items[:1]), "c")  # judged on another split only
    (tmp_path / "sets" / "c" / "qrels" / "dev.tsv").rename(tmp_path / "sets" / "c" / "qrels" / "test.tsv")
    (tmp_path / "sets" / "notes").mkdir()
    said: list[str] = []
    result = run_rerank_bench(tmp_path / "sets", hashing_encoder, out, backend="torch", log=said.append)
    held_out = {name: sum(query_fold(name, f"{name}-q{i}") == 1 for i in range(2)) for name in ("a", "b")}
    assert {n: r["queries"] for n, r in result["collections"].items()} == {
        f"sets/{n}": c for n, c in held_out.items() if c
    }
    # every collection left out is named, with why
    assert result["skipped"] == {
        "sets/notes": "not a BEIR collection (no corpus.jsonl)",
        "sets/c": "no qrels/dev.tsv (splits: test)",
        **{f"sets/{n}": "no dev query in the held-out fold" for n, c in held_out.items() if not c},
    }
    assert said == [f"skipped {name}: {why}" for name, why in result["skipped"].items()]
    assert "skipped sets/c: no qrels/dev.tsv" in format_report(result)
    for row in result["collections"].values():
        assert {"dense", "dense+rerank", "hybrid", "hybrid+rerank"} <= set(row)
    assert result["queries"].startswith("fold-1")
    assert result["encoder"] == hashing_encoder.describe()  # which encoder (and backend) stage 1 ran
    if len(result["collections"]) > 1:
        assert result["routed"]["queries"] == sum(held_out.values())
    assert "macro nDCG@10" in format_report(result)
    # the macro gains again, paired per query, with intervals resampled within collections
    for method in ("dense", "hybrid"):
        gain = result["rerank_gain_ci95"][method]
        assert gain["diff"] == pytest.approx(result["rerank_gain"][method], abs=2e-4)
        assert gain["ci95"][0] <= gain["diff"] <= gain["ci95"][1]
        assert gain["queries"] == sum(held_out.values())
    assert "reranker gain over hybrid, macro nDCG@10 (paired per query" in format_report(result)


def test_bench_rerank_macro_leaves_out_collections_with_nothing_to_score(
    tiny_reranker, tmp_path, hashing_encoder
):
    # a collection whose queries are all judged grade 0 has no nDCG@10: it counted as 0 in the macro
    # average over collections (halving it here)
    from ragroute.evaluation.bench_rerank import run_rerank_bench

    out, _ = tiny_reranker
    _write_beir(tmp_path / "sets" / "a", TOPICS, "a")
    _write_beir(tmp_path / "sets" / "z", TOPICS, "z")
    qrels = tmp_path / "sets" / "z" / "qrels" / "dev.tsv"
    qrels.write_text(qrels.read_text().replace("\t1", "\t0"))
    result = run_rerank_bench(tmp_path / "sets", hashing_encoder, out, backend="torch")
    a, z = result["collections"]["sets/a"], result["collections"]["sets/z"]
    for label in ("dense", "dense+rerank", "hybrid", "hybrid+rerank"):
        assert z[label]["ndcg@10"] == 0.0 and a[label]["ndcg@10"] > 0.0
        assert result["macro_ndcg@10"][label] == a[label]["ndcg@10"]
    assert result["routed"]["hybrid routed"]["ndcg@10"] > 0.0


def test_bench_rerank_leaves_out_the_routed_row_when_ids_repeat_across_collections():
    # one qrels over all collections would judge one collection's query by another's judgements
    from ragroute.context import QueryContext
    from ragroute.evaluation.bench_rerank import _repeated_ids

    def part(*qids):
        return ("x", None, [QueryContext("t", id=q) for q in qids], {})

    assert _repeated_ids([part("q1"), part("q2")], [{"d1"}, {"d2"}]) == ""
    assert _repeated_ids([part("q1", "q2"), part("q2")], [{"d1"}, {"d2"}]) == "query id 'q2'"
    assert _repeated_ids([part("q1"), part("q2")], [{"0", "1"}, {"1"}]) == "document id '1'"


def test_bench_rerank_routed_row_is_macro_averaged_over_collections(hashing_encoder):
    # the routed row averaged nDCG@10 over all queries (micro) beside macro per-collection rows: the
    # largest collection weighed most (Glasgow: cran, 113 of 317 dev queries). Here collection a's one
    # query finds its document first (1.0) and b's three are judged on a document that does not exist
    # (0.0): macro 0.5, micro 0.25.
    from ragroute.context import QueryContext
    from ragroute.evaluation.bench_rerank import routed_rows
    from ragroute.index.build import build_index
    from ragroute.route.sources import Source
    from ragroute.types import Document

    def part(name, docs, queries):
        index = build_index([Document(id=i, text=t) for i, t in docs], "hybrid", encoder=hashing_encoder)
        contexts = [QueryContext(t, id=q) for q, t in queries]
        for context in contexts:
            context.set_vector(hashing_encoder, hashing_encoder.encode_queries([context.text])[0])
        qrels = {q: {f"{name}1" if name == "a" else "missing": 1} for q, _ in queries}
        return name, Source(name, index), contexts, qrels

    a = part("a", [("a1", "cats purr loudly"), ("a2", "kittens nap in sun")], [("qa", "cats purr loudly")])
    b = part(
        "b",
        [("b1", "ships sail the sea"), ("b2", "harbours hold boats")],
        [("qb1", "ships sail"), ("qb2", "boats harbour"), ("qb3", "sea voyage")],
    )
    routed = routed_rows([a, b], hashing_encoder, None)
    assert routed["queries"] == 4
    assert routed["hybrid routed"]["ndcg@10"] == pytest.approx(0.5)


def test_recalibration_publishes_a_new_build_with_the_same_model(tiny_reranker, tmp_path):
    import shutil

    from ragroute.rerank.train import recalibrate
    from ragroute.store import open_snapshot

    source, _ = tiny_reranker
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    before = open_snapshot(out, family="reranker").manifest
    pairs = []
    for topic, (query, _) in TOPICS.items():
        for rank, (other, (_, candidate)) in enumerate(TOPICS.items(), 1):
            pairs.append(Pair(query, candidate, float(other == topic), "toy", rank))
    report = recalibrate(out, pairs)
    after = open_snapshot(out, family="reranker").manifest
    assert after.build != before.build and report["fitted"] and report["pairs"] == 16
    assert {n: f["sha256"] for n, f in after.files.items() if n != "calibration.json"} == {
        n: f["sha256"] for n, f in before.files.items() if n != "calibration.json"
    }
    assert after.params["report"]["calibration"]["c"] == pytest.approx(report["c"])
    reranker = CrossEncoderReranker(out, backend="torch")
    assert reranker.calibration.c == pytest.approx(report["c"]) and reranker.calibration.fitted


def test_recalibration_without_both_labels_keeps_the_fitted_calibration(tiny_reranker, tmp_path):
    """Until session 44 calibration pairs of one label only (or none: `rerank calibrate --data`
    naming a set that gave no pairs) published the raw sigmoid over the fitted calibration,
    silently: every probability from then on was uncalibrated (``calibrated: false``)."""
    import shutil

    from ragroute.rerank.train import recalibrate
    from ragroute.store import open_snapshot

    source, _ = tiny_reranker
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    before = open_snapshot(out, family="reranker").manifest.build
    query, text = next(iter(TOPICS.values()))
    for pairs in ([], [Pair(query, text, 0.0, "toy", 1)] * 3):
        with pytest.raises(RagrouteError, match="no calibration can be fitted.*nothing was published"):
            recalibrate(out, pairs)
    assert open_snapshot(out, family="reranker").manifest.build == before
    assert CrossEncoderReranker(out, backend="torch").calibration.fitted


def _topic_pairs(kind: str) -> list[Pair]:
    """Each toy query's pool of the four topics, ranked as listed, as a ``kind`` first stage made it."""
    return [
        Pair(query, candidate, float(other == topic), "toy", rank, 0.0, kind)
        for topic, (query, _) in TOPICS.items()
        for rank, (other, (_, candidate)) in enumerate(TOPICS.items(), 1)
    ]


def test_recalibrating_on_one_kind_of_first_stage_keeps_the_other_kinds_calibration(tiny_reranker, tmp_path):
    """`rerank calibrate --data` naming document sets only dropped the skills calibration (the skill
    router then read the documents one, silently), and naming skill sets only refitted the main
    (documents) calibration on skill pools, until session 48. The model is unchanged, so a first
    stage the new pairs say nothing about keeps the calibration it had, and the report says so."""
    import shutil

    from ragroute.rerank.train import recalibrate

    source, _ = tiny_reranker
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    recalibrate(out, _topic_pairs("documents") + _topic_pairs("skills"))
    before = CrossEncoderReranker(out, backend="torch").calibration
    assert "skills" in before.by_stage1
    report = recalibrate(out, _topic_pairs("documents"))
    after = CrossEncoderReranker(out, backend="torch").calibration
    assert after.by_stage1 == before.by_stage1 and report["kept"] == ["skills"]
    report = recalibrate(out, _topic_pairs("skills"))
    again = CrossEncoderReranker(out, backend="torch").calibration
    assert (again.a, again.b, again.c, again.d) == (after.a, after.b, after.c, after.d)
    assert report["kept"] == ["documents"] and "skills" in report


def test_recalibration_scores_the_model_under_its_writer_lock(tiny_reranker, tmp_path, monkeypatch):
    """Until session 41 the model was loaded and scored before the lock was taken: a `rerank train`
    publishing meanwhile had its new weights published with a calibration fitted on the old ones.
    Another writer trying during the fit now finds the artifact busy."""
    import shutil
    import threading

    from ragroute.rerank import train
    from ragroute.store.locks import LOCK_NAME, ArtifactBusyError, writer_lock

    source, _ = tiny_reranker
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    pairs = []
    for topic, (query, _) in TOPICS.items():
        for rank, (other, (_, candidate)) in enumerate(TOPICS.items(), 1):
            pairs.append(Pair(query, candidate, float(other == topic), "toy", rank))
    seen: list[str] = []

    def other_writer() -> None:
        try:
            with writer_lock(out / LOCK_NAME, str(out), timeout=0):
                seen.append("free")
        except ArtifactBusyError:
            seen.append("busy")

    real_fit = train.fit_platt

    def fit_while_another_writer_tries(*args, **kwargs):
        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join()
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit_platt", fit_while_another_writer_tries)
    assert train.recalibrate(out, pairs)["fitted"]
    assert seen == ["busy"]


def test_calibration_weighs_the_stage1_score_within_its_pool():
    from ragroute.rerank.cross_encoder import Calibration, pool_zscores
    from ragroute.rerank.train import fit_platt

    assert np.allclose(pool_zscores([3.0, 3.0, 3.0]), 0.0)  # a pool that does not vary says nothing
    z = pool_zscores([2.0, 1.0, float("-inf"), 0.0])  # non-finite counts as the pool's lowest
    assert z[0] > z[1] > z[3] == pytest.approx(z[2]) and z.mean() == pytest.approx(0.0)
    assert Calibration.from_dict({"a": 1.0, "b": 0.0, "c": 2.0, "fitted": True}).d == 0.0  # older artifacts
    # logits are noise; whether a candidate is relevant is how far its stage-1 score stands out
    rng = np.random.default_rng(0)
    pairs, logits = [], []
    for q in range(60):
        scores = np.sort(rng.normal(size=10))[::-1]
        scores[0] += 3.0 * (q % 2)  # half the pools have a clear winner, which is the relevant one
        zs = pool_zscores(scores)
        for r in range(10):
            pairs.append(Pair(f"q{q}", f"t{r}", float(r == 0 and q % 2 == 1), "toy", r + 1, float(zs[r])))
            logits.append(rng.normal())
    by_text = dict(zip(((p.query, p.text) for p in pairs), logits))
    calibration, _ = fit_platt(pairs, lambda batch: np.array([by_text[(p.query, p.text)] for p in batch]))
    assert calibration.d > 1.0
    without, _ = fit_platt(
        [Pair(p.query, p.text, p.label, p.set_name, p.stage1_rank) for p in pairs],
        lambda batch: np.array([by_text[(p.query, p.text)] for p in batch]),
    )
    assert without.d == 0.0  # pairs without stage-1 scores fit the rank prior only


def test_rerank_reads_the_stage1_scores_and_explains_them(tiny_reranker):
    from dataclasses import replace

    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch", candidates=4)
    text = TOPICS["weather"][1]
    # four copies of one text: equal logits, so only the stage-1 prior can order them
    hits = [Hit(doc_id=f"d{i}", score=s, rank=i + 1, text=text) for i, s in enumerate([1.0, 0.9, 0.2, 0.1])]
    reranker.calibration = replace(reranker.calibration, c=0.0, d=0.0)
    flat = reranker.rerank("forecast rain tomorrow in paris", hits, k=4)
    assert len({h.score for h in flat}) == 1 and [h.doc_id for h in flat] == ["d0", "d1", "d2", "d3"]
    reranker.calibration = replace(reranker.calibration, d=2.0)
    ranked = reranker.rerank("forecast rain tomorrow in paris", hits, k=4)
    assert [round(h.score, 6) for h in ranked] == sorted((round(h.score, 6) for h in ranked), reverse=True)
    assert ranked[0].score > ranked[-1].score
    assert ranked[0].explain["rerank"]["stage1_z"] > 0 > ranked[-1].explain["rerank"]["stage1_z"]


def test_rerank_reads_a_pipelines_fused_values_as_the_stage1_scores(tiny_reranker):
    """A pipeline's hits carry a cosine-scale similarity as their score and the value that ordered
    them in explain["fused"]; the calibration's stage1_z was fitted on the first stage's own scores,
    but the fused list's cosine scores were standardised instead (out of step with the order)."""
    from dataclasses import replace

    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch", candidates=4)
    reranker.calibration = replace(reranker.calibration, c=0.0, d=2.0)
    text = TOPICS["weather"][1]
    fused = [0.033, 0.032, 0.016, 0.015]  # the order's values (RRF) ...
    cosine = [0.40, 0.70, 0.30, 0.65]  # ... and the cosine-scale scores a pipeline's hits carry
    hits = [
        Hit(doc_id=f"d{i}", score=c, rank=i + 1, text=text, explain={"fused": f})
        for i, (f, c) in enumerate(zip(fused, cosine))
    ]
    ranked = reranker.rerank("forecast rain tomorrow in paris", hits, k=4)
    assert [h.doc_id for h in ranked] == ["d0", "d1", "d2", "d3"]  # equal logits: the fused order
    assert [h.explain["rerank"]["stage1_score"] for h in ranked] == fused
    # a hit without a usable fused value is read by its score, as before
    plain = [replace(h, explain={"fused": float("nan")}) for h in hits]
    by_score = reranker.rerank("forecast rain tomorrow in paris", plain, k=4)
    assert [h.doc_id for h in by_score] == ["d1", "d3", "d0", "d2"]


def test_calibration_scores_each_distinct_pair_once():
    """A pair that occurs several times gets one logit: a scorer whose rows of one batch round
    differently (as CPU kernels may) cannot make a constant model look as if it ranked."""
    from ragroute.rerank.train import fit_platt

    pairs = [Pair("q", "same text", float(i % 2)) for i in range(6)] + [Pair("q2", "t", 1.0)]
    seen: list[str] = []

    def noisy(batch):  # each row a little different, by its place in the batch
        seen.extend(p.text for p in batch)
        return np.array([1.0 + 1e-6 * i for i in range(len(batch))])

    _, report = fit_platt(pairs, noisy)
    assert seen == ["same text", "t"]  # one logit per distinct (query, text)
    # the six copies tie (AUROC counts ties half); the seventh, positive, scores above the negatives
    assert report["logit_auroc_all"] == round((3 * 3 * 0.5 + 3 * 1.0) / (4 * 3), 4)


def test_each_first_stage_gets_its_own_calibration(tiny_reranker, hashing_encoder):
    from ragroute.rerank.cross_encoder import Calibration
    from ragroute.rerank.train import fit_platt
    from ragroute.skills import Catalogue, Skill
    from ragroute.skills.router import SkillRouter

    rng = np.random.default_rng(1)
    pairs, logits = [], {}
    for kind in ("documents", "skills"):
        for q in range(40):
            for r in range(10):
                relevant = r == 0 and q % 2 == 0
                # after documents the logit tells; after skills the stage-1 lead does
                logit = (3.0 if relevant else -1.0) + rng.normal() if kind == "documents" else rng.normal()
                z = (2.5 if relevant else -0.3) if kind == "skills" else rng.normal()
                pairs.append(Pair(f"{kind}{q}", f"t{r}", float(relevant), kind, r + 1, z, kind))
                logits[(f"{kind}{q}", f"t{r}")] = logit
    calibration, report = fit_platt(pairs, lambda batch: np.array([logits[(p.query, p.text)] for p in batch]))
    skills = calibration.for_stage1("skills")
    assert calibration.a > 1.0 and skills.d > calibration.d and skills.a < calibration.a
    assert report["pairs"] == 400 and report["skills"]["pairs"] == 400
    assert calibration.for_stage1("graph") is calibration  # no calibration of its own: the main one
    assert Calibration.from_dict(calibration.to_dict()) == calibration  # saved and loaded whole
    # a reranker over the skill router's first stage uses the skills calibration, sharing its model
    out, _ = tiny_reranker
    reranker = CrossEncoderReranker(out, backend="torch")
    reranker.calibration = calibration
    after_skills = reranker.for_stage1("skills")
    assert after_skills.calibration == skills and after_skills._scorer is reranker._scorer
    assert after_skills.describe()["calibration_stage1"] == "skills" and reranker.stage1 == "documents"
    catalogue = Catalogue([Skill(f"s{i}", f"tool{i}", f"does thing {i}", f"body {i}") for i in range(12)])
    router = SkillRouter(catalogue, reranker, encoder=hashing_encoder)
    assert router.reranker.calibration == skills and router.describe()["reranker"]["calibration"] == "skills"
    assert router.with_options(reranker=reranker).reranker.calibration == skills


def test_recalibrating_some_sets_draws_pairs_as_training_drew_them(tmp_path):
    from ragroute.rerank.train import calibration_pairs

    items = list(TOPICS.items())
    for name in ("a", "b", "c"):
        _write_beir(tmp_path / name, dict(items[:2]), name)
    a, b, c = (tmp_path / n for n in "abc")
    calls: list[list[str]] = []

    def build(roots):
        calls.append([r.name for r in roots])
        return PairSet(calibration=[Pair("q", "t", 1.0, r.name) for r in roots])

    # only b's pairs, but drawn over a then b: the held-apart queries depend on that sequence
    assert [p.set_name for p in calibration_pairs([a, b], [b], build)] == ["b"] and calls[-1] == ["a", "b"]
    assert [p.set_name for p in calibration_pairs([a, b], [c], build)] == ["c"]
    assert calls[-1] == ["a", "b", "c"]  # a set never trained on comes after the training ones
    assert [p.set_name for p in calibration_pairs([a, b], [], build)] == ["a", "b"]


def test_identifier_titles_are_read_as_words_only_by_models_trained_so(tiny_reranker, tmp_path):
    from ragroute.rerank.cross_encoder import candidate_text
    from ragroute.store import open_snapshot, write_artifact

    tool = Hit(doc_id="t", score=1.0, title="analyzeSpeechEmotion", text="Detect emotion in audio")
    assert candidate_text(tool) == "analyzeSpeechEmotion | Detect emotion in audio"
    read = candidate_text(tool, title_words=True)
    assert read == "analyzeSpeechEmotion analyze Speech Emotion | Detect emotion in audio"
    titled = Hit(doc_id="d", score=1.0, title="Spider-Man 3", text="a 2007 film")
    assert candidate_text(titled, title_words=True) == "Spider-Man 3 | a 2007 film"  # a title of words: as is
    assert candidate_text(Hit(doc_id="x", score=1.0, title="Jaws", text="t"), title_words=True) == "Jaws | t"

    def read_by(reranker):
        seen: list[str] = []
        reranker.logits = lambda query, texts: seen.extend(texts) or np.zeros(len(texts), dtype=np.float32)
        reranker.rerank("what does this voice feel", [tool], k=1)
        return seen

    out, _ = tiny_reranker  # trained with the default title_words=True: reads the words
    assert read_by(CrossEncoderReranker(out, backend="torch")) == [read]
    # a model whose manifest predates the setting reads the raw title, as it was trained
    snapshot = open_snapshot(out, family="reranker")
    params = json.loads(json.dumps(snapshot.manifest.params))
    del params["train"]["title_words"]
    old = tmp_path / "old"
    with write_artifact(old, "reranker", "cross-encoder", name="old", params=params) as pending:
        for name in snapshot.manifest.files:
            target = pending.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(snapshot.file(name).read_bytes())
    assert read_by(CrossEncoderReranker(old, backend="torch")) == [
        "analyzeSpeechEmotion | Detect emotion in audio"
    ]


def test_calibration_only_sets_give_calibration_pairs_and_leave_training_pairs_alone(hashing_encoder):
    from ragroute.rerank.train import LabelledSet, build_pairs, query_fold
    from ragroute.types import Document

    def labelled(name: str) -> LabelledSet:
        ids = [f"q{i}" for i in range(60) if query_fold(name, f"q{i}") == 0][:20]
        docs = [Document(id=f"d{i}", text=f"{t} number {i}", title=f"tool{i}") for i, t in enumerate(ids)]
        return LabelledSet(
            name,
            docs,
            {q: f"{q} number {i}" for i, q in enumerate(ids)},
            {q: {f"d{i}": 1} for i, q in enumerate(ids)},
        )

    params = TrainParams(hard_pool=5, calibration_share=0.2)
    alone = build_pairs([labelled("a")], hashing_encoder, params)
    both = build_pairs([labelled("a"), labelled("b")], hashing_encoder, params, calibration_only={"b"})
    key = lambda p: (p.set_name, p.query, p.text, p.label)  # noqa: E731
    assert sorted(map(key, both.train)) == sorted(map(key, alone.train))  # b never trained on
    assert {p.set_name for p in both.calibration} == {"a", "b"}
    assert (
        len({p.query for p in both.calibration if p.set_name == "b"}) == 4
    )  # its held-apart fifth, whole pools
    assert [key(p) for p in both.calibration if p.set_name == "a"] == [key(p) for p in alone.calibration]
    assert both.counts["b"]["calibration_only"] == 1 and both.counts["b"]["queries"] == 4


def test_recalibration_defaults_to_the_sets_the_model_was_calibrated_on():
    from pathlib import Path

    from ragroute.rerank.train import calibration_sets

    default = ("d1", "d2")
    assert calibration_sets({}, [], default) == ([Path("d1"), Path("d2")], [])  # old manifests
    data = {"roots": ["a", "b"], "calibration_roots": ["t"]}
    assert calibration_sets(data, [], default) == ([Path("a"), Path("b")], [Path("a"), Path("b"), Path("t")])
    assert calibration_sets(data, [Path("b")], default) == ([Path("a"), Path("b")], [Path("b")])
    assert calibration_sets({"roots": ["a"], "calibration_roots": []}, [], default) == ([Path("a")], [])


def test_calibration_only_sets_default_to_tatqa_when_it_exists(tmp_path, monkeypatch):
    from pathlib import Path

    from ragroute.cli.rerank import DEFAULT_CALIBRATION_DATA, calibration_only_roots

    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")  # ../shared/data/tatqa is then inside tmp_path: not there yet
    said: list[str] = []
    assert calibration_only_roots([Path("a")], [], say=said.append) == []
    assert said and DEFAULT_CALIBRATION_DATA[0] in said[0] and "not found" in said[0]
    Path(DEFAULT_CALIBRATION_DATA[0]).mkdir(parents=True)
    assert calibration_only_roots([Path("a")], []) == [Path(DEFAULT_CALIBRATION_DATA[0])]
    # given sets are taken as given (a missing one fails later, with the --data check); trained ones left out
    assert calibration_only_roots([Path("a")], [Path("a"), Path("x")]) == [Path("x")]


def test_compact_body_drops_what_the_body_repeats_and_keeps_the_rest():
    from ragroute.skills.compact import compact_body

    seal = json.dumps(
        {
            "api_name": "getMatchInfo",
            "api_description": "Retrieve information about a football match",
            "field": "Sports/Football",
            "parameters": {"match_id": {"type": "str", "description": "The ID of the match"}},
            "see_also": "getMatchInfoV2",
        }
    )
    assert compact_body(seal, "getMatchInfo", "Retrieve information about a football match") == (
        "field: Sports/Football, parameters: match_id: type: str, description: The ID of the match, "
        "see_also: getMatchInfoV2"  # a longer identifier holding the name is another tool: kept
    )
    # in JSON only whole values are repeats: the name inside another value's words stays
    donate = '{"api_name": "donate", "amount": "Amount to donate", "n": 2, "x": null}'
    assert compact_body(donate, "donate") == "amount: Amount to donate, n: 2"
    toollens = (
        "category_name:Food, tool_name:Recipes, api_name:Suggestions, api_description:Suggest recipes "
        'from a list of ingredients, required_params: [{"name": "q", "type": "STRING"}]'
    )
    assert compact_body(toollens, "Recipes: Suggestions", "Suggest recipes from a list of ingredients") == (
        "category_name:Food, tool_name:Recipes, api_name:Suggestions, required_params: name: q, type: STRING"
    )
    # prose keeps every word and mark but the repeated description; a short description stays
    prose = 'Converts units of length.\n\nUse "km" or "mi" with convert.'
    assert compact_body(prose, "convert", "Converts units of length.") == 'Use "km" or "mi" with .'
    assert compact_body(prose, "", "Converts.") == prose.replace("\n\n", " ")
    assert compact_body("Converts units of length", "", "Converts units of length") == ""


def test_compact_bodies_read_skill_candidates_only_for_models_trained_so(tiny_reranker, tmp_path):
    from ragroute.rerank.cross_encoder import candidate_text, reading
    from ragroute.skills.records import Skill
    from ragroute.store import open_snapshot

    skill = Skill(
        "getMatchInfo",
        "getMatchInfo",
        "Retrieve a football match",
        '{"api_name": "getMatchInfo", "api_description": "Retrieve a football match", "field": "Sports"}',
    )
    doc = skill.to_document()
    hit = Hit(doc_id=doc.id, score=1.0, title=doc.title, text=doc.text, metadata=doc.metadata)
    read = candidate_text(hit, compact_bodies=True)
    assert read == "getMatchInfo | Retrieve a football match\n\nfield: Sports"
    assert candidate_text(hit) == f"getMatchInfo | {doc.text}"  # the body as it is
    assert candidate_text(hit, body=False, compact_bodies=True) == "getMatchInfo | Retrieve a football match"
    passage = Hit(doc_id="p", score=1.0, title="Paris", text='Paris is a city. {"a": "b"}')
    assert candidate_text(passage, compact_bodies=True) == candidate_text(passage)  # not a skill: as is

    out, _ = tiny_reranker  # trained with the defaults: title words on, compact bodies opt-in
    params = open_snapshot(out, family="reranker").manifest.params
    assert reading(params) == {"title_words": True, "compact_bodies": False}
    assert CrossEncoderReranker(out, backend="torch").reading == reading(params)
    compact = {**params, "train": {**params["train"], "compact_bodies": True}}
    assert reading(compact) == {"title_words": True, "compact_bodies": True}
    before = {**params, "train": {k: v for k, v in params["train"].items() if k != "compact_bodies"}}
    assert reading(before) == {"title_words": True, "compact_bodies": False}  # as such models were trained
    assert reading({}) == {"title_words": False, "compact_bodies": False}


def test_a_draw_changes_the_model_and_not_the_pairs(hashing_encoder):
    from ragroute.rerank.train import LabelledSet, build_pairs
    from ragroute.types import Document

    ids = [f"q{i}" for i in range(60) if query_fold("s", f"q{i}") == 0][:20]
    docs = [Document(id=f"d{i}", text=f"{q} number {i}", title=f"tool{i}") for i, q in enumerate(ids)]
    labelled = LabelledSet(
        "s",
        docs,
        {q: f"{q} number {i}" for i, q in enumerate(ids)},
        {q: {f"d{i}": 1} for i, q in enumerate(ids)},
    )
    key = lambda p: (p.query, p.text, p.label, p.stage1_rank)  # noqa: E731
    pairs = {
        (seed, draw): build_pairs([labelled], hashing_encoder, TrainParams(hard_pool=5, seed=seed, draw=draw))
        for seed, draw in [(0, None), (0, 1), (1, None)]
    }
    assert [key(p) for p in pairs[0, 1].train] == [key(p) for p in pairs[0, None].train]
    assert [key(p) for p in pairs[0, 1].calibration] == [key(p) for p in pairs[0, None].calibration]
    assert [key(p) for p in pairs[1, None].train] != [key(p) for p in pairs[0, None].train]
    assert TrainParams(seed=3).model_seed == 3 and TrainParams(seed=3, draw=5).model_seed == 5


@pytest.fixture(scope="module")
def second_draw(tmp_path_factory):
    out = tmp_path_factory.mktemp("rr") / "toy-draw1"
    params = _toy_params(threads=2, draw=1)
    train_reranker(_pairs(), out, params, name="toy-draw1", show_progress=False)
    return out


def test_averaged_draws_are_the_mean_of_their_weights_calibrated_afresh(tiny_reranker, second_draw, tmp_path):
    import torch
    from sentence_transformers import CrossEncoder

    from ragroute.rerank.average import average_rerankers
    from ragroute.store import open_snapshot

    first, _ = tiny_reranker
    out = tmp_path / "soup"
    report = average_rerankers([first, second_draw], out, _pairs().calibration, name="soup")
    manifest = open_snapshot(out, family="reranker").manifest
    assert manifest.params["average"] == {"draws": [0, 1]} and manifest.params["train"]["draw"] is None
    assert [m["draw"] for m in report["members"]] == [0, 1] and report["calibration"]["fitted"]
    assert report["sets"] == {"toy": {"queries": 4}}  # which sets it drew pairs from (the folds benches skip)
    assert manifest.params["report"]["onnx"] == report["onnx"]
    weights = [
        dict(
            CrossEncoder(str(open_snapshot(m, family="reranker").path), device="cpu").model.named_parameters()
        )
        for m in (first, second_draw, out)
    ]
    assert not torch.allclose(
        weights[0]["classifier.weight"], weights[1]["classifier.weight"]
    )  # draws differ
    for name in ("classifier.weight", "bert.encoder.layer.0.attention.self.query.weight"):
        assert torch.allclose(weights[2][name], (weights[0][name] + weights[1][name]) / 2, atol=1e-6)
    reranker = CrossEncoderReranker(out, backend="torch")
    assert reranker.calibration.fitted
    for topic, (query, _) in TOPICS.items():
        probs = reranker.score(query, [t for _, t in TOPICS.values()])
        assert int(np.argmax(probs)) == list(TOPICS).index(topic), (topic, probs)


def test_an_average_without_calibration_pairs_of_both_labels_is_not_published(
    tiny_reranker, second_draw, tmp_path
):
    """Until session 44 the average of draws was published with the raw sigmoid as its
    'calibration' when the held-apart pairs held one label only (or none), silently."""
    from ragroute.rerank.average import average_rerankers
    from ragroute.store import artifact_exists

    first, _ = tiny_reranker
    out = tmp_path / "soup"
    negatives = [p for p in _pairs().calibration if p.label == 0.0]
    with pytest.raises(RagrouteError, match="no calibration can be fitted for the average of 2 draws"):
        average_rerankers([first, second_draw], out, negatives, name="soup")
    assert not artifact_exists(out)


def test_training_several_draws_builds_pairs_once_and_publishes_their_average(tmp_path):
    import torch
    from sentence_transformers import CrossEncoder

    from ragroute.rerank.average import draws_folder, train_draws
    from ragroute.store import open_snapshot

    out = tmp_path / "soup"
    # two epochs on toy pairs: the mechanics, not a model that ranks
    params = _toy_params(epochs=2, seed=4, min_logit_auroc=0.0)
    said: list[str] = []
    report = train_draws(_pairs(), out, params, 2, name="soup", say=said.append, show_progress=False)
    members = [tmp_path / "soup.draws" / "draw-4", tmp_path / "soup.draws" / "draw-5"]
    assert draws_folder(out) == tmp_path / "soup.draws" and said[-1].startswith("averaging 2 draws")
    # draws seed+0, seed+1 of one recipe: the members keep their draw, the average records both
    assert [open_snapshot(m, family="reranker").manifest.params["train"]["draw"] for m in members] == [4, 5]
    assert open_snapshot(out, family="reranker").manifest.params["average"] == {"draws": [4, 5]}
    assert [r["train_pairs"] for r in report["draws"]] == [len(_pairs().train)] * 2
    assert [m["path"] for m in report["average"]["members"]] == [str(m) for m in members]
    weights = [
        dict(
            CrossEncoder(str(open_snapshot(m, family="reranker").path), device="cpu").model.named_parameters()
        )
        for m in (*members, out)
    ]
    name = "classifier.weight"
    assert not torch.allclose(weights[0][name], weights[1][name])
    assert torch.allclose(weights[2][name], (weights[0][name] + weights[1][name]) / 2, atol=1e-6)
    with pytest.raises(RagrouteError, match="give 2 or more"):
        train_draws(_pairs(), tmp_path / "one", params, 1)


def test_only_draws_of_one_recipe_are_averaged():
    from ragroute.rerank.average import check_draws

    recipe = {"base": "m", "max_length": 32, "data": {"roots": ["a"]}, "train": {"seed": 0, "layers": 1}}

    def member(**train):
        return {**recipe, "train": {**recipe["train"], **train}, "report": {"final_loss": 0.1}}

    assert check_draws([("a", member()), ("b", member(draw=1, threads=4)), ("c", member(draw=2))]) == [
        0,
        1,
        2,
    ]
    with pytest.raises(
        RagrouteError, match=r"b is not a draw of a's recipe: train.layers, train.seed differ"
    ):
        check_draws([("a", member()), ("b", member(layers=2, seed=1))])
    with pytest.raises(RagrouteError, match="max_length differ"):
        check_draws([("a", member()), ("b", {**member(draw=1), "max_length": 64})])
    with pytest.raises(RagrouteError, match="the same draw is given more than once: draw 0"):
        check_draws([("a", member()), ("b", member(draw=0))])
    with pytest.raises(RagrouteError, match="b is itself an average"):
        check_draws([("a", member()), ("b", {**member(draw=1), "average": {"draws": [1, 2]}})])
    with pytest.raises(RagrouteError, match="at least two"):
        check_draws([("a", member())])
    # a draw trained before the loss was recorded was trained with bce: one recipe with a bce draw
    assert check_draws([("a", member()), ("b", member(draw=1, loss="bce"))]) == [0, 1]
    with pytest.raises(RagrouteError, match="train.loss differ"):
        check_draws([("a", member()), ("b", member(draw=1, loss="listwise"))])


def test_rerank_average_refuses_other_recipes_before_building_any_pair(tiny_reranker, tmp_path):
    from click.testing import CliRunner

    from ragroute.cli import main

    first, _ = tiny_reranker
    other = tmp_path / "other"
    # one epoch on toy pairs: the mechanics, not a model that ranks
    params = _toy_params(epochs=1, draw=1, min_logit_auroc=0.0)
    train_reranker(_pairs(), other, params, name="other", show_progress=False)
    result = CliRunner().invoke(
        main, ["rerank", "average", str(first), str(other), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code != 0 and "train.epochs differ" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_rerank_train_refuses_a_device_before_mining_any_pair(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import ragroute.cli.rerank
    from ragroute.cli import main

    def no_pairs(*_args, **_kwargs):
        raise AssertionError("training pairs were mined for a device that cannot train")

    monkeypatch.setattr(ragroute.cli.rerank, "_pairs", no_pairs)
    result = CliRunner().invoke(
        main,
        ["rerank", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]
        + ["--device", "nosuchdevice"],
    )
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot train on device 'nosuchdevice' here (")
    assert not (tmp_path / "r").exists()


def test_rerank_train_and_average_refuse_an_out_they_cannot_publish_before_any_pair(
    tiny_reranker, second_draw, tmp_path, monkeypatch
):
    """Until session 44 `rerank average --out DIR` and the draws of `rerank train --draws N`
    (kept in OUT.draws/draw-D) were checked only when publishing: minutes of building pairs (and,
    for train, a whole draw's training) before `refusing to overwrite ...`."""
    from click.testing import CliRunner

    import ragroute.cli.rerank
    from ragroute.cli import main

    def no_pairs(*_args, **_kwargs):
        raise AssertionError("pairs were built for an --out that cannot be published")

    monkeypatch.setattr(ragroute.cli.rerank, "_pairs", no_pairs)
    monkeypatch.setattr(ragroute.cli.rerank, "_calibration_pairs", no_pairs)
    foreign = tmp_path / "r.draws" / "draw-4"  # the second draw of --draw 3 --draws 2
    foreign.mkdir(parents=True)
    (foreign / "manifest.json").write_text("{}", encoding="utf-8")
    runs = [
        ["rerank", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--draw", "3"]
        + ["--draws", "2"],
        ["rerank", "average", str(tiny_reranker[0]), str(second_draw), "--out", str(foreign)],
    ]
    for args in runs:
        result = CliRunner().invoke(main, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1, lines
        assert lines[0].startswith(f"error: refusing to overwrite {foreign.absolute()}"), lines
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("held", ["folder", "under a file"])
def test_rerank_train_refuses_an_out_of_the_users_files_before_any_pair(tmp_path, monkeypatch, held):
    """`rerank train --out DIR` where DIR holds the user's files (no `manifest.json` or `CURRENT`),
    or lies under a file, passed the check made before training (`check_replaceable` looked only
    at artifacts) and was refused after minutes of mining pairs and training (until session 53)."""
    from click.testing import CliRunner

    import ragroute.cli.rerank
    from ragroute.cli import main

    def no_pairs(*_args, **_kwargs):
        raise AssertionError("pairs were built for an --out that cannot be published")

    monkeypatch.setattr(ragroute.cli.rerank, "_pairs", no_pairs)
    if held == "folder":
        out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        message = f"refusing to overwrite {out}: it exists and is not a ragroute artifact"
    else:
        (tmp_path / "notes.txt").write_text("mine")
        out = tmp_path / "notes.txt" / "r"
        message = f"cannot write an artifact at {out}: {tmp_path / 'notes.txt'} is a file, not a folder"
    result = CliRunner().invoke(main, ["rerank", "train", "--data", str(tmp_path), "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, lines
    assert lines[0] == f"error: {message}"
    mine = out / "notes.txt" if held == "folder" else tmp_path / "notes.txt"
    assert mine.read_text() == "mine" and (held != "folder" or sorted(out.iterdir()) == [mine])


def test_draws_of_one_seed_start_from_the_same_weights(tmp_path):
    from sentence_transformers import CrossEncoder

    from ragroute.store import open_snapshot

    def untrained(seed: int, draw: int | None) -> dict:
        out = tmp_path / f"s{seed}-d{draw}"
        params = _toy_params(  # untrained on purpose: no bar to publish
            epochs=1, batch_size=32, learning_rate=0.0, seed=seed, draw=draw, min_logit_auroc=0.0
        )
        train_reranker(_pairs(), out, params, show_progress=False)
        model = CrossEncoder(str(open_snapshot(out, family="reranker").path), device="cpu").model
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    base, draw, other_seed = untrained(0, None), untrained(0, 3), untrained(1, None)
    assert all(bool((base[n] == draw[n]).all()) for n in base)  # a learning rate of 0 keeps the start
    assert not bool((base["classifier.weight"] == other_seed["classifier.weight"]).all())


def test_recalibration_names_training_sets_it_cannot_find(tmp_path):
    from ragroute.cli.rerank import _calibration_pairs

    params_in = {"train": {}, "data": {"roots": [str(tmp_path / "gone")]}}
    with pytest.raises(RagrouteError, match=r"trained on are not found from here \(.*gone, as recorded"):
        _calibration_pairs(params_in, [tmp_path], "dev", "all-MiniLM-L6-v2", "auto", None)


def test_a_candidate_stage1_never_retrieved_gets_no_rank_prior():
    from ragroute.rerank.cross_encoder import Calibration

    calibration = Calibration(a=1.0, b=0.0, c=2.0)
    probs = calibration(np.zeros(4), ranks=np.array([0, 1, 2, 4]))
    expected = 1.0 / (1.0 + np.exp(-np.array([0.0, 2.0, 1.0, 0.5])))
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    assert calibration(np.zeros(1), ranks=np.array([0]))[0] == 0.5


def test_non_finite_stage1_scores_count_as_the_pools_lowest():
    from ragroute.rerank.cross_encoder import pool_zscores

    values = np.array([5.0, 4.0, 3.0, 3.0])  # nan and -inf read as the lowest finite score, 3
    expected = (values - values.mean()) / values.std()
    np.testing.assert_allclose(pool_zscores([5.0, 4.0, float("nan"), 3.0]), expected, rtol=1e-12)
    np.testing.assert_allclose(pool_zscores([5.0, 4.0, float("-inf"), 3.0]), expected, rtol=1e-12)
    assert np.array_equal(pool_zscores([float("nan"), float("inf")]), [0.0, 0.0])


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ('{"a": "x"}', "'a' is 'x', not a finite number"),
        ('{"a": 1.0, "d": NaN}', "'d' is nan, not a finite number"),
        ('{"stage1": [1, 2]}', "'stage1' is a list, not a mapping"),
        ("[1, 2]", "a calibration is a mapping, not a list"),
        ("{", "Expecting property name"),
        ("[" * 100_000, "maximum recursion depth"),  # a RecursionError traceback until session 51
    ],
)
def test_a_calibration_file_with_wrong_contents_is_one_line(tmp_path, calibration, message):
    """Checksums hold (the file was published so), the contents do not: it was a ValueError or
    TypeError traceback from float(); now one line naming the file, before any model loads."""
    from ragroute.errors import ArtifactFormatError
    from ragroute.store import write_artifact

    with write_artifact(tmp_path / "rr", "reranker", "cross-encoder") as build:
        (build.path / "calibration.json").write_text(calibration)
    with pytest.raises(ArtifactFormatError, match="calibration.json is corrupt: .*" + message[:20]) as caught:
        CrossEncoderReranker(tmp_path / "rr").rerank_texts("q", ["t"])
    assert "\n" not in str(caught.value)


def test_an_empty_reranker_name_is_refused_not_read_as_the_working_directory():
    from ragroute.errors import InvalidArgumentError

    for empty in ("", "  "):
        with pytest.raises(InvalidArgumentError, match="reranker model is empty"):
            CrossEncoderReranker(empty)


def test_a_calibration_coefficient_that_is_a_bool_is_refused():
    from ragroute.rerank.cross_encoder import Calibration

    with pytest.raises(ValueError, match="'a' is True, not a finite number"):
        Calibration.from_dict({"a": True})
    # a plain CrossEncoder folder's calibration.json has no checksums: "false" read as fitted
    # (bool("false") is True) until session 44
    for text in ("false", "true", 0, None):
        with pytest.raises(ValueError, match="'fitted' is .*, not true or false"):
            Calibration.from_dict({"a": 1.0, "fitted": text})
    assert Calibration.from_dict({"a": 1.0, "fitted": False}).fitted is False


def test_a_token_limit_above_the_models_positions_is_one_line_and_the_default_fits_it(
    tiny_reranker, tmp_path
):
    """A plain CrossEncoder of 128 positions read at the default 512 failed inside the model on the
    first long text (a traceback; in a pipeline the reranker fell back to the fused order), and
    max_length 1000 on a trained reranker did the same: until session 36."""
    from pathlib import Path

    from ragroute.rerank.cross_encoder import _fit_length, model_positions
    from ragroute.store import open_snapshot

    out, _ = tiny_reranker
    positions = model_positions(Path(open_snapshot(out, family="reranker").path))
    assert positions == 512  # MiniLM's
    with pytest.raises(RagrouteError, match=r"max_length 513 is above the 512 tokens its model reads"):
        CrossEncoderReranker(out, backend="torch", max_length=513)
    small = tmp_path / "small"
    small.mkdir()
    (small / "config.json").write_text(json.dumps({"max_position_embeddings": 130, "model_type": "roberta"}))
    assert model_positions(small) == 128 and _fit_length(small, None, 512, "m") == 128
    assert _fit_length(small, 64, 512, "m") == 64 and _fit_length(tmp_path, None, 512, "m") == 512
    # a text that is not a string: one line (the tokenizer's TypeError until session 36)
    from ragroute.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="texts must be strings, got empty"):
        CrossEncoderReranker(out, backend="torch").score("q", ["a text", None])


def test_bench_rerank_says_the_data_is_wrong_before_loading_the_reranker(tmp_path, hashing_encoder):
    """A user without a reranker learned first that it was missing, never that the data was bad too
    (the data was read only after the reranker loaded; until session 37)."""
    from ragroute.evaluation.bench_rerank import run_rerank_bench

    (tmp_path / "empty").mkdir()
    with pytest.raises(RagrouteError, match="no BEIR or SKILLS data in it"):
        run_rerank_bench(tmp_path / "empty", hashing_encoder, tmp_path / "no-reranker")


def _trained_on(monkeypatch, data: dict) -> None:
    """Rerankers loaded from here on read ``data`` as the training sets their manifest records."""
    from ragroute.rerank import cross_encoder

    real = cross_encoder._load

    def load(*args, **kwargs):
        scorer, calibration, info = real(*args, **kwargs)
        return scorer, calibration, {**info, "params": {**info["params"], "data": data}}

    monkeypatch.setattr(cross_encoder, "_load", load)


def test_bench_rerank_leaves_out_training_queries_of_a_copy_under_another_name(
    tiny_reranker, tmp_path, hashing_encoder, monkeypatch
):
    # the fold goes by the folder's name: a copy of training set "a" named "acopy" scored some of
    # a's fold-0 (training) queries as "held out from reranker training"
    from ragroute.evaluation.bench_rerank import run_rerank_bench

    out, _ = tiny_reranker
    ids = [f"q{i}" for i in range(200)]
    leaked = next(q for q in ids if query_fold("acopy", q) == 1 and query_fold("a", q) == 0)
    clean = next(q for q in ids if query_fold("acopy", q) == 1 and query_fold("a", q) == 1)
    (weather, weather_doc), (email, email_doc) = list(TOPICS.values())[:2]
    for name in ("a", "acopy"):
        folder = tmp_path / "proj" / "data" / name
        (folder / "qrels").mkdir(parents=True)
        docs = [
            {"_id": "d1", "title": "", "text": weather_doc},
            {"_id": "d2", "title": "", "text": email_doc},
        ]
        (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
        queries = [{"_id": leaked, "text": weather}, {"_id": clean, "text": email}]
        (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
        (folder / "qrels" / "dev.tsv").write_text(
            f"query-id\tcorpus-id\tscore\n{leaked}\td1\t1\n{clean}\td2\t1\n"
        )
    # as `ragroute rerank train` records them: relative to where training ran (the project folder)
    monkeypatch.chdir(tmp_path / "proj")
    _trained_on(monkeypatch, {"roots": ["data/a"], "split": "dev"})
    said: list[str] = []
    result = run_rerank_bench(
        tmp_path / "proj" / "data" / "acopy", hashing_encoder, out, backend="torch", log=said.append
    )
    assert result["collections"]["acopy"]["queries"] == 1  # the clean one only
    assert (
        result["queries"]
        == "fold-1 (held out from reranker training), less 1 whose text the reranker trained on"
    )
    assert "acopy: left out 1 of 2 fold-1 queries whose text the reranker trained on" in said
    # training data that cannot be found here: no claim of held-out queries
    _trained_on(monkeypatch, {"roots": ["nowhere/a"], "split": "dev"})
    result = run_rerank_bench(tmp_path / "proj" / "data" / "acopy", hashing_encoder, out, backend="torch")
    assert result["collections"]["acopy"]["queries"] == 2
    assert result["queries"].startswith("fold-1 by folder name only")
    assert "its training set nowhere/a was not found" in result["queries"]
    assert "held out from" not in result["queries"]


def test_training_queries_are_read_back_from_the_recorded_sets(tmp_path):
    from ragroute.rerank.train import training_queries

    folder = tmp_path / "proj" / "data" / "s"
    (folder / "qrels").mkdir(parents=True)
    ids = [f"q{i}" for i in range(6)]
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": q, "text": f"Query  {q.upper()}"}) for q in ids)
    )
    (folder / "skills.jsonl").write_text("")
    (folder / "qrels" / "dev.tsv").write_text("\n".join(f"{q}\tx\t1" for q in ids[:5]))  # q5 unjudged
    model = tmp_path / "proj" / "rerank" / "m"
    texts, why = training_queries({"data": {"roots": ["data/s"], "split": "dev"}}, model)
    assert why == "" and texts == {f"query {q}" for q in ids[:5] if query_fold("s", q) == 0}
    assert training_queries({"data": {}}, model) == (None, "its manifest records no training sets")
    assert training_queries({"data": {"roots": ["data/s"], "split": "test"}}, model)[0] is None


def test_bench_rerank_gain_is_the_difference_of_unrounded_means(tiny_reranker, tmp_path, hashing_encoder):
    # the gain was the difference of nDCGs rounded per collection: 0.0834 in the JSON next to the
    # +0.0833 of the paired gain printed beside it (the same difference, computed unrounded)
    from ragroute.evaluation.bench_rerank import run_rerank_bench

    out, _ = tiny_reranker
    items = list(TOPICS.items())
    for j, name in enumerate("abcd"):
        _write_beir(tmp_path / "sets" / name, dict(items[j:] + items[:j]), name)
    result = run_rerank_bench(tmp_path / "sets", hashing_encoder, out, backend="torch")
    for method in ("dense", "hybrid"):
        assert result["rerank_gain"][method] == result["rerank_gain_ci95"][method]["diff"]


def test_ragroute_rerank_reads_a_pipeline_nodes_fused_value_as_its_pipeline_stage_does(
    tiny_reranker, hashing_encoder
):
    """Nodes a ragroute pipeline made score a cosine-scale similarity, out of step with the fused
    value that ordered them (kept hidden in `explain`): RagrouteRerank read the cosine (or, the list
    looking unsorted, the order alone), so it reranked otherwise than the same pipeline's own rerank
    stage. It now reads the fused value, as that stage does (session 47)."""
    from llama_index.core.schema import NodeWithScore, TextNode

    from ragroute.index.build import build_index
    from ragroute.integrations.llamaindex import RoutedLlamaRetriever
    from ragroute.integrations.llamaindex_rerank import RagrouteRerank
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.sources import Source
    from ragroute.types import Document

    out, _ = tiny_reranker
    texts = [text for _, text in TOPICS.values()] + [
        "Weather radar | rain maps and storm tracks",
        "Mail merge | one message to many recipients from a list",
        "Ticker news | headlines about a share and its price",
        "Transit | bus and train routes to the airport",
    ]
    docs = [Document(id=f"d{i}", text=t) for i, t in enumerate(texts)]
    source = Source("tools", build_index(docs, "hybrid", encoder=hashing_encoder, name="tools"))
    settings = {"kind": "centroid"}
    plain = pipeline_from_settings([source], settings, encoder=hashing_encoder)
    # one backend for both (`auto` is bf16 torch on a CPU with AMX, whose near-ties the fp32 run below
    # may order otherwise: this test failed on such a machine until session 51)
    reranking = {"kind": "cross-encoder", "model": str(out), "backend": "torch"}
    staged = pipeline_from_settings([source], settings, encoder=hashing_encoder, reranker=reranking)
    query = "latest share price and the route to the airport"
    nodes = RoutedLlamaRetriever(plain, similarity_top_k=8).retrieve(query)
    fused = [n.node.metadata["explain"]["fused"] for n in nodes]
    assert fused == sorted(fused, reverse=True)
    assert [n.score for n in nodes] != sorted((n.score for n in nodes), reverse=True)  # cosine: unsorted
    reranker = CrossEncoderReranker(out, backend="torch")
    kept = RagrouteRerank(reranker, top_n=8).postprocess_nodes(nodes, query_str=query)
    expected = {f"tools:{h.doc_id}": h.explain["rerank"] for h in staged.retrieve(query, k=8).hits}
    assert set(expected) == {n.node.node_id for n in kept}
    for node in kept:
        read, stage = node.node.metadata["rerank"], expected[node.node.node_id]
        assert read["stage1_from"].startswith("fused")
        assert read["stage1_z"] == pytest.approx(stage["stage1_z"], abs=1e-6)
        assert read["probability"] == pytest.approx(stage["probability"], abs=1e-6)
    assert [n.node.node_id for n in kept] == list(expected)
    # a node not made by ragroute, among them: the list is read by its scores (or order) as before
    foreign = NodeWithScore(node=TextNode(text="Maps | driving directions", id_="elsewhere"), score=0.01)
    mixed = RagrouteRerank(reranker, top_n=9).postprocess_nodes([*nodes, foreign], query_str=query)
    assert not any(n.node.metadata["rerank"].get("stage1_from", "").startswith("fused") for n in mixed)


def _station_studies(topics):
    """60 short study documents over ``topics`` (four), for the pseudo-query pair tests."""
    from ragroute.types import Document

    return [
        Document(
            id=f"d{i}",
            title=f"Study {i} of {topics[i % 4]}",
            text=f"We measured {topics[i % 4]} at site {i} over many seasons. "
            f"The results for station {i} show clear yearly trends in {topics[i % 4]}.",
        )
        for i in range(60)
    ]


def test_pseudo_query_pairs_train_on_a_sets_own_documents_without_the_cut_text(hashing_encoder):
    """`--pseudo-queries N` adds training pairs cut from a document set's own documents (session 47):
    the positive is the source document read without the cut text (no copy to spot), negatives never
    the source, nothing calibrates on them, SKILLS and calibration-only sets give none, and without
    the option the pairs are the labelled ones, as before."""
    from dataclasses import replace

    from ragroute.rerank.train import LabelledSet, build_pairs, query_fold

    topics = ["glacier melt rates", "tidal energy turbines", "coral reef bleaching", "desert soil crusts"]
    docs = _station_studies(topics)
    ids = [f"q{i}" for i in range(40) if query_fold("a", f"q{i}") == 0][:10]
    labelled = LabelledSet(
        "a",
        docs,
        {q: f"{topics[i % 4]} site {i}" for i, q in enumerate(ids)},
        {q: {f"d{i}": 1} for i, q in enumerate(ids)},
    )
    params = TrainParams(hard_pool=8, calibration_share=0.2)
    plain = build_pairs([labelled], hashing_encoder, params)
    pseudo = build_pairs([labelled], hashing_encoder, replace(params, pseudo_queries=30))
    key = lambda p: (p.set_name, p.query, p.text, p.label)  # noqa: E731
    made = [p for p in pseudo.train if p.set_name == "a (pseudo-queries)"]
    assert sorted(key(p) for p in pseudo.train if p.set_name == "a") == sorted(map(key, plain.train))
    assert [key(p) for p in pseudo.calibration] == [key(p) for p in plain.calibration]
    assert not any(p.set_name.endswith("(pseudo-queries)") for p in plain.train)
    queries = {p.query for p in made}
    assert 0 < len(queries) <= 30 and pseudo.counts["a (pseudo-queries)"]["queries"] == len(queries)
    by_text = {}
    for p in made:
        by_text.setdefault(p.query, []).append(p)
    for query, rows in by_text.items():
        positives = [p for p in rows if p.label == 1.0]
        assert len(positives) == 1 and len(rows) == 1 + params.hard_negatives + params.random_negatives
        assert query not in positives[0].text  # the cut text is not in what the model reads
        assert all(p.text != positives[0].text for p in rows if p.label == 0.0)
    # a title query's candidates are all read without their titles (a missing title would tell the
    # positive apart); a sentence query's keep theirs
    title_query = next(q for q in queries if q.startswith("Study "))
    source = next(d for d in docs if d.title == title_query)
    assert [p.text for p in by_text[title_query] if p.label == 1.0] == [source.text]
    assert not any(" | " in p.text for p in by_text[title_query])
    sentence_query = next(q for q in queries if q.startswith(("We measured", "The results")))
    assert all(p.text.startswith("Study ") for p in by_text[sentence_query])
    # a calibration-only set gives no pseudo-query pairs (nor does a SKILLS set: catalogue is not None)
    held = build_pairs(
        [labelled], hashing_encoder, replace(params, pseudo_queries=30), calibration_only={"a"}
    )
    assert not [p for p in held.train if p.set_name.endswith("(pseudo-queries)")]
    # a corpus too small to cut pseudo-queries from gives none, said in one line
    said: list[str] = []
    small = LabelledSet("s", docs[:10], labelled.queries, labelled.qrels)
    build_pairs([small], hashing_encoder, replace(params, pseudo_queries=30), say=said.append)
    assert any("s: no pseudo-query pairs (cannot cut pseudo-queries from 10" in line for line in said)


def test_a_pseudo_query_worded_as_a_labelled_query_is_never_trained_on(hashing_encoder):
    """A pseudo-query is cut from a document, but a document may be titled as a query is worded:
    until session 52 such a pseudo-query was trained on even when its text was a fold-1 query (the
    one a benchmark reports) or a query held apart to fit the calibration."""
    from dataclasses import replace

    from ragroute.rerank.train import LabelledSet, build_pairs, query_fold
    from ragroute.route.folds import normalized_text

    topics = ["glacier melt rates", "tidal energy turbines", "coral reef bleaching", "desert soil crusts"]
    fold0 = [f"q{i}" for i in range(60) if query_fold("a", f"q{i}") == 0][:10]
    fold1 = [f"q{i}" for i in range(60) if query_fold("a", f"q{i}") == 1][:2]
    queries = {q: f"{topics[i % 4]} measured at station number {i}" for i, q in enumerate(fold0 + fold1)}
    docs = _station_studies(topics)
    labelled = LabelledSet("a", docs, queries, {q: {f"d{i}": 1} for i, q in enumerate(fold0 + fold1)})
    params = TrainParams(hard_pool=8, calibration_share=0.2, pseudo_queries=200)
    apart = {p.query for p in build_pairs([labelled], hashing_encoder, params).calibration}
    assert len(apart) == 2
    # documents titled as a held-out (fold-1) query and as a held-apart one are worded, give or take
    # case and spacing
    worded = [queries[fold1[0]].upper(), f"  {sorted(apart)[0]}  "]
    for position, title in enumerate(worded):
        docs[50 + position] = replace(docs[50 + position], title=title)
    pairs = build_pairs([labelled], hashing_encoder, params)
    assert {p.query for p in pairs.calibration} == apart
    trained = {normalized_text(p.query) for p in pairs.train}
    assert not trained & {normalized_text(t) for t in worded}
    made = [p for p in pairs.train if p.set_name == "a (pseudo-queries)"]
    assert made and pairs.counts["a (pseudo-queries)"]["pairs"] == len(made)
    assert pairs.counts["a (pseudo-queries)"]["positives"] == sum(int(p.label) for p in made)


def test_the_parents_reranker_leaves_the_callers_hits_as_they_were_and_checks_k():
    """Until session 51 it rewrote the ranks and explanations of the hits it was handed, and k=0
    returned every parent (the cross-encoder reranker makes new hits and refuses k=0)."""
    from ragroute.rerank.parents import ParentsReranker

    hits = [
        Hit(doc_id="a#p1", score=3.0, source="s", rank=1, parent_id="a"),
        Hit(doc_id="a#p0", score=2.0, source="s", rank=2, parent_id="a"),
        Hit(doc_id="b#p0", score=1.0, source="s", rank=3, parent_id="b"),
    ]
    before = [(h.rank, dict(h.explain)) for h in hits]
    kept = ParentsReranker().rerank("q", hits, 5)
    assert [(h.doc_id, h.rank) for h in kept] == [("a#p1", 1), ("b#p0", 2)]
    assert kept[1].explain["rerank"] == {"kind": "parents", "kept_for": "b"}
    assert [(h.rank, h.explain) for h in hits] == before
    with pytest.raises(RagrouteError, match="k must be"):
        ParentsReranker().rerank("q", hits, 0)


def test_bench_rerank_routed_row_judges_each_query_by_its_own_collections_qrels(hashing_encoder):
    # each part carries its collection's whole qrels, fold-0 queries included: a fold-0 query of a later
    # collection with the id of an earlier collection's held-out query (query_fold goes by folder name,
    # so the two can land in different folds, and the repeated-id check sees held-out queries only)
    # replaced that query's judgements in the routed row's one qrels (until session 55)
    from ragroute.context import QueryContext
    from ragroute.evaluation.bench_rerank import routed_rows
    from ragroute.index.build import build_index
    from ragroute.route.sources import Source
    from ragroute.types import Document

    def part(name, docs, asked, qrels):
        index = build_index([Document(id=i, text=t) for i, t in docs], "hybrid", encoder=hashing_encoder)
        contexts = [QueryContext(t, id=q) for q, t in asked]
        for context in contexts:
            context.set_vector(hashing_encoder, hashing_encoder.encode_queries([context.text])[0])
        return name, Source(name, index), contexts, qrels

    a = part(
        "a",
        [("a1", "cats purr loudly"), ("a2", "kittens nap in sun")],
        [("q1", "cats purr loudly")],
        {"q1": {"a1": 1}},
    )
    b = part(
        "b",
        [("b1", "ships sail the sea"), ("b2", "harbours hold boats")],
        [("q2", "ships sail")],
        {"q1": {"b2": 1}, "q2": {"b1": 1}},
    )  # b's q1: a fold-0 (training) query, not scored
    routed = routed_rows([a, b], hashing_encoder, None)
    assert routed["queries"] == 2
    assert routed["hybrid routed"]["ndcg@10"] == pytest.approx(1.0)


def test_expand_roots_leaves_hidden_collection_folders_out(tmp_path: Path) -> None:
    """A folder of collections is read as the benchmarks read it: ``_old/`` and ``.x/`` (copies,
    caches) are no sets. Until session 55 ``rerank train`` trained on them and ``bench rerank``
    scored them in its macro average, while ``bench corpus-routing`` left them out."""
    from ragroute.rerank.train import expand_roots

    for name in ("cran", "_old", ".x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "corpus.jsonl").write_text('{"_id": "d1", "text": "t"}\n', encoding="utf-8")
    assert expand_roots([tmp_path]) == [(f"{tmp_path.name}/cran", tmp_path / "cran")]
