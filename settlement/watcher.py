"""The chain watcher: the adjudicator's events for one channel, confirmed, durable, reorg-safe.

Invariants:
- the cursor (block number and hash) and the events at or below it are written in one SQLite
  transaction (WAL, ``synchronous=FULL``), so after a crash the store holds either the whole
  poll or none of it, and a restart resumes from the cursor: no event is missed;
- an event is identified by (block hash, log index) and stored at most once (a UNIQUE key), so
  re-reading a range never double-counts;
- only blocks at least `confirmations` below the head are read;
- before reading on, the watcher checks that the newest block it stored is still on the chain.
  If its hash changed (a reorg below the cursor), it walks back through the stored blocks to the
  newest one still on the chain, deletes every event above it, rewinds the cursor there and
  reads again. A log delivered with ``removed: true`` rewinds to just below its block the same
  way. Events deleted by a rewind are reported to the caller as removed;
- every RPC call is retried with exponential backoff (`settlement.chain.retrying`); when the
  node stays unreachable the poll raises `RpcUnavailable` and the store is unchanged.

Deposits come out as `crdt.ledger.Deposit` values in e9, converted from token decimals with the
genesis's token table, in nonce order, each with the hash of its block: exactly what the core
credits at a checkpoint, and what a reorg that gives the nonce to another deposit changes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from web3 import Web3

from crdt.genesis import Genesis
from crdt.ledger import Deposit
from crdt.types import Address, Symbol
from crdt.units import to_e9
from settlement.chain import retrying
from settlement.client import checksum, load_artifact
from settlement.errors import ChainDataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    block_number INTEGER NOT NULL,
    block_hash BLOB
);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    block_number INTEGER NOT NULL,
    block_hash BLOB NOT NULL,
    log_index INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    UNIQUE (block_hash, log_index)
);
CREATE INDEX IF NOT EXISTS events_by_block ON events (block_number);
"""

KEEP_BLOCKS = 512  # cursor hashes kept for reorg detection (blocks with events are kept too)


@dataclass(frozen=True, slots=True)
class ChainEvent:
    id: int
    name: str
    block_number: int
    block_hash: bytes
    log_index: int
    tx_hash: bytes
    args: dict[str, Any]


@dataclass(slots=True)
class PollResult:
    new: list[ChainEvent] = field(default_factory=list)
    removed: list[ChainEvent] = field(default_factory=list)
    cursor: int = -1


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | HexBytes):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


