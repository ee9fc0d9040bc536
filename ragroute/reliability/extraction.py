"""Synthetic query streams for the extraction budget: an anchor-mutation attacker and benign users.

* :func:`anchor_mutation_attack` — the "Silent Leaks" pattern: every query looks benign (a few
  words), but each is cut from a document an earlier query returned, with one or two words
  swapped for anchor words, so the stream keeps walking into unseen parts of the knowledge base.
  It starts from anchor words of general English (``wordfreq``'s most frequent words, not the
  corpus's: the attacker does not know the corpus) and runs through the product pipeline as one
  caller, so the pipeline's :class:`~ragroute.exposure.ExposureLedger` sees it as a user would be
  seen.
* :func:`benign_users` — simulated normal users drawn from real labelled questions: each user has
  a home collection, asks a heavy-tailed number of questions per window (log-normal, median 8,
  sigma 1, at most 200: an assumption, stated in the report), 80% of them from the home
  collection, and reformulates some (a word dropped).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_WORD = re.compile(r"[A-Za-z][A-Za-z\-]{2,}")


def anchor_words(count: int = 300, seed: int = 0) -> list[str]:
    """Anchor words from general English: frequent words of four letters or more."""
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", 3000) if len(w) >= 4 and w.isalpha()]
    rng = np.random.default_rng(seed)
    return [str(w) for w in rng.choice(words, size=min(count, len(words)), replace=False)]


@dataclass
class AttackResult:
    """What the attacker saw: distinct documents per source, and the running total per query."""

    queries: int
    distinct: dict[str, int]
    curve: list[int]  # distinct documents seen after each query
    withheld: int
    first_withheld_at: int | None  # query number (1-based) of the first withheld hit
    seen_at_first_withheld: int | None
    stopped: str = ""
    documents: set[tuple[str, str]] = field(default_factory=set, repr=False)


def anchor_mutation_attack(
    retrieve: Callable[[str], tuple[Sequence[Any], int]],
    *,
    max_queries: int = 2000,
    patience: int = 150,
    seed: int = 0,
) -> AttackResult:
    """Run the attack: ``retrieve(query)`` returns (hits shown, hits withheld) for the attacker.

    Stops after ``max_queries``, or after ``patience`` queries in a row showed nothing new.
    """
    rng = np.random.default_rng(seed)
    anchors = anchor_words(seed=seed)
    frontier: list[str] = []  # texts of returned documents not mutated yet
    seen: set[tuple[str, str]] = set()
    per_source: dict[str, int] = {}
    curve: list[int] = []
    withheld_total = 0
    first_withheld: int | None = None
    seen_then: int | None = None
    dry = 0
    stopped = "max_queries"
    for q in range(1, max_queries + 1):
        if frontier:
            text = frontier.pop(int(rng.integers(len(frontier))))
            words = _WORD.findall(text) or anchors[:3]
            length = int(rng.integers(5, 10))
            start = int(rng.integers(0, max(1, len(words) - length + 1)))
            window = words[start : start + length]
            for _ in range(int(rng.integers(1, 3))):  # the mutation: one or two anchor words in
                window[int(rng.integers(len(window)))] = anchors[int(rng.integers(len(anchors)))]
            query = " ".join(window)
        else:
            query = " ".join(anchors[int(i)] for i in rng.choice(len(anchors), size=3, replace=False))
        hits, withheld = retrieve(query)
        if withheld and first_withheld is None:
            first_withheld, seen_then = q, len(seen)
        withheld_total += withheld
        new = 0
        for hit in hits:
            key = (hit.source, hit.doc_id)
            if key not in seen:
                seen.add(key)
                per_source[hit.source] = per_source.get(hit.source, 0) + 1
                frontier.append(f"{hit.title} {hit.text}")
                new += 1
        curve.append(len(seen))
        dry = 0 if new else dry + 1
        if dry >= patience:
            stopped = f"nothing new in {patience} queries"
            break
    return AttackResult(
        len(curve), per_source, curve, withheld_total, first_withheld, seen_then, stopped, seen
    )


@dataclass
class BenignUser:
    """One simulated user: the questions asked within one window, in order."""

    home: str
    queries: list[str]


def benign_users(
    questions: Mapping[str, Sequence[str]],
    count: int,
    *,
    median_queries: float = 8.0,
    sigma: float = 1.0,
    max_queries: int = 200,
    home_share: float = 0.8,
    reformulate: float = 0.3,
    seed: int = 0,
) -> list[BenignUser]:
    """``count`` users over ``questions`` (collection -> its questions); see the module docstring."""
    rng = np.random.default_rng(seed)
    names = sorted(questions)
    weights = np.array([len(questions[n]) for n in names], dtype=np.float64)
    weights /= weights.sum()
    everything = [q for n in names for q in questions[n]]
    users = []
    for _ in range(count):
        home = names[int(rng.choice(len(names), p=weights))]
        n = int(min(max_queries, max(1, round(rng.lognormal(np.log(median_queries), sigma)))))
        asked = []
        for _ in range(n):
            pool = questions[home] if rng.random() < home_share else everything
            text = pool[int(rng.integers(len(pool)))]
            words = text.split()
            if rng.random() < reformulate and len(words) > 3:
                del words[int(rng.integers(len(words)))]
                text = " ".join(words)
            asked.append(text)
        users.append(BenignUser(home, asked))
    return users
