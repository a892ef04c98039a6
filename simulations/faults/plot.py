"""The plot of a fault run (matplotlib, Agg: no display needed): ``latency.png``.

Top: each submit's latency against the time it was sent, one colour per node; refused and
unanswered submits as crosses at the top. Bottom: acknowledged submits per second (all clients)
and operations seen final per second. Every fault window is shaded on both, as it happened
(`checker.fault_windows`), and labelled. The numbers are all in ``history.jsonl``; the picture
is for reading.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from simulations.faults.checker import fault_windows

MAX_LABELS = 12
COLOURS = {"partition": "tab:red", "kill": "tab:purple", "pause": "tab:orange", "delay": "tab:blue"}


def plot(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    submits = [r for r in records if r["type"] == "submit"]
    faults = fault_windows(records)
    end = max((r["t"] for r in records if "t" in r), default=1.0)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 2))
    nodes = sorted({r["node"] for r in submits})
    for node in nodes:
        ok = [r for r in submits if r["node"] == node and r["outcome"] == "ok"]
        top.scatter([r["t"] for r in ok], [r["latency"] * 1000 for r in ok], s=6, label=f"node {node}")
    failed = [r for r in submits if r["outcome"] != "ok"]
    if failed:
        ceiling = max([r["latency"] * 1000 for r in submits] + [1.0])
        top.scatter([r["t"] for r in failed], [ceiling] * len(failed), marker="x", color="black", s=12,
                    label="refused or no answer")
    top.set_yscale("log")
    top.set_ylabel("submit latency (ms)")
    top.legend(loc="upper right", fontsize=7, ncol=3)
    acked = Counter(int(r["t"]) for r in submits if r["outcome"] == "ok")
    first_final: dict[str, float] = {}
    for r in records:
        if r["type"] == "status" and r["status"] in ("final", "settled"):
            first_final.setdefault(r["op_id"], r["t"])
    finals = Counter(int(t) for t in first_final.values())
    seconds = list(range(int(end) + 1))
    bottom.step(seconds, [acked.get(s, 0) for s in seconds], where="post", label="acknowledged / s")
    bottom.step(seconds, [finals.get(s, 0) for s in seconds], where="post", label="seen final / s")
    bottom.set_ylabel("operations per second")
    bottom.set_xlabel("time since the clients started (s)")
    bottom.legend(loc="upper right", fontsize=7)
    for start, stop, fault in faults:
        colour = COLOURS.get(str(fault.get("kind")), "grey")
        for axes in (top, bottom):
            axes.axvspan(start, stop, color=colour, alpha=0.15)
        label = str(fault.get("kind", "?")) + (f" {fault.get('shape')}" if fault.get("shape") else "")
        label += f" {fault['nodes']}" if fault.get("nodes") else ""
        if len(faults) > MAX_LABELS:
            continue  # too many to read: the colours say the kind (the legend below)
        top.text(start, 1.0, label, transform=top.get_xaxis_transform(), fontsize=7, va="bottom",
                 color=colour)
    if len(faults) > MAX_LABELS:
        from matplotlib.patches import Patch

        kinds = sorted({str(f.get("kind")) for _, _, f in faults})
        bottom.legend(handles=[*bottom.get_legend_handles_labels()[0],
                               *(Patch(color=COLOURS.get(k, "grey"), alpha=0.3, label=k) for k in kinds)],
                      loc="upper right", fontsize=7, ncol=2)
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
