"""Markets on the command line: in `parley genesis new`, and in the report of `parley replay`.

``--market SYMBOL:KIND[:KEY=VALUE,...]`` becomes one ``[[markets]]`` table of the genesis: every
value is a decimal in human units (a price or tick in quote per whole base, a quantity or step
in base, a fee as a fraction) converted to e9 integers exactly (`crdt.units.parse_e9`: more
than 9 decimal places is an error, never a rounding). ``--markets FILE`` holds ``[[markets]]``
tables exactly as a genesis does (e9 integers). Either way the checking is the genesis's own
(`crdt.genesis.parse_markets`): its `InvalidMarket` names the bad field, and the error shown
names where the market came from, the field and its value.

`markets_report` is what `parley replay --json` prints per market: the book (each side best
first), the open orders and every fill in replay order, e9 integers as decimal strings. A fill
is final when its taker's operation is certified (`Replica.status`); a replay of a file has no
certified cuts, so its fills are all tentative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from channel.errors import UserError
from channel.runtime.genesis_file import read_toml
from crdt.genesis import Genesis, InvalidMarket, parse_markets
from crdt.markets.book import FillRecord, RestingOrder
from crdt.markets.config import Market
from crdt.units import format_e9, parse_e9

if TYPE_CHECKING:
    from crdt.replica import Replica

# spec key -> the genesis field it sets, and the human default when the key is left out ("" for
# the ones derived from other fields: a minimum is one unit, a maximum is rounded down to units)
SPEC_KEYS: dict[str, tuple[str, str]] = {
    "tick": ("tick_size", "0.01"),
    "step": ("step_size", "0.001"),
    "min_qty": ("min_qty", ""),
    "max_qty": ("max_qty", "1000000"),
    "min_price": ("min_price", ""),
    "max_price": ("max_price", "1000000"),
    "maker_fee": ("maker_fee", "0.0002"),
    "taker_fee": ("taker_fee", "0.0005"),
}
# a perp's keys: (field, default, how the value reads): "e9" a decimal in human units (fractions,
# quote amounts), "int" a whole number (milliseconds, a count)
PERP_KEYS: dict[str, tuple[str, str, str]] = {
    "quote": ("quote", "USDC", "text"),
    "imr": ("imr", "0.1", "e9"),
    "mmr": ("mmr", "0.05", "e9"),
    "cap": ("max_notional_at_open", "1000000", "e9"),  # the same notional cap at every leverage
    "max_funding_rate": ("max_funding_rate", "0.001", "e9"),
    "funding_interval_ms": ("funding_interval", "3600000", "int"),
    "insurance_ratio": ("insurance_pool_ratio", "0.3", "e9"),
    "circuit_band": ("circuit_band", "0.1", "e9"),
    "halt_checkpoints": ("halt_checkpoints", "3", "int"),
    "mtb": ("mtb_long", "0.05", "e9"),  # the take bound, both sides
    "oracle_staleness_ms": ("oracle_staleness", "60000", "int"),
    "impact_notional": ("impact_notional", "1000", "e9"),
}
FIELD_KEYS = {field: key for key, (field, _) in SPEC_KEYS.items()} | {
    field: key for key, (field, _, reads) in PERP_KEYS.items() if reads != "text"} | {"mtb_short": "mtb"}

MARKETS_HELP = (  # plain text: the CLI's help is not rich markup
    "A --market is SYMBOL:KIND[:KEY=VALUE,...], e.g. ETH/USDC:spot:tick=0.01,taker_fee=0.001: SYMBOL is "
    "BASE/QUOTE of two --token symbols and KIND is spot, or BASE-PERP (e.g. ETH-PERP) and KIND perp. "
    "Values are in human units, each key left out takes its default: tick=0.01 and step=0.001; "
    "min_price (one tick) and max_price=1000000 in quote per whole base; min_qty (one step) and "
    "max_qty=1000000 in base; "
    "maker_fee=0.0002 and taker_fee=0.0005 as fractions (0.0005 is 5 bps). A maximum left out is rounded "
    "down to a multiple of the tick or step. A perp market also takes quote=USDC (its collateral token), "
    "imr=0.1, mmr=0.05, cap=1000000 (the notional cap at every leverage, in quote), max_funding_rate=0.001, "
    "funding_interval_ms=3600000, insurance_ratio=0.3, circuit_band=0.1, halt_checkpoints=3, mtb=0.05 (the "
    "take bound), oracle_staleness_ms=60000 and impact_notional=1000 (quote). --markets FILE takes "
    "[[markets]] tables as the genesis holds them, in e9 integers."
)


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One ``--market``: its text, the ``[[markets]]`` table it makes (not yet checked) and
    the keys it gave (the others are defaults)."""

    text: str
    table: dict[str, Any]
    given: frozenset[str]

    def shown(self, field: str) -> str:
        """The field as the spec wrote it (``tick=0``) or as its default (``max_qty (default …)``)."""
        perp = self.table.get("kind") == "perp"
        if field not in FIELD_KEYS:  # symbol, kind, base, quote: text
            if perp and field == "quote":
                return f"quote={self.table['quote']!r}"
            derived = field in ("base", "quote") and "/" not in self.table["symbol"]
            hint = f" (from SYMBOL, which must be {'BASE-PERP' if perp else 'BASE/QUOTE'})" if derived else ""
            return f"{field} {self.table.get(field, '')!r}{hint}"
        key, value = FIELD_KEYS[field], self.table[field]
        if isinstance(value, list):  # the one cap of every leverage
            value = value[0]
        if key in self.given:
            return f"{key}={format_e9(value)} ({value} e9)"
        return f"{key} (default {format_e9(value)}, {value} e9)"


