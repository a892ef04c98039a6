"""Attacks on the libp2p layer that once worked, over real py-libp2p on 127.0.0.1 (in process).

Each test is one attack; the module docstring of `p2p.host` says what was wrong. No timed
assertions: every wait is for a condition under a generous deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11

from crdt.genesis import Genesis
from crdt.replica import Replica
from crdt.testing import forge
from p2p import host as host_module
from p2p.admission import Admission, sign_binding
from p2p.host import HostConfig, open_libp2p_transport
from p2p.identity import load_or_create
from p2p.peer import SYNC_PROTOCOL, Peer, PeerConfig, open_peer
from p2p.wire import FrameDecoder, encode_batch, encode_varint
from tests.p2p.p2p_kit import authors, host_config, make_genesis, poll_until, private_key

pytestmark = [pytest.mark.slow, pytest.mark.hostile]

DEADLINE = 60
CONFIG = PeerConfig(sync_interval=1.0)


@asynccontextmanager
async def honest_pair(genesis: Genesis, tmp: Path, config: PeerConfig = CONFIG) -> AsyncIterator[list[Peer]]:
    """Participants 0 and 1, connected and syncing."""
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_libp2p_transport(host_config(genesis, tmp / "p0", 0)))
        boot = tuple(first.listen_addrs())
        second = await stack.enter_async_context(open_libp2p_transport(host_config(genesis, tmp / "p1", 1, boot)))
        peers = []
        for transport in (first, second):
            peers.append(await stack.enter_async_context(open_peer(Replica(genesis), transport, config)))
        with trio.fail_after(DEADLINE):
            await poll_until(lambda: all(p.sessions() for p in peers))
        yield peers


def boot_of(peers: list[Peer]) -> tuple[str, ...]:
    return tuple(a for p in peers for a in p.transport.listen_addrs())  # type: ignore[attr-defined]


async def still_syncing(peers: list[Peer], genesis: Genesis, count: int = 20) -> None:
    """Honest traffic between the honest peers still flows and converges."""
    author, to = authors(genesis)[0], authors(genesis)[1].address
    before = len(peers[1].replica.graph)
    for _ in range(count):
        await peers[0].submit(author.transfer(to))
    with trio.fail_after(DEADLINE):
        await peers[1].wait_until(lambda: len(peers[1].replica.graph) >= before + count)
    assert peers[0].replica.state_hash() == peers[1].replica.state_hash()


def test_a_keyless_host_gets_no_gossip_no_sync_and_is_dropped(tmp_path: Path) -> None:
    """Before admission, any host that dialled a node received every gossip batch and could
    open a sync session that handed it the operations (a privacy leak, and the door to the
    pubsub crash below)."""

    async def main() -> None:
        genesis = make_genesis(3)
        async with honest_pair(genesis, tmp_path, PeerConfig(sync_interval=1.0)) as peers:
            config = host_config(genesis, tmp_path / "rogue", None, boot_of(peers))
            async with open_libp2p_transport(config) as rogue:
                received: list[bytes] = []
                subscription = await rogue.subscribe(peers[0].topic, lambda forwarder, data: True)

                async def listen() -> None:
                    async for _origin, data in subscription:
                        received.append(data)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(listen)
                    with trio.fail_after(DEADLINE):  # it did connect, at the TCP/Noise level
                        await poll_until(lambda: bool(rogue.host.get_connected_peers()))
                    await still_syncing(peers, genesis)
                    for peer in peers:
                        assert rogue.local_id not in peer.transport.connected_peers()
                        assert rogue.local_id not in peer.sessions()
                        pubsub = peer.transport.pubsub  # type: ignore[attr-defined]
                        assert ID(rogue.local_id) not in pubsub.peers
                    target = peers[0].transport.local_id
                    data = b""
                    with trio.fail_after(DEADLINE):  # refused: reset without a byte of Status
                        try:
                            raw = await rogue.host.new_stream(ID(target), [TProtocol(SYNC_PROTOCOL)])
                            while chunk := await raw.read(1 << 16):
                                data += chunk
                        except Exception:  # the refusal or the reset, as py-libp2p reports them
                            pass
                    assert data == b""
                    with trio.fail_after(DEADLINE):  # and once its hello timeout passed, dropped
                        await poll_until(lambda: not rogue.host.get_connected_peers(), 0.2)
                    nursery.cancel_scope.cancel()
                assert received == []

    trio.run(main)


def test_a_garbled_pubsub_rpc_from_a_participant_does_not_end_the_node(tmp_path: Path) -> None:
    """A length prefix followed by bytes that are not a protobuf RPC made py-libp2p's pubsub
    reader raise protobuf's DecodeError out of the connection's task group, and the node process
    exited. Honest py-libp2p nodes produced such frames too (interleaved writes). Now the stream
    is reset, the peer is scored down and, after a few, banned; the node carries on."""

    async def main() -> None:
        genesis = make_genesis(3)
        async with (
            honest_pair(genesis, tmp_path) as peers,
            open_libp2p_transport(host_config(genesis, tmp_path / "rogue", 2, boot_of(peers))) as rogue,
        ):
            target = peers[0].transport.local_id
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: target in rogue.connected_peers())
                garbage = b"\x12\x81\xc5\x0b" + b"\x00" * 300 + b"\x1a\x08\x18\xed"  # as seen in the crash
                count = 0
                while not peers[0].transport.is_banned(rogue.local_id) and count < 10:
                    stream = await rogue.host.new_stream(ID(target), [TProtocol(PROTOCOL_ID_V11)])
                    await stream.write(encode_varint(len(garbage)) + garbage)
                    count += 1
                    await poll_until(lambda c=count: peers[0].statistics().penalties.get("malformed", 0) >= c)
                await poll_until(lambda: peers[0].transport.is_banned(rogue.local_id))
            assert peers[0].statistics().penalties.get("malformed", 0) >= 1
            await still_syncing(peers, genesis)

    trio.run(main)


def test_an_oversized_pubsub_rpc_is_refused_before_its_body_and_scored(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis(3)
        async with (
            honest_pair(genesis, tmp_path) as peers,
            open_libp2p_transport(host_config(genesis, tmp_path / "rogue", 2, boot_of(peers))) as rogue,
        ):
            target = peers[0].transport.local_id
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: target in rogue.connected_peers())
                stream = await rogue.host.new_stream(ID(target), [TProtocol(PROTOCOL_ID_V11)])
                await stream.write(encode_varint(1_800_000) + b"\x99" * 4096)  # announces 1.8 MB
                await poll_until(lambda: peers[0].statistics().penalties.get("oversized", 0) >= 1)
            await still_syncing(peers, genesis)

    trio.run(main)


def test_a_trickled_pubsub_rpc_is_reset_and_scored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pubsub RPC announced as 100 KB and sent a byte at a time held its stream open for as
    long as the sender liked: py-libp2p waits for the rest of a frame without a deadline."""
    monkeypatch.setattr(host_module, "PUBSUB_FRAME_SECONDS", 2.0)

    async def main() -> None:
        genesis = make_genesis(3)
        async with (
            honest_pair(genesis, tmp_path) as peers,
            open_libp2p_transport(host_config(genesis, tmp_path / "slow", 2, boot_of(peers))) as slow,
        ):
            target = peers[0].transport.local_id
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: target in slow.connected_peers())
                stream = await slow.host.new_stream(ID(target), [TProtocol(PROTOCOL_ID_V11)])
                await stream.write(encode_varint(100_000))
                closed = False
                for _ in range(DEADLINE * 4):
                    try:
                        await stream.write(b"\x00")
                    except Exception:
                        closed = True
                        break
                    await trio.sleep(0.25)
                assert closed
                await poll_until(lambda: peers[0].statistics().penalties.get("rate_limited", 0) >= 1)
            await still_syncing(peers, genesis)

    trio.run(main)


