"""A seeded fault schedule: which fault, on which nodes, from when to when.

`make_schedule(seed, n, duration)` is a pure function of its arguments (one `random.Random(seed)`
draws everything), so a seed names a schedule: the same seed gives the same faults on any
machine. What a run then does with the timing of real processes is not deterministic (that is
the point of real processes); the history records what happened.

Faults never overlap: one window at a time, each followed by a quiet gap, after a warm-up and
before a recovery tail in which liveness is checked. So with n >= 4 at most one node is down or
paused at any moment (f = 1 of n >= 3f + 1), and a partition is the only fault that may leave no
side with a quorum (halves), which must heal before anything is certified again.

Kinds:
- ``partition``: links cut with ``ip link set … down`` (`netns.Topology.cut`), healed at the
  end; shapes ``halves``, ``majority`` (a simple majority against the rest), ``isolate`` (one
  node alone) and ``bridge`` (two halves that both still reach one bridge node);
- ``kill``: ``kill -9`` at the start, a restart on the same data directory at the end;
- ``pause``: ``SIGSTOP`` at the start, ``SIGCONT`` at the end, 3-8 s: longer than the consensus
  timeouts (1 s to propose), so the node's votes and its stream deadlines lapse;
- ``delay``: the proxy delays every byte of one node's links (or of all links) by 50-300 ms plus
  up to half that in jitter.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from simulations.faults.errors import FaultsError

KINDS = ("partition", "kill", "pause", "delay")
SHAPES = ("halves", "majority", "isolate", "bridge")
LENGTHS = {"partition": (5.0, 12.0), "kill": (4.0, 10.0), "pause": (3.0, 8.0), "delay": (5.0, 12.0)}
GAP = (2.0, 5.0)
WARMUP = 5.0
RECOVERY = 20.0  # the tail after the last fault: liveness must resume within `LIVENESS_BOUND` of it
LIVENESS_BOUND = 15.0


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    start: float  # seconds since the clients started
    end: float
    nodes: tuple[int, ...] = ()  # kill, pause, delay: the node (delay: empty means every link)
    shape: str = ""  # partition
    sides: tuple[tuple[int, ...], ...] = ()  # partition: the groups (bridge: the bridge node last, alone)
    links: tuple[tuple[int, int], ...] = ()  # partition: the links cut
    delay: float = 0.0
    jitter: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "start": round(self.start, 3), "end": round(self.end, 3)}
        if self.kind == "partition":
            out.update(shape=self.shape, sides=[list(s) for s in self.sides], links=[list(x) for x in self.links])
        else:
            out["nodes"] = list(self.nodes)
        if self.kind == "delay":
            out.update(delay=round(self.delay, 4), jitter=round(self.jitter, 4))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(
            kind=data["kind"], start=float(data["start"]), end=float(data["end"]),
            nodes=tuple(data.get("nodes", ())), shape=data.get("shape", ""),
            sides=tuple(tuple(s) for s in data.get("sides", ())),
            links=tuple((int(a), int(b)) for a, b in data.get("links", ())),
            delay=float(data.get("delay", 0.0)), jitter=float(data.get("jitter", 0.0)),
        )

    def describe(self) -> str:
        if self.kind == "partition":
            return f"partition {self.shape} " + " | ".join(",".join(map(str, s)) for s in self.sides)
        if self.kind == "delay":
            target = f"node {self.nodes[0]}" if self.nodes else "all links"
            return f"delay {self.delay * 1000:.0f}±{self.jitter * 1000:.0f} ms on {target}"
        return f"{self.kind} node {self.nodes[0]}"


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    n: int
    duration: float
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    @property
    def last_heal(self) -> float | None:
        return max((f.end for f in self.faults), default=None)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "n": self.n, "duration": self.duration,
                "faults": [f.to_json() for f in self.faults]}


Sides = tuple[tuple[int, ...], ...]


def partition(shape: str, n: int, rng: random.Random) -> tuple[Sides, tuple[tuple[int, int], ...]]:
    """The sides of a partition of `shape` over n nodes, and the links it cuts."""
    nodes = list(range(n))
    rng.shuffle(nodes)
    if shape == "halves":
        a, b = sorted(nodes[: n // 2]), sorted(nodes[n // 2:])
        sides: Sides = (tuple(a), tuple(b))
        cut = [(x, y) for x in a for y in b]
    elif shape == "majority":
        a, b = sorted(nodes[: n // 2 + 1]), sorted(nodes[n // 2 + 1:])
        sides, cut = (tuple(a), tuple(b)), [(x, y) for x in a for y in b]
    elif shape == "isolate":
        alone, rest = nodes[0], sorted(nodes[1:])
        sides, cut = (tuple(rest), (alone,)), [(alone, y) for y in rest]
    elif shape == "bridge":
        if n < 3:
            raise FaultsError("a bridge partition needs at least 3 nodes")
        bridge, rest = nodes[0], nodes[1:]
        a, b = sorted(rest[: len(rest) // 2]), sorted(rest[len(rest) // 2:])
        sides, cut = (tuple(a), tuple(b), (bridge,)), [(x, y) for x in a for y in b]
    else:
        raise FaultsError(f"unknown partition shape {shape!r} (use {', '.join(SHAPES)})")
    return sides, tuple(sorted((min(x, y), max(x, y)) for x, y in cut))


def _fault(kind: str, start: float, end: float, n: int, rng: random.Random, shapes: tuple[str, ...]) -> Fault:
    if kind == "partition":
        shape = rng.choice(shapes)
        sides, links = partition(shape, n, rng)
        return Fault(kind, start, end, shape=shape, sides=sides, links=links)
    if kind == "delay":
        delay = rng.uniform(0.05, 0.3)
        every = rng.random() < 0.3
        nodes = () if every else (rng.randrange(n),)
        return Fault(kind, start, end, nodes=nodes, delay=delay, jitter=rng.uniform(0, delay / 2))
    return Fault(kind, start, end, nodes=(rng.randrange(n),))


def make_schedule(
    seed: int, n: int, duration: float, *, kinds: tuple[str, ...] = KINDS, shapes: tuple[str, ...] = SHAPES,
    warmup: float = WARMUP, recovery: float = RECOVERY,
) -> Schedule:
    """Faults from `warmup` to ``duration - recovery``, one at a time: first each of `kinds` once
    in a seeded order (a kind that does not fit at its drawn length gets its shortest), then
    seeded draws while they fit."""
    unknown = [k for k in kinds if k not in KINDS] + [s for s in shapes if s not in SHAPES]
    if unknown:
        raise FaultsError(f"unknown fault kind or shape {', '.join(map(repr, unknown))} "
                          f"(kinds: {', '.join(KINDS)}; shapes: {', '.join(SHAPES)})")
    if n < 2:
        raise FaultsError(f"a fault run needs at least 2 nodes, not {n}")
    if not kinds:
        return Schedule(seed, n, duration)
    if "partition" in kinds and not shapes:
        raise FaultsError("partitions need at least one shape")
    if "bridge" in shapes and n < 3:
        shapes = tuple(s for s in shapes if s != "bridge") or ("halves",)
    rng = random.Random(seed)
    first = list(kinds)
    rng.shuffle(first)
    limit = duration - recovery
    faults: list[Fault] = []
    t = warmup
    for step in itertools.count():
        kind = first[step] if step < len(first) else rng.choice(kinds)
        low, high = LENGTHS[kind]
        length = rng.uniform(low, high)
        if t + length > limit and step < len(first):
            length = low
        if t + length > limit:
            break
        faults.append(_fault(kind, t, t + length, n, rng, shapes))
        t += length + rng.uniform(*GAP)
    return Schedule(seed, n, duration, tuple(faults))
