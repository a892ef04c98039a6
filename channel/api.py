"""The local API: JSON-RPC 2.0 over HTTP (``POST /rpc``) and WebSocket (``/ws``).

- It listens on a loopback address only (`channel.config` refuses anything else), because it
  signs with the participant's key.
- Every request carries ``Authorization: Bearer <token>`` (a WebSocket may pass ``?token=``
  instead, since browsers cannot set headers on one). The token is in ``<data_dir>/api-token``.
  A missing or wrong token gets HTTP 401, for the WebSocket handshake too.
- Requests are bounded (1 MiB, 100 calls per batch). Malformed input gets the JSON-RPC error it
  deserves (-32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid
  params, with a message that says what is wrong); a request replay would reject gets -32001
  with the reason in ``data``.
- Subscriptions (WebSocket only): ``parley_subscribe`` with ``ops``, ``balances`` or ``status``
  returns an id; events arrive as ``{"method": "parley_subscription", "params": {"subscription":
  id, "result": event}}``. A subscriber that falls 1,024 events behind is dropped.
- ``GET /openrpc.json`` (and the ``rpc.discover`` method) describe every method. ``GET /metrics``
  is the Prometheus endpoint (no token: it is on loopback and holds only counts).

Amounts are integers in e9 base units; they are sent as decimal strings, because JSON numbers
lose precision above 2**53. Numbers are accepted on input too.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from channel.node import Node, RequestRejected
from crdt.types import from_hex

MAX_REQUEST_BYTES = 1 << 20
MAX_BATCH = 100
TOPICS = ("ops", "balances", "status")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = -32700, -32600, -32601, -32602, -32603
REJECTED = -32001
NOT_FOUND = -32004


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def response(self, request_id: Any) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": request_id, "error": error}


def invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


# -- parameter parsing ---------------------------------------------------------------------------------


def _amount(value: Any, name: str = "amount") -> int:
    if type(value) is int:
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        raise invalid(f"{name} must be a positive integer in e9 units (a number or a string of digits)")
    if number <= 0 or number >= 2**64:
        raise invalid(f"{name} must be between 1 and 2**64 - 1")
    return number


def _address(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise invalid(f"{name} must be a 0x-prefixed 20-byte hex address")
    try:
        return from_hex(value, 20)
    except ValueError as exc:
        raise invalid(f"{name}: {exc}") from exc


def _text(value: Any, name: str, limit: int = 64) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > limit:
        raise invalid(f"{name} must be a non-empty string of at most {limit} bytes")
    return value


def _uint(value: Any, name: str) -> int:
    if type(value) is int and 0 <= value < 2**64:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) < 2**64:
        return int(value)
    raise invalid(f"{name} must be an unsigned 64-bit integer")


def _exact(body: dict[str, Any], *names: str) -> None:
    extra = sorted(set(body) - set(names))
    missing = sorted(set(names) - set(body))
    if extra or missing:
        raise invalid(f"body must have exactly {sorted(names)}; missing {missing}, unexpected {extra}")


def parse_body(kind: str, body: Any) -> dict[str, Any]:
    """A client's JSON body as the CBOR body of an operation of `kind`."""
    if not isinstance(body, dict):
        raise invalid("body must be an object")
    if kind == "transfer":
        _exact(body, "to", "token", "amount")
        return {"to": _address(body["to"], "to"), "token": _text(body["token"], "token", 16),
                "amount": _amount(body["amount"])}
    if kind == "withdraw":
        _exact(body, "token", "amount")
        return {"token": _text(body["token"], "token", 16), "amount": _amount(body["amount"])}
    if kind == "lock":
        _exact(body, "token", "amount", "until", "reason")
        return {"token": _text(body["token"], "token", 16), "amount": _amount(body["amount"]),
                "until": _uint(body["until"], "until"), "reason": _text(body["reason"], "reason")}
    raise invalid(f"unknown kind {kind!r}; this node signs transfer, withdraw and lock")


