"""Attacks that once worked against the node's local API (and the parsers behind it), each kept
as a test (STYLE.md: "every attack that once worked stays as a test, marked hostile").

The nodes are the ones of `tests/channel/api/test_api.py` (`channel_dir`, `with_node`: a real Node
with a real SQLite store behind the real HTTP and WebSocket server). A payload that could crash
the interpreter is sent from a subprocess, or to a node in one, so a segfault shows up as a
failed test instead of killing pytest; those subprocesses import the eth stack first, which
raises the recursion limit to 100,000 as it does in a running node.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import open_websocket_url
from websockets.exceptions import ConnectionClosedError, WebSocketException
from websockets.sync.client import connect as ws_connect

from channel.api.client import ApiError, Client, Endpoint, Events
from channel.api.server import MAX_REQUEST_BYTES, METHODS, TOPICS
from channel.cli.main import parse_token
from channel.errors import UserError
from channel.runtime.node import Node
from crdt.jsontext import MAX_NESTING, deeper_than_limit, json_nesting
from crdt.units import parse_e9
from tests.channel.api.test_api import E9, channel_dir, others, with_node

__all__ = ["channel_dir"]  # the fixture of test_api.py, used here too (and not flagged as unused)

ROOT = Path(__file__).resolve().parents[3]
DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 KB: segfaulted the node under the eth stack's recursion limit
ETH_STACK = "import eth, py_ecc  # noqa: F401  (py-evm and py_ecc: the recursion limit becomes 100,000)\n"


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter: if it crashes, this test fails and pytest carries on."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=False)


async def post(http: httpx.AsyncClient, payload: Any) -> httpx.Response:
    """POST a payload as JSON text in ASCII (so a lone surrogate travels as its escape)."""
    return await http.post("/rpc", content=json.dumps(payload).encode())


def rpc(method: str, params: Any, request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def unchanged(node: Node) -> None:
    assert node.store.count_ops() == 0
    assert node.next_seq() == 1


# -- 1. nesting: a segfault of the C JSON parser ---------------------------------------------------


SERVER = ETH_STACK + """
import json, sys
from pathlib import Path
import trio
from tests.channel.api.test_api import with_node

async def serve(node, endpoint):
    print(json.dumps({"url": endpoint.url, "token": endpoint.token, "limit": sys.getrecursionlimit()}), flush=True)
    await trio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin

with_node(Path(sys.argv[1]), Path(sys.argv[2]), serve)
"""


@contextmanager
def node_process(channel_dir: Path, tmp_path: Path) -> Iterator[tuple[Endpoint, Callable[[], None], int]]:
    """A real node and server in a process of their own (serving until the test is done):
    its endpoint, a check that it is still alive, and its pid. A connection it drops fails the
    test with its exit code."""
    with subprocess.Popen(
        [sys.executable, "-c", SERVER, str(channel_dir), str(tmp_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as node:
        assert node.stdin is not None
        assert node.stdout is not None

        def alive() -> None:
            assert node.poll() is None, f"the node process died (exit code {node.returncode}; -11 is a segfault)"

        def died(exc: Exception) -> NoReturn:
            try:  # a dying process closes its sockets before it can be reaped (a core dump takes a while)
                code: int | str = node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                code = "none: it is still running"
            pytest.fail(f"the node dropped the connection ({exc!r}); its exit code: {code} (-11 is a segfault)")

        try:
            line = node.stdout.readline()
            alive()
            info = json.loads(line)
            assert info["limit"] == 100_000
            try:
                yield Endpoint(info["url"], info["token"]), alive, node.pid
            except (httpx.TransportError, WebSocketException) as exc:
                died(exc)
        finally:
            node.stdin.close()


@pytest.mark.hostile
def test_deep_nesting_gets_invalid_request_from_a_node_under_the_eth_recursion_limit(
    channel_dir: Path, tmp_path: Path
) -> None:
    """[*100000 ]*100000 as the body, inside params and as a WebSocket message each killed the
    node with signal 11: py_ecc sets the recursion limit to 100,000, so the C parser ran out of
    C stack before Python's recursion check fired."""
    answers = []
    with node_process(channel_dir, tmp_path) as (endpoint, alive, _pid):
        with httpx.Client(base_url=endpoint.url, headers=endpoint.headers, timeout=60) as http:
            for body in (DEEP, b'{"jsonrpc": "2.0", "id": 1, "method": "parley_heads", "params": ' + DEEP + b"}"):
                response = http.post("/rpc", content=body)
                assert response.status_code == 200
                answers.append(response.json())
            with ws_connect(endpoint.ws_url, additional_headers=endpoint.headers) as ws:
                ws.send(DEEP.decode())
                answers.append(json.loads(ws.recv()))
                ws.send(json.dumps(rpc("parley_heads", [])))
                assert "result" in json.loads(ws.recv())
            alive()
            assert http.post("/rpc", json=rpc("parley_heads", [])).json()["result"]["heads"] == []
        alive()
    for answer in answers:
        assert answer["error"]["code"] == -32600
        assert f"the nesting limit is {MAX_NESTING}" in answer["error"]["message"]
        assert answer["id"] is None


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b'"[[[["', 0),
        (b'["\\"[", [1]]', 2),  # an escaped quote does not end the string
        (b'["\\\\", [[1]]]', 3),  # an escaped backslash does not escape the quote after it
        (b'["\\\\\\"[[", {}]', 2),
        (b'{"a[": {"b{": [{"c": "]]]]"}]}}', 4),
        (b'["unterminated [[[[', 1),
        (b'"\xc3\xa9[" ', 0),  # UTF-8 text
        (b"[" * 100_000, 100_000),
        (b"", 0),
    ],
)
def test_json_nesting_ignores_brackets_in_strings(text: bytes, depth: int) -> None:
    assert json_nesting(text) == depth


