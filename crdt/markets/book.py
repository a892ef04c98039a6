"""What the ledger's order books look like from outside: resting orders, fills, a book's sides.

The books themselves live in the ledger (`crdt.ledger.Ledger`), one pair of
`sortedcontainers.SortedDict` per market, keyed ``(price key, placement)`` to the order id, so
their iteration order is a function of their keys only and the undo journal restores it exactly.
A bid's price key is ``-price`` (best first is ascending), an ask's ``price``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from sortedcontainers import SortedDict

from crdt.types import Address, OpId

BUY, SELL = "buy", "sell"
SIDES = (BUY, SELL)
LIMIT, MARKET = "limit", "market"
ORDER_TYPES = (LIMIT, MARKET)
GTC, IOC, POST_ONLY = "gtc", "ioc", "post_only"
TIFS = (GTC, IOC, POST_ONLY)


class RestingOrder(NamedTuple):
    """An open order. ``hold`` is what it still holds: quote e9 for a buy, base e9 for a sell.
    ``placed`` is its placement sequence number, the time of price-time priority.

    This and `Fill` are named tuples, not frozen dataclasses as the other values are: the
    ledger makes one at every fill, and a frozen dataclass's constructor (one
    ``object.__setattr__`` a field) cost 12% of matching in benchmarks/book.py's profile."""

    order_id: OpId
    owner: Address
    market: str
    side: str
    price: int
    remaining: int
    placed: int
    hold: int


class Fill(NamedTuple):
    """One match: `qty` base at the maker's `price`; the fees are in the quote token (a named
    tuple, as `RestingOrder` says why)."""

    taker_order: OpId
    maker_order: OpId
    taker: Address
    maker: Address
    market: str
    price: int
    qty: int
    taker_fee: int
    maker_fee: int

    @property
    def fill_id(self) -> bytes:
        """A taker meets a maker at most once (one of the two leaves the match whole), so the
        pair of order ids names a fill."""
        return self.taker_order + self.maker_order


@dataclass(frozen=True, slots=True)
class FillRecord:
    """A fill as a replica reports it: `final` once the operation that made it is certified."""

    fill: Fill
    final: bool


@dataclass(frozen=True, slots=True)
class FillChanges:
    """What happened to the fills since the last report: a tentative fill can change (another
    price, quantity or fee, or become final) or vanish when a late operation sorts before it."""

    appeared: tuple[FillRecord, ...] = ()
    changed: tuple[FillRecord, ...] = ()
    vanished: tuple[FillRecord, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.appeared or self.changed or self.vanished)


# Why an order is no longer open (`Ledger.closed`), besides being rejected by replay.
FILLED = "filled"  # nothing remains
CANCELLED = "cancelled"  # by order.cancel or order.cancel_all
EXPIRED = "expired"  # its `expires` passed at a checkpoint
SELF_TRADE = "self_trade"  # removed when an order of its own author crossed it
UNFUNDED = "unfunded"  # it could not pay a fill (a maker removed, a taker stopped) or its hold
DONE = "done"  # an IOC or market order's remainder, cancelled once it had matched
UNDERCOLLATERALIZED = "undercollateralized"  # a perp fill would have left it below initial margin
REDUCE_ONLY = "reduce_only"  # a resting reduce-only order met when it could no longer reduce
TAKE_BOUND = "take_bound"  # a perp remainder the take bound stopped, which would rest crossing the book
CLOSED_REASONS = (FILLED, CANCELLED, EXPIRED, SELF_TRADE, UNFUNDED, DONE, UNDERCOLLATERALIZED, REDUCE_ONLY,
                  TAKE_BOUND)
OPEN = "open"


@dataclass(frozen=True, slots=True)
class OrderInfo:
    """Everything about one order.place: what it asked, what is left, why it is no longer open
    (`status` is ``open``, one of `CLOSED_REASONS`, ``rejected:<reason>`` or ``pending``) and
    its fills. `final` once the order.place is certified and its status can no longer change."""

    order_id: OpId
    owner: Address
    market: str
    side: str
    type: str
    tif: str
    price: int
    qty: int
    reduce_only: bool
    expires: int
    remaining: int
    filled: int
    status: str
    final: bool
    fills: tuple[FillRecord, ...]


def price_key(side: str, price: int) -> int:
    """The key that sorts a side best first: bids by price descending, asks ascending."""
    return -price if side == BUY else price


class Book:
    """A live, read-only view of one market's book in a ledger."""

    def __init__(
        self,
        market: str,
        bids: SortedDict[tuple[int, int], OpId],
        asks: SortedDict[tuple[int, int], OpId],
        orders: Mapping[OpId, RestingOrder],
    ) -> None:
        self.market = market
        self._bids = bids
        self._asks = asks
        self._orders = orders

    def bids(self) -> list[RestingOrder]:
        """Best first: price descending, then placement ascending."""
        return [self._orders[order_id] for order_id in self._bids.values()]

    def asks(self) -> list[RestingOrder]:
        """Best first: price ascending, then placement ascending."""
        return [self._orders[order_id] for order_id in self._asks.values()]

    def side(self, side: str) -> Iterator[RestingOrder]:
        """One side (`BUY` or `SELL`) best first, lazily: a reader that stops early (the first
        levels of a deep book) pays only for what it read."""
        ids = self._bids if side == BUY else self._asks
        return (self._orders[order_id] for order_id in ids.values())

    def best_bid(self) -> RestingOrder | None:
        return self._orders[self._bids.peekitem(0)[1]] if self._bids else None

    def best_ask(self) -> RestingOrder | None:
        return self._orders[self._asks.peekitem(0)[1]] if self._asks else None

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)
