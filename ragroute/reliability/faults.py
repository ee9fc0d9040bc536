"""CLI fault injection: every command under bad paths, corrupt inputs, bad queries and failing writes.

:func:`run_cli_faults` runs the whole command-line surface (every command and subcommand of
``ragroute --help``, walked recursively, ``bench`` included) in-process through click's runner
(:mod:`ragroute.cli.testing`) over a small workspace it builds first, and counts the runs that end
in a traceback instead of a one-line ``error: ...`` (or a normal exit).

Faults, per command:

* **paths**: every path argument and option in turn (for benchmarks and training commands, all at
  once: they must fail before any real work) replaced by a missing path, a file where a folder is
  expected and the reverse, a path under a file, a file of random bytes, an empty file, a folder
  of garbage, and a path that cannot be read (``EACCES`` injected on every read below it, SQLite
  files included, since file modes mean nothing to root);
* **queries**: empty, whitespace, undecodable bytes (as Python keeps them from a non-UTF-8 command
  line), a lone surrogate, NUL, 200,000 characters, direction marks;
* **writes**: the command run as it should work while every write fails with ``ENOSPC`` (disk full)
  or ``EACCES`` (``open`` for writing, ``os.open``, ``mkdir``, ``rename``/``replace``, SQLite);
* **no arguments** and ``--help`` for each command.

Encoders are replaced by :class:`~ragroute.reliability.fuzz.TokenHashingEncoder` (the real
tokenizer, no model) for the whole run, so nothing slow or networked is loaded, and the run never
writes outside its temporary folder (``RAGROUTE_CACHE`` points into it).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import importlib
import io
import json
import os
import sqlite3
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.errors import CLICK_USAGE_LINES
from ragroute.reliability.fuzz import scratch_folder

#: how many failing cases :func:`run_cli_faults` describes in ``traceback_cases``
KEEP_CASES = 10

#: bad values of a path parameter (see the module docstring)
BAD_PATHS = (
    "missing",
    "file_for_dir",
    "dir_for_file",
    "under_file",
    "corrupt_file",
    "empty_file",
    "corrupt_dir",
    "unreadable",
)

#: bad query texts: rejected in one line, or searched as they are (NUL, direction marks)
BAD_QUERIES = (
    "",
    "   ",
    b"caf\xe9 cr\xe8me".decode("utf-8", "surrogateescape"),
    "half \ud800 pair",
    "nul\x00inside",
    "long " * 40_000,
    "\u202e\ufeffcomet",
)

#: write faults: errno injected on every write
WRITE_FAULTS = {"enospc": errno.ENOSPC, "eacces": errno.EACCES}

#: a full run fails the writes of a command's --out after 0, 1, ... WRITE_SWEEP - 1 writes succeeded
WRITE_SWEEP = 24

#: commands (a group, or one command by its full name) whose normal run is slow (training,
#: benchmarks, the demo) or needs what the workspace lacks (`skills tune`: a trained reranker):
#: only their failing forms run (every path bad at once, no arguments, --help)
FAIL_ONLY = ("bench", "demo", "expert", "rerank", "skills tune")

#: the normal form of every other command (``{W}`` is the workspace)
BASE_ARGS: dict[str, list[str]] = {
    "ask": ["{W}/routing.yaml", "how do comets get a tail?", "--no-llm"],
    "build": ["{W}/beir", "--out", "{W}/out/build", "--method", "dense"],
    "config check": ["{W}/routing.yaml"],
    "eval": ["--index", "{W}/idx/hybrid", "--data", "{W}/beir"],
    "gate decide": ["{W}/gate", "Who founded the Zorblat company?", "--json"],
    "gate fit": [
        "{W}/gate-train.jsonl",
        "--out",
        "{W}/out/gate",
        "--signals",
        "rarity,complexity",
        "--C",
        "1",
    ],
    "graph add": ["{W}/graph", "{W}/more"],
    "graph build": ["{W}/beir", "--out", "{W}/out/graph"],
    # --force: without it every case after the first stopped at "edges.tsv exists", before the
    # graph was read or the file written
    "graph export": ["{W}/graph", "--format", "edgelist", "--out", "{W}/out/edges.tsv", "--force"],
    "graph query": ["{W}/graph", "comet tail"],
    "graph stats": ["{W}/graph"],
    "inspect": ["{W}/idx/dense"],
    "query": ["{W}/idx/hybrid", "comet tail"],
    "route ask": ["{W}/routing.yaml", "comet tail"],
    "route fit": ["--queries", "{W}/labels.jsonl", "--out", "{W}/out/router"],
    "skills build": ["{W}/skills", "--out", "{W}/out/skills"],
    "skills route": ["{W}/skills-index", "read a pdf file", "--no-reranker"],
}

#: extra arguments of fail-only commands that would otherwise run anyway (bench bm25 measures a
#: synthetic corpus when its --data is unusable)
FAIL_ONLY_EXTRA: dict[str, list[str]] = {"bench bm25": ["--synthetic-docs", "0"]}

#: commands that run this harness themselves: only their --help runs here
HELP_ONLY = ("bench reliability",)

QUERY_ARGUMENTS = ("text", "query", "question", "task")

#: the parameter naming what a command writes, where it is not --out
WRITTEN = {"graph add": "graph_dir"}


@dataclass(frozen=True)
class FaultCase:
    """One command line to run, and the fault injected around it (``None``: none)."""

    name: str
    args: tuple[str, ...]
    fault: str | None = None
    """``"enospc:PATH"`` / ``"eacces:PATH"``: writes below PATH fail (``"...:PATH@N"``: after N
    writes succeeded); ``"unreadable:PATH"``: reads below PATH fail; ``None``: no fault"""
    sweep: str | None = None
    """cases of one sweep (the same write failing later and later): once one of them runs to the
    end (its fault came too late), the later ones are skipped"""


# ------------------------------------------------------------------------------------ injection


def _path_of(value: Any) -> str | None:
    if isinstance(value, int):
        return None
    try:
        return os.path.abspath(os.fspath(value))
    except TypeError:
        return None


def _writes(mode: Any) -> bool:
    return any(flag in str(mode) for flag in "wax+")


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


@dataclass
class Injected:
    """What :func:`inject` did in its block: how many calls it refused (0: the fault never fired,
    the command did not get as far as the reads or writes it was aimed at)."""

    refused: int = 0


@contextlib.contextmanager
def inject(fault: str | None, root: Path) -> Iterator[Injected]:
    """Make writes below a path fail (``"enospc:PATH"``, ``"eacces:PATH"``; no path: below ``root``)
    or reads below it (``"unreadable:PATH"``, ``EACCES``) for the duration of the block; ``None``
    injects nothing. Yields an :class:`Injected` counting the calls refused."""
    injected = Injected()
    if fault is None:
        yield injected
        return
    kind, _, target = fault.partition(":")
    target, _, after = target.partition("@")
    allowed = [int(after) if after else 0]  # writes that still succeed before the fault
    top = os.path.abspath(target or root)
    code = errno.EACCES if kind in ("eacces", "unreadable") else WRITE_FAULTS[kind]

    def below(path: Any) -> bool:
        where = _path_of(path)
        return where is not None and (where == top or where.startswith(top + os.sep))

    def hit(path: Any) -> bool:
        if not below(path):
            return False
        if allowed[0] > 0:
            allowed[0] -= 1
            return False
        injected.refused += 1
        return True

    def refuse(path: Any) -> OSError:
        return OSError(code, os.strerror(code), os.fspath(path))

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, make(original))

    if kind == "unreadable":

        def guard_open(original: Any) -> Any:
            def opener(file: Any, *args: Any, **kwargs: Any) -> Any:
                if hit(file):
                    raise refuse(file)
                return original(file, *args, **kwargs)

            return opener

        def guard_sqlite_read(original: Any) -> Any:
            def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
                if hit(database):  # SQLite opens its file in C, past the patched opens
                    raise sqlite3.OperationalError("unable to open database file")
                return original(database, *args, **kwargs)

            return connect

        for owner, name in ((builtins, "open"), (io, "open"), (os, "open"), (os, "scandir"), (os, "listdir")):
            patch(owner, name, guard_open)
        patch(sqlite3, "connect", guard_sqlite_read)
    else:

        def guard_file_open(original: Any) -> Any:
            def opener(file: Any, mode: Any = "r", *args: Any, **kwargs: Any) -> Any:
                if _writes(mode) and hit(file):
                    raise refuse(file)
                return original(file, mode, *args, **kwargs)

            return opener

        def guard_os_open(original: Any) -> Any:
            def opener(file: Any, flags: int, *args: Any, **kwargs: Any) -> Any:
                if flags & _WRITE_FLAGS and hit(file):
                    raise refuse(file)
                return original(file, flags, *args, **kwargs)

            return opener

        def guard_path(original: Any) -> Any:
            def call(path: Any, *args: Any, **kwargs: Any) -> Any:
                if hit(path):
                    raise refuse(path)
                return original(path, *args, **kwargs)

            return call

        def guard_sqlite(original: Any) -> Any:
            def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
                if hit(database):
                    message = (
                        "database or disk is full" if kind == "enospc" else "unable to open database file"
                    )
                    raise sqlite3.OperationalError(message)
                return original(database, *args, **kwargs)

            return connect

        patch(builtins, "open", guard_file_open)
        patch(io, "open", guard_file_open)
        patch(os, "open", guard_os_open)
        for name in ("mkdir", "replace", "rename", "rmdir", "unlink", "remove"):
            patch(os, name, guard_path)
        patch(sqlite3, "connect", guard_sqlite)
    try:
        yield injected
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


@contextlib.contextmanager
def tiny_encoders() -> Iterator[Any]:
    """Replace :func:`ragroute.encode.load_encoder` by one that resolves the name as usual (an
    unknown model still fails) and returns a :class:`TokenHashingEncoder` behind the real embedding
    cache of the given cache folder."""
    import ragroute.encode
    import ragroute.encode.load
    from ragroute.encode.cache import CachedEncoder, EmbeddingCache
    from ragroute.encode.resolve import default_cache_dir, resolve_model
    from ragroute.errors import RagrouteError
    from ragroute.reliability.fuzz import TokenHashingEncoder

    base = TokenHashingEncoder()

    def load_encoder(
        name_or_path: Any = "all-MiniLM-L6-v2",
        backend: str = "auto",
        cache_dir: Any = None,
        use_cache: bool = True,
        **_kwargs: Any,
    ) -> Any:
        if (backend or "auto").strip().lower() not in ("auto", "torch", "onnx", "onnx-int8"):
            raise RagrouteError(f"unknown encoder backend {backend!r}: expected auto, torch, onnx, onnx-int8")
        resolved = resolve_model(name_or_path)
        encoder = TokenHashingEncoder(base.dim, resolved.model_id)
        if not use_cache:
            return encoder
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(create=True)
        return CachedEncoder(encoder, EmbeddingCache.in_dir(root))

    saved = (ragroute.encode.load_encoder, ragroute.encode.load.load_encoder)
    ragroute.encode.load_encoder = load_encoder  # type: ignore[assignment]
    ragroute.encode.load.load_encoder = load_encoder  # type: ignore[assignment]
    try:
        yield load_encoder
    finally:
        ragroute.encode.load_encoder, ragroute.encode.load.load_encoder = saved  # type: ignore[assignment]


# ------------------------------------------------------------------------------------ the workspace


def _cli() -> Any:
    """:mod:`ragroute.cli.testing`, reached by name: this harness sits below the command line in
    the import graph (``ragroute bench reliability`` calls it), as the registries do."""
    return importlib.import_module("ragroute.cli.testing")


TOPICS = {
    "astro": ["Comets grow an ion tail in the solar wind.", "Telescopes resolve distant galaxies."],
    "cook": ["Sourdough bread needs a long fermentation.", "A roux thickens the sauce."],
    "it": ["Reset the printer before replacing the toner.", "The VPN needs a new password."],
}

SKILL_MD = (
    "---\nname: pdf-tools\ndescription: Read, merge and split PDF files.\n---\n"
    "# PDF tools\n\nUse this skill to read PDF documents and extract their tables.\n"
)


def build_workspace(root: Path) -> dict[str, str]:
    """Write the inputs and build (through the CLI) the artifacts the normal commands read; returns
    the bad paths by kind."""
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    labels = []
    for topic, texts in TOPICS.items():
        for i, text in enumerate(texts):
            docs.append({"_id": f"{topic}-{i}", "title": topic, "text": text})
            queries.append({"_id": f"q-{topic}-{i}", "text": text.split(" ", 3)[-1]})
            qrels.append(f"q-{topic}-{i}\t{topic}-{i}\t1")
            labels.append({"text": text, "label": topic})
    (beir / "corpus.jsonl").write_text("\n".join(map(json.dumps, docs)) + "\n", encoding="utf-8")
    (beir / "queries.jsonl").write_text("\n".join(map(json.dumps, queries)) + "\n", encoding="utf-8")
    (beir / "qrels" / "dev.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    (root / "labels.jsonl").write_text("\n".join(map(json.dumps, labels)) + "\n", encoding="utf-8")
    gate_rows = [
        {"_id": f"r{i}", "text": f"Who founded the {name} company in {city}?", "label": "document"}
        for i, (name, city) in enumerate(
            (n, c) for n in ("Zorblat", "Quenvar", "Mirtoll") for c in ("Tromso", "Ulm")
        )
    ] + [{"_id": f"a{i}", "text": f"What is {i} plus {i + 1}?", "label": "no"} for i in range(6)]
    (root / "gate-train.jsonl").write_text("\n".join(map(json.dumps, gate_rows)) + "\n", encoding="utf-8")
    more = root / "more"
    more.mkdir()
    (more / "rockets.md").write_text("# Rockets\n\nRockets carry telescopes to orbit.\n", encoding="utf-8")
    skill = root / "skills" / "pdf"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(SKILL_MD, encoding="utf-8")
    cli = _cli()
    for method in ("bm25", "dense", "hybrid"):
        _must(cli.invoke(["build", str(beir), "--out", str(root / "idx" / method), "--method", method]))
    _must(cli.invoke(["graph", "build", str(beir), "--out", str(root / "graph")]))
    _must(cli.invoke(["skills", "build", str(root / "skills"), "--out", str(root / "skills-index")]))
    train = str(root / "gate-train.jsonl")
    _must(
        cli.invoke(
            ["gate", "fit", train, "--out", str(root / "gate"), "--signals", "rarity,complexity", "--C", "1"]
        )
    )
    routing = {
        "sources": {
            "dense": {"index": "idx/dense", "description": "Comets, bread and printers."},
            "lexical": {"index": "idx/bm25", "description": "The same, by words."},
        },
        "router": {"kind": "prototype", "max_routes": 2},
        "signals": {"sum": {"type": "regex", "pattern": r"\d+\s*\+\s*\d+"}},
        "rules": [{"name": "sum", "when": "sum", "then": {"route": "none"}}],
    }
    (root / "routing.yaml").write_text(json.dumps(routing), encoding="utf-8")  # JSON is YAML
    return reset_bad_paths(root)


def reset_bad_paths(root: Path) -> dict[str, str]:
    """(Re)write ``root/bad``, the bad paths of the cases (a case may have written into one), and
    return them by kind."""
    import shutil

    bad = root / "bad"
    if bad.exists():
        shutil.rmtree(bad)
    bad.mkdir()
    (bad / "file").write_text("a plain file\n", encoding="utf-8")
    (bad / "empty").write_bytes(b"")
    (bad / "corrupt").write_bytes(bytes(range(256)) * 4)
    (bad / "dir").mkdir()
    (bad / "garbage" / "builds").mkdir(parents=True)
    (bad / "garbage" / "CURRENT").write_bytes(b"\x00\xffnot a pointer")
    (bad / "garbage" / "manifest.json").write_text("{not json", encoding="utf-8")
    (bad / "garbage" / "corpus.jsonl").write_bytes(b"\xff\xfe{broken\n")
    return {
        "missing": str(bad / "missing"),
        "file_for_dir": str(bad / "file"),
        "dir_for_file": str(bad / "dir"),
        "under_file": str(bad / "file" / "below"),
        "corrupt_file": str(bad / "corrupt"),
        "empty_file": str(bad / "empty"),
        "corrupt_dir": str(bad / "garbage"),
    }


def _must(outcome: Any) -> None:
    if outcome.exit_code != 0:
        detail = outcome.traceback or outcome.stderr
        raise RuntimeError(f"fault workspace: ragroute {' '.join(outcome.args)} failed: {detail[-2000:]}")


# ------------------------------------------------------------------------------------ the cases


def _fill(args: Sequence[str], root: Path) -> tuple[str, ...]:
    return tuple(arg.replace("{W}", str(root)) for arg in args)


def _bad_value(kind: str, bad: dict[str, str], path_kind: str | None) -> tuple[str, str | None]:
    """The value of a bad path of ``kind`` and the fault to inject with it."""
    if kind == "unreadable":
        return bad["corrupt_dir"] if path_kind == "dir" else bad["corrupt_file"], "unreadable"
    return bad[kind], None


def _positions(args: Sequence[str], command: Any) -> dict[str, int]:
    """Where each path or query parameter of ``command`` sits in ``args`` (option values by flag,
    positional arguments by name)."""
    found: dict[str, int] = {}
    flags = set(command.options)
    positional = [name for name, _kind in command.arguments]
    position = 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in flags:
            info = command.options[arg]
            if not info["flag"] and i + 1 < len(args):
                found[arg] = i + 1
                i += 2
                continue
        elif not arg.startswith("-") and position < len(positional):
            found[positional[position]] = i
            position += 1
        i += 1
    return found


def cases_for(command: Any, root: Path, bad: dict[str, str], *, quick: bool = False) -> list[FaultCase]:
    """The fault cases of one leaf command (see the module docstring)."""
    name = " ".join(command.path)
    out: list[FaultCase] = [FaultCase(f"{name} --help", (*command.path, "--help"))]
    if name in HELP_ONLY:
        return out
    required = [flag for flag, info in command.options.items() if info["required"]]
    if command.arguments or required:
        out.append(FaultCase(f"{name} (no arguments)", tuple(command.path)))
    turn = [sum(map(ord, name))]  # quick runs try one bad kind per parameter, another each time

    def kinds() -> tuple[str, ...]:
        if not quick:
            return BAD_PATHS
        turn[0] += 1
        return (BAD_PATHS[turn[0] % len(BAD_PATHS)],)

    path_kinds = {flag: info["dir"] for flag, info in command.options.items() if info["dir"]}
    path_kinds.update({arg: kind for arg, kind in command.arguments if kind})
    if name not in BASE_ARGS:  # fail-only: every path parameter bad at once
        for kind in kinds():
            args: list[str] = list(command.path)
            fault = None
            for _arg, arg_kind in command.arguments:
                value, fault_here = _bad_value(kind, bad, arg_kind) if arg_kind else ("comet tail", None)
                args.append(value)
                fault = fault or fault_here
            for flag, info in command.options.items():
                if info["dir"]:
                    value, fault_here = _bad_value(kind, bad, info["dir"])
                    args += [flag, value]
                    fault = fault or fault_here
                elif info["required"]:
                    args += [flag, str(info["choices"][0]) if info["choices"] else "1"]
            args += FAIL_ONLY_EXTRA.get(name, [])
            unreadable = f"unreadable:{os.path.dirname(bad['corrupt_file'])}" if fault else None
            out.append(FaultCase(f"{name} [all paths {kind}]", tuple(args), unreadable))
        return out
    base = _fill([*command.path, *BASE_ARGS[name]], root)
    out.append(FaultCase(f"{name} [normal]", base))
    if "--json" in command.options and not quick:
        out.append(FaultCase(f"{name} --json", (*base, "--json")))
    positions = _positions(base[len(command.path) :], command)
    offset = len(command.path)
    for param, path_kind in path_kinds.items():
        for kind in kinds():
            value, fault = _bad_value(kind, bad, path_kind)
            args = list(base)
            if param in positions:
                if fault:  # the path the command normally reads, made unreadable
                    value = args[offset + positions[param]]
                args[offset + positions[param]] = value
            elif param.startswith("-"):
                args += [param, value]
            else:
                continue
            injected = f"unreadable:{value}" if fault else None
            out.append(FaultCase(f"{name} [{param} {kind}]", tuple(args), injected))
    for param, index in positions.items():
        if param in QUERY_ARGUMENTS:
            for text in BAD_QUERIES[2:5:2] if quick else BAD_QUERIES:
                args = list(base)
                args[offset + index] = text
                out.append(FaultCase(f"{name} [{param} {_short(text)}]", tuple(args)))
    targets = {"cache": str(root / "cache")}
    written = WRITTEN.get(name, "--out")
    if written in positions:
        targets[written] = base[offset + positions[written]]
        if command.options.get(written, {}).get("dir") == "file":  # written beside itself, then
            targets[written] = os.path.dirname(targets[written])  # renamed over it: its folder
    for fault in WRITE_FAULTS:
        for what, target in targets.items():
            if quick and (fault == "eacces") == (what != "cache"):
                continue  # quick: a full disk under the output, no permission in the cache
            # the disk fills (or refuses) at the first write, or after a few writes succeeded
            sweep = (0,) if quick else (0, 3) if what == "cache" else range(WRITE_SWEEP)
            for after in sweep:
                label = f"{name} [writes to {what} fail after {after}: {fault}]"
                out.append(FaultCase(label, base, f"{fault}:{target}@{after}", f"{name} {what} {fault}"))
    if not quick:
        for flag, info in command.options.items():
            if info["type"] in ("IntRange", "IntParamType", "FloatParamType", "FloatRange", "Choice"):
                out.append(FaultCase(f"{name} [{flag} bad value]", (*base, flag, "-1e9x")))
    return out


def _short(text: str) -> str:
    shown = ascii(text)
    return shown if len(shown) <= 24 else shown[:21] + "..."


# ------------------------------------------------------------------------------------ the runner


def run_case(case: FaultCase, root: Path) -> Any:
    """Run one case (its fault injected around it) and return the :class:`CliOutcome`."""
    return _run_injected(case, root)[0]


def _run_injected(case: FaultCase, root: Path) -> tuple[Any, Injected]:
    with inject(case.fault, root) as injected:
        return _cli().invoke(list(case.args)), injected


def said_why(stderr: str) -> bool:
    """Whether a run that exited with status 1 (``config check`` finding problems) said why in
    ``error: ...`` lines: at least one, and no traceback or click dump (``Error: ...``, ``Usage:``).
    Until session 55 "error" anywhere passed: click's own ``Error: ...`` and a printed traceback
    ending in ``ValueError: ...`` counted as said."""
    if "Traceback (most recent call last)" in stderr:
        return False
    lines = [line for line in stderr.splitlines() if line.strip()]
    return any(line.startswith("error: ") for line in lines) and not any(
        line.startswith(CLICK_USAGE_LINES) for line in lines
    )


def run_cli_faults(*, quick: bool = False, commands: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every command of the CLI (or those named in ``commands``, e.g. ``["build", "graph
    query"]``) under fault injection; ``quick`` uses fewer bad paths and queries per parameter.

    Returns ``{"cli_cases": N, "tracebacks": K, "traceback_cases": [first few, with the last line
    of each traceback], "unclear": M, "unclear_cases": [...], "not_reached": R,
    "not_reached_cases": [...], "commands": C}``. ``unclear`` counts runs that failed without a
    one-line ``error: ...`` (:attr:`CliOutcome.one_line_error`); ``not_reached`` the cases whose fault never
    fired (the command ended, or refused something else, before the reads or writes it was aimed
    at): they ran, but tested no fault, and a sweep ends at the first of them.
    """
    cli = _cli()
    tree = [c for c in cli.command_tree() if commands is None or " ".join(c.path) in commands]
    tracebacks: list[str] = []
    unclear: list[str] = []
    not_reached: list[str] = []
    n_cases = 0
    with contextlib.ExitStack() as stack:
        folder = tempfile.TemporaryDirectory(prefix="ragroute-faults-", dir=scratch_folder())
        root = Path(stack.enter_context(folder))
        stack.enter_context(_environment(root))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(tiny_encoders())
        bad = build_workspace(root)
        finished: set[str] = set()
        for command in tree:
            for case in cases_for(command, root, bad, quick=quick):
                if case.sweep in finished:
                    continue
                reset_bad_paths(root)
                outcome, injected = _run_injected(case, root)
                n_cases += 1
                if case.fault is not None and not injected.refused:
                    not_reached.append(f"{case.name} (fault {case.fault}): exit {outcome.exit_code}")
                if case.sweep is not None and (outcome.exit_code == 0 or not injected.refused):
                    finished.add(case.sweep)  # its fault came too late: so would the later ones'
                if outcome.traceback is not None:
                    last = outcome.traceback.strip().splitlines()[-1]
                    tracebacks.append(f"{case.name} (fault {case.fault}): {last[:300]}")
                elif outcome.exit_code not in (0, 1) and not outcome.one_line_error:
                    unclear.append(
                        f"{case.name}: exit {outcome.exit_code}: {outcome.stderr.strip()[-300:]!r}"
                    )
                elif outcome.exit_code == 1 and not said_why(outcome.stderr):
                    unclear.append(
                        f"{case.name}: exit 1 without an error: line: {outcome.stderr.strip()[-300:]!r}"
                    )
    return {
        "cli_cases": n_cases,
        "commands": len(tree),
        "tracebacks": len(tracebacks),
        "traceback_cases": tracebacks[:KEEP_CASES],
        "unclear": len(unclear),
        "unclear_cases": unclear[:KEEP_CASES],
        "not_reached": len(not_reached),
        "not_reached_cases": not_reached[:KEEP_CASES],
    }


@contextlib.contextmanager
def _environment(root: Path) -> Iterator[None]:
    """Caches and progress bars of the run kept in ``root`` and off; restored afterwards."""
    names = {"RAGROUTE_CACHE": str(root / "cache"), "RAGROUTE_PROGRESS": "0", "RAGROUTE_CONFIG": None}
    saved = {name: os.environ.get(name) for name in names}
    for name, value in names.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
