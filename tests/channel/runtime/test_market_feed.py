"""The market feed (channel/runtime/market_feed.py) against the node it reports on: whatever the
delivery order (late operations that re-match the suffix, operations waiting for parents,
duplicates) and wherever checkpoints are certified, the streams folded from their first event
are, after every update, the node's book (whole and at depth 2, the seq never skipping), its
trades, its participant's fills and the state of each of its participant's orders.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel.api.book_feed import LocalBook
from channel.runtime.keystore import Key
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt.ops import SignedOp, sign_op
from crdt.replica import Cut
from tests.crdt.crdt_support import ADDR, KEYS
from tests.crdt.test_markets_core import GENESIS, SYMBOL, A, B, C, body, order_dags

E9 = 10**9

TOPICS: dict[str, dict[str, Any]] = {
    "book": {"market": SYMBOL}, "top": {"market": SYMBOL, "depth": 2}, "trades": {"market": SYMBOL}, "fills": {},
    "orders": {},
}


def fold_fills(view: dict[str, dict[str, Any]], event: dict[str, Any]) -> None:
    """One trades or fills event into `view` (fill id -> fill), checking it is a real change."""
    what = event.pop("event")
    fill_id = event["fill_id"]
    if what == "vanished":
        assert view.pop(fill_id) == event
    elif what == "changed":
        assert view[fill_id] != event
        view[fill_id] = event
    else:
        assert what == "appeared"
        assert fill_id not in view
        view[fill_id] = event


def order_summary(order: dict[str, Any]) -> tuple[Any, ...]:
    """An order's state as the orders stream reports its changes (not its fills' finality)."""
    fills = tuple((f["fill_id"], f["price"], f["qty"]) for f in order["fills"])
    return order["status"], order["remaining"], order["filled"], order["final"], fills


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=order_dags(), data=st.data())
def test_the_streams_folded_are_the_node_s_book_trades_fills_and_orders(
    ops: list[SignedOp], data: st.DataObject
) -> None:
    batches: list[list[SignedOp]] = []
    delivered: list[SignedOp] = []
    for op in data.draw(st.permutations(ops)):
        delivered.append(op)
        batches.append([op, *data.draw(st.lists(st.sampled_from(delivered), max_size=2))])  # duplicates too
    certify_after = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))

    async def main(folder: Path) -> None:
        store = Store(folder / "node.sqlite")
        try:
            node = Node.restore(GENESIS, Key(ADDR[A], KEYS[A]), store, fresh_channel=True)
            streams = {name: node.events.open("book" if name == "top" else name, params)[1]
                       for name, params in TOPICS.items()}
            books = {"book": LocalBook(SYMBOL), "top": LocalBook(SYMBOL, 2)}
            trades: dict[str, dict[str, Any]] = {}
            fills: dict[str, dict[str, Any]] = {}
            orders: dict[str, tuple[Any, ...]] = {}

            def drain() -> None:
                for name, receive in streams.items():
                    while True:
                        try:
                            event = receive.receive_nowait()
                        except trio.WouldBlock:
                            break
                        if name in books:
                            books[name].apply(event)  # raises BookGap if a seq is skipped
                        elif name == "orders" and event["event"] == "snapshot":
                            assert event["orders"] == []  # opened before any operation
                        elif name == "orders":
                            assert event["owner"] == "0x" + node.address.hex()
                            orders[event.pop("order_id")] = order_summary(event)
                        else:
                            fold_fills(trades if name == "trades" else fills, event)

            def check() -> None:
                for name, depth in (("book", 1000), ("top", 2)):
                    book = node.order_book(SYMBOL, depth, 2)
                    assert books[name].levels() == {"bids": book["bids"], "asks": book["asks"]}
                assert trades == {trade["fill_id"]: trade for trade in node.trades(SYMBOL, 1000)}
                assert fills == {fill["fill_id"]: fill for fill in node.my_trades(None, 1000)}
                mine = [op for op in node.replica.graph.ops.values() if op.author == node.address
                        and op.kind == "order.place"]
                assert orders == {"0x" + op.op_id.hex(): order_summary(node.order(op.op_id)) for op in mine}

            drain()
            assert books["book"].seq == books["top"].seq == 0
            for batch, certify in zip(batches, certify_after, strict=True):
                node.receive(batch)
                drain()
                check()
                if certify and node.replica.graph.ops:
                    version = node.replica.version + 1
                    node.replica.certify(Cut(version, tuple(sorted(node.replica.graph.heads)), 1000 * version))
                    node.announce([])  # as the consensus driver does after it certified a cut
                    drain()
                    check()
            assert not any(subscriber.dropped for subscriber in node.events.subscribers)
        finally:
            store.close()

    with tempfile.TemporaryDirectory(prefix="parley-feed-") as tmp:
        trio.run(main, Path(tmp))


def open_node(folder: Path) -> tuple[Node, Store]:
    store = Store(folder / "node.sqlite")
    return Node.restore(GENESIS, Key(ADDR[A], KEYS[A]), store, fresh_channel=True), store


def drained(receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> list[dict[str, Any]]:
    events = []
    while True:
        try:
            events.append(receive.receive_nowait())
        except trio.WouldBlock:
            return events


def test_a_late_transfer_that_funds_an_order_changes_the_book(tmp_path: Path) -> None:
    """No order operation and no fill in the batch, yet the book changes: participant B's buy
    was refused for want of USDC until C's transfer to B, at the same height with a smaller op
    id, arrives and sorts before it. Replay re-applied the buy, and the book stream says so."""
    ctx = GENESIS.context()
    buy = sign_op(ctx, KEYS[B], 1, [], "order.place", body("buy", 11 * E9, 10 * E9))  # 110 USDC: B has 100
    gift = next(op for amount in range(1, 1000)
                if (op := sign_op(ctx, KEYS[C], 1, [], "transfer",
                                  {"to": ADDR[B], "token": "USDC", "amount": 50 * E9 + amount})).op_id < buy.op_id)

    async def main() -> None:
        node, store = open_node(tmp_path)
        try:
            _, book = node.events.open("book", {"market": SYMBOL})
            assert drained(book)[0]["bids"] == []
            node.receive([buy])
            assert node.replica.status(buy.op_id) == "rejected:insufficient_balance"
            assert drained(book) == []
            node.receive([gift])
            (delta,) = drained(book)
            assert (delta["seq"], delta["bids"]) == (1, [[str(11 * E9), str(10 * E9)]])
        finally:
            store.close()

    trio.run(main)


def test_a_checkpoint_that_expires_orders_changes_the_book_and_the_orders(tmp_path: Path) -> None:
    """close_epoch removes the orders whose time has come, with no operation in the batch: the
    book loses their levels and the node's own order is reported expired, then final."""
    ctx = GENESIS.context()
    mine = sign_op(ctx, KEYS[A], 1, [], "order.place", body("sell", 11 * E9, E9, expires=5_000))
    theirs = sign_op(ctx, KEYS[B], 1, [], "order.place", body("buy", 9 * E9, E9, expires=5_000))

    async def main() -> None:
        node, store = open_node(tmp_path)
        try:
            _, book = node.events.open("book", {"market": SYMBOL})
            _, orders = node.events.open("orders")
            node.receive([mine, theirs])
            assert [e["type"] for e in drained(book)] == ["snapshot", "delta"]
            snapshot, placed = drained(orders)
            assert snapshot == {"event": "snapshot", "orders": []}
            assert (placed["event"], placed["status"]) == ("placed", "open")
            node.replica.certify(Cut(1, tuple(sorted(node.replica.graph.heads)), 6_000))
            node.announce([])
            (delta,) = drained(book)
            assert (delta["seq"], delta["bids"], delta["asks"]) == (2, [[str(9 * E9), "0"]], [[str(11 * E9), "0"]])
            (expired,) = drained(orders)
            assert (expired["event"], expired["status"], expired["final"]) == ("expired", "expired", True)
        finally:
            store.close()

    trio.run(main)


