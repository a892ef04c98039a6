"""Every command's main error paths print the CLI's one error style: an ``error:`` line (and
a ``hint:`` line when there is a next step), exit code 1, never a traceback.

The commands run through typer's CliRunner, which catches what a command raises: an error
that escaped the CLI's handling would be ``result.exception`` (not a `SystemExit`), and is
what these tests would catch. The node cases run against a real node behind the real API
(`trading_kit`), the chain cases against ``parley chain serve`` as a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner, Result

from channel.api.client import Endpoint
from channel.cli.main import app
from channel.runtime.genesis_file import create_genesis_folder, save_genesis
from channel.runtime.node import Node
from crdt.genesis import Token
from tests.channel.api.trading_kit import ADDRESSES, E9, SYMBOL, trading_genesis, with_node

GENESIS = trading_genesis()
BOB = "0x" + ADDRESSES[1].hex()
NO_OP = "0x" + "ab" * 32
ENV = {"PARLEY_PASSWORD": "pw", "PARLEY_NODE": None, "PARLEY_PRIVATE_KEY": None, "ETH_KEYSTORE": None,
       "ETH_RPC_URL": None}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV, terminal_width=200)


def assert_error(result: Result, *expected: str, hint: str | None = None) -> None:
    """One ``error:`` line (plus a hint), exit code 1, every `expected` text in it, no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception  # not an error that escaped
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2, result.stderr  # the error, and at most a hint
    for text in expected:
        assert text in lines[0], (text, lines[0])
    if hint is not None:
        assert lines[1].startswith("hint: "), result.stderr
        assert hint in lines[1], (hint, lines[1])


@pytest.fixture(scope="module")
def channel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("errors-channel")
    usdc = Token("USDC", b"\x22" * 20, 6)  # type: ignore[arg-type]
    create_genesis_folder(folder, 4, password="pw", tokens=[usdc], initial=100 * E9, light_kdf=True)
    return folder


def keystore_of(channel_dir: Path) -> Path:
    return sorted((channel_dir / "keys").glob("0x*.json"))[0]


def gone_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


# -- without a node ----------------------------------------------------------------------------


