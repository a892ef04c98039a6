"""Checkpoint finality over real node processes on libp2p: certificates form and the contract
accepts them, a killed node does not stop finality, and a restarted node catches up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from channel.api.client import Client, Endpoint
from channel.cli.certificates import read_certificates
from crdt.certificate import Certificate
from settlement.chain import EmbeddedChain
from settlement.client import AdjudicatorClient
from simulations.cluster import USDC_UNIT, Cluster, NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.fixtures import deploy

pytestmark = pytest.mark.slow

E9 = 10**9
INITIAL = 1_000 * E9


def statuses(endpoint: Endpoint, op_ids: list[str]) -> set[str]:
    with Client(endpoint) as client:
        return {client.status(op_id)["status"] for op_id in op_ids}


def transfers(endpoint: Endpoint, to: list[str], count: int) -> list[str]:
    with Client(endpoint) as client:
        return [client.transfer(to[i % len(to)], "USDC", (1 + i) * USDC_UNIT)["op_id"] for i in range(count)]


@pytest.fixture
def chain_and_cluster(tmp_path: Path) -> tuple[EmbeddedChain, AdjudicatorClient, Cluster]:
    chain = EmbeddedChain()
    deployment = deploy(chain)
    adjudicator, usdc, token, deployer = deployment.adjudicator, deployment.usdc, deployment.token, deployment.deployer
    cluster = create_cluster(
        tmp_path / "cluster", 4, tokens=[token], initial=INITIAL,
        chain_id=chain.chain_id, adjudicator=adjudicator.address_bytes, dispute_window=3600,
    )
    channel = adjudicator.open_genesis(cluster.genesis)
    # The genesis's initial balances are backed on-chain, so certified totals fit the deposits.
    usdc.mint(deployer.address, 4 * INITIAL // 1000)
    for participant in cluster.genesis.participants:
        adjudicator.deposit(channel, token, INITIAL, participant.address)
    return chain, adjudicator, cluster


@pytest.fixture
def processes(chain_and_cluster: tuple[EmbeddedChain, AdjudicatorClient, Cluster]) -> Iterator[list[NodeProcess]]:
    cluster = chain_and_cluster[2]
    nodes = [NodeProcess(cluster.config(i)) for i in range(4)]
    yield nodes
    stop_all(nodes)


def test_operations_become_final_and_the_contract_accepts_the_certificate(
    chain_and_cluster: tuple[EmbeddedChain, AdjudicatorClient, Cluster], processes: list[NodeProcess]
) -> None:
    _, adjudicator, cluster = chain_and_cluster
    endpoints = start_all(processes)
    to = ["0x" + p.address.hex() for p in cluster.genesis.participants]
    ops = transfers(endpoints[0], to[1:], 10) + transfers(endpoints[2], [to[0]], 5)
    for endpoint in endpoints:
        wait_until(lambda endpoint=endpoint: statuses(endpoint, ops) == {"final"}, what="final statuses")
    with Client(endpoints[1]) as client:
        answer = client.certificate()
        checkpoints = client.checkpoints()
    certificate = Certificate.decode(bytes.fromhex(answer["certificate"][2:]))
    certificate.verify(cluster.genesis)
    assert len(answer["signers"]) >= cluster.genesis.threshold
    assert checkpoints[-1]["version"] >= certificate.version
    for endpoint in endpoints:  # every node certified the same checkpoints
        with Client(endpoint) as client:
            assert client.certificate(certificate.version)["payout_root"] == answer["payout_root"]
            assert client.evidence() == []
    for process in processes:  # and wrote them to its data directory for the exit (each with the
        written = read_certificates(process.data_dir)[certificate.version]  # signatures it got first)
        assert written.checkpoint == certificate.checkpoint
        written.verify(cluster.genesis)
    adjudicator.propose(certificate)
    settlement = adjudicator.settlement(cluster.genesis.channel_id)
    assert settlement.version == certificate.version
    assert settlement.payout_root == certificate.checkpoint.payout_root
    assert adjudicator.channel(cluster.genesis.channel_id).status == "pending"


def test_finality_survives_a_killed_node_and_the_node_catches_up(
    chain_and_cluster: tuple[EmbeddedChain, AdjudicatorClient, Cluster], processes: list[NodeProcess]
) -> None:
    cluster = chain_and_cluster[2]
    endpoints = start_all(processes)
    to = ["0x" + p.address.hex() for p in cluster.genesis.participants]
    first = transfers(endpoints[0], [to[1]], 5)
    wait_until(lambda: statuses(endpoints[3], first) == {"final"}, what="first batch final")
    processes[3].kill()
    second = transfers(endpoints[1], [to[2]], 5)  # 3 of 4 left: the threshold, so still final
    for endpoint in endpoints[:3]:
        wait_until(lambda endpoint=endpoint: statuses(endpoint, second) == {"final"}, what="final without node 3")
    with Client(endpoints[0]) as client:
        versions = [c["version"] for c in client.checkpoints()]
    restarted = processes[3].start()
    wait_until(lambda: statuses(restarted, first + second) == {"final"}, what="restarted node final")
    with Client(restarted) as client:
        assert [c["version"] for c in client.checkpoints()][: len(versions)] == versions
        # certificates of the versions decided while it was down reach it too
        wait_until(lambda: all(c["certified"] for c in client.checkpoints()), what="restarted node's certificates")
        with Client(endpoints[0]) as other:
            assert client.certificate(versions[-1])["payout_root"] == other.certificate(versions[-1])["payout_root"]
    with Client(endpoints[0]) as a, Client(restarted) as b:
        wait_until(lambda: a.stats()["state_hash"] == b.stats()["state_hash"], what="same state")
