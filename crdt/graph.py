"""The hash graph: the set of accepted operations, as a DAG keyed by op id.

Invariants, each kept by `HashGraph.add`:
- every parent of an accepted operation is accepted (operations whose parents are missing wait
  in a bounded `PendingBuffer`, and are released when the last parent arrives);
- for an accepted operation with seq > 1, an operation of the same author with seq - 1 is in
  its causal past; so each author's accepted operations have the sequence numbers 1..max with
  no gap, and `version_vector` (author -> max seq) summarises the whole set except for forks;
- ``height = 1 + max(parent heights)`` (1 for no parents), so ``(height, op_id)`` is a
  topological order;
- an accepted operation is never removed. Merge is set union (`merge`), so it is commutative,
  associative and idempotent by construction: the accepted set after merging is the union of
  the sets, whatever the order, and `add` of a known operation changes nothing;
- two accepted operations with the same (author, seq) are equivocation: the first pair seen is
  kept as `Equivocation` evidence (both signed operations), which the contract can check.

The pending buffer (`PendingBuffer`) holds operations that wait for parents. It is bounded in
total, per source (the forwarding peer) and per *author*: a Byzantine author's operations are
validly signed, so every honest peer relays them and a bound per source never reaches it. Per
author it holds at most 1,024 operations and 8,192 links from them to parents not accepted,
and admits operations only while their missing parent ids (neither accepted nor waiting here)
number at most 1,024; in all 50,000 operations and 16,384 missing ids (the class says why).
Entries carry the logical generation at which they arrived; the driver calls
`PendingBuffer.advance` about once a second, and an entry that waited more than ``max_age``
generations (60) is dropped and counts one fault against its author. Faults halve every
``max_age`` generations; an author with 8 or more is quarantined: its operations that lack a
parent are refused outright, while those whose parents are known are accepted as usual (they
are validly signed, and merge stays set union). There is no clock: generations are inputs.

Why there is no evidence for this, as there is for equivocation: that a parent id names no
operation cannot be shown to anyone else. A parent is named only by its hash; its author may
hold it and withhold it from us, give it to some peers only, or it may still be on its way.
No signed object proves that it does not exist, so there is nothing a contract or another
participant could check, and withholding is indistinguishable from delay. So the response is
local, bounded and reversible: expiry, a decaying fault count, a quarantine that only stops
buffering. No bond is slashed and no forwarder is penalised.

What the bounds guarantee:
- the memory one author can make us hold is at most 1,024 operations of at most
  ``max_op_bytes`` (8 KiB) each, with at most 8,192 parent links (so as many tracked parent
  ids) of bookkeeping, however many operations it signs and however many peers relay them,
  each for at most ``max_age`` generations: about 18 MB at worst, 1 MB for the flood of 128
  missing parents an operation (benchmarks/pending_flood.py, ``worst_author`` and
  ``flood_memory``; the flood that once worked held 131-155 MB on every node);
- a flood by one author never takes another author's room: its refusals come from its own
  share (`AuthorPendingFull`, `AuthorQuarantined`), and the totals are 16 full shares of
  operations and of missing ids at admission (an author can exceed its missing share only by
  ids that were its own or others' entries a moment before, up to its links). Honest authors'
  gaps keep being repaired: the missing ids are kept per author (`missing_round_robin`), and
  sync asks for them one author at a time, so a flooder's ids take one author's turn of the
  Want budget;
- nothing honest is lost by a refusal or an expiry: the operation is still at its author and
  its peers, and the next sync round pushes it again parents first, which never waits here.
  The bounds make the buffer's contents depend on arrival order; the accepted set does not.
- `PendingBuffer.missing` (ids neither accepted nor waiting) is kept as the buffer changes, so
  reading it costs the size of the answer, not a pass over every waiting operation.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from crdt.errors import AuthorPendingFull, AuthorQuarantined, BadSequence, InternalError, InvalidInput, PendingFull
from crdt.ops import SignedOp
from crdt.types import Address, OpId


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Two signed operations by one author with one seq: a fraud proof for slashEquivocation."""

    first: SignedOp
    second: SignedOp

    @property
    def author(self) -> Address:
        return self.first.author

    @property
    def seq(self) -> int:
        return self.first.seq

    def contract_args(self) -> tuple[bytes, bytes, int, bytes, bytes, bytes, bytes]:
        """(channel, author, seq, contentHashA, signatureA, contentHashB, signatureB)."""
        a, b = sorted((self.first, self.second), key=lambda op: op.op_id)
        return (a.channel, a.author, a.seq, a.content_hash, a.signature, b.content_hash, b.signature)

    def describe(self) -> dict[str, Any]:
        channel, author, seq, hash_a, sig_a, hash_b, sig_b = self.contract_args()
        return {
            "channel": "0x" + channel.hex(),
            "author": "0x" + author.hex(),
            "seq": seq,
            "content_hash_a": "0x" + hash_a.hex(),
            "signature_a": "0x" + sig_a.hex(),
            "content_hash_b": "0x" + hash_b.hex(),
            "signature_b": "0x" + sig_b.hex(),
        }


