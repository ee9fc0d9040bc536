"""What a retriever handed to ragroute must be, checked where it is handed in, and which framework
an object comes from (no framework is imported here).

* :func:`check_target`: the pipeline, index, gate or controller a framework retriever is built over
  (:mod:`ragroute.integrations.llamaindex`, :mod:`ragroute.integrations.langchain`), and the
  retriever of a :class:`~ragroute.route.sources.Source`, checked at the constructor: a path says
  how to load what it names, a framework's own retriever which adapter makes it a ragroute one;
* :func:`framework_of`: which framework an object comes from, read from its classes' modules.

It imports nothing of ragroute but :mod:`ragroute.errors`, so a ``Source`` checks its retriever the
way the integrations do (:mod:`ragroute.integrations.adapters` imports the sources).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ragroute.errors import InvalidArgumentError, value_type_name

#: what a framework retriever over one index searches: a ragroute index, Source or retriever
SEARCHABLE = ("search_contexts", "search_many")
#: what each thing a framework retriever is built over must be (:func:`check_target`)
EXPECTED = {
    "pipeline": "a ragroute Pipeline",
    "index": "a ragroute index, Source or retriever",
    "retriever": "a ragroute index, pipeline or retriever",
    "gate": "a ragroute gate",
    "reranker": "a ragroute reranker",
    "controller": "a StepwiseController",
}
_LOADERS = {
    "pipeline": "ragroute.route.config.load_routing",
    "index": "ragroute.index.io.load_index",
    "retriever": "ragroute.index.io.load_index",
}
_ADAPTERS = {
    "llamaindex": ("LlamaRetrieverAdapter", "LlamaIndex"),
    "langchain": ("LangChainRetrieverAdapter", "LangChain"),
}


def check_target(obj: Any, name: str, methods: Sequence[str], where: str = "") -> Any:
    """``obj`` when it has one of ``methods`` (what a framework retriever calls on its ``name``: a
    key of :data:`EXPECTED`); else one :class:`InvalidArgumentError` line, at the constructor
    rather than as an AttributeError at the first query: a path says how to load what it names, a
    framework's own retriever which adapter makes it a ragroute one."""
    foreign = name in _LOADERS and framework_of(obj)  # a framework's retriever has retrieve, too
    if any(callable(getattr(obj, method, None)) for method in methods) and not foreign:
        return obj
    prefix = f"{where}: " if where else ""
    expected = f"{EXPECTED[name]} (anything with {' or '.join(methods)})"
    if isinstance(obj, (str, os.PathLike)) and name in _LOADERS:
        raise InvalidArgumentError(
            f"{prefix}{name} must be {expected}, not a path ({str(obj)!r}): load it first with "
            f"{_LOADERS[name]}({str(obj)!r})"
        )
    if foreign:
        adapter, label = _ADAPTERS[foreign]
        use = (
            f"route to it as a Source of a Pipeline, Source(name, {adapter}(...))"
            if name == "pipeline"
            else f"wrap it in {adapter} to search it as a ragroute retriever"
        )
        raise InvalidArgumentError(
            f"{prefix}{name} must be {expected}, not a {label} {type(obj).__name__}: {use}"
        )
    raise InvalidArgumentError(f"{prefix}{name} must be {expected}, not {value_type_name(obj)}")


def framework_of(obj: Any) -> str:
    """``"llamaindex"``, ``"langchain"`` or ``""``: the framework ``obj``'s class comes from."""
    modules = [getattr(cls, "__module__", "") or "" for cls in type(obj).__mro__]
    if any(m.startswith("llama_index.") for m in modules):
        return "llamaindex"
    if any(m.startswith(("langchain_core.", "langchain.", "langchain_community.")) for m in modules):
        return "langchain"
    return ""
