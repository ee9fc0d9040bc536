"""TrainedRouter, its cheap features and the route-labels benchmark, on synthetic data with a fake encoder."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ragroute.cli.bench import route_labels_command
from ragroute.errors import EncoderMismatchError, IndexFormatError, RagrouteError
from ragroute.evaluation.bench_route_labels import (
    classification_metrics,
    format_table,
    read_labels,
    run_route_labels_bench,
)
from ragroute.route.base import NONE_ROUTE, Router
from ragroute.route.features import (
    CHEAP_FEATURE_NAMES,
    QueryFeatures,
    cheap_features,
    count_options,
    hashed_entries,
    hashed_ngrams,
    ngram_tokens,
    question_stem,
)
from ragroute.route.trained import (
    ROUTER_FILE,
    WEIGHTS_FILE,
    TrainedRouter,
    choose_none_bias,
    cross_val_logits,
)
from ragroute.store import open_snapshot
from ragroute.store.artifact import published_path


class FakeEncoder:
    """Deterministic bag-of-words encoder: words hashed (crc32) into ``dim`` buckets, L2-normalised."""

    backend = "fake"

    def __init__(self, dim: int = 64, model_id: str = "test/fake-words") -> None:
        self.dim = dim
        self.model_id = model_id

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: Any = None):
        return self._encode(texts)

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: Any = None):
        return self._encode(texts)

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "backend": self.backend, "dim": self.dim}


NOUNS = ["bridge", "tower", "statue", "castle", "river", "garden", "market", "temple", "harbor", "library"]
NAMES = ["Oslo", "Lima", "Cairo", "Quito", "Dakar", "Hanoi", "Perth", "Tunis", "Basel", "Malmo"]
TEMPLATES = {
    "image": "What color is the {n} in the picture of {c}?",
    "clip": "What happens in the scene after the {n} appears in the video about {c}?",
    "paragraph": "When was the {n} of {c} built?",
    "no": "Which of the following is true of a {n}?\nChoices:\nA) it is {c}\nB) it is old\nC) neither",
}


def synthetic(seed: int, per_label: int = 24) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, template in TEMPLATES.items():
        for _ in range(per_label):
            texts.append(template.format(n=rng.choice(NOUNS), c=rng.choice(NAMES)))
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    train_texts, train_labels = synthetic(0)
    test_texts, test_labels = synthetic(1, per_label=8)
    return {"train": (train_texts, train_labels), "test": (test_texts, test_labels)}


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture(scope="module")
def router(data: dict[str, Any], encoder: FakeEncoder) -> TrainedRouter:
    texts, labels = data["train"]
    return TrainedRouter.fit(texts, labels, encoder, none_label="no", features=QueryFeatures(hashed_dim=256))


# --------------------------------------------------------------------------- features


def test_question_stem_and_options() -> None:
    mmlu = "Which gas do plants absorb?\nChoices:\nA) oxygen\nB) carbon dioxide\nC) helium"
    video = "What year is shown in the opening caption?\n(A) 1636\n(B) 1366"
    inline = "Pick one (A) red (B) blue"
    assert question_stem(mmlu) == "Which gas do plants absorb?"
    assert question_stem(video) == "What year is shown in the opening caption?"
    assert question_stem(inline) == "Pick one"
    assert question_stem("  Who wrote Hamlet?  ") == "Who wrote Hamlet?"
    assert question_stem("A) only options") == "A) only options"
    assert count_options(mmlu) == 3 and count_options(video) == 2 and count_options("Who?") == 0


def test_cheap_features_are_deterministic_and_named() -> None:
    texts = ['What color is the "Blue House" in the image?', "how many 2 + 3 steps?", "Who was born in 1990?"]
    first, second = cheap_features(texts), cheap_features(texts)
    assert first.shape == (3, len(CHEAP_FEATURE_NAMES)) and first.dtype == np.float32
    assert np.array_equal(first, second)
    row = dict(zip(CHEAP_FEATURE_NAMES, first[0]))
    assert row["qw_what"] == 1 and row["has_quote"] == 1 and row["kw_visual"] > 0 and row["cap_ratio"] > 0
    row = dict(zip(CHEAP_FEATURE_NAMES, first[1]))
    assert row["has_math"] == 1 and row["all_lower"] == 1 and row["kw_howto"] > 0 and row["qw_how"] == 1
    row = dict(zip(CHEAP_FEATURE_NAMES, first[2]))
    assert row["has_year"] == 1 and row["qw_who"] == 1


def test_each_cheap_feature_value_sits_under_its_own_name() -> None:
    """The features are computed as one flat tuple: each value must land in its named column."""
    text = "John's list: cats or dogs (pets). Fill the __ blank, my friend\nA) one\nB) two\nC) three"
    row = dict(zip(CHEAP_FEATURE_NAMES, cheap_features([text])[0]))
    ones = {"has_possessive", "has_or", "has_paren", "has_blank", "multi_sentence", "has_newline"}
    ones.add("has_choices")
    assert {name for name in ones if row[name] == 1} == ones
    assert row["ends_open"] == 1 and row["ends_question"] == 0 and row["qw_none"] == 1
    assert row["log_options"] == pytest.approx(np.log1p(3))
    assert row["kw_person"] == pytest.approx(np.log1p(1))  # "my" (the options are cut from the stem)
    zeros = {"has_year", "has_timestamp", "has_math", "has_quote", "has_digit", "all_lower", "kw_math"}
    assert all(row[name] == 0 for name in zeros)
    row = dict(zip(CHEAP_FEATURE_NAMES, cheap_features(["At 10:30 in 1999, what was 2 * 3?"])[0]))
    assert row["has_timestamp"] == row["has_year"] == row["has_math"] == row["has_digit"] == 1
    assert row["ends_question"] == 1 and row["qw_what"] == 1 and row["qw_none"] == 0
    assert row["log_numbers"] == pytest.approx(np.log1p(5))  # 10, 30, 1999, 2, 3


@pytest.mark.parametrize(
    ("typed", "ascii"),
    [
        ("What\u2019s the capital of France?", "What's the capital of France?"),
        ("Who\u2019s the CEO of Apple?", "Who's the CEO of Apple?"),
        ("Complete the line \u201cto be or not to be\u201d", 'Complete the line "to be or not to be"'),
        ("What does \u2018ubiquitous\u2019 mean?", "What does 'ubiquitous' mean?"),
    ],
)
def test_cheap_features_read_typographic_quotes_as_ascii_ones(typed: str, ascii: str) -> None:
    """A phone types \u2019 for ': until session 54 "What\u2019s" had no question word (qw_none), a
    stem ending in \u201d was not ends_open and \u2018this\u2019 was no quote."""
    assert np.array_equal(cheap_features([typed]), cheap_features([ascii]))


def test_hashed_ngrams_are_stable_and_normalised() -> None:
    texts = ["What is the capital of Peru?", "what is the capital of peru?", "Steps to bake bread"]
    a, b = hashed_ngrams(texts, 128), hashed_ngrams(texts, 128)
    assert a.shape == (3, 128) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a[0], a[1])  # lower-cased before hashing
    config = QueryFeatures(hashed_dim=64, char_ngrams=None)
    assert config.transform(texts).shape == (3, len(CHEAP_FEATURE_NAMES) + 64)
    assert QueryFeatures.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(RagrouteError):
        hashed_ngrams(texts, 0)


def test_keyword_counts_equal_running_every_pattern() -> None:
    """The token pre-check that skips keyword groups must count exactly what the patterns find
    (saved routers rely on the feature values)."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ragroute.route.features import _KEYWORD_PATTERNS, KEYWORD_GROUPS, _keyword_counts

    for words in KEYWORD_GROUPS.values():  # the pre-check's premise: lower-case words, single spaces
        assert all(re.fullmatch(r"[a-z]+(?: [a-z]+)*", w) for w in words)
    vocabulary = sorted({w for words in KEYWORD_GROUPS.values() for k in words for w in k.split()})
    piece = st.one_of(
        st.sampled_from(vocabulary),
        st.sampled_from([" ", "  ", "-", "_", "'", "s", "é", "1", ",\n"]),
        st.text(max_size=3),
    )

    @settings(max_examples=400, derandomize=True, database=None, deadline=None)
    @given(st.lists(piece, max_size=25))
    def check(parts: list[str]) -> None:
        lower = "".join(parts).lower()
        want = {group: len(pattern.findall(lower)) for group, pattern in _KEYWORD_PATTERNS.items()}
        assert _keyword_counts(lower) == want

    check()
    assert _keyword_counts("how do i compare both, how to") == {
        **{g: 0 for g in KEYWORD_GROUPS},
        "comparison": 2,
        "howto": 2,
        "person": 1,
    }


