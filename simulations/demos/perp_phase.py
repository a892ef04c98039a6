"""The perpetual market's phase of a demo, shared by ``parley demo`` (beside its spot market) and
``parley demo --perps``: ETH-PERP on USDC, run through the nodes' local APIs by the reference
bots, on whichever nodes the demo gives the roles (`PerpRoles`).

1. the oracle feeder (`OracleFeeder`, ``parley bot oracle``'s code) posts 3,000; the maker,
   ``parley bot maker``'s ccxt strategy (`MakerBot` on the swap ``ETH/USDC:USDC``, unchanged),
   quotes a post-only ladder a little above it;
2. the trader keeps 1,000 USDC (it sends the rest of its free USDC to the maker) and opens a long
   of 2.5 ETH on it (7.5x);
3. funding runs: the book's bids above the oracle make longs pay;
4. a price shock (2,640: -12%) trips the circuit breaker: the trader's next order is refused
   ``market_halted``, and so is a liquidation, until the halt ends;
5. the trader, now below maintenance margin, is liquidated by the liquidator bot
   (`LiquidatorBot`): the premium is split between the liquidator and the insurance pool, to the
   base unit.

`views_agree` then asks every node the same things (positions, funding index, every account's
margin), which must be equal once they hold the same certified state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
from rich.console import Console

from channel.api.ccxt import install
from channel.api.client import ApiError, Client, Endpoint
from channel.runtime.genesis_file import DEMO_MARKETS
from crdt.markets.config import MarketKind, PerpParams
from crdt.types import Symbol
from crdt.units import format_e9
from simulations.cluster import USDC_UNIT, wait_until
from simulations.maker_bot import MakerBot
from simulations.perp_bots import LiquidatorBot, OracleFeeder

E9 = 10**9
SYMBOL = "ETH-PERP"
SWAP = "ETH/USDC:USDC"  # the market as ccxt names a linear swap
PERP = replace(
    DEMO_MARKETS[0], symbol=SYMBOL, kind=MarketKind.PERP, base=Symbol("ETH"),
    perp=PerpParams(
        imr=100_000_000, mmr=50_000_000, max_notional_at_open=(10**7 * E9,) * 10, max_funding_rate=5_000_000,
        funding_interval=5_000, insurance_pool_ratio=300_000_000, circuit_band=100_000_000, halt_checkpoints=3,
        mtb_long=50_000_000, mtb_short=50_000_000, oracle_staleness=600_000, impact_notional=1000 * E9,
    ),
)  # 10% initial margin, 5% maintenance, funding every 5 s of checkpoint time, a 10% circuit band
TRADER_COLLATERAL = 1000 * E9  # USDC the trader keeps for its long
PRICE, SHOCK = 3000 * E9, 2640 * E9


@dataclass(frozen=True, slots=True)
class PerpRoles:
    """Which node runs each part of the phase."""

    oracle: int
    maker: int
    trader: int
    liquidator: int


def _order(client: Client, side: str, qty: Decimal, price: Decimal, tif: str = "gtc") -> dict[str, Any]:
    return dict(client.place_order(SYMBOL, side, int(qty * E9), int(price * E9), tif=tif))


def _feed(oracle: Client, price: int) -> bool:
    """Post the price again and pause: a feeder keeps posting, and so keeps checkpoints coming."""
    oracle.post_price(SYMBOL, price)
    time.sleep(0.4)
    return True


def _mark(endpoint: Endpoint) -> dict[str, Any]:
    with Client(endpoint) as client:
        return dict(next(row for row in client.mark_prices() if row["market"] == SYMBOL))


def _fixed_at(endpoints: Sequence[Endpoint], price: int) -> bool:
    return all(_mark(endpoint)["price"] == str(price) for endpoint in endpoints)


def run_perp_phase(console: Console, clients: Sequence[Client], endpoints: Sequence[Endpoint], accounts: Sequence[str],
                   maker_dir: Path, roles: PerpRoles, step: Callable[[int], str]) -> dict[str, Any]:
    """Steps 1 to 5: the oracle's price, the maker's ladder, the trader's long, funding, the shock
    and the halt, the liquidation. `step(i)` labels the line of step i; `maker_dir` is the maker
    node's data directory (the ccxt class's apiKey)."""
    oracle, trader, liquidator = clients[roles.oracle], clients[roles.trader], clients[roles.liquidator]
    feeder = OracleFeeder(oracle, SYMBOL, iter([Decimal(PRICE) / E9, Decimal(SHOCK) / E9]))
    feeder.step()
    wait_until(lambda: _fixed_at(endpoints, PRICE), 60, "the first oracle price")
    console.print(f"{step(1)} the oracle (node {roles.oracle}) posted 3,000 on {SYMBOL}; a checkpoint fixed it on "
                  "every node")
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
        book = trader.order_book(SYMBOL, 10)
        return len(book["bids"]) == len(book["asks"]) == 3

    wait_until(ladder_seen, 60, "the maker's ladder on the trader's node")
    account = accounts[roles.trader]
    free = int(trader.balances(account)[account]["USDC"]["free"])
    away = (free - TRADER_COLLATERAL) // USDC_UNIT * USDC_UNIT  # whole USDC units, as the API takes them
    if away > 0:
        trader.transfer(accounts[roles.maker], "USDC", away)
    opened = _order(trader, "buy", Decimal("2.5"), Decimal(3010), "ioc")
    position = trader.positions(account)[0]
    console.print(f"{step(2)} the trader (node {roles.trader}) sent {format_e9(away)} USDC to the maker and, left "
                  f"with {format_e9(free - away)}, bought 2.5 ETH ({opened['order']['status']}) from the ccxt "
                  f"MakerBot's ladder (node {roles.maker}): entry {format_e9(int(position['entry_price']))}, "
                  f"liquidation price {format_e9(int(position['liquidation_price']))}")

    # an idle channel makes no checkpoints: the oracle feeds its price every half second, as a feeder does.
    # A funding interval whose checkpoints all came before the ladder was in a cut sampled an empty
    # book (a zero rate); wait for the first that sampled the ladder.
    def sampled_the_ladder() -> dict[str, Any] | None:
        if not _feed(oracle, PRICE):
            return None
        return next((f for f in trader.funding_history(SYMBOL) if int(f["rate"]) != 0), None)

    funding = wait_until(sampled_the_ladder, 60, "a funding interval")
    console.print(f"{step(3)} funding at checkpoint {funding['version']}: rate "
                  f"{Decimal(int(funding['rate'])) / 10**7}% (the bids above the oracle: longs pay), "
                  f"index {format_e9(int(funding['index']))} USDC a whole ETH")
    feeder.step()  # the shock
    wait_until(lambda: _fixed_at(endpoints, SHOCK), 60, "the shocked oracle price")
    halted = bool(_mark(endpoints[roles.trader])["halted"])
    refused: list[str] = []
    for attempt in (lambda: _order(trader, "buy", Decimal("0.1"), Decimal(2640)),
                    lambda: liquidator.liquidate(account, SYMBOL, int(2.5 * E9))):
        try:
            attempt()
        except ApiError as exc:
            refused.append(str(exc.data.get("reason")) if isinstance(exc.data, dict) else exc.message)
    console.print(f"{step(4)} the oracle posted 2,640 (-12%): the circuit breaker "
                  f"{'halts' if halted else '[red]does NOT halt[/red]'} {SYMBOL}; refused while halted: "
                  f"{', '.join(refused) or 'nothing'} (an order, a liquidation)")
    health = trader.account(account)["collateral"]["USDC"]["health"]
    bot = LiquidatorBot(liquidator)
    wait_until(lambda: _feed(oracle, SHOCK) and not _mark(endpoints[roles.liquidator])["halted"], 60,
               "the halt to end")
    try:
        wait_until(bot.step, 60, "the liquidation")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; the liquidator's refusals: {bot.refused or 'none'}, the trader's "
                           f"margin: {liquidator.account(account)['collateral']}") from exc
    record = bot.taken[0]
    qty = int(record["qty"])
    premium = int(record["mark_price"]) * qty // E9 - int(record["price"]) * qty // E9
    insured = int(record["insurance"])
    console.print(f"{step(5)} the trader ({health}) was liquidated by the liquidator bot (node {roles.liquidator}): "
                  f"{format_e9(qty)} ETH closed at {format_e9(int(record['price']))} against the oracle's "
                  f"{format_e9(int(record['mark_price']))}; of the {format_e9(premium)} USDC premium, "
                  f"{format_e9(insured)} to insurance and {format_e9(premium - insured)} to the liquidator, "
                  f"who took it at {format_e9(int(record['taken_at']))}")
    return {"halted": halted, "refused": refused, "liquidation": record, "premium": premium, "insurance": insured,
            "funding": funding}


View = tuple[Any, Any, list[dict[str, Any]]]


def perp_view(client: Client, accounts: Sequence[str]) -> View:
    """What a node says of the market: positions, funding index, every account's margin."""
    mark = next(row for row in client.mark_prices() if row["market"] == SYMBOL)
    return client.positions(), mark["funding_index"], [client.account(a)["collateral"]["USDC"] for a in accounts]


def views_agree(clients: Sequence[Client], accounts: Sequence[str]) -> tuple[list[View], bool]:
    """Every node's view, and whether they are all the same (ask once every node holds the same
    certified state, and nothing more is being submitted)."""
    views = [perp_view(client, accounts) for client in clients]
    return views, all(view == views[0] for view in views)
