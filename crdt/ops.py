"""Signed operations: the wire format of DESIGN.md, signing, and strict decoding.

A signed operation on the wire is the canonical CBOR array

    [channel, author, seq, parents, kind, body, ts, signature]

and its identity is the EIP-712 digest ``op_id`` of Op(channel, author, seq, contentHash), with
``contentHash = keccak256(canonical CBOR of [parents, kind, body, ts])``.

Invariants of every `SignedOp` that `decode_op` returns:
- ``raw`` is the canonical encoding of the fields, and no other byte string decodes to them;
- the signature has low s, v in {27, 28}, and recovers to ``author``;
- ``author`` is a participant and ``channel`` is the context's channel;
- ``parents`` are strictly increasing 32-byte ids, at most ``limits.max_parents`` of them.

Decoding builds the expected wire bytes around the content encoding (which the content hash
needs anyway) instead of encoding the whole operation a second time: every other field has a
fixed-length encoding, so one comparison proves the input canonical.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import coincurve
from coincurve._libsecp256k1 import ffi as _ffi
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT
from sha3 import keccak_256

from crdt import cbor
from crdt.eip712 import OP_TYPEHASH, Domain
from crdt.errors import BadSignature, NonCanonical, Oversized, UnknownAuthor, WrongChannel, WrongType
from crdt.hashing import keccak256
from crdt.types import Address, ChannelId, Hash32, OpId

_ADDRESS_PAD = bytes(12)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2
_ZERO = bytes(32)
_N_BYTES = SECP256K1_N.to_bytes(32, "big")
_HALF_N_BYTES = HALF_N.to_bytes(32, "big")
_SECP = GLOBAL_CONTEXT.ctx  # libsecp256k1's context, as coincurve made it (verify-capable)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one operation may be. Peers' bytes are checked against them first."""

    max_op_bytes: int = 8192
    max_parents: int = 128
    max_body_depth: int = 6
    max_kind_bytes: int = 32


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Context:
    """What decoding needs to know about the channel: its domain, id and participants."""

    domain: Domain
    channel: ChannelId
    participants: frozenset[Address]
    limits: Limits = DEFAULT_LIMITS
    # libsecp256k1's internal 64-byte public key -> participant address; filled only with
    # participants, so an attacker's random keys never grow it.
    _known_keys: dict[bytes, Address] = field(default_factory=dict, repr=False)
    _separator: bytes = field(default=b"", repr=False)
    _digest_prefix: bytes = field(default=b"", repr=False)  # 0x1901 ‖ domain separator
    _struct_prefix: bytes = field(default=b"", repr=False)  # Op typehash ‖ channel ‖ an address's 12-byte pad
    _wire_prefix: bytes = field(default=b"", repr=False)  # array head ‖ channel ‖ author head

    def __post_init__(self) -> None:
        self._separator = self.domain.separator
        self._digest_prefix = b"\x19\x01" + self._separator
        self._struct_prefix = OP_TYPEHASH + self.channel + _ADDRESS_PAD
        self._wire_prefix = b"\x88" + _fixed_bytes(self.channel, 32) + b"\x54"

    def op_id(self, author: bytes, seq: int, content_hash: bytes) -> OpId:
        """The EIP-712 digest of Op(channel, author, seq, contentHash) in this channel."""
        struct = keccak_256(self._struct_prefix + author + seq.to_bytes(32, "big") + content_hash).digest()
        op_id: OpId = keccak_256(self._digest_prefix + struct).digest()  # (sha3 is untyped: no NewType call)
        return op_id

    @property
    def separator(self) -> bytes:
        return self._separator

    def recover(self, op_id: bytes, signature: bytes) -> Address:
        """The address that signed `op_id`, or raise `BadSignature`.

        The hot path of ingest, so it calls libsecp256k1 through coincurve's bindings directly
        (no PublicKey object, and no serialisation for a known key): a participant's key is
        looked up by libsecp256k1's 64-byte internal form, which is stable within a process."""
        _check_signature(signature)
        if len(op_id) != 32:
            raise BadSignature("the signed digest must be 32 bytes")
        parsed = _ffi.new("secp256k1_ecdsa_recoverable_signature *")
        key = _ffi.new("secp256k1_pubkey *")
        if not (
            _lib.secp256k1_ecdsa_recoverable_signature_parse_compact(_SECP, parsed, signature, signature[64] - 27)
            and _lib.secp256k1_ecdsa_recover(_SECP, key, parsed, op_id)
        ):
            raise BadSignature("signature does not recover")
        internal = bytes(_ffi.buffer(key, 64))
        address = self._known_keys.get(internal)
        if address is None:
            serialized = _ffi.new("unsigned char[65]")
            length = _ffi.new("size_t *", 65)
            _lib.secp256k1_ec_pubkey_serialize(_SECP, serialized, length, key, _lib.SECP256K1_EC_UNCOMPRESSED)
            address = Address(keccak256(bytes(_ffi.buffer(serialized, 65))[1:])[12:])
            if address in self.participants:
                self._known_keys[internal] = address
        return address


