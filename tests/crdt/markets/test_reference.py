"""The reference book alone, on worked examples computed by hand (so the oracle is trusted).

Market "ETH/USDC" unless a test says otherwise: tick 1 USDC, step 0.1 ETH, fees 0.1% maker and
0.2% taker. Every number below is worked out in the comment next to it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.crdt.markets.reference import E9, MarketParams, ReferenceBook, RefFill, buy_hold, fee, notional
from tests.crdt.markets.strategies import MARKET_PARAMS, REF_ACCOUNTS, intents, reference_for, synthetic_ids

A, B, C, OBS = b"\xaa" * 20, b"\xbb" * 20, b"\xcc" * 20, b"\x0b" * 20
ETH = MarketParams(
    symbol="ETH/USDC", base="ETH", quote="USDC", tick_size=E9, step_size=E9 // 10, min_qty=E9 // 10,
    max_qty=100 * E9, min_price=E9, max_price=10_000 * E9, maker_fee=1_000_000, taker_fee=2_000_000,
)
# 5e-9 fees on 1-USDC prices: a 0.1 ETH fill has notional 1e8 and a fee of ceil(0.5) = 1
TINY = MarketParams(
    symbol="ETH/USDC", base="ETH", quote="USDC", tick_size=E9, step_size=E9 // 10, min_qty=E9 // 10,
    max_qty=100 * E9, min_price=E9, max_price=10_000 * E9, maker_fee=5, taker_fee=5,
)


def new_book(market: MarketParams = ETH, balances: dict[tuple[bytes, str], int] | None = None) -> ReferenceBook:
    if balances is None:
        plenty = (("USDC", 1000 * E9), ("ETH", 10 * E9))
        balances = {(who, token): amount for who in (A, B, C) for token, amount in plenty}
    roles = {A: "trader", B: "market_maker", C: "liquidator", OBS: "observer"}
    return ReferenceBook(roles, ["USDC", "ETH"], [(a, t, v) for (a, t), v in balances.items()], [market])


_counter = iter(range(1, 10**9))


def oid() -> bytes:
    return next(_counter).to_bytes(32, "big")


def order(side: str, price: int, qty: int, tif: str = "gtc", type_: str = "limit", **extra: Any) -> dict[str, Any]:
    body = {"market": "ETH/USDC", "side": side, "type": type_, "tif": tif, "price": price, "qty": qty,
            "reduce_only": False, "expires": 0}
    body.update(extra)
    return body


def place(
    book: ReferenceBook, who: bytes, side: str, price: int, qty: int, tif: str = "gtc", **extra: Any
) -> tuple[bytes, str | None]:
    op_id = oid()
    outcome = book.apply(who, "order.place", order(side, price, qty, tif, **extra), op_id)
    book.check()
    return op_id, outcome


def resting(book: ReferenceBook, side: str) -> list[tuple[bytes, bytes, int, int, int]]:
    orders = book.bids["ETH/USDC"] if side == "buy" else book.asks["ETH/USDC"]
    return [(o.order_id, o.owner, o.price, o.remaining, o.hold) for o in orders]


def test_arithmetic() -> None:
    assert notional(2000 * E9, E9 // 3) == 666_666_666_000  # 2000 * 333_333_333: exact
    assert notional(2000_300_000_000, E9 // 3) == 666_766_665_999  # 666_766_665_999.9 floored
    assert fee(100, 1) == 1  # ceil(1e-7)
    assert fee(0, 5) == 0
    assert fee(E9, 2_000_000) == 2_000_000  # exact: no rounding
    assert fee(E9 + 1, 2_000_000) == 2_000_001  # 2_000_000.002 rounds up
    assert buy_hold(100 * E9, E9, 1_000_000) == 100 * E9 + 100_000_000  # 100 USDC + 0.1%


def test_partial_fills_over_two_levels_at_the_makers_prices() -> None:
    book = new_book()
    b_ask, _ = place(book, B, "sell", 100 * E9, E9)
    c_ask, _ = place(book, C, "sell", 101 * E9, E9)
    assert resting(book, "sell") == [(b_ask, B, 100 * E9, E9, E9), (c_ask, C, 101 * E9, E9, E9)]
    a_buy, outcome = place(book, A, "buy", 101 * E9, 15 * E9 // 10)  # 1.5 ETH up to 101
    assert outcome is None
    # fill 1: 1 ETH at 100: n = 100 USDC, taker fee 0.2 USDC, maker fee 0.1 USDC
    # fill 2: 0.5 ETH at 101: n = 50.5 USDC, taker fee 0.101, maker fee 0.0505
    assert book.fills == [
        RefFill(a_buy, b_ask, A, B, "ETH/USDC", 100 * E9, E9, 200_000_000, 100_000_000),
        RefFill(a_buy, c_ask, A, C, "ETH/USDC", 101 * E9, E9 // 2, 101_000_000, 50_500_000),
    ]
    assert book.balance(A, "USDC") == 1000 * E9 - 100_200_000_000 - 50_601_000_000
    assert book.balance(A, "ETH") == 10 * E9 + 15 * E9 // 10
    assert book.balance(B, "USDC") == 1000 * E9 + 99_900_000_000
    assert book.balance(B, "ETH") == 9 * E9
    assert book.held(B, "ETH") == 0
    assert book.balance(C, "USDC") == 1000 * E9 + 50_449_500_000
    assert book.held(C, "ETH") == E9 // 2
    assert book.balance(C, "ETH") == 9 * E9
    assert resting(book, "sell") == [(c_ask, C, 101 * E9, E9 // 2, E9 // 2)]
    assert resting(book, "buy") == []  # filled: nothing rests
    assert book.fees("USDC") == 451_500_000
    assert book.fees("ETH") == 0


def test_price_then_time_priority() -> None:
    book = new_book()
    first, _ = place(book, B, "buy", 99 * E9, E9)
    better, _ = place(book, C, "buy", 100 * E9, E9)
    second, _ = place(book, C, "buy", 99 * E9, E9)
    assert [o[0] for o in resting(book, "buy")] == [better, first, second]
    _sell, _ = place(book, A, "sell", 90 * E9, 25 * E9 // 10, tif="ioc")  # 2.5 ETH down to 90
    assert [(f.maker_order, f.price, f.qty) for f in book.fills] == [
        (better, 100 * E9, E9), (first, 99 * E9, E9), (second, 99 * E9, E9 // 2)
    ]
    # the seller (taker) receives n - 0.2%: 100 - 0.2 + 99 - 0.198 + 49.5 - 0.099
    assert book.balance(A, "USDC") == 1000 * E9 + 248_500_000_000 - 497_000_000
    assert book.balance(A, "ETH") == 10 * E9 - 25 * E9 // 10


def test_a_buy_hold_and_its_release_on_cancel() -> None:
    book = new_book()
    buy, _ = place(book, A, "buy", 100 * E9, 2 * E9)
    hold = 200 * E9 + 200_000_000  # 200 USDC + the maker fee 0.1%
    assert resting(book, "buy") == [(buy, A, 100 * E9, 2 * E9, hold)]
    assert book.held(A, "USDC") == hold
    assert book.balance(A, "USDC") == 1000 * E9 - hold
    assert book.apply(A, "order.cancel", {"order": buy}, oid()) is None
    assert book.held(A, "USDC") == 0
    assert book.balance(A, "USDC") == 1000 * E9
    assert book.apply(A, "order.cancel", {"order": buy}, oid()) == "order_not_open"


def test_a_partially_filled_maker_keeps_the_rest_of_its_hold() -> None:
    book = new_book()
    buy, _ = place(book, A, "buy", 100 * E9, 2 * E9)  # hold 200.2 USDC
    place(book, B, "sell", 100 * E9, E9 // 2, tif="ioc")
    # the maker pays 50 + 0.05 from its hold: 150.15 USDC left for the remaining 1.5 ETH
    assert resting(book, "buy") == [(buy, A, 100 * E9, 15 * E9 // 10, 150_150_000_000)]
    book.apply(A, "order.cancel_all", {"market": "ETH/USDC"}, oid())
    assert book.balance(A, "USDC") == 1000 * E9 - 50_050_000_000
    assert book.held(A, "USDC") == 0
    assert book.balance(A, "ETH") == 10 * E9 + E9 // 2


def test_self_trade_removes_the_resting_order_and_matching_goes_on() -> None:
    book = new_book()
    own, _ = place(book, A, "sell", 100 * E9, E9)
    other, _ = place(book, B, "sell", 101 * E9, E9)
    buy, _ = place(book, A, "buy", 101 * E9, E9)
    assert [(f.maker_order, f.price) for f in book.fills] == [(other, 101 * E9)]
    assert resting(book, "sell") == []
    assert resting(book, "buy") == []
    # A's own ask was removed: its 1 ETH came back, then it bought 1 ETH from B at 101 + 0.2%
    assert book.balance(A, "ETH") == 11 * E9
    assert book.held(A, "ETH") == 0
    assert book.balance(A, "USDC") == 1000 * E9 - 101_202_000_000
    assert own not in book.open
    assert buy not in book.open


def test_a_self_trade_alone_rests_the_taker() -> None:
    book = new_book()
    place(book, A, "sell", 100 * E9, E9)
    buy, _ = place(book, A, "buy", 100 * E9, E9)
    assert book.fills == []
    assert resting(book, "sell") == []
    assert resting(book, "buy") == [(buy, A, 100 * E9, E9, 100_100_000_000)]


def test_ioc_and_market_remainders_are_cancelled() -> None:
    book = new_book()
    place(book, B, "sell", 100 * E9, E9)
    _, outcome = place(book, A, "buy", 100 * E9, 2 * E9, tif="ioc")
    assert outcome is None
    assert len(book.fills) == 1
    assert book.fills[0].qty == E9
    assert resting(book, "buy") == []
    assert book.held(A, "USDC") == 0
    assert book.balance(A, "USDC") == 1000 * E9 - 100_200_000_000
    place(book, C, "sell", 100 * E9, E9)
    _, outcome = place(book, A, "buy", 150 * E9, 3 * E9, tif="ioc", type_="market")
    assert outcome is None
    assert book.fills[-1].price == 100 * E9
    assert resting(book, "buy") == []
    assert resting(book, "sell") == []


def test_post_only_that_would_take_is_rejected_whole() -> None:
    book = new_book()
    ask, _ = place(book, B, "sell", 100 * E9, E9)
    _, outcome = place(book, A, "buy", 100 * E9, E9, tif="post_only")
    assert outcome == "post_only_would_cross"
    assert book.fills == []
    assert book.balance(A, "USDC") == 1000 * E9
    bid, outcome = place(book, A, "buy", 99 * E9, E9, tif="post_only")
    assert outcome is None
    assert resting(book, "buy") == [(bid, A, 99 * E9, E9, 99_099_000_000)]
    # its own best ask counts too: a post-only buy reaching it is rejected, the ask stays
    _, outcome = place(book, B, "buy", 100 * E9, E9, tif="post_only")
    assert outcome == "post_only_would_cross"
    assert [o[0] for o in resting(book, "sell")] == [ask]


def test_gtc_remainder_rests_after_fills() -> None:
    book = new_book()
    place(book, B, "sell", 100 * E9, E9)
    buy, _ = place(book, A, "buy", 101 * E9, 2 * E9)
    # paid 100.2 for the fill, then holds 101 + 0.101 for the remaining 1 ETH at its limit
    assert resting(book, "buy") == [(buy, A, 101 * E9, E9, 101_101_000_000)]
    assert book.balance(A, "USDC") == 1000 * E9 - 100_200_000_000 - 101_101_000_000


def test_funds_at_placement_use_the_larger_fee_and_the_limit_price() -> None:
    # 1 ETH at 100: needs 100 + 0.2 (taker fee, the larger) even though it will rest
    exact = 100_200_000_000
    book = new_book(balances={(A, "USDC"): exact - 1, (B, "ETH"): E9})
    assert place(book, A, "buy", 100 * E9, E9)[1] == "insufficient_balance"
    book = new_book(balances={(A, "USDC"): exact, (B, "ETH"): E9})
    _buy, outcome = place(book, A, "buy", 100 * E9, E9)
    assert outcome is None
    assert resting(book, "buy")[0][4] == 100_100_000_000
    assert book.balance(A, "USDC") == 100_000_000
    assert place(book, B, "sell", 100 * E9, E9 + E9 // 10)[1] == "insufficient_balance"  # 1.1 > 1 ETH
    assert place(book, B, "sell", 100 * E9, E9)[1] is None  # exactly its ETH


def test_fees_round_up_per_fill() -> None:
    odd = MarketParams(
        symbol="ETH/USDC", base="ETH", quote="USDC", tick_size=E9, step_size=E9 // 10, min_qty=E9 // 10,
        max_qty=100 * E9, min_price=E9, max_price=10_000 * E9, maker_fee=333_333, taker_fee=333_334,
    )
    book = new_book(odd)
    place(book, B, "sell", 7 * E9, E9 // 10)
    place(book, B, "sell", 7 * E9, E9 // 10)
    place(book, A, "buy", 7 * E9, E9 // 5, tif="ioc")
    # n = 0.7 USDC per fill: taker 0.7e9 * 333_334 / 1e9 = 233_333.8 -> 233_334;
    # maker 233_333.1 -> 233_334; for both fills together once it would be 466_667.6 -> 466_668
    assert [(f.taker_fee, f.maker_fee) for f in book.fills] == [(233_334, 233_334)] * 2
    assert book.fees("USDC") == 4 * 233_334
    assert book.balance(A, "USDC") == 1000 * E9 - 2 * (700_000_000 + 233_334)


def test_a_maker_short_of_its_hold_pays_the_rest_from_free() -> None:
    # a buy of 0.2 ETH at 1: n = 2e8, fee ceil(1.0) = 1, hold 2e8 + 1; two fills of 0.1 cost
    # (1e8 + 1) each, one unit more than the hold; the maker has exactly 1 unit free for it
    book = new_book(TINY, {(A, "USDC"): 2 * 10**8 + 2, (B, "ETH"): E9})
    buy, _ = place(book, A, "buy", E9, 2 * 10**8)
    assert resting(book, "buy") == [(buy, A, E9, 2 * 10**8, 2 * 10**8 + 1)]
    assert book.balance(A, "USDC") == 1
    place(book, B, "sell", E9, 10**8, tif="ioc")
    assert resting(book, "buy") == [(buy, A, E9, 10**8, 10**8)]
    place(book, B, "sell", E9, 10**8, tif="ioc")
    assert len(book.fills) == 2
    assert resting(book, "buy") == []
    assert book.balance(A, "USDC") == 0
    assert book.balance(A, "ETH") == 2 * 10**8
    assert book.fees("USDC") == 4  # 1 + 1 per fill
    assert book.balance(B, "USDC") == 2 * (10**8 - 1)


def test_a_maker_that_cannot_pay_is_removed_without_the_fill() -> None:
    # as above, but nothing free: the second fill is 1 unit short, so the maker is removed, its
    # remaining hold (1e8) released, and the seller's ioc matches the next maker (C, at 1)
    book = new_book(TINY, {(A, "USDC"): 2 * 10**8 + 1, (B, "ETH"): E9, (C, "USDC"): E9})
    buy, _ = place(book, A, "buy", E9, 2 * 10**8)
    assert book.balance(A, "USDC") == 0
    behind, _ = place(book, C, "buy", E9, 10**8)
    place(book, B, "sell", E9, 10**8, tif="ioc")
    sell, outcome = place(book, B, "sell", E9, 10**8, tif="ioc")
    assert outcome is None
    assert [(f.maker_order, f.qty) for f in book.fills] == [(buy, 10**8), (behind, 10**8)]
    assert book.fills[1].taker_order == sell
    assert buy not in book.open
    assert book.held(A, "USDC") == 0
    assert book.balance(A, "USDC") == 10**8
    assert book.balance(A, "ETH") == 10**8


def test_a_taker_that_cannot_pay_a_fill_stops_and_does_not_rest() -> None:
    # a gtc buy of 0.3 at 1 needs 3e8 + ceil(1.5) = 3e8 + 2, exactly what A has; two asks of 0.1:
    # each fill costs 1e8 + 1; then 1e8 is left, short of the remainder's hold 1e8 + 1: cancelled
    book = new_book(TINY, {(A, "USDC"): 3 * 10**8 + 2, (B, "ETH"): E9})
    place(book, B, "sell", E9, 10**8)
    place(book, B, "sell", E9, 10**8)
    _, outcome = place(book, A, "buy", E9, 3 * 10**8)
    assert outcome is None
    assert len(book.fills) == 2
    assert resting(book, "buy") == []
    assert book.balance(A, "USDC") == 10**8
    # the same with three asks: the third fill (1e8 + 1) cannot be paid from 1e8, so it stops
    book = new_book(TINY, {(A, "USDC"): 3 * 10**8 + 2, (B, "ETH"): E9})
    asks = [place(book, B, "sell", E9, 10**8)[0] for _ in range(3)]
    place(book, A, "buy", E9, 3 * 10**8)
    assert len(book.fills) == 2
    assert [o[0] for o in resting(book, "sell")] == asks[2:]
    assert resting(book, "buy") == []
    assert book.balance(A, "USDC") == 10**8


def test_validation_order() -> None:
    book = new_book()
    ask, _ = place(book, B, "sell", 100 * E9, E9)
    cases: list[tuple[bytes, dict[str, Any], str]] = [
        (A, {**order("buy", 100 * E9, E9), "extra": 1}, "bad_body"),
        (OBS, {**order("buy", 100 * E9, E9), "extra": 1}, "bad_body"),  # exact keys come first
        (OBS, order("buy", "100", E9), "not_permitted"),  # then permission, then types
        (A, order("buy", "100", E9), "bad_body"),
        (A, order("buy", 100 * E9, E9, reduce_only=0), "bad_body"),
        (A, order("buy", 100 * E9, True), "bad_body"),
        (A, {**order("buy", 100 * E9, E9), "market": "BTC/USDC", "side": "up"}, "unknown_market"),
        (A, order("up", 100 * E9, E9, type_="stop", tif="fok"), "bad_side"),
        (A, order("buy", 100 * E9, E9, type_="stop", tif="fok"), "bad_type"),
        (A, order("buy", 100 * E9, E9, tif="fok"), "bad_tif"),
        (A, order("buy", 100 * E9, E9, type_="market", tif="gtc", reduce_only=True), "market_order_must_be_ioc"),
        (A, order("buy", 100 * E9 + 1, E9, reduce_only=True), "reduce_only_not_spot"),
        (A, order("buy", 10_001 * E9 + 1, 0), "price_out_of_range"),
        (A, order("buy", 0, E9), "price_out_of_range"),
        (A, order("buy", 100 * E9 + 1, 0), "bad_tick"),
        (A, order("buy", 100 * E9, 101 * E9 + 1), "qty_out_of_range"),
        (A, order("buy", 100 * E9, 0), "qty_out_of_range"),
        (A, order("buy", 100 * E9, E9 + 1, expires=1), "bad_step"),
        (A, order("buy", 100 * E9, 100 * E9, tif="post_only", expires=1000), "post_only_would_cross"),
        (A, order("buy", 100 * E9, 100 * E9, tif="post_only"), "post_only_would_cross"),
        (A, order("buy", 99 * E9, 100 * E9, tif="post_only"), "insufficient_balance"),
        (A, order("sell", 99 * E9, 11 * E9), "insufficient_balance"),
    ]
    for author, body, reason in cases:
        assert book.apply(author, "order.place", body, oid()) == reason, (body, reason)
    book.close_epoch(1000)
    assert book.apply(A, "order.place", order("buy", 100 * E9, 100 * E9, expires=1000), oid()) == "order_expired"
    assert book.apply(A, "order.place", order("buy", 100 * E9, E9, expires=1001), oid()) is None
    assert book.fills[-1].maker_order == ask  # the valid one took the ask
    book.check()


def test_cancel_reasons() -> None:
    book = new_book()
    ask, _ = place(book, B, "sell", 100 * E9, E9)
    taken, _ = place(book, C, "sell", 101 * E9, E9)
    place(book, A, "buy", 101 * E9, 2 * E9, tif="ioc")  # fills both
    mine, _ = place(book, B, "sell", 105 * E9, E9)
    rejected, outcome = place(book, B, "sell", 105 * E9 + 1, E9)
    assert outcome == "bad_tick"
    assert book.apply(A, "order.cancel", {"order": bytes(32)}, oid()) == "unknown_order"
    assert book.apply(B, "order.cancel", {"order": rejected}, oid()) == "unknown_order"
    assert book.apply(A, "order.cancel", {"order": mine}, oid()) == "not_order_owner"
    assert book.apply(A, "order.cancel", {"order": taken}, oid()) == "not_order_owner"
    assert book.apply(B, "order.cancel", {"order": ask}, oid()) == "order_not_open"
    assert book.apply(B, "order.cancel", {"order": mine, "x": 1}, oid()) == "bad_body"
    assert book.apply(B, "order.cancel", {"order": b"short"}, oid()) == "bad_body"
    assert book.apply(OBS, "order.cancel_all", {"market": "ETH/USDC"}, oid()) == "not_permitted"
    assert book.apply(A, "order.cancel_all", {"market": "ETH/USDC"}, oid()) is None  # nothing open
    assert book.apply(A, "order.cancel_all", {"market": "BTC/USDC"}, oid()) == "unknown_market"
    assert book.apply(B, "order.cancel", {"order": mine}, oid()) is None
    assert book.held(B, "ETH") == 0
    assert book.balance(B, "ETH") == 9 * E9


def test_cancel_all_only_touches_its_author_and_market() -> None:
    two = [ETH, replace(ETH, symbol="ETH/USDC-2")]
    book = ReferenceBook({A: "trader", B: "trader"}, ["USDC", "ETH"],
                         [(w, t, 1000 * E9) for w in (A, B) for t in ("USDC", "ETH")], two)
    mine = [oid(), oid()]
    for i, op_id in enumerate(mine):
        assert book.apply(A, "order.place", order("sell", (100 + i) * E9, E9), op_id) is None
    other_market = oid()
    book.apply(A, "order.place", order("sell", 100 * E9, E9, market="ETH/USDC-2"), other_market)
    theirs = oid()
    book.apply(B, "order.place", order("sell", 100 * E9, E9), theirs)
    assert book.apply(A, "order.cancel_all", {"market": "ETH/USDC"}, oid()) is None
    assert set(book.open) == {other_market, theirs}
    assert not set(mine) & set(book.open)
    assert book.held(A, "ETH") == E9
    assert book.balance(A, "ETH") == 999 * E9
    book.check()


def test_expiry_at_a_checkpoint_releases_holds() -> None:
    book = new_book()
    early, _ = place(book, A, "buy", 100 * E9, E9, expires=500)
    late, _ = place(book, A, "buy", 99 * E9, E9, expires=1500)
    never, _ = place(book, A, "buy", 98 * E9, E9)
    book.close_epoch(499)
    assert set(book.open) == {early, late, never}
    book.close_epoch(500)  # expires <= time: gone
    assert set(book.open) == {late, never}
    assert book.held(A, "USDC") == buy_hold(99 * E9, E9, ETH.maker_fee) + buy_hold(98 * E9, E9, ETH.maker_fee)
    book.close_epoch(10**6)
    assert set(book.open) == {never}
    book.check()


def test_transfers_move_free_balance_only() -> None:
    book = new_book()
    place(book, A, "buy", 100 * E9, 9 * E9)  # holds 900.9 USDC: 99.1 free
    assert book.apply(A, "transfer", {"to": B, "token": "USDC", "amount": 100 * E9}, oid()) == "insufficient_balance"
    assert book.apply(A, "transfer", {"to": B, "token": "USDC", "amount": 99_100_000_000}, oid()) is None
    assert book.apply(A, "transfer", {"to": A, "token": "USDC", "amount": 1}, oid()) == "self_transfer"
    assert book.apply(OBS, "transfer", {"to": A, "token": "USDC", "amount": 1}, oid()) == "not_permitted"
    assert book.balance(A, "USDC") == 0
    assert book.held(A, "USDC") == 900_900_000_000
    book.check()


# -- the reference under random order flow: its own laws --------------------------------------


@settings(max_examples=60)
@given(intents(max_intents=40), st.sampled_from([(), (600,), (600, 2500)]))
def test_the_reference_keeps_its_laws_under_random_flow(flow: list[Any], checkpoints: tuple[int, ...]) -> None:
    book = reference_for(MARKET_PARAMS)
    ids = synthetic_ids(len(flow))
    at = {len(flow) * (k + 1) // (len(checkpoints) + 1): time for k, time in enumerate(checkpoints)}
    for index, (intent, op_id) in enumerate(zip(flow, ids, strict=True)):
        if index in at:
            book.close_epoch(at[index])
        before = len(book.fills)
        body = intent.resolve(ids)
        book.apply(REF_ACCOUNTS[intent.author], intent.kind, body, op_id)
        book.check()
        for symbol in book.markets:
            bids, asks = book.bids[symbol], book.asks[symbol]
            assert not (bids and asks and bids[0].price >= asks[0].price)  # never crossed at rest
            assert bids == sorted(bids, key=lambda o: (-o.price, o.placed))
            assert asks == sorted(asks, key=lambda o: (o.price, o.placed))
        for fill in book.fills[before:]:
            assert fill.taker_order == op_id
            assert fill.taker != fill.maker
            assert fill.qty > 0
        if intent.kind == "order.place" and body.get("tif") == "ioc":
            assert op_id not in book.open
        if intent.kind == "order.place" and body.get("tif") == "post_only":
            assert len(book.fills) == before
        for account in REF_ACCOUNTS:
            for token in book.tokens:
                assert book.held(account, token) >= 0


@pytest.mark.parametrize("rate", [0, 1, 333_333, 999_999_999])
def test_fee_never_exceeds_the_notional(rate: int) -> None:
    for n in (0, 1, 2, 999, 10**9, 10**12 + 7):
        assert 0 <= fee(n, rate) <= n
        assert fee(n, rate) * 10**9 >= n * rate > (fee(n, rate) - 1) * 10**9 if n * rate else fee(n, rate) == 0
