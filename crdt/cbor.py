"""Canonical CBOR: the one place where values become bytes and bytes become values.

Encoding is RFC 8949 core deterministic encoding (shortest integer and length heads, definite
lengths, map keys in bytewise order of their encodings). The allowed value types are unsigned
and negative integers below 2**64, byte and text strings, arrays, maps with text keys, and
booleans. cbor2 always writes shortest heads and definite lengths; map order is the one thing
it leaves to us. For text keys the bytewise order of the encoded keys is the order of
(UTF-8 length, UTF-8 bytes), so we sort maps by that key ourselves: cbor2's own
``canonical=True`` does the same but costs three times as much, and this is the ingest path.

Decoding is strict. After cbor2 has parsed the bytes, every value is checked against the
allowed types and the depth limit, and the value is encoded again: input that is not byte for
byte the canonical encoding of what it decodes to is rejected as `NonCanonical`. That single
comparison catches trailing bytes, indefinite lengths, non-shortest heads, unsorted or duplicate
map keys, bignum tags for small integers and every other alternative spelling, without a
hand-written parser.
"""

from __future__ import annotations

from typing import Any

import cbor2

from crdt.errors import NonCanonical, Oversized, Truncated, WrongType

UINT64_MAX = 2**64 - 1
_INT_MIN = -UINT64_MAX - 1  # CBOR's most negative integer (major type 1)
DEFAULT_MAX_DEPTH = 16


def map_key_order(key: str) -> tuple[int, bytes]:
    raw = key.encode()
    return len(raw), raw


def _sorted(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _sorted(value[key]) for key in sorted(value, key=map_key_order)}
    if kind is list or kind is tuple:
        return [_sorted(item) for item in value]
    return value


def encode(value: Any) -> bytes:
    """The canonical encoding of a value made of the allowed types (tuples become arrays)."""
    encoded: bytes = cbor2.dumps(_sorted(value))  # (typed here: the compiled build may not see cbor2's types)
    return encoded


def encode_sorted(value: Any) -> bytes:
    """Encode a value whose maps are already in canonical key order (a decoded value is)."""
    encoded: bytes = cbor2.dumps(value)
    return encoded


def _reject_tag(_decoder: object, tag: object) -> Any:
    raise WrongType(f"CBOR tags are not allowed (tag {getattr(tag, 'tag', '?')})")


def _loads(data: bytes) -> Any:
    try:
        return cbor2.loads(data, tag_hook=_reject_tag)
    except WrongType:
        raise
    except cbor2.CBORDecodeEOF as exc:
        raise Truncated(f"CBOR ends early: {exc}") from exc
    except RecursionError as exc:
        raise Oversized("CBOR nesting is too deep") from exc
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        # cbor2 raises ValueError subclasses for bad UTF-8, bad simple values, and so on.
        raise WrongType(f"not valid CBOR: {exc}") from exc


def check_value(value: Any, max_depth: int, _depth: int = 0) -> None:
    """Raise unless `value` is made only of the allowed types, nested at most `max_depth` deep,
    with every map's keys in canonical order."""
    if _depth > max_depth:
        raise Oversized(f"nesting deeper than {max_depth}")
    kind = type(value)
    child = _depth + 1
    if kind is dict:
        # canonical order is (length, bytes) of the UTF-8 keys, strictly increasing
        previous_size, previous_raw = -1, b""
        for key, item in value.items():
            if type(key) is not str:
                raise WrongType("map keys must be text strings")
            raw = key.encode()
            size = len(raw)
            if size < previous_size or (size == previous_size and raw <= previous_raw):
                raise NonCanonical("map keys are not in canonical order")
            previous_size, previous_raw = size, raw
            # what _check_item passes at once, tested here (the call costs more than the test)
            leaf = type(item)
            if child > max_depth or not (leaf is str or leaf is int or leaf is bytes or leaf is bool):
                _check_item(item, max_depth, child)
            elif leaf is int and not _INT_MIN <= item <= UINT64_MAX:
                raise WrongType("integer out of the 64-bit range")
    elif kind is list:
        for item in value:
            _check_item(item, max_depth, child)
    else:
        _check_item(value, max_depth, _depth)


def _check_item(value: Any, max_depth: int, depth: int) -> None:
    if depth > max_depth:
        raise Oversized(f"nesting deeper than {max_depth}")
    kind = type(value)
    if kind is bytes or kind is str or kind is bool:
        return
    if kind is int:
        if not _INT_MIN <= value <= UINT64_MAX:
            raise WrongType("integer out of the 64-bit range")
    elif kind is dict or kind is list:
        check_value(value, max_depth, depth)
    else:
        raise WrongType(f"CBOR type not allowed here: {kind.__name__}")


def parse(data: bytes, *, max_bytes: int) -> Any:
    """Parse one CBOR item with the size limit and tag ban, but without the type, depth and
    canonical checks: the caller must make them (as `decode` and `crdt.ops.decode_op` do)."""
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise WrongType(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > max_bytes:
        raise Oversized(f"{len(data)} bytes is more than the limit of {max_bytes}")
    if not data:
        raise Truncated("empty input")
    return _loads(data)


def decode(data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode one canonical CBOR item that must fill `data` exactly."""
    value = parse(data, max_bytes=max_bytes)
    check_value(value, max_depth)
    if encode_sorted(value) != bytes(data):
        raise NonCanonical("bytes are not the canonical CBOR encoding of their value")
    return value


def decode_sequence(data: bytes, *, max_item_bytes: int) -> list[bytes]:
    """Split an RFC 8742 CBOR sequence into the raw bytes of each item, without trusting it.

    Each returned item still has to be decoded (and so checked) by the caller. Garbage raises
    `InvalidInput`; an item larger than `max_item_bytes` raises `Oversized`.
    """
    items: list[bytes] = []
    stream = memoryview(data)
    offset = 0
    while offset < len(stream):
        end = offset + _item_length(stream, offset, max_item_bytes, 0)
        items.append(bytes(stream[offset:end]))
        offset = end
    return items


def _head(stream: memoryview, offset: int) -> tuple[int, int, int]:
    """Read a CBOR head: (major type, argument, head length)."""
    if offset >= len(stream):
        raise Truncated("CBOR sequence ends inside an item")
    initial = stream[offset]
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        return major, info, 1
    if info > 27:
        raise WrongType("indefinite lengths and reserved heads are not allowed")
    size = 1 << (info - 24)
    if offset + 1 + size > len(stream):
        raise Truncated("CBOR sequence ends inside a head")
    return major, int.from_bytes(stream[offset + 1 : offset + 1 + size], "big"), 1 + size


def _item_length(stream: memoryview, offset: int, limit: int, depth: int) -> int:
    if depth > DEFAULT_MAX_DEPTH:
        raise Oversized("nesting is too deep")
    major, argument, length = _head(stream, offset)
    if major in (2, 3):
        length += argument
    elif major in (4, 5):
        children = argument * (2 if major == 5 else 1)
        if children > limit:
            raise Oversized("declared item count is larger than the item limit")
        for _ in range(children):
            length += _item_length(stream, offset + length, limit, depth + 1)
            if length > limit:
                raise Oversized(f"item is larger than {limit} bytes")
    elif major == 6:
        length += _item_length(stream, offset + length, limit, depth + 1)
    if length > limit:
        raise Oversized(f"item is larger than {limit} bytes")
    if offset + length > len(stream):
        raise Truncated("CBOR sequence ends inside an item")
    return length