@pytest.mark.parametrize("char_ngrams", [(3, 5), (1, 2), None])
def test_hashed_ngrams_equal_the_zlib_definition(char_ngrams) -> None:
    """The vectorised CRC must give exactly the documented buckets and signs (saved routers rely on it)."""
    import zlib

    texts = ["What is the total debt in 2019 and 2018?", "Ünïcödé wörds, déjà vu!", "ab", "", "x " * 9]
    dim = 97
    got = hashed_ngrams(texts, dim, char_ngrams=char_ngrams)
    for row, text in zip(got, texts):
        counts = np.zeros(dim)
        for gram in ngram_tokens(text, (1, 2), char_ngrams):
            h = zlib.crc32(gram.encode("utf-8"))
            counts[h % dim] += 1.0 if (h >> 31) == 0 else -1.0
        want = np.sign(counts) * np.log1p(np.abs(counts))
        norm = np.linalg.norm(want)
        assert np.allclose(row, want / norm if norm else want, atol=1e-6)


@pytest.mark.parametrize("dim", [97, 1 << 17])
def test_hashed_entries_are_the_rows_nonzeros(dim: int) -> None:
    """The sparse form (dense counts up to 65,536 buckets, sorted distinct buckets beyond) is exactly
    the dense row's non-zero part; buckets whose signed counts cancel are left out."""
    texts = ["What is the total debt in 2019 and 2018?", "Ünïcödé wörds, déjà vu!", "ab", "", "x " * 9]
    for text, row in zip(texts, hashed_ngrams(texts, dim)):
        buckets, values = hashed_entries(text, dim)
        assert np.array_equal(buckets, np.flatnonzero(row)) and np.array_equal(values, row[buckets])
        assert values.dtype == np.float32 and buckets.dtype == np.int64
    with pytest.raises(RagrouteError):
        hashed_entries("a", 0)


# --------------------------------------------------------------------------- fitting and routing


def test_fit_routes_held_out_queries(router: TrainedRouter, data: dict[str, Any]) -> None:
    texts, labels = data["test"]
    probs = router.predict_proba(texts)
    assert probs.shape == (len(texts), 4)
    assert np.allclose(probs.sum(axis=1), 1.0)
    expected = [NONE_ROUTE if label == "no" else label for label in labels]
    predicted = [router.labels[i] for i in probs.argmax(axis=1)]
    assert np.mean(np.array(predicted) == np.array(expected)) >= 0.95
    assert router.temperature > 0
    assert {"validation_accuracy", "validation_nll", "n_validation"} <= set(router.metrics)
    assert isinstance(router, Router)


def test_none_label_is_mapped(router: TrainedRouter) -> None:
    assert NONE_ROUTE in router.labels and "no" not in router.labels
    decision = router.route("Which of the following is true of a garden?\nChoices:\nA) it is Lima\nB) old")
    assert decision.chosen == [NONE_ROUTE]
    assert set(decision.routes) == set(router.labels)
    assert abs(sum(decision.routes.values()) - 1.0) < 1e-4


