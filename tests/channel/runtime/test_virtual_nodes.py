"""Whole nodes under trio's virtual clock (`tests.channel.runtime.node_kit`): four real `Node`s, each
with its SQLite store, its `ConsensusDriver` and its peer, over the in-memory transport. They
transfer, converge and certify checkpoints; a partitioned node catches up once reconnected; a
node restarted from its store resumes where it stopped. Every interval, timeout and sync round
runs on the virtual clock, and so does the nodes' wall clock (the checkpoint times)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from channel.core.consensus import CheckpointSignature, decode_message, sign_prevote
from channel.errors import StoreDamaged
from channel.runtime.driver import DriverConfig
from channel.runtime.keystore import Key
from channel.runtime.node import Node
from channel.runtime.service import NotReady
from channel.runtime.store import Store
from crdt.certificate import Certificate
from crdt.errors import InvalidInput
from crdt.ops import address_of
from crdt.types import OpId
from p2p.memory import MemoryNetwork
from tests.channel.runtime.node_kit import (
    EPOCH_MS,
    KEYS,
    USDC,
    advance,
    certified_everywhere,
    link,
    make_genesis,
    memory_node,
    memory_nodes,
    peer_id,
    poll,
    run_virtual,
    settled,
    virtual_wall_clock,
)

INITIAL = 10**15


def certificates(node: Node) -> dict[int, Certificate]:
    assert node.driver is not None
    return dict(node.driver.certificates)


async def agreed(nodes: list[Node], statuses: dict[OpId, str]) -> None:
    """Wait until every node has certified the same versions and each operation has its status."""
    with trio.fail_after(60):
        await poll(
            lambda: certified_everywhere(nodes)
            and all(n.replica.status(op_id) == status for n in nodes for op_id, status in statuses.items())
        )


def op_id(receipt: dict[str, object]) -> OpId:
    return OpId(bytes.fromhex(str(receipt["op_id"])[2:]))


def test_four_nodes_transfer_converge_and_certify_checkpoints(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 4)
            network.connect_all()
            submitted: list[OpId] = []
            for _ in range(3):
                for i, node in enumerate(nodes):
                    to = nodes[(i + 1) % 4].address
                    receipt = await node.submit("transfer", {"to": to, "token": USDC, "amount": i + 1})
                    submitted.append(op_id(receipt))
                await trio.sleep(0.3)  # virtual: a checkpoint interval or more between the rounds
            await agreed(nodes, dict.fromkeys(submitted, "final"))

            for node in nodes:
                assert len(node.replica.graph) == 12
                for i, other in enumerate(nodes):
                    paid, received = 3 * (i + 1), 3 * ((i - 1) % 4 + 1)
                    assert node.replica.ledger.balance(other.address, USDC) == INITIAL - paid + received
            reference = certificates(nodes[0])
            assert len(reference) >= 1
            for node in nodes[1:]:  # signatures may differ (any quorum), the checkpoints may not
                assert {v: c.checkpoint for v, c in certificates(node).items()} == {
                    v: c.checkpoint for v, c in reference.items()
                }
            times = [reference[v].checkpoint.time for v in sorted(reference)]
            for version in sorted(reference):
                reference[version].verify(genesis)
            assert times == sorted(set(times))  # strictly increasing
            # taken from the nodes' (virtual) wall clock, not from the machine's
            assert times[0] >= EPOCH_MS
            assert times[-1] <= virtual_wall_clock()

    run_virtual(main)


def test_checkpoints_follow_the_interval_in_virtual_time(tmp_path: Path) -> None:
    """With something new every half second for 20 virtual seconds and a 5 s interval, a
    checkpoint starts at most once per interval (so at most 5 versions: started at t >= 0, 5,
    10, 15) and soon after each interval has passed (so at least 3)."""
    config = DriverConfig(interval=5.0, catchup_period=0.1, certificate_grace=0.3)

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(memory_node(genesis, i, tmp_path, network, config)) for i in range(4)
            ]
            network.connect_all()
            start = trio.current_time()
            with trio.move_on_after(20):
                while True:
                    await nodes[0].submit("transfer", {"to": nodes[1].address, "token": USDC, "amount": 1})
                    await trio.sleep(0.5)
            versions = {node.replica.version for node in nodes}
            assert all(3 <= version <= 5 for version in versions), versions
            times = [c.checkpoint.time for _, c in sorted(certificates(nodes[0]).items())]
            assert times[0] >= EPOCH_MS + int(start * 1000)
            assert times[-1] <= virtual_wall_clock()

    run_virtual(main)


def test_a_checkpoint_starts_with_the_news_once_the_interval_has_passed(tmp_path: Path) -> None:
    """Checkpoints are pipelined: on a channel quiet for longer than the interval, the operation
    that brings news starts the next height at once (its proposal's time is the submit's, in
    virtual ms), not at the driver's next tick, which came up to a quarter second later."""
    config = DriverConfig(interval=2.0, catchup_period=0.1, certificate_grace=0.3)

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(memory_node(genesis, i, tmp_path, network, config)) for i in range(4)
            ]
            network.connect_all()
            for gap in (3.123, 2.457, 5.061):  # quiet for longer than the interval, at odd offsets
                await trio.sleep(gap)
                submitted_at = virtual_wall_clock()
                receipt = await nodes[0].submit("transfer", {"to": nodes[1].address, "token": USDC, "amount": 1})
                await agreed(nodes, {op_id(receipt): "final"})
                newest = max(certificates(nodes[0]).items())[1].checkpoint
                assert newest.time - submitted_at <= 10, (newest.time, submitted_at)

    run_virtual(main)


