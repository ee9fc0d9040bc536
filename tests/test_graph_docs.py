"""The Python and YAML snippets of docs/graph.md run as written (bundled MiniLM, temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import ragroute.encode
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.loaders import load_corpus

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "graph.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_graph_doc_snippets_run(tmp_path, monkeypatch, capsys, minilm):
    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *args, **kwargs: minilm)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpora").symlink_to(ROOT / "corpora", target_is_directory=True)
    astronomy = load_corpus(ROOT / "corpora" / "astronomy")
    save_index(build_index(astronomy, "bm25", name="astronomy"), tmp_path / "indexes" / "astronomy")
    configs = [b for b in blocks("yaml") if b.startswith("# routing.yaml")]
    assert len(configs) == 1
    (tmp_path / "routing.yaml").write_text(configs[0], encoding="utf-8")
    snippets = blocks("python")
    assert len(snippets) == 2
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    graph, question = namespace["graph"], namespace["question"]
    assert graph.kind == "graph" and (tmp_path / "graph" / "multihop" / "CURRENT").is_file()
    assert {h.doc_id for h in graph.search(question, k=3)} >= {"ada-brennan", "kellow"}
    result = namespace["result"]
    assert result.decision.chosen[0] == "people_places"
    assert {h.doc_id for h in result.hits} >= {"ada-brennan", "kellow"}
    nodes = namespace["graph_only"].retrieve(question)
    assert {n.node.metadata["doc_id"] for n in nodes} >= {"ada-brennan", "kellow"}
    assert nodes[0].node.metadata["explain"]["method"] == "ppr"
    assert "people_places:" in out  # routed LlamaIndex nodes are named SOURCE:DOC_ID


def test_the_explain_table_says_what_the_walk_reports():
    """`unmatched_terms` leaves out the words of fact seeds only (an anchor's words stay: the
    lexical edges were measured so), and a passage without walk mass is named with the very
    `fallback` its hits carry (the page said "in no seed phrase", anchors included, and had no
    word on passages the walk gave no mass)."""
    from ragroute.graph.index import NO_WALK_MASS

    text = DOC.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", text, flags=re.M))
    assert "no phrase of a *fact* seed" in rows["unmatched_terms"] and "anchor" in rows["unmatched_terms"]
    assert "no mass" in rows["method"]
    assert f'`"{NO_WALK_MASS}"`' in " ".join(text.split())
