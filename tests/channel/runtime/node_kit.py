"""Whole nodes over the in-memory transport, under trio's virtual clock.

Each node is a real `channel.runtime.node.Node` (a SQLite store in the test's folder, its
replica restored from it), the real `ConsensusDriver`, and its `p2p.peer.Peer` (`open_node`)
over a `p2p.memory.MemoryNetwork` transport. `run_virtual` runs a test's main function under
`trio.testing.MockClock(autojump_threshold=0)`: whenever every task waits, the clock jumps to
the next deadline, so timeouts, intervals and sync rounds take no real time; it stands still
while a node's own commit runs in its worker thread (`VirtualStore`). The nodes' wall
clock (`virtual_wall_clock`) is derived from the same virtual clock, so checkpoint times move
with it too.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio
import trio.testing

from channel.runtime.driver import ConsensusDriver, DriverConfig
from channel.runtime.keystore import Key
from channel.runtime.node import DEFAULT_SNAPSHOT_EVERY, Node, open_node
from channel.runtime.store import Store
from crdt import testing
from crdt.genesis import Genesis, Token
from crdt.hashing import keccak256
from crdt.ops import address_of
from crdt.types import Address, Symbol
from p2p.memory import MemoryNetwork
from p2p.peer import PeerConfig

USDC = Symbol("USDC")
KEYS = sorted((keccak256(b"parley-catchup-test-%d" % i) for i in range(4)), key=address_of)
FAST = DriverConfig(interval=0.05, catchup_period=0.1, certificate_grace=0.3)
PEERS = PeerConfig(sync_interval=0.2, connect_interval=0.05)
# The virtual wall clock starts here (2001-09-09): far from today, so a checkpoint time taken
# from the real clock instead would stand out.
EPOCH_MS = 1_000_000_000_000

T = TypeVar("T")


def make_genesis() -> Genesis:
    return testing.make_genesis(KEYS, [Token(USDC, Address(b"\x22" * 20), 6)], initial=10**15)


def virtual_wall_clock() -> int:
    """Milliseconds since 1970 as the nodes see them: `EPOCH_MS` plus trio's (virtual) time."""
    return EPOCH_MS + int(trio.current_time() * 1000)


def _run(main: Callable[[], Awaitable[T]], clock: trio.abc.Clock | None) -> T:
    """`trio.run(main)`, with a failure inside the nodes' nested nurseries raised as itself (an
    `AssertionError`, a `TooSlowError`), not wrapped in one exception group per nursery."""
    try:
        return trio.run(main, clock=clock)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if error is group:
            raise
        raise error from None


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main` under the virtual clock (see `_run` for its failures)."""
    return _run(main, trio.testing.MockClock(autojump_threshold=0))


def run_real_time(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main` on the real clock (see `_run` for its failures)."""
    return _run(main, None)


class VirtualStore(Store):
    """A store whose own commits (`Store.append_own_ops`, in a worker thread) take no virtual
    time, as when they ran on the trio thread: while any is under way the virtual clock does
    not autojump. Otherwise it jumps from deadline to deadline for as long as the disk syncs
    (every task waits), and one submit takes seconds of virtual time."""

    in_flight = 0  # own commits under way, over every node of the run

    async def append_own_ops(
        self, ops: Iterable[tuple[bytes, bytes]], source: bytes, *, requests: Iterable[tuple[str, bytes]] = ()
    ) -> int:
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            return await super().append_own_ops(ops, source, requests=requests)
        VirtualStore.in_flight += 1
        clock.autojump_threshold = math.inf
        try:
            return await super().append_own_ops(ops, source, requests=requests)
        finally:
            VirtualStore.in_flight -= 1
            if VirtualStore.in_flight == 0:
                clock.autojump_threshold = 0


def peer_id(index: int) -> bytes:
    return bytes([index + 1]) * 8


@asynccontextmanager
async def memory_node(
    genesis: Genesis, index: int, path: Path, network: MemoryNetwork, config: DriverConfig = FAST,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
) -> AsyncIterator[Node]:
    """Participant `index`'s node, its store in ``path/node<index>``: leaving the block stops it
    (as a crash would: nothing is flushed but what the node already wrote), entering it again
    with the same path restarts it from that store (and its newest snapshot)."""
    store = VirtualStore(path / f"node{index}" / "node.sqlite")
    try:
        key = Key(address_of(KEYS[index]), KEYS[index])
        node = Node.restore(genesis, key, store, fresh_channel=True, wall_clock=virtual_wall_clock,
                            snapshot_every=snapshot_every)
        async with (
            network.open_transport(peer_id(index), participant=key.address) as transport,
            open_node(node, transport, PEERS),
            trio.open_nursery() as nursery,
        ):
            node.driver = ConsensusDriver(node, transport, config)
            await nursery.start(node.driver.run)
            yield node
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def memory_nodes(
    stack: AsyncExitStack, genesis: Genesis, path: Path, network: MemoryNetwork, count: int
) -> list[Node]:
    """Participants 0 to `count` - 1 as `memory_node`s, each stopped when `stack` closes."""
    return [await stack.enter_async_context(memory_node(genesis, i, path, network)) for i in range(count)]


def link(network: MemoryNetwork, index: int, others: range, up: bool) -> None:
    me = peer_id(index)
    for other in others:
        if other != index:
            (network.connect if up else network.disconnect)(me, peer_id(other))


async def poll(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await trio.sleep(0.02)


async def advance(node: Node, versions: int, to: Address) -> None:
    """Submit transfers at `node` until `versions` more checkpoints are decided there."""
    target = node.replica.version + versions
    with trio.fail_after(60):
        while node.replica.version < target:
            await node.submit("transfer", {"to": to, "token": USDC, "amount": 1})
            with trio.move_on_after(0.5):
                await poll(lambda: node.replica.version >= target)


def certified_everywhere(nodes: list[Node]) -> bool:
    """Every node has applied the same versions and holds every certificate."""
    return len({(n.replica.version, n.replica.state_hash()) for n in nodes}) == 1 and all(
        set(n.driver.certificates) == set(range(1, n.replica.version + 1))  # type: ignore[union-attr]
        for n in nodes
    )


async def settled(nodes: list[Node]) -> None:
    with trio.fail_after(60):
        await poll(lambda: certified_everywhere(nodes))
