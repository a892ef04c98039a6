"""The checkpoint consensus machine: Tendermint as a pure state machine (DESIGN.md, "Order and finality").

This is Algorithm 1 of Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus" (2018),
one instance per checkpoint version (the paper's height). Comments give the paper's line
numbers; each upon-rule of lines 22-56 is one method of `Consensus`, and `_rules` tries them
in the paper's order (the decision first, see there). The machine never reads a clock, never
opens a socket and never starts a task: the driver feeds it inputs and carries out the outputs
it returns.

Inputs (each method returns a list of outputs):
- `start_height(h)`: begin version h (the first is 1; each next one after the previous
  `Decide`, once the driver has applied it). Messages for h may already have been buffered.
- `on_message(msg)`: a decoded `Proposal`, `Prevote`, `Precommit`, `CheckpointSignature` or
  `Decision` from any peer. Raises an `InvalidInput` subclass for a message that is badly signed, not from a
  participant, from the wrong proposer or structurally wrong (score the peer down). Messages
  that are merely too old or too far ahead are ignored (an empty list).
- `on_timeout(Timeout)`: a timeout the machine asked for has expired.
- `catch_up(decision)`: decide a version from a peer's stored `Decision` proof, for a node
  that is behind by more than the versions peers still keep in memory.
- `on_data_arrived()`: the application's answer for a proposal it called `NOT_YET` may have
  changed (missing operations arrived, a deposit was confirmed).

Outputs: `Broadcast(msg)` (gossip to every participant; the machine has already applied its
own message), `Send(to, msg)` (to one participant: the `Decision` proof for a peer whose
messages show it is behind), `Fetch(op_ids)` (operations a value to judge needs, sorted),
`ScheduleTimeout(timeout, duration_ms)`, `Decide(height, round, value,
precommits)` (final: apply the cut, then call `start_height(h + 1)`), `Certified(height,
value, certificate)` (threshold EIP-712 signatures: what goes to the contract) and
`Evidence(offender, first, second)` (two conflicting messages signed by one participant).

The application (`Application`) proposes values and judges them: `validate` answers
`VALID`, `INVALID`, `NOT_YET` or `NeedOperations(op_ids)` (not yet, and the machine outputs
`Fetch(op_ids)`). A definite answer is cached for the height, so a value that
was valid stays valid for this node even if its clock moves on; `NOT_YET` is asked again at
every later evaluation (the driver calls `on_data_arrived`) until timeout_propose makes the
node prevote nil (lines 57-60).

Invariants and why they hold:
- Safety: two quorums (``genesis.threshold`` > 2n/3) intersect in more than n/3 participants,
  so in at least one correct one; a correct participant prevotes and precommits at most once
  per (height, round, step) (its own messages go through the same store as everyone's, which
  refuses a second own vote for a slot), and locks as in lines 36-43, so no two values
  gather a quorum of precommits at one height (the paper's Lemmas 1-3).
- Attribution: every consensus message is signed (secp256k1, recoverable, low s) over a
  digest that starts with ``\\x19Parley consensus\\n`` and binds the EIP-712 domain and the
  channel, so a vote signature can never pass for an operation or a checkpoint signature,
  and a Byzantine participant cannot forge another's vote.
- The value id is the keccak of the whole canonical value (checkpoint fields, cut heads,
  deposits, payout leaves), not only of the EIP-712 checkpoint: two proposals with the same
  roots but different cuts are different values.
- A correct node signs the EIP-712 Checkpoint of version h only once it has decided h (its
  `CheckpointSignature` message; not Tendermint's commit), never inside a precommit. In
  Tendermint a correct node may precommit different values at one height in different rounds
  (it unlocks on a newer proof of lock, lines 28-29 and 36-43); the contract's Checkpoint
  struct has no round, so precommit-time checkpoint signatures would let `slashDoubleSign`
  slash honest nodes. Signing after the decision costs one message delay and makes two
  checkpoint signatures at one version proof of misbehaviour. Every correct node decides, so
  threshold checkpoint signatures always come.
- Memory is bounded: messages are kept for the current and the next height only, each signer
  keeps one vote per (round, step) and at most `max_future_rounds` rounds ahead of ours, a
  proposer at most `max_proposals_per_round` values per round, and checkpoint signatures are
  kept for the last `commit_window` versions.

Abstention (`Consensus.abstain_below`): a node that lost its signing log (its store was
deleted or replaced) cannot know which votes it signed before, so it must not sign any
proposal or vote at a height where it may have: the driver sets ``abstain_below`` to a height
it learnt from its peers, and below that height the machine follows the rounds, decides from
others' precommits and signs only the `CheckpointSignature` of a decided value (which never
conflicts: decisions are unique), but proposes and votes nothing, as if its messages were lost.

Deviation from the paper: line 49 decides without asking valid(v) again. A quorum of
precommits means more than n/3 participants, so at least one correct one, found v valid; our
validity depends on the local clock and local data, and a node that lagged must still follow.
The application then fetches what is missing to apply the cut.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from channel.core.consensus.messages import (
    PRECOMMIT,
    PREVOTE,
    PROPOSAL,
    Broadcast,
    Certified,
    CheckpointProposal,
    CheckpointSignature,
    Decide,
    Decision,
    Evidence,
    Fetch,
    InvalidProposal,
    Limits,
    Message,
    NeedOperations,
    NotProposer,
    Output,
    Precommit,
    Prevote,
    Proposal,
    ScheduleTimeout,
    Send,
    SigningRecord,
    Step,
    Timeout,
    TimeoutConfig,
    TimeoutKind,
    Validity,
    ValueId,
    Vote,
)
from channel.core.consensus.signing import (
    checkpoint_digest,
    sign_checkpoint_signature,
    sign_precommit,
    sign_prevote,
    sign_proposal,
    signer_of,
)
from crdt.certificate import Certificate
from crdt.errors import InternalError, InvalidInput, WrongChannel
from crdt.genesis import Genesis
from crdt.ops import address_of
from crdt.types import Address


class Application(Protocol):
    """What the driver supplies: values to propose and a judgement of others' values."""

    def get_value(self, height: int, round_: int) -> CheckpointProposal | None:
        """A checkpoint to propose (None: nothing to propose; the others will time out)."""

    def validate(self, height: int, value: CheckpointProposal) -> Validity | NeedOperations:
        """Does this node hold every op of the cut, see the same deposits at the configured
        confirmations, compute the same roots, and find the time acceptable? (For a node's
        replica: `channel.core.validation.validate_proposal`.) `NeedOperations` is NOT_YET
        with the ids to fetch, which the machine passes on as a `Fetch` output."""


