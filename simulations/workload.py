"""Seeded workloads of signed operations with realistic concurrency.

Each author keeps its own view of the graph. An operation reaches the other authors' views
after a random lag of a few steps, in creation order (so parents always arrive first), and an
author's new operation takes the heads of its view as parents. The graph therefore has the
concurrency of a real channel: many operations are concurrent and their order is decided only
by the (height, op id) key. Everything is drawn from `random.Random(seed)`, so a seed names a
workload exactly.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from crdt.genesis import Genesis
from crdt.ops import Context, SignedOp, address_of, sign_op
from crdt.types import Address, OpId

MAX_PARENTS = 8


@dataclass(slots=True)
class _Author:
    key: bytes
    address: Address
    seq: int = 0
    last: OpId | None = None
    heads: set[OpId] = field(default_factory=set)
    inbox: deque[tuple[int, SignedOp]] = field(default_factory=deque)

    def see(self, op: SignedOp) -> None:
        self.heads.difference_update(op.parents)
        self.heads.add(op.op_id)


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of each kind, in per mille; the rest are transfers."""

    withdraw: int = 10
    lock: int = 10


class Workload:
    def __init__(
        self,
        genesis: Genesis,
        keys: Sequence[bytes],
        *,
        seed: int = 0,
        max_lag: int = 8,
        mix: Mix = Mix(),
        ctx: Context | None = None,
    ) -> None:
        self.genesis = genesis
        self.ctx = ctx or genesis.context()
        self.rng = random.Random(seed)
        self.max_lag = max_lag
        self.mix = mix
        self.authors = [_Author(key, address_of(key)) for key in keys]
        self.step = 0
        self.token = genesis.tokens[0].symbol
        self.unit = 10 ** max(0, 9 - genesis.tokens[0].decimals)  # withdrawals are whole token units
        budget = min((b.amount for b in genesis.initial_balances), default=10**12)
        self.max_amount = max(1, budget // 20)  # some transfers overdraw, most do not

    def _parents(self, author: _Author) -> list[OpId]:
        """The heads of the author's view (at most MAX_PARENTS), plus the author's own last
        operation. Naming the self-parent directly lets `HashGraph` check the sequence rule
        from the parents alone instead of walking the causal past."""
        own = [author.last] if author.last is not None else []
        others = sorted(head for head in author.heads if head not in own)
        if len(others) > MAX_PARENTS - len(own):
            others = self.rng.sample(others, MAX_PARENTS - len(own))
        return own + others

    def next(self) -> SignedOp:
        rng = self.rng
        self.step += 1
        for author in self.authors:
            while author.inbox and author.inbox[0][0] <= self.step:
                author.see(author.inbox.popleft()[1])
        author = rng.choice(self.authors)
        author.seq += 1
        roll = rng.randrange(1000)
        amount = rng.randrange(1, self.max_amount + 1)
        if roll < self.mix.withdraw:
            kind, body = "withdraw", {"token": self.token, "amount": (amount // 10 // self.unit + 1) * self.unit}
        elif roll < self.mix.withdraw + self.mix.lock:
            until = self.step * 10 + rng.randrange(1, 10_000)
            kind, body = "lock", {"token": self.token, "amount": amount // 10 + 1, "until": until, "reason": "margin"}
        else:
            recipient = rng.choice([a for a in self.authors if a is not author])
            kind, body = "transfer", {"to": recipient.address, "token": self.token, "amount": amount}
        parents = self._parents(author)
        op = sign_op(self.ctx, author.key, author.seq, parents, kind, body, ts=self.step * 10)
        author.see(op)
        author.last = op.op_id
        for other in self.authors:
            if other is not author:
                other.inbox.append((self.step + rng.randrange(0, self.max_lag + 1), op))
        return op

    def ops(self, count: int) -> Iterator[SignedOp]:
        for _ in range(count):
            yield self.next()