def _params(params: Any, names: tuple[str, ...], required: int) -> list[Any]:
    """Positional or named params as a list in `names` order."""
    if params is None:
        params = []
    if isinstance(params, dict):
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise invalid(f"unknown parameters {unknown}; expected {list(names)}")
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
    handler: Callable[[Node, list[Any]], Awaitable[Any]]


async def _submit(node: Node, args: list[Any]) -> Any:
    kind, body, request_id = args
    if not isinstance(kind, str):
        raise invalid("kind must be a string")
    if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 128):
        raise invalid("request_id must be a string of 1 to 128 characters")
    try:
        return await node.submit(kind, parse_body(kind, body), request_id)
    except RequestRejected as exc:
        raise RpcError(REJECTED, f"rejected: {exc}", {"reason": exc.reason}) from exc


async def _transfer(node: Node, args: list[Any]) -> Any:
    to, token, amount, request_id = args
    return await _submit(node, ["transfer", {"to": to, "token": token, "amount": amount}, request_id])


async def _balances(node: Node, args: list[Any]) -> Any:
    (account,) = args
    balances = node.replica.balances()
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


async def _status(node: Node, args: list[Any]) -> Any:
    (op_id_hex,) = args
    if not isinstance(op_id_hex, str):
        raise invalid("op_id must be a 0x-prefixed 32-byte hex string")
    try:
        op_id = from_hex(op_id_hex, 32)
    except ValueError as exc:
        raise invalid(f"op_id: {exc}") from exc
    status = node.replica.status(op_id)  # type: ignore[arg-type]
    op = node.replica.graph.ops.get(op_id)  # type: ignore[call-overload]
    result: dict[str, Any] = {"op_id": op_id_hex.lower(), "status": status}
    if op is not None:
        result.update({"author": "0x" + op.author.hex(), "seq": op.seq, "kind": op.kind})
    return result


async def _heads(node: Node, args: list[Any]) -> Any:
    graph = node.replica.graph
    return {
        "heads": sorted("0x" + head.hex() for head in graph.heads),
        "version_vector": {"0x" + a.hex(): seq for a, seq in sorted(graph.version_vector.items())},
    }


async def _peers(node: Node, args: list[Any]) -> Any:
    return node.peers()


async def _stats(node: Node, args: list[Any]) -> Any:
    return node.stats()


async def _checkpoints(node: Node, args: list[Any]) -> Any:
    certified = node.finality.certificates if node.finality is not None else {}
    return [
        {"version": cut.version, "time": cut.time, "heads": len(cut.heads), "deposits": len(cut.deposits),
         "certified": cut.version in certified}
        for cut in node.replica.cuts
    ]


async def _certificate(node: Node, args: list[Any]) -> Any:
    (version,) = args
    certificates = node.finality.certificates if node.finality is not None else {}
    if version is None:
        if not certificates:
            raise RpcError(NOT_FOUND, "no certificate yet")
        version = max(certificates)
    version = _uint(version, "version")
    certificate = certificates.get(version)
    if certificate is None:
        raise RpcError(NOT_FOUND, f"no certificate for version {version}")
    checkpoint = certificate.checkpoint
    return {
        "version": version,
        "payout_root": "0x" + checkpoint.payout_root.hex(),
        "state_hash": "0x" + checkpoint.state_hash.hex(),
        "totals": [str(total) for total in checkpoint.totals],
        "deposit_nonce": checkpoint.deposit_nonce,
        "time": checkpoint.time,
        "signers": ["0x" + signer.hex() for signer in certificate.signers(node.genesis)],
        "certificate": "0x" + certificate.encode().hex(),
    }


async def _evidence(node: Node, args: list[Any]) -> Any:
    found = [{"kind": "equivocation", **evidence.describe()} for evidence in node.replica.evidence()]
    for kind, offender, _data in node.store.evidence():
        found.append({"kind": kind, "offender": "0x" + offender.hex()})
    return found


