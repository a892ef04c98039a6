"""The values, messages, inputs and outputs of the checkpoint consensus machine
(`channel.core.consensus.machine`), with its constants, limits and errors. Plain data: signing
is in `signing`, the wire format in `codec`."""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NewType

from crdt import cbor
from crdt.certificate import Certificate, check_leaves, checkpoint_to_wire, leaf_to_wire
from crdt.eip712 import Checkpoint
from crdt.errors import InternalError, InvalidInput, WrongChannel
from crdt.genesis import Genesis
from crdt.hashing import keccak256
from crdt.ledger import Deposit
from crdt.merkle import PayoutLeaf
from crdt.replica import Cut
from crdt.types import Address, OpId

ValueId = NewType("ValueId", bytes)  # keccak256 of the canonical encoding of a CheckpointProposal

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_ROUND = 2**32 - 1
MAX_HEADS = 4096
MAX_DEPOSITS = 4096
MAX_LEAVES = 65536
VOTE_PREFIX = b"\x19Parley consensus\n"

PROPOSAL, PREVOTE, PRECOMMIT, CHECKPOINT_SIGNATURE, DECISION = 0, 1, 2, 3, 4


class NotProposer(InvalidInput):
    """A proposal signed by someone other than the round's proposer."""

    code = "not_proposer"


class InvalidProposal(InvalidInput):
    """A proposed value that cannot be a checkpoint of this channel at this height."""

    code = "invalid_proposal"


