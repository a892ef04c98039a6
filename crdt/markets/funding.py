"""Funding of the perpetual markets (TRADING.md "Perpetuals"; issue 13), integers only.

At every checkpoint each perp market with an oracle price takes one *premium sample* from its
book: the impact bid and ask (the average price of selling into the bids, or buying from the
asks, `impact_notional` of quote) against the oracle price ``P``,
``(max(0, bid - P) - max(0, P - ask)) · 1e9 / P`` (an e9 fraction, rounded toward zero; a side
without that depth adds nothing). When a checkpoint's time crosses a
`funding_interval` boundary, the rate is the average sample clamped to ``±max_funding_rate``
(Parley has no interest-rate term and no dampener: ``F = clamp(P̄, ±max)``), prorated by the
checkpoint time since the last funding (an idle channel makes no checkpoints, and pays for the
time that passed), and the market's cumulative index grows by ``F · P / 1e9`` (quote e9 per whole
base, rounded toward zero).

A position records the index it last settled at. It owes ``(index - its index) · size / 1e9``
(positive: it pays; longs pay a positive rate), settled whenever the position is touched (a
fill) and counted in its account value and payout until then. A payer pays rounded up, a
receiver is paid rounded down, through the market's funding pool: once every position has
settled, the pool holds the rounding dust, never less than zero, so funding never pays out
more than it took in. Nothing here is O(positions): a checkpoint updates one index per market.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from crdt.markets.config import E9


class FundingState(NamedTuple):
    """A market's funding: its `cumulative` index (quote e9 per whole base), the premium samples
    of the current interval (`premium_sum`, `samples`), the checkpoint time of the last funding
    (`since`), and the last `rate` applied (an e9 fraction, prorated)."""

    cumulative: int
    premium_sum: int
    samples: int
    since: int
    rate: int


def _toward_zero(numerator: int, denominator: int) -> int:
    quotient = abs(numerator) // denominator
    return quotient if numerator >= 0 else -quotient


def impact_price(levels: Iterable[tuple[int, int]], target: int) -> int | None:
    """The average price (e9, rounded down) of taking `target` quote e9 from `levels` ((price,
    qty) best first), or None if they do not hold that much."""
    spent = taken = 0
    for price, qty in levels:
        value = price * qty // E9
        if spent + value >= target:
            part = (target - spent) * E9 // price
            spent, taken = target, taken + part
            return spent * E9 // taken if taken else price
        spent, taken = spent + value, taken + qty
    return None


def premium(impact_bid: int | None, impact_ask: int | None, mark: int) -> int:
    """One premium sample (e9 fraction) of the impact prices against the oracle price (a side
    without the depth adds nothing)."""
    if mark <= 0:
        return 0
    above = max(0, impact_bid - mark) if impact_bid is not None else 0
    below = max(0, mark - impact_ask) if impact_ask is not None else 0
    return _toward_zero((above - below) * E9, mark)


def funding_rate(premium_sum: int, samples: int, max_rate: int) -> int:
    """The interval's rate: the average sample (toward zero) clamped to ``±max_rate``."""
    if not samples:
        return 0
    average = _toward_zero(premium_sum, samples)
    return max(-max_rate, min(max_rate, average))


def prorate(rate: int, elapsed: int, interval: int) -> int:
    """`rate` for `elapsed` ms of checkpoint time out of an `interval` (toward zero)."""
    return _toward_zero(rate * elapsed, interval)


def index_step(rate: int, mark: int) -> int:
    """What one whole base unit pays at `rate` (quote e9; positive: longs pay)."""
    return _toward_zero(rate * mark, E9)


def payment(size: int, settled_at: int, index: int) -> int:
    """What a position of `size` (signed e9 base) that settled at index `settled_at` owes now:
    positive it pays (rounded up), negative it is paid (rounded down in magnitude)."""
    owed = (index - settled_at) * size
    if owed >= 0:
        return -(-owed // E9)
    return -((-owed) // E9)
