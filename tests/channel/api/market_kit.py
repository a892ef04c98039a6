"""Real nodes with a spot market behind the real API server, for the market-data tests.

`serve` runs one node (store, replica, no network) behind `serve_api`, as tests/channel/api's
other kits do; `served_cluster` runs `node_kit.memory_node`s over the in-memory transport with
their consensus drivers, each behind its own API server, in real time (the API's sockets are
real, so trio's virtual clock would jump while they wait). `Signer` signs the other
participants' operations, for delivering them straight to a node's `Node.receive`.
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
from channel.runtime.keystore import Key
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt import testing
from crdt.ops import SignedOp, address_of, sign_op
from p2p.memory import MemoryNetwork
from tests.channel.runtime.node_kit import KEYS, memory_node
from tests.crdt.crdt_support import TOKENS
from tests.crdt.test_markets_core import SYMBOL, WETH_USDC

E9 = 10**9
GENESIS = testing.make_genesis(KEYS, TOKENS, initial=10**6 * E9, markets=[WETH_USDC])
TOKEN = "token"
__all__ = ["E9", "GENESIS", "SYMBOL", "Signer", "next_event", "order_body", "run_real_time", "serve",
           "served_cluster"]


def order_body(side: str, price: int, qty: int, tif: str = "gtc") -> dict[str, Any]:
    """An order.place body in the market, prices and quantities in e9."""
    return {"market": SYMBOL, "side": side, "type": "limit", "tif": tif, "price": price, "qty": qty,
            "reduce_only": False, "expires": 0}


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
            op = sign_op(self.ctx, KEYS[index], self.seqs[index], list(parents), kind, body, ts)
            if before is None or op.op_id < before:
                return op
        raise AssertionError("no op id below the bound")

    def place(self, index: int, node: Node, side: str, price: int, qty: int, tif: str = "gtc") -> SignedOp:
        """An order of participant `index` after everything `node` holds."""
        return self.sign(index, node.parents(), "order.place", order_body(side, price, qty, tif))


def key(index: int) -> Key:
    return Key(address_of(KEYS[index]), KEYS[index])


def serve(tmp_path: Path, body: Callable[[Node, AsyncClient], Awaitable[None]], index: int = 0) -> None:
    """Run `body` against participant `index`'s node (its store in ``tmp_path/node<index>``:
    a second call restarts it from there) behind the real API, with a client of it."""
    store = Store(tmp_path / f"node{index}" / "node.sqlite")

    async def main() -> None:
        node = Node.restore(GENESIS, key(index), store, fresh_channel=True)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_api, node, TOKEN)
            with trio.fail_after(60):
                async with AsyncClient(Endpoint(url, TOKEN)) as client:
                    await body(node, client)
            nursery.cancel_scope.cancel()

    try:
        run_real_time(main)
    finally:
        store.close()


@asynccontextmanager
async def served_cluster(tmp_path: Path, count: int = 4) -> AsyncIterator[list[tuple[Node, AsyncClient]]]:
    """`count` memory nodes of `GENESIS` with their consensus, each behind its API, with clients."""
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        served = []
        for index in range(count):
            node = await stack.enter_async_context(memory_node(GENESIS, index, tmp_path, network))
            url = await nursery.start(serve_api, node, TOKEN)
            client = await stack.enter_async_context(AsyncClient(Endpoint(url, TOKEN)))
            served.append((node, client))
        network.connect_all()
        yield served
        nursery.cancel_scope.cancel()


def run_real_time(main: Callable[[], Awaitable[None]]) -> None:
    """`trio.run(main)`, with a failure inside the nodes' nested nurseries raised as itself."""
    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if error is group:
            raise
        raise error from None


async def next_event(events: Events, within: float = 10.0) -> dict[str, Any]:
    with trio.fail_after(within):
        return await events.__anext__()
