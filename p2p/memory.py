"""An in-memory `Transport`: the same interface as the libp2p host, with no sockets.

For unit tests and the simulator. A `MemoryNetwork` holds the transports and the links between
them; ``async with network.open_transport(peer_id) as transport`` joins it.

Deterministic by construction: gossip is delivered synchronously inside ``publish`` (validate,
deliver, forward to the receiver's links, breadth first, in link order), so given the same
calls in the same order every node sees the same messages in the same order; there is no
randomness and no clock. Streams are `trio.testing.memory_stream_pair` pairs, so they run
under `trio.testing.MockClock` too.

Like GossipSub it validates before it delivers or forwards, drops a message it has seen (by
content), never delivers to or from a banned peer, and drops rather than blocks when a
subscriber's channel is full. ``drop`` is a hook for the simulator: a predicate
``(sender, receiver, data) -> bool`` that loses gossip on a link.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
import trio.testing

from p2p.errors import Banned, StreamClosed, TransportError
from p2p.transport import FaultHandler, GossipValidator, PeerId, Stream, StreamHandler, Subscription

SEEN_LIMIT = 65_536


class MemoryStream:
    def __init__(self, remote: PeerId, inner: trio.abc.Stream, on_close: Callable[[MemoryStream], None]) -> None:
        self.remote = remote
        self._inner = inner
        self._on_close = on_close

    async def read(self, max_bytes: int) -> bytes:
        try:
            return await self._inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamClosed(str(exc)) from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamClosed(str(exc)) from exc

    async def close(self) -> None:
        self._on_close(self)
        await self._inner.aclose()

    async def reset(self) -> None:
        await self.close()


class MemoryNetwork:
    def __init__(self, channel_size: int = 4096) -> None:
        self.channel_size = channel_size
        self.transports: dict[PeerId, MemoryTransport] = {}
        self.links: dict[PeerId, list[PeerId]] = {}
        self.drop: Callable[[PeerId, PeerId, bytes], bool] | None = None

    def connect(self, a: PeerId, b: PeerId) -> None:
        for x, y in ((a, b), (b, a)):
            links = self.links.setdefault(x, [])
            if y not in links:
                links.append(y)

    def disconnect(self, a: PeerId, b: PeerId) -> None:
        for x, y in ((a, b), (b, a)):
            if y in self.links.get(x, []):
                self.links[x].remove(y)
        for x, y in ((a, b), (b, a)):
            transport = self.transports.get(x)
            if transport is not None:
                transport._close_streams_with(y)

    def connect_all(self) -> None:
        ids = list(self.transports)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                self.connect(a, b)

    def linked(self, a: PeerId, b: PeerId) -> bool:
        return b in self.links.get(a, []) and a in self.transports and b in self.transports

    @asynccontextmanager
    async def open_transport(self, peer_id: PeerId, participant: bytes | None = None) -> AsyncIterator[MemoryTransport]:
        """Join the network as `peer_id`, speaking for `participant` if given (the in-memory
        counterpart of `p2p.admission`: the network vouches for the binding)."""
        if peer_id in self.transports:
            raise ValueError("peer id already on the network")
        async with trio.open_nursery() as nursery:
            transport = MemoryTransport(self, peer_id, nursery, participant)
            self.transports[peer_id] = transport
            try:
                yield transport
            finally:
                del self.transports[peer_id]
                for other in list(self.transports.values()):
                    other._close_streams_with(peer_id)
                transport._close_all()
                nursery.cancel_scope.cancel()

    def _gossip(self, origin: PeerId, topic: str, data: bytes) -> None:
        digest = hashlib.sha256(data).digest()
        queue: deque[tuple[PeerId, PeerId]] = deque([(origin, origin)])  # (forwarder, receiver)
        while queue:
            forwarder, receiver_id = queue.popleft()
            receiver = self.transports.get(receiver_id)
            if receiver is None or not receiver._accept(forwarder, origin, topic, data, digest):
                continue
            for neighbour in self.links.get(receiver_id, []):
                if neighbour == forwarder or not self.linked(receiver_id, neighbour):
                    continue
                if self.drop is not None and self.drop(receiver_id, neighbour, data):
                    continue
                queue.append((receiver_id, neighbour))


class MemoryTransport:
    def __init__(
        self, network: MemoryNetwork, local_id: PeerId, nursery: trio.Nursery, participant: bytes | None = None
    ) -> None:
        self.network = network
        self.local_id = local_id
        self.own_participant = participant
        self._nursery = nursery
        self._handlers: dict[str, StreamHandler] = {}
        self._topics: dict[str, tuple[GossipValidator, trio.MemorySendChannel[tuple[PeerId, bytes]]]] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._banned: set[PeerId] = set()
        self._streams: set[MemoryStream] = set()
        self.dropped_full = 0

    # -- gossip ------------------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        self.network._gossip(self.local_id, topic, bytes(data))
        await trio.lowlevel.checkpoint()

    async def subscribe(self, topic: str, validator: GossipValidator) -> Subscription:
        send, receive = trio.open_memory_channel[tuple[PeerId, bytes]](self.network.channel_size)
        self._topics[topic] = (validator, send)
        await trio.lowlevel.checkpoint()
        return receive

    def _accept(self, forwarder: PeerId, origin: PeerId, topic: str, data: bytes, digest: bytes) -> bool:
        """Validate and deliver one message; True if it should be forwarded."""
        if forwarder in self._banned or origin in self._banned or digest in self._seen:
            return False
        entry = self._topics.get(topic)
        if entry is None:
            return origin == self.local_id  # publishing without subscribing (fanout)
        validator, send = entry
        if not validator(forwarder, data):
            return False
        self._seen[digest] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        if origin != self.local_id:
            try:
                send.send_nowait((origin, data))
            except trio.WouldBlock:
                self.dropped_full += 1
        return True

    # -- streams ---------------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._handlers[protocol] = handler

    async def open_stream(self, peer: PeerId, protocol: str) -> Stream:
        await trio.lowlevel.checkpoint()
        if peer in self._banned:
            raise Banned("peer is banned")
        remote = self.network.transports.get(peer)
        if remote is None or not self.network.linked(self.local_id, peer):
            raise TransportError("peer is not reachable")
        if self.local_id in remote._banned:
            raise TransportError("peer refused the stream")
        handler = remote._handlers.get(protocol)
        if handler is None:
            raise TransportError(f"peer does not speak {protocol}")
        ours, theirs = trio.testing.memory_stream_pair()
        local = MemoryStream(peer, ours, self._streams.discard)
        far = MemoryStream(self.local_id, theirs, remote._streams.discard)
        self._streams.add(local)
        remote._streams.add(far)
        remote._nursery.start_soon(remote._serve, handler, far)
        return local

    async def _serve(self, handler: StreamHandler, stream: MemoryStream) -> None:
        try:
            await handler(stream)
        finally:
            with trio.CancelScope(shield=True):
                await stream.close()

    def connected_peers(self) -> list[PeerId]:
        return [
            peer
            for peer in self.network.links.get(self.local_id, [])
            if self.network.linked(self.local_id, peer) and peer not in self._banned
        ]

    async def ban(self, peer: PeerId) -> None:
        self._banned.add(peer)
        self._close_streams_with(peer)
        other = self.network.transports.get(peer)
        if other is not None:
            other._close_streams_with(self.local_id)
        await trio.lowlevel.checkpoint()

    def is_banned(self, peer: PeerId) -> bool:
        return peer in self._banned

    def participant(self, peer: PeerId) -> bytes | None:
        other = self.network.transports.get(peer)
        return None if other is None else other.own_participant

    def set_fault_handler(self, handler: FaultHandler) -> None:
        """Nothing below the `Peer` can be garbled in memory: no faults to report."""

    def _close_streams_with(self, peer: PeerId) -> None:
        for stream in [s for s in self._streams if s.remote == peer]:
            self._streams.discard(stream)
            self._nursery.start_soon(stream.close)

    def _close_all(self) -> None:
        for stream in list(self._streams):
            self._streams.discard(stream)
            self._nursery.start_soon(stream.close)
