"""Which build of the simulator's engine this process runs: compiled (mypyc, see setup.py) or pure.

The same rules as the crdt core's (`crdt._build`, which this mirrors for the package
`simulations.sim`; crdt's stays separate so that the core never imports the simulator).
`simulations/sim/__init__.py` calls `choose` at import of the package, which sets `BUILD`:

- ``"compiled"``: the compiled modules (`COMPILED` in setup.py: the engine and the network)
  are present and were built from the sources beside them (each source's SHA-256 matches
  ``simulations/sim/_compiled.txt``, which the build writes);
- ``"pure"``: no compiled modules, or ``PARLEY_PURE=1``;
- ``"stale"``: compiled modules are present but a source changed since they were built (or the
  manifest is missing). They are not used: the process imports the sources, with a warning
  (`StaleBuild`); ``pip install --no-deps -e .`` rebuilds them.

Pure imports work by a finder in front of `sys.meta_path` that loads ``simulations.sim.*``
modules from their ``.py`` files only, so the compiled ones (which Python would otherwise
prefer) stay unloaded. Compiled and pure modules of the package are never mixed in one process.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent.parent
MANIFEST = PACKAGE / "_compiled.txt"
GROUP = "simulations_sim"  # mypycify's group_name in setup.py: the shared library's name
PREFIX = "simulations.sim."
BUILD = "pure"


class StaleBuild(RuntimeWarning):
    """The compiled simulator engine is older than its sources, so the sources run instead."""


class _SourceOnly:
    """A meta path finder that imports ``simulations.sim.*`` from ``.py`` sources only."""

    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if not name.startswith(PREFIX) or path is None:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(name, target)
            if spec is not None:
                return spec
        return None


def _compiled_present() -> bool:
    return any((ROOT / (GROUP + "__mypyc" + suffix)).exists() for suffix in EXTENSION_SUFFIXES)


def stale_sources() -> list[str]:
    """The compiled modules whose source differs from the one they were built from."""
    if not MANIFEST.exists():
        return ["simulations/sim/_compiled.txt (missing)"]
    changed = []
    for line in MANIFEST.read_text().splitlines():
        digest, _, path = line.partition(" ")
        source = ROOT / path
        if not source.exists() or hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            changed.append(path)
    return changed


def choose() -> str:
    global BUILD
    if not _compiled_present():
        BUILD = "pure"
        return BUILD
    if os.environ.get("PARLEY_PURE") == "1":
        BUILD = "pure"
    else:
        changed = stale_sources()
        if not changed:
            BUILD = "compiled"
            return BUILD
        BUILD = "stale"
        warnings.warn(
            f"the compiled simulator engine is stale ({', '.join(changed)} changed since the build): running "
            "the Python sources; rebuild with `pip install --no-deps -e .`",
            StaleBuild,
            stacklevel=3,
        )
    sys.meta_path.insert(0, _SourceOnly())
    return BUILD
