"""A networked replica: a `crdt.replica.Replica` kept in sync with its peers over a `Transport`.

``async with open_peer(replica, transport) as peer`` runs, in its own nursery:
- the gossip path: `Peer.submit` applies a local operation and queues it; a batcher publishes
  queued operations as one gossip message per batch (flushed when full, or ``flush_delay`` after
  its first operation), on the channel's topic. The topic validator checks each batch cheaply
  and synchronously (structure, sizes, signatures: `crdt.ops.decode_op`), so an invalid batch is
  never delivered or forwarded; its forwarder is scored down and, past the threshold, banned
  (disconnected and blacklisted). Valid batches are applied as decoded by the validator (a
  bounded cache keyed by content), so each operation is verified once;
- the sync path (`p2p.sync`): one long-lived ``/parley/sync/1.0.0`` stream per connected pair
  (the peer with the smaller id opens it), with length-prefixed frames; a session starts with a
  Status (the catch-up after downtime), ticks every ``sync_interval``, and is asked for parents
  that gossip showed missing (after ``gap_grace``, as gossip often brings them a moment later).
  Every frame is rate limited, bounded and decoded by `p2p.wire`; a peer whose bytes are bad
  is scored down and its stream reset; the node stays up.

Invariants:
- the replica is changed only on this trio thread, by `_ingest`, which calls ``persist``
  with the operations not yet known (the node's write-ahead hook: it may persist them, and if
  it says it could not, nothing is applied) and then `Replica.receive` for each, then
  ``announce`` with what was accepted;
- nothing a peer sends can raise out of this object: peer input errors become penalties, and
  transport errors end only the stream they happened on;
- a banned peer's pending operations are dropped from the pending buffer, no stream with it is
  kept, and its gossip is rejected before decoding.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from crdt.errors import BadSignature, InvalidInput
from crdt.graph import AddResult
from crdt.ops import SignedOp, decode_op
from crdt.replica import Replica
from crdt.types import OpId
from p2p.errors import NotPersisted, RateLimited, StreamClosed, TransportError
from p2p.policy import PeerScores, RateLimits, ScorePolicy, TokenBucket
from p2p.sync import HashGraphView, SyncConfig, SyncSession
from p2p.transport import PeerId, Stream, Subscription, Transport
from p2p.wire import (
    DEFAULT_WIRE_LIMITS,
    BatchBuilder,
    FrameDecoder,
    Message,
    WireLimits,
    decode_batch,
    decode_message,
    encode_frame,
    encode_message,
)

log = logging.getLogger(__name__)

SYNC_PROTOCOL = "/parley/sync/1.0.0"


def ops_topic(channel: bytes) -> str:
    """The gossip topic of a channel's operations."""
    return f"/parley/ops/{channel.hex()}"


@dataclass(frozen=True, slots=True)
class PeerConfig:
    sync_interval: float = 2.0  # seconds between Status rounds on each sync stream
    connect_interval: float = 0.25  # how often to look for connected peers without a session
    gap_grace: float = 0.05  # wait this long for gossip to fill a gap before asking by sync
    flush_delay: float = 0.002  # a gossip batch leaves at most this long after its first op
    read_chunk: int = 64 * 1024
    pending_generation: float = 1.0  # seconds per generation of the pending buffer (its expiry clock)
    frame_timeout: float = 30.0  # a sync frame that has begun must be complete within this
    idle_timeout: float = 60.0  # a sync stream that sends nothing for this long is closed
    validated_cache: int = 4096  # gossip batches decoded by the validator, awaiting delivery
    max_gaps: int = 65_536
    outbox_size: int = 65_536  # local operations queued for gossip before submit waits
    wire: WireLimits = DEFAULT_WIRE_LIMITS
    sync: SyncConfig = field(default_factory=SyncConfig)
    scores: ScorePolicy = field(default_factory=ScorePolicy)
    rates: RateLimits = field(default_factory=RateLimits)


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    operations: int
    pending: int
    gossip_batches_sent: int
    gossip_ops_sent: int
    gossip_batches_received: int
    gossip_ops_received: int
    gossip_bytes_received: int  # the payloads of the gossip messages delivered to us
    gossip_rejected: int
    sync_sessions: int
    sync_ops_received: int
    sync_messages_received: int
    sync_bytes_received: int  # what the sync streams brought, frames included
    sync_ticks_skipped: int  # rounds not sent because the stream had not sent the last one yet
    sync_streams_failed: int
    not_persisted: int
    pending_expired: int
    banned: tuple[PeerId, ...]
    penalties: dict[str, int]