def test_decisions_are_explained(router: TrainedRouter) -> None:
    decision = router.route("What color is the tower in the picture of Oslo?")
    assert decision.chosen == ["image"]
    assert decision.signals["logit_margin"] > 0
    features = decision.signals["features"]
    assert set(features["blocks"]) == {"embedding", "cheap", "hashed"}
    assert features["top"] and all("contribution" in v for v in features["top"].values())
    assert decision.decided_by == "trained:logreg"


def test_route_many_equals_route(router: TrainedRouter, data: dict[str, Any], encoder: FakeEncoder) -> None:
    texts = data["test"][0][::5]
    many = router.route_many(texts)
    for text, decision in zip(texts, many):
        assert router.route(text).routes == decision.routes
    vectors = encoder.encode_queries(texts)
    assert [d.routes for d in router.route_many(texts, query_vectors=vectors)] == [d.routes for d in many]
    assert router.route_many([]) == []
    with pytest.raises(RagrouteError):
        router.route_many(texts, query_vectors=vectors[:1])


def test_logits_and_explanations_equal_the_dense_definition(
    data: dict[str, Any], encoder: FakeEncoder
) -> None:
    """Prediction reads the hashed block sparsely with the scaling folded into the weights; it must
    equal ``((x - offset) * scale) @ W + b`` on the dense input row, for the linear model and the MLP,
    and the explanation's block contributions must equal the dense products."""
    texts, labels = data["train"]
    test_texts = data["test"][0]
    vectors = encoder.encode_queries(test_texts)
    for model in ("logreg", "mlp"):
        fitted = TrainedRouter.fit(
            texts,
            labels,
            encoder,
            none_label="no",
            model=model,
            hidden=8,
            features=QueryFeatures(hashed_dim=64),
        )
        raw = np.hstack([vectors, fitted.features.transform(test_texts)]).astype(np.float64)
        scaled = fitted._scaling.apply(raw)
        dense = fitted._network.logits(scaled) + fitted._bias
        assert np.allclose(fitted.logits(test_texts, query_vectors=vectors), dense, rtol=1e-10, atol=1e-10)
        if model != "logreg":
            continue
        weights = fitted._network.weights[0]
        relative = weights - weights.mean(axis=1, keepdims=True)
        dim, n_cheap = encoder.dim, len(CHEAP_FEATURE_NAMES)
        for i, decision in enumerate(fitted.route_many(test_texts, query_vectors=vectors)):
            best = fitted.labels.index(decision.chosen[0])
            blocks = decision.signals["features"]["blocks"]
            want = {
                "embedding": scaled[i, :dim] @ relative[:dim, best],
                "cheap": scaled[i, dim : dim + n_cheap] @ relative[dim : dim + n_cheap, best],
                "hashed": scaled[i, dim + n_cheap :] @ relative[dim + n_cheap :, best],
            }
            assert blocks == pytest.approx({k: round(float(v), 4) for k, v in want.items()}, abs=1.01e-4)


def test_fit_is_deterministic(data: dict[str, Any], encoder: FakeEncoder, router: TrainedRouter) -> None:
    texts, labels = data["train"]
    again = TrainedRouter.fit(texts, labels, encoder, none_label="no", features=QueryFeatures(hashed_dim=256))
    test = data["test"][0]
    assert np.array_equal(again.predict_proba(test), router.predict_proba(test))


def test_fit_rejects_bad_input(data: dict[str, Any], encoder: FakeEncoder) -> None:
    texts, labels = data["train"]
    with pytest.raises(RagrouteError, match="labels"):
        TrainedRouter.fit(texts, labels[:-1], encoder)
    with pytest.raises(RagrouteError, match="two distinct"):
        TrainedRouter.fit(texts[:3], ["a"] * 3, encoder)
    with pytest.raises(RagrouteError, match="none_label"):
        TrainedRouter.fit(texts, labels, encoder, none_label="nothing")
    with pytest.raises(RagrouteError, match="unknown model"):
        TrainedRouter.fit(texts, labels, encoder, model="forest")  # type: ignore[arg-type]
    with pytest.raises(RagrouteError, match="nothing to learn"):
        TrainedRouter.fit(texts, labels, None, features=QueryFeatures(cheap=False))


@pytest.mark.parametrize("missing", [float("nan"), np.float64("nan"), "", "  "])
def test_a_missing_label_is_refused_not_learnt_as_a_route(
    data: dict[str, Any], encoder: FakeEncoder, missing: Any
) -> None:
    """pandas gives a missing label as NaN: until session 51 it was learnt as a route named 'nan'
    (and a blank one as a route of spaces), as None was learnt as 'None' until session 37."""
    texts, labels = data["train"]
    with pytest.raises(RagrouteError, match=r"^label 3 is .*: every text needs a route name$"):
        TrainedRouter.fit(texts, [*labels[:3], missing, *labels[4:]], encoder)
    # cross-validation read every label as text first: a NaN was a route named 'nan' there too
    with pytest.raises(RagrouteError, match=r"^label 3 is .*: every text needs a route name$"):
        cross_val_logits(texts, [*labels[:3], missing, *labels[4:]], encoder, folds=2)


