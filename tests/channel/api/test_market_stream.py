"""Live market data over the WebSocket (channel/runtime/market_feed.py, channel/api/book_feed.py):
real nodes behind the real server, driven by the real clients.

- the book stream's snapshot and deltas rebuild exactly the book the node holds, at every
  depth, with the seq going up by one per change, through orders, partial fills, cancels and a
  late order that re-matches the suffix;
- a late order that steals a tentative fill: the trade vanishes and another appears, the
  taker's fill vanishes, and its order goes back from filled to open;
- certification makes trades, fills and orders final, across four nodes with their consensus;
- the params are checked; a subscriber that cannot keep up is dropped with a notice; a restart
  announces nothing the node held already.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from channel.api.book_feed import BookGap, LocalBook, follow_book
from channel.api.client import ApiError, AsyncClient, Client
from channel.api.server import INVALID_PARAMS
from channel.runtime.events import SUBSCRIBER_BUFFER
from channel.runtime.node import Node
from crdt.replica import Cut
from tests.channel.api.market_kit import (
    E9,
    SYMBOL,
    Signer,
    next_event,
    order_body,
    run_real_time,
    serve,
    served_cluster,
)
from tests.channel.runtime.node_kit import poll

PRICE = 2000 * E9
QTY = E9 // 10  # 0.1 WETH


def hexed(data: bytes) -> str:
    return "0x" + data.hex()


def node_book(node: Node, depth: int = 1000) -> dict[str, Any]:
    book = node.order_book(SYMBOL, depth, 2)
    return {"bids": book["bids"], "asks": book["asks"]}


def test_the_book_stream_rebuilds_the_book_at_every_depth(tmp_path: Path) -> None:
    """Orders from the API and from two other participants, partial and whole fills, a cancel,
    a cancel_all, a transfer (no change: no delta), and a late order at the height of earlier
    ones that sorts before them and re-matches: after each, one delta whose seq follows, and the
    local books equal the node's, whole and at depth 2."""
    signer = Signer()

    async def body(node: Node, client: AsyncClient) -> None:
        async with (
            client.subscribe("book", market=SYMBOL) as whole,
            client.subscribe("book", market=SYMBOL, depth=2) as top,
        ):
            books = {2: LocalBook(SYMBOL, 2), None: LocalBook(SYMBOL)}
            for book, events in ((books[None], whole), (books[2], top)):
                book.apply(await next_event(events))
                assert book.seq == 0
                assert book.levels() == {"bids": [], "asks": []}
            seq = 0

            async def step(change: Any) -> Any:
                """Make one change (a call, or a coroutine's), then check the streams."""
                nonlocal seq
                before = node_book(node)
                result = change()
                if hasattr(result, "__await__"):
                    result = await result
                if node_book(node) != before:
                    seq += 1
                    for depth, events in ((None, whole), (2, top)):
                        event = await next_event(events)
                        assert event["type"] == "delta"
                        assert event["seq"] == seq
                        books[depth].apply(event)
                for depth, book in books.items():
                    expected = node_book(node, depth or 1000)
                    assert book.levels() == expected
                    assert book.seq == seq
                return result

            mine = []
            for i in range(3):
                placed = await step(lambda i=i: client.place_order(SYMBOL, "buy", QTY, PRICE - i * E9))
                mine.append(placed["op_id"])
            await step(lambda: client.place_order(SYMBOL, "buy", QTY, PRICE))  # a second order at a level
            for i in range(3):
                await step(lambda i=i: node.receive([signer.place(1, node, "sell", PRICE + (i + 1) * E9, QTY)]))
            await step(lambda: node.receive([signer.place(2, node, "sell", PRICE, QTY // 2)]))  # partial fill
            ioc = signer.place(2, node, "sell", PRICE - E9, 3 * QTY, "ioc")
            await step(lambda: node.receive([ioc]))
            await step(lambda: client.cancel_order(mine[2]))
            await step(lambda: client.transfer(hexed(node.genesis.participants[1].address), "USDC", E9))
            # a late sell of participant 3 at the height of the ioc sell: it sorts before it
            late = signer.sign(3, ioc.parents, "order.place", order_body("sell", QTY, PRICE - 2 * E9),
                               before=ioc.op_id)
            replayed = node.replica.replayed
            await step(lambda: node.receive([late]))
            assert node.replica.replayed > replayed  # it re-applied what sorted after it
            await step(lambda: node.receive([signer.sign(1, node.parents(), "order.cancel_all", {"market": SYMBOL})]))
            await step(lambda: node.receive([signer.place(2, node, "buy", PRICE + 10 * E9, QTY)]))
            assert seq >= 10
        api = await client.order_book(SYMBOL, 1000)
        assert books[None].levels() == {"bids": api["bids"], "asks": api["asks"]}

    serve(tmp_path, body)


def test_the_sync_client_follows_the_book(tmp_path: Path) -> None:
    """`follow_book` (what `parley book --watch` can use) starts from the snapshot."""
    signer = Signer()

    async def body(node: Node, client: AsyncClient) -> None:
        node.receive([signer.place(1, node, "sell", PRICE, QTY), signer.place(2, node, "buy", PRICE - E9, QTY)])

        def first() -> LocalBook:
            with Client(client.endpoint) as sync_client:
                return next(follow_book(sync_client, SYMBOL, depth=1))

        book = await trio.to_thread.run_sync(first)
        assert book.best_ask() == (PRICE, QTY)
        assert book.best_bid() == (PRICE - E9, QTY)

    serve(tmp_path, body)


def test_a_local_book_refuses_a_gap() -> None:
    book = LocalBook(SYMBOL)
    with pytest.raises(BookGap):
        book.apply({"type": "delta", "market": SYMBOL, "seq": 1, "bids": [], "asks": []})  # before a snapshot
    book.apply({"type": "snapshot", "market": SYMBOL, "seq": 5, "bids": [["10", "1"]], "asks": [["12", "2"]]})
    book.apply({"type": "delta", "market": SYMBOL, "seq": 6, "bids": [["10", "0"], ["11", "3"]], "asks": []})
    assert book.bids() == [(11, 3)]
    with pytest.raises(BookGap):
        book.apply({"type": "delta", "market": SYMBOL, "seq": 8, "bids": [], "asks": []})


def test_a_late_order_that_steals_a_fill_is_reported_everywhere(tmp_path: Path) -> None:
    """Participant 1 rests an ask; the node's buy takes it. A buy of participant 2 at the same
    height with a smaller op id arrives later: it sorts first and takes the ask. The trade
    stream shows the first trade vanish and the new one appear, the node's fills stream its
    fill vanish, and its orders stream the order go back from filled to open, resting. Then a
    cancel, and a certify: the new trade and the cancelled order become final."""
    signer = Signer()

    async def body(node: Node, client: AsyncClient) -> None:
        me = hexed(node.address)
        async with AsyncExitStack() as stack:
            streams = {topic: await stack.enter_async_context(client.subscribe(topic, **params))
                       for topic, params in (("trades", {"market": SYMBOL}), ("fills", {}), ("orders", {}),
                                             ("book", {"market": SYMBOL}))}
            assert (await next_event(streams["book"]))["type"] == "snapshot"
            assert await next_event(streams["orders"]) == {"event": "snapshot", "orders": []}
            ask = signer.place(1, node, "sell", PRICE, QTY)
            node.receive([ask])
            parents = node.parents()
            placed = await client.place_order(SYMBOL, "buy", QTY, PRICE)
            order = placed["op_id"]
            assert placed["order"]["status"] == "filled"
            fill_id = order + hexed(ask.op_id)[2:]

            trade = await next_event(streams["trades"])
            assert (trade["event"], trade["fill_id"], trade["side"], trade["final"]) == ("appeared", fill_id, "buy",
                                                                                       False)
            assert (trade["price"], trade["qty"]) == (str(PRICE), str(QTY))
            fill = await next_event(streams["fills"])
            assert (fill["event"], fill["fill_id"], fill["liquidity"], fill["order"]) == ("appeared", fill_id,
                                                                                         "taker", order)
            state = await next_event(streams["orders"])
            assert (state["event"], state["order_id"], state["status"], state["remaining"]) == ("filled", order,
                                                                                               "filled", "0")

            thief = signer.sign(2, parents, "order.place", order_body("buy", QTY, PRICE),
                                before=bytes.fromhex(order[2:]))
            node.receive([thief])
            stolen = hexed(thief.op_id) + hexed(ask.op_id)[2:]
            vanished, appeared = await next_event(streams["trades"]), await next_event(streams["trades"])
            assert (vanished["event"], vanished["fill_id"]) == ("vanished", fill_id)
            assert (appeared["event"], appeared["fill_id"], appeared["taker"]) == ("appeared", stolen,
                                                                                  hexed(thief.author))
            gone = await next_event(streams["fills"])
            assert (gone["event"], gone["fill_id"]) == ("vanished", fill_id)
            back = await next_event(streams["orders"])
            assert (back["event"], back["status"], back["remaining"], back["filled"], back["fills"]) == (
                "changed", "open", str(QTY), "0", [])
            assert node.order(bytes.fromhex(order[2:]))["status"] == "open"  # type: ignore[index]
            deltas = [await next_event(streams["book"]) for _ in range(3)]  # the ask rests, goes, then the bid rests
            assert [(d["seq"], d["bids"], d["asks"]) for d in deltas] == [
                (1, [], [[str(PRICE), str(QTY)]]), (2, [], [[str(PRICE), "0"]]), (3, [[str(PRICE), str(QTY)]], [])]

            await client.cancel_order(order)
            cancelled = await next_event(streams["orders"])
            assert (cancelled["event"], cancelled["status"], cancelled["final"]) == ("cancelled", "cancelled", False)
            node.replica.certify(Cut(1, tuple(sorted(node.replica.graph.heads)), 1))
            node.announce([])  # what the consensus driver does once it certified a cut
            final = await next_event(streams["trades"])
            assert (final["event"], final["fill_id"], final["final"]) == ("changed", stolen, True)
            done = await next_event(streams["orders"])
            assert (done["event"], done["order_id"], done["status"], done["final"]) == ("final", order, "cancelled",
                                                                                       True)
            assert me == done["owner"]
            assert node._watched == {}  # the status stream forgets what is certified: it cannot change

    serve(tmp_path, body)


def test_certification_makes_the_trade_final_on_every_node(tmp_path: Path) -> None:
    """Four nodes with their consensus: node 1 rests an ask through its API, node 0 takes it
    through its own. Node 0's fills and orders streams and node 1's fills stream report the fill
    tentative, then final once a checkpoint holds it; node 1's book stream the level going."""

    async def main() -> None:
        async with served_cluster(tmp_path) as served, AsyncExitStack() as stack:
            (taker, taker_api), (maker, maker_api) = served[0], served[1]
            taker_fills = await stack.enter_async_context(taker_api.subscribe("fills", market=SYMBOL))
            taker_orders = await stack.enter_async_context(taker_api.subscribe("orders"))
            maker_fills = await stack.enter_async_context(maker_api.subscribe("fills"))
            maker_orders = await stack.enter_async_context(maker_api.subscribe("orders"))
            maker_book = await stack.enter_async_context(maker_api.subscribe("book", market=SYMBOL))
            assert (await next_event(maker_book))["seq"] == 0
            for events in (taker_orders, maker_orders):
                assert await next_event(events) == {"event": "snapshot", "orders": []}
            ask = (await maker_api.place_order(SYMBOL, "sell", QTY, PRICE))["op_id"]
            placed = await next_event(maker_orders)
            assert (placed["event"], placed["order_id"], placed["status"]) == ("placed", ask, "open")
            assert (await next_event(maker_book))["asks"] == [[str(PRICE), str(QTY)]]
            with trio.fail_after(30):
                await poll(lambda: taker.order_book(SYMBOL, 1, 2)["asks"] != [])
            bid = (await taker_api.place_order(SYMBOL, "buy", QTY, PRICE))["op_id"]
            for events, liquidity in ((taker_fills, "taker"), (maker_fills, "maker")):
                fill = await next_event(events)
                assert (fill["event"], fill["liquidity"], fill["final"]) == ("appeared", liquidity, False)
            assert (await next_event(maker_book))["asks"] == [[str(PRICE), "0"]]
            filled = await next_event(taker_orders)
            assert (filled["event"], filled["order_id"], filled["final"]) == ("filled", bid, False)
            for events in (taker_fills, maker_fills):
                final = await next_event(events, within=30)
                assert (final["event"], final["final"]) == ("changed", True)
            final_bid = await next_event(taker_orders, within=30)
            assert (final_bid["event"], final_bid["order_id"], final_bid["final"]) == ("final", bid, True)
            events_of_ask = [await next_event(maker_orders, within=30)]
            while not events_of_ask[-1]["final"]:
                events_of_ask.append(await next_event(maker_orders, within=30))
            assert events_of_ask[0]["event"] == "filled"
            assert events_of_ask[-1]["status"] == "filled"
            assert maker.replica.version >= 1

    run_real_time(main)


def test_subscription_params_are_checked(tmp_path: Path) -> None:
    async def body(node: Node, client: AsyncClient) -> None:
        for topic, params, words in (
            ("book", {"market": "NOPE/USDC"}, "no market 'NOPE/USDC'"),
            ("book", {}, "missing parameters ['market']"),
            ("book", {"market": SYMBOL, "depth": 0}, "depth must be between 1 and 1000"),
            ("trades", {"market": SYMBOL, "depth": 5}, "unknown parameters"),
            ("orders", {"market": 7}, "market"),
            ("ops", {"market": SYMBOL}, "unknown parameters"),
        ):
            with pytest.raises(ApiError) as refused:
                async with client.subscribe(topic, **params):
                    pass
            assert refused.value.code == INVALID_PARAMS
            assert words in refused.value.message
        headers = [(b"authorization", f"Bearer {client.endpoint.token}".encode())]
        async with open_websocket_url(client.endpoint.ws_url, extra_headers=headers) as ws:
            for params in (["ops"], {"topic": "trades"}, ["trades", None], ["book", {"market": SYMBOL}]):
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "parley_subscribe",
                                                  "params": params}))
                assert "result" in json.loads(await ws.get_message())  # the answer before any event
            snapshot = json.loads(await ws.get_message())  # the book's, after its answer
            assert snapshot["params"]["result"]["type"] == "snapshot"
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "parley_subscribe",
                                              "params": ["book", [SYMBOL]]}))
            assert json.loads(await ws.get_message())["error"]["code"] == INVALID_PARAMS

    serve(tmp_path, body)


