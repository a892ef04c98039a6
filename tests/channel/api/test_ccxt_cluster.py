"""A small strategy in plain ccxt calls against a running 4-node channel of real processes
(`simulations.cluster`: ``parley node run`` each, over libp2p): a maker quotes a ladder on its
node, a taker on another node sweeps part of it, and every node sees the same trades; and the
same on a perp market's swap, with positions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest

from channel.api.ccxt import install
from channel.runtime.genesis_file import DEMO_ETH, DEMO_USDC
from simulations.cluster import Cluster, NodeProcess, create_cluster, start_all, stop_all, wait_until

pytestmark = pytest.mark.slow

E9 = 10**9
SYMBOL = "ETH/USDC"
EXCHANGE_ID = "parley"  # a strategy's configuration: all it changes, with the credentials


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = create_cluster(tmp_path / "cluster", 4, tokens=[DEMO_USDC, DEMO_ETH], initial=10_000 * E9)
    processes = [NodeProcess(cluster.config(i)) for i in range(4)]
    start_all(processes)
    try:
        yield cluster
    finally:
        stop_all(processes)


def quote_ladder(exchange: Any, mid: float, spread: float, size: float, levels: int) -> list[str]:
    """The strategy's quoting: `levels` bids and asks around `mid`, `spread` apart."""
    ids = []
    for level in range(1, levels + 1):
        for side, price in (("buy", mid - level * spread), ("sell", mid + level * spread)):
            ids.append(exchange.create_order(SYMBOL, "limit", side, size, price, {"postOnly": True})["id"])
    return ids


def test_a_ccxt_strategy_trades_across_a_four_node_channel(cluster: Cluster) -> None:
    install()
    maker, taker, observer = (getattr(ccxt, EXCHANGE_ID)({"apiKey": str(cluster.node_dirs[i])}) for i in (1, 2, 0))
    for exchange in (maker, taker, observer):
        exchange.load_markets()
    quotes = quote_ladder(maker, 2000, 1, 0.1, 2)
    assert sorted(order["price"] for order in maker.fetch_open_orders(SYMBOL)) == [1998, 1999, 2001, 2002]

    book = wait_until(lambda: (b := taker.fetch_order_book(SYMBOL))["asks"] == [[2001, 0.1], [2002, 0.1]] and b,
                      what="the maker's asks on the taker's node")
    assert book["bids"] == [[1999, 0.1], [1998, 0.1]]
    taken = taker.create_order(SYMBOL, "market", "buy", 0.15)
    assert (taken["status"], taken["filled"]) == ("closed", 0.15)
    assert [(t["price"], t["amount"]) for t in taken["trades"]] == [(2001, 0.1), (2002, 0.05)]

    fills = wait_until(lambda: len(f := maker.fetch_my_trades(SYMBOL)) == 2 and f, what="the maker's fills")
    assert {(fill["side"], fill["takerOrMaker"]) for fill in fills} == {("sell", "maker")}
    trades = wait_until(lambda: len(t := observer.fetch_trades(SYMBOL)) == 2 and t, what="the trades on node 0")
    assert [trade["id"] for trade in trades] == [fill["id"] for fill in taken["trades"]]
    assert wait_until(lambda: observer.fetch_ticker(SYMBOL)["last"] == 2002, what="node 0's last price")

    balance = wait_until(lambda: (b := maker.fetch_balance())["ETH"]["total"] < 10_000 and b, what="maker balance")
    assert balance["ETH"]["total"] == 10_000 - 0.15
    cancelled = maker.cancel_all_orders(SYMBOL)
    assert {order["id"] for order in cancelled} == set(quotes) - {quotes[1]}  # the 2001 ask was filled
    wait_until(lambda: not any((b := observer.fetch_order_book(SYMBOL))["bids"] + b["asks"]),
               what="an empty book on node 0")


def test_a_ccxt_strategy_trades_a_swap_across_a_four_node_channel(tmp_path: Path) -> None:
    """ETH-PERP as ``ETH/USDC:USDC`` on four node processes: the oracle's node posts a price, the
    maker quotes the swap on its node, the taker on another lifts an ask and closes reduce-only
    against a bid; both see their positions open at the trade's price, then flat."""
    from channel.api.client import Client
    from crdt.genesis import Role
    from simulations.demos.perps import PERP

    swap = "ETH/USDC:USDC"
    cluster = create_cluster(tmp_path / "perps", 4, tokens=[DEMO_USDC], initial=10_000 * E9, markets=[PERP],
                             roles=[Role.ORACLE, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR])
    processes = [NodeProcess(cluster.config(i)) for i in range(4)]
    start_all(processes)
    try:
        install()
        maker, taker = (getattr(ccxt, EXCHANGE_ID)({"apiKey": str(cluster.node_dirs[i])}) for i in (1, 2))
        for exchange in (maker, taker):
            exchange.load_markets()
        with Client.for_node(cluster.node_dirs[0]) as oracle:
            oracle.post_price("ETH-PERP", 2000 * E9)
        wait_until(lambda: taker.fetch_funding_rate(swap)["markPrice"] == 2000, what="the oracle's price, fixed")
        for side, price in (("buy", 1999), ("sell", 2001)):
            maker.create_order(swap, "limit", side, 0.5, price, {"postOnly": True})
        wait_until(lambda: taker.fetch_order_book(swap)["asks"] == [[2001, 0.5]], what="the maker's ask")
        taken = taker.create_order(swap, "market", "buy", 0.5)
        assert (taken["status"], taken["average"]) == ("closed", 2001)
        [long] = taker.fetch_positions()
        assert (long["symbol"], long["side"], long["contracts"], long["entryPrice"]) == (swap, "long", 0.5, 2001)
        short = wait_until(lambda: (p := maker.fetch_positions()) and p[0], what="the maker's short")
        assert (short["side"], short["contracts"], short["entryPrice"]) == ("short", 0.5, 2001)
        wait_until(lambda: taker.fetch_order_book(swap)["bids"] == [[1999, 0.5]], what="the maker's bid")
        closed = taker.create_order(swap, "market", "sell", 0.5, None, {"reduceOnly": True})
        assert (closed["status"], closed["average"], closed["reduceOnly"]) == ("closed", 1999, True)
        assert taker.fetch_positions() == []
        wait_until(lambda: maker.fetch_positions() == [], what="the maker flat")
    finally:
        stop_all(processes)
