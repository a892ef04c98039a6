"""Shared by the registry tests (tests/crdt/test_kinds.py, tests/channel/api/test_api.py): an extra
kind that only tests register, its ledger handler, and JSON strategies per field type.

A new field type in `crdt.kinds` needs its strategies here: the properties run over every
registered kind, and a field type without strategies fails them with a KeyError that names it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from crdt.genesis import Permission
from crdt.kinds import ADDRESS, KINDS, MAX_LOCK_REASON, ORDER_TYPE, REASON_TEXT, SIDE, TIF, UINT64_LIMIT, Kind, Registry
from crdt.ledger import Ledger, Reason, Rejected, body_field
from crdt.markets.config import MAX_MARKET_SYMBOL
from crdt.ops import SignedOp
from tests.crdt.crdt_support import ADDR

# A kind that only tests know: one registry entry plus its ledger handler, nothing else.
MEMO = Kind(
    name="memo",
    fields=(("to", ADDRESS), ("note", REASON_TEXT)),
    permission=Permission.POST_PRICE,
    handler="_memo",
    summary="A note to a participant (a kind only the tests register).",
)
WITH_MEMO = KINDS.extended(MEMO)


class MemoLedger(Ledger):
    """A ledger with the memo kind's handler: it checks and changes nothing else."""

    def __init__(self, genesis: Any, kinds: Registry = WITH_MEMO) -> None:
        super().__init__(genesis, kinds)
        self.memos: list[tuple[bytes, str]] = []

    def _memo(self, op: SignedOp, kind: Kind) -> None:
        recipient = body_field(kind, op.body, "to")
        note = body_field(kind, op.body, "note")
        self._permit(op, kind)
        if recipient not in self.genesis.addresses:
            raise Rejected(Reason.UNKNOWN_RECIPIENT)
        self.memos.append((recipient, note))


def _utf8_at_most(limit: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=limit).filter(
        lambda text: len(text.encode()) <= limit
    )


# Per field type: the canonical JSON form (what `to_json` writes) and other forms the API takes.
CANONICAL_JSON: dict[str, st.SearchStrategy[Any]] = {
    "address": (st.sampled_from(ADDR) | st.binary(min_size=20, max_size=20)).map(lambda raw: "0x" + raw.hex()),
    "token": st.sampled_from(["USDC", "WETH", "DOGE"]) | _utf8_at_most(16),
    "amount": st.integers(1, UINT64_LIMIT - 1).map(str),
    "uint64": st.integers(0, UINT64_LIMIT - 1).map(str),
    "text": _utf8_at_most(MAX_LOCK_REASON),
    "market": st.sampled_from(["WETH/USDC", "DOGE/USDC"]) | _utf8_at_most(MAX_MARKET_SYMBOL),
    "side": st.sampled_from(SIDE.choices),
    "order_type": st.sampled_from(ORDER_TYPE.choices),
    "tif": st.sampled_from(TIF.choices),
    "bool": st.booleans(),
    "op_id": st.binary(min_size=32, max_size=32).map(lambda raw: "0x" + raw.hex()),
}
OTHER_JSON: dict[str, st.SearchStrategy[Any]] = {
    "address": st.binary(min_size=20, max_size=20).flatmap(
        lambda raw: st.sampled_from(["0X" + raw.hex(), raw.hex().upper(), "0x" + raw.hex().upper()])
    ),
    "token": CANONICAL_JSON["token"],
    "amount": st.integers(1, UINT64_LIMIT - 1) | st.integers(1, 10**6).map(lambda n: str(n).zfill(20)),
    "uint64": st.integers(0, UINT64_LIMIT - 1),
    "text": CANONICAL_JSON["text"],
    "market": CANONICAL_JSON["market"],
    "side": CANONICAL_JSON["side"],
    "order_type": CANONICAL_JSON["order_type"],
    "tif": CANONICAL_JSON["tif"],
    "bool": CANONICAL_JSON["bool"],
    "op_id": st.binary(min_size=32, max_size=32).flatmap(
        lambda raw: st.sampled_from(["0X" + raw.hex(), raw.hex().upper(), "0x" + raw.hex().upper()])
    ),
}
TRICKY_JSON = st.sampled_from([
    "", "0", "-1", "²", "\u0661\u0660", "\uff11", "9" * 25, " 1", "1e3", "0x1", "0x" + "11" * 19,
    "0x11 " + "11" * 19, "0x" + "zz" * 20, "\ud800", "x" * 200, "é" * 33, str(UINT64_LIMIT), -1, 0,
    UINT64_LIMIT, 1.5, True, None, [], {},
])
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12) | TRICKY_JSON,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def json_body(kind: Kind, canonical: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """A valid JSON body of `kind`: canonical, or in any form the API accepts."""
    if canonical:
        return st.fixed_dictionaries({name: CANONICAL_JSON[t.name] for name, t in kind.fields})
    return st.fixed_dictionaries({name: CANONICAL_JSON[t.name] | OTHER_JSON[t.name] for name, t in kind.fields})


# CBOR values a body may hold (`crdt.cbor.check_value`), for bodies the ledger must refuse.
ANY_CBOR = st.recursive(
    st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=24) | st.text(max_size=70),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
