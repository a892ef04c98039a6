"""The registry of operation kinds (crdt/kinds.py): for every registered kind, JSON bodies
round-trip through the CBOR body, invalid ones get a typed error at the API edge and a rejection
in replay, the ledger's dispatch comes from the registry, and a kind added to a registry with its
handler is applied with no other change. (The workload's side: tests/simulations/test_workload.py;
the API's: tests/channel/api/test_api.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt.errors import InternalError
from crdt.genesis import Permission, Role
from crdt.kinds import KINDS, InvalidField, Kind, UnknownKind, json_hex
from crdt.ledger import Ledger, Reason
from crdt.ops import DEFAULT_LIMITS
from crdt.replica import Replica
from tests.crdt.crdt_support import ADDR, GENESIS, N_PARTICIPANTS, ROLES, sign
from tests.crdt.kinds_kit import ANY_CBOR, ANY_JSON, MEMO, TRICKY_JSON, WITH_MEMO, MemoLedger, json_body

KIND_NAMES = list(KINDS)
ORACLE = ROLES.index(Role.ORACLE)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_registry_holds_the_eight_kinds_in_order() -> None:
    assert KIND_NAMES == [
        "transfer", "withdraw", "lock", "order.place", "order.cancel", "order.cancel_all", "oracle.price", "liquidate"
    ]
    assert [name for name, _ in KINDS["lock"].fields] == ["token", "amount", "until", "reason"]
    assert KINDS["transfer"].keys == {"to", "token", "amount"}
    assert [name for name, _ in KINDS["order.place"].fields] == [
        "market", "side", "type", "tif", "price", "qty", "reduce_only", "expires"
    ]
    assert KINDS.listing() == (
        "transfer, withdraw, lock, order.place, order.cancel, order.cancel_all, oracle.price and liquidate"
    )
    assert [name for name, _ in KINDS["liquidate"].fields] == ["account", "market", "qty"]
    for name in KINDS:
        kind = KINDS[name]
        assert len(name.encode()) <= DEFAULT_LIMITS.max_kind_bytes
        expected = {"oracle.price": Permission.POST_PRICE, "liquidate": Permission.LIQUIDATE}.get(name, (
            Permission.TRADE if name.startswith("order.") else Permission.MOVE_FUNDS
        ))
        assert kind.permission is expected
        assert Role.OBSERVER not in kind.roles
        assert (Role.TRADER in kind.roles) is (name not in ("oracle.price", "liquidate"))
        assert callable(getattr(Ledger, kind.handler))


def test_a_registry_refuses_two_kinds_of_one_name_and_fields_named_twice() -> None:
    with pytest.raises(ValueError, match="same name"):
        KINDS.extended(MEMO, MEMO)
    with pytest.raises(ValueError, match="named twice"):
        Kind("twice", (("a", MEMO.types["to"]), ("a", MEMO.types["to"])), Permission.TRADE, "_memo", "")


@SETTINGS
@given(data=st.data(), name=st.sampled_from(KIND_NAMES))
def test_canonical_json_round_trips_through_the_cbor_body(data: st.DataObject, name: str) -> None:
    kind = KINDS[name]
    body = data.draw(json_body(kind))
    cbor_body = KINDS.from_json(name, body)
    assert kind.conforms(cbor_body)
    assert KINDS.to_json(name, cbor_body) == body


@SETTINGS
@given(data=st.data(), name=st.sampled_from(KIND_NAMES))
def test_every_accepted_json_form_reaches_the_same_body_again(data: st.DataObject, name: str) -> None:
    body = data.draw(json_body(KINDS[name], canonical=False))
    cbor_body = KINDS.from_json(name, body)
    assert KINDS.from_json(name, KINDS.to_json(name, cbor_body)) == cbor_body


def spoiled(data: st.DataObject, kind: Kind) -> tuple[Any, str]:
    """A JSON body of `kind` with one thing wrong (maybe): (body, the field to blame)."""
    body: Any = data.draw(json_body(kind, canonical=False))
    how = data.draw(st.sampled_from(["value", "value", "missing", "extra", "not an object"]))
    if how == "value":
        name = data.draw(st.sampled_from(sorted(body)))
        body[name] = data.draw(TRICKY_JSON | ANY_JSON)
        return body, name
    if how == "missing":
        del body[data.draw(st.sampled_from(sorted(body)))]
    elif how == "extra":
        body[data.draw(st.text(max_size=8).filter(lambda key: key not in kind.keys))] = data.draw(ANY_JSON)
    else:
        body = data.draw(ANY_JSON.filter(lambda value: not isinstance(value, dict)))
    return body, "body"


@SETTINGS
@given(data=st.data(), name=st.sampled_from(KIND_NAMES))
def test_an_invalid_json_body_gets_an_invalid_field_naming_it_never_another_error(
    data: st.DataObject, name: str
) -> None:
    kind = KINDS[name]
    body, blamed = spoiled(data, kind)
    error: InvalidField | None = None
    try:
        cbor_body = KINDS.from_json(name, body)
    except InvalidField as caught:
        error = caught
    if error is None:  # the replacement happened to be valid: then the body is one the ledger takes
        assert blamed != "body"
        assert kind.conforms(cbor_body)
    else:
        assert error.field == blamed
        assert blamed in str(error)


def test_unknown_kinds_get_unknown_kind_listing_the_registered_ones() -> None:
    for name in ("funding.pay", "", 5, None, "x" * 100_000):
        with pytest.raises(UnknownKind, match=r"this node signs transfer, withdraw, lock, order\.place, order\."):
            KINDS.from_json(name, {})


def test_hex_lengths_are_counted_in_half_bytes_without_floats() -> None:
    with pytest.raises(InvalidField, match=r"expected 20 bytes, got 19\.5 "):
        json_hex("0x" + "1" * 39, "to", 20)
    with pytest.raises(InvalidField, match=r"expected 20 bytes, got 2 "):
        json_hex("1234", "to", 20)


@SETTINGS
@given(data=st.data(), name=st.sampled_from(KIND_NAMES), author=st.integers(0, N_PARTICIPANTS - 1))
def test_the_ledger_never_says_bad_body_for_what_the_api_accepts(
    data: st.DataObject, name: str, author: int
) -> None:
    cbor_body = KINDS.from_json(name, data.draw(json_body(KINDS[name], canonical=False)))
    reason = Ledger(GENESIS).apply(sign(author, 1, [], name, cbor_body))
    assert reason not in (Reason.BAD_BODY, Reason.UNKNOWN_KIND)


@SETTINGS
@given(data=st.data(), name=st.sampled_from(KIND_NAMES), author=st.integers(0, N_PARTICIPANTS - 1))
def test_a_body_that_does_not_conform_is_rejected_as_bad_body_in_replay(
    data: st.DataObject, name: str, author: int
) -> None:
    kind = KINDS[name]
    body = dict(KINDS.from_json(name, data.draw(json_body(kind))))
    how = data.draw(st.sampled_from(["value", "missing", "extra"]))
    if how == "value":
        field = data.draw(st.sampled_from(sorted(body)))
        body[field] = data.draw(ANY_CBOR.filter(lambda value: not kind.types[field].conforms(value)))
    elif how == "missing":
        del body[data.draw(st.sampled_from(sorted(body)))]
    else:
        body[data.draw(st.text(min_size=1, max_size=8).filter(lambda key: key not in kind.keys))] = 1
    assert not kind.conforms(body)
    op = sign(author, 1, [], name, body)
    replica = Replica(GENESIS)
    replica.receive(op)
    status = replica.status(op.op_id)
    assert status.startswith("rejected:")
    if how != "value":
        assert status == "rejected:bad_body"  # the keys are checked first
    # A field's type is checked where its handler reads it, so a check before that can name
    # another fault first (a self-transfer with a bad amount is self_transfer, as it always was).


@SETTINGS
@given(
    name=st.sampled_from(KIND_NAMES),
    values=st.lists(
        st.one_of(ANY_CBOR, st.text(max_size=3), st.integers(-1, 2**64 - 1), st.booleans(), st.binary(max_size=33)),
        min_size=8, max_size=8,
    ),
)
def test_a_field_with_an_exact_type_conforms_by_that_type_alone(name: str, values: list[Any]) -> None:
    """The ledger tests a body's types at once where every field has an exact type
    (`crdt.ledger.body_values`): that must say what each field's ``conforms`` says."""
    kind = KINDS[name]
    body = dict(zip(kind.names, values, strict=False))
    assert kind.values(body) == tuple(body[field] for field in kind.names)
    for field, value in body.items():
        exact = kind.types[field].exact_type
        if exact is not None:
            assert kind.types[field].conforms(value) == (type(value) is exact)
    if kind.exact_types is not None:
        assert kind.conforms(body) == (tuple(map(type, kind.values(body))) == kind.exact_types)