def test_a_subscriber_that_falls_behind_is_dropped_with_a_notice(tmp_path: Path) -> None:
    """One taker sweeps more resting orders than a subscriber's queue holds, in one batch: the
    trades subscriber gets the queue's worth of events, then parley_subscription_dropped. A
    subscription ended by the client gets no such notice."""
    signer = Signer()
    count = SUBSCRIBER_BUFFER + 50
    step = 10**6  # the market's min_qty

    async def body(node: Node, client: AsyncClient) -> None:
        asks = []
        for _ in range(count):
            asks.append(signer.sign(1, [asks[-1].op_id] if asks else node.parents(), "order.place",
                                    order_body("sell", step, PRICE)))
        node.receive(asks)
        headers = [(b"authorization", f"Bearer {client.endpoint.token}".encode())]
        async with open_websocket_url(client.endpoint.ws_url, extra_headers=headers) as ws:
            for index, topic in enumerate(("trades", "ops")):
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": index, "method": "parley_subscribe",
                                                  "params": [topic]}))
                assert "result" in json.loads(await ws.get_message())
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "parley_unsubscribe",
                                              "params": ["0x2"]}))
            assert json.loads(await ws.get_message())["result"] is True
            node.receive([signer.sign(2, node.parents(), "order.place", order_body("buy", count * step, PRICE))])
            assert len(node.replica.fill_records()) == count
            messages = []
            with trio.fail_after(30):
                while not messages or messages[-1].get("method") == "parley_subscription":
                    messages.append(json.loads(await ws.get_message()))
            *events, notice = messages
            # the queue's worth, and one more if the forwarding task was waiting for it
            assert SUBSCRIBER_BUFFER <= len(events) <= SUBSCRIBER_BUFFER + 1 < count
            assert notice["method"] == "parley_subscription_dropped"
            assert {m["params"]["subscription"] for m in messages} == {"0x1"}
            assert {m["params"]["result"]["event"] for m in events} == {"appeared"}
        assert node.events.subscribers == []

    serve(tmp_path, body)


