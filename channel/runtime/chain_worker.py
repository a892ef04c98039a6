"""The node's side of the chain: deposits in, certified checkpoints out, stale ones beaten.

One worker thread owns everything that talks to the chain (web3 is blocking, and the chain
watcher's SQLite cursor belongs to the thread that opened it). Before it starts, it checks that
the node's account can pay for a challenge and a finalize, and the node refuses to start
otherwise (DESIGN.md: disputes must never fail for lack of gas). Then it loops every
`poll_interval`, and every decision is taken again from the chain's state at every poll
(`channel.core.settlement_policy`), never only when an event arrives:
- the chain watcher (`settlement.watcher.ChainWatcher`, cursor in ``DATA_DIR/chain.sqlite``)
  reads confirmed events; the whole set of confirmed deposits, each with its block hash, goes to
  `ConsensusDriver.set_confirmed_deposits`, so a deposit a reorg removed (or gave its nonce to another
  deposit) leaves the set and is never credited, and consensus agrees on (nonce, block);
- the watchtower challenges a checkpoint in dispute that is older than the newest certificate
  this node holds, while its window is open, retrying with backoff, and raises an alert
  (`ChainStatus.alert`, ``parley stats``, the ``parley_chain_alert`` metric) when it cannot pay;
- certified checkpoints whose version is a multiple of `settle_every` are proposed on-chain by a
  designated submitter: participant ``(version // settle_every) % n`` in genesis order first,
  the next one `fallback_delay` seconds later if the chain still shows nothing as new, and so on.
  Before proposing, every deposit the checkpoint credits beyond the finalised one is compared
  with the contract's record of that nonce: a checkpoint that credits a deposit the chain no
  longer has is never sent (and the node alerts);
- a periodic checkpoint whose window has passed is finalised by the same rota (that unlocks its
  withdrawals; the channel stays open), and a closing channel by anyone.

Threads. The worker thread never reads the driver's or the node's mutable state: the driver
(on the trio thread) hands each certificate it certifies over a queue (`ConsensusDriver.on_certified`),
a frozen `Certificate`, and the worker keeps the newest one itself (seeded, on the trio thread,
with the driver's newest when the worker is made); what the worker needs from the driver is
asked on the trio thread (`trio.from_thread.run_sync`); what the API reads, `ChainWorker.status`,
is a copy published under a lock after each poll, never the object the worker changes. A poll
that fails in an unexpected way (a bug, not an RPC error) is logged with its traceback and
retried at the next poll: it never ends the node.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio
from eth_account import Account

from channel.core.settlement_policy import ChainView, finalize_move, rank, settle_move, watchtower_move
from channel.errors import UserError
from channel.runtime.config import ChainConfig as ChainConfig  # defined with the file it is read from
from channel.runtime.keystore import Key
from crdt.certificate import Certificate
from crdt.genesis import Genesis
from crdt.ledger import Deposit
from crdt.types import Address
from crdt.units import from_e9
from settlement.chain import RpcChain
from settlement.client import FINALIZE_GAS, AdjudicatorClient, Sender
from settlement.errors import ContractReverted, InsufficientGas, SettlementError
from settlement.watcher import ChainWatcher

log = logging.getLogger(__name__)

CHALLENGE_GAS = 300_000  # a challenge with a handful of signers is about 220,000
LOST_RACE = frozenset({"VersionNotNewer", "DisputeWindowClosed", "ChannelConcluded", "NoSettlementPending",
                       "SettlementPending", "ChannelClosing", "DisputeWindowOpen"})


@dataclass(frozen=True, slots=True)
class Backoff:
    """When a failed move may be tried again (seconds of any monotonic clock)."""

    next_at: float = 0.0
    delay: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float, first: float = 1.0, cap: float = 60.0) -> Backoff:
        delay = min(cap, max(first, 2 * self.delay))
        return Backoff(now + delay, delay)


@dataclass(slots=True)
class ChainStatus:
    """What the node last saw and did on-chain (the worker thread's; the API reads a copy,
    `ChainWorker.status`)."""

    status: str = "unknown"
    settled_version: int = 0  # the checkpoint in dispute, or else the finalised one
    finalized_version: int = 0
    proposals_sent: int = 0
    challenges_sent: int = 0
    finalizations_sent: int = 0
    deposits_seen: int = 0
    deposits_removed: int = 0
    error: str = ""  # the last failure of a poll (RPC errors: retried)
    alert: str = ""  # what needs an operator: no gas for a challenge, a reorged credited deposit
    alerts: int = 0


@dataclass(slots=True)
class _Pending:
    """A certified checkpoint waiting for this node's turn to settle it."""

    certificate: Certificate
    turn_at: float  # monotonic


