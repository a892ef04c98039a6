"""Hostile participants and hostile tokens against the rewritten adjudicator, on the embedded
chain and on anvil.

- Audit F4, griefing with old certificates: challenges replace the checkpoint in dispute but do
  not restart its window, so a dispute ends one window after its first proposal however many
  stale certificates a griefer holds; a close adds one window from the close, once, and
  `requestClose` keeps the pending window. Bonds are never frozen longer than that.
- Audit F3, slashing evidence is used once: a slashed participant may bond again, and the same
  evidence cannot take its new bond.
- Token accounting: the contract books `held[token]` for all channels together, so a negative
  rebase (`TokenBalanceShrank`) or a fee on outgoing transfers (`TokenMisbehaved`) stops the
  payout instead of paying one channel out of another's share; a positive rebase is harmless,
  and a deposit is credited with what arrived.
- Bonds enforced: with a minimum bond, deposits wait for every participant's bond, and a
  signer below the minimum does not count towards the threshold.
- Dust: a deposit of an 18-decimal token is credited in whole e9 units, the remainder goes back
  to the sender in the same call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from web3.contract import Contract
from web3.logs import DISCARD

from crdt.certificate import Certificate, sign_checkpoint
from crdt.genesis import Genesis, Participant, Role, Token
from crdt.graph import Equivocation
from crdt.hashing import keccak256
from crdt.merkle import BALANCE, WITHDRAWN, PayoutLeaf
from crdt.ops import sign_op
from crdt.types import Hash32, Symbol
from settlement.client import AdjudicatorClient, address_bytes, checksum
from tests.settlement.settlement_kit import (
    BOND,
    E9,
    WINDOW,
    World,
    block_time,
    build_world,
    deploy_artifact,
    make_chain,
    reverts,
    travel_to,
)

# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def make_world(backend: str, request: pytest.FixtureRequest) -> Callable[..., World]:
    """Build a world with `build_world` options (min_bond, extra_tokens) on this test's backend."""

    def make(**options: Any) -> World:
        process = request.getfixturevalue("anvil") if backend == "anvil" else None
        return build_world(make_chain(backend, process), salt=request.node.name.encode(), **options)

    return make


@contextmanager
def reverts_with(name: str, *args: object) -> Iterator[None]:
    """Expect custom error `name` with exactly `args` (addresses compared case-insensitively)."""
    with reverts(name) as caught:
        yield
    got = tuple(a.lower() if isinstance(a, str) else a for a in caught.value.args_)
    assert got == tuple(a.lower() if isinstance(a, str) else a for a in args)


def event(world: World, receipt: Any, name: str) -> Any:
    """The arguments of the one adjudicator event `name` in `receipt`."""
    (log,) = getattr(world.adjudicator.contract.events, name)().process_receipt(receipt, errors=DISCARD)
    return log["args"]


def gas_paid(receipt: Any) -> int:
    return int(receipt["gasUsed"] * receipt["effectiveGasPrice"])


def native(world: World, i: int) -> int:
    return int(world.chain.w3.eth.get_balance(world.accounts[i].address))


def certificates(world: World, versions: int) -> list[Certificate]:
    """Certificates v1..v`versions` of one channel history, each with one more transfer."""
    replica = world.replica()
    chain: list[Certificate] = []
    for version in range(1, versions + 1):
        world.transfer(replica, 0, 1, E9)
        chain.append(world.certify(replica, version))
    return chain


def conclude(world: World, certificate: Certificate) -> None:
    """Close the channel with `certificate`, wait out the window and finalize: it concludes."""
    world.client(0).close(certificate)
    world.chain.increase_time(WINDOW + 1)
    world.client(0).finalize(world.channel)
    assert world.adjudicator.channel(world.channel).status == "concluded"


def hostile_token(world: World, name: str, symbol: str) -> tuple[Contract, Token]:
    """Deploy a hostile 6-decimal token and mint 1,000 of it to participants 0 and 1."""
    contract = deploy_artifact(world.deployer, name)
    token = Token(Symbol(symbol), address_bytes(contract.address), 6)
    for i in (0, 1):
        world.erc20(token).mint(world.accounts[i].address, 1_000 * 10**6)
    return contract, token