async def _discover(node: Node, args: list[Any]) -> Any:
    return openrpc_document()


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("parley_submit", ("kind", "body", "request_id"), 2,
               "Sign an operation of kind transfer, withdraw or lock as this node's participant, store it, "
               "apply it and gossip it. Returns {op_id, seq, status}. A retried request_id returns the first answer.",
               _submit),
        Method("parley_transfer", ("to", "token", "amount", "request_id"), 3,
               "Shorthand for parley_submit with kind transfer.", _transfer),
        Method("parley_balances", ("account",), 0,
               "Free, locked and withdrawable balances (e9 strings) per participant and token.", _balances),
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
        Method("rpc.discover", (), 0, "This API's OpenRPC document.", _discover),
    )
}
SUBSCRIBE = "parley_subscribe"
UNSUBSCRIBE = "parley_unsubscribe"


def openrpc_document() -> dict[str, Any]:
    methods = [
        {
            "name": m.name,
            "summary": m.summary,
            "params": [{"name": p, "required": i < m.required, "schema": {}} for i, p in enumerate(m.params)],
            "result": {"name": "result", "schema": {}},
        }
        for m in METHODS.values()
    ]
    methods.append({
        "name": SUBSCRIBE, "summary": f"WebSocket only: subscribe to one of {list(TOPICS)}; returns an id.",
        "params": [{"name": "topic", "required": True, "schema": {"enum": list(TOPICS)}}],
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
    }


async def call(node: Node, request: Any) -> dict[str, Any] | None:
    """Run one JSON-RPC request object; None for a notification (no id)."""
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str):
        return RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request object").response(None)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        return RpcError(INVALID_REQUEST, "id must be a string or an integer").response(None)
    method = METHODS.get(request["method"])
    try:
        if method is None:
            if request["method"] in (SUBSCRIBE, UNSUBSCRIBE):
                raise RpcError(METHOD_NOT_FOUND, f"{request['method']} is only available over the WebSocket")
            raise RpcError(METHOD_NOT_FOUND, f"no method {request['method']!r}; see rpc.discover")
        result = await method.handler(node, _params(request.get("params"), method.params, method.required))
    except RpcError as error:
        return None if "id" not in request else error.response(request_id)
    if "id" not in request:
        return None
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


async def handle_payload(node: Node, text: str | bytes) -> Any:
    """A raw JSON-RPC payload (one request or a batch) to its response (None: nothing to send)."""
    try:
        payload = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return RpcError(PARSE_ERROR, f"invalid JSON: {exc}").response(None)
    if isinstance(payload, list):
        if not payload:
            return RpcError(INVALID_REQUEST, "empty batch").response(None)
        if len(payload) > MAX_BATCH:
            return RpcError(INVALID_REQUEST, f"a batch holds at most {MAX_BATCH} requests").response(None)
        responses = [r for r in [await call(node, item) for item in payload] if r is not None]
        return responses or None
    return await call(node, payload)


# -- the ASGI application ---------------------------------------------------------------------------------


