"""docs/extractors.md: its registration snippet runs as written (hashing encoder), and the
names it documents are the registered ones."""

from __future__ import annotations

import re
from pathlib import Path

import ragroute.encode
from ragroute.registry import EXTRACTORS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extractors.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_registration_snippet_builds_a_graph_with_the_new_extractor(monkeypatch, capsys, hashing_encoder):
    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *args, **kwargs: hashing_encoder)
    snippet = next(b for b in python_blocks() if "EXTRACTORS.register" in b)
    namespace: dict = {}
    try:
        exec(compile(snippet, str(DOC), "exec"), namespace)
    finally:
        EXTRACTORS.unregister("hashtags")
    assert capsys.readouterr().out.strip() == "['rockets', 'florida', 'weather']"
    graph = namespace["graph"]
    assert graph.extractor == {"name": "hashtags", "version": 1}
    tables = graph.tables
    pairs = {
        tuple(sorted((tables.phrases[a], tables.phrases[b])))
        for a, b in zip(tables.fact_subject, tables.fact_object)
    }
    assert pairs == {("florida", "rockets"), ("florida", "weather")}


def test_documented_extractors_are_registered():
    table = re.findall(r"^\| `(\w+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M)
    assert table == ["rules", "spacy", "llm"] == EXTRACTORS.names()


def test_documented_descriptions_carry_the_extractors_versions():
    """The `describe()` lines of the spacy and llm sections gave version 1; the extractors say 3
    (session 41), as the page's own introduction does."""
    from ragroute.graph.extract_llm import LLM_EXTRACTOR_VERSION
    from ragroute.graph.extract_spacy import SPACY_EXTRACTOR_VERSION

    documented = dict(re.findall(r'`\{"name": "(\w+)", "version": (\d+),', DOC.read_text(encoding="utf-8")))
    assert documented == {"spacy": str(SPACY_EXTRACTOR_VERSION), "llm": str(LLM_EXTRACTOR_VERSION)}