def channel_world(world: World, tokens: list[Token], nonce: int) -> World:
    """Another channel of the same participants on the same adjudicator, as a World."""
    genesis = Genesis.create(
        chain_id=world.chain.chain_id,
        adjudicator=world.adjudicator.address_bytes,
        participants=[Participant(world.address(i), Role.TRADER) for i in range(len(world.accounts))],
        tokens=tokens,
        dispute_window=WINDOW,
        nonce=nonce,
    )
    world.adjudicator.open_genesis(genesis)
    return replace(world, genesis=genesis, deposits=[], seqs={})


def leaf_of(
    certificate: Certificate, world: World, i: int, token: Token, kind: int = BALANCE
) -> tuple[PayoutLeaf, list[Hash32]]:
    """Participant i's leaf of `token` in `certificate`, and its proof."""
    return certificate.proof_for(world.address(i), token.address, kind)


def balance(world: World, token: Token, who: str) -> int:
    return world.erc20(token).balance_of(who)


# -- F4: bounded disputes -----------------------------------------------------------------------


@pytest.mark.hostile
def test_old_certificates_cannot_extend_a_dispute(world: World) -> None:
    """A griefer proposes v1 and challenges with v2..v5 just before the end: the window never
    moves, the honest v6 wins, and the dispute ends exactly one window after v1."""
    world.deposit(0, 100 * E9)
    world.deposit(1, 50 * E9)
    certs = certificates(world, 7)
    griefer, honest = world.client(3), world.client(1)
    world.client(2).bond(world.channel, BOND)

    receipt = griefer.propose(certs[0])
    end = block_time(world.chain, receipt) + WINDOW
    assert event(world, receipt, "SettlementProposed")["finalizesAt"] == end
    receipt = world.client(2).unbond(world.channel, BOND)  # not frozen while merely pending
    ready = event(world, receipt, "UnbondStarted")["readyAt"]
    assert ready == block_time(world.chain, receipt) + WINDOW

    for version, early in zip(range(2, 6), (240, 180, 120, 60), strict=True):
        travel_to(world.chain, end - early)
        args = event(world, griefer.challenge(certs[version - 1]), "SettlementChallenged")
        assert (args["version"], args["replacedVersion"], args["finalizesAt"]) == (version, version - 1, end)
        assert world.adjudicator.settlement(world.channel).finalizes_at == end
    args = event(world, honest.challenge(certs[5]), "SettlementChallenged")  # v6, at once
    assert (args["version"], args["finalizesAt"]) == (6, end)
    with reverts("VersionNotNewer"):  # the griefer cannot go back to v5
        griefer.challenge(certs[4])

    travel_to(world.chain, end - 10)
    with reverts_with("DisputeWindowOpen", end):
        griefer.finalize(world.channel)
    travel_to(world.chain, end + 1)  # the chain's clock lands within a second
    with reverts_with("DisputeWindowClosed", end):  # even a newer certificate is too late now
        honest.challenge(certs[6])
    receipt = griefer.finalize(world.channel)
    assert end <= block_time(world.chain, receipt) <= end + 5
    args = event(world, receipt, "SettlementFinalized")
    assert (args["version"], args["payoutRoot"], args["concluded"]) == (6, certs[5].checkpoint.payout_root, False)
    finalized = world.adjudicator.finalized(world.channel)
    assert (finalized.version, finalized.state_hash) == (6, certs[5].checkpoint.state_hash)
    assert world.adjudicator.channel(world.channel).status == "open"

    # the bond unbonded at the start is free about when the dispute's bound is
    assert ready <= end + 5
    travel_to(world.chain, ready + 1)
    before = native(world, 2)
    receipt = world.client(2).withdraw_bond(world.channel)
    assert native(world, 2) == before + BOND - gas_paid(receipt)