def test_the_book_is_kept_to_the_deepest_subscriber(tmp_path: Path) -> None:
    """A depth-1 subscriber, then a depth-3 one joins (its snapshot is read deeper), then it
    leaves: the shallow one's book stays right throughout, its seq never skipping."""
    ctx = GENESIS.context()
    seqs = {B: 0, C: 0}

    async def main() -> None:
        node, store = open_node(tmp_path)

        def ask(author: int, price: int) -> SignedOp:
            seqs[author] += 1
            parents = sorted(node.replica.graph.heads)
            return sign_op(ctx, KEYS[author], seqs[author], parents, "order.place", body("sell", price, E9))

        def matches(book: LocalBook, depth: int) -> bool:
            levels = node.order_book(SYMBOL, depth, 2)
            return book.levels() == {"bids": levels["bids"], "asks": levels["asks"]}

        try:
            shallow, deep = LocalBook(SYMBOL, 1), LocalBook(SYMBOL, 3)
            _, shallow_events = node.events.open("book", {"market": SYMBOL, "depth": 1})
            for price in (12, 11, 13):
                node.receive([ask(B, price * E9)])
            for event in drained(shallow_events):
                shallow.apply(event)
            assert matches(shallow, 1)
            deep_subscriber, deep_events = node.events.open("book", {"market": SYMBOL, "depth": 3})
            (snapshot,) = drained(deep_events)
            assert snapshot["asks"] == [[str(p * E9), str(E9)] for p in (11, 12, 13)]
            deep.apply(snapshot)
            for price in (14, 10, 12):
                node.receive([ask(C, price * E9)])
                for book, events in ((shallow, shallow_events), (deep, deep_events)):
                    for event in drained(events):
                        book.apply(event)
                assert matches(shallow, 1)
                assert matches(deep, 3)
            node.events.close(deep_subscriber)
            for price in (9, 15):
                node.receive([ask(B, price * E9)])
                for event in drained(shallow_events):
                    shallow.apply(event)
                assert matches(shallow, 1)
            assert shallow.best_ask() == (9 * E9, E9)
        finally:
            store.close()

    trio.run(main)