@dataclass(slots=True)
class _Moves:
    backoff: dict[str, Backoff] = field(default_factory=dict)

    def due(self, key: str, now: float) -> bool:
        return self.backoff.get(key, Backoff()).due(now)

    def failed(self, key: str, now: float) -> None:
        self.backoff[key] = self.backoff.get(key, Backoff()).failed(now)

    def done(self, key: str) -> None:
        self.backoff.pop(key, None)


class ChainHost(Protocol):
    """What the worker needs of its node: who it is."""

    @property
    def genesis(self) -> Genesis: ...
    @property
    def key(self) -> Key: ...
    @property
    def address(self) -> Address: ...


class Certifier(Protocol):
    """What the worker needs of the consensus driver. These run on the trio thread only: at
    construction, or through ``trio.from_thread``; certificates reach the worker thread as
    values, through `on_certified` and a queue."""

    @property
    def on_certified(self) -> list[Callable[[Certificate], None]]: ...

    def latest_certificate(self) -> Certificate | None: ...
    def set_confirmed_deposits(self, deposits: list[Deposit]) -> None: ...
    def credited_deposits(self, first: int, last: int) -> list[Deposit]: ...


class ChainWorker:
    def __init__(self, node: ChainHost, driver: Certifier, config: ChainConfig, data_dir: Path) -> None:
        self.node = node
        self.driver = driver
        self.config = config
        self.db_path = data_dir / "chain.sqlite"
        self.genesis = node.genesis
        self._status = ChainStatus()  # the worker thread's own
        self._status_lock = threading.Lock()
        self._published = dataclasses.replace(self._status)
        self._certificates: queue.Queue[Certificate] = queue.Queue()
        # the newest certificate this node holds, as far as the worker thread knows: read here,
        # on the trio thread, then kept up to date from the queue (never from the driver's dicts)
        self._newest: Certificate | None = driver.latest_certificate()
        self._stop = threading.Event()
        self._waiting: dict[int, _Pending] = {}
        self._moves = _Moves()
        self._alerts: list[str] = []  # this poll's
        self._gas_alerts: dict[str, str] = {}  # move -> why it could not be paid, while it is wanted
        driver.on_certified.append(self._certificates.put)

    @property
    def status(self) -> ChainStatus:
        """A copy of the worker's status as of its last poll (the worker never changes it)."""
        with self._status_lock:
            return self._published

    def _publish(self) -> None:
        snapshot = dataclasses.replace(self._status)
        with self._status_lock:
            self._published = snapshot

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        chain, client = await trio.to_thread.run_sync(self._connect)
        task_status.started()
        try:
            # (trio-typing's stubs, pulled in by libp2p, predate abandon_on_cancel)
            await trio.to_thread.run_sync(self._loop, chain, client, abandon_on_cancel=True)  # type: ignore[call-arg]
        finally:
            self._stop.set()

    def _connect(self) -> tuple[RpcChain, AdjudicatorClient]:
        """The chain and the client; `UserError` if the account cannot carry a dispute."""
        try:
            chain = RpcChain(self.config.rpc)
            client = AdjudicatorClient(
                Sender(chain, Account.from_key(self.node.key.private_key)), "0x" + self.genesis.adjudicator.hex()
            )
            client.sender.ensure_can_pay(CHALLENGE_GAS + FINALIZE_GAS, what="a challenge and a finalize")
        except InsufficientGas as exc:
            raise UserError(f"the node's account cannot pay for a dispute, so it will not start: {exc}") from exc
        except SettlementError as exc:
            raise UserError(f"cannot use the chain at {self.config.rpc}: {exc}") from exc
        return chain, client

    # -- the worker thread ---------------------------------------------------------------------------

    def _loop(self, chain: RpcChain, client: AdjudicatorClient) -> None:
        genesis = self.genesis
        watcher = ChainWatcher(
            chain.w3, "0x" + genesis.adjudicator.hex(), genesis.channel_id, self.db_path,
            confirmations=self.config.confirmations_for(chain.chain_id),
        )
        try:
            while not self._stop.is_set():
                try:
                    self._poll(watcher, client)
                    self._status.error = ""
                except (SettlementError, OSError) as exc:
                    self._status.error = str(exc)
                    log.warning("chain: %s", exc)
                except Exception as exc:  # a bug must not end the node: the next poll tries again
                    if self._stop.is_set():  # the node is stopping (trio may be gone already)
                        break
                    self._status.error = f"unexpected: {exc!r}"
                    log.exception("chain: a poll failed unexpectedly; retrying at the next poll")
                self._publish()
                self._stop.wait(self.config.poll_interval)
        finally:
            watcher.close()

    def _poll(self, watcher: ChainWatcher, client: AdjudicatorClient) -> None:
        """One round; the alert is what this round found wrong, so it clears when the cause goes."""
        self._alerts = []
        try:
            self._round(watcher, client)
        finally:
            alert = "; ".join(self._alerts)
            if alert and alert != self._status.alert:
                log.error("chain alert: %s", alert)
                self._status.alerts += 1
            self._status.alert = alert

    def _round(self, watcher: ChainWatcher, client: AdjudicatorClient) -> None:
        result = watcher.poll()
        deposits = watcher.deposits(self.genesis)
        self._status.deposits_removed += sum(1 for event in result.removed if event.name == "Deposited")
        trio.from_thread.run_sync(self.driver.set_confirmed_deposits, deposits)
        self._status.deposits_seen = len(deposits)
        view = self._view(client)
        self._take_certificates()
        self._watchtower(view, client)
        self._settle(view, client)
        self._finalize(view, client)

    def _view(self, client: AdjudicatorClient) -> ChainView:
        channel = self.genesis.channel_id
        info = client.channel(channel)
        finalized = client.finalized(channel).version
        disputed = client.settlement(channel) if info.disputing else None
        view = ChainView(
            info.status,
            disputed.version if disputed is not None else 0,
            disputed.finalizes_at if disputed is not None else 0,
            finalized,
            client.chain.now(),
        )
        self._status.status = info.status
        self._status.finalized_version = finalized
        self._status.settled_version = view.disputed_version or finalized
        return view

    def _alert(self, message: str) -> None:
        self._alerts.append(message)

    def _send(self, key: str, what: str, send: Any) -> bool:
        """Send one move unless it is backing off; True if it was sent. A lost race (someone was
        first, the window just moved) counts as done; anything else backs off and is retried."""
        now = time.monotonic()
        if not self._moves.due(key, now):
            if key in self._gas_alerts:
                self._alert(self._gas_alerts[key])  # still wanted, still unpaid
            return False
        try:
            send()
        except ContractReverted as reverted:
            if reverted.name in LOST_RACE:
                log.info("%s: %s", what, reverted.name)
                self._moves.done(key)
                return False
            self._moves.failed(key, now)
            raise
        except InsufficientGas as exc:
            self._moves.failed(key, now)
            self._gas_alerts[key] = f"cannot pay for gas to {what}: {exc}"
            self._alert(self._gas_alerts[key])
            return False
        except SettlementError:
            self._moves.failed(key, now)
            raise
        self._moves.done(key)
        self._gas_alerts.pop(key, None)
        return True

    # -- what to do --------------------------------------------------------------------------------

    def _watchtower(self, view: ChainView, client: AdjudicatorClient) -> None:
        newest = self._newest
        move = watchtower_move(view, newest.version if newest is not None else 0)
        if move.kind == "challenge" and newest is not None:
            what = f"challenge v{view.disputed_version} with v{move.version}"
            if self._send(f"challenge-{move.version}", what, lambda: client.challenge(newest)):
                self._status.challenges_sent += 1
                log.warning("watchtower: challenged v%d with v%d", view.disputed_version, move.version)
        elif move.reason:
            self._alert(f"v{view.disputed_version} is in dispute, v{move.version} is newer, and it is {move.reason}")

    def _take_certificates(self) -> None:
        n = len(self.genesis.participants)
        me = self.genesis.addresses.index(self.node.address)
        while True:
            try:
                certificate = self._certificates.get_nowait()
            except queue.Empty:
                return
            if self._newest is None or certificate.version > self._newest.version:
                self._newest = certificate
            if certificate.version % self.config.settle_every:
                continue
            delay = rank(certificate.version, self.config.settle_every, me, n) * self.config.fallback_delay
            self._waiting[certificate.version] = _Pending(certificate, time.monotonic() + delay)

    def _settle(self, view: ChainView, client: AdjudicatorClient) -> None:
        settled = max(view.finalized_version, view.disputed_version)
        for version in [v for v in self._waiting if v <= settled]:
            del self._waiting[version]
        due = [p for p in self._waiting.values() if p.turn_at <= time.monotonic()]
        if not due:
            return
        newest = max(due, key=lambda p: p.certificate.version)
        if settle_move(view, newest.certificate.version, self.config.settle_every).kind != "propose":
            return
        if not self._deposits_still_on_chain(newest.certificate, view, client):
            return
        what = f"propose checkpoint v{newest.certificate.version}"
        if self._send(f"propose-{newest.certificate.version}", what, lambda: client.propose(newest.certificate)):
            self._status.proposals_sent += 1
            log.info("proposed checkpoint %d on-chain", newest.certificate.version)
            self._waiting.pop(newest.certificate.version, None)

    def _deposits_still_on_chain(self, certificate: Certificate, view: ChainView, client: AdjudicatorClient) -> bool:
        """Whether every deposit the checkpoint credits beyond the finalised one is the deposit
        the contract holds under that nonce (a reorg deeper than the confirmations could have
        replaced it); alerts and returns False if not."""
        channel = self.genesis.channel_id
        start = client.finalized(channel).deposit_nonce + 1 if view.finalized_version else 1
        credited: list[Deposit] = trio.from_thread.run_sync(
            self.driver.credited_deposits, start, certificate.checkpoint.deposit_nonce
        )
        tokens = {token.symbol: token for token in self.genesis.tokens}
        for deposit in credited:
            account, token_index, _, amount = client.deposit_of(channel, deposit.nonce)
            token = tokens[deposit.token]
            if (account, self.genesis.tokens[token_index].symbol, amount) != (
                deposit.account, deposit.token, from_e9(deposit.amount, token.decimals)
            ):
                self._alert(
                    f"checkpoint v{certificate.version} credits deposit {deposit.nonce}, which the chain no longer "
                    "holds (a reorg deeper than the confirmations): it will not be proposed"
                )
                return False
        return True

    def _finalize(self, view: ChainView, client: AdjudicatorClient) -> None:
        if finalize_move(view).kind != "finalize":
            return
        if view.status == "pending":  # a periodic checkpoint: the rota finalises it
            n = len(self.genesis.participants)
            me = self.genesis.addresses.index(self.node.address)
            late = view.now - view.finalizes_at
            if late < rank(view.disputed_version, self.config.settle_every, me, n) * self.config.fallback_delay:
                return
        what = f"finalize v{view.disputed_version}"
        if self._send(f"finalize-{view.disputed_version}", what, lambda: client.finalize(self.genesis.channel_id)):
            self._status.finalizations_sent += 1
            log.info("finalized checkpoint %d on-chain", view.disputed_version)
