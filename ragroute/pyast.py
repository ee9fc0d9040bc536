"""Python's ``ast`` parser from several threads at once.

CPython 3.11's AST constructor keeps one recursion counter per interpreter, not per thread: two
threads converting syntax trees at once (``ast.parse``, ``ast.literal_eval``, numpy's ``.npy``
header reader, which calls ``ast.literal_eval``) may raise ``SystemError: AST constructor recursion
depth mismatch`` on sound input (python/cpython issue 106905 and its kin; 3.12 keeps the counter
per thread). ragroute's parses take turns under one lock (:data:`AST_LOCK`) and are tried again on
that error (a thread outside ragroute may be parsing at the moment). Parses are short, and a query
makes one at most (a planner's answer in Python-literal form), so the lock costs nothing a single
thread notices.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: held by every parse ragroute makes from a thread that may run beside another (arrays read by
#: :func:`ragroute.store.arrays.numpy_read`, LLM answers read by :func:`literal_eval`, ...)
AST_LOCK = threading.Lock()
#: tries of a parse that met the spurious error anyway
AST_RACE_TRIES = 3


def is_ast_race(exc: BaseException) -> bool:
    """Whether ``exc`` is CPython 3.11's spurious error of two threads parsing at once."""
    return isinstance(exc, SystemError) and "AST constructor recursion depth" in str(exc)


def parsing(parse: Callable[[], T]) -> T:
    """``parse()`` under :data:`AST_LOCK`, again on CPython's spurious AST ``SystemError`` (any
    other error as it comes)."""
    for attempt in range(AST_RACE_TRIES):
        try:
            with AST_LOCK:
                return parse()
        except SystemError as exc:
            if not is_ast_race(exc) or attempt == AST_RACE_TRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def literal_eval(text: str) -> Any:
    """``ast.literal_eval(text)``, safe to call from several threads at once (see the module)."""
    return parsing(lambda: ast.literal_eval(text))


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(source)``, safe to call from several threads at once (see the module)."""
    return parsing(lambda: ast.parse(source, filename=filename))