def proposer(genesis: Genesis, height: int, round_: int) -> Address:
    """Round-robin over the participants in genesis order."""
    return genesis.addresses[(height + round_) % len(genesis.addresses)]


# -- the machine ----------------------------------------------------------------------------------

# The tally of a (round, kind) nobody voted in: read only (a Counter's missing key reads 0 and
# is not stored), so the rules need not make an empty Counter at each evaluation.
_NO_VOTES: Counter[ValueId | None] = Counter()


@dataclass(slots=True)
class _Height:
    """Messages of one height."""

    proposals: dict[int, dict[ValueId, Proposal]] = field(default_factory=dict)  # round -> id -> first proposal
    first_proposal: dict[int, ValueId] = field(default_factory=dict)
    # (round, kind) -> signer -> value id -> vote. An equivocator's votes count for each value it
    # voted (the paper counts messages per value); "2f + 1 of any kind" counts distinct signers.
    votes: dict[tuple[int, int], dict[Address, dict[ValueId | None, Vote]]] = field(default_factory=dict)
    tally: dict[tuple[int, int], Counter[ValueId | None]] = field(default_factory=dict)
    senders: dict[int, set[Address]] = field(default_factory=dict)  # round -> who sent anything
    rounds_of: dict[Address, set[int]] = field(default_factory=dict)
    values: dict[ValueId, CheckpointProposal] = field(default_factory=dict)
    reported: set[tuple[Address, int, int]] = field(default_factory=set)  # (signer, kind, round)