@dataclass(slots=True)
class AddResult:
    """What one `add` did: operations newly accepted (in acceptance order, parents first),
    parent ids still missing (sorted and distinct: they are asked for, and cut off at limits, in
    this order, which must not depend on the hash seed), and released pending operations that
    turned out invalid."""

    accepted: list[SignedOp] = field(default_factory=list)
    missing: tuple[OpId, ...] = ()
    rejected: list[tuple[SignedOp, InvalidInput]] = field(default_factory=list)


@dataclass(slots=True)
class _Waiting:
    op: SignedOp
    source: bytes
    missing: set[OpId]  # its parents not accepted yet (waiting themselves, or missing)
    generation: int  # when it was buffered


@dataclass(slots=True)
class _Awaited:
    """A parent id, not accepted, that waiting operations need."""

    children: set[OpId]
    authors: dict[Address, int]  # author -> how many of the children are its operations


@dataclass(slots=True)
class _Load:
    """One author's share of the buffer (its missing ids are `PendingBuffer._missing_of`)."""

    entries: int = 0  # its waiting operations
    links: int = 0  # sum over them of their parents not accepted


@dataclass(frozen=True, slots=True)
class AuthorPending:
    """One author's share of the pending buffer, and its fault count."""

    author: Address
    entries: int  # its waiting operations
    links: int  # their parents not accepted, summed over them
    missing: int  # distinct ids they wait for that are neither accepted nor waiting
    faults: int
    quarantined: bool


@dataclass(frozen=True, slots=True)
class PendingStatistics:
    entries: int
    missing: int  # distinct ids neither accepted nor waiting that waiting operations need
    awaited: int  # distinct parent ids tracked (`missing` plus waiting ids that others need)
    generation: int
    authors: tuple[AuthorPending, ...]  # in address order: every author with entries or faults


@dataclass(slots=True)
class _Turn:
    """One author's place in a round of `missing_round_robin`."""

    author: Address
    ids: list[OpId]
    index: int
    left: int


