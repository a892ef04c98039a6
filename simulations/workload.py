"""Seeded workloads of signed operations with realistic concurrency.

Each author keeps its own view of the graph. An operation reaches the other authors' views
after a random lag of a few steps, in creation order (so parents always arrive first), and an
author's new operation takes the heads of its view as parents. The graph therefore has the
concurrency of a real channel: many operations are concurrent and their order is decided only
by the (height, op id) key. Everything is drawn from `random.Random(seed)`, so a seed names a
workload exactly.

The kinds come from the registry (`crdt.kinds`): a `Mix` may name any registered kind whose
field types the generator can fill (`FILLED_TYPES`), and each body is made field by field, in
the kind's order, from its field types: another author's address, the genesis's first token, an
amount (a transfer moves the whole draw, other kinds a tenth of it, a withdrawal in whole units
of the token), a time after the current step, the text "margin".
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from crdt.genesis import Genesis
from crdt.kinds import KINDS, Kind, Registry
from crdt.ops import Context, SignedOp, address_of, sign_op
from crdt.types import Address, OpId

MAX_PARENTS = 8
FILLED_TYPES = frozenset({"address", "token", "amount", "uint64", "text"})  # `FieldType.name`s
WHOLE_UNITS = frozenset({"withdraw"})  # kinds whose amounts the ledger takes in whole token units only
TEXT = "margin"


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
    """Shares of kinds, in per mille, rolled in this order; the rest are transfers."""

    shares: tuple[tuple[str, int], ...] = (("withdraw", 10), ("lock", 10))


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
        kinds: Registry = KINDS,
    ) -> None:
        if sum(share for _, share in mix.shares) > 1000:
            raise ValueError("the shares of a mix add up to more than 1000 per mille")
        self.kinds = [(_generated(kinds, name), share) for name, share in mix.shares]
        self.rest = _generated(kinds, "transfer")
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
        kind = self.rest
        for candidate, share in self.kinds:
            if roll < share:
                kind = candidate
                break
            roll -= share
        body = self._body(kind, author, amount)
        parents = self._parents(author)
        op = sign_op(self.ctx, author.key, author.seq, parents, kind.name, body, ts=self.step * 10)
        author.see(op)
        author.last = op.op_id
        for other in self.authors:
            if other is not author:
                other.inbox.append((self.step + rng.randrange(0, self.max_lag + 1), op))
        return op

    def _body(self, kind: Kind, author: _Author, amount: int) -> dict[str, Any]:
        """A body of `kind`, field by field in its order (the order of the random draws)."""
        body: dict[str, Any] = {}
        for name, field_type in kind.fields:
            if field_type.name == "address":
                value: Any = self.rng.choice([a for a in self.authors if a is not author]).address
            elif field_type.name == "token":
                value = self.token
            elif field_type.name == "amount":
                if kind.name == "transfer":
                    value = amount  # some overdraw, most do not
                elif kind.name in WHOLE_UNITS:
                    value = (amount // 10 // self.unit + 1) * self.unit
                else:
                    value = amount // 10 + 1
            elif field_type.name == "uint64":
                value = self.step * 10 + self.rng.randrange(1, 10_000)  # a time after this step's ts
            else:
                value = TEXT
            body[name] = value
        return body

    def ops(self, count: int) -> Iterator[SignedOp]:
        for _ in range(count):
            yield self.next()


def _generated(kinds: Registry, name: str) -> Kind:
    """The registered kind `name`, if the generator can fill its fields; else ValueError."""
    if name not in kinds:
        raise ValueError(f"the workload cannot make {name!r}: it is not a registered kind ({kinds.listing()})")
    kind = kinds[name]
    unfilled = sorted({field_type.name for _, field_type in kind.fields} - FILLED_TYPES)
    if unfilled:
        raise ValueError(f"the workload cannot make {name!r}: it cannot fill fields of type {unfilled}")
    return kind
