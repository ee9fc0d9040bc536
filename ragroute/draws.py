"""Pseudo-random choices made from ids: the same whatever order the items come in.

A sample drawn over list positions changes when a corpus, a catalogue or a router's source list is
reordered, or when one unrelated item is added (until session 41: router probabilities, calibrated
fusion, a skill index's tuned weight and IVF-PQ's training all moved with corpus order). A draw
made here gives each id a number from the id, a seed and a key alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def id_draws(ids: Sequence[str], seed: int = 0, key: str = "") -> np.ndarray:
    """One pseudo-random 64-bit number per id, from the id, the seed and ``key`` alone (blake2b):
    a draw made by these is the same whatever order the ids come in and whatever else is drawn
    beside them. Draws over list positions (until session 41) changed with the order of a
    corpus, of a catalogue or of a router's sources, and with one unrelated document added: a
    router's probabilities moved by up to 0.27 and a skill index tuned another dense weight."""
    prefix = f"{seed}\x1f{key}\x1f".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "big")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def drawn(ids: Sequence[str], limit: int, seed: int = 0, key: str = "") -> np.ndarray:
    """Indices into ``ids`` of the ``limit`` ids with the smallest :func:`id_draws` (ties by id),
    in the order drawn (all of them when there are at most ``limit``)."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    draws = id_draws(ids, seed, key)
    order = np.lexsort((np.asarray([str(i) for i in ids], dtype=object), draws))
    return order[: max(limit, 0)].astype(np.int64)
