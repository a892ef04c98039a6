"""Network benchmark: operations delivered per second between nodes on loopback, with latency.

For 2 and for 4 nodes (py-libp2p hosts on 127.0.0.1, Noise, yamux, tuned GossipSub, each with a
`p2p.peer.Peer` and a replica), in one trio process:
- ``raw_gossipsub``: each node publishes 200-byte messages as fast as it can on a plain topic;
  the rate at which messages reach each node is the baseline;
- ``throughput``: each node submits signed operations as fast as it can; operations per second
  delivered to every node (decoded, verified and applied), with batching;
- ``latency``: each node submits at a steady pace; p50/p99 from submit to apply, for each
  (operation, receiving node) and for the last node to get each operation.

Prints one JSON line per measurement. All nodes share one process (so one core): the raw rate
is measured the same way, so the ratio is fair. Run: ``python benchmarks/network.py``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio
import trio.lowlevel
from libp2p.crypto.ed25519 import create_new_key_pair

from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ops import SignedOp, address_of, sign_op
from crdt.replica import Replica
from crdt.types import Address, Symbol
from p2p.host import HostConfig, Libp2pTransport, open_libp2p_transport
from p2p.peer import Peer, PeerConfig, open_peer

TOKEN = Symbol("USDC")
DEADLINE = 120.0


def keys(n: int) -> list[bytes]:
    return [keccak256(b"parley-network-bench-%d" % i) for i in range(n)]


def genesis_for(n: int) -> Genesis:
    participants = [Participant(address_of(k), Role.TRADER) for k in keys(n)]
    return Genesis.create(
        chain_id=31337,
        adjudicator=b"\x11" * 20,
        participants=participants,
        tokens=[Token(TOKEN, Address(b"\x22" * 20), 6)],
        initial_balances=[InitialBalance(p.address, TOKEN, 10**15) for p in participants],
    )


class Signer:
    """Signs participant `index`'s next transfer on the node's current heads (as a node does)."""

    def __init__(self, genesis: Genesis, index: int) -> None:
        self.ctx = genesis.context()
        self.key = keys(len(genesis.participants))[index]
        self.to = genesis.participants[(index + 1) % len(genesis.participants)].address
        self.seq = 0

    def next(self, replica: Replica, count: int = 1) -> list[SignedOp]:
        """`count` operations: the first on the replica's heads, each next on the one before."""
        ops: list[SignedOp] = []
        parents: set[bytes] = set(replica.graph.heads)
        for _ in range(count):
            self.seq += 1
            body = {"to": self.to, "token": TOKEN, "amount": 1}
            ops.append(sign_op(self.ctx, self.key, self.seq, parents, "transfer", body, ts=self.seq))
            parents = {ops[-1].op_id}
        return ops


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@asynccontextmanager
async def hosts(n: int, tmp: Path) -> AsyncIterator[list[Libp2pTransport]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_libp2p_transport(HostConfig(identity=create_new_key_pair())))
        transports = [first]
        for _ in range(1, n):
            boot = tuple(a for t in transports for a in t.listen_addrs())
            config = HostConfig(identity=create_new_key_pair(), bootstrap=boot)  # admission: only at connect
            transports.append(await stack.enter_async_context(open_libp2p_transport(config)))
        with trio.fail_after(DEADLINE):
            while not all(len(t.connected_peers()) == n - 1 for t in transports):  # noqa: ASYNC110 - no event
                await trio.sleep(0.05)
        yield transports


async def wait_mesh(transports: list[Libp2pTransport], topic: str) -> None:
    def ready(t: Libp2pTransport) -> bool:
        return len(t.pubsub.peer_topics.get(topic, ())) == len(transports) - 1 and bool(t.router.mesh.get(topic))

    with trio.fail_after(DEADLINE):
        while not all(ready(t) for t in transports):  # noqa: ASYNC110 - libp2p announces no event
            await trio.sleep(0.05)


async def raw_gossipsub(n: int, tmp: Path, per_node: int) -> dict[str, object]:
    topic = "/parley/bench/raw"
    async with hosts(n, tmp) as transports:
        received = [0] * n
        done = trio.Event()
        expected = per_node * (n - 1)

        async def reader(i: int, subscription: object) -> None:
            async for _ in subscription:  # type: ignore[attr-defined]
                received[i] += 1
                if all(r >= expected for r in received):
                    done.set()

        async with trio.open_nursery() as nursery:
            for i, t in enumerate(transports):
                nursery.start_soon(reader, i, await t.subscribe(topic, lambda _f, _d: True))
            await wait_mesh(transports, topic)
            start = time.perf_counter()

            async def publish(i: int) -> None:
                for seq in range(per_node):
                    await transports[i].publish(topic, i.to_bytes(2, "big") + seq.to_bytes(6, "big") + b"\x00" * 192)

            async with trio.open_nursery() as publishers:
                for i in range(n):
                    publishers.start_soon(publish, i)
            with trio.move_on_after(20):
                await done.wait()
            elapsed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
    per_node_rate = min(received) / elapsed
    return {
        "bench": "network.raw_gossipsub",
        "nodes": n,
        "message_bytes": 200,
        "published_per_node": per_node,
        "delivered_min": min(received),
        "expected_per_node": expected,
        "seconds": round(elapsed, 3),
        "msgs_per_s_per_node": round(per_node_rate, 1),
    }


