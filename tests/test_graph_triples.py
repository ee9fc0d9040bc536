"""User triples (CSV, TSV, JSONL, GraphML) and networkx graphs turned into graph indexes."""

from __future__ import annotations

import csv
import json

import networkx as nx
import numpy as np
import pytest

from ragroute.errors import CorpusFormatError
from ragroute.graph.build import build_graph
from ragroute.graph.extract import Fact
from ragroute.graph.triples import (
    MAX_REPORTED,
    Triple,
    build_graph_from_triples,
    extractions_from_triples,
    read_triples,
    triples_from_networkx,
    triples_from_records,
)
from ragroute.graph.views import edges, write_graphml
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.types import Document

QUESTION = "Which river flows through the town where Ada Brennan was born?"
ROWS = [
    {"subject": "Ada Brennan", "predicate": "born in", "object": "Kellow"},
    {"subject": "Varne River", "relation": "flows through", "object": "Kellow"},
    {"subject": "Otto Lind", "predicate": "born in", "object": "Dressel"},
    {"subject": "Dressel", "predicate": "lies on", "object": "Amber Lake"},
]


def write_csv(path, rows, delimiter=","):
    header = ["subject", "predicate", "object", "passage", "text"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [row.get(k, row.get("relation", "")) if k == "predicate" else row.get(k, "") for k in header]
            )
    return path


def test_triples_without_passages_become_passages_that_answer_two_hops(tmp_path, hashing_encoder):
    index = build_graph_from_triples(ROWS, hashing_encoder, name="kg")
    docs = {d.id: d for d in index.store.documents}
    assert list(docs) == ["triple-1", "triple-2", "triple-3", "triple-4"]
    assert docs["triple-2"].text == "Varne River flows through Kellow."
    assert docs["triple-1"].metadata == {"origin": "triples"}
    assert index.tables.phrases == [
        "ada brennan",
        "kellow",
        "varne river",
        "otto lind",
        "dressel",
        "amber lake",
    ]
    assert len(index.tables.fact_subject) == 4
    hits = index.search(QUESTION, k=2)
    assert [h.doc_id for h in hits] == ["triple-1", "triple-2"]  # both hops, in order
    assert hits[0].explain["method"] == "ppr" and "ada brennan" in hits[0].explain["seeds"]
    # the index is an ordinary graph index: stored, loaded, grown by the recorded extractor
    save_index(index, tmp_path / "kg")
    loaded = load_index(tmp_path / "kg", hashing_encoder)
    assert [h.doc_id for h in loaded.search(QUESTION, k=2)] == ["triple-1", "triple-2"]
    assert loaded.manifest.params["extractor"]["name"] == "rules"
    loaded.add([Document(id="d9", title="Kellow Church", text="Kellow Church is a Norman church in Kellow.")])
    assert len(loaded) == 5 and "kellow church" in loaded.tables.phrases


def test_csv_tsv_and_jsonl_give_the_same_graph(tmp_path, hashing_encoder):
    rows = [dict(r, passage="bio-ada" if i == 0 else "") for i, r in enumerate(ROWS)]
    rows[0]["text"] = "Ada Brennan, a painter, was born in Kellow."
    csv_set = read_triples(write_csv(tmp_path / "t.csv", rows))
    tsv_set = read_triples(write_csv(tmp_path / "t.tsv", rows, "\t"))
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    jsonl_set = read_triples(jsonl)
    # CSV line numbers count the header: row 1 is on line 2
    assert [t.line for t in csv_set.triples] == [2, 3, 4, 5]
    assert [t.line for t in jsonl_set.triples] == [1, 2, 3, 4]
    assert csv_set.passages["bio-ada"].text == "Ada Brennan, a painter, was born in Kellow."
    built = []
    for triple_set in (csv_set, tsv_set, jsonl_set):
        docs, extractions = extractions_from_triples(triple_set)
        pairs = [[(f.subject, f.object) for f in e.facts] for e in extractions]
        built.append(([(d.id, d.text) for d in docs], [(e.phrases, p) for e, p in zip(extractions, pairs)]))
        assert docs[0].id == "bio-ada" and docs[0].text.startswith("Ada Brennan, a painter")
    assert built[0][1] == built[1][1] == built[2][1]  # same phrases and facts
    assert [d[1] for d in built[0][0]] == [d[1] for d in built[2][0]]  # same passage texts
    # passage-less triples are named by their line: CSV lines count the header
    assert [d[0] for d in built[0][0]] == ["bio-ada", "triple-3", "triple-4", "triple-5"]
    assert [d[0] for d in built[2][0]] == ["bio-ada", "triple-2", "triple-3", "triple-4"]