def test_a_node_that_is_not_there(tmp_path: Path) -> None:
    assert_error(run("balance", "--node", str(tmp_path / "nowhere")), "no running node found",
                 hint="parley node run")
    (tmp_path / "a-file").write_text("")
    assert_error(run("stats", "--node", str(tmp_path / "a-file")), "is a file, not a node's data directory")
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": gone_pid()}))
    (gone / "api-token").write_text("t")
    assert_error(run("peers", "--node", str(gone)), "no longer exists", hint="parley node run")
    listening_nowhere = tmp_path / "refused"
    listening_nowhere.mkdir()
    (listening_nowhere / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:1"}))
    (listening_nowhere / "api-token").write_text("t")
    assert_error(run("status", NO_OP, "--node", str(listening_nowhere)), "cannot reach the node")


def test_keys_and_passwords(channel_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    key = str(keystore_of(channel_dir))
    assert_error(run("keys", "show", key, "--password-file", str(wrong)), "cannot decrypt",
                 hint="check the password")
    assert_error(run("keys", "show", str(tmp_path / "missing.json")), "no keystore at")
    assert_error(run("keys", "show", key, "--password-file", str(tmp_path / "none")), "cannot read password file")


def test_node_run_with_a_wrong_password_unwraps_the_exception_group(channel_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "node"
    folder.mkdir()
    (tmp_path / "wrong").write_text("not-the-password\n")
    (folder / "node.toml").write_text(
        f'data_dir = "."\ngenesis = "{channel_dir / "genesis.toml"}"\nkeystore = "{keystore_of(channel_dir)}"\n'
        f'password_file = "{tmp_path / "wrong"}"\n[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\n'
    )
    assert_error(run("node", "run", "--config", str(folder / "node.toml")), "cannot decrypt",
                 hint="check the password")
    assert_error(run("node", "run", "--config", str(tmp_path / "missing.toml")), "missing.toml")
    assert_error(run("node", "repair", "--config", str(tmp_path / "missing.toml")), "missing.toml")


def test_genesis_and_node_init(channel_dir: Path, tmp_path: Path) -> None:
    genesis = str(channel_dir / "genesis.toml")
    assert_error(run("genesis", "new", "--out", str(tmp_path / "g"), "--token", "USDC"), "SYMBOL:DECIMALS")
    assert_error(run("genesis", "new", "--out", str(tmp_path / "g"), "--adjudicator", "0x12"), "")
    assert_error(run("genesis", "set-bootstrap", genesis, "0xnot-an-address", "/ip4/1.2.3.4/tcp/1"), "bad address")
    assert_error(run("node", "init", "--genesis", str(tmp_path / "none.toml"), "--keystore",
                     str(keystore_of(channel_dir)), "--out", str(tmp_path / "n")), "none.toml")
    assert_error(run("node", "init", "--genesis", genesis, "--keystore", str(keystore_of(channel_dir)),
                     "--out", str(tmp_path / "n"), "--listen", "/ip4/127.0.0.1/tcp/0"), "fixed port")


def test_files_that_are_not_there(channel_dir: Path, tmp_path: Path) -> None:
    genesis = str(channel_dir / "genesis.toml")
    assert_error(run("replay", str(tmp_path / "none.cbor"), "--genesis", genesis), "cannot read")
    (tmp_path / "garbage.cbor").write_bytes(b"\xff\x00garbage")
    assert_error(run("replay", str(tmp_path / "garbage.cbor"), "--genesis", genesis), "not a CBOR sequence")
    (tmp_path / "empty").mkdir()
    assert_error(run("exit", "--genesis", genesis, "--certificate", str(tmp_path / "empty")),
                 "no certificate files in")
    assert_error(run("checkpoints", "--node", str(tmp_path / "empty")), "no certificate files in")
    assert_error(run("certificate", "--node", str(tmp_path / "empty")), "no certificate files in")


def test_chain_commands_without_a_key_or_a_chain(channel_dir: Path) -> None:
    genesis = str(channel_dir / "genesis.toml")
    assert_error(run("chain", "deploy", "--rpc", "http://127.0.0.1:1"), "give --key-file")
    assert_error(run("chain", "open", "--genesis", genesis, "--rpc", "http://127.0.0.1:1"), "give --key-file")
    assert_error(run("chain", "fund", "0x12", "--rpc", "http://127.0.0.1:1", "--eth", "-1"), "positive amount")
    assert_error(run("chain", "status", "--genesis", genesis, "--rpc", "http://127.0.0.1:1"), "failed 5 times",
                 hint="is the chain running?")


# -- against a node --------------------------------------------------------------------------


def against_node(tmp_path: Path, commands: Callable[[str], None]) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        await trio.to_thread.run_sync(commands, str(tmp_path / "node0"))

    with_node(GENESIS, tmp_path, body)


def test_api_rejections_name_the_amounts(tmp_path: Path) -> None:
    def commands(node: str) -> None:
        assert_error(run("transfer", BOB, "250000", "--node", node),
                     "insufficient balance: you have 100000 USDC, and the transfer needs 250000 USDC",
                     hint="parley balance")
        assert_error(run("order", "buy", SYMBOL, "100", "--price", "2000", "--node", node),
                     "insufficient balance: you have 100000 USDC, and a buy of this size needs 200100 USDC")
        assert_error(run("order", "sell", SYMBOL, "11", "--price", "2000", "--node", node),
                     "insufficient balance: you have 10 ETH, and a sell of this size needs 11 ETH")
        assert_error(run("transfer", BOB, "1", "--token", "DOGE", "--node", node), "unknown_token")
        assert_error(run("transfer", BOB, "ten", "--node", node), "ten")
        assert_error(run("transfer", "0xnot-an-address", "1", "--node", node), "to")
        assert_error(run("transfer", "0x" + "12" * 20, "1", "--node", node), "unknown_recipient")
        assert_error(run("order", "buy", "DOGE/USDC", "1", "--price", "1", "--node", node), "no market 'DOGE/USDC'")

    against_node(tmp_path, commands)


def test_unknown_and_malformed_ids(tmp_path: Path) -> None:
    def commands(node: str) -> None:
        assert_error(run("status", NO_OP, "--node", node), "knows no operation", hint="op id")
        unknown = run("status", NO_OP, "--node", node, "--json")
        assert unknown.exit_code == 1
        assert json.loads(unknown.stdout) == {"op_id": NO_OP, "status": "unknown"}
        assert_error(run("status", "0x12", "--node", node), "op_id")
        assert_error(run("cancel", NO_OP, "--node", node), "")
        assert_error(run("balance", "--account", "0xnope", "--node", node), "account")

    against_node(tmp_path, commands)


def test_a_wrong_api_token(tmp_path: Path) -> None:
    def commands(node: str) -> None:
        copy = tmp_path / "copy"
        copy.mkdir()
        (copy / "api.json").write_text((Path(node) / "api.json").read_text())
        (copy / "api-token").write_text("not-the-token")
        assert_error(run("stats", "--node", str(copy)), "refused the API token", hint="api-token")

    against_node(tmp_path, commands)


# -- against a chain ---------------------------------------------------------------------------


@pytest.mark.slow
def test_an_unfunded_key_and_a_missing_contract(channel_dir: Path, tmp_path: Path) -> None:
    from eth_account import Account

    from channel.runtime.genesis_file import load_genesis
    from settlement.chain import RpcChain
    from settlement.server import ChainServerProcess

    server = ChainServerProcess()
    try:
        rpc = server.url
        chain_id = RpcChain(rpc).chain_id
        unfunded = Account.create()
        result = CliRunner().invoke(app, ["chain", "deploy", "--rpc", rpc, "--out", str(tmp_path / "d.json")],
                                    env={**ENV, "PARLEY_PRIVATE_KEY": unfunded.key.hex()})
        assert_error(result, "cannot pay the gas of this transaction: it holds 0 wei",
                     hint=f"fund it with `parley chain fund {unfunded.address}`")
        genesis = load_genesis(channel_dir / "genesis.toml")
        on_this_chain = tmp_path / "genesis.toml"
        save_genesis(type(genesis)(**{**{f: getattr(genesis, f) for f in genesis.__dataclass_fields__},
                                      "chain_id": chain_id}), on_this_chain)
        assert_error(run("chain", "status", "--genesis", str(on_this_chain), "--rpc", rpc),
                     "no contract at the genesis's adjudicator", hint="parley chain deploy")
    finally:
        server.stop()
