"""One fault run: real node processes in namespaces, clients, the schedule, the history, the verdicts.

`run_faults(config)` lays out an n-node channel (`simulations.cluster.create_cluster` with the
namespace addresses), starts every node as ``ip netns exec NS python -m channel node run``, a
fault proxy in front of each node's libp2p port and a forwarder to each node's API (all in this
process, under trio), waits until every node is connected to every other, and then for
``duration`` seconds:

- one client per node submits a transfer every ``1 / rate`` seconds through that node's API and
  records the request, its answer and its latency (`checker` says what each outcome means);
- a poller reads every node's status of every acknowledged operation (JSON-RPC batches) once a
  second and records each change, and the node's stats;
- the fault driver carries out the schedule (`schedule.make_schedule`) at its times.

Then the clients stop, the harness waits (at most ``settle`` seconds) until the nodes agree on a
version and a state hash, and reads from each node its stats, the status of every acknowledged
operation, its evidence and its certificates. The history goes to ``history.jsonl`` as it
happens (a run that fails half-way still leaves what it saw), the verdicts and metrics to
``results.json``, and a plot to ``latency.png``.

Whatever happens (an error, Ctrl-C), every node is continued, terminated and reaped, and every
namespace deleted, before `run_faults` returns or raises.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import trio

from channel.api.client import ApiError, AsyncClient, ClientError, Endpoint
from channel.runtime.genesis_file import DEMO_USDC
from simulations.cluster import USDC_UNIT, NodeProcess, create_cluster, free_port
from simulations.faults import checker
from simulations.faults.errors import FaultsError
from simulations.faults.netns import Topology, create_topology, loopback_topology, namespaces_available
from simulations.faults.plot import plot
from simulations.faults.proxy import ApiForwarder, FaultProxy, FaultTable, LinkFault
from simulations.faults.schedule import KINDS, LIVENESS_BOUND, RECOVERY, SHAPES, Fault, Schedule, make_schedule

E9 = 10**9
SUBMIT_TIMEOUT = 5.0
POLL_INTERVAL = 1.0
BATCH = 100  # the API's largest JSON-RPC batch
START_TIMEOUT = 90.0


@dataclass(frozen=True, slots=True)
class FaultConfig:
    out: Path
    nodes: int = 4
    seed: int = 0
    duration: float = 120.0
    rate: float = 2.0  # transfers per second per client
    kinds: tuple[str, ...] = KINDS
    shapes: tuple[str, ...] = SHAPES
    settle: float = 30.0
    liveness_bound: float = LIVENESS_BOUND
    recovery: float = RECOVERY
    loopback: bool = False  # True: do not try namespaces


@dataclass
class _History:
    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    _file: TextIO | None = None

    def open(self) -> None:
        self._file = self.path.open("w")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def now(self) -> float:
        return round(trio.current_time() - self.started, 4)

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
            self._file.flush()


@dataclass
class _Node:
    index: int
    process: NodeProcess
    api_port: int
    address: str
    endpoint: Endpoint | None = None
    paused: bool = False
    api: AsyncClient | None = None  # kept across calls: a new client per call costs ~10 ms of CPU
    http: httpx.AsyncClient | None = None  # for JSON-RPC batches

    async def aclose(self) -> None:
        if self.api is not None:
            await self.api.aclose()
        if self.http is not None:
            await self.http.aclose()


class _Run:
    def __init__(self, config: FaultConfig, topology: Topology, nodes: list[_Node], schedule: Schedule,
                 history: _History, say: Callable[[str], None]) -> None:
        self.config, self.topology, self.nodes, self.schedule = config, topology, nodes, schedule
        self.history, self.say = history, say
        self.table = FaultTable()
        self.acked: dict[str, int] = {}  # op id: origin node
        self.final_at: dict[tuple[int, str], str] = {}  # last status seen per (node, op)
        self.proxies: list[FaultProxy] = []

    # -- nodes --------------------------------------------------------------------------------

    async def wait_ready(self, node: _Node, within: float = START_TIMEOUT) -> None:
        info_path = node.process.data_dir / "api.json"
        with trio.move_on_after(within):
            while True:
                process = node.process.process
                if process is not None and process.poll() is not None:
                    raise FaultsError(f"node {node.index} exited with {process.returncode}; see {node.process.log}")
                try:
                    info = json.loads(info_path.read_text())
                    if process is not None and info.get("pid") == process.pid:
                        token = (node.process.data_dir / "api-token").read_text().strip()
                        if node.endpoint is None:
                            node.endpoint = Endpoint(f"http://127.0.0.1:{node.api_port}", token)
                            node.api = AsyncClient(node.endpoint, timeout=SUBMIT_TIMEOUT)
                            node.http = httpx.AsyncClient(base_url=node.endpoint.url, headers=node.endpoint.headers,
                                                          timeout=5.0)
                        assert node.api is not None
                        await node.api.stats()
                        return
                except (OSError, ValueError, ClientError):
                    pass
                await trio.sleep(0.1)
        raise FaultsError(f"node {node.index} did not start within {within:.0f} s; see {node.process.log}")

    async def wait_connected(self, within: float = 60.0) -> None:
        """Until every node has a connection to every other (checkpoints need news: the clients
        bring the first ones, during the schedule's warm-up)."""
        with trio.move_on_after(within):
            while True:
                stats = await self._all_stats()
                if all(s is not None and int(s.get("peers") or 0) >= len(self.nodes) - 1 for s in stats):
                    return
                await trio.sleep(0.5)
        raise FaultsError(f"the nodes did not all connect within {within:.0f} s; see the node.log files "
                          f"in {self.config.out / 'cluster'}")

    async def _stats(self, node: _Node) -> dict[str, Any] | None:
        if node.api is None or node.paused:
            return None
        try:
            with trio.move_on_after(3.0):
                stats: dict[str, Any] = await node.api.stats()
                return stats
        except ClientError:
            pass
        return None

    async def _all_stats(self) -> list[dict[str, Any] | None]:
        results: list[dict[str, Any] | None] = [None] * len(self.nodes)

        async def one(node: _Node) -> None:
            results[node.index] = await self._stats(node)

        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(one, node)
        return results

    # -- clients ------------------------------------------------------------------------------

    async def client(self, node: _Node, until: float) -> None:
        rng = random.Random(f"{self.config.seed}-client-{node.index}")
        others = [n.address for n in self.nodes if n.index != node.index]
        interval = 1.0 / self.config.rate
        due = trio.current_time() + rng.uniform(0, interval)
        count = 0
        while due < until:
            await trio.sleep_until(due)
            due += interval
            count += 1
            request_id = f"faults-{self.config.seed}-{node.index}-{count}"
            record: dict[str, Any] = {"type": "submit", "t": self.history.now(), "node": node.index,
                                      "request_id": request_id}
            sent = trio.current_time()
            assert node.api is not None
            with trio.move_on_after(SUBMIT_TIMEOUT + 1) as scope:
                try:
                    receipt = await node.api.transfer(rng.choice(others), "USDC", USDC_UNIT, request_id=request_id)
                    record.update(outcome="ok", op_id=receipt["op_id"], status=receipt["status"])
                    self.acked.setdefault(receipt["op_id"], node.index)
                except ApiError as exc:  # the node answered: nothing was signed
                    record.update(outcome="fail", error=str(exc)[:200])
                except ClientError as exc:  # no answer: it may or may not have been signed
                    record.update(outcome="info", error=str(exc)[:200])
            if scope.cancelled_caught:
                record.update(outcome="info", error=f"no answer within {SUBMIT_TIMEOUT + 1:.0f} s")
            record["latency"] = round(trio.current_time() - sent, 4)
            self.history.add(record)
            due = max(due, trio.current_time())  # no burst to catch up after a stall

    # -- polling ------------------------------------------------------------------------------

    async def _batch(self, node: _Node, method: str, params: list[list[Any]]) -> list[Any] | None:
        """One JSON-RPC call per params list, in batches of `BATCH`: the results (an error
        object where one failed), or None if the node could not be asked."""
        if node.http is None or node.paused:
            return None
        results: list[Any] = []
        try:
            for first in range(0, len(params), BATCH):
                chunk = params[first:first + BATCH]
                body = [{"jsonrpc": "2.0", "id": i, "method": method, "params": p} for i, p in enumerate(chunk)]
                with trio.fail_after(6.0):
                    answer = (await node.http.post("/rpc", json=body)).json()
                by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
                for i in range(len(chunk)):
                    item = by_id.get(i, {})
                    results.append(item.get("result", item.get("error")))
        except (httpx.HTTPError, trio.TooSlowError, ValueError, TypeError, AttributeError):
            return None
        return results

    async def poll_node(self, node: _Node, round_: int) -> None:
        ops = [op for op in self.acked if round_ % 5 == 0 or self.final_at.get((node.index, op)) not in checker.FINAL]
        if ops:
            answers = await self._batch(node, "parley_status", [[op] for op in ops])
            if answers is not None:
                t = self.history.now()
                for op, answer in zip(ops, answers, strict=True):
                    if isinstance(answer, dict) and isinstance(answer.get("status"), str):
                        status = answer["status"]
                        if self.final_at.get((node.index, op)) != status:
                            self.final_at[(node.index, op)] = status
                            self.history.add({"type": "status", "t": t, "node": node.index, "op_id": op,
                                              "status": status})
        stats = await self._stats(node)
        if stats is not None:
            self.history.add({"type": "stats", "t": self.history.now(), "node": node.index,
                              "version": stats.get("version"), "certified": stats.get("certified"),
                              "operations": stats.get("operations"), "final": stats.get("final"),
                              "peers": stats.get("peers")})

    async def poller(self, until: float) -> None:
        round_ = 0
        while trio.current_time() < until:
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for node in self.nodes:
                    nursery.start_soon(self.poll_node, node, round_)
            round_ += 1
            await trio.sleep_until(max(started + POLL_INTERVAL, trio.current_time()))

    # -- faults -------------------------------------------------------------------------------

    async def driver(self) -> None:
        for fault in self.schedule.faults:
            await trio.sleep_until(self.history.started + fault.start)
            self.say(f"{fault.start:6.1f} s  start  {fault.describe()}")
            self.history.add({"type": "fault", "t": self.history.now(), "phase": "start", "fault": fault.to_json()})
            await self.begin(fault)
            await trio.sleep_until(self.history.started + fault.end)
            await self.finish(fault)
            self.say(f"{fault.end:6.1f} s  heal   {fault.describe()}")
            self.history.add({"type": "fault", "t": self.history.now(), "phase": "end", "fault": fault.to_json()})

    def _directions(self, fault: Fault) -> list[tuple[int | None, int | None]]:
        n = len(self.nodes)
        if not self.topology.netns:  # the proxy cannot tell who dialled: into and out of the node's proxy
            targets = fault.nodes or tuple(range(n))
            return [d for k in targets for d in ((None, k), (k, None))]
        if fault.nodes:
            k = fault.nodes[0]
            return [d for j in range(n) if j != k for d in ((k, j), (j, k))]
        return [(i, j) for i in range(n) for j in range(n) if i != j]

    async def begin(self, fault: Fault) -> None:
        if fault.kind == "partition":
            await trio.to_thread.run_sync(self.topology.cut, {frozenset(link) for link in fault.links})
        elif fault.kind == "kill":
            self.nodes[fault.nodes[0]].process.kill()
        elif fault.kind == "pause":
            node = self.nodes[fault.nodes[0]]
            node.paused = True
            self._signal(node, signal.SIGSTOP)
        elif fault.kind == "delay":
            self.table.set(self._directions(fault), LinkFault(delay=fault.delay, jitter=fault.jitter))

    async def finish(self, fault: Fault) -> None:
        if fault.kind == "partition":
            await trio.to_thread.run_sync(self.topology.heal, {frozenset(link) for link in fault.links})
        elif fault.kind == "kill":
            node = self.nodes[fault.nodes[0]]
            node.process.launch()
            await self.wait_ready(node)
        elif fault.kind == "pause":
            node = self.nodes[fault.nodes[0]]
            self._signal(node, signal.SIGCONT)
            node.paused = False
        elif fault.kind == "delay":
            self.table.clear(self._directions(fault))

    @staticmethod
    def _signal(node: _Node, sig: signal.Signals) -> None:
        process = node.process.process
        if process is not None and process.poll() is None:
            process.send_signal(sig)

    # -- the end ------------------------------------------------------------------------------

    async def settle(self) -> float:
        """Wait (at most ``settle`` s) until the nodes are quiet and agree: every operation each
        holds is in its certified prefix, and all report one version and one state hash, twice
        in a row half a second apart. Returns how long it took."""
        started = trio.current_time()
        agreed = 0
        with trio.move_on_after(self.config.settle):
            while agreed < 2:
                stats = await self._all_stats()
                quiet = all(s is not None and s["final"] == s["operations"] for s in stats)
                same = len({(s["version"], s["state_hash"], s["operations"]) for s in stats if s is not None}) == 1
                agreed = agreed + 1 if quiet and same else 0
                await trio.sleep(0.5)
        return trio.current_time() - started

    async def final(self, node: _Node) -> dict[str, Any]:
        record: dict[str, Any] = {"type": "final", "t": self.history.now(), "node": node.index}
        stats = await self._stats(node)
        ops = sorted(self.acked)
        statuses = await self._batch(node, "parley_status", [[op] for op in ops])
        evidence = await self._batch(node, "parley_evidence", [[]])
        if stats is None or statuses is None or evidence is None:
            record["error"] = "the node did not answer"
            return record
        certified = int(stats.get("certified") or 0)
        certificates = await self._batch(node, "parley_certificate", [[v] for v in range(1, certified + 1)]) or []
        record.update(
            version=stats["version"], certified=certified, state_hash=stats["state_hash"],
            payout_root=stats["payout_root"], operations=stats["operations"],
            statuses={op: a.get("status") if isinstance(a, dict) else None
                      for op, a in zip(ops, statuses, strict=True)},
            evidence=evidence[0] if isinstance(evidence[0], list) else [],
            certificates={str(c["version"]): {"state_hash": c["state_hash"], "payout_root": c["payout_root"]}
                          for c in certificates if isinstance(c, dict) and "version" in c and "state_hash" in c},
        )
        return record


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000, 1)


def metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and latencies of the submits, overall and outside and inside fault windows."""
    submits = [r for r in records if r["type"] == "submit"]
    windows = [(start, end) for start, end, _ in checker.fault_windows(records)]

    def inside(t: float) -> bool:
        return any(start <= t < end for start, end in windows)

    ok = [r for r in submits if r["outcome"] == "ok"]
    out: dict[str, Any] = {
        "submits": len(submits),
        "acknowledged": len(ok),
        "refused": sum(r["outcome"] == "fail" for r in submits),
        "indeterminate": sum(r["outcome"] == "info" for r in submits),
        "submit_ms": {"p50": _percentile([r["latency"] for r in ok], 0.5),
                      "p99": _percentile([r["latency"] for r in ok], 0.99)},
        "submit_ms_calm": {"p50": _percentile([r["latency"] for r in ok if not inside(r["t"])], 0.5),
                           "p99": _percentile([r["latency"] for r in ok if not inside(r["t"])], 0.99)},
        "submit_ms_faulty": {"p50": _percentile([r["latency"] for r in ok if inside(r["t"])], 0.5),
                             "p99": _percentile([r["latency"] for r in ok if inside(r["t"])], 0.99)},
        "faults": len(windows),
        "recovery_s": checker.recovery_time(records),
    }
    first_final: dict[str, float] = {}
    for r in records:
        if r["type"] == "status" and r["status"] in checker.FINAL:
            first_final.setdefault(r["op_id"], r["t"])
    finality = [first_final[r["op_id"]] - r["t"] for r in ok if r["op_id"] in first_final]
    out["finality_ms"] = {"p50": _percentile(finality, 0.5), "p99": _percentile(finality, 0.99),
                          "note": "submit to the first poll (1 s apart) that saw it final at any node"}
    return out


def run_faults(config: FaultConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Carry out one fault run (the module docstring); returns results.json's content."""
    if config.nodes < 2:
        raise FaultsError(f"--nodes must be at least 2, not {config.nodes}")
    if config.duration <= 0 or config.rate <= 0:
        raise FaultsError("--duration and --rate must be positive")
    schedule = make_schedule(config.seed, config.nodes, config.duration, kinds=config.kinds, shapes=config.shapes,
                             recovery=config.recovery)
    config.out.mkdir(parents=True, exist_ok=True)
    if (config.out / "cluster").exists():
        raise FaultsError(f"{config.out} already holds a run (cluster/): choose another --out")
    usable, why = (False, "--loopback was given") if config.loopback else namespaces_available()
    kinds = config.kinds
    if usable:
        topology = create_topology(config.nodes)
        network = "netns"
    else:
        topology = loopback_topology(config.nodes)
        network = "loopback"
        if "partition" in kinds:
            schedule = Schedule(schedule.seed, schedule.n, schedule.duration,
                                tuple(f for f in schedule.faults if f.kind != "partition"))
        say(f"network namespaces unavailable ({why}): loopback with the proxy; no partitions, "
            "and a delay applies only to connections into the node's proxy")
    history = _History(config.out / "history.jsonl")
    nodes: list[_Node] = []
    try:
        api_ports = [free_port() for _ in range(config.nodes)]
        cluster = create_cluster(
            config.out / "cluster", config.nodes, tokens=[DEMO_USDC], initial=1_000_000 * E9, seed=config.seed,
            addresses=list(zip(topology.public, topology.listen, strict=True)), api_ports=api_ports,
        )
        for i in range(config.nodes):
            process = NodeProcess(cluster.config(i), prefix=topology.exec_prefix(i))
            nodes.append(_Node(i, process, api_ports[i], "0x" + cluster.genesis.participants[i].address.hex()))
        run = _Run(config, topology, nodes, schedule, history, say)
        wall = time.time()
        trio.run(_main, run, network)
        records = history.records
    finally:
        history.close()
        for node in nodes:
            popen = node.process.process
            if popen is not None and popen.poll() is None:
                popen.send_signal(signal.SIGCONT)
        for node in nodes:
            node.process.terminate()
        for node in nodes:
            node.process.wait(timeout=10)  # SIGKILL past that
        topology.close()
    verdicts = checker.check(records)
    results = {
        "seed": config.seed, "nodes": config.nodes, "duration": config.duration, "rate": config.rate,
        "network": network, "started": wall, "schedule": schedule.to_json(),
        "ok": all(v.ok for v in verdicts.values()),
        "verdicts": {name: v.to_json() for name, v in verdicts.items()},
        "findings": checker.findings(records),
        "metrics": metrics(records),
    }
    (config.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(records, config.out / "latency.png", title=f"{config.nodes} nodes, seed {config.seed}, {network}")
    return results


async def _main(run: _Run, network: str) -> None:
    config = run.config
    async with trio.open_nursery() as services:
        for node in run.nodes:
            proxy = FaultProxy(run.topology, node.index, run.table, random.Random(f"{config.seed}-proxy-{node.index}"))
            run.proxies.append(proxy)
            await services.start(proxy.serve)
            await services.start(ApiForwarder(run.topology, node.index, node.api_port).serve)
        for node in run.nodes:
            node.process.launch()
        for node in run.nodes:
            await run.wait_ready(node)
        await run.wait_connected()
        run.history.started = trio.current_time()
        run.history.open()
        run.history.add({
            "type": "run", "t": 0.0, "n": len(run.nodes), "seed": config.seed, "network": network,
            "liveness_bound": config.liveness_bound, "rate": config.rate, "duration": config.duration,
            "nodes": [{"index": n.index, "address": n.address, "honest": True} for n in run.nodes],
            "schedule": run.schedule.to_json(),
        })
        run.say(f"{len(run.nodes)} nodes up ({network}); {len(run.schedule.faults)} faults over "
                f"{config.duration:.0f} s")
        until = run.history.started + config.duration
        async with trio.open_nursery() as work:
            for node in run.nodes:
                work.start_soon(run.client, node, until)
            work.start_soon(run.poller, until)
            work.start_soon(run.driver)
        took = await run.settle()
        run.say(f"settled in {took:.1f} s; reading every node's final state")
        finals: list[dict[str, Any]] = [{} for _ in run.nodes]

        async def read(node: _Node) -> None:
            finals[node.index] = await run.final(node)

        async with trio.open_nursery() as reading:
            for node in run.nodes:
                reading.start_soon(read, node)
        for record in finals:
            run.history.add(record)
        for node in run.nodes:
            await node.aclose()
        services.cancel_scope.cancel()
