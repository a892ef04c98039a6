"""``parley demo --perps``: a perpetual market on 4 node processes over libp2p, settled on an
embedded chain, with nothing to start by hand.

Node 0 is the oracle, node 1 a market maker, node 2 a trader, node 3 the liquidator; each
deposits 10,000 USDC on-chain, and the genesis has ETH-PERP on USDC (10% initial margin, 5%
maintenance, funding every 5 s of checkpoint time, a 10% circuit band). Everything goes through
the nodes' local APIs, the bots are the reference ones (`simulations.perp_bots`):

1. the oracle feeder posts 3,000; the maker, `parley bot maker`'s ccxt strategy (MakerBot),
   quotes a ladder a little above it;
2. the trader sends most of its USDC away and opens a long of 2.5 ETH on 1,000 USDC (7.5x);
3. funding runs: the book's bids above the oracle make longs pay;
4. a price shock (2,640: -12%) trips the circuit breaker: the trader's next order is refused
   ``market_halted``, and so is a liquidation, until the halt ends;
5. the trader, now below maintenance margin, is liquidated by the liquidator bot: the premium is
   split between the liquidator and the insurance pool, to the base unit;
6. every node is asked the same things: positions, funding index, accounts and payout root, which
   must agree;
7. every node goes offline, the liquidator (holding the long it took) runs ``parley exit`` with
   its newest certificate, the others claim, and a table shows each participant's arithmetic:
   collateral, uPnL at the oracle price, funding owed, account value, and what the contract
   paid, equal to the certificate's leaf.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import ccxt
from rich.console import Console
from rich.table import Table

from channel.api.ccxt import install
from channel.api.client import ApiError, Client, Endpoint
from channel.runtime.chain_worker import ChainConfig
from channel.runtime.genesis_file import DEMO_MARKETS
from crdt.genesis import Role
from crdt.markets.config import MarketKind, PerpParams
from crdt.merkle import BALANCE
from crdt.types import Symbol
from crdt.units import apportion, format_e9
from settlement.chain import RpcChain
from settlement.client import address_bytes, checksum
from settlement.server import ChainServerProcess
from simulations.cluster import NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.demos.full import _certified_state, _claim, _exit, _free_is, _same_roots, _wallets
from simulations.fixtures import deploy
from simulations.maker_bot import MakerBot
from simulations.perp_bots import LiquidatorBot, OracleFeeder

E9 = 10**9
DEPOSIT = 10_000 * E9
ORACLE, MAKER, TRADER, LIQUIDATOR = range(4)
NAMES = ("oracle", "maker", "trader", "liquidator")
SYMBOL = "ETH-PERP"
SWAP = "ETH/USDC:USDC"  # the market as ccxt names a linear swap
PERP = replace(
    DEMO_MARKETS[0], symbol=SYMBOL, kind=MarketKind.PERP, base=Symbol("ETH"),
    perp=PerpParams(
        imr=100_000_000, mmr=50_000_000, max_notional_at_open=(10**7 * E9,) * 10, max_funding_rate=5_000_000,
        funding_interval=5_000, insurance_pool_ratio=300_000_000, circuit_band=100_000_000, halt_checkpoints=3,
        mtb_long=50_000_000, mtb_short=50_000_000, oracle_staleness=600_000, impact_notional=1000 * E9,
    ),
)


def _order(client: Client, side: str, qty: Decimal, price: Decimal, tif: str = "gtc") -> dict[str, Any]:
    return dict(client.place_order(SYMBOL, side, int(qty * E9), int(price * E9), tif=tif))


def _feed(oracle: Client, price: int) -> bool:
    """Post the price again and pause: a feeder keeps posting, and so keeps checkpoints coming."""
    oracle.post_price(SYMBOL, price)
    time.sleep(0.4)
    return True


def _mark(endpoint: Endpoint) -> dict[str, Any]:
    with Client(endpoint) as client:
        return dict(client.mark_prices()[0])


def _fixed_at(endpoints: list[Endpoint], price: int) -> bool:
    return all(_mark(endpoint)["price"] == str(price) for endpoint in endpoints)


def run_perp_demo(*, seed: int = 0, folder: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    console = Console(quiet=quiet)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parley-perps-") as tmp:
        root = folder or Path(tmp)
        console.rule("[bold]Parley demo[/bold]: a perpetual market on 4 nodes (oracle, maker, trader, liquidator)")
        server = ChainServerProcess()
        processes: list[NodeProcess] = []
        try:
            chain = RpcChain(server.url)
            deployment = deploy(chain)
            adjudicator, usdc = deployment.adjudicator, deployment.tokens[0]
            wallet = deployment.erc20(usdc)
            cluster = create_cluster(
                root, 4, tokens=[usdc], initial=0, roles=[Role.ORACLE, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR],
                markets=[PERP], finality_interval=0.5, seed=seed,
                node_chain=ChainConfig(rpc=server.url, confirmations=1, settle_every=1, poll_interval=0.3),
                chain_id=chain.chain_id, adjudicator=adjudicator.address_bytes, dispute_window=3600,
            )
            channel = adjudicator.open_genesis(cluster.genesis)
            wallet.mint(deployment.deployer.account.address, 4 * DEPOSIT // 1000)
            wallet.approve(adjudicator.address, 4 * DEPOSIT // 1000)
            accounts = ["0x" + p.address.hex() for p in cluster.genesis.participants]
            for account in accounts:
                chain.fund(checksum(account), 10**20)  # gas for proposals and the exit
                adjudicator.deposit(channel, usdc, DEPOSIT, account)
            processes = [cluster.process(i) for i in range(4)]
            endpoints = start_all(processes)
            clients = [Client(endpoint) for endpoint in endpoints]
            for client in clients:
                wait_until(partial(_free_is, client, accounts[ORACLE], "USDC", DEPOSIT), 60, "the deposits")
            console.print(f"chain {server.url}: channel 0x{channel.hex()[:16]}… with ETH-PERP on USDC; 4 deposits "
                          f"of {format_e9(DEPOSIT)} USDC, credited by the first checkpoint")
            found = _trade(console, clients, endpoints, accounts, processes[MAKER].data_dir)
            # the newest certificate holds everything (nothing is tentative any more): every node is asked then
            certificate, _ = wait_until(partial(_certified_state, clients[LIQUIDATOR]), 60, "the newest certificate")
            roots = wait_until(lambda: _same_roots(endpoints), 60, "the nodes to agree")
            views = [_view(client, accounts) for client in clients]
            agree = all(view == views[0] for view in views)
            verdict = "[green]all 4 nodes agree[/green]" if agree else "[red]the nodes DISAGREE[/red]"
            console.print(f"[green]6.[/green] {verdict} on positions, funding and margins; state hash "
                          f"{roots[0][:18]}…, payout root {roots[1][:18]}…")
            (root / "exit").mkdir(exist_ok=True)
            (root / "exit" / "newest.cbor").write_bytes(certificate.encode())
            for client in clients:
                client.close()
            codes = stop_all(processes)
            console.print(f"[green]7.[/green] every node is offline; the liquidator runs parley exit with its newest "
                          f"certificate (v{certificate.version}), the others claim")
            before = _wallets({"USDC": wallet}, accounts)
            _exit(console, root, certificate.version, server.url, accounts[LIQUIDATOR], adjudicator, chain, channel)
            for index, account in enumerate(accounts):
                if index != LIQUIDATOR:
                    _claim(root, chain, adjudicator, channel, certificate, account)
            paid = {a: after - before[(a, "USDC")] for (a, _), after in _wallets({"USDC": wallet}, accounts).items()}
        finally:
            stop_all(processes)
            server.stop()
    settled = _settlement_table(console, accounts, views[0], certificate, paid, usdc.address, usdc.decimals)
    console.print(f"   the demo took {time.monotonic() - began:.0f} s")
    record = found["liquidation"]
    ok = bool(agree and roots and found["halted"] and "market_halted" in found["refused"] and settled
              and record.get("deleveraged") == [] and codes == [0, 0, 0, 0])
    return {
        "converged": ok, "settled": settled, "halted": found["halted"], "refused_while_halted": found["refused"],
        "liquidation": record, "premium": found["premium"], "insurance": found["insurance"],
        "funding": found["funding"], "positions": views[0][0], "state_hash": roots[0], "payout_root": roots[1],
        "exit_version": certificate.version, "paid": {a: paid[a] for a in accounts}, "exit_codes": codes, "seed": seed,
    }


def _view(client: Client, accounts: list[str]) -> tuple[Any, Any, list[dict[str, Any]]]:
    """What a node says of the market: positions, funding index, every account's margin."""
    return (client.positions(), client.mark_prices()[0]["funding_index"],
            [client.account(a)["collateral"]["USDC"] for a in accounts])


