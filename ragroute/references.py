"""Callables named in configs: ``package.module:function`` or ``file.py:function``.

A source's ``factory:``, an LLM router's ``llm:`` and any ``llm:`` setting given as a reference
name a callable the same way: a module on the Python path (``my_rag.sources:make``; dotted
attributes are followed) or a Python file beside the config (``factories.py:make``). Importing
user code may raise anything; every failure is one :class:`~ragroute.errors.RagrouteError` line
naming ``where`` and the reference.

Loading a config imports (runs) that code. ``ragroute config check`` does not:
:func:`locate_reference` finds the module or file and reads it for the name, without running it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
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


def _parts(reference: str, where: str, what: str, base: Path | None) -> tuple[str, str, Path | None]:
    """``(module name, attribute, the .py file it names or None)``; one line for a reference not
    written as one or a ``.py`` file that does not exist (resolved against ``base``, the config's
    folder; the working directory when ``None``)."""
    if not is_reference(reference):
        raise RagrouteError(f"{where}: {what} {reference!r} is not {REFERENCE_FORM}")
    module_name, _, attribute = (part.strip() for part in reference.partition(":"))
    if not module_name.endswith(".py"):
        return module_name, attribute, None
    # ~/... the home folder, as every path a config names (until session 54 <folder>/~/x.py)
    # os.path's expanduser: pathlib's raised RuntimeError for an unknown ~user until session 55
    path = ((base or Path.cwd()) / os.path.expanduser(module_name)).resolve()
    if not path.is_file():
        raise RagrouteError(f"{where}: {what} file {path} does not exist")
    return module_name, attribute, path


def import_reference(
    reference: str, where: str, what: str = "factory", base: Path | None = None
) -> Callable[..., Any]:
    """The callable ``reference`` names; a ``.py`` module is resolved against ``base`` (the
    config's folder; the working directory when ``None``)."""
    module_name, attribute, path = _parts(reference, where, what, base)
    try:
        if path is not None:
            unique = hashlib.sha1(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(f"ragroute_factory_{unique}", path)
            assert spec is not None and spec.loader is not None
            module: Any = importlib.util.module_from_spec(spec)
            # registered while it runs, as an import registers a module: a dataclass (with postponed
            # annotations) or a pickle in the file looks its module up in sys.modules
            sys.modules[spec.name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(spec.name, None)
                raise
        else:
            module = importlib.import_module(module_name)
        target = module
        for part in attribute.split("."):
            target = getattr(target, part)
    except RagrouteError:
        raise
    except (Exception, SystemExit) as exc:  # user code: importing it may raise anything (a script's
        # top-level argparse or sys.exit ended the whole command until session 53)
        problem = f"{type(exc).__name__}: {exc}"
        raise RagrouteError(f"{where}: cannot load {what} {reference!r} ({problem})") from None
    if not callable(target):
        raise RagrouteError(f"{where}: {what} {reference!r} is not callable")
    return target


def locate_reference(reference: str, where: str, what: str = "factory", base: Path | None = None) -> str:
    """Check that ``reference`` names something that exists, without running any of its code (what
    ``ragroute config check`` does: a config from elsewhere must not run code by being checked).

    The module is found on the Python path (packages are searched, not imported) or the ``.py``
    file beside the config; when its source can be read, the first attribute must be defined at its
    top level (a ``def``, ``class``, assignment or import). Returns where it was found."""
    module_name, attribute, source = _parts(reference, where, what, base)
    if source is None:
        source = _module_source(module_name, f"{where}: cannot load {what} {reference!r}")
    if source is None or source.suffix != ".py":  # a compiled or built-in module: found is all we know
        return module_name
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise RagrouteError(f"{where}: cannot read {what} {reference!r} ({problem})") from None
    name = attribute.split(".")[0]
    defined = _top_level_names(tree)
    if name not in defined and "*" not in defined:  # a star import may bring any name
        problem = f"{source} defines no top-level {name!r}; read, not run"
        raise RagrouteError(f"{where}: cannot load {what} {reference!r} ({problem})")
    return str(source)


def _module_source(module_name: str, failure: str) -> Path | None:
    """The source file of a module on the Python path, its packages searched without being imported."""
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        return Path(origin) if origin else None
    path: list[str] | None = None
    spec = None
    parts = module_name.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None and path is None:  # a built-in or frozen module, or one a meta-path hook serves
            try:
                spec = importlib.util.find_spec(name) if i == 0 else None
            except (ImportError, ValueError):
                spec = None
        if spec is None:
            raise RagrouteError(f"{failure} (no module named {name!r}; searched for, not imported)")
        path = list(spec.submodule_search_locations or []) or None
    assert spec is not None
    return Path(spec.origin) if spec.origin and spec.has_location else None


_TRY_STAR: tuple[type, ...] = (ast.TryStar,) if hasattr(ast, "TryStar") else ()


def _top_level_names(tree: ast.Module) -> set[str]:
    """The names a module binds at its top level (``if``/``try`` blocks included; ``*`` for a star
    import, which may bind any)."""
    names: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.For, ast.AsyncFor)):  # its target, and what its body binds
            names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
            body.extend(node.body)
            body.extend(node.orelse)
        elif isinstance(node, ast.Match):
            body.extend(statement for case in node.cases for statement in case.body)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.While, *_TRY_STAR)):
            # try/except* (Python 3.11), while and match blocks were read as binding nothing until
            # session 49: `config check` said a factory defined in one is missing
            body.extend(getattr(node, "body", []))
            body.extend(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                body.extend(handler.body)
            body.extend(getattr(node, "finalbody", []))
    return names
