"""Perp subscriptions benchmark: what the ``positions`` and ``account`` topics add to each batch a
node applies (channel/runtime/perp_feed.py).

    python benchmarks/perp_feed.py [--fills 1000] [--traders 20]

A crossing flow on ETH-PERP (makers rest asks, takers lift them with ioc orders, every fill
moving two positions), applied one operation at a time to a replica, each followed by
`PerpFeed.update` as `Node.announce` calls it, with:

- ``none``: no subscriber (the baseline: the feed returns at once);
- ``own``: the node's participant's ``positions`` and ``account`` (what a trader's UI or a ccxt
  ``watch_positions`` opens);
- ``all``: ``positions`` of every trader (a risk desk's view).

Prints one JSON line: microseconds per operation for each, best of three interleaved rounds in
CPU time (as benchmarks/ingest.py does), and the events published.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit
from benchmarks.ingest import best_of
from benchmarks.perp import E9, channel, order
from channel.runtime.events import EventHub
from channel.runtime.perp_feed import PerpFeed
from crdt.genesis import Genesis
from crdt.ops import SignedOp, address_of, sign_op
from crdt.replica import Cut, Replica


def flow(genesis: Genesis, keys: list[bytes], fills: int) -> list[SignedOp]:
    """The oracle's price, then `fills` maker asks each lifted by a taker's ioc bid, each signed
    on the heads before it (a replica signs them as it goes)."""
    replica, seqs, ops = Replica(genesis), [0] * len(keys), []

    def sign(who: int, kind: str, body: dict[str, object]) -> None:
        seqs[who] += 1
        op = sign_op(replica.ctx, keys[who], seqs[who], sorted(replica.graph.heads), kind, body)
        replica.receive_many([op])
        ops.append(op)

    sign(0, "oracle.price", {"market": "ETH-PERP", "price": 3000 * E9})
    traders = len(keys) - 1
    for i in range(fills):
        maker, taker = 1 + (2 * i) % traders, 1 + (2 * i + 1) % traders
        sign(maker, "order.place", order("ETH-PERP", "sell", 3000 * E9, E9 // 100))
        sign(taker, "order.place", order("ETH-PERP", "buy", 3000 * E9, E9 // 100, "ioc"))
    return ops


def run(genesis: Genesis, ops: list[SignedOp], accounts: list[bytes], own: bool) -> int:
    """Apply `ops` one at a time with the feed's update after each; the events published."""
    replica, hub = Replica(genesis), EventHub()
    me = genesis.participants[1].address
    feed = PerpFeed(replica, hub, me)
    streams = []
    if own:
        streams += [hub.open("positions")[1], hub.open("account")[1]]
    streams += [hub.open("positions", {"account": account})[1] for account in accounts]
    first, rest = ops[0], ops[1:]
    replica.receive_many([first])
    replica.certify(Cut(1, tuple(sorted(replica.graph.heads)), 1))  # the price, fixed
    feed.update([])
    events = 0
    for op in rest:
        feed.update(replica.receive_many([op]).accepted)
        for stream in streams:  # a subscriber that keeps up
            while True:
                try:
                    stream.receive_nowait()
                    events += 1
                except trio.WouldBlock:  # drained
                    break
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=1000)
    parser.add_argument("--traders", type=int, default=20)
    args = parser.parse_args()
    genesis, keys = channel(args.traders)
    ops = flow(genesis, keys, args.fills)
    everyone = [address_of(key) for key in keys[1:]]
    counts = {"none": run(genesis, ops, [], False), "own": run(genesis, ops, [], True),
              "all": run(genesis, ops, everyone, False)}
    best = best_of(3, none=lambda: run(genesis, ops, [], False), own=lambda: run(genesis, ops, [], True),
                   all=lambda: run(genesis, ops, everyone, False))
    per_op = {name: round(seconds / (len(ops) - 1) * 1e6, 1) for name, seconds in best.items()}
    emit(measure="perp_feed", operations=len(ops) - 1, traders=args.traders,
         us_per_op_none=per_op["none"], us_per_op_own=per_op["own"], us_per_op_all=per_op["all"],
         events_own=counts["own"], events_all=counts["all"])


if __name__ == "__main__":
    main()
