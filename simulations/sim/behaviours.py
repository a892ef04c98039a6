"""Byzantine behaviours of simulated nodes: each a small class with a name and parameters.

A Byzantine node runs the same honest machines as every other node (so it stays in step with
the protocol) and its behaviours rewrite what it sends, per destination:
- `Behaviour.gossip`: the operations an operation becomes, for one peer (``own``: one it
  publishes, else one it relays);
- `Behaviour.consensus`: the consensus messages one message becomes, for one peer (``own`` as
  for gossip: a relayed message can be dropped, never re-signed as this node's);
- `Behaviour.sync`: the sync messages (or raw bytes) an answer becomes, for one peer.
Behaviours of one node compose in the scenario's order. Each gets a `BehaviourContext`: the
genesis, the node's key, the run's "behaviours" random stream, which copy it is (Twins), and
``split``: half of the honest nodes, drawn from the seed, for behaviours that show different
things to different nodes (the draw is printed with the run's options).

The behaviours:
- ``equivocate``: each own operation gets a twin (same seq and parents, amount + 1); peers in
  the split get the twin, the others the original, so the honest views diverge until sync
  brings both sides everywhere (replay keeps the first in order; both are a fraud proof);
- ``twins``: two copies of the node with one key, each running the honest code unmodified
  (Bano et al.): they sign different operations with the same seqs, and may propose and vote
  differently. With ``split = true`` copy 0 talks only to the nodes outside the split and copy
  1 only to those in it;
- ``double_vote``: every prevote and precommit gets a conflicting twin (nil for a value, a
  junk id for nil), sent to the split;
- ``double_propose``: every proposal gets a second valid value (the same cut one ms later),
  sent to the split;
- ``bad_proposal``: its proposals claim a state hash replay does not give (honest nodes must
  prevote nil);
- ``withhold``: sends nothing on the given channels (``ops``, ``sync``, ``consensus``) to the
  given targets (``split``: the split; ``all``; or a list of participant indices);
- ``sync_lies``: its sync answers lie: ``garbage`` (undecodable frames), ``false_heads``
  (Status heads it does not have), ``endless_wants`` (a Want of junk ids with every message);
- ``stale_parents``: its operations name only its own previous one as parent, so they sort
  early and ignore the checkpoints (replay rejects them as ``stale``);
- ``flood_pending``: each own operation comes with ``count`` signed operations whose parents
  nobody has (the honest pending buffers must stay bounded);
- ``time_skew``: its proposals carry a checkpoint time ``skew_ms`` off its clock;
- ``silent``: sends nothing at all from ``from_ms`` on (a crash that keeps its state);
- ``replay_ops``: each own operation goes out with ``count`` old operations drawn from what it
  stored (others' and its own), which the honest nodes must recognise and drop.

The trading behaviours (scenarios with ``[trading]``) sign operations of their own, through
`Behaviour.after_own` (right after one of its own) and `Behaviour.on_received` (on seeing
others'), without the dry run an honest node does:
- ``self_trade``: after each own order that rests, an IOC of the other side at its price and
  quantity, which meets it (replay removes the resting order, never fills it against itself);
- ``spoof``: with each own operation, a large post-only order ``ticks`` behind the best price
  of a side, cancelled with the next one (it is in the book only between the two);
- ``front_run``: on an order of another participant that took liquidity in its replica, an IOC
  of the same side, price and quantity whose parents are only its own last operation and the
  heads of the last certified cut, so that it sorts before the order it saw (README, "Queue
  priority": the bound is the freshness window); how often it got ahead is a metric;
- ``oracle_outlier``: as an oracle, posts the price times ``factor_e9 / 1e9`` (clipped to the
  market's range); the median of the posts must stay within the honest oracles' range.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from channel.core.consensus import (
    CheckpointProposal,
    Precommit,
    Prevote,
    Proposal,
    sign_precommit,
    sign_prevote,
    sign_proposal,
)
from channel.core.consensus import Message as ConsensusMessage
from crdt.eip712 import Checkpoint
from crdt.genesis import Genesis
from crdt.hashing import keccak256
from crdt.markets.book import BUY, IOC, LIMIT, POST_ONLY, SELL
from crdt.markets.config import E9
from crdt.ops import SignedOp, sign_op
from crdt.replica import Cut, Replica
from crdt.types import Address, Hash32, OpId
from p2p.wire import Message as SyncMessage
from p2p.wire import Ops, Status, make_want
from simulations.sim.scenario import BehaviourSpec, ScenarioError

SyncOut = Sequence[SyncMessage | bytes]
Channel = Literal["ops", "sync", "consensus"]


class SimNode(Protocol):
    """What a behaviour may read of its node (`simulations.sim.engine.SimNode`)."""

    @property
    def address(self) -> Address: ...
    @property
    def replica(self) -> Replica: ...
    @property
    def now(self) -> int:
        """The virtual time, ms."""
        ...

    def next_seq(self) -> int: ...
    def value_for(self, cut: Cut) -> CheckpointProposal | None:
        """The proposal of `cut` with the roots this node's replica computes."""
        ...

    def participant_of(self, node: int) -> int:
        """The participant index of another simulated node."""
        ...

    def stored_ops(self) -> list[SignedOp]:
        """The operations in the node's store, in the order it wrote them."""
        ...


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Draft:
    """An operation a behaviour wants signed: its kind, body and parents (None: the node's own
    choice), and the operation of another participant it answers (a front-run's victim)."""

    kind: str
    body: dict[str, Any]
    parents: list[OpId] | None = None
    answers: OpId | None = None


