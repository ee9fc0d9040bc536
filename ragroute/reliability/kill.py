"""The kill harness: SIGKILL real ``ragroute`` commands at swept points and check nothing is lost.

For each command (:func:`scenarios`: ``build``, ``graph build``, ``graph add``, ``route fit``,
``gate fit``, ``skills build``, ``rerank train``, ``expert train``) the harness first runs it to
completion twice to learn the answers of the two possible results
(:func:`~ragroute.reliability.workload.answer` on the artifact), and once with
``RAGROUTE_KILL_TRACE`` to count the crash points it passes (:func:`ragroute.store.locks.crash_point`:
between the steps of every write: lock taken, temporary folder made, files written, each file
checksummed, manifest written, build renamed, pointer written, pointer replaced, debris removed,
old builds pruned; embedding-cache writes) and how long it runs. Then, for each kill point:

* the command is started in a subprocess and SIGKILLed — at the N-th crash point
  (``RAGROUTE_KILL_AT=N``, the process kills itself with a real SIGKILL) or after a time offset
  spread over the whole run (the harness sends SIGKILL), alternating between the two; a run that
  finishes before its kill does not count, and another point, earlier, is added in its place;
* the artifact must still load and answer exactly as before the run, or exactly as the completed
  command's result (when the kill came after the pointer swap): otherwise the point counts as lost;
* the command is run again to completion (after every kill; the commands that train a model after
  every fifth, ``Scenario.min_rerun_every``; and once after the last kill): it must succeed, answer
  as its result, and leave no debris (no temporary folders, pointer files or builds beyond the
  current and previous one); otherwise the kill points since the previous rerun count as lost too.

A point survives when both hold. A run (killed or rerun) still going after ``timeout`` seconds is
hung: it is killed and counted as a failure, never waited for; and a report that killed no running
command says so among its failures (``killed``, the kills tried, counts them).

Rebuilding commands alternate between two inputs, so every run changes the artifact; ``graph add``
starts each run from a copy of the same graph.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError
from ragroute.reliability.workload import (
    answer,
    corpus_records,
    labelled_queries,
    ragroute_argv,
    skill_rows,
    write_jsonl,
    write_labelled_skills,
)
from ragroute.store.artifact import BUILDS_DIR, DEBRIS_PREFIXES, POINTER_NAME
from ragroute.store.locks import KILL_AT_ENV, KILL_TRACE_ENV


@dataclass
class Scenario:
    """One command under test: ``argv(workdir, variant)`` writes the artifact ``target``.

    ``update`` scenarios (``graph add``) change an existing artifact: each run starts from
    ``pristine`` (copied over ``target``), built by ``setup``.
    """

    name: str
    target: str
    argv: Callable[[Path, int], list[str]]
    setup: Callable[[Path], None]
    update: bool = False
    #: a slow command (it loads and trains a model) is rerun after every n-th kill at least
    min_rerun_every: int = 1
    #: what a finished run must not leave outside ``target`` (an external store's collections
    #: that no build names), given the work folder
    outside: Callable[[Path], list[str]] | None = None


@dataclass
class KillReport:
    """What happened to one command's kill points."""

    command: str
    crash_points: int = 0
    run_seconds: float = 0.0
    points: int = 0
    crash_point_kills: int = 0
    time_kills: int = 0
    killed: int = 0
    finished_first: int = 0
    survived: int = 0
    reruns: int = 0
    reruns_ok: int = 0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _inputs(workdir: Path) -> None:
    write_jsonl(workdir / "corpus-a.jsonl", corpus_records(1))
    write_jsonl(workdir / "corpus-b.jsonl", corpus_records(2, 44))
    write_jsonl(workdir / "extra.jsonl", corpus_records(3, 10, prefix="x"))
    write_jsonl(workdir / "queries-a.jsonl", labelled_queries(1))
    write_jsonl(workdir / "queries-b.jsonl", labelled_queries(2, 40))
    # an expert needs at least 50 documents to cut pseudo-queries from
    write_jsonl(workdir / "expert-a.jsonl", corpus_records(1, 60))
    write_jsonl(workdir / "expert-b.jsonl", corpus_records(2, 64))
    write_jsonl(workdir / "skills-a" / "skills.jsonl", skill_rows(1))
    write_jsonl(workdir / "skills-b" / "skills.jsonl", skill_rows(2))
    write_labelled_skills(workdir / "rerank-set", 1)


def _graph_setup(workdir: Path) -> None:
    _inputs(workdir)
    pristine = workdir / "graph-pristine"
    if not pristine.exists():
        _run(ragroute_argv("graph", "build", str(workdir / "corpus-a.jsonl"), "--out", str(pristine)))


