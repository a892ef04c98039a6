"""The wire codec of the p2p layer: sync messages, gossip batches and length-prefixed frames.

Every byte string that comes from a peer goes through exactly one decoder here, and every
decoder is bounded and total:
- a frame is a LEB128 varint length (minimal, at most 4 bytes) followed by that many bytes; a
  declared length above ``max_frame_bytes`` is refused before any of the body is buffered, so
  a peer can make us hold at most one frame of ``max_frame_bytes`` per stream;
- a message is canonical CBOR (`crdt.cbor`, strict: one spelling per value), decoded with
  ``max_bytes`` and a small depth limit, and then checked field by field: list lengths, byte
  lengths, sortedness. So a decoded message is always within `WireLimits`;
- any failure raises a subclass of `p2p.errors.PeerInputError` (`MalformedMessage`,
  `OversizedMessage`); nothing else escapes a decoder, whatever the input.

Operations travel as their raw wire bytes (``SignedOp.raw``) inside these messages. The codec
checks only their size; decoding and verifying them (`crdt.ops.decode_op`) is the caller's job,
so it happens once, where the channel context is known.

Message shapes (CBOR arrays; the first item is the message type):

    Status  [0, channel, [[author, max_seq], ...], [head, ...]]   authors and heads sorted, unique
    Want    [1, [op_id, ...]]                                       sorted, unique
    Ops     [2, [raw_op, ...], more]                                more: the sender has more to push

A gossip batch is a bare CBOR array of raw operations: ``[raw_op, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crdt import cbor
from crdt.errors import InvalidInput, Oversized
from p2p.errors import MalformedMessage, OversizedMessage

STATUS, WANT, OPS = 0, 1, 2
MAX_VARINT_BYTES = 4  # 2**28 - 1 bytes, far above any frame limit


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Bounds on everything a peer can send. Both ends should use the same values."""

    max_frame_bytes: int = 1 << 20
    max_op_bytes: int = 8192
    max_authors: int = 4096
    max_heads: int = 4096
    max_want: int = 512
    max_ops_per_message: int = 2048
    max_batch_ops: int = 1024
    max_batch_bytes: int = 512 * 1024

    def __post_init__(self) -> None:
        if self.max_frame_bytes >= 1 << (7 * MAX_VARINT_BYTES):
            raise ValueError("max_frame_bytes does not fit the varint length prefix")


DEFAULT_WIRE_LIMITS = WireLimits()


@dataclass(frozen=True, slots=True)
class Status:
    """What a replica has: its version vector (author -> highest seq) and its heads."""

    channel: bytes
    version_vector: tuple[tuple[bytes, int], ...]
    heads: tuple[bytes, ...]

    def vector(self) -> dict[bytes, int]:
        return dict(self.version_vector)


@dataclass(frozen=True, slots=True)
class Want:
    """Please send these operations (by op id)."""

    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ops:
    """Raw signed operations, parents before children. ``more``: the sender stopped at its
    per-answer bound and will push the rest when it sees our next `Status`."""

    ops: tuple[bytes, ...]
    more: bool = False


Message = Status | Want | Ops


def make_status(channel: bytes, version_vector: dict[bytes, int], heads: Iterable[bytes]) -> Status:
    return Status(bytes(channel), tuple(sorted(version_vector.items())), tuple(sorted(set(heads))))


def make_want(ids: Iterable[bytes]) -> Want:
    return Want(tuple(sorted(set(ids))))


# -- messages ------------------------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    if isinstance(message, Status):
        vector = [[author, seq] for author, seq in message.version_vector]
        return cbor.encode([STATUS, message.channel, vector, list(message.heads)])
    if isinstance(message, Want):
        return cbor.encode([WANT, list(message.ids)])
    if isinstance(message, Ops):
        return cbor.encode([OPS, list(message.ops), message.more])
    raise TypeError(f"not a wire message: {message!r}")


