"""The gas table of contracts/README.md is measured, and the client's gas reserves cover it."""

from __future__ import annotations

from settlement.client import CLAIM_GAS, FINALIZE_GAS
from settlement.gas import measure


def test_gas_table_and_reserves() -> None:
    gas = dict(measure())
    assert gas["claim, Merkle depth 20"] > gas["claim, Merkle depth 10"]
    assert gas["claimWithdrawal, Merkle depth 20"] > gas["claimWithdrawal, Merkle depth 10"]
    assert max(gas["claim, Merkle depth 20"], gas["claimWithdrawal, Merkle depth 20"]) < CLAIM_GAS
    assert max(gas["finalizeSettlement (the channel stays open)"], gas["finalizeSettlement (concludes)"]) < FINALIZE_GAS
    # a close costs what a proposal does: the emergency exit is not dearer than a checkpoint
    assert gas["closeChannel, 3 signers"] < gas["proposeSettlement, 4 signers"] + 10_000
    # signatures dominate proposals: each extra signer costs an ecrecover and a bit, not storage
    per_signer = (gas["proposeSettlement, 100 signers"] - gas["proposeSettlement, 4 signers"]) / 96
    assert 4_000 < per_signer < 12_000
    assert gas["proposeSettlement, 100 signers"] < 1_500_000
