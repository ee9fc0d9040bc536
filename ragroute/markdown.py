"""Markdown's ATX headings outside fenced code blocks: the one rule by which a file's title
(:func:`ragroute.loaders.folder.first_heading`) and its sections (:mod:`ragroute.chunking`) are
read, so a file's title is the title its first section gets (until session 42 the loader had a
rule of its own: a ``# comment`` in a code block was a title, and ``# Intro to C#`` lost its
``#``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
"""An ATX heading line: group 1 its ``#`` marks (the level), group 2 its text (a closing run of
``#`` ends it only after a space)."""

FENCE = re.compile(r"^\s*(```|~~~)")
"""A line that opens or closes a fenced code block."""


def markdown_lines(text: str) -> Iterator[tuple[str, re.Match[str] | None]]:
    """Each line of ``text`` (lines end at ``\\n``, ``\\r\\n`` or a bare ``\\r``) with its heading
    match: None for a line that is no heading and for every line of a fenced code block."""
    in_fence = False
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
        yield line, (None if in_fence else HEADING.match(line))
