"""The ccxt classes against a real node behind the real API (`trading_kit`): every unified
method, the error mapping, the async class under asyncio, the pro ``watch_*`` over the node's
WebSocket, ccxt's own structure checks, and the e9 rounding both ways.

"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
from ccxt.test.exchange.base.test_balance import test_balance as check_balance
from ccxt.test.exchange.base.test_market import test_market as check_market
from ccxt.test.exchange.base.test_order import test_order as check_order
from ccxt.test.exchange.base.test_order_book import test_order_book as check_order_book
from ccxt.test.exchange.base.test_ticker import test_ticker as check_ticker
from ccxt.test.exchange.base.test_trade import test_trade as check_trade
from hypothesis import given
from hypothesis import strategies as st

from channel.api.ccxt import from_e9, install, parley, parley_async, parley_pro, to_e9
from channel.runtime.trading import market_json
from tests.channel.api.ccxt_kit import a_seller, against_node, under_asyncio
from tests.channel.api.trading_kit import MARKET, SYMBOL


def test_markets_balance_and_a_resting_order_round_trip(tmp_path: Path) -> None:
    def strategy(data_dir: str) -> None:
        exchange = parley({"apiKey": data_dir})
        market = exchange.load_markets()[SYMBOL]
        assert (market["type"], market["spot"], market["base"], market["quote"]) == ("spot", True, "ETH", "USDC")
        assert market["precision"] == {"amount": 0.001, "price": 0.01}
        assert market["limits"]["amount"] == {"min": 0.001, "max": 1000.0}
        assert market["limits"]["price"] == {"min": 0.01, "max": 1_000_000.0}
        assert (market["maker"], market["taker"]) == (0.0002, 0.0005)
        assert exchange.fetch_trading_fees()[SYMBOL]["taker"] == 0.0005
        balance = exchange.fetch_balance()
        assert balance["ETH"] == {"free": 10.0, "used": 0.0, "total": 10.0}
        assert balance["USDC"]["total"] == 100_000.0

        placed = exchange.create_order(SYMBOL, "limit", "buy", 0.1, 2000, {"clientOrderId": "bid-1"})
        assert (placed["status"], placed["amount"], placed["price"], placed["clientOrderId"]) == ("open", 0.1, 2000.0,
                                                                                                   "bid-1")
        assert placed["timeInForce"] == "GTC"
        assert placed["postOnly"] is False
        again = exchange.create_order(SYMBOL, "limit", "buy", 0.1, 2000, {"clientOrderId": "bid-1"})
        assert again["id"] == placed["id"]  # the request_id: a retried clientOrderId places nothing more
        used = exchange.fetch_balance()["USDC"]["used"]
        assert used >= 200.0  # held: the notional and its fee

        assert exchange.fetch_order_book(SYMBOL)["bids"] == [[2000.0, 0.1]]
        ticker = exchange.fetch_ticker(SYMBOL)
        assert (ticker["bid"], ticker["bidVolume"], ticker["ask"], ticker["last"]) == (2000.0, 0.1, None, None)
        assert [order["id"] for order in exchange.fetch_open_orders(SYMBOL)] == [placed["id"]]
        assert exchange.fetch_order(placed["id"])["status"] == "open"

        cancelled = exchange.cancel_order(placed["id"], SYMBOL)
        assert cancelled["status"] == "canceled"
        assert exchange.fetch_open_orders() == []
        assert [order["id"] for order in exchange.fetch_closed_orders(SYMBOL)] == [placed["id"]]
        assert exchange.fetch_balance()["USDC"] == {"free": 100_000.0, "used": 0.0, "total": 100_000.0}

        post_only = exchange.create_order(SYMBOL, "limit", "sell", 0.25, 2500.5, {"postOnly": True})
        assert (post_only["timeInForce"], post_only["postOnly"], post_only["price"]) == ("PO", True, 2500.5)
        gone = exchange.cancel_all_orders(SYMBOL)
        assert [(order["id"], order["status"]) for order in gone] == [(post_only["id"], "canceled")]

    against_node(tmp_path, strategy)


def test_a_market_order_takes_the_book_and_shows_as_trades(tmp_path: Path) -> None:
    def strategy(data_dir: str) -> None:
        exchange = parley({"apiKey": data_dir})
        taken = exchange.create_order(SYMBOL, "market", "buy", 0.2)
        assert (taken["status"], taken["filled"], taken["remaining"], taken["average"]) == ("closed", 0.2, 0.0, 2001.0)
        assert taken["cost"] == 400.2
        assert taken["timeInForce"] == "IOC"
        assert taken["fee"] == {"cost": 0.2001, "currency": "USDC"}  # 5 bps of 400.2, in the quote
        (mine,) = exchange.fetch_my_trades(SYMBOL)
        assert (mine["order"], mine["side"], mine["takerOrMaker"], mine["price"], mine["amount"]) == (
            taken["id"], "buy", "taker", 2001.0, 0.2)
        (public,) = exchange.fetch_trades(SYMBOL)
        assert public["id"] == mine["id"]
        assert public["takerOrMaker"] is None
        assert exchange.fetch_ticker(SYMBOL)["last"] == 2001.0
        assert exchange.fetch_order_book(SYMBOL, 5)["asks"] == [[2001.0, 0.8]]
        assert [order["id"] for order in exchange.fetch_closed_orders()] == [taken["id"]]
        balance = exchange.fetch_balance()
        assert balance["ETH"]["total"] == 10.2
        assert balance["USDC"]["total"] == 100_000 - 400.2 - 0.2001

    against_node(tmp_path, strategy, a_seller)


def test_errors_map_to_ccxts_hierarchy(tmp_path: Path) -> None:
    def strategy(data_dir: str) -> None:
        exchange = parley({"apiKey": data_dir})
        with pytest.raises(ccxt.InsufficientFunds, match="insufficient_balance"):
            exchange.create_order(SYMBOL, "limit", "buy", 900, 2000)
        with pytest.raises(ccxt.InvalidOrder, match="post_only_would_cross"):
            exchange.create_order(SYMBOL, "limit", "buy", 0.1, 2001, {"postOnly": True})
        with pytest.raises(ccxt.InvalidOrder, match="reduce_only_not_spot"):
            exchange.create_order(SYMBOL, "limit", "buy", 0.1, 1999, {"reduceOnly": True})
        with pytest.raises(ccxt.InvalidOrder, match="qty_out_of_range"):
            exchange.create_order(SYMBOL, "limit", "buy", 2000, 0.01)
        with pytest.raises(ccxt.NotSupported, match="FOK"):
            exchange.create_order(SYMBOL, "limit", "buy", 0.1, 1999, {"timeInForce": "FOK"})
        with pytest.raises(ccxt.BadSymbol):
            exchange.fetch_order_book("BTC/USDC")
        missing = "0x" + "ab" * 32
        with pytest.raises(ccxt.OrderNotFound):
            exchange.fetch_order(missing)
        with pytest.raises(ccxt.OrderNotFound, match="unknown_order"):
            exchange.cancel_order(missing)
        with pytest.raises(ccxt.BadRequest, match="order"):
            exchange.fetch_order("0x12")
        with pytest.raises(ccxt.AuthenticationError):
            parley({"apiKey": data_dir, "secret": "wrong"}).fetch_markets()
        with pytest.raises(ccxt.AuthenticationError, match=r"api\.json"):
            parley({"apiKey": data_dir + "-missing"}).fetch_markets()

    against_node(tmp_path, strategy, a_seller)
    # the node is down now: its api.json still names its port
    with pytest.raises(ccxt.NetworkError):
        parley({"apiKey": str(tmp_path / "node0")}).fetch_markets()

    async def down() -> None:
        exchange = parley_async({"apiKey": str(tmp_path / "node0")})
        try:
            with pytest.raises(ccxt.NetworkError):
                await exchange.fetch_balance()
        finally:
            await exchange.close()

    asyncio.run(down())


@pytest.mark.parametrize(("error", "raised"), [
    ({"code": -32001, "message": "rejected", "data": {"reason": "insufficient_balance"}}, ccxt.InsufficientFunds),
    ({"code": -32001, "message": "rejected", "data": {"reason": "bad_tick"}}, ccxt.InvalidOrder),
    ({"code": -32001, "message": "rejected", "data": {"reason": "insufficient_margin"}}, ccxt.InsufficientFunds),
    ({"code": -32001, "message": "rejected", "data": {"reason": "market_halted"}}, ccxt.InvalidOrder),
    ({"code": -32001, "message": "rejected", "data": {"reason": "oracle_stale"}}, ccxt.InvalidOrder),
    ({"code": -32001, "message": "rejected", "data": {"reason": "order_not_open"}}, ccxt.OrderNotFound),
    ({"code": -32001, "message": "rejected", "data": {"reason": "request_id_conflict"}}, ccxt.DuplicateOrderId),
    ({"code": -32602, "message": "no market 'BTC/USDC' in this channel"}, ccxt.BadSymbol),
    ({"code": -32602, "message": "limit must be between 1 and 1000"}, ccxt.BadRequest),
    ({"code": -32004, "message": "no order 0x12"}, ccxt.OrderNotFound),
    ({"code": -32002, "message": "not ready"}, ccxt.ExchangeNotAvailable),
    ({"code": -32003, "message": "the node cannot store the operation"}, ccxt.ExchangeNotAvailable),
    ({"code": -32603, "message": "internal error"}, ccxt.ExchangeError),
])
def test_each_json_rpc_error_has_its_ccxt_exception(error: dict[str, Any], raised: type[Exception]) -> None:
    with pytest.raises(raised) as caught:
        parley().raise_rpc_error(error)
    assert type(caught.value) is raised  # the exact class, not only a base of it
    assert error["message"] in str(caught.value)


def test_the_async_class_under_asyncio(tmp_path: Path) -> None:
    async def strategy(data_dir: str) -> tuple[Any, ...]:
        exchange = parley_async({"apiKey": data_dir})
        try:
            await exchange.load_markets()
            taken = await exchange.create_order(SYMBOL, "limit", "buy", 0.5, 2001)
            book, trades, balance = await asyncio.gather(
                exchange.fetch_order_book(SYMBOL), exchange.fetch_my_trades(), exchange.fetch_balance())
            with pytest.raises(ccxt.OrderNotFound, match="order_not_open"):
                await exchange.cancel_order(taken["id"])
            return taken, book, trades, balance
        finally:
            await exchange.close()

    taken, book, trades, balance = against_node(tmp_path, under_asyncio(strategy), a_seller)
    assert (taken["status"], taken["filled"]) == ("closed", 0.5)
    assert book["asks"] == [[2001.0, 0.5]]
    assert [t["order"] for t in trades] == [taken["id"]]
    assert balance["ETH"]["total"] == 10.5


def levels(book: Any) -> tuple[Any, ...]:
    """A copy of a watched book's levels and nonce (the book itself changes with each delta)."""
    return [list(level) for level in book["bids"]], [list(level) for level in book["asks"]], book["nonce"]


