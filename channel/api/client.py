"""The Python client of a node's local API, in a synchronous and an async version (trio or asyncio).

    with Client.for_node("node-data") as client:          # reads api.json and api-token
        receipt = client.transfer("0xabc…", "USDC", 5 * 10**9)
        print(client.status(receipt["op_id"]))
        placed = client.place_order("ETH/USDC", "buy", 10**8, 2000 * 10**9)  # 0.1 ETH at 2000
        print(placed["order"]["status"], client.order_book("ETH/USDC")["bids"])

    async with AsyncClient.for_node("node-data") as client:  # under trio or asyncio
        async with client.subscribe("balances") as events:
            async for event in events:
                ...

    client.transfer("0xabc…", "USDC", Decimal("12.5"))      # whole tokens: checked against USDC's decimals
    client.amount("USDC", client.balances()[me]["USDC"]["free"])  # e9 -> Decimal("12.5")

Both expose the same calls (`_Calls`): in `Client` they return results, in `AsyncClient` they
return awaitables. The async client runs under trio and under asyncio (ccxt's async classes and
Hummingbot are asyncio): HTTP goes through httpx, which serves both, and a subscription opens its
WebSocket with trio-websocket under trio and with `websockets` under asyncio (`sniffio` says which
loop runs).

Every error is a `ClientError`. Errors from the node raise `ApiError` with the JSON-RPC code,
message and data, and so does an answer that is not a JSON-RPC response (code -32603: the node
failed). A request the node refused as replay would give it no effect is `Rejected` (its
``reason``), and the two reasons a program most often handles have their own classes,
`InsufficientBalance` and `UnknownToken`. A wrong token raises `Unauthorized`; a node that is not
running (no ``api.json``, its pid gone, nothing listening) raises `NodeUnavailable`.

Amounts on the wire stay e9 integers (as decimal strings). A `Decimal` given where an amount is
taken is whole tokens, converted exactly with `Tokens` (the token's decimals, from the channel's
genesis next to the node's ``node.toml``): a finer amount than the token has is refused, since
the payout would lose it.
"""

from __future__ import annotations

import itertools
import json
import os
import tomllib
from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, Protocol

import httpx

from channel.errors import ChannelError, UserError
from crdt.jsontext import MAX_NESTING, deeper_than_limit

# an idle connection is reused for at most this long, well under the node's own keep-alive
# (channel.api.server.SERVER_KEEP_ALIVE), so a request never meets a connection the node is closing
KEEP_ALIVE = 5.0
LIMITS = httpx.Limits(keepalive_expiry=KEEP_ALIVE)
BAD_ANSWER = -32603  # the code of an `ApiError` for an answer that is not JSON-RPC
DROPPED = -32000  # the code of the `ApiError` a subscription the node dropped raises


REJECTED = -32001  # the code of a request replay would give no effect (the server's REJECTED)
E9 = 10**9


class ClientError(ChannelError):
    """Root of the errors the client raises."""


class ApiError(ClientError):
    """An error the node answered (or an answer that is not JSON-RPC: code -32603)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code, self.message, self.data = code, message, data


class Rejected(ApiError):
    """The node refused the request: replay would give it no effect, so nothing was signed.
    ``reason`` is the ledger's reason code (``insufficient_balance``, ``post_only_would_cross``…)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.reason: str = data["reason"] if isinstance(data, dict) and isinstance(data.get("reason"), str) else ""


class InsufficientBalance(Rejected):
    """``insufficient_balance``: the account's free balance does not cover the request."""


class UnknownToken(Rejected):
    """``unknown_token``: the channel's genesis has no token of that symbol."""


class Unauthorized(ApiError, UserError):
    """The node refused the API token (HTTP 401)."""


class NodeUnavailable(ClientError, UserError):
    """No node answers: no ``api.json``, the process that wrote it is gone, or nothing listens."""


class BadAmount(ClientError, UserError):
    """A `Decimal` amount that is not a positive number of whole tokens the token can hold."""


