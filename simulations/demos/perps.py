"""``parley demo --perps``: a perpetual market on 4 node processes over libp2p, with nothing to
start by hand.

Node 0 is the oracle, node 1 a market maker, node 2 a trader, node 3 the liquidator; every one
holds 10,000 USDC, and the genesis has ETH-PERP on USDC (10% initial margin, 5% maintenance,
funding every 5 s of checkpoint time, a 10% circuit band). Everything goes through the nodes'
local APIs, the bots are the reference ones (`simulations.perp_bots`):

1. the oracle feeder posts 3,000; the maker quotes a ladder a little above it;
2. the trader sends most of its USDC away and opens a long of 2.5 ETH on 1,000 USDC (7.5x);
3. funding runs: the book's bids above the oracle make longs pay;
4. a price shock (2,640: -12%) trips the circuit breaker: the trader's next order is refused
   ``market_halted``, and so is a liquidation, until the halt ends;
5. the trader, now below maintenance margin, is liquidated by the liquidator bot: the premium is
   split between the liquidator and the insurance pool, to the base unit;
6. every node is asked the same things: positions, funding index, accounts and payout root, which
   must agree; a table shows each participant's arithmetic (collateral, uPnL at the oracle price,
   funding owed, payout).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from channel.api.client import ApiError, Client, Endpoint
from channel.runtime.genesis_file import DEMO_ETH, DEMO_MARKETS, DEMO_USDC
from crdt.genesis import Role
from crdt.markets.config import MarketKind, PerpParams
from crdt.types import Symbol
from crdt.units import format_e9
from simulations.cluster import NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.perp_bots import LiquidatorBot, OracleFeeder

E9 = 10**9
ORACLE, MAKER, TRADER, LIQUIDATOR = range(4)
SYMBOL = "ETH-PERP"
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


def _same(endpoints: list[Endpoint]) -> tuple[str, str] | None:
    """The nodes' (state hash, payout root) once they all agree."""
    roots = set()
    for endpoint in endpoints:
        with Client(endpoint) as client:
            stats = client.stats()
        roots.add((stats["state_hash"], stats["payout_root"]))
    return next(iter(roots)) if len(roots) == 1 else None


