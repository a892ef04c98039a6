"""Checkpoint catch-up (`channel.runtime.catchup`): the codec refuses bad bytes with typed errors, and
nodes over the in-memory transport fetch the proofs and certificates they missed: after a
downtime longer than the versions peers keep in memory, and after a crash between a decision
and its commits. The nodes run under trio's virtual clock (`tests.channel.runtime.node_kit`)."""

from __future__ import annotations

import sqlite3
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from channel.api.server import _NodeCollector
from channel.core.consensus import Limits, Step, decode_signing_record, encode_message
from channel.core.consensus.signing import sign_prevote
from channel.runtime.catchup import (
    MAX_RECORDS,
    Request,
    decode_reply,
    decode_request,
    encode_end,
    encode_record,
    encode_request,
    encode_vote,
)
from channel.runtime.store import Store
from crdt import cbor
from p2p.errors import MalformedMessage, OversizedMessage
from p2p.memory import MemoryNetwork
from tests.channel.runtime.node_kit import (
    KEYS,
    USDC,
    advance,
    link,
    make_genesis,
    memory_node,
    memory_nodes,
    poll,
    run_virtual,
    settled,
)

CHANNEL = b"\x07" * 32


# -- codec -------------------------------------------------------------------------------------------


def test_a_request_round_trips_and_bad_requests_are_refused() -> None:
    request = Request(CHANNEL, 5, MAX_RECORDS)
    assert decode_request(encode_request(request)) == request
    bad = [
        b"\xff\xfe",  # not CBOR
        cbor.encode([0, CHANNEL, 0, 1]),  # versions start at 1
        cbor.encode([0, CHANNEL, 1, MAX_RECORDS + 1]),  # too many
        cbor.encode([0, CHANNEL, 1, 0]),
        cbor.encode([0, b"\x07" * 31, 1, 1]),
        cbor.encode([1, CHANNEL, 1, 1]),  # a record where a request belongs
        cbor.encode([0, CHANNEL, 1]),
    ]
    for data in bad:
        with pytest.raises(MalformedMessage):
            decode_request(data)
    with pytest.raises(OversizedMessage):
        decode_request(cbor.encode([0, CHANNEL, 1, 1, b"x" * 100]))


def test_replies_are_checked_for_shape_and_content() -> None:
    assert decode_reply(encode_end(42)) == 42
    bad = [
        cbor.encode([2, -1]),
        cbor.encode([2]),
        cbor.encode([1, 3, b"not a decision", b""]),
        cbor.encode([1, 3, cbor.encode([4, 3]), b""]),  # a truncated decision
        cbor.encode([1, 3, b"\x00" * 10, b"garbage certificate"]),
        cbor.encode([1, "3", b"", b""]),
        bytes([0x84, 1, 3, 0x40, 0xF6]),  # null: canonical CBOR here has none
        cbor.encode([7, 1]),
        encode_record(3, b"", 5),  # type: ignore[arg-type]
    ]
    for data in bad:
        with pytest.raises(MalformedMessage):
            decode_reply(data)


def test_vote_frames_carry_a_peers_own_proposals_and_votes_and_nothing_else() -> None:
    vote = sign_prevote(make_genesis(), KEYS[0], 3, 1, b"\x11" * 32)
    assert decode_reply(encode_vote(encode_message(vote))) == vote
    for data in (cbor.encode([3]), cbor.encode([3, "text"]), cbor.encode([3, b"not a message"]),
                 cbor.encode([3, encode_message(vote), b""])):
        with pytest.raises(MalformedMessage):
            decode_reply(data)


# -- nodes over the memory transport --------------------------------------------------------------------


def test_a_node_down_for_longer_than_the_proof_window_catches_up(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 4)
            network.connect_all()
            await advance(nodes[0], 1, nodes[1].address)
            await settled(nodes)  # node 3 too, before it is cut off (else its decision may still be in flight)
            link(network, 3, range(4), up=False)
            behind = nodes[3].replica.version
            await advance(nodes[0], Limits().commit_window + 4, nodes[2].address)  # three of four decide
            assert nodes[3].replica.version == behind
            link(network, 3, range(4), up=True)
            await settled(nodes)
            finality = nodes[3].driver
            assert finality is not None
            assert finality.catchup_counts["versions"] >= Limits().commit_window
            served = sum(n.driver.catchup_server.served for n in nodes[:3])  # type: ignore[union-attr]
            assert served >= 1
            metrics = {m.name: m.samples[0].value for m in _NodeCollector(nodes[3]).collect()}
            assert metrics["parley_catchup_versions"] == finality.catchup_counts["versions"]
            assert metrics["parley_certified"] == nodes[3].replica.version

    run_virtual(main)


def test_a_restarted_node_gets_the_certificate_it_decided_but_never_assembled(tmp_path: Path) -> None:
    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            async with memory_node(genesis, 3, tmp_path, network) as last:
                network.connect_all()
                await advance(nodes[0], 2, last.address)
                await settled([*nodes, last])
                version = last.replica.version
            # as if node 3 had crashed after deciding `version` and before the commits arrived
            with sqlite3.connect(tmp_path / "node3" / "node.sqlite") as db:
                db.execute("DELETE FROM certificates WHERE version = ?", (version,))
            async with memory_node(genesis, 3, tmp_path, network) as restarted:
                assert restarted.driver is not None
                assert version in restarted.driver.uncertified
                network.connect_all()
                await settled([*nodes, restarted])
                assert restarted.driver.catchup_counts["certificates"] >= 1
                assert version in dict(restarted.store.certificates())

    run_virtual(main)


def test_a_node_restarted_mid_height_never_signs_two_votes_for_one_slot(tmp_path: Path) -> None:
    """Node 3, cut off, starts a height it cannot decide alone and votes in it; it is
    restarted twice in the middle of that height. Everything it ever signed is in its store,
    one message per (round, step): a restart re-sends the stored ones instead of signing new
    ones. Once it is back it agrees with the others, and the records are dropped."""

    def slots(store: Store) -> list[tuple[int, str]]:
        records = [decode_signing_record(data) for data in store.signed(1)]
        return [(r.message.round, type(r.message).__name__) for r in records]

    async def main() -> None:
        genesis = make_genesis()
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nodes = await memory_nodes(stack, genesis, tmp_path, network, 3)
            network.connect_all()
            for restart in range(3):
                async with memory_node(genesis, 3, tmp_path, network) as node:
                    if restart == 0:  # something to checkpoint, which only node 3 knows
                        await node.submit("transfer", {"to": nodes[0].address, "token": USDC, "amount": 1})
                    consensus = node.driver.consensus  # type: ignore[union-attr]
                    with trio.fail_after(30):  # the propose timeout passes, and it (re)sends its prevote
                        await poll(lambda: consensus.height == 1 and consensus.step >= Step.PREVOTE)  # noqa: B023
                    seen = slots(node.store)
                    assert "Prevote" in {kind for _, kind in seen}
                    assert len(seen) == len(set(seen)), seen
            async with memory_node(genesis, 3, tmp_path, network) as node:
                link(network, 3, range(4), up=True)
                await settled([*nodes, node])
                left = [decode_signing_record(data).height for data in node.store.signed(1)]
                assert all(height > node.replica.version for height in left)  # forgotten once decided

    run_virtual(main)
