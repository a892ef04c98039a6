"""End-to-end flows against the adjudicator, on the embedded chain and on anvil."""

from __future__ import annotations

from dataclasses import replace

import pytest
from settlement_kit import E9, WINDOW, World

from crdt.certificate import Certificate, sign_checkpoint
from crdt.eip712 import Domain
from crdt.hashing import keccak256
from crdt.merkle import PayoutLeaf
from crdt.ops import HALF_N, SECP256K1_N, sign_op
from crdt.replica import Replica
from crdt.types import Address, ChannelId, Hash32
from crdt.units import from_e9
from settlement.client import TestTokenClient
from settlement.errors import ContractReverted


def reverts(name: str) -> pytest.RaisesExc[ContractReverted]:
    return pytest.raises(ContractReverted, match=rf"^{name}\(")


def funded_world(world: World) -> Replica:
    """Participants 0 and 1 deposit (USDC, 6 decimals, given in e9); 0 pays 1 a little."""
    world.deposit(0, 100 * E9)
    world.deposit(1, 50 * E9 + 123_000)  # 50.000123 USDC: exact in 6 decimals
    replica = world.replica()
    world.transfer(replica, 0, 1, 10 * E9, seq=1)
    return replica


def test_open_derives_the_genesis_channel_id(world: World) -> None:
    info = world.adjudicator.channel(world.channel)
    assert info.status == "open"
    assert info.participants == world.genesis.addresses
    assert info.threshold == world.genesis.threshold == 3
    assert info.dispute_window == WINDOW
    assert world.adjudicator.domain_separator() == world.genesis.domain.separator
    with reverts("ChannelExists"):
        world.adjudicator.open_genesis(world.genesis)


def test_deposit_converts_e9_to_token_decimals(world: World) -> None:
    before = world.token.balance_of(world.accounts[0].address)
    deposit = world.deposit(0, 2 * E9 + 500_000_000)  # 2.5 USDC
    assert deposit.nonce == 1
    assert world.token.balance_of(world.accounts[0].address) == before - 2_500_000
    assert world.adjudicator.token_totals(world.channel, world.usdc.address) == (2_500_000, 0, 0)
    with pytest.raises(ValueError, match="not a positive whole amount"):
        world.client(0).deposit(world.channel, world.usdc, 1, world.accounts[0].address)  # 1e-9 USDC
    with reverts("NotAParticipant"):
        world.client(0).deposit_units(world.channel, world.usdc.address, 5, world.deployer.address)


def test_propose_challenge_finalize_claim(world: World) -> None:
    replica = funded_world(world)
    first = world.certify(replica, 1)
    world.transfer(replica, 1, 2, 7 * E9, seq=1)
    second = world.certify(replica, 2, signers=[1, 2, 3])
    client = world.client(3)

    client.propose(first)
    assert world.adjudicator.channel(world.channel).status == "pending"
    with reverts("SettlementPending"):
        world.client(0).propose(second)
    with reverts("SettlementPending"):
        world.deposit(0, E9)
    with reverts("VersionNotNewer"):
        client.challenge(first)
    client.challenge(second)
    pending = world.adjudicator.settlement(world.channel)
    assert (pending.version, pending.payout_root) == (2, second.checkpoint.payout_root)
    with reverts("DisputeWindowOpen"):
        client.finalize(world.channel)
    leaf, proof = second.proof_for(world.address(0), world.usdc.address)
    with reverts("NotConcluded"):
        client.claim(world.channel, leaf, proof)

    world.chain.increase_time(WINDOW + 1)
    with reverts("DisputeWindowClosed"):
        client.challenge(world.certify(replica, 3))
    client.finalize(world.channel)
    assert world.adjudicator.channel(world.channel).status == "concluded"

    expected = {0: 90_000_000, 1: 53_000_123, 2: 7_000_000, 3: 0}
    for i, amount in expected.items():
        leaf, proof = second.proof_for(world.address(i), world.usdc.address)
        assert leaf.amount == amount
        before = world.token.balance_of(world.accounts[i].address)
        world.client(i).claim(world.channel, leaf, proof)
        assert world.token.balance_of(world.accounts[i].address) == before + amount
    assert world.adjudicator.token_totals(world.channel, world.usdc.address) == (150_000_123, 150_000_123, 0)

    leaf, proof = second.proof_for(world.address(0), world.usdc.address)
    with reverts("AlreadyClaimed"):
        client.claim(world.channel, leaf, proof)
    stolen = PayoutLeaf(world.address(3), leaf.token, leaf.amount)  # account 0's proof for 3
    with reverts("InvalidProof"):
        client.claim(world.channel, stolen, proof)
    with reverts("ChannelConcluded"):
        world.deposit(0, E9)
    with reverts("ChannelConcluded"):
        client.propose(second)


