"""The whole package passes mypy (`files` under [tool.mypy] in pyproject.toml), and
the package says it is typed (PEP 561 py.typed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="install the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_is_marked_typed() -> None:
    assert (ROOT / "ragroute" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_public_modules_pass_mypy() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", "/dev/null"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


#: code a user type-checks with ``mypy --strict`` against the shipped annotations: the calls the
#: README shows, with folders given as strings and as ``os.PathLike`` (``save_index(idx,
#: "indexes/astronomy")`` was "expected Path"; ``load_routing(os.PathLike)`` "expected str | Path")
USER_CODE = """
from __future__ import annotations

import os
from pathlib import Path

from ragroute import load_catalogue, load_corpus, load_index, load_routing, save_index
from ragroute.encode import load_encoder
from ragroute.skills.router import SkillRouter


class Folder:
    def __init__(self, path: str) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return self.path


def user_code(folder: os.PathLike[str]) -> None:
    index = load_index("indexes/astronomy")
    save_index(index, "indexes/astronomy")
    save_index(index, Folder("indexes/astronomy"))
    load_index(folder, load_encoder(Folder("models/minilm")))
    load_routing("corpora/routing.yaml")
    load_routing(folder, cache_dir=Folder("cache"))
    load_routing(Path("corpora/routing.yaml"), cache_dir="cache")
    load_corpus("corpora/astronomy")
    load_corpus(folder)
    catalogue = load_catalogue("corpora/skills")
    load_catalogue(folder)
    router = SkillRouter(catalogue)
    router.save("skills/index")
    router.save(folder)
    SkillRouter.load("skills/index")
    SkillRouter.load(folder)
"""


def test_user_code_passing_paths_as_strings_or_pathlike_type_checks_strictly(tmp_path: Path) -> None:
    (tmp_path / "user_code.py").write_text(USER_CODE, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            "/dev/null",
            "--config-file",
            "",
            "--follow-imports",
            "silent",
            "--ignore-missing-imports",
            "user_code.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # this checkout's ragroute, not an installed one
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