class PendingBuffer:
    """Operations whose parents are not yet accepted: bounded in total, per source and per
    author, expired by logical generations, with a decaying fault count per author.

    The bounds (keyword arguments; the defaults, and why):
    - ``max_per_author`` = 1,024 waiting operations. An honest author's operations wait only
      while gossip reorders or loses them, until the next sync round repairs the gap: its rate
      times a few sync intervals, a few hundred at 100 operations a second. Catch-up after
      downtime is pushed parents first and never waits here. 1,024 leaves room for bursts;
    - ``max_links_per_author`` = 8,192 links from those operations to parents not accepted (8
      an operation: an honest one waits for its own predecessor and perhaps a few heads of
      other authors), which bounds the bookkeeping an author's operations make us keep;
    - ``max_missing_per_author`` = 1,024 distinct *missing* ids they wait for: neither accepted
      nor waiting here themselves, so what sync must fetch. An honest author's waiting
      operations miss about one id per gap (a chain delivered backwards misses one id in all);
      an operation naming 128 parents that do not exist misses 128, so a flood of those holds
      8 operations at a time;
    - ``max_total`` = 50,000 operations, ``max_per_source`` = 5,000 per forwarding peer, and
      ``max_missing`` = 16,384 missing ids in all: 16 authors' full shares, so in a channel of
      up to 16 participants no author can use up room another author needs.

    The missing-id caps are checked when an operation is buffered (it is refused if the counts
    after it would pass them). An id can also become missing later, when an entry that others
    wait for leaves without being accepted (expired, dropped with its source, or invalid once
    released): it was an entry a moment before, so entries plus missing ids never grow that
    way, and an author's missing ids never exceed its links.

    Expiry and faults:
    - ``max_age`` = 60 generations (the driver calls `advance` about once a second: a minute,
      many sync rounds). An entry that waited longer is dropped by `advance` and counts one
      fault against its author. Faults halve every ``max_age`` generations, in integers;
    - ``quarantine_faults`` = 8. An author with at least that many faults is quarantined: its
      operations that lack a parent are refused (`AuthorQuarantined`); those whose parents are
      known are accepted as usual. An honest operation expires only if no peer could supply
      its parent for a minute, so honest faults are rare, and quarantine costs an honest
      author only latency (its out-of-order operations come again with the next sync push,
      parents first). 8 is one expiry of a flood that names 128 missing parents an operation.

    Refusals raise a `PendingFull` (`AuthorPendingFull`, `AuthorQuarantined` say whose share):
    the operation is dropped and sync brings it again later; the forwarder is not to blame.
    """

    def __init__(
        self,
        max_total: int = 50_000,
        max_per_source: int = 5_000,
        *,
        max_per_author: int = 1_024,
        max_links_per_author: int = 8_192,
        max_missing: int = 16_384,
        max_missing_per_author: int = 1_024,
        max_age: int = 60,
        quarantine_faults: int = 8,
    ) -> None:
        if min(max_total, max_per_source, max_per_author, max_links_per_author, max_missing,
               max_missing_per_author, max_age, quarantine_faults) < 1:
            raise ValueError("every bound of the pending buffer must be at least 1")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.max_per_author = max_per_author
        self.max_links_per_author = max_links_per_author
        self.max_missing = max_missing
        self.max_missing_per_author = max_missing_per_author
        self.max_age = max_age
        self.quarantine_faults = quarantine_faults
        self._entries: dict[OpId, _Waiting] = {}  # in the order buffered, so by generation
        self._awaited: dict[OpId, _Awaited] = {}  # every parent id, not accepted, waited for
        self._missing: set[OpId] = set()  # the awaited ids that are not entries
        self._missing_of: dict[Address, list[OpId]] = {}  # per author, sorted; never empty
        self._loads: dict[Address, _Load] = {}  # authors with entries
        self._per_source: dict[bytes, int] = {}
        self._by_generation: dict[int, dict[OpId, None]] = {}  # never an empty bucket
        self._generation = 0
        self._faults: dict[Address, tuple[int, int]] = {}  # author -> (count, epoch counted in)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._entries

    def get(self, op_id: OpId) -> SignedOp | None:
        waiting = self._entries.get(op_id)
        return waiting.op if waiting is not None else None

    @property
    def generation(self) -> int:
        return self._generation

    # -- admission ---------------------------------------------------------------------------------

    def put(self, op: SignedOp, missing: set[OpId], source: bytes) -> None:
        """Buffer `op`, which waits for `missing` (its parents not accepted), or raise a
        `PendingFull` and change nothing."""
        self.check(op, missing, source)
        self._insert(op, missing, source, self._generation)

    def admits(self, op: SignedOp, missing: set[OpId], source: bytes) -> bool:
        """Whether `put` would buffer `op` now (the node stores only what it may keep)."""
        try:
            self.check(op, missing, source)
        except PendingFull:
            return False
        return True

    def check(self, op: SignedOp, missing: set[OpId], source: bytes) -> None:
        """Raise the `PendingFull` that `put` would raise for `op`; change nothing."""
        if not missing:
            raise InternalError("an operation with every parent accepted does not wait")
        author = op.author
        if author in self._faults and self.quarantined(author):
            raise AuthorQuarantined(
                f"0x{author.hex()} is quarantined ({self.faults(author)} operations expired waiting for parents)"
            )
        if len(self._entries) >= self.max_total:
            raise PendingFull(f"pending buffer is full ({self.max_total} operations)")
        count = self._per_source.get(source, 0)
        if count >= self.max_per_source:
            raise PendingFull(f"pending buffer is full for this source ({count} operations)")
        load = self._loads.get(author) or _Load()
        if load.entries >= self.max_per_author:
            raise AuthorPendingFull(f"0x{author.hex()} already has {load.entries} operations waiting")
        if load.links + len(missing) > self.max_links_per_author:
            raise AuthorPendingFull(f"0x{author.hex()}'s waiting operations already need {load.links} parents")
        # The missing ids after the insertion: its parents that are neither waiting nor already
        # missing become missing, and the operation itself stops being missing.
        awaited, entries, missing_now = self._awaited, self._entries, self._missing
        mine = len(self._missing_of.get(author, ()))
        total_after = len(missing_now)
        for parent in missing:
            if parent in entries:
                continue
            wanted = awaited.get(parent)
            if wanted is None:
                mine += 1
                total_after += 1
            elif author not in wanted.authors:
                mine += 1
        if op.op_id in missing_now:
            total_after -= 1
            if author in awaited[op.op_id].authors:
                mine -= 1
        if mine > self.max_missing_per_author:
            raise AuthorPendingFull(f"0x{author.hex()}'s waiting operations would wait for {mine} missing ids")
        if total_after > self.max_missing:
            raise PendingFull(f"pending buffer would wait for {total_after} missing ids")

    def _insert(self, op: SignedOp, missing: set[OpId], source: bytes, generation: int) -> None:
        op_id, author = op.op_id, op.author
        entries = self._entries
        entries[op_id] = _Waiting(op, source, set(missing), generation)
        bucket = self._by_generation.get(generation)
        if bucket is None:
            bucket = self._by_generation[generation] = {}
        bucket[op_id] = None
        self._per_source[source] = self._per_source.get(source, 0) + 1
        load = self._loads.get(author)
        if load is None:
            load = self._loads[author] = _Load()
        load.entries += 1
        load.links += len(missing)
        awaited, missing_now = self._awaited, self._missing
        if op_id in missing_now:  # others wait for it: it is no longer missing, it waits
            missing_now.discard(op_id)
            for other in awaited[op_id].authors:
                self._unlist(other, op_id)
        for parent in missing:
            wanted = awaited.get(parent)
            if wanted is None:
                awaited[parent] = _Awaited({op_id}, {author: 1})
                if parent not in entries:
                    missing_now.add(parent)
                    self._list(author, parent)
                continue
            wanted.children.add(op_id)
            authors = wanted.authors
            count = authors.get(author, 0)
            authors[author] = count + 1
            if not count and parent not in entries:
                self._list(author, parent)

    # -- leaving -----------------------------------------------------------------------------------

    def release(self, parent: OpId) -> list[SignedOp]:
        """Note that `parent` is accepted; return the operations that no longer wait for anything."""
        wanted = self._awaited.pop(parent, None)
        if wanted is None:
            return []
        if parent in self._missing:
            self._missing.discard(parent)
            for author in wanted.authors:
                self._unlist(author, parent)
        loads = self._loads
        ready = []
        for child in sorted(wanted.children):
            waiting = self._entries[child]
            waiting.missing.discard(parent)
            loads[waiting.op.author].links -= 1
            if not waiting.missing:
                ready.append(self._remove(child).op)
        return ready

    def _remove(self, op_id: OpId) -> _Waiting:
        """Take an entry out. If others wait for it, it is missing now, until it is accepted
        (the caller then calls `release`) or buffered again."""
        waiting = self._entries.pop(op_id)
        bucket = self._by_generation[waiting.generation]
        del bucket[op_id]
        if not bucket:
            del self._by_generation[waiting.generation]
        source, author = waiting.source, waiting.op.author
        remaining = self._per_source[source] - 1
        if remaining:
            self._per_source[source] = remaining
        else:
            del self._per_source[source]
        load = self._loads[author]
        load.entries -= 1
        load.links -= len(waiting.missing)
        for parent in waiting.missing:
            wanted = self._awaited[parent]
            wanted.children.discard(op_id)
            count = wanted.authors[author] - 1
            if count:
                wanted.authors[author] = count
            else:
                del wanted.authors[author]
                if parent in self._missing:
                    self._unlist(author, parent)
            if not wanted.children:
                del self._awaited[parent]
                self._missing.discard(parent)
        if not load.entries:
            del self._loads[author]
        wanted_self = self._awaited.get(op_id)
        if wanted_self is not None:
            self._missing.add(op_id)
            for other in wanted_self.authors:
                self._list(other, op_id)
        return waiting

    def drop_source(self, source: bytes) -> int:
        """Forget everything a source sent that still waits (for a peer that was banned).
        Operations of other sources that wait for them stay, and ask for them again."""
        doomed = [op_id for op_id, waiting in self._entries.items() if waiting.source == source]
        for op_id in doomed:
            self._remove(op_id)
        return len(doomed)

    def advance(self) -> list[SignedOp]:
        """Move to the next generation; drop the entries that have now waited more than
        ``max_age`` generations, count one fault against each one's author, and return them
        (in the order they were buffered). The driver calls this about once a second."""
        self._generation += 1
        generation = self._generation
        if generation % self.max_age == 0:  # a new epoch: forget the faults that decayed to 0
            for author in [a for a in self._faults if not self.faults(a)]:
                del self._faults[author]
        cutoff = generation - self.max_age
        expired: list[SignedOp] = []
        for old in [g for g in self._by_generation if g < cutoff]:
            for op_id in list(self._by_generation.get(old, ())):
                op = self._remove(op_id).op
                expired.append(op)
                self._fault(op.author)
        return expired

    # -- faults ------------------------------------------------------------------------------------

    def _epoch(self) -> int:
        return self._generation // self.max_age

    def faults(self, author: bytes) -> int:
        """Operations of `author` that expired here, halved every ``max_age`` generations."""
        count, epoch = self._faults.get(Address(author), (0, 0))
        return count >> (self._epoch() - epoch)

    def _fault(self, author: Address) -> None:
        self._faults[author] = (self.faults(author) + 1, self._epoch())

    def quarantined(self, author: bytes) -> bool:
        """Whether `author`'s operations that lack a parent are refused for now."""
        return self.faults(author) >= self.quarantine_faults

    # -- missing ids -------------------------------------------------------------------------------

    def _list(self, author: Address, op_id: OpId) -> None:
        ids = self._missing_of.get(author)
        if ids is None:
            self._missing_of[author] = [op_id]
        else:
            insort(ids, op_id)

    def _unlist(self, author: Address, op_id: OpId) -> None:
        ids = self._missing_of[author]
        del ids[bisect_left(ids, op_id)]
        if not ids:
            del self._missing_of[author]

    def missing(self) -> set[OpId]:
        """Parent ids that some waiting operation needs and that are not waiting themselves
        (nor accepted). Kept as the buffer changes: this costs the size of the answer."""
        return set(self._missing)

    def is_missing(self, op_id: bytes) -> bool:
        return op_id in self._missing

    def missing_count(self) -> int:
        return len(self._missing)

    def missing_round_robin(
        self, limit: int, after: Mapping[Address, OpId] | None = None
    ) -> list[tuple[Address, OpId]]:
        """Up to `limit` distinct missing ids, each with an author whose operations wait for
        it: one per author in turn (authors in address order), so a flooding author gets the
        same share as any other. Each author's ids are taken in id order, starting after
        ``after[author]`` and wrapping around; a reader that passes, per author, the last id
        it took goes round every author's ids, `limit` at a time. Costs about `limit` steps
        plus the number of authors, whatever the size of the buffer."""
        chosen: list[tuple[Address, OpId]] = []
        if limit <= 0:
            return chosen
        turns = []
        for author in sorted(self._missing_of):
            ids = self._missing_of[author]
            last = None if after is None else after.get(author)
            start = 0 if last is None else bisect_right(ids, last)
            turns.append(_Turn(author, ids, start, len(ids)))
        seen: set[OpId] = set()
        while turns:
            still = []
            for turn in turns:
                ids = turn.ids
                while turn.left:
                    op_id = ids[turn.index % len(ids)]
                    turn.index += 1
                    turn.left -= 1
                    if op_id not in seen:
                        seen.add(op_id)
                        chosen.append((turn.author, op_id))
                        if len(chosen) >= limit:
                            return chosen
                        break
                if turn.left:
                    still.append(turn)
            turns = still
        return chosen

    # -- reading -----------------------------------------------------------------------------------

    def ops(self) -> list[SignedOp]:
        return [waiting.op for waiting in self._entries.values()]

    def statistics(self) -> PendingStatistics:
        authors = sorted(set(self._loads) | set(self._faults))
        return PendingStatistics(
            entries=len(self._entries),
            missing=len(self._missing),
            awaited=len(self._awaited),
            generation=self._generation,
            authors=tuple(
                AuthorPending(
                    author=author,
                    entries=(load := self._loads.get(author) or _Load()).entries,
                    links=load.links,
                    missing=len(self._missing_of.get(author, ())),
                    faults=self.faults(author),
                    quarantined=self.quarantined(author),
                )
                for author in authors
            ),
        )

    @classmethod
    def for_local_input(cls, operations: int) -> PendingBuffer:
        """A buffer that refuses none of `operations` operations: for a file the user replays
        (trusted local input, in any order), where the network's bounds would drop some."""
        room = max(1, operations)
        return cls(room, room, max_per_author=room, max_links_per_author=room * 128, max_missing=room * 128,
                   max_missing_per_author=room * 128)

    def copy(self) -> PendingBuffer:
        """An independent buffer with the same bounds, entries, generation and faults."""
        clone = PendingBuffer(
            self.max_total,
            self.max_per_source,
            max_per_author=self.max_per_author,
            max_links_per_author=self.max_links_per_author,
            max_missing=self.max_missing,
            max_missing_per_author=self.max_missing_per_author,
            max_age=self.max_age,
            quarantine_faults=self.quarantine_faults,
        )
        clone._generation = self._generation
        clone._faults = dict(self._faults)
        for waiting in self._entries.values():
            clone._insert(waiting.op, waiting.missing, waiting.source, waiting.generation)
        return clone


