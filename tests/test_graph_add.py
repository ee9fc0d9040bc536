"""Incremental graph building: GraphIndex.add and ragroute.graph.build.extend_graph."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PROPERTY_SETTINGS
from hypothesis import given
from hypothesis import strategies as st

import ragroute.graph.build as graph_build
from ragroute.errors import RagrouteError
from ragroute.graph.build import GraphParams, build_graph, extend_graph, extract_passages
from ragroute.graph.extract import RuleExtractor
from ragroute.graph.index import WalkParams
from ragroute.index.build import build_index
from ragroute.index.io import load_index, save_index
from ragroute.types import Document

QUESTION = "Which river flows through the city where Ada Brennan was born?"
# The first hop (Ada Brennan -> Kellow) is in the base corpus, the second (Kellow -> the
# Varne River) only in the added passages.
BASE = [
    Document(id="p1", title="Ada Brennan", text="Ada Brennan was a painter. She was born in Kellow in 1901."),
    Document(
        id="p4", title="Otto Lind", text="Otto Lind was a sculptor born in Dressel. He studied in Paris."
    ),
    Document(id="p5", title="Dressel", text="Dressel is a village on the Amber Lake, far from any river."),
    Document(id="p6", title="Painting", text="Painting is the practice of applying paint to a surface."),
]
ADDED = [
    Document(id="p2", title="Kellow", text="Kellow is a market town. The Varne River flows through Kellow."),
    Document(id="p3", title="Varne River", text="The Varne River rises in the Marl Hills and meets the sea."),
]


def ranked(index, query: str = QUESTION, k: int = 4) -> list[tuple[str, float]]:
    return [(h.doc_id, round(h.score, 6)) for h in index.search(query, k=k)]


def test_added_passages_answer_the_second_hop(hashing_encoder):
    index = build_index(BASE, "graph", encoder=hashing_encoder, name="kg")
    assert "p2" not in {h.doc_id for h in index.search(QUESTION, k=4)}
    index.add(ADDED)
    hits = index.search(QUESTION, k=3)
    assert {h.doc_id for h in hits} >= {"p1", "p2"}
    assert hits[0].explain["method"] == "ppr"
    assert len(index) == len(BASE) + len(ADDED)
    assert index.manifest_params()["counts"]["passages"] == len(BASE) + len(ADDED)
    # no old-new synonym pair here, so the grown graph is the graph built over all passages in order
    scratch = build_index(BASE + ADDED, "graph", encoder=hashing_encoder, name="kg")
    assert index.tables.phrases == scratch.tables.phrases
    assert abs(index.tables.adjacency - scratch.tables.adjacency).max() < 1e-6
    np.testing.assert_array_equal(index.tables.fact_subject, scratch.tables.fact_subject)
    np.testing.assert_array_equal(index.tables.fact_object, scratch.tables.fact_object)
    assert (index.tables.fact_passages != scratch.tables.fact_passages).nnz == 0
    np.testing.assert_array_equal(index.tables.phrase_passages, scratch.tables.phrase_passages)
    assert ranked(index) == ranked(scratch)


def test_old_phrases_keep_ids_and_only_new_phrases_are_encoded_and_searched(hashing_encoder, monkeypatch):
    index = build_index(BASE, "graph", encoder=hashing_encoder)
    old = index.tables
    old_phrases, old_vectors = list(old.phrases), old.phrase_vectors.copy()
    encoded: list[str] = []
    searched: list[int] = []
    real_encode, real_nearest = hashing_encoder.encode_queries, graph_build.nearest_phrases

    def encode_queries(texts, **kwargs):
        encoded.extend(texts)
        return real_encode(texts, **kwargs)

    def nearest_phrases(vectors, queries, k):
        searched.append(len(queries))
        assert len(vectors) == len(old_phrases) + len(queries)  # new phrases search all phrases
        return real_nearest(vectors, queries, k)

    monkeypatch.setattr(hashing_encoder, "encode_queries", encode_queries)
    monkeypatch.setattr(graph_build, "nearest_phrases", nearest_phrases)
    index.add(ADDED)
    new = index.tables
    assert new.phrases[: len(old_phrases)] == old_phrases
    np.testing.assert_array_equal(new.phrase_vectors[: len(old_phrases)], old_vectors)
    fresh = new.phrases[len(old_phrases) :]
    assert fresh and "kellow" not in fresh and "varne river" in fresh
    assert encoded == fresh  # only the new phrases are embedded
    assert searched == [len(fresh)]  # only they are searched for synonyms
    assert old.phrases == old_phrases  # the old tables are left as they were
    # passage nodes moved past the new phrases; the engine follows
    assert index.engine.num_nodes == new.n_phrases + len(index)
    assert list(index._passage_nodes) == list(range(new.n_phrases, new.n_phrases + len(index)))
    kellow = new.phrases.index("kellow")
    row = new.adjacency[[kellow], :].toarray()[0]
    linked = {index.store.documents[i - new.n_phrases].id for i in np.flatnonzero(row) if i >= new.n_phrases}
    assert linked == {"p1", "p2"}
    assert new.phrase_passages[kellow] == 2


def test_old_synonym_links_are_kept_and_new_phrases_link_to_old_ones(hashing_encoder):
    base = [Document(id="a", title="Varne River", text="River Varne has trout.")]
    added = [Document(id="b", title="Kellow", text="The Upper Varne River flows through Kellow.")]
    params = GraphParams(synonym_threshold=0.8)
    extractor = RuleExtractor()
    old = build_graph(base, hashing_encoder, extractor=extractor, params=params)
    assert old.synonym_edges == 1  # "varne river" ~ "river varne"
    grown = extend_graph(old, extract_passages(added, extractor), hashing_encoder, params=params)
    p0, p1 = old.n_phrases, grown.n_phrases
    upper = grown.phrases.index("upper varne river")
    assert upper >= p0
    for phrase in ("varne river", "river varne"):  # old phrases, linked from the new one's side
        other = grown.phrases.index(phrase)
        cosine = float(grown.phrase_vectors[upper] @ grown.phrase_vectors[other])
        assert cosine >= 0.8
        assert grown.adjacency[upper, other] == pytest.approx(cosine, abs=1e-6)
        assert grown.adjacency[other, upper] == grown.adjacency[upper, other]
    assert grown.synonym_edges == old.synonym_edges + 2
    # the old phrase-phrase and phrase-passage blocks are unchanged (passage "a" is node p1 now)
    np.testing.assert_array_equal(grown.adjacency[:p0, :p0].toarray(), old.adjacency[:p0, :p0].toarray())
    np.testing.assert_array_equal(grown.adjacency[:p0, [p1]].toarray(), old.adjacency[:p0, [p0]].toarray())
    assert grown.fact_passages.shape == (len(grown.fact_subject), 2)
    assert old.n_phrases == p0 and old.adjacency.shape == (p0 + 1, p0 + 1)  # old tables untouched


def test_a_synonym_of_an_old_phrase_gets_an_edge(hashing_encoder):
    base = [Document(id="a", title="Varne River", text="The Varne River is long.")]
    added = [Document(id="b", title="River Varne", text="River Varne has trout.")]  # same words
    index = build_index(base, "graph", encoder=hashing_encoder)
    index.add(added)
    tables = index.tables
    old_id, new_id = tables.phrases.index("varne river"), tables.phrases.index("river varne")
    assert old_id < new_id
    assert tables.adjacency[old_id, new_id] == pytest.approx(1.0, abs=1e-5)
    assert tables.adjacency[new_id, old_id] == tables.adjacency[old_id, new_id]
    assert tables.synonym_edges >= 1


def test_add_then_save_and_load_round_trips(tmp_path, hashing_encoder):
    index = build_index(BASE, "graph", encoder=hashing_encoder, name="kg")
    save_index(index, tmp_path / "kg")
    loaded = load_index(tmp_path / "kg", hashing_encoder)
    loaded.add(ADDED)  # adding to a graph read from disk
    index.add(ADDED)
    assert ranked(loaded) == ranked(index)
    save_index(loaded, tmp_path / "kg")
    again = load_index(tmp_path / "kg", hashing_encoder)
    assert ranked(again) == ranked(index)
    assert again.tables.phrases == index.tables.phrases
    assert again.manifest.params["counts"] == index.manifest_params()["counts"]
    assert again.manifest.params["counts"]["passages"] == len(BASE) + len(ADDED)
    again.add([Document(id="p7", title="Marl Hills", text="The Marl Hills are chalk downs near Kellow.")])
    assert len(again) == len(BASE) + len(ADDED) + 1


def test_bad_adds_raise_and_leave_the_index_unchanged(hashing_encoder):
    index = build_index(BASE, "graph", encoder=hashing_encoder)
    before = ranked(index)
    n_phrases, nnz = index.tables.n_phrases, index.tables.adjacency.nnz
    with pytest.raises(RagrouteError, match="already in the index"):
        index.add([ADDED[0], BASE[0]])
    with pytest.raises(RagrouteError, match="given twice"):
        index.add([ADDED[0], ADDED[0]])
    index.extractor = {**index.extractor, "version": -1}
    with pytest.raises(RagrouteError, match="extractor"):
        index.add(ADDED)
    assert len(index) == len(BASE)
    assert (index.tables.n_phrases, index.tables.adjacency.nnz) == (n_phrases, nnz)
    assert ranked(index) == before
    index.add([])  # nothing to do
    assert len(index) == len(BASE)


def test_a_graph_refuses_deletes_and_a_store_changed_behind_it_is_one_line(hashing_encoder):
    from ragroute.errors import IndexFormatError

    index = build_index(BASE, "graph", encoder=hashing_encoder, name="kg")
    with pytest.raises(RagrouteError, match="cannot be deleted from a knowledge graph; rebuild it"):
        index.delete([BASE[0].id])
    assert ranked(index)  # unchanged
    index.dense.delete([BASE[0].id])  # the shared store changed behind the graph's back
    with pytest.raises(IndexFormatError, match="passage nodes for .* documents: its documents changed"):
        ranked(index)


def test_a_graph_built_with_fewer_facts_a_sentence_grows_with_the_same_cap(hashing_encoder, tmp_path):
    """max_facts_per_sentence changes the facts but was not in the description: a graph built with
    2 facts a sentence, saved and loaded, grew by 64 a sentence (until session 38)."""
    capped = RuleExtractor(max_facts_per_sentence=2)
    index = build_index(BASE, "graph", encoder=hashing_encoder, extractor=capped, name="kg")
    save_index(index, tmp_path / "kg")
    loaded = load_index(tmp_path / "kg", encoder=hashing_encoder)
    assert loaded.extractor["max_facts_per_sentence"] == 2
    loaded.add(ADDED)  # the graph's own extractor, rebuilt from its description: the same cap
    with pytest.raises(RagrouteError, match="was built with extractor"):
        loaded.add(
            [Document(id="late", text="Ada Brennan met Cora Vale in Kellow.")], extractor=RuleExtractor()
        )
    assert "max_facts_per_sentence" not in RuleExtractor().describe()  # graphs built before match it


def test_the_first_walk_after_an_add_tokenizes_only_the_new_passages(hashing_encoder, monkeypatch):
    """The passages' term incidence (the walk's lexical edges) was built again from every passage
    on the first walk after each add (until session 38); it is updated from kept term counts now,
    and equals the one built from scratch."""
    from conftest import count_tokenized

    import ragroute.graph.index as graph_index
    from ragroute.graph.lexical import PassageTerms

    index = build_index(BASE, "graph", encoder=hashing_encoder, name="kg")
    index.search("Where was Ada Brennan born?", k=2)
    tokenized = count_tokenized(monkeypatch, graph_index)
    index.add(ADDED)
    index.search("Where was Ada Brennan born?", k=2)
    assert sum(tokenized) == len(ADDED)
    fresh = PassageTerms(index.store.documents)
    assert list(index._terms.vocabulary) == list(fresh.vocabulary)
    assert (index._terms.incidence != fresh.incidence).nnz == 0 and np.array_equal(
        index._terms.idf, fresh.idf
    )


def test_two_threads_adding_at_once_both_get_their_passages_into_the_graph(hashing_encoder, monkeypatch):
    """Each add extended the graph it started from outside the write lock: two adds at once both
    extended the old graph, the later one's tables replaced the earlier one's, and the graph held
    passage nodes for fewer documents than its store (every later walk a one-line error)."""
    import contextlib
    import threading

    import ragroute.graph.index as graph_index

    index = build_index(BASE, "graph", encoder=hashing_encoder, name="kg")
    both_extracting = threading.Barrier(2)
    real_extract = graph_index.extract_passages

    def extract_together(docs, extractor, show_progress=None):
        with contextlib.suppress(threading.BrokenBarrierError):  # both at once, unless kept apart
            both_extracting.wait(timeout=1.0)
        return real_extract(docs, extractor, show_progress)

    monkeypatch.setattr(graph_index, "extract_passages", extract_together)
    errors: list[BaseException] = []

    def add(docs):
        try:
            index.add(docs)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=([doc],)) for doc in ADDED]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert index.tables.n_passages == len(index.store) == len(BASE) + len(ADDED)
    assert {h.doc_id for h in index.search(QUESTION, k=3)} >= {"p1", "p2"}


def test_synonym_k_counts_other_phrases_when_vectors_tie(hashing_encoder):
    """A phrase is its own nearest phrase, but a phrase whose vector equals another's (a tie: here
    the same words in another order) may find its twin first in the kNN. Until session 50 the search
    took synonym_k + 1 hits and left out the phrase itself only by id, so with synonym_k 0 a phrase
    added to a graph was linked to its older twin (a full build of the same passages was not)."""
    from ragroute.graph.build import GraphTables
    from ragroute.graph.extract import Extraction

    vectors = hashing_encoder.encode_queries(["varne river", "river varne"])
    assert np.array_equal(vectors[0], vectors[1])
    first = Extraction("p1", phrases=["ada brennan", "varne river"], facts=[])
    second = Extraction("p2", phrases=["ada brennan", "river varne"], facts=[])
    empty = GraphTables.empty(hashing_encoder.dim)
    for k, pairs in ((0, 0), (1, 1)):
        params = GraphParams(synonym_k=k)
        whole = extend_graph(empty, [first, second], hashing_encoder, params=params)
        grown = extend_graph(extend_graph(empty, [first], hashing_encoder, params=params), [second],
                             hashing_encoder, params=params)  # fmt: skip
        assert whole.synonym_edges == grown.synonym_edges == pairs
        assert abs(whole.adjacency - grown.adjacency).max() < 1e-6


_NAMES = ["Ada Brennan", "Kellow", "Varne River", "River Varne", "Otto Lind", "Dressel", "Amber Lake", "1901"]
_SENTENCE = st.tuples(
    st.sampled_from(_NAMES), st.sampled_from(["was born in", "flows through", "met"]), st.sampled_from(_NAMES)
).map(lambda words: " ".join(words) + ".")
_PROBES = ["Where was Ada Brennan born?", "Which river flows through Kellow?", "Otto Lind Amber Lake"]


def _answers(index) -> list[list[tuple[str, float, str, tuple[str, ...]]]]:
    return [
        [(h.doc_id, round(h.score, 5), h.explain["method"], tuple(h.explain.get("path") or ())) for h in hits]
        for hits in (index.search(probe, k=4) for probe in _PROBES)
    ]


@PROPERTY_SETTINGS
@given(
    texts=st.lists(st.lists(_SENTENCE, min_size=1, max_size=3).map(" ".join), min_size=2, max_size=7),
    cuts=st.lists(st.integers(1, 6), max_size=3),
    synonym_k=st.sampled_from([0, 50]),
    damping=st.sampled_from([0.5, 0.9]),
)
def test_a_graph_added_in_parts_answers_as_one_built_at_once(
    texts, cuts, synonym_k, damping, hashing_encoder, tmp_path_factory
):
    """docs: a grown graph is the graph built over all its passages in the same order but for the
    old-new synonym pairs a full build finds from the old phrase's side; with no synonyms
    (synonym_k 0), or with every pair found from both sides (synonym_k above the phrase count),
    none differ. So the tables and every answer are the same, and again after a save and load."""
    docs = [Document(id=f"d{i}", title=f"T{i}" if i % 2 else "", text=t) for i, t in enumerate(texts)]
    params = GraphParams(synonym_k=synonym_k, synonym_threshold=0.5)
    walk = WalkParams(damping=damping)
    whole = build_index(docs, "graph", encoder=hashing_encoder, name="kg", graph_params=params)
    bounds = sorted({c for c in cuts if c < len(docs)})
    parts = [docs[a:b] for a, b in zip([0, *bounds], [*bounds, len(docs)])]
    grown = build_index(parts[0], "graph", encoder=hashing_encoder, name="kg", graph_params=params)
    for part in parts[1:]:
        grown.add(part)
    assert grown.tables.phrases == whole.tables.phrases
    assert grown.tables.synonym_edges == whole.tables.synonym_edges
    difference = abs(grown.tables.adjacency - whole.tables.adjacency)
    assert difference.nnz == 0 or difference.max() < 1e-6
    assert (grown.tables.fact_passages != whole.tables.fact_passages).nnz == 0
    whole.walk = grown.walk = walk
    expected = _answers(whole)
    assert _answers(grown) == expected
    folder = tmp_path_factory.mktemp("grown")
    save_index(grown, folder)
    assert _answers(load_index(folder, encoder=hashing_encoder)) == expected