def test_triples_join_corpus_documents_by_id_and_share_one_passage_by_id(hashing_encoder):
    corpus = [Document(id="p1", title="Ada Brennan", text="Ada Brennan was a painter.")]
    rows = [
        {"subject": "Ada Brennan", "predicate": "born in", "object": "Kellow", "passage": "p1"},
        {"subject": "Kellow", "predicate": "on", "object": "Varne River", "passage": "geo"},
        {"subject": "Varne River", "predicate": "rises in", "object": "Marl Hills", "passage": "geo"},
        {"subject": "Kellow", "predicate": "on", "object": "Varne River"},  # no passage
        {"subject": "kellow", "predicate": "on", "object": "Varne  River"},  # same triple: same passage
    ]
    docs, extractions = extractions_from_triples(rows, corpus)
    assert [d.id for d in docs] == ["p1", "geo", "triple-4"]
    assert docs[0].text == "Ada Brennan was a painter."  # a corpus document keeps its text
    assert docs[1].text == "Kellow on Varne River. Varne River rises in Marl Hills."
    assert docs[1].metadata == {"origin": "triples"} and docs[0].metadata == {}
    p1 = extractions[0]
    assert ("ada brennan", "kellow") in {(f.subject, f.object) for f in p1.facts}  # added to the extraction
    assert "kellow" in p1.phrases
    if "relation" in Fact.__dataclass_fields__:  # the predicate is kept on the fact
        assert [f.relation for f in extractions[1].facts] == ["on", "rises in"]
    # the repeated triple is one statement: one fact (two, edge weight 2, until session 44, while
    # the passage's text states it once)
    assert len(extractions[2].facts) == 1 and docs[2].text == "Kellow on Varne River."
    index = build_graph_from_triples(rows, hashing_encoder, documents=corpus)
    t = index.tables
    a, b = t.phrases.index("ada brennan"), t.phrases.index("kellow")
    assert t.adjacency[a, b] == 1.0
    k, v = t.phrases.index("kellow"), t.phrases.index("varne river")
    assert t.adjacency[k, v] == 2.0  # geo once, triple-4 once


def test_bad_triples_are_all_reported_with_their_line_numbers(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "Subject,Relation,Object\n"
        "Ada Brennan,born in,Kellow\n"
        ",born in,Dressel\n"  # line 3: no subject
        "Otto Lind,born in,Dressel\n"
        "Kellow,on,\n"  # line 5: no object
        "Kellow\n"  # line 6: short row
        '"...",x,Kellow\n',  # line 7: punctuation only
        encoding="utf-8",
    )
    with pytest.raises(CorpusFormatError) as info:
        read_triples(path)
    message = str(info.value)
    assert "4 bad triples at lines 3, 5, 6, 7 " in message
    assert "line 3: no subject" in message and "line 5: no object" in message
    assert message.endswith("; ...)")  # a fourth reason is left unsaid, and marked (session 55)
    assert "\n" not in message
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(
        '{"subject": "a", "object": "b"}\n{"subject": "a"\n\n{"subject": "a", "object": null}\n[1, 2]\n'
        '{"subject": ["x"], "object": "b"}\n{"subject": "a", "object": "b", "text": "orphan"}\n',
        encoding="utf-8",
    )
    with pytest.raises(
        CorpusFormatError, match=r"5 bad triples at lines 2, 4, 5, 6, 7 \(line 2: invalid JSON"
    ):
        read_triples(jsonl)


