"""Canonical CBOR and the operation wire format (DESIGN.md, "Operations").

decode(encode(x)) == x, the encoding equals an independent RFC 8949 encoder's, and every other
spelling of the same value (the deviations of crdt_support.RefEncoder) is rejected.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crdt import cbor
from crdt.errors import (
    BadSignature,
    InvalidInput,
    NonCanonical,
    Oversized,
    Truncated,
    UnknownAuthor,
    WrongChannel,
    WrongType,
)
from crdt.ops import content_bytes, decode_op, encode_ops, sign_op, split_ops
from crdt.testing import forge
from tests.crdt.crdt_support import (
    ADDR,
    CTX,
    KEYS,
    N_PARTICIPANTS,
    OTHER_CTX,
    deviate,
    deviations,
    op_value,
    ref_encode,
    sign,
    transfer,
)

scalars = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.integers(-30, 300),
    st.binary(max_size=40),
    st.text(max_size=12),
    st.booleans(),
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=14,
)
body_values = values.filter(lambda v: depth(v) <= 5)
bodies = st.dictionaries(st.text(min_size=1, max_size=10), body_values, max_size=5)
kinds = st.text(min_size=1, max_size=12).filter(lambda k: 1 <= len(k.encode()) <= 32)
op_ids = st.binary(min_size=32, max_size=32)


@st.composite
def signed_ops(draw: st.DrawFn) -> Any:
    author = draw(st.integers(0, N_PARTICIPANTS - 1))
    seq = draw(st.one_of(st.integers(0, 30), st.integers(0, 2**64 - 1)))
    parents = draw(st.lists(op_ids, max_size=5))
    kind = draw(kinds)
    body = draw(bodies)
    ts = draw(st.one_of(st.integers(0, 2**64 - 1), st.just(0)))
    assume(len(content_bytes(sorted(set(parents)), kind, body, ts)) < 7500)
    op = sign_op(CTX, KEYS[author], seq, parents, kind, body, ts)
    return op, (author, seq, sorted(set(parents)), kind, body, ts)


# -- the canonical encoding ------------------------------------------------------------------


@given(values)
def test_encode_equals_independent_canonical_encoder(value: Any) -> None:
    assert cbor.encode(value) == ref_encode(value)


@given(values)
def test_decode_encode_roundtrip(value: Any) -> None:
    data = cbor.encode(value)
    assert cbor.decode(data, max_bytes=len(data)) == value


@given(values, st.data())
def test_every_deviation_of_a_value_is_rejected(value: Any, data: st.DataObject) -> None:
    found = deviations(value)
    assume(found)
    target, deviation = data.draw(st.sampled_from(found))
    bad = deviate(value, target, deviation)
    assert bad != cbor.encode(value)
    with pytest.raises(InvalidInput):
        cbor.decode(bad, max_bytes=len(bad) + 16)


def test_decode_respects_max_bytes_and_depth() -> None:
    data = cbor.encode([1, 2, 3])
    with pytest.raises(Oversized):
        cbor.decode(data, max_bytes=len(data) - 1)
    nested: Any = 0
    for _ in range(5):
        nested = [nested]
    data = cbor.encode(nested)
    assert cbor.decode(data, max_bytes=100, max_depth=5) == nested
    with pytest.raises(Oversized):
        cbor.decode(data, max_bytes=100, max_depth=4)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", Truncated),
        (b"\x18", Truncated),
        (b"\x82\x01", Truncated),
        (b"\xf9\x3c\x00", WrongType),  # 1.0 as a half float
        (b"\xf6", WrongType),  # null
        (b"\xa1\x01\x02", WrongType),  # integer map key
        (b"\xc2\x41\x05", NonCanonical),  # bignum for 5
        (b"\x01\x00", NonCanonical),  # trailing byte
        (b"\x1b" + (2**64 - 1).to_bytes(8, "big"), None),
        (b"\xc2\x49\x01" + bytes(8), WrongType),  # 2**64 as a bignum
    ],
)
def test_decode_edge_cases(data: bytes, error: type[Exception] | None) -> None:
    if error is None:
        assert cbor.decode(data, max_bytes=64) == 2**64 - 1
    else:
        with pytest.raises(error):
            cbor.decode(data, max_bytes=64)


# -- signed operations -------------------------------------------------------------------------


@given(signed_ops())
def test_op_roundtrip(generated: Any) -> None:
    op, (author, seq, parents, kind, body, ts) = generated
    again = decode_op(op.raw, CTX)
    assert again == op
    assert (again.author, again.seq, list(again.parents), again.kind, again.body, again.ts) == (
        ADDR[author],
        seq,
        parents,
        kind,
        body,
        ts,
    )
    assert again.op_id == op.op_id
    assert again.content_hash == op.content_hash
    # the wire bytes are what an independent canonical encoder makes of the fields
    assert ref_encode(op_value(op)) == op.raw


@given(signed_ops(), st.data())
def test_every_non_canonical_op_encoding_is_rejected(generated: Any, data: st.DataObject) -> None:
    op, _ = generated
    value = op_value(op)
    target, deviation = data.draw(st.sampled_from(deviations(value)))
    bad = deviate(value, target, deviation)
    with pytest.raises(WrongType if deviation == "float" else NonCanonical):
        decode_op(bad, CTX)


def rich_op() -> Any:
    body = {
        "to": ADDR[1],
        "token": "USDC",
        "amount": 70_000,
        "nested": {"a": [1, -1, 24, -25, 255, 256, 65535, 65536, 2**32, -(2**63)], "bb": b"x" * 30},
        "flag": True,
        "text": "é" * 13,
    }
    parents = [bytes([i]) * 32 for i in (3, 1, 2)]
    return sign(0, 300, parents, "transfer", body, ts=1_700_000_000_000)


def test_every_deviation_of_a_rich_op_is_rejected() -> None:
    op = rich_op()
    value = op_value(op)
    assert ref_encode(value) == op.raw
    found = deviations(value)
    assert len(found) > 60
    for target, deviation in found:
        bad = deviate(value, target, deviation)
        expected = WrongType if deviation == "float" else NonCanonical
        with pytest.raises(expected):
            decode_op(bad, CTX)


def test_seq_with_long_heads_is_rejected() -> None:
    op = sign(0, 5, [], "transfer", transfer(1, 1))
    value = op_value(op)
    seq_node, at = 3, 56  # nodes: list, channel, author, seq; bytes: 0x88, 2+32, 1+20
    assert op.raw[at] == 5
    assert deviate(value, seq_node, "long_head")[at : at + 2] == b"\x18\x05"
    for width, info in ((1, 0x18), (2, 0x19), (4, 0x1A), (8, 0x1B)):
        head = bytes([info]) + (5).to_bytes(width, "big")
        bad = op.raw[:at] + head + op.raw[at + 1 :]
        with pytest.raises(NonCanonical):
            decode_op(bad, CTX)


@pytest.mark.parametrize("change", ["reversed", "duplicated"])
def test_unsorted_or_duplicate_parents_are_rejected(change: str) -> None:
    op = sign(0, 1, [bytes([1]) * 32, bytes([2]) * 32], "transfer", transfer(1, 1))
    value = op_value(op)
    value[3] = value[3][::-1] if change == "reversed" else [value[3][0], *value[3]]
    with pytest.raises(NonCanonical):
        decode_op(ref_encode(value), CTX)


@pytest.mark.parametrize("extra", [b"\x00", b"\xff", b"\x80"])
def test_trailing_bytes_are_rejected(extra: bytes) -> None:
    op = rich_op()
    with pytest.raises(InvalidInput):
        decode_op(op.raw + extra, CTX)
    with pytest.raises(InvalidInput):
        decode_op(op.raw + op.raw, CTX)


def test_limits_at_and_past_the_boundary() -> None:
    limits = CTX.limits
    parents = [i.to_bytes(32, "big") for i in range(1, limits.max_parents + 1)]
    assert len(sign(0, 1, parents, "x", {}).parents) == limits.max_parents
    with pytest.raises(Oversized):
        sign_op(CTX, KEYS[0], 1, [*parents, bytes([0xFF]) * 32], "x", {})
    assert sign(0, 1, [], "k" * limits.max_kind_bytes, {}).kind == "k" * limits.max_kind_bytes
    with pytest.raises(WrongType):
        sign_op(CTX, KEYS[0], 1, [], "k" * (limits.max_kind_bytes + 1), {})
    with pytest.raises(WrongType):
        sign_op(CTX, KEYS[0], 1, [], "", {})
    # the body map is depth 0; a scalar inside k nested arrays under a key is at depth k + 1
    nested: Any = 1
    for _ in range(limits.max_body_depth - 1):
        nested = [nested]
    assert sign(0, 1, [], "x", {"a": nested}).body == {"a": nested}
    too_deep: Any = [nested]
    with pytest.raises(Oversized):
        sign_op(CTX, KEYS[0], 1, [], "x", {"a": too_deep})
    big = sign(0, 1, [], "x", {"b": b"\x00" * (limits.max_op_bytes - 300)})
    assert len(big.raw) <= limits.max_op_bytes
    with pytest.raises(Oversized):
        sign_op(CTX, KEYS[0], 1, [], "x", {"b": b"\x00" * limits.max_op_bytes})


def test_ops_for_another_channel_or_author_are_rejected() -> None:
    other = sign(0, 1, [], "transfer", transfer(1, 5), ctx=OTHER_CTX)
    with pytest.raises(WrongChannel):
        decode_op(other.raw, CTX)
    outsider = sign_op(OTHER_CTX.__class__(CTX.domain, CTX.channel, frozenset({ADDR[6]})), KEYS[6], 1, [], "x", {})
    with pytest.raises(UnknownAuthor):
        decode_op(outsider.raw, CTX)


def test_signature_by_another_participant_is_rejected() -> None:
    op = sign(0, 1, [], "transfer", transfer(1, 5))
    theirs = sign(1, 1, [], "transfer", transfer(1, 5))
    forged = forge(
        CTX, author=op.author, seq=1, parents=[], kind="transfer", body=op.body, ts=0, signature=theirs.signature
    )
    with pytest.raises(BadSignature):
        decode_op(forged, CTX)
    # the same bytes, unverified, decode (verify=False skips only the recovery)
    assert decode_op(forged, CTX, verify=False).author == op.author


@given(st.lists(signed_ops(), max_size=4))
def test_cbor_sequence_roundtrip(generated: list[Any]) -> None:
    ops = [op for op, _ in generated]
    data = encode_ops(ops)
    parts = split_ops(data, CTX)
    assert parts == [op.raw for op in ops]
    assert [decode_op(part, CTX) for part in parts] == ops
