"""Every `ragroute ...` command line in the README and docs names a command that exists, with
options that command has: a user copying a line from the docs must not meet "no such option"."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from ragroute.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _blocks(text: str) -> list[str]:
    """The shell (or unmarked) fenced blocks of a page."""
    blocks, current, language = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"\s*```(\S*)", line)
        if fence and current is None:
            current, language = [], fence.group(1)
        elif fence:
            if language in ("", "bash", "sh", "shell", "console"):
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _command_lines(text: str) -> list[str]:
    """The `ragroute ...` lines of a page's shell blocks (continuation lines joined)."""
    lines = []
    for block in _blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()  # comments may name other tools' options
            line = re.sub(r"^(?:\S+=\S+\s+)*", "", line)  # VAR=value prefixes
            line = re.sub(r"^(?:\.venv/bin/|\S*/)?ragroute\b", "ragroute", line)
            if line.startswith("ragroute ") or line == "ragroute":
                lines.append(line)
    return lines


def _resolve(line: str) -> tuple[click.Command, list[str], str]:
    """The deepest command the line names, the words after it and the path read."""
    command: click.Command = main
    words = line.split()[1:]
    path = ["ragroute"]
    while isinstance(command, click.Group) and words:
        # "gate|stepwise|skills ..." lists several subcommands in one line
        names = [n for n in words[0].split("|") if n in command.commands]
        if not names and type(command).parse_args is not click.Group.parse_args:
            # a group that supplies its own default command (`route CONFIG QUERY` = `route ask ...`)
            ctx = click.Context(command, resilient_parsing=True)
            command.parse_args(ctx, list(words))
            words = [*(getattr(ctx, "_protected_args", None) or []), *ctx.args]
            names = [words[0]] if words and words[0] in command.commands else []
        if not names:
            break
        command = command.commands[names[0]]
        path.append(names[0])
        words = words[1:]
    return command, words, " ".join(path)


def _options(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names


def _documented() -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(ROOT)}", line) for page in PAGES for line in _command_lines(page.read_text())
    ]


def test_the_docs_hold_command_lines_to_check():
    lines = _documented()
    assert len(lines) > 50
    assert any(line.startswith("ragroute bench corpus-routing") for _, line in lines)


@pytest.mark.parametrize(("page", "line"), _documented())
def test_a_documented_command_line_names_real_options(page, line):
    command, words, path = _resolve(line)
    # options of several commands listed with | (e.g. `rerank train ... | score ...`) are not read
    own = " ".join(words).split(" | ")[0]
    unknown = sorted(set(OPTION.findall(own)) - _options(command))
    assert not unknown, f"{page}: `{line}`: {path} has no option(s) {', '.join(unknown)}"
