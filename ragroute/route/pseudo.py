"""Pseudo-queries: short word windows cut from a source's own documents.

Training-free routers use them as labelled data they can make themselves: to
calibrate their probabilities (fit a softmax temperature) and to normalise
retrieval scores per source, without a single human-labelled query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragroute.draws import drawn, id_draws
from ragroute.scopes import is_public
from ragroute.types import Document


def pseudo_queries(
    documents: Sequence[Document],
    n: int,
    *,
    seed: int = 0,
    key: str = "",
    min_words: int = 5,
    max_words: int = 12,
) -> list[tuple[int, str]]:
    """Up to ``n`` (document position, window of words) pairs, in document order.

    Which documents are cut, and where, is drawn from each document's id with ``seed`` and
    ``key`` (say, the source's name) and nothing else (:func:`~ragroute.draws.id_draws`): the
    same documents in another order, or beside one more document, give the same pseudo-queries
    (one more document can only take the place of one drawn after it).

    Only public documents (no access labels) are cut: what routers and score scales calibrate on
    serves every caller, so it must not carry words of documents some callers may not read."""
    candidates = [
        i
        for i, d in enumerate(documents)
        if is_public(d.metadata) and len(d.full_text().split()) >= min_words
    ]
    if not candidates:
        return []
    ids = [documents[i].id for i in candidates]
    picks = drawn(ids, n, seed, key)
    draws = id_draws([ids[int(j)] for j in picks], seed, key)
    out = []
    for j, draw in sorted(zip(picks.tolist(), draws.tolist())):
        position = candidates[j]
        words = documents[position].full_text().split()
        rng = np.random.default_rng(int(draw))  # the window: this document's own draw
        length = int(rng.integers(min_words, max_words + 1))
        start = int(rng.integers(0, max(1, len(words) - length + 1)))
        out.append((position, " ".join(words[start : start + length])))
    return out


def public_positions(documents: Sequence[Document]) -> np.ndarray:
    """Positions of the documents without access labels (what every caller may read)."""
    return np.asarray([i for i, d in enumerate(documents) if is_public(d.metadata)], dtype=np.int64)


def sample_documents(
    documents: Sequence[Document], positions: np.ndarray, limit: int, seed: int = 0, key: str = ""
) -> np.ndarray:
    """At most ``limit`` of ``positions`` (into ``documents``), drawn by document id
    (:func:`~ragroute.draws.drawn`), sorted; all of them when there are at most ``limit``."""
    if len(positions) <= limit:
        return np.asarray(positions, dtype=np.int64)
    picks = drawn([documents[int(p)].id for p in positions], limit, seed, key)
    return np.sort(np.asarray(positions, dtype=np.int64)[picks])
