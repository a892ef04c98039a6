"""The end of a demo, shared by ``parley demo`` and ``parley demo --perps``: the newest certified
state read from a node, the real ``parley exit``, the other participants' claims, and the
settlement table that checks what each wallet was paid.

What a payout owes is the ledger's `entitlement`, recomputed here from what the node's API says
of the certified state: per (participant, token) its free, held (by open orders, paid back to
it) and locked balance, and in a perp market's collateral token less what it owes (debt), plus
its positions' PnL at the market's oracle price less the funding they owe, floored at 0; those
e9 amounts become token units apportioned over the participants (`crdt.units.apportion`), as the
payout leaves are. The table holds each term, and a row is right when the contract paid exactly
those units and the certificate's leaf says the same.

`certified_state` reads balances, margins and positions after it has the certificate and checks
the state hash again once they are read, so all of them are of the state the certificate signs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from rich import box
from rich.console import Console
from rich.table import Table

from channel.api.client import Client, Endpoint
from channel.runtime import keystore
from crdt.certificate import Certificate
from crdt.genesis import Genesis
from crdt.merkle import BALANCE
from crdt.units import apportion, to_e9
from settlement.chain import RpcChain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes
from settlement.exit import ExitResult, claim_leaves
from simulations.cluster import CLUSTER_PASSWORD
from simulations.trading import fixed


def stats(endpoint: Endpoint) -> dict[str, Any]:
    with Client(endpoint) as client:
        result: dict[str, Any] = client.stats()
        return result


def same_roots(endpoints: Sequence[Endpoint]) -> tuple[str, str] | None:
    """The nodes' (state hash, payout root) when they all agree, else None."""
    roots = {(s["state_hash"], s["payout_root"]) for s in (stats(endpoint) for endpoint in endpoints)}
    return next(iter(roots)) if len(roots) == 1 else None


@dataclass(frozen=True, slots=True)
class CertifiedState:
    """A node's newest certificate and what its API says of the state it signs."""

    certificate: Certificate
    balances: dict[str, Any]  # parley_balances: account -> token -> free, held, locked
    margins: dict[str, dict[str, Any]]  # account -> collateral token -> parley_account's margin
    positions: list[dict[str, Any]]  # parley_positions: every open position


def certified_state(client: Client, accounts: Sequence[str]) -> CertifiedState | None:
    """The node's newest certificate and its balances, margins and positions, once the node's
    state is the one the certificate signs (every operation is in a checkpoint: nothing
    tentative is left), and still is after they are read."""
    before = client.stats()
    if before["certified"] < before["version"]:
        return None
    certificate = Certificate.decode(bytes.fromhex(client.certificate()["certificate"][2:]))
    balances = client.balances()
    margins = {account: client.account(account)["collateral"] for account in accounts}
    positions = client.positions()
    if "0x" + certificate.checkpoint.state_hash.hex() != client.stats()["state_hash"]:
        return None
    return CertifiedState(certificate, balances, margins, positions)


@dataclass(frozen=True, slots=True)
class Owed:
    """What a settlement owes one participant in one token: e9 parts, and the token units."""

    free: int
    held: int  # by its open orders, paid back to it
    locked: int
    debt: int  # a collateral token's loss its balance could not pay
    pnl: int  # its positions closed at the oracle price (a collateral token's perp markets)
    funding: int  # what they owe in funding (positive: it pays)
    units: int
    perp: bool  # the token is a perp market's collateral

    @property
    def value(self) -> int:
        """The e9 amount owed, before the units are apportioned."""
        return max(0, self.free + self.held + self.locked - self.debt + self.pnl - self.funding)


def owed_by(genesis: Genesis, state: CertifiedState) -> dict[tuple[str, str], Owed]:
    """Per (participant, token): what `state` owes it, in e9 parts and in token units apportioned
    over the participants as the payout leaves are."""
    quote = {market.symbol: market.quote for market in genesis.markets if market.perp is not None}
    accounts = ["0x" + p.address.hex() for p in genesis.participants]
    owed: dict[tuple[str, str], Owed] = {}
    for token in genesis.tokens:
        symbol = token.symbol
        perp = symbol in quote.values()
        rows = []
        for account in accounts:
            part = {k: int(v) for k, v in state.balances[account][symbol].items()}
            mine = [p for p in state.positions if p["account"] == account and quote[p["market"]] == symbol]
            debt = int(state.margins[account][symbol]["debt"]) if perp else 0
            rows.append(Owed(part["free"], part["held"], part["locked"], debt,
                             sum(int(p["unrealised_pnl"]) for p in mine),
                             sum(int(p["pending_funding"]) for p in mine), 0, perp))
        units = apportion([row.value for row in rows], token.decimals)
        for account, row, amount in zip(accounts, rows, units, strict=True):
            owed[(account, symbol)] = Owed(row.free, row.held, row.locked, row.debt, row.pnl, row.funding, amount,
                                           perp)
    return owed