def test_an_orders_subscriber_starts_from_a_snapshot_of_the_open_orders(tmp_path: Path) -> None:
    """A subscriber that joins late gets the participant's open orders, oldest first (not the
    filled one, nor the other participant's), then the changes from there."""
    ctx = GENESIS.context()
    ask = sign_op(ctx, KEYS[B], 1, [], "order.place", body("sell", 10 * E9, E9))
    high = sign_op(ctx, KEYS[A], 1, [], "order.place", body("sell", 12 * E9, E9))
    low = sign_op(ctx, KEYS[A], 2, [high.op_id], "order.place", body("buy", 8 * E9, E9))
    taken = sign_op(ctx, KEYS[A], 3, [low.op_id, ask.op_id], "order.place", body("buy", 10 * E9, E9))

    async def main() -> None:
        node, store = open_node(tmp_path)
        try:
            node.receive([ask, high, low, taken])
            assert node.order(taken.op_id)["status"] == "filled"
            for params in ({}, {"market": SYMBOL}):
                _, orders = node.events.open("orders", params)
                (snapshot,) = drained(orders)
                assert snapshot["event"] == "snapshot"
                assert [o["order_id"] for o in snapshot["orders"]] == ["0x" + high.op_id.hex(), "0x" + low.op_id.hex()]
                assert snapshot["orders"] == [node.order(high.op_id), node.order(low.op_id)]
            node.receive([sign_op(ctx, KEYS[A], 4, [taken.op_id], "order.cancel", {"order": high.op_id})])
            (cancelled,) = drained(orders)
            assert (cancelled["event"], cancelled["order_id"]) == ("cancelled", "0x" + high.op_id.hex())
        finally:
            store.close()

    trio.run(main)
