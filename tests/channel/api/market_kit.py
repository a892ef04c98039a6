"""The market-data tests' nodes: `trading_kit`'s ETH/USDC channel, every participant a trader.

`serve` runs one node (store, replica, no network) behind the real API server with a client
of it (`trading_kit.with_node`); `served_cluster` runs `node_kit.memory_node`s over the
in-memory transport with their consensus drivers, each behind its own API server, in real
time (the API's sockets are real, so trio's virtual clock would jump while they wait).
`Signer` signs the other participants' operations, for delivering them straight to a node's
`Node.receive` as a peer would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from channel.api.client import AsyncClient, Endpoint, Events
from channel.api.server import serve_api
from channel.runtime.node import Node
from crdt.genesis import Role
from crdt.ops import SignedOp, sign_op
from p2p.memory import MemoryNetwork
from tests.channel.api.trading_kit import E9, KEYS, SYMBOL, order_body, trading_genesis, with_node
from tests.channel.runtime import node_kit
from tests.channel.runtime.node_kit import run_real_time

TRADERS = [Role.TRADER] * 4
GENESIS = trading_genesis(roles=TRADERS)
CLUSTER_GENESIS = trading_genesis(node_kit.KEYS, TRADERS)  # memory nodes sign with node_kit's keys
TOKEN = "token"
__all__ = ["E9", "SYMBOL", "Signer", "next_event", "order_body", "run_real_time", "serve", "served_cluster"]


class Signer:
    """Signs the operations of participants other than the node's, numbering each author's."""

    def __init__(self) -> None:
        self.ctx = GENESIS.context()
        self.seqs: Counter[int] = Counter()

    def sign(self, index: int, parents: Iterable[bytes], kind: str, body: dict[str, Any],
             before: bytes | None = None) -> SignedOp:
        """The next operation of participant `index`; with `before`, one whose op id is smaller
        (re-signed with another ts until it is), so that at the same height it sorts first."""
        self.seqs[index] += 1
        for ts in range(10_000):
            op = sign_op(self.ctx, KEYS[index], self.seqs[index], sorted(parents), kind, body, ts)
            if before is None or op.op_id < before:
                return op
        raise AssertionError("no op id below the bound")

    def place(self, index: int, node: Node, side: str, price: int, qty: int, tif: str = "gtc") -> SignedOp:
        """An order of participant `index` after everything `node` holds."""
        return self.sign(index, node.parents(), "order.place", order_body(side, qty, price, tif=tif))


def serve(tmp_path: Path, body: Callable[[Node, AsyncClient], Awaitable[None]], index: int = 0) -> None:
    """Run `body` against participant `index`'s node behind the real API, with a client of it
    (a second call with the same `tmp_path` restarts the node from its store)."""

    async def with_client(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            await body(node, client)

    with_node(GENESIS, tmp_path, with_client, index)


@asynccontextmanager
async def served_cluster(tmp_path: Path, count: int = 4) -> AsyncIterator[list[tuple[Node, AsyncClient]]]:
    """`count` connected memory nodes with their consensus, each behind its API, with clients."""
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        served = []
        for index in range(count):
            node = await stack.enter_async_context(node_kit.memory_node(CLUSTER_GENESIS, index, tmp_path, network))
            url = await nursery.start(serve_api, node, TOKEN)
            client = await stack.enter_async_context(AsyncClient(Endpoint(url, TOKEN)))
            served.append((node, client))
        network.connect_all()
        yield served
        nursery.cancel_scope.cancel()


async def next_event(events: Events, within: float = 10.0) -> dict[str, Any]:
    with trio.fail_after(within):
        return await events.__anext__()