@pytest.mark.hostile
def test_only_text_with_enough_brackets_is_scanned() -> None:
    assert deeper_than_limit(b"[" * MAX_NESTING + b"]" * MAX_NESTING) is None
    assert deeper_than_limit(b"[" * (MAX_NESTING + 1)) == MAX_NESTING + 1
    assert deeper_than_limit(b'["' + b"[" * 1000 + b'"]') is None


def nesting(value: Any) -> int:
    if isinstance(value, list | dict):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((nesting(child) for child in children), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(exclude_categories=())),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=20,
)


@pytest.mark.hostile
@given(value=json_values, ascii_only=st.booleans())
def test_json_nesting_is_the_nesting_json_loads_sees(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert json_nesting(text) == nesting(value)


TOML = ETH_STACK + """
import json, sys
from pathlib import Path
from channel.errors import UserError
from channel.runtime.genesis_file import read_toml

assert sys.getrecursionlimit() == 100_000, sys.getrecursionlimit()
folder, genesis = Path(sys.argv[1]), Path(sys.argv[2])
cases = {
    "arrays 100000 deep": "a = " + "[" * 100_000 + "]" * 100_000,
    "inline tables 100000 deep": "a = " + "{b = " * 100_000 + "1" + "}" * 100_000,
    "arrays 20000 deep": "a = " + "[" * 20_000 + "]" * 20_000,  # parses: tomllib has the stack for it
    "dotted key of 5000 parts": "a" + ".a" * 5_000 + " = 1",  # O(n**2): 100,000 parts exhausted memory
    "table header of 5000 parts": "[" + "a." * 5_000 + "a]",
}
results = {}
for name, text in cases.items():
    path = folder / "hostile.toml"
    path.write_text(text)
    try:
        read_toml(path, "test file")
        results[name] = "parsed"
    except UserError as exc:
        results[name] = str(exc)
results["genesis"] = sorted(read_toml(genesis, "genesis"))
print(json.dumps(results))
"""


@pytest.mark.hostile
def test_deep_toml_is_a_user_error_under_the_eth_recursion_limit(channel_dir: Path, tmp_path: Path) -> None:
    """tomllib is pure Python, so 100,000 levels raised RecursionError (a traceback, not a clean
    error); 20,000 levels parsed into a value that would crash whatever recursed through it in C;
    a long dotted key cost quadratic time and memory."""
    result = run_python(TOML, str(tmp_path), str(channel_dir / "genesis.toml"))
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout)
    assert "participants" in results.pop("genesis")
    for name, outcome in results.items():
        assert outcome.endswith("tables and arrays nest deeper than 32"), name


CBOR = ETH_STACK + """
import json, sys
from crdt import cbor
from crdt.errors import InvalidInput
from crdt.ops import decode_op
from channel.runtime.genesis_file import load_genesis

assert sys.getrecursionlimit() == 100_000, sys.getrecursionlimit()
ctx = load_genesis(__import__("pathlib").Path(sys.argv[1])).context()
cases = {
    "arrays": b"\\x81" * 100_000 + b"\\x00",
    "maps": b"\\xa1\\x61a" * 100_000 + b"\\x00",
    "indefinite arrays": b"\\x9f" * 100_000,
    "tags": b"\\xc6" * 100_000 + b"\\x00",
}
decoders = {
    "decode": lambda data: cbor.decode(data, max_bytes=1 << 20),
    "decode_sequence": lambda data: cbor.decode_sequence(data, max_item_bytes=1 << 20),
    "decode_op": lambda data: decode_op(data, ctx),
}
results = {}
for name, data in cases.items():
    for how, decode in decoders.items():
        try:
            decode(data)
            results[f"{how} {name}"] = "decoded"
        except InvalidInput as exc:
            results[f"{how} {name}"] = "InvalidInput"
print(json.dumps(results))
"""


