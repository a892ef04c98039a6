"""The balance ledger: a deterministic function of the operations applied to it, in order.

`Ledger.apply(op)` first runs every check (each failing check names a `Reason`), and only then
changes the state, so a rejected operation leaves no trace except its reason. Every change goes
through `_put`, which records the old value in the open undo frame; `undo(frame)` restores it
exactly. That is what lets `Replica` reorder a late operation without replaying from genesis.

Conservation, per token, in every state (`check_conservation`):

    deposits == sum(balances) + sum(locked) + sum(withdrawn) + fees + insurance

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
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from crdt import cbor
from crdt.errors import InternalError, InvalidInput
from crdt.genesis import Genesis, Permission
from crdt.hashing import keccak256
from crdt.kinds import KINDS, Kind, Registry
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


@dataclass(frozen=True, slots=True)
class Lock:
    account: Address
    token: Symbol
    amount: int
    until: int  # ms of checkpoint time
    reason: str


_MISSING: Any = object()
Frame = list[tuple[dict[Any, Any], Any, Any]]


def body_field(kind: Kind, body: Mapping[str, Any], name: str) -> Any:
    """The body's value for `name`, of the type the kind's registry entry gives it."""
    value = body.get(name, _MISSING)
    field_type = kind.types[name]
    if not field_type.conforms(value):
        raise Rejected(Reason.BAD_BODY, f"{name} must be {field_type.shape}")
    return value


def _exact_keys(body: Mapping[str, Any], names: frozenset[str]) -> None:
    if body.keys() != names:
        raise Rejected(Reason.BAD_BODY, f"body must have exactly the keys {sorted(names)}")


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
        self.balances: dict[tuple[Address, Symbol], int] = {}
        self.locks: dict[OpId, Lock] = {}
        self.withdrawn: dict[tuple[Address, Symbol], int] = {}  # cumulative, per (account, token)
        self.fees: dict[Symbol, int] = {}
        self.insurance: dict[Symbol, int] = {}
        self.deposits: dict[Symbol, int] = {}
        self.meta: dict[str, int] = {}  # "version", "time", "deposit_nonce"
        self.seq_owner: dict[tuple[Address, int], OpId] = {}  # the first op in the order at each seq
        self._journal: Frame | None = None
        self._handlers: dict[str, tuple[Kind, Callable[[SignedOp, Kind], None]]] = {}
        for name in kinds:
            kind = kinds[name]
            handler = getattr(self, kind.handler, None)
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

    def locked(self, account: Address, token: Symbol) -> int:
        return sum(
            lock.amount for lock in self.locks.values() if lock.account == account and lock.token == token
        )

    def entitlement(self, account: Address, token: Symbol) -> int:
        """What the account would be paid (e9) if the channel concluded now, besides what it
        withdrew: its free and locked balance."""
        return self.balance(account, token) + self.locked(account, token)

    def withdrawn_by(self, account: Address, token: Symbol) -> int:
        """What the account has withdrawn in the channel so far (e9, cumulative)."""
        return self.withdrawn.get((account, token), 0)

    def unit(self, token: Symbol) -> int:
        """One whole unit of the token in e9 (withdrawals are multiples of it)."""
        unit: int = 10 ** max(0, 9 - self._tokens[token].decimals)
        return unit

    def check_conservation(self) -> None:
        """Raise `InternalError` unless every token's deposits equal the sum of its buckets."""
        for token in self._tokens:
            held = (
                sum(v for (_, t), v in self.balances.items() if t == token)
                + sum(lock.amount for lock in self.locks.values() if lock.token == token)
                + sum(v for (_, t), v in self.withdrawn.items() if t == token)
                + self.fees.get(token, 0)
                + self.insurance.get(token, 0)
            )
            if held != self.deposits.get(token, 0):
                raise InternalError(f"conservation broken for {token}: {held} != {self.deposits.get(token, 0)}")

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
            sorted([t, v] for t, v in self.fees.items()),
            sorted([t, v] for t, v in self.insurance.items()),
            sorted([t, v] for t, v in self.deposits.items()),
        ]

    def state_hash(self) -> Hash32:
        return Hash32(keccak256(cbor.encode(self.canonical())))

    # -- the undo journal ----------------------------------------------------------------------

    def begin(self) -> Frame:
        if self._journal is not None:
            raise InternalError("an undo frame is already open")
        frame: Frame = []
        self._journal = frame
        return frame

    def end(self) -> None:
        self._journal = None

    def undo(self, frame: Frame) -> None:
        for table, key, old in reversed(frame):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        journal = self._journal
        if journal is not None:
            journal.append((table, key, table.get(key, _MISSING)))
        if value is _MISSING or value == 0:
            table.pop(key, None)
        else:
            table[key] = value

    def _add(self, table: dict[Any, int], key: Any, delta: int) -> None:
        value = table.get(key, 0) + delta
        if value < 0:
            raise InternalError(f"negative amount for {key!r}")
        self._put(table, key, value)

    # -- inputs --------------------------------------------------------------------------------

    def apply(self, op: SignedOp, *, stale: bool = False) -> Reason | None:
        """Apply one operation; return None if it took effect, else the reason it did not."""
        seq_key = (op.author, op.seq)
        if seq_key in self.seq_owner:
            return Reason.EQUIVOCATION
        # The first operation in the order with this (author, seq) owns it, whatever its outcome:
        # an equivocator's twin never takes effect, even when the first one was rejected.
        self._put(self.seq_owner, seq_key, op.op_id)
        try:
            if stale:
                raise Rejected(Reason.STALE)
            entry = self._handlers.get(op.kind)
            if entry is None:
                raise Rejected(Reason.UNKNOWN_KIND, op.kind)
            kind, handler = entry
            _exact_keys(op.body, kind.keys)
            handler(op, kind)
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
        """Mark checkpoint `version` at checkpoint time `time`; release the locks it ends."""
        if time < self.time:
            raise InvalidInput(f"checkpoint time {time} is before the previous one {self.time}")
        self._put(self.meta, "version", version)
        self._put(self.meta, "time", time)
        for op_id in sorted(self.locks):
            lock = self.locks[op_id]
            if lock.until <= time:
                self._put(self.locks, op_id, _MISSING)
                self._add(self.balances, (lock.account, lock.token), lock.amount)

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
