"""The Python client of a node's local API, in a synchronous and a trio version.

    with Client.for_node("node-data") as client:          # reads api.json and api-token
        receipt = client.transfer("0xabc…", "USDC", 5 * 10**9)
        print(client.status(receipt["op_id"]))
        placed = client.place_order("ETH/USDC", "buy", 10**8, 2000 * 10**9)  # 0.1 ETH at 2000
        print(placed["order"]["status"], client.order_book("ETH/USDC")["bids"])

    async with AsyncClient.for_node("node-data") as client:  # under trio
        async with client.subscribe("balances") as events:
            async for event in events:
                ...

Both expose the same calls (`_Calls`): in `Client` they return results, in `AsyncClient` they
return awaitables. Errors from the node raise `ApiError` with the JSON-RPC code, message and
data, and so does an answer that is not a JSON-RPC response (code -32603: the node failed); a
wrong token raises `Unauthorized`; a node that is not running raises `NodeUnavailable`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from channel.errors import ChannelError, UserError
from crdt.jsontext import MAX_NESTING, deeper_than_limit

BAD_ANSWER = -32603  # the code of an `ApiError` for an answer that is not JSON-RPC
DROPPED = -32000  # the code of the `ApiError` a subscription the node dropped raises


class ApiError(ChannelError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code, self.message, self.data = code, message, data


class Unauthorized(ApiError, UserError):
    pass


class NodeUnavailable(UserError):
    pass


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str  # http://127.0.0.1:PORT
    token: str

    @classmethod
    def for_node(cls, data_dir: Path | str) -> Endpoint:
        """The endpoint a running node wrote into its data directory."""
        folder = Path(data_dir)
        try:
            info = json.loads((folder / "api.json").read_text())
            token = (folder / "api-token").read_text().strip()
        except FileNotFoundError as exc:
            raise NodeUnavailable(f"no running node found in {folder} (missing {exc.filename})") from exc
        except (OSError, ValueError) as exc:
            raise NodeUnavailable(f"cannot read the node's endpoint in {folder}: {exc}") from exc
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            raise NodeUnavailable(f"{folder / 'api.json'} does not hold the node's url")
        return cls(info["url"], token)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"


def _unwrap(response: httpx.Response) -> Any:
    if response.status_code == 401:
        raise Unauthorized(401, "the node refused the API token")
    if response.status_code == 204:
        return None
    return _result(_parse(response.content, f"HTTP {response.status_code}"), f"HTTP {response.status_code}")


def _parse(message: str | bytes, where: str) -> Any:
    data = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
    if deeper_than_limit(data) is not None:
        raise ApiError(BAD_ANSWER, f"the node's answer ({where}) nests deeper than {MAX_NESTING}")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(BAD_ANSWER, f"the node's answer ({where}) is not JSON: {message[:200]!r}") from exc


def _result(payload: Any, where: str) -> Any:
    """The result of a JSON-RPC response object; its error, or a malformed answer, raises `ApiError`."""
    if not isinstance(payload, dict):
        raise ApiError(BAD_ANSWER, f"the node's answer ({where}) is not a JSON-RPC response: {str(payload)[:200]}")
    if "error" in payload:
        error = payload["error"]
        if isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("message"), str):
            raise ApiError(error["code"], error["message"], error.get("data"))
        raise ApiError(BAD_ANSWER, f"the node's answer ({where}) holds a malformed error: {str(error)[:200]}")
    if "result" not in payload:
        raise ApiError(BAD_ANSWER, f"the node's answer ({where}) has neither a result nor an error")
    return payload["result"]


def _event(message: str | bytes) -> dict[str, Any]:
    """The event of one subscription message (a dropped subscription raises `ApiError`)."""
    event = _parse(message, "WebSocket")
    if isinstance(event, dict) and event.get("method") == "parley_subscription_dropped":
        raise ApiError(DROPPED, "the node dropped this subscription: the client fell behind")
    params = event.get("params") if isinstance(event, dict) else None
    if not isinstance(params, dict) or not isinstance(params.get("result"), dict):
        raise ApiError(BAD_ANSWER, f"the node sent a WebSocket message that is not an event: {str(event)[:200]}")
    result: dict[str, Any] = params["result"]
    return result


def _subscription(topic: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parley_subscribe request of `topic` with `params` (those given as None left out)."""
    given = {name: value for name, value in params.items() if value is not None}
    return {"jsonrpc": "2.0", "id": 1, "method": "parley_subscribe", "params": [topic, given] if given else [topic]}


