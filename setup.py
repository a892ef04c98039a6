"""The build: the pure-Python packages (pyproject.toml has the metadata), and two groups
compiled with mypyc when a C compiler is present at install time: the crdt core, and the
simulator's engine and network (`simulations/sim/engine.py`, `network.py`: the interpreted glue
of a simulated run, each message's sends, draws and deliveries).

- ``PARLEY_PURE=1`` at install time builds the pure-Python project only; at run time it makes
  `crdt` and `simulations.sim` import their ``.py`` sources even where compiled modules are
  present (see crdt/_build.py and simulations/sim/_build.py).
- Without a C compiler (or without mypyc, outside pip's build environment) the build is pure,
  with a message. With both, a failed compilation fails the install (set ``PARLEY_PURE=1`` to
  install without it).
- The build writes ``crdt/_compiled.txt`` and ``simulations/sim/_compiled.txt``, the SHA-256 of
  each compiled module's source: at import, a compiled module whose source has changed since
  is never used (crdt/_build.py, simulations/sim/_build.py; a group is used whole or not at all).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# Every module of crdt but the package __init__ files (which choose between the builds, so they
# stay Python) and crdt.testing (a test kit: tests introspect its signatures).
PURE = {"crdt/__init__.py", "crdt/markets/__init__.py", "crdt/_build.py", "crdt/testing.py", "crdt/errors.py"}
COMPILED = sorted(
    path.relative_to(ROOT).as_posix() for path in [*ROOT.glob("crdt/*.py"), *ROOT.glob("crdt/markets/*.py")]
    if path.relative_to(ROOT).as_posix() not in PURE
)
# The simulator's engine and network (the rest of simulations.sim stays Python: the behaviours
# are subclassed per scenario, the checks and the CLI are not hot).
SIM_COMPILED = ["simulations/sim/engine.py", "simulations/sim/network.py"]
# group name (the shared library's, as the package's _build.py looks for it), sources, manifest
GROUPS = (("crdt", COMPILED, "crdt/_compiled.txt"), ("simulations_sim", SIM_COMPILED, "simulations/sim/_compiled.txt"))


def manifest(paths: list[str]) -> str:
    return "".join(f"{hashlib.sha256((ROOT / path).read_bytes()).hexdigest()} {path}\n" for path in paths)


def have_compiler() -> bool:
    command = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    return bool(command) and shutil.which(command[0]) is not None


class BuildWithManifest(build_ext):
    """build_ext, then each group's manifest of its compiled sources beside the compiled modules."""

    def run(self) -> None:
        # before compiling: a source edited during the build reads as stale
        texts = {target: manifest(paths) for _, paths, target in GROUPS}
        super().run()
        for target_name, text in texts.items():
            target = ROOT / target_name if self.inplace else Path(self.build_lib) / target_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


def ext_modules() -> list[object]:
    if os.environ.get("PARLEY_PURE") == "1":
        return []
    if not have_compiler():
        print("parley: no C compiler found, installing the pure-Python crdt core and simulator", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify  # pyproject.toml's build requirements install mypy
    except ImportError:
        print("parley: mypyc is not installed, installing the pure-Python crdt core and simulator", file=sys.stderr)
        return []
    # one mypycify per group: each its own shared library, so each is used (or not) as a whole
    # Errors are reported only in the modules compiled: the ones they import are analysed but
    # may see Any for packages pip's build environment does not hold (pydantic, for the
    # simulator's scenario files), which the compiled code then treats dynamically.
    return [ext for name, paths, _ in GROUPS
            for ext in mypycify(["--follow-imports=silent", *paths], opt_level="3", group_name=name)]


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildWithManifest})
