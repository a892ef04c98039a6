"""The async client under both trio and asyncio, its typed errors and its whole-token amounts,
against a real node behind the real API (`trading_kit`: participant 0's node, no network).

Under asyncio the client runs in a worker thread with its own event loop (`asyncio.run`), as a
ccxt or Hummingbot strategy process would run it, while the node runs under trio in the test's
thread."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from channel.api.client import (
    ApiError,
    AsyncClient,
    BadAmount,
    Client,
    ClientError,
    Endpoint,
    InsufficientBalance,
    NodeUnavailable,
    Rejected,
    SocketClient,
    Tokens,
    Unauthorized,
    UnknownToken,
)
from channel.runtime.genesis_file import save_genesis
from channel.runtime.node import Node
from tests.channel.api.trading_kit import ADDRESSES, E9, SYMBOL, order_body, sign_order, trading_genesis, with_node

GENESIS = trading_genesis()
BOB = "0x" + ADDRESSES[1].hex()
ME = "0x" + ADDRESSES[0].hex()


def node_folder(tmp_path: Path) -> Path:
    """Participant 0's data directory with a node.toml naming the genesis (for `Tokens.for_node`)."""
    save_genesis(GENESIS, tmp_path / "genesis.toml")
    folder = tmp_path / "node0"
    folder.mkdir()
    (folder / "node.toml").write_text('data_dir = "."\ngenesis = "../genesis.toml"\n')
    return folder


def calls_over(client: AsyncClient, over: str) -> AbstractAsyncContextManager[Any]:
    """The client's calls over HTTP (the client itself), or over one WebSocket kept open."""
    return client.socket() if over == "websocket" else nullcontext(client)


async def exercise(data_dir: Path, over: str = "http") -> dict[str, Any]:
    """What every backend must do alike: a subscription sees a transfer, the typed rejections,
    whole-token amounts both ways, with the calls `over` HTTP or a WebSocket. Returns what it saw,
    for the test to compare."""
    async with AsyncClient.for_node(data_dir) as opened, calls_over(opened, over) as client:
        async with opened.subscribe("balances") as balances, opened.subscribe("ops") as ops:
            receipt = await client.transfer(BOB, "USDC", Decimal("12.5"))
            seen = [await balances.__anext__() for _ in range(2)]  # the sender's and the recipient's
            op = await ops.__anext__()
        free = (await client.balances(BOB))[BOB]["USDC"]["free"]
        errors: dict[str, Any] = {}
        try:
            await client.transfer(BOB, "USDC", 10**6 * E9)
        except InsufficientBalance as exc:
            errors["insufficient"] = (exc.reason, exc.code, isinstance(exc, Rejected) and isinstance(exc, ApiError))
        try:
            await client.transfer(BOB, "DOGE", 1)
        except UnknownToken as exc:
            errors["unknown"] = exc.reason
        try:
            await client.place_order(SYMBOL, "buy", Decimal("0.5"), Decimal("2002"), tif="post_only")
        except Rejected as exc:
            errors["post_only"] = (type(exc).__name__, exc.reason)
        try:
            await client.transfer(BOB, "USDC", Decimal("0.0000001"))  # USDC has 6 decimals
        except BadAmount as exc:
            errors["too_fine"] = str(exc)
    async with AsyncClient(Endpoint(opened.endpoint.url, "not-the-token")) as wrong:
        try:
            async with wrong.subscribe("ops"):
                pass
        except Unauthorized:
            errors["unauthorized"] = True
    return {"receipt": receipt["status"], "accounts": sorted(e["account"] for e in seen),
            "op": (op["op_id"] == receipt["op_id"], op["status"], op["body"]["amount"]),
            "free": client.amount("USDC", free), "errors": errors}


def expected_report() -> dict[str, Any]:
    return {
        "receipt": "tentative", "accounts": sorted([ME, BOB]), "op": (True, "tentative", 12_500_000_000),
        "free": Decimal("100012.5"),
        "errors": {
            "insufficient": ("insufficient_balance", -32001, True),
            "unknown": "unknown_token",
            "post_only": ("Rejected", "post_only_would_cross"),
            "too_fine": "0.0000001 USDC is finer than the token's 6 decimal places",
            "unauthorized": True,
        },
    }


def with_seller(tmp_path: Path, body: Callable[[Node, Endpoint], Awaitable[None]]) -> None:
    async def run(node: Node, endpoint: Endpoint) -> None:
        node.receive([sign_order(node, 1, 1, order_body("sell", E9, 2001 * E9))])  # a resting ask at 2001
        await body(node, endpoint)

    with_node(GENESIS, tmp_path, run)


@pytest.mark.parametrize("over", ["http", "websocket"])
def test_async_client_under_trio(tmp_path: Path, over: str) -> None:
    folder = node_folder(tmp_path)
    seen: list[dict[str, Any]] = []

    async def body(node: Node, endpoint: Endpoint) -> None:
        seen.append(await exercise(folder, over))

    with_seller(tmp_path, body)
    assert seen == [expected_report()]


