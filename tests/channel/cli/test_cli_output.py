"""Consistent output: every command takes ``--json`` and documents every option, the help
shows no ``<bool>`` labels and no ``--no-no-…`` flags, and the ``--json`` of the commands that
gained it is one JSON object with the facts the text shows (amounts as decimal strings)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from channel.cli.main import app

ENV = {"PARLEY_PASSWORD": "pw", "PARLEY_NODE": None, "PARLEY_PRIVATE_KEY": None, "ETH_KEYSTORE": None,
       "ETH_RPC_URL": None}


def commands() -> Iterator[tuple[list[str], Any]]:
    def walk(group: Any, prefix: list[str]) -> Iterator[tuple[list[str], Any]]:
        for name, sub in sorted(group.commands.items()):
            if hasattr(sub, "commands"):
                yield from walk(sub, [*prefix, name])
            else:
                yield [*prefix, name], sub

    yield from walk(typer.main.get_command(app), [])


COMMANDS = list(commands())


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=ENV, terminal_width=200)


def test_the_command_list_is_complete() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"balance", "transfer", "status", "chain status", "chain deploy", "exit", "node run", "keys new",
            "genesis new", "workload", "demo", "bot maker", "chain serve"} <= names
    assert len(names) >= 38


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_every_command_takes_json_and_documents_its_options(path: list[str], command: Any) -> None:
    options = [p for p in command.params if p.param_type_name == "option"]
    assert any("--json" in p.opts for p in options), "no --json"
    undocumented = [p.opts[0] for p in options if not p.help]
    undocumented += [p.name for p in command.params if p.param_type_name == "argument" and not p.help]
    assert undocumented == []
    assert command.help, "no help text"
    shown = run(*path, "--help")
    assert shown.exit_code == 0, shown.output
    assert "<bool>" not in shown.output.lower()
    assert "--no-no-" not in shown.output


def test_keys_and_genesis_as_json(tmp_path: Path) -> None:
    made = json.loads(run("keys", "new", "--out", str(tmp_path / "a"), "--light-kdf", "--json").stdout)
    assert Path(made["keystore"]).exists()
    assert json.loads(run("keys", "show", made["keystore"], "--json").stdout) == made
    other = json.loads(run("keys", "new", "--out", str(tmp_path / "b"), "--light-kdf", "--json").stdout)
    genesis = json.loads(run("genesis", "new", "--out", str(tmp_path / "chan"), "--keys", str(tmp_path / "a"),
                             "--keys", str(tmp_path / "b"), "--initial", "5", "--json").stdout)
    assert sorted(p["address"] for p in genesis["participants"]) == sorted([made["address"], other["address"]])
    assert genesis["tokens"][0]["symbol"] == "USDC"
    assert genesis["keys"] is None  # the participants' own keys: none was made
    moved = json.loads(run("genesis", "set-bootstrap", genesis["genesis"], made["address"],
                           "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLKD5MqJqjdCG1W9R1C1XCC3w6bH9G3BQKyZ9A1aKxALr",
                           "--json").stdout)
    assert moved["channel"] == genesis["channel"]  # bootstraps are not part of the channel id


def test_workload_as_json(tmp_path: Path) -> None:
    made = json.loads(run("genesis", "new", "--out", str(tmp_path / "w"), "-n", "2", "--light-kdf", "--initial",
                          "100", "--json").stdout)
    assert made["keys"] == str(tmp_path / "w" / "keys")
    wrote = json.loads(run("workload", str(tmp_path / "w"), "--out", str(tmp_path / "ops.cbor"), "--count", "20",
                           "--seed", "3", "--json").stdout)
    assert wrote == {"operations": 20, "file": str(tmp_path / "ops.cbor"), "seed": 3}
    replayed = json.loads(run("replay", str(tmp_path / "ops.cbor"), "--genesis", made["genesis"], "--json").stdout)
    assert replayed["operations"] == 20


@pytest.mark.slow
def test_chain_commands_as_json(tmp_path: Path) -> None:
    from settlement.server import ChainServerProcess

    server = ChainServerProcess(extra=["--config-out", str(tmp_path / "chain.json")])
    try:
        chain = json.loads((tmp_path / "chain.json").read_text())
        key = {"PARLEY_PRIVATE_KEY": chain["accounts"][0]["private_key"]}
        deployed = json.loads(CliRunner().invoke(app, ["chain", "deploy", "--rpc", server.url, "--test-token", "6",
                                                       "--out", str(tmp_path / "deploy.json"), "--json"],
                                                 env={**ENV, **key}).stdout)
        assert deployed["chain_id"] == chain["chain_id"]
        assert deployed["tokens"][0]["decimals"] == 6
        someone = "0x" + "ab" * 20
        funded = json.loads(run("chain", "fund", someone, "--eth", "1.5", "--rpc", server.url, "--json").stdout)
        assert (funded["funded_wei"], funded["balance_wei"]) == (str(15 * 10**17), str(15 * 10**17))
        minted = json.loads(CliRunner().invoke(app, ["chain", "mint", "--token", deployed["tokens"][0]["address"],
                                                     "--to", someone, "--amount", "2.5", "--rpc", server.url,
                                                     "--json"], env={**ENV, **key}).stdout)
        assert (minted["minted"], minted["decimals"]) == ("2500000", 6)
        made = run("genesis", "new", "--out", str(tmp_path / "chan"), "-n", "2", "--light-kdf",
                   "--from-deploy", str(tmp_path / "deploy.json"), "--json")
        genesis = json.loads(made.stdout)["genesis"]
        opened = json.loads(CliRunner().invoke(app, ["chain", "open", "--genesis", genesis, "--rpc", server.url,
                                                     "--json"], env={**ENV, **key}).stdout)
        status = json.loads(run("chain", "status", "--genesis", genesis, "--rpc", server.url, "--json").stdout)
        assert status["channel"] == opened["channel"]
        assert status["tokens"] == [{"symbol": "USDC", "deposited": "0", "claimed": "0", "refunded": "0",
                                     "withdrawn": "0"}]
        assert (status["finalized"], status["disputing"]) == (None, None)
    finally:
        server.stop()


def test_watch_json_prints_amounts_as_decimal_strings() -> None:
    from channel.cli.node import as_strings

    event = {"op_id": "0x12", "seq": 3, "kind": "order.place", "status": "tentative",
             "body": {"market": "ETH/USDC", "side": "buy", "qty": 2**60, "price": 2000 * 10**9, "expires": 0,
                      "reduce_only": False}}
    shown = as_strings(event)
    assert shown["body"] == {"market": "ETH/USDC", "side": "buy", "qty": str(2**60), "price": "2000000000000",
                             "expires": "0", "reduce_only": False}
    assert shown["seq"] == 3
    assert as_strings({"op_id": "0x12", "status": "final"}) == {"op_id": "0x12", "status": "final"}
