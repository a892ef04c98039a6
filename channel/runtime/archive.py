"""The node's archive of compacted operations: `crdt.graph.Archive` over the SQLite store.

`crdt.replica.Replica.compact` moves certified operations out of memory once nothing on the hot
path reads them (issue 16). Their bytes are already in the store's ``ops`` table (write-ahead);
the ``archived`` table adds what the graph knew of each: its height, the version it is final
in, and replay's outcome. The graph asks here only off its hot path (a replayed or equivocated
old operation, a pruned parent, a peer far behind), so each read is one indexed query and one
decode (the bytes were checked when they arrived and again at every start, so they are decoded
without recovering the signature).
"""

from __future__ import annotations

from collections.abc import Sequence

from channel.runtime.store import Store
from crdt.graph import Pruned
from crdt.ops import Context, decode_op
from crdt.types import Address, OpId


class StoreArchive:
    def __init__(self, store: Store, ctx: Context) -> None:
        self.store = store
        self.ctx = ctx

    def _record(self, row: tuple[bytes, int, int, str | None]) -> Pruned:
        raw, height, epoch, outcome = row
        return Pruned(decode_op(raw, self.ctx, verify=False), height, epoch, outcome)

    def put(self, records: Sequence[Pruned]) -> None:
        self.store.put_archived([
            (r.op.op_id, r.op.author, r.op.seq, r.height, r.epoch, None if r.outcome is None else str(r.outcome))
            for r in records
        ])

    def get(self, op_id: OpId) -> Pruned | None:
        row = self.store.archived(op_id)
        return self._record(row) if row is not None else None

    def at(self, author: Address, seq: int) -> tuple[OpId, ...]:
        return tuple(OpId(op_id) for op_id in self.store.archived_at(author, seq))

    def since(self, author: Address, seq: int) -> list[Pruned]:
        return [self._record(row) for row in self.store.archived_since(author, seq)]

    def extent(self) -> tuple[int, dict[Address, int]]:
        count, tops = self.store.archived_extent()
        return count, {Address(author): seq for author, seq in tops.items()}
