"""crdt/ is the pure core (DESIGN.md, "Layout"): it never imports trio, libp2p, web3, sqlite,
time, random or any I/O or concurrency module, and it never uses floats."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import crdt

FORBIDDEN = {
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
SOURCES = sorted(Path(crdt.__file__).parent.rglob("*.py"))

# DESIGN.md lets the core use these; what they load themselves (cffi loads threading for
# coincurve) is not crdt's doing, so the baseline imports them too.
ALLOWED_DEPENDENCIES = "import cbor2, coincurve, sha3, eth_hash.auto"

PROBE = (
    """
import json, sys
before = set(sys.modules)
"""
    + ALLOWED_DEPENDENCIES
    + """
if {imports}:
    import importlib, pkgutil, crdt
    for info in pkgutil.walk_packages(crdt.__path__, "crdt."):
        importlib.import_module(info.name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""
)


def new_modules(imports: bool) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(result.stdout))


def test_importing_every_crdt_module_loads_nothing_forbidden() -> None:
    loaded = new_modules(True) - new_modules(False)
    assert any(name.startswith("crdt.") for name in loaded)  # the walk really imported the package
    bad = {name for name in loaded if name.split(".")[0] in FORBIDDEN | {"eth_abi", "eth_utils", "eth_account"}}
    assert not bad, f"importing crdt pulls in {sorted(bad)}"


def test_no_crdt_source_imports_a_forbidden_module() -> None:
    assert len(SOURCES) >= 10
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


def test_no_float_in_crdt_sources() -> None:
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), (
                f"{path.name}:{node.lineno} has a float literal"
            )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "float", f"{path.name}:{node.lineno} calls float()"
            if isinstance(node, ast.BinOp):
                assert not isinstance(node.op, ast.Div), f"{path.name}:{node.lineno} uses true division"
