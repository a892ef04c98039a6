"""The Byzantine behaviours of `simulations.byzantine`, given to a real `Node` over the memory
transport: the production node has no switch for them, and what they sign is what an honest
replica must catch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from channel.runtime.config import NodeConfig
from channel.runtime.keystore import Key
from channel.runtime.node import HONEST, Behaviour, Node, RequestRejected
from crdt.genesis import Genesis
from crdt.ops import address_of
from p2p.memory import MemoryNetwork
from p2p.peer import PeerConfig, open_peer
from simulations.byzantine import BEHAVIOURS, behaviour
from tests.channel.runtime.node_kit import KEYS, USDC, VirtualStore, make_genesis

PEERS = PeerConfig(sync_interval=0.2, connect_interval=0.05)


@asynccontextmanager
async def memory_node(
    genesis: Genesis, index: int, path: Path, network: MemoryNetwork, conduct: Behaviour = HONEST
) -> AsyncIterator[Node]:
    store = VirtualStore(path / f"node{index}" / "node.sqlite")
    try:
        key = Key(address_of(KEYS[index]), KEYS[index])
        node = Node.restore(genesis, key, store, fresh_channel=True)
        node.behaviour = conduct
        async with (
            network.open_transport(bytes([index + 1]) * 8, participant=key.address) as transport,
            open_peer(node.replica, transport, PEERS, persist=node.persist_ops, announce=node.announce)
            as peer,
        ):
            node.peer = peer
            yield node
    finally:
        store.close()


async def two_nodes(tmp_path: Path, conduct: Behaviour) -> tuple[list[int], int, int]:
    """Node 0 behaves as `conduct` and transfers to node 1; what node 1 then holds."""
    genesis = make_genesis()
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        bad = await stack.enter_async_context(memory_node(genesis, 0, tmp_path, network, conduct))
        honest = await stack.enter_async_context(memory_node(genesis, 1, tmp_path, network))
        network.connect(bytes([1]) * 8, bytes([2]) * 8)
        await bad.submit("transfer", {"to": honest.address, "token": USDC, "amount": 5})
        overdraft = {"to": honest.address, "token": USDC, "amount": 10**18}  # more than it holds
        rejected = 0
        try:
            await bad.submit("transfer", overdraft)
        except RequestRejected:
            rejected = 1
        await trio.sleep(5)  # virtual: gossip and sync have run many times over
        seqs = sorted(op.seq for op in honest.replica.graph.ops.values() if op.author == bad.address)
        return seqs, len(honest.replica.evidence()), rejected


def run(tmp_path: Path, conduct: Behaviour) -> tuple[list[int], int, int]:
    return trio.run(two_nodes, tmp_path, conduct, clock=trio.testing.MockClock(autojump_threshold=0))


def test_an_honest_node_signs_each_seq_once_and_refuses_an_overdraft(tmp_path: Path) -> None:
    assert run(tmp_path, HONEST) == ([1], 0, 1)


def test_an_equivocating_node_is_caught_by_an_honest_replica(tmp_path: Path) -> None:
    seqs, evidence, rejected = run(tmp_path, behaviour(["equivocate"]))
    assert seqs == [1, 1]  # the twin arrived too, and both are held as the proof
    assert evidence == 1
    assert rejected == 1


def test_a_node_that_signs_what_replay_rejects_gossips_it(tmp_path: Path) -> None:
    seqs, evidence, rejected = run(tmp_path, behaviour(["invalid"]))
    assert (seqs, evidence, rejected) == ([1, 2], 0, 0)


def test_unknown_behaviours_are_refused_and_the_node_config_has_no_switch(tmp_path: Path) -> None:
    assert set(BEHAVIOURS) == {"equivocate", "invalid"}
    with pytest.raises(ValueError, match="unknown behaviours"):
        behaviour(["equivocate", "lie"])
    config = tmp_path / "node.toml"
    config.write_text('genesis = "g.toml"\nkeystore = "k.json"\n[byzantine]\nbehaviours = ["equivocate"]\n')
    assert "byzantine" not in NodeConfig.load(config).to_mapping(tmp_path)
