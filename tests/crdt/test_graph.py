"""The hash graph (DESIGN.md, "The hash graph"; crdt/graph.py): acceptance, the bounded pending
buffer, sequence numbers, equivocation evidence, version vectors and sync."""

from __future__ import annotations

import pytest

from crdt.errors import BadSequence, PendingFull
from crdt.graph import HashGraph, PendingBuffer
from crdt.replica import Replica
from tests.crdt.crdt_support import ADDR, GENESIS, sign, transfer


def op(author: int, seq: int, parents: list[bytes] = [], amount: int = 1):  # noqa: B006
    return sign(author, seq, parents, "transfer", transfer((author + 1) % 4, amount))


def test_pending_until_parents_arrive_then_released_parents_first() -> None:
    graph = HashGraph()
    a1 = op(0, 1)
    a2 = op(0, 2, [a1.op_id])
    a3 = op(0, 3, [a2.op_id])
    assert graph.add(a3).missing == (a2.op_id,)
    result = graph.add(a2)
    assert result.accepted == []
    assert result.missing == (a1.op_id,)
    assert len(graph.pending) == 2
    assert len(graph) == 0
    result = graph.add(a1)
    assert result.accepted == [a1, a2, a3]
    assert len(graph.pending) == 0
    assert graph.heads == {a3.op_id}
    assert [graph.height[o.op_id] for o in (a1, a2, a3)] == [1, 2, 3]
    assert graph.add(a2).accepted == []  # a known op changes nothing


def test_pending_buffer_is_bounded_per_source() -> None:
    graph = HashGraph(PendingBuffer(max_total=10, max_per_source=2))
    orphans = [op(0, 2, [bytes([i]) * 32]) for i in range(1, 4)]
    graph.add(orphans[0], b"peer-a")
    graph.add(orphans[1], b"peer-a")
    with pytest.raises(PendingFull):
        graph.add(orphans[2], b"peer-a")
    graph.add(orphans[2], b"peer-b")  # another source still has room
    assert len(graph.pending) == 3
    assert graph.pending.drop_source(b"peer-a") == 2
    graph.add(orphans[0], b"peer-a")  # room again after the drop


def test_pending_buffer_is_bounded_in_total() -> None:
    graph = HashGraph(PendingBuffer(max_total=3, max_per_source=100))
    orphans = [op(1, 2, [bytes([i]) * 32]) for i in range(1, 5)]
    for i, orphan in enumerate(orphans[:3]):
        graph.add(orphan, b"source-%d" % i)
    with pytest.raises(PendingFull):
        graph.add(orphans[3], b"fresh-source")
    assert len(graph.pending) == 3


def test_released_operations_free_their_slots() -> None:
    graph = HashGraph(PendingBuffer(max_total=2, max_per_source=1))
    a1 = op(0, 1)
    graph.add(op(0, 2, [a1.op_id]), b"p")
    graph.add(a1, b"p")
    graph.add(op(1, 2, [bytes([5]) * 32]), b"p")  # the per-source slot is free again


def test_seq_zero_is_a_bad_sequence() -> None:
    with pytest.raises(BadSequence):
        HashGraph().add(op(0, 0))


def test_first_op_with_seq_two_is_a_bad_sequence() -> None:
    graph = HashGraph()
    with pytest.raises(BadSequence):
        graph.add(op(0, 2))
    assert len(graph) == 0


def test_seq_two_needs_seq_one_in_its_causal_past_not_just_in_the_graph() -> None:
    graph = HashGraph()
    a1 = op(0, 1)
    b1 = op(1, 1)
    graph.add(a1)
    graph.add(b1)
    with pytest.raises(BadSequence):
        graph.add(op(0, 2, [b1.op_id]))  # a1 is in the graph, but not an ancestor
    a2 = op(0, 2, [b1.op_id, a1.op_id])
    graph.add(a2)
    c1 = op(2, 1, [a2.op_id])
    graph.add(c1)
    graph.add(op(0, 3, [c1.op_id]))  # a2 reached through another author's op
    assert graph.version_vector == {ADDR[0]: 3, ADDR[1]: 1, ADDR[2]: 1}


def test_bad_sequence_released_from_pending_is_reported_not_raised() -> None:
    graph = HashGraph()
    b1 = op(1, 1)
    gap = op(0, 2, [b1.op_id])  # author 0 has no seq 1 at all
    graph.add(gap)
    result = graph.add(b1)
    assert result.accepted == [b1]
    assert [(o, type(e)) for o, e in result.rejected] == [(gap, BadSequence)]
    assert gap.op_id not in graph
    assert gap.op_id not in graph.pending


def test_equivocation_is_recorded_once_per_author_and_seq() -> None:
    graph = HashGraph()
    first, second, third = op(3, 1, amount=1), op(3, 1, amount=2), op(3, 1, amount=3)
    for o in (first, second, third):
        graph.add(o)
    assert list(graph.evidence) == [(ADDR[3], 1)]
    evidence = graph.evidence[(ADDR[3], 1)]
    assert {evidence.first, evidence.second} == {first, second}
    channel, author, seq, hash_a, sig_a, hash_b, sig_b = evidence.contract_args()
    assert (channel, author, seq) == (GENESIS.channel_id, ADDR[3], 1)
    low, high = sorted((first, second), key=lambda o: o.op_id)
    assert (hash_a, sig_a, hash_b, sig_b) == (low.content_hash, low.signature, high.content_hash, high.signature)


def test_missing_for_gives_what_a_peer_lacks_parents_first() -> None:
    graph = HashGraph()
    a1 = op(0, 1)
    a2 = op(0, 2, [a1.op_id])
    b1 = op(1, 1, [a1.op_id])
    for o in (a1, a2, b1):
        graph.add(o)
    assert list(graph.missing_for({})) == graph.in_order()
    assert list(graph.missing_for({ADDR[0]: 1})) == sorted([a2, b1], key=lambda o: graph.key(o.op_id))
    peer = HashGraph()
    for o in graph.missing_for({}):
        assert peer.add(o).accepted == [o]  # parents always come first


def test_regression_merge_with_an_invalid_pending_op_of_the_other_side() -> None:
    """A replica holding, pending, an op that will fail BadSequence once its parent arrives
    (a Byzantine author skipped a seq and withheld the parent) made `a.merge(b)` raise half-way
    when `a` had the parent, while `b.merge(a)` succeeded: merge was not commutative."""
    b1 = op(1, 1)
    gap = op(3, 2, [b1.op_id])  # author 3 has no seq 1
    a, b = Replica(GENESIS), Replica(GENESIS)
    a.receive(b1)
    b.receive(gap)
    ab = Replica(GENESIS)
    ab.merge(a)
    ab.merge(b)
    ba = Replica(GENESIS)
    ba.merge(b)
    ba.merge(a)
    assert set(ab.graph.ops) == set(ba.graph.ops) == {b1.op_id}
    assert ab.state_hash() == ba.state_hash()
