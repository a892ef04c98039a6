"""``parley demo``: the whole life of a channel, on one embedded chain and four node processes.

1. an embedded chain (eth-tester + py-evm) is served on 127.0.0.1; the adjudicator, a 6-decimal
   USDC-like and an 18-decimal ETH-like test token are deployed; the channel, whose genesis has
   the spot market ETH/USDC, is opened and every participant deposits 10,000 USDC and 5 ETH,
   which the first checkpoint credits;
2. four nodes run over libp2p; node 3 is Byzantine: it signs a second operation for every seq
   it uses (equivocation), signs operations replay must reject, and after each of its orders
   signs one it cannot fund and, if its order rests, one that crosses it (a self-trade);
3. transfers flow through the nodes' local APIs while two market makers (nodes 0 and 1) quote a
   ladder around a moving mid and takers (nodes 2 and 3) send limit and market orders
   (`simulations.trading`); every node shows its book and last trades, and they all agree on
   the fills, the state hash and the payout root; replay rejected every unfunded order
   (insufficient_balance), removed each resting order a cross of its own owner met, and never
   filled an account against itself; checkpoints are certified by BFT consensus and proposed
   on-chain by a rotating submitter, and the channel stays open;
4. a participant withdraws 100 USDC; one dispute window later (the demo moves the embedded
   chain's clock forward) the nodes finalise the checkpoint that holds it, and the participant
   claims it on-chain while the channel carries on: a new deposit is credited, trading goes on;
5. the Byzantine node is stopped, and the other three keep finalising (3 is the threshold);
6. a participant takes the newest certificate from their node, everyone goes offline, and
   ``parley exit`` closes the channel with it, waits out the dispute window and finalises; every
   participant claims its USDC and ETH, and what each is paid is checked against its balances
   after trading (free, held by its open orders and locked) as the certificate's state holds
   them.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from eth_account import Account
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from channel.api.client import Client, Endpoint
from channel.runtime import keystore
from channel.runtime.chain_worker import ChainConfig
from crdt.certificate import Certificate
from crdt.genesis import Genesis, Role, Token
from crdt.markets.book import SELF_TRADE
from crdt.markets.config import Market
from crdt.merkle import BALANCE
from crdt.units import apportion, format_e9, to_e9
from settlement.chain import RpcChain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes, checksum
from settlement.exit import ExitResult, claim_leaves
from settlement.server import ChainServerProcess
from simulations.byzantine import read_journal
from simulations.cluster import CLUSTER_PASSWORD, NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.demos.network import Workload, converge, progress_bar, run_workload, seeded_plan
from simulations.fixtures import deploy
from simulations.trading import (
    Flow,
    FlowResult,
    TradingCheck,
    agreement_table,
    book_table,
    check_views,
    fixed,
    forged_table,
    market_views,
    run_order_flow,
    trades_table,
)

E9 = 10**9
DEPOSIT = 10_000 * E9  # USDC
ETH_DEPOSIT = 5 * E9
WITHDRAWAL = 100 * E9
LATE_DEPOSIT = 50 * E9
BYZANTINE = 3
MAKERS = (0, 1)


def _is_final(client: Client, op_id: str) -> bool:
    return bool(client.status(op_id)["status"] == "final")


def _all_judged(client: Client, journal: list[dict[str, Any]]) -> bool:
    """Whether `client`'s node has applied (or rejected) every forged order of the journal."""
    return all(client.status(entry["op_id"])["status"] not in ("unknown", "pending") for entry in journal)


def _free_is(client: Client, account: str, token: str, amount: int) -> bool:
    return int(client.balances(account)[account][token]["free"]) == amount


def _same_roots(endpoints: list[Endpoint]) -> tuple[str, str] | None:
    """The nodes' (state hash, payout root) when they all agree, else None."""
    roots = {(s["state_hash"], s["payout_root"]) for s in (_stats(endpoint) for endpoint in endpoints)}
    return next(iter(roots)) if len(roots) == 1 else None