_REJECTIONS: dict[str, type[Rejected]] = {"insufficient_balance": InsufficientBalance, "unknown_token": UnknownToken}


def api_error(code: int, message: str, data: Any = None) -> ApiError:
    """The typed error of a JSON-RPC error object: `Rejected` (or its subclass for the reason)
    for code -32001, `ApiError` for the rest."""
    if code != REJECTED:
        return ApiError(code, message, data)
    reason = data.get("reason") if isinstance(data, dict) else None
    return _REJECTIONS.get(reason if isinstance(reason, str) else "", Rejected)(code, message, data)


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str  # http://127.0.0.1:PORT
    token: str

    @classmethod
    def for_node(cls, data_dir: Path | str) -> Endpoint:
        """The endpoint a running node wrote into its data directory."""
        folder = Path(data_dir)
        if folder.is_file():
            raise NodeUnavailable(f"{folder} is a file, not a node's data directory (the folder holding api.json)")
        try:
            info = json.loads((folder / "api.json").read_text())
            token = (folder / "api-token").read_text().strip()
        except FileNotFoundError as exc:
            raise NodeUnavailable(f"no running node found in {folder} (missing {exc.filename})") from exc
        except (OSError, ValueError) as exc:
            raise NodeUnavailable(f"cannot read the node's endpoint in {folder}: {exc}") from exc
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            raise NodeUnavailable(f"{folder / 'api.json'} does not hold the node's url")
        pid = info.get("pid")
        if type(pid) is int and pid > 0 and not _alive(pid):
            raise NodeUnavailable(f"the node of {folder} is not running: process {pid} (in api.json) no longer exists")
        return cls(info["url"], token)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"


class Tokens:
    """The decimals of a channel's tokens: whole-token `Decimal` amounts to e9 integers and back,
    exactly (`Decimal` reads the digits as written; no float enters)."""

    def __init__(self, decimals: Mapping[str, int]) -> None:
        self.decimals = dict(decimals)

    @classmethod
    def from_genesis(cls, path: Path | str) -> Tokens:
        """The tokens of a genesis.toml (read with tomllib alone: no key or chain library)."""
        try:
            data = tomllib.loads(Path(path).read_text())
            return cls({str(t["symbol"]): int(t["decimals"]) for t in data["tokens"]})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadAmount(f"cannot read the tokens of the genesis {path}: {exc!r}") from exc

    @classmethod
    def for_node(cls, data_dir: Path | str) -> Tokens:
        """The tokens of the genesis named by the ``node.toml`` in a node's folder."""
        config = Path(data_dir) / "node.toml"
        try:
            genesis = tomllib.loads(config.read_text())["genesis"]
        except (OSError, ValueError, KeyError) as exc:
            raise BadAmount(f"whole-token amounts need the token decimals, and {config} cannot say them ({exc!r}): "
                            "pass tokens=Tokens.from_genesis(...)") from exc
        return cls.from_genesis(config.parent / str(genesis))

    def _places(self, token: str) -> int:
        if token not in self.decimals:
            raise UnknownToken(REJECTED, f"rejected: unknown_token: {token} (the channel has "
                               f"{', '.join(sorted(self.decimals))})", {"reason": "unknown_token"})
        return self.decimals[token]

    def e9(self, token: str, amount: Decimal | str) -> int:
        """A positive amount of whole `token`s as e9; `BadAmount` if it is finer than the token's
        decimals (or than e9), not positive or not a number."""
        places = self._places(token)
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise BadAmount(f"{token} amount must be a decimal number such as 12.5, got {amount!r}") from None
        if not value.is_finite() or value <= 0:
            raise BadAmount(f"{token} amount must be positive, got {value:f}")
        with localcontext() as context:
            context.prec = 80
            scaled, whole_units = value.scaleb(9), value.scaleb(min(places, 9))
        if scaled != scaled.to_integral_value() or whole_units != whole_units.to_integral_value():
            raise BadAmount(f"{value:f} {token} is finer than the token's {min(places, 9)} decimal places")
        return int(scaled)

    def amount(self, token: str, e9: int | str) -> Decimal:
        """An e9 amount (an int or the API's decimal string) as whole `token`s."""
        self._places(token)
        with localcontext() as context:
            context.prec = 80
            return Decimal(int(e9)).scaleb(-9).normalize() if int(e9) else Decimal(0)


