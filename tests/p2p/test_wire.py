"""The wire codec: round trips, limits, and garbage that must become typed errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import cbor
from crdt.errors import InvalidInput
from p2p.errors import MalformedMessage, OversizedMessage, PeerInputError
from p2p.wire import (
    BatchBuilder,
    FrameDecoder,
    Ops,
    Status,
    Want,
    WireLimits,
    decode_batch,
    decode_message,
    encode_batch,
    encode_frame,
    encode_message,
    encode_varint,
    make_status,
    make_want,
)

ids = st.binary(min_size=32, max_size=32)
raw_ops = st.binary(min_size=1, max_size=300)
messages = st.one_of(
    st.builds(
        make_status,
        st.binary(min_size=32, max_size=32),
        st.dictionaries(st.binary(min_size=20, max_size=20), st.integers(1, 2**64 - 1), max_size=8),
        st.lists(ids, max_size=8),
    ),
    st.builds(make_want, st.lists(ids, max_size=20)),
    st.builds(lambda ops, more: Ops(tuple(ops), more), st.lists(raw_ops, max_size=10), st.booleans()),
)


@given(messages)
def test_message_round_trip(message: Status | Want | Ops) -> None:
    assert decode_message(encode_message(message)) == message


@given(st.binary(max_size=300))
def test_garbage_message_is_a_typed_error(data: bytes) -> None:
    assert issubclass(PeerInputError, InvalidInput)
    with contextlib.suppress(PeerInputError):
        decode_message(data)


@given(st.binary(max_size=300))
def test_garbage_batch_is_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(PeerInputError):
        decode_batch(data)


@given(st.lists(st.binary(max_size=200), max_size=20), st.lists(st.integers(1, 50), max_size=30))
def test_frames_survive_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    payloads = [p for p in payloads if p]
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    out: list[bytes] = []
    offset = 0
    for cut in cuts:
        out += decoder.feed(stream[offset : offset + cut])
        offset += cut
    out += decoder.feed(stream[offset:])
    assert out == payloads
    assert decoder.at_boundary()


@given(st.binary(max_size=64))
def test_garbage_frames_are_typed_errors(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    try:
        for frame in decoder.feed(data):
            assert 0 < len(frame) <= 1000
    except PeerInputError:
        pass


def test_oversized_frame_is_refused_before_its_body() -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    with pytest.raises(OversizedMessage):
        decoder.feed(encode_varint(1001))
    with pytest.raises(MalformedMessage):
        decoder.feed(b"\x01x")  # a failed decoder stays failed


@pytest.mark.parametrize(
    "prefix",
    [b"\x00", b"\x81\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\xff\x01"],
)
def test_bad_prefixes(prefix: bytes) -> None:
    with pytest.raises(PeerInputError):
        FrameDecoder().feed(prefix)


@pytest.mark.parametrize(
    "value",
    [
        [],
        [7],
        ["x"],
        [0, b"\x00" * 31, [], []],
        [0, b"\x00" * 32, [[b"\x01" * 20, 0]], []],
        [0, b"\x00" * 32, [[b"\x02" * 20, 1], [b"\x01" * 20, 1]], []],
        [0, b"\x00" * 32, [], [b"\x02" * 32, b"\x01" * 32]],
        [1, [b"\x01" * 32, b"\x01" * 32]],
        [1, [b"\x01" * 31]],
        [2, [b""], False],
        [2, [b"x"], 1],
        [2, ["x"], False],
    ],
)
def test_wrong_shapes_are_malformed(value: object) -> None:
    with pytest.raises(MalformedMessage):
        decode_message(cbor.encode(value))


def test_limits_are_enforced() -> None:
    limits = WireLimits(max_want=2, max_ops_per_message=2, max_op_bytes=10, max_authors=1, max_heads=1)
    with pytest.raises(OversizedMessage):
        decode_message(encode_message(make_want([b"\x01" * 32, b"\x02" * 32, b"\x03" * 32])), limits)
    with pytest.raises(OversizedMessage):
        decode_message(encode_message(Ops((b"a", b"b", b"c"))), limits)
    with pytest.raises(OversizedMessage):
        decode_message(encode_message(Ops((b"a" * 11,))), limits)
    with pytest.raises(OversizedMessage):
        decode_message(encode_message(make_status(b"\x00" * 32, {b"\x01" * 20: 1, b"\x02" * 20: 1}, [])), limits)
    with pytest.raises(OversizedMessage):
        decode_message(b"\x80" * (limits.max_frame_bytes + 1), limits)


def test_non_canonical_and_deep_input() -> None:
    canonical = encode_message(make_want([b"\x01" * 32]))
    with pytest.raises(MalformedMessage):
        decode_message(canonical + b"\x00")  # trailing bytes
    with pytest.raises(PeerInputError):
        decode_message(b"\x81" * 50_000 + b"\x00")  # nested far too deep
    with pytest.raises(PeerInputError):
        decode_message(b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff")  # an array claiming 2**64 items


def test_batches() -> None:
    limits = WireLimits(max_batch_ops=3, max_batch_bytes=25, max_op_bytes=10)
    builder = BatchBuilder(limits)
    full = []
    for index in range(7):
        full += builder.add(bytes([65 + index]) * 10)
    full.append(builder.flush())
    decoded = [decode_batch(batch, limits) for batch in full]
    assert [len(b) for b in decoded] == [2, 2, 2, 1]
    assert b"".join(b"".join(b) for b in decoded) == b"".join(bytes([65 + i]) * 10 for i in range(7))
    with pytest.raises(MalformedMessage):
        decode_batch(encode_batch([]), limits)
    with pytest.raises(OversizedMessage):
        decode_batch(encode_batch([b"x"] * 4), limits)


CRASHERS = Path(__file__).parent / "crashers"


@pytest.mark.parametrize("path", sorted(CRASHERS.glob("*.bin")), ids=str)
def test_recorded_crashers_are_typed_errors(path: Path) -> None:
    data = path.read_bytes()
    for decode in (decode_message, decode_batch):
        with contextlib.suppress(PeerInputError):
            decode(data)
