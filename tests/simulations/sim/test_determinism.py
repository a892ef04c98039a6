"""Same scenario and seed, same bytes: in one process, and across processes with other hash seeds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from simulations.sim.run import run_scenario
from tests.simulations.sim.sim_kit import scenario

ROOT = Path(__file__).resolve().parents[3]
BYZANTINE = [
    {"name": "equivocate", "participants": [3]}, {"name": "double_vote", "participants": [3]},
    {"name": "twins", "participants": [2]},
]
FAULTS = [{"kind": "power_cut", "participants": [1], "at_ms": 1500, "restart_ms": 2500}]
LOSSY = {"latency": {"kind": "lognormal", "median_ms": 30, "sigma": 0.7}, "loss": 0.1, "duplicate": 0.05}
TRADING = {"markets": ["spot", "perp"], "orders_per_s": 10, "oracles": [0]}  # orders, fills, the oracle median

SCRIPT = """
import hashlib, sys
from simulations.sim.run import run_scenario
from tests.simulations.sim.sim_kit import scenario
sc = scenario(behaviours={behaviours!r}, network={network!r}, faults={faults!r}, trading={trading!r}, duration_ms=5000,
              settle_ms=2000)
out = run_scenario(sc, 7)
print(hashlib.sha256(out.results_bytes).hexdigest(), hashlib.sha256(out.events_bytes).hexdigest())
"""


def digests(results: bytes, events: bytes) -> str:
    return f"{hashlib.sha256(results).hexdigest()} {hashlib.sha256(events).hexdigest()}"


def test_twice_in_one_process_gives_identical_files() -> None:
    sc = scenario(behaviours=BYZANTINE, network=LOSSY, faults=FAULTS, trading=TRADING, duration_ms=5000, settle_ms=2000)
    first, second = run_scenario(sc, 7), run_scenario(sc, 7)
    assert first.results_bytes == second.results_bytes
    assert first.events_bytes == second.events_bytes
    assert first.results["metrics"]["network"]["lost"] > 0  # the seeded draws were exercised
    assert first.results["metrics"]["trading"]["fills"] > 0
    assert run_scenario(sc, 8).events_bytes != first.events_bytes


def test_two_processes_with_different_hash_seeds_agree() -> None:
    code = SCRIPT.format(behaviours=BYZANTINE, network=LOSSY, faults=FAULTS, trading=TRADING)
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120, check=True)
        outputs.append(done.stdout.strip())
    sc = scenario(behaviours=BYZANTINE, network=LOSSY, faults=FAULTS, trading=TRADING, duration_ms=5000, settle_ms=2000)
    here = run_scenario(sc, 7)
    assert outputs[0] == outputs[1] == digests(here.results_bytes, here.events_bytes)
