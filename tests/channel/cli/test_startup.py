"""The client commands start fast because they import nothing heavy: no chain, key or libp2p
library, no node configuration, no ccxt. Asserted on ``sys.modules`` in a fresh interpreter
after importing the CLI and running a client command through it, never on a timing (the numbers
are benchmarks/startup.py's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Each costs from 50 ms (pydantic models of the config) to 1.3 s (eth_account) at start-up.
HEAVY = ("eth_account", "eth_keys", "eth_keyfile", "web3", "eth_tester", "libp2p", "multiaddr", "ccxt",
         "settlement.chain", "settlement.client", "settlement.exit", "channel.runtime.config",
         "channel.runtime.node", "channel.runtime.store", "channel.runtime.chain_worker", "channel.api.server",
         "channel.api.ccxt", "crdt.replica", "simulations.maker_bot", "trio_websocket", "websockets")
PROBE = """
import json, sys
from typer.testing import CliRunner
from channel.cli.main import app
ran = [CliRunner().invoke(app, args).exit_code for args in ARGS]
print(json.dumps({"ran": ran, "loaded": sorted(name for name in HEAVY if name in sys.modules)}))
"""


def loaded_after(*commands: list[str]) -> dict[str, list[int] | list[str]]:
    code = f"ARGS = {commands!r}\nHEAVY = {HEAVY!r}\n" + PROBE
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          timeout=120)
    result: dict[str, list[int] | list[str]] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_client_commands_import_nothing_heavy(tmp_path: Path) -> None:
    node = str(tmp_path / "no-node")  # the client path runs up to "no running node found"
    result = loaded_after(["balance", "--node", node], ["transfer", "0x" + "11" * 20, "1", "--node", node],
                          ["status", "0x" + "22" * 32, "--node", node], ["book", "ETH/USDC", "--node", node],
                          ["balance", "--help"], ["--help"])
    assert result["ran"] == [1, 1, 1, 1, 0, 0]
    assert result["loaded"] == []


def test_the_probe_sees_what_a_heavy_command_loads(tmp_path: Path) -> None:
    """The other side: the same probe after a command that needs the config and the keys
    reports them, so an empty list above means something."""
    result = loaded_after(["node", "run", "--config", str(tmp_path / "missing.toml")],
                          ["chain", "deploy", "--rpc", "http://127.0.0.1:1"])
    assert result["ran"] == [1, 1]
    assert {"channel.runtime.config", "eth_account"} <= set(result["loaded"])


def test_the_cli_names_the_store_s_certificate_folder() -> None:
    from channel.cli import certificates
    from channel.runtime import store

    assert certificates.CERTIFICATES_DIR == store.CERTIFICATES_DIR
