"""crdt/ and channel/core/ are the pure core (DESIGN.md, "Layout"): they never import trio,
libp2p, web3, sqlite, time, random or any I/O, clock, entropy or concurrency module, and they
never use floats."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import channel.core
import crdt

FORBIDDEN = {
    "os",
    "io",
    "pathlib",
    "logging",
    "datetime",
    "secrets",
    "uuid",
    "trio",
    "libp2p",
    "web3",
    "sqlite3",
    "random",
    "time",
    "asyncio",
    "socket",
    "threading",
    "multiprocessing",
}
PURE = (crdt, channel.core)
# crdt/_build.py is not part of the state machine: it picks the build of the package (compiled
# or pure) once, at import, from the environment and the files beside it (setup.py).
BUILD_SELECTOR = Path(crdt.__file__).parent / "_build.py"
SOURCES = sorted(
    path for package in PURE for path in Path(package.__file__).parent.rglob("*.py") if path != BUILD_SELECTOR
)

# DESIGN.md lets the core use these; what they load themselves (cffi loads threading for
# coincurve, and every one of them os and io) is not the core's doing, so the baseline imports
# them too.
ALLOWED_DEPENDENCIES = "import cbor2, coincurve, sha3, eth_hash.auto"

PROBE = (
    """
import json, sys
before = set(sys.modules)
"""
    + ALLOWED_DEPENDENCIES
    + """
if {imports}:
    import importlib, pkgutil, crdt, channel.core
    for package in (crdt, channel.core):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""
)


def new_modules(imports: bool) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(result.stdout))


def test_importing_every_core_module_loads_nothing_forbidden() -> None:
    loaded = new_modules(True) - new_modules(False)
    # the walk really imported both packages
    assert any(name.startswith("crdt.") for name in loaded)
    assert any(name.startswith("channel.core.") for name in loaded)
    bad = {name for name in loaded if name.split(".")[0] in FORBIDDEN | {"eth_abi", "eth_utils", "eth_account"}}
    assert not bad, f"importing the core pulls in {sorted(bad)}"


def test_no_core_source_imports_a_forbidden_module() -> None:
    assert len(SOURCES) >= 12
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_no_float_in_core_sources() -> None:
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), (
                f"{path.name}:{node.lineno} has a float literal"
            )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "float", f"{path.name}:{node.lineno} calls float()"
            if isinstance(node, ast.BinOp):
                assert not isinstance(node.op, ast.Div), f"{path.name}:{node.lineno} uses true division"
