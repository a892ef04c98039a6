"""The ledger's rules (DESIGN.md, "Ledger"; crdt/ledger.py): every Reason is reachable, locks,
withdrawals, deposits and payouts, and the undo journal restores state exactly."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.ledger import Deposit, Ledger, Reason
from crdt.merkle import WITHDRAWN, leaf_hash
from crdt.replica import Cut, Replica
from crdt.units import from_e9
from tests.crdt.crdt_support import ADDR, E9, GENESIS, INITIAL, USDC, WETH, check_replica, sign, transfer
from tests.crdt.test_markets_core import MARKET_REASONS

A, B, OBSERVER = 0, 1, 4


def apply_one(author: int, kind: str, body: dict[str, Any], seq: int = 1) -> Reason | None:
    return Ledger(GENESIS).apply(sign(author, seq, [], kind, body))


REASON_CASES = [
    (A, "teleport", {}, Reason.UNKNOWN_KIND),
    (A, "transfer", {"to": ADDR[B], "token": "USDC"}, Reason.BAD_BODY),
    (A, "transfer", {**transfer(B, 1), "memo": "x"}, Reason.BAD_BODY),
    (A, "transfer", {"to": "0xabc", "token": "USDC", "amount": 1}, Reason.BAD_BODY),
    (A, "transfer", {"to": ADDR[B], "token": "USDC", "amount": True}, Reason.BAD_BODY),
    (A, "transfer", {"to": ADDR[B], "token": 5, "amount": 1}, Reason.BAD_BODY),
    (A, "lock", {"token": "USDC", "amount": 1, "until": 10, "reason": "r" * 65}, Reason.BAD_BODY),
    (A, "lock", {"token": "USDC", "amount": 1, "until": "10", "reason": "r"}, Reason.BAD_BODY),
    (OBSERVER, "transfer", transfer(A, 1), Reason.NOT_PERMITTED),
    (OBSERVER, "withdraw", {"token": "USDC", "amount": 1}, Reason.NOT_PERMITTED),
    (OBSERVER, "lock", {"token": "USDC", "amount": 1, "until": 10, "reason": ""}, Reason.NOT_PERMITTED),
    (A, "transfer", transfer(B, 1, "DOGE"), Reason.UNKNOWN_TOKEN),
    (A, "withdraw", {"token": "DOGE", "amount": 1}, Reason.UNKNOWN_TOKEN),
    (A, "transfer", {"to": bytes([9]) * 20, "token": "USDC", "amount": 1}, Reason.UNKNOWN_RECIPIENT),
    (A, "transfer", transfer(A, 1), Reason.SELF_TRANSFER),
    (A, "transfer", transfer(B, 0), Reason.BAD_AMOUNT),
    (A, "transfer", transfer(B, -1), Reason.BAD_AMOUNT),
    (A, "withdraw", {"token": "USDC", "amount": 0}, Reason.BAD_AMOUNT),
    (A, "transfer", transfer(B, INITIAL + 1), Reason.INSUFFICIENT_BALANCE),
    (A, "withdraw", {"token": "WETH", "amount": INITIAL + 1}, Reason.INSUFFICIENT_BALANCE),
    (A, "lock", {"token": "USDC", "amount": INITIAL + 1, "until": 10, "reason": ""}, Reason.INSUFFICIENT_BALANCE),
    (A, "lock", {"token": "USDC", "amount": 1, "until": 0, "reason": ""}, Reason.LOCK_IN_PAST),
    (A, "lock", {"token": "USDC", "amount": 1, "until": -5, "reason": ""}, Reason.LOCK_IN_PAST),
]


@pytest.mark.parametrize(("author", "kind", "body", "reason"), REASON_CASES)
def test_each_reason(author: int, kind: str, body: dict[str, Any], reason: Reason) -> None:
    ledger = Ledger(GENESIS)
    before = ledger.state_hash()
    assert ledger.apply(sign(author, 1, [], kind, body)) == reason
    assert ledger.state_hash() == before  # a rejected operation leaves no trace
    ledger.check_conservation()


def test_every_reason_is_covered_here() -> None:
    reasons = {case[3] for case in REASON_CASES}
    # the markets' reasons have their own cases in tests/crdt/test_markets_core.py
    assert reasons | {Reason.EQUIVOCATION, Reason.STALE} | MARKET_REASONS == set(Reason)


def test_equivocation_reason_for_the_second_op_with_one_seq() -> None:
    ledger = Ledger(GENESIS)
    first = sign(A, 1, [], "transfer", transfer(B, 1))
    second = sign(A, 1, [], "transfer", transfer(B, 2))
    assert ledger.apply(first) is None
    assert ledger.apply(second) == Reason.EQUIVOCATION


def test_regression_twin_of_a_rejected_op_is_still_equivocation() -> None:
    """The first operation at a seq owns it even when replay rejected it: an equivocator cannot
    get a twin applied by making the first one fail (found by the crdt test suite's review)."""
    ledger = Ledger(GENESIS)
    overdraw = sign(A, 1, [], "transfer", transfer(B, INITIAL + 1))
    twin = sign(A, 1, [], "transfer", transfer(B, 1))
    assert ledger.apply(overdraw) == Reason.INSUFFICIENT_BALANCE
    assert ledger.apply(twin) == Reason.EQUIVOCATION
    assert ledger.balance(ADDR[A], "USDC") == INITIAL


def test_stale_reason() -> None:
    assert Ledger(GENESIS).apply(sign(A, 1, [], "transfer", transfer(B, 1)), stale=True) == Reason.STALE


def test_lock_is_released_at_the_checkpoint_whose_time_passes_until() -> None:
    replica = Replica(GENESIS)
    lock = sign(A, 1, [], "lock", {"token": "USDC", "amount": 30 * E9, "until": 2000, "reason": "margin"})
    replica.receive(lock)
    account = "0x" + ADDR[A].hex()
    expected = {"free": INITIAL - 30 * E9, "held": 0, "locked": 30 * E9, "withdrawn": 0}
    assert replica.balances()[account]["USDC"] == expected
    payout_before = replica.totals()
    replica.certify(Cut(1, (lock.op_id,), 1999))
    assert replica.balances()[account]["USDC"]["locked"] == 30 * E9
    assert replica.totals() == payout_before  # locked funds still count in the payout
    replica.certify(Cut(2, (lock.op_id,), 2000))
    assert replica.balances()[account]["USDC"] == {"free": INITIAL, "held": 0, "locked": 0, "withdrawn": 0}
    check_replica(replica)


def test_lock_until_at_or_before_the_last_checkpoint_time_is_in_the_past() -> None:
    replica = Replica(GENESIS)
    replica.certify(Cut(1, (), 5000))
    late = sign(A, 1, [], "lock", {"token": "USDC", "amount": 1, "until": 5000, "reason": ""})
    ok = sign(B, 1, [], "lock", {"token": "USDC", "amount": 1, "until": 5001, "reason": ""})
    replica.receive(late)
    replica.receive(ok)
    assert replica.status(late.op_id) == "rejected:lock_in_past"
    assert replica.status(ok.op_id) == "tentative"


def test_withdrawals_accumulate_in_the_withdrawal_leaf_and_leave_the_balance_leaf() -> None:
    replica = Replica(GENESIS)
    first = sign(A, 1, [], "withdraw", {"token": "USDC", "amount": 40 * E9})
    replica.receive(first)
    replica.receive(sign(A, 2, [first.op_id], "withdraw", {"token": "USDC", "amount": 2 * E9}))
    view = replica.balances()["0x" + ADDR[A].hex()]["USDC"]
    assert view == {"free": INITIAL - 42 * E9, "held": 0, "locked": 0, "withdrawn": 42 * E9}
    tree = replica.payout_tree()
    withdrawn, _ = tree.proof_for(ADDR[A], USDC.address, WITHDRAWN)
    assert withdrawn.amount == 42_000_000  # cumulative, in USDC units
    assert withdrawn.hash() == leaf_hash(ADDR[A], USDC.address, 42_000_000, WITHDRAWN)
    balance, _ = tree.proof_for(ADDR[A], USDC.address)
    assert balance.amount - from_e9(INITIAL - 42 * E9, USDC.decimals) in (0, 1)  # apportioned
    assert balance.hash() != leaf_hash(ADDR[A], USDC.address, balance.amount, WITHDRAWN)  # kinds never collide
    assert replica.withdrawn_totals()[0] == 42_000_000
    check_replica(replica)


def test_a_withdrawal_is_in_whole_units_of_the_token() -> None:
    """A withdrawal leaf is in token units; a part of a unit could never be paid, and rounding
    it would make a later leaf shrink. So a USDC withdrawal is a multiple of 1,000 e9."""
    assert apply_one(A, "withdraw", {"token": "USDC", "amount": E9 + 1}) == Reason.BAD_AMOUNT
    assert apply_one(A, "withdraw", {"token": "USDC", "amount": 1_000}) is None
    assert apply_one(A, "withdraw", {"token": "WETH", "amount": 1}) is None  # 18 decimals: any e9 amount


def test_deposits_credited_by_a_cut_appear_in_balances_and_totals() -> None:
    replica = Replica(GENESIS)
    before = replica.totals()
    deposits = (
        Deposit(1, ADDR[OBSERVER], "USDC", 1_234_567_891),  # 1.234567891 USDC: 1234567 units
        Deposit(2, ADDR[OBSERVER], "WETH", 1_500_000_001),
    )
    replica.certify(Cut(1, (), 1000, deposits))
    view = replica.balances()["0x" + ADDR[OBSERVER].hex()]
    assert view["USDC"]["free"] == 1_234_567_891
    assert view["WETH"]["free"] == 1_500_000_001
    assert replica.totals() == (before[0] + 1_234_567, before[1] + 1_500_000_001 * 10**9)
    assert replica.ledger.deposit_nonce == 2
    check_replica(replica)


def test_balance_leaves_apportion_the_units_that_rounding_each_down_would_strand() -> None:
    # four traders each hold INITIAL = 100e9 + 777 of USDC: 400e9 + 3,108 e9 in all, which is
    # 400,000,003 whole units; rounding each leaf down would pay 400,000,000 and strand 3
    replica = Replica(GENESIS)
    assert replica.totals()[0] == 400_000_003
    leaves = replica.payout_tree().leaves
    amounts = sorted(leaf.amount for leaf in leaves if leaf.token == USDC.address and leaf.kind == 0)
    assert amounts[-4:] == [100_000_000, 100_000_001, 100_000_001, 100_000_001]  # the earlier three get one each


@given(st.lists(st.integers(0, 10**15), min_size=1, max_size=8), st.integers(0, 18))
def test_apportion_sums_to_the_whole_units_and_moves_each_by_less_than_one(amounts: list[int], decimals: int) -> None:
    from crdt.units import apportion

    units = apportion(amounts, decimals)
    assert sum(units) == from_e9(sum(amounts), decimals)
    for amount, unit in zip(amounts, units, strict=True):
        assert from_e9(amount, decimals) <= unit <= from_e9(amount, decimals) + (1 if decimals < 9 else 0)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(1, 60 * E9)), max_size=12))