def test_a_csv_quote_never_closed_is_refused_naming_its_line(tmp_path):
    """Until session 41 the rows after an unclosed quote became that triple's object, silently."""
    path = tmp_path / "t.csv"
    path.write_text('subject,relation,object\nA,likes,"B\nC,likes,D\nE,likes,F\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError) as info:
        read_triples(path)
    assert str(info.value) == (
        "t.csv line 2: a quoted field opened on this line is never closed (it would take in all 2 lines "
        'after it); close it with ", and write a " inside a quoted field as ""'
    )


def test_a_csv_row_with_more_cells_than_the_header_is_a_bad_row(tmp_path):
    """Until session 54 the cells past the header's were dropped silently: an unquoted comma in a
    predicate shifted the object ("1901") and the real one ("Kellow") was lost. Empty cells past the
    header (a trailing comma) are no problem."""
    path = tmp_path / "t.csv"
    path.write_text(
        "subject,predicate,object\nAda Brennan,born in, 1901,Kellow\nOtto Lind,born in,Dressel,,\n",
        encoding="utf-8",
    )
    with pytest.raises(CorpusFormatError) as info:
        read_triples(path)
    assert str(info.value) == "t.csv: 1 bad triple at line 2 (line 2: 4 fields, the header names 3)"
    path.write_text("subject,predicate,object\nOtto Lind,born in,Dressel,,\n", encoding="utf-8")
    assert [(t.subject, t.object) for t in read_triples(path).triples] == [("Otto Lind", "Dressel")]


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    """Until session 54 "subject,object,Subject" read every row's subject from the third column,
    silently (header names are case-insensitive)."""
    path = tmp_path / "t.csv"
    path.write_text("subject,object,Subject,,\nAda,Kellow,Bob,,\n", encoding="utf-8")
    with pytest.raises(
        CorpusFormatError, match=r"^t\.csv: the header names a column twice \('subject' in columns 1, 3\)"
    ):
        read_triples(path)


def test_a_jsonl_key_written_twice_in_other_case_is_a_bad_row(tmp_path):
    """Until session 54 {"subject": "Ada", "Subject": "Bob"} read the subject Bob, silently."""
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"subject": "Ada", "object": "Kellow"}\n{"subject": "Ada", "Subject": "Bob", "object": "Kellow"}\n',
        encoding="utf-8",
    )
    with pytest.raises(CorpusFormatError) as info:
        read_triples(path)
    assert str(info.value) == (
        "t.jsonl: 1 bad triple at line 2 (line 2: a key written twice ('subject', 'Subject': names are "
        "case-insensitive))"
    )


def test_a_triples_file_is_decoded_as_every_file_a_user_gives(tmp_path):
    """A UTF-16 file was "not UTF-8 text (byte 0)", a Latin-1 one named a byte offset, and one in
    UTF-16 without a byte order mark was read with a NUL between each two letters (the header
    'subject' was 's u b j e c t') until session 51: each is named as the corpus loaders name it."""
    rows = "subject,relation,object\nAda,born in,Kellow\n"
    for name, data, said in [
        ("bom.csv", rows.encode("utf-16"), r"the file is UTF-16 \(it starts with a UTF-16 byte order mark\)"),
        (
            "latin.csv",
            (rows + "Caf\xe9,in,Kellow\n").encode("latin-1"),
            r"invalid UTF-8 on line 3 \(byte 0xe9\)",
        ),
        ("nobom.csv", rows.encode("utf-16-le"), "the file looks like UTF-16LE without a byte order mark"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CorpusFormatError, match=rf"{name}: {said}"):
            read_triples(path)
    path = tmp_path / "bom8.csv"
    path.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    assert [(t.subject, t.object) for t in read_triples(path).triples] == [("Ada", "Kellow")]


def test_a_jsonl_triple_holding_nan_or_half_a_surrogate_pair_is_a_bad_triple(tmp_path):
    """`"object": NaN` was the phrase 'nan', and `"subject": "Ada\\ud800"` a phrase the graph's
    UTF-8 phrases file could not hold (until session 51): bad triples, named with their line."""
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"subject": "Ada", "object": NaN}\n{"subject": "Ada\\ud800", "object": "Kellow"}\n'
        '{"subject": "Ada", "object": "Kellow", "passage": "p1", "text": "Ada \\udc80"}\n'
        '{"subject": "Ada", "object": "Kellow"}\n',
        encoding="utf-8",
    )
    with pytest.raises(CorpusFormatError) as info:
        read_triples(path)
    message = str(info.value)
    assert message.startswith("t.jsonl: 3 bad triples at lines 1, 2, 3 (line 1: 'object' is NaN, not text")
    assert "line 2: not valid text: lone surrogate U+D800" in message


