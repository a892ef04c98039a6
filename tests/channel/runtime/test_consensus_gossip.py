"""The consensus topic's validator (`ConsensusDriver._validate`) over the in-memory transport:
what the machine would refuse from any peer is neither delivered nor forwarded, and the peer
that forwards it is scored down and banned while the honest nodes go on deciding.

The attacker is participant 3 (its node is not running; a rogue transport holds its key and
its place) and outsiders: it can sign precommits and proposals as 3, but no one else's."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from channel.core.consensus import (
    Decision,
    Message,
    decode_message,
    encode_message,
    proposer,
    sign_precommit,
    sign_prevote,
    sign_proposal,
)
from channel.runtime.driver import ConsensusDriver, consensus_topic
from channel.runtime.node import Node, peer_name
from crdt.genesis import Genesis
from crdt.hashing import keccak256
from crdt.ops import address_of
from crdt.types import OpId
from p2p.memory import MemoryNetwork, MemoryTransport
from tests.channel.runtime.node_kit import (
    KEYS,
    advance,
    make_genesis,
    memory_nodes,
    poll,
    run_virtual,
    settled,
)

pytestmark = pytest.mark.hostile

ROGUE = b"\x66" * 8  # speaks for participant 3
OBSERVER = b"\x77" * 8  # takes whatever it is sent: shows what a node forwards
OUTSIDER = keccak256(b"not a participant")


def node_id(index: int) -> bytes:
    return bytes([index + 1]) * 8  # as test_catchup.memory_node


def driver_of(node: Node) -> ConsensusDriver:
    assert node.driver is not None
    return node.driver


def first_decision(node: Node) -> Decision:
    decision = decode_message(node.store.decisions()[0][1])
    assert isinstance(decision, Decision)
    return decision


def forgeries(genesis: Genesis, real: Decision) -> dict[str, Decision]:
    """Decisions that no quorum decided, each refused by `Consensus.on_message` in any state."""
    quorum = genesis.threshold
    value = real.value
    other = replace(value, heads=(OpId(keccak256(b"a cut nobody decided")),))
    rogue_vote = sign_precommit(genesis, KEYS[3], real.height, real.round, other.value_id).signature
    return {
        "junk signatures": replace(real, signatures=tuple(bytes([i]) * 64 + b"\x1b" for i in range(1, quorum + 1))),
        "a quorum minus one": replace(real, signatures=real.signatures[: quorum - 1]),
        "one signature repeated": replace(real, signatures=(real.signatures[0],) * quorum),
        "the real signatures on another cut": replace(real, value=other),
        "the rogue's own precommit, repeated": Decision(real.height, real.round, other, (rogue_vote,) * quorum),
    }


def junk(genesis: Genesis, real: Decision, i: int) -> Message:
    """The i-th invalid consensus message of a rogue that keeps sending them."""
    height = real.height + 1
    kind = i % 3
    if kind == 0:  # a vote by someone who is not a participant
        return sign_prevote(genesis, OUTSIDER, height, i, None)
    if kind == 1:  # a proposal signed by participant 3 for a round it does not propose
        round_ = next(r for r in range(i, i + 8) if proposer(genesis, height, r) != address_of(KEYS[3]))
        return sign_proposal(genesis, KEYS[3], real.height, round_, real.value)
    return replace(real, signatures=(bytes([i % 250 + 1]) * 64 + b"\x1c",) * genesis.threshold)


async def rogue_and_observer(stack: AsyncExitStack, network: MemoryNetwork) -> tuple[MemoryTransport, Any]:
    rogue = await stack.enter_async_context(network.open_transport(ROGUE, participant=address_of(KEYS[3])))
    observer = await stack.enter_async_context(network.open_transport(OBSERVER))
    return rogue, observer


def test_a_forged_or_under_signed_decision_is_refused_and_a_real_one_passes(tmp_path: Path) -> None:
    """Failed before the fix: the validator let every well-encoded `Decision` through,
    unchecked, so a forged one (up to 4 MiB) reached every node of the mesh."""

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            network.connect_all()
            await advance(nodes[0], 1, nodes[1].address)
            await settled(nodes)
            driver = driver_of(nodes[0])
            real = first_decision(nodes[0])
            for n, (what, forged) in enumerate(forgeries(genesis, real).items()):
                assert not driver._validate(bytes([0x40 + n]) * 8, encode_message(forged)), what
            assert driver.gossip_counts["rejected"] == 5
            shuffled = replace(real, signatures=real.signatures[::-1])  # other bytes, as valid
            assert driver._validate(b"\x50" * 8, encode_message(shuffled))
            assert driver._validate(b"\x51" * 8, encode_message(real))

    run_virtual(main)


def test_a_forged_decision_does_not_reach_a_third_node(tmp_path: Path) -> None:
    """The rogue and an observer are linked to node 0 only: what node 0 forwards, the observer
    gets. Failed before the fix: the forged decision reached the observer."""

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        topic = consensus_topic(genesis.channel_id)
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            network.connect_all()
            await advance(nodes[0], 1, nodes[1].address)
            await settled(nodes)
            real = first_decision(nodes[0])
            rogue, observer = await rogue_and_observer(stack, network)
            received = await observer.subscribe(topic, lambda forwarder, data: True)
            for other in (ROGUE, OBSERVER):
                network.connect(node_id(0), other)
            forged = forgeries(genesis, real)["junk signatures"]
            await rogue.publish(topic, encode_message(forged))  # the memory transport gossips at once
            with pytest.raises(trio.WouldBlock):
                received.receive_nowait()
            assert driver_of(nodes[0]).gossip_counts["rejected"] == 1
            valid = encode_message(replace(real, signatures=real.signatures[::-1]))
            await rogue.publish(topic, valid)  # the same path forwards a real one
            assert received.receive_nowait() == (ROGUE, valid)

    run_virtual(main)


def test_a_peer_that_keeps_sending_invalid_consensus_messages_is_banned_while_consensus_goes_on(
    tmp_path: Path,
) -> None:
    """Failed before the fix: nothing on the consensus topic was scored, so the rogue was
    never banned (its decisions were even forwarded)."""

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        topic = consensus_topic(genesis.channel_id)
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            network.connect_all()
            await advance(nodes[0], 1, nodes[1].address)
            await settled(nodes)
            real = first_decision(nodes[0])
            rogue, _ = await rogue_and_observer(stack, network)
            for i in range(3):
                network.connect(node_id(i), ROGUE)

            def everyone_banned() -> bool:
                return all(n.peer is not None and n.peer.is_banned(ROGUE) for n in nodes)

            async def attack() -> None:
                for i in range(1000):
                    if everyone_banned():
                        return
                    await rogue.publish(topic, encode_message(junk(genesis, real, i)))
                    await trio.sleep(0.01)
                raise AssertionError("the rogue was never banned")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(attack)
                await advance(nodes[0], 2, nodes[2].address)  # honest consensus goes on meanwhile
            with trio.fail_after(30):
                await poll(everyone_banned)
            await settled(nodes)
            assert nodes[0].replica.version >= 3
            for node in nodes:
                assert node.peer is not None
                assert node.peer.transport.is_banned(ROGUE)
                stats = node.stats()["consensus_gossip"]
                assert stats["rejected"] >= 2
                assert stats["received"] > 0
                assert peer_name(ROGUE) in node.peers()["banned"]
            before = [driver_of(n).gossip_counts["rejected"] for n in nodes]
            await rogue.publish(topic, encode_message(junk(genesis, real, 0)))  # dropped unread now
            assert [driver_of(n).gossip_counts["rejected"] for n in nodes] == before

    run_virtual(main)


def test_a_message_checked_once_is_not_checked_again(tmp_path: Path) -> None:
    """Repeats (the same bytes from another forwarder, or after GossipSub's seen cache let
    them through again) cost a hash and a decode, not a quorum of signature recoveries."""

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            network.connect_all()
            await advance(nodes[0], 1, nodes[1].address)
            await settled(nodes)
            driver = driver_of(nodes[0])
            calls: list[Decision] = []
            check: Callable[[Decision], None] = driver.consensus.check_decision

            def counting(decision: Decision) -> None:
                calls.append(decision)
                check(decision)

            driver.consensus.check_decision = counting  # type: ignore[method-assign]
            data = encode_message(first_decision(nodes[0]))
            assert all(driver._validate(bytes([0x60 + i]) * 8, data) for i in range(5))
            assert len(calls) == 1

    run_virtual(main)