class _Calls:
    """The node's methods, shared by both clients (`call` is sync in one, async in the other)."""

    _ids: itertools.count[int]

    def call(self, method: str, *params: Any) -> Any:
        raise NotImplementedError

    def _request(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}

    def submit(self, kind: str, body: dict[str, Any], request_id: str | None = None) -> Any:
        return self.call("parley_submit", kind, body, request_id)

    def transfer(self, to: str, token: str, amount: int, request_id: str | None = None) -> Any:
        """Transfer `amount` e9 units of `token` to the participant `to`."""
        return self.call("parley_transfer", to, token, str(amount), request_id)

    def balances(self, account: str | None = None) -> Any:
        return self.call("parley_balances", account)

    def status(self, op_id: str) -> Any:
        return self.call("parley_status", op_id)

    def heads(self) -> Any:
        return self.call("parley_heads")

    def peers(self) -> Any:
        return self.call("parley_peers")

    def stats(self) -> Any:
        return self.call("parley_stats")

    def checkpoints(self) -> Any:
        return self.call("parley_checkpoints")

    def certificate(self, version: int | None = None) -> Any:
        return self.call("parley_certificate", version)

    def evidence(self) -> Any:
        return self.call("parley_evidence")

    def discover(self) -> Any:
        return self.call("rpc.discover")

    # -- trading: prices, quantities and fees are e9 integers (sent as decimal strings) ------------

    def markets(self) -> Any:
        return self.call("parley_markets")

    def place_order(
        self, market: str, side: str, qty: int, price: int | None = None, *, type: str = "limit",
        tif: str | None = None, reduce_only: bool = False, expires: int = 0, request_id: str | None = None,
    ) -> Any:
        """Place an order of `qty` base at `price` (e9 quote per whole base). `tif` is gtc for a
        limit order and ioc for a market order unless given; a market order without a `price`
        takes the book as it stands (its price is the worst one it meets now). Returns the
        receipt with the order's state once applied (``order``)."""
        return self.call(
            "parley_placeOrder", market, side, str(qty), None if price is None else str(price), type, tif,
            reduce_only, str(expires), request_id,
        )

    def cancel_order(self, order_id: str, request_id: str | None = None) -> Any:
        return self.call("parley_cancelOrder", order_id, request_id)

    def cancel_all(self, market: str, request_id: str | None = None) -> Any:
        return self.call("parley_cancelAll", market, request_id)

    def order_book(self, market: str, depth: int = 50, level: int = 2) -> Any:
        return self.call("parley_orderBook", market, depth, level)

    def open_orders(self, market: str | None = None, account: str | None = None) -> Any:
        """Open orders of `account` (the node's own participant by default)."""
        return self.call("parley_openOrders", market, account)

    def order(self, order_id: str) -> Any:
        return self.call("parley_order", order_id)

    def my_trades(self, market: str | None = None, limit: int = 100) -> Any:
        return self.call("parley_myTrades", market, limit)

    def trades(self, market: str, limit: int = 100) -> Any:
        return self.call("parley_trades", market, limit)

    # -- perpetual markets --

    def positions(self, account: str | None = None) -> Any:
        """Open perp positions (every account's, or one's)."""
        return self.call("parley_positions", account)

    def account(self, account: str | None = None) -> Any:
        """An account's cross margin and positions (the node's own participant by default)."""
        return self.call("parley_account", account)

    def mark_prices(self) -> Any:
        return self.call("parley_markPrices")

    def funding_history(self, market: str, limit: int = 100) -> Any:
        return self.call("parley_fundingHistory", market, limit)

    def liquidatable(self) -> Any:
        return self.call("parley_liquidatable")

    def post_price(self, market: str, price: int, request_id: str | None = None) -> Any:
        """As an oracle: this participant's price of a perp market (e9)."""
        return self.call("parley_postPrice", market, str(price), request_id)

    def liquidate(self, account: str, market: str, qty: int, request_id: str | None = None) -> Any:
        """As a liquidator: take `qty` (e9 base) of an account's position below maintenance margin."""
        return self.call("parley_liquidate", account, market, str(qty), request_id)