def test_many_bad_lines_are_capped_but_counted(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps({"subject": f"s{i}"}) for i in range(MAX_REPORTED + 10)) + "\n")
    with pytest.raises(CorpusFormatError) as info:
        read_triples(path)
    message = str(info.value)
    assert f"{MAX_REPORTED + 10} bad triples" in message and "and 10 more" in message
    assert f", {MAX_REPORTED} and 10 more" in message and f", {MAX_REPORTED + 1}" not in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", "", "no triples"),
        ("header.csv", "subject,object\n", "no triples"),
        ("blank.jsonl", "\n  \n", "no triples"),
        ("noobject.csv", "subject,predicate\na,b\n", "must name 'subject' and 'object'"),
        ("t.txt", "a b c\n", "unknown triples format .txt"),
        (
            "conflict.jsonl",
            '{"subject":"a","object":"b","passage":"p","text":"one"}\n'
            '{"subject":"a","object":"c","passage":"p","text":"two"}\n',
            "another text on line 1",
        ),
    ],
)
def test_empty_or_malformed_triple_files_are_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=expected):
        read_triples(path)


def test_networkx_graph_with_passage_nodes(hashing_encoder):
    graph = nx.DiGraph()  # edge direction: subject -> object
    graph.add_node("doc-ada", text="Ada Brennan was born in Kellow.", title="Ada Brennan")
    graph.add_node("doc-kellow", type="passage", text="The Varne River flows through Kellow.")
    graph.add_node(1, name="Ada Brennan")
    graph.add_node(2, name="Kellow")
    graph.add_node(3, name="Varne River")
    graph.add_edges_from([("doc-ada", 1), ("doc-ada", 2), ("doc-kellow", 2), ("doc-kellow", 3)])
    graph.add_edge(1, 2, relation="born in")  # both phrases are in doc-ada only: stated there
    graph.add_edge(3, 2, relation="flows through")
    graph.add_edge(1, 3, type="synonym", weight=0.9)  # skipped
    graph.add_edge("Otto Lind", "Dressel", label="born in")  # nobody mentions both: its own passage
    triple_set = triples_from_networkx(graph)
    assert {(t.subject, t.object, t.predicate, t.passage) for t in triple_set.triples} == {
        ("Ada Brennan", "Kellow", "born in", "doc-ada"),
        ("Varne River", "Kellow", "flows through", "doc-kellow"),
        ("Otto Lind", "Dressel", "born in", ""),
    }
    index = build_graph_from_triples(graph, hashing_encoder)
    docs = {d.id: d for d in index.store.documents}
    assert docs["doc-ada"].title == "Ada Brennan" and docs["doc-kellow"].text.startswith("The Varne")
    assert docs["triple-8"].text == "Otto Lind born in Dressel."  # edge number 8 of the graph
    assert [h.doc_id for h in index.search(QUESTION, k=2)] == ["doc-ada", "doc-kellow"]
    with pytest.raises(CorpusFormatError, match="no triples"):
        triples_from_networkx(nx.Graph())


