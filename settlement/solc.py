"""Rebuild the committed contract artifacts with solcjs from npm: ``python -m settlement.solc``.

Invariants:
- the compiler input is built here, byte for byte, from the files on disk: every source unit
  is named by its import path (``src/...`` or ``@openzeppelin/contracts/...``) and carries its
  content, so solcjs never resolves a path itself and two builds of the same tree give the same
  input, hence (solc is deterministic) the same artifacts;
- the settings (optimizer, runs, EVM version) live only in `SETTINGS`, and each artifact records
  them with the exact compiler version, so `contracts/build/` is self-describing;
- `check()` recompiles and lists every artifact that differs from the committed one; the test
  suite runs it whenever solcjs is installed.

solcjs in standard-json mode may print a line about SMT solvers before the JSON on stdout: the
output is read from the first ``{``.
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from settlement.errors import SettlementError

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "contracts"
SOURCES = CONTRACTS / "src"
BUILD = CONTRACTS / "build"
NODE_MODULES = CONTRACTS / "node_modules"

#: Contracts whose artifacts are committed (source unit, contract name).
TARGETS = (
    ("src/Adjudicator.sol", "Adjudicator"),
    ("src/test/TestToken.sol", "TestToken"),
    ("src/test/ReentrantToken.sol", "ReentrantToken"),
    ("src/test/RebasingToken.sol", "RebasingToken"),
    ("src/test/FeeOnTransferToken.sol", "FeeOnTransferToken"),
)

SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"]}
    },
}

_IMPORT = re.compile(r"""^\s*import\s+(?:[^;]*?\s+from\s+)?["']([^"']+)["']""", re.MULTILINE)


class CompilerUnavailable(SettlementError):
    """solcjs is not installed (run ``npm install`` in contracts/)."""


class CompilationFailed(SettlementError):
    pass


def solcjs_path() -> Path | None:
    candidate = NODE_MODULES / ".bin" / "solcjs"
    if candidate.exists() and shutil.which("node"):
        return candidate
    return None


def _read_unit(unit: str) -> str:
    path = NODE_MODULES / unit if unit.startswith("@") else CONTRACTS / unit
    return path.read_text()


def collect_sources() -> dict[str, dict[str, str]]:
    """Every source unit reachable from the targets, by import path, with its content."""
    sources: dict[str, dict[str, str]] = {}
    queue = [unit for unit, _ in TARGETS]
    while queue:
        unit = queue.pop()
        if unit in sources:
            continue
        content = _read_unit(unit)
        sources[unit] = {"content": content}
        for imported in _IMPORT.findall(content):
            if imported.startswith("."):
                imported = posixpath.normpath(posixpath.join(posixpath.dirname(unit), imported))
            queue.append(imported)
    return dict(sorted(sources.items()))


def compile_all() -> dict[str, dict[str, Any]]:
    """Compile the targets; return artifact dicts by contract name."""
    solcjs = solcjs_path()
    if solcjs is None:
        raise CompilerUnavailable("solcjs not found: run `npm install` in contracts/ (needs node)")
    request = {"language": "Solidity", "sources": collect_sources(), "settings": SETTINGS}
    # solcjs reads stdin with readFileSync(0), which fails with EAGAIN on a pipe, and exits
    # before a large stdout pipe is drained: give it files on both sides.
    with tempfile.TemporaryFile("w+") as stdin, tempfile.TemporaryFile("w+") as stdout:
        stdin.write(json.dumps(request, sort_keys=True))
        stdin.seek(0)
        proc = subprocess.run(
            [str(solcjs), "--standard-json"],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            cwd=CONTRACTS,
        )
        stdout.seek(0)
        text = stdout.read()
    start = text.find("{")
    if start < 0:
        raise CompilationFailed(f"solcjs gave no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")
    output = json.loads(text[start:])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompilationFailed("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    version = subprocess.run(
        [str(solcjs), "--version"], capture_output=True, text=True, check=True, cwd=CONTRACTS
    ).stdout.strip()
    artifacts = {}
    for unit, name in TARGETS:
        compiled = output["contracts"][unit][name]
        settings = {key: value for key, value in SETTINGS.items() if key != "outputSelection"}
        artifacts[name] = {
            "contractName": name,
            "sourceName": unit,
            "compiler": {"name": "solcjs", "version": version},
            "settings": settings,
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "metadata": compiled["metadata"],
        }
    return artifacts


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def write(artifacts: dict[str, dict[str, Any]]) -> None:
    BUILD.mkdir(parents=True, exist_ok=True)
    for name, artifact in artifacts.items():
        (BUILD / f"{name}.json").write_text(render(artifact))


def check() -> list[str]:
    """Recompile and return the names of committed artifacts that are missing or stale."""
    stale = []
    for name, artifact in compile_all().items():
        path = BUILD / f"{name}.json"
        if not path.exists() or path.read_text() != render(artifact):
            stale.append(name)
    return stale


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = check()
        if stale:
            print("stale artifacts: " + ", ".join(stale), file=sys.stderr)
            return 1
        print("artifacts are up to date")
        return 0
    artifacts = compile_all()
    write(artifacts)
    for name, artifact in artifacts.items():
        size = (len(artifact["deployedBytecode"]) - 2) // 2
        print(f"{name}: {size} bytes deployed ({artifact['compiler']['version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
