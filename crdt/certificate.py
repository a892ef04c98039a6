"""Certificates: a checkpoint, the quorum's signatures on it, and the payout leaves behind its root.

A certificate is what a participant keeps to leave the channel on its own (DESIGN.md, "Order
and finality" and the emergency exit): the contract needs the checkpoint and the signatures,
and a claim needs a Merkle proof, which the leaves give.

Invariants of a certificate that `verify` accepts:
- the checkpoint is for the genesis's channel and has one total per genesis token;
- signatures are 65 bytes r||s||v, low s, v in {27, 28} (as OpenZeppelin's ECDSA requires);
- they recover to participants in strictly increasing participant index (so there are no
  duplicates, the order is canonical, and the contract's bitmap count equals their number), and
  there are at least ``threshold`` of them;
- the leaves are one per (kind, account, token) and their tree root is the checkpoint's payout
  root, and for each token the balance leaves sum to the checkpoint's total and the withdrawal
  leaves to its withdrawn amount.

Canonical CBOR (`encode`/`decode`), a 10-element array:

    [channel, version, payoutRoot, stateHash, [total...], [withdrawn...], depositNonce, time,
     [signature...], [[account, token, amount, kind]...]]

Totals and amounts are uint256 in token decimals (an 18-decimal token overflows 64 bits), so
they are written as minimal big-endian byte strings (zero is the empty string, no leading zero
byte); any other spelling is `NonCanonical`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdt import cbor
from crdt.eip712 import Checkpoint, Domain
from crdt.errors import BadSignature, InvalidInput, NonCanonical, WrongChannel, WrongType
from crdt.merkle import BALANCE, LEAF_KINDS, WITHDRAWN, MerkleTree, PayoutLeaf, leaf_totals
from crdt.ops import sign_digest
from crdt.types import Address, ChannelId, Hash32

if TYPE_CHECKING:
    from crdt.genesis import Genesis

MAX_CERTIFICATE_BYTES = 8 * 1024 * 1024


def sign_checkpoint(domain: Domain, checkpoint: Checkpoint, private_key: bytes) -> bytes:
    """A 65-byte EIP-712 signature r||s||v (v 27/28, low s) of `checkpoint` under `domain`."""
    return sign_digest(private_key, checkpoint.digest(domain))


# -- the wire form of checkpoints and leaves, shared with channel.core.consensus ---------------------


def uint_bytes(value: int) -> bytes:
    """A uint256 as its minimal big-endian bytes (uint256 totals do not fit CBOR integers)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def uint_from_bytes(value: Any, what: str) -> int:
    if type(value) is not bytes or len(value) > 32:
        raise WrongType(f"{what} must be a byte string of at most 32 bytes")
    if value[:1] == b"\x00":
        raise NonCanonical(f"{what} has a leading zero byte")
    return int.from_bytes(value, "big")


