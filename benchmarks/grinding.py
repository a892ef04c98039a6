"""Queue grinding: what an author buys by choosing its op id, and by choosing its height.

    python benchmarks/grinding.py [--trials 200] [--seed 1]

Replay order is ``(height, op_id)``, and the queue at one price is replay order (the placement
number), so among orders of one height the smallest op id is served first. The op id is a hash
the author computes before it signs (the EIP-712 digest of ``Op(channel, author, seq,
contentHash)``), and ``ts`` (advisory: replay never reads it) or any body field changes it, so
grinding costs hashes, not signatures: the author signs only the winner. Each line is JSON:

- ``grind_rates``: full re-signings per second (`sign_op`: content, hashes, a signature, and the
  decode that checks it) and candidate op ids per second (the content's encoding and the three
  keccaks, no signature), in CPU time of this process, pure Python over the C hash and curve;
- ``grind_rank``: among ``n`` orders of one height, the grinder's mean rank (1 = first) after
  ``k`` bits of grinding (the best of 2^k candidate ids), measured over real op ids against
  honest authors' real ids, beside the formula for uniform ids ``1 + (n - 1) / (2^k + 1)``;
  ``first`` is how often it was first, beside ``2^k / (2^k + n - 1)``; ``grind_ms`` the CPU
  time of 2^k candidates at the measured rate;
- ``backdating``: an author that has seen an honest order at a price sorts before it anyway,
  whatever the op ids, by naming an older parent (its own last operation) instead of the heads:
  the heights replay sees, and which of the two orders a taker then fills.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.book import MARKET, MID, STEP, channel, order
from benchmarks.common import emit
from benchmarks.ingest import timed
from crdt.hashing import keccak256
from crdt.ops import Context, address_of, content_bytes, sign_op
from crdt.replica import Replica
from crdt.types import OpId

KS = (0, 1, 2, 4, 8, 12)
NS = (2, 10, 100)


def candidate(ctx: Context, author: bytes, seq: int, parents: list[bytes], ts: int) -> OpId:
    """The op id an order.place would have with this ts: what a grinder computes per try."""
    body = order("buy", MID, STEP)
    return ctx.op_id(author, seq, keccak256(content_bytes(parents, "order.place", body, ts)))


def rates(ctx: Context, key: bytes, parents: list[bytes], count: int) -> tuple[float, float]:
    author = address_of(key)
    signing = timed(lambda: [sign_op(ctx, key, 1, parents, "order.place", order("buy", MID, STEP), ts)
                             for ts in range(count)])
    hashing = timed(lambda: [candidate(ctx, author, 1, parents, ts) for ts in range(count * 10)])
    return count / signing, count * 10 / hashing


def ranks(
    ctx: Context, keys: list[bytes], parents: list[bytes], trials: int, seed: int
) -> dict[tuple[int, int], list[int]]:
    """(n, k) -> the grinder's rank in each trial: honest authors' ids (random ts) against the
    best of the grinder's first 2^k candidates."""
    rng = random.Random(seed)
    honest_authors = [address_of(key) for key in keys[1 : max(NS)]]
    grinder = address_of(keys[0])
    found: dict[tuple[int, int], list[int]] = {(n, k): [] for n in NS for k in KS}
    for _ in range(trials):
        honest = [candidate(ctx, author, 1, parents, rng.getrandbits(63)) for author in honest_authors]
        start = rng.getrandbits(62)
        best: OpId | None = None
        tried = 0
        for k in KS:
            while tried < 2**k:
                op_id = candidate(ctx, grinder, 1, parents, start + tried)
                best = op_id if best is None or op_id < best else best
                tried += 1
            assert best is not None
            for n in NS:
                found[(n, k)].append(1 + sum(1 for other in honest[: n - 1] if other < best))
    return found


def backdating() -> dict[str, object]:
    """Honest maker B quotes a buy at MID after a few other operations; attacker A, whose last
    operation is old, has seen it and quotes the same price naming only its own last operation;
    taker C sells into both. Returns the heights and who was filled first."""
    genesis, keys = channel(3)
    ctx = genesis.context()
    a, b, c = keys[0], keys[1], keys[2]
    a1 = sign_op(ctx, a, 1, [], "order.place", order("buy", MID - 100 * STEP * 10, STEP))  # A's old operation
    chain = [a1]
    for seq in range(1, 6):  # the channel moves on: C's operations, each naming the heads
        chain.append(sign_op(ctx, c, seq, [chain[-1].op_id], "order.place", order("sell", MID + seq * 10**9, STEP)))
    honest = sign_op(ctx, b, 1, [chain[-1].op_id], "order.place", order("buy", MID, 10 * STEP))
    attacker = sign_op(ctx, a, 2, [a1.op_id], "order.place", order("buy", MID, 10 * STEP))  # seen honest; names a1
    taker = sign_op(ctx, c, 6, [honest.op_id, attacker.op_id], "order.place", order("sell", MID, 10 * STEP, "ioc"))
    replica = Replica(genesis)
    replica.receive_many([*chain, honest, attacker, taker])
    fills = [fill for fill in replica.fills() if fill.taker_order == taker.op_id]
    height = replica.graph.height
    names = {honest.op_id: "honest", attacker.op_id: "attacker"}
    return {
        "honest_height": height[honest.op_id],
        "attacker_height": height[attacker.op_id],
        "attacker_id_smaller": attacker.op_id < honest.op_id,
        "filled": [names.get(fill.maker_order, "other") for fill in fills],
        "market": MARKET.symbol,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    emit(bench="environment", cpus=os.cpu_count(), python=sys.version.split()[0], clock="process CPU time")
    genesis, keys = channel(max(NS))
    ctx = genesis.context()
    parents = [keccak256(b"a head")]  # the height they share: the same parents for every order
    sign_rate, id_rate = rates(ctx, keys[0], parents, 2000)
    emit(bench="grind_rates", sign_per_s=round(sign_rate), op_id_per_s=round(id_rate))
    found = ranks(ctx, keys, parents, args.trials, args.seed)
    for (n, k), rank in sorted(found.items()):
        emit(bench="grind_rank", n=n, k=k, trials=len(rank), mean_rank=round(sum(rank) / len(rank), 3),
             formula=round(1 + (n - 1) / (2**k + 1), 3), first=round(rank.count(1) / len(rank), 3),
             first_formula=round(2**k / (2**k + n - 1), 3), grind_ms=round(2**k / id_rate * 1e3, 3))
    emit(bench="backdating", **backdating())


if __name__ == "__main__":
    main()
