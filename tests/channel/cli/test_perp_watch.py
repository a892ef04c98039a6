"""`parley watch positions` follows the node's positions topic: a real ``parley`` process against a
real node with a perp market prints the snapshot, then each update, one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from channel.api.client import Endpoint
from channel.runtime.node import Node
from tests.channel.api.test_perp_api import ADDRESSES, MAKER, TRADER, perp_genesis, perp_order
from tests.channel.api.test_perp_stream import AnnouncingPeers
from tests.channel.api.trading_kit import with_node

E9 = 10**9


@pytest.mark.slow
def test_watch_prints_each_positions_update(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = AnnouncingPeers(node)
        peers.price(3000, 1_000)
        command = [sys.executable, "-m", "channel", "watch", "positions", "--node", str(tmp_path / f"node{TRADER}")]
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, env=dict(os.environ))
        assert process.stdout is not None
        buffer = b""

        async def line() -> str:
            nonlocal buffer
            with trio.fail_after(30):
                while b"\n" not in buffer:
                    chunk = await process.stdout.receive_some()  # type: ignore[union-attr]
                    assert chunk, "parley watch ended"
                    buffer += chunk
            text, buffer = buffer.split(b"\n", 1)
            return text.decode()

        me = "0x" + ADDRESSES[TRADER].hex()
        try:
            assert await line() == f"snapshot seq 0    {me[:12]}… flat"
            peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
            await node.submit("order.place", perp_order("buy", E9, 3000, "ioc"))
            shown = await line()
            assert shown.startswith(f"update   seq 1    {me[:12]}… ETH-PERP long 1 @ 3000 mark 3000 uPnL 0 liq 2228.")
            peers.price(2900, 2_000)
            assert "mark 2900 uPnL -100 " in await line()
        finally:
            process.kill()
            await process.wait()

    with_node(perp_genesis(), tmp_path, body, index=TRADER)