def test_graphml_export_imports_back(tmp_path, hashing_encoder):
    corpus = [
        Document(id="p1", title="Ada Brennan", text="Ada Brennan was a painter. She was born in Kellow."),
        Document(id="p2", title="Kellow", text="Kellow is a town. The Varne River flows through Kellow."),
        Document(id="p3", title="Dressel", text="Dressel is a village on the Amber Lake."),
    ]
    original = build_index(corpus, "graph", encoder=hashing_encoder)
    path = write_graphml(original, tmp_path / "g.graphml")
    again = build_graph_from_triples(read_triples(path), hashing_encoder)
    assert [(d.id, d.text, d.title) for d in again.store.documents] == [
        (d.id, d.text, d.title) for d in corpus
    ]
    assert sorted(again.tables.phrases) == sorted(original.tables.phrases)
    # same phrase pairs, and every passage linked to the same phrases
    assert {tuple(sorted(p)) for p in _fact_names(again)} == {tuple(sorted(p)) for p in _fact_names(original)}
    assert _passage_links(again) == _passage_links(original)
    assert [h.doc_id for h in again.search(QUESTION, k=2)] == [
        h.doc_id for h in original.search(QUESTION, k=2)
    ]


def test_graphml_export_imports_back_the_same_facts_and_weights(tmp_path, hashing_encoder):
    """Until session 36 an exported fact named no passage: the import spread it over every passage
    mentioning both its phrases, once each, so a fact stated twice in one passage came back with
    weight 1, and one stated once came back with weight 2 when another passage named both."""
    corpus = [
        Document(id="p1", text="Ada Brennan lived in Kellow. Ada Brennan painted Kellow."),
        Document(id="p2", text="Ada Brennan was a painter. Kellow is a town."),
        Document(id="p3", text="The Varne River flows through Kellow."),
    ]
    original = build_index(corpus, "graph", encoder=hashing_encoder)
    exported = write_graphml(original, tmp_path / "g.graphml")
    again = build_graph_from_triples(read_triples(exported), hashing_encoder)
    assert sorted(again.tables.phrases) == sorted(original.tables.phrases)

    def facts(index):
        t, ids = index.tables, [d.id for d in index.store.documents]
        links = t.fact_passages.tocsr()
        out = {}
        for f, (a, b) in enumerate(zip(t.fact_subject.tolist(), t.fact_object.tolist())):
            pair = tuple(sorted((t.phrases[a], t.phrases[b])))
            stated = sorted(ids[i] for i in links.indices[links.indptr[f] : links.indptr[f + 1]])
            out[pair] = (stated, float(t.adjacency[a, b]))
        return out

    assert facts(again) == facts(original)
    assert facts(original)[("ada brennan", "kellow")] == (["p1"], 2.0)  # two sentences of p1


def test_access_labels_survive_export_and_triples_carry_them(tmp_path, hashing_encoder):
    """A GraphML export kept name, type, passage, title and text only: re-imported, a passage
    labelled hr came back public and the walk returned it to callers without scopes."""
    from ragroute.context import QueryContext

    corpus = [
        Document(id="p1", text="Ada Brennan was born in Kellow.", metadata={"access": ["hr"], "year": 1901}),
        Document(id="p2", text="The Varne River flows through Kellow."),
    ]
    path = write_graphml(build_index(corpus, "graph", encoder=hashing_encoder), tmp_path / "g.graphml")
    again = build_graph_from_triples(read_triples(path), hashing_encoder)
    assert {d.id: d.metadata for d in again.store.documents}["p1"] == {
        "access": ["hr"],
        "year": 1901,
        "origin": "triples",
    }
    public = again.search_contexts([QueryContext.of("Ada Brennan Kellow")], k=5)[0]
    assert [h.doc_id for h in public] == ["p2"]
    # a triples file names a passage's access labels (consistent across its lines), and a GraphML
    # node an access attribute
    rows = [
        {"subject": "Ada Brennan", "object": "Kellow", "passage": "s1", "access": "hr, legal"},
        {"subject": "Ada Brennan", "object": "painter", "passage": "s1", "access": ["legal", "hr"]},
        {"subject": "Varne River", "object": "Kellow", "passage": "s2"},
    ]
    graph = build_graph_from_triples(triples_from_records(rows), hashing_encoder)
    assert {d.id: d.metadata.get("access") for d in graph.store.documents} == {
        "s1": ["hr", "legal"],
        "s2": None,
    }
    bad = [{**rows[0]}, {**rows[1], "access": "hr"}]
    with pytest.raises(CorpusFormatError, match="passage 's1' has other access labels on line 1"):
        triples_from_records(bad)
    with pytest.raises(CorpusFormatError, match="'access' given without 'passage'"):
        triples_from_records([{"subject": "a", "object": "b", "access": "hr"}])
    labelled = nx.Graph()
    labelled.add_node("x", type="passage", text="Dressel lies on the Amber Lake.", access="hr")
    assert triples_from_networkx(labelled).metadata == {"x": {"access": ["hr"]}}
    labelled.nodes["x"]["metadata"] = "{not json"
    with pytest.raises(CorpusFormatError, match="passage 'x': metadata is not JSON"):
        triples_from_networkx(labelled)


