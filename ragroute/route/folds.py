"""Cross-validation folds for labelled queries: stratified by label, grouped by text.

Labelled query sets can hold the same text more than once, even under different
labels (in the Glasgow collections every ADI query is also a CISI query). If two
copies land in different folds, each is routed by a model fitted on the other:
a held-out score that no longer measures unseen queries. Folds here keep
identical texts (case and spacing ignored) together and spread every label's
queries evenly over the folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragroute.errors import RagrouteError


def normalized_text(text: str) -> str:
    """The form under which two query texts count as the same: lower case, single spaces."""
    return " ".join(text.lower().split())


def text_groups(texts: Sequence[str]) -> list[list[int]]:
    """Positions of identical texts (see :func:`normalized_text`), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(normalized_text(text), []).append(i)
    return list(groups.values())


def grouped_stratified_folds(
    texts: Sequence[str], labels: Sequence[str], folds: int, seed: int = 0
) -> np.ndarray:
    """A fold number per query: identical texts share a fold; each label is spread evenly.

    Groups are placed largest first (ties in a seeded random order), each into the
    fold that holds the fewest queries of the group's labels so far.
    """
    if folds < 2:
        raise RagrouteError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(texts) != len(labels):
        raise RagrouteError(f"{len(texts)} texts but {len(labels)} labels")
    order = text_groups(texts)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    order.sort(key=len, reverse=True)  # stable: larger groups first, shuffled within a size
    load: dict[tuple[str, int], int] = {}  # (label, fold) -> queries placed so far
    fold_of = np.zeros(len(texts), dtype=np.int64)
    for members in order:
        member_labels = [str(labels[i]) for i in members]
        fold = min(range(folds), key=lambda f: (sum(load.get((lab, f), 0) for lab in member_labels), f))
        fold_of[members] = fold
        for lab in member_labels:
            load[(lab, fold)] = load.get((lab, fold), 0) + 1
    return fold_of
