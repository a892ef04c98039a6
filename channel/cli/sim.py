"""``parley sim``: the deterministic Byzantine simulator (`simulations.sim`).

- ``parley sim run SCENARIO --seed N --out DIR`` prints the options the seed drew, a progress
  bar in virtual time, then the verdicts and metrics, and writes the run's files into DIR
  (``results.json``, ``events.jsonl``, ``timeline.txt``, ``scenario.json``). Exit code 1 if a
  check found a violation (the seed that reproduces it is printed with it).
- ``parley sim replay DIR`` runs the stored scenario and seed again and checks that the files
  come out byte-identical (exit code 1 if not).
- ``parley sim sweep SWEEP.toml --seeds 0:99 --out DIR`` runs a grid of parameters times seeds
  on Dask distributed (`simulations.sim.sweep`), resuming what ``DIR/rows.jsonl`` already has.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from channel.cli.console import console, user_errors
from channel.cli.node import JsonFlag
from channel.errors import UserError

if TYPE_CHECKING:  # the simulator loads the whole core: imported by the commands, not the CLI
    from simulations.sim.run import RunOutput
    from simulations.sim.scenario import Scenario

MAX_OPTION_LINES = 12


@contextmanager
def _virtual_progress(total_ms: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over virtual time; yields the engine's progress callback."""
    if quiet:
        yield lambda _: None
        return
    columns = (TextColumn("virtual {task.completed:>8.0f} / {task.total:.0f} ms"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("sim", total=total_ms)
        yield lambda now: progress.update(task, completed=now)


def _print_options(scenario: Scenario, seed: int, options: dict[str, Any]) -> None:
    console.print(f"[bold]{scenario.name}[/bold]  seed {seed}  scenario sha256 {scenario.digest[:16]}…")
    lines = []
    for key, value in options.items():
        text = ", ".join(f"{k}:{v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
        lines.append(f"  {key} = {text if len(text) <= 100 else text[:97] + '...'}")
    for line in lines[:MAX_OPTION_LINES]:
        console.print(line, markup=False, highlight=False)
    if len(lines) > MAX_OPTION_LINES:
        console.print(f"  … {len(lines) - MAX_OPTION_LINES} more in results.json", markup=False)


def _summary(output: RunOutput, seconds: float) -> None:
    results = output.results
    verdicts = Table(title="checks")
    verdicts.add_column("check")
    verdicts.add_column("verdict")
    verdicts.add_column("detail")
    for name, verdict in results["verdicts"].items():
        ok = verdict["ok"]
        mark = "[green]ok[/green]" if ok else "[dim]n/a[/dim]" if ok is None else "[red]VIOLATION[/red]"
        verdicts.add_row(name, mark, verdict["detail"])
    console.print(verdicts)
    m = results["metrics"]
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    finality = m["finality_ms"]
    rows = [
        ("finality p50 / p99 (virtual ms)", f"{finality['p50']} / {finality['p99']}"),
        ("operations final / not final", f"{finality['final']} / {finality['not_final']}"),
        ("propagation p50 / p99 (virtual ms)", f"{m['propagation_ms']['p50']} / {m['propagation_ms']['p99']}"),
        ("ops/s signed (virtual)", str(m["ops_per_s"])),
        ("messages / op", str(m["msgs_per_op"])),
        ("bytes / op", str(m["bytes_per_op"])),
        ("checkpoints (min / max honest)", f"{m['versions']['min']} / {m['versions']['max']}"),
        ("rejected in replay", str(m["rejects"]["replay"] or "-")),
        ("inputs refused", str(m["rejects"]["inputs"] or "-")),
        ("evidence", f"operations {m['evidence']['operation']}, consensus {m['evidence']['consensus'] or '-'}"),
        ("virtual / real time", f"{results['virtual_ms'] / 1000 / max(seconds, 1e-9):.1f}x ({seconds:.2f} s real)"),
    ]
    if (trading := m.get("trading")) is not None:
        front = trading["front_runs"]
        rows[-1:-1] = [
            ("orders signed / refused", f"{trading['orders_signed']} / {trading['orders_refused_by_dry_run']}"),
            ("fills / open orders", f"{trading['fills']} / {trading['open_orders']}"),
            ("orders closed", str(trading["closed"] or "-")),
            ("signed by behaviours", str(trading["forged"] or "-")),
            ("front-runs sorted ahead / signed", f"{front['sorted_ahead']} / {front['signed']}"),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for violation in results["violations"]:
        console.print(f"[red]violation[/red] {violation['check']}: {violation['detail']} (seed {violation['seed']})")


def register(app: typer.Typer) -> None:
    sim_app = typer.Typer(help="The deterministic Byzantine simulator.", no_args_is_help=True)
    app.add_typer(sim_app, name="sim")
    register_sweep(sim_app)

    @sim_app.command("run")
    @user_errors
    def run(
        scenario_file: Annotated[Path, typer.Argument(metavar="SCENARIO", help="A scenario TOML file.")],
        seed: Annotated[int, typer.Option(min=0, help="The seed every random draw of the run derives from.")] = 0,
        out: Annotated[Path | None, typer.Option(help="Write results.json, events.jsonl, timeline.txt here.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
        plots: Annotated[bool, typer.Option(help="With --out: the finality CDF, final operations, traffic.")] = True,
        as_json: JsonFlag = False,
    ) -> None:
        """Run SCENARIO with --seed; print the verdicts and metrics (with --json: results.json's content)."""
        from simulations.sim.engine import validate
        from simulations.sim.run import run_scenario
        from simulations.sim.scenario import ScenarioError, load_scenario

        quiet = quiet or as_json
        try:
            scenario = load_scenario(scenario_file)
            validate(scenario)  # a bad behaviour name, parameter or need: before anything runs
        except ScenarioError as exc:
            raise UserError(str(exc)) from exc
        started = time.perf_counter()
        with _virtual_progress(scenario.end_ms, quiet) as progress:
            output = run_scenario(
                scenario, seed, out, progress,
                on_options=None if as_json else lambda options: _print_options(scenario, seed, options),
            )
        seconds = time.perf_counter() - started
        if as_json:
            print(json.dumps(output.results, indent=2))
        else:
            _summary(output, seconds)
        if out is not None:
            written = "results.json, events.jsonl, timeline.txt"
            if plots:
                from simulations.sim.plots import PLOTS, write_plots

                write_plots(output, out)
                written += ", " + ", ".join(PLOTS)
            if not as_json:
                console.print(f"wrote {out}/: {written}")
        if not output.ok:
            raise typer.Exit(1)

    @sim_app.command("replay")
    @user_errors
    def replay(
        folder: Annotated[Path, typer.Argument(metavar="DIR", help="The --out folder of a run.")],
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Run DIR's scenario and seed again; check the files are bit-identical."""
        from simulations.sim.run import replay_run
        from simulations.sim.scenario import ScenarioError

        try:
            total = load_scenario_total(folder)
            with _virtual_progress(total, quiet or as_json) as progress:
                report = replay_run(folder, progress)
        except ScenarioError as exc:
            raise UserError(str(exc)) from exc
        if as_json:
            print(json.dumps({"identical": report.identical, "differences": list(report.differences)}))
            if not report.identical:
                raise typer.Exit(1)
            return
        if report.identical:
            console.print(f"[green]identical[/green]: results.json and events.jsonl of {folder} replayed bit for bit")
            return
        console.print(f"[red]different[/red]: {', '.join(report.differences)} of {folder} did not replay")
        raise typer.Exit(1)


def load_scenario_total(folder: Path) -> int:
    """The virtual length of the run stored in `folder` (for the progress bar)."""
    from simulations.sim.run import SCENARIO
    from simulations.sim.scenario import ScenarioError, parse_scenario

    try:
        return parse_scenario(json.loads((folder / SCENARIO).read_text()), str(folder / SCENARIO)).end_ms
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{folder}: not a simulation run folder ({exc})") from None


def _commit() -> str:
    """The source commit (a sweep row names it); "unknown" outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def register_sweep(sim_app: typer.Typer) -> None:
    @sim_app.command("sweep")
    @user_errors
    def sweep(
        sweep_file: Annotated[Path, typer.Argument(metavar="SWEEP", help="A sweep TOML file.")],
        seeds: Annotated[str, typer.Option(help="Seeds A:B (B excluded), or one seed.")] = "0:10",
        out: Annotated[Path, typer.Option(help="rows.jsonl, sweep.parquet and sweep.csv go here.")] = Path("sweep"),
        scheduler: Annotated[str | None, typer.Option(help="A running Dask scheduler (else a LocalCluster).")] = None,
        workers: Annotated[int | None, typer.Option(min=1, help="LocalCluster workers (default: a core each).")] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Run a grid of scenario parameters times seeds on Dask; one row per run."""
        from simulations.sim.scenario import ScenarioError
        from simulations.sim.sweep import parse_seeds, run_sweep

        try:
            seed_range = parse_seeds(seeds)
            columns = (TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, disable=as_json) as progress:
                task = progress.add_task("sweep", total=None)
                rows = run_sweep(sweep_file, seed_range, out, _commit(), scheduler, workers,
                                 lambda done, total: progress.update(task, completed=done, total=total))
        except ScenarioError as exc:
            raise UserError(str(exc)) from exc
        from simulations.sim.plots import write_sweep_plots

        plots = write_sweep_plots(rows, out)
        bad = [row for row in rows if row["violations"]]
        written = ", ".join(["sweep.parquet", "sweep.csv", *(path.name for path in plots)])
        if as_json:
            print(json.dumps({"runs": len(rows), "with_violations": len(bad), "out": str(out),
                              "files": written.split(", ")}))
            return
        console.print(f"{len(rows)} runs, {len(bad)} with violations; wrote {out}/: {written}")
        for row in bad[:10]:
            console.print(f"[red]violation[/red] {row['scenario']} seed {row['seed']}: "
                          + ", ".join(k[3:] for k, v in row.items() if k.startswith("ok.") and v is False))
