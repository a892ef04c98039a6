"""The node mode (whole nodes over the in-memory transport under trio's virtual clock) agrees
with the engine: on an honest run, on a partition with a quorum side, and on the no-quorum
partition whose stall the engine found (the real shell stalls too)."""

from __future__ import annotations

import pytest

from simulations.sim.node_mode import compare, run_nodes
from simulations.sim.scenario import Scenario, ScenarioError
from tests.simulations.sim.sim_kit import scenario


def partitioned(groups: list[list[int]]) -> Scenario:
    partition = {"start_ms": 3000, "end_ms": 8000, "groups": groups}
    network = {"latency": {"kind": "uniform", "low_ms": 5, "high_ms": 40}, "partitions": [partition]}
    return scenario(7, network=network, duration_ms=18_000, settle_ms=2000, liveness_bound_ms=8000)


def test_honest_run_agrees() -> None:
    verdicts = compare(scenario(duration_ms=6000, settle_ms=3000, liveness_bound_ms=4000), 1)
    assert all(v["engine"] is True and v["nodes"] is True for v in verdicts.values()), verdicts


def test_quorum_side_partition_agrees() -> None:
    verdicts = compare(partitioned([[0, 1, 2, 3, 4], [5, 6]]), 3)
    assert all(v["engine"] is True and v["nodes"] is True for v in verdicts.values()), verdicts


def test_no_quorum_partition_heals_in_whole_nodes_too() -> None:
    """Whole nodes stalled after this partition healed, as the engine did (lost votes were never
    sent again); both recover now that catch-up answers carry each peer's own votes."""
    verdicts = compare(partitioned([[0, 1, 2, 3], [4, 5, 6]]), 3)
    assert all(v["engine"] is True and v["nodes"] is True for v in verdicts.values()), verdicts


def test_byzantine_scenarios_are_refused() -> None:
    with pytest.raises(ScenarioError, match="honest scenarios only"):
        run_nodes(scenario(behaviours=[{"name": "silent", "participants": [3]}]), 1)
