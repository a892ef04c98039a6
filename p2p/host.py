"""The py-libp2p `Transport`: a host with Noise and yamux, GossipSub tuned for us, admission of
participants only, and streams.

``async with open_libp2p_transport(HostConfig(...)) as transport`` builds and runs it; pass the
transport to `p2p.peer.open_peer`. Everything below follows /work/shared/NOTES-libp2p.md
(py-libp2p 0.8.1, pinned):
- security is Noise only: the host gets a ``sec_opt`` with just Noise, so plaintext, secio and
  TLS are never offered or accepted (pitfall 1); the muxer is yamux only;
- the identity is an Ed25519 key the caller passes in (`HostConfig.identity`; the node keeps
  it encrypted with its password, `p2p.identity`), so the peer id is the same across restarts;
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

Two faults of py-libp2p 0.8.1 that let one remote host end the whole node, and what we do:
- **Interleaved writes on one yamux stream.** `YamuxStream.write` takes its lock per 64 KiB
  frame, not per write, so two tasks writing one stream interleave their frames. Pubsub does
  exactly that: besides the per-peer sending task, ``send_recent_messages`` and
  ``flush_pending_messages`` write to the same stream directly. Any RPC over 64 KiB written
  while another is in flight reaches the peer as a correct length prefix followed by a mix of
  two messages. We serialise whole writes per stream (a trio lock around the original
  `write`, installed process wide on import).
- **Uncontained decode errors.** Pubsub's stream reader catches libp2p's own ``ParseError``
  but not protobuf's ``DecodeError``, which then escapes the connection's task group and ends
  the host: one garbled RPC (the interleaving above, or a hostile peer) crashed every node that
  read it. `_GuardedPubsub` contains every exception per stream (reset the stream, drop the
  peer from pubsub, report a fault to `on_fault`, which scores and bans), and per message
  (``push_msg`` runs in pubsub's service, where an exception would stop it). Our own stream
  handlers do the same. Oversized RPCs (over 1 MiB) are refused by libp2p before their body is
  read; that is reported as a fault too, and so is an RPC that has begun but is not complete
  within `PUBSUB_FRAME_SECONDS`.

Admission (`p2p.admission`): with a `HostConfig.admission`, every new connection runs the
``/parley/hello/1.0.0`` exchange of signed peer bindings. A peer that has not proved within
``hello_timeout`` that it speaks for a participant is disconnected; until it has, pubsub never
adds it (so it is never sent gossip), and streams of every other protocol are refused. At most
``max_unadmitted`` connections may be in the hello phase at once. Without an admission (tests
and benchmarks of the p2p layer only) every peer is admitted.

Bans: `Libp2pTransport.ban` bans the participant behind the peer (every peer id it was
admitted with), blacklists those ids in pubsub (their messages are dropped before validation
and their pubsub streams torn down), disconnects them, and refuses their streams and bindings
from then on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.abc import Reader
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
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
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream
from libp2p.tools.anyio_service import background_trio_service

from crdt.errors import InvalidInput
from p2p.admission import HELLO_PROTOCOL, MAX_BINDING_BYTES, Admission
from p2p.errors import Banned, MalformedMessage, OversizedMessage, RateLimited, StreamClosed, TransportError
from p2p.transport import FaultHandler, GossipValidator, PeerId, Stream, StreamHandler, Subscription, read_one_frame
from p2p.wire import WireLimits, encode_frame

log = logging.getLogger(__name__)

QUEUE_SIZE = 4096
MAX_RPC_BYTES = 1024 * 1024


class _LargeRpcQueue(RpcQueue):
    """The per-peer outbound RPC queue, enlarged, counting what it refuses (py-libp2p drops an
    RPC that meets a full queue with a DEBUG log line only)."""

    dropped = 0  # process wide: one node per process

    def __init__(self, max_size: int = QUEUE_SIZE, max_message_size: int = MAX_RPC_BYTES) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)

    def push(self, rpc: Any, priority: bool = False) -> bool:
        accepted: bool = super().push(rpc, priority)
        if not accepted and not self.closed:
            _LargeRpcQueue.dropped += 1
        return accepted


pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = QUEUE_SIZE
pubsub_module.RpcQueue = _LargeRpcQueue  # type: ignore[attr-defined]


# -- py-libp2p 0.8.1 workarounds (see the module docstring) -----------------------------------------

_yamux_write = YamuxStream.write


async def _write_whole(self: YamuxStream, data: bytes) -> None:
    lock: trio.Lock | None = self.__dict__.get("_parley_write_lock")
    if lock is None:
        lock = self.__dict__["_parley_write_lock"] = trio.Lock()
    async with lock:
        await _yamux_write(self, data)


YamuxStream.write = _write_whole  # type: ignore[method-assign]

_read_rpc = pubsub_module.read_varint_prefixed_bytes_limited  # type: ignore[attr-defined]
PUBSUB_FRAME_SECONDS = 30.0  # an RPC that has begun must be complete within this


class _FirstByteRead(Reader):
    """A stream whose first byte was read already (pubsub's frame reader reads the rest)."""

    def __init__(self, first: bytes, stream: Any) -> None:
        self._first, self._stream = first, stream

    async def read(self, n: int | None = None) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        data: bytes = await self._stream.read(n)
        return data


async def _read_rpc_noting_oversize(reader: Any, max_length: int) -> bytes:
    """Pubsub's frame reader with two additions: once an RPC's first byte is in, the rest must
    come within `PUBSUB_FRAME_SECONDS` (a peer trickling a byte at a time held the stream for
    as long as it liked), and a refused oversized RPC marks the stream (pubsub swallows
    `MessageTooLarge`; `_GuardedPubsub` reads the mark to report the peer)."""
    first = await reader.read(1)  # an idle stream waits here without a deadline
    if not first:
        raise IncompleteReadError("stream ended before an RPC", expected_bytes=1, received_bytes=0)
    try:
        with trio.fail_after(PUBSUB_FRAME_SECONDS):
            return await _read_rpc(_FirstByteRead(first, reader), max_length)
    except MessageTooLarge:
        reader.__dict__["_parley_oversized"] = True
        raise


pubsub_module.read_varint_prefixed_bytes_limited = _read_rpc_noting_oversize  # type: ignore[attr-defined]


class _GuardedPubsub(Pubsub):
    """Pubsub that admits only admitted peers and contains every error per stream and message."""

    transport: Libp2pTransport | None = None

    async def _handle_new_peer(self, peer_id: ID) -> None:
        transport = self.transport
        if transport is not None and not transport._is_admitted(peer_id):
            return  # registered once the hello exchange admits it (`Libp2pTransport._admitted`)
        await super()._handle_new_peer(peer_id)

    async def stream_handler(self, stream: Any) -> None:
        peer_id: ID = stream.muxed_conn.peer_id
        transport = self.transport
        if transport is not None and not await transport._wait_admitted(peer_id):
            await _reset_quietly(stream)
            return
        try:
            await self.continuously_read_stream(stream)
        except trio.TooSlowError:
            log.info("pubsub stream from %s: an RPC took longer than %.0f s", peer_id, PUBSUB_FRAME_SECONDS)
            await _reset_quietly(stream)
            self._handle_dead_peer(peer_id)
            self._fault(peer_id, RateLimited(f"a pubsub RPC took longer than {PUBSUB_FRAME_SECONDS:.0f} s"))
            return
        except Exception as exc:  # protobuf's DecodeError above all; nothing may reach the host
            log.info("pubsub stream from %s failed: %s: %s", peer_id, type(exc).__name__, exc)
            await _reset_quietly(stream)
            self._handle_dead_peer(peer_id)
            self._fault(peer_id, MalformedMessage(f"pubsub RPC: {type(exc).__name__}: {exc}"))
            return
        if stream.__dict__.get("_parley_oversized"):
            self._fault(peer_id, OversizedMessage(f"pubsub RPC over {self.max_inbound_rpc_size} bytes"))

    async def push_msg(self, msg_forwarder: ID, msg: Any) -> None:
        # every message that came in, duplicates included (the seen cache drops those after
        # this): what gossip relaying costs on the wire, beside what it delivers
        wire = self.__dict__.setdefault("wire_received", {})
        topic = msg.topicIDs[0] if msg.topicIDs else ""
        count, size = wire.get(topic, (0, 0))
        wire[topic] = (count + 1, size + len(msg.data))
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            log.warning("pubsub message from %s failed: %s: %s", msg_forwarder, type(exc).__name__, exc)

    streams_lost = 0  # pubsub streams to a peer that died (the peer may still be connected)
    rpcs_lost = 0  # RPCs queued to those streams, never sent

    def _handle_dead_peer(self, peer_id: ID) -> None:
        if peer_id in self.peers:
            queue = self.peer_queues.get(peer_id)
            lost = len(queue) if queue is not None else 0
            self.streams_lost += 1
            self.rpcs_lost += lost
            log.info("pubsub stream with %s lost, %d queued RPCs with it", peer_id, lost)
        super()._handle_dead_peer(peer_id)

    def _fault(self, peer_id: ID, error: InvalidInput) -> None:
        if self.transport is not None:
            self.transport._report(peer_id.to_bytes(), error)


async def _reset_quietly(stream: Any) -> None:
    try:
        await stream.reset()
    except Exception as exc:
        log.debug("stream reset: %s", exc)


# -- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostConfig:
    identity: KeyPair
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()  # multiaddrs ending in /p2p/<peer id>; our own is skipped
    admission: Admission | None = None  # None: every peer is admitted (p2p tests and benchmarks)
    hello_timeout: float = 10.0  # a new connection must prove its participant within this
    max_unadmitted: int = 64  # connections in the hello phase at once; more are dropped
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


def bootstrap_from_genesis(genesis: Any) -> tuple[str, ...]:
    """The participants' bootstrap multiaddrs (a `crdt.genesis.Genesis`), empty ones skipped."""
    return tuple(p.bootstrap for p in genesis.participants if p.bootstrap)


_HELLO_LIMITS = WireLimits(max_frame_bytes=MAX_BINDING_BYTES)


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
        await _reset_quietly(self._stream)


class _ConnectionWatcher(INotifee):
    """Tells the transport about new connections (never blocks the swarm)."""

    def __init__(self, send: trio.MemorySendChannel[ID]) -> None:
        self.send = send

    async def connected(self, network: Any, conn: Any) -> None:
        try:
            self.send.send_nowait(conn.muxed_conn.peer_id)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("too many new connections at once; this one is not greeted")

    async def disconnected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()


class Libp2pTransport:
    def __init__(self, host: Any, pubsub: _GuardedPubsub, router: GossipSub, config: HostConfig) -> None:
        self.host = host
        self.pubsub = pubsub
        self.router = router
        self.config = config
        self.admission = config.admission
        self.local_id: PeerId = host.get_id().to_bytes()
        self._banned: set[PeerId] = set()
        self._admitted_events: dict[PeerId, trio.Event] = {}
        self._greeting: set[PeerId] = set()
        self._on_fault: FaultHandler | None = None
        self._nursery: trio.Nursery | None = None
        pubsub.transport = self

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id().to_base58())

    def listen_addrs(self) -> list[str]:
        """Our listen multiaddrs with ``/p2p/<peer id>``, ready to be someone's bootstrap."""
        suffix = f"/p2p/{self.peer_id}"
        return [str(a) if str(a).endswith(suffix) else f"{a}{suffix}" for a in self.host.get_addrs()]

    def set_fault_handler(self, handler: FaultHandler) -> None:
        self._on_fault = handler

    def participant(self, peer: PeerId) -> bytes | None:
        return None if self.admission is None else self.admission.participant(peer)

    # -- admission ---------------------------------------------------------------------------------

    def _is_admitted(self, peer_id: ID) -> bool:
        peer = peer_id.to_bytes()
        if peer in self._banned:
            return False
        return self.admission is None or self.admission.participant(peer) is not None

    async def _wait_admitted(self, peer_id: ID) -> bool:
        """Until the peer is admitted (True) or the hello timeout passes (False)."""
        if self._is_admitted(peer_id):
            return True
        if peer_id.to_bytes() in self._banned:
            return False
        event = self._admitted_events.setdefault(peer_id.to_bytes(), trio.Event())
        with trio.move_on_after(self.config.hello_timeout):
            await event.wait()
        return self._is_admitted(peer_id)

    def _admitted(self, peer: PeerId) -> None:
        event = self._admitted_events.pop(peer, None)
        if event is not None:
            event.set()
        pubsub = self.pubsub
        if pubsub.manager.is_running and ID(peer) not in pubsub.peers:
            pubsub.manager.run_task(pubsub._handle_new_peer_with_retry, ID(peer))

    async def _greet_new_connections(self, connections: trio.MemoryReceiveChannel[ID]) -> None:
        async for peer_id in connections:
            peer = peer_id.to_bytes()
            if peer in self._banned:
                self._start(self._disconnect, peer)
            elif self.admission is not None and peer not in self._greeting:
                if len(self._greeting) >= self.config.max_unadmitted:
                    log.info("%d connections are proving themselves already; dropping one more", len(self._greeting))
                    self._start(self._disconnect, peer)
                    continue
                self._greeting.add(peer)
                self._start(self._greet, peer)

    async def _greet(self, peer: PeerId) -> None:
        """Send our binding, read theirs; disconnect a peer that does not prove itself."""
        try:
            with trio.move_on_after(self.config.hello_timeout):
                try:
                    raw = await self.host.new_stream(ID(peer), [TProtocol(HELLO_PROTOCOL)])
                except Exception as exc:
                    log.debug("hello to %s: %s", peer.hex()[-12:], exc)
                else:
                    stream = Libp2pStream(raw)
                    try:
                        await self._exchange(stream, first=True)
                    finally:
                        await stream.close()
            if not self._is_admitted(ID(peer)) and not await self._wait_admitted(ID(peer)):
                log.info("peer %s did not prove a participant within %.0f s", peer.hex()[-12:],
                         self.config.hello_timeout)
                await self._disconnect(peer)
        finally:
            self._greeting.discard(peer)

    async def _hello_handler(self, raw: Any) -> None:
        """The one stream handler that serves peers not admitted yet."""
        stream = Libp2pStream(raw)
        try:
            if stream.remote not in self._banned:
                await self._exchange(stream, first=False)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.close()

    async def _exchange(self, stream: Libp2pStream, *, first: bool) -> None:
        admission = self.admission
        if admission is None:
            return
        own = encode_frame(admission.own.encode(), _HELLO_LIMITS)
        try:
            if first:
                await stream.write(own)
            data = await read_one_frame(stream, MAX_BINDING_BYTES, self.config.hello_timeout)
            admission.admit(data, stream.remote)
            if not first:
                await stream.write(own)
        except (StreamClosed, TransportError) as exc:
            log.debug("hello with %s: %s", stream.remote.hex()[-12:], exc)
            return
        except InvalidInput as exc:
            log.info("peer %s refused: %s: %s", stream.remote.hex()[-12:], exc.code, exc)
            self._report(stream.remote, exc)
            await stream.reset()
            self._start(self._disconnect, stream.remote)
            return
        self._admitted(stream.remote)

    # -- faults --------------------------------------------------------------------------------------

    def _report(self, peer: PeerId, error: InvalidInput) -> None:
        if self._on_fault is not None and peer != self.local_id:
            self._on_fault(peer, error)

    def _start(self, function: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(function, *args)

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
            if stream.remote in self._banned or not await self._wait_admitted(ID(stream.remote)):
                await stream.reset()
                return
            try:
                await handler(stream)
            except Exception as exc:  # a bug in a handler must not end the host; the peer is not blamed
                log.exception("handler of %s failed: %s", protocol, exc)
                await stream.reset()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.close()

        self.host.set_stream_handler(TProtocol(protocol), handle)

    async def open_stream(self, peer: PeerId, protocol: str) -> Stream:
        if peer in self._banned:
            raise Banned("peer is banned")
        if not self._is_admitted(ID(peer)):
            raise TransportError("peer has not proved which participant it is")
        try:
            raw = await self.host.new_stream(ID(peer), [TProtocol(protocol)])
        except Exception as exc:
            raise TransportError(f"cannot open {protocol}: {type(exc).__name__}: {exc}") from exc
        return Libp2pStream(raw)

    def connected_peers(self) -> list[PeerId]:
        peers = [peer.to_bytes() for peer in self.host.get_connected_peers()]
        return [peer for peer in peers if self._is_admitted(ID(peer))]

    def gossip_health(self) -> dict[str, Any]:
        """What GossipSub holds, to tell a broken overlay from a quiet one: connections and
        pubsub streams per connected peer, per topic the peers known to be subscribed and the
        mesh, and the RPCs refused by full per-peer queues since the process began."""
        swarm = self.host.get_network()
        pubsub, router = self.pubsub, self.router
        peers = {}
        for peer_id in self.host.get_connected_peers():
            queue = pubsub.peer_queues.get(peer_id)
            peers[str(peer_id)] = {
                "connections": len(swarm.get_connections(peer_id)),
                "pubsub_stream": peer_id in pubsub.peers,
                "queued": len(queue) if queue is not None else None,
            }
        topics = {
            topic: {
                "subscribed": len(pubsub.peer_topics.get(topic, ())),
                "mesh": len(router.mesh.get(topic, ())),
            }
            for topic in sorted(pubsub.topic_ids)
        }
        received = {topic: {"messages": count, "bytes": size}
                    for topic, (count, size) in sorted(pubsub.__dict__.get("wire_received", {}).items())}
        return {"peers": peers, "topics": topics, "rpc_dropped": _LargeRpcQueue.dropped,
                "streams_lost": pubsub.streams_lost, "rpcs_lost": pubsub.rpcs_lost, "received": received}

    async def ban(self, peer: PeerId) -> None:
        peers = [peer] if self.admission is None else self.admission.ban(peer)
        for each in {peer, *peers}:
            self._banned.add(each)
            self.pubsub.add_to_blacklist(ID(each))
            await self._disconnect(each)

    def is_banned(self, peer: PeerId) -> bool:
        return peer in self._banned

    async def _disconnect(self, peer: PeerId) -> None:
        if self.admission is not None:
            self.admission.forget(peer)
        try:
            await self.host.disconnect(ID(peer))
        except Exception as exc:
            log.debug("disconnect of %s: %s", peer.hex()[-12:], exc)

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
    key_pair = config.identity
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
    pubsub = _GuardedPubsub(
        host,
        router,
        msg_id_constructor=get_content_addressed_msg_id,
        strict_signing=config.pubsub_signing,
        max_inbound_rpc_size=MAX_RPC_BYTES,
    )
    pubsub.counter = time.time_ns()
    transport = Libp2pTransport(host, pubsub, router, config)
    new_connections, connections = trio.open_memory_channel[ID](config.max_unadmitted)
    host.get_network().register_notifee(_ConnectionWatcher(new_connections))
    host.set_stream_handler(TProtocol(HELLO_PROTOCOL), transport._hello_handler)
    async with host.run(listen_addrs=listen), background_trio_service(pubsub), background_trio_service(router):
        try:
            async with trio.open_nursery() as nursery:
                transport._nursery = nursery
                nursery.start_soon(transport._greet_new_connections, connections)
                nursery.start_soon(transport._dial_bootstrap, config.bootstrap)
                nursery.start_soon(transport._trim)
                try:
                    yield transport
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await host.close()
