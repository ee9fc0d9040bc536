"""Retrieval gates: signals on tiny data, the trained gate (calibration, operating points, store round
trip, signal mismatch), the threshold gate, pipeline integration and the ``gate:`` settings."""

from __future__ import annotations

import itertools
import json
import re
import warnings

import numpy as np
import pytest
from conftest import HashingEncoder

from ragroute.context import QueryContext
from ragroute.errors import EncoderMismatchError, RagrouteError
from ragroute.evaluation.metrics import auroc
from ragroute.gate import GateSignalMismatchError, ThresholdGate, TrainedGate, make_signal, needs_retrieval
from ragroute.gate.llm_signals import default_fallback
from ragroute.gate.signals import (
    PROBE_C_GRID,
    BankMarginSignal,
    ComplexitySignal,
    Examples,
    KnnVoteSignal,
    RaritySignal,
    RetrievalConfidenceSignal,
    balanced_log_loss,
    content_words,
    multihop_cues,
    zipf,
)
from ragroute.gate.trained import balanced_accuracy, best_balanced_threshold, fit_platt
from ragroute.index.build import build_index
from ragroute.pipeline.build import pipeline_from_settings
from ragroute.registry import ARTIFACTS, GATES
from ragroute.route.sources import Source

# "retrieve" queries ask about rare named things; "answer" ones are arithmetic and general knowledge.
RETRIEVE = [
    f"Who founded the {name} company in {city}?"
    for name in ("Zorblat", "Quenvar", "Mirtoll", "Blenshaw", "Trazzik", "Vumbrel", "Oskarine", "Pelltrode")
    for city in ("Ulaanbaatar", "Tromso", "Ouagadougou")
]
ANSWER = (
    [f"What is {a} plus {b}?" for a, b in ((2, 2), (3, 5), (7, 1), (4, 4), (6, 3), (9, 2), (1, 1), (8, 5))]
    + [
        f"What colour is the {thing}?"
        for thing in ("sky", "grass", "sun", "snow", "sea", "night", "blood", "milk", "cloud", "coal")
    ]
    + [f"How many legs does a {animal} have?" for animal in ("dog", "cat", "bird", "spider", "horse", "cow")]
)
TEXTS = RETRIEVE + ANSWER
FLAGS = [True] * len(RETRIEVE) + [False] * len(ANSWER)


@pytest.fixture(scope="module")
def encoder() -> HashingEncoder:
    return HashingEncoder(dim=128)


@pytest.fixture(scope="module")
def fitted(encoder) -> TrainedGate:
    return TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["knn_vote", "bank_margin", "rarity", "complexity"])


def examples(encoder, texts=TEXTS, flags=FLAGS) -> Examples:
    return Examples(list(texts), np.asarray(flags), encoder.encode_queries(list(texts)))


# --------------------------------------------------------------------------- labels and signals


def test_labels_no_none_no_tool_mean_answer():
    assert [needs_retrieval(x) for x in ("no", "none", "NO_TOOL", "document", "tool", ["no", "x"])] == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]


def test_knn_vote_is_leave_one_out_and_votes_by_similarity(encoder):
    texts = ["alpha beta", "alpha beta", "alpha gamma", "delta epsilon", "delta zeta"]
    flags = [True, True, True, False, False]
    signal = KnnVoteSignal(k=2)
    values = signal.fit_values(examples(encoder, texts, flags))
    # the two identical "alpha beta" never vote for each other: their neighbours are "alpha gamma" + a delta
    assert values[0, 0] == pytest.approx(
        1.0, abs=1e-4
    )  # "alpha gamma" is the only similar neighbour (delta: sim 0)
    assert values[3, 0] == pytest.approx(0.0, abs=1e-3)  # its only similar neighbour, "delta zeta", answers
    assert values[0, 1] == pytest.approx(0.5, abs=1e-6)  # cosine("alpha beta", "alpha gamma") = 1/2
    # a query with an example's text (case and spacing ignored) is voted on as that example was
    # when fitting: without it, not with a nearest_sim of 1.0 the fitted model never saw
    fresh = signal.values([QueryContext("Alpha  BETA")], encoder.encode_queries(["alpha beta"]))
    np.testing.assert_allclose(fresh[0], values[0], atol=1e-6)
    other = signal.values([QueryContext("alpha beta!")], encoder.encode_queries(["alpha beta"]))
    assert other[0, 1] == pytest.approx(1.0, abs=1e-6)  # another text: every example is a neighbour
    explained = signal.explain(QueryContext("delta epsilon"), encoder.encode_queries(["delta epsilon"])[0])
    assert explained["labelled_example"] == {"retrieve": False, "left_out_of_vote": True}
    assert explained["nearest"] == "delta zeta" and explained["nearest_retrieve"] is False
    unseen = signal.explain(QueryContext("delta"), encoder.encode_queries(["delta"])[0])
    assert "labelled_example" not in unseen and unseen["nearest_retrieve"] is False


def test_a_gate_decides_its_own_examples_as_it_scored_them_when_fitting(encoder):
    """Retrieve-examples come in near-identical pairs, answer-examples are all different, so the
    fitted model learns "a very close example -> retrieve" from nearest_sim. Before session 36 a
    query repeating an answer-example read nearest_sim 1.0 (itself) and all 12 were retrieved for."""
    names = ["zorblat", "quenvar", "mirtoll", "blenshaw", "trazzik", "vumbrel", "oskarine", "pelltrode"]
    retrieve = [f"who founded {n} {suffix}" for n in names for suffix in ("inc", "inc ltd")]
    answer = [
        "what is two plus two", "what colour is the sky", "how many legs does a dog have",
        "name a primary colour", "spell the word cat", "count from one to five",
        "what day follows monday", "is ice cold", "translate hello to french",
        "which is bigger ten or three", "write a haiku about rain", "say something kind",
    ]  # fmt: skip
    texts, flags = retrieve + answer, [True] * len(retrieve) + [False] * len(answer)
    gate = TrainedGate.fit(texts, flags, HashingEncoder(dim=256), signals=["knn_vote"], C=1.0)
    assert gate.model.coef[gate.columns.index("knn_vote.nearest_sim")] > 0
    decisions = gate.gate_many(answer)
    assert [d.action for d in decisions] == ["answer"] * len(answer)
    assert decisions[0].signals["knn_vote"]["labelled_example"]["retrieve"] is False


def test_a_text_probe_reads_its_own_examples_out_of_fold_so_rates_hold_on_them(encoder, tmp_path):
    """The text probe fitted on every example scored its own examples far more surely than the
    out-of-fold logits the gate was fitted on; a gate with it retrieved for 0.56 / 0.64 / 0.82 /
    0.94 of its own 50 MetaTool queries at targets 0.5 / 0.7 / 0.9 / 1.0 (session 40 audit). A
    repeated example now reads its out-of-fold logit (also after save and load), and a target of
    1 retrieves for every query, an unseen one scoring below every example too."""
    gate = TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["text_probe", "rarity"], C=1.0)
    probe = gate.signals[0]
    out_of_fold = probe.fit_values(examples(encoder))[:, 0]  # the same folds and C: the same values
    np.testing.assert_allclose(
        probe.values([QueryContext(t.upper()) for t in TEXTS], None)[:, 0], out_of_fold
    )
    assert probe.explain(QueryContext(TEXTS[3]), None) == {
        "labelled_example": {"out_of_fold_logit": round(float(out_of_fold[3]), 4)}
    }
    gate.save(tmp_path / "g")
    loaded = TrainedGate.load(tmp_path / "g", encoder)
    for fitted_gate in (gate, loaded):
        for rate in (0.25, 0.5, 0.75, 1.0):
            chosen = fitted_gate.with_operating_point(retrieval_rate=rate)
            decided = chosen.gate_many([QueryContext(t) for t in TEXTS])
            assert np.mean([d.action == "retrieve" for d in decided]) == pytest.approx(
                rate, abs=1 / len(TEXTS)
            )
    assert loaded.with_operating_point(retrieval_rate=1.0).threshold == 0.0
    assert loaded.with_operating_point(retrieval_rate=0.0).threshold == 1.0


