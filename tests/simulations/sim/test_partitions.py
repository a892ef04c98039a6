"""Partitions: the honest side with a quorum keeps deciding and the others catch up after the
heal; a partition that leaves no side a quorum decides again once it heals (the votes lost in it
come back through catch-up answers, `channel.runtime.catchup`)."""

from __future__ import annotations

from simulations.sim.run import run_scenario
from tests.simulations.sim.sim_kit import SAFETY, failed, scenario


def partitioned(groups: list[list[int]]) -> dict[str, object]:
    partition = {"start_ms": 3000, "end_ms": 9000, "groups": groups}
    network = {"latency": {"kind": "uniform", "low_ms": 5, "high_ms": 40}, "partitions": [partition]}
    return run_scenario(
        scenario(7, network=network, duration_ms=16_000, settle_ms=4000, liveness_bound_ms=5000), 3
    ).results


def test_quorum_side_decides_and_the_rest_catch_up_after_the_heal() -> None:
    results = partitioned([[0, 1, 2, 3, 4], [5, 6]])
    assert failed(results) == []
    assert results["verdicts"]["liveness"]["ok"] is True
    assert results["metrics"]["versions"]["min"] == results["metrics"]["versions"]["max"]
    assert 0 < results["metrics"]["recovery_after_heal_ms"] < 5000


def test_asymmetric_partition_keeps_safety_and_liveness() -> None:
    partition = {"start_ms": 2000, "end_ms": 6000, "from": [0], "to": [1, 2]}
    network = {"latency": {"kind": "fixed", "ms": 20}, "partitions": [partition]}
    results = run_scenario(scenario(5, network=network, duration_ms=12_000), 1).results
    assert failed(results) == []


def test_no_quorum_partition_heals_into_progress() -> None:
    """Regression (a strict xfail until session 8): votes lost in the partition were never sent
    again, and no height was ever decided after the heal."""
    results = partitioned([[0, 1, 2, 3], [4, 5, 6]])
    assert all(results["verdicts"][check]["ok"] is not False for check in SAFETY)
    assert results["verdicts"]["liveness"]["ok"] is True