def _stats(endpoint: Endpoint) -> dict[str, Any]:
    with Client(endpoint) as client:
        result: dict[str, Any] = client.stats()
        return result


async def _traffic(endpoints: list[Endpoint], accounts: list[str], plan: list[tuple[int, int]], market: Market,
                   flow: Flow, progress: Progress) -> tuple[Workload, FlowResult]:
    """The transfer workload and the order flow, at the same time, through the same APIs."""
    orders = progress.add_task("orders", total=flow.requests(len(MAKERS), len(endpoints) - len(MAKERS)))
    results: dict[str, Any] = {}

    async def transfers() -> None:
        results["transfers"] = await run_workload(endpoints, accounts, plan, 2, progress)

    async def order_flow() -> None:
        results["orders"] = await run_order_flow(endpoints, market, flow, MAKERS, partial(progress.advance, orders))
        progress.update(orders, total=results["orders"].requests)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transfers)
        nursery.start_soon(order_flow)
    return results["transfers"], results["orders"]


def _show_trading(console: Console, endpoints: list[Endpoint], market: Market, journal: list[dict[str, Any]]
                  ) -> TradingCheck:
    """Every node's book, last trades and fills, and what replay made of the Byzantine node's
    forged orders, read from each node's API."""
    views = trio.run(market_views, endpoints, market.symbol, journal)
    stats = [_stats(endpoint) for endpoint in endpoints]
    check = check_views(views, journal)
    notes = {BYZANTINE: " byz"}
    console.print(book_table(market, views, notes))
    console.print(trades_table(market, views, notes))
    console.print(agreement_table(views, stats, notes))
    console.print(forged_table(views, check, notes))
    nodes = len(endpoints)
    same = len({s["state_hash"] for s in stats}) == len({s["payout_root"] for s in stats}) == 1
    agree = ("[green]every node has the same fills, state hash and payout root[/green]" if check.agree and same
             else "[red]the nodes DISAGREE[/red]")
    others = ", ".join(f"{count} {status}" for status, count in sorted(check.crossed.items())
                       if status != SELF_TRADE)
    console.print(
        f"   {agree}: {check.fills} fills, hash {views[0].fills_hash[:18]}…\n"
        f"   the Byzantine node signed {check.unfunded} orders it cannot fund, past its node's dry run: replay "
        f"rejected {check.unfunded_rejected} of {check.unfunded * nodes} (insufficient_balance, on the {nodes} "
        f"nodes); and {check.self_trades} orders crossing its own resting ones: {check.self_removed} resting orders "
        f"removed as self-trades{f' (the other crosses found theirs {others})' if others else ''}, "
        f"{check.self_fills} fills between an account and itself"
    )
    return check