def test_mlp_binary_and_model_free_variants(
    data: dict[str, Any], encoder: FakeEncoder, tmp_path: Path
) -> None:
    texts, labels = data["train"]
    test_texts = data["test"][0]
    mlp = TrainedRouter.fit(texts, labels, encoder, model="mlp", hidden=16, C=100.0)
    assert mlp.predict_proba(test_texts).shape == (len(test_texts), 4)
    assert (
        TrainedRouter.load(mlp.save(tmp_path / "mlp"), encoder).route(test_texts[0]).routes
        == mlp.route(test_texts[0]).routes
    )
    assert "values" in mlp.route(test_texts[0]).signals["features"]
    binary_labels = ["image" if label == "image" else "other" for label in labels]
    for features in (QueryFeatures(cheap=False), QueryFeatures()):
        binary = TrainedRouter.fit(texts, binary_labels, encoder, features=features)
        probs = binary.predict_proba(test_texts)
        assert probs.shape == (len(test_texts), 2) and np.allclose(probs.sum(axis=1), 1.0)
        decisions = binary.route_many(test_texts)
        assert {d.chosen[0] for d in decisions} == {"image", "other"}
    free = TrainedRouter.fit(texts, labels, None, none_label="no", features=QueryFeatures(hashed_dim=128))
    assert free.encoder_info is None
    loaded = TrainedRouter.load(free.save(tmp_path / "free"))
    assert np.array_equal(loaded.predict_proba(test_texts), free.predict_proba(test_texts))


# --------------------------------------------------------------------------- persistence


def _legacy_save(router: TrainedRouter, folder: Path) -> Path:
    """What ragroute 0.1 wrote: router.json beside router_weights.npz, no artifact manifest."""
    folder.mkdir(parents=True)
    arrays = {"offset": router._scaling.offset, "scale": router._scaling.scale}
    for i, (w, b) in enumerate(zip(router._network.weights, router._network.biases)):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    np.savez(folder / WEIGHTS_FILE, **arrays)
    (folder / ROUTER_FILE).write_text(json.dumps(router._manifest()))
    return folder


def test_save_load_round_trip(
    router: TrainedRouter, data: dict[str, Any], encoder: FakeEncoder, tmp_path: Path
):
    folder = router.save(tmp_path / "r")
    snapshot = open_snapshot(folder)
    assert snapshot.manifest.family == "router" and snapshot.manifest.kind == "trained"
    assert set(snapshot.manifest.files) == {WEIGHTS_FILE}
    assert snapshot.manifest.encoder == {"model_id": encoder.model_id, "dim": encoder.dim}
    settings = snapshot.manifest.params
    assert settings["labels"] == router.labels and settings["none_label"] == "no"
    with np.load(snapshot.file(WEIGHTS_FILE), allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)
    loaded = TrainedRouter.load(folder, FakeEncoder())
    texts = data["test"][0]
    assert np.array_equal(loaded.predict_proba(texts), router.predict_proba(texts))
    assert loaded.temperature == router.temperature and loaded.labels == router.labels
    legacy = TrainedRouter.load(_legacy_save(router, tmp_path / "old"), FakeEncoder())
    assert np.array_equal(legacy.predict_proba(texts), router.predict_proba(texts))


def test_load_checks_the_encoder(router: TrainedRouter, tmp_path: Path) -> None:
    folder = router.save(tmp_path / "r")
    for other in (FakeEncoder(model_id="test/other"), FakeEncoder(dim=32), None):
        with pytest.raises(EncoderMismatchError) as info:
            TrainedRouter.load(folder, other)
        assert "\n" not in str(info.value)


