"""Text in any script through any console: a stdout that cannot hold a character, a reader that
stops reading, a C locale without UTF-8 mode, file and folder names that are not UTF-8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragroute.cli import main
from ragroute.errors import lone_surrogate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cjk_index(tmp_path: Path) -> Path:
    corpus = tmp_path / "c.jsonl"
    rows = [{"id": "t1", "title": "東京の天気 🚀", "text": "東京 rockets launch over café"}]
    rows += [{"id": "x2", "text": "gamma"}, {"id": "x3", "text": "delta"}]
    corpus.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "idx"
    assert (
        CliRunner().invoke(main, ["build", str(corpus), "--out", str(out), "--method", "bm25"]).exit_code == 0
    )
    return out


def test_text_output_on_a_stdout_lacking_characters_escapes_them(cjk_index: Path) -> None:
    """A latin-1 or cp1252 stdout (a Windows pipe, PYTHONIOENCODING=latin-1) made the first hit
    holding CJK or an emoji a UnicodeEncodeError traceback, the rest of the output lost (click
    rewrites only an ASCII stdout as UTF-8)."""
    for charset in ("latin-1", "cp1252"):
        result = CliRunner(charset=charset).invoke(main, ["query", str(cjk_index), "東京 café"])
        assert result.exit_code == 0, (charset, result.output, result.exception)
        lines = result.stdout.splitlines()
        assert lines[0] == "query: \\u6771\\u4eac café"
        assert "t1  \\u6771\\u4eac\\u306e\\u5929\\u6c17 \\U0001f680" in lines[2]
        assert lines[-1].lstrip().startswith("retrieve:")


def test_a_json_line_read_by_a_closed_pipe_ends_quietly(cjk_index: Path) -> None:
    """`ragroute query ... --json | head -0`: the JSON line sat in stdout's buffer until exit, where
    the broken pipe was Python's `Exception ignored ... BrokenPipeError` and status 120; the line is
    flushed inside the command now, and click ends a broken pipe quietly (status 1, as text output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragroute", "query", str(cjk_index), "rockets", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1, stderr
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr


def test_a_query_typed_in_a_c_locale_is_read_as_utf8(cjk_index: Path) -> None:
    """Under LC_ALL=C PYTHONUTF8=0 Python keeps an argument's UTF-8 bytes as lone surrogates: `東京`
    was refused as "undecodable byte 0xe6 (not UTF-8)". Bytes that are not UTF-8 are still refused."""
    typed = "東京".encode().decode("ascii", "surrogateescape")
    result = CliRunner().invoke(main, ["query", str(cjk_index), typed, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.splitlines()[-1])
    assert payload["query"] == "東京" and payload["hits"][0]["doc_id"] == "t1"
    latin1 = b"caf\xe9".decode("utf-8", "surrogateescape")
    result = CliRunner().invoke(main, ["query", str(cjk_index), latin1])
    assert result.exit_code == 2 and "undecodable byte 0xe9 at character 4" in result.output


def test_utf8_file_and_folder_names_load_in_a_c_locale(tmp_path: Path) -> None:
    """Under LC_ALL=C PYTHONUTF8=0 a corpus file named `東京.md` was skipped as "the file name is
    not valid UTF-8", and a skill folder `übersetzen` ended `skills build` in a UnicodeEncodeError
    traceback: their names are read as UTF-8 under any locale."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "東京.md").write_text("tokyo weather", encoding="utf-8")
    skill = tmp_path / "skills" / "übersetzen"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: translate\ndescription: Translate.\n---\n\nBody.\n", encoding="utf-8"
    )
    (skill / "notes-ü.md").write_text("side notes", encoding="utf-8")
    script = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from ragroute.loaders import load_corpus\n"
        "from ragroute.skills import load_skill_md\n"
        "doc = load_corpus(sys.argv[1])[0]\n"
        "skill = load_skill_md(sys.argv[2])[0]\n"
        "print(ascii([doc.id, doc.title, doc.metadata['path'], skill.id, skill.metadata['path'],"
        " skill.metadata['files']]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(corpus), str(tmp_path / "skills")],
        capture_output=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().strip() == ascii(
        ["東京", "東京", "東京.md", "übersetzen", "übersetzen/SKILL.md", ["notes-ü.md"]]
    )


def test_skill_folder_and_side_file_names_that_are_not_utf8_are_skipped_and_said(tmp_path: Path) -> None:
    """A skill folder named in latin-1 became a skill id holding a lone surrogate, and `skills build`
    a UnicodeEncodeError traceback; a side file so named failed the build as "texts[2] is not valid
    text", naming no file. The folder is skipped and the file left out, each said, as a folder
    corpus does for such a file."""
    from ragroute.skills import load_skill_md

    root = tmp_path / "skills"
    bad = root / os.fsdecode(b"caf\xe9")
    good = root / "send-email"
    for folder, name in ((bad, "cafe"), (good, "send-email")):
        folder.mkdir(parents=True)
        (folder / "SKILL.md").write_text(f"---\nname: {name}\ndescription: Do it.\n---\n\nBody.\n")
    (good / os.fsdecode(b"n\xf6tes.md")).write_text("notes about mail")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalogue = load_skill_md(root)
    assert [s.id for s in catalogue] == ["send-email"]
    assert any("the folder name is not valid UTF-8" in str(w.message) for w in caught)
    skill = catalogue[0]
    assert skill.metadata["files_skipped"] == ["n\\xf6tes.md (the file name is not valid UTF-8)"]
    assert lone_surrogate([skill.id, skill.body, skill.metadata]) is None


def test_lone_surrogate_names_the_first_one_written():
    """The last string of a list (and of a mapping) was read first until session 55, and the
    message named a later lone surrogate than the first."""
    assert lone_surrogate(["a\ud800", "bc\udc80"]) == "lone surrogate U+D800 at character 2"
    assert lone_surrogate({"k": ["\ud801"], "\ud802": "x"}) == "lone surrogate U+D801 at character 1"
    assert lone_surrogate({"\ud803": ["\ud801"]}) == "lone surrogate U+D803 at character 1"
    assert lone_surrogate([["ok", ("\udcff",)], "\ud800"]).startswith("undecodable byte 0xff")
