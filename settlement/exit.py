"""The emergency exit: from the newest certificate a participant holds to tokens in its wallet.

    1. close the channel: with the certificate (`closeChannel`), or, when the chain already holds
       a checkpoint at least as new, at that one (`requestClose`); if the channel is closing
       already, challenge an older checkpoint in dispute, or reuse it;
    2. wait out the dispute window;
    3. finalize (the channel concludes);
    4. claim the account's balance leaves, the rest of its withdrawals, and refunds of its
       deposits the final checkpoint did not credit.

Invariants:
- the plan is recomputed from the chain at every start, never from local state: the contract's
  status, the checkpoint in dispute, the claimed leaves, the withdrawals paid and the deposits
  refunded say which steps are done. So an interrupted exit resumes where it stopped, two
  exits (or another participant) racing change nothing, and no other participant has to
  answer: a certificate already holds the quorum's signatures;
- nothing is sent unless the account can pay for the rest of the dispute (close or challenge,
  finalize and the claims), else `InsufficientGas` before the first transaction;
- only certificates that verify against the genesis are used; the claim uses the certificate
  whose payout root is the one finalised, so a newer checkpoint that someone else settled is
  claimed correctly as long as the participant holds its certificate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from crdt.certificate import Certificate
from crdt.errors import InvalidInput
from crdt.genesis import Genesis
from crdt.merkle import WITHDRAWN, PayoutLeaf
from crdt.types import Address
from settlement.client import CLAIM_GAS, FINALIZE_GAS, AdjudicatorClient, checkpoint_arg
from settlement.errors import ContractReverted, NoCertificate, NotYourLeaf, SettlementError


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """One report of the exit's progress, for a display."""

    step: str  # "close", "challenge", "reuse", "wait", "finalize", "claim", "refund", "done"
    message: str
    finalizes_at: int = 0
    now: int = 0
    window: int = 0


@dataclass(slots=True)
class ExitResult:
    version: int = 0
    proposed: bool = False
    challenged: bool = False
    finalized: bool = False
    claimed: list[PayoutLeaf] = field(default_factory=list)
    already_claimed: list[PayoutLeaf] = field(default_factory=list)
    refunded: list[int] = field(default_factory=list)  # deposit nonces


def usable_certificates(genesis: Genesis, certificates: Sequence[Certificate]) -> list[Certificate]:
    """The certificates that verify for this channel, newest first (invalid ones are dropped)."""
    good = []
    for certificate in certificates:
        try:
            certificate.verify(genesis)
        except InvalidInput:
            continue
        good.append(certificate)
    return sorted(good, key=lambda c: c.version, reverse=True)


