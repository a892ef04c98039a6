"""Sweeps: a grid of scenario parameters times a range of seeds, on Dask distributed.

A sweep file (TOML, validated like a scenario, unknown keys refused)::

    scenario = "four-honest.toml"          # relative to the sweep file
    [grid]
    "network.loss" = [0.0, 0.1, 0.2]       # dotted paths into the scenario
    "participants" = [4, 7]

Every point of the grid (the product of the lists, in file order) is run with every seed of
``--seeds A:B`` (B excluded). Each run is one Dask task (`run_point`: the engine, the checks
and the metrics, no event trace); results stream back with ``as_completed`` and each row is
appended to ``rows.jsonl`` as it arrives, so an interrupted sweep resumes where it stopped
(rows already there, by scenario digest and seed, are not run again). At the end the rows are
written as ``sweep.parquet`` and ``sweep.csv`` (pandas + pyarrow), one row per run: scenario
digest, seed, commit, the grid parameters, each verdict, finality p50/p99, ops/s, msgs/op,
bytes/op, rejects by reason, recovery after the last heal.

The cluster is a ``LocalCluster`` with one worker process per core and one thread per worker
(the engine holds the GIL), or any running Dask scheduler given its address.
"""

from __future__ import annotations

import itertools
import json
import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulations.sim.engine import validate
from simulations.sim.run import run_scenario
from simulations.sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

ROWS, PARQUET, CSV = "rows.jsonl", "sweep.parquet", "sweep.csv"


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    grid: dict[str, list[Any]] = Field(default_factory=dict)


def parse_seeds(text: str) -> range:
    """``A:B`` (B excluded) or a single seed ``A``."""
    try:
        first, _, last = text.partition(":")
        seeds = range(int(first), int(last)) if last else range(int(first), int(first) + 1)
    except ValueError:
        raise ScenarioError(f"seeds must be A:B or A, not {text!r}") from None
    if not seeds or seeds.start < 0:
        raise ScenarioError(f"the seed range {text!r} is empty or negative")
    return seeds


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise ScenarioError(f"grid key {path!r}: {key} is not a table")
    data[keys[-1]] = value


def load_points(path: Path) -> list[tuple[dict[str, Any], Scenario]]:
    """The grid's points: (the parameters, the scenario they make), validated up front."""
    try:
        sweep = SweepFile.model_validate(tomllib.loads(path.read_text()))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    base = load_scenario(path.parent / sweep.scenario).model_dump(mode="json", by_alias=True)
    names = list(sweep.grid)
    points = []
    for values in itertools.product(*(sweep.grid[name] for name in names)):
        params = dict(zip(names, values, strict=True))
        data = json.loads(json.dumps(base))
        for name, value in params.items():
            _set(data, name, value)
        point = parse_scenario(data, f"{path} at {params}")
        validate(point)
        points.append((params, point))
    return points


def run_point(scenario_data: dict[str, Any], params: dict[str, Any], seed: int, commit: str) -> dict[str, Any]:
    """One run of a sweep, as a row (what a Dask worker executes)."""
    scenario = parse_scenario(scenario_data)
    results = run_scenario(scenario, seed, trace=False).results
    metrics = results["metrics"]
    row: dict[str, Any] = {
        "scenario": scenario.name, "scenario_sha256": scenario.digest, "seed": seed, "commit": commit,
        **{f"param.{name}": json.dumps(value) if isinstance(value, list | dict) else value
           for name, value in params.items()},
        **{f"ok.{name}": verdict["ok"] for name, verdict in results["verdicts"].items()},
        "violations": len(results["violations"]),
        "finality_p50_ms": metrics["finality_ms"]["p50"], "finality_p99_ms": metrics["finality_ms"]["p99"],
        "not_final": metrics["finality_ms"]["not_final"], "ops_per_s": metrics["ops_per_s"],
        "msgs_per_op": metrics["msgs_per_op"], "bytes_per_op": metrics["bytes_per_op"],
        "versions_min": metrics["versions"]["min"],
        "recovery_after_heal_ms": metrics["recovery_after_heal_ms"],
        "rejects_replay": json.dumps(metrics["rejects"]["replay"], sort_keys=True),
        "rejects_inputs": json.dumps(metrics["rejects"]["inputs"], sort_keys=True),
    }
    return row


def _done(folder: Path) -> tuple[list[dict[str, Any]], set[tuple[str, int]]]:
    rows = []
    path = folder / ROWS
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows, {(row["scenario_sha256"], row["seed"]) for row in rows}


@contextmanager
def _client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:  # type: ignore[no-untyped-call]
            yield client
        return
    count = workers or os.cpu_count() or 1
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client


def run_sweep(
    sweep_file: Path,
    seeds: range,
    out: Path,
    commit: str,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (point, seed) not yet in ``out/rows.jsonl``; write the tables; return all rows."""
    from dask.distributed import as_completed

    points = load_points(sweep_file)
    out.mkdir(parents=True, exist_ok=True)
    rows, done = _done(out)
    todo = [(params, scenario, seed) for params, scenario in points for seed in seeds
            if (scenario.digest, seed) not in done]
    total = len(todo) + len(rows)
    if todo:
        with _client(scheduler, workers) as client, (out / ROWS).open("a") as journal:
            futures = [
                client.submit(run_point, scenario.model_dump(mode="json", by_alias=True), params, seed, commit,
                              pure=False)
                for params, scenario, seed in todo
            ]
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                row = future.result()
                journal.write(json.dumps(row, sort_keys=True) + "\n")
                journal.flush()
                rows.append(row)
                if progress is not None:
                    progress(len(rows), total)
    write_tables(rows, out)
    return rows


def write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    """``sweep.parquet`` and ``sweep.csv``, rows sorted by scenario digest and seed."""
    import pandas as pd

    frame = pd.DataFrame(sorted(rows, key=lambda row: (row["scenario_sha256"], row["seed"])))
    frame.to_parquet(out / PARQUET, index=False)
    frame.to_csv(out / CSV, index=False)
