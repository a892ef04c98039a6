"""The store under crashes: a process that dies after any commit of a submit, restarted, and the
client's retry with the same request id.

The crash is simulated at the one point that matters for durability: right after a SQLite
COMMIT returned (what was committed is on disk, nothing after it happened). The store is then
closed without further writes, reopened, the node restored from it, and the request retried.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from channel.api.server import parse_body
from channel.errors import StorageUnavailable
from channel.runtime import keystore
from channel.runtime import node as node_module
from channel.runtime import store as store_module
from channel.runtime.genesis_file import create_genesis_folder, load_genesis
from channel.runtime.node import Node, request_fingerprint
from channel.runtime.store import Store
from crdt.genesis import Genesis, Token
from crdt.ops import decode_op

PASSWORD = "pw"
E9 = 10**9


class Crash(BaseException):
    """The process died here (a BaseException, so no `except Exception` of the node stops it)."""


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Genesis, keystore.Key]:
    folder = tmp_path_factory.mktemp("store-channel")
    usdc = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]
    create_genesis_folder(folder, 2, password=PASSWORD, tokens=[usdc], initial=100 * E9, light_kdf=True)
    genesis = load_genesis(folder / "genesis.toml")
    address = genesis.participants[0].address
    return genesis, keystore.load(keystore.find(folder / "keys", address), PASSWORD)


def crash_after_commit(monkeypatch: pytest.MonkeyPatch, which: int) -> list[int]:
    """Make the `which`-th successful COMMIT (1-based) from now raise `Crash` once it returned;
    the returned list counts the commits seen."""
    commits = [0]
    original = store_module._Transaction.__exit__

    def exit_then_crash(self: Any, kind: object, error: object, traceback: object) -> None:
        original(self, kind, error, traceback)
        if kind is None:
            commits[0] += 1
            if commits[0] == which:
                raise Crash(f"died after commit {which}")

    monkeypatch.setattr(store_module._Transaction, "__exit__", exit_then_crash)
    return commits


def count_signatures(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    signed = [0]
    original = node_module.sign

    def counting(*args: Any, **kwargs: Any) -> Any:
        signed[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(node_module, "sign", counting)
    return signed


def submit(genesis: Genesis, key: keystore.Key, store: Store, request_id: str) -> dict[str, Any]:
    body = parse_body("transfer", {"to": "0x" + genesis.participants[1].address.hex(), "token": "USDC", "amount": "7"})

    async def main() -> dict[str, Any]:
        node = Node.restore(genesis, key, store, fresh_channel=True)
        return await node.submit("transfer", body, request_id)

    return trio.run(main)


def open_store(genesis: Genesis, key: keystore.Key, path: Path) -> Store:
    """A store whose node was restored once (so the signer state is written already, and the
    commits counted from then on are those of the submit alone)."""
    store = Store(path)
    Node.restore(genesis, key, store, fresh_channel=True)
    return store


def commits_of_one_submit(genesis: Genesis, key: keystore.Key, path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    store = open_store(genesis, key, path)
    try:
        with monkeypatch.context() as patch:
            commits = crash_after_commit(patch, which=0)  # never crashes: counts
            submit(genesis, key, store, "count")
    finally:
        store.close()
    return commits[0]


def test_a_retry_after_a_crash_after_any_commit_of_a_submit_signs_nothing_new(
    channel: tuple[Genesis, keystore.Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operation and its request id are one transaction: whichever commit of the submit the
    process dies after, the retry either finds nothing stored (and signs seq 1) or finds both
    (and returns the first op id, signing nothing). With the request id committed after the
    operation, a crash between the two made the retry sign a second transfer, with seq 2."""
    genesis, key = channel
    commits = commits_of_one_submit(genesis, key, tmp_path / "count.sqlite", monkeypatch)
    assert commits >= 1
    for crash_at in range(1, commits + 1):
        path = tmp_path / f"crash-{crash_at}.sqlite"
        store = open_store(genesis, key, path)
        try:
            with monkeypatch.context() as patch:
                crash_after_commit(patch, crash_at)
                with pytest.raises(Crash):
                    submit(genesis, key, store, "order-1")
        finally:
            store.close()  # the process is gone; what was committed stays

        store = Store(path)
        try:
            stored_before = [op_id for _, op_id, _ in store.load_ops()]
            with monkeypatch.context() as patch:
                signed = count_signatures(patch)
                receipt = submit(genesis, key, store, "order-1")
            stored_after = [op_id for _, op_id, _ in store.load_ops()]
            again = submit(genesis, key, store, "order-1")
        finally:
            store.close()
        assert len(stored_after) == 1, f"after a crash after commit {crash_at}, the retry signed a second operation"
        assert receipt["op_id"] == "0x" + stored_after[0].hex()
        assert receipt["seq"] == 1
        assert again == receipt
        if stored_before:  # the operation survived the crash: the retry must not sign at all
            assert stored_before == stored_after
            assert signed[0] == 0
        else:
            assert signed[0] == 1