@pytest.mark.hostile
@pytest.mark.parametrize("how", ["closeChannel", "requestClose"])
def test_a_close_adds_at_most_one_window_once(world: World, how: str) -> None:
    """closeChannel during a dispute: one window from the close; requestClose: the pending
    window. Challenges while closing do not extend it, and no second close is possible."""
    world.deposit(0, 100 * E9)
    certs = certificates(world, 4)
    world.client(3).bond(world.channel, BOND)
    receipt = world.client(0).propose(certs[0])
    start = block_time(world.chain, receipt)
    end = start + WINDOW
    world.client(3).unbond(world.channel, BOND)

    travel_to(world.chain, end - 600)
    if how == "closeChannel":
        receipt = world.client(1).close(certs[1])
        args = event(world, receipt, "SettlementProposed")
        end = block_time(world.chain, receipt) + WINDOW  # one window from the close
        assert (args["version"], args["closing"], args["finalizesAt"]) == (2, True, end)
    else:
        args = event(world, world.client(1).request_close(world.channel), "CloseRequested")
        assert (args["version"], args["finalizesAt"]) == (1, end)  # the pending window, kept
    assert world.adjudicator.channel(world.channel).status == "closing"

    travel_to(world.chain, end - 60)
    args = event(world, world.client(2).challenge(certs[2]), "SettlementChallenged")
    assert (args["version"], args["finalizesAt"]) == (3, end)
    with reverts("ChannelClosing"):
        world.client(2).close(certs[3])
    with reverts("ChannelClosing"):
        world.client(2).request_close(world.channel)
    with reverts("ChannelClosing"):  # slashable until the end, which is bounded
        world.client(3).withdraw_bond(world.channel)

    travel_to(world.chain, end - 10)
    with reverts_with("DisputeWindowOpen", end):
        world.client(2).finalize(world.channel)
    travel_to(world.chain, end + 1)  # the chain's clock lands within a second
    receipt = world.client(2).finalize(world.channel)
    windows = 2 if how == "closeChannel" else 1
    assert end <= block_time(world.chain, receipt) <= start + windows * WINDOW + 5
    assert event(world, receipt, "SettlementFinalized")["concluded"] is True
    assert world.adjudicator.finalized(world.channel).version == 3

    travel_to(world.chain, world.adjudicator.bond_of(world.channel, world.accounts[3].address).ready_at + 1)
    before = native(world, 3)
    receipt = world.client(3).withdraw_bond(world.channel)
    assert native(world, 3) == before + BOND - gas_paid(receipt)


# -- F3: evidence once, across re-bonding -------------------------------------------------------


@pytest.mark.hostile
def test_used_evidence_cannot_take_a_new_bond(make_world: Callable[..., World]) -> None:
    """F3: an equivocator and a double signer are slashed, bond again (deposits resume), and the
    same evidence then reverts EvidenceUsed, leaving the new bond whole; fresh evidence slashes."""
    world = make_world(min_bond=BOND)
    world.bond_all()
    channel, reporter = world.channel, world.client(0)
    ctx = world.genesis.context()

    def equivocation(seq: int) -> Equivocation:
        body = {"to": world.address(0), "token": "USDC", "amount": 1}
        return Equivocation(
            sign_op(ctx, world.keys[2], seq, [], "transfer", body),
            sign_op(ctx, world.keys[2], seq, [], "transfer", {**body, "amount": 2}),
        )

    checkpoint = world.certify(world.replica(), 1).checkpoint
    forked = replace(checkpoint, payout_root=Hash32(keccak256(b"another root")))
    double_sign = (
        checkpoint,
        sign_checkpoint(world.genesis.domain, checkpoint, world.keys[1]),
        forked,
        sign_checkpoint(world.genesis.domain, forked, world.keys[1]),
    )
    offences: list[tuple[int, int, int, Callable[[AdjudicatorClient], Any]]] = [
        (2, 1, 1, lambda client: client.slash_equivocation(equivocation(1))),
        (1, 2, 1, lambda client: client.slash_double_sign(*double_sign)),
    ]
    for offender, kind, seq, slash in offences:
        address = world.accounts[offender].address
        slash(reporter)
        assert world.adjudicator.channel(channel).fully_bonded == 3
        with reverts_with("BondsMissing", 3, 4):  # slashed below the minimum: deposits stop
            world.deposit(0, E9)
        world.client(offender).bond(channel, BOND)  # it may bond again
        assert world.adjudicator.channel(channel).fully_bonded == 4
        insurance = world.adjudicator.channel(channel).insurance
        evidence = keccak256(abi_encode(["uint8", "bytes32", "address", "uint64"], [kind, channel, address, seq]))
        assert world.adjudicator.contract.functions.evidenceUsed(evidence).call() is True
        with reverts_with("EvidenceUsed", evidence):
            slash(world.client(3))
        bond = world.adjudicator.bond_of(channel, address)
        assert (bond.bonded, bond.unbonding) == (BOND, 0)  # the new bond is untouched
        assert world.adjudicator.channel(channel).insurance == insurance
    world.deposit(0, E9)  # everyone is bonded again

    receipt = reporter.slash_equivocation(equivocation(2))  # fresh evidence does take it
    assert event(world, receipt, "Slashed")["toReporter"] == BOND // 2
    assert world.adjudicator.bond_of(channel, world.accounts[2].address).bonded == 0