def _alive(pid: int) -> bool:
    """Whether a process `pid` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:  # pragma: no cover - a pid the platform refuses (too large): treat as gone
        return False
    return True


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
    if (error := refusal(payload, where)) is not None:
        raise error
    if "result" not in payload:
        raise ApiError(BAD_ANSWER, f"the node's answer ({where}) has neither a result nor an error")
    return payload["result"]


def refusal(result: Any, where: str = "a batch item") -> ApiError | None:
    """The typed error of a batch item the node refused (`place_orders`, `submit_many`), or None
    for a receipt."""
    if not isinstance(result, dict) or "error" not in result:
        return None
    error = result["error"]
    if isinstance(error, dict) and type(error.get("code")) is int and isinstance(error.get("message"), str):
        return api_error(error["code"], error["message"], error.get("data"))
    return ApiError(BAD_ANSWER, f"the node's answer ({where}) holds a malformed error: {str(error)[:200]}")


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
    _tokens: Tokens | None
    _data_dir: Path | None

    def call(self, method: str, *params: Any) -> Any:
        raise NotImplementedError

    @property
    def tokens(self) -> Tokens:
        """The channel's token decimals: given to the client, or read from the node's folder."""
        if self._tokens is None:
            if self._data_dir is None:
                raise BadAmount("whole-token amounts need the token decimals: pass tokens=Tokens(...) to the client")
            self._tokens = Tokens.for_node(self._data_dir)
        return self._tokens

    def amount(self, token: str, e9: int | str) -> Decimal:
        """An e9 amount of `token` (as the API answers it) in whole tokens."""
        return self.tokens.amount(token, e9)

    def _e9(self, token: str, amount: int | Decimal) -> int:
        return self.tokens.e9(token, amount) if isinstance(amount, Decimal) else amount

    def _request(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}

    def submit(self, kind: str, body: dict[str, Any], request_id: str | None = None) -> Any:
        return self.call("parley_submit", kind, body, request_id)

    def transfer(self, to: str, token: str, amount: int | Decimal, request_id: str | None = None) -> Any:
        """Transfer `amount` of `token` to the participant `to`: e9 units, or whole tokens as a `Decimal`."""
        return self.call("parley_transfer", to, token, str(self._e9(token, amount)), request_id)

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

    def start_exit(self) -> Any:
        """Start the emergency exit from the node (`RpcError` -32005 with data.reason if it cannot)."""
        return self.call("parley_exit")

    def exit_status(self) -> Any:
        return self.call("parley_exitStatus")

    def discover(self) -> Any:
        return self.call("rpc.discover")

    # -- trading: prices, quantities and fees are e9 integers (sent as decimal strings) ------------

    def markets(self) -> Any:
        return self.call("parley_markets")

    def place_order(
        self, market: str, side: str, qty: int | Decimal, price: int | Decimal | None = None, *,
        type: str = "limit", tif: str | None = None, reduce_only: bool = False, expires: int = 0,
        request_id: str | None = None,
    ) -> Any:
        """Place an order of `qty` base at `price` (e9 quote per whole base; a `Decimal` is whole
        base, or whole quote per base). `tif` is gtc for a limit order and ioc for a market order
        unless given; a market order without a `price` takes the book as it stands (its price is
        the worst one it meets now). Returns the receipt with the order's state once applied
        (``order``)."""
        base, _, quote = market.partition("/")
        qty = self._e9(base, qty)
        price = None if price is None else self._e9(quote, price)
        return self.call(
            "parley_placeOrder", market, side, str(qty), None if price is None else str(price), type, tif,
            reduce_only, str(expires), request_id,
        )

    def place_orders(self, orders: Iterable[Mapping[str, Any]]) -> Any:
        """Place several orders in one call, signed and stored in one commit: each a mapping of
        `place_order`'s arguments (``{"market": ..., "side": ..., "qty": ..., "price": ...}``,
        and ``type``, ``tif``, ``reduce_only``, ``expires``, ``request_id`` if wanted). Returns
        one result per order, in order: `place_order`'s receipt, or ``{"error": {...}}`` for an
        order the node refused (`refusal` gives its typed error)."""
        items = []
        for order in orders:
            item = dict(order)
            base, _, quote = str(item.get("market", "")).partition("/")
            for name, token in (("qty", base), ("price", quote)):
                if item.get(name) is not None:
                    item[name] = str(self._e9(token, item[name]))
            if "expires" in item:
                item["expires"] = str(item["expires"])
            items.append(item)
        return self.call("parley_placeOrders", items)

    def submit_many(self, items: Iterable[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]]) -> Any:
        """Submit several operations (``(kind, body)`` or ``(kind, body, request_id)``) in one
        call and one commit. Returns one result per item, in order: a receipt, or
        ``{"error": {...}}`` (`refusal` gives its typed error)."""
        return self.call("parley_submitMany", [
            {"kind": item[0], "body": item[1], "request_id": item[2] if len(item) > 2 else None} for item in items])

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

    def funding_payments(self, account: str | None = None, market: str | None = None, limit: int = 100) -> Any:
        """An account's funding settlements (the node's own participant by default), oldest first."""
        return self.call("parley_fundingPayments", account, market, limit)

    def liquidatable(self) -> Any:
        return self.call("parley_liquidatable")

    def post_price(self, market: str, price: int, request_id: str | None = None) -> Any:
        """As an oracle: this participant's price of a perp market (e9)."""
        return self.call("parley_postPrice", market, str(price), request_id)

    def liquidate(self, account: str, market: str, qty: int, request_id: str | None = None) -> Any:
        """As a liquidator: take `qty` (e9 base) of an account's position below maintenance margin."""
        return self.call("parley_liquidate", account, market, str(qty), request_id)


