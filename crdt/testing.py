"""Helpers for tests and simulations only, as `trio.testing` is for trio: nothing in the node
imports this module.

- `forge`: wire bytes of an operation with arbitrary fields and signature (hostile inputs);
- `from_replica`: a certificate of a replica's current state signed with given keys, without
  consensus;
- `receive_bytes`: decode, verify and receive one operation's bytes into a replica;
- `test_keys` and `make_genesis`: fixed keys, and the one genesis factory of the test kits and
  simulations (each kit passes its own parameters, so its channel id stays what it was).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crdt.certificate import Certificate, sign_checkpoint
from crdt.eip712 import Checkpoint
from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.graph import AddResult
from crdt.hashing import keccak256
from crdt.markets.config import Market
from crdt.ops import Context, _wire, address_of, content_bytes, decode_op
from crdt.replica import Replica


def forge(
    ctx: Context,
    *,
    author: bytes,
    seq: int,
    parents: Iterable[bytes],
    kind: str,
    body: Mapping[str, Any],
    ts: int,
    signature: bytes,
    channel: bytes | None = None,
) -> bytes:
    """Wire bytes for arbitrary fields and signature, unchecked."""
    content = content_bytes(sorted(set(parents)), kind, body, ts)
    return _wire(ctx.channel if channel is None else channel, author, seq, content, signature)


def from_replica(
    replica: Replica, version: int, deposit_nonce: int, time: int, keys: Iterable[bytes]
) -> Certificate:
    """Certify the replica's current state as checkpoint `version`, signed with `keys` (real
    certificates come out of consensus)."""
    genesis = replica.genesis
    tree = replica.payout_tree()
    checkpoint = Checkpoint(
        channel=genesis.channel_id,
        version=version,
        payout_root=tree.root,
        state_hash=replica.state_hash(),
        totals=replica.totals(),
        withdrawn=replica.withdrawn_totals(),
        deposit_nonce=deposit_nonce,
        time=time,
    )
    signatures = [sign_checkpoint(genesis.domain, checkpoint, key) for key in keys]
    return Certificate.assemble(genesis, checkpoint, signatures, tree.leaves)


def receive_bytes(replica: Replica, data: bytes, source: bytes = b"") -> AddResult:
    """Decode, verify and receive one operation; raises `InvalidInput` for bad bytes."""
    return replica.receive(decode_op(data, replica.ctx), source)


def test_keys(label: bytes, n: int) -> list[bytes]:
    """`n` fixed, valid secp256k1 keys: keccak256 of `label` % i (failures replay, nothing is random)."""
    return [keccak256(label % i) for i in range(n)]


def make_genesis(
    keys: Sequence[bytes],
    tokens: Sequence[Token],
    *,
    roles: Sequence[Role] | None = None,
    initial: int | Sequence[InitialBalance] = 0,
    bootstraps: Sequence[str] | None = None,
    chain_id: int = 31337,
    adjudicator: bytes = b"\x11" * 20,
    nonce: int = 0,
    markets: Sequence[Market] = (),
) -> Genesis:
    """A channel of the participants `keys` (roles: traders by default; bootstraps: none).

    `initial` is either an amount (e9) every participant holds of every token, or the initial
    balances themselves; `markets` are the genesis's markets (none by default)."""
    participants = [
        Participant(address_of(key), role, bootstrap)
        for key, role, bootstrap in zip(
            keys, roles or [Role.TRADER] * len(keys), bootstraps or [""] * len(keys), strict=True
        )
    ]
    if isinstance(initial, int):
        balances = [InitialBalance(p.address, t.symbol, initial) for p in participants for t in tokens if initial]
    else:
        balances = list(initial)
    return Genesis.create(
        chain_id=chain_id,
        adjudicator=adjudicator,
        participants=participants,
        tokens=list(tokens),
        initial_balances=balances,
        nonce=nonce,
        markets=markets,
    )
