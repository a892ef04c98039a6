"""Spot order books in the ledger (crdt/markets/, crdt/ledger.py): every rejection reason, worked
examples of matching with the exact amounts worked out by hand, conservation after each, a late
order re-matching in a replica exactly as a fresh replay does, and the genesis's markets.

The amounts below are literals computed by hand from TRADING.md (notional = price * qty // 1e9,
fee = ceil(notional * rate / 1e9)), not from the code under test. The independent reference
book and its properties are in tests/crdt/markets/.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt import testing
from crdt.errors import InvalidGenesis
from crdt.genesis import Genesis, InitialBalance, InvalidMarket
from crdt.kinds import KINDS
from crdt.ledger import Ledger, Reason
from crdt.markets import Fill, Market, MarketKind, RestingOrder
from crdt.merkle import BALANCE
from crdt.ops import SignedOp, sign_op
from crdt.replica import Replica
from crdt.types import OpId
from crdt.units import from_e9
from tests.crdt.crdt_support import ADDR, ADJUDICATOR, INITIAL, KEYS, ROLES, TOKENS, USDC, WETH

E9 = 10**9
A, B, C, D = 0, 1, 2, 3
OBSERVER, ORACLE = 4, 5
SYMBOL = "WETH/USDC"
WETH_USDC = Market(
    symbol=SYMBOL, kind=MarketKind.SPOT, base=WETH.symbol, quote=USDC.symbol,
    tick_size=10**7, step_size=10**6,  # 0.01 USDC, 0.001 WETH
    min_qty=10**6, max_qty=1000 * E9, min_price=10**7, max_price=10**6 * E9,
    maker_fee=1_000_000, taker_fee=2_000_000,  # 0.1%, 0.2%
)

MARKET_REASONS = frozenset(Reason(value) for value in (
    "unknown_market", "bad_side", "bad_type", "bad_tif", "market_order_must_be_ioc", "bad_tick", "bad_step",
    "qty_out_of_range", "price_out_of_range", "reduce_only_not_spot", "order_expired", "post_only_would_cross",
    "unknown_order", "not_order_owner", "order_not_open", "not_perp", "oracle_stale", "insufficient_margin",
    "nothing_to_reduce", "unknown_account", "self_liquidation", "no_position", "not_liquidatable", "market_halted",
))


def market_genesis(
    markets: Sequence[Market] = (WETH_USDC,), initial: Sequence[InitialBalance] | None = None
) -> Genesis:
    balances = (
        [InitialBalance(ADDR[i], token.symbol, INITIAL) for i in range(4) for token in TOKENS]
        if initial is None else list(initial)
    )
    return testing.make_genesis(
        KEYS[: len(ROLES)], TOKENS, roles=ROLES, initial=balances, adjudicator=ADJUDICATOR, markets=markets
    )


GENESIS = market_genesis()


def body(side: str, price: int, qty: int, tif: str = "gtc", type_: str = "limit", **extra: Any) -> dict[str, Any]:
    return {"market": SYMBOL, "side": side, "type": type_, "tif": tif, "price": price, "qty": qty,
            "reduce_only": False, "expires": 0, **extra}


class Book:
    """A ledger with a signer that numbers each author's operations."""

    def __init__(self, genesis: Genesis = GENESIS) -> None:
        self.genesis = genesis
        self.ledger = Ledger(genesis)
        self.ctx = genesis.context()
        self.seqs = [0] * len(KEYS)

    def op(self, author: int, kind: str, op_body: dict[str, Any]) -> SignedOp:
        self.seqs[author] += 1
        return sign_op(self.ctx, KEYS[author], self.seqs[author], [], kind, op_body)

    def apply(self, author: int, kind: str, op_body: dict[str, Any]) -> tuple[OpId, Reason | None]:
        op = self.op(author, kind, op_body)
        before = self.ledger.state_hash()
        reason = self.ledger.apply(op)
        if reason is not None:
            assert self.ledger.state_hash() == before  # a rejected operation leaves no trace
        check(self.ledger)
        return op.op_id, reason

    def place(self, author: int, side: str, price: int, qty: int, tif: str = "gtc", **extra: Any) -> OpId:
        order_id, reason = self.apply(author, "order.place", body(side, price, qty, tif, **extra))
        assert reason is None, reason
        return order_id

    def free(self, who: int, token: Any) -> int:
        return self.ledger.balance(ADDR[who], token.symbol)

    def held(self, who: int, token: Any) -> int:
        return self.ledger.held(ADDR[who], token.symbol)


