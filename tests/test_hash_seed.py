"""The same inputs give the same outputs in every process: nothing ragroute returns or writes may
depend on ``PYTHONHASHSEED`` (the iteration order of a set of strings). Each test runs a few lines
in fresh interpreters under two hash seeds (whose set orders differ) and compares what they print."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _under_seeds(code: str, seeds: tuple[str, ...] = ("0", "1", "12345")) -> list[str]:
    """What ``code`` prints in a fresh interpreter under each hash seed of ``seeds``."""
    out = []
    for seed in seeds:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        out.append(done.stdout)
    return out


def test_own_metadata_gives_the_documents_key_order_back_in_every_process() -> None:
    # a node ragroute made keeps the document's own `source`, `title`, ... as `document_KEY`; read
    # back, each is `KEY` again where it stood (until session 52: appended in set order)
    code = """
        from ragroute.integrations.adapters import merged_metadata, own_metadata
        from ragroute.integrations.llamaindex import _NOT_DOCUMENT_FIELDS
        own = {"a": 1, "source": "s", "doc_id": "d", "rank": 3, "title": "t", "modality": "m", "z": 2}
        ours = {"source": "S", "doc_id": "D", "rank": 1}
        print(list(own_metadata(merged_metadata(own, ours, _NOT_DOCUMENT_FIELDS), _NOT_DOCUMENT_FIELDS)))
    """
    outputs = _under_seeds(code)
    assert outputs[0] == "['a', 'source', 'doc_id', 'rank', 'title', 'modality', 'z']\n"
    assert len(set(outputs)) == 1, outputs


#: debris names created in an order that is not theirs: a folder lists them as its file system
#: decides (ext4: by a hash of the name), almost never sorted
_DEBRIS = [".tmp-d", ".tmp-a", ".trash-f", ".tmp-c", ".trash-b", ".tmp-e", ".tmp-g"]


def _with_debris(tmp_path: Path) -> Path:
    from ragroute.store import write_artifact
    from ragroute.store.artifact import BUILDS_DIR

    target = tmp_path / "art"
    with write_artifact(target, "index", "test", params={"tag": "0"}) as build:
        (build.path / "a.txt").write_text("a")
    for name in _DEBRIS:
        (target / BUILDS_DIR / name).mkdir()
    for name in (".CURRENT.z", ".CURRENT.x", ".CURRENT.y"):
        (target / name).write_text("{}")
    return target


def test_clean_artifact_lists_the_debris_it_removed_sorted_whatever_the_listing(tmp_path: Path) -> None:
    from ragroute.store import clean_artifact

    target = _with_debris(tmp_path)
    expected = sorted([*(f"builds/{name}" for name in _DEBRIS), ".CURRENT.x", ".CURRENT.y", ".CURRENT.z"])
    assert clean_artifact(target).debris == expected


def test_the_kill_harness_names_debris_sorted_whatever_the_folder_listing(tmp_path: Path) -> None:
    from ragroute.reliability.kill import debris

    target = _with_debris(tmp_path)
    assert debris(target) == [*sorted(_DEBRIS), ".CURRENT.x", ".CURRENT.y", ".CURRENT.z"]
