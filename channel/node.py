"""The node: one participant's replica, kept durable, networked, and served to local clients.

``parley node run --config node.toml`` calls `run_node`, which opens one trio nursery holding
the libp2p transport, the `p2p.peer.Peer` (gossip and sync), and the local API, and stops all
of them cleanly on SIGINT or SIGTERM.

Invariants:
- write-ahead: every operation is appended to the SQLite store (fsync) before the replica
  applies it (the peer's ``before_apply`` hook), and an operation this node signs is stored
  before it is applied, published or acknowledged. A restart replays the store into a fresh
  replica, so no acknowledged operation is ever lost;
- one signer: `Node.submit` holds a lock from choosing the seq to applying the operation, and
  the next seq is derived from the operations in the graph, so the node never signs two
  operations with one seq, not even across a crash;
- a client request that replay would reject (insufficient balance, a bad body, a role that may
  not) is refused before signing, with the reason, and consumes no seq.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from channel import keystore
from channel.config import NodeConfig
from channel.console import read_password
from channel.errors import ChannelError, UserError
from channel.genesis_file import load_genesis
from channel.keystore import write_atomic
from channel.store import Store

if TYPE_CHECKING:
    from channel.finality import Finality, FinalityConfig
    from channel.onchain import OnChain
from crdt.genesis import Genesis
from crdt.ledger import Reason
from crdt.ops import DEFAULT_LIMITS, SignedOp, decode_op, sign_op
from crdt.replica import Replica
from crdt.types import OpId
from p2p.peer import Peer, PeerConfig, open_peer
from p2p.transport import PeerId, Transport

log = logging.getLogger(__name__)

MAX_PARENTS = 16
# Status every half second: a gossip loss is repaired within two rounds, and a Status is a
# version vector, cheap next to the operations it saves from waiting.
NODE_PEER_CONFIG = PeerConfig(sync_interval=0.5)
SUBSCRIBER_BUFFER = 1024


class RequestRejected(ChannelError):
    """A client request that replay would give no effect; nothing was signed."""

    def __init__(self, reason: Reason | str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = str(reason)


@dataclass(slots=True)
class Subscriber:
    topic: str
    send: trio.MemorySendChannel[dict[str, Any]]
    dropped: bool = False


@dataclass(slots=True)
class EventHub:
    """Fan-out of node events to API subscribers. A subscriber that cannot keep up is dropped
    (its channel closes) instead of slowing the node down."""

    subscribers: list[Subscriber] = field(default_factory=list)

    def open(self, topic: str) -> tuple[Subscriber, trio.MemoryReceiveChannel[dict[str, Any]]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        subscriber = Subscriber(topic, send)
        self.subscribers.append(subscriber)
        return subscriber, receive

    def close(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        subscriber.send.close()

    def wants(self, topic: str) -> bool:
        return any(s.topic == topic for s in self.subscribers)

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.topic != topic:
                continue
            try:
                subscriber.send.send_nowait(event)
            except trio.WouldBlock:
                subscriber.dropped = True
                self.close(subscriber)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.close(subscriber)


class Node:
    def __init__(self, genesis: Genesis, key: keystore.Key, store: Store, replica: Replica) -> None:
        if genesis.participant(key.address) is None:
            raise UserError(f"key 0x{key.address.hex()} is not a participant of this channel")
        self.genesis = genesis
        self.key = key
        self.address = key.address
        self.store = store
        self.replica = replica
        self.events = EventHub()
        self.peer: Peer | None = None
        self.finality: Finality | None = None
        self.onchain: OnChain | None = None
        self.started = time.monotonic()
        self._lock = trio.Lock()
        self._watched: dict[OpId, str] = {}  # op ids submitted here -> last status sent
        self._balances = self._balance_snapshot()
        self.submitted = 0
        self.byzantine: tuple[str, ...] = ()

    # -- restoring and persisting --------------------------------------------------------------------

    @classmethod
    def restore(cls, genesis: Genesis, key: keystore.Key, store: Store) -> Node:
        """A node whose replica holds everything in the store (signatures were checked before
        the operations were stored, so they are not checked again)."""
        from channel.finality import restore_decisions

        replica = Replica(genesis)
        ops = [decode_op(raw, replica.ctx, verify=False) for raw in store.load_ops()]
        replica.receive_many(ops)
        restore_decisions(replica, store.decisions())
        return cls(genesis, key, store, replica)

    def before_apply(self, ops: Sequence[SignedOp], source: PeerId) -> None:
        own = self.peer is None or source == self.peer.local_id  # signed here: fsync before it leaves
        self.store.append_ops(((op.op_id, op.raw) for op in ops), source, fsync=own)

    def after_apply(self, ops: Sequence[SignedOp]) -> None:
        if ops and self.finality is not None:
            self.finality.data_arrived()
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
        for op_id, last in list(self._watched.items()):
            status = self.replica.status(op_id)
            if status != last:
                self._watched[op_id] = status
                events.publish("status", {"op_id": "0x" + op_id.hex(), "status": status})

    def receive(self, ops: Sequence[SignedOp], source: PeerId = b"local") -> None:
        """Store, apply and announce operations that did not come through the peer (a node
        without a network, an imported file, tests)."""
        self.before_apply(ops, source)
        self.after_apply(self.replica.receive_many(ops).accepted)

    def _balance_snapshot(self) -> dict[str, Any]:
        return {
            account: {token: {k: str(v) for k, v in parts.items()} for token, parts in tokens.items()}
            for account, tokens in self.replica.balances().items()
        }

    # -- the local participant's operations ----------------------------------------------------------

    def next_seq(self) -> int:
        return self.replica.graph.version_vector.get(self.address, 0) + 1

    def parents(self) -> list[OpId]:
        """The current heads, at most MAX_PARENTS, always with the node's own last operation."""
        graph = self.replica.graph
        own = graph.chains.get(self.address, {}).get(self.next_seq() - 1, [])[:1]
        others = sorted(head for head in graph.heads if head not in own)
        return own + others[-(MAX_PARENTS - len(own)) :] if others else list(own)

    async def submit(self, kind: str, body: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
        """Sign, store, apply and gossip one operation of this participant.

        Returns ``{op_id, seq, status}``. Raises `RequestRejected` (nothing signed) when replay
        would give the operation no effect.
        """
        async with self._lock:
            if request_id is not None:
                known = self.store.request(request_id)
                if known is not None:
                    return self._receipt(OpId(known))
            op = sign_op(self.replica.ctx, self.key.private_key, self.next_seq(), self.parents(), kind, body)
            if len(op.raw) > DEFAULT_LIMITS.max_op_bytes:
                raise RequestRejected(Reason.BAD_BODY, "the operation is larger than the limit")
            reason = self.replica.dry_run(op)
            if reason is not None and "invalid" not in self.byzantine:
                raise RequestRejected(reason)
            self._watched[op.op_id] = "tentative"
            if self.peer is not None:
                await self.peer.submit(op)
                if "equivocate" in self.byzantine:
                    await self.peer.submit(self._twin(op))
            else:
                self.receive([op])
            if request_id is not None:
                self.store.record_request(request_id, op.op_id)
            self.submitted += 1
            return self._receipt(op.op_id)

    def _twin(self, op: SignedOp) -> SignedOp:
        """A second operation with `op`'s seq and parents (Byzantine demos only): equivocation."""
        body = dict(op.body)
        body["amount"] = body.get("amount", 0) + 1
        return sign_op(self.replica.ctx, self.key.private_key, op.seq, op.parents, op.kind, body)

    def _receipt(self, op_id: OpId) -> dict[str, Any]:
        op = self.replica.graph.ops.get(op_id)
        return {
            "op_id": "0x" + op_id.hex(),
            "seq": op.seq if op is not None else None,
            "status": self.replica.status(op_id),
        }

    # -- reading -------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        replica = self.replica
        uptime = time.monotonic() - self.started
        reasons = Counter(str(reason) for reason in replica.outcome.values() if reason is not None)
        stats: dict[str, Any] = {
            "address": "0x" + self.address.hex(),
            "channel": "0x" + self.genesis.channel_id.hex(),
            "operations": len(replica.graph),
            "pending": len(replica.graph.pending),
            "rejected": sum(reasons.values()),
            "rejected_reasons": dict(sorted(reasons.items())),
            "heads": len(replica.graph.heads),
            "version": replica.version,
            "state_hash": "0x" + replica.state_hash().hex(),
            "payout_root": "0x" + replica.payout_root().hex(),
            "submitted": self.submitted,
            "uptime_s": round(uptime, 3),
            "ops_per_s": round(len(replica.graph) / uptime, 1) if uptime > 0 else 0.0,
            "equivocations": len(replica.graph.evidence),
        }
        if self.peer is not None:
            peer_stats = self.peer.statistics()
            stats["peers"] = len(self.peer.transport.connected_peers())
            stats["sync_sessions"] = peer_stats.sync_sessions
            stats["gossip_rejected"] = peer_stats.gossip_rejected
            stats["gossip_ops_received"] = peer_stats.gossip_ops_received
            stats["sync_ops_received"] = peer_stats.sync_ops_received
        if self.finality is not None:
            stats["certified"] = max(self.finality.certificates, default=0)
            stats["catchup"] = dict(self.finality.catchup_counts)
        if self.onchain is not None:
            chain = self.onchain.status
            stats["chain"] = {
                "status": chain.status, "settled_version": chain.settled_version,
                "proposals_sent": chain.proposals_sent, "challenges_sent": chain.challenges_sent,
                "deposits_seen": chain.deposits_seen, "error": chain.error,
            }
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
        }


