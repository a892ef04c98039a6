"""What a node does on-chain, decided from the chain's state alone: a pure function of values.

The node's chain worker reads a `ChainView` every poll and asks these functions what to do;
nothing here depends on which events arrived, so a decision that failed (no gas, an RPC error,
a crash between reading an event and acting on it) is simply taken again at the next poll and
at start-up. Audit finding F1 was the opposite: the watchtower acted only on a *new*
settlement event, which the watcher had already committed, so one failed challenge was never
retried and a stale checkpoint finalised while the node held a newer certificate.

- `watchtower_move`: a checkpoint in dispute older than the newest certificate we hold is
  challenged while its window is open (it does not restart: an honest challenge with the
  newest certificate ends the dispute at its first deadline).
- `settle_move`: a certified checkpoint due for settlement (every `settle_every`-th version) is
  proposed when nothing is in dispute and it is newer than the finalised one; the submitter of
  version v is participant ``(v // settle_every) mod n``, the next ones `fallback_delay` later.
- `finalize_move`: a periodic checkpoint whose window has passed is finalised (that is what
  makes its withdrawals claimable), by the same rota; a closing channel is finalised by anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

DISPUTED = ("pending", "closing")


@dataclass(frozen=True, slots=True)
class ChainView:
    status: str  # "open", "pending" (open, a checkpoint in dispute), "closing", "concluded", "none"
    disputed_version: int  # the checkpoint in dispute, 0 if none
    finalizes_at: int  # its deadline, chain seconds
    finalized_version: int  # 0 if none
    now: int  # chain seconds


@dataclass(frozen=True, slots=True)
class Move:
    kind: str  # "challenge", "propose", "finalize" or "none"
    version: int = 0
    reason: str = ""


NOTHING = Move("none")


def watchtower_move(view: ChainView, newest: int) -> Move:
    """Challenge a checkpoint in dispute that is older than our newest certificate `newest`."""
    if view.status not in DISPUTED or newest <= view.disputed_version:
        return NOTHING
    if view.now >= view.finalizes_at:
        return Move("none", newest, "too late: the dispute window has closed")
    return Move("challenge", newest)


def rank(version: int, settle_every: int, me: int, n: int) -> int:
    """How many submitters come before participant `me` for version `version` (0: it is first)."""
    return (me - version // settle_every) % n


def settle_move(view: ChainView, version: int, settle_every: int) -> Move:
    """Propose certified checkpoint `version` if it is due for settlement and would be new."""
    if version % settle_every or view.status != "open":
        return NOTHING
    if version <= max(view.finalized_version, view.disputed_version):
        return NOTHING
    return Move("propose", version)


def finalize_move(view: ChainView) -> Move:
    """Finalise the checkpoint in dispute once its window has passed."""
    if view.status in DISPUTED and view.now >= view.finalizes_at:
        return Move("finalize", view.disputed_version)
    return NOTHING