@dataclass(frozen=True, slots=True)
class BehaviourContext:
    genesis: Genesis
    key: bytes
    rng: random.Random
    copy: int
    split: frozenset[int]  # node indices


class Behaviour:
    """Honest by default: every hook passes its input through."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    copies: ClassVar[int] = 1  # nodes that run this participant (2 for Twins)

    def __init__(self, params: BaseModel, context: BehaviourContext) -> None:
        self.params = params
        self.context = context

    def gossip(self, node: SimNode, op: SignedOp, dst: int, own: bool) -> list[SignedOp]:
        return [op]

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        return [message]

    def sync(self, node: SimNode, dst: int, messages: SyncOut) -> SyncOut:
        return messages

    def parents(self, node: SimNode, parents: list[OpId]) -> list[OpId]:
        """The parents of the node's next own operation (honest: its heads, as the node picks them)."""
        return parents

    def after_own(self, node: SimNode, op: SignedOp) -> list[Draft]:
        """Operations to sign right after the node's own `op` (applied in its replica)."""
        return []

    def on_received(self, node: SimNode, ops: Sequence[SignedOp]) -> list[Draft]:
        """Operations to sign on receiving others' `ops` (applied in its replica)."""
        return []

    def oracle_price(self, node: SimNode, price: int) -> int:
        """The price this node posts as an oracle, where an honest one posts `price`."""
        return price


class Equivocate(Behaviour):
    name = "equivocate"

    class Params(NoParams):
        probability: float = Field(default=1.0, ge=0, le=1)

    def __init__(self, params: BaseModel, context: BehaviourContext) -> None:
        super().__init__(params, context)
        self._twins: dict[bytes, SignedOp | None] = {}

    def gossip(self, node: SimNode, op: SignedOp, dst: int, own: bool) -> list[SignedOp]:
        if not own or dst not in self.context.split:
            return [op]
        twin = self._twin(node, op)
        return [op] if twin is None else [twin]

    def _twin(self, node: SimNode, op: SignedOp) -> SignedOp | None:
        if op.op_id not in self._twins:
            twin = None
            assert isinstance(self.params, Equivocate.Params)
            if op.author == node.address and self.context.rng.random() < self.params.probability:
                body = dict(op.body)
                body["amount"] = body.get("amount", 0) + 1
                twin = sign_op(node.replica.ctx, self.context.key, op.seq, op.parents, op.kind, body, ts=op.ts)
            self._twins[op.op_id] = twin
        return self._twins[op.op_id]


class Twins(Behaviour):
    name = "twins"
    copies = 2

    class Params(NoParams):
        split: bool = False

    def _reaches(self, dst: int) -> bool:
        assert isinstance(self.params, Twins.Params)
        if not self.params.split:
            return True
        return (dst in self.context.split) == (self.context.copy == 1)

    def gossip(self, node: SimNode, op: SignedOp, dst: int, own: bool) -> list[SignedOp]:
        return [op] if self._reaches(dst) else []

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        return [message] if self._reaches(dst) else []

    def sync(self, node: SimNode, dst: int, messages: SyncOut) -> SyncOut:
        return messages if self._reaches(dst) else []


