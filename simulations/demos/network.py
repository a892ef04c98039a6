"""``parley demo``: a channel of N real node processes on 127.0.0.1, talking over libp2p.

1. writes a channel (genesis, encrypted keys, one node.toml per participant) into a folder;
2. starts the nodes as separate processes (`simulations.cluster`);
3. sends a seeded transfer workload through each node's local API, several requests in flight
   per node, with a live progress bar; then trades the genesis's ETH/USDC market: two market
   makers quote a ladder around a moving mid while the other nodes take (`simulations.trading`);
4. waits until every node holds every operation and they all report the same state hash and
   payout root, and the same fills (count and hash);
5. prints throughput and the latency a client sees for a submit (signed, stored, applied);
6. stops every node with SIGTERM and checks that they exit cleanly.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from channel.api.client import ApiError, AsyncClient, Endpoint
from channel.runtime.genesis_file import DEMO_ETH, DEMO_USDC
from crdt.genesis import Role
from simulations.cluster import USDC_UNIT, Cluster, NodeProcess, create_cluster, start_all, stop_all
from simulations.trading import Flow, agreement_table, market_views, run_order_flow

E9 = 10**9
CONVERGE_WITHIN = 60.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


@dataclass
class Workload:
    """What a transfer workload through the nodes' APIs gave."""

    latencies: list[float] = field(default_factory=list)  # seconds per submit
    refused: int = 0
    elapsed: float = 0.0
    last: dict[int, tuple[int, str]] = field(default_factory=dict)  # node -> (seq, op id) of its newest

    @property
    def accepted(self) -> int:
        return len(self.latencies) - self.refused

    def summary(self) -> str:
        p50, p99 = percentile(self.latencies, 0.5) * 1e3, percentile(self.latencies, 0.99) * 1e3
        return (f"{self.accepted / self.elapsed:,.0f} transfers/s through the APIs ({self.refused} refused); "
                f"submit latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")


def seeded_plan(nodes: int, transfers: int, seed: int) -> list[tuple[int, int]]:
    """(node, amount in e9 units) for each transfer: round robin over the nodes, whole USDC units
    (the API takes nothing finer) up to 0.1 USDC."""
    rng = random.Random(seed)
    return [(i % nodes, rng.randrange(1, 10**5) * USDC_UNIT) for i in range(transfers)]


