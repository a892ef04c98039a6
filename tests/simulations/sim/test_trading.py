"""Trading in the simulator: honest order flow on the spot and perp markets keeps TRADING.md's
invariants at every honest replica, each trading behaviour leaves the honest nodes safe and
live and has its effect, and the trading checks catch what they are for (negative controls)."""

from __future__ import annotations

from typing import Any

import pytest

from crdt.markets.book import Fill
from simulations.sim.checks import run_checks
from simulations.sim.engine import Engine
from simulations.sim.run import run_scenario
from simulations.sim.scenario import ScenarioError
from tests.simulations.sim.sim_kit import SAFETY, failed, scenario

TRADING = {"markets": ["spot", "perp"], "orders_per_s": 5, "oracles": [0, 1, 2]}


def trading(behaviours: list[dict[str, Any]] | None = None, **overrides: Any) -> Any:
    settings = {"workload": {"rate_per_s": 1}, "trading": TRADING, "duration_ms": 12_000, "settle_ms": 3000}
    return scenario(7, behaviours, **{**settings, **overrides})


def test_honest_order_flow_keeps_the_invariants() -> None:
    results = run_scenario(trading(), 3).results
    assert failed(results) == []
    verdicts = results["verdicts"]
    assert verdicts["trading"]["ok"] is True
    assert verdicts["oracle"]["ok"] is True
    assert verdicts["liveness"]["ok"] is True
    metrics = results["metrics"]["trading"]
    assert metrics["fills"] > 20
    assert metrics["open_orders"] > 0
    assert metrics["prices_fixed"] > 0
    assert metrics["closed"]["cancelled"] > 0
    assert metrics["forged"] == {}
    # every order the honest nodes signed passed their dry run: replay rejects almost none (one
    # that sorted after a concurrent order it would now cross, or cancelled a filled one)
    assert sum(results["metrics"]["rejects"]["replay"].values()) <= metrics["orders_signed"] // 50


def effect_self_trade(metrics: dict[str, Any]) -> bool:
    return metrics["forged"].get("self_trade", 0) > 0 and metrics["closed"].get("self_trade", 0) > 0


def effect_spoof(metrics: dict[str, Any]) -> bool:
    return metrics["forged"].get("spoof", 0) > 10 and metrics["closed"].get("cancelled", 0) > 0


def effect_front_run(metrics: dict[str, Any]) -> bool:
    """The attack works within its documented bound (README, "Queue priority"): some of its
    orders sort ahead of the orders they answer, never all."""
    front = metrics["front_runs"]
    return 0 < front["sorted_ahead"] < front["signed"]


@pytest.mark.parametrize(("name", "participant", "effect"), [
    ("self_trade", 6, effect_self_trade),
    ("spoof", 6, effect_spoof),
    ("front_run", 6, effect_front_run),
    ("oracle_outlier", 2, lambda metrics: metrics["prices_fixed"] > 0),
])
def test_trading_behaviour_keeps_honest_nodes_safe_and_live(name: str, participant: int, effect: Any) -> None:
    results = run_scenario(trading([{"name": name, "participants": [participant]}]), 5).results
    assert failed(results) == []
    assert all(results["verdicts"][check]["ok"] is True for check in (*SAFETY, "trading", "oracle", "liveness"))
    assert effect(results["metrics"]["trading"]), results["metrics"]["trading"]


def test_the_shipped_byzantine_trader_and_oracle_together() -> None:
    behaviours = [{"name": "oracle_outlier", "participants": [2], "params": {"factor_e9": 100_000_000}}] + [
        {"name": name, "participants": [6]} for name in ("self_trade", "spoof", "front_run")
    ]
    results = run_scenario(trading(behaviours, network={"latency": {"kind": "uniform", "low_ms": 5, "high_ms": 80},
                                                         "loss": 0.1}), 8).results
    assert failed(results) == []
    assert results["verdicts"]["liveness"]["ok"] is True


def test_negative_control_a_majority_of_lying_oracles_is_caught() -> None:
    """With two of three oracles posting ten times the price the median is theirs: the oracle
    check must see the prices outside the honest range (f exceeds what the median tolerates)."""
    results = run_scenario(trading([{"name": "oracle_outlier", "participants": [1, 2]}]), 5).results
    assert "oracle" in failed(results)
    assert results["violations"][0]["seed"] == 5


class WithFills:
    """A replica whose fills are `fills` (the compiled `Replica` has no instance attributes to patch)."""

    def __init__(self, replica: Any, fills: list[Fill]) -> None:
        self._replica, self._fills = replica, fills

    def fills(self) -> list[Fill]:
        return self._fills

    def __getattr__(self, name: str) -> Any:
        return getattr(self._replica, name)


def test_negative_control_a_self_fill_is_caught() -> None:
    """A replica whose fills included one between an account and itself (matching without the
    self-trade rule) fails the trading check."""
    engine = Engine(trading(), 3)
    engine.run()
    assert {v.name: v.ok for v in run_checks(engine)}["trading"] is True
    node = engine.honest[1]
    real = node.replica.fills()
    fill = real[0]
    forged = Fill(fill.taker_order, fill.maker_order, fill.maker, fill.maker, fill.market, fill.price, fill.qty,
                  fill.taker_fee, fill.maker_fee)
    node.replica = WithFills(node.replica, [*real, forged])  # type: ignore[assignment]
    verdicts = {verdict.name: verdict for verdict in run_checks(engine)}
    assert verdicts["trading"].ok is False
    assert "and itself" in verdicts["trading"].detail


def test_trading_determinism_in_one_process() -> None:
    behaviours = [{"name": "front_run", "participants": [6]}, {"name": "oracle_outlier", "participants": [2]}]
    sc = trading(behaviours, duration_ms=5000, settle_ms=2000)
    first, second = run_scenario(sc, 7), run_scenario(sc, 7)
    assert first.results_bytes == second.results_bytes
    assert first.events_bytes == second.events_bytes


def test_trading_behaviours_need_markets_and_oracles() -> None:
    with pytest.raises(ScenarioError, match="needs markets"):
        run_scenario(scenario(behaviours=[{"name": "spoof", "participants": [3]}]), 1)
    with pytest.raises(ScenarioError, match="not an oracle"):
        run_scenario(trading([{"name": "oracle_outlier", "participants": [5]}]), 1)
    with pytest.raises(ScenarioError, match="perp market needs oracles"):
        scenario(trading={"markets": ["perp"]})
