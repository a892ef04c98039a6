"""CLI commands that trade through a node: ``parley order``, ``cancel``, ``book``, ``orders`` and
``trades``. They use `channel.api.client`, so they do what a Python program using it would do.

Prices and quantities are human units on the command line ("0.1" ETH, "2000.5" USDC per ETH),
converted exactly (`decimal.Decimal`, never a float) to the e9 integers the API takes; a
quantity that is not a multiple of the market's step, a price off its tick, or either outside
its limits is refused here with the market's own numbers in whole units, before anything is
sent. Output shows them with the decimal places the market's tick and step sizes need.

A ``--market`` order is an ioc whose price is the worst one it accepts: ``--price`` sets it;
without one the node takes the book as it stands (the worst price among the resting orders
that fill the quantity now), so a market order never fills worse than the book it was sent
against, and an empty side refuses it (``no_liquidity``).
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from channel.api.book_feed import LocalBook, follow_book
from channel.api.client import Client, InsufficientBalance
from channel.cli.console import console, user_errors
from channel.cli.node import JsonFlag, NodeDir, short_of
from channel.errors import UserError
from crdt.markets.config import fee, notional
from crdt.units import format_e9

E9 = 10**9
UINT64_LIMIT = 2**64

RequestId = Annotated[
    str | None, typer.Option(help="Idempotency key: a retry returns the first answer.")
]


# -- human units -------------------------------------------------------------------------------


def parse_units(text: str, what: str) -> int:
    """A positive decimal number of whole units ("0.1", "2000.50") as e9, exactly; `UserError`
    for anything else (a float's rounding never enters: Decimal reads the digits as written)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise UserError(f"{what} must be a decimal number such as 0.1, got {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise UserError(f"{what} must be a positive number, got {text!r}")
    with localcontext() as context:
        context.prec = 60  # exact for every value below 2**64 e9 with 9 decimals
        scaled = value.scaleb(9)
    if scaled != scaled.to_integral_value():
        raise UserError(f"{what} {text} has more than 9 decimal places")
    e9 = int(scaled)
    if e9 >= UINT64_LIMIT:
        raise UserError(f"{what} {text} is too large")
    return e9


def units(value: int | str, places: int) -> str:
    """An e9 integer in whole units with at least `places` decimal places, exactly (a value
    finer than that, such as a fee, keeps its own digits)."""
    whole, _, fraction = format_e9(int(value)).partition(".")
    fraction = fraction.ljust(places, "0")
    return f"{whole}.{fraction}" if fraction else whole


def checked(market: dict[str, Any], text: str, what: str) -> int:
    """`text` (a price or a qty in whole units) as e9, on the market's grid and within its limits."""
    e9 = parse_units(text, what)
    grid, low, high, token, places = (
        (int(market["tick_size"]), int(market["min_price"]), int(market["max_price"]), market["quote"],
         market["price_decimals"])
        if what == "price" else
        (int(market["step_size"]), int(market["min_qty"]), int(market["max_qty"]), market["base"],
         market["qty_decimals"])
    )
    step_name = "tick" if what == "price" else "step"
    if e9 % grid:
        raise UserError(f"{what} {text} is not a multiple of the {market['symbol']} {step_name} "
                        f"{units(grid, places)} {token}")
    if not low <= e9 <= high:
        raise UserError(f"{what} {text} is outside the {market['symbol']} limits "
                        f"[{units(low, places)}, {units(high, places)}] {token}")
    return e9


def order_needs(market: dict[str, Any], side: str, qty: int, price: int | None) -> str:
    """What an order holds when placed, as the ledger computes it: a sell its quantity of base,
    a buy its notional at its price plus the greater of the two fees, in quote."""
    if side == "sell":
        return f"a sell of this size needs {format_e9(qty)} {market['base']}"
    if price is None:
        return "this market buy needs more than that at the book's prices"
    worst = notional(price, qty)
    needed = worst + fee(worst, max(int(market["maker_fee"]), int(market["taker_fee"])))
    return f"a buy of this size needs {format_e9(needed)} {market['quote']}"


def find_market(client: Client, symbol: str) -> dict[str, Any]:
    markets = client.markets()
    for market in markets:
        if market["symbol"] == symbol:
            found: dict[str, Any] = market
            return found
    listed = ", ".join(m["symbol"] for m in markets) or "none"
    raise UserError(f"no market {symbol!r} in this channel (its markets: {listed})")


def price_text(market: dict[str, Any], value: int | str | None) -> str:
    return "" if value is None else units(value, market["price_decimals"])


def qty_text(market: dict[str, Any], value: int | str) -> str:
    return units(value, market["qty_decimals"])


# -- output ------------------------------------------------------------------------------------


def short(hex_id: str) -> str:
    """An id or an address cut to its first 10 hex digits, for tables (--json has them whole)."""
    return hex_id[:12] + "…"


def describe_order(market: dict[str, Any], order: dict[str, Any]) -> str:
    base, quote = market["base"], market["quote"]
    lines = [
        f"order {order['order_id']}  {order['status']}{'  (final)' if order['final'] else ''}\n"
        f"  {order['side']} {qty_text(market, order['qty'])} {base} at {price_text(market, order['price'])} {quote}"
        f" ({order['type']}, {order['tif']}): filled {qty_text(market, order['filled'])}, "
        f"remaining {qty_text(market, order['remaining'])}"
    ]
    for fill in order["fills"]:
        lines.append(
            f"  fill {qty_text(market, fill['qty'])} {base} at {price_text(market, fill['price'])} {quote} "
            f"as {fill['liquidity']}, fee {units(fill['fee'], 0)} {quote}{'' if fill['final'] else ' (tentative)'}"
        )
    return "\n".join(lines)


def ladder(market: dict[str, Any], book: dict[str, Any]) -> Group:
    """The book as a ladder: asks above (best at the bottom), bids below (best at the top)."""
    at = f"version {book['version']}" if "version" in book else f"seq {book['seq']}"
    table = Table(title=f"{book['market']}  {at}", show_edge=False)
    for column in ("bid qty", "price", "ask qty", "total"):
        table.add_column(column, justify="right")
    total = 0
    asks = []
    for price, qty in book["asks"]:
        total += int(qty)
        asks.append((price, qty, total))
    for price, qty, running in reversed(asks):
        table.add_row("", Text(price_text(market, price), style="red"), qty_text(market, qty),
                      qty_text(market, running))
    total = 0
    for price, qty in book["bids"]:
        total += int(qty)
        table.add_row(qty_text(market, qty), Text(price_text(market, price), style="green"), "",
                      qty_text(market, total))
    bid, ask = book["best_bid"], book["best_ask"]
    spread = (
        f"spread {price_text(market, int(ask) - int(bid))} {market['quote']}" if bid is not None and ask is not None
        else "one side is empty" if (bid, ask) != (None, None) else "the book is empty"
    )
    return Group(table, Text(f"best bid {price_text(market, bid) or '-'}  best ask {price_text(market, ask) or '-'}"
                             f"  {spread}"))


def streamed(book: LocalBook) -> dict[str, Any]:
    """A book kept from the stream, in the shape of ``parley_orderBook`` (its seq where a read
    has its version)."""
    bid, ask = book.best_bid(), book.best_ask()
    return {"market": book.market, "seq": book.seq, "best_bid": None if bid is None else str(bid[0]),
            "best_ask": None if ask is None else str(ask[0]), **book.levels()}


def register(app: typer.Typer) -> None:
    @app.command()
    @user_errors
    def order(
        side: Annotated[str, typer.Argument(help="buy or sell")],
        market: Annotated[str, typer.Argument(help="The market's symbol, e.g. ETH/USDC.")],
        qty: Annotated[str, typer.Argument(help="Quantity of the base token in whole units, e.g. 0.1")],
        price: Annotated[str | None, typer.Option(
            help="Quote per whole base, e.g. 2000.5. Required for a limit order; for --market, the worst price "
            "accepted (without it, the worst price in the book now that fills the quantity).")] = None,
        ioc: Annotated[bool, typer.Option("--ioc", help="Immediate or cancel: never rests.")] = False,
        post_only: Annotated[bool, typer.Option("--post-only", help="Refused if it would take.")] = False,
        market_order: Annotated[bool, typer.Option("--market", help="A market order (an ioc).")] = False,
        reduce_only: Annotated[bool, typer.Option("--reduce-only", help="Perpetual markets only.")] = False,
        expires: Annotated[int, typer.Option(help="Checkpoint time (ms) it expires at; 0 never.", min=0)] = 0,
        request_id: RequestId = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """Place an order, signed by the node's participant; prints its state once applied."""
        if side not in ("buy", "sell"):
            raise UserError(f"side must be buy or sell, got {side!r}")
        if ioc + post_only + market_order > 1:
            raise UserError("choose at most one of --ioc, --post-only and --market")
        if price is None and not market_order:
            raise UserError("a limit order needs --price")
        with Client.for_node(node) as client:
            found = find_market(client, market)
            e9_qty = checked(found, qty, "qty")
            e9_price = None if price is None else checked(found, price, "price")
            try:
                result = client.place_order(
                    market, side, e9_qty, e9_price, type="market" if market_order else "limit",
                    tif="ioc" if ioc or market_order else "post_only" if post_only else "gtc",
                    reduce_only=reduce_only, expires=expires, request_id=request_id,
                )
            except InsufficientBalance as exc:
                token = found["quote"] if side == "buy" else found["base"]
                raise short_of(client, token, order_needs(found, side, e9_qty, e9_price)) from exc
        if as_json:
            print(json.dumps(result))
        else:
            console.print(describe_order(found, result["order"]), highlight=False, soft_wrap=True)

    @app.command()
    @user_errors
    def cancel(
        order_id: Annotated[str | None, typer.Argument(metavar="ORDER", help="The order id (0x…).")] = None,
        all_in: Annotated[str | None, typer.Option(
            "--all", metavar="MARKET", help="Cancel every open order of yours in MARKET instead.")] = None,
        request_id: RequestId = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """Cancel one of your open orders, or all of them in a market (--all MARKET)."""
        if (order_id is None) == (all_in is None):
            raise UserError("give an ORDER id or --all MARKET (one of the two)")
        with Client.for_node(node) as client:
            if all_in is not None:
                result = client.cancel_all(all_in, request_id)
            else:
                result = client.cancel_order(order_id, request_id)  # type: ignore[arg-type]  # checked above
        if as_json:
            print(json.dumps(result))
        elif all_in is not None:
            console.print(f"{result['status']}  cancelled your open {all_in} orders  op {result['op_id']}")
        else:
            console.print(f"{result['status']}  order {order_id} {result['order']['status']}  op {result['op_id']}")

    @app.command()
    @user_errors
    def book(
        market: Annotated[str, typer.Argument(help="The market's symbol, e.g. ETH/USDC.")],
        depth: Annotated[int, typer.Option(help="Price levels a side.", min=1, max=1000)] = 10,
        watch: Annotated[bool, typer.Option("--watch", help="Live from the node's book stream until Ctrl-C.")] = False,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """The market's order book (level 2), as a ladder; --watch keeps it live from the node's
        book stream, a snapshot then each change (with --json: one JSON line each time it
        changes, with the stream's seq in place of the version)."""
        with Client.for_node(node) as client:
            found = find_market(client, market)
            current = client.order_book(market, depth)
            if not watch:
                if as_json:
                    print(json.dumps(current))
                else:
                    console.print(ladder(found, current))
                return
            try:
                if as_json:
                    last = None
                    for local in follow_book(client, market, depth):
                        if (shown := streamed(local)) != last:
                            print(json.dumps(shown), flush=True)
                            last = shown
                with Live(ladder(found, current), console=console, auto_refresh=False) as live:
                    for local in follow_book(client, market, depth):
                        live.update(ladder(found, streamed(local)), refresh=True)
            except KeyboardInterrupt:
                return

    @app.command()
    @user_errors
    def orders(
        market: Annotated[str | None, typer.Option(help="Only this market.")] = None,
        account: Annotated[str | None, typer.Option(help="Another participant's (0x…); yours by default.")] = None,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """Open orders, oldest first (yours unless --account)."""
        with Client.for_node(node) as client:
            found = client.open_orders(market, account)
            markets = {m["symbol"]: m for m in client.markets()}
        if as_json:
            print(json.dumps(found, indent=2))
            return
        table = Table(title="open orders")
        for column in ("order", "market", "side", "price", "remaining"):
            table.add_column(column, justify="right" if column in ("price", "remaining") else "left")
        for entry in found:
            config = markets[entry["market"]]
            table.add_row(entry["order_id"], entry["market"], entry["side"], price_text(config, entry["price"]),
                          qty_text(config, entry["remaining"]))
        console.print(table)

    @app.command()
    @user_errors
    def trades(
        market: Annotated[str, typer.Argument(help="The market's symbol, e.g. ETH/USDC.")],
        mine: Annotated[bool, typer.Option("--mine", help="Only your fills, with your side and fee.")] = False,
        limit: Annotated[int, typer.Option(help="The last N fills.", min=1, max=1000)] = 20,
        node: NodeDir = Path("data"),
        as_json: JsonFlag = False,
    ) -> None:
        """The market's last fills, oldest first (the taker's side); --mine: yours (your side)."""
        with Client.for_node(node) as client:
            found = find_market(client, market)
            fills = client.my_trades(market, limit) if mine else client.trades(market, limit)
        if as_json:
            print(json.dumps(fills, indent=2))
            return
        table = Table(title=f"{'your ' if mine else ''}{market} trades")
        columns = ["price", "qty", "side", *(["liquidity", "fee", "order"] if mine else ["taker", "maker"]), "status"]
        for column in columns:
            table.add_column(column, justify="right" if column in ("price", "qty", "fee") else "left")
        for fill in fills:
            who = ([fill["liquidity"], units(fill["fee"], 0), short(fill["order"])] if mine
                   else [short(fill["taker"]), short(fill["maker"])])
            table.add_row(price_text(found, fill["price"]), qty_text(found, fill["qty"]), fill["side"], *who,
                          "final" if fill["final"] else "tentative")
        console.print(table)
