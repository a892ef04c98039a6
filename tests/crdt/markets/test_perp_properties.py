"""TRADING.md's perpetual invariants over random order flow, oracle moves and delivery orders.

The flows mix oracle posts, checkpoints (which fix the oracle price), perp orders of every kind
(limit, ioc, market, post-only, reduce-only, sizes that run accounts out of margin), cancels,
transfers and withdrawals of the collateral. Each law is checked against values recomputed here,
apart from the ledger's own arithmetic:

1. conservation, exact (the ledger's check, which includes the PnL pool's identity);
2. no crossed book at rest; every fill at the maker's price, within the taker's limit and the
   take bound, never between an account and itself;
3. each position's size is the signed sum of its account's fills (recomputed from the fills);
4. each account's collateral is what came in, less what went out, its fees and the funding it
   settled, plus the cash of its fills, plus the signed open notional of its position: the
   realised PnL then is exact whatever the basis rounding; and funding never pays out more than
   it took in (the pool, with what every position still owes, is never negative);
5. a fill that grows a position never leaves its account below initial margin, and a reduce-only
   order never grows or flips one;
6. the payout leaves never sum to more than the channel holds, each >= 0;
7. every delivery order of the same operations gives the same state hash, payout root and fills.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import testing
from crdt.genesis import Genesis, Role
from crdt.ledger import Ledger
from crdt.markets.book import BUY
from crdt.markets.config import notional
from crdt.markets.funding import payment
from crdt.ops import SignedOp, sign_op
from crdt.replica import Cut, Replica
from crdt.types import Symbol
from tests.crdt.crdt_support import ADJUDICATOR, KEYS, TOKENS, closure, heads_of
from tests.crdt.markets.perp_reference import Params, PerpReference
from tests.crdt.markets.test_perp_genesis import ETH_PERP

E9 = 10**9
USDC = Symbol("USDC")
ROLES = [Role.ORACLE, Role.ORACLE, Role.ORACLE, Role.TRADER, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR]
ORACLES, TRADERS, LIQUIDATOR = (0, 1, 2), (3, 4, 5, 6), 6
MID = 3000  # whole USDC
INITIAL = 100 * E9
assert ETH_PERP.perp is not None
# funding every minute of checkpoint time, impact prices at 5 USDC: the flows' books fund often
PERP = replace(ETH_PERP.perp, funding_interval=60_000, impact_notional=5 * E9, max_funding_rate=50_000_000,
               circuit_band=250_000_000, halt_checkpoints=1)  # a 30% shock halts for one checkpoint, 20% does not
MARKET = replace(ETH_PERP, perp=PERP)


def genesis() -> Genesis:
    return testing.make_genesis(KEYS[: len(ROLES)], TOKENS, roles=ROLES, initial=INITIAL, adjudicator=ADJUDICATOR,
                                markets=(MARKET,))


GENESIS = genesis()
ACCOUNTS = [p.address for p in GENESIS.participants]


@dataclass(frozen=True)
class Step:
    """One operation to sign (`kind`, `body`; an order.cancel's `target` is the index of the step
    whose order it cancels), or a checkpoint (`kind` "checkpoint", `body` {"time": ms})."""

    author: int
    kind: str
    body: dict[str, Any]
    target: int | None = None


@st.composite
def perp_flows(draw: st.DrawFn, max_steps: int = 40) -> list[Step]:
    steps: list[Step] = [Step(who, "oracle.price", {"market": "ETH-PERP", "price": MID * E9}) for who in ORACLES]
    steps.append(Step(0, "checkpoint", {"time": 1_000}))
    time, mid = 1_000, MID
    orders: list[int] = []
    for _ in range(draw(st.integers(1, max_steps))):
        what = draw(st.sampled_from(["order"] * 12 + ["cancel", "post", "checkpoint", "transfer", "withdraw",
                                                      "shock", "shock", "liquidate", "liquidate", "liquidate",
                                                      "pair", "pair", "delist"]))
        who = draw(st.sampled_from(TRADERS))
        if what == "order":
            side = draw(st.sampled_from(["buy", "sell"]))
            style = draw(st.sampled_from(["gtc", "gtc", "gtc", "ioc", "ioc", "market", "post_only"]))
            order_type, tif = ("market", "ioc") if style == "market" else ("limit", style)
            ticks = draw(st.integers(-4, 6)) * (1 if side == "buy" else -1)
            price = mid * E9 + ticks * 10**9 if style != "market" else mid * E9 * (11 if side == "buy" else 9) // 10
            qty = draw(st.sampled_from([1, 5, 10, 20, 40, 80, 200])) * 10**6  # 0.001 .. 0.2 ETH
            reduce_only = draw(st.sampled_from([False] * 4 + [True]))
            orders.append(len(steps))
            steps.append(Step(who, "order.place", {
                "market": "ETH-PERP", "side": side, "type": order_type, "tif": tif, "price": price, "qty": qty,
                "reduce_only": reduce_only, "expires": 0,
            }))
        elif what == "cancel" and orders:
            target = draw(st.sampled_from(orders))
            steps.append(Step(steps[target].author, "order.cancel", {}, target))
        elif what == "post":
            mid = max(1000, mid + draw(st.sampled_from([-900, -300, -100, -20, 20, 100, 300, 900])))
            for oracle in draw(st.lists(st.sampled_from(ORACLES), min_size=1, max_size=3, unique=True)):
                steps.append(Step(oracle, "oracle.price", {"market": "ETH-PERP", "price": mid * E9}))
        elif what == "checkpoint":
            time += draw(st.sampled_from([1_000, 30_000, 30_000, PERP.funding_interval]))
            steps.append(Step(0, "checkpoint", {"time": time}))
        elif what == "pair":  # two traders open a position of about 4.5x against each other at the mid
            other = draw(st.sampled_from([t for t in TRADERS if t != who]))
            side, against = draw(st.sampled_from([("buy", "sell"), ("sell", "buy")]))
            for author, way, tif in ((other, against, "gtc"), (who, side, "ioc")):
                steps.append(Step(author, "order.place", {
                    "market": "ETH-PERP", "side": way, "type": "limit", "tif": tif, "price": mid * E9,
                    "qty": 450 * E9 // mid // 10**6 * 10**6, "reduce_only": False, "expires": 0,  # 450 USDC
                }))
        elif what == "shock":  # every oracle posts a price far off, and a checkpoint fixes it
            mid = max(1000, mid + draw(st.sampled_from([-900, -600, 600, 900])))
            steps.extend(Step(oracle, "oracle.price", {"market": "ETH-PERP", "price": mid * E9}) for oracle in ORACLES)
            time += 1_000
            steps.append(Step(0, "checkpoint", {"time": time}))
        elif what == "delist":  # a quorum votes a price: the next checkpoint closes every position at it
            price = mid * E9
            steps.extend(Step(voter, "market.delist", {"market": "ETH-PERP", "price": price})
                         for voter in range(GENESIS.threshold))
        elif what == "liquidate":
            qty = draw(st.sampled_from([1, 5, 10, 20, 40])) * 10**6
            target = who if who != LIQUIDATOR else draw(st.sampled_from(TRADERS))  # now and then its own
            steps.append(Step(LIQUIDATOR, "liquidate", {"account": ACCOUNTS[target], "market": "ETH-PERP",
                                                        "qty": qty}))
        elif what == "transfer":
            to = draw(st.sampled_from([t for t in TRADERS if t != who]))
            amount = draw(st.sampled_from([E9, 20 * E9, 60 * E9]))
            steps.append(Step(who, "transfer", {"to": ACCOUNTS[to], "token": USDC, "amount": amount}))
        else:
            steps.append(Step(who, "withdraw", {"token": USDC, "amount": draw(st.sampled_from([E9, 50 * E9]))}))
    return steps


def sign_all(steps: Sequence[Step], genesis: Genesis | None = None, kinds: Sequence[str] | None = None
             ) -> list[SignedOp | Cut]:
    """The steps signed one after another, each op naming the previous one (a chain: the order
    of the steps is the replay order), and each checkpoint a cut of everything before it; only
    the steps of `kinds`, if given."""
    out: list[SignedOp | Cut] = []
    ids: dict[int, bytes] = {}
    seqs = [0] * len(ROLES)
    last: list[bytes] = []
    version = 0
    for index, step in enumerate(steps):
        if kinds is not None and step.kind not in kinds:
            continue
        if step.kind == "checkpoint":
            version += 1
            out.append(Cut(version, tuple(last), step.body["time"]))
            continue
        seqs[step.author] += 1
        body = dict(step.body)
        if step.target is not None:
            body["order"] = ids[step.target]
        op = sign_op((genesis or GENESIS).context(), KEYS[step.author], seqs[step.author], last, step.kind, body)
        ids[index] = op.op_id
        last = [op.op_id]
        out.append(op)
    return out


def liquidated(ledger: Ledger, op: SignedOp, reason: object) -> set[bytes]:
    """The two accounts a liquidate touched (each settles its funding first)."""
    if op.kind != "liquidate" or reason is not None:
        return set()
    record = ledger.liquidations[op.op_id]
    return {record.account, *(record.deleveraged or (record.liquidator,))}


def margin_ok(ledger: Ledger, account: bytes) -> bool:
    value, initial, _ = ledger.margin(account, USDC)  # type: ignore[arg-type]
    return value >= initial


def check_payouts(ledger: Ledger) -> None:
    owed = ledger.entitlements(ACCOUNTS, USDC)
    assert all(amount >= 0 for amount in owed)
    held_by_channel = ledger.deposits[USDC] - sum(ledger.withdrawn_by(a, USDC) for a in ACCOUNTS)
    assert sum(owed) <= held_by_channel - ledger.fees(USDC)


@settings(max_examples=150, deadline=None)
@given(perp_flows())
def test_every_operation_keeps_the_perpetual_laws(steps: list[Step]) -> None:
    ledger = Ledger(GENESIS)
    moved = {a: INITIAL for a in ACCOUNTS}  # what came in less what went out, per account
    fees = dict.fromkeys(ACCOUNTS, 0)
    cash = dict.fromkeys(ACCOUNTS, 0)
    sizes = dict.fromkeys(ACCOUNTS, 0)
    funded = dict.fromkeys(ACCOUNTS, 0)
    for item in sign_all(steps):
        if isinstance(item, Cut):
            held = dict(ledger.positions)
            index = ledger.funding["ETH-PERP"].cumulative if "ETH-PERP" in ledger.funding else 0
            was = set(ledger.delisted)
            ledger.close_epoch(item.version, item.time)
            ledger.check_conservation()
            if "ETH-PERP" in ledger.delisted and "ETH-PERP" not in was:  # every position closed at its price
                price = ledger.delisted["ETH-PERP"]
                assert ledger.positions == {}
                assert "ETH-PERP" not in ledger.pnl_pool  # the pools' dust went to insurance
                assert "ETH-PERP" not in ledger.funding_pool
                for (_, account), position in held.items():
                    funded[account] += payment(position.size, position.funding, index)
                    value = notional(price, abs(position.size))
                    cash[account] += value if position.size > 0 else -value
                    sizes[account] = 0
            continue
        op = item
        before = {a: ledger.position("ETH-PERP", a) for a in ACCOUNTS}
        mark = ledger.mark("ETH-PERP")
        count = ledger.fill_count
        if op.kind == "liquidate":
            value, _, maintenance = ledger.margin(op.body["account"], USDC)
        reason = ledger.apply(op)
        ledger.check_conservation()
        if reason is None and op.kind == "transfer":
            moved[op.author] -= op.body["amount"]
            moved[op.body["to"]] += op.body["amount"]
        if reason is None and op.kind == "withdraw":
            moved[op.author] -= op.body["amount"]
        book = ledger.book("ETH-PERP")
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid.price < ask.price, "crossed book at rest"
        new = ledger.fills_from(count)
        state = ledger.funding.get("ETH-PERP")
        touched = {a for fill in new for a in (fill.taker, fill.maker)} | liquidated(ledger, op, reason)
        # a fill settles funding first, as does a match tried
        touched |= {a for a in ACCOUNTS if ledger.position("ETH-PERP", a).funding != before[a].funding}
        for account in touched:
            if state is not None and before[account].size:
                funded[account] += payment(before[account].size, before[account].funding, state.cumulative)
        if op.kind == "liquidate" and reason is None:
            assert value < maintenance, "liquidated at or above maintenance margin"
            record = ledger.liquidations[op.op_id]
            assert mark is not None
            long = before[record.account].size > 0
            q, price, taken = record.qty, record.price, record.taken_at
            sign = 1 if long else -1  # the account sells a long, buys back a short
            sizes[record.account] -= sign * q
            if record.deleveraged:  # closed against the opposite positions at the bankruptcy price
                assert (price >= mark) if long else (price <= mark)
                assert ledger.collateral(record.account, USDC) + ledger.unrealised_pnl(record.account, USDC) >= 0
                for other in record.deleveraged:
                    part = abs(before[other].size - ledger.position("ETH-PERP", other).size)
                    sizes[other] += sign * part
                    cash[other] -= sign * notional(price, part)
                    cash[record.account] += sign * notional(price, part)
            else:
                assert (price <= taken <= mark) if long else (mark <= taken <= price)
                assert record.insurance == abs(notional(taken, q) - notional(price, q))  # the insurance share, exact
                sizes[record.liquidator] += sign * q
                cash[record.account] += sign * notional(price, q)
                cash[record.liquidator] -= sign * notional(taken, q)
                moved[record.account] += record.covered
        for fill in new:
            assert fill.taker != fill.maker
            buying = op.body["side"] == BUY
            assert (fill.price <= op.body["price"]) if buying else (fill.price >= op.body["price"])
            assert mark is not None
            if buying:
                assert fill.price <= mark * (E9 + PERP.mtb_long) // E9
            else:
                assert fill.price * E9 >= mark * (E9 - PERP.mtb_short)
            signed = fill.qty if buying else -fill.qty
            n = notional(fill.price, fill.qty)
            sizes[fill.taker] += signed
            sizes[fill.maker] -= signed
            cash[fill.taker] -= n if buying else -n
            cash[fill.maker] += n if buying else -n
            fees[fill.taker] += fill.taker_fee
            fees[fill.maker] += fill.maker_fee
        for account in ACCOUNTS:
            position = ledger.position("ETH-PERP", account)
            assert position.size == sizes[account]
            signed_open = position.open_notional if position.size > 0 else -position.open_notional
            assert ledger.collateral(account, USDC) == (
                moved[account] - fees[account] - funded[account] + cash[account] + signed_open)
            was = before[account]
            grew = abs(position.size) > abs(was.size) or position.size * was.size < 0
            if grew:
                assert margin_ok(ledger, account), "a fill that grew a position left it below initial margin"
                assert not (op.kind == "order.place" and op.body["reduce_only"] and account == op.author)
        owed = sum(ledger.pending_funding("ETH-PERP", p) for p in ledger.positions.values())
        assert ledger.funding_pool.get("ETH-PERP", 0) + owed >= 0
        check_payouts(ledger)


@settings(max_examples=60, deadline=None)
@given(perp_flows(max_steps=25), st.data())
def test_every_delivery_order_gives_the_same_positions_and_roots(steps: list[Step], data: st.DataObject) -> None:
    """The same operations signed as a hash graph with concurrency (each trader chains on its own
    and on the heads it has learnt), delivered in order and in a drawn order with duplicates; the
    first checkpoint (the oracles' first prices) certified once its operations are in."""
    ops: list[SignedOp] = []
    by_id: dict[bytes, SignedOp] = {}
    known: list[set[bytes]] = [set() for _ in ROLES]
    seqs = [0] * len(ROLES)
    ids: dict[int, bytes] = {}
    first_cut: Cut | None = None
    for index, step in enumerate(steps):
        if step.kind == "checkpoint":
            if first_cut is None:
                first_cut = Cut(1, tuple(heads_of(by_id, by_id)), step.body["time"])
            continue
        author = step.author
        if ops and data.draw(st.booleans()):
            known[author] |= known[data.draw(st.integers(0, len(ROLES) - 1))]
        if first_cut is not None:
            known[author] |= closure(by_id, first_cut.heads)  # everyone saw the first prices
        body = dict(step.body)
        if step.target is not None:
            body["order"] = ids[step.target]
            known[author] |= closure(by_id, [ids[step.target]])
        seqs[author] += 1
        op = sign_op(GENESIS.context(), KEYS[author], seqs[author], heads_of(by_id, known[author]), step.kind, body)
        ids[index] = op.op_id
        by_id[op.op_id] = op
        known[author].add(op.op_id)
        ops.append(op)
    assert first_cut is not None

    def deliver(order: Sequence[SignedOp], batches: Sequence[int]) -> Replica:
        replica = Replica(GENESIS)
        position = 0
        sizes = iter(batches)
        while position < len(order):
            size = next(sizes, 3)
            replica.receive_many(order[position : position + size])
            position += size
            replica.ledger.check_conservation()
            if not replica.cuts and all(head in replica.graph.ops for head in first_cut.heads):
                replica.certify(first_cut)
                replica.ledger.check_conservation()
        return replica

    in_order = deliver(ops, [len(ops)])
    duplicates = data.draw(st.lists(st.sampled_from(ops), max_size=4))
    shuffled = deliver(data.draw(st.permutations(ops + duplicates)), data.draw(st.lists(st.integers(1, 4))))
    for replica in (in_order, shuffled):
        check_payouts(replica.ledger)
    assert shuffled.state_hash() == in_order.state_hash()
    assert shuffled.payout_root() == in_order.payout_root()
    assert shuffled.ledger.fills == in_order.ledger.fills
    assert shuffled.ledger.positions == in_order.ledger.positions


# -- against the sequential reference (perp_reference.py) ------------------------------------------

# no funding (an interval that never ends) and no breaker (a 100% band): the reference has neither
REF_MARKET = replace(MARKET, perp=replace(PERP, funding_interval=10**15, circuit_band=E9))
REF_GENESIS = testing.make_genesis(KEYS[: len(ROLES)], TOKENS, roles=ROLES, initial=INITIAL, adjudicator=ADJUDICATOR,
                                   markets=(REF_MARKET,))
REF_KINDS = ("order.place", "order.cancel", "oracle.price", "transfer", "checkpoint")


def reference() -> PerpReference:
    m, p = REF_MARKET, REF_MARKET.perp
    assert p is not None
    params = Params(m.symbol, m.quote, m.tick_size, m.step_size, m.min_qty, m.max_qty, m.min_price, m.max_price,
                    m.maker_fee, m.taker_fee, p.imr, p.mmr, p.max_notional_at_open, p.mtb_long, p.mtb_short,
                    p.oracle_staleness)
    roles = {participant.address: str(participant.role) for participant in REF_GENESIS.participants}
    return PerpReference(params, roles, dict.fromkeys(roles, INITIAL))


def ledger_view(ledger: Ledger) -> tuple[Any, ...]:
    positions = {a: (p.size, p.open_notional) for (_, a), p in ledger.positions.items()}
    money = {a: (ledger.balance(a, USDC), ledger.debt.get((a, USDC), 0)) for a in ACCOUNTS}
    book = sorted((bytes(o.order_id), o.remaining) for o in ledger.orders.values())
    closed = {bytes(order): why for order, (why, _) in ledger.closed.items()}
    return positions, money, book, closed, ledger.fees(USDC)


def reference_view(model: PerpReference) -> tuple[Any, ...]:
    positions = {a: (size, model.opens[a]) for a, size in model.sizes.items() if size}
    money = {a: (model.balance.get(a, 0), model.debt.get(a, 0)) for a in ACCOUNTS}
    book = sorted((o.order_id, o.remaining) for o in model.book)
    return positions, money, book, dict(model.closed), model.fee_pool


@settings(max_examples=100, deadline=None)
@given(perp_flows())
def test_the_ledger_matches_the_sequential_reference(steps: list[Step]) -> None:
    """Orders, cancels, oracle moves, transfers and checkpoints, one at a time, on the ledger and
    on the reference: the same outcome for every operation, the same fills one for one, and the
    same positions, balances, debts, book, closed orders and fee pool after each."""
    ledger, model = Ledger(REF_GENESIS), reference()
    for item in sign_all(steps, REF_GENESIS, REF_KINDS):
        if isinstance(item, Cut):
            ledger.close_epoch(item.version, item.time)
            model.close(item.time)
            assert (ledger.mark("ETH-PERP"), ledger.time) == (model.mark[0] if model.mark else None, model.time)
            continue
        count = ledger.fill_count
        reason = ledger.apply(item)
        expected = model.apply(item.author, item.kind, dict(item.body), item.op_id)
        assert (None if reason is None else str(reason)) == expected, item.kind
        assert [(f.taker_order, f.maker_order, f.price, f.qty, f.taker_fee, f.maker_fee)
                for f in ledger.fills_from(count)] == model.fills[count:]
        assert ledger_view(ledger) == reference_view(model)
