"""Every notebook under notebooks/ runs top to bottom, headless and offline (its asserts included).

Each notebook is executed with nbclient in a fresh ipykernel whose working directory is
notebooks/, with HF_HUB_OFFLINE=1, as a reader opening it in Jupyter would run it. A failing
cell fails the test with the cell's source and traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="install the test extra: pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="install the test extra: pip install -e '.[test]'")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
TIMEOUT_S = 300  # per cell
ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def test_notebooks_exist():
    assert "routing.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    notebook = nbformat.read(path, as_version=4)
    # Committed notebooks are clean: CI executes them, so stored outputs would only go stale.
    stale = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.get("outputs")]
    assert not stale, f"{path.name}: clear the outputs of code cells {stale} before committing"

    # The kernel inherits this environment: offline, whatever the caller's settings.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # Its temporary folders go here, so that what it leaves behind can be seen (libraries' own
    # caches, such as torch's compile cache, are theirs to keep).
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # the kernel's working directory
    )
    error = None
    try:
        client.execute(env=dict(os.environ))
    except nbclient.exceptions.CellExecutionError as exc:
        error = ANSI_COLOURS.sub("", str(exc))  # the failing cell's source and traceback
    if error is not None:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)
    left = sorted(p.name for p in scratch.iterdir() if p.name.startswith("ragroute"))
    assert not left, f"{path.name} left temporary files behind: {left}"
