"""Extractor and export invariants under adversarial text (session 50 audit): a phrase key is its
own key, every fact joins two phrases of its passage, a Markdown table's rows link their cells,
and a GraphML export imports back into the same phrases, facts and passage texts; the edge list
reads back with a CSV reader; a fact naming one phrase twice is no hidden self-loop."""

from __future__ import annotations

import csv
import io
import sys
import warnings

import networkx as nx
import pytest
from conftest import PROPERTY_SETTINGS
from hypothesis import example, given
from hypothesis import strategies as st

from ragroute.errors import InvalidArgumentError
from ragroute.graph.build import GraphParams
from ragroute.graph.extract import Extraction, Fact, RuleExtractor, normalise, split_sentences
from ragroute.graph.extract_llm import LLMExtractor
from ragroute.graph.extract_spacy import SpacyExtractor
from ragroute.graph.triples import build_graph_from_triples, read_triples
from ragroute.graph.views import edges, graph_stats, nodes, write_edgelist, write_graphml
from ragroute.index.build import build_index
from ragroute.types import Document

PIECES = [
    "Ada ", "Brennan ", "Kellow ", "the ", "The ", "THE ", ". ", ", ", "; ", "\n", "\n\n", "\t", '"', "'",
    "“Big Fish” ", "1901 ", "3.5 ", "İstanbul ", "Straße ", "STRASSE ", "ﬁle ", "Zoë ", "Zoe\u0308 ", "中文 ",
    "東京タワー ", "| Ada | 1901 |\n", "|---|---|\n", "# Head\n", "\u00a0", "\u2028", "-", "(", ")", "&", "<",
    "]]>",
]  # fmt: skip
NO_SYNONYMS = GraphParams(synonym_k=0)  # an import finds synonyms itself: compare facts alone
TEXT = st.lists(st.sampled_from(PIECES), max_size=16).map("".join)


@PROPERTY_SETTINGS
@given(st.one_of(TEXT, st.text(max_size=24)))
@example("The The Straße")
@example("the (the) Beatles")
def test_a_phrase_key_is_its_own_key(text):
    """``normalise`` stripped one leading "the": "The The Straße" was keyed "the strasse", whose
    own key is "strasse", so an export imported back (which keys names again) renamed the node."""
    key = normalise(text)
    assert normalise(key) == key
    assert key == key.strip() and "  " not in key


@PROPERTY_SETTINGS
@given(TEXT, TEXT)
@example("The The Kellow lies on the Varne.", "The The Straße")
def test_rule_extraction_invariants(text, title):
    """Every phrase is a non-empty key that is its own key, listed once; every fact joins two
    different phrases of the passage."""
    extraction = RuleExtractor().extract(Document(id="d", text=text or ".", title=title))
    phrases = extraction.phrases
    assert len(set(phrases)) == len(phrases) and all(phrases)
    assert all(normalise(p) == p for p in phrases)
    for fact in extraction.facts:
        assert fact.subject in phrases and fact.object in phrases and fact.subject != fact.object


def test_each_markdown_table_row_links_its_own_cells():
    """A table was one sentence: its first 64 phrase pairs (the facts a sentence keeps) were the
    title's and the header's, so no row linked a person to the year and town on its line."""
    rows = "\n".join(f"| Person{chr(65 + i)} Smith | {1900 + i} | Town{chr(65 + i)} |" for i in range(12))
    text = "| Name | Born | Town |\n|---|---|---|\n" + rows
    assert split_sentences(text)[-1] == "| PersonL Smith | 1911 | TownL |"
    pairs = {(f.subject, f.object) for f in RuleExtractor().extract(Document(id="t", text=text)).facts}
    assert ("persona smith", "1900") in pairs and ("personl smith", "townl") in pairs
    assert ("persona smith", "personl smith") not in pairs  # two rows are two sentences


def _facts(index):
    t, ids = index.tables, [d.id for d in index.store.documents]
    links = t.fact_passages.tocsr()
    out = {}
    for f, (a, b) in enumerate(zip(t.fact_subject.tolist(), t.fact_object.tolist())):
        stated = sorted(ids[i] for i in links.indices[links.indptr[f] : links.indptr[f + 1]])
        out[tuple(sorted((t.phrases[a], t.phrases[b])))] = (stated, round(float(t.adjacency[a, b]), 4))
    return out


