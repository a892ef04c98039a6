"""Soak: a 4-node channel of real processes under a steady transfer load for a while, sampling
what would run out first on a node left for weeks: memory, the store on disk, and latency.

    python benchmarks/soak.py [--seconds 1200] [--rate 40] [--sample 10] [--out DIR] [--keep DIR]

Prints one JSON line per sample (``soak_sample``: per node its resident memory and data
directory in MB, its open file descriptors, the operations it holds, its certified version,
its submit and finality p50 from its own histograms) and a summary (``soak``). The baseline is the same run's first
quarter, after a warm-up: the summary sets the last quarter beside it (resident memory growth
per node, store bytes per operation, transfer latency p50/p99), so a leak shows as growth that
the load alone does not explain. With ``--out`` it also writes ``soak.jsonl`` and ``soak.png``
(memory and store over time).

Today nothing is compacted (issue 16): the store and the graph grow with every operation, so
the store's growth per operation is expected, and memory grows with the graph too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, percentiles
from channel.api.client import ApiError, Client, Endpoint
from crdt.genesis import Token
from simulations.cluster import USDC_UNIT, NodeProcess, create_cluster, start_all, stop_all

USDC = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def dir_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def load(endpoint: Endpoint, recipients: list[str], per_s: float, stop: threading.Event,
         latencies: list[tuple[float, float]], errors: list[str]) -> None:
    """Paced transfers through one node's API: (time sent, latency) per transfer."""
    period, next_at, i = 1.0 / per_s, time.monotonic(), 0
    with Client(endpoint) as client:
        while not stop.is_set():
            began = time.monotonic()
            try:
                client.transfer(recipients[i % len(recipients)], "USDC", (1 + i % 1000) * USDC_UNIT)
                latencies.append((began, time.monotonic() - began))
            except ApiError as exc:
                errors.append(str(exc))
            i += 1
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))


