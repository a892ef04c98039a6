"""The balance ledger: a deterministic function of the operations applied to it, in order.

`Ledger.apply(op)` first runs every check (each failing check names a `Reason`), and only then
changes the state, so a rejected operation leaves no trace except its reason. Every change goes
through `_put`, which records the old value in the open undo frame; `undo(frame)` restores it
exactly. That is what lets `Replica` reorder a late operation without replaying from genesis.

Conservation, per token, in every state (`check_conservation`):

    deposits == sum(balances) + sum(held) + sum(locked) + sum(withdrawn) + fees + insurance

``held`` is what open orders hold (quote for a buy, base for a sell; see "Spot markets" below)
and ``fees`` the fee pool.

``withdrawn`` is cumulative: what each account has withdrawn in the channel, which only grows.
The contract pays it out from any finalised checkpoint, the difference against what it paid
already, so a withdrawal never needs a debit inside the channel. Withdrawals are in whole units
of the token (a multiple of 10**(9 - decimals) e9), so what a withdrawal leaf says is exactly
what was withdrawn, and rounding never makes a later leaf smaller than an earlier one.

Which kinds exist, their exact body fields and the permission each needs come from the registry
of kinds (`crdt.kinds`); a kind's entry names its handler here.

Every handler moves an amount between these buckets and never creates or destroys one; only
`credit_deposit` raises both sides together. Zero entries are deleted, so the canonical state
(and its hash) does not depend on the history that led to it.

Spot markets (TRADING.md; the markets are the genesis's). ``order.place`` is validated whole
first (permission, body types, market, side, type, tif, a market order's tif, reduce_only, price
range then tick, qty range then step, expiry, post-only cross, funds), then it matches: the
best-priced resting orders of the other side, oldest placement first at a price, each at the
maker's price, until the taker's limit or its quantity. A resting order of the taker's own
account met on the way is removed. A gtc (or post-only) remainder rests, holding what it may
still spend: ``notional(price, remaining) + fee(.., maker_fee)`` quote for a buy, ``remaining``
base for a sell. A maker pays from its hold (a shortfall from its free balance; a maker that
cannot pay is removed without the fill); a taker pays from free and stops when it cannot pay a
fill, its remainder cancelled. Fees go to the quote token's fee pool. Each side of a book is a
`sortedcontainers.SortedDict` keyed ``(price key, placement)`` whose every change goes through
`_put` like any other table, so undoing a frame restores the queue exactly. ``placements``
(in ``meta``) numbers every accepted ``order.place``; its number is the order's ``placed``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from mypy_extensions import mypyc_attr
from sortedcontainers import SortedDict

from crdt import cbor
from crdt.errors import InternalError, InvalidInput
from crdt.genesis import Genesis, Permission
from crdt.hashing import keccak256
from crdt.kinds import KINDS, Kind, Registry
from crdt.markets.book import (
    BUY,
    CANCELLED,
    DELISTED,
    DONE,
    EXPIRED,
    FILLED,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    ORDER_TYPES,
    POST_ONLY,
    REDUCE_ONLY,
    SELF_TRADE,
    SELL,
    SIDES,
    TAKE_BOUND,
    TIFS,
    UNDERCOLLATERALIZED,
    UNFUNDED,
    Book,
    Fill,
    RestingOrder,
    price_key,
)
from crdt.markets.config import E9, Market, fee, notional
from crdt.markets.funding import FundingState, funding_rate, impact_price, index_step, payment, premium, prorate
from crdt.markets.oracle import MarkPrice, OraclePost, fresh_prices, is_fresh, lower_median, oracle_quorum
from crdt.markets.perp import (
    FLAT,
    Position,
    fill_position,
    grows_risk,
    leverage_cap,
    margin_requirement,
    reducible,
    unrealised,
)
from crdt.ops import SignedOp
from crdt.types import Address, Hash32, OpId, Symbol


class Reason(enum.StrEnum):
    """Why replay gave an operation no effect."""

    UNKNOWN_KIND = "unknown_kind"
    BAD_BODY = "bad_body"
    NOT_PERMITTED = "not_permitted"
    UNKNOWN_TOKEN = "unknown_token"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    SELF_TRANSFER = "self_transfer"
    BAD_AMOUNT = "bad_amount"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    LOCK_IN_PAST = "lock_in_past"
    EQUIVOCATION = "equivocation"
    STALE = "stale"
    # spot markets (order.place, order.cancel, order.cancel_all)
    UNKNOWN_MARKET = "unknown_market"
    BAD_SIDE = "bad_side"
    BAD_TYPE = "bad_type"
    BAD_TIF = "bad_tif"
    MARKET_ORDER_MUST_BE_IOC = "market_order_must_be_ioc"
    BAD_TICK = "bad_tick"
    BAD_STEP = "bad_step"
    QTY_OUT_OF_RANGE = "qty_out_of_range"
    PRICE_OUT_OF_RANGE = "price_out_of_range"
    REDUCE_ONLY_NOT_SPOT = "reduce_only_not_spot"
    ORDER_EXPIRED = "order_expired"
    POST_ONLY_WOULD_CROSS = "post_only_would_cross"
    UNKNOWN_ORDER = "unknown_order"
    NOT_ORDER_OWNER = "not_order_owner"
    ORDER_NOT_OPEN = "order_not_open"
    # perpetual markets
    NOT_PERP = "not_perp"  # oracle.price of a spot market
    ORACLE_STALE = "oracle_stale"  # no fresh oracle price: only reduce-only orders
    INSUFFICIENT_MARGIN = "insufficient_margin"  # below initial margin, or what would leave it there
    NOTHING_TO_REDUCE = "nothing_to_reduce"  # a reduce-only order of the position's own side (or flat)
    # liquidate
    UNKNOWN_ACCOUNT = "unknown_account"
    SELF_LIQUIDATION = "self_liquidation"
    NO_POSITION = "no_position"
    NOT_LIQUIDATABLE = "not_liquidatable"  # the account's value is at or above its maintenance margin
    MARKET_HALTED = "market_halted"  # the circuit breaker: reduce-only IOC orders only, no liquidations
    MARKET_DELISTED = "market_delisted"  # a delisted perp market takes nothing more


class Rejected(Exception):
    """Raised inside a handler, before any change, to reject the operation with a reason."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Deposit:
    """An on-chain deposit, credited by a checkpoint (nonce order, no gaps). ``block`` is the
    hash of the block that holds it: a reorg can give its nonce to another deposit, so nodes
    agree on (nonce, block), and a deposit the chain no longer holds is never credited."""

    nonce: int
    account: Address
    token: Symbol
    amount: int  # e9
    block: bytes = bytes(32)


class Liquidation(NamedTuple):
    """What a liquidate did: `qty` of `account`'s position in `market`, closed at `price` against the
    oracle's `mark`, taken by `liquidator` at `taken_at`; `insurance` is the premium's share paid to
    the insurance pool, `covered` what the pool paid of a bankrupt account's shortfall. A
    deleveraging (`deleveraged` not empty) closed it against those accounts' positions at `price`
    instead, with no liquidator and no premium."""

    account: Address
    liquidator: Address
    market: str
    qty: int
    mark: int
    price: int
    taken_at: int
    insurance: int
    covered: int
    deleveraged: tuple[Address, ...] = ()  # the opposite positions closed at the bankruptcy price, if any


@dataclass(frozen=True, slots=True)
class Lock:
    account: Address
    token: Symbol
    amount: int
    until: int  # ms of checkpoint time
    reason: str


_MISSING: Any = object()
# The undo log holds (table, key, old value) for every change made inside a frame, flat (three
# items a change), for all the frames in order. A frame is the log's length when it began, and
# undoing it undoes everything from there on: frames are undone last first (the tentative suffix
# from a position to its end), so one list serves them all. One list for the garbage collector to
# track, where a list a frame was one more object an operation for every later collection.
Frame = int


def body_field(kind: Kind, body: Mapping[str, Any], name: str) -> Any:
    """The body's value for `name`, of the type the kind's registry entry gives it."""
    value = body.get(name, _MISSING)
    field_type = kind.types[name]
    if not field_type.conforms(value):
        raise Rejected(Reason.BAD_BODY, f"{name} must be {field_type.shape}")
    return value


def body_values(kind: Kind, body: Mapping[str, Any]) -> tuple[Any, ...]:
    """The body's values in the kind's field order (``kind.names``), each of its field's type:
    what `body_field` of every field in order gives, with one test of all the types when every
    field has an exact type. The body has exactly the kind's keys (`Ledger.apply` saw to it)."""
    values = kind.values(body)
    if tuple(map(type, values)) != kind.exact_types:
        for name in kind.names:
            body_field(kind, body, name)  # rejects the first field that does not conform
    return values


