"""The engine drives the real machines: honest nodes converge and checkpoints get decided."""

from __future__ import annotations

from simulations.sim.engine import Engine
from simulations.sim.scenario import parse_scenario


def small(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "small", "participants": 4, "duration_ms": 8000, "settle_ms": 3000,
        "workload": {"rate_per_s": 5},
        "network": {"latency": {"kind": "uniform", "low_ms": 5, "high_ms": 40}},
    }
    base.update(overrides)
    return base


def test_honest_nodes_converge_and_decide() -> None:
    engine = Engine(parse_scenario(small()), seed=3)
    engine.run()
    replicas = [node.replica for node in engine.nodes]
    assert engine.record.signed > 100
    assert {len(r.graph) for r in replicas} == {engine.record.signed}
    assert len({r.state_hash() for r in replicas}) == 1
    assert min(r.version for r in replicas) >= 5
    assert len(engine.record.finality_ms) == engine.record.signed_honest


def test_lossy_links_are_repaired_by_sync() -> None:
    network = {"latency": {"kind": "lognormal", "median_ms": 30, "sigma": 0.8}, "loss": 0.3, "duplicate": 0.1}
    engine = Engine(parse_scenario(small(network=network)), seed=5)
    engine.run()
    stats = engine.network.stats
    assert stats.lost > 100
    assert stats.duplicated > 10
    assert len({node.replica.state_hash() for node in engine.nodes}) == 1
    assert len({len(node.replica.graph) for node in engine.nodes}) == 1


def test_same_seed_same_run_other_seed_other_run() -> None:
    def trace(seed: int) -> list[dict[str, object]]:
        engine = Engine(parse_scenario(small(duration_ms=3000, settle_ms=1000)), seed=seed)
        engine.run()
        return engine.events

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)