def check(ledger: Ledger) -> None:
    """Conservation, by the ledger's own check and counted again here, and no crossed book."""
    ledger.check_conservation()
    genesis = ledger.genesis
    for token in genesis.tokens:
        credited = sum(b.amount for b in genesis.initial_balances if b.token == token.symbol)
        paid = sum(
            ledger.balance(a, token.symbol) + ledger.held(a, token.symbol) + ledger.locked(a, token.symbol)
            + ledger.withdrawn_by(a, token.symbol) for a in genesis.addresses
        )
        assert paid + ledger.fees(token.symbol) == credited
    for market in genesis.markets:
        book = ledger.book(market.symbol)
        bids, asks = book.bids(), book.asks()
        if bids and asks:
            assert bids[0].price < asks[0].price
        assert [(-o.price, o.placed) for o in bids] == sorted((-o.price, o.placed) for o in bids)
        assert [(o.price, o.placed) for o in asks] == sorted((o.price, o.placed) for o in asks)
        for order in bids + asks:
            assert ledger.order(order.order_id) == order


# -- every rejection reason ------------------------------------------------------------------------

GOOD = body("buy", 10 * E9, E9)


def reason_after(setup: Sequence[tuple[int, str, dict[str, Any]]], author: int, kind: str,
                 op_body: dict[str, Any], *, time: int = 0) -> Reason | None:
    book = Book()
    if time:
        book.ledger.close_epoch(1, time)
    for who, setup_kind, setup_body in setup:
        assert book.apply(who, setup_kind, setup_body)[1] is None
    return book.apply(author, kind, op_body)[1]


def test_order_place_not_permitted_for_an_observer_or_an_oracle() -> None:
    assert reason_after([], OBSERVER, "order.place", GOOD) == Reason.NOT_PERMITTED
    assert reason_after([], ORACLE, "order.place", GOOD) == Reason.NOT_PERMITTED
    # the permission comes before the body's types
    assert reason_after([], OBSERVER, "order.place", {**GOOD, "price": "10"}) == Reason.NOT_PERMITTED


@pytest.mark.parametrize("spoil", [
    {"price": "10"}, {"qty": b"1"}, {"qty": True}, {"reduce_only": 0}, {"expires": [0]}, {"side": b"buy"},
    {"market": 5}, {"extra": 1},
])
def test_order_place_bad_body(spoil: dict[str, Any]) -> None:
    assert reason_after([], A, "order.place", {**GOOD, **spoil}) == Reason.BAD_BODY


def test_order_place_bad_body_for_a_missing_key() -> None:
    assert reason_after([], A, "order.place", {k: v for k, v in GOOD.items() if k != "expires"}) == Reason.BAD_BODY


def test_order_place_unknown_market() -> None:
    assert reason_after([], A, "order.place", {**GOOD, "market": "DOGE/USDC"}) == Reason.UNKNOWN_MARKET
    assert reason_after([], A, "order.place", {**GOOD, "market": "DOGE/USDC", "side": "up"}) == Reason.UNKNOWN_MARKET


def test_order_place_bad_side_type_tif_in_that_order() -> None:
    assert reason_after([], A, "order.place", {**GOOD, "side": "Buy"}) == Reason.BAD_SIDE
    assert reason_after([], A, "order.place", {**GOOD, "side": "up", "type": "stop"}) == Reason.BAD_SIDE
    assert reason_after([], A, "order.place", {**GOOD, "type": "stop", "tif": "fok"}) == Reason.BAD_TYPE
    assert reason_after([], A, "order.place", {**GOOD, "tif": "fok", "price": 1}) == Reason.BAD_TIF


@pytest.mark.parametrize("tif", ["gtc", "post_only"])
def test_a_market_order_must_be_ioc(tif: str) -> None:
    assert reason_after([], A, "order.place", {**GOOD, "type": "market", "tif": tif}) == Reason.MARKET_ORDER_MUST_BE_IOC


def test_reduce_only_is_refused_on_a_spot_market() -> None:
    assert reason_after([], A, "order.place", {**GOOD, "reduce_only": True}) == Reason.REDUCE_ONLY_NOT_SPOT
    assert reason_after([], A, "order.place", {**GOOD, "reduce_only": True, "price": 1}) == Reason.REDUCE_ONLY_NOT_SPOT


@pytest.mark.parametrize("price", [-10 * E9, 0, 10**7 - 1, 10**6 * E9 + 10**7, 10**6 * E9 + 1])
def test_price_out_of_range_before_the_tick(price: int) -> None:
    assert reason_after([], A, "order.place", {**GOOD, "price": price}) == Reason.PRICE_OUT_OF_RANGE


def test_bad_tick_before_the_quantity() -> None:
    assert reason_after([], A, "order.place", {**GOOD, "price": 10 * E9 + 1}) == Reason.BAD_TICK
    assert reason_after([], A, "order.place", {**GOOD, "price": 10 * E9 + 1, "qty": 0}) == Reason.BAD_TICK


@pytest.mark.parametrize("qty", [-E9, 0, 10**6 - 1, 1000 * E9 + 10**6, 1000 * E9 + 1])
def test_qty_out_of_range_before_the_step(qty: int) -> None:
    assert reason_after([], A, "order.place", {**GOOD, "qty": qty}) == Reason.QTY_OUT_OF_RANGE


def test_bad_step() -> None:
    assert reason_after([], A, "order.place", {**GOOD, "qty": E9 + 1}) == Reason.BAD_STEP
    assert reason_after([], A, "order.place", {**GOOD, "qty": E9 + 1, "expires": 1}, time=5) == Reason.BAD_STEP


