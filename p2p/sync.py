"""The sync (anti-entropy) protocol as a pure state machine: messages in, messages out.

One `SyncSession` per peer and stream. It never does I/O and never reads a clock: the driver
feeds it the local view of the hash graph (`GraphView`), each decoded message from the peer,
and the events it observes (``start``, a periodic ``tick``, ``need`` for parent ids that gossip
showed to be missing), and writes whatever messages come back. Operations the peer sends are
returned as raw bytes in `Step.deliver`; the driver decodes, verifies and applies them, then
calls `after_delivery`. So the same code runs over libp2p, over the in-memory transport and in
the simulator, and a test can run two sessions to quiescence with no network at all.

The exchange:
- ``Status`` (version vector + heads) is sent at start, on every tick, and after applying an
  ``Ops`` message marked ``more``.
- On a peer's ``Status`` we push what its vector lacks (`GraphView.missing_for`), parents first,
  (on a periodic Status, only what it lacked already at its previous one: gossip is given one
  round to deliver recent operations, so a gossip loss is repaired within two rounds)
  at most ``max_push_ops`` per answer, in ``Ops`` frames of at most ``max_ops_bytes``; the last
  frame says ``more`` if we stopped at the bound, and the peer's next ``Status`` pulls the next
  chunk. So catch-up after downtime streams in bounded steps, paced by the receiver.
- Heads of the peer that we do not know, and parents that our pending buffer waits for, are
  requested by id with ``Want`` (at most ``max_want`` ids a message, at most
  ``max_inflight_wants`` outstanding). A ``Want`` is answered with the operations we hold.
  Fetching by id is what repairs what version vectors cannot describe (equivocation forks).
- Ids come from two places. The driver's `need` (and `after_delivery`, and the peer's heads)
  queue them in ``wanted``, first come first asked. And at ``start`` and on each ``tick`` the
  session takes the next share of the pending buffer's missing parents from
  `GraphView.missing_parents`: at most what the free in-flight budget holds (at least half of
  it, the rest going first to ``wanted``), one author at a time, continuing per author after
  the last id it took (``rotation``). So a Byzantine author that makes us wait for thousands
  of ids that do not exist gets one author's turn of every round, the honest authors' gaps
  are asked for in every round, and an id nobody answers is asked again only when the
  rotation comes back to it. A tick never sorts or scans the whole missing set.
- On a tick, a Want that went unanswered is forgotten if it is a missing parent (the rotation
  asks for it again in its turn), else queued again at most ``max_want_retries`` times (a cut
  head the driver asked for, a peer's head), so nothing is asked for forever.

Invariants:
- every answer is bounded: an ``Ops`` frame never exceeds the wire limits, a Status answer never
  pushes more than ``max_push_ops``, a Want answer never more than the ids asked;
- the session's memory is bounded: ``requested`` by ``max_inflight_wants``, ``wanted`` by
  ``max_wanted``, ``rotation`` by the number of authors;
- a ``start`` or ``tick`` costs O(``max_inflight_wants`` + authors) view calls, whatever the
  number of missing parents;
- a message is produced only in answer to a message or an event, and answers to messages only
  shrink the difference between the two graphs, so two sessions joined back to back reach
  quiescence, and then both graphs hold the same accepted operations (`tests/p2p/test_sync.py`).

``assumed`` is our belief of the peer's vector: its last report raised by what we pushed since.
It avoids pushing the same operations twice when a Status crosses our push; a tick resets it to
the last report, so a push that got lost is repeated on the next tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from crdt.graph import HashGraph
from crdt.ops import SignedOp
from crdt.types import Address, OpId
from p2p.errors import UnexpectedMessage
from p2p.wire import DEFAULT_WIRE_LIMITS, Message, Ops, Status, Want, WireLimits, make_status, make_want


class GraphView(Protocol):
    """What the sync protocol reads from the local replica."""

    def version_vector(self) -> Mapping[bytes, int]: ...

    def heads(self) -> Iterable[bytes]: ...

    def knows(self, op_id: bytes) -> bool:
        """Accepted, or waiting in the pending buffer."""
        ...

    def missing_parents(self, limit: int, after: Mapping[bytes, bytes] | None = None) -> Sequence[tuple[bytes, bytes]]:
        """Up to `limit` distinct (author, id) pairs: parent ids that pending operations of that
        author wait for and that are neither accepted nor pending, one author at a time in
        turn, each author's ids continuing after ``after[author]`` (wrapping around)."""
        ...

    def is_missing_parent(self, op_id: bytes) -> bool:
        """Whether pending operations wait for `op_id` and it is neither accepted nor pending."""
        ...

    def ops_by_id(self, ids: Iterable[bytes]) -> list[SignedOp]:
        """The accepted operations among `ids`, parents first."""
        ...

    def missing_for(
        self, vector: Mapping[bytes, int], limit: int, upto: Mapping[bytes, int] | None = None
    ) -> list[SignedOp]:
        """Up to `limit` accepted operations above `vector` (and, if given, at most `upto`),
        parents first."""
        ...


