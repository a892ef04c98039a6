"""Snapshots (crdt/snapshot.py): a replica rebuilt from its snapshot and the operations it held is
the replica that wrote it, table for table, and goes on identically; a file that is not one, is
damaged, forged or of another channel is refused with `InvalidSnapshot`.

The stateful machine of tests/crdt/test_compaction.py also restarts its compacting replica from
a snapshot at random points (spot orders, transfers, Byzantine equivocations, pruned operations)
and keeps comparing it with a replica that never did. Here: perpetual markets (positions,
funding, liquidations, delisting: every table of the ledger), and the refusals.
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings

from crdt.errors import InvalidInput
from crdt.graph import MemoryArchive
from crdt.ops import SignedOp
from crdt.replica import Cut, Replica
from crdt.snapshot import InvalidSnapshot, dump_ledger
from tests.crdt.crdt_support import ADDR
from tests.crdt.markets.test_perp_properties import GENESIS as PERP_GENESIS
from tests.crdt.markets.test_perp_properties import Step, perp_flows, sign_all
from tests.crdt.test_compaction import GENESIS, sign, steady


def rebuilt(replica: Replica) -> Replica:
    """The replica a snapshot of `replica` gives, with the operations `replica` holds in memory."""
    held = [*replica.graph.ops.values(), *replica.graph.pending.ops()]
    return Replica.from_snapshot(replica.genesis, replica.snapshot(), held, archive=replica.graph.archive)


def same(a: Replica, b: Replica) -> None:
    assert a.state_hash() == b.state_hash()
    assert a.payout_root() == b.payout_root()
    assert a.cuts == b.cuts
    assert a.fill_records() == b.fill_records()
    assert a.ledger.positions == b.ledger.positions
    assert a.graph.heads == b.graph.heads
    assert a.graph.version_vector == b.graph.version_vector
    assert {op_id: a.status(op_id) for op_id in a.graph.ops} == {op_id: b.status(op_id) for op_id in a.graph.ops}


@settings(max_examples=40, deadline=None)
@given(perp_flows(max_steps=30))
def test_a_replica_rebuilt_from_its_snapshot_is_the_same_and_goes_on_the_same(steps: list[Step]) -> None:
    """At every certified cut of a perpetual market's flow: every ledger table of the rebuilt
    replica equals the original's (not only the hashed state), and the rest of the flow gives
    both the same state."""
    signed = sign_all(steps, PERP_GENESIS)
    original = Replica(PERP_GENESIS)
    copies: list[Replica] = []
    for item in signed:
        for replica in (original, *copies):
            if isinstance(item, Cut):
                replica.certify(item)
            else:
                replica.receive(item)
        if isinstance(item, Cut):
            before = original.state_hash()
            data = original.snapshot()
            assert original.state_hash() == before  # taking it changes nothing
            copy = Replica.from_snapshot(PERP_GENESIS, data, list(original.graph.ops.values()))
            assert dump_ledger(unwound(copy)) == dump_ledger(unwound(original))
            same(copy, original)
            copies.append(copy)
    for copy in copies:
        same(copy, original)


def unwound(replica: Replica) -> object:
    """The replica's ledger at its last cut (a rebuilt copy, so the replica is not changed)."""
    return Replica.from_snapshot(replica.genesis, replica.snapshot(), []).ledger


def test_a_snapshot_with_a_tentative_suffix_and_pruned_operations() -> None:
    lean, full = Replica(GENESIS, archive=MemoryArchive()), Replica(GENESIS)
    last: dict[int, SignedOp] = {}
    steady(lean, full, 20, last)
    tentative = sign(0, last[0].seq + 1, sorted(full.graph.heads), "transfer",
                     {"to": ADDR[1], "token": "USDC", "amount": 5}, ts=99)
    for replica in (lean, full):
        replica.receive(tentative)
    assert lean.graph.pruned
    again = rebuilt(lean)
    same(again, full)
    assert again.status(tentative.op_id) == "tentative"
    assert again.graph.pruned == lean.graph.pruned
    assert again.graph.pruned_seq == lean.graph.pruned_seq


def _snapshot_value() -> tuple[Replica, list[object]]:
    replica = Replica(GENESIS, archive=MemoryArchive())
    steady(replica, Replica(GENESIS), 6, {})
    return replica, cbor2.loads(replica.snapshot())


def test_damaged_forged_or_foreign_snapshots_are_refused() -> None:
    replica, value = _snapshot_value()
    held = list(replica.graph.ops.values())
    data = replica.snapshot()
    cases = {
        "not CBOR": b"\xff\x00garbage",
        "truncated": data[: len(data) // 2],
        "another format": cbor2.dumps(["parley-snapshot/0", *value[1:]]),
        "another channel": cbor2.dumps([value[0], b"\x01" * 32, *value[2:]]),
    }
    forged = cbor2.loads(data)  # a fresh copy to edit
    tables = forged[5]
    balances = next(entry for entry in tables if entry[0] == "balances")
    balances[1][0][1] += 1  # one base unit more for someone
    cases["a forged balance"] = cbor2.dumps(forged)
    short = list(value)
    short[5] = value[5][:-1]
    cases["a table missing"] = cbor2.dumps(short)
    for what, bad in cases.items():
        with pytest.raises(InvalidSnapshot):
            Replica.from_snapshot(GENESIS, bad, held, archive=replica.graph.archive)
        assert issubclass(InvalidSnapshot, InvalidInput), what
    with pytest.raises(InvalidSnapshot, match="not the one decided"):
        Replica.from_snapshot(GENESIS, data, held, archive=replica.graph.archive, state_hash=b"\x00" * 32)  # type: ignore[arg-type]


def test_a_snapshot_that_does_not_fit_the_operations_is_refused() -> None:
    """The snapshot lists certified operations the caller does not give: refused, not started."""
    replica, _ = _snapshot_value()
    with pytest.raises(InvalidSnapshot, match="closed graph"):
        Replica.from_snapshot(GENESIS, replica.snapshot(), list(replica.graph.ops.values())[1:],
                              archive=replica.graph.archive)
