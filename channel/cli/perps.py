"""CLI commands of the perpetual markets: ``parley positions``, ``account``, ``liquidate`` and
``parley oracle post``. They use `channel.api.client` as `channel.cli.trade` does, with prices
and quantities in whole units (checked against the market's tick and step) and amounts of the
collateral token shown with its decimals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from channel.api.client import Client
from channel.cli.console import command_group, console, user_errors
from channel.cli.node import JsonFlag, NodeDir
from channel.cli.trade import RequestId, checked, find_market, price_text, qty_text
from crdt.units import format_e9


def _signed(value: str) -> str:
    return format_e9(int(value))


def _positions_table(markets: dict[str, dict[str, Any]], positions: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("market", "account", "side", "size", "entry", "mark", "uPnL", "funding owed", "liquidation"):
        table.add_column(column, justify="left" if column in ("market", "account", "side") else "right",
                         overflow="fold")
    for p in positions:
        market = markets[p["market"]]
        liquidation = "-" if p["liquidation_price"] is None else price_text(market, p["liquidation_price"])
        table.add_row(p["market"], p["account"][:10] + "…", p["side"], qty_text(market, p["size"]),
                      price_text(market, p["entry_price"]), price_text(market, p["mark_price"]),
                      _signed(p["unrealised_pnl"]), _signed(p["pending_funding"]), liquidation)
    return table


def register(app: typer.Typer) -> None:
    oracle = command_group(help="The oracle's commands (an oracle participant's node).")
    app.add_typer(oracle, name="oracle")

    @app.command()
    @user_errors
    def positions(
        account: Annotated[str | None, typer.Option(help="One participant's (0x…); everyone's by default.")] = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """Open perpetual positions: size, entry and mark prices, unrealised PnL, funding owed and
        the price at which the account becomes liquidatable."""
        with Client.for_node(node) as client:
            found = client.positions(account)
            markets = {m["symbol"]: m for m in client.markets()}
        if as_json:
            print(json.dumps(found, indent=2))
            return
        console.print(_positions_table(markets, found, "positions"))

    @app.command()
    @user_errors
    def account(
        address: Annotated[str | None, typer.Argument(
            metavar="ACCOUNT", help="A participant (0x…); the node's own by default.")] = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """An account's cross margin in each collateral token (balance, value, initial and
        maintenance margin, free collateral, health) and its positions."""
        with Client.for_node(node) as client:
            found = client.account(address)
            markets = {m["symbol"]: m for m in client.markets()}
        if as_json:
            print(json.dumps(found, indent=2))
            return
        table = Table(title=f"account {found['account']}")
        table.add_column("")
        for token in found["collateral"]:
            table.add_column(token, justify="right")
        for label, key in (("balance", "balance"), ("debt", "debt"), ("account value", "account_value"),
                           ("initial margin", "initial_margin"), ("maintenance margin", "maintenance_margin"),
                           ("free collateral", "free_collateral")):
            table.add_row(label, *(_signed(row[key]) for row in found["collateral"].values()))
        table.add_row("health", *(row["health"] for row in found["collateral"].values()))
        console.print(table)
        if found["positions"]:
            console.print(_positions_table(markets, found["positions"], "positions"))

    @app.command()
    @user_errors
    def liquidate(
        address: Annotated[str, typer.Argument(metavar="ACCOUNT", help="The account to liquidate (0x…).")],
        market: Annotated[str, typer.Argument(help="The perp market, e.g. ETH-PERP.")],
        qty: Annotated[str | None, typer.Argument(
            help="How much of the position, in whole base units; all of it by default.")] = None,
        request_id: RequestId = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """As a liquidator: take (part of) a position whose account is below maintenance margin,
        at the oracle price less half the mmr (a long; more for a short), bounded by its
        bankruptcy price."""
        with Client.for_node(node) as client:
            found = find_market(client, market)
            if qty is None:
                held = [p for p in client.positions(address) if p["market"] == market]
                e9_qty = int(held[0]["size"]) if held else 0
            else:
                e9_qty = checked(found, qty, "qty")
            result = client.liquidate(address, market, max(e9_qty, 1), request_id)
        if as_json:
            print(json.dumps(result))
            return
        record = result["liquidation"]
        if record is None:
            console.print(f"{result['status']}  op {result['op_id']}")
        elif record["deleveraged"]:
            console.print(f"deleveraged {qty_text(found, record['qty'])} of {address} at its bankruptcy price "
                          f"{price_text(found, record['price'])} against {len(record['deleveraged'])} positions  "
                          f"op {result['op_id']}", highlight=False, soft_wrap=True)
        else:
            console.print(f"took {qty_text(found, record['qty'])} of {address} at "
                          f"{price_text(found, record['taken_at'])} (closed at {price_text(found, record['price'])}, "
                          f"oracle "
                          f"{price_text(found, record['mark_price'])}; {format_e9(int(record['insurance']))} "
                          f"{found['quote']} to insurance)  op {result['op_id']}", highlight=False, soft_wrap=True)

    @oracle.command("post")
    @user_errors
    def post(
        market: Annotated[str, typer.Argument(help="The perp market, e.g. ETH-PERP.")],
        price: Annotated[str, typer.Argument(help="Quote per whole base, e.g. 3000.5.")],
        request_id: RequestId = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """Post this oracle's price of a perp market; each checkpoint fixes the market's price as
        the lower median of the oracles' fresh posts."""
        with Client.for_node(node) as client:
            found = find_market(client, market)
            result = client.post_price(market, checked(found, price, "price"), request_id)
        if as_json:
            print(json.dumps(result))
        else:
            console.print(f"{result['status']}  {market} {price}  op {result['op_id']}", highlight=False,
                          soft_wrap=True)
