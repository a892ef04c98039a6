"""Property: for random balances, every account's claim succeeds with its proof, and the sum
claimed per token equals the checkpoint's total (embedded chain; each example is a new channel)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from settlement_kit import WINDOW, World, build_world

from crdt.certificate import from_replica
from crdt.genesis import Genesis, Participant, Role
from crdt.ledger import Deposit
from crdt.ops import sign_op
from crdt.replica import Cut, Replica
from crdt.types import Symbol
from crdt.units import to_e9
from settlement.chain import EmbeddedChain
from settlement.client import TestTokenClient

NONCES = itertools.count(1)


@pytest.fixture(scope="module")
def shared() -> World:
    """One chain, adjudicator and pair of tokens (USDC 6 and WETH 18 decimals) for all examples."""
    world = build_world(EmbeddedChain(), n=4, salt=b"property", extra_tokens=[("WETH", 18)])
    for i in range(4):
        for token in world.genesis.tokens:
            TestTokenClient(world.sender(i), "0x" + token.address.hex()).approve(world.adjudicator.address, 2**255)
    return world


amounts = st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 10**24)), min_size=4, max_size=4)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deposits=amounts, transfer=st.integers(0, 10**18))
def test_every_claim_succeeds_and_sums_to_totals(
    shared: World, deposits: list[tuple[int, int]], transfer: int
) -> None:
    world = shared
    genesis = Genesis.create(
        chain_id=world.chain.chain_id,
        adjudicator=world.adjudicator.address_bytes,
        participants=[Participant(world.address(i), Role.TRADER) for i in range(4)],
        tokens=list(world.genesis.tokens),
        dispute_window=WINDOW,
        nonce=next(NONCES),
    )
    world.adjudicator.open_genesis(genesis)
    credited = []
    for i, pair in enumerate(deposits):
        for token, units in zip(genesis.tokens, pair, strict=True):
            if units:
                account = world.accounts[i].address
                nonce = world.client(i).deposit_units(genesis.channel_id, token.address, units, account)
                credited.append(Deposit(nonce, world.address(i), Symbol(token.symbol), to_e9(units, token.decimals)))
    replica = Replica(genesis)
    replica.certify(Cut(1, (), 1, tuple(credited)))
    if transfer and replica.ledger.balance(world.address(0), Symbol("WETH")) >= transfer:
        op = sign_op(genesis.context(), world.keys[0], 1, [], "transfer",
                     {"to": world.address(1), "token": "WETH", "amount": transfer})
        replica.receive(op)
    if not credited:
        return  # nothing deposited: the contract has nothing to pay
    cert = from_replica(replica, 1, len(credited), 2, world.keys[1:4])
    client = world.client(2)
    client.propose(cert)
    world.chain.increase_time(WINDOW + 1)
    client.finalize(genesis.channel_id)
    tree = cert.tree()
    paid = dict.fromkeys(genesis.tokens, 0)
    for position, leaf in enumerate(tree.leaves):
        token = next(t for t in genesis.tokens if t.address == leaf.token)
        erc20 = TestTokenClient(world.deployer, "0x" + leaf.token.hex())
        before = erc20.balance_of(leaf.account)
        client.claim(genesis.channel_id, leaf, tree.proof(position))
        assert erc20.balance_of(leaf.account) == before + leaf.amount
        paid[token] += leaf.amount
    for token, total in zip(genesis.tokens, cert.checkpoint.totals, strict=True):
        assert paid[token] == total
        deposited, claimed, _ = world.adjudicator.token_totals(genesis.channel_id, token.address)
        assert claimed == total <= deposited
