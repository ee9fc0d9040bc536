"""BM25 term counts of corpus shards merge into the counts of the whole corpus (no Ray needed)."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from ragroute.errors import RagrouteError
from ragroute.index.bm25_counts import count_terms, merge_term_counts
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