@pytest.mark.hostile
def test_deep_cbor_is_invalid_input_under_the_eth_recursion_limit(channel_dir: Path) -> None:
    """CBOR was depth-bounded already (cbor2's decoder stops at 400 levels, `decode_sequence` at
    16): confirmed, not fixed."""
    result = run_python(CBOR, str(channel_dir / "genesis.toml"))
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(result.stdout)
    assert len(results) == 12
    assert set(results.values()) == {"InvalidInput"}, results


# -- 2. parameters: HTTP 500, half-signed batches, closed WebSockets --------------------------------

ADDRESS = "0x" + "11" * 20


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("parley_transfer", [None, "USDC", "²"], "amount"),  # isdigit() is True, int() raises: HTTP 500
        ("parley_transfer", [None, "USDC", "\u0661\u0660"], "amount"),  # Arabic-Indic 10: signed as 10
        ("parley_transfer", [None, "USDC", "9" * 5000], "amount"),  # past int()'s 4300 digits: HTTP 500
        ("parley_transfer", [None, "USDC", "1" * 21], "amount"),
        ("parley_transfer", [None, "USDC", "\uff11"], "amount"),  # a fullwidth 1
        ("parley_transfer", [None, "USDC", " 1"], "amount"),
        ("parley_transfer", [None, "USDC", "1\n"], "amount"),
        ("parley_transfer", [None, "USDC", True], "amount"),
        ("parley_transfer", [None, "\ud800", "1"], "token"),  # a lone surrogate: .encode() raised, HTTP 500
        ("parley_transfer", [None, "USDC", "1", "\ud800"], "request_id"),  # sqlite raised: HTTP 500
        ("parley_transfer", [ADDRESS[:4] + " " + ADDRESS[4:], "USDC", "1"], "to"),  # bytes.fromhex takes spaces
        ("parley_transfer", ["0x" + "\uff11" * 40, "USDC", "1"], "to"),
        ("parley_submit", ["withdraw", {"token": "USDC", "amount": "²"}], "amount"),
        ("parley_submit", ["lock", {"token": "USDC", "amount": "1", "until": "¹", "reason": "x"}], "until"),
        ("parley_submit", ["lock", {"token": "USDC", "amount": "1", "until": "9" * 5000, "reason": "x"}], "until"),
        ("parley_submit", ["lock", {"token": "USDC", "amount": "1", "until": "1", "reason": "\udfff"}], "reason"),
        ("parley_submit", ["x" * 100_000, {}], "unknown kind"),
        ("parley_status", ["0x" + "a" * 63 + "\u0661"], "op_id"),
        ("parley_status", ["0x" + " 11" * 32], "op_id"),
        ("parley_certificate", ["²"], "version"),
        ("parley_balances", ["0x" + "\u0661" * 40], "account"),
    ],
)
def test_malformed_numbers_and_text_get_invalid_params_and_sign_nothing(
    channel_dir: Path, tmp_path: Path, method: str, params: list[Any], named: str
) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        sent = [others(node)[0] if value is None else value for value in params]
        async with httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers) as http:
            response = await post(http, rpc(method, sent, 7))
        assert response.status_code == 200
        answer = response.json()
        assert answer["id"] == 7
        assert answer["error"]["code"] == -32602
        assert named in answer["error"]["message"]
        assert len(answer["error"]["message"]) < 300
        unchanged(node)

    with_node(channel_dir, tmp_path, body)


@pytest.mark.hostile
def test_a_lone_surrogate_id_is_echoed_not_a_500(channel_dir: Path, tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers) as http:
            response = await post(http, rpc("parley_heads", [], "\ud800"))
        assert response.status_code == 200
        assert response.json()["id"] == "\ud800"
        assert "result" in response.json()

    with_node(channel_dir, tmp_path, body)


