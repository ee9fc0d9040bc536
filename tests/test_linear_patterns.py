"""Patterns that read long input in linear time: each gives what the pattern it replaced gave.

Until session 52 four patterns backtracked in time growing as the square of a run in the input: a
Markdown heading line with a long run of blanks (32,000: 7 s, :data:`ragroute.markdown.HEADING`),
one with a long run of ``#`` and blanks (the graph extractor's heading, 4 s), a message with a long
run of spaces (:func:`ragroute.errors.one_line`, 4.5 s) and a long word in a JSON-like skill body
(:func:`ragroute.skills.compact.compact_body`, 1.6 s). Only a timing shows that; these tests check
that the new patterns answer as the old ones did, on many short inputs made of the characters that
matter, and that a long run is read.
"""

from __future__ import annotations

import itertools
import random
import re

from ragroute import errors, markdown
from ragroute.graph import extract
from ragroute.skills import compact

OLD = {
    "heading": (markdown.HEADING, re.compile(r"^ {0,3}(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")),
    "graph_heading": (extract._HEADING, re.compile(r"\s{0,3}#{1,6}\s+(.*?)[\s#]*$")),
    "broken_run": (errors._BROKEN_RUN, re.compile(rf"\s*[{errors._LINE_BREAKS}]\s*")),
    "empty_key": (compact._EMPTY_KEY, re.compile(r"[\w.-]+:\s*(?=[,;]|$)")),
}
ALPHABET = [
    "#",
    " ",
    "\t",
    "a",
    "b",
    ":",
    ",",
    ";",
    ".",
    "-",
    "|",
    "\n",
    "\r",
    "\x0b",
    "\u2028",
    "\u00a0",
    "é",
]


def _inputs():
    yield from (
        "".join(p) for n in range(5) for p in itertools.product(["#", " ", "a", "\n", ":", ","], repeat=n)
    )
    rng = random.Random(52)
    for _ in range(4000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 24)))
        yield rng.choice(["", "# ", "## ", "   #", "a:", "x\n"]) + text


def _answers(pattern: re.Pattern[str], text: str):
    match = pattern.match(text)
    search = pattern.search(text)
    return (
        match and (match.span(), match.groups()),
        search and (search.span(), search.groups()),
        pattern.sub("_", text),
    )


def test_the_linear_patterns_answer_as_the_old_ones():
    for name, (new, old) in OLD.items():
        for text in _inputs():
            assert _answers(new, text) == _answers(old, text), (name, text)


def test_long_runs_are_read():
    run = 20_000  # the old patterns took seconds on each of these
    assert markdown.HEADING.match("# a" + " " * run + "b").group(2) == "a" + " " * run + "b"
    assert markdown.HEADING.match("## Title" + " \t" * run + "##  ").group(2) == "Title"
    assert extract._HEADING.match("# a" + " #" * run + " x").group(1) == "a" + " #" * run + " x"
    assert extract._HEADING.match("# Title" + " #" * run).group(1) == "Title"
    assert errors.one_line("a" + " " * run + "b\n c") == "a" + " " * run + "b c"
    assert compact._EMPTY_KEY.sub("", "k" * run + " key: ,x") == "k" * run + " ,x"
