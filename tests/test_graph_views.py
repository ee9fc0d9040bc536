"""networkx / igraph views, GraphML and edge-list export, and statistics of a built graph."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from ragroute.graph.build import GraphParams, build_graph
from ragroute.graph.views import edges, graph_stats, to_igraph, to_networkx, write_edgelist, write_graphml
from ragroute.index.build import build_index
from ragroute.types import Document

CORPUS = [
    Document(id="p1", title="Ada Brennan", text="Ada Brennan was a painter. She was born in Kellow in 1901."),
    Document(id="p2", title="Kellow", text="Kellow is a market town. The Varne River flows through Kellow."),
    Document(id="p3", title="Varne River", text="The Varne River rises in the Marl Hills and meets the sea."),
    Document(id="p4", title="River Varne", text="River Varne has trout."),  # a synonym of "varne river"
]


@pytest.fixture
def index(hashing_encoder):
    return build_index(
        CORPUS, "graph", encoder=hashing_encoder, graph_params=GraphParams(synonym_threshold=0.8)
    )


def test_edges_are_typed_and_weighted_like_the_adjacency(index):
    t = index.tables
    rows, cols, weights, types = edges(index)
    dense = t.adjacency.toarray()
    assert len(rows) == t.adjacency.nnz // 2 and (rows < cols).all()
    np.testing.assert_allclose(weights, dense[rows, cols], rtol=1e-6)
    n = t.n_phrases
    assert set(types[cols >= n]) == {"passage"} and "passage" not in set(types[cols < n])
    assert (types == "passage").sum() == int(t.phrase_passages.sum())  # one edge per (phrase, passage)
    facts = {(int(a), int(b)) for a, b in zip(t.fact_subject, t.fact_object)}
    assert (types == "fact").sum() == len(facts)
    synonyms = [(a, b, w) for a, b, w, k in zip(rows, cols, weights, types) if k == "synonym"]
    assert len(synonyms) == t.synonym_edges >= 1
    varne, river = t.phrases.index("varne river"), t.phrases.index("river varne")
    assert (min(varne, river), max(varne, river)) in {(a, b) for a, b, _ in synonyms}
    for a, b, w in synonyms:  # a synonym edge weighs the cosine of its phrases
        assert w == pytest.approx(float(t.phrase_vectors[a] @ t.phrase_vectors[b]), abs=1e-5)


def test_networkx_and_igraph_views_agree_with_the_tables(index):
    t = index.tables
    view = to_networkx(index)
    assert view.number_of_nodes() == t.n_phrases + len(CORPUS)
    assert view.number_of_edges() == t.adjacency.nnz // 2
    kellow = t.phrases.index("kellow")
    assert view.nodes[kellow] == {"name": "kellow", "type": "phrase"}
    assert view.nodes[t.n_phrases + 1] == {"name": "p2", "type": "passage", "passage": "p2"}
    passages_of_kellow = {
        view.nodes[v]["passage"] for v in view[kellow] if view.nodes[v]["type"] == "passage"
    }
    assert passages_of_kellow == {"p1", "p2"}
    ada = t.phrases.index("ada brennan")
    assert view.edges[ada, kellow] == {"weight": 1.0, "type": "fact", "passages": '["p1"]', "sentences": 1}
    texts = to_networkx(index, with_text=True)
    assert (
        texts.nodes[t.n_phrases]["text"] == CORPUS[0].text
        and texts.nodes[t.n_phrases]["title"] == "Ada Brennan"
    )
    graph = to_igraph(index)
    assert (graph.vcount(), graph.ecount()) == (view.number_of_nodes(), view.number_of_edges())
    assert graph.vs[kellow]["name"] == "kellow" and graph.vs[t.n_phrases]["passage"] == "p1"
    assert sorted(graph.es["type"]) == sorted(d["type"] for _, _, d in view.edges(data=True))
    edge = graph.get_eid(ada, kellow)
    assert graph.es[edge]["weight"] == 1.0 and graph.es[edge]["type"] == "fact"
    # tables alone name passages by position
    bare = to_networkx(t)
    assert bare.nodes[t.n_phrases]["name"] == "passage 0"


def test_graphml_and_edgelist_files(tmp_path, index):
    path = write_graphml(index, tmp_path / "out" / "g.graphml")
    assert path.read_bytes().startswith(b"<?xml")  # XML, no pickle
    back = nx.read_graphml(path, node_type=int)
    view = to_networkx(index, with_text=True)
    assert (
        back.number_of_nodes() == view.number_of_nodes() and back.number_of_edges() == view.number_of_edges()
    )
    assert dict(back.nodes(data=True)) == dict(view.nodes(data=True))
    edge_list = write_edgelist(index, tmp_path / "g.tsv").read_text(encoding="utf-8").splitlines()
    assert edge_list[0] == "source\ttarget\tsource_name\ttarget_name\tweight\ttype"
    assert len(edge_list) == 1 + view.number_of_edges()
    ada, kellow = index.tables.phrases.index("ada brennan"), index.tables.phrases.index("kellow")
    assert f"{ada}\t{kellow}\tada brennan\tkellow\t1\tfact" in edge_list


def test_stats_count_degrees_and_hubs(index):
    t = index.tables
    stats = graph_stats(index, top=3)
    dense = t.adjacency.toarray() > 0
    degree = dense.sum(axis=1)
    assert (
        stats["phrases"] == t.n_phrases and stats["passages"] == 4 and stats["facts"] == len(t.fact_subject)
    )
    assert stats["edges"] == dense.sum() // 2
    assert sum(stats["edge_types"].values()) == stats["edges"]
    assert stats["degree"]["all"] == {
        "mean": round(float(degree.mean()), 3),
        "median": float(np.median(degree)),
        "max": int(degree.max()),
    }
    assert stats["degree"]["passage"]["max"] == int(degree[t.n_phrases :].max())
    order = sorted(range(t.n_phrases), key=lambda i: (-degree[i], i))[:3]
    assert [h["phrase"] for h in stats["hubs"]] == [t.phrases[i] for i in order]
    assert stats["hubs"][0]["degree"] == int(degree[order[0]])
    assert stats == graph_stats(t, top=3)  # the same from the tables alone


def test_an_empty_graph_has_zero_stats(hashing_encoder):
    tables = build_graph([Document(id="x", text="lowercase words only here.")], hashing_encoder)
    stats = graph_stats(tables)
    assert stats["phrases"] == 0 and stats["passages"] == 1 and stats["edges"] == 0 and stats["hubs"] == []
    assert stats["degree"]["phrase"] == {"mean": 0.0, "median": 0.0, "max": 0}
    assert to_networkx(tables).number_of_nodes() == 1


def test_graphml_with_control_characters_reads_back(tmp_path, hashing_encoder):
    """A control character in a passage's text or title (pasted from a word processor) is one XML
    cannot hold: the export used to write it as is, and no GraphML reader took the file back."""
    from ragroute.graph.triples import read_triples

    docs = [
        Document(id="c1", title="Bell\x01 Tower", text="The Bell Tower stands in Kellow.\x07 It is old."),
        Document(id="c2", title="Kellow", text="Kellow is a town.\x1b The Varne River flows through Kellow."),
    ]
    graph = build_index(docs, "graph", encoder=hashing_encoder)
    path = write_graphml(graph, tmp_path / "g.graphml")
    back = nx.read_graphml(path)
    assert back.number_of_nodes() == graph.tables.n_phrases + 2
    assert back.number_of_edges() == len(edges(graph)[0])
    texts = {a["passage"]: a["text"] for _, a in back.nodes(data=True) if a["type"] == "passage"}
    assert texts["c1"] == "The Bell Tower stands in Kellow.\ufffd It is old."
    triples = read_triples(path)  # `ragroute graph build --triples` reads it too
    assert set(triples.passages) == {"c1", "c2"}
