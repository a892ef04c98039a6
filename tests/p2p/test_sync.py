"""The pure sync state machine: two replicas with any subsets of a DAG converge by exchange."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.errors import InvalidInput
from crdt.graph import PendingBuffer
from crdt.hashing import keccak256
from crdt.ops import decode_op, sign_op
from crdt.replica import Replica
from p2p.errors import UnexpectedMessage
from p2p.sync import HashGraphView, SyncConfig, SyncSession
from p2p.wire import Message, Ops, Want, decode_message, encode_message, make_status
from tests.p2p.p2p_kit import authors, make_genesis, random_dag

GENESIS = make_genesis(3)
POOL = random_dag(GENESIS, 60, seed=7, forks=3)


class Side:
    def __init__(self, name: bytes, config: SyncConfig) -> None:
        self.name = name
        self.replica = Replica(GENESIS)
        self.view = HashGraphView(self.replica.graph)
        self.session = SyncSession(GENESIS.channel_id, config)

    def apply(self, raws: tuple[bytes, ...], source: bytes) -> set[bytes]:
        missing: set[bytes] = set()
        for raw in raws:
            try:
                result = self.replica.receive(decode_op(raw, self.replica.ctx), source)
            except InvalidInput:
                continue
            missing.update(result.missing)
        return missing


def run_to_quiescence(a: Side, b: Side, first: list[Message], second: list[Message], limit: int = 10_000) -> int:
    """Deliver messages (through the codec) until none are left; return how many went by."""
    queue: deque[tuple[Side, Side, Message]] = deque()
    queue.extend((b, a, m) for m in first)  # (receiver, sender, message)
    queue.extend((a, b, m) for m in second)
    count = 0
    while queue:
        count += 1
        assert count < limit, "sync did not reach quiescence"
        receiver, sender, message = queue.popleft()
        message = decode_message(encode_message(message))
        step = receiver.session.receive(receiver.view, message)
        out = list(step.send)
        if step.deliver:
            missing = receiver.apply(step.deliver, sender.name)
            out += receiver.session.after_delivery(receiver.view, missing)
        queue.extend((sender, receiver, m) for m in out)
    return count


def expected_closure(ops: set[int]) -> set[bytes]:
    """The ops of POOL (by index) whose whole causal past is in the set: what can be accepted."""
    replica = Replica(GENESIS)
    for index in sorted(ops):
        replica.receive(POOL[index])
    return set(replica.graph.ops)


subsets = st.sets(st.integers(0, len(POOL) - 1))
configs = st.builds(
    SyncConfig,
    max_push_ops=st.integers(1, 50),
    max_ops_bytes=st.integers(1, 3000),
    max_inflight_wants=st.integers(1, 20),
)


@settings(deadline=None)
@given(subsets, subsets, configs, st.permutations(range(len(POOL))))
def test_two_replicas_converge(left: set[int], right: set[int], config: SyncConfig, order: list[int]) -> None:
    a, b = Side(b"A", config), Side(b"B", config)
    for index in order:  # any delivery order; missing parents wait in the pending buffer
        if index in left:
            a.replica.receive(POOL[index])
        if index in right:
            b.replica.receive(POOL[index])
    run_to_quiescence(a, b, a.session.start(a.view), b.session.start(b.view))
    # Periodic rounds: a Status that is not the first of a session, nor pulls a chunk, gets only
    # what the peer lacked at its previous Status (recent operations are left to gossip for a
    # round), so operations accepted during an exchange may need up to two more rounds. And a
    # Want the peer cannot answer (a parent neither side has) holds its in-flight slot until
    # the next tick, so with `max_inflight_wants` slots the wanted ids move that many a round.
    union = expected_closure(left | right)
    for _ in range(3 + len(POOL) // config.max_inflight_wants):
        run_to_quiescence(a, b, a.session.tick(a.view), b.session.tick(b.view))
        if set(a.replica.graph.ops) == union == set(b.replica.graph.ops):
            break
    assert set(a.replica.graph.ops) == union
    assert set(b.replica.graph.ops) == union
    assert a.replica.state_hash() == b.replica.state_hash()
    # quiescent: a further round of ticks moves nothing
    run_to_quiescence(a, b, a.session.tick(a.view), b.session.tick(b.view))
    assert len(a.replica.graph) == len(union) == len(b.replica.graph)


def test_start_up_exchange_alone_brings_a_late_replica_up_to_date() -> None:
    a, b = Side(b"A", SyncConfig(max_push_ops=5)), Side(b"B", SyncConfig(max_push_ops=5))
    for op in POOL:
        a.replica.receive(op)
    run_to_quiescence(a, b, a.session.start(a.view), b.session.start(b.view))
    assert set(b.replica.graph.ops) == set(a.replica.graph.ops)


def test_catch_up_is_paced_in_bounded_chunks() -> None:
    config = SyncConfig(max_push_ops=7, max_ops_bytes=1000)
    a, b = Side(b"A", config), Side(b"B", config)
    for op in POOL:
        a.replica.receive(op)
    seen: list[int] = []
    original = a.session.receive

    def spy(view: HashGraphView, message: Message):  # type: ignore[no-untyped-def]
        step = original(view, message)
        seen.append(sum(len(m.ops) for m in step.send if isinstance(m, Ops)))
        return step

    a.session.receive = spy  # type: ignore[method-assign]
    run_to_quiescence(a, b, a.session.start(a.view), b.session.start(b.view))
    assert set(b.replica.graph.ops) == set(a.replica.graph.ops)
    assert max(seen) <= 7
    for message in a.session._pack(list(a.replica.graph.ops.values()), more=False):
        assert len(encode_message(message)) <= 1000 + 9 * 2048 + 16


def test_wrong_channel_status_is_rejected() -> None:
    side = Side(b"A", SyncConfig())
    with pytest.raises(UnexpectedMessage):
        side.session.receive(side.view, make_status(b"\x01" * 32, {}, []))


def test_want_is_bounded_and_answers_only_what_we_hold() -> None:
    side = Side(b"A", SyncConfig(max_inflight_wants=5))
    for op in POOL[:10]:
        side.replica.receive(op)
    step = side.session.receive(side.view, Want((POOL[0].op_id, b"\x00" * 32)))
    assert [m.ops for m in step.send if isinstance(m, Ops)] == [(POOL[0].raw,)]
    wants = side.session.need(side.view, [bytes([i]) * 32 for i in range(1, 20)])
    assert sum(len(w.ids) for w in wants if isinstance(w, Want)) == 5
    assert side.session.need(side.view, []) == []
    tick = side.session.tick(side.view)
    assert sum(len(w.ids) for w in tick if isinstance(w, Want)) == 5


# -- a flood of missing parents (tests/crdt/test_pending_flood.py has the buffer's side) -------------


def flooded_side(config: SyncConfig) -> tuple[Side, set[bytes], set[bytes]]:
    """A replica whose pending buffer holds a Byzantine author's flood (operations naming 128
    parents that do not exist: its share of 1,024 missing ids) and two honest authors' gaps.
    Returns it with the honest and the flood missing ids."""
    side = Side(b"A", config)
    people = authors(GENESIS)
    flooder = people[2]
    body = {"to": people[0].address, "token": "USDC", "amount": 1}
    for i in range(40):
        fake = [keccak256(b"nowhere/%d/%d" % (i, j)) for j in range(128)]
        side.replica.receive_many([sign_op(flooder.ctx, flooder.key, i + 1, fake, "transfer", body)], b"relay")
    honest = []
    for author, length in ((people[0], 6), (people[1], 2)):
        chain = [author.transfer(people[2].address) for _ in range(length)]
        honest += chain[1::2]  # every other op: each waits for the one before
    side.replica.receive_many(honest, b"relay")
    missing = side.replica.graph.pending.missing()
    flood = {op_id for op_id in missing if side.view.is_missing_parent(op_id)} - {op.op_id for op in POOL}
    honest_missing = {parent for op in honest for parent in op.parents} & missing
    return side, honest_missing, flood - honest_missing


@pytest.mark.hostile
def test_regression_a_flood_of_missing_parents_does_not_crowd_out_honest_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tick used to sort the whole missing set and ask for it in id order, so 1,000s of ids
    that do not exist took the whole Want budget, every 0.5 s, forever. Now a tick asks for
    the missing parents one author at a time within the budget: the honest gaps in every tick,
    the flood's ids a share at a time, and without reading the whole missing set."""
    config = SyncConfig(max_inflight_wants=16)
    side, honest, flood = flooded_side(config)
    assert len(honest) == 4
    assert len(flood) == 1024
    monkeypatch.setattr(PendingBuffer, "missing", lambda self: pytest.fail("a tick read the whole missing set"))
    asked_flood: set[bytes] = set()
    ticks = 0
    while asked_flood != flood:
        ticks += 1
        assert ticks <= 1024 // 12 + 1  # the flooder's share is 16 - 4 ids a tick
        messages = side.session.tick(side.view) if ticks > 1 else side.session.start(side.view)
        asked = {op_id for m in messages if isinstance(m, Want) for op_id in m.ids}
        assert len(asked) <= 16
        assert honest <= asked  # every tick, however large the flood
        if asked_flood & asked:  # no flood id twice until all were asked once
            assert asked_flood | (asked & flood) == flood
        asked_flood |= asked & flood
    assert side.session.statistics().wanted == 0


