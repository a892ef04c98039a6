"""Compaction changes nothing a replica answers (issue 16, "Compaction and snapshots").

Two replicas receive the same inputs in the same order: ``full`` keeps everything, ``lean`` has a
`MemoryArchive` and compacts whenever the machine says so. Authors 0 and 1 sign orders and
transfers on heads they saw (sometimes old ones, so operations are concurrent, late or stale);
author 2 is Byzantine: it equivocates on old sequence numbers (pruned ones too), names old and
pruned parents, withholds parents, and its cuts name old operations as heads. Operations are
delivered in any order, old ones again. After every step the two replicas must agree on the
answer of every call (accepted, missing and refused operations; a cut's refusal), the state
hash, the payout root, the status of every operation ever signed, the book, the fills, the
evidence, the heads, the version vector and what sync would send a peer. And compaction must
really prune: the test counts it (`event`) and a plain test checks memory holds only the recent
epochs. Now and then the compacting replica restarts from its snapshot (crdt/snapshot.py).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crdt.errors import InvalidInput
from crdt.graph import MemoryArchive
from crdt.ledger import Deposit
from crdt.ops import SignedOp
from crdt.replica import Cut, Replica
from crdt.types import OpId
from tests.crdt.crdt_support import ADDR, heads_of
from tests.crdt.crdt_support import sign as sign_with
from tests.crdt.markets.strategies import place_bodies, spot_genesis

GENESIS = spot_genesis()
CTX = GENESIS.context()


def sign(author: int, seq: int, parents: Any, kind: str, body: dict[str, Any], ts: int = 0) -> SignedOp:
    return sign_with(author, seq, parents, kind, body, ts, ctx=CTX)
HONEST = (0, 1)
BYZANTINE = 2


def outcome(call: Any) -> tuple[str, Any]:
    """What a call gave, comparable across replicas: its value or its error's type."""
    try:
        return "ok", call()
    except InvalidInput as exc:
        return "error", type(exc).__name__


def result_view(result: Any) -> tuple[Any, ...]:
    return (
        [op.op_id for op in result.accepted], result.missing,
        [(op.op_id, type(exc).__name__) for op, exc in result.rejected],
    )


