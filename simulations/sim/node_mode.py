"""The node mode: a scenario run by whole `channel.runtime.node.Node`s instead of the engine.

Each participant is a real node (its SQLite store in a folder, its `p2p.peer.Peer`, the real
`ConsensusDriver`) over the in-memory transport (`p2p.memory.MemoryNetwork`), under trio's
`MockClock(autojump_threshold=0)`, with the same genesis and keys as the engine. The schedule's
partitions disconnect and reconnect the links; loss drops gossip on a link (the memory
transport delivers synchronously, so there is no latency, duplication or bandwidth model);
the workload submits transfers at Poisson times drawn from the seed, on every running node,
and with ``[trading]`` the engine's order flow (`simulations.sim.trading.OrderFlow`, through
`Node.submit`, whose dry run refuses what replay would not take) and oracle prices.

Byzantine behaviours, those a whole node can express (`NODE_BEHAVIOURS`); any other is refused
with a `ScenarioError`, never approximated:
- ``equivocate`` (probability 1): the node runs `simulations.byzantine`'s ``equivocate`` (its
  `Node.behaviour`), so it signs a twin of each of its own operations and gossips both, to
  everyone: the engine shows each half of the honest nodes one side, here every honest node
  gets both at once (the verdicts to agree on are the same: safety holds, and every
  equivocation an honest node holds is in its evidence);
- ``silent`` (``from_ms``): at ``from_ms`` every link of the node goes down and stays down, so
  it sends nothing, relays nothing (and, unlike the engine's, hears nothing either);
- ``withhold`` with ``targets = "all"`` and every channel: ``silent`` from 0;
- ``self_trade``: `simulations.byzantine`'s ``self_trade``, an IOC of the other side after each
  own order that rests, as the engine's.

Crash faults (``kind = "crash"``): at ``at_ms`` the node's process dies: its task scope (the
peer, the driver, the workload) is cancelled, its SQLite store closed and its transport leaves
the network (every stream to it breaks); at ``restart_ms`` a new node is restored from the same
SQLite file by `Node.restore` (the real restart path: it replays the store, certifies the
stored decisions again, and the driver gets its signing log back) and joins the network again
under its peer id. ``power_cut`` is refused: an in-process SQLite file cannot lose what it
wrote without fsync (the operating system's page cache keeps it); the engine models it.

Only honest participants (without behaviours) are judged, as in `simulations.sim.checks`; a
node crashed for good is left out of convergence and liveness and counts against f there.

It checks that the node's shell agrees with the engine, not that it repeats bit for bit: trio
schedules ready tasks in an order of its own, so two runs may differ. `compare` runs both on a
scenario and reports the verdicts each gives.
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

from channel.core.consensus import TimeoutConfig
from channel.runtime.driver import ConsensusDriver, DriverConfig
from channel.runtime.keystore import Key
from channel.runtime.node import HONEST, Behaviour, Node, open_node
from channel.runtime.service import NotReady, RequestRejected
from channel.runtime.store import Store
from crdt.genesis import Genesis
from crdt.ops import address_of
from crdt.replica import Replica
from crdt.testing import test_keys
from crdt.types import Address
from p2p.memory import MemoryNetwork
from p2p.peer import PeerConfig
from simulations.byzantine import Misbehaving
from simulations.sim.behaviours import Equivocate, SelfTrade, Silent, Withhold, describe, make_behaviours
from simulations.sim.checks import conservation_problem, trading_problem
from simulations.sim.engine import TOKEN, validate
from simulations.sim.run import run_scenario
from simulations.sim.scenario import Scenario, ScenarioError
from simulations.sim.trading import PERP, OrderFlow, make_channel

EPOCH_MS = 1_000_000_000_000  # the nodes' wall clock: this plus trio's virtual time
NODE_BEHAVIOURS = (
    "equivocate", "silent", 'withhold (targets = "all", channels = ["ops", "sync", "consensus"])', "self_trade",
)


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
    versions: tuple[int, ...]  # per participant, at the end (its last node's)
    honest: tuple[int, ...]  # the participants judged (those without behaviours)
    running: tuple[int, ...]  # the honest participants whose node runs at the end
    converged: bool | None  # every running honest node holds the same operations and state hash
    agreement: bool  # every version's cut is the same at every honest node that applied it
    conservation: bool
    evidence: bool  # `check_evidence` on every honest node
    equivocations: int  # (author, seq) with two operations, summed over the honest nodes holding them
    liveness: bool | None  # every running honest node decided within the bound after the last heal
    trading: bool | None  # `checks.trading_problem` finds nothing at any honest node (None: no markets)
    fills: int  # at the first honest node, at the end
    closed: dict[str, int]  # the orders no longer open at the first honest node, by why
    restored: tuple[tuple[int, int, int], ...]  # each restart: (participant, operations, version) its store gave

    def verdicts(self) -> dict[str, bool | None]:
        return {
            "agreement": self.agreement,
            "convergence": self.converged,
            "conservation": self.conservation,
            "evidence": self.evidence,
            "liveness": self.liveness,
        } | ({} if self.trading is None else {"trading": self.trading})


def check_evidence(replicas: Sequence[Replica], honest: set[Address], accused: Iterable[Address]) -> tuple[bool, int]:
    """The evidence check of `simulations.sim.checks` on whole nodes: every (author, seq) for
    which an honest replica holds two different operations is in its `graph.evidence`, and
    neither its evidence nor the consensus evidence (`accused`: the offenders its drivers
    recorded) names an honest participant. Returns (ok, the equivocations the replicas hold)."""
    seen = 0
    for replica in replicas:
        graph = replica.graph
        twice = [key for key, count in Counter((op.author, op.seq) for op in graph.ops.values()).items() if count > 1]
        seen += len(twice)
        if any(key not in graph.evidence for key in twice):
            return False, seen
        if {author for author, _ in graph.evidence} & honest:
            return False, seen
    return not set(accused) & honest, seen


@dataclass(frozen=True, slots=True)
class _Byzantine:
    """What one participant's node does in the node mode."""

    equivocate: bool = False
    silent_from_ms: int | None = None
    self_trade: bool = False

    @property
    def behaviour(self) -> Behaviour:
        if self.equivocate or self.self_trade:
            return Misbehaving(equivocate=self.equivocate, self_trade=self.self_trade)
        return HONEST