def test_undo_restores_the_state_exactly(transfers: list[tuple[int, int, int]]) -> None:
    ledger = Ledger(GENESIS)
    ops = [sign(a, i + 1, [], "transfer", transfer(b, amount)) for i, (a, b, amount) in enumerate(transfers)]
    states, frames = [], []
    for op in ops:
        states.append(ledger.canonical())
        frame = ledger.begin()
        ledger.apply(op)
        ledger.end()
        frames.append(frame)
        ledger.check_conservation()
    for frame, state in zip(reversed(frames), reversed(states), strict=True):
        ledger.undo(frame)
        assert ledger.canonical() == state
    assert ledger.seq_high == {}


def test_regression_duplicate_token_addresses_are_refused() -> None:
    """Two tokens with one contract address give two payout leaves for the same
    (account, token) pair, both claimable once each, and double-counted totals."""
    from crdt.errors import InvalidGenesis

    with pytest.raises(InvalidGenesis):
        Genesis.create(
            chain_id=1,
            adjudicator=bytes(20),
            participants=[Participant(ADDR[i], Role.TRADER) for i in range(4)],
            tokens=[WETH, Token("WETH2", WETH.address, 18)],  # type: ignore[arg-type]
            initial_balances=[InitialBalance(ADDR[0], "WETH", 1)],  # type: ignore[arg-type]
        )


def test_a_dropped_replica_is_freed_without_the_cyclic_collector() -> None:
    """No reference cycle in a replica or its ledger (the ledger's handler table once held bound
    methods): what replay built is freed when the replica goes, not by a later full collection,
    which would run in the middle of someone else's work and cost in proportion to the heap."""
    op = sign(A, 1, [], "transfer", transfer(B, 1))
    gc.collect()
    replica = Replica(GENESIS)
    replica.receive(op)
    replica.certify(Cut(1, (op.op_id,), 0))
    del replica
    assert gc.collect() == 0
