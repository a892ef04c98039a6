"""Plots of one run (matplotlib, Agg backend: no display needed).

- ``finality_cdf.png``: the share of honest operations final within x virtual ms;
- ``final_ops.png``: honest operations final so far, over virtual time (partitions shaded);
- ``traffic.png``: messages and bytes per operation, by channel;
- for a sweep, ``sweep_<param>.png``: violations and finality against each numeric parameter.

The PNGs are for reading, not for comparing: replay compares ``results.json`` and
``events.jsonl``, which hold every number plotted here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from simulations.sim.run import RunOutput

PLOTS = ("finality_cdf.png", "final_ops.png", "traffic.png")


def _finality_cdf(output: RunOutput, path: Path) -> None:
    samples = sorted(output.engine.record.finality_ms)
    figure, axes = plt.subplots(figsize=(6, 4))
    if samples:
        shares = [(i + 1) / len(samples) for i in range(len(samples))]
        axes.step(samples, shares, where="post")
    axes.set_xlabel("signed -> final at its author (virtual ms)")
    axes.set_ylabel("share of honest operations")
    axes.set_ylim(0, 1.01)
    axes.set_title(f"finality CDF: {output.results['scenario']} (seed {output.results['seed']})")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _final_ops(output: RunOutput, path: Path) -> None:
    points = output.engine.record.final_over_time
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot([t / 1000 for t, _ in points], [count for _, count in points])
    for partition in output.engine.scenario.network.partitions:
        end = partition.end_ms if partition.end_ms is not None else output.engine.scenario.end_ms
        axes.axvspan(partition.start_ms / 1000, end / 1000, color="tab:red", alpha=0.15)
    axes.set_xlabel("virtual time (s)")
    axes.set_ylabel("honest operations final")
    axes.set_title("delivered (final) operations over time")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _traffic(output: RunOutput, path: Path) -> None:
    metrics = output.results["metrics"]
    signed = max(1, metrics["ops_signed"])
    channels = list(metrics["messages"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.bar(channels, [metrics["messages"][c] / signed for c in channels])
    left.set_title("messages per operation")
    right.bar(channels, [metrics["bytes"][c] / signed for c in channels])
    right.set_title("bytes per operation")
    for axes in (left, right):
        axes.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_plots(output: RunOutput, folder: Path) -> list[Path]:
    """Write the run's plots into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in PLOTS]
    for draw, path in zip((_finality_cdf, _final_ops, _traffic), paths, strict=True):
        draw(output, path)
    return paths


def write_sweep_plots(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """For each numeric grid parameter: the share of runs with a violation, and finality p50
    and p99 (median over seeds), against the parameter (``sweep_<param>.png``)."""
    params = sorted({key for row in rows for key in row if key.startswith("param.")})
    paths = []
    for param in params:
        values = sorted({row[param] for row in rows if isinstance(row.get(param), int | float)})
        if len(values) < 2:
            continue
        by_value = {value: [row for row in rows if row.get(param) == value] for value in values}
        violated = [sum(1 for row in by_value[v] if row["violations"]) / len(by_value[v]) for v in values]
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot(values, violated, marker="o")
        left.set_ylim(-0.02, 1.02)
        left.set_xlabel(param[len("param."):])
        left.set_ylabel("share of runs with a violation")
        for column, label in (("finality_p50_ms", "p50"), ("finality_p99_ms", "p99")):
            medians = [_median([row[column] for row in by_value[v] if row[column] is not None]) for v in values]
            right.plot(values, medians, marker="o", label=label)
        right.set_xlabel(param[len("param."):])
        right.set_ylabel("finality, median over seeds (virtual ms)")
        right.legend()
        figure.suptitle(f"{rows[0]['scenario']}: {len(rows)} runs")
        figure.tight_layout()
        path = folder / f"sweep_{param[len('param.'):].replace('.', '_')}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")