def test_which_fault_a_body_with_several_is_rejected_for() -> None:
    to_self = {"to": ADDR[0], "token": "USDC", "amount": []}
    assert Ledger(GENESIS).apply(sign(0, 1, [], "transfer", to_self)) == Reason.SELF_TRANSFER
    bad_to = {**to_self, "to": "0x00"}
    assert Ledger(GENESIS).apply(sign(0, 1, [], "transfer", bad_to)) == Reason.BAD_BODY


def test_a_lock_reason_is_measured_in_bytes_at_both_edges() -> None:
    reason = "é" * 33  # 33 characters, 66 bytes
    with pytest.raises(InvalidField, match="reason"):
        KINDS.from_json("lock", {"token": "USDC", "amount": "1", "until": "10", "reason": reason})
    body = {"token": "USDC", "amount": 1, "until": 10, "reason": reason}
    assert Ledger(GENESIS).apply(sign(0, 1, [], "lock", body)) == Reason.BAD_BODY


def test_the_ledger_refuses_a_registry_whose_kind_has_no_handler() -> None:
    with pytest.raises(InternalError, match="memo: the ledger has no handler _memo"):
        Ledger(GENESIS, WITH_MEMO)


def test_a_kind_added_to_the_registry_with_its_handler_is_applied() -> None:
    note = {"to": ADDR[1], "note": "hello"}
    assert Ledger(GENESIS).apply(sign(ORACLE, 1, [], "memo", note)) == Reason.UNKNOWN_KIND
    ledger = MemoLedger(GENESIS)
    assert ledger.apply(sign(ORACLE, 1, [], "memo", note)) is None
    assert ledger.memos == [(ADDR[1], "hello")]
    # the registry's permission (post_price: the oracle's), its exact keys and its field types
    assert ledger.apply(sign(0, 1, [], "memo", note)) == Reason.NOT_PERMITTED
    assert ledger.apply(sign(ORACLE, 2, [], "memo", {**note, "extra": 1})) == Reason.BAD_BODY
    assert ledger.apply(sign(ORACLE, 3, [], "memo", {**note, "note": "x" * 65})) == Reason.BAD_BODY
    assert ledger.apply(sign(ORACLE, 4, [], "memo", {**note, "to": bytes(20)})) == Reason.UNKNOWN_RECIPIENT
    # the old kinds still work beside it
    assert ledger.apply(sign(0, 2, [], "transfer", {"to": ADDR[1], "token": "USDC", "amount": 5})) is None
    assert len(ledger.memos) == 1
