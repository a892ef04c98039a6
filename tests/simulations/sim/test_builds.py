"""The compiled and the pure build of the simulator's engine give the same bytes (setup.py,
simulations/sim/_build.py), and a stale compiled build is never used.

`tests.simulations.sim.build_runs` runs scenarios (an equivocator, Twins, a power cut) in two
processes: one that imports the compiled engine and network, one with ``PARLEY_PURE=1``, which
imports the Python sources. Their results.json and events.jsonl must be the same bytes. Without
a current compiled build (no C compiler at install time, or sources changed since the build) the
comparison skips and says why; under ``CI=true`` it fails instead, since CI installs the
compiled build.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulations.sim import _build

ROOT = Path(__file__).resolve().parents[3]


def runs(pure: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PARLEY_PURE", None)
    if pure:
        env["PARLEY_PURE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "tests.simulations.sim.build_runs"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_compiled_and_the_pure_engine_give_the_same_bytes() -> None:
    pure = runs(pure=True)
    assert pure.pop("build") == "pure"
    compiled = runs(pure=False)
    build = compiled.pop("build")
    if build != "compiled":
        why = f"no current compiled simulator engine (simulations.sim.BUILD is {build!r}; `pip install --no-deps -e .`)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    assert compiled == pure
    assert len(pure) == 3


def test_a_changed_source_makes_the_build_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "simulations" / "sim" / "engine.py"
    source.parent.mkdir(parents=True)
    source.write_text("x = 1\n")
    manifest = tmp_path / "_compiled.txt"
    manifest.write_text(f"{hashlib.sha256(source.read_bytes()).hexdigest()} simulations/sim/engine.py\n")
    monkeypatch.setattr(_build, "ROOT", tmp_path)
    monkeypatch.setattr(_build, "MANIFEST", manifest)
    assert _build.stale_sources() == []
    source.write_text("x = 2\n")
    assert _build.stale_sources() == ["simulations/sim/engine.py"]
    manifest.unlink()
    assert _build.stale_sources() == ["simulations/sim/_compiled.txt (missing)"]


def test_a_pure_process_imports_the_sources() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PARLEY_PURE": "1"}
    code = "import simulations.sim.engine as e, simulations.sim.network as n; print(e.__file__, n.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    assert [Path(path).name for path in done.stdout.split()] == ["engine.py", "network.py"]