def parse_market_spec(text: str) -> MarketSpec:
    """One ``--market`` spec, or `UserError` for one that is not of the form."""
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise UserError(f"--market {text!r}: must be SYMBOL:KIND[:KEY=VALUE,...]")
    symbol, kind = parts[0], parts[1]
    perp = kind == "perp"
    keys = [*SPEC_KEYS, *PERP_KEYS] if perp else list(SPEC_KEYS)
    given: dict[str, int] = {}
    texts: dict[str, str] = {}
    for item in parts[2].split(",") if len(parts) == 3 and parts[2] else []:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals:
            raise UserError(f"--market {text!r}: expected KEY=VALUE, got {item!r}")
        if key not in keys:
            raise UserError(f"--market {text!r}: unknown key {key!r}; the keys are {', '.join(keys)}")
        if key in given or key in texts:
            raise UserError(f"--market {text!r}: {key} is given twice")
        if key in PERP_KEYS and PERP_KEYS[key][2] == "text":
            texts[key] = value.strip()
            continue
        try:
            given[key] = _perp_value(key, value) if key in PERP_KEYS else parse_e9(value)
        except ValueError as exc:
            raise UserError(f"--market {text!r}: {key}={value}: {exc}") from exc
    values = {key: parse_e9(default) for key, (_, default) in SPEC_KEYS.items() if default}
    values.update({key: value for key, value in given.items() if key in SPEC_KEYS})
    values.setdefault("min_price", values["tick"])
    values.setdefault("min_qty", values["step"])
    for key, unit in (("max_price", values["tick"]), ("max_qty", values["step"])):
        if key not in given and unit > 0:
            values[key] -= values[key] % unit
    base, _, quote = symbol.partition("/")
    table = {"symbol": symbol, "kind": kind, "base": base, "quote": quote,
             **{SPEC_KEYS[key][0]: value for key, value in values.items()}}
    if perp:  # BASE-PERP, collateral in `quote`
        table["base"] = symbol.removesuffix("-PERP") if symbol.endswith("-PERP") else ""
        table["quote"] = texts.get("quote", PERP_KEYS["quote"][1])
        for key, (field, default, reads) in PERP_KEYS.items():
            if reads != "text":
                table[field] = given.get(key, _perp_value(key, default))
        table["mtb_short"] = table["mtb_long"]
        imr, cap = given.get("imr", _perp_value("imr", "0.1")), table["max_notional_at_open"]
        table["max_notional_at_open"] = [cap] * (10**9 // imr if imr > 0 else 1)  # one cap per leverage
    return MarketSpec(text, table, frozenset(given) | frozenset(texts))


def _perp_value(key: str, value: str) -> int:
    """A perp key's value: e9 of a decimal, or a whole number (`ValueError` otherwise)."""
    if PERP_KEYS[key][2] == "int":
        if not value.strip().isdigit():
            raise ValueError("must be a whole number")
        return int(value)
    return parse_e9(value)


def read_markets_file(path: Path) -> list[Any]:
    """The ``[[markets]]`` tables of a TOML file that holds nothing else."""
    data = read_toml(path, "markets file")
    other = sorted(set(data) - {"markets"})
    if other:
        raise UserError(f"markets file {path}: holds [[markets]] tables only, not {other[0]!r}")
    if "markets" not in data:
        raise UserError(f"markets file {path}: no [[markets]] tables")
    entries = data["markets"]
    if not isinstance(entries, list):
        raise UserError(f"markets file {path}: markets must be an array of tables ([[markets]])")
    return entries


def checked_markets(specs: Sequence[str], file: Path | None, tokens: Sequence[str]) -> list[Market]:
    """The markets of ``--markets FILE`` then ``--market`` specs, as the genesis of `tokens`
    checks them; a bad one is a `UserError` naming its source, the field and the value."""
    from_file = read_markets_file(file) if file is not None else []
    parsed = [parse_market_spec(spec) for spec in specs]
    try:
        return list(parse_markets([*from_file, *(spec.table for spec in parsed)], tokens))
    except InvalidMarket as exc:
        if exc.index < len(from_file):
            raise UserError(f"markets file {file}: {exc}") from exc
        spec = parsed[exc.index - len(from_file)]
        raise UserError(f"--market {spec.text!r}: {spec.shown(exc.field)}: {exc.reason}") from exc



def markets_table(genesis: Genesis) -> Table:
    """The genesis's markets in human units: prices in quote per whole base, fees in basis points."""
    table = Table(title="markets")
    for column in ("market", "tick", "step", "qty", "price", "fees (bps)"):
        table.add_column(column, justify="left" if column == "market" else "right")
    for m in genesis.markets:
        table.add_row(
            m.symbol, format_e9(m.tick_size), format_e9(m.step_size),
            f"{format_e9(m.min_qty)} to {format_e9(m.max_qty)}",
            f"{format_e9(m.min_price)} to {format_e9(m.max_price)}",
            f"{format_e9(m.maker_fee * 10_000)} / {format_e9(m.taker_fee * 10_000)}",
        )
    return table


# -- the replay report ---------------------------------------------------------------------------


def book_entry(order: RestingOrder) -> dict[str, Any]:
    return {"order_id": "0x" + order.order_id.hex(), "owner": "0x" + order.owner.hex(), "price": str(order.price),
            "remaining": str(order.remaining), "placed": order.placed}


def fill_entry(record: FillRecord) -> dict[str, Any]:
    fill = record.fill
    return {
        "taker_order": "0x" + fill.taker_order.hex(), "maker_order": "0x" + fill.maker_order.hex(),
        "taker": "0x" + fill.taker.hex(), "maker": "0x" + fill.maker.hex(), "market": fill.market,
        "price": str(fill.price), "qty": str(fill.qty), "taker_fee": str(fill.taker_fee),
        "maker_fee": str(fill.maker_fee), "final": record.final,
    }


def markets_report(replica: Replica) -> dict[str, Any]:
    """Per market of the genesis: ``bids`` and ``asks`` best first, ``open_orders`` in placement
    order (with side, hold and expiry), ``fills`` in replay order."""
    ledger = replica.ledger
    fills = replica.fill_records()
    report: dict[str, Any] = {}
    for market in replica.genesis.markets:
        book = ledger.book(market.symbol)
        resting = sorted([*book.bids(), *book.asks()], key=lambda order: order.placed)
        report[market.symbol] = {
            "base": market.base,
            "quote": market.quote,
            "bids": [book_entry(order) for order in book.bids()],
            "asks": [book_entry(order) for order in book.asks()],
            "open_orders": [
                {**book_entry(order), "side": order.side, "hold": str(order.hold),
                 "expires": str(ledger.expiry.get(order.order_id, 0))}
                for order in resting
            ],
            "fills": [fill_entry(record) for record in fills if record.fill.market == market.symbol],
        }
    return report


def markets_summary(markets: dict[str, Any]) -> Table:
    """Per market of a `markets_report`: the best bid and ask, the open orders and the fills
    with their volume, in human units (prices in quote per whole base)."""
    table = Table(title="markets")
    for column in ("market", "best bid", "best ask", "open bids", "open asks", "fills", "volume"):
        table.add_column(column, justify="left" if column == "market" else "right")

    def best(side: list[dict[str, Any]]) -> str:
        return format_e9(int(side[0]["price"])) if side else "-"

    for symbol, market in markets.items():
        volume = sum(int(fill["qty"]) for fill in market["fills"])
        table.add_row(
            symbol, best(market["bids"]), best(market["asks"]), str(len(market["bids"])), str(len(market["asks"])),
            str(len(market["fills"])), f"{format_e9(volume)} {market['base']}",
        )
    return table
