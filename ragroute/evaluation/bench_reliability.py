"""``ragroute bench reliability``: kill points, corruption, readers during rebuilds, fuzzing, scopes.

Runs the harnesses of :mod:`ragroute.reliability` (long versions; ``quick`` runs short ones) and
reports, next to the goals of issue #13:

* ``kills_tried`` / ``kills_survived`` — real SIGKILLs of ``ragroute build``, ``graph build``,
  ``graph add``, ``route fit``, ``gate fit``, ``skills build``, ``rerank train`` and ``expert
  train`` at swept points (:mod:`~ragroute.reliability.kill`);
  survived: the artifact still loads and answers as before the run or as the finished run, and a
  rerun completes without debris
  (a point whose rerun failed or hung did not survive);
* ``corruptions_tried`` / ``corruptions_clean_error`` — truncate / flip / delete every file of
  every artifact kind and single-bit flips across every manifest and pointer, in-process and
  through the command line (:mod:`~ragroute.reliability.corruption`);
* ``race_reads`` / ``race_wrong`` — reads (in-process loads and ``ragroute query`` runs) while a
  writer process rebuilds the index; wrong: an answer of neither build, or an error
  (:mod:`~ragroute.reliability.race`);
* ``fuzz_cases`` / ``fuzz_failures`` — :func:`ragroute.reliability.fuzz.run_fuzz`;
* ``tracebacks`` — the CLI fault-injection run (:func:`ragroute.reliability.faults.run_cli_faults`)
  plus tracebacks of the corruption runs;
* ``scope_leaks`` — :mod:`~ragroute.reliability.scope_probe`.

A harness that is not installed (the fuzzing and fault-injection modules) is reported as ``null``
with a line on the log.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PARTS = ("kill", "corruption", "race", "fuzz", "faults", "scope")
KEYS = (
    "kills_tried",
    "kills_survived",
    "corruptions_tried",
    "corruptions_clean_error",
    "fuzz_cases",
    "fuzz_failures",
    "race_reads",
    "race_wrong",
    "scope_leaks",
    "tracebacks",
)
GOALS = {
    "kills": ">= 50 kill points per command, 0 artifacts lost",
    "corruptions": "100% end in a one-line error",
    "fuzz": ">= 10,000 cases per loader, 0 unhandled exceptions",
    "race": ">= 1,000 reads, 0 wrong answers, 0 misleading errors",
    "scope_leaks": "0",
    "tracebacks": "0 across the CLI fault-injection run",
}


def _optional(module: str, function: str, log: Callable[[str], None]) -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        log(f"{module}.{function} is not available ({exc}); its numbers are reported as null")
        return None


def _settings(quick: bool, kill_points: int | None) -> dict[str, Any]:
    if quick:
        return {
            "kill_points": kill_points or 6,
            "kill_commands": ["build", "graph add"],
            "kill_method": "bm25",
            "rerun_every": 3,
            "bit_stride": 53,
            "model_artifacts": False,
            "cli_kinds": ("bm25",),
            "cli_bit_stride": 0,
            "race_method": "bm25",
            "race_reads": 200,
            "race_cli_reads": 4,
            "fuzz_cases": 200,
        }
    return {
        "kill_points": kill_points or 52,
        "kill_commands": None,
        "kill_method": "hybrid",
        "rerun_every": 1,
        "bit_stride": 1,
        "model_artifacts": True,
        "cli_kinds": ("bm25", "dense", "hybrid", "graph"),
        "cli_bit_stride": 509,
        "race_method": "hybrid",
        "race_reads": 1000,
        "race_cli_reads": 100,
        "fuzz_cases": 10000,
    }


def _cli_artifacts(workdir: Path, kinds: Sequence[str]) -> dict[str, Path]:
    """Indexes built by the command line with the default encoder (so ``ragroute query`` loads them)."""
    from ragroute.reliability.workload import corpus_records, run_ragroute, write_jsonl

    corpus = write_jsonl(workdir / "cli-corpus.jsonl", corpus_records(5))
    built = {}
    for kind in kinds:
        out = workdir / f"cli-{kind}"
        args = (
            ["graph", "build", str(corpus)] if kind == "graph" else ["build", str(corpus), "--method", kind]
        )
        done = run_ragroute(*args, "--out", str(out))
        if done.returncode != 0:
            raise RuntimeError(f"ragroute {' '.join(args)} failed: {done.stderr.strip()[-300:]}")
        built[kind] = out
    return built


def run_reliability_bench(
    *,
    quick: bool = False,
    parts: Sequence[str] = PARTS,
    kill_points: int | None = None,
    kill_commands: Sequence[str] | None = None,
    kill_method: str | None = None,
    encoder: Any = None,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Run the chosen ``parts`` of the reliability benchmark; returns the result (see the module
    docstring); ``encoder`` is the default encoder (loaded when ``None`` and a part needs it)."""
    settings = _settings(quick, kill_points)
    if kill_commands:
        settings["kill_commands"] = list(kill_commands)
    if kill_method:
        settings["kill_method"] = kill_method
    result: dict[str, Any] = {key: None for key in KEYS}
    details: dict[str, Any] = {"quick": quick, "settings": settings, "seconds": {}}

    def real_encoder() -> Any:
        nonlocal encoder
        if encoder is None:
            from ragroute.encode import load_encoder

            encoder = load_encoder()
        return encoder

    with tempfile.TemporaryDirectory(prefix="ragroute-reliability-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if "kill" in parts:
            start = time.perf_counter()
            from ragroute.reliability.kill import run_kills

            reports = run_kills(
                root / "kill",
                commands=settings["kill_commands"],
                points=settings["kill_points"],
                encoder=real_encoder(),
                method=settings["kill_method"],
                rerun_every=settings["rerun_every"],
                progress=log,
            )
            result["kills_tried"] = sum(r.killed for r in reports)
            result["kills_survived"] = sum(r.survived for r in reports)
            details["kill"] = [r.to_dict() for r in reports]
            details["seconds"]["kill"] = round(time.perf_counter() - start, 1)
        if "corruption" in parts:
            start = time.perf_counter()
            from ragroute.reliability.corruption import run_cli_matrix, run_matrix
            from ragroute.reliability.workload import (
                ARTIFACT_KINDS,
                MODEL_ARTIFACT_KINDS,
                WordHashEncoder,
                build_artifact,
            )

            words = WordHashEncoder()
            built = {k: build_artifact(k, root / "corrupt" / k, encoder=words) for k in ARTIFACT_KINDS}
            report = run_matrix(built, encoder=words, bit_stride=settings["bit_stride"], progress=log)
            if settings["model_artifacts"]:
                models = {k: build_artifact(k, root / "corrupt" / k) for k in MODEL_ARTIFACT_KINDS}
                report.merge(
                    run_matrix(
                        models, encoder=real_encoder(), bit_stride=settings["bit_stride"], progress=log
                    )
                )
            cli = run_cli_matrix(
                _cli_artifacts(root / "corrupt-cli", settings["cli_kinds"]),
                bit_stride=settings["cli_bit_stride"],
                progress=log,
            )
            report.merge(cli)
            result["corruptions_tried"] = report.tried
            result["corruptions_clean_error"] = report.clean
            details["corruption"] = report.to_dict()
            details["seconds"]["corruption"] = round(time.perf_counter() - start, 1)
        if "race" in parts:
            start = time.perf_counter()
            from ragroute.reliability.race import run_race

            method = settings["race_method"]
            race = run_race(
                root / "race",
                method=method,
                reads=settings["race_reads"],
                cli_reads=settings["race_cli_reads"],
                encoder=real_encoder() if method != "bm25" else None,
                progress=log,
            )
            result["race_reads"] = race.reads + race.cli_reads
            result["race_wrong"] = race.wrong + race.errors
            details["race"] = race.to_dict()
            details["seconds"]["race"] = round(time.perf_counter() - start, 1)
    if "fuzz" in parts:
        run_fuzz = _optional("ragroute.reliability.fuzz", "run_fuzz", log)
        if run_fuzz is not None:
            start = time.perf_counter()
            fuzz = run_fuzz(settings["fuzz_cases"])
            result["fuzz_cases"] = fuzz.get("fuzz_cases")
            result["fuzz_failures"] = fuzz.get("fuzz_failures")
            details["fuzz"] = fuzz
            details["seconds"]["fuzz"] = round(time.perf_counter() - start, 1)
            log(f"fuzz: {fuzz.get('fuzz_cases')} cases, {fuzz.get('fuzz_failures')} failures")
    if "faults" in parts:
        run_cli_faults = _optional("ragroute.reliability.faults", "run_cli_faults", log)
        if run_cli_faults is not None:
            start = time.perf_counter()
            faults = run_cli_faults(quick=quick)
            corruption_tracebacks = int(details.get("corruption", {}).get("outcomes", {}).get("traceback", 0))
            result["tracebacks"] = int(faults.get("tracebacks", 0)) + corruption_tracebacks
            details["faults"] = faults
            details["seconds"]["faults"] = round(time.perf_counter() - start, 1)
            log(
                f"cli faults: {faults.get('cli_cases')} cases, {faults.get('tracebacks')} tracebacks, "
                f"{faults.get('not_reached')} whose fault never fired"
            )
    if "scope" in parts:
        start = time.perf_counter()
        from ragroute.reliability.scope_probe import run_scope_probe

        scope = run_scope_probe(progress=log)
        result["scope_leaks"] = scope.leaks + scope.controls_failed
        details["scope"] = scope.to_dict()
        details["seconds"]["scope"] = round(time.perf_counter() - start, 1)
    return {**result, "details": details}


def _pair(done: Any, total: Any) -> str:
    return "-" if total is None else f"{done} / {total}"


def format_report(result: dict[str, Any]) -> str:
    """The measured numbers next to the goals, one row per harness."""
    details = result.get("details", {})
    kill = details.get("kill") or []
    per_command = ", ".join(f"{r['command']} {r['survived']}/{r['killed']}" for r in kill)
    corruption = details.get("corruption") or {}
    race = details.get("race") or {}
    fuzz = details.get("fuzz") or {}
    scope = details.get("scope") or {}
    rows = [
        ("kills survived / tried", _pair(result["kills_survived"], result["kills_tried"]), GOALS["kills"]),
        (
            "corruptions one-line error / tried",
            _pair(result["corruptions_clean_error"], result["corruptions_tried"]),
            GOALS["corruptions"],
        ),
        (
            "race wrong or misleading / reads",
            _pair(result["race_wrong"], result["race_reads"]),
            GOALS["race"],
        ),
        ("fuzz failures / cases", _pair(result["fuzz_failures"], result["fuzz_cases"]), GOALS["fuzz"]),
        (
            "CLI tracebacks",
            "-" if result["tracebacks"] is None else str(result["tracebacks"]),
            GOALS["tracebacks"],
        ),
        (
            "scope leaks",
            "-" if result["scope_leaks"] is None else str(result["scope_leaks"]),
            GOALS["scope_leaks"],
        ),
    ]
    lines = [f"{'check':38s} {'measured':>18s}   goal"]
    lines += [f"{name:38s} {value:>18s}   {goal}" for name, value, goal in rows]
    if per_command:
        lines.append(f"kill points per command (survived/killed): {per_command}")
    if corruption:
        lines.append(f"corruption outcomes: {corruption.get('outcomes')}")
        lines += [f"  {failure}" for failure in corruption.get("failures", [])[:5]]
    if race:
        lines.append(
            f"race ({race.get('method')}): {race.get('reads')} in-process + "
            f"{race.get('cli_reads')} CLI reads over {race.get('rebuilds')} rebuilds "
            f"in {race.get('seconds')} s; "
            f"{race.get('wrong')} wrong, {race.get('errors')} errors"
        )
        lines += [f"  {example}" for example in race.get("examples", [])[:5]]
    if fuzz.get("per_loader"):
        lines.append(f"fuzz: {len(fuzz['per_loader'])} targets, {fuzz.get('fuzz_cases')} cases")
    if scope:
        lines.append(
            f"scope probe: {scope.get('probes')} probes, {scope.get('leaks')} leaks, "
            f"{scope.get('controls_failed')} of {scope.get('controls')} positive controls failed"
        )
    for failure in [f for r in kill for f in r.get("failures", [])][:5]:
        lines.append(f"  kill: {failure}")
    seconds = details.get("seconds") or {}
    if seconds:
        lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    return "\n".join(lines)