def _trade(console: Console, clients: list[Client], endpoints: list[Endpoint], accounts: list[str],
           maker_dir: Path) -> dict[str, Any]:
    """Steps 1 to 5: the oracle's price, the maker's ladder, the trader's long, funding, the shock
    and the halt, the liquidation."""
    feeder = OracleFeeder(clients[ORACLE], SYMBOL, iter([Decimal(3000), Decimal(2640)]))
    shocked = 2640 * E9
    feeder.step()
    wait_until(lambda: _fixed_at(endpoints, 3000 * E9), 60, "the first oracle price")
    console.print("[green]1.[/green] the oracle posted 3,000; a checkpoint fixed it on every node")
    # The maker is `parley bot maker`'s MakerBot, a plain ccxt strategy on the node's swap market: one
    # cycle quotes 1 ETH a level, 3 levels 2 USDC apart around a mid of 3,003, so the ladder leans above
    # the oracle (bids 3,001, 2,999, 2,997) and longs will pay funding.
    install()
    maker = MakerBot(ccxt.parley({"apiKey": str(maker_dir)}), SWAP, spread=2.0, size=1.0, levels=3, mid=3003.0)
    maker.step()
    if len(maker.quotes) != 6:
        raise RuntimeError(f"the maker bot quoted {len(maker.quotes)} of its 6 levels")
    # the trader's order must come after the whole ladder: the trader's node holds it first
    def ladder_seen() -> bool:
        book = clients[TRADER].order_book(SYMBOL, 10)
        return len(book["bids"]) == len(book["asks"]) == 3

    wait_until(ladder_seen, 60, "the maker's ladder on the trader's node")
    clients[TRADER].transfer(accounts[MAKER], "USDC", 9000 * E9)
    opened = _order(clients[TRADER], "buy", Decimal("2.5"), Decimal(3010), "ioc")
    position = clients[TRADER].positions(accounts[TRADER])[0]
    console.print(f"[green]2.[/green] the trader, left with 1,000 USDC, bought 2.5 ETH "
                  f"({opened['order']['status']}): entry {format_e9(int(position['entry_price']))}, "
                  f"liquidation price {format_e9(int(position['liquidation_price']))}")
    # an idle channel makes no checkpoints: the oracle feeds its price every half second, as a feeder does.
    # A funding interval whose checkpoints all came before the ladder was in a cut sampled an empty
    # book (a zero rate); wait for the first that sampled the ladder.
    def sampled_the_ladder() -> dict[str, Any] | None:
        if not _feed(clients[ORACLE], 3000 * E9):
            return None
        return next((f for f in clients[TRADER].funding_history(SYMBOL) if int(f["rate"]) != 0), None)

    funding = wait_until(sampled_the_ladder, 60, "a funding interval")
    console.print(f"[green]3.[/green] funding at checkpoint {funding['version']}: rate "
                  f"{Decimal(int(funding['rate'])) / 10**7}% (the bids above the oracle: longs pay), "
                  f"index {format_e9(int(funding['index']))} USDC a whole ETH")
    feeder.step()  # the shock
    wait_until(lambda: _fixed_at(endpoints, shocked), 60, "the shocked oracle price")
    halted = bool(_mark(endpoints[TRADER])["halted"])
    refused: list[str] = []
    for attempt in (lambda: _order(clients[TRADER], "buy", Decimal("0.1"), Decimal(2640)),
                    lambda: clients[LIQUIDATOR].liquidate(accounts[TRADER], SYMBOL, int(2.5 * E9))):
        try:
            attempt()
        except ApiError as exc:
            refused.append(str(exc.data.get("reason")) if isinstance(exc.data, dict) else exc.message)
    console.print(f"[green]4.[/green] the oracle posted 2,640 (-12%): the circuit breaker "
                  f"{'halts' if halted else '[red]does NOT halt[/red]'} ETH-PERP; refused while halted: "
                  f"{', '.join(refused) or 'nothing'}")
    health = clients[TRADER].account(accounts[TRADER])["collateral"]["USDC"]["health"]
    bot = LiquidatorBot(clients[LIQUIDATOR])
    wait_until(lambda: _feed(clients[ORACLE], shocked) and not _mark(endpoints[LIQUIDATOR])["halted"], 60,
               "the halt to end")
    try:
        wait_until(bot.step, 60, "the liquidation")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; the liquidator's refusals: {bot.refused or 'none'}, the trader's "
                           f"margin: {clients[LIQUIDATOR].account(accounts[TRADER])['collateral']}") from exc
    record = bot.taken[0]
    qty = int(record["qty"])
    premium = int(record["mark_price"]) * qty // E9 - int(record["price"]) * qty // E9
    insured = int(record["insurance"])
    console.print(f"[green]5.[/green] the trader ({health}) was liquidated: {format_e9(qty)} ETH "
                  f"closed at {format_e9(int(record['price']))} against the oracle's "
                  f"{format_e9(int(record['mark_price']))}; of the {format_e9(premium)} USDC premium, "
                  f"{format_e9(insured)} to insurance and {format_e9(premium - insured)} to the liquidator, "
                  f"who took it at {format_e9(int(record['taken_at']))}")
    return {"halted": halted, "refused": refused, "liquidation": record, "premium": premium, "insurance": insured,
            "funding": funding}


