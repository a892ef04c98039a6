"""The node: one participant's replica, kept durable, networked, and served to local clients.

``parley node run --config node.toml`` calls `run_node`, which opens one trio nursery holding
the libp2p transport, the `p2p.peer.Peer` (gossip and sync), and the local API, and stops all
of them cleanly on SIGINT or SIGTERM.

Invariants:
- write-ahead: every operation is appended to the SQLite store before the replica applies it
  (the peer's ``persist`` hook), and an operation this node signs is stored (fsync) before
  it is applied, published or acknowledged. `Node.submit` commits it in a worker thread
  (`Store.append_own_ops`), so the node's other tasks run while the disk syncs, and applies it
  once that commit returned, with no checkpoint in between (a cancelled submit still applies
  what it made durable); the hook then does not store it again. A restart replays the store
  into a fresh replica, so no acknowledged operation is ever lost;
- one signer: `Node.submit` holds a lock from choosing the seq to applying the operation (across
  the off-loop commit too), and the next seq is derived from the operations in the graph, so
  the node never signs two operations with one seq, not even across a crash;
- a client request that replay would reject (insufficient balance, a bad body, a role that may
  not, an order with a bad tick or that would cross as post-only) is refused with the reason
  before anything is signed: the dry run applies the unsigned operation (`crdt.ops.unsigned_op`),
  so no signature for its seq ever exists, and it consumes no seq;
- no signature without knowing what was signed before (`SignerState`): a node whose store is
  new (deleted, truncated, or never used) does not sign an operation until a quorum of peers
  (threshold - 1 others) has told it the highest seq of its own it holds and it holds those
  operations itself, and does not sign a consensus vote below the height it learns from a
  quorum of checkpoint catch-up answers (`channel.runtime.driver`). ``--fresh-channel`` is the one
  way round, for a brand-new genesis;
- restore checks every stored operation against its id and its signature, and refuses to
  start on a store that fails (`StoreDamaged`, naming the row and the way out);
- a write that fails (a full disk) is never an unhandled exception: what depended on it is
  not done (an operation is not applied, a vote is not sent), submissions are refused with a
  clear error, and the node keeps serving reads until a probe write succeeds again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio
from libp2p.peer.id import ID

from channel.errors import StorageUnavailable, StoreDamaged, UserError
from channel.runtime import keystore, perps, snapshots, trading
from channel.runtime.archive import StoreArchive
from channel.runtime.config import NodeConfig
from channel.runtime.events import EventHub
from channel.runtime.genesis_file import load_genesis
from channel.runtime.keystore import write_atomic
from channel.runtime.market_feed import MarketFeed
from channel.runtime.metrics import NodeMetrics, RateWindow
from channel.runtime.perp_feed import PerpFeed
from channel.runtime.service import (
    NO_CHAIN,
    ExitRefused,
    NotReady,
    RequestIdConflict,
    RequestRefused,
    RequestRejected,
    Submission,
    UnknownMarket,
)
from channel.runtime.store import Store
from crdt import cbor
from crdt.certificate import Certificate
from crdt.errors import InvalidInput
from crdt.genesis import Genesis
from crdt.hashing import keccak256
from crdt.ledger import Reason
from crdt.markets.book import BUY, FillRecord
from crdt.markets.config import Market
from crdt.ops import DEFAULT_LIMITS, Context, SignedOp, decode_op, sign, unsigned_op
from crdt.replica import Replica
from crdt.types import Address, OpId
from p2p import identity as p2p_identity
from p2p.admission import Admission, sign_binding
from p2p.errors import NotPersisted
from p2p.host import HostConfig, bootstrap_from_genesis, open_libp2p_transport
from p2p.peer import Peer, PeerConfig, open_peer
from p2p.transport import PeerId, Transport

if TYPE_CHECKING:
    from channel.runtime.chain_worker import ChainWorker
    from channel.runtime.driver import ConsensusDriver, DriverConfig
    from channel.runtime.exits import NodeExit

log = logging.getLogger(__name__)

STORE_FILE = "node.sqlite"
MAX_PARENTS = 16
DEFAULT_KEEP_EPOCHS = 2  # compaction keeps the last two certified epochs in memory (Replica.compact)
DEFAULT_SNAPSHOT_EVERY = 100  # a snapshot of the certified state every 100 checkpoints
# Status every half second: a gossip loss is repaired within two rounds, and a Status is a
# version vector, cheap next to the operations it saves from waiting.
NODE_PEER_CONFIG = PeerConfig(sync_interval=0.5)
WallClock = Callable[[], int]  # milliseconds since 1970


def _trio_time() -> float | None:
    """trio's clock, or None outside a trio run (a node restored or fed by a script)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


def wall_clock_ms() -> int:
    """The machine's clock: the default `Node.wall_clock`."""
    return time.time_ns() // 1_000_000


SEQ_KNOWN_KEY = "own_seq_known"  # meta: b"1" once this store knows every seq this key signed
VOTE_FROM_KEY = "vote_from"  # meta: the first height at which this store may sign votes


