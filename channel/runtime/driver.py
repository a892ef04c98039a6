"""Checkpoint finality in the node: the trio driver of `channel.core.consensus.Consensus`.

One task owns the consensus state machine and feeds it, from one input channel: consensus
messages from the gossip topic ``/parley/consensus/<channel>``, expired timeouts, "data arrived"
(the replica accepted operations, so a proposal we could not judge may now be judgeable), and a
ticker. It carries out the machine's outputs: publishing messages, fetching operations by id,
scheduling timeouts, applying decisions to the replica, storing certificates and evidence.

The topic's validator lets a message through only if the machine would take it from any peer
(signed by a participant; a proposal by the round's proposer, with a well-formed value; a
decision with a quorum of distinct precommits), and scores its forwarder down otherwise, on the
node's `p2p.peer.Peer`, which bans past the threshold (`ConsensusDriver._validate`).

When a height starts: checkpoints are pipelined. A node starts version h as soon as h - 1 is
decided, `interval` (1 s by default) has passed since it started h - 1 (so checkpoints come
at most once per interval on a busy channel, and none on an idle one), and it has something
new to certify (heads beyond the last cut, or confirmed deposits): at the decision, at the
operation that brings the news, or at the next tick (every quarter interval), or as
soon as it sees any message for version h or later (so idle nodes still vote, and a node that
was down starts voting, which makes its peers send it the `Decision` proofs it missed).

What this node proposes (`NodeApplication.get_value`): its current heads as the cut, the
confirmed deposits not yet credited, the time of its clock (strictly after the previous
checkpoint's), and the roots `Replica.preview` computes for that cut. What it votes for
(`validate`, the pure `channel.core.validation.validate_proposal`): it holds every operation of
the cut (else the machine outputs a `Fetch` of their ids, sorted, which this driver asks its
peers for), knows the same deposits, finds the time within `time_bound_ms` of its clock
and after the previous checkpoint, and computes exactly the same roots, totals and leaves.

Write-ahead: a decision is stored only after the replica certified it (its operations are
already stored), so a restart re-certifies the stored decisions in order; a decision lost to a
crash between the two is learnt again from the peers. Every proposal and vote this node signs
is stored before it is published (the machine's `SigningRecord` output) and given back to the machine
after a restart, so the node never signs two votes for one slot and keeps its lock.

Catch-up (`channel.runtime.catchup`): peers send the proof of a recent version to a node whose votes
show it is behind, but they keep only a few versions in memory, and nobody sends a version's
commits twice. So a node also asks one peer at a time (in turn) for the stored proofs and
certificates it lacks: at start-up, when it sees messages of a version beyond the one it works
on, when its version has not decided in round 0, when the height it works on started
`stuck_after` seconds ago and has not decided (a vote gossip lost is never sent again, and
round 0 never times out while a step waits for a quorum of votes that were lost: before this,
such a height waited for `catchup_idle`, which a soak under load showed as stalls of tens of
seconds), for a decided version whose certificate has not formed within `certificate_grace`
seconds, and every `catchup_idle` seconds anyway (idle peers send nothing that would show we
are behind). It asks at most once per `catchup_period`,
and again at once (the next peer in turn) while the answers bring new versions. A request may
be in flight to each peer, and a peer that has not answered within `RETRY_FETCH_SECONDS` may be
asked again in its turn: one that does not answer (down, cut off, or its connection full)
neither holds every node's catch-up for the exchange's 10 s, as it did, nor its own turn.

A node whose store lost its signing log (`channel.runtime.node.SignerState`: ``vote_from`` unknown)
abstains (`Consensus.abstain_below`): it follows and decides, but signs no proposal or vote,
until checkpoint catch-up answers from a quorum of other participants (threshold - 1) have
brought it up to their latest version L. It then votes from L + 2 on: it may have voted at
L + 1 (the height running when it lost its store, at most) but at no height after that.

Store writes that fail (a full disk) are never raised here: a vote whose record could not be
stored is not sent (to anyone, so no peer holds a vote this node could contradict after a
restart); decisions, certificates and evidence that could not be stored are learnt again from
peers after a restart.

Clocks: intervals, timeouts, grace periods and catch-up pacing are measured on trio's clock
(`trio.current_time()`), so a node runs under `trio.testing.MockClock`; checkpoint times come
from the node's wall clock (`Node.wall_clock`, milliseconds since 1970).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from channel.core.consensus import (
    Application,
    Broadcast,
    Certified,
    CheckpointProposal,
    CheckpointSignature,
    Consensus,
    Decide,
    Decision,
    Evidence,
    Fetch,
    InvalidProposal,
    Message,
    NeedOperations,
    NotProposer,
    Proposal,
    ScheduleTimeout,
    Send,
    SigningRecord,
    Timeout,
    TimeoutConfig,
    Validity,
    decode_message,
    decode_signing_record,
    encode_message,
    encode_signing_record,
    proposer,
    signer_of,
)
from channel.core.validation import LocalView, validate_proposal
from channel.runtime.catchup import MAX_RECORDS, PROTOCOL, RETRY_FETCH_SECONDS, Answer, CatchUpServer, Request, fetch
from channel.runtime.certificates import HeldCertificates
from channel.runtime.keystore import Key
from channel.runtime.store import Store
from crdt.certificate import Certificate
from crdt.eip712 import Checkpoint
from crdt.errors import InvalidInput, MissingOperations, WrongChannel
from crdt.genesis import Genesis
from crdt.ledger import Deposit
from crdt.ops import SignedOp
from crdt.replica import Cut, Replica
from crdt.types import Address
from p2p.errors import RateLimited, TransportError
from p2p.peer import Peer
from p2p.policy import RateLimits, TokenBucket
from p2p.transport import PeerId, Transport

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # ms
ABSTAIN_ALWAYS = 2**63  # `Consensus.abstain_below` while the height to vote from is unknown
CHECKED_DIGESTS = 4096  # digests of consensus gossip that passed the validator's checks
PULLED_LIMIT = 4096  # digests of consensus messages catch-up answers brought (a stalled height's)
DECODED_BYTES = 16 * 1024 * 1024  # validated messages, decoded, not yet read (bounded by size)


def consensus_topic(channel: bytes) -> str:
    return f"/parley/consensus/{channel.hex()}"


@dataclass(frozen=True, slots=True)
class DriverConfig:
    interval: float = 1.0  # at most one checkpoint started per interval (s), while there is news
    time_bound_ms: int = 10_000  # a proposal's time must be this close to our clock
    catchup_period: float = 1.0  # seconds between two catch-up requests
    catchup_idle: float = 10.0  # ask anyway after this long without asking
    stuck_after: float = 2.0  # a height started this long ago and not decided pulls its votes
    certificate_grace: float = 2.0  # a decided version's commits normally all arrive by then
    timeouts: TimeoutConfig = field(
        default_factory=lambda: TimeoutConfig(
            propose_base=1000, propose_delta=500, prevote_base=500, prevote_delta=250,
            precommit_base=500, precommit_delta=250,
        )
    )


def restore_decisions(replica: Replica, decisions: list[tuple[int, bytes]]) -> None:
    """Certify the stored decisions, in order (at start-up, after the operations are loaded)."""
    for version, data in decisions:
        decision = decode_message(data)
        if not isinstance(decision, Decision) or decision.height != version:
            raise InvalidInput(f"stored decision {version} is damaged")
        replica.certify(decision.value.cut())


class NodeApplication(Application):
    """Values to propose and the judgement of others' values, from this node's replica."""

    def __init__(self, driver: ConsensusDriver) -> None:
        self.driver = driver

    @property
    def replica(self) -> Replica:
        return self.driver.replica

    def has_news(self) -> bool:
        replica = self.replica
        if self.driver.new_deposits():
            return True
        previous = set(replica.cuts[-1].heads) if replica.cuts else set()
        return bool(replica.graph.heads) and set(replica.graph.heads) != previous

    def get_value(self, height: int, round_: int) -> CheckpointProposal | None:
        replica = self.replica
        if height != replica.version + 1 or not self.has_news():
            return None
        previous_time = replica.cuts[-1].time if replica.cuts else 0
        when = max(self.driver.clock(), previous_time + 1)
        deposits = tuple(self.driver.new_deposits())
        heads = tuple(sorted(replica.graph.heads))
        return self._proposal(Cut(height, heads, when, deposits))

    def _proposal(self, cut: Cut) -> CheckpointProposal | None:
        try:
            preview = self.replica.preview(cut)
        except InvalidInput as exc:  # should not happen for our own heads; propose nothing
            log.warning("cannot propose checkpoint %d: %s", cut.version, exc)
            return None
        checkpoint = Checkpoint(
            channel=self.replica.genesis.channel_id,
            version=cut.version,
            payout_root=preview.payout_root,
            state_hash=preview.state_hash,
            totals=preview.totals,
            withdrawn=preview.withdrawn,
            deposit_nonce=preview.deposit_nonce,
            time=cut.time,
        )
        return CheckpointProposal(checkpoint, cut.heads, cut.deposits, preview.leaves)

    def validate(self, height: int, value: CheckpointProposal) -> Validity | NeedOperations:
        driver = self.driver
        view = LocalView(self.replica, driver.confirmed_deposits, driver.clock(), driver.config.time_bound_ms)
        answer = validate_proposal(view, height, value)
        outcome = "need_operations" if isinstance(answer, NeedOperations) else answer.name.lower()
        driver.validation_counts[outcome] += 1
        if answer is Validity.INVALID:
            log.info("proposal for checkpoint %d is invalid here (time %d, our clock %d)", height,
                     value.checkpoint.time, view.now_ms)
        return answer


class VoteGate(Protocol):
    @property
    def vote_from(self) -> int | None:
        """The first height this store may vote at; None while it is being learnt from peers."""
        ...


class ConsensusHost(Protocol):
    """What the driver needs of its node (`channel.runtime.node.Node`, which imports this module)."""

    @property
    def replica(self) -> Replica: ...
    @property
    def genesis(self) -> Genesis: ...
    @property
    def key(self) -> Key: ...
    @property
    def address(self) -> Address: ...
    @property
    def store(self) -> Store: ...
    @property
    def signer(self) -> VoteGate: ...
    @property
    def peer(self) -> Peer | None: ...
    @property
    def peers_needed(self) -> int: ...

    def wall_clock(self) -> int: ...
    def persist(self, what: str, write: Callable[..., object], *args: Any, **kwargs: Any) -> bool: ...
    def set_vote_from(self, height: int) -> None: ...
    def announce(self, ops: Sequence[SignedOp]) -> None: ...
    def compact(self) -> int: ...
    def snapshot_if_due(self) -> None: ...


class ConsensusDriver:
    def __init__(
        self,
        node: ConsensusHost,
        transport: Transport,
        config: DriverConfig | None = None,
        clock: Clock | None = None,  # the checkpoint times' clock, in ms: else the node's wall clock
    ) -> None:
        self.node = node
        self.replica: Replica = node.replica
        self.transport = transport
        self.config = config or DriverConfig()
        self.clock: Clock = clock if clock is not None else node.wall_clock
        self.genesis = node.genesis
        self.topic = consensus_topic(self.genesis.channel_id)
        self.app = NodeApplication(self)
        self.consensus = Consensus(self.genesis, node.key.private_key, self.app, self.config.timeouts)
        self.height = self.replica.version + 1
        store = node.store
        try:
            self.consensus.restore([decode_signing_record(record) for record in store.signed(self.height)])
            self.certificates = HeldCertificates(store, self.genesis)  # the newest in memory, the rest stored
        except InvalidInput as exc:
            raise store.damaged("a stored consensus record or certificate fails its checks", exc) from exc
        node.persist("certificate files", store.export_certificates)
        vote_from = node.signer.vote_from
        self.consensus.abstain_below = ABSTAIN_ALWAYS if vote_from is None else vote_from
        self._vote_reports: set[bytes] = set()  # participants whose catch-up answers we caught up to
        self.started = False
        self.highest_seen = 0
        # what others have decided, from checked messages: per participant, the highest version
        # its votes (height - 1) or checkpoint signatures show; and the highest a decision's
        # quorum proves (`channel_version`)
        self.decided_by: dict[Address, int] = {}
        self.decided_proven = 0
        self.last_start = -math.inf
        self.confirmed_deposits: dict[int, Deposit] = {}
        # decided here, certificate not assembled yet: version -> (checkpoint, trio time)
        self.uncertified: dict[int, tuple[Checkpoint, float]] = {}
        for version, data in node.store.uncertified_decisions():
            stored = decode_message(data)
            assert isinstance(stored, Decision)  # restore_decisions has checked every one
            self.uncertified[version] = (stored.value.checkpoint, -math.inf)
        self.catchup_server = CatchUpServer(self.genesis.channel_id, node.store)
        self.catchup_counts = {"requests": 0, "failed": 0, "versions": 0, "certificates": 0, "votes": 0}
        self._pulled: set[bytes] = set()  # digests of the consensus messages catch-up answers brought
        self._fetching: dict[PeerId, float] = {}  # peers a catch-up request of ours is in flight to: since
        self._last_fetch = -math.inf
        self._caught_up = False  # no peer has told us its latest version yet
        self._next_peer = 0
        self._catching_up = False
        self.evidence: list[Evidence] = []
        self._pending: Decide | None = None  # decided, waiting for operations of its cut
        self._send, self._inputs = trio.open_memory_channel[tuple[str, Any]](math.inf)
        self._nursery: trio.Nursery | None = None
        self.on_certified: list[Callable[[Certificate], None]] = []
        # the consensus topic's validator: what it checked, and what it decoded for the reader
        self.gossip_counts = {"received": 0, "rejected": 0}
        self.validation_counts: Counter[str] = Counter()  # what validating others' proposals answered
        self._checked: OrderedDict[bytes, None] = OrderedDict()
        self._decoded: OrderedDict[bytes, tuple[Message, int]] = OrderedDict()
        self._decoded_bytes = 0
        self._gossip_buckets: dict[PeerId, TokenBucket] = {}

    # -- called from other tasks of the node (synchronous, never blocking) ---------------------------

    def data_arrived(self) -> None:
        self._send.send_nowait(("data", None))

    def request(self, op_ids: list[Any]) -> None:
        if self.node.peer is not None:
            self.node.peer.request(op_ids)

    def new_deposits(self) -> list[Deposit]:
        nonce = self.replica.ledger.deposit_nonce
        found = []
        while (deposit := self.confirmed_deposits.get(nonce + 1)) is not None:
            found.append(deposit)
            nonce += 1
        return found

    def set_confirmed_deposits(self, deposits: list[Deposit]) -> None:
        """Every deposit the chain watcher holds as confirmed, each with its block: a deposit a
        reorg removed leaves the set (and is not credited), one whose nonce went to another
        deposit is replaced. A change triggers a checkpoint. A removed deposit that a certified
        checkpoint already credited is reported: the chain worker refuses to propose it."""
        confirmed = {deposit.nonce: deposit for deposit in deposits}
        if confirmed == self.confirmed_deposits:
            return
        for nonce, old in self.confirmed_deposits.items():
            if confirmed.get(nonce) != old:
                late = " after a checkpoint credited it" if nonce <= self.replica.ledger.deposit_nonce else ""
                log.warning("deposit %d was reorged out%s", nonce, late)
        self.confirmed_deposits = confirmed
        self.data_arrived()

    def credited_deposits(self, first: int, last: int) -> list[Deposit]:
        """The deposits that certified checkpoints credited, nonces `first` to `last`."""
        return [d for cut in self.replica.cuts for d in cut.deposits if first <= d.nonce <= last]

    def progress(self) -> dict[str, Any]:
        """Where the version this node works on stands: to tell a stalled height from an idle one."""
        consensus = self.consensus
        return {
            "height": self.height,
            "started": self.started,
            "round": consensus.round,
            "step": consensus.step.name.lower(),
            "waiting_for_operations": self._pending is not None,
            "highest_seen": self.highest_seen,
            "validations": dict(sorted(self.validation_counts.items())),
        }

    def latest_certificate(self) -> Certificate | None:
        return self.certificates.newest()

    # -- the task ------------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.transport.set_stream_handler(PROTOCOL, self.catchup_server.handle)
        subscription = await self.transport.subscribe(self.topic, self._validate)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reader, subscription)
            nursery.start_soon(self._ticker)
            task_status.started()
            async for kind, item in self._inputs:
                try:
                    await self._step(kind, item)
                except InvalidInput as exc:
                    log.info("consensus input refused: %s: %s", exc.code, exc)

    # -- the consensus topic --------------------------------------------------------------------------

    def _validate(self, forwarder: PeerId, data: bytes) -> bool:
        """The topic validator (synchronous, bounded, never raises): a message is delivered and
        forwarded only if the machine would take it from any peer whatever its state
        (`_check`). A forwarder that sends one it would not, or floods, is scored down on the
        node's `p2p.peer.Peer` (one score per peer) and, past the threshold, banned, as for
        invalid operations. A message checked before costs a hash and a decode."""
        if forwarder == self.transport.local_id:
            return True
        peer = self.node.peer
        if peer is not None and peer.is_banned(forwarder):
            return False
        digest = hashlib.sha256(data).digest()
        try:
            now = trio.current_time()
            bucket = self._gossip_buckets.get(forwarder)
            if bucket is None:
                rates = peer.config.rates if peer is not None else RateLimits()
                bucket = self._gossip_buckets[forwarder] = TokenBucket(
                    rates.consensus_messages_per_second, rates.consensus_burst, now
                )
            if not bucket.take(1, now):
                raise RateLimited("consensus gossip flood")
            message = self._checked_message(data, digest)
        except InvalidInput as exc:
            self.gossip_counts["rejected"] += 1
            log.info("consensus gossip refused: %s: %s", exc.code, exc)
            if peer is not None:
                peer.penalize(forwarder, exc)
            return False
        except Exception:  # a bug must not let a message through, nor kill pubsub's task
            log.exception("consensus gossip validator failed")
            return False
        decoded = self._decoded
        if digest not in decoded:
            decoded[digest] = (message, len(data))
            self._decoded_bytes += len(data)
            while self._decoded_bytes > DECODED_BYTES:
                _, (_, size) = decoded.popitem(last=False)
                self._decoded_bytes -= size
        return True

    def _checked_message(self, data: bytes, digest: bytes) -> Message:
        """Decode `data`, and check it unless a message with this digest passed before."""
        message = decode_message(data)
        checked = self._checked
        if digest in checked:
            checked.move_to_end(digest)
            return message
        self._check(message)
        checked[digest] = None
        if len(checked) > CHECKED_DIGESTS:
            checked.popitem(last=False)
        return message

    def _check(self, message: Message) -> None:
        """Raise `InvalidInput` for a message `Consensus.on_message` refuses whatever this
        node's state: a signature that is not a participant's; a proposal by another than the
        round's proposer or with a malformed value; a commit of another channel; a decision
        without a quorum of distinct precommits of its value (the machine's own check of a
        decision it receives). No honest node sends or forwards any of these."""
        genesis = self.genesis
        if isinstance(message, Decision):
            self.consensus.check_decision(message)
            self.decided_proven = max(self.decided_proven, message.height)
            return
        signer = signer_of(genesis, message)
        decided = message.height if isinstance(message, CheckpointSignature) else message.height - 1
        if decided > self.decided_by.get(signer, 0):
            self.decided_by[signer] = decided
        if isinstance(message, CheckpointSignature) and message.checkpoint.channel != genesis.channel_id:
            raise WrongChannel("commit for another channel")
        if isinstance(message, Proposal):
            if message.value.height != message.height:
                raise InvalidProposal("the proposal's height is not its checkpoint version")
            if signer != proposer(genesis, message.height, message.round):
                raise NotProposer(f"0x{signer.hex()} is not the proposer of round {message.round}")
            message.value.check(genesis)

    def channel_version(self) -> int:
        """The highest version this node knows an honest participant decided: one a decision's
        quorum of precommits proves, or one that f + 1 participants' checked messages show (a
        Byzantine participant can sign votes of any height; f of them cannot make it up)."""
        shown = sorted(self.decided_by.values(), reverse=True)
        needed = len(self.genesis.participants) - self.genesis.threshold + 1
        return max(self.decided_proven, shown[needed - 1] if len(shown) >= needed else 0)

    async def _reader(self, subscription: Any) -> None:
        async for _origin, data in subscription:
            digest = hashlib.sha256(data).digest()
            entry = self._decoded.pop(digest, None)
            if entry is not None:
                message = entry[0]
                self._decoded_bytes -= entry[1]
            else:  # fell out of the cache: check again (never trust bytes that were not checked)
                try:
                    message = self._checked_message(data, digest)
                except InvalidInput:
                    continue
            self.gossip_counts["received"] += 1
            self._send.send_nowait(("message", message))

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(min(self.config.interval, 1.0) / 4)
            self._send.send_nowait(("tick", None))

    async def _timer(self, due: Timeout, duration_ms: int) -> None:
        await trio.sleep(duration_ms / 1000)
        self._send.send_nowait(("timeout", due))

    async def _step(self, kind: str, item: Any) -> None:
        consensus = self.consensus
        if kind == "message":
            message: Message = item
            height = message.height
            self.highest_seen = max(self.highest_seen, height)
            if height >= self.height and not self.started and self._pending is None:
                await self._start()
            await self._carry_out(consensus.on_message(message))
        elif kind == "timeout":
            await self._carry_out(consensus.on_timeout(item))
        elif kind == "data":
            if self._pending is not None:
                await self._apply(self._pending)
            elif self.started:
                await self._carry_out(consensus.on_data_arrived())
            else:
                await self._start_if_due()
        elif kind == "tick":
            self._maybe_fetch()
            await self._start_if_due()
        elif kind == "fetched":
            peer, answer = item
            self._fetching.pop(peer, None)
            if answer is not None:
                await self._catch_up(peer, answer)

    async def _start_if_due(self) -> None:
        """Start the next height if others vote on it, or if there is news and `interval` has
        passed since the last start: checkpoints are pipelined, each starting as soon as the
        one before it is decided and something is new, at most once per interval."""
        if self.started or self._pending is not None or self._catching_up:
            return
        due = trio.current_time() - self.last_start >= self.config.interval
        if self.highest_seen >= self.height or (due and self.app.has_news()):
            await self._start()

    async def _start(self) -> None:
        self.started = True
        self.last_start = trio.current_time()
        await self._carry_out(self.consensus.start_height(self.height))

    async def _carry_out(self, outputs: list[Any]) -> None:
        unsent: Message | None = None  # signed, but its record could not be stored: never sent
        for output in outputs:
            if isinstance(output, SigningRecord):  # durable before the message leaves (the Broadcast next)
                record = encode_signing_record(output)
                if not self.node.persist("a vote", self.node.store.put_signed, output.height, record):
                    unsent = output.message
            elif isinstance(output, Broadcast | Send):  # gossip reaches the one peer too
                if output.message is unsent:
                    continue
                await self.transport.publish(self.topic, encode_message(output.message))
                if isinstance(output, Send) and isinstance(output.message, Decision):
                    # A peer that is behind missed the checkpoint signatures of that version too:
                    # without them it could apply the decision but never assemble the certificate.
                    for signature in self.consensus.checkpoint_signatures(output.message.height):
                        await self.transport.publish(self.topic, encode_message(signature))
            elif isinstance(output, Fetch):  # then "data" arrives (the node calls data_arrived)
                self.request(list(output.op_ids))
            elif isinstance(output, ScheduleTimeout):
                assert self._nursery is not None
                self._nursery.start_soon(self._timer, output.timeout, output.duration)
            elif isinstance(output, Decide):
                await self._apply(output)
            elif isinstance(output, Certified):
                self._certified(output.certificate)
            elif isinstance(output, Evidence):
                self.evidence.append(output)
                second = encode_message(output.second)
                self.node.persist("evidence", self.node.store.put_evidence, output.kind, output.offender, second)
                log.warning("evidence of %s by 0x%s", output.kind, output.offender.hex())

    async def _apply(self, decide: Decide) -> None:
        """Certify the decided cut (fetching what is missing first), store it, move on."""
        try:
            self.replica.certify(decide.value.cut())
        except MissingOperations as exc:
            self._pending = decide
            self.request(sorted(exc.missing))  # what reaches the wire never depends on set order
            return
        self._pending = None
        store = self.node.store
        self.node.persist("a decision", store.put_decision, decide.height, encode_message(decide.proof))
        self.node.compact()
        self.node.snapshot_if_due()
        self.node.persist("the signing log", store.forget_signed, below=decide.height + 1)
        if decide.height not in self.certificates:
            self.uncertified[decide.height] = (decide.value.checkpoint, trio.current_time())
        self.height = decide.height + 1
        self.started = False
        self.node.announce([])  # statuses moved from tentative to final
        log.info("checkpoint %d final (%d heads)", decide.height, len(decide.value.heads))
        await self._start_if_due()

    def _certified(self, certificate: Certificate) -> None:
        version = certificate.version
        if version in self.certificates:
            return
        self.uncertified.pop(version, None)
        self.node.persist("a certificate", self.node.store.put_certificate, version, certificate.encode())
        self.certificates.add(certificate)
        for callback in self.on_certified:
            callback(certificate)

    # -- catch-up ------------------------------------------------------------------------------------

    def _catch_up_from(self, now: float) -> int | None:
        """The first version to ask a peer for, or None if we need nothing."""
        grace = self.config.certificate_grace
        waiting = [version for version, (_, since) in self.uncertified.items() if now - since >= grace]
        if waiting:
            return min(waiting)
        behind = (
            not self._caught_up
            or self.abstaining  # asking every peer in turn until a quorum has answered
            or self.highest_seen > self.height  # others vote on a later version
            or (self.started and self.consensus.round > 0)  # our version did not decide in round 0
            or (self.started and now - self.last_start >= self.config.stuck_after)  # votes may be lost
            or now - self._last_fetch >= self.config.catchup_idle  # peers may be idle, and ahead
        )
        if self._pending is None and behind:
            return self.replica.version + 1
        return None

    def _maybe_fetch(self) -> None:
        now = trio.current_time()
        if now - self._last_fetch < self.config.catchup_period:
            return
        first = self._catch_up_from(now)
        if first is None:
            return
        peers = sorted(self.transport.connected_peers())
        turn = [peers[(self._next_peer + i) % len(peers)] for i in range(len(peers))]
        free = [peer for peer in turn if now - self._fetching.get(peer, -math.inf) >= RETRY_FETCH_SECONDS]
        if not free:
            return  # every peer has a request of ours in flight
        peer = free[0]
        self._next_peer = peers.index(peer) + 1
        self._fetching[peer] = now
        self._last_fetch = now
        assert self._nursery is not None
        self._nursery.start_soon(self._fetch, peer, Request(self.genesis.channel_id, first, MAX_RECORDS))

    async def _fetch(self, peer: PeerId, request: Request) -> None:
        self.catchup_counts["requests"] += 1
        answer = None
        try:
            answer = await fetch(self.transport, peer, request)
        except (TransportError, InvalidInput) as exc:
            self.catchup_counts["failed"] += 1
            log.info("checkpoint catch-up from a peer failed: %s", exc)
        self._send.send_nowait(("fetched", (peer, answer)))

    async def _catch_up(self, peer: PeerId, answer: Answer) -> None:
        """Apply the fetched proofs in version order, and adopt the certificates we lack."""
        before = self.replica.version
        self._catching_up = True
        try:
            for record in answer.records:
                if record.version == self.replica.version + 1 and self._pending is None:
                    await self._carry_out(self.consensus.catch_up(record.decision))
                if record.certificate is not None and record.version in self.uncertified:
                    self._adopt(record.certificate)
        except InvalidInput as exc:
            log.warning("a peer's checkpoint proof is invalid: %s: %s", exc.code, exc)
        finally:
            self._catching_up = False
        self.catchup_counts["versions"] += self.replica.version - before
        await self._take_votes(answer)
        if answer.latest <= self.replica.version:
            self._caught_up = True
            self._learn_vote_floor(peer)
        elif self.replica.version > before:
            self._last_fetch = -math.inf  # more to fetch: ask the next peer now
            self._maybe_fetch()
        if self._pending is None and not self.started and self.highest_seen >= self.height:
            await self._start()

    async def _take_votes(self, answer: Answer) -> None:
        """The peer's own proposals and votes of a height we have not decided, checked as gossip
        is, given to the machine as if gossip had brought them (it drops what it holds). If any
        was new to us the height may have stalled on lost votes: ask the next peer at once."""
        news = False
        for message in answer.votes:
            if message.height < self.height:
                continue
            try:
                self._check(message)
            except InvalidInput as exc:
                log.warning("a peer's own consensus message is invalid: %s: %s", exc.code, exc)
                return
            digest = hashlib.sha256(encode_message(message)).digest()
            news |= digest not in self._pulled
            if len(self._pulled) > PULLED_LIMIT:
                self._pulled.clear()
            self._pulled.add(digest)
            self.catchup_counts["votes"] += 1
            await self._step("message", message)
        if news:
            self._last_fetch = -math.inf
            self._maybe_fetch()

    @property
    def abstaining(self) -> bool:
        return self.node.signer.vote_from is None

    def _learn_vote_floor(self, peer: PeerId) -> None:
        """Once a quorum of other participants answered, each no further ahead than we now
        are, vote from two heights above the newest version decided."""
        if not self.abstaining:
            return
        who = self.transport.participant(peer) or peer
        if who != self.node.address:
            self._vote_reports.add(who)
        if len(self._vote_reports) >= self.node.peers_needed:
            vote_from = self.replica.version + 2
            self.node.set_vote_from(vote_from)
            self.consensus.abstain_below = vote_from
            log.warning("learnt from %d peers that checkpoint %d is the newest: voting from %d on",
                        len(self._vote_reports), self.replica.version, vote_from)

    def _adopt(self, certificate: Certificate) -> None:
        version = certificate.version
        decided, _ = self.uncertified[version]
        if certificate.checkpoint != decided:
            log.error("a peer's certificate %d signs another checkpoint than the one decided here", version)
            return
        try:
            certificate.verify(self.genesis)
        except InvalidInput as exc:
            log.warning("a peer's certificate %d is invalid: %s: %s", version, exc.code, exc)
            return
        self.catchup_counts["certificates"] += 1
        self._certified(certificate)
