"""The discrete-event engine: the node's real pure machines under a virtual clock.

One heap of events keyed by (virtual ms, sequence number): the sequence number breaks ties in
the order events were scheduled, so the run is a pure function of the scenario and the seed.
Every source of randomness is a `random.Random` seeded with a string derived from the run's
seed, one per subsystem (``"<seed>:network"``, ``"<seed>:workload:<node>"``,
``"<seed>:behaviours"``, ``"<seed>:options"``): string seeds hash with SHA-512 inside
`random`, never with `hash()`, so they are the same in every process. Nothing reads the wall
clock, nothing runs under trio (whose scheduler shuffles ready tasks with an unseeded
generator), and nothing iterates a set or a dict whose order depends on the hash seed.

Each simulated node (`SimNode`) holds what a `channel.runtime.node.Node` holds, without the
trio shell:
- a real `crdt.replica.Replica` (operations arrive as wire bytes and are decoded and verified
  by `crdt.ops.decode_op`, as the peer's gossip validator does);
- one real `p2p.sync.SyncSession` per peer, ticked every ``sync.interval_ms``, its messages
  encoded and decoded by `p2p.wire`, and asked for gaps after ``sync.gap_grace_ms``, as
  `p2p.peer.Peer` does;
- a real `channel.core.consensus.Consensus` machine whose application (`SimApplication`)
  proposes and validates checkpoints exactly as the runtime driver's `NodeApplication` does
  (`channel.core.validation.validate_proposal`), and the driver's rules for when a height
  starts (`ConsensusDriver._step`: every ``interval/4`` a tick; start once ``interval`` has
  passed and there is news, or at once on a message of the height or later);
- a workload that signs transfers with the participant's real key, with Poisson arrivals, and
  with ``[trading]`` orders on the markets of `simulations.sim.trading` (an honest node signs
  only what its dry run takes) and oracle prices.

Gossip of a new operation goes straight to every other node (the real gossipsub mesh relays;
here sync repairs what a lost or withheld message leaves out). Consensus messages go to every
other node too. A Byzantine node runs this same honest code, and its `Behaviour` objects
rewrite what it sends (see `simulations.sim.behaviours`).

Not modelled yet (see the README): restarts and power cuts, the checkpoint catch-up protocol
(a node more than ``commit_window`` versions behind stays behind), gossip relaying, deposits.
"""

from __future__ import annotations

import gc
import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from channel.core.consensus import (
    Application,
    Broadcast,
    Certified,
    CheckpointProposal,
    Consensus,
    Decide,
    Evidence,
    Fetch,
    NeedOperations,
    Output,
    ScheduleTimeout,
    Send,
    SigningRecord,
    Timeout,
    TimeoutConfig,
    Validity,
    checkpoint_digest,
)
from channel.core.consensus import Message as ConsensusMessage
from channel.core.consensus import decode_message as decode_consensus
from channel.core.consensus import encode_message as encode_consensus
from channel.core.validation import LocalView, validate_proposal
from channel.runtime.catchup import (
    FETCH_SECONDS,
    MAX_FRAME_BYTES,
    MAX_RECORDS,
    MAX_VOTES,
    RETRY_FETCH_SECONDS,
    Request,
    decode_reply,
    decode_request,
    encode_end,
    encode_record,
    encode_request,
    encode_vote,
)
from channel.runtime.catchup import Record as CatchUpRecord
from crdt.eip712 import Checkpoint
from crdt.errors import InvalidInput, MissingOperations
from crdt.genesis import Genesis
from crdt.graph import AddResult
from crdt.ops import SignedOp, address_of, decode_op, sign, unsigned_op
from crdt.replica import Cut, Replica
from crdt.testing import test_keys
from crdt.types import Address, OpId
from p2p.sync import HashGraphView, SyncSession
from p2p.wire import FrameDecoder, Status, WireLimits, decode_batch, encode_batch, encode_frame
from p2p.wire import Message as SyncMessage
from p2p.wire import decode_message as decode_sync
from p2p.wire import encode_message as encode_sync
from simulations.sim.behaviours import TRADING_BEHAVIOURS, Behaviour, BehaviourContext, Draft, make_behaviours
from simulations.sim.network import Network
from simulations.sim.scenario import Scenario, ScenarioError
from simulations.sim.trading import PERP, USDC, OrderFlow, make_channel

TOKEN = USDC
MAX_PARENTS = 16  # as the node (channel.runtime.node.MAX_PARENTS)
OPS, SYNC, CONSENSUS, CATCHUP, ANSWER = "ops", "sync", "consensus", "catchup", "catchup_answer"
PULLED_LIMIT = 4096  # consensus messages a node remembers having pulled (as the driver)
CHANNELS = (OPS, SYNC, CONSENSUS, CATCHUP, ANSWER)
CATCHUP_LIMITS = WireLimits(max_frame_bytes=MAX_FRAME_BYTES)
RETRY_FETCH_MS = int(RETRY_FETCH_SECONDS * 1000)  # a peer not answering this long may be asked again
FETCH_MS = int(FETCH_SECONDS * 1000)  # a catch-up request unanswered this long is given up
DECODED_MESSAGES = 8192  # consensus messages decoded once for all nodes (oldest dropped first)
GC_YOUNG = 50_000  # allocations between collections of the youngest generation during a run (default 700)

# event kinds (the heap's third field)
WORK, DELIVER, SYNC_TICK, CONSENSUS_TICK, TIMEOUT, GAP, FETCH_EXPIRED, NETWORK, FAULT, ORDER, ORACLE = range(11)
ALWAYS = -1  # the incarnation of events that reach a node whatever its state (faults, the network schedule)

MessageId = tuple[int, int]  # (publishing node, its publication counter): gossipsub's (from, seqno)


@dataclass(frozen=True, slots=True)
class Switches:
    """Test-only breakages of an honest rule: the negative controls the checks must catch.
    Nothing outside the tests sets them."""

    accept_any_proposal: bool = False  # honest nodes prevote a proposal without comparing its roots
    forget_signing_log: bool = False  # a restarted node does not get its signed votes back
    ignore_sync_ops: bool = False  # honest nodes drop the operations sync brings (no repair)


@dataclass(slots=True)
class Decision:
    """One node applied one decided checkpoint."""

    node: int
    height: int
    round: int
    value_id: bytes
    time: int
    state_hash: bytes
    payout_root: bytes