# -- the node's own commit, off the trio thread ------------------------------------------------------


def transfer_body(genesis: Genesis) -> dict[str, Any]:
    return parse_body("transfer", {"to": "0x" + genesis.participants[1].address.hex(), "token": "USDC", "amount": "1"})


class SlowCommit:
    """Every successful COMMIT, once `armed`, waits (in whatever thread runs it) until the
    trio loop has shown `ticks_wanted` ticks of another task, or gives up after `patience`
    seconds (so a commit on the trio thread, which blocks those ticks, cannot hang the test).
    `progressed` records, per commit, whether the other task ticked while it waited."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ticks_wanted: int = 3, patience: float = 2.0) -> None:
        self.armed = False
        self.began = threading.Event()
        self.ticked = threading.Event()
        self.ticks_wanted = ticks_wanted
        self.progressed: list[bool] = []
        self.threads: list[threading.Thread] = []
        original = store_module._Transaction.__exit__

        def slow_exit(transaction: Any, kind: object, error: object, traceback: object) -> None:
            if kind is None and self.armed:
                self.threads.append(threading.current_thread())
                self.began.set()
                self.progressed.append(self.ticked.wait(patience))
            original(transaction, kind, error, traceback)

        monkeypatch.setattr(store_module._Transaction, "__exit__", slow_exit)

    async def tick_during_commits(self, node: Node, ticks: list[int]) -> None:
        """Another task of the node: it reads the store and the replica, and counts its turns
        while a commit is under way."""
        while True:
            await trio.lowlevel.checkpoint()
            if self.began.is_set():
                node.store.count_ops()  # a read on the trio thread's connection, during the write
                node.stats()
                ticks[0] += 1
                if ticks[0] >= self.ticks_wanted:
                    self.ticked.set()


def test_a_slow_commit_of_a_submit_lets_the_other_tasks_of_the_node_run(
    channel: tuple[Genesis, keystore.Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the disk syncs the submit's commit, the rest of the node (here a task that reads the
    store and the replica) keeps running; the operation is applied only once the commit returned.
    With the commit on the trio thread, the other task made no progress until it was over."""
    genesis, key = channel
    store = open_store(genesis, key, tmp_path / "slow.sqlite")
    slow = SlowCommit(monkeypatch)
    ticks = [0]

    async def main() -> dict[str, Any]:
        node = Node.restore(genesis, key, store, fresh_channel=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow.tick_during_commits, node, ticks)
            slow.armed = True
            receipt = await node.submit("transfer", transfer_body(genesis), "slow-1")
            slow.armed = False
            nursery.cancel_scope.cancel()
        assert receipt["seq"] == 1
        assert len(node.replica.graph) == 1
        return receipt

    try:
        receipt = trio.run(main)
        assert [op_id for _, op_id, _ in store.load_ops()] == [bytes.fromhex(receipt["op_id"][2:])]
        assert store.request("slow-1") == (bytes.fromhex(receipt["op_id"][2:]), request_fingerprint(
            "transfer", transfer_body(genesis)))
    finally:
        store.close()
    assert slow.progressed == [True], "the other task did not run while the submit's commit was under way"
    assert ticks[0] >= slow.ticks_wanted
    assert all(thread is not threading.main_thread() for thread in slow.threads)


