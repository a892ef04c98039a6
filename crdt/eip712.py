"""EIP-712 digests of the two things participants sign: operations and checkpoints.

The contract recomputes both with ``ecrecover``, so the encodings here are the Solidity ones
(every static field padded to 32 bytes, a dynamic ``uint256[]`` hashed as the keccak of its
packed words). A test compares every digest with what eth-account computes from the same typed
data, so the two can never drift apart.

    Op(bytes32 channel,address author,uint64 seq,bytes32 contentHash)
    Checkpoint(bytes32 channel,uint64 version,bytes32 payoutRoot,bytes32 stateHash,
               uint256[] totals,uint256[] withdrawn,uint64 depositNonce,uint64 time)
    PeerBinding(bytes32 channel,bytes peerId)

A third struct is never sent to the contract: `PeerBinding` is what a participant signs to say
which libp2p peer id speaks for it in this channel (`p2p.admission`).

The domain is {name "Parley", version "1", chainId, verifyingContract}: a signature is valid
only on one chain and for one adjudicator, and every struct carries the channel id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crdt.hashing import keccak256
from crdt.types import Address, ChannelId, Hash32

DOMAIN_NAME = "Parley"
DOMAIN_VERSION = "1"

DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
OP_TYPE = b"Op(bytes32 channel,address author,uint64 seq,bytes32 contentHash)"
CHECKPOINT_TYPE = (
    b"Checkpoint(bytes32 channel,uint64 version,bytes32 payoutRoot,bytes32 stateHash,"
    b"uint256[] totals,uint256[] withdrawn,uint64 depositNonce,uint64 time)"
)
PEER_BINDING_TYPE = b"PeerBinding(bytes32 channel,bytes peerId)"
DOMAIN_TYPEHASH = keccak256(DOMAIN_TYPE)
DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
OP_TYPEHASH = keccak256(OP_TYPE)
CHECKPOINT_TYPEHASH = keccak256(CHECKPOINT_TYPE)
PEER_BINDING_TYPEHASH = keccak256(PEER_BINDING_TYPE)


def word(value: int) -> bytes:
    """A uint256 as one 32-byte big-endian word."""
    return value.to_bytes(32, "big")


def address_word(address: bytes) -> bytes:
    return b"\x00" * 12 + address


@dataclass(frozen=True, slots=True)
class Domain:
    chain_id: int
    verifying_contract: Address

    @property
    def separator(self) -> Hash32:
        return Hash32(
            keccak256(
                DOMAIN_TYPEHASH
                + keccak256(DOMAIN_NAME.encode())
                + keccak256(DOMAIN_VERSION.encode())
                + word(self.chain_id)
                + address_word(self.verifying_contract)
            )
        )

    def typed_data(self) -> dict[str, Any]:
        """The domain as eth-account's ``encode_typed_data`` expects it."""
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": "0x" + self.verifying_contract.hex(),
        }


def digest(separator: bytes, struct_hash: bytes) -> Hash32:
    return Hash32(keccak256(b"\x19\x01" + separator + struct_hash))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a quorum signs and the contract settles (see DESIGN.md, "Order and finality")."""

    channel: ChannelId
    version: int
    payout_root: Hash32
    state_hash: Hash32
    totals: tuple[int, ...]  # per token, genesis order, token decimals: the balance leaves' sums
    withdrawn: tuple[int, ...]  # the same for the withdrawal leaves (cumulative withdrawals)
    deposit_nonce: int
    time: int  # checkpoint time, ms

    def struct_hash(self) -> bytes:
        return keccak256(
            CHECKPOINT_TYPEHASH
            + self.channel
            + word(self.version)
            + self.payout_root
            + self.state_hash
            + keccak256(b"".join(word(total) for total in self.totals))
            + keccak256(b"".join(word(amount) for amount in self.withdrawn))
            + word(self.deposit_nonce)
            + word(self.time)
        )

    def digest(self, domain: Domain) -> Hash32:
        return digest(domain.separator, self.struct_hash())

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The full EIP-712 message, for eth-account and for wallets."""
        return {
            "types": {
                "EIP712Domain": DOMAIN_FIELDS,
                "Checkpoint": [
                    {"name": "channel", "type": "bytes32"},
                    {"name": "version", "type": "uint64"},
                    {"name": "payoutRoot", "type": "bytes32"},
                    {"name": "stateHash", "type": "bytes32"},
                    {"name": "totals", "type": "uint256[]"},
                    {"name": "withdrawn", "type": "uint256[]"},
                    {"name": "depositNonce", "type": "uint64"},
                    {"name": "time", "type": "uint64"},
                ],
            },
            "primaryType": "Checkpoint",
            "domain": domain.typed_data(),
            "message": {
                "channel": self.channel,
                "version": self.version,
                "payoutRoot": self.payout_root,
                "stateHash": self.state_hash,
                "totals": list(self.totals),
                "withdrawn": list(self.withdrawn),
                "depositNonce": self.deposit_nonce,
                "time": self.time,
            },
        }


def op_typed_data(
    domain: Domain, channel: ChannelId, author: Address, seq: int, content_hash: Hash32
) -> dict[str, Any]:
    """The EIP-712 message of an operation, for eth-account and for wallets."""
    return {
        "types": {
            "EIP712Domain": DOMAIN_FIELDS,
            "Op": [
                {"name": "channel", "type": "bytes32"},
                {"name": "author", "type": "address"},
                {"name": "seq", "type": "uint64"},
                {"name": "contentHash", "type": "bytes32"},
            ],
        },
        "primaryType": "Op",
        "domain": domain.typed_data(),
        "message": {
            "channel": channel,
            "author": "0x" + author.hex(),
            "seq": seq,
            "contentHash": content_hash,
        },
    }


def peer_binding_digest(domain: Domain, channel: ChannelId, peer_id: bytes) -> Hash32:
    """The EIP-712 digest of PeerBinding(channel, peerId) (a dynamic ``bytes`` is hashed)."""
    return digest(domain.separator, keccak256(PEER_BINDING_TYPEHASH + channel + keccak256(peer_id)))


def peer_binding_typed_data(domain: Domain, channel: ChannelId, peer_id: bytes) -> dict[str, Any]:
    """The EIP-712 message of a peer binding, for eth-account and for wallets."""
    return {
        "types": {
            "EIP712Domain": DOMAIN_FIELDS,
            "PeerBinding": [{"name": "channel", "type": "bytes32"}, {"name": "peerId", "type": "bytes"}],
        },
        "primaryType": "PeerBinding",
        "domain": domain.typed_data(),
        "message": {"channel": channel, "peerId": peer_id},
    }