class Compaction(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.full = Replica(GENESIS)
        self.archive = MemoryArchive()
        self.lean = Replica(GENESIS, archive=self.archive)
        self.signed: list[SignedOp] = []  # every operation signed, in signing order
        self.delivered: set[OpId] = set()
        self.last: dict[int, SignedOp] = {}
        self.snapshots: list[list[OpId]] = [[]]  # the full replica's heads after each step
        self.time = 0
        self.pruned = 0

    # -- inputs --------------------------------------------------------------------------------

    def deliver(self, ops: list[SignedOp]) -> None:
        graph = self.lean.graph
        for op in ops:  # what reaches into the archive (so a run that never does is visible)
            if graph.known(op.op_id) and op.op_id not in graph.ops:
                event("a pruned operation delivered again")
            elif op.seq <= graph.pruned_seq.get(op.author, 0):
                event("an equivocation of a pruned seq")
            if any(graph.known(p) and p not in graph.ops for p in op.parents):
                event("an operation naming a pruned parent")
        full = outcome(lambda: result_view(self.full.receive_many(ops)))
        lean = outcome(lambda: result_view(self.lean.receive_many(ops)))
        assert full == lean
        self.delivered.update(op.op_id for op in ops)
        self.snapshots.append(sorted(self.full.graph.heads))

    def sign(
        self, author: int, parents: list[OpId], kind: str, body: dict[str, Any], seq: int | None = None,
    ) -> SignedOp:
        previous = self.last.get(author)
        if seq is None:
            seq = previous.seq + 1 if previous is not None else 1
            if previous is not None:
                parents = [*parents, previous.op_id]
        op = sign(author, seq, parents, kind, body, ts=len(self.signed))
        self.signed.append(op)
        if seq == (previous.seq + 1 if previous is not None else 1):
            self.last[author] = op
        return op

    @rule(author=st.sampled_from(HONEST), age=st.integers(0, 3), body=place_bodies(faults=False),
          now=st.booleans())
    def place(self, author: int, age: int, body: dict[str, Any], now: bool) -> None:
        """An honest order on heads the author saw `age` steps ago."""
        heads = self.snapshots[max(0, len(self.snapshots) - 1 - age)]
        op = self.sign(author, heads, "order.place", body)
        if now:
            self.deliver([op])

    @rule(author=st.sampled_from(HONEST), to=st.integers(0, 4), amount=st.integers(0, 50), age=st.integers(0, 3))
    def transfer(self, author: int, to: int, amount: int, age: int) -> None:
        heads = self.snapshots[max(0, len(self.snapshots) - 1 - age)]
        body = {"to": ADDR[to], "token": "USDC", "amount": amount * 10**9}
        self.deliver([self.sign(author, heads, "transfer", body)])

    @precondition(lambda self: self.signed)
    @rule(indices=st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
    def deliver_some(self, indices: list[int]) -> None:
        """Operations signed before, in any order: late, out of order, or again."""
        self.deliver([self.signed[i % len(self.signed)] for i in indices])

    @precondition(lambda self: self.signed)
    @rule(index=st.integers(0, 10**6), amount=st.integers(1, 9), pruned=st.booleans())
    def equivocate(self, index: int, amount: int, pruned: bool) -> None:
        """Byzantine: a second operation with the seq of one of its old ones (a pruned one, if
        `pruned` and there is one)."""
        own = [op for op in self.signed if op.author == ADDR[BYZANTINE]]
        archived = [op for op in own if self.lean.graph.known(op.op_id) and op.op_id not in self.lean.graph.ops]
        own = archived if pruned and archived else own
        if not own:
            return
        old = own[index % len(own)]
        body = {"to": ADDR[0], "token": "USDC", "amount": amount}
        self.deliver([self.sign(BYZANTINE, list(old.parents), "transfer", body, seq=old.seq)])

    @precondition(lambda self: self.signed)
    @rule(indices=st.lists(st.integers(0, 10**6), max_size=3), withhold=st.booleans())
    def byzantine_op(self, indices: list[int], withhold: bool) -> None:
        """Byzantine: its next operation, naming old (maybe pruned) parents; or withheld."""
        parents = [self.signed[i % len(self.signed)].op_id for i in indices]
        parents = [p for p in parents if p in self.delivered or withhold]
        op = self.sign(BYZANTINE, parents, "transfer", {"to": ADDR[1], "token": "USDC", "amount": 1})
        if not withhold:
            self.deliver([op])

    @rule(byzantine=st.booleans(), indices=st.lists(st.integers(0, 10**6), min_size=1, max_size=3),
          deposit=st.booleans(), step=st.integers(0, 2000))
    def certify(self, byzantine: bool, indices: list[int], deposit: bool, step: int) -> None:
        """A cut of the full replica's heads (an honest proposer) or of any known operations."""
        graph = self.full.graph
        if byzantine and self.delivered:
            known = sorted(op.op_id for op in self.signed if op.op_id in graph.ops)
            heads = tuple(sorted({known[i % len(known)] for i in indices})) if known else ()
        else:
            heads = tuple(sorted(graph.heads))
        self.time += step
        nonce = self.full.ledger.deposit_nonce + 1
        deposits = (Deposit(nonce, ADDR[1], "USDC", 7 * 10**9),) if deposit else ()
        cut = Cut(self.full.version + 1, heads, self.time, deposits)
        full = outcome(lambda: self.full.preview(cut).state_hash)
        lean = outcome(lambda: self.lean.preview(cut).state_hash)
        assert full == lean
        assert outcome(lambda: self.full.certify(cut)) == outcome(lambda: self.lean.certify(cut))
        self.snapshots.append(sorted(graph.heads))

    @rule(step=st.integers(0, 2000))
    def certify_honest(self, step: int) -> None:
        """An honest cut, then compaction (so that runs certify and prune often)."""
        self.certify(False, [0], False, step)
        self.compact(2)

    @rule(keep=st.integers(2, 3))
    def compact(self, keep: int) -> None:
        pruned = self.lean.compact(keep)
        self.pruned += pruned
        if pruned:
            event("compaction pruned operations")

    @rule(seed=st.integers(0, 2**32))
    def restart_from_a_snapshot(self, seed: int) -> None:
        """The compacting replica is replaced by one rebuilt from its snapshot and the operations
        it held in memory (in any order), as a node restarting from its snapshot and store is:
        it must go on answering as the replica that never compacted nor restarted."""
        held = [*self.lean.graph.ops.values(), *self.lean.graph.pending.ops()]
        random.Random(seed).shuffle(held)
        self.lean = Replica.from_snapshot(GENESIS, self.lean.snapshot(), held, archive=self.archive)
        event("restarted from a snapshot")

    @invariant()
    def archive_holds_what_was_pruned(self) -> None:
        assert len(self.archive) == self.pruned == self.lean.graph.pruned

    # -- the checks ----------------------------------------------------------------------------

    @invariant()
    def same_answers(self) -> None:
        full, lean = self.full, self.lean
        assert lean.state_hash() == full.state_hash()
        assert lean.payout_root() == full.payout_root()
        assert lean.version == full.version
        assert lean.cuts == full.cuts
        assert lean.graph.heads == full.graph.heads
        assert lean.graph.version_vector == full.graph.version_vector
        assert [e.describe() for e in lean.evidence()] == [e.describe() for e in full.evidence()]
        assert lean.fill_records() == full.fill_records()
        assert lean.open_orders() == full.open_orders()
        waiting = [sorted(op.op_id for op in r.graph.pending.ops()) for r in (lean, full)]
        assert waiting[0] == waiting[1]
        for op in self.signed:
            op_id = op.op_id
            assert lean.status(op_id) == full.status(op_id), op_id.hex()
            assert lean.graph.known(op_id) == (op_id in full.graph.ops)
            if op.kind == "order.place":
                assert lean.order_info(op_id) == full.order_info(op_id)
        assert len(lean.graph) == len(full.graph) == len(lean.graph.ops) + lean.graph.pruned
        for vector in ({}, {ADDR[0]: 2, ADDR[2]: 1}, dict(full.graph.version_vector)):
            assert [op.op_id for op in lean.graph.missing_for(vector)] == [
                op.op_id for op in full.graph.missing_for(vector)
            ]
        # the next operation an honest author would sign gets the same outcome
        probe = sign(0, full.graph.version_vector.get(ADDR[0], 0) + 1, heads_of(full.graph.ops, full.graph.heads),
                     "transfer", {"to": ADDR[1], "token": "USDC", "amount": 10**9}, ts=10**6)
        assert lean.dry_run(probe) == full.dry_run(probe)


Compaction.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestCompaction = Compaction.TestCase


def test_compaction_keeps_only_the_recent_epochs_in_memory() -> None:
    """A steady channel certified every few operations: memory holds about the last `keep`
    epochs, whatever the length of the run, and the archive the rest."""
    replica = Replica(GENESIS, archive=MemoryArchive())
    full = Replica(GENESIS)
    last: dict[int, SignedOp] = {}
    sizes = []
    for step in range(300):
        author = step % 2
        previous = last.get(author)
        op = sign(author, (previous.seq if previous else 0) + 1, sorted(replica.graph.heads), "transfer",
                  {"to": ADDR[1 - author], "token": "USDC", "amount": 10**9}, ts=step)
        last[author] = op
        replica.receive(op)
        full.receive(op)
        if step % 5 == 4:
            cut = Cut(replica.version + 1, tuple(sorted(replica.graph.heads)), step)
            replica.certify(cut)
            full.certify(cut)
            replica.compact()
            sizes.append(len(replica.graph.ops))
    assert replica.state_hash() == full.state_hash()
    assert replica.graph.pruned == 300 - len(replica.graph.ops)
    assert max(sizes[10:]) <= 15  # the last two epochs (5 operations each) and the tentative suffix
    assert len(replica.epoch_of) <= 15
    assert len(replica.outcome) <= 15
    assert replica.status(last[0].op_id) == full.status(last[0].op_id)
    first = sign(0, 1, (), "transfer", {"to": ADDR[1], "token": "USDC", "amount": 10**9}, ts=0)
    assert replica.status(first.op_id) == "final"
    before = replica.state_hash()
    replica.receive(first)  # a replay of a pruned operation changes nothing
    assert replica.state_hash() == before
    assert len(replica.graph) == 300


def steady(lean: Replica, full: Replica, steps: int, last: dict[int, SignedOp]) -> None:
    """Authors 0 and 1 take turns on the heads, a cut every third operation, then compaction."""
    for step in range(steps):
        author = step % 2
        previous = last.get(author)
        op = sign(author, (previous.seq if previous else 0) + 1, sorted(full.graph.heads), "transfer",
                  {"to": ADDR[1 - author], "token": "USDC", "amount": 1}, ts=len(full.graph) + step)
        last[author] = op
        for replica in (lean, full):
            replica.receive(op)
        if step % 3 == 2:
            cut = Cut(full.version + 1, tuple(sorted(full.graph.heads)), step)
            for replica in (lean, full):
                replica.certify(cut)
            lean.compact()


def test_what_reaches_into_the_archive_is_answered_as_without_compaction() -> None:
    """A Byzantine author's first operation is pruned; then it equivocates on that seq, names
    it as a parent of a new one, replays it, and proposes a cut naming it: evidence, statuses,
    heights and the cut's refusal are those of a replica that never compacted."""
    lean, full = Replica(GENESIS, archive=MemoryArchive()), Replica(GENESIS)
    b1 = sign(BYZANTINE, 1, (), "transfer", {"to": ADDR[0], "token": "USDC", "amount": 1})
    for replica in (lean, full):
        replica.receive(b1)
    last: dict[int, SignedOp] = {}
    steady(lean, full, 12, last)
    assert lean.graph.known(b1.op_id)
    assert b1.op_id not in lean.graph.ops
    fork = sign(BYZANTINE, 1, (), "transfer", {"to": ADDR[0], "token": "USDC", "amount": 2})
    child = sign(BYZANTINE, 2, (b1.op_id,), "transfer", {"to": ADDR[0], "token": "USDC", "amount": 3})
    for op in (fork, child, b1):
        assert result_view(lean.receive(op)) == result_view(full.receive(op))
    assert len(full.evidence()) == 1
    assert [e.describe() for e in lean.evidence()] == [e.describe() for e in full.evidence()]
    assert lean.graph.height_of(child.op_id) == full.graph.height[child.op_id] == 2
    assert lean.status(child.op_id) == full.status(child.op_id) == "rejected:stale"
    cut = Cut(full.version + 1, (b1.op_id,), 10**6)  # names a pruned operation only
    assert outcome(lambda: lean.certify(cut)) == outcome(lambda: full.certify(cut)) == ("error", "InvalidCut")
    assert [op.op_id for op in lean.graph.missing_for({})] == [op.op_id for op in full.graph.missing_for({})]
    assert lean.state_hash() == full.state_hash()
