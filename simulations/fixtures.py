"""Contracts for demos, simulations and tests: one way to deploy a channel's adjudicator and its
test tokens on a development chain (the embedded one, or anvil).

`deploy` funds a deployer account from the chain's unlocked account, deploys the adjudicator and
a 6-decimal test USDC, and any further test tokens; `Deployment.tokens` are the genesis entries
for them, USDC first.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount

from crdt.genesis import Token
from crdt.types import Symbol
from settlement.chain import Chain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes

DEPLOYER_WEI = 10**21


@dataclass(frozen=True, slots=True)
class Deployment:
    chain: Chain
    deployer: Sender
    adjudicator: AdjudicatorClient
    usdc: TestTokenClient
    tokens: tuple[Token, ...]  # USDC first, then the extra tokens in the order asked

    @property
    def token(self) -> Token:
        """The test USDC's genesis entry."""
        return self.tokens[0]

    def erc20(self, token: Token) -> TestTokenClient:
        """The deployed test token of a genesis entry, acting as the deployer."""
        return TestTokenClient(self.deployer, "0x" + token.address.hex())


def deploy(
    chain: Chain, *, deployer: LocalAccount | None = None, extra_tokens: tuple[tuple[str, int], ...] = ()
) -> Deployment:
    """The adjudicator, a test USDC (6 decimals) and `extra_tokens` ((symbol, decimals) pairs),
    deployed by `deployer` (a new account by default), funded with `DEPLOYER_WEI` first."""
    account = deployer or Account.create()
    chain.fund(account.address, DEPLOYER_WEI)
    sender = Sender(chain, account)
    adjudicator = AdjudicatorClient.deploy(sender)
    usdc = TestTokenClient.deploy(sender, "USD Coin (test)", "USDC", 6)
    tokens = [Token(Symbol("USDC"), address_bytes(usdc.address), 6)]
    for symbol, decimals in extra_tokens:
        other = TestTokenClient.deploy(sender, symbol, symbol, decimals)
        tokens.append(Token(Symbol(symbol), address_bytes(other.address), decimals))
    return Deployment(chain, sender, adjudicator, usdc, tuple(tokens))