@dataclass(slots=True)
class Record:
    """What the checks and metrics read: everything the honest machines output, as it happened."""

    decisions: list[Decision] = field(default_factory=list)
    certified: list[tuple[int, int, bytes]] = field(default_factory=list)  # (node, version, checkpoint digest)
    consensus_evidence: list[tuple[int, str, Address]] = field(default_factory=list)  # (node, kind, offender)
    root_mismatches: list[tuple[int, int, str]] = field(default_factory=list)  # (node, version, which)
    certify_failures: list[tuple[int, int, str]] = field(default_factory=list)
    finality_ms: list[int] = field(default_factory=list)  # per honest operation: signed -> final at its author
    propagation_ms: list[int] = field(default_factory=list)  # per honest operation: signed -> held by every honest node
    final_over_time: list[tuple[int, int]] = field(default_factory=list)  # (virtual ms, honest ops final so far)
    signed: int = 0
    sends: int = 0  # `Send` outputs (a Decision proof for a peer that looks behind) of honest machines
    signed_honest: int = 0
    rejects: dict[str, int] = field(default_factory=dict)  # inputs honest nodes refused, by error code
    duplicates: int = 0  # operations honest nodes received that they already held (dropped)
    orders_signed: int = 0  # order.place and order.cancel, every node
    orders_refused: int = 0  # orders an honest node's dry run refused (never signed)
    forged: dict[str, int] = field(default_factory=dict)  # operations behaviours signed, by behaviour
    front_runs: list[tuple[OpId, OpId]] = field(default_factory=list)  # (the order seen, the front-run)
    oracle_posts: list[int] = field(default_factory=list)  # the prices honest oracles posted
    marks: list[tuple[int, int, int]] = field(default_factory=list)  # (honest node, version, perp price fixed)
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    events_processed: int = 0


@dataclass(slots=True)
class Store:
    """A node's durable store, as the runtime's `Store` keeps it: every operation before it is
    applied, every decision once certified, every signed proposal and vote before it is sent.
    Each write has a number; ``synced`` is the last one an fsync made durable (the node fsyncs
    only what it signs, and an fsync of the write-ahead log makes every earlier write durable)."""

    ops: list[tuple[int, SignedOp]] = field(default_factory=list)
    decisions: list[tuple[int, Decide]] = field(default_factory=list)
    signed: list[SigningRecord] = field(default_factory=list)
    writes: int = 0
    synced: int = 0

    def _write(self, fsync: bool) -> int:
        self.writes += 1
        if fsync:
            self.synced = self.writes
        return self.writes

    def put_ops(self, ops: Iterable[SignedOp], fsync: bool) -> None:
        for op in ops:
            self.ops.append((self._write(False), op))
        if fsync:
            self.synced = self.writes

    def put_decision(self, decide: Decide) -> None:
        self.decisions.append((self._write(False), decide))

    def put_signed(self, record: SigningRecord) -> None:
        self._write(True)
        self.signed.append(record)

    def power_cut(self) -> int:
        """Lose what no fsync covered; returns how many writes were lost."""
        before = len(self.ops) + len(self.decisions)
        self.ops = [(n, op) for n, op in self.ops if n <= self.synced]
        self.decisions = [(n, d) for n, d in self.decisions if n <= self.synced]
        return before - len(self.ops) - len(self.decisions)


class SimApplication(Application):
    """`channel.runtime.driver.NodeApplication` for a simulated node: the same proposal (the
    node's heads, its clock's time strictly after the previous checkpoint, `Replica.preview`'s
    roots) and the same validation. No chain: no deposits are ever confirmed."""

    def __init__(self, node: SimNode, time_bound_ms: int, switches: Switches) -> None:
        self.node = node
        self.time_bound_ms = time_bound_ms
        self.switches = switches
        self.valid: set[bytes] = set()  # value ids `validate_proposal` found VALID (its roots are this replay's)

    def has_news(self) -> bool:
        replica = self.node.replica
        previous = set(replica.cuts[-1].heads) if replica.cuts else set()
        return bool(replica.graph.heads) and set(replica.graph.heads) != previous

    def get_value(self, height: int, round_: int) -> CheckpointProposal | None:
        replica = self.node.replica
        if height != replica.version + 1 or not self.has_news():
            return None
        previous_time = replica.cuts[-1].time if replica.cuts else 0
        when = max(self.node.clock(), previous_time + 1)
        return self.value_for(Cut(height, tuple(sorted(replica.graph.heads)), when))

    def value_for(self, cut: Cut) -> CheckpointProposal | None:
        """The proposal of `cut` with the roots this replica computes (None if it cannot)."""
        replica = self.node.replica
        try:
            preview = replica.preview(cut)
        except InvalidInput:
            return None
        checkpoint = Checkpoint(
            channel=replica.genesis.channel_id, version=cut.version, payout_root=preview.payout_root,
            state_hash=preview.state_hash, totals=preview.totals, withdrawn=preview.withdrawn,
            deposit_nonce=preview.deposit_nonce, time=cut.time,
        )
        return CheckpointProposal(checkpoint, cut.heads, cut.deposits, preview.leaves)

    def validate(self, height: int, value: CheckpointProposal) -> Validity | NeedOperations:
        replica = self.node.replica
        if self.switches.accept_any_proposal and height == replica.version + 1:
            missing = [head for head in value.heads if head not in replica.graph.ops]
            return NeedOperations.of(missing) if missing else Validity.VALID
        answer = validate_proposal(LocalView(replica, {}, self.node.clock(), self.time_bound_ms), height, value)
        if answer is Validity.VALID:
            self.valid.add(value.value_id)
        return answer


def _encode_ops(ops: Sequence[SignedOp]) -> bytes:
    return encode_batch([op.raw for op in ops])


def _encode_consensus(messages: Sequence[ConsensusMessage]) -> bytes:
    return encode_consensus(messages[0])


