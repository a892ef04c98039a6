"""A stateful test of the spot book: orders placed and cancelled one by one on a replica and on
the reference book (`reference.py`), with transfers and checkpoints (expiry) in between.

After every step both must hold the same open orders (id, owner, side, price, remaining, hold,
in book order), the same free and held balances, the same fee pools and the same fills, and the
replica must conserve every token exactly. Skipped until `crdt.markets` exists.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crdt import testing
from crdt.hashing import keccak256
from crdt.replica import Cut, Replica
from tests.crdt.markets.strategies import (
    MIDS,
    N_ACCOUNTS,
    TRADERS,
    place_bodies,
    reference_for,
    reference_view,
    replica_view,
    sign_as,
    spot_genesis,
    transfer_bodies,
)

pytest.importorskip("crdt.markets")
if "markets" not in inspect.signature(testing.make_genesis).parameters:  # crdt.markets alone is not enough
    pytest.skip("crdt.testing.make_genesis takes no markets yet", allow_module_level=True)

AUTHORS = st.sampled_from([0, 0, 1, 1, 2, 3, 4, 5])


class SpotBook(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.genesis = spot_genesis()
        self.replica = Replica(self.genesis)
        self.reference = reference_for()
        self.seq = [0] * N_ACCOUNTS
        self.placed: list[tuple[int, bytes]] = []  # (author, op id) of every order.place
        self.time = 0

    def submit(self, author: int, kind: str, body: dict[str, Any]) -> None:
        self.seq[author] += 1
        parents = sorted(self.replica.graph.heads)
        op = sign_as(self.genesis, author, self.seq[author], parents, kind, body)
        assert self.replica.receive(op).accepted == [op]
        expected = self.reference.apply(op.author, kind, op.body, op.op_id)
        got = self.replica.outcome[op.op_id]
        assert (None if got is None else str(got)) == expected, (kind, body)
        if kind == "order.place":
            self.placed.append((author, op.op_id))

    @rule(author=AUTHORS, body=place_bodies())
    def place(self, author: int, body: dict[str, Any]) -> None:
        self.submit(author, "order.place", body)

    @rule(author=AUTHORS, body=place_bodies(faults=False))
    def place_valid(self, author: int, body: dict[str, Any]) -> None:
        self.submit(author, "order.place", body)

    @precondition(lambda self: self.placed)
    @rule(index=st.integers(0, 10**6))
    def cancel_own(self, index: int) -> None:
        author, order = self.placed[index % len(self.placed)]
        if author in TRADERS:
            self.submit(author, "order.cancel", {"order": order})

    @precondition(lambda self: self.placed)
    @rule(author=st.sampled_from(TRADERS), index=st.integers(0, 10**6))
    def cancel_any(self, author: int, index: int) -> None:
        self.submit(author, "order.cancel", {"order": self.placed[index % len(self.placed)][1]})

    @rule(author=st.sampled_from(TRADERS), salt=st.integers(0, 3))
    def cancel_unknown(self, author: int, salt: int) -> None:
        self.submit(author, "order.cancel", {"order": keccak256(b"nothing %d" % salt)})

    @rule(author=AUTHORS, market=st.sampled_from([*MIDS, "DOGE/USDC"]))
    def cancel_all(self, author: int, market: str) -> None:
        self.submit(author, "order.cancel_all", {"market": market})

    @rule(author=AUTHORS, body=transfer_bodies())
    def transfer(self, author: int, body: dict[str, Any]) -> None:
        self.submit(author, "transfer", body)

    @rule(advance=st.sampled_from([0, 1, 499, 500, 1000]))
    def checkpoint(self, advance: int) -> None:
        self.time += advance
        cut = Cut(self.replica.version + 1, tuple(sorted(self.replica.graph.heads)), self.time)
        self.replica.certify(cut)
        self.reference.close_epoch(self.time)

    @invariant()
    def agrees_with_the_reference(self) -> None:
        if not hasattr(self, "replica"):
            return
        self.replica.ledger.check_conservation()
        self.reference.check()
        assert replica_view(self.replica) == reference_view(self.reference)
        for order_id, order in self.reference.open.items():
            resting = self.replica.ledger.order(order_id)
            assert resting is not None
            assert (resting.remaining, resting.hold) == (order.remaining, order.hold)
        for _, order_id in self.placed:
            if order_id not in self.reference.open:
                assert self.replica.ledger.order(order_id) is None


SpotBook.TestCase.settings = settings(max_examples=max(10, settings.default.max_examples // 2), stateful_step_count=40)
TestSpotBook = SpotBook.TestCase
