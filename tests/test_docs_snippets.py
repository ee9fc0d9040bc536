"""The ```python blocks of the docs pages run as written and give what their comments say.

Each page's blocks run in order in one namespace (a block may go on from the one before it, as a
reader reads the page), in a temporary folder, offline. The names a block takes as given
(`sources`, `encoder`, `llm`, `pipeline`, a `train.jsonl`, a `skills/` folder ...) are small
stand-ins made here: BM25 and dense indexes over the sample corpora, the tests' hashing encoder
(in place of the bundled MiniLM, for speed), a scripted LLM. No trained reranker ships with the
repository, so `CrossEncoderReranker("rerank/default")` is a stand-in over the real class's code
scoring by word overlap: a block is checked up to the numbers only a trained model gives.

The README's blocks are run by tests/test_readme_snippets.py; the blocks run by another test are
listed in ELSEWHERE, and every block of these pages is either run here or listed there
(test_every_block_is_run_somewhere), so a new block is not left unrun by accident.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import HashingEncoder

import ragroute.encode
import ragroute.rerank.cross_encoder
from ragroute.rerank.cross_encoder import Calibration, CrossEncoderReranker

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CORPORA = ROOT / "corpora"

#: (page, block index) -> the test that runs it, and why not here
ELSEWHERE = {
    ("extractors", 0): "tests/test_extractors_docs.py (the hashtag extractor's registration)",
    ("graph", 0): "tests/test_graph_docs.py (bundled MiniLM, graph over corpora/multihop)",
    ("graph", 1): "tests/test_graph_docs.py (the graph as a routed source)",
    ("integrations", 0): "tests/test_llamaindex.py (builds the demo's hybrid indexes with MiniLM: ~20 s)",
}

#: what the blocks run here cannot show, and why
NOT_CHECKED = {
    ("rerank", 0): "the probabilities `rerank/default` gives (about [0.05, 0.04]): no trained reranker here",
    ("skills", 1): "the trained reranker's own probabilities (the stand-in's are word overlaps)",
}

#: the blocks each test below runs
RUN_HERE = {
    ("exposure", 0),
    ("extractors", 1),
    ("gating", 0),
    ("gating", 1),
    ("gating", 2),
    ("integrations", 1),
    ("integrations", 2),
    ("integrations", 3),
    ("integrations", 4),
    ("rerank", 0),
    ("rerank", 1),
    ("skills", 0),
    ("skills", 1),
    ("skills", 2),
}


def python_blocks(page: str) -> list[str]:
    return [block for _, block in numbered_blocks(page)]


def numbered_blocks(page: str) -> list[tuple[int, str]]:
    """Each block with the number of the page's line before its first."""
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    return [
        (text[: m.start(1)].count("\n"), m.group(1))
        for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S)
    ]


def run(page: str, index: int, namespace: dict[str, Any], *, edit: Any = None) -> list[Any]:
    """Run the page's block ``index`` statement by statement in ``namespace`` (``edit``: a function
    of its text keeping its lines, e.g. a placeholder line emptied); the values of its bare
    expressions (what a reader at a prompt sees, and what their comments describe), in order."""
    offset, block = numbered_blocks(page)[index]
    if edit is not None:
        block = edit(block)
    tree = ast.increment_lineno(ast.parse(block), offset)  # tracebacks name the page's lines
    values = []
    for node in tree.body:
        if isinstance(node, ast.Expr):
            code = compile(ast.Expression(node.value), f"docs/{page}.md", "eval")
            values.append(eval(code, namespace))  # noqa: S307 - the page's own example
        else:
            code = compile(ast.Module([node], type_ignores=[]), f"docs/{page}.md", "exec")
            exec(code, namespace)  # noqa: S102 - the page's own example
    return values


def bm25_source(name: str, path: str, **settings: Any):
    from ragroute.index.build import build_index
    from ragroute.loaders import load_corpus
    from ragroute.route.sources import Source

    return Source(name, build_index(load_corpus(CORPORA / path), "bm25", name=name), **settings)


