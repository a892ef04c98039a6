"""The local API: JSON-RPC 2.0 over HTTP (``POST /rpc``) and WebSocket (``/ws``).

- It listens on a loopback address only (`channel.runtime.config` refuses anything else), because it
  signs with the participant's key.
- Every request carries ``Authorization: Bearer <token>`` (a WebSocket may pass ``?token=``
  instead, since browsers cannot set headers on one). The token is in ``<data_dir>/api-token``.
  A missing or wrong token gets HTTP 401, for the WebSocket handshake too.
- Requests are bounded before they are read or parsed: 1 MiB (HTTP 413 from the Content-Length,
  or as soon as a chunked body passes it; hypercorn closes a larger WebSocket message with 1009,
  and two fixes at the end of this module make that limit hold), 100 calls per batch, and
  arrays and objects nested at most 32 deep (`crdt.jsontext` measures that without
  recursing before `json.loads` runs: under the recursion limit the eth stack sets, 100,000,
  deeper JSON segfaulted the C parser).
- Malformed input gets the JSON-RPC error it deserves (-32700 parse error, -32600 invalid
  request, -32601 method not found, -32602 invalid params, with a message that names the
  parameter and says what is wrong); a request replay would reject gets -32001 with the reason
  in ``data``; -32002 means the node does not know its own last seq yet (its store is new and
  it is asking its peers), -32003 that its store refused the write (a full disk). In all three
  nothing was signed. Numbers in strings are ASCII digits only (``str.isdigit`` also accepts "²" and
  Arabic-Indic digits), at most 20 of them.
- Every request, alone or in a batch, gets its own answer: an unexpected exception in a method
  becomes -32603 for that request only (logged with its traceback), so a batch never fails as a
  whole after some of its items were signed, HTTP never answers 500, and a WebSocket is never
  closed by a request.
- Subscriptions (WebSocket only): ``parley_subscribe`` with ``ops``, ``balances`` or ``status``,
  the market topics (``book``, ``trades``, ``fills``, ``orders``: `channel.runtime.market_feed`) or
  the perpetual ones (``positions``, ``account``, ``funding``, ``liquidations``:
  `channel.runtime.perp_feed`) returns an id; events arrive as ``{"method":
  "parley_subscription", "params": {"subscription": id, "result": event}}``. A subscriber that
  falls 1,024 events behind is dropped. At most 64 WebSockets are open at once (then 503) and
  each holds at most 16 subscriptions.
- Trading: ``parley_placeOrder``, ``parley_cancelOrder`` and ``parley_cancelAll`` sign through
  the same dry run as ``parley_submit`` (a refusal is -32001 with the reason, nothing signed);
  ``parley_orderBook``, ``parley_openOrders``, ``parley_order``, ``parley_myTrades``,
  ``parley_trades`` and ``parley_markets`` read, in the shapes of `channel.runtime.trading`. A
  read naming a market the genesis does not hold is -32602 naming it; an unknown order -32004.
- The emergency exit: ``parley_exit`` starts it as a background task of the node
  (`channel.runtime.exits`; -32005 with ``data.reason`` ``no_chain``, ``no_certificate`` or
  ``already_exiting`` when it cannot), ``parley_exitStatus`` shows its progress.
- ``GET /`` is the trading page (``/app.js``, ``/style.css``: the static files of
  ``channel/api/page``, no token needed to load them; the page asks for the token and sends it
  like any client), with a Content-Security-Policy that allows no inline script and no other
  origin.
- ``GET /openrpc.json`` (and the ``rpc.discover`` method) describe every method. ``GET /metrics``
  is the Prometheus endpoint (no token: it is on loopback and holds only counts): the node's
  gauges and counters, the submit, delivery and finality latency histograms
  (`channel.runtime.metrics`) and the process's own (CPU, memory, open files).

Amounts are integers in e9 base units; they are sent as decimal strings, because JSON numbers
lose precision above 2**53. Numbers are accepted on input too. A transfer, lock or withdrawal
amount must be a whole number of its token's units (a multiple of 10**(9 - decimals) e9):
anything finer could never be paid out, so it is refused before signing (-32001, reason
``bad_amount``).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from importlib import resources
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ws_stream
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from wsproto.extensions import PerMessageDeflate

from channel.api.schemas import result_schemas
from channel.errors import StorageUnavailable
from channel.runtime.events import Subscriber
from channel.runtime.service import (
    ExitRefused,
    NodeService,
    NotReady,
    RequestIdConflict,
    RequestRejected,
    Submission,
    UnknownMarket,
)
from channel.runtime.trading import LEVELS, MAX_DEPTH, MAX_LIMIT
from crdt.certificate import Certificate
from crdt.genesis import Genesis
from crdt.jsontext import MAX_NESTING, deeper_than_limit
from crdt.kinds import (
    ADDRESS,
    KINDS,
    MARKET_SYMBOL,
    OP_ID,
    InvalidField,
    Registry,
    UnknownKind,
    json_hex,
    json_text,
    json_uint,
)
from crdt.kinds import shown as _shown
from crdt.ledger import Reason
from crdt.markets.book import BUY, GTC, IOC, LIMIT, MARKET
from crdt.markets.config import MAX_MARKET_SYMBOL
from crdt.types import Address

MAX_REQUEST_BYTES = 1 << 20
SERVER_KEEP_ALIVE = 60.0  # seconds an idle HTTP connection stays open (serve_api)
MAX_BATCH = 100
MAX_WEBSOCKETS = 64  # open at once; each costs a task, a buffer and its subscribers' fan-out
MAX_SUBSCRIPTIONS = 16  # per WebSocket
# each topic with the params its subscription takes (`_subscription_params`)
TOPIC_PARAMS: dict[str, tuple[str, ...]] = {
    "ops": (), "balances": (), "status": (),
    "book": ("market", "depth"), "trades": ("market",), "fills": ("market",), "orders": ("market",),
    "positions": ("account",), "account": ("account",), "funding": ("market",), "liquidations": ("market",),
}
PERP_TOPICS = ("funding", "liquidations")  # their market must be a perpetual
TOPICS = tuple(TOPIC_PARAMS)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = -32700, -32600, -32601, -32602, -32603
REJECTED = -32001
NOT_READY = -32002  # the node does not know its own last seq yet (a new store): nothing signed
STORAGE = -32003  # the store refused the write (a full disk): nothing signed
NOT_FOUND = -32004
EXIT_REFUSED = -32005  # parley_exit cannot start: data.reason is no_chain, no_certificate or already_exiting
REQUEST_ID_CONFLICT = "request_id_conflict"  # data.reason of an INVALID_PARAMS: the key names another request

TRANSFER, ORDER_PLACE, ORDER_CANCEL, ORDER_CANCEL_ALL = "transfer", "order.place", "order.cancel", "order.cancel_all"
ORACLE_PRICE, LIQUIDATE = "oracle.price", "liquidate"
PLACE_PARAMS = ("market", "side", "qty", "price", "type", "tif", "reduce_only", "expires", "request_id")
NO_LIQUIDITY = "no_liquidity"  # a market order without a price, and nothing on the other side to take

logger = logging.getLogger(__name__)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def response(self, request_id: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request_id, "error": self.as_error()}

    def as_error(self) -> dict[str, Any]:
        """The JSON-RPC error object."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


