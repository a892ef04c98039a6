"""Liquidation (`Ledger._liquidate`), worked by hand: above the bankruptcy price, at it, and a
bankrupt account whose shortfall the insurance pool pays in part; every rejection reason; and the
premium split exactly between the liquidator and the insurance pool."""

from __future__ import annotations

from crdt.ledger import Reason
from crdt.markets.perp import FLAT, Position
from tests.crdt.markets.test_perp_positions import LIQUIDATOR, USDC, A, B, C, Desk

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


def test_a_bankrupt_account_is_paid_for_by_the_insurance_pool_as_far_as_it_holds() -> None:
    desk = Desk()
    long_a(desk)
    desk.price(1900, 2_000)  # A: AV 99.4 - 110 = -10.6
    a = desk.accounts[A]
    assert desk.ledger.margin(a, USDC)[0] == -10_600_000_000
    assert liquidate(desk, C, E9 // 10) == Reason.NOT_PERMITTED  # a market maker is not a liquidator
    op, reason = desk.do(LIQUIDATOR, "liquidate", {"account": a, "market": "ETH-PERP", "qty": E9 // 10})
    assert reason is None
    record = desk.ledger.liquidations[op.op_id]
    assert record.price == 1805 * E9  # 1900 · 0.95: a bankrupt account closes at the premium price
    # A's loss: 300 - 180.5 = 119.5 on 99.4, so it owes 20.1; the premium of 9.5 puts 2.85 in the
    # pool, which pays it towards A's debt at once
    assert record.insurance == 2_850_000_000
    assert record.covered == 2_850_000_000
    assert desk.ledger.insurance == {}
    assert desk.ledger.debt == {(a, USDC): 20_100_000_000 - 2_850_000_000}
    assert desk.ledger.entitlement(a, USDC) == 0
    accounts = desk.accounts
    owed = desk.ledger.entitlements(accounts, USDC)
    held = desk.ledger.deposits[USDC] - desk.ledger.fees(USDC)
    assert sum(owed) <= held
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
