"""Property (audit F5, locked dust): whatever the tokens' decimals, the deposits (with sub-e9
remainders for tokens of more than 9 decimals), the transfers (of any e9 amount, below a token's
resolution too) and the whole-unit withdrawals replayed in the real core, the periodic
checkpoints with their withdrawal claims, the deposits made while a checkpoint is in dispute,
and the close: once every leaf is claimed and every uncredited deposit refunded, the adjudicator
holds nothing for the channel, and every account received exactly its leaves, its refunds and
the remainders of its deposits.

Embedded chain only; one adjudicator for all examples, each example a new channel of two fresh
(or reused) test tokens. A bystander channel holds some of every token for the whole run, so
"holds nothing for the channel" is checked against what another channel owns, not against 0.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, given, settings
from hypothesis import event as observe
from hypothesis import strategies as st
from web3.logs import DISCARD

from crdt.certificate import Certificate
from crdt.genesis import Genesis, Participant, Role, Token
from crdt.ledger import Deposit
from crdt.merkle import BALANCE, WITHDRAWN
from crdt.ops import sign_op
from crdt.replica import Cut, Replica
from crdt.testing import from_replica
from crdt.types import Symbol
from crdt.units import to_e9
from settlement.chain import Chain, EmbeddedChain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes, as_revert, checksum
from tests.settlement.settlement_kit import WINDOW, World, build_world

N = 3  # participants; the threshold is 3 of 3
GAS = 3_000_000
MAX_FEE = 10**11
EXAMPLES = 30 if os.environ.get("HYPOTHESIS_PROFILE", "dev") == "dev" else 150
NONCES = itertools.count(1)


class FastSender(Sender):
    """Signs and sends at once, with a fixed gas limit: no estimate, no funds check. py-evm runs
    each estimate as a whole execution, and the examples are many; a failed transaction still
    raises with the contract's error (`Sender` replays it)."""

    def __init__(self, chain: Chain, account: LocalAccount) -> None:
        super().__init__(chain, account)
        self.chain_id = chain.chain_id

    def transact(self, call: Any, value: int = 0, extra_gas: int = 0) -> Any:
        nonce = self.w3.eth.get_transaction_count(self.address)
        params: dict[str, Any] = {
            "from": self.address, "value": value, "gas": GAS, "nonce": nonce, "chainId": self.chain_id,
            "maxFeePerGas": MAX_FEE, "maxPriorityFeePerGas": 0,
        }
        tx = call.build_transaction(params)
        signed = self.account.sign_transaction(tx)
        try:
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Exception as exc:
            reverted = as_revert(exc)
            if reverted is not None:
                raise reverted from exc
            raise
        receipt = self.w3.eth.wait_for_transaction_receipt(signed.hash)
        if receipt["status"] != 1:
            raise self._replay_failure(tx, receipt)
        return receipt


@dataclass
class Shared:
    world: World
    clients: list[AdjudicatorClient]  # one per participant, sending with `FastSender`
    opener: AdjudicatorClient  # the deployer's, the same
    tokens: dict[int, Token] = field(default_factory=dict)  # decimals -> a deployed test token
    bystander: dict[bytes, int] = field(default_factory=dict)  # token address -> what other channels hold
    balances: dict[tuple[int, bytes], int] = field(default_factory=dict)  # (participant, token) -> units
    dirty: bool = False  # an example failed half-way (while shrinking): read everything again

    def reread(self) -> None:
        """After a failed example: what the accounts hold, and what other channels (the failed
        one among them) hold in the contract."""
        for token in self.tokens.values():
            erc20 = self.erc20(token)
            self.bystander[token.address] = erc20.balance_of(self.world.adjudicator.address)
            for i in range(N):
                self.balances[(i, token.address)] = erc20.balance_of(self.world.accounts[i].address)
        self.dirty = False

    def erc20(self, token: Token) -> TestTokenClient:
        return TestTokenClient(self.world.deployer, "0x" + token.address.hex())

    def token(self, decimals: int) -> Token:
        """The test token of `decimals`, deployed on first use; each participant may spend it,
        and a bystander channel deposits some of it (with a remainder) that it never takes out."""
        if decimals in self.tokens:
            return self.tokens[decimals]
        world = self.world
        symbol = f"T{decimals}"
        erc20 = TestTokenClient.deploy(self.opener.sender, symbol, symbol, decimals)
        token = Token(Symbol(symbol), address_bytes(erc20.address), decimals)
        for i in range(N):
            erc20.mint(world.accounts[i].address, 10**40)
            erc20.with_sender(self.clients[i].sender).approve(world.adjudicator.address, 2**255)
        bystander = open_channel(self, [token])
        amount = 7 * 10**decimals + 10**decimals // 3
        self.clients[0].deposit_units(bystander.channel_id, token.address, amount, world.accounts[1].address)
        self.bystander[token.address] = amount - amount % 10 ** max(0, decimals - 9)
        self.tokens[decimals] = token
        for i in range(N):
            self.balances[(i, token.address)] = erc20.balance_of(world.accounts[i].address)
        return token