class ScriptedLLM:
    """An LLM with ``complete(prompt).text`` answering from a script: the OpenIE prompts of the
    `llm` extractor, the step-wise planner's and the answerer's."""

    def complete(self, prompt: str, **kwargs: Any) -> SimpleNamespace:
        from ragroute.gate.controller import ANSWER_PROMPT
        from ragroute.gate.planners import PLANNER_PROMPT

        if "extract named entities" in prompt:
            return SimpleNamespace(text='{"named_entities": ["Ada Brennan", "Kellow"]}')
        if "triples" in prompt:
            return SimpleNamespace(text='{"triples": [["Ada Brennan", "born in", "Kellow"]]}')
        if prompt.startswith(PLANNER_PROMPT.split("{", 1)[0]):
            plans = [
                {"action": "search", "query": "Where was Ada Brennan born?"},
                {"action": "search", "query": "Which river flows through Kellow?"},
                {"action": "answer", "answer": "the Varne River"},
            ]
            return SimpleNamespace(text=json.dumps(plans[min(prompt.count("\nStep "), 2)]))
        assert prompt.startswith(ANSWER_PROMPT.split("{", 1)[0]), prompt
        question = prompt.rsplit("Question:", 1)[1]
        return SimpleNamespace(text="Kellow" if "born" in question else "the Varne River")