class Consensus:
    """One participant's consensus state; see the module docstring for how to drive it."""

    def __init__(
        self,
        genesis: Genesis,
        private_key: bytes,
        app: Application,
        timeouts: TimeoutConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.genesis = genesis
        self.address = address_of(private_key)
        if genesis.participant(self.address) is None:
            raise InternalError("this node's key is not a participant of the channel")
        self._key = private_key
        self.app = app
        self.timeouts = timeouts or TimeoutConfig()
        self.limits = limits or Limits()
        n = len(genesis.participants)
        self.quorum = genesis.threshold  # "2f + 1": any two quorums share a correct participant
        self.skip = n - genesis.threshold + 1  # "f + 1": at least one correct participant
        # lines 2-9
        self.height = 0
        self.round = 0
        self.step = Step.PROPOSE
        self.decision: CheckpointProposal | None = None
        self.locked_value: CheckpointProposal | None = None
        self.locked_round = -1
        self.valid_value: CheckpointProposal | None = None
        self.valid_round = -1
        self._started = False
        self._messages: dict[int, _Height] = {}
        self._validity: dict[ValueId, Validity] = {}
        self._prevote_timeout_set = False  # line 34 "for the first time"
        self._precommit_timeout_set = False  # line 47
        self._locked_this_round = False  # line 36
        # decided checkpoints and their EIP-712 signatures: version -> signer -> digest -> signature
        self.decided: dict[int, CheckpointProposal] = {}
        self.certified: set[int] = set()
        self._signatures: dict[int, dict[Address, dict[bytes, CheckpointSignature]]] = {}
        self._proofs: dict[int, Decision] = {}
        self._helped: set[tuple[Address, int]] = set()
        self._restored: dict[int, list[SigningRecord]] = {}
        self._out: list[Output] = []
        self.abstain_below = 0  # no proposal or vote is signed at heights below this

    # -- inputs ------------------------------------------------------------------------------------

    def start_height(self, height: int) -> list[Output]:
        """Begin version `height` (line 10 for the first, lines 52-54 for the next ones)."""
        if height < 1 or (self._started and self.decision is None) or height <= self.height:
            raise InternalError(f"start_height({height}) at height {self.height}")
        self._enter(height)
        for record in self._restored.pop(height, []):
            self._restore(record)
        self._restored = {h: records for h, records in self._restored.items() if h > height}
        self._start_round(0)
        self._evaluate()
        return self._take()

    def restore(self, records: list[SigningRecord]) -> None:
        """What this node signed before a restart (the driver's stored `SigningRecord` outputs), to
        be taken back when their height starts: it re-sends those messages instead of signing
        different ones, and keeps the lock its newest precommit implies (lines 36-43)."""
        for record in records:
            if signer_of(self.genesis, record.message) != self.address:
                raise InvalidInput("a restored message was not signed by this node")
            self._restored.setdefault(record.height, []).append(record)

    def catch_up(self, decision: Decision) -> list[Output]:
        """Decide `decision.height` from a peer's proof without running its rounds: for a node
        that fell more than one version behind (it was down, or partitioned) and fetched the
        proofs it missed from a peer's store, in version order. The driver passes the version
        after the last one it applied; an older or already decided one is ignored. Raises
        `InvalidInput` for a proof without a quorum of precommits."""
        if decision.height < self.height or (decision.height == self.height and self.decision is not None):
            return []
        self.check_decision(decision)
        if decision.height > self.height or not self._started:
            self._enter(decision.height)
            self.round, self.step = decision.round, Step.PRECOMMIT
        self._decide(decision.round, decision.value, decision.signatures)
        return self._take()

    def on_message(self, message: Message) -> list[Output]:
        if isinstance(message, Decision):
            self._receive_decision(message)
        elif isinstance(message, CheckpointSignature):
            self._receive_checkpoint_signature(message, signer_of(self.genesis, message))
        else:
            if isinstance(message, Proposal):
                if message.value.height != message.height:
                    raise InvalidProposal("the proposal's height is not its checkpoint version")
                if not -1 <= message.valid_round < message.round:
                    raise InvalidProposal("valid_round must be -1 or an earlier round")
            signer = signer_of(self.genesis, message)
            if signer == self.address:
                return self._take()  # an echo of our own message: we applied it when we sent it
            if message.height < self.height or (message.height == self.height and self.decision is not None):
                self._help(signer, message.height)
                return self._take()
            if isinstance(message, Proposal):
                if signer != proposer(self.genesis, message.height, message.round):
                    raise NotProposer(f"0x{signer.hex()} is not the proposer of round {message.round}")
                message.value.check(self.genesis)
            if not self._store(message, signer):
                return self._take()
        self._evaluate()
        return self._take()

    def on_timeout(self, timeout: Timeout) -> list[Output]:
        if self._started and self.decision is None and timeout.height == self.height and timeout.round == self.round:
            if timeout.kind is TimeoutKind.PROPOSE and self.step is Step.PROPOSE:  # lines 57-60
                self._vote(Prevote, None)
                self.step = Step.PREVOTE
            elif timeout.kind is TimeoutKind.PREVOTE and self.step is Step.PREVOTE:  # lines 61-64
                self._vote(Precommit, None)
                self.step = Step.PRECOMMIT
            elif timeout.kind is TimeoutKind.PRECOMMIT:  # lines 65-67
                self._start_round(self.round + 1)
        self._evaluate()
        return self._take()

    def on_data_arrived(self) -> list[Output]:
        """Ask the application again about values it called NOT_YET (or NeedOperations)."""
        self._evaluate()
        return self._take()

    # -- reading -------------------------------------------------------------------------------------

    def proposer(self, height: int, round_: int) -> Address:
        return proposer(self.genesis, height, round_)

    def checkpoint_signatures(self, height: int) -> list[CheckpointSignature]:
        """Every checkpoint signature kept for `height` (for gossip to a node that is behind)."""
        return [c for by_digest in self._signatures.get(height, {}).values() for c in by_digest.values()]

    # -- the algorithm -------------------------------------------------------------------------------

    def _take(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def _enter(self, height: int) -> None:
        """Reset the per-height state for `height` (line 53) and drop what is now too old."""
        self.height = height
        self.decision = None
        self.locked_value, self.locked_round = None, -1
        self.valid_value, self.valid_round = None, -1
        self._validity = {}
        self._started = True
        for old in [h for h in self._messages if h < height]:
            del self._messages[old]
        for old in [v for v in self._signatures if v < height - self.limits.commit_window]:
            del self._signatures[old]
        for old in [v for v in self.decided if v < height - self.limits.commit_window]:
            del self.decided[old]
            self._proofs.pop(old, None)
        self._helped = {(who, h) for who, h in self._helped if h in self._proofs}

    def _restore(self, record: SigningRecord) -> None:
        message, value = record.message, record.value
        at = self._messages.setdefault(self.height, _Height())
        if value is not None:
            at.values.setdefault(value.value_id, value)
        self._store(message, self.address)
        locks = isinstance(message, Precommit) and value is not None and message.value_id == value.value_id
        if locks and message.round > self.locked_round:
            self.locked_value, self.locked_round = value, message.round
            self.valid_value, self.valid_round = value, message.round

    def _start_round(self, round_: int) -> None:  # lines 11-21
        self.round = round_
        self.step = Step.PROPOSE
        self._prevote_timeout_set = False
        self._precommit_timeout_set = False
        self._locked_this_round = False
        height = self.height
        if self.proposer(height, round_) == self.address and height >= self.abstain_below:
            at = self._messages.get(height)
            signed = at.proposals.get(round_) if at is not None else None
            if signed:  # proposed before a restart: the same proposal again
                self._out.append(Broadcast(next(iter(signed.values()))))
                return
            if self.valid_value is not None:  # lines 15-16
                value: CheckpointProposal | None = self.valid_value
            else:
                value = self.app.get_value(height, round_)  # line 18
            if value is not None:
                if value.height != height:
                    raise InternalError(f"the application proposed version {value.height} at height {height}")
                proposal = sign_proposal(self.genesis, self._key, height, round_, value, self.valid_round)
                self._broadcast(proposal)  # line 19
                return
        self._schedule(TimeoutKind.PROPOSE)  # line 21 (and a proposer with nothing to propose)

    def _schedule(self, kind: TimeoutKind) -> None:
        timeout = Timeout(kind, self.height, self.round)
        self._out.append(ScheduleTimeout(timeout, self.timeouts.duration(kind, self.round)))

    def _broadcast(self, message: Proposal | Vote | CheckpointSignature) -> None:
        if isinstance(message, CheckpointSignature):
            self._out.append(Broadcast(message))
            self._receive_checkpoint_signature(message, self.address)
            return
        at = self._messages.setdefault(self.height, _Height())
        if isinstance(message, Proposal):
            value: CheckpointProposal | None = message.value
        else:
            value = at.values.get(message.value_id) if message.value_id is not None else None
        self._out.append(SigningRecord(self.height, message, value))
        self._out.append(Broadcast(message))
        if not self._store(message, self.address) and isinstance(message, Proposal):
            raise InternalError("this node tried to sign two proposals for one round")

    def _vote(self, cls: type[Prevote] | type[Precommit], value_id: ValueId | None) -> None:
        if self.height < self.abstain_below:
            return  # we may have voted here before we lost our signing log
        kind = PREVOTE if cls is Prevote else PRECOMMIT
        at = self._messages.get(self.height)
        signed = at.votes.get((self.round, kind), {}).get(self.address) if at is not None else None
        if signed:  # voted in this slot before a restart: that vote again, never a second one
            self._out.append(Broadcast(next(iter(signed.values()))))
            return
        sign = sign_prevote if cls is Prevote else sign_precommit
        self._broadcast(sign(self.genesis, self._key, self.height, self.round, value_id))

    def _valid(self, value: CheckpointProposal) -> Validity:
        known = self._validity.get(value.value_id)
        if known is not None:
            return known
        answer = self.app.validate(self.height, value)
        if isinstance(answer, NeedOperations):
            fetch = Fetch(answer.op_ids)
            if fetch not in self._out:  # once per input, however often the rules ask
                self._out.append(fetch)
            return Validity.NOT_YET
        if answer is not Validity.NOT_YET:
            self._validity[value.value_id] = answer
        return answer

    def _evaluate(self) -> None:
        """Run the upon rules of the current height and round until none fires."""
        while self._started and self.decision is None and self._rules():
            pass

    def _rules(self) -> bool:
        """Fire the first upon-rule whose condition holds; False if none does.

        The rules are Algorithm 1's, in the paper's order, except that the decision (lines
        49-54) is tried first: the paper's upon-rules are unordered guards, and once a value
        has a quorum of precommits nothing else the height would do matters, so this node
        decides without first signing votes that can no longer change the outcome."""
        at = self._messages.get(self.height)
        if at is None:
            return False
        return any(rule(at) for rule in self._upon_rules())

    def _upon_rules(self) -> tuple[Callable[[_Height], bool], ...]:
        return (
            self._decide_on_precommit_quorum,  # lines 49-54, first (see `_rules`)
            self._prevote_on_proposal,  # lines 22-27
            self._prevote_on_proof_of_lock,  # lines 28-33
            self._schedule_prevote_timeout,  # lines 34-35
            self._lock_on_prevote_quorum,  # lines 36-43
            self._precommit_nil_on_nil_quorum,  # lines 44-46
            self._schedule_precommit_timeout,  # lines 47-48
            self._skip_to_later_round,  # lines 55-56
        )

    def _prevote_on_proposal(self, at: _Height) -> bool:
        """Lines 22-27: the round's proposal, fresh (valid_round -1), while we are at propose:
        prevote it if it is valid and we are not locked on another value, else nil."""
        r = self.round
        if self.step is not Step.PROPOSE or r not in at.first_proposal:
            return False
        proposal = at.proposals[r][at.first_proposal[r]]
        v = proposal.value
        if proposal.valid_round != -1:
            return False
        validity = self._valid(v)
        if validity is Validity.NOT_YET:
            return False
        good = validity is Validity.VALID and (self.locked_round == -1 or self.locked_value == v)
        self._vote(Prevote, v.value_id if good else None)
        self.step = Step.PREVOTE
        return True

    def _prevote_on_proof_of_lock(self, at: _Height) -> bool:
        """Lines 28-33: the round's proposal re-proposes a value with a quorum of prevotes in
        its earlier valid_round, while we are at propose: prevote it if it is valid and our
        lock is no newer than that round (or is on it), else nil."""
        r = self.round
        if self.step is not Step.PROPOSE or r not in at.first_proposal:
            return False
        proposal = at.proposals[r][at.first_proposal[r]]
        v, vr = proposal.value, proposal.valid_round
        if not 0 <= vr < r or at.tally.get((vr, PREVOTE), _NO_VOTES)[v.value_id] < self.quorum:
            return False
        validity = self._valid(v)
        if validity is Validity.NOT_YET:
            return False
        good = validity is Validity.VALID and (self.locked_round <= vr or self.locked_value == v)
        self._vote(Prevote, v.value_id if good else None)
        self.step = Step.PREVOTE
        return True

    def _schedule_prevote_timeout(self, at: _Height) -> bool:
        """Lines 34-35: a quorum of prevotes of the round, for anything, while at prevote, for
        the first time: schedule timeout_prevote."""
        if self.step is not Step.PREVOTE or self._prevote_timeout_set:
            return False
        if self._signers(at, self.round, PREVOTE) < self.quorum:
            return False
        self._prevote_timeout_set = True
        self._schedule(TimeoutKind.PREVOTE)
        return True

    def _lock_on_prevote_quorum(self, at: _Height) -> bool:
        """Lines 36-43: a valid proposal of the round with a quorum of prevotes for it, while at
        prevote or later, for the first time: at prevote, lock on it and precommit it; in any
        case it becomes the valid value (what this node re-proposes)."""
        if self.step < Step.PREVOTE or self._locked_this_round:
            return False
        r = self.round
        prevotes = at.tally.get((r, PREVOTE), _NO_VOTES)
        for value_id, proposal in at.proposals.get(r, {}).items():
            if prevotes[value_id] >= self.quorum and self._valid(proposal.value) is Validity.VALID:
                self._locked_this_round = True
                if self.step is Step.PREVOTE:
                    self.locked_value, self.locked_round = proposal.value, r
                    self._vote(Precommit, value_id)
                    self.step = Step.PRECOMMIT
                self.valid_value, self.valid_round = proposal.value, r
                return True
        return False

    def _precommit_nil_on_nil_quorum(self, at: _Height) -> bool:
        """Lines 44-46: a quorum of nil prevotes of the round while at prevote: precommit nil."""
        if self.step is not Step.PREVOTE or at.tally.get((self.round, PREVOTE), _NO_VOTES)[None] < self.quorum:
            return False
        self._vote(Precommit, None)
        self.step = Step.PRECOMMIT
        return True

    def _schedule_precommit_timeout(self, at: _Height) -> bool:
        """Lines 47-48: a quorum of precommits of the round, for anything, for the first time:
        schedule timeout_precommit."""
        if self._precommit_timeout_set or self._signers(at, self.round, PRECOMMIT) < self.quorum:
            return False
        self._precommit_timeout_set = True
        self._schedule(TimeoutKind.PRECOMMIT)
        return True

    def _decide_on_precommit_quorum(self, at: _Height) -> bool:
        """Lines 49-54, in any round: a known value with a quorum of precommits is decided
        (without asking valid(v) again: see "Deviation from the paper" in the module docstring)."""
        for (round_, kind), tally in at.tally.items():
            if kind != PRECOMMIT:
                continue
            for value_id, count in tally.items():
                if value_id is not None and count >= self.quorum and value_id in at.values:
                    self._decide(round_, at.values[value_id])
                    return True
        return False

    def _skip_to_later_round(self, at: _Height) -> bool:
        """Lines 55-56: f + 1 participants sent messages of a later round: start the latest
        such round."""
        ahead = [round_ for round_, who in at.senders.items() if round_ > self.round and len(who) >= self.skip]
        if not ahead:
            return False
        self._start_round(max(ahead))
        return True

    @staticmethod
    def _signers(at: _Height, round_: int, kind: int) -> int:
        return len(at.votes.get((round_, kind), {}))

    def _decide(self, round_: int, value: CheckpointProposal, signatures: tuple[bytes, ...] | None = None) -> None:
        height = self.height  # lines 49-54
        if signatures is None:
            votes = self._messages[height].votes.get((round_, PRECOMMIT), {})
            signatures = tuple(mine[value.value_id].signature for mine in votes.values() if value.value_id in mine)
        proof = Decision(height, round_, value, signatures)
        self.decision = value
        self.decided[height] = value
        self._proofs[height] = proof
        self._out.append(Decide(height, round_, value, proof))
        self._broadcast(sign_checkpoint_signature(self.genesis, self._key, value.checkpoint))

    def _receive_decision(self, decision: Decision) -> None:
        """A peer's proof of a decision at our height: check it, then decide as line 49 would."""
        if decision.height != self.height or self.decision is not None or not self._started:
            return
        self.check_decision(decision)
        self._decide(decision.round, decision.value, decision.signatures)

    def check_decision(self, decision: Decision) -> None:
        """Raise `InvalidInput` unless `decision` is a well-formed value with a quorum of distinct
        participants' precommits for it (what any node accepts, whatever its own state; the
        consensus topic's gossip validator uses it too)."""
        if decision.value.height != decision.height:
            raise InvalidProposal("the decision's height is not its checkpoint version")
        decision.value.check(self.genesis)
        signers = {signer_of(self.genesis, precommit) for precommit in decision.precommits()}
        if len(signers) < self.quorum:
            raise InvalidInput(f"a decision needs {self.quorum} distinct precommits, it has {len(signers)}")

    def _help(self, signer: Address, height: int) -> None:
        """`signer` is behind: send it the proof of the height it is working on, once."""
        proof = self._proofs.get(height)
        if proof is not None and signer != self.address and (signer, height) not in self._helped:
            self._helped.add((signer, height))
            self._out.append(Send(signer, proof))

    # -- storing messages -----------------------------------------------------------------------------

    def _store(self, message: Proposal | Vote, signer: Address) -> bool:
        """Keep a verified message; False if it is ignored (too old, too far ahead, a repeat or
        a conflict, which is reported as evidence)."""
        height = message.height
        lowest = self.height if self._started else 1
        if not lowest <= height <= max(self.height, 1) + 1:
            return False
        if height == self.height and self.decision is not None:
            return False
        at = self._messages.setdefault(height, _Height())
        round_ = message.round
        rounds = at.rounds_of.setdefault(signer, set())
        current = self.round if height == self.height else 0
        ahead = sum(1 for r in rounds if r > current)
        too_far = round_ > current and round_ not in rounds and ahead >= self.limits.max_future_rounds
        if too_far and signer != self.address:  # our own (restored after a restart) are all kept
            return False
        if isinstance(message, Proposal):
            kept = at.proposals.setdefault(round_, {})
            existing = kept.get(message.value_id)
            if existing is not None:
                if existing.valid_round != message.valid_round:
                    self._evidence(at, signer, existing, message, PROPOSAL)
                return False
            if kept:
                self._evidence(at, signer, next(iter(kept.values())), message, PROPOSAL)
                if len(kept) >= self.limits.max_proposals_per_round:
                    return False
            kept[message.value_id] = message
            at.first_proposal.setdefault(round_, message.value_id)
            at.values.setdefault(message.value_id, message.value)
        else:
            kind = PREVOTE if isinstance(message, Prevote) else PRECOMMIT
            mine = at.votes.setdefault((round_, kind), {}).setdefault(signer, {})
            if message.value_id in mine:
                return False
            if mine:
                if signer == self.address:
                    raise InternalError("this node tried to sign two votes for one slot")
                self._evidence(at, signer, next(iter(mine.values())), message, kind)
                known = message.value_id is None or message.value_id in at.values
                if not known and len(mine) >= self.limits.max_proposals_per_round:
                    return False  # junk ids from an equivocator: keep a few, and every known value
            mine[message.value_id] = message
            tally = at.tally.get((round_, kind))
            if tally is None:
                tally = at.tally[(round_, kind)] = Counter()
            tally[message.value_id] += 1
        rounds.add(round_)
        at.senders.setdefault(round_, set()).add(signer)
        return True

    def _evidence(self, at: _Height, signer: Address, first: Message, second: Message, kind: int) -> None:
        key = (signer, kind, getattr(second, "round", 0))
        if key not in at.reported:
            at.reported.add(key)
            self._out.append(Evidence(signer, first, second))

    def _receive_checkpoint_signature(self, signed: CheckpointSignature, signer: Address) -> None:
        version = signed.checkpoint.version
        if signed.checkpoint.channel != self.genesis.channel_id:
            raise WrongChannel("checkpoint signature for another channel")
        if not self.height - self.limits.commit_window <= version <= self.height + 1:
            return
        digest = checkpoint_digest(self.genesis, signed.checkpoint)
        mine = self._signatures.setdefault(version, {}).setdefault(signer, {})
        if digest in mine:
            return
        if len(mine) >= 2:
            return  # already reported; keep no more than two per signer
        if mine:
            self._out.append(Evidence(signer, next(iter(mine.values())), signed))
        mine[digest] = signed
        self._try_certify(version)

    def _try_certify(self, version: int) -> None:
        value = self.decided.get(version)
        if value is None or version in self.certified:
            return
        digest = checkpoint_digest(self.genesis, value.checkpoint)
        by_signer = self._signatures.get(version, {})
        signatures = [by_digest[digest].signature for by_digest in by_signer.values() if digest in by_digest]
        if len(signatures) >= self.quorum:
            certificate = Certificate.assemble(self.genesis, value.checkpoint, signatures, value.leaves)
            self.certified.add(version)
            self._out.append(Certified(version, value, certificate))
