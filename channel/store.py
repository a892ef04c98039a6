"""The node's durable store: SQLite in WAL mode with ``synchronous=FULL``.

What is written, and when (the write-ahead rule of DESIGN.md):
- every operation that passed decoding and signature checks is appended to ``ops`` before the
  replica sees it; an operation this node signs is appended before it is applied, published or
  acknowledged to the client. A restart feeds the stored operations, in arrival order, to a
  fresh replica, which therefore rebuilds the same state (replay is order independent);
- the node's own highest seq is never stored separately: it is recovered from the stored
  operations, so a crash can never make the node sign a second operation with a used seq
  (that would be equivocation);
- client requests are recorded with their idempotency key, so a retried submit returns the
  first answer instead of signing again;
- decided checkpoints (the value and its quorum of precommits) are stored once the replica has
  certified them, and certificates (threshold EIP-712 signatures) as they form, so a restart
  re-certifies the same cuts in order; misbehaviour evidence is kept for the contract;
- every consensus proposal and vote this node signs is stored before it is sent, until its
  height is decided, so a restarted node re-sends those instead of signing conflicting ones,
  and keeps the value it locked.

``synchronous=FULL`` makes each commit durable (fsync) when it returns: go-nitro once ran its
store with fsync off. The exceptions are what peers can give back: operations received from
peers, decisions, certificates and evidence are committed with ``synchronous=NORMAL`` (in WAL
mode: durable against a crash of the process, not of the machine), because after a power cut
they are fetched again by sync and catch-up, and fsyncing every gossip batch was most of the
disk contention of a busy node (its own submits waited behind it). The WAL is append-only, so
the next fsync'd commit makes every earlier one durable too. The store is used from one writer
at a time (the node's trio task); calls are short and the caller may run them in a worker
thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id BLOB NOT NULL UNIQUE,
    raw BLOB NOT NULL,
    source BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    op_id BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    version INTEGER PRIMARY KEY,
    decision BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    version INTEGER PRIMARY KEY,
    certificate BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    kind TEXT NOT NULL,
    offender BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (kind, offender, data)
);
CREATE TABLE IF NOT EXISTS signed (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    height INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._fsync = True
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def append_ops(self, ops: Iterable[tuple[bytes, bytes]], source: bytes, *, fsync: bool = True) -> int:
        """Append (op_id, raw) pairs not stored yet; return how many were new. With
        ``fsync=False`` (operations from peers) the commit survives a crash of the process but
        not of the machine; the next fsync'd commit makes it durable too."""
        rows = [(op_id, raw, source) for op_id, raw in ops]
        if not rows:
            return 0
        with self._transaction(fsync) as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO ops(op_id, raw, source) VALUES (?, ?, ?)", rows)
            return db.total_changes - before

    def load_ops(self) -> Iterator[bytes]:
        """Every stored operation's bytes, in arrival order."""
        for (raw,) in self._db.execute("SELECT raw FROM ops ORDER BY position"):
            yield bytes(raw)

    def count_ops(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM ops").fetchone()[0])

    def record_request(self, request_id: str, op_id: bytes) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO requests(request_id, op_id) VALUES (?, ?)", (request_id, op_id))

    def request(self, request_id: str) -> bytes | None:
        row = self._db.execute("SELECT op_id FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_decision(self, version: int, decision: bytes) -> None:
        """A decided checkpoint (the encoded `Decision`: value and quorum of precommits)."""
        with self._transaction(fsync=False) as db:
            db.execute("INSERT OR REPLACE INTO decisions(version, decision) VALUES (?, ?)", (version, decision))

    def decisions(self) -> list[tuple[int, bytes]]:
        rows = self._db.execute("SELECT version, decision FROM decisions ORDER BY version")
        return [(int(version), bytes(data)) for version, data in rows]

    def checkpoint_records(self, first: int, limit: int) -> list[tuple[int, bytes, bytes | None]]:
        """(version, decision, certificate or None) for up to `limit` decided versions from
        `first` on, in order: what a peer that is behind fetches (`channel.catchup`)."""
        rows = self._db.execute(
            "SELECT d.version, d.decision, c.certificate FROM decisions d"
            " LEFT JOIN certificates c ON c.version = d.version"
            " WHERE d.version >= ? ORDER BY d.version LIMIT ?",
            (first, limit),
        )
        return [(int(v), bytes(d), None if c is None else bytes(c)) for v, d, c in rows]

    def latest_decision(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(version), 0) FROM decisions").fetchone()[0])

    def uncertified_decisions(self) -> list[tuple[int, bytes]]:
        """Decided versions whose certificate this node has not assembled yet."""
        rows = self._db.execute(
            "SELECT version, decision FROM decisions"
            " WHERE version NOT IN (SELECT version FROM certificates) ORDER BY version"
        )
        return [(int(version), bytes(data)) for version, data in rows]

    def put_certificate(self, version: int, certificate: bytes) -> None:
        with self._transaction(fsync=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO certificates(version, certificate) VALUES (?, ?)", (version, certificate)
            )

    def certificates(self) -> list[tuple[int, bytes]]:
        rows = self._db.execute("SELECT version, certificate FROM certificates ORDER BY version")
        return [(int(version), bytes(data)) for version, data in rows]

    def put_signed(self, height: int, record: bytes) -> None:
        """A consensus message this node signed, stored before it is sent (`Signed`)."""
        with self._transaction() as db:
            db.execute("INSERT INTO signed(height, record) VALUES (?, ?)", (height, record))

    def signed(self, lowest: int) -> list[bytes]:
        """The stored signed records of heights `lowest` and above, in signing order."""
        rows = self._db.execute("SELECT record FROM signed WHERE height >= ? ORDER BY position", (lowest,))
        return [bytes(record) for (record,) in rows]

    def forget_signed(self, below: int) -> None:
        """Drop the records of decided heights (below `below`)."""
        with self._transaction(fsync=False) as db:
            db.execute("DELETE FROM signed WHERE height < ?", (below,))

    def put_evidence(self, kind: str, offender: bytes, data: bytes) -> None:
        with self._transaction(fsync=False) as db:
            db.execute("INSERT OR IGNORE INTO evidence(kind, offender, data) VALUES (?, ?, ?)", (kind, offender, data))

    def evidence(self) -> list[tuple[str, bytes, bytes]]:
        rows = self._db.execute("SELECT kind, offender, data FROM evidence ORDER BY kind, offender")
        return [(str(kind), bytes(offender), bytes(data)) for kind, offender, data in rows]

    def get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _transaction(self, fsync: bool = True) -> _Transaction:
        if fsync != self._fsync:  # a pragma that cannot change inside a transaction
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._fsync = fsync
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
