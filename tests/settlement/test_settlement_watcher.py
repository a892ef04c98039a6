"""The chain watcher on both backends: confirmations, restart, reorg, RPC failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from web3.datastructures import AttributeDict

from crdt.ledger import Deposit
from crdt.types import Symbol
from settlement.chain import RpcChain, free_port
from settlement.errors import RpcUnavailable
from settlement.watcher import ChainWatcher
from tests.settlement.settlement_kit import E9, World


def watcher(world: World, db: Path, confirmations: int = 0) -> ChainWatcher:
    return ChainWatcher(
        world.chain.w3, world.adjudicator.address, world.channel, db, confirmations=confirmations, base_delay=0
    )


def test_reads_deposits_after_confirmations(world: World, tmp_path: Path) -> None:
    w = watcher(world, tmp_path / "w.sqlite", confirmations=2)
    first = world.deposit(0, 3 * E9)
    assert [e.name for e in w.poll().new] == ["ChannelOpened"]  # the deposit is not confirmed yet
    world.chain.mine(2)
    result = w.poll()
    assert [e.name for e in result.new] == ["Deposited"]
    assert w.deposits(world.genesis) == [first]
    assert first == Deposit(1, world.address(0), Symbol("USDC"), 3 * E9, world.deposit_block(1))
    assert w.poll().new == []  # nothing twice


def test_restart_neither_misses_nor_double_counts(world: World, tmp_path: Path) -> None:
    db = tmp_path / "w.sqlite"
    w = watcher(world, db)
    world.deposit(0, E9)
    assert [e.name for e in w.poll().new] == ["ChannelOpened", "Deposited"]
    cursor = w.cursor
    w.close()
    world.deposit(1, 2 * E9)
    world.deposit(2, 3 * E9)
    again = watcher(world, db)
    assert again.cursor == cursor
    result = again.poll()
    assert [e.args["nonce"] for e in result.new] == [2, 3]
    assert [d.nonce for d in again.deposits(world.genesis)] == [1, 2, 3]
    assert again.poll().new == []
    again.close()
    with pytest.raises(Exception, match="channel"):
        ChainWatcher(world.chain.w3, world.adjudicator.address, b"\x01" * 32, db)


def test_survives_a_reorg(world: World, tmp_path: Path) -> None:
    w = watcher(world, tmp_path / "w.sqlite")
    world.deposit(0, E9)
    w.poll()
    snapshot = world.chain.snapshot()
    orphan = world.deposit(1, 5 * E9)
    world.chain.mine(1)
    assert [e.args["amount"] for e in w.poll().new] == [5_000_000]
    world.chain.revert(snapshot)  # the block with deposit 2 is gone
    world.deposits.remove(orphan)
    replacement = world.deposit(2, 7 * E9)
    world.chain.mine(3)  # the new branch is longer
    result = w.poll()
    assert [e.args["amount"] for e in result.removed] == [5_000_000]
    assert [e.args["amount"] for e in result.new] == [7_000_000]
    assert w.deposits(world.genesis)[1] == replacement
    assert [d.amount for d in w.deposits(world.genesis)] == [E9, 7 * E9]
    assert w.poll().new == []


def test_rpc_failures_back_off_then_raise(world: World, tmp_path: Path) -> None:
    dead = RpcChain(f"http://127.0.0.1:{free_port()}", timeout=1)
    delays: list[float] = []
    w = ChainWatcher(
        dead.w3, world.adjudicator.address, world.channel, tmp_path / "w.sqlite",
        attempts=4, base_delay=0.5, sleep=delays.append,
    )
    with pytest.raises(RpcUnavailable, match="4 times"):
        w.poll()
    assert delays == [0.5, 1.0, 2.0]
    assert w.cursor == -1


def test_a_log_delivered_as_removed_rewinds_and_rereads(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eth_getLogs never returns ``removed`` logs on these chains, but a provider that does must
    not be trusted past it: the watcher drops what it stored from that block on, reports it as
    removed, and reads it again if it is still on the chain."""
    w = watcher(world, tmp_path / "w.sqlite")
    world.deposit(0, 3 * E9)
    first = w.poll().new
    deposit = next(e for e in first if e.name == "Deposited")
    real_get_logs = world.chain.w3.eth.get_logs
    stored_log = next(log for log in real_get_logs({"address": world.adjudicator.address, "fromBlock": 0})
                      if int(log["blockNumber"]) == deposit.block_number)
    calls = 0

    def get_logs(query: Any) -> list[Any]:
        nonlocal calls
        calls += 1
        logs = list(real_get_logs(query))
        return [*logs, AttributeDict({**stored_log, "removed": True})] if calls == 1 else logs

    monkeypatch.setattr(world.chain.w3.eth, "get_logs", get_logs)
    world.chain.mine(1)
    result = w.poll()
    assert [(e.name, e.block_number) for e in result.removed] == [("Deposited", deposit.block_number)]
    assert w.cursor == deposit.block_number - 1
    again = w.poll()  # the block is still on the chain: the deposit is read again, once
    assert [e.args["nonce"] for e in again.new if e.name == "Deposited"] == [1]
    assert [d.nonce for d in w.deposits(world.genesis)] == [1]
