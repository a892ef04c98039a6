"""The node mode (whole nodes over the in-memory transport under trio's virtual clock) agrees
with the engine: on an honest run, on a partition with a quorum side, on the no-quorum
partition whose stall the engine found (the real shell stalls too), with an equivocator, with a
node gone silent, and with crashes and restarts from the SQLite store. What a whole node cannot
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


def test_an_equivocator_agrees_and_its_twins_are_evidence() -> None:
    """Participant 3 signs a twin of each of its operations (the engine shows each half of the
    honest nodes one side, the node mode gossips both to everyone): safety holds, and every
    honest node holds evidence of every pair, so the evidence verdict is not vacuous."""
    equivocator = scenario(behaviours=[{"name": "equivocate", "participants": [3]}], **SHORT)
    verdicts = compare(equivocator, 1)
    assert agree(verdicts), verdicts
    result = run_nodes(equivocator, 2)
    assert result.honest == (0, 1, 2)
    assert result.evidence is True
    assert result.equivocations > 0


def test_a_node_gone_silent_agrees() -> None:
    silent = scenario(behaviours=[{"name": "silent", "participants": [2], "params": {"from_ms": 2000}}], **SHORT)
    verdicts = compare(silent, 1)
    assert agree(verdicts), verdicts
    result = run_nodes(silent, 1)
    assert result.versions[2] < min(result.versions[i] for i in result.honest)  # it heard nothing after 2 s


def test_withholding_everything_from_all_is_silence() -> None:
    params = {"targets": "all", "channels": ["ops", "sync", "consensus"]}
    result = run_nodes(scenario(behaviours=[{"name": "withhold", "participants": [1], "params": params}], **SHORT), 1)
    assert all(result.verdicts().values()), result
    assert result.versions[1] == 0


@pytest.mark.parametrize("participants", [4, 7])
def test_crash_and_restart_from_the_store_agrees(participants: int) -> None:
    """Participant 1's node dies at 2 s (its tasks cancelled, its store closed, off the
    network) and a new node is restored from its SQLite file at 4 s."""
    faults = [{"kind": "crash", "participants": [1], "at_ms": 2000, "restart_ms": 4000}]
    crash = scenario(participants, faults=faults, duration_ms=9000, settle_ms=3000, liveness_bound_ms=4000)
    verdicts = compare(crash, 1)
    assert agree(verdicts), verdicts
    result = run_nodes(crash, 1)
    ((who, operations, version),) = result.restored
    assert (who, operations > 0, version >= 1) == (1, True, True)  # the store was replayed
    assert result.running == tuple(range(participants))


def test_a_crash_for_good_is_left_out_and_counts_against_f() -> None:
    faults = [
        {"kind": "crash", "participants": [1], "at_ms": 2000, "restart_ms": 4000},
        {"kind": "crash", "participants": [6], "at_ms": 3000},
    ]
    crash = scenario(7, faults=faults, duration_ms=9000, settle_ms=3000, liveness_bound_ms=4000)
    verdicts = compare(crash, 2)
    assert agree(verdicts), verdicts
    with_equivocator = scenario(
        behaviours=[{"name": "equivocate", "participants": [3]}],
        faults=[{"kind": "crash", "participants": [0], "at_ms": 2000}],
        **SHORT,
    )
    verdicts = compare(with_equivocator, 1)  # f = 2 of 4: liveness does not apply in either
    assert verdicts["liveness"] == {"engine": None, "nodes": None}, verdicts
    assert all(v == {"engine": True, "nodes": True} for name, v in verdicts.items() if name != "liveness"), verdicts


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


TRADING = {"markets": ["spot", "perp"], "orders_per_s": 4, "oracles": [0]}


def trading(behaviours: list[dict[str, object]] | None = None) -> Scenario:
    return scenario(4, behaviours, trading=TRADING, workload={"rate_per_s": 1}, duration_ms=8000, settle_ms=3000,
                    liveness_bound_ms=4000)


def test_order_flow_agrees() -> None:
    """The engine's order flow through `Node.submit` (its dry run) on whole nodes: both keep
    TRADING.md's invariants at every honest node, and the nodes really trade."""
    verdicts = compare(trading(), 2)
    assert all(v["engine"] is True and v["nodes"] is True for v in verdicts.values()), verdicts
    result = run_nodes(trading(), 2)
    assert result.fills > 0
    assert result.closed.get("cancelled", 0) > 0


def test_a_self_trader_agrees() -> None:
    """`self_trade` is `simulations.byzantine`'s in whole nodes: its IOCs meet its own resting
    orders, which replay removes (never a fill against itself), in both."""
    behaviours = [{"name": "self_trade", "participants": [3]}]
    verdicts = compare(trading(behaviours), 2)
    assert all(v["engine"] is True and v["nodes"] is True for v in verdicts.values()), verdicts
    assert run_nodes(trading(behaviours), 2).closed.get("self_trade", 0) > 0
