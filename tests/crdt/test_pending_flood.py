"""The pending buffer against floods (crdt/graph.py, "The pending buffer"): bounds per author,
expiry by logical generations, decaying faults and quarantine, the missing set kept as the
buffer changes, and the attack that once worked: one author's 6,000 validly signed operations,
each naming 128 parents that do not exist.

`PendingMachine` runs the buffer against `Model`, the same rules written again naively: every
count is recomputed from the entries at each step.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from crdt.errors import AuthorPendingFull, AuthorQuarantined, InvalidInput, PendingFull
from crdt.graph import HashGraph, PendingBuffer
from crdt.hashing import keccak256
from crdt.ops import SignedOp, sign_op
from crdt.replica import Replica
from crdt.types import Address, ChannelId, Hash32, OpId
from tests.crdt.crdt_support import (
    ADDR,
    CTX,
    GENESIS,
    KEYS,
    fingerprint,
    replay_in_key_order,
    sign,
    transfer,
    workloads,
)

# -- the buffer against a naive model -------------------------------------------------------------


def pending_op(op_id: bytes, author: bytes) -> SignedOp:
    """An operation with the two fields the buffer reads (its id and author) and placeholders for
    the rest. A real `SignedOp`, not a stand-in class: the compiled build checks the type."""
    return SignedOp(ChannelId(bytes(32)), Address(author), 1, (), "transfer", {}, 0, bytes(65), Hash32(bytes(32)),
                    OpId(op_id), op_id)


@dataclass(frozen=True)
class Entry:
    op: SignedOp
    source: bytes
    parents: frozenset[bytes]
    generation: int


class Model:
    """The pending buffer's rules, naively: nothing is kept but the entries, the accepted ids,
    the generation and each author's expiries."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.limits = dict(limits)
        self.accepted: set[bytes] = set()
        self.entries: dict[bytes, Entry] = {}  # in the order buffered
        self.generation = 0
        self.expiries: dict[bytes, list[int]] = {}  # author -> the epoch of each expiry, in order

    def waits(self, entry: Entry) -> frozenset[bytes]:
        return entry.parents - self.accepted

    def missing(self, author: bytes | None = None, entries: Mapping[bytes, Entry] | None = None) -> set[bytes]:
        entries = self.entries if entries is None else entries
        return {
            parent
            for entry in entries.values()
            if author is None or entry.op.author == author
            for parent in self.waits(entry)
            if parent not in entries
        }

    def awaited(self) -> set[bytes]:
        return {parent for entry in self.entries.values() for parent in self.waits(entry)}

    def links(self, author: bytes) -> int:
        return sum(len(self.waits(e)) for e in self.entries.values() if e.op.author == author)

    def count(self, author: bytes) -> int:
        return sum(1 for e in self.entries.values() if e.op.author == author)

    def faults(self, author: bytes) -> int:
        epoch = self.generation // self.limits["max_age"]
        value, last = 0, 0
        for at in self.expiries.get(author, ()):
            value = (value >> (at - last)) + 1
            last = at
        return value >> (epoch - last)

    def put(self, op: SignedOp, parents: frozenset[bytes], source: bytes) -> type[Exception] | None:
        """Buffer the op and return None, or return the error the buffer must raise."""
        limits, author = self.limits, op.author
        waits = parents - self.accepted
        if self.faults(author) >= limits["quarantine_faults"]:
            return AuthorQuarantined
        if len(self.entries) >= limits["max_total"]:
            return PendingFull
        if sum(1 for e in self.entries.values() if e.source == source) >= limits["max_per_source"]:
            return PendingFull
        if self.count(author) >= limits["max_per_author"]:
            return AuthorPendingFull
        if self.links(author) + len(waits) > limits["max_links_per_author"]:
            return AuthorPendingFull
        after = {**self.entries, op.op_id: Entry(op, source, parents, self.generation)}
        if len(self.missing(author, after)) > limits["max_missing_per_author"]:
            return AuthorPendingFull
        if len(self.missing(None, after)) > limits["max_missing"]:
            return PendingFull
        self.entries = after
        return None

    def accept(self, op_id: bytes, invalid: set[bytes]) -> list[bytes]:
        """`op_id` is accepted; release what no longer waits, breadth first, children in id
        order; a released op in `invalid` fails its checks and is dropped. Returns the ids
        accepted, in order."""
        self.accepted.add(op_id)
        done = [op_id]
        queue = deque([op_id])
        while queue:
            parent = queue.popleft()
            ready = sorted(
                child
                for child, entry in self.entries.items()
                if parent in entry.parents and not self.waits(entry)
            )
            for child in ready:
                del self.entries[child]
            for child in ready:
                if child in invalid:
                    continue
                self.accepted.add(child)
                done.append(child)
                queue.append(child)
        return done

    def advance(self) -> list[bytes]:
        self.generation += 1
        cutoff = self.generation - self.limits["max_age"]
        expired = [op_id for op_id, entry in self.entries.items() if entry.generation < cutoff]
        for op_id in expired:
            author = self.entries.pop(op_id).op.author
            self.expiries.setdefault(author, []).append(self.generation // self.limits["max_age"])
        return expired

    def drop_source(self, source: bytes) -> int:
        doomed = [op_id for op_id, entry in self.entries.items() if entry.source == source]
        for op_id in doomed:
            del self.entries[op_id]
        return len(doomed)

    def round_robin(self, limit: int, after: Mapping[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        queues = []
        for author in sorted({e.op.author for e in self.entries.values()}):
            ids = sorted(self.missing(author))
            if not ids:
                continue
            start = bisect_right(ids, after[author]) if author in after else 0
            queues.append((author, deque(ids[start:] + ids[:start])))
        chosen: list[tuple[bytes, bytes]] = []
        seen: set[bytes] = set()
        while queues and len(chosen) < limit:
            for author, queue in queues:
                while queue and queue[0] in seen:
                    queue.popleft()
                if queue:
                    seen.add(queue[0])
                    chosen.append((author, queue.popleft()))
                    if len(chosen) == limit:
                        break
            queues = [(a, q) for a, q in queues if any(i not in seen for i in q)]
        return chosen


AUTHORS = [bytes([a]) * 20 for a in (1, 2, 3)]
SOURCES = [b"peer-a", b"peer-b"]
N_OPS, N_PHANTOMS = 12, 4  # phantoms are parent ids that no operation has


def ident(index: int) -> bytes:
    return index.to_bytes(32, "big")


limits_st = st.fixed_dictionaries(
    {
        "max_total": st.integers(1, 8),
        "max_per_source": st.integers(1, 8),
        "max_per_author": st.integers(1, 5),
        "max_links_per_author": st.integers(1, 8),
        "max_missing": st.integers(1, 8),
        "max_missing_per_author": st.integers(1, 5),
        "max_age": st.integers(1, 4),
        "quarantine_faults": st.integers(1, 3),
    }
)


class PendingMachine(RuleBasedStateMachine):
    @initialize(limits=limits_st, data=st.data())
    def start(self, limits: dict[str, int], data: st.DataObject) -> None:
        self.buffer = PendingBuffer(**limits)
        self.model = Model(limits)
        # A fixed universe: operation i names parents among the earlier operations and the
        # phantoms (so the parents form a DAG, as hashes do); some are invalid once released.
        self.ops = {ident(i): pending_op(ident(i), data.draw(st.sampled_from(AUTHORS))) for i in range(N_OPS)}
        phantoms = [ident(N_OPS + i) for i in range(N_PHANTOMS)]
        self.parents = {
            ident(i): frozenset(
                data.draw(st.lists(st.sampled_from([ident(j) for j in range(i)] + phantoms), max_size=4))
            )
            for i in range(N_OPS)
        }
        self.invalid = set(data.draw(st.lists(st.sampled_from(sorted(self.ops)), max_size=3)))
        self.ids = sorted(self.ops) + phantoms

    def fresh(self, op_id: bytes) -> bool:
        return op_id not in self.model.accepted and op_id not in self.model.entries

    @rule(index=st.integers(0, N_OPS - 1), source=st.sampled_from(SOURCES))
    def put(self, index: int, source: bytes) -> None:
        op_id = ident(index)
        waits = self.parents[op_id] - self.model.accepted
        if not self.fresh(op_id) or not waits:
            return  # the graph accepts it at once (see `accept`), or already holds it
        expected = self.model.put(self.ops[op_id], self.parents[op_id], source)
        if expected is None:
            self.buffer.put(self.ops[op_id], set(waits), source)  # type: ignore[arg-type]
            return
        with pytest.raises(PendingFull) as refused:
            self.buffer.put(self.ops[op_id], set(waits), source)  # type: ignore[arg-type]
        assert type(refused.value) is expected, (refused.value, expected)

    @rule(index=st.integers(0, N_OPS - 1))
    def accept(self, index: int) -> None:
        """What `HashGraph.add` does with an operation whose parents are all accepted."""
        op_id = ident(index)
        if not self.fresh(op_id) or op_id in self.invalid or not self.parents[op_id] <= self.model.accepted:
            return
        done = [op_id]
        queue = deque(self.buffer.release(op_id))  # type: ignore[arg-type]
        while queue:
            child = queue.popleft()
            if child.op_id in self.invalid:
                continue
            done.append(child.op_id)
            queue.extend(self.buffer.release(child.op_id))
        assert done == self.model.accept(op_id, self.invalid)

    @rule()
    def advance(self) -> None:
        assert [op.op_id for op in self.buffer.advance()] == self.model.advance()

    @rule(source=st.sampled_from(SOURCES))
    def drop_source(self, source: bytes) -> None:
        assert self.buffer.drop_source(source) == self.model.drop_source(source)

    @rule(limit=st.integers(0, 6), data=st.data())
    def round_robin(self, limit: int, data: st.DataObject) -> None:
        after = data.draw(st.dictionaries(st.sampled_from(AUTHORS), st.sampled_from(self.ids), max_size=3))
        assert self.buffer.missing_round_robin(limit, after) == self.model.round_robin(limit, after)  # type: ignore[arg-type]

    @rule()
    def copy(self) -> None:
        clone = self.buffer.copy()
        assert clone.statistics() == self.buffer.statistics()
        self.buffer = clone  # the copy carries on in its place, and must behave the same

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        buffer, model = self.buffer, self.model
        assert [op.op_id for op in buffer.ops()] == list(model.entries)
        assert buffer.missing() == model.missing()
        stats = buffer.statistics()
        assert (stats.entries, stats.missing, stats.awaited, stats.generation) == (
            len(model.entries),
            len(model.missing()),
            len(model.awaited()),
            model.generation,
        )
        expected = []
        for author in AUTHORS:
            entries, faults = model.count(author), model.faults(author)
            if entries or faults:
                limits = model.limits
                expected.append(
                    (author, entries, model.links(author), len(model.missing(author)), faults,
                     faults >= limits["quarantine_faults"])
                )
        assert [
            (a.author, a.entries, a.links, a.missing, a.faults, a.quarantined) for a in stats.authors
        ] == expected
        for op_id in self.ids:
            assert buffer.is_missing(op_id) == (op_id in model.missing())

    @invariant()
    def bounds_hold(self) -> None:
        if not hasattr(self, "model"):
            return
        limits, stats = self.model.limits, self.buffer.statistics()
        assert stats.entries <= limits["max_total"]
        assert stats.missing + stats.entries <= limits["max_missing"] + limits["max_total"]
        for source in SOURCES:
            assert sum(1 for e in self.model.entries.values() if e.source == source) <= limits["max_per_source"]
        for author in stats.authors:
            assert author.entries <= limits["max_per_author"]
            assert author.links <= limits["max_links_per_author"]
            assert author.missing <= author.links


TestPendingBuffer = PendingMachine.TestCase
TestPendingBuffer.settings = settings(stateful_step_count=40)


# -- expiry, faults and quarantine -----------------------------------------------------------------


@given(st.integers(1, 5), st.lists(st.integers(0, 12), min_size=1, max_size=10), st.integers(0, 20))
def test_expiry_drops_exactly_the_entries_older_than_max_age(max_age: int, arrivals: list[int], until: int) -> None:
    """Entries buffered at the drawn generations; after `until` generations, exactly those that
    waited more than `max_age` are gone, each returned once, by the advance that passed it."""
    buffer = PendingBuffer(max_age=max_age, quarantine_faults=10**6)
    arrived: dict[bytes, int] = {}
    dropped: dict[bytes, int] = {}
    for generation in range(max(arrivals) + until + 1):
        for index, at in enumerate(arrivals):
            if at == generation:
                op = pending_op(ident(index), AUTHORS[index % 3])
                buffer.put(op, {ident(100 + index)}, b"")
                arrived[op.op_id] = generation
        if generation == max(arrivals) + until:
            break
        for op in buffer.advance():
            assert op.op_id not in dropped
            dropped[op.op_id] = buffer.generation
    now = buffer.generation
    assert set(dropped) == {op_id for op_id, at in arrived.items() if now - at > max_age}
    assert all(when - arrived[op_id] == max_age + 1 for op_id, when in dropped.items())
    assert {op.op_id for op in buffer.ops()} == set(arrived) - set(dropped)


def test_faults_decay_by_halves_and_quarantine_refuses_only_ops_that_wait() -> None:
    buffer = PendingBuffer(max_age=2, quarantine_faults=3)
    graph = HashGraph(buffer)
    flooder = 3
    orphans = [sign(flooder, 2 + i, [keccak256(b"nowhere%d" % i)], "transfer", transfer(0, 1)) for i in range(4)]
    for orphan in orphans:
        graph.add(orphan, b"relay")
    assert buffer.advance() == []
    assert buffer.advance() == []
    assert len(buffer.advance()) == 4  # buffered at generation 0, waited 3 > 2 generations
    assert buffer.faults(ADDR[flooder]) == 4
    assert buffer.quarantined(ADDR[flooder])
    with pytest.raises(AuthorQuarantined):
        graph.add(orphans[0], b"relay")
    first = sign(flooder, 1, [], "transfer", transfer(0, 1))
    assert graph.add(first).accepted == [first]  # validly signed, parents known: accepted as usual
    assert buffer.statistics().authors[0].quarantined
    buffer.advance()  # generation 4, epoch 2: 4 >> 1 = 2 faults
    assert buffer.faults(ADDR[flooder]) == 2
    assert not buffer.quarantined(ADDR[flooder])
    graph.add(orphans[0], b"relay")  # buffered again, at generation 4
    assert [buffer.advance() for _ in range(3)] == [[], [], [orphans[0]]]  # expired at generation 7
    assert buffer.faults(ADDR[flooder]) == 2  # epoch 3: (2 >> 1) + 1
    buffer.advance()
    assert buffer.faults(ADDR[flooder]) == 1  # epoch 4
    buffer.advance()
    buffer.advance()
    assert buffer.faults(ADDR[flooder]) == 0  # epoch 5
    assert buffer.statistics().authors == ()  # and forgotten


def test_refusals_are_pending_full_and_say_whose_share() -> None:
    """The caller treats every PendingFull alike (drop, sync brings it again); the subclass and
    its code say which bound it was."""
    buffer = PendingBuffer(max_per_author=1, max_missing_per_author=2)
    a = pending_op(ident(1), AUTHORS[0])
    buffer.put(a, {ident(10)}, b"p")
    with pytest.raises(AuthorPendingFull) as refused:
        buffer.put(pending_op(ident(2), AUTHORS[0]), {ident(11)}, b"p")
    assert isinstance(refused.value, PendingFull)
    assert isinstance(refused.value, InvalidInput)
    assert refused.value.code == "pending_full_author"
    assert AuthorQuarantined.code == "author_quarantined"
    with pytest.raises(AuthorPendingFull):
        PendingBuffer(max_missing_per_author=2).put(
            pending_op(ident(3), AUTHORS[1]), {ident(20), ident(21), ident(22)}, b"p"
        )
    buffer.put(pending_op(ident(4), AUTHORS[1]), {ident(12)}, b"p")  # another author has room


def test_a_backwards_chain_misses_one_id_whatever_its_length() -> None:
    """The missing-id caps count ids that are neither accepted nor waiting, so an honest chain
    delivered children first needs one missing id, not one per operation."""
    graph = HashGraph(PendingBuffer(max_missing_per_author=1, max_missing=1))
    chain: list[SignedOp] = []
    for seq in range(1, 41):
        chain.append(sign(0, seq, [chain[-1].op_id] if chain else [], "transfer", transfer(1, seq)))
    for op in reversed(chain[1:]):
        graph.add(op)
    assert graph.pending.missing() == {chain[0].op_id}
    assert [o.op_id for o in graph.add(chain[0]).accepted] == [o.op_id for o in chain]


def test_copy_keeps_the_pending_buffer_and_is_independent() -> None:
    graph = HashGraph(PendingBuffer(max_age=5, quarantine_faults=2))
    a1 = sign(0, 1, [], "transfer", transfer(1, 1))
    a2 = sign(0, 2, [a1.op_id], "transfer", transfer(1, 2))
    orphan = sign(3, 2, [keccak256(b"nowhere")], "transfer", transfer(0, 1))
    graph.add(a2)
    graph.add(orphan)
    graph.pending.advance()
    clone = graph.copy()
    assert clone.pending.statistics() == graph.pending.statistics()
    assert (clone.pending.max_age, clone.pending.quarantine_faults) == (5, 2)
    assert [o.op_id for o in clone.add(a1).accepted] == [a1.op_id, a2.op_id]
    assert a2.op_id in graph.pending
    assert a2.op_id not in clone.pending


# -- honest operations under a flood ---------------------------------------------------------------

HONEST, FLOODER = (0, 1), 3


def honest_chains(lengths: tuple[int, int]) -> list[SignedOp]:
    """Two honest authors; each op names its own predecessor and, every other step, the other
    author's latest op, so their gaps cross."""
    ops: list[SignedOp] = []
    last: dict[int, SignedOp] = {}
    for step in range(max(lengths)):
        for author, length in zip(HONEST, lengths, strict=True):
            if step >= length:
                continue
            parents = [last[author].op_id] if author in last else []
            other = last.get(HONEST[1 - HONEST.index(author)])
            if other is not None and step % 2:
                parents.append(other.op_id)
            op = sign(author, step + 1, parents, "transfer", transfer(2, step + 1))
            ops.append(op)
            last[author] = op
    return ops


flood_parents = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=16, unique=True)


@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(st.tuples(st.integers(1, 6), st.integers(1, 6)), st.lists(flood_parents, min_size=1, max_size=25), st.data())
def test_a_flood_never_refuses_or_loses_an_honest_operation(
    lengths: tuple[int, int], flood: list[list[bytes]], data: st.DataObject
) -> None:
    """One author floods with validly signed operations whose parents do not exist, through
    several relays, while the honest authors' operations arrive in any order, each within
    `max_age` generations of its parents; generations pass at drawn moments. Every honest
    operation is buffered when it must wait, and ends accepted. The bounds are small, but an
    author's share holds what the honest authors need (6 operations, 2 parents each), and the
    totals hold 4 shares (the channel's 4 traders)."""
    max_age = 6
    buffer = PendingBuffer(
        max_total=4 * 6, max_per_source=100, max_per_author=6, max_links_per_author=12,
        max_missing=4 * 12, max_missing_per_author=12, max_age=max_age, quarantine_faults=2,
    )
    replica = Replica(GENESIS, pending=buffer)
    honest = honest_chains(lengths)
    flood_ops = [sign(FLOODER, 2 + i, parents, "transfer", transfer(0, 1)) for i, parents in enumerate(flood)]
    events: list[Any] = [("honest", op) for op in honest] + [("flood", op) for op in flood_ops]
    events += [("advance", None)] * data.draw(st.integers(0, 3 * max_age))
    started = advanced = 0
    outstanding = {op.op_id for op in honest}
    for kind, op in data.draw(st.permutations(events)):
        if kind == "advance":
            if started and outstanding and advanced >= max_age:
                continue  # the honest operations' parents arrive before they expire
            buffer.advance()
            advanced += 1 if started else 0
            continue
        if kind == "honest":
            started = 1
        result = replica.receive_many([op], source=b"relay-%d" % data.draw(st.integers(0, 2)))
        assert not [r for r in result.rejected if r[0].author != ADDR[FLOODER]], result.rejected
        outstanding -= {o.op_id for o in result.accepted}
        for author in buffer.statistics().authors:
            assert author.entries <= 6
            assert author.missing <= author.links <= 12
        assert buffer.statistics().missing <= 4 * 12
    assert {op.op_id for op in honest} <= replica.graph.ops.keys()
    event(f"flooder quarantined: {buffer.quarantined(ADDR[FLOODER])}")
    event(f"flood ops buffered at the end: {min(len(buffer), 3)}")


# -- convergence while generations pass -----------------------------------------------------------


@given(workloads(), st.data())
def test_replicas_converge_when_parents_arrive_before_expiry(workload: Any, data: st.DataObject) -> None:
    ops = workload.ops
    reference = replay_in_key_order(GENESIS, ops)
    replica = Replica(GENESIS)
    for op in data.draw(st.permutations(ops)):
        replica.receive(op)
        for _ in range(data.draw(st.integers(0, 2))):
            assert replica.graph.pending.advance() == []  # at most 44 generations < max_age 60
    assert fingerprint(replica) == fingerprint(reference)


@given(workloads(), st.integers(1, 3), st.data())
def test_what_expired_comes_back_with_the_next_sync_push(workload: Any, max_age: int, data: st.DataObject) -> None:
    """Expiry (and the quarantine that may follow) loses nothing for good: after the operations
    are delivered again parents first, as a sync push does, the replica equals the reference."""
    ops = workload.ops
    reference = replay_in_key_order(GENESIS, ops)
    replica = Replica(GENESIS, pending=PendingBuffer(max_age=max_age, quarantine_faults=1))
    for op in data.draw(st.permutations(ops)):
        replica.receive_many([op])
        for _ in range(data.draw(st.integers(0, 2))):
            replica.graph.pending.advance()
    replica.receive_many(reference.graph.in_order())
    assert fingerprint(replica) == fingerprint(reference)
    assert len(replica.graph.pending) == 0


# -- the attack that once worked ---------------------------------------------------------------------

FLOOD_OPS, FLOOD_PARENTS, BATCH = 6_000, 128, 100


def nowhere(index: int) -> list[bytes]:
    """128 parent ids that name no operation (hashes of nothing anyone signed)."""
    return [keccak256(b"parley-tests/nowhere/%d/%d" % (index, j)) for j in range(FLOOD_PARENTS)]


@pytest.fixture(scope="module")
def flood() -> list[SignedOp]:
    return [
        sign_op(CTX, KEYS[FLOODER], 1 + i, nowhere(i), "transfer", transfer(0, 1), ts=i) for i in range(FLOOD_OPS)
    ]


def honest_out_of_order(count: int) -> list[list[SignedOp]]:
    """Three honest authors' operations (each on its own predecessor and the previous author's
    latest), cut in blocks of 8 delivered children first, 4 a gossip batch: each batch's
    operations wait for parents that come in the next batch."""
    ops: list[SignedOp] = []
    last: dict[int, SignedOp] = {}
    for i in range(count):
        author = i % 3
        parents = [op.op_id for op in (last.get(author), last.get((author + 2) % 3)) if op is not None]
        ops.append(sign(author, i // 3 + 1, parents, "transfer", transfer((author + 1) % 3, 1)))
        last[author] = ops[-1]
    order = [op for start in range(0, count, 8) for op in reversed(ops[start : start + 8])]
    return [order[i : i + 4] for i in range(0, count, 4)]


@pytest.mark.hostile
def test_regression_a_flood_of_operations_with_128_missing_parents_stays_bounded(flood: list[SignedOp]) -> None:
    """The attack: 6,000 validly signed operations by one author, 4.5 KB each, each naming 128
    random parents that do not exist, in gossip batches of 100 through three relays. Before,
    1,300-1,600 of them waited on every honest node (131-155 MB), every missing id was tracked,
    and honest transfers timed out for minutes. Now the author's share holds 8 of them (1,024
    missing ids), they expire after `max_age` generations and quarantine their author, and every
    honest operation, delivered out of order meanwhile, is accepted."""
    assert 4_400 < len(flood[0].raw) < 4_700
    replica = Replica(GENESIS)
    pending = replica.graph.pending
    batches = honest_out_of_order(4 * FLOOD_OPS // BATCH + 8)
    honest = [op for batch in batches for op in batch]
    refused: dict[str, int] = {}
    peak_entries = peak_missing = 0
    for round_, start in enumerate(range(0, FLOOD_OPS, BATCH)):
        result = replica.receive_many(flood[start : start + BATCH], source=b"relay-%d" % (round_ % 3))
        for _, error in result.rejected:
            assert isinstance(error, PendingFull)
            refused[error.code] = refused.get(error.code, 0) + 1
        result = replica.receive_many(batches[round_], source=b"honest-relay")
        assert result.rejected == []
        peak_entries = max(peak_entries, len(pending))
        peak_missing = max(peak_missing, pending.missing_count())
        pending.advance()  # the driver's generation, about once a second
    flooder = ADDR[FLOODER]
    share = pending.max_missing_per_author // FLOOD_PARENTS  # 8 operations
    assert peak_entries <= share + 4  # the flooder's share, and one honest batch waiting a round
    assert peak_missing <= pending.max_missing_per_author + 4
    assert refused == {"pending_full_author": FLOOD_OPS - share}
    assert all(op.op_id in replica.graph.ops for op in honest[: 4 * FLOOD_OPS // BATCH])
    # The flood's entries expire (a fault each) and quarantine the author; its operations are
    # then refused outright when sync brings them again, while honest ones still get through.
    pending.advance()
    stats = {a.author: a for a in pending.statistics().authors}
    assert (stats[flooder].faults, stats[flooder].quarantined, stats[flooder].entries) == (share, True, 0)
    assert (len(pending), pending.missing_count()) == (0, 0)
    again = replica.receive_many(flood[:BATCH], source=b"relay-0")
    assert {type(error) for _, error in again.rejected} == {AuthorQuarantined}
    for batch in batches[FLOOD_OPS // BATCH :]:
        assert replica.receive_many(batch, source=b"honest-relay").rejected == []
    assert all(op.op_id in replica.graph.ops for op in honest)
    assert len(pending) == 0
