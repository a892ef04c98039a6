"""The node mode (whole nodes over the in-memory transport under trio's virtual clock) agrees
with the engine: on an honest run, on a partition with a quorum side, on the no-quorum
partition whose stall the engine found (the real shell stalls too). What a whole node cannot
express is refused."""

from __future__ import annotations

from typing import Any

import pytest

from crdt import testing
from crdt.ops import address_of, sign_op
from crdt.replica import Replica
from simulations.sim.engine import TOKEN
from simulations.sim.node_mode import check_evidence, compare, run_nodes
from simulations.sim.scenario import Scenario, ScenarioError
from tests.simulations.sim.sim_kit import scenario

SHORT: dict[str, Any] = {"duration_ms": 6000, "settle_ms": 3000, "liveness_bound_ms": 4000}


def partitioned(groups: list[list[int]]) -> Scenario:
    partition = {"start_ms": 3000, "end_ms": 8000, "groups": groups}
    network = {"latency": {"kind": "uniform", "low_ms": 5, "high_ms": 40}, "partitions": [partition]}
    return scenario(7, network=network, duration_ms=18_000, settle_ms=2000, liveness_bound_ms=8000)


def agree(verdicts: dict[str, dict[str, bool | None]]) -> bool:
    return all(v["engine"] is True and v["nodes"] is True for v in verdicts.values())


def test_honest_run_agrees() -> None:
    verdicts = compare(scenario(**SHORT), 1)
    assert agree(verdicts), verdicts


def test_quorum_side_partition_agrees() -> None:
    verdicts = compare(partitioned([[0, 1, 2, 3, 4], [5, 6]]), 3)
    assert agree(verdicts), verdicts


def test_no_quorum_partition_heals_in_whole_nodes_too() -> None:
    """Whole nodes stalled after this partition healed, as the engine did (lost votes were never
    sent again); both recover now that catch-up answers carry each peer's own votes."""
    verdicts = compare(partitioned([[0, 1, 2, 3], [4, 5, 6]]), 3)
    assert agree(verdicts), verdicts


@pytest.mark.parametrize(
    ("behaviour", "params"),
    [("double_vote", {}), ("twins", {}), ("withhold", {"targets": "split"}), ("equivocate", {"probability": 0.5})],
)
def test_behaviours_a_whole_node_cannot_express_are_refused(behaviour: str, params: dict[str, Any]) -> None:
    spec = {"name": behaviour, "participants": [3], "params": params}
    with pytest.raises(
        ScenarioError, match=rf"cannot run behaviour {behaviour} .*it runs equivocate, silent, withhold"
    ):
        run_nodes(scenario(behaviours=[spec]), 1)


def test_power_cut_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"cannot model power_cut.*the engine models it"):
        run_nodes(scenario(faults=[{"kind": "power_cut", "participants": [0], "at_ms": 1000}]), 1)


def test_the_evidence_check_fails_when_it_should() -> None:
    """On a real replica holding both operations of one (author, seq): it passes with the
    replica's own evidence, and fails without it, or when the author or a consensus accusation
    names an honest participant."""
    keys = testing.test_keys(b"parley-sim-%d", 4)
    replica = Replica(testing.make_genesis(keys, [TOKEN], initial=10**18))
    body = {"to": address_of(keys[0]), "token": TOKEN.symbol}
    replica.receive_many([sign_op(replica.ctx, keys[3], 1, [], "transfer", {**body, "amount": a}) for a in (1, 2)])
    honest = {address_of(key) for key in keys[:3]}
    assert check_evidence([replica], honest, []) == (True, 1)
    assert check_evidence([replica], honest | {address_of(keys[3])}, [])[0] is False
    assert check_evidence([replica], honest, [address_of(keys[0])])[0] is False
    replica.graph.evidence.clear()
    assert check_evidence([replica], honest, []) == (False, 1)
