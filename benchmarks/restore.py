"""What checking the store on restart costs: `Node.restore` against the unchecked replay.

    python benchmarks/restore.py [--ops 10000 100000]

A node restarts by replaying its store. It used to trust what it read (decode without the
signature); now every row is checked against its op id and its signature, so a tampered or
rotten store is refused instead of replayed (README, threat model). For each size, a store of
seeded transfers by 10 authors is written once, then both are timed in the same run, in CPU
time, best of 3:

- ``restore_unchecked``: decode (verify=False) and replay, as before;
- ``restore_checked``: `Node.restore` (decode, op id and signature of every row, replay,
  decisions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit
from benchmarks.ingest import best_of, channel
from channel.runtime.keystore import Key
from channel.runtime.node import Node
from channel.runtime.store import Store
from crdt.ops import address_of, decode_op
from crdt.replica import Replica
from simulations.workload import Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    genesis, keys = channel(10)
    key = Key(address_of(keys[0]), keys[0])
    for count in args.ops:
        ops = list(Workload(genesis, keys[1:], seed=1).ops(count))
        with tempfile.TemporaryDirectory(prefix="parley-bench-restore-") as tmp:
            store = Store(Path(tmp) / "node" / "node.sqlite")
            store.append_ops(((op.op_id, op.raw) for op in ops), b"peer", fsync=False)

            def unchecked(store: Store = store) -> None:
                replica = Replica(genesis)
                replica.receive_many([decode_op(raw, replica.ctx, verify=False) for _, _, raw in store.load_ops()])

            def checked(store: Store = store) -> None:
                Node.restore(genesis, key, store)

            began = time.perf_counter()
            best = best_of(3, restore_unchecked=unchecked, restore_checked=checked)
            for name, seconds in best.items():
                emit(bench=name, ops=count, seconds=round(seconds, 3), us_per_op=round(seconds / count * 1e6, 1))
            emit(bench="restore_ratio", ops=count, checked_over_unchecked=round(best["restore_checked"] /
                 best["restore_unchecked"], 2), wall_s=round(time.perf_counter() - began, 1))
            store.close()


if __name__ == "__main__":
    main()
