"""The shared fine-tuning loop's batching (:func:`ragroute.training.shuffled_batches`)."""

from __future__ import annotations

import random

import pytest

from ragroute.training import LENGTH_POOL, shuffled_batches


def _padded(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 16 * LENGTH_POOL + 5, 3 * 16 * LENGTH_POOL])
def test_length_batches_hold_every_item_once_in_as_many_steps_as_random_ones(n):
    rng = random.Random(n)
    lengths = [rng.choice([8, 12, 20, 30, 120]) for _ in range(n)]
    plain = shuffled_batches(n, 16, seed=3)
    by_length = shuffled_batches(n, 16, seed=3, lengths=lengths)
    assert sorted(i for batch in by_length for i in batch) == list(range(n))
    assert len(by_length) == len(plain) == -(-n // 16)  # the loop's step count stays right
    assert by_length == shuffled_batches(n, 16, seed=3, lengths=lengths)  # seeded
    assert by_length != shuffled_batches(n, 16, seed=4, lengths=lengths) or n <= 16
    if n > 16 * 4:
        assert _padded(by_length, lengths) < 0.7 * _padded(plain, lengths)


def test_length_batches_are_cut_from_sorted_pools_and_come_in_shuffled_order():
    lengths = list(range(16 * LENGTH_POOL * 2))  # two pools
    batches = shuffled_batches(len(lengths), 16, seed=0, lengths=lengths)
    for batch in batches:  # a batch is a run of its pool's length order
        assert batch == sorted(batch) and max(batch) - min(batch) < 16 * LENGTH_POOL
    firsts = [min(batch) for batch in batches]
    assert firsts != sorted(firsts)  # not served shortest first
    with pytest.raises(ValueError, match="3 lengths for 4 items"):
        shuffled_batches(4, 2, seed=0, lengths=[1, 2, 3])