def _round_trip(index, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        triples = read_triples(write_graphml(index, path))
        return build_graph_from_triples(triples, index.encoder, graph_params=NO_SYNONYMS)


def _passages(index):
    return [(d.id, d.text, d.title) for d in index.store.documents]


def test_graphml_round_trip_keeps_keys_and_the_passages_lines(tmp_path, hashing_encoder):
    """The title "The The Straße" came back as the phrase "strasse" (merged with the text's own
    "Straße" node), and every passage came back with its lines joined into one."""
    corpus = [
        Document(
            id="p1",
            title="The The Straße",
            text="Kellow lies on it.\n\n| Ada Brennan | 1901 |\n| Otto Lind | 1899 |",
        ),
        Document(id="p2", title="Kellow", text="# Kellow\nKellow is a town.\tThe Straße runs through it."),
    ]
    original = build_index(corpus, "graph", encoder=hashing_encoder, graph_params=NO_SYNONYMS)
    assert "the strasse" not in original.tables.phrases and "strasse" in original.tables.phrases
    again = _round_trip(original, tmp_path / "g.graphml")
    assert _passages(again) == _passages(original)
    assert sorted(again.tables.phrases) == sorted(original.tables.phrases)
    assert _facts(again) == _facts(original)


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3))
@example([("Brennan | Straße", ". Brennan | a |\nThe The Straße ")])
@example([("only lower case here.", ""), ("Kellow.\n\nAda Brennan met Otto Lind.", "")])
def test_graphml_export_imports_back_the_same_graph(tmp_path_factory, hashing_encoder, docs):
    """The same passages (in their order: one linked to no fact came back after those that were),
    texts (line breaks kept), phrases (keys keyed again) and facts with their weights."""
    corpus = [
        Document(id=f"p{i}", text=text if text.strip() else "x", title=title)
        for i, (text, title) in enumerate(docs)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = build_index(corpus, "graph", encoder=hashing_encoder, graph_params=NO_SYNONYMS)
    again = _round_trip(original, tmp_path_factory.mktemp("g") / "g.graphml")
    assert _passages(again) == [(d.id, d.text, d.title) for d in corpus]
    assert sorted(again.tables.phrases) == sorted(original.tables.phrases)
    assert _facts(again) == _facts(original)


def test_the_edge_list_reads_back_with_a_csv_reader(tmp_path, hashing_encoder):
    """A passage id starting with a double quote opened a quoted field that swallowed the lines
    after it: a TSV reader (csv, pandas) saw fewer edges and wrong names."""
    corpus = [
        Document(id='"Kellow" notes', text="Kellow lies on the Varne River. Ada Brennan was born there."),
        Document(id="tab\there", text="Ada Brennan painted Kellow."),
        Document(id='say "hi"', text="The Varne River meets the sea."),
    ]
    index = build_index(corpus, "graph", encoder=hashing_encoder)
    path = write_edgelist(index, tmp_path / "g.tsv")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["source", "target", "source_name", "target_name", "weight", "type"]
    names = [" ".join(n["name"].split()) for n in nodes(index)]
    sources, targets, _, types = edges(index)
    assert len(rows) == 1 + len(sources) and all(len(row) == 6 for row in rows)
    for row, a, b, kind in zip(rows[1:], sources.tolist(), targets.tolist(), types):
        assert row[:4] == [str(a), str(b), names[a], names[b]] and row[5] == kind
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(rows)  # still one line an edge
    assert list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter="\t")) == rows


class _Echo:
    """An extractor whose facts name a phrase twice (the same entity on both ends)."""

    name = "echo"

    def describe(self):
        return {"name": self.name}

    def extract(self, document):
        return Extraction(
            document.id,
            phrases=["kellow", "varne river"],
            facts=[Fact("kellow", "kellow", document.id, 0), Fact("kellow", "varne river", document.id, 0)],
        )


def test_a_fact_naming_one_phrase_twice_is_no_hidden_self_loop(tmp_path, hashing_encoder):
    """It was stored as a fact and a self-loop of the walk that no edge list, GraphML file, edge
    type count or re-import showed: stats said 2 facts beside 1 fact edge."""
    docs = [Document(id="a", text="Kellow lies on the Varne River.")]
    index = build_index(docs, "graph", encoder=hashing_encoder, extractor=_Echo())
    assert index.tables.adjacency.diagonal().max() == 0
    stats = graph_stats(index)
    assert stats["facts"] == stats["edge_types"]["fact"] == 1
    back = nx.read_graphml(write_graphml(index, tmp_path / "g.graphml"))
    assert back.number_of_edges() == len(edges(index)[0]) == stats["edges"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_facts_per_sentence": -1}, "'max_facts_per_sentence' must be at least 0, not -1"),
        ({"max_facts_per_sentence": 2.5}, "'max_facts_per_sentence' must be an integer, not 2.5"),
        ({"min_chars": "2"}, "'min_chars' must be an integer, not a string"),
    ],
)
def test_an_extractor_setting_of_the_wrong_type_or_sign_is_one_line_at_once(
    monkeypatch, tmp_path, settings, message
):
    """Until session 55 no setting was checked: the build failed at its first passage with islice()'s
    ValueError (a negative or fractional cap) or a TypeError (``min_chars="2"``)."""
    with pytest.raises(InvalidArgumentError, match=f"RuleExtractor: {message}"):
        RuleExtractor(**settings)
    monkeypatch.setitem(sys.modules, "spacy", None)  # checked before spaCy is needed
    with pytest.raises(InvalidArgumentError, match=f"SpacyExtractor: {message}"):
        SpacyExtractor(**settings)
    if "min_chars" in settings:

        class Answers:
            def complete(self, prompt):
                raise AssertionError("not asked")

        with pytest.raises(InvalidArgumentError, match=f"LLMExtractor: {message}"):
            LLMExtractor(Answers(), cache_dir=tmp_path, **settings)
        assert not any(tmp_path.iterdir())  # no cache file made
