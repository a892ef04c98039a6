"""The p2p layer over real py-libp2p on 127.0.0.1: Noise, yamux, GossipSub and the sync protocol.

No timed assertions: every wait is for a condition, under a generous overall deadline, so a
loaded machine only makes these tests slower.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from crdt.genesis import Genesis
from crdt.replica import Replica
from crdt.testing import forge
from p2p.host import Libp2pTransport, open_libp2p_transport
from p2p.peer import SYNC_PROTOCOL, Peer, PeerConfig, open_peer
from p2p.wire import encode_batch, encode_varint
from tests.p2p.p2p_kit import Author, authors, host_config, make_genesis, poll_until

pytestmark = pytest.mark.slow

DEADLINE = 60
CONFIG = PeerConfig(sync_interval=1.0)


@asynccontextmanager
async def started(
    genesis: Genesis,
    data_dir: Path,
    boot: tuple[str, ...] = (),
    config: PeerConfig = CONFIG,
    replica: Replica | None = None,
    participant: int = 0,
) -> AsyncIterator[tuple[Peer, Libp2pTransport]]:
    async with (
        open_libp2p_transport(host_config(genesis, data_dir, participant, boot)) as transport,
        open_peer(replica or Replica(genesis), transport, config) as peer,
    ):
        yield peer, transport


async def wait_gossip_forgotten(peers: list[Peer]) -> None:
    """Until no peer's GossipSub message cache holds anything (nothing left to replay)."""
    routers = [p.transport.router for p in peers]  # type: ignore[attr-defined]
    with trio.fail_after(DEADLINE):
        await poll_until(lambda: not any(router.mcache.msgs for router in routers), 0.1)


@asynccontextmanager
async def cluster(genesis: Genesis, tmp: Path, n: int) -> AsyncIterator[tuple[list[Peer], tuple[str, ...]]]:
    """n peers; each bootstraps from the first."""
    async with AsyncExitStack() as stack:
        first, transport = await stack.enter_async_context(started(genesis, tmp / "p0"))
        boot = tuple(transport.listen_addrs())
        peers = [first]
        for index in range(1, n):
            peer, _ = await stack.enter_async_context(started(genesis, tmp / f"p{index}", boot, participant=index))
            peers.append(peer)
        yield peers, boot


def everyone(peers: list[Peer]) -> tuple[str, ...]:
    return tuple(a for p in peers for a in p.transport.listen_addrs())  # type: ignore[attr-defined]


async def wait_all(peers: list[Peer], count: int) -> None:
    with trio.fail_after(DEADLINE):
        for peer in peers:
            await peer.wait_until(lambda peer=peer: len(peer.replica.graph) >= count)  # type: ignore[misc]


def assert_same_state(peers: list[Peer]) -> None:
    assert len({p.replica.state_hash() for p in peers}) == 1
    assert len({p.replica.payout_root() for p in peers}) == 1
    assert len({frozenset(p.replica.graph.ops) for p in peers}) == 1


async def transfers(peer: Peer, author: Author, to: bytes, count: int) -> None:
    for index in range(count):
        await peer.submit(author.transfer(to, 1 + index % 7))
        if index % 10 == 0:
            await trio.lowlevel.checkpoint()


def test_concurrent_transfers_converge(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis(4)
        people = authors(genesis)
        async with cluster(genesis, tmp_path, 4) as (peers, _):
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: all(p.sessions() for p in peers))
            async with trio.open_nursery() as nursery:
                for index, (peer, author) in enumerate(zip(peers, people, strict=True)):
                    nursery.start_soon(transfers, peer, author, people[(index + 1) % 4].address, 100)
            await wait_all(peers, 400)
            assert_same_state(peers)
            assert all(p.statistics().gossip_ops_received for p in peers)
            for p in peers:  # the wire counts: every delivered byte came in, duplicates on top
                stats, health = p.statistics(), p.transport.gossip_health()  # type: ignore[attr-defined]
                came_in = health["received"][p.topic]
                assert stats.gossip_bytes_received > 0
                assert came_in["bytes"] >= stats.gossip_bytes_received
                assert came_in["messages"] >= stats.gossip_batches_received

    trio.run(main)