def test_too_few_and_duplicate_signatures_fail(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)
    client = world.client(0)
    with reverts("NotEnoughSignatures"):
        client.propose_raw(cert.checkpoint, cert.signatures[:2])
    stuffed = (cert.signatures[0], cert.signatures[1], cert.signatures[1])
    with reverts("DuplicateSigner"):
        client.propose_raw(cert.checkpoint, stuffed)
    assert world.adjudicator.channel(world.channel).status == "open"


def test_signatures_for_another_channel_or_chain_fail(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)
    keys = world.keys[:3]
    other_channel = replace(cert.checkpoint, channel=ChannelId(keccak256(b"another channel")))
    signed_elsewhere = [sign_checkpoint(world.genesis.domain, other_channel, k) for k in keys]
    with reverts("NotAParticipant"):
        world.client(0).propose_raw(cert.checkpoint, signed_elsewhere)
    # the other channel's checkpoint itself is unknown to the contract
    with reverts("UnknownChannel"):
        world.client(0).propose_raw(other_channel, signed_elsewhere)
    other_chain = Domain(world.chain.chain_id + 1, world.adjudicator.address_bytes)
    with reverts("NotAParticipant"):
        world.client(0).propose_raw(cert.checkpoint, [sign_checkpoint(other_chain, cert.checkpoint, k) for k in keys])
    other_contract = Domain(world.chain.chain_id, Address(b"\x11" * 20))
    with reverts("NotAParticipant"):
        world.client(0).propose_raw(
            cert.checkpoint, [sign_checkpoint(other_contract, cert.checkpoint, k) for k in keys]
        )
    # a high-s twin of a valid signature is rejected by OpenZeppelin's ECDSA
    sig = cert.signatures[0]
    s = int.from_bytes(sig[32:64], "big")
    assert s <= HALF_N
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))
    with reverts("InvalidSignature"):
        world.client(0).propose_raw(cert.checkpoint, [twin, *cert.signatures[1:]])


def test_totals_above_deposits_and_future_deposit_nonce_fail(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)
    too_much = replace(cert.checkpoint, totals=(cert.checkpoint.totals[0] + 1,))
    sigs = [sign_checkpoint(world.genesis.domain, too_much, k) for k in world.keys[:3]]
    with reverts("TotalsExceedDeposits"):
        world.client(0).propose_raw(too_much, sigs)
    future = replace(cert.checkpoint, deposit_nonce=3)
    sigs = [sign_checkpoint(world.genesis.domain, future, k) for k in world.keys[:3]]
    with reverts("DepositNonceTooHigh"):
        world.client(0).propose_raw(future, sigs)
    wrong_length = replace(cert.checkpoint, totals=(*cert.checkpoint.totals, 0))
    sigs = [sign_checkpoint(world.genesis.domain, wrong_length, k) for k in world.keys[:3]]
    with reverts("WrongTotalsLength"):
        world.client(0).propose_raw(wrong_length, sigs)


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
    with reverts("NothingToSlash"):
        reporter.slash_equivocation(evidence)


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
    with reverts("NothingToSlash"):
        reporter.slash_double_sign(cert.checkpoint, sig_a, forked, sig_b)


def test_unbond_waits_for_no_pending_settlement(world: World) -> None:
    replica = funded_world(world)
    client = world.client(0)
    client.bond(world.channel, 10**18)
    client.unbond(world.channel, 4 * 10**17)
    with reverts("UnbondNotReady"):
        client.withdraw_bond(world.channel)
    client.propose(world.certify(replica, 1))
    with reverts("SettlementPending"):
        client.unbond(world.channel, 10**17)
    world.chain.increase_time(WINDOW + 1)
    with reverts("SettlementPending"):
        client.withdraw_bond(world.channel)
    client.finalize(world.channel)
    before = world.chain.w3.eth.get_balance(world.accounts[0].address)
    receipt = client.withdraw_bond(world.channel)
    gas_paid = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert world.chain.w3.eth.get_balance(world.accounts[0].address) == before + 4 * 10**17 - gas_paid
    assert world.adjudicator.bond_of(world.channel, world.accounts[0].address).bonded == 6 * 10**17