def peer_name(peer: PeerId) -> str:
    """A peer id as libp2p prints it (base58 of its multihash)."""
    from libp2p.peer.id import ID

    return str(ID(peer).to_base58())


# -- the runtime -------------------------------------------------------------------------------------


def api_token(data_dir: Path) -> str:
    """The bearer token of this node's API, created on first use (mode 0600)."""
    path = data_dir / "api-token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secrets.token_urlsafe(32).encode())
    return path.read_text().strip()


@asynccontextmanager
async def open_node(
    config: NodeConfig, transport: Transport, peer_config: PeerConfig | None = None
) -> AsyncIterator[Node]:
    """A restored node running its peer over `transport` (the API is separate)."""
    genesis = load_genesis(config.genesis)
    key = keystore.load(config.keystore, read_password(config.password_file, confirm=False))
    store = Store(config.data_dir / "node.sqlite")
    try:
        node = Node.restore(genesis, key, store)
        node.byzantine = config.byzantine
        async with open_peer(
            node.replica, transport, peer_config or NODE_PEER_CONFIG,
            before_apply=node.before_apply, after_apply=node.after_apply,
        ) as peer:
            node.peer = peer
            peer.sync_now()
            yield node
    finally:
        store.close()


async def run_node(
    config: NodeConfig, finality_config: FinalityConfig | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a node until SIGINT/SIGTERM (or cancellation). Reports the API URL when serving."""
    from channel.api import serve_api
    from channel.finality import Finality, FinalityConfig
    from channel.onchain import OnChain
    from p2p.host import HostConfig, bootstrap_from_genesis, open_libp2p_transport

    genesis = load_genesis(config.genesis)
    token = api_token(config.data_dir)
    host_config = HostConfig(
        data_dir=config.data_dir, listen_addrs=config.p2p_listen, bootstrap=bootstrap_from_genesis(genesis)
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            trio.open_nursery() as nursery,
            open_libp2p_transport(host_config) as transport,
            open_node(config, transport) as node,
        ):
            node.finality = Finality(
                node, transport, finality_config or FinalityConfig(interval=config.finality_interval)
            )
            await nursery.start(node.finality.run)
            if config.chain is not None:
                node.onchain = OnChain(node, node.finality, config.chain, config.data_dir)
                await nursery.start(node.onchain.run)
            url = await nursery.start(serve_api, node, token, config.api_host, config.api_port)
            info = {
                "url": url, "peer_id": peer_name(transport.local_id), "p2p": transport.listen_addrs(),
                "pid": os.getpid(),
            }
            write_atomic(config.data_dir / "api.json", json.dumps(info).encode(), mode=0o644)
            log.info("node 0x%s serving %s", node.address.hex(), url)
            task_status.started(url)
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()