def test_late_node_catches_up_by_sync(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis(3)
        people = authors(genesis)
        async with cluster(genesis, tmp_path, 2) as (peers, boot):
            await transfers(peers[0], people[0], people[1].address, 150)
            await transfers(peers[1], people[1], people[0].address, 150)
            await wait_all(peers, 300)
            await wait_gossip_forgotten(peers)
            async with started(genesis, tmp_path / "late", boot, participant=2) as (late, _):
                await wait_all([late], 300)
                assert late.statistics().sync_ops_received >= 300
                assert late.statistics().sync_bytes_received >= 300 * 200  # an operation is about 260 bytes
                assert late.statistics().sync_messages_received > 0
                assert_same_state([*peers, late])

    trio.run(main)


def test_node_that_missed_gossip_catches_up_by_sync(tmp_path: Path) -> None:
    """A node goes down with its replica, misses gossip, comes back with the same identity: the
    start-up Status and the gap requests (unknown parents) bring it up to date. The periodic
    round is made too slow to be what repairs it."""

    async def main() -> None:
        genesis = make_genesis(3)
        people = authors(genesis)
        slow = PeerConfig(sync_interval=600.0)
        async with cluster(genesis, tmp_path, 2) as (peers, boot):
            kept = Replica(genesis)
            async with started(genesis, tmp_path / "away", boot, slow, kept, participant=2) as (away, transport):
                away_id = transport.local_id
                await transfers(peers[0], people[0], people[1].address, 20)
                await wait_all([*peers, away], 20)
            await transfers(peers[0], people[0], people[1].address, 100)  # missed
            await transfers(peers[1], people[1], people[2].address, 100)  # missed
            await wait_all(peers, 220)
            await wait_gossip_forgotten(peers)
            assert len(kept.graph) == 20
            async with started(genesis, tmp_path / "away", boot, slow, kept, participant=2) as (back, transport):
                assert transport.local_id == away_id
                await transfers(peers[0], people[0], people[1].address, 10)  # gossip with unknown parents
                await wait_all([*peers, back], 230)
                assert back.statistics().sync_ops_received >= 200
                assert_same_state([*peers, back])

    trio.run(main)


def test_garbage_and_oversized_frames_on_sync_are_rejected(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis(3)
        people = authors(genesis)
        async with (
            cluster(genesis, tmp_path, 2) as (peers, boot),
            open_libp2p_transport(host_config(genesis, tmp_path / "evil", 2, boot)) as evil,
        ):
            target = peers[0].transport.local_id
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: target in evil.connected_peers())
                for attack in (encode_varint(7) + b"\xff\x00garbage", encode_varint(50 << 20) + b"\x00" * 100):
                    stream = await evil.open_stream(target, SYNC_PROTOCOL)
                    await stream.write(attack)
                    while await stream.read(1 << 16):
                        pass  # it answers with its Status, then resets the stream
            penalties = peers[0].statistics().penalties
            assert penalties.get("malformed") == 1
            assert penalties.get("oversized") == 1
            # the node is up and still syncing with its honest peer
            await transfers(peers[0], people[0], people[1].address, 30)
            await wait_all(peers, 30)
            assert_same_state(peers)

    trio.run(main)


def test_byzantine_bad_signatures_are_scored_down_and_never_applied(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis(3)
        people = authors(genesis)
        ctx = genesis.context()
        async with (
            cluster(genesis, tmp_path, 2) as (peers, _),
            open_libp2p_transport(host_config(genesis, tmp_path / "evil", 2, everyone(peers))) as evil,
        ):
            topic = peers[0].topic
            with trio.fail_after(DEADLINE):
                await poll_until(
                    lambda: (
                        {p.transport.local_id for p in peers}
                        <= {pid.to_bytes() for pid in evil.pubsub.peer_topics.get(topic, ())}
                    )
                )
            forged = []
            donor = authors(genesis)[1]
            for amount in range(6):  # a participant's address, someone else's signature
                good = donor.transfer(people[0].address)  # a real signature, by someone else
                forged.append(
                    forge(
                        ctx,
                        author=people[2].address,
                        seq=1,
                        parents=[],
                        kind="transfer",
                        body={"to": people[0].address, "token": "USDC", "amount": amount},
                        ts=0,
                        signature=good.signature,
                    )
                )
                await evil.publish(topic, encode_batch([forged[-1]]))
            evil_id = evil.local_id
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: all(p.transport.is_banned(evil_id) for p in peers))
                await poll_until(lambda: not any(evil_id in p.transport.connected_peers() for p in peers))
            for peer in peers:
                assert peer.statistics().penalties.get("bad_signature", 0) >= 2
                assert not peer.replica.graph.ops
                assert evil_id not in peer.sessions()
            # honest traffic still flows, and none of the forged operations ever appears
            await transfers(peers[1], people[1], people[0].address, 20)
            await wait_all(peers, 20)
            assert_same_state(peers)
            for peer in peers:
                assert all(f not in {op.raw for op in peer.replica.graph.ops.values()} for f in forged)

    trio.run(main)
