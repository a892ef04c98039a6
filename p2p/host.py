"""The py-libp2p `Transport`: a host with Noise and yamux, GossipSub tuned for us, and streams.

``async with open_libp2p_transport(HostConfig(...)) as transport`` builds and runs it; pass the
transport to `p2p.peer.open_peer`. Everything below follows /work/shared/NOTES-libp2p.md
(py-libp2p 0.8.1, pinned):
- security is Noise only: the host gets a ``sec_opt`` with just Noise, so plaintext, secio and
  TLS are never offered or accepted (pitfall 1); the muxer is yamux only;
- the identity is an Ed25519 key kept in ``<data_dir>/p2p-identity.key`` (mode 0600, libp2p's
  `save_identity`/`load_identity`): the peer id is the same across restarts;
- GossipSub advertises only ``/meshsub/1.1.0`` (pitfall 4), degree 6/4/12, heartbeat 1 s, spam
  protection and adaptive gossip off (pitfall 2); message ids are content addressed (pitfall 7);
  pubsub signing is off by default (pitfall 6): every operation carries its own secp256k1
  signature, which the topic validator checks, and the forwarder is authenticated by Noise, so
  the two extra Ed25519 verifications per message buy nothing;
- the subscription channel and the per-peer RPC queue are enlarged from 32 (pitfall 3). These
  are module globals of libp2p, so this is process wide (set once, on import of this module);
- ``PY_YAMUX_RELEASE_ON_READ=0`` is set in the process environment on import, unless the
  environment already sets it (pitfall 5; yamux reads it at call time);
- bootstrap peers are dialled by our own loop, which calls ``swarm.unblock_peer`` before every
  redial (pitfall 9) and never dials a banned peer;
- on exit the host is closed before pubsub stops (pitfall 8), and a task trims the router's
  ``recent_message_deliveries`` (pitfall 10).

Bans: `Libp2pTransport.ban` blacklists the peer in pubsub (its messages are dropped before
validation and its pubsub stream is torn down), disconnects it, and refuses sync streams with
it from then on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair as create_ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import load_identity, save_identity
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub, get_content_addressed_msg_id
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from p2p.errors import Banned, StreamClosed, TransportError
from p2p.transport import GossipValidator, PeerId, Stream, StreamHandler, Subscription

log = logging.getLogger(__name__)

IDENTITY_FILE = "p2p-identity.key"
QUEUE_SIZE = 4096


class _LargeRpcQueue(RpcQueue):
    def __init__(self, max_size: int = QUEUE_SIZE, max_message_size: int = 1024 * 1024) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)


pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = QUEUE_SIZE
pubsub_module.RpcQueue = _LargeRpcQueue  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class HostConfig:
    data_dir: Path
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()  # multiaddrs ending in /p2p/<peer id>; our own is skipped
    dial_interval: float = 2.0
    dial_timeout: float = 10.0
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    gossip_window: int = 3  # heartbeats of message ids advertised in IHAVE
    gossip_history: int = 5  # heartbeats of messages kept (and replayed to new peers)
    pubsub_signing: bool = False
    delivery_history: int = 1024  # entries kept per topic in recent_message_deliveries


def load_or_create_identity(data_dir: Path) -> KeyPair:
    """The host key in ``data_dir``; created (and saved, mode 0600) on first use."""
    path = Path(data_dir) / IDENTITY_FILE
    if path.exists():
        return load_identity(path)
    key_pair = create_ed25519_key_pair()
    save_identity(key_pair, path)
    return key_pair


def peer_id_of(data_dir: Path) -> str:
    """The base58 peer id of the identity in ``data_dir`` (creating it if needed)."""
    return ID.from_pubkey(load_or_create_identity(data_dir).public_key).to_base58()


def bootstrap_from_genesis(genesis: Any) -> tuple[str, ...]:
    """The participants' bootstrap multiaddrs (a `crdt.genesis.Genesis`), empty ones skipped."""
    return tuple(p.bootstrap for p in genesis.participants if p.bootstrap)


