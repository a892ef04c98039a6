"""Does the fsync'd commit of a submit, run on the trio thread, hurt? Commit on the loop versus
off it, side by side in one run.

    python benchmarks/fsync.py [--submits N] [--rounds R] [--dir PATH]

One node without a network (its own SQLite store on the disk under ``--dir``, WAL,
``synchronous=FULL`` for its own operations), one client task submitting transfers one after
the other, and beside it a probe task that sleeps 1 ms at a time and records how late it wakes:
what every other task of the node (gossip, sync, consensus, the API) would wait while the loop is
blocked. Three modes:
- ``node``: `Node.submit` as it is (for reference: it also does the node's bookkeeping);
- ``loop``: the steps of a submit (sign, dry run, commit, apply), the write-ahead commit
  (`Store.append_ops`, fsync) on the trio thread, as `Node.submit` does it;
- ``thread``: the same steps, but the commit runs in a worker
  thread (`trio.to_thread.run_sync`, one thread at a time through a `CapacityLimiter(1)`, the
  node's submit lock held, so the connection is used by one thread at a time and nothing is
  applied or answered before its commit returned).
``loop`` and ``thread`` run the same code but for where the commit runs. The rounds alternate
the modes, so the disk's and the machine's noise falls on both.

Prints JSON lines ``fsync_submit`` (mode, p50/p99 of the submit latency) and ``fsync_loop_lag``
(mode, p50/p99 and max of the probe's lateness), then ``fsync_summary``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, percentiles
from channel.runtime import keystore
from channel.runtime.genesis_file import create_genesis_folder, load_genesis
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt.genesis import Token
from crdt.ops import sign_op

PASSWORD = "bench"
MODES = ("node", "loop", "thread")


async def submit_steps(node: Node, body: dict[str, Any], limiter: trio.CapacityLimiter | None) -> None:
    """`Node.submit`'s steps (sign, dry run, commit, apply), the write-ahead commit on the trio
    thread (`limiter` None) or in a worker thread."""
    async with node._lock:
        op = sign_op(node.replica.ctx, node.key.private_key, node.next_seq(), node.parents(), "transfer", body)
        assert node.replica.dry_run(op) is None
        pairs = [(op.op_id, op.raw)]
        if limiter is None:
            node.store.append_ops(pairs, b"local", fsync=True)
        else:
            await trio.to_thread.run_sync(lambda: node.store.append_ops(pairs, b"local", fsync=True), limiter=limiter)
        node.after_apply(node.replica.receive_many([op]).accepted)


async def measure(node: Node, body: dict[str, Any], mode: str, submits: int) -> tuple[list[float], list[float]]:
    latencies: list[float] = []
    lags: list[float] = []
    limiter = trio.CapacityLimiter(1)
    done = trio.Event()

    async def probe() -> None:
        while not done.is_set():
            began = time.perf_counter()
            await trio.sleep(0.001)
            lags.append(time.perf_counter() - began - 0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.sleep(0.01)
        for _ in range(submits):
            began = time.perf_counter()
            if mode == "node":
                await node.submit("transfer", body)
            else:
                await submit_steps(node, body, None if mode == "loop" else limiter)
            latencies.append(time.perf_counter() - began)
            await trio.sleep(0.002)  # a client's think time: the probe runs between submits too
        done.set()
    return latencies, lags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submits", type=int, default=200, help="submits per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per mode (alternating)")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the store goes (a real disk)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="fsync-bench-") as folder:
        root = Path(folder)
        usdc = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]
        create_genesis_folder(root / "channel", 2, password=PASSWORD, tokens=[usdc], initial=10**18, light_kdf=True)
        genesis = load_genesis(root / "channel" / "genesis.toml")
        address = genesis.participants[0].address
        key = keystore.load(keystore.find(root / "channel" / "keys", address), PASSWORD)
        body = {"to": genesis.participants[1].address, "token": "USDC", "amount": 1}
        results: dict[str, tuple[list[float], list[float]]] = {mode: ([], []) for mode in MODES}

        async def run() -> None:
            store = Store(root / "node" / "node.sqlite")
            try:
                node = Node.restore(genesis, key, store, fresh_channel=True)
                for _ in range(args.rounds):
                    for mode in MODES:
                        latencies, lags = await measure(node, body, mode, args.submits)
                        results[mode][0].extend(latencies)
                        results[mode][1].extend(lags)
            finally:
                store.close()

        trio.run(run)
    summary: dict[str, Any] = {}
    for mode, (latencies, lags) in results.items():
        submit = percentiles(latencies)
        lag = {**percentiles(lags), "max_ms": round(max(lags) * 1e3, 3)}
        emit(bench="fsync_submit", mode=mode, submits=len(latencies), **submit)
        emit(bench="fsync_loop_lag", mode=mode, samples=len(lags), **lag)
        summary[mode] = {"submit": submit, "loop_lag": lag}
    emit(bench="fsync_summary", **summary)


if __name__ == "__main__":
    main()