def _settlement_table(console: Console, accounts: list[str], view: tuple[Any, Any, list[dict[str, Any]]],
                      certificate: Any, paid: dict[str, int], token: bytes, decimals: int) -> bool:
    """Each participant's arithmetic at the exit's checkpoint and what the contract paid; True if
    every payment is the certificate's leaf and the leaves are the account values apportioned."""
    positions = {p["account"]: p for p in view[0]}
    values = [max(0, int(margin["account_value"])) for margin in view[2]]
    owed = apportion(values, decimals)
    table = Table(title=f"settlement at v{certificate.version}: positions closed at the oracle price (USDC)")
    for column in ("participant", "collateral", "uPnL at the oracle", "funding owed", "account value", "paid",
                   "= leaf"):
        table.add_column(column, justify="left" if column == "participant" else "right")
    ok = True
    for index, (account, margin) in enumerate(zip(accounts, view[2], strict=True)):
        held = positions.get(account)
        leaf, _ = certificate.proof_for(address_bytes(account), token, BALANCE)
        right = paid[account] == leaf.amount == owed[index]
        ok &= right
        table.add_row(NAMES[index], format_e9(int(margin["balance"]) - int(margin["debt"])),
                      format_e9(int(held["unrealised_pnl"])) if held else "-",
                      format_e9(int(held["pending_funding"])) if held else "-",
                      format_e9(int(margin["account_value"])), f"{paid[account] / 10**decimals:,.6f}",
                      "[green]✓[/green]" if right else f"[red]✗ leaf {leaf.amount}, owed {owed[index]}[/red]")
    console.print(table)
    return ok
