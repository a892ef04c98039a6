"""CRDT laws of the replica (DESIGN.md, "The hash graph" and "Order and finality").

Every test compares the replica with a plain recomputation (crdt_support.model_replay): heights,
closures, the epoch order, freshness and the ledger rules written again from the docs.
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from crdt.ledger import Deposit
from crdt.replica import Cut, Replica
from crdt.types import OpId
from tests.crdt.crdt_support import (
    ADDR,
    E9,
    GENESIS,
    N_PARTICIPANTS,
    Workload,
    check_replica,
    copy_of,
    fingerprint,
    heads_of,
    heights,
    model_replay,
    replay_in_key_order,
    workloads,
)

FEWER = settings(max_examples=max(10, settings.default.max_examples // 2))


def feed(replica: Replica, ops: list[Any], batched: bool, data: st.DataObject) -> None:
    """Deliver ops one by one (checking conservation after each) or in drawn batches."""
    if not batched:
        for op in ops:
            replica.receive(op)
            check_replica(replica)
        return
    position = 0
    while position < len(ops):
        size = data.draw(st.integers(1, 4))
        result = replica.receive_many(ops[position : position + size])
        assert not [r for r in result.rejected if r[0].op_id in {op.op_id for op in ops}]
        position += size
        check_replica(replica)


def combine(parts: list[Replica], data: st.DataObject) -> Replica:
    """Merge replicas in a drawn grouping (a random binary tree), always into copies."""
    if len(parts) == 1:
        return parts[0]
    split = data.draw(st.integers(1, len(parts) - 1))
    left, right = combine(parts[:split], data), combine(parts[split:], data)
    merged = copy_of(left)
    merged.merge(right)
    check_replica(merged)
    return merged


@given(workloads(), st.data())
def test_replicas_converge_whatever_the_delivery(workload: Workload, data: st.DataObject) -> None:
    ops = workload.ops
    reference = replay_in_key_order(GENESIS, ops)
    model, outcome = model_replay(GENESIS, ops)
    assert reference.balances() == model.views()
    assert {op_id: reference.outcome[op_id] for op_id in outcome} == outcome
    assert len(reference.graph) == len(ops)
    event(f"rejections: {min(len(reference.rejected()), 3)}")

    duplicates = data.draw(st.lists(st.sampled_from(ops), max_size=4))
    single = Replica(GENESIS)
    feed(single, data.draw(st.permutations(ops + duplicates)), data.draw(st.booleans()), data)

    groups = data.draw(st.integers(1, 3))
    assignment = data.draw(st.lists(st.integers(0, groups - 1), min_size=len(ops), max_size=len(ops)))
    parts = []
    for group in range(groups):
        mine = [op for op, g in zip(ops, assignment, strict=True) if g == group]
        mine += data.draw(st.lists(st.sampled_from(ops), max_size=2))  # overlap between partitions
        part = Replica(GENESIS)
        feed(part, data.draw(st.permutations(mine)), data.draw(st.booleans()), data)
        parts.append(part)
    merged = combine(data.draw(st.permutations(parts)), data)

    expected = fingerprint(reference)
    assert fingerprint(single) == expected
    assert fingerprint(merged) == expected
    assert single.totals() == merged.totals() == reference.totals()


@st.composite
def replicas_of(draw: st.DrawFn, workload: Workload, cut: Cut | None) -> Replica:
    """A replica holding a drawn subset of the workload, delivered in a drawn order (so some
    operations may still wait for parents), with `cut` certified if it can be."""
    ops = workload.ops
    chosen = draw(st.lists(st.sampled_from(ops), max_size=len(ops))) if ops else []
    replica = Replica(GENESIS)
    for op in draw(st.permutations(chosen)):
        replica.receive(op)
    if cut is not None and all(head in replica.graph for head in cut.heads) and draw(st.booleans()):
        replica.certify(cut)
    return replica


@FEWER
@given(workloads(), st.data())
def test_merge_is_commutative_associative_idempotent(workload: Workload, data: st.DataObject) -> None:
    ops = workload.ops
    cut = None
    if data.draw(st.booleans()):
        prefix = data.draw(st.integers(0, len(ops)))
        by_id = {op.op_id: op for op in ops}
        heads = tuple(heads_of(by_id, [op.op_id for op in ops[:prefix]]))
        cut = Cut(1, heads, 1000, (Deposit(1, ADDR[4], "USDC", 7 * E9),))
    a, b, c = (data.draw(replicas_of(workload, cut)) for _ in range(3))

    def union(x: Replica, y: Replica) -> Replica:
        z = copy_of(x)
        z.merge(y)
        check_replica(z)
        return z

    assert fingerprint(copy_of(a)) == fingerprint(a)
    assert fingerprint(union(a, a)) == fingerprint(a)
    assert fingerprint(union(a, b)) == fingerprint(union(b, a))
    assert fingerprint(union(union(a, b), c)) == fingerprint(union(a, union(b, c)))
    # and merging never loses anything either side had
    both = union(a, b)
    for side in (a, b):
        assert side.graph.ops.keys() <= both.graph.ops.keys() | set(both.graph.pending._entries)


@given(workloads(), st.data())
def test_incremental_replay_equals_full_replay(workload: Workload, data: st.DataObject) -> None:
    ops = workload.ops
    height = heights(ops)
    replica = Replica(GENESIS)
    applied: list[tuple[int, OpId]] = []
    for op in data.draw(st.permutations(ops)):
        before = replica.replayed
        result = replica.receive(op)
        expected = 0
        for accepted in result.accepted:
            key = (height[accepted.op_id], accepted.op_id)
            expected += sum(1 for k in applied if k > key)  # the late op sorts before these
            insort(applied, key)
        assert replica.replayed - before == expected
        check_replica(replica)
    fresh = replay_in_key_order(GENESIS, ops)
    assert fresh.replayed == 0
    assert fingerprint(replica) == fingerprint(fresh)
    assert [op.op_id for op in replica.applied_order()] == [key[1] for key in applied]


@st.composite
def cut_plans(draw: st.DrawFn, workload: Workload) -> list[Cut]:
    """Cuts at growing prefixes of the creation order (each prefix is causally closed), with
    growing times and consecutive deposit nonces. A prefix may be empty: a cut with no heads."""
    ops = workload.ops
    by_id = {op.op_id: op for op in ops}
    count = draw(st.integers(1, 4))
    prefixes = sorted(draw(st.lists(st.integers(0, len(ops)), min_size=count, max_size=count)))
    cuts, nonce, time = [], 0, 0
    for version, prefix in enumerate(prefixes, start=1):
        time += draw(st.sampled_from([0, 1, 999, 1000, 1500]))
        deposits = []
        for _ in range(draw(st.integers(0, 2))):
            nonce += 1
            account = ADDR[draw(st.integers(0, N_PARTICIPANTS - 1))]
            token = draw(st.sampled_from(["USDC", "WETH"]))
            deposits.append(Deposit(nonce, account, token, draw(st.integers(0, 50)) * E9 + 3))
        heads = tuple(heads_of(by_id, [op.op_id for op in ops[:prefix]]))
        cuts.append(Cut(version, heads, time, tuple(deposits)))
    return cuts


@given(workloads(max_ops=22), st.data())
def test_certified_epochs_follow_the_epoch_order(workload: Workload, data: st.DataObject) -> None:
    ops = workload.ops
    cuts = data.draw(cut_plans(workload))
    model, outcome = model_replay(GENESIS, ops, cuts)
    event(f"stale: {sum(1 for r in outcome.values() if r == 'stale') > 0}")

    # A: certifies each cut as soon as it holds the cut's heads, while operations trickle in
    early = Replica(GENESIS)
    pending_cuts = list(cuts)
    for op in data.draw(st.permutations(ops)):
        early.receive(op)
        while pending_cuts and all(head in early.graph for head in pending_cuts[0].heads):
            early.certify(pending_cuts.pop(0))
        check_replica(early)
    for cut in pending_cuts:
        early.certify(cut)
    # B: receives everything, then certifies every cut
    late = replay_in_key_order(GENESIS, ops)
    for cut in cuts:
        late.certify(cut)
        check_replica(late)

    for replica in (early, late):
        assert replica.balances() == model.views()
        assert {op_id: replica.outcome[op_id] for op_id in outcome} == outcome
        assert replica.ledger.deposit_nonce == sum(len(cut.deposits) for cut in cuts)
        assert replica.ledger.time == cuts[-1].time
    assert fingerprint(early) == fingerprint(late)
    final = set().union(*(set(c.heads) for c in cuts))
    for op in ops:
        status = early.status(op.op_id)
        if outcome[op.op_id] is not None:
            assert status == f"rejected:{outcome[op.op_id]}"
        elif any(op.op_id in early.graph.closure(cut.heads) for cut in cuts) or op.op_id in final:
            assert status == "final"
        else:
            assert status == "tentative"