def test_concurrent_writes_on_one_yamux_stream_arrive_whole(tmp_path: Path) -> None:
    """py-libp2p's yamux locks per 64 KiB frame, not per write, so two writers interleaved
    their frames; pubsub has two writers per stream. `p2p.host` serialises whole writes."""

    async def main() -> None:
        genesis = make_genesis(2)
        protocol = "/parley/test-interleave/1.0.0"
        frames: list[bytes] = []
        done = trio.Event()

        async def handler(stream: object) -> None:
            decoder = FrameDecoder(1 << 20)
            while len(frames) < 4:
                data = await stream.read(1 << 16)  # type: ignore[attr-defined]
                if not data:
                    break
                frames.extend(decoder.feed(data))
            done.set()

        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(open_libp2p_transport(host_config(genesis, tmp_path / "a", 0)))
            b = await stack.enter_async_context(
                open_libp2p_transport(host_config(genesis, tmp_path / "b", 1, tuple(a.listen_addrs())))
            )
            a.set_stream_handler(protocol, handler)  # type: ignore[arg-type]
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: a.local_id in b.connected_peers())
                stream = await b.open_stream(a.local_id, protocol)
                payloads = [bytes([i]) * 300_000 for i in range(4)]
                async with trio.open_nursery() as nursery:
                    for payload in payloads:
                        nursery.start_soon(stream.write, encode_varint(len(payload)) + payload)
                await done.wait()
        assert sorted(frames) == sorted(payloads)

    trio.run(main)