@pytest.mark.hostile
def test_a_batch_answers_every_item_on_its_own(channel_dir: Path, tmp_path: Path) -> None:
    """A valid transfer and a "²" amount in one batch: the batch was answered 500, yet the valid
    transfer was signed, so a client retrying without request_id paid twice."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        to = others(node)[0]
        batch = [rpc("parley_transfer", [to, "USDC", "5000"], 1), rpc("parley_transfer", [to, "USDC", "²"], 2)]
        async with httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers) as http:
            response = await post(http, batch)
        assert response.status_code == 200
        first, second = response.json()
        assert first["id"] == 1
        assert first["result"]["seq"] == 1
        assert second["id"] == 2
        assert second["error"]["code"] == -32602
        assert "amount" in second["error"]["message"]
        assert node.store.count_ops() == 1

    with_node(channel_dir, tmp_path, body)


@pytest.mark.hostile
def test_a_websocket_survives_malformed_params_and_keeps_its_subscriptions(channel_dir: Path, tmp_path: Path) -> None:
    """The "²" amount over the WebSocket closed it (1011) and dropped the client's subscriptions."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        headers = [(b"authorization", f"Bearer {endpoint.token}".encode())]
        async with open_websocket_url(endpoint.ws_url, extra_headers=headers) as ws:
            await ws.send_message(json.dumps(rpc("parley_subscribe", ["ops"], "sub")))
            assert json.loads(await ws.get_message())["result"] == "0x1"
            to = others(node)[0]
            await ws.send_message(json.dumps(rpc("parley_transfer", [to, "USDC", "²"], 1)))
            error = json.loads(await ws.get_message())
            assert error["id"] == 1
            assert error["error"]["code"] == -32602
            await ws.send_message(json.dumps(rpc("parley_transfer", [to, "USDC", "5000"], 2)))
            messages = [json.loads(await ws.get_message()) for _ in range(2)]
        receipt = next(m for m in messages if m.get("id") == 2)["result"]
        event = next(m for m in messages if m.get("method") == "parley_subscription")
        assert event["params"]["result"]["op_id"] == receipt["op_id"]
        assert node.store.count_ops() == 1

    with_node(channel_dir, tmp_path, body)


@pytest.mark.hostile
def test_an_unexpected_exception_is_internal_error_for_that_request_only(
    channel_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug in a method")

    async def body(node: Node, endpoint: Endpoint) -> None:
        node.stats = broken  # type: ignore[method-assign]
        batch = [rpc("parley_stats", [], 1), rpc("parley_heads", [], 2)]
        async with httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers) as http:
            response = await post(http, batch)
            assert response.status_code == 200
            stats, heads = response.json()
            assert stats == {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "internal error"}}
            assert heads["result"]["heads"] == []
        headers = [(b"authorization", f"Bearer {endpoint.token}".encode())]
        async with open_websocket_url(endpoint.ws_url, extra_headers=headers) as ws:
            for request_id in (3, 4):  # the socket stays open
                await ws.send_message(json.dumps(rpc("parley_stats", [], request_id)))
                answer = json.loads(await ws.get_message())
                assert answer["id"] == request_id
                assert answer["error"]["code"] == -32603

    with caplog.at_level(logging.ERROR, logger="channel.api.server"):
        with_node(channel_dir, tmp_path, body)
    logged = [record for record in caplog.records if record.name == "channel.api.server"]
    assert len(logged) == 3
    for record in logged:
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)


def mock_client(response: httpx.Response) -> Client:
    client = Client(Endpoint("http://node.invalid", "token"))
    client._http = httpx.Client(base_url="http://node.invalid", transport=httpx.MockTransport(lambda _: response))
    return client


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(500, text="Internal Server Error"), -32603),  # raise_for_status: HTTPStatusError
        (httpx.Response(200, text="<html>"), -32603),  # json.JSONDecodeError
        (httpx.Response(200, content=b"\xff\xfe\x00"), -32603),
        (httpx.Response(200, json=[1, 2]), -32603),  # a list: TypeError
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 1}), -32603),  # KeyError: result
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": "boom"}), -32603),  # TypeError
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": {"message": "x"}}), -32603),  # KeyError
        (httpx.Response(413, json={"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "big"}}),
         -32600),  # raise_for_status: HTTPStatusError
    ],
)
def test_the_client_raises_api_error_on_any_answer(response: httpx.Response, code: int) -> None:
    with mock_client(response) as client, pytest.raises(ApiError) as caught:
        client.stats()
    assert caught.value.code == code


@pytest.mark.hostile
@pytest.mark.parametrize(
    "message", ["not json", "[]", '{"method": "parley_subscription"}', '{"params": {"result": 1}}']
)
def test_the_client_raises_api_error_on_a_malformed_event(message: str) -> None:
    class Socket:
        async def receive(self) -> str:
            return message

    async def main() -> None:
        with pytest.raises(ApiError):
            await Events(Socket()).__anext__()

    trio.run(main)