def run_exit(
    client: AdjudicatorClient,
    genesis: Genesis,
    certificates: Sequence[Certificate],
    account: Address,
    *,
    report: Callable[[ExitEvent], None] = lambda event: None,
    sleep: Callable[[float], None] = time.sleep,
    poll_interval: float = 5.0,
    wall_clock: Callable[[], float] = time.time,
) -> ExitResult:
    channel = genesis.channel_id
    usable = usable_certificates(genesis, certificates)
    if not usable:
        raise NoCertificate("no certificate verifies for this channel (wrong channel, bad signatures?)")
    best = usable[0]
    mine = [leaf for leaf in best.leaves if leaf.account == account]
    if not mine:
        raise NotYourLeaf(f"certificate v{best.version} has no payout for 0x{account.hex()}")
    result = ExitResult(version=best.version)
    info = client.channel(channel)
    window = info.dispute_window

    # 1. close, challenge or reuse
    if info.status == "none":
        raise SettlementError("the channel is not open on this adjudicator (wrong --rpc or genesis?)")
    if info.status in ("open", "pending"):
        newest = client.settlement(channel).version if info.status == "pending" else client.finalized(channel).version
        use_ours = best.version > newest or (info.status == "open" and best.version == newest)
        call = (
            client.contract.functions.closeChannel(checkpoint_arg(best.checkpoint), list(best.signatures))
            if use_ours
            else client.contract.functions.requestClose(channel)
        )
        client.sender.ensure_can_pay(
            client.sender.estimate(call) + FINALIZE_GAS + CLAIM_GAS * (len(mine) + 1),
            what="close, finalize and claim",
        )
        if use_ours:
            report(ExitEvent("close", f"closing the channel with checkpoint v{best.version}"))
            client.close(best)
        else:
            report(ExitEvent("close", f"closing the channel at v{newest}, the newest checkpoint on-chain"))
            client.request_close(channel)
        result.proposed = True
    elif info.status == "closing":
        pending = client.settlement(channel)
        if pending.version < best.version and client.chain.now() < pending.finalizes_at:
            report(ExitEvent("challenge", f"challenging v{pending.version} in dispute with v{best.version}"))
            try:
                client.challenge(best)
                result.challenged = True
            except ContractReverted as reverted:
                if reverted.name not in ("DisputeWindowClosed", "VersionNotNewer"):
                    raise
        else:
            report(ExitEvent("reuse", f"the channel is closing at v{pending.version}"))

    # 2. wait out the window
    while client.channel(channel).status == "closing":
        pending = client.settlement(channel)
        if client.finalize_ready(channel):
            break
        now = max(client.chain.now(), int(wall_clock()))
        report(
            ExitEvent(
                "wait",
                f"v{pending.version} is final at {pending.finalizes_at}",
                finalizes_at=pending.finalizes_at,
                now=min(now, pending.finalizes_at),
                window=window,
            )
        )
        sleep(poll_interval)

    # 3. finalize
    if client.channel(channel).status == "closing":
        report(ExitEvent("finalize", "finalizing"))
        try:
            client.finalize(channel)
            result.finalized = True
        except ContractReverted as reverted:
            if reverted.name != "ChannelConcluded":
                raise

    # 4. claim with the certificate of the root that was finalised, then the refunds
    final = client.finalized(channel)
    matching = [c for c in usable if c.checkpoint.payout_root == final.payout_root]
    if not matching:
        raise NoCertificate(
            f"the channel concluded at v{final.version}, and no certificate given has its payout root"
        )
    settled = matching[0]
    result.version = settled.version
    claim_leaves(client, channel, settled, account, result, report)
    refund_deposits(client, channel, account, final.deposit_nonce, result, report)
    report(ExitEvent("done", f"exit complete at v{settled.version}"))
    return result


def claim_leaves(
    client: AdjudicatorClient,
    channel: bytes,
    certificate: Certificate,
    account: Address,
    result: ExitResult,
    report: Callable[[ExitEvent], None],
) -> None:
    """Claim what the finalised `certificate` owes `account` and was not paid yet: the increase
    of each withdrawal leaf and, once the channel concluded, each balance leaf once."""
    concluded = client.channel(channel).status == "concluded"
    tree = certificate.tree()
    for position, leaf in enumerate(tree.leaves):
        if leaf.account != account:
            continue
        if leaf.kind == WITHDRAWN:
            paid = client.withdrawal_paid(channel, account, leaf.token)
            if leaf.amount <= paid:
                continue
            what = f"withdrawal of {leaf.amount - paid} of token 0x{leaf.token.hex()}"
        else:
            if not concluded:
                continue
            if client.is_claimed(channel, leaf):
                result.already_claimed.append(leaf)
                continue
            what = f"{leaf.amount} of token 0x{leaf.token.hex()}"
        report(ExitEvent("claim", f"claiming {what}"))
        try:
            client.claim(channel, leaf, tree.proof(position))
            result.claimed.append(leaf)
        except ContractReverted as reverted:
            if reverted.name not in ("AlreadyClaimed", "NothingToWithdraw"):
                raise
            result.already_claimed.append(leaf)


def refund_deposits(
    client: AdjudicatorClient,
    channel: bytes,
    account: Address,
    credited_up_to: int,
    result: ExitResult,
    report: Callable[[ExitEvent], None],
) -> None:
    """Refund `account`'s deposits that the final checkpoint did not credit."""
    for nonce in range(credited_up_to + 1, client.channel(channel).deposit_nonce + 1):
        owner, _, refunded, amount = client.deposit_of(channel, nonce)
        if owner != account or refunded:
            continue
        report(ExitEvent("refund", f"refunding deposit {nonce} ({amount} token units), which no checkpoint credited"))
        try:
            client.refund_deposit(channel, nonce)
            result.refunded.append(nonce)
        except ContractReverted as reverted:
            if reverted.name != "AlreadyRefunded":
                raise
