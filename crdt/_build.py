"""Which build of the crdt core this process runs: compiled (mypyc, see setup.py) or pure.

The one module of `crdt` that reads files and the environment, once, at import of the
package, and never compiled itself. `crdt/__init__.py` calls `choose`, which sets `BUILD`:

- ``"compiled"``: the compiled modules are present and were built from the sources beside
  them (each source's SHA-256 matches ``crdt/_compiled.txt``, which the build writes);
- ``"pure"``: no compiled modules, or ``PARLEY_PURE=1``;
- ``"stale"``: compiled modules are present but a source changed since they were built (or the
  manifest is missing). They are not used: the process imports the sources, with a warning
  (`StaleBuild`); ``bash scripts/dev.sh setup`` rebuilds them.

Pure imports work by a finder in front of `sys.meta_path` that loads ``crdt.*`` modules from
their ``.py`` files only, so the compiled ones (which Python would otherwise prefer) stay
unloaded. Compiled and pure modules are never mixed in one process.

`choose_build` and `stale_sources` take the package as arguments: `simulations.sim._build`
uses them for the simulator's compiled engine, under the same rules.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib.machinery import EXTENSION_SUFFIXES, SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
MANIFEST = PACKAGE / "_compiled.txt"
BUILD = "pure"


class StaleBuild(RuntimeWarning):
    """A compiled group is older than its sources, so the sources run instead."""


class _SourceOnly:
    """A meta path finder that imports the modules under `prefix` from ``.py`` sources only."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if not name.startswith(self.prefix) or path is None:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(name, target)
            if spec is not None:
                return spec
        return None


def stale_sources(root: Path = ROOT, manifest: Path = MANIFEST, name: str = "crdt/_compiled.txt") -> list[str]:
    """The compiled modules whose source differs from the one they were built from (`manifest`,
    called `name` when it is missing; its paths relative to `root`)."""
    if not manifest.exists():
        return [f"{name} (missing)"]
    changed = []
    for line in manifest.read_text().splitlines():
        digest, _, path = line.partition(" ")
        source = root / path
        if not source.exists() or hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            changed.append(path)
    return changed


def choose_build(prefix: str, root: Path, group: str, stale: Callable[[], list[str]], what: str) -> str:
    """The build of the package whose modules are `prefix`..., compiled as mypyc group `group`
    (its shared library in `root`); `stale` lists its stale sources; `what` names it in the
    warning. Installs the source-only finder unless the build is compiled."""
    if not any((root / (group + "__mypyc" + suffix)).exists() for suffix in EXTENSION_SUFFIXES):
        return "pure"
    build = "pure"
    if os.environ.get("PARLEY_PURE") != "1":
        changed = stale()
        if not changed:
            return "compiled"
        build = "stale"
        warnings.warn(
            f"{what} is stale ({', '.join(changed)} changed since the build): running the Python sources; "
            "rebuild with `bash scripts/dev.sh setup`",
            StaleBuild,
            stacklevel=4,
        )
    sys.meta_path.insert(0, _SourceOnly(prefix))
    return build


def choose() -> str:
    global BUILD
    BUILD = choose_build("crdt.", ROOT, "crdt", stale_sources, "the compiled crdt core")
    return BUILD
