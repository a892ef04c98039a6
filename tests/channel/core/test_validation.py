"""Proposal validation: the pure judgement of a proposed checkpoint against this node's replica
(`channel.core.validation`), and how the driver fetches the operations a proposal needs.

Before validation was pure, `NodeApplication.validate` asked the peers for a cut's missing
operations itself, from inside the machine's call stack, in the proposal's head order; and the
driver asked for a decided cut's missing operations in frozenset order. Both reached the wire
(and `Peer.request` keeps only the first `max_gaps` ids) in an order no peer could reproduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from channel.core.consensus import CheckpointProposal, Decide, Decision, NeedOperations, Validity, sign_proposal
from channel.core.validation import LocalView, validate_proposal
from channel.runtime.driver import ConsensusDriver
from channel.runtime.keystore import Key
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt.eip712 import Checkpoint
from crdt.errors import InternalError
from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ledger import Deposit
from crdt.ops import SignedOp, address_of, sign_op
from crdt.replica import Cut, Replica
from crdt.types import Address, Hash32, OpId, Symbol

USDC = Symbol("USDC")
KEYS = sorted((keccak256(b"parley-validation-test-%d" % i) for i in range(4)), key=address_of)
E9 = 10**9


class RecordingPeer:
    """Stands in for `p2p.peer.Peer`: what the driver asked the network for."""

    def __init__(self) -> None:
        self.requests: list[list[OpId]] = []

    def request(self, op_ids: list[OpId]) -> None:
        self.requests.append(list(op_ids))


def driver_of(tmp_path: Path) -> tuple[ConsensusDriver, RecordingPeer]:
    genesis = Genesis.create(
        chain_id=31337,
        adjudicator=b"\x11" * 20,
        participants=[Participant(address_of(key), Role.TRADER, "") for key in KEYS],
        tokens=[Token(USDC, Address(b"\x22" * 20), 6)],
    )
    store = Store(tmp_path / "node" / "node.sqlite")
    node = Node.restore(genesis, Key(address_of(KEYS[0]), KEYS[0]), store, fresh_channel=True)
    peer = RecordingPeer()
    node.peer = peer  # type: ignore[assignment]
    return ConsensusDriver(node, transport=None), peer  # type: ignore[arg-type]  # nothing is published


def unknown_heads(count: int) -> tuple[OpId, ...]:
    """Ids of operations nobody has, in descending order."""
    return tuple(sorted((OpId(keccak256(b"unknown %d" % i)) for i in range(count)), reverse=True))


def a_proposal(driver: ConsensusDriver) -> CheckpointProposal:
    """A well-formed proposal for version 1 (it credits one deposit, so there is news)."""
    driver.set_confirmed_deposits([Deposit(1, driver.genesis.addresses[1], USDC, 5 * E9, b"\x01" * 32)])
    value = driver.app.get_value(1, 0)
    assert value is not None
    return value


def test_a_proposal_with_unknown_heads_makes_the_driver_fetch_them_in_sorted_order(tmp_path: Path) -> None:
    driver, peer = driver_of(tmp_path)
    heads = unknown_heads(5)
    value = replace(a_proposal(driver), heads=heads)  # a proposer may list its heads in any order
    driver.consensus.start_height(1)
    outputs = driver.consensus.on_message(sign_proposal(driver.genesis, KEYS[1], 1, 0, value))  # (1, 0)'s proposer
    trio.run(driver._carry_out, outputs)
    assert peer.requests == [sorted(heads)]
    driver.node.store.close()


def test_a_decided_cut_with_missing_operations_is_fetched_in_sorted_order(tmp_path: Path) -> None:
    driver, peer = driver_of(tmp_path)
    heads = unknown_heads(16)
    value = replace(a_proposal(driver), heads=heads)
    trio.run(driver._apply, Decide(1, 0, value, Decision(1, 0, value, ())))
    assert driver._pending is not None  # waiting for the operations
    assert peer.requests == [sorted(heads)]
    driver.node.store.close()


# -- the pure function ------------------------------------------------------------------------------

NOW = 50_000
BOUND = 10_000


def a_replica() -> tuple[Replica, list[SignedOp]]:
    addresses = [address_of(key) for key in KEYS]
    genesis = Genesis.create(
        chain_id=31337,
        adjudicator=b"\x11" * 20,
        participants=[Participant(a, Role.TRADER) for a in addresses],
        tokens=[Token(USDC, Address(b"\x22" * 20), 6)],
        initial_balances=[InitialBalance(a, USDC, 100 * E9) for a in addresses],
    )
    ctx = genesis.context()
    ops = [
        sign_op(ctx, KEYS[0], 1, [], "transfer", {"to": addresses[1], "token": "USDC", "amount": 5 * E9}),
        sign_op(ctx, KEYS[2], 1, [], "transfer", {"to": addresses[3], "token": "USDC", "amount": 7 * E9}),
    ]
    replica = Replica(genesis)
    replica.receive_many(ops)
    return replica, ops


def proposal_for(replica: Replica, cut: Cut) -> CheckpointProposal:
    """What an honest proposer with this replica proposes for `cut` (as `NodeApplication` does)."""
    preview = replica.preview(cut)
    checkpoint = Checkpoint(
        channel=replica.genesis.channel_id,
        version=cut.version,
        payout_root=preview.payout_root,
        state_hash=preview.state_hash,
        totals=preview.totals,
        withdrawn=preview.withdrawn,
        deposit_nonce=preview.deposit_nonce,
        time=cut.time,
    )
    return CheckpointProposal(checkpoint, cut.heads, cut.deposits, preview.leaves)


def view(replica: Replica, deposits: Mapping[int, Deposit] | None = None, now: int = NOW) -> LocalView:
    return LocalView(replica, deposits or {}, now, BOUND)


def heads_of(replica: Replica) -> tuple[OpId, ...]:
    return tuple(sorted(replica.graph.heads))


def test_the_proposal_an_honest_peer_with_the_same_replica_makes_is_valid() -> None:
    replica, _ = a_replica()
    deposit = Deposit(1, replica.genesis.addresses[1], USDC, 3 * E9, b"\x01" * 32)
    value = proposal_for(replica, Cut(1, heads_of(replica), NOW - 1, (deposit,)))
    assert validate_proposal(view(replica, {1: deposit}), 1, value) is Validity.VALID
    assert validate_proposal(view(replica, {1: deposit}, now=NOW - 1 + BOUND), 1, value) is Validity.VALID  # edge


def test_not_yet_before_the_previous_version_is_applied_or_a_deposit_is_confirmed() -> None:
    replica, _ = a_replica()
    value = proposal_for(replica, Cut(1, heads_of(replica), NOW, ()))
    assert validate_proposal(view(replica), 2, replace(value, checkpoint=replace(value.checkpoint, version=2))) is (
        Validity.NOT_YET
    )
    deposit = Deposit(1, replica.genesis.addresses[1], USDC, 3 * E9, b"\x01" * 32)
    crediting = proposal_for(replica, Cut(1, heads_of(replica), NOW, (deposit,)))
    assert validate_proposal(view(replica), 1, crediting) is Validity.NOT_YET  # our watcher has not seen it
    other_block = replace(deposit, block=b"\x02" * 32)
    assert validate_proposal(view(replica, {1: other_block}), 1, crediting) is Validity.INVALID


def test_missing_operations_are_asked_for_sorted_and_once_each() -> None:
    replica, ops = a_replica()
    value = proposal_for(replica, Cut(1, heads_of(replica), NOW, ()))
    empty = Replica(replica.genesis)
    unsorted = replace(value, heads=tuple(sorted(value.heads, reverse=True)))
    assert validate_proposal(view(empty), 1, unsorted) == NeedOperations(tuple(sorted(value.heads)))
    half = Replica(replica.genesis)
    half.receive_many(ops[:1])
    assert validate_proposal(view(half), 1, value) == NeedOperations((ops[1].op_id,))


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20))
def test_need_operations_ids_are_sorted_and_distinct_whatever_the_heads_order(heads: list[bytes]) -> None:
    replica, _ = a_replica()
    value = proposal_for(replica, Cut(1, heads_of(replica), NOW, ()))
    odd = replace(value, heads=tuple(OpId(h) for h in heads))
    answer = validate_proposal(view(replica), 1, odd)
    assert answer == NeedOperations(tuple(sorted(set(OpId(h) for h in heads))))


def test_need_operations_refuses_an_unsorted_or_empty_list() -> None:
    a, b = OpId(b"\x01" * 32), OpId(b"\x02" * 32)
    assert NeedOperations.of([b, a, b]).op_ids == (a, b)
    for bad in ((b, a), (a, a), ()):
        with pytest.raises(InternalError):
            NeedOperations(bad)


def test_invalid_times_roots_and_cuts() -> None:
    replica, _ = a_replica()
    heads = heads_of(replica)
    value = proposal_for(replica, Cut(1, heads, NOW, ()))
    assert validate_proposal(view(replica, now=NOW + BOUND + 1), 1, value) is Validity.INVALID  # too far
    assert validate_proposal(view(replica, now=NOW - BOUND - 1), 1, value) is Validity.INVALID
    wrong_root = replace(value, checkpoint=replace(value.checkpoint, state_hash=Hash32(b"\x00" * 32)))
    assert validate_proposal(view(replica), 1, wrong_root) is Validity.INVALID
    assert validate_proposal(view(replica), 1, replace(value, leaves=value.leaves[1:])) is Validity.INVALID
    # a deposit nonce the replica cannot credit next: the preview refuses the cut
    skipped = Deposit(2, replica.genesis.addresses[1], USDC, 3 * E9, b"\x01" * 32)
    gap = replace(value, deposits=(skipped,), checkpoint=replace(value.checkpoint, deposit_nonce=2))
    assert validate_proposal(view(replica, {2: skipped}), 1, gap) is Validity.INVALID
    # version 2 must come after version 1's time
    replica.certify(Cut(1, heads, NOW, ()))
    same_time = proposal_for(replica, Cut(2, heads, NOW, ()))
    assert validate_proposal(view(replica), 2, same_time) is Validity.INVALID
    later = proposal_for(replica, Cut(2, heads, NOW + 1, ()))
    assert validate_proposal(view(replica), 2, later) is Validity.VALID
