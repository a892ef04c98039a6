"""What a node measures about itself for its operator: latency histograms and a current rate.

- ``submit``: a local API submit, from the call to its receipt (dry run, sign, the fsync'd
  commit, apply, gossip).
- ``delivery``: from a local submit to the first operation of another participant that names
  it as a parent, that is, to the moment the node learns a peer has it and built on it. It is
  only measured while peers are sending; an idle channel records nothing.
- ``finality``: from a local submit to its status turning ``final`` (its checkpoint certified),
  or ``rejected`` for good.

Times are trio's clock (`trio.current_time()`), so a node under `trio.testing.MockClock` measures
virtual seconds. At most `MAX_TRACKED` submitted operations wait for their delivery or finality
at once; past that the oldest are forgotten (their latencies are not recorded), so a peer that
never builds on our operations costs bounded memory.

`RateWindow` is the current rate of a growing total over the last few seconds, which is what
``ops_per_s`` reports: an average since start hides a node that stopped.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.samples import Sample

MAX_TRACKED = 10_000
# 1 ms to 60 s: a loopback submit is a few ms, finality about one checkpoint interval
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class RateWindow:
    """The rate of a total that only grows, over the last `window` seconds (or since the first
    sample, when that is more recent). Samples closer than `resolution` seconds to the previous
    one replace it, so memory stays at about window / resolution samples."""

    def __init__(self, window: float = 10.0, resolution: float = 0.25) -> None:
        self.window, self.resolution = window, resolution
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, now: float, total: int) -> None:
        samples = self._samples
        if len(samples) >= 2 and now - samples[-2][0] < self.resolution:
            samples[-1] = (now, total)
        else:
            samples.append((now, total))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()

    def rate(self, now: float, total: int) -> float:
        """Per second over the window ending at `now`, the current `total` included."""
        self.observe(now, total)
        start_time, start_total = self._samples[0]
        if now - start_time > self.window:  # the oldest kept sample is older than the window
            start_time = now - self.window
            start_total = self._total_at(start_time)
        elapsed = now - start_time
        return (total - start_total) / elapsed if elapsed > 0 else 0.0

    def _total_at(self, moment: float) -> int:
        """The total at `moment`, interpolated between the two samples around it."""
        (t0, v0), (t1, v1) = self._samples[0], self._samples[1] if len(self._samples) > 1 else self._samples[0]
        if t1 <= t0:
            return v1
        return v0 + int((v1 - v0) * (moment - t0) / (t1 - t0))


class NodeMetrics:
    """The three latency histograms of one node, in a registry of its own (several nodes may
    share a process: tests, the simulator's node mode)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submit = Histogram("parley_submit_seconds", "A local API submit, call to receipt.",
                                buckets=BUCKETS, registry=self.registry)
        self.delivery = Histogram(
            "parley_delivery_seconds",
            "A local submit to the first operation of another participant built on it.",
            buckets=BUCKETS, registry=self.registry,
        )
        self.finality = Histogram("parley_finality_seconds",
                                  "A local submit to its final (or rejected for good) status.",
                                  buckets=BUCKETS, registry=self.registry)
        self._undelivered: OrderedDict[bytes, float] = OrderedDict()  # op id -> submit time
        self._unfinal: OrderedDict[bytes, float] = OrderedDict()

    def submitted(self, op_id: bytes, began: float, now: float) -> None:
        self.submit.observe(now - began)
        for waiting in (self._undelivered, self._unfinal):
            waiting[op_id] = began
            if len(waiting) > MAX_TRACKED:
                waiting.popitem(last=False)

    def built_on(self, parents: Iterable[bytes], now: float) -> None:
        """Another participant's operation with these parents arrived."""
        for parent in parents:
            began = self._undelivered.pop(parent, None)
            if began is not None:
                self.delivery.observe(now - began)

    def settled(self, op_id: bytes, now: float) -> None:
        """A submitted operation's status can no longer change (final or rejected for good)."""
        began = self._unfinal.pop(op_id, None)
        if began is not None:
            self.finality.observe(now - began)

    def tracked(self) -> tuple[int, int]:
        """(waiting for delivery, waiting for finality)."""
        return len(self._undelivered), len(self._unfinal)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per histogram: count and the p50/p99 upper bucket bounds in ms (what a scrape would
        estimate), for `parley stats`."""
        result: dict[str, dict[str, float]] = {}
        for name, histogram in (("submit", self.submit), ("delivery", self.delivery), ("finality", self.finality)):
            cumulative = [(s.labels["le"], s.value) for s in _samples(histogram) if s.name.endswith("_bucket")]
            count = cumulative[-1][1] if cumulative else 0.0
            entry: dict[str, float] = {"count": count}
            for label, quantile in (("p50_ms", 0.5), ("p99_ms", 0.99)):
                bound = next((le for le, value in cumulative if count and value >= quantile * count), None)
                if bound is not None and bound != "+Inf":
                    entry[label] = float(bound) * 1000
            result[name] = entry
        return result


def _samples(histogram: Histogram) -> list[Sample]:
    return [sample for metric in histogram.collect() for sample in metric.samples]
