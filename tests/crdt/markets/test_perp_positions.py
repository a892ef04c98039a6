"""Perpetual positions on the ledger (crdt/markets/perp.py, `Ledger._take_perp`): worked
examples computed by hand here (a long and a short, a partial close, a flip, margin at the fill
and on withdrawals, reduce-only, the take bound, a stale oracle) and the payout of positions
closed at the oracle price, bankrupt accounts included."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from crdt import testing
from crdt.genesis import Genesis, Role
from crdt.ledger import Ledger, Reason
from crdt.markets.book import DONE, FILLED, REDUCE_ONLY, UNDERCOLLATERALIZED
from crdt.markets.config import Market
from crdt.markets.perp import FLAT, Position, fill_position, unrealised
from crdt.ops import SignedOp, sign_op
from crdt.types import Symbol
from tests.crdt.crdt_support import ADJUDICATOR, KEYS, TOKENS
from tests.crdt.markets.test_perp_genesis import ETH_PERP

E9 = 10**9
USDC = Symbol("USDC")
ORACLE, A, B, C, D, E, LIQUIDATOR = range(7)
ROLES = [Role.ORACLE, Role.TRADER, Role.TRADER, Role.MARKET_MAKER, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR]


assert ETH_PERP.perp is not None
# ETH_PERP with no circuit breaker to speak of (a 100% band): the worked examples move the price far
WIDE = replace(ETH_PERP, perp=replace(ETH_PERP.perp, circuit_band=E9))


def genesis(market: Market = WIDE) -> Genesis:
    return testing.make_genesis(KEYS[: len(ROLES)], TOKENS, roles=ROLES, initial=100 * E9, adjudicator=ADJUDICATOR,
                                markets=(market,))


class Desk:
    """Operations applied one after another to one ledger, with conservation checked after each."""

    def __init__(self, market: Market = WIDE) -> None:
        self.ledger = Ledger(genesis(market))
        self.accounts = [p.address for p in self.ledger.genesis.participants]
        self.seqs = [0] * len(ROLES)
        self.version = 0

    def do(self, who: int, kind: str, body: dict[str, Any]) -> tuple[SignedOp, Reason | None]:
        self.seqs[who] += 1
        op = sign_op(self.ledger.genesis.context(), KEYS[who], self.seqs[who], [], kind, body)
        reason = self.ledger.apply(op)
        self.ledger.check_conservation()
        return op, reason

    def order(self, who: int, side: str, price: float, qty: float, tif: str = "gtc", reduce_only: bool = False,
              order_type: str = "limit") -> tuple[SignedOp, Reason | None]:
        return self.do(who, "order.place", {
            "market": "ETH-PERP", "side": side, "type": order_type, "tif": tif, "price": round(price * 100) * 10**7,
            "qty": round(qty * 1000) * 10**6, "reduce_only": reduce_only, "expires": 0,
        })

    def price(self, price: int, time: int) -> None:
        """The oracle posts `price` (whole USDC) and a checkpoint at `time` fixes it."""
        assert self.do(ORACLE, "oracle.price", {"market": "ETH-PERP", "price": price * E9})[1] is None
        self.version += 1
        self.ledger.close_epoch(self.version, time)
        self.ledger.check_conservation()

    def position(self, who: int) -> Position:
        return self.ledger.position("ETH-PERP", self.accounts[who])

    def balance(self, who: int) -> int:
        return self.ledger.balance(self.accounts[who], USDC)

    def status(self, op: SignedOp) -> str:
        return self.ledger.closed[op.op_id][0]


def test_the_position_arithmetic_by_hand() -> None:
    long = fill_position(FLAT, True, 3000 * E9, E9 // 100)  # buy 0.01 at 3000: 30 USDC
    assert long == (Position(E9 // 100, 30 * E9), 0)
    assert long.position.entry_price == 3000 * E9
    half = fill_position(long.position, False, 3300 * E9, E9 // 200)  # sell 0.005 at 3300: 16.5 for a basis of 15
    assert half == (Position(E9 // 200, 15 * E9), 1_500_000_000)
    flip = fill_position(Position(-E9 // 100, 30 * E9), True, 3300 * E9, 15 * E9 // 1000)  # a short of 0.01 buys 0.015
    assert flip == (Position(E9 // 200, 16_500_000_000), -3 * E9)
    assert unrealised(Position(E9 // 100, 30 * E9), 3300 * E9) == 3 * E9
    assert unrealised(Position(-E9 // 100, 30 * E9), 3300 * E9) == -3 * E9
    # a short's cost is rounded up: 1 base unit at 1.5 e9 is 1.5 quote units, which it pays as 2
    assert unrealised(Position(-1, 1), 1_500_000_000) == -1
    assert unrealised(Position(1, 1), 1_500_000_000) == 0  # and a long is paid 1


def test_a_long_and_a_short_then_a_partial_close_and_a_flip() -> None:
    desk = Desk()
    desk.price(3000, 1_000)
    ask, reason = desk.order(A, "sell", 3000, 0.01)  # A rests a sell: a perp order holds nothing
    assert reason is None
    assert desk.ledger.order(ask.op_id) is not None
    assert desk.ledger.held_funds == {}
    taker, reason = desk.order(B, "buy", 3000, 0.01, "ioc")
    assert reason is None
    assert desk.status(taker) == FILLED
    assert desk.status(ask) == FILLED
    # notional 30 USDC: B pays the 0.2% taker fee (0.06), A the 0.1% maker fee (0.03)
    assert desk.position(B) == Position(E9 // 100, 30 * E9)
    assert desk.position(A) == Position(-E9 // 100, 30 * E9)
    assert (desk.balance(B), desk.balance(A)) == (100 * E9 - 60_000_000, 100 * E9 - 30_000_000)
    assert desk.ledger.fees(USDC) == 90_000_000
    assert desk.ledger.margin(desk.accounts[B], USDC) == (100 * E9 - 60_000_000, 6 * E9, 3 * E9)

    desk.price(3300, 2_000)  # B is 3 USDC up, A 3 down
    assert desk.ledger.margin(desk.accounts[B], USDC)[0] == 100 * E9 - 60_000_000 + 3 * E9
    assert desk.ledger.margin(desk.accounts[A], USDC)[0] == 100 * E9 - 30_000_000 - 3 * E9
    desk.order(C, "buy", 3300, 0.005)
    _, reason = desk.order(B, "sell", 3300, 0.005, "ioc")  # B closes half: 16.5 against a basis of 15
    assert reason is None
    assert desk.position(B) == Position(E9 // 200, 15 * E9)
    assert desk.position(C) == Position(E9 // 200, 16_500_000_000)
    assert desk.balance(B) == 100 * E9 - 60_000_000 + 1_500_000_000 - 33_000_000  # + PnL 1.5 - fee 0.033
    assert desk.balance(C) == 100 * E9 - 16_500_000
    assert desk.ledger.pnl_pool == {"ETH-PERP": -1_500_000_000}

    desk.order(D, "sell", 3300, 0.015)
    _, reason = desk.order(A, "buy", 3300, 0.015, "ioc")  # A's short of 0.01 flips to a long of 0.005
    assert reason is None
    assert desk.position(A) == Position(E9 // 200, 16_500_000_000)
    assert desk.position(D) == Position(-15 * E9 // 1000, 49_500_000_000)
    assert desk.balance(A) == 100 * E9 - 30_000_000 - 3 * E9 - 99_000_000  # - loss 3 - fee 0.099
    assert desk.ledger.pnl_pool == {"ETH-PERP": 1_500_000_000}  # -(15 + 16.5 + 16.5 - 49.5)
    assert sum(desk.position(who).size for who in (A, B, C, D)) == 0


def test_a_fill_that_would_leave_an_account_below_initial_margin() -> None:
    desk = Desk()
    desk.price(3000, 1_000)
    ask, _ = desk.order(A, "sell", 3000, 1)  # notional 3000: IMR 600, more than A's 100
    bid, reason = desk.order(D, "buy", 3000, 1, "ioc")  # the maker is checked first: removed, no fill
    assert reason is None
    assert desk.status(ask) == UNDERCOLLATERALIZED
    assert desk.status(bid) == DONE
    assert desk.ledger.positions == {}
    assert desk.do(B, "transfer", {"to": desk.accounts[C], "token": USDC, "amount": 95 * E9})[1] is None
    rest, _ = desk.order(C, "sell", 3000, 0.1)  # C can carry 0.1 (IMR 60 on 195)
    small, reason = desk.order(B, "buy", 3000, 0.1, "ioc")  # B, worth 5, cannot: the taker stops
    assert reason is None
    assert desk.status(small) == UNDERCOLLATERALIZED
    assert desk.ledger.positions == {}
    assert desk.ledger.order(rest.op_id) is not None
    _, reason = desk.order(E, "buy", 3000, 0.1, "ioc")  # E, worth 100, can
    assert reason is None
    assert desk.position(E).size == E9 // 10
    assert desk.position(C).size == -E9 // 10


def test_the_leverage_cap_limits_the_notional_at_each_leverage() -> None:
    assert ETH_PERP.perp is not None
    small = replace(ETH_PERP, perp=replace(ETH_PERP.perp, max_notional_at_open=tuple(
        cap * E9 for cap in (1000, 500, 200, 100, 50))))  # USDC at 1x .. 5x
    desk = Desk(small)
    desk.price(3000, 1_000)
    account, ledger = desk.accounts[B], desk.ledger
    assert ledger._margin_ok(account, small, Position(E9 // 20, 150 * E9), 0)  # 150 on 100: 2x, cap 500
    assert not ledger._margin_ok(account, small, Position(4 * E9 // 30, 400 * E9), 0)  # 4x: cap 100, IMR 80 fits
    assert not ledger._margin_ok(account, small, Position(E9, 3000 * E9), 0)  # IMR 600 > AV 100
    desk.order(A, "sell", 3000, 0.04)
    desk.order(B, "buy", 3000, 0.04, "ioc")  # 120 on 100: 2x, within the cap of 500
    assert desk.position(B).size == 4 * E9 // 100
    assert desk.do(D, "transfer", {"to": desk.accounts[C], "token": USDC, "amount": 95 * E9})[1] is None
    ask, _ = desk.order(C, "sell", 3000, 0.1)  # C carries 300 on 195: 2x
    over, _ = desk.order(B, "buy", 3000, 0.1, "ioc")  # 420 in all: 5x on ~100, cap 50 (IMR 84 would fit)
    assert desk.status(over) == UNDERCOLLATERALIZED
    assert desk.position(B).size == 4 * E9 // 100
    assert desk.ledger.order(ask.op_id) is not None


def test_withdrawals_and_transfers_are_limited_by_margin() -> None:
    desk = Desk()
    desk.price(3000, 1_000)
    desk.order(A, "sell", 3000, 0.1)
    desk.order(B, "buy", 3000, 0.1, "ioc")  # B: long 0.1 (300 USDC), IMR 60, balance 99.4
    value, initial, _ = desk.ledger.margin(desk.accounts[B], USDC)
    assert (value, initial) == (99_400_000_000, 60 * E9)
    _, reason = desk.do(B, "withdraw", {"token": USDC, "amount": 40 * E9})
    assert reason == Reason.INSUFFICIENT_MARGIN  # at most 39.4 may leave
    _, reason = desk.do(B, "transfer", {"to": desk.accounts[C], "token": USDC, "amount": 39_400_000_001})
    assert reason == Reason.INSUFFICIENT_MARGIN
    _, reason = desk.do(B, "transfer", {"to": desk.accounts[C], "token": USDC, "amount": 39_400_000_000})
    assert reason is None
    assert desk.ledger.margin(desk.accounts[B], USDC)[:2] == (60 * E9, 60 * E9)
    # below initial margin (the price falls), only orders that reduce are taken
    desk.price(2990, 2_000)
    _, reason = desk.order(B, "buy", 2990, 0.01)
    assert reason == Reason.INSUFFICIENT_MARGIN
    _, reason = desk.order(B, "sell", 2990, 0.05)
    assert reason is None


def test_reduce_only_never_grows_or_flips_a_position() -> None:
    desk = Desk()
    desk.price(3000, 1_000)
    _, reason = desk.order(B, "sell", 3000, 0.01, reduce_only=True)
    assert reason == Reason.NOTHING_TO_REDUCE
    desk.order(A, "sell", 3000, 0.02)
    desk.order(B, "buy", 3000, 0.02, "ioc")  # B long 0.02
    _, reason = desk.order(B, "buy", 3000, 0.01, reduce_only=True)
    assert reason == Reason.NOTHING_TO_REDUCE
    desk.order(C, "buy", 3000, 0.05)
    closing, reason = desk.order(B, "sell", 3000, 0.05, "ioc", reduce_only=True)  # shrunk to 0.02
    assert reason is None
    assert desk.status(closing) == DONE
    assert desk.position(B) == FLAT
    assert desk.position(C).size == 2 * E9 // 100
    # a resting reduce-only order that can no longer reduce is removed when met
    resting, reason = desk.order(C, "sell", 3010, 0.02, reduce_only=True)  # C: long 0.02
    assert reason is None
    desk.order(D, "buy", 3000, 0.02)
    desk.order(C, "sell", 3000, 0.02, "ioc")  # C closes at D's bid: its reduce-only ask has nothing left
    assert desk.position(C) == FLAT
    _, reason = desk.order(E, "buy", 3010, 0.02, "ioc")
    assert reason is None
    assert desk.status(resting) == REDUCE_ONLY
    assert desk.position(E) == FLAT


def test_the_take_bound_and_a_stale_oracle() -> None:
    desk = Desk()
    _, reason = desk.order(B, "buy", 3000, 0.01)
    assert reason == Reason.ORACLE_STALE  # no price yet
    desk.price(3000, 1_000)
    desk.order(A, "sell", 3160, 0.01)  # above 3000 · 1.05 = 3150
    far, _ = desk.order(B, "buy", 3200, 0.01, "ioc")
    assert desk.status(far) == DONE
    assert desk.ledger.positions == {}
    desk.order(A, "sell", 3150, 0.01)
    near, _ = desk.order(B, "buy", 3200, 0.01, "ioc")
    assert desk.ledger.order_fills[near.op_id]  # 3150 is within the bound
    desk.order(C, "buy", 3000, 0.01)
    desk.version += 1
    desk.ledger.close_epoch(desk.version, 1_000 + 60_001)  # no post for longer than oracle_staleness
    _, reason = desk.order(B, "buy", 3000, 0.01)
    assert reason == Reason.ORACLE_STALE
    _, reason = desk.order(B, "sell", 3000, 0.01, "ioc", reduce_only=True)  # closing still works
    assert reason is None
    assert desk.position(B) == FLAT


def test_payouts_close_positions_at_the_oracle_price_and_cover_a_bankrupt_account() -> None:
    desk = Desk()
    desk.price(3000, 1_000)
    desk.order(A, "sell", 3000, 0.15)
    desk.order(B, "buy", 3000, 0.15, "ioc")  # B long 0.15 (450 USDC, 4.5x), A short 0.15
    accounts = desk.accounts
    owed = desk.ledger.entitlements(accounts, USDC)
    assert owed[A] == 100 * E9 - 450_000_000
    assert owed[B] == 100 * E9 - 900_000_000
    desk.price(3900, 2_000)  # A loses 135 on 99.55: worth -35.45, paid nothing; B gains 135
    assert desk.ledger.entitlement(accounts[A], USDC) == 0
    raw_b = 100 * E9 - 900_000_000 + 135 * E9
    owed = desk.ledger.entitlements(accounts, USDC)
    shortfall = 135 * E9 - (100 * E9 - 450_000_000)  # A's loss beyond its collateral, no insurance yet
    assert owed[A] == 0
    assert owed[B] == raw_b - shortfall
    assert sum(owed) <= desk.ledger.deposits[USDC] - desk.ledger.fees(USDC)
    assert sum(owed) == sum(desk.ledger.balance(a, USDC) for a in accounts) - 0  # exactly what is there
    desk.ledger.insurance[USDC] = 10 * E9  # an insurance pool pays the first 10 of it
    desk.ledger.deposits[USDC] += 10 * E9
    assert desk.ledger.entitlements(accounts, USDC)[B] == raw_b - shortfall + 10 * E9


@pytest.mark.parametrize("seed", range(3))
def test_a_loss_beyond_the_balance_is_owed_and_counted_against_what_comes_in(seed: int) -> None:
    desk = Desk()
    desk.price(3000, 1_000)
    desk.order(A, "sell", 3000, 0.1)
    desk.order(B, "buy", 3000, 0.1, "ioc")
    price = 4000 + seed * 200
    desk.price(price, 2_000)  # A (short 0.1) is under water: it buys back and owes the rest
    desk.order(C, "sell", price, 0.1)
    _, reason = desk.order(A, "buy", price, 0.1, "ioc", reduce_only=True)
    assert reason is None
    assert desk.position(A) == FLAT
    loss = (price - 3000) * E9 // 10
    fee = -(-price * E9 // 10 * 2_000_000 // E9)
    left = 100 * E9 - 300_000_000 - loss - fee
    a = desk.accounts[A]
    assert desk.ledger.collateral(a, USDC) == left
    if left < 0:
        assert desk.ledger.debt[(a, USDC)] == -left
        assert desk.balance(A) == 0
        assert desk.ledger.entitlement(a, USDC) == 0
        _, reason = desk.do(E, "transfer", {"to": a, "token": USDC, "amount": -left + E9})
        assert reason is None
        assert desk.ledger.collateral(a, USDC) == E9
        # what it owes is not spendable: at most its collateral may leave
        assert desk.do(A, "transfer", {"to": desk.accounts[E], "token": USDC, "amount": 2 * E9})[1] == (
            Reason.INSUFFICIENT_MARGIN)
        assert desk.do(A, "transfer", {"to": desk.accounts[E], "token": USDC, "amount": E9})[1] is None
    assert desk.ledger.entitlement(a, USDC) == max(left, 0)


def test_funding_over_a_prorated_interval_by_hand() -> None:
    desk = Desk()  # ETH_PERP: hourly funding, at most 0.1% an interval, impact prices at 50 USDC
    desk.price(3000, 1_000)  # the first sample (an empty book: no premium) starts the interval at t = 1000
    desk.order(A, "sell", 3000, 0.01)
    desk.order(B, "buy", 3000, 0.01, "ioc")  # B long 0.01, A short 0.01
    desk.order(C, "buy", 3030, 0.02)  # bids 1% above the oracle: longs should pay
    state = desk.ledger.funding["ETH-PERP"]
    assert (state.cumulative, state.samples, state.since) == (0, 1, 1_000)
    for time in (1_800_000, 3_600_000):
        desk.version += 1
        desk.ledger.close_epoch(desk.version, time)
    # the impact bid: 50 USDC sold into 3030 is 0.016501650 ETH, at an average of 3030.000060...
    sold = 50 * E9 * E9 // (3030 * E9)
    assert sold == 16_501_650
    sample = (50 * E9 * E9 // sold - 3000 * E9) * E9 // (3000 * E9)  # about 1%
    assert 9_999_000 < sample < 10_001_000
    # (0 + sample + sample) / 3 is about 0.67%, clamped to 0.1%, for 3 599 000 ms of an hour
    rate = 1_000_000 * 3_599_000 // 3_600_000
    state = desk.ledger.funding["ETH-PERP"]
    assert state.rate == rate == 999_722
    assert state.cumulative == rate * 3000 == 2_999_166_000  # 2.999166 USDC a whole ETH
    assert (state.samples, state.since) == (0, 3_600_000)
    owed = 2_999_166_000 * (E9 // 100) // E9  # 0.01 ETH: 0.02999166 USDC, exact
    b, a = desk.accounts[B], desk.accounts[A]
    assert desk.ledger.pending_funding("ETH-PERP", desk.position(B)) == owed
    assert desk.ledger.pending_funding("ETH-PERP", desk.position(A)) == -owed
    value_b = desk.ledger.margin(b, USDC)[0]
    balance_b = desk.balance(B)
    assert value_b == balance_b - owed  # counted in the account value before it settles
    desk.price(3000, 3_601_000)
    desk.order(B, "sell", 3030, 0.005, "ioc")  # into C's bid: B settles first, through the funding pool
    assert desk.position(B).funding == desk.ledger.funding["ETH-PERP"].cumulative
    assert desk.ledger.funding_pool == {"ETH-PERP": owed}
    assert desk.balance(B) == balance_b - owed + 150_000_000 - fee_of(3030 * E9 // 200)  # PnL 15.15 - 15
    assert desk.do(C, "order.cancel_all", {"market": "ETH-PERP"})[1] is None
    desk.order(E, "sell", 3000, 0.005)
    desk.order(A, "buy", 3000, 0.005, "ioc")  # A (short) is paid what B paid: the pool is empty again
    assert desk.ledger.funding_pool == {}
    assert desk.ledger.entitlement(a, USDC) == desk.ledger.collateral(a, USDC) + desk.ledger.unrealised_pnl(a, USDC)


def fee_of(amount: int, rate: int = 2_000_000) -> int:
    return -(-amount * rate // E9)


def test_the_circuit_breaker_halts_a_market_for_its_checkpoints() -> None:
    desk = Desk(ETH_PERP)  # a 10% band, 3 checkpoints of halt
    desk.price(3000, 1_000)
    desk.order(A, "sell", 3000, 0.01)
    desk.order(B, "buy", 3000, 0.01, "ioc")
    desk.order(C, "sell", 3300, 0.01)  # a resting ask to close against
    desk.price(3290, 2_000)  # 9.7%: within the band
    assert not desk.ledger.halted("ETH-PERP")
    desk.price(3650, 3_000)  # 10.9% from 3290: halted for this checkpoint's epoch and the next two
    assert desk.ledger.halts == {"ETH-PERP": 5}
    assert desk.ledger.halted("ETH-PERP")
    since = desk.ledger.funding["ETH-PERP"].since
    for tif, reduce_only in (("gtc", False), ("ioc", False), ("gtc", True), ("post_only", True)):
        assert desk.order(B, "buy", 3300, 0.01, tif, reduce_only=reduce_only)[1] == Reason.MARKET_HALTED
    assert desk.do(D, "liquidate", {"account": desk.accounts[A], "market": "ETH-PERP", "qty": E9 // 100})[1] in (
        Reason.NOT_PERMITTED,)  # (D may not liquidate at all; the liquidator's case is below)
    assert desk.do(LIQUIDATOR, "liquidate", {"account": desk.accounts[A], "market": "ETH-PERP",
                                             "qty": E9 // 100})[1] == Reason.MARKET_HALTED
    _, reason = desk.order(A, "buy", 3300, 0.01, "ioc", reduce_only=True)  # reducing is allowed
    assert reason is None
    assert desk.position(A) == FLAT
    assert desk.do(A, "order.cancel_all", {"market": "ETH-PERP"})[1] is None  # cancels too
    for time in (4_000, 5_000):  # checkpoints 4 and 5: still halted, funding paused
        desk.version += 1
        desk.ledger.close_epoch(desk.version, time)
        assert desk.ledger.halted("ETH-PERP")
        assert desk.ledger.funding["ETH-PERP"].since == time > since
    desk.version += 1
    desk.ledger.close_epoch(desk.version, 6_000)
    assert not desk.ledger.halted("ETH-PERP")
    assert desk.order(B, "buy", 3650, 0.01)[1] is None
