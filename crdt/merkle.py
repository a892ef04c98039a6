"""Payout Merkle trees, built exactly as OpenZeppelin's StandardMerkleTree builds them.

A checkpoint's tree holds two kinds of leaf per (participant, token):
- ``BALANCE`` (0): what the account is paid when the channel concludes (free + held + locked:
  a resting order's hold goes back to its owner), once;
- ``WITHDRAWN`` (1): the cumulative amount the account has withdrawn in the channel, which only
  grows; the contract pays the difference against what it already paid, from any finalised
  checkpoint, while the channel stays open.

- leaf = keccak256(keccak256(abi.encode(uint8 kind, address account, address token, uint256
  amount))): the double hash closes the second-preimage hole that OpenZeppelin's MerkleProof
  documents, and the kind keeps a withdrawal proof from passing for a balance;
- internal node = keccak256 of the two children in ascending order (sorted pairs), so a proof
  is a plain list of siblings and verifies with ``MerkleProof.verify``;
- leaves are sorted by hash and laid out as a complete binary tree in an array (the root at
  index 0, leaf i at index ``len - 1 - i``), so the root equals the one that
  ``StandardMerkleTree.of(values, ["uint8", "address", "address", "uint256"])`` computes in
  @openzeppelin/merkle-tree, and proofs from either side verify on the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crdt.eip712 import address_word, word
from crdt.errors import InternalError
from crdt.hashing import keccak256
from crdt.types import Address, Hash32

BALANCE, WITHDRAWN = 0, 1
LEAF_KINDS = (BALANCE, WITHDRAWN)


@dataclass(frozen=True, slots=True)
class PayoutLeaf:
    account: Address
    token: Address  # the token's contract address
    amount: int  # in the token's own decimals
    kind: int = BALANCE

    def hash(self) -> Hash32:
        return leaf_hash(self.account, self.token, self.amount, self.kind)


def leaf_hash(account: bytes, token: bytes, amount: int, kind: int = BALANCE) -> Hash32:
    encoded = word(kind) + address_word(account) + address_word(token) + word(amount)
    return Hash32(keccak256(keccak256(encoded)))


def leaf_totals(tokens: Sequence[bytes], leaves: Iterable[PayoutLeaf], kind: int) -> tuple[int, ...]:
    """Per token (in the order given), the sum of the leaves of `kind`."""
    sums = dict.fromkeys(tokens, 0)
    for leaf in leaves:
        if leaf.kind == kind and leaf.token in sums:
            sums[leaf.token] += leaf.amount
    return tuple(sums[token] for token in tokens)


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

    def proof_for(self, account: bytes, token: bytes, kind: int = BALANCE) -> tuple[PayoutLeaf, list[Hash32]]:
        for position, leaf in enumerate(self.leaves):
            if leaf.account == account and leaf.token == token and leaf.kind == kind:
                return leaf, self.proof(position)
        raise KeyError(f"no leaf of kind {kind} for account 0x{account.hex()} and token 0x{token.hex()}")


def verify(root: bytes, leaf: bytes, proof: Sequence[bytes]) -> bool:
    """MerkleProof.verify: fold the proof into the leaf with sorted pairs, compare with root."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
