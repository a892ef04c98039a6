"""Does the fsync'd commit of a submit, run on the trio thread, hurt? Commit on the loop versus
off it, side by side in one run.

    python benchmarks/fsync.py [--submits N] [--rounds R] [--dir PATH] [--gossip OPS_PER_S]

One node (its own SQLite store on the disk under ``--dir``, WAL, ``synchronous=FULL`` for its
own operations), one client task submitting transfers one after the other, and beside it a
probe task that sleeps 1 ms at a time and records how late it wakes: what every other task of
the node (gossip, sync, consensus, the API) would wait while the loop is blocked. With
``--gossip R`` the node also runs its peer over the in-memory transport (`p2p.memory`), and a
second participant's peer (no store) signs and gossips R transfers a second to it, which the
node ingests and stores (committed without fsync, on the trio thread) meanwhile. Four modes:
- ``node-loop``: `Node.submit` with its commit on the trio thread, in the write-ahead hook
  (``Node.commit_off_loop = False``: the node before the commit moved off the loop);
- ``node-thread``: `Node.submit` as it is: the commit in a worker thread on the store's second
  connection (`Store.append_own_ops`), the operation applied and published once it returned;
- ``loop``: the bare steps of a submit (sign, dry run, commit, apply), the write-ahead commit
  (`Store.append_ops`, fsync) on the trio thread;
- ``thread``: the same steps, but the commit runs in a worker thread on the store's second
  connection (`Store.append_own_ops`, the node's submit lock held; nothing is applied before its
  commit returned). An earlier version ran `Store.append_ops` in the worker thread on the
  store's one connection: with ``--gossip`` the trio thread's ingest then wrote on that
  connection in the middle of the thread's transaction (SQLite: "Safety level may not be
  changed inside a transaction"), which is why the node has a connection for its own commits.
``loop`` and ``thread`` run the same code but for where the commit runs, and so do the two
``node-`` modes. The rounds alternate the modes, so the disk's and the machine's noise falls on
all of them.

Prints JSON lines ``fsync_submit`` (mode, p50/p99/max of the submit latency) and
``fsync_loop_lag`` (mode, p50/p99 and max of the probe's lateness), then ``fsync_summary`` (with
how many gossiped operations the node received).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, percentiles
from channel.runtime import keystore
from channel.runtime.genesis_file import create_genesis_folder, load_genesis
from channel.runtime.node import MAX_PARENTS, Node, open_node
from channel.runtime.store import Store
from crdt.genesis import Genesis, Token
from crdt.ops import sign_op
from crdt.replica import Replica
from p2p.memory import MemoryNetwork
from p2p.peer import Peer, open_peer

PASSWORD = "bench"
MODES = ("node-loop", "node-thread", "loop", "thread")
NODE_ID, LOAD_ID = b"\x01" * 8, b"\x02" * 8


async def submit_steps(node: Node, body: dict[str, Any], off_loop: bool) -> None:
    """`Node.submit`'s steps (sign, dry run, commit, apply), the write-ahead commit on the trio
    thread or in a worker thread."""
    async with node._lock:
        op = sign_op(node.replica.ctx, node.key.private_key, node.next_seq(), node.parents(), "transfer", body)
        assert node.replica.dry_run(op) is None
        pairs = [(op.op_id, op.raw)]
        if off_loop:
            await node.store.append_own_ops(pairs, b"local")
        else:
            node.store.append_ops(pairs, b"local", fsync=True)
        node.announce(node.replica.receive_many([op]).accepted)


async def measure(node: Node, body: dict[str, Any], mode: str, submits: int) -> tuple[list[float], list[float]]:
    latencies: list[float] = []
    lags: list[float] = []
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
            if mode.startswith("node-"):
                node.commit_off_loop = mode == "node-thread"
                await node.submit("transfer", body)
            else:
                await submit_steps(node, body, mode == "thread")
            latencies.append(time.perf_counter() - began)
            await trio.sleep(0.002)  # a client's think time: the probe runs between submits too
        done.set()
    return latencies, lags


async def gossip_load(peer: Peer, key: keystore.Key, body: dict[str, Any], rate: float) -> None:
    """A second participant signing and gossiping `rate` transfers a second (until cancelled)."""
    replica, address = peer.replica, key.address
    while True:
        graph = replica.graph
        seq = graph.version_vector.get(address, 0) + 1
        own = graph.chains.get(address, {}).get(seq - 1, [])[:1]
        others = sorted(head for head in graph.heads if head not in own)
        parents = own + others[-(MAX_PARENTS - len(own)) :]
        await peer.submit(sign_op(replica.ctx, key.private_key, seq, parents, "transfer", body))
        await trio.sleep(1 / rate)


@asynccontextmanager
async def network_load(
    node: Node, genesis: Genesis, load_key: keystore.Key, body: dict[str, Any], rate: float
) -> AsyncIterator[Peer]:
    """The node's peer and a loaded second participant over the in-memory transport."""
    network = MemoryNetwork()
    network.connect(NODE_ID, LOAD_ID)
    async with (
        network.open_transport(NODE_ID, participant=node.address) as transport,
        open_node(node, transport),
        network.open_transport(LOAD_ID, participant=load_key.address) as load_transport,
        open_peer(Replica(genesis), load_transport) as load_peer,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(gossip_load, load_peer, load_key, body, rate)
        yield load_peer
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submits", type=int, default=200, help="submits per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per mode (alternating)")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where the store goes (a real disk)")
    parser.add_argument("--gossip", type=float, default=0.0, help="operations a second from a second node (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="fsync-bench-") as folder:
        root = Path(folder)
        usdc = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]
        create_genesis_folder(root / "channel", 2, password=PASSWORD, tokens=[usdc], initial=10**18, light_kdf=True)
        genesis = load_genesis(root / "channel" / "genesis.toml")
        address = genesis.participants[0].address
        key = keystore.load(keystore.find(root / "channel" / "keys", address), PASSWORD)
        load_key = keystore.load(keystore.find(root / "channel" / "keys", genesis.participants[1].address), PASSWORD)
        body = {"to": genesis.participants[1].address, "token": "USDC", "amount": 1}
        load_body = {"to": address, "token": "USDC", "amount": 1}
        received = [0]
        results: dict[str, tuple[list[float], list[float]]] = {mode: ([], []) for mode in MODES}

        async def run() -> None:
            store = Store(root / "node" / "node.sqlite")
            try:
                node = Node.restore(genesis, key, store, fresh_channel=True)
                async with contextlib.AsyncExitStack() as stack:
                    if args.gossip > 0:
                        await stack.enter_async_context(network_load(node, genesis, load_key, load_body, args.gossip))
                    for _ in range(args.rounds):
                        for mode in MODES:
                            latencies, lags = await measure(node, body, mode, args.submits)
                            results[mode][0].extend(latencies)
                            results[mode][1].extend(lags)
                    if node.peer is not None:
                        received[0] = node.peer.statistics().gossip_ops_received
            finally:
                store.close()

        trio.run(run)
    summary: dict[str, Any] = {}
    for mode, (latencies, lags) in results.items():
        submit = percentiles(latencies)
        lag = {**percentiles(lags), "max_ms": round(max(lags) * 1e3, 3)}
        submit = {**submit, "max_ms": round(max(latencies) * 1e3, 3)}
        emit(bench="fsync_submit", mode=mode, gossip=args.gossip, submits=len(latencies), **submit)
        emit(bench="fsync_loop_lag", mode=mode, gossip=args.gossip, samples=len(lags), **lag)
        summary[mode] = {"submit": submit, "loop_lag": lag}
    emit(bench="fsync_summary", gossip=args.gossip, gossip_ops_received=received[0], **summary)


if __name__ == "__main__":
    main()