# -- JSON text ----------------------------------------------------------------------------------------


def load_json(data: bytes) -> Any:
    """One JSON-RPC payload, parsed: its size and nesting are checked before `json.loads` runs."""
    if len(data) > MAX_REQUEST_BYTES:
        raise RpcError(INVALID_REQUEST, "request larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RpcError(PARSE_ERROR, f"invalid JSON: not UTF-8 ({exc})") from exc
    depth = deeper_than_limit(data)
    if depth is not None:
        raise RpcError(INVALID_REQUEST, f"arrays and objects nest {depth} deep; the nesting limit is {MAX_NESTING}")
    try:
        return json.loads(text)
    except RecursionError as exc:  # only with a recursion limit far below MAX_NESTING's needs
        raise RpcError(INVALID_REQUEST, f"JSON nested too deep (the nesting limit is {MAX_NESTING})") from exc
    except ValueError as exc:
        raise RpcError(PARSE_ERROR, f"invalid JSON: {exc}") from exc


def encode_response(response: Any) -> str:
    """A response as JSON text in ASCII (a lone surrogate in an echoed id stays an escape)."""
    try:
        return json.dumps(response, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        logger.exception("a response could not be encoded as JSON")
        return json.dumps(RpcError(INTERNAL, "internal error").response(None))


# -- parameter parsing ---------------------------------------------------------------------------------

# The JSON readers are the registry's (`crdt.kinds`): a body field and a parameter of the same
# type take the same inputs and get the same messages.


def _checked(reader: Callable[..., Any], *args: Any) -> Any:
    try:
        return reader(*args)
    except InvalidField as exc:
        raise invalid(str(exc)) from exc


def _uint(value: Any, name: str) -> int:
    number: int = _checked(json_uint, value, name)
    return number


def _hex(value: Any, name: str, size: int) -> bytes:
    data: bytes = _checked(json_hex, value, name, size)
    return data


def _address(value: Any, name: str) -> bytes:
    return _hex(value, name, 20)


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise invalid("request_id must be a string of 1 to 128 characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid("request_id must be Unicode text (it holds a lone surrogate)") from exc
    return value


def parse_body(kind: str, body: Any, kinds: Registry = KINDS) -> dict[str, Any]:
    """A client's JSON body as the CBOR body of an operation of `kind`, as the registry of kinds
    converts it (-32602 naming the field, or the kinds this node signs)."""
    try:
        return kinds.from_json(kind, body)
    except (InvalidField, UnknownKind) as exc:
        raise invalid(str(exc)) from exc


def _params(params: Any, names: tuple[str, ...], required: int) -> list[Any]:
    """Positional or named params as a list in `names` order."""
    if params is None:
        params = []
    if isinstance(params, dict):
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise invalid(f"unknown parameters {_shown(unknown)}; expected {list(names)}")
        values = [params.get(name) for name in names]
        missing = [name for name, value in zip(names[:required], values, strict=False) if value is None]
    elif isinstance(params, list):
        if len(params) > len(names):
            raise invalid(f"at most {len(names)} parameters: {list(names)}")
        values = list(params) + [None] * (len(names) - len(params))
        missing = [name for name, value in zip(names[:required], values, strict=False) if value is None]
    else:
        raise invalid("params must be an array or an object")
    if missing:
        raise invalid(f"missing parameters {missing}")
    return values


# -- the methods ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: tuple[str, ...]
    required: int
    summary: str
    handler: Callable[[NodeService, list[Any]], Awaitable[Any]]


async def _submit(node: NodeService, args: list[Any]) -> Any:
    return await _sign(node, _submission(node, args))


def _submission(node: NodeService, args: list[Any]) -> Submission:
    kind, body, request_id = args
    if not isinstance(kind, str):
        raise invalid("kind must be a string")
    request_id = _request_id(request_id)
    parsed = parse_body(kind, body)
    _whole_units(node, parsed)
    return Submission(kind, parsed, request_id)


MAX_BATCH = 100  # items of one parley_submitMany or parley_placeOrders
SUBMIT_PARAMS = ("kind", "body", "request_id")


def _batch(
    node: NodeService, value: Any, names: tuple[str, ...], required: int, what: str,
    submission: Callable[[NodeService, list[Any]], Submission],
) -> list[Submission]:
    """A batch's items, each an object (or array) of one call's params, in `names` order, made
    into submissions; the first malformed one refuses the whole call, naming its index."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
        raise invalid(f"{what} must be an array of 1 to {MAX_BATCH} items")
    submissions = []
    for index, item in enumerate(value):
        try:
            submissions.append(submission(node, _params(item, names, required)))
        except RpcError as exc:
            raise RpcError(exc.code, f"{what}[{index}]: {exc.message}", exc.data) from exc
    return submissions


async def _submit_many(node: NodeService, args: list[Any]) -> Any:
    return await _sign_many(node, _batch(node, args[0], SUBMIT_PARAMS, 2, "items", _submission))


async def _sign_many(node: NodeService, submissions: list[Submission]) -> list[Any]:
    """`NodeService.submit_many`: a receipt, or the error object of the item's refusal (what the
    call alone would have answered), per item; a refusal of the whole batch as the call's error."""
    try:
        results = await node.submit_many(submissions)
    except NotReady as exc:
        raise RpcError(NOT_READY, f"not ready: {exc}") from exc
    except StorageUnavailable as exc:
        raise RpcError(STORAGE, f"the node cannot store the operations: {exc}") from exc
    return [{"error": _refusal(result).as_error()} if isinstance(result, Exception) else result
            for result in results]


def _refusal(exc: RequestRejected | RequestIdConflict) -> RpcError:
    if isinstance(exc, RequestRejected):
        return RpcError(REJECTED, f"rejected: {exc}", {"reason": exc.reason})
    return RpcError(INVALID_PARAMS, str(exc), {"reason": REQUEST_ID_CONFLICT})


def _whole_units(node: NodeService, body: dict[str, Any]) -> None:
    """Refuse an amount finer than its token's decimals: payout leaves are in the token's own
    decimals, so the part below one unit could never be paid out (replay refuses such a
    withdrawal; a transfer or a lock of one would strand the dust)."""
    token = node.genesis.token(body["token"]) if isinstance(body.get("token"), str) else None
    amount = body.get("amount")
    if token is None or type(amount) is not int or token.decimals >= 9:
        return
    unit = 10 ** (9 - token.decimals)
    if amount % unit:
        raise RpcError(
            REJECTED,
            f"rejected: {amount} e9 is finer than {token.symbol}'s {token.decimals} decimals: "
            f"amounts are whole multiples of {unit} e9 (one unit of the token)",
            {"reason": Reason.BAD_AMOUNT.value},
        )


async def _sign(node: NodeService, submission: Submission) -> dict[str, Any]:
    """`NodeService.submit` with its refusals as JSON-RPC errors (nothing was signed for any)."""
    try:
        return await node.submit(submission.kind, submission.body, submission.request_id, submission.prepare)
    except (RequestRejected, RequestIdConflict) as exc:
        raise _refusal(exc) from exc
    except NotReady as exc:
        raise RpcError(NOT_READY, f"not ready: {exc}") from exc
    except StorageUnavailable as exc:
        raise RpcError(STORAGE, f"the node cannot store the operation: {exc}") from exc


async def _transfer(node: NodeService, args: list[Any]) -> Any:
    to, token, amount, request_id = args
    return await _submit(node, ["transfer", {"to": to, "token": token, "amount": amount}, request_id])


async def _balances(node: NodeService, args: list[Any]) -> Any:
    (account,) = args
    balances = node.balances()
    result = {
        account_hex: {t: {k: str(v) for k, v in parts.items()} for t, parts in tokens.items()}
        for account_hex, tokens in balances.items()
    }
    if account is None:
        return result
    key = "0x" + _address(account, "account").hex()
    if key not in result:
        raise invalid(f"{account} is not a participant of this channel")
    return {key: result[key]}


async def _status(node: NodeService, args: list[Any]) -> Any:
    (op_id_hex,) = args
    return node.operation(_hex(op_id_hex, "op_id", 32))


async def _heads(node: NodeService, args: list[Any]) -> Any:
    return node.heads()


async def _peers(node: NodeService, args: list[Any]) -> Any:
    return node.peers()


async def _stats(node: NodeService, args: list[Any]) -> Any:
    return node.stats()


async def _checkpoints(node: NodeService, args: list[Any]) -> Any:
    return node.checkpoints()


async def _certificate(node: NodeService, args: list[Any]) -> Any:
    (version,) = args
    certificate = node.certificate(None if version is None else _uint(version, "version"))
    if certificate is None:
        raise RpcError(NOT_FOUND, "no certificate yet" if version is None else f"no certificate for version {version}")
    return certificate_json(certificate, node.genesis)


def certificate_json(certificate: Certificate, genesis: Genesis) -> dict[str, Any]:
    """What parley_certificate answers: the checkpoint's fields, its signers and its CBOR."""
    checkpoint = certificate.checkpoint
    return {
        "version": checkpoint.version,
        "payout_root": "0x" + checkpoint.payout_root.hex(),
        "state_hash": "0x" + checkpoint.state_hash.hex(),
        "totals": [str(total) for total in checkpoint.totals],
        "deposit_nonce": checkpoint.deposit_nonce,
        "time": checkpoint.time,
        "signers": ["0x" + signer.hex() for signer in certificate.signers(genesis)],
        "certificate": "0x" + certificate.encode().hex(),
    }


async def _evidence(node: NodeService, args: list[Any]) -> Any:
    return node.evidence()


async def _discover(node: NodeService, args: list[Any]) -> Any:
    return openrpc_document()


# -- trading --------------------------------------------------------------------------------------------


def _market(value: Any) -> str:
    """A market symbol parameter; whether the genesis holds it is the node's to say
    (`UnknownMarket`, answered as invalid params by `call`)."""
    market: str = _checked(json_text, value, "market", MAX_MARKET_SYMBOL)
    return market


def _bounded(value: Any, name: str, default: int, limit: int) -> int:
    if value is None:
        return default
    number = _uint(value, name)
    if not 1 <= number <= limit:
        raise invalid(f"{name} must be between 1 and {limit}")
    return number


def _order_id(value: Any) -> bytes:
    return _hex(value, "order", 32)


def _order_state(node: NodeService, receipt: dict[str, Any], order_id: bytes) -> dict[str, Any]:
    """A submit's receipt with the state of the order it placed or cancelled, as applied."""
    return {**receipt, "order": node.order(order_id)}


async def _place_order(node: NodeService, args: list[Any]) -> Any:
    receipt = await _sign(node, _order_submission(node, args))
    return _order_state(node, receipt, _hex(receipt["op_id"], "op_id", 32))


async def _place_orders(node: NodeService, args: list[Any]) -> Any:
    results = await _sign_many(node, _batch(node, args[0], PLACE_PARAMS, 3, "orders", _order_submission))
    return [result if "error" in result else _order_state(node, result, _hex(result["op_id"], "op_id", 32))
            for result in results]


def _order_submission(node: NodeService, args: list[Any]) -> Submission:
    """An order.place from parley_placeOrder's params (a market order without a price takes its
    price from the book when the node signs it)."""
    market, side, qty, price, order_type, tif, reduce_only, expires, request_id = args
    request_id = _request_id(request_id)
    order_type = LIMIT if order_type is None else order_type
    if tif is None:
        tif = IOC if order_type == MARKET else GTC
    body = parse_body(ORDER_PLACE, {
        "market": market, "side": side, "type": order_type, "tif": tif, "price": 0 if price is None else price,
        "qty": qty, "reduce_only": False if reduce_only is None else reduce_only,
        "expires": 0 if expires is None else expires,
    })
    prepare = None
    if price is None:
        if body["type"] != MARKET:
            raise invalid("missing parameters ['price']: a limit order needs its price")

        def prepare(body: dict[str, Any]) -> dict[str, Any]:
            """The sweep price of the book now, taken once the request id is known to be new
            (a retry gets the first answer, not another price)."""
            if node.genesis.market(body["market"]) is None:
                return body  # replay's unknown_market
            bound = node.sweep_price(body["market"], body["side"], body["qty"])
            if bound is None:
                raise RequestRejected(NO_LIQUIDITY, f"the {body['market']} book has no "
                                      f"{'asks' if body['side'] == BUY else 'bids'} to take")
            return {**body, "price": bound}

    return Submission(ORDER_PLACE, body, request_id, prepare)


async def _cancel_order(node: NodeService, args: list[Any]) -> Any:
    order, request_id = args
    order_id = _order_id(order)
    receipt = await _sign(node, Submission(ORDER_CANCEL, {"order": order_id}, _request_id(request_id)))
    return _order_state(node, receipt, order_id)


async def _cancel_all(node: NodeService, args: list[Any]) -> Any:
    market, request_id = args
    return await _sign(node, Submission(ORDER_CANCEL_ALL, parse_body(ORDER_CANCEL_ALL, {"market": market}),
                                        _request_id(request_id)))


async def _markets(node: NodeService, args: list[Any]) -> Any:
    return node.markets()


async def _order_book(node: NodeService, args: list[Any]) -> Any:
    market, depth, level = args
    level = 2 if level is None else level
    if type(level) is not int or level not in LEVELS:
        raise invalid(f"level must be one of {list(LEVELS)}")
    return node.order_book(_market(market), _bounded(depth, "depth", 50, MAX_DEPTH), level)


async def _open_orders(node: NodeService, args: list[Any]) -> Any:
    market, account = args
    owner = node.address if account is None else Address(_address(account, "account"))
    if node.genesis.participant(owner) is None:
        raise invalid(f"{account} is not a participant of this channel")
    return node.open_orders(None if market is None else _market(market), owner)


async def _order(node: NodeService, args: list[Any]) -> Any:
    (order,) = args
    found = node.order(_order_id(order))
    if found is None:
        raise RpcError(NOT_FOUND, f"no order {order} (no order.place with that id)")
    return found


async def _my_trades(node: NodeService, args: list[Any]) -> Any:
    market, limit = args
    return node.my_trades(None if market is None else _market(market), _bounded(limit, "limit", 100, MAX_LIMIT))


def _subscription_params(node: NodeService, topic: str, params: Any) -> dict[str, Any]:
    """The params of a subscription to `topic`, checked: a ``market`` of the genesis (which a
    book needs, and which filters trades, fills and orders; a perp market for funding and
    liquidations), a book's ``depth``, the participant whose positions or account to follow."""
    names = TOPIC_PARAMS[topic]
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise invalid('params must be an object, such as {"market": "ETH/USDC"}')
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise invalid(f"unknown parameters {_shown(unknown)} for {topic}; expected {list(names)}")
    checked: dict[str, Any] = {}
    if params.get("market") is not None:
        market = _perp_market(node, params["market"]) if topic in PERP_TOPICS else _market(params["market"])
        if node.genesis.market(market) is None:
            raise UnknownMarket(market)
        checked["market"] = market
    elif topic == "book":
        raise invalid("missing parameters ['market']: a book subscription names its market")
    if params.get("account") is not None:
        checked["account"] = _participant(node, params["account"])
    if params.get("depth") is not None:
        checked["depth"] = _bounded(params["depth"], "depth", 0, MAX_DEPTH)
    return checked


async def _trades(node: NodeService, args: list[Any]) -> Any:
    market, limit = args
    return node.trades(_market(market), _bounded(limit, "limit", 100, MAX_LIMIT))


def _participant(node: NodeService, account: Any) -> Address:
    """An account argument: this node's participant if None, else a participant's address."""
    owner = node.address if account is None else Address(_address(account, "account"))
    if node.genesis.participant(owner) is None:
        raise invalid(f"{account} is not a participant of this channel")
    return owner


def _perp_market(node: NodeService, market: Any) -> str:
    symbol = _market(market)
    found = node.genesis.market(symbol)
    if found is None:
        raise UnknownMarket(symbol)
    if found.perp is None:
        raise invalid(f"{symbol} is a spot market, not a perpetual")
    return symbol


async def _positions(node: NodeService, args: list[Any]) -> Any:
    (account,) = args
    return node.positions(None if account is None else _participant(node, account))


async def _account(node: NodeService, args: list[Any]) -> Any:
    (account,) = args
    return node.account(_participant(node, account))


async def _mark_prices(node: NodeService, args: list[Any]) -> Any:
    return node.mark_prices()


async def _funding_history(node: NodeService, args: list[Any]) -> Any:
    market, limit = args
    return node.funding_history(_perp_market(node, market), _bounded(limit, "limit", 100, MAX_LIMIT))


async def _funding_payments(node: NodeService, args: list[Any]) -> Any:
    account, market, limit = args
    symbol = None if market is None else _perp_market(node, market)
    return node.funding_payments(_participant(node, account), symbol, _bounded(limit, "limit", 100, MAX_LIMIT))


async def _liquidatable(node: NodeService, args: list[Any]) -> Any:
    return node.liquidatable()


async def _post_price(node: NodeService, args: list[Any]) -> Any:
    market, price, request_id = args
    body = parse_body(ORACLE_PRICE, {"market": market, "price": price})
    return await _sign(node, Submission(ORACLE_PRICE, body, _request_id(request_id)))


async def _liquidate(node: NodeService, args: list[Any]) -> Any:
    account, market, qty, request_id = args
    body = parse_body(LIQUIDATE, {"account": account, "market": market, "qty": qty})
    receipt = await _sign(node, Submission(LIQUIDATE, body, _request_id(request_id)))
    return {**receipt, "liquidation": node.liquidation(_hex(receipt["op_id"], "op_id", 32))}


async def _exit(node: NodeService, args: list[Any]) -> Any:
    try:
        return node.start_exit()
    except ExitRefused as exc:
        raise RpcError(EXIT_REFUSED, f"cannot exit: {exc}", {"reason": exc.reason}) from exc


async def _exit_status(node: NodeService, args: list[Any]) -> Any:
    return node.exit_status()


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("parley_submit", ("kind", "body", "request_id"), 2,
               f"Sign an operation of one of the kinds {KINDS.listing()} as this node's participant, store it, "
               "apply it and gossip it. Returns {op_id, seq, status}. A retried request_id returns the first answer.",
               _submit),
        Method("parley_transfer", ("to", "token", "amount", "request_id"), 3,
               "Shorthand for parley_submit with kind transfer.", _transfer),
        Method("parley_submitMany", ("items",), 1,
               f"parley_submit for a batch of 1 to {MAX_BATCH} items (each {{kind, body, request_id}}): each is "
               "dry run after the ones before it, and those replay would take are signed with consecutive seqs, "
               "stored in one commit (one fsync), applied and gossiped together. Returns one result per item, in "
               "order: its receipt, or {error} with the error object that parley_submit would have answered.",
               _submit_many),
        Method("parley_balances", ("account",), 0,
               "Free, held (by open orders), locked and withdrawn (cumulative) balances (e9 strings) per "
               "participant and token.", _balances),
        Method("parley_status", ("op_id",), 1,
               "The status of an operation: tentative, final, rejected:<reason>, pending or unknown.", _status),
        Method("parley_heads", (), 0, "The heads of the hash graph and the version vector.", _heads),
        Method("parley_peers", (), 0, "Connected peers, sync sessions, banned peers and penalties.", _peers),
        Method("parley_stats", (), 0, "Counts, roots and rates of this node.", _stats),
        Method("parley_checkpoints", (), 0, "The certified checkpoints this node has applied.", _checkpoints),
        Method("parley_certificate", ("version",), 0,
               "A checkpoint certificate (threshold EIP-712 signatures, payout leaves) as hex CBOR, the newest "
               "by default: what `parley exit` and the contract take.", _certificate),
        Method("parley_evidence", (), 0,
               "Misbehaviour seen: operation equivocation (for slashEquivocation), double signing (for "
               "slashDoubleSign), double votes and double proposals.", _evidence),
        Method("parley_markets", (), 0,
               "Every market of the channel: symbol, kind, base, quote, tick and step sizes, quantity and price "
               "limits, maker and taker fees (e9 strings), and the decimal places of its prices and quantities.",
               _markets),
        Method("parley_placeOrder", PLACE_PARAMS, 3,
               "Sign an order.place (price and qty in e9 strings; type limit or market, tif gtc, ioc or post_only; "
               "a market order's tif defaults to ioc, and without a price it takes the book as it stands: its "
               "price is the worst one it meets now). Refused unsigned, with data.reason, when replay would "
               "reject it. Returns {op_id (the order id), seq, status, order}: order is parley_order's state "
               "of it once applied (fills so far, remaining, status).", _place_order),
        Method("parley_placeOrders", ("orders",), 1,
               f"parley_placeOrder for a batch of 1 to {MAX_BATCH} orders (each an object of its params), as "
               "parley_submitMany signs them: one commit, one result per order, in order (a receipt with the "
               "order's state, or {error}). A market order without a price takes its sweep price from the book "
               "as the orders before it leave it.", _place_orders),
        Method("parley_cancelOrder", ("order", "request_id"), 1,
               "Sign an order.cancel of one of this node's open orders. Returns {op_id, seq, status, order}.",
               _cancel_order),
        Method("parley_cancelAll", ("market", "request_id"), 1,
               "Sign an order.cancel_all: every open order of this node's participant in the market. Returns "
               "{op_id, seq, status}.", _cancel_all),
        Method("parley_orderBook", ("market", "depth", "level"), 1,
               "The market's book now, tentative orders included: {market, level, version (certified "
               "checkpoints), best_bid, best_ask, bids, asks}, best first, depth prices a side (50). Level 2: "
               "[price, qty] per price; level 3: every order with order_id, owner, price, remaining, placed and "
               "mine (this node's participant owns it).", _order_book),
        Method("parley_openOrders", ("market", "account"), 0,
               "The open orders of an account (this node's participant by default), oldest first.", _open_orders),
        Method("parley_order", ("order",), 1,
               "One order: what it asked, status (open, filled, cancelled, expired, self_trade, unfunded, done; "
               "for a perp market also undercollateralized, reduce_only, take_bound, delisted; rejected:<reason>, "
               "pending), remaining, filled, fills, and final once it cannot change.", _order),
        Method("parley_myTrades", ("market", "limit"), 0,
               "The last fills (100) of this node's participant, oldest first, each with its side, liquidity "
               "(taker or maker) and fee from its point of view, and whether it is final.", _my_trades),
        Method("parley_trades", ("market", "limit"), 1,
               "The market's last fills (100), oldest first: price, qty, the taker's side, both orders and "
               "owners, fees, final.", _trades),
        Method("parley_positions", ("account",), 0,
               "Open perp positions (of an account, if given): side, size, entry and mark prices, notional, "
               "unrealised PnL, pending funding and liquidation price (e9 strings).", _positions),
        Method("parley_account", ("account",), 0,
               "An account's cross margin (this node's participant by default) per collateral token: balance, "
               "debt, account value, initial and maintenance margin, free collateral, health (ok, reduce_only, "
               "liquidatable, bankrupt), and its positions.", _account),
        Method("parley_markPrices", (), 0,
               "Each perp market's oracle price for the epoch, whether it is fresh, whether its circuit breaker "
               "halts it, its funding index and last rate, and its open interest.", _mark_prices),
        Method("parley_fundingHistory", ("market", "limit"), 1,
               "A perp market's last fundings (100), oldest first: checkpoint version and time, rate, index and "
               "the oracle price.", _funding_history),
        Method("parley_fundingPayments", ("account", "market", "limit"), 0,
               "An account's funding settlements (this node's participant by default; of one perp market, if "
               "given), the last 100, oldest first: market, checkpoint version and time, and what the position "
               "paid (positive) or received (negative) for the intervals since it last settled.", _funding_payments),
        Method("parley_liquidatable", (), 0,
               "The accounts below maintenance margin, with their positions (largest first): what a liquidator "
               "bot needs.", _liquidatable),
        Method("parley_postPrice", ("market", "price", "request_id"), 2,
               "Sign an oracle.price (this node's participant must be an oracle): its price of a perp market, "
               "e9. Returns {op_id, seq, status}.", _post_price),
        Method("parley_liquidate", ("account", "market", "qty", "request_id"), 3,
               "Sign a liquidate of another account's perp position (this node's participant must be a "
               "liquidator; the account must be below maintenance margin). Returns {op_id, seq, status, "
               "liquidation}.", _liquidate),
        Method("parley_exit", (), 0,
               "Start the emergency exit from this node, in the background: close the channel on-chain with the "
               "newest certificate (or challenge an older checkpoint in dispute), wait out the dispute window, "
               "finalize, and claim this participant's payouts and refunds, as `parley exit` does. Refused with "
               "-32005 and data.reason no_chain, no_certificate or already_exiting. Returns parley_exitStatus.",
               _exit),
        Method("parley_exitStatus", (), 0,
               "The emergency exit's progress: phase (idle, starting, proposing, challenged, waiting, finalising, "
               "claiming, claimed, failed), running, attempts, version, proposed, challenged, finalized, "
               "finalizes_at, chain_now, window and remaining (chain seconds), claimed, already_claimed, refunded, "
               "message, error, events, and chain (whether a chain is configured).", _exit_status),
        Method("rpc.discover", (), 0, "This API's OpenRPC document.", _discover),
    )
}
SUBSCRIBE = "parley_subscribe"
UNSUBSCRIBE = "parley_unsubscribe"


