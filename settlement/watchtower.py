"""The watchtower: challenge any on-chain proposal older than the newest certificate we hold.

Invariant: whenever a settlement is pending on-chain with a version lower than the newest valid
certificate the node holds, and the dispute window is still open, `Watchtower.step` sends a
challenge with that certificate. It reads the pending settlement from the contract itself (not
from confirmed events), so it acts within the window even with a slow confirmation depth; the
watcher's settlement events only make it look sooner. Losing a race (another honest party
challenged first, the window just closed) is reported, not raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from crdt.certificate import Certificate
from crdt.genesis import Genesis
from settlement.client import AdjudicatorClient
from settlement.errors import ContractReverted
from settlement.watcher import PollResult

SETTLEMENT_EVENTS = frozenset({"SettlementProposed", "SettlementChallenged"})
LOST_RACE = frozenset({"VersionNotNewer", "DisputeWindowClosed", "ChannelConcluded", "NoSettlementPending"})


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "challenged", "too_late", "lost_race"
    pending_version: int
    our_version: int
    detail: str = ""


class Watchtower:
    def __init__(
        self,
        client: AdjudicatorClient,
        genesis: Genesis,
        newest_certificate: Callable[[], Certificate | None],
    ) -> None:
        self.client = client
        self.genesis = genesis
        self.channel = genesis.channel_id
        self.newest_certificate = newest_certificate
        self.actions: list[Action] = []

    def step(self) -> Action | None:
        """Check the chain once and challenge if needed; return what was done, if anything."""
        if self.client.channel(self.channel).status != "pending":
            return None
        pending = self.client.settlement(self.channel)
        ours = self.newest_certificate()
        if ours is None or ours.version <= pending.version:
            return None
        ours.verify(self.genesis)
        if self.client.chain.now() >= pending.finalizes_at:
            action = Action("too_late", pending.version, ours.version, "the dispute window has closed")
        else:
            try:
                self.client.challenge(ours)
                action = Action("challenged", pending.version, ours.version)
            except ContractReverted as reverted:
                if reverted.name not in LOST_RACE:
                    raise
                action = Action("lost_race", pending.version, ours.version, reverted.name)
        self.actions.append(action)
        return action

    def on_poll(self, result: PollResult) -> Action | None:
        """Hook for `ChainWatcher.run`: look again when a settlement event was confirmed."""
        if any(event.name in SETTLEMENT_EVENTS for event in result.new):
            return self.step()
        return None

    def run(self, interval: float = 5.0, stop: Callable[[], bool] = lambda: False,
            sleep: Callable[[float], None] = time.sleep) -> None:
        while not stop():
            self.step()
            sleep(interval)