def test_idle_nodes_ask_their_peers_once_per_catchup_idle_of_virtual_time(tmp_path: Path) -> None:
    """With the default configuration and nothing to certify for 60 virtual seconds, each node
    asks once at start-up (no peer has told it its latest version yet) and then once every
    `catchup_idle` (10 s): six requests, give or take the one in flight at either end. Its
    uptime is counted in the same virtual seconds."""
    config = DriverConfig()

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(memory_node(genesis, i, tmp_path, network, config)) for i in range(4)
            ]
            network.connect_all()
            await trio.sleep(60)
            for node in nodes:
                assert abs(node.stats()["uptime_s"] - 60) < 0.5  # virtual seconds too
                assert node.driver is not None
                assert 5 <= node.driver.catchup_counts["requests"] <= 7, node.driver.catchup_counts
                assert node.driver.catchup_counts["failed"] == 0
                assert node.replica.version == 0

    run_virtual(main)


def test_a_certificate_that_does_not_form_is_fetched_once_the_grace_has_passed(tmp_path: Path) -> None:
    """Node 3 never receives a commit (the checkpoint signatures) of the others: it decides
    version 1 from their precommits but cannot assemble the certificate. It asks a peer for it
    once `certificate_grace` (2 virtual seconds) has passed since it decided, at the next tick
    after that, and adopts the peer's."""
    config = DriverConfig(interval=0.05, catchup_period=0.1, certificate_grace=2.0)
    certified_at: list[float] = []

    def no_commits_to_node_3(sender: bytes, receiver: bytes, data: bytes) -> bool:
        if receiver != peer_id(3):
            return False
        try:
            return isinstance(decode_message(data), CheckpointSignature)
        except InvalidInput:  # an operation batch
            return False

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        network.drop = no_commits_to_node_3
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(memory_node(genesis, i, tmp_path, network, config)) for i in range(4)
            ]
            late = nodes[3].driver
            assert late is not None
            late.on_certified.append(lambda certificate: certified_at.append(trio.current_time()))
            network.connect_all()
            await nodes[0].submit("transfer", {"to": nodes[1].address, "token": USDC, "amount": 1})
            with trio.fail_after(60):
                await poll(lambda: 1 in late.uncertified)
            _, decided_at = late.uncertified[1]
            await settled(nodes)
            assert late.catchup_counts["certificates"] == 1
            assert len(certified_at) == 1
            waited = certified_at[0] - decided_at
            assert config.certificate_grace <= waited <= config.certificate_grace + config.catchup_period + 0.1
            assert certificates(nodes[3])[1].checkpoint == certificates(nodes[0])[1].checkpoint

    run_virtual(main)


def test_a_partitioned_node_catches_up_after_it_is_reconnected(tmp_path: Path) -> None:
    """Node 3 is cut off for three checkpoints, and signs a transfer meanwhile. Reconnected, it
    fetches the checkpoints it missed; its transfer, whose parents are older than the cut two
    checkpoints back, is rejected as `stale` by every replica alike (DESIGN.md, "Freshness"),
    and its next transfer is certified everywhere."""

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 4)
            network.connect_all()
            await advance(nodes[0], 1, nodes[1].address)
            await settled(nodes)

            link(network, 3, range(4), up=False)
            behind = nodes[3].replica.version
            alone = op_id(await nodes[3].submit("transfer", {"to": nodes[0].address, "token": USDC, "amount": 7}))
            await advance(nodes[0], 3, nodes[2].address)  # three of four still decide
            await trio.sleep(5)  # virtual: long enough for the cut-off node to have tried everything
            assert nodes[3].replica.version == behind
            assert all(alone not in n.replica.graph.ops for n in nodes[:3])
            assert nodes[3].replica.status(alone) == "tentative"

            link(network, 3, range(4), up=True)
            await agreed(nodes, {alone: "rejected:stale"})
            assert nodes[3].replica.version >= behind + 3
            assert nodes[3].driver is not None
            assert nodes[3].driver.catchup_counts["versions"] >= 3
            after = op_id(await nodes[3].submit("transfer", {"to": nodes[0].address, "token": USDC, "amount": 8}))
            await agreed(nodes, {alone: "rejected:stale", after: "final"})
            for node in nodes:
                assert node.replica.ledger.balance(nodes[3].address, USDC) == INITIAL - 8

    run_virtual(main)


