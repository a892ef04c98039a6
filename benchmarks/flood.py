"""An unknown-parents flood by one Byzantine participant against real node processes.

    python benchmarks/flood.py [--ops 6000] [--parents 128] [--requests 200]

Three honest nodes run as processes on 127.0.0.1; the fourth participant's node is replaced by
a rogue host in this process. The rogue gossips `--ops` validly signed operations (batches of
100, about 4.5 KB each), each naming `--parents` random parent ids that do not exist: the
attack that once made 1,300-1,600 operations wait on every node, grew memory by 131-155 MB
per node, and left honest transfers timing out for minutes.

Prints JSON lines, the baseline first, in the same run:
- ``flood_baseline``: honest transfers at node 0 (one every 10 ms), p50/p99/max in ms, with the
  rogue connected but quiet;
- ``flood_during``: the same while the rogue floods;
- ``flood_after``: the same right after the flood, with what the nodes still hold;
- each with the nodes' pending operations, missing parents tracked, and resident memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "channel"))

import trio.lowlevel

from benchmarks.common import emit, percentiles
from channel.api.client import Client, Endpoint
from crdt.genesis import Token
from crdt.ops import sign_op
from p2p.host import open_libp2p_transport
from p2p.peer import ops_topic
from p2p.wire import encode_batch
from simulations.cluster import USDC_UNIT, NodeProcess, create_cluster, start_all, stop_all


def rss_mb(process: NodeProcess) -> float:
    assert process.process is not None
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def snapshot(endpoints: list[Endpoint], nodes: list[NodeProcess]) -> dict[str, Any]:
    found: dict[str, Any] = {"pending": [], "rss_mb": []}
    for endpoint, node in zip(endpoints, nodes, strict=True):
        with Client(endpoint) as client:
            found["pending"].append(client.stats()["pending"])
        found["rss_mb"].append(rss_mb(node))
    return found


def latency(endpoint: Endpoint, to: str, n: int, pause: float = 0.01) -> dict[str, Any]:
    samples, timeouts = [], 0
    with Client(endpoint) as client:
        for i in range(n):
            began = time.perf_counter()
            try:
                client.transfer(to, "USDC", (1 + i) * USDC_UNIT)
            except Exception:
                timeouts += 1
            samples.append(time.perf_counter() - began)
            time.sleep(pause)
    result: dict[str, Any] = percentiles(samples)
    result["max_ms"] = round(max(samples) * 1000, 1)
    result["failed"] = timeouts
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=6000)
    parser.add_argument("--parents", type=int, default=128)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    from hostile_kit import participant_key, rogue_config

    with tempfile.TemporaryDirectory(prefix="parley-bench-flood-") as tmp:
        cluster = create_cluster(Path(tmp) / "c", 4, tokens=[Token("USDC", b"\x22" * 20, 6)], initial=10**18)  # type: ignore[arg-type]
        nodes = [NodeProcess(cluster.config(i)) for i in range(3)]
        endpoints = start_all(nodes)
        to = "0x" + cluster.genesis.participants[1].address.hex()
        ctx = cluster.genesis.context()
        key = participant_key(cluster, 3).private_key
        ops = [
            sign_op(ctx, key, seq, [os.urandom(32) for _ in range(args.parents)], "transfer",
                    {"to": cluster.genesis.participants[0].address, "token": "USDC", "amount": 1})
            for seq in range(1, args.ops + 1)
        ]
        size = sum(len(op.raw) for op in ops) // len(ops)

        async def run() -> None:
            async with open_libp2p_transport(rogue_config(cluster, Path(tmp) / "rogue", 3)) as rogue:
                with trio.fail_after(90):
                    while len(rogue.connected_peers()) < 3:  # noqa: ASYNC110 - libp2p announces no event
                        await trio.sleep(0.1)
                await trio.sleep(2)
                base = await trio.to_thread.run_sync(latency, endpoints[0], to, args.requests)
                emit(bench="flood_baseline", requests=args.requests, **base, **snapshot(endpoints, nodes))
                topic = ops_topic(cluster.genesis.channel_id)
                done = trio.Event()

                async def flood() -> None:
                    for start in range(0, len(ops), 100):
                        await rogue.publish(topic, encode_batch([op.raw for op in ops[start:start + 100]]))
                        await trio.lowlevel.checkpoint()
                    done.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    during = await trio.to_thread.run_sync(latency, endpoints[0], to, args.requests)
                    await done.wait()
                emit(bench="flood_during", requests=args.requests, flood_ops=args.ops, parents=args.parents,
                     op_bytes=size, **during, **snapshot(endpoints, nodes))
                after = await trio.to_thread.run_sync(latency, endpoints[0], to, args.requests)
                emit(bench="flood_after", requests=args.requests, **after, **snapshot(endpoints, nodes))

        try:
            trio.run(run)
        finally:
            stop_all(nodes)


if __name__ == "__main__":
    main()
