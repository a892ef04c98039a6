"""``parley exit`` as a user runs it: a real process against anvil, interrupted and resumed,
for a channel whose other participants never answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
import typer
from eth_account import Account
from settlement_kit import E9, WINDOW, build_world
from typer.testing import CliRunner

from settlement.chain import AnvilProcess, RpcChain
from settlement.cli import KEY_ENV, register

ROOT = Path(__file__).resolve().parents[2]


def app() -> typer.Typer:
    cli = typer.Typer()
    register(cli)
    return cli


def test_exit_help_explains_the_flow() -> None:
    result = CliRunner().invoke(app(), ["exit", "--help"], terminal_width=100)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("propose", "dispute window", "finalize", "claim", "resumes", KEY_ENV, "--key-file"):
        assert words in text, words


def test_exit_without_a_key_is_refused(tmp_path: Path) -> None:
    genesis = tmp_path / "g.toml"
    genesis.write_text("")
    result = CliRunner().invoke(app(), ["exit", "--genesis", str(genesis), "--certificate", str(genesis)], env={})
    assert result.exit_code != 0


@pytest.mark.slow
def test_exit_process_alone_interrupted_and_resumed(anvil: AnvilProcess, tmp_path: Path) -> None:
    chain = RpcChain(anvil.url)
    world = build_world(chain, salt=b"cli")
    world.deposit(0, 30 * E9)
    world.deposit(2, 20 * E9)
    replica = world.replica()
    world.transfer(replica, 0, 3, 4 * E9, seq=1)
    certificate = world.certify(replica, 1)
    genesis_file = tmp_path / "genesis.toml"
    genesis_file.write_text(tomli_w.dumps(world.genesis.to_mapping()))
    certs = tmp_path / "certificates"
    certs.mkdir()
    (certs / "v1.cbor").write_bytes(certificate.encode())
    args = ["exit", "--genesis", str(genesis_file), "--certificate", str(certs), "--rpc", anvil.url]

    env = {**os.environ, KEY_ENV: world.keys[3].hex()}
    process = subprocess.Popen(
        [sys.executable, "-m", "settlement.cli", *args, "--poll-interval", "0.2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):  # until the proposal is on-chain (bounded, not timed)
            if world.adjudicator.channel(world.channel).status == "pending" or process.poll() is not None:
                break
            time.sleep(0.1)
        assert world.adjudicator.channel(world.channel).status == "pending"
        process.send_signal(signal.SIGINT)  # the user gives up waiting
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert b"propose" in output

    chain.increase_time(WINDOW + 1)
    keystore = tmp_path / "key.json"
    keystore.write_text(__import__("json").dumps(Account.encrypt(world.keys[3], "hunter2")))
    password = tmp_path / "password"
    password.write_text("hunter2\n")
    result = CliRunner().invoke(
        app(), [*args, "--key-file", str(keystore), "--password-file", str(password)], env={KEY_ENV: ""}
    )
    assert result.exit_code == 0, result.output
    assert "reuse" in result.output
    assert "claimed 4 USDC" in result.output
    assert world.adjudicator.channel(world.channel).status == "concluded"
    assert world.token.balance_of(world.accounts[3].address) == 10**30 + 4_000_000
