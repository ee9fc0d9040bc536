"""Rerankers: the last stage of the pipeline (see :class:`ragroute.pipeline.Reranker`).

Registered kinds live in :data:`ragroute.registry.RERANKERS`; each is one module here.
:data:`RERANKER_SETTINGS` lists the keys each kind reads from a ``reranker:`` mapping
(besides ``kind``), like ``ROUTER_SETTINGS`` and ``GATE_SETTINGS`` for routers and gates.
"""

from __future__ import annotations

RERANKER_SETTINGS: dict[str, frozenset[str]] = {
    "parents": frozenset(),
    "cross-encoder": frozenset({"model", "backend", "candidates", "batch_size", "max_length"}),
}


def settings_where(build: object) -> str:
    """Where a reranker's settings are, as errors name them (``FILE: reranker``): the line
    ``config check`` gives too (until session 51 loading left out ``reranker: `` and said a
    cross-encoder's unknown key as a "setting")."""
    where = str(getattr(build, "where", "") or "")
    return f"{where}: reranker" if where else "reranker"