def word_overlap_reranker(model: Any, **settings: Any):
    """The real CrossEncoderReranker's code over a scorer counting shared words (the logit)."""
    assert str(model) == "rerank/default", model  # what the pages load
    reranker = object.__new__(CrossEncoderReranker)
    reranker.model_ref, reranker.candidates, reranker.batch_size, reranker.body = str(model), 20, 32, True
    reranker._lock = threading.Lock()
    reranker._scorer = lambda queries, texts: np.array(
        [len(set(q.lower().split()) & set(t.lower().split())) for q, t in zip(queries, texts)],
        dtype=np.float32,
    )
    reranker.calibration = Calibration(1.0, -1.0, 1.0, True, 1.0)
    reranker.info = {"name": "word-overlap", "build": "b1", "backend": "scripted", "params": {}}
    reranker.backend, reranker.reading, reranker.stage1 = "scripted", {}, "documents"
    return reranker


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A temporary working folder; `load_encoder()` is the hashing encoder and
    `CrossEncoderReranker("rerank/default")` the word-overlap stand-in."""
    encoder = HashingEncoder(dim=256)
    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *args, **kwargs: encoder)
    monkeypatch.setattr(ragroute.rerank.cross_encoder, "CrossEncoderReranker", word_overlap_reranker)
    monkeypatch.chdir(tmp_path)
    return encoder


def test_every_block_is_run_somewhere():
    pages = {page for page, _ in RUN_HERE | set(ELSEWHERE)}
    found = {(page, i) for page in pages for i, _ in enumerate(python_blocks(page))}
    assert found == RUN_HERE | set(ELSEWHERE)
    assert not RUN_HERE & set(ELSEWHERE) and set(NOT_CHECKED) <= RUN_HERE
    others = {p.stem for p in DOCS.glob("*.md") if python_blocks(p.stem)} - pages
    assert not others, f"docs pages with python blocks no test runs: {sorted(others)}"


def test_exposure(offline, capsys):
    alerts: list[Any] = []
    namespace = {
        "sources": [bm25_source(n, n, description=n) for n in ("astronomy", "cooking")],
        "enc": offline,
        "page_security": alerts.append,
    }
    (result,) = run("exposure", 0, namespace)
    step = next(s for s in result.trace if s.stage == "exposure")
    assert step.detail["caller"] == "user-42" and step.detail["withheld"] == 0
    assert step.detail["sources"] == {"*": {"distinct": len(result.hits), "budget": 200}}
    assert namespace["ledger"].callers() == {"user-42"} and not alerts


def test_llm_extractor(offline, capsys):
    from ragroute.types import Document

    placeholder = re.compile(r"^llm = \.\.\. .*$", flags=re.M)
    assert placeholder.search(python_blocks("extractors")[1]), "the placeholder the stand-in replaces"
    namespace = {
        "llm": ScriptedLLM(),
        "docs": [Document(id="ada", title="Ada Brennan", text="Ada Brennan was born in Kellow.")],
        "more_docs": [Document(id="kellow", title="Kellow", text="Kellow is a market town.")],
        "encoder": offline,
    }
    run("extractors", 1, namespace, edit=lambda block: placeholder.sub("", block))
    assert capsys.readouterr().out.split() == ["2", "0", "[]"]  # calls, cache hits, failures
    graph = namespace["graph"]
    assert {"ada brennan", "kellow"} <= set(graph.tables.phrases) and len(graph.documents) == 2
    assert Path("indexes/.cache/llm-openie/openie.sqlite").is_file()  # the cache_dir it names


def test_gating(offline, capsys):
    from ragroute.context import QueryContext

    # LABELS: any source name needs retrieval; no / none / no_tool (any case, - or space) answer
    retrieve = [
        f"{question} {name}?"
        for name in ("Zorblat Quenvar", "Mirtoll Blenshaw", "Trazzik Vumbrel", "Oskarine Pelltrode")
        for question in ("Where was", "Which river flows near", "Who taught", "When did the town of")
    ]
    answer = [f"What is {a} plus {b}?" for a, b in ((2, 2), (3, 5), (7, 1), (4, 4), (6, 3), (9, 2))] + [
        f"What colour is the {thing}?" for thing in ("sky", "grass", "sun", "snow", "sea", "night")
    ]
    labels = ["No-Tool", "none", "no", "no tool"]
    rows = [{"text": t, "label": "people_places"} for t in retrieve]
    rows += [{"text": t, "label": labels[i % len(labels)]} for i, t in enumerate(answer)]
    Path("train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    namespace = {
        "encoder": offline,
        "sources": [
            bm25_source("people_places", "multihop", description="Painters, engineers, towns and rivers."),
            bm25_source("astronomy", "astronomy", description="Astronomy and astrophysics."),
        ],
        "llm": ScriptedLLM(),
    }
    saved, reason = run("gating", 0, namespace)
    assert Path(saved, "CURRENT").is_file()
    result = namespace["result"]
    assert result.hits == [] and result.decision.chosen == ["none"]  # answered: no hits
    assert result.decision.decided_by == "gate:trained" and result.trace[0].stage == "gate"
    assert reason.startswith("p_retrieve ") and " < threshold " in reason

    fitted = namespace["gate"]
    assert run("gating", 1, namespace) == []
    assert namespace["gate"].threshold == 0.5 and fitted.threshold != 0.5  # each a new gate
    assert fitted.with_operating_point(retrieve_cost=0.2).threshold == 0.2  # retrieve if p > 0.2
    rated = fitted.with_operating_point(retrieval_rate=0.7)
    decided = rated.gate_many([QueryContext.of(t) for t in retrieve + answer])
    assert abs(np.mean([d.action == "retrieve" for d in decided]) - 0.7) < 0.1

    (answer_, complete, calls, evidence), trace = run("gating", 2, namespace)
    assert answer_ == "the Varne River" and complete and calls == 2
    assert {"ada-brennan", "kellow"} <= set(evidence)
    stages = [step["stage"] for step in trace]
    assert stages[0] == "plan" and stages[-1] == "final"
    assert {"gate", "retrieve", "step-answer"} <= set(stages)


def integration_namespace(encoder) -> dict[str, Any]:
    """The names the integrations page takes as given: a pipeline with an `hr` source, an index,
    a LlamaIndex vector index and a LangChain vector store (over the hashing encoder)."""
    from langchain_core.documents import Document as LangChainDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    from ragroute.index.build import build_index
    from ragroute.integrations.llamaindex_embedding import EncoderEmbedding
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.sources import Source
    from ragroute.types import Document

    class HashingEmbeddings(Embeddings):
        def embed_documents(self, texts):
            return encoder.encode_documents(texts).tolist()

        def embed_query(self, text):
            return encoder.encode_queries([text])[0].tolist()

    tables = bm25_source("product_tables", "product_tables", description="Products and prices.")
    tickets = bm25_source("it_support", "it_support/tickets.jsonl", description="IT help-desk tickets.")
    payroll = Document(id="pay", text="Salaries are paid on the 25th.", metadata={"access": "hr"})
    hr = Source("hr", build_index([payroll], "dense", encoder=encoder, name="hr"), access=frozenset({"hr"}))
    store = InMemoryVectorStore(HashingEmbeddings())
    store.add_documents(
        [
            LangChainDocument(page_content="Ticket: the printer jams on tray 2.", id="t1"),
            LangChainDocument(page_content="Ticket: the VPN drops.", id="t2", metadata={"access": "it"}),
        ]
    )
    wiki = [
        TextNode(id_="w1", text="Wiki: how to book a meeting room."),
        TextNode(id_="w2", text="Wiki: the office Wi-Fi password policy.", metadata={"access": "hr"}),
    ]
    return {
        "pipeline": pipeline_from_settings([tables, tickets, hr], {"kind": "prototype"}, encoder=encoder),
        "index": tables.retriever,
        "query": "When are salaries paid?",
        "alice": SimpleNamespace(groups=["hr", "staff"]),
        "encoder": encoder,
        "manuals_index": tickets.retriever,
        "vector_store_index": VectorStoreIndex(wiki, embed_model=EncoderEmbedding(encoder)),
        "vectorstore": store,
        "store": store,
    }


def test_integrations(offline):
    from ragroute.context import QueryContext
    from ragroute.integrations.langchain import LangChainRetrieverAdapter
    from ragroute.integrations.llamaindex import LlamaRetrieverAdapter
    from ragroute.route.base import Decision

    namespace = integration_namespace(offline)
    routed = namespace["pipeline"]

    metadata, last = run("integrations", 1, namespace)
    assert {"doc_id", "source", "score", "title", "route_probability", "decision_id"} <= set(metadata)
    assert isinstance(last, Decision) and last.chosen == namespace["retriever"].last_decision.chosen
    assert isinstance(namespace["decision"], Decision) and namespace["plain"].k == 3

    assert run("integrations", 2, namespace) == []
    manuals, wiki, tickets = namespace["sources"]
    assert [s.name for s in namespace["sources"]] == ["manuals", "wiki", "tickets"]
    assert wiki.retriever.search("book a meeting room", 1)[0].doc_id == "w1"
    assert tickets.retriever.search("the printer jams", 1)[0].doc_id == "t1"
    assert namespace["pipeline"].retrieve("printer jams on tray 2", k=3).hits

    namespace["pipeline"] = routed  # the page's pipeline, with its `hr` source
    (documents,) = run("integrations", 3, namespace)
    assert namespace["for_alice"].scopes == ("hr", "staff") and namespace["retriever"].scopes == ("hr",)
    assert isinstance(documents, list) and documents

    llama, langchain_adapter = run("integrations", 4, namespace)
    assert isinstance(llama, LlamaRetrieverAdapter)
    assert isinstance(langchain_adapter, LangChainRetrieverAdapter)
    for scoped, (public, held) in ((llama, ("w1", "w2")), (langchain_adapter, ("t1", "t2"))):
        seen = {h.doc_id for h in scoped.search_contexts([QueryContext.of("wiki ticket")], 5)[0]}
        assert public in seen and held not in seen  # a caller without scopes sees the public ones


def test_rerank(offline):
    from ragroute.index.build import build_index
    from ragroute.integrations.llamaindex import IndexLlamaRetriever
    from ragroute.loaders import load_corpus

    index = build_index(load_corpus(CORPORA / "astronomy"), "hybrid", encoder=offline, name="astronomy")
    namespace = {
        "retriever": IndexLlamaRetriever(index, similarity_top_k=10),
        "query": "why does the ion tail of a comet point away from the sun",
    }
    run("rerank", 0, namespace)
    probs = namespace["probs"]
    assert probs.shape == (2,) and 0 < probs[1] < probs[0] < 1  # the order is right
    run("rerank", 1, namespace)
    nodes = namespace["nodes"]
    assert 0 < len(nodes) <= 5 and nodes[0].node.metadata["doc_id"] == "comets"
    assert all(n.node.metadata["rerank"]["stage1_from"] == "fused" for n in nodes)  # ragroute's own nodes


def test_skills(offline, capsys):
    from ragroute.gate import TrainedGate
    from ragroute.skills import SkillWarning
    from ragroute.skills.router import SkillRoute, SkillRouter

    shutil.copytree(ROOT / "tests" / "data" / "skills" / "skill_md", "skills")
    tool = [
        "send an email to my boss", "what's the weather in Paris tomorrow", "fill in this PDF form",
        "translate this sentence into German", "convert 5 miles to km", "directions to the airport",
        "share price of Apple today", "summarize this PDF report", "add a meeting on Friday",
        "email the team the agenda", "forecast for Berlin this weekend", "extract the tables of a pdf",
    ]  # fmt: skip
    no_tool = [
        "write a haiku about spring", "tell me a joke", "write a poem about the sea",
        "compose a limerick about cats", "give me a synonym for happy", "write a haiku about winter",
        "write a short story about a dragon", "tell me a riddle", "write a sonnet about the moon",
    ]  # fmt: skip
    gate = TrainedGate.fit(tool + no_tool, [True] * len(tool) + [False] * len(no_tool), offline)
    gate.save("gates/need_tool")

    namespace: dict[str, Any] = {}
    with pytest.warns(SkillWarning):  # the test catalogue's broken skills, one warning each
        run("skills", 0, namespace)
    out = capsys.readouterr().out.splitlines()
    said = re.search(r"print\(catalogue\)\s+# (.*)", python_blocks("skills")[0]).group(1)
    catalogue = namespace["catalogue"]
    assert re.fullmatch(re.sub(r"\d+", r"\\d+", re.escape(said)), out[0])
    counts = f"{len(catalogue)} skills, kind='skill_md', source=skills, warnings={len(catalogue.warnings)}"
    assert out[0] == f"Catalogue({counts})"
    assert out[1:] == [f"warning: {line}" for line in catalogue.warnings]
    assert namespace["skill"].id == "pdf/forms" and len(namespace["docs"]) == len(catalogue)

    namespace["tasks"] = ["send an email", "fill in a pdf form"]
    with pytest.warns(SkillWarning):  # the catalogue loaded again
        best, applies, stages, as_dict, many, _, loaded = run("skills", 1, namespace)
    assert best[0] == "pdf/forms" and 0 < best[1] < 1  # the reranker's probability
    assert applies == (False, None)  # no abstention=
    said = re.search(r"\[step\.stage for step in route\.trace\]\s+# (\[.*?\])", python_blocks("skills")[1])
    assert stages == ast.literal_eval(said.group(1)) == ["retrieve", "rerank", "abstain"]
    assert set(as_dict) == {"id", "skills", "abstain", "p_applies"}
    assert set(as_dict["skills"][0]) == {"id", "name", "score", "metadata"}
    assert [type(r) for r in many] == [SkillRoute, SkillRoute]
    assert Path("indexes/skills/CURRENT").is_file() and isinstance(loaded, SkillRouter)
    assert loaded.reranker is not None  # loaded from the folder named

    namespace.update(encoder=offline, my_gate=gate)
    (abstain, p_applies), detail = run("skills", 2, namespace)
    assert abstain is True and p_applies < 0.5  # True, a small probability
    assert set(detail) == {"name", "path", "action", "reason", "values"}
