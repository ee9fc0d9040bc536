"""Real-world shapes of skill catalogues: SKILL.md trees, MCP tool lists and OpenAPI specs as their
authors write them (CRLF files, unclosed front matter, links, duplicate names and operationIds,
multi-file specs). Every fixture is written to tmp_path."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from ragroute.skills import Catalogue, SkillWarning, load_catalogue


def load_quietly(path: Path, **kwargs) -> Catalogue:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkillWarning)
        return load_catalogue(path, **kwargs)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- SKILL.md


def test_crlf_skill_md_reads_like_lf(tmp_path: Path) -> None:
    # a SKILL.md saved on Windows: the first paragraph stood in for the description ran on into the
    # second one ("\r\n\r\n" is no blank line to a "\n" split), and the body kept its "\r"s
    write(tmp_path / "csv" / "SKILL.md", b"# CSV\r\n\r\nConvert CSV files.\r\n\r\nMore text.\r\n")
    write(tmp_path / "csv" / "notes.md", b"line one\r\nline two\r\n")
    skill = load_quietly(tmp_path).by_id("csv")
    assert skill.description == "Convert CSV files."
    assert "\r" not in skill.body
    assert skill.body == "# CSV\n\nConvert CSV files.\n\nMore text.\n\n[file: notes.md]\nline one\nline two"


def test_unclosed_front_matter_still_gives_name_and_description(tmp_path: Path) -> None:
    write(
        tmp_path / "fmt" / "SKILL.md",
        "---\nname: formatter\ndescription: Format SQL queries.\n\n# Use\n\nRun it.\n",
    )
    with pytest.warns(SkillWarning, match=r"fmt/SKILL\.md: broken front matter: front matter is not closed"):
        catalogue = load_catalogue(tmp_path)
    skill = catalogue.by_id("fmt")
    assert (skill.name, skill.description) == ("formatter", "Format SQL queries.")
    assert skill.body == "# Use\n\nRun it."
    assert "name read from its 'name:' line" in catalogue.warnings[0]


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks and FIFOs")
def test_links_in_a_skill_tree(tmp_path: Path) -> None:
    outside = write(tmp_path / "secret.txt", "root:x:0:0:root")
    shared = tmp_path / "elsewhere" / "shared-skill"
    write(
        shared / "SKILL.md", "---\nname: shared\ndescription: Linked in from elsewhere.\n---\nShared body.\n"
    )
    root = tmp_path / "skills"
    write(root / "own" / "SKILL.md", "---\nname: own\ndescription: Own skill.\n---\nOwn body.\n")
    write(root / "own" / "notes.md", "own notes")
    os.symlink(outside, root / "own" / "passwd.txt")  # a link out of the skill folder: not read
    os.symlink(root / "own" / "notes.md", root / "own" / "alias.md")  # a link inside it: read
    os.mkfifo(root / "own" / "pipe.txt")  # reading a FIFO would block forever
    os.symlink(shared, root / "shared-skill")  # ~/.claude/skills/NAME -> a checkout: a skill
    os.symlink(root, root / "own" / "loop")  # a link cycle must not hang the walk
    catalogue = load_quietly(root)
    assert catalogue.ids == ["own", "shared-skill"]
    assert catalogue.by_id("shared-skill").body == "Shared body."
    own = catalogue.by_id("own")
    assert "root:x" not in own.body
    assert own.metadata["files"] == ["alias.md", "notes.md"]
    assert own.metadata["files_skipped"] == [
        "passwd.txt (a link to a file outside the skill folder)",
        "pipe.txt (not a regular file)",
    ]


def test_same_skill_name_in_two_folders_warns(tmp_path: Path) -> None:
    # ids are folder paths, so two folders may hold skills with the same front-matter name; an agent
    # picks skills by name, so that is worth one warning naming both files
    write(tmp_path / "team-a" / "deploy" / "SKILL.md", "---\nname: deploy\ndescription: Deploy A.\n---\nA\n")
    write(tmp_path / "team-b" / "deploy" / "SKILL.md", "---\nname: deploy\ndescription: Deploy B.\n---\nB\n")
    with pytest.warns(SkillWarning) as caught:
        catalogue = load_catalogue(tmp_path)
    assert catalogue.ids == ["team-a/deploy", "team-b/deploy"]
    assert [str(w.message) for w in caught] == [
        f"{tmp_path}: skill name 'deploy' is used by 2 skills (team-a/deploy/SKILL.md, "
        "team-b/deploy/SKILL.md); their ids (folder paths) tell them apart"
    ]