class DoubleVote(Behaviour):
    name = "double_vote"

    def __init__(self, params: BaseModel, context: BehaviourContext) -> None:
        super().__init__(params, context)
        self._twins: dict[bytes, ConsensusMessage] = {}

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        if not own or not isinstance(message, Prevote | Precommit) or dst not in self.context.split:
            return [message]
        twin = self._twins.get(message.signature)
        if twin is None:
            other = None if message.value_id is not None else keccak256(b"junk %d %d" % (message.height, message.round))
            sign = sign_prevote if isinstance(message, Prevote) else sign_precommit
            twin = sign(self.context.genesis, self.context.key, message.height, message.round, other)
            self._twins[message.signature] = twin
        return [twin]


class DoublePropose(Behaviour):
    name = "double_propose"

    def __init__(self, params: BaseModel, context: BehaviourContext) -> None:
        super().__init__(params, context)
        self._twins: dict[bytes, ConsensusMessage | None] = {}

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        if not own or not isinstance(message, Proposal) or dst not in self.context.split:
            return [message]
        if message.signature not in self._twins:
            value = message.value
            cut = Cut(value.height, value.heads, value.checkpoint.time + 1, value.deposits)
            other = node.value_for(cut)
            self._twins[message.signature] = None if other is None else sign_proposal(
                self.context.genesis, self.context.key, message.height, message.round, other, message.valid_round
            )
        twin = self._twins[message.signature]
        return [message] if twin is None else [twin]


class BadProposal(Behaviour):
    name = "bad_proposal"

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        if not own or not isinstance(message, Proposal):
            return [message]
        value = message.value
        c = value.checkpoint
        lie = Checkpoint(c.channel, c.version, c.payout_root, Hash32(keccak256(b"a state replay never gives")),
                         c.totals, c.withdrawn, c.deposit_nonce, c.time)
        forged = type(value)(lie, value.heads, value.deposits, value.leaves)
        return [sign_proposal(self.context.genesis, self.context.key, message.height, message.round, forged,
                              message.valid_round)]


class Withhold(Behaviour):
    name = "withhold"

    class Params(NoParams):
        channels: list[Channel] = Field(default_factory=lambda: list[Channel](["ops"]), min_length=1)
        targets: Literal["split", "all"] | list[int] = "split"

    def _blocked(self, node: SimNode, channel: str, dst: int) -> bool:
        assert isinstance(self.params, Withhold.Params)
        if channel not in self.params.channels:
            return False
        targets = self.params.targets
        if targets == "all":
            return True
        if targets == "split":
            return dst in self.context.split
        return node.participant_of(dst) in targets

    def gossip(self, node: SimNode, op: SignedOp, dst: int, own: bool) -> list[SignedOp]:
        return [] if self._blocked(node, "ops", dst) else [op]

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        return [] if self._blocked(node, "consensus", dst) else [message]

    def sync(self, node: SimNode, dst: int, messages: SyncOut) -> SyncOut:
        return [] if self._blocked(node, "sync", dst) else messages


class SyncLies(Behaviour):
    name = "sync_lies"

    class Params(NoParams):
        mode: Literal["garbage", "false_heads", "endless_wants"] = "garbage"
        ids: int = Field(default=64, ge=1, le=1024)

    def _junk(self, count: int) -> list[bytes]:
        rng = self.context.rng
        return [rng.randbytes(32) for _ in range(count)]

    def sync(self, node: SimNode, dst: int, messages: SyncOut) -> SyncOut:
        assert isinstance(self.params, SyncLies.Params)
        mode = self.params.mode
        if mode == "garbage":
            return [b"\xff" + self.context.rng.randbytes(40) if isinstance(m, Ops) else m for m in messages]
        if mode == "false_heads":
            return [Status(m.channel, m.version_vector, tuple(sorted(self._junk(4)))) if isinstance(m, Status) else m
                    for m in messages]
        return [*messages, make_want(self._junk(self.params.ids))]


class StaleParents(Behaviour):
    """Its operations name only its own previous operation as parent (never the others' heads),
    so they sort early and ignore the checkpoints: replay must reject them as ``stale`` from the
    third epoch on (DESIGN.md, "Freshness")."""

    name = "stale_parents"

    def parents(self, node: SimNode, parents: list[OpId]) -> list[OpId]:
        own = node.replica.graph.chains.get(node.address, {}).get(node.next_seq() - 1, ())
        return list(own[:1])


