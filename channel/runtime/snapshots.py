"""The node's snapshots: files of its certified state in the data directory, to start from
instead of replaying the whole store (issue 16; the format is crdt/snapshot.py).

- every ``[store] snapshot_every`` certified checkpoints (default 100; 0: never) the node
  writes ``DATA_DIR/snapshots/v<N>.snap`` (atomically, fsync'd), then records its version and
  digest in the store; it keeps the newest two;
- a start reads the newest recorded one: its digest must be the recorded one, its ledger must
  have the state hash it names, and that must be the state hash of the checkpoint the quorum
  decided at its version (the stored decision); then the operations not compacted into the
  archive are replayed from the store on top of it, and the decisions after it certified.
  Anything that does not fit is `StoreDamaged` with the way out (`parley node repair` drops
  the snapshots, and the next start replays the whole store, which keeps every operation);
- archive rows of versions after the snapshot are given back to memory first: they were pruned
  after it was written, and replay needs them.
"""

from __future__ import annotations

from pathlib import Path

from channel.runtime.keystore import write_atomic
from channel.runtime.store import Store
from crdt.errors import InvalidInput
from crdt.genesis import Genesis
from crdt.graph import Archive
from crdt.hashing import keccak256
from crdt.ops import SignedOp
from crdt.replica import Replica
from crdt.types import Hash32

SNAPSHOTS_DIR = "snapshots"
KEEP = 2  # snapshots kept: the newest, and the one before in case the newest is damaged


def snapshot_path(data_dir: Path, version: int) -> Path:
    return data_dir / SNAPSHOTS_DIR / f"v{version}.snap"


def write_snapshot(store: Store, replica: Replica) -> int:
    """Write a snapshot of the replica's certified state and forget all but the newest `KEEP`;
    returns its size in bytes."""
    data = replica.snapshot()
    path = snapshot_path(store.path.parent, replica.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, 0o644)
    store.put_snapshot(replica.version, keccak256(data))
    for version in store.snapshot_versions()[:-KEEP]:
        snapshot_path(store.path.parent, version).unlink(missing_ok=True)
        store.delete_snapshot(version)
    return len(data)


def forget_snapshots(store: Store) -> int:
    """Drop every snapshot (repair): the next start replays the whole store."""
    versions = store.snapshot_versions()
    for version in versions:
        snapshot_path(store.path.parent, version).unlink(missing_ok=True)
        store.delete_snapshot(version)
    return len(versions)


def decided_state_hash(decisions: list[tuple[int, bytes]], version: int) -> Hash32 | None:
    """The state hash of the checkpoint decided at `version`, from the stored decisions."""
    from channel.core.consensus.codec import decode_message
    from channel.core.consensus.messages import Decision

    for stored, data in decisions:
        if stored == version:
            decision = decode_message(data)
            if isinstance(decision, Decision):
                return decision.value.checkpoint.state_hash
    return None


def latest_snapshot(store: Store) -> tuple[int, bytes] | None:
    """The newest recorded snapshot (version, bytes), its digest checked; None if there is none.
    Raises `StoreDamaged` for a file that is missing, unreadable or not the one recorded."""
    versions = store.snapshot_versions()
    if not versions:
        return None
    version = versions[-1]
    path = snapshot_path(store.path.parent, version)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise store.damaged(f"its snapshot {path} cannot be read", exc) from exc
    if keccak256(data) != store.snapshot_digest(version):
        raise store.damaged(f"its snapshot {path} is damaged (it is not the file that was written)")
    return version, data


def replica_from_snapshot(
    genesis: Genesis, store: Store, version: int, data: bytes, ops: list[SignedOp], archive: Archive | None,
    decisions: list[tuple[int, bytes]],
) -> Replica:
    """The replica of snapshot `version` with the stored operations `ops` (those not archived)
    replayed on top; `StoreDamaged` if the snapshot does not fit the store's `decisions`."""
    decided = decided_state_hash(decisions, version)
    if decided is None:
        raise store.damaged(f"its snapshot v{version} has no stored decision to check it against")
    try:
        return Replica.from_snapshot(genesis, data, ops, archive=archive, state_hash=decided)
    except InvalidInput as exc:
        raise store.damaged(f"its snapshot v{version} does not fit the store", exc) from exc
