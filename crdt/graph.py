"""The hash graph: the set of accepted operations, as a DAG keyed by op id.

Invariants, each kept by `HashGraph.add`:
- every parent of an accepted operation is accepted (operations whose parents are missing wait
  in a bounded `PendingBuffer`, and are released when the last parent arrives);
- for an accepted operation with seq > 1, an operation of the same author with seq - 1 is in
  its causal past; so each author's accepted operations have the sequence numbers 1..max with
  no gap, and `version_vector` (author -> max seq) summarises the whole set except for forks;
- ``height = 1 + max(parent heights)`` (1 for no parents), so ``(height, op_id)`` is a
  topological order;
- an accepted operation is never removed. Merge is set union (`merge`), so it is commutative,
  associative and idempotent by construction: the accepted set after merging is the union of
  the sets, whatever the order, and `add` of a known operation changes nothing;
- two accepted operations with the same (author, seq) are equivocation: the first pair seen is
  kept as `Equivocation` evidence (both signed operations), which the contract can check.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from crdt.errors import BadSequence, InvalidInput, PendingFull
from crdt.ops import SignedOp
from crdt.types import Address, OpId


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Two signed operations by one author with one seq: a fraud proof for slashEquivocation."""

    first: SignedOp
    second: SignedOp

    @property
    def author(self) -> Address:
        return self.first.author

    @property
    def seq(self) -> int:
        return self.first.seq

    def contract_args(self) -> tuple[bytes, bytes, int, bytes, bytes, bytes, bytes]:
        """(channel, author, seq, contentHashA, signatureA, contentHashB, signatureB)."""
        a, b = sorted((self.first, self.second), key=lambda op: op.op_id)
        return (a.channel, a.author, a.seq, a.content_hash, a.signature, b.content_hash, b.signature)

    def describe(self) -> dict[str, Any]:
        channel, author, seq, hash_a, sig_a, hash_b, sig_b = self.contract_args()
        return {
            "channel": "0x" + channel.hex(),
            "author": "0x" + author.hex(),
            "seq": seq,
            "content_hash_a": "0x" + hash_a.hex(),
            "signature_a": "0x" + sig_a.hex(),
            "content_hash_b": "0x" + hash_b.hex(),
            "signature_b": "0x" + sig_b.hex(),
        }


@dataclass(slots=True)
class AddResult:
    """What one `add` did: operations newly accepted (in acceptance order, parents first),
    parent ids still missing, and released pending operations that turned out invalid."""

    accepted: list[SignedOp] = field(default_factory=list)
    missing: set[OpId] = field(default_factory=set)
    rejected: list[tuple[SignedOp, InvalidInput]] = field(default_factory=list)


@dataclass(slots=True)
class _Waiting:
    op: SignedOp
    source: bytes
    missing: set[OpId]


class PendingBuffer:
    """Operations whose parents are not yet accepted, bounded in total and per source."""

    def __init__(self, max_total: int = 50_000, max_per_source: int = 5_000) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._entries: dict[OpId, _Waiting] = {}
        self._by_parent: dict[OpId, set[OpId]] = {}
        self._per_source: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._entries

    def put(self, op: SignedOp, missing: set[OpId], source: bytes) -> None:
        if len(self._entries) >= self.max_total:
            raise PendingFull(f"pending buffer is full ({self.max_total} operations)")
        count = self._per_source.get(source, 0)
        if count >= self.max_per_source:
            raise PendingFull(f"pending buffer is full for this source ({count} operations)")
        self._entries[op.op_id] = _Waiting(op, source, set(missing))
        self._per_source[source] = count + 1
        for parent in missing:
            self._by_parent.setdefault(parent, set()).add(op.op_id)

    def release(self, parent: OpId) -> list[SignedOp]:
        """Note that `parent` is accepted; return the operations that no longer wait for anything."""
        ready = []
        for child in sorted(self._by_parent.pop(parent, ())):
            waiting = self._entries[child]
            waiting.missing.discard(parent)
            if not waiting.missing:
                ready.append(self._remove(child).op)
        return ready

    def _remove(self, op_id: OpId) -> _Waiting:
        waiting = self._entries.pop(op_id)
        remaining = self._per_source[waiting.source] - 1
        if remaining:
            self._per_source[waiting.source] = remaining
        else:
            del self._per_source[waiting.source]
        for parent in waiting.missing:
            children = self._by_parent.get(parent)
            if children is not None:
                children.discard(op_id)
                if not children:
                    del self._by_parent[parent]
        return waiting

    def drop_source(self, source: bytes) -> int:
        """Forget everything a source sent that still waits (for a peer that was banned)."""
        doomed = [op_id for op_id, waiting in self._entries.items() if waiting.source == source]
        for op_id in doomed:
            self._remove(op_id)
        return len(doomed)

    def missing(self) -> set[OpId]:
        """Parent ids that some waiting operation needs and that are not waiting themselves."""
        return {parent for parent in self._by_parent if parent not in self._entries}

    def ops(self) -> list[SignedOp]:
        return [waiting.op for waiting in self._entries.values()]


