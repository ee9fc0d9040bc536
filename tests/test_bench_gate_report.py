"""bench gate's report: its goal verdict (session 43: the best gate is picked on the queries it is
scored on, so the report also judges the default gate, which nobody picked, against the goals) and
its latency (session 44)."""

from ragroute.evaluation import bench_gate


def _row(auroc: float, balanced: float) -> dict:
    return {
        "auroc": auroc,
        "auroc_ci95": [auroc - 0.01, auroc + 0.01],
        "accuracy": balanced,
        "balanced_accuracy": balanced,
        "retrieval_rate": 0.5,
        "latency_ms_p50": 0.1,
        "fit_s": 0.0,
        "curve": [],
    }


def _result() -> dict:
    gates = {
        "logreg_embedding": _row(0.95, 0.87),
        "threshold_text_probe": _row(0.9726, 0.9214),  # best by AUROC: meets both goals
        "trained_all": _row(0.9680, 0.9081),  # the default gate: misses both
    }
    return {
        "protocol": "5-fold cross-validation on data",
        "train": None,
        "data": "labels.jsonl",
        "n_test": 520,
        "test_retrieve_share": 0.5,
        "gates": gates,
        "best_gate": "threshold_text_probe",
        "baseline_reference": {},
        "goals": {"auroc": 0.97, "balanced_accuracy": 0.92},
        "encode_ms_per_query": 1.0,
    }


def test_the_goal_verdict_names_the_best_gate_as_picked_on_these_queries_and_judges_the_default_gate():
    lines = bench_gate.format_report(_result()).splitlines()
    best = [line for line in lines if "threshold_text_probe: AUROC" in line]
    assert len(best) == 1 and "best of 2 gates by AUROC on these queries" in best[0]
    assert best[0].endswith(": met")
    default = [line for line in lines if "trained_all: AUROC" in line]
    assert len(default) == 1 and "default gate" in default[0]
    assert default[0].endswith("not met")


def test_one_verdict_line_when_the_default_gate_is_the_best():
    result = _result()
    result["best_gate"] = "trained_all"
    result["gates"]["trained_all"] = _row(0.99, 0.95)
    verdicts = [line for line in bench_gate.format_report(result).splitlines() if "(goal 0.97)" in line]
    assert len(verdicts) == 1 and "trained_all" in verdicts[0]


def test_gate_latency_is_timed_on_queries_new_to_the_gates_caches():
    """The gate benchmark scores every test query before it times them, and the rarity and entity
    signals keep what they read by query text and word: until session 44 the printed p50 was that
    of queries the gate had seen (a cache hit each), not of a new query. Each timed query now
    finds the caches empty of it."""
    from ragroute.context import QueryContext
    from ragroute.evaluation.bench_gate import _p50_ms
    from ragroute.gate.signals import _content_words, content_words

    texts = ["Who wrote Middlemarch?", "What is the boiling point of tin?", "capital of Peru"]
    for text in texts:
        content_words(text)  # the scoring pass read them
    found: list[int] = []

    def decide(batch):
        before = _content_words.cache_info().hits
        content_words(batch[0].text)
        found.append(_content_words.cache_info().hits - before)

    _p50_ms(decide, [QueryContext(t) for t in texts], 3)
    assert found == [1, 0, 0, 0]  # the untimed first call warm; every timed one new


def test_gate_scores_order_queries_as_the_gates_probabilities_even_with_a_negative_platt_slope(monkeypatch):
    """The bench scored a trained gate by its model's raw logits and mapped the curve's probability
    thresholds back through the Platt slope: a slope fitted negative (a signal ranking the wrong way on
    the held-out part) reversed both against the probabilities the gate decides by (until session
    49: AUROC read 1 - the gate's, the curve the other tail). The scores now follow the probabilities."""
    import numpy as np
    from conftest import HashingEncoder

    from ragroute.evaluation.metrics import auroc
    from ragroute.gate.trained import TrainedGate

    fitted: list[TrainedGate] = []
    fit = TrainedGate.fit.__func__  # type: ignore[attr-defined]

    def fit_then_flip(cls, *args, **kwargs):
        gate = fit(cls, *args, **kwargs)
        gate.model.platt_a, gate.model.platt_b = -0.7, 0.2  # a slope fitted negative
        fitted.append(gate)
        return gate

    monkeypatch.setattr(TrainedGate, "fit", classmethod(fit_then_flip))
    facts = [f"what year did the treaty of town{i} end the war" for i in range(12)]
    chat = [f"tell me a joke about cat number {i}" for i in range(12)]
    texts, y = facts + chat, np.array([True] * 12 + [False] * 12)
    encoder = HashingEncoder()
    vectors = np.asarray(encoder.encode_queries(texts), dtype=np.float32)
    tests = ["what year did the treaty of paris end", "tell me a joke about dogs", "joke treaty war cat"]
    test_vectors = np.asarray(encoder.encode_queries(tests), dtype=np.float32)
    scored = bench_gate._score_gate(
        "threshold_text_probe", (texts, y, vectors), (tests, test_vectors), encoder, 0, 0
    )
    gate = fitted[-1]
    probs = gate.probabilities(tests)
    truth = [True, False, True]
    assert auroc(truth, scored.scores) == auroc(truth, probs)
    assert np.array_equal(np.argsort(scored.scores), np.argsort(probs))
    for rate, cut in scored.thresholds.items():
        assert list(scored.scores >= cut) == list(probs >= gate.threshold_for_rate(rate))


def test_the_knn5_baseline_votes_over_every_training_query_when_there_are_fewer_than_five(tmp_path):
    """A training file of 4 queries: the 5-NN baseline raised numpy's "kth(=4) out of bounds"
    (a traceback, the run lost) until session 54, where the trained gates fit on 2 of each kind."""
    import json

    from conftest import HashingEncoder

    def write(path, rows):
        lines = [json.dumps({"_id": str(i), "text": t, "label": label}) for i, (t, label) in enumerate(rows)]
        path.write_text("\n".join(lines) + "\n")

    train = [
        ("capital of france", "no"),
        ("who wrote hamlet", "no"),
        ("acme revenue", "doc"),
        ("acme report", "doc"),
    ]
    write(tmp_path / "train.jsonl", train)
    write(tmp_path / "test.jsonl", [("capital of spain", "no"), ("acme revenue 2023", "doc")])
    result = bench_gate.run_gate_bench(
        tmp_path / "test.jsonl",
        train_path=tmp_path / "train.jsonl",
        encoder=HashingEncoder(),
        gates=["knn5_embedding"],
    )
    row = result["gates"]["knn5_embedding"]
    # the vote of all 4 (2 of each kind) is a tie for every query: retrieve, the baseline's 0.5 cut
    assert row["retrieval_rate"] == 1.0 and row["balanced_accuracy"] == 0.5 and len(row["curve"]) == 5
