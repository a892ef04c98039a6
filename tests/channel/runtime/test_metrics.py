"""The node's own measurements: the current rate and the latency histograms, on explicit times
(no clock is read)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from channel.runtime.metrics import MAX_TRACKED, NodeMetrics, RateWindow


def test_the_rate_covers_the_last_window_not_the_time_since_start() -> None:
    rate = RateWindow(window=10.0, resolution=0.25)
    total = 0
    for second in range(60):  # 100 per second for a minute
        total += 100
        rate.observe(float(second), total)
    assert rate.rate(59.0, total) == 100.0
    # then nothing for 20 s: the window holds no growth, whatever the average since start
    assert rate.rate(79.0, total) == 0.0
    # half the window idle, half at 50/s
    for second in range(80, 86):
        total += 50
        rate.observe(float(second), total)
    assert rate.rate(85.0, total) == 30.0  # 300 in the last 10 s


@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(0, 1000)), min_size=1, max_size=200))
@example(steps=[(0.0, 1), (5.0, 0), (5.0, 0)])  # two samples at the window's start (CI, stop 25)
@example(steps=[(0.0, 1), (0.125, 0), (0.0625, 0), (1.125, 0), (3.875, 0), (4.875, 0)])  # merged
def test_the_rate_is_the_growth_over_the_window_within_one_resolution_step(
        steps: list[tuple[float, int]]) -> None:
    """Against a reference that keeps every sample: the rate over [now - window, now], with the
    total at the window's start known to within one resolution step either side of it (samples
    closer than a step are merged, so what the window kept near the start may be a later one)."""
    resolution = 0.25
    window = RateWindow(window=10.0, resolution=resolution)
    now, total, history = 0.0, 0, [(0.0, 0)]
    window.observe(0.0, 0)
    for gap, added in steps:
        now += gap
        total += added
        window.observe(now, total)
        history.append((now, total))
    got = window.rate(now, total)
    elapsed = min(10.0, now)
    if elapsed == 0:
        assert got == 0.0
        return
    # the total only grows, so the start's total is at least the last sample a step before the
    # start and at most the first sample a step after it; the rate lies between what they give
    start, slack = now - 10.0, resolution + 1e-9
    low_start = max([v for t, v in history if t <= start - slack], default=0)
    high_start = min([v for t, v in history if t >= start + slack], default=total)
    assert (total - high_start) / elapsed - 1e-9 <= got <= (total - low_start) / elapsed + 1e-9
    assert got >= 0


def test_latencies_are_observed_once_each_and_only_for_submitted_operations() -> None:
    metrics = NodeMetrics()
    metrics.submitted(b"a", began=1.0, now=1.004)
    metrics.submitted(b"b", began=2.0, now=2.002)
    metrics.built_on([b"a", b"z"], now=1.04)  # b"z" was never submitted here
    metrics.built_on([b"a"], now=1.5)  # a second peer building on it: already delivered
    metrics.settled(b"a", now=2.0)
    metrics.settled(b"a", now=3.0)
    summary = metrics.summary()
    assert summary["submit"]["count"] == 2
    assert summary["submit"]["p50_ms"] == 2.5  # 2 ms and 4 ms: the 2.5 ms bucket holds half
    assert summary["submit"]["p99_ms"] == 5.0
    assert summary["delivery"] == {"count": 1.0, "p50_ms": 50.0, "p99_ms": 50.0}  # 40 ms: the 50 ms bucket
    assert summary["finality"] == {"count": 1.0, "p50_ms": 1000.0, "p99_ms": 1000.0}  # 1 s
    assert metrics.tracked() == (1, 1)  # b"b" waits for both


def test_waiting_operations_are_bounded() -> None:
    metrics = NodeMetrics()
    for i in range(MAX_TRACKED + 5):
        metrics.submitted(i.to_bytes(4, "big"), began=0.0, now=0.001)
    assert metrics.tracked() == (MAX_TRACKED, MAX_TRACKED)
    metrics.settled((0).to_bytes(4, "big"), now=1.0)  # the oldest were forgotten, not measured
    assert metrics.summary()["finality"]["count"] == 0