def _byzantine(scenario: Scenario) -> dict[int, _Byzantine]:
    """The behaviours of each Byzantine participant as a whole node runs them (`ScenarioError`
    for one it cannot express)."""
    found: dict[int, _Byzantine] = {}
    for participant, classes in make_behaviours(scenario.behaviours).items():
        equivocate, silent, self_trade = False, None, False
        for cls, params in classes:
            if isinstance(params, Equivocate.Params) and params.probability == 1:
                equivocate = True
            elif cls is SelfTrade:
                self_trade = True
            elif isinstance(params, Silent.Params):
                silent = params.from_ms if silent is None else min(silent, params.from_ms)
            elif (
                isinstance(params, Withhold.Params)
                and params.targets == "all"
                and set(params.channels) == {"ops", "sync", "consensus"}
            ):
                silent = 0
            else:
                raise ScenarioError(
                    f"the node mode cannot run behaviour {cls.name} {describe(params)} (participant {participant}); "
                    f"it runs {', '.join(NODE_BEHAVIOURS)}; the engine runs every behaviour"
                )
        found[participant] = _Byzantine(equivocate, silent, self_trade)
    return found


def _lives(scenario: Scenario, participant: int) -> list[tuple[int, int | None]]:
    """When the participant's node runs: (start ms, crash ms or None), as the engine applies the
    faults in time order (a crash while down and a restart while up change nothing)."""
    changes: list[tuple[int, bool]] = []
    for fault in scenario.faults:
        if fault.kind != "crash":
            raise ScenarioError(
                f"the node mode cannot model {fault.kind}: a real SQLite file in this process keeps what it wrote "
                "without fsync (the page cache survives); the engine models it"
            )
        if participant in fault.participants:
            changes.append((fault.at_ms, False))
            if fault.restart_ms is not None:
                changes.append((fault.restart_ms, True))
    lives: list[tuple[int, int | None]] = []
    start: int | None = 0
    for when, up in sorted(changes):
        if up and start is None:
            start = when
        elif not up and start is not None:
            lives.append((start, when))
            start = None
    if start is not None:
        lives.append((start, None))
    return lives


