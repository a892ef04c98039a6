"""One short fault run end to end: 4 real node processes, each in its own network namespace,
one partition and one kill -9 on a seeded schedule, and every check of the history passes.

Needs root (namespaces): CI runs as root; elsewhere it skips, except under CI=true, where a
missing capability fails instead of hiding the test. Whatever happens, no namespace and no
node process of the run is left behind (checked after the run, cleaned up if not).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.faults.netns import namespaces_available
from simulations.faults.run import FaultConfig, run_faults

usable, why = namespaces_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not usable and os.environ.get("CI") != "true", reason=f"network namespaces: {why}"),
]


def _our_namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"parley-f{os.getpid()}-")]


def _processes_under(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(folder) in command:
                found.append(int(entry.name))
    return found


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "run"
    try:
        yield folder
    finally:
        leftovers, namespaces = _processes_under(folder), _our_namespaces()
        for pid in leftovers:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        for name in namespaces:
            subprocess.run(["ip", "netns", "del", name], check=False)
        assert not leftovers, f"node processes left running: {leftovers}"
        assert not namespaces, f"namespaces left behind: {namespaces}"


@pytest.mark.timeout(240)
def test_a_partition_and_a_kill_leave_every_check_ok(out: Path) -> None:
    assert usable, f"network namespaces are needed under CI: {why}"
    results = run_faults(FaultConfig(out=out, nodes=4, seed=3, duration=42.0, kinds=("partition", "kill"),
                                     recovery=18.0), say=lambda _: None)
    assert results["network"] == "netns"
    kinds = sorted(f["kind"] for f in results["schedule"]["faults"])
    assert kinds == ["kill", "partition"]
    assert {name: v["ok"] for name, v in results["verdicts"].items()} == dict.fromkeys(results["verdicts"], True), \
        results["verdicts"]
    metrics = results["metrics"]
    assert metrics["acknowledged"] > 100  # 4 clients at 2/s for 42 s, less the killed node's window
    assert metrics["recovery_s"] is not None
    assert metrics["recovery_s"] <= 15.0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    phases = [(r["fault"]["kind"], r["phase"]) for r in history if r["type"] == "fault"]
    assert phases == [("kill", "start"), ("kill", "end"), ("partition", "start"), ("partition", "end")]
    assert sum(r["type"] == "final" and "error" not in r for r in history) == 4
    assert json.loads((out / "results.json").read_text())["ok"] is True
    assert (out / "latency.png").stat().st_size > 10_000
    assert not _processes_under(out)
    assert not _our_namespaces()
