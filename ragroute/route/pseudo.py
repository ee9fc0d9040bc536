"""Pseudo-queries: short word windows cut from a source's own documents.

Training-free routers use them as labelled data they can make themselves: to
calibrate their probabilities (fit a softmax temperature) and to normalise
retrieval scores per source, without a single human-labelled query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragroute.scopes import is_public
from ragroute.types import Document


def pseudo_queries(
    documents: Sequence[Document], n: int, *, seed: int = 0, min_words: int = 5, max_words: int = 12
) -> list[tuple[int, str]]:
    """Up to ``n`` (document position, window of words) pairs, deterministic for a seed.

    Only public documents (no access labels) are cut: what routers and score scales calibrate on
    serves every caller, so it must not carry words of documents some callers may not read."""
    rng = np.random.default_rng(seed)
    candidates = [
        i
        for i, d in enumerate(documents)
        if is_public(d.metadata) and len(d.full_text().split()) >= min_words
    ]
    if not candidates:
        return []
    picks = rng.choice(candidates, size=min(n, len(candidates)), replace=False)
    out = []
    for position in sorted(int(p) for p in picks):
        words = documents[position].full_text().split()
        length = int(rng.integers(min_words, max_words + 1))
        start = int(rng.integers(0, max(1, len(words) - length + 1)))
        out.append((position, " ".join(words[start : start + length])))
    return out


def public_positions(documents: Sequence[Document]) -> np.ndarray:
    """Positions of the documents without access labels (what every caller may read)."""
    return np.asarray([i for i, d in enumerate(documents) if is_public(d.metadata)], dtype=np.int64)


def sample_positions(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """At most ``limit`` positions out of ``count``, sorted (all of them when count <= limit)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))
