"""A small sweep on a Dask LocalCluster: one row per (point, seed), Parquet and CSV, resume."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from simulations.sim.plots import write_sweep_plots
from simulations.sim.scenario import ScenarioError
from simulations.sim.sweep import CSV, PARQUET, ROWS, load_points, parse_seeds, run_sweep

SCENARIO = """
name = "tiny"
participants = 4
duration_ms = 3000
settle_ms = 1500
liveness_bound_ms = 2500
[workload]
rate_per_s = 4.0
[[behaviours]]
name = "equivocate"
participants = [3]
"""

SWEEP = """
scenario = "tiny.toml"
[grid]
"network.loss" = [0.0, 0.2]
"""


def test_sweep_on_a_local_cluster_writes_rows_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    (tmp_path / "sweep.toml").write_text(SWEEP)
    out = tmp_path / "out"
    rows = run_sweep(tmp_path / "sweep.toml", range(0, 3), out, "abc", workers=2)
    assert len(rows) == 6
    table = pd.read_parquet(out / PARQUET)
    assert sorted(zip(table["param.network.loss"], table["seed"], strict=True)) == [
        (loss, seed) for loss in (0.0, 0.2) for seed in range(3)
    ]
    for check in ("agreement", "certificates", "replay", "convergence", "conservation", "evidence"):
        assert table[f"ok.{check}"].all(), check  # safety in every run (liveness may miss its tight bound)
    assert set(table["ok.liveness"]) <= {True, False}
    assert set(table["commit"]) == {"abc"}
    assert len(pd.read_csv(out / CSV)) == 6
    (plot,) = write_sweep_plots(rows, out)
    assert plot.name == "sweep_network_loss.png"
    assert plot.read_bytes().startswith(b"\x89PNG")
    # resuming: nothing left to run for these seeds; one more seed adds two rows
    assert len(run_sweep(tmp_path / "sweep.toml", range(0, 3), out, "abc", workers=1)) == 6
    assert len((out / ROWS).read_text().splitlines()) == 6


def test_bad_sweeps_and_seed_ranges_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    (tmp_path / "bad.toml").write_text('scenario = "tiny.toml"\n[grid]\n"network.los" = [0.1]\n')
    with pytest.raises(ScenarioError, match="los"):
        load_points(tmp_path / "bad.toml")
    assert parse_seeds("3:6") == range(3, 6)
    assert parse_seeds("4") == range(4, 5)
    with pytest.raises(ScenarioError):
        parse_seeds("5:2")
    with pytest.raises(ScenarioError):
        parse_seeds("x")