def test_a_node_restarted_from_its_store_resumes(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            async with memory_node(genesis, 3, tmp_path, network) as last:
                network.connect_all()
                await last.submit("transfer", {"to": nodes[0].address, "token": USDC, "amount": 3})
                await advance(nodes[0], 2, last.address)
                await settled([*nodes, last])
                stopped = (last.replica.version, last.replica.state_hash(), last.next_seq())
                stopped_certificates = certificates(last)
            await advance(nodes[0], 2, nodes[1].address)  # the others go on without it

            # what the store alone gives back, before any peer is reachable
            store = Store(tmp_path / "node3" / "node.sqlite")
            try:
                restored = Node.restore(genesis, Key(address_of(KEYS[3]), KEYS[3]), store)
                assert (restored.replica.version, restored.replica.state_hash(), restored.next_seq()) == stopped
                assert restored.signer.seq_known
                assert restored.signer.vote_from is not None
            finally:
                store.close()

            async with memory_node(genesis, 3, tmp_path, network) as again:
                held = certificates(again)
                assert {version: held.get(version) for version in stopped_certificates} == stopped_certificates
                await settled([*nodes, again])
                assert again.replica.version >= stopped[0] + 2
                receipt = await again.submit("transfer", {"to": nodes[2].address, "token": USDC, "amount": 4})
                assert receipt["seq"] == stopped[2]  # its seq goes on from the store's
                await agreed([*nodes, again], {op_id(receipt): "final"})

    run_virtual(main)


def test_a_node_restarted_from_its_snapshot_is_the_node_that_replays_its_whole_store(tmp_path: Path) -> None:
    """A node that writes a snapshot every 2 checkpoints and compacts stops; a start from its
    newest snapshot (and the operations not archived) and a start that replays the whole store
    give the same node: version, roots, next seq, every status and balance. A damaged snapshot
    is refused with `StoreDamaged`, not started from; and the node restarted from its snapshot
    goes on with the others."""

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            async with memory_node(genesis, 3, tmp_path, network, snapshot_every=2) as last:
                network.connect_all()
                for amount in range(1, 4):
                    await last.submit("transfer", {"to": nodes[0].address, "token": USDC, "amount": amount})
                await advance(nodes[0], 7, last.address)
                await settled([*nodes, last])
                assert last.replica.graph.pruned > 0  # compaction ran
                known = [OpId(op_id) for _, op_id, _ in last.store.load_ops()]  # archived ones too
            snapshots = sorted((tmp_path / "node3" / "snapshots").glob("v*.snap"))
            assert len(snapshots) == 2  # the newest two are kept

            def restored(snapshot_every: int) -> tuple[object, ...]:
                store = Store(tmp_path / "node3" / "node.sqlite")
                try:
                    node = Node.restore(genesis, Key(address_of(KEYS[3]), KEYS[3]), store,
                                        snapshot_every=snapshot_every)
                    replica = node.replica
                    return (replica.version, replica.state_hash(), replica.payout_root(), node.next_seq(),
                            replica.balances(), {op_id: replica.status(op_id) for op_id in known})
                finally:
                    store.close()

            from_snapshot, replayed = restored(2), restored(0)
            assert from_snapshot == replayed
            newest = snapshots[-1]
            good = newest.read_bytes()
            newest.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
            store = Store(tmp_path / "node3" / "node.sqlite")
            try:
                with pytest.raises(StoreDamaged, match="snapshot"):
                    Node.restore(genesis, Key(address_of(KEYS[3]), KEYS[3]), store, snapshot_every=2)
            finally:
                store.close()
            newest.write_bytes(good)

            async with memory_node(genesis, 3, tmp_path, network, snapshot_every=2) as again:
                await settled([*nodes, again])
                receipt = await again.submit("transfer", {"to": nodes[2].address, "token": USDC, "amount": 4})
                assert receipt["seq"] == from_snapshot[3]
                await agreed([*nodes, again], {op_id(receipt): "final"})

    run_virtual(main)


def test_a_node_that_knows_it_is_two_checkpoints_behind_refuses_to_sign(tmp_path: Path) -> None:
    """Signing on heads two versions old makes an operation replay rejects as stale after it was
    acknowledged (the fault harness saw it on healed and restarted nodes). So a node that knows
    the channel decided two versions more than it certified answers `NotReady`, nothing signed,
    until it has caught up. It knows it from f + 1 participants' checked votes, or from a
    decision's quorum: one Byzantine participant's votes of a far height do not stop it."""

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 4)
            network.connect_all()
            await advance(nodes[0], 2, nodes[1].address)
            await settled(nodes)
            node = nodes[3]
            assert node.driver is not None
            far = node.replica.version + 5
            node.driver._check(sign_prevote(genesis, KEYS[0], far, 0, None))  # one liar: f = 1 of 4
            assert node.behind() is None
            receipt = await node.submit("transfer", {"to": nodes[0].address, "token": USDC, "amount": 1})
            assert receipt["status"] == "tentative"
            node.driver._check(sign_prevote(genesis, KEYS[1], far, 0, None))  # f + 1: one is honest
            assert node.behind() is not None
            before = node.next_seq()
            with pytest.raises(NotReady, match="catching up"):
                await node.submit("transfer", {"to": nodes[0].address, "token": USDC, "amount": 1})
            assert node.next_seq() == before  # nothing signed

    run_virtual(main)