# -- token accounting across channels -----------------------------------------------------------


@pytest.mark.hostile
def test_a_rebasing_token_cannot_pay_one_channel_out_of_another(world: World) -> None:
    """Channels A (concluded) and B (open) both hold REB. After a -10% rebase every REB payout
    and deposit reverts TokenBalanceShrank with nothing moved, while A's USDC pays; after a
    +25% rebase every payout pays exactly, and a deposit is credited with what arrived."""
    rebasing, reb = hostile_token(world, "RebasingToken", "REB")
    usdc, adjudicator, account0 = world.usdc, world.adjudicator.address, world.accounts[0].address
    a = channel_world(world, [usdc, reb], nonce=1)
    b = channel_world(world, [usdc, reb], nonce=2)
    a.deposit(0, 100 * E9, reb)
    a.deposit(0, 50 * E9)
    replica = a.replica()
    a.withdraw(replica, 0, 10 * E9, reb)
    a.withdraw(replica, 0, 10 * E9)
    cert_a = a.certify(replica, 1)
    late = a.deposit(0, 5 * E9, reb)  # not credited: refunded once A concluded
    b.deposit(1, 100 * E9, reb)
    replica = b.replica()
    b.withdraw(replica, 1, 20 * E9, reb)
    cert_b = b.certify(replica, 1)
    b.client(1).propose(cert_b)
    conclude(a, cert_a)  # A concludes; B finalises v1 and stays open
    b.client(1).finalize(b.channel)
    assert world.held(reb) == balance(world, reb, adjudicator) == 205 * 10**6
    # every REB payout of A and B: (channel, payee, leaf and proof, balance and held it would leave)
    payouts = [
        (a, 0, leaf_of(cert_a, a, 0, reb), (94_500_000, 115 * 10**6)),
        (a, 0, leaf_of(cert_a, a, 0, reb, WITHDRAWN), (174_500_000, 195 * 10**6)),
        (b, 1, leaf_of(cert_b, b, 1, reb, WITHDRAWN), (164_500_000, 185 * 10**6)),
    ]

    world.deployer.transact(rebasing.functions.rebase(9_000))  # -10%: 184.5 left for 205 held
    assert balance(world, reb, adjudicator) == 184_500_000
    for channel, _, (leaf, proof), left in payouts:
        with reverts_with("TokenBalanceShrank", checksum(reb.address), *left):
            channel.client(2).claim(channel.channel, leaf, proof)
    with reverts_with("TokenBalanceShrank", checksum(reb.address), 179_500_000, 200 * 10**6):
        a.client(2).refund_deposit(a.channel, late.nonce)
    with reverts_with("TokenBalanceShrank", checksum(reb.address), 184_500_000, 205 * 10**6):
        b.deposit(1, E9, reb)
    assert world.held(reb) == 205 * 10**6
    assert world.adjudicator.token_totals(a.channel, reb.address) == (105 * 10**6, 0, 0, 0)
    assert world.adjudicator.token_totals(b.channel, reb.address) == (100 * 10**6, 0, 0, 0)
    assert not world.adjudicator.is_claimed(a.channel, payouts[0][2][0])
    for kind, amount in ((BALANCE, 40 * 10**6), (WITHDRAWN, 10 * 10**6)):  # the channel's USDC still pays
        before = balance(world, usdc, account0)
        a.client(2).claim(a.channel, *leaf_of(cert_a, a, 0, usdc, kind))
        assert balance(world, usdc, account0) == before + amount

    world.deployer.transact(rebasing.functions.rebase(12_500))  # +25%: more than held, harmless
    assert balance(world, reb, adjudicator) == 256_250_000
    for channel, i, (leaf, proof), _ in payouts:
        payee, here = world.accounts[i].address, balance(world, reb, adjudicator)
        before = balance(world, reb, payee)
        channel.client(2).claim(channel.channel, leaf, proof)
        assert balance(world, reb, payee) == before + leaf.amount
        assert balance(world, reb, adjudicator) == here - leaf.amount
    before = balance(world, reb, account0)
    a.client(2).refund_deposit(a.channel, late.nonce)
    assert balance(world, reb, account0) == before + 5 * 10**6
    assert world.held(reb) == 80 * 10**6  # B's 100 less its withdrawal of 20
    # a deposit is credited with what arrived: 1,000,001 asked moves 800,000 shares, 1,000,000
    sender, here = balance(world, reb, world.accounts[1].address), balance(world, reb, adjudicator)
    nonce = b.client(1).deposit_units(b.channel, reb.address, 1_000_001, world.accounts[1].address)
    arrived = balance(world, reb, adjudicator) - here
    assert arrived == world.adjudicator.deposit_of(b.channel, nonce)[3] == 1_000_000
    assert balance(world, reb, world.accounts[1].address) == sender - arrived
    assert world.held(reb) == 81 * 10**6 <= balance(world, reb, adjudicator)


