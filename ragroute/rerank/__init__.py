"""Rerankers: the last stage of the pipeline (see :class:`ragroute.pipeline.Reranker`).

Registered kinds live in :data:`ragroute.registry.RERANKERS`; each is one module here.
:data:`RERANKER_SETTINGS` lists the keys each kind reads from a ``reranker:`` mapping
(besides ``kind``), like ``ROUTER_SETTINGS`` and ``GATE_SETTINGS`` for routers and gates.
"""

from __future__ import annotations

import inspect
from typing import Any

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


def rerank_every(reranker: Any, query: Any, hits: list[Any], k: int) -> list[Any]:
    """``reranker.rerank(query, hits, k)`` reading every hit handed over: a reranker with a pool of
    its own (``candidates``, the cross-encoder's) is told the pool is all of them, not its default
    first ones; one of the pipeline's protocol, ``rerank(query, hits, k)``, is called as it is
    (the skill router passed ``candidates=`` to every reranker until session 53), also when it has a
    ``candidates`` attribute (the pool the pipeline fuses for it) and its ``rerank`` takes no such
    keyword: until session 54 RagrouteRerank and the skill router failed on it with ``TypeError:
    rerank() got an unexpected keyword argument 'candidates'``."""
    if hasattr(reranker, "candidates") and _takes_candidates(reranker.rerank):
        return list(reranker.rerank(query, hits, k, candidates=len(hits)))
    return list(reranker.rerank(query, hits, k))


def _takes_candidates(rerank: Any) -> bool:
    """Whether ``rerank`` takes a ``candidates`` keyword (named, or any keyword); ``True`` when its
    signature cannot be read."""
    try:
        parameters = inspect.signature(rerank).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        (p.name == "candidates" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )
