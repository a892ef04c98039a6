"""Ingest benchmark: decode + verify + accept + apply, against the bare recover rate.

    python benchmarks/ingest.py [--ops N] [--authors 10 100] [--batch 100]

Prints one JSON line per measurement. Every rate is measured in the same run as the baseline
(coincurve's PublicKey.from_signature_and_message over the same signatures), interleaved with it
and timed in CPU time of this process, so the ratio holds on a busy machine too. The 2-process
rate needs wall time and is only meaningful on an otherwise idle machine. Operations come from
the seeded workload generator (`simulations.workload`), in creation order, in batches of 100 as
gossip would deliver them.

- ``recover_bare``: the baseline, secp256k1 recovery alone;
- ``ingest_1core``: decode_op (canonical check, hashes, recovery) + accept + apply;
- ``ingest_2proc``: recovery in 2 worker processes, decode + accept + apply in this one;
- ``late_op``: one operation that sorts before k applied operations, against a full replay.

With the compiled crdt core (setup.py), the same measurements follow from the pure-Python
build, in a subprocess with ``PARLEY_PURE=1`` (``--this-build-only`` skips it); every line
says its ``build``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import coincurve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, pure_too
from channel.runtime.verifier import VerifierPool
from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ops import Context, SignedOp, address_of, decode_op, sign_op
from crdt.replica import Replica
from simulations.workload import Workload


def timed(function: Callable[[], object], clock: Callable[[], float] = time.process_time) -> float:
    started = clock()
    function()
    return clock() - started


def best_of(rounds: int, **functions: Callable[[], object]) -> dict[str, float]:
    """Run the functions in interleaved rounds and keep each one's best time, so a burst of
    load on the machine hits all of them alike. Single-core work is timed in this process's
    CPU time, which other processes do not inflate."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            best[name] = min(best[name], timed(function))
    return best


def channel(authors: int) -> tuple[Genesis, list[bytes]]:
    keys = [keccak256(b"bench" + i.to_bytes(4, "big")) for i in range(authors + 1)]
    participants = [Participant(address_of(key), Role.TRADER) for key in keys]
    genesis = Genesis.create(
        chain_id=1,
        adjudicator=b"\x11" * 20,
        participants=participants,
        tokens=[Token("USDC", b"\x22" * 20, 6)],  # type: ignore[arg-type]
        initial_balances=[InitialBalance(p.address, "USDC", 10**15) for p in participants],  # type: ignore[arg-type]
    )
    return genesis, keys


def ingest(genesis: Genesis, ctx: Context, raws: list[bytes], batch: int) -> Replica:
    replica = Replica(genesis, ctx)
    for i in range(0, len(raws), batch):
        replica.receive_many([decode_op(raw, ctx) for raw in raws[i : i + batch]])
    return replica


def ingest_pool(genesis: Genesis, ctx: Context, raws: list[bytes], batch: int, pool: VerifierPool) -> Replica:
    replica = Replica(genesis, ctx)
    for i in range(0, len(raws), batch * 8):
        decoded = [decode_op(raw, ctx, verify=False) for raw in raws[i : i + batch * 8]]
        valid = pool.verify(decoded)
        replica.receive_many([op for op, ok in zip(decoded, valid, strict=True) if ok])
    return replica


def late_op(
    genesis: Genesis, ctx: Context, ops: list[SignedOp], outsider: bytes, sorts_before: int
) -> dict[str, object]:
    """An operation by a participant that has not written yet, whose parent is chosen so that
    it sorts before `sorts_before` of the applied operations."""
    base = Replica(genesis, ctx)
    base.receive_many(ops)
    order = base.graph.in_order()
    anchor = order[max(0, len(order) - sorts_before - 1)]
    recipient = ops[0].author
    late = sign_op(ctx, outsider, 1, [anchor.op_id], "transfer", {"to": recipient, "token": "USDC", "amount": 1})
    replica = Replica(genesis, ctx)
    replica.receive_many(ops)
    before = replica.replayed
    incremental = timed(lambda: replica.receive(late))
    full = timed(lambda: Replica(genesis, ctx).receive_many([*ops, late]))
    return {
        "reapplied": replica.replayed - before,
        "late_op_ms": round(incremental * 1e3, 3),
        "full_replay_ms": round(full * 1e3, 3),
        "speedup": round(full / incremental, 1),
    }


def run(authors: int, count: int, batch: int, pool: VerifierPool) -> None:
    genesis, keys = channel(authors)
    ctx = genesis.context()
    ops = list(Workload(genesis, keys[:authors], seed=authors).ops(count))
    raws = [op.raw for op in ops]
    pairs = [(op.signature[:64] + bytes((op.signature[64] - 27,)), op.op_id) for op in ops]
    n = len(ops)

    def bare() -> None:
        for signature, digest in pairs:
            coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)

    best = best_of(3, bare=bare, one=lambda: ingest(genesis, ctx, raws, batch))
    recover_rate, one = n / best["bare"], n / best["one"]
    emit(bench="recover_bare", authors=authors, ops=n, per_s=round(recover_rate))
    emit(bench="ingest_1core", authors=authors, ops=n, batch=batch, per_s=round(one),
         ratio_to_recover=round(one / recover_rate, 3))
    pool.verify(ops[:512])  # start the workers outside the measurement
    two = n / min(timed(lambda: ingest_pool(genesis, ctx, raws, batch, pool), time.perf_counter) for _ in range(3))
    emit(bench="ingest_2proc", authors=authors, ops=n, per_s=round(two), ratio_to_recover=round(two / recover_rate, 3),
         clock="wall (sensitive to other load on the machine)")
    for k in (10, 100, 1000):
        emit(bench="late_op", authors=authors, ops=n, sorts_before=k, **late_op(genesis, ctx, ops, keys[authors], k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--authors", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--this-build-only", action="store_true",
                        help="skip the second run with the pure-Python crdt core (PARLEY_PURE=1)")
    args = parser.parse_args()
    emit(bench="environment", cpus=os.cpu_count(), python=sys.version.split()[0])
    with VerifierPool(2) as pool:
        for authors in args.authors:
            run(authors, args.ops, args.batch, pool)
    pure_too()


if __name__ == "__main__":
    main()
