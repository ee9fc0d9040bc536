"""Tests of the BM25 tokenizer, scorer (parity with rank_bm25), persistence and benchmark."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from rank_bm25 import BM25Okapi

import ragroute.index.bm25_scoring as bm25_scoring
import ragroute.index.bm25_tokenize as bm25_tokenize
from ragroute.cli.bench import bm25_command
from ragroute.errors import IndexFormatError, RagrouteError
from ragroute.evaluation.bench_bm25 import run_bm25_bench
from ragroute.index.bm25_scoring import BM25Scorer
from ragroute.index.bm25_tokenize import (
    ENGLISH_STOPWORDS,
    TokenizerConfig,
    tokenize,
    tokenize_many,
)
from ragroute.store import open_snapshot
from ragroute.store.manifest import newer_format_message

# "common" is in 5 of 6 documents (negative idf, floored); "half" in exactly 3 (idf 0);
# doc 4 is empty; docs 2 and 5 are identical (score ties).
HAND_CORPUS = [
    ["common", "apple", "banana", "apple", "elder"],
    ["common", "banana", "cherry", "half"],
    ["common", "cherry", "cherry", "cherry", "date", "half"],
    ["common", "apple"],
    [],
    ["common", "cherry", "cherry", "cherry", "date", "half"],
]
HAND_QUERIES = [
    ["apple"],
    ["apple", "apple", "banana"],
    ["common"],
    ["common", "common", "cherry", "unknown"],
    ["half"],
    ["unknown", "missing"],
    [],
    ["date", "apple", "banana", "cherry", "common", "half", "date"],
]


def reference_top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Best first, ties by lower index, over the allowed documents: the spec of top_k."""
    ids = np.arange(scores.shape[0]) if mask is None else np.flatnonzero(mask)
    order = np.lexsort((ids, -scores[ids]))
    return ids[order[:k]]


def random_corpus(seed: int, n_docs: int = 300, vocab: int = 400) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    probs = np.arange(1, vocab + 1, dtype=np.float64) ** -1.1
    probs /= probs.sum()
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(0, 60))
        docs.append([f"t{i}" for i in rng.choice(vocab, size=n, p=probs)])
    return docs


def random_queries(seed: int, n: int = 60, vocab: int = 400) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(n):
        terms = [f"t{i}" for i in rng.integers(0, vocab, size=int(rng.integers(1, 7)))]
        terms += [f"t{i}" for i in rng.integers(0, 5, size=int(rng.integers(0, 3)))]  # common terms
        if rng.random() < 0.3:
            terms.append(terms[0])  # repeated term
        if rng.random() < 0.2:
            terms.append("oov-term")
        queries.append(terms)
    return queries


