"""A market's level 2 book kept locally from the node's ``book`` stream.

The stream (`channel.runtime.market_feed`) sends a snapshot with a ``seq``, then one delta per
change of the book, with ``seq`` one more each time; a delta lists the levels that changed
(``[price, qty]``, qty ``"0"`` when the level is gone). `LocalBook.apply` folds them in and
raises `BookGap` when a delta does not follow the last seq it applied: the book it holds would
be wrong from there on, so the caller subscribes again and starts from a new snapshot, which
`follow_book` does by itself (and when the node dropped a subscription that fell behind).

    with Client.for_node("node-data") as client:
        for book in follow_book(client, "ETH/USDC", depth=10):
            print(book.seq, book.best_bid(), book.best_ask())

Under trio, fold the events of ``AsyncClient.subscribe("book", market=...)`` into a
`LocalBook` the same way, and subscribe again on `BookGap`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channel.api.client import BAD_ANSWER, DROPPED, ApiError, Client
from channel.errors import ChannelError

if TYPE_CHECKING:  # a type only: the CLI imports this module, and the trading shapes load the replica
    from channel.runtime.trading import Level


class BookGap(ChannelError):
    """A delta that does not follow the last seq applied (or came before any snapshot)."""


@dataclass(slots=True)
class LocalBook:
    market: str
    depth: int | None = None  # the levels a side holds at most (None: all), as subscribed
    seq: int | None = None  # the last seq applied; None until the snapshot
    _bids: dict[int, int] = field(default_factory=dict)
    _asks: dict[int, int] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event of the stream in: a snapshot replaces the book, a delta changes it."""
        kind, seq = event.get("type"), event.get("seq")
        if event.get("market") != self.market or type(seq) is not int or kind not in ("snapshot", "delta"):
            raise ApiError(BAD_ANSWER, f"not an event of the {self.market} book stream: {str(event)[:200]}")
        if kind == "snapshot":
            self._bids, self._asks = dict(_levels(event, "bids")), dict(_levels(event, "asks"))
        else:
            if self.seq is None or seq != self.seq + 1:
                raise BookGap(f"the {self.market} book stream skipped from seq {self.seq} to {seq}")
            for side, name in ((self._bids, "bids"), (self._asks, "asks")):
                for price, qty in _levels(event, name):
                    if qty:
                        side[price] = qty
                    else:
                        side.pop(price, None)
        self.seq = seq

    def bids(self) -> list[Level]:
        """Best (highest) first."""
        return sorted(self._bids.items(), reverse=True)

    def asks(self) -> list[Level]:
        """Best (lowest) first."""
        return sorted(self._asks.items())

    def best_bid(self) -> Level | None:
        return max(self._bids.items(), default=None)

    def best_ask(self) -> Level | None:
        return min(self._asks.items(), default=None)

    def levels(self) -> dict[str, list[list[str]]]:
        """Both sides in the shape of ``parley_orderBook``'s level 2 (decimal strings)."""
        return {"bids": [[str(p), str(q)] for p, q in self.bids()], "asks": [[str(p), str(q)] for p, q in self.asks()]}


def _levels(event: dict[str, Any], name: str) -> list[Level]:
    try:
        return [(int(price), int(qty)) for price, qty in event[name]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(BAD_ANSWER, f"malformed {name} in a book event: {str(event.get(name))[:200]}") from exc


def follow_book(client: Client, market: str, depth: int | None = None) -> Iterator[LocalBook]:
    """The book after each event of the stream (the same `LocalBook`, updated), subscribing
    again, from a new snapshot, after a gap or when the node dropped the subscription."""
    while True:
        book = LocalBook(market, depth)
        try:
            with closing(client.watch("book", market=market, depth=depth)) as events:
                for event in events:
                    book.apply(event)
                    yield book
        except BookGap:
            continue
        except ApiError as exc:
            if exc.code != DROPPED:
                raise
