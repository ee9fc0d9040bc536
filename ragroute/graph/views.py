"""Views of a built graph on demand: networkx, igraph, GraphML and edge-list files, and statistics.

Every function takes a :class:`~ragroute.graph.build.GraphTables` or a
:class:`~ragroute.graph.index.GraphIndex` (anything with ``tables`` and ``store``),
whose passage ids, titles and texts then name the passage nodes. Nothing here
changes the stored arrays; nothing is pickled.

Nodes keep the adjacency's numbering (phrases ``0 .. P-1``, then passages), with
attributes ``name`` (the phrase, or the passage id), ``type`` (``"phrase"`` or
``"passage"``) and, on passage nodes, ``passage`` (the passage id; with
``with_text``, ``title``, ``text`` and, when the passage has metadata, ``metadata``: its
metadata as JSON, access labels included, which an import reads back). Each undirected edge
appears once, with ``weight`` (the walk's edge weight) and ``type``, recovered from the tables: an
edge to a passage is ``"passage"``, a phrase pair of the fact table is ``"fact"``
(its weight counts the sentences stating it, plus the cosine when the pair is also
a synonym pair), any other phrase pair is ``"synonym"`` (weight: the cosine).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ragroute.graph.build import GraphTables

EDGE_TYPES = ("fact", "passage", "synonym")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot hold, even escaped (control characters, lone surrogates)."""


def _parts(graph: Any) -> tuple[GraphTables, list[Any] | None]:
    """The tables, and the passage documents when ``graph`` is an index."""
    if isinstance(graph, GraphTables):
        return graph, None
    tables = getattr(graph, "tables", None)
    if not isinstance(tables, GraphTables):
        raise TypeError(f"expected GraphTables or a graph index, not {type(graph).__name__}")
    store = getattr(graph, "store", None)
    return tables, (list(store.documents) if store is not None else None)


