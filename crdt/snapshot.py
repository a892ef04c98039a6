"""Snapshots: a replica's certified state in one file, to start from instead of replaying the
whole history (issue 16, "Compaction and snapshots").

A snapshot is taken at a certified version v, with the tentative suffix unwound: what it holds
is exactly the replica's state at cut v and what replay needs to go on from there:

- the ledger: every table, the state (what the state hash covers: `Ledger.canonical`) and what
  replay and the reports read beside it (the seq high-water marks, every order's owner, the
  fills, why each order closed, the liquidations and fundings);
- the certified cuts (heads, times, deposits);
- the certified operations still in memory (not pruned yet) with their version and outcome, by
  id: their bytes are in the store; the operations above v are replayed from there;
- the equivocation evidence, both signed operations of each pair (those may be pruned);
- the counts of what pruning took (per reason replay refused).

Encoded as canonical CBOR: ``["parley-snapshot/1", channel id, version, state hash, ...]``. The
state hash inside is checked against the ledger the snapshot rebuilds when it is read
(`decode`), and the node checks it against the checkpoint the quorum decided
(`channel.runtime.snapshots`), so a damaged or forged file is refused, not started from. The
tables the hash does not cover are covered by the file's own digest, kept beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from crdt.errors import InvalidInput, InvalidSnapshot
from crdt.genesis import Genesis
from crdt.graph import Equivocation
from crdt.ledger import Deposit, Ledger, Liquidation, Lock
from crdt.markets.book import Fill, RestingOrder, price_key
from crdt.markets.funding import FundingState
from crdt.markets.oracle import MarkPrice, OraclePost
from crdt.markets.perp import Position
from crdt.ops import Context, SignedOp, decode_op
from crdt.types import Hash32, OpId

FORMAT = "parley-snapshot/1"


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _tuples(value: Any) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(item) for item in value)


def _same(value: Any) -> Any:
    return value


def _liquidation(value: Any) -> Liquidation:
    account, liquidator, market, qty, mark, price, taken_at, insurance, covered, deleveraged = value
    return Liquidation(account, liquidator, market, qty, mark, price, taken_at, insurance, covered, tuple(deleveraged))


def _closed(value: Any) -> tuple[str, OpId | None]:
    why, by = value
    return why, by


# Every ledger table, in the file's order: name, how a key is read back, how a value is read back.
# A value is written as a list when it is a tuple (named or not) or a `Lock`.
TABLES: tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any]], ...] = (
    ("balances", _tuple, _same),
    ("locks", _same, lambda v: Lock(*v)),
    ("withdrawn", _tuple, _same),
    ("fee_pool", _same, _same),
    ("insurance", _same, _same),
    ("deposits", _same, _same),
    ("meta", _same, _same),
    ("seq_high", _same, _same),
    ("orders", _same, lambda v: RestingOrder(*v)),
    ("held_funds", _tuple, _same),
    ("expiry", _same, _same),
    ("order_owner", _same, _same),
    ("_fills", _same, lambda v: Fill(*v)),
    ("oracle_posts", _tuple, lambda v: OraclePost(*v)),
    ("marks", _same, lambda v: MarkPrice(*v)),
    ("positions", _tuple, lambda v: Position(*v)),
    ("pnl_pool", _same, _same),
    ("debt", _tuple, _same),
    ("reduce_only", _same, _same),
    ("funding", _same, lambda v: FundingState(*v)),
    ("funding_pool", _same, _same),
    ("liquidations", _same, _liquidation),
    ("halts", _same, _same),
    ("delist_votes", _tuple, _same),
    ("delisted", _same, _same),
    ("funding_history", _same, _tuples),
    ("funding_paid", _tuple, _tuples),
    ("closed", _same, _closed),
    ("order_fills", _same, _tuple),
)


def _plain(value: Any) -> Any:
    if isinstance(value, Lock):
        return [value.account, value.token, value.amount, value.until, value.reason]
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def dump_ledger(ledger: Ledger) -> list[Any]:
    """Every table of a ledger with no open undo frame, each as a list of [key, value] sorted by
    key (so the bytes do not depend on the order the tables were filled in)."""
    if ledger._log:
        raise InvalidInput("a ledger with undo frames (a tentative suffix) has no snapshot")
    return [
        [name, sorted([_plain(key), _plain(value)] for key, value in getattr(ledger, name).items())]
        for name, _, _ in TABLES
    ]


def load_ledger(genesis: Genesis, tables: Any) -> Ledger:
    """A ledger with the tables `dump_ledger` wrote (the books rebuilt from the open orders)."""
    ledger = Ledger(genesis)
    if type(tables) is not list or len(tables) != len(TABLES):
        raise InvalidSnapshot("the ledger part of the snapshot has the wrong shape")
    for (name, read_key, read_value), entry in zip(TABLES, tables, strict=True):
        if type(entry) is not list or len(entry) != 2 or entry[0] != name or type(entry[1]) is not list:
            raise InvalidSnapshot(f"the snapshot's table {name} is missing or out of place")
        table = getattr(ledger, name)
        table.clear()  # a new ledger holds the genesis balances, which the snapshot's replace
        for item in entry[1]:
            key, value = item
            table[read_key(key)] = read_value(value)
    keys = ledger._keys
    for name in ("balances", "withdrawn", "held_funds", "debt"):  # the shared key tuples
        table = getattr(ledger, name)
        shared = {key: keys.get(key[0], {}).get(key[1], key) for key in table}
        setattr(ledger, name, {shared[key]: value for key, value in table.items()})
    for order_id, order in ledger.orders.items():
        ledger._sides[(order.market, order.side)][(price_key(order.side, order.price), order.placed)] = order_id
    return ledger


@dataclass(frozen=True, slots=True)
class Certified:
    """A certified operation still in memory when the snapshot was taken."""

    op_id: OpId
    epoch: int
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    state_hash: Hash32
    cuts: tuple[Any, ...]  # crdt.replica.Cut (not imported here: the replica imports this module)
    ledger: Ledger
    certified: tuple[Certified, ...]
    evidence: tuple[Equivocation, ...]
    pruned_outcomes: dict[str, int]


def encode_snapshot(snapshot: Snapshot, channel: bytes) -> bytes:
    """The file's bytes (the ledger must have no undo frames: `Replica.snapshot` unwinds)."""
    encoded: bytes = cbor2.dumps([
        FORMAT, channel, snapshot.version, snapshot.state_hash,
        [[c.version, list(c.heads), c.time, [[d.nonce, d.account, d.token, d.amount, d.block] for d in c.deposits]]
         for c in snapshot.cuts],
        dump_ledger(snapshot.ledger),
        [[c.op_id, c.epoch, None if c.outcome is None else str(c.outcome)] for c in snapshot.certified],
        [[e.first.raw, e.second.raw] for e in snapshot.evidence],
        sorted([str(reason), count] for reason, count in snapshot.pruned_outcomes.items()),
    ])
    return encoded