@dataclass(frozen=True, slots=True)
class Pruned:
    """An operation compaction moved out of memory, with what the graph and replay knew of it:
    its height, the certified version it is final in, and replay's outcome (None: it took
    effect; else the `Reason` it had none, as text)."""

    op: SignedOp
    height: int
    epoch: int
    outcome: str | None


class Archive(Protocol):
    """Where a compacted graph keeps the operations it pruned (the node: its SQLite store; tests
    and the simulator: `MemoryArchive`). The graph reads it only off its hot path: an operation
    whose (author, seq) is at or below what was pruned of its author (a replay or an
    equivocation), a parent that is not in memory, a causal walk that goes below the pruned
    floor, a peer that asks sync for what was pruned."""

    def put(self, records: Sequence[Pruned]) -> None: ...

    def get(self, op_id: OpId) -> Pruned | None: ...

    def at(self, author: Address, seq: int) -> tuple[OpId, ...]:
        """The ids archived with this (author, seq), in the order they were accepted."""
        ...

    def since(self, author: Address, seq: int) -> list[Pruned]:
        """The archived operations of `author` with a seq above `seq`."""
        ...

    def extent(self) -> tuple[int, dict[Address, int]]:
        """How many operations are archived, and each author's highest archived seq."""
        ...


class MemoryArchive:
    """An `Archive` in memory: for tests and the simulator (it saves nothing, it only moves)."""

    def __init__(self) -> None:
        self._records: dict[OpId, Pruned] = {}
        self._at: dict[tuple[Address, int], tuple[OpId, ...]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def put(self, records: Sequence[Pruned]) -> None:
        for record in records:
            op = record.op
            if op.op_id not in self._records:
                self._records[op.op_id] = record
                key = (op.author, op.seq)
                self._at[key] = (*self._at.get(key, ()), op.op_id)

    def get(self, op_id: OpId) -> Pruned | None:
        return self._records.get(op_id)

    def at(self, author: Address, seq: int) -> tuple[OpId, ...]:
        return self._at.get((author, seq), ())

    def since(self, author: Address, seq: int) -> list[Pruned]:
        return [r for r in self._records.values() if r.op.author == author and r.op.seq > seq]

    def extent(self) -> tuple[int, dict[Address, int]]:
        tops: dict[Address, int] = {}
        for author, seq in self._at:
            if seq > tops.get(author, 0):
                tops[author] = seq
        return len(self._records), tops


class HashGraph:
    """The accepted operations. With an `archive`, `prune` moves certified operations out of
    memory into it, and every read here looks there for what is not in memory, so the graph
    answers exactly as it would uncompacted (`known`, `get`, `height_of`, `at` are the reads
    that see both; ``ops``, ``height`` and ``chains`` hold only what is in memory)."""

    def __init__(self, pending: PendingBuffer | None = None, archive: Archive | None = None) -> None:
        self.ops: dict[OpId, SignedOp] = {}
        self.height: dict[OpId, int] = {}
        self.heads: set[OpId] = set()
        # author -> seq -> the ids at that seq (two or more: an equivocation). Tuples, not lists:
        # the garbage collector stops tracking a tuple of bytes, one object fewer an operation for
        # every later collection to visit.
        self.chains: dict[Address, dict[int, tuple[OpId, ...]]] = {}
        self.version_vector: dict[Address, int] = {}
        self.evidence: dict[tuple[Address, int], Equivocation] = {}
        self.pending = pending if pending is not None else PendingBuffer()
        self.archive = archive
        self.pruned_seq: dict[Address, int] = {}  # author -> the highest seq pruned into the archive
        self.pruned = 0  # operations pruned into the archive

    def __len__(self) -> int:
        """The accepted operations, pruned ones included (``len(graph.ops)``: those in memory)."""
        return len(self.ops) + self.pruned

    def __contains__(self, op_id: object) -> bool:
        return op_id in self.ops

    # -- reads that see the archive ------------------------------------------------------------

    def _archived(self, op_id: OpId) -> Pruned | None:
        archive = self.archive
        return archive.get(op_id) if archive is not None and self.pruned else None

    def known(self, op_id: OpId) -> bool:
        """Whether `op_id` was accepted (in memory or pruned)."""
        return op_id in self.ops or self._archived(op_id) is not None

    def get(self, op_id: OpId) -> SignedOp | None:
        """The accepted operation `op_id` (in memory or pruned), or None."""
        op = self.ops.get(op_id)
        if op is None and (record := self._archived(op_id)) is not None:
            return record.op
        return op

    def height_of(self, op_id: OpId) -> int:
        """The height of an accepted operation (in memory or pruned); KeyError if unknown."""
        height = self.height.get(op_id)
        if height is None:
            record = self._archived(op_id)
            if record is None:
                raise KeyError(op_id)
            return record.height
        return height

    def _parents_of(self, op_id: OpId) -> tuple[OpId, ...]:
        op = self.ops.get(op_id)
        if op is None:
            record = self._archived(op_id)
            if record is None:
                raise KeyError(op_id)
            return record.op.parents
        return op.parents

    def at(self, author: Address, seq: int) -> tuple[OpId, ...]:
        """The ids accepted with this (author, seq): one, or two and more for an equivocation."""
        chain = self.chains.get(author)
        live = chain.get(seq, ()) if chain is not None else ()
        if self.archive is not None and seq <= self.pruned_seq.get(author, 0):
            return (*self.archive.at(author, seq), *live)
        return live

    def prune(self, records: Sequence[Pruned]) -> None:
        """Move these accepted operations to the archive and out of memory. The replica chooses
        them (`crdt.replica.Replica.compact`): certified, and none a head."""
        archive = self.archive
        if archive is None:
            raise InternalError("a graph without an archive cannot prune")
        heads, ops, height, chains, pruned_seq = self.heads, self.ops, self.height, self.chains, self.pruned_seq
        for record in records:
            if record.op.op_id in heads or record.op.op_id not in ops:
                raise InternalError("only accepted operations that are not heads can be pruned")
        archive.put(records)
        for record in records:
            op = record.op
            op_id, author, seq = op.op_id, op.author, op.seq
            del ops[op_id]
            del height[op_id]
            chain = chains[author]
            rest = tuple(other for other in chain[seq] if other != op_id)
            if rest:
                chain[seq] = rest
            else:
                del chain[seq]
            if seq > pruned_seq.get(author, 0):
                pruned_seq[author] = seq
        self.pruned += len(records)

    # -- input ---------------------------------------------------------------------------------

    def add(self, op: SignedOp, source: bytes = b"") -> AddResult:
        """Accept `op` if its parents are known, else keep it pending.

        Raises `BadSequence` or `PendingFull` for `op` itself. Pending operations released by
        it that fail their checks are dropped and listed in ``result.rejected``.
        """
        result = AddResult()
        result.missing = self.add_to(result, op, source)
        return result

    def add_to(self, result: AddResult, op: SignedOp, source: bytes = b"") -> tuple[OpId, ...]:
        """`add`, appending to ``result.accepted`` and ``result.rejected`` (so a batch shares
        one result), and returning what `add` puts in ``result.missing``."""
        ops, pending = self.ops, self.pending
        op_id = op.op_id
        if op_id in ops or op_id in pending._entries:
            return ()
        if op.seq < 1:
            raise BadSequence("seq starts at 1")
        if self.pruned and op.seq <= self.pruned_seq.get(op.author, 0) and self._archived(op_id) is not None:
            return ()
        for parent in op.parents:
            if parent not in ops and not (self.pruned and self._archived(parent) is not None):
                missing = {parent for parent in op.parents if not self.known(parent)}
                pending.put(op, missing, source)
                return tuple(sorted(parent for parent in missing if parent not in pending))
        self._accept(op)
        result.accepted.append(op)
        if not pending._entries:
            return ()
        queue = deque(pending.release(op_id))
        while queue:
            child = queue.popleft()
            try:
                self._accept(child)
            except InvalidInput as exc:
                result.rejected.append((child, exc.with_traceback(None)))  # no frame kept alive
                continue
            result.accepted.append(child)
            queue.extend(pending.release(child.op_id))
        return ()

    def _accept(self, op: SignedOp) -> None:
        author, seq, parents = op.author, op.seq, op.parents
        chain = self.chains.get(author)
        own = chain.get(seq - 1) if chain is not None and seq > 1 else None
        # most operations name their own predecessor as a parent: that is checked here at once
        if seq > 1 and not (own is not None and own[0] in parents) and not self._has_own_predecessor(op):
            raise BadSequence(
                f"seq {seq} of 0x{author.hex()} does not have its seq {seq - 1} in its causal past"
            )
        height = self.height
        op_id = op.op_id
        below = 0  # the greatest parent height (a loop: max() of two costs ten times as much)
        for parent in parents:
            parent_height = height.get(parent)
            if parent_height is None:
                parent_height = self.height_of(parent)  # a pruned parent
            if parent_height > below:
                below = parent_height
        height[op_id] = below + 1
        self.ops[op_id] = op
        heads = self.heads
        heads.difference_update(parents)
        heads.add(op_id)
        if chain is None:
            chain = self.chains[author] = {}
        same_seq = chain.get(seq)
        chain[seq] = (op_id,) if same_seq is None else (*same_seq, op_id)
        if self.pruned and seq <= self.pruned_seq.get(author, 0):
            same_seq = self.at(author, seq)[:-1] or None
        if same_seq is not None:
            key = (author, seq)
            if key not in self.evidence:
                first = self.get(same_seq[0])
                if first is None:
                    raise InternalError("an accepted id without its operation")
                self.evidence[key] = Equivocation(first, op)
        if seq > self.version_vector.get(author, 0):
            self.version_vector[author] = seq

    def _has_own_predecessor(self, op: SignedOp) -> bool:
        targets = self.at(op.author, op.seq - 1)
        if not targets:
            return False
        parents = op.parents
        for target in targets:
            if target in parents:
                return True
        return any(self.is_ancestor(target, op.parents) for target in targets)

    def is_ancestor(self, target: OpId, starts: Iterable[OpId]) -> bool:
        """Whether `target` is one of `starts` or in their causal past (searching only heights
        at or above the target's, so the walk stays near the top of the graph)."""
        height, ops = self.height, self.ops
        floor = self.height_of(target)
        # Heights grow along every edge, so the only operation at the target's height that can
        # be it or have it in its past is the target itself: the walk visits only greater heights.
        stack: list[OpId] = []
        for start in starts:
            if start == target:
                return True
            if self.height_of(start) > floor:
                stack.append(start)
        seen = set(stack)
        while stack:
            current = stack.pop()
            op = ops.get(current)
            parents = op.parents if op is not None else self._parents_of(current)
            if target in parents:
                return True
            for parent in parents:
                if parent not in seen:
                    parent_height = height.get(parent)
                    if parent_height is None:
                        parent_height = self.height_of(parent)
                    if parent_height > floor:
                        seen.add(parent)
                        stack.append(parent)
        return False

    def key(self, op_id: OpId) -> tuple[int, OpId]:
        """The tentative order key (height, op_id)."""
        return self.height[op_id], op_id

    def in_order(self, op_ids: Iterable[OpId] | None = None) -> list[SignedOp]:
        """Operations (all, or the given ones) sorted by the tentative order key."""
        ids = self.ops.keys() if op_ids is None else op_ids
        return [self.ops[op_id] for op_id in sorted(ids, key=self.key)]

    def closure(self, heads: Iterable[OpId], stop: Container[OpId] = frozenset()) -> set[OpId]:
        """The causal closure of `heads` (heads included), not walking into `stop`, nor into
        pruned operations (they are certified, so in every `stop` the replica passes)."""
        ops = self.ops
        found: set[OpId] = set()
        stack = [head for head in heads if head not in stop]
        while stack:
            current = stack.pop()
            if current in found:
                continue
            op = ops.get(current)
            if op is None:
                if self._archived(current) is not None:
                    continue
                raise KeyError(current)
            found.add(current)
            stack.extend(p for p in op.parents if p not in found and p not in stop)
        return found

    def missing_for(self, version_vector: dict[Address, int]) -> Iterator[SignedOp]:
        """Operations a peer with `version_vector` lacks, parents first (for sync), the pruned
        ones read from the archive."""
        wanted = [
            op_id
            for author, chain in self.chains.items()
            for seq, ids in chain.items()
            if seq > version_vector.get(author, 0)
            for op_id in ids
        ]
        archive = self.archive
        behind = [(a, version_vector.get(a, 0)) for a, top in self.pruned_seq.items() if version_vector.get(a, 0) < top]
        if archive is None or not behind:
            return iter(self.in_order(wanted))
        height, ops = self.height, self.ops
        keyed = [(height[op_id], op_id, ops[op_id]) for op_id in wanted]
        keyed += [(r.height, r.op.op_id, r.op) for author, seq in behind for r in archive.since(author, seq)]
        keyed.sort(key=lambda entry: (entry[0], entry[1]))
        return iter([entry[2] for entry in keyed])

    def merge(self, other: HashGraph) -> AddResult:
        """Set union: add every operation of `other` (parents first). Returns what was new."""
        total = AddResult()
        for op in other.in_order():
            result = self.add(op)
            total.accepted.extend(result.accepted)
            total.rejected.extend(result.rejected)
        return total

    def copy(self) -> HashGraph:
        """An independent graph with the same accepted operations and the same pending buffer
        (bounds, entries, generation, faults)."""
        clone = HashGraph(archive=self.archive)
        clone.pruned_seq = dict(self.pruned_seq)
        clone.pruned = self.pruned
        clone.merge(self)
        clone.pending = self.pending.copy()
        return clone
