#!/usr/bin/env bash
# Set up everything on a fresh machine, then run one job:
#   bash scripts/dev.sh demo [ARGS]   the local multi-participant demo
#   bash scripts/dev.sh test [ARGS]   ruff, mypy and the whole test suite
#   bash scripts/dev.sh setup         only the set-up
# VENV names the virtual environment (default .venv). Set-up is skipped when it is current.
# The crdt core and the simulator's engine are compiled with mypyc when a C compiler is present
# (PARLEY_PURE=1: pure only).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
job=${1:-setup}
shift || true

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
stamp="$VENV/.parley-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # compiles the crdt core with mypyc when a C compiler is present (setup.py; PARLEY_PURE=1: not)
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    touch "$stamp"
fi
# The compiled modules sit beside the sources (an editable install): rebuild them when a crdt
# source changed since their build, which crdt reports as "stale" (and then runs the sources).
# Through pip, whose isolated build has the setuptools and mypyc of [build-system]: the venv's
# own setuptools may be too old for pyproject.toml (`setup.py build_ext` failed on its license).
# The simulator's engine and network are compiled the same way (simulations/sim/_build.py).
if [ "$("$VENV/bin/python" -c 'import crdt, simulations.sim as s; print(crdt.BUILD, s.BUILD)' 2>/dev/null)" != "compiled compiled" ] \
        && [ "${PARLEY_PURE:-}" != 1 ] && command -v "${CC:-cc}" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --no-deps -e .
fi
export PATH="$PWD/$VENV/bin:$PATH"

case "$job" in
    setup) ;;
    demo) exec parley demo "$@" ;;
    test)
        ruff check .
        mypy
        lint-imports  # the layers of DESIGN.md, [tool.importlinter] in pyproject.toml
        # solcjs (artifact check) and anvil (integration tests) from npm, pinned in
        # contracts/package.json, into contracts/node_modules (git-ignored). Without npm the
        # anvil tests skip locally; under CI=true they fail instead.
        if command -v npm >/dev/null 2>&1; then
            (cd contracts && npm install --no-audit --no-fund --silent)
        fi
        # pytest exits 5 when it collects nothing; set -e turns that into a failure too.
        pytest "$@"
        ;;
    *) echo "unknown job: $job (use demo, test or setup)" >&2; exit 2 ;;
esac
