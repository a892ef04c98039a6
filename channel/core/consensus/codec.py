"""The wire format of consensus messages and of this node's signing-log records: canonical
encoding and strict decoding (signatures are checked by `signing.signer_of`)."""

from __future__ import annotations

from typing import Any

from channel.core.consensus.messages import (
    CHECKPOINT_SIGNATURE,
    DECISION,
    MAX_DEPOSITS,
    MAX_HEADS,
    MAX_LEAVES,
    MAX_MESSAGE_BYTES,
    MAX_ROUND,
    PRECOMMIT,
    PREVOTE,
    PROPOSAL,
    CheckpointProposal,
    CheckpointSignature,
    Decision,
    Message,
    Precommit,
    Prevote,
    Proposal,
    SigningRecord,
    ValueId,
)
from crdt import cbor
from crdt.certificate import CHECKPOINT_FIELDS, checkpoint_from_wire, checkpoint_to_wire, fixed_bytes, leaf_from_wire
from crdt.errors import WrongType
from crdt.ledger import Deposit
from crdt.types import Address, OpId, Symbol

# -- codec ----------------------------------------------------------------------------------------
#
# A message is one canonical CBOR array whose first item is its kind:
#   [0, height, round, valid_round, value, signature]           Proposal (valid_round may be -1)
#   [1, height, round, value_id, signature]                      Prevote (value_id b"" is nil)
#   [2, height, round, value_id, signature]                      Precommit
#   [3, checkpoint, signature]                                   CheckpointSignature (EIP-712 signature)
#   [4, height, round, value, [signature...]]                    Decision (precommit signatures)
# value = [channel, version, payoutRoot, stateHash, [total...], depositNonce, time,
#          [head...], [[nonce, account, symbol, amount_e9]...], [[account, token, amount]...]]
# checkpoint = the first seven fields of a value. uint256 totals and leaf amounts are minimal
# big-endian byte strings, as in crdt.certificate.


def encode_message(message: Message) -> bytes:
    if isinstance(message, Proposal):
        return cbor.encode(
            [PROPOSAL, message.height, message.round, message.valid_round, message.value.to_wire(), message.signature]
        )
    if isinstance(message, Prevote | Precommit):
        kind = PREVOTE if isinstance(message, Prevote) else PRECOMMIT
        return cbor.encode([kind, message.height, message.round, message.value_id or b"", message.signature])
    if isinstance(message, Decision):
        return cbor.encode([DECISION, message.height, message.round, message.value.to_wire(), list(message.signatures)])
    return cbor.encode([CHECKPOINT_SIGNATURE, checkpoint_to_wire(message.checkpoint), message.signature])



def _uint(value: Any, what: str, maximum: int = cbor.UINT64_MAX) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise WrongType(f"{what} must be an integer in [0, {maximum}]")
    return value


def _array(value: Any, length: int | None, what: str, limit: int = MAX_LEAVES) -> list[Any]:
    if type(value) is not list or (length is not None and len(value) != length) or len(value) > limit:
        raise WrongType(f"{what} must be an array" + (f" of {length}" if length is not None else ""))
    return value


def _value_from(raw: Any) -> CheckpointProposal:
    n = CHECKPOINT_FIELDS
    fields = _array(raw, n + 3, "a value")
    heads = tuple(OpId(fixed_bytes(h, 32, "head")) for h in _array(fields[n], None, "heads", MAX_HEADS))
    deposits = []
    for entry in _array(fields[n + 1], None, "deposits", MAX_DEPOSITS):
        nonce, account, token, amount, block = _array(entry, 5, "a deposit")
        if type(token) is not str or not 0 < len(token) <= 16:
            raise WrongType("a deposit's token is a symbol of 1 to 16 characters")
        deposits.append(
            Deposit(
                _uint(nonce, "nonce"),
                Address(fixed_bytes(account, 20, "account")),
                Symbol(token),
                _uint(amount, "amount"),
                fixed_bytes(block, 32, "block hash"),
            )
        )
    leaves = [leaf_from_wire(entry) for entry in _array(fields[n + 2], None, "leaves", MAX_LEAVES)]
    return CheckpointProposal(checkpoint_from_wire(fields[:n]), heads, tuple(deposits), tuple(leaves))


def _value_id_from(raw: Any) -> ValueId | None:
    if raw == b"":
        return None
    return ValueId(fixed_bytes(raw, 32, "value id"))


def decode_message(data: bytes) -> Message:
    """Strictly decode one message, or raise `InvalidInput`. Signatures are checked by
    `Consensus.on_message` (or `signer_of`), which needs the genesis."""
    raw = cbor.decode(data, max_bytes=MAX_MESSAGE_BYTES, max_depth=4)
    if type(raw) is not list or not raw:
        raise WrongType("a consensus message is a non-empty array")
    kind = raw[0]
    if kind == PROPOSAL and type(kind) is int:
        _, height, round_, valid_round, value, signature = _array(raw, 6, "a proposal")
        round_ = _uint(round_, "round", MAX_ROUND)
        if type(valid_round) is not int or not -1 <= valid_round < round_:
            raise WrongType("valid_round must be -1 or a round before the proposal's")
        return Proposal(
            _uint(height, "height"), round_, _value_from(value), valid_round, fixed_bytes(signature, 65, "signature")
        )
    if kind in (PREVOTE, PRECOMMIT) and type(kind) is int:
        _, height, round_, value_id, signature = _array(raw, 5, "a vote")
        cls = Prevote if kind == PREVOTE else Precommit
        return cls(
            _uint(height, "height"),
            _uint(round_, "round", MAX_ROUND),
            _value_id_from(value_id),
            fixed_bytes(signature, 65, "signature"),
        )
    if kind == CHECKPOINT_SIGNATURE and type(kind) is int:
        _, checkpoint, signature = _array(raw, 3, "a checkpoint signature")
        return CheckpointSignature(checkpoint_from_wire(checkpoint), fixed_bytes(signature, 65, "signature"))
    if kind == DECISION and type(kind) is int:
        _, height, round_, value, signatures = _array(raw, 5, "a decision")
        return Decision(
            _uint(height, "height"),
            _uint(round_, "round", MAX_ROUND),
            _value_from(value),
            tuple(fixed_bytes(sig, 65, "signature") for sig in _array(signatures, None, "signatures", 1024)),
        )
    raise WrongType(f"unknown consensus message kind {kind!r}")


def encode_signing_record(record: SigningRecord) -> bytes:
    value = record.value.to_wire() if record.value is not None else []
    return cbor.encode([record.height, encode_message(record.message), value])


def decode_signing_record(data: bytes) -> SigningRecord:
    """Decode a stored `SigningRecord`, or raise `InvalidInput`."""
    raw = cbor.decode(data, max_bytes=2 * MAX_MESSAGE_BYTES, max_depth=8)
    height, message_bytes, value = _array(raw, 3, "a signing record")
    if type(message_bytes) is not bytes:
        raise WrongType("a signing record's message is a byte string")
    message = decode_message(message_bytes)
    if not isinstance(message, Proposal | Prevote | Precommit) or message.height != height:
        raise WrongType("a signing record holds a proposal or a vote of its height")
    return SigningRecord(message.height, message, _value_from(value) if value else None)

