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
    PERP = "perp"  # not yet: a genesis with a perp market is refused


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


MARKET_FIELDS = tuple(Market.__dataclass_fields__)  # the genesis TOML keys of a [[markets]] entry


def notional(price: int, qty: int) -> int:
    """What `qty` base costs at `price`, in quote e9, rounded down."""
    return price * qty // E9


def fee(amount: int, rate: int) -> int:
    """The fee on a notional `amount` at the e9 fraction `rate`, rounded up."""
    return -(-amount * rate // E9)
