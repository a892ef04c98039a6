"""The store under crashes: a process that dies after any commit of a submit, restarted, and the
client's retry with the same request id.

The crash is simulated at the one point that matters for durability: right after a SQLite
COMMIT returned (what was committed is on disk, nothing after it happened). The store is then
closed without further writes, reopened, the node restored from it, and the request retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from channel.api.server import parse_body
from channel.runtime import keystore
from channel.runtime import node as node_module
from channel.runtime import store as store_module
from channel.runtime.genesis_file import create_genesis_folder, load_genesis
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt.genesis import Genesis, Token

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
    original = node_module.sign_op

    def counting(*args: Any, **kwargs: Any) -> Any:
        signed[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(node_module, "sign_op", counting)
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