CLIENT = ETH_STACK + """
import sys
import httpx
from channel.api.client import ApiError, Client, Endpoint

assert sys.getrecursionlimit() == 100_000, sys.getrecursionlimit()
client = Client(Endpoint("http://node.invalid", "token"))
deep = httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000)
client._http = httpx.Client(base_url="http://node.invalid", transport=httpx.MockTransport(lambda _: deep))
try:
    client.stats()
except ApiError as exc:
    print(exc.code)
"""


@pytest.mark.hostile
def test_the_client_survives_a_deeply_nested_answer() -> None:
    result = run_python(CLIENT)
    assert result.returncode == 0, f"exit code {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.strip() == "-32603"


@pytest.mark.hostile
@pytest.mark.parametrize(
    "text", ["²", "\u0661\u0660", "1.\u0665", "\uff11", "9" * 5000, "1" * 21, "+1", "1_0", "\u00a01"]
)
def test_parse_e9_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="not a decimal amount"):
        parse_e9(text)


@pytest.mark.hostile
def test_parse_e9_still_parses_decimals() -> None:
    assert [parse_e9(t) for t in ("12.5", " 3 ", ".5", "5.", "-1.25", "0.000000001")] == [
        12_500_000_000, 3 * E9, E9 // 2, 5 * E9, -1_250_000_000, 1]


@pytest.mark.hostile
@pytest.mark.parametrize("text", ["USDC:²", "USDC:\u0661\u0668", "USDC:999"])
def test_token_decimals_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(UserError):
        parse_token(text)


# -- 3. arbitrary JSON at every method ----------------------------------------------------------------

PARAMS = {name: method.params for name, method in METHODS.items()} | {
    "parley_subscribe": ("topic", "params"), "parley_unsubscribe": ("subscription",)}
ABSENT = object()
# never -32603: that is a bug; -32005 is parley_exit refused (this node has no chain)
ANSWER_CODES = {-32700, -32600, -32601, -32602, -32001, -32004, -32005}


def fuzz_strategies(to: list[str]) -> st.SearchStrategy[tuple[bytes, str]]:
    """(payload, transport): JSON-RPC payloads from garbage to well-formed. Two thirds of the
    requests are submits that would be signed, with at most one value (a param or a body field)
    replaced by a tricky or arbitrary JSON value, so each parser meets hostile values with the
    rest right, and the state changes sometimes; the others call any method (or none) with
    params whose slots are right, tricky or arbitrary."""
    tricky = st.sampled_from([
        "1", "5", "0", "-1", "²", "\u0661\u0660", "\uff11", "9" * 25, " 1", "1e3", "USDC", "EUR", "",
        "transfer", "withdraw", "lock", "ops", "balances", "status", "0x1", "0x" + "11" * 20,
        "0x11 " + "11" * 19, "0x" + "ab" * 32, "r1", "\ud800", "x" * 200, *to,
    ])
    scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
               | st.text(st.characters(exclude_categories=()), max_size=12) | tricky)
    values = st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6) | tricky, children,
                                                                          max_size=4),
        max_leaves=12,
    )
    amount = st.integers(1, 1000).map(str) | st.integers(1, 1000) | st.integers(-(2**65), 2**65)
    body = st.fixed_dictionaries(
        {"to": st.sampled_from(to) | tricky, "token": st.just("USDC") | tricky, "amount": amount | tricky},
        optional={"until": st.integers(0, 2**64) | tricky, "reason": st.just("why") | tricky, "extra": values},
    )
    slots: dict[str, st.SearchStrategy[Any]] = {
        "to": st.sampled_from(to), "account": st.sampled_from(to), "token": st.just("USDC"), "amount": amount,
        "request_id": st.sampled_from([None, "r1", "r2"]), "kind": st.sampled_from(["transfer", "withdraw", "lock"]),
        "body": body, "op_id": st.just("0x" + "ab" * 32), "version": st.integers(0, 3),
        "topic": st.sampled_from(TOPICS), "subscription": st.sampled_from(["0x1", "0x2"]),
        "params": st.none() | st.fixed_dictionaries(
            {}, optional={"market": st.just("ETH/USDC") | tricky, "depth": st.integers(-2, 2000) | tricky}
        ),
    }

    def slot(name: str) -> st.SearchStrategy[Any]:
        right = slots.get(name, values)
        return st.one_of(right, right, tricky, values)  # right half the time

    def params_for(method: str) -> st.SearchStrategy[Any]:
        names = PARAMS.get(method, ())
        positional = st.tuples(*(slot(name) for name in names)).map(list)
        shorter = positional.flatmap(lambda full: st.integers(0, len(full)).map(lambda n: full[:n]))
        named = st.fixed_dictionaries({}, optional={name: slot(name) for name in (*names, "bogus")})
        return st.one_of(positional, positional, shorter, named, st.just(ABSENT), values)

    ids = st.integers(-(2**64), 2**64) | st.text(max_size=6) | st.just(ABSENT) | st.none() | values

    @st.composite
    def requests(draw: st.DrawFn) -> Any:
        roll = draw(st.integers(0, 19))
        if roll == 0:
            return draw(values)  # not even an object
        method = draw(st.sampled_from(sorted(PARAMS))) if roll > 2 else draw(st.text(max_size=12) | values)
        request: dict[str, Any] = {"jsonrpc": "2.0" if roll > 1 else draw(values), "method": method}
        for key, value in (("params", draw(params_for(method) if isinstance(method, str) else values)),
                           ("id", draw(ids))):
            if value is not ABSENT:
                request[key] = value
        return request

    @st.composite
    def nearly_valid(draw: st.DrawFn) -> dict[str, Any]:
        """A submit that would be signed, with at most one value replaced."""
        kind = draw(st.sampled_from(["transfer", "withdraw", "lock"]))
        body = {"to": draw(st.sampled_from(to)), "token": "USDC", "amount": draw(st.integers(1, 1000).map(str)),
                "until": draw(st.integers(0, 2**63)), "reason": "why"}
        body = {key: body[key] for key in {"transfer": ("to", "token", "amount"), "withdraw": ("token", "amount"),
                                           "lock": ("token", "amount", "until", "reason")}[kind]}
        params: list[Any] = [kind, body, draw(st.sampled_from([None, "r1", "r2"]))]
        if kind == "transfer" and draw(st.booleans()):
            method, params = "parley_transfer", [body["to"], body["token"], body["amount"], params[2]]
        else:
            method = "parley_submit"
        where = draw(st.sampled_from([None, *range(len(params)), *(body if method == "parley_submit" else ())]))
        if where is not None:
            replacement = draw(tricky | values)
            if isinstance(where, int):
                params[where] = replacement
            else:
                body[where] = replacement
        return rpc(method, params, draw(st.integers(0, 10**6)))

    item = st.one_of(requests(), nearly_valid(), nearly_valid())
    json_payload = item | st.lists(item, max_size=6)
    payload = json_payload.map(lambda p: json.dumps(p).encode()) | st.binary(max_size=40)
    return st.tuples(payload, st.sampled_from(["http", "websocket"]))