def open_channel(shared: Shared, tokens: list[Token]) -> Genesis:
    world = shared.world
    genesis = Genesis.create(
        chain_id=world.chain.chain_id,
        adjudicator=world.adjudicator.address_bytes,
        participants=[Participant(world.address(i), Role.TRADER) for i in range(N)],
        tokens=tokens,
        dispute_window=WINDOW,
        nonce=next(NONCES),
    )
    shared.opener.open_genesis(genesis)
    return genesis


@pytest.fixture(scope="module")
def shared() -> Shared:
    world = build_world(EmbeddedChain(), n=N, salt=b"dust")
    clients = [AdjudicatorClient(FastSender(world.chain, a), world.adjudicator.address) for a in world.accounts]
    opener = AdjudicatorClient(FastSender(world.chain, world.deployer.account), world.adjudicator.address)
    return Shared(world, clients, opener)


participant = st.integers(0, N - 1)
token_index = st.integers(0, 1)
deposit_step = st.tuples(
    st.just("deposit"), participant, participant, token_index,
    st.integers(1, 10**6),  # whole tokens
    st.integers(0, 10**18 - 1),  # and a fraction of one, in 1e-18 (cut to the token's decimals)
)
transfer_step = st.tuples(
    st.just("transfer"), participant, participant, token_index,
    st.integers(1, 1000),  # per mille of the sender's free balance
    st.booleans(),  # or else that many e9 units (below a 6-decimal token's resolution)
)
withdraw_step = st.tuples(st.just("withdraw"), participant, token_index, st.integers(1, 1000))
# Participant i's opening deposit: whole tokens, a fraction, the token, and who pays for it.
opening_deposit = st.tuples(st.integers(1, 10**6), st.integers(0, 10**18 - 1), token_index, participant)
operation = st.one_of(deposit_step, transfer_step, transfer_step, withdraw_step)  # weighted to transfers
# Per participant, the share of its free balance it withdraws in a round (0: none).
withdrawals = st.lists(st.one_of(st.just(0), st.integers(1, 1000)), min_size=N, max_size=N)
# A round: operations (deposits among them) and withdrawals, then a periodic checkpoint: who
# claims its withdrawal increase at once (a bit per participant), and whether someone deposits
# while it is in dispute.
periodic = st.tuples(
    st.lists(operation, max_size=3),
    withdrawals,
    st.one_of(st.just(2**N - 1), st.integers(0, 2**N - 1)),
    st.booleans(),
)
decimals = st.one_of(st.sampled_from([0, 6, 9, 18]), st.integers(0, 18))  # 6: USDC-like, 18: ETH-like


