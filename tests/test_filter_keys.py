"""A metadata filter on a key no document carries (a typo of ``path``, or ``title`` / ``doc_id``,
document fields rather than metadata) matched nothing, silently: zero hits from ``index.search``,
``Pipeline.retrieve``, ``ragroute query --filter`` and the framework retrievers. It is now one line
naming the key and the keys the documents do carry; filters on existing keys return what they did."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ragroute.context import QueryContext
from ragroute.errors import InvalidArgumentError, RagrouteError
from ragroute.index.build import build_index
from ragroute.index.dense import DenseIndex
from ragroute.index.external import StoreParams
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.registry import INDEX_KINDS
from ragroute.route.sources import Source
from ragroute.types import Document, Hit

PTH = r"^filters: no document has metadata key 'pth' \(keys: lang, path, year\); did you mean 'path'\?$"


def _docs(prefix: str = "d", n: int = 6) -> list[Document]:
    return [
        Document(
            f"{prefix}{i}",
            f"printer toner cartridge {i}",
            title=f"printer {i}",
            metadata={"path": "printers.csv" if i % 2 else "toner.csv", "lang": "en", "year": 2020 + i},
            parent_id="p0" if i < 2 else None,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("kind", ["bm25", "dense", "hybrid"])
def test_an_index_refuses_a_filter_key_no_document_carries(hashing_encoder, kind):
    index = build_index(_docs(), kind, encoder=hashing_encoder, name="docs")
    kept = index.search("printer toner", k=10, filters={"path": "printers.csv"})
    assert sorted(h.doc_id for h in kept) == ["d1", "d3", "d5"]  # an existing key: as before
    with pytest.raises(InvalidArgumentError, match=PTH):
        index.search("printer toner", filters={"pth": "printers.csv"})
    with pytest.raises(InvalidArgumentError, match=PTH):
        index.search_contexts([QueryContext.of("printer toner", filters={"pth": "printers.csv"})])
    for field in ("title", "doc_id"):  # document fields: refused with a hint
        with pytest.raises(InvalidArgumentError) as caught:
            index.search("printer", filters={field: "printer 1"})
        assert str(caught.value) == (
            f"filters: no document has metadata key {field!r} "
            "(a document field, not metadata; keys: lang, path, year)"
        )
    # fields filter_mask matches and the access labels are always allowed
    assert [h.doc_id for h in index.search("printer", k=10, filters={"parent_id": "p0"})] != []
    assert len(index.search("printer", k=10, filters={"modality": "text"})) == 6
    assert index.search("printer", k=10, filters={"access": "hr"}) == []  # nobody labelled: none match


def test_the_key_set_is_read_once_per_content_and_an_empty_index_refuses_nothing(hashing_encoder):
    index = DenseIndex(hashing_encoder, name="empty")
    assert index.metadata_keys() is None
    assert index.search("printer", filters={"pth": "x"}) == []  # no keys to tell
    index.add([Document("a", "printer", metadata={"lang": "en"})])
    store = index.store
    assert store.metadata_keys() == {"lang"} and store.metadata_keys() is store.metadata_keys()
    with pytest.raises(InvalidArgumentError, match=r"'pth' \(keys: lang\)"):
        index.search("printer", filters={"pth": "x"})
    index.add([Document("b", "printer", metadata={"pth": "x"})])  # added: read again
    assert [h.doc_id for h in index.search("printer", filters={"pth": "x"})] == ["b"]
    index.delete(["b"])  # deleted: read again
    with pytest.raises(InvalidArgumentError, match="'pth'"):
        index.search("printer", filters={"pth": "x"})
    bare = build_index([Document("c", "printer")], "bm25", name="bare")
    with pytest.raises(InvalidArgumentError, match=r"'lang' \(the documents carry no metadata\)$"):
        bare.search("printer", filters={"lang": "en"})


def test_the_listed_keys_are_sorted_and_few(hashing_encoder):
    docs = [Document(f"d{i}", "printer", metadata={f"k{j:02d}": j for j in range(12)}) for i in range(2)]
    index = build_index(docs, "bm25", name="many")
    with pytest.raises(InvalidArgumentError) as caught:
        index.search("printer", filters={"zzz": 1})
    assert str(caught.value) == (
        "filters: no document has metadata key 'zzz' (keys: k00, k01, k02, k03, k04, k05, k06, k07, "
        "... (12 in all))"
    )


class Unknown:
    """A retriever whose documents are unknown (as a framework's): it may hold any key."""

    name = "web"

    def search_many(self, queries, k=10, *, filters=None):
        return [[Hit("web-1", 0.5, "web", rank=1, text=q, metadata={"pth": "x"})] for q in queries]


def test_a_pipeline_refuses_a_key_no_source_carries_unless_a_source_cannot_tell(hashing_encoder):
    tickets = [Document(f"t{i}", f"printer ticket {i}", metadata={"ticket": i}) for i in range(4)]
    sources = [
        Source("docs", build_index(_docs(), "bm25", name="docs")),
        Source("tickets", build_index(tickets, "bm25", name="tickets")),
    ]
    pipeline = pipeline_from_settings(sources, {"kind": "centroid"}, encoder=hashing_encoder)
    context = QueryContext.of("printer toner", filters={"path": "printers.csv"})
    assert {h.doc_id for h in pipeline.retrieve(context, k=10).hits} == {"d1", "d3", "d5"}
    message = r"no document has metadata key 'pth' \(keys: lang, path, ticket, year\); did you mean 'path'"
    with pytest.raises(InvalidArgumentError, match=message):
        pipeline.retrieve(QueryContext.of("printer toner", filters={"pth": "printers.csv"}))
    with pytest.raises(InvalidArgumentError, match=message):
        pipeline.search("printer toner", filters={"pth": "printers.csv"})
    # in a batch, the query that holds it is named (its neighbours' filters differ)
    batch = ["printer", QueryContext.of("toner", id="q7", filters={"title": "printer 1"})]
    with pytest.raises(
        InvalidArgumentError,
        match=r"^query 2 of 2 \(id 'q7'\): filters: no document has metadata key 'title' .a document field",
    ):
        pipeline.retrieve_many(batch)
    with pytest.raises(InvalidArgumentError, match=f"^filters: {message}"):  # one filter for all: not named
        pipeline.retrieve_many([QueryContext.of(q, filters={"pth": "x"}) for q in ("printer", "toner")])
    # a source of unknown documents might hold the key: nothing is refused, the sources known to
    # lack it are routed past (never searched: they would refuse it)
    with_unknown = [*sources, Source("web", Unknown(), description="printer toner web")]
    pipeline = pipeline_from_settings(with_unknown, {"kind": "centroid"}, encoder=hashing_encoder)
    result = pipeline.retrieve(QueryContext.of("printer toner", filters={"pth": "x"}), k=5)
    assert result.decision.chosen == ["none"] and result.hits == []
    assert not [s for s in result.decision.trace if "error" in s.detail]
    # a pipeline as a source: it tells its sources' keys when all of them can
    assert pipeline.metadata_keys() is None
    inner = pipeline_from_settings(sources, {"kind": "centroid"}, encoder=hashing_encoder)
    assert inner.metadata_keys() == {"lang", "path", "ticket", "year"}
    outer = pipeline_from_settings([Source("inner", inner)], {"kind": "centroid"}, encoder=hashing_encoder)
    with pytest.raises(InvalidArgumentError, match=message):
        outer.retrieve(QueryContext.of("printer", filters={"pth": "x"}))


def test_the_keys_of_sources_hidden_from_the_caller_are_not_counted(hashing_encoder):
    secret = [Document(f"s{i}", f"printer salary {i}", metadata={"salary": i}) for i in range(3)]
    sources = [
        Source("docs", build_index(_docs(), "bm25", name="docs")),
        Source("hr", build_index(secret, "bm25", name="hr"), access=frozenset({"hr"})),
    ]
    pipeline = pipeline_from_settings(sources, {"kind": "centroid"}, encoder=hashing_encoder)
    with pytest.raises(InvalidArgumentError, match=r"'salary' \(keys: lang, path, year\)"):
        pipeline.retrieve(QueryContext.of("printer", filters={"salary": 1}))
    allowed = pipeline.retrieve(QueryContext.of("printer", filters={"salary": 1}, scopes=("hr",)), k=5)
    assert [h.doc_id for h in allowed.hits] == ["s1"]


def test_ragroute_query_refuses_a_filter_key_no_document_carries(tmp_path, hashing_encoder):
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.index.io import save_index

    save_index(build_index(_docs(), "bm25", name="docs"), tmp_path / "docs")
    args = ["query", str(tmp_path / "docs"), "printer"]
    result = CliRunner().invoke(main, [*args, "--filter", "pth=printers.csv"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: filters: no document has metadata key 'pth' (keys: lang, path, year); did you mean 'path'?"
    ]
    ok = CliRunner().invoke(main, [*args, "--filter", "path=printers.csv", "--json"])
    assert ok.exit_code == 0 and '"d1"' in ok.output and '"d0"' not in ok.output


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=pytest.mark.skipif(importlib.util.find_spec(m) is None, reason=f"no {m}"))
        for k, m in (("qdrant", "qdrant_client"), ("lancedb", "lancedb"))
    ],
)
def test_an_external_store_refuses_it_before_pushing_it_down(tmp_path, kind):
    class Fixed:
        model_id, backend, dim = "test/fixed", "fixed", 8

        def describe(self):
            return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}

    docs = _docs()
    vectors = np.random.default_rng(0).normal(size=(len(docs), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    location = ":memory:" if kind == "qdrant" else str(tmp_path / kind)
    store = INDEX_KINDS.get(kind)(Fixed(), StoreParams(location=location, collection="test"))
    store.add_vectors(docs, vectors)
    flat = DenseIndex(Fixed())
    flat.add_vectors(docs, vectors)
    for index in (flat, store):
        kept = index.search_vectors(vectors[:1], k=10, filters={"path": "printers.csv"})[0]
        assert sorted(h.doc_id for h in kept) == ["d1", "d3", "d5"]
        with pytest.raises(InvalidArgumentError, match=PTH):
            index.search_vectors(vectors[:1], k=10, filters={"pth": "printers.csv"})


def test_the_framework_retrievers_refuse_it(hashing_encoder):
    from ragroute.integrations.langchain import IndexLangChainRetriever, RoutedLangChainRetriever
    from ragroute.integrations.llamaindex import IndexLlamaRetriever, RoutedLlamaRetriever

    index = build_index(_docs(), "hybrid", encoder=hashing_encoder, name="docs")
    pipeline = pipeline_from_settings([Source("docs", index)], {"kind": "centroid"}, encoder=hashing_encoder)
    for retriever in (
        IndexLlamaRetriever(index, filters={"pth": "printers.csv"}),
        RoutedLlamaRetriever(pipeline, filters={"pth": "printers.csv"}),
    ):
        with pytest.raises(RagrouteError, match=PTH):
            retriever.retrieve("printer toner")
    for retriever in (
        IndexLangChainRetriever(index, filters={"pth": "printers.csv"}),
        RoutedLangChainRetriever(pipeline, filters={"pth": "printers.csv"}),
    ):
        with pytest.raises(RagrouteError, match=PTH):
            retriever.invoke("printer toner")
    found = IndexLlamaRetriever(index, filters={"path": "printers.csv"}, similarity_top_k=10).retrieve(
        "printer"
    )
    assert sorted(n.node.metadata["doc_id"] for n in found) == ["d1", "d3", "d5"]


def test_an_index_counts_only_the_keys_of_documents_the_caller_may_read(hashing_encoder):
    docs = [
        *_docs(),
        Document("s0", "printer salary", metadata={"salary": 1, "access": "hr"}),
    ]
    index = build_index(docs, "bm25", name="docs")
    public = QueryContext.of("printer", filters={"salary": 1})
    with pytest.raises(InvalidArgumentError, match=r"'salary' \(keys: lang, path, year\)$"):
        index.search_contexts([public])  # neither the key nor its existence is told
    hr = QueryContext.of("printer", filters={"salary": 1}, scopes=("hr",))
    assert [h.doc_id for h in index.search_contexts([hr])[0]] == ["s0"]
    assert index.metadata_keys() == {"access", "lang", "path", "salary", "year"}
    assert index.metadata_keys(()) == {"lang", "path", "year"}
    hidden = build_index([docs[-1]], "bm25", name="hr")
    assert hidden.metadata_keys(()) is None  # nothing visible: no keys to tell, nothing refused
    assert hidden.search_contexts([public]) == [[]]


def test_a_pipeline_routes_past_a_source_whose_visible_documents_lack_the_key(hashing_encoder):
    docs = [*_docs(), Document("s0", "printer salary", metadata={"salary": 1, "access": "hr"})]
    sources = [
        Source("mixed", build_index(docs, "bm25", name="mixed")),
        Source("web", Unknown(), description="printer salary web"),  # might hold it: no refusal
    ]
    pipeline = pipeline_from_settings(sources, {"kind": "centroid"}, encoder=hashing_encoder)
    public = pipeline.retrieve(QueryContext.of("printer salary", filters={"salary": 1}), k=5)
    assert "mixed" not in public.decision.chosen  # never searched: it would refuse the key
    assert not [s for s in public.decision.trace if "error" in s.detail]
    hr = pipeline.retrieve(QueryContext.of("printer salary", filters={"salary": 1}, scopes=("hr",)), k=5)
    assert "s0" in [h.doc_id for h in hr.hits]


@pytest.mark.parametrize("kind", ["bm25", "dense", "hybrid"])
def test_a_filter_on_a_key_holding_nested_values_still_filters(hashing_encoder, kind):
    """A mapping, or a list holding a list, as one document's value made every filter on that key
    a TypeError traceback (unhashable) for every query."""
    docs = [
        Document("a", "stars and planets", metadata={"lst": [[1, 2], 3], "nest": {"a": {"b": 1}}}),
        Document("b", "stars and bread", metadata={"lst": [3], "nest": "x"}),
        Document("c", "stars and cake", metadata={"lst": [True], "nest": ["x", {"y": 1}]}),
    ]
    index = build_index(docs, kind, encoder=hashing_encoder, name="n")
    found = lambda filters: sorted(h.doc_id for h in index.search("stars", k=5, filters=filters))  # noqa: E731
    assert found({"lst": 3}) == ["a", "b"]
    assert found({"nest": "x"}) == ["b", "c"]
    assert found({"lst": True}) == ["c"] and found({"lst": 1}) == []


@pytest.mark.parametrize("kind", ["bm25", "dense", "hybrid"])
def test_numpy_and_tuple_values_filter_as_the_saved_index_does(tmp_path, hashing_encoder, kind):
    """Metadata holding numpy values or tuples (saved as numbers, booleans and lists) matched filters
    as added until session 43, and the same index loaded again answered otherwise: ``np.True_``
    matched no filter ``True``, a tuple of tags was one value, and an array raised a TypeError."""
    from ragroute.index.io import load_index, save_index

    docs = [
        Document("a", "stars", metadata={"ok": np.True_, "tags": np.array(["x", "y"]), "t": ("p",)}),
        Document("b", "stars and bread", metadata={"ok": False, "tags": ["y"], "t": ["q"]}),
        Document("c", "stars and cake", metadata={"ok": 1, "tags": "z", "t": "p"}),
    ]
    index = build_index(docs, kind, encoder=hashing_encoder, name="n")
    save_index(index, tmp_path / "ix")
    loaded = load_index(tmp_path / "ix", hashing_encoder)
    filters = [{"ok": True}, {"ok": np.True_}, {"ok": 1}, {"tags": "x"}, {"tags": ["y", "z"]}, {"t": "p"}]
    for live in (index, loaded):
        found = [sorted(h.doc_id for h in live.search("stars", k=5, filters=f)) for f in filters]
        assert found == [["a"], ["a"], ["c"], ["a"], ["a", "b", "c"], ["a", "c"]]


def test_a_framework_retriever_filters_its_hits_as_an_index_filters_documents():
    """The hits of a framework's retriever (a LlamaIndex or LangChain source) were filtered apart
    from an index's documents until session 43: a list value (``tags: [x, y]``) raised ``TypeError:
    unhashable type`` for any filter on its key, and ``True`` matched a filter ``1``."""
    from ragroute.integrations.adapters import ExternalRetriever

    metadata = [{"tags": ["x", "y"], "ok": True}, {"tags": "x", "ok": 1}, {"tags": ("z",), "ok": np.False_}]

    class Framework(ExternalRetriever):
        def fetch(self, query, k):
            return [Hit(f"h{i}", 1 - i / 10, "", i + 1, metadata=m) for i, m in enumerate(metadata)]

    retriever = Framework("fw")
    documents = [Document(f"h{i}", "stars", metadata=m) for i, m in enumerate(metadata)]
    index = build_index(documents, "bm25", name="n")
    filters = [{"tags": "x"}, {"tags": ["y", "z"]}, {"ok": 1}, {"ok": True}, {"ok": False}, {"gone": None}]
    for f in filters:
        expected = sorted(h.doc_id for h in index.search("stars", k=5, filters=f))
        assert sorted(h.doc_id for h in retriever.search("stars", k=5, filters=f)) == expected, f
    assert [h.doc_id for h in retriever.search("stars", k=5, filters={"ok": True})] == ["h0"]


def test_a_none_filter_matches_documents_whose_value_is_null_or_absent(hashing_encoder):
    docs = [
        Document("a", "stars", metadata={"k": None, "o": 1}),
        Document("b", "stars x", metadata={"o": 1}),
        Document("c", "stars y", metadata={"k": 1}),
    ]
    index = build_index(docs, "bm25", name="n")
    assert sorted(h.doc_id for h in index.search("stars", k=5, filters={"k": None})) == ["a", "b"]
    assert [h.doc_id for h in index.search("stars", k=5, filters={"k": 1})] == ["c"]


def test_a_null_filter_keeps_the_sources_and_indexes_that_lack_its_key(hashing_encoder):
    """`None` matches documents that lack the key: until session 36 an index whose documents all lack
    it refused the filter, and a routed query dropped exactly those sources (0 hits for a filter
    every one of their documents matches)."""
    tickets = [Document(f"t{i}", f"vpn drops ticket {i}", metadata={"priority": i}) for i in range(3)]
    pipeline = pipeline_from_settings(
        [
            Source("files", build_index(_docs(), "bm25", name="files")),
            Source("tickets", build_index(tickets, "bm25")),
        ],
        {"kind": "centroid", "threshold": 0, "max_routes": 2},
        encoder=hashing_encoder,
    )
    nulls = pipeline.retrieve(QueryContext.of("vpn drops", filters={"path": None}), k=5)
    assert "tickets" in nulls.decision.chosen and {h.doc_id for h in nulls.hits} >= {"t0", "t1", "t2"}
    named = pipeline.retrieve(QueryContext.of("vpn drops", filters={"path": "toner.csv"}), k=5)
    assert "tickets" not in named.decision.chosen  # a value no ticket can hold: routed past (cached apart)
    again = pipeline.retrieve(QueryContext.of("vpn drops", filters={"path": [None, "x"]}), k=5)
    assert "tickets" in again.decision.chosen
    assert len(build_index(tickets, "bm25").search("vpn", k=5, filters={"path": None})) == 3


def test_a_filter_is_read_from_the_documents_once_per_content(monkeypatch, small_docs):
    """Every filtered query read every document's metadata in Python (several times per pipeline
    query: 33 ms at 80k documents, until session 37); the mask is now kept until the documents change."""
    import ragroute.index.docstore as docstore
    from ragroute.types import Document

    index = build_index(small_docs, "bm25")
    reads = []
    real = docstore._field
    monkeypatch.setattr(docstore, "_field", lambda doc, key: reads.append(key) or real(doc, key))
    first = index.search("star bread printer", 5, filters={"topic": ["astro", "cook"]})
    again = index.search("star bread printer", 5, filters={"topic": ["cook", "astro"]})  # same set
    assert [h.doc_id for h in again] == [h.doc_id for h in first] and len(reads) == len(small_docs)
    index.add([Document("new", "star bread printer star", metadata={"topic": "cook"})])
    after = index.search("star bread printer", 5, filters={"topic": ["astro", "cook"]})
    assert after[0].doc_id == "new" and len(reads) == 2 * len(small_docs) + 1
    mask = index.store.filter_mask({"topic": "it"})
    with pytest.raises(ValueError):  # shared by the queries that read it: not to be written
        mask[0] = True


def test_a_filter_on_a_non_text_key_answers_alike_by_query_and_by_context():
    """Metadata may hold a key that is not text (``{1: "a"}``) and ``search`` filters on it, but a
    search by query contexts (a pipeline's, the CLI's) grouped them by sorting the filter's items,
    and a filter naming such a key beside a text one failed there with a bare ``TypeError: '<' not
    supported between instances of 'str' and 'int'``."""
    docs = [
        Document(id="a", text="printer", metadata={1: "a", "y": 2}),
        Document(id="b", text="printer ink", metadata={"y": 2}),
    ]
    index = build_index(docs, "bm25")
    filters = {1: "a", "y": 2}
    by_query = [h.doc_id for h in index.search("printer", 5, filters=filters)]
    by_context = [h.doc_id for h in index.search_contexts([QueryContext("printer", filters=filters)], 5)[0]]
    assert by_query == by_context == ["a"]
