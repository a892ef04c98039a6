"""One run of a scenario with a seed, and its files; replaying a run and comparing it.

`run_scenario` runs the engine, the checks and the metrics, and (given a folder) writes:
- ``results.json``: the scenario's name and digest, the seed, the options drawn from the seed,
  the verdicts, the violations and the metrics. It holds no wall-clock reading, so the same
  scenario and seed give the same bytes in any process (`tests/simulations/sim/test_determinism.py`);
- ``events.jsonl``: one JSON object per event (virtual ms, node, what), sorted keys;
- ``timeline.txt``: the same events one line each, VOPR-style, for reading;
- ``scenario.json``: the scenario as validated, which `replay_run` runs again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulations.sim.checks import metrics, run_checks
from simulations.sim.engine import Engine, Switches
from simulations.sim.scenario import Scenario, ScenarioError, parse_scenario

RESULTS, EVENTS, TIMELINE, SCENARIO = "results.json", "events.jsonl", "timeline.txt", "scenario.json"
_EVENT_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # one events.jsonl line (ASCII)


@dataclass(frozen=True, slots=True)
class RunOutput:
    results: dict[str, Any]
    results_bytes: bytes
    events_bytes: bytes
    timeline: str
    engine: Engine

    @property
    def ok(self) -> bool:
        return not self.results["violations"]


def _dumps(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=2) + "\n").encode()


def _timeline_line(event: dict[str, Any]) -> str:
    node = event["node"]
    who = "    " if node is None else f"n{node:<3}"
    rest = " ".join(f"{k}={v}" for k, v in sorted(event.items()) if k not in ("t", "node", "event"))
    return f"{event['t']:>9} ms {who} {event['event']:<10} {rest}".rstrip()


def run_scenario(
    scenario: Scenario,
    seed: int,
    out: Path | None = None,
    progress: Callable[[int], None] | None = None,
    switches: Switches | None = None,
    trace: bool = True,
    on_options: Callable[[dict[str, Any]], None] | None = None,
) -> RunOutput:
    """Run `scenario` with `seed`; write the run's files into `out` when given. `on_options`
    gets the options the seed drew, before the run starts."""
    engine = Engine(scenario, seed, switches, trace=trace)
    if on_options is not None:
        on_options(engine.options)
    engine.run(progress)
    verdicts = run_checks(engine)
    results = {
        "scenario": scenario.name,
        "scenario_sha256": scenario.digest,
        "seed": seed,
        "participants": scenario.participants,
        "byzantine": scenario.byzantine,
        "nodes": len(engine.nodes),
        "virtual_ms": scenario.end_ms,
        "options": engine.options,
        "verdicts": {v.name: v.as_dict() for v in verdicts},
        "violations": [{"check": v.name, "detail": v.detail, "seed": seed} for v in verdicts if v.ok is False],
        "metrics": metrics(engine),
    }
    encode = _EVENT_JSON.encode  # json.dumps with these arguments would build an encoder per event
    events_bytes = "".join(encode(event) + "\n" for event in engine.events).encode()
    timeline = "".join(_timeline_line(event) + "\n" for event in engine.events)
    output = RunOutput(results, _dumps(results), events_bytes, timeline, engine)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULTS).write_bytes(output.results_bytes)
        (out / EVENTS).write_bytes(events_bytes)
        (out / TIMELINE).write_text(timeline)
        (out / SCENARIO).write_bytes(_dumps(scenario.model_dump(mode="json", by_alias=True)))
    return output


@dataclass(frozen=True, slots=True)
class ReplayReport:
    identical: bool
    differences: list[str]
    output: RunOutput


def replay_run(folder: Path, progress: Callable[[int], None] | None = None) -> ReplayReport:
    """Run the scenario and seed stored in `folder` again, and compare its files byte for byte."""
    try:
        stored = json.loads((folder / RESULTS).read_text())
        scenario = parse_scenario(json.loads((folder / SCENARIO).read_text()), str(folder / SCENARIO))
        seed = stored["seed"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScenarioError(f"{folder}: not a simulation run folder ({exc})") from None
    if not isinstance(seed, int):
        raise ScenarioError(f"{folder / RESULTS}: the seed is not an integer")
    output = run_scenario(scenario, seed, progress=progress)
    differences = []
    if (folder / RESULTS).read_bytes() != output.results_bytes:
        differences.append(RESULTS)
    events = folder / EVENTS
    if not events.exists() or events.read_bytes() != output.events_bytes:
        differences.append(EVENTS)
    return ReplayReport(not differences, differences, output)
