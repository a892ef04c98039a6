"""A replica: the hash graph plus the ledger, kept in the epoch order of DESIGN.md.

The order of application is: the operations of checkpoint 1's closure sorted by
``(height, op_id)``, then those of checkpoint 2's closure not in checkpoint 1's, and so on, then
the tentative suffix (everything not yet certified) sorted by the same key. The ledger state is
therefore a pure function of the set of accepted operations and the certified cuts; any two
replicas with the same set and cuts have byte-identical state hashes and payout roots.

How it stays cheap:
- the certified prefix is applied once and never touched again (it is the snapshot at the last
  certified cut);
- each tentative operation is applied inside an undo frame. An operation that sorts at the end
  (the common case) is applied directly. A late one that sorts before others undoes only the
  operations after its position, is applied, and re-applies them: the cost is the length of the
  suffix after it, never a replay from genesis;
- certifying a cut undoes the tentative suffix back to the snapshot, applies the new epoch,
  credits its deposits, closes the epoch at the checkpoint time, and re-applies what is left.

Freshness: an operation in epoch v >= 3 must have every head of cut v-2 in its causal past, or
it is rejected as `stale`. "Has all heads of cut u in its past" is computed as a bitmask per
operation (one bit per head, OR-ed over parents, memoised, and searched only above the lowest
head), so the check costs a few dictionary look-ups per operation.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from crdt.errors import InvalidCut, InvalidInput, InvalidSnapshot, MissingOperations
from crdt.genesis import Genesis
from crdt.graph import AddResult, Archive, Equivocation, HashGraph, PendingBuffer, Pruned
from crdt.ledger import Deposit, Frame, Ledger, Reason
from crdt.markets.book import OPEN, Fill, FillChanges, FillRecord, OrderInfo, RestingOrder
from crdt.merkle import BALANCE, WITHDRAWN, MerkleTree, PayoutLeaf, leaf_totals
from crdt.ops import Context, SignedOp
from crdt.snapshot import Certified, Snapshot, decode_snapshot, encode_snapshot
from crdt.types import Address, Hash32, OpId
from crdt.units import apportion, from_e9


def _int(value: Any) -> int:
    """A body field as replay checked it, or 0 in the body of an order rejected as bad_body."""
    return value if type(value) is int else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Cut:
    """A certified checkpoint, as replay needs it: the heads, the time, the deposits credited."""

    version: int
    heads: tuple[OpId, ...]
    time: int
    deposits: tuple[Deposit, ...] = field(default=())


Key = tuple[int, OpId]


@dataclass(frozen=True, slots=True)
class Preview:
    """What certifying a cut would give (see `Replica.preview`)."""

    state_hash: Hash32
    payout_root: Hash32
    totals: tuple[int, ...]  # per token, genesis order, token decimals: the balance leaves
    withdrawn: tuple[int, ...]  # the same for the withdrawal leaves (cumulative)
    deposit_nonce: int
    new_operations: int
    leaves: tuple[PayoutLeaf, ...]  # behind payout_root, genesis order


class Replica:
    def __init__(
        self, genesis: Genesis, ctx: Context | None = None, pending: PendingBuffer | None = None,
        archive: Archive | None = None,
    ) -> None:
        """`pending` sets the bounds of the buffer of operations waiting for parents (the
        defaults of `PendingBuffer` otherwise); `archive` is where `compact` moves what it
        prunes (without one, the replica keeps everything in memory)."""
        self.genesis = genesis
        self.ctx = ctx if ctx is not None else genesis.context()
        self.graph = HashGraph(pending, archive)
        self.ledger = Ledger(genesis)
        self.cuts: list[Cut] = []
        self.epoch_of: dict[OpId, int] = {}
        self.outcome: dict[OpId, Reason | None] = {}
        self._suffix: list[Key] = []
        self._frames: list[Frame] = []
        self._masks: dict[int, dict[OpId, int]] = {}
        self.replayed = 0  # operations re-applied because a late one sorted before them
        self.pruned_outcomes: dict[str, int] = {}  # reason -> pruned operations replay refused
        # fill reports: the fills as last reported, the lowest replay position that may have
        # changed since, and how many fills the certified prefix holds (those are final)
        self._reported: list[FillRecord] = []
        self._fill_mark = 0
        self._final_fills = 0

    # -- input ---------------------------------------------------------------------------------

    def receive(self, op: SignedOp, source: bytes = b"") -> AddResult:
        """Add a checked operation to the graph and apply whatever it lets in."""
        result = self.graph.add(op, source)
        for accepted in result.accepted:
            self._insert(accepted)
        return result

    def receive_many(self, ops: Iterable[SignedOp], source: bytes = b"") -> AddResult:
        """Receive a batch (a gossip message, a sync reply, a file).

        Equivalent to calling `receive` for each operation, but the batch is applied with a
        single unwind of the tentative suffix: the accepted keys are sorted, the suffix is
        undone down to the smallest of them, and the two sorted runs are merged and applied.
        Operations that `add` refuses are reported in ``rejected`` rather than raised.
        """
        total = AddResult()
        graph = self.graph
        missing: set[OpId] = set()
        for op in ops:
            try:
                missed = graph.add_to(total, op, source)
            except InvalidInput as exc:
                # without its traceback, which would hold this frame (and the batch) in a cycle
                # that only the cyclic collector frees: a flood's refusals are freed at once
                total.rejected.append((op, exc.with_traceback(None)))
                continue
            if missed:
                missing.update(missed)
        total.missing = tuple(sorted(parent for parent in missing if parent not in graph.ops))
        if total.accepted:
            height = graph.height
            keys = sorted((height[op.op_id], op.op_id) for op in total.accepted)
            later = self._unwind(bisect_left(self._suffix, keys[0]))
            self.replayed += len(later)
            self._apply_tentative(heapq.merge(later, keys) if later else keys)
        return total

    def merge(self, other: Replica) -> None:
        """Set union of the operations, then the other's certified cuts beyond ours."""
        self.receive_many([*other.graph.in_order(), *other.graph.pending.ops()])
        for index, cut in enumerate(other.cuts):
            if index < len(self.cuts):
                if self.cuts[index] != cut:
                    raise InvalidCut(f"conflicting certified cuts at version {cut.version}")
            else:
                self.certify(cut)

    def certify(self, cut: Cut) -> None:
        """Make `cut` the next certified checkpoint. Raises `InvalidInput` (and changes
        nothing) if it does not follow the last one or names unknown operations."""
        new = self._check_cut(cut)
        version = cut.version
        tentative = self._unwind()
        for op_id in new:
            self.epoch_of[op_id] = version
        self.cuts.append(cut)
        ledger = self.ledger
        for op in self.graph.in_order(new):
            self.outcome[op.op_id] = ledger.apply(op, stale=self._is_stale(op, version))
        for deposit in cut.deposits:
            ledger.credit_deposit(deposit)
        ledger.close_epoch(version, cut.time)
        self._final_fills = ledger.fill_count
        for old in [u for u in self._masks if u < version - 1]:
            del self._masks[old]
        self._apply_tentative(key for key in tentative if key[1] not in new)

    def preview(self, cut: Cut) -> Preview:
        """The roots that certifying `cut` would give, changing nothing: what a proposer puts
        in a checkpoint and what a voter compares. Raises like `certify`."""
        new = self._check_cut(cut)
        tentative = self._unwind()
        ledger = self.ledger
        frame = ledger.begin()
        try:
            for op in self.graph.in_order(new):
                ledger.apply(op, stale=self._is_stale(op, cut.version))
            for deposit in cut.deposits:
                ledger.credit_deposit(deposit)
            ledger.close_epoch(cut.version, cut.time)
            tree = self.payout_tree()
            tokens = self._token_addresses
            return Preview(
                ledger.state_hash(), tree.root, leaf_totals(tokens, tree.leaves, BALANCE),
                leaf_totals(tokens, tree.leaves, WITHDRAWN), ledger.deposit_nonce, len(new), tuple(tree.leaves),
            )
        finally:
            ledger.undo(frame)
            ledger.end()
            self._apply_tentative(tentative)

    def _check_cut(self, cut: Cut) -> set[OpId]:
        """Every check `certify` makes, before any change; returns the cut's new operations."""
        version = len(self.cuts) + 1
        graph = self.graph
        if cut.version != version:
            raise InvalidCut(f"expected checkpoint version {version}, got {cut.version}")
        if len(set(cut.heads)) != len(cut.heads):
            raise InvalidCut("cut names a head twice")  # its freshness mask could never be full
        if cut.time < 0:
            raise InvalidCut("checkpoint time is negative")
        missing = frozenset(head for head in cut.heads if not graph.known(head))
        if missing:
            raise MissingOperations(f"{len(missing)} operations of the cut are unknown", missing)
        if self.cuts:
            previous = self.cuts[-1]
            if cut.time < previous.time:
                raise InvalidCut("checkpoint time goes backwards")
            for head in previous.heads:
                if not graph.is_ancestor(head, cut.heads):
                    raise InvalidCut(f"cut does not contain head 0x{head.hex()} of the previous cut")
        nonce = self.ledger.deposit_nonce
        for deposit in cut.deposits:
            nonce += 1
            if deposit.nonce != nonce:
                raise InvalidCut(f"deposit nonce {deposit.nonce} where {nonce} was expected")
            # checked here, not only in credit_deposit, which runs after the replica has changed
            genesis = self.genesis
            if genesis.participant(deposit.account) is None or genesis.token(deposit.token) is None:
                raise InvalidCut("deposit for an unknown account or token")
            if deposit.amount < 0:
                raise InvalidCut("negative deposit")
        return graph.closure(cut.heads, stop=self.epoch_of.keys())

    def dry_run(self, op: SignedOp) -> Reason | None:
        """What applying `op` at the end of the current order would give, changing nothing.

        For an operation whose parents are the current heads (so it sorts after everything
        applied), this is exactly its tentative outcome.
        """
        with self.trial() as attempt:
            return attempt(op)

    @contextmanager
    def trial(self) -> Iterator[Callable[[SignedOp], Reason | None]]:
        """Dry runs of a batch: ``with replica.trial() as attempt: attempt(op)`` applies each
        operation after those attempted before it and returns its outcome. An operation replay
        rejects leaves no trace, not even its (author, seq): a batch signs only those taken, so
        the next one gets its seq. Everything is undone when the block ends."""
        ledger = self.ledger
        frame = ledger.begin()
        stale_rule = len(self.cuts) >= 2
        epoch = len(self.cuts) + 1
        covers: dict[OpId, int] = {}  # the trial's operations (not in the graph), which later ones name

        def attempt(op: SignedOp) -> Reason | None:
            before = ledger.undo_point()
            reason = ledger.apply(op, stale=stale_rule and self._is_stale(op, epoch, covers))
            if reason is not None:
                ledger.undo(before)
            return reason

        try:
            yield attempt
        finally:
            ledger.undo(frame)
            ledger.end()

    # -- the tentative suffix --------------------------------------------------------------------

    def _insert(self, op: SignedOp) -> None:
        key = (self.graph.height[op.op_id], op.op_id)
        suffix = self._suffix
        position = bisect_left(suffix, key)
        later = self._unwind(position)
        self.replayed += len(later)
        self._apply_tentative([key, *later])

    def _apply_tentative(self, keys: Iterable[Key]) -> None:
        """Apply these operations, in this order, after the tentative suffix, each in its own
        undo frame."""
        ops, ledger, outcome = self.graph.ops, self.ledger, self.outcome
        suffix, frames = self._suffix, self._frames
        epoch = len(self.cuts) + 1
        check_stale = epoch >= 3
        for key in keys:
            op_id = key[1]
            op = ops[op_id]
            frame = ledger.begin()
            try:
                outcome[op_id] = ledger.apply(op, stale=check_stale and self._is_stale(op, epoch))
            finally:
                ledger.end()
            suffix.append(key)
            frames.append(frame)

    def _unwind(self, position: int = 0) -> list[Key]:
        """Undo the tentative operations from `position` on; return their keys in order."""
        undone = self._suffix[position:]
        if undone:
            self.ledger.undo(self._frames[position])  # and the frames after it
            outcome = self.outcome
            for key in undone:
                del outcome[key[1]]
        del self._suffix[position:]
        del self._frames[position:]
        self._fill_mark = min(self._fill_mark, self.ledger.fill_count)
        return undone

    # -- compaction --------------------------------------------------------------------------------

    def compact(self, keep: int = 2) -> int:
        """Move to the archive the certified operations that replay and the freshness rule no
        longer read from memory, and return how many.

        Pruned are the operations final in a version at most ``version - keep`` (`keep` at
        least 2: an operation in epoch v must descend from every head of cut v - 2, so nothing
        that can still arrive sorts before cut ``version - 1``) whose height is below every
        head of the graph and of cut ``version - keep + 1`` on. Freshness walks from the heads
        of those cuts up, and new operations name heads, so in a channel whose participants
        name the heads (honest ones do), what is read later is in memory. Anything else (an
        old operation replayed, an equivocation of a pruned seq, a Byzantine operation naming a
        pruned parent) is read from the archive: the state, statuses, evidence and answers are
        exactly those of a replica that never compacts (tests/crdt/test_compaction.py), only
        those reads are slower. The ledger is the state at the last certified cut plus the
        tentative suffix already, so it needs nothing of what is pruned."""
        if keep < 2:
            raise ValueError("compaction keeps at least the last two certified epochs")
        graph = self.graph
        if graph.archive is None:
            raise InvalidInput("this replica has no archive to compact into")
        last = self.version - keep
        if last < 1:
            return 0
        height = graph.height
        floors = [height[head] for head in graph.heads]
        floors += [graph.height_of(head) for cut in self.cuts[last:] for head in cut.heads]
        floor = min(floors) if floors else 0
        epoch_of, outcome = self.epoch_of, self.outcome
        records = [
            Pruned(graph.ops[op_id], height[op_id], epoch, outcome[op_id])
            for op_id, epoch in epoch_of.items()
            if epoch <= last and height[op_id] < floor
        ]
        if not records:
            return 0
        records.sort(key=lambda record: (record.epoch, record.height, record.op.op_id))
        graph.prune(records)
        counts = self.pruned_outcomes
        for record in records:
            op_id = record.op.op_id
            del epoch_of[op_id]
            del outcome[op_id]
            if record.outcome is not None:
                counts[record.outcome] = counts.get(record.outcome, 0) + 1
        for memo in self._masks.values():
            for record in records:
                memo.pop(record.op.op_id, None)
        return len(records)

    # -- snapshots ---------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The certified state as a snapshot file (crdt/snapshot.py), changing nothing: the
        tentative suffix is unwound while the ledger is written, then applied again."""
        tentative = self._unwind()
        try:
            graph = self.graph
            return encode_snapshot(Snapshot(
                self.version, self.ledger.state_hash(), tuple(self.cuts), self.ledger,
                tuple(Certified(op_id, epoch, self.outcome[op_id]) for op_id, epoch in sorted(self.epoch_of.items())),
                tuple(graph.evidence[key] for key in sorted(graph.evidence)), dict(self.pruned_outcomes),
            ), self.genesis.channel_id)
        finally:
            self._apply_tentative(tentative)

    @classmethod
    def from_snapshot(
        cls, genesis: Genesis, data: bytes, ops: Iterable[SignedOp], *, ctx: Context | None = None,
        pending: PendingBuffer | None = None, archive: Archive | None = None, state_hash: Hash32 | None = None,
    ) -> Replica:
        """The replica a snapshot was taken of, with `ops` received after it: every operation
        not pruned into `archive` (in any order; those the snapshot lists as certified are put
        in the graph as they were, the others are replayed). Raises `InvalidSnapshot` for a
        file that is not a snapshot of this channel, that does not fit `ops` and `archive`, or
        whose state is not `state_hash` (when given: the state decided at its version).
        The result answers as the replica that wrote it did, once it holds the same operations
        (tests/crdt/test_snapshots.py)."""
        replica = cls(genesis, ctx, pending, archive)
        snapshot = decode_snapshot(data, genesis, replica.ctx, Cut)
        if state_hash is not None and snapshot.state_hash != state_hash:
            raise InvalidSnapshot(f"the snapshot's state is not the one decided at version {snapshot.version}")
        replica.ledger = snapshot.ledger
        replica.cuts = list(snapshot.cuts)
        replica._final_fills = replica.ledger.fill_count
        replica.pruned_outcomes = dict(snapshot.pruned_outcomes)
        graph = replica.graph
        if archive is not None:
            graph.pruned, graph.pruned_seq = archive.extent()
            graph.version_vector = dict(graph.pruned_seq)  # the operations added below raise it
        listed = {record.op_id: record for record in snapshot.certified}
        certified: list[SignedOp] = []
        rest: list[SignedOp] = []
        for op in ops:
            (certified if op.op_id in listed else rest).append(op)
        added = AddResult()
        for op in certified:
            graph.add_to(added, op)
        if len(added.accepted) != len(certified) or graph.pending:
            raise InvalidSnapshot("the certified operations of the snapshot do not form a closed graph with the store")
        for op in certified:
            record = listed[op.op_id]
            replica.epoch_of[op.op_id] = record.epoch
            replica.outcome[op.op_id] = None if record.outcome is None else Reason(record.outcome)
        replica.receive_many(rest)
        for equivocation in snapshot.evidence:  # the pair it kept (any pair is a proof; the same one is kept)
            graph.evidence[(equivocation.author, equivocation.seq)] = equivocation
        return replica

    # -- freshness ---------------------------------------------------------------------------------

    def _is_stale(self, op: SignedOp, epoch: int, covers: dict[OpId, int] | None = None) -> bool:
        """Whether `op`'s past misses a head of the cut two before its epoch. `covers` holds
        what the past of operations not in the graph (a trial's) covers, for those naming them
        as parents; `op`'s own is added to it."""
        if epoch < 3:
            return False
        heads = self.cuts[epoch - 3].heads
        if not heads:
            return False  # a cut without heads (say, one that only credits deposits) asks nothing
        full = (1 << len(heads)) - 1
        mask = 0
        for parent in op.parents:  # the op itself is never a head of an older cut
            known = covers.get(parent) if covers is not None else None
            mask |= known if known is not None else self._cover_mask(parent, epoch - 2)
        if covers is not None:
            covers[op.op_id] = mask
        return mask != full

    def _cover_mask(self, op_id: OpId, version: int) -> int:
        """Bitmask of the heads of cut `version` that are `op_id` or in its causal past."""
        memo = self._masks.setdefault(version, {})
        if op_id in memo:
            return memo[op_id]
        heads = self.cuts[version - 1].heads
        bit = {head: 1 << i for i, head in enumerate(heads)}
        graph = self.graph
        height, ops, height_of = graph.height, graph.ops, graph.height_of
        floor = min(height_of(head) for head in heads)
        stack = [op_id]
        while stack:
            current = stack[-1]
            op = ops.get(current)
            parents = op.parents if op is not None else graph._parents_of(current)  # pruned: rare
            pending = [p for p in parents if p not in memo and (height.get(p) or height_of(p)) >= floor]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if current in memo:
                continue
            mask = bit.get(current, 0)
            for parent in parents:
                mask |= memo.get(parent, 0)
            memo[current] = mask
        return memo[op_id]

    # -- reading -----------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return len(self.cuts)

    def status(self, op_id: OpId) -> str:
        """``final``, ``tentative``, ``rejected:<reason>``, ``pending`` or ``unknown``."""
        if op_id in self.outcome:
            reason = self.outcome[op_id]
            if reason is not None:
                return f"rejected:{reason}"
            return "final" if op_id in self.epoch_of else "tentative"
        if op_id in self.graph.pending:
            return "pending"
        record = self.graph._archived(op_id)
        if record is not None:
            return "final" if record.outcome is None else f"rejected:{record.outcome}"
        return "unknown"

    def outcome_of(self, op_id: OpId) -> tuple[bool, str | None]:
        """(whether replay applied `op_id`, the reason it had no effect or None), in memory or
        pruned."""
        outcome = self.outcome
        if op_id in outcome:
            return True, outcome[op_id]
        record = self.graph._archived(op_id)
        return (True, record.outcome) if record is not None else (False, None)

    def is_final(self, op_id: OpId) -> bool:
        """Whether `op_id` is in a certified cut (in memory or pruned)."""
        return op_id in self.epoch_of or self.graph._archived(op_id) is not None

    def rejected(self) -> list[tuple[SignedOp, Reason]]:
        """Operations replay gave no effect, in application order, with their reasons (of
        those in memory: `compact` moves the oldest to the archive)."""
        return [
            (op, reason)
            for op in self.applied_order()
            if (reason := self.outcome.get(op.op_id)) is not None
        ]

    def applied_order(self) -> list[SignedOp]:
        """Every accepted operation in memory in the order replay applied it."""
        final = sorted(self.epoch_of, key=lambda op_id: (self.epoch_of[op_id], *self.graph.key(op_id)))
        return [self.graph.ops[op_id] for op_id in final] + [
            self.graph.ops[op_id] for _, op_id in self._suffix
        ]

    def fills(self) -> list[Fill]:
        """The fills of the operations applied (certified, then tentative), in replay order; a
        tentative fill can change when a late operation sorts before it."""
        return self.ledger.fills

    def fill_records(self, start: int = 0) -> list[FillRecord]:
        """The fills from replay position `start` on, each with whether it is final (made by a
        certified operation: the certified prefix is applied first, so those come first)."""
        final = self._final_fills
        ledger = self.ledger
        return [FillRecord(ledger.fill(p), p < final) for p in range(start, ledger.fill_count)]

    def last_fill_records(self, keep: Callable[[Fill], bool], limit: int) -> list[FillRecord]:
        """The last `limit` fills that `keep` accepts, oldest first, read from the end of the
        replay order back (so an API's "last 100 trades" costs about what it returns, not every
        fill since genesis)."""
        final, ledger = self._final_fills, self.ledger
        found: list[FillRecord] = []
        position = ledger.fill_count
        while position > 0 and len(found) < limit:
            position -= 1
            fill = ledger.fill(position)
            if keep(fill):
                found.append(FillRecord(fill, position < final))
        found.reverse()
        return found

    def take_fill_changes(self) -> FillChanges:
        """Which fills appeared, changed (price, quantity, fees or finality) or vanished since the
        last call, and forget them: the node calls it after each receive or certify to tell its
        clients. The first call reports every fill as appeared.

        It costs what replay did: only the fills from the lowest position an undo reached are
        compared. Those before it are untouched (the undo journal pops the fills table from its
        end), and their finality is too: certifying unwinds the whole tentative suffix, so the
        mark is then at most the previous certified count."""
        start = min(self._fill_mark, len(self._reported))
        before = self._reported[start:]
        after = self.fill_records(start)
        old = {record.fill.fill_id: record for record in before}
        new = {record.fill.fill_id: record for record in after}
        changes = FillChanges(
            appeared=tuple(r for r in after if r.fill.fill_id not in old),
            changed=tuple(r for r in after if (o := old.get(r.fill.fill_id)) is not None and o != r),
            vanished=tuple(r for r in before if r.fill.fill_id not in new),
        )
        del self._reported[start:]
        self._reported.extend(after)
        self._fill_mark = len(self._reported)
        return changes

    def order_info(self, order_id: OpId) -> OrderInfo | None:
        """The state of the order placed by operation `order_id` (None if this replica holds no
        order.place with that id)."""
        op = self.graph.get(order_id) or self.graph.pending.get(order_id)
        if op is None or op.kind != "order.place":
            return None
        body = op.body
        ledger = self.ledger
        resting = ledger.order(order_id)
        records = tuple(
            FillRecord(ledger.fill(p), p < self._final_fills) for p in ledger.order_fills.get(order_id, ())
        )
        if resting is not None:
            status, final = OPEN, False
        elif (closed := ledger.closed.get(order_id)) is not None:
            why, by = closed
            status, final = why, by is None or self.is_final(by)
        else:  # rejected:<reason>, or pending
            status, final = self.status(order_id), self.is_final(order_id)
        return OrderInfo(
            order_id, op.author, _text(body.get("market")), _text(body.get("side")), _text(body.get("type")),
            _text(body.get("tif")), _int(body.get("price")), _int(body.get("qty")), body.get("reduce_only") is True,
            _int(body.get("expires")), resting.remaining if resting is not None else 0,
            sum(record.fill.qty for record in records), status, final, records,
        )

    def open_orders(self, account: Address | None = None, market: str | None = None) -> list[RestingOrder]:
        """The open orders (of `account`, in `market`, when given), by order id."""
        return [
            order
            for _, order in sorted(self.ledger.orders.items())
            if (account is None or order.owner == account) and (market is None or order.market == market)
        ]

    def evidence(self) -> list[Equivocation]:
        return [self.graph.evidence[key] for key in sorted(self.graph.evidence)]

    def state_hash(self) -> Hash32:
        return self.ledger.state_hash()

    def payout_tree(self) -> MerkleTree:
        """Per (participant, token), in genesis order: the balance leaf (free + held + locked, and
        in a perp collateral token the positions closed at their markets' prices
        (`Ledger.entitlements`), in token units, apportioned so the leaves of a token pay out
        their whole sum) and the withdrawal
        leaf (cumulative withdrawn, whole units by construction)."""
        ledger, participants = self.ledger, self.genesis.participants
        leaves: list[PayoutLeaf] = []
        for token in self.genesis.tokens:
            owed = apportion(ledger.entitlements([p.address for p in participants], token.symbol), token.decimals)
            for participant, amount in zip(participants, owed, strict=True):
                withdrawn = from_e9(ledger.withdrawn_by(participant.address, token.symbol), token.decimals)
                leaves.append(PayoutLeaf(participant.address, token.address, amount, BALANCE))
                leaves.append(PayoutLeaf(participant.address, token.address, withdrawn, WITHDRAWN))
        return MerkleTree(leaves)

    def payout_root(self) -> Hash32:
        return self.payout_tree().root

    def totals(self) -> tuple[int, ...]:
        """Per token (genesis order), the sum of the balance leaves, in token decimals."""
        return leaf_totals(self._token_addresses, self.payout_tree().leaves, BALANCE)

    def withdrawn_totals(self) -> tuple[int, ...]:
        """Per token (genesis order), the sum of the withdrawal leaves, in token decimals."""
        return leaf_totals(self._token_addresses, self.payout_tree().leaves, WITHDRAWN)

    @property
    def _token_addresses(self) -> list[Address]:
        return [token.address for token in self.genesis.tokens]

    def balances(self) -> dict[str, dict[str, dict[str, int]]]:
        """account hex -> token -> {free, held, locked, withdrawn} in e9 (held: by open orders;
        withdrawn: cumulative)."""
        ledger = self.ledger
        return {
            "0x" + p.address.hex(): {
                token.symbol: {
                    "free": ledger.balance(p.address, token.symbol),
                    "held": ledger.held(p.address, token.symbol),
                    "locked": ledger.locked(p.address, token.symbol),
                    "withdrawn": ledger.withdrawn_by(p.address, token.symbol),
                }
                for token in self.genesis.tokens
            }
            for p in self.genesis.participants
        }

    def summary(self) -> dict[str, Any]:
        return {
            "operations": len(self.graph),
            "pending": len(self.graph.pending),
            "version": self.version,
            "state_hash": "0x" + self.state_hash().hex(),
            "payout_root": "0x" + self.payout_root().hex(),
        }
