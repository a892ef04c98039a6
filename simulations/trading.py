"""Order flow for the demos, through the nodes' local APIs, and what each node says of a market.

`run_order_flow` trades one spot market while other traffic runs:

- two market makers (nodes 0 and 1) quote a ladder of `Flow.levels` prices on each side around
  a moving mid, a random walk drawn from `random.Random(seed)` that market maker 0 steps once a
  round. Each round cancels the previous ladder (every other round one order at a time, else
  with one ``order.cancel_all``) and places a new one, its levels concurrently; the last ladder
  stays on the book, so its holds are paid back at settlement;
- takers (the other nodes) send limit orders (gtc, a few ticks either side of the mid: some
  cross, some rest) and market orders (an IOC whose price is the worst it accepts, a percent
  beyond the mid), all concurrently with the market makers.

Every order goes through ``parley_submit``, so a node refuses what its dry run would reject
(a cancel of an order that filled meanwhile, an order the account cannot fund) and the flow
counts the refusals by reason. The prices depend on the seed and on the order in which trio
runs the tasks, so two runs differ; what must not differ is what the nodes agree on.

`market_view` reads one node's book, its trades and a hash of its fills list; the nodes agree
on the fills when every node gives the same count and hash.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from rich.table import Table

from channel.api.client import ApiError, AsyncClient, Endpoint
from crdt.hashing import keccak256
from crdt.ledger import Reason
from crdt.markets.book import BUY, GTC, IOC, LIMIT, MARKET, SELL, Fill
from crdt.markets.book import SELF_TRADE as SELF_TRADE_REMOVED
from crdt.markets.config import E9, Market
from crdt.units import format_e9
from simulations.byzantine import SELF_TRADE, UNFUNDED

MAX_FILLS = 1000  # a trades read returns at most this many: the demos stay below it


@dataclass(frozen=True, slots=True)
class Flow:
    """The shape of the order flow. Prices and quantities are e9, distances in ticks."""

    mid: int = 2000 * E9
    rounds: int = 8
    levels: int = 4
    gap: int = 50  # ticks between two levels of a ladder
    walk: int = 120  # ticks the mid moves at most per round
    size: int = 50 * 10**6  # base of a ladder's first level (0.05 ETH); level i quotes (i + 1) times it
    taker_orders: int = 24  # per taker node
    market_share: float = 0.4  # of the taker orders, market orders
    pause: float = 0.1  # seconds between two rounds, and on average between two taker orders
    seed: int = 0

    def requests(self, makers: int, takers: int) -> int:
        """At most how many requests the flow sends (a cancel per open order every other round,
        one cancel_all on the others)."""
        cancels = sum(2 * self.levels if round_ % 2 else 1 for round_ in range(1, self.rounds))
        return makers * (self.rounds * 2 * self.levels + cancels) + takers * self.taker_orders


@dataclass
class FlowResult:
    """What the order flow did, as the APIs answered it."""

    placed: Counter[str] = field(default_factory=Counter)  # "ladder", "limit", "market"
    cancelled: int = 0  # order.cancel and order.cancel_all accepted
    refused: Counter[str] = field(default_factory=Counter)  # the nodes' reasons
    orders: dict[int, list[str]] = field(default_factory=dict)  # node -> order ids it placed
    last: dict[int, tuple[int, str]] = field(default_factory=dict)  # node -> (seq, op id) of its newest
    mids: list[int] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def submitted(self) -> int:
        """The requests the nodes accepted (signed)."""
        return sum(self.placed.values()) + self.cancelled

    @property
    def requests(self) -> int:
        return self.submitted + sum(self.refused.values())

    def summary(self) -> str:
        refused = ", ".join(f"{count} {reason}" for reason, count in sorted(self.refused.items())) or "none"
        return (f"{self.placed['ladder']} ladder quotes, {self.cancelled} cancels, {self.placed['limit']} limit and "
                f"{self.placed['market']} market orders from the takers; the mid walked "
                f"{format_e9(min(self.mids))} to {format_e9(max(self.mids))}; refused by the dry run: {refused}")


class _Mid:
    def __init__(self, flow: Flow, tick: int) -> None:
        self.rng = random.Random(flow.seed)
        self.flow = flow
        self.tick = tick
        self.value = flow.mid - flow.mid % tick

    def step(self) -> int:
        self.value += self.rng.randint(-self.flow.walk, self.flow.walk) * self.tick
        return self.value


def order_body(market: str, side: str, order_type: str, tif: str, price: int, qty: int) -> dict[str, Any]:
    """An ``order.place`` body in its JSON form (e9 integers as decimal strings)."""
    return {"market": market, "side": side, "type": order_type, "tif": tif, "price": str(price), "qty": str(qty),
            "reduce_only": False, "expires": "0"}


async def run_order_flow(
    endpoints: list[Endpoint], market: Market, flow: Flow = Flow(), makers: tuple[int, ...] = (0, 1),
    on_submit: Callable[[], object] | None = None,
) -> FlowResult:
    """Run the order flow: `makers` quote, every other node takes. `on_submit()` is called after
    each request (a progress bar's advance)."""
    result = FlowResult()
    mid = _Mid(flow, market.tick_size)
    result.mids.append(mid.value)
    rng = random.Random(flow.seed + 1)
    tick, step = market.tick_size, market.step_size

    async def send(node: int, client: AsyncClient, kind: str, body: dict[str, Any], what: str) -> str | None:
        try:
            receipt = await client.submit(kind, body)
        except ApiError as error:
            reason = error.data.get("reason") if isinstance(error.data, dict) else None
            result.refused[str(reason or error.message)] += 1
            return None
        finally:
            if on_submit is not None:
                on_submit()
        if kind == "order.place":
            result.placed[what] += 1
            result.orders.setdefault(node, []).append(receipt["op_id"])
        else:
            result.cancelled += 1
        result.last[node] = max(result.last.get(node, (0, "")), (receipt["seq"], receipt["op_id"]))
        return str(receipt["op_id"])

    async def collect(into: list[str | None], request: Awaitable[str | None]) -> None:
        into.append(await request)

    async def quote(node: int, client: AsyncClient) -> None:
        offset = (makers.index(node) % 2) * flow.gap // 2  # the second one quotes between the first one's levels
        previous: list[str] = []
        for round_ in range(flow.rounds):
            if node == makers[0] and round_:
                result.mids.append(mid.step())
            if previous and round_ % 2:
                async with trio.open_nursery() as nursery:
                    for order_id in previous:
                        nursery.start_soon(send, node, client, "order.cancel", {"order": order_id}, "cancel")
            elif previous:
                await send(node, client, "order.cancel_all", {"market": market.symbol}, "cancel")
            placed: list[str | None] = []
            async with trio.open_nursery() as nursery:
                for i in range(flow.levels):
                    distance = (flow.gap // 2 + offset + i * flow.gap) * tick
                    for side, price in ((BUY, mid.value - distance), (SELL, mid.value + distance)):
                        body = order_body(market.symbol, side, LIMIT, GTC, price, flow.size * (i + 1))
                        nursery.start_soon(collect, placed, send(node, client, "order.place", body, "ladder"))
            previous = [order_id for order_id in placed if order_id is not None]
            await trio.sleep(flow.pause)

    async def take(node: int, client: AsyncClient) -> None:
        for i in range(flow.taker_orders):
            side = rng.choice((BUY, SELL))
            sign = 1 if side == BUY else -1
            qty = rng.randint(1, 20) * 10 * step
            if i == 0:  # a passive limit order first, three gaps behind the mid: it rests (every run has a
                # resting taker order, which a Byzantine taker forges its self-cross on)
                price = mid.value - sign * 3 * flow.gap * tick
                await send(node, client, "order.place", order_body(market.symbol, side, LIMIT, GTC, price, qty),
                           "limit")
            elif rng.random() < flow.market_share:  # the worst price it accepts: a percent past the mid
                worst = mid.value + sign * (mid.value // 100 // tick) * tick
                await send(node, client, "order.place", order_body(market.symbol, side, MARKET, IOC, worst, qty),
                           "market")
            else:
                price = mid.value + rng.randint(-2 * flow.gap, 2 * flow.gap) * tick
                await send(node, client, "order.place", order_body(market.symbol, side, LIMIT, GTC, price, qty),
                           "limit")
            await trio.sleep(flow.pause * rng.random() * 2)

    began = time.perf_counter()
    clients = [AsyncClient(endpoint) for endpoint in endpoints]
    try:
        async with trio.open_nursery() as nursery:
            for node, client in enumerate(clients):
                nursery.start_soon(quote if node in makers else take, node, client)
    finally:
        for client in clients:
            await client.aclose()
    result.elapsed = time.perf_counter() - began
    return result


@dataclass(frozen=True, slots=True)
class MarketView:
    """One node's view of a market: the top of its book, its last trades, its fills, and what
    replay made of a Byzantine node's forged orders."""

    bids: list[tuple[int, int]]  # (price, qty) per level, best first
    asks: list[tuple[int, int]]
    last_trades: list[dict[str, Any]]  # newest last, as parley_trades gives them
    fills: int
    fills_hash: str  # over every fill's id, price, quantity and fees, in replay order
    self_fills: int  # fills whose taker is their maker: never any
    unfunded_rejected: int  # forged unfunded orders rejected with insufficient_balance
    unfunded_other: Counter[str]  # the statuses of the others (empty when replay rejected them all)
    crossed: Counter[str]  # the status of each resting order a forged cross aimed at (self_trade: removed)


def fills_hash(trades: Sequence[dict[str, Any]]) -> str:
    """A hash of a fills list as ``parley_trades`` gives it: what every honest node must compute
    identically (whether a fill is final yet is left out: that depends on when a node was
    asked). `replica_fills_hash` gives the same hash from a replica's fills."""
    rows = [[t["fill_id"], t["price"], t["qty"], t["taker_fee"], t["maker_fee"]] for t in trades]
    return "0x" + keccak256(json.dumps(rows, separators=(",", ":")).encode()).hex()


def replica_fills_hash(fills: Sequence[Fill]) -> str:
    """`fills_hash` of a replica's fills (`Ledger.fills`), in replay order."""
    return fills_hash([
        {"fill_id": "0x" + f.fill_id.hex(), "price": str(f.price), "qty": str(f.qty),
         "taker_fee": str(f.taker_fee), "maker_fee": str(f.maker_fee)}
        for f in fills
    ])


async def market_view(endpoint: Endpoint, market: str, journal: Sequence[dict[str, Any]] = (), depth: int = 3,
                      last: int = 5) -> MarketView:
    """One node's view of `market`; `journal` lists a Byzantine node's forged orders
    (`simulations.byzantine.read_journal`)."""
    async with AsyncClient(endpoint) as client:
        book = await client.order_book(market, depth)
        trades: list[dict[str, Any]] = await client.trades(market, MAX_FILLS)
        if len(trades) >= MAX_FILLS:
            raise ValueError(f"{market} has {MAX_FILLS} fills or more: a trades read no longer returns all of them")
        unfunded: Counter[str] = Counter()
        for entry in journal:
            if entry["fault"] == UNFUNDED:
                unfunded[(await client.status(entry["op_id"]))["status"]] += 1
        rejected = unfunded.pop(f"rejected:{Reason.INSUFFICIENT_BALANCE}", 0)
        crossed: Counter[str] = Counter()
        for entry in journal:
            if entry["fault"] == SELF_TRADE:  # the order and its twins: replay kept one
                statuses = [str((await client.order(order_id) or {}).get("status", "unknown"))
                            for order_id in entry["resting"]]
                crossed.update(status for status in statuses if status != f"rejected:{Reason.EQUIVOCATION}")
    return MarketView(
        bids=[(int(price), int(qty)) for price, qty in book["bids"]],
        asks=[(int(price), int(qty)) for price, qty in book["asks"]],
        last_trades=trades[-last:],
        fills=len(trades),
        fills_hash=fills_hash(trades),
        self_fills=sum(1 for t in trades if t["taker"] == t["maker"]),
        unfunded_rejected=rejected,
        unfunded_other=unfunded,
        crossed=crossed,
    )


async def market_views(endpoints: Sequence[Endpoint], market: str, journal: Sequence[dict[str, Any]] = ()
                       ) -> list[MarketView]:
    """`market_view` of every node, asked at once."""
    views: dict[int, MarketView] = {}

    async def ask(index: int, endpoint: Endpoint) -> None:
        views[index] = await market_view(endpoint, market, journal)

    async with trio.open_nursery() as nursery:
        for index, endpoint in enumerate(endpoints):
            nursery.start_soon(ask, index, endpoint)
    return [views[index] for index in range(len(endpoints))]


@dataclass(frozen=True, slots=True)
class TradingCheck:
    """What the nodes' views of a market say together."""

    fills: int
    agree: bool  # every node has the same fills (count and hash)
    unfunded: int  # forged unfunded orders
    unfunded_rejected: int  # summed over the nodes: `unfunded` times the nodes when all rejected them
    unfunded_other: Counter[str]  # what the rest were, summed over the nodes (empty when all were rejected)
    self_trades: int  # forged self-crossing orders
    self_removed: int  # resting orders removed as self-trades (on the first node)
    crossed: Counter[str]  # what had become of the orders those aimed at (on the first node)
    self_fills: int  # summed over the nodes: 0


def check_views(views: list[MarketView], journal: Sequence[dict[str, Any]]) -> TradingCheck:
    return TradingCheck(
        fills=views[0].fills,
        agree=len({(view.fills, view.fills_hash) for view in views}) == 1,
        unfunded=sum(1 for entry in journal if entry["fault"] == UNFUNDED),
        unfunded_rejected=sum(view.unfunded_rejected for view in views),
        unfunded_other=sum((view.unfunded_other for view in views), Counter()),
        self_trades=sum(1 for entry in journal if entry["fault"] == SELF_TRADE),
        self_removed=views[0].crossed[SELF_TRADE_REMOVED],
        crossed=views[0].crossed,
        self_fills=sum(view.self_fills for view in views),
    )


# -- display -------------------------------------------------------------------------------------


def fixed(amount: int, places: int) -> str:
    """An e9 amount with exactly `places` decimals (truncated toward zero), without floats."""
    whole, fraction = divmod(abs(amount), E9)
    return ("-" if amount < 0 else "") + f"{whole}" + (f".{fraction:09d}"[: places + 1] if places else "")


def places_of(step: int) -> int:
    """How many decimals a multiple of `step` (e9) needs: 10**7 (0.01) -> 2."""
    places = 9
    while places and step % 10 == 0:
        step, places = step // 10, places - 1
    return places


def _short(hex_text: str) -> str:
    return hex_text[:10]


def book_table(market: Market, views: list[MarketView], notes: dict[int, str]) -> Table:
    """The top levels of every node's book side by side: asks above, bids below, qty@price."""
    price_places, qty_places = places_of(market.tick_size), places_of(market.step_size)
    table = Table(title=f"the {market.symbol} book on every node (qty@price)")
    table.add_column("")
    for index in range(len(views)):
        table.add_column(f"node {index}{notes.get(index, '')}", justify="right")
    depth = max(max(len(view.asks), len(view.bids)) for view in views)

    def cell(levels: list[tuple[int, int]], i: int) -> str:
        return f"{fixed(levels[i][1], qty_places)}@{fixed(levels[i][0], price_places)}" if i < len(levels) else ""

    for i in reversed(range(depth)):
        table.add_row(f"[red]ask {i + 1}[/red]", *(cell(view.asks, i) for view in views))
    for i in range(depth):
        table.add_row(f"[green]bid {i + 1}[/green]", *(cell(view.bids, i) for view in views))
    return table


def trades_table(market: Market, views: list[MarketView], notes: dict[int, str]) -> Table:
    """Every node's last trades side by side, newest first: B or S (the taker's side), qty@price."""
    price_places, qty_places = places_of(market.tick_size), places_of(market.step_size)
    table = Table(title=f"the last {market.symbol} trades on every node (the taker bought or sold, qty@price)")
    for index in range(len(views)):
        table.add_column(f"node {index}{notes.get(index, '')}", justify="right")

    def cell(trade: dict[str, Any]) -> str:
        side = "[green]B[/green]" if trade["side"] == BUY else "[red]S[/red]"
        return f"{side} {fixed(int(trade['qty']), qty_places)}@{fixed(int(trade['price']), price_places)}"

    columns = [[cell(trade) for trade in reversed(view.last_trades)] for view in views]
    for i in range(max(len(column) for column in columns)):
        table.add_row(*(column[i] if i < len(column) else "" for column in columns))
    return table


def agreement_table(views: list[MarketView], stats: list[dict[str, Any]], notes: dict[int, str]) -> Table:
    """Per node: its operations, rejections, fills (count and hash), state hash, payout root."""
    table = Table(title="what every node computed")
    for column in ("node", "ops", "rejected", "fills", "fills hash", "state hash", "payout root"):
        table.add_column(column, justify="right" if column in ("ops", "rejected", "fills") else "left")
    for index, (view, s) in enumerate(zip(views, stats, strict=True)):
        table.add_row(f"{index}{notes.get(index, '')}", str(s["operations"]), str(s["rejected"]), str(view.fills),
                      _short(view.fills_hash), _short(s["state_hash"]), _short(s["payout_root"]))
    return table


def forged_table(views: list[MarketView], check: TradingCheck, notes: dict[int, str]) -> Table:
    """Per node: what its replay made of the Byzantine node's forged orders."""
    table = Table(title="the Byzantine node's forged orders, as each node's replay judged them")
    for column in ("node", f"{check.unfunded} unfunded: rejected insufficient_balance",
                   f"{check.self_trades} self-crosses: resting order removed", "fills with itself"):
        table.add_column(column, justify="left" if column == "node" else "right")
    for index, view in enumerate(views):
        table.add_row(f"{index}{notes.get(index, '')}", str(view.unfunded_rejected),
                      str(view.crossed[SELF_TRADE_REMOVED]), str(view.self_fills))
    return table
