"""The corruption matrix: damage every file of an artifact, one case at a time, and load it.

For each artifact kind (:data:`ragroute.reliability.workload.ARTIFACT_KINDS`, plus rerankers and
experts when the caller builds them) and each file of its published build — the manifest, the
``CURRENT`` pointer and every data file — the cases are: truncate to half, truncate to nothing,
invert the first / middle / last byte, delete, and replace it by JSON Python's json cannot read
into a value (a number of more digits than Python reads; arrays nested past the recursion limit:
since session 51, when they were a ``ValueError`` and a ``RecursionError`` traceback from a
``CURRENT`` pointer). On top, single-bit flips across every byte of every
manifest and pointer (:func:`bit_flip_cases`; a stride samples them).

Each case is applied to the artifact in place, the artifact is loaded and asked
:data:`~ragroute.reliability.workload.PROBE_QUERIES` (:func:`~ragroute.reliability.workload.answer`),
and the file is restored. The outcome (:func:`classify`) is one of

* ``clean_error`` — a :class:`~ragroute.errors.RagrouteError` whose message is one line (the goal);
* ``multi_line`` — a ragroute error spread over several lines;
* ``traceback`` — any other exception;
* ``unnoticed`` — it loaded and answered as before (damage that changes nothing, never expected);
* ``wrong`` — it loaded and answered differently: the failure this matrix exists to catch.

:func:`run_cli_matrix` runs cases through the real command line (``ragroute query`` for indexes,
``ragroute inspect`` for any artifact): the goal there is exit status 2 with one ``error: ...``
line and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError, is_one_line, is_one_line_error_output
from ragroute.reliability.workload import PROBE_QUERIES, answer, run_ragroute
from ragroute.store.artifact import POINTER_NAME, published_path
from ragroute.store.manifest import MANIFEST_NAME

FILE_ACTIONS = (
    "truncate-half",
    "truncate-empty",
    "flip-first",
    "flip-middle",
    "flip-last",
    "delete",
    "json-long-number",
    "json-deep",
)
#: what the two JSON actions write in place of the file
_JSON_REPLACEMENTS = {
    "json-long-number": b'{"build": ' + b"9" * 5000 + b"}",
    "json-deep": b"[" * 100_000 + b"]" * 100_000,
}
OUTCOMES = ("clean_error", "multi_line", "traceback", "unnoticed", "wrong")
_DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s)\b")


@dataclass(frozen=True)
class Case:
    """One corruption: ``action`` applied to ``file`` (relative to the artifact folder)."""

    file: str
    action: str
    position: int = 0
    bit: int = 0

    def label(self) -> str:
        """Short text naming the case (for reports)."""
        where = f"@{self.position}.{self.bit}" if self.action == "bit" else ""
        return f"{self.action}{where} {self.file}"


@dataclass
class MatrixReport:
    """Outcome counts of a corruption run, per artifact kind, with examples of the failures."""

    tried: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def clean(self) -> int:
        """Cases that ended in a one-line error."""
        return self.outcomes["clean_error"]

    def add(self, kind: str, case: Case, outcome: str, detail: str = "") -> None:
        """Count one case."""
        self.tried += 1
        self.outcomes[outcome] += 1
        self.by_kind.setdefault(kind, Counter())[outcome] += 1
        if outcome != "clean_error" and len(self.failures) < 20:
            self.failures.append(f"{kind}: {case.label()}: {outcome} {detail}".strip())

    def merge(self, other: MatrixReport) -> None:
        """Add another report's counts to this one."""
        self.tried += other.tried
        self.outcomes.update(other.outcomes)
        for kind, counts in other.by_kind.items():
            self.by_kind.setdefault(kind, Counter()).update(counts)
        self.failures.extend(other.failures[: max(0, 20 - len(self.failures))])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "tried": self.tried,
            "clean_error": self.clean,
            "outcomes": {k: self.outcomes[k] for k in OUTCOMES},
            "by_kind": {k: dict(v) for k, v in self.by_kind.items()},
            "failures": self.failures,
        }


def artifact_files(root: Path) -> list[str]:
    """The files a reader of ``root`` depends on: the pointer, the manifest and every data file."""
    build = published_path(root)
    rel = build.relative_to(root)
    manifest = json.loads((build / MANIFEST_NAME).read_text(encoding="utf-8"))
    return [
        POINTER_NAME,
        (rel / MANIFEST_NAME).as_posix(),
        *[(rel / n).as_posix() for n in manifest["files"]],
    ]


def file_cases(root: Path) -> list[Case]:
    """Every action of :data:`FILE_ACTIONS` on every file of :func:`artifact_files`."""
    return [Case(name, action) for name in artifact_files(root) for action in FILE_ACTIONS]


