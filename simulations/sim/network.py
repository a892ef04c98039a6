"""The simulated network: what happens to a message between two simulated nodes.

Each directed link (source node, destination node) has a `LinkModel`: a latency distribution
(fixed, uniform or lognormal, in ms), a loss probability, a duplication probability and a
bandwidth cap. Reordering is not a separate knob: it comes from the latency jitter, as on a
real network (two messages sent 1 ms apart with a 5-50 ms uniform latency arrive in either
order). A bandwidth cap makes a link a queue: each message occupies the link for
``size / bandwidth`` seconds after the previous one left, so a burst waits (kept in
microseconds, so small messages on a fast link do not each cost a whole millisecond).

Partitions follow the scenario's schedule: while one is active, a message it blocks is lost
when it is sent (one already in flight still arrives). Symmetric partitions block every
message between two groups; asymmetric ones block one direction only.

Every draw comes from the one `random.Random` the engine gives this module (the "network"
stream of the run's seed), in the order messages are sent, so a run repeats exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulations.sim.scenario import FixedLatency, LinkModel, NetworkSpec, Partition, UniformLatency

US_PER_MS = 1000


def uniform_us(rng: random.Random, low: int, high: int) -> int:
    """``rng.randint(low, high)``, the same draw from the same generator state, without its
    three interpreted calls (randint, randrange, _randbelow: a tenth of the network's time per
    message): ``low`` plus the first ``getrandbits(k)`` below the width, ``k`` its bit length,
    as `random.Random._randbelow_with_getrandbits` draws it (tests/simulations/sim/test_network.py
    compares the two)."""
    width = high - low + 1
    if width <= 0:
        raise ValueError(f"empty range for randint ({low}, {high})")
    bits = width.bit_length()
    draw = rng.getrandbits(bits)
    while draw >= width:
        draw = rng.getrandbits(bits)
    return low + draw


@dataclass(slots=True)
class LinkState:
    model: LinkModel
    free_at_us: int = 0  # when the link's queue is empty (bandwidth cap)


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    blocked: int = 0
    duplicated: int = 0
    bytes_sent: int = 0
    queued_us: int = 0  # total time messages waited behind bandwidth caps

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent, "delivered": self.delivered, "lost": self.lost, "blocked": self.blocked,
            "duplicated": self.duplicated, "bytes_sent": self.bytes_sent, "queued_ms": self.queued_us // US_PER_MS,
        }


def _blocked_pairs(partition: Partition, n: int) -> frozenset[tuple[int, int]]:
    """The (source, destination) participant pairs `partition` blocks."""
    if partition.groups is not None:
        side = {i: g for g, group in enumerate(partition.groups) for i in group}
        return frozenset(
            (a, b) for a in range(n) for b in range(n) if a != b and side.get(a, -1 - a) != side.get(b, -1 - b)
        )
    return frozenset((a, b) for a in partition.sources or () for b in partition.targets or () if a != b)


@dataclass(slots=True)
class Network:
    """Links between simulated nodes; `participant` maps a node to its participant index (two
    nodes share one with Twins), which is what the scenario's links and partitions name."""

    spec: NetworkSpec
    rng: random.Random
    participant: Sequence[int]
    participants: int
    links: dict[tuple[int, int], LinkState] = field(default_factory=dict)
    stats: NetworkStats = field(default_factory=NetworkStats)
    _schedule: list[tuple[int, int | None, frozenset[tuple[int, int]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._schedule = [
            (p.start_ms, p.end_ms, _blocked_pairs(p, self.participants)) for p in self.spec.partitions
        ]
        nodes = range(len(self.participant))
        for src in nodes:
            for dst in nodes:
                if src != dst:
                    self.links[(src, dst)] = LinkState(self._model(self.participant[src], self.participant[dst]))

    def _model(self, src: int, dst: int) -> LinkModel:
        model: LinkModel = self.spec
        for override in self.spec.links:  # the last override that matches wins
            if src in override.sources and dst in override.targets:
                model = override
        return model

    def blocked(self, src: int, dst: int, now: int) -> bool:
        """Whether an active partition blocks participant `src` -> participant `dst` at `now`."""
        return any(
            start <= now and (end is None or now < end) and (src, dst) in pairs for start, end, pairs in self._schedule
        )

    def last_heal_ms(self) -> int:
        """When the last partition heals (0 if none; -1 if one never heals)."""
        ends = [p.end_ms for p in self.spec.partitions]
        if any(end is None for end in ends):
            return -1
        return max((end for end in ends if end is not None), default=0)

    def send(self, src: int, dst: int, size: int, now: int) -> tuple[int, ...]:
        """Draw the fate of one message of `size` bytes sent at `now` (virtual ms): when its
        copies arrive (none: lost, to a partition or at random; the stats say which)."""
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += size
        if self._schedule and self.blocked(self.participant[src], self.participant[dst], now):
            stats.blocked += 1
            return ()
        link = self.links[(src, dst)]
        model = link.model
        rng = self.rng
        if model.loss and rng.random() < model.loss:
            stats.lost += 1
            return ()
        leave_us = now * US_PER_MS
        if model.bandwidth_bytes_per_s:
            start = max(leave_us, link.free_at_us)
            stats.queued_us += start - leave_us
            leave_us = start + -(-size * 1_000_000 // model.bandwidth_bytes_per_s)
            link.free_at_us = leave_us
        copies = 2 if model.duplicate and rng.random() < model.duplicate else 1
        stats.duplicated += copies - 1
        stats.delivered += copies
        if copies == 1:
            return (-(-(leave_us + self._latency_us(model)) // US_PER_MS),)
        first = -(-(leave_us + self._latency_us(model)) // US_PER_MS)
        return first, -(-(leave_us + self._latency_us(model)) // US_PER_MS)

    def _latency_us(self, model: LinkModel) -> int:
        latency = model.latency
        if isinstance(latency, FixedLatency):
            return latency.ms * US_PER_MS
        if isinstance(latency, UniformLatency):
            return uniform_us(self.rng, latency.low_ms * US_PER_MS, latency.high_ms * US_PER_MS)
        draw = math.exp(self.rng.gauss(math.log(latency.median_ms), latency.sigma))
        return int(min(draw, latency.max_ms) * US_PER_MS)