@asynccontextmanager
async def peers(n: int, tmp: Path, genesis: Genesis, arrivals: list[dict[bytes, float]]) -> AsyncIterator[list[Peer]]:
    async with hosts(n, tmp) as transports, AsyncExitStack() as stack:
        out = []
        for i, t in enumerate(transports):

            def note(ops: Sequence[SignedOp], i: int = i) -> None:
                now = time.perf_counter()
                for op in ops:
                    arrivals[i].setdefault(op.op_id, now)

            out.append(await stack.enter_async_context(open_peer(Replica(genesis), t, PeerConfig(), announce=note)))
        await wait_mesh(transports, out[0].topic)
        yield out


async def operations(n: int, tmp: Path, per_node: int, paced: float | None, args_chunk: int = 16) -> dict[str, object]:
    genesis = genesis_for(n)
    signers = [Signer(genesis, i) for i in range(n)]
    arrivals: list[dict[bytes, float]] = [{} for _ in range(n)]
    sent: dict[bytes, tuple[int, float]] = {}
    total = n * per_node
    async with peers(n, tmp, genesis, arrivals) as nodes:
        start = time.perf_counter()

        async def submit(i: int) -> None:
            # a burst submits `chunk` operations at a time (a market maker requoting); the
            # paced run submits them one by one
            chunk = 1 if paced is not None else args_chunk
            for k in range(0, per_node, chunk):
                ops = signers[i].next(nodes[i].replica, min(chunk, per_node - k))
                now = time.perf_counter()
                for op in ops:
                    sent[op.op_id] = (i, now)
                await nodes[i].submit_many(ops)
                if paced is not None:
                    await trio.sleep_until(start_trio + (k + 1) / paced)
                else:
                    await trio.lowlevel.checkpoint()

        start_trio = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(submit, i)
        with trio.move_on_after(DEADLINE):
            for node in nodes:
                await node.wait_until(lambda node=node: len(node.replica.graph) >= total)  # type: ignore[misc]
        elapsed = time.perf_counter() - start
        stats = [node.statistics() for node in nodes]
    per_delivery = [
        arrivals[j][op_id] - t0 for op_id, (i, t0) in sent.items() for j in range(n) if j != i and op_id in arrivals[j]
    ]
    to_all = [
        max(arrivals[j][op_id] for j in range(n) if j != i) - t0
        for op_id, (i, t0) in sent.items()
        if all(op_id in arrivals[j] for j in range(n))
    ]
    delivered = min(len(a) for a in arrivals)
    return {
        "bench": "network.latency" if paced else "network.throughput",
        "nodes": n,
        "ops_per_node": per_node,
        "pace_ops_per_s_per_node": paced,
        "delivered_to_every_node": delivered,
        "expected": total,
        "seconds": round(elapsed, 3),
        "ops_per_s_per_node": round(delivered / elapsed, 1),
        "latency_p50_ms": round(1000 * pct(per_delivery, 0.5), 2),
        "latency_p99_ms": round(1000 * pct(per_delivery, 0.99), 2),
        "all_nodes_p50_ms": round(1000 * pct(to_all, 0.5), 2),
        "all_nodes_p99_ms": round(1000 * pct(to_all, 0.99), 2),
        "gossip_batches_sent": sum(s.gossip_batches_sent for s in stats),
        "mean_ops_per_batch": round(
            sum(s.gossip_ops_sent for s in stats) / max(1, sum(s.gossip_batches_sent for s in stats)), 1
        ),
        "ops_via_sync": sum(s.sync_ops_received for s in stats),
    }


async def run(args: argparse.Namespace) -> None:
    for n in args.nodes:
        with tempfile.TemporaryDirectory() as d:
            raw = await raw_gossipsub(n, Path(d) / "raw", args.raw_messages)
        print(json.dumps(raw), flush=True)
        with tempfile.TemporaryDirectory() as d:
            burst = await operations(n, Path(d) / "burst", args.ops // n, None, args.chunk)
        ops_rate, raw_rate = burst["ops_per_s_per_node"], raw["msgs_per_s_per_node"]
        assert isinstance(ops_rate, float)
        assert isinstance(raw_rate, float)
        burst["ratio_to_raw_gossipsub"] = round(ops_rate / max(1e-9, raw_rate), 2)
        print(json.dumps(burst), flush=True)
        with tempfile.TemporaryDirectory() as d:
            paced = await operations(n, Path(d) / "paced", int(args.pace * args.paced_seconds), args.pace)
        print(json.dumps(paced), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--ops", type=int, default=8000, help="operations in the throughput run, all nodes together")
    parser.add_argument("--raw-messages", type=int, default=1000, help="raw gossipsub messages per node")
    parser.add_argument("--chunk", type=int, default=16, help="operations per submit_many in the burst")
    parser.add_argument("--pace", type=float, default=20.0, help="ops/s per node in the latency run")
    parser.add_argument("--paced-seconds", type=float, default=3.0)
    trio.run(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