def _check_signature(signature: bytes) -> None:
    """r‖s‖v with v in {27, 28}, 0 < r < n and 0 < s <= n/2 (low s), or raise `BadSignature`."""
    if len(signature) != 65:
        raise BadSignature(f"signature must be 65 bytes, got {len(signature)}")
    v = signature[64]
    if v not in (27, 28):
        raise BadSignature(f"v must be 27 or 28, got {v}")
    # Equal-length big-endian byte strings compare like the numbers they encode.
    r, s = signature[:32], signature[32:64]
    if not _ZERO < r < _N_BYTES or not _ZERO < s <= _HALF_N_BYTES:
        raise BadSignature("r or s out of range (high s is not accepted)")


def recover_key(digest: bytes, signature: bytes) -> coincurve.PublicKey:
    """The public key that made `signature` (r‖s‖v, low s, v in {27, 28}) over `digest`."""
    _check_signature(signature)
    try:
        return coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes((signature[64] - 27,)), digest, hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception for unrecoverable sigs
        raise BadSignature(f"signature does not recover: {exc}") from exc


def recover_signer(digest: bytes, signature: bytes) -> Address:
    """The address that made `signature` over `digest` (what Solidity's ecrecover returns)."""
    return Address(keccak256(recover_key(digest, signature).format(compressed=False)[1:])[12:])


