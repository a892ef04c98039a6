"""Helpers for tests and simulations only, as `trio.testing` is for trio: nothing in the node
imports this module.

- `forge`: wire bytes of an operation with arbitrary fields and signature (hostile inputs);
- `from_replica`: a certificate of a replica's current state signed with given keys, without
  consensus;
- `receive_bytes`: decode, verify and receive one operation's bytes into a replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from crdt.certificate import Certificate, sign_checkpoint
from crdt.eip712 import Checkpoint
from crdt.graph import AddResult
from crdt.ops import Context, _wire, content_bytes, decode_op
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
