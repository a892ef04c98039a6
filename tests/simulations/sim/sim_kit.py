"""Small scenarios for the simulator's tests (each run takes about a second)."""

from __future__ import annotations

from typing import Any

from simulations.sim.scenario import Scenario, parse_scenario

SAFETY = (
    "agreement", "certificates", "replay", "convergence", "eventual_convergence", "conservation", "evidence", "trading",
    "oracle",
)


def scenario(participants: int = 4, behaviours: list[dict[str, Any]] | None = None, **overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "test", "participants": participants, "duration_ms": 10_000, "settle_ms": 4_000,
        "liveness_bound_ms": 6_000, "workload": {"rate_per_s": 5},
        "network": {"latency": {"kind": "uniform", "low_ms": 5, "high_ms": 40}},
        "behaviours": behaviours or [],
    }
    data.update(overrides)
    return parse_scenario(data)


def failed(results: dict[str, Any]) -> list[str]:
    """The checks that found a violation."""
    return sorted(name for name, verdict in results["verdicts"].items() if verdict["ok"] is False)