def test_order_expired_at_or_before_the_ledger_time() -> None:
    assert reason_after([], A, "order.place", {**GOOD, "expires": 1000}, time=1000) == Reason.ORDER_EXPIRED
    assert reason_after([], A, "order.place", {**GOOD, "expires": 999}, time=1000) == Reason.ORDER_EXPIRED
    assert reason_after([], A, "order.place", {**GOOD, "expires": 1001}, time=1000) is None
    assert reason_after([], A, "order.place", {**GOOD, "expires": 0}, time=1000) is None  # never expires


def test_post_only_would_cross() -> None:
    ask = (B, "order.place", body("sell", 10 * E9, E9))
    assert reason_after([ask], A, "order.place", body("buy", 10 * E9, E9, "post_only")) == Reason.POST_ONLY_WOULD_CROSS
    assert reason_after([ask], A, "order.place", body("buy", 11 * E9, E9, "post_only")) == Reason.POST_ONLY_WOULD_CROSS
    # the cross is checked before the funds
    huge = body("buy", 10 * E9, 900 * E9, "post_only")
    assert reason_after([ask], A, "order.place", huge) == Reason.POST_ONLY_WOULD_CROSS
    assert reason_after([ask], A, "order.place", body("buy", 9 * E9, E9, "post_only")) is None


def test_insufficient_balance_for_a_buy_counts_the_larger_fee() -> None:
    # INITIAL = 100e9 + 777 USDC e9. A buy of 99.8 WETH-e9 units at 1 USDC: notional 99.8e9,
    # fee at max(0.1%, 0.2%) = 199_600_000: needs 99_999_600_000 (fits); 99.801 needs
    # 99_801_000_000 + 199_602_000 = 100_000_602_000 > 100_000_000_777.
    assert reason_after([], A, "order.place", body("buy", E9, 99_800_000_000)) is None
    assert reason_after([], A, "order.place", body("buy", E9, 99_801_000_000)) == Reason.INSUFFICIENT_BALANCE


def test_insufficient_balance_for_a_sell_is_the_base_quantity() -> None:
    assert reason_after([], A, "order.place", body("sell", E9, 100 * E9)) is None
    assert reason_after([], A, "order.place", body("sell", E9, 100 * E9 + 10**6)) == Reason.INSUFFICIENT_BALANCE
    # what an open order holds is not free
    rest = (A, "order.place", body("sell", 20 * E9, 60 * E9))
    assert reason_after([rest], A, "order.place", body("sell", 20 * E9, 41 * E9)) == Reason.INSUFFICIENT_BALANCE


def test_order_cancel_reasons() -> None:
    book = Book()
    mine = book.place(A, "buy", 10 * E9, E9)
    filled = book.place(B, "sell", 12 * E9, E9)
    book.place(C, "buy", 12 * E9, E9, "ioc")  # fills B's order whole
    never, reason = book.apply(A, "order.place", {**GOOD, "side": "up"})
    assert reason == Reason.BAD_SIDE
    assert book.apply(OBSERVER, "order.cancel", {"order": mine})[1] == Reason.NOT_PERMITTED
    assert book.apply(A, "order.cancel", {"order": mine[:31]})[1] == Reason.BAD_BODY
    assert book.apply(A, "order.cancel", {"order": mine.hex()})[1] == Reason.BAD_BODY
    assert book.apply(A, "order.cancel", {"order": bytes(32)})[1] == Reason.UNKNOWN_ORDER
    assert book.apply(A, "order.cancel", {"order": never})[1] == Reason.UNKNOWN_ORDER  # rejected: no order
    assert book.apply(B, "order.cancel", {"order": mine})[1] == Reason.NOT_ORDER_OWNER
    assert book.apply(B, "order.cancel", {"order": filled})[1] == Reason.ORDER_NOT_OPEN
    assert book.apply(A, "order.cancel", {"order": mine})[1] is None
    assert book.apply(A, "order.cancel", {"order": mine})[1] == Reason.ORDER_NOT_OPEN
    assert book.apply(B, "order.cancel", {"order": mine})[1] == Reason.NOT_ORDER_OWNER  # closed, still not B's


def test_order_cancel_all_reasons() -> None:
    book = Book()
    assert book.apply(OBSERVER, "order.cancel_all", {"market": SYMBOL})[1] == Reason.NOT_PERMITTED
    assert book.apply(A, "order.cancel_all", {"market": 1})[1] == Reason.BAD_BODY
    assert book.apply(A, "order.cancel_all", {"market": "DOGE/USDC"})[1] == Reason.UNKNOWN_MARKET
    assert book.apply(A, "order.cancel_all", {"market": SYMBOL})[1] is None  # nothing open is fine


def test_a_channel_without_markets_has_only_unknown_markets() -> None:
    ledger = Ledger(testing.make_genesis(KEYS[:2], TOKENS, initial=E9))
    assert ledger.apply(sign_op(ledger.genesis.context(), KEYS[0], 1, [], "order.place", GOOD)) == Reason.UNKNOWN_MARKET


