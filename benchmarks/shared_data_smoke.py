"""Smoke-check the product on the real evaluation data in ../shared/data (a developer's check, not a test).

The unit tests never read ../shared/data, so a change that breaks the product on the real data
passes CI (session 34 made indexes refuse the two empty Cranfield documents and stopped every
Glasgow benchmark). This script runs, in about a minute on one core and with no model:

* every BEIR folder (the Glasgow collections, musique, tatqa's two corpora, 2wiki_corpus):
  ``ragroute build --method bm25`` and, where it has judged queries, ``ragroute eval --strict
  --json``; the BM25 nDCG@10 is compared with the value recorded below (BM25 is deterministic,
  so any difference at the fourth decimal is a change in what users get: explain it, then update
  the table);
* every SKILLS folder: the benchmark's strict loader (``load_skill_set``);
* every LABELS file: ``load_labels`` (every record, strictly).

Usage: ``.venv/bin/python benchmarks/shared_data_smoke.py [DATA_ROOT]`` (default ../shared/data
beside the checkout). Exit status 1 and one line per failure when anything breaks or moves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAGROUTE = [sys.executable, "-m", "ragroute"]

# BM25 nDCG@10 on each folder's dev split (`ragroute eval --strict`, depth 100), recorded
# 2026-12-05 at the code that left the two empty Cranfield documents out.
EXPECTED_NDCG: dict[str, float] = {
    "glasgow/adi": 0.4668,
    "glasgow/cacm": 0.4307,
    "glasgow/cisi": 0.3759,
    "glasgow/cran": 0.3545,
    "glasgow/lisa": 0.4437,
    "glasgow/med": 0.7870,
    "glasgow/npl": 0.3490,
    "glasgow/time": 0.7503,
    "musique": 0.5638,
    # 0.5514 until session 53, when BM25 began reading words in their NFKC form (one table writes
    # "ﬁnancing" and "ﬂow" with ligatures)
    "tatqa": 0.5515,
}
NO_QUERIES = {"2wiki_corpus"}
SKILLS_SETS = ("toollens", "metatool", "seal_tools")
LABELS_FILES = (
    "metatool_need_tool/dev.jsonl",
    "universalrag_routing/train.jsonl",
    "universalrag_routing/dev.jsonl",
)


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_beir(root: Path, name: str, work: Path, failures: list[str]) -> str:
    folder = root / name
    out = work / name.replace("/", "_")
    built = run([*RAGROUTE, "build", str(folder), "--method", "bm25", "--out", str(out)])
    if built.returncode != 0:
        why = last_line(built.stderr) or last_line(built.stdout)
        failures.append(f"{name}: ragroute build failed: {why}")
        return "build failed"
    if name in NO_QUERIES:
        return "built (no queries)"
    scored = run([*RAGROUTE, "eval", "--index", str(out), "--data", str(folder), "--strict", "--json"])
    if scored.returncode != 0:
        failures.append(f"{name}: ragroute eval --strict failed: {last_line(scored.stderr)}")
        return "eval failed"
    ndcg = float(json.loads(last_line(scored.stdout))["ndcg@10"])
    expected = EXPECTED_NDCG.get(name)
    if expected is not None and abs(ndcg - expected) > 5e-5:
        failures.append(f"{name}: BM25 nDCG@10 {ndcg:.4f}, recorded {expected:.4f}")
    return f"BM25 nDCG@10 {ndcg:.4f}" + ("" if expected is None else f" (recorded {expected:.4f})")


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else REPO.parent / "shared" / "data"
    if not (root / "README.md").is_file():
        print(f"data missing: {root} (expected ../shared/data beside the checkout)", file=sys.stderr)
        return 2
    from ragroute.evaluation.bench_skills import load_skill_set
    from ragroute.loaders.labels import load_labels

    failures: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragroute-smoke-") as tmp:
        for name in [*EXPECTED_NDCG, *sorted(NO_QUERIES)]:
            print(f"{name}: {check_beir(root, name, Path(tmp), failures)}", flush=True)
    for name in SKILLS_SETS:
        try:
            catalogue, queries, _qrels = load_skill_set(root / name, "dev")
            print(f"{name}: {len(catalogue)} skills, {len(queries)} judged queries")
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the check
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    for rel in LABELS_FILES:
        try:
            print(f"{rel}: {len(load_labels(root / rel))} labelled queries")
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{rel}: {type(exc).__name__}: {exc}")
    print(f"checked in {time.perf_counter() - started:.0f} s")
    for line in failures:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