class HashGraphView:
    """`GraphView` over a `crdt.graph.HashGraph` (reads only)."""

    def __init__(self, graph: HashGraph) -> None:
        self.graph = graph

    def version_vector(self) -> Mapping[bytes, int]:
        return cast(Mapping[bytes, int], self.graph.version_vector)

    def heads(self) -> Iterable[bytes]:
        return self.graph.heads

    def knows(self, op_id: bytes) -> bool:
        return op_id in self.graph.pending or self.graph.known(OpId(op_id))

    def missing_parents(self, limit: int, after: Mapping[bytes, bytes] | None = None) -> Sequence[tuple[bytes, bytes]]:
        return self.graph.pending.missing_round_robin(limit, cast(Mapping[Address, OpId] | None, after))

    def is_missing_parent(self, op_id: bytes) -> bool:
        return self.graph.pending.is_missing(op_id)

    def ops_by_id(self, ids: Iterable[bytes]) -> list[SignedOp]:
        graph = self.graph
        found = [op for i in ids if (op := graph.get(OpId(i))) is not None]
        found.sort(key=lambda op: (graph.height_of(op.op_id), op.op_id))
        return found

    def missing_for(
        self, vector: Mapping[bytes, int], limit: int, upto: Mapping[bytes, int] | None = None
    ) -> list[SignedOp]:
        # Walks only the sequence numbers above the vector (HashGraph.missing_for scans every
        # chain), then sorts by the tentative key, which puts parents first. What compaction
        # pruned comes from the archive, in one read per author a peer lags on.
        graph = self.graph
        height, ops = graph.height, graph.ops
        found: list[tuple[int, OpId, SignedOp]] = []
        for author, top in graph.version_vector.items():
            if upto is not None:
                top = min(top, upto.get(author, 0))
            have = vector.get(author, 0)
            if top > have:
                pruned = graph.pruned_seq.get(author, 0)
                if have < pruned and graph.archive is not None:
                    archived = graph.archive.since(author, have)
                    found += [(r.height, r.op.op_id, r.op) for r in archived if r.op.seq <= top]
                chain = graph.chains[author]
                for seq in range(max(have, pruned) + 1, top + 1):
                    found += [(height[op_id], op_id, ops[op_id]) for op_id in chain.get(seq, ())]
        found.sort(key=lambda entry: (entry[0], entry[1]))
        return [entry[2] for entry in found[:limit]]


@dataclass(frozen=True, slots=True)
class SyncConfig:
    max_push_ops: int = 4096
    max_ops_bytes: int = 256 * 1024
    max_inflight_wants: int = 2048
    max_wanted: int = 65_536
    max_want_retries: int = 8  # ticks an unanswered id that is not a missing parent is asked again
    limits: WireLimits = DEFAULT_WIRE_LIMITS

    def __post_init__(self) -> None:
        if self.max_ops_bytes + 9 * self.limits.max_ops_per_message + 16 > self.limits.max_frame_bytes:
            raise ValueError("max_ops_bytes does not fit in a frame")