@dataclass(slots=True)
class _Slot:
    """One participant, across the nodes its crashes and restarts make."""

    index: int
    honest: bool
    lives: list[tuple[int, int | None]]
    nodes: list[Node] = field(default_factory=list)  # every incarnation, the last one last
    up: bool = False
    base_version: int = 0  # liveness: its version at the last heal, or at its restart after it
    restored: list[tuple[int, int]] = field(default_factory=list)  # each restart: (operations, version)

    @property
    def crashed_for_good(self) -> bool:
        return self.lives[-1][1] is not None


def _configs(scenario: Scenario) -> tuple[DriverConfig, PeerConfig]:
    c = scenario.consensus
    timeouts = TimeoutConfig(
        propose_base=c.propose_base_ms,
        propose_delta=c.propose_delta_ms,
        prevote_base=c.vote_base_ms,
        prevote_delta=c.vote_delta_ms,
        precommit_base=c.vote_base_ms,
        precommit_delta=c.vote_delta_ms,
    )
    driver = DriverConfig(
        interval=c.interval_ms / 1000,
        time_bound_ms=c.time_bound_ms,
        catchup_period=c.catchup_period_ms / 1000,
        catchup_idle=c.catchup_idle_ms / 1000,
        stuck_after=c.stuck_after_ms / 1000,
        timeouts=timeouts,
    )
    sync = scenario.sync
    return driver, PeerConfig(sync_interval=sync.interval_ms / 1000, gap_grace=sync.gap_grace_ms / 1000)


@asynccontextmanager
async def _node(
    genesis: Genesis,
    keys: list[bytes],
    index: int,
    folder: Path,
    network: MemoryNetwork,
    scenario: Scenario,
    behaviour: Behaviour,
    *,
    fresh_channel: bool,
) -> Any:
    """One incarnation of a participant's node: restored from its store (new on the first
    start), running its peer and driver until the block ends; then its store is closed."""
    store = _VirtualStore(folder / f"node{index}" / "node.sqlite")
    driver_config, peer_config = _configs(scenario)
    try:
        key = Key(address_of(keys[index]), keys[index])
        node = Node.restore(genesis, key, store, fresh_channel=fresh_channel, wall_clock=_wall_clock, keep_epochs=0)
        node.behaviour = behaviour
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


async def _participant(
    slot: _Slot,
    genesis: Genesis,
    keys: list[bytes],
    folder: Path,
    network: MemoryNetwork,
    scenario: Scenario,
    behaviour: Behaviour,
    seed: int,
) -> None:
    """Run the participant's node through its lives: each ends at its crash (the scope with
    everything the node runs is cancelled), the next is restored from the same store."""
    rng = random.Random(f"{seed}:workload:{slot.index}")
    flow = OrderFlow(scenario.trading, random.Random(f"{seed}:orders:{slot.index}")) if scenario.trading else None
    for start, crash in slot.lives:
        await trio.sleep_until(start / 1000)
        with trio.CancelScope(deadline=math.inf if crash is None else crash / 1000):
            async with _node(
                genesis, keys, slot.index, folder, network, scenario, behaviour, fresh_channel=start == 0
            ) as node:
                if slot.nodes:
                    slot.restored.append((len(node.replica.graph), node.replica.version))
                slot.nodes.append(node)
                slot.base_version, slot.up = node.replica.version, True
                try:
                    async with trio.open_nursery() as work:
                        if flow is not None:
                            work.start_soon(_trading, node, slot.index, scenario, flow)
                        await _workload(node, genesis, scenario, rng)
                    await trio.sleep_forever()
                finally:
                    slot.up = False


async def _workload(node: Node, genesis: Genesis, scenario: Scenario, rng: random.Random) -> None:
    workload = scenario.workload
    stop = scenario.workload_end_ms / 1000
    others = [a for a in genesis.addresses if a != node.address]
    await trio.sleep_until(workload.start_ms / 1000)
    while True:
        await trio.sleep(rng.expovariate(workload.rate_per_s))
        if trio.current_time() >= stop:
            return
        body = {"to": rng.choice(others), "token": TOKEN.symbol, "amount": rng.randint(1, workload.amount_max_e9)}
        with contextlib.suppress(NotReady):  # it knows it is behind (Node.behind): nothing signed, as -32002
            await node.submit("transfer", body)