def fixed_bytes(value: Any, length: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != length:
        raise WrongType(f"{what} must be {length} bytes")
    return value


def uint64(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= cbor.UINT64_MAX:
        raise WrongType(f"{what} must be a uint64")
    return value


CHECKPOINT_FIELDS = 8


def checkpoint_to_wire(c: Checkpoint) -> list[Any]:
    """[channel, version, payoutRoot, stateHash, totals, withdrawn, depositNonce, time]."""
    totals = [uint_bytes(total) for total in c.totals]
    withdrawn = [uint_bytes(amount) for amount in c.withdrawn]
    return [c.channel, c.version, c.payout_root, c.state_hash, totals, withdrawn, c.deposit_nonce, c.time]


def checkpoint_from_wire(fields: Any, max_tokens: int = 256) -> Checkpoint:
    if type(fields) is not list or len(fields) != CHECKPOINT_FIELDS:
        raise WrongType(f"a checkpoint is an array of {CHECKPOINT_FIELDS} fields")
    channel, version, root, state, totals, withdrawn, nonce, time = fields
    for name, amounts in (("totals", totals), ("withdrawn", withdrawn)):
        if type(amounts) is not list or len(amounts) > max_tokens:
            raise WrongType(f"{name} must be an array of at most {max_tokens}")
    if len(withdrawn) != len(totals):
        raise WrongType("a checkpoint has one total and one withdrawn amount per token")
    return Checkpoint(
        channel=ChannelId(fixed_bytes(channel, 32, "channel")),
        version=uint64(version, "version"),
        payout_root=Hash32(fixed_bytes(root, 32, "payout root")),
        state_hash=Hash32(fixed_bytes(state, 32, "state hash")),
        totals=tuple(uint_from_bytes(total, "total") for total in totals),
        withdrawn=tuple(uint_from_bytes(amount, "withdrawn") for amount in withdrawn),
        deposit_nonce=uint64(nonce, "deposit nonce"),
        time=uint64(time, "time"),
    )


def leaf_to_wire(leaf: PayoutLeaf) -> list[Any]:
    return [leaf.account, leaf.token, uint_bytes(leaf.amount), leaf.kind]


def leaf_from_wire(fields: Any) -> PayoutLeaf:
    if type(fields) is not list or len(fields) != 4:
        raise WrongType("a payout leaf is [account, token, amount, kind]")
    if fields[3] not in LEAF_KINDS or type(fields[3]) is not int:
        raise WrongType("a payout leaf's kind is 0 (balance) or 1 (withdrawn)")
    return PayoutLeaf(
        Address(fixed_bytes(fields[0], 20, "account")),
        Address(fixed_bytes(fields[1], 20, "token")),
        uint_from_bytes(fields[2], "amount"),
        fields[3],
    )


def check_leaves(
    genesis: Genesis, checkpoint: Checkpoint, leaves: Iterable[PayoutLeaf], error: type[InvalidInput]
) -> None:
    """Raise `error` unless the leaves are one per (kind, account, token) of the genesis's
    tokens, hash to the checkpoint's payout root, and sum to its totals and withdrawn amounts."""
    leaves = list(leaves)
    if not leaves:
        raise error("a checkpoint needs its payout leaves")
    if len({(leaf.kind, leaf.account, leaf.token) for leaf in leaves}) != len(leaves):
        raise error("two payout leaves of one kind for one (account, token)")
    tokens = [token.address for token in genesis.tokens]
    if any(leaf.token not in tokens for leaf in leaves):
        raise error("a payout leaf names a token that is not in the genesis")
    if MerkleTree(leaves).root != checkpoint.payout_root:
        raise error("the payout leaves do not hash to the checkpoint's payout root")
    if leaf_totals(tokens, leaves, BALANCE) != checkpoint.totals:
        raise error("the balance leaves do not sum to the checkpoint's totals")
    if leaf_totals(tokens, leaves, WITHDRAWN) != checkpoint.withdrawn:
        raise error("the withdrawal leaves do not sum to the checkpoint's withdrawn amounts")


@dataclass(frozen=True, slots=True)
class Certificate:
    checkpoint: Checkpoint
    signatures: tuple[bytes, ...]
    leaves: tuple[PayoutLeaf, ...]

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def assemble(
        cls,
        genesis: Genesis,
        checkpoint: Checkpoint,
        signatures: Iterable[bytes],
        leaves: Iterable[PayoutLeaf],
    ) -> Certificate:
        """A canonical certificate from signatures in any order: each signer is recovered, the
        signatures are sorted by participant index and a repeated signer is kept once. Raises
        `InvalidInput` for a signature that is malformed or not by a participant."""
        digest = checkpoint.digest(genesis.domain)
        ctx = genesis.context()
        index = {address: i for i, address in enumerate(genesis.addresses)}
        by_index: dict[int, bytes] = {}
        for signature in signatures:
            signer = ctx.recover(digest, signature)
            if signer not in index:
                raise BadSignature(f"checkpoint signed by a non-participant 0x{signer.hex()}")
            by_index.setdefault(index[signer], bytes(signature))
        return cls(checkpoint, tuple(by_index[i] for i in sorted(by_index)), tuple(leaves))

    @property
    def version(self) -> int:
        return self.checkpoint.version

    def tree(self) -> MerkleTree:
        return MerkleTree(self.leaves)

    def proof_for(self, account: bytes, token: bytes, kind: int = BALANCE) -> tuple[PayoutLeaf, list[Hash32]]:
        """The leaf of (kind, account, token) and its Merkle proof; KeyError if there is none."""
        return self.tree().proof_for(account, token, kind)

    # -- checking ----------------------------------------------------------------------------

    def signers(self, genesis: Genesis) -> list[Address]:
        """The signer of each signature, in order; raises `BadSignature` for a bad one."""
        digest = self.checkpoint.digest(genesis.domain)
        ctx = genesis.context()
        return [ctx.recover(digest, signature) for signature in self.signatures]

    def verify(self, genesis: Genesis) -> None:
        """Raise `InvalidInput` (`BadSignature`, `WrongChannel`, ...) unless the certificate is
        valid for `genesis`; see the module docstring for what that means."""
        checkpoint = self.checkpoint
        if checkpoint.channel != genesis.channel_id:
            raise WrongChannel(f"certificate is for channel 0x{checkpoint.channel.hex()}")
        if len(checkpoint.totals) != len(genesis.tokens):
            raise InvalidInput(f"{len(checkpoint.totals)} totals for {len(genesis.tokens)} tokens")
        if checkpoint.version < 1:
            raise InvalidInput("checkpoint versions start at 1")
        index = {address: i for i, address in enumerate(genesis.addresses)}
        previous = -1
        for signer in self.signers(genesis):
            position = index.get(signer)
            if position is None:
                raise BadSignature(f"checkpoint signed by a non-participant 0x{signer.hex()}")
            if position <= previous:
                raise BadSignature("signatures must come from distinct participants in participant order")
            previous = position
        if len(self.signatures) < genesis.threshold:
            raise BadSignature(
                f"{len(self.signatures)} signatures, the threshold is {genesis.threshold}"
            )
        check_leaves(genesis, checkpoint, self.leaves, InvalidInput)

    # -- codec -------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """[checkpoint fields…, signatures, leaves]: the 8 checkpoint fields, then two arrays."""
        wire = checkpoint_to_wire(self.checkpoint)
        return cbor.encode([*wire, list(self.signatures), [leaf_to_wire(leaf) for leaf in self.leaves]])

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        """Strictly decode canonical bytes, or raise `InvalidInput`. Signatures and the root
        are not checked here: call `verify` with the genesis."""
        value = cbor.decode(data, max_bytes=MAX_CERTIFICATE_BYTES, max_depth=3)
        if type(value) is not list or len(value) != CHECKPOINT_FIELDS + 2:
            raise WrongType(f"a certificate is an array of {CHECKPOINT_FIELDS + 2} fields")
        checkpoint = checkpoint_from_wire(value[:CHECKPOINT_FIELDS])
        signatures, leaves = value[CHECKPOINT_FIELDS], value[CHECKPOINT_FIELDS + 1]
        if type(signatures) is not list or type(leaves) is not list:
            raise WrongType("signatures and leaves must be arrays")
        parsed_leaves = [leaf_from_wire(leaf) for leaf in leaves]
        return cls(
            checkpoint,
            tuple(fixed_bytes(signature, 65, "signature") for signature in signatures),
            tuple(parsed_leaves),
        )
