"""``parley bot maker``: the market-making bot of `simulations.maker_bot`, on the ccxt class;
``parley bot liquidator`` and ``parley bot oracle``: the perpetual markets' reference bots of
`simulations.perp_bots`, on the API client.

Each runs until Ctrl-C or SIGTERM (the maker then cancels its quotes). Prices and sizes are human
units; the maker prints its ladder when it re-quotes, the liquidator each position it takes, the
feeder each price it posts.
"""

from __future__ import annotations

import json
import signal
import threading
from contextlib import suppress
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer

from channel.api.client import Client
from channel.cli.console import command_group, console, user_errors
from channel.cli.node import NodeDir
from channel.errors import UserError
from crdt.units import format_e9

# ccxt and the bots are imported by the command that runs them, not with the CLI (start-up time)

Json = Annotated[bool, typer.Option("--json", help="JSON lines (one per event, one when stopped) instead of text.")]


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def register(app: typer.Typer) -> None:
    bot_app = command_group(help="Trading bots on the node's ccxt exchange class.")
    app.add_typer(bot_app, name="bot")

    @bot_app.command("maker")
    @user_errors
    def maker(
        node: NodeDir,
        market: Annotated[str, typer.Option(help="The market to quote, e.g. ETH/USDC.")],
        spread: Annotated[float, typer.Option(help="Quote units from the mid to the first level, and between levels.")],
        size: Annotated[float, typer.Option(help="Base units per quote.")],
        levels: Annotated[int, typer.Option(min=1, max=50, help="Quotes a side.")] = 3,
        mid: Annotated[float | None, typer.Option(help="A fixed mid (else the book's).")] = None,
        max_inventory: Annotated[float | None, typer.Option(
            help="Base units away from the start beyond which it quotes one side only.")] = None,
        interval: Annotated[float, typer.Option(help="Seconds between cycles.")] = 1.0,
        as_json: Json = False,
    ) -> None:
        """Quote a ladder around the mid, re-quote on fills, keep inventory limits, cancel on exit."""
        import ccxt

        from channel.api.ccxt import install
        from simulations.maker_bot import MakerBot

        install()
        exchange = ccxt.parley({"apiKey": str(node)})
        try:
            exchange.load_markets()
            exchange.market(market)
        except ccxt.BadSymbol as exc:
            raise UserError(f"{market} is not a market of this channel") from exc
        except ccxt.BaseError as exc:
            raise UserError(f"cannot reach the node in {node}: {exc}") from exc
        bot = MakerBot(exchange, market, spread, size, levels, mid=mid, max_inventory=max_inventory)
        stopping = _on_sigterm()
        shown = 0

        def keep_going() -> bool:
            nonlocal shown
            if bot.requotes != shown:
                shown = bot.requotes
                quotes = sorted(bot.quotes.values(), key=lambda q: q[1])
                if as_json:
                    emit(event="quoted", market=market, requotes=shown,
                         quotes=[{"side": side, "price": str(price)} for side, price in quotes])
                else:
                    console.print(f"quoted {market}: " + ", ".join(f"{side} {size}@{price}" for side, price in quotes))
            return not stopping

        with suppress(KeyboardInterrupt):  # run cancels the quotes on its way out
            bot.run(keep_going, interval)
        if as_json:
            emit(event="stopped", market=market, requotes=bot.requotes)
        else:
            console.print(f"stopped: {market} quotes cancelled")

    @bot_app.command("liquidator")
    @user_errors
    def liquidator(
        node: NodeDir,
        interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 1.0,
        as_json: Json = False,
    ) -> None:
        """Liquidate every position whose account is below maintenance margin (the node's
        participant must be a liquidator)."""
        from simulations.perp_bots import LiquidatorBot

        stopping = _on_sigterm()
        with Client.for_node(node) as client:
            bot = LiquidatorBot(client)
            shown = 0

            def keep_going() -> bool:
                nonlocal shown
                for done in bot.taken[shown:]:
                    if as_json:
                        emit(event="liquidated", **{k: str(v) if type(v) is int else v for k, v in done.items()})
                        continue
                    console.print(f"liquidated {format_e9(int(done.get('qty', 0)))} of {done.get('account', '?')} "
                                  f"in {done.get('market', '?')} at {format_e9(int(done.get('price', 0)))}",
                                  highlight=False, soft_wrap=True)
                shown = len(bot.taken)
                return not stopping

            with suppress(KeyboardInterrupt):
                bot.run(keep_going, interval)
        if as_json:
            emit(event="stopped", liquidations=len(bot.taken), refused=bot.refused)
        else:
            console.print(f"stopped: {len(bot.taken)} liquidations, refusals {bot.refused or 'none'}")

    @bot_app.command("oracle")
    @user_errors
    def oracle(
        node: NodeDir,
        market: Annotated[str, typer.Option(help="The perp market, e.g. ETH-PERP.")],
        from_file: Annotated[Path | None, typer.Option(
            "--from", help="Prices to post, one a line in whole quote units.")] = None,
        random_walk_seed: Annotated[int | None, typer.Option(
            "--random-walk", metavar="SEED", help="Post a seeded random walk instead.")] = None,
        start: Annotated[str, typer.Option(help="The random walk's first price.")] = "3000",
        step_bps: Annotated[int, typer.Option(min=1, max=5000, help="The random walk's step (basis points).")] = 20,
        interval: Annotated[float, typer.Option(help="Seconds between posts.")] = 1.0,
        as_json: Json = False,
    ) -> None:
        """Post prices of a perp market as this oracle, from a file or a seeded random walk."""
        from simulations.perp_bots import OracleFeeder, file_prices, random_walk

        if (from_file is None) == (random_walk_seed is None):
            raise UserError("give --from FILE or --random-walk SEED (one of the two)")
        if from_file is not None:
            if not from_file.is_file():
                raise UserError(f"no price file {from_file}")
            try:
                prices = list(file_prices(from_file))
            except InvalidOperation as exc:
                raise UserError(f"{from_file} holds a line that is not a price") from exc
            source = iter(prices)
        else:
            try:
                first = Decimal(start)
            except InvalidOperation as exc:
                raise UserError(f"--start must be a price such as 3000, got {start!r}") from exc
            source = random_walk(random_walk_seed or 0, first, step_bps)
        stopping = _on_sigterm()
        with Client.for_node(node) as client:
            feeder = OracleFeeder(client, market, source)
            shown = 0

            def keep_going() -> bool:
                nonlocal shown
                for price in feeder.posted[shown:]:
                    if as_json:
                        emit(event="posted", market=market, price=str(price))
                    else:
                        console.print(f"posted {market} {Decimal(price) / 10**9}", highlight=False)
                shown = len(feeder.posted)
                return not stopping

            with suppress(KeyboardInterrupt):
                feeder.run(keep_going, interval)
        if as_json:
            emit(event="stopped", posted=len(feeder.posted))
        else:
            console.print(f"stopped: {len(feeder.posted)} prices posted")


def _on_sigterm() -> list[int]:
    """A list that SIGTERM appends to: the bots stop when it is not empty (only the main thread
    may set a handler: a bot run from another thread, as in a test, stops on its source or
    Ctrl-C alone)."""
    stopping: list[int] = []
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda number, frame: stopping.append(number))
    return stopping
