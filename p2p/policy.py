"""Pure policies against hostile peers: per-peer scores (then a ban) and token-bucket rate limits.

No clock is read here: every call takes ``now`` (seconds, any monotonic origin), so the driver
decides what time is and the simulator can use its own.

Scores: every peer starts at 0. Each invalid input lowers the score by the penalty for its
error ``code`` (a bad signature costs most: an honest node verifies before it forwards, so it
never relays one). Penalties decay exponentially with ``half_life`` seconds, so an honest peer
that once relayed something odd recovers. A peer whose score reaches ``-ban_threshold`` is
banned, and stays banned until this process restarts (the driver then disconnects and
blacklists it). Memory is bounded by the number of peers that ever misbehaved, which the
transport bounds by its connections. A node keeps one score per peer, whatever topic or
protocol it misbehaved on (the `p2p.peer.Peer`'s, where the consensus topic scores too).

Rate limits: a `TokenBucket` holds at most ``burst`` tokens and refills at ``rate`` per second;
`take` either removes the tokens or reports the flood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_PENALTIES: Mapping[str, float] = {
    "bad_signature": 50.0,
    "wrong_channel": 50.0,
    "unknown_author": 50.0,
    "malformed": 25.0,
    "oversized": 25.0,
    "non_canonical": 25.0,
    "wrong_type": 25.0,
    "truncated": 25.0,
    "unexpected": 25.0,
    "rate_limited": 5.0,
    "bad_sequence": 10.0,
    # the consensus topic (`channel.runtime.driver`), which checks them before it forwards
    "not_proposer": 50.0,
    "invalid_proposal": 25.0,
}


@dataclass(frozen=True, slots=True)
class ScorePolicy:
    ban_threshold: float = 100.0
    half_life: float = 300.0
    default_penalty: float = 10.0
    penalties: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))


@dataclass(slots=True)
class _Score:
    value: float
    at: float


class PeerScores:
    def __init__(self, policy: ScorePolicy | None = None) -> None:
        self.policy = policy or ScorePolicy()
        self._scores: dict[bytes, _Score] = {}
        self.banned: set[bytes] = set()
        self.penalties: dict[str, int] = {}  # error code -> how many times, for statistics

    def score(self, peer: bytes, now: float) -> float:
        entry = self._scores.get(peer)
        if entry is None:
            return 0.0
        decay: float = 0.5 ** (max(0.0, now - entry.at) / self.policy.half_life)
        return entry.value * decay

    def penalize(self, peer: bytes, code: str, now: float) -> bool:
        """Lower the peer's score for an error with this code; True if this bans it (once)."""
        self.penalties[code] = self.penalties.get(code, 0) + 1
        penalty = self.policy.penalties.get(code, self.policy.default_penalty)
        value = self.score(peer, now) - penalty
        self._scores[peer] = _Score(value, now)
        if value <= -self.policy.ban_threshold and peer not in self.banned:
            self.banned.add(peer)
            return True
        return False

    def is_banned(self, peer: bytes) -> bool:
        return peer in self.banned


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, amount: float, now: float) -> bool:
        """Remove `amount` tokens if there are enough; False means the caller is flooding."""
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per peer. Generous for honest load (the CPU saturates first), tight for a flood."""

    gossip_messages_per_second: float = 5_000.0
    gossip_burst: float = 10_000.0
    sync_bytes_per_second: float = 64 * 1024 * 1024
    sync_bytes_burst: float = 128 * 1024 * 1024
    sync_messages_per_second: float = 5_000.0
    sync_messages_burst: float = 10_000.0
    # the consensus topic: a few messages per participant and round (and a catch-up burst of
    # a decision with its commits); every one costs a signature recovery, a decision many
    consensus_messages_per_second: float = 1_000.0
    consensus_burst: float = 2_000.0
