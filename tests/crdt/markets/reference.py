"""A sequential reference of the spot book, written from TRADING.md and the spot interface alone.

It is the oracle of the book's tests, so it is plain on purpose: balances are dicts, each side of
a book is a list that is sorted again after every insert, and every rule is one `if` in the order
the interface gives. It shares no code with `crdt/` (it takes plain requests: author, kind, body,
op id), so a mistake in the ledger cannot hide in it.

The rules it implements (e9 integers throughout):

- `notional(p, q) = p * q // 1e9`; `fee(n, rate) = ceil(n * rate / 1e9)`, in the quote token, to
  the fee pool.
- `order.place` is checked in this order: exact keys (bad_body), permission (not_permitted), field
  types (bad_body), market, side, type, tif, market order with a tif other than ioc, reduce_only,
  price range then tick, qty range then step, expiry, post-only cross, funds.
- Funds at placement: a buy needs free quote >= n + fee(n, max(maker_fee, taker_fee)) with
  n = notional(limit, qty); a sell needs free base >= qty.
- Matching takes the best price of the other side, oldest placement first; the fill is at the
  maker's price; it stops at the taker's limit or when the taker is filled. A resting order of the
  taker's own account is removed (hold released) and matching goes on.
- A maker pays its fill from its order's hold, the shortfall from its free balance; if free
  cannot cover the shortfall the maker is removed without the fill. A taker pays from free; if it
  cannot, it stops and its remainder is cancelled.
- gtc and post_only remainders rest with a hold (buy: notional(price, remaining) + its maker fee,
  sell: remaining base) moved from free, or are cancelled if free cannot cover it; ioc and market
  remainders are cancelled.
- An order leaving the book gives what is left of its hold back to free.

Choices where the interface leaves room (each one is the literal reading of the interface):
- a post-only order "would cross" when its price reaches the best opposite price, whoever owns
  that order;
- `order.cancel` checks: exact keys, permission, type, then unknown_order (never placed),
  not_order_owner (placed by another account, open or not), order_not_open;
- `order.cancel_all` of a market that does not exist is `unknown_market`;
- a maker buy's hold goes down by what each fill costs it (the shortfall, if any, comes from free
  and leaves the hold at 0); it is not recomputed from the remaining quantity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

E9 = 10**9
TRADE_ROLES = frozenset({"trader", "market_maker", "liquidator"})
MOVE_ROLES = TRADE_ROLES | {"oracle"}
PLACE_KEYS = frozenset({"market", "side", "type", "tif", "price", "qty", "reduce_only", "expires"})


def notional(price: int, qty: int) -> int:
    return price * qty // E9


def fee(amount: int, rate: int) -> int:
    """ceil(amount * rate / 1e9), with integers only."""
    return -(-amount * rate // E9)


def buy_hold(price: int, qty: int, maker_fee: int) -> int:
    """What a resting buy of `qty` at `price` holds in quote."""
    n = notional(price, qty)
    return n + fee(n, maker_fee)


@dataclass(frozen=True)
class MarketParams:
    """A spot market's parameters (a stand-in for `crdt.markets.Market`, same field names)."""

    symbol: str
    base: str
    quote: str
    tick_size: int
    step_size: int
    min_qty: int
    max_qty: int
    min_price: int
    max_price: int
    maker_fee: int
    taker_fee: int
    kind: str = "spot"


@dataclass
class Order:
    order_id: bytes
    owner: bytes
    market: str
    side: str
    price: int
    remaining: int
    hold: int
    placed: int
    expires: int


@dataclass(frozen=True)
class RefFill:
    taker_order: bytes
    maker_order: bytes
    taker: bytes
    maker: bytes
    market: str
    price: int
    qty: int
    taker_fee: int
    maker_fee: int


class Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_uint(value: Any) -> bool:
    return type(value) is int


def _is_text(value: Any) -> bool:
    return type(value) is str