def test_bank_margin_separates_the_banks(encoder):
    signal = BankMarginSignal(top_n=2)
    values = signal.fit_values(examples(encoder))
    margin = values[:, 2]
    assert margin[: len(RETRIEVE)].min() > margin[len(RETRIEVE) :].max()
    assert np.allclose(values[:, 0] - values[:, 1], margin)
    # a query repeating an example is measured as that example was when fitting (leave one out)
    repeated = [QueryContext(TEXTS[0].upper()), QueryContext(ANSWER[0])]
    vectors = encoder.encode_queries([TEXTS[0], ANSWER[0]])
    np.testing.assert_allclose(signal.values(repeated, vectors), values[[0, len(RETRIEVE)]], atol=1e-6)
    assert signal.values([QueryContext(ANSWER[0] + "!")], vectors[1:])[0, 1] == pytest.approx(1.0, abs=1e-6)
    restored = BankMarginSignal(top_n=2)
    restored.set_state(*signal.state())
    np.testing.assert_allclose(restored.values(repeated, vectors), values[[0, len(RETRIEVE)]], atol=1e-6)
    with pytest.raises(RagrouteError, match="both kinds"):
        BankMarginSignal().fit(examples(encoder, ["a b", "c d"], [True, True]))


def test_bank_margin_of_an_example_alone_in_its_bank_is_zero_without_a_warning(encoder):
    """Left out of its own bank, the one answer-directly example has no bank to compare with: its
    answer side reads 0. Until session 45 np.nanmean warned "Mean of empty slice" (np.errstate
    does not silence it), on every fit over a class of one example."""
    fitted = examples(
        encoder, ["what is the capital of france", "who wrote hamlet", "2+2"], [True, True, False]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = BankMarginSignal(top_n=2).fit_values(fitted)
    assert values[2, 1] == 0.0 and values[2, 2] == values[2, 0]


def test_bank_margin_values_are_float64_as_every_signals(encoder):
    """The margin's values were float32 (until session 55): a threshold gate over it compared the
    margin to its cut in float32, and its trace showed 0.666700005531311 where it meant 0.6667."""
    signal = BankMarginSignal(top_n=2)
    fitted = signal.fit_values(examples(encoder))
    query = [QueryContext("Who founded the Zorblat company?")]
    values = signal.values(query, encoder.encode_queries([query[0].text]))
    assert values.dtype == np.float64 and fitted.dtype == np.float64
    gate = ThresholdGate("bank_margin", above=0.0, encoder=encoder, examples=(TEXTS, FLAGS))
    shown = gate.gate_many(query)[0].signals["values"]["bank_margin.margin"]
    assert shown == round(float(values[0, 2]), 4)


def test_vote_bank_and_explanation_share_one_product_per_decision(encoder, monkeypatch):
    import ragroute.gate.signals as signals_module

    gate = TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["knn_vote", "bank_margin"])
    vote, bank = gate.signals
    assert vote._fingerprint == bank._fingerprint  # same examples, same order: one shared product
    query = QueryContext("Who founded the Zorblat company in Tromso?")
    expected = gate.gate_many([query])[0]
    products = []  # the products taken against the example bank (``vectors @ bank.T``)
    real = signals_module.row_products
    monkeypatch.setattr(signals_module, "row_products", lambda q, rows: products.append(1) or real(q, rows))
    decision = gate.gate_many([QueryContext(query.text)])[0]
    assert len(products) == 1  # vote values, bank margin and the vote's explanation
    assert decision.signals["values"] == expected.signals["values"]
    assert decision.signals["knn_vote"] == expected.signals["knn_vote"]
    vector = encoder.encode_queries([query.text])
    products.clear()
    vote.values([query], vector), bank.values([query], vector)  # no decision open: no sharing
    assert len(products) == 2


def test_bank_margin_loads_the_two_bank_format_of_earlier_gates(encoder):
    fitted = BankMarginSignal(top_n=2)
    fitted.fit(examples(encoder))
    vectors = np.asarray(fitted._bank)
    old = BankMarginSignal(top_n=2)
    old.set_state(
        {}, {"retrieve_bank": vectors[fitted._is_retrieve], "answer_bank": vectors[~fitted._is_retrieve]}
    )
    queries = [QueryContext(t) for t in ("Who founded Zorblat?", "What is 3 plus 3?")]
    query_vectors = encoder.encode_queries([q.text for q in queries])
    assert np.allclose(old.values(queries, query_vectors), fitted.values(queries, query_vectors))


def test_zipf_is_wordfreq_exactly():
    from wordfreq import zipf_frequency

    words = [
        "the",
        "cat",
        "zorblat",
        "ouagadougou",
        "a",
        "i",
        "photosynthesis",
        "qqq",
        "Paris",
        "don't",
        "e-mail",
        "café",
        "1999",
        "x",
        "mmlu",
        "karamazov",
        "colour",
        "thereof",
    ]
    assert [zipf(w) for w in words] == [zipf_frequency(w, "en") for w in words]


def test_rarity_reads_general_language_and_corpus_frequencies():
    signal = RaritySignal(documents=["the cat sat on the mat", "a dog and a cat", "zorblat quenvar"])
    common, rare, empty = signal.values(
        [QueryContext(t) for t in ("the cat", "Who is Zorblat Xqwv?", "the")], None
    )
    names = signal.names
    assert common[names.index("min_zipf")] > 4 and rare[names.index("min_zipf")] < 2
    assert rare[names.index("entity_min_zipf")] < 2 and common[names.index("entity_min_zipf")] == 7.0
    assert rare[names.index("unseen_share")] == pytest.approx(1 / 2)  # xqwv unseen, zorblat seen
    assert rare[names.index("max_idf")] > common[names.index("max_idf")]
    assert empty[names.index("min_zipf")] == 7.0 and empty[names.index("rare_share")] == 0.0
    assert content_words("Who founded Zorblat in 1999?") == (["founded", "zorblat"], ["zorblat"])
    assert RaritySignal().values([QueryContext("Zorblat")], None)[0, names.index("max_idf")] == 0.0


def test_rarity_reads_words_of_every_script():
    # until session 36 only ASCII letters were words: these queries had no content word, read as
    # the commonest words (Zipf 7), and the LLM gate's default fallback answered them unretrieved
    fallback = default_fallback()
    for query in ("Кто основал компанию Зорблат Оррин?", "東京のゾルブラット社を設立したのは誰ですか"):
        decision = fallback.gate_many([QueryContext(query)])[0]
        assert decision.action == "retrieve" and decision.signals["values"]["rarity.min_zipf"] < 3
    german = ["wer", "gründete", "die", "firma", "zorblat"]
    assert content_words("Wer gründete die Firma Zorblat?")[0] == german
    assert content_words("Don't ask O'Neil's state-of-the-art team")[0] == [
        "don't", "ask", "o'neil's", "state-of-the-art", "team"
    ]  # fmt: skip
    empty = RaritySignal().explain(QueryContext("Is it?"), None)
    assert empty["content_words"] == 0 and "commonest" in empty["note"]


def test_rarity_reads_full_width_and_dotted_capital_letters_as_the_plain_word():
    # until session 54 full-width ＰＡＲＩＳ (a CJK keyboard in full-width mode) was none of
    # wordfreq's words and read Zipf 0, the rarest, and İSTANBUL read as "i" + a combining dot
    signal = RaritySignal(documents=["Paris is the capital of France", "the bridges of Istanbul"])
    plain, wide = signal.values(
        [QueryContext(t) for t in ("PARIS weather", "\uff30\uff21\uff32\uff29\uff33 weather")], None
    )
    assert np.array_equal(wide, plain) and wide[signal.names.index("min_zipf")] > 4
    assert content_words("Weather in \u0130STANBUL") == (["weather", "istanbul"], ["istanbul"])
    dotted = RaritySignal(documents=["the bridges of \u0130stanbul"])
    assert dotted.values([QueryContext("Istanbul bridges")], None)[0, signal.names.index("unseen_share")] == 0


