"""From nothing to a running channel with the commands alone, as the README's "Running a node"
does: four participants each make a key, one writes the genesis from their keystores, each
inits its node (which prints its bootstrap address), the genesis gets the four addresses, and
the four `node run` processes make a channel that transfers and certifies. Then the mistakes
on that path: each one line and exit code 1, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from channel.api.client import Client
from channel.cli.main import app
from channel.runtime.config import NodeConfig
from channel.runtime.genesis_file import load_genesis
from simulations.cluster import NodeProcess, free_port, stop_all, wait_until


def parley(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "channel", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_four_participants_make_a_channel_with_the_commands_alone(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("correct horse\n")
    accounts = []
    for i in range(4):
        out = parley("keys", "new", "--out", f"p{i}/keys", "--password-file", "password", "--light-kdf", cwd=tmp_path)
        accounts.append(out.split("/")[-1].strip().removesuffix(".json"))
    keys = [arg for i in range(4) for arg in ("--keys", f"p{i}/keys")]
    parley("genesis", "new", "--out", "chan", "--initial", "100", *keys, cwd=tmp_path)
    for i, account in enumerate(accounts):
        printed = parley("node", "init", "--genesis", "chan/genesis.toml", "--keystore", f"p{i}/keys/{account}.json",
                         "--out", f"p{i}/node", "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}",
                         "--password-file", "password", "--json", cwd=tmp_path)
        init = json.loads(printed)
        assert init["account"] == account
        parley("genesis", "set-bootstrap", "chan/genesis.toml", account, init["bootstrap"], cwd=tmp_path)
    genesis = load_genesis(tmp_path / "chan" / "genesis.toml")
    assert sorted("0x" + p.address.hex() for p in genesis.participants) == sorted(accounts)
    assert all("/p2p/" in p.bootstrap for p in genesis.participants)
    config = (tmp_path / "p0" / "node" / "node.toml").read_text()
    assert 'genesis = "../../chan/genesis.toml"' in config  # relative: the folder can move
    processes = [NodeProcess(tmp_path / f"p{i}" / "node" / "node.toml") for i in range(4)]
    try:
        for process in processes:
            process.launch()
        endpoints = [process.wait_ready(60) for process in processes]
        sent = parley("transfer", "--node", "p0/node", accounts[3], "12.5", "--json", cwd=tmp_path)
        op_id = json.loads(sent)["op_id"]
        with Client(endpoints[3]) as client:
            wait_until(lambda: client.status(op_id)["status"] == "final", what="the transfer final at node 3")
            assert client.balances(accounts[3])[accounts[3]]["USDC"]["free"] == str(112_500_000_000)
        rows = json.loads(parley("checkpoints", "--node", "p2/node", "--genesis", "chan/genesis.toml", "--json",
                                 cwd=tmp_path))
        assert rows
        assert all(row["verified"] for row in rows)
    finally:
        stop_all(processes)


runner = CliRunner()


def fails(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.output


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init")
    (root / "password").write_text("pw\n")
    for i in range(2):
        assert runner.invoke(app, ["keys", "new", "--out", str(root / f"p{i}"), "--password-file",
                                   str(root / "password"), "--light-kdf"]).exit_code == 0
    assert runner.invoke(app, ["genesis", "new", "--out", str(root / "chan"), "--keys", str(root / "p0"),
                               "--keys", str(root / "p1")]).exit_code == 0
    return root


def test_mistakes_on_the_way_to_a_node_are_one_line(made: Path, tmp_path: Path) -> None:
    genesis = str(made / "chan" / "genesis.toml")
    key0 = next((made / "p0").glob("0x*.json"))
    account0 = key0.stem
    assert "-n 3 but --keys names 2" in fails("genesis", "new", "--out", str(tmp_path / "a"), "-n", "3",
                                             "--keys", str(made / "p0"), "--keys", str(made / "p1"))
    assert "bad bootstrap address" in fails("genesis", "new", "--out", str(tmp_path / "b"), "--keys", str(made / "p0"),
                                            "--bootstrap", f"{account0}=/ip4/127.0.0.1/tcp/1")
    assert "dispute window must be between 3600" in fails("genesis", "new", "--out", str(tmp_path / "c"),
                                                          "--keys", str(made / "p0"), "--dispute-window", "60")
    (tmp_path / "deploy.json").write_text("{}")
    assert "cannot read the deployment" in fails("genesis", "new", "--out", str(tmp_path / "d"), "--keys",
                                                 str(made / "p0"), "--from-deploy", str(tmp_path / "deploy.json"))
    assert "not an Ethereum v3 keystore" in fails("genesis", "new", "--out", str(tmp_path / "e"),
                                                  "--keys", str(tmp_path / "deploy.json"))
    assert "not a participant" in fails("genesis", "set-bootstrap", genesis, "0x" + "11" * 20, "")
    outsider = tmp_path / "outsider"
    assert runner.invoke(app, ["keys", "new", "--out", str(outsider), "--password-file", str(made / "password"),
                               "--light-kdf"]).exit_code == 0
    init = ["node", "init", "--genesis", genesis, "--password-file", str(made / "password")]
    assert "not a participant of this channel" in fails(*init, "--keystore", str(next(outsider.glob("*.json"))),
                                                        "--out", str(tmp_path / "n1"))
    assert "needs a fixed port" in fails(*init, "--keystore", str(key0), "--out", str(tmp_path / "n2"),
                                         "--listen", "/ip4/127.0.0.1/tcp/0")
    (tmp_path / "wrong").write_text("not it\n")
    wrong = fails("node", "init", "--genesis", genesis, "--keystore", str(key0), "--out", str(tmp_path / "n3"),
                  "--password-file", str(tmp_path / "wrong"))
    assert wrong.count("\n") == 1
    assert not (tmp_path / "n3" / "node.toml").exists()
    assert runner.invoke(app, [*init, "--keystore", str(key0), "--out", str(tmp_path / "n4")]).exit_code == 0
    assert "exists" in fails(*init, "--keystore", str(key0), "--out", str(tmp_path / "n4"))
    loaded = NodeConfig.load(tmp_path / "n4" / "node.toml")
    assert loaded.keystore == key0.resolve()
    assert loaded.data_dir == (tmp_path / "n4").resolve()


def test_a_deployment_file_makes_the_genesis_of_a_channel_that_opens(made: Path, tmp_path: Path) -> None:
    """`chain deploy` writes deploy.json; `genesis new --from-deploy` takes its chain id,
    adjudicator and test token; `chain open` then accepts the genesis."""
    from eth_account import Account

    from settlement.chain import RpcChain
    from settlement.server import ChainServerProcess

    server = ChainServerProcess()
    try:
        deployer = Account.create()
        RpcChain(server.url).fund(deployer.address, 10**20)
        env = {"PARLEY_PRIVATE_KEY": deployer.key.hex(), "ETH_RPC_URL": server.url}
        deploy = tmp_path / "deploy.json"
        result = runner.invoke(app, ["chain", "deploy", "--test-token", "6", "--out", str(deploy)], env=env)
        assert result.exit_code == 0, result.output
        deployed = json.loads(deploy.read_text())
        out = tmp_path / "chan"
        result = runner.invoke(app, ["genesis", "new", "--out", str(out), "--keys", str(made / "p0"),
                                     "--keys", str(made / "p1"), "--from-deploy", str(deploy)])
        assert result.exit_code == 0, result.output
        genesis = load_genesis(out / "genesis.toml")
        assert genesis.chain_id == deployed["chain_id"] == RpcChain(server.url).chain_id
        assert "0x" + genesis.adjudicator.hex() == deployed["adjudicator"].lower()
        assert [(t.symbol, "0x" + t.address.hex(), t.decimals) for t in genesis.tokens] == [
            ("USDC", deployed["tokens"][0]["address"].lower(), 6)]
        result = runner.invoke(app, ["chain", "open", "--genesis", str(out / "genesis.toml")], env=env)
        assert result.exit_code == 0, result.output
        assert f"channel 0x{genesis.channel_id.hex()} open" in result.output
    finally:
        server.stop()
