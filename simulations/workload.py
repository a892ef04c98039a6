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

Order kinds (`ORDER_KINDS`) are made from the genesis's markets instead (`order_mix` puts them
in a mix): each market has a mid that walks a few ticks per placement, starting at the
geometric mean of its price range. A placement is mostly a passive gtc or post-only order a few
ticks away from the mid, else a limit order (gtc or ioc) or a market order that crosses it;
sizes are whole steps, at most about a twentieth of the smallest initial balance of either
token. A cancel names one of the author's recent placements (open or not: replay decides), a
cancel-all a market. Some orders overdraw, cross their own author's or come too late; replay
gives those their reasons, as for transfers.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from crdt.genesis import Genesis
from crdt.kinds import KINDS, Kind, Registry
from crdt.markets.book import BUY, GTC, IOC, LIMIT, MARKET, POST_ONLY, SELL
from crdt.markets.config import E9, Market
from crdt.ops import Context, SignedOp, address_of, sign_op
from crdt.types import Address, OpId

MAX_PARENTS = 8
FILLED_TYPES = frozenset({"address", "token", "amount", "uint64", "text"})  # `FieldType.name`s
WHOLE_UNITS = frozenset({"withdraw"})  # kinds whose amounts the ledger takes in whole token units only
TEXT = "margin"
ORDER_KINDS = frozenset({"order.place", "order.cancel", "order.cancel_all"})  # made from the markets
RECENT_ORDERS = 20  # a cancel names one of its author's last placements


@dataclass(slots=True)
class _Author:
    key: bytes
    address: Address
    seq: int = 0
    last: OpId | None = None
    heads: set[OpId] = field(default_factory=set)
    inbox: deque[tuple[int, SignedOp]] = field(default_factory=deque)
    placed: list[OpId] = field(default_factory=list)  # its order.place operations, oldest first

    def see(self, op: SignedOp) -> None:
        self.heads.difference_update(op.parents)
        self.heads.add(op.op_id)


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of kinds, in per mille, rolled in this order; the rest are transfers."""

    shares: tuple[tuple[str, int], ...] = (("withdraw", 10), ("lock", 10))


def order_mix(percent: int, base: Mix = Mix()) -> Mix:
    """`base` with `percent` of the operations order operations: 85% of them placements, 12%
    cancels and 3% cancel-alls; `base`'s shares are scaled down to the rest."""
    if not 0 <= percent <= 100:
        raise ValueError(f"the share of orders is a percentage, got {percent}")
    if not percent:
        return base
    orders = percent * 10
    place, cancel = orders * 85 // 100, orders * 12 // 100
    scaled = tuple((name, share * (1000 - orders) // 1000) for name, share in base.shares)
    return Mix((("order.place", place), ("order.cancel", cancel), ("order.cancel_all", orders - place - cancel),
                *scaled))


@dataclass(slots=True)
class _MarketFlow:
    """What the generator keeps of a market: its mid (a multiple of the tick) and its sizes."""

    market: Market
    mid: int
    min_steps: int
    max_steps: int

    @classmethod
    def start(cls, market: Market, genesis: Genesis) -> _MarketFlow:
        tick, step = market.tick_size, market.step_size
        mid = math.isqrt(market.min_price * market.max_price) // tick * tick
        mid = min(max(mid, market.min_price), market.max_price)

        def budget(token: str) -> int:
            return min((b.amount for b in genesis.initial_balances if b.token == token), default=10**12)

        largest = min(budget(market.base) // 20, budget(market.quote) // 20 * E9 // mid, market.max_qty)
        min_steps = -(-market.min_qty // step)
        return cls(market, mid, min_steps, max(min_steps, largest // step))

    def clip(self, price: int) -> int:
        return min(max(price, self.market.min_price), self.market.max_price)


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
        self._kinds = kinds
        self.kinds = [(_generated(kinds, name), share) for name, share in mix.shares]
        self.rest = _generated(kinds, "transfer")
        if any(kind.name in ORDER_KINDS and share for kind, share in self.kinds) and not genesis.markets:
            raise ValueError("the workload cannot make orders: the genesis has no markets")
        self.flows = [_MarketFlow.start(market, genesis) for market in genesis.markets]
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
        if kind.name == "order.cancel" and not author.placed:
            kind = self._kinds["order.place"]  # nothing to cancel yet
        body = self._order_body(kind, author) if kind.name in ORDER_KINDS else self._body(kind, author, amount)
        parents = self._parents(author)
        op = sign_op(self.ctx, author.key, author.seq, parents, kind.name, body, ts=self.step * 10)
        author.see(op)
        author.last = op.op_id
        if kind.name == "order.place":
            author.placed.append(op.op_id)
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

    def _order_body(self, kind: Kind, author: _Author) -> dict[str, Any]:
        """A body of an order kind, from the markets (see the module's docstring)."""
        rng = self.rng
        if kind.name == "order.cancel":
            return {"order": rng.choice(author.placed[-RECENT_ORDERS:])}
        flow = rng.choice(self.flows)
        if kind.name == "order.cancel_all":
            return {"market": flow.market.symbol}
        tick = flow.market.tick_size
        flow.mid = flow.clip(flow.mid + rng.randrange(-2, 3) * tick)
        side = rng.choice((BUY, SELL))
        toward = 1 if side == BUY else -1  # a buy's price up, a sell's down: toward the other side
        roll = rng.randrange(100)
        order_type, tif = LIMIT, GTC
        if roll < 70:  # passive: rests, unless the mid moved past it
            tif = POST_ONLY if roll >= 55 else GTC
            price = flow.mid - toward * rng.randrange(1, 20) * tick
        elif roll < 92:  # crosses the mid: takes what rests there, the rest rests (gtc) or not (ioc)
            tif = rng.choice((GTC, IOC))
            price = flow.mid + toward * rng.randrange(1, 10) * tick
        else:  # a market order: an ioc whose price is the worst it accepts, 5% through the mid
            order_type, tif = MARKET, IOC
            price = flow.mid + toward * (flow.mid // 20 // tick) * tick
        qty = rng.randrange(flow.min_steps, flow.max_steps + 1) * flow.market.step_size
        expires = self.step * 10 + rng.randrange(1_000, 100_000) if rng.randrange(10) == 0 else 0
        return {"market": flow.market.symbol, "side": side, "type": order_type, "tif": tif,
                "price": flow.clip(price), "qty": qty, "reduce_only": False, "expires": expires}

    def ops(self, count: int) -> Iterator[SignedOp]:
        for _ in range(count):
            yield self.next()


def _generated(kinds: Registry, name: str) -> Kind:
    """The registered kind `name`, if the generator can fill its fields (or makes it from the
    markets); else ValueError."""
    if name not in kinds:
        raise ValueError(f"the workload cannot make {name!r}: it is not a registered kind ({kinds.listing()})")
    kind = kinds[name]
    unfilled = sorted({field_type.name for _, field_type in kind.fields} - FILLED_TYPES)
    if unfilled and name not in ORDER_KINDS:
        raise ValueError(f"the workload cannot make {name!r}: it cannot fill fields of type {unfilled}")
    return kind