def test_complexity_counts_cues():
    signal = ComplexitySignal()
    row = dict(
        zip(
            signal.names,
            signal.values(
                [QueryContext("Are Scott Derrickson and Ed Wood both of the same nationality?")], None
            )[0],
        )
    )
    plain = dict(zip(signal.names, signal.values([QueryContext("what is love")], None)[0]))
    assert row["multihop_cues"] > plain["multihop_cues"] == 0.0
    assert row["entities"] > 0 and plain["entities"] == 0.0
    assert row["qw_be"] == 1.0 and plain["qw_what"] == 1.0
    assert multihop_cues("Who is older, Ann or Bob, and which came first?") >= 3
    news = dict(
        zip(signal.names, signal.values([QueryContext("Can you find the latest stock price?")], None)[0])
    )
    assert news["temporal_cues"] > 0 and news["action_cues"] > 0


def test_retrieval_confidence_reads_the_sources(encoder, small_docs):
    sources = [
        Source(
            topic,
            build_index(
                [d for d in small_docs if d.metadata["topic"] == topic], "dense", encoder=encoder, name=topic
            ),
        )
        for topic in ("astro", "cook")
    ]
    signal = make_signal("retrieval", sources=sources)
    assert isinstance(signal, RetrievalConfidenceSignal)
    contexts = [QueryContext("telescope galaxy"), QueryContext("zzz qqq")]
    values = signal.values(contexts, None)
    top, gap, spread = values[:, 0], values[:, 1], values[:, 2]
    assert top[0] > 0.3 and top[1] == pytest.approx(0.0, abs=1e-6)
    assert spread[0] > 0.2 and gap[0] >= 0.0
    with pytest.raises(RagrouteError, match="sources"):
        RetrievalConfidenceSignal().values(contexts, None)


def test_unknown_signal_is_one_clear_error():
    with pytest.raises(RagrouteError, match="unknown gate signal 'vibes'"):
        make_signal("vibes")


# --------------------------------------------------------------------------- calibration helpers


def test_platt_and_auroc_and_balanced_threshold():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(300, bool), np.zeros(40, bool)]
    z = np.r_[rng.normal(30, 5, 300), rng.normal(-30, 5, 40)]  # separable: Newton must not diverge
    a, b = fit_platt(z, y)
    assert 0 < a < 10 and np.isfinite(b)
    assert auroc([True, False, True, False], [0.9, 0.1, 0.8, 0.3]) == 1.0
    assert auroc([True, False], [0.5, 0.5]) == 0.5
    assert balanced_accuracy(np.array([1, 1, 1, 0], bool), np.array([1, 1, 1, 1], bool)) == 0.5
    probs = np.array([0.1, 0.2, 0.6, 0.7, 0.9])  # one best candidate: between the two classes
    assert best_balanced_threshold(probs, np.array([0, 0, 1, 1, 1], bool)) == (0.2 + 0.6) / 2


def test_balanced_threshold_takes_the_middle_of_tied_best_candidates():
    # candidates 0, .25, .5, .75, 1: the middle three each get balanced accuracy 2/3
    probs = np.array([0.1, 0.4, 0.4, 0.6, 0.6, 0.9])
    assert best_balanced_threshold(probs, np.array([0, 1, 0, 1, 0, 1], bool)) == (0.4 + 0.6) / 2
    # candidates 0, .2, .4, .6, 1: .2 and .6 tie at 3/4 (no middle one: the later)
    probs = np.array([0.1, 0.3, 0.5, 0.7])
    assert best_balanced_threshold(probs, np.array([0, 1, 0, 1], bool)) == (0.5 + 0.7) / 2
    # candidates 0, .15, .25, .35, 1: 0, .25 and 1 tie at 1/2
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    assert best_balanced_threshold(probs, np.array([1, 0, 1, 0], bool)) == (0.2 + 0.3) / 2


# --------------------------------------------------------------------------- the trained gate


def test_trained_gate_decides_with_calibrated_probability_and_reasons(fitted, encoder):
    contexts = [QueryContext("Who founded the Grextol company in Tromso?"), QueryContext("What is 5 plus 3?")]
    rare, easy = fitted.gate_many(contexts)
    assert rare.action == "retrieve" and easy.action == "answer"
    assert rare.probability > 0.8 > 0.2 > easy.probability
    assert "p_retrieve" in easy.reason and "< threshold" in easy.reason
    assert set(rare.signals["values"]) == set(fitted.columns) and len(rare.signals["top"]) == 4
    assert rare.signals["knn_vote"]["nearest_retrieve"] is True
    assert 0 < fitted.threshold < 1 and fitted.metrics["n_train"] == len(TEXTS)


def test_operating_points_trade_retrieval_rate(fitted):
    probs = fitted.probabilities(TEXTS)
    rates, thresholds = [], []
    for rate in (0.2, 0.5, 0.9):
        gate = fitted.with_operating_point(retrieval_rate=rate)
        thresholds.append(gate.threshold)
        rates.append(float(np.mean(probs >= gate.threshold)))
    assert thresholds[0] > thresholds[1] > thresholds[2]
    # the operating points are quantiles of the training examples' probabilities, and the gate
    # decides its own examples as it scored them when fitting, so it retrieves for those shares
    # of them (one example of 48 is 0.02)
    assert rates == pytest.approx([0.2, 0.5, 0.9], abs=0.06)
    assert fitted.with_operating_point(retrieve_cost=0.3).threshold == 0.3
    assert fitted.with_operating_point(threshold=0.99).gate_many([QueryContext("What is 2 plus 2?")])[
        0
    ].action == ("answer")
    assert fitted.with_operating_point().threshold == fitted.default_threshold
    with pytest.raises(RagrouteError, match="one of"):
        fitted.with_operating_point(threshold=0.5, retrieval_rate=0.5)
    assert fitted.threshold_for_rate(1.0) <= fitted.threshold_for_rate(0.0)


def test_a_probability_exactly_at_the_threshold_retrieves(fitted):
    for text in ("Who founded the Grextol company in Tromso?", "What is 5 plus 3?"):
        p = float(fitted.probabilities([text])[0])
        at = fitted.with_operating_point(threshold=p).gate_many([QueryContext(text)])[0]
        assert at.action == "retrieve" and f">= threshold {p:.3f}" in at.reason
        above = fitted.with_operating_point(threshold=float(np.nextafter(p, 1.0)))
        assert above.gate_many([QueryContext(text)])[0].action == "answer"


def test_signal_values_that_are_no_number_retrieve_and_say_so(encoder):
    """An encoder's NaN vector (or a plugin signal's NaN) gives no probability: until session 56 the
    gate answered directly, its reason "p_retrieve nan < threshold 0.5", a comparison that is false."""

    class NanSignal(ComplexitySignal):
        kind = "nan_signal"

        def values(self, contexts, vectors):
            out = super().values(contexts, vectors)
            out[:, 0] = [np.nan if "NAN" in c.text else 0.0 for c in contexts]
            return out

    class NanEncoder(HashingEncoder):
        def encode_queries(self, texts, **kwargs):
            rows = super().encode_queries(texts, **kwargs)
            rows[[i for i, t in enumerate(texts) if "NAN" in t]] = np.nan
            return rows

    signal = NanSignal()
    rule = ThresholdGate(signal, signal.names[0], above=1.0)
    fitted = TrainedGate.fit(TEXTS, FLAGS, NanEncoder(dim=64), signals=["knn_vote", "rarity"])
    for gate, unread in ((rule, "nan_signal.log_words"), (fitted, "knn_vote.share")):
        nan, plain = gate.gate_many(
            [QueryContext("NAN what is 2 plus 2?"), QueryContext("what is 2 plus 2?")]
        )
        assert nan.action == "retrieve" and np.isnan(nan.probability), nan.reason
        assert nan.reason.startswith("no probability: the signal values are not numbers (")
        assert unread in nan.reason and nan.reason.endswith("retrieving (shallow)")
        assert plain.action == "answer"


