"""Settlement wired into the nodes: real node processes, one embedded chain served over JSON-RPC
(`parley chain serve`), the adjudicator and a 6-decimal test token deployed on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from channel.api.client import Client, Endpoint
from channel.runtime.chain_worker import ChainConfig
from crdt.certificate import Certificate
from crdt.genesis import Token
from settlement.chain import AnvilProcess, RpcChain, anvil_binary, start_anvil
from settlement.client import AdjudicatorClient, TestTokenClient, checksum
from settlement.server import ChainServerProcess
from simulations.cluster import Cluster, NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.fixtures import deploy
from tests.channel.runtime.hostile_kit import participant_key, refused_start, stats

pytestmark = pytest.mark.slow

E9 = 10**9


@dataclass
class World:
    chain: RpcChain
    adjudicator: AdjudicatorClient
    usdc: TestTokenClient
    token: Token
    cluster: Cluster
    processes: list[NodeProcess]


def build(tmp_path: Path, server: ChainServerProcess | AnvilProcess, settle_every: int) -> World:
    chain = RpcChain(server.url)
    deployment = deploy(chain)
    adjudicator, usdc, token, deployer = deployment.adjudicator, deployment.usdc, deployment.token, deployment.deployer
    cluster = create_cluster(
        tmp_path / "cluster", 4, tokens=[token], initial=0, finality_interval=0.5,
        node_chain=ChainConfig(rpc=server.url, confirmations=1, settle_every=settle_every, poll_interval=0.3,
                               fallback_delay=2.0),
        chain_id=chain.chain_id, adjudicator=adjudicator.address_bytes, dispute_window=3600,
    )
    adjudicator.open_genesis(cluster.genesis)
    for participant in cluster.genesis.participants:  # gas for proposals and challenges
        chain.fund(checksum(participant.address), 10**20)
    usdc.mint(deployer.address, 10**15)
    return World(chain, adjudicator, usdc, token, cluster, [NodeProcess(cluster.config(i)) for i in range(4)])


@pytest.fixture
def server() -> Iterator[ChainServerProcess]:
    process = ChainServerProcess()
    yield process
    process.stop()


@pytest.fixture(params=["embedded", "anvil"])
def any_chain(request: pytest.FixtureRequest) -> Iterator[ChainServerProcess | AnvilProcess]:
    """The embedded chain server, or anvil mining a block a second (what CI runs the reorg on)."""
    if request.param == "embedded":
        process: ChainServerProcess | AnvilProcess = ChainServerProcess()
    else:
        if anvil_binary() is None:
            message = "anvil not found: run `npm install` in contracts/ (needs npm)"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
        process = start_anvil(extra=["--block-time", "1"])
    yield process
    process.stop()


def free_balance(endpoint: Endpoint, account: str) -> int:
    with Client(endpoint) as client:
        return int(client.balances(account)[account]["USDC"]["free"])


def test_deposits_are_credited_by_checkpoints_and_checkpoints_settle_on_chain(
    tmp_path: Path, server: ChainServerProcess
) -> None:
    world = build(tmp_path, server, settle_every=1)
    try:
        endpoints = start_all(world.processes)
        genesis = world.cluster.genesis
        alice, bob = ("0x" + p.address.hex() for p in genesis.participants[:2])
        world.adjudicator.deposit(genesis.channel_id, world.token, 250 * E9, alice)
        for endpoint in endpoints:  # every node credits it, through a certified checkpoint
            wait_until(lambda endpoint=endpoint: free_balance(endpoint, alice) == 250 * E9, what="deposit credited")
        with Client(endpoints[0]) as client:
            receipt = client.transfer(bob, "USDC", 40 * E9)
            wait_until(lambda: client.status(receipt["op_id"])["status"] == "final", what="transfer final")
            certified = client.stats()["version"]  # decided; its certificate forms a moment later
            wait_until(lambda: client.stats()["certified"] >= certified, what="certificate")
        channel = genesis.channel_id
        wait_until(lambda: world.adjudicator.settlement(channel).version >= certified, what="proposal on-chain")
        settlement = world.adjudicator.settlement(channel)
        assert world.adjudicator.channel(channel).status == "pending"
        assert settlement.totals == (250 * 10**6,)  # in token decimals: what was deposited
        assert settlement.deposit_nonce == 1
        with Client(endpoints[2]) as client:  # its watcher sees the proposal once it is confirmed
            wait_until(lambda: client.stats()["chain"]["status"] == "pending", what="node 2 sees the proposal")
            assert client.stats()["chain"]["deposits_seen"] == 1
        proposals = 0
        for endpoint in endpoints:
            with Client(endpoint) as client:
                proposals += client.stats()["chain"]["proposals_sent"]
        assert proposals == 1  # one designated submitter proposed; later versions challenged
    finally:
        stop_all(world.processes)


def stale_and_newer(world: World, paid: int) -> tuple[list[Endpoint], Certificate, int]:
    """Start the nodes; alice deposits 100 USDC and pays bob `paid`. Returns the endpoints, the
    certificate from before the payment (stale) and the newest version certified after it."""
    endpoints = start_all(world.processes)
    genesis = world.cluster.genesis
    alice, bob = ("0x" + p.address.hex() for p in genesis.participants[:2])
    world.adjudicator.deposit(genesis.channel_id, world.token, 100 * E9, alice)
    wait_until(lambda: free_balance(endpoints[0], alice) == 100 * E9, what="deposit credited")
    with Client(endpoints[0]) as client:
        stale = Certificate.decode(bytes.fromhex(client.certificate()["certificate"][2:]))
        receipt = client.transfer(bob, "USDC", paid)
        wait_until(lambda: client.status(receipt["op_id"])["status"] == "final", what="transfer final")
        # final means decided; the certificate forms once a quorum of commits has arrived
        wait_until(lambda: client.stats()["certified"] > stale.version, what="a newer certificate")
        return endpoints, stale, int(client.stats()["certified"])


def test_the_watchtower_defeats_a_stale_proposal(tmp_path: Path, server: ChainServerProcess) -> None:
    world = build(tmp_path, server, settle_every=10_000)  # nodes do not settle by themselves
    try:
        endpoints, stale, newest = stale_and_newer(world, 60 * E9)  # the stale one pays alice too much
        genesis = world.cluster.genesis
        world.adjudicator.propose(stale)  # someone registers the old checkpoint
        channel = genesis.channel_id
        wait_until(lambda: world.adjudicator.settlement(channel).version >= newest, what="watchtower challenge")
        challenges = 0
        for endpoint in endpoints:
            with Client(endpoint) as client:
                challenges += client.stats()["chain"]["challenges_sent"]
        assert challenges >= 1
        assert world.adjudicator.settlement(channel).payout_root != stale.checkpoint.payout_root
    finally:
        stop_all(world.processes)


def drain(chain: RpcChain, key: bytes, sink: str) -> None:
    """Send all of an account's native currency away but a few wei (it can pay for nothing)."""
    account = Account.from_key(key)
    balance = chain.w3.eth.get_balance(account.address)
    gas_price = chain.w3.eth.gas_price
    tx = {"to": checksum(sink), "value": balance - 21_000 * gas_price * 2, "gas": 21_000, "gasPrice": gas_price,
          "nonce": chain.w3.eth.get_transaction_count(account.address), "chainId": chain.chain_id}
    chain.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)


