"""Pending-buffer flood benchmark: one author's operations that name parents nobody has.

    python benchmarks/pending_flood.py [--flood 6000] [--parents 128] [--batch 100] [--baseline 388c803]

The attack that once worked: one Byzantine participant signs 6,000 valid operations (4.5 KB
each), each naming 128 random parent ids that do not exist, and gossips them in batches of 100;
meanwhile an honest author's operations arrive out of order. Prints one JSON line per
measurement, for the current code and, side by side in the same run, for the baseline: the
crdt/graph.py and p2p/sync.py of the ``--baseline`` commit (the one before the per-author
bounds), loaded with ``git show``. Times are CPU time of this process (best of a few rounds
where a measurement repeats), so the ratio holds on a busy machine too.

- ``flood_ingest``: `Replica.receive_many` over the flood in gossip batches (through 3 relays),
  each followed by an honest gossip batch of 4 operations that wait for the next batch; ms per
  flood batch and per honest batch, then what the buffer holds: entries, missing ids, and the
  memory it keeps (tracemalloc, in a separate pass). The current code calls
  ``pending.advance()`` after each round, as the driver does once a second;
- ``honest_ingest``: the same honest batches without the flood, for comparison;
- ``sync_tick``: `SyncSession.tick` on a `HashGraphView` with the flood in the buffer and
  without it (honest gaps only): ms per tick, the ids it asks for, and how many of the honest
  gap's missing ids are among them;
- ``worst_author``: the most one author can make the current buffer hold: operations of 8 KB
  (the size limit) that share 8 missing parents, so 1,024 of them fit its share.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
import tracemalloc
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit
from benchmarks.ingest import channel
from crdt.genesis import Genesis
from crdt.hashing import keccak256
from crdt.ops import SignedOp, decode_op, sign_op
from crdt.replica import Replica

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "388c803"  # the commit before the per-author bounds of the pending buffer


def load(rev: str, path: str, name: str) -> types.ModuleType:
    """A module of the tree at `rev`, under another name (the current one stays importable)."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module
    exec(compile(source.stdout, module.__file__, "exec"), module.__dict__)
    return module


class Code:
    """One implementation: a graph module and a sync module."""

    def __init__(self, label: str, graph: Any, sync: Any, advances: bool) -> None:
        self.label, self.graph, self.sync, self.advances = label, graph, sync, advances

    def replica(self, genesis: Genesis) -> Replica:
        replica = Replica(genesis)
        replica.graph = self.graph.HashGraph()
        return replica

    def advance(self, replica: Replica) -> None:
        if self.advances:
            replica.graph.pending.advance()

    def missing_count(self, replica: Replica) -> int:
        pending = replica.graph.pending
        return pending.missing_count() if hasattr(pending, "missing_count") else len(pending.missing())


def flood_ops(genesis: Genesis, key: bytes, count: int, parents: int) -> list[SignedOp]:
    ctx = genesis.context()
    body = {"to": genesis.participants[0].address, "token": "USDC", "amount": 1}
    return [
        sign_op(ctx, key, 1 + i, [keccak256(b"nowhere/%d/%d" % (i, j)) for j in range(parents)], "transfer", body, ts=i)
        for i in range(count)
    ]


def honest_batches(genesis: Genesis, keys: list[bytes], rounds: int) -> list[list[SignedOp]]:
    """Honest operations (each on its author's predecessor and the previous op), in blocks of 8
    delivered children first, 4 a batch: each batch waits for the next one."""
    ctx = genesis.context()
    ops: list[SignedOp] = []
    last: dict[int, SignedOp] = {}
    for i in range(4 * rounds):
        author = i % len(keys)
        parents = {op.op_id for op in (last.get(author), ops[-1] if ops else None) if op is not None}
        to = genesis.participants[(author + 1) % len(keys)].address
        ops.append(sign_op(ctx, keys[author], i // len(keys) + 1, parents, "transfer",
                           {"to": to, "token": "USDC", "amount": 1}, ts=i))
        last[author] = ops[-1]
    order = [op for start in range(0, len(ops), 8) for op in reversed(ops[start : start + 8])]
    return [order[i : i + 4] for i in range(0, len(order), 4)]


def feed(code: Code, genesis: Genesis, flood: list[SignedOp], honest: list[list[SignedOp]], batch: int,
         clock: Callable[[], float] = time.process_time) -> tuple[Replica, float, float]:
    """Interleave flood batches and honest batches; return the replica and the CPU seconds
    spent in the flood batches and in the honest batches."""
    replica = code.replica(genesis)
    flood_time = honest_time = 0.0
    for round_, start in enumerate(range(0, len(flood), batch)):
        began = clock()
        replica.receive_many(flood[start : start + batch], b"relay-%d" % (round_ % 3))
        middle = clock()
        if round_ < len(honest):
            replica.receive_many(honest[round_], b"honest-relay")
        honest_time += clock() - middle
        flood_time += middle - began
        code.advance(replica)
    return replica, flood_time, honest_time


def memory_held(code: Code, genesis: Genesis, flood: list[bytes], honest: list[list[SignedOp]], batch: int) -> int:
    """Bytes the replica still holds after the feed (tracemalloc). Each flood batch is decoded
    from its wire bytes inside the measurement, as gossip delivers it, and let go after, so
    what stays allocated is what the replica keeps: the buffered operations and bookkeeping."""
    ctx = genesis.context()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    replica = code.replica(genesis)
    for round_, start in enumerate(range(0, len(flood), batch)):
        ops = [decode_op(bytearray(raw), ctx, verify=False) for raw in flood[start : start + batch]]
        replica.receive_many(ops, b"relay-%d" % (round_ % 3))
        del ops
        if round_ < len(honest):
            replica.receive_many(honest[round_], b"honest-relay")
        code.advance(replica)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held