def expected_answer(item: Any) -> tuple[bool, Any]:
    """(answered, id) for one request object, by JSON-RPC 2.0: an id the node cannot use is null."""
    if not (isinstance(item, dict) and item.get("jsonrpc") == "2.0" and isinstance(item.get("method"), str)):
        return True, None
    if "id" not in item:
        return False, None  # a notification
    request_id = item["id"]
    if request_id is not None and (type(request_id) is bool or not isinstance(request_id, str | int)):
        return True, None
    return True, request_id


def expected_answers(payload: bytes) -> tuple[str, Any]:
    """What a correct node answers: ("nothing", None), ("one", id) or ("batch", [id, ...])."""
    try:
        parsed = json.loads(payload.decode("utf-8"))
    except ValueError:
        return "one", None  # a parse error
    if isinstance(parsed, list) and parsed:
        ids = [request_id for answered, request_id in map(expected_answer, parsed) if answered]
        return ("batch", ids) if ids else ("nothing", None)
    if isinstance(parsed, list):
        return "one", None  # an empty batch
    answered, request_id = expected_answer(parsed)
    return ("one", request_id) if answered else ("nothing", None)


def notified_submits(payload: bytes) -> int:
    """How many notifications in `payload` could sign something (they get no answer to count)."""
    try:
        parsed = json.loads(payload.decode("utf-8"))
    except ValueError:
        return 0
    items = parsed if isinstance(parsed, list) else [parsed]
    return sum(1 for item in items if isinstance(item, dict) and "id" not in item
               and item.get("method") in ("parley_submit", "parley_transfer"))


def check_response_object(answer: Any, request_id: Any) -> None:
    assert isinstance(answer, dict)
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == request_id
    assert set(answer) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"})
    if "error" in answer:
        error = answer["error"]
        assert type(error["code"]) is int
        assert error["code"] in ANSWER_CODES, error
        assert isinstance(error["message"], str)
        assert set(error) <= {"code", "message", "data"}


