"""Running ccxt against `trading_kit`'s node: the node runs under trio in the test's thread and
ccxt in a worker thread (`trio.to_thread`), its async classes under their own asyncio loop, as
a strategy process would run them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import trio

from channel.api.client import Endpoint
from channel.runtime.node import Node
from tests.channel.api.trading_kit import E9, order_body, sign_order, trading_genesis, with_node

GENESIS = trading_genesis()


def against_node(tmp_path: Path, strategy: Callable[[str], Any],
                 setup: Callable[[Node], None] = lambda node: None) -> Any:
    """Run `strategy(data_dir)` in a thread against participant 0's node, after `setup(node)`
    (which delivers other participants' operations as a peer would)."""
    result: list[Any] = []

    async def body(node: Node, endpoint: Endpoint) -> None:
        setup(node)
        result.append(await trio.to_thread.run_sync(strategy, str(tmp_path / "node0")))

    with_node(GENESIS, tmp_path, body)
    return result[0]


def under_asyncio(make: Callable[[str], Coroutine[Any, Any, Any]]) -> Callable[[str], Any]:
    return lambda data_dir: asyncio.run(make(data_dir))


def a_seller(node: Node) -> None:
    """Participant 1 rests a sell of 1 ETH at 2001."""
    node.receive([sign_order(node, 1, 1, order_body("sell", E9, 2001 * E9))])


