"""The whole package passes mypy (`files` under [tool.mypy] in pyproject.toml), and
the package says it is typed (PEP 561 py.typed)."""

from __future__ import annotations

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
