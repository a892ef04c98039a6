"""The interface between the p2p logic and a network: gossip topics and byte streams.

Two implementations share it: `p2p.host.Libp2pTransport` (py-libp2p: Noise, yamux, GossipSub)
and `p2p.memory.MemoryTransport` (in-process, deterministic; for unit tests and the simulator).
`p2p.peer.Peer` is written against this interface only, so the same gossip, sync, validation,
scoring and rate limiting run over either.

Contract every implementation keeps:
- peer ids are opaque ``bytes``, stable for a peer across restarts (libp2p: the peer id bytes);
- ``subscribe(topic, validator)`` installs the topic's one validator and returns an async
  iterable of ``(origin, data)`` for other peers' messages that passed it (never our own).
  The validator is synchronous and cheap, is called as ``validator(forwarder, data)`` for
  every message before it is delivered or forwarded (our own publishes included, with
  ``forwarder == local_id``), and a ``False`` means it is neither delivered nor forwarded;
- gossip is best effort (messages may be dropped or reordered); streams are reliable and
  ordered until they fail, and then raise `p2p.errors.StreamClosed`;
- after ``ban(peer)`` no stream to or from that peer is opened or kept, and its gossip is
  dropped before validation; where peers are bound to participants, the ban is the
  participant's, whatever peer id it comes back with;
- only admitted peers are reported by ``connected_peers``, get gossip, or get streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Protocol

import trio

from crdt.errors import InvalidInput
from p2p.errors import MalformedMessage
from p2p.wire import FrameDecoder

PeerId = bytes
GossipValidator = Callable[[PeerId, bytes], bool]
Subscription = AsyncIterable[tuple[PeerId, bytes]]


class Stream(Protocol):
    remote: PeerId

    async def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` bytes; ``b""`` at a clean end of stream. Raises `StreamClosed`."""
        ...

    async def write(self, data: bytes) -> None:
        """Raises `StreamClosed` if the stream is gone."""
        ...

    async def close(self) -> None: ...

    async def reset(self) -> None: ...


StreamHandler = Callable[[Stream], Awaitable[None]]
FaultHandler = Callable[[PeerId, InvalidInput], None]


class Transport(Protocol):
    local_id: PeerId

    async def publish(self, topic: str, data: bytes) -> None: ...

    async def subscribe(self, topic: str, validator: GossipValidator) -> Subscription: ...

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None: ...

    async def open_stream(self, peer: PeerId, protocol: str) -> Stream:
        """Raises `TransportError` if the peer cannot be reached or refuses."""
        ...

    def connected_peers(self) -> list[PeerId]: ...

    async def ban(self, peer: PeerId) -> None: ...

    def is_banned(self, peer: PeerId) -> bool: ...

    def participant(self, peer: PeerId) -> bytes | None:
        """The participant address this peer proved it speaks for; None where the transport
        does not bind peers to participants."""
        ...

    def set_fault_handler(self, handler: FaultHandler) -> None:
        """Report the peer faults the transport itself detects (garbled or oversized frames
        below the `Peer`, failed admission), so the caller can score and ban."""
        ...


async def read_one_frame(stream: Stream, max_bytes: int, within: float) -> bytes:
    """Exactly one length-prefixed frame (`p2p.wire`) of at most `max_bytes`, the last bytes of
    its stream's direction, within `within` seconds; raises `MalformedMessage` (or
    `StreamClosed`) otherwise. For the one-request protocols (hello, checkpoint catch-up)."""
    decoder = FrameDecoder(max_bytes)
    with trio.move_on_after(within):
        while True:
            data = await stream.read(max_bytes + 8)
            if not data:
                raise MalformedMessage("the stream ended before a whole frame")
            frames = decoder.feed(data)
            if frames:
                if len(frames) > 1 or not decoder.at_boundary():
                    raise MalformedMessage("one frame was expected")
                return frames[0]
    raise MalformedMessage(f"no whole frame within {within:.0f} s")