def test_a_perp_order_without_an_oracle_price_is_oracle_stale() -> None:
    from tests.crdt.markets.test_perp_genesis import ETH_PERP

    assert reason_for_genesis(market_genesis((ETH_PERP,)), body("buy", 10 * E9, E9) | {"market": "ETH-PERP"}) == (
        Reason.ORACLE_STALE
    )


def test_a_reduce_only_perp_order_without_a_position_is_nothing_to_reduce() -> None:
    from tests.crdt.markets.test_perp_genesis import ETH_PERP

    body_ = body("sell", 10 * E9, E9) | {"market": "ETH-PERP", "reduce_only": True}
    assert reason_for_genesis(market_genesis((ETH_PERP,)), body_) == Reason.NOTHING_TO_REDUCE


def test_a_perp_order_below_initial_margin_is_insufficient_margin() -> None:
    # the worked examples (a fill, a withdrawal, orders below initial margin) are in
    # tests/crdt/markets/test_perp_positions.py; here the reason on its own
    from tests.crdt.markets.test_perp_positions import Desk

    desk = Desk()
    desk.price(3000, 1_000)
    desk.order(1, "sell", 3000, 0.1)
    desk.order(2, "buy", 3000, 0.1, "ioc")
    desk.price(2500, 2_000)  # the long of 0.1 lost 50 of its 99.4: worth 49.4, IMR 50
    assert desk.order(2, "buy", 2500, 0.001)[1] == Reason.INSUFFICIENT_MARGIN