def scenarios(method: str = "hybrid") -> dict[str, Scenario]:
    """The commands the harness kills (``method``: the index kind of ``build``)."""

    def corpus(workdir: Path, variant: int) -> str:
        return str(workdir / ("corpus-a.jsonl", "corpus-b.jsonl")[variant])

    def queries(workdir: Path, variant: int) -> str:
        return str(workdir / ("queries-a.jsonl", "queries-b.jsonl")[variant])

    def variant_file(workdir: Path, variant: int, stem: str, suffix: str = ".jsonl") -> str:
        return str(workdir / f"{stem}-{'ab'[variant]}{suffix}")

    store = [f"--{method}", "vectors"] if method in EXTERNAL_STORES else []  # relative: under the work folder
    return {
        "build": Scenario(
            "build",
            "index",
            lambda w, v: ragroute_argv(
                "build",
                corpus(w, v),
                "--out",
                str(w / "index"),
                "--method",
                method,
                *[str(w / part) if part == "vectors" else part for part in store],
            ),  # fmt: skip
            _inputs,
            outside=(lambda w: unnamed_collections(w / "index", method, w / "vectors")) if store else None,
        ),
        "graph build": Scenario(
            "graph build",
            "graph",
            lambda w, v: ragroute_argv("graph", "build", corpus(w, v), "--out", str(w / "graph")),
            _inputs,
        ),
        "graph add": Scenario(
            "graph add",
            "graph-added",
            lambda w, v: ragroute_argv("graph", "add", str(w / "graph-added"), str(w / "extra.jsonl")),
            _graph_setup,
            update=True,
        ),
        "route fit": Scenario(
            "route fit",
            "router",
            lambda w, v: ragroute_argv(
                "route", "fit", "--queries", queries(w, v), "--out", str(w / "router"), "--none-label", "none"
            ),
            _inputs,
        ),
        "gate fit": Scenario(
            "gate fit",
            "gate",
            lambda w, v: ragroute_argv(
                "gate",
                "fit",
                queries(w, v),
                "--out",
                str(w / "gate"),
                "--signals",
                "knn_vote,rarity,complexity",
            ),
            _inputs,
        ),
        "skills build": Scenario(
            "skills build",
            "skills",
            lambda w, v: ragroute_argv(
                "skills", "build", variant_file(w, v, "skills", "/skills.jsonl"), "--out", str(w / "skills")
            ),
            _inputs,
        ),
        # the two results differ by seed (the new head's initialisation, the pair shuffle); tiny
        # settings, but every step of the real command runs: pairs from hybrid retrieval, training,
        # calibration, ONNX export and int8 quantisation, publication
        "rerank train": Scenario(
            "rerank train",
            "reranker",
            lambda w, v: ragroute_argv(
                "rerank",
                "train",
                "--data",
                str(w / "rerank-set"),
                "--out",
                str(w / "reranker"),
                "--layers",
                "1",
                "--max-length",
                "32",
                "--queries-per-set",
                "48",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--threads",
                "1",
                "--seed",
                str(v),
            ),
            _inputs,
            min_rerun_every=5,
        ),
        "expert train": Scenario(
            "expert train",
            "expert",
            lambda w, v: ragroute_argv(
                "expert",
                "train",
                variant_file(w, v, "expert"),
                "--out",
                str(w / "expert"),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--max-queries",
                "16",
                "--threads",
                "1",
            ),
            _inputs,
            min_rerun_every=5,
        ),
    }


#: seconds one run of a command may take (``timeout`` of :func:`run_kill_scenario`): a run still going
#: then is hung; it is killed and counted as a failure rather than waited for
RUN_TIMEOUT = 900.0


def _complete(argv: Sequence[str], env: dict[str, str] | None, timeout: float) -> tuple[int | None, str]:
    """Run ``argv`` to completion: ``(exit status, stderr)``; status ``None`` when it was still running
    after ``timeout`` seconds (it is killed: a hung command never hangs the harness)."""
    try:
        done = subprocess.run(
            list(argv), env=env, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped it
        return None, f"hung: killed after {timeout:g} s"
    return done.returncode, done.stderr


def _run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT) -> None:
    code, err = _complete(argv, env, timeout)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[3:])} failed ({code}): {err.strip()[-500:]}")


