"""The simulator's speed: virtual time per real second, and events per second.

    python benchmarks/sim.py [--skip-100] [--seed N]
    python benchmarks/sim.py --sweep 40      # the sweep's speed-up on a LocalCluster instead

Runs four shipped scenarios (4 participants; 7 trading both markets, with a lying oracle and a
self-trading, spoofing, front-running trader; 10; 100) once each, with the checks, and
prints one JSON line per scenario: ``virtual_s``, ``real_s``, ``ratio`` (virtual / real: above
1 is faster than real time), ``events`` and ``events_per_s`` (engine events: deliveries, ticks,
timeouts, workload arrivals), the verdicts and the run's finality. Target (issue 14): 4 nodes
at >= 100x real time; the 100-participant, 33-Byzantine minute in under 5 minutes.

``--sweep RUNS`` times `simulations/sweeps/four-loss.toml` (four loss rates) over RUNS/4 seeds
on a LocalCluster of 1 worker, then of 2 (one thread each), both including the cluster's
start-up, and prints ``speedup`` (target: >= 1.8 on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tempfile

from benchmarks.common import emit
from simulations.sim.run import run_scenario
from simulations.sim.scenario import load_scenario
from simulations.sim.sweep import run_sweep

SCENARIOS = Path(__file__).resolve().parent.parent / "simulations" / "scenarios"
RUNS = ("four-honest", "seven-trading-byzantine", "ten-three-byzantine-lossy", "hundred-33-byzantine")


def measure(name: str, seed: int) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    began = time.perf_counter()
    output = run_scenario(scenario, seed)
    real = time.perf_counter() - began
    results = output.results
    events = results["metrics"]["events"]
    emit(
        bench="sim", scenario=name, participants=scenario.participants, byzantine=len(scenario.byzantine),
        seed=seed, virtual_s=scenario.end_ms / 1000, real_s=round(real, 3),
        ratio=round(scenario.end_ms / 1000 / real, 2), events=events, events_per_s=round(events / real),
        ok=output.ok, violations=[v["check"] for v in results["violations"]],
        finality_p50_ms=results["metrics"]["finality_ms"]["p50"],
        finality_p99_ms=results["metrics"]["finality_ms"]["p99"], msgs_per_op=results["metrics"]["msgs_per_op"],
    )


def measure_sweep(runs: int) -> None:
    sweep = SCENARIOS.parent / "sweeps" / "four-loss.toml"
    seeds = range(max(1, runs // 4))
    seconds = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            began = time.perf_counter()
            rows = run_sweep(sweep, seeds, Path(folder), "bench", workers=workers)
            seconds[workers] = time.perf_counter() - began
    emit(bench="sim_sweep", runs=len(rows), one_worker_s=round(seconds[1], 2), two_workers_s=round(seconds[2], 2),
         speedup=round(seconds[1] / seconds[2], 2), violations=sum(1 for row in rows if row["violations"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-100", action="store_true", help="Not the 100-participant scenario.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sweep", type=int, metavar="RUNS", help="Time a sweep of RUNS runs on 1, then 2 workers.")
    args = parser.parse_args()
    if args.sweep:
        measure_sweep(args.sweep)
        return
    for name in RUNS[:-1] if args.skip_100 else RUNS:
        measure(name, args.seed)


if __name__ == "__main__":
    main()
