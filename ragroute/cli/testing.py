"""Running the ``ragroute`` command line in-process, for harnesses outside this package.

The reliability harnesses (:mod:`ragroute.reliability.faults`, :mod:`ragroute.reliability.fuzz`)
drive every command through click's ``CliRunner`` without importing click themselves (click stays
inside ``ragroute.cli``): :func:`invoke` runs one command line and returns a plain
:class:`CliOutcome`, :func:`command_tree` lists every command and subcommand with its options.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

import click
from click.testing import CliRunner

from ragroute.errors import is_one_line_error_output


@dataclass(frozen=True)
class CliOutcome:
    """What one command line did: exit code, output, and the exception that escaped, if any.

    ``traceback`` is the formatted traceback of an exception the CLI did not turn into a one-line
    error (``None`` when it exited normally or through ``error: ...``).
    """

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    traceback: str | None = None

    @property
    def one_line_error(self) -> bool:
        """Whether it failed (exit status 2) with exactly one ``error: ...`` line, the last on
        stderr (:func:`~ragroute.errors.is_one_line_error_output`): what a command said before it (a
        ``warning: ...``) is allowed; click's own usage dump, an error message running on over
        several lines, a second ``error:`` line or a traceback is not."""
        return self.exit_code == 2 and is_one_line_error_output(self.stderr)


@dataclass(frozen=True)
class CommandInfo:
    """One leaf command: its words after ``ragroute`` and its parameters."""

    path: tuple[str, ...]
    arguments: tuple[tuple[str, str | None], ...]
    """``(name, path kind)`` per positional argument; the kind is ``"dir"``, ``"file"`` or ``"any"``
    for paths, ``None`` for text"""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """option name (``--out``) -> {"flag": bool, "type": click type name, "choices": [...],
    "required": bool, "multiple": bool, "dir": path kind or None}"""


def _main() -> click.Group:
    from ragroute.cli import main

    return main


def invoke(args: list[str] | tuple[str, ...], *, env: dict[str, str] | None = None) -> CliOutcome:
    """Run ``ragroute ARGS`` in this process and return what it did (never raises)."""
    runner = CliRunner()
    result = runner.invoke(_main(), list(args), env=env, catch_exceptions=True)
    trace = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CliOutcome(tuple(args), result.exit_code, result.stdout, result.stderr, trace)


def _param_info(param: click.Parameter) -> dict[str, Any]:
    kind = param.type
    info: dict[str, Any] = {
        "flag": bool(getattr(param, "is_flag", False)),
        "type": type(kind).__name__,
        "required": bool(param.required),
        "multiple": bool(param.multiple),
        "choices": list(kind.choices) if isinstance(kind, click.Choice) else [],
        "dir": None,
    }
    if isinstance(kind, click.Path):
        info["dir"] = "dir" if not kind.file_okay else ("file" if not kind.dir_okay else "any")
    return info


def command_tree() -> list[CommandInfo]:
    """Every leaf command of ``ragroute`` (groups walked recursively, ``bench`` included)."""
    out: list[CommandInfo] = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], (*path, name))
            return
        arguments = tuple(
            (p.name or "", _param_info(p)["dir"]) for p in command.params if isinstance(p, click.Argument)
        )
        options = {
            max(p.opts, key=len): _param_info(p)
            for p in command.params
            if isinstance(p, click.Option) and "--help" not in p.opts
        }
        out.append(CommandInfo(path, arguments, options))

    walk(_main(), ())
    return out