def decode_message(data: bytes, limits: WireLimits = DEFAULT_WIRE_LIMITS) -> Message:
    """Decode one sync message, or raise `MalformedMessage` / `OversizedMessage`."""
    value = _cbor(data, limits.max_frame_bytes, depth=4)
    if type(value) is not list or not value or type(value[0]) is not int:
        raise MalformedMessage("a message is an array that starts with its integer type")
    kind = value[0]
    if kind == STATUS:
        return _status(value, limits)
    if kind == WANT:
        if len(value) != 2:
            raise MalformedMessage("Want is [1, ids]")
        ids = _id_list(value[1], limits.max_want, "Want ids")
        return Want(tuple(ids))
    if kind == OPS:
        if len(value) != 3 or type(value[2]) is not bool:
            raise MalformedMessage("Ops is [2, ops, more]")
        ops = _op_list(value[1], limits.max_ops_per_message, limits.max_op_bytes)
        return Ops(tuple(ops), value[2])
    raise MalformedMessage(f"unknown message type {kind}")


def _cbor(data: Any, max_bytes: int, depth: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise OversizedMessage(f"{len(data)} bytes is more than the limit of {max_bytes}")
    try:
        return cbor.decode(bytes(data), max_bytes=max_bytes, max_depth=depth)
    except Oversized as exc:
        raise OversizedMessage(str(exc)) from exc
    except InvalidInput as exc:
        raise MalformedMessage(f"{exc.code}: {exc}") from exc


def _status(value: list[Any], limits: WireLimits) -> Status:
    if len(value) != 4:
        raise MalformedMessage("Status is [0, channel, vector, heads]")
    _, channel, vector, heads = value
    if type(channel) is not bytes or len(channel) != 32:
        raise MalformedMessage("Status channel must be 32 bytes")
    if type(vector) is not list:
        raise MalformedMessage("Status vector must be an array")
    if len(vector) > limits.max_authors:
        raise OversizedMessage(f"{len(vector)} authors is more than {limits.max_authors}")
    pairs: list[tuple[bytes, int]] = []
    for entry in vector:
        if type(entry) is not list or len(entry) != 2:
            raise MalformedMessage("a vector entry is [author, seq]")
        author, seq = entry
        if type(author) is not bytes or len(author) != 20:
            raise MalformedMessage("a vector author must be 20 bytes")
        if type(seq) is not int or not 1 <= seq <= cbor.UINT64_MAX:
            raise MalformedMessage("a vector seq must be a uint64 of at least 1")
        if pairs and author <= pairs[-1][0]:
            raise MalformedMessage("vector authors must be sorted and unique")
        pairs.append((author, seq))
    ids = _id_list(heads, limits.max_heads, "Status heads")
    return Status(channel, tuple(pairs), tuple(ids))


def _id_list(value: Any, limit: int, what: str) -> list[bytes]:
    if type(value) is not list:
        raise MalformedMessage(f"{what} must be an array")
    if len(value) > limit:
        raise OversizedMessage(f"{len(value)} {what} is more than {limit}")
    previous = b""
    for item in value:
        if type(item) is not bytes or len(item) != 32:
            raise MalformedMessage(f"{what} must be 32-byte op ids")
        if item <= previous:
            raise MalformedMessage(f"{what} must be sorted and unique")
        previous = item
    return value


def _op_list(value: Any, max_count: int, max_op_bytes: int) -> list[bytes]:
    if type(value) is not list:
        raise MalformedMessage("operations must be an array")
    if len(value) > max_count:
        raise OversizedMessage(f"{len(value)} operations is more than {max_count}")
    for item in value:
        if type(item) is not bytes or not item:
            raise MalformedMessage("each operation must be a non-empty byte string")
        if len(item) > max_op_bytes:
            raise OversizedMessage(f"an operation of {len(item)} bytes is more than {max_op_bytes}")
    return value


# -- gossip batches --------------------------------------------------------------------------------


def encode_batch(ops: Sequence[bytes]) -> bytes:
    """A gossip batch: the CBOR array of raw operations (the caller keeps it within limits)."""
    return cbor.encode_sorted(list(ops))


def batch_overhead(count: int) -> int:
    """An upper bound on the bytes a batch adds around `count` operations of any size."""
    return 9 + 9 * count


def decode_batch(data: bytes, limits: WireLimits = DEFAULT_WIRE_LIMITS) -> list[bytes]:
    """The raw operations of a gossip batch, or raise `MalformedMessage` / `OversizedMessage`."""
    max_bytes = limits.max_batch_bytes + batch_overhead(limits.max_batch_ops)
    value = _cbor(data, max_bytes, depth=2)
    ops = _op_list(value, limits.max_batch_ops, limits.max_op_bytes)
    if not ops:
        raise MalformedMessage("a gossip batch is never empty")
    return ops


class BatchBuilder:
    """Collects raw operations into gossip batches within the count and byte limits.

    `add` returns the batches that became full (usually none); `flush` returns what is left.
    """

    def __init__(self, limits: WireLimits = DEFAULT_WIRE_LIMITS) -> None:
        self.limits = limits
        self._ops: list[bytes] = []
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._ops)

    def add(self, raw: bytes) -> list[bytes]:
        if len(raw) > self.limits.max_op_bytes:
            raise ValueError("operation is larger than max_op_bytes")
        full: list[bytes] = []
        if self._ops and self._bytes + len(raw) > self.limits.max_batch_bytes:
            full.append(self.flush())
        self._ops.append(raw)
        self._bytes += len(raw)
        if len(self._ops) >= self.limits.max_batch_ops:
            full.append(self.flush())
        return full

    def flush(self) -> bytes:
        batch = encode_batch(self._ops)
        self._ops = []
        self._bytes = 0
        return batch


