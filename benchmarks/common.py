"""What the benchmark scripts share: one JSON line per measurement, and percentiles."""

from __future__ import annotations

import json


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 of durations in seconds, in milliseconds."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1e3, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 3),
    }
