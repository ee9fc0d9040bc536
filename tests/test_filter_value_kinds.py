"""A filter value of another kind than the key's values (``{"year": "2020"}`` against integer years)
matched nothing, silently: zero hits from ``index.search`` and ``ragroute query``. It is now one
line naming the key and both kinds, as a key no document carries is; values of the key's kind, a
list holding one, a null and a scoped caller's view behave as before."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ragroute.cli import main
from ragroute.context import QueryContext
from ragroute.errors import InvalidArgumentError
from ragroute.index.build import build_index
from ragroute.index.io import save_index
from ragroute.types import Document


def _docs() -> list[Document]:
    return [
        Document(
            f"d{i}",
            f"printer toner cartridge {i}",
            metadata={"year": 2019 + i % 3, "lang": "en", "tags": ["ink", "laser"], "flag": i % 2 == 0},
        )
        for i in range(6)
    ]


@pytest.mark.parametrize("kind", ["bm25", "dense", "hybrid"])
@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"year": "2020"}, "'year' is text ('2020') but the documents' 'year' values are numbers; filter on "
         "2020"),
        ({"lang": 5}, "'lang' is a number (5) but the documents' 'lang' values are text; filter on '5'"),
        ({"flag": "true"}, "'flag' is text ('true') but the documents' 'flag' values are booleans; filter "
         "on True"),
        ({"flag": 1}, "'flag' is a number (1) but the documents' 'flag' values are booleans"),
        ({"tags": 3}, "'tags' is a number (3) but the documents' 'tags' values are lists or text; filter "
         "on '3'"),
    ],
)  # fmt: skip
def test_a_filter_value_of_another_kind_is_refused_in_one_line(hashing_encoder, kind, filters, message):
    index = build_index(_docs(), kind, encoder=hashing_encoder)
    with pytest.raises(InvalidArgumentError) as caught:
        index.search("printer toner", 10, filters=filters)
    assert str(caught.value) == f"filters: {message}"


@pytest.mark.parametrize("kind", ["bm25", "dense"])
def test_filters_of_the_keys_kind_answer_as_before(hashing_encoder, kind):
    index = build_index(_docs(), kind, encoder=hashing_encoder)
    ids = lambda filters: sorted(h.doc_id for h in index.search("printer toner", 10, filters=filters))  # noqa: E731
    assert ids({"year": 2020}) == ["d1", "d4"]
    assert ids({"year": 2020.0}) == ["d1", "d4"]  # one kind, numbers, as JSON has
    assert ids({"year": ["2020", 2020]}) == ["d1", "d4"]  # one member of the kind is enough
    assert ids({"year": 1850}) == []  # of the kind, matching nothing: no refusal
    assert ids({"year": None}) == []  # null matches a null or missing key
    assert ids({"tags": "ink"}) == [f"d{i}" for i in range(6)]
    assert ids({"flag": True}) == ["d0", "d2", "d4"]


def test_only_the_documents_a_caller_may_read_count(hashing_encoder):
    docs = _docs() + [Document("hidden", "printer toner secret", metadata={"year": "2020", "access": "hr"})]
    index = build_index(docs, "bm25")
    context = QueryContext.of("printer toner", filters={"year": "2020"}, scopes=["hr"])
    assert [h.doc_id for h in index.search_contexts([context], 10)[0]] == ["hidden"]
    # a caller who may not read it is told of the kinds it may read, not of the hidden text year
    with pytest.raises(InvalidArgumentError, match="values are numbers"):
        index.search_contexts([QueryContext.of("printer toner", filters={"year": "2020"})], 10)


def test_the_cli_refuses_a_value_of_another_kind_and_matches_typed_text(tmp_path, hashing_encoder):
    index = build_index(_docs(), "bm25")
    save_index(index, tmp_path / "idx")
    runner = CliRunner()
    found = runner.invoke(
        main, ["query", str(tmp_path / "idx"), "printer", "--filter", "year=2020", "--json"]
    )
    assert found.exit_code == 0, found.output
    assert '"doc_id": "d1"' in found.output
    refused = runner.invoke(main, ["query", str(tmp_path / "idx"), "printer", "--filter", "year=recent"])
    assert refused.exit_code == 2
    assert (
        "error: filters: 'year' is text ('recent') but the documents' 'year' values are numbers"
        in refused.output
    )


def test_a_pipeline_source_whose_values_are_of_another_kind_says_so_and_the_others_answer(hashing_encoder):
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.sources import Source

    numbers = [Document(f"n{i}", f"payroll salary {i}", metadata={"year": 2019 + i}) for i in range(3)]
    texts = [Document(f"t{i}", f"payroll laptop {i}", metadata={"year": str(2019 + i)}) for i in range(3)]
    sources = [
        Source(name, build_index(docs, "dense", encoder=hashing_encoder, name=name))
        for name, docs in (("numbers", numbers), ("texts", texts))
    ]
    pipeline = pipeline_from_settings(sources, {"kind": "fixed"}, encoder=hashing_encoder)
    result = pipeline.retrieve(QueryContext.of("payroll salary", filters={"year": "2020"}), 5)
    assert [h.doc_id for h in result.hits] == ["t1"]
    steps = {s.detail["source"]: s.detail for s in result.trace if s.stage == "retrieve"}
    assert steps["numbers"]["error"].startswith("InvalidArgumentError: filters: 'year' is text ('2020')")
    assert steps["texts"]["hits"] == 1
