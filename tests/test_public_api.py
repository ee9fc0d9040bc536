"""`import ragroute` gives the main entry points by name, each imported on first use."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import ragroute


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