def test_text_given_for_a_corpus_document_is_said_to_be_left_out(hashing_encoder):
    corpus = [Document(id="p1", text="Ada Brennan was a painter.")]
    rows = [{"subject": "Ada Brennan", "object": "Nobel prize", "passage": "p1", "text": "She won a prize."}]
    with pytest.warns(
        UserWarning, match=r"1 passage given text, title or access in the triples is a corpus document"
    ):
        graph = build_graph_from_triples(triples_from_records(rows), hashing_encoder, documents=corpus)
    assert [d.text for d in graph.store.documents] == ["Ada Brennan was a painter."]


def _fact_names(index):
    t = index.tables
    return [(t.phrases[a], t.phrases[b]) for a, b in zip(t.fact_subject, t.fact_object)]


def _passage_links(index):
    t = index.tables
    rows, cols, _, types = edges(index)
    ids = [d.id for d in index.store.documents]
    return {
        (ids[b - t.n_phrases], t.phrases[a]) for a, b, kind in zip(rows, cols, types) if kind == "passage"
    }


def test_records_and_triple_objects_and_extractor_graph_agree(hashing_encoder):
    from_rows = triples_from_records(ROWS)
    from_objects = triples_from_records([Triple(r["subject"], r["object"]) for r in ROWS])
    assert [(t.subject, t.object) for t in from_rows.triples] == [
        (t.subject, t.object) for t in from_objects.triples
    ]
    # extractions from triples go through the same table builder as extracted corpora
    docs, extractions = extractions_from_triples(ROWS)
    tables = build_graph(docs, hashing_encoder)  # the rule extractor on the synthetic passages
    assert set(tables.phrases) >= {p for e in extractions for p in e.phrases}
    assert np.isfinite(tables.adjacency.data).all()


def test_a_fact_whose_phrases_are_synonyms_at_cosine_one_exports_its_own_sentence_count(
    tmp_path, hashing_encoder
):
    """ "Zürich" and "Zurich" are one vector to an encoder that strips accents (MiniLM does): their
    fact's edge weighs 1 sentence + cosine 1.0, and the export read 2 sentences from it (a GraphML
    round trip raised the weight to 3) until session 41."""
    import unicodedata

    from ragroute.graph.views import fact_sentences

    class AccentBlind:
        dim, backend, model_id = hashing_encoder.dim, "hashing", "test/accent-blind"

        def _plain(self, texts):
            return [
                "".join(c for c in unicodedata.normalize("NFD", t) if not unicodedata.combining(c))
                for t in texts
            ]

        def encode_queries(self, texts, **kwargs):
            return hashing_encoder.encode_queries(self._plain(texts))

        def encode_documents(self, texts, **kwargs):
            return hashing_encoder.encode_documents(self._plain(texts))

        def describe(self):
            return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}

    corpus = [
        Document(id="a", text="Zürich, also spelled Zurich, lies on a lake."),
        Document(id="b", text="Zurich hosts the Kunsthaus."),
    ]
    original = build_index(corpus, "graph", encoder=AccentBlind())
    t = original.tables
    z1, z2 = t.phrases.index("zürich"), t.phrases.index("zurich")
    assert t.adjacency[z1, z2] == pytest.approx(2.0)  # one sentence + the synonym cosine 1.0
    again = build_graph_from_triples(
        read_triples(write_graphml(original, tmp_path / "z.graphml")), AccentBlind()
    )
    t2 = again.tables
    assert t2.adjacency[t2.phrases.index("zürich"), t2.phrases.index("zurich")] == pytest.approx(2.0)
    assert fact_sentences(2.0, 1.0, 0.8) == 1  # a synonym pair at cosine 1
    assert fact_sentences(2.0, 0.3, 0.8) == 2  # no synonym: the weight is the count
    assert fact_sentences(2.85, 0.85, 0.8) == 2  # synonym at 0.85
    assert fact_sentences(3.0, 0.9995, 1.0) == 3  # below a threshold of 1: no synonym edge
    assert fact_sentences(2.0, 0.0, 0.8) == 2  # orthogonal phrases


