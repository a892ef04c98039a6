"""Status events of the operations submitted at a node (`Node.announce`): whatever the delivery
order and wherever checkpoints fall, after every batch the last status published for each of
them is its status in the replica. `Node._status_candidates` checks only the tail of them that
replay re-applied; this property is what makes that safe (a status it missed would stay stale
here)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel.runtime.keystore import Key
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt.ops import SignedOp, sign_op
from crdt.replica import Cut
from crdt.types import OpId
from tests.crdt.crdt_support import ADDR, E9, GENESIS, KEYS

A, B = 0, 1


@st.composite
def transfer_dags(draw: st.DrawFn) -> list[SignedOp]:
    """A spends 60 of its 100 USDC at a time and B sends it 60 at a time, each naming its own
    previous operation and maybe others as parents: whether A's second and later transfers are
    funded depends on where B's sort, so a late operation flips their status both ways."""
    ctx = GENESIS.context()
    ops: list[SignedOp] = []
    seqs = {A: 0, B: 0}
    last: dict[int, OpId] = {}
    for _ in range(draw(st.integers(2, 10))):
        author = draw(st.sampled_from([A, B]))
        parents = {op.op_id for op in draw(st.lists(st.sampled_from(ops), max_size=2))} if ops else set()
        if author in last:
            parents.add(last[author])
        seqs[author] += 1
        to = ADDR[B] if author == A else ADDR[A]
        op = sign_op(ctx, KEYS[author], seqs[author], sorted(parents), "transfer",
                     {"to": to, "token": "USDC", "amount": 60 * E9})
        ops.append(op)
        last[author] = op.op_id
    return ops


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=transfer_dags(), data=st.data())
def test_every_status_change_of_our_operations_is_published(ops: list[SignedOp], data: st.DataObject) -> None:
    order = data.draw(st.permutations(ops))
    certify_after = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "node.sqlite")
        try:
            node = Node.restore(GENESIS, Key(ADDR[A], KEYS[A]), store, fresh_channel=True)
            _, events = node.events.open("status")
            published: dict[OpId, str] = {}

            def check() -> None:
                while True:
                    try:
                        event = events.receive_nowait()
                    except trio.WouldBlock:
                        break
                    published[OpId(bytes.fromhex(event["op_id"][2:]))] = event["status"]
                for op_id in published:
                    assert published[op_id] == node.replica.status(op_id)

            for op, certify in zip(order, certify_after, strict=True):
                before = set(node.replica.graph.ops)
                node.receive([op])
                for accepted in [o for o in node.replica.graph.ops if o not in before]:  # acceptance order
                    if node.replica.graph.ops[accepted].author == node.address:  # as if submitted here
                        node._watched[accepted] = published[accepted] = node.replica.status(accepted)
                check()
                if certify and node.replica.graph.ops:
                    version = node.replica.version + 1
                    node.replica.certify(Cut(version, tuple(sorted(node.replica.graph.heads)), 1000 * version))
                    node.announce([])  # as the consensus driver does after it certified a cut
                    check()
        finally:
            store.close()
