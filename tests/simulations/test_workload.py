"""The workload generator reads the registry of kinds: it makes registered kinds only, each
body field by field from its field types, and a kind added to a registry is generated too."""

from __future__ import annotations

import pytest

from crdt.genesis import Permission
from crdt.kinds import KINDS, FieldType, Kind
from crdt.ledger import Reason
from simulations.workload import Mix, Workload
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
    registry = KINDS.extended(Kind("oracle.price", (("price", odd),), Permission.POST_PRICE, "_price", ""))
    with pytest.raises(ValueError, match=r"cannot fill fields of type \['price'\]"):
        Workload(GENESIS, KEYS[:4], mix=Mix((("oracle.price", 10),)), kinds=registry)
