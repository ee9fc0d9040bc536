"""Cross-validation folds: stratified by label, identical texts kept together."""

from __future__ import annotations

import numpy as np
import pytest

from ragroute.errors import RagrouteError
from ragroute.route.folds import grouped_holdout, grouped_stratified_folds, normalized_text, text_groups


def test_folds_keep_identical_texts_together():
    shared = [f"shared question {i}" for i in range(4)]
    texts = shared + [t.upper() + "  " for t in shared] + [f"own question {i}" for i in range(12)]
    labels = ["x"] * 4 + ["y"] * 4 + ["x"] * 6 + ["y"] * 6
    folds = grouped_stratified_folds(texts, labels, folds=4, seed=3)
    for i in range(4):  # same text up to case and spacing, different labels: same fold
        assert folds[i] == folds[i + 4]
    for label in ("x", "y"):
        per_fold = np.bincount(folds[[i for i, lab in enumerate(labels) if lab == label]], minlength=4)
        assert per_fold.max() - per_fold.min() <= 1  # every source spread evenly over the folds


def test_text_groups_ignore_case_and_spacing():
    assert normalized_text("  What IS\tthis? ") == "what is this?"
    assert text_groups(["a b", "c", "A  b", "c ", "d"]) == [[0, 2], [1, 3], [4]]


def test_folds_are_deterministic_and_checked():
    texts = [f"q{i}" for i in range(20)]
    labels = ["a", "b"] * 10
    first = grouped_stratified_folds(texts, labels, 5, seed=1)
    assert (first == grouped_stratified_folds(texts, labels, 5, seed=1)).all()
    assert sorted(np.bincount(first).tolist()) == [4, 4, 4, 4, 4]
    with pytest.raises(RagrouteError, match="at least 2 folds"):
        grouped_stratified_folds(texts, labels, 1)
    with pytest.raises(RagrouteError, match="20 texts but 2 labels"):
        grouped_stratified_folds(texts, labels[:2], 5)


@pytest.mark.parametrize("folds", ["5", None, 2.5, True])
def test_a_fold_count_that_is_no_whole_number_is_one_line(folds):
    """Until session 51 a string or None was a TypeError from ``folds < 2`` (2.5 and True ran)."""
    from ragroute.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"^folds must be a whole number >= 1, got "):
        grouped_stratified_folds(["a", "b", "c", "d"], ["x", "y", "x", "y"], folds)


def test_holdout_keeps_identical_texts_on_one_side():
    texts = [f"shared {i}" for i in range(6)] * 2 + [f"own {i}" for i in range(20)] + ["lonely"]
    labels = ["a"] * 6 + ["b"] * 6 + ["a"] * 10 + ["b"] * 10 + ["c"]
    train, held = grouped_holdout(texts, labels, 0.25, seed=2)
    assert sorted(train.tolist() + held.tolist()) == list(range(len(texts)))
    held_texts = {texts[i] for i in held}
    assert not held_texts & {texts[i] for i in train}  # no text on both sides
    for label, n in (("a", 16), ("b", 16)):
        aside = sum(labels[i] == label for i in held)
        assert 1 <= aside <= round(0.25 * n)  # about a quarter, never all
    assert "lonely" not in held_texts  # a label seen once stays in training
    assert (grouped_holdout(texts, labels, 0.25, seed=2)[1] == held).all()
    assert len(grouped_holdout(texts, labels, 0.0)[1]) == 0
