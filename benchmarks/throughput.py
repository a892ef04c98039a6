"""Throughput of a 4-node channel of real processes: transfers submitted in batches through the
nodes' APIs, final at every node, against the physical limit measured in the same run.

    python benchmarks/throughput.py [--seconds 20] [--rate 4000] [--batch 50] [--intervals 0.1 1.0]

Four node processes on 127.0.0.1 over libp2p, consensus running. Each node's participant sends
transfers of one USDC unit to the next in `parley_submitMany` batches of `--batch` over an
open WebSocket (two connections per node, so a batch is on the wire while the node signs the
one before), paced to `--rate` operations per second in all (0: as fast as the nodes answer),
for `--seconds`. Every half second each node's ``final`` count (operations in its certified
prefix, from ``parley_stats``) is sampled; the rate final at every node is the slowest node's
growth over the second half of the load. After the load, the time until every node holds every
accepted operation as final (``drain_s``).

The limit: ``recover_per_s``, the bare secp256k1 recovery rate of one core of this machine,
measured here, times the cores, over the 4 nodes (each node recovers every operation once).
``of_limit`` is the final rate as a fraction of it.

Also printed per run: what an operation cost on the wire (per operation a node received from
its peers: copies by gossip and by sync, messages and bytes, and the share of bytes sync
carried), the operations accepted, the rejections by reason summed over the nodes
(``stale`` counts honest operations that reached a checkpoint more than two checkpoints after
their parents: see the README's "Checkpoint cadence"), checkpoints made, and the finality p50
and p99 of the nodes' own histograms (submit to final; the upper bounds of their buckets, the
slowest node's).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import coincurve
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit
from channel.api.client import AsyncClient, Client, Endpoint
from crdt.genesis import Token
from crdt.hashing import keccak256
from simulations.cluster import USDC_UNIT, NodeProcess, create_cluster, start_all, stop_all

USDC = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]
NODES = 4
CONNECTIONS = 2  # per node


def recover_rate(seconds: float = 2.0) -> float:
    """Bare secp256k1 public key recoveries per second on one core."""
    key = coincurve.PrivateKey(keccak256(b"throughput"))
    pairs = [(key.sign_recoverable(digest := keccak256(i.to_bytes(4, "big")), hasher=None), digest) for i in range(512)]
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for signature, digest in pairs:
            coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
        done += len(pairs)
    return done / (time.perf_counter() - began)


async def load(endpoints: list[Endpoint], to: list[str], seconds: float, rate: float, batch: int) -> int:
    """Send the transfers; returns how many the nodes accepted."""
    accepted = 0
    senders = NODES * CONNECTIONS
    period = batch * senders / rate if rate > 0 else 0.0  # seconds between one sender's batches
    deadline = trio.current_time() + seconds

    async def sender(index: int) -> None:
        nonlocal accepted
        node = index % NODES
        body = {"to": to[(node + 1) % NODES], "token": "USDC", "amount": str(USDC_UNIT * 10**3)}
        async with AsyncClient(endpoints[node]) as client, client.socket() as socket:
            next_at = trio.current_time() + period * index / senders  # senders spread over a period
            while trio.current_time() < deadline:
                await trio.sleep_until(next_at)
                results = await socket.submit_many([("transfer", body)] * batch)
                accepted += sum(1 for result in results if "error" not in result)
                next_at += period  # behind schedule, the next batch goes at once

    async with trio.open_nursery() as nursery:
        for index in range(senders):
            nursery.start_soon(sender, index)
    return accepted


def sample_final(clients: list[Client], samples: list[tuple[float, list[int]]], stop: trio.Event) -> None:
    while not stop.is_set():
        samples.append((time.perf_counter(), [client.stats()["final"] for client in clients]))
        time.sleep(0.5)


def wire_per_operation(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, float]:
    """What the operations cost, per operation a node received from its peers (each holds every
    operation and signed a quarter of them), summed over the nodes: the copies gossip delivered
    (after GossipSub's seen cache) and those sync delivered (1.0 in all: no redundancy), the
    copies that came in on the ops topic, duplicates included (``wire_gossip_copies``, from the
    bytes), the messages and the bytes on the ops topic and the sync streams (their frames and
    Status reports included)."""
    totals: Counter[str] = Counter()
    for b, a in zip(before, after, strict=True):
        for name in ("gossip_ops_received", "sync_ops_received", "gossip_batches_received", "sync_messages_received",
                     "gossip_bytes_received", "sync_bytes_received", "wire_messages", "wire_bytes"):
            totals[name] += a[name] - b[name]
        totals["from_peers"] += (a["operations"] - b["operations"]) * (NODES - 1) // NODES
    ops = max(1, totals["from_peers"])
    return {
        "gossip_copies_per_op": round(totals["gossip_ops_received"] / ops, 3),
        "sync_copies_per_op": round(totals["sync_ops_received"] / ops, 3),
        "wire_gossip_copies_per_op": round(totals["wire_bytes"] / max(1, totals["gossip_bytes_received"])
                                           * totals["gossip_ops_received"] / ops, 3),
        "messages_per_op": round((totals["wire_messages"] + totals["sync_messages_received"]) / ops, 3),
        "bytes_per_op": round((totals["wire_bytes"] + totals["sync_bytes_received"]) / ops, 1),
        "sync_bytes_share": round(totals["sync_bytes_received"] / max(1, totals["wire_bytes"]
                                                                        + totals["sync_bytes_received"]), 3),
    }


def counters(client: Client) -> dict[str, Any]:
    """`parley_stats`, with the ops topic's wire counts from `parley_peers`."""
    stats = client.stats()
    received = (client.peers().get("gossip") or {}).get("received", {})
    ops = next((count for topic, count in received.items() if topic.startswith("/parley/ops/")), {})
    return {**stats, "wire_messages": ops.get("messages", 0), "wire_bytes": ops.get("bytes", 0)}


def run(interval: float, seconds: float, rate: float, batch: int, limit: float) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-bench-throughput-") as tmp:
        cluster = create_cluster(Path(tmp), NODES, tokens=[USDC], initial=10**18, finality_interval=interval)
        processes = [NodeProcess(cluster.config(i)) for i in range(NODES)]
        endpoints = start_all(processes)
        to = ["0x" + p.address.hex() for p in cluster.genesis.participants]
        clients = [Client(endpoint) for endpoint in endpoints]
        try:
            before = [counters(client) for client in clients]
            samples: list[tuple[float, list[int]]] = []
            stop = trio.Event()

            async def measured() -> int:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.to_thread.run_sync, sample_final, clients, samples, stop)
                    began = time.perf_counter()
                    accepted = await load(endpoints, to, seconds, rate, batch)
                    nonlocal load_s
                    load_s = time.perf_counter() - began
                    stop.set()
                return accepted

            load_s = 0.0
            load_began = time.perf_counter()
            accepted = trio.run(measured)
            drain_began = time.perf_counter()
            while True:
                stats = [client.stats() for client in clients]
                if all(s["operations"] == stats[0]["operations"] and s["final"] == s["operations"] for s in stats):
                    break
                if time.perf_counter() - drain_began > 120:
                    break
                time.sleep(0.1)
            drain_s = time.perf_counter() - drain_began
            stats = [counters(client) for client in clients]
            half = [(t, f) for t, f in samples if t - load_began >= load_s / 2]
            (t1, f1), (t2, f2) = half[0], half[-1]
            final_rate = min((b - a) / (t2 - t1) for a, b in zip(f1, f2, strict=True)) if t2 > t1 else 0.0
            reasons: Counter[str] = Counter()
            for s in stats:
                reasons.update(s["rejected_reasons"])
            finality = [s["latency"]["finality"] for s in stats]
            wire = wire_per_operation(before, stats)
            emit(
                bench="throughput", nodes=NODES, interval_s=interval, batch=batch, offered_per_s=rate or None,
                seconds=round(load_s, 1), accepted=accepted, accepted_per_s=round(accepted / load_s),
                final_every_node_per_s=round(final_rate), limit_per_s=round(limit),
                of_limit=round(final_rate / limit, 3), drain_s=round(drain_s, 1),
                all_final=all(s["final"] == s["operations"] for s in stats),
                checkpoints=min(s["version"] for s in stats) - min(b["version"] for b in before),
                rejected=dict(sorted(reasons.items())),
                finality_p50_ms=max(f.get("p50_ms", 0) for f in finality),
                finality_p99_ms=max(f.get("p99_ms", 0) for f in finality), **wire,
            )
        finally:
            for client in clients:
                client.close()
            stop_all(processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=4000.0, help="operations per second in all (0: flat out)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.1, 1.0])
    args = parser.parse_args()
    recover = recover_rate()
    limit = recover * (os.cpu_count() or 1) / NODES
    emit(bench="recover_bare", per_s=round(recover), cores=os.cpu_count(), limit_per_s=round(limit))
    for interval in args.intervals:
        run(interval, args.seconds, args.rate, args.batch, limit)


if __name__ == "__main__":
    main()