class _WithExtras(Behaviour):
    """Each own operation goes out with ``count`` more (`extras`), made once for it: every peer
    gets the same ones."""

    class Params(NoParams):
        count: int = Field(default=4, ge=1, le=64)

    def __init__(self, params: BaseModel, context: BehaviourContext) -> None:
        super().__init__(params, context)
        self._extra: dict[bytes, list[SignedOp]] = {}  # one operation's at a time

    def gossip(self, node: SimNode, op: SignedOp, dst: int, own: bool) -> list[SignedOp]:
        if not own:
            return [op]
        extra = self._extra.get(op.op_id)
        if extra is None:
            assert isinstance(self.params, _WithExtras.Params)
            extra = self.extras(node, op, self.params.count)
            self._extra = {op.op_id: extra}
        return [op, *extra]

    def extras(self, node: SimNode, op: SignedOp, count: int) -> list[SignedOp]:
        raise NotImplementedError


class FloodPending(_WithExtras):
    """With each own operation, ``count`` more signed operations whose parents nobody has (junk
    ids) and seqs far ahead: they can only wait in the honest pending buffers, which must stay
    bounded, and make the honest nodes ask for parents that never come."""

    name = "flood_pending"

    def __init__(self, params: BaseModel, context: BehaviourContext) -> None:
        super().__init__(params, context)
        self._next_seq = 1_000_000

    def extras(self, node: SimNode, op: SignedOp, count: int) -> list[SignedOp]:
        extra = []
        for _ in range(count):
            self._next_seq += 1
            junk = [OpId(self.context.rng.randbytes(32))]
            extra.append(sign_op(node.replica.ctx, self.context.key, self._next_seq, junk, op.kind, op.body, op.ts))
        return extra


class TimeSkew(Behaviour):
    """Its proposals carry a checkpoint time ``skew_ms`` off its clock (with the roots that time
    gives): beyond the validators' bound they must prevote nil; within it the value is valid."""

    name = "time_skew"

    class Params(NoParams):
        skew_ms: int = Field(default=60_000, ge=-(10**9), le=10**9)

    def __init__(self, params: BaseModel, context: BehaviourContext) -> None:
        super().__init__(params, context)
        self._forged: dict[bytes, ConsensusMessage | None] = {}

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        if not own or not isinstance(message, Proposal):
            return [message]
        if message.signature not in self._forged:
            assert isinstance(self.params, TimeSkew.Params)
            value = message.value
            when = max(0, value.checkpoint.time + self.params.skew_ms)
            other = node.value_for(Cut(value.height, value.heads, when, value.deposits))
            self._forged[message.signature] = None if other is None else sign_proposal(
                self.context.genesis, self.context.key, message.height, message.round, other, message.valid_round
            )
        forged = self._forged[message.signature]
        return [message] if forged is None else [forged]


class Silent(Behaviour):
    name = "silent"

    class Params(NoParams):
        from_ms: int = Field(default=0, ge=0)

    def _on(self, node: SimNode) -> bool:
        assert isinstance(self.params, Silent.Params)
        return node.now >= self.params.from_ms

    def gossip(self, node: SimNode, op: SignedOp, dst: int, own: bool) -> list[SignedOp]:
        return [] if self._on(node) else [op]

    def consensus(self, node: SimNode, message: ConsensusMessage, dst: int, own: bool) -> list[ConsensusMessage]:
        return [] if self._on(node) else [message]

    def sync(self, node: SimNode, dst: int, messages: SyncOut) -> SyncOut:
        return [] if self._on(node) else messages


class ReplayOps(_WithExtras):
    """Each own operation goes out with ``count`` old ones from its store (drawn from the
    seed): duplicates every honest node must drop without applying anything twice."""

    name = "replay_ops"

    def extras(self, node: SimNode, op: SignedOp, count: int) -> list[SignedOp]:
        stored, rng = node.stored_ops(), self.context.rng
        return [stored[rng.randrange(len(stored))] for _ in range(count)] if stored else []


def _own_last(node: SimNode) -> list[OpId]:
    return list(node.replica.graph.chains.get(node.address, {}).get(node.next_seq() - 1, ())[:1])


class SelfTrade(Behaviour):
    name = "self_trade"

    def after_own(self, node: SimNode, op: SignedOp) -> list[Draft]:
        if op.kind != "order.place":
            return []
        resting = node.replica.ledger.order(op.op_id)
        if resting is None:
            return []
        side = SELL if resting.side == BUY else BUY
        return [Draft("order.place", {**op.body, "side": side, "type": LIMIT, "tif": IOC, "qty": resting.remaining})]


