"""From nothing to a running channel with the commands alone, as the README's "Running a node"
does: four participants each make a key, one writes the genesis from their keystores, each
inits its node (which prints its bootstrap address), the genesis gets the four addresses, and
the four `node run` processes make a channel that transfers and certifies. Then the mistakes
on that path: each one line and exit code 1, never a traceback."""

from __future__ import annotations

import json
import os
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
    assert wrong.startswith("error: cannot decrypt")
    assert wrong.count("\n") == 2  # the error and its hint
    assert wrong.splitlines()[1].startswith("hint: check the password")
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


def test_from_nothing_to_an_exit_on_chain_serve_with_the_commands_alone(tmp_path: Path) -> None:
    """Issue 17's walk: a served chain, four keys funded, the adjudicator and a test token
    deployed, the genesis from deploy.json, four nodes initialised and run, deposits, a
    transfer, certificates on disk, every node killed, then one participant's `parley exit`
    with its data directory pays it on-chain what the certificate owes."""
    from eth_account import Account

    from settlement.chain import RpcChain
    from settlement.client import AdjudicatorClient, Sender, TestTokenClient
    from settlement.server import ChainServerProcess

    (tmp_path / "password").write_text("pw\n")
    server = ChainServerProcess(extra=["--config-out", str(tmp_path / "chain.json")])
    processes: list[NodeProcess] = []
    try:
        funder = json.loads((tmp_path / "chain.json").read_text())["accounts"][0]["private_key"]
        env = {"ETH_RPC_URL": server.url, "PARLEY_PRIVATE_KEY": funder}

        def run(*args: str, key: int | None = None) -> str:
            extra = ("--key-file", str(keyfile[key]), "--password-file", "password") if key is not None else ()
            done = subprocess.run([sys.executable, "-m", "channel", *args, *extra], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120,
                                  env={**os.environ, **(env if key is None else {"ETH_RPC_URL": server.url})})
            assert done.returncode == 0, done.stdout + done.stderr
            assert "Traceback" not in done.stderr
            return done.stdout

        keyfile = []
        for i in range(4):
            out = run("keys", "new", "--out", f"p{i}/keys", "--password-file", "password", "--light-kdf")
            keyfile.append(tmp_path / out.split()[-1])
            run("chain", "fund", keyfile[i].stem, "--eth", "10")
        run("chain", "deploy", "--test-token", "6")
        token = json.loads((tmp_path / "deploy.json").read_text())["tokens"][0]["address"]
        run("genesis", "new", "--out", "chan", "--from-deploy", "deploy.json",
            *[arg for i in range(4) for arg in ("--keys", f"p{i}/keys")])
        for i in range(4):
            init = json.loads(run("node", "init", "--genesis", "chan/genesis.toml", "--keystore", str(keyfile[i]),
                                  "--out", f"p{i}/node", "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}",
                                  "--rpc", server.url, "--password-file", "password", "--json"))
            run("genesis", "set-bootstrap", "chan/genesis.toml", keyfile[i].stem, init["bootstrap"])
        run("chain", "open", "--genesis", "chan/genesis.toml")
        for i in range(4):
            run("chain", "mint", "--token", token, "--to", keyfile[i].stem, "--amount", "100")
            run("chain", "deposit", "--genesis", "chan/genesis.toml", "--token", "USDC", "--amount", "100", key=i)
        processes = [NodeProcess(tmp_path / f"p{i}" / "node" / "node.toml") for i in range(4)]
        for process in processes:
            process.launch()
        endpoints = [process.wait_ready(60) for process in processes]
        me, other = keyfile[1].stem, keyfile[3].stem
        with Client(endpoints[1]) as client:
            wait_until(lambda: client.balances(me)[me]["USDC"]["free"] == str(100 * 10**9), what="deposit credited")
        sent = json.loads(run("transfer", "--node", "p1/node", other, "12.5", "--json"))
        with Client(endpoints[1]) as client:
            wait_until(lambda: client.status(sent["op_id"])["status"] == "final", what="the transfer final")
            version = client.stats()["version"]
            wait_until(lambda: client.stats()["certified"] >= version, what="its certificate")
        stop_all(processes)  # every node is gone; node 1's data directory holds the certificates
        newest = max(json.loads(run("checkpoints", "--node", "p1/node", "--json")), key=lambda row: row["version"])
        chain = RpcChain(server.url)
        genesis = load_genesis(tmp_path / "chan" / "genesis.toml")
        adjudicator = AdjudicatorClient(Sender(chain, Account.create()), "0x" + genesis.adjudicator.hex())
        usdc = TestTokenClient(Sender(chain, Account.create()), token)
        before = usdc.balance_of(me)
        exit_run = subprocess.Popen(
            [sys.executable, "-m", "channel", "exit", "--genesis", "chan/genesis.toml", "--certificate", "p1/node",
             "--key-file", str(keyfile[1]), "--password-file", "password", "--poll-interval", "0.5"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "ETH_RPC_URL": server.url},
        )
        try:
            def settled() -> bool:
                if adjudicator.channel(genesis.channel_id).status == "closing":
                    pending = adjudicator.settlement(genesis.channel_id)
                    if pending.version == newest["version"] and pending.finalizes_at >= chain.now():
                        chain.increase_time(pending.finalizes_at - chain.now() + 1)  # past the window
                return exit_run.poll() is not None

            wait_until(settled, 120, "the exit")
        finally:
            if exit_run.poll() is None:
                exit_run.kill()
        output = exit_run.communicate(timeout=30)[0]
        assert exit_run.returncode == 0, output
        assert "Traceback" not in output
        assert usdc.balance_of(me) - before == 87_500_000  # its 100 USDC deposited, less the 12.5 it sent
    finally:
        stop_all(processes)
        server.stop()