def tick_time(code: Code, genesis: Genesis, replica: Replica, ticks: int) -> tuple[float, set[bytes]]:
    """CPU seconds per `SyncSession.tick`, best of `ticks` (after `start`), and the ids the
    first tick asks for."""
    view = code.sync.HashGraphView(replica.graph)
    session = code.sync.SyncSession(genesis.channel_id)
    session.start(view)
    best, first = float("inf"), None
    for _ in range(ticks):
        began = time.process_time()
        messages = session.tick(view)
        best = min(best, time.process_time() - began)
        if first is None:
            first = {op_id for m in messages for op_id in getattr(m, "ids", ())}
    return best, first or set()


def honest_only(code: Code, genesis: Genesis, honest: list[list[SignedOp]]) -> tuple[Replica, float]:
    replica = code.replica(genesis)
    spent = 0.0
    for batch in honest:
        began = time.process_time()
        replica.receive_many(batch, b"honest-relay")
        spent += time.process_time() - began
        code.advance(replica)
    return replica, spent


def run(args: argparse.Namespace) -> None:
    genesis, keys = channel(4)  # 4 participants (and one more key that is not one)
    honest_keys, flooder = keys[:3], keys[3]
    began = time.process_time()
    flood = flood_ops(genesis, flooder, args.flood, args.parents)
    rounds = -(-args.flood // args.batch)
    even = rounds + rounds % 2  # honest batches come in pairs: the second brings the first's parents
    batches = honest_batches(genesis, honest_keys, even + 2)
    honest, gap = batches[:even], batches[even]  # `gap` waits for batches[even + 1], never sent
    emit(bench="setup", flood_ops=len(flood), op_bytes=len(flood[0].raw), parents=args.parents,
         honest_ops=sum(map(len, honest)), batch=args.batch, sign_s=round(time.process_time() - began, 2))
    import crdt.graph
    import p2p.sync

    codes = [
        Code(f"baseline {args.baseline}", load(args.baseline, "crdt/graph.py", "baseline_graph"),
             load(args.baseline, "p2p/sync.py", "baseline_sync"), advances=False),
        Code("current", crdt.graph, p2p.sync, advances=True),
    ]
    for code in codes:
        flooded, flood_s, honest_s = feed(code, genesis, flood, honest, args.batch)
        accepted = sum(1 for batch in honest for op in batch if op.op_id in flooded.graph.ops)
        emit(bench="flood_ingest", code=code.label, flood_batch_ms=round(flood_s / rounds * 1e3, 3),
             honest_batch_ms=round(honest_s / min(rounds, len(honest)) * 1e3, 3),
             entries=len(flooded.graph.pending), missing_ids=code.missing_count(flooded),
             honest_accepted=accepted, honest_ops=sum(map(len, honest)))
        clean_s = min(honest_only(code, genesis, honest)[1] for _ in range(args.ticks))
        emit(bench="honest_ingest", code=code.label, flood=False,
             honest_batch_ms=round(clean_s / len(honest) * 1e3, 3))
        # The same honest gap (4 operations waiting for parents) with the flood and without it.
        clean, _ = honest_only(code, genesis, honest)
        honest_missing = set()
        for replica in (flooded, clean):
            replica.receive_many(gap, b"honest-relay")
        honest_missing = {parent for op in gap for parent in op.parents} - set(clean.graph.ops) - {o.op_id for o in gap}
        for name, replica in (("flood", flooded), ("no flood", clean)):
            tick_s, asked = tick_time(code, genesis, replica, args.ticks)
            emit(bench="sync_tick", code=code.label, buffer=name, tick_ms=round(tick_s * 1e3, 3),
                 missing_ids=code.missing_count(replica), ids_asked=len(asked),
                 honest_gap_ids_asked=f"{len(asked & honest_missing)}/{len(honest_missing)}")
        del flooded, clean
        raws = [op.raw for op in flood]
        emit(bench="flood_memory", code=code.label,
             with_flood_mb=round(memory_held(code, genesis, raws, honest, args.batch) / 2**20, 2),
             without_flood_mb=round(memory_held(code, genesis, [], honest, args.batch) / 2**20, 2))
        emit(bench="worst_author", code=code.label, **worst_author(code, genesis, flooder, 2_000))


def worst_author(code: Code, genesis: Genesis, key: bytes, count: int) -> dict[str, Any]:
    ctx = genesis.context()
    body = {"to": genesis.participants[0].address, "token": "USDC", "amount": 1, "memo": b"x" * 7_600}
    parents = [keccak256(b"nowhere/%d" % j) for j in range(8)]
    raws = [sign_op(ctx, key, 1 + i, parents, "transfer", body, ts=i).raw for i in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    replica = code.replica(genesis)
    for round_, start in enumerate(range(0, count, 100)):
        ops = [decode_op(bytearray(raw), ctx, verify=False) for raw in raws[start : start + 100]]
        replica.receive_many(ops, b"relay-%d" % (round_ % 3))
        del ops
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"op_bytes": len(raws[0]), "sent": count, "entries": len(replica.graph.pending),
            "held_mb": round(held / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=6_000)
    parser.add_argument("--parents", type=int, default=128)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--baseline", default=BASELINE, help="the commit whose graph and sync to compare with")
    args = parser.parse_args()
    emit(bench="environment", cpus=os.cpu_count(), python=sys.version.split()[0])
    run(args)


if __name__ == "__main__":
    main()
