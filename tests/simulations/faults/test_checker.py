"""The history checker on hand-made histories: a good one passes every check, and each bad one
breaks exactly the property it was made to break."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from simulations.faults.checker import CHECKS, check, findings, recovery_time

A, B = "0x" + "aa" * 32, "0x" + "bb" * 32
STATE, PAYOUT = "0x" + "11" * 32, "0x" + "22" * 32
ADDRESSES = ["0x" + f"{i + 1:02x}" * 20 for i in range(4)]
CERTS = {"1": {"state_hash": "0x" + "31" * 32, "payout_root": "0x" + "41" * 32},
         "2": {"state_hash": "0x" + "32" * 32, "payout_root": "0x" + "42" * 32}}


def good() -> list[dict[str, Any]]:
    """4 nodes; op A acked before a partition, op B after it heals; both final everywhere."""
    history: list[dict[str, Any]] = [
        {"type": "run", "t": 0.0, "n": 4, "liveness_bound": 15.0,
         "nodes": [{"index": i, "address": ADDRESSES[i], "honest": True} for i in range(4)]},
        {"type": "submit", "t": 1.0, "node": 0, "request_id": "r1", "outcome": "ok", "op_id": A,
         "status": "tentative", "latency": 0.01},
        {"type": "fault", "t": 5.0, "phase": "start", "fault": {"kind": "partition", "start": 5.0, "end": 10.0}},
        {"type": "submit", "t": 6.0, "node": 2, "request_id": "r2", "outcome": "info", "latency": 5.0},
        {"type": "fault", "t": 10.0, "phase": "end", "fault": {"kind": "partition", "start": 5.0, "end": 10.0}},
        {"type": "submit", "t": 11.0, "node": 1, "request_id": "r3", "outcome": "ok", "op_id": B,
         "status": "tentative", "latency": 0.01},
    ]
    for node in range(4):
        history.append({"type": "status", "t": 3.0, "node": node, "op_id": A, "status": "final"})
        history.append({"type": "status", "t": 13.0 + node, "node": node, "op_id": B, "status": "final"})
    for node in range(4):
        history.append({
            "type": "final", "t": 30.0, "node": node, "version": 2, "certified": 2, "state_hash": STATE,
            "payout_root": PAYOUT, "statuses": {A: "final", B: "final"}, "evidence": [],
            "certificates": copy.deepcopy(CERTS),
        })
    return history


def finals(history: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["node"]: r for r in history if r["type"] == "final"}


def failing(history: list[dict[str, Any]]) -> set[str]:
    return {name for name, verdict in check(history).items() if not verdict.ok}


def test_a_good_history_passes_every_check() -> None:
    verdicts = check(good())
    assert set(verdicts) == set(CHECKS)
    assert all(v.ok for v in verdicts.values()), verdicts
    assert recovery_time(good()) == pytest.approx(6.0)  # B final at node 3 at 16 s, the heal at 10 s


def test_an_acknowledged_operation_unknown_at_one_node_is_lost() -> None:
    history = [r for r in good() if not (r["type"] == "status" and r["op_id"] == A and r["node"] == 3)]
    finals(history)[3]["statuses"][A] = "unknown"  # never seen final there, so no revert either
    assert failing(history) == {"acknowledged_not_lost"}
    assert "at node 3" in check(history)["acknowledged_not_lost"].detail


def test_an_acknowledged_operation_missing_from_the_final_read_is_lost() -> None:
    history = good()
    del finals(history)[2]["statuses"][A]
    assert "acknowledged_not_lost" in failing(history)


def test_a_node_that_could_not_be_read_at_the_end_fails_the_checks_that_need_it() -> None:
    history = good()
    record = finals(history)[1]
    for key in ("version", "state_hash", "payout_root", "statuses", "certificates"):
        del record[key]
    record["error"] = "the node did not answer"
    assert {"acknowledged_not_lost", "honest_converge"} <= failing(history)


def test_an_unanswered_submit_is_not_an_acknowledgement() -> None:
    history = good()  # r2 is "info": it may exist or not, and is required nowhere
    assert "acknowledged_not_lost" not in failing(history)


def test_a_final_status_that_reverts_is_caught() -> None:
    history = good()
    history.insert(-4, {"type": "status", "t": 20.0, "node": 2, "op_id": A, "status": "tentative"})
    assert failing(history) == {"final_never_reverts"}
    assert "node 2" in check(history)["final_never_reverts"].detail


def test_a_final_operation_forgotten_by_a_node_is_lost_and_reverted() -> None:
    history = good()
    finals(history)[3]["statuses"][B] = "unknown"
    assert failing(history) == {"acknowledged_not_lost", "final_never_reverts"}


def test_a_final_status_rejected_at_the_end_is_a_revert() -> None:
    history = good()
    finals(history)[0]["statuses"][A] = "rejected:stale"
    assert failing(history) == {"final_never_reverts"}  # known, so not lost; but no longer final


def test_nodes_that_differ_at_the_end_do_not_converge() -> None:
    history = good()
    finals(history)[1]["state_hash"] = "0x" + "99" * 32
    assert failing(history) == {"honest_converge"}


def test_nodes_at_different_versions_do_not_converge() -> None:
    history = good()
    finals(history)[3]["version"] = 3
    assert failing(history) == {"honest_converge"}


def test_evidence_against_an_honest_node_is_equivocation() -> None:
    history = good()
    finals(history)[0]["evidence"] = [{"kind": "equivocation", "author": ADDRESSES[2].upper().replace("0X", "0x"),
                                       "seq": 7}]
    assert failing(history) == {"no_honest_equivocation"}
    assert "honest node 2" in check(history)["no_honest_equivocation"].detail


def test_evidence_against_a_byzantine_node_is_no_violation() -> None:
    history = good()
    history[0]["nodes"][2]["honest"] = False
    finals(history)[0]["evidence"] = [{"kind": "double_vote", "offender": ADDRESSES[2]}]
    assert "no_honest_equivocation" not in failing(history)


def test_two_certificates_for_one_version_are_inconsistent() -> None:
    history = good()
    finals(history)[2]["certificates"]["2"]["state_hash"] = "0x" + "77" * 32
    assert failing(history) == {"certified_consistent"}
    assert "version 2" in check(history)["certified_consistent"].detail


def test_no_operation_final_everywhere_after_the_heal_is_no_liveness() -> None:
    history = [r for r in good() if not (r["type"] == "status" and r["op_id"] == B and r["node"] == 3)]
    finals(history)[3]["statuses"][B] = "tentative"
    assert failing(history) == {"liveness_after_heal"}


def test_liveness_slower_than_the_bound_is_caught() -> None:
    history = good()
    for record in history:
        if record["type"] == "status" and record["op_id"] == B and record["node"] == 3:
            record["t"] = 40.0  # 30 s after the heal, bound 15 s
    verdict = check(history)["liveness_after_heal"]
    assert not verdict.ok
    assert "over the bound" in verdict.detail


def test_operations_acked_before_the_heal_do_not_count_for_liveness() -> None:
    history = [r for r in good() if not (r["type"] == "submit" and r["request_id"] == "r3")]
    for record in finals(history).values():
        del record["statuses"][B]
    assert failing(history) == {"liveness_after_heal"}


def test_findings_count_acknowledged_operations_that_replay_rejected() -> None:
    history = good()
    history.insert(4, {"type": "fault", "t": 9.0, "phase": "end", "fault": {"kind": "kill", "nodes": [1]}})
    for record in finals(history).values():
        record["statuses"][B] = "rejected:stale"
    found = findings(history)
    assert found["acknowledged_then_rejected"] == 1
    assert found["rejected_reasons"] == {"stale": 1}
    assert found["rejected_by_origin"] == {"1": 1}
    assert found["rejected_seconds_after_origin_resumed"] == [2.0]


def test_parley_faults_check_reads_a_history_and_exits_1_on_a_violation(tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from channel.cli.main import app

    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good()))
    runner = CliRunner()
    passed = runner.invoke(app, ["faults", "check", str(tmp_path), "--json"])
    assert passed.exit_code == 0, passed.output
    assert all(v["ok"] for v in json.loads(passed.output).values())
    bad = good()
    finals(bad)[1]["state_hash"] = "0x" + "99" * 32
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    failed = runner.invoke(app, ["faults", "check", str(tmp_path)])
    assert failed.exit_code == 1
    assert "VIOLATION" in failed.output
    missing = runner.invoke(app, ["faults", "check", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert "no history in" in missing.output
    assert "Traceback" not in missing.output
    refused = runner.invoke(app, ["faults", "run", "--faults", "partition,clock", "--out", str(tmp_path / "r")])
    assert refused.exit_code == 1
    assert "unknown fault kind 'clock'" in refused.output
    assert "Traceback" not in refused.output