class Libp2pStream:
    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.remote: PeerId = stream.muxed_conn.peer_id.to_bytes()

    async def read(self, max_bytes: int) -> bytes:
        try:
            data: bytes = await self._stream.read(max_bytes)
        except StreamEOF:
            return b""
        except Exception as exc:  # libp2p raises many unrelated types when a stream dies
            raise StreamClosed(f"{type(exc).__name__}: {exc}") from exc
        return data

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except Exception as exc:
            raise StreamClosed(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        try:
            await self._stream.close()
        except Exception as exc:
            log.debug("stream close: %s", exc)

    async def reset(self) -> None:
        try:
            await self._stream.reset()
        except Exception as exc:
            log.debug("stream reset: %s", exc)


class Libp2pTransport:
    def __init__(self, host: Any, pubsub: Pubsub, router: GossipSub, config: HostConfig) -> None:
        self.host = host
        self.pubsub = pubsub
        self.router = router
        self.config = config
        self.local_id: PeerId = host.get_id().to_bytes()
        self._banned: set[PeerId] = set()

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id().to_base58())

    def listen_addrs(self) -> list[str]:
        """Our listen multiaddrs with ``/p2p/<peer id>``, ready to be someone's bootstrap."""
        suffix = f"/p2p/{self.peer_id}"
        return [str(a) if str(a).endswith(suffix) else f"{a}{suffix}" for a in self.host.get_addrs()]

    # -- gossip ------------------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self.pubsub.publish(topic, data)
        except Exception as exc:
            raise TransportError(f"publish failed: {type(exc).__name__}: {exc}") from exc

    async def subscribe(self, topic: str, validator: GossipValidator) -> Subscription:
        def validate(forwarder: ID, message: Any) -> bool:
            return validator(forwarder.to_bytes(), message.data)

        self.pubsub.set_topic_validator(topic, validate, False)
        subscription = await self.pubsub.subscribe(topic)
        own = self.local_id

        async def messages() -> AsyncIterator[tuple[PeerId, bytes]]:
            async for message in subscription:
                origin = bytes(message.from_id)
                if origin != own:
                    yield origin, bytes(message.data)

        return messages()

    # -- streams -----------------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        async def handle(raw: Any) -> None:
            stream = Libp2pStream(raw)
            if stream.remote in self._banned:
                await stream.reset()
                return
            try:
                await handler(stream)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.close()

        self.host.set_stream_handler(TProtocol(protocol), handle)

    async def open_stream(self, peer: PeerId, protocol: str) -> Stream:
        if peer in self._banned:
            raise Banned("peer is banned")
        try:
            raw = await self.host.new_stream(ID(peer), [TProtocol(protocol)])
        except Exception as exc:
            raise TransportError(f"cannot open {protocol}: {type(exc).__name__}: {exc}") from exc
        return Libp2pStream(raw)

    def connected_peers(self) -> list[PeerId]:
        peers = [peer.to_bytes() for peer in self.host.get_connected_peers()]
        return [peer for peer in peers if peer not in self._banned]

    async def ban(self, peer: PeerId) -> None:
        self._banned.add(peer)
        peer_id = ID(peer)
        self.pubsub.add_to_blacklist(peer_id)
        try:
            await self.host.disconnect(peer_id)
        except Exception as exc:
            log.debug("disconnect of a banned peer: %s", exc)

    def is_banned(self, peer: PeerId) -> bool:
        return peer in self._banned

    # -- background ------------------------------------------------------------------------------

    async def _dial_bootstrap(self, addresses: Sequence[str]) -> None:
        infos = []
        for text in addresses:
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(text))
            except Exception as exc:
                log.warning("ignoring bad bootstrap address %r: %s", text, exc)
                continue
            if info.peer_id.to_bytes() != self.local_id:
                infos.append(info)
        swarm = self.host.get_network()
        while True:
            connected = set(self.host.get_connected_peers())
            for info in infos:
                if info.peer_id in connected or info.peer_id.to_bytes() in self._banned:
                    continue
                swarm.unblock_peer(info.peer_id)
                with trio.move_on_after(self.config.dial_timeout):
                    try:
                        await self.host.connect(info)
                    except Exception as exc:
                        log.debug("dial %s failed: %s", info.peer_id, exc)
            await trio.sleep(self.config.dial_interval)

    async def _trim(self) -> None:
        keep = self.config.delivery_history
        while True:
            await trio.sleep(5)
            for deliveries in self.router.recent_message_deliveries.values():
                del deliveries[:-keep]


@asynccontextmanager
async def open_libp2p_transport(config: HostConfig) -> AsyncIterator[Libp2pTransport]:
    key_pair = load_or_create_identity(config.data_dir)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    listen = [multiaddr.Multiaddr(a) for a in config.listen_addrs]
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=listen,
    )
    router = GossipSub(
        protocols=[PROTOCOL_ID_V11],
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_interval=config.heartbeat_interval,
        gossip_window=config.gossip_window,
        gossip_history=config.gossip_history,
        spam_protection_enabled=False,
        adaptive_gossip_enabled=False,
    )
    pubsub = Pubsub(
        host,
        router,
        msg_id_constructor=get_content_addressed_msg_id,
        strict_signing=config.pubsub_signing,
    )
    pubsub.counter = time.time_ns()
    async with host.run(listen_addrs=listen), background_trio_service(pubsub), background_trio_service(router):
        transport = Libp2pTransport(host, pubsub, router, config)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport._dial_bootstrap, config.bootstrap)
                nursery.start_soon(transport._trim)
                try:
                    yield transport
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await host.close()
