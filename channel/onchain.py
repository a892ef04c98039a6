"""The node's side of the chain: deposits in, certified checkpoints out, stale proposals beaten.

One worker thread owns everything that talks to the chain (web3 is blocking, and the chain
watcher's SQLite cursor belongs to the thread that opened it). It loops every `poll_interval`:
- the chain watcher (`settlement.watcher.ChainWatcher`, cursor in ``DATA_DIR/chain.sqlite``)
  reads confirmed events; every confirmed deposit goes to `Finality.add_deposit`, which makes the
  next checkpoint credit it (so on-chain deposits appear in balances after the next checkpoint);
- when a settlement event was confirmed, the watchtower (`settlement.watchtower.Watchtower`)
  compares the pending proposal with the newest certificate this node holds and challenges a
  stale one within the window;
- certified checkpoints whose version is a multiple of `settle_every` are proposed on-chain (or
  challenge an older pending proposal) by a designated submitter: participant
  ``(version // settle_every) % n`` in genesis order first, the next one `fallback_delay`
  seconds later if the chain still shows nothing as new, and so on, so one node being down or
  slow does not stop settlement. A submitter refuses to send unless its account can pay for the
  proposal and a finalize (`settlement.client.Sender.ensure_can_pay`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from eth_account import Account

from crdt.certificate import Certificate
from settlement.chain import RpcChain
from settlement.client import AdjudicatorClient, Sender
from settlement.errors import ContractReverted, SettlementError
from settlement.watcher import ChainWatcher
from settlement.watchtower import SETTLEMENT_EVENTS, Watchtower

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChainConfig:
    rpc: str
    confirmations: int = 1
    settle_every: int = 1  # propose every k-th certified checkpoint
    poll_interval: float = 0.5
    fallback_delay: float = 5.0


@dataclass(slots=True)
class ChainStatus:
    """What the node last saw on-chain (read by the API)."""

    status: str = "unknown"
    settled_version: int = 0  # the pending or finalised proposal's version
    proposals_sent: int = 0
    challenges_sent: int = 0
    deposits_seen: int = 0
    error: str = ""


class OnChain:
    def __init__(self, node: Any, finality: Any, config: ChainConfig, data_dir: Path) -> None:
        self.node = node
        self.finality = finality
        self.config = config
        self.db_path = data_dir / "chain.sqlite"
        self.genesis = node.genesis
        self.status = ChainStatus()
        self._certificates: queue.Queue[Certificate] = queue.Queue()
        self._stop = threading.Event()
        finality.on_certified.append(self._certificates.put)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            # (trio-typing's stubs, pulled in by libp2p, predate abandon_on_cancel)
            await trio.to_thread.run_sync(self._loop, abandon_on_cancel=True)  # type: ignore[call-arg]
        finally:
            self._stop.set()

    # -- the worker thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        genesis = self.genesis
        chain = RpcChain(self.config.rpc)
        account = Account.from_key(self.node.key.private_key)
        client = AdjudicatorClient(Sender(chain, account), "0x" + genesis.adjudicator.hex())
        watcher = ChainWatcher(
            chain.w3, "0x" + genesis.adjudicator.hex(), genesis.channel_id, self.db_path,
            confirmations=self.config.confirmations,
        )
        tower = Watchtower(client, genesis, self.finality.latest_certificate)
        due: list[tuple[float, Certificate]] = []
        try:
            while not self._stop.is_set():
                try:
                    self._poll(watcher, tower, client)
                    due.extend(self._schedule())
                    due = [entry for entry in due if not self._submit_if_due(entry, client)]
                    self.status.error = ""
                except (SettlementError, OSError) as exc:
                    self.status.error = str(exc)
                    log.warning("chain: %s", exc)
                self._stop.wait(self.config.poll_interval)
        finally:
            watcher.close()

    def _poll(self, watcher: ChainWatcher, tower: Watchtower, client: AdjudicatorClient) -> None:
        result = watcher.poll()
        deposits = watcher.deposits(self.genesis)
        for deposit in deposits[self.status.deposits_seen :]:
            trio.from_thread.run_sync(self.finality.add_deposit, deposit)
        self.status.deposits_seen = len(deposits)
        if any(event.name in SETTLEMENT_EVENTS for event in result.new):
            action = tower.step()
            if action is not None:
                log.warning("watchtower: %s v%d with v%d", action.kind, action.pending_version, action.our_version)
                if action.kind == "challenged":
                    self.status.challenges_sent += 1
        info = client.channel(self.genesis.channel_id)
        self.status.status = info.status
        if info.status in ("pending", "concluded"):
            self.status.settled_version = client.settlement(self.genesis.channel_id).version

    def _schedule(self) -> list[tuple[float, Certificate]]:
        """New certificates to settle, each at the time this node's turn comes."""
        scheduled: list[tuple[float, Certificate]] = []
        n = len(self.genesis.participants)
        index = self.genesis.addresses.index(self.node.address)
        while True:
            try:
                certificate = self._certificates.get_nowait()
            except queue.Empty:
                return scheduled
            turn = certificate.version // self.config.settle_every
            if certificate.version % self.config.settle_every:
                continue
            rank = (index - turn) % n
            scheduled.append((time.monotonic() + rank * self.config.fallback_delay, certificate))

    def _submit_if_due(self, entry: tuple[float, Certificate], client: AdjudicatorClient) -> bool:
        """Propose or challenge with the certificate once due; True when done with it."""
        when, certificate = entry
        if time.monotonic() < when:
            return False
        channel = self.genesis.channel_id
        info = client.channel(channel)
        try:
            if info.status == "open":
                client.propose(certificate)
                self.status.proposals_sent += 1
                log.info("proposed checkpoint %d on-chain", certificate.version)
            elif info.status == "pending":
                pending = client.settlement(channel)
                if pending.version < certificate.version and client.chain.now() < pending.finalizes_at:
                    client.challenge(certificate)
                    self.status.challenges_sent += 1
                    log.info("replaced on-chain proposal %d with %d", pending.version, certificate.version)
        except ContractReverted as reverted:  # another submitter was first, or the window closed
            log.info("settling checkpoint %d: %s", certificate.version, reverted.name)
        return True


