"""A market of the genesis, and the integer arithmetic of trading (TRADING.md).

Every number is an integer in e9 units: a price is e9 quote units per whole base unit, a
quantity is e9 base units, and a fee rate is an e9 fraction (10**9 is 100%).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from crdt.types import Symbol

E9 = 10**9
MAX_MARKET_SYMBOL = 32  # bytes of UTF-8


class MarketKind(enum.StrEnum):
    SPOT = "spot"
    PERP = "perp"  # a perpetual: its parameters are the market's `perp` (positions: issue 13)


@dataclass(frozen=True, slots=True)
class PerpParams:
    """A perpetual market's parameters (TRADING.md "Perpetuals"), e9 fractions unless said.

    ``imr > mmr > 0`` (both below 10**9); ``max_notional_at_open[i]`` is the largest notional
    (quote e9) a position may have at leverage ``i + 1``, never growing as leverage grows
    (a cap per integer leverage up to ``1e9 // imr``); ``max_funding_rate``, ``insurance_pool_ratio``,
    ``circuit_band``, ``mtb_long`` and ``mtb_short`` are fractions in [0, 10**9]
    (``max_funding_rate`` and the take bounds positive); ``funding_interval`` is ms of checkpoint
    time; ``halt_checkpoints`` a count; ``oracle_staleness`` is the checkpoint time (ms) after
    which a market's oracle price no longer lets anyone open risk; ``impact_notional`` (quote e9)
    is the size the funding premium's impact prices are measured at (crdt/markets/funding.py)."""

    imr: int
    mmr: int
    max_notional_at_open: tuple[int, ...]
    max_funding_rate: int
    funding_interval: int
    insurance_pool_ratio: int
    circuit_band: int
    halt_checkpoints: int
    mtb_long: int
    mtb_short: int
    oracle_staleness: int
    impact_notional: int


@dataclass(frozen=True, slots=True)
class Market:
    """One market: `base` is traded for `quote`. Prices are multiples of `tick_size` within
    [`min_price`, `max_price`], quantities multiples of `step_size` within [`min_qty`,
    `max_qty`]; `maker_fee` and `taker_fee` are e9 fractions in [0, 10**9)."""

    symbol: str
    kind: MarketKind
    base: Symbol
    quote: Symbol
    tick_size: int
    step_size: int
    min_qty: int
    max_qty: int
    min_price: int
    max_price: int
    maker_fee: int
    taker_fee: int
    perp: PerpParams | None = None  # exactly for a perp market


# the genesis TOML keys of a [[markets]] entry: a spot market has MARKET_FIELDS, a perp market
# MARKET_FIELDS + PERP_FIELDS (its `perp` flattened into the table)
MARKET_FIELDS = tuple(name for name in Market.__dataclass_fields__ if name != "perp")
PERP_FIELDS = tuple(PerpParams.__dataclass_fields__)


def notional(price: int, qty: int) -> int:
    """What `qty` base costs at `price`, in quote e9, rounded down."""
    return price * qty // E9


def fee(amount: int, rate: int) -> int:
    """The fee on a notional `amount` at the e9 fraction `rate`, rounded up."""
    return -(-amount * rate // E9)