Persist = Callable[[Sequence[SignedOp], PeerId], bool]  # False: could not persist
Announce = Callable[[Sequence[SignedOp]], None]
Expired = Callable[[Sequence[SignedOp]], None]  # operations dropped from the pending buffer


class _Session:
    """One running sync stream: the pure session, its outbox and its cancel scope.

    ``unsent`` counts the messages queued and not yet written. While it is not zero the
    stream is behind (the peer reads slower than we queue, or the connection is full), and
    the session adds nothing that can wait: a tick is skipped, and a Status is answered
    without a push (`SyncSession.receive`'s ``congested``). Without this, a loaded node's
    sync queues grew without bound: each tick queued another Status and another push of what
    the peer's stale report lacked, the same operations went out many times (ten sync copies
    of every operation in a soak run on a loaded machine), and the connection they shared
    with gossip was so full that checkpoint votes took seconds to cross it and consensus
    stalled (README, "Soak")."""

    def __init__(self, peer: PeerId, session: SyncSession) -> None:
        self.peer = peer
        self.session = session
        self.outbox_send, self.outbox = trio.open_memory_channel[Message](math.inf)
        self.scope = trio.CancelScope()
        self.unsent = 0

    @property
    def congested(self) -> bool:
        return self.unsent > 0

    def send(self, messages: Iterable[Message]) -> None:
        for message in messages:
            try:
                self.outbox_send.send_nowait(message)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            self.unsent += 1