class ChainWatcher:
    def __init__(
        self,
        w3: Web3,
        adjudicator: str,
        channel: bytes,
        db_path: str | Path,
        *,
        confirmations: int = 2,
        start_block: int = 0,
        max_range: int = 2_000,
        attempts: int = 5,
        base_delay: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.w3 = w3
        self.address = checksum(adjudicator)
        self.channel = bytes(channel)
        self.confirmations = confirmations
        self.start_block = start_block
        self.max_range = max_range
        self.attempts = attempts
        self.base_delay = base_delay
        self.sleep = sleep
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact("Adjudicator")["abi"])  # type: ignore[call-overload]
        self._by_topic = {}
        for entry in load_artifact("Adjudicator")["abi"]:
            if entry["type"] == "event":
                types = ",".join(item["type"] for item in entry["inputs"])
                topic = Web3.keccak(text=f"{entry['name']}({types})")
                self._by_topic[bytes(topic)] = entry["name"]
        self.db = sqlite3.connect(str(db_path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._bind()

    def close(self) -> None:
        self.db.close()

    # -- store ------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _bind(self) -> None:
        """Tie the store to one adjudicator and channel; refuse a store of another."""
        wanted = {"adjudicator": self.address.lower(), "channel": "0x" + self.channel.hex()}
        with self._transaction() as db:
            for key, value in wanted.items():
                row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                if row is None:
                    db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                elif row[0] != value:
                    raise ChainDataError(f"the watcher store at hand is for {key} {row[0]}, not {value}")
            if db.execute("SELECT 1 FROM cursor").fetchone() is None:
                db.execute(
                    "INSERT INTO cursor (id, block_number, block_hash) VALUES (1, ?, NULL)",
                    (self.start_block - 1,),
                )

    @property
    def cursor(self) -> int:
        row = self.db.execute("SELECT block_number FROM cursor WHERE id = 1").fetchone()
        return int(row[0])

    def events(self, after_id: int = 0, name: str | None = None) -> list[ChainEvent]:
        """Stored events with id > after_id (optionally of one name), in chain order."""
        query = "SELECT id, name, block_number, block_hash, log_index, tx_hash, args FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if name is not None:
            query += " AND name = ?"
            params.append(name)
        query += " ORDER BY block_number, log_index"
        return [self._row(row) for row in self.db.execute(query, params)]

    @staticmethod
    def _row(row: tuple[Any, ...]) -> ChainEvent:
        return ChainEvent(row[0], row[1], row[2], bytes(row[3]), row[4], bytes(row[5]), json.loads(row[6]))

    def deposits(self, genesis: Genesis) -> list[Deposit]:
        """Confirmed deposits of the channel in nonce order, as the core credits them (e9)."""
        tokens = {token.address: token for token in genesis.tokens}
        found: dict[int, Deposit] = {}
        for event in self.events(name="Deposited"):
            args = event.args
            token = tokens.get(Address(bytes.fromhex(args["token"][2:])))
            if token is None:
                raise ChainDataError(f"a deposit in token {args['token']} that the genesis does not list")
            nonce = int(args["nonce"])
            found[nonce] = Deposit(
                nonce,
                Address(bytes.fromhex(args["account"][2:])),
                Symbol(token.symbol),
                to_e9(int(args["amount"]), token.decimals),
                event.block_hash,
            )
        return [found[nonce] for nonce in sorted(found)]

    # -- polling ----------------------------------------------------------------------------

    def _rpc(self, call: Callable[[], Any], what: str) -> Any:
        return retrying(call, attempts=self.attempts, base_delay=self.base_delay, sleep=self.sleep, what=what)

    def _hash_at(self, number: int) -> bytes | None:
        try:
            block = self._rpc(lambda: self.w3.eth.get_block(number), f"get_block({number})")
        except Exception as exc:
            if type(exc).__name__ == "BlockNotFound":
                return None
            raise
        return bytes(block["hash"])

    def _check_reorg(self) -> list[ChainEvent]:
        """Rewind to the newest stored block still on the chain; return the events dropped."""
        rows = self.db.execute("SELECT number, hash FROM blocks ORDER BY number DESC").fetchall()
        common = self.start_block - 1
        for number, stored in rows:
            if self._hash_at(number) == bytes(stored):
                common = number
                break
        if rows and common == rows[0][0]:
            return []
        if not rows:
            return []
        return self._rewind(common)

    def _rewind(self, common: int) -> list[ChainEvent]:
        with self._transaction() as db:
            dropped = [
                self._row(row)
                for row in db.execute(
                    "SELECT id, name, block_number, block_hash, log_index, tx_hash, args FROM events "
                    "WHERE block_number > ? ORDER BY block_number, log_index",
                    (common,),
                )
            ]
            db.execute("DELETE FROM events WHERE block_number > ?", (common,))
            db.execute("DELETE FROM blocks WHERE number > ?", (common,))
            row = db.execute("SELECT hash FROM blocks WHERE number = ?", (common,)).fetchone()
            db.execute(
                "UPDATE cursor SET block_number = ?, block_hash = ? WHERE id = 1",
                (common, row[0] if row else None),
            )
        return dropped

    def poll(self) -> PollResult:
        """Read every confirmed block past the cursor; see the module docstring."""
        result = PollResult(removed=self._check_reorg())
        head = int(self._rpc(lambda: self.w3.eth.block_number, "block_number"))
        target = head - self.confirmations
        start = self.cursor + 1
        while start <= target:
            end = min(target, start + self.max_range - 1)
            end_hash = self._hash_at(end)
            query: Any = {
                "address": self.address,
                "fromBlock": start,
                "toBlock": end,
                "topics": [None, "0x" + self.channel.hex()],
            }
            logs = self._rpc(partial(self.w3.eth.get_logs, query), "get_logs")
            removed = [log for log in logs if log.get("removed")]
            if removed:
                lowest = min(int(log["blockNumber"]) for log in removed)
                result.removed += self._rewind(lowest - 1)
                break
            if end_hash is None or self._hash_at(end) != end_hash:
                break  # the chain moved under us; the next poll re-checks from the cursor
            result.new += self._store(logs, end, end_hash)
            start = end + 1
        result.cursor = self.cursor
        return result

    def _store(self, logs: list[Any], end: int, end_hash: bytes) -> list[ChainEvent]:
        new = []
        with self._transaction() as db:
            for log in logs:
                topic = bytes(log["topics"][0])
                name = self._by_topic.get(topic)
                if name is None:
                    continue
                decoded = getattr(self.contract.events, name)().process_log(log)
                args = {key: _jsonable(value) for key, value in decoded["args"].items()}
                row = (
                    int(log["blockNumber"]),
                    bytes(log["blockHash"]),
                    int(log["logIndex"]),
                    bytes(log["transactionHash"]),
                    name,
                    json.dumps(args, sort_keys=True),
                )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO events (block_number, block_hash, log_index, tx_hash, name, args) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
                if cursor.rowcount == 1:
                    new.append(ChainEvent(int(cursor.lastrowid or 0), name, row[0], row[1], row[2], row[3], args))
                    db.execute("INSERT OR REPLACE INTO blocks (number, hash) VALUES (?, ?)", (row[0], row[1]))
            db.execute("INSERT OR REPLACE INTO blocks (number, hash) VALUES (?, ?)", (end, end_hash))
            db.execute("UPDATE cursor SET block_number = ?, block_hash = ? WHERE id = 1", (end, end_hash))
            db.execute(
                "DELETE FROM blocks WHERE number < ? AND number NOT IN (SELECT block_number FROM events)",
                (end - KEEP_BLOCKS,),
            )
        return new
