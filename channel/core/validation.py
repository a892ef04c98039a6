"""Proposal validation: does a proposed checkpoint follow from this node's replica? A pure
function of the node's view (its replica, the deposits its chain watcher confirmed, its
clock's reading), so it can be tested alone and never reaches for the network: operations it
lacks come back as a value, `NeedOperations`, which the consensus machine turns into a `Fetch`
output for the driver to carry out.

A node prevotes a value only if it holds every operation of the cut, knows the same deposits
(by nonce and block), finds the time within `time_bound_ms` of its clock and after the previous
checkpoint, and computes exactly the same roots, totals and leaves (README, "Finality").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from channel.core.consensus import CheckpointProposal, NeedOperations, Validity
from crdt.errors import InvalidInput, MissingOperations
from crdt.ledger import Deposit
from crdt.replica import Replica
from crdt.types import OpId


@dataclass(frozen=True, slots=True)
class LocalView:
    """What this node judges a proposal against."""

    replica: Replica
    confirmed_deposits: Mapping[int, Deposit]  # nonce -> the deposit the chain watcher confirmed
    now_ms: int  # this node's clock
    time_bound_ms: int  # how far a proposal's time may be from it


def validate_proposal(view: LocalView, height: int, value: CheckpointProposal) -> Validity | NeedOperations:
    """VALID or INVALID (definite: the machine keeps the answer for the height), NOT_YET (this
    node has not applied the previous version, or its watcher has not confirmed a deposit the
    value credits), or `NeedOperations` (the cut names operations this node lacks; sorted ids).
    Changes nothing (`Replica.preview` undoes what it applies)."""
    replica = view.replica
    if height != replica.version + 1:
        return Validity.NOT_YET  # we have not applied the previous decision yet
    missing = [head for head in value.heads if not replica.graph.known(head)]
    if missing:
        return NeedOperations.of(missing)
    for deposit in value.deposits:
        known = view.confirmed_deposits.get(deposit.nonce)
        if known is None:
            return Validity.NOT_YET  # our watcher has not confirmed it yet
        if known != deposit:
            return Validity.INVALID
    checkpoint = value.checkpoint
    previous_time = replica.cuts[-1].time if replica.cuts else 0
    if checkpoint.time <= previous_time and replica.cuts:
        return Validity.INVALID
    if abs(checkpoint.time - view.now_ms) > view.time_bound_ms:
        return Validity.INVALID
    try:
        preview = replica.preview(value.cut())
    except MissingOperations as exc:
        return NeedOperations.of(OpId(op_id) for op_id in exc.missing)
    except InvalidInput:
        return Validity.INVALID
    same = (
        preview.state_hash == checkpoint.state_hash
        and preview.payout_root == checkpoint.payout_root
        and preview.totals == checkpoint.totals
        and preview.withdrawn == checkpoint.withdrawn
        and preview.deposit_nonce == checkpoint.deposit_nonce
        and preview.leaves == value.leaves
    )
    return Validity.VALID if same else Validity.INVALID