class Peer:
    def __init__(
        self,
        replica: Replica,
        transport: Transport,
        nursery: trio.Nursery,
        config: PeerConfig | None = None,
        persist: Persist | None = None,
        announce: Announce | None = None,
        on_expired: Expired | None = None,
    ) -> None:
        self.replica = replica
        self.on_expired = on_expired
        self.transport = transport
        self.config = config or PeerConfig()
        self.persist = persist
        self.announce = announce
        self.local_id = transport.local_id
        self.channel = replica.ctx.channel
        self.topic = ops_topic(self.channel)
        self.view = HashGraphView(replica.graph)
        self.scores = PeerScores(self.config.scores)
        self._nursery = nursery
        self._sessions: dict[PeerId, _Session] = {}
        self._dialing: set[PeerId] = set()
        self._validated: OrderedDict[bytes, tuple[PeerId, list[SignedOp]]] = OrderedDict()
        self._gossip_buckets: dict[PeerId, TokenBucket] = {}
        self._gaps: dict[OpId, PeerId] = {}
        self._gap_event = trio.Event()
        self._changed = trio.Event()
        self._outbox_send, self._outbox = trio.open_memory_channel[bytes](self.config.outbox_size)
        self._counts = dict.fromkeys(
            (
                "gossip_batches_sent",
                "gossip_ops_sent",
                "gossip_batches_received",
                "gossip_ops_received",
                "gossip_bytes_received",
                "gossip_rejected",
                "sync_ops_received",
                "sync_messages_received",
                "sync_bytes_received",
                "sync_ticks_skipped",
                "sync_streams_failed",
                "not_persisted",
                "pending_expired",
            ),
            0,
        )

    # -- the API ---------------------------------------------------------------------------------

    async def submit(self, op: SignedOp) -> AddResult:
        """Apply a local operation and gossip it. Raises `InvalidInput` for a bad operation."""
        result = self._ingest([op], self.local_id, strict=True)
        if op.op_id in self.replica.graph.ops:
            await self._outbox_send.send(op.raw)
        return result

    async def submit_many(self, ops: Sequence[SignedOp]) -> AddResult:
        """`submit` for several operations; they are queued together, so they share batches."""
        result = self._ingest(ops, self.local_id, strict=True)
        for op in ops:
            if op.op_id in self.replica.graph.ops:
                try:
                    self._outbox_send.send_nowait(op.raw)
                except trio.WouldBlock:
                    await self._outbox_send.send(op.raw)
        await trio.lowlevel.checkpoint()
        return result

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever the replica changes."""
        while not predicate():
            await self._changed.wait()

    def sync_now(self) -> None:
        """Start a Status round on every sync stream now (e.g. after the node restored state)."""
        for handle in list(self._sessions.values()):
            handle.send(handle.session.tick(self.view))

    def request(self, op_ids: Iterable[OpId]) -> None:
        """Ask every sync peer for these operations by id (say, a checkpoint's cut we lack)."""
        self._note_gaps(op_ids, b"")

    def sessions(self) -> list[PeerId]:
        return list(self._sessions)

    def reported_seqs(self, author: bytes) -> dict[PeerId, int]:
        """For each sync peer that has sent us a Status, the highest seq of `author` it holds
        (what a node that lost its store learns its own last seq from)."""
        return {
            peer: handle.session.peer_vector.get(author, 0)
            for peer, handle in self._sessions.items()
            if handle.session.statistics().statuses_received
        }

    def statistics(self) -> PeerStatistics:
        return PeerStatistics(
            operations=len(self.replica.graph),
            pending=len(self.replica.graph.pending),
            sync_sessions=len(self._sessions),
            banned=tuple(sorted(self.scores.banned)),
            penalties=dict(self.scores.penalties),
            **self._counts,
        )

    # -- applying operations ------------------------------------------------------------------

    def _ingest(self, ops: Sequence[SignedOp], source: PeerId, strict: bool = False) -> AddResult:
        view = self.view
        fresh = [op for op in ops if not view.knows(op.op_id)]
        total = AddResult()
        missing: set[OpId] = set()
        if not fresh:
            return total
        if self.persist is not None and not self.persist(self._keepable(fresh, strict, source), source):
            # Write-ahead: what could not be stored is not applied. A peer's operations come
            # again by sync once the store works; our own caller is told.
            self._counts["not_persisted"] += len(fresh)
            if strict:
                raise NotPersisted("the write-ahead store refused the operations")
            return total
        if strict:
            for op in fresh:
                result = self.replica.receive(op, source)  # raises for the caller (a client)
                total.accepted.extend(result.accepted)
                total.rejected.extend(result.rejected)
                missing.update(result.missing)
        else:
            # One unwind of the tentative suffix for the whole batch. Refusals (BadSequence,
            # PendingFull) come back in ``rejected``: the author's fault or our buffer's, not
            # the forwarder's (honest peers relay whatever is well-formed and signed).
            total = self.replica.receive_many(fresh, source)
            missing.update(total.missing)
        total.missing = tuple(sorted(m for m in missing if not view.knows(m)))  # sorted: what we ask for
        if total.accepted:
            if self.announce is not None:
                self.announce(total.accepted)
            self._changed.set()
            self._changed = trio.Event()
        return total

    def _keepable(self, fresh: list[SignedOp], strict: bool, source: PeerId) -> list[SignedOp]:
        """What the write-ahead hook should store: not a peer's operation the pending buffer
        will refuse (else one Byzantine author could fill our disk with operations that name
        parents nobody has). Parents in the same batch count as known: batches come parents
        first, and an approximation here only stores one batch too much or too little."""
        pending = self.replica.graph.pending
        if strict or not pending:
            return fresh
        graph, batch = self.replica.graph, {op.op_id for op in fresh}
        ops = graph.ops
        keep = []
        for op in fresh:
            missing = {p for p in op.parents if p not in ops and p not in batch and not graph.known(p)}
            if not missing or pending.admits(op, missing, source):
                keep.append(op)
        return keep

    async def _expire_pending(self) -> None:
        """The pending buffer's clock: one generation a `pending_generation`; operations that
        waited too long for parents are dropped (their author is charged a fault)."""
        while True:
            await trio.sleep(self.config.pending_generation)
            expired = self.replica.graph.pending.advance()
            if expired:
                self._counts["pending_expired"] += len(expired)
                log.info("%d operations expired waiting for parents", len(expired))
                if self.on_expired is not None:
                    self.on_expired(expired)

    def _decode_ops(self, raws: Iterable[bytes]) -> list[SignedOp]:
        """Decode and verify; an operation we already hold (same bytes) skips the signature."""
        ctx = self.replica.ctx
        known = self.replica.graph.ops
        ops = []
        for raw in raws:
            op = decode_op(raw, ctx, verify=False)
            held = known.get(op.op_id)
            if (held is None or held.raw != raw) and ctx.recover(op.op_id, op.signature) != op.author:
                raise BadSignature(f"signature does not recover to the author 0x{op.author.hex()}")
            ops.append(op)
        return ops

    def _note_gaps(self, missing: Iterable[OpId], source: PeerId) -> None:
        """Remember ids to ask for, up to ``max_gaps``: the smallest first, whatever order (or
        set) they come in, so what is kept and asked for never depends on the hash seed."""
        for op_id in sorted(missing):
            if len(self._gaps) >= self.config.max_gaps:
                break
            self._gaps[op_id] = source
        self._gap_event.set()

    # -- penalties -------------------------------------------------------------------------------

    def penalize(self, peer: PeerId, error: InvalidInput) -> None:
        """Score `peer` down for invalid input it sent on another topic or protocol of this node
        (the consensus topic): one score per peer, so past the threshold it is banned from
        everything (disconnected and blacklisted), as for invalid operations."""
        self._penalize(peer, error)

    def is_banned(self, peer: PeerId) -> bool:
        return self.scores.is_banned(peer)

    def _penalize(self, peer: PeerId, error: InvalidInput) -> None:
        if peer == self.local_id:
            return
        log.info("peer %s sent invalid input: %s: %s", peer.hex()[-12:], error.code, error)
        if self.scores.penalize(peer, error.code, trio.current_time()):
            log.warning("banning peer %s", peer.hex()[-12:])
            self._nursery.start_soon(self._ban, peer)

    async def _ban(self, peer: PeerId) -> None:
        handle = self._sessions.pop(peer, None)
        if handle is not None:
            handle.scope.cancel()
        self.replica.graph.pending.drop_source(peer)
        try:
            await self.transport.ban(peer)
        except TransportError as exc:
            log.info("ban of %s: %s", peer.hex()[-12:], exc)

    # -- gossip ------------------------------------------------------------------------------------

    def _validate(self, forwarder: PeerId, data: bytes) -> bool:
        """The topic validator: synchronous, bounded, and it never raises."""
        if forwarder == self.local_id:
            return True
        if self.scores.is_banned(forwarder):
            return False
        try:
            bucket = self._gossip_buckets.get(forwarder)
            now = trio.current_time()
            if bucket is None:
                rates = self.config.rates
                bucket = self._gossip_buckets[forwarder] = TokenBucket(
                    rates.gossip_messages_per_second, rates.gossip_burst, now
                )
            if not bucket.take(1, now):
                raise RateLimited("gossip flood")
            ops = self._decode_ops(decode_batch(data, self.config.wire))
        except InvalidInput as exc:
            self._counts["gossip_rejected"] += 1
            self._penalize(forwarder, exc)
            return False
        except Exception:  # a bug must not let a batch through, nor kill pubsub's task
            log.exception("gossip validator failed")
            return False
        cache = self._validated
        cache[hashlib.sha256(data).digest()] = (forwarder, ops)
        while len(cache) > self.config.validated_cache:
            cache.popitem(last=False)
        return True

    async def _gossip_reader(self, subscription: Subscription) -> None:
        # The source of a batch is the peer that forwarded it to us (authenticated by Noise, and
        # remembered by the validator), not the message's origin field, which nobody signs.
        async for origin, data in subscription:
            validated = self._validated.pop(hashlib.sha256(data).digest(), None)
            if validated is None:  # fell out of the cache; validate again (never trust undecoded bytes)
                try:
                    validated = origin, self._decode_ops(decode_batch(data, self.config.wire))
                except InvalidInput:
                    continue
            source, ops = validated
            self._counts["gossip_batches_received"] += 1
            self._counts["gossip_ops_received"] += len(ops)
            self._counts["gossip_bytes_received"] += len(data)
            result = self._ingest(ops, source)
            if result.missing:
                self._note_gaps(result.missing, source)

    async def _batcher(self) -> None:
        builder = BatchBuilder(self.config.wire)
        outbox = self._outbox
        while True:
            first = await outbox.receive()
            full = builder.add(first)
            deadline = trio.current_time() + self.config.flush_delay
            while True:
                for batch in full:
                    await self._publish(batch)
                got: bytes | None = None
                try:
                    got = outbox.receive_nowait()
                except trio.WouldBlock:
                    with trio.move_on_at(deadline):
                        got = await outbox.receive()
                if got is None:
                    break
                full = builder.add(got)
            if len(builder):
                await self._publish(builder.flush())

    async def _publish(self, batch: bytes) -> None:
        self._counts["gossip_batches_sent"] += 1
        self._counts["gossip_ops_sent"] += len(decode_batch(batch, self.config.wire))
        try:
            await self.transport.publish(self.topic, batch)
        except TransportError as exc:  # gossip is best effort; sync repairs
            log.info("publish failed: %s", exc)

    # -- sync --------------------------------------------------------------------------------------

    async def _connector(self) -> None:
        while True:
            for peer in self.transport.connected_peers():
                if (
                    self.local_id < peer
                    and peer not in self._sessions
                    and peer not in self._dialing
                    and not self.scores.is_banned(peer)
                ):
                    self._dialing.add(peer)
                    self._nursery.start_soon(self._dial, peer)
            await trio.sleep(self.config.connect_interval)

    async def _dial(self, peer: PeerId) -> None:
        try:
            try:
                stream = await self.transport.open_stream(peer, SYNC_PROTOCOL)
            except TransportError as exc:
                log.debug("sync stream to %s failed: %s", peer.hex()[-12:], exc)
                return
        finally:
            self._dialing.discard(peer)
        await self._run_session(stream)

    async def _accept(self, stream: Stream) -> None:
        if self.scores.is_banned(stream.remote):
            await stream.reset()
            return
        await self._run_session(stream)

    async def _run_session(self, stream: Stream) -> None:
        peer = stream.remote
        handle = _Session(peer, SyncSession(self.channel, self.config.sync))
        old = self._sessions.get(peer)
        if old is not None:  # a newer stream replaces a stale one (e.g. the peer restarted)
            old.scope.cancel()
        self._sessions[peer] = handle
        try:
            with handle.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._session_writer, stream, handle, nursery.cancel_scope)
                    nursery.start_soon(self._session_ticker, handle)
                    handle.send(handle.session.start(self.view))
                    await self._session_reader(stream, handle)
                    nursery.cancel_scope.cancel()
        finally:
            if self._sessions.get(peer) is handle:
                del self._sessions[peer]
            handle.outbox_send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:  # the stream may already be gone; nothing to do
                    log.debug("stream reset failed", exc_info=True)

    async def _session_writer(self, stream: Stream, handle: _Session, scope: trio.CancelScope) -> None:
        limits = self.config.wire
        try:
            async for message in handle.outbox:
                await stream.write(encode_frame(encode_message(message), limits))
                handle.unsent -= 1
        except (StreamClosed, TransportError):
            self._counts["sync_streams_failed"] += 1
            scope.cancel()

    async def _session_ticker(self, handle: _Session) -> None:
        while True:
            await trio.sleep(self.config.sync_interval)
            if handle.congested:  # the last round has not left yet: this one would only queue behind it
                self._counts["sync_ticks_skipped"] += 1
                continue
            handle.send(handle.session.tick(self.view))

    async def _session_reader(self, stream: Stream, handle: _Session) -> None:
        peer = handle.peer
        rates = self.config.rates
        now = trio.current_time()
        byte_bucket = TokenBucket(rates.sync_bytes_per_second, rates.sync_bytes_burst, now)
        message_bucket = TokenBucket(rates.sync_messages_per_second, rates.sync_messages_burst, now)
        decoder = FrameDecoder(self.config.wire.max_frame_bytes)
        session = handle.session
        frame_due: float | None = None  # when the frame being received must be complete
        try:
            while True:
                idle_due = trio.current_time() + self.config.idle_timeout
                data = None
                with trio.move_on_at(idle_due if frame_due is None else min(frame_due, idle_due)):
                    try:
                        data = await stream.read(self.config.read_chunk)
                    except (StreamClosed, TransportError):
                        self._counts["sync_streams_failed"] += 1
                        return
                if data is None:
                    self._counts["sync_streams_failed"] += 1
                    if frame_due is not None:  # a frame trickled in too slowly: a slow-loris
                        raise RateLimited(f"a sync frame took longer than {self.config.frame_timeout:.0f} s")
                    return  # silent for longer than the idle timeout: the peer is gone
                if not data:
                    return
                now = trio.current_time()
                self._counts["sync_bytes_received"] += len(data)
                if not byte_bucket.take(len(data), now):
                    raise RateLimited("sync byte flood")
                for frame in decoder.feed(data):
                    self._counts["sync_messages_received"] += 1
                    if not message_bucket.take(1, now):
                        raise RateLimited("sync message flood")
                    step = session.receive(
                        self.view, decode_message(frame, self.config.wire), congested=handle.congested
                    )
                    handle.send(step.send)
                    if step.deliver:
                        ops = self._decode_ops(step.deliver)
                        self._counts["sync_ops_received"] += len(ops)
                        result = self._ingest(ops, peer)
                        handle.send(session.after_delivery(self.view, result.missing))
                if not decoder.at_boundary():
                    if frame_due is None:
                        frame_due = now + self.config.frame_timeout
                else:
                    frame_due = None
        except InvalidInput as exc:  # PeerInputError (wire) or a core error (an operation)
            self._penalize(peer, exc)
            self._counts["sync_streams_failed"] += 1

    async def _gap_filler(self) -> None:
        while True:
            await self._gap_event.wait()
            await trio.sleep(self.config.gap_grace)
            self._gap_event = trio.Event()
            gaps, self._gaps = self._gaps, {}
            by_source: dict[PeerId, list[OpId]] = {}
            for op_id, source in gaps.items():
                if not self.view.knows(op_id):
                    by_source.setdefault(source, []).append(op_id)
            for source, ids in by_source.items():
                handle = self._sessions.get(source)
                targets = [handle] if handle is not None else list(self._sessions.values())
                for target in targets:
                    target.send(target.session.need(self.view, sorted(ids)))

    async def _run(self, subscription: Subscription) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._gossip_reader, subscription)
            nursery.start_soon(self._batcher)
            nursery.start_soon(self._connector)
            nursery.start_soon(self._gap_filler)
            nursery.start_soon(self._expire_pending)


@asynccontextmanager
async def open_peer(
    replica: Replica,
    transport: Transport,
    config: PeerConfig | None = None,
    *,
    persist: Persist | None = None,
    announce: Announce | None = None,
    on_expired: Expired | None = None,
) -> AsyncIterator[Peer]:
    """Run a `Peer` over `transport` for the duration of the block."""
    async with trio.open_nursery() as nursery:
        peer = Peer(replica, transport, nursery, config, persist, announce, on_expired)
        transport.set_fault_handler(peer._penalize)
        transport.set_stream_handler(SYNC_PROTOCOL, peer._accept)
        subscription = await transport.subscribe(peer.topic, peer._validate)
        nursery.start_soon(peer._run, subscription)
        try:
            yield peer
        finally:
            nursery.cancel_scope.cancel()