def _param_schemas(kinds: Registry) -> dict[tuple[str, str], dict[str, Any]]:
    """The schemas of the parameters that carry operations, from the registry of kinds."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {
        ("parley_submit", "kind"): {"enum": list(kinds)},
        ("parley_submit", "body"): {
            "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in kinds],
            "description": "the body of the kind, exactly its fields",
        },
    }
    for method in ("parley_submit", "parley_transfer", "parley_placeOrder", "parley_cancelOrder", "parley_cancelAll",
                   "parley_postPrice", "parley_liquidate"):
        schemas[(method, "request_id")] = {"type": "string", "minLength": 1, "maxLength": 128}
    for method, kind in (("parley_transfer", TRANSFER), ("parley_placeOrder", ORDER_PLACE),
                         ("parley_cancelOrder", ORDER_CANCEL), ("parley_cancelAll", ORDER_CANCEL_ALL),
                         ("parley_postPrice", ORACLE_PRICE), ("parley_liquidate", LIQUIDATE)):
        if kind in kinds:
            for name, field_type in kinds[kind].fields:
                schemas[(method, name)] = dict(field_type.schema)
    for method in ("parley_orderBook", "parley_openOrders", "parley_myTrades", "parley_trades"):
        schemas[(method, "market")] = dict(MARKET_SYMBOL.schema)
    for method, param, call in (("parley_submitMany", "items", "parley_submit"),
                                ("parley_placeOrders", "orders", "parley_placeOrder")):
        item = {"type": "object", "properties": {
            name: schema for (m, name), schema in schemas.items() if m == call}}
        schemas[(method, param)] = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": item}
    schemas[("parley_order", "order")] = dict(OP_ID.schema)
    schemas[("parley_status", "op_id")] = dict(OP_ID.schema)
    schemas[("parley_balances", "account")] = dict(ADDRESS.schema)
    schemas[("parley_certificate", "version")] = {"type": "integer", "minimum": 1,
                                                  "description": "the newest when left out"}
    for method in ("parley_openOrders", "parley_positions", "parley_account", "parley_fundingPayments"):
        schemas[(method, "account")] = dict(ADDRESS.schema)
    schemas[("parley_fundingHistory", "market")] = dict(MARKET_SYMBOL.schema)
    schemas[("parley_fundingPayments", "market")] = dict(MARKET_SYMBOL.schema)
    schemas[("parley_fundingPayments", "limit")] = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                                    "default": 100}
    schemas[("parley_fundingHistory", "limit")] = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                                   "default": 100}
    schemas[("parley_orderBook", "depth")] = {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH, "default": 50}
    schemas[("parley_orderBook", "level")] = {"enum": list(LEVELS), "default": 2}
    for method in ("parley_myTrades", "parley_trades"):
        schemas[(method, "limit")] = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}
    return schemas


def openrpc_document(kinds: Registry = KINDS) -> dict[str, Any]:
    """The OpenRPC document: every method, with a JSON Schema per operation kind (under
    ``components.schemas``, named by the kind) derived from the registry of kinds, and each
    method's result from its model in `channel.api.schemas` (their components beside the kinds')."""
    param_schemas = _param_schemas(kinds)
    results, models = result_schemas()
    clash = set(models) & set(kinds)
    if clash:
        raise ValueError(f"result models named like operation kinds: {sorted(clash)}")
    methods = [
        {
            "name": m.name,
            "summary": m.summary,
            "params": [
                {"name": p, "required": i < m.required, "schema": param_schemas.get((m.name, p), {})}
                for i, p in enumerate(m.params)
            ],
            "result": {"name": "result", "schema": results.get(m.name, {})},  # every method has one: a test
        }
        for m in METHODS.values()
    ]
    methods.append({
        "name": SUBSCRIBE,
        "summary": f"WebSocket only: subscribe to one of {list(TOPICS)}; returns an id. params: book needs "
                   "{market, depth?} (a snapshot with a seq, then deltas seq + 1, ...); trades, fills and orders "
                   "take {market?}; positions and account take {account?} (this node's participant by default: "
                   "a snapshot with a seq, then updates seq + 1, ..., in the shapes of parley_positions and "
                   "parley_account); funding (each funding a checkpoint applies) and liquidations (each liquidate "
                   "that took effect, appeared, changed or vanished, with final) take {market?}, a perp market.",
        "params": [
            {"name": "topic", "required": True, "schema": {"enum": list(TOPICS)}},
            {"name": "params", "required": False, "schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"market": dict(MARKET_SYMBOL.schema),
                               "depth": {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH},
                               "account": dict(ADDRESS.schema)},
            }},
        ],
        "result": {"name": "subscription", "schema": {"type": "string"}},
    })
    methods.append({
        "name": UNSUBSCRIBE, "summary": "WebSocket only: end a subscription.",
        "params": [{"name": "subscription", "required": True, "schema": {"type": "string"}}],
        "result": {"name": "ok", "schema": {"type": "boolean"}},
    })
    return {
        "openrpc": "1.2.6",
        "info": {"title": "Parley node API", "version": "1"},
        "servers": [{"name": "HTTP", "url": "/rpc"}, {"name": "WebSocket", "url": "/ws"}],
        "methods": methods,
        "components": {"schemas": {**models, **{name: kinds[name].json_schema() for name in kinds}}},
    }


async def call(node: NodeService, request: Any, session: Mapping[str, Method] | None = None) -> dict[str, Any] | None:
    """Run one JSON-RPC request object; None for a notification (no id). `session` holds the
    methods of one WebSocket (subscriptions). It never raises: an unexpected exception in a
    method is logged and answered -32603, for this request only."""
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
        return RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request object").response(None)
    request_id = request.get("id")
    if request_id is not None and (type(request_id) is bool or not isinstance(request_id, str | int)):
        return RpcError(INVALID_REQUEST, "id must be a string or an integer").response(None)
    name = request["method"]
    method = METHODS.get(name) or (session or {}).get(name)
    try:
        if method is None:
            if name in (SUBSCRIBE, UNSUBSCRIBE):
                raise RpcError(METHOD_NOT_FOUND, f"{name} is only available over the WebSocket")
            raise RpcError(METHOD_NOT_FOUND, f"no method {_shown(name)}; see rpc.discover")
        try:
            result = await method.handler(node, _params(request.get("params"), method.params, method.required))
        except UnknownMarket as exc:
            markets = [market.symbol for market in node.genesis.markets]
            raise invalid(f"market: {exc} (its markets: {_shown(markets)})") from exc
    except RpcError as error:
        return None if "id" not in request else error.response(request_id)
    except Exception:
        logger.exception("internal error in %s", _shown(name))
        return None if "id" not in request else RpcError(INTERNAL, "internal error").response(request_id)
    if "id" not in request:
        return None
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


async def handle_payload(node: NodeService, data: bytes, session: Mapping[str, Method] | None = None) -> Any:
    """A raw JSON-RPC payload (one request or a batch) to its response (None: nothing to send).
    Every item of a batch is answered on its own, whatever happens to the others."""
    try:
        payload = load_json(data)
    except RpcError as error:
        return error.response(None)
    if isinstance(payload, list):
        if not payload:
            return RpcError(INVALID_REQUEST, "empty batch").response(None)
        if len(payload) > MAX_BATCH:
            return RpcError(INVALID_REQUEST, f"a batch holds at most {MAX_BATCH} requests").response(None)
        responses = [r for r in [await call(node, item, session) for item in payload] if r is not None]
        return responses or None
    return await call(node, payload, session)


# -- the ASGI application ---------------------------------------------------------------------------------


def _authorized(token: str, header: str | None, query: str | None) -> bool:
    presented = query
    if header is not None and header.startswith("Bearer "):
        presented = header[len("Bearer ") :]
    return presented is not None and hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), token.encode())


_CONTENT_LENGTH = re.compile(r"[0-9]{1,8}")


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None as soon as it is known to be over the cap: from the declared
    Content-Length before reading anything, or, without one (chunked), at the chunk that passes
    the cap. Nothing beyond it is read (hypercorn closes the connection after the answer)."""
    declared = request.headers.get("content-length")
    if declared is not None and not (_CONTENT_LENGTH.fullmatch(declared) and int(declared) <= MAX_REQUEST_BYTES):
        return None
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                return None
            chunks.append(chunk)
    return b"".join(chunks)


