"""Live market data for the API's subscriptions: books, trades, fills and orders.

The node calls `MarketFeed.update` from `Node.announce`, which runs after every batch of
operations the replica applied (a gossip batch, a sync reply, the node's own submit) and after
every checkpoint it certified. Topics (`channel.runtime.events`), each published only while
someone subscribes:

- ``book`` (``market``, optional ``depth``): first a snapshot ``{type: "snapshot", market,
  seq, depth, bids, asks}`` (level 2, ``[price, qty]`` best first), then a delta ``{type:
  "delta", market, seq, bids, asks}`` for each change of the market's book, with the levels
  that changed (qty ``"0"``: the level is gone). ``seq`` counts the changes of the levels the
  market's deepest subscriber reads, one by one: every subscriber of the market gets every
  seq, and one with a smaller depth gets the change of its first `depth` levels (possibly none).
- ``trades`` (optional ``market``): each fill that appeared, changed (a late operation moved it,
  or it became final) or vanished, as `channel.runtime.trading.fill_json` with ``event``.
- ``fills`` (optional ``market``): the same for the fills of this node's participant, as
  `channel.runtime.trading.own_fill_json`.
- ``orders`` (optional ``market``): first ``{event: "snapshot", orders}``, the participant's
  open and pending orders oldest first, then each change of the state of one of its orders,
  as `channel.runtime.trading.order_json` with ``event``: ``placed``,
  ``partially_filled``, ``filled``, ``cancelled``, ``expired``, ``self_trade``, ``unfunded``,
  ``done``, ``rejected``, ``changed`` (a tentative fill of it changed or vanished: its status
  and remaining may go back) or ``final`` (only its finality changed).

Invariants, and why they hold:
- a book rebuilt from its snapshot and deltas is the replica's book after every update: the
  feed keeps the level 2 it last published of each market someone watches, and trio runs a
  change of the replica and the update that follows it with no checkpoint between them (the
  node's receive paths and its certify call `announce` synchronously), so at every checkpoint,
  when a subscription can begin, that copy is the replica's book and its seq the last one
  sent. The snapshot is taken from it in the same synchronous step as the subscription opens.
- it costs what changed and what is read: the fill report costs the suffix replay touched
  (`Replica.take_fill_changes`); a book is compared only if the batch named its market or
  filled in it, or if replay re-applied operations or a checkpoint was certified (which can
  change any book: a late transfer funds an order, a checkpoint expires orders), and only to
  the depth of its deepest subscriber, read lazily from the best level (a whole-book
  subscription reads the whole book for each change); an open own order is checked by one
  look-up, and read whole only when that moved.
- nothing already known is news: the fill report is taken once when the node starts, so a
  restart does not announce every fill again, and the own orders are read when the first
  ``orders`` subscriber arrives. An order leaves the table once it is final and closed
  (nothing can change it then), so the table holds the open orders and the recently closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from channel.runtime import trading
from channel.runtime.events import EventHub, Subscriber
from crdt.markets.book import BUY, OPEN, SELL, Fill, FillChanges, OrderInfo, RestingOrder
from crdt.ops import SignedOp
from crdt.replica import Replica
from crdt.types import Address, OpId

ORDER_PLACE, ORDER_CANCEL, ORDER_CANCEL_ALL = "order.place", "order.cancel", "order.cancel_all"
PENDING = "pending"

Levels = tuple[trading.Level, ...]  # (price, qty) per price, best first


@dataclass(frozen=True, slots=True)
class L2:
    bids: Levels
    asks: Levels


def deepest(depths: Iterable[int | None]) -> int | None:
    """The depth that serves every one of `depths` (None: all levels)."""
    found = 0
    for depth in depths:
        if depth is None:
            return None
        found = max(found, depth)
    return found


def side_delta(old: Levels, new: Levels, side: str, depth: int | None = None) -> list[list[str]]:
    """The levels of the first `depth` (all if None) that differ, ``[price, "0"]`` for a level
    gone, best first."""
    before, after = dict(old[:depth]), dict(new[:depth])
    changed = [(price, qty) for price, qty in after.items() if before.get(price) != qty]
    changed += [(price, 0) for price in before if price not in after]
    changed.sort(key=lambda level: -level[0] if side == BUY else level[0])
    return trading.level_json(changed)


Fingerprint = tuple[object, ...]
OrderState = tuple[str, int, tuple[Fill, ...], bool]


def order_state(info: OrderInfo) -> OrderState:
    """What an orders event reports a change of (a fill of someone else's order becoming
    final is the fills stream's news, not a new state of the order)."""
    return info.status, info.remaining, tuple(record.fill for record in info.fills), info.final


def order_event(old: OrderInfo | None, new: OrderInfo) -> str:
    """What happened to an order between two states of it."""
    if old is not None:
        before, now = order_state(old), order_state(new)
        if now[2][: len(before[2])] != before[2]:
            return "changed"  # a fill of it changed or vanished
        if before[:3] == now[:3]:
            return "final"
        if new.status == OPEN:
            return "partially_filled" if new.fills else "placed"
    if new.status == OPEN:
        return "placed"
    if new.status.startswith("rejected:"):
        return "rejected"
    return new.status


class MarketFeed:
    """The market topics of one node's `EventHub`, kept from its replica (see the module)."""

    def __init__(self, replica: Replica, events: EventHub, account: Address) -> None:
        self.replica = replica
        self.events = events
        self.account = account
        self._books: dict[str, L2] = {}  # the markets someone watches: the level 2 last published,
        self._depths: dict[str, int | None] = {}  # to the depth of its deepest subscriber (None: all)
        self._seq: dict[str, int] = {}  # per market: the changes of its book published so far
        # own orders, while "orders" is watched: the state last published, and what tells whether it
        # may have changed (an open order's `RestingOrder`, a closed one's fingerprint)
        self._orders: dict[OpId, OrderInfo] | None = None
        self._resting: dict[OpId, RestingOrder] = {}
        self._prints: dict[OpId, Fingerprint] = {}
        self._version = replica.version
        self._replayed = replica.replayed
        replica.take_fill_changes()  # what the node holds when it starts is not news
        events.greeters["book"] = self._greet_book
        events.greeters["orders"] = self._greet_orders

    def update(self, ops: Sequence[SignedOp]) -> None:
        """Publish what `ops` (just applied; none after a certify) changed."""
        replica = self.replica
        changes = replica.take_fill_changes()
        certified = replica.version != self._version
        replayed = certified or replica.replayed != self._replayed
        self._version, self._replayed = replica.version, replica.replayed
        if changes:
            self._publish_fills(changes)
        self._publish_books(ops, changes, replayed)
        self._publish_orders(ops, changes, certified)

    # -- trades and fills ----------------------------------------------------------------------------

    def _publish_fills(self, changes: FillChanges) -> None:
        events, me = self.events, self.account
        trades, fills = events.wants("trades"), events.wants("fills")
        if not (trades or fills):
            return
        for name, records in (("vanished", changes.vanished), ("changed", changes.changed),
                              ("appeared", changes.appeared)):
            for record in records:
                fill = record.fill
                side = trading.taker_side(self.replica, fill)
                if trades:
                    events.publish("trades", {"event": name, **trading.fill_json(record, side)}, fill.market)
                if fills and trading.involves(fill, me):
                    events.publish("fills", {"event": name, **trading.own_fill_json(record, side, me)}, fill.market)

    # -- books ---------------------------------------------------------------------------------------

    def _l2(self, market: str, depth: int | None) -> L2:
        book = self.replica.ledger.book(market)
        return L2(trading.level_pairs(book.side(BUY), depth), trading.level_pairs(book.side(SELL), depth))

    def _greet_book(self, subscriber: Subscriber) -> None:
        market = subscriber.market
        if market is None or self.replica.genesis.market(market) is None:
            return  # the API refuses such a subscription before it opens
        depth = subscriber.params.get("depth")
        tracked = self._depths.get(market, 0)
        if market not in self._books or deepest((tracked, depth)) != tracked:  # it reads deeper: read again
            self._depths[market] = deepest((tracked, depth))
            self._books[market] = self._l2(market, self._depths[market])
        book = self._books[market]
        self.events.deliver(subscriber, {
            "type": "snapshot", "market": market, "seq": self._seq.get(market, 0), "depth": depth,
            "bids": trading.level_json(book.bids[:depth]), "asks": trading.level_json(book.asks[:depth]),
        })

    def _touched(self, ops: Sequence[SignedOp], changes: FillChanges) -> set[str]:
        """The markets whose book `ops`, applied at the end of the replay order, can have changed."""
        markets = {record.fill.market for part in (changes.appeared, changes.changed, changes.vanished)
                   for record in part}
        graph = self.replica.graph
        for op in ops:
            market = None
            if op.kind in (ORDER_PLACE, ORDER_CANCEL_ALL):
                market = op.body.get("market")
            elif op.kind == ORDER_CANCEL and isinstance(order_id := op.body.get("order"), bytes):
                placed = graph.get(OpId(order_id))
                market = placed.body.get("market") if placed is not None and placed.kind == ORDER_PLACE else None
            if isinstance(market, str):
                markets.add(market)
        return markets

    def _publish_books(self, ops: Sequence[SignedOp], changes: FillChanges, everywhere: bool) -> None:
        watchers = self.events.watching("book")
        depths: dict[str, list[int | None]] = {}
        for subscriber in watchers:
            depths.setdefault(subscriber.market or "", []).append(subscriber.params.get("depth"))
        for market in list(self._books):
            if market not in depths:
                del self._books[market], self._depths[market]
            elif (depth := deepest(depths[market])) != self._depths[market]:  # the deepest reader left
                old = self._books[market]
                self._books[market] = L2(old.bids[:depth], old.asks[:depth])
                self._depths[market] = depth
        if not self._books:
            return
        touched = set(self._books) if everywhere else self._touched(ops, changes) & self._books.keys()
        for market in sorted(touched):
            old, new = self._books[market], self._l2(market, self._depths[market])
            if new == old:
                continue
            self._books[market] = new
            seq = self._seq[market] = self._seq.get(market, 0) + 1
            deltas: dict[int | None, dict[str, Any]] = {}
            for subscriber in watchers:
                if subscriber.market != market:
                    continue
                depth = subscriber.params.get("depth")
                if depth not in deltas:
                    deltas[depth] = {
                        "type": "delta", "market": market, "seq": seq,
                        "bids": side_delta(old.bids, new.bids, "buy", depth),
                        "asks": side_delta(old.asks, new.asks, "sell", depth),
                    }
                self.events.deliver(subscriber, deltas[depth])

    # -- own orders ----------------------------------------------------------------------------------

    def _fingerprint(self, order_id: OpId) -> Fingerprint:
        """What a closed order's state is read from, but the finality of operations (which only
        a certify changes) and the content of its fills (the fill report names those changes)."""
        replica, ledger = self.replica, self.replica.ledger
        return (ledger.closed.get(order_id), *replica.outcome_of(order_id), ledger.order_fills.get(order_id))

    def _placed_seq(self, order_id: OpId) -> int:
        op = self.replica.graph.get(order_id)
        return op.seq if op is not None else 0

    def _greet_orders(self, subscriber: Subscriber) -> None:
        """Read the own orders if no one watched them, then give the new subscriber the open and
        pending ones (of its market), oldest first, as one snapshot."""
        if self._orders is None:
            self._orders, self._resting, self._prints = {}, {}, {}
            graph = self.replica.graph
            for seq in range(1, graph.version_vector.get(self.account, 0) + 1):
                for order_id in graph.at(self.account, seq):
                    self._check(order_id, publish=False)
        live = sorted(
            (info for order_id, info in self._orders.items()
             if info.status in (OPEN, PENDING) and subscriber.market in (None, info.market)),
            key=lambda info: self._placed_seq(info.order_id),
        )
        self.events.deliver(subscriber, {"event": "snapshot", "orders": [
            trading.order_json(info, [trading.taker_side(self.replica, record.fill) for record in info.fills])
            for info in live
        ]})

    def _check(self, order_id: OpId, *, publish: bool = True) -> None:
        """Read one own order; publish its new state if it changed; keep it while it can change."""
        assert self._orders is not None
        info = self.replica.order_info(order_id)
        if info is None:
            return
        old = self._orders.get(order_id)
        if publish and (old is None or order_state(old) != order_state(info)):
            sides = [trading.taker_side(self.replica, record.fill) for record in info.fills]
            event = {"event": order_event(old, info), **trading.order_json(info, sides)}
            self.events.publish("orders", event, info.market)
        self._resting.pop(order_id, None)
        self._prints.pop(order_id, None)
        if info.final and info.status not in (OPEN, PENDING):
            self._orders.pop(order_id, None)
            return
        self._orders[order_id] = info
        resting = self.replica.ledger.orders.get(order_id)
        if resting is not None:
            self._resting[order_id] = resting
        else:
            self._prints[order_id] = self._fingerprint(order_id)

    def _publish_orders(self, ops: Sequence[SignedOp], changes: FillChanges, certified: bool) -> None:
        if self._orders is None:
            return
        if not self.events.wants("orders"):
            self._orders, self._resting, self._prints = None, {}, {}
            return
        me = self.account
        candidates = {op.op_id for op in ops if op.author == me and op.kind == ORDER_PLACE}
        for part in (changes.appeared, changes.changed, changes.vanished):
            for record in part:
                fill = record.fill
                if fill.taker == me:
                    candidates.add(fill.taker_order)
                if fill.maker == me:
                    candidates.add(fill.maker_order)
        if certified:  # finality moved: read them all
            candidates.update(self._orders)
        else:
            # An open order is checked by the identity of its `RestingOrder` alone, one look-up:
            # the ledger puts a new one for every fill and removes it when the order closes (a
            # market maker's node may hold thousands of open orders, and this runs every batch).
            resting_now = self.replica.ledger.orders
            candidates.update(i for i, resting in self._resting.items() if resting_now.get(i) is not resting)
            candidates.update(i for i, printed in self._prints.items() if self._fingerprint(i) != printed)
        for order_id in sorted(candidates, key=self._placed_seq):  # placement order
            self._check(order_id)
