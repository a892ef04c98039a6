"""What a replica reports about fills and orders (Replica.take_fill_changes, order_info,
open_orders): the reports, folded from the first, always equal the fills replay holds now, under
any delivery order with late operations and certification interleaved; a tentative fill that a
late order steals vanishes and another appears; certifying makes fills final; every status of
an order, named.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt.markets import FillRecord
from crdt.markets.book import CANCELLED, DONE, EXPIRED, FILLED, OPEN, SELF_TRADE, UNFUNDED
from crdt.ops import SignedOp, sign_op
from crdt.replica import Cut, Replica
from tests.crdt.crdt_support import ADDR, KEYS
from tests.crdt.test_markets_core import GENESIS, SYMBOL, A, B, C, D, body, order_dags

E9 = 10**9


def fold(view: dict[bytes, FillRecord], replica: Replica) -> None:
    """Apply one report to `view`, checking that each entry is a real change of it."""
    changes = replica.take_fill_changes()
    for record in changes.vanished:
        assert view.pop(record.fill.fill_id) == record
    for record in changes.changed:
        assert view[record.fill.fill_id] != record
        view[record.fill.fill_id] = record
    for record in changes.appeared:
        assert record.fill.fill_id not in view
        view[record.fill.fill_id] = record


def current(replica: Replica) -> dict[bytes, FillRecord]:
    return {record.fill.fill_id: record for record in replica.fill_records()}


def check_orders(replica: Replica, ops: list[SignedOp]) -> None:
    """order_info agrees with the fills, the book and replay's outcome of every order."""
    records = replica.fill_records()
    for op in ops:
        info = replica.order_info(op.op_id)
        if op.kind != "order.place":
            assert info is None
            continue
        if op.op_id in replica.graph.pending:
            assert info is not None
            assert info.status == "pending"
            continue
        if op.op_id not in replica.graph.ops:
            assert info is None  # not delivered yet
            continue
        assert info is not None
        mine = [r for r in records if op.op_id in (r.fill.taker_order, r.fill.maker_order)]
        assert list(info.fills) == mine
        assert info.filled == sum(r.fill.qty for r in mine)
        resting = replica.ledger.order(op.op_id)
        assert (info.status == OPEN) == (resting is not None)
        reason = replica.outcome[op.op_id]
        if reason is not None:
            assert info.status == f"rejected:{reason}"
            assert not info.fills
        elif info.status == OPEN:
            assert resting is not None
            assert info.remaining == resting.remaining == info.qty - info.filled
            assert not info.final
        elif info.status == FILLED:
            assert info.filled == info.qty
            assert info.remaining == 0
        else:
            assert info.status in (CANCELLED, EXPIRED, SELF_TRADE, UNFUNDED, DONE)
            assert info.filled < info.qty
    assert replica.open_orders() == [replica.ledger.orders[k] for k in sorted(replica.ledger.orders)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=order_dags(), data=st.data())
def test_the_reports_folded_are_the_fills_replay_holds_under_any_delivery_and_certification(
    ops: list[SignedOp], data: st.DataObject
) -> None:
    replica = Replica(GENESIS)
    view: dict[bytes, FillRecord] = {}
    delivered: list[SignedOp] = []
    for op in data.draw(st.permutations(ops)):
        delivered.append(op)
        if data.draw(st.booleans()):
            replica.receive(op)
        else:
            replica.receive_many([op, *data.draw(st.lists(st.sampled_from(delivered), max_size=2))])  # duplicates
        if data.draw(st.integers(0, 3)) == 0 and replica.graph.ops:
            heads = tuple(sorted(replica.graph.heads))
            version = replica.version + 1
            replica.certify(Cut(version, heads, 1000 * version))
        fold(view, replica)
        assert view == current(replica)
        check_orders(replica, ops)
        limit = data.draw(st.integers(1, 4))
        taker = data.draw(st.sampled_from(ops)).author
        records = replica.fill_records()
        assert replica.last_fill_records(lambda fill: True, limit) == records[-limit:]
        assert replica.last_fill_records(lambda fill, taker=taker: taker == fill.taker, limit) == [
            r for r in records if r.fill.taker == taker][-limit:]
    fresh = Replica(GENESIS)
    fresh.receive_many(ops)
    assert [r.fill for r in replica.fill_records()] == fresh.fills() or replica.cuts  # cuts reorder epochs
    final = [r for r in replica.fill_records() if r.final]
    assert all(r.fill.taker_order in replica.epoch_of for r in final)
    assert all(r.fill.taker_order not in replica.epoch_of for r in replica.fill_records() if not r.final)