def test_default_threshold_is_prior_corrected_and_balanced_accuracy_option(encoder, monkeypatch):
    import ragroute.gate.trained as trained
    from ragroute.route.folds import grouped_holdout

    # 3 answer examples among 27: the calibrated prior is high, so the default threshold is too
    texts, flags = RETRIEVE + ANSWER[:3], [True] * len(RETRIEVE) + [False] * 3
    gate = TrainedGate.fit(texts, flags, encoder, signals=["knn_vote", "complexity"], C=1.0)
    assert gate.threshold == pytest.approx(float(gate.model.calibrated(np.zeros(1))[0]))
    assert gate.threshold > 0.5
    chosen = []

    def spy(probs, truth):
        chosen.append((probs, truth, best_balanced_threshold(probs, truth)))
        return chosen[-1][2]

    monkeypatch.setattr(trained, "best_balanced_threshold", spy)
    other = TrainedGate.fit(
        texts, flags, encoder, signals=["knn_vote"], default_threshold="balanced_accuracy"
    )
    assert other.threshold_rule == "balanced_accuracy"
    # the threshold is the balanced-accuracy one on the held-out part's calibrated probabilities
    _, held = grouped_holdout(texts, ["r" if f else "a" for f in flags], 0.25, 0)
    [(probs, truth, threshold)] = chosen
    assert truth.tolist() == [flags[i] for i in held] and len(probs) == other.metrics["n_validation"]
    assert other.threshold == other.default_threshold == threshold != gate.threshold
    # the held-out part separates: the threshold is midway between its two classes
    assert threshold == (probs[~truth].max() + probs[truth].min()) / 2


def test_stop_on_step_budget_and_repeated_sub_query(encoder):
    gate = TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["knn_vote"], max_steps=3)
    late = QueryContext("Who founded the Zorblat company in Tromso?", step=3)
    again = QueryContext("what is 2  PLUS 2?", step=1, history=[{"step": 0, "query": "What is 2 plus 2?"}])
    first = QueryContext("Who founded the Zorblat company in Tromso?", step=1)
    decisions = gate.gate_many([late, again, first])
    assert [d.action for d in decisions] == ["stop", "stop", "retrieve"]
    assert "step budget" in decisions[0].reason and "repeats step 0" in decisions[1].reason


def test_a_step_budget_below_one_is_refused_in_one_line(encoder):
    """Until session 52 max_steps=0 (as a `gate:` setting refuses it) made a gate stop every query,
    the first too: a pipeline over it returned no hits for any query, without a word."""
    from ragroute.gate.llm_signals import LLMGate, SelfAssessSignal
    from ragroute.llm.scripted import ScriptedLLM

    makers = [
        lambda steps: ThresholdGate("rarity", "min_zipf", below=3.0, max_steps=steps),
        lambda steps: TrainedGate.fit(TEXTS, FLAGS, signals=["rarity"], max_steps=steps),
        lambda steps: LLMGate([SelfAssessSignal(ScriptedLLM(replies=["yes"]))], max_steps=steps),
    ]
    for make in makers:
        for steps, said in ((0, "max_steps must be >= 1, got 0"), (2.5, "got 2.5"), ("2", "got a str")):
            with pytest.raises(RagrouteError, match=said) as info:
                make(steps)
            assert "\n" not in str(info.value)
        assert make(None).max_steps is None and make(2.0).max_steps == 2
    with pytest.raises(RagrouteError, match="balanced_accuracy, not 'balanced'"):
        TrainedGate.fit(TEXTS, FLAGS, signals=["rarity"], default_threshold="balanced")


def test_depth_deep_for_multi_hop_queries(encoder):
    from ragroute.gate import DepthPolicy

    gate = TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["knn_vote"], depth=DepthPolicy(3, 12, 1, 3, 2))
    gate = gate.with_operating_point(threshold=0.0)  # everything retrieves: only the depth differs
    deep, shallow = gate.gate_many(
        [
            QueryContext("Who founded the Zorblat company and the Quenvar company, and which came first?"),
            QueryContext("Who founded the Zorblat company in Tromso?"),
        ]
    )
    assert (deep.action, deep.depth, deep.steps) == ("retrieve", 12, 3)
    assert (shallow.action, shallow.depth, shallow.steps) == ("retrieve", 3, 1)


def test_round_trip_through_the_store(tmp_path, fitted, encoder):
    fitted.save(tmp_path / "g")
    manifest = json.loads(next((tmp_path / "g" / "builds").glob("*/manifest.json")).read_text())
    assert manifest["family"] == "gate" and manifest["kind"] == "trained"
    assert not list((tmp_path / "g").rglob("*.pkl"))
    loaded = TrainedGate.load(tmp_path / "g", encoder)
    assert loaded.columns == fitted.columns and loaded.threshold == pytest.approx(fitted.threshold)
    assert np.allclose(loaded.probabilities(TEXTS), fitted.probabilities(TEXTS))
    assert np.allclose(
        loaded.with_operating_point(retrieval_rate=0.4).threshold,
        fitted.with_operating_point(retrieval_rate=0.4).threshold,
    )
    via_registry = ARTIFACTS.get("gate")(tmp_path / "g", encoder=encoder)
    assert isinstance(via_registry, TrainedGate)
    with pytest.raises(EncoderMismatchError):
        TrainedGate.load(tmp_path / "g", HashingEncoder(dim=64, model_id="other"))


def test_a_gate_saved_at_an_operating_point_loads_at_it(tmp_path, fitted, encoder, small_docs):
    """Until session 52 the manifest kept the default threshold only: a gate saved after
    with_operating_point(retrieval_rate=0.7) loaded (in Python, from a `gate:` config without an
    operating point, by `ragroute gate decide`) at its default threshold, retrieving for 50% of
    its examples rather than 70%."""
    from click.testing import CliRunner

    from ragroute.cli import main

    chosen = fitted.with_operating_point(retrieval_rate=0.7)
    assert chosen.threshold != pytest.approx(fitted.default_threshold)
    chosen.save(tmp_path / "g")
    loaded = TrainedGate.load(tmp_path / "g", encoder)
    assert loaded.threshold == chosen.threshold and loaded.default_threshold == fitted.default_threshold
    assert [d.action for d in loaded.gate_many(TEXTS)] == [d.action for d in chosen.gate_many(TEXTS)]
    assert loaded.with_operating_point().threshold == fitted.default_threshold  # the default, on request
    configured = pipeline_from_settings(
        _sources(encoder, small_docs),
        {"kind": "centroid"},
        encoder=encoder,
        gate={"kind": "trained", "path": str(tmp_path / "g")},
    )
    assert configured.gate.threshold == chosen.threshold
    cheap = TrainedGate.fit(TEXTS, FLAGS, signals=["rarity", "complexity"], C=1.0)
    cheap.with_operating_point(retrieval_rate=0.7).save(tmp_path / "cheap")  # no encoder to load
    decided = CliRunner().invoke(main, ["gate", "decide", str(tmp_path / "cheap"), TEXTS[0], "--json"])
    assert decided.exit_code == 0, decided.output
    shown = json.loads(decided.output.strip().splitlines()[-1])["threshold"]
    assert shown == cheap.threshold_for_rate(0.7) != cheap.default_threshold


def test_signal_mismatch_fails_with_one_line(tmp_path, fitted, encoder):
    fitted.save(tmp_path / "g")
    with pytest.raises(GateSignalMismatchError) as info:
        TrainedGate.load(tmp_path / "g", encoder, signals=["knn_vote", "rarity"])
    message = str(info.value)
    assert "\n" not in message and "knn_vote, bank_margin, rarity, complexity" in message
    assert TrainedGate.load(
        tmp_path / "g", encoder, signals=["knn_vote", "bank_margin", "rarity", "complexity"]
    )
    # the same signals in another order: said so (it read "fitted on ... but ... are configured")
    with pytest.raises(GateSignalMismatchError, match="in that order .* list them in that order"):
        TrainedGate.load(tmp_path / "g", encoder, signals=["rarity", "complexity", "knn_vote", "bank_margin"])


