"""A sequential reference of one perpetual market, written from TRADING.md and the README's
design notes ("Perpetual markets") alone, as `reference.py` is for the spot book.

It is plain on purpose: a position is a signed size and the cost of its open part, the book is a
list sorted again for every look, an account's collateral is its balance less its debt, and every
rule is one `if`. It shares no code with `crdt/` and takes plain requests (author, kind, body, op
id).

The rules (e9 integers wherever the state shows a number):

- the oracle price of an epoch is the lower median of the posts applied in that epoch or within
  `staleness` of the checkpoint, if there are 2f + 1 of them with f = (oracles - 1) // 2; a
  market without keeps its last price (and goes stale);
- `order.place` checks (the flows give valid sides, types and tifs): permission, market, market
  order's tif, price range and tick, qty range and step, post-only cross; then a reduce-only
  order needs a position of the other side (nothing_to_reduce), any other a fresh price
  (oracle_stale) and, below initial margin, a quantity within what it closes
  (insufficient_margin);
- matching: the best opposite price, oldest first, at the maker's price, until the taker's limit
  bounded by `oracle · (1 ± mtb)`; the taker's own resting orders are removed (self_trade);
  reduce-only fills are shrunk to what they close (a resting one with nothing to close is removed:
  reduce_only); fees `ceil(n · rate)`; a fill that grows a position (or flips it) needs its
  account at or above initial margin afterwards and its notional within the leverage cap: a maker
  that fails is removed (undercollateralized), a taker stops (undercollateralized);
- realised PnL: closing `q` of `|s|` at `p` realises `notional(p, q) - floor(open · q / |s|)` (a
  long; the reverse for a short), the rest of the basis stays open;
- a long is valued `notional(P, s) - open`, a short `open - ceil(P · |s|)`; AV = balance - debt +
  that; IMR = ceil(notional(P, |s|) · imr); a loss beyond the balance is owed (debt), a gain pays
  the debt first, a transfer in only adds to the balance; a transfer out needs the balance, and
  `amount ≤ AV - IMR` once the account has a position or a debt;
- a gtc or post-only remainder rests unless it would cross the book (take_bound); ioc and market
  remainders are done.

The open notional is kept here as an integer too, but computed on its own terms (the sum of what
each opening fill cost, less the floored basis of each closing), so the two agree only if the
ledger's arithmetic is the one described.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

E9 = 10**9
TRADE_ROLES = frozenset({"trader", "market_maker", "liquidator"})


def notional(price: int, qty: int) -> int:
    return price * qty // E9


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Params:
    symbol: str
    quote: str
    tick: int
    step: int
    min_qty: int
    max_qty: int
    min_price: int
    max_price: int
    maker_fee: int
    taker_fee: int
    imr: int
    mmr: int
    caps: tuple[int, ...]
    mtb_long: int
    mtb_short: int
    staleness: int


@dataclass
class Order:
    order_id: bytes
    owner: bytes
    side: str
    price: int
    remaining: int
    placed: int
    reduce_only: bool


@dataclass
class PerpReference:
    params: Params
    roles: dict[bytes, str]
    balance: dict[bytes, int]
    debt: dict[bytes, int] = field(default_factory=dict)
    sizes: dict[bytes, int] = field(default_factory=dict)
    opens: dict[bytes, int] = field(default_factory=dict)  # what each open position cost (quote e9)
    book: list[Order] = field(default_factory=list)
    fills: list[tuple[bytes, bytes, int, int, int, int]] = field(default_factory=list)  # taker, maker order...
    outcomes: dict[bytes, str | None] = field(default_factory=dict)
    closed: dict[bytes, str] = field(default_factory=dict)
    posts: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # oracle -> (price, posted at)
    mark: tuple[int, int] | None = None  # (price, fixed at)
    time: int = 0
    placements: int = 0
    fee_pool: int = 0
    owners: dict[bytes, bytes] = field(default_factory=dict)  # every accepted order.place: its author

    # -- reading ----------------------------------------------------------------------------

    def collateral(self, account: bytes) -> int:
        return self.balance.get(account, 0) - self.debt.get(account, 0)

    def value(self, account: bytes, size: int | None = None, cost: int | None = None,
              collateral: int | None = None) -> tuple[int, int]:
        """(AV, IMR) at the oracle price, of the account as it is or with the position and
        collateral given."""
        size = self.sizes.get(account, 0) if size is None else size
        cost = self.opens.get(account, 0) if cost is None else cost
        worth = self.collateral(account) if collateral is None else collateral
        if not size or self.mark is None:
            return worth, 0
        price = self.mark[0]
        if size > 0:
            worth += notional(price, size) - cost
        else:
            worth += cost - ceil_div(price * -size, E9)
        return worth, ceil_div(notional(price, abs(size)) * self.params.imr, E9)

    def fresh(self) -> bool:
        return self.mark is not None and self.mark[1] + self.params.staleness >= self.time

    # -- checkpoints -------------------------------------------------------------------------

    def close(self, time: int) -> None:
        since, self.time = self.time, time
        prices = sorted(p for p, at in self.posts.values() if at >= since or at + self.params.staleness >= time)
        oracles = sum(1 for role in self.roles.values() if role == "oracle")
        if prices and len(prices) >= 2 * ((oracles - 1) // 2) + 1:
            self.mark = (prices[(len(prices) - 1) // 2], time)

    # -- operations --------------------------------------------------------------------------

    def apply(self, author: bytes, kind: str, body: dict[str, Any], op_id: bytes) -> str | None:
        try:
            if kind == "oracle.price":
                self._post(author, body)
            elif kind == "order.place":
                self._place(author, body, op_id)
            elif kind == "order.cancel":
                self._cancel(author, body)
            elif kind == "transfer":
                self._transfer(author, body)
            else:
                raise Reject("unknown_kind")
        except Reject as rejection:
            self.outcomes[op_id] = rejection.reason
            return rejection.reason
        self.outcomes[op_id] = None
        return None

    def _post(self, author: bytes, body: dict[str, Any]) -> None:
        if self.roles[author] != "oracle":
            raise Reject("not_permitted")
        if not self.params.min_price <= body["price"] <= self.params.max_price:
            raise Reject("price_out_of_range")
        self.posts[author] = (body["price"], self.time)

    def _transfer(self, author: bytes, body: dict[str, Any]) -> None:
        if self.roles[author] == "observer":
            raise Reject("not_permitted")
        to, amount = body["to"], body["amount"]
        if to not in self.roles:
            raise Reject("unknown_recipient")
        if to == author:
            raise Reject("self_transfer")
        if amount <= 0:
            raise Reject("bad_amount")
        if self.balance.get(author, 0) < amount:
            raise Reject("insufficient_balance")
        if self.sizes.get(author, 0) or self.debt.get(author, 0):
            worth, initial = self.value(author)
            if amount > worth - initial:
                raise Reject("insufficient_margin")
        self.balance[author] -= amount
        self.balance[to] = self.balance.get(to, 0) + amount

    def _credit(self, account: bytes, delta: int) -> None:
        """A gain pays the debt first; a loss takes the balance first and owes the rest."""
        balance, debt = self.balance.get(account, 0), self.debt.get(account, 0)
        if delta >= 0:
            paid = min(debt, delta)
            self.debt[account], self.balance[account] = debt - paid, balance + delta - paid
        else:
            taken = min(balance, -delta)
            self.balance[account], self.debt[account] = balance - taken, debt - delta - taken

    def _cancel(self, author: bytes, body: dict[str, Any]) -> None:
        if self.roles[author] not in TRADE_ROLES:
            raise Reject("not_permitted")
        order = next((o for o in self.book if o.order_id == body["order"]), None)
        owner = self.owners.get(body["order"])
        if owner is None:
            raise Reject("unknown_order")
        if owner != author:
            raise Reject("not_order_owner")
        if order is None:
            raise Reject("order_not_open")
        self._remove(order, "cancelled")

    def _closable(self, account: bytes, buying: bool) -> int:
        size = self.sizes.get(account, 0)
        return abs(size) if (buying and size < 0) or (not buying and size > 0) else 0

    def _place(self, author: bytes, body: dict[str, Any], op_id: bytes) -> None:
        p = self.params
        if self.roles[author] not in TRADE_ROLES:
            raise Reject("not_permitted")
        side, kind, tif, price, qty = body["side"], body["type"], body["tif"], body["price"], body["qty"]
        reduce_only = body["reduce_only"]
        if body["market"] != p.symbol:
            raise Reject("unknown_market")
        if kind == "market" and tif != "ioc":
            raise Reject("market_order_must_be_ioc")
        if not p.min_price <= price <= p.max_price:
            raise Reject("price_out_of_range")
        if price % p.tick:
            raise Reject("bad_tick")
        if not p.min_qty <= qty <= p.max_qty:
            raise Reject("qty_out_of_range")
        if qty % p.step:
            raise Reject("bad_step")
        buying = side == "buy"
        if tif == "post_only" and self._crosses(buying, price):
            raise Reject("post_only_would_cross")
        closable = self._closable(author, buying)
        if reduce_only:
            if not closable:
                raise Reject("nothing_to_reduce")
        else:
            if not self.fresh():
                raise Reject("oracle_stale")
            worth, initial = self.value(author)
            if worth < initial and qty > closable:
                raise Reject("insufficient_margin")
        self.placements += 1
        self.owners[op_id] = author
        remaining, stopped = (qty, None) if tif == "post_only" else self._match(author, op_id, buying, price, qty,
                                                                              reduce_only)
        if not remaining:
            self.closed[op_id] = "filled"
        elif stopped:
            self.closed[op_id] = stopped
        elif kind == "limit" and tif in ("gtc", "post_only"):
            if self._crosses(buying, price):
                self.closed[op_id] = "take_bound"
            else:
                self.book.append(Order(op_id, author, side, price, remaining, self.placements, reduce_only))
        else:
            self.closed[op_id] = "done"

    def _crosses(self, buying: bool, price: int) -> bool:
        """Whether `price` reaches the best order of the other side."""
        opposite = self._side(not buying)
        return bool(opposite) and ((opposite[0].price <= price) if buying else (opposite[0].price >= price))

    def _side(self, buying: bool) -> list[Order]:
        """One side of the book, best first."""
        orders = [o for o in self.book if (o.side == "buy") == buying]
        return sorted(orders, key=lambda o: (-o.price if buying else o.price, o.placed))

    def _remove(self, order: Order, why: str) -> None:
        self.book.remove(order)
        self.closed[order.order_id] = why

    def _after(self, account: bytes, buying: bool, price: int, qty: int) -> tuple[int, int, int]:
        """(size, open, realised) of `account` after a fill."""
        size, cost = self.sizes.get(account, 0), self.opens.get(account, 0)
        if size == 0 or (size > 0) == buying:
            return size + (qty if buying else -qty), cost + notional(price, qty), 0
        closing = min(qty, abs(size))
        basis = cost * closing // abs(size)
        got = notional(price, closing)
        realised = got - basis if size > 0 else basis - got
        new_size = size + (qty if buying else -qty)
        if qty > closing:
            return new_size, notional(price, qty - closing), realised
        return new_size, cost - basis, realised

    def _fits(self, account: bytes, size: int, cost: int, collateral: int) -> bool:
        worth, initial = self.value(account, size, cost, collateral)
        if worth < initial:
            return False
        assert self.mark is not None
        size_notional = notional(self.mark[0], abs(size))
        if worth <= 0:
            return False
        leverage = max(1, ceil_div(size_notional, worth))
        return size_notional <= self.params.caps[min(leverage, len(self.params.caps)) - 1]

    def _match(self, taker: bytes, op_id: bytes, buying: bool, limit: int, qty: int, reduce_only: bool
               ) -> tuple[int, str | None]:
        p = self.params
        if self.mark is not None:
            bound = (self.mark[0] * (E9 + p.mtb_long) // E9 if buying
                     else ceil_div(self.mark[0] * (E9 - p.mtb_short), E9))
            limit = min(limit, bound) if buying else max(limit, bound)
        remaining = qty
        while remaining:
            opposite = self._side(not buying)
            if not opposite:
                break
            maker = opposite[0]
            if (maker.price > limit) if buying else (maker.price < limit):
                break
            if maker.owner == taker:
                self._remove(maker, "self_trade")
                continue
            q = min(remaining, maker.remaining)
            if reduce_only:
                q = min(q, self._closable(taker, buying))
                if not q:
                    break
            if maker.reduce_only:
                closable = self._closable(maker.owner, not buying)
                if not closable:
                    self._remove(maker, "reduce_only")
                    continue
                q = min(q, closable)
            n = notional(maker.price, q)
            taker_fee, maker_fee = ceil_div(n * p.taker_fee, E9), ceil_div(n * p.maker_fee, E9)
            t_size, t_open, t_pnl = self._after(taker, buying, maker.price, q)
            m_size, m_open, m_pnl = self._after(maker.owner, not buying, maker.price, q)
            t_was, m_was = self.sizes.get(taker, 0), self.sizes.get(maker.owner, 0)
            m_grows = abs(m_size) > abs(m_was) or m_size * m_was < 0
            t_grows = abs(t_size) > abs(t_was) or t_size * t_was < 0
            m_collateral = self.collateral(maker.owner) + m_pnl - maker_fee
            t_collateral = self.collateral(taker) + t_pnl - taker_fee
            if m_grows and not self._fits(maker.owner, m_size, m_open, m_collateral):
                self._remove(maker, "undercollateralized")
                continue
            if t_grows and not self._fits(taker, t_size, t_open, t_collateral):
                return remaining, "undercollateralized"
            for account, size, cost, change in ((taker, t_size, t_open, t_pnl - taker_fee),
                                                (maker.owner, m_size, m_open, m_pnl - maker_fee)):
                self.sizes[account], self.opens[account] = size, cost if size else 0
                self._credit(account, change)
            self.fee_pool += taker_fee + maker_fee
            self.fills.append((op_id, maker.order_id, maker.price, q, taker_fee, maker_fee))
            remaining -= q
            maker.remaining -= q
            if not maker.remaining:
                self._remove(maker, "filled")
        return remaining, None


class Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