@pytest.mark.hostile
def test_a_fee_on_transfer_token_cannot_pay_one_channel_out_of_another(world: World) -> None:
    """With the adjudicator taxed, a claim would take 1% more than it pays: TokenMisbehaved, and
    nothing changes; a taxed depositor pays the fee itself, the contract credits what arrived."""
    fee_token, fee = hostile_token(world, "FeeOnTransferToken", "FEE")
    adjudicator = world.adjudicator.address
    a = channel_world(world, [fee], nonce=1)
    b = channel_world(world, [fee], nonce=2)
    a.deposit(0, 100 * E9, fee)
    b.deposit(1, 60 * E9, fee)
    replica = a.replica()
    a.transfer(replica, 0, 2, 30 * E9, token=fee)
    cert = a.certify(replica, 1)
    conclude(a, cert)
    leaf, proof = leaf_of(cert, a, 0, fee)
    assert leaf.amount == 70 * 10**6

    world.deployer.transact(fee_token.functions.tax(adjudicator))  # 1% more leaves on every payout
    account0 = world.accounts[0].address
    before = balance(world, fee, account0)
    with reverts_with("TokenMisbehaved", checksum(fee.address), 70 * 10**6, 70_700_000):
        a.client(3).claim(a.channel, leaf, proof)
    assert not a.adjudicator.is_claimed(a.channel, leaf)
    assert balance(world, fee, account0) == before
    assert world.held(fee) == balance(world, fee, adjudicator) == 160 * 10**6  # B's 60 intact
    assert a.adjudicator.token_totals(a.channel, fee.address) == (100 * 10**6, 0, 0, 0)
    assert b.adjudicator.token_totals(b.channel, fee.address) == (60 * 10**6, 0, 0, 0)

    # a taxed depositor: the 1% fee comes out of its balance, the contract credits what arrived
    world.deployer.transact(fee_token.functions.tax(world.accounts[1].address))
    sender, here = balance(world, fee, world.accounts[1].address), balance(world, fee, adjudicator)
    deposit = b.deposit(1, 10 * E9, fee)
    arrived = balance(world, fee, adjudicator) - here
    assert arrived == b.adjudicator.deposit_of(b.channel, deposit.nonce)[3] == 10 * 10**6
    assert balance(world, fee, world.accounts[1].address) == sender - 10_100_000
    assert world.held(fee) == balance(world, fee, adjudicator) == 170 * 10**6

    a.client(3).claim(a.channel, leaf, proof)  # the adjudicator is no longer taxed: it pays
    assert balance(world, fee, account0) == before + leaf.amount
    assert world.held(fee) == balance(world, fee, adjudicator) == 100 * 10**6


# -- bonds enforced -----------------------------------------------------------------------------