async def _trading(node: Node, participant: int, scenario: Scenario, flow: OrderFlow) -> None:
    """As the engine's order flow: an oracle posts the perp's price every interval, a trader
    signs orders at Poisson times (what the node's dry run refuses is not signed)."""
    trading = scenario.trading
    assert trading is not None
    stop = scenario.workload_end_ms / 1000
    oracle = participant in trading.oracles
    if (oracle and "perp" not in trading.markets) or (not oracle and trading.orders_per_s == 0):
        return
    await trio.sleep_until(scenario.workload.start_ms / 1000)
    while True:
        if oracle:
            await trio.sleep(trading.oracle_interval_ms / 1000)
        else:
            await trio.sleep(flow.rng.expovariate(trading.orders_per_s))
        if trio.current_time() >= stop:
            return
        if oracle:
            kind, body = "oracle.price", {"market": PERP.symbol, "price": flow.oracle_price(trading.mid_e9)}
        else:
            kind, body = flow.next([order.order_id for order in node.replica.open_orders(node.address)])
        with contextlib.suppress(RequestRejected, NotReady):  # refused by its dry run, or behind: nothing signed
            await node.submit(kind, body)


async def _schedule(network: MemoryNetwork, scenario: Scenario, silenced: set[int]) -> None:
    """Partitions: at each start, the links they block go down; at each heal, up again (but
    those of a silent node)."""
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
                if not _separates(partition, a, b):
                    continue
                if not up:
                    network.disconnect(_peer_id(a), _peer_id(b))
                elif a not in silenced and b not in silenced:
                    network.connect(_peer_id(a), _peer_id(b))


async def _silence(network: MemoryNetwork, scenario: Scenario, index: int, from_ms: int, silenced: set[int]) -> None:
    await trio.sleep_until(from_ms / 1000)
    _cut_off(network, scenario, index, silenced)


def _cut_off(network: MemoryNetwork, scenario: Scenario, index: int, silenced: set[int]) -> None:
    """Every link of the node goes down, for good (`_schedule` never heals them)."""
    silenced.add(index)
    for other in range(scenario.participants):
        if other != index:
            network.disconnect(_peer_id(index), _peer_id(other))


def _separates(partition: Any, a: int, b: int) -> bool:
    if partition.groups is not None:
        side = {i: g for g, group in enumerate(partition.groups) for i in group}
        return side.get(a, -1 - a) != side.get(b, -1 - b)
    sources, targets = set(partition.sources or ()), set(partition.targets or ())
    return (a in sources and b in targets) or (b in sources and a in targets)  # links are two-way here


def run_nodes(scenario: Scenario, seed: int, folder: Path | None = None) -> NodeModeResult:
    """Run `scenario` with whole nodes under the virtual clock (see the module docstring)."""
    validate(scenario)  # what the engine refuses, refused here too
    byzantine = _byzantine(scenario)
    slots = [_Slot(i, i not in byzantine, _lives(scenario, i)) for i in range(scenario.participants)]
    keys = test_keys(b"parley-sim-%d", scenario.participants)
    genesis = make_channel(scenario, keys)
    with tempfile.TemporaryDirectory() as temporary:
        where = folder or Path(temporary)
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(_main, scenario, seed, genesis, keys, where, slots, byzantine, clock=clock)


def _heal_ms(scenario: Scenario) -> int:
    """When the network last heals (-1: a partition never does)."""
    ends = [p.end_ms for p in scenario.network.partitions]
    return -1 if None in ends else max([end for end in ends if end is not None] + [0])


async def _main(
    scenario: Scenario,
    seed: int,
    genesis: Genesis,
    keys: list[bytes],
    folder: Path,
    slots: list[_Slot],
    byzantine: dict[int, _Byzantine],
) -> NodeModeResult:
    network = MemoryNetwork()
    loss = scenario.network.loss
    if loss:
        rng = random.Random(f"{seed}:network")
        network.drop = lambda sender, receiver, data: rng.random() < loss
    silenced: set[int] = set()
    n = scenario.participants
    for a in range(n):
        for b in range(a + 1, n):
            network.connect(_peer_id(a), _peer_id(b))
    restarts = [fault.restart_ms for fault in scenario.faults if fault.restart_ms is not None]
    heal = max(_heal_ms(scenario), scenario.workload.start_ms, *restarts)
    async with trio.open_nursery() as nursery:
        for i, spec in sorted(byzantine.items()):
            if spec.silent_from_ms == 0:  # before any node starts: not even its first Status leaves
                _cut_off(network, scenario, i, silenced)
            elif spec.silent_from_ms is not None:
                nursery.start_soon(_silence, network, scenario, i, spec.silent_from_ms, silenced)
        for slot in slots:
            behaviour = byzantine[slot.index].behaviour if slot.index in byzantine else HONEST
            nursery.start_soon(_participant, slot, genesis, keys, folder, network, scenario, behaviour, seed)
        nursery.start_soon(_schedule, network, scenario, silenced)
        await trio.sleep_until(heal / 1000)
        for slot in slots:
            if slot.up:
                slot.base_version = slot.nodes[-1].replica.version
        bound_at = heal + scenario.liveness_bound_ms
        await trio.sleep_until(min(scenario.end_ms, bound_at) / 1000)
        decided = all(slot.nodes[-1].replica.version > slot.base_version for slot in slots if slot.honest and slot.up)
        await trio.sleep_until(scenario.end_ms / 1000)
        result = _result(scenario, slots, keys, decided if bound_at <= scenario.duration_ms else None)
        nursery.cancel_scope.cancel()
    return result