def test_pro_watches_the_node_websocket(tmp_path: Path) -> None:
    async def strategy(data_dir: str) -> dict[str, Any]:
        exchange = parley_pro({"apiKey": data_dir})
        seen: dict[str, Any] = {}
        try:
            snapshot = await exchange.watch_order_book(SYMBOL)
            seen["snapshot"] = levels(snapshot)
            orders = asyncio.ensure_future(exchange.watch_orders(SYMBOL))
            delta = asyncio.ensure_future(exchange.watch_order_book(SYMBOL))
            await asyncio.sleep(0.5)  # the subscriptions are answered before the order
            bid = await exchange.create_order(SYMBOL, "limit", "buy", 0.1, 2000)
            seen["orders"] = [(order["id"] == bid["id"], order["status"]) for order in await orders]
            book = await delta
            seen["delta"] = levels(book)
            watches = [asyncio.ensure_future(watch) for watch in (
                exchange.watch_balance(), exchange.watch_trades(SYMBOL), exchange.watch_my_trades(SYMBOL))]
            await asyncio.sleep(0.5)
            taken = await exchange.create_order(SYMBOL, "market", "buy", 0.2)
            balance, trades, mine = await asyncio.gather(*watches)
            seen["balance"] = balance["ETH"]
            seen["trades"] = [(trade["price"], trade["amount"]) for trade in trades]
            seen["mine"] = [(trade["order"] == taken["id"], trade["takerOrMaker"]) for trade in mine]
        finally:
            await exchange.close()
        return seen

    seen = against_node(tmp_path, under_asyncio(strategy), a_seller)
    assert seen["snapshot"] == ([], [[2001.0, 1.0]], 0)
    assert seen["orders"] == [(True, "open")]
    assert seen["delta"] == ([[2000.0, 0.1]], [[2001.0, 1.0]], 1)
    assert seen["balance"]["total"] == 10.2
    assert seen["trades"] == [(2001.0, 0.2)]
    assert seen["mine"] == [(True, "taker")]


