"""A market-making bot written on plain ccxt calls (`parley bot maker`): the example of a ccxt
strategy running unchanged on a node.

It quotes a ladder of `levels` post-only bids and asks, `spread` apart, around the book's mid
(or a fixed one), and re-quotes the whole ladder when one of its quotes is gone (filled, or
removed by the node). Inventory limits: once it holds `max_inventory` more base than at the
start it stops bidding, and once it holds that much less it stops asking. A `NetworkError`
(its node restarting) is waited out; on the next cycle it reconciles against the node's open
orders: quotes still resting are kept, and only a missing one makes it re-quote. `stop`
cancels every open order of the market.

On a perpetual swap (``ETH/USDC:USDC``) the inventory is the position (contracts, long positive,
from ``fetch_positions``) rather than the base balance, and without a book on both sides it
quotes around the oracle's price (the ticker's ``markPrice``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import ccxt


@dataclass
class MakerBot:
    exchange: Any  # a ccxt exchange (here channel.api.ccxt's parley)
    symbol: str
    spread: float  # quote units between the mid and the first level, and between levels
    size: float  # base units per quote
    levels: int
    mid: float | None = None  # a fixed mid; else the book's
    max_inventory: float | None = None  # base units away from the start
    quotes: dict[str, tuple[str, float]] = field(default_factory=dict)  # order id: side, price
    start_base: float | None = None
    requotes: int = 0

    def holding(self) -> float:
        """What the inventory limit measures: the base balance, or on a swap the signed position."""
        market = self.exchange.market(self.symbol)
        if market.get("swap"):
            positions = self.exchange.fetch_positions([market["symbol"]])
            return sum(float(p["contracts"]) * (1 if p["side"] == "long" else -1) for p in positions)
        return float(self.exchange.fetch_balance()[market["base"]]["total"])

    def inventory(self) -> float:
        total = self.holding()
        if self.start_base is None:
            self.start_base = total
        return total - self.start_base

    def book_mid(self) -> float | None:
        if self.mid is not None:
            return self.mid
        book = self.exchange.fetch_order_book(self.symbol, 1)
        if not book["bids"] or not book["asks"]:
            if self.exchange.market(self.symbol).get("swap"):
                oracle = self.exchange.fetch_ticker(self.symbol).get("markPrice")
                return None if oracle is None else float(oracle)
            return None
        return float(book["bids"][0][0] + book["asks"][0][0]) / 2

    def ladder(self, mid: float, inventory: float) -> list[tuple[str, float]]:
        limit = self.max_inventory
        sides = [side for side, allowed in (("buy", limit is None or inventory < limit),
                                            ("sell", limit is None or inventory > -limit)) if allowed]
        return [(side, mid - level * self.spread if side == "buy" else mid + level * self.spread)
                for level in range(1, self.levels + 1) for side in sides]

    def step(self) -> bool:
        """One cycle; True if it (re)quoted. Quotes that are all still resting are left alone."""
        self.exchange.load_markets()
        resting = {order["id"] for order in self.exchange.fetch_open_orders(self.symbol)}
        if self.quotes and set(self.quotes) <= resting:
            return False
        self.exchange.cancel_all_orders(self.symbol)
        self.quotes.clear()
        mid = self.book_mid()
        if mid is None:
            return False
        for side, price in self.ladder(mid, self.inventory()):
            try:
                order = self.exchange.create_order(self.symbol, "limit", side, self.size, price, {"postOnly": True})
            except (ccxt.InvalidOrder, ccxt.InsufficientFunds):
                continue  # crossing the book, or out of funds: that level waits for the next cycle
            self.quotes[order["id"]] = (side, order["price"])
        self.requotes += 1
        return True

    def run(self, keep_going: Callable[[], bool], interval: float = 1.0) -> None:
        """Cycle every `interval` s while `keep_going()`, then cancel the quotes."""
        try:
            while keep_going():
                with suppress(ccxt.NetworkError):  # the node is restarting: reconcile on the next cycle
                    self.step()
                time.sleep(interval)
        finally:
            self.stop()

    def stop(self) -> None:
        with suppress(ccxt.NetworkError):  # the node is down: its orders stay; the next start reconciles
            self.exchange.cancel_all_orders(self.symbol)
        self.quotes.clear()