def test_load_reports_missing_and_corrupt_files(router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        TrainedRouter.load(tmp_path / "absent", encoder)
    folder = router.save(tmp_path / "r")
    weights = published_path(folder) / WEIGHTS_FILE
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(IndexFormatError, match="router_weights.npz is corrupt"):
        TrainedRouter.load(folder, encoder)
    weights.unlink()
    with pytest.raises(IndexFormatError, match="router_weights.npz of the published build is missing"):
        TrainedRouter.load(folder, encoder)
    weights.write_bytes(good)
    manifest = published_path(folder) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"labels"', '"label5"'))
    with pytest.raises(IndexFormatError, match="manifest.json is corrupt"):
        TrainedRouter.load(folder, encoder)


def test_legacy_router_files_are_checked(router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path):
    folder = _legacy_save(router, tmp_path / "old")
    weights = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(b"not a zip file")
    with pytest.raises(IndexFormatError, match="corrupt"):
        TrainedRouter.load(folder, encoder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        TrainedRouter.load(folder, encoder)
    np.savez(folder / WEIGHTS_FILE, offset=np.zeros(3), scale=np.ones(3))
    with pytest.raises(IndexFormatError, match="W0"):
        TrainedRouter.load(folder, encoder)
    (folder / WEIGHTS_FILE).write_bytes(weights)
    manifest = json.loads((folder / ROUTER_FILE).read_text())
    (folder / ROUTER_FILE).write_text(json.dumps({**manifest, "labels": ["a", "b"]}))
    with pytest.raises(IndexFormatError, match="output layer"):
        TrainedRouter.load(folder, encoder)
    (folder / ROUTER_FILE).write_text("{not json")
    with pytest.raises(IndexFormatError, match="JSON") as info:
        TrainedRouter.load(folder, encoder)
    assert "\n" not in str(info.value)
    (folder / ROUTER_FILE).write_text(json.dumps({**manifest, "version": 0}))
    with pytest.raises(IndexFormatError, match="refit it with `ragroute route fit`"):
        TrainedRouter.load(folder, encoder)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temperature": -1.0}, "temperature must be a number above 0, not -1.0"),
        ({"temperature": 0}, "temperature must be a number above 0, not 0"),
        ({"temperature": float("nan")}, "temperature must be a number above 0, not nan"),
        ({"none_bias": float("nan")}, "none_bias must be a finite number, not nan"),
        ({"labels": "duplicated"}, "labels must be distinct route names"),
    ],
)
def test_saved_numbers_and_labels_that_would_misroute_are_refused(
    router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """A saved temperature of 0 or below made every query certain of its best route (the softmax
    read it as 1e-9), NaN made every probability NaN, a NaN none_bias the none route's, and a label
    saved twice folded two routes into one whose probabilities no longer summed to 1: each loaded
    and routed. Refused in one line, as the pilot and quality routers refuse theirs."""
    if change.get("labels") == "duplicated":
        change = {"labels": [router.labels[0]] * len(router.labels)}
    folder = _legacy_save(router, tmp_path / "old")
    manifest = json.loads((folder / ROUTER_FILE).read_text())
    (folder / ROUTER_FILE).write_text(json.dumps({**manifest, **change}))
    with pytest.raises(IndexFormatError, match=re.escape(message)) as info:
        TrainedRouter.load(folder, encoder)
    assert "corrupt" in str(info.value) and "\n" not in str(info.value)
    published = router.save(tmp_path / "new")
    _rewrite_params(published, **change)
    with pytest.raises(IndexFormatError, match=re.escape(message)):
        TrainedRouter.load(published, encoder)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"layers": "2"}, "layers must be a whole number >= 1, not '2'"),
        ({"layers": None}, "layers must be a whole number >= 1, not None"),
        ({"features": "hashed"}, "features must be a mapping, not a string"),
        ({"params": [1]}, "params must be a mapping, not a list"),
        ({"metrics": 3}, "metrics must be a mapping, not an integer"),
        ({"labels": ["image", None, "paragraph", "none"]}, "labels must be distinct route names"),
        ({"labels": "abcd"}, "labels must be distinct route names, not 'abcd'"),
        ({"encoder": {"model_id": "test/fake-words", "dim": None}}, "bad encoder entry"),
        ({"temperature": 10**400}, "temperature must be a number above 0"),
    ],
)
def test_saved_settings_of_a_wrong_type_are_one_line_errors(
    router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """Until session 51 each was a traceback from loading a router.json (an AttributeError,
    TypeError or ValueError; OverflowError for a 400-digit temperature), or a label saved as null
    became a route named 'None' and labels saved as one string a route per letter."""
    folder = _legacy_save(router, tmp_path / "old")
    manifest = json.loads((folder / ROUTER_FILE).read_text())
    (folder / ROUTER_FILE).write_text(json.dumps({**manifest, **change}))
    for read in (lambda: TrainedRouter.load(folder, encoder), lambda: TrainedRouter.read_settings(folder)):
        with pytest.raises(IndexFormatError, match=re.escape(message)) as info:
            read()
        assert "corrupt" in str(info.value) and "\n" not in str(info.value)


def test_a_huge_layer_count_is_refused_without_listing_its_arrays(
    router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path
) -> None:
    """A router.json saying 10**12 layers listed two array names per layer before reading any, and
    ran out of memory (until session 51): more layers than the weights file has arrays is corrupt.
    (A million here: the old code's two million names fit in memory, and its message named them.)"""
    folder = _legacy_save(router, tmp_path / "old")
    manifest = json.loads((folder / ROUTER_FILE).read_text())
    (folder / ROUTER_FILE).write_text(json.dumps({**manifest, "layers": 10**6}))
    with pytest.raises(IndexFormatError, match=r"is corrupt: 1000000 layers, but 4 arrays$"):
        TrainedRouter.load(folder, encoder)


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("offset", lambda a: a.__setitem__(0, np.nan), "the input scaling is not finite"),
        ("scale", lambda a: a.__setitem__(-1, np.inf), "the input scaling is not finite"),
        ("W0", None, "a layer's weights are not a matrix"),
    ],
)
def test_weights_that_would_route_with_nan_or_crash_are_refused(
    router: TrainedRouter,
    encoder: FakeEncoder,
    tmp_path: Path,
    name: str,
    change: Any,
    message: str,
) -> None:
    """A weights file whose checksum is right but whose input scaling holds a NaN or an infinity
    loaded, and every probability of every query was NaN; a layer saved as a vector was an
    IndexError (until session 51)."""
    from conftest import replace_published_file

    folder = router.save(tmp_path / "r")
    with np.load(published_path(folder) / WEIGHTS_FILE) as saved:
        arrays = {key: np.array(saved[key]) for key in saved.files}
    if change is None:
        arrays[name] = arrays[name][:, 0]
    else:
        change(arrays[name])
    buffer = tmp_path / "weights.npz"
    np.savez(buffer, **arrays)
    replace_published_file(folder, WEIGHTS_FILE, buffer.read_bytes())
    with pytest.raises(IndexFormatError, match=re.escape(message)) as info:
        TrainedRouter.load(folder, encoder)
    assert "\n" not in str(info.value)


def test_mlp_layers_that_do_not_chain_are_refused_at_load(
    data: dict[str, Any], encoder: FakeEncoder, tmp_path: Path
) -> None:
    """An MLP whose hidden layer's outputs are not the next layer's inputs (every array finite, each
    bias the width of its layer) loaded, and then every query was numpy's matmul traceback."""
    from conftest import replace_published_file

    texts, labels = data["train"]
    mlp = TrainedRouter.fit(
        texts, labels, encoder, model="mlp", hidden=8, features=QueryFeatures(hashed_dim=0)
    )
    folder = mlp.save(tmp_path / "mlp")
    with np.load(published_path(folder) / WEIGHTS_FILE) as saved:
        arrays = {key: np.array(saved[key]) for key in saved.files}
    arrays["W1"] = arrays["W1"][:4]  # 4 inputs where the hidden layer gives 8
    buffer = tmp_path / "weights.npz"
    np.savez(buffer, **arrays)
    replace_published_file(folder, WEIGHTS_FILE, buffer.read_bytes())
    with pytest.raises(
        IndexFormatError, match="is corrupt: a layer's outputs are not the next layer's inputs$"
    ):
        TrainedRouter.load(folder, encoder)


