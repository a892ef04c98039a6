"""``parley faults``: the fault harness over real node processes (`simulations.faults`).

- ``parley faults run --nodes 4 --schedule SEED --duration 120 --out DIR`` starts N real nodes,
  each in its own network namespace (on loopback, and saying so, where namespaces cannot be
  made), runs one client per node and the seeded fault schedule, then checks the history. It
  prints the schedule as it happens, then the verdicts and metrics, and writes
  ``DIR/history.jsonl``, ``DIR/results.json`` and ``DIR/latency.png`` (the nodes' folders and
  logs are in ``DIR/cluster/``). Exit code 1 if a check failed.
- ``parley faults check DIR`` checks a run's ``history.jsonl`` again (the checker is a pure
  function of it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from channel.cli.console import console, user_errors
from channel.cli.node import JsonFlag
from channel.errors import UserError


def _split(text: str, what: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise UserError(f"unknown {what} {', '.join(map(repr, unknown))}: use {', '.join(allowed)}")
    return items


def _print_verdicts(verdicts: dict[str, Any]) -> None:
    table = Table(title="checks")
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("detail")
    for name, verdict in verdicts.items():
        mark = "[green]ok[/green]" if verdict["ok"] else "[red]VIOLATION[/red]"
        table.add_row(name, mark, verdict["detail"])
    console.print(table)


def _print_metrics(results: dict[str, Any]) -> None:
    m = results["metrics"]
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("network", results["network"]),
        ("faults injected", str(m["faults"])),
        ("submits: acknowledged / refused / no answer",
         f"{m['acknowledged']} / {m['refused']} / {m['indeterminate']}"),
        ("submit p50 / p99 ms (all)", f"{m['submit_ms']['p50']} / {m['submit_ms']['p99']}"),
        ("submit p50 / p99 ms (outside faults)", f"{m['submit_ms_calm']['p50']} / {m['submit_ms_calm']['p99']}"),
        ("submit p50 / p99 ms (inside faults)", f"{m['submit_ms_faulty']['p50']} / {m['submit_ms_faulty']['p99']}"),
        ("finality p50 / p99 ms (1 s polls)", f"{m['finality_ms']['p50']} / {m['finality_ms']['p99']}"),
        ("recovery after the last heal (s)", "-" if m["recovery_s"] is None else f"{m['recovery_s']:.1f}"),
    ]
    findings = results.get("findings") or {}
    if findings.get("acknowledged_then_rejected"):
        rows.append(("acknowledged, then rejected by replay",
                     f"{findings['acknowledged_then_rejected']} {findings['rejected_reasons']}"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def register(app: typer.Typer) -> None:
    faults_app = typer.Typer(help="The fault harness: real nodes, seeded faults, a checked history.",
                             no_args_is_help=True)
    app.add_typer(faults_app, name="faults")

    @faults_app.command("run")
    @user_errors
    def run(
        nodes: Annotated[int, typer.Option(min=2, max=16, help="How many node processes.")] = 4,
        schedule: Annotated[int, typer.Option(min=0, help="The seed of the fault schedule (and of the clients).")] = 0,
        duration: Annotated[float, typer.Option(min=10, help="Seconds of client load and faults.")] = 120.0,
        out: Annotated[Path, typer.Option(help="Write history.jsonl, results.json, latency.png here.")] = Path(
            "faults-run"),
        rate: Annotated[float, typer.Option(min=0.1, max=50, help="Transfers per second per client.")] = 2.0,
        faults: Annotated[str, typer.Option(help="Fault kinds, comma-separated.")] = "partition,kill,pause,delay",
        shapes: Annotated[str, typer.Option(help="Partition shapes, comma-separated.")] = (
            "halves,majority,isolate,bridge"),
        recovery: Annotated[float, typer.Option(min=5, help="Seconds without faults at the end.")] = 20.0,
        bound: Annotated[float, typer.Option(min=1, help="Liveness bound after the last heal (s).")] = 15.0,
        loopback: Annotated[bool, typer.Option("--loopback", help="Do not use network namespaces.")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Run NODES real nodes under the seeded fault schedule; print the verdicts and metrics."""
        from simulations.faults.run import FaultConfig, run_faults
        from simulations.faults.schedule import KINDS, SHAPES

        if duration <= recovery:
            raise UserError(f"--duration ({duration:.0f} s) must be longer than --recovery ({recovery:.0f} s)")
        config = FaultConfig(
            out=out, nodes=nodes, seed=schedule, duration=duration, rate=rate,
            kinds=_split(faults, "fault kind", KINDS), shapes=_split(shapes, "partition shape", SHAPES),
            recovery=recovery, liveness_bound=bound, loopback=loopback,
        )

        def say(line: str) -> None:
            if not as_json:
                console.print(line, markup=False, highlight=False)

        results = run_faults(config, say)
        if as_json:
            print(json.dumps(results, indent=2))
        else:
            _print_verdicts(results["verdicts"])
            _print_metrics(results)
            console.print(f"wrote {out}/: history.jsonl, results.json, latency.png (nodes and logs in cluster/)")
        if not results["ok"]:
            raise typer.Exit(1)

    @faults_app.command("check")
    @user_errors
    def check(
        folder: Annotated[Path, typer.Argument(metavar="DIR", help="The --out folder of a run.")],
        as_json: JsonFlag = False,
    ) -> None:
        """Check DIR/history.jsonl again and print the verdicts."""
        from simulations.faults.checker import check as check_history

        path = folder / "history.jsonl"
        try:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            raise UserError(f"no history in {folder} (missing {path})") from None
        except ValueError as exc:
            raise UserError(f"{path} is not JSON lines: {exc}") from exc
        try:
            verdicts = {name: v.to_json() for name, v in check_history(records).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path} is not a fault run's history: {exc!r}") from exc
        if as_json:
            print(json.dumps(verdicts, indent=2))
        else:
            _print_verdicts(verdicts)
        if not all(v["ok"] for v in verdicts.values()):
            raise typer.Exit(1)