def test_uncredited_deposit_is_refunded(world: World) -> None:
    replica = funded_world(world)
    cert = world.certify(replica, 1)  # credits deposits 1 and 2
    late = world.client(2).deposit(world.channel, world.usdc, 3 * E9, world.accounts[2].address)
    assert late == 3
    client = world.client(2)
    client.propose(cert)
    world.chain.increase_time(WINDOW + 1)
    client.finalize(world.channel)
    with reverts("DepositWasCredited"):
        client.refund_deposit(world.channel, 2)
    before = world.token.balance_of(world.accounts[2].address)
    client.refund_deposit(world.channel, 3)
    assert world.token.balance_of(world.accounts[2].address) == before + 3_000_000
    with reverts("AlreadyRefunded"):
        client.refund_deposit(world.channel, 3)


def test_claim_is_reentrancy_safe(embedded_world: World) -> None:
    world = embedded_world
    from settlement.client import load_artifact

    artifact = load_artifact("ReentrantToken")
    factory = world.chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = world.deployer.transact(factory.constructor())
    hostile = world.chain.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
    from crdt.genesis import Genesis, Participant, Role, Token
    from crdt.types import Symbol
    from settlement.client import address_bytes

    genesis = Genesis.create(
        chain_id=world.chain.chain_id,
        adjudicator=world.adjudicator.address_bytes,
        participants=[Participant(world.address(i), Role.TRADER) for i in range(4)],
        tokens=[Token(Symbol("EVIL"), address_bytes(receipt["contractAddress"]), 9)],
        dispute_window=WINDOW,
        nonce=7,
    )
    world.adjudicator.open_genesis(genesis)
    world.deployer.transact(hostile.functions.mint(world.accounts[0].address, 10**12))
    evil = TestTokenClient(world.sender(0), receipt["contractAddress"])
    evil.approve(world.adjudicator.address, 10**12)
    world.client(0).deposit_units(genesis.channel_id, genesis.tokens[0].address, 10**12, world.accounts[0].address)
    replica = Replica(genesis)
    from crdt.ledger import Deposit
    from crdt.replica import Cut

    replica.certify(Cut(1, (), 1, (Deposit(1, world.address(0), Symbol("EVIL"), 10**12),)))
    from crdt.certificate import from_replica

    cert = from_replica(replica, 1, 1, 1, world.keys[:3])
    world.client(0).propose(cert)
    world.chain.increase_time(WINDOW + 1)
    world.client(0).finalize(genesis.channel_id)
    leaf, proof = cert.proof_for(world.address(0), genesis.tokens[0].address)
    claim = world.adjudicator.contract.functions.claim(
        genesis.channel_id, world.accounts[0].address, receipt["contractAddress"], leaf.amount, proof
    )
    world.deployer.transact(hostile.functions.arm(world.adjudicator.address, claim._encode_transaction_data()))
    world.client(0).claim(genesis.channel_id, leaf, proof)
    assert hostile.functions.attempted().call() is True
    assert hostile.functions.innerSucceeded().call() is False
    assert evil.balance_of(world.accounts[0].address) == 10**12
    assert world.adjudicator.token_totals(genesis.channel_id, genesis.tokens[0].address)[1] == 10**12


def test_certificate_amounts_round_down_to_token_decimals(world: World) -> None:
    replica = funded_world(world)
    world.transfer(replica, 1, 2, 1, seq=1)  # 1e-9 USDC: below the token's resolution
    cert = world.certify(replica, 1)
    amounts = {leaf.account: leaf.amount for leaf in cert.leaves}
    assert amounts[world.address(2)] == from_e9(1, 6) == 0
    assert amounts[world.address(1)] == 60_000_122  # 60.000122999 USDC, rounded down
    assert sum(cert.checkpoint.totals) < 150_000_123
    assert isinstance(Certificate.decode(cert.encode()), Certificate)