def _killed_run(
    argv: Sequence[str], env: dict[str, str], how: str, when: float, timeout: float
) -> int | None:
    """Run ``argv`` for one kill point: it kills itself at a crash point (``how == "at"``: ``env``
    says which) or is sent SIGKILL after ``when`` seconds. Returns its exit status (``-SIGKILL`` when
    killed), or ``None`` when it was still running after ``timeout`` seconds (then killed). The
    process never outlives the call, whatever happens."""
    process = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if how == "time":
            try:
                process.wait(timeout=when)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


#: index kinds whose vectors live outside the artifact (``--method`` of the build scenario)
EXTERNAL_STORES = ("lancedb",)  # an embedded Qdrant folder is opened by one process at a time


def unnamed_collections(target: Path, kind: str, location: Path) -> list[str]:
    """The collections of ``kind`` at ``location`` that no build of the index at ``target`` names."""
    from ragroute.index.external import StoreParams
    from ragroute.registry import INDEX_KINDS
    from ragroute.store.outside import build_manifests

    if not location.is_dir():
        return []
    named = {(m.params.get(kind) or {}).get("collection_name") for m in build_manifests(target / BUILDS_DIR)}
    stored = INDEX_KINDS.get(kind).collections_at(StoreParams(location=str(location), collection=target.name))
    return [f"collection {name}" for name in stored if name not in named]


def debris(target: Path) -> list[str]:
    """What a finished write should not leave in ``target``: temporary folders, notes of
    unfinished builds, pointer files, builds other than the current and previous one."""
    builds = target / BUILDS_DIR
    if not builds.is_dir():
        return [f"no {BUILDS_DIR} folder"]
    # sorted, not in the order the file system lists them (until session 52)
    left = sorted(p.name for p in builds.iterdir() if p.name.startswith(DEBRIS_PREFIXES))
    left += sorted(p.name for p in target.glob(f".{POINTER_NAME}.*"))
    done = [p.name for p in builds.iterdir() if not p.name.startswith(".")]
    if len(done) > 2:
        left.append(f"{len(done)} builds")
    return left


def _answer(path: Path, encoder: Any) -> tuple[Any, str]:
    try:
        return answer(path, encoder), ""
    except Exception as exc:  # noqa: BLE001 - a lost or unreadable artifact is what is counted
        return None, f"{type(exc).__name__}: {exc}"