def _authorized(token: str, header: str | None, query: str | None) -> bool:
    presented = query
    if header is not None and header.startswith("Bearer "):
        presented = header[len("Bearer ") :]
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def build_app(node: Node, token: str) -> Starlette:
    registry = CollectorRegistry()
    registry.register(_NodeCollector(node))

    def unauthorized() -> JSONResponse:
        return JSONResponse(
            {"error": "missing or wrong bearer token (see <data_dir>/api-token)"},
            status_code=401, headers={"WWW-Authenticate": "Bearer"},
        )

    async def rpc(request: Request) -> Response:
        if not _authorized(token, request.headers.get("authorization"), None):
            return unauthorized()
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            return JSONResponse(RpcError(INVALID_REQUEST, "request larger than 1 MiB").response(None), 413)
        response = await handle_payload(node, body)
        return Response(status_code=204) if response is None else JSONResponse(response)

    async def openrpc(request: Request) -> Response:
        return JSONResponse(openrpc_document())

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    async def websocket(ws: WebSocket) -> None:
        if not _authorized(token, ws.headers.get("authorization"), ws.query_params.get("token")):
            await ws.send_denial_response(unauthorized())
            return
        await ws.accept()
        await _serve_websocket(node, ws)

    return Starlette(routes=[
        Route("/rpc", rpc, methods=["POST"]),
        Route("/openrpc.json", openrpc, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        WebSocketRoute("/ws", websocket),
    ])


async def _serve_websocket(node: Node, ws: WebSocket) -> None:
    outgoing_send, outgoing = trio.open_memory_channel[Any](256)
    subscriptions: dict[str, Any] = {}
    counter = 0

    async def forward(subscription_id: str, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async with receive:
            async for event in receive:
                await outgoing_send.send({"jsonrpc": "2.0", "method": "parley_subscription",
                                          "params": {"subscription": subscription_id, "result": event}})
        await outgoing_send.send({"jsonrpc": "2.0", "method": "parley_subscription_dropped",
                                  "params": {"subscription": subscription_id,
                                             "reason": "the client fell too far behind"}})

    async def writer() -> None:
        async for message in outgoing:
            await ws.send_text(json.dumps(message))

    async def answer(request: Any) -> Any:
        nonlocal counter
        if isinstance(request, dict) and request.get("method") in (SUBSCRIBE, UNSUBSCRIBE):
            request_id = request.get("id")
            try:
                if request["method"] == SUBSCRIBE:
                    (topic,) = _params(request.get("params"), ("topic",), 1)
                    if topic not in TOPICS:
                        raise invalid(f"topic must be one of {list(TOPICS)}")
                    counter += 1
                    subscription_id = f"0x{counter:x}"
                    subscriber, receive = node.events.open(topic)
                    subscriptions[subscription_id] = subscriber
                    nursery.start_soon(forward, subscription_id, receive)
                    return {"jsonrpc": "2.0", "id": request_id, "result": subscription_id}
                (subscription_id,) = _params(request.get("params"), ("subscription",), 1)
                subscriber = subscriptions.pop(subscription_id, None)
                if subscriber is not None:
                    node.events.close(subscriber)
                return {"jsonrpc": "2.0", "id": request_id, "result": subscriber is not None}
            except RpcError as error:
                return error.response(request_id)
        return await handle_payload(node, json.dumps(request))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            while True:
                text = await ws.receive_text()
                if len(text) > MAX_REQUEST_BYTES:
                    response: Any = RpcError(INVALID_REQUEST, "message larger than 1 MiB").response(None)
                else:
                    try:
                        request = json.loads(text)
                    except ValueError as exc:
                        response = RpcError(PARSE_ERROR, f"invalid JSON: {exc}").response(None)
                    else:
                        response = await answer(request)
                if response is not None:
                    await outgoing_send.send(response)
    except WebSocketDisconnect:
        pass
    finally:
        for subscriber in subscriptions.values():
            node.events.close(subscriber)


class _NodeCollector:
    """Prometheus gauges read from the node at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Any:
        stats = self.node.stats()
        for name, key, help_text in (
            ("parley_operations", "operations", "Operations in the hash graph."),
            ("parley_pending", "pending", "Operations waiting for their parents."),
            ("parley_rejected", "rejected", "Operations replay gave no effect."),
            ("parley_heads", "heads", "Heads of the hash graph."),
            ("parley_ops_per_second", "ops_per_s", "Operations accepted per second since start."),
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
        lag = len(self.node.replica.graph.pending.missing())
        yield GaugeMetricFamily("parley_lag_missing_parents", "Parents we know we lack (sync lag).", value=float(lag))


async def serve_api(
    node: Node, token: str, host: str = "127.0.0.1", port: int = 0,
    *, task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; reports the base URL (``http://host:port``) when bound."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, build_app(node, token), config)
        task_status.started(str(binds[0]))