# -- frames ----------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(payload: bytes, limits: WireLimits = DEFAULT_WIRE_LIMITS) -> bytes:
    if not payload:
        raise ValueError("frames are never empty")
    if len(payload) > limits.max_frame_bytes:
        raise ValueError(f"a frame of {len(payload)} bytes is over the limit {limits.max_frame_bytes}")
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into frames. Feed it chunks; it returns the complete frames.

    It buffers at most one frame of ``max_frame_bytes`` (plus its prefix). A bad prefix (not
    minimal, longer than 4 bytes, zero, or above the limit) raises at once; the decoder is
    then unusable, as the stream can no longer be parsed.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_WIRE_LIMITS.max_frame_bytes) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._need: int | None = None  # the body length, once the prefix is read
        self._failed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed:
            raise MalformedMessage("the stream already failed to parse")
        self._buffer += data
        frames: list[bytes] = []
        try:
            while True:
                if self._need is None:
                    self._need = self._prefix()
                    if self._need is None:
                        return frames
                if len(self._buffer) < self._need:
                    return frames
                frames.append(bytes(self._buffer[: self._need]))
                del self._buffer[: self._need]
                self._need = None
        except (MalformedMessage, OversizedMessage):
            self._failed = True
            self._buffer.clear()
            raise

    def _prefix(self) -> int | None:
        """Consume the varint prefix if complete; None if more bytes are needed."""
        value = 0
        for index, byte in enumerate(self._buffer[:MAX_VARINT_BYTES]):
            value |= (byte & 0x7F) << (7 * index)
            if byte & 0x80:
                continue
            if index and byte == 0:
                raise MalformedMessage("frame length prefix is not minimal")
            if value == 0:
                raise MalformedMessage("empty frame")
            if value > self.max_frame_bytes:
                raise OversizedMessage(f"frame of {value} bytes is over the limit {self.max_frame_bytes}")
            del self._buffer[: index + 1]
            return value
        if len(self._buffer) >= MAX_VARINT_BYTES:
            raise OversizedMessage("frame length prefix is longer than 4 bytes")
        return None

    def at_boundary(self) -> bool:
        """Whether the bytes fed so far end exactly at a frame boundary (a clean EOF)."""
        return not self._buffer and self._need is None
