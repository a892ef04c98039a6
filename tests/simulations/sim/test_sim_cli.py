"""``parley sim run`` and ``parley sim replay``: files, summary, exit codes, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from channel.cli.main import app

SCENARIO = """
name = "cli"
participants = 4
duration_ms = 4000
settle_ms = 2000
[workload]
rate_per_s = 5.0
[[behaviours]]
name = "equivocate"
participants = [3]
"""


def test_run_writes_files_and_replay_is_identical(tmp_path: Path) -> None:
    scenario = tmp_path / "cli.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    runner = CliRunner()
    done = runner.invoke(app, ["sim", "run", str(scenario), "--seed", "5", "--out", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    assert "agreement" in done.output
    assert "finality p50" in done.output
    results = json.loads((out / "results.json").read_text())
    assert results["seed"] == 5
    assert results["violations"] == []
    assert (out / "events.jsonl").read_text().count("\n") == len((out / "timeline.txt").read_text().splitlines())
    for plot in ("finality_cdf.png", "final_ops.png", "traffic.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
    replay = runner.invoke(app, ["sim", "replay", str(out), "--quiet"])
    assert replay.exit_code == 0, replay.output
    assert "identical" in replay.output
    (out / "events.jsonl").write_text((out / "events.jsonl").read_text().replace("sign", "sigm", 1))
    tampered = runner.invoke(app, ["sim", "replay", str(out), "--quiet"])
    assert tampered.exit_code == 1
    assert "events.jsonl" in tampered.output


TRADING = """
name = "cli-trading"
participants = 5
duration_ms = 4000
settle_ms = 2000
[trading]
markets = ["spot", "perp"]
orders_per_s = 5.0
oracles = [0]
[[behaviours]]
name = "front_run"
participants = [4]
"""


def test_a_trading_run_prints_its_orders_fills_and_front_runs(tmp_path: Path) -> None:
    scenario = tmp_path / "trading.toml"
    scenario.write_text(TRADING)
    done = CliRunner().invoke(app, ["sim", "run", str(scenario), "--seed", "2", "--quiet"])
    assert done.exit_code == 0, done.output
    for row in ("trading", "oracle", "fills / open orders", "front-runs sorted ahead / signed"):
        assert row in done.output


def test_bad_scenario_is_one_line_error(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text('name = "x"\nparticipants = 4\nduration_ms = 10\nwat = 1\n')
    done = CliRunner().invoke(app, ["sim", "run", str(scenario), "--quiet"])
    assert done.exit_code == 1
    assert "wat" in done.output
    assert "Traceback" not in done.output
    scenario.write_text('name = "x"\nparticipants = 4\nduration_ms = 10\n[[behaviours]]\nname = "spoof"\n'
                        "participants = [3]\n")
    needs = CliRunner().invoke(app, ["sim", "run", str(scenario), "--quiet"])
    assert needs.exit_code == 1
    assert "spoof needs markets" in needs.output
    assert "Traceback" not in needs.output
    missing = CliRunner().invoke(app, ["sim", "replay", str(tmp_path / "nothing"), "--quiet"])
    assert missing.exit_code == 1
    assert "not a simulation run folder" in missing.output
