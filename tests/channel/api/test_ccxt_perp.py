"""The ccxt classes on a perp market (ETH-PERP as ccxt's linear swap ``ETH/USDC:USDC``), against
a real node behind the real API: the swap market, orders with reduceOnly, positions, funding
rates and their history, the perp refusals as ccxt's exceptions, the async class under asyncio,
and the pro class's watch_positions over the node's positions topic. The node runs under trio
in the test's thread, ccxt in a worker thread (which moves the oracle and the checkpoints
through `trio.from_thread`), as in `ccxt_kit`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ccxt
import pytest
import trio
from ccxt.test.exchange.base.test_funding_rate_history import test_funding_rate_history as check_funding_history
from ccxt.test.exchange.base.test_leverage_tier import test_leverage_tier as check_leverage_tier
from ccxt.test.exchange.base.test_market import test_market as check_market
from ccxt.test.exchange.base.test_order import test_order as check_order
from ccxt.test.exchange.base.test_position import test_position as check_position
from ccxt.test.exchange.base.test_ticker import test_ticker as check_ticker
from hypothesis import given
from hypothesis import strategies as st

from channel.api.ccxt import from_e9, parley, parley_async, parley_pro, to_e9
from channel.api.client import Endpoint
from channel.runtime.node import Node
from channel.runtime.trading import market_json
from tests.channel.api.test_perp_api import MAKER, TRADER, perp_genesis, perp_order
from tests.channel.api.test_perp_stream import AnnouncingPeers
from tests.channel.api.trading_kit import with_node
from tests.crdt.markets.test_perp_positions import WIDE

SWAP = "ETH/USDC:USDC"
SKIPPED = {"timestamp": True, "datetime": True}  # the node's answers carry no clock of their own


def against_perp_node(tmp_path: Path, strategy: Callable[[str, AnnouncingPeers], Any]) -> Any:
    """Run `strategy(data_dir, peers)` in a thread against the trader's node, once the oracle
    priced ETH-PERP at 3,000 and the maker rests a sell of 2 at 3,000 and a buy of 2 at 2,990."""
    result: list[Any] = []

    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = AnnouncingPeers(node)
        peers.price(3000, 1_000)
        peers.send(MAKER, "order.place", perp_order("sell", 2 * 10**9, 3000))
        peers.send(MAKER, "order.place", perp_order("buy", 2 * 10**9, 2990))
        result.append(await trio.to_thread.run_sync(strategy, str(tmp_path / f"node{TRADER}"), peers))

    with_node(perp_genesis(), tmp_path, body, index=TRADER)
    return result[0]


def on_node(action: Callable[[], Any]) -> Any:
    """Run `action` on the node's trio thread (from the strategy's worker thread)."""
    return trio.from_thread.run_sync(action)


def test_a_swap_market_positions_and_funding_with_the_sync_class(tmp_path: Path) -> None:
    def strategy(data_dir: str, peers: AnnouncingPeers) -> None:
        exchange = parley({"apiKey": data_dir})
        markets = exchange.load_markets()
        swap = markets[SWAP]
        assert (swap["id"], swap["type"], swap["swap"], swap["spot"], swap["contract"]) == ("ETH-PERP", "swap", True,
                                                                                          False, True)
        assert (swap["linear"], swap["inverse"], swap["settle"], swap["contractSize"]) == (True, False, "USDC", 1.0)
        assert swap["precision"] == {"amount": 0.001, "price": 0.01}
        assert swap["limits"]["leverage"] == {"min": 1, "max": 5.0}  # an initial margin of 20%
        assert swap["limits"]["amount"] == {"min": 0.001, "max": 1000.0}
        assert markets["ETH/USDC"]["type"] == "spot"
        for market in markets.values():
            check_market(exchange, SKIPPED, "fetchMarkets", market)
        assert exchange.fetch_positions() == []
        tiers = exchange.fetch_market_leverage_tiers(SWAP)  # 5x up to 50,000, 4x to 100,000, ... 1x to 1,000,000
        assert [(t["tier"], t["minNotional"], t["maxNotional"], t["maxLeverage"]) for t in tiers] == [
            (1, 0.0, 50_000.0, 5), (2, 50_000.0, 100_000.0, 4), (3, 100_000.0, 200_000.0, 3),
            (4, 200_000.0, 500_000.0, 2), (5, 500_000.0, 1_000_000.0, 1)]
        assert {t["maintenanceMarginRate"] for t in tiers} == {0.1}
        for tier in tiers:
            check_leverage_tier(exchange, SKIPPED, "fetchMarketLeverageTiers", tier)
        assert list(exchange.fetch_leverage_tiers()) == [SWAP]

        bought = exchange.create_order(SWAP, "limit", "buy", 1, 3000, {"timeInForce": "IOC"})
        assert (bought["status"], bought["filled"], bought["symbol"], bought["reduceOnly"]) == ("closed", 1.0, SWAP,
                                                                                              False)
        check_order(exchange, SKIPPED, "createOrder", bought, SWAP, exchange.milliseconds())
        [position] = exchange.fetch_positions([SWAP])
        check_position(exchange, SKIPPED, "fetchPositions", position, SWAP, exchange.milliseconds())
        # 1,000 USDC less the 0.2% taker fee on 3,000 is 994; margins 20% and 10% of the notional
        assert (position["side"], position["contracts"], position["contractSize"]) == ("long", 1.0, 1.0)
        assert (position["entryPrice"], position["markPrice"], position["notional"]) == (3000.0, 3000.0, 3000.0)
        assert (position["unrealizedPnl"], position["marginMode"], position["collateral"]) == (0.0, "cross", 994.0)
        assert (position["initialMargin"], position["maintenanceMargin"]) == (600.0, 300.0)
        assert (position["initialMarginPercentage"], position["maintenanceMarginPercentage"]) == (0.2, 0.1)
        assert position["leverage"] == pytest.approx(3000 / 994)
        assert position["liquidationPrice"] == pytest.approx((3000 - 994) / 0.9, abs=1e-9)
        assert exchange.fetch_position(SWAP)["contracts"] == 1.0
        ticker = exchange.fetch_ticker(SWAP)
        assert (ticker["last"], ticker["bid"], ticker["ask"], ticker["markPrice"], ticker["indexPrice"]) == (
            3000.0, 2990.0, 3000.0, 3000.0, 3000.0)
        check_ticker(exchange, SKIPPED, "fetchTicker", ticker, SWAP)

        rate = exchange.fetch_funding_rate(SWAP)
        assert (rate["symbol"], rate["markPrice"], rate["indexPrice"], rate["fundingRate"], rate["interval"]) == (
            SWAP, 3000.0, 3000.0, 0.0, "1h")
        assert list(exchange.fetch_funding_rates()) == [SWAP]
        assert exchange.fetch_funding_rate_history(SWAP) == []
        on_node(lambda: peers.price(2900, 3_601_000))  # checkpoint time crosses the first funding interval
        [funding] = exchange.fetch_funding_rate_history(SWAP)
        check_funding_history(exchange, SKIPPED, "fetchFundingRateHistory", funding, SWAP)
        history = on_node(lambda: peers.node.funding_history("ETH-PERP"))
        assert (funding["timestamp"], funding["fundingRate"]) == (3_601_000, float(history[0]["rate"]) / 10**9)
        assert exchange.fetch_positions()[0]["unrealizedPnl"] == -100.0

        on_node(lambda: peers.price(2400, 3_602_000))  # worth 394, below its initial margin of 480
        with pytest.raises(ccxt.InsufficientFunds, match="insufficient_margin"):  # only orders that reduce
            exchange.create_order(SWAP, "limit", "buy", 0.1, 2400)
        with pytest.raises(ccxt.BadSymbol, match="not a perpetual"):
            exchange.fetch_funding_rate("ETH/USDC")
        resting = exchange.create_order(SWAP, "limit", "sell", 0.1, 3100, {"reduceOnly": True})
        assert (resting["status"], resting["reduceOnly"]) == ("open", True)
        for name in (SWAP, "ETH-PERP"):  # the unified symbol or the node's id
            assert [order["id"] for order in exchange.fetch_open_orders(name)] == [resting["id"]]
        assert exchange.cancel_order(resting["id"])["status"] == "canceled"
        owed = int(exchange.fetch_positions()[0]["info"]["pending_funding"])
        assert owed > 0  # the book's bid at 2,990 above the oracle's 2,900: a premium, and longs pay
        assert exchange.fetch_funding_history(SWAP) == []  # not settled yet: the position was not touched
        closed = exchange.create_order(SWAP, "market", "sell", 1, None, {"reduceOnly": True})
        [paid] = exchange.fetch_funding_history(SWAP)
        assert (paid["symbol"], paid["code"], paid["amount"]) == (SWAP, "USDC", -owed / 10**9)
        assert paid["timestamp"] == 3_602_000  # settled by the close, in the epoch after that checkpoint
        assert exchange.fetch_funding_history() == [paid]
        assert (closed["status"], closed["reduceOnly"], closed["average"]) == ("closed", True, 2990.0)
        assert exchange.fetch_positions() == []
        with pytest.raises(ccxt.InvalidOrder, match="nothing_to_reduce"):
            exchange.create_order(SWAP, "limit", "sell", 1, 2990, {"reduceOnly": True})
        on_node(lambda: peers.certify(3_602_000 + 120_000))  # two minutes without an oracle price
        with pytest.raises(ccxt.InvalidOrder, match="oracle_stale"):
            exchange.create_order(SWAP, "limit", "buy", 0.1, 2900)

    against_perp_node(tmp_path, strategy)


def test_the_async_class_trades_a_swap_under_asyncio(tmp_path: Path) -> None:
    def strategy(data_dir: str, peers: AnnouncingPeers) -> Any:
        async def run() -> Any:
            exchange = parley_async({"apiKey": data_dir})
            try:
                await exchange.load_markets()
                sold = await exchange.create_order(SWAP, "limit", "sell", 0.5, 2990, {"timeInForce": "IOC"})
                positions, rate = await asyncio.gather(exchange.fetch_positions(), exchange.fetch_funding_rate(SWAP))
                return sold, positions, rate
            finally:
                await exchange.close()

        return asyncio.run(run())

    sold, positions, rate = against_perp_node(tmp_path, strategy)
    assert (sold["status"], sold["filled"]) == ("closed", 0.5)
    assert [(p["symbol"], p["side"], p["contracts"], p["entryPrice"]) for p in positions] == [(SWAP, "short", 0.5,
                                                                                              2990.0)]
    assert rate["markPrice"] == 3000.0


def test_pro_watch_positions_follows_the_positions_topic(tmp_path: Path) -> None:
    def strategy(data_dir: str, peers: AnnouncingPeers) -> Any:
        async def run() -> Any:
            exchange = parley_pro({"apiKey": data_dir})
            seen = []
            try:
                seen.append(list(await exchange.watch_positions()))  # the snapshot: none
                opened = asyncio.ensure_future(exchange.watch_positions([SWAP]))
                await asyncio.sleep(0.3)
                await exchange.create_order(SWAP, "limit", "buy", 1, 3000, {"timeInForce": "IOC"})
                seen.append([dict(p) for p in await opened])
                closing = asyncio.ensure_future(exchange.watch_positions())
                await asyncio.sleep(0.3)
                await exchange.create_order(SWAP, "market", "sell", 1, None, {"reduceOnly": True})
                seen.append([dict(p) for p in await closing])
            finally:
                await exchange.close()
            return seen

        return asyncio.run(run())

    snapshot, opened, closed = against_perp_node(tmp_path, strategy)
    assert snapshot == []
    assert [(p["symbol"], p["side"], p["contracts"], p["entryPrice"], p["marginMode"]) for p in opened] == [
        (SWAP, "long", 1.0, 3000.0, "cross")]
    assert opened[0]["initialMargin"] == 600.0
    assert [(p["symbol"], p["side"], p["contracts"]) for p in closed] == [(SWAP, "long", 0.0)]


OFFLINE = parley()
OFFLINE.set_markets([OFFLINE.parse_market(market_json(WIDE))])


@given(st.integers(WIDE.min_price // WIDE.tick_size, WIDE.max_price // WIDE.tick_size),
       st.integers(WIDE.min_qty // WIDE.step_size, WIDE.max_qty // WIDE.step_size))
def test_any_swap_price_and_amount_on_the_grid_round_trips_exactly(ticks: int, steps: int) -> None:
    """As for spot: e9 -> ccxt's float -> ccxt's rounding -> e9 is the same integer for every
    price on the swap's tick grid and amount on its step grid, by its unified symbol or its id."""
    price, qty = ticks * WIDE.tick_size, steps * WIDE.step_size
    for name in (SWAP, "ETH-PERP"):
        assert to_e9(OFFLINE.price_to_precision(name, OFFLINE.parse_number(from_e9(price)))) == str(price)
        assert to_e9(OFFLINE.amount_to_precision(name, OFFLINE.parse_number(from_e9(qty)))) == str(qty)
