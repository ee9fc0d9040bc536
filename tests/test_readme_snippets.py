"""The README's Python snippets run as written (bundled MiniLM, temporary folder) and print what
their comments say."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import ragroute.encode
from ragroute.cli.demo import build_sources
from ragroute.corpora import load_corpus_specs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_snippets_run_and_route_as_their_comment_says(tmp_path, monkeypatch, capsys, minilm):
    """The routing snippet's comment said the demo routes the toner question to
    `['product_tables']`; the demo's router (threshold 0.3, max_routes 2) chooses `it_support`
    too (p about 0.32)."""
    monkeypatch.setattr(ragroute.encode, "load_encoder", lambda *args, **kwargs: minilm)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "corpora", tmp_path / "corpora")
    # what `ragroute demo` builds first: the indexes routing.yaml names (../indexes/demo)
    build_sources(
        load_corpus_specs(tmp_path / "corpora" / "corpora.yaml"),
        "hybrid",
        minilm,
        tmp_path / "indexes" / "demo",
    )
    capsys.readouterr()
    build, route = python_blocks()
    namespace: dict = {}
    exec(compile(build, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    assert (tmp_path / "indexes" / "astronomy" / "CURRENT").is_file()
    assert capsys.readouterr().out.count("astronomy") == 3  # three hits, each naming its source
    exec(compile(route, str(README), "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    said = re.search(r"print\(result\.decision\.chosen, result\.decision\.routes\)\s+# (\[.*?\])", route)
    assert said, "the routing snippet's comment names the chosen routes"
    assert result.decision.chosen == ast.literal_eval(said.group(1))
    assert set(result.decision.routes) == {"astronomy", "cooking", "it_support", "product_tables"}
    out = capsys.readouterr().out
    assert "router " in out and "fuse " in out  # the trace's steps, one line each