def test_text_probe_round_trip(tmp_path, encoder):
    gate = TrainedGate.fit(
        TEXTS, FLAGS, encoder, signals=[{"kind": "text_probe", "hashed_dim": 64, "folds": 3}]
    )
    assert gate.columns == ["text_probe.logit"]
    gate.save(tmp_path / "p")
    loaded = TrainedGate.load(tmp_path / "p", encoder)
    assert np.allclose(loaded.probabilities(TEXTS[:5]), gate.probabilities(TEXTS[:5]))
    assert loaded.signals[0].settings() == {"hashed_dim": 64, "C": "auto", "folds": 3}
    assert loaded.signals[0].chosen_C in PROBE_C_GRID
    # the same fit saved twice publishes the same files: the probe's router was a whole artifact
    # store inside the gate's build (a lock holding the pid, a timestamped build) until session 38
    gate.save(tmp_path / "q")
    from ragroute.store import open_snapshot

    first, second = (open_snapshot(tmp_path / name).manifest.files for name in ("p", "q"))
    assert first == second and not any(".lock" in name or "builds/" in name for name in first)


def test_text_probe_C_auto_takes_the_grid_value_with_the_best_out_of_fold_log_loss(tmp_path, encoder):
    signal = make_signal({"kind": "text_probe", "hashed_dim": 64, "folds": 3, "C": "auto"}, encoder=encoder)
    data = examples(encoder)
    values = signal.fit_values(data)
    losses = {C: balanced_log_loss(signal._out_of_fold(data, C), data.retrieve) for C in PROBE_C_GRID}
    assert signal.chosen_C == min(losses, key=losses.get)
    assert np.allclose(values[:, 0], signal._out_of_fold(data, signal.chosen_C))  # its own out-of-fold logits
    assert signal.settings()["C"] == "auto" and signal._router.params["C"] == signal.chosen_C
    gate = TrainedGate.fit(
        TEXTS, FLAGS, encoder, signals=[{"kind": "text_probe", "hashed_dim": 64, "folds": 3, "C": "auto"}]
    )
    gate.save(tmp_path / "auto")
    loaded = TrainedGate.load(tmp_path / "auto", encoder)
    assert loaded.signals[0].chosen_C == gate.signals[0].chosen_C == signal.chosen_C
    assert np.allclose(loaded.probabilities(TEXTS[:5]), gate.probabilities(TEXTS[:5]))
    with pytest.raises(RagrouteError, match="'C' must be a number or \"auto\", not a string"):
        make_signal({"kind": "text_probe", "C": "large"}, encoder=encoder)


def test_balanced_log_loss_weighs_each_class_equally():
    logits = np.array([2.0, 2.0, 2.0, -1.0])
    positive = np.array([True, True, True, False])
    per_class = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))]
    assert balanced_log_loss(logits, positive) == pytest.approx(np.mean(per_class))


def test_single_value_gate_and_bad_fit_input(encoder):
    gate = TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["rarity"], columns=["rarity.min_zipf"])
    assert gate.columns == ["rarity.min_zipf"] and gate.model.coef[0] < 0  # rarer words -> retrieve
    with pytest.raises(RagrouteError, match="need retrieval and examples that do not"):
        TrainedGate.fit(TEXTS[:3], [True] * 3, encoder, signals=["rarity"])
    with pytest.raises(RagrouteError, match="unknown signal value"):
        TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["rarity"], columns=["rarity.nope"])


# --------------------------------------------------------------------------- threshold gate


def test_threshold_gate(encoder):
    gate = ThresholdGate(make_signal("rarity"), "min_zipf", below=3.0)
    rare, common = gate.gate_many([QueryContext("Tell me about Zorblat"), QueryContext("the cat")])
    assert rare.action == "retrieve" and rare.probability > 0.5 and common.action == "answer"
    assert rare.signals["rule"] == "rarity.min_zipf <= 3.0"
    knn = ThresholdGate(KnnVoteSignal(k=3), above=0.5, encoder=encoder, examples=(TEXTS, FLAGS))
    assert knn.gate_many([QueryContext("What is 9 plus 9?")])[0].action == "answer"
    with pytest.raises(RagrouteError, match="examples"):
        ThresholdGate(KnnVoteSignal(), above=0.5, encoder=encoder)
    # examples of one kind: the vote could only ever say that kind (accepted until session 36)
    with pytest.raises(RagrouteError, match=r"signal knn_vote: .* and examples that do not \(all 24 need"):
        ThresholdGate(KnnVoteSignal(k=3), above=0.5, encoder=encoder, examples=(RETRIEVE, [True] * 24))
    with pytest.raises(RagrouteError, match="exactly one"):
        ThresholdGate(make_signal("rarity"), above=1.0, below=2.0)
    # the signal named as in a gate: config (a kind, or {kind: ...}) works like the object
    by_name = ThresholdGate("rarity", "min_zipf", below=3.0)
    assert [d.action for d in by_name.gate_many([QueryContext("Tell me about Zorblat")])] == ["retrieve"]
    knn_by_settings = ThresholdGate(
        {"kind": "knn_vote", "k": 3}, above=0.5, encoder=encoder, examples=(TEXTS, FLAGS)
    )
    assert knn_by_settings.gate_many([QueryContext("What is 9 plus 9?")])[0].action == "answer"


def test_a_threshold_gate_without_value_reads_the_primary_value_docs_config_names(encoder):
    """docs/config.md said a threshold gate without `value:` compares the signal's first value
    (until session 55); it compares its primary one, which for bank_margin (retrieve, answer,
    margin) and complexity (log_words first) is another."""
    from pathlib import Path

    from ragroute.gate.signals import GATE_SIGNALS

    page = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if line.startswith("| `value` | string |"))
    for kind in ("knn_vote", "bank_margin", "retrieval", "rarity", "complexity"):
        primary = GATE_SIGNALS[kind].primary
        assert f"`{primary}` (`{kind}`)" in row, (kind, primary)
    gate = ThresholdGate("bank_margin", above=0.0, encoder=encoder, examples=(TEXTS, FLAGS))
    assert gate.value == "margin" and ThresholdGate("complexity", above=1.0).value == "multihop_cues"


def test_threshold_gate_examples_refuse_label_strings_for_flags(encoder):
    # bool("no") is True: label strings read as "retrieve", and the refusal that followed said all
    # 48 examples need retrieval (until session 49); TrainedGate.fit and select_gate said this
    labels = ["document" if flag else "no" for flag in FLAGS]
    with pytest.raises(
        RagrouteError, match="^retrieve must hold booleans .*got 'document'.*needs_retrieval$"
    ):
        ThresholdGate(KnnVoteSignal(k=3), above=0.5, encoder=encoder, examples=(TEXTS, labels))
    flags = [needs_retrieval(label) for label in labels]
    assert ThresholdGate(KnnVoteSignal(k=3), above=0.5, encoder=encoder, examples=(TEXTS, flags))


def test_threshold_gate_refuses_examples_its_signal_learns_nothing_from():
    # accepted and left unread until session 56: the rule decided as if none had been given
    with pytest.raises(RagrouteError, match="^signal rarity learns nothing from labelled queries: leave"):
        ThresholdGate("rarity", "min_zipf", below=3.0, examples=(TEXTS, FLAGS))


def test_threshold_gate_refuses_a_cut_or_scale_that_is_not_a_finite_number():
    """A NaN cut or scale made every probability NaN ('p_retrieve nan < threshold 0.500'), which a
    config's gate: refuses; an integer (NumPy's too) is a number."""
    nan, inf = float("nan"), float("inf")
    for settings in ({"above": nan}, {"below": inf}, {"below": 3.0, "scale": nan}, {"above": "3"}):
        with pytest.raises(RagrouteError, match="must be a finite number, got"):
            ThresholdGate("rarity", "min_zipf", **settings)
    gate = ThresholdGate("rarity", "min_zipf", below=np.int64(3), scale=2)
    decision = gate.gate_many([QueryContext("Tell me about Zorblat")])[0]
    assert decision.action == "retrieve" and 0.5 < decision.probability <= 1.0


