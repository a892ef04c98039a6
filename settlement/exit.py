"""The emergency exit: from the newest certificate a participant holds to tokens in its wallet.

    1. propose the certificate (or challenge an older pending proposal, or reuse a pending
       proposal that is at least as new);
    2. wait out the dispute window;
    3. finalize (the channel concludes);
    4. claim every payout leaf of the account with its Merkle proof.

Invariants:
- the plan is recomputed from the chain at every start, never from local state: the contract's
  status, pending version and claimed leaves say which steps are done. So an interrupted exit
  resumes where it stopped, two exits (or another participant) racing change nothing, and no
  other participant has to answer: a certificate already holds the quorum's signatures;
- nothing is sent unless the account can pay for the rest of the dispute (propose or challenge,
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
from crdt.merkle import PayoutLeaf
from crdt.types import Address
from settlement.client import CLAIM_GAS, FINALIZE_GAS, AdjudicatorClient, checkpoint_arg
from settlement.errors import ContractReverted, NoCertificate, NotYourLeaf, SettlementError


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """One report of the exit's progress, for a display."""

    step: str  # "propose", "challenge", "reuse", "wait", "finalize", "claim", "done"
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

    # 1. propose, challenge or reuse
    if info.status == "none":
        raise SettlementError("the channel is not open on this adjudicator (wrong --rpc or genesis?)")
    if info.status == "open":
        client.sender.ensure_can_pay(
            client.sender.estimate(
                client.contract.functions.proposeSettlement(checkpoint_arg(best.checkpoint), list(best.signatures))
            )
            + FINALIZE_GAS
            + CLAIM_GAS * len(mine),
            what="propose, finalize and claim",
        )
        report(ExitEvent("propose", f"proposing checkpoint v{best.version}"))
        client.propose(best)
        result.proposed = True
    elif info.status == "pending":
        pending = client.settlement(channel)
        if pending.version < best.version and client.chain.now() < pending.finalizes_at:
            report(ExitEvent("challenge", f"challenging pending v{pending.version} with v{best.version}"))
            try:
                client.challenge(best)
                result.challenged = True
            except ContractReverted as reverted:
                if reverted.name not in ("DisputeWindowClosed", "VersionNotNewer"):
                    raise
        else:
            report(ExitEvent("reuse", f"reusing the pending proposal v{pending.version}"))

    # 2. wait out the window
    while client.channel(channel).status == "pending":
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
    if client.channel(channel).status == "pending":
        report(ExitEvent("finalize", "finalizing"))
        try:
            client.finalize(channel)
            result.finalized = True
        except ContractReverted as reverted:
            if reverted.name != "ChannelConcluded":
                raise

    # 4. claim with the certificate of the root that was finalised
    final = client.settlement(channel)
    matching = [c for c in usable if c.checkpoint.payout_root == final.payout_root]
    if not matching:
        raise NoCertificate(
            f"the channel concluded at v{final.version}, and no certificate given has its payout root"
        )
    settled = matching[0]
    result.version = settled.version
    tree = settled.tree()
    for position, leaf in enumerate(tree.leaves):
        if leaf.account != account:
            continue
        if client.is_claimed(channel, leaf):
            result.already_claimed.append(leaf)
            continue
        report(ExitEvent("claim", f"claiming {leaf.amount} of token 0x{leaf.token.hex()}"))
        try:
            client.claim(channel, leaf, tree.proof(position))
            result.claimed.append(leaf)
        except ContractReverted as reverted:
            if reverted.name != "AlreadyClaimed":
                raise
            result.already_claimed.append(leaf)
    report(ExitEvent("done", f"exit complete at v{settled.version}"))
    return result

