"""The node's durable store: SQLite in WAL mode with ``synchronous=FULL``.

What is written, and when (the write-ahead rule of DESIGN.md):
- every operation that passed decoding and signature checks is appended to ``ops`` before the
  replica sees it; an operation this node signs is appended before it is applied, published or
  acknowledged to the client. A restart feeds the stored operations, in arrival order, to a
  fresh replica, which therefore rebuilds the same state (replay is order independent);
- the node's own highest seq is never stored separately: it is recovered from the stored
  operations, so a crash can never make the node sign a second operation with a used seq
  (that would be equivocation);
- client requests are recorded with their idempotency key in the same transaction as the
  operation they made (`Store.append_ops`), so a retried submit returns the first answer
  instead of signing again, even after a crash right after that commit; with the key goes a
  fingerprint of what was asked, so a key reused for another request is refused;
- decided checkpoints (the value and its quorum of precommits) are stored once the replica has
  certified them, and certificates (threshold EIP-712 signatures) as they form, so a restart
  re-certifies the same cuts in order; each certificate is also a file,
  ``certificates/v<N>.cbor``, for the emergency exit; misbehaviour evidence is kept for the
  contract;
- every consensus proposal and vote this node signs is stored before it is sent, until its
  height is decided, so a restarted node re-sends those instead of signing conflicting ones,
  and keeps the value it locked.

Hostile disks. The store is not trusted blindly:
- opening a file that is not a SQLite database, or one whose pages are damaged, raises
  `StoreDamaged` with the way out (``parley node repair``, or moving the file away to resync
  from peers), never a traceback;
- a write that fails at run time (``database or disk is full``, an I/O error) raises
  `StorageUnavailable` after the transaction is rolled back, so the caller can refuse what
  depended on it; ``max_bytes`` caps the file (SQLite's ``max_page_count``), so an operator can
  bound the disk a node may use, and the same path runs when the disk itself fills up;
- the node checks every stored operation against its id and signature when it restores
  (`channel.runtime.node.Node.restore`), and `repair` drops what fails.

One writer: the store takes an exclusive ``flock`` on ``LOCK`` in its folder (the data
directory) for as long as it is open, with the holder's pid in the file. A second process
gets `DataDirLocked` naming that pid: two nodes sharing one key and one store would sign two
operations with one seq, which is equivocation.

``synchronous=FULL`` makes each commit durable (fsync) when it returns: go-nitro once ran its
store with fsync off. The exceptions are what peers can give back: operations received from
peers, decisions, certificates and evidence are committed with ``synchronous=NORMAL`` (in WAL
mode: durable against a crash of the process, not of the machine), because after a power cut
they are fetched again by sync and catch-up, and fsyncing every gossip batch was most of the
disk contention of a busy node (its own submits waited behind it). The WAL is append-only, so
the next fsync'd commit makes every earlier one durable too.

Two connections, one writer at a time. Every method but one runs on the caller's thread (the
node's trio thread) on the store's main connection; its writes are short and commit without
fsync, but for the node's signing log and meta. The node's own operations are committed by
`append_own_ops` in a worker thread, on a second connection used by nothing else, so the trio
thread goes on (gossip, sync, consensus, the API) while the disk syncs. WAL mode lets the main
connection read meanwhile; a write transaction of either connection holds the store's writer
lock (a `threading.Lock`) from BEGIN to COMMIT, so a write on the trio thread that comes during
an own commit waits for that commit to end (and is woken when it does) instead of failing with
``database is locked``; ``busy_timeout`` stays as a backstop. Both connections get the
``max_bytes`` cap.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from channel.errors import DataDirLocked, StorageUnavailable, StoreDamaged

LOCK_FILE = "LOCK"
CERTIFICATES_DIR = "certificates"  # in the data directory: v<N>.cbor, what `parley exit` reads
Request = tuple[str, bytes, bytes]  # (request id, op id, fingerprint of what the client asked)
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another connection's (SQLite's busy_timeout)
REPAIR_HINT = (
    "run `parley node repair --config <node.toml>` to drop what is damaged (the node then learns it "
    "again from its peers), or move the file away to resync everything from peers"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id BLOB NOT NULL UNIQUE,
    raw BLOB NOT NULL,
    source BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    op_id BLOB NOT NULL,
    fingerprint BLOB
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
CREATE TABLE IF NOT EXISTS archived (
    position INTEGER PRIMARY KEY,  -- the operation's row in ops (so the table grows at its end)
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    height INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS archived_by_author ON archived (author, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    version INTEGER PRIMARY KEY,
    digest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


class DataDirLock:
    """An exclusive flock on ``<folder>/LOCK``, held until `release` (or the process ends)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"the data directory {folder} is in use by process {holder} (another `parley node run`?); "
                "two processes with one key and one store would equivocate"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class Store:
    def __init__(self, path: Path, *, max_bytes: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = DataDirLock(path.parent)
        self._writer = threading.Lock()  # one write transaction at a time, over both connections
        self._own: sqlite3.Connection | None = None
        try:
            self.created = not path.exists() or path.stat().st_size == 0
            self._db = self._connect(max_bytes, schema=True)
            self._fsync = True
            self._own = self._connect(max_bytes)  # `append_own_ops` only, in a worker thread
        except sqlite3.DatabaseError as exc:
            self._close_connections()
            self.lock.release()
            raise StoreDamaged(f"the store {path} cannot be read ({exc}); {REPAIR_HINT}") from exc
        except BaseException:
            self._close_connections()
            self.lock.release()
            raise

    def _connect(self, max_bytes: int | None, *, schema: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        try:
            if schema:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if schema:
                db.executescript(SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
                if "fingerprint" not in columns:  # a store of a node from before request fingerprints
                    db.execute("ALTER TABLE requests ADD COLUMN fingerprint BLOB")
            if max_bytes is not None:
                page = int(db.execute("PRAGMA page_size").fetchone()[0])
                db.execute(f"PRAGMA max_page_count={max(16, max_bytes // page)}")
        except BaseException:
            db.close()
            raise
        return db

    def _close_connections(self) -> None:
        for db in (getattr(self, "_db", None), self._own):
            if db is not None:
                db.close()

    def close(self) -> None:
        with self._writer:  # not in the middle of an own commit
            self._close_connections()
        self.lock.release()

    def damaged(self, what: str, exc: Exception | None = None) -> StoreDamaged:
        detail = f" ({exc})" if exc is not None else ""
        return StoreDamaged(f"the store {self.path}: {what}{detail}; {REPAIR_HINT}")

    def append_ops(
        self,
        ops: Iterable[tuple[bytes, bytes]],
        source: bytes,
        *,
        fsync: bool = True,
        requests: Iterable[Request] = (),
    ) -> int:
        """Append (op_id, raw) pairs not stored yet, and the (request id, op id, fingerprint)
        of the client requests that made them, in one transaction; return how many ops were new.
        With ``fsync=False`` (operations from peers) the commit survives a crash of the
        process but not of the machine; the next fsync'd commit makes it durable too."""
        rows = [(op_id, raw, source) for op_id, raw in ops]
        if not rows:
            return 0
        with self._transaction(fsync) as db:
            return _insert_ops(db, rows, list(requests))

    async def append_own_ops(
        self, ops: Iterable[tuple[bytes, bytes]], source: bytes, *, requests: Iterable[Request] = ()
    ) -> int:
        """`append_ops` with fsync, run in a worker thread on the store's second connection:
        the trio thread runs other tasks while the disk syncs. Returns once the commit is
        durable (or raises `StorageUnavailable`, nothing written); it cannot be cancelled
        half-way: a cancellation waits for the commit to end."""
        rows = [(op_id, raw, source) for op_id, raw in ops]
        if not rows:
            return 0
        import trio  # here: the CLI reads certificate paths from this module without loading trio

        return await trio.to_thread.run_sync(self._append_own, rows, list(requests))

    def _append_own(self, rows: list[tuple[bytes, bytes, bytes]], requests: list[Request]) -> int:
        assert self._own is not None
        with _Transaction(self._own, self.path, self._writer) as db:
            return _insert_ops(db, rows, requests)

    def load_ops(self, *, skip_archived: bool = False) -> Iterator[tuple[int, bytes, bytes]]:
        """Every stored operation as (row position, op id, bytes), in arrival order (but those
        compaction archived, with `skip_archived`: a start from a snapshot)."""
        where = " WHERE position NOT IN (SELECT position FROM archived)" if skip_archived else ""
        try:
            query = f"SELECT position, op_id, raw FROM ops{where} ORDER BY position"
            for position, op_id, raw in self._db.execute(query):
                yield int(position), bytes(op_id), bytes(raw)
        except sqlite3.DatabaseError as exc:
            raise self.damaged("its operations cannot be read", exc) from exc

    def delete_ops(self, positions: Iterable[int]) -> int:
        """Drop operation rows (repair); returns how many went."""
        with self._transaction() as db:
            before = db.total_changes
            db.executemany("DELETE FROM ops WHERE position = ?", [(p,) for p in positions])
            return db.total_changes - before

    def delete_op_ids(self, op_ids: Iterable[bytes]) -> None:
        """Drop operations by id (ones that expired in the pending buffer, never applied)."""
        with self._transaction(fsync=False) as db:
            db.executemany("DELETE FROM ops WHERE op_id = ?", [(op_id,) for op_id in op_ids])

    def delete_rows(self, table: str, key: str, values: Iterable[int]) -> None:
        """Drop rows of a table by an integer key (repair of decisions, certificates, signed)."""
        if (table, key) not in {("decisions", "version"), ("certificates", "version"), ("signed", "position")}:
            raise ValueError(f"no repair for {table}.{key}")
        with self._transaction() as db:
            db.executemany(f"DELETE FROM {table} WHERE {key} = ?", [(v,) for v in values])

    def signed_rows(self) -> list[tuple[int, bytes]]:
        """Every stored signed record as (position, record), for repair."""
        rows = self._query("SELECT position, record FROM signed ORDER BY position")
        return [(int(position), bytes(record)) for position, record in rows]

    def is_empty(self) -> bool:
        """Nothing of a channel is stored (a new store, or one whose file was lost)."""
        query = "SELECT EXISTS(SELECT 1 FROM ops) OR EXISTS(SELECT 1 FROM decisions) OR EXISTS(SELECT 1 FROM signed)"
        return not self._query(query)[0][0]

    def count_ops(self) -> int:
        return int(self._query("SELECT count(*) FROM ops")[0][0])

    def request(self, request_id: str) -> tuple[bytes, bytes | None] | None:
        """The op id a request made, and the fingerprint of what it asked (None for a request
        stored by a node from before fingerprints)."""
        rows = self._query("SELECT op_id, fingerprint FROM requests WHERE request_id = ?", (request_id,))
        if not rows:
            return None
        op_id, fingerprint = rows[0]
        return bytes(op_id), None if fingerprint is None else bytes(fingerprint)

    def put_decision(self, version: int, decision: bytes) -> None:
        """A decided checkpoint (the encoded `Decision`: value and quorum of precommits)."""
        with self._transaction(fsync=False) as db:
            db.execute("INSERT OR REPLACE INTO decisions(version, decision) VALUES (?, ?)", (version, decision))

    def decisions(self) -> list[tuple[int, bytes]]:
        rows = self._query("SELECT version, decision FROM decisions ORDER BY version")
        return [(int(version), bytes(data)) for version, data in rows]

    def checkpoint_records(self, first: int, limit: int) -> list[tuple[int, bytes, bytes | None]]:
        """(version, decision, certificate or None) for up to `limit` decided versions from
        `first` on, in order: what a peer that is behind fetches (`channel.runtime.catchup`)."""
        rows = self._query(
            "SELECT d.version, d.decision, c.certificate FROM decisions d"
            " LEFT JOIN certificates c ON c.version = d.version"
            " WHERE d.version >= ? ORDER BY d.version LIMIT ?",
            (first, limit),
        )
        return [(int(v), bytes(d), None if c is None else bytes(c)) for v, d, c in rows]

    def latest_decision(self) -> int:
        return int(self._query("SELECT coalesce(max(version), 0) FROM decisions")[0][0])

    def uncertified_decisions(self) -> list[tuple[int, bytes]]:
        """Decided versions whose certificate this node has not assembled yet."""
        rows = self._query(
            "SELECT version, decision FROM decisions"
            " WHERE version NOT IN (SELECT version FROM certificates) ORDER BY version"
        )
        return [(int(version), bytes(data)) for version, data in rows]

    def put_certificate(self, version: int, certificate: bytes) -> None:
        """Store a certificate, and write it as ``certificates/v<N>.cbor`` in the data directory,
        where `parley exit --certificate DIR` finds it once every node is gone."""
        with self._transaction(fsync=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO certificates(version, certificate) VALUES (?, ?)", (version, certificate)
            )
        self.write_certificate_file(version, certificate)

    def certificate_path(self, version: int) -> Path:
        return certificate_path(self.path.parent, version)

    def write_certificate_file(self, version: int, certificate: bytes) -> None:
        """Write (atomically: a temporary file renamed over it) one certificate's file; without
        fsync, as its row: after a power cut catch-up fetches it again, and the next start
        writes the file of every stored certificate that has none (`export_certificates`)."""
        path = self.certificate_path(version)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            tmp.write_bytes(certificate)
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write the certificate file {path}: {exc}") from exc

    def export_certificates(self) -> int:
        """Write the files of the stored certificates that have none (a store of an older node,
        or files deleted by hand); returns how many it wrote."""
        written = 0
        for version, data in self.certificates():
            if not self.certificate_path(version).exists():
                self.write_certificate_file(version, data)
                written += 1
        return written

    def certificates(self) -> list[tuple[int, bytes]]:
        rows = self._query("SELECT version, certificate FROM certificates ORDER BY version")
        return [(int(version), bytes(data)) for version, data in rows]

    def certificate_versions(self) -> list[int]:
        return [int(row[0]) for row in self._query("SELECT version FROM certificates ORDER BY version")]

    def certificate(self, version: int) -> bytes | None:
        rows = self._query("SELECT certificate FROM certificates WHERE version = ?", (version,))
        return bytes(rows[0][0]) if rows else None

    def put_signed(self, height: int, record: bytes) -> None:
        """A consensus message this node signed, stored before it is sent (`SigningRecord`)."""
        with self._transaction() as db:
            db.execute("INSERT INTO signed(height, record) VALUES (?, ?)", (height, record))

    def signed(self, lowest: int) -> list[bytes]:
        """The stored signed records of heights `lowest` and above, in signing order."""
        rows = self._query("SELECT record FROM signed WHERE height >= ? ORDER BY position", (lowest,))
        return [bytes(record) for (record,) in rows]

    def forget_signed(self, below: int) -> None:
        """Drop the records of decided heights (below `below`)."""
        with self._transaction(fsync=False) as db:
            db.execute("DELETE FROM signed WHERE height < ?", (below,))

    def put_evidence(self, kind: str, offender: bytes, data: bytes) -> None:
        with self._transaction(fsync=False) as db:
            db.execute("INSERT OR IGNORE INTO evidence(kind, offender, data) VALUES (?, ?, ?)", (kind, offender, data))

    def evidence(self) -> list[tuple[str, bytes, bytes]]:
        rows = self._query("SELECT kind, offender, data FROM evidence ORDER BY kind, offender")
        return [(str(kind), bytes(offender), bytes(data)) for kind, offender, data in rows]

    def get_meta(self, key: str) -> bytes | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: bytes) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- the archive of compacted operations (channel.runtime.archive) ------------------------------

    def put_archived(self, rows: list[tuple[bytes, bytes, int, int, int, str | None]]) -> None:
        """(op id, author, seq, height, epoch, outcome) of operations compaction moved out of
        memory (their bytes stay in ``ops``). Not fsync'd: a restart rebuilds them. Keyed by
        the operation's row in ``ops``, not by its id: ids are random, so a table keyed by them
        took its inserts all over its B-tree, and a busy node's commits slowed as it grew."""
        with self._transaction(fsync=False) as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR REPLACE INTO archived SELECT position, ?, ?, ?, ?, ? FROM ops WHERE op_id = ?",
                [(author, seq, height, epoch, outcome, op_id) for op_id, author, seq, height, epoch, outcome in rows],
            )
            if db.total_changes - before < len(rows):  # rolled back: the replica keeps them in memory
                raise StorageUnavailable("an operation to archive is not in the store")

    def archived(self, op_id: bytes) -> tuple[bytes, int, int, str | None] | None:
        """(bytes, height, epoch, outcome) of an archived operation, or None."""
        rows = self._query(
            "SELECT ops.raw, a.height, a.epoch, a.outcome FROM ops JOIN archived a ON a.position = ops.position "
            "WHERE ops.op_id = ?", (op_id,),
        )
        return (bytes(rows[0][0]), int(rows[0][1]), int(rows[0][2]), rows[0][3]) if rows else None

    def archived_at(self, author: bytes, seq: int) -> list[bytes]:
        rows = self._query(
            "SELECT ops.op_id FROM archived a JOIN ops ON ops.position = a.position WHERE a.author = ? AND a.seq = ? "
            "ORDER BY a.position", (author, seq),
        )
        return [bytes(row[0]) for row in rows]

    def archived_since(self, author: bytes, seq: int) -> list[tuple[bytes, int, int, str | None]]:
        rows = self._query(
            "SELECT ops.raw, a.height, a.epoch, a.outcome FROM archived a JOIN ops ON ops.position = a.position "
            "WHERE a.author = ? AND a.seq > ?", (author, seq),
        )
        return [(bytes(raw), int(height), int(epoch), outcome) for raw, height, epoch, outcome in rows]

    def archived_extent(self) -> tuple[int, dict[bytes, int]]:
        """How many operations are archived, and each author's highest archived seq."""
        rows = self._query("SELECT author, COUNT(*), MAX(seq) FROM archived GROUP BY author")
        return sum(int(row[1]) for row in rows), {bytes(row[0]): int(row[2]) for row in rows}

    def clear_archived(self) -> None:
        with self._transaction(fsync=False) as db:
            db.execute("DELETE FROM archived")

    def unarchive_after(self, version: int) -> None:
        """Forget the archive rows of versions after `version` (a start from the snapshot at
        `version` replays those operations again)."""
        with self._transaction(fsync=False) as db:
            db.execute("DELETE FROM archived WHERE epoch > ?", (version,))

    # -- snapshots (channel.runtime.snapshots: the files are in the data directory) ------------------

    def put_snapshot(self, version: int, digest: bytes) -> None:
        with self._transaction(fsync=False) as db:
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (version, digest))

    def snapshot_versions(self) -> list[int]:
        return [int(row[0]) for row in self._query("SELECT version FROM snapshots ORDER BY version")]

    def snapshot_digest(self, version: int) -> bytes | None:
        rows = self._query("SELECT digest FROM snapshots WHERE version = ?", (version,))
        return bytes(rows[0][0]) if rows else None

    def delete_snapshot(self, version: int) -> None:
        with self._transaction(fsync=False) as db:
            db.execute("DELETE FROM snapshots WHERE version = ?", (version,))

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self.damaged("a read failed", exc) from exc

    def _transaction(self, fsync: bool = True) -> _Transaction:
        if fsync != self._fsync:  # a pragma that cannot change inside a transaction
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._fsync = fsync
        return _Transaction(self._db, self.path, self._writer)


