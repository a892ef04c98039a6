"""Payout Merkle trees, built exactly as OpenZeppelin's StandardMerkleTree builds them.

- leaf = keccak256(keccak256(abi.encode(account, token, amount))): the double hash closes the
  second-preimage hole that OpenZeppelin's MerkleProof documents;
- internal node = keccak256 of the two children in ascending order (sorted pairs), so a proof
  is a plain list of siblings and verifies with ``MerkleProof.verify``;
- leaves are sorted by hash and laid out as a complete binary tree in an array (the root at
  index 0, leaf i at index ``len - 1 - i``), so the root equals the one that
  ``StandardMerkleTree.of(values, ["address", "address", "uint256"])`` computes in
  @openzeppelin/merkle-tree, and proofs from either side verify on the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crdt.eip712 import address_word, word
from crdt.errors import InternalError
from crdt.hashing import keccak256
from crdt.types import Address, Hash32


@dataclass(frozen=True, slots=True)
class PayoutLeaf:
    account: Address
    token: Address  # the token's contract address
    amount: int  # in the token's own decimals

    def hash(self) -> Hash32:
        return leaf_hash(self.account, self.token, self.amount)


def leaf_hash(account: bytes, token: bytes, amount: int) -> Hash32:
    encoded = address_word(account) + address_word(token) + word(amount)
    return Hash32(keccak256(keccak256(encoded)))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b if a < b else b + a)


class MerkleTree:
    def __init__(self, leaves: Iterable[PayoutLeaf]) -> None:
        self.leaves = list(leaves)
        if not self.leaves:
            raise InternalError("a payout tree needs at least one leaf")
        hashed = sorted((leaf.hash(), position) for position, leaf in enumerate(self.leaves))
        size = 2 * len(hashed) - 1
        tree: list[bytes] = [b""] * size
        self._index_of_leaf: dict[int, int] = {}
        for i, (digest, position) in enumerate(hashed):
            tree[size - 1 - i] = digest
            self._index_of_leaf[position] = size - 1 - i
        for i in range(size - len(hashed) - 1, -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        self._tree = tree

    @property
    def root(self) -> Hash32:
        return Hash32(self._tree[0])

    def proof(self, position: int) -> list[Hash32]:
        """The sibling path for `self.leaves[position]`, from the leaf up."""
        index = self._index_of_leaf[position]
        path = []
        while index > 0:
            sibling = index - 1 if index % 2 == 0 else index + 1
            path.append(Hash32(self._tree[sibling]))
            index = (index - 1) // 2
        return path

    def proof_for(self, account: bytes, token: bytes) -> tuple[PayoutLeaf, list[Hash32]]:
        for position, leaf in enumerate(self.leaves):
            if leaf.account == account and leaf.token == token:
                return leaf, self.proof(position)
        raise KeyError(f"no leaf for account 0x{account.hex()} and token 0x{token.hex()}")


def verify(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """MerkleProof.verify: fold the proof into the leaf with sorted pairs, compare with root."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
