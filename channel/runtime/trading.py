"""The JSON shapes of trading: markets, books, orders and fills, in one place.

The node's trading reads (`Node.markets`, `Node.order_book`, `Node.order`, ...) return these
shapes, the JSON-RPC methods send them as they are, and the WebSocket streams of books, trades,
orders and fills are to send the same ones, so a client parses one shape per thing whichever
way it came. Every function is pure: values of the replica in, fresh JSON-ready values out.

- Every e9 integer (price, quantity, fee, size, rate) is a decimal string: JSON numbers lose
  precision above 2**53. Ids and addresses are 0x-prefixed hex.
- A fill is named by ``fill_id`` = taker order id ‖ maker order id (a taker meets a maker at
  most once). ``side`` is the taker's side in the public view; `own_fill_json` gives the side
  and liquidity from one account's point of view. A fill is ``final`` once the order.place
  that made it is certified; until then a late operation can change or remove it.
- A book's sides are best first; level 2 aggregates the open orders of a price into one
  ``[price, qty]`` level, level 3 lists each order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from crdt.markets.book import BUY, SELL, Fill, FillRecord, OrderInfo, RestingOrder
from crdt.markets.config import PERP_FIELDS, Market, notional
from crdt.replica import Replica
from crdt.types import Address

MAX_DEPTH = 1000  # price levels a book read returns at most
MAX_LIMIT = 1000  # fills a trades read returns at most
LEVELS = (2, 3)


def hex0x(data: bytes) -> str:
    return "0x" + data.hex()


def decimals_of(step: int) -> int:
    """How many decimal places a multiple of `step` (e9) needs in whole units: 0.01 -> 2."""
    places = 9
    while places and step % 10 == 0:
        step //= 10
        places -= 1
    return places


def market_json(market: Market) -> dict[str, Any]:
    """A market's configuration; ``price_decimals`` and ``qty_decimals`` are the decimal places
    its tick and step sizes need, for showing prices and quantities in whole units."""
    return {
        "symbol": market.symbol,
        "kind": str(market.kind),
        "base": market.base,
        "quote": market.quote,
        **{name: str(getattr(market, name)) for name in (
            "tick_size", "step_size", "min_qty", "max_qty", "min_price", "max_price", "maker_fee", "taker_fee",
        )},
        "price_decimals": decimals_of(market.tick_size),
        "qty_decimals": decimals_of(market.step_size),
        **({"perp": {
            name: [str(cap) for cap in value] if isinstance(value, tuple) else str(value)
            for name, value in ((n, getattr(market.perp, n)) for n in PERP_FIELDS)
        }} if market.perp is not None else {}),
    }


def fill_json(record: FillRecord, taker_side: str) -> dict[str, Any]:
    """A fill as the market's public trades show it; `taker_side` is its taker order's side."""
    fill = record.fill
    return {
        "fill_id": hex0x(fill.fill_id),
        "market": fill.market,
        "price": str(fill.price),
        "qty": str(fill.qty),
        "notional": str(notional(fill.price, fill.qty)),
        "side": taker_side,
        "taker_order": hex0x(fill.taker_order),
        "maker_order": hex0x(fill.maker_order),
        "taker": hex0x(fill.taker),
        "maker": hex0x(fill.maker),
        "taker_fee": str(fill.taker_fee),
        "maker_fee": str(fill.maker_fee),
        "final": record.final,
    }


def own_fill_json(record: FillRecord, taker_side: str, account: Address) -> dict[str, Any]:
    """A fill of `account` (its taker or its maker: never both) from its point of view: its
    ``side``, its ``liquidity`` (taker or maker), its ``order`` and the ``fee`` it paid."""
    fill = record.fill
    taker = fill.taker == account
    return {
        **fill_json(record, taker_side),
        "side": taker_side if taker else opposite(taker_side),
        "liquidity": "taker" if taker else "maker",
        "order": hex0x(fill.taker_order if taker else fill.maker_order),
        "fee": str(fill.taker_fee if taker else fill.maker_fee),
    }


def taker_side(replica: Replica, fill: Fill) -> str:
    """The side of the order.place that made a fill (it was applied, so it is in the graph)."""
    op = replica.graph.get(fill.taker_order)
    side: str = op.body["side"] if op is not None else ""
    return side


def involves(fill: Fill, account: Address) -> bool:
    return account in (fill.taker, fill.maker)


def opposite(side: str) -> str:
    return SELL if side == BUY else BUY


def resting_json(order: RestingOrder, me: Address) -> dict[str, Any]:
    """An open order as a book's level 3 and the open orders list show it."""
    return {
        "order_id": hex0x(order.order_id),
        "owner": hex0x(order.owner),
        "market": order.market,
        "side": order.side,
        "price": str(order.price),
        "remaining": str(order.remaining),
        "placed": order.placed,
        "mine": order.owner == me,
    }


