"""TRADING.md's invariants for spot markets, over random order flow in random delivery orders.

Skipped until `crdt.markets` exists. Each property checks the replica against plain
recomputations: the reference book (`reference.py`) fed the operations in the replay order
computed again here (`strategies.replay_order`), and laws read off the book before and after
each operation:

1. conservation, exact, after every operation (the ledger's check and a sum taken here);
2. no crossed book at rest, and each side in price-time order;
3. price-time priority of every fill; 4. every fill at the maker's price, within the taker's
limit; 5. post-only never takes, ioc and market never rest; 6. no fill between an account and
itself; 8. every delivery order (with duplicates and late operations) gives the same fills, state
hash and payout root; and the fills, open orders and balances equal the reference's.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import testing
from crdt.ops import SignedOp
from crdt.replica import Cut, Replica
from crdt.units import from_e9
from tests.crdt.crdt_support import closure, heads_of
from tests.crdt.markets.reference import E9, MarketParams
from tests.crdt.markets.strategies import (
    INITIAL,
    MARKET_PARAMS,
    REF_ACCOUNTS,
    SYMBOLS,
    TOKENS,
    Flow,
    make_spot_genesis,
    order_row,
    reference_for,
    reference_replay,
    reference_view,
    replay_order,
    replica_view,
    sign_as,
    signed_flows,
    spot_genesis,
)

markets = pytest.importorskip("crdt.markets")  # Book, Fill, RestingOrder
if "markets" not in inspect.signature(testing.make_genesis).parameters:  # crdt.markets alone is not enough
    pytest.skip("crdt.testing.make_genesis takes no markets yet", allow_module_level=True)

FEWER = settings(max_examples=max(10, settings.default.max_examples // 2))
DEPOSITS = {symbol: sum(amount for _, token, amount in INITIAL if token == symbol) for symbol in SYMBOLS}


def own_sum(replica: Replica) -> None:
    """Σ free + Σ held + fees == deposits per token (no lock or withdrawal in these flows)."""
    ledger = replica.ledger
    for token in SYMBOLS:
        total = sum(ledger.balance(a, token) + ledger.held(a, token) for a in REF_ACCOUNTS) + ledger.fees(token)
        assert total == DEPOSITS[token], token


def check_book_at_rest(replica: Replica) -> None:
    ledger = replica.ledger
    held: dict[tuple[bytes, str], int] = {}
    for market in MARKET_PARAMS:
        book = ledger.book(market.symbol)
        assert isinstance(book, markets.Book)
        bids, asks = book.bids(), book.asks()
        if bids and asks:
            assert bids[0].price < asks[0].price, "crossed book at rest"
        assert [(-o.price, o.placed) for o in bids] == sorted((-o.price, o.placed) for o in bids)
        assert [(o.price, o.placed) for o in asks] == sorted((o.price, o.placed) for o in asks)
        for order in [*bids, *asks]:
            assert isinstance(order, markets.RestingOrder)
            assert order.remaining > 0
            assert order.hold >= 0
            assert order.market == market.symbol
            assert ledger.order(order.order_id) == order
            token = market.quote if order.side == "buy" else market.base
            held[(order.owner, token)] = held.get((order.owner, token), 0) + order.hold
    for account in REF_ACCOUNTS:
        for token in SYMBOLS:
            assert ledger.held(account, token) == held.get((account, token), 0)
            assert ledger.balance(account, token) >= 0


def check_payouts(replica: Replica) -> None:
    """The balance leaves pay free + held (+ locked) of each token, never more than deposits."""
    ledger = replica.ledger
    for token, total in zip(TOKENS, replica.totals(), strict=True):
        owned = sum(ledger.balance(a, token.symbol) + ledger.held(a, token.symbol) for a in REF_ACCOUNTS)
        if token.decimals < 9:
            assert total == owned // 10 ** (9 - token.decimals)
        else:
            assert total == sum(from_e9(ledger.balance(a, token.symbol) + ledger.held(a, token.symbol),
                                        token.decimals) for a in REF_ACCOUNTS)
        assert total <= from_e9(DEPOSITS[token.symbol], token.decimals)


def check_fills_of(op: SignedOp, before: dict[str, tuple[list[markets.RestingOrder], list[markets.RestingOrder]]],
                   replica: Replica, new: list[markets.Fill]) -> None:
    """Priority, price and limit of the fills `op` made, against the book just before it."""
    ledger = replica.ledger
    if op.kind != "order.place" or replica.outcome[op.op_id] is not None:
        assert new == []
        return
    body = op.body
    market = body["market"]
    bids, asks = before[market]
    others = asks if body["side"] == "buy" else bids
    position = {o.order_id: i for i, o in enumerate(others)}
    last = -1
    for index, fill in enumerate(new):
        assert isinstance(fill, markets.Fill)
        assert fill.taker_order == op.op_id
        assert fill.taker == op.author
        assert fill.maker != fill.taker, "self-trade"
        assert fill.market == market
        assert fill.qty > 0
        assert fill.maker_order in position, "a fill against an order that was not resting"
        maker = others[position[fill.maker_order]]
        assert position[fill.maker_order] > last, "price-time priority"
        # every order it passed over left the book (self-trade removal or a maker that could not pay)
        for skipped in others[last + 1 : position[fill.maker_order]]:
            assert ledger.order(skipped.order_id) is None
            assert skipped.owner == op.author or skipped.side == "buy"
        last = position[fill.maker_order]
        assert fill.price == maker.price, "a fill is at the maker's price"
        if body["side"] == "buy":
            assert fill.price <= body["price"]
        else:
            assert fill.price >= body["price"]
        assert fill.qty <= maker.remaining
        if index < len(new) - 1:
            assert fill.qty == maker.remaining  # only the last maker can be left partly filled
            assert ledger.order(maker.order_id) is None
    if body["tif"] == "post_only":
        assert new == [], "post-only took"
    if body["tif"] == "ioc" or body["type"] == "market":
        assert ledger.order(op.op_id) is None, "an ioc or market order rests"
    assert sum(f.qty for f in new) <= body["qty"]


def snapshot(replica: Replica) -> dict[str, tuple[list[markets.RestingOrder], list[markets.RestingOrder]]]:
    return {m.symbol: (replica.ledger.book(m.symbol).bids(), replica.ledger.book(m.symbol).asks())
            for m in MARKET_PARAMS}


def outcomes(replica: Replica, ops: list[SignedOp]) -> dict[bytes, str | None]:
    return {op.op_id: None if replica.outcome[op.op_id] is None else str(replica.outcome[op.op_id]) for op in ops}


def fingerprint(replica: Replica, ops: list[SignedOp]) -> tuple[Any, ...]:
    return (replica.state_hash(), replica.payout_root(), replica_view(replica), outcomes(replica, ops))


@given(signed_flows())
def test_every_operation_keeps_the_laws_and_matches_the_reference(flow: Flow) -> None:
    """Operations in replay order, one at a time, each checked against the book before it."""
    genesis = spot_genesis()
    replica = Replica(genesis)
    reference = reference_for()
    _, ordered = replay_order(flow.ops)
    for op in ordered:
        before = snapshot(replica)
        count = len(replica.fills())
        replica.receive(op)
        reference.apply(op.author, op.kind, op.body, op.op_id)
        replica.ledger.check_conservation()
        own_sum(replica)
        check_book_at_rest(replica)
        check_fills_of(op, before, replica, replica.fills()[count:])
        expected = reference.outcomes[op.op_id]
        assert (None if replica.outcome[op.op_id] is None else str(replica.outcome[op.op_id])) == expected
        assert replica_view(replica) == reference_view(reference)
    check_payouts(replica)
    assert replica.fills() == replica.ledger.fills


@FEWER
@given(signed_flows(), st.data())
def test_every_delivery_order_gives_the_same_fills_and_roots(flow: Flow, data: st.DataObject) -> None:
    genesis = spot_genesis()
    ops = flow.ops
    by_id = {op.op_id: op for op in ops}
    cut = None
    certified: set[bytes] = set()
    if flow.checkpoint is not None:
        prefix, time = flow.checkpoint
        heads = tuple(heads_of(by_id, [op.op_id for op in ops[:prefix]]))
        cut = Cut(1, heads, time)
        certified = closure(by_id, heads)

    in_order = Replica(genesis)  # everything in replay order, then the cut
    for op in replay_order(ops)[1]:
        in_order.receive(op)
    if cut is not None:
        in_order.certify(cut)

    shuffled = Replica(genesis)  # a drawn order, with duplicates, in drawn batches, the cut when it can
    duplicates = data.draw(st.lists(st.sampled_from(ops), max_size=4))
    delivery = data.draw(st.permutations(ops + duplicates))
    position = 0
    while position < len(delivery):
        size = data.draw(st.integers(1, 4))
        shuffled.receive_many(delivery[position : position + size])
        position += size
        shuffled.ledger.check_conservation()
        own_sum(shuffled)
        check_book_at_rest(shuffled)
        if cut is not None and not shuffled.cuts and all(h in shuffled.graph.ops for h in cut.heads):
            shuffled.certify(cut)
            check_book_at_rest(shuffled)
    if cut is not None and not shuffled.cuts:
        shuffled.certify(cut)

    assert fingerprint(shuffled, ops) == fingerprint(in_order, ops)
    check_payouts(shuffled)
    first, rest = replay_order(ops, certified)
    assert [op.op_id for op in shuffled.applied_order()] == [op.op_id for op in first + rest]
    reference = reference_replay(ops, certified, None if cut is None else cut.time)
    assert replica_view(shuffled) == reference_view(reference)
    assert outcomes(shuffled, ops) == {op.op_id: reference.outcomes[op.op_id] for op in ops}


# -- worked examples on the replica itself ---------------------------------------------------------

TINY = MarketParams(
    symbol="WETH/USDC", base="WETH", quote="USDC", tick_size=E9, step_size=E9 // 10, min_qty=E9 // 10,
    max_qty=100 * E9, min_price=E9, max_price=10_000 * E9, maker_fee=5, taker_fee=5,
)


class Chain:
    """Sign operations one after another on one replica (parents: its heads)."""

    def __init__(self, markets: list[MarketParams], initial: list[tuple[bytes, str, int]]) -> None:
        self.genesis = make_spot_genesis(markets, initial)
        self.replica = Replica(self.genesis)
        self.seq = [0] * len(REF_ACCOUNTS)

    def do(self, author: int, kind: str, body: dict[str, Any]) -> SignedOp:
        self.seq[author] += 1
        op = sign_as(self.genesis, author, self.seq[author], sorted(self.replica.graph.heads), kind, body)
        assert self.replica.receive(op).accepted == [op]
        self.replica.ledger.check_conservation()
        return op

    def place(self, author: int, side: str, price: int, qty: int, tif: str = "gtc", expires: int = 0) -> SignedOp:
        return self.do(author, "order.place", {
            "market": "WETH/USDC", "side": side, "type": "limit", "tif": tif, "price": price, "qty": qty,
            "reduce_only": False, "expires": expires,
        })


A, B, C = REF_ACCOUNTS[0], REF_ACCOUNTS[1], REF_ACCOUNTS[2]


def test_a_maker_that_cannot_pay_a_rounded_fee_is_removed_without_the_fill() -> None:
    # see test_reference.test_a_maker_that_cannot_pay_is_removed_without_the_fill
    chain = Chain([TINY], [(A, "USDC", 2 * 10**8 + 1), (B, "WETH", E9), (C, "USDC", E9)])
    buy = chain.place(0, "buy", E9, 2 * 10**8)
    behind = chain.place(2, "buy", E9, 10**8)
    chain.place(1, "sell", E9, 10**8, "ioc")
    sell = chain.place(1, "sell", E9, 10**8, "ioc")
    fills = chain.replica.fills()
    assert [(f.maker_order, f.taker_order, f.qty) for f in fills] == [
        (buy.op_id, fills[0].taker_order, 10**8), (behind.op_id, sell.op_id, 10**8)
    ]
    ledger = chain.replica.ledger
    assert ledger.order(buy.op_id) is None
    assert ledger.held(A, "USDC") == 0
    assert ledger.balance(A, "USDC") == 10**8
    assert ledger.balance(A, "WETH") == 10**8
    assert ledger.fees("USDC") == 4


def test_a_taker_that_cannot_pay_stops_and_does_not_rest() -> None:
    chain = Chain([TINY], [(A, "USDC", 3 * 10**8 + 2), (B, "WETH", E9)])
    asks = [chain.place(1, "sell", E9, 10**8) for _ in range(3)]
    buy = chain.place(0, "buy", E9, 3 * 10**8)
    ledger = chain.replica.ledger
    assert [f.maker_order for f in chain.replica.fills()] == [asks[0].op_id, asks[1].op_id]
    assert ledger.order(buy.op_id) is None
    assert [o.order_id for o in ledger.book("WETH/USDC").asks()] == [asks[2].op_id]
    assert ledger.balance(A, "USDC") == 10**8


def test_the_state_hash_holds_the_open_orders() -> None:
    # 2 WETH at 1000 and 1 WETH at 2000 hold the same USDC: only the orders differ
    market = replace(TINY, maker_fee=0, taker_fee=0)
    states = []
    for price, qty in ((1000 * E9, 2 * E9), (2000 * E9, E9)):
        chain = Chain([market], [(A, "USDC", 5000 * E9)])
        order = chain.place(0, "buy", price, qty)
        ledger = chain.replica.ledger
        assert ledger.held(A, "USDC") == 2000 * E9
        assert order_row(ledger.order(order.op_id))[4:] == (price, qty, 2000 * E9)
        states.append((chain.replica.state_hash(), ledger.balance(A, "USDC")))
    assert states[0][1] == states[1][1]
    assert states[0][0] != states[1][0]


def test_expiry_at_a_checkpoint_releases_the_hold() -> None:
    chain = Chain([TINY], [(A, "USDC", 10 * E9)])
    early = chain.place(0, "buy", E9, E9, expires=500)
    never = chain.place(0, "buy", E9, E9)
    held = chain.replica.ledger.held(A, "USDC")
    chain.replica.certify(Cut(1, tuple(sorted(chain.replica.graph.heads)), 500))
    ledger = chain.replica.ledger
    assert ledger.order(early.op_id) is None
    assert ledger.order(never.op_id) is not None
    assert ledger.held(A, "USDC") == held - (E9 + 5)  # 1 USDC + a maker fee of ceil(1e9 * 5 / 1e9) = 5
    late = chain.place(0, "buy", E9, E9, expires=500)
    assert str(chain.replica.outcome[late.op_id]) == "order_expired"
