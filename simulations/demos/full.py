"""``parley demo``: the whole life of a channel, on one embedded chain and five node processes.

1. an embedded chain (eth-tester + py-evm) is served on 127.0.0.1; the adjudicator, a 6-decimal
   USDC-like and an 18-decimal ETH-like test token are deployed; the channel, whose genesis has
   the spot market ETH/USDC and the perpetual ETH-PERP on USDC, is opened and every participant
   deposits 10,000 USDC and 5 ETH, which the first checkpoint credits;
2. five nodes run over libp2p: node 0 a market maker, node 1 a market maker and the
   liquidator, nodes 2 and 3 traders, node 4 the oracle; node 3 is Byzantine: it signs a second
   operation for every seq it uses (equivocation), signs operations replay must reject, and
   after each of its orders signs one it cannot fund and, if its order rests, one that crosses
   it (a self-trade);
3. transfers flow through the first four nodes' local APIs while two market makers (nodes 0
   and 1) quote a ladder around a moving mid and takers (nodes 2 and 3) send limit and market
   orders (`simulations.trading`); every node shows its book and last trades, and they all
   agree on the fills, the state hash and the payout root; replay rejected every unfunded order
   (insufficient_balance), removed each resting order a cross of its own owner met, and never
   filled an account against itself; checkpoints are certified by BFT consensus and proposed
   on-chain by a rotating submitter, and the channel stays open;
4. a participant withdraws 100 USDC; one dispute window later (the demo moves the embedded
   chain's clock forward) the nodes finalise the checkpoint that holds it, and the participant
   claims it on-chain while the channel carries on: a new deposit is credited, trading goes on;
5. the perpetual market (`simulations.demos.perp_phase`, the same code as ``parley demo
   --perps``): the oracle feeder (node 4) posts a price, the ccxt MakerBot quotes ETH-PERP on
   node 0, the trader (node 2) opens a leveraged long, funding runs, a price shock trips the
   circuit breaker (an order refused ``market_halted``), and after the halt the LiquidatorBot
   (node 1) takes the position, the premium split to the base unit; every node has the same
   positions, funding and payout root;
6. the Byzantine node is stopped, and the other four keep finalising (4 is the threshold);
7. the liquidator, who holds the long it took, takes the newest certificate from its node,
   everyone goes offline, and ``parley exit`` closes the channel with it, waits out the dispute
   window and finalises; every participant claims its USDC and ETH, and what each is paid is
   checked (`simulations.demos.settle`) against its balances after trading (free, held by its
   open orders and locked) and, in USDC, its positions closed at the oracle price less the
   funding they owe, as the certificate's state holds them, and against the certificate's leaf.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from channel.api.client import Client, Endpoint
from channel.runtime.chain_worker import ChainConfig
from channel.runtime.genesis_file import DEMO_MARKETS
from crdt.certificate import Certificate
from crdt.genesis import Role, Token
from crdt.markets.book import SELF_TRADE
from crdt.markets.config import Market
from crdt.merkle import BALANCE
from crdt.units import format_e9
from settlement.chain import RpcChain
from settlement.client import AdjudicatorClient, TestTokenClient, address_bytes, checksum
from settlement.server import ChainServerProcess
from simulations.byzantine import read_journal
from simulations.cluster import NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.demos import settle
from simulations.demos.network import Workload, converge, progress_bar, run_workload, seeded_plan
from simulations.demos.perp_phase import PERP, PerpRoles, run_perp_phase, views_agree
from simulations.fixtures import deploy
from simulations.trading import (
    Flow,
    FlowResult,
    TradingCheck,
    agreement_table,
    book_table,
    check_views,
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
SPOT_NODES = 4  # the spot phase's nodes; the fifth is the oracle
PERP_ROLES = PerpRoles(oracle=4, maker=0, trader=2, liquidator=1)
NAMES = ("0 maker", "1 liquidator", "2 trader", "3 byz", "4 oracle")


def _is_final(client: Client, op_id: str) -> bool:
    return bool(client.status(op_id)["status"] == "final")


def _all_judged(client: Client, journal: list[dict[str, Any]]) -> bool:
    """Whether `client`'s node has applied (or rejected) every forged order of the journal."""
    return all(client.status(entry["op_id"])["status"] not in ("unknown", "pending") for entry in journal)


