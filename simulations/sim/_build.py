"""Which build of the simulator's engine this process runs: compiled (mypyc, see setup.py) or pure.

The crdt core's rules and mechanism (`crdt._build`), for the package `simulations.sim`:
`simulations/sim/__init__.py` calls `choose` at import of the package, which sets `BUILD` to
``"compiled"`` (the engine and the network, `SIM_COMPILED` in setup.py, built from the sources
beside them: each source's SHA-256 matches ``simulations/sim/_compiled.txt``), ``"pure"`` (no
compiled modules, or ``PARLEY_PURE=1``) or ``"stale"`` (a source changed since the build: the
sources run, with a `crdt._build.StaleBuild` warning).
"""

from __future__ import annotations

from pathlib import Path

from crdt import _build as shared

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent.parent
MANIFEST = PACKAGE / "_compiled.txt"
GROUP = "simulations_sim"  # mypycify's group_name in setup.py: the shared library's name
BUILD = "pure"


def stale_sources() -> list[str]:
    """The compiled modules whose source differs from the one they were built from."""
    return shared.stale_sources(ROOT, MANIFEST, "simulations/sim/_compiled.txt")


def choose() -> str:
    global BUILD
    BUILD = shared.choose_build("simulations.sim.", ROOT, GROUP, stale_sources, "the compiled simulator engine")
    return BUILD
