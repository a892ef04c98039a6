"""Liquidation (`Ledger._liquidate`), worked by hand: above the bankruptcy price, at it, and a
bankrupt account whose shortfall the insurance pool pays in part; every rejection reason; and the
premium split exactly between the liquidator and the insurance pool."""

from __future__ import annotations

from dataclasses import replace

from crdt.ledger import Reason
from crdt.markets.perp import FLAT, Position
from tests.crdt.markets.test_perp_positions import LIQUIDATOR, USDC, WIDE, A, B, C, D, Desk

E9 = 10**9


def long_a(desk: Desk) -> None:
    """A long 0.1 at 3000 (B short): A holds 99.4 USDC after its 0.6 taker fee."""
    desk.price(3000, 1_000)
    desk.order(B, "sell", 3000, 0.1)
    desk.order(A, "buy", 3000, 0.1, "ioc")
    assert desk.balance(A) == 99_400_000_000


def liquidate(desk: Desk, who: int, qty: int, account: int = A, market: str = "ETH-PERP") -> Reason | None:
    return desk.do(who, "liquidate", {"account": desk.accounts[account], "market": market, "qty": qty})[1]


def test_liquidation_above_the_bankruptcy_price_splits_the_premium_exactly() -> None:
    desk = Desk()
    long_a(desk)
    desk.price(2250, 2_000)  # AV 99.4 - 75 = 24.4, MMR 22.5: not yet
    assert liquidate(desk, LIQUIDATOR, E9 // 10) == Reason.NOT_LIQUIDATABLE
    desk.price(2200, 3_000)  # AV 19.4 < MMR 22
    a = desk.accounts[A]
    assert desk.ledger.margin(a, USDC) == (19_400_000_000, 44 * E9, 22 * E9)
    op, reason = desk.do(LIQUIDATOR, "liquidate", {"account": a, "market": "ETH-PERP", "qty": E9 // 10})
    assert reason is None
    # the premium price 2200 · 0.95 = 2090 is above the bankruptcy price 2200 - 19.4 / 0.1 = 2006
    record = desk.ledger.liquidations[op.op_id]
    assert (record.price, record.taken_at) == (2090 * E9, 2123 * E9)  # 30% of the 110 premium: 33
    assert desk.position(A) == FLAT
    assert desk.balance(A) == 99_400_000_000 - 91 * E9  # closed at 209 against 300: 8.4 left
    assert desk.position(LIQUIDATOR) == Position(E9 // 10, 212_300_000_000, 0)
    # of the 11 USDC premium (220 at the oracle against 209), 3.3 to insurance, 7.7 to the liquidator
    assert desk.ledger.insurance == {USDC: 3_300_000_000}
    assert record.insurance == 3_300_000_000
    assert desk.ledger.unrealised_pnl(desk.accounts[LIQUIDATOR], USDC) == 7_700_000_000
    assert record.covered == 0


def test_liquidation_at_the_bankruptcy_price_leaves_the_account_at_zero() -> None:
    desk = Desk()
    long_a(desk)
    desk.price(2100, 2_000)  # AV 9.4: the premium price 1995 is below the bankruptcy price 2006
    assert liquidate(desk, LIQUIDATOR, E9 // 10) is None
    assert desk.balance(A) == 0
    assert desk.ledger.collateral(desk.accounts[A], USDC) == 0
    assert desk.position(LIQUIDATOR).open_notional == 203_420_000_000  # 2006 + 30% of 94 = 2034.2
    assert desk.ledger.insurance == {USDC: 2_820_000_000}
    assert desk.ledger.unrealised_pnl(desk.accounts[LIQUIDATOR], USDC) == 6_580_000_000  # 210 - 203.42


def test_a_bankrupt_account_is_paid_for_by_the_insurance_pool() -> None:
    assert WIDE.perp is not None
    desk = Desk(replace(WIDE, perp=replace(WIDE.perp, insurance_pool_ratio=E9)))  # every premium to insurance
    desk.price(3000, 1_000)
    desk.order(B, "sell", 3000, 0.1)
    desk.order(D, "sell", 3000, 0.1)
    desk.order(A, "buy", 3000, 0.1, "ioc")
    desk.order(C, "buy", 3000, 0.1, "ioc")  # A and C long 0.1 each, 99.4 USDC left
    desk.price(2200, 2_000)
    assert liquidate(desk, LIQUIDATOR, E9 // 10, account=C) is None  # at 2090: 11 USDC to the pool
    assert desk.ledger.insurance == {USDC: 11 * E9}
    desk.price(2000, 3_000)  # A: AV 99.4 - 100 = -0.6
    a = desk.accounts[A]
    assert desk.ledger.margin(a, USDC)[0] == -600_000_000
    assert liquidate(desk, C, E9 // 10) == Reason.NOT_PERMITTED  # a market maker is not a liquidator
    op, reason = desk.do(LIQUIDATOR, "liquidate", {"account": a, "market": "ETH-PERP", "qty": E9 // 10})
    assert reason is None
    record = desk.ledger.liquidations[op.op_id]
    # a bankrupt account closes at the premium price, 2000 · 0.95 = 1900: it owes 110 - 99.4 = 10.6,
    # which the pool (11, and this premium's 10) pays at once
    assert (record.price, record.taken_at) == (1900 * E9, 2000 * E9)
    assert record.insurance == 10 * E9
    assert record.covered == 10_600_000_000
    assert desk.ledger.insurance == {USDC: 21 * E9 - 10_600_000_000}
    assert desk.ledger.debt == {}
    assert desk.ledger.collateral(a, USDC) == 0
    assert record.deleveraged == ()
    desk.ledger.check_conservation()


def test_liquidate_rejections() -> None:
    desk = Desk()
    long_a(desk)
    desk.price(2200, 2_000)
    assert liquidate(desk, A, E9 // 10) == Reason.NOT_PERMITTED  # a trader
    assert liquidate(desk, LIQUIDATOR, E9 // 10, account=LIQUIDATOR) == Reason.SELF_LIQUIDATION
    assert desk.do(LIQUIDATOR, "liquidate", {"account": bytes(20), "market": "ETH-PERP", "qty": 1})[1] == (
        Reason.UNKNOWN_ACCOUNT)
    assert liquidate(desk, LIQUIDATOR, E9 // 10, market="BTC-PERP") == Reason.UNKNOWN_MARKET
    assert liquidate(desk, LIQUIDATOR, E9 // 10, account=C) == Reason.NO_POSITION
    assert liquidate(desk, LIQUIDATOR, E9) == Reason.QTY_OUT_OF_RANGE
    assert liquidate(desk, LIQUIDATOR, 0) == Reason.QTY_OUT_OF_RANGE
    assert liquidate(desk, LIQUIDATOR, E9 // 10 + 1) == Reason.QTY_OUT_OF_RANGE
    assert liquidate(desk, LIQUIDATOR, E9 // 20 + 1) == Reason.BAD_STEP
    assert liquidate(desk, LIQUIDATOR, E9 // 20) is None  # a partial liquidation
    assert desk.position(A).size == E9 // 20


def test_a_bankruptcy_beyond_the_insurance_pool_deleverages_the_opposite_positions() -> None:
    desk = Desk()
    desk.price(3000, 1_000)
    desk.order(B, "sell", 3000, 0.06)
    desk.order(C, "sell", 3000, 0.04)
    desk.order(A, "buy", 3000, 0.1, "ioc")  # A long 0.1 against B short 0.06 and C short 0.04
    assert desk.balance(A) == 99_400_000_000
    desk.price(1900, 2_000)  # A: AV 99.4 - 110 = -10.6, an empty insurance pool
    b, c = desk.accounts[B], desk.accounts[C]
    # profit times leverage: B 66 · 114 / (99.82 + 66), C 44 · 76 / (99.88 + 44): B first
    op, reason = desk.do(LIQUIDATOR, "liquidate", {"account": desk.accounts[A], "market": "ETH-PERP",
                                                   "qty": E9 // 10})
    assert reason is None
    record = desk.ledger.liquidations[op.op_id]
    assert record.deleveraged == (b, c)
    assert record.price == 2006 * E9  # the bankruptcy price: 1900 + 10.6 / 0.1
    assert desk.position(A) == FLAT
    assert desk.ledger.collateral(desk.accounts[A], USDC) == 0  # it ends at zero, owing nothing
    assert desk.ledger.debt == {}
    assert desk.position(B) == FLAT  # both shorts closed at 2006, not at the oracle's 1900
    assert desk.position(C) == FLAT
    # B sold 0.06 at 3000 as a maker (fee 0.18) and bought it back at 2006: + 59.64
    assert desk.balance(B) == 100 * E9 - 180_000_000 + 59_640_000_000
    assert desk.ledger.positions == {}
    assert desk.ledger.pnl_pool == {}
    desk.ledger.check_conservation()


def test_a_liquidate_the_liquidator_cannot_carry_leaves_no_trace() -> None:
    """Regression: the liquidator's margin was checked after both accounts' funding had been
    settled, so a liquidate rejected with insufficient_margin still changed the state."""
    desk = Desk()
    long_a(desk)
    desk.order(C, "buy", 3030, 0.02)  # bids above the oracle: the long owes funding
    desk.version += 1
    desk.ledger.close_epoch(desk.version, 3_600_000)  # an interval crossed
    assert desk.ledger.pending_funding("ETH-PERP", desk.position(A)) > 0
    desk.price(2200, 3_601_000)
    liquidator = desk.accounts[LIQUIDATOR]
    assert desk.do(LIQUIDATOR, "transfer", {"to": desk.accounts[B], "token": USDC, "amount": 99 * E9})[1] is None
    before = desk.ledger.state_hash()
    assert liquidate(desk, LIQUIDATOR, E9 // 10) == Reason.INSUFFICIENT_MARGIN  # 1 USDC cannot carry 0.1 ETH
    assert desk.ledger.state_hash() == before
    assert desk.ledger.position("ETH-PERP", liquidator) == FLAT
