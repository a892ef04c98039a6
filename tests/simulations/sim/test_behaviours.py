"""Every Byzantine behaviour leaves the honest nodes safe (and live, with f < n/3), does what it
says (the honest nodes see its effect), and the negative controls: an honest rule broken behind
a test-only switch is caught by the checks."""

from __future__ import annotations

from typing import Any

import pytest

from simulations.sim.engine import Switches
from simulations.sim.run import run_scenario
from simulations.sim.scenario import ScenarioError
from tests.simulations.sim.sim_kit import SAFETY, failed, scenario


def effect_equivocate(results: dict[str, Any]) -> bool:
    metrics = results["metrics"]
    return metrics["evidence"]["operation"] > 0 and metrics["rejects"]["replay"]["equivocation"] > 0


def effect_twins(results: dict[str, Any]) -> bool:
    return results["metrics"]["evidence"]["operation"] > 0


def effect_double_vote(results: dict[str, Any]) -> bool:
    return results["metrics"]["evidence"]["consensus"].get("double_vote", 0) > 0


def effect_double_propose(results: dict[str, Any]) -> bool:
    return results["metrics"]["evidence"]["consensus"].get("double_proposal", 0) > 0


def effect_bad_proposal(results: dict[str, Any]) -> bool:
    return results["metrics"]["versions"]["min"] > 0  # live, and (the safety checks) never decided a lie


def effect_inputs(code: str) -> Any:
    return lambda results: results["metrics"]["rejects"]["inputs"].get(code, 0) > 0


def effect_withhold(results: dict[str, Any]) -> bool:
    return results["metrics"]["evidence"]["operation"] == 0 and results["verdicts"]["eventual_convergence"]["ok"]


CASES = [
    ("equivocate", {}, effect_equivocate),
    ("twins", {}, effect_twins),
    ("twins", {"split": True}, effect_twins),
    ("double_vote", {}, effect_double_vote),
    ("double_propose", {}, effect_double_propose),
    ("bad_proposal", {}, effect_bad_proposal),
    ("withhold", {"channels": ["ops", "sync", "consensus"], "targets": "split"}, effect_withhold),
    ("withhold", {"channels": ["ops"], "targets": [0, 1]}, effect_withhold),
    ("sync_lies", {"mode": "garbage"}, effect_inputs("malformed")),
    ("sync_lies", {"mode": "false_heads"}, lambda results: True),
    ("sync_lies", {"mode": "endless_wants"}, lambda results: True),
    ("silent", {"from_ms": 2000}, lambda results: results["metrics"]["versions"]["min"] > 3),
    ("stale_parents", {}, lambda results: results["metrics"]["rejects"]["replay"].get("stale", 0) > 0),
    ("flood_pending", {"count": 8}, lambda results: results["metrics"]["pending_max"] > 0),
    ("time_skew", {"skew_ms": 60_000}, lambda results: results["metrics"]["later_round_decisions"] > 0),
    ("time_skew", {"skew_ms": 3_000}, lambda results: results["metrics"]["later_round_decisions"] == 0),
    # an honest run of this scenario and seed receives 13 duplicates (gossip and sync overlapping)
    ("replay_ops", {"count": 4}, lambda results: results["metrics"]["ops_duplicates_received"] > 300),
]


@pytest.mark.parametrize(("name", "params", "effect"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_behaviour_keeps_honest_nodes_safe_and_live(name: str, params: dict[str, Any], effect: Any) -> None:
    results = run_scenario(scenario(behaviours=[{"name": name, "participants": [3], "params": params}]), 11).results
    assert failed(results) == []
    assert all(results["verdicts"][check]["ok"] is not False for check in SAFETY)
    assert results["verdicts"]["liveness"]["ok"] is True
    assert effect(results), results["metrics"]


def test_several_behaviours_at_ten_under_loss() -> None:
    behaviours = [
        {"name": "equivocate", "participants": [7]},
        {"name": "double_vote", "participants": [8]},
        {"name": "double_propose", "participants": [8]},
        {"name": "withhold", "participants": [9], "params": {"channels": ["ops", "consensus"]}},
    ]
    network = {"latency": {"kind": "uniform", "low_ms": 5, "high_ms": 80}, "loss": 0.2}
    results = run_scenario(scenario(10, behaviours, network=network, workload={"rate_per_s": 2}), 2).results
    assert failed(results) == []
    assert results["verdicts"]["liveness"]["ok"] is True


def test_negative_control_accepting_any_proposal_is_caught() -> None:
    """Honest nodes that prevote without comparing roots certify the liar's checkpoint: the
    replay check must say so, with the seed."""
    sc = scenario(behaviours=[{"name": "bad_proposal", "participants": [1, 3]}])
    broken = run_scenario(sc, 4, switches=Switches(accept_any_proposal=True)).results
    assert "replay" in failed(broken)
    assert broken["violations"][0]["seed"] == 4
    assert failed(run_scenario(sc, 4).results) == []


def test_negative_control_ignoring_sync_is_caught() -> None:
    """Without sync repair, what a withholding node hides from half the honest nodes stays hidden."""
    sc = scenario(behaviours=[{"name": "withhold", "participants": [3], "params": {"channels": ["ops"]}}],
                  gossip={"mesh_degree": 0})
    assert "eventual_convergence" in failed(run_scenario(sc, 4, switches=Switches(ignore_sync_ops=True)).results)
    assert failed(run_scenario(sc, 4).results) == []


def test_unknown_behaviour_and_bad_params_are_clear_errors() -> None:
    with pytest.raises(ScenarioError, match="unknown behaviour 'lie'"):
        run_scenario(scenario(behaviours=[{"name": "lie", "participants": [3]}]), 1)
    with pytest.raises(ScenarioError, match="behaviour withhold: channels"):
        run_scenario(scenario(behaviours=[{"name": "withhold", "participants": [3], "params": {"channels": ["x"]}}]), 1)
