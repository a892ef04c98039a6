"""What the benchmark scripts share: one JSON line per measurement, percentiles, and runs of
the pure-Python build beside the compiled one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import crdt


def emit(**fields: object) -> None:
    """One measurement; ``build`` says which build of the crdt core made it (`crdt.BUILD`)."""
    print(json.dumps({**fields, "build": crdt.BUILD}), flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 of durations in seconds, in milliseconds."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1e3, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 3),
    }


def pure_too(flag: str = "--this-build-only") -> None:
    """After a run of the compiled build, the same benchmark again with the pure-Python build, in
    a subprocess (``PARLEY_PURE=1``) with the same arguments, its lines after this run's: both
    builds side by side, each with its own baseline. `flag` (which the script must accept)
    skips it."""
    if crdt.BUILD != "compiled" or flag in sys.argv:
        return
    sys.stdout.flush()
    subprocess.run([sys.executable, *sys.argv, flag], env={**os.environ, "PARLEY_PURE": "1"}, check=True)
