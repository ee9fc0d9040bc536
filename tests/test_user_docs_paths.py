"""What a new user meets walking through the docs: values named as the docs name them, and typos
answered with the closest known name (session 50)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from llama_index.core.schema import NodeWithScore, TextNode

from ragroute.cli import main
from ragroute.errors import RagrouteError, is_one_line_error_output
from ragroute.gate.signals import make_signal
from ragroute.integrations.llamaindex import hit_to_node
from ragroute.integrations.llamaindex_rerank import STAGE1_FROM, RagrouteRerank
from ragroute.route.trained import TrainedRouter
from ragroute.types import Hit


class KeepOrder:
    """A reranker that keeps the stage-1 order and records what it was handed."""

    def rerank(self, query, hits, k):
        self.scores = [h.score for h in hits]
        return [
            Hit(h.doc_id, 1.0 - i / 10, h.source, i + 1, h.text, explain={"rerank": {"probability": 0.5}})
            for i, h in enumerate(hits[:k])
        ]


def test_a_rerank_postprocessor_says_what_stage_1_was_read_from_in_one_word():
    """docs/rerank.md: `stage1_from: fused` in `metadata["rerank"]`; the value was the phrase
    "fused (the ragroute pipeline's fused value)", "order (...)", and absent for scored nodes."""
    scored = [NodeWithScore(node=TextNode(text=f"t{i}", id_=f"n{i}"), score=1.0 - i / 10) for i in range(3)]
    unsorted = [
        NodeWithScore(node=TextNode(text=f"t{i}", id_=f"n{i}"), score=s) for i, s in enumerate((0.2, 0.9))
    ]
    made = [  # nodes of ragroute's own retrievers: a cosine score, the fused value in explain
        hit_to_node(Hit(f"d{i}", cos, "docs", i + 1, f"t{i}", explain={"fused": 0.03 - i / 100}))
        for i, cos in enumerate((0.4, 0.7))
    ]
    for nodes, said in ((scored, "score"), (unsorted, "order"), (made, "fused")):
        reranker = KeepOrder()
        out = RagrouteRerank(reranker, top_n=5).postprocess_nodes(nodes, query_str="q")
        assert [n.node.metadata["rerank"]["stage1_from"] for n in out] == [said] * len(nodes)
        assert said in STAGE1_FROM
    assert reranker.scores == pytest.approx([0.03, 0.02])  # the fused values, not the cosines


def test_a_misspelt_gate_signal_is_answered_with_the_closest_kind(tmp_path):
    """A routing config's `gate:` said "did you mean 'rarity'?"; Python (`TrainedGate.fit`,
    `ThresholdGate`) and `gate fit --signals` listed the kinds only."""
    with pytest.raises(RagrouteError, match=r"^unknown gate signal 'rarty'; did you mean 'rarity'\?$"):
        make_signal("rarty")
    with pytest.raises(RagrouteError, match=r"^unknown gate signal 'vibes'; known: .*knn_vote"):
        make_signal("vibes")  # nothing close: the kinds listed
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(json.dumps({"text": f"q{i}", "label": "no" if i % 2 else "docs"}) + "\n" for i in range(8)),
        encoding="utf-8",
    )
    for given, said in (
        ("rarty", "error: unknown gate signal 'rarty'; did you mean 'rarity'?"),
        (
            "knn_vot,rarty",
            "error: unknown gate signals 'knn_vot' (did you mean 'knn_vote'?), "
            "'rarty' (did you mean 'rarity'?)",
        ),
    ):
        result = CliRunner().invoke(
            main, ["gate", "fit", str(labels), "--out", str(tmp_path / "g"), "--signals", given]
        )
        assert result.exit_code == 2 and is_one_line_error_output(result.output)
        assert result.output.strip() == said


def test_route_fit_on_labels_holding_no_and_none_says_both_mean_no_retrieval(tmp_path, hashing_encoder):
    """README: `route fit` reads `no` / `no_tool` as "answer without retrieval"; a file labelling
    some such queries `none` (as `gate fit` reads it too) was refused as "label 'none' is reserved
    for the no-retrieval route", naming neither the other label nor a way out."""
    rows = [("stars", "astronomy"), ("bread", "cooking"), ("hi", "no"), ("joke", "none")] * 3
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"text": t, "label": x}) + "\n" for t, x in rows), encoding="utf-8")
    result = CliRunner().invoke(
        main, ["route", "fit", "--queries", str(labels), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and is_one_line_error_output(result.output)
    assert "the labels hold 'no' and 'none', which both mean 'answer without retrieval'" in result.output
    assert "--none-label none" in result.output
    assert not (tmp_path / "r").exists()
    texts, names = zip(*rows)
    with pytest.raises(RagrouteError, match=r"none_label 'no' names another label for it: give the queries"):
        TrainedRouter.fit(list(texts), list(names), hashing_encoder, none_label="no")