class SimNode:
    """One simulated node: a participant's machines and its driver's state."""

    def __init__(self, engine: Engine, index: int, participant: int, key: bytes, skew_ms: int) -> None:
        self.engine = engine
        self.index = index
        self.participant = participant
        self.key = key
        self.address = address_of(key)
        self.skew_ms = skew_ms
        genesis = engine.genesis
        self.replica = Replica(genesis)
        self.view = HashGraphView(self.replica.graph)
        self.sessions: dict[int, SyncSession] = {}
        self.app = SimApplication(self, engine.scenario.consensus.time_bound_ms, engine.switches)
        self.consensus = Consensus(genesis, key, self.app, engine.timeouts)
        self.behaviours: list[Behaviour] = []
        self.source = b"n%d" % index
        self.store = Store()
        self.incarnation = 0  # + 1 at each crash and restart: events of an older one are dropped
        self.down = False
        # the driver's state (channel.runtime.driver.ConsensusDriver)
        self.height = 1
        self.started = False
        self.last_start = -(10**12)
        self.highest_seen = 0
        self.pending: Decide | None = None
        self.catching_up = False
        # the gap filler's (p2p.peer.Peer._gaps): op id -> the node it was missing from (-1: any)
        self.gaps: dict[OpId, int] = {}
        self.gap_due = False
        self.last_status: tuple[Status, bytes] | None = None
        # gossip relaying: the mesh peers, and the message ids seen
        self.mesh: list[int] = []
        self.seen: set[MessageId] = set()
        # checkpoint catch-up (channel.runtime.driver, "catch-up"): the stored proofs, the client's state
        self.proofs: dict[int, bytes] = {}
        self.fetching: dict[int, tuple[int, int]] = {}  # peer -> (number, sent at) of our request in flight
        self.fetches = 0
        self.last_fetch = -(10**12)
        self.caught_up = False
        self.next_peer = 0
        self.pulled: set[bytes] = set()  # the consensus messages catch-up answers brought (encoded)
        # honest bookkeeping for the checks and metrics
        self.own_unfinal: deque[tuple[OpId, int]] = deque()
        self.first_at_seq: dict[tuple[Address, int], OpId] = {}
        self.equivocations_seen: list[tuple[Address, int]] = []

    @property
    def honest(self) -> bool:
        return not self.behaviours

    def clock(self) -> int:
        return max(0, self.engine.now + self.skew_ms)

    @property
    def now(self) -> int:
        return self.engine.now

    def value_for(self, cut: Cut) -> CheckpointProposal | None:
        return self.app.value_for(cut)

    def participant_of(self, node: int) -> int:
        return self.engine.nodes[node].participant

    def stored_ops(self) -> list[SignedOp]:
        return [op for _, op in self.store.ops]

    def next_seq(self) -> int:
        return self.replica.graph.version_vector.get(self.address, 0) + 1

    def parents(self) -> list[OpId]:
        """As `channel.runtime.node.Node.parents`: own last operation, then the latest heads."""
        graph = self.replica.graph
        own = list(graph.chains.get(self.address, {}).get(self.next_seq() - 1, ())[:1])
        others = sorted(head for head in graph.heads if head not in own)
        return own + others[-(MAX_PARENTS - len(own)) :] if others else list(own)


def validate(scenario: Scenario) -> dict[int, list[tuple[type[Behaviour], Any]]]:
    """The scenario's behaviours by participant (`make_behaviours`), once what a behaviour
    needs of the scenario is checked: `ScenarioError` before anything runs (the command line
    and a sweep call it up front)."""
    specs = make_behaviours(scenario.behaviours)
    trading = scenario.trading
    perp_oracles = set(trading.oracles) if trading is not None and "perp" in trading.markets else set()
    for participant, classes in specs.items():
        for cls, _ in classes:
            if cls.name in TRADING_BEHAVIOURS and trading is None:
                raise ScenarioError(f"behaviour {cls.name} needs markets: the scenario has no [trading]")
            if cls.name == "oracle_outlier" and participant not in perp_oracles:
                raise ScenarioError(f"oracle_outlier: participant {participant} is not an oracle of a perp market")
    return specs