@pytest.mark.hostile
def test_the_watchtower_retries_a_failed_challenge_even_after_a_crash(
    tmp_path: Path, server: ChainServerProcess
) -> None:
    """Audit F1: the watchtower ran only when the watcher returned a *new* settlement event, and
    the watcher had committed the event before the challenge was sent. A challenge that failed
    once (no gas, an RPC error, a crash in between) never happened, and the stale checkpoint
    finalised while the nodes held a newer certificate (the participant lost 40 USDC)."""
    world = build(tmp_path, server, settle_every=10_000)  # nodes do not settle by themselves
    try:
        endpoints, stale, _ = stale_and_newer(world, 40 * E9)
        genesis = world.cluster.genesis
        sink = Account.create().address
        keys = [participant_key(world.cluster, i).private_key for i in range(4)]
        for key in keys:  # nobody can pay for a challenge now
            drain(world.chain, key, sink)
        channel = genesis.channel_id
        world.adjudicator.propose(stale)
        for endpoint in endpoints:
            wait_until(lambda endpoint=endpoint: "cannot pay" in stats(endpoint)["chain"]["alert"], what="a gas alert")
        assert world.adjudicator.settlement(channel).version == stale.version
        world.processes[0].kill()  # its watcher committed the proposal; the challenge never went out
        world.chain.fund(Account.from_key(keys[0]).address, 10**20)
        back = world.processes[0].start()  # it challenges from the chain's state at start-up
        wait_until(lambda: world.adjudicator.settlement(channel).version > stale.version, what="the challenge")
        assert world.chain.now() < world.adjudicator.settlement(channel).finalizes_at
        assert stats(back)["chain"]["challenges_sent"] == 1
        for i in (1, 2):  # and a node whose first attempts failed succeeds once it can pay
            world.chain.fund(Account.from_key(keys[i]).address, 10**20)
        wait_until(lambda: all(stats(e)["chain"]["alert"] == "" for e in (back, *endpoints[1:3])), what="alerts clear")
    finally:
        stop_all(world.processes)


