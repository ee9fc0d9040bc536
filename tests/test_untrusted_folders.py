"""Corpora and catalogues from elsewhere (a downloaded checkout) must not make ragroute read files
outside the folder it was given, walk the whole disk, or hang: links out of the folder, FIFOs and
devices, a folder link to `/`, JSON nested without end."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from ragroute.loaders.common import CorpusWarning
from ragroute.skills import load_catalogue

DATA = Path(__file__).parent / "data" / "skills"
SECRET = "root:x:0:0:secret-line-from-outside"


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    return path


def _skill(folder: Path, name: str) -> None:
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"---\nname: {name}\ndescription: does {name}\n---\nbody of {name}\n")


def test_a_skill_md_that_links_out_of_its_folder_is_not_read(tmp_path, secret):
    """It was read with no check: /etc/passwd became a skill's description and body."""
    root = tmp_path / "catalogue"
    _skill(root / "good", "good")
    (root / "evil").mkdir()
    (root / "evil" / "SKILL.md").symlink_to(secret)
    with pytest.warns(CorpusWarning, match=r"evil/SKILL.md.*a link to a file outside the skill folder"):
        catalogue = load_catalogue(root)
    assert [s.id for s in catalogue] == ["good"]
    assert all(SECRET not in s.body + s.description for s in catalogue)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_skill_md_that_is_a_fifo_or_a_device_is_refused_not_waited_on(tmp_path):
    """A FIFO hung the build for ever; a link to /dev/zero ran out of memory."""
    root = tmp_path / "catalogue"
    _skill(root / "good", "good")
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "SKILL.md")
    with pytest.warns(CorpusWarning, match=r"fifo/SKILL.md.*not a regular file"):
        catalogue = load_catalogue(root)
    assert [s.id for s in catalogue] == ["good"]


def test_a_folder_link_to_a_folder_holding_the_catalogue_is_not_walked(tmp_path):
    """A link to `/` walked the whole machine (/proc included) and loaded every SKILL.md on it."""
    root = tmp_path / "catalogue"
    _skill(root / "good", "good")
    _skill(tmp_path / "elsewhere" / "theirs", "theirs")
    (root / "up").symlink_to(tmp_path, target_is_directory=True)  # holds the catalogue: refused
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a checkout: followed
    with pytest.warns(CorpusWarning, match=r"up: folder link to .* not followed"):
        catalogue = load_catalogue(root)
    assert sorted(s.id for s in catalogue) == ["good", "linked/theirs"]


def test_a_skill_md_named_on_its_own_may_be_a_link(tmp_path):
    _skill(tmp_path / "checkout" / "tool", "tool")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "SKILL.md").symlink_to(tmp_path / "checkout" / "tool" / "SKILL.md")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorpusWarning)
        assert [s.name for s in load_catalogue(tmp_path / "mine" / "SKILL.md")] == ["tool"]


def test_a_folder_corpus_leaves_out_links_to_files_outside_it(tmp_path, secret):
    from ragroute.loaders import load_corpus

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text("telescopes and stars")
    (root / "b.txt").symlink_to(root / "a.txt")  # inside the folder: read
    (root / "pw.txt").symlink_to(secret)
    with pytest.warns(CorpusWarning, match=r"left out 1 file in .* that links to a file outside it: pw.txt"):
        docs = load_corpus(root)
    assert sorted(d.id for d in docs) == ["a", "b"]
    assert all(SECRET not in d.text for d in docs)


@pytest.mark.parametrize("kind", ["openapi", "mcp"])
def test_spec_and_tool_folders_leave_out_links_to_files_outside_them(tmp_path, kind):
    source = DATA / kind
    spec = next(p for p in sorted(source.rglob("*")) if p.suffix in (".json", ".yaml", ".yml"))
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(spec, outside / spec.name)
    root = tmp_path / "folder"
    shutil.copytree(source, root)
    (root / f"linked{spec.suffix}").symlink_to(outside / spec.name)
    with pytest.warns(
        CorpusWarning, match=r"left out 1 (spec|tool) file in .* that links to a file outside it: linked"
    ):
        with_link = load_catalogue(root, kind=kind)
    assert len(with_link) == len(load_catalogue(source, kind=kind))


def test_json_nested_without_end_is_a_bad_record_not_a_traceback(tmp_path):
    from ragroute.loaders import load_corpus

    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps({"_id": "a", "text": "fine"}) + "\n" + "[" * 200_000 + "\n")
    with pytest.warns(CorpusWarning, match="line 2: JSON nested too deeply"):
        docs = load_corpus(path)
    assert [d.id for d in docs] == ["a"]