def bit_flip_cases(root: Path, stride: int = 1) -> list[Case]:
    """Single-bit flips at every ``stride``-th bit of the manifest and the pointer (``1``: all)."""
    cases = []
    for name in artifact_files(root)[:2]:
        size = (root / name).stat().st_size
        cases += [Case(name, "bit", i // 8, i % 8) for i in range(0, size * 8, max(1, stride))]
    return cases


@contextlib.contextmanager
def applied(root: Path, case: Case) -> Iterator[None]:
    """The artifact with ``case`` applied; the file is restored afterwards."""
    path = root / case.file
    original = path.read_bytes()
    data = bytearray(original)
    if case.action == "delete":
        path.unlink()
    else:
        if case.action == "truncate-half":
            data = data[: len(data) // 2]
        elif case.action == "truncate-empty":
            data = bytearray()
        elif case.action in _JSON_REPLACEMENTS:
            data = bytearray(_JSON_REPLACEMENTS[case.action])
        elif case.action.startswith("flip-") and data:
            at = {"flip-first": 0, "flip-middle": len(data) // 2, "flip-last": len(data) - 1}[case.action]
            data[at] ^= 0xFF
        elif case.action == "bit":
            data[case.position] ^= 1 << case.bit
        path.write_bytes(bytes(data))
    try:
        yield
    finally:
        path.write_bytes(original)


def classify(load: Callable[[], Any], reference: Any) -> tuple[str, str]:
    """``(outcome, detail)`` of calling ``load`` on a damaged artifact (see the module docstring)."""
    try:
        got = load()
    except RagrouteError as exc:
        # one line that says something (:func:`~ragroute.errors.is_one_line`): until session 54 an
        # empty message counted as a clean error
        text = str(exc)
        return ("clean_error", "") if is_one_line(text) else ("multi_line", repr(text[:200]))
    except Exception as exc:  # noqa: BLE001 - anything else is what the matrix reports
        return "traceback", f"{type(exc).__name__}: {str(exc)[:200]}"
    return ("unnoticed", "") if got == reference else ("wrong", "")


def run_matrix(
    artifacts: dict[str, Path],
    *,
    encoder: Any = None,
    bit_stride: int = 1,
    file_actions: Sequence[str] = FILE_ACTIONS,
    progress: Callable[[str], None] | None = None,
) -> MatrixReport:
    """Every file case and every ``bit_stride``-th manifest/pointer bit flip of each artifact, loaded
    in this process; ``artifacts`` maps a kind label to a published artifact folder."""
    report = MatrixReport()
    for kind, root in artifacts.items():
        reference = answer(root, encoder)
        cases = [c for c in file_cases(root) if c.action in file_actions] + bit_flip_cases(root, bit_stride)

        def load(root: Path = root) -> Any:
            return answer(root, encoder)

        for case in cases:
            with applied(root, case):
                outcome, detail = classify(load, reference)
            report.add(kind, case, outcome, detail)
        if answer(root, encoder) != reference:  # restored exactly
            raise AssertionError(f"{root} was not restored after the corruption matrix")
        if progress:
            progress(f"corruption {kind}: {dict(report.by_kind.get(kind, {}))}")
    return report


def cli_answer(stdout: str) -> Any:
    """What a command printed, without timings: the hits of ``--json`` output, else the text."""
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        data = None
    if isinstance(data, dict) and "hits" in data:
        return [[h.get("doc_id"), h.get("score")] for h in data["hits"]]
    # a duration reads as <time>; until session 44 every line holding " s" or "ms" was dropped, the
    # encoder line of `inspect` ("encoder: sentence-transformers/...") among them, so a damaged
    # artifact that changed it counted as unnoticed rather than as a wrong answer
    return [_DURATION.sub("<time>", line) for line in lines]


def cli_outcome(done: subprocess.CompletedProcess[str], reference: Any) -> tuple[str, str]:
    """``(outcome, detail)`` of a command run on a damaged artifact: exit 2 with one ``error:``
    line is clean; a traceback, another exit status, or several error lines are not."""
    err = done.stderr.strip()
    if "Traceback" in err:
        return "traceback", err.splitlines()[-1][:200]
    if done.returncode == 2:  # one error line, the last, as the CLI harnesses read it
        return ("clean_error", "") if is_one_line_error_output(done.stderr) else ("multi_line", err[:200])
    if done.returncode == 0:
        return ("unnoticed", "") if cli_answer(done.stdout) == reference else ("wrong", "")
    return "traceback", f"exit {done.returncode}: {err[-200:]}"


def run_cli_matrix(
    artifacts: dict[str, Path],
    *,
    bit_stride: int = 0,
    query: str = PROBE_QUERIES[0],
    file_actions: Sequence[str] = FILE_ACTIONS,
    files: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> MatrixReport:
    """File cases (and, with ``bit_stride``, manifest/pointer bit flips) through the command line.

    Indexes are asked ``ragroute query DIR QUERY --json``; other artifacts are checked with
    ``ragroute inspect DIR``. A case must exit with status 2 and one ``error:`` line. ``files``
    keeps the file cases to the first ``files`` of :func:`artifact_files` (pointer, manifest, ...).
    """
    report = MatrixReport()
    for kind, root in artifacts.items():
        family = json.loads((published_path(root) / MANIFEST_NAME).read_text(encoding="utf-8"))["family"]
        args = ["query", str(root), query, "--json"] if family == "index" else ["inspect", str(root)]
        first = run_ragroute(*args)
        if first.returncode != 0:
            raise RagrouteError(f"{root} does not answer before corruption: {first.stderr.strip()[-300:]}")
        names = artifact_files(root)[:files]
        cases = [c for c in file_cases(root) if c.action in file_actions and c.file in names]
        if bit_stride:
            cases += bit_flip_cases(root, bit_stride)
        for case in cases:
            with applied(root, case):
                done = run_ragroute(*args)
            outcome, detail = cli_outcome(done, cli_answer(first.stdout))
            report.add(f"cli:{kind}", case, outcome, detail)
        if progress:
            progress(f"corruption (cli) {kind}: {dict(report.by_kind.get(f'cli:{kind}', {}))}")
    return report
