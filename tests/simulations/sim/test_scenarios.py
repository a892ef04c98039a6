"""Scenario files: strict validation, clear errors, and every shipped scenario parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.sim.behaviours import make_behaviours
from simulations.sim.scenario import ScenarioError, load_scenario, parse_scenario

SHIPPED = sorted((Path(__file__).resolve().parents[3] / "simulations" / "scenarios").glob("*.toml"))


def test_at_least_eight_scenarios_ship_and_validate() -> None:
    assert len(SHIPPED) >= 8
    for path in SHIPPED:
        scenario = load_scenario(path)
        make_behaviours(scenario.behaviours)  # behaviour names and parameters too
        assert scenario.name == path.stem


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "participants": 4, "duration_ms": 10, "speed": 2}, "speed: Extra inputs are not permitted"),
        ({"name": "x", "participants": 4, "duration_ms": 10, "network": {"los": 0.1}}, "network.los"),
        ({"name": "x", "participants": 4, "duration_ms": 10, "network": {"loss": 1.5}}, "network.loss"),
        ({"name": "x", "participants": 4, "duration_ms": 10, "behaviours": [{"name": "twins", "participants": [4]}]},
         "outside 0..3"),
        ({"name": "x", "participants": 4, "duration_ms": 10,
          "network": {"partitions": [{"start_ms": 5, "groups": [[0]], "from": [1], "to": [2]}]}}, "either groups"),
        ({"name": "x", "participants": 4, "duration_ms": 10,
          "network": {"latency": {"kind": "uniform", "low_ms": 9, "high_ms": 3}}}, "high_ms must be at least"),
    ],
)
def test_bad_scenarios_are_refused_with_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data)


def test_unreadable_files_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(bad)


def test_digest_names_the_content() -> None:
    base = {"name": "x", "participants": 4, "duration_ms": 10}
    assert parse_scenario(base).digest == parse_scenario(dict(base)).digest
    assert parse_scenario(base).digest != parse_scenario({**base, "duration_ms": 11}).digest