class HashGraph:
    def __init__(self, pending: PendingBuffer | None = None) -> None:
        self.ops: dict[OpId, SignedOp] = {}
        self.height: dict[OpId, int] = {}
        self.heads: set[OpId] = set()
        self.chains: dict[Address, dict[int, list[OpId]]] = {}
        self.version_vector: dict[Address, int] = {}
        self.evidence: dict[tuple[Address, int], Equivocation] = {}
        self.pending = pending if pending is not None else PendingBuffer()

    def __len__(self) -> int:
        return len(self.ops)

    def __contains__(self, op_id: object) -> bool:
        return op_id in self.ops

    def add(self, op: SignedOp, source: bytes = b"") -> AddResult:
        """Accept `op` if its parents are known, else keep it pending.

        Raises `BadSequence` or `PendingFull` for `op` itself. Pending operations released by
        it that fail their checks are dropped and listed in ``result.rejected``.
        """
        result = AddResult()
        ops = self.ops
        if op.op_id in ops or op.op_id in self.pending:
            return result
        if op.seq < 1:
            raise BadSequence("seq starts at 1")
        missing = {parent for parent in op.parents if parent not in ops}
        if missing:
            self.pending.put(op, missing, source)
            result.missing = {parent for parent in missing if parent not in self.pending}
            return result
        self._accept(op)
        result.accepted.append(op)
        if not self.pending:
            return result
        queue = deque(self.pending.release(op.op_id))
        while queue:
            child = queue.popleft()
            try:
                self._accept(child)
            except InvalidInput as exc:
                result.rejected.append((child, exc))
                continue
            result.accepted.append(child)
            queue.extend(self.pending.release(child.op_id))
        return result

    def _accept(self, op: SignedOp) -> None:
        author, seq = op.author, op.seq
        chain = self.chains.get(author)
        if seq > 1 and not self._has_own_predecessor(op, chain):
            raise BadSequence(
                f"seq {seq} of 0x{author.hex()} does not have its seq {seq - 1} in its causal past"
            )
        height = self.height
        op_id = op.op_id
        height[op_id] = 1 + max((height[parent] for parent in op.parents), default=0)
        self.ops[op_id] = op
        heads = self.heads
        heads.difference_update(op.parents)
        heads.add(op_id)
        if chain is None:
            chain = self.chains[author] = {}
        same_seq = chain.get(seq)
        if same_seq is None:
            chain[seq] = [op_id]
        else:
            same_seq.append(op_id)
            key = (author, seq)
            if key not in self.evidence:
                self.evidence[key] = Equivocation(self.ops[same_seq[0]], op)
        if seq > self.version_vector.get(author, 0):
            self.version_vector[author] = seq

    def _has_own_predecessor(self, op: SignedOp, chain: dict[int, list[OpId]] | None) -> bool:
        targets = chain.get(op.seq - 1) if chain is not None else None
        if not targets:
            return False
        parents = op.parents
        for target in targets:
            if target in parents:
                return True
        return any(self.is_ancestor(target, op.parents) for target in targets)

    def is_ancestor(self, target: OpId, starts: Iterable[OpId]) -> bool:
        """Whether `target` is one of `starts` or in their causal past (searching only heights
        at or above the target's, so the walk stays near the top of the graph)."""
        floor = self.height[target]
        height = self.height
        seen: set[OpId] = set()
        stack = [start for start in starts if height[start] >= floor]
        while stack:
            current = stack.pop()
            if current == target:
                return True
            if current in seen:
                continue
            seen.add(current)
            stack.extend(p for p in self.ops[current].parents if height[p] >= floor and p not in seen)
        return False

    def key(self, op_id: OpId) -> tuple[int, OpId]:
        """The tentative order key (height, op_id)."""
        return self.height[op_id], op_id

    def in_order(self, op_ids: Iterable[OpId] | None = None) -> list[SignedOp]:
        """Operations (all, or the given ones) sorted by the tentative order key."""
        ids = self.ops.keys() if op_ids is None else op_ids
        return [self.ops[op_id] for op_id in sorted(ids, key=self.key)]

    def closure(self, heads: Iterable[OpId], stop: Container[OpId] = frozenset()) -> set[OpId]:
        """The causal closure of `heads` (heads included), not walking into `stop`."""
        found: set[OpId] = set()
        stack = [head for head in heads if head not in stop]
        while stack:
            current = stack.pop()
            if current in found:
                continue
            found.add(current)
            stack.extend(p for p in self.ops[current].parents if p not in found and p not in stop)
        return found

    def missing_for(self, version_vector: dict[Address, int]) -> Iterator[SignedOp]:
        """Operations a peer with `version_vector` lacks, parents first (for sync)."""
        wanted = [
            op_id
            for author, chain in self.chains.items()
            for seq, ids in chain.items()
            if seq > version_vector.get(author, 0)
            for op_id in ids
        ]
        return iter(self.in_order(wanted))

    def merge(self, other: HashGraph) -> AddResult:
        """Set union: add every operation of `other` (parents first). Returns what was new."""
        total = AddResult()
        for op in other.in_order():
            result = self.add(op)
            total.accepted.extend(result.accepted)
            total.rejected.extend(result.rejected)
        return total

    def copy(self) -> HashGraph:
        clone = HashGraph(PendingBuffer(self.pending.max_total, self.pending.max_per_source))
        clone.merge(self)
        return clone
