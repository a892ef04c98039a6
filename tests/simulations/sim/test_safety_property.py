"""The simulator's safety law, as a property: whatever the network (latency, loss, duplication),
the Byzantine behaviour and the seed, the honest nodes never violate a safety check, and with
f < n/3 and no partition they stay live."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulations.sim.behaviours import BEHAVIOURS
from simulations.sim.run import run_scenario
from tests.simulations.sim.sim_kit import SAFETY, scenario

NAMES = sorted(BEHAVIOURS)


@st.composite
def runs(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    n = draw(st.integers(4, 7))
    byzantine = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=(n - 1) // 3, unique=True))
    behaviour = draw(st.sampled_from(NAMES))
    low = draw(st.integers(1, 30))
    network = {
        "latency": {"kind": "uniform", "low_ms": low, "high_ms": low + draw(st.integers(0, 120))},
        "loss": draw(st.sampled_from([0.0, 0.05, 0.2])),
        "duplicate": draw(st.sampled_from([0.0, 0.1])),
    }
    data = {"participants": n, "behaviours": [{"name": behaviour, "participants": sorted(byzantine)}],
            "network": network, "duration_ms": 6000, "settle_ms": 3000, "liveness_bound_ms": 4000}
    return data, draw(st.integers(0, 2**32))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_honest_nodes_stay_safe_and_live(run: tuple[dict[str, Any], int]) -> None:
    data, seed = run
    results = run_scenario(scenario(**data), seed, trace=False).results
    for check in SAFETY:
        assert results["verdicts"][check]["ok"] is not False, (check, results["verdicts"][check], seed)
    assert results["verdicts"]["liveness"]["ok"] is not False, (results["verdicts"]["liveness"], seed)
