"""What compaction buys and costs: memory and ingest of a replica over a long run, with and
without `Replica.compact`, side by side.

    python benchmarks/compaction.py [--ops 200000] [--every 200] [--keep 2]

Each mode runs in its own process, on the node's real path: seeded transfers by 4 authors
(`simulations.workload.Workload`, concurrent: each author lags up to 8 operations behind the
others) are written to a SQLite `Store` and received by a `Replica` in batches of 100; every
``--every`` operations the replica's heads are certified as the next cut. ``keep_all`` stops
there (the graph holds everything, as before issue 16); ``compact`` then calls
`Replica.compact(keep)` with the store's archive (`channel.runtime.archive.StoreArchive`).

One JSON line per tenth of the run and mode: operations so far, the process's resident memory
(``rss_mb``), operations in memory, and the ingest cost of that tenth (receive + certify +
compact, µs an operation; signing and the store's writes are not counted). Then per mode:
``rss_growth_second_half`` (RSS at the end over RSS at half-way: the soak target is <= 1.10),
and the mean ingest cost.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit
from benchmarks.ingest import channel
from channel.runtime.archive import StoreArchive
from channel.runtime.store import Store
from crdt.replica import Cut, Replica
from simulations.workload import Workload

BATCH = 100


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def run(mode: str, count: int, every: int, keep: int) -> None:
    genesis, keys = channel(4)
    with tempfile.TemporaryDirectory(prefix="parley-bench-compaction-") as tmp:
        store = Store(Path(tmp) / "node.sqlite")
        archive = StoreArchive(store, genesis.context()) if mode == "compact" else None
        replica = Replica(genesis, archive=archive)
        ops = Workload(genesis, keys[1:], seed=1).ops(count)
        done, spent, tenth_spent, next_cut = 0, 0.0, 0.0, every
        rows: list[tuple[int, float]] = []
        while done < count:
            batch = [op for _, op in zip(range(BATCH), ops, strict=False)]
            if not batch:
                break
            store.append_ops(((op.op_id, op.raw) for op in batch), b"peer", fsync=False)
            began = time.perf_counter()
            replica.receive_many(batch)
            done += len(batch)
            if done >= next_cut:
                next_cut += every
                replica.certify(Cut(replica.version + 1, tuple(sorted(replica.graph.heads)), done))
                if archive is not None:
                    replica.compact(keep)
            elapsed = time.perf_counter() - began
            spent += elapsed
            tenth_spent += elapsed
            if done % (count // 10) < BATCH:
                rows.append((done, rss_mb()))
                emit(bench="compaction", mode=mode, ops=done, rss_mb=round(rows[-1][1], 1),
                     in_memory=len(replica.graph.ops), archived=replica.graph.pruned,
                     us_per_op=round(tenth_spent / (count // 10) * 1e6, 1))
                tenth_spent = 0.0
        half = min(rows, key=lambda row: abs(row[0] - count // 2))[1]
        emit(bench="compaction_summary", mode=mode, ops=done, every=every, keep=keep,
             rss_mb=round(rows[-1][1], 1), rss_growth_second_half=round(rows[-1][1] / half, 3),
             in_memory=len(replica.graph.ops), us_per_op=round(spent / done * 1e6, 1),
             state_hash="0x" + replica.state_hash().hex())
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=200, help="operations between certified cuts")
    parser.add_argument("--keep", type=int, default=2, help="certified epochs compaction keeps")
    parser.add_argument("--mode", choices=["keep_all", "compact"], help="(internal) run one mode here")
    args = parser.parse_args()
    if args.mode is not None:
        run(args.mode, args.ops, args.every, args.keep)
        return
    for mode in ("keep_all", "compact"):  # each in a fresh process, so RSS is its own
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--mode", mode, "--ops", str(args.ops), "--every",
                        str(args.every), "--keep", str(args.keep)], check=True)


if __name__ == "__main__":
    main()
