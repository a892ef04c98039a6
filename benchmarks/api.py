"""Submit latency through a node's local API (a real node process, its own SQLite, fsync on).

    python benchmarks/api.py [--requests N]

Prints JSON lines:
- ``api_http``: one transfer at a time over HTTP (``POST /rpc``), p50/p99 in ms: the time a
  client waits for an operation to be signed, stored durably, applied and queued for gossip;
- ``api_ws``: the same over one WebSocket (JSON-RPC frames, no HTTP request per call);
- ``api_noop``: ``parley_heads`` over HTTP, the floor of the HTTP stack itself, for comparison;
- ``api_throughput``: 8 requests in flight over HTTP, transfers per second;
- ``api_http_cluster`` and ``api_noop_cluster``: the same two HTTP measurements at one node of a
  running 4-node channel (gossip, sync and checkpoint consensus at the default 1 s interval,
  all four processes on this machine), one request every 10 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, percentiles
from channel.api.client import AsyncClient, Client, Endpoint
from crdt.genesis import Token
from simulations.cluster import USDC_UNIT, NodeProcess, create_cluster, start_all, stop_all


def http_latency(endpoint: Endpoint, to: str, n: int, method: str, pause: float = 0.0) -> list[float]:
    samples = []
    with Client(endpoint) as client:
        for i in range(n):
            began = time.perf_counter()
            if method == "transfer":
                client.transfer(to, "USDC", (1 + i) * USDC_UNIT)
            else:
                client.heads()
            samples.append(time.perf_counter() - began)
            time.sleep(pause)
    return samples


def ws_latency(endpoint: Endpoint, to: str, n: int) -> list[float]:
    from websockets.sync.client import connect

    samples = []
    with connect(endpoint.ws_url, additional_headers=endpoint.headers) as ws:
        for i in range(n):
            request = {"jsonrpc": "2.0", "id": i, "method": "parley_transfer", "params": [to, "USDC", str(1 + i)]}
            began = time.perf_counter()
            ws.send(json.dumps(request))
            answer = json.loads(ws.recv())
            samples.append(time.perf_counter() - began)
            if "error" in answer:
                raise RuntimeError(answer["error"])
    return samples


async def throughput(endpoint: Endpoint, to: str, n: int, in_flight: int) -> float:
    remaining = list(range(n))

    async def worker(client: AsyncClient) -> None:
        while remaining:
            await client.transfer(to, "USDC", (1 + remaining.pop()) * USDC_UNIT)

    began = time.perf_counter()
    async with AsyncClient(endpoint) as client, trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker, client)
    return n / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parley-bench-api-") as tmp:
        cluster = create_cluster(Path(tmp), 2, tokens=[Token("USDC", b"\x22" * 20, 6)], initial=10**18)  # type: ignore[arg-type]
        node = NodeProcess(cluster.config(0))
        endpoint = node.start()
        try:
            to = "0x" + cluster.genesis.participants[1].address.hex()
            http_latency(endpoint, to, 50, "transfer")  # warm up
            n = args.requests
            emit(bench="api_http", requests=n, **percentiles(http_latency(endpoint, to, n, "transfer")))
            emit(bench="api_ws", requests=n, **percentiles(ws_latency(endpoint, to, n)))
            emit(bench="api_noop", requests=n, **percentiles(http_latency(endpoint, to, n, "heads")))
            rate = trio.run(throughput, endpoint, to, args.requests, 8)
            emit(bench="api_throughput", requests=args.requests, in_flight=8, transfers_per_s=round(rate, 1))
        finally:
            node.stop()
    with tempfile.TemporaryDirectory(prefix="parley-bench-api-") as tmp:
        cluster = create_cluster(Path(tmp), 4, tokens=[Token("USDC", b"\x22" * 20, 6)], initial=10**18)  # type: ignore[arg-type]
        nodes = [NodeProcess(cluster.config(i)) for i in range(4)]
        endpoints = start_all(nodes)
        try:
            to = "0x" + cluster.genesis.participants[1].address.hex()
            n = min(args.requests, 500)
            transfers = http_latency(endpoints[0], to, n, "transfer", pause=0.01)
            emit(bench="api_http_cluster", nodes=4, requests=n, **percentiles(transfers))
            emit(bench="api_noop_cluster", nodes=4, requests=n,
                 **percentiles(http_latency(endpoints[0], to, n, "heads", pause=0.01)))
        finally:
            stop_all(nodes)


if __name__ == "__main__":
    main()
