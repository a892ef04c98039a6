"""Settlement wired into the nodes: real node processes, one embedded chain served over JSON-RPC
(`parley chain serve`), the adjudicator and a 6-decimal test token deployed on it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from channel.client import Client, Endpoint
from channel.cluster import Cluster, NodeProcess, create_cluster, start_all, stop_all, wait_until
from channel.onchain import ChainConfig
from crdt.certificate import Certificate
from crdt.genesis import Token
from crdt.types import Symbol
from settlement.chain import RpcChain
from settlement.client import AdjudicatorClient, Sender, TestTokenClient, address_bytes, checksum
from settlement.server import ChainServerProcess

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


def build(tmp_path: Path, server: ChainServerProcess, settle_every: int) -> World:
    chain = RpcChain(server.url)
    deployer = Account.create()
    chain.fund(deployer.address, 10**21)
    sender = Sender(chain, deployer)
    adjudicator = AdjudicatorClient.deploy(sender)
    usdc = TestTokenClient.deploy(sender, "USD Coin (test)", "USDC", 6)
    token = Token(Symbol("USDC"), address_bytes(usdc.address), 6)
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


def test_the_watchtower_defeats_a_stale_proposal(tmp_path: Path, server: ChainServerProcess) -> None:
    world = build(tmp_path, server, settle_every=10_000)  # nodes do not settle by themselves
    try:
        endpoints = start_all(world.processes)
        genesis = world.cluster.genesis
        alice, bob = ("0x" + p.address.hex() for p in genesis.participants[:2])
        world.adjudicator.deposit(genesis.channel_id, world.token, 100 * E9, alice)
        wait_until(lambda: free_balance(endpoints[0], alice) == 100 * E9, what="deposit credited")
        with Client(endpoints[0]) as client:
            stale = Certificate.decode(bytes.fromhex(client.certificate()["certificate"][2:]))
            receipt = client.transfer(bob, "USDC", 60 * E9)  # after this the stale one pays alice too much
            wait_until(lambda: client.status(receipt["op_id"])["status"] == "final", what="transfer final")
            # final means decided; the certificate forms once a quorum of commits has arrived
            wait_until(lambda: client.stats()["certified"] > stale.version, what="a newer certificate")
            newest = client.stats()["certified"]
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
