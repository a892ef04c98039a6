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

_KEPT = 4096  # genesis and checkpoint objects whose digests are kept by identity (emptied when full)
_prefixes: dict[int, tuple[Genesis, bytes]] = {}
_checkpoint_digests: dict[tuple[int, int], tuple[Genesis, Checkpoint, bytes]] = {}


def _vote_prefix(genesis: Genesis) -> bytes:
    """``VOTE_PREFIX``, the EIP-712 domain separator and the channel id: what every vote digest of
    `genesis` starts with (the separator is five hashes, so it is computed once per genesis)."""
    known = _prefixes.get(id(genesis))
    if known is not None and known[0] is genesis:
        return known[1]
    prefix = VOTE_PREFIX + genesis.domain.separator + genesis.channel_id
    if len(_prefixes) >= _KEPT:
        _prefixes.clear()
    _prefixes[id(genesis)] = (genesis, prefix)  # the genesis itself too: its id stays its own
    return prefix


def checkpoint_digest(genesis: Genesis, checkpoint: Checkpoint) -> bytes:
    """``checkpoint.digest(genesis.domain)`` (what a checkpoint signature covers), kept by the
    identity of both: the machine asks for it at every checkpoint signature it receives."""
    key = (id(genesis), id(checkpoint))
    known = _checkpoint_digests.get(key)
    if known is not None and known[0] is genesis and known[1] is checkpoint:
        return known[2]
    digest: bytes = checkpoint.digest(genesis.domain)
    if len(_checkpoint_digests) >= _KEPT:
        _checkpoint_digests.clear()
    _checkpoint_digests[key] = (genesis, checkpoint, digest)
    return digest


def vote_digest(
    genesis: Genesis, kind: int, height: int, round_: int, value_id: bytes | None, valid_round: int = -1
) -> bytes:
    """The digest a consensus message's signature covers (never an EIP-712 or op digest)."""
    payload = cbor.encode([kind, height, round_, valid_round, value_id or b""])
    return keccak256(_vote_prefix(genesis) + payload)


def message_digest(genesis: Genesis, message: Message) -> bytes:
    if isinstance(message, Proposal):
        return vote_digest(genesis, PROPOSAL, message.height, message.round, message.value_id, message.valid_round)
    if isinstance(message, Prevote):
        return vote_digest(genesis, PREVOTE, message.height, message.round, message.value_id)
    if isinstance(message, Precommit):
        return vote_digest(genesis, PRECOMMIT, message.height, message.round, message.value_id)
    if isinstance(message, Decision):
        raise InternalError("a decision carries many signatures; check each of its precommits")
    return checkpoint_digest(genesis, message.checkpoint)


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