def _free_is(client: Client, account: str, token: str, amount: int) -> bool:
    return int(client.balances(account)[account][token]["free"]) == amount


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
    stats = [settle.stats(endpoint) for endpoint in endpoints]
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
        console.rule("[bold]Parley demo[/bold]: 5 nodes, one Byzantine, trading ETH/USDC and ETH-PERP, settled on an "
                     "embedded chain")
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
                root, 5, tokens=list(deployment.tokens), initial=0, markets=[DEMO_MARKETS[0], PERP],
                roles=[Role.MARKET_MAKER, Role.LIQUIDATOR, Role.TRADER, Role.TRADER, Role.ORACLE],
                finality_interval=0.5,
                byzantine={BYZANTINE: ("equivocate", "invalid", "unfunded", "self_trade")},
                node_chain=ChainConfig(rpc=server.url, confirmations=1, settle_every=1, poll_interval=0.3),
                chain_id=chain.chain_id, adjudicator=adjudicator.address_bytes, dispute_window=3600, seed=seed,
            )
            genesis = cluster.genesis
            market = next(m for m in genesis.markets if m.symbol == DEMO_MARKETS[0].symbol)
            channel = adjudicator.open_genesis(genesis)
            for symbol, units in (("USDC", (5 * DEPOSIT + LATE_DEPOSIT) // 1000), ("ETH", 5 * ETH_DEPOSIT * E9)):
                wallets[symbol].mint(deployer.address, units)
                wallets[symbol].approve(adjudicator.address, units)  # once, for every deposit
            accounts = ["0x" + p.address.hex() for p in genesis.participants]
            for account in accounts:
                chain.fund(checksum(account), 10**20)  # gas for proposals, challenges and the exit
                adjudicator.deposit(channel, usdc_token, DEPOSIT, account)
                adjudicator.deposit(channel, eth_token, ETH_DEPOSIT, account)
            console.print(f"channel 0x{channel.hex()[:16]}… opened with the markets {market.symbol} and {PERP.symbol}; "
                          f"5 deposits of "
                          f"{format_e9(DEPOSIT)} USDC and {format_e9(ETH_DEPOSIT)} ETH")

            processes = [cluster.process(i) for i in range(len(accounts))]
            endpoints = start_all(processes)
            clients = [Client(endpoint) for endpoint in endpoints]
            for client in clients:
                wait_until(partial(_free_is, client, accounts[0], "ETH", ETH_DEPOSIT), 60,
                           "the deposits to be credited")
            console.print("[green]1.[/green] 5 nodes up; the deposits are credited by checkpoint "
                          f"{settle.stats(endpoints[0])['version']}")
            console.print(f"   the web page, while the demo runs: {endpoints[0].url}/ (token: cat "
                          f"{cluster.node_dirs[0] / 'api-token'})")

            plan = [(node, 10 * DEPOSIT if node == BYZANTINE and i % 8 == 3 else amount)  # node 3 overdraws
                    for i, (node, amount) in enumerate(seeded_plan(4, transfers, seed))]
            flow = Flow(seed=seed)
            with progress_bar(console) as progress:
                workload, orders = trio.run(_traffic, endpoints[:SPOT_NODES], accounts[:SPOT_NODES], plan, market,
                                            flow, progress)
            stats, _ = trio.run(converge, endpoints, workload.accepted + orders.submitted)
            for index in range(3):  # a node's newest operation has all its earlier ones in its past
                newest = max(workload.last[index], orders.last[index])[1]
                for client in clients[:3]:
                    wait_until(partial(_is_final, client, newest), 60, "the transfers and orders to be final")
            honest = settle.stats(endpoints[0])
            converged = len({s["state_hash"] for s in stats}) == 1
            same = "all 5 nodes hold the same state" if converged else "[red]the nodes did NOT converge[/red]"
            console.print(f"[green]2.[/green] {workload.accepted} transfers and {orders.submitted} orders and cancels "
                          f"through the first 4 APIs at once; {same}; final at checkpoint {honest['version']}\n"
                          f"   {workload.summary()}\n   {orders.summary()}")
            evidence = clients[0].evidence()
            console.print(f"   evidence: {len(evidence)} equivocations by {accounts[BYZANTINE][:10]}…; "
                          f"rejected in replay on every node: {honest['rejected_reasons']}")
            journal = read_journal(cluster.node_dirs[BYZANTINE])
            for client in clients:  # the forged orders after the Byzantine node's last one may still be on the way
                wait_until(partial(_all_judged, client, journal), 60, "the forged orders to reach every node")
            # and the twins of the Byzantine node's operations, which no journal lists: the views are
            # read once every node holds the same state
            wait_until(partial(settle.same_roots, endpoints), 60, "every node to hold the same state")
            trading = _show_trading(console, endpoints, market, journal)
            final = honest["version"]  # decided; its certificate forms once the commits are in
            wait_until(lambda: settle.stats(endpoints[0])["certified"] >= final, 60, "the certificate")
            wait_until(lambda: adjudicator.settlement(channel).version >= final, 60, "the proposal on-chain")
            settled = adjudicator.settlement(channel).version
            console.print(f"[green]3.[/green] checkpoint {settled} is proposed on-chain by its designated "
                          f"submitter (status {adjudicator.channel(channel).status}: the channel stays open)")

            withdrawal = _withdraw_and_claim(console, root, chain, adjudicator, wallets["USDC"], clients, endpoints,
                                             accounts, channel, usdc_token)

            perp = run_perp_phase(console, clients, endpoints, accounts, processes[PERP_ROLES.maker].data_dir,
                                  PERP_ROLES, lambda i: f"[green]5.{i}[/green]")
            # once every node holds the newest certified state, every node is asked
            wait_until(partial(settle.certified_state, clients[PERP_ROLES.liquidator], accounts), 60,
                       "the newest certificate")
            perp_roots = wait_until(partial(settle.same_roots, endpoints), 60, "the nodes to agree")
            perp_views, perp_agree = views_agree(clients, accounts)
            verdict = "[green]all 5 nodes agree[/green]" if perp_agree else "[red]the nodes DISAGREE[/red]"
            console.print(f"[green]5.6[/green] {verdict} on positions, funding and margins; state hash "
                          f"{perp_roots[0][:18]}…, payout root {perp_roots[1][:18]}…")

            processes[BYZANTINE].stop()
            running = [i for i in range(len(accounts)) if i != BYZANTINE]
            before = settle.stats(endpoints[0])["version"]
            senders = [i for i in running if i != PERP_ROLES.trader]  # the trader's USDC went with its long
            more = [clients[senders[i % 3]].transfer(accounts[senders[(i + 1) % 3]], "USDC", E9 // 100)
                    for i in range(30)]
            for index in running:
                wait_until(partial(_is_final, clients[index], more[-1]["op_id"]), 60, "finality without node 3")
            after = settle.stats(endpoints[0])["version"]
            console.print(f"[green]6.[/green] Byzantine node stopped; the other {len(running)} keep finalising "
                          f"({genesis.threshold} is the threshold): checkpoint {before} → {after}")
            roots = wait_until(partial(settle.same_roots, [endpoints[i] for i in running]), 60,
                               "the honest nodes to agree")
            console.print(f"   state hash  [bold]{roots[0]}[/bold]\n   payout root [bold]{roots[1]}[/bold] "
                          f"(the same on the {len(running)} running nodes)")

            user = PERP_ROLES.liquidator  # it holds the long it took
            state = wait_until(partial(settle.certified_state, clients[user], accounts), 60, "the newest certificate")
            certificate = state.certificate
            exit_version = certificate.version
            (root / "exit").mkdir(exist_ok=True)
            (root / "exit" / "newest.cbor").write_bytes(certificate.encode())
            owed = settle.owed_by(genesis, state)
            held = [p for p in state.positions if p["account"] == accounts[user]]
            for client in clients:
                client.close()
            stop_all(processes)
            holding = ", ".join(f"{p['side']} {format_e9(int(p['size']))} {p['market']}" for p in held)
            console.print(f"[green]7.[/green] every node is offline; participant {user} (the liquidator, holding "
                          f"{holding or 'nothing'}) runs parley exit with its newest certificate (v{exit_version})")
            before_exit = settle.wallets(wallets, accounts)
            settle.run_exit(console, root, exit_version, server.url, accounts[user], adjudicator, chain, channel)
            for index, account in enumerate(accounts):
                if index != user:
                    settle.claim(root, chain, adjudicator, channel, certificate, account)
            paid = {key: after_exit - before_exit[key] for key, after_exit in settle.wallets(wallets, accounts).items()}
        finally:
            stop_all(processes)
            server.stop()
        settlement_ok = settle.settlement_table(console, genesis, NAMES, owed, certificate, paid)
        unfunded_ok = trading.unfunded_rejected == trading.unfunded * len(accounts)
        liquidation = perp["liquidation"]
        perp_ok = bool(perp_agree and perp["halted"] and "market_halted" in perp["refused"]
                       and liquidation.get("deleveraged") == [] and held)
        ok = converged and settlement_ok and trading.agree and unfunded_ok and trading.self_fills == 0 and perp_ok
        table = Table(title="what happened")
        table.add_column("")
        table.add_column("")
        for key, value in (
            ("transfers submitted (all final)", str(workload.accepted + len(more))),
            ("orders and cancels submitted", f"{orders.submitted} ({orders.placed['ladder']} quotes, "
                                             f"{orders.placed['limit']} limit, {orders.placed['market']} market)"),
            ("fills (the same on all 5 nodes)", f"{trading.fills} ({'agree' if trading.agree else 'DISAGREE'})"),
            ("Byzantine unfunded orders", f"{trading.unfunded}, rejected insufficient_balance on every node"
             if unfunded_ok else f"{trading.unfunded}: NOT all rejected ({dict(trading.unfunded_other)})"),
            ("Byzantine self-trading orders", f"{trading.self_trades} crosses, {trading.self_removed} resting orders "
                                              f"removed, {trading.self_fills} self-fills"),
            ("rejected in replay", f"{honest['rejected']} (the Byzantine node's, and cancels that lost a race "
                                   "with a fill)"),
            ("refused by the API", str(workload.refused + sum(orders.refused.values()))),
            ("equivocations detected", str(len(evidence))),
            ("perp market", f"{PERP.symbol}: the trader's long of 2.5 ETH; funding rate "
                            f"{Decimal(int(perp['funding']['rate'])) / 10**7}%; refused while halted: "
                            f"{', '.join(perp['refused'])}"),
            ("liquidation", f"{format_e9(int(liquidation['qty']))} ETH at {format_e9(int(liquidation['price']))}: "
                            f"{format_e9(perp['insurance'])} to insurance + "
                            f"{format_e9(perp['premium'] - perp['insurance'])} to the liquidator = "
                            f"{format_e9(perp['premium'])} USDC premium"),
            ("positions, funding, payout root", "the same on all 5 nodes" if perp_agree else "DIFFERENT"),
            ("checkpoints certified", str(after)),
            ("proposed on-chain while running", f"up to v{settled}"),
            ("withdrawn and claimed mid-run", f"{withdrawal / 10**6:,.6f} USDC (the channel stayed open)"),
            ("exit settled the channel at", f"v{exit_version}"),
            ("settlement paid", "what the balances and positions owe, to all 5 "
                                f"({'correct' if settlement_ok else 'WRONG'})"),
            ("demo took", f"{time.monotonic() - began:.0f} s"),
        ):
            table.add_row(key, value)
        console.print(table)
        user_paid = paid[(accounts[user], "USDC")]
        leaf, _ = certificate.proof_for(address_bytes(accounts[user]), usdc_token.address, BALANCE)
        return {"converged": ok, "states_agree": converged, "perp_ok": perp_ok,
                "paid": user_paid, "expected": owed[(accounts[user], "USDC")].units,
                "exit_leaf": leaf.amount, "exit_positions": held,
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
                            for account, token in sorted(owed)],
                "perp": {"agree": perp_agree, "state_hash": perp_roots[0], "payout_root": perp_roots[1],
                         "halted": perp["halted"], "refused_while_halted": perp["refused"], "liquidation": liquidation,
                         "premium": perp["premium"], "insurance": perp["insurance"], "funding": perp["funding"],
                         "positions": perp_views[0][0]}}


def _withdraw_and_claim(console: Console, root: Path, chain: RpcChain, adjudicator: AdjudicatorClient,
                        usdc: TestTokenClient, clients: list[Client], endpoints: list[Endpoint], accounts: list[str],
                        channel: bytes, token: Token) -> int:
    """A participant withdraws while the channel runs, and claims it once a checkpoint holding
    the withdrawal is finalised on-chain; a new deposit shows the channel still open. Returns
    the token units claimed."""
    user = 2
    receipt = clients[user].submit("withdraw", {"token": "USDC", "amount": str(WITHDRAWAL)})
    wait_until(partial(_is_final, clients[user], receipt["op_id"]), 60, "the withdrawal to be final")
    holding = settle.stats(endpoints[user])["version"]
    wait_until(lambda: settle.stats(endpoints[user])["certified"] >= holding, 60, "its certificate")
    # The watchtowers keep the checkpoint in dispute the newest one certified, without moving
    # its deadline; one window later the designated node finalises it.
    wait_until(lambda: adjudicator.settlement(channel).version >= holding, 60, "the checkpoint on-chain")
    disputed = adjudicator.settlement(channel)
    chain.increase_time(disputed.finalizes_at - chain.now() + 1)
    wait_until(lambda: adjudicator.finalized(channel).version >= holding, 60, "the checkpoint to be finalised")
    finalized = adjudicator.finalized(channel).version
    certificate = Certificate.decode(bytes.fromhex(clients[user].certificate(finalized)["certificate"][2:]))
    before = usdc.balance_of(accounts[user])
    settle.claim(root, chain, adjudicator, channel, certificate, accounts[user])
    claimed = usdc.balance_of(accounts[user]) - before
    adjudicator.deposit(channel, token, LATE_DEPOSIT, accounts[0])  # deposits go on while the channel lives
    credited = int(clients[0].balances(accounts[0])[accounts[0]]["USDC"]["free"]) + LATE_DEPOSIT
    wait_until(partial(_free_is, clients[0], accounts[0], "USDC", credited), 60, "the new deposit to be credited")
    console.print(f"[green]4.[/green] participant {user} withdrew {format_e9(WITHDRAWAL)} USDC; checkpoint "
                  f"v{finalized}, which holds it, was finalised on-chain one dispute window later (the demo moved the "
                  f"chain's clock) and it claimed {claimed / 10**6:,.6f} USDC to its wallet; the channel stays open: a "
                  f"new deposit of {format_e9(LATE_DEPOSIT)} USDC is credited by checkpoint "
                  f"v{settle.stats(endpoints[0])['version']}")
    return claimed