def decode_snapshot(data: bytes, genesis: Genesis, ctx: Context, make_cut: Callable[..., Any]) -> Snapshot:
    """Read a snapshot of `genesis`'s channel, or raise `InvalidSnapshot` (a file that is not
    one, is damaged, is of another channel, or whose ledger does not have its state hash)."""
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many types for bad input; all mean "not a snapshot"
        raise InvalidSnapshot(f"not a snapshot (CBOR: {exc})") from None
    if type(value) is not list or len(value) != 9 or value[0] != FORMAT:
        raise InvalidSnapshot(f"not a {FORMAT} file")
    _, channel, version, state_hash, cuts, tables, certified, evidence, pruned = value
    if channel != genesis.channel_id:
        raise InvalidSnapshot("the snapshot is of another channel")
    try:
        cut_list = tuple(
            make_cut(v, tuple(OpId(h) for h in heads), t, tuple(Deposit(*d) for d in deposits))
            for v, heads, t, deposits in cuts
        )
        ledger = load_ledger(genesis, tables)
        records = tuple(Certified(OpId(op_id), epoch, outcome) for op_id, epoch, outcome in certified)
        pairs = tuple(Equivocation(_op(a, ctx), _op(b, ctx)) for a, b in evidence)
        counts = {str(reason): int(count) for reason, count in pruned}
    except InvalidSnapshot:
        raise
    except (InvalidInput, TypeError, ValueError, KeyError) as exc:
        raise InvalidSnapshot(f"the snapshot is damaged ({exc})") from None
    if len(cut_list) != version or ledger.version != version:
        raise InvalidSnapshot("the snapshot's version does not match its cuts")
    if ledger.state_hash() != state_hash:
        raise InvalidSnapshot("the snapshot's ledger does not have the state hash it names")
    return Snapshot(version, Hash32(state_hash), cut_list, ledger, records, pairs, counts)


def _op(raw: Any, ctx: Context) -> SignedOp:
    if type(raw) is not bytes:
        raise InvalidSnapshot("evidence is not an operation")
    return decode_op(raw, ctx)