def settlement_table(console: Console, genesis: Genesis, names: Sequence[str], owed: dict[tuple[str, str], Owed],
                     certificate: Certificate, paid: dict[tuple[str, str], int]) -> bool:
    """A table per token of each participant's arithmetic and what the contract paid; True if
    every payment is what the state owes, which is also what the certificate's balance leaf
    says. A perp market's collateral token has the positions' columns too (and the debt, if any
    account has one)."""
    accounts = ["0x" + p.address.hex() for p in genesis.participants]
    ok = True
    for token in genesis.tokens:
        places = min(token.decimals, 6)
        rows = [owed[(account, token.symbol)] for account in accounts]
        perp = any(row.perp for row in rows)
        debts = any(row.debt for row in rows)
        terms = "free + locked + held by open orders" + (" - debt" if debts else "")
        terms += " + PnL at the oracle price - funding owed (at least 0)" if perp else ""
        title = f"{token.symbol} at v{certificate.version}: paid = {terms}, apportioned to token units"
        table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))
        columns = ["", "free + locked", "held"] + (["debt"] if debts else []) + (["PnL", "funding"] if perp else [])
        for column in (*columns, "paid = leaf"):
            table.add_column(column, justify="left" if not column else "right", no_wrap=bool(column))
        for name, account, entry in zip(names, accounts, rows, strict=True):
            leaf, _ = certificate.proof_for(address_bytes(account), token.address, BALANCE)
            got = paid[(account, token.symbol)]
            right = got == entry.units == leaf.amount
            ok &= right
            cells = [name, fixed(entry.free + entry.locked, places), fixed(entry.held, places)]
            cells += [fixed(-entry.debt, places)] if debts else []
            cells += [fixed(entry.pnl, places), fixed(entry.funding, places)] if perp else []
            table.add_row(*cells, f"{fixed(to_e9(got, token.decimals), places)} "
                          + ("[green]✓[/green]" if right else f"[red]✗ owed {entry.units}, leaf {leaf.amount}[/red]"))
        console.print(table)
    return ok


def claim(root: Path, chain: RpcChain, adjudicator: AdjudicatorClient, channel: bytes, certificate: Certificate,
          account: str) -> None:
    """Claim, as `account` (its key from the cluster's keystore), what the finalised
    `certificate` owes it and was not paid yet."""
    key = keystore.load(keystore.find(root / "keys", address_bytes(account)), CLUSTER_PASSWORD)
    as_account = adjudicator.with_sender(Sender(chain, Account.from_key(key.private_key)))
    claim_leaves(as_account, channel, certificate, address_bytes(account), ExitResult(), lambda event: None)


def run_exit(console: Console, root: Path, version: int, url: str, account: str, adjudicator: AdjudicatorClient,
             chain: RpcChain, channel: bytes) -> None:
    """Run the real ``parley exit``; once its certificate (version `version`) is the pending
    proposal, move the chain's clock past the dispute window."""
    key_file = root / "keys" / f"{account}.json"
    exit_run = subprocess.Popen(
        [sys.executable, "-m", "channel", "exit", "--genesis", str(root / "genesis.toml"),
         "--certificate", str(root / "exit"), "--rpc", url, "--key-file", str(key_file),
         "--password-file", str(root / "password")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + 120
    while exit_run.poll() is None and time.monotonic() < deadline:
        if adjudicator.channel(channel).status == "closing":
            pending = adjudicator.settlement(channel)
            remaining = pending.finalizes_at - chain.now()
            if pending.version == version and remaining >= 0:
                console.print(f"   the channel is closing at v{version}; moving the embedded chain's clock "
                              f"{remaining + 1} s forward, past the dispute window")
                chain.increase_time(remaining + 1)
        time.sleep(0.5)
    if exit_run.poll() is None:
        exit_run.kill()
    output = exit_run.communicate(timeout=30)[0]
    for line in output.strip().splitlines()[-4 if exit_run.returncode == 0 else -40:]:
        console.print(f"   [dim]{line}[/dim]")


def wallets(erc20s: dict[str, TestTokenClient], accounts: Sequence[str]) -> dict[tuple[str, str], int]:
    """Each (account, token symbol)'s balance in its wallet on the chain, in token units."""
    return {(account, symbol): erc20.balance_of(account) for account in accounts for symbol, erc20 in erc20s.items()}
