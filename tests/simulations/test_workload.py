"""The workload generator reads the registry of kinds: it makes registered kinds only, each
body field by field from its field types, and a kind added to a registry is generated too."""

from __future__ import annotations

from collections import Counter

import pytest

from channel.runtime.genesis_file import DEMO_ETH, DEMO_MARKETS, DEMO_USDC
from crdt import testing
from crdt.genesis import Genesis, Permission, Role
from crdt.kinds import KINDS, FieldType, Kind
from crdt.ledger import Reason
from crdt.replica import Replica
from simulations.workload import Mix, Workload, order_mix
from tests.crdt.crdt_support import GENESIS, KEYS
from tests.crdt.kinds_kit import WITH_MEMO, MemoLedger


def test_the_workload_makes_registered_kinds_only_with_conforming_bodies() -> None:
    with pytest.raises(ValueError, match="not a registered kind"):
        Workload(GENESIS, KEYS[:4], mix=Mix((("memo", 10),)))
    mix = Mix((("withdraw", 200), ("lock", 200), ("memo", 200)))
    ops = list(Workload(GENESIS, KEYS[:4], seed=3, mix=mix, kinds=WITH_MEMO).ops(300))
    assert {op.kind for op in ops} == {"transfer", "withdraw", "lock", "memo"}
    ledger = MemoLedger(GENESIS)
    for op in ops:
        assert WITH_MEMO[op.kind].conforms(op.body)
        assert WITH_MEMO.from_json(op.kind, WITH_MEMO.to_json(op.kind, op.body)) == op.body
        assert ledger.apply(op) not in (Reason.BAD_BODY, Reason.UNKNOWN_KIND, Reason.LOCK_IN_PAST)
    withdrawals = [op for op in ops if op.kind == "withdraw"]
    assert all(op.body["amount"] % ledger.unit(op.body["token"]) == 0 for op in withdrawals)


def test_the_workload_refuses_a_kind_whose_field_types_it_cannot_fill() -> None:
    odd = FieldType(
        name="price", shape="an integer", conforms=lambda value: type(value) is int, from_json=lambda v, n: v,
        to_json=lambda value: value, schema={},
    )
    registry = KINDS.extended(Kind("oracle.odd", (("price", odd),), Permission.POST_PRICE, "_price", ""))
    with pytest.raises(ValueError, match=r"cannot fill fields of type \['price'\]"):
        Workload(GENESIS, KEYS[:4], mix=Mix((("oracle.odd", 10),)), kinds=registry)


def _spot_channel() -> tuple[Genesis, list[bytes]]:
    keys = testing.test_keys(b"orders %d", 4)
    roles = [Role.MARKET_MAKER, Role.TRADER, Role.TRADER, Role.OBSERVER]  # the observer's orders are not_permitted
    genesis = testing.make_genesis(keys, [DEMO_USDC, DEMO_ETH], roles=roles, initial=1000 * 10**9, markets=DEMO_MARKETS)
    return genesis, keys


def test_order_mix_puts_order_kinds_in_the_mix() -> None:
    assert order_mix(0) == Mix()
    assert sum(share for _, share in order_mix(100).shares) == 1000
    assert dict(order_mix(50).shares) == {"order.place": 425, "order.cancel": 60, "order.cancel_all": 15,
                                          "withdraw": 5, "lock": 5}
    with pytest.raises(ValueError, match="percentage"):
        order_mix(101)


def test_the_workload_makes_order_flow_on_the_markets() -> None:
    genesis, keys = _spot_channel()
    ops = list(Workload(genesis, keys, seed=2, mix=order_mix(90)).ops(800))
    assert [op.op_id for op in Workload(genesis, keys, seed=2, mix=order_mix(90)).ops(800)] == [op.op_id for op in ops]
    kinds = Counter(op.kind for op in ops)
    assert {"order.place", "order.cancel", "order.cancel_all", "transfer"} <= set(kinds)
    places = [op.body for op in ops if op.kind == "order.place"]
    assert {(body["type"], body["tif"]) for body in places} == {
        ("limit", "gtc"), ("limit", "post_only"), ("limit", "ioc"), ("market", "ioc")
    }
    assert all(KINDS[op.kind].conforms(op.body) for op in ops)
    replica = Replica(genesis)
    replica.receive_many(ops)
    replica.ledger.check_conservation()
    reasons = Counter(str(reason) for _, reason in replica.rejected())
    malformed = {Reason.BAD_BODY, Reason.UNKNOWN_MARKET, Reason.BAD_TICK, Reason.BAD_STEP, Reason.QTY_OUT_OF_RANGE,
                 Reason.PRICE_OUT_OF_RANGE, Reason.BAD_SIDE, Reason.BAD_TYPE, Reason.BAD_TIF}
    assert not set(reasons) & {str(reason) for reason in malformed}, reasons
    assert reasons[str(Reason.NOT_PERMITTED)] > 0  # the observer
    book = replica.ledger.book("ETH/USDC")
    assert len(replica.fills()) > 50
    assert book.bids()
    assert book.asks()


def test_the_workload_makes_no_orders_without_markets() -> None:
    with pytest.raises(ValueError, match="no markets"):
        Workload(GENESIS, KEYS[:4], mix=order_mix(10))
