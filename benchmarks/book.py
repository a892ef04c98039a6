"""Order book benchmark: orders applied per second in replay, beside transfers and bare recovery.

    python benchmarks/book.py [--ops N] [--traders 10] [--seed 1]

Prints one JSON line per measurement. Every rate is measured in the same run, interleaved with
the others (best of three, in CPU time of this process, as benchmarks/ingest.py does), so the
ratios hold on a busy machine too:

- ``recover_bare``: the baseline, secp256k1 recovery alone over the order flow's signatures;
- ``transfer``: the seeded transfer workload (`simulations.workload`): ``ingest_per_s`` is
  decode + verify + accept + apply, ``replay_per_s`` accept + apply of decoded operations;
- ``book_resting``: orders that mostly rest (gtc and post-only away from the mid, some cancels,
  a few takers), the same two rates, and the fills and open orders they leave;
- ``book_crossing``: makers and takers in turn, most takers ioc orders that cross one to three
  price levels;
- ``book_late_op``: one order that sorts before k applied operations of the crossing flow
  (it crosses, so everything after it re-matches), against a full replay.

With the compiled crdt core (setup.py), the same measurements follow from the pure-Python
build, in a subprocess with ``PARLEY_PURE=1`` (``--this-build-only`` skips it); every line
says its ``build``. ``matching_adds`` is the transfer ingest rate over the flow's, minus one:
what matching adds to the cost of ingesting an operation (issue 12's target: 0.2 at most).

Operations form one chain (each names the previous one as its parent, and its author's own
previous operation, as a node's `parents()` and the transfer workload do), so replay applies
them in creation order and a late operation's position is exact.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coincurve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, pure_too
from benchmarks.ingest import best_of, timed
from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.markets import Market, MarketKind
from crdt.ops import SignedOp, address_of, decode_op, sign_op
from crdt.replica import Replica
from crdt.types import Symbol
from simulations.workload import Workload

E9 = 10**9
TICK = 10**7  # 0.01 USDC
STEP = 10**6  # 0.001 WETH
MID = 1000 * E9
MARKET = Market(
    symbol="WETH/USDC", kind=MarketKind.SPOT, base=Symbol("WETH"), quote=Symbol("USDC"), tick_size=TICK,
    step_size=STEP, min_qty=STEP, max_qty=10**6 * E9, min_price=TICK, max_price=10**7 * E9,
    maker_fee=200_000, taker_fee=500_000,
)


def channel(traders: int) -> tuple[Genesis, list[bytes]]:
    keys = [keccak256(b"book" + i.to_bytes(4, "big")) for i in range(traders + 1)]  # the last: the late one
    participants = [Participant(address_of(key), Role.TRADER) for key in keys]
    tokens = [Token(Symbol("USDC"), b"\x22" * 20, 6), Token(Symbol("WETH"), b"\x33" * 20, 18)]  # type: ignore[arg-type]
    genesis = Genesis.create(
        chain_id=1,
        adjudicator=b"\x11" * 20,
        participants=participants,
        tokens=tokens,
        initial_balances=[InitialBalance(p.address, t.symbol, 10**18) for p in participants for t in tokens],
        markets=[MARKET],
    )
    return genesis, keys


def order(side: str, price: int, qty: int, tif: str = "gtc") -> dict[str, Any]:
    return {"market": MARKET.symbol, "side": side, "type": "limit", "tif": tif, "price": price, "qty": qty,
            "reduce_only": False, "expires": 0}


class Flow:
    """A chain of signed order operations from `traders` authors, drawn from `random.Random(seed)`."""

    def __init__(self, genesis: Genesis, keys: list[bytes], seed: int) -> None:
        self.ctx = genesis.context()
        self.keys = keys
        self.rng = random.Random(seed)
        self.seqs = [0] * len(keys)
        self.placed: list[list[bytes]] = [[] for _ in keys]
        self.last: list[bytes] = []
        self.own: list[list[bytes]] = [[] for _ in keys]  # each author's last operation

    def sign(self, author: int, kind: str, body: dict[str, Any]) -> SignedOp:
        self.seqs[author] += 1
        op = sign_op(self.ctx, self.keys[author], self.seqs[author], self.last + self.own[author], kind, body)
        self.last = self.own[author] = [op.op_id]
        if kind == "order.place":
            self.placed[author].append(op.op_id)
        return op

    def resting_order(self, author: int) -> SignedOp:
        rng = self.rng
        side = rng.choice(("buy", "sell"))
        away = rng.randrange(1, 200) * TICK
        price = MID - away if side == "buy" else MID + away
        return self.sign(author, "order.place", order(side, price, rng.randrange(1, 100) * STEP,
                                                      rng.choice(("gtc", "post_only"))))

    def taker(self, author: int) -> SignedOp:
        rng = self.rng
        side = rng.choice(("buy", "sell"))
        reach = rng.randrange(1, 4) * 20 * TICK
        price = MID + reach if side == "buy" else MID - reach
        return self.sign(author, "order.place", order(side, price, rng.randrange(50, 300) * STEP, "ioc"))

    def resting(self, count: int) -> list[SignedOp]:
        ops = []
        for _ in range(count):
            author = self.rng.randrange(len(self.keys) - 1)
            roll = self.rng.randrange(100)
            if roll < 10 and self.placed[author]:
                ops.append(self.sign(author, "order.cancel", {"order": self.rng.choice(self.placed[author])}))
            elif roll < 15:
                ops.append(self.taker(author))
            else:
                ops.append(self.resting_order(author))
        return ops

    def crossing(self, count: int) -> list[SignedOp]:
        ops = []
        for _ in range(count):
            author = self.rng.randrange(len(self.keys) - 1)
            if self.rng.randrange(100) < 40:  # makers near the mid, so takers reach them
                side = self.rng.choice(("buy", "sell"))
                away = self.rng.randrange(1, 60) * TICK
                price = MID - away if side == "buy" else MID + away
                ops.append(self.sign(author, "order.place", order(side, price, self.rng.randrange(50, 200) * STEP)))
            else:
                ops.append(self.taker(author))
        return ops


def replay(genesis: Genesis, ops: list[SignedOp]) -> Replica:
    replica = Replica(genesis)
    for i in range(0, len(ops), 100):
        replica.receive_many(ops[i : i + 100])
    return replica


def ingest(genesis: Genesis, raws: list[bytes]) -> Replica:
    ctx = genesis.context()
    replica = Replica(genesis, ctx)
    for i in range(0, len(raws), 100):
        replica.receive_many([decode_op(raw, ctx) for raw in raws[i : i + 100]])
    return replica


def late_op(genesis: Genesis, keys: list[bytes], ops: list[SignedOp], sorts_before: int) -> dict[str, object]:
    """A crossing order by the participant that has not written yet, whose parent puts it before
    `sorts_before` of the applied operations."""
    anchor = ops[max(0, len(ops) - sorts_before - 1)]
    late = sign_op(genesis.context(), keys[-1], 1, [anchor.op_id], "order.place",
                   order("buy", MID + 60 * TICK, 500 * STEP, "ioc"))
    replica = replay(genesis, ops)
    fills_before = len(replica.fills())
    before = replica.replayed
    incremental = timed(lambda: replica.receive(late))
    full = timed(lambda: replay(genesis, [*ops, late]))
    return {
        "reapplied": replica.replayed - before,
        "fills_before": fills_before,
        "fills_after": len(replica.fills()),
        "late_op_ms": round(incremental * 1e3, 3),
        "full_replay_ms": round(full * 1e3, 3),
        "speedup": round(full / incremental, 1),
    }


def run(count: int, traders: int, seed: int) -> None:
    genesis, keys = channel(traders)
    resting = Flow(genesis, keys, seed).resting(count)
    crossing = Flow(genesis, keys, seed + 1).crossing(count)
    transfers = list(Workload(genesis, keys[:traders], seed=seed).ops(count))
    pairs = [(op.signature[:64] + bytes((op.signature[64] - 27,)), op.op_id) for op in crossing]

    def bare() -> None:
        for signature, digest in pairs:
            coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)

    flows = {"transfer": transfers, "book_resting": resting, "book_crossing": crossing}
    functions: dict[str, Callable[[], object]] = {"bare": bare}
    for name, ops in flows.items():
        raws = [op.raw for op in ops]
        functions[name + ":ingest"] = lambda raws=raws: ingest(genesis, raws)
        functions[name + ":replay"] = lambda ops=ops: replay(genesis, ops)
    best = best_of(3, **functions)
    recover = count / best["bare"]
    emit(bench="recover_bare", ops=count, per_s=round(recover))
    transfer_ingest = count / best["transfer:ingest"]
    for name, ops in flows.items():
        replica = replay(genesis, ops)
        rejected = len(replica.rejected())
        extra: dict[str, object] = {}
        if name != "transfer":
            ledger = replica.ledger
            book = ledger.book(MARKET.symbol)
            extra = {"fills": len(replica.fills()), "open_orders": len(book), "rejected": rejected,
                     "fills_per_s": round(len(replica.fills()) / best[name + ":replay"]),
                     "matching_adds": round(transfer_ingest * best[name + ":ingest"] / count - 1, 3)}
            ledger.check_conservation()
        ingest_rate, replay_rate = count / best[name + ":ingest"], count / best[name + ":replay"]
        emit(bench=name, ops=count, ingest_per_s=round(ingest_rate), replay_per_s=round(replay_rate),
             ingest_ratio_to_recover=round(ingest_rate / recover, 3), **extra)
    for k in (10, 100, 1000):
        if k < count:
            emit(bench="book_late_op", ops=count, sorts_before=k, **late_op(genesis, keys, crossing, k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--traders", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--this-build-only", action="store_true",
                        help="skip the second run with the pure-Python crdt core (PARLEY_PURE=1)")
    args = parser.parse_args()
    emit(bench="environment", cpus=os.cpu_count(), python=sys.version.split()[0], clock="process CPU time")
    run(args.ops, args.traders, args.seed)
    pure_too()


if __name__ == "__main__":
    main()