def test_inspect_of_a_legacy_router_with_a_bad_encoder_entry_is_one_error_line(
    router: TrainedRouter, tmp_path: Path
) -> None:
    """Loading refused an encoder entry that is not a mapping; `inspect` read it as one (a
    traceback) until session 42: the settings check now refuses it for both."""
    from ragroute.cli import main

    folder = _legacy_save(router, tmp_path / "old")
    manifest = json.loads((folder / ROUTER_FILE).read_text())
    (folder / ROUTER_FILE).write_text(json.dumps({**manifest, "encoder": "all-MiniLM-L6-v2"}))
    for flags in ([], ["--json"]):
        result = CliRunner().invoke(main, ["inspect", str(folder), *flags])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == f"error: {folder / ROUTER_FILE} is corrupt: bad encoder entry"
        assert result.stdout == ""
    with pytest.raises(IndexFormatError, match="bad encoder entry"):
        TrainedRouter.read_settings(folder)


# --------------------------------------------------------------------------- cross-validation and bench


def test_cross_validation_and_none_bias(data: dict[str, Any], encoder: FakeEncoder) -> None:
    texts, labels = data["train"]
    route_labels, logits = cross_val_logits(texts, labels, encoder, folds=3, none_label="no")
    assert route_labels == sorted(NONE_ROUTE if label == "no" else label for label in set(labels))
    assert logits.shape == (len(texts), 4) and np.isfinite(logits).all()
    truth = [NONE_ROUTE if label == "no" else label for label in labels]
    bias, stats = choose_none_bias(route_labels, logits, truth, target_recall=1.0)
    assert bias >= 0 and stats["none_recall"] == 1.0
    assert choose_none_bias(["a", "b"], logits[:, :2], ["a"] * len(texts)) == (0.0, {})


def test_cross_validation_with_a_none_label_all_in_one_fold(
    data: dict[str, Any], encoder: FakeEncoder
) -> None:
    """A none label with a single query: the fold holding it is fitted without that label, and its
    route scores -inf there as any label a fold lacks. Until session 43 that fold's fit refused
    ``none_label 'no' is not among the labels`` and the whole cross-validation failed."""
    texts, labels = data["train"]
    keep = [i for i, label in enumerate(labels) if label != "no"][:30] + [labels.index("no")]
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    route_labels, logits = cross_val_logits(
        texts, labels, encoder, folds=3, none_label="no", features=QueryFeatures(hashed_dim=64)
    )
    assert NONE_ROUTE in route_labels and logits.shape == (len(texts), len(route_labels))
    none = route_labels.index(NONE_ROUTE)
    assert logits[-1, none] == -np.inf  # its own fold never saw the label
    assert np.isfinite(np.delete(logits, none, axis=1)).all()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("none_bias", float("nan")),
        ("none_bias", float("inf")),
        ("C", float("nan")),
        ("cheap_weight", float("nan")),
        ("hashed_weight", float("inf")),
        ("hidden", 0),
    ],
)
def test_fit_refuses_numbers_that_would_give_nan_or_a_traceback(
    data: dict[str, Any], encoder: FakeEncoder, option: str, value: Any
) -> None:
    """Until session 43 a NaN or infinite none_bias fitted a router whose every probability was NaN,
    and a NaN C (``route fit --C nan``) or weight, or 0 hidden units, ended in scikit-learn's
    multi-line refusal."""
    texts, labels = data["train"]
    model = "mlp" if option == "hidden" else "logreg"
    with pytest.raises(RagrouteError, match=option):
        TrainedRouter.fit(texts, labels, encoder, none_label="no", model=model, **{option: value})


def test_fit_refuses_query_vectors_without_their_encoder(data: dict[str, Any], encoder: FakeEncoder) -> None:
    """Embeddings given without the encoder were dropped without a word: the router learnt from
    the features alone (no embedding block), not from the vectors it was handed."""
    texts, labels = data["train"]
    vectors = encoder.encode_queries(texts)
    with pytest.raises(RagrouteError, match=r"^query_vectors were given without the encoder that made them"):
        TrainedRouter.fit(texts, labels, None, query_vectors=vectors, features=QueryFeatures(hashed_dim=16))


def test_fit_refuses_to_calibrate_on_nothing_held_out(data: dict[str, Any], encoder: FakeEncoder) -> None:
    """calibrate=True with validation_fraction=0 held nothing out, and the router was left at
    temperature 1.0 with calibrate recorded as done."""
    texts, labels = data["train"]
    options = {"features": QueryFeatures(hashed_dim=16)}
    with pytest.raises(RagrouteError, match=r"^validation_fraction 0 holds no query out to calibrate on"):
        TrainedRouter.fit(texts, labels, encoder, validation_fraction=0.0, **options)
    uncalibrated = TrainedRouter.fit(
        texts, labels, encoder, validation_fraction=0.0, calibrate=False, **options
    )
    assert uncalibrated.temperature == 1.0