class Run:
    """One example: the channel, the core's replica, and what each account sent and was paid
    (token units; every amount read from the receipts, views only at the end)."""

    def __init__(self, shared: Shared, tokens: list[Token]) -> None:
        self.shared = shared
        self.world = shared.world
        self.clients = shared.clients
        self.tokens = tokens
        self.genesis = open_channel(shared, tokens)
        self.channel = self.genesis.channel_id
        self.replica = Replica(self.genesis)
        self.deposits: list[Deposit] = []  # in the core's terms, every deposit made
        self.credited_units: dict[int, int] = {}  # deposit nonce -> token units credited
        self.deposit_token: dict[int, Token] = {}
        self.sent: dict[tuple[int, bytes], int] = {}  # (depositor, token) -> units it sent
        self.returned: dict[tuple[int, bytes], int] = {}  # remainders that came back in the same call
        self.paid: dict[tuple[bytes, bytes], int] = {}  # (account, token) -> withdrawals paid
        self.seq = dict.fromkeys(range(N), 0)

    def deposit(self, depositor: int, account: int, token: Token, whole: int, fraction: int) -> None:
        world = self.world
        units = whole * 10**token.decimals + fraction // 10 ** (18 - token.decimals)
        step = 10 ** max(0, token.decimals - 9)  # one e9 unit in token units
        contract = world.adjudicator.contract
        receipt = self.clients[depositor].sender.transact(
            contract.functions.deposit(self.channel, checksum(token.address), units, world.accounts[account].address)
        )
        (event,) = contract.events.Deposited().process_receipt(receipt, errors=DISCARD)
        returned = contract.events.DepositRemainderReturned().process_receipt(receipt, errors=DISCARD)
        nonce, credited = int(event["args"]["nonce"]), int(event["args"]["amount"])
        remainder = sum(int(e["args"]["amount"]) for e in returned)
        # credited in whole e9 units; the rest came back to the sender in the same transaction
        assert (credited, remainder) == (units - units % step, units % step)
        assert all(e["args"]["to"] == world.accounts[depositor].address for e in returned)
        if remainder:
            observe("a deposit remainder came back")
        key = (depositor, token.address)
        self.sent[key] = self.sent.get(key, 0) + units
        self.returned[key] = self.returned.get(key, 0) + remainder
        self.credited_units[nonce] = credited
        self.deposit_token[nonce] = token
        self.deposits.append(Deposit(nonce, world.address(account), token.symbol, to_e9(credited, token.decimals)))

    def submit(self, author: int, kind: str, body: dict[str, object]) -> None:
        self.seq[author] += 1
        heads = sorted(self.replica.graph.heads)
        op = sign_op(self.genesis.context(), self.world.keys[author], self.seq[author], heads, kind, body)
        self.replica.receive(op)
        assert self.replica.outcome[op.op_id] is None, self.replica.outcome[op.op_id]

    def transfer(self, sender: int, to: int, token: Token, per_mille: int, tiny: bool) -> None:
        free = self.replica.ledger.balance(self.world.address(sender), token.symbol)
        amount = per_mille if tiny else free * per_mille // 1000
        if sender != to and 0 < amount <= free:
            self.submit(sender, "transfer", {"to": self.world.address(to), "token": token.symbol, "amount": amount})

    def withdraw(self, who: int, token: Token, per_mille: int) -> None:
        unit = 10 ** max(0, 9 - token.decimals)  # withdrawals are whole token units
        free = self.replica.ledger.balance(self.world.address(who), token.symbol)
        amount = free * per_mille // 1000 // unit * unit
        if amount > 0:
            self.submit(who, "withdraw", {"token": token.symbol, "amount": amount})

    def certify(self, credit: bool = True) -> Certificate:
        """The next checkpoint of every operation so far, crediting every deposit not credited
        yet (or none), and its certificate."""
        replica = self.replica
        version = replica.version + 1
        fresh = tuple(d for d in self.deposits if d.nonce > replica.ledger.deposit_nonce) if credit else ()
        replica.certify(Cut(version, tuple(sorted(replica.graph.heads)), 1_000 * version, fresh))
        keys = self.world.keys[:N]
        return from_replica(replica, version, replica.ledger.deposit_nonce, 1_000 * version, keys)

    def checkpoint(self, claimers: int, deposit_during: bool) -> None:
        """A periodic settlement: propose, (a deposit in the dispute,) finalize, and some of the
        participants claim their withdrawal increases; the channel stays open."""
        certificate = self.certify()
        self.clients[certificate.version % N].propose(certificate)
        if deposit_during:
            self.deposit(certificate.version % N, (certificate.version + 1) % N, self.tokens[0], 1, 0)
        self.world.chain.increase_time(WINDOW + 1)
        receipt = self.clients[0].finalize(self.channel)
        (event,) = self.world.adjudicator.contract.events.SettlementFinalized().process_receipt(receipt)
        assert (event["args"]["version"], event["args"]["concluded"]) == (certificate.version, False)
        self.claim_withdrawals(certificate, [i for i in range(N) if claimers >> i & 1])

    def claim_withdrawals(self, certificate: Certificate, who: list[int]) -> None:
        accounts = {self.world.address(i) for i in who}
        contract = self.world.adjudicator.contract
        tree = certificate.tree()
        for position, leaf in enumerate(tree.leaves):
            key = (leaf.account, leaf.token)
            if leaf.kind != WITHDRAWN or leaf.account not in accounts or leaf.amount <= self.paid.get(key, 0):
                continue
            receipt = self.clients[2].claim(self.channel, leaf, tree.proof(position))
            (event,) = contract.events.WithdrawalClaimed().process_receipt(receipt, errors=DISCARD)
            assert event["args"]["amount"] == leaf.amount - self.paid.get(key, 0)  # exactly the increase
            assert event["args"]["cumulative"] == leaf.amount
            if self.paid.get(key, 0):
                observe("a withdrawal paid as an increase over an earlier one")
            self.paid[key] = leaf.amount