class Engine:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        switches: Switches | None = None,
        trace: bool = True,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.switches = switches or Switches()
        self.trace = trace
        n = scenario.participants
        self.keys = test_keys(b"parley-sim-%d", n)
        self.genesis: Genesis = make_channel(scenario, self.keys)
        c = scenario.consensus
        self.timeouts = TimeoutConfig(
            propose_base=c.propose_base_ms, propose_delta=c.propose_delta_ms, prevote_base=c.vote_base_ms,
            prevote_delta=c.vote_delta_ms, precommit_base=c.vote_base_ms, precommit_delta=c.vote_delta_ms,
        )
        self.now = 0
        self._heap: list[tuple[int, int, int, int, int, Any]] = []
        self._seq = 0
        self.record = Record()
        self.events: list[dict[str, Any]] = []
        options = random.Random(f"{seed}:options")  # drawn in this order: skews, mesh, phases
        specs = validate(scenario)
        self.nodes: list[SimNode] = self._make_nodes(specs, options)
        self.by_address: dict[Address, list[SimNode]] = {}
        for node in self.nodes:
            self.by_address.setdefault(node.address, []).append(node)
        self.honest = [node for node in self.nodes if node.participant not in specs]
        self.options: dict[str, Any] = {"clock_skew_ms": {str(nd.index): nd.skew_ms for nd in self.nodes}}
        self._attach_behaviours(specs, random.Random(f"{seed}:behaviours"))
        self.network = Network(
            scenario.network, random.Random(f"{seed}:network"), [nd.participant for nd in self.nodes], n
        )
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    node.sessions[other.index] = SyncSession(self.genesis.channel_id)
        self._build_mesh(options)
        self._published = 0
        self._decoded_ops: dict[bytes, SignedOp] = {}
        self._spreading: dict[OpId, list[int]] = {}  # honest op -> [signed at, honest replicas holding it]
        self._decoded_messages: dict[bytes, ConsensusMessage] = {}
        self._decoded_sync: dict[bytes, SyncMessage] = {}
        self._workload_rng = {nd.index: random.Random(f"{seed}:workload:{nd.index}") for nd in self.nodes}
        trading = scenario.trading
        self._flows = {} if trading is None else {
            nd.index: OrderFlow(trading, random.Random(f"{seed}:orders:{nd.index}")) for nd in self.nodes
        }
        self._next_us = {nd.index: 0 for nd in self.nodes}
        self._schedule_start(options)

    def _make_nodes(self, specs: dict[int, list[tuple[type[Behaviour], Any]]], options: random.Random) -> list[SimNode]:
        """One node per participant, two for a participant with Twins; each with its clock skew."""
        scenario, nodes = self.scenario, list[SimNode]()
        for participant in range(scenario.participants):
            copies = max((cls.copies for cls, _ in specs.get(participant, [])), default=1)
            for _ in range(copies):
                skew = options.randint(-scenario.clock_skew_ms, scenario.clock_skew_ms) if scenario.clock_skew_ms else 0
                nodes.append(SimNode(self, len(nodes), participant, self.keys[participant], skew))
        return nodes

    def _attach_behaviours(self, specs: dict[int, list[tuple[type[Behaviour], Any]]], rng: random.Random) -> None:
        """Each Byzantine participant's behaviours, on each of its nodes, with one split of the
        honest nodes per participant and behaviour (shared by Twins' copies)."""
        honest_indices = [node.index for node in self.honest]
        for participant, classes in specs.items():
            twins = [node for node in self.nodes if node.participant == participant]
            for cls, params in classes:
                split = sorted(rng.sample(honest_indices, len(honest_indices) // 2))
                self.options[f"split:{cls.name}:p{participant}"] = split
                for copy, node in enumerate(twins):
                    context = BehaviourContext(
                        genesis=self.genesis, key=node.key, rng=rng, copy=copy, split=frozenset(split)
                    )
                    node.behaviours.append(cls(params, context))

    def _schedule_start(self, options: random.Random) -> None:
        """The network schedule, the faults, and each node's first ticks (at phases drawn from
        the seed, so nodes do not tick in lockstep) and first workload arrival."""
        scenario = self.scenario
        phases = {nd.index: (options.randrange(scenario.sync.interval_ms),
                             options.randrange(max(1, scenario.consensus.interval_ms // 4))) for nd in self.nodes}
        self.options["phases_ms"] = {str(i): list(p) for i, p in phases.items()}
        for number, partition in enumerate(scenario.network.partitions):
            what = f"groups={partition.groups}" if partition.groups is not None else (
                f"from={partition.sources} to={partition.targets}"
            )
            self._push(partition.start_ms, NETWORK, 0, f"partition {number} starts: {what}", ALWAYS)
            if partition.end_ms is not None:
                self._push(partition.end_ms, NETWORK, 0, f"partition {number} heals", ALWAYS)
        for fault in scenario.faults:
            for node in self.nodes:
                if node.participant in fault.participants:
                    self._push(fault.at_ms, FAULT, node.index, fault.kind, ALWAYS)
                    if fault.restart_ms is not None:
                        self._push(fault.restart_ms, FAULT, node.index, "restart", ALWAYS)
        workload = scenario.workload
        for node in self.nodes:
            sync_phase, tick_phase = phases[node.index]
            self._push(sync_phase, SYNC_TICK, node.index, True)
            self._push(tick_phase, CONSENSUS_TICK, node.index, None)
            if workload.rate_per_s > 0:
                self._next_us[node.index] = workload.start_ms * 1000
                self._push(self._arrival(node.index), WORK, node.index, None)
            self._start_trading(node, workload.start_ms)

    def _build_mesh(self, options: random.Random) -> None:
        """A symmetric mesh in which every node has at least ``mesh_degree`` peers and few more
        (gossipsub keeps its mesh between D_lo and D_hi around D): each node in turn grafts
        peers drawn from the seed, preferring those still below the degree."""
        degree = min(self.scenario.gossip.mesh_degree, len(self.nodes) - 1)
        mesh: dict[int, set[int]] = {node.index: set() for node in self.nodes}
        for node in self.nodes:
            mine = mesh[node.index]
            while len(mine) < degree:
                others = [peer for peer in node.sessions if peer not in mine]
                below = [peer for peer in others if len(mesh[peer]) < degree]
                peer = options.choice(below or others)
                mine.add(peer)
                mesh[peer].add(node.index)
        for node in self.nodes:
            node.mesh = sorted(mesh[node.index])

    # -- the loop ------------------------------------------------------------------------------------

    def _push(self, when: int, kind: int, node: int, data: Any, incarnation: int | None = None) -> None:
        self._seq += 1
        inc = self.nodes[node].incarnation if incarnation is None else incarnation
        heapq.heappush(self._heap, (when, self._seq, kind, node, inc, data))

    def run(self, progress: Callable[[int], None] | None = None, step_ms: int = 1000) -> None:
        """Run to the end of the scenario (duration plus settle time).

        With rarer garbage collections while it runs (the thresholds are put back after): what
        a run allocates mostly lives on (operations, replicas' state, the heap's events), so at
        the default thresholds the collector walked the same growing heap again and again, a
        twentieth of a 4-node run. Nothing here depends on when a collection happens."""
        thresholds = gc.get_threshold()
        if thresholds[0] > 0:  # 0: the process turned automatic collection off; leave it so
            gc.set_threshold(max(thresholds[0], GC_YOUNG), max(thresholds[1], 20), max(thresholds[2], 100))
        try:
            self._run(progress, step_ms)
        finally:
            gc.set_threshold(*thresholds)

    def _run(self, progress: Callable[[int], None] | None, step_ms: int) -> None:
        end = self.scenario.end_ms
        handlers = (
            self._work, self._deliver, self._sync_tick, self._consensus_tick, self._timeout, self._gap,
            self._fetch_expired, self._network_event, self._fault, self._order, self._oracle,
        )
        heap = self._heap
        next_report = step_ms
        record = self.record
        while heap and heap[0][0] <= end:
            when, _, kind, index, inc, data = heapq.heappop(heap)
            self.now = when
            node = self.nodes[index]
            if inc != ALWAYS and (inc != node.incarnation or node.down):
                continue  # for a node that crashed since (or is down): lost
            if when >= next_report:
                self._sample_finality()
                if progress is not None:
                    progress(when)
                next_report = (when // step_ms + 1) * step_ms
            record.events_processed += 1
            handlers[kind](node, data)
        self.now = end
        self._sample_finality()
        if progress is not None:
            progress(end)

    def log(self, node: SimNode | None, event: str, **fields: Any) -> None:
        if self.trace:
            entry: dict[str, Any] = {"t": self.now, "node": node.index if node is not None else None, "event": event}
            entry.update(fields)
            self.events.append(entry)

    def _sample_finality(self) -> None:
        self.record.final_over_time.append((self.now, len(self.record.finality_ms)))

    # -- the workload ------------------------------------------------------------------------------

    def _arrival(self, index: int) -> int:
        """The next Poisson arrival of `index`'s workload, in ms (kept in microseconds, so a
        high rate is not rounded away)."""
        rate = self.scenario.workload.rate_per_s
        self._next_us[index] += max(1, int(self._workload_rng[index].expovariate(rate) * 1_000_000))
        return max(self.now + 1, self._next_us[index] // 1000)

    def _work(self, node: SimNode, _: Any) -> None:
        if self.now >= self.scenario.workload_end_ms:
            return
        workload = self.scenario.workload
        rng = self._workload_rng[node.index]
        others = [a for a in self.genesis.addresses if a != node.address]
        if others:
            body = {"to": rng.choice(others), "token": TOKEN.symbol, "amount": rng.randint(1, workload.amount_max_e9)}
            self._sign_own(node, "transfer", body)
        self._push(self._arrival(node.index), WORK, node.index, None)

    def _sign_own(self, node: SimNode, kind: str, body: dict[str, Any], draft: Draft | None = None) -> SignedOp | None:
        """Sign, apply and gossip one operation of `node`: its own (honest: only if the dry run
        takes an order), or a behaviour's `draft` (no dry run; its parents if it names them).
        Then the operations its behaviours sign after it."""
        parents = node.parents() if draft is None or draft.parents is None else draft.parents
        if draft is None:
            for behaviour in node.behaviours:
                parents = behaviour.parents(node, parents)
        unsigned = unsigned_op(node.replica.ctx, node.address, node.next_seq(), parents, kind, body, node.clock())
        op = sign(unsigned, node.key)
        record = self.record
        if kind.startswith("order."):
            if draft is None and node.replica.dry_run(op) is not None:
                record.orders_refused += 1
                return None  # an honest node refuses it before signing: its seq is not used
            record.orders_signed += 1
        self._decoded_ops[op.raw] = op
        record.signed += 1
        if node.honest:
            record.signed_honest += 1
            node.own_unfinal.append((op.op_id, self.now))
            self._spreading[op.op_id] = [self.now, 0]
        self._ingest(node, [op], node.index)
        self.log(node, "sign", seq=op.seq, op="0x" + op.op_id.hex()[:16], kind=kind)
        self._gossip(node, op)
        if draft is None:
            for behaviour in node.behaviours:
                self._sign_drafts(node, behaviour, behaviour.after_own(node, op))
        return op

    def _sign_drafts(self, node: SimNode, behaviour: Behaviour, drafts: list[Draft]) -> None:
        for draft in drafts:
            op = self._sign_own(node, draft.kind, draft.body, draft)
            if op is not None:
                self.record.forged[behaviour.name] = self.record.forged.get(behaviour.name, 0) + 1
                if draft.answers is not None:
                    self.record.front_runs.append((draft.answers, op.op_id))

    # -- trading -----------------------------------------------------------------------------------

    def _start_trading(self, node: SimNode, start_ms: int) -> None:
        trading = self.scenario.trading
        if trading is None:
            return
        if node.participant in trading.oracles:
            if "perp" in trading.markets:
                self._push(start_ms + self._flows[node.index].rng.randrange(trading.oracle_interval_ms), ORACLE,
                           node.index, None)
        elif trading.orders_per_s > 0:
            self._push(self._order_arrival(node.index, start_ms), ORDER, node.index, None)

    def _order_arrival(self, index: int, after: int) -> int:
        flow = self._flows[index]
        return max(self.now + 1, after + max(1, int(flow.rng.expovariate(flow.spec.orders_per_s) * 1000)))

    def _order(self, node: SimNode, _: Any) -> None:
        if self.now >= self.scenario.workload_end_ms:
            return
        open_orders = [order.order_id for order in node.replica.open_orders(node.address)]
        kind, body = self._flows[node.index].next(open_orders)
        self._sign_own(node, kind, body)
        self._push(self._order_arrival(node.index, self.now), ORDER, node.index, None)

    def _oracle(self, node: SimNode, _: Any) -> None:
        if self.now >= self.scenario.workload_end_ms:
            return
        trading = self.scenario.trading
        assert trading is not None
        price = self._flows[node.index].oracle_price(trading.mid_e9)
        if node.honest:
            self.record.oracle_posts.append(price)
        for behaviour in node.behaviours:
            price = behaviour.oracle_price(node, price)
        self._sign_own(node, "oracle.price", {"market": PERP.symbol, "price": price})
        self._push(self.now + trading.oracle_interval_ms, ORACLE, node.index, None)

    # -- sending -----------------------------------------------------------------------------------

    def _send(self, src: SimNode, dst: int, channel: str, data: bytes, message_id: MessageId | None = None) -> None:
        record = self.record
        size = len(data)
        record.messages[channel] += 1
        record.bytes[channel] += size
        arrivals = self.network.send(src.index, dst, size, self.now)
        if arrivals:  # `_push`, inlined: this is the engine's most frequent event
            payload = (src.index, channel, data, message_id, src.incarnation)
            incarnation, heap = self.nodes[dst].incarnation, self._heap
            for arrival in arrivals:
                self._seq += 1
                heapq.heappush(heap, (arrival, self._seq, DELIVER, dst, incarnation, payload))

    @staticmethod
    def _relays(node: SimNode, channel: str, items: Sequence[Any], dst: int) -> bool:
        """Whether this node forwards a message to `dst`: honest nodes always; a Byzantine one
        unless a behaviour drops it (behaviours never rewrite what they relay)."""
        for behaviour in node.behaviours:
            for item in items:
                kept = behaviour.gossip(node, item, dst, False) if channel == OPS else behaviour.consensus(
                    node, item, dst, False
                )
                if not kept:
                    return False
        return True

    def _message_id(self, node: SimNode) -> MessageId:
        self._published += 1
        message_id = (node.index, self._published)
        node.seen.add(message_id)
        return message_id

    def _gossip(self, node: SimNode, op: SignedOp) -> None:
        """Publish a new own operation to every peer (flood publishing)."""
        self._spread(node, OPS, [op], list(node.sessions), None)

    def _broadcast(self, node: SimNode, message: ConsensusMessage) -> None:
        self._spread(node, CONSENSUS, [message], list(node.sessions), None)

    def _spread(
        self,
        node: SimNode,
        channel: str,
        items: Sequence[Any],
        targets: Sequence[int],
        relayed: tuple[bytes, MessageId] | None,
    ) -> None:
        """Send gossip `items` (operations or one consensus message) to `targets`: the same
        bytes under one message id to each, unless a behaviour of this node rewrites them for a
        peer (then each distinct rewrite is a message of its own)."""
        encode = _encode_ops if channel == OPS else _encode_consensus
        if node.honest or relayed is not None:
            data, message_id = relayed if relayed is not None else (encode(items), self._message_id(node))
            for dst in targets:
                if relayed is None or self._relays(node, channel, items, dst):
                    self._send(node, dst, channel, data, message_id)
            return
        ids: dict[bytes, MessageId] = {}
        for dst in targets:
            out = list(items)
            for behaviour in node.behaviours:
                if channel == OPS:
                    out = [one for op in out for one in behaviour.gossip(node, op, dst, True)]
                else:
                    out = [one for message in out for one in behaviour.consensus(node, message, dst, True)]
            groups = [out] if channel == OPS else [[one] for one in out]
            for group in groups:
                if group:
                    data = encode(group)
                    if data not in ids:
                        ids[data] = self._message_id(node)
                    self._send(node, dst, channel, data, ids[data])

    def _sync_send(self, node: SimNode, dst: int, messages: Sequence[SyncMessage]) -> None:
        out: Sequence[SyncMessage | bytes] = messages
        for behaviour in node.behaviours:
            out = behaviour.sync(node, dst, out)
        for message in out:
            if isinstance(message, bytes):
                data = message
            elif isinstance(message, Status):  # a tick's Status is the same for every peer: encode it once
                last = node.last_status
                if last is None or last[0] != message:
                    last = node.last_status = (message, encode_sync(message))
                data = last[1]
            else:
                data = encode_sync(message)
            self._send(node, dst, SYNC, data)

    # -- receiving ---------------------------------------------------------------------------------

    def _reject(self, node: SimNode, exc: InvalidInput) -> None:
        if node.honest:
            rejects = self.record.rejects
            rejects[exc.code] = rejects.get(exc.code, 0) + 1

    def _deliver(self, node: SimNode, data: tuple[int, str, bytes, MessageId | None, int]) -> None:
        src, channel, payload, message_id, src_incarnation = data
        if self.nodes[src].incarnation != src_incarnation:
            return  # sent on a connection of a process that has crashed since
        if message_id is not None:
            if message_id in node.seen:
                return  # gossipsub's seen cache: a message is delivered and forwarded once
            node.seen.add(message_id)
        try:
            if channel == OPS:
                ops = self._decode_ops(node, decode_batch(payload))
                self._ingest(node, ops, src)
                self._relay(node, OPS, ops, src, payload, message_id)
            elif channel == SYNC:
                self._on_sync(node, src, payload)
            elif channel == CONSENSUS:
                message = self._decode_consensus(payload)
                self._on_consensus(node, message)
                self._relay(node, CONSENSUS, [message], src, payload, message_id)
            elif channel == CATCHUP:
                self._serve_catchup(node, src, payload)
            else:
                self._on_catchup_answer(node, src, payload)
        except InvalidInput as exc:  # the real node scores the peer down and drops the input
            self._reject(node, exc)

    def _relay(
        self, node: SimNode, channel: str, items: Sequence[Any], src: int, payload: bytes, message_id: MessageId | None
    ) -> None:
        """Forward a valid gossip message to the mesh (not back to where it came from)."""
        if message_id is None:
            return
        targets = [peer for peer in node.mesh if peer != src and peer != message_id[0]]
        if targets:
            self._spread(node, channel, items, targets, (payload, message_id))

    def _decode_ops(self, node: SimNode, raws: Iterable[bytes]) -> list[SignedOp]:
        """As `p2p.peer.Peer._decode_ops`: decode and verify each operation. Decoding is a pure
        function of the bytes (every node has the same genesis), so the run decodes and verifies
        each distinct byte string once and the nodes share the frozen result: one object per
        operation in memory, whatever the number of replicas holding it. Bytes that fail raise
        `InvalidInput` at every node that receives them."""
        cache, ctx = self._decoded_ops, node.replica.ctx
        ops = []
        for raw in raws:
            op = cache.get(raw)
            if op is None:
                op = decode_op(raw, ctx)
                cache[raw] = op
            ops.append(op)
        return ops

    def _decode_consensus(self, payload: bytes) -> ConsensusMessage:
        """`channel.core.consensus.decode_message`, shared by the nodes like `_decode_ops` (a
        bounded cache: a message is delivered within moments of being sent)."""
        cache = self._decoded_messages
        message = cache.get(payload)
        if message is None:
            message = decode_consensus(payload)
            cache[payload] = message
            if len(cache) > DECODED_MESSAGES:
                del cache[next(iter(cache))]
        return message

    def _on_sync(self, node: SimNode, src: int, payload: bytes) -> None:
        session = node.sessions[src]
        cache = self._decoded_sync
        message = cache.get(payload)
        if message is None:  # shared like `_decode_consensus` (a Status goes to every peer)
            message = decode_sync(payload)
            cache[payload] = message
            if len(cache) > DECODED_MESSAGES:
                del cache[next(iter(cache))]
        step = session.receive(node.view, message)
        if step.send:
            self._sync_send(node, src, step.send)
        if step.deliver and not (self.switches.ignore_sync_ops and node.honest):
            result = self._ingest(node, self._decode_ops(node, step.deliver), src, from_sync=True)
            follow = session.after_delivery(node.view, result.missing)
            if follow:
                self._sync_send(node, src, follow)

    def _ingest(self, node: SimNode, ops: Sequence[SignedOp], src: int, from_sync: bool = False) -> AddResult:
        """As `p2p.peer.Peer._ingest`: the operations not yet known, in one batch."""
        view = node.view
        fresh = [op for op in ops if not view.knows(op.op_id)]
        if node.honest:
            self.record.duplicates += len(ops) - len(fresh)
        if not fresh:
            return AddResult()
        node.store.put_ops(fresh, fsync=src == node.index)  # write-ahead; an own operation is fsynced
        result = node.replica.receive_many(fresh, node.source if src != node.index else b"")
        for _, exc in result.rejected:
            self._reject(node, exc)
        if node.honest:
            self._note_equivocations(node, result.accepted)
            self._note_spread(result.accepted)
        elif src != node.index and result.accepted:
            for behaviour in node.behaviours:
                self._sign_drafts(node, behaviour, behaviour.on_received(node, result.accepted))
        if result.missing and not from_sync:
            self._note_gaps(node, result.missing, src)
        if result.accepted:
            self._data_arrived(node)
        return result

    def _note_equivocations(self, node: SimNode, accepted: Iterable[SignedOp]) -> None:
        """The check's own record of equivocations this honest node holds both sides of."""
        first = node.first_at_seq
        for op in accepted:
            key = (op.author, op.seq)
            if key in first:
                if first[key] != op.op_id and key not in node.equivocations_seen:
                    node.equivocations_seen.append(key)
            else:
                first[key] = op.op_id

    def _note_spread(self, accepted: Iterable[SignedOp]) -> None:
        """Count honest replicas holding each honest operation; when all do, its propagation time."""
        spreading, everyone = self._spreading, len(self.honest)
        for op in accepted:
            entry = spreading.get(op.op_id)
            if entry is not None:
                entry[1] += 1
                if entry[1] == everyone:
                    self.record.propagation_ms.append(self.now - entry[0])
                    del spreading[op.op_id]

    def _note_gaps(self, node: SimNode, missing: Iterable[OpId], src: int) -> None:
        for op_id in sorted(missing):
            node.gaps.setdefault(op_id, src)
        if not node.gap_due:
            node.gap_due = True
            self._push(self.now + self.scenario.sync.gap_grace_ms, GAP, node.index, None)

    def _gap(self, node: SimNode, _: Any) -> None:
        """As `p2p.peer.Peer._gap_filler`: ask the node that showed the gap (any: every peer)."""
        node.gap_due = False
        gaps, node.gaps = node.gaps, {}
        by_source: dict[int, list[OpId]] = {}
        for op_id, src in gaps.items():
            if not node.view.knows(op_id):
                by_source.setdefault(src, []).append(op_id)
        for src, ids in by_source.items():
            targets = [src] if src in node.sessions else list(node.sessions)
            for dst in targets:
                out = node.sessions[dst].need(node.view, sorted(ids))
                if out:
                    self._sync_send(node, dst, out)

    def _sync_tick(self, node: SimNode, first: bool) -> None:
        for dst, session in node.sessions.items():
            out = session.start(node.view) if first else session.tick(node.view)
            self._sync_send(node, dst, out)
        self._push(self.now + self.scenario.sync.interval_ms, SYNC_TICK, node.index, False)

    # -- the consensus driver ----------------------------------------------------------------------

    def _on_consensus(self, node: SimNode, message: ConsensusMessage) -> None:
        node.highest_seen = max(node.highest_seen, message.height)
        if message.height >= node.height and not node.started and node.pending is None:
            self._start(node)
        self._carry_out(node, node.consensus.on_message(message))

    def _consensus_tick(self, node: SimNode, _: Any) -> None:
        self._maybe_fetch(node)
        if not node.started and node.pending is None:
            due = self.now - node.last_start >= self.scenario.consensus.interval_ms
            if node.highest_seen >= node.height or (due and node.app.has_news()):
                self._start(node)
        self._push(self.now + max(1, self.scenario.consensus.interval_ms // 4), CONSENSUS_TICK, node.index, None)

    def _timeout(self, node: SimNode, timeout: Timeout) -> None:
        consensus = node.consensus
        if consensus.height == timeout.height and consensus.round == timeout.round and consensus.decision is None:
            self.log(node, "timeout", kind=timeout.kind.name.lower(), version=timeout.height, round=timeout.round)
        self._carry_out(node, consensus.on_timeout(timeout))

    def _network_event(self, node: SimNode, what: str) -> None:
        self.log(None, "network", what=what)

    def _data_arrived(self, node: SimNode) -> None:
        if node.pending is not None:
            self._apply(node, node.pending)
        elif node.started:
            self._carry_out(node, node.consensus.on_data_arrived())

    def _start(self, node: SimNode) -> None:
        node.started = True
        node.last_start = self.now
        self._carry_out(node, node.consensus.start_height(node.height))

    def _request(self, node: SimNode, op_ids: Iterable[OpId]) -> None:
        self._note_gaps(node, op_ids, -1)

    def _carry_out(self, node: SimNode, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, SigningRecord):
                node.store.put_signed(output)  # fsync, before the Broadcast that follows
                continue
            if isinstance(output, Broadcast):
                self._broadcast(node, output.message)
            elif isinstance(output, Send):
                if node.honest:
                    self.record.sends += 1
                self._send_to(node, output.to, output.message)
            elif isinstance(output, Fetch):
                self._request(node, output.op_ids)
            elif isinstance(output, ScheduleTimeout):
                self._push(self.now + output.duration, TIMEOUT, node.index, output.timeout)
            elif isinstance(output, Decide):
                self._apply(node, output)
            elif isinstance(output, Certified):
                self._certified(node, output)
            elif isinstance(output, Evidence):
                if node.honest:
                    self.record.consensus_evidence.append((node.index, output.kind, output.offender))
                self.log(node, "evidence", kind=output.kind, offender="0x" + output.offender.hex())

    def _send_to(self, node: SimNode, to: Address, message: ConsensusMessage) -> None:
        """A `Send`: the decision proof, then the checkpoint signatures of its version (as the
        driver sends them). With ``consensus.send_publishes`` published to everyone and relayed,
        as the runtime driver does; else to every node of that participant, point to point."""
        extra = node.consensus.checkpoint_signatures(message.height)
        if self.scenario.consensus.send_publishes:
            for one in [message, *extra]:
                self._spread(node, CONSENSUS, [one], list(node.sessions), None)
            return
        for target in self.by_address.get(to, []):
            if target is node:
                continue
            for one in [message, *extra]:
                if self._relays(node, CONSENSUS, [one], target.index):
                    self._send(node, target.index, CONSENSUS, encode_consensus(one))

    def _apply(self, node: SimNode, decide: Decide) -> None:
        """As `ConsensusDriver._apply`: certify the decided cut (fetching what it lacks first)."""
        cut = decide.value.cut()
        replica = node.replica
        if node.honest and decide.value.value_id not in node.app.valid:
            # decided without this node's own validation (others' precommits, catch-up): replay it
            try:
                preview = replica.preview(cut)
            except MissingOperations as exc:
                node.pending = decide
                self._request(node, sorted(OpId(m) for m in exc.missing))
                return
            except InvalidInput as exc:
                self.record.certify_failures.append((node.index, decide.height, str(exc)))
                node.pending = None
                return
            self._compare_roots(node, decide, preview.state_hash, preview.payout_root)
        try:
            replica.certify(cut)
        except MissingOperations as exc:
            node.pending = decide
            self._request(node, sorted(OpId(m) for m in exc.missing))
            return
        except InvalidInput as exc:
            if node.honest:
                self.record.certify_failures.append((node.index, decide.height, str(exc)))
            node.pending = None
            return
        node.pending = None
        node.store.put_decision(decide)
        if node.honest and self.scenario.trading is not None and (mark := replica.ledger.mark(PERP.symbol)):
            self.record.marks.append((node.index, decide.height, mark))
        checkpoint = decide.value.checkpoint
        self.record.decisions.append(Decision(
            node.index, decide.height, decide.round, decide.value.value_id, self.now, checkpoint.state_hash,
            checkpoint.payout_root,
        ))
        value_id = "0x" + decide.value.value_id.hex()[:16]
        self.log(node, "decide", version=decide.height, round=decide.round, value=value_id, heads=len(cut.heads))
        if node.honest:
            epoch_of = replica.epoch_of
            while node.own_unfinal and node.own_unfinal[0][0] in epoch_of:
                _, signed_at = node.own_unfinal.popleft()
                self.record.finality_ms.append(self.now - signed_at)
        node.proofs[decide.height] = encode_consensus(decide.proof)
        node.height = decide.height + 1
        node.started = False
        if node.highest_seen >= node.height and not node.catching_up:
            self._start(node)

    def _compare_roots(self, node: SimNode, decide: Decide, state_hash: bytes, payout_root: bytes) -> None:
        checkpoint = decide.value.checkpoint
        for which, mine, theirs in (("state_hash", state_hash, checkpoint.state_hash),
                                    ("payout_root", payout_root, checkpoint.payout_root)):
            if mine != theirs:
                self.record.root_mismatches.append((node.index, decide.height, which))

    def _certified(self, node: SimNode, output: Certified) -> None:
        if node.honest:
            digest = checkpoint_digest(self.genesis, output.certificate.checkpoint)
            self.record.certified.append((node.index, output.height, digest))
        self.log(node, "certified", version=output.height)

    # -- checkpoint catch-up (channel.runtime.catchup, as the driver uses it) -----------------------

    def _maybe_fetch(self, node: SimNode) -> None:
        """As `ConsensusDriver._maybe_fetch`: ask the peers in turn, one a catch-up period and
        each with at most one request in flight, for the stored proofs after our version, when
        we may be behind."""
        c = self.scenario.consensus
        if self.now - node.last_fetch < c.catchup_period_ms or node.pending is not None:
            return
        behind = (
            not node.caught_up
            or node.highest_seen > node.height
            or (node.started and node.consensus.round > 0)
            or (node.started and self.now - node.last_start >= c.stuck_after_ms)
            or self.now - node.last_fetch >= c.catchup_idle_ms
        )
        if not behind:
            return
        peers = list(node.sessions)
        free = [peers[(node.next_peer + i) % len(peers)] for i in range(len(peers))]
        retry = RETRY_FETCH_MS
        free = [peer for peer in free if peer not in node.fetching or self.now - node.fetching[peer][1] >= retry]
        if not free:
            return  # every peer has a request of ours in flight
        peer = free[0]
        node.next_peer = peers.index(peer) + 1
        node.fetches += 1
        node.fetching[peer] = (node.fetches, self.now)
        node.last_fetch = self.now
        request = Request(self.genesis.channel_id, node.replica.version + 1, MAX_RECORDS)
        self._send(node, peer, CATCHUP, encode_request(request))
        self._push(self.now + FETCH_MS, FETCH_EXPIRED, node.index, node.fetches)

    def _fetch_expired(self, node: SimNode, number: int) -> None:
        for peer, in_flight in list(node.fetching.items()):
            if in_flight[0] == number:
                del node.fetching[peer]

    def _serve_catchup(self, node: SimNode, src: int, payload: bytes) -> None:
        """As `CatchUpServer.handle`: the stored proofs from the first version asked, this node's
        own signed messages of the heights it has not decided, then the end."""
        request = decode_request(payload)
        frames = []
        for version in range(request.first, request.first + request.count):
            proof = node.proofs.get(version)
            if proof is None:
                break
            frames.append(encode_record(version, proof, None))
        own = [record for record in node.store.signed if record.height > node.replica.version]
        frames.extend(encode_vote(encode_consensus(record.message)) for record in own[-MAX_VOTES:])
        frames.append(encode_end(node.replica.version))
        self._send(node, src, ANSWER, b"".join(encode_frame(frame, CATCHUP_LIMITS) for frame in frames))

    def _on_catchup_answer(self, node: SimNode, src: int, payload: bytes) -> None:
        """As `ConsensusDriver._catch_up`: apply the proofs in version order."""
        if node.fetching.pop(src, None) is None:
            return  # given up on: the real driver closed that stream
        replies = [decode_reply(frame) for frame in FrameDecoder(MAX_FRAME_BYTES).feed(payload)]
        latest = next((reply for reply in replies if isinstance(reply, int)), 0)
        before = node.replica.version
        node.catching_up = True
        try:
            for reply in replies:
                if isinstance(reply, CatchUpRecord) and reply.version == node.replica.version + 1 and (
                    node.pending is None
                ):
                    self._carry_out(node, node.consensus.catch_up(reply.decision))
        except InvalidInput as exc:
            self._reject(node, exc)
        finally:
            node.catching_up = False
        news = False
        for reply in replies:  # as `ConsensusDriver._take_votes`: the peer's part of a height not decided
            if isinstance(reply, int | CatchUpRecord) or reply.height < node.height:
                continue
            digest = encode_consensus(reply)
            news |= digest not in node.pulled
            if len(node.pulled) > PULLED_LIMIT:
                node.pulled.clear()
            node.pulled.add(digest)
            try:
                self._on_consensus(node, reply)
            except InvalidInput as exc:
                self._reject(node, exc)
                break
        if news:  # a stalled height: ask the next peer for its part at once
            node.last_fetch = -(10**12)
        if node.replica.version > before:
            self.log(node, "catchup", versions=node.replica.version - before)
        if latest <= node.replica.version:
            node.caught_up = True
        elif node.replica.version > before:
            node.last_fetch = -(10**12)
        if node.last_fetch < 0:
            self._maybe_fetch(node)
        if node.pending is None and not node.started and node.highest_seen >= node.height:
            self._start(node)

    # -- crash faults ------------------------------------------------------------------------------

    def _fault(self, node: SimNode, what: str) -> None:
        if what == "restart":
            if node.down:
                node.incarnation += 1
                node.down = False
                self._restart(node)
            return
        if node.down:
            return
        node.down = True
        node.incarnation += 1
        lost = node.store.power_cut() if what == "power_cut" else 0
        self.log(node, what, lost_writes=lost)

    def _restart(self, node: SimNode) -> None:
        """As `channel.runtime.node.Node` at start-up: replay the store into a fresh replica,
        certify the stored decisions in order, give the machine its signed votes back, and open
        new sync sessions with every peer (theirs with this node start again too)."""
        store, genesis = node.store, self.genesis
        node.replica = Replica(genesis)
        node.view = HashGraphView(node.replica.graph)
        accepted = node.replica.receive_many([op for _, op in store.ops]).accepted
        for _, decide in store.decisions:
            node.replica.certify(decide.value.cut())
        node.proofs = {decide.height: encode_consensus(decide.proof) for _, decide in store.decisions}
        node.app = SimApplication(node, self.scenario.consensus.time_bound_ms, self.switches)
        node.consensus = Consensus(genesis, node.key, node.app, self.timeouts)
        node.height = node.replica.version + 1
        if not self.switches.forget_signing_log:
            node.consensus.restore([record for record in store.signed if record.height >= node.height])
        node.started, node.last_start, node.highest_seen, node.pending = False, -(10**12), 0, None
        node.catching_up, node.caught_up, node.fetching, node.next_peer = False, False, {}, 0
        node.gaps, node.gap_due, node.last_status, node.seen = {}, False, None, set()
        node.first_at_seq, node.equivocations_seen = {}, []
        if node.honest:
            self._note_equivocations(node, accepted)
        self.log(node, "restart", operations=len(node.replica.graph), version=node.replica.version)
        for peer in self.nodes:
            if peer is node:
                continue
            node.sessions[peer.index] = SyncSession(genesis.channel_id)
            peer.sessions[node.index] = SyncSession(genesis.channel_id)
            if not peer.down:
                self._sync_send(peer, node.index, peer.sessions[node.index].start(peer.view))
        self._push(self.now, SYNC_TICK, node.index, True)
        self._push(self.now + 1, CONSENSUS_TICK, node.index, None)
        if self.scenario.workload.rate_per_s > 0:
            self._next_us[node.index] = self.now * 1000
            self._push(self._arrival(node.index), WORK, node.index, None)
        self._start_trading(node, self.now)