def _write_labels(path: Path, texts: list[str], labels: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i, (text, label) in enumerate(zip(texts, labels)):
            value: Any = [label, "extra"] if i == 0 else label
            out.write(json.dumps({"_id": str(i), "text": text, "label": value, "metadata": {}}) + "\n")
    return path


def test_bench_on_tiny_files(data: dict[str, Any], encoder: FakeEncoder, tmp_path: Path, monkeypatch) -> None:
    from ragroute.evaluation import bench_route_labels

    train = _write_labels(tmp_path / "train.jsonl", *data["train"])
    test = _write_labels(tmp_path / "test.jsonl", *data["test"])
    loaded = read_labels(train)
    assert loaded.multi_label == 1 and loaded.labels[0] == "image"
    routers = ["majority", "knn5_embedding", "logreg_embedding", "trained_features", "trained_no_encoder"]
    result = run_route_labels_bench(train, test, encoder=encoder, routers=routers, latency_queries=5)
    assert list(result["routers"]) == routers
    for metrics in result["routers"].values():
        assert {"accuracy", "macro_f1", "none_recall", "latency_ms_p50"} <= set(metrics)
    assert result["routers"]["trained_features"]["accuracy"] >= 0.9
    assert result["routers"]["majority"]["accuracy"] == 0.25
    assert result["baseline_reference"] is None  # the numbers belong to UniversalRAG only
    assert "reference (issue)" not in format_table(result)
    assert result["multi_label_records"] == {"train": 1, "test": 1}
    json.dumps(result)
    (tmp_path / "universalrag_routing").mkdir()
    test.rename(tmp_path / "universalrag_routing" / "test.jsonl")
    said: list[str] = []
    cut = run_route_labels_bench(
        train,
        tmp_path / "universalrag_routing" / "test.jsonl",
        encoder=encoder,
        routers=["majority"],
        log=said.append,
    )
    # a file in a folder of that name but not its dev file's size is other data (until session 40 the
    # name alone printed the numbers beside a slice's)
    assert cut["baseline_reference"] is None and "reference (issue)" not in format_table(cut)
    assert result["baseline"] == "logreg_embedding" and cut["baseline"] is None  # majority alone ran
    assert "issue reference left out: the data differs from the universalrag_routing dev file" in "\n".join(
        said
    )
    monkeypatch.setattr(bench_route_labels, "REFERENCE_QUERIES", len(data["test"][0]))
    named = run_route_labels_bench(
        train, tmp_path / "universalrag_routing" / "test.jsonl", encoder=encoder, routers=["majority"]
    )
    assert named["baseline_reference"]["accuracy"] == 0.874
    assert "reference (issue)" in format_table(named)


def test_read_labels_takes_bom_crlf_and_line_separators_in_strings(tmp_path: Path) -> None:
    # bench gate and bench route-labels read LABELS with str.splitlines(): a BOM made line 1
    # "not a LABELS record" and a U+2028 inside a text (valid JSON) cut the record in two
    rows = [{"_id": "a", "text": "one\u2028two", "label": "no"}, {"_id": "b", "text": "x", "label": ["doc"]}]
    path = tmp_path / "dev.jsonl"
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    loaded = read_labels(path)
    assert loaded.texts == ["one\u2028two", "x"] and loaded.labels == ["no", "doc"]
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n", encoding="utf-8")
    with pytest.raises(RagrouteError, match="duplicate record id 'a'"):
        read_labels(path)


def test_bench_command_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        route_labels_command, ["--train", str(tmp_path / "nope.jsonl"), "--data", str(tmp_path / "x.jsonl")]
    )
    assert result.exit_code == 2
    assert "error: data missing" in result.output and "Traceback" not in result.output


def test_bench_refuses_one_training_label_and_warns_of_labels_it_cannot_score(
    data: dict[str, Any], encoder: FakeEncoder, tmp_path: Path
) -> None:
    """Until session 37 one training label ended in scikit-learn's traceback (the logreg baseline),
    a test label the training file lacks and a typo'd --none-label went unsaid, and --routers ','
    measured nothing and exited 0."""
    texts, labels = data["train"]
    one = _write_labels(tmp_path / "one.jsonl", texts, ["doc"] * len(texts))
    test = _write_labels(tmp_path / "test.jsonl", *data["test"])
    with pytest.raises(RagrouteError, match=r"holds 1 distinct label \['doc'\]: a router needs two"):
        run_route_labels_bench(one, test, encoder=encoder, routers=["logreg_embedding"])
    train = _write_labels(tmp_path / "train.jsonl", *data["train"])
    renamed = [("Clip" if label == "clip" else label) for label in data["test"][1]]
    odd = _write_labels(tmp_path / "odd.jsonl", data["test"][0], renamed)
    said: list[str] = []
    run_route_labels_bench(
        train, odd, encoder=encoder, routers=["majority"], none_label="No", log=said.append
    )
    n = renamed.count("Clip")
    assert (
        f"warning: {n} test queries carry labels the training file lacks (scored as errors): 'Clip' ({n})"
        in said
    )
    assert "warning: --none-label 'No' is in neither file: no router learns a none route" in said
    result = CliRunner().invoke(
        route_labels_command, ["--train", str(train), "--data", str(test), "--routers", ","]
    )
    assert result.exit_code == 2 and "error: --routers ',' names nothing" in result.output


def test_classification_metrics() -> None:
    metrics = classification_metrics(["a", "a", "no", "b"], ["a", "b", "no", "b"], "no")
    assert metrics["accuracy"] == 0.75 and metrics["none_recall"] == 1.0
    assert metrics["macro_f1"] == round((2 / 3 + 2 / 3 + 1.0) / 3, 4)


def _rewrite_params(folder: Path, **params: Any) -> None:
    """Change the published build's manifest params and re-sign manifest and pointer."""
    from ragroute.store.manifest import canonical_checksum, sha256_file

    path = published_path(folder) / "manifest.json"
    data = json.loads(path.read_text())
    data["params"].update(params)
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))
    pointer = {"build": data["build"], "manifest_sha256": sha256_file(path)}
    (folder / "CURRENT").write_text(json.dumps(pointer))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"version": 2}, "trained-router format version 2, newer than this ragroute"),
        ({"version": 0}, "trained-router format version 0, expected 1; refit it with `ragroute route fit`"),
        ({"format": "other"}, "is not a ragroute.trained-router manifest; refit it"),
    ],
)
def test_router_format_of_a_published_build_is_checked(
    router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path, params: dict[str, Any], message: str
):
    # the router's own format and version were checked only in router.json folders of 0.1: a
    # published build saying version 2 (or 0) loaded and routed as if it were version 1
    folder = router.save(tmp_path / "r")
    _rewrite_params(folder, **params)
    with pytest.raises(IndexFormatError, match=re.escape(message)) as info:
        TrainedRouter.load(folder, encoder)
    assert "\n" not in str(info.value)
    from click.testing import CliRunner

    from ragroute.cli import main

    shown = CliRunner().invoke(main, ["inspect", str(folder)])  # said "checksums verified", exit 0
    assert shown.exit_code != 0 and message in shown.output and len(shown.output.strip().splitlines()) == 1


