"""End-to-end flows against the adjudicator, on the embedded chain and on anvil: open, deposit,
propose, challenge, finalize (the channel stays open), close, claim, refund, slash, and the
hostile submissions each check of the contract exists for."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crdt.certificate import Certificate, sign_checkpoint
from crdt.eip712 import Domain
from crdt.genesis import Genesis, Participant, Role, Token
from crdt.graph import Equivocation
from crdt.hashing import keccak256
from crdt.ledger import Deposit
from crdt.merkle import WITHDRAWN, PayoutLeaf
from crdt.ops import HALF_N, SECP256K1_N, sign_op
from crdt.replica import Cut, Replica
from crdt.testing import from_replica
from crdt.types import Address, ChannelId, Hash32, Symbol
from crdt.units import from_e9
from settlement.client import TestTokenClient, address_bytes
from tests.settlement.settlement_kit import E9, WINDOW, World, deploy_artifact, reverts


def funded_world(world: World) -> Replica:
    """Participants 0 and 1 deposit (USDC, 6 decimals, given in e9); 0 pays 1 a little."""
    world.deposit(0, 100 * E9)
    world.deposit(1, 50 * E9 + 123_000)  # 50.000123 USDC: exact in 6 decimals
    replica = world.replica()
    world.transfer(replica, 0, 1, 10 * E9, seq=1)
    return replica


def resign(world: World, checkpoint: object, signers: list[int] | None = None) -> list[bytes]:
    """Signatures of `checkpoint` (a doctored one, say) by participants `signers` (0, 1, 2)."""
    chosen = signers if signers is not None else [0, 1, 2]
    return [sign_checkpoint(world.genesis.domain, checkpoint, world.keys[i]) for i in chosen]  # type: ignore[arg-type]


def conclude(world: World, certificate: Certificate, by: int = 0) -> None:
    """Close the channel with `certificate`, wait out the window and finalize: it concludes."""
    world.client(by).close(certificate)
    world.chain.increase_time(WINDOW + 1)
    world.client(by).finalize(world.channel)
    assert world.adjudicator.channel(world.channel).status == "concluded"


def test_open_derives_the_genesis_channel_id(world: World) -> None:
    info = world.adjudicator.channel(world.channel)
    assert info.status == "open"
    assert info.participants == world.genesis.addresses
    assert info.threshold == world.genesis.threshold == 3
    assert info.dispute_window == WINDOW
    assert info.fully_bonded == 4  # min_bond 0: nobody needs to bond
    assert world.adjudicator.finalized(world.channel).version == 0
    assert world.adjudicator.domain_separator() == world.genesis.domain.separator
    checkpoint = world.checkpoint(world.replica()).checkpoint  # what the contract checks signatures of
    assert world.adjudicator.checkpoint_digest(checkpoint) == checkpoint.digest(world.genesis.domain)
    with reverts("ChannelExists"):
        world.adjudicator.open_genesis(world.genesis)


def test_deposit_converts_e9_to_token_decimals(world: World) -> None:
    before = world.token.balance_of(world.accounts[0].address)
    deposit = world.deposit(0, 2 * E9 + 500_000_000)  # 2.5 USDC
    assert deposit.nonce == 1
    assert world.token.balance_of(world.accounts[0].address) == before - 2_500_000
    assert world.adjudicator.token_totals(world.channel, world.usdc.address) == (2_500_000, 0, 0, 0)
    assert world.held() == 2_500_000
    with pytest.raises(ValueError, match="not a positive whole amount"):
        world.client(0).deposit(world.channel, world.usdc, 1, world.accounts[0].address)  # 1e-9 USDC
    with reverts("NotAParticipant"):
        world.client(0).deposit_units(world.channel, world.usdc.address, 5, world.deployer.address)
    stranger = world.adjudicator.contract.functions.deposit(
        world.channel, world.deployer.address, 5, world.accounts[0].address
    )
    with reverts("UnknownToken"):
        world.sender(0).transact(stranger)


def test_propose_challenge_finalize_keeps_the_channel_open_then_close_and_claim(world: World) -> None:
    replica = funded_world(world)
    first = world.certify(replica, 1)
    world.transfer(replica, 1, 2, 7 * E9, seq=1)
    second = world.certify(replica, 2, signers=[1, 2, 3])
    client = world.client(3)

    client.propose(first)
    assert world.adjudicator.channel(world.channel).status == "pending"
    with reverts("SettlementPending"):
        world.client(0).propose(second)
    late = world.deposit(0, E9)  # deposits go on while a checkpoint is in dispute
    with reverts("VersionNotNewer"):  # a stale challenge
        client.challenge(first)
    client.challenge(second)
    pending = world.adjudicator.settlement(world.channel)
    assert (pending.version, pending.payout_root) == (2, second.checkpoint.payout_root)
    with reverts("DisputeWindowOpen"):  # an early finalize
        client.finalize(world.channel)
    leaf, proof = second.proof_for(world.address(0), world.usdc.address)
    with reverts("NotConcluded"):
        client.claim(world.channel, leaf, proof)

    world.chain.increase_time(WINDOW + 1)
    with reverts("DisputeWindowClosed"):  # a late challenge
        client.challenge(world.certify(replica, 3))
    client.finalize(world.channel)
    assert world.adjudicator.channel(world.channel).status == "open"  # finalised, still open
    assert world.adjudicator.finalized(world.channel).version == 2
    with reverts("NoSettlementPending"):
        client.finalize(world.channel)
    with reverts("NotConcluded"):  # balance leaves are paid only when the channel concludes
        client.claim(world.channel, leaf, proof)
    with reverts("VersionNotNewer"):  # the finalised version cannot be proposed again
        client.propose(second)

    client.request_close(world.channel)  # closes at the finalised v2, one window from now
    assert world.adjudicator.channel(world.channel).status == "closing"
    with reverts("ChannelClosing"):
        world.deposit(0, E9)
    with reverts("ChannelClosing"):
        client.propose(world.certify(replica, 3))
    world.chain.increase_time(WINDOW + 1)
    client.finalize(world.channel)
    assert world.adjudicator.channel(world.channel).status == "concluded"

    expected = {0: 90_000_000, 1: 53_000_123, 2: 7_000_000, 3: 0}
    for i, amount in expected.items():
        leaf, proof = second.proof_for(world.address(i), world.usdc.address)
        assert leaf.amount == amount
        before = world.token.balance_of(world.accounts[i].address)
        world.client(i).claim(world.channel, leaf, proof)
        assert world.token.balance_of(world.accounts[i].address) == before + amount
    client.refund_deposit(world.channel, late.nonce)  # v2 did not credit it
    assert world.adjudicator.token_totals(world.channel, world.usdc.address) == (
        151_000_123, 150_000_123, 1_000_000, 0
    )
    assert world.held() == 0

    leaf, proof = second.proof_for(world.address(0), world.usdc.address)
    with reverts("AlreadyClaimed"):  # a double claim
        client.claim(world.channel, leaf, proof)
    stolen = PayoutLeaf(world.address(3), leaf.token, leaf.amount)  # account 0's proof for 3
    with reverts("InvalidProof"):
        client.claim(world.channel, stolen, proof)
    with reverts("ChannelConcluded"):
        world.deposit(0, E9)
    with reverts("ChannelConcluded"):
        client.propose(second)
    with reverts("ChannelConcluded"):
        client.finalize(world.channel)


def test_too_few_and_duplicate_signatures_fail(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)
    client = world.client(0)
    with reverts("NotEnoughSignatures"):  # a short quorum
        client.propose_raw(cert.checkpoint, cert.signatures[:2])
    stuffed = (cert.signatures[0], cert.signatures[1], cert.signatures[1])
    with reverts("DuplicateSigner"):
        client.propose_raw(cert.checkpoint, stuffed)
    with reverts("NotEnoughSignatures"):
        client.close_raw(cert.checkpoint, cert.signatures[:2])
    with reverts("DuplicateSigner"):
        client.close_raw(cert.checkpoint, stuffed)
    client.propose(cert)
    newer = world.certify(replica, 2)
    with reverts("NotEnoughSignatures"):
        client.challenge_raw(newer.checkpoint, newer.signatures[:2])
    with reverts("DuplicateSigner"):
        client.challenge_raw(newer.checkpoint, (newer.signatures[0], newer.signatures[0], newer.signatures[1]))
    assert world.adjudicator.settlement(world.channel).version == 1


def test_signatures_for_another_channel_or_chain_fail(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)
    other_channel = replace(cert.checkpoint, channel=ChannelId(keccak256(b"another channel")))
    signed_elsewhere = resign(world, other_channel)
    with reverts("NotAParticipant"):
        world.client(0).propose_raw(cert.checkpoint, signed_elsewhere)
    # the other channel's checkpoint itself is unknown to the contract
    with reverts("UnknownChannel"):
        world.client(0).propose_raw(other_channel, signed_elsewhere)
    other_chain = Domain(world.chain.chain_id + 1, world.adjudicator.address_bytes)
    with reverts("NotAParticipant"):
        world.client(0).propose_raw(
            cert.checkpoint, [sign_checkpoint(other_chain, cert.checkpoint, k) for k in world.keys[:3]]
        )
    other_contract = Domain(world.chain.chain_id, Address(b"\x11" * 20))
    with reverts("NotAParticipant"):
        world.client(0).propose_raw(
            cert.checkpoint, [sign_checkpoint(other_contract, cert.checkpoint, k) for k in world.keys[:3]]
        )
    # a high-s twin of a valid signature is rejected by OpenZeppelin's ECDSA
    sig = cert.signatures[0]
    s = int.from_bytes(sig[32:64], "big")
    assert s <= HALF_N
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))
    with reverts("InvalidSignature"):
        world.client(0).propose_raw(cert.checkpoint, [twin, *cert.signatures[1:]])
    with reverts("InvalidSignature"):
        world.client(0).propose_raw(cert.checkpoint, [sig[:64], *cert.signatures[1:]])  # truncated


def test_cross_channel_replay_fails(world: World) -> None:
    """Two channels of the same participants in one adjudicator: a certificate of one is
    worthless for the other, whichever way it is replayed."""
    replica = funded_world(world)
    cert = world.certify(replica, 1)
    twin = Genesis.create(
        chain_id=world.chain.chain_id,
        adjudicator=world.adjudicator.address_bytes,
        participants=list(world.genesis.participants),
        tokens=list(world.genesis.tokens),
        dispute_window=WINDOW,
        nonce=1,
    )
    world.adjudicator.open_genesis(twin)
    for _ in range(2):  # enough that only the signatures can refuse the replay
        world.client(2).deposit(twin.channel_id, world.usdc, 200 * E9, world.accounts[2].address)
    moved = replace(cert.checkpoint, channel=twin.channel_id)  # channel A's signatures on B
    with reverts("NotAParticipant"):
        world.client(0).propose_raw(moved, cert.signatures)
    with reverts("NotAParticipant"):
        world.client(0).close_raw(moved, cert.signatures)
    world.client(0).propose(cert)  # on its own channel it is fine
    assert world.adjudicator.channel(twin.channel_id).status == "open"


def test_totals_above_deposits_and_bad_deposit_nonces_fail(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)
    client = world.client(0)
    too_much = replace(cert.checkpoint, totals=(cert.checkpoint.totals[0] + 1,))
    with reverts("TotalsExceedDeposits"):
        client.propose_raw(too_much, resign(world, too_much))
    # balances within the deposits, but withdrawals on top of them: more than the channel holds
    withdrawn_too = replace(cert.checkpoint, withdrawn=(1,))
    with reverts("TotalsExceedDeposits"):
        client.propose_raw(withdrawn_too, resign(world, withdrawn_too))
    with reverts("TotalsExceedDeposits"):
        client.close_raw(withdrawn_too, resign(world, withdrawn_too))
    future = replace(cert.checkpoint, deposit_nonce=3)
    with reverts("DepositNonceTooHigh"):
        client.propose_raw(future, resign(world, future))
    wrong_length = replace(cert.checkpoint, totals=(*cert.checkpoint.totals, 0))
    with reverts("WrongTotalsLength"):
        client.propose_raw(wrong_length, resign(world, wrong_length))
    wrong_withdrawn = replace(cert.checkpoint, withdrawn=())
    with reverts("WrongTotalsLength"):
        client.propose_raw(wrong_withdrawn, resign(world, wrong_withdrawn))
    with reverts("ZeroVersion"):
        zero = replace(cert.checkpoint, version=0)
        client.propose_raw(zero, resign(world, zero))

    # after a finalised checkpoint that withdrew, a newer one may neither shrink the
    # withdrawals nor credit fewer deposits
    world.withdraw(replica, 1, 5 * E9)
    withdrew = world.checkpoint(replica)
    client.propose(withdrew)
    world.chain.increase_time(WINDOW + 1)
    client.finalize(world.channel)
    shrunk = replace(withdrew.checkpoint, version=3, withdrawn=(0,), totals=(withdrew.checkpoint.totals[0],))
    with reverts("WithdrawalsShrank"):
        client.propose_raw(shrunk, resign(world, shrunk))
    older_nonce = replace(withdrew.checkpoint, version=3, deposit_nonce=1)
    with reverts("DepositNonceTooLow"):
        client.propose_raw(older_nonce, resign(world, older_nonce))


def test_slash_equivocation(world: World) -> None:
    offender = 2
    world.client(offender).bond(world.channel, 10**18)
    ctx = world.genesis.context()
    body = {"to": world.address(0), "token": "USDC", "amount": 1}
    first = sign_op(ctx, world.keys[offender], 1, [], "transfer", body)
    second = sign_op(ctx, world.keys[offender], 1, [], "transfer", {**body, "amount": 2})
    replica = Replica(world.genesis)
    replica.receive(first)
    replica.receive(second)
    (evidence,) = replica.evidence()
    reporter = world.client(0)

    honest = replace(evidence, second=evidence.first)  # one operation twice is no fraud
    with reverts("NotEquivocation"):
        reporter.slash_equivocation(honest)
    other_author = sign_op(ctx, world.keys[1], 1, [], "transfer", {**body, "amount": 3})
    with reverts("SignerMismatch"):
        reporter.slash_equivocation(replace(evidence, second=replace(second, signature=other_author.signature)))

    before = world.chain.w3.eth.get_balance(world.accounts[0].address)
    receipt = reporter.slash_equivocation(evidence)
    (event,) = world.adjudicator.contract.events.Slashed().process_receipt(receipt)
    assert event["args"]["toReporter"] == event["args"]["toInsurance"] == 5 * 10**17
    assert event["args"]["offender"] == world.accounts[offender].address
    gas_paid = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert world.chain.w3.eth.get_balance(world.accounts[0].address) == before + 5 * 10**17 - gas_paid
    assert world.adjudicator.channel(world.channel).insurance == 5 * 10**17
    assert world.adjudicator.bond_of(world.channel, world.accounts[offender].address).bonded == 0
    with reverts("EvidenceUsed"):
        reporter.slash_equivocation(evidence)
    # another equivocation of the same author: fresh evidence, but nothing left to take
    third = sign_op(ctx, world.keys[offender], 2, [first.op_id], "transfer", body)
    fourth = sign_op(ctx, world.keys[offender], 2, [first.op_id], "transfer", {**body, "amount": 5})
    fresh = Equivocation(third, fourth)
    with reverts("NothingToSlash"):
        reporter.slash_equivocation(fresh)


def test_slash_double_sign(world: World) -> None:
    replica = funded_world(world)
    offender = 1
    world.client(offender).bond(world.channel, 3 * 10**18)
    cert = world.certify(replica, 1)
    forked = replace(cert.checkpoint, payout_root=Hash32(keccak256(b"another root")))
    domain = world.genesis.domain
    sig_a = sign_checkpoint(domain, cert.checkpoint, world.keys[offender])
    sig_b = sign_checkpoint(domain, forked, world.keys[offender])
    reporter = world.client(3)
    with reverts("NotDoubleSign"):
        reporter.slash_double_sign(cert.checkpoint, sig_a, cert.checkpoint, sig_a)
    later = replace(forked, version=2)
    with reverts("CheckpointMismatch"):
        reporter.slash_double_sign(cert.checkpoint, sig_a, later, sign_checkpoint(domain, later, world.keys[offender]))
    with reverts("SignerMismatch"):
        reporter.slash_double_sign(cert.checkpoint, sig_a, forked, sign_checkpoint(domain, forked, world.keys[0]))
    receipt = reporter.slash_double_sign(cert.checkpoint, sig_a, forked, sig_b)
    (event,) = world.adjudicator.contract.events.Slashed().process_receipt(receipt)
    assert (event["args"]["offence"], event["args"]["toReporter"]) == (2, 15 * 10**17)
    assert world.adjudicator.channel(world.channel).insurance == 15 * 10**17
    with reverts("EvidenceUsed"):
        reporter.slash_double_sign(cert.checkpoint, sig_a, forked, sig_b)
    with reverts("EvidenceUsed"):  # the same offence, presented the other way round
        reporter.slash_double_sign(forked, sig_b, cert.checkpoint, sig_a)
    other_version = replace(later, payout_root=Hash32(keccak256(b"yet another root")))
    with reverts("NothingToSlash"):  # fresh evidence, but the bond is gone
        reporter.slash_double_sign(
            later, sign_checkpoint(domain, later, world.keys[offender]),
            other_version, sign_checkpoint(domain, other_version, world.keys[offender]),
        )


def test_unbond_rules(world: World) -> None:
    """Unbonding waits one dispute window; it goes on while a checkpoint is in dispute, and
    stops while the channel is closing."""
    replica = funded_world(world)
    client = world.client(0)
    client.bond(world.channel, 10**18)
    client.unbond(world.channel, 4 * 10**17)
    with reverts("UnbondNotReady"):
        client.withdraw_bond(world.channel)
    with reverts("InsufficientBond"):
        client.unbond(world.channel, 10**18)
    with reverts("ZeroAmount"):
        client.unbond(world.channel, 0)
    client.propose(world.certify(replica, 1))
    client.unbond(world.channel, 10**17)  # allowed with a checkpoint in dispute
    world.chain.increase_time(WINDOW + 1)
    client.finalize(world.channel)
    before = world.chain.w3.eth.get_balance(world.accounts[0].address)
    receipt = client.withdraw_bond(world.channel)
    gas_paid = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert world.chain.w3.eth.get_balance(world.accounts[0].address) == before + 5 * 10**17 - gas_paid
    assert world.adjudicator.bond_of(world.channel, world.accounts[0].address).bonded == 5 * 10**17
    with reverts("NoBondToWithdraw"):
        client.withdraw_bond(world.channel)

    client.unbond(world.channel, 10**17)
    client.request_close(world.channel)
    with reverts("ChannelClosing"):
        client.unbond(world.channel, 10**17)
    world.chain.increase_time(WINDOW + 1)
    with reverts("ChannelClosing"):  # still slashable until the channel concluded
        client.withdraw_bond(world.channel)
    client.finalize(world.channel)
    client.withdraw_bond(world.channel)
    client.unbond(world.channel, 4 * 10**17)  # after the conclusion, all of it
    with reverts("ChannelConcluded"):
        client.bond(world.channel, 10**17)


def test_uncredited_deposit_is_refunded(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)  # credits deposits 1 and 2
    late = world.client(2).deposit(world.channel, world.usdc, 3 * E9, world.accounts[2].address)
    assert late == 3
    client = world.client(2)
    client.propose(cert)
    world.chain.increase_time(WINDOW + 1)
    client.finalize(world.channel)
    with reverts("NotConcluded"):  # a later checkpoint may still credit it
        client.refund_deposit(world.channel, 3)
    client.request_close(world.channel)
    world.chain.increase_time(WINDOW + 1)
    client.finalize(world.channel)
    with reverts("DepositWasCredited"):
        client.refund_deposit(world.channel, 2)
    with reverts("UnknownDeposit"):
        client.refund_deposit(world.channel, 4)
    before = world.token.balance_of(world.accounts[2].address)
    world.client(0).refund_deposit(world.channel, 3)  # anyone may send it; it goes to the depositor
    assert world.token.balance_of(world.accounts[2].address) == before + 3_000_000
    with reverts("AlreadyRefunded"):
        client.refund_deposit(world.channel, 3)


@pytest.mark.parametrize("kind", ["balance", "withdrawal"])
def test_claims_are_reentrancy_safe(embedded_world: World, kind: str) -> None:
    """A token that calls the same claim again from inside the payout's transfer gets nothing
    more: the inner call reverts (nonReentrant), and the state was written before the transfer."""
    world = embedded_world
    hostile = deploy_artifact(world.deployer, "ReentrantToken")  # 18 decimals (ERC-20 default)
    evil_token = Token(Symbol("EVIL"), address_bytes(hostile.address), 18)
    genesis = Genesis.create(
        chain_id=world.chain.chain_id,
        adjudicator=world.adjudicator.address_bytes,
        participants=[Participant(world.address(i), Role.TRADER) for i in range(4)],
        tokens=[evil_token],
        dispute_window=WINDOW,
        nonce=7,
    )
    world.adjudicator.open_genesis(genesis)
    world.deployer.transact(hostile.functions.mint(world.accounts[0].address, 10**21))
    evil = TestTokenClient(world.sender(0), hostile.address)
    evil.approve(world.adjudicator.address, 10**21)
    world.client(0).deposit_units(genesis.channel_id, evil_token.address, 10**21, world.accounts[0].address)
    replica = Replica(genesis)
    replica.certify(Cut(1, (), 1, (Deposit(1, world.address(0), Symbol("EVIL"), 10**12),)))
    op = sign_op(genesis.context(), world.keys[0], 1, [], "withdraw", {"token": "EVIL", "amount": 4 * 10**11})
    replica.receive(op)
    cert = from_replica(replica, 1, 1, 1, world.keys[:3])
    client = world.client(0)
    if kind == "balance":
        client.close(cert)
        world.chain.increase_time(WINDOW + 1)
        client.finalize(genesis.channel_id)
        leaf, proof = cert.proof_for(world.address(0), evil_token.address)
        function = world.adjudicator.contract.functions.claim
    else:
        client.propose(cert)
        world.chain.increase_time(WINDOW + 1)
        client.finalize(genesis.channel_id)
        leaf, proof = cert.proof_for(world.address(0), evil_token.address, WITHDRAWN)
        function = world.adjudicator.contract.functions.claimWithdrawal
    call = function(genesis.channel_id, world.accounts[0].address, hostile.address, leaf.amount, proof)
    world.deployer.transact(hostile.functions.arm(world.adjudicator.address, call._encode_transaction_data()))
    client.claim(genesis.channel_id, leaf, proof)
    assert hostile.functions.attempted().call() is True
    assert hostile.functions.innerSucceeded().call() is False
    assert evil.balance_of(world.accounts[0].address) == leaf.amount
    deposited, claimed, _, withdrawn = world.adjudicator.token_totals(genesis.channel_id, evil_token.address)
    assert (claimed, withdrawn) == ((leaf.amount, 0) if kind == "balance" else (0, leaf.amount))
    assert deposited == 10**21


@pytest.mark.hostile
def test_certificate_leaves_pay_out_the_whole_channel(world: World) -> None:
    """Audit F5, the core's half: balances moved by e9 transfers are not whole units of a
    6-decimal token, and rounding each leaf down on its own stranded a unit that no leaf paid.
    The leaves are now apportioned: they sum to every unit the channel holds."""
    replica = funded_world(world)
    world.transfer(replica, 1, 2, 1, seq=1)  # 1e-9 USDC: below the token's resolution
    cert = world.certify(replica, 1)
    balances = {leaf.account: leaf.amount for leaf in cert.leaves if leaf.kind == 0}
    # as it happened: each entitlement rounded down alone
    rounded_alone = [
        from_e9(replica.ledger.entitlement(world.address(i), Symbol("USDC")), 6) for i in range(4)
    ]
    assert rounded_alone == [90_000_000, 60_000_122, 0, 0]
    assert sum(rounded_alone) == 150_000_122  # one unit of the 150.000123 deposited, stranded
    # the fix: the largest remainder (account 1's 0.999 unit) gets the unit rounding lost
    assert [balances[world.address(i)] for i in range(4)] == [90_000_000, 60_000_123, 0, 0]
    assert cert.checkpoint.totals == (150_000_123,)
    assert isinstance(Certificate.decode(cert.encode()), Certificate)
    conclude(world, cert)
    for i in range(4):
        leaf, proof = cert.proof_for(world.address(i), world.usdc.address)
        world.client(3).claim(world.channel, leaf, proof)
    assert world.token.balance_of(world.adjudicator.address) == world.held() == 0