def test_a_node_whose_account_cannot_pay_for_a_dispute_refuses_to_start(
    tmp_path: Path, server: ChainServerProcess
) -> None:
    world = build(tmp_path, server, settle_every=1)
    try:
        drain(world.chain, participant_key(world.cluster, 0).private_key, Account.create().address)
        code, output = refused_start(world.processes[0])
        assert code == 1
        assert "cannot pay for a dispute" in output
        assert "Traceback" not in output
    finally:
        stop_all(world.processes)


@pytest.mark.hostile
def test_a_checkpoint_crediting_a_reorged_deposit_never_reaches_the_chain(
    tmp_path: Path, any_chain: ChainServerProcess | AnvilProcess
) -> None:
    """Audit F2, the deep case: a reorg deeper than the confirmations gives deposit nonce 1 to
    another deposit after the nodes credited the first. The nodes cannot undo a certified
    checkpoint, but none of them may send it: it would let the first depositor claim funds it
    never deposited, and strand the second's."""
    world = build(tmp_path, any_chain, settle_every=2)  # version 1 is not proposed; version 2 would be
    try:
        genesis = world.cluster.genesis
        alice, bob = ("0x" + p.address.hex() for p in genesis.participants[:2])
        world.usdc.mint(world.adjudicator.sender.address, 10**12)
        before = world.chain.snapshot()
        endpoints = start_all(world.processes)
        world.adjudicator.deposit(genesis.channel_id, world.token, 50 * E9, alice)
        for endpoint in endpoints:
            wait_until(lambda endpoint=endpoint: free_balance(endpoint, alice) == 50 * E9, what="deposit credited")
        world.chain.revert(before)  # the block with alice's deposit is gone
        world.adjudicator.deposit(genesis.channel_id, world.token, 80 * E9, bob)  # nonce 1 again
        world.chain.mine(3)
        with Client(endpoints[0]) as client:  # a transfer, so that version 2 comes and is due
            receipt = client.transfer(bob, "USDC", 10 * E9)
            wait_until(lambda: client.status(receipt["op_id"])["status"] == "final", what="transfer final")
        for endpoint in endpoints:
            wait_until(lambda endpoint=endpoint: "no longer holds" in stats(endpoint)["chain"]["alert"], what="alert")
        assert world.adjudicator.channel(genesis.channel_id).status == "open"  # nothing was proposed
        assert sum(stats(e)["chain"]["proposals_sent"] for e in endpoints) == 0
    finally:
        stop_all(world.processes)