def test_triples_naming_a_document_of_a_chunked_corpus_join_its_unit(hashing_encoder):
    """With a corpus cut into paragraphs, a triple naming a document by id made a passage of its
    own with the document's id beside the document's units (origin: triples) until session 41."""
    corpus = [  # as chunk_documents(..., "paragraph") cuts them
        Document(id="ada#p0", title="Ada Brennan", text="Ada Brennan was a painter.", parent_id="ada"),
        Document(id="ada#p1", title="Ada Brennan", text="She mentored Otto Lind.", parent_id="ada"),
        Document(id="kel#p0", title="Kellow", text="The Varne River flows through Kellow.", parent_id="kel"),
    ]
    rows = [
        {"subject": "Ada Brennan", "predicate": "mentored", "object": "Otto Lind", "passage": "ada"},
        {"subject": "Ada Brennan", "predicate": "born in", "object": "Kellow", "passage": "ada"},
    ]
    docs, extractions = extractions_from_triples(rows, corpus)
    assert [d.id for d in docs] == ["ada#p0", "ada#p1", "kel#p0"]  # no passage 'ada' of its own
    by_id = {e.passage: {(f.subject, f.object) for f in e.facts} for e in extractions}
    assert ("ada brennan", "otto lind") in by_id["ada#p1"]  # the unit naming both (its title names Ada)
    assert ("ada brennan", "kellow") in by_id["ada#p0"]  # none names both: the first naming either


def test_a_repeated_triple_row_gives_the_graph_the_file_gives_without_it(tmp_path, hashing_encoder):
    """Until session 44 a row repeating an earlier one (same subject, predicate, object and passage)
    was a second sentence stating the fact: its edge weighed 2, from a passage whose text states
    it once (a passage-less repeat joined the first one's passage, its text still one sentence)."""
    rows = [dict(ROWS[0], passage="bio-ada", text="Ada Brennan was born in Kellow."), *ROWS[1:]]
    repeats = [
        *rows,
        dict(ROWS[0], passage="bio-ada"),
        dict(ROWS[1], subject="varne  river", relation="Flows through"),
    ]
    plain = build_graph_from_triples(read_triples(write_csv(tmp_path / "plain.csv", rows)), hashing_encoder)
    repeated_set = read_triples(write_csv(tmp_path / "repeated.csv", repeats))
    assert len(repeated_set.triples) == len(rows)
    repeated = build_graph_from_triples(repeated_set, hashing_encoder)
    assert [(d.id, d.text) for d in repeated.store.documents] == [
        (d.id, d.text) for d in plain.store.documents
    ]
    assert repeated.tables.phrases == plain.tables.phrases
    assert (repeated.tables.adjacency != plain.tables.adjacency).nnz == 0
    assert (repeated.tables.fact_passages != plain.tables.fact_passages).nnz == 0
    ada, kellow = plain.tables.phrases.index("ada brennan"), plain.tables.phrases.index("kellow")
    assert float(repeated.tables.adjacency[ada, kellow]) == 1.0
    # the same fact in another passage, or another relation between the pair, is another sentence
    more = read_triples(write_csv(tmp_path / "more.csv", [*rows, dict(ROWS[0], passage="bio-2"),
                                                         dict(ROWS[0], predicate="lived in")]))  # fmt: skip
    assert len(more.triples) == len(rows) + 2


