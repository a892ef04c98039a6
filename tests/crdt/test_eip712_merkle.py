"""EIP-712 digests and signatures against eth-account, and payout Merkle trees against an
independent OpenZeppelin-style verifier written here with eth_utils.keccak (DESIGN.md,
"Operations" and "Merkle roots")."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_keys import keys as eth_keys
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from crdt.eip712 import Checkpoint, op_typed_data
from crdt.errors import BadSignature
from crdt.merkle import MerkleTree, PayoutLeaf, leaf_hash, verify
from crdt.ops import SECP256K1_N, decode_op
from crdt.testing import forge
from tests.crdt.crdt_support import ADDR, CTX, GENESIS, KEYS, N_PARTICIPANTS, sign, transfer

words = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20)


def typed_hash(message: dict) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(full_message=message)))


@given(
    st.integers(0, N_PARTICIPANTS - 1),
    st.integers(1, 2**64 - 1),
    st.lists(words, max_size=3),
    st.integers(0, 2**40),
)
def test_op_id_is_the_eip712_digest_and_the_signature_recovers(author: int, seq: int, parents, amount) -> None:
    op = sign(author, seq, parents, "transfer", transfer(0, amount))
    message = op_typed_data(GENESIS.domain, op.channel, op.author, op.seq, op.content_hash)
    assert typed_hash(message) == op.op_id
    checksum = Account.from_key(KEYS[author]).address
    assert Account._recover_hash(op.op_id, signature=op.signature) == checksum
    assert Account.recover_message(encode_typed_data(full_message=message), signature=op.signature) == checksum
    # and with eth-keys, from r, s, v alone
    v = op.signature[64] - 27
    r, s = int.from_bytes(op.signature[:32], "big"), int.from_bytes(op.signature[32:64], "big")
    public = eth_keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(op.op_id)
    assert public.to_canonical_address() == ADDR[author]


@given(
    words,
    st.integers(0, 2**64 - 1),
    words,
    words,
    st.lists(st.integers(0, 2**256 - 1), max_size=4),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(1, 2**64),
    st.binary(min_size=20, max_size=20),
)
def test_checkpoint_digest_matches_eth_account(
    channel, version, root, state, totals, nonce, time, chain, contract
) -> None:
    from crdt.eip712 import Domain

    domain = Domain(chain, contract)
    withdrawn = tuple(total // 3 for total in totals)
    checkpoint = Checkpoint(channel, version, root, state, tuple(totals), withdrawn, nonce, time)
    assert typed_hash(checkpoint.typed_data(domain)) == checkpoint.digest(domain)


@given(words, st.binary(min_size=1, max_size=64), st.integers(1, 2**64), addresses)
def test_peer_binding_digest_matches_eth_account(channel, peer_id, chain, contract) -> None:
    from crdt.eip712 import Domain, peer_binding_digest, peer_binding_typed_data

    domain = Domain(chain, contract)
    expected = peer_binding_digest(domain, channel, peer_id)
    assert typed_hash(peer_binding_typed_data(domain, channel, peer_id)) == expected


def resign(op, signature: bytes) -> bytes:
    return forge(
        CTX, author=op.author, seq=op.seq, parents=op.parents, kind=op.kind, body=op.body, ts=op.ts, signature=signature
    )


def test_high_s_signature_is_rejected() -> None:
    op = sign(0, 1, [], "transfer", transfer(1, 5))
    r, s, v = op.signature[:32], int.from_bytes(op.signature[32:64], "big"), op.signature[64]
    high = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    # the malleated signature is mathematically valid: it recovers to the author elsewhere
    assert Account._recover_hash(op.op_id, signature=high) == Account.from_key(KEYS[0]).address
    with pytest.raises(BadSignature):
        decode_op(resign(op, high), CTX)
    assert decode_op(resign(op, op.signature), CTX) == op


@pytest.mark.parametrize("v", [0, 1, 26, 29, 255])
def test_v_outside_27_28_is_rejected(v: int) -> None:
    op = sign(0, 1, [], "transfer", transfer(1, 5))
    with pytest.raises(BadSignature):
        decode_op(resign(op, op.signature[:64] + bytes([v])), CTX)


@pytest.mark.parametrize("bad", ["r0", "s0", "rN", "flip"])
def test_malformed_signatures_are_rejected(bad: str) -> None:
    op = sign(0, 1, [], "transfer", transfer(1, 5))
    sig = op.signature
    if bad == "r0":
        sig = bytes(32) + sig[32:]
    elif bad == "s0":
        sig = sig[:32] + bytes(32) + sig[64:]
    elif bad == "rN":
        sig = SECP256K1_N.to_bytes(32, "big") + sig[32:]
    else:
        sig = sig[:64] + bytes([55 - sig[64]])  # the other recovery id: another key
    with pytest.raises(BadSignature):
        decode_op(resign(op, sig), CTX)


@given(
    st.integers(1, 2**256 - 1),
    addresses,
    st.lists(addresses, min_size=1, max_size=5),
    st.integers(1, 2**64),
    st.integers(1, 2**64),
    st.lists(addresses, min_size=1, max_size=4),
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**256 - 1),
)
def test_channel_id_is_keccak_of_abi_encode(chain, adjudicator, participants, threshold, window, tokens, bond, nonce):
    from crdt.genesis import channel_id_for

    expected = keccak(
        abi_encode(
            ["uint256", "address", "address[]", "uint256", "uint256", "address[]", "uint256", "uint256"],
            [chain, adjudicator, participants, threshold, window, tokens, bond, nonce],
        )
    )
    assert channel_id_for(chain, adjudicator, participants, threshold, window, tokens, bond, nonce) == expected


# -- Merkle -------------------------------------------------------------------------------------


def oz_leaf(account: bytes, token: bytes, amount: int, kind: int = 0) -> bytes:
    types = ["uint8", "address", "address", "uint256"]
    return keccak(keccak(abi_encode(types, [kind, account, token, amount])))


def oz_verify(root: bytes, leaf: bytes, proof: list[bytes]) -> bool:
    """MerkleProof.verify: commutative keccak of sorted pairs, written independently."""
    node = leaf
    for sibling in proof:
        node = keccak(min(node, sibling) + max(node, sibling))
    return node == root


def oz_root(leaf_hashes: list[bytes]) -> bytes:
    """StandardMerkleTree.of: sort leaf hashes, lay them out from the end of an array."""
    hashes = sorted(leaf_hashes)
    size = 2 * len(hashes) - 1
    tree = [b""] * size
    for i, h in enumerate(hashes):
        tree[size - 1 - i] = h
    for i in range(size - len(hashes) - 1, -1, -1):
        a, b = tree[2 * i + 1], tree[2 * i + 2]
        tree[i] = keccak(min(a, b) + max(a, b))
    return tree[0]


leaves = st.lists(
    st.builds(PayoutLeaf, addresses, addresses, st.integers(0, 2**256 - 1), st.sampled_from([0, 1])),
    min_size=1, max_size=24,
)


@given(leaves)
def test_every_proof_verifies_independently(payouts: list[PayoutLeaf]) -> None:
    tree = MerkleTree(payouts)
    assert tree.root == oz_root([oz_leaf(p.account, p.token, p.amount, p.kind) for p in payouts])
    for i, p in enumerate(payouts):
        independent = oz_leaf(p.account, p.token, p.amount, p.kind)
        assert p.hash() == leaf_hash(p.account, p.token, p.amount, p.kind) == independent
        proof = tree.proof(i)
        assert oz_verify(tree.root, independent, proof)
        assert verify(tree.root, p.hash(), proof)
        # a wrong amount, account, token or kind fails
        assert not oz_verify(tree.root, oz_leaf(p.account, p.token, (p.amount + 1) % 2**256, p.kind), proof)
        other = bytes([p.account[0] ^ 1]) + p.account[1:]
        assert not oz_verify(tree.root, oz_leaf(other, p.token, p.amount, p.kind), proof)
        assert not oz_verify(tree.root, oz_leaf(p.account, other, p.amount, p.kind), proof)
        assert not oz_verify(tree.root, oz_leaf(p.account, p.token, p.amount, 1 - p.kind), proof)


def test_single_leaf_tree_is_its_leaf() -> None:
    leaf = PayoutLeaf(ADDR[0], ADDR[1], 5)
    tree = MerkleTree([leaf])
    assert tree.root == oz_leaf(ADDR[0], ADDR[1], 5, 0)
    assert tree.proof(0) == []


def test_payout_tree_of_a_replica_verifies() -> None:
    from crdt.replica import Replica

    replica = Replica(GENESIS)
    tree = replica.payout_tree()
    assert len(tree.leaves) == 2 * len(GENESIS.participants) * len(GENESIS.tokens)  # a balance and a withdrawal leaf
    for participant in GENESIS.participants:
        for token in GENESIS.tokens:
            for kind in (0, 1):
                leaf, proof = tree.proof_for(participant.address, token.address, kind)
                assert oz_verify(replica.payout_root(), oz_leaf(leaf.account, leaf.token, leaf.amount, kind), proof)
