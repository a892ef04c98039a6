"""Oracle prices of the perpetual markets (TRADING.md "Perpetuals"; issue 13).

Each oracle's latest ``oracle.price`` per market is kept with the checkpoint time it was
applied at (`OraclePost`). `close_epoch` fixes a market's price for the epoch as the median of
the fresh posts (posted in the epoch it closes, or at a checkpoint time ``t`` with
``t + oracle_staleness >= time``):
integers only, and with an even count the *lower* median (the smaller of the two middle
values), so no average is rounded. With n = 2f + 1 posts and at most f of them lies, the
median is between the smallest and the largest honest price: at least f + 1 values are at or
above it and f + 1 at or below it, so each side holds an honest one. So a price is fixed only
from at least `oracle_quorum` fresh posts: 2f + 1 with f = (m - 1) // 2 the liars that m
oracles tolerate (all of them for an odd m, all but one for an even m). With fewer, one liar
could set the price alone: the simulator found a single lying oracle of three fixing ten times
the price at the first checkpoint, before the honest posts were in
(`tests/simulations/sim/test_safety_property.py`). A market without a quorum of fresh posts
keeps its previous price and the time it was fixed, so `is_fresh` turns false once
``oracle_staleness`` has passed: opening risk then stops.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class OraclePost(NamedTuple):
    """One oracle's latest price of a market (e9 quote per whole base), and the checkpoint time
    at which it was applied."""

    price: int
    posted: int


class MarkPrice(NamedTuple):
    """A market's price for the epoch, and the checkpoint time that fixed it."""

    price: int
    fixed: int


def lower_median(prices: Iterable[int]) -> int:
    """The median of a non-empty collection of integers; with an even count the lower one."""
    ordered = sorted(prices)
    if not ordered:
        raise ValueError("no prices")
    return ordered[(len(ordered) - 1) // 2]


def oracle_quorum(oracles: int) -> int:
    """The fresh posts a price needs with `oracles` oracles in the genesis: 2f + 1, where
    f = (oracles - 1) // 2 liars cannot move the median outside the honest prices."""
    return 2 * ((oracles - 1) // 2) + 1 if oracles > 0 else 1


def fresh_prices(posts: Iterable[OraclePost], time: int, staleness: int, since: int) -> list[int]:
    """The prices of the posts still fresh at checkpoint time `time`: posted in the epoch this
    checkpoint closes (applied at the previous checkpoint's time `since`, or later), or within
    `staleness` of `time`. A post's own time is the checkpoint time it was applied at, which
    lags the truth by up to an epoch: before the first checkpoint it is 0, and a node's first
    checkpoint is at wall-clock time, so without the first rule no price could ever be fixed."""
    return [post.price for post in posts if post.posted >= since or post.posted + staleness >= time]


def is_fresh(mark: MarkPrice | None, time: int, staleness: int) -> bool:
    """Whether a market's price still lets anyone open risk at checkpoint time `time`."""
    return mark is not None and mark.fixed + staleness >= time