def _exact_keys(body: Mapping[str, Any], names: frozenset[str]) -> None:
    if body.keys() != names:
        raise Rejected(Reason.BAD_BODY, f"body must have exactly the keys {sorted(names)}")


# Tests subclass it with a handler for a kind only they know (tests/crdt/kinds_kit.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class Ledger:
    """The ledger of one channel. Its dispatch table comes from `kinds` (`crdt.kinds.KINDS`
    unless a test gives another registry): each kind's ``handler`` names a method of this class,
    called as ``handler(op, kind)`` once the body has exactly the kind's keys. A handler checks
    the fields (`body_field`), the author's permission (`_permit`) and what the fields mean, in the
    order that decides which reason an operation with several faults gets, then changes the
    state."""

    def __init__(self, genesis: Genesis, kinds: Registry = KINDS) -> None:
        self.genesis = genesis
        self._participants = {p.address: p for p in genesis.participants}
        self._permitted = {
            permission: frozenset(p.address for p in genesis.participants if p.may(permission))
            for permission in Permission
        }
        self._tokens = {t.symbol: t for t in genesis.tokens}
        self._oracle_quorum = oracle_quorum(len(self._permitted[Permission.POST_PRICE]))
        # One (account, token) key per pair, made once: the tables and the undo frames share it
        # instead of a new tuple at every change (fewer objects for the garbage collector to count).
        self._keys: dict[Address, dict[Symbol, tuple[Address, Symbol]]] = {
            p.address: {t.symbol: (p.address, t.symbol) for t in genesis.tokens} for p in genesis.participants
        }
        self.balances: dict[tuple[Address, Symbol], int] = {}
        self.locks: dict[OpId, Lock] = {}
        self.withdrawn: dict[tuple[Address, Symbol], int] = {}  # cumulative, per (account, token)
        self.fee_pool: dict[Symbol, int] = {}
        self.insurance: dict[Symbol, int] = {}
        self.deposits: dict[Symbol, int] = {}
        self.meta: dict[str, int] = {}  # "version", "time", "deposit_nonce", "placements"
        # author -> the highest seq in the order so far. Every lower seq is taken too: replay
        # applies an operation after its seq - 1 (in its causal past, so earlier in the order),
        # so one number per author says what a set of (author, seq) said, in constant memory.
        self.seq_high: dict[Address, int] = {}
        # spot markets: every table below changes only through _put / _add
        self._markets: dict[str, Market] = {market.symbol: market for market in genesis.markets}
        self._sides: dict[tuple[str, str], SortedDict] = {
            (market.symbol, side): SortedDict() for market in genesis.markets for side in SIDES
        }  # (market, side) -> {(price key, placed): order id}
        self.orders: dict[OpId, RestingOrder] = {}  # the open orders
        self.held_funds: dict[tuple[Address, Symbol], int] = {}  # the sum of the open orders' holds
        self.expiry: dict[OpId, int] = {}  # open orders with expires != 0
        self.order_owner: dict[OpId, Address] = {}  # every accepted order.place, open or not
        self._fills: dict[int, Fill] = {}  # replay position -> fill
        # perpetual markets (crdt.markets.oracle): each oracle's latest post, each market's price
        self.oracle_posts: dict[tuple[str, Address], OraclePost] = {}
        self.marks: dict[str, MarkPrice] = {}
        # perpetual positions (crdt.markets.perp): the positions, what realised PnL took from each
        # perp market's pool (signed), collateral owed by accounts whose losses exceeded their
        # balance, and the resting reduce-only orders
        self.positions: dict[tuple[str, Address], Position] = {}
        self.pnl_pool: dict[str, int] = {}
        self.debt: dict[tuple[Address, Symbol], int] = {}
        self.reduce_only: dict[OpId, bool] = {}
        self.funding: dict[str, FundingState] = {}  # per perp market, once it has a price
        self.funding_pool: dict[str, int] = {}  # signed: what payers paid in less what receivers took
        self.liquidations: dict[OpId, Liquidation] = {}  # not state: what each liquidate did
        self.halts: dict[str, int] = {}  # perp market -> the last checkpoint version its halt covers
        self.delist_votes: dict[tuple[str, Address], int] = {}  # each participant's latest vote: a price
        self.delisted: dict[str, int] = {}  # perp market -> the price it was delisted at
        # not state: each perp market's fundings, (version, time, rate, cumulative index, mark) each
        self.funding_history: dict[str, tuple[tuple[int, int, int, int, int], ...]] = {}
        # not state: what each position paid in funding at each settlement, (version, time, paid) each
        # (signed: positive paid, negative received), oldest first
        self.funding_paid: dict[tuple[str, Address], tuple[tuple[int, int, int], ...]] = {}
        self._perp_markets: dict[Symbol, tuple[str, ...]] = {}  # collateral token -> its perp markets, sorted
        for market in sorted(genesis.markets, key=lambda m: m.symbol):
            if market.perp is not None:
                self._perp_markets[market.quote] = (*self._perp_markets.get(market.quote, ()), market.symbol)
        # not state (the hash does not cover them; they follow from the same replay): why each
        # accepted order is no longer open, with the operation that closed it (None: a
        # checkpoint), and the replay positions of each order's fills
        self.closed: dict[OpId, tuple[str, OpId | None]] = {}
        self.order_fills: dict[OpId, tuple[int, ...]] = {}
        self._log: list[Any] = []
        self._journal: list[Any] | None = None  # the log while a frame is open
        # The handlers are the class's functions, not bound methods: a bound method held here
        # would make every ledger a reference cycle, freed only by a full collection of the GC.
        self._handlers: dict[str, tuple[Kind, Callable[[Ledger, SignedOp, Kind], None]]] = {}
        for name in kinds:
            kind = kinds[name]
            handler = getattr(type(self), kind.handler, None)
            if not callable(handler):
                raise InternalError(f"kind {name}: the ledger has no handler {kind.handler}")
            self._handlers[name] = (kind, handler)
        for entry in genesis.initial_balances:
            self._add(self.balances, (entry.account, entry.token), entry.amount)
            self._add(self.deposits, entry.token, entry.amount)

    # -- reading -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.meta.get("version", 0)

    @property
    def time(self) -> int:
        return self.meta.get("time", 0)

    @property
    def deposit_nonce(self) -> int:
        return self.meta.get("deposit_nonce", 0)

    def balance(self, account: Address, token: Symbol) -> int:
        return self.balances.get((account, token), 0)

    def held(self, account: Address, token: Symbol) -> int:
        """What the account's open orders hold of the token (e9)."""
        return self.held_funds.get((account, token), 0)

    def fees(self, token: Symbol) -> int:
        """The token's fee pool (e9)."""
        return self.fee_pool.get(token, 0)

    def book(self, market: str) -> Book:
        """A live view of a genesis market's book (KeyError for another symbol)."""
        if market not in self._markets:
            raise KeyError(f"no market {market!r} in the genesis")
        return Book(market, self._sides[(market, BUY)], self._sides[(market, SELL)], self.orders)

    def order(self, order_id: OpId) -> RestingOrder | None:
        """The open order with this id (the op id of its order.place), else None."""
        return self.orders.get(order_id)

    @property
    def fills(self) -> list[Fill]:
        """Every fill of the operations applied, in replay order."""
        return self.fills_from(0)

    @property
    def fill_count(self) -> int:
        return len(self._fills)

    def fills_from(self, position: int) -> list[Fill]:
        """The fills from replay position `position` on."""
        return [self._fills[p] for p in range(position, len(self._fills))]

    def fill(self, position: int) -> Fill:
        return self._fills[position]

    def locked(self, account: Address, token: Symbol) -> int:
        return sum(
            lock.amount for lock in self.locks.values() if lock.account == account and lock.token == token
        )

    def entitlement(self, account: Address, token: Symbol) -> int:
        """What the account would be paid (e9) if the channel concluded now, besides what it
        withdrew: its free, held and locked balance (a resting order is paid back to its owner)
        and, in a perp market's collateral token, its positions closed at the market's price,
        less what it owes, floored at 0 (before the haircut `entitlements` may apply)."""
        amount = self.balance(account, token) + self.held(account, token) + self.locked(account, token)
        if token not in self._perp_markets:
            return amount
        return max(0, amount - self.debt.get((account, token), 0) + self.unrealised_pnl(account, token))

    def entitlements(self, accounts: list[Address], token: Symbol) -> list[int]:
        """`entitlement` of each account, so that together they never exceed what the channel
        holds: the losses of accounts worth less than nothing (which pay 0) are covered by the
        insurance pool, and what it cannot cover is taken from the accounts in profit, in
        proportion to their unrealised PnL (each share rounded up), then from the largest
        payouts (the earlier account first on a tie)."""
        amounts = [self.entitlement(account, token) for account in accounts]
        if token not in self._perp_markets:
            return amounts
        raw = [
            self.balance(a, token) + self.held(a, token) + self.locked(a, token) - self.debt.get((a, token), 0)
            + self.unrealised_pnl(a, token)
            for a in accounts
        ]
        shortfall = sum(-value for value in raw if value < 0) - self.insurance.get(token, 0)
        if shortfall <= 0:
            return amounts
        profits = [max(0, self.unrealised_pnl(a, token)) if amounts[i] else 0 for i, a in enumerate(accounts)]
        total = sum(profits)
        for i, profit in enumerate(profits):
            if profit and shortfall > 0:
                cut = min(amounts[i], -(-shortfall * profit // total), shortfall)
                amounts[i] -= cut
                shortfall -= cut
        for i in sorted(range(len(amounts)), key=lambda i: (-amounts[i], i)):
            cut = min(amounts[i], max(shortfall, 0))
            amounts[i] -= cut
            shortfall -= cut
        return amounts

    # -- perpetual positions and margin (crdt.markets.perp) -------------------------------------

    def position(self, market: str, account: Address) -> Position:
        """The account's position in a perp market (flat if none)."""
        return self.positions.get((market, account), FLAT)

    def mark(self, market: str) -> int | None:
        """A perp market's price for the epoch (e9), if one was ever fixed."""
        mark = self.marks.get(market)
        return mark.price if mark is not None else None

    def _mark_of(self, symbol: str, position: Position) -> int:
        """The price a position is valued at: its market's, or (no price fixed yet) its entry."""
        mark = self.marks.get(symbol)
        return mark.price if mark is not None else position.entry_price

    def collateral(self, account: Address, token: Symbol) -> int:
        """The account's free balance of a collateral token less what it owes (signed, e9)."""
        return self.balances.get((account, token), 0) - self.debt.get((account, token), 0)

    def pending_funding(self, market: str, position: Position) -> int:
        """What a position owes in funding since it last settled (positive: it pays)."""
        state = self.funding.get(market)
        return payment(position.size, position.funding, state.cumulative) if state is not None else 0

    def unrealised_pnl(self, account: Address, token: Symbol) -> int:
        """The PnL of the account's positions in the perp markets of collateral `token`, closed
        at their markets' prices, less the funding they owe (e9, signed)."""
        total = 0
        for symbol in self._perp_markets.get(token, ()):
            position = self.positions.get((symbol, account))
            if position is not None:
                total += unrealised(position, self._mark_of(symbol, position)) - self.pending_funding(symbol, position)
        return total

    def margin(
        self, account: Address, token: Symbol, changed: tuple[str, Position] | None = None, delta: int = 0
    ) -> tuple[int, int, int]:
        """(AV, IMR, MMR) of the account in collateral `token` (cross margin over its perp
        markets; AV counts the funding its positions owe), with `changed` (market, position)
        instead of the position held and `delta` more collateral, if given: what a fill would
        leave."""
        value = self.collateral(account, token) + delta
        initial = maintenance = 0
        for symbol in self._perp_markets.get(token, ()):
            if changed is not None and changed[0] == symbol:
                position: Position | None = changed[1]
            else:
                position = self.positions.get((symbol, account))
            if position is None or not position.size:
                continue
            params = self._markets[symbol].perp
            if params is None:
                raise InternalError(f"{symbol} is not a perp market")
            mark = self._mark_of(symbol, position)
            value += unrealised(position, mark) - self.pending_funding(symbol, position)
            initial += margin_requirement(position, mark, params.imr)
            maintenance += margin_requirement(position, mark, params.mmr)
        return value, initial, maintenance

    def _has_positions(self, account: Address, token: Symbol) -> bool:
        return any((symbol, account) in self.positions for symbol in self._perp_markets.get(token, ()))

    def _spend(self, account: Address, token: Symbol, amount: int) -> None:
        """Reject (`insufficient_margin`) spending `amount` of a collateral token that the
        account's positions (or its debt) need: at most ``AV - IMR`` may leave it."""
        if token in self._perp_markets and (self._has_positions(account, token) or (account, token) in self.debt):
            value, initial, _ = self.margin(account, token)
            if amount > value - initial:
                raise Rejected(Reason.INSUFFICIENT_MARGIN,
                               f"at most {max(0, value - initial)} {token} may leave an account with positions "
                               f"(value {value}, initial margin {initial})")

    def withdrawn_by(self, account: Address, token: Symbol) -> int:
        """What the account has withdrawn in the channel so far (e9, cumulative)."""
        return self.withdrawn.get((account, token), 0)

    def unit(self, token: Symbol) -> int:
        """One whole unit of the token in e9 (withdrawals are multiples of it)."""
        unit: int = 10 ** max(0, 9 - self._tokens[token].decimals)
        return unit

    def check_conservation(self) -> None:
        """Raise `InternalError` unless every token's deposits equal the sum of its buckets, and
        the held buckets, the open orders and the books agree."""
        for token in self._tokens:
            total = (
                sum(v for (_, t), v in self.balances.items() if t == token)
                + sum(v for (_, t), v in self.held_funds.items() if t == token)
                + sum(lock.amount for lock in self.locks.values() if lock.token == token)
                + sum(v for (_, t), v in self.withdrawn.items() if t == token)
                + self.fee_pool.get(token, 0)
                + self.insurance.get(token, 0)
                + sum(self.pnl_pool.get(symbol, 0) + self.funding_pool.get(symbol, 0)
                      for symbol in self._perp_markets.get(token, ()))
                - sum(v for (_, t), v in self.debt.items() if t == token)
            )
            if total != self.deposits.get(token, 0):
                raise InternalError(f"conservation broken for {token}: {total} != {self.deposits.get(token, 0)}")
        holds: dict[tuple[Address, Symbol], int] = {}
        for order in self.orders.values():
            key = (order.owner, self._hold_token(order))
            holds[key] = holds.get(key, 0) + order.hold
            entry = self._sides[(order.market, order.side)].get((price_key(order.side, order.price), order.placed))
            if entry != order.order_id or order.remaining <= 0 or order.hold < 0:
                raise InternalError(f"open order 0x{order.order_id.hex()} is not where the book has it")
        if {k: v for k, v in holds.items() if v} != self.held_funds:
            raise InternalError("the held buckets are not the sum of the open orders' holds")
        if sum(len(side) for side in self._sides.values()) != len(self.orders):
            raise InternalError("a book holds an order that is not open")
        if not self.expiry.keys() <= self.orders.keys():
            raise InternalError("an order that is not open has an expiry")
        if not self.reduce_only.keys() <= self.orders.keys():
            raise InternalError("an order that is not open is marked reduce-only")
        opened: dict[str, int] = {}
        for (symbol, _), position in self.positions.items():
            if not position.size or position.open_notional < 0:
                raise InternalError(f"a flat or negative position is kept in {symbol}")
            opened[symbol] = opened.get(symbol, 0) + (position.open_notional if position.size > 0
                                                      else -position.open_notional)
        for symbol in sorted(set(opened) | set(self.pnl_pool)):
            if self.pnl_pool.get(symbol, 0) != -opened.get(symbol, 0):
                raise InternalError(f"{symbol}: the realised PnL does not match the open notional")
        for symbol in sorted({s for s, _ in self.positions}):
            if sum(p.size for (s, _), p in self.positions.items() if s == symbol) != 0:
                raise InternalError(f"{symbol}: the longs and the shorts do not match")

    def canonical(self) -> list[Any]:
        """The whole state as one canonical value (every collection sorted)."""
        return [
            "parley-state/1",
            self.version,
            self.time,
            self.deposit_nonce,
            [[a, t, v] for (a, t), v in sorted(self.balances.items())],
            [
                [op_id, lock.account, lock.token, lock.amount, lock.until, lock.reason]
                for op_id, lock in sorted(self.locks.items())
            ],
            [[a, t, v] for (a, t), v in sorted(self.withdrawn.items())],
            sorted([t, v] for t, v in self.fee_pool.items()),
            sorted([t, v] for t, v in self.insurance.items()),
            sorted([t, v] for t, v in self.deposits.items()),
        ] + (self._canonical_markets() if self._markets else [])

    def _canonical_markets(self) -> list[Any]:
        """The books' part of the state (only in a channel with markets, so the state hash of
        one without stays what it was): the placement counter, every open order, the held
        buckets."""
        return [
            "markets",
            self.meta.get("placements", 0),
            [
                [o.order_id, o.owner, o.market, o.side, o.price, o.remaining, o.placed, o.hold,
                 self.expiry.get(o.order_id, 0)]
                for _, o in sorted(self.orders.items())
            ],
            [[a, t, v] for (a, t), v in sorted(self.held_funds.items())],
        ] + (self._canonical_oracle() if self.oracle_posts else []) + (
            self._canonical_positions() if self.positions or self.pnl_pool or self.debt or self.reduce_only
            or self.funding or self.halts or self.delist_votes else []
        )

    def _canonical_positions(self) -> list[Any]:
        """The perp positions, the markets' PnL pools, the debts and the resting reduce-only
        orders (only once a perp order rested or filled)."""
        return [
            "positions",
            [[m, a, p.size, p.open_notional, p.funding] for (m, a), p in sorted(self.positions.items())],
            sorted([m, v] for m, v in self.pnl_pool.items()),
            [[a, t, v] for (a, t), v in sorted(self.debt.items())],
            sorted(self.reduce_only),
            [[m, *state] for m, state in sorted(self.funding.items())],
            sorted([m, v] for m, v in self.funding_pool.items()),
            sorted([m, v] for m, v in self.halts.items()),
            [[m, a, v] for (m, a), v in sorted(self.delist_votes.items())],
            sorted([m, v] for m, v in self.delisted.items()),
        ]

    def _canonical_oracle(self) -> list[Any]:
        """The oracle posts and the markets' prices (only once a price was posted)."""
        return [
            "oracle",
            [[m, a, p.price, p.posted] for (m, a), p in sorted(self.oracle_posts.items())],
            [[m, p.price, p.fixed] for m, p in sorted(self.marks.items())],
        ]

    def state_hash(self) -> Hash32:
        return Hash32(keccak256(cbor.encode(self.canonical())))

    # -- the undo journal ----------------------------------------------------------------------

    def begin(self) -> Frame:
        if self._journal is not None:
            raise InternalError("an undo frame is already open")
        self._journal = self._log
        return len(self._log)

    def end(self) -> None:
        self._journal = None

    def undo_point(self) -> Frame:
        """Where the open frame's changes stand now: `undo` of it undoes what follows."""
        if self._journal is None:
            raise InternalError("no undo frame is open")
        return len(self._log)

    def undo(self, frame: Frame) -> None:
        """Undo the changes of `frame` and of every frame that began after it."""
        log = self._log
        if frame > len(log):
            raise InternalError("undo of a frame already undone")
        for i in range(len(log) - 3, frame - 1, -3):
            table, key, old = log[i], log[i + 1], log[i + 2]
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        del log[frame:]

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        """Set (or, for `_MISSING` or zero, delete) one entry, recording its old value."""
        journal = self._journal
        if journal is not None:
            journal += (table, key, table.get(key, _MISSING))
        if value is _MISSING or value == 0:
            table.pop(key, None)
        else:
            table[key] = value

    # `_set`, `_delete` and `_add` are `_put` for the hot paths, each with the one case it needs.

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        """`_put` of a value that is never zero (an order, a fill, an id, a positive count)."""
        journal = self._journal
        if journal is not None:
            journal += (table, key, table.get(key, _MISSING))
        table[key] = value

    def _delete(self, table: dict[Any, Any], key: Any) -> None:
        """`_put(table, key, _MISSING)`."""
        journal = self._journal
        if journal is not None:
            journal += (table, key, table.get(key, _MISSING))
        table.pop(key, None)

    def _add(self, table: dict[Any, int], key: Any, delta: int) -> None:
        """Add `delta` to an amount (a zero result deletes the entry; adding zero changes nothing,
        so it records nothing)."""
        if not delta:
            return
        old = table.get(key, _MISSING)
        value = delta if old is _MISSING else old + delta
        if value < 0:
            raise InternalError(f"negative amount for {key!r}")
        journal = self._journal
        if journal is not None:
            journal += (table, key, old)
        if value:
            table[key] = value
        else:
            del table[key]

    def _add_signed(self, table: dict[Any, int], key: Any, delta: int) -> None:
        """`_add` to an amount that may be negative (a perp market's PnL pool)."""
        if not delta:
            return
        old = table.get(key, _MISSING)
        value = delta if old is _MISSING else old + delta
        journal = self._journal
        if journal is not None:
            journal += (table, key, old)
        if value:
            table[key] = value
        else:
            del table[key]

    def _credit(self, key: tuple[Address, Symbol], delta: int) -> None:
        """Change an account's collateral by `delta` (signed): a gain pays its debt first, a loss
        takes its free balance first and owes the rest. (What reaches the balance otherwise, a
        transfer or a released hold, does not pay the debt: collateral is ``balance - debt``, and
        `_spend` keeps the debt's worth from leaving.)"""
        if delta > 0:
            owed = self.debt.get(key, 0)
            paid = owed if owed < delta else delta
            self._add(self.debt, key, -paid)
            self._add(self.balances, key, delta - paid)
        elif delta < 0:
            have = self.balances.get(key, 0)
            taken = have if have < -delta else -delta
            self._add(self.balances, key, -taken)
            self._add(self.debt, key, -delta - taken)

    # -- inputs --------------------------------------------------------------------------------

    def apply(self, op: SignedOp, *, stale: bool = False) -> Reason | None:
        """Apply one operation; return None if it took effect, else the reason it did not."""
        author, seq = op.author, op.seq
        if seq <= self.seq_high.get(author, 0):
            return Reason.EQUIVOCATION
        # The first operation in the order with this (author, seq) owns it, whatever its outcome:
        # an equivocator's twin never takes effect, even when the first one was rejected.
        self._set(self.seq_high, author, seq)
        try:
            if stale:
                raise Rejected(Reason.STALE)
            entry = self._handlers.get(op.kind)
            if entry is None:
                raise Rejected(Reason.UNKNOWN_KIND, op.kind)
            kind, handler = entry
            _exact_keys(op.body, kind.keys)
            handler(self, op, kind)
        except Rejected as rejection:
            return rejection.reason
        return None

    def credit_deposit(self, deposit: Deposit) -> None:
        if deposit.nonce != self.deposit_nonce + 1:
            raise InvalidInput(f"deposit nonce {deposit.nonce} does not follow {self.deposit_nonce}")
        if deposit.account not in self._participants or deposit.token not in self._tokens:
            raise InvalidInput("deposit for an unknown account or token")
        if deposit.amount < 0:
            raise InvalidInput("negative deposit")
        self._add(self.balances, (deposit.account, deposit.token), deposit.amount)
        self._add(self.deposits, deposit.token, deposit.amount)
        self._put(self.meta, "deposit_nonce", deposit.nonce)

    def close_epoch(self, version: int, time: int) -> None:
        """Mark checkpoint `version` at checkpoint time `time`; release the locks it ends and
        remove the orders that expire by then (both in op-id order), releasing their holds."""
        if time < self.time:
            raise InvalidInput(f"checkpoint time {time} is before the previous one {self.time}")
        since = self.time  # the epoch being closed began at the previous checkpoint's time
        self._put(self.meta, "version", version)
        self._put(self.meta, "time", time)
        for op_id in sorted(self.locks):
            lock = self.locks[op_id]
            if lock.until <= time:
                self._put(self.locks, op_id, _MISSING)
                self._add(self.balances, (lock.account, lock.token), lock.amount)
        for order_id in sorted(self.expiry):
            if self.expiry[order_id] <= time:
                self._remove_order(self.orders[order_id], EXPIRED, None)
        if self.delist_votes:
            self._delist(time)
        if self.oracle_posts:
            self._fix_marks(time, since)  # after the version is set: a halt counts from this epoch
            for symbol in sorted(self.marks):
                if symbol not in self.delisted:
                    self._fund(symbol, time)

    def _delist(self, time: int) -> None:
        """Delist each perp market for which a quorum of participants (the genesis threshold)
        voted the same price: its resting orders go (``delisted``), every position closes at that
        price (funding settled first; the same arithmetic as a fill), and what rounding leaves in
        its PnL and funding pools goes to the insurance pool."""
        tally: dict[tuple[str, int], int] = {}
        for (symbol, _), price in self.delist_votes.items():
            if symbol not in self.delisted:
                tally[(symbol, price)] = tally.get((symbol, price), 0) + 1
        for (symbol, price), votes in sorted(tally.items()):
            if votes < self.genesis.threshold or symbol in self.delisted:
                continue
            market = self._markets[symbol]
            self._set(self.delisted, symbol, price)
            for side in SIDES:
                for order_id in list(self._sides[(symbol, side)].values()):
                    self._remove_order(self.orders[order_id], DELISTED, None)
            for (held_in, account), position in sorted(self.positions.items()):
                if held_in != symbol:
                    continue
                settled = self._settle(symbol, account, position, market.quote)
                closed, pnl = fill_position(settled, settled.size < 0, price, abs(settled.size))
                self._book(symbol, market.quote, account, closed, pnl)
            for pool in (self.pnl_pool, self.funding_pool):  # every position settled: what is left is dust, >= 0
                dust = pool.get(symbol, 0)
                if dust:
                    self._add_signed(pool, symbol, -dust)
                    self._add(self.insurance, market.quote, dust)
            self._set(self.marks, symbol, MarkPrice(price, time))

    def _fund(self, symbol: str, time: int) -> None:
        """One premium sample of a perp market at checkpoint time `time` and, when `time` crosses
        a funding interval, the interval's funding added to the market's index."""
        market = self._markets[symbol]
        params, mark = market.perp, self.marks[symbol].price
        if params is None:
            raise InternalError(f"{symbol} is not a perp market")
        book = self.book(symbol)
        target = params.impact_notional
        sample = premium(impact_price(((o.price, o.remaining) for o in book.side(BUY)), target),
                         impact_price(((o.price, o.remaining) for o in book.side(SELL)), target), mark)
        state = self.funding.get(symbol, FundingState(0, 0, 0, time, 0))
        if self.halted(symbol):  # funding pauses: the halted time is never charged
            self._set(self.funding, symbol, state._replace(since=time))
            return
        total, samples = state.premium_sum + sample, state.samples + 1
        if time // params.funding_interval > state.since // params.funding_interval:
            rate = prorate(funding_rate(total, samples, params.max_funding_rate), time - state.since,
                           params.funding_interval)
            state = FundingState(state.cumulative + index_step(rate, mark), 0, 0, time, rate)
            event = (self.version, time, rate, state.cumulative, mark)
            self._set(self.funding_history, symbol, (*self.funding_history.get(symbol, ()), event))
        else:
            state = state._replace(premium_sum=total, samples=samples)
        self._set(self.funding, symbol, state)

    def _settle(self, symbol: str, account: Address, position: Position, quote: Symbol) -> Position:
        """Pay (or be paid) the funding `position` owes, through the market's funding pool; the
        position as settled."""
        state = self.funding.get(symbol)
        if state is None or position.funding == state.cumulative:
            return position
        owed = payment(position.size, position.funding, state.cumulative)
        self._credit(self._keys[account][quote], -owed)
        self._add_signed(self.funding_pool, symbol, owed)
        if owed:
            key = (symbol, account)
            self._set(self.funding_paid, key, (*self.funding_paid.get(key, ()), (self.version, self.time, owed)))
        settled = position._replace(funding=state.cumulative)
        if position.size:
            self._set(self.positions, (symbol, account), settled)
        return settled

    def _fix_marks(self, time: int, since: int) -> None:
        """Each perp market's price for the epoch: the lower median of its fresh oracle posts, if
        there are `oracle_quorum` of them (a market without keeps its last price and the time
        that fixed it). A price more than `circuit_band` away from the previous one trips the
        circuit breaker: the market is halted for this checkpoint's epoch and the next
        ``halt_checkpoints - 1`` (`halted`)."""
        posts: dict[str, list[OraclePost]] = {}
        for (symbol, _), post in self.oracle_posts.items():
            posts.setdefault(symbol, []).append(post)
        for symbol in sorted(posts):
            params = self._markets[symbol].perp
            if params is None:
                raise InternalError(f"an oracle post for the spot market {symbol}")
            prices = fresh_prices(posts[symbol], time, params.oracle_staleness, since)
            if len(prices) < self._oracle_quorum:
                continue
            price, previous = lower_median(prices), self.marks.get(symbol)
            if previous is not None and params.halt_checkpoints and (
                abs(price - previous.price) * E9 > params.circuit_band * previous.price
            ):
                self._set(self.halts, symbol, self.version + params.halt_checkpoints - 1)
            self._set(self.marks, symbol, MarkPrice(price, time))

    def halted(self, market: str) -> bool:
        """Whether a perp market's circuit breaker holds it halted in the current epoch: only
        cancels, collateral coming in and reduce-only IOC orders, and no funding."""
        until = self.halts.get(market)
        return until is not None and self.version <= until

    # -- handlers: every check first, then the change -----------------------------------------

    def _permit(self, op: SignedOp, kind: Kind) -> None:
        if op.author not in self._permitted[kind.permission]:
            role = self._participants[op.author].role
            raise Rejected(Reason.NOT_PERMITTED, f"role {role} does not have {kind.permission} ({kind.name})")

    def _token_amount(self, op: SignedOp, kind: Kind) -> tuple[Symbol, int]:
        token = body_field(kind, op.body, "token")
        amount = body_field(kind, op.body, "amount")
        if token not in self._tokens:
            raise Rejected(Reason.UNKNOWN_TOKEN, token)
        if amount <= 0:
            raise Rejected(Reason.BAD_AMOUNT, "amount must be positive")
        if self.balances.get((op.author, token), 0) < amount:
            raise Rejected(Reason.INSUFFICIENT_BALANCE)
        self._spend(op.author, Symbol(token), amount)
        return Symbol(token), amount

    def _transfer(self, op: SignedOp, kind: Kind) -> None:
        recipient = body_field(kind, op.body, "to")
        self._permit(op, kind)
        if recipient not in self._participants:
            raise Rejected(Reason.UNKNOWN_RECIPIENT, "0x" + recipient.hex())
        if recipient == op.author:
            raise Rejected(Reason.SELF_TRANSFER)
        token, amount = self._token_amount(op, kind)
        self._add(self.balances, (op.author, token), -amount)
        self._add(self.balances, (Address(recipient), token), amount)

    def _withdraw(self, op: SignedOp, kind: Kind) -> None:
        self._permit(op, kind)
        token, amount = self._token_amount(op, kind)
        unit = self.unit(token)
        if amount % unit:
            raise Rejected(Reason.BAD_AMOUNT, f"withdrawals are whole units of {token} ({unit} e9)")
        self._add(self.balances, (op.author, token), -amount)
        self._add(self.withdrawn, (op.author, token), amount)

    def _lock(self, op: SignedOp, kind: Kind) -> None:
        until = body_field(kind, op.body, "until")
        reason = body_field(kind, op.body, "reason")  # at most crdt.kinds.MAX_LOCK_REASON bytes
        self._permit(op, kind)
        if until <= self.time:
            raise Rejected(Reason.LOCK_IN_PAST, f"until {until} is not after checkpoint time {self.time}")
        token, amount = self._token_amount(op, kind)
        self._add(self.balances, (op.author, token), -amount)
        self._put(self.locks, op.op_id, Lock(op.author, token, amount, until, reason))

    # -- spot markets ----------------------------------------------------------------------------

    def _hold_token(self, order: RestingOrder) -> Symbol:
        market = self._markets[order.market]
        return market.quote if order.side == BUY else market.base

    def _order_place(self, op: SignedOp, kind: Kind) -> None:
        self._permit(op, kind)
        # the fields in the order crdt.kinds.ORDER_PLACE declares them, typed (body_values checked
        # them): the compiled build then compares and computes on native values
        values = body_values(kind, op.body)
        symbol: str = values[0]
        side: str = values[1]
        order_type: str = values[2]
        tif: str = values[3]
        price: int = values[4]
        qty: int = values[5]
        reduce_only: bool = values[6]
        expires: int = values[7]
        market = self._markets.get(symbol)
        if market is None:
            raise Rejected(Reason.UNKNOWN_MARKET, symbol)
        if side not in SIDES:
            raise Rejected(Reason.BAD_SIDE, f"side must be one of {list(SIDES)}")
        if order_type not in ORDER_TYPES:
            raise Rejected(Reason.BAD_TYPE, f"type must be one of {list(ORDER_TYPES)}")
        if tif not in TIFS:
            raise Rejected(Reason.BAD_TIF, f"tif must be one of {list(TIFS)}")
        if order_type == MARKET and tif != IOC:
            raise Rejected(Reason.MARKET_ORDER_MUST_BE_IOC)
        if reduce_only and market.perp is None:
            raise Rejected(Reason.REDUCE_ONLY_NOT_SPOT)
        if not market.min_price <= price <= market.max_price:
            raise Rejected(Reason.PRICE_OUT_OF_RANGE, f"price must be in [{market.min_price}, {market.max_price}]")
        if price % market.tick_size:
            raise Rejected(Reason.BAD_TICK, f"price must be a multiple of {market.tick_size}")
        if not market.min_qty <= qty <= market.max_qty:
            raise Rejected(Reason.QTY_OUT_OF_RANGE, f"qty must be in [{market.min_qty}, {market.max_qty}]")
        if qty % market.step_size:
            raise Rejected(Reason.BAD_STEP, f"qty must be a multiple of {market.step_size}")
        if expires and expires <= self.time:
            raise Rejected(Reason.ORDER_EXPIRED, f"expires {expires} is not after checkpoint time {self.time}")
        if symbol in self.delisted:
            raise Rejected(Reason.MARKET_DELISTED, f"{symbol} was delisted at {self.delisted[symbol]}")
        if market.perp is not None and self.halted(symbol) and not (reduce_only and tif == IOC):
            raise Rejected(Reason.MARKET_HALTED, f"{symbol} is halted by its circuit breaker: reduce-only IOC only")
        if tif == POST_ONLY and self._would_take(market, side, price, op.author):
            raise Rejected(Reason.POST_ONLY_WOULD_CROSS)
        if market.perp is not None:
            self._check_perp_order(op.author, market, side, qty, reduce_only)
        elif side == BUY:
            worst = notional(price, qty)
            rate = market.maker_fee if market.maker_fee > market.taker_fee else market.taker_fee  # the greater
            needed = worst + fee(worst, rate)
            if self.balances.get((op.author, market.quote), 0) < needed:
                raise Rejected(Reason.INSUFFICIENT_BALANCE, f"a buy of this size needs {needed} {market.quote} free")
            self._spend(op.author, market.quote, needed)
        elif self.balances.get((op.author, market.base), 0) < qty:
            raise Rejected(Reason.INSUFFICIENT_BALANCE, f"a sell of this size needs {qty} {market.base} free")
        else:
            self._spend(op.author, market.base, qty)
        # every check passed: from here on the operation takes effect
        placed = self.meta.get("placements", 0) + 1
        self._set(self.meta, "placements", placed)
        self._set(self.order_owner, op.op_id, op.author)
        # a post-only order got here only if it does not cross the best resting order: it takes nothing
        stopped: str | None = None
        if tif == POST_ONLY:
            remaining = qty
        elif market.perp is not None:
            remaining, stopped = self._take_perp(op, market, side, price, qty, reduce_only)
        else:
            remaining, unfunded = self._take(op, market, side, price, qty)
            stopped = UNFUNDED if unfunded else None
        if not remaining:
            self._set(self.closed, op.op_id, (FILLED, op.op_id))
        elif stopped is not None:
            self._set(self.closed, op.op_id, (stopped, op.op_id))
        elif order_type == LIMIT and tif in (GTC, POST_ONLY):
            if market.perp is not None and self._would_take(market, side, price, op.author):
                self._set(self.closed, op.op_id, (TAKE_BOUND, op.op_id))  # stopped by the bound: never rests crossed
            elif market.perp is not None:
                self._rest_perp(op, market, side, price, remaining, placed, expires, reduce_only)
            else:
                self._rest(op, market, side, price, remaining, placed, expires)
        else:
            self._set(self.closed, op.op_id, (DONE, op.op_id))

    def _crosses(self, side: str, limit: int, maker_price: int) -> bool:
        return maker_price <= limit if side == BUY else maker_price >= limit

    def _would_take(self, market: Market, side: str, limit: int, author: Address) -> bool:
        """Whether an order's limit crosses the best resting order of the other side, whoever
        owns it: a post-only order never changes the book but by resting (it neither takes nor
        removes its author's own crossing orders, as matching would)."""
        opposite = self._sides[(market.symbol, SELL if side == BUY else BUY)]
        return bool(opposite) and self._crosses(side, limit, self.orders[opposite.peekitem(0)[1]].price)

    def _take(self, op: SignedOp, market: Market, side: str, limit: int, qty: int) -> tuple[int, bool]:
        """Match a taker against the other side; return what is left of it and whether it
        stopped because it could not pay a fill."""
        taker = op.author
        base, quote = market.base, market.quote
        buying = side == BUY
        opposite = self._sides[(market.symbol, SELL if buying else BUY)]
        # self._add at each call, not a local alias: the compiled build calls a method directly, a
        # bound method through Python's calling convention
        orders, balances, held_funds, keys = self.orders, self.balances, self.held_funds, self._keys
        taker_quote, taker_base = keys[taker][quote], keys[taker][base]
        remaining = qty
        while remaining and opposite:
            maker = orders[opposite.peekitem(0)[1]]
            price, owner = maker.price, maker.owner
            if (price > limit) if buying else (price < limit):
                break  # the best resting price does not cross the taker's limit
            if owner == taker:
                self._remove_order(maker, SELF_TRADE, op.op_id)  # the resting order goes, matching goes on
                continue
            q = remaining if remaining < maker.remaining else maker.remaining
            n = notional(price, q)
            taker_fee, maker_fee = fee(n, market.taker_fee), fee(n, market.maker_fee)
            maker_quote, maker_base = keys[owner][quote], keys[owner][base]
            if buying:  # the maker sells from its hold (exactly its remaining base)
                if balances.get(taker_quote, 0) < n + taker_fee:
                    return remaining, True
                from_hold = q
                self._add(balances, taker_quote, -(n + taker_fee))
                self._add(balances, taker_base, q)
                self._add(held_funds, maker_base, -q)
                self._add(balances, maker_quote, n - maker_fee)
            else:  # the maker buys from its hold, a shortfall from its free balance
                cost = n + maker_fee
                from_hold = maker.hold if maker.hold < cost else cost
                if balances.get(maker_quote, 0) < cost - from_hold:
                    self._remove_order(maker, UNFUNDED, op.op_id)  # it cannot pay: removed without the fill
                    continue
                if balances.get(taker_base, 0) < q:
                    return remaining, True
                self._add(balances, taker_base, -q)
                self._add(balances, taker_quote, n - taker_fee)
                self._add(held_funds, maker_quote, -from_hold)
                self._add(balances, maker_quote, -(cost - from_hold))
                self._add(balances, maker_base, q)
            self._add(self.fee_pool, quote, taker_fee + maker_fee)
            self._record_fill(op, maker, market, price, q, taker_fee, maker_fee)
            remaining -= q
            if q < maker.remaining:
                self._set(orders, maker.order_id, RestingOrder(maker.order_id, owner, maker.market, maker.side, price,
                                                               maker.remaining - q, maker.placed,
                                                               maker.hold - from_hold))
            else:
                self._remove_order(maker, FILLED, op.op_id, maker.hold - from_hold)
        return remaining, False

    def _rest(
        self, op: SignedOp, market: Market, side: str, price: int, remaining: int, placed: int, expires: int
    ) -> None:
        """Put a remainder on the book, moving its hold from free to held; a remainder whose
        hold the free balance cannot cover is cancelled instead."""
        if side == BUY:
            worst = notional(price, remaining)
            token, hold = market.quote, worst + fee(worst, market.maker_fee)
        else:
            token, hold = market.base, remaining
        owner = op.author
        key = self._keys[owner][token]
        if self.balances.get(key, 0) < hold:
            self._set(self.closed, op.op_id, (UNFUNDED, op.op_id))
            return
        self._add(self.balances, key, -hold)
        self._add(self.held_funds, key, hold)
        order_id = op.op_id
        self._set(self.orders, order_id, RestingOrder(order_id, owner, market.symbol, side, price, remaining, placed,
                                                      hold))
        self._set(self._sides[(market.symbol, side)], (price_key(side, price), placed), order_id)
        if expires:
            self._set(self.expiry, order_id, expires)

    # -- perpetual markets ------------------------------------------------------------------------

    def _check_perp_order(self, account: Address, market: Market, side: str, qty: int, reduce_only: bool) -> None:
        """A perp order's checks, in place of a spot order's funds: a reduce-only order needs a
        position of the other side; any other needs a fresh oracle price and, below initial
        margin, to only reduce (its quantity within the position of the other side)."""
        params = market.perp
        if params is None:
            raise InternalError(f"{market.symbol} is not a perp market")
        position = self.positions.get((market.symbol, account), FLAT)
        closable = reducible(position, side == BUY)
        if reduce_only:
            if not closable:
                raise Rejected(Reason.NOTHING_TO_REDUCE, f"no {'short' if side == BUY else 'long'} position to reduce")
            return
        if not is_fresh(self.marks.get(market.symbol), self.time, params.oracle_staleness):
            raise Rejected(Reason.ORACLE_STALE, f"{market.symbol} has no fresh oracle price: only reduce-only orders")
        value, initial, _ = self.margin(account, market.quote)
        if value < initial and qty > closable:
            raise Rejected(Reason.INSUFFICIENT_MARGIN,
                           f"account value {value} is below its initial margin {initial}: only orders that reduce")

    def _take_bound(self, market: Market, buying: bool, limit: int) -> int:
        """The taker's limit within the take bound ``oracle · (1 ± mtb)`` (none before a price)."""
        params, mark = market.perp, self.marks.get(market.symbol)
        if params is None or mark is None:
            return limit
        if buying:
            bound = mark.price * (E9 + params.mtb_long) // E9
            return bound if bound < limit else limit
        bound = -(-mark.price * (E9 - params.mtb_short) // E9)
        return bound if bound > limit else limit

    def _margin_ok(self, account: Address, market: Market, position: Position, delta: int) -> bool:
        """Whether the account may hold `position` in `market` with `delta` more collateral: at or
        above its initial margin, and the position's notional within its leverage's cap."""
        params = market.perp
        if params is None:
            raise InternalError(f"{market.symbol} is not a perp market")
        value, initial, _ = self.margin(account, market.quote, (market.symbol, position), delta)
        size = notional(self._mark_of(market.symbol, position), abs(position.size))
        return value >= initial and size <= leverage_cap(params, size, value)

    def _take_perp(
        self, op: SignedOp, market: Market, side: str, limit: int, qty: int, reduce_only: bool
    ) -> tuple[int, str | None]:
        """Match a perp taker: as `_take`, within the take bound, each fill moving positions
        instead of balances. A fill that grows a position must leave its account at or above
        initial margin: a maker that fails is removed (undercollateralized), a taker that fails
        stops. Reduce-only fills are shrunk to what they can close; a resting reduce-only order
        with nothing left to close is removed. Return what is left and why the taker stopped."""
        taker = op.author
        symbol, quote = market.symbol, market.quote
        buying = side == BUY
        limit = self._take_bound(market, buying, limit)
        opposite = self._sides[(symbol, SELL if buying else BUY)]
        orders, positions = self.orders, self.positions
        remaining = qty
        while remaining and opposite:
            maker = orders[opposite.peekitem(0)[1]]
            price, owner = maker.price, maker.owner
            if (price > limit) if buying else (price < limit):
                break
            if owner == taker:
                self._remove_order(maker, SELF_TRADE, op.op_id)
                continue
            q = remaining if remaining < maker.remaining else maker.remaining
            taker_before = self._settle(symbol, taker, positions.get((symbol, taker), FLAT), quote)
            if reduce_only:
                q = min(q, reducible(taker_before, buying))
                if not q:
                    break  # nothing left to reduce: the remainder is cancelled
            maker_before = self._settle(symbol, owner, positions.get((symbol, owner), FLAT), quote)
            if maker.order_id in self.reduce_only:
                closable = reducible(maker_before, not buying)
                if not closable:
                    self._remove_order(maker, REDUCE_ONLY, op.op_id)
                    continue
                q = min(q, closable)
            n = notional(price, q)
            taker_fee, maker_fee = fee(n, market.taker_fee), fee(n, market.maker_fee)
            taker_after, taker_pnl = fill_position(taker_before, buying, price, q)
            maker_after, maker_pnl = fill_position(maker_before, not buying, price, q)
            if grows_risk(maker_before, maker_after) and not self._margin_ok(owner, market, maker_after,
                                                                             maker_pnl - maker_fee):
                self._remove_order(maker, UNDERCOLLATERALIZED, op.op_id)
                continue
            if grows_risk(taker_before, taker_after) and not self._margin_ok(taker, market, taker_after,
                                                                             taker_pnl - taker_fee):
                return remaining, UNDERCOLLATERALIZED
            self._book(symbol, quote, taker, taker_after, taker_pnl, taker_fee)
            self._book(symbol, quote, owner, maker_after, maker_pnl, maker_fee)
            self._add(self.fee_pool, quote, taker_fee + maker_fee)
            self._record_fill(op, maker, market, price, q, taker_fee, maker_fee)
            remaining -= q
            if q < maker.remaining:
                self._set(orders, maker.order_id, maker._replace(remaining=maker.remaining - q))
            else:
                self._remove_order(maker, FILLED, op.op_id)
        return remaining, None

    def _book(self, symbol: str, quote: Symbol, account: Address, position: Position, pnl: int, paid: int = 0) -> None:
        """An account's position after a fill (kept, or gone when flat), the PnL it realised moved
        between the market's pool and its collateral, and the fee it `paid` taken."""
        if position.size:
            self._set(self.positions, (symbol, account), position)
        else:
            self._delete(self.positions, (symbol, account))
        self._add_signed(self.pnl_pool, symbol, -pnl)
        self._credit(self._keys[account][quote], pnl - paid)

    def _rest_perp(
        self, op: SignedOp, market: Market, side: str, price: int, remaining: int, placed: int, expires: int,
        reduce_only: bool,
    ) -> None:
        """Put a perp remainder on the book: it holds nothing (margin is checked at each fill)."""
        order_id = op.op_id
        self._set(self.orders, order_id, RestingOrder(order_id, op.author, market.symbol, side, price, remaining,
                                                      placed, 0))
        self._set(self._sides[(market.symbol, side)], (price_key(side, price), placed), order_id)
        if expires:
            self._set(self.expiry, order_id, expires)
        if reduce_only:
            self._set(self.reduce_only, order_id, True)

    def _record_fill(self, op: SignedOp, maker: RestingOrder, market: Market, price: int, qty: int, taker_fee: int,
                     maker_fee: int) -> None:
        fills, order_fills = self._fills, self.order_fills
        position = len(fills)
        self._set(fills, position, Fill(op.op_id, maker.order_id, op.author, maker.owner, market.symbol, price, qty,
                                        taker_fee, maker_fee))
        for order_id in (op.op_id, maker.order_id):
            self._set(order_fills, order_id, (*order_fills.get(order_id, ()), position))

    def _liquidate(self, op: SignedOp, kind: Kind) -> None:
        """Take `qty` of an account's position below maintenance margin (TRADING.md "Liquidation").

        The account closes at ``P · (1 - mmr/2)`` (a long; ``1 + mmr/2`` a short), or at its
        bankruptcy price ``P ∓ AV / qty`` if that is better for it, so a solvent account never
        ends worth less than nothing. The premium (the mark against that price) is split: the
        liquidator takes the position at a price that gives it ``1 - insurance_pool_ratio`` of
        it, and the rest goes to the insurance pool in cash, exactly (both shares are differences
        of the same notionals). A bankrupt account (AV < 0) closes at the premium price, and what
        it then owes is paid by the insurance pool; if the pool cannot pay all of it, the position
        is deleveraged instead (`_deleverage`). What an account still owes otherwise (cross margin:
        its other positions) payouts spread over the accounts in profit (`entitlements`)."""
        self._permit(op, kind)
        account_raw, symbol, qty = body_values(kind, op.body)
        account = Address(account_raw)
        if account not in self._participants:
            raise Rejected(Reason.UNKNOWN_ACCOUNT, "0x" + account.hex())
        if account == op.author:
            raise Rejected(Reason.SELF_LIQUIDATION)
        market = self._markets.get(symbol)
        if market is None:
            raise Rejected(Reason.UNKNOWN_MARKET, symbol)
        params, mark = market.perp, self.marks.get(symbol)
        if params is None:
            raise Rejected(Reason.NOT_PERP, f"{symbol} is a spot market")
        position = self.positions.get((symbol, account))
        if position is None or mark is None:
            raise Rejected(Reason.NO_POSITION, f"0x{account.hex()} has no {symbol} position")
        if symbol in self.delisted:
            raise Rejected(Reason.MARKET_DELISTED, f"{symbol} was delisted at {self.delisted[symbol]}")
        if self.halted(symbol):
            raise Rejected(Reason.MARKET_HALTED, f"{symbol} is halted by its circuit breaker")
        if not 0 < qty <= abs(position.size):
            raise Rejected(Reason.QTY_OUT_OF_RANGE, f"qty must be in (0, {abs(position.size)}]")
        if qty % market.step_size:
            raise Rejected(Reason.BAD_STEP, f"qty must be a multiple of {market.step_size}")
        quote = market.quote
        value, _, maintenance = self.margin(account, quote)
        if value >= maintenance:
            raise Rejected(Reason.NOT_LIQUIDATABLE, f"value {value} is not below maintenance margin {maintenance}")
        long = position.size > 0
        p = mark.price
        half = params.mmr // 2
        premium_price = p * (E9 - half) // E9 if long else -(-p * (E9 + half) // E9)
        if value >= 0:  # bounded by the bankruptcy price: the account never ends below zero
            shift = value * E9 // qty
            bankruptcy = p - shift if long else p + shift
            price = max(premium_price, bankruptcy) if long else min(premium_price, bankruptcy)
        else:
            price = premium_price
        gap = p - price if long else price - p  # the premium per whole base, >= 0
        to_insurance = gap * params.insurance_pool_ratio // E9
        taken_at = price + to_insurance if long else price - to_insurance  # the liquidator's price
        cut = notional(taken_at, qty) - notional(price, qty) if long else notional(price, qty) - notional(taken_at, qty)
        worth = value - abs(notional(p, qty) - notional(price, qty))  # the account's value once closed at price
        if worth < 0 and self.insurance.get(quote, 0) + cut < -worth:  # more than the insurance pool can pay
            self._deleverage(op, market, account, position, qty, value, p)
            return
        liquidator = op.author
        held = self.positions.get((symbol, liquidator), FLAT)
        # the liquidator's margin, checked before anything changes: on its position as funding
        # would settle it, and its collateral less what that settlement pays
        state = self.funding.get(symbol)
        owed = payment(held.size, held.funding, state.cumulative) if state is not None else 0
        settled = held._replace(funding=state.cumulative) if state is not None else held
        liquidator_after, liquidator_pnl = fill_position(settled, long, taken_at, qty)
        if grows_risk(held, liquidator_after) and not self._margin_ok(liquidator, market, liquidator_after,
                                                                      liquidator_pnl - owed):
            raise Rejected(Reason.INSUFFICIENT_MARGIN, "the liquidator cannot carry the position")
        account_before = self._settle(symbol, account, position, quote)
        self._settle(symbol, liquidator, held, quote)
        account_after, account_pnl = fill_position(account_before, not long, price, qty)
        self._book(symbol, quote, account, account_after, account_pnl)
        self._book(symbol, quote, liquidator, liquidator_after, liquidator_pnl)
        self._add_signed(self.pnl_pool, symbol, -cut)
        self._add(self.insurance, quote, cut)
        key = self._keys[account][quote]
        owed = self.debt.get(key, 0)
        covered = min(owed, self.insurance.get(quote, 0))
        if covered:  # a bankrupt account's shortfall, from the insurance pool
            self._add(self.insurance, quote, -covered)
            self._add(self.debt, key, -covered)
        self._set(self.liquidations, op.op_id, Liquidation(account, liquidator, symbol, qty, p, price, taken_at, cut,
                                                           covered))

    def _deleverage(
        self, op: SignedOp, market: Market, account: Address, position: Position, qty: int, value: int, mark: int
    ) -> None:
        """Close `qty` of a bankrupt account's position (its value `value` < 0, more than the
        insurance pool holds) against the opposite positions at its bankruptcy price, ``P ± |AV| /
        |size|`` (rounded in the account's favour; a short's at least 1), so that closing all of it
        leaves the account at zero (a part covers its share of the loss) and the loss it could
        not pay falls on the positions that gained from it: ranked by profit times leverage (uPnL
        · notional / AV), the most first, the account's address breaking ties."""
        symbol, quote = market.symbol, market.quote
        long = position.size > 0
        loss = -value
        shift = -(-loss * E9 // abs(position.size))  # of the whole position: a part covers its share
        price = mark + shift if long else max(1, mark - shift)
        ranked: list[tuple[int, Address]] = []
        for (s, other), held in self.positions.items():
            if s == symbol and other != account and (held.size > 0) != long:
                gain = unrealised(held, mark)
                worth = max(1, self.margin(other, quote)[0])
                ranked.append((-(gain * notional(mark, abs(held.size)) // worth), other))
        ranked.sort()
        before = self._settle(symbol, account, position, quote)
        left, touched = qty, []
        for _, other in ranked:
            if not left:
                break
            held = self._settle(symbol, other, self.positions[(symbol, other)], quote)
            q = min(left, abs(held.size))
            before, pnl = fill_position(before, not long, price, q)
            after, other_pnl = fill_position(held, long, price, q)
            self._book(symbol, quote, other, after, other_pnl)
            self._book(symbol, quote, account, before, pnl)
            left -= q
            touched.append(other)
        self._set(self.liquidations, op.op_id, Liquidation(account, op.author, symbol, qty, mark, price, price, 0, 0,
                                                           tuple(touched)))

    def _perp_price(self, op: SignedOp, kind: Kind) -> tuple[str, int]:
        """The (market, price) of an oracle.price or market.delist: a perp market of the genesis,
        not delisted, and a price within its limits."""
        self._permit(op, kind)
        symbol, price = body_values(kind, op.body)
        market = self._markets.get(symbol)
        if market is None:
            raise Rejected(Reason.UNKNOWN_MARKET, symbol)
        if market.perp is None:
            raise Rejected(Reason.NOT_PERP, f"{symbol} is a spot market")
        if symbol in self.delisted:
            raise Rejected(Reason.MARKET_DELISTED, f"{symbol} was delisted at {self.delisted[symbol]}")
        if not market.min_price <= price <= market.max_price:
            raise Rejected(Reason.PRICE_OUT_OF_RANGE, f"price must be in [{market.min_price}, {market.max_price}]")
        return symbol, price

    def _market_delist(self, op: SignedOp, kind: Kind) -> None:
        symbol, price = self._perp_price(op, kind)
        self._set(self.delist_votes, (symbol, op.author), price)

    def _remove_order(self, order: RestingOrder, why: str, by: OpId | None, hold: int | None = None) -> None:
        """Take an order off its book; what is left of its hold (`hold`, else ``order.hold``) goes
        back to free. `why` is one of `crdt.markets.book.CLOSED_REASONS`; `by` the operation
        (None: a checkpoint)."""
        order_id = order.order_id
        if hold is None:
            hold = order.hold
        self._set(self.closed, order_id, (why, by))
        self._delete(self._sides[(order.market, order.side)], (price_key(order.side, order.price), order.placed))
        self._delete(self.orders, order_id)
        if order_id in self.expiry:
            self._delete(self.expiry, order_id)
        if order_id in self.reduce_only:
            self._delete(self.reduce_only, order_id)
        if hold:
            key = self._keys[order.owner][self._hold_token(order)]
            self._add(self.held_funds, key, -hold)
            self._add(self.balances, key, hold)

    def _oracle_price(self, op: SignedOp, kind: Kind) -> None:
        symbol, price = self._perp_price(op, kind)
        self._set(self.oracle_posts, (symbol, op.author), OraclePost(price, self.time))

    def _order_cancel(self, op: SignedOp, kind: Kind) -> None:
        self._permit(op, kind)
        order_id = body_field(kind, op.body, "order")
        owner = self.order_owner.get(order_id)
        if owner is None:
            raise Rejected(Reason.UNKNOWN_ORDER, "0x" + order_id.hex())
        if owner != op.author:
            raise Rejected(Reason.NOT_ORDER_OWNER)
        order = self.orders.get(order_id)
        if order is None:
            raise Rejected(Reason.ORDER_NOT_OPEN)
        self._remove_order(order, CANCELLED, op.op_id)

    def _order_cancel_all(self, op: SignedOp, kind: Kind) -> None:
        self._permit(op, kind)
        symbol = body_field(kind, op.body, "market")
        if symbol not in self._markets:
            raise Rejected(Reason.UNKNOWN_MARKET, symbol)
        for side in SIDES:
            for order_id in list(self._sides[(symbol, side)].values()):
                order = self.orders[order_id]
                if order.owner == op.author:
                    self._remove_order(order, CANCELLED, op.op_id)
