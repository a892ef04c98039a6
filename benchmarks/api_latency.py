"""Order-to-tentative-fill latency through the local API of a running 4-node channel.

    python benchmarks/api_latency.py [--samples N]

Four real node processes on 127.0.0.1 over libp2p (checkpoint consensus at the default 1 s
interval), with one spot market. For each sample, node 0's participant (the maker) rests an
ask through node 0's API and, once node 1's ops stream shows it arrived, node 1's participant
(the taker) sends a crossing ioc buy through node 1's API. Measured from the moment the
taker's ``parley_placeOrder`` request is sent:

- ``fill_taker_response``: until its answer, which holds the order's state as applied, with
  the fill (the node signs, stores with fsync, applies and matches before it answers);
- ``fill_taker_stream``: until node 1's ``fills`` WebSocket stream delivers the fill;
- ``fill_maker_stream``: until node 0's ``fills`` stream delivers it: gossip to the maker's
  node, its replay, and its stream.

The taker sends its order 10 ms after the ask arrived, as it sends the baseline's transfer.
One sample in three it sends it at once instead (``fill_taker_response_at_once``): then the order
also waits for what the node still does with the ask it just received. One in three it sends the
order and the transfer over a WebSocket it keeps open (`AsyncClient.socket()`, ``*_ws``), as a
market maker's bot would, instead of an HTTP request each.

The baseline is measured in the same run, interleaved with the samples: a transfer sent at
node 1, until its answer (``transfer_response``) and until node 0's ``ops`` stream delivers it
(``transfer_visible_peer``). Prints JSON lines with p50 and p99 in ms.

Then ``requote_20_*``: node 0's participant re-quotes a ladder of 20 asks, one
``parley_placeOrder`` after another or one ``parley_placeOrders``, over HTTP and over an open
WebSocket, in turn; from the first request to the last receipt.

First, ``feed_update``: the CPU time the node spends in `MarketFeed.update` per applied order,
in one process, with nobody subscribed, with a book (depth 50), a trades and an orders
subscriber, and with a whole-book subscriber, for books of 100, 1,000 and 10,000 levels of the
node's own asks (`--resting`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, percentiles
from channel.api.client import AsyncClient, Endpoint
from channel.runtime.genesis_file import save_genesis
from crdt.genesis import Token
from crdt.markets.config import E9, Market, MarketKind
from crdt.types import Address, Symbol
from simulations.cluster import USDC_UNIT, create_cluster, start_all, stop_all

USDC = Token(Symbol("USDC"), Address(b"\x22" * 20), 6)
ETH = Token(Symbol("ETH"), Address(b"\x33" * 20), 18)
MARKET = Market(
    symbol="ETH/USDC", kind=MarketKind.SPOT, base=ETH.symbol, quote=USDC.symbol, tick_size=E9 // 100,
    step_size=E9 // 1000, min_qty=E9 // 1000, max_qty=1000 * E9, min_price=E9 // 100, max_price=10**6 * E9,
    maker_fee=200_000, taker_fee=500_000,
)
PRICE = 2000 * E9
QTY = E9 // 100  # 0.01 ETH


class Arrivals:
    """When each event of one stream arrived (perf_counter), by a key of the event."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._changed = trio.Event()

    async def record(self, client: AsyncClient, topic: str, key: str, ready: trio.Event, **params: Any) -> None:
        async with client.subscribe(topic, **params) as events:
            ready.set()
            async for event in events:
                if topic == "ops" or event.get("event") == "appeared":
                    self.seen.setdefault(event[key], time.perf_counter())
                    self._changed.set()
                    self._changed = trio.Event()

    async def wait(self, key: str, within: float = 10.0) -> float:
        with trio.fail_after(within):
            while key not in self.seen:
                await self._changed.wait()
        return self.seen[key]