# --------------------------------------------------------------------------- pipeline integration


def _sources(encoder, small_docs):
    return [
        Source(
            topic,
            build_index(
                [d for d in small_docs if d.metadata["topic"] == topic], "dense", encoder=encoder, name=topic
            ),
        )
        for topic in ("astro", "cook", "it")
    ]


def test_pipeline_gated_out_query_has_no_hits_and_the_trace_says_why(tmp_path, fitted, small_docs):
    encoder = fitted.encoder
    fitted.save(tmp_path / "g")
    assert set(GATES.names()) >= {"trained", "threshold"}
    pipeline = pipeline_from_settings(
        _sources(encoder, small_docs),
        {"kind": "centroid"},
        encoder=encoder,
        gate={"kind": "trained", "path": str(tmp_path / "g")},
    )
    answered, retrieved = pipeline.retrieve_many(
        ["What is 3 plus 4?", "Who founded the Zorblat telescope company in Tromso?"], k=3
    )
    assert answered.hits == [] and answered.decision.chosen == ["none"]
    step = answered.trace[0]
    assert step.stage == "gate" and step.detail["action"] == "answer"
    assert (
        "< threshold" in step.detail["reason"]
        and answered.decision.signals["reason"] == step.detail["reason"]
    )
    assert answered.decision.decided_by == "gate:trained"
    assert len(retrieved.hits) == 3 and retrieved.trace[0].detail["action"] == "retrieve"
    assert [s.stage for s in retrieved.trace][:2] == ["gate", "router"]
    assert retrieved.decision.signals["gate"]["p_retrieve"] > 0.5


def test_gate_settings_operating_point_and_errors(tmp_path, fitted, small_docs):
    encoder = fitted.encoder
    fitted.save(tmp_path / "g")
    sources = _sources(encoder, small_docs)
    always = pipeline_from_settings(
        sources,
        {"kind": "centroid"},
        encoder=encoder,
        gate={"kind": "trained", "path": str(tmp_path / "g"), "retrieval_rate": 1.0},
    )
    assert always.gate.threshold <= float(fitted.probabilities(["What is 3 plus 4?"])[0])
    assert always.retrieve("What is 3 plus 4?", k=2).hits
    with pytest.raises(GateSignalMismatchError):
        pipeline_from_settings(
            sources,
            {"kind": "centroid"},
            encoder=encoder,
            gate={"kind": "trained", "path": str(tmp_path / "g"), "signals": ["rarity"]},
        )
    with pytest.raises(RagrouteError, match="unknown trained gate key"):
        pipeline_from_settings(
            sources, {"kind": "centroid"}, encoder=encoder, gate={"kind": "trained", "path": "x", "bogus": 1}
        )
    rare = pipeline_from_settings(
        sources,
        {"kind": "centroid"},
        encoder=encoder,
        gate={"kind": "threshold", "signal": "rarity", "value": "min_zipf", "below": 3.0, "max_steps": 2},
    )
    result = rare.retrieve("the cat", k=2)
    assert result.hits == [] and result.trace[0].detail["gate"] == "threshold"


def test_routing_yaml_config_with_gate(tmp_path, encoder, small_docs):
    from ragroute.index.io import save_index
    from ragroute.route.config import load_routing

    save_index(build_index(small_docs, "bm25", name="all"), tmp_path / "all")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "\n".join(json.dumps({"text": t, "label": "doc" if f else "no"}) for t, f in zip(TEXTS, FLAGS))
    )
    config = {
        "sources": {"all": {"index": "all"}},
        "router": {"kind": "centroid"},
        "gate": {
            "kind": "threshold",
            "signal": {"kind": "knn_vote", "k": 3},
            "above": 0.5,
            "examples": "labels.jsonl",
        },
    }
    (tmp_path / "r.yaml").write_text(json.dumps(config))
    pipeline = load_routing(tmp_path / "r.yaml", encoder=encoder)
    answered = pipeline.retrieve("What is 6 plus 6?", k=2)
    assert answered.hits == [] and answered.trace[0].detail["action"] == "answer"


@pytest.mark.parametrize(
    "version, message",
    [
        (2, "gate format version 2, newer than this ragroute"),
        (0, "version 0); refit it with `ragroute gate fit`"),
    ],
)
def test_gate_format_version_is_named(tmp_path, fitted, encoder, version, message):
    # a gate of a newer format was "not a ragroute.gate v1 gate": neither newer nor the version said
    from ragroute.store.artifact import published_path
    from ragroute.store.manifest import canonical_checksum, sha256_file

    fitted.save(tmp_path / "g")
    path = published_path(tmp_path / "g") / "manifest.json"
    data = json.loads(path.read_text())
    data["params"]["version"] = version
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))
    pointer = {"build": data["build"], "manifest_sha256": sha256_file(path)}
    (tmp_path / "g" / "CURRENT").write_text(json.dumps(pointer))
    with pytest.raises(RagrouteError) as info:
        TrainedGate.load(tmp_path / "g", encoder)
    assert message in str(info.value) and "\n" not in str(info.value)
    from click.testing import CliRunner

    from ragroute.cli import main

    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "g")])  # said "checksums verified"
    assert shown.exit_code != 0 and message in shown.output and len(shown.output.strip().splitlines()) == 1


def _npz(**arrays) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "gate.npz is not a readable .npz file"),
        (_npz(pilots=np.ones((2, 3))), "gate.npz has no array 'coef'"),
        ("mean of another width", "array 'mean' has shape (2,), expected"),
    ],
)
def test_gate_weights_that_are_wrong_but_checksummed_are_one_line(
    tmp_path, fitted, encoder, content, message
):
    # another file under the right checksum gave "KeyError: 'coef'" (and an empty one a bare abort)
    from conftest import replace_published_file

    if content == "mean of another width":  # right weights, a standardisation of two columns
        n = len(fitted.columns)
        content = _npz(coef=np.ones(n), mean=np.ones(2), scale=np.ones(n), quantiles=np.ones(3))
    fitted.save(tmp_path / "g")
    replace_published_file(tmp_path / "g", "gate.npz", content)
    with pytest.raises(RagrouteError) as info:
        TrainedGate.load(tmp_path / "g", encoder)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(tmp_path / "g") in str(info.value)