class ReferenceBook:
    """Accounts (free per token), orders (each with its own hold), books, the fee pool, fills."""

    def __init__(
        self,
        roles: Mapping[bytes, str],
        tokens: Iterable[str],
        initial: Iterable[tuple[bytes, str, int]],
        markets: Sequence[MarketParams],
    ) -> None:
        self.roles = {account: str(role) for account, role in roles.items()}
        self.tokens = list(tokens)
        self.markets = {market.symbol: market for market in markets}
        self.free: dict[tuple[bytes, str], int] = {}
        self.deposits = dict.fromkeys(self.tokens, 0)
        self.fee_pool = dict.fromkeys(self.tokens, 0)
        self.open: dict[bytes, Order] = {}
        self.owner_of: dict[bytes, bytes] = {}  # every order ever placed, open or not
        self.bids: dict[str, list[Order]] = {symbol: [] for symbol in self.markets}
        self.asks: dict[str, list[Order]] = {symbol: [] for symbol in self.markets}
        self.fills: list[RefFill] = []
        self.outcomes: dict[bytes, str | None] = {}
        self.time = 0
        self.placements = 0
        for account, token, amount in initial:
            self._move(account, token, amount)
            self.deposits[token] += amount

    # -- reading --------------------------------------------------------------------------------

    def balance(self, account: bytes, token: str) -> int:
        return self.free.get((account, token), 0)

    def held(self, account: bytes, token: str) -> int:
        mine = [order for order in self.open.values() if order.owner == account]
        return sum(order.hold for order in mine if self._hold_token(order) == token)

    def fees(self, token: str) -> int:
        return self.fee_pool[token]

    def _hold_token(self, order: Order) -> str:
        market = self.markets[order.market]
        return market.quote if order.side == "buy" else market.base

    def check(self) -> None:
        """Conservation per token, and no bucket below zero."""
        assert all(value >= 0 for value in self.free.values())
        assert all(order.hold >= 0 and order.remaining > 0 for order in self.open.values())
        for token in self.tokens:
            total = sum(v for (_, t), v in self.free.items() if t == token)
            total += sum(order.hold for order in self.open.values() if self._hold_token(order) == token)
            total += self.fee_pool[token]
            assert total == self.deposits[token], (token, total, self.deposits[token])

    # -- inputs ---------------------------------------------------------------------------------

    def apply(self, author: bytes, kind: str, body: Mapping[str, Any], op_id: bytes) -> str | None:
        """Apply one request; return None if it took effect, else the reason (its string value)."""
        handlers = {
            "transfer": self._transfer,
            "order.place": self._place,
            "order.cancel": self._cancel,
            "order.cancel_all": self._cancel_all,
        }
        try:
            if kind not in handlers:
                raise Reject("unknown_kind")
            handlers[kind](author, body, op_id)
            outcome = None
        except Reject as rejection:
            outcome = rejection.reason
        self.outcomes[op_id] = outcome
        return outcome

    def close_epoch(self, time: int) -> None:
        """A checkpoint at `time`: orders with 0 < expires <= time leave the book, in id order."""
        self.time = time
        for order_id in sorted(self.open):
            order = self.open[order_id]
            if 0 < order.expires <= time:
                self._remove(order)

    # -- handlers -------------------------------------------------------------------------------

    def _permit(self, author: bytes, roles: frozenset[str]) -> None:
        if self.roles.get(author) not in roles:
            raise Reject("not_permitted")

    def _transfer(self, author: bytes, body: Mapping[str, Any], op_id: bytes) -> None:
        if set(body) != {"to", "token", "amount"} or type(body["to"]) is not bytes:
            raise Reject("bad_body")
        self._permit(author, MOVE_ROLES)
        to, token, amount = body["to"], body["token"], body["amount"]
        if not _is_text(token) or not _is_uint(amount):
            raise Reject("bad_body")
        if to not in self.roles:
            raise Reject("unknown_recipient")
        if to == author:
            raise Reject("self_transfer")
        if token not in self.deposits:
            raise Reject("unknown_token")
        if amount <= 0:
            raise Reject("bad_amount")
        if self.balance(author, token) < amount:
            raise Reject("insufficient_balance")
        self._move(author, token, -amount)
        self._move(to, token, amount)

    def _place(self, author: bytes, body: Mapping[str, Any], op_id: bytes) -> None:
        if set(body) != PLACE_KEYS:
            raise Reject("bad_body")
        self._permit(author, TRADE_ROLES)
        texts = ("market", "side", "type", "tif")
        uints = ("price", "qty", "expires")
        if not all(_is_text(body[k]) for k in texts) or not all(_is_uint(body[k]) for k in uints):
            raise Reject("bad_body")
        if type(body["reduce_only"]) is not bool:
            raise Reject("bad_body")
        market = self.markets.get(body["market"])
        if market is None:
            raise Reject("unknown_market")
        side, type_, tif, price, qty = body["side"], body["type"], body["tif"], body["price"], body["qty"]
        if side not in ("buy", "sell"):
            raise Reject("bad_side")
        if type_ not in ("limit", "market"):
            raise Reject("bad_type")
        if tif not in ("gtc", "ioc", "post_only"):
            raise Reject("bad_tif")
        if type_ == "market" and tif != "ioc":
            raise Reject("market_order_must_be_ioc")
        if body["reduce_only"]:
            raise Reject("reduce_only_not_spot")
        if not market.min_price <= price <= market.max_price:
            raise Reject("price_out_of_range")
        if price % market.tick_size:
            raise Reject("bad_tick")
        if not market.min_qty <= qty <= market.max_qty:
            raise Reject("qty_out_of_range")
        if qty % market.step_size:
            raise Reject("bad_step")
        if body["expires"] != 0 and body["expires"] <= self.time:
            raise Reject("order_expired")
        others = self.asks[market.symbol] if side == "buy" else self.bids[market.symbol]
        if tif == "post_only" and others and self._reaches(side, price, others[0].price):
            raise Reject("post_only_would_cross")
        if side == "buy":
            n = notional(price, qty)
            needed, token = n + fee(n, max(market.maker_fee, market.taker_fee)), market.quote
        else:
            needed, token = qty, market.base
        if self.balance(author, token) < needed:
            raise Reject("insufficient_balance")
        # every check passed: match, then rest or cancel the remainder
        self.owner_of[op_id] = author
        taker = Order(op_id, author, market.symbol, side, price, qty, 0, -1, body["expires"])
        paid_in_full = self._match(market, taker, others)
        if taker.remaining and paid_in_full and tif in ("gtc", "post_only"):
            if side == "buy":
                hold, token = buy_hold(price, taker.remaining, market.maker_fee), market.quote
            else:
                hold, token = taker.remaining, market.base
            if self.balance(author, token) >= hold:
                self._move(author, token, -hold)
                taker.hold = hold
                taker.placed = self.placements
                self.placements += 1
                self.open[op_id] = taker
                book = self.bids if side == "buy" else self.asks
                book[market.symbol].append(taker)
                book[market.symbol].sort(key=self._priority)

    @staticmethod
    def _reaches(side: str, price: int, other_price: int) -> bool:
        return other_price <= price if side == "buy" else other_price >= price

    @staticmethod
    def _priority(order: Order) -> tuple[int, int]:
        return (-order.price if order.side == "buy" else order.price, order.placed)

    def _match(self, market: MarketParams, taker: Order, others: list[Order]) -> bool:
        """Match `taker` against `others` (best first); False if the taker ran out of funds."""
        base, quote = market.base, market.quote
        while taker.remaining and others and self._reaches(taker.side, taker.price, others[0].price):
            maker = others[0]
            if maker.owner == taker.owner:
                self._remove(maker)  # self-trade: the resting order goes, matching goes on
                continue
            qty = min(taker.remaining, maker.remaining)
            n = notional(maker.price, qty)
            taker_fee, maker_fee = fee(n, market.taker_fee), fee(n, market.maker_fee)
            # what each side gives: the buyer quote plus its fee, the seller base
            taker_gives = (quote, n + taker_fee) if taker.side == "buy" else (base, qty)
            maker_gives = (quote, n + maker_fee) if maker.side == "buy" else (base, qty)
            if self.balance(taker.owner, taker_gives[0]) < taker_gives[1]:
                return False
            shortfall = max(0, maker_gives[1] - maker.hold)
            if self.balance(maker.owner, maker_gives[0]) < shortfall:
                self._remove(maker)  # it cannot pay: removed without the fill
                continue
            self._move(taker.owner, taker_gives[0], -taker_gives[1])
            maker.hold -= maker_gives[1] - shortfall
            self._move(maker.owner, maker_gives[0], -shortfall)
            buyer, seller = (taker, maker) if taker.side == "buy" else (maker, taker)
            seller_fee = taker_fee if seller is taker else maker_fee
            self._move(buyer.owner, base, qty)
            self._move(seller.owner, quote, n - seller_fee)
            self.fee_pool[quote] += taker_fee + maker_fee
            taker.remaining -= qty
            maker.remaining -= qty
            self.fills.append(
                RefFill(taker.order_id, maker.order_id, taker.owner, maker.owner, market.symbol,
                        maker.price, qty, taker_fee, maker_fee)
            )
            if maker.remaining == 0:
                self._remove(maker)
        return True

    def _cancel(self, author: bytes, body: Mapping[str, Any], op_id: bytes) -> None:
        if set(body) != {"order"}:
            raise Reject("bad_body")
        self._permit(author, TRADE_ROLES)
        order_id = body["order"]
        if type(order_id) is not bytes or len(order_id) != 32:
            raise Reject("bad_body")
        if order_id not in self.owner_of:
            raise Reject("unknown_order")
        if self.owner_of[order_id] != author:
            raise Reject("not_order_owner")
        if order_id not in self.open:
            raise Reject("order_not_open")
        self._remove(self.open[order_id])

    def _cancel_all(self, author: bytes, body: Mapping[str, Any], op_id: bytes) -> None:
        if set(body) != {"market"}:
            raise Reject("bad_body")
        self._permit(author, TRADE_ROLES)
        if not _is_text(body["market"]):
            raise Reject("bad_body")
        if body["market"] not in self.markets:
            raise Reject("unknown_market")
        for order in list(self.open.values()):
            if order.owner == author and order.market == body["market"]:
                self._remove(order)

    # -- moving amounts -------------------------------------------------------------------------

    def _move(self, account: bytes, token: str, delta: int) -> None:
        value = self.free.get((account, token), 0) + delta
        if value < 0:
            raise AssertionError(f"free {token} of {account.hex()} would be {value}")
        if value:
            self.free[(account, token)] = value
        else:
            self.free.pop((account, token), None)

    def _remove(self, order: Order) -> None:
        """The order leaves the book: what is left of its hold goes back to free."""
        del self.open[order.order_id]
        book = self.bids if order.side == "buy" else self.asks
        book[order.market].remove(order)
        self._move(order.owner, self._hold_token(order), order.hold)
        order.hold = 0
