"""The network's own draws repeat `random.Random`'s exactly (simulations/sim/network.py)."""

from __future__ import annotations

import random

import pytest

from simulations.sim.network import uniform_us


@pytest.mark.parametrize(("low", "high"), [(0, 0), (5, 5), (1, 2), (5_000, 50_000), (0, 2**20), (7, 2**40 + 3)])
def test_uniform_us_is_randint(low: int, high: int) -> None:
    ours, theirs = random.Random(f"{low}:{high}"), random.Random(f"{low}:{high}")
    for _ in range(2000):
        assert uniform_us(ours, low, high) == theirs.randint(low, high)
    assert ours.getstate() == theirs.getstate()  # and the generator is left in the same state


def test_uniform_us_refuses_an_empty_range() -> None:
    with pytest.raises(ValueError, match="empty range"):
        uniform_us(random.Random(0), 2, 1)