class Validity(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    NOT_YET = "not_yet"  # data is missing; ask again after on_data_arrived


@dataclass(frozen=True, slots=True)
class NeedOperations:
    """The application's answer for a value whose cut names operations this node lacks: not
    yet, and these are to be fetched (sorted and distinct, so what reaches the wire never
    depends on set order; build it with `NeedOperations.of`)."""

    op_ids: tuple[OpId, ...]

    def __post_init__(self) -> None:
        if not self.op_ids or list(self.op_ids) != sorted(set(self.op_ids)):
            raise InternalError("NeedOperations takes a non-empty sorted tuple of distinct ids")

    @classmethod
    def of(cls, op_ids: Iterable[OpId]) -> NeedOperations:
        return cls(tuple(sorted(set(op_ids))))


class Step(enum.IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class TimeoutKind(enum.StrEnum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


# -- the value ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointProposal:
    """A checkpoint and what a replica needs to certify it: the cut heads, the deposits it
    credits (nonce order) and the payout leaves behind its root (so a certificate is complete)."""

    checkpoint: Checkpoint
    heads: tuple[OpId, ...]
    deposits: tuple[Deposit, ...] = ()
    leaves: tuple[PayoutLeaf, ...] = ()

    @property
    def height(self) -> int:
        return self.checkpoint.version

    @property
    def value_id(self) -> ValueId:
        # By identity first: the machine asks for a value's id many times per message, and
        # `_value_id`'s key is the whole value (hashing and comparing every head and leaf).
        known = _ids_by_object.get(id(self))
        if known is not None and known[0] is self:
            return known[1]
        value_id = _value_id(self)
        if len(_ids_by_object) >= _IDS_BY_OBJECT:
            _ids_by_object.clear()
        _ids_by_object[id(self)] = (self, value_id)  # the value itself too: its id stays its own
        return value_id

    def cut(self) -> Cut:
        """What `crdt.replica.Replica.certify` takes once this value is decided."""
        return Cut(self.checkpoint.version, self.heads, self.checkpoint.time, self.deposits)

    def to_wire(self) -> list[Any]:
        """The 8 checkpoint fields (as in a certificate), then heads, deposits and leaves."""
        return [
            *checkpoint_to_wire(self.checkpoint),
            list(self.heads),
            [[d.nonce, d.account, d.token, d.amount, d.block] for d in self.deposits],
            [leaf_to_wire(leaf) for leaf in self.leaves],
        ]

    def check(self, genesis: Genesis) -> None:
        """Raise `InvalidInput` unless the value is well formed for `genesis` (what any node can
        check without its own state; the application checks the rest)."""
        c = self.checkpoint
        if c.channel != genesis.channel_id:
            raise WrongChannel("proposal for another channel")
        if c.version < 1:
            raise InvalidProposal("checkpoint versions start at 1")
        if len(c.totals) != len(genesis.tokens):
            raise InvalidProposal(f"{len(c.totals)} totals for {len(genesis.tokens)} tokens")
        if len(set(self.heads)) != len(self.heads):
            raise InvalidProposal("a head is named twice")
        for previous, deposit in zip(self.deposits, self.deposits[1:], strict=False):
            if deposit.nonce != previous.nonce + 1:
                raise InvalidProposal("deposit nonces must be consecutive")
        if self.deposits and self.deposits[-1].nonce != c.deposit_nonce:
            raise InvalidProposal("the last deposit credited is not the checkpoint's deposit nonce")
        for deposit in self.deposits:
            if genesis.participant(deposit.account) is None or genesis.token(deposit.token) is None:
                raise InvalidProposal("deposit for an unknown account or token")
        check_leaves(genesis, c, self.leaves, InvalidProposal)


@functools.lru_cache(maxsize=4096)
def _value_id(value: CheckpointProposal) -> ValueId:
    return ValueId(keccak256(cbor.encode(value.to_wire())))


_IDS_BY_OBJECT = 4096  # values whose id is kept by identity (emptied when full)
_ids_by_object: dict[int, tuple[CheckpointProposal, ValueId]] = {}


# -- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposal:
    height: int
    round: int
    value: CheckpointProposal
    valid_round: int  # -1, or the round of the proof of lock the proposer re-proposes
    signature: bytes

    @property
    def value_id(self) -> ValueId:
        return self.value.value_id


@dataclass(frozen=True, slots=True)
class Prevote:
    height: int
    round: int
    value_id: ValueId | None  # None is nil
    signature: bytes


@dataclass(frozen=True, slots=True)
class Precommit:
    height: int
    round: int
    value_id: ValueId | None
    signature: bytes


@dataclass(frozen=True, slots=True)
class CheckpointSignature:
    """A participant's EIP-712 signature of a decided checkpoint (what the contract checks)."""

    checkpoint: Checkpoint
    signature: bytes

    @property
    def height(self) -> int:
        return self.checkpoint.version


@dataclass(frozen=True, slots=True)
class Decision:
    """Proof that `value` was decided at (height, round): a quorum of precommit signatures for
    its id. Sent to a peer that is still at an older height, so it can catch up (lines 49-54)."""

    height: int
    round: int
    value: CheckpointProposal
    signatures: tuple[bytes, ...]

    def precommits(self) -> list[Precommit]:
        return [Precommit(self.height, self.round, self.value.value_id, sig) for sig in self.signatures]


Vote = Prevote | Precommit
Message = Proposal | Prevote | Precommit | CheckpointSignature | Decision


# -- inputs and outputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeout:
    kind: TimeoutKind
    height: int
    round: int


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Message


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to one participant only (a `Decision` for a peer that is behind)."""

    to: Address
    message: Message


@dataclass(frozen=True, slots=True)
class SigningRecord:
    """This node signed `message` (with `value`, the proposal it refers to, when known). The
    driver must store it durably before it carries out the `Broadcast` that follows, and give
    the stored ones of the height back through `Consensus.restore` after a restart: so a
    restarted node neither signs a second vote for a slot nor forgets the value it locked."""

    height: int
    message: Proposal | Prevote | Precommit
    value: CheckpointProposal | None


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask the peers for these operations by id (sorted): a value this node must judge needs
    them (`NeedOperations`). Once operations arrive, the driver calls `on_data_arrived`."""

    op_ids: tuple[OpId, ...]


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    timeout: Timeout
    duration: int  # ms


@dataclass(frozen=True, slots=True)
class Decide:
    """Version `height` is decided (irrevocably); `proof` is the quorum of precommits."""

    height: int
    round: int
    value: CheckpointProposal
    proof: Decision


@dataclass(frozen=True, slots=True)
class Certified:
    """Threshold EIP-712 signatures on the decided checkpoint: settle this on-chain."""

    height: int
    value: CheckpointProposal
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two different messages that `offender` signed for the same slot. For two `CheckpointSignature`s
    (``kind == "double_sign"``) this is what the contract's slashDoubleSign takes."""

    offender: Address
    first: Message
    second: Message

    @property
    def kind(self) -> str:
        if isinstance(self.first, CheckpointSignature):
            return "double_sign"
        if isinstance(self.first, Proposal):
            return "double_proposal"
        return "double_vote"


Output = Broadcast | SigningRecord | Send | Fetch | ScheduleTimeout | Decide | Certified | Evidence


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """timeout_<step>(round) = base + round * delta, in ms (the paper's increasing timeouts)."""

    propose_base: int = 3000
    propose_delta: int = 500
    prevote_base: int = 1000
    prevote_delta: int = 500
    precommit_base: int = 1000
    precommit_delta: int = 500

    def duration(self, kind: TimeoutKind, round_: int) -> int:
        if kind is TimeoutKind.PROPOSE:
            return self.propose_base + round_ * self.propose_delta
        if kind is TimeoutKind.PREVOTE:
            return self.prevote_base + round_ * self.prevote_delta
        return self.precommit_base + round_ * self.precommit_delta


@dataclass(frozen=True, slots=True)
class Limits:
    max_future_rounds: int = 8  # rounds ahead of ours in which one signer may have messages
    max_proposals_per_round: int = 4  # distinct values kept from an equivocating proposer
    commit_window: int = 4  # versions behind ours for which checkpoint signatures are still collected

