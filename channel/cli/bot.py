"""``parley bot maker``: the market-making bot of `simulations.maker_bot`, on the ccxt class.

It runs until Ctrl-C or SIGTERM, then cancels its quotes. Prices and sizes are human units, as
ccxt takes them; each cycle's ladder is printed when it re-quotes.
"""

from __future__ import annotations

import json
import signal
from contextlib import suppress
from typing import Annotated

import typer

from channel.cli.console import command_group, console, user_errors
from channel.cli.node import NodeDir
from channel.errors import UserError


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
        as_json: Annotated[bool, typer.Option("--json", help="One JSON line per re-quote (its quotes), and one "
                                              "when stopped, instead of text.")] = False,
    ) -> None:
        """Quote a ladder around the mid, re-quote on fills, keep inventory limits, cancel on exit."""
        import ccxt  # ccxt and the bot are imported when the bot starts, not with the CLI (start-up time)

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
        stopping: list[int] = []
        signal.signal(signal.SIGTERM, lambda number, frame: stopping.append(number))
        shown = 0

        def keep_going() -> bool:
            nonlocal shown
            if bot.requotes != shown:
                shown = bot.requotes
                quotes = sorted(bot.quotes.values(), key=lambda q: q[1])
                if as_json:
                    print(json.dumps({"event": "quoted", "market": market, "requotes": shown,
                                      "quotes": [{"side": side, "price": str(price)} for side, price in quotes]}),
                          flush=True)
                else:
                    console.print(f"quoted {market}: " + ", ".join(f"{side} {size}@{price}" for side, price in quotes))
            return not stopping

        with suppress(KeyboardInterrupt):  # run cancels the quotes on its way out
            bot.run(keep_going, interval)
        if as_json:
            print(json.dumps({"event": "stopped", "market": market, "requotes": bot.requotes}), flush=True)
        else:
            console.print(f"stopped: {market} quotes cancelled")