def test_a_passage_text_keeps_its_line_breaks_in_csv_and_jsonl_as_in_graphml(tmp_path):
    """Until session 51 a CSV or JSONL passage text had its whitespace collapsed (its paragraphs and
    table rows joined on one line) where a GraphML import kept them; rows repeating the text spaced
    otherwise still state one passage."""
    text = "Kellow is a town.\n\nThe Varne River flows through Kellow."
    rows = [
        {
            "subject": "Varne River",
            "predicate": "flows through",
            "object": "Kellow",
            "passage": "k",
            "text": text,
        },
        {
            "subject": "Kellow",
            "predicate": "is a",
            "object": "town",
            "passage": "k",
            "text": " ".join(text.split()),
        },
    ]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    csv_file = write_csv(tmp_path / "t.csv", rows)
    for path in (jsonl, csv_file):
        triple_set = read_triples(path)
        assert triple_set.passages["k"].text == text and len(triple_set.triples) == 2
    rows[1]["text"] = "Another text."
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(CorpusFormatError, match="another text"):
        read_triples(jsonl)


def test_a_passage_title_given_without_its_text_or_on_another_line_is_kept(hashing_encoder):
    """Until session 55 a ``title`` was kept only on the line giving the passage's ``text``: a title
    with no text, or on another line, was dropped silently, and a title alone given for a corpus
    document was left out without the warning the docs promise; a networkx passage node likewise."""
    rows = [
        {"subject": "Ada Brennan", "object": "Kellow", "passage": "p", "title": "Ada page"},
        {"subject": "Ada Brennan", "object": "Paris", "passage": "q", "title": "Q title"},
        {"subject": "Ada Brennan", "object": "Rome", "passage": "q", "text": "Ada Brennan went to Rome."},
    ]
    triple_set = triples_from_records(rows)
    assert triple_set.passages["q"].title == "Q title"
    docs, _ = extractions_from_triples(triple_set)
    assert [(d.id, d.title) for d in docs] == [("p", "Ada page"), ("q", "Q title")]
    graph = nx.Graph()
    graph.add_node("P", type="passage", title="Title P")
    graph.add_edges_from([("P", "ada"), ("P", "kellow"), ("ada", "kellow")])
    docs, _ = extractions_from_triples(graph)
    assert [(d.id, d.title) for d in docs] == [("P", "Title P")]
    corpus = [Document(id="c", text="Ada Brennan was a painter.", title="Old")]
    row = {"subject": "Ada Brennan", "object": "Kellow", "passage": "c", "title": "New"}
    with pytest.warns(UserWarning, match=r"1 passage given text, title or access in the triples"):
        docs, _ = extractions_from_triples([row], corpus)
    assert [d.title for d in docs] == ["Old"]


@pytest.mark.parametrize("explicit_first", [True, False])
def test_a_triple_without_passage_never_joins_a_passage_named_like_its_own(explicit_first):
    """A passage-less triple's passage is ``triple-<line>``; until session 55 a passage another line
    named so took the triple in, silently (two unrelated facts in one passage)."""
    explicit = {
        "subject": "Ada Brennan",
        "object": "Kellow",
        "passage": "triple-2" if explicit_first else "triple-1",
    }
    own = {"subject": "Otto Lind", "object": "Paris"}
    rows = [explicit, own] if explicit_first else [own, explicit]
    with pytest.raises(
        CorpusFormatError, match=r"passage id 'triple-\d' for the triple on line \d is a passage id given"
    ):
        extractions_from_triples(triples_from_records(rows))
    explicit["passage"] = "ada"
    docs, _ = extractions_from_triples(triples_from_records(rows))
    assert sorted(d.id for d in docs) == sorted(["ada", "triple-2" if explicit_first else "triple-1"])