def test_a_late_better_ask_steals_a_tentative_fill_then_certifying_makes_it_final() -> None:
    ctx = GENESIS.context()
    early_ask = sign_op(ctx, KEYS[B], 1, [], "order.place", body("sell", 11 * E9, E9))
    filler = sign_op(ctx, KEYS[D], 1, [early_ask.op_id], "transfer", {"to": ADDR[A], "token": "USDC", "amount": 1})
    buy = sign_op(ctx, KEYS[A], 1, [filler.op_id], "order.place", body("buy", 11 * E9, E9))
    late_ask = sign_op(ctx, KEYS[C], 1, [], "order.place", body("sell", 10 * E9, E9))
    replica = Replica(GENESIS)
    replica.receive_many([early_ask, filler, buy])
    (first,) = replica.take_fill_changes().appeared
    assert (first.fill.maker_order, first.fill.price, first.final) == (early_ask.op_id, 11 * E9, False)
    assert replica.order_info(early_ask.op_id).status == FILLED  # type: ignore[union-attr]
    assert not replica.take_fill_changes()  # nothing new

    replica.receive(late_ask)
    changes = replica.take_fill_changes()
    assert changes.vanished == (first,)
    (second,) = changes.appeared
    assert (second.fill.maker_order, second.fill.price) == (late_ask.op_id, 10 * E9)
    assert changes.changed == ()
    assert replica.order_info(early_ask.op_id).status == OPEN  # type: ignore[union-attr]

    replica.certify(Cut(1, tuple(sorted(replica.graph.heads)), 1000))
    changes = replica.take_fill_changes()
    assert changes.appeared == changes.vanished == ()
    assert changes.changed == (FillRecord(second.fill, True),)
    info = replica.order_info(buy.op_id)
    assert info is not None
    assert (info.status, info.final, info.filled) == (FILLED, True, E9)
    assert replica.order_info(early_ask.op_id).final is False  # type: ignore[union-attr]  # open: it can still fill


def test_every_way_an_order_closes_is_named() -> None:
    ctx = GENESIS.context()
    sign = lambda author, seq, parents, kind, b: sign_op(ctx, KEYS[author], seq, parents, kind, b)  # noqa: E731
    cancelled = sign(A, 1, [], "order.place", body("buy", 9 * E9, E9))
    cancel = sign(A, 2, [cancelled.op_id], "order.cancel", {"order": cancelled.op_id})
    expiring = sign(B, 1, [], "order.place", body("sell", 20 * E9, E9, expires=500))
    own_ask = sign(C, 1, [], "order.place", body("sell", 15 * E9, E9))
    own_buy = sign(C, 2, [own_ask.op_id], "order.place", body("buy", 15 * E9, E9, tif="ioc"))  # self-trade, done
    rejected = sign(D, 1, [], "order.place", body("buy", 10 * E9 + 1, E9))  # off tick
    replica = Replica(GENESIS)
    replica.receive_many([cancelled, cancel, expiring, own_ask, own_buy, rejected])
    status = {op.op_id: replica.order_info(op.op_id).status for op in  # type: ignore[union-attr]
              (cancelled, expiring, own_ask, own_buy, rejected)}
    assert status == {cancelled.op_id: CANCELLED, expiring.op_id: OPEN, own_ask.op_id: SELF_TRADE,
                      own_buy.op_id: DONE, rejected.op_id: "rejected:bad_tick"}
    assert replica.order_info(cancel.op_id) is None  # a cancel is no order
    assert replica.open_orders(ADDR[B], SYMBOL) == [replica.ledger.orders[expiring.op_id]]
    assert replica.open_orders(ADDR[A]) == []
    assert not any(replica.order_info(op.op_id).final for op in (cancelled, own_buy))  # type: ignore[union-attr]
    replica.certify(Cut(1, tuple(sorted(replica.graph.heads)), 1000))  # past `expires`
    info = replica.order_info(expiring.op_id)
    assert info is not None
    assert (info.status, info.final) == (EXPIRED, True)
    assert all(replica.order_info(op.op_id).final for op in (cancelled, own_buy, rejected))  # type: ignore[union-attr]


def test_an_order_waiting_for_parents_is_pending() -> None:
    ctx = GENESIS.context()
    parent = sign_op(ctx, KEYS[A], 1, [], "transfer", {"to": ADDR[B], "token": "USDC", "amount": 1})
    order = sign_op(ctx, KEYS[A], 2, [parent.op_id], "order.place", body("buy", 9 * E9, E9))
    replica = Replica(GENESIS)
    replica.receive(order)
    info = replica.order_info(order.op_id)
    assert info is not None
    assert (info.status, info.final, info.filled) == ("pending", False, 0)
