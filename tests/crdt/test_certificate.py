"""Certificates: canonical CBOR round trip, strict decoding, and what `verify` rejects."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import testing
from crdt.certificate import Certificate, sign_checkpoint
from crdt.errors import BadSignature, InvalidInput, NonCanonical, WrongChannel, WrongType
from crdt.genesis import Genesis, InitialBalance, Token
from crdt.hashing import keccak256
from crdt.ops import address_of
from crdt.replica import Cut, Replica
from crdt.testing import from_replica
from crdt.types import Address, Hash32, Symbol

KEYS = [keccak256(b"certificate-test-%d" % i) for i in range(4)]
TOKEN = Address(b"\xaa" * 20)
BIG = Address(b"\xbb" * 20)


def make_genesis(balances: list[int] | None = None) -> Genesis:
    addresses = [address_of(k) for k in KEYS]
    amounts = balances if balances is not None else [5 * 10**9, 7 * 10**9, 0, 1]
    return testing.make_genesis(
        KEYS,
        [Token(Symbol("USDC"), TOKEN, 6), Token(Symbol("ETH"), BIG, 18)],
        adjudicator=b"\x01" * 20,
        initial=[
            InitialBalance(a, Symbol(symbol), amount)
            for a, amount in zip(addresses, amounts, strict=True)
            for symbol in ("USDC", "ETH")
            if amount
        ],
    )


def certificate(genesis: Genesis, signers: list[int] | None = None) -> Certificate:
    replica = Replica(genesis)
    replica.certify(Cut(1, (), 10))
    keys = [KEYS[i] for i in (signers if signers is not None else [2, 0, 1])]
    return from_replica(replica, 1, 0, 10, keys)


def test_round_trip_and_verify() -> None:
    genesis = make_genesis()
    cert = certificate(genesis)
    assert Certificate.decode(cert.encode()) == cert
    cert.verify(genesis)
    assert cert.signers(genesis) == list(genesis.addresses[:3])  # sorted by participant index
    assert cert.checkpoint.totals == (12_000_000, 12_000_000_001 * 10**9)  # ETH totals exceed 64 bits


@given(st.lists(st.integers(0, 10**20), min_size=4, max_size=4))
def test_round_trip_any_balances(balances: list[int]) -> None:
    genesis = make_genesis(balances)
    cert = certificate(genesis)
    assert Certificate.decode(cert.encode()) == cert
    cert.verify(genesis)


def test_assemble_deduplicates_signers() -> None:
    genesis = make_genesis()
    cert = certificate(genesis)
    again = Certificate.assemble(genesis, cert.checkpoint, [*cert.signatures, cert.signatures[0]], cert.leaves)
    assert again == cert


def test_verify_rejects_bad_certificates() -> None:
    genesis = make_genesis()
    cert = certificate(genesis)
    with pytest.raises(BadSignature, match="threshold"):
        replace(cert, signatures=cert.signatures[:2]).verify(genesis)
    with pytest.raises(BadSignature, match="distinct"):
        replace(cert, signatures=(cert.signatures[0], *cert.signatures[:2])).verify(genesis)
    with pytest.raises(BadSignature, match="distinct"):
        replace(cert, signatures=tuple(reversed(cert.signatures))).verify(genesis)
    stranger = sign_checkpoint(genesis.domain, cert.checkpoint, keccak256(b"stranger"))
    with pytest.raises(BadSignature, match="non-participant"):
        replace(cert, signatures=(*cert.signatures, stranger)).verify(genesis)
    forged_root = replace(cert.checkpoint, payout_root=Hash32(b"\x00" * 32))
    with pytest.raises(InvalidInput):
        replace(cert, checkpoint=forged_root).verify(genesis)
    resigned = [sign_checkpoint(genesis.domain, forged_root, KEYS[i]) for i in range(3)]
    with pytest.raises(InvalidInput, match="do not hash"):
        Certificate(forged_root, tuple(resigned), cert.leaves).verify(genesis)
    other = make_genesis([1, 2, 3, 4])
    other = replace(other, channel_id=keccak256(b"x"))  # type: ignore[arg-type]
    with pytest.raises(WrongChannel):
        cert.verify(other)


def test_decode_rejects_garbage() -> None:
    cert = certificate(make_genesis())
    data = cert.encode()
    for bad in (b"", b"\x80", data[:-1], data + b"\x00", b"\x89" + b"\x00" * 9):
        with pytest.raises(InvalidInput):
            Certificate.decode(bad)
    from crdt import cbor

    value = cbor.decode(data, max_bytes=len(data), max_depth=3)
    value[4][0] = b"\x00" + value[4][0]  # a total with a leading zero byte
    with pytest.raises(NonCanonical):
        Certificate.decode(cbor.encode(value))
    value = cbor.decode(data, max_bytes=len(data), max_depth=3)
    value[8][0] = value[8][0][:64]  # a signature of 64 bytes
    with pytest.raises(WrongType):
        Certificate.decode(cbor.encode(value))
