"""ConsensusDriver latency: from submitting an operation to every live node reporting it final.

    python benchmarks/finality.py [--ops N]

Four real node processes on 127.0.0.1 over libp2p, with the default checkpoint interval (1 s:
checkpoints are pipelined, each started once the one before is decided, at most one per
interval while there is something new) and shorter ones (0.25 s, 0.1 s).
One operation at a time is submitted
(round robin over the live nodes); the time until its status is ``final`` on every live node is
recorded. Then one node is stopped and the run is repeated with three. Prints JSON lines with
p50/p99 in ms, beside the submit latency measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, percentiles
from channel.api.client import Client, Endpoint
from crdt.genesis import Token
from simulations.cluster import USDC_UNIT, NodeProcess, create_cluster, start_all, stop_all


def measure(endpoints: list[Endpoint], to: list[str], count: int) -> tuple[list[float], list[float]]:
    clients = [Client(endpoint) for endpoint in endpoints]
    finality, submits = [], []
    try:
        for i in range(count):
            sender = i % len(clients)
            began = time.perf_counter()
            op_id = clients[sender].transfer(to[(sender + 1) % len(to)], "USDC", (1 + i) * USDC_UNIT)["op_id"]
            submits.append(time.perf_counter() - began)
            pending = list(clients)
            while pending:
                pending = [c for c in pending if c.status(op_id)["status"] != "final"]
                if pending:
                    time.sleep(0.005)
            finality.append(time.perf_counter() - began)
    finally:
        for client in clients:
            client.close()
    return finality, submits


def run(interval: float, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-bench-finality-") as tmp:
        cluster = create_cluster(
            Path(tmp), 4, tokens=[Token("USDC", b"\x22" * 20, 6)], initial=10**15,  # type: ignore[arg-type]
            finality_interval=interval,
        )
        processes = [NodeProcess(cluster.config(i)) for i in range(4)]
        endpoints = start_all(processes)
        to = ["0x" + p.address.hex() for p in cluster.genesis.participants]
        try:
            for down in (0, 1):
                if down:
                    processes[3].stop()
                final, submit = measure(endpoints[: 4 - down], to, count)
                emit(bench="finality", nodes=4, down=down, interval_s=interval, ops=count, **percentiles(final),
                     submit=percentiles(submit))
        finally:
            stop_all(processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=60)
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    args = parser.parse_args()
    for interval in args.intervals:
        run(interval, args.ops)

if __name__ == "__main__":
    main()
