"""Certified cuts (DESIGN.md, "Order and finality"): what certify accepts, what it refuses, and
that a refusal changes nothing. Named regression tests for bugs found by the property suite."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt.errors import InvalidCut, InvalidInput, MissingOperations
from crdt.ledger import Deposit
from crdt.replica import Cut, Replica
from tests.crdt.crdt_support import (
    ADDR,
    E9,
    GENESIS,
    INITIAL,
    Workload,
    check_replica,
    closed_subset,
    fingerprint,
    heads_of,
    sign,
    transfer,
    workloads,
)


def snapshot(replica: Replica) -> tuple[Any, ...]:
    return (
        fingerprint(replica),
        replica.version,
        replica.ledger.canonical(),
        dict(replica.outcome),
        {op_id: replica.status(op_id) for op_id in replica.graph.ops},
        dict(replica.epoch_of),
    )


def chain() -> tuple[Replica, list[Any]]:
    """A replica with four operations: a1 <- a2 by 0, b1 by 1 (concurrent), c1 by 2 on both."""
    a1 = sign(0, 1, [], "transfer", transfer(1, 10 * E9))
    a2 = sign(0, 2, [a1.op_id], "transfer", transfer(2, 10 * E9))
    b1 = sign(1, 1, [], "transfer", transfer(0, 5 * E9))
    c1 = sign(2, 1, [a2.op_id, b1.op_id], "withdraw", {"token": "USDC", "amount": 3 * E9})
    replica = Replica(GENESIS)
    for op in (a1, a2, b1, c1):
        replica.receive(op)
    return replica, [a1, a2, b1, c1]


def test_certify_makes_operations_final_and_credits_deposits() -> None:
    replica, (a1, a2, b1, c1) = chain()
    replica.certify(Cut(1, (a2.op_id,), 1000, (Deposit(1, ADDR[4], "USDC", 5 * E9),)))
    assert [replica.status(op.op_id) for op in (a1, a2, b1, c1)] == ["final", "final", "tentative", "tentative"]
    assert replica.balances()["0x" + ADDR[4].hex()]["USDC"]["free"] == 5 * E9
    check_replica(replica)


def test_certify_with_a_missing_head_raises_and_changes_nothing() -> None:
    replica, _ = chain()
    before = snapshot(replica)
    unknown = bytes([7]) * 32
    with pytest.raises(MissingOperations) as info:
        replica.certify(Cut(1, (unknown,), 1000))
    assert info.value.missing == {unknown}
    assert snapshot(replica) == before


def test_cut_that_does_not_contain_the_previous_cut_is_invalid() -> None:
    replica, (_a1, a2, b1, c1) = chain()
    replica.certify(Cut(1, (a2.op_id,), 1000))
    before = snapshot(replica)
    with pytest.raises(InvalidCut):
        replica.certify(Cut(2, (b1.op_id,), 2000))
    assert snapshot(replica) == before
    replica.certify(Cut(2, (c1.op_id,), 2000))
    assert replica.version == 2


@pytest.mark.parametrize(
    "cut",
    [
        Cut(2, (), 1000),  # wrong version
        Cut(1, (), 1000, (Deposit(2, ADDR[0], "USDC", 1),)),  # nonce gap
    ],
)
def test_invalid_cuts_change_nothing(cut: Cut) -> None:
    replica, _ = chain()
    before = snapshot(replica)
    with pytest.raises(InvalidCut):
        replica.certify(cut)
    assert snapshot(replica) == before


def test_time_going_backwards_is_invalid() -> None:
    replica, (a1, *_) = chain()
    replica.certify(Cut(1, (a1.op_id,), 1000))
    before = snapshot(replica)
    with pytest.raises(InvalidCut):
        replica.certify(Cut(2, (a1.op_id,), 999))
    assert snapshot(replica) == before


@pytest.mark.parametrize(
    "deposit",
    [
        Deposit(1, bytes([9]) * 20, "USDC", 5),  # not a participant
        Deposit(1, ADDR[0], "DOGE", 5),  # not a token of the channel
        Deposit(1, ADDR[0], "USDC", -5),  # negative
    ],
)
def test_regression_bad_deposit_in_a_cut_changes_nothing(deposit: Deposit) -> None:
    """Found by review and confirmed here: certify credited deposits only after it had unwound
    the tentative suffix and appended the cut, so a bad deposit left the replica half-certified
    (version bumped, tentative operations gone from the ledger)."""
    replica, _ = chain()
    before = snapshot(replica)
    with pytest.raises(InvalidInput):
        replica.certify(Cut(1, (), 1000, (deposit,)))
    assert snapshot(replica) == before
    check_replica(replica)


def test_regression_first_cut_with_negative_time_changes_nothing() -> None:
    replica, _ = chain()
    before = snapshot(replica)
    with pytest.raises(InvalidInput):
        replica.certify(Cut(1, (), -1))
    assert snapshot(replica) == before


def test_regression_cut_with_duplicate_heads_is_refused() -> None:
    """A cut naming a head twice made every operation of epoch v+2 `stale` (the freshness mask
    could never be full), so one malformed certified value bricked the channel for an epoch."""
    replica, (a1, _a2, _b1, _c1) = chain()
    before = snapshot(replica)
    with pytest.raises(InvalidCut):
        replica.certify(Cut(1, (a1.op_id, a1.op_id), 1000))
    assert snapshot(replica) == before


def test_regression_empty_cut_then_third_epoch_does_not_crash() -> None:
    """Shrunk from test_certified_epochs_follow_the_epoch_order: two cuts, the first with no
    heads (a checkpoint that only credits deposits), then any operation: the freshness check
    took min() over the empty head list and raised ValueError on receive."""
    replica = Replica(GENESIS)
    replica.certify(Cut(1, (), 1000, (Deposit(1, ADDR[4], "USDC", E9),)))
    replica.certify(Cut(2, (), 2000))
    op = sign(0, 1, [], "transfer", transfer(1, E9))
    replica.receive(op)
    assert replica.status(op.op_id) == "tentative"
    replica.certify(Cut(3, (op.op_id,), 3000))
    assert replica.status(op.op_id) == "final"
    assert replica.balances()["0x" + ADDR[1].hex()]["USDC"]["free"] == INITIAL + E9


def test_stale_operation_is_rejected_with_reason_stale() -> None:
    replica, (_a1, a2, b1, c1) = chain()
    replica.certify(Cut(1, (a2.op_id,), 1000))
    replica.certify(Cut(2, (c1.op_id,), 2000))
    # epoch 3: must have a2 (head of cut 1) in its past. d1 chains only on b1: stale.
    d1 = sign(1, 2, [b1.op_id], "transfer", transfer(0, E9))
    fresh = sign(3, 1, [c1.op_id], "transfer", transfer(0, E9))
    replica.receive(d1)
    replica.receive(fresh)
    assert replica.status(d1.op_id) == "rejected:stale"
    assert replica.status(fresh.op_id) == "tentative"
    replica.certify(Cut(3, (d1.op_id, fresh.op_id), 3000))
    assert replica.status(d1.op_id) == "rejected:stale"
    assert replica.status(fresh.op_id) == "final"
    assert [(op.op_id, str(reason)) for op, reason in replica.rejected()] == [(d1.op_id, "stale")]


@given(workload=workloads(), data=st.data())
def test_preview_gives_what_certify_gives_and_changes_nothing(workload: Workload, data: st.DataObject) -> None:
    """Cuts at growing prefixes of the creation order (each causally closed): before each is
    certified, `preview` must report exactly the roots that certifying it then produces, and
    leave the replica as it was."""
    replica = Replica(GENESIS)
    replica.receive_many(workload.ops)
    by_id = {op.op_id: op for op in workload.ops}
    ends = sorted(data.draw(st.sets(st.integers(1, len(workload.ops)), min_size=1, max_size=3)))
    for version, end in enumerate(ends, start=1):
        ids = closed_subset(workload.ops, [op.op_id for op in workload.ops[:end]])
        heads = tuple(sorted(heads_of(by_id, ids)))
        cut = Cut(version, heads, 1000 * version)
        before = fingerprint(replica)
        try:
            preview = replica.preview(cut)
        except InvalidInput:
            with pytest.raises(InvalidInput):
                replica.certify(cut)
            return
        assert fingerprint(replica) == before
        replica.certify(cut)
        # the certified prefix is fixed: roots at the cut = roots of the final state alone
        final = Replica(GENESIS)
        final.receive_many([by_id[i] for i in sorted(ids, key=lambda i: by_id[i].op_id)])
        for certified in replica.cuts:
            final.certify(certified)
        assert (preview.state_hash, preview.payout_root, preview.totals) == (
            final.state_hash(), final.payout_root(), final.totals()
        )
        check_replica(replica)


def test_a_trial_judges_freshness_through_the_operations_tried_before() -> None:
    """A batch's second operation names the first, which is not in the graph yet: past two cuts
    the freshness rule walks its parents through the trial (it raised KeyError here), and finds
    the chain fresh or stale as replay then does."""
    replica, (_a1, a2, b1, c1) = chain()
    replica.certify(Cut(1, (a2.op_id,), 1000))
    replica.certify(Cut(2, (c1.op_id,), 2000))
    fresh = sign(3, 1, [c1.op_id], "transfer", transfer(0, E9))
    fresh_next = sign(3, 2, [fresh.op_id], "transfer", transfer(1, E9))
    stale = sign(1, 2, [b1.op_id], "transfer", transfer(0, E9))
    stale_next = sign(1, 3, [stale.op_id], "transfer", transfer(2, E9))
    before = snapshot(replica)
    with replica.trial() as attempt:
        outcomes = [attempt(op) for op in (fresh, fresh_next, stale, stale_next)]
    assert [str(reason) if reason else None for reason in outcomes] == [None, None, "stale", "stale"]
    assert snapshot(replica) == before
    replica.receive_many([fresh, fresh_next, stale, stale_next])
    statuses = [replica.status(op.op_id) for op in (fresh, fresh_next, stale, stale_next)]
    assert statuses == ["tentative", "tentative", "rejected:stale", "rejected:stale"]
