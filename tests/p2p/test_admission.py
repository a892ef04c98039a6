"""Peer bindings (`p2p.admission`): who gets admitted, and a typed error for everything else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crdt import cbor
from crdt.errors import BadSignature, InvalidInput, UnknownAuthor
from crdt.hashing import keccak256
from p2p.admission import Admission, decode_binding, sign_binding
from p2p.errors import UnexpectedMessage
from tests.p2p.p2p_kit import make_genesis, private_key

GENESIS = make_genesis(3)
CTX = GENESIS.context()
PEER = b"\x00$\x08\x01\x12 " + b"\x07" * 32  # an Ed25519 peer id's bytes


def test_a_participants_binding_admits_its_peer_id() -> None:
    binding = sign_binding(CTX, private_key(1), PEER)
    admission = Admission(CTX, sign_binding(CTX, private_key(0), b"me"))
    assert admission.admit(binding.encode(), PEER) == GENESIS.participants[1].address
    assert admission.participant(PEER) == GENESIS.participants[1].address


def test_a_binding_for_another_peer_id_is_refused() -> None:
    binding = sign_binding(CTX, private_key(1), PEER)
    with pytest.raises(UnexpectedMessage, match="another peer id"):
        decode_binding(binding.encode(), CTX, PEER[:-1] + b"\x08")


def test_a_binding_by_a_non_participant_is_refused() -> None:
    binding = sign_binding(CTX, keccak256(b"outsider"), PEER)
    with pytest.raises(UnknownAuthor):
        decode_binding(binding.encode(), CTX, PEER)


def test_a_binding_whose_signature_is_someone_elses_is_refused() -> None:
    binding = sign_binding(CTX, private_key(1), PEER)
    claimed = cbor.encode([binding.channel, binding.peer_id, GENESIS.participants[2].address, binding.signature])
    with pytest.raises(BadSignature):
        decode_binding(claimed, CTX, PEER)


def test_a_binding_for_another_channel_is_refused() -> None:
    other = make_genesis(4).context()
    binding = sign_binding(other, private_key(1), PEER)
    with pytest.raises(UnexpectedMessage, match="channel"):
        decode_binding(binding.encode(), CTX, PEER)


def test_a_banned_participant_is_refused_whatever_its_peer_id() -> None:
    admission = Admission(CTX, sign_binding(CTX, private_key(0), b"me"))
    admission.admit(sign_binding(CTX, private_key(1), PEER).encode(), PEER)
    assert admission.ban(PEER) == [PEER]
    other = PEER[:-1] + b"\x09"
    with pytest.raises(UnexpectedMessage, match="banned"):
        admission.admit(sign_binding(CTX, private_key(1), other).encode(), other)
    assert admission.participant(other) is None


@given(st.binary(max_size=400))
@example(b"")
@example(b"\x84" + b"\x40" * 4)
@example(b"\x9f" * 300)
def test_any_bytes_are_a_binding_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(InvalidInput):  # anything else fails the test
        decode_binding(data, CTX, PEER)
