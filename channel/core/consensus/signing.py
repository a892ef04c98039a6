"""Signatures of consensus messages: the digests they cover, signing, and signer recovery."""

from __future__ import annotations

import functools

from channel.core.consensus.messages import (
    PRECOMMIT,
    PREVOTE,
    PROPOSAL,
    VOTE_PREFIX,
    CheckpointProposal,
    CheckpointSignature,
    Decision,
    Message,
    Precommit,
    Prevote,
    Proposal,
    ValueId,
)
from crdt import cbor
from crdt.certificate import sign_checkpoint
from crdt.eip712 import Checkpoint
from crdt.errors import BadSignature, InternalError, UnknownAuthor
from crdt.genesis import Genesis
from crdt.hashing import keccak256
from crdt.ops import recover_signer, sign_digest
from crdt.types import Address


def vote_digest(
    genesis: Genesis, kind: int, height: int, round_: int, value_id: bytes | None, valid_round: int = -1
) -> bytes:
    """The digest a consensus message's signature covers (never an EIP-712 or op digest)."""
    payload = cbor.encode([kind, height, round_, valid_round, value_id or b""])
    return keccak256(VOTE_PREFIX + genesis.domain.separator + genesis.channel_id + payload)


def message_digest(genesis: Genesis, message: Message) -> bytes:
    if isinstance(message, Proposal):
        return vote_digest(genesis, PROPOSAL, message.height, message.round, message.value_id, message.valid_round)
    if isinstance(message, Prevote):
        return vote_digest(genesis, PREVOTE, message.height, message.round, message.value_id)
    if isinstance(message, Precommit):
        return vote_digest(genesis, PRECOMMIT, message.height, message.round, message.value_id)
    if isinstance(message, Decision):
        raise InternalError("a decision carries many signatures; check each of its precommits")
    return message.checkpoint.digest(genesis.domain)


def sign_proposal(
    genesis: Genesis, private_key: bytes, height: int, round_: int, value: CheckpointProposal, valid_round: int = -1
) -> Proposal:
    digest = vote_digest(genesis, PROPOSAL, height, round_, value.value_id, valid_round)
    return Proposal(height, round_, value, valid_round, sign_digest(private_key, digest))


def sign_prevote(genesis: Genesis, private_key: bytes, height: int, round_: int, value_id: bytes | None) -> Prevote:
    vid = None if value_id is None else ValueId(value_id)
    digest = vote_digest(genesis, PREVOTE, height, round_, vid)
    return Prevote(height, round_, vid, sign_digest(private_key, digest))


def sign_precommit(genesis: Genesis, private_key: bytes, height: int, round_: int, value_id: bytes | None) -> Precommit:
    vid = None if value_id is None else ValueId(value_id)
    digest = vote_digest(genesis, PRECOMMIT, height, round_, vid)
    return Precommit(height, round_, vid, sign_digest(private_key, digest))


def sign_checkpoint_signature(genesis: Genesis, private_key: bytes, checkpoint: Checkpoint) -> CheckpointSignature:
    return CheckpointSignature(checkpoint, sign_checkpoint(genesis.domain, checkpoint, private_key))


@functools.lru_cache(maxsize=65536)
def _recover(digest: bytes, signature: bytes) -> Address | None:
    try:
        return recover_signer(digest, signature)
    except BadSignature:
        return None


def signer_of(genesis: Genesis, message: Message) -> Address:
    """The participant that signed `message`; `BadSignature` or `UnknownAuthor` otherwise."""
    if isinstance(message, Decision):
        raise InternalError("a decision has one signer per precommit")
    signer = _recover(message_digest(genesis, message), message.signature)
    if signer is None:
        raise BadSignature("consensus message signature does not recover")
    if genesis.participant(signer) is None:
        raise UnknownAuthor(f"consensus message signed by a non-participant 0x{signer.hex()}")
    return signer