class Spoof(Behaviour):
    name = "spoof"

    class Params(NoParams):
        qty_steps: int = Field(default=50_000, ge=1, le=10**6)  # 50 ETH at a 0.001 step
        ticks: int = Field(default=2, ge=0, le=10_000)

    def after_own(self, node: SimNode, op: SignedOp) -> list[Draft]:
        if op.kind not in ("transfer", "order.place", "order.cancel"):
            return []
        assert isinstance(self.params, Spoof.Params)
        ledger, genesis = node.replica.ledger, self.context.genesis
        spoofs = [order for order in node.replica.open_orders(node.address)
                  if order.remaining >= self.params.qty_steps * genesis.markets[0].step_size // 2]
        if spoofs:
            return [Draft("order.cancel", {"order": order.order_id}) for order in spoofs]
        market = genesis.markets[self.context.rng.randrange(len(genesis.markets))]
        side = self.context.rng.choice((BUY, SELL))
        book = ledger.book(market.symbol)
        best = book.best_bid() if side == BUY else book.best_ask()
        if best is None:
            return []
        toward = 1 if side == BUY else -1
        price = best.price - toward * self.params.ticks * market.tick_size
        if not market.min_price <= price <= market.max_price:
            return []
        body = {"market": market.symbol, "side": side, "type": LIMIT, "tif": POST_ONLY, "price": price,
                "qty": self.params.qty_steps * market.step_size, "reduce_only": False, "expires": 0}
        return [Draft("order.place", body)]


class FrontRun(Behaviour):
    name = "front_run"

    def on_received(self, node: SimNode, ops: Sequence[SignedOp]) -> list[Draft]:
        replica, drafts = node.replica, list[Draft]()
        for op in ops:
            if op.kind != "order.place" or op.author == node.address or not replica.ledger.order_fills.get(op.op_id):
                continue
            own = _own_last(node)
            cut = sorted(replica.cuts[-1].heads) if replica.cuts else []
            parents = own + [head for head in cut if head not in own][: 15]
            body = {**op.body, "type": LIMIT, "tif": IOC}
            drafts.append(Draft("order.place", body, parents, answers=op.op_id))
        return drafts


class OracleOutlier(Behaviour):
    name = "oracle_outlier"

    class Params(NoParams):
        factor_e9: int = Field(default=10 * E9, ge=0, le=10**6 * E9)

    def oracle_price(self, node: SimNode, price: int) -> int:
        assert isinstance(self.params, OracleOutlier.Params)
        market = next(m for m in self.context.genesis.markets if m.perp is not None)
        outlier = price * self.params.factor_e9 // E9 // market.tick_size * market.tick_size
        return min(max(outlier, market.min_price), market.max_price)


BEHAVIOURS: dict[str, type[Behaviour]] = {
    cls.name: cls
    for cls in (
        Equivocate, Twins, DoubleVote, DoublePropose, BadProposal, Withhold, SyncLies, StaleParents, FloodPending,
        TimeSkew, Silent, ReplayOps, SelfTrade, Spoof, FrontRun, OracleOutlier,
    )
}
TRADING_BEHAVIOURS = frozenset({"self_trade", "spoof", "front_run", "oracle_outlier"})


def make_behaviours(specs: Sequence[BehaviourSpec]) -> dict[int, list[tuple[type[Behaviour], BaseModel]]]:
    """participant -> its behaviour classes with validated parameters, in the scenario's order
    (participants in ascending order). Raises `ScenarioError` for an unknown name or bad params."""
    found: dict[int, list[tuple[type[Behaviour], BaseModel]]] = {}
    for spec in specs:
        cls = BEHAVIOURS.get(spec.name)
        if cls is None:
            raise ScenarioError(f"unknown behaviour {spec.name!r}; known: {', '.join(sorted(BEHAVIOURS))}")
        try:
            params = cls.Params.model_validate(spec.params)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ScenarioError(f"behaviour {spec.name}: {problems}") from None
        for participant in spec.participants:
            found.setdefault(participant, []).append((cls, params))
    return dict(sorted(found.items()))


def describe(params: Any) -> dict[str, Any]:
    return params.model_dump(mode="json") if isinstance(params, BaseModel) else {}