def run_perp_demo(*, seed: int = 0, folder: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    console = Console(quiet=quiet)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parley-perps-") as tmp:
        root = folder or Path(tmp)
        console.rule("[bold]Parley demo[/bold]: a perpetual market on 4 nodes (oracle, maker, trader, liquidator)")
        cluster = create_cluster(root, 4, tokens=[DEMO_USDC, DEMO_ETH], initial=10_000 * E9,
                                 roles=[Role.ORACLE, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR],
                                 markets=[DEMO_MARKETS[0], PERP], finality_interval=0.5)
        accounts = ["0x" + p.address.hex() for p in cluster.genesis.participants]
        processes = [NodeProcess(cluster.config(i)) for i in range(4)]
        endpoints = start_all(processes)
        try:
            clients = [Client(endpoint) for endpoint in endpoints]
            feeder = OracleFeeder(clients[ORACLE], SYMBOL, iter([Decimal(3000), Decimal(2640)]))
            shocked = 2640 * E9
            feeder.step()
            wait_until(lambda: _fixed_at(endpoints, 3000 * E9), 60, "the first oracle price")
            console.print("[green]1.[/green] the oracle posted 3,000; a checkpoint fixed it on every node")
            for level in range(1, 4):  # the maker's ladder leans above the oracle: longs will pay funding
                _order(clients[MAKER], "buy", Decimal("0.5"), Decimal(2995 + 2 * level), "post_only")
                _order(clients[MAKER], "sell", Decimal(1), Decimal(3000 + 2 * level), "post_only")
            clients[TRADER].transfer(accounts[MAKER], "USDC", 9000 * E9)
            opened = _order(clients[TRADER], "buy", Decimal("2.5"), Decimal(3010), "ioc")
            position = clients[TRADER].positions(accounts[TRADER])[0]
            console.print(f"[green]2.[/green] the trader, left with 1,000 USDC, bought 2.5 ETH "
                          f"({opened['order']['status']}): entry {format_e9(int(position['entry_price']))}, "
                          f"liquidation price {format_e9(int(position['liquidation_price']))}")
            # an idle channel makes no checkpoints: the oracle feeds its price every half second, as a feeder does
            wait_until(lambda: _feed(clients[ORACLE], 3000 * E9) and clients[TRADER].funding_history(SYMBOL), 60,
                       "a funding interval")
            funding = clients[TRADER].funding_history(SYMBOL)[-1]
            console.print(f"[green]3.[/green] funding at checkpoint {funding['version']}: rate "
                          f"{Decimal(int(funding['rate'])) / 10**7}% (the bids above the oracle: longs pay), "
                          f"index {format_e9(int(funding['index']))} USDC a whole ETH")
            feeder.step()  # the shock
            wait_until(lambda: _fixed_at(endpoints, 2640 * E9), 60, "the shocked oracle price")
            halted = _mark(endpoints[TRADER])["halted"]
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
            wait_until(bot.step, 60, "the liquidation")
            record = bot.taken[0]
            qty = int(record["qty"])
            premium = int(record["mark_price"]) * qty // E9 - int(record["price"]) * qty // E9
            insured = int(record["insurance"])
            console.print(f"[green]5.[/green] the trader ({health}) was liquidated: {format_e9(qty)} ETH "
                          f"closed at {format_e9(int(record['price']))} against the oracle's "
                          f"{format_e9(int(record['mark_price']))}; of the {format_e9(premium)} USDC premium, "
                          f"{format_e9(insured)} to insurance and {format_e9(premium - insured)} to the liquidator, "
                          f"who took it at {format_e9(int(record['taken_at']))}")
            roots = wait_until(lambda: _same(endpoints), 60, "the nodes to agree")
            views = []
            for client in clients:
                views.append((client.positions(), client.mark_prices()[0]["funding_index"],
                              [client.account(a)["collateral"]["USDC"] for a in accounts]))
            agree = all(view == views[0] for view in views)
            table = Table(title="what each participant would be paid now (USDC)")
            for column in ("participant", "balance", "uPnL at the oracle", "funding owed", "account value"):
                table.add_column(column, justify="left" if column == "participant" else "right")
            positions = {(p["account"]): p for p in views[0][0]}
            for index, (account, margin) in enumerate(zip(accounts, views[0][2], strict=True)):
                held = positions.get(account)
                table.add_row(f"{('oracle', 'maker', 'trader', 'liquidator')[index]} {account[:10]}…",
                              format_e9(int(margin["balance"]) - int(margin["debt"])),
                              format_e9(int(held["unrealised_pnl"])) if held else "-",
                              format_e9(int(held["pending_funding"])) if held else "-",
                              format_e9(int(margin["account_value"])))
            console.print(table)
            verdict = "[green]all 4 nodes agree[/green]" if agree and roots else "[red]the nodes DISAGREE[/red]"
            console.print(f"   {verdict} on positions, funding and margins; state hash {roots[0][:18]}…, payout root "
                          f"{roots[1][:18]}…; the demo took {time.monotonic() - began:.0f} s")
            for client in clients:
                client.close()
        finally:
            codes = stop_all(processes)
    ok = bool(agree and roots and halted and "market_halted" in refused and record.get("deleveraged") == []
              and codes == [0, 0, 0, 0])
    return {
        "converged": ok, "halted": halted, "refused_while_halted": refused, "liquidation": record,
        "premium": premium, "insurance": insured, "funding": funding, "positions": views[0][0],
        "state_hash": roots[0], "payout_root": roots[1], "exit_codes": codes, "seed": seed,
    }