def balance_leaves(run: Run, final: Certificate, token: Token) -> list[tuple[object, int]]:
    ledger = run.replica.ledger
    return [
        (leaf, ledger.entitlement(leaf.account, token.symbol))
        for leaf in final.leaves if leaf.kind == BALANCE and leaf.token == token.address
    ]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=decimals,
    second=decimals,
    opening=st.lists(opening_deposit, min_size=N, max_size=N),
    rounds=st.lists(periodic, min_size=1, max_size=2),
    closing=st.tuples(st.lists(operation, max_size=3), withdrawals),
    credit_last=st.booleans(),
)
def test_the_channel_pays_out_every_wei(
    shared: Shared,
    first: int,
    second: int,
    opening: list[tuple[int, int, int, int]],
    rounds: list[tuple[list[tuple[object, ...]], list[int], int, bool]],
    closing: tuple[list[tuple[object, ...]], list[int]],
    credit_last: bool,
) -> None:
    tokens = [shared.token(first)] if first == second else [shared.token(first), shared.token(second)]
    if shared.dirty:
        shared.reread()
    shared.dirty = True
    world, clients = shared.world, shared.clients
    run = Run(shared, tokens)
    channel = run.channel

    def pick(index: int) -> Token:
        return tokens[index % len(tokens)]

    def apply(steps: list[tuple[object, ...]], shares: Sequence[int] = ()) -> None:
        for who, share in enumerate(shares):
            if share:  # from the token it holds most of (in e9)
                ledger, address = run.replica.ledger, world.address(who)
                run.withdraw(who, max(tokens, key=lambda t: ledger.balance(address, t.symbol)), share)
        for step in steps:
            match step:
                case ("deposit", depositor, account, index, whole, fraction):
                    run.deposit(depositor, account, pick(index), whole, fraction)
                case ("transfer", sender, to, index, per_mille, tiny):
                    run.transfer(sender, to, pick(index), per_mille, tiny)
                case ("withdraw", who, index, per_mille):
                    run.withdraw(who, pick(index), per_mille)

    for account, (whole, fraction, index, depositor) in enumerate(opening):
        run.deposit(depositor, account, pick(index), whole, fraction)
    run.certify()  # the first checkpoint credits the opening deposits (nobody proposes it)
    for operations, shares, claimers, deposit_during in rounds:
        apply(operations, shares)
        run.checkpoint(claimers, deposit_during)
    apply(*closing)

    # close with a last checkpoint (crediting the late deposits, or not), conclude, pay everyone
    final = run.certify(credit=credit_last)
    clients[1].close(final)
    world.chain.increase_time(WINDOW + 1)
    clients[1].finalize(channel)
    assert world.adjudicator.channel(channel).status == "concluded"
    tree = final.tree()
    for position, leaf in enumerate(tree.leaves):
        if leaf.kind == BALANCE and leaf.amount:
            clients[0].claim(channel, leaf, tree.proof(position))
    run.claim_withdrawals(final, list(range(N)))
    refunded: dict[tuple[bytes, bytes], int] = {}
    for deposit in run.deposits:
        if deposit.nonce > final.checkpoint.deposit_nonce:
            clients[2].refund_deposit(channel, deposit.nonce)
            observe("an uncredited deposit refunded")
            key = (deposit.account, run.deposit_token[deposit.nonce].address)
            refunded[key] = refunded.get(key, 0) + run.credited_units[deposit.nonce]

    for index, token in enumerate(tokens):
        erc20 = shared.erc20(token)
        # nothing of this channel is left in the contract: only the bystander's share
        assert erc20.balance_of(world.adjudicator.address) == shared.bystander[token.address]
        assert world.held(token) == shared.bystander[token.address]  # its books agree
        credited = sum(
            units for nonce, units in run.credited_units.items()
            if nonce <= final.checkpoint.deposit_nonce and run.deposit_token[nonce] == token
        )
        # the leaves pay out every credited unit (no dust), whatever the decimals
        if token.decimals < 9 and any(to_e9(leaf.amount, token.decimals) != entitlement
                                      for leaf, entitlement in balance_leaves(run, final, token)):
            observe("balances below the token's resolution, apportioned")
        assert final.checkpoint.totals[index] + final.checkpoint.withdrawn[index] == credited
        for i in range(N):
            account = world.address(i)
            mine = [leaf for leaf in final.leaves if leaf.account == account and leaf.token == token.address]
            leaves = sum(leaf.amount for leaf in mine)  # its balance and its cumulative withdrawals
            now = erc20.balance_of(world.accounts[i].address)
            got = now - shared.balances[(i, token.address)]
            shared.balances[(i, token.address)] = now
            expected = (
                leaves + refunded.get((account, token.address), 0)
                + run.returned.get((i, token.address), 0) - run.sent.get((i, token.address), 0)
            )
            assert got == expected, (i, token)
    shared.dirty = False
