"""Random order flow for the spot book's tests, and plain views to compare a replica with the
reference.

A flow is a list of `Intent`s (author index, kind, body; a cancel names an earlier intent, whose
op id it gets once that one is signed). `intents` draws one; `signed_flows` signs it as a hash
graph with real concurrency (each author chains on its own previous operation and on the heads
it has seen, as `tests.crdt.crdt_support.workloads` does). Nothing here needs `crdt.markets`
until `spot_genesis` is called, so the reference's own tests use the same strategies.

Accounts: 0 trader, 1 market maker, 2 trader, 3 liquidator (all may trade), 4 observer, 5 oracle
(may move funds, not trade). Markets: WETH/USDC and WBTC/USDC, fees that round, prices a few
ticks around a mid so that orders cross and rest, sizes that run accounts out of funds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from crdt.genesis import Genesis, InitialBalance, Role, Token
from crdt.hashing import keccak256
from crdt.ops import SignedOp, sign_op
from tests.crdt.crdt_support import ADDR, KEYS, closure, heads_of, heights
from tests.crdt.markets.reference import E9, MarketParams, ReferenceBook

USDC = Token("USDC", bytes.fromhex("a0" * 20), 6)
WETH = Token("WETH", bytes.fromhex("c0" * 20), 18)
WBTC = Token("WBTC", bytes.fromhex("b0" * 20), 8)
TOKENS = (USDC, WETH, WBTC)
SYMBOLS = tuple(token.symbol for token in TOKENS)
ROLES = (Role.TRADER, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR, Role.OBSERVER, Role.ORACLE)
N_ACCOUNTS = len(ROLES)
REF_ACCOUNTS = tuple(ADDR[:N_ACCOUNTS])

WETH_USDC = MarketParams(
    symbol="WETH/USDC", base="WETH", quote="USDC", tick_size=10**8, step_size=10**7, min_qty=10**7,
    max_qty=4 * E9, min_price=1000 * E9, max_price=3000 * E9, maker_fee=150_001, taker_fee=450_003,
)
WBTC_USDC = MarketParams(
    symbol="WBTC/USDC", base="WBTC", quote="USDC", tick_size=E9, step_size=10**5, min_qty=10**5,
    max_qty=10**8, min_price=30_000 * E9, max_price=90_000 * E9, maker_fee=0, taker_fee=700_001,
)
MARKET_PARAMS = (WETH_USDC, WBTC_USDC)
MIDS = {WETH_USDC.symbol: 2000_300_000_000, WBTC_USDC.symbol: 61_003 * E9}

INITIAL = (
    *[
        (ADDR[i], symbol, amount)
        for i in range(4)
        for symbol, amount in (("USDC", 5000 * E9 + 777), ("WETH", 2 * E9 + 5), ("WBTC", 5 * 10**7 + 3))
    ],
    (ADDR[5], "USDC", 100 * E9),
)


def reference_for(markets: Sequence[MarketParams] = MARKET_PARAMS) -> ReferenceBook:
    return ReferenceBook(dict(zip(REF_ACCOUNTS, (str(r) for r in ROLES), strict=True)), SYMBOLS, INITIAL, markets)


def to_market(params: MarketParams) -> Any:
    """The `crdt.markets.Market` of the same parameters."""
    from crdt.markets import Market, MarketKind

    return Market(
        symbol=params.symbol, kind=MarketKind.SPOT, base=params.base, quote=params.quote,
        tick_size=params.tick_size, step_size=params.step_size, min_qty=params.min_qty, max_qty=params.max_qty,
        min_price=params.min_price, max_price=params.max_price, maker_fee=params.maker_fee,
        taker_fee=params.taker_fee,
    )


def make_spot_genesis(
    markets: Sequence[MarketParams] = MARKET_PARAMS, initial: Iterable[tuple[bytes, str, int]] = INITIAL
) -> Genesis:
    from crdt import testing

    balances = [InitialBalance(account, token, amount) for account, token, amount in initial]
    return testing.make_genesis(  # type: ignore[call-arg]
        KEYS[:N_ACCOUNTS], TOKENS, roles=list(ROLES), initial=balances, markets=[to_market(m) for m in markets]
    )


@functools.cache
def spot_genesis() -> Genesis:
    return make_spot_genesis()


_SIGNED: dict[tuple[Any, ...], SignedOp] = {}


def sign_as(
    genesis: Genesis, author: int, seq: int, parents: Iterable[bytes], kind: str, body: Mapping[str, Any]
) -> SignedOp:
    """sign_op with a cache (signing is deterministic), so shrinking stays fast."""
    ordered = tuple(sorted(set(parents)))
    key = (genesis.channel_id, author, seq, ordered, kind, repr(sorted(body.items())))
    op = _SIGNED.get(key)
    if op is None:
        op = _SIGNED[key] = sign_op(genesis.context(), KEYS[author], seq, ordered, kind, body)
    return op


# -- intents -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    author: int
    kind: str
    body: Mapping[str, Any]
    target: int | None = None  # order.cancel: the index of the intent whose op is the order

    def resolve(self, ids: Sequence[bytes]) -> dict[str, Any]:
        """The body, with the op id of its target order once that is known."""
        if self.target is None:
            return dict(self.body)
        return {**self.body, "order": ids[self.target]}


FAULTS = (
    "tick", "step", "price_low", "price_high", "qty_zero", "qty_high", "market", "side", "type", "tif",
    "market_gtc", "reduce_only", "missing_key", "extra_key", "price_text", "reduce_only_int", "overdraft",
)


@st.composite
def place_bodies(draw: st.DrawFn, faults: bool = True) -> dict[str, Any]:
    market = draw(st.sampled_from(MARKET_PARAMS))
    side = draw(st.sampled_from(["buy", "sell"]))
    style = draw(st.sampled_from(["gtc"] * 5 + ["ioc", "ioc", "market", "post_only", "post_only"]))
    type_, tif = ("market", "ioc") if style == "market" else ("limit", style)
    tick, step = market.tick_size, market.step_size
    offset = draw(st.integers(-3, 5)) * (1 if side == "buy" else -1)  # leaning into the other side
    if style == "market":  # the worst price it accepts, a bound around the mid
        offset = 12 if side == "buy" else -12
    price = MIDS[market.symbol] + offset * tick
    qty = draw(st.sampled_from([1, 1, 2, 3, 5, 10, 25, 60, 150])) * step
    body: dict[str, Any] = {
        "market": market.symbol, "side": side, "type": type_, "tif": tif, "price": price, "qty": qty,
        "reduce_only": False, "expires": draw(st.sampled_from([0] * 6 + [500, 1000, 3000])),
    }
    fault = draw(st.sampled_from([None] * 50 + list(FAULTS))) if faults else None
    changes: dict[str | None, dict[str, Any]] = {
        None: {},
        "tick": {"price": price + tick // 2},
        "step": {"qty": qty + step // 2},
        "price_low": {"price": market.min_price - tick},
        "price_high": {"price": market.max_price + tick},
        "qty_zero": {"qty": 0},
        "qty_high": {"qty": market.max_qty + step},
        "market": {"market": "DOGE/USDC"},
        "side": {"side": "hold"},
        "type": {"type": "stop"},
        "tif": {"tif": "fok"},
        "market_gtc": {"type": "market", "tif": "gtc"},
        "reduce_only": {"reduce_only": True},
        "extra_key": {"leverage": 1},
        "price_text": {"price": str(price)},
        "reduce_only_int": {"reduce_only": 0},
        "overdraft": {"qty": market.max_qty},
    }
    if fault == "missing_key":
        del body["expires"]
    else:
        body.update(changes[fault])
    return body


def transfer_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda to, token, amount: {"to": ADDR[to], "token": token, "amount": amount},
        st.integers(0, N_ACCOUNTS - 1),
        st.sampled_from(SYMBOLS),
        st.sampled_from([1, 10**7 + 1, E9, 100 * E9 + 3, 3000 * E9]),
    )


AUTHORS = st.sampled_from([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])
TRADERS = (0, 1, 2, 3)


@st.composite
def intents(draw: st.DrawFn, max_intents: int = 30, min_intents: int = 1) -> list[Intent]:
    """Order flow: placements (valid and faulty), cancels of one's own orders, of others' and of
    orders that do not exist, cancel_all, transfers. A cancel targets an earlier placement."""
    flow: list[Intent] = []
    places: list[tuple[int, int]] = []  # (index, author)
    for _ in range(draw(st.integers(min_intents, max_intents))):
        author = draw(AUTHORS)
        what = draw(st.sampled_from(["place"] * 10 + ["cancel_own"] * 2 + ["cancel_any", "cancel_bogus",
                                     "cancel_all", "transfer", "transfer"]))
        own = [index for index, who in places if who == author]
        if what.startswith("cancel_") and what != "cancel_all":
            author = author if author in TRADERS else draw(st.sampled_from(TRADERS))  # cancels: traders only
        if what == "cancel_own" and own:
            flow.append(Intent(author, "order.cancel", {}, draw(st.sampled_from(own))))
        elif what == "cancel_any" and places:
            flow.append(Intent(author, "order.cancel", {}, draw(st.sampled_from(places))[0]))
        elif what == "cancel_bogus":
            flow.append(Intent(author, "order.cancel", {"order": keccak256(b"no such order %d" % len(flow))}))
        elif what == "cancel_all":
            market = draw(st.sampled_from([*MIDS, *MIDS, "DOGE/USDC"]))
            flow.append(Intent(author, "order.cancel_all", {"market": market}))
        elif what == "transfer":
            flow.append(Intent(author, "transfer", draw(transfer_bodies())))
        else:
            places.append((len(flow), author))
            flow.append(Intent(author, "order.place", draw(place_bodies())))
    return flow


def synthetic_ids(n: int) -> list[bytes]:
    """Op ids for the reference alone, increasing in creation order."""
    return [(i + 1).to_bytes(32, "big") for i in range(n)]


# -- signed flows ------------------------------------------------------------------------------


@dataclass
class Flow:
    ops: list[SignedOp]  # creation order: every prefix is causally closed
    intents: list[Intent]
    checkpoint: tuple[int, int] | None = None  # (prefix length, time) of one certified cut
    bodies: list[dict[str, Any]] = field(default_factory=list)


@st.composite
def signed_flows(draw: st.DrawFn, max_intents: int = 24) -> Flow:
    """A flow signed as a hash graph: each author chains on its previous operation and on the
    heads it has learnt (a drawn gossip step merges another author's knowledge into its own)."""
    genesis = spot_genesis()
    flow = draw(intents(max_intents))
    ops: list[SignedOp] = []
    bodies: list[dict[str, Any]] = []
    by_id: dict[bytes, SignedOp] = {}
    known: list[set[bytes]] = [set() for _ in range(N_ACCOUNTS)]
    seq = [0] * N_ACCOUNTS
    for intent in flow:
        author = intent.author
        if ops and draw(st.booleans()):
            known[author] |= known[draw(st.integers(0, N_ACCOUNTS - 1))]
        if intent.target is not None and draw(st.booleans()):
            known[author] |= closure(by_id, [ops[intent.target].op_id])  # it saw the order it cancels
        seq[author] += 1
        body = intent.resolve([op.op_id for op in ops])
        op = sign_as(genesis, author, seq[author], heads_of(by_id, known[author]), intent.kind, body)
        ops.append(op)
        bodies.append(body)
        by_id[op.op_id] = op
        known[author].add(op.op_id)
    checkpoint = None
    if draw(st.booleans()):
        checkpoint = (draw(st.integers(0, len(ops))), draw(st.sampled_from([0, 499, 500, 1000, 2999])))
    return Flow(ops, flow, checkpoint, bodies)


def replay_order(ops: Sequence[SignedOp], certified: Iterable[bytes] = ()) -> tuple[list[SignedOp], list[SignedOp]]:
    """DESIGN.md's order, computed here again: the certified closure by (height, op id), then the
    rest by the same key. Returns (certified part, tentative part)."""
    height = heights(ops)
    done = set(certified)
    key = lambda op: (height[op.op_id], op.op_id)  # noqa: E731
    first = sorted((op for op in ops if op.op_id in done), key=key)
    return first, sorted((op for op in ops if op.op_id not in done), key=key)


def reference_replay(
    ops: Sequence[SignedOp], certified: Iterable[bytes] = (), time: int | None = None
) -> ReferenceBook:
    """The reference fed in replay order, with the checkpoint's expiry between the two parts."""
    book = reference_for()
    first, rest = replay_order(ops, certified)
    for op in first:
        book.apply(op.author, op.kind, op.body, op.op_id)
    if time is not None:
        book.close_epoch(time)
    for op in rest:
        book.apply(op.author, op.kind, op.body, op.op_id)
    return book


# -- views: the same plain values from a replica and from the reference -------------------------


def order_row(order: Any) -> tuple[Any, ...]:
    """What must agree about an open order (not `placed`, a counter each side numbers itself)."""
    return (bytes(order.order_id), bytes(order.owner), order.market, str(order.side), order.price,
            order.remaining, order.hold)


def fill_row(fill: Any) -> tuple[Any, ...]:
    return (bytes(fill.taker_order), bytes(fill.maker_order), bytes(fill.taker), bytes(fill.maker), fill.market,
            fill.price, fill.qty, fill.taker_fee, fill.maker_fee)


@dataclass(frozen=True)
class View:
    books: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]  # symbol -> (bids, asks)
    balances: dict[tuple[bytes, str], tuple[int, int]]  # (account, token) -> (free, held)
    fees: dict[str, int]
    fills: list[tuple[Any, ...]]


def replica_view(replica: Any, markets: Sequence[MarketParams] = MARKET_PARAMS,
                 accounts: Sequence[bytes] = REF_ACCOUNTS, tokens: Sequence[str] = SYMBOLS) -> View:
    ledger = replica.ledger
    books = {}
    for market in markets:
        book = ledger.book(market.symbol)
        books[market.symbol] = ([order_row(o) for o in book.bids()], [order_row(o) for o in book.asks()])
    return View(
        books,
        {(a, t): (ledger.balance(a, t), ledger.held(a, t)) for a in accounts for t in tokens},
        {t: ledger.fees(t) for t in tokens},
        [fill_row(f) for f in replica.fills()],
    )


def reference_view(book: ReferenceBook, accounts: Sequence[bytes] = REF_ACCOUNTS) -> View:
    return View(
        {s: ([order_row(o) for o in book.bids[s]], [order_row(o) for o in book.asks[s]]) for s in book.markets},
        {(a, t): (book.balance(a, t), book.held(a, t)) for a in accounts for t in book.tokens},
        {t: book.fees(t) for t in book.tokens},
        [fill_row(f) for f in book.fills],
    )