@pytest.fixture(params=["default", "no-shortcuts"])
def search_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test both with the default tuning and with every shortcut forced off/on.

    "no-shortcuts" sends every query through the lower-bound path (no small pool),
    the partition-based selection and sampled bounds.
    """
    if request.param == "no-shortcuts":
        monkeypatch.setattr(bm25_scoring, "_SMALL_POOL", 0)
        monkeypatch.setattr(bm25_scoring, "_SORT_ALL", 0)
        monkeypatch.setattr(bm25_scoring, "_BOUND_SAMPLE", 7)
    return request.param


# --------------------------------------------------------------------------- tokenizer


def test_tokenize_lowercases_splits_and_drops_stopwords() -> None:
    text = "The QUICK brown-fox, and its 2 friends_of_foo: isn't it?"
    assert tokenize(text) == ["quick", "brown", "fox", "its", "2", "friends", "foo", "isn", "t"]
    assert tokenize(text, TokenizerConfig(stopwords=False))[:2] == ["the", "quick"]
    assert tokenize(text, TokenizerConfig(lowercase=False, stopwords=False))[:2] == ["The", "QUICK"]
    assert tokenize("") == [] and tokenize("  ,;  ") == []
    assert {"the", "and", "of", "with"} <= ENGLISH_STOPWORDS


def test_tokenize_unicode_matches_regex() -> None:
    assert tokenize("Café naïve DÉJÀ-vu Straße 東京 ٣") == [
        "café",
        "naïve",
        "déjà",
        "vu",
        "strasse",  # case-folded, as STRASSE (since session 53)
        "東京",
        "٣",
    ]
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ019_ -.,;:!?'\"\t\n\x1c\x1fé東")
    pattern = re.compile(r"[^\W_]+")
    for _ in range(300):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
        # letter/digit runs as such (CJK runs read as pairs are tested below)
        plain = (
            TokenizerConfig(stopwords=False, cjk_bigrams=False),
            TokenizerConfig(lowercase=False, stopwords=False, cjk_bigrams=False),
        )
        for cfg in plain:
            expected = pattern.findall(text.lower() if cfg.lowercase else text)
            assert tokenize(text, cfg) == expected


def test_tokenize_many_equals_tokenize_and_is_deterministic() -> None:
    texts = ["The cat sat on the mat.", "", "Ünïcödé and ASCII", "a b c the end"]
    for cfg in (TokenizerConfig(), TokenizerConfig(lowercase=False), TokenizerConfig(stopwords=False)):
        assert tokenize_many(texts, cfg) == [tokenize(t, cfg) for t in texts]
        assert tokenize_many(iter(texts), cfg) == tokenize_many(texts, cfg)
    with pytest.raises(RagrouteError):
        tokenize_many(["ok", None])  # type: ignore[list-item]


def test_tokenizer_config_round_trip_and_validation() -> None:
    cfg = TokenizerConfig(lowercase=False, stopwords=False, stem=True)
    data = json.loads(json.dumps(cfg.to_dict()))
    expected = {"lowercase": False, "stopwords": False, "stem": True, "nfc": True, "cjk_bigrams": True}
    assert data == {**expected, "marks": True, "nfkc": True}
    assert TokenizerConfig.from_dict(data) == cfg
    # a record from before the nfc / cjk_bigrams / marks / nfkc options: its index was built without them
    before = TokenizerConfig(nfc=False, cjk_bigrams=False, marks=False, nfkc=False)
    assert TokenizerConfig.from_dict({}) == before
    assert TokenizerConfig.from_dict({"nfc": True}) == TokenizerConfig(
        cjk_bigrams=False, marks=False, nfkc=False
    )
    assert TokenizerConfig.from_dict({"marks": True}).nfkc is False
    with pytest.raises(RagrouteError, match="unknown tokenizer option"):
        TokenizerConfig.from_dict({"lowercase": True, "language": "en"})
    with pytest.raises(RagrouteError, match="must be true or false"):
        TokenizerConfig(stem="yes")  # type: ignore[arg-type]
    nltk = TokenizerConfig(stopword_set="nltk")
    assert nltk.to_dict()["stopword_set"] == "nltk" and TokenizerConfig.from_dict(nltk.to_dict()) == nltk
    with pytest.raises(RagrouteError, match="unknown stopword set 'smart': choose one of lucene, nltk"):
        TokenizerConfig(stopword_set="smart")


def test_a_combining_accent_does_not_split_a_word() -> None:
    """NFD text (macOS file names, some PDFs) wrote München as u + U+0308: the mark split the word
    into "mu" and "nchen", so an NFD query found nothing an NFC document said, and back."""
    import unicodedata

    from ragroute.index.lexical import BM25Index
    from ragroute.types import Document

    composed, decomposed = "München Fahrräder", unicodedata.normalize("NFD", "München Fahrräder")
    assert composed != decomposed
    assert tokenize(decomposed) == tokenize(composed) == ["münchen", "fahrräder"]
    assert tokenize_many([decomposed]) == [["münchen", "fahrräder"]]
    assert tokenize(decomposed, TokenizerConfig(nfc=False, marks=False)) == ["mu", "nchen", "fahrra", "der"]
    others = ["bicycles in Berlin", "trams in Vienna", "ferries in Oslo"]
    index = BM25Index.build([Document("d", composed)] + [Document(str(i), t) for i, t in enumerate(others)])
    assert [h.doc_id for h in index.search(decomposed, k=1)] == ["d"]
    assert index.manifest_params()["bm25"]["tokenizer"]["nfc"] is True


def test_cjk_text_is_read_as_character_pairs_so_part_of_a_run_matches() -> None:
    """Chinese and Japanese are written without spaces: a whole run was one token, so a query
    naming part of it (東京タワー in 東京タワーの高さ) found nothing, with no warning."""
    from ragroute.index.lexical import BM25Index
    from ragroute.types import Document

    assert tokenize("東京タワーの高さ") == ["東京", "京タ", "タワ", "ワー", "ーの", "の高", "高さ"]
    assert tokenize("望远镜 light 天") == ["望远", "远镜", "light", "天"]  # one character: itself
    assert tokenize("abc中文def") == ["abc", "中文", "def"]
    assert tokenize_many(["東京タワー"]) == [tokenize("東京タワー")]
    assert tokenize("東京タワー", TokenizerConfig(cjk_bigrams=False)) == ["東京タワー"]
    docs = ["東京タワーの高さ", "大阪城の歴史", "京都の寺", "名古屋の天気"]
    index = BM25Index.build([Document(str(i), t) for i, t in enumerate(docs)])
    assert [h.doc_id for h in index.search("東京タワー", k=2)][0] == "0"
    assert [h.doc_id for h in index.search("大阪城", k=2)][0] == "1"
    assert index.manifest_params()["bm25"]["tokenizer"]["cjk_bigrams"] is True


def test_nltk_stop_set_drops_the_function_words_of_task_queries() -> None:
    # with Lucene's 33 words the "I" of "I need" survived and matched a tool about "World War I"
    text = "I need you to get my World War I report, don't you?"
    assert tokenize(text) == [
        "i",
        "need",
        "you",
        "get",
        "my",
        "world",
        "war",
        "i",
        "report",
        "don",
        "t",
        "you",
    ]
    assert tokenize(text, TokenizerConfig(stopword_set="nltk")) == ["need", "get", "world", "war", "report"]
    assert tokenize_many([text], TokenizerConfig(stopword_set="nltk")) == [
        ["need", "get", "world", "war", "report"]
    ]
    assert tokenize(text, TokenizerConfig(stopwords=False, stopword_set="nltk"))[:2] == ["i", "need"]


def test_stem_without_pystemmer_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "Stemmer", None)  # makes `import Stemmer` fail
    monkeypatch.setattr(bm25_tokenize._STEMMER_LOCAL, "stemmer", None, raising=False)
    for call in (
        lambda: tokenize("running", TokenizerConfig(stem=True)),
        lambda: tokenize_many(["x"], TokenizerConfig(stem=True)),
    ):
        with pytest.raises(RagrouteError, match="PyStemmer") as info:
            call()
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("params", [{}, {"k1": 1.2, "b": 0.4, "epsilon": 0.5}, {"k1": 2.0, "b": 0.9}])
def test_hand_corpus_matches_rank_bm25(params: dict[str, float]) -> None:
    ours = BM25Scorer.fit(HAND_CORPUS, **params)
    ref = BM25Okapi(HAND_CORPUS, **params)
    assert ours.n_docs == 6
    assert ours.avgdl == ref.avgdl
    assert ours.average_idf == ref.average_idf
    assert ref.idf["common"] == ref.epsilon * ref.average_idf  # floored negative idf
    assert ref.idf["half"] == 0.0
    assert ours.idf[ours.vocab["common"]] == ref.idf["common"]
    for query in HAND_QUERIES:
        scores = ours.get_scores(query)
        assert scores.dtype == np.float64 and scores.shape == (6,)
        np.testing.assert_allclose(scores, ref.get_scores(query), rtol=0, atol=1e-12)


def test_empty_document_with_b_1_scores_zero_not_nan() -> None:
    # BM25Okapi divides 0 by 0 for an empty document when b == 1 (NaN); ours gives 0.
    scores = BM25Scorer.fit(HAND_CORPUS, b=1.0).get_scores(["apple"])
    with np.errstate(invalid="ignore"):
        ref = BM25Okapi(HAND_CORPUS, b=1.0).get_scores(["apple"])
    assert np.isnan(ref[4]) and scores[4] == 0.0
    np.testing.assert_allclose(np.delete(scores, 4), np.delete(ref, 4), rtol=0, atol=1e-12)


def test_random_corpus_matches_rank_bm25(search_paths: str) -> None:
    docs = random_corpus(1)
    ours = BM25Scorer.fit(docs)
    ref = BM25Okapi(docs)
    assert ours._dense_rows, "the corpus should exercise the dense-row path"
    assert ours.average_idf == ref.average_idf
    assert all(ours.idf[ours.vocab[term]] == idf for term, idf in ref.idf.items())
    assert sum(idf == ref.epsilon * ref.average_idf for idf in ref.idf.values()) >= 3  # floored terms
    worst = 0.0
    for query in random_queries(2):
        worst = max(worst, float(np.max(np.abs(ours.get_scores(query) - ref.get_scores(query)))))
    assert worst <= 1e-12


def test_fit_validates_input() -> None:
    with pytest.raises(RagrouteError, match="empty corpus"):
        BM25Scorer.fit([])
    with pytest.raises(RagrouteError, match="k1"):
        BM25Scorer.fit([["a"]], k1=0)
    with pytest.raises(RagrouteError, match="b must"):
        BM25Scorer.fit([["a"]], b=1.5)
    with pytest.raises(RagrouteError, match="tokenize first"):
        BM25Scorer.fit(["a text", "another"])  # type: ignore[list-item]
    with pytest.raises(RagrouteError, match="must be strings"):
        BM25Scorer.fit([["a", 3]])  # type: ignore[list-item]
    scorer = BM25Scorer.fit([[], []])
    assert scorer.n_docs == 2 and scorer.vocab == {}
    assert scorer.get_scores(["a"]).tolist() == [0.0, 0.0]
    assert scorer.top_k(["a"], 5)[0].tolist() == [0, 1]
    with pytest.raises(RagrouteError, match="not a string"):
        scorer.get_scores("a query")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- top-k


def test_top_k_matches_full_sort(search_paths: str) -> None:
    docs = random_corpus(3)
    scorer = BM25Scorer.fit(docs)
    rng = np.random.default_rng(4)
    masks = [None, rng.random(len(docs)) < 0.5, rng.random(len(docs)) < 0.02, np.zeros(len(docs), dtype=bool)]
    for query in random_queries(5, n=40):
        scores = scorer.get_scores(query)
        for k in (1, 3, 10, 50, len(docs) + 5):
            for mask in masks:
                idx, vals = scorer.top_k(query, k, mask=mask)
                expected = reference_top_k(scores, k, mask)
                assert idx.dtype == np.int64 and vals.dtype == np.float64
                np.testing.assert_array_equal(idx, expected)
                np.testing.assert_array_equal(vals, scores[expected])


def test_top_k_ties_zero_fill_and_negative_scores(search_paths: str) -> None:
    scorer = BM25Scorer.fit(HAND_CORPUS)
    # Docs 2 and 5 are identical: tie broken by the lower index.
    idx, vals = scorer.top_k(["date"], 2)
    assert idx.tolist() == [2, 5] and vals[0] == vals[1] > 0
    # Fewer matches than k: zero-score documents fill in by index.
    idx, vals = scorer.top_k(["banana"], 4)
    assert idx.tolist() == [1, 0, 2, 3] and vals[2:].tolist() == [0.0, 0.0]
    assert scorer.top_k(["unknown"], 3)[0].tolist() == [0, 1, 2]
    assert scorer.top_k([], 2)[0].tolist() == [0, 1]
    assert scorer.top_k(["apple"], 0)[0].shape == (0,)
    mask = np.array([False, True, False, False, True, True])
    assert scorer.top_k(["apple", "date"], 10, mask=mask)[0].tolist() == [5, 1, 4]
    # A negative epsilon makes "common" score below 0: documents without it rank above.
    negative = BM25Scorer.fit(HAND_CORPUS, epsilon=-1.0)
    scores = negative.get_scores(["common"])
    np.testing.assert_allclose(
        scores, BM25Okapi(HAND_CORPUS, epsilon=-1.0).get_scores(["common"]), atol=1e-12
    )
    idx, vals = negative.top_k(["common"], 3)
    assert idx.tolist() == reference_top_k(scores, 3).tolist() and idx[0] == 4
    assert vals[0] == 0.0 and vals[1] < 0


def test_top_k_validates_arguments() -> None:
    scorer = BM25Scorer.fit(HAND_CORPUS)
    with pytest.raises(RagrouteError, match="non-negative integer"):
        scorer.top_k(["apple"], -1)
    with pytest.raises(RagrouteError, match="mask"):
        scorer.top_k(["apple"], 2, mask=np.ones(5, dtype=bool))
    with pytest.raises(RagrouteError, match="mask"):
        scorer.top_k_many([["apple"]], 2, mask=np.ones(6, dtype=int))
    with pytest.raises(RagrouteError):
        scorer.top_k_many("apple", 2)  # type: ignore[arg-type]


def test_top_k_many_equals_top_k(search_paths: str) -> None:
    docs = random_corpus(6)
    scorer = BM25Scorer.fit(docs)
    queries = random_queries(7, n=70) + [[], ["oov-term"]]
    mask = np.random.default_rng(8).random(len(docs)) < 0.7
    for k, m in ((10, None), (5, mask), (len(docs) + 1, None)):
        batch = scorer.top_k_many(queries, k, mask=m)
        assert len(batch) == len(queries)
        for query, (idx, vals) in zip(queries, batch):
            single_idx, single_vals = scorer.top_k(query, k, mask=m)
            np.testing.assert_array_equal(idx, single_idx)
            np.testing.assert_array_equal(vals, single_vals)  # bit-identical
    assert scorer.top_k_many([], 3) == []


# --------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path) -> None:
    docs = random_corpus(9)
    scorer = BM25Scorer.fit(docs, k1=1.3, b=0.6, epsilon=0.3)
    names = scorer.save(tmp_path)
    assert sorted(names) == ["bm25_matrix.npz", "bm25_vocab.json"]
    snapshot = open_snapshot(tmp_path)
    assert (snapshot.manifest.family, snapshot.manifest.kind) == ("scorer", "bm25")
    assert sorted(snapshot.manifest.files) == sorted(names)
    stats = snapshot.manifest.params  # the statistics live in the checksummed manifest ...
    assert stats["n_docs"] == len(docs) and stats["k1"] == 1.3 and stats["nnz"] == scorer.statistics()["nnz"]
    meta = json.loads(snapshot.file("bm25_vocab.json").read_text(encoding="utf-8"))
    assert set(meta) == {"terms", "idf"} and len(meta["terms"]) == len(scorer.vocab)  # ... not in a header
    loaded = BM25Scorer.load(tmp_path)
    assert loaded.vocab == scorer.vocab and loaded.n_docs == scorer.n_docs
    assert (loaded.k1, loaded.b, loaded.epsilon) == (1.3, 0.6, 0.3)
    assert (loaded.avgdl, loaded.average_idf) == (scorer.avgdl, scorer.average_idf)
    np.testing.assert_array_equal(loaded.idf, scorer.idf)
    for query in random_queries(10, n=20):
        np.testing.assert_array_equal(loaded.get_scores(query), scorer.get_scores(query))
        np.testing.assert_array_equal(loaded.top_k(query, 7)[0], scorer.top_k(query, 7)[0])


def _vocabulary_of_version(scorer: BM25Scorer, folder, version) -> None:
    """Rewrite the vocabulary ``scorer`` wrote in ``folder`` with the header a 0.1 scorer file
    carried, its ``format_version`` set to ``version``."""
    path = folder / "bm25_vocab.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta = {key: value for key, value in meta.items() if key not in ("format", "format_version")}
    header = {"format": "ragroute-bm25", "format_version": version, **scorer.statistics()}
    path.write_text(json.dumps({**header, **meta}), encoding="utf-8")


def test_a_scorer_folder_written_by_0_1_still_loads(tmp_path) -> None:
    scorer = BM25Scorer.fit(HAND_CORPUS)
    scorer.write_parts(tmp_path)
    _vocabulary_of_version(scorer, tmp_path, 1)
    loaded = BM25Scorer.load(tmp_path)
    np.testing.assert_array_equal(loaded.get_scores(["cat"]), scorer.get_scores(["cat"]))


def test_a_vocabulary_in_a_newer_format_says_to_upgrade(tmp_path) -> None:
    # until session 47 it said "BM25 format version 2 is not supported (expected 1)", unlike every
    # other artifact written by a newer ragroute; now it is the shared one-line "newer" message
    scorer = BM25Scorer.fit(HAND_CORPUS)
    scorer.write_parts(tmp_path)
    _vocabulary_of_version(scorer, tmp_path, 2)
    with pytest.raises(IndexFormatError) as info:
        BM25Scorer.read_parts(tmp_path, scorer.statistics())
    expected = newer_format_message(str(tmp_path / "bm25_vocab.json"), 2, 1, "BM25 ")
    assert str(info.value) == expected and "upgrade ragroute" in expected
    for version in (0, "2", True):  # not newer: still the plain "not supported" line (true read as 1 before)
        _vocabulary_of_version(scorer, tmp_path, version)
        with pytest.raises(IndexFormatError, match="is not supported"):
            BM25Scorer.read_parts(tmp_path, scorer.statistics())


def test_a_flipped_byte_in_a_saved_scorer_is_caught(tmp_path) -> None:
    BM25Scorer.fit(HAND_CORPUS).save(tmp_path)
    path = open_snapshot(tmp_path).file("bm25_vocab.json")
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))
    _expect_format_error(tmp_path, "bm25_vocab.json", None, load=True)


def _saved(tmp_path):
    scorer = BM25Scorer.fit(HAND_CORPUS)
    scorer.write_parts(tmp_path)
    return scorer.statistics()


def _expect_format_error(directory, filename: str, statistics, *, load: bool = False) -> None:
    with pytest.raises(IndexFormatError) as info:
        BM25Scorer.load(directory) if load else BM25Scorer.read_parts(directory, statistics)
    message = str(info.value)
    assert filename in message and "\n" not in message


@pytest.mark.parametrize("filename", ["bm25_matrix.npz", "bm25_vocab.json"])
def test_load_missing_file(tmp_path, filename: str) -> None:
    stats = _saved(tmp_path)
    (tmp_path / filename).unlink()
    _expect_format_error(tmp_path, filename, stats)


@pytest.mark.parametrize(
    "filename, content",
    [
        ("bm25_matrix.npz", b"not a zip file at all"),
        ("bm25_matrix.npz", b"PK\x03\x04 truncated"),
        ("bm25_vocab.json", b'{"terms": ['),
        ("bm25_vocab.json", b"\xff\xfe\x00garbage"),
        ("bm25_vocab.json", b'{"format": "something-else"}'),
        ("bm25_vocab.json", b"[1, 2, 3]"),
        ("bm25_vocab.json", b'{"terms": ["a"], "idf": []}'),
    ],
)
def test_load_corrupt_file(tmp_path, filename: str, content: bytes) -> None:
    stats = _saved(tmp_path)
    (tmp_path / filename).write_bytes(content)
    _expect_format_error(tmp_path, filename, stats)


def test_load_inconsistent_files(tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    stats_a, stats_b = _saved(first), BM25Scorer.fit(random_corpus(11)).statistics()
    BM25Scorer.fit(random_corpus(11)).write_parts(second)
    (first / "bm25_matrix.npz").write_bytes((second / "bm25_matrix.npz").read_bytes())
    _expect_format_error(first, "bm25_matrix.npz", stats_a)
    meta = json.loads((second / "bm25_vocab.json").read_text(encoding="utf-8"))
    meta["idf"] = meta["idf"][:-1]
    (second / "bm25_vocab.json").write_text(json.dumps(meta), encoding="utf-8")
    _expect_format_error(second, "bm25_vocab.json", stats_b)
    _expect_format_error(first, "bm25_vocab.json", {**stats_a, "k1": "fast"})  # bad manifest statistics
    _expect_format_error(first, "bm25_vocab.json", None)  # no statistics and no 0.1 header
    with pytest.raises(IndexFormatError):
        BM25Scorer.fit(HAND_CORPUS).write_parts(tmp_path / "does-not-exist")


# --------------------------------------------------------------------------- benchmark


def test_run_bm25_bench_smoke() -> None:
    result = run_bm25_bench(None, synthetic_docs=2000, synthetic_queries=15, min_time_s=0.0, progress=False)
    assert set(result) >= {"max_abs_diff", "speedup_vs_rank_bm25", "corpora"}
    corpus = result["corpora"]["synthetic"]
    keys = {
        "max_abs_diff",
        "speedup_vs_rank_bm25",
        "ours_qps",
        "ours_batch_qps",
        "rank_bm25_qps",
        "bm25s_qps",
    }
    assert keys | {"bm25s_max_abs_diff", "build_s", "docs", "queries"} <= set(corpus)
    assert corpus["docs"] == 2000 and corpus["queries"] == 15
    assert result["max_abs_diff"] <= 1e-6
    assert corpus["ours_qps"] > 0 and corpus["rank_bm25_qps"] > 0


def test_bm25_command_missing_data_and_json(tmp_path) -> None:
    runner = CliRunner()
    args = ["--synthetic-docs", "300", "--synthetic-queries", "5", "--min-time", "0"]
    # a --data folder that is not there is one error line before anything runs (it measured the
    # synthetic corpus alone before, with the folder named only on stderr)
    result = runner.invoke(bm25_command, ["--data", str(tmp_path / "nope"), *args, "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: data missing: {tmp_path / 'nope' / 'queries.jsonl'} not found " \
        "(see ../shared/data/README.md)"  # fmt: skip
    result = runner.invoke(bm25_command, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout.strip().splitlines()[-1])["corpora"]) == ["synthetic"]
    nothing = runner.invoke(bm25_command, ["--synthetic-docs", "0"])
    assert nothing.exit_code == 2 and "nothing was measured" in nothing.stderr


def _beir_texts_folder(tmp_path, corpus: bytes, queries: bytes) -> object:
    """A BEIR folder with no qrels (bench bm25 reads no judgements)."""
    root = tmp_path / "mini"
    root.mkdir()
    (root / "corpus.jsonl").write_bytes(corpus)
    (root / "queries.jsonl").write_bytes(queries)
    return root


GOOD_DOCS = b'{"_id": "d1", "title": "Comets", "text": "ion tail"}\n{"_id": "d2", "text": "bread flour"}\n'
GOOD_QUERIES = b'{"_id": "q1", "text": "comet tail"}\n{"_id": "q2", "text": "flour"}\n'


def test_bm25_bench_reads_every_document_and_query_of_good_data(tmp_path) -> None:
    from ragroute.evaluation.bench_bm25 import load_beir_texts

    root = _beir_texts_folder(tmp_path, GOOD_DOCS, GOOD_QUERIES)
    assert load_beir_texts(root) == (["Comets\nion tail", "bread flour"], ["comet tail", "flour"])
    result = run_bm25_bench(root, synthetic_docs=0, min_time_s=0.0, progress=False)
    assert result["corpora"]["mini"]["docs"] == 2 and result["corpora"]["mini"]["queries"] == 2


@pytest.mark.parametrize(
    ("corpus", "queries", "message"),
    [
        (GOOD_DOCS + b'{"_id": "d3", "text": broken\n', GOOD_QUERIES, "corpus.jsonl line 3: invalid JSON"),
        (GOOD_DOCS, GOOD_QUERIES + b'{"text": "no id"}\n', "queries.jsonl line 3: missing or invalid '_id'"),
        (GOOD_DOCS, b"", "corpus or queries are empty"),
    ],
    ids=["broken-json", "query-without-id", "no-queries"],
)
def test_bm25_command_refuses_bad_data_in_one_line(tmp_path, corpus, queries, message) -> None:
    root = _beir_texts_folder(tmp_path, corpus, queries)
    args = ["--data", str(root), "--synthetic-docs", "300", "--synthetic-queries", "5", "--min-time", "0"]
    result = CliRunner().invoke(bm25_command, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bm25_index_over_a_store_another_index_changes_follows_it(hashing_encoder):
    """An expert set's BM25 expert shares the base dense index's store: a delete through the dense
    index made its positions point at other documents (a deleted document's score on its neighbour,
    or an IndexError), and documents added there were never found lexically."""
    from ragroute.index.dense import DenseIndex
    from ragroute.index.lexical import BM25Index
    from ragroute.types import Document

    docs = [
        Document(id="d0", text="alpha bravo"),
        Document(id="d1", text="zebra quokka"),
        Document(id="d2", text="charlie delta"),
        Document(id="d3", text="echo foxtrot"),
    ]
    dense = DenseIndex(hashing_encoder)
    dense.add(docs)
    bm25 = BM25Index(store=dense.store)
    bm25.refit()
    assert [h.doc_id for h in bm25.search("zebra")] == ["d1"]
    dense.delete(["d1"])
    assert bm25.search("zebra") == []
    assert [h.doc_id for h in bm25.search("charlie")] == ["d2"]
    dense.add([Document(id="d4", text="zebra lima")])
    assert [h.doc_id for h in bm25.search("zebra")] == ["d4"]


def test_a_search_keeps_matches_that_score_below_zero() -> None:
    """A term in more than half of a small corpus gets epsilon * average_idf, negative here: its
    documents scored below the non-matching ones' 0, which filled the top k and were then dropped,
    so "alpha" found nothing at k = 1 and one of two matches at k = 2 (until session 37)."""
    from ragroute.index.lexical import BM25Index
    from ragroute.types import Document

    docs = [Document("d0", "alpha"), Document("d1", "alpha beta"), Document("d2", "beta")]
    index = BM25Index.build([Document(d.id, d.text, metadata={"g": "x"}) for d in docs])
    expected = BM25Okapi([["alpha"], ["alpha", "beta"], ["beta"]]).get_scores(["alpha"])
    assert expected[0] < 0 and expected[1] < 0 and expected[2] == 0
    for k in (1, 2, 3, 10):
        hits = index.search("alpha", k=k)
        assert [h.doc_id for h in hits] == ["d1", "d0"][:k]  # every top k a prefix of the next
        assert [h.score for h in hits] == pytest.approx(list(expected[[1, 0]][:k]))
        assert [h.doc_id for h in index.search("alpha", k=k, filters={"g": "x"})] == ["d1", "d0"][:k]


def test_combining_marks_stay_in_their_word() -> None:
    """Indic vowel signs and viramas are combining marks: they split हिन्दी भाषा into ह न द भ ष (no
    Hindi, Bengali or Tamil word survived whole), and a lowercased İstanbul (i + U+0307) into
    i, stanbul (until session 37). Indexes recorded before the option keep their tokens."""
    from ragroute.index.lexical import BM25Index
    from ragroute.types import Document

    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert tokenize("নমস্কার தமிழ்") == ["নমস্কার", "தமிழ்"]
    assert tokenize("İstanbul travel") == ["istanbul", "travel"]
    assert tokenize_many(["हिन्दी भाषा"]) == [["हिन्दी", "भाषा"]]
    assert tokenize("हिन्दी भाषा", TokenizerConfig(marks=False)) == ["ह", "न", "द", "भ", "ष"]
    docs = [Document("tr", "İstanbul travel"), Document("hi", "हिन्दी भाषा"), Document("x", "other words")]
    index = BM25Index.build(docs + [Document(str(i), f"filler {i}") for i in range(3)])
    assert [h.doc_id for h in index.search("istanbul", k=1)] == ["tr"]
    assert [h.doc_id for h in index.search("भाषा", k=1)] == ["hi"]
    assert index.manifest_params()["bm25"]["tokenizer"]["marks"] is True


def test_full_width_letters_ligatures_and_invisible_characters_match_their_plain_form(tmp_path) -> None:
    """A Chinese or Japanese keyboard in full-width mode types ＰＤＦ and ２０２３, PDFs hold the ligature
    ﬁ, a web page a soft hyphen or zero-width space inside a word, German writes Straße for STRASSE:
    until session 53 each was a token of its own, and a query in the other form found nothing, with
    no warning. An index built before keeps its tokens (``nfkc`` is false in its manifest)."""
    from ragroute.index.io import load_index, save_index
    from ragroute.index.lexical import BM25Index, BM25Params
    from ragroute.types import Document

    assert tokenize("ＰＤＦ ｐｄｆ ２０２３") == ["pdf", "pdf", "2023"]
    assert tokenize("ﬁle Straße STRASSE") == ["file", "strasse", "strasse"]
    assert tokenize("prin\u00adter prin\u200bter ＴＨＥ") == ["printer", "printer"]  # ＴＨＥ: a stopword
    assert tokenize("ﾊﾟｿｺﾝ") == tokenize("パソコン") == ["パソ", "ソコ", "コン"]
    assert tokenize("Windows™ ½") == ["windows", "1", "2"]  # a symbol still separates words
    assert tokenize_many(["ＰＤＦ ﬁle"]) == [["pdf", "file"]]
    assert tokenize("ＰＤＦ", TokenizerConfig(lowercase=False)) == ["PDF"]
    assert tokenize("ＰＤＦ ﬁle", TokenizerConfig(nfkc=False)) == ["ｐｄｆ", "ﬁle"]
    docs = [
        Document("pdf", "Convert a PDF file"),
        Document("fw", "ｓｐｒｅａｄｓｈｅｅｔ ｅｘｐｏｒｔ"),
        Document("de", "Die Straße ist gesperrt"),
        Document("web", "the prin\u00adter is jammed"),
    ]
    index = BM25Index.build(docs + [Document(str(i), f"filler words {i}") for i in range(4)])
    assert [h.doc_id for h in index.search("ＰＤＦ", k=1)] == ["pdf"]
    assert [h.doc_id for h in index.search("ﬁle", k=1)] == ["pdf"]
    assert [h.doc_id for h in index.search("spreadsheet", k=1)] == ["fw"]
    assert [h.doc_id for h in index.search("STRASSE", k=1)] == ["de"]
    assert [h.doc_id for h in index.search("printer", k=1)] == ["web"]
    assert index.manifest_params()["bm25"]["tokenizer"]["nfkc"] is True
    # an index built without it reads its queries as it read its documents
    old = BM25Index.build(docs, BM25Params(tokenizer=TokenizerConfig(nfkc=False)))
    save_index(old, tmp_path / "old")
    loaded = load_index(tmp_path / "old")
    assert loaded.params.tokenizer.nfkc is False
    assert [h.doc_id for h in loaded.search("ｓｐｒｅａｄｓｈｅｅｔ", k=1)] == ["fw"]
    assert loaded.search("spreadsheet", k=1) == []


def _bm25_documents(start: int, n: int, rng) -> list:
    from ragroute.types import Document

    words = [f"w{i}" for i in range(30)] + ["the", "ünï", "東京大学"]
    return [
        Document(id=f"d{start + i}", text=" ".join(rng.choice(words, size=int(rng.integers(1, 10)))))
        for i in range(n)
    ]


def test_an_index_changed_by_adds_and_deletes_fits_the_scorer_of_its_documents_bit_for_bit(
    monkeypatch,
) -> None:
    """Adds and deletes update kept term counts (session 38; every one re-tokenized the whole corpus
    before): the scorer must stay exactly the one a fit on the documents left gives, vocabulary order
    included, and an add tokenizes only the documents it adds."""
    from conftest import count_tokenized

    import ragroute.index.lexical as lexical
    from ragroute.index.lexical import BM25Index

    rng = np.random.default_rng(5)
    index = BM25Index.build(_bm25_documents(0, 20, rng))
    kept, scorer = index._counts.kept.matrix, index.scorer.matrix
    size = [m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (kept, scorer)]
    assert size[0] * 1.8 <= size[1]  # the kept counts cost half the scorer (as much until a review)
    real = lexical.tokenize_many
    tokenized = count_tokenized(monkeypatch, lexical)
    next_id = 100
    for step in range(40):
        ids = [d.id for d in index.store.documents]
        tokenized.clear()
        if ids and step % 3 == 2:
            index.delete(
                list(rng.choice(ids, size=int(rng.integers(1, min(4, len(ids)) + 1)), replace=False))
            )
        else:
            index.add(_bm25_documents(next_id, 2, rng))
            next_id += 10
            assert sum(tokenized) == 2
        fresh = BM25Scorer.fit(real([d.full_text() for d in index.store.documents], None))
        assert list(index.scorer.vocab) == list(fresh.vocab)
        assert index.scorer.statistics() == fresh.statistics()
        assert np.array_equal(index.scorer.idf, fresh.idf)
        assert (index.scorer.matrix != fresh.matrix).nnz == 0


def test_deleting_every_document_leaves_an_empty_index_that_takes_new_ones() -> None:
    """Deleting every document raised "cannot fit BM25 on an empty corpus" after the store had
    dropped them (until session 38), and every later search raised the same."""
    from ragroute.index.lexical import BM25Index
    from ragroute.types import Document

    index = BM25Index.build([Document(id="a", text="hello world"), Document(id="b", text="foo bar")])
    assert index.delete(["a", "b"]) == 2
    assert index.search("hello") == []
    index.add([Document(id="c", text="hello again")])
    assert [hit.doc_id for hit in index.search("hello")] == ["c"]


def test_a_bm25_index_with_no_documents_saves_as_an_empty_index(tmp_path) -> None:
    """Until session 44 saving it raised "BM25 index 'kb' holds no documents: there is nothing to
    save" (an emptied dense index saved); now it saves with no scorer files and the statistics of
    no documents, and loads back as an index that finds nothing until documents are added."""
    from ragroute.index.io import load_index, read_index_manifest, save_index
    from ragroute.index.lexical import BM25Index
    from ragroute.store.artifact import published_path
    from ragroute.types import Document

    index = BM25Index.build([Document(id="a", text="hello world")], name="kb")
    index.delete(["a"])
    for folder, empty in [("kb", index), ("never", BM25Index(name="never"))]:
        save_index(empty, tmp_path / folder)
        manifest = read_index_manifest(tmp_path / folder)
        assert manifest.params["documents"] == 0 and manifest.params["bm25_stats"]["n_docs"] == 0
        assert sorted(p.name for p in published_path(tmp_path / folder).iterdir()) == [
            "docs.jsonl",
            "manifest.json",
        ]
        loaded = load_index(tmp_path / folder)
        assert isinstance(loaded, BM25Index) and loaded.scorer is None and loaded.search("hello") == []
        loaded.add([Document(id="c", text="hello again")])
        assert [hit.doc_id for hit in loaded.search("hello")] == ["c"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"k1": 0}, "k1 must be a positive number"),
        ({"k1": "1.5"}, "k1 must be a positive number"),
        ({"b": None}, "b must be between 0 and 1"),
        ({"b": 1.5}, "b must be between 0 and 1"),
        ({"epsilon": float("nan")}, "epsilon must be a finite number"),
        ({"tokenizer": {"stem": False}}, "tokenizer must be a TokenizerConfig"),
    ],
)
def test_bad_bm25_params_are_refused_before_an_add_changes_the_index(params, message) -> None:
    """Until session 49 BM25Params were first read when the index was fitted: an add put its
    documents into the store, then raised (so adding them again said "duplicate document id"), and
    text or None for a number was a bare TypeError from math.isfinite."""
    from ragroute.index.lexical import BM25Index, BM25Params
    from ragroute.types import Document

    index = None
    with pytest.raises(RagrouteError, match=message) as info:
        index = BM25Index(BM25Params(**params))
        index.add([Document("a", "hello world")])
    assert "\n" not in str(info.value)
    assert index is None  # refused when the parameters are made, before any document went in
    if "tokenizer" not in params:  # the scorer says the same, in one line
        with pytest.raises(RagrouteError, match=message):
            BM25Scorer.fit([["a"]], **params)


def test_a_tokenizer_that_cannot_run_here_is_refused_before_an_add_or_an_encoding(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """Stemming without PyStemmer was first refused when the index was fitted: an add put its
    documents into the store, then raised (adding them again said "duplicate document id"), and a
    hybrid build encoded every document first. The parameters are refused when made now, and an
    index saved with stemming elsewhere is refused when loaded, before any add."""
    import types

    from conftest import HashingEncoder

    from ragroute.index.hybrid import HybridIndex
    from ragroute.index.io import load_index, save_index
    from ragroute.index.lexical import BM25Index, BM25Params
    from ragroute.types import Document

    class Stemmer:  # a stand-in for PyStemmer where it is installed
        def __init__(self, language: str) -> None:
            pass

        def stemWords(self, words):  # noqa: N802 (PyStemmer's name)
            return [w.removesuffix("ing") for w in words]

    monkeypatch.setattr(bm25_tokenize, "_STEMMER_LOCAL", __import__("threading").local())
    monkeypatch.setitem(sys.modules, "Stemmer", types.SimpleNamespace(Stemmer=Stemmer))
    stemmed = BM25Index.build(
        [Document("a", "running fox")], BM25Params(tokenizer=TokenizerConfig(stem=True))
    )
    save_index(stemmed, tmp_path / "stemmed")

    monkeypatch.setitem(sys.modules, "Stemmer", None)  # no PyStemmer here
    monkeypatch.setattr(bm25_tokenize, "_STEMMER_LOCAL", __import__("threading").local())
    index = None
    with pytest.raises(RagrouteError, match="PyStemmer") as info:
        index = BM25Index(BM25Params(tokenizer=TokenizerConfig(stem=True)))
        index.add([Document("b", "running")])  # raised here, and kept "b" in the index
    assert "\n" not in str(info.value)
    assert index is None  # refused when the parameters are made, before any document went in
    encoder = HashingEncoder()
    with pytest.raises(RagrouteError, match="PyStemmer"):
        HybridIndex.build(
            [Document("b", "running")], encoder, bm25_params=BM25Params(tokenizer=TokenizerConfig(stem=True))
        )
    assert encoder.calls == 0  # nothing encoded for an index that could not be built
    with pytest.raises(RagrouteError, match="PyStemmer"):
        load_index(tmp_path / "stemmed")


def test_the_speedup_over_rank_bm25_compares_the_two_on_the_same_queries(monkeypatch) -> None:
    # rank-bm25 runs a sample of the queries on big corpora; ours was timed on every query and the
    # speedup divided the two (until session 52): a ratio of two workloads. A clock that advances by
    # each call's query tokens (rank-bm25 ten times slower per token) must give exactly 10x.
    from types import SimpleNamespace

    from rank_bm25 import BM25Okapi

    from ragroute.evaluation import bench_bm25
    from ragroute.index.bm25_scoring import BM25Scorer

    now = [0.0]
    monkeypatch.setattr(bench_bm25, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    top_k, top_k_many, get_scores = BM25Scorer.top_k, BM25Scorer.top_k_many, BM25Okapi.get_scores

    def ours_one(self, query, k):
        now[0] += len(query)
        return top_k(self, query, k)

    def ours_many(self, queries, k):
        now[0] += sum(len(q) for q in queries)
        return top_k_many(self, queries, k)

    def theirs(self, query):
        now[0] += 10 * len(query)
        return get_scores(self, query)

    monkeypatch.setattr(BM25Scorer, "top_k", ours_one)
    monkeypatch.setattr(BM25Scorer, "top_k_many", ours_many)
    monkeypatch.setattr(BM25Okapi, "get_scores", theirs)
    docs = ["comet tail ion orbit", "bread flour yeast oven", "comet orbit sun", "flour mill wheat"]
    # the sample (the first two) has long queries, the rest short ones
    queries = ["comet tail ion orbit sun", "bread flour yeast oven mill", "comet", "flour", "orbit", "oven"]
    result = bench_bm25.bench_corpus("tiny", docs, queries, min_time_s=0.0, rank_bm25_sample=2)
    assert result["rank_bm25_queries"] == 2 and result["queries"] == 6
    assert result["speedup_vs_rank_bm25"] == pytest.approx(10.0)
    assert result["batch_speedup_vs_rank_bm25"] == pytest.approx(10.0)
    assert result["ours_qps_rank_bm25_queries"] < result["ours_qps"]  # the sample's queries are longer
    assert "  ours on its queries" in bench_bm25.format_table({"k": 10, "corpora": {"tiny": result}})


def test_rank_bm25_is_timed_after_a_warm_up_pass_as_ours_is(monkeypatch) -> None:
    # ours and bm25s were timed after a warm-up pass (_qps), rank-bm25 on one cold pass (until
    # session 55): its first-call costs went into its rate alone. A clock that advances by each
    # call's query tokens (rank-bm25 ten times slower per token) plus a large cost on each side's
    # first call must still give exactly 10x.
    from types import SimpleNamespace

    from rank_bm25 import BM25Okapi

    from ragroute.evaluation import bench_bm25
    from ragroute.index.bm25_scoring import BM25Scorer

    now = [0.0]
    calls = {"ours": 0, "theirs": 0}
    monkeypatch.setattr(bench_bm25, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    top_k, top_k_many, get_scores = BM25Scorer.top_k, BM25Scorer.top_k_many, BM25Okapi.get_scores

    def cost(side: str, tokens: int, per_token: float) -> None:
        now[0] += per_token * tokens + (1000.0 if calls[side] == 0 else 0.0)
        calls[side] += 1

    def ours_one(self, query, k):
        cost("ours", len(query), 1.0)
        return top_k(self, query, k)

    def ours_many(self, queries, k):
        cost("ours", sum(len(q) for q in queries), 1.0)
        return top_k_many(self, queries, k)

    def theirs(self, query):
        cost("theirs", len(query), 10.0)
        return get_scores(self, query)

    monkeypatch.setattr(BM25Scorer, "top_k", ours_one)
    monkeypatch.setattr(BM25Scorer, "top_k_many", ours_many)
    monkeypatch.setattr(BM25Okapi, "get_scores", theirs)
    docs = ["comet tail ion orbit", "bread flour yeast oven", "comet orbit sun", "flour mill wheat"]
    queries = ["comet tail ion orbit sun", "bread flour yeast oven mill", "comet", "flour"]
    result = bench_bm25.bench_corpus("tiny", docs, queries, min_time_s=0.0)
    assert result["rank_bm25_queries"] == 4
    assert result["speedup_vs_rank_bm25"] == pytest.approx(10.0)
    assert result["batch_speedup_vs_rank_bm25"] == pytest.approx(10.0)


def test_a_nan_score_is_not_hidden_from_max_abs_diff(monkeypatch) -> None:
    # max_abs_diff (and the top-level max over corpora) was Python's max over the queries' diffs:
    # a NaN after the first compares false and was dropped, so a query scored NaN read as exact
    # (until session 55)
    import math

    from ragroute.evaluation import bench_bm25
    from ragroute.index.bm25_scoring import BM25Scorer

    get_scores = BM25Scorer.get_scores

    def nan_for_sun(self, query):
        scores = get_scores(self, query)
        return np.full_like(scores, np.nan) if "sun" in query else scores

    monkeypatch.setattr(BM25Scorer, "get_scores", nan_for_sun)
    docs = ["comet tail ion orbit", "bread flour yeast oven", "comet orbit sun", "flour mill wheat"]
    queries = ["comet", "orbit sun", "flour"]
    result = bench_bm25.bench_corpus("tiny", docs, queries, min_time_s=0.0)
    assert math.isnan(result["max_abs_diff"])
    assert bench_bm25._max_diff([0.0, float("nan"), 1e-15]) != bench_bm25._max_diff([0.0, 1e-15])
    assert bench_bm25._max_diff([]) == 0.0 and bench_bm25._max_diff([1e-15, 2e-15]) == 2e-15