def edges(graph: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(source, target, weight, type)`` of every undirected edge once (``source < target``)."""
    tables, _ = _parts(graph)
    upper = sp.triu(tables.adjacency, k=1, format="coo")
    rows, cols = upper.row.astype(np.int64), upper.col.astype(np.int64)
    n_phrases = tables.n_phrases
    facts = set(zip(tables.fact_subject.tolist(), tables.fact_object.tolist()))
    types = np.empty(len(rows), dtype=object)
    for i, (a, b) in enumerate(zip(rows.tolist(), cols.tolist())):
        if b >= n_phrases:
            types[i] = "passage"
        else:
            types[i] = "fact" if (a, b) in facts else "synonym"
    order = np.lexsort((cols, rows))
    return rows[order], cols[order], upper.data[order].astype(np.float64), types[order]


def nodes(graph: Any, *, with_text: bool = False) -> list[dict[str, Any]]:
    """One attribute mapping per node, in node order (see the module docstring)."""
    tables, docs = _parts(graph)
    out: list[dict[str, Any]] = [{"name": p, "type": "phrase"} for p in tables.phrases]
    for i in range(tables.n_passages):
        doc = docs[i] if docs is not None and i < len(docs) else None
        pid = _passage_id(docs, i)
        attrs: dict[str, Any] = {"name": pid, "type": "passage", "passage": pid}
        if with_text and doc is not None:
            attrs["title"] = doc.title or ""
            attrs["text"] = doc.text
            if doc.metadata:  # access labels included: an import must not make a passage public
                attrs["metadata"] = json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True, default=str)
        out.append(attrs)
    return out


def _passage_id(docs: Any, i: int) -> str:
    """The id of passage ``i``: its document's, or ``passage i`` for tables alone."""
    return str(docs[i].id) if docs is not None and i < len(docs) else f"passage {i}"


def fact_passages(graph: Any) -> dict[tuple[int, int], list[str]]:
    """Per fact (phrase pair, ``a < b``): the ids of the passages that state it, sorted."""
    tables, docs = _parts(graph)
    links = tables.fact_passages.tocsr()
    out: dict[tuple[int, int], list[str]] = {}
    for fact, (a, b) in enumerate(zip(tables.fact_subject.tolist(), tables.fact_object.tolist())):
        positions = links.indices[links.indptr[fact] : links.indptr[fact + 1]].tolist()
        out[(min(a, b), max(a, b))] = sorted(_passage_id(docs, i) for i in positions)
    return out


def to_networkx(graph: Any, *, with_text: bool = False) -> Any:
    """An undirected ``networkx.Graph`` of the graph (integer nodes = adjacency ids). A fact edge
    also names the passages that state it (``passages``, a JSON list of ids) and how many
    sentences do (``sentences``), so an import rebuilds the same facts and weights (until session
    36 it spread each fact over every passage mentioning both phrases, once each)."""
    import networkx as nx

    view = nx.Graph()
    view.add_nodes_from(enumerate(nodes(graph, with_text=with_text)))
    rows, cols, weights, types = edges(graph)
    stated = fact_passages(graph)
    tables, _ = _parts(graph)
    params = getattr(graph, "graph_params", None)
    threshold = float(getattr(params, "synonym_threshold", 0.8))
    for a, b, w, t in zip(rows.tolist(), cols.tolist(), weights.tolist(), types):
        attrs: dict[str, Any] = {"weight": float(w), "type": str(t)}
        if t == "fact" and (a, b) in stated:
            ids = stated[(a, b)]
            # no synonym edges (synonym_k 0): no cosine in any fact weight (a pair of cosine 1 was
            # read as a synonym pair, and exported with one sentence too few)
            synonyms = tables.synonym_edges > 0
            cosine = float(tables.phrase_vectors[a] @ tables.phrase_vectors[b]) if synonyms else 0.0
            sentences = max(fact_sentences(w, cosine, threshold), len(ids))
            attrs.update(passages=json.dumps(ids, ensure_ascii=False), sentences=sentences)
        view.add_edge(int(a), int(b), **attrs)
    return view


def fact_sentences(weight: float, cosine: float, synonym_threshold: float) -> int:
    """How many sentences state a fact whose edge has ``weight``: the weight counts them, plus the
    pair's cosine when the pair is also a synonym pair. The synonym part is there when the weight
    less the cosine is whole and the weight itself is not; a cosine of 1 (the same name with and
    without accents: MiniLM reads "zürich" as "zurich") leaves both whole, and a pair that close is
    a synonym pair whenever it reaches the threshold (until session 41 its fact was exported with
    one sentence more, and a GraphML round trip raised its weight by 1)."""
    rest = weight - cosine
    synonym = (
        rest >= 0.5
        and abs(rest - round(rest)) < 1e-3
        and (abs(weight - round(weight)) >= 1e-3 or cosine >= max(synonym_threshold, 0.999))
    )
    return int(round(rest if synonym else weight))


def to_igraph(graph: Any) -> Any:
    """An undirected ``igraph.Graph`` with the same node and edge attributes."""
    import igraph as ig

    attrs = nodes(graph)
    rows, cols, weights, types = edges(graph)
    view = ig.Graph(n=len(attrs), edges=list(zip(rows.tolist(), cols.tolist())), directed=False)
    view.vs["name"] = [a["name"] for a in attrs]
    view.vs["type"] = [a["type"] for a in attrs]
    view.vs["passage"] = [a.get("passage", "") for a in attrs]
    view.es["weight"] = weights.tolist()
    view.es["type"] = [str(t) for t in types]
    return view


def write_graphml(graph: Any, path: str | Path, *, with_text: bool = True) -> Path:
    """Write the graph as GraphML (XML; passage titles and texts included with ``with_text``).
    Characters XML cannot hold (control characters other than tab and newlines) are written as
    U+FFFD."""
    import networkx as nx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    view = to_networkx(graph, with_text=with_text)
    # a control character in a name, title or text (text pasted from a word processor or a PDF)
    # is one XML cannot hold: it becomes U+FFFD, so the file reads back (until session 43 it was
    # written as is, and networkx, igraph and `graph build --triples` refused the whole file)
    for _, attrs in [*view.nodes(data=True), *((None, d) for *_, d in view.edges(data=True))]:
        for key, value in attrs.items():
            if isinstance(value, str):
                attrs[key] = _NOT_XML.sub("\ufffd", value)
    nx.write_graphml(view, path)
    return path


def write_edgelist(graph: Any, path: str | Path) -> Path:
    """Write one tab-separated line per undirected edge, after a header:
    ``source target source_name target_name weight type`` (names with tabs or newlines flattened;
    a name holding a double quote is quoted as CSV quotes it (inner quotes doubled), so csv readers and
    pandas read every line back: until session 50 a passage id starting with a quote opened a quoted
    field that ran over the following lines)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [" ".join(a["name"].split()) for a in nodes(graph)]
    rows, cols, weights, types = edges(graph)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["source", "target", "source_name", "target_name", "weight", "type"])
        for a, b, w, t in zip(rows.tolist(), cols.tolist(), weights.tolist(), types):
            writer.writerow([a, b, names[a], names[b], f"{w:.6g}", t])
    return path


def _summary(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"mean": 0.0, "median": 0.0, "max": 0}
    return {
        "mean": round(float(values.mean()), 3),
        "median": float(np.median(values)),
        "max": int(values.max()),
    }


def graph_stats(graph: Any, *, top: int = 10) -> dict[str, Any]:
    """Counts, edge types, degree summaries (neighbours per node) and the ``top`` hub phrases."""
    tables, _ = _parts(graph)
    adjacency = tables.adjacency
    _, _, _, types = edges(graph)
    degree = np.diff(adjacency.indptr).astype(np.int64)  # distinct neighbours (no self loops)
    n_phrases = tables.n_phrases
    phrase_degree = degree[:n_phrases]
    hubs = np.lexsort((np.arange(n_phrases), -phrase_degree))[:top]
    return {
        "phrases": n_phrases,
        "passages": tables.n_passages,
        "facts": int(len(tables.fact_subject)),
        "edges": int(len(types)),
        "edge_types": {t: int((types == t).sum()) for t in EDGE_TYPES},
        "synonym_edges": int(tables.synonym_edges),
        "degree": {
            "all": _summary(degree),
            "phrase": _summary(phrase_degree),
            "passage": _summary(degree[n_phrases:]),
        },
        "isolated_phrases": int((phrase_degree == 0).sum()),
        "hubs": [
            {
                "phrase": tables.phrases[i],
                "degree": int(phrase_degree[i]),
                "passages": int(tables.phrase_passages[i]),
            }
            for i in hubs.tolist()
        ],
    }
