"""Catch-up after downtime: how fast a restarted node applies the checkpoints it missed.

    python benchmarks/catchup.py [--versions N] [--interval S]

Four real node processes on 127.0.0.1 over libp2p. Node 3 is stopped; the other three keep
certifying checkpoints (a transfer at a time, each waited on until final) until N versions
have passed without it. Then node 3 is started again, and the time from its start until it
has applied every version and holds every certificate is measured. Beside it, in the same
run, the time the live nodes took to certify those versions with consensus, so the two rates
compare. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit
from channel.api.client import Client
from crdt.genesis import Token
from simulations.cluster import USDC_UNIT, NodeProcess, create_cluster, start_all, stop_all, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05, help="checkpoint interval of the cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parley-bench-catchup-") as tmp:
        cluster = create_cluster(
            Path(tmp), 4, tokens=[Token("USDC", b"\x22" * 20, 6)], initial=10**15,  # type: ignore[arg-type]
            finality_interval=args.interval,
        )
        processes = [NodeProcess(cluster.config(i)) for i in range(4)]
        endpoints = start_all(processes)
        to = "0x" + cluster.genesis.participants[1].address.hex()
        try:
            processes[3].stop()
            with Client(endpoints[0]) as client:
                start_version = client.stats()["version"]
                began = time.perf_counter()
                while client.stats()["version"] < start_version + args.versions:
                    op_id = client.transfer(to, "USDC", USDC_UNIT)["op_id"]
                    wait_until(lambda op_id=op_id: client.status(op_id)["status"] == "final", what="final")
                consensus_s = time.perf_counter() - began
                target = client.stats()["version"]
            began = time.perf_counter()
            restarted = processes[3].start()
            with Client(restarted) as client:
                wait_until(lambda: client.stats()["version"] >= target and client.stats()["certified"] >= target,
                           within=600, what="the restarted node to catch up")
                catchup_s = time.perf_counter() - began
                counts = client.stats()["catchup"]
        finally:
            stop_all(processes)
    behind = target - start_version
    emit(bench="catchup", nodes=4, interval_s=args.interval, versions_behind=behind,
         catchup_s=round(catchup_s, 2), catchup_versions_per_s=round(behind / catchup_s, 1),
         consensus_s=round(consensus_s, 2), consensus_versions_per_s=round(behind / consensus_s, 1),
         requests=counts["requests"], failed=counts["failed"], versions_from_catchup=counts["versions"],
         certificates_from_catchup=counts["certificates"])


if __name__ == "__main__":
    main()