@pytest.mark.parametrize("over", ["http", "websocket"])
def test_async_client_under_asyncio(tmp_path: Path, over: str) -> None:
    """The crash of issue 17 (``'RunContext' object has no attribute 'runner'``) was trio-websocket
    called from asyncio; the client now opens its WebSocket with the loop's own library."""
    folder = node_folder(tmp_path)
    seen: list[dict[str, Any]] = []

    async def body(node: Node, endpoint: Endpoint) -> None:
        seen.append(await trio.to_thread.run_sync(lambda: asyncio.run(exercise(folder, over))))

    with_seller(tmp_path, body)
    assert seen == [expected_report()]


class ReplayingSocket:
    """A WebSocket that answers each request with its own id, after `before(id)`'s messages: the
    answer of a call cancelled after it was sent, or an answer to nothing asked."""

    def __init__(self, before: Callable[[int], list[dict[str, Any]]]) -> None:
        self.before, self.queue = before, list[str]()

    async def send(self, message: str) -> None:
        request = json.loads(message)
        answers = [*self.before(request["id"]), {"jsonrpc": "2.0", "id": request["id"], "result": request["method"]}]
        self.queue += [json.dumps(answer) for answer in answers]

    async def receive(self) -> str:
        return self.queue.pop(0)


def test_a_socket_call_skips_the_answers_of_cancelled_calls_and_refuses_others() -> None:
    async def run() -> None:
        earlier = ReplayingSocket(lambda i: [{"jsonrpc": "2.0", "id": j, "result": "old"} for j in range(1, i)])
        stale = SocketClient(earlier, None, None)
        assert [await stale.call("parley_heads"), await stale.call("parley_peers")] == ["parley_heads", "parley_peers"]
        foreign = SocketClient(ReplayingSocket(lambda i: [{"jsonrpc": "2.0", "id": i + 7, "result": "?"}]), None, None)
        with pytest.raises(ApiError, match="answered another request"):
            await foreign.call("parley_heads")
        notified = SocketClient(ReplayingSocket(lambda i: [{"jsonrpc": "2.0", "method": "parley_subscription"}]),
                                None, None)
        with pytest.raises(ApiError, match="answered another request"):
            await notified.call("parley_heads")

    trio.run(run)


def test_sync_client_raises_the_same_typed_errors(tmp_path: Path) -> None:
    folder = node_folder(tmp_path)

    def use() -> None:
        with Client.for_node(folder) as client:
            with pytest.raises(InsufficientBalance) as caught:
                client.transfer(BOB, "ETH", Decimal("11"))
            assert caught.value.reason == "insufficient_balance"
            with pytest.raises(UnknownToken):
                client.transfer(BOB, "DOGE", 5)
            assert client.transfer(BOB, "ETH", Decimal("0.25"))["status"] == "tentative"
            assert client.amount("ETH", client.balances(BOB)[BOB]["ETH"]["free"]) == Decimal("10.25")

    async def body(node: Node, endpoint: Endpoint) -> None:
        await trio.to_thread.run_sync(use)

    with_node(GENESIS, tmp_path, body)


def test_a_node_whose_process_is_gone_is_unavailable(tmp_path: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    (tmp_path / "api.json").write_text(f'{{"url": "http://127.0.0.1:1", "pid": {int(ended.stdout)}}}')
    (tmp_path / "api-token").write_text("t")
    with pytest.raises(NodeUnavailable, match=r"process \d+ \(in api.json\) no longer exists"):
        Client.for_node(tmp_path)
    assert issubclass(NodeUnavailable, ClientError)
    assert issubclass(ApiError, ClientError)


def test_nothing_listening_is_unavailable_under_asyncio(tmp_path: Path) -> None:
    async def call() -> None:
        async with AsyncClient(Endpoint("http://127.0.0.1:1", "t")) as client:
            await client.heads()

    with pytest.raises(NodeUnavailable, match="cannot reach the node"):
        asyncio.run(call())


DECIMALS = st.integers(min_value=0, max_value=18)


@given(DECIMALS, st.integers(min_value=1, max_value=2**64 - 1))
@example(6, 1000)  # 0.000001 USDC, the finest USDC amount
def test_whole_token_amounts_round_trip_exactly(decimals: int, units: int) -> None:
    """Any e9 amount the token can hold goes to a Decimal and back unchanged."""
    tokens = Tokens({"T": decimals})
    e9 = units * 10 ** max(0, 9 - decimals)
    assert tokens.e9("T", tokens.amount("T", e9)) == e9
    assert tokens.e9("T", str(tokens.amount("T", e9))) == e9


@given(st.integers(min_value=0, max_value=8), st.integers(min_value=1, max_value=10**12))
def test_amounts_finer_than_the_token_are_refused(decimals: int, units: int) -> None:
    tokens = Tokens({"T": decimals})
    finer = Decimal(units * 10 + 1).scaleb(-(decimals + 1))  # one more decimal place than the token has
    with pytest.raises(BadAmount, match="finer than"):
        tokens.e9("T", finer)


@pytest.mark.parametrize("text", ["0", "-1", "NaN", "Infinity", "abc", "1e-10"])
def test_amounts_that_are_not_positive_token_amounts_are_refused(text: str) -> None:
    with pytest.raises(BadAmount):
        Tokens({"T": 18}).e9("T", text)
