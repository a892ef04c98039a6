"""``parley exit`` as a user runs it: a real process against anvil, interrupted and resumed,
for a channel whose other participants never answer."""

from __future__ import annotations

import json
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
from typer.testing import CliRunner, Result

from channel.cli.chain import KEY_ENV, register
from crdt.graph import Equivocation
from crdt.ops import sign_op
from settlement.chain import AnvilProcess, RpcChain
from tests.settlement.settlement_kit import BOND, E9, WINDOW, build_world

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
        [sys.executable, "-m", "channel.cli.chain", *args, "--poll-interval", "0.2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):  # until the proposal is on-chain (bounded, not timed)
            if world.adjudicator.channel(world.channel).status == "closing" or process.poll() is not None:
                break
            time.sleep(0.1)
        assert world.adjudicator.channel(world.channel).status == "closing"
        process.send_signal(signal.SIGINT)  # the user gives up waiting
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode != 0
    assert b"closing the channel with checkpoint v1" in output

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


@pytest.mark.slow
def test_chain_commands_bond_claim_withdrawals_slash_unbond_and_refund(anvil: AnvilProcess, tmp_path: Path) -> None:
    """`parley chain bond|claim-withdrawals|slash|unbond|withdraw-bond|refund`, as a user types
    them, on anvil: every answer is one line, and what each says happened on-chain."""
    world = build_world(RpcChain(anvil.url), salt=b"cli-bonds", min_bond=BOND)
    genesis_file = tmp_path / "genesis.toml"
    genesis_file.write_text(tomli_w.dumps(world.genesis.to_mapping()))

    def run(who: int, *args: str) -> Result:
        command = ["chain", args[0], "--genesis", str(genesis_file), "--rpc", anvil.url, *args[1:]]
        result = CliRunner().invoke(app(), command, env={KEY_ENV: world.keys[who].hex()}, terminal_width=200)
        assert "Traceback" not in result.output
        return result

    refused = run(0, "deposit", "--token", "USDC", "--amount", "10")
    assert refused.exit_code == 1
    assert "BondsMissing" in refused.output
    for i in range(4):
        assert run(i, "bond").output.strip() == "bonded 1"  # the channel's minimum, by default
    assert run(0, "bond").output.strip() == "bonded 1, the minimum already"
    assert "bonded 4/4 (min 1)" in run(0, "status").output

    world.deposit(0, 40 * E9)
    replica = world.replica()
    world.withdraw(replica, 0, 15 * E9)
    certificate = world.certify(replica, 1)
    (tmp_path / "v1.cbor").write_bytes(certificate.encode())
    world.client(1).propose(certificate)
    world.chain.increase_time(WINDOW + 1)
    world.client(1).finalize(world.channel)
    late = world.deposit(2, 3 * E9)  # no checkpoint credits it
    assert "finalised v1" in run(0, "status").output

    claimed = run(0, "claim-withdrawals", "--certificate", str(tmp_path / "v1.cbor"))
    assert claimed.exit_code == 0, claimed.output
    assert claimed.output.strip() == "withdrawn 15 USDC in all"
    assert world.token.balance_of(world.accounts[0].address) == 10**30 - 40_000_000 + 15_000_000
    assert run(0, "claim-withdrawals", "--certificate", str(tmp_path / "v1.cbor")).output.strip() == (
        "nothing to claim at v1"
    )

    ctx = world.genesis.context()
    body = {"to": world.address(0), "token": "USDC", "amount": 1}
    first = sign_op(ctx, world.keys[3], 9, [], "transfer", body)
    second = sign_op(ctx, world.keys[3], 9, [], "transfer", {**body, "amount": 2})
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps([{"kind": "double_vote"}, {"kind": "equivocation",
                                                             **Equivocation(first, second).describe()}]))
    slashed = run(0, "slash", "--evidence", str(evidence))
    assert slashed.exit_code == 0, slashed.output
    assert f"slashed {world.accounts[3].address} at seq 9: 0.5 to you, 0.5 to the insurance" in slashed.output
    assert run(0, "slash", "--evidence", str(evidence)).output.strip().endswith("EvidenceUsed")
    assert world.adjudicator.bond_of(world.channel, world.accounts[3].address).bonded == 0

    unbonded = run(1, "unbond")
    assert unbonded.exit_code == 0
    assert unbonded.output.startswith("unbonding 1,")
    assert "BondsMissing" in run(1, "deposit", "--token", "USDC", "--amount", "1").output
    early = run(1, "withdraw-bond")
    assert early.exit_code == 1
    assert "UnbondNotReady" in early.output
    assert "concluded" in run(2, "refund").output  # refunds wait for the conclusion

    world.client(0).request_close(world.channel)
    world.chain.increase_time(WINDOW + 1)
    world.client(0).finalize(world.channel)
    assert run(2, "refund").output.strip() == f"refunded deposit {late.nonce}"
    assert run(2, "refund").output.strip() == "no deposit of yours to refund"
    before = world.chain.w3.eth.get_balance(world.accounts[1].address)
    assert run(1, "withdraw-bond").output.strip() == "withdrew 1"
    assert world.chain.w3.eth.get_balance(world.accounts[1].address) > before + BOND * 99 // 100
    bad = run(1, "bond", "--amount", "0.1234567890123456789")
    assert bad.exit_code == 1  # the CLI's one error style: error: … and exit code 1
    assert "whole wei" in bad.output