@dataclass(frozen=True, slots=True, eq=False, init=False)
class SignedOp:
    """An immutable operation (the invariants above hold for every one `decode_op` returns).

    A frozen dataclass with its own ``__init__``: the generated one stays interpreted in the
    compiled build (eleven ``object.__setattr__`` calls, 0.9 µs of each decode), where this one
    compiles to eleven stores."""

    channel: ChannelId
    author: Address
    seq: int
    parents: tuple[OpId, ...]
    kind: str
    body: Mapping[str, Any]
    ts: int
    signature: bytes
    content_hash: Hash32
    op_id: OpId
    raw: bytes

    def __init__(
        self, channel: ChannelId, author: Address, seq: int, parents: tuple[OpId, ...], kind: str,
        body: Mapping[str, Any], ts: int, signature: bytes, content_hash: Hash32, op_id: OpId, raw: bytes,
    ) -> None:
        # object.__setattr__ with the names spelled out: what mypyc compiles to direct stores
        object.__setattr__(self, "channel", channel)
        object.__setattr__(self, "author", author)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "signature", signature)
        object.__setattr__(self, "content_hash", content_hash)
        object.__setattr__(self, "op_id", op_id)
        object.__setattr__(self, "raw", raw)

    def __reduce__(self) -> tuple[type[SignedOp], tuple[Any, ...]]:
        # (the compiled build cannot unpickle a frozen dataclass through its __setstate__)
        return SignedOp, tuple(getattr(self, item.name) for item in fields(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SignedOp) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.op_id)

    def __repr__(self) -> str:
        return (
            f"SignedOp({self.kind} by 0x{self.author.hex()[:8]} seq={self.seq} "
            f"id=0x{self.op_id.hex()[:12]})"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view (hex for bytes)."""
        return {
            "op_id": "0x" + self.op_id.hex(),
            "author": "0x" + self.author.hex(),
            "seq": self.seq,
            "kind": self.kind,
            "body": _jsonable(self.body),
            "parents": ["0x" + parent.hex() for parent in self.parents],
            "ts": self.ts,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _fixed_bytes(value: bytes, length: int) -> bytes:
    """The CBOR encoding of a byte string of a known length below 2**16."""
    if length < 24:
        return bytes((0x40 | length,)) + value
    if length < 256:
        return bytes((0x58, length)) + value
    return bytes((0x59,)) + length.to_bytes(2, "big") + value


def _uint(value: int) -> bytes:
    """The shortest CBOR head of an unsigned integer (major type 0)."""
    if value < 24:
        return bytes((value,))
    if value < 0x100:
        return bytes((0x18, value))
    if value < 0x10000:
        return b"\x19" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\x1a" + value.to_bytes(4, "big")
    return b"\x1b" + value.to_bytes(8, "big")


def _wire(channel: bytes, author: bytes, seq: int, content: bytes, signature: bytes) -> bytes:
    # content is the encoding of the 4-element array [parents, kind, body, ts]: drop its 0x84
    # head and put the 8-element head (0x88) in front of all eight fields.
    return (
        b"\x88"
        + _fixed_bytes(channel, 32)
        + _fixed_bytes(author, 20)
        + _uint(seq)
        + content[1:]
        + _fixed_bytes(signature, 65)
    )


def content_bytes(parents: Iterable[bytes], kind: str, body: Mapping[str, Any], ts: int) -> bytes:
    return cbor.encode([list(parents), kind, dict(body), ts])


def address_of(private_key: bytes) -> Address:
    public = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    return Address(keccak256(public[1:])[12:])


@functools.lru_cache(maxsize=64)
def _signer(private_key: bytes) -> coincurve.PrivateKey:
    """The key object for `private_key`, made once: making one computes its public key, which
    cost as much as the signature itself (a node signs with one key; a simulation with a few)."""
    return coincurve.PrivateKey(private_key)


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """A recoverable signature r‖s‖v (v in {27, 28}, low s) of a 32-byte digest, as Solidity's
    ``ecrecover`` and `Context.recover` take it."""
    compact: bytes = _signer(private_key).sign_recoverable(digest, hasher=None)  # always low s
    return compact[:64] + bytes((27 + compact[64],))


UNSIGNED = bytes(65)  # the signature of an `unsigned_op`: no key makes it, and nothing verifies it


def unsigned_op(
    ctx: Context,
    author: bytes,
    seq: int,
    parents: Iterable[bytes],
    kind: str,
    body: Mapping[str, Any],
    ts: int = 0,
) -> SignedOp:
    """The operation `sign_op` would make, with `UNSIGNED` in place of its signature: the same
    op id, fields and size. It is what a dry run applies before anything is signed, so that
    an operation replay would reject is never signed at all; it fails every signature check,
    and must never be stored or sent (`sign` makes the real one)."""
    content = content_bytes(sorted(set(parents)), kind, body, ts)
    return decode_op(_wire(ctx.channel, author, seq, content, UNSIGNED), ctx, verify=False)


def sign(op: SignedOp, private_key: bytes) -> SignedOp:
    """`op` (an `unsigned_op`) signed with `private_key`, which must be its author's."""
    signature = sign_digest(private_key, op.op_id)
    # the wire bytes end with the signature's fixed 67-byte encoding: only those 65 change
    return SignedOp(op.channel, op.author, op.seq, op.parents, op.kind, op.body, op.ts, signature, op.content_hash,
                    op.op_id, op.raw[: -len(signature)] + signature)


def sign_op(
    ctx: Context,
    private_key: bytes,
    seq: int,
    parents: Iterable[bytes],
    kind: str,
    body: Mapping[str, Any],
    ts: int = 0,
) -> SignedOp:
    """Sign a new operation as the owner of `private_key` and return it decoded and checked."""
    return sign(unsigned_op(ctx, address_of(private_key), seq, parents, kind, body, ts), private_key)


def decode_op(data: bytes, ctx: Context, *, verify: bool = True) -> SignedOp:
    """Decode and check one signed operation, or raise a subclass of `InvalidInput`.

    ``verify=False`` skips only the signature recovery, for bytes this process verified before
    (its own store, or a verifier process). Everything else is still checked.
    """
    limits = ctx.limits
    if type(data) is not bytes and isinstance(data, bytearray | memoryview):
        data = bytes(data)
    value = cbor.parse(data, max_bytes=limits.max_op_bytes)
    if type(value) is not list or len(value) != 8:
        raise WrongType("an operation is an array of 8 fields")
    channel, author, seq, parents, kind, body, ts, signature = value
    if type(channel) is not bytes or len(channel) != 32:
        raise WrongType("channel must be 32 bytes")
    if type(author) is not bytes or len(author) != 20:
        raise WrongType("author must be a 20-byte address")
    if type(seq) is not int or not 0 <= seq <= cbor.UINT64_MAX:
        raise WrongType("seq must be a uint64")
    if type(parents) is not list:
        raise WrongType("parents must be an array")
    if len(parents) > limits.max_parents:
        raise Oversized(f"{len(parents)} parents is more than {limits.max_parents}")
    previous = b""
    for parent in parents:
        if type(parent) is not bytes or len(parent) != 32:
            raise WrongType("each parent must be a 32-byte op id")
        if parent <= previous:
            raise NonCanonical("parents must be sorted and unique")
        previous = parent
    if type(kind) is not str or not kind or len(kind.encode()) > limits.max_kind_bytes:
        raise WrongType(f"kind must be a text string of 1 to {limits.max_kind_bytes} bytes")
    if type(body) is not dict:
        raise WrongType("body must be a map")
    cbor.check_value(body, limits.max_body_depth)
    if type(ts) is not int or not 0 <= ts <= cbor.UINT64_MAX:
        raise WrongType("ts must be a uint64")
    if type(signature) is not bytes or len(signature) != 65:
        raise WrongType("signature must be 65 bytes")
    if channel != ctx.channel:
        raise WrongChannel(f"operation is for channel 0x{channel.hex()}")
    if author not in ctx.participants:
        raise UnknownAuthor(f"0x{author.hex()} is not a participant of this channel")
    # Every field except the content has one fixed encoding, so comparing the bytes built
    # around the canonical content encoding with the input proves the whole input canonical.
    content = cbor.encode_sorted([parents, kind, body, ts])
    if ctx._wire_prefix + author + _uint(seq) + content[1:] + b"\x58\x41" + signature != data:
        raise NonCanonical("operation bytes are not canonical")
    content_hash = keccak_256(content).digest()
    op_id = ctx.op_id(author, seq, content_hash)
    if verify and ctx.recover(op_id, signature) != author:
        raise BadSignature(f"signature does not recover to the author 0x{author.hex()}")
    return SignedOp(
        ChannelId(channel), Address(author), seq, tuple(parents), kind, body, ts, signature, content_hash, op_id, data
    )


def encode_ops(ops: Iterable[SignedOp]) -> bytes:
    """A CBOR sequence (RFC 8742) of signed operations: their wire bytes, one after another."""
    return b"".join(op.raw for op in ops)


def split_ops(data: bytes, ctx: Context) -> list[bytes]:
    """Split a CBOR sequence into per-operation byte strings (each still to be decoded)."""
    return cbor.decode_sequence(data, max_item_bytes=ctx.limits.max_op_bytes)
