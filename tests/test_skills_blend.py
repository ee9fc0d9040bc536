"""The rerank blend: a catalogue's stage-1 weight against the cross-encoder, fitted on labelled tasks
(ragroute/skills/blend.py), applied by the skill router, saved with it, and `ragroute skills tune`."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HashingEncoder
from test_skills_router import DATA, _jsonl, tiny_reranker  # noqa: F401  (fixture)

from ragroute.errors import RagrouteError
from ragroute.loaders.beir import load_qrels
from ragroute.rerank.cross_encoder import Calibration, CrossEncoderReranker
from ragroute.skills import load_catalogue
from ragroute.skills.blend import STAGE1_WEIGHTS, RerankBlend, fit_rerank_blend
from ragroute.skills.router import SkillRouter

QRELS = load_qrels(DATA / "qrels" / "dev.tsv")
TASKS = [(r["_id"], r["text"]) for r in _jsonl(DATA / "queries.jsonl")]
GOLD = {sid for judged in QRELS.values() for sid in judged}


def scripted_reranker(logit_of, *, name: str = "scripted", build: str = "b1") -> CrossEncoderReranker:
    """The real CrossEncoderReranker code over a scripted scorer: ``logit_of(query, text)``."""
    reranker = object.__new__(CrossEncoderReranker)
    reranker.model_ref, reranker.candidates, reranker.batch_size, reranker.body = name, 20, 32, True
    reranker._lock = threading.Lock()
    reranker._scorer = lambda qs, ts: np.array([logit_of(q, t) for q, t in zip(qs, ts)], dtype=np.float32)
    reranker.calibration = Calibration(1.0, -1.0, 1.0, True, 1.0)
    reranker.info = {"name": name, "build": build, "backend": "scripted", "params": {}}
    reranker.backend, reranker.reading, reranker.stage1 = "scripted", {}, "skills"
    return reranker


def _gold_of(query: str) -> set[str]:
    qid = next(q for q, t in TASKS if t == query)
    return set(QRELS.get(qid, {}))


def oracle(query: str, text: str) -> float:
    """+12 for a judged skill of this query (the candidate text starts with the skill's name)."""
    return 12.0 if any(text.startswith(_NAME[sid]) for sid in _gold_of(query)) else 0.0


def adversary(query: str, text: str) -> float:
    return -oracle(query, text)


_NAME = {s.id: s.name for s in load_catalogue(DATA)}


@pytest.fixture(scope="module")
def router() -> SkillRouter:
    # candidates: the whole catalogue, so the scripted oracle can always be right
    return SkillRouter.build(load_catalogue(DATA), HashingEncoder(dim=256), candidates=20)


def test_blended_calibration_is_the_rescaled_weighted_score():
    cal = Calibration(0.8, -2.0, -0.4, True, 1.3)
    logit, rank, z = np.array([1.5, -0.2]), np.array([1, 4]), np.array([2.0, -0.5])
    got = cal.blended(3.0, scale=0.7, shift=0.25)(logit, rank, z)
    u = 0.8 * logit - 2.0 + 3.0 * (-0.4 / rank + 1.3 * z)
    assert got == pytest.approx(1 / (1 + np.exp(-(0.7 * u + 0.25))))
    assert cal.blended(1.0)(logit, rank, z) == pytest.approx(cal(logit, rank, z))


def test_a_reranker_that_is_right_keeps_its_weight_and_one_that_is_wrong_loses_it(router):
    right = fit_rerank_blend(router.with_options(reranker=scripted_reranker(oracle)), TASKS, QRELS)
    curve = right.report["ndcg@10"]
    assert right.report["tasks"] == len(QRELS) and set(curve) == {f"{w:g}" for w in STAGE1_WEIGHTS}
    assert curve[f"{right.stage1_weight:g}"] == max(curve.values()) == pytest.approx(1.0)
    assert right.stage1_weight <= 1.0  # ties go to the weight as fitted, 1
    assert right.scale > 0  # probabilities re-calibrated on the tasks: a score that ranks, kept rising
    # an oracle's pools separate perfectly: Platt would grow without bound (every probability 0 or 1,
    # an off-topic task 0.99, until session 36), so the reranker's own calibration is kept
    assert (right.scale, right.shift) == (1.0, 0.0) and "separate perfectly" in right.report["platt"]

    assert right.order == "blend"  # stage 1 alone is as good here: ties keep the reranker
    tuned = router.with_options(reranker=scripted_reranker(oracle), rerank_blend=right)
    note = next(s for s in tuned.route(TASKS[0][1], k=3).trace if s.stage == "rerank").detail["blend"]
    assert note == {
        "applied": True,
        "order": "blend",
        "tasks": len(QRELS),
        "stage1_weight": right.stage1_weight,
    }

    wrong = fit_rerank_blend(router.with_options(reranker=scripted_reranker(adversary)), TASKS, QRELS)
    assert wrong.report["ndcg@10"]["5"] > wrong.report["ndcg@10"]["1"]  # the more stage 1, the better


@pytest.mark.parametrize("logit_of", [oracle, adversary])
def test_a_skill_the_reranker_cannot_read_does_not_break_the_fit(logit_of):
    """A skill without name, description and body has no logit (the reranker ranks it last, in stage
    1's order, with probability 0): until session 54 its NaN sorted anywhere in the fit's pools and
    the Platt fit failed with scikit-learn's ValueError ("Input X contains NaN")."""
    from ragroute.skills import Catalogue, Skill

    catalogue = Catalogue([*load_catalogue(DATA), Skill("blank", "")])
    router = SkillRouter.build(catalogue, HashingEncoder(dim=256), candidates=len(catalogue))
    blend = fit_rerank_blend(router.with_options(reranker=scripted_reranker(logit_of)), TASKS, QRELS)
    assert all(np.isfinite([*blend.report["ndcg@10"].values(), blend.scale, blend.shift]))
    if logit_of is oracle:
        assert max(blend.report["ndcg@10"].values()) == pytest.approx(1.0)


def test_a_reranker_no_weight_can_save_leaves_stage_1_its_order(router):
    reranker = scripted_reranker(adversary)
    blend = fit_rerank_blend(router.with_options(reranker=reranker), TASKS, QRELS)
    assert blend.order == "stage1"
    assert blend.report["ndcg@10_stage1_order"] > max(blend.report["ndcg@10"].values())
    assert RerankBlend.from_dict(blend.to_dict()) == blend
    tuned = router.with_options(reranker=reranker, rerank_blend=blend)
    stage1 = router.with_options(reranker=None, overlap="keep")
    for _, task in TASKS:
        route = tuned.with_options(overlap="keep").route(task, k=5)
        assert [s.id for s in route.skills] == [s.id for s in stage1.route(task, k=5).skills]
        step = next(s for s in route.trace if s.stage == "rerank").detail
        assert step["blend"]["order"] == "stage1" and all(r["logit"] is not None for r in step["scores"])
        probs = [s.score for s in route.skills]
        assert probs == sorted(probs, reverse=True) and all(0 < p < 1 for p in probs)
    with pytest.raises(RagrouteError, match="order"):
        RerankBlend.from_dict({**blend.to_dict(), "order": "sideways"})


def test_stage_1_order_on_pools_it_separates_does_not_claim_the_rerankers_calibration(router):
    """Tasks whose stage-1 top is their one relevant skill, an adversarial reranker: stage 1's order
    wins and separates the pools perfectly. The report said the reranker's calibration was kept
    (until session 43); the probability is sigmoid(1 / rank), the same for every task's top skill."""
    easy = [
        (qid, task)
        for qid, task in TASKS
        if router.route(task, k=1).skills[0].id in QRELS[qid] and sum(g > 0 for g in QRELS[qid].values()) == 1
    ]
    reranker = scripted_reranker(adversary)
    blend = fit_rerank_blend(router.with_options(reranker=reranker), easy, QRELS)
    assert blend.order == "stage1" and (blend.scale, blend.shift) == (1.0, 0.0)
    assert blend.report["platt"].startswith("none: stage 1's order separates the pools perfectly")
    tuned = router.with_options(reranker=reranker, rerank_blend=blend)
    tops = {round(tuned.route(task, k=1).skills[0].score, 6) for _, task in easy[:3]}
    assert tops == {round(1 / (1 + np.exp(-1.0)), 6)}


def test_the_router_applies_a_blend_only_to_the_reranker_it_was_fitted_for(router):
    reranker = scripted_reranker(adversary)
    blend = fit_rerank_blend(router.with_options(reranker=reranker), TASKS, QRELS)
    task = TASKS[0][1]
    plain = router.with_options(reranker=reranker).route(task, k=3)
    tuned = router.with_options(reranker=reranker, rerank_blend=blend).route(task, k=3)
    step = next(s for s in tuned.trace if s.stage == "rerank").detail
    assert step["blend"]["applied"] and step["blend"]["order"] == blend.order == "stage1"
    assert next(s for s in plain.trace if s.stage == "rerank").detail["blend"] is None
    assert tuned.skills[0].id in _gold_of(task) and plain.skills[0].id not in _gold_of(task)
    # another build of "the same" reranker: its own calibration, and the trace says why
    other = router.with_options(reranker=scripted_reranker(adversary, build="b2"), rerank_blend=blend)
    route = other.route(task, k=3)
    note = next(s for s in route.trace if s.stage == "rerank").detail["blend"]
    assert not note["applied"] and "b1" in note["why"]
    assert [s.id for s in route.skills] == [s.id for s in plain.skills]
    assert other.describe()["reranker"]["blend"] == note


def test_a_blend_is_saved_with_the_router(router, tmp_path):
    reranker = scripted_reranker(adversary)
    blend = fit_rerank_blend(router.with_options(reranker=reranker), TASKS, QRELS)
    router.with_options(rerank_blend=blend).save(tmp_path / "skills")
    loaded = SkillRouter.load(tmp_path / "skills", reranker=reranker, encoder=router.index.encoder)
    assert loaded.rerank_blend == blend
    tuned = router.with_options(reranker=reranker, rerank_blend=blend)
    for _, task in TASKS[:5]:
        assert loaded.route(task, k=4).to_dict() == tuned.route(task, k=4).to_dict()


def test_a_blend_fitted_with_a_model_folder_applies_however_the_folder_is_named(
    router,
    tiny_reranker,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """A blend is bound to its reranker's name; a plain model folder (no artifact, no build id) was
    named as the caller spelt it until session 52: a blend fitted through a relative path was
    dropped when the saved router was loaded with the folder's absolute path or a symlink to it."""
    import shutil

    from ragroute.store import open_snapshot

    folder = tmp_path / "models" / "ce"
    shutil.copytree(open_snapshot(tiny_reranker.model_ref, family="reranker").path, folder)
    for name in ("manifest.json", "calibration.json", "model.onnx", "model.int8.onnx"):
        (folder / name).unlink(missing_ok=True)
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.chdir(tmp_path)
    fitted = router.with_options(reranker=CrossEncoderReranker("models/ce", backend="torch"))
    blend = fit_rerank_blend(fitted, TASKS, QRELS)
    fitted = fitted.with_options(rerank_blend=blend)
    fitted.save(tmp_path / "skills")
    expected = [fitted.route(task, k=4).to_dict() for _, task in TASKS[:4]]
    monkeypatch.chdir(tmp_path / "models")
    for named in (folder, "ce", tmp_path / "link"):
        reranker = CrossEncoderReranker(named, backend="torch")
        loaded = SkillRouter.load(tmp_path / "skills", reranker=reranker, encoder=router.index.encoder)
        assert loaded.rerank_blend is not None and loaded.rerank_blend.applies_to(loaded.reranker), named
        assert [loaded.route(task, k=4).to_dict() for _, task in TASKS[:4]] == expected


def test_blend_bad_input_is_one_clear_error(router):
    with pytest.raises(RagrouteError, match="stage1_weight"):
        RerankBlend.from_dict({"reranker": {"name": "x", "build": "y"}})
    for bad in ({"stage1_weight": "two"}, {"stage1_weight": float("nan")}, {"reranker": ["x"]}):
        with pytest.raises(RagrouteError, match="refit it"):
            RerankBlend.from_dict({"stage1_weight": 2.0, "reranker": {"name": "x", "build": "y"}, **bad})
    with pytest.raises(RagrouteError, match="RerankBlend"):
        router.with_options(rerank_blend=3.0)
    with pytest.raises(RagrouteError, match="reranker"):
        fit_rerank_blend(router, TASKS, QRELS)  # no reranker to balance
    with pytest.raises(RagrouteError, match="at least 10"):
        fit_rerank_blend(router.with_options(reranker=scripted_reranker(oracle)), TASKS[:4], QRELS)


def test_skills_tune_command_fits_saves_and_route_uses_it(tiny_reranker, tmp_path):  # noqa: F811
    from ragroute.cli import main

    runner = CliRunner()
    index = tmp_path / "idx"
    built = runner.invoke(main, ["skills", "build", str(DATA), "--out", str(index), "--backend", "torch"])
    assert built.exit_code == 0, built.output
    args = [
        "skills",
        "tune",
        str(index),
        "--queries",
        str(DATA / "queries.jsonl"),
        "--reranker",
        str(tiny_reranker.model_ref),
        "--backend",
        "torch",
    ]
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\tno_such_skill\t1\n")
    out = runner.invoke(main, [*args, "--qrels", str(bad)])
    assert out.exit_code != 0 and "no_such_skill" in out.output and "Traceback" not in out.output
    out = runner.invoke(main, [*args, "--qrels", str(DATA / "qrels" / "dev.tsv")])
    assert out.exit_code == 0, out.output
    assert f"nDCG@10 of the {len(QRELS)} tasks by weight" in out.output and "stage 1's order" in out.output
    loaded = SkillRouter.load(index, reranker=tiny_reranker)
    assert loaded.rerank_blend is not None and loaded.rerank_blend.applies_to(loaded.reranker)
    assert loaded.rerank_blend.report["tasks"] == len(QRELS)
    skill = next(iter(next(iter(QRELS.values()))))
    more = tmp_path / "more.tsv"  # judges 4 tasks the queries file does not hold
    more.write_text(
        (DATA / "qrels" / "dev.tsv").read_text() + "".join(f"x{i}\t{skill}\t1\n" for i in range(4))
    )
    out = runner.invoke(main, [*args, "--qrels", str(more)])
    assert out.exit_code == 0, out.output
    assert (
        f"warning: {more}: 4 judged tasks not in {DATA / 'queries.jsonl'}, left out: x0, x1, x2 and 1 more"
        in (out.stderr)
    )
    assert f"fitting on {len(QRELS)} tasks with a relevant skill" in out.stderr
    # a task judged with grade 0 only does not count toward --max-queries (it did until session 36,
    # and the fit was left with fewer tasks than asked)
    zero = tmp_path / "zero.tsv"
    first = next(iter(QRELS))
    zero.write_text(
        "".join(f"{q}\t{s}\t{0 if q == first else g}\n" for q, r in QRELS.items() for s, g in r.items())
    )
    out = runner.invoke(main, [*args, "--qrels", str(zero), "--max-queries", str(len(QRELS) - 1)])
    assert out.exit_code == 0, out.output
    assert f"fitting on {len(QRELS) - 1} tasks with a relevant skill" in out.stderr


def test_skills_tune_holds_the_index_lock_so_a_build_published_meanwhile_is_not_lost(
    tiny_reranker,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """Until session 41 `skills tune` read the index, fitted and wrote it back without its writer
    lock: a build published during the fit was silently replaced by the catalogue tune had read.
    Here a second writer publishes from another thread during the fit: it must wait for the tune's
    build and then publish, so the index ends with its catalogue."""
    import json
    import time

    from ragroute.cli import main
    from ragroute.skills import blend as blend_module
    from ragroute.store import locks

    runner = CliRunner()
    index = tmp_path / "idx"
    built = runner.invoke(main, ["skills", "build", str(DATA), "--out", str(index), "--backend", "torch"])
    assert built.exit_code == 0, built.output
    grown = tmp_path / "grown.jsonl"
    extra = {"_id": "brand_new_skill", "name": "launchRocket", "description": "Launch a rocket to orbit."}
    grown.write_text((DATA / "skills.jsonl").read_text() + json.dumps(extra) + "\n")
    newer = SkillRouter.build(load_catalogue(grown), HashingEncoder(dim=256))
    waited = threading.Event()

    class _Time:  # the lock's clock, telling when the second writer waits for the lock
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            waited.set()
            time.sleep(seconds)

    monkeypatch.setattr(locks, "time", _Time)
    failed: list[BaseException] = []

    def publish_newer() -> None:
        try:
            newer.save(index)
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            failed.append(exc)

    writer = threading.Thread(target=publish_newer)
    real_fit = blend_module.fit_rerank_blend

    def fit_while_another_writer_publishes(*args, **kwargs):
        blend = real_fit(*args, **kwargs)
        writer.start()
        while writer.is_alive() and not waited.wait(0.01):  # it publishes, or waits for the lock
            pass
        return blend

    monkeypatch.setattr(blend_module, "fit_rerank_blend", fit_while_another_writer_publishes)
    out = runner.invoke(
        main,
        ["skills", "tune", str(index), "--queries", str(DATA / "queries.jsonl")]
        + ["--qrels", str(DATA / "qrels" / "dev.tsv"), "--reranker", str(tiny_reranker.model_ref)]
        + ["--backend", "torch"],
    )
    writer.join(60)
    assert out.exit_code == 0, out.output
    assert not failed and not writer.is_alive()
    assert waited.is_set()  # the second writer waited for the tune's build ...
    published = SkillRouter.load(index, encoder=HashingEncoder(dim=256)).catalogue.ids
    assert "brand_new_skill" in published  # ... and then published


def test_bench_fits_the_blend_on_fold_0_and_scores_fold_1(tiny_reranker, monkeypatch):  # noqa: F811
    from ragroute.evaluation.bench_skills import format_report, run_skills_bench
    from ragroute.rerank.train import query_fold
    from ragroute.skills import blend

    fold0 = [q for q, _ in TASKS if q in QRELS and query_fold("router", q) == 0]
    args = dict(reranker=tiny_reranker, scale=0, latency_queries=3, tune_blend=100)
    result = run_skills_bench(DATA, HashingEncoder(dim=256), **args)
    assert "hybrid+rerank_tuned" in result["methods"]
    assert result["rerank_blend"]["report"]["tasks"] == len(fold0)  # fitted on fold 0 only ...
    assert "fold 1" in result["scored_queries"]  # ... and every row scored on fold 1
    assert result["queries"] == len(TASKS) - len(fold0)
    assert "rerank blend (hybrid+rerank_tuned)" in format_report(result)
    monkeypatch.setattr(blend, "MIN_TASKS", len(fold0) + 1)
    result = run_skills_bench(DATA, HashingEncoder(dim=256), **args)
    assert "hybrid+rerank_tuned" not in result["methods"] and "not fitted" in result["rerank_blend"]["note"]
    assert "rerank blend: not fitted" in format_report(result)


def test_the_blend_is_fitted_on_fold_0_when_the_training_queries_are_read_back(tiny_reranker, tmp_path):  # noqa: F811
    """The bench leaves out of its scored queries every text the reranker trained on (read back
    from the sets its manifest records); the blend is fitted on fold 0, which is all such texts:
    it must still be drawn from the set's own fold 0, not from what is left to score."""
    import copy
    import shutil

    from ragroute.evaluation.bench_skills import run_skills_bench
    from ragroute.rerank.train import query_fold

    shutil.copytree(DATA, tmp_path / "proj" / "data" / "router")
    trained = copy.copy(tiny_reranker)
    trained.info = {
        **tiny_reranker.info,
        "path": str(tmp_path / "proj" / "rerank" / "m"),  # the roots are relative to the folder above it
        "params": {
            **tiny_reranker.info["params"],
            "fold_rule": "fold 0 trains",
            "report": {"sets": {"router": {}}},
            "data": {"roots": ["data/router"]},
        },
    }
    fold0 = [q for q, _ in TASKS if q in QRELS and query_fold("router", q) == 0]
    result = run_skills_bench(
        tmp_path / "proj" / "data" / "router", HashingEncoder(dim=256), reranker=trained, scale=0,
        latency_queries=3, tune_blend=100,
    )  # fmt: skip
    assert "fold 1" in result["scored_queries"] and result["queries"] == len(TASKS) - len(fold0)
    assert result["rerank_blend"]["report"]["tasks"] == len(fold0)


def test_on_a_set_the_reranker_never_saw_the_tuned_row_is_scored_on_fold_1_only(tiny_reranker):  # noqa: F811
    import copy

    from ragroute.evaluation.bench_skills import run_skills_bench

    stranger = copy.copy(tiny_reranker)
    stranger.info = {**tiny_reranker.info, "params": {}}  # no fold rule: a reranker trained elsewhere
    result = run_skills_bench(
        DATA, HashingEncoder(dim=256), reranker=stranger, scale=0, latency_queries=3, tune_blend=100
    )
    assert "all judged queries" in result["scored_queries"]
    assert "hybrid+rerank_tuned" not in result["methods"]  # its fitting queries are among them
    assert "hybrid+rerank_tuned" in result["methods_fold1"] and "hybrid+rerank" in result["methods"]


def test_skills_route_says_when_the_saved_blend_is_not_for_its_reranker(tiny_reranker, minilm, tmp_path):  # noqa: F811
    """A blend fitted for another reranker build is not applied: `skills route` said so only in its
    --trace until session 43; a --json user never learnt that the tuning was not in force."""
    from ragroute.cli import main

    index = tmp_path / "idx"
    other = RerankBlend(2.0, reranker={"name": "tiny", "build": "another-build"})
    SkillRouter.build(load_catalogue(DATA), minilm, rerank_blend=other).save(index)
    args = ["skills", "route", str(index), TASKS[0][1], "--json", "--backend", "torch"]
    out = CliRunner().invoke(main, [*args, "--reranker", str(tiny_reranker.model_ref)])
    assert out.exit_code == 0, out.output
    assert "rerank blend (`ragroute skills tune`) is not applied" in out.stderr
    assert "another-build" in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["skills"]  # the route itself unchanged
    out = CliRunner().invoke(main, [*args, "--no-reranker"])
    assert out.exit_code == 0 and "rerank blend" not in out.stderr


def test_tasks_that_are_not_id_text_pairs_are_one_line(router):
    """Plain task texts instead of (id, text) pairs failed with a tuple-unpacking ValueError about
    "too many values to unpack" until session 44."""
    from ragroute.errors import InvalidArgumentError

    reranker = router.with_options(reranker=scripted_reranker(oracle))
    with pytest.raises(InvalidArgumentError, match="tasks must be \\(id, text\\) pairs, got 'send"):
        fit_rerank_blend(reranker, ["send an email to the team"] + [t for _, t in TASKS], QRELS)