def test_a_restart_announces_only_what_is_new(tmp_path: Path) -> None:
    """The fills a node holds when it starts are not news: after a restart the trades stream
    reports the next fill only."""
    signer = Signer()

    async def first(node: Node, client: AsyncClient) -> None:
        node.receive([signer.place(1, node, "sell", PRICE, 4 * QTY)])
        await client.place_order(SYMBOL, "buy", QTY, PRICE)
        await client.place_order(SYMBOL, "buy", QTY, PRICE)
        assert len(node.replica.fill_records()) == 2

    async def second(node: Node, client: AsyncClient) -> None:
        assert len(node.replica.fill_records()) == 2
        async with client.subscribe("trades") as trades, client.subscribe("orders") as orders:
            placed = await client.place_order(SYMBOL, "buy", QTY, PRICE)
            event = await next_event(trades)
            assert (event["event"], event["taker_order"]) == ("appeared", placed["op_id"])
            assert await next_event(orders) == {"event": "snapshot", "orders": []}  # both bids filled
            state = await next_event(orders)
            assert (state["event"], state["order_id"]) == ("filled", placed["op_id"])
            async with client.subscribe("ops") as ops:
                await client.transfer(hexed(node.genesis.participants[1].address), "USDC", 1000)
                assert (await next_event(ops))["kind"] == "transfer"
            await client.place_order(SYMBOL, "buy", QTY, PRICE)  # the ask's last 0.1
            assert (await next_event(trades))["event"] == "appeared"

    serve(tmp_path, first)
    serve(tmp_path, second)