def _json(payload: Any, status_code: int = 200) -> Response:
    return Response(encode_response(payload), status_code=status_code, media_type="application/json")


# -- the web page (static files of channel/api/page, package data) -------------------------------------

PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/style.css": ("style.css", "text/css; charset=utf-8")}
# no inline script or style, nothing from elsewhere; the page talks only to this API
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self' ws://127.0.0.1:* ws://localhost:*; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def page_file(name: str) -> bytes:
    """One file of the page, read from the installed package."""
    return resources.files("channel.api").joinpath("page", name).read_bytes()


def build_app(node: NodeService, token: str) -> Starlette:
    registry = CollectorRegistry()
    registry.register(_NodeCollector(node))
    registry.register(node.metrics.registry)  # the submit, delivery and finality histograms
    ProcessCollector(registry=registry)  # the node's CPU, memory and open files

    def unauthorized() -> JSONResponse:
        return JSONResponse(
            {"error": "missing or wrong bearer token (see <data_dir>/api-token)"},
            status_code=401, headers={"WWW-Authenticate": "Bearer"},
        )

    async def rpc(request: Request) -> Response:
        if not _authorized(token, request.headers.get("authorization"), None):
            return unauthorized()
        try:
            body = await _read_body(request)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        if body is None:
            return _json(RpcError(INVALID_REQUEST, "request larger than 1 MiB").response(None), 413)
        try:
            response = await handle_payload(node, body)
        except Exception:  # handle_payload answers every error itself: this is the last resort
            logger.exception("internal error answering a request")
            response = RpcError(INTERNAL, "internal error").response(None)
        return Response(status_code=204) if response is None else _json(response)

    async def openrpc(request: Request) -> Response:
        return JSONResponse(openrpc_document())

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        name, media_type = PAGE_FILES[request.url.path]
        return Response(page_file(name), media_type=media_type, headers=PAGE_HEADERS)

    sockets = 0

    async def websocket(ws: WebSocket) -> None:
        nonlocal sockets
        if not _authorized(token, ws.headers.get("authorization"), ws.query_params.get("token")):
            await ws.send_denial_response(unauthorized())
            return
        if sockets >= MAX_WEBSOCKETS:
            await ws.send_denial_response(
                JSONResponse({"error": f"at most {MAX_WEBSOCKETS} WebSockets at once"}, status_code=503)
            )
            return
        sockets += 1
        try:
            await ws.accept()
            await _serve_websocket(node, ws)
        finally:
            sockets -= 1

    return Starlette(routes=[
        Route("/rpc", rpc, methods=["POST"]),
        Route("/openrpc.json", openrpc, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *(Route(path, page, methods=["GET"]) for path in PAGE_FILES),
        WebSocketRoute("/ws", websocket),
    ])


async def _serve_websocket(node: NodeService, ws: WebSocket) -> None:
    """Answer the messages of one WebSocket in order (text or binary frames, each one payload),
    with two more methods: subscriptions, whose events a writer task interleaves."""
    outgoing_send, outgoing = trio.open_memory_channel[Any](256)
    subscriptions: dict[str, Any] = {}
    counter = 0

    started: list[tuple[str, Subscriber, trio.MemoryReceiveChannel[dict[str, Any]]]] = []  # not yet forwarded

    async def forward(
        subscription_id: str, subscriber: Subscriber, receive: trio.MemoryReceiveChannel[dict[str, Any]]
    ) -> None:
        async with receive:
            async for event in receive:
                await outgoing_send.send({"jsonrpc": "2.0", "method": "parley_subscription",
                                          "params": {"subscription": subscription_id, "result": event}})
        if subscriber.dropped:  # else it was unsubscribed, or the socket is closing
            await outgoing_send.send({"jsonrpc": "2.0", "method": "parley_subscription_dropped",
                                      "params": {"subscription": subscription_id,
                                                 "reason": "the client fell too far behind"}})

    async def writer() -> None:
        async for message in outgoing:
            await ws.send_text(encode_response(message))

    async def subscribe(_node: NodeService, args: list[Any]) -> Any:
        nonlocal counter
        topic, params = args
        if not isinstance(topic, str) or topic not in TOPICS:
            raise invalid(f"topic must be one of {list(TOPICS)}")
        checked = _subscription_params(node, topic, params)
        if len(subscriptions) >= MAX_SUBSCRIPTIONS:
            raise RpcError(INVALID_REQUEST, f"a WebSocket holds at most {MAX_SUBSCRIPTIONS} subscriptions")
        counter += 1
        subscription_id = f"0x{counter:x}"
        subscriber, receive = node.events.open(topic, checked)
        subscriptions[subscription_id] = subscriber
        started.append((subscription_id, subscriber, receive))  # forwarded once the answer is queued
        return subscription_id

    async def unsubscribe(_node: NodeService, args: list[Any]) -> Any:
        (subscription_id,) = args
        if not isinstance(subscription_id, str):
            raise invalid("subscription must be an id that parley_subscribe returned")
        subscriber = subscriptions.pop(subscription_id, None)
        if subscriber is not None:
            node.events.close(subscriber)
        return subscriber is not None

    session = {
        SUBSCRIBE: Method(SUBSCRIBE, ("topic", "params"), 1, "", subscribe),
        UNSUBSCRIBE: Method(UNSUBSCRIBE, ("subscription",), 1, "", unsubscribe),
    }
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                data = text.encode("utf-8", "surrogatepass") if text is not None else message.get("bytes") or b""
                response = await handle_payload(node, data, session)
                if response is not None:
                    await outgoing_send.send(response)
                for forwarded in started:  # a subscription's events come after its id
                    nursery.start_soon(forward, *forwarded)
                started.clear()
            nursery.cancel_scope.cancel()
    finally:
        for subscriber in subscriptions.values():
            node.events.close(subscriber)


class _NodeCollector:
    """Prometheus gauges read from the node at scrape time."""

    def __init__(self, node: NodeService) -> None:
        self.node = node

    def collect(self) -> Any:
        stats = self.node.stats()
        for name, key, help_text in (
            ("parley_operations", "operations", "Operations in the hash graph."),
            ("parley_pending", "pending", "Operations waiting for their parents."),
            ("parley_rejected", "rejected", "Operations replay gave no effect."),
            ("parley_heads", "heads", "Heads of the hash graph."),
            ("parley_ops_per_second", "ops_per_s", "Operations accepted per second over the last 10 seconds."),
            ("parley_peers", "peers", "Connected peers."),
            ("parley_sync_sessions", "sync_sessions", "Running sync sessions."),
            ("parley_gossip_rejected", "gossip_rejected", "Gossip batches refused by the validator."),
            ("parley_version", "version", "Last decided (final) checkpoint version."),
            ("parley_certified", "certified", "Newest checkpoint version with a certificate."),
            ("parley_equivocations", "equivocations", "Authors caught equivocating."),
        ):
            if key in stats:
                yield GaugeMetricFamily(name, help_text, value=float(stats[key]))
        for key, help_text in (
            ("requests", "Checkpoint catch-up requests sent to peers."),
            ("failed", "Catch-up requests that failed or got a malformed answer."),
            ("versions", "Checkpoint versions applied from catch-up answers."),
            ("certificates", "Certificates adopted from catch-up answers."),
        ):
            if "catchup" in stats:
                yield CounterMetricFamily(f"parley_catchup_{key}", help_text, value=float(stats["catchup"][key]))
        lag = self.node.missing_parents()
        yield GaugeMetricFamily("parley_lag_missing_parents", "Parents we know we lack (sync lag).", value=float(lag))
        chain = stats.get("chain")
        if chain is not None:
            yield GaugeMetricFamily(
                "parley_chain_alert", "1 while the chain worker needs an operator (no gas for a challenge, a "
                "reorged credited deposit); parley stats says why.", value=1.0 if chain["alert"] else 0.0,
            )
            for key, help_text in (
                ("proposals_sent", "Checkpoints this node proposed on-chain."),
                ("challenges_sent", "Stale checkpoints this node challenged."),
                ("finalizations_sent", "Checkpoints this node finalised on-chain."),
            ):
                yield CounterMetricFamily(f"parley_chain_{key}", help_text, value=float(chain[key]))


# -- two fixes to hypercorn 0.18's WebSocket messages (pinned; read by every new WSStream) ------------


class _BoundedWebsocketBuffer(ws_stream.WebsocketBuffer):
    """hypercorn's message buffer writes each fragment before it checks the size, and goes on
    writing the fragments of an oversized frame after it has answered 1009, so a client that
    ignores the close still has its whole message buffered (a 200 MiB frame: +187 MB peak RSS).
    This one checks first and drops the rest of the message. Raising again for each dropped
    fragment would stop hypercorn's event loop at each of them, so the client's close reply,
    read together with the last fragment, would wait for the next ping; instead the end of the
    message tells the app it is disconnected, and the app's return closes the socket."""

    def extend(self, event: Any) -> None:
        if self.length > self.max_length:
            return  # the rest of an oversized message
        if self.length + len(event.data) > self.max_length:
            self.length, self.value = self.max_length + 1, None
            raise ws_stream.FrameTooLargeError()  # hypercorn answers 1009
        super().extend(event)

    def to_message(self) -> dict[str, Any]:
        if self.length > self.max_length:
            return {"type": "websocket.disconnect", "code": 1009}
        message: dict[str, Any] = super().to_message()
        return message


class _NoDeflate(PerMessageDeflate):
    """Declines permessage-deflate, which hypercorn always offers: wsproto inflates each
    received chunk without a bound before any size check, so 64 KiB of compressed spaces
    became 64 MiB at once (200 MiB of spaces, sent as 200 KB: +252 MB peak RSS). The API's
    messages are small; they gain nothing from compression."""

    def accept(self, offer: str) -> None:
        return None


ws_stream.WebsocketBuffer = _BoundedWebsocketBuffer  # type: ignore[misc]
ws_stream.PerMessageDeflate = _NoDeflate  # type: ignore[attr-defined]


async def serve_api(
    node: NodeService, token: str, host: str = "127.0.0.1", port: int = 0,
    *, task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; reports the base URL (``http://host:port``) when bound."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    # Longer than any client keeps an idle connection (httpx: 5 s, channel.api.client.KEEP_ALIVE):
    # with both at 5 s the server closed idle connections just as clients reused them, and a
    # request got "Server disconnected without sending a response" (the full demo, once in CI).
    config.keep_alive_timeout = SERVER_KEEP_ALIVE
    config.websocket_max_message_size = MAX_REQUEST_BYTES  # larger messages: closed with 1009, not buffered
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, build_app(node, token), config)
        task_status.started(str(binds[0]))
