"""Shared pieces of the settlement tests: a deployed adjudicator, test tokens and a channel.

Everything is real: the EVM (py-evm in process, or anvil), the contract built from the committed
artifacts, signatures made with coincurve by the core, payout trees built by the core's replay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from crdt.certificate import Certificate
from crdt.genesis import Genesis, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ledger import Deposit
from crdt.markets.config import Market
from crdt.ops import sign_op
from crdt.replica import Cut, Replica
from crdt.testing import from_replica
from crdt.types import Address, ChannelId, Symbol
from settlement.chain import AnvilProcess, Chain, EmbeddedChain, RpcChain, anvil_binary
from settlement.client import (
    AdjudicatorClient,
    Sender,
    TestTokenClient,
    address_bytes,
    checksum,
    load_artifact,
    local_account,
)
from settlement.errors import ContractReverted
from simulations.fixtures import deploy

WINDOW = 3600
E9 = 10**9
BOND = 10**18  # the bond of a channel opened with min_bond > 0 in these tests


def key(i: int, salt: bytes = b"") -> bytes:
    return keccak256(b"parley-settlement-test-" + salt + str(i).encode())


def reverts(name: str) -> pytest.RaisesExc[ContractReverted]:
    """Expect the contract to revert with custom error `name`."""
    return pytest.raises(ContractReverted, match=rf"^{name}\(")


def require_anvil() -> None:
    """Skip (locally) or fail (CI=true) when anvil is not installed."""
    if anvil_binary() is None:
        message = "anvil not found: run `npm install` in contracts/ (needs npm)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def make_chain(kind: str, anvil: AnvilProcess | None) -> Chain:
    if kind == "embedded":
        return EmbeddedChain()
    assert anvil is not None
    return RpcChain(anvil.url)


def fund(chain: Chain, account: LocalAccount, wei: int = 10**20) -> None:
    chain.fund(account.address, wei)


def deploy_artifact(sender: Sender, name: str, *args: Any) -> Contract:
    """Deploy a contract of contracts/build/ (a hostile test token, say) and return it."""
    artifact = load_artifact(name)
    factory = sender.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = sender.transact(factory.constructor(*args))
    contract: Contract = sender.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
    return contract


def travel_to(chain: Chain, timestamp: int) -> None:
    """Move the chain's clock forward so the next block is at about `timestamp` (never back)."""
    delta = timestamp - chain.now()
    if delta > 0:
        chain.increase_time(delta)


def block_time(chain: Chain, receipt: Any) -> int:
    return int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