async def measure(endpoints: list[Endpoint], samples: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in (
        "fill_taker_response", "fill_taker_stream", "fill_maker_stream", "fill_taker_response_at_once",
        "fill_taker_response_ws", "fill_taker_stream_ws", "transfer_response", "transfer_visible_peer",
        "transfer_response_ws",
    )}
    async with (
        AsyncClient(endpoints[0]) as maker,
        AsyncClient(endpoints[1]) as taker,
        AsyncClient(endpoints[0]) as watcher,
        taker.socket() as taker_ws,
        trio.open_nursery() as nursery,
    ):
        maker_fills, taker_fills, maker_ops, taker_ops = Arrivals(), Arrivals(), Arrivals(), Arrivals()
        for arrivals, client, topic, key in ((maker_fills, watcher, "fills", "fill_id"),
                                             (taker_fills, taker, "fills", "fill_id"),
                                             (maker_ops, watcher, "ops", "op_id"),
                                             (taker_ops, taker, "ops", "op_id")):
            ready = trio.Event()
            nursery.start_soon(arrivals.record, client, topic, key, ready)
            await ready.wait()
        maker_address = (await maker.stats())["address"]
        # the first 10 warm up; then in turn: over HTTP, over HTTP at once, over the open WebSocket
        for i in range(3 * samples + 10):
            mode = ("http", "at_once", "ws")[i % 3]
            calls = taker_ws if mode == "ws" else taker
            ask = (await maker.place_order(MARKET.symbol, "sell", QTY, PRICE))["op_id"]
            await taker_ops.wait(ask)  # the ask rests in the taker's book too
            if mode != "at_once":
                await trio.sleep(0.01)  # as before the transfer: the taker's node is done with the ask
            began = time.perf_counter()
            placed = await calls.place_order(MARKET.symbol, "buy", QTY, PRICE, tif="ioc")
            answered = time.perf_counter()
            fills = placed["order"]["fills"]
            if len(fills) != 1 or fills[0]["maker_order"] != ask:
                raise RuntimeError(f"the taker did not fill the maker's ask: {placed}")
            fill_id = fills[0]["fill_id"]
            taker_seen, maker_seen = await taker_fills.wait(fill_id), await maker_fills.wait(fill_id)
            await trio.sleep(0.01)
            began_transfer = time.perf_counter()
            sent = await calls.transfer(maker_address, "USDC", (1 + i) * USDC_UNIT)
            transfer_answered = time.perf_counter()
            visible = await maker_ops.wait(sent["op_id"])
            await trio.sleep(0.01)
            if i < 10:
                continue
            if mode == "at_once":
                results["fill_taker_response_at_once"].append(answered - began)
            elif mode == "ws":
                results["fill_taker_response_ws"].append(answered - began)
                results["fill_taker_stream_ws"].append(taker_seen - began)
                results["transfer_response_ws"].append(transfer_answered - began_transfer)
            else:
                results["fill_taker_response"].append(answered - began)
                results["fill_taker_stream"].append(taker_seen - began)
                results["fill_maker_stream"].append(maker_seen - began)
                results["transfer_response"].append(transfer_answered - began_transfer)
                results["transfer_visible_peer"].append(visible - began_transfer)
        nursery.cancel_scope.cancel()
    return results


async def requote(endpoint: Endpoint, rounds: int, levels: int = 20) -> dict[str, list[float]]:
    """A market maker re-quoting `levels` asks at node 0, in turn: one ``parley_placeOrder`` after
    another (a round trip and an fsync each), or one ``parley_placeOrders`` (one of each), both
    over HTTP and over an open WebSocket; from the first request to the last receipt. The
    ladder is cancelled (``parley_cancelAll``) between rounds."""
    results: dict[str, list[float]] = {f"requote_{levels}_{mode}": [] for mode in (
        "one_by_one_http", "batch_http", "one_by_one_ws", "batch_ws")}
    async with AsyncClient(endpoint) as client, client.socket() as socket:
        for i in range(4 * rounds + 4):  # the first four warm up
            mode = ("one_by_one_http", "batch_http", "one_by_one_ws", "batch_ws")[i % 4]
            calls = socket if mode.endswith("ws") else client
            prices = [PRICE + (1 + level) * E9 for level in range(levels)]
            began = time.perf_counter()
            if mode.startswith("batch"):
                placed = await calls.place_orders(
                    [{"market": MARKET.symbol, "side": "sell", "qty": QTY, "price": p} for p in prices])
            else:
                placed = [await calls.place_order(MARKET.symbol, "sell", QTY, p) for p in prices]
            took = time.perf_counter() - began
            if any("error" in receipt or receipt["order"]["status"] != "open" for receipt in placed):
                raise RuntimeError(f"a quote did not rest: {placed}")
            await client.cancel_all(MARKET.symbol)
            if i >= 4:
                results[f"requote_{levels}_{mode}"].append(took)
    return results