def test_a_0_1_router_is_refitted_in_place_and_checked_like_loading_checks_it(
    router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path
):
    """The message of an old router says `refit it with ragroute route fit`; the refit itself was
    refused (`it exists and is not a ragroute artifact`). And `read_settings`, which `config
    check` uses, refuses what loading refuses (it said ok)."""
    from click.testing import CliRunner

    from ragroute.cli import main

    folder = _legacy_save(router, tmp_path / "old")
    assert TrainedRouter.read_settings(folder)["labels"] == router.labels
    shown = CliRunner().invoke(main, ["inspect", str(folder)])  # said: holds no ragroute artifact
    assert shown.exit_code == 0 and "router / trained (logreg)  [0.1 layout" in shown.output
    # --clean refused it as "nothing to clean ...: it holds no ragroute artifact", exit 2 (until session 54)
    cleaned = CliRunner().invoke(main, ["inspect", str(folder), "--clean"])
    assert cleaned.exit_code == 0 and "router / trained (logreg)  [0.1 layout" in cleaned.stdout
    said = f"cleaned {folder}: nothing to clean (a 0.1 router folder keeps no builds)"
    assert cleaned.stderr.strip() == said
    manifest = json.loads((folder / ROUTER_FILE).read_text())
    (folder / ROUTER_FILE).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99, newer than this ragroute"):
        TrainedRouter.read_settings(folder)
    from ragroute.route.config_check import check_config

    config = {"sources": {"a": {"index": "nowhere"}}, "router": {"kind": "trained", "model": "old"}}
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    problems = check_config(tmp_path / "r.yaml").problems  # it said ok: only loading refused
    assert any("format version 99, newer" in problem for problem in problems)
    router.save(folder)  # the refit: published in place, the 0.1 files gone
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["CURRENT", "builds"]
    assert TrainedRouter.load(folder, encoder).labels == router.labels
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="exists and is not a ragroute artifact"):
        router.save(tmp_path / "other")  # a folder of anything else is still never overwritten


def test_cheap_and_hashed_weights_scale_their_blocks(data: dict[str, Any], encoder: FakeEncoder) -> None:
    texts, labels = data["train"]
    features = QueryFeatures(hashed_dim=32)
    fitted = TrainedRouter.fit(
        texts, labels, encoder, features=features, cheap_weight=0.3, hashed_weight=2.5, calibrate=False
    )
    dim, n_cheap = encoder.dim, len(CHEAP_FEATURE_NAMES)
    cheap = features.transform(texts)[:, :n_cheap]
    std = cheap.std(axis=0).astype(np.float64)
    std[std < 1e-6] = 1.0
    scale = fitted._scaling.scale
    np.testing.assert_array_equal(scale[:dim], np.ones(dim))
    np.testing.assert_allclose(scale[dim : dim + n_cheap], 0.3 / std, rtol=1e-12)
    np.testing.assert_array_equal(scale[dim + n_cheap :], np.full(32, 2.5))
    np.testing.assert_allclose(fitted._scaling.offset[dim : dim + n_cheap], cheap.mean(axis=0), rtol=1e-6)


def test_query_features_round_trip_their_word_ngrams() -> None:
    features = QueryFeatures(hashed_dim=16, word_ngrams=(1, 3), char_ngrams=(2, 4))
    again = QueryFeatures.from_dict(features.to_dict())
    assert again == features and again.word_ngrams == (1, 3) and again.char_ngrams == (2, 4)
    text = "Which of the following bridges spans the river?"
    np.testing.assert_array_equal(again.transform([text]), features.transform([text]))
    assert QueryFeatures.from_dict({"hashed_dim": 4}).word_ngrams == (1, 2)


def test_a_legacy_router_of_other_cheap_features_says_to_refit(
    router: TrainedRouter, encoder: FakeEncoder, tmp_path: Path
):
    # the message called the router 'corrupt' and gave no way out
    folder = _legacy_save(router, tmp_path / "old")
    manifest = json.loads((folder / ROUTER_FILE).read_text())
    if manifest["features"] is None or not manifest["features"].get("cheap_names"):
        pytest.skip("the fixture router reads no cheap features")
    manifest["features"]["cheap_names"] = manifest["features"]["cheap_names"][:-1]
    (folder / ROUTER_FILE).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError) as info:
        TrainedRouter.load(folder, encoder)
    assert str(info.value) == (
        f"router {folder} was fitted on cheap query features this version of ragroute does not "
        "compute: refit it with `ragroute route fit`"
    )


def test_bench_refuses_scoring_on_the_training_file_and_counts_shared_texts(
    data: dict[str, Any], encoder: FakeEncoder, tmp_path: Path
) -> None:
    # `--train X --data X` printed an in-sample logreg accuracy next to the 90% goal, without a word
    train = _write_labels(tmp_path / "train.jsonl", *data["train"])
    result = CliRunner().invoke(
        route_labels_command, ["--train", str(train), "--data", str(train), "--routers", "majority"]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "--train and --data are the same file" in result.output and "held-out file" in result.output
    with pytest.raises(RagrouteError, match="the same file"):
        run_route_labels_bench(train, train, encoder=encoder, routers=["majority"])
    copy = tmp_path / "copy.jsonl"  # the same queries under another name: in-sample all the same
    copy.write_text(train.read_text())
    with pytest.raises(RagrouteError, match="every one of the .* test queries is also in the training file"):
        run_route_labels_bench(train, copy, encoder=encoder, routers=["majority"])
    texts, labels = data["test"]
    seen = {" ".join(t.lower().split()) for t in data["train"][0]}
    shared = sum(" ".join(t.lower().split()) in seen for t in texts)  # the synthetic sets share some
    assert 0 < shared < len(texts)
    test = _write_labels(tmp_path / "test.jsonl", texts, labels)
    said: list[str] = []
    run_route_labels_bench(train, test, encoder=encoder, routers=["majority"], log=said.append)
    assert f"note: {shared} of {len(texts)} test queries also appear in the training file" in said[0]