def test_a_want_nobody_answers_is_dropped_after_its_retries() -> None:
    side = Side(b"A", SyncConfig(max_want_retries=2))
    nowhere = b"\x07" * 32  # not a missing parent: say, a cut head the driver asked for
    assert [m.ids for m in side.session.need(side.view, [nowhere]) if isinstance(m, Want)] == [(nowhere,)]
    for _ in range(2):
        assert [m.ids for m in side.session.tick(side.view) if isinstance(m, Want)] == [(nowhere,)]
    assert [m for m in side.session.tick(side.view) if isinstance(m, Want)] == []
    assert side.session.statistics().wanted == side.session.statistics().requested == 0


def test_a_congested_session_answers_a_status_without_pushing_and_pushes_once_drained() -> None:
    """While our queue to the peer has not drained, a Status gets no push (it would queue behind
    what is still unsent, and be stale on arrival); the next Status after it drained gets what
    the peer still lacks. A Status's unknown heads are still asked for."""
    a, b = Side(b"A", SyncConfig()), Side(b"B", SyncConfig())
    for op in POOL:
        a.replica.receive(op)
    b_status = b.session.status(b.view)
    congested = a.session.receive(a.view, b_status, congested=True)
    assert not any(isinstance(m, Ops) for m in congested.send)
    assert a.session.statistics().pushes_deferred == 1
    drained = a.session.receive(a.view, b_status)
    pushed = [raw for m in drained.send if isinstance(m, Ops) for raw in m.ops]
    assert len(pushed) == len(a.replica.graph.ops)  # the first answered Status gets everything
    a_status = a.session.status(a.view)
    asked = b.session.receive(b.view, a_status, congested=True)
    assert any(isinstance(m, Want) for m in asked.send)  # a's heads, unknown to b, are wanted
    assert not any(isinstance(m, Ops) for m in asked.send)
