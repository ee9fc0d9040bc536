"""Control characters of a corpus, a query or a file name reach a terminal as visible escapes in
the text output (an ESC starting an ANSI sequence could clear the screen or retitle the terminal,
a BEL rang the bell); ``--json`` is escaped by JSON itself and unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragroute.cli import main
from ragroute.display import terminal_text

#: a control character other than the line feed and tab the text formats write
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
TITLE = "東京 \x1b[2Jwiped\x07 שלום 🚀"
TEXT = "rockets launch \x00 over \x1b]0;pwned\x07 café \x9b31m"


@pytest.fixture
def hostile_index(tmp_path: Path) -> Path:
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": "t1", "title": TITLE, "text": TEXT}]
    rows += [{"id": "x2", "text": "gamma"}, {"id": "x3", "text": "delta"}]
    corpus.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "idx"
    result = CliRunner().invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"])
    assert result.exit_code == 0, result.output
    return out


def test_terminal_text_escapes_controls_and_keeps_other_text() -> None:
    assert terminal_text("a\x1b[2J\x07\x00\x7f\x9b\rb") == "a\\x1b[2J\\x07\\x00\\x7f\\x9b\\x0db"
    assert terminal_text("line\n\tnext 東京 😀 שלום") == "line\n\tnext 東京 😀 שלום"


def test_query_text_output_shows_control_characters_as_escapes(hostile_index: Path) -> None:
    result = CliRunner().invoke(main, ["query", str(hostile_index), "rockets \x1b[2J\x07"])
    assert result.exit_code == 0, result.output
    assert not RAW_CONTROL.search(result.output), repr(result.output)
    assert "query: rockets \\x1b[2J\\x07" in result.output
    assert "東京 \\x1b[2Jwiped\\x07 שלום 🚀" in result.output  # the title; other text as it is
    assert "rockets launch \\x00 over \\x1b]0;pwned\\x07 café \\x9b31m" in result.output  # the snippet


def test_query_json_output_is_unchanged(hostile_index: Path) -> None:
    result = CliRunner().invoke(main, ["query", str(hostile_index), "rockets \x1b[2J\x07", "--json"])
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[-1]
    payload = json.loads(line)
    assert payload["query"] == "rockets \x1b[2J\x07"
    assert payload["hits"][0]["title"] == TITLE and payload["hits"][0]["text"] == TEXT
    assert "\\u001b[2J" in line and "\\\\x1b" not in line  # JSON's own escapes, not the display's


def test_an_error_naming_a_hostile_path_shows_its_escapes(tmp_path: Path) -> None:
    missing = tmp_path / "no\x1b[2Jsuch\x07index"
    result = CliRunner().invoke(main, ["query", str(missing), "rockets"])
    assert result.exit_code == 2
    assert "error:" in result.output and "no\\x1b[2Jsuch\\x07index" in result.output
    assert not RAW_CONTROL.search(result.output), repr(result.output)


def test_inspect_text_output_shows_a_hostile_name_as_escapes(hostile_index: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    out = tmp_path / "named"
    args = ["build", str(corpus), "--out", str(out), "--method", "bm25", "--name", "evil\x1b]0;pwned\x07"]
    built = CliRunner().invoke(main, args)
    if built.exit_code != 0:
        pytest.skip(f"build takes no such name: {built.output}")
    result = CliRunner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "name=evil\\x1b]0;pwned\\x07" in result.output
    assert not RAW_CONTROL.search(result.output), repr(result.output)
