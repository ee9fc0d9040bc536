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
