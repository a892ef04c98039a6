"""ccxt exchange classes for a Parley node: existing ccxt strategies trade on a channel unchanged.

`install()` registers three classes under the id ``parley``: `parley` in ``ccxt`` (sync, over
ccxt's requests session), `parley_async` in ``ccxt.async_support`` (asyncio, aiohttp) and
`parley_pro` in ``ccxt.pro`` (the async class plus ``watch_*`` over the node's WebSocket)::

    install()
    exchange = ccxt.parley({"apiKey": "DIR/node0"})   # the node's data dir: api.json, api-token
    exchange.create_order("ETH/USDC", "limit", "buy", 0.1, 2000)

Credentials: ``apiKey`` is the node's data directory (its ``api.json`` gives the URL and its
``api-token`` the bearer token); ``secret``, when set, is the token, and ``urls["api"]["rpc"]``
an explicit URL (``http://127.0.0.1:PORT``). The transport is the node's JSON-RPC (``POST /rpc``)
carried by ccxt's own `fetch`, and its ``/ws`` carried by ccxt's WebSocket client.

A perp market is ccxt's linear swap ``BASE/QUOTE:QUOTE`` (``ETH/USDC:USDC`` for ETH-PERP:
settled in its quote token, ``contractSize`` 1, cross margin): `create_order` takes ``reduceOnly``,
`fetch_positions` and `fetch_position` read ``parley_account`` (each position with its margins,
and the account's value as its collateral and leverage), `fetch_funding_rate(s)` read
``parley_markPrices`` and `fetch_funding_rate_history` ``parley_fundingHistory``; the pro class's
`watch_positions` follows the node's ``positions`` topic, and `fetch_funding_history` (the
account's own payments) reads ``parley_fundingPayments``.

Every unified method is written once, as a generator of JSON-RPC calls (`_Steps`): it yields a
call (or a list of calls, sent as one JSON-RPC batch) and receives the results; the sync class
drives it with `request`, the async one with ``await request``. Amounts cross the boundary as
ccxt numbers (floats) and decimal strings; inside the node they are e9 integers (`to_e9`,
`from_e9`: exact, no float arithmetic on the way in).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
from ccxt.async_support.base.ws.cache import ArrayCache, ArrayCacheBySymbolById
from ccxt.base.decimal_to_precision import TICK_SIZE
from ccxt.base.errors import (
    ArgumentsRequired,
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DuplicateOrderId,
    ExchangeError,
    ExchangeNotAvailable,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    NetworkError,
    NotSupported,
    OrderNotFound,
)

E9 = 10**9
Call = tuple[str, dict[str, Any]]
_Steps = Generator[Call | list[Call], Any, Any]
BATCH = 100  # the node answers batches of at most 100 requests
TIF_IN = {"GTC": "gtc", "IOC": "ioc", "PO": "post_only"}
TIF_OUT = {value: key for key, value in TIF_IN.items()}
STATUS = {"open": "open", "pending": "open", "filled": "closed", "expired": "expired"}  # else canceled/rejected
REJECTED, NOT_READY, STORAGE, NOT_FOUND, INVALID_PARAMS = -32001, -32002, -32003, -32004, -32602


def to_e9(value: Any) -> str:
    """A ccxt amount or price (a number or a decimal string) as an e9 decimal string; refuses a
    value with more than 9 decimal places rather than round it."""
    number = Decimal(str(value)).scaleb(9)
    if number != number.to_integral_value():
        raise InvalidOrder(f"parley {value} has more than 9 decimal places")
    return str(int(number))


def from_e9(value: Any) -> str | None:
    """An e9 decimal string as ccxt's decimal string of whole units: "1500000000" -> "1.5"."""
    if value is None:
        return None
    text = format(Decimal(int(value)).scaleb(-9), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _node_files(data_dir: str) -> tuple[str, str]:
    """The URL and token a running node wrote in its data directory."""
    folder = Path(data_dir).expanduser()
    try:
        url = json.loads((folder / "api.json").read_text())["url"]
        token = (folder / "api-token").read_text().strip()
    except (OSError, ValueError, KeyError) as exc:
        raise AuthenticationError(f"parley: no running node's api.json and api-token in {folder}: {exc}") from exc
    return str(url), token


_Untyped: Any = object  # ccxt is untyped: its Exchange follows `_Parley` in the classes' MRO


class _Parley(_Untyped):  # type: ignore[misc]
    """What the three classes share: the description, the signing of JSON-RPC requests, the
    error mapping, the parsers, and the unified methods as generators of calls."""

    def describe(self) -> Any:
        return self.deep_extend(super().describe(), {
            "id": "parley",
            "name": "Parley",
            "countries": [],
            "version": "1",
            "rateLimit": 0,
            "pro": True,
            "precisionMode": TICK_SIZE,
            "requiredCredentials": {"apiKey": False, "secret": False},
            "has": {
                "CORS": None, "spot": True, "margin": False, "swap": True, "future": False, "option": False,
                "cancelAllOrders": True, "cancelOrder": True, "createOrder": True, "createOrders": True,
                "createMarketOrder": True,
                "createLimitOrder": True, "createPostOnlyOrder": True, "createReduceOnlyOrder": True,
                "fetchBalance": True, "fetchClosedOrders": True, "fetchMarkets": True, "fetchMyTrades": True,
                "fetchOpenOrders": True, "fetchOrder": True, "fetchOrderBook": True, "fetchL2OrderBook": True,
                "fetchTicker": True, "fetchTrades": True, "fetchTradingFees": True,
                "fetchCurrencies": False, "fetchOHLCV": False, "fetchOrders": False, "fetchTickers": False,
                "fetchPositions": True, "fetchPosition": True, "fetchFundingRate": True, "fetchFundingRates": True,
                "fetchFundingRateHistory": True, "fetchFundingHistory": True, "fetchMarkPrices": False,
                "fetchLeverage": False, "fetchLeverageTiers": True, "fetchMarketLeverageTiers": True,
                "setLeverage": False, "setMarginMode": False, "fetchMarginMode": False,
                "crossMargin": True, "isolatedMargin": False,
                "fetchDeposits": False, "fetchWithdrawals": False, "withdraw": False, "transfer": False,
                "editOrder": False, "fetchStatus": False, "fetchTime": False,
                "ws": True, "watchOrderBook": True, "watchTrades": True, "watchOrders": True,
                "watchMyTrades": True, "watchBalance": True, "watchTicker": False, "watchPositions": True,
                "watchOHLCV": False,
            },
            "urls": {"api": {"rpc": None, "ws": None}},  # from the data dir (apiKey) unless set
            "api": {"private": {"post": {"rpc": 1}}},
            "options": {"account": None},
            "exceptions": {
                "exact": {
                    "insufficient_balance": InsufficientFunds,
                    "insufficient_margin": InsufficientFunds,  # a perp order or withdrawal beyond the margin
                    "unknown_order": OrderNotFound,
                    "not_order_owner": OrderNotFound,
                    "order_not_open": OrderNotFound,
                    "unknown_market": BadSymbol,
                    "request_id_conflict": DuplicateOrderId,  # a clientOrderId reused for another order
                    str(NOT_FOUND): OrderNotFound,
                    str(NOT_READY): ExchangeNotAvailable,
                    str(STORAGE): ExchangeNotAvailable,
                    str(INVALID_PARAMS): BadRequest,
                },
                "broad": {"no market": BadSymbol},  # a read of a market the genesis lacks (-32602)
            },
        })

    # -- transport ------------------------------------------------------------------------------

    def node_api(self) -> tuple[str, str]:
        """The node's base URL and bearer token, from ``urls`` and ``secret`` or the data dir."""
        url = self.urls["api"].get("rpc")
        token = self.secret
        if not url or not token:
            if not self.apiKey:
                raise AuthenticationError("parley needs apiKey (the node's data dir) or urls.api.rpc and secret")
            found_url, found_token = _node_files(self.apiKey)
            url, token = url or found_url, token or found_token
        return str(url).rstrip("/"), str(token)

    def sign(self, path: str, api: Any = "private", method: str = "POST", params: Any = None,
             headers: Any = None, body: Any = None) -> dict[str, Any]:
        url, token = self.node_api()
        calls = params if isinstance(params, list) else [params]
        envelopes = [{"jsonrpc": "2.0", "id": index, "method": name, "params": args}
                     for index, (name, args) in enumerate(calls)]
        payload = envelopes if isinstance(params, list) else envelopes[0]
        return {"url": url + "/" + path, "method": "POST", "body": self.json(payload),
                "headers": {"Authorization": "Bearer " + token, "Content-Type": "application/json"}}

    def handle_errors(self, code: int, reason: str, url: str, method: str, headers: Any, body: str,
                      response: Any, request_headers: Any, request_body: Any) -> None:
        if code == 401:
            raise AuthenticationError(f"parley {body}")
        answers = response if isinstance(response, list) else [response]
        for answer in answers:
            if isinstance(answer, dict) and answer.get("error") is not None:
                self.raise_rpc_error(answer["error"])

    def raise_rpc_error(self, error: dict[str, Any]) -> None:
        """A JSON-RPC error as ccxt's exception: the replay reason picks it (a rejected order is
        InvalidOrder with the reason in the message), else the error code."""
        code = error.get("code")
        message = f"parley {error.get('message')}"
        data = error.get("data")
        reason = data.get("reason") if isinstance(data, dict) else None
        exact, broad = self.exceptions["exact"], self.exceptions["broad"]
        if reason is not None:
            self.throw_exactly_matched_exception(exact, reason, message)
            raise InvalidOrder(message)
        self.throw_broadly_matched_exception(broad, message, message)
        self.throw_exactly_matched_exception(exact, str(code), message)
        raise ExchangeError(message)

    @staticmethod
    def _results(calls: Call | list[Call], response: Any) -> Any:
        """The results of a call (or of a batch, in the order of its calls)."""
        if not isinstance(calls, list):
            return response["result"]
        by_id = {answer["id"]: answer["result"] for answer in response}
        return [by_id[index] for index in range(len(calls))]

    # -- parsers --------------------------------------------------------------------------------

    def e9_number(self, e9: Any) -> Any:
        return self.parse_number(from_e9(e9))

    def parse_market(self, market: dict[str, Any]) -> Any:
        """A spot market as ``BASE/QUOTE``; a perp market as ccxt's linear swap
        ``BASE/QUOTE:QUOTE`` (settled in its quote token, one contract per unit of base), its
        leverage limit from the initial margin rate (``1 / imr``)."""
        spot = market["kind"] == "spot"
        perp = market.get("perp")
        base, quote = market["base"], market["quote"]
        settle = None if perp is None else quote
        leverage: dict[str, Any] = {"min": None, "max": None}
        if perp is not None:
            leverage = {"min": 1, "max": self.parse_number(str(Decimal(E9) / Decimal(int(perp["imr"]))))}
        return self.safe_market_structure({
            "id": market["symbol"], "symbol": base + "/" + quote + ("" if settle is None else ":" + settle),
            "base": base, "quote": quote, "settle": settle, "baseId": base, "quoteId": quote, "settleId": settle,
            "type": "spot" if spot else "swap", "spot": spot, "margin": False, "swap": perp is not None,
            "future": False, "option": False, "active": True, "contract": perp is not None,
            "linear": None if perp is None else True, "inverse": None if perp is None else False,
            "taker": self.e9_number(market["taker_fee"]), "maker": self.e9_number(market["maker_fee"]),
            "contractSize": None if perp is None else self.parse_number("1"), "expiry": None,
            "expiryDatetime": None, "strike": None, "optionType": None,
            "precision": {"amount": self.e9_number(market["step_size"]), "price": self.e9_number(market["tick_size"])},
            "limits": {
                "amount": {"min": self.e9_number(market["min_qty"]), "max": self.e9_number(market["max_qty"])},
                "price": {"min": self.e9_number(market["min_price"]), "max": self.e9_number(market["max_price"])},
                "cost": {"min": None, "max": None}, "leverage": leverage,
            },
            "created": None, "info": market,
        })

    def parse_position(self, position: dict[str, Any], market: Any = None,
                       collateral: dict[str, Any] | None = None) -> Any:
        """A `parley_positions` row as ccxt's position (cross margin). Its initial and
        maintenance margins are the market's rates of its notional, rounded up as the ledger
        does; `collateral` (the account's margin in the market's quote token, from
        `parley_account`) gives its collateral, leverage and margin ratio (account-wide, as cross
        margin is), else they are None."""
        market = self.safe_market(position["market"], market)
        perp = market["info"]["perp"]
        notional = int(position["notional"])
        initial = -(-notional * int(perp["imr"]) // E9)
        maintenance = -(-notional * int(perp["mmr"]) // E9)
        value = int(collateral["account_value"]) if collateral is not None else None
        pnl = int(position["unrealised_pnl"])
        return self.safe_position({
            "info": position, "id": None, "symbol": market["symbol"], "timestamp": None, "datetime": None,
            "lastUpdateTimestamp": None, "hedged": False, "side": position["side"],
            "contracts": self.e9_number(position["size"]), "contractSize": market["contractSize"],
            "entryPrice": self.e9_number(position["entry_price"]), "markPrice": self.e9_number(position["mark_price"]),
            "lastPrice": None, "notional": self.e9_number(notional),
            "unrealizedPnl": self.e9_number(pnl), "realizedPnl": None,
            "percentage": self.parse_number(str(Decimal(pnl) * 100 / initial)) if initial else None,
            "liquidationPrice": self.e9_number(position["liquidation_price"]), "marginMode": "cross",
            "initialMargin": self.e9_number(initial), "initialMarginPercentage": self.e9_number(perp["imr"]),
            "maintenanceMargin": self.e9_number(maintenance),
            "maintenanceMarginPercentage": self.e9_number(perp["mmr"]),
            "collateral": self.e9_number(value) if value is not None else None,
            "leverage": self.parse_number(str(Decimal(notional) / value)) if value is not None and value > 0 else None,
            "marginRatio": (self.parse_number(str(Decimal(int(collateral["maintenance_margin"])) / value))
                            if collateral is not None and value is not None and value > 0 else None),
            "stopLossPrice": None, "takeProfitPrice": None,
        })

    def parse_funding_rate(self, mark: dict[str, Any], market: Any = None) -> Any:
        """A `parley_markPrices` row as ccxt's funding rate: the rate of the last funding interval
        (the node charges it when checkpoint time crosses the next), the oracle's price as both
        the mark and the index."""
        market = self.safe_market(mark["market"], market)
        interval = int(market["info"]["perp"]["funding_interval"])
        return {
            "info": mark, "symbol": market["symbol"], "markPrice": self.e9_number(mark["price"]),
            "indexPrice": self.e9_number(mark["price"]), "interestRate": None, "estimatedSettlePrice": None,
            "timestamp": None, "datetime": None, "fundingRate": self.e9_number(mark["funding_rate"]),
            "fundingTimestamp": None, "fundingDatetime": None, "nextFundingRate": None,
            "nextFundingTimestamp": None, "nextFundingDatetime": None, "previousFundingRate": None,
            "previousFundingTimestamp": None, "previousFundingDatetime": None,
            "interval": f"{interval // 3_600_000}h" if interval % 3_600_000 == 0 else f"{interval // 60_000}m",
        }

    def parse_funding(self, funding: dict[str, Any], market: Any) -> Any:
        """A `parley_fundingHistory` row as ccxt's funding rate history entry; its timestamp is
        the checkpoint's time (ms since 1970, the consensus clock)."""
        return {"info": funding, "symbol": market["symbol"], "fundingRate": self.e9_number(funding["rate"]),
                "timestamp": funding["time"], "datetime": self.iso8601(funding["time"])}

    def parse_balance(self, tokens: dict[str, Any]) -> Any:
        result: dict[str, Any] = {"info": tokens, "timestamp": None, "datetime": None}
        for token, parts in tokens.items():
            account = self.account()
            account["free"] = from_e9(parts["free"])
            account["used"] = from_e9(int(parts["held"]) + int(parts["locked"]))
            result[token] = account
        return self.safe_balance(result)

    def parse_trade(self, fill: dict[str, Any], market: Any = None) -> Any:
        market = self.safe_market(fill["market"], market)
        mine = "liquidity" in fill
        fee = {"cost": from_e9(fill["fee"]), "currency": market["quote"]} if mine else None
        return self.safe_trade({
            "info": fill, "id": fill["fill_id"], "order": fill["order"] if mine else None,
            "timestamp": None, "datetime": None, "symbol": market["symbol"], "type": None, "side": fill["side"],
            "takerOrMaker": fill["liquidity"] if mine else None, "price": from_e9(fill["price"]),
            "amount": from_e9(fill["qty"]), "cost": from_e9(fill["notional"]), "fee": fee,
        }, market)

    def parse_order_status(self, status: str) -> str:
        if status.startswith("rejected"):
            return "rejected"
        return STATUS.get(status, "canceled")

    def parse_order(self, order: dict[str, Any], market: Any = None) -> Any:
        """`parley_order`'s state, or an open order as level 3 and `parley_openOrders` give it."""
        market = self.safe_market(order.get("market"), market)
        fills = order.get("fills", [])
        cost = sum(int(fill["notional"]) for fill in fills)
        filled = sum(int(fill["qty"]) for fill in fills)
        tif = order.get("tif")
        return self.safe_order({
            "info": order, "id": order["order_id"], "clientOrderId": None,
            "timestamp": None, "datetime": None, "lastTradeTimestamp": None,
            "status": self.parse_order_status(order.get("status", "open")), "symbol": market["symbol"],
            "type": order.get("type"), "timeInForce": TIF_OUT.get(tif) if tif else None,
            "postOnly": tif == "post_only" if tif else None, "reduceOnly": order.get("reduce_only"),
            "side": order["side"], "price": from_e9(order["price"]), "triggerPrice": None,
            "amount": from_e9(order.get("qty")), "filled": from_e9(order.get("filled")),
            "remaining": from_e9(order["remaining"]), "cost": from_e9(cost) if fills else None,
            "average": str(Decimal(cost) / filled) if filled else None,
            "fee": {"cost": self.e9_number(sum(int(fill["fee"]) for fill in fills)), "currency": market["quote"]},
            "trades": [self.parse_trade(fill, market) for fill in fills],
        }, market)

    def parse_book(self, book: dict[str, Any], symbol: str) -> Any:
        def side(levels: list[list[str]]) -> list[list[Any]]:
            return [[self.e9_number(price), self.e9_number(qty)] for price, qty in levels]

        parsed = self.parse_order_book({"bids": side(book["bids"]), "asks": side(book["asks"])}, symbol)
        parsed["nonce"] = book.get("version", book.get("seq"))
        return parsed

    def parse_ticker(self, book: dict[str, Any], trades: list[dict[str, Any]], market: Any,
                     mark: dict[str, Any] | None = None) -> Any:
        """Best bid and ask, the last trade's price, and for a swap its oracle price (`mark`, a
        `parley_markPrices` row) as the mark and index prices."""
        last = from_e9(trades[-1]["price"]) if trades else None
        bid = book["bids"][0] if book["bids"] else [None, None]
        ask = book["asks"][0] if book["asks"] else [None, None]
        oracle = from_e9(mark["price"]) if mark is not None else None
        info = {"book": book, "trades": trades, **({"mark": mark} if mark is not None else {})}
        return self.safe_ticker({
            "symbol": market["symbol"], "timestamp": None, "datetime": None, "info": info,
            "bid": from_e9(bid[0]), "bidVolume": from_e9(bid[1]), "ask": from_e9(ask[0]),
            "askVolume": from_e9(ask[1]), "last": last, "close": last, "markPrice": oracle, "indexPrice": oracle,
        }, market)

    # -- the unified methods, as generators of calls --------------------------------------------

    def _account(self) -> _Steps:
        if self.options["account"] is None:
            stats = yield ("parley_stats", {})
            self.options["account"] = stats["address"]
        return self.options["account"]

    def _orders(self, ids: list[str], market: Any = None) -> _Steps:
        found: list[Any] = []
        for start in range(0, len(ids), BATCH):
            batch = [("parley_order", {"order": order_id}) for order_id in ids[start:start + BATCH]]
            found += (yield batch) if batch else []
        return [self.parse_order(order, market) for order in found]

    def steps_fetch_markets(self, params: Any = None) -> _Steps:
        markets = yield ("parley_markets", {})
        return [self.parse_market(market) for market in markets]

    def steps_fetch_trading_fees(self, params: Any = None) -> _Steps:
        return {symbol: {"info": market["info"], "symbol": symbol, "maker": market["maker"],
                         "taker": market["taker"], "percentage": True, "tierBased": False}
                for symbol, market in self.markets.items()}
        yield  # a generator that needs no call

    def steps_fetch_balance(self, params: Any = None) -> _Steps:
        account = yield from self._account()
        balances = yield ("parley_balances", {"account": account})
        return self.parse_balance(balances[account])

    def steps_fetch_order_book(self, symbol: str, limit: int | None = None, params: Any = None) -> _Steps:
        market = self.market(symbol)
        book = yield ("parley_orderBook", self.omit_none({"market": market["id"], "depth": limit}))
        return self.parse_book(book, market["symbol"])

    def steps_fetch_ticker(self, symbol: str, params: Any = None) -> _Steps:
        market = self.market(symbol)
        calls = [("parley_orderBook", {"market": market["id"], "depth": 1}),
                 ("parley_trades", {"market": market["id"], "limit": 1})]
        if market["swap"]:
            calls.append(("parley_markPrices", {}))
        book, trades, *marks = yield calls
        mark = next((row for row in marks[0] if row["market"] == market["id"]), None) if marks else None
        return self.parse_ticker(book, trades, market, mark)

    def steps_fetch_trades(self, symbol: str, since: int | None = None, limit: int | None = None,
                           params: Any = None) -> _Steps:
        market = self.market(symbol)
        fills = yield ("parley_trades", self.omit_none({"market": market["id"], "limit": limit}))
        return [self.parse_trade(fill, market) for fill in fills]

    def steps_fetch_my_trades(self, symbol: str | None = None, since: int | None = None,
                              limit: int | None = None, params: Any = None) -> _Steps:
        market = None if symbol is None else self.market(symbol)
        fills = yield ("parley_myTrades", self.omit_none({"market": market and market["id"], "limit": limit}))
        return [self.parse_trade(fill, market) for fill in fills]

    def _swap(self, symbol: str) -> Any:
        market = self.market(symbol)
        if not market["swap"]:
            raise BadSymbol(f"parley {symbol} is a spot market, not a perpetual swap")
        return market

    def steps_fetch_positions(self, symbols: list[str] | None = None, params: Any = None) -> _Steps:
        account = yield from self._account()
        state = yield ("parley_account", {"account": account})
        positions = [self.parse_position(row, None, state["collateral"].get(self.safe_market(row["market"])["quote"]))
                     for row in state["positions"]]
        return self.filter_by_array_positions(positions, "symbol", self.market_symbols(symbols))

    def steps_fetch_position(self, symbol: str, params: Any = None) -> _Steps:
        market = self._swap(symbol)
        positions = yield from self.steps_fetch_positions([market["symbol"]])
        return positions[0] if positions else self.safe_position({
            "info": None, "symbol": market["symbol"], "contracts": 0, "marginMode": "cross", "side": None})

    def leverage_tiers(self, market: Any) -> list[dict[str, Any]]:
        """A swap's leverage tiers from its ``max_notional_at_open`` caps (the largest notional a
        position may have at each leverage, never growing with leverage): the tier of leverage
        L holds the notionals above the cap of L + 1 up to the cap of L, lowest notional (highest
        leverage, at most ``1 / imr``) first; the maintenance margin rate is the market's."""
        perp = market["info"]["perp"]
        caps = [int(cap) for cap in perp["max_notional_at_open"]]
        top = min(len(caps), E9 // int(perp["imr"]))
        tiers: list[dict[str, Any]] = []
        floor = 0
        for leverage in range(top, 0, -1):
            cap = caps[leverage - 1]
            if cap <= floor:
                continue  # an empty range: the same cap as the tier below it
            tiers.append({"tier": len(tiers) + 1, "symbol": market["symbol"], "currency": market["settle"],
                          "minNotional": self.e9_number(floor), "maxNotional": self.e9_number(cap),
                          "maintenanceMarginRate": self.e9_number(perp["mmr"]), "maxLeverage": leverage,
                          "info": perp})
            floor = cap
        return tiers

    def steps_fetch_market_leverage_tiers(self, symbol: str, params: Any = None) -> _Steps:
        return self.leverage_tiers(self._swap(symbol))
        yield  # a generator that needs no call

    def steps_fetch_leverage_tiers(self, symbols: list[str] | None = None, params: Any = None) -> _Steps:
        wanted = self.market_symbols(symbols)
        return {symbol: self.leverage_tiers(market) for symbol, market in self.markets.items()
                if market["swap"] and (wanted is None or symbol in wanted)}
        yield  # a generator that needs no call

    def steps_fetch_funding_rate(self, symbol: str, params: Any = None) -> _Steps:
        market = self._swap(symbol)
        marks = yield ("parley_markPrices", {})
        return next(self.parse_funding_rate(mark) for mark in marks if mark["market"] == market["id"])

    def steps_fetch_funding_rates(self, symbols: list[str] | None = None, params: Any = None) -> _Steps:
        marks = yield ("parley_markPrices", {})
        rates = {rate["symbol"]: rate for rate in (self.parse_funding_rate(mark) for mark in marks)}
        return self.filter_by_array(rates, "symbol", self.market_symbols(symbols))

    def steps_fetch_funding_rate_history(self, symbol: str | None = None, since: int | None = None,
                                         limit: int | None = None, params: Any = None) -> _Steps:
        if symbol is None:
            raise ArgumentsRequired("parley fetch_funding_rate_history needs a symbol")
        market = self._swap(symbol)
        fundings = yield ("parley_fundingHistory", {"market": market["id"], "limit": 1000})
        history = [self.parse_funding(funding, market) for funding in fundings]
        return self.filter_by_symbol_since_limit(history, market["symbol"], since, limit)

    def steps_fetch_funding_history(self, symbol: str | None = None, since: int | None = None,
                                    limit: int | None = None, params: Any = None) -> _Steps:
        """The participant's funding settlements (``parley_fundingPayments``) as ccxt's funding
        history: ``amount`` received (negative: paid), in the settle token, timestamped with the
        checkpoint's time. A position settles when it is touched (a fill, a liquidation, a
        payout), so one entry may cover several funding intervals."""
        market = None if symbol is None else self._swap(symbol)
        account = yield from self._account()
        payments = yield ("parley_fundingPayments", self.omit_none(
            {"account": account, "market": market and market["id"], "limit": 1000}))
        history = []
        for payment in payments:
            found = self.safe_market(payment["market"])
            history.append({"info": payment, "symbol": found["symbol"], "code": found["settle"],
                            "timestamp": payment["time"], "datetime": self.iso8601(payment["time"]), "id": None,
                            "amount": self.e9_number(-int(payment["paid"]))})
        return self.filter_by_symbol_since_limit(history, market and market["symbol"], since, limit)

    def steps_create_order(self, symbol: str, type: str, side: str, amount: float, price: float | None = None,
                           params: Any = None) -> _Steps:
        request, market = self._order_request(symbol, type, side, amount, price, params)
        placed = yield ("parley_placeOrder", request)
        return self._placed(placed, market, request.get("request_id"))

    def steps_create_orders(self, orders: list[dict[str, Any]], params: Any = None) -> _Steps:
        """Several orders in one call (``parley_placeOrders``: one commit at the node), each
        ``{symbol, type, side, amount, price, params}`` as `create_order` takes them. An order
        the node refused comes back with status ``rejected`` and the node's error in ``info``."""
        requests = [self._order_request(order["symbol"], order["type"], order["side"], order["amount"],
                                        order.get("price"), {**(params or {}), **(order.get("params") or {})})
                    for order in orders]
        placed = yield ("parley_placeOrders", {"orders": [request for request, _ in requests]})
        return [self.safe_order({"info": result, "status": "rejected", "symbol": market["symbol"],
                                 "clientOrderId": request.get("request_id")})
                if "error" in result else self._placed(result, market, request.get("request_id"))
                for (request, market), result in zip(requests, placed, strict=True)]

    def _order_request(self, symbol: str, type: str, side: str, amount: float, price: float | None,
                       params: Any) -> tuple[dict[str, Any], Any]:
        """parley_placeOrder's params for a unified order, and its market."""
        params = dict(params or {})
        market = self.market(symbol)
        tif = str(params.pop("timeInForce", "IOC" if type == "market" else "GTC")).upper()
        if params.pop("postOnly", False) or tif in ("PO", "POST_ONLY"):
            tif = "PO"
        if tif not in TIF_IN:
            raise NotSupported(f"parley timeInForce {tif}: the node has GTC, IOC and PO (post only)")
        request: dict[str, Any] = {
            "market": market["id"], "side": side, "type": type, "tif": TIF_IN[tif],
            "qty": to_e9(self.amount_to_precision(symbol, amount)),
            "reduce_only": bool(params.pop("reduceOnly", False)), "request_id": params.pop("clientOrderId", None),
        }
        if price is not None:
            request["price"] = to_e9(self.price_to_precision(symbol, price))
        elif type != "market":
            raise ArgumentsRequired("parley create_order: a limit order needs its price")
        return self.omit_none({**request, **params}), market

    def _placed(self, placed: dict[str, Any], market: Any, client_order_id: str | None) -> Any:
        order = self.parse_order(placed["order"], market)
        order["clientOrderId"] = client_order_id
        self._remember(order["id"])
        return order

    def steps_cancel_order(self, id: str, symbol: str | None = None, params: Any = None) -> _Steps:
        cancelled = yield ("parley_cancelOrder", {"order": id})
        self._remember(id)
        return self.parse_order(cancelled["order"])

    def steps_cancel_all_orders(self, symbol: str | None = None, params: Any = None) -> _Steps:
        if symbol is None:
            raise ArgumentsRequired("parley cancel_all_orders needs a symbol")
        market = self.market(symbol)
        opened = yield ("parley_openOrders", {"market": market["id"]})
        yield ("parley_cancelAll", {"market": market["id"]})
        ids = [order["order_id"] for order in opened]
        for order_id in ids:
            self._remember(order_id)
        return (yield from self._orders(ids, market))

    def steps_fetch_order(self, id: str, symbol: str | None = None, params: Any = None) -> _Steps:
        order = yield ("parley_order", {"order": id})
        return self.parse_order(order)

    def steps_fetch_open_orders(self, symbol: str | None = None, since: int | None = None,
                                limit: int | None = None, params: Any = None) -> _Steps:
        market = None if symbol is None else self.market(symbol)
        opened = yield ("parley_openOrders", self.omit_none({"market": market and market["id"]}))
        orders = yield from self._orders([order["order_id"] for order in opened], market)
        return self.filter_by_symbol_since_limit(orders, market and market["symbol"], since, limit)

    def steps_fetch_closed_orders(self, symbol: str | None = None, since: int | None = None,
                                  limit: int | None = None, params: Any = None) -> _Steps:
        """The closed orders the node still reports among those this instance placed or cancelled
        and those of the participant's last fills (the node has no list of closed orders)."""
        market = None if symbol is None else self.market(symbol)
        fills = yield ("parley_myTrades", self.omit_none({"market": market and market["id"], "limit": 1000}))
        ids = list(dict.fromkeys([*self.options.setdefault("known_orders", []),
                                  *(fill["order"] for fill in fills)]))
        orders = yield from self._orders(ids, market)
        closed = [order for order in orders if order["status"] != "open"]
        return self.filter_by_symbol_since_limit(closed, market and market["symbol"], since, limit)

    def _remember(self, order_id: str) -> None:
        known = self.options.setdefault("known_orders", [])
        if order_id not in known:
            known.append(order_id)

    @staticmethod
    def omit_none(request: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in request.items() if value is not None}


UNIFIED = ("fetch_markets", "fetch_balance", "fetch_order_book", "fetch_ticker", "fetch_trades", "fetch_my_trades",
           "create_order", "create_orders", "cancel_order", "cancel_all_orders", "fetch_order", "fetch_open_orders",
           "fetch_closed_orders", "fetch_trading_fees", "fetch_positions", "fetch_position", "fetch_funding_rate",
           "fetch_funding_rates", "fetch_funding_rate_history", "fetch_leverage_tiers", "fetch_market_leverage_tiers",
           "fetch_funding_history")
NO_MARKETS = ("fetch_markets",)  # the unified methods that must not load the markets first


def _drive(exchange: Any, run: _Steps) -> Any:
    """Run a generator of calls over the sync transport: each call (or batch) answered in turn."""
    reply = None
    try:
        while True:
            calls = run.send(reply)
            reply = exchange._results(calls, exchange.request("rpc", "private", "POST", calls))
    except StopIteration as done:
        return done.value


async def _drive_async(exchange: Any, run: _Steps) -> Any:
    """`_drive` over the async transport."""
    reply = None
    try:
        while True:
            calls = run.send(reply)
            reply = exchange._results(calls, await exchange.request("rpc", "private", "POST", calls))
    except StopIteration as done:
        return done.value


def _sync_method(name: str) -> Any:
    steps = getattr(_Parley, "steps_" + name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if name not in NO_MARKETS:
            self.load_markets()
        return _drive(self, steps(self, *args, **kwargs))

    method.__name__ = name
    return method


def _async_method(name: str) -> Any:
    steps = getattr(_Parley, "steps_" + name)

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if name not in NO_MARKETS:
            await self.load_markets()
        return await _drive_async(self, steps(self, *args, **kwargs))

    method.__name__ = name
    return method


class parley(_Parley, ccxt.Exchange):  # type: ignore[misc]
    """The sync class (ccxt's requests session)."""


class parley_async(_Parley, ccxt.async_support.Exchange):  # type: ignore[misc]
    """The asyncio class (ccxt's aiohttp session)."""


for _name in UNIFIED:
    setattr(parley, _name, _sync_method(_name))
    setattr(parley_async, _name, _async_method(_name))


class parley_pro(parley_async):
    """The async class with ``watch_*`` over the node's WebSocket: one subscription per topic
    (and market), whose events fill ccxt's caches. A book whose seq skips, or a subscription
    the node dropped, fails the waiting watch with InvalidNonce or NetworkError and subscribes
    again on the next watch (from a new snapshot)."""

    orders: Any = None  # ccxt's caches, made on the first event
    myTrades: Any = None
    positions: Any = None  # the positions now (`handle_positions`)

    def describe(self) -> Any:
        return self.deep_extend(super().describe(), {
            "options": {"tradesLimit": 1000, "ordersLimit": 1000, "myTradesLimit": 1000},
        })

    def ws_url(self) -> str:
        url, token = self.node_api()
        explicit = self.urls["api"].get("ws")
        return explicit or url.replace("http", "ws", 1) + "/ws?token=" + token

    async def subscribe(self, message_hash: str, topic: str, params: dict[str, Any]) -> Any:
        """Wait for the next event of `message_hash`, subscribing to `topic` first if need be."""
        await self.load_markets()
        url = self.ws_url()
        client = self.client(url)
        request = None
        if message_hash not in client.subscriptions:
            self.request_id = getattr(self, "request_id", 0) + 1
            client.subscriptions.setdefault("requests", {})[self.request_id] = message_hash
            request = {"jsonrpc": "2.0", "id": self.request_id, "method": "parley_subscribe",
                       "params": {"topic": topic, "params": params}}
        return await self.watch(url, message_hash, request, message_hash)

    async def watch_order_book(self, symbol: str, limit: int | None = None, params: Any = None) -> Any:
        await self.load_markets()
        market = self.market(symbol)
        book = await self.subscribe("orderbook:" + market["symbol"], "book",
                                    self.omit_none({"market": market["id"], "depth": limit}))
        return book.limit()

    async def watch_trades(self, symbol: str, since: int | None = None, limit: int | None = None,
                           params: Any = None) -> Any:
        await self.load_markets()
        market = self.market(symbol)
        trades = await self.subscribe("trades:" + market["symbol"], "trades", {"market": market["id"]})
        if self.newUpdates:
            limit = trades.getLimit(market["symbol"], limit)
        return self.filter_by_since_limit(trades, since, limit, "timestamp", True)

    async def watch_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None,
                           params: Any = None) -> Any:
        orders = await self.subscribe("orders", "orders", {})
        if self.newUpdates:
            limit = orders.getLimit(symbol, limit)
        return self.filter_by_symbol_since_limit(orders, symbol, since, limit, True)

    async def watch_my_trades(self, symbol: str | None = None, since: int | None = None,
                              limit: int | None = None, params: Any = None) -> Any:
        trades = await self.subscribe("myTrades", "fills", {})
        if self.newUpdates:
            limit = trades.getLimit(symbol, limit)
        return self.filter_by_symbol_since_limit(trades, symbol, since, limit, True)

    async def watch_positions(self, symbols: list[str] | None = None, since: int | None = None,
                              limit: int | None = None, params: Any = None) -> Any:
        """The participant's positions after each change the node's ``positions`` topic reports
        (of `symbols`, if given): every open one, and one with ``contracts`` 0 for each that the
        change closed. Watched positions carry no collateral, leverage or margin ratio (the
        topic sends positions, not the account's value: fetch_positions has them)."""
        await self.load_markets()
        symbols = self.market_symbols(symbols)
        positions = await self.subscribe("positions", "positions", {})
        return self.filter_by_symbols_since_limit(positions, symbols, since, limit, True)

    async def watch_balance(self, params: Any = None) -> Any:
        await self.load_markets()
        await _drive_async(self, self._account())  # the participant whose balances to keep
        return await self.subscribe("balance", "balances", {})

    # -- the WebSocket's messages ---------------------------------------------------------------

    def handle_message(self, client: Any, message: Any) -> None:
        method = message.get("method")
        if method == "parley_subscription":
            params = message["params"]
            message_hash = client.subscriptions.get("ids", {}).get(params["subscription"])
            if message_hash is not None:
                self.handle_event(client, message_hash, params["result"])
        elif method == "parley_subscription_dropped":
            message_hash = client.subscriptions.get("ids", {}).pop(message["params"]["subscription"], None)
            if message_hash is not None:
                self.forget(client, message_hash, NetworkError("parley dropped the subscription: "
                                                               + message["params"]["reason"]))
        elif "id" in message:
            message_hash = client.subscriptions.get("requests", {}).pop(message["id"], None)
            if message_hash is None:
                return
            if message.get("error") is not None:
                try:
                    self.raise_rpc_error(message["error"])
                except ExchangeError as error:
                    self.forget(client, message_hash, error)
            else:
                client.subscriptions.setdefault("ids", {})[message["result"]] = message_hash

    def forget(self, client: Any, message_hash: str, error: Exception) -> None:
        """Fail the watch of `message_hash`; the next one subscribes again."""
        client.subscriptions.pop(message_hash, None)
        for subscription, known in list(client.subscriptions.get("ids", {}).items()):
            if known == message_hash:
                del client.subscriptions["ids"][subscription]
                self.spawn(client.send, {"jsonrpc": "2.0", "id": 0, "method": "parley_unsubscribe",
                                         "params": [subscription]})  # its answer (id 0) is ignored
        client.reject(error, message_hash)

    def handle_event(self, client: Any, message_hash: str, event: dict[str, Any]) -> None:
        if message_hash.startswith("orderbook:"):
            self.handle_order_book(client, message_hash, event)
        elif message_hash.startswith("trades:"):
            symbol = message_hash.split(":", 1)[1]
            if symbol not in self.trades:
                self.trades[symbol] = ArrayCache(self.options["tradesLimit"])
            if event["event"] == "appeared":
                self.trades[symbol].append(self.parse_trade(event))
                client.resolve(self.trades[symbol], message_hash)
        elif message_hash == "myTrades":
            if self.myTrades is None:
                self.myTrades = ArrayCacheBySymbolById(self.options["myTradesLimit"])
            if event["event"] != "vanished":
                self.myTrades.append(self.parse_trade(event))
                client.resolve(self.myTrades, message_hash)
        elif message_hash == "orders":
            if self.orders is None:
                self.orders = ArrayCacheBySymbolById(self.options["ordersLimit"])
            for order in event["orders"] if event["event"] == "snapshot" else [event]:
                self.orders.append(self.parse_order(order))
            if event["event"] != "snapshot" or event["orders"]:
                client.resolve(self.orders, message_hash)
        elif message_hash == "positions":
            self.handle_positions(client, message_hash, event)
        elif message_hash == "balance" and event["account"] == self.options["account"]:
            self.balance = self.parse_balance(event["balances"])
            client.resolve(self.balance, message_hash)

    def handle_order_book(self, client: Any, message_hash: str, event: dict[str, Any]) -> None:
        symbol = self.safe_symbol(event["market"])
        if event["type"] == "snapshot":
            book = self.order_book({}, event.get("depth"))
            book.reset(self.parse_book(event, symbol))
            book["nonce"] = event["seq"]
            self.orderbooks[symbol] = book
        else:
            book = self.orderbooks.get(symbol)
            if book is None:
                return
            if event["seq"] != book["nonce"] + 1:
                del self.orderbooks[symbol]
                self.forget(client, message_hash, InvalidNonce(f"parley {symbol} book skipped from seq "
                                                               f"{book['nonce']} to {event['seq']}"))
                return
            for side in ("bids", "asks"):
                self.handle_deltas(book[side], event[side])
            book["nonce"] = event["seq"]
        client.resolve(book, message_hash)

    def handle_positions(self, client: Any, message_hash: str, event: dict[str, Any]) -> None:
        """A positions snapshot or update (seq + 1, else the watch fails with InvalidNonce and
        the next one subscribes again from a snapshot): resolves the positions now."""
        held: dict[str, Any] = self.options.setdefault("positions_held", {})
        if event["type"] == "snapshot":
            held.clear()
        elif event["seq"] != self.options.get("positions_seq", -1) + 1:
            self.forget(client, message_hash, InvalidNonce(f"parley positions skipped from seq "
                                                           f"{self.options.get('positions_seq')} to {event['seq']}"))
            return
        self.options["positions_seq"] = event["seq"]
        closed = []
        for market_id in event.get("closed", []):
            gone = held.pop(self.safe_symbol(market_id), None)
            if gone is not None:
                closed.append({**gone, "contracts": 0.0, "notional": 0.0, "unrealizedPnl": 0.0,
                               "liquidationPrice": None, "initialMargin": 0.0, "maintenanceMargin": 0.0})
        for row in event["positions"]:
            position = self.parse_position(row)
            before = held.get(position["symbol"])
            if before is not None and before["side"] != position["side"]:  # flipped: the other side is closed
                closed.append({**before, "contracts": 0.0, "notional": 0.0, "unrealizedPnl": 0.0})
            held[position["symbol"]] = position
        self.positions = [*held.values(), *closed]
        client.resolve(self.positions, message_hash)

    def handle_delta(self, bookside: Any, delta: list[str]) -> None:
        bookside.store(self.e9_number(delta[0]), self.e9_number(delta[1]))


def install() -> None:
    """Register the classes as ``parley`` in ``ccxt``, ``ccxt.async_support`` and ``ccxt.pro``,
    so that ``getattr(ccxt, "parley")(config)`` works as strategies call it."""
    for module, cls in ((ccxt, parley), (ccxt.async_support, parley_async), (ccxt.pro, parley_pro)):
        module.parley = cls
        if "parley" not in module.exchanges:
            module.exchanges.append("parley")