FEED_SUBSCRIPTIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "none": [],
    "book_depth_50_trades_orders": [("book", {"market": MARKET.symbol, "depth": 50}), ("trades", {}), ("orders", {})],
    "book_whole": [("book", {"market": MARKET.symbol})],
}


def feed_cost(resting: int, batches: int, subscriptions: list[tuple[str, dict[str, Any]]]) -> float:
    """CPU time (s) of `MarketFeed.update` per applied order, in one process (no API), with
    `subscriptions` open, over a book of `resting` asks on as many levels, all of them the
    node's own (a market maker's node): each batch is a buy that takes the best ask or a new
    ask behind the others."""
    from channel.runtime.events import EventHub
    from channel.runtime.market_feed import MarketFeed
    from crdt import testing
    from crdt.genesis import InitialBalance
    from crdt.ops import address_of, sign_op
    from crdt.replica import Replica

    keys = testing.test_keys(b"parley-feed-bench-%d", 2)
    genesis = testing.make_genesis(keys, [USDC, ETH], markets=[MARKET], initial=[
        InitialBalance(address_of(k), t.symbol, 10**9 * E9) for k in keys for t in (USDC, ETH)])
    replica = Replica(genesis)
    events = EventHub()
    feed = MarketFeed(replica, events, address_of(keys[0]))
    seqs = [0, 0]

    def order(author: int, side: str, price: int) -> Any:
        seqs[author] += 1
        body = {"market": MARKET.symbol, "side": side, "type": "limit", "tif": "gtc", "price": price,
                "qty": QTY, "reduce_only": False, "expires": 0}
        return sign_op(replica.ctx, keys[author], seqs[author], sorted(replica.graph.heads), "order.place", body)

    for i in range(resting):
        replica.receive(order(0, "sell", PRICE + i * E9 // 100))
    feed.update([])
    assert len(replica.ledger.book(MARKET.symbol)) == resting
    streams = [events.open(topic, params)[1] for topic, params in subscriptions]
    spent = 0.0
    for i in range(batches):
        for op in (order(1, "buy", PRICE + (i + 1) * E9), order(0, "sell", PRICE + (resting + i) * E9 // 100)):
            accepted = replica.receive_many([op]).accepted
            began = time.process_time()
            feed.update(accepted)
            spent += time.process_time() - began
        for stream in streams:  # drained, as the API's forwarders do
            while True:
                try:
                    stream.receive_nowait()
                except trio.WouldBlock:
                    break
    return spent / (2 * batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--requotes", type=int, default=50, help="rounds of each way of re-quoting 20 levels")
    parser.add_argument("--resting", type=int, nargs="+", default=[100, 1000, 10000],
                        help="book sizes (levels) for the in-process cost of a feed update")
    args = parser.parse_args()
    for resting in args.resting:
        for name, subscriptions in FEED_SUBSCRIPTIONS.items():
            cost = feed_cost(resting, 200, subscriptions)
            emit(bench="feed_update", resting=resting, subscribed=name, us_per_order=round(cost * 1e6, 1))
    with tempfile.TemporaryDirectory(prefix="parley-bench-latency-") as tmp:
        root = Path(tmp)
        cluster = create_cluster(root, 4, tokens=[USDC, ETH], initial=10**6 * E9)
        save_genesis(replace(cluster.genesis, markets=(MARKET,)), root / "genesis.toml")  # not in the channel id
        processes = [cluster.process(i) for i in range(4)]
        endpoints = start_all(processes)
        try:
            results = trio.run(measure, endpoints, args.samples)
            results.update(trio.run(requote, endpoints[0], args.requotes))
        finally:
            stop_all(processes)
    for name, samples in results.items():
        emit(bench=name, nodes=4, samples=len(samples), **percentiles(samples))


if __name__ == "__main__":
    main()