@dataclass(slots=True)
class SignerState:
    """What this node may sign, kept in the store's meta table (fsync'd).

    A store that has recorded nothing says nothing about what the key signed before it: it may
    be brand new, or it may replace one that was lost. So a new store starts with neither
    fact known, and the node learns them from its peers; ``fresh_channel`` (a brand-new
    genesis, nothing signed anywhere yet) knows both at once. A store written by an earlier
    version of Parley, which kept no signer state, is trusted if it holds anything: it was the
    node's own write-ahead store.
    """

    seq_known: bool
    vote_from: int | None  # None: not learnt yet; consensus abstains until it is

    @classmethod
    def load(cls, store: Store, *, fresh_channel: bool = False) -> SignerState:
        known = store.get_meta(SEQ_KNOWN_KEY)
        vote_from = store.get_meta(VOTE_FROM_KEY)
        if known is None and vote_from is None and (fresh_channel or not store.is_empty()):
            state = cls(True, 1)
            state.save(store)
            return state
        return cls(known == b"1", None if vote_from is None else int(vote_from.decode()))

    def save(self, store: Store) -> None:
        if self.seq_known:
            store.set_meta(SEQ_KNOWN_KEY, b"1")
        if self.vote_from is not None:
            store.set_meta(VOTE_FROM_KEY, str(self.vote_from).encode())

    @staticmethod
    def forget(store: Store) -> None:
        """Make the store learn both again (after a repair dropped some of what it held)."""
        store.delete_meta(SEQ_KNOWN_KEY)
        store.delete_meta(VOTE_FROM_KEY)


def verify_stored_ops(
    store: Store, ctx: Context, *, skip_archived: bool = False,
) -> tuple[list[SignedOp], list[tuple[int, str]]]:
    """Every stored operation (but the archived ones, with `skip_archived`) checked against its
    op id and its signature: the good ones, and (row position, what is wrong) for the others.
    Costs one signature recovery per row."""
    good: list[SignedOp] = []
    bad: list[tuple[int, str]] = []
    for position, op_id, raw in store.load_ops(skip_archived=skip_archived):
        try:
            op = decode_op(raw, ctx, verify=False)
        except InvalidInput as exc:
            bad.append((position, f"does not decode ({exc.code}: {exc})"))
            continue
        if op.op_id != op_id:
            bad.append((position, f"its bytes do not hash to its op id 0x{op_id.hex()}"))
        elif not _signed_by_author(ctx, op):
            bad.append((position, f"op 0x{op_id.hex()}: its signature does not recover to its author"))
        else:
            good.append(op)
    return good, bad


def _signed_by_author(ctx: Context, op: SignedOp) -> bool:
    try:
        return ctx.recover(op.op_id, op.signature) == op.author
    except InvalidInput:
        return False