@dataclass(slots=True)
class Step:
    """The result of one input: messages to send, raw operations to decode and apply."""

    send: list[Message] = field(default_factory=list)
    deliver: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncStatistics:
    statuses_received: int
    ops_pushed: int
    ops_received: int
    wants_sent: int
    pushes_deferred: int
    requested: int
    wanted: int


class SyncSession:
    def __init__(self, channel: bytes, config: SyncConfig | None = None) -> None:
        self.channel = bytes(channel)
        self.config = config or SyncConfig()
        self.peer_vector: dict[bytes, int] = {}
        self.assumed: dict[bytes, int] = {}
        self.requested: dict[bytes, int] = {}  # id -> times it was asked before, in the order asked
        self.wanted: dict[bytes, int] = {}  # the same, first come first asked
        self.rotation: dict[bytes, bytes] = {}  # author -> the last of its missing parents we asked for
        self._status_due = False
        self._continuing = False  # we answered the last Status with ``more``
        self._ours_at_last_status: dict[bytes, int] | None = None
        self._statuses_received = 0
        self._ops_pushed = 0
        self._ops_received = 0
        self._wants_sent = 0
        self._pushes_deferred = 0

    # -- events from the driver ------------------------------------------------------------------

    def start(self, view: GraphView) -> list[Message]:
        return [self.status(view), *self._ask(view)]

    def tick(self, view: GraphView) -> list[Message]:
        """The periodic round: forget assumptions, retry or forget unanswered wants, announce
        our status, and ask for the next share of the missing parents."""
        self.assumed = dict(self.peer_vector)
        wanted = self.wanted
        retries = self.config.max_want_retries
        for op_id, tries in self.requested.items():  # in the order asked: the same inputs give the same messages
            if view.knows(op_id) or view.is_missing_parent(op_id):
                continue  # answered, or the rotation asks for it again in its turn
            if tries < retries and op_id not in wanted and len(wanted) < self.config.max_wanted:
                wanted[op_id] = tries + 1
        self.requested.clear()
        return [self.status(view), *self._ask(view)]

    def need(self, view: GraphView, ids: Iterable[bytes]) -> list[Message]:
        """Ask for these ids (unknown parents), unless already asked or known."""
        wanted = self.wanted
        for op_id in ids:
            if len(wanted) >= self.config.max_wanted:
                break
            if op_id not in self.requested and op_id not in wanted and not view.knows(op_id):
                wanted[op_id] = 0
        return self._flush_wants(view)

    def after_delivery(self, view: GraphView, missing: Iterable[bytes] = ()) -> list[Message]:
        """Call after applying a `Step.deliver`, with the parent ids still missing."""
        self.requested = {op_id: tries for op_id, tries in self.requested.items() if not view.knows(op_id)}
        out = self.need(view, missing)
        if self._status_due:
            self._status_due = False
            out.insert(0, self.status(view))
        return out

    def status(self, view: GraphView) -> Status:
        return make_status(self.channel, dict(view.version_vector()), view.heads())

    # -- messages from the peer --------------------------------------------------------------------

    def receive(self, view: GraphView, message: Message, *, congested: bool = False) -> Step:
        """`congested`: what we sent before has not left yet (the driver's writer is behind), so
        a Status is answered with no push: the peer's report is noted, and the next Status
        after the queue drained gets what the peer still lacks then. Pushing into a full queue
        only adds operations the peer will have from gossip or another peer by the time these
        arrive, and delays everything queued behind them."""
        if isinstance(message, Status):
            return self._on_status(view, message, congested)
        if isinstance(message, Want):
            return Step(send=self._pack(view.ops_by_id(message.ids), more=False))
        if isinstance(message, Ops):
            self._ops_received += len(message.ops)
            if message.more:
                self._status_due = True
            return Step(deliver=message.ops)
        raise TypeError(f"not a message: {message!r}")

    def _on_status(self, view: GraphView, message: Status, congested: bool = False) -> Step:
        if message.channel != self.channel:
            raise UnexpectedMessage(f"status for channel 0x{message.channel.hex()}")
        self._statuses_received += 1
        reported = message.vector()
        self.peer_vector = reported
        assumed = self.assumed
        for author, seq in reported.items():
            if seq > assumed.get(author, 0):
                assumed[author] = seq
        if congested:
            self._pushes_deferred += 1
            return Step(send=self.need(view, message.heads))
        limit = self.config.max_push_ops
        ours = dict(view.version_vector())
        # The first Status of a session (start-up catch-up) and the ones that pull the next
        # chunk get everything the peer lacks. A periodic Status gets only what it already
        # lacked at its previous Status: newer operations are most likely still in flight by
        # gossip, and pushing them too would send most operations twice under load.
        upto = None if self._continuing or self._ours_at_last_status is None else self._ours_at_last_status
        self._ours_at_last_status = ours
        push = view.missing_for(assumed, limit + 1, upto)
        more = len(push) > limit
        self._continuing = more
        del push[limit:]
        for op in push:
            if op.seq > assumed.get(op.author, 0):
                assumed[op.author] = op.seq
        send = self._pack(push, more)
        send.extend(self.need(view, message.heads))
        return Step(send=send)

    # -- helpers -------------------------------------------------------------------------------------

    def _pack(self, ops: list[SignedOp], more: bool) -> list[Message]:
        """Ops frames within the byte and count limits; the last carries `more`."""
        self._ops_pushed += len(ops)
        frames: list[Message] = []
        batch: list[bytes] = []
        size = 0
        max_bytes = self.config.max_ops_bytes
        max_count = self.config.limits.max_ops_per_message
        for op in ops:
            if batch and (size + len(op.raw) > max_bytes or len(batch) >= max_count):
                frames.append(Ops(tuple(batch), False))
                batch, size = [], 0
            batch.append(op.raw)
            size += len(op.raw)
        if batch or more:
            frames.append(Ops(tuple(batch), more))
        return frames

    def _ask(self, view: GraphView) -> list[Message]:
        """Take the next share of the missing parents (fair across authors) and ask."""
        room = self.config.max_inflight_wants - len(self.requested)
        if room <= 0:
            return []
        limit = room - min(len(self.wanted), room // 2)  # at least half for the rotation
        picked = view.missing_parents(limit, self.rotation)
        for author, op_id in picked:
            self.rotation[author] = op_id
        return self._flush_wants(view, [op_id for _, op_id in picked])

    def _flush_wants(self, view: GraphView, first: Sequence[bytes] = ()) -> list[Message]:
        """Ask for `first`, then for ``wanted`` in order, while the in-flight budget lasts."""
        out: list[Message] = []
        room = self.config.max_inflight_wants - len(self.requested)
        max_want = self.config.limits.max_want
        requested, wanted = self.requested, self.wanted
        batch: list[bytes] = []
        position = 0
        while room > 0:
            if position < len(first):
                op_id = first[position]
                position += 1
                tries = wanted.pop(op_id, 0)
            elif wanted:
                op_id = next(iter(wanted))
                tries = wanted.pop(op_id)
            else:
                break
            if op_id in requested or view.knows(op_id):
                continue
            requested[op_id] = tries
            batch.append(op_id)
            room -= 1
            if len(batch) >= max_want:
                self._wants_sent += 1
                out.append(make_want(batch))
                batch = []
        if batch:
            self._wants_sent += 1
            out.append(make_want(batch))
        return out

    def statistics(self) -> SyncStatistics:
        return SyncStatistics(
            statuses_received=self._statuses_received,
            ops_pushed=self._ops_pushed,
            ops_received=self._ops_received,
            wants_sent=self._wants_sent,
            pushes_deferred=self._pushes_deferred,
            requested=len(self.requested),
            wanted=len(self.wanted),
        )