def test_a_ban_holds_against_a_new_identity(tmp_path: Path) -> None:
    """A banned peer used to come back with a new peer id and get a few more bad messages in.
    A ban is now the participant's: its new identity's binding is refused."""

    async def main() -> None:
        genesis = make_genesis(3)
        ctx = genesis.context()
        people = authors(genesis)
        async with honest_pair(genesis, tmp_path) as peers:
            async with open_libp2p_transport(host_config(genesis, tmp_path / "evil", 2, boot_of(peers))) as evil:
                with trio.fail_after(DEADLINE):
                    await poll_until(lambda: all(p.transport.local_id in evil.connected_peers() for p in peers))
                    await poll_until(lambda: len(evil.pubsub.peer_topics.get(peers[0].topic, ())) >= 2)
                    donor = people[1].transfer(people[0].address)
                    for amount in range(8):  # someone else's signature on participant 2's operation
                        bad = forge(ctx, author=people[2].address, seq=1, parents=[], kind="transfer",
                                    body={"to": people[0].address, "token": "USDC", "amount": amount}, ts=0,
                                    signature=donor.signature)
                        await evil.publish(peers[0].topic, encode_batch([bad]))
                    await poll_until(lambda: all(p.transport.is_banned(evil.local_id) for p in peers))
            again = host_config(genesis, tmp_path / "evil-again", 2, boot_of(peers))  # a new peer id
            async with open_libp2p_transport(again) as back:
                with trio.fail_after(DEADLINE):
                    await poll_until(lambda: bool(back.host.get_connected_peers()))
                    await poll_until(lambda: not back.host.get_connected_peers(), 0.2)
                for peer in peers:
                    assert back.local_id not in peer.transport.connected_peers()
                    assert peer.transport.participant(back.local_id) is None
            await still_syncing(peers, genesis)

    trio.run(main)


def test_a_copied_binding_does_not_admit_another_identity(tmp_path: Path) -> None:
    """A binding names the peer id it was signed for; presenting participant 1's binding from
    another identity (which Noise authenticates) is refused."""

    async def main() -> None:
        genesis = make_genesis(3)
        ctx = genesis.context()
        async with honest_pair(genesis, tmp_path) as peers:
            honest_id = peers[1].transport.local_id
            stolen = sign_binding(ctx, private_key(1), honest_id)
            identity = load_or_create(tmp_path / "thief", "p2p-test")
            config = HostConfig(identity=identity, bootstrap=boot_of(peers), admission=Admission(ctx, stolen))
            async with open_libp2p_transport(config) as thief:
                with trio.fail_after(DEADLINE):
                    await poll_until(lambda: bool(thief.host.get_connected_peers()))
                    await poll_until(lambda: peers[0].statistics().penalties.get("unexpected", 0) >= 1)
                    await poll_until(lambda: not thief.host.get_connected_peers(), 0.2)
                assert thief.local_id not in peers[0].transport.connected_peers()
            await still_syncing(peers, genesis)

    trio.run(main)


def test_a_trickled_sync_frame_is_closed(tmp_path: Path) -> None:
    """A sync frame announced as 1 MiB and sent a byte at a time held its stream open for as
    long as the sender liked. A frame that has begun must now end within `frame_timeout`."""

    async def main() -> None:
        genesis = make_genesis(3)
        config = PeerConfig(sync_interval=1.0, frame_timeout=2.0)
        async with (
            honest_pair(genesis, tmp_path, config) as peers,
            open_libp2p_transport(host_config(genesis, tmp_path / "slow", 2, boot_of(peers))) as slow,
        ):
            target = peers[0].transport.local_id
            with trio.fail_after(DEADLINE):
                await poll_until(lambda: target in slow.connected_peers())
                stream = await slow.open_stream(target, SYNC_PROTOCOL)
                await stream.write(encode_varint(1 << 20))
                closed = False
                for _ in range(DEADLINE * 4):  # a byte every 0.25 s, until the node hangs up
                    try:
                        await stream.write(b"\x00")
                    except Exception:
                        closed = True
                        break
                    await trio.sleep(0.25)
                assert closed
                await poll_until(lambda: peers[0].statistics().penalties.get("rate_limited", 0) >= 1)
            await still_syncing(peers, genesis)

    trio.run(main)

