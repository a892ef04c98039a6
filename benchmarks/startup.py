"""How long a client command of the CLI takes to start, and what its imports cost.

    python benchmarks/startup.py [--runs N] [--node DATA_DIR]

Runs ``python -m channel balance --help`` N times, and with ``--node`` (a running node's data
directory) ``python -m channel balance --node DIR`` and ``stats --node DIR``, each as a fresh
process, the wall time of each from spawn to exit; and once ``python -X importtime`` of the
same command, for the import of the CLI (`channel.cli.main`, cumulative) and the heaviest
top-level imports. The client commands import neither the chain, key nor libp2p libraries nor
the node's configuration (tests/channel/cli/test_startup.py asserts which modules are loaded).

Prints JSON lines ``startup`` (command, p50/min/max in ms) and ``startup_imports`` (the CLI's
import in ms, and the five heaviest top-level imports).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parent.parent


def wall(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "channel", *args], env=env, cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - start


def imports(args: list[str]) -> dict[str, float]:
    """Cumulative import time (ms) per top-level import of one run of the command."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "channel", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False)
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith(" ") and not name.startswith("  ") and cumulative.strip().isdigit():
            found[name.strip()] = int(cumulative) / 1000
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--node", type=Path, help="a running node's data directory, for the client commands")
    options = parser.parse_args()
    commands = [["balance", "--help"]]
    if options.node is not None:
        commands += [["balance", "--node", str(options.node)], ["stats", "--node", str(options.node)]]
    for command in commands:
        samples = sorted(wall(command) for _ in range(options.runs))
        emit(kind="startup", command=" ".join(command[:1] + command[1:2]), runs=options.runs,
             p50_ms=round(samples[len(samples) // 2] * 1e3, 1), min_ms=round(samples[0] * 1e3, 1),
             max_ms=round(samples[-1] * 1e3, 1))
    found = imports(commands[-1])
    heaviest = sorted(found.items(), key=lambda item: -item[1])[:5]
    emit(kind="startup_imports", command=" ".join(commands[-1][:1]), cli_ms=found.get("channel.cli.main"),
         heaviest={name: ms for name, ms in heaviest})


if __name__ == "__main__":
    main()