class Client(_Calls):
    def __init__(self, endpoint: Endpoint, timeout: float = 30.0, tokens: Tokens | None = None) -> None:
        self.endpoint = endpoint
        self._http = httpx.Client(base_url=endpoint.url, headers=endpoint.headers, timeout=timeout, limits=LIMITS)
        self._ids = itertools.count(1)
        self._tokens, self._data_dir = tokens, None

    @classmethod
    def for_node(cls, data_dir: Path | str, tokens: Tokens | None = None) -> Client:
        client = cls(Endpoint.for_node(data_dir), tokens=tokens)
        client._data_dir = Path(data_dir)
        return client

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
    """The async version, under trio or asyncio: the same calls, awaited."""

    def __init__(self, endpoint: Endpoint, timeout: float = 30.0, tokens: Tokens | None = None) -> None:
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers, timeout=timeout,
                                       limits=LIMITS)
        self._ids = itertools.count(1)
        self._tokens, self._data_dir = tokens, None

    @classmethod
    def for_node(cls, data_dir: Path | str, tokens: Tokens | None = None) -> AsyncClient:
        client = cls(Endpoint.for_node(data_dir), tokens=tokens)
        client._data_dir = Path(data_dir)
        return client

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
        ``depth=`` for the first levels only), trades, fills and orders (``market=`` to filter);
        positions and account (``account=``, this node's participant by default), funding and
        liquidations (``market=``, a perp market, to filter).
        A WebSocket the node closes ends in `NodeUnavailable`."""
        async with self._websocket() as ws:
            await ws.send(json.dumps(_subscription(topic, params)))
            _result(_parse(await ws.receive(), "WebSocket"), "WebSocket")
            yield Events(ws)

    @asynccontextmanager
    async def socket(self) -> AsyncIterator[SocketClient]:
        """``async with client.socket() as rpc: await rpc.place_order(...)``: the same calls over
        one WebSocket kept open, which spares each call an HTTP request (the node answers a
        socket's calls in order; see the README's "Local API" table for what it saves). Calls on
        one socket go one at a time: open several for calls in parallel."""
        async with self._websocket() as ws:
            yield SocketClient(ws, self._tokens, self._data_dir)

    @asynccontextmanager
    async def _websocket(self) -> AsyncIterator[_Socket]:
        import sniffio

        # Check the token over HTTP first: trio-websocket 0.12 leaks its socket when a handshake
        # is refused, and this turns a wrong token into a clear `Unauthorized` before that.
        await self.call("parley_heads")
        opening = _trio_socket if sniffio.current_async_library() == "trio" else _asyncio_socket
        async with opening(self.endpoint) as ws:
            yield ws


class _Socket(Protocol):
    """What `Events` needs of a WebSocket, whichever library opened it."""

    async def send(self, message: str) -> None: ...

    async def receive(self) -> str | bytes: ...


class _TrioSocket:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, message: str) -> None:
        await self._ws.send_message(message)

    async def receive(self) -> str | bytes:
        from trio_websocket import ConnectionClosed

        try:
            message: str | bytes = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise NodeUnavailable(f"the node closed the WebSocket: {exc.reason}") from exc
        return message


class _AsyncioSocket:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, message: str) -> None:
        await self._ws.send(message)

    async def receive(self) -> str | bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            message: str | bytes = await self._ws.recv()
        except ConnectionClosed as exc:
            raise NodeUnavailable(f"the node closed the WebSocket: {exc}") from exc
        return message


@asynccontextmanager
async def _trio_socket(endpoint: Endpoint) -> AsyncIterator[_Socket]:
    """The subscription's WebSocket under trio (trio-websocket)."""
    from trio_websocket import HandshakeError, open_websocket_url

    headers = [(key.encode(), value.encode()) for key, value in endpoint.headers.items()]
    try:
        async with open_websocket_url(endpoint.ws_url, extra_headers=headers) as ws:
            yield _TrioSocket(ws)
    except HandshakeError as exc:
        raise Unauthorized(401, f"the node refused the WebSocket: {exc}") from exc
    except OSError as exc:
        raise NodeUnavailable(f"cannot reach the node at {endpoint.url}: {exc}") from exc


@asynccontextmanager
async def _asyncio_socket(endpoint: Endpoint) -> AsyncIterator[_Socket]:
    """The subscription's WebSocket under asyncio (websockets' asyncio client)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        connection = await connect(endpoint.ws_url, additional_headers=endpoint.headers)
    except InvalidStatus as exc:
        if exc.response.status_code == 401:
            raise Unauthorized(401, "the node refused the API token") from exc
        raise NodeUnavailable(f"the node refused the WebSocket: HTTP {exc.response.status_code}") from exc
    except OSError as exc:
        raise NodeUnavailable(f"cannot reach the node at {endpoint.url}: {exc}") from exc
    async with connection:
        yield _AsyncioSocket(connection)


class Events:
    """The events of one subscription, as an async iterator."""

    def __init__(self, ws: _Socket) -> None:
        self._ws = ws

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return _event(await self._ws.receive())


class SocketClient(_Calls):
    """The calls of `AsyncClient`, over one open WebSocket (`AsyncClient.socket()`)."""

    def __init__(self, ws: _Socket, tokens: Tokens | None, data_dir: Path | None) -> None:
        import anyio

        self._ws = ws
        self._lock = anyio.Lock()
        self._ids = itertools.count(1)
        self._tokens, self._data_dir = tokens, data_dir

    async def call(self, method: str, *params: Any) -> Any:
        async with self._lock:
            request = self._request(method, params)
            await self._ws.send(json.dumps(request))
            while True:
                payload = _parse(await self._ws.receive(), "WebSocket")
                answered = payload.get("id") if isinstance(payload, dict) else None
                # an earlier call cancelled after it was sent leaves its answer behind: skipped
                if type(answered) is int and answered < request["id"]:
                    continue
                if answered != request["id"]:
                    raise ApiError(BAD_ANSWER, f"the node answered another request: {str(payload)[:200]}")
                return _result(payload, "WebSocket")