def test_a_submit_commits_once_and_its_operation_is_not_stored_again_when_applied(
    channel: tuple[Genesis, keystore.Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-ahead hook sees an operation the submit has already made durable: it writes
    nothing more (no second fsync'd commit on the trio thread)."""
    genesis, key = channel
    path = tmp_path / "once.sqlite"
    assert commits_of_one_submit(genesis, key, path, monkeypatch) == 1
    store = Store(path)
    try:
        assert store.count_ops() == 1
        assert store.request("count") is not None
    finally:
        store.close()


def test_a_submit_cancelled_while_its_commit_runs_is_applied_and_the_next_takes_the_next_seq(
    channel: tuple[Genesis, keystore.Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the commit of a signed operation has begun it is finished and the operation
    applied, even if the client gives up meanwhile: a durable operation the replica did not
    hold would give its seq to the next submit, and the node would have signed two
    operations with one seq (equivocation, stored for good)."""
    genesis, key = channel
    store = open_store(genesis, key, tmp_path / "cancel.sqlite")
    slow = SlowCommit(monkeypatch)
    ticks = [0]

    async def main() -> tuple[Node, dict[str, Any]]:
        node = Node.restore(genesis, key, store, fresh_channel=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow.tick_during_commits, node, ticks)
            with trio.CancelScope() as scope:
                slow.armed = True

                async def cancel_once_committing() -> None:
                    while not slow.began.is_set():  # a threading.Event, set by the commit
                        await trio.lowlevel.checkpoint()
                    scope.cancel()

                nursery.start_soon(cancel_once_committing)
                await node.submit("transfer", transfer_body(genesis), "cancelled")
            slow.armed = False
            nursery.cancel_scope.cancel()
        other = {**transfer_body(genesis), "amount": 2}  # another operation, were its seq taken again
        second = await node.submit("transfer", other, "after")
        return node, second

    try:
        node, second = trio.run(main)
        stored = [decode_op(raw, node.replica.ctx) for _, _, raw in store.load_ops()]
    finally:
        store.close()
    assert slow.progressed == [True]
    assert sorted(op.seq for op in stored) == [1, 2]
    assert {op.op_id for op in stored} == set(node.replica.graph.ops)
    assert second["seq"] == 2


def test_two_concurrent_submits_get_consecutive_seqs(
    channel: tuple[Genesis, keystore.Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit lock is held across the off-loop commit: a second submit that arrives while
    the first one's disk syncs waits, then signs the next seq on top of the first."""
    genesis, key = channel
    store = open_store(genesis, key, tmp_path / "two.sqlite")
    slow = SlowCommit(monkeypatch)
    ticks = [0]
    receipts: dict[str, dict[str, Any]] = {}

    async def main() -> Node:
        node = Node.restore(genesis, key, store, fresh_channel=True)
        body = transfer_body(genesis)

        async def one(request_id: str) -> None:
            receipts[request_id] = await node.submit("transfer", body, request_id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow.tick_during_commits, node, ticks)
            slow.armed = True
            async with trio.open_nursery() as clients:
                clients.start_soon(one, "a")
                clients.start_soon(one, "b")
            nursery.cancel_scope.cancel()
        return node

    try:
        node = trio.run(main)
        stored = [decode_op(raw, node.replica.ctx) for _, _, raw in store.load_ops()]
        requests = {request_id: (store.request(request_id) or (None, None))[0] for request_id in "ab"}
    finally:
        store.close()
    assert sorted(receipt["seq"] for receipt in receipts.values()) == [1, 2]
    first, second = sorted(stored, key=lambda op: op.seq)
    assert [op.seq for op in (first, second)] == [1, 2]
    assert first.op_id in second.parents
    assert {request_id: "0x" + op_id.hex() for request_id, op_id in requests.items() if op_id} == {
        request_id: receipt["op_id"] for request_id, receipt in receipts.items()
    }


def test_a_failed_off_loop_commit_signs_nothing_that_stays_and_the_node_goes_on(
    channel: tuple[Genesis, keystore.Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full when the submit's commit runs: the client gets `StorageUnavailable`,
    nothing is stored, applied or consumed, the node keeps answering reads and refuses
    submits until a probe write works, and then signs seq 1 for the retried request."""
    genesis, key = channel
    store = open_store(genesis, key, tmp_path / "full.sqlite")
    failures = [1]
    failed_in: list[threading.Thread] = []
    original = store_module._Transaction.__exit__

    def full_once(transaction: Any, kind: object, error: object, traceback: object) -> None:
        if kind is None and failures[0]:
            failures[0] -= 1
            failed_in.append(threading.current_thread())
            kind, error = sqlite3.OperationalError, sqlite3.OperationalError("database or disk is full")
        original(transaction, kind, error, traceback)

    monkeypatch.setattr(store_module._Transaction, "__exit__", full_once)

    async def main() -> dict[str, Any]:
        node = Node.restore(genesis, key, store, fresh_channel=True)
        with pytest.raises(StorageUnavailable, match="full"):
            await node.submit("transfer", transfer_body(genesis), "full-1")
        assert node.storage_error is not None
        assert "full" in node.storage_error
        assert len(node.replica.graph) == 0
        assert store.request("full-1") is None
        assert node.stats()["storage_error"] == node.storage_error  # reads are served
        with pytest.raises(StorageUnavailable):
            await node.submit("transfer", transfer_body(genesis), "full-1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.watch_storage, 0.01)
            while node.storage_error is not None:  # noqa: ASYNC110 (the node announces no event)
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return await node.submit("transfer", transfer_body(genesis), "full-1")

    try:
        receipt = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        assert store.count_ops() == 1
        assert store.request("full-1") == (bytes.fromhex(receipt["op_id"][2:]), request_fingerprint(
            "transfer", transfer_body(genesis)))
    finally:
        store.close()
    assert receipt["seq"] == 1
    assert failed_in
    assert failed_in[0] is not threading.main_thread()


def test_the_size_cap_holds_for_the_off_loop_commits(
    channel: tuple[Genesis, keystore.Key], tmp_path: Path
) -> None:
    """`max_bytes` caps what the node's own submits write too: they fail with
    `StorageUnavailable` once the file is full, and what is stored is what was applied."""
    genesis, key = channel
    path = tmp_path / "capped.sqlite"
    open_store(genesis, key, path).close()
    store = Store(path, max_bytes=64 * 1024)

    async def main() -> tuple[Node, int]:
        node = Node.restore(genesis, key, store)
        for accepted in range(2000):
            try:
                await node.submit("transfer", transfer_body(genesis), f"capped-{accepted}")
            except StorageUnavailable:
                return node, accepted
        raise AssertionError("2000 submits fitted in a 64 KiB store")

    try:
        node, accepted = trio.run(main)
        stored = {op_id for _, op_id, _ in store.load_ops()}
    finally:
        store.close()
    assert accepted > 0
    assert node.storage_error is not None
    assert stored == set(node.replica.graph.ops)
    assert len(stored) == accepted


def test_a_store_from_before_request_fingerprints_gains_the_column_and_keeps_its_requests(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE requests (request_id TEXT PRIMARY KEY, op_id BLOB NOT NULL)")
    db.execute("INSERT INTO requests VALUES ('old', ?)", (b"\x01" * 32,))
    db.commit()
    db.close()
    store = Store(path)
    try:
        assert store.request("old") == (b"\x01" * 32, None)  # no fingerprint: a retry is not checked
        store.append_ops([(b"\x02" * 32, b"raw")], b"local", requests=[("new", b"\x02" * 32, b"\x03" * 32)])
        assert store.request("new") == (b"\x02" * 32, b"\x03" * 32)
    finally:
        store.close()
