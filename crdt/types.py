"""Named types for ids and amounts (plain values at run time, distinct for the type checker)."""

from __future__ import annotations

from typing import NewType

Address = NewType("Address", bytes)  # 20 bytes
Hash32 = NewType("Hash32", bytes)  # 32 bytes
OpId = NewType("OpId", bytes)  # the EIP-712 digest of an operation, 32 bytes
ChannelId = NewType("ChannelId", bytes)  # 32 bytes
Amount = NewType("Amount", int)  # e9 base units, never negative in the state
Symbol = NewType("Symbol", str)  # a token symbol from the genesis


def to_hex(data: bytes) -> str:
    return "0x" + data.hex()


def from_hex(text: str, length: int | None = None) -> bytes:
    """Parse 0x-prefixed (or bare) hex; check the length in bytes when one is given."""
    body = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(body)
    except ValueError as exc:
        raise ValueError(f"not hex: {text!r}") from exc
    if length is not None and len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}: {text!r}")
    return raw