def test_liquidate_reasons_of_their_own() -> None:
    # every liquidate reason, with the shared ones, is in tests/crdt/markets/test_perp_liquidation.py
    from tests.crdt.markets.test_perp_liquidation import long_a
    from tests.crdt.markets.test_perp_positions import LIQUIDATOR, Desk

    desk = Desk()
    long_a(desk)

    def liquidate(account: bytes) -> Reason | None:
        return desk.do(LIQUIDATOR, "liquidate", {"account": account, "market": "ETH-PERP", "qty": E9 // 10})[1]

    assert liquidate(bytes(20)) == Reason.UNKNOWN_ACCOUNT
    assert liquidate(desk.accounts[LIQUIDATOR]) == Reason.SELF_LIQUIDATION
    assert liquidate(desk.accounts[3]) == Reason.NO_POSITION
    assert liquidate(desk.accounts[1]) == Reason.NOT_LIQUIDATABLE  # A, long at the oracle price


def test_a_halted_perp_market_is_market_halted() -> None:
    # the circuit breaker's worked example is in tests/crdt/markets/test_perp_positions.py
    from tests.crdt.markets.test_perp_genesis import ETH_PERP
    from tests.crdt.markets.test_perp_positions import Desk

    desk = Desk(ETH_PERP)
    desk.price(3000, 1_000)
    desk.price(4000, 2_000)  # a third up: beyond the 10% band
    assert desk.order(2, "buy", 4000, 0.01)[1] == Reason.MARKET_HALTED


def test_oracle_price_of_a_spot_market_is_not_perp() -> None:
    # every oracle.price reason is in tests/crdt/markets/test_oracle.py
    assert reason_for_genesis(market_genesis(), {"market": SYMBOL, "price": E9}, ORACLE, "oracle.price") == (
        Reason.NOT_PERP
    )


def reason_for_genesis(
    genesis: Genesis, op_body: dict[str, Any], who: int = A, kind: str = "order.place"
) -> Reason | None:
    ledger = Ledger(genesis)
    return ledger.apply(sign_op(genesis.context(), KEYS[who], 1, [], kind, op_body))


def test_every_market_reason_has_a_named_test_here() -> None:
    source = Path(__file__).read_text()
    assert not [reason for reason in MARKET_REASONS if f"Reason.{reason.name}" not in source]


# -- worked examples of matching -------------------------------------------------------------------


def fill(taker: OpId, maker: OpId, who: int, whom: int, price: int, qty: int, taker_fee: int, maker_fee: int) -> Fill:
    return Fill(taker, maker, ADDR[who], ADDR[whom], SYMBOL, price, qty, taker_fee, maker_fee)


def test_partial_fills_over_two_levels_price_then_time() -> None:
    book = Book()
    b10 = book.place(B, "sell", 10 * E9, E9)
    b11 = book.place(B, "sell", 11 * E9, 2 * E9)
    c11 = book.place(C, "sell", 11 * E9, E9)
    d12 = book.place(D, "sell", 12 * E9, E9)
    assert [o.order_id for o in book.ledger.book(SYMBOL).asks()] == [b10, b11, c11, d12]
    taker = book.place(A, "buy", 11 * E9, 3_500_000_000)
    # 1 @ 10: n 10e9, taker fee 20e6, maker fee 10e6; 2 @ 11: n 22e9, 44e6, 22e6; 0.5 @ 11 from C
    # (after B's older order at 11): n 5.5e9, 11e6, 5.5e6
    assert book.ledger.fills == [
        fill(taker, b10, A, B, 10 * E9, E9, 20_000_000, 10_000_000),
        fill(taker, b11, A, B, 11 * E9, 2 * E9, 44_000_000, 22_000_000),
        fill(taker, c11, A, C, 11 * E9, 500_000_000, 11_000_000, 5_500_000),
    ]
    asks = book.ledger.book(SYMBOL).asks()
    assert [(o.order_id, o.remaining, o.hold) for o in asks] == [(c11, 500_000_000, 500_000_000), (d12, E9, E9)]
    assert book.ledger.book(SYMBOL).bids() == []  # filled whole: nothing rests
    assert book.free(A, USDC) == INITIAL - 37_500_000_000 - 75_000_000
    assert book.free(A, WETH) == INITIAL + 3_500_000_000
    assert book.free(B, USDC) == INITIAL + 32 * E9 - 32_000_000
    assert book.free(B, WETH) == INITIAL - 3 * E9
    assert book.held(B, WETH) == 0
    assert book.free(C, USDC) == INITIAL + 5_500_000_000 - 5_500_000
    assert book.free(C, WETH) == INITIAL - E9
    assert book.held(C, WETH) == 500_000_000
    assert book.ledger.fees(USDC.symbol) == 75_000_000 + 37_500_000
    assert book.ledger.fees(WETH.symbol) == 0


def test_a_gtc_remainder_rests_holding_its_notional_and_maker_fee() -> None:
    book = Book()
    ask = book.place(B, "sell", 10 * E9, E9)
    bid = book.place(A, "buy", 10 * E9, 3 * E9)
    assert book.ledger.fills == [fill(bid, ask, A, B, 10 * E9, E9, 20_000_000, 10_000_000)]
    # the remainder, 2 @ 10: notional 20e9 + maker fee 20e6 held
    assert book.ledger.order(bid) == RestingOrder(bid, ADDR[A], SYMBOL, "buy", 10 * E9, 2 * E9, 2, 20_020_000_000)
    assert book.held(A, USDC) == 20_020_000_000
    assert book.free(A, USDC) == INITIAL - 10_020_000_000 - 20_020_000_000


def test_self_trade_removes_the_resting_order_and_never_fills_it() -> None:
    book = Book()
    own = book.place(A, "sell", 10 * E9, E9)
    other = book.place(B, "sell", 10 * E9, E9)
    assert book.held(A, WETH) == E9
    taker = book.place(A, "buy", 10 * E9, E9)
    assert book.ledger.fills == [fill(taker, other, A, B, 10 * E9, E9, 20_000_000, 10_000_000)]
    assert book.ledger.order(own) is None
    assert book.held(A, WETH) == 0
    assert book.free(A, WETH) == INITIAL + E9  # its own sell was released, not traded
    assert book.ledger.book(SYMBOL).asks() == []
    assert book.ledger.book(SYMBOL).bids() == []


def test_ioc_and_market_remainders_are_cancelled() -> None:
    book = Book()
    ask = book.place(B, "sell", 10 * E9, E9)
    ioc = book.place(A, "buy", 10 * E9, 2 * E9, "ioc")
    assert book.ledger.fills == [fill(ioc, ask, A, B, 10 * E9, E9, 20_000_000, 10_000_000)]
    assert book.ledger.order(ioc) is None
    assert book.held(A, USDC) == 0
    assert book.free(A, USDC) == INITIAL - 10_020_000_000
    ask2 = book.place(C, "sell", 12 * E9, E9)
    market = book.place(A, "buy", 11 * E9, E9, "ioc", type="market")  # 11 is the worst it pays
    assert book.ledger.order(market) is None
    assert len(book.ledger.fills) == 1
    assert book.ledger.order(ask2) is not None
    assert book.free(A, USDC) == INITIAL - 10_020_000_000  # nothing filled, nothing held


def test_post_only_crossing_only_its_own_order_is_refused_and_changes_nothing() -> None:
    book = Book()
    own = book.place(A, "sell", 10 * E9, E9)
    _, reason = book.apply(A, "order.place", body("buy", 10 * E9, E9, "post_only"))
    assert reason == Reason.POST_ONLY_WOULD_CROSS  # it would cross the book, even if only its own order
    assert book.ledger.order(own) is not None  # which stays
    assert book.ledger.fills == []
    assert book.ledger.book(SYMBOL).bids() == []
    _, reason = book.apply(A, "order.place", body("buy", 9 * E9, E9, "post_only"))
    assert reason is None
    (bid,) = book.ledger.book(SYMBOL).bids()
    assert (bid.price, bid.remaining, bid.hold) == (9 * E9, E9, 9_009_000_000)


def test_cancel_and_cancel_all_release_every_hold() -> None:
    book = Book()
    first = book.place(A, "buy", 10 * E9, E9)
    book.place(A, "buy", 9 * E9, 2 * E9)
    book.place(A, "sell", 20 * E9, 3 * E9)
    other = book.place(B, "sell", 21 * E9, E9)
    assert book.held(A, USDC) == 10_010_000_000 + 18_018_000_000
    assert book.held(A, WETH) == 3 * E9
    assert book.apply(A, "order.cancel", {"order": first})[1] is None
    assert book.held(A, USDC) == 18_018_000_000
    assert book.free(A, USDC) == INITIAL - 18_018_000_000
    assert book.apply(A, "order.cancel_all", {"market": SYMBOL})[1] is None
    assert (book.held(A, USDC), book.held(A, WETH)) == (0, 0)
    assert (book.free(A, USDC), book.free(A, WETH)) == (INITIAL, INITIAL)
    assert [o.order_id for o in book.ledger.book(SYMBOL).asks()] == [other]  # B's stays


def test_expiry_at_close_epoch_releases_the_hold() -> None:
    book = Book()
    expiring = book.place(A, "buy", 10 * E9, E9, expires=1000)
    lasting = book.place(A, "buy", 9 * E9, E9)
    book.ledger.close_epoch(1, 999)
    check(book.ledger)
    assert book.ledger.order(expiring) is not None
    book.ledger.close_epoch(2, 1000)
    check(book.ledger)
    assert book.ledger.order(expiring) is None
    assert book.ledger.order(lasting) is not None
    assert book.held(A, USDC) == 9_009_000_000
    assert book.free(A, USDC) == INITIAL - 9_009_000_000
    assert book.apply(A, "order.cancel", {"order": expiring})[1] == Reason.ORDER_NOT_OPEN


# Fee rates of 0.071% make every fill of 0.001 WETH at 0.01 USDC (notional 10_000) pay
# ceil(7.1) = 8, while the hold of 0.003 reserves ceil(21.3) = 22: three fills cost 2 more.
ODD = replace(WETH_USDC, tick_size=10**7, min_price=10**7, maker_fee=710_000, taker_fee=710_000)
PRICE, LOT = 10**7, 10**6


@pytest.mark.parametrize(("maker_usdc", "third_from"), [(30_022, "N"), (30_024, "M")])
def test_fee_rounding_a_maker_pays_a_shortfall_from_free_or_is_removed(maker_usdc: int, third_from: str) -> None:
    initial = [InitialBalance(ADDR[A], USDC.symbol, maker_usdc), InitialBalance(ADDR[B], WETH.symbol, E9),
               InitialBalance(ADDR[C], USDC.symbol, E9)]
    book = Book(market_genesis((ODD,), initial))
    m = book.place(A, "buy", PRICE, 3 * LOT)
    assert book.held(A, USDC) == 30_022
    assert book.free(A, USDC) == maker_usdc - 30_022
    n = book.place(C, "buy", PRICE, LOT)
    takers = [book.place(B, "sell", PRICE, LOT, "ioc") for _ in range(3)]
    third = (takers[2], m, B, A) if third_from == "M" else (takers[2], n, B, C)
    assert book.ledger.fills == [
        fill(takers[0], m, B, A, PRICE, LOT, 8, 8), fill(takers[1], m, B, A, PRICE, LOT, 8, 8),
        fill(*third, PRICE, LOT, 8, 8),
    ]
    assert book.ledger.order(m) is None
    if third_from == "M":  # the last fill took the hold's 10_006 and 2 from free
        assert (book.free(A, USDC), book.held(A, USDC), book.free(A, WETH)) == (0, 0, 3 * LOT)
        assert book.ledger.order(n) is not None
    else:  # removed without the third fill: what was left of its hold is free again
        assert (book.free(A, USDC), book.held(A, USDC), book.free(A, WETH)) == (10_006, 0, 2 * LOT)
        assert book.ledger.order(n) is None
        assert book.free(C, USDC) == E9 - 10_008
    assert book.free(B, USDC) == 3 * 9_992
    assert book.ledger.fees(USDC.symbol) == 3 * 16


def test_fee_rounding_a_taker_that_cannot_pay_a_fill_stops_and_does_not_rest() -> None:
    initial = [InitialBalance(ADDR[A], USDC.symbol, 30_022)] + [
        InitialBalance(ADDR[i], WETH.symbol, E9) for i in (B, C, D)
    ]
    book = Book(market_genesis((ODD,), initial))
    asks = [book.place(i, "sell", PRICE, LOT) for i in (B, C, D)]
    taker = book.place(A, "buy", PRICE, 3 * LOT)  # 30_022 is exactly what the placement needs
    assert book.ledger.fills == [
        fill(taker, asks[0], A, B, PRICE, LOT, 8, 8), fill(taker, asks[1], A, C, PRICE, LOT, 8, 8)
    ]
    assert book.ledger.order(taker) is None
    assert book.held(A, USDC) == 0
    assert book.free(A, USDC) == 30_022 - 2 * 10_008
    assert [o.order_id for o in book.ledger.book(SYMBOL).asks()] == [asks[2]]


# -- state, payouts, replay order ------------------------------------------------------------------


def test_held_funds_are_in_the_payout_and_open_orders_in_the_state_hash() -> None:
    replica = Replica(GENESIS)
    before_root, before_hash = replica.payout_root(), replica.state_hash()
    op = sign_op(GENESIS.context(), KEYS[A], 1, [], "order.place", body("buy", 10 * E9, E9))
    replica.receive(op)
    assert replica.ledger.held(ADDR[A], USDC.symbol) == 10_010_000_000
    assert replica.balances()["0x" + ADDR[A].hex()][USDC.symbol]["held"] == 10_010_000_000
    assert replica.payout_root() == before_root  # paid back to its owner at settlement
    leaves = replica.payout_tree().leaves
    (leaf,) = [x for x in leaves if (x.account, x.token, x.kind) == (ADDR[A], USDC.address, BALANCE)]
    assert leaf.amount >= from_e9(INITIAL, USDC.decimals)  # apportioned: it may get a rounding unit
    assert leaf in Replica(GENESIS).payout_tree().leaves
    assert replica.state_hash() != before_hash
    # the same funds, free instead of held, are another state
    other = Replica(GENESIS)
    other.receive(op)
    other.receive(sign_op(GENESIS.context(), KEYS[A], 2, [op.op_id], "order.cancel", {"order": op.op_id}))
    assert other.payout_root() == before_root
    assert other.state_hash() not in (before_hash, replica.state_hash())


def test_a_late_order_that_sorts_first_rematches_only_the_suffix_like_a_fresh_replay() -> None:
    ctx = GENESIS.context()
    early_ask = sign_op(ctx, KEYS[B], 1, [], "order.place", body("sell", 11 * E9, E9))
    filler = sign_op(ctx, KEYS[D], 1, [early_ask.op_id], "transfer", {"to": ADDR[A], "token": "USDC", "amount": 1})
    buy = sign_op(ctx, KEYS[A], 1, [filler.op_id], "order.place", body("buy", 11 * E9, E9))
    late_ask = sign_op(ctx, KEYS[C], 1, [], "order.place", body("sell", 10 * E9, E9))  # a better price
    replica = Replica(GENESIS)
    replica.receive_many([early_ask, filler, buy])
    assert [f.maker_order for f in replica.fills()] == [early_ask.op_id]
    replayed = replica.replayed
    late_key = replica.graph.key(late_ask.op_id) if late_ask.op_id in replica.graph.ops else (1, late_ask.op_id)
    after = [op for op in (early_ask, filler, buy) if replica.graph.key(op.op_id) > late_key]
    assert buy in after
    assert filler in after
    replica.receive(late_ask)
    assert replica.replayed - replayed == len(after)  # only what sorts after it is undone and re-applied
    assert [f.maker_order for f in replica.fills()] == [late_ask.op_id]
    fresh = Replica(GENESIS)
    fresh.receive_many([late_ask, early_ask, filler, buy])
    assert fresh.fills() == replica.fills()
    assert fresh.state_hash() == replica.state_hash()
    assert fresh.payout_root() == replica.payout_root()
    assert replica.ledger.order(early_ask.op_id) is not None  # B's ask rests again, untouched
    check(replica.ledger)


ORDER_MENU = [
    ("sell", 10 * E9, E9, "gtc"), ("sell", 11 * E9, 2 * E9, "gtc"), ("buy", 11 * E9, 1_500_000_000, "gtc"),
    ("buy", 10 * E9, E9, "post_only"), ("buy", 12 * E9, 3 * E9, "ioc"), ("sell", 9 * E9, E9, "ioc"),
    ("sell", 10 * E9, E9, "post_only"), ("buy", 9 * E9, 2 * E9, "gtc"),
]


@st.composite
def order_dags(draw: st.DrawFn) -> list[SignedOp]:
    """Orders, cancels and cancel_alls of four traders, each naming its own previous operation and
    maybe some others as parents: a concurrent graph whose replay order is (height, op_id)."""
    ctx = GENESIS.context()
    ops: list[SignedOp] = []
    last: dict[int, SignedOp] = {}
    for _ in range(draw(st.integers(2, 9))):
        author = draw(st.sampled_from([A, B, C, D]))
        parents = {op.op_id for op in draw(st.lists(st.sampled_from(ops), max_size=2))} if ops else set()
        if author in last:
            parents.add(last[author].op_id)
        what = draw(st.integers(0, 9))
        if what < 8:
            side, price, qty, tif = ORDER_MENU[what]
            kind, op_body = "order.place", body(side, price, qty, tif)
        elif what == 8 and ops:
            kind, op_body = "order.cancel", {"order": draw(st.sampled_from(ops)).op_id}
        else:
            kind, op_body = "order.cancel_all", {"market": SYMBOL}
        seq = len([op for op in ops if op.author == ADDR[author]]) + 1
        op = sign_op(ctx, KEYS[author], seq, sorted(parents), kind, op_body)
        ops.append(op)
        last[author] = op
    return ops


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=order_dags(), data=st.data())
def test_any_delivery_order_gives_the_fills_and_state_of_a_fresh_replay(
    ops: list[SignedOp], data: st.DataObject
) -> None:
    fresh = Replica(GENESIS)
    fresh.receive_many(ops)
    shuffled = data.draw(st.permutations(ops))
    one_by_one = Replica(GENESIS)
    for op in shuffled:
        one_by_one.receive(op)  # a late one (parents missing) waits, then re-matches the suffix
    assert one_by_one.fills() == fresh.fills()
    assert one_by_one.state_hash() == fresh.state_hash()
    assert {op.op_id: one_by_one.status(op.op_id) for op in ops} == {op.op_id: fresh.status(op.op_id) for op in ops}
    check(one_by_one.ledger)


# -- the genesis's markets -------------------------------------------------------------------------


def test_genesis_markets_round_trip_through_toml_and_leave_the_channel_id_alone() -> None:
    second = replace(WETH_USDC, symbol="USDC/WETH", base=USDC.symbol, quote=WETH.symbol)
    genesis = market_genesis((second, WETH_USDC))  # given out of order
    assert [m.symbol for m in genesis.markets] == ["USDC/WETH", "WETH/USDC"]
    assert genesis.market(SYMBOL) == WETH_USDC
    assert genesis.market("DOGE/USDC") is None
    text = tomli_w.dumps(genesis.to_mapping())
    assert text.count("[[markets]]") == 2
    assert Genesis.from_mapping(tomllib.loads(text)) == genesis
    plain = market_genesis(())
    assert plain.channel_id == genesis.channel_id
    assert "markets" not in plain.to_mapping()  # a genesis without markets writes what it always did
    assert Genesis.from_mapping(tomllib.loads(tomli_w.dumps(plain.to_mapping()))) == plain


def test_market_kinds_are_registry_entries_with_json_forms() -> None:
    place = KINDS["order.place"]
    json_body = {"market": SYMBOL, "side": "buy", "type": "limit", "tif": "gtc", "price": "10000000000",
                 "qty": 1000000000, "reduce_only": False, "expires": "0"}
    assert KINDS.from_json("order.place", json_body) == GOOD
    assert KINDS.to_json("order.place", GOOD)["qty"] == "1000000000"
    assert place.json_schema()["properties"]["side"]["enum"] == ["buy", "sell"]
    assert place.json_schema()["properties"]["reduce_only"] == {"type": "boolean"}
    order = "0x" + "ab" * 32
    assert KINDS.from_json("order.cancel", {"order": order}) == {"order": bytes.fromhex("ab" * 32)}
    assert KINDS.to_json("order.cancel", {"order": bytes.fromhex("ab" * 32)}) == {"order": order}


BAD_MARKETS = [
    ({"symbol": ""}, "symbol"), ({"symbol": "x" * 33}, "symbol"), ({"kind": "perp"}, "imr"),
    ({"kind": "future"}, "kind"), ({"base": "DOGE"}, "base"), ({"quote": "WETH"}, "quote"),
    ({"tick_size": 0}, "tick_size"), ({"step_size": -1}, "step_size"), ({"min_qty": 10**6 + 1}, "min_qty"),
    ({"max_qty": 10**5}, "max_qty"), ({"min_price": 0}, "min_price"), ({"max_price": 10**7 + 5}, "max_price"),
    ({"min_price": 2 * 10**7, "max_price": 10**7}, "max_price"), ({"min_qty": 2 * 10**6, "max_qty": 10**6}, "max_qty"),
    ({"maker_fee": E9}, "maker_fee"), ({"taker_fee": -1}, "taker_fee"), ({"taker_fee": True}, "taker_fee"),
    ({"maker_fee": "1"}, "maker_fee"), ({"mtb_long": 5}, "mtb_long"),
]


@pytest.mark.parametrize(("change", "field"), BAD_MARKETS)
def test_an_invalid_market_names_its_index_and_field(change: dict[str, Any], field: str) -> None:
    mapping = market_genesis().to_mapping()
    good = dict(mapping["markets"][0])
    mapping["markets"] = [{**good, "symbol": "A/B"}, {**good, **change}]
    with pytest.raises(InvalidMarket) as caught:
        Genesis.from_mapping(mapping)
    assert (caught.value.index, caught.value.field) == (1, field)
    assert f"markets[1].{field}" in str(caught.value)
    assert isinstance(caught.value, InvalidGenesis)


def test_a_market_entry_missing_a_field_or_twice_a_symbol_is_refused() -> None:
    mapping = market_genesis().to_mapping()
    good = dict(mapping["markets"][0])
    mapping["markets"] = [{k: v for k, v in good.items() if k != "taker_fee"}]
    with pytest.raises(InvalidMarket, match=r"markets\[0\]\.taker_fee: missing"):
        Genesis.from_mapping(mapping)
    mapping["markets"] = [good, good]
    with pytest.raises(InvalidMarket, match=r"markets\[1\]\.symbol"):
        Genesis.from_mapping(mapping)
    mapping["markets"] = ["WETH/USDC"]
    with pytest.raises(InvalidMarket, match=r"markets\[0\]: must be a table"):
        Genesis.from_mapping(mapping)