async def run_workload(
    endpoints: list[Endpoint], addresses: list[str], plan: list[tuple[int, int]], concurrency: int,
    progress: Progress,
) -> Workload:
    """Submit the planned transfers through the nodes' APIs, `concurrency` in flight per node,
    advancing a progress bar. Each goes to a recipient chosen from its amount."""
    queues = [[amount for node, amount in plan if node == index] for index in range(len(endpoints))]
    result = Workload()
    task = progress.add_task("transfers", total=len(plan))

    async def submitter(index: int, client: AsyncClient, amounts: list[int]) -> None:
        recipients = [a for i, a in enumerate(addresses) if i != index]
        while amounts:
            amount = amounts.pop()
            to = recipients[amount // USDC_UNIT % len(recipients)]
            began = time.perf_counter()
            try:
                receipt = await client.transfer(to, "USDC", amount)
                result.last[index] = max(result.last.get(index, (0, "")), (receipt["seq"], receipt["op_id"]))
            except ApiError:
                result.refused += 1
            result.latencies.append(time.perf_counter() - began)
            progress.advance(task)

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        clients = [AsyncClient(endpoint) for endpoint in endpoints]
        for index, (client, amounts) in enumerate(zip(clients, queues, strict=True)):
            for _ in range(concurrency):
                nursery.start_soon(submitter, index, client, amounts)
    result.elapsed = time.perf_counter() - began
    for client in clients:
        await client.aclose()
    return result


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


async def converge(endpoints: list[Endpoint], expected: int) -> tuple[list[dict[str, Any]], float]:
    """Wait (at most CONVERGE_WITHIN seconds) until every node has `expected` operations and one
    state hash; return the last stats and how long it took."""
    began = time.perf_counter()
    async with AsyncClient(endpoints[0]) as first:
        clients = [first] + [AsyncClient(e) for e in endpoints[1:]]
        with trio.move_on_after(CONVERGE_WITHIN):
            while True:
                stats = [await client.stats() for client in clients]
                if all(s["operations"] >= expected for s in stats) and len({s["state_hash"] for s in stats}) == 1:
                    break
                await trio.sleep(0.05)
        for client in clients[1:]:
            await client.aclose()
    return stats, time.perf_counter() - began


def run_network_demo(
    *, participants: int = 4, transfers: int = 2000, concurrency: int = 4, seed: int = 0,
    folder: Path | None = None, quiet: bool = False,
) -> dict[str, Any]:
    console = Console(quiet=quiet)
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as tmp:
        root = folder or Path(tmp)
        console.print(f"[bold]Parley demo[/bold]: {participants} node processes on 127.0.0.1 over libp2p, "
                      f"{transfers} transfers")
        roles = [Role.MARKET_MAKER] + [Role.TRADER] * (participants - 1)
        cluster: Cluster = create_cluster(  # 10,000 USDC and 10,000 ETH each, and the ETH/USDC market
            root, participants, tokens=[DEMO_USDC, DEMO_ETH], initial=10_000 * E9, roles=roles, seed=seed
        )
        console.print(f"channel 0x{cluster.genesis.channel_id.hex()} in {root}")
        processes = [NodeProcess(cluster.config(i)) for i in range(participants)]
        started = time.perf_counter()
        endpoints = start_all(processes)
        console.print(f"{participants} nodes up in {time.perf_counter() - started:.1f} s")
        try:
            addresses = ["0x" + p.address.hex() for p in cluster.genesis.participants]
            with progress_bar(console) as progress:
                plan = seeded_plan(participants, transfers, seed)
                workload = trio.run(run_workload, endpoints, addresses, plan, concurrency, progress)
                flow = Flow(seed=seed)
                makers = (0, 1) if participants > 2 else (0,)
                task = progress.add_task("orders", total=flow.requests(len(makers), participants - len(makers)))
                orders = trio.run(run_order_flow, endpoints, cluster.genesis.markets[0], flow, makers,
                                  partial(progress.advance, task))
                progress.update(task, total=orders.requests)
            accepted = workload.accepted + orders.submitted
            stats, settle = trio.run(converge, endpoints, accepted)
            views = trio.run(market_views, endpoints, cluster.genesis.markets[0].symbol)
        finally:
            codes = stop_all(processes)
        fills = {(view.fills, view.fills_hash) for view in views}
        converged = (len({s["state_hash"] for s in stats}) == 1 and all(s["operations"] == accepted for s in stats)
                     and len(fills) == 1)
        console.print(agreement_table(views, stats, {}))
        p50, p99 = percentile(workload.latencies, 0.5) * 1e3, percentile(workload.latencies, 0.99) * 1e3
        console.print(
            f"{'[green]converged[/green]' if converged else '[red]NOT converged[/red]'}: "
            f"state hash [bold]{stats[0]['state_hash']}[/bold]\n"
            f"payout root [bold]{stats[0]['payout_root']}[/bold]\n"
            f"{views[0].fills} fills, hash {views[0].fills_hash}"
            f"{', the same on every node' if len(fills) == 1 else ' [red]on node 0: the nodes DIFFER[/red]'}\n"
            f"{workload.summary()}\n"
            f"{orders.summary()}\n"
            f"every node had everything {settle * 1e3:.0f} ms after the last submit\n"
            f"nodes stopped with exit codes {codes}"
        )
        return {
            "converged": converged,
            "nodes": participants,
            "transfers": workload.accepted,
            "orders": orders.submitted,
            "fills": views[0].fills,
            "fills_agree": len(fills) == 1,
            "refused": workload.refused,
            "transfers_per_s": round(accepted / workload.elapsed, 1),
            "submit_ms_p50": round(p50, 2),
            "submit_ms_p99": round(p99, 2),
            "converge_ms": round(settle * 1e3, 1),
            "state_hash": stats[0]["state_hash"],
            "payout_root": stats[0]["payout_root"],
            "exit_codes": codes,
        }