def test_pro_a_book_gap_fails_the_watch_and_the_next_one_starts_from_a_snapshot(tmp_path: Path) -> None:
    async def strategy(data_dir: str) -> tuple[Any, ...]:
        exchange = parley_pro({"apiKey": data_dir})
        try:
            await exchange.watch_order_book(SYMBOL)
            exchange.orderbooks[SYMBOL]["nonce"] -= 1  # as if a delta had been lost
            waiting = asyncio.ensure_future(exchange.watch_order_book(SYMBOL))
            await asyncio.sleep(0.2)
            await exchange.create_order(SYMBOL, "limit", "buy", 0.1, 2000)
            with pytest.raises(ccxt.InvalidNonce, match="skipped"):
                await waiting
            return levels(await exchange.watch_order_book(SYMBOL))
        finally:
            await exchange.close()

    assert against_node(tmp_path, under_asyncio(strategy), a_seller) == ([[2000.0, 0.1]], [[2001.0, 1.0]], 1)


def test_ccxts_own_structure_checks_pass(tmp_path: Path) -> None:
    """ccxt's unified-API checks (ccxt/test/exchange/base) of each structure the node returns.
    Skipped, since the node has no clock of its own in these answers: timestamps (None)."""
    skipped = {"timestamp": True, "datetime": True}

    def strategy(data_dir: str) -> None:
        exchange = parley({"apiKey": data_dir})
        now = exchange.milliseconds()
        for market in exchange.load_markets().values():
            check_market(exchange, skipped, "fetchMarkets", market)
        bid = exchange.create_order(SYMBOL, "limit", "buy", 0.1, 2000)
        taken = exchange.create_order(SYMBOL, "market", "buy", 0.2)
        for order in (bid, taken, *exchange.fetch_open_orders(SYMBOL), *exchange.fetch_closed_orders(SYMBOL)):
            check_order(exchange, skipped, "fetchOrder", order, SYMBOL, now)
        for trade in exchange.fetch_trades(SYMBOL):
            check_trade(exchange, skipped, "fetchTrades", trade, SYMBOL, now, True)
        for trade in exchange.fetch_my_trades(SYMBOL):
            check_trade(exchange, skipped, "fetchMyTrades", trade, SYMBOL, now, False)
        check_balance(exchange, skipped, "fetchBalance", exchange.fetch_balance())
        check_order_book(exchange, skipped, "fetchOrderBook", exchange.fetch_order_book(SYMBOL), SYMBOL)
        check_ticker(exchange, skipped, "fetchTicker", exchange.fetch_ticker(SYMBOL), SYMBOL)

    against_node(tmp_path, strategy, a_seller)