@pytest.mark.hostile
def test_deposits_and_signatures_need_the_minimum_bond(make_world: Callable[..., World]) -> None:
    """Deposits wait for every bond; a signer unbonded to 0 does not count (NotEnoughSignatures)
    and stops deposits until it bonds again; bonds and unbonds below the minimum are refused."""
    world = make_world(min_bond=BOND)
    channel = world.channel
    with reverts_with("BondsMissing", 0, 4):
        world.deposit(0, E9)
    with reverts_with("BondBelowMinimum", BOND - 1, BOND):
        world.client(0).bond(channel, BOND - 1)
    world.bond_all(who=range(3))
    with reverts_with("BondsMissing", 3, 4):
        world.deposit(0, E9)
    world.client(3).bond(channel, BOND)
    assert world.adjudicator.channel(channel).fully_bonded == 4
    world.deposit(0, 100 * E9)
    world.deposit(1, 50 * E9)

    with reverts_with("BondBelowMinimum", BOND - 1, BOND):  # below the minimum but not 0
        world.client(3).unbond(channel, 1)
    world.client(2).unbond(channel, BOND)  # to 0: allowed, and it no longer counts
    assert world.adjudicator.channel(channel).fully_bonded == 3
    with reverts_with("BondsMissing", 3, 4):
        world.deposit(0, E9)
    replica = world.replica()
    with_unbonded = world.certify(replica, 1, signers=[0, 1, 2])
    with reverts_with("NotEnoughSignatures", 2, 3):
        world.client(0).propose(with_unbonded)
    with reverts_with("NotEnoughSignatures", 2, 3):
        world.client(0).close(with_unbonded)
    world.client(0).propose(world.certify(replica, 1, signers=[0, 1, 3]))
    assert world.adjudicator.settlement(channel).version == 1

    world.client(2).bond(channel, BOND)  # bonded again: it counts, and deposits resume
    assert world.adjudicator.channel(channel).fully_bonded == 4
    world.client(0).challenge(world.certify(replica, 2, signers=[0, 1, 2]))
    assert world.adjudicator.settlement(channel).version == 2
    assert world.deposit(0, E9).nonce == 3


# -- dust ---------------------------------------------------------------------------------------


@pytest.mark.hostile
def test_a_deposit_remainder_goes_back_to_the_sender(make_world: Callable[..., World]) -> None:
    """An 18-decimal deposit is credited in whole e9 units; the sub-e9 rest goes back to the
    sender (not the account credited) in the same call; less than one e9 unit is ZeroAmount."""
    world = make_world(extra_tokens=[("WETH", 18)])
    weth, adjudicator = world.genesis.tokens[1], world.adjudicator.address
    sender, account = world.accounts[0].address, world.accounts[1].address
    units = 3 * 10**18 + 999_999_999  # a sub-e9 remainder of 999,999,999 wei
    world.erc20(weth).with_sender(world.sender(0)).approve(adjudicator, 10**19)
    before, before_account = balance(world, weth, sender), balance(world, weth, account)
    deposit = world.adjudicator.contract.functions.deposit(world.channel, checksum(weth.address), units, account)
    receipt = world.sender(0).transact(deposit)  # by 0 for 1: the remainder goes to 0

    credited = event(world, receipt, "Deposited")
    assert (credited["nonce"], credited["account"], credited["amount"]) == (1, account, 3 * 10**18)
    assert credited["amount"] % 10**9 == 0
    returned = event(world, receipt, "DepositRemainderReturned")
    assert (returned["nonce"], returned["to"], returned["amount"]) == (1, sender, 999_999_999)
    assert balance(world, weth, sender) == before - 3 * 10**18
    assert balance(world, weth, account) == before_account
    assert world.held(weth) == balance(world, weth, adjudicator) == 3 * 10**18
    assert world.adjudicator.deposit_of(world.channel, 1) == (address_bytes(account), 1, False, 3 * 10**18)

    dust = world.adjudicator.contract.functions.deposit(world.channel, checksum(weth.address), 10**9 - 1, account)
    with reverts("ZeroAmount"):  # less than one e9 unit: nothing to credit
        world.sender(0).transact(dust)
    assert balance(world, weth, sender) == before - 3 * 10**18
    assert world.adjudicator.channel(world.channel).deposit_nonce == 1
