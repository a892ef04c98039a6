"""The node mode: a scenario run by whole `channel.runtime.node.Node`s instead of the engine.

Each participant is a real node (its SQLite store in a folder, its `p2p.peer.Peer`, the real
`ConsensusDriver`) over the in-memory transport (`p2p.memory.MemoryNetwork`), under trio's
`MockClock(autojump_threshold=0)`, with the same genesis and keys as the engine. The schedule's
partitions disconnect and reconnect the links; loss drops gossip on a link (the memory
transport delivers synchronously, so there is no latency, duplication or bandwidth model);
the workload submits transfers at Poisson times drawn from the seed.

It checks that the node's shell agrees with the engine, not that it repeats bit for bit: trio
schedules ready tasks in an order of its own, so two runs may differ. `compare` runs both on a
scenario and reports the verdicts each gives. Honest scenarios only (no behaviours, no faults).
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing

from channel.core.consensus import TimeoutConfig
from channel.runtime.driver import ConsensusDriver, DriverConfig
from channel.runtime.keystore import Key
from channel.runtime.node import Node, open_node
from channel.runtime.store import Store
from crdt.genesis import Genesis
from crdt.ops import address_of
from crdt.testing import make_genesis, test_keys
from p2p.memory import MemoryNetwork
from p2p.peer import PeerConfig
from simulations.sim.engine import TOKEN
from simulations.sim.run import run_scenario
from simulations.sim.scenario import Scenario, ScenarioError

EPOCH_MS = 1_000_000_000_000  # the nodes' wall clock: this plus trio's virtual time


class _VirtualStore(Store):
    """Own commits run in a worker thread; while one is under way the virtual clock must not
    jump (every task waits for it), or one submit would take seconds of virtual time."""

    in_flight = 0

    async def append_own_ops(
        self, ops: Iterable[tuple[bytes, bytes]], source: bytes, *, requests: Iterable[tuple[str, bytes, bytes]] = ()
    ) -> int:
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            return await super().append_own_ops(ops, source, requests=requests)
        _VirtualStore.in_flight += 1
        clock.autojump_threshold = math.inf
        try:
            return await super().append_own_ops(ops, source, requests=requests)
        finally:
            _VirtualStore.in_flight -= 1
            if _VirtualStore.in_flight == 0:
                clock.autojump_threshold = 0


def _wall_clock() -> int:
    return EPOCH_MS + int(trio.current_time() * 1000)


def _peer_id(index: int) -> bytes:
    return bytes([index + 1]) * 8


@dataclass(frozen=True, slots=True)
class NodeModeResult:
    versions: tuple[int, ...]  # per participant, at the end
    converged: bool  # every node holds the same operations and the same state hash
    agreement: bool  # every version's cut is the same at every node that applied it
    conservation: bool
    evidence: int  # equivocation evidence held by the nodes (honest runs: none)
    decided_after_heal: tuple[bool, ...]  # per participant: decided a version after the last heal

    def verdicts(self) -> dict[str, bool]:
        return {
            "agreement": self.agreement, "convergence": self.converged, "conservation": self.conservation,
            "evidence": self.evidence == 0, "liveness": all(self.decided_after_heal),
        }


def _configs(scenario: Scenario) -> tuple[DriverConfig, PeerConfig]:
    c = scenario.consensus
    timeouts = TimeoutConfig(
        propose_base=c.propose_base_ms, propose_delta=c.propose_delta_ms, prevote_base=c.vote_base_ms,
        prevote_delta=c.vote_delta_ms, precommit_base=c.vote_base_ms, precommit_delta=c.vote_delta_ms,
    )
    driver = DriverConfig(
        interval=c.interval_ms / 1000, time_bound_ms=c.time_bound_ms, catchup_period=c.catchup_period_ms / 1000,
        catchup_idle=c.catchup_idle_ms / 1000, stuck_after=c.stuck_after_ms / 1000, timeouts=timeouts,
    )
    sync = scenario.sync
    return driver, PeerConfig(sync_interval=sync.interval_ms / 1000, gap_grace=sync.gap_grace_ms / 1000)


@asynccontextmanager
async def _node(genesis: Genesis, keys: list[bytes], index: int, folder: Path, network: MemoryNetwork,
                scenario: Scenario) -> Any:
    store = _VirtualStore(folder / f"node{index}" / "node.sqlite")
    driver_config, peer_config = _configs(scenario)
    try:
        key = Key(address_of(keys[index]), keys[index])
        node = Node.restore(genesis, key, store, fresh_channel=True, wall_clock=_wall_clock)
        async with (
            network.open_transport(_peer_id(index), participant=key.address) as transport,
            open_node(node, transport, peer_config),
            trio.open_nursery() as nursery,
        ):
            node.driver = ConsensusDriver(node, transport, driver_config)
            await nursery.start(node.driver.run)
            yield node
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def _workload(node: Node, genesis: Genesis, scenario: Scenario, rng: random.Random) -> None:
    workload = scenario.workload
    stop = (workload.stop_ms if workload.stop_ms is not None else scenario.duration_ms) / 1000
    others = [a for a in genesis.addresses if a != node.address]
    await trio.sleep_until(workload.start_ms / 1000)
    while True:
        await trio.sleep(rng.expovariate(workload.rate_per_s))
        if trio.current_time() >= stop:
            return
        body = {"to": rng.choice(others), "token": TOKEN.symbol, "amount": rng.randint(1, workload.amount_max_e9)}
        await node.submit("transfer", body)


async def _schedule(network: MemoryNetwork, scenario: Scenario) -> None:
    """Partitions: at each start, the links they block go down; at each heal, up again."""
    n = scenario.participants
    changes = []
    for partition in scenario.network.partitions:
        changes.append((partition.start_ms, False, partition))
        if partition.end_ms is not None:
            changes.append((partition.end_ms, True, partition))
    for when, up, partition in sorted(changes, key=lambda change: change[0]):
        await trio.sleep_until(when / 1000)
        for a in range(n):
            for b in range(a + 1, n):
                if _separates(partition, a, b):
                    (network.connect if up else network.disconnect)(_peer_id(a), _peer_id(b))


def _separates(partition: Any, a: int, b: int) -> bool:
    if partition.groups is not None:
        side = {i: g for g, group in enumerate(partition.groups) for i in group}
        return side.get(a, -1 - a) != side.get(b, -1 - b)
    sources, targets = set(partition.sources or ()), set(partition.targets or ())
    return (a in sources and b in targets) or (b in sources and a in targets)  # links are two-way here


def run_nodes(scenario: Scenario, seed: int, folder: Path | None = None) -> NodeModeResult:
    """Run `scenario` with whole nodes under the virtual clock (see the module docstring)."""
    if scenario.behaviours or scenario.faults:
        raise ScenarioError("the node mode runs honest scenarios only (no behaviours, no faults)")
    keys = test_keys(b"parley-sim-%d", scenario.participants)
    genesis = make_genesis(keys, [TOKEN], initial=scenario.initial_balance_e9)
    with tempfile.TemporaryDirectory() as temporary:
        where = folder or Path(temporary)
        return trio.run(_main, scenario, seed, genesis, keys, where, clock=trio.testing.MockClock(autojump_threshold=0))


async def _main(scenario: Scenario, seed: int, genesis: Genesis, keys: list[bytes], folder: Path) -> NodeModeResult:
    network = MemoryNetwork()
    loss = scenario.network.loss
    if loss:
        rng = random.Random(f"{seed}:network")
        network.drop = lambda sender, receiver, data: rng.random() < loss
    heal = max([p.end_ms or 0 for p in scenario.network.partitions] + [0])
    decided_after = [False] * scenario.participants
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(_node(genesis, keys, i, folder, network, scenario))
                 for i in range(scenario.participants)]
        network.connect_all()
        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                nursery.start_soon(_workload, node, genesis, scenario, random.Random(f"{seed}:workload:{i}"))
            nursery.start_soon(_schedule, network, scenario)
            await trio.sleep_until(heal / 1000)
            at_heal = [node.replica.version for node in nodes]
            await trio.sleep_until(min(scenario.end_ms, heal + scenario.liveness_bound_ms) / 1000)
            decided_after = [node.replica.version > before for node, before in zip(nodes, at_heal, strict=True)]
            await trio.sleep_until(scenario.end_ms / 1000)
            nursery.cancel_scope.cancel()
        return _result(nodes, decided_after)


def _result(nodes: list[Node], decided_after: list[bool]) -> NodeModeResult:
    replicas = [node.replica for node in nodes]
    cuts: dict[int, set[tuple[bytes, ...]]] = {}
    for replica in replicas:
        for cut in replica.cuts:
            cuts.setdefault(cut.version, set()).add(tuple(cut.heads))
    conservation = True
    for replica in replicas:
        try:
            replica.ledger.check_conservation()
        except Exception:
            conservation = False
    return NodeModeResult(
        versions=tuple(r.version for r in replicas),
        converged=len({(frozenset(r.graph.ops), r.state_hash()) for r in replicas}) == 1,
        agreement=all(len(heads) == 1 for heads in cuts.values()),
        conservation=conservation,
        evidence=sum(len(r.graph.evidence) for r in replicas),
        decided_after_heal=tuple(decided_after),
    )


def compare(scenario: Scenario, seed: int) -> dict[str, dict[str, bool | None]]:
    """The verdicts of the engine and of the node mode on `scenario`, side by side."""
    engine = run_scenario(scenario, seed, trace=False).results["verdicts"]
    nodes = run_nodes(scenario, seed).verdicts()
    names = {"agreement": "agreement", "convergence": "eventual_convergence", "conservation": "conservation",
             "evidence": "evidence", "liveness": "liveness"}
    return {name: {"engine": engine[check]["ok"], "nodes": nodes[name]} for name, check in names.items()}