def run_full_demo(*, transfers: int = 300, seed: int = 0, folder: Path | None = None, quiet: bool = False
                  ) -> dict[str, Any]:
    console = Console(quiet=quiet)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as tmp:
        root = folder or Path(tmp)
        console.rule("[bold]Parley demo[/bold]: 4 nodes, one Byzantine, trading ETH/USDC, settled on an embedded chain")
        server = ChainServerProcess()
        processes: list[NodeProcess] = []
        try:
            chain = RpcChain(server.url)
            deployment = deploy(chain, extra_tokens=(("ETH", 18),))
            adjudicator, deployer = deployment.adjudicator, deployment.deployer.account
            usdc_token, eth_token = deployment.tokens
            wallets: dict[str, TestTokenClient] = {token.symbol: deployment.erc20(token) for token in deployment.tokens}
            console.print(f"chain {server.url} (id {chain.chain_id}): adjudicator {adjudicator.address}, "
                          f"USDC {wallets['USDC'].address}, ETH {wallets['ETH'].address}")
            cluster = create_cluster(
                root, 4, tokens=list(deployment.tokens), initial=0,
                roles=[Role.MARKET_MAKER] * 2 + [Role.TRADER] * 2, finality_interval=0.5,
                byzantine={BYZANTINE: ("equivocate", "invalid", "unfunded", "self_trade")},
                node_chain=ChainConfig(rpc=server.url, confirmations=1, settle_every=1, poll_interval=0.3),
                chain_id=chain.chain_id, adjudicator=adjudicator.address_bytes, dispute_window=3600, seed=seed,
            )
            genesis = cluster.genesis
            market = genesis.markets[0]
            channel = adjudicator.open_genesis(genesis)
            for symbol, units in (("USDC", (4 * DEPOSIT + LATE_DEPOSIT) // 1000), ("ETH", 4 * ETH_DEPOSIT * E9)):
                wallets[symbol].mint(deployer.address, units)
                wallets[symbol].approve(adjudicator.address, units)  # once, for every deposit
            accounts = ["0x" + p.address.hex() for p in genesis.participants]
            for account in accounts:
                chain.fund(checksum(account), 10**20)  # gas for proposals, challenges and the exit
                adjudicator.deposit(channel, usdc_token, DEPOSIT, account)
                adjudicator.deposit(channel, eth_token, ETH_DEPOSIT, account)
            console.print(f"channel 0x{channel.hex()[:16]}… opened with the market {market.symbol}; 4 deposits of "
                          f"{format_e9(DEPOSIT)} USDC and {format_e9(ETH_DEPOSIT)} ETH")

            processes = [cluster.process(i) for i in range(4)]
            endpoints = start_all(processes)
            clients = [Client(endpoint) for endpoint in endpoints]
            for client in clients:
                wait_until(partial(_free_is, client, accounts[0], "ETH", ETH_DEPOSIT), 60,
                           "the deposits to be credited")
            console.print("[green]1.[/green] 4 nodes up; the deposits are credited by checkpoint "
                          f"{_stats(endpoints[0])['version']}")
            console.print(f"   the web page, while the demo runs: {endpoints[0].url}/ (token: cat "
                          f"{cluster.node_dirs[0] / 'api-token'})")

            plan = [(node, 10 * DEPOSIT if node == BYZANTINE and i % 8 == 3 else amount)  # node 3 overdraws
                    for i, (node, amount) in enumerate(seeded_plan(4, transfers, seed))]
            flow = Flow(seed=seed)
            with progress_bar(console) as progress:
                workload, orders = trio.run(_traffic, endpoints, accounts, plan, market, flow, progress)
            stats, _ = trio.run(converge, endpoints, workload.accepted + orders.submitted)
            for index in range(3):  # a node's newest operation has all its earlier ones in its past
                newest = max(workload.last[index], orders.last[index])[1]
                for client in clients[:3]:
                    wait_until(partial(_is_final, client, newest), 60, "the transfers and orders to be final")
            honest = _stats(endpoints[0])
            converged = len({s["state_hash"] for s in stats}) == 1
            same = "all 4 nodes hold the same state" if converged else "[red]the nodes did NOT converge[/red]"
            console.print(f"[green]2.[/green] {workload.accepted} transfers and {orders.submitted} orders and cancels "
                          f"through the 4 APIs at once; {same}; final at checkpoint {honest['version']}\n"
                          f"   {workload.summary()}\n   {orders.summary()}")
            evidence = clients[0].evidence()
            console.print(f"   evidence: {len(evidence)} equivocations by {accounts[BYZANTINE][:10]}…; "
                          f"rejected in replay on every node: {honest['rejected_reasons']}")
            journal = read_journal(cluster.node_dirs[BYZANTINE])
            for client in clients:  # the forged orders after the Byzantine node's last one may still be on the way
                wait_until(partial(_all_judged, client, journal), 60, "the forged orders to reach every node")
            trading = _show_trading(console, endpoints, market, journal)
            final = honest["version"]  # decided; its certificate forms once the commits are in
            wait_until(lambda: _stats(endpoints[0])["certified"] >= final, 60, "the certificate")
            wait_until(lambda: adjudicator.settlement(channel).version >= final, 60, "the proposal on-chain")
            settled = adjudicator.settlement(channel).version
            console.print(f"[green]3.[/green] checkpoint {settled} is proposed on-chain by its designated "
                          f"submitter (status {adjudicator.channel(channel).status}: the channel stays open)")

            withdrawal = _withdraw_and_claim(console, root, chain, adjudicator, wallets["USDC"], clients, endpoints,
                                             accounts, channel, usdc_token)

            processes[BYZANTINE].stop()
            before = _stats(endpoints[0])["version"]
            more = [clients[i % 3].transfer(accounts[(i + 1) % 3], "USDC", E9 // 100) for i in range(30)]
            for client in clients[:3]:
                wait_until(partial(_is_final, client, more[-1]["op_id"]), 60, "finality without node 3")
            after = _stats(endpoints[0])["version"]
            console.print(f"[green]5.[/green] Byzantine node stopped; the other 3 keep finalising: checkpoint "
                          f"{before} → {after}")
            roots = wait_until(partial(_same_roots, endpoints[:3]), 60, "the honest nodes to agree")
            console.print(f"   state hash  [bold]{roots[0]}[/bold]\n   payout root [bold]{roots[1]}[/bold] "
                          "(the same on the 3 running nodes)")

            user = 1
            certificate, balances = wait_until(partial(_certified_state, clients[user]), 60, "the newest certificate")
            exit_version = certificate.version
            (root / "exit").mkdir(exist_ok=True)
            (root / "exit" / "newest.cbor").write_bytes(certificate.encode())
            owed = _owed(genesis, balances)
            for client in clients:
                client.close()
            stop_all(processes)
            console.print(f"[green]6.[/green] every node is offline; participant {user} runs parley exit with its "
                          f"newest certificate (v{exit_version})")
            before_exit = _wallets(wallets, accounts)
            _exit(console, root, exit_version, server.url, accounts[user], adjudicator, chain, channel)
            for index, account in enumerate(accounts):
                if index != user:
                    _claim(root, chain, adjudicator, channel, certificate, account)
            paid = {key: after_exit - before_exit[key] for key, after_exit in _wallets(wallets, accounts).items()}
        finally:
            stop_all(processes)
            server.stop()
        settlement_ok = _show_settlement(console, genesis, accounts, owed, certificate, paid)
        unfunded_ok = trading.unfunded_rejected == trading.unfunded * len(accounts)
        ok = converged and settlement_ok and trading.agree and unfunded_ok and trading.self_fills == 0
        table = Table(title="what happened")
        table.add_column("")
        table.add_column("")
        for key, value in (
            ("transfers submitted (all final)", str(workload.accepted + len(more))),
            ("orders and cancels submitted", f"{orders.submitted} ({orders.placed['ladder']} quotes, "
                                             f"{orders.placed['limit']} limit, {orders.placed['market']} market)"),
            ("fills (the same on all 4 nodes)", f"{trading.fills} ({'agree' if trading.agree else 'DISAGREE'})"),
            ("Byzantine unfunded orders", f"{trading.unfunded}, rejected insufficient_balance on every node"
             if unfunded_ok else f"{trading.unfunded}: NOT all rejected ({dict(trading.unfunded_other)})"),
            ("Byzantine self-trading orders", f"{trading.self_trades} crosses, {trading.self_removed} resting orders "
                                              f"removed, {trading.self_fills} self-fills"),
            ("rejected in replay", f"{honest['rejected']} (the Byzantine node's, and cancels that lost a race "
                                   "with a fill)"),
            ("refused by the API", str(workload.refused + sum(orders.refused.values()))),
            ("equivocations detected", str(len(evidence))),
            ("checkpoints certified", str(after)),
            ("proposed on-chain while running", f"up to v{settled}"),
            ("withdrawn and claimed mid-run", f"{withdrawal / 10**6:,.6f} USDC (the channel stayed open)"),
            ("exit settled the channel at", f"v{exit_version}"),
            ("settlement paid", "what the balances after trading owe, to all 4 "
                                f"({'correct' if settlement_ok else 'WRONG'})"),
            ("demo took", f"{time.monotonic() - began:.0f} s"),
        ):
            table.add_row(key, value)
        console.print(table)
        user_paid = paid[(accounts[user], "USDC")]
        return {"converged": ok, "paid": user_paid, "expected": owed[(accounts[user], "USDC")].units,
                "settlement_ok": settlement_ok, "checkpoints": after, "withdrawn": withdrawal,
                "state_hash": roots[0], "payout_root": roots[1],
                "equivocations": len(evidence), "transfers": workload.accepted + len(more),
                "orders": orders.submitted, "fills": trading.fills, "fills_agree": trading.agree,
                "unfunded": trading.unfunded, "unfunded_rejected": trading.unfunded_rejected,
                "unfunded_other": dict(sorted(trading.unfunded_other.items())),
                "self_trades": trading.self_trades, "self_trade_removed": trading.self_removed,
                "self_fills": trading.self_fills, "byzantine_orders": len(orders.orders.get(BYZANTINE, [])),
                "payouts": [{"account": account, "token": token, "owed": owed[(account, token)].units,
                             "held": owed[(account, token)].held, "paid": paid[(account, token)]}
                            for account, token in sorted(owed)]}


def _withdraw_and_claim(console: Console, root: Path, chain: RpcChain, adjudicator: AdjudicatorClient,
                        usdc: TestTokenClient, clients: list[Client], endpoints: list[Endpoint], accounts: list[str],
                        channel: bytes, token: Token) -> int:
    """A participant withdraws while the channel runs, and claims it once a checkpoint holding
    the withdrawal is finalised on-chain; a new deposit shows the channel still open. Returns
    the token units claimed."""
    user = 2
    receipt = clients[user].submit("withdraw", {"token": "USDC", "amount": str(WITHDRAWAL)})
    wait_until(partial(_is_final, clients[user], receipt["op_id"]), 60, "the withdrawal to be final")
    holding = _stats(endpoints[user])["version"]
    wait_until(lambda: _stats(endpoints[user])["certified"] >= holding, 60, "its certificate")
    # The watchtowers keep the checkpoint in dispute the newest one certified, without moving
    # its deadline; one window later the designated node finalises it.
    wait_until(lambda: adjudicator.settlement(channel).version >= holding, 60, "the checkpoint on-chain")
    disputed = adjudicator.settlement(channel)
    chain.increase_time(disputed.finalizes_at - chain.now() + 1)
    wait_until(lambda: adjudicator.finalized(channel).version >= holding, 60, "the checkpoint to be finalised")
    finalized = adjudicator.finalized(channel).version
    certificate = Certificate.decode(bytes.fromhex(clients[user].certificate(finalized)["certificate"][2:]))
    before = usdc.balance_of(accounts[user])
    _claim(root, chain, adjudicator, channel, certificate, accounts[user])
    claimed = usdc.balance_of(accounts[user]) - before
    adjudicator.deposit(channel, token, LATE_DEPOSIT, accounts[0])  # deposits go on while the channel lives
    credited = int(clients[0].balances(accounts[0])[accounts[0]]["USDC"]["free"]) + LATE_DEPOSIT
    wait_until(partial(_free_is, clients[0], accounts[0], "USDC", credited), 60, "the new deposit to be credited")
    console.print(f"[green]4.[/green] participant {user} withdrew {format_e9(WITHDRAWAL)} USDC; checkpoint "
                  f"v{finalized}, which holds it, was finalised on-chain one dispute window later (the demo moved the "
                  f"chain's clock) and it claimed {claimed / 10**6:,.6f} USDC to its wallet; the channel stays open: a "
                  f"new deposit of {format_e9(LATE_DEPOSIT)} USDC is credited by checkpoint "
                  f"v{_stats(endpoints[0])['version']}")
    return claimed


def _claim(root: Path, chain: RpcChain, adjudicator: AdjudicatorClient, channel: bytes, certificate: Certificate,
           account: str) -> None:
    """Claim, as `account` (its key from the cluster's keystore), what the finalised
    `certificate` owes it and was not paid yet."""
    key = keystore.load(keystore.find(root / "keys", address_bytes(account)), CLUSTER_PASSWORD)
    as_account = adjudicator.with_sender(Sender(chain, Account.from_key(key.private_key)))
    claim_leaves(as_account, channel, certificate, address_bytes(account), ExitResult(), lambda event: None)


def _exit(console: Console, root: Path, version: int, url: str, account: str, adjudicator: AdjudicatorClient,
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


def _certified_state(client: Client) -> tuple[Certificate, dict[str, Any]] | None:
    """The node's newest certificate and its balances, once the node's state is the one the
    certificate signs (every operation is in a checkpoint: nothing tentative is left)."""
    stats = client.stats()
    if stats["certified"] < stats["version"]:
        return None
    certificate = Certificate.decode(bytes.fromhex(client.certificate()["certificate"][2:]))
    balances = client.balances()
    if "0x" + certificate.checkpoint.state_hash.hex() != client.stats()["state_hash"]:
        return None
    return certificate, balances


@dataclass(frozen=True, slots=True)
class Owed:
    """What a settlement owes one participant in one token: e9 parts, and the token units."""

    free: int
    held: int  # by its open orders, paid back to it
    locked: int
    units: int


def _owed(genesis: Genesis, balances: dict[str, Any]) -> dict[tuple[str, str], Owed]:
    """Per (participant, token): free + held + locked, in token units apportioned over the
    participants as the payout leaves are (`crdt.units.apportion`)."""
    owed: dict[tuple[str, str], Owed] = {}
    accounts = ["0x" + p.address.hex() for p in genesis.participants]
    for token in genesis.tokens:
        parts = [{k: int(v) for k, v in balances[account][token.symbol].items()} for account in accounts]
        units = apportion([part["free"] + part["held"] + part["locked"] for part in parts], token.decimals)
        for account, part, amount in zip(accounts, parts, units, strict=True):
            owed[(account, token.symbol)] = Owed(part["free"], part["held"], part["locked"], amount)
    return owed


def _wallets(wallets: dict[str, TestTokenClient], accounts: list[str]) -> dict[tuple[str, str], int]:
    return {(account, symbol): erc20.balance_of(account) for account in accounts for symbol, erc20 in wallets.items()}


def _show_settlement(console: Console, genesis: Genesis, accounts: list[str], owed: dict[tuple[str, str], Owed],
                     certificate: Certificate, paid: dict[tuple[str, str], int]) -> bool:
    """A table of what each participant was owed and paid per token; True if every payment is
    what its balances owe, which is also what the certificate's balance leaf says."""
    table = Table(title=f"settlement at v{certificate.version}: each wallet is paid its balances after trading")
    for column in ("", "token", "free + locked", "held by open orders", "paid", "= leaf"):
        table.add_column(column, justify="left" if column in ("", "token") else "right")
    ok = True
    for token in genesis.tokens:
        places = min(token.decimals, 6)
        for index, account in enumerate(accounts):
            entry = owed[(account, token.symbol)]
            leaf, _ = certificate.proof_for(address_bytes(account), token.address, BALANCE)
            got = paid[(account, token.symbol)]
            right = got == entry.units == leaf.amount
            ok &= right
            table.add_row(
                f"{index}{' byz' if index == BYZANTINE else ''}", token.symbol,
                fixed(entry.free + entry.locked, places), fixed(entry.held, places),
                fixed(to_e9(got, token.decimals), places),
                "[green]✓[/green]" if right else f"[red]✗ owed {entry.units}, leaf {leaf.amount}[/red]",
            )
    console.print(table)
    return ok
