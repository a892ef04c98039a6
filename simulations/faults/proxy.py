"""A userspace TCP fault proxy in trio, in front of each node's libp2p port.

Node j's proxy listens on j's public address (the genesis bootstrap), inside j's namespace, and
forwards every connection to the node's own listen address there. So every libp2p connection,
whoever dialled it, passes exactly one proxy, and the proxy knows both ends: the node it fronts,
and the dialler from the connection's source address (10.77.0.<i+1> is node i; on the loopback
stand-in the source is unknown, ``None``).

What it does to a direction of a connection (src -> dst), read from the shared `FaultTable` at
every chunk, so a fault starts and ends in the middle of a connection:
- **delay** (+ uniform **jitter**): each chunk is written ``delay + U(0, jitter)`` after it was
  read, never before an earlier chunk (the order of a TCP stream is kept);
- **rate**: a bandwidth cap in bytes per second (a throttled link);
- **stall**: nothing is written while it holds; the reader stops once ``BUFFER`` chunks wait, so
  the sender's TCP window closes as it would behind a black hole, and everything flows again,
  in order, when it ends.
Loss of single packets has no meaning above TCP (the kernel retransmits them); losing bytes of a
stream would only corrupt Noise and close the connection, which a cut link (`netns`) or a
killed node does more honestly. So there is no byte loss here, by design.

Invariants: the bytes that come out of a direction are exactly the bytes that went in, in
order (or the connection is closed on both sides); a proxy never outlives its nursery, and
closing it closes every connection it holds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from simulations.faults.netns import Topology, socket_in

CHUNK = 65536
BUFFER = 64  # chunks that may wait in one direction before the proxy stops reading it


@dataclass(frozen=True, slots=True)
class LinkFault:
    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds, uniform on top of delay
    rate: float = math.inf  # bytes per second
    stall: bool = False


NO_FAULT = LinkFault()


@dataclass
class FaultTable:
    """The faults in force, per direction (src, dst); ``None`` as src is any source (the loopback
    stand-in cannot tell who dialled). `changed` wakes stalled writers when an entry changes."""

    entries: dict[tuple[int | None, int | None], LinkFault] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)

    def get(self, src: int | None, dst: int | None) -> LinkFault:
        for key in ((src, dst), (None, dst), (src, None)):
            if key in self.entries:
                return self.entries[key]
        return NO_FAULT

    def set(self, directions: Iterable[tuple[int | None, int | None]], fault: LinkFault) -> None:
        for key in directions:
            self.entries[key] = fault
        self._wake()

    def clear(self, directions: Iterable[tuple[int | None, int | None]] | None = None) -> None:
        if directions is None:
            self.entries.clear()
        else:
            for key in directions:
                self.entries.pop(key, None)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@dataclass
class ProxyStatistics:
    connections: int = 0
    open: int = 0
    bytes_in: int = 0  # towards the node
    bytes_out: int = 0  # from the node
    upstream_failures: int = 0  # the node did not accept (killed, paused past the backlog)


class FaultProxy:
    """The proxy in front of one node (see the module docstring)."""

    def __init__(self, topology: Topology, node: int, table: FaultTable, rng: random.Random) -> None:
        self.topology, self.node, self.table, self.rng = topology, node, table, rng
        self.stats = ProxyStatistics()

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(**vars(self.stats))

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.from_stdlib_socket(socket_in(self.topology.namespace(self.node)))
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        await sock.bind(self.topology.public[self.node])
        sock.listen(128)
        listener = trio.SocketListener(sock)
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._connection, stream)

    async def _connection(self, remote: trio.SocketStream) -> None:
        host = remote.socket.getpeername()[0]
        src = self.topology.node_of(host)
        self.stats.connections += 1
        try:
            upstream_sock = trio.socket.from_stdlib_socket(socket_in(self.topology.namespace(self.node)))
            try:
                await upstream_sock.connect(self.topology.listen[self.node])
            except OSError:
                upstream_sock.close()
                self.stats.upstream_failures += 1
                await remote.aclose()
                return
            upstream = trio.SocketStream(upstream_sock)
            self.stats.open += 1
            try:
                async with remote, upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, remote, upstream, src, self.node, nursery.cancel_scope)
                    nursery.start_soon(self._direction, upstream, remote, self.node, src, nursery.cancel_scope)
            finally:
                self.stats.open -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _direction(self, source: trio.SocketStream, sink: trio.SocketStream, src: int | None,
                         dst: int | None, scope: trio.CancelScope) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](BUFFER)
        inward = dst == self.node

        async def read() -> None:
            async with send:
                while True:
                    try:
                        data = await source.receive_some(CHUNK)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        scope.cancel()
                        return
                    if not data:
                        return  # EOF: the writer ends the other side's writing half after the rest
                    fault = self.table.get(src, dst)
                    extra = fault.delay + (self.rng.uniform(0, fault.jitter) if fault.jitter else 0.0)
                    await send.send((trio.current_time() + extra, data))

        async def write() -> None:
            last = 0.0
            async with receive:
                async for due, data in receive:
                    while (fault := self.table.get(src, dst)).stall:
                        await self.table.changed.wait()
                    last = max(last, due)
                    await trio.sleep_until(last)
                    try:
                        await sink.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        scope.cancel()
                        return
                    if inward:
                        self.stats.bytes_in += len(data)
                    else:
                        self.stats.bytes_out += len(data)
                    if math.isfinite(fault.rate) and fault.rate > 0:
                        await trio.sleep(len(data) / fault.rate)
            try:
                await sink.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(write)


class ApiForwarder:
    """The node's local API, which listens on 127.0.0.1 inside its namespace, reachable from the
    harness's namespace at the same port on 127.0.0.1 (so the node's own ``api.json`` is right
    from outside, and partitions never cut the harness off its clients). No faults on this path."""

    def __init__(self, topology: Topology, node: int, port: int) -> None:
        self.topology, self.node, self.port = topology, node, port

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if self.topology.namespace(self.node) is None:
            task_status.started()  # loopback: the API is already here
            return
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._forward, listeners, handler_nursery=nursery)

    async def _forward(self, client: trio.SocketStream) -> None:
        sock = trio.socket.from_stdlib_socket(socket_in(self.topology.namespace(self.node)))
        try:
            await sock.connect(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            await client.aclose()
            return
        node = trio.SocketStream(sock)

        async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
            try:
                while data := await source.receive_some(CHUNK):
                    await sink.send_all(data)
                await sink.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                nursery.cancel_scope.cancel()

        async with client, node, trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, node)
            nursery.start_soon(pump, node, client)
