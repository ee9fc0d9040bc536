"""Markdown's ATX headings outside fenced code blocks: the one rule by which a file's title
(:func:`ragroute.loaders.folder.first_heading`) and its sections (:mod:`ragroute.chunking`) are
read, so a file's title is the title its first section gets (until session 42 the loader had a
rule of its own: a ``# comment`` in a code block was a title, and ``# Intro to C#`` lost its
``#``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(\S.*?)(?<![ \t])(?:[ \t]+#+)?[ \t]*$")
"""An ATX heading line, indented by at most three spaces (four make it indented code, CommonMark):
group 1 its ``#`` marks (the level), group 2 its text (a closing run of ``#`` ends it only after a
space). Until session 43 an indented ``  ## Usage`` was body text of the section above. A line with
only blanks after its ``#`` marks is no heading: ``#`` and two spaces was one, titled "" (``# `` was not)."""

FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
"""A line that opens or closes a fenced code block: group 1 its run of backticks or tildes, group 2
the rest (an opening fence's info string; a closing fence has none). Any indentation: a fence
inside a list item is indented with the item."""


def _fence(line: str) -> tuple[str, int, str] | None:
    """``(character, length, info)`` of a fence line, or None (the info string of a backtick fence
    holds no backtick: such a line is inline code, CommonMark)."""
    match = FENCE.match(line)
    if match is None or (match.group(1)[0] == "`" and "`" in match.group(2)):
        return None
    return match.group(1)[0], len(match.group(1)), match.group(2).strip()


def fenced_lines(text: str) -> Iterator[tuple[str, bool]]:
    """Each line of ``text`` (lines end at ``\\n``, ``\\r\\n`` or a bare ``\\r``) and whether it belongs to a
    fenced code block (its fence lines included). A block is closed only by a fence of its own
    character, at least as long, with no info string (CommonMark)."""
    opened: tuple[str, int] | None = None  # the open block's fence character and length
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        fence = _fence(line)
        if opened is None:
            if fence is not None:
                opened = fence[:2]
            yield line, fence is not None
            continue
        if fence is not None and fence[0] == opened[0] and fence[1] >= opened[1] and not fence[2]:
            opened = None
        yield line, True


def markdown_lines(text: str) -> Iterator[tuple[str, re.Match[str] | None]]:
    """Each line of ``text`` (lines end at ``\\n``, ``\\r\\n`` or a bare ``\\r``) with its heading
    match: None for a line that is no heading and for every line of a fenced code block
    (:func:`fenced_lines`); any fence line used to toggle, so a ``# comment`` after a ``~~~`` line
    inside a backtick block, or inside a four-backtick block that shows a three-backtick one, was
    taken for a heading."""
    for line, code in fenced_lines(text):
        yield line, None if code else HEADING.match(line)
