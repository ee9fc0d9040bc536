"""Memos scoped to one decision: a computation several stages or signals need for the same query
is done once inside the block, and nothing is kept after it (a repeated query costs what a new one
costs)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def scoped_memo(var: contextvars.ContextVar[Any]) -> Iterator[None]:
    """Open an empty memo dict in ``var`` for the block; a block already inside one keeps it (the
    outermost block owns the memo). Thread- and task-local, as context variables are."""
    if var.get() is not None:
        yield
        return
    token = var.set({})
    try:
        yield
    finally:
        var.reset(token)
