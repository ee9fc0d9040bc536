"""BM25 term counts of corpus shards merge into the counts of the whole corpus (no Ray needed)."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from ragroute.errors import RagrouteError
from ragroute.index.bm25_counts import count_terms, merge_term_counts, remove_documents
from ragroute.index.bm25_scoring import BM25Scorer


def _corpus() -> list[list[str]]:
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    return [list(rng.choice(words, size=int(rng.integers(0, 15)))) for _ in range(120)]


@pytest.mark.parametrize("size", [1, 7, 50, 120])
def test_merged_shards_fit_the_same_scorer_as_the_whole_corpus(size: int) -> None:
    docs = _corpus()
    whole = BM25Scorer.fit(docs)
    merged = merge_term_counts([count_terms(docs[i : i + size]) for i in range(0, len(docs), size)])
    sharded = BM25Scorer.from_counts(merged)
    assert sharded.vocab == whole.vocab
    assert sharded.statistics() == whole.statistics()
    assert np.array_equal(sharded.idf, whole.idf)
    assert (sharded.matrix != whole.matrix).nnz == 0
    reference = BM25Okapi(docs)
    for query in (["w1", "w3", "w3"], ["w39"], ["nothing"]):
        assert np.allclose(sharded.get_scores(query), reference.get_scores(query), atol=1e-6, rtol=0)


def test_merge_of_nothing_is_an_error() -> None:
    with pytest.raises(RagrouteError, match="no BM25 shards"):
        merge_term_counts([])


def _same_counts(got, want) -> None:
    assert got.terms == want.terms  # in order: the order BM25Okapi sums idf in for average_idf
    assert np.array_equal(got.doc_len, want.doc_len)
    assert got.matrix.shape == want.matrix.shape
    assert np.array_equal(got.matrix.indptr, want.matrix.indptr)
    assert np.array_equal(got.matrix.indices, want.matrix.indices)
    assert np.array_equal(got.matrix.data, want.matrix.data)


@pytest.mark.parametrize("drop", [[0], [0, 1, 2], [5, 60, 119], list(range(0, 120, 2)), list(range(119))])
def test_removed_documents_leave_the_counts_count_terms_gives_for_the_rest(drop: list[int]) -> None:
    """Removing documents re-orders the vocabulary by first occurrence over the documents left: a
    term first seen in a removed document moves to its place in the document it now first occurs
    in, which only that document's tokens tell (the only documents tokenized again)."""
    docs = _corpus()
    docs[0] = ["w39", "w7", "w38"]  # w39 / w38 first occur here: their next documents must reorder them
    left = [doc for i, doc in enumerate(docs) if i not in set(drop)]
    asked: list[int] = []

    def tokens_of(positions: list[int]) -> list[list[str]]:
        asked.extend(positions)
        return [left[p] for p in positions]

    removed = remove_documents(count_terms(docs), np.asarray(drop), tokens_of)
    _same_counts(removed, count_terms(left))
    assert list(BM25Scorer.from_counts(removed).vocab) == list(BM25Scorer.fit(left).vocab)
    assert len(asked) < len(left) or len(left) <= 1  # not every document tokenized again


@pytest.mark.parametrize("method", ["bm25", "hybrid"])
def test_an_index_assembled_from_ray_shards_keeps_its_counts_so_an_add_tokenizes_only_the_new(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until session 49 the BM25 index a Ray build assembles from its shards' merged counts kept none
    (a build here keeps them from the start): its first add tokenized every document again. The
    shards are counted here, as the workers count them (no Ray started)."""
    from conftest import HashingEncoder

    import ragroute.index.lexical as lexical
    from ragroute.index.bm25_tokenize import tokenize_many
    from ragroute.index.build import build_index
    from ragroute.index.lexical import BM25Params
    from ragroute.scale.ray_build import _assemble, indexes_identical
    from ragroute.types import Document

    docs = [Document(id=f"d{i}", text=" ".join(words)) for i, words in enumerate(_corpus()) if words]
    first, added = docs[:-3], docs[-3:]
    params, encoder = BM25Params(), HashingEncoder() if method == "hybrid" else None
    parts = []
    for start in range(0, len(first), 25):
        texts = [d.full_text() for d in first[start : start + 25]]
        vectors = encoder.encode_documents(texts) if encoder is not None else None
        parts.append((vectors, count_terms(tokenize_many(texts, params.tokenizer))))
    built = _assemble(first, method, parts, encoder, params, None, None, "")
    assert indexes_identical(built, build_index(first, method, encoder=encoder))
    tokenized: list[int] = []

    def counting(texts, tokenizer=None):
        tokenized.append(len(texts))
        return tokenize_many(texts, tokenizer)

    monkeypatch.setattr(lexical, "tokenize_many", counting)
    built.add(added)
    assert tokenized == [len(added)]  # was [len(docs)]: every document tokenized again
    monkeypatch.undo()
    assert indexes_identical(built, build_index(docs, method, encoder=encoder))


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([["a", None]], "must be strings, got NoneType None"),
        ([["a"], [["b"]]], "one list of string tokens per document"),
        ([["a"], None], "one list of string tokens per document"),
        ([3], "one list of string tokens per document"),
    ],
)
def test_a_token_that_is_no_string_is_refused_in_one_line(docs, message) -> None:
    """A None token was indexed (until session 51: the scorer then saved a vocabulary its own load
    refused), and a list token or a document that is no list raised a bare TypeError."""
    with pytest.raises(RagrouteError, match=message) as info:
        count_terms(docs)
    assert "\n" not in str(info.value)
    with pytest.raises(RagrouteError, match=message):
        BM25Scorer.fit(docs)
