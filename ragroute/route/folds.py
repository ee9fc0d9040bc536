"""Cross-validation folds for labelled queries: stratified by label, grouped by text.

Labelled query sets can hold the same text more than once, even under different
labels (in the Glasgow collections every ADI query is also a CISI query). If two
copies land in different folds, each is routed by a model fitted on the other:
a held-out score that no longer measures unseen queries. Folds here keep
identical texts (case, spacing and Unicode form ignored) together and spread every label's
queries evenly over the folds.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

from ragroute.errors import RagrouteError, check_k


def normalized_text(text: str) -> str:
    """The form under which two query texts count as the same: NFKC, case-folded, single spaces
    (until session 45 only lower case and spaces: "café" composed and decomposed were two texts,
    and could land in two folds)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


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
    folds = check_k(folds, "folds")  # a string was a TypeError from the comparison (until session 51)
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


def grouped_holdout(
    texts: Sequence[str], labels: Sequence[str], fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, held_out)``: about ``fraction`` of every label held out, identical texts
    on one side only.

    Every label with at least two queries keeps at least one in training and, when
    ``fraction > 0``, puts at least one aside (as far as whole groups of identical texts allow).
    """
    if len(texts) != len(labels):
        raise RagrouteError(f"{len(texts)} texts but {len(labels)} labels")
    labels = [str(label) for label in labels]
    size: dict[str, int] = {}
    for label in labels:
        size[label] = size.get(label, 0) + 1
    wanted = {
        label: (max(1, round(fraction * n)) if fraction > 0 and n >= 2 else 0) for label, n in size.items()
    }
    groups = text_groups(texts)
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    held: dict[str, int] = dict.fromkeys(size, 0)
    aside: list[int] = []
    for members in groups:
        counts: dict[str, int] = {}
        for i in members:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        fits = all(held[label] + n <= min(wanted[label], size[label] - 1) for label, n in counts.items())
        if fits:
            aside.extend(members)
            for label, n in counts.items():
                held[label] += n
    held_out = np.sort(np.asarray(aside, dtype=np.int64))
    return np.setdiff1d(np.arange(len(texts)), held_out), held_out
