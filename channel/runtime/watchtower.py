"""A standalone watchtower: challenge any checkpoint in dispute older than the newest certificate.

Invariant: whenever a checkpoint is in dispute on-chain (a periodic one, or a close) with a
version lower than the newest valid certificate held, and its window is still open,
`Watchtower.step` sends a challenge with that certificate. It reads the dispute from the
contract itself, never from events, and the decision is `channel.core.settlement_policy.watchtower_move`,
the same pure function the node's chain worker calls every poll: call `step` as often as you
like (after every `ChainWatcher.poll`, say), and a challenge that failed is tried again. Losing a race
(another honest party challenged first, the window just closed) is reported, not raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from channel.core.settlement_policy import ChainView, watchtower_move
from crdt.certificate import Certificate
from crdt.genesis import Genesis
from settlement.client import AdjudicatorClient
from settlement.errors import ContractReverted
from settlement.watcher import PollResult

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
        info = self.client.channel(self.channel)
        if not info.disputing:
            return None
        pending = self.client.settlement(self.channel)
        ours = self.newest_certificate()
        view = ChainView(info.status, pending.version, pending.finalizes_at, 0, self.client.chain.now())
        move = watchtower_move(view, ours.version if ours is not None else 0)
        if ours is None or (move.kind == "none" and not move.reason):
            return None
        ours.verify(self.genesis)
        if move.kind != "challenge":
            action = Action("too_late", pending.version, ours.version, move.reason)
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
        """Call with each `ChainWatcher.poll` result: look at the chain on every poll, whatever events came (a
        challenge decided only on a new event is never retried once it failed: audit F1)."""
        return self.step()
