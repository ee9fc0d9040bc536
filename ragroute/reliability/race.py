"""Readers during rebuilds: every answer must come from one whole build.

A writer process (:func:`writer_main`, started as ``python -m ragroute.reliability.race``) rebuilds
one index over and over, alternately from two small corpora, through the library (as fast as it
can: many rebuilds a second). Meanwhile this process reads it:

* in-process loads (``load_index`` + ``search``), from ``threads`` threads;
* ``ragroute query INDEX TEXT --json`` subprocesses (the command line users run), from
  ``cli_workers`` threads.

Each answer (document ids and scores of the top hits for :data:`QUERY`) is compared exactly with the
answers of the two builds, computed before the writer starts. An answer equal to neither is
**wrong** (documents of one build with scores of another, a half-written file...); any error while
the index exists is **misleading** (the index was never broken, only being replaced).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.reliability.corruption import cli_answer
from ragroute.reliability.workload import corpus_records, documents, run_ragroute
from ragroute.store.artifact import POINTER_NAME

QUERY = "telescope orbit of a comet bread dough"


@dataclass
class RaceReport:
    """Counts of a reader-during-rebuild run."""

    method: str
    seconds: float = 0.0
    rebuilds: int = 0
    reads: int = 0
    cli_reads: int = 0
    wrong: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _encoder(method: str) -> Any:
    if method == "bm25":
        return None
    from ragroute.encode import load_encoder

    return load_encoder()


def _corpora() -> tuple[list[Any], list[Any]]:
    return documents(corpus_records(11, 40)), documents(corpus_records(12, 48))


def _build(index_dir: Path, docs: Sequence[Any], method: str, encoder: Any) -> None:
    from ragroute.index.build import build_index
    from ragroute.index.io import save_index

    save_index(build_index(docs, method, encoder=encoder, name="race"), index_dir)


def in_process_answer(index_dir: Path, encoder: Any, k: int = 5) -> list[list[Any]]:
    """The top ``k`` hits for :data:`QUERY` from a fresh load of the index: ``[[doc_id, score]]``."""
    from ragroute.index.io import load_index

    return [[h.doc_id, h.score] for h in load_index(index_dir, encoder).search(QUERY, k=k)]


def writer_main(argv: Sequence[str] | None = None) -> int:
    """The writer process: rebuild INDEX alternately from the two corpora until STOP_FILE exists.

    Prints the number of rebuilds when it stops.
    """
    parser = argparse.ArgumentParser(prog="python -m ragroute.reliability.race")
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("method")
    parser.add_argument("stop_file", type=Path)
    args = parser.parse_args(argv)
    encoder = _encoder(args.method)
    corpora = _corpora()
    rebuilds = 0
    while not args.stop_file.exists():
        _build(args.index_dir, corpora[rebuilds % 2], args.method, encoder)
        rebuilds += 1
    print(rebuilds, flush=True)
    return 0


def _first_rebuild(writer: subprocess.Popen[str], pointer: Path, before: bytes, deadline: float) -> bool:
    """Wait until the writer has replaced the pointer ``before`` of the index (``True``), or has
    exited or run past ``deadline`` (``False``)."""
    while writer.poll() is None and time.monotonic() < deadline:
        if pointer.read_bytes() != before:
            return True
        time.sleep(0.01)
    return False


def run_race(
    workdir: Path,
    *,
    method: str = "bm25",
    reads: int = 1000,
    cli_reads: int = 20,
    threads: int = 2,
    cli_workers: int = 2,
    encoder: Any = None,
    max_seconds: float = 1800.0,
    progress: Callable[[str], None] | None = None,
) -> RaceReport:
    """Read the index at least ``reads`` times in-process and ``cli_reads`` times through the CLI
    while a writer process rebuilds it (see the module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    index_dir = workdir / "race-index"
    stop = workdir / "race-stop"
    stop.unlink(missing_ok=True)
    if encoder is None:
        encoder = _encoder(method)
    expected: list[Any] = []
    expected_cli: list[Any] = []
    for docs in _corpora():
        _build(index_dir, docs, method, encoder)
        expected.append(in_process_answer(index_dir, encoder))
        done = run_ragroute("query", str(index_dir), QUERY, "--json", "-k", "5")
        if done.returncode != 0:
            raise RuntimeError(f"ragroute query failed before the race: {done.stderr.strip()[-300:]}")
        expected_cli.append(cli_answer(done.stdout))
    if expected[0] == expected[1]:
        raise RuntimeError("both corpora give the same answer; the race could not tell builds apart")

    report = RaceReport(method)
    lock = threading.Lock()

    def record(got: Any, refs: list[Any], problem: str, cli: bool) -> None:
        with lock:
            if cli:
                report.cli_reads += 1
            else:
                report.reads += 1
            if problem:
                report.errors += 1
                if len(report.examples) < 10:
                    report.examples.append(problem[:300])
            elif got not in refs:
                report.wrong += 1
                if len(report.examples) < 10:
                    report.examples.append(f"wrong answer {str(got)[:200]}")

    deadline = time.monotonic() + max_seconds

    def in_process_reader() -> None:
        while report.reads < reads and time.monotonic() < deadline:
            try:
                got, problem = in_process_answer(index_dir, encoder), ""
            except Exception as exc:  # noqa: BLE001 - counted as a misleading error
                got, problem = None, f"{type(exc).__name__}: {exc}"
            record(got, expected, problem, cli=False)

    def cli_reader() -> None:
        while report.cli_reads < cli_reads and time.monotonic() < deadline:
            done = run_ragroute("query", str(index_dir), QUERY, "--json", "-k", "5")
            problem = "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
            record(cli_answer(done.stdout) if not problem else None, expected_cli, problem, cli=True)

    pointer = (index_dir / POINTER_NAME).read_bytes()
    writer = subprocess.Popen(
        [sys.executable, "-m", "ragroute.reliability.race", str(index_dir), method, str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    start = time.perf_counter()
    workers = [threading.Thread(target=in_process_reader) for _ in range(threads)]
    workers += [threading.Thread(target=cli_reader) for _ in range(cli_workers if cli_reads else 0)]
    try:
        # the readers start once the writer has published a rebuild: until session 49 they started
        # after a fixed 0.2 s, before the writer process had even imported ragroute, so a quick run
        # read one unchanging build throughout and reported "0 wrong" of a race that never happened
        raced = _first_rebuild(writer, index_dir / POINTER_NAME, pointer, deadline)
        if raced:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
    finally:
        stop.touch()
        try:
            out, err = writer.communicate(timeout=600)
        except BaseException:  # a hung writer (or an interrupt) does not outlive the harness
            writer.kill()
            writer.communicate()
            raise
    report.seconds = round(time.perf_counter() - start, 2)
    if writer.returncode != 0:
        raise RuntimeError(f"the writer process failed: {err.strip()[-500:]}")
    if not raced:
        raise RuntimeError("the writer process published no rebuild before the deadline; nothing was raced")
    report.rebuilds = int(out.strip().splitlines()[-1])
    if progress:
        progress(f"race {method}: {report.to_dict()}")
    return report


if __name__ == "__main__":
    sys.exit(writer_main())
