"""`parley book MARKET --watch` follows the node's book stream: a real ``parley`` process against
a real node and its API prints the book, then each change, as it happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from channel.api.client import Endpoint
from channel.runtime.node import Node
from tests.channel.api.trading_kit import E9, SYMBOL, order_body, sign_order, trading_genesis, with_node


@pytest.mark.slow
def test_book_watch_prints_each_change_of_the_stream(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        node.receive([sign_order(node, 1, 1, order_body("sell", E9 // 10, 2001 * E9))])
        command = [sys.executable, "-m", "channel", "book", SYMBOL, "--watch", "--json", "--depth", "5",
                   "--node", str(tmp_path / "node0")]
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, env=dict(os.environ))
        assert process.stdout is not None
        buffer = b""

        async def line() -> dict[str, object]:
            nonlocal buffer
            with trio.fail_after(30):
                while b"\n" not in buffer:
                    chunk = await process.stdout.receive_some()  # type: ignore[union-attr]
                    assert chunk, "parley book --watch ended"
                    buffer += chunk
            text, buffer = buffer.split(b"\n", 1)
            shown: dict[str, object] = json.loads(text)
            return shown

        try:
            first = await line()
            assert (first["seq"], first["asks"], first["bids"]) == (0, [[str(2001 * E9), str(E9 // 10)]], [])
            await node.submit("order.place", order_body("buy", E9 // 10, 1999 * E9))
            second = await line()
            assert (second["seq"], second["bids"], second["best_bid"]) == (
                1, [[str(1999 * E9), str(E9 // 10)]], str(1999 * E9))
        finally:
            process.kill()
            await process.wait()

    with_node(trading_genesis(), tmp_path, body)