@pytest.mark.hostile
def test_arbitrary_json_gets_well_formed_answers_and_errors_change_nothing(channel_dir: Path, tmp_path: Path) -> None:
    """Driven through the real server (HTTP with httpx, and the WebSocket), from a worker thread:
    each example is a request or two over loopback, fast enough that the in-process ASGI app is
    not needed, and it also covers hypercorn, the body reader and the WebSocket loop. The node
    state is read on the trio thread between requests."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        token = trio.lowlevel.current_trio_token()

        def state() -> tuple[bytes, int, int]:
            return trio.from_thread.run_sync(
                lambda: (node.replica.state_hash(), node.next_seq(), node.store.count_ops()), trio_token=token)

        def fuzz() -> None:
            with (httpx.Client(base_url=endpoint.url, headers=endpoint.headers, timeout=60) as http,
                  ws_connect(endpoint.ws_url, additional_headers=endpoint.headers) as ws):

                def over_websocket(payload: bytes) -> Any:
                    ws.send(payload.decode() if payload.isascii() else payload)
                    ws.send(json.dumps(rpc("parley_heads", [], "sentinel")))  # answers arrive in order
                    answers = []
                    while True:
                        message = json.loads(ws.recv())
                        if isinstance(message, dict) and message.get("id") == "sentinel":
                            return answers[0] if answers else None
                        if not (isinstance(message, dict) and str(message.get("method")).startswith("parley_sub")):
                            answers.append(message)
                            assert len(answers) == 1

                @settings(max_examples=max(200, settings.default.max_examples),  # dev: 200 in about 4 s
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
                @given(example=fuzz_strategies(others(node)[:2]))
                def one(example: tuple[bytes, str]) -> None:
                    payload, transport = example
                    before = state()
                    if transport == "http":
                        response = http.post("/rpc", content=payload)
                        assert response.status_code in (200, 204)
                        answer = None if response.status_code == 204 else response.json()
                        assert response.status_code == 200 or not response.content
                    else:
                        answer = over_websocket(payload)
                    shape, expected = expected_answers(payload)
                    if shape == "nothing":
                        assert answer is None
                        answers = []
                    elif shape == "batch":
                        assert isinstance(answer, list)
                        assert len(answer) == len(expected)
                        for one_answer, request_id in zip(answer, expected, strict=True):
                            check_response_object(one_answer, request_id)
                        answers = answer
                    else:
                        check_response_object(answer, expected)
                        answers = [answer]
                    after = state()
                    receipts = [a["result"] for a in answers if isinstance(a.get("result"), dict)
                                and set(a["result"]) == {"op_id", "seq", "status"}]
                    signed = len({r["op_id"] for r in receipts if r["seq"] >= before[1]})
                    unanswered = notified_submits(payload)  # may have signed, unseen
                    assert signed <= after[2] - before[2] <= signed + unanswered
                    assert after[2] - before[2] == after[1] - before[1]
                    if not signed and not unanswered:
                        assert after == before  # every answer was an error, or a read

                one()

        await trio.to_thread.run_sync(fuzz)

    with_node(channel_dir, tmp_path, body)


# -- 4. size: bodies read in full before the 1 MiB check ------------------------------------------

FIFTY_MIB = 50 * 2**20
CHUNK = b" " * 2**16


class Body:
    """A request body of 50 MiB that counts what the client managed to send of it."""

    def __init__(self) -> None:
        self.sent = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.sent < FIFTY_MIB:
            self.sent += len(CHUNK)
            yield CHUNK


@pytest.mark.hostile
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_50_mib_body_gets_413_without_being_read(channel_dir: Path, tmp_path: Path, declared: bool) -> None:
    """A 50 MB body was read in full before the 1 MiB check (RSS grew 62-101 MB per request).
    Now a declared Content-Length over the cap is refused before any of the body is read, and a
    chunked body at the chunk that passes the cap, so the client never gets to send it all
    (what it did send sits in socket buffers, a few MiB at most)."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        upload = Body()
        chunks = upload.chunks()
        headers = {**endpoint.headers, **({"content-length": str(FIFTY_MIB)} if declared else {})}
        async with httpx.AsyncClient(base_url=endpoint.url, timeout=60) as http:
            response = await http.post("/rpc", content=chunks, headers=headers)
            await chunks.aclose()  # httpcore stops sending at the 413 but does not close the generator
            assert response.status_code == 413
            assert response.json()["error"]["code"] == -32600
            assert upload.sent < FIFTY_MIB
            assert (await http.post("/rpc", json=rpc("parley_heads", []), headers=endpoint.headers)).status_code == 200

    with_node(channel_dir, tmp_path, body)


