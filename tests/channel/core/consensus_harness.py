"""A deterministic harness for `channel.core.consensus`: a mock clock, n nodes, a controllable network.

Everything is driven by one event queue ordered by (time, sequence number); nothing reads the
real clock and all randomness comes from one seeded `random.Random`, so a run is a pure function
of its parameters and replays exactly. Messages cross the network as bytes (encode, then
decode at the receiver), so the codec is exercised on every delivery.

The network follows the partial-synchrony model of the paper: before GST a message is delayed
by up to `pre_gst_delay` or dropped; after GST it arrives within `delta`. With ``lossy=False``
a message dropped before GST is delivered by GST + delta instead (the gossip layer catches up,
which is the paper's communication assumption); with ``lossy=True`` it is gone for good
(safety must still hold).

Byzantine nodes run an honest machine, so they stay in step with the protocol, and then
corrupt what it sends: equivocating proposals, double votes, votes for unknown values, and
conflicting checkpoint signatures. Crashed nodes never send anything.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channel.core.consensus import (
    Application,
    Broadcast,
    Certified,
    CheckpointProposal,
    CheckpointSignature,
    Consensus,
    Decide,
    Evidence,
    Message,
    Precommit,
    Prevote,
    Proposal,
    ScheduleTimeout,
    Send,
    TimeoutConfig,
    Validity,
    ValueId,
    decode_message,
    encode_message,
    sign_checkpoint_signature,
    sign_precommit,
    sign_prevote,
    sign_proposal,
    signer_of,
)
from crdt.eip712 import Checkpoint
from crdt.errors import InvalidInput
from crdt.genesis import Genesis, Token
from crdt.hashing import keccak256
from crdt.merkle import MerkleTree, PayoutLeaf
from crdt.testing import make_genesis as testing_genesis
from crdt.types import Address, Hash32, OpId, Symbol

TOKEN = Address(b"\xaa" * 20)


def keys_for(n: int) -> list[bytes]:
    return [keccak256(b"parley-consensus-test-%d" % i) for i in range(n)]


@functools.cache
def make_genesis(n: int) -> tuple[Genesis, tuple[bytes, ...]]:
    keys = keys_for(n)
    genesis = testing_genesis(keys, [Token(Symbol("USDC"), TOKEN, 6)], adjudicator=b"\x01" * 20)
    return genesis, tuple(keys)


@functools.cache
def synthetic_value(genesis: Genesis, height: int, tag: int, good: bool = True) -> CheckpointProposal:
    """A well-formed checkpoint value; `tag` tells values apart, `good` is what the oracle checks."""
    leaves = tuple(
        PayoutLeaf(address, TOKEN, height * 1000 + tag * 10 + i + 500 * kind, kind)
        for i, address in enumerate(genesis.addresses)
        for kind in (0, 1)
    )
    marker = b"good" if good else b"bad"
    checkpoint = Checkpoint(
        channel=genesis.channel_id,
        version=height,
        payout_root=MerkleTree(leaves).root,
        state_hash=Hash32(keccak256(b"state %d %d " % (height, tag) + marker)),
        totals=(sum(leaf.amount for leaf in leaves if leaf.kind == 0),),
        withdrawn=(sum(leaf.amount for leaf in leaves if leaf.kind == 1),),
        deposit_nonce=0,
        time=height * 10_000 + tag,
    )
    heads = (OpId(keccak256(b"head %d %d" % (height, tag))),)
    return CheckpointProposal(checkpoint, heads, (), leaves)


def is_good(genesis: Genesis, value: CheckpointProposal) -> bool:
    tag = value.checkpoint.time - value.height * 10_000
    return 0 <= tag < 1000 and value == synthetic_value(genesis, value.height, tag, True)


class SyntheticApp:
    """Proposes a different good value per (proposer, round) and accepts exactly the good ones.
    With probability `not_yet` a good value is first missing data (NOT_YET) for a while."""

    def __init__(self, sim: Simulation, index: int) -> None:
        self.sim = sim
        self.index = index
        self.arrived: set[ValueId] = set()
        self.waiting: set[ValueId] = set()

    def get_value(self, height: int, round_: int) -> CheckpointProposal | None:
        return synthetic_value(self.sim.genesis, height, (self.index * 7 + round_) % 11)

    def validate(self, height: int, value: CheckpointProposal) -> Validity:
        if not is_good(self.sim.genesis, value):
            return Validity.INVALID
        vid = value.value_id
        if vid in self.arrived:
            return Validity.VALID
        if vid not in self.waiting:
            if self.sim.rng.random() >= self.sim.not_yet:
                self.arrived.add(vid)
                return Validity.VALID
            self.waiting.add(vid)
            self.sim.push(self.sim.now + self.sim.rng.randint(1, 4000), "data", self.index, vid)
        return Validity.NOT_YET


@dataclass
class Byzantine:
    """What a faulty node does to the messages its honest machine would send."""

    equivocate_proposals: bool = False
    double_vote: bool = False
    unknown_votes: bool = False
    double_sign: bool = False


@dataclass
class NodeLog:
    decisions: dict[int, Decide] = field(default_factory=dict)
    certificates: dict[int, Certified] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    errors: list[tuple[int, InvalidInput]] = field(default_factory=list)  # (sender, error)
    round_at_gst: dict[int, int] = field(default_factory=dict)
    started: dict[int, int] = field(default_factory=dict)  # height -> time


class Simulation:
    def __init__(
        self,
        n: int,
        *,
        seed: int,
        heights: int = 2,
        byzantine: dict[int, Byzantine] | None = None,
        crashed: set[int] | frozenset[int] = frozenset(),
        gst: int = 0,
        delta: int = 100,
        pre_gst_delay: int = 5000,
        drop: float = 0.0,
        lossy: bool = False,
        not_yet: float = 0.0,
        timeouts: TimeoutConfig | None = None,
        app_factory: Callable[[Simulation, int], Application] | None = None,
    ) -> None:
        self.genesis, self.keys = make_genesis(n)
        self.n = n
        self.rng = random.Random(seed)
        self.heights = heights
        self.byzantine = dict(byzantine or {})
        self.crashed = set(crashed)
        self.gst, self.delta, self.pre_gst_delay = gst, delta, pre_gst_delay
        self.drop, self.lossy, self.not_yet = drop, lossy, not_yet
        self.now = 0
        self._queue: list[tuple[int, int, str, int, Any]] = []
        self._seq = 0
        self.nodes: dict[int, Consensus] = {}
        self.logs: dict[int, NodeLog] = {}
        self.apps: dict[int, SyntheticApp] = {}  # only the synthetic ones
        self.wire_signatures: list[tuple[int, CheckpointSignature]] = []  # every commit anyone sent: (sender, commit)
        self.seen_values: dict[int, list[CheckpointProposal]] = {}  # height -> values Byzantines saw
        self.deliveries = 0
        self.relayed: dict[int, set[bytes]] = {}
        for i in range(n):
            if i in self.crashed:
                continue
            app: Application = SyntheticApp(self, i) if app_factory is None else app_factory(self, i)
            if isinstance(app, SyntheticApp):
                self.apps[i] = app
            self.nodes[i] = Consensus(self.genesis, self.keys[i], app, timeouts)
            self.logs[i] = NodeLog()
        self._gst_noted = False

    @property
    def honest(self) -> list[int]:
        return [i for i in self.nodes if i not in self.byzantine]

    # -- the event queue ---------------------------------------------------------------------------

    def push(self, time: int, kind: str, node: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, kind, node, payload))

    def run(self, until: int) -> None:
        for i in self.nodes:
            self.push(0, "start", i, 1)
        while self._queue and self._queue[0][0] <= until:
            time, _, kind, node, payload = heapq.heappop(self._queue)
            if not self._gst_noted and time >= self.gst:
                self._gst_noted = True
                for i, machine in self.nodes.items():
                    self.logs[i].round_at_gst[machine.height] = machine.round
            self.now = time
            machine = self.nodes[node]
            if kind == "start":
                self.logs[node].started[payload] = time
                outputs = machine.start_height(payload)
            elif kind == "timeout":
                outputs = machine.on_timeout(payload)
            elif kind == "data":
                self.apps[node].waiting.discard(payload)
                self.apps[node].arrived.add(payload)
                outputs = machine.on_data_arrived()
            else:
                sender, data = payload
                self.deliveries += 1
                try:
                    message = decode_message(data)
                    outputs = machine.on_message(message)
                except InvalidInput as exc:
                    self.logs[node].errors.append((sender, exc))
                    continue
                if node not in self.byzantine and (sender in self.byzantine or isinstance(message, Proposal)):
                    self._relay(node, message, data)
            self._carry_out(node, outputs)

    def _relay(self, node: int, message: Message, data: bytes) -> None:
        """Gossip forwards what it accepts: a correct node passes on each message it accepted
        from a Byzantine sender, and each proposal, once, so every correct node gets what some
        correct node got (the paper's gossip assumption). Correct senders already reach all."""
        seen = self.relayed.setdefault(node, set())
        if data not in seen:
            seen.add(data)
            for to in self._peers(node):
                self.deliver(node, to, message)

    def _carry_out(self, node: int, outputs: list[Any]) -> None:
        log = self.logs[node]
        for output in outputs:
            if isinstance(output, Broadcast):
                self._send(node, output.message)
            elif isinstance(output, Send):
                self.deliver(node, self.genesis.addresses.index(output.to), output.message)
            elif isinstance(output, ScheduleTimeout):
                self.push(self.now + output.duration, "timeout", node, output.timeout)
            elif isinstance(output, Decide):
                log.decisions[output.height] = output
                if output.height < self.heights:
                    self.push(self.now + self.rng.randint(0, 50), "start", node, output.height + 1)
            elif isinstance(output, Certified):
                log.certificates[output.height] = output
            elif isinstance(output, Evidence):
                log.evidence.append(output)

    # -- the network --------------------------------------------------------------------------------

    def _peers(self, sender: int) -> list[int]:
        return [j for j in range(self.n) if j != sender and j not in self.crashed]

    def deliver(self, sender: int, to: int, message: Message) -> None:
        if isinstance(message, CheckpointSignature):
            self.wire_signatures.append((sender, message))
        if to in self.crashed or to == sender:
            return
        data = encode_message(message)
        if self.now >= self.gst:
            at = self.now + self.rng.randint(0, self.delta)
        elif self.rng.random() < self.drop:
            if self.lossy:
                return
            at = self.gst + self.rng.randint(0, self.delta)
        else:
            at = self.now + self.rng.randint(0, self.pre_gst_delay)
            if at > self.gst:
                at = min(at, self.gst + self.rng.randint(0, self.delta))
        self.push(at, "message", to, (sender, data))

    def _send(self, sender: int, message: Message) -> None:
        behaviour = self.byzantine.get(sender)
        peers = self._peers(sender)
        if behaviour is None:
            for to in peers:
                self.deliver(sender, to, message)
            return
        self._corrupt(sender, behaviour, message, peers)

    def _corrupt(self, sender: int, behaviour: Byzantine, message: Message, peers: list[int]) -> None:
        genesis, key, rng = self.genesis, self.keys[sender], self.rng
        rng.shuffle(peers)
        half = rng.randint(0, len(peers))
        first, second = peers[:half], peers[half:]
        alternative: Message | None = None
        if isinstance(message, Proposal):
            self.seen_values.setdefault(message.height, []).append(message.value)
            if behaviour.equivocate_proposals:
                other = synthetic_value(genesis, message.height, rng.randrange(11))
                alternative = sign_proposal(genesis, key, message.height, message.round, other, -1)
        elif isinstance(message, Prevote | Precommit):
            if behaviour.double_vote:
                known = [v.value_id for v in self.seen_values.get(message.height, [])]
                choices = [vid for vid in [*known, None] if vid != message.value_id]
                pick = rng.choice(choices) if choices else None
                sign = sign_prevote if isinstance(message, Prevote) else sign_precommit
                alternative = sign(genesis, key, message.height, message.round, pick)
            if behaviour.unknown_votes:
                junk = ValueId(rng.randbytes(32))
                for to in peers:
                    for sign in (sign_prevote, sign_precommit):
                        self.deliver(sender, to, sign(genesis, key, message.height, message.round + 1, junk))
        elif isinstance(message, CheckpointSignature) and behaviour.double_sign:
            other = synthetic_value(genesis, message.checkpoint.version, 11 + rng.randrange(5)).checkpoint
            alternative = sign_checkpoint_signature(genesis, key, other)
        for to in first:
            self.deliver(sender, to, message)
        for to in second:
            self.deliver(sender, to, alternative if alternative is not None else message)

    # -- checks -------------------------------------------------------------------------------------

    def check_safety(self) -> None:
        """Agreement, sound certificates and evidence, and no certifiable conflict anywhere."""
        genesis = self.genesis
        honest = self.honest
        for height in range(1, self.heights + 1):
            decided = {self.logs[i].decisions[height].value for i in honest if height in self.logs[i].decisions}
            assert len(decided) <= 1, f"two values decided at height {height}"
            for i in honest:
                certified = self.logs[i].certificates.get(height)
                if certified is not None:
                    assert certified.value in decided
                    certified.certificate.verify(genesis)
        # No two checkpoints of one version gather threshold signatures among all that were sent.
        signers: dict[tuple[int, bytes], set[Address]] = {}
        for _, commit in self.wire_signatures:
            digest = commit.checkpoint.digest(genesis.domain)
            signers.setdefault((commit.checkpoint.version, digest), set()).add(signer_of(genesis, commit))
        certifiable: dict[int, int] = {}
        for (version, _), who in signers.items():
            if len(who) >= genesis.threshold:
                certifiable[version] = certifiable.get(version, 0) + 1
        assert all(count == 1 for count in certifiable.values()), certifiable
        faulty = {genesis.addresses[i] for i in self.byzantine}
        for i in honest:
            for evidence in self.logs[i].evidence:
                assert evidence.offender in faulty, "evidence against an honest node"
                assert signer_of(genesis, evidence.first) == evidence.offender
                assert signer_of(genesis, evidence.second) == evidence.offender
                assert evidence.first != evidence.second
            for sender, error in self.logs[i].errors:
                assert sender in self.byzantine, f"an honest message was refused: {error!r}"