def _result(scenario: Scenario, slots: list[_Slot], keys: list[bytes], decided: bool | None) -> NodeModeResult:
    honest = [slot for slot in slots if slot.honest]
    running = [slot for slot in honest if slot.up]
    every = [node.replica for slot in honest for node in slot.nodes]  # every incarnation's
    last = [slot.nodes[-1].replica for slot in honest if slot.nodes]
    supply = scenario.initial_balance_e9 * scenario.participants
    cuts: dict[int, set[tuple[bytes, ...]]] = {}
    for replica in every:
        for cut in replica.cuts:
            cuts.setdefault(cut.version, set()).add(tuple(cut.heads))
    honest_addresses = {address_of(keys[slot.index]) for slot in honest}
    accused = [
        evidence.offender
        for slot in honest
        for node in slot.nodes
        if node.driver is not None
        for evidence in node.driver.evidence
    ]
    evidence, equivocations = check_evidence(last, honest_addresses, accused)
    return NodeModeResult(
        versions=tuple(slot.nodes[-1].replica.version if slot.nodes else 0 for slot in slots),
        honest=tuple(slot.index for slot in honest),
        running=tuple(slot.index for slot in running),
        converged=_converged(scenario, running),
        agreement=all(len(heads) == 1 for heads in cuts.values()),
        conservation=all(conservation_problem(replica, supply) is None for replica in last),
        evidence=evidence,
        equivocations=equivocations,
        liveness=_liveness(scenario, slots, decided),
        restored=tuple((slot.index, *restored) for slot in slots for restored in slot.restored),
        trading=all(trading_problem(replica) is None for replica in last) if scenario.trading else None,
        fills=len(last[0].fills()) if last else 0,
        closed=dict(sorted(Counter(why for why, _ in last[0].ledger.closed.values()).items())) if last else {},
    )


def _converged(scenario: Scenario, running: list[_Slot]) -> bool | None:
    """As checks.py's eventual convergence: None when the network does not heal before the
    workload stops, or no honest node runs at the end."""
    heal = _heal_ms(scenario)
    if heal < 0 or scenario.settle_ms == 0 or heal > scenario.duration_ms or not running:
        return None
    replicas = [slot.nodes[-1].replica for slot in running]
    return len({(frozenset(r.graph.ops), r.state_hash()) for r in replicas}) == 1


def _liveness(scenario: Scenario, slots: list[_Slot], decided: bool | None) -> bool | None:
    """As checks.py's: None when f (Byzantine or crashed for good) is not below n/3, when a
    partition never heals, or when the workload stops before the heal plus the bound."""
    f = sum(1 for slot in slots if not slot.honest or slot.crashed_for_good)
    if 3 * f >= scenario.participants or _heal_ms(scenario) < 0:
        return None
    return decided


def compare(scenario: Scenario, seed: int) -> dict[str, dict[str, bool | None]]:
    """The verdicts of the engine and of the node mode on `scenario`, side by side."""
    engine = run_scenario(scenario, seed, trace=False).results["verdicts"]
    nodes = run_nodes(scenario, seed).verdicts()
    names = {
        "agreement": "agreement",
        "convergence": "eventual_convergence",
        "conservation": "conservation",
        "evidence": "evidence",
        "liveness": "liveness",
    }
    if scenario.trading is not None:
        names["trading"] = "trading"
    return {name: {"engine": engine[check]["ok"], "nodes": nodes[name]} for name, check in names.items()}
