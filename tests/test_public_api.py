"""`import ragroute` gives the main entry points by name, each imported on first use."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import threading

import pytest

import ragroute
from ragroute.errors import RagrouteError


def test_every_exported_name_resolves_to_what_its_module_defines():
    lazy = ragroute._LAZY
    types = {"Decision", "Document", "Hit", "Query", "RagrouteError", "TraceStep"}
    assert set(ragroute.__all__) == types | set(lazy)
    for name, module in lazy.items():
        assert getattr(ragroute, name) is getattr(importlib.import_module(module), name), name
    assert set(ragroute.__all__) <= set(dir(ragroute))
    with pytest.raises(AttributeError, match="module 'ragroute' has no attribute 'load_routng'"):
        ragroute.load_routng  # noqa: B018 - the attribute read is the test


def test_importing_ragroute_loads_no_model_library():
    """A CLI `--help` or a script that only builds a BM25 index must not pay for faiss and torch."""
    code = "import sys, ragroute; print(sorted({'faiss', 'torch', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "missing", "hint"),
    [
        ("ragroute.integrations.langchain", "langchain_core", "pip install 'ragroute[langchain]'"),
    ],
)
def test_a_module_of_an_optional_extra_names_the_extra_when_it_is_missing(module, missing, hint, monkeypatch):
    for name in [m for m in sys.modules if m == missing or m.startswith(missing + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # importing it raises ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=re.escape(hint)):
        importlib.import_module(module)


def test_stemming_without_pystemmer_names_the_extra(monkeypatch):
    from ragroute.index import bm25_tokenize

    monkeypatch.setitem(sys.modules, "Stemmer", None)
    monkeypatch.setattr(bm25_tokenize, "_STEMMER_LOCAL", threading.local())
    with pytest.raises(RagrouteError, match=re.escape("pip install 'ragroute[stem]'")):
        bm25_tokenize._stemmer()


def test_python_dash_m_ragroute_is_the_command_line_and_the_version_is_one():
    from importlib.metadata import version

    result = subprocess.run(
        [sys.executable, "-m", "ragroute", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ragroute, version {ragroute.__version__}"
    assert version("ragroute") == ragroute.__version__  # pyproject reads it from ragroute/__init__.py
