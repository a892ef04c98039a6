"""Shared pieces of the settlement tests: a deployed adjudicator, a test token and a channel.

Everything is real: the EVM (py-evm in process, or anvil), the contract built from the committed
artifacts, signatures made with coincurve by the core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from eth_account.signers.local import LocalAccount

from crdt.certificate import Certificate, from_replica
from crdt.genesis import Genesis, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ledger import Deposit
from crdt.ops import sign_op
from crdt.replica import Cut, Replica
from crdt.types import Address, ChannelId, Symbol
from settlement.chain import AnvilProcess, Chain, EmbeddedChain, RpcChain, anvil_binary
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes, local_account

WINDOW = 3600
E9 = 10**9


def key(i: int, salt: bytes = b"") -> bytes:
    return keccak256(b"parley-settlement-test-" + salt + str(i).encode())


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

    def deposit(self, i: int, amount_e9: int, token: Token | None = None) -> Deposit:
        """Participant i deposits for itself; returns the deposit as the core sees it."""
        chosen = token or self.usdc
        nonce = self.client(i).deposit(self.channel, chosen, amount_e9, self.accounts[i].address)
        deposit = Deposit(nonce, self.address(i), Symbol(chosen.symbol), amount_e9)
        self.deposits.append(deposit)
        return deposit

    def replica(self) -> Replica:
        """A replica that credited every deposit so far in checkpoint 1."""
        replica = Replica(self.genesis)
        replica.certify(Cut(1, (), 1_000, tuple(self.deposits)))
        return replica

    def transfer(self, replica: Replica, sender: int, to: int, amount_e9: int, seq: int) -> None:
        heads = sorted(replica.graph.heads)
        op = sign_op(
            self.genesis.context(),
            self.keys[sender],
            seq,
            heads,
            "transfer",
            {"to": self.address(to), "token": self.usdc.symbol, "amount": amount_e9},
        )
        result = replica.receive(op)
        assert result.accepted, "the transfer was not accepted"
        assert replica.outcome[op.op_id] is None, f"transfer rejected: {replica.outcome[op.op_id]}"

    def certify(self, replica: Replica, version: int, signers: list[int] | None = None) -> Certificate:
        nonce = max((d.nonce for d in self.deposits), default=0)
        chosen = signers if signers is not None else list(range(self.genesis.threshold))
        return from_replica(replica, version, nonce, 1_000 * version, [self.keys[i] for i in chosen])


def build_world(
    chain: Chain,
    n: int = 4,
    *,
    salt: bytes = b"",
    extra_tokens: list[tuple[str, int]] | None = None,
    min_bond: int = 0,
    nonce: int = 0,
) -> World:
    deployer_account = local_account(key(999, salt))
    fund(chain, deployer_account)
    deployer = Sender(chain, deployer_account)
    adjudicator = AdjudicatorClient.deploy(deployer)
    usdc = TestTokenClient.deploy(deployer, "USD Coin (test)", "USDC", 6)
    tokens = [Token(Symbol("USDC"), address_bytes(usdc.address), 6)]
    for symbol, decimals in extra_tokens or []:
        other = TestTokenClient.deploy(deployer, symbol, symbol, decimals)
        tokens.append(Token(Symbol(symbol), address_bytes(other.address), decimals))
    keys = [key(i, salt) for i in range(n)]
    accounts = [local_account(k) for k in keys]
    genesis = Genesis.create(
        chain_id=chain.chain_id,
        adjudicator=adjudicator.address_bytes,
        participants=[Participant(address_bytes(a.address), Role.TRADER) for a in accounts],
        tokens=tokens,
        dispute_window=WINDOW,
        min_bond=min_bond,
        nonce=nonce,
    )
    adjudicator.open_genesis(genesis)
    for account in accounts[: min(n, 6)]:
        fund(chain, account)
        for token in tokens:
            TestTokenClient(deployer, "0x" + token.address.hex()).mint(account.address, 10**30)
    return World(chain, deployer, adjudicator, usdc, keys, accounts, genesis)
