"""``ragroute bench scores`` on a tiny Glasgow-like folder with the hashing encoder (no model, no data)."""

from __future__ import annotations


def test_the_scores_bench_lists_the_folders_it_left_out(tmp_path, hashing_encoder):
    """A folder left out was said on stderr only, not in the JSON (until session 37)."""
    from test_corpus_routing_bench import WORDS, write_collection

    from ragroute.evaluation.bench_scores import CHOOSE_ON, format_report, run_scores_bench

    root = tmp_path / "glasgow"
    vocab = " ".join(WORDS.values()).split()
    for i, name in enumerate(CHOOSE_ON):
        write_collection(root / name, name, vocab[i * 5 : i * 5 + 7], shared=False)
    (root / "med" / "qrels").mkdir(parents=True)
    result = run_scores_bench(root, None, hashing_encoder)
    assert set(result["skipped"]) == {"glasgow/med", "tatqa"}
    assert f"skipped glasgow/med: {result['skipped']['glasgow/med']}" in format_report(result)


def test_the_route_count_sets_hold_only_queries_the_cutoffs_were_not_chosen_on(tmp_path, hashing_encoder):
    """The one-route and several-route sets held every Glasgow query, the cutoffs' own among them,
    so part of the transfer error was in-sample (until session 43): they split the other
    collections' queries only."""
    from test_corpus_routing_bench import WORDS, write_collection

    from ragroute.evaluation.bench_scores import CHOOSE_ON, run_scores_bench

    root = tmp_path / "glasgow"
    vocab = " ".join(WORDS.values()).split()
    for i, name in enumerate((*CHOOSE_ON, "med")):
        write_collection(root / name, name, vocab[i * 3 : i * 3 + 7], shared=False)
    result = run_scores_bench(root, None, hashing_encoder, variants=["similarity"])
    counts = result["scores"]["similarity"]["queries"]
    assert counts["glasgow_choose"] == 5 * len(CHOOSE_ON) and counts["glasgow_other"] == 5
    assert counts["glasgow_one_route"] + counts["glasgow_several_routes"] == counts["glasgow_other"]