@pytest.mark.hostile
def test_a_websocket_message_over_1_mib_is_closed_and_others_are_served(channel_dir: Path, tmp_path: Path) -> None:
    """hypercorn took WebSocket messages up to 16 MiB by default; at 1 MiB it now closes the
    socket with 1009 (message too big), and other clients carry on."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        def hostile() -> int:
            with ws_connect(endpoint.ws_url, additional_headers=endpoint.headers) as ws:
                ws.send(" " * (2 * MAX_REQUEST_BYTES))
                with pytest.raises(ConnectionClosedError) as closed:
                    ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code

        headers = [(b"authorization", f"Bearer {endpoint.token}".encode())]
        async with open_websocket_url(endpoint.ws_url, extra_headers=headers) as other:
            assert await trio.to_thread.run_sync(hostile) == 1009
            await other.send_message(json.dumps(rpc("parley_heads", [])))
            assert json.loads(await other.get_message())["result"]["heads"] == []
        async with httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers) as http:
            assert (await post(http, rpc("parley_heads", []))).json()["result"]["heads"] == []

    with_node(channel_dir, tmp_path, body)


@pytest.mark.hostile
def test_the_websocket_declines_permessage_deflate(channel_dir: Path, tmp_path: Path) -> None:
    """hypercorn accepted permessage-deflate, and wsproto inflates whatever arrives before any
    size check: 200 MiB of spaces travel as 200 KB and cost the node 252 MB at once."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        def handshake() -> Any:
            with ws_connect(endpoint.ws_url, additional_headers=endpoint.headers) as ws:  # offers deflate
                ws.send(json.dumps(rpc("parley_heads", [])))
                assert "result" in json.loads(ws.recv())
                return ws.response.headers.get("sec-websocket-extensions")

        assert await trio.to_thread.run_sync(handshake) is None

    with_node(channel_dir, tmp_path, body)


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


@pytest.mark.hostile
def test_an_oversized_websocket_frame_is_not_buffered(channel_dir: Path, tmp_path: Path) -> None:
    """One 100 MiB frame from a client that goes on sending after the 1009: hypercorn kept
    appending it to its message buffer (the node's peak RSS grew by about the message), and
    with permessage-deflate more still. Measured on a node in a process of its own."""
    with node_process(channel_dir, tmp_path) as (endpoint, alive, pid):
        before = peak_rss(pid)
        with ws_connect(endpoint.ws_url, additional_headers=endpoint.headers, close_timeout=1) as ws:
            ws.send(b" " * (100 * 2**20))  # one frame: the client cannot stop at the close
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
        alive()
        grown = peak_rss(pid) - before
    assert grown < 32 * 2**20, f"the node's peak RSS grew by {grown / 2**20:.0f} MiB"


@pytest.mark.hostile
def test_websockets_and_subscriptions_are_capped(channel_dir: Path, tmp_path: Path) -> None:
    """Each WebSocket and each subscription costs a task and the event fan-out: a local
    process opening them without end would slow every event down. Both are bounded."""
    from websockets.exceptions import InvalidStatus

    from channel.api.server import MAX_SUBSCRIPTIONS, MAX_WEBSOCKETS

    async def body(node: Node, endpoint: Endpoint) -> None:
        headers = [(b"authorization", f"Bearer {endpoint.token}".encode())]
        async with open_websocket_url(endpoint.ws_url, extra_headers=headers) as ws:
            for index in range(MAX_SUBSCRIPTIONS):
                await ws.send_message(json.dumps(rpc("parley_subscribe", ["ops"], index)))
                assert "result" in json.loads(await ws.get_message())
            await ws.send_message(json.dumps(rpc("parley_subscribe", ["ops"], "one more")))
            refused = json.loads(await ws.get_message())
            assert refused["error"]["code"] == -32600
            assert len(node.events.subscribers) == MAX_SUBSCRIPTIONS
        async with trio.open_nursery() as nursery:
            opened = trio.Semaphore(0)
            release = trio.Event()

            async def hold() -> None:
                async with open_websocket_url(endpoint.ws_url, extra_headers=headers):
                    opened.release()
                    await release.wait()

            for _ in range(MAX_WEBSOCKETS - 1):  # one slot is left for the next line's client
                nursery.start_soon(hold)
            for _ in range(MAX_WEBSOCKETS - 1):
                await opened.acquire()
            async with open_websocket_url(endpoint.ws_url, extra_headers=headers) as last:
                await last.send_message(json.dumps(rpc("parley_heads", [])))
                assert "result" in json.loads(await last.get_message())


                def one_too_many() -> int:
                    with (
                        pytest.raises(InvalidStatus) as rejected,
                        ws_connect(endpoint.ws_url, additional_headers=endpoint.headers),
                    ):
                        pass
                    return int(rejected.value.response.status_code)

                assert await trio.to_thread.run_sync(one_too_many) == 503
            release.set()
        async with open_websocket_url(endpoint.ws_url, extra_headers=headers) as again:  # slots come back
            await again.send_message(json.dumps(rpc("parley_heads", [])))
            assert "result" in json.loads(await again.get_message())

    with_node(channel_dir, tmp_path, body)
