"""The offset pass's proof of distinct job ids: a wrong count would let duplicates skip the merge's dedup."""

from __future__ import annotations

import random
from array import array

import pytest
from avepoint_dynamics.paging import distinct_count


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(5))
def test_distinct_count_equals_a_set_of_the_same_ids(seed: int) -> None:
    rng = random.Random(seed)
    ids = [rng.getrandbits(64) - 2**63 for _ in range(rng.randint(0, 50_000))]
    ids += rng.sample(ids, k=min(len(ids), rng.randint(0, 30)))  # a few jobs served twice
    rng.shuffle(ids)
    assert distinct_count(array("q", ids)) == len(set(ids))


@pytest.mark.unit
@pytest.mark.parametrize(
    "ids",
    [[], [7], [7, 7], [-(2**63), 2**63 - 1, -(2**63)], [3, 1, 2, 1, 3, 3]],
)
def test_distinct_count_at_the_edges(ids: list[int]) -> None:
    assert distinct_count(array("q", ids)) == len(set(ids))