N_TEXTS = len(TEXTS)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("knn_vote/arrays.npz", _npz(retrieve=np.ones(3, bool)), "arrays.npz has no array 'vectors'"),
        (
            "knn_vote/arrays.npz",
            _npz(vectors=np.ones((N_TEXTS, 128), np.float32), retrieve=np.ones(3, bool)),
            f"array 'retrieve' has shape (3,), expected ({N_TEXTS})",
        ),
        (
            "knn_vote/arrays.npz",
            _npz(vectors=np.ones((N_TEXTS, 7), np.float32), retrieve=np.ones(N_TEXTS, bool)),
            "array 'vectors' has 7 dimensions, the encoder 128",
        ),
        # read silently before: an answer bank of no example
        (
            "bank_margin/arrays.npz",
            _npz(vectors=np.ones((N_TEXTS, 128), np.float32), retrieve=np.ones(3, bool)),
            f"array 'retrieve' has shape (3,), expected ({N_TEXTS})",
        ),
        ("bank_margin/arrays.npz", _npz(pilots=np.ones(3)), "arrays.npz has no array 'vectors'"),
        ("knn_vote/state.json", b"{not json", "state.json is not readable JSON (JSONDecodeError"),
        ("knn_vote/state.json", b"[1, 2]", "state.json holds a list, not an object"),
        ("knn_vote/state.json", b'{"texts": 5}', "state.json's 'texts' are not a list of example texts"),
        ("rarity/state.json", b'{"n_docs": "x"}', "state.json's corpus counts ('n_docs', 'df') are not"),
    ],
)
def test_signal_state_that_is_wrong_but_checksummed_is_one_line(
    tmp_path, fitted, encoder, name, content, message
):
    # a signal's arrays.npz or state.json written by something else under a right checksum was a
    # KeyError, IndexError or numpy traceback at load or at the first decision, and a bank of the
    # wrong rows was read without a word (until session 49)
    from conftest import replace_published_file

    fitted.save(tmp_path / "g")
    replace_published_file(tmp_path / "g", f"signals/{name}", content)
    with pytest.raises(RagrouteError) as info:
        TrainedGate.load(tmp_path / "g", encoder).gate_many(TEXTS[:2])
    assert message in str(info.value) and "\n" not in str(info.value)
    assert f"gate signal {name.split('/')[0]} in " in str(info.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "knn_vote", "kk": 1}, "gate signal knn_vote: unknown setting 'kk'; did you mean 'k'?"),
        (
            {"kind": "knn_vote", "examples": "nosuch.jsonl"},
            "gate signal knn_vote: unknown setting 'examples'",
        ),
        (
            {"kind": "knn_vote", "k": 1},
            "signal knn_vote was fitted with k: 10, but k: 1 is configured: refit",
        ),
        ({"kind": "rarity", "corpus": True}, "signal rarity was fitted without 'corpus:'"),
    ],
)
def test_a_trained_gates_signal_settings_must_be_the_fitted_ones(
    tmp_path, fitted, encoder, small_docs, spec, message
):
    # per-signal settings of a trained gate's `signals:` were ignored, typos included, by loading and
    # by `config check` (the same typo on a threshold gate was refused)
    from click.testing import CliRunner

    from ragroute.cli import main
    from ragroute.index.io import save_index

    fitted.save(tmp_path / "g")
    kinds = ["knn_vote", "bank_margin", "rarity", "complexity"]
    signals = [spec if kind == spec["kind"] else kind for kind in kinds]
    with pytest.raises(RagrouteError) as info:
        TrainedGate.load(tmp_path / "g", encoder, signals=signals)
    assert message in str(info.value) and "\n" not in str(info.value)
    same = [{"kind": "knn_vote", "k": 10}, "bank_margin", "rarity", "complexity"]
    assert TrainedGate.load(tmp_path / "g", encoder, signals=same).signals[0].k == 10
    config = tmp_path / "routing.yaml"
    save_index(build_index(small_docs, "bm25", name="all"), tmp_path / "all")
    gate = {"kind": "trained", "path": "g", "signals": signals}
    config.write_text(json.dumps({"sources": {"all": {"index": "all"}}, "gate": gate}))
    result = CliRunner().invoke(main, ["config", "check", str(config)])
    assert result.exit_code == 1 and message in result.output, result.output


def test_saved_arrays_holding_nan_are_refused_in_one_line():
    from ragroute.errors import IndexFormatError
    from ragroute.store.arrays import check_arrays

    with pytest.raises(IndexFormatError, match="NaN"):
        check_arrays({"coef": np.array([np.nan])}, "gate g: gate.npz", {"coef": (1,)})


def test_a_gate_fitted_with_corpus_rarity_loads_with_the_same_setting(tmp_path, encoder, small_docs):
    """`signals: [{kind: rarity, corpus: true}]`, as fitted, was refused at load ("fitted without
    'corpus:'"): the signal did not say it had a corpus. Its counts are saved and restored."""
    source = Source("kb", build_index(small_docs, "bm25"))
    gate = TrainedGate.fit(
        TEXTS, FLAGS, encoder, signals=[{"kind": "rarity", "corpus": True}], sources=[source]
    )
    assert gate.signals[0].describe() == {"kind": "rarity", "corpus": True}
    gate.save(tmp_path / "g")
    query = [QueryContext("Who founded the Zorblat company in Tromso?")]
    for signals in ([{"kind": "rarity", "corpus": True}], ["rarity"]):
        loaded = TrainedGate.load(tmp_path / "g", encoder, signals=signals)
        assert loaded.gate_many(query)[0].probability == gate.gate_many(query)[0].probability
    with pytest.raises(GateSignalMismatchError, match="fitted with corpus: True, but corpus: False"):
        TrainedGate.load(tmp_path / "g", encoder, signals=[{"kind": "rarity", "corpus": False}])


def test_a_retrieval_signal_in_a_pipeline_reads_the_pipelines_router(hashing_encoder, small_docs):
    """No factory handed the signal a router: router_max and router_none read 0 for every query
    (until session 37)."""
    from ragroute.gate.signals import make_signal
    from ragroute.gate.trained import ThresholdGate
    from ragroute.index.build import build_index
    from ragroute.pipeline.build import pipeline_from_settings
    from ragroute.route.sources import Source

    sources = [Source("all", build_index(small_docs, "bm25"))]
    gate = ThresholdGate(make_signal("retrieval", sources=sources), "router_max", above=0.5)
    pipeline = pipeline_from_settings(sources, {"kind": "fixed"}, encoder=None, gate=gate)
    step = pipeline.retrieve("telescope", k=2).trace[0].detail
    assert step["values"]["retrieval.router_max"] == 1.0 and step["action"] == "retrieve"


def test_a_retrieval_signal_shared_by_two_pipelines_reads_the_router_of_the_one_running_it(small_docs):
    """A pipeline wrote its router into the gate's signal when the signal had none, so the same gate
    in a second pipeline read the first one's router (until session 52): here router_max 1.0 where
    the second pipeline's router splits the query over two sources (0.5)."""
    from ragroute.gate.signals import make_signal
    from ragroute.gate.trained import ThresholdGate
    from ragroute.index.build import build_index
    from ragroute.pipeline import Pipeline
    from ragroute.route.fixed import FixedRoutes
    from ragroute.route.sources import Source

    sources = [Source(n, build_index(small_docs, "bm25", name=n)) for n in ("a", "b")]
    gate = ThresholdGate(make_signal("retrieval", sources=sources), "router_max", above=0.75)
    one = Pipeline(sources, FixedRoutes(["a"]), gate=gate)
    both = Pipeline(sources, FixedRoutes(["a", "b"]), gate=gate)
    for pipeline, expected in ((one, 1.0), (both, 0.5), (one, 1.0)):
        step = pipeline.retrieve("telescope", k=2).trace[0].detail
        assert step["values"]["retrieval.router_max"] == expected


def test_knn_vote_counts_examples_tied_at_the_kth_neighbour_whatever_their_order():
    """Two examples with one vector (the same question labelled both ways, or a paraphrase that
    embeds identically) tied at the k-th similarity: argpartition took one of them by its position
    in the bank, so the vote changed with the order of the examples. Each now votes half a slot."""
    vectors = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    texts = ["near", "tie retrieve", "tie answer", "far"]
    flags = np.array([True, True, False, False])
    query = np.array([[1.0, 0.0, 0.0]])
    shares = []
    for order in itertools.permutations(range(4)):
        signal = KnnVoteSignal(k=2)
        signal.fit(Examples([texts[i] for i in order], flags[list(order)], vectors[list(order)]))
        shares.append(signal.values([QueryContext("a new question")], query)[0])
    # weights: 1 (+1e-6) for "near" (retrieve), 0.6 for the tied slot, half of it each way
    expected = (1.0 + 1e-6 + 0.5 * (0.6 + 1e-6)) / (1.0 + 1e-6 + 0.6 + 1e-6)
    for share, nearest in shares:
        assert share == pytest.approx(expected, abs=1e-6) and nearest == pytest.approx(1.0)