def sample(nodes: list[NodeProcess], endpoints: list[Endpoint], elapsed: float) -> dict[str, Any]:
    rows = []
    for node, endpoint in zip(nodes, endpoints, strict=True):
        assert node.process is not None
        with Client(endpoint) as client:
            stats = client.stats()
            gossip = client.peers().get("gossip") or {}
        latency = stats.get("latency", {})
        rows.append({
            "rss_mb": round(rss_mb(node.process.pid), 1), "store_mb": round(dir_mb(node.data_dir), 2),
            "fds": open_fds(node.process.pid),
            "operations": stats["operations"], "certified": stats.get("certified", 0),
            "ops_per_s": stats["ops_per_s"],
            "submit_p50_ms": latency.get("submit", {}).get("p50_ms"),
            "finality_p50_ms": latency.get("finality", {}).get("p50_ms"),
            "catchup": stats.get("catchup"), "consensus_gossip": stats.get("consensus_gossip"),
            "gossip_ops": stats.get("gossip_ops_received"), "sync_ops": stats.get("sync_ops_received"),
            "sync_ticks_skipped": stats.get("sync_ticks_skipped"),
            "connections": sum(p["connections"] for p in gossip.get("peers", {}).values()),
            "pubsub_streams": sum(p["pubsub_stream"] for p in gossip.get("peers", {}).values()),
            "topics": {t[:18]: [v["subscribed"], v["mesh"]] for t, v in gossip.get("topics", {}).items()},
            "rpc_dropped": gossip.get("rpc_dropped"), "streams_lost": gossip.get("streams_lost"),
            "rpcs_lost": gossip.get("rpcs_lost"), "consensus": stats.get("consensus"),
        })
    return {"bench": "soak_sample", "t_s": round(elapsed, 1), "nodes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1200.0)
    parser.add_argument("--rate", type=float, default=40.0, help="transfers per second, over all nodes")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, help="a folder for soak.jsonl and soak.png")
    parser.add_argument("--keep", type=Path, help="run the channel in this (new) folder and keep it: logs, stores")
    args = parser.parse_args()
    samples: list[dict[str, Any]] = []
    latencies: list[tuple[float, float]] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-soak-") as tmp:
        cluster = create_cluster(args.keep or Path(tmp), 4, tokens=[USDC], initial=10**18)
        nodes = [NodeProcess(cluster.config(i)) for i in range(4)]
        endpoints = start_all(nodes)
        addresses = ["0x" + p.address.hex() for p in cluster.genesis.participants]
        stop = threading.Event()
        threads = [
            threading.Thread(target=load, args=(endpoint, [a for j, a in enumerate(addresses) if j != i],
                                                args.rate / len(nodes), stop, latencies, errors), daemon=True)
            for i, endpoint in enumerate(endpoints)
        ]
        began = time.monotonic()
        try:
            for thread in threads:
                thread.start()
            while (elapsed := time.monotonic() - began) < args.seconds:
                time.sleep(min(args.sample, max(0.0, args.seconds - elapsed)))
                samples.append(sample(nodes, endpoints, time.monotonic() - began))
                print(json.dumps(samples[-1]), flush=True)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            stop_all(nodes)
    quarter = max(1, len(samples) // 4)
    first, last = samples[quarter - 1], samples[-1]  # after the warm-up quarter, and at the end
    growth = [(b["rss_mb"] - a["rss_mb"]) / a["rss_mb"] for a, b in zip(first["nodes"], last["nodes"], strict=True)]
    ops = last["nodes"][0]["operations"] - first["nodes"][0]["operations"]
    store = max(b["store_mb"] - a["store_mb"] for a, b in zip(first["nodes"], last["nodes"], strict=True))
    cut = began + first["t_s"]
    early = [lat for at, lat in latencies if at <= cut]
    late = [lat for at, lat in latencies if at >= began + args.seconds * 0.75]
    emit(bench="soak", seconds=args.seconds, rate=args.rate, transfers=len(latencies), errors=len(errors),
         rss_mb_end=[n["rss_mb"] for n in last["nodes"]], fds_end=[n["fds"] for n in last["nodes"]],
         fds_growth=max(b["fds"] - a["fds"] for a, b in zip(first["nodes"], last["nodes"], strict=True)),
         rss_growth_after_warmup_pct=round(100 * max(growth), 1),
         store_bytes_per_op=round(store * 2**20 / ops) if ops else None,
         latency_first_quarter=percentiles(early) if early else None,
         latency_last_quarter=percentiles(late) if late else None,
         finality_p50_ms_end=[n["finality_p50_ms"] for n in last["nodes"]],
         certified_end=[n["certified"] for n in last["nodes"]],
         longest_stall_s=longest_stall(samples),
         sync_copies_per_op=round(max(n["sync_ops"] or 0 for n in last["nodes"]) / last["nodes"][0]["operations"], 2))
    if args.out is not None:
        plot(samples, args.out)


def longest_stall(samples: list[dict[str, Any]]) -> float:
    """The longest time, over nodes, between two samples at which a node's certified version
    stood still (0 if it moved at every sample)."""
    longest = 0.0
    for index in range(len(samples[0]["nodes"])):
        since = samples[0]["t_s"]
        for previous, current in itertools.pairwise(samples):
            if current["nodes"][index]["certified"] > previous["nodes"][index]["certified"]:
                since = current["t_s"]
            longest = max(longest, current["t_s"] - since)
    return round(longest, 1)


def plot(samples: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    figure, (memory, disk) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    times = [s["t_s"] for s in samples]
    for index in range(len(samples[0]["nodes"])):
        memory.plot(times, [s["nodes"][index]["rss_mb"] for s in samples], label=f"node {index}")
        disk.plot(times, [s["nodes"][index]["store_mb"] for s in samples], label=f"node {index}")
    memory.set_ylabel("resident memory (MB)")
    disk.set_ylabel("data directory (MB)")
    disk.set_xlabel("seconds")
    memory.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(out / "soak.png", dpi=100)


if __name__ == "__main__":
    main()