def test_install_registers_the_three_classes() -> None:
    install()
    assert ccxt.parley is parley
    assert "parley" in ccxt.exchanges
    assert ccxt.async_support.parley is parley_async
    assert ccxt.pro.parley is parley_pro
    has = parley().has
    assert has["createOrder"]
    assert has["fetchMyTrades"]
    assert not has["fetchOHLCV"]
    assert has["swap"]
    assert has["fetchPositions"]
    assert has["fetchFundingRateHistory"]
    assert has["fetchFundingHistory"]
    assert not has["setLeverage"]  # cross margin: the leverage is what the account's value carries
    assert parley_pro().has["watchOrderBook"]
    assert parley_pro().has["watchPositions"]


OFFLINE = parley()
OFFLINE.set_markets([OFFLINE.parse_market(market_json(MARKET))])


@given(st.integers(MARKET.min_price // MARKET.tick_size, MARKET.max_price // MARKET.tick_size),
       st.integers(MARKET.min_qty // MARKET.step_size, MARKET.max_qty // MARKET.step_size))
def test_any_price_and_amount_on_the_grid_round_trips_exactly(ticks: int, steps: int) -> None:
    """e9 -> ccxt's float -> ccxt's own rounding -> e9 gives the same integer, for every price
    on the tick grid and amount on the step grid of the market's range."""
    price, qty = ticks * MARKET.tick_size, steps * MARKET.step_size
    as_float = OFFLINE.parse_number(from_e9(price)), OFFLINE.parse_number(from_e9(qty))
    assert to_e9(OFFLINE.price_to_precision(SYMBOL, as_float[0])) == str(price)
    assert to_e9(OFFLINE.amount_to_precision(SYMBOL, as_float[1])) == str(qty)


def test_off_grid_values_round_as_ccxt_rounds_and_e9_refuses_more_places() -> None:
    assert OFFLINE.amount_to_precision(SYMBOL, 0.12345) == "0.123"  # amounts truncate
    assert OFFLINE.price_to_precision(SYMBOL, 2000.005) == "2000.01"  # prices round
    assert to_e9("0.000000001") == "1"
    assert from_e9("1") == "0.000000001"
    assert from_e9("2000000000000") == "2000"
    with pytest.raises(ccxt.InvalidOrder):
        to_e9("0.0000000001")
