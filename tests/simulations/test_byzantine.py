"""The Byzantine behaviours of `simulations.byzantine`, given to a real `Node` over the memory
transport: the production node has no switch for them, and what they sign is what an honest
replica must catch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from channel.errors import UserError
from channel.runtime.config import NodeConfig
from channel.runtime.keystore import Key
from channel.runtime.node import HONEST, Behaviour, Node, RequestRejected
from crdt import testing
from crdt.genesis import Genesis, Token
from crdt.markets.book import SELF_TRADE
from crdt.markets.config import E9, Market, MarketKind
from crdt.ops import address_of
from crdt.types import Address, OpId, Symbol
from p2p.memory import MemoryNetwork
from p2p.peer import PeerConfig, open_peer
from simulations.byzantine import BEHAVIOURS, read_journal
from simulations.byzantine import behaviour as make_behaviour
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
    seqs, evidence, rejected = run(tmp_path, make_behaviour(["equivocate"]))
    assert seqs == [1, 1]  # the twin arrived too, and both are held as the proof
    assert evidence == 1
    assert rejected == 1


def test_a_node_that_signs_what_replay_rejects_gossips_it(tmp_path: Path) -> None:
    seqs, evidence, rejected = run(tmp_path, make_behaviour(["invalid"]))
    assert (seqs, evidence, rejected) == ([1, 2], 0, 0)


def test_unknown_behaviours_are_refused_and_the_node_config_has_no_switch(tmp_path: Path) -> None:
    assert set(BEHAVIOURS) == {"equivocate", "invalid", "unfunded", "self_trade"}
    with pytest.raises(ValueError, match="unknown behaviours"):
        make_behaviour(["equivocate", "lie"])
    config = tmp_path / "node.toml"
    config.write_text('genesis = "g.toml"\nkeystore = "k.json"\n[byzantine]\nbehaviours = ["equivocate"]\n')
    with pytest.raises(UserError, match=r"line 3: unknown table \[byzantine\]"):  # not even ignored
        NodeConfig.load(config)


ETH = Symbol("ETH")
SPOT = Market(
    symbol="ETH/USDC", kind=MarketKind.SPOT, base=ETH, quote=USDC, tick_size=E9 // 100, step_size=E9 // 1000,
    min_qty=E9 // 1000, max_qty=1000 * E9, min_price=E9 // 100, max_price=10**6 * E9, maker_fee=200_000,
    taker_fee=500_000,
)


def spot_order(side: str, price: int, qty: int) -> dict[str, object]:
    return {"market": SPOT.symbol, "side": side, "type": "limit", "tif": "gtc", "price": price, "qty": qty,
            "reduce_only": False, "expires": 0}


async def trade_against_a_byzantine_node(tmp_path: Path) -> tuple[Node, Node, list[dict[str, Any]], str]:
    """Node 1 (honest) rests a buy of 0.3 ETH at 1980. Then node 0 (unfunded, self_trade,
    equivocate) rests a sell of 1 ETH at 2000 and sells 0.1 ETH into node 1's buy."""
    tokens = [Token(USDC, Address(b"\x22" * 20), 6), Token(ETH, Address(b"\x33" * 20), 18)]
    genesis = testing.make_genesis(KEYS, tokens, initial=10_000 * E9, markets=[SPOT])
    network = MemoryNetwork()
    conduct = make_behaviour(["unfunded", "self_trade", "equivocate"], journal=tmp_path / "byzantine.jsonl")
    async with AsyncExitStack() as stack:
        bad = await stack.enter_async_context(memory_node(genesis, 0, tmp_path, network, conduct))
        honest = await stack.enter_async_context(memory_node(genesis, 1, tmp_path, network))
        network.connect(bytes([1]) * 8, bytes([2]) * 8)
        bid = await honest.submit("order.place", spot_order("buy", 1980 * E9, 3 * E9 // 10))
        await trio.sleep(2)  # virtual: node 0 holds the bid before it trades
        await bad.submit("order.place", spot_order("sell", 2000 * E9, E9))
        await bad.submit("order.place", spot_order("sell", 1980 * E9, E9 // 10))
        await trio.sleep(5)
        return bad, honest, read_journal(tmp_path), bid["op_id"]


@pytest.mark.hostile
def test_a_byzantine_trader_s_unfunded_and_self_trading_orders_never_take_effect(tmp_path: Path) -> None:
    async def main() -> None:
        bad, honest, journal, bid = await trade_against_a_byzantine_node(tmp_path)
        unfunded = [entry for entry in journal if entry["fault"] == "unfunded"]
        crossing = [entry for entry in journal if entry["fault"] == "self_trade"]
        assert len(unfunded) == 2  # one after each of its orders
        assert len(crossing) == 1  # its first order rested; the second filled whole
        for node in (bad, honest):
            replica = node.replica
            for entry in unfunded:
                assert replica.status(OpId(bytes.fromhex(entry["op_id"][2:]))) == "rejected:insufficient_balance"
            resting = [OpId(bytes.fromhex(order[2:])) for order in crossing[0]["resting"]]
            kept = [order for order in resting if replica.status(order) != "rejected:equivocation"]
            assert len(kept) == 1  # the order or its equivocating twin
            info = replica.order_info(kept[0])
            assert info is not None
            assert (info.status, info.filled) == (SELF_TRADE, 0)
            fills = replica.ledger.fills
            assert [(fill.taker, fill.maker, fill.qty) for fill in fills] == [(bad.address, honest.address, E9 // 10)]
            book = replica.ledger.book(SPOT.symbol)
            assert [(order.order_id, order.remaining) for order in book.bids()] == [
                (OpId(bytes.fromhex(bid[2:])), 2 * E9 // 10)
            ]
            assert book.asks() == []
            replica.ledger.check_conservation()
        assert bad.replica.state_hash() == honest.replica.state_hash()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