def test_a_shown_probability_never_reads_across_its_threshold(fitted):
    """p_retrieve 0.4999996 against a threshold of 0.5 answered directly, and the decision said
    0.5 (rounded to 6 digits) and its reason "p_retrieve 0.500 < threshold 0.500" (until session
    43): the digits shown are as many as it takes to compare as the real values do (ragroute.display,
    shared with the skill router's p_applies and both CLIs)."""
    from ragroute.display import shown_pair, shown_value

    assert shown_pair(0.4999996, 0.5) == ("0.4999996", "0.5000000")
    assert shown_pair(0.8123, 0.5) == ("0.812", "0.500") and shown_pair(0.5, 0.5) == ("0.500", "0.500")
    assert shown_value(0.4999996, 0.5, 6) == 0.4999996 and shown_value(0.49999, 0.5, 4) == 0.49999
    assert shown_value(0.123456, None, 4) == 0.1235
    text = "Who founded the Grextol company in Tromso?"
    p = float(fitted.probabilities([text])[0])
    above = fitted.with_operating_point(threshold=p + 4e-7)
    decision = above.gate_many([QueryContext(text)])[0]
    assert decision.action == "answer" and decision.probability < above.threshold
    shown, threshold = decision.reason.split(":")[0].removeprefix("p_retrieve ").split(" < threshold ")
    assert float(shown) < float(threshold)


def test_a_gate_selection_keeps_the_candidate_with_the_best_cross_validated_auroc(encoder, tmp_path):
    """select_gate (session 44) chooses among candidate gates by AUROC over folds of the training
    data alone, fits the choice on all of it and records the selection, saved with the gate."""
    from ragroute.gate.selection import select_gate

    candidates = {
        "by_complexity": {"signals": ["complexity"], "columns": ["complexity.multihop_cues"]},
        "by_rarity": {"signals": ["rarity"]},
    }
    gate = select_gate(TEXTS, FLAGS, encoder, candidates=candidates, folds=3)
    chosen = gate.metrics["selection"]
    assert chosen["chosen"] == "by_rarity" == gate.name and [s.kind for s in gate.signals] == ["rarity"]
    # the retrieve queries name rare things; neither kind holds a multi-hop cue
    assert chosen["mean_auroc"]["by_rarity"] > 0.9 > chosen["mean_auroc"]["by_complexity"]
    assert len(chosen["fold_auroc"]["by_rarity"]) == 3 and "3 grouped stratified folds" in chosen["rule"]
    gate.save(tmp_path / "g")
    loaded = TrainedGate.load(tmp_path / "g", encoder=encoder)
    assert loaded.metrics["selection"] == chosen
    np.testing.assert_allclose(loaded.probabilities(TEXTS), gate.probabilities(TEXTS))


def test_a_gate_selection_keeps_the_default_gate_unless_another_clearly_leads(encoder):
    """A candidate listed first with the same mean AUROC as the default gate does not replace it:
    it must lead by more than TIE_MARGIN."""
    from ragroute.gate.selection import DEFAULT_CANDIDATE, select_gate

    candidates = {
        "threshold_rarity": {"signals": ["rarity"]},
        DEFAULT_CANDIDATE: {"signals": ["rarity", "complexity"]},
    }
    gate = select_gate(TEXTS, FLAGS, encoder, candidates=candidates, folds=3)
    means = gate.metrics["selection"]["mean_auroc"]
    assert means["threshold_rarity"] == means[DEFAULT_CANDIDATE] == 1.0
    assert gate.name == DEFAULT_CANDIDATE and gate.metrics["selection"]["chosen"] == DEFAULT_CANDIDATE


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"folds": 1}, "folds must be a whole number of at least 2, got 1"),
        ({"candidates": {}}, "a gate selection needs at least one candidate gate"),
        ({"signals": ["rarity"]}, "signals: set by each candidate or by select_gate itself"),
        ({"retrieve": ["no"] * len(FLAGS)}, "retrieve must hold booleans .*got 'no'"),
    ],
)
def test_a_gate_selection_refuses_bad_arguments_in_one_line(encoder, arguments, said):
    from ragroute.gate.selection import select_gate

    arguments = {"retrieve": FLAGS, **arguments}
    with pytest.raises(RagrouteError, match=said):
        select_gate(TEXTS, encoder=encoder, **arguments)


@pytest.mark.parametrize("flag", [None, 2, -1, np.int64(2)])
def test_retrieve_flags_refuse_a_null_and_counts_other_than_0_and_1(flag):
    """Until session 55 a None label passed as False (the None that said "nothing wrong" hid it) and
    a 2 or -1 as True: booleans or 0/1 only, as the docstring says."""
    from ragroute.gate.trained import check_flags

    assert check_flags([True, False, 1, 0, np.bool_(True), np.int64(0)]) == [True, False, 1, 0, True, 0]
    with pytest.raises(RagrouteError, match=rf"^retrieve must hold booleans .*got {re.escape(repr(flag))}"):
        check_flags([True, flag, False])


def test_a_gate_selection_on_two_examples_of_a_kind_says_there_are_too_few(encoder):
    """TrainedGate.fit takes 2 examples of a kind; a selection's folds fitted on one of them refused
    the whole selection with "got 1 that answer directly", though the data held 2 (until session
    49): such folds are skipped like the ones with nothing to score."""
    from ragroute.gate.selection import select_gate

    texts, flags = RETRIEVE[:12] + ANSWER[:2], [True] * 12 + [False] * 2
    TrainedGate.fit(texts, flags, encoder, signals=["rarity"])  # enough to fit one gate
    candidates = {"by_rarity": {"signals": ["rarity"]}}
    with pytest.raises(
        RagrouteError, match=r"too few examples to select a gate \(12 need retrieval, 2 answer"
    ):
        select_gate(texts, flags, encoder, candidates=candidates, folds=3)
    texts, flags = RETRIEVE[:12] + ANSWER[:4], [True] * 12 + [False] * 4  # some folds fit on 2 or 3
    gate = select_gate(texts, flags, encoder, candidates=candidates, folds=3)
    assert gate.metrics["selection"]["chosen"] == "by_rarity"
    assert 1 <= len(gate.metrics["selection"]["fold_auroc"]["by_rarity"]) <= 3


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"query_vectors": np.full((len(TEXTS), 128), np.nan)}, "query_vectors hold NaN or infinity"),
        ({"query_vectors": np.ones((3, 128))}, r"query_vectors must hold one row per query \(48\)"),
        ({"columns": []}, "columns names no signal value"),
    ],
)
def test_a_gate_fit_on_bad_vectors_or_no_column_is_one_line(encoder, arguments, said):
    # NaN vectors and an empty column list were scikit-learn tracebacks, and rows of another count
    # an IndexError in a selection (until session 49)
    from ragroute.gate.selection import select_gate

    with pytest.raises(RagrouteError, match=said):
        TrainedGate.fit(TEXTS, FLAGS, encoder, signals=["knn_vote", "rarity"], **arguments)
    if "query_vectors" in arguments:
        candidates = {"by_vote": {"signals": ["knn_vote"]}}
        with pytest.raises(RagrouteError, match=said):
            select_gate(TEXTS, FLAGS, encoder, candidates=candidates, folds=3, **arguments)


def test_a_gate_selection_scores_each_candidate_as_its_probabilities_order_the_queries(encoder, monkeypatch):
    """A candidate whose Platt slope is fitted negative decides by probabilities that order the
    queries against its raw logits: until session 54 the selection scored those logits, so such a
    candidate's AUROC was 1 - the AUROC of the gate it would have chosen (the bench scored it right)."""
    from ragroute.gate import trained
    from ragroute.gate.selection import select_gate

    candidates = {
        "by_complexity": {"signals": ["complexity"], "columns": ["complexity.multihop_cues"]},
        "by_rarity": {"signals": ["rarity"]},
    }
    plain = select_gate(TEXTS, FLAGS, encoder, candidates=candidates, folds=3).metrics["selection"]
    monkeypatch.setattr(trained, "fit_platt", lambda logits, y: (-1.0, 0.0))  # every slope negative
    gate = select_gate(TEXTS, FLAGS, encoder, candidates=candidates, folds=3)
    flipped = gate.metrics["selection"]
    assert plain["mean_auroc"]["by_rarity"] > 0.9
    for name in candidates:
        assert flipped["mean_auroc"][name] == pytest.approx(1 - plain["mean_auroc"][name], abs=2e-4)
    assert flipped["chosen"] == gate.name == "by_complexity"  # rarity's gate now ranks the wrong way
