"""Runs a few scenarios and prints their files' digests as JSON (for `test_builds`): which
build of the engine ran, and the SHA-256 of each run's results.json and events.jsonl."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import simulations.sim
from simulations.sim.run import run_scenario
from simulations.sim.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[3] / "simulations" / "scenarios"
RUNS = (("four-one-equivocator", 2), ("twins-four", 1), ("crash-power-cut", 0))


def main() -> None:
    out: dict[str, object] = {"build": simulations.sim.BUILD}
    for name, seed in RUNS:
        run = run_scenario(load_scenario(SCENARIOS / f"{name}.toml"), seed)
        out[f"{name}:{seed}"] = [hashlib.sha256(data).hexdigest() for data in (run.results_bytes, run.events_bytes)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