def _insert_ops(
    db: sqlite3.Connection, rows: list[tuple[bytes, bytes, bytes]], requests: list[Request]
) -> int:
    before = db.total_changes
    db.executemany("INSERT OR IGNORE INTO ops(op_id, raw, source) VALUES (?, ?, ?)", rows)
    new = db.total_changes - before
    db.executemany("INSERT OR IGNORE INTO requests(request_id, op_id, fingerprint) VALUES (?, ?, ?)", requests)
    return new


def certificate_path(data_dir: Path, version: int) -> Path:
    return data_dir / CERTIFICATES_DIR / f"v{version}.cbor"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, holding the store's writer lock throughout; any SQLite error
    (a full disk above all) rolls back and becomes `StorageUnavailable`, so nothing is
    half-written and nothing raw escapes."""

    def __init__(self, db: sqlite3.Connection, path: Path, writer: threading.Lock) -> None:
        self.db = db
        self.path = path
        self.writer = writer

    def __enter__(self) -> sqlite3.Connection:
        self.writer.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.writer.release()
            raise self._unavailable(exc) from exc
        except BaseException:
            self.writer.release()
            raise
        return self.db

    def __exit__(self, kind: object, error: object, _traceback: object) -> None:
        try:
            if kind is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.Error as exc:
                    self._rollback()
                    raise self._unavailable(exc) from exc
            self._rollback()
            if isinstance(error, sqlite3.Error):
                raise self._unavailable(error) from error
        finally:
            self.writer.release()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite rolls back by itself when it cannot
                self.db.execute("ROLLBACK")

    def _unavailable(self, exc: sqlite3.Error) -> StorageUnavailable:
        full = "full" in str(exc).lower()
        what = "the disk (or the store's size cap) is full" if full else "the store cannot be written"
        return StorageUnavailable(f"{what}: {exc} ({self.path})")