def _kill_points(crash_points: int, seconds: float, points: int) -> list[tuple[str, float]]:
    """``points`` kill points: every crash point (an even sample when there are more than
    ``points``) and time offsets spread over the run for the rest, interleaved."""
    if points < crash_points:
        chosen = sorted({1 + (i * crash_points) // points for i in range(points)})
    else:
        chosen = list(range(1, crash_points + 1))
    timed = max(0, points - len(chosen))
    crash = [("at", float(c)) for c in chosen]
    times = [("time", seconds * (0.03 + 0.92 * (i + 0.5) / timed)) for i in range(timed)]
    merged: list[tuple[str, float]] = []
    while crash or times:
        if crash:
            merged.append(crash.pop(0))
        if times:
            merged.append(times.pop(0))
    return merged


def run_kill_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    points: int,
    encoder: Any = None,
    rerun_every: int = 1,
    env: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> KillReport:
    """Kill ``scenario``'s command at ``points`` points (see the module docstring). A killed run or a
    rerun still going after ``timeout`` seconds is hung: killed, and counted as a failure."""
    base_env = dict(env if env is not None else os.environ)
    for name in (KILL_AT_ENV, KILL_TRACE_ENV):
        base_env.pop(name, None)
    workdir.mkdir(parents=True, exist_ok=True)
    scenario.setup(workdir)
    target = workdir / scenario.target
    report = KillReport(scenario.name)

    def reset() -> None:
        if scenario.update:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(workdir / "graph-pristine", target)

    # the results of the two variants (an update has one: from the pristine artifact)
    results: dict[int, Any] = {}
    for variant in (0,) if scenario.update else (0, 1):
        reset()
        _run(scenario.argv(workdir, variant), base_env)
        results[variant] = answer(target, encoder)
    if not scenario.update and results[0] == results[1]:
        raise RuntimeError(f"{scenario.name}: both inputs give the same answers; the harness could not tell")
    # how many crash points one run passes, and how long it takes
    reset()
    trace = workdir / "crash-points.trace"  # in the run's own folder: gone with it, whatever happens
    trace.unlink(missing_ok=True)
    start = time.perf_counter()
    variant = 0 if scenario.update else 1  # the artifact holds variant 1 now: rebuild variant 0
    _run(scenario.argv(workdir, variant), {**base_env, KILL_TRACE_ENV: str(trace)})
    report.run_seconds = round(time.perf_counter() - start, 2)
    report.crash_points = len(trace.read_text().splitlines())
    trace.unlink(missing_ok=True)

    every = max(rerun_every, scenario.min_rerun_every) if rerun_every else 0
    queue = _kill_points(report.crash_points, report.run_seconds, points)
    since_rerun: list[bool] = []  # per kill point since the last rerun: whether it survived

    def rerun(index: int, argv: list[str], expected: Any) -> None:
        """Run the command to completion: it must succeed, answer ``expected`` and leave no debris;
        otherwise the kill points since the last rerun did not survive."""
        report.reruns += 1
        code, err = _complete(argv, base_env, timeout)
        final, problem = _answer(target, encoder)
        left = debris(target) if target.is_dir() else ["no artifact"]
        left += scenario.outside(workdir) if scenario.outside else []
        if code == 0 and final == expected and not left:
            report.reruns_ok += 1
        else:
            report.survived -= sum(since_rerun)
            verdict = "ok" if final == expected else "wrong"
            status = "hung" if code is None else f"exit {code}"
            report.failures.append(
                f"point {index}: rerun {status}, answers {verdict}, debris {left} "
                f"{problem[:200]} {err.strip()[-200:]}"
            )
        since_rerun.clear()

    index = -1
    last: tuple[int, list[str], Any] | None = None  # the last kill point: its index, command, result
    while queue:
        how, when = queue.pop(0)
        index += 1
        reset()
        before, problem = _answer(target, encoder)
        if problem:
            report.failures.append(f"point {index}: unreadable before the run: {problem}")
            break
        if scenario.update:
            variant, expected = 0, results[0]
        else:
            variant = 0 if before == results[1] else 1
            expected = results[variant]
        argv = scenario.argv(workdir, variant)
        env_here = {**base_env, KILL_AT_ENV: str(int(when))} if how == "at" else base_env
        code = _killed_run(argv, env_here, how, when, timeout)
        report.points += 1
        if code is None:
            # a kill tried that did not survive: until session 54 a hung run counted in no total, and
            # "kills survived / tried" read N / N with the hung point left out of both
            report.killed += 1
            report.failures.append(f"point {index} ({how} {when:g}): hung, killed after {timeout:g} s")
            continue
        if code != -signal.SIGKILL:
            report.finished_first += 1
            if code != 0:
                report.failures.append(f"point {index} ({how} {when:g}): exit {code} without a kill")
            if report.finished_first <= points:  # this run was quicker: kill the next one earlier
                queue.append(("time", (when if how == "time" else report.run_seconds) * 0.7))
            continue
        report.killed += 1
        if how == "at":
            report.crash_point_kills += 1
        else:
            report.time_kills += 1
        after, problem = _answer(target, encoder)
        survived = not problem and after in (before, expected)
        if problem:
            report.failures.append(f"point {index} ({how} {when:g}): lost: {problem[:300]}")
        elif not survived:
            report.failures.append(f"point {index} ({how} {when:g}): answers changed to neither build")
        report.survived += survived
        since_rerun.append(survived)
        last = (index, argv, expected)
        if every and len(since_rerun) >= every:
            rerun(*last)
        if progress and report.points % 10 == 0:
            progress(f"kill {scenario.name}: {report.points}/{points} points, {report.survived} survived")
    # the kills since the last rerun are checked too, even when the runs queued after them all
    # finished first (the last rerun used to come only when the last point was a kill)
    if every and since_rerun and last is not None:
        rerun(*last)
    if points and not report.killed:  # fewer than points: ``killed`` (the kills tried) says so
        report.failures.append(
            f"only {report.killed} of {points} kill points killed a running command "
            f"({report.finished_first} runs finished first)"
        )
    return report


def run_kills(
    workdir: Path,
    *,
    commands: Sequence[str] | None = None,
    points: int = 50,
    encoder: Any = None,
    method: str = "hybrid",
    rerun_every: int = 1,
    progress: Callable[[str], None] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> list[KillReport]:
    """:func:`run_kill_scenario` for each of ``commands`` (default: all of :func:`scenarios`)."""
    table = scenarios(method)
    unknown = [name for name in commands or () if name not in table]
    if unknown:
        raise RagrouteError(
            f"unknown kill command {', '.join(map(repr, unknown))}: choose from {', '.join(map(repr, table))}"
        )
    reports = []
    for name in commands or list(table):
        reports.append(
            run_kill_scenario(
                table[name],
                workdir / name.replace(" ", "-"),
                points=points,
                encoder=encoder,
                rerun_every=rerun_every,
                progress=progress,
                timeout=timeout,
            )
        )
        if progress:
            progress(f"kill {name}: {reports[-1].to_dict()}")
    return reports