class Node:
    def __init__(
        self,
        genesis: Genesis,
        key: keystore.Key,
        store: Store,
        replica: Replica,
        signer: SignerState | None = None,
        wall_clock: WallClock = wall_clock_ms,
    ) -> None:
        """`wall_clock` gives the checkpoint times (the consensus driver reads it); every other
        time the node measures is trio's (`trio.current_time()`), so that a whole node runs
        under `trio.testing.MockClock` with a wall clock derived from it."""
        if genesis.participant(key.address) is None:
            raise UserError(f"key 0x{key.address.hex()} is not a participant of this channel")
        self.genesis = genesis
        self.key = key
        self.address = key.address
        self.store = store
        self.replica = replica
        self.signer = signer if signer is not None else SignerState(True, 1)
        self.storage_error: str | None = None  # the last failed write, until a write works again
        self.events = EventHub()
        self.market_feed = MarketFeed(replica, self.events, key.address)  # book, trades, fills, orders
        self.perp_feed = PerpFeed(replica, self.events, key.address)  # positions, account, funding, liquidations
        self.peer: Peer | None = None
        self.driver: ConsensusDriver | None = None
        self.chain_worker: ChainWorker | None = None
        self.exits: NodeExit | None = None  # with a chain configured (`channel.runtime.exits`)
        self.wall_clock = wall_clock
        self.started: float | None = None  # trio time when it began to run (`open_node`)
        self._lock = trio.Lock()
        self._watched: dict[OpId, str] = {}  # op ids submitted here, not yet certified -> last status sent
        self._status_version = 0  # the version when `_watched` was last checked whole
        self._balances = self._balance_snapshot()
        self.submitted = 0
        self.metrics = NodeMetrics()  # submit, delivery and finality latency (`/metrics`, stats)
        self._ops_rate = RateWindow()  # operations accepted per second, lately (stats' ops_per_s)
        self.behaviour: Behaviour = HONEST
        self._requests: dict[OpId, tuple[str, bytes]] = {}  # op id -> request id and fingerprint, stored with it
        self._durable: set[OpId] = set()  # signed here, committed by `submit`, not yet applied
        # False: a submit's fsync'd commit runs on the trio thread, in `persist_ops` (only the
        # baseline of benchmarks/fsync.py sets it)
        self.commit_off_loop = True
        self.keep_epochs = 0  # Node.restore sets it: no compaction for a node built by hand
        self.snapshot_every = 0  # nor snapshots

    # -- restoring and persisting --------------------------------------------------------------------

    @classmethod
    def restore(
        cls, genesis: Genesis, key: keystore.Key, store: Store, *, fresh_channel: bool = False,
        wall_clock: WallClock = wall_clock_ms, keep_epochs: int = DEFAULT_KEEP_EPOCHS,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    ) -> Node:
        """A node whose replica holds everything in the store, each operation checked again
        against its id and its signature (a disk can fail, and a file can be edited): a row
        that fails raises `StoreDamaged`, naming it, and the node does not start.

        `keep_epochs` (``[store] keep_epochs``): after each certified checkpoint the replica
        moves what is certified more than that many versions ago to the store's archive
        (`Replica.compact`); 0 keeps everything in memory. `snapshot_every` (``[store]
        snapshot_every``): every that many checkpoints a snapshot of the certified state is
        written (channel/runtime/snapshots.py), and a start begins from the newest one and
        replays only what is not archived; 0 never writes one (a start then replays it all)."""
        from channel.runtime.driver import restore_decisions

        ctx = genesis.context()
        archive = StoreArchive(store, ctx) if keep_epochs else None
        latest = snapshots.latest_snapshot(store) if snapshot_every else None
        if latest is not None:
            store.unarchive_after(latest[0])
        ops, bad = verify_stored_ops(store, ctx, skip_archived=latest is not None)
        if bad:
            rows = "; ".join(f"row {position}: {what}" for position, what in bad[:3])
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise store.damaged(f"{len(bad)} stored operations fail their checks: {rows}{more}")
        decisions = store.decisions()
        if latest is None:
            replica = Replica(genesis, ctx, archive=archive)
            replica.receive_many(ops)
        else:
            version, data = latest
            replica = snapshots.replica_from_snapshot(genesis, store, version, data, ops, archive, decisions)
            decisions = [(height, decision) for height, decision in decisions if height > version]
        try:
            restore_decisions(replica, decisions)
        except InvalidInput as exc:
            raise store.damaged("a stored checkpoint decision does not apply", exc) from exc
        node = cls(genesis, key, store, replica, SignerState.load(store, fresh_channel=fresh_channel), wall_clock)
        node.keep_epochs = keep_epochs
        node.snapshot_every = snapshot_every
        node.compact()
        return node

    def behind(self) -> str | None:
        """Why this node must not sign now, if the channel has decided two or more versions it
        has not certified yet: an operation signed on its heads would miss the heads of the cut
        two before the epoch it lands in, so replay would reject it as stale after the node
        acknowledged it (the fault harness found 4% of acknowledged transfers so, on nodes just
        healed, restarted or resumed). Submitters get `NotReady` and retry; catch-up closes the
        gap in a few rounds."""
        driver = self.driver
        if driver is None:
            return None
        ahead, version = driver.channel_version(), self.replica.version
        if ahead < version + 2:
            return None
        return (f"catching up: the channel has decided checkpoint {ahead} and this node {version}; "
                "an operation signed now would be stale")

    def snapshot_if_due(self) -> None:
        """Write a snapshot every ``snapshot_every`` certified versions (a store or disk that
        refuses it leaves the previous one; the next is tried at the next such version)."""
        version = self.replica.version
        if not self.snapshot_every or version % self.snapshot_every:
            return
        try:
            size = snapshots.write_snapshot(self.store, self.replica)
        except (OSError, StorageUnavailable) as exc:
            log.warning("snapshot v%d not written: %s", version, exc)
            return
        log.info("snapshot v%d written (%d bytes)", version, size)

    def compact(self) -> int:
        """Move what is certified more than ``keep_epochs`` versions ago out of memory (into the
        store's archive); returns how many operations went. A store that refuses the write
        leaves everything in memory (nothing is lost, the next checkpoint tries again)."""
        if not self.keep_epochs:
            return 0
        try:
            return self.replica.compact(self.keep_epochs)
        except StorageUnavailable as exc:
            log.warning("compaction postponed: %s", exc)
            return 0

    def persist_ops(self, ops: Sequence[SignedOp], source: PeerId) -> bool:
        """Write-ahead: store the operations (with the request id of a submit) before they are
        applied, but for those `submit` has committed already. False if the store refused the
        write: then nothing is applied."""
        own = self.peer is None or source == self.peer.local_id  # signed here: fsync before it leaves
        ops = [op for op in ops if op.op_id not in self._durable]
        requests = [(request[0], op.op_id, request[1]) for op in ops
                    if (request := self._requests.get(op.op_id)) is not None]
        pairs = [(op.op_id, op.raw) for op in ops]
        return self.persist("operations", self.store.append_ops, pairs, source, fsync=own, requests=requests)

    def forget_expired(self, ops: Sequence[SignedOp]) -> None:
        """Operations that waited in vain for their parents leave the store too (they were
        never applied), so a Byzantine author cannot grow it with them."""
        self.persist("expiry", self.store.delete_op_ids, [op.op_id for op in ops])

    def persist(self, what: str, write: Callable[..., object], *args: Any, **kwargs: Any) -> bool:
        """Run one store write; on failure record it (refusing submissions) and return False."""
        try:
            write(*args, **kwargs)
        except StorageUnavailable as exc:
            self._storage_failed(what, exc)
            return False
        return True

    def _storage_failed(self, what: str, exc: StorageUnavailable) -> None:
        if self.storage_error is None:
            log.error("storing %s failed: %s; submissions are refused until the store is writable", what, exc)
        self.storage_error = str(exc)

    async def _commit_own(self, ops: Sequence[SignedOp]) -> None:
        """Make operations signed here durable, with their request ids, in one commit in a
        worker thread; raises `StorageUnavailable` (recorded, nothing stored) if the store
        refused it."""
        source = self.peer.local_id if self.peer is not None else b"local"
        requests = [(request[0], op.op_id, request[1]) for op in ops
                    if (request := self._requests.get(op.op_id)) is not None]
        try:
            with trio.CancelScope(shield=True):  # a commit under way is waited for, never abandoned
                await self.store.append_own_ops([(op.op_id, op.raw) for op in ops], source, requests=requests)
        except StorageUnavailable as exc:
            self._storage_failed("operations", exc)
            raise
        self._durable.update(op.op_id for op in ops)

    async def watch_storage(self, interval: float = 1.0) -> None:
        """While a write has failed, probe the store; when it works again, resume (and ask the
        peers again for what was dropped meanwhile)."""
        while True:
            await trio.sleep(interval)
            if self.storage_error is not None and self.persist("a probe", self.store.set_meta, "probe", b"1"):
                log.warning("the store is writable again")
                self.storage_error = None
                if self.peer is not None:
                    self.peer.sync_now()

    # -- what this node may sign ---------------------------------------------------------------------

    @property
    def peers_needed(self) -> int:
        """How many other participants must report this node's seq before it signs again."""
        return max(0, self.genesis.threshold - 1)

    def learning(self) -> str:
        """Why the node cannot sign yet, or "" if it can."""
        if self.signer.seq_known:
            return ""
        answered = len(self._seq_reports()) if self.peer is not None else 0
        return (
            f"this node's store is new, so it does not know which seq its key signed last; it is asking its "
            f"peers ({answered} of {self.peers_needed} answered). Start a brand-new channel with --fresh-channel"
        )

    def _seq_reports(self) -> dict[bytes, int]:
        """Participant -> the highest seq of ours it holds, from the sync peers' Status."""
        assert self.peer is not None
        transport = self.peer.transport
        reports: dict[bytes, int] = {}
        for peer, seq in self.peer.reported_seqs(self.address).items():
            who = transport.participant(peer) or peer
            if who != self.address:
                reports[who] = max(seq, reports.get(who, 0))
        return reports

    def check_signer(self) -> bool:
        """Learn the own seq once a quorum of peers reported it and we hold it; True if known."""
        if self.signer.seq_known:
            return True
        if self.peer is None:
            return False
        reports = self._seq_reports()
        highest = max(reports.values(), default=0)
        if len(reports) >= self.peers_needed and self.replica.graph.version_vector.get(self.address, 0) >= highest:
            self.signer.seq_known = True
            if not self.persist("the signer state", self.signer.save, self.store):
                self.signer.seq_known = False
                return False
            log.warning("learnt this node's last seq from %d peers: %d", len(reports), highest)
        return self.signer.seq_known

    def set_vote_from(self, height: int) -> None:
        self.signer.vote_from = height
        self.persist("the signer state", self.signer.save, self.store)

    async def learn_signer(self, interval: float = 0.25) -> None:
        """Until the own seq is known (the peers' Status reports announce no event: poll)."""
        while not self.check_signer():  # noqa: ASYNC110
            await trio.sleep(interval)

    def announce(self, ops: Sequence[SignedOp]) -> None:
        if ops and self.driver is not None:
            self.driver.data_arrived()
        now = _trio_time()
        if now is not None:
            self._ops_rate.observe(now, len(self.replica.graph))
            for op in ops:
                if op.author != self.address:
                    self.metrics.built_on(op.parents, now)
        events = self.events
        if events.wants("ops"):
            for op in ops:
                events.publish("ops", {**op.describe(), "status": self.replica.status(op.op_id)})
        if events.wants("balances"):
            current = self._balance_snapshot()
            for account, tokens in current.items():
                if self._balances.get(account) != tokens:
                    events.publish("balances", {"account": account, "balances": tokens})
            self._balances = current
        replica = self.replica
        for op_id in self._status_candidates(ops):
            last = self._watched[op_id]
            status = self.replica.status(op_id)
            if status != last:
                self._watched[op_id] = status
                events.publish("status", {"op_id": "0x" + op_id.hex(), "status": status})
            if replica.is_final(op_id):  # final or rejected for good: it cannot change any more
                del self._watched[op_id]
                if now is not None:
                    self.metrics.settled(op_id, now)
        self.market_feed.update(ops)
        self.perp_feed.update(ops)

    def _status_candidates(self, ops: Sequence[SignedOp]) -> list[OpId]:
        """The operations submitted here whose status `ops` (just applied) may have changed.

        A certification (the version moved, or the driver's announce of no operations) may
        change any of them. Else replay re-applied exactly the tentative operations from the
        smallest key of `ops` on, and only a re-applied operation's outcome can change. Our own
        operations' keys grow with their seqs (each names the one before it), and `_watched`
        holds them in the order they were signed: so those affected are a tail of it. Checking
        every one after every batch cost O(unsettled) per gossip message, which under load,
        with finality behind, was a fifth of the node's time (py-spy, benchmarks/throughput.py
        at 4,000/s)."""
        watched, replica = self._watched, self.replica
        if not watched:
            return []
        if not ops or replica.version != self._status_version:
            self._status_version = replica.version
            return list(watched)
        height = replica.graph.height
        low = min((height[op.op_id], op.op_id) for op in ops)
        tail = []
        for op_id in reversed(watched):
            mine = height.get(op_id)
            if mine is not None and (mine, op_id) < low:
                break
            tail.append(op_id)
        tail.reverse()
        return tail

    def receive(self, ops: Sequence[SignedOp], source: PeerId = b"local") -> None:
        """Store, apply and announce operations that did not come through the peer (a node
        without a network, an imported file, tests). Raises `NotPersisted` if the store
        refused them (nothing is applied)."""
        if not self.persist_ops(ops, source):
            raise NotPersisted("the store refused the operations")
        self.announce(self.replica.receive_many(ops).accepted)

    def _balance_snapshot(self) -> dict[str, Any]:
        return {
            account: {token: {k: str(v) for k, v in parts.items()} for token, parts in tokens.items()}
            for account, tokens in self.replica.balances().items()
        }

    # -- the local participant's operations ----------------------------------------------------------

    def next_seq(self) -> int:
        return self.replica.graph.version_vector.get(self.address, 0) + 1

    def parents(self, own: OpId | None = None) -> list[OpId]:
        """The current heads, at most MAX_PARENTS, always with the node's own last operation:
        `own` when a batch signs several before any is applied, its last applied one if not."""
        graph = self.replica.graph
        applied = graph.chains.get(self.address, {}).get(self.next_seq() - 1, ())[:1]
        mine = [own] if own is not None else list(applied)
        others = sorted(head for head in graph.heads if head not in applied)
        return mine + others[-(MAX_PARENTS - len(mine)) :] if others else mine

    async def submit(
        self, kind: str, body: dict[str, Any], request_id: str | None = None,
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Sign, store, apply and gossip one operation of this participant: `submit_many` of
        one, its refusal raised.

        Returns ``{op_id, seq, status}``. A `request_id` already used returns the first answer
        if the request is the same (`kind` and `body` as asked), and raises
        `RequestIdConflict` if not. `prepare`, if given, completes the body once that check is
        passed (a market order's price from the book now: a retry must not take it again).
        Raises `RequestRejected` (nothing signed) when replay would give the operation no
        effect, `StorageUnavailable` (nothing kept, no seq used) when the store refuses the
        commit.
        """
        (result,) = await self.submit_many([Submission(kind, body, request_id, prepare)])
        if isinstance(result, Exception):
            raise result
        return result

    async def submit_many(self, items: Sequence[Submission]) -> list[dict[str, Any] | RequestRefused]:
        """Sign, store, apply and gossip a batch of this participant's operations: each is dry
        run after the ones before it (a batch may spend what an earlier item frees), those
        replay would take are signed with consecutive seqs, each naming the one before it, and
        all are stored in one commit (one fsync), then applied and gossiped together.

        Returns one result per item, in order: its receipt (as `submit`'s), or its refusal
        (`RequestRejected`, `RequestIdConflict`), which refuses that item alone. Nothing is
        signed before every item has been dry run. Raises `NotReady` or `StorageUnavailable`
        for the whole batch.
        """
        began = trio.current_time()
        async with self._lock:
            results: list[RequestRefused | OpId] = []
            drafts: list[tuple[SignedOp, str | None, bytes]] = []
            asked: dict[str, tuple[bytes, int]] = {}  # request id -> fingerprint, its item
            with self.replica.trial() as attempt:
                for submission in items:
                    try:
                        results.append(self._draft(submission, drafts, asked, attempt))
                    except (RequestRejected, RequestIdConflict) as exc:
                        results.append(exc)
            if drafts:  # a batch answered from request ids alone is answered even when not ready
                if not self.check_signer():
                    raise NotReady(self.learning())
                if (behind := self.behind()) is not None:
                    raise NotReady(behind)
                if self.storage_error is not None:
                    raise StorageUnavailable(self.storage_error)
                await self._publish(drafts, began)
            return [self._receipt(result) if isinstance(result, bytes) else result for result in results]

    async def _publish(self, drafts: Sequence[tuple[SignedOp, str | None, bytes]], began: float) -> None:
        """Sign the drafts of `submit_many`, store them in one commit, apply and gossip them."""
        ops = [sign(draft, self.key.private_key) for draft, _, _ in drafts]
        for op, (_, request_id, fingerprint) in zip(ops, drafts, strict=True):
            if request_id is not None:
                self._requests[op.op_id] = (request_id, fingerprint)
        try:
            if self.commit_off_loop:
                await self._commit_own(ops)
            # No checkpoint from the commit's return to the apply (`Peer.submit_many`
            # ingests before it awaits): a cancellation cannot leave a durable operation
            # unapplied, whose seq the next submit would sign again.
            if self.peer is not None:
                await self.peer.submit_many(ops)
                for op in ops:  # a Byzantine behaviour's extras see our op applied, its seq used
                    extras = self.behaviour.also_sign(self, op)
                    if extras:
                        await self.peer.submit_many(extras)
            else:
                self.receive(ops)
        except NotPersisted as exc:  # signed, but neither stored nor applied nor sent
            raise StorageUnavailable(self.storage_error or "the store refused the write") from exc
        finally:
            for op in ops:
                self._requests.pop(op.op_id, None)
                self._durable.discard(op.op_id)
        now = trio.current_time()
        for op in ops:
            self._watched[op.op_id] = "tentative"
            self.metrics.submitted(op.op_id, began, now)
        self.submitted += len(ops)

    def _draft(
        self, submission: Submission, drafts: list[tuple[SignedOp, str | None, bytes]],
        asked: dict[str, tuple[bytes, int]], attempt: Callable[[SignedOp], Reason | None],
    ) -> OpId:
        """One item of `submit_many`: the op id of a request id already answered, or that of
        its draft, dry run after the drafts before it and added to them. Raises its
        refusal."""
        kind, body, request_id = submission.kind, submission.body, submission.request_id
        fingerprint = request_fingerprint(kind, body) if request_id is not None else b""
        if request_id is not None:
            known = self.store.request(request_id)
            if known is None and request_id in asked:  # twice in one batch: the first one's op
                known = (drafts[asked[request_id][1]][0].op_id, asked[request_id][0])
            if known is not None:
                op_id, first = known
                if first is not None and first != fingerprint:
                    raise RequestIdConflict(
                        f"request id {request_id!r} was used for another request (op 0x{op_id.hex()})"
                    )
                return OpId(op_id)
        if submission.prepare is not None:
            body = submission.prepare(body)
        parents = self.parents(drafts[-1][0].op_id if drafts else None)
        draft = unsigned_op(self.replica.ctx, self.address, self.next_seq() + len(drafts), parents, kind, body)
        if len(draft.raw) > DEFAULT_LIMITS.max_op_bytes:
            raise RequestRejected(Reason.BAD_BODY, "the operation is larger than the limit")
        reason = attempt(draft)  # the dry run needs no signature: none is made yet
        if reason is not None and not self.behaviour.signs_rejected:
            raise RequestRejected(reason)
        if request_id is not None:
            asked[request_id] = (fingerprint, len(drafts))
        drafts.append((draft, request_id, fingerprint))
        return draft.op_id

    def _receipt(self, op_id: OpId) -> dict[str, Any]:
        op = self.replica.graph.get(op_id)
        return {
            "op_id": "0x" + op_id.hex(),
            "seq": op.seq if op is not None else None,
            "status": self.replica.status(op_id),
        }

    # -- reading -------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        replica = self.replica
        now = trio.current_time()
        uptime = now - self.started if self.started is not None else 0.0
        reasons = Counter(str(reason) for reason in replica.outcome.values() if reason is not None)
        reasons.update(replica.pruned_outcomes)
        stats: dict[str, Any] = {
            "address": "0x" + self.address.hex(),
            "channel": "0x" + self.genesis.channel_id.hex(),
            "operations": len(replica.graph),
            "final": len(replica.epoch_of) + replica.graph.pruned,
            "in_memory": len(replica.graph.ops),
            "pending": len(replica.graph.pending),
            "rejected": sum(reasons.values()),
            "rejected_reasons": dict(sorted(reasons.items())),
            "heads": len(replica.graph.heads),
            "version": replica.version,
            "state_hash": "0x" + replica.state_hash().hex(),
            "payout_root": "0x" + replica.payout_root().hex(),
            "submitted": self.submitted,
            "uptime_s": round(uptime, 3),
            "ops_per_s": round(self._ops_rate.rate(now, len(replica.graph)), 1),  # the last 10 s
            "ops_per_s_average": round(len(replica.graph) / uptime, 1) if uptime > 0 else 0.0,  # since start
            "latency": self.metrics.summary(),
            "equivocations": len(replica.graph.evidence),
            "signing": "ready" if self.signer.seq_known else "learning own seq from peers",
            "voting_from": self.signer.vote_from,
        }
        if self.storage_error is not None:
            stats["storage_error"] = self.storage_error
        if self.peer is not None:
            peer_stats = self.peer.statistics()
            stats["peers"] = len(self.peer.transport.connected_peers())
            stats["sync_sessions"] = peer_stats.sync_sessions
            stats["gossip_rejected"] = peer_stats.gossip_rejected
            for name in ("gossip_batches_received", "gossip_ops_received", "gossip_bytes_received",
                         "sync_messages_received", "sync_ops_received", "sync_bytes_received"):
                stats[name] = getattr(peer_stats, name)
            stats["sync_ticks_skipped"] = peer_stats.sync_ticks_skipped
        if self.driver is not None:
            stats["certified"] = self.driver.certificates.versions.max()
            stats["catchup"] = dict(self.driver.catchup_counts)
            stats["consensus_gossip"] = dict(self.driver.gossip_counts)  # penalties and bans: peers()
            stats["consensus"] = self.driver.progress()
        if self.chain_worker is not None:
            stats["chain"] = asdict(self.chain_worker.status)
        return stats

    def peers(self) -> dict[str, Any]:
        if self.peer is None:
            return {"local_id": None, "connected": [], "sync_sessions": [], "banned": [], "penalties": {}}
        peer_stats = self.peer.statistics()
        return {
            "local_id": peer_name(self.peer.local_id),
            "connected": sorted(peer_name(p) for p in self.peer.transport.connected_peers()),
            "sync_sessions": sorted(peer_name(p) for p in self.peer.sessions()),
            "banned": [peer_name(p) for p in peer_stats.banned],
            "penalties": peer_stats.penalties,
            "gossip": health() if (health := getattr(self.peer.transport, "gossip_health", None)) else None,
        }


    def balances(self) -> dict[str, dict[str, dict[str, int]]]:
        """Free, held (by open orders), locked and withdrawn (cumulative) e9 per participant (0x hex)
        and token."""
        return self.replica.balances()

    def operation(self, op_id: bytes) -> dict[str, Any]:
        """The status of an operation, with its author, seq and kind when this node holds it."""
        status = self.replica.status(OpId(op_id))
        op = self.replica.graph.get(OpId(op_id))
        result: dict[str, Any] = {"op_id": "0x" + op_id.hex(), "status": status}
        if op is not None:
            result.update({"author": "0x" + op.author.hex(), "seq": op.seq, "kind": op.kind})
        return result

    def heads(self) -> dict[str, Any]:
        graph = self.replica.graph
        return {
            "heads": sorted("0x" + head.hex() for head in graph.heads),
            "version_vector": {"0x" + a.hex(): seq for a, seq in sorted(graph.version_vector.items())},
        }

    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints this node applied, and whether each is certified."""
        certified = self.driver.certificates if self.driver is not None else {}
        return [
            {"version": cut.version, "time": cut.time, "heads": len(cut.heads), "deposits": len(cut.deposits),
             "certified": cut.version in certified}
            for cut in self.replica.cuts
        ]

    def certificate(self, version: int | None = None) -> Certificate | None:
        """The certificate of checkpoint `version` (the newest if None), if this node holds it."""
        if self.driver is None:
            return None
        return self.driver.latest_certificate() if version is None else self.driver.certificates.get(version)

    def start_exit(self) -> dict[str, Any]:
        if self.exits is None:
            raise ExitRefused(NO_CHAIN, "this node has no chain configured ([chain] rpc in node.toml), so it "
                                        "cannot exit from here; use `parley exit` with the certificate files")
        return self.exits.start()

    def exit_status(self) -> dict[str, Any]:
        if self.exits is None:
            from channel.runtime.exits import ExitProgress

            return {**ExitProgress().json(), "chain": False}
        return {**self.exits.status, "chain": True}

    def evidence(self) -> list[dict[str, Any]]:
        """Misbehaviour this node holds proof of: equivocations, and what consensus recorded."""
        found = [{"kind": "equivocation", **evidence.describe()} for evidence in self.replica.evidence()]
        for kind, offender, _data in self.store.evidence():
            found.append({"kind": kind, "offender": "0x" + offender.hex()})
        return found

    def missing_parents(self) -> int:
        """How many distinct operations the pending buffer waits for."""
        return self.replica.graph.pending.missing_count()

    # -- trading -------------------------------------------------------------------------------------

    def _market(self, symbol: str) -> Market:
        market = self.genesis.market(symbol)
        if market is None:
            raise UnknownMarket(symbol)
        return market

    def _taker_side(self, record: FillRecord) -> str:
        return trading.taker_side(self.replica, record.fill)

    def markets(self) -> list[dict[str, Any]]:
        return [trading.market_json(market) for market in self.genesis.markets]

    def order_book(self, market: str, depth: int = 50, level: int = 2) -> dict[str, Any]:
        self._market(market)
        book = self.replica.ledger.book(market)
        return trading.book_json(
            market, book.bids(), book.asks(), depth=depth, level=level, me=self.address, version=self.replica.version
        )

    def open_orders(self, market: str | None = None, account: Address | None = None) -> list[dict[str, Any]]:
        if market is not None:
            self._market(market)
        orders = sorted(self.replica.open_orders(account, market), key=lambda order: order.placed)
        return [trading.resting_json(order, self.address) for order in orders]

    def order(self, order_id: bytes) -> dict[str, Any] | None:
        info = self.replica.order_info(OpId(order_id))
        if info is None:
            return None
        return trading.order_json(info, [self._taker_side(record) for record in info.fills])

    def my_trades(self, market: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if market is not None:
            self._market(market)
        me = self.address
        mine = self.replica.last_fill_records(
            lambda fill: trading.involves(fill, me) and market in (None, fill.market), limit
        )
        return [trading.own_fill_json(record, self._taker_side(record), me) for record in mine]

    def trades(self, market: str, limit: int = 100) -> list[dict[str, Any]]:
        self._market(market)
        found = self.replica.last_fill_records(lambda fill: fill.market == market, limit)
        return [trading.fill_json(record, self._taker_side(record)) for record in found]

    def sweep_price(self, market: str, side: str, qty: int) -> int | None:
        self._market(market)
        book = self.replica.ledger.book(market)
        return trading.sweep_price(book.asks() if side == BUY else book.bids(), qty)

    # -- perpetual markets (channel.runtime.perps) ---------------------------------------------

    def positions(self, account: Address | None = None) -> list[dict[str, Any]]:
        return perps.positions_json(self.replica.ledger, account)

    def account(self, account: Address) -> dict[str, Any]:
        return perps.account_json(self.replica.ledger, account)

    def mark_prices(self) -> list[dict[str, Any]]:
        return perps.mark_prices_json(self.replica.ledger)

    def funding_history(self, market: str, limit: int = 100) -> list[dict[str, Any]]:
        self._market(market)
        return perps.funding_history_json(self.replica.ledger, market, limit)

    def funding_payments(self, account: Address, market: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if market is not None:
            self._market(market)
        return perps.funding_payments_json(self.replica.ledger, account, market, limit)

    def liquidatable(self) -> list[dict[str, Any]]:
        return perps.liquidatable_json(self.replica.ledger)

    def liquidation(self, op_id: bytes) -> dict[str, Any] | None:
        return perps.liquidation_json(op_id, self.replica.ledger)


def request_fingerprint(kind: str, body: dict[str, Any]) -> bytes:
    """What a client asked, as 32 bytes: the kind and the body before `Node.submit`'s
    `prepare` (canonical CBOR, so key order does not matter)."""
    return keccak256(cbor.encode([kind, body]))


def peer_name(peer: PeerId) -> str:
    """A peer id as libp2p prints it (base58 of its multihash)."""
    return str(ID(peer).to_base58())


# -- the runtime -------------------------------------------------------------------------------------


def api_token(data_dir: Path) -> str:
    """The bearer token of this node's API, created on first use (mode 0600)."""
    path = data_dir / "api-token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secrets.token_urlsafe(32).encode())
    return path.read_text().strip()


class Behaviour(Protocol):
    """How this node's own submissions deviate from the protocol. A production node is always
    `HONEST`; `simulations.byzantine` builds the others for demos and simulations, and no
    configuration file or command-line flag of `parley` can select one."""

    @property
    def signs_rejected(self) -> bool:
        """Sign and gossip an operation even when replay would give it no effect."""
        ...

    def also_sign(self, node: Node, op: SignedOp) -> Sequence[SignedOp]:
        """Further operations to sign and gossip right after our `op` (an equivocating twin)."""
        ...


@dataclass(frozen=True, slots=True)
class Honest:
    signs_rejected: bool = False

    def also_sign(self, node: Node, op: SignedOp) -> Sequence[SignedOp]:
        return ()


HONEST: Behaviour = Honest()


class ApiServer(Protocol):
    """Serves the local API for `node` with bearer `token` on host:port until cancelled, and
    reports its URL through `task_status` (``nursery.start``)."""

    async def __call__(
        self, node: Node, token: str, host: str = ..., port: int = ..., *, task_status: Any = ...
    ) -> None: ...


def open_store(config: NodeConfig) -> Store:
    return Store(config.data_dir / STORE_FILE, max_bytes=config.store_max_bytes)


@asynccontextmanager
async def open_node(node: Node, transport: Transport, peer_config: PeerConfig | None = None) -> AsyncIterator[Node]:
    """A restored node running its peer over `transport` (the API is separate)."""
    async with open_peer(
        node.replica, transport, peer_config or NODE_PEER_CONFIG,
        persist=node.persist_ops, announce=node.announce, on_expired=node.forget_expired,
    ) as peer:
        node.peer = peer
        node.started = trio.current_time()
        peer.sync_now()
        yield node


def host_config(config: NodeConfig, genesis: Genesis, key: keystore.Key, password: str) -> HostConfig:
    """The libp2p host of this node: its encrypted identity, and admission of participants
    only, with this participant's signed binding of its peer id."""
    try:
        identity = p2p_identity.load_or_create(config.data_dir, password)
    except p2p_identity.IdentityError as exc:
        raise UserError(str(exc)) from exc
    peer_id = ID.from_pubkey(identity.public_key).to_bytes()
    ctx = genesis.context()
    return HostConfig(
        identity=identity,
        listen_addrs=config.p2p_listen,
        bootstrap=bootstrap_from_genesis(genesis),
        admission=Admission(ctx, sign_binding(ctx, key.private_key, peer_id)),
    )


async def run_node(
    config: NodeConfig,
    password: str,
    serve_api: ApiServer,
    driver_config: DriverConfig | None = None,
    *,
    fresh_channel: bool = False,
    behaviour: Behaviour | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until SIGINT/SIGTERM (or cancellation). Reports the API URL when serving.

    `serve_api` is the local API (`channel.api.server.serve_api`), given by the caller: the
    runtime does not import the layer above it. `behaviour` is for simulations only (see
    `Behaviour`); nothing a user can configure reaches it."""
    behaviour = behaviour or HONEST
    genesis = load_genesis(config.genesis)
    key = keystore.load(config.keystore, password)
    store = open_store(config)  # first: it holds the data directory's lock
    try:
        node = Node.restore(genesis, key, store, fresh_channel=fresh_channel, keep_epochs=config.keep_epochs,
                            snapshot_every=config.snapshot_every)
        node.behaviour = behaviour
        await _serve(node, config, password, serve_api, driver_config, task_status)
    finally:
        store.close()


async def _serve(
    node: Node,
    config: NodeConfig,
    password: str,
    serve_api: ApiServer,
    driver_config: DriverConfig | None,
    task_status: Any,
) -> None:
    from channel.runtime.chain_worker import ChainWorker
    from channel.runtime.driver import ConsensusDriver, DriverConfig
    from channel.runtime.exits import NodeExit, chain_client

    token = api_token(config.data_dir)
    libp2p_config = host_config(config, node.genesis, node.key, password)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            trio.open_nursery() as nursery,
            open_libp2p_transport(libp2p_config) as transport,
            open_node(node, transport),
        ):
            node.driver = ConsensusDriver(
                node, transport, driver_config or DriverConfig(interval=config.finality_interval)
            )
            await nursery.start(node.driver.run)
            nursery.start_soon(node.learn_signer)
            nursery.start_soon(node.watch_storage)
            if config.chain is not None:
                node.chain_worker = ChainWorker(node, node.driver, config.chain, config.data_dir)
                await nursery.start(node.chain_worker.run)
                rpc, private_key, genesis = config.chain.rpc, node.key.private_key, node.genesis
                node.exits = NodeExit(genesis, node.address, node.driver,
                                      lambda: chain_client(rpc, private_key, genesis))
                nursery.start_soon(node.exits.run)
            url = await nursery.start(serve_api, node, token, config.api_host, config.api_port)
            info = {
                "url": url, "peer_id": peer_name(transport.local_id), "p2p": transport.listen_addrs(),
                "pid": os.getpid(),
            }
            write_atomic(config.data_dir / "api.json", json.dumps(info).encode(), mode=0o644)
            log.info("node 0x%s serving %s", node.address.hex(), url)
            if not node.signer.seq_known:
                log.warning("%s", node.learning())
            task_status.started(url)
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()


# -- repair --------------------------------------------------------------------------------------------


def _readable_store(config: NodeConfig) -> Store | None:
    """The store, if SQLite can read it and every page of its operations."""
    try:
        store = open_store(config)
    except StoreDamaged:
        return None
    try:
        for _ in store.load_ops():
            pass
    except StoreDamaged:
        store.close()
        return None
    return store


def repair_store(config: NodeConfig) -> dict[str, Any]:
    """Make a damaged store usable again: drop every stored operation, decision, certificate
    and signing record that fails its checks (or, if SQLite cannot read the file at all, move
    it aside and start an empty one), and make the node learn its own seq and its vote floor
    from its peers again, since what was dropped may have been its own. Returns what it did."""
    from channel.core.consensus import Decision, decode_message, decode_signing_record

    genesis = load_genesis(config.genesis)
    path = config.data_dir / STORE_FILE
    report: dict[str, Any] = {"store": str(path), "moved_aside": None, "operations": 0, "decisions": 0,
                              "certificates": 0, "signed": 0}
    store = _readable_store(config)
    if store is None:
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                source.rename(aside.with_name(aside.name + suffix))
        report["moved_aside"] = str(aside)
        open_store(config).close()  # a new, empty store: the node learns everything again
        return report
    try:
        replica = Replica(genesis)
        store.clear_archived()  # rebuilt by the next start's compaction, from what repair keeps
        report["snapshots"] = snapshots.forget_snapshots(store)  # the next start replays everything
        ops, bad = verify_stored_ops(store, replica.ctx)
        report["operations"] = store.delete_ops(position for position, _ in bad)
        replica.receive_many(ops)
        dropped: list[int] = []
        for version, data in store.decisions():
            try:
                decision = decode_message(data)
                if dropped or not isinstance(decision, Decision) or decision.height != version:
                    raise InvalidInput("not the decision of its version")
                replica.certify(decision.value.cut())
            except InvalidInput:
                dropped.append(version)  # and every later one: they build on it
        store.delete_rows("decisions", "version", dropped)
        report["decisions"] = len(dropped)
        bad_certificates = []
        for version, data in store.certificates():
            try:
                certificate = Certificate.decode(data)
                certificate.verify(genesis)
                if certificate.version != version or version in dropped:
                    raise InvalidInput("not the certificate of its version")
            except InvalidInput:
                bad_certificates.append(version)
        store.delete_rows("certificates", "version", bad_certificates)
        report["certificates"] = len(bad_certificates)
        bad_signed = []
        for position, record in store.signed_rows():
            try:
                decode_signing_record(record)
            except InvalidInput:
                bad_signed.append(position)
        store.delete_rows("signed", "position", bad_signed)
        report["signed"] = len(bad_signed)
        if report["operations"] or dropped or bad_certificates or bad_signed:
            SignerState.forget(store)
    finally:
        store.close()
    return report
