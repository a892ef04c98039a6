"""`Peer` over the in-memory transport: gossip, repair by sync, and hostile peers (fast, no sockets).
Every test runs under trio's virtual clock: sync rounds, timeouts and pauses take no real time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio
import trio.testing

from crdt.genesis import Genesis
from crdt.replica import Replica
from crdt.testing import forge
from p2p.memory import MemoryNetwork
from p2p.peer import SYNC_PROTOCOL, Peer, PeerConfig, open_peer
from p2p.wire import encode_batch, encode_varint
from tests.p2p.p2p_kit import authors, make_genesis, poll_until

CONFIG = PeerConfig(sync_interval=0.5, connect_interval=0.05)


def run_virtual(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@asynccontextmanager
async def memory_peers(genesis: Genesis, n: int, network: MemoryNetwork) -> AsyncIterator[list[Peer]]:
    async with AsyncExitStack() as stack:
        peers = []
        for index in range(n):
            transport = await stack.enter_async_context(network.open_transport(bytes([index + 1]) * 8))
            peers.append(await stack.enter_async_context(open_peer(Replica(genesis), transport, CONFIG)))
        network.connect_all()
        yield peers


async def wait_converged(peers: list[Peer], count: int) -> None:
    with trio.fail_after(30):
        for peer in peers:
            await peer.wait_until(lambda peer=peer: len(peer.replica.graph) >= count)  # type: ignore[misc]
    roots = {peer.replica.state_hash() for peer in peers}
    assert len(roots) == 1


def test_gossip_and_sync_converge_with_lossy_gossip() -> None:
    async def main() -> None:
        genesis = make_genesis(3)
        network = MemoryNetwork()
        lost = 0

        def drop(sender: bytes, receiver: bytes, data: bytes) -> bool:
            nonlocal lost
            lost += 1
            return lost % 3 == 0  # lose every third gossip hop

        network.drop = drop
        async with memory_peers(genesis, 3, network) as peers:
            people = authors(genesis)
            for round_ in range(20):
                for peer, author in zip(peers, people, strict=True):
                    await peer.submit(author.transfer(people[(round_ + 1) % 3].address))
                await trio.sleep(0.003)  # virtual: the rounds interleave with gossip and sync
            await wait_converged(peers, 60)
            assert any(p.statistics().sync_ops_received for p in peers)

    run_virtual(main)


def test_bad_signatures_get_the_forwarder_banned() -> None:
    async def main() -> None:
        genesis = make_genesis(3)
        network = MemoryNetwork()
        async with memory_peers(genesis, 2, network) as peers, network.open_transport(b"\xff" * 8) as evil:
            network.connect_all()
            people = authors(genesis)
            good = people[2].transfer(people[0].address)
            for amount in range(3):
                bad = forge(
                    genesis.context(),
                    author=people[2].address,
                    seq=2,
                    parents=[good.op_id],
                    kind="transfer",
                    body={"to": people[0].address, "token": "USDC", "amount": amount},
                    ts=0,
                    signature=good.signature,
                )
                await evil.publish(peers[0].topic, encode_batch([good.raw, bad]))
            with trio.fail_after(10):
                await poll_until(lambda: all(p.transport.is_banned(evil.local_id) for p in peers))
            for peer in peers:
                assert len(peer.replica.graph) == 0
                assert peer.statistics().penalties.get("bad_signature")
                assert evil.local_id not in peer.transport.connected_peers()

    run_virtual(main)


def test_garbage_on_the_sync_stream_is_rejected() -> None:
    async def main() -> None:
        genesis = make_genesis(2)
        network = MemoryNetwork()
        async with memory_peers(genesis, 1, network) as peers, network.open_transport(b"\xfe" * 8) as evil:
            network.connect_all()
            stream = await evil.open_stream(peers[0].local_id, SYNC_PROTOCOL)
            await stream.write(encode_varint(5) + b"\xff\xff\xff\xff\xff")
            with trio.fail_after(10):
                while await stream.read(1 << 16):
                    pass  # the peer answers with its Status, then resets the stream
            stream = await evil.open_stream(peers[0].local_id, SYNC_PROTOCOL)
            await stream.write(encode_varint(10 << 20))
            with trio.fail_after(10):
                while await stream.read(1 << 16):
                    pass
            assert peers[0].statistics().penalties == {"malformed": 1, "oversized": 1}
            # still up: it takes and gossips an operation
            people = authors(genesis)
            await peers[0].submit(people[0].transfer(people[1].address))
            assert len(peers[0].replica.graph) == 1

    run_virtual(main)
