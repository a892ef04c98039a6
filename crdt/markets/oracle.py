"""Oracle prices of the perpetual markets (TRADING.md "Perpetuals"; issue 13).

Each oracle's latest ``oracle.price`` per market is kept with the checkpoint time it was
applied at (`OraclePost`). `close_epoch` fixes a market's price for the epoch as the median of
the fresh posts (posted at a checkpoint time ``t`` with ``t + oracle_staleness >= time``):
integers only, and with an even count the *lower* median (the smaller of the two middle
values), so no average is rounded. With n = 2f + 1 posts and at most f of them lies, the
median is between the smallest and the largest honest price: at least f + 1 values are at or
above it and f + 1 at or below it, so each side holds an honest one. A market with no fresh
post keeps its previous price and the time it was fixed, so `is_fresh` turns false once
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


def fresh_prices(posts: Iterable[OraclePost], time: int, staleness: int) -> list[int]:
    """The prices of the posts still fresh at checkpoint time `time`."""
    return [post.price for post in posts if post.posted + staleness >= time]


def is_fresh(mark: MarkPrice | None, time: int, staleness: int) -> bool:
    """Whether a market's price still lets anyone open risk at checkpoint time `time`."""
    return mark is not None and mark.fixed + staleness >= time