@dataclass
class World:
    """A deployed adjudicator and USDC-like token, and one open channel of n participants."""

    chain: Chain
    deployer: Sender
    adjudicator: AdjudicatorClient
    token: TestTokenClient
    keys: list[bytes]
    accounts: list[LocalAccount]
    genesis: Genesis
    deposits: list[Deposit] = field(default_factory=list)
    seqs: dict[int, int] = field(default_factory=dict)

    @property
    def channel(self) -> ChannelId:
        return self.genesis.channel_id

    @property
    def usdc(self) -> Token:
        return self.genesis.tokens[0]

    def address(self, i: int) -> Address:
        return address_bytes(self.accounts[i].address)

    def sender(self, i: int) -> Sender:
        return Sender(self.chain, self.accounts[i])

    def client(self, i: int) -> AdjudicatorClient:
        return self.adjudicator.with_sender(self.sender(i))

    def erc20(self, token: Token | None = None) -> TestTokenClient:
        return TestTokenClient(self.deployer, "0x" + (token or self.usdc).address.hex())

    def held(self, token: Token | None = None) -> int:
        """What the adjudicator books as held of `token`, for all channels together."""
        return int(self.adjudicator.contract.functions.held(checksum((token or self.usdc).address)).call())

    def bond_all(self, wei: int = BOND, who: range | list[int] | None = None) -> None:
        for i in who if who is not None else range(len(self.accounts)):
            self.client(i).bond(self.channel, wei)

    def deposit(self, i: int, amount_e9: int, token: Token | None = None, account: int | None = None) -> Deposit:
        """Participant i deposits for `account` (itself by default); returns the deposit as the
        core sees it (the block hash read from its event, as the watcher reads it)."""
        chosen = token or self.usdc
        target = i if account is None else account
        nonce = self.client(i).deposit(self.channel, chosen, amount_e9, self.accounts[target].address)
        deposit = Deposit(nonce, self.address(target), Symbol(chosen.symbol), amount_e9, self.deposit_block(nonce))
        self.deposits.append(deposit)
        return deposit

    def deposit_block(self, nonce: int, channel: bytes | None = None) -> bytes:
        """The hash of the block that holds deposit `nonce` of the channel on the current chain."""
        event = self.adjudicator.contract.events.Deposited()
        logs = event.get_logs(
            from_block=0, argument_filters={"channelId": channel or self.channel, "nonce": nonce}
        )
        return bytes(logs[-1]["blockHash"])

    def replica(self) -> Replica:
        """A replica that credited every deposit so far in checkpoint 1."""
        replica = Replica(self.genesis)
        replica.certify(Cut(1, (), 1_000, tuple(self.deposits)))
        return replica

    def next_seq(self, i: int) -> int:
        self.seqs[i] = self.seqs.get(i, 0) + 1
        return self.seqs[i]

    def submit(self, replica: Replica, author: int, kind: str, body: dict[str, Any], seq: int | None = None) -> None:
        """Sign an operation on the replica's heads and apply it; it must be accepted."""
        heads = sorted(replica.graph.heads)
        chosen = self.next_seq(author) if seq is None else seq
        self.seqs[author] = max(self.seqs.get(author, 0), chosen)
        op = sign_op(self.genesis.context(), self.keys[author], chosen, heads, kind, body)
        result = replica.receive(op)
        assert result.accepted, f"the {kind} was not accepted"
        assert replica.outcome[op.op_id] is None, f"{kind} rejected: {replica.outcome[op.op_id]}"

    def transfer(
        self, replica: Replica, sender: int, to: int, amount_e9: int, seq: int | None = None, token: Token | None = None
    ) -> None:
        body = {"to": self.address(to), "token": (token or self.usdc).symbol, "amount": amount_e9}
        self.submit(replica, sender, "transfer", body, seq)

    def withdraw(self, replica: Replica, who: int, amount_e9: int, token: Token | None = None) -> None:
        """`who` withdraws `amount_e9` (whole token units) in the channel: its withdrawal leaf grows."""
        self.submit(replica, who, "withdraw", {"token": (token or self.usdc).symbol, "amount": amount_e9})

    def certify(self, replica: Replica, version: int, signers: list[int] | None = None) -> Certificate:
        """A certificate of the replica's current state (tentative operations included)."""
        chosen = signers if signers is not None else list(range(self.genesis.threshold))
        nonce = replica.ledger.deposit_nonce
        return from_replica(replica, version, nonce, 1_000 * version, [self.keys[i] for i in chosen])

    def checkpoint(self, replica: Replica, signers: list[int] | None = None) -> Certificate:
        """Certify the next checkpoint of `replica` as consensus would: every operation so far and
        every deposit not credited yet, then a certificate of exactly that state."""
        version = replica.version + 1
        credited = replica.ledger.deposit_nonce
        fresh = tuple(d for d in self.deposits if d.nonce > credited)
        replica.certify(Cut(version, tuple(sorted(replica.graph.heads)), 1_000 * version, fresh))
        return self.certify(replica, version, signers)


def build_world(
    chain: Chain,
    n: int = 4,
    *,
    salt: bytes = b"",
    extra_tokens: list[tuple[str, int]] | None = None,
    min_bond: int = 0,
    nonce: int = 0,
    roles: list[Role] | None = None,
    markets: tuple[Market, ...] = (),
) -> World:
    deployment = deploy(chain, deployer=local_account(key(999, salt)), extra_tokens=tuple(extra_tokens or ()))
    deployer, adjudicator, usdc, tokens = (
        deployment.deployer, deployment.adjudicator, deployment.usdc, deployment.tokens
    )
    keys = [key(i, salt) for i in range(n)]
    accounts = [local_account(k) for k in keys]
    genesis = Genesis.create(
        chain_id=chain.chain_id,
        adjudicator=adjudicator.address_bytes,
        participants=[Participant(address_bytes(a.address), role)
                      for a, role in zip(accounts, roles or [Role.TRADER] * n, strict=True)],
        tokens=list(tokens),
        dispute_window=WINDOW,
        min_bond=min_bond,
        nonce=nonce,
        markets=list(markets),
    )
    adjudicator.open_genesis(genesis)
    for account in accounts[: min(n, 6)]:
        fund(chain, account)
        for token in tokens:
            TestTokenClient(deployer, "0x" + token.address.hex()).mint(account.address, 10**30)
    return World(chain, deployer, adjudicator, usdc, keys, accounts, genesis)


def two_versions(world: World) -> tuple[Replica, Certificate, Certificate]:
    """Two certified versions: deposits of 40 and 60 at v1, then a transfer of 25 at v2."""
    world.deposit(0, 40 * E9)
    world.deposit(1, 60 * E9)
    replica = world.replica()
    old = world.certify(replica, 1)
    world.transfer(replica, 1, 3, 25 * E9, seq=1)
    new = world.certify(replica, 2, signers=[0, 1, 3])
    return replica, old, new