class Client(_Calls):
    def __init__(self, endpoint: Endpoint, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self._http = httpx.Client(base_url=endpoint.url, headers=endpoint.headers, timeout=timeout)
        self._ids = itertools.count(1)

    @classmethod
    def for_node(cls, data_dir: Path | str) -> Client:
        return cls(Endpoint.for_node(data_dir))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, *params: Any) -> Any:
        try:
            return _unwrap(self._http.post("/rpc", json=self._request(method, params)))
        except httpx.TransportError as exc:
            raise NodeUnavailable(f"cannot reach the node at {self.endpoint.url}: {exc}") from exc

    def watch(self, topic: str, **params: Any) -> Generator[dict[str, Any], None, None]:
        """Events of a subscription, until the caller stops: ops, balances, status, or the market
        topics with their params (``watch("book", market="ETH/USDC", depth=10)``, trades, fills and
        orders with an optional ``market``). A dropped subscription raises `ApiError`."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        try:
            connection = connect(self.endpoint.ws_url, additional_headers=self.endpoint.headers)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise Unauthorized(401, "the node refused the API token") from exc
            raise
        except OSError as exc:
            raise NodeUnavailable(f"cannot reach the node at {self.endpoint.url}: {exc}") from exc
        with connection:
            connection.send(json.dumps(_subscription(topic, params)))
            _result(_parse(connection.recv(), "WebSocket"), "WebSocket")
            for message in connection:
                yield _event(message)


class AsyncClient(_Calls):
    """The trio version: the same calls, awaited."""

    def __init__(self, endpoint: Endpoint, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers, timeout=timeout)
        self._ids = itertools.count(1)

    @classmethod
    def for_node(cls, data_dir: Path | str) -> AsyncClient:
        return cls(Endpoint.for_node(data_dir))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, *params: Any) -> Any:
        try:
            return _unwrap(await self._http.post("/rpc", json=self._request(method, params)))
        except httpx.TransportError as exc:
            raise NodeUnavailable(f"cannot reach the node at {self.endpoint.url}: {exc}") from exc

    @asynccontextmanager
    async def subscribe(self, topic: str, **params: Any) -> AsyncIterator[Events]:
        """``async with client.subscribe("ops") as events: async for event in events: ...``

        The context owns the WebSocket. Topics: ops, balances, status; book (``market=``, and
        ``depth=`` for the first levels only), trades, fills and orders (``market=`` to filter)."""
        from trio_websocket import HandshakeError, open_websocket_url

        # Check the token over HTTP first: trio-websocket 0.12 leaks its socket when a handshake
        # is refused, and this turns a wrong token into a clear `Unauthorized` before that.
        await self.call("parley_heads")
        headers = [(key.encode(), value.encode()) for key, value in self.endpoint.headers.items()]
        try:
            async with open_websocket_url(self.endpoint.ws_url, extra_headers=headers) as ws:
                await ws.send_message(json.dumps(_subscription(topic, params)))
                _result(_parse(await ws.get_message(), "WebSocket"), "WebSocket")
                yield Events(ws)
        except HandshakeError as exc:
            raise Unauthorized(401, f"the node refused the WebSocket: {exc}") from exc


class Events:
    """The events of one subscription, as an async iterator."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return _event(await self._ws.get_message())