def order_json(info: OrderInfo, taker_sides: Sequence[str]) -> dict[str, Any]:
    """Everything about one order.place; `taker_sides` are its fills' taker sides, in order.
    ``status`` is open, one of `crdt.markets.book.CLOSED_REASONS` (filled, cancelled, expired,
    self_trade, unfunded, done: an ioc or market remainder cancelled; and in a perp market
    undercollateralized, reduce_only, take_bound, delisted), rejected:<reason> or pending;
    ``final`` once it cannot change."""
    return {
        "order_id": hex0x(info.order_id),
        "owner": hex0x(info.owner),
        "market": info.market,
        "side": info.side,
        "type": info.type,
        "tif": info.tif,
        "price": str(info.price),
        "qty": str(info.qty),
        "reduce_only": info.reduce_only,
        "expires": str(info.expires),
        "remaining": str(info.remaining),
        "filled": str(info.filled),
        "status": info.status,
        "final": info.final,
        "fills": [
            own_fill_json(record, side, info.owner) for record, side in zip(info.fills, taker_sides, strict=True)
        ],
    }


Level = tuple[int, int]  # price, qty (e9)


def level_pairs(orders: Iterable[RestingOrder], depth: int | None = None) -> tuple[Level, ...]:
    """Level 2 of one side (best first) in e9: ``(price, qty)`` per price, the first `depth`
    prices (all if None), reading no further into `orders` than it needs."""
    found: list[list[int]] = []
    for order in orders:
        if found and found[-1][0] == order.price:
            found[-1][1] += order.remaining
        elif len(found) == depth:
            break
        else:
            found.append([order.price, order.remaining])
    return tuple((price, qty) for price, qty in found)


def level_json(pairs: Iterable[Level]) -> list[list[str]]:
    return [[str(price), str(qty)] for price, qty in pairs]


def levels(orders: Iterable[RestingOrder], depth: int) -> list[list[str]]:
    """Level 2 of one side (best first): ``[price, qty]`` per price, the first `depth` prices."""
    return level_json(level_pairs(orders, depth))


def level3(orders: Iterable[RestingOrder], depth: int, me: Address) -> list[dict[str, Any]]:
    """Level 3 of one side (best first): each order of the first `depth` prices."""
    found: list[dict[str, Any]] = []
    prices = 0
    last: int | None = None
    for order in orders:
        if order.price != last:
            if prices == depth:
                break
            prices, last = prices + 1, order.price
        found.append(resting_json(order, me))
    return found


def book_json(
    market: str, bids: Sequence[RestingOrder], asks: Sequence[RestingOrder], *, depth: int, level: int,
    me: Address, version: int,
) -> dict[str, Any]:
    """One market's book (sides best first) at checkpoint `version` plus the tentative suffix."""
    best_bid = str(bids[0].price) if bids else None
    best_ask = str(asks[0].price) if asks else None
    if level == 2:
        sides: dict[str, Any] = {"bids": levels(bids, depth), "asks": levels(asks, depth)}
    else:
        sides = {"bids": level3(bids, depth, me), "asks": level3(asks, depth, me)}
    return {"market": market, "level": level, "version": version, "best_bid": best_bid, "best_ask": best_ask,
            **sides}


def sweep_price(orders: Iterable[RestingOrder], qty: int) -> int | None:
    """The worst price among the resting orders (best first) that a taker of `qty` would meet:
    the price of a market order that takes the book as it stands and nothing worse (the whole
    side if it holds less). None when the side is empty."""
    price = None
    for order in orders:
        price = order.price
        qty -= order.remaining
        if qty <= 0:
            break
    return price

