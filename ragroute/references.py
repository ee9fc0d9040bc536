"""Callables named in configs: ``package.module:function`` or ``file.py:function``.

A source's ``factory:``, an LLM router's ``llm:`` and any ``llm:`` setting given as a reference
name a callable the same way: a module on the Python path (``my_rag.sources:make``; dotted
attributes are followed) or a Python file beside the config (``factories.py:make``). Importing
user code may raise anything; every failure is one :class:`~ragroute.errors.RagrouteError` line
naming ``where`` and the reference.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragroute.errors import RagrouteError

#: how a reference is written, for error messages
REFERENCE_FORM = "'package.module:function' or 'file.py:function'"


def is_reference(value: Any) -> bool:
    """Whether ``value`` is written as a reference (text with a ``:`` between two names)."""
    if not isinstance(value, str):
        return False
    module, sep, attribute = value.partition(":")
    return bool(sep and module.strip() and attribute.strip())


def import_reference(
    reference: str, where: str, what: str = "factory", base: Path | None = None
) -> Callable[..., Any]:
    """The callable ``reference`` names; a ``.py`` module is resolved against ``base`` (the
    config's folder; the working directory when ``None``)."""
    if not is_reference(reference):
        raise RagrouteError(f"{where}: {what} {reference!r} is not {REFERENCE_FORM}")
    module_name, _, attribute = (part.strip() for part in reference.partition(":"))
    try:
        if module_name.endswith(".py"):
            path = ((base or Path.cwd()) / module_name).resolve()
            if not path.is_file():
                raise RagrouteError(f"{where}: {what} file {path} does not exist")
            unique = hashlib.sha1(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(f"ragroute_factory_{unique}", path)
            assert spec is not None and spec.loader is not None
            module: Any = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        target = module
        for part in attribute.split("."):
            target = getattr(target, part)
    except RagrouteError:
        raise
    except Exception as exc:  # user code: importing it may raise anything
        problem = f"{type(exc).__name__}: {exc}"
        raise RagrouteError(f"{where}: cannot load {what} {reference!r} ({problem})") from None
    if not callable(target):
        raise RagrouteError(f"{where}: {what} {reference!r} is not callable")
    return target
