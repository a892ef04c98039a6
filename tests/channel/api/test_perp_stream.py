"""Live perpetual data over the WebSocket (channel/runtime/perp_feed.py): a real node with a perp
market behind the real server, driven by the real client and by the other participants'
operations delivered as gossip (`test_perp_api.Peers`).

- the positions and account streams, rebuilt from their snapshot and updates, equal what
  parley_positions and parley_account return after every change (a fill, a new oracle price, a
  transfer), for the node's participant and for another one, with the seq going up by one;
- each funding a checkpoint applies arrives once, as parley_fundingHistory shows it;
- a liquidation appears, then becomes final; another, undone by a late transfer that sorts
  before it, appears and vanishes;
- on four nodes with their consensus, a liquidation appears and becomes final on two nodes'
  streams, and the positions agree everywhere;
- the params are checked.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from channel.api.client import ApiError, AsyncClient, Endpoint, Events
from channel.api.server import INVALID_PARAMS, serve_api
from channel.runtime.node import Node
from crdt import testing
from crdt.genesis import InitialBalance
from crdt.ops import address_of, sign_op
from crdt.replica import Cut
from crdt.types import OpId
from p2p.memory import MemoryNetwork
from tests.channel.api.market_kit import next_event
from tests.channel.api.test_perp_api import (
    ADDRESSES,
    KEYS,
    LIQUIDATOR,
    MAKER,
    ROLES,
    TRADER,
    Peers,
    hex0x,
    perp_genesis,
    perp_order,
)
from tests.channel.api.trading_kit import ETH, MARKET, USDC, with_node
from tests.channel.runtime import node_kit
from tests.channel.runtime.node_kit import poll, run_real_time
from tests.crdt.markets.test_perp_positions import WIDE

E9 = 10**9
PERP = "ETH-PERP"


class AnnouncingPeers(Peers):
    """`Peers` whose checkpoints are announced, as the consensus driver does once it certified one."""

    def price(self, price: int, time: int) -> None:
        super().price(price, time)
        self.node.announce([])

    def certify(self, time: int) -> None:
        self.version += 1
        self.node.replica.certify(Cut(self.version, tuple(sorted(self.node.replica.graph.heads)), time))
        self.node.announce([])


class LocalPositions:
    """An account's positions rebuilt from a positions stream; refuses a seq gap."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.seq: int | None = None

    def apply(self, event: dict[str, Any]) -> None:
        if event["type"] == "snapshot":
            self.rows = {row["market"]: row for row in event["positions"]}
        else:
            assert self.seq is not None
            assert event["seq"] == self.seq + 1
            assert event["positions"] or event["closed"]  # an update always says something
            for market in event["closed"]:
                del self.rows[market]
            self.rows.update({row["market"]: row for row in event["positions"]})
        self.seq = event["seq"]

    def positions(self) -> list[dict[str, Any]]:
        return [self.rows[market] for market in sorted(self.rows)]


def without(event: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key not in keys}


def test_the_positions_and_account_streams_follow_every_change(tmp_path: Path) -> None:
    """The trader's positions and account, and the maker's positions, through an oracle price, a
    fill that opens both positions, a price drop (marks, PnL and liquidation prices move), a
    transfer (the account moves, and its liquidation price with it), and a reduce-only close:
    after each, at most one update per stream, whose seq follows, and the rebuilt state equals
    the node's."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = AnnouncingPeers(node)
        me, maker = ADDRESSES[TRADER], ADDRESSES[MAKER]
        async with AsyncClient(endpoint) as client, AsyncExitStack() as stack:
            mine: Events = await stack.enter_async_context(client.subscribe("positions"))
            theirs = await stack.enter_async_context(client.subscribe("positions", account=hex0x(maker)))
            account = await stack.enter_async_context(client.subscribe("account"))
            books = {mine: (LocalPositions(), me), theirs: (LocalPositions(), maker)}
            for events, (local, owner) in books.items():
                snapshot = await next_event(events)
                assert (snapshot["type"], snapshot["account"], snapshot["seq"], snapshot["positions"]) == (
                    "snapshot", hex0x(owner), 0, [])
                local.apply(snapshot)
            first = await next_event(account)
            assert without(first, "type", "seq") == node.account(me)
            assert (first["type"], first["seq"]) == ("snapshot", 0)
            account_seq = 0
            seqs = {mine: 0, theirs: 0}

            async def step(change: Any) -> None:
                """Make one change, then check each stream got an update exactly when its state moved."""
                nonlocal account_seq
                before = {events: node.positions(owner) for events, (_, owner) in books.items()}
                account_before = node.account(me)
                result = change()
                if hasattr(result, "__await__"):
                    await result
                for events, (local, owner) in books.items():
                    if node.positions(owner) != before[events]:
                        seqs[events] += 1
                        local.apply(await next_event(events))
                    assert local.positions() == node.positions(owner)
                    assert local.seq == seqs[events]
                if node.account(me) != account_before:
                    account_seq += 1
                    update = await next_event(account)
                    assert (update["type"], update["seq"]) == ("update", account_seq)
                    assert without(update, "type", "seq") == node.account(me)

            await step(lambda: peers.price(3000, 1_000))  # no position: nothing moves
            assert seqs == {mine: 0, theirs: 0}
            await step(lambda: peers.send(MAKER, "order.place", perp_order("sell", 2 * E9, 3000)))
            await step(lambda: client.place_order(PERP, "buy", E9, price=3000 * E9, tif="ioc"))
            assert seqs == {mine: 1, theirs: 1}
            assert books[mine][0].rows[PERP]["side"] == "long"
            assert books[theirs][0].rows[PERP]["side"] == "short"
            await step(lambda: peers.price(2800, 2_000))  # marks move every position and margin
            assert seqs == {mine: 2, theirs: 2}
            assert books[mine][0].rows[PERP]["unrealised_pnl"] == str(-200 * E9)
            await step(lambda: peers.send(MAKER, "transfer", {"to": me, "token": "USDC", "amount": 50 * E9}))
            assert books[mine][0].rows[PERP]["liquidation_price"] == node.positions(me)[0]["liquidation_price"]
            await step(lambda: peers.send(MAKER, "order.place", perp_order("buy", E9, 2800)))
            await step(lambda: client.place_order(PERP, "sell", E9, price=2800 * E9, tif="ioc", reduce_only=True))
            assert books[mine][0].rows == {}
            assert node.positions(me) == []
            assert account_seq >= 4

    with_node(perp_genesis(), tmp_path, body, index=TRADER)


def sorted_before(peers: Peers, who: int, parents: list[bytes], kind: str, body: dict[str, Any], bound: bytes) -> Any:
    """Participant `who`'s next operation on `parents` with an op id below `bound`: at the height
    of an operation with those parents, it sorts first."""
    peers.seqs[who] += 1
    for ts in range(10_000):
        op = sign_op(peers.node.replica.ctx, KEYS[who], peers.seqs[who], parents, kind, body, ts)
        if op.op_id < bound:
            return op
    raise AssertionError("no op id below the bound")


def test_fundings_and_liquidations_stream_as_they_happen(tmp_path: Path) -> None:
    """The liquidator's node: a funding once checkpoint time crosses the interval (none before,
    none at the next checkpoint inside it); a liquidation that a late transfer to the account,
    sorting before it, undoes (appeared, then vanished); after a further drop, one that takes
    effect (appeared, then final at the next checkpoint)."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = AnnouncingPeers(node)
        trader = hex0x(ADDRESSES[TRADER])
        async with AsyncClient(endpoint) as client, AsyncExitStack() as stack:
            funding = await stack.enter_async_context(client.subscribe("funding", market=PERP))
            liquidations = await stack.enter_async_context(client.subscribe("liquidations"))
            peers.price(3000, 1_000)
            peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
            peers.send(TRADER, "order.place", perp_order("buy", E9, 3000, "ioc"))
            peers.price(3000, 3_601_000)  # the first funding interval ends
            first = await next_event(funding)
            assert first == {"market": PERP, **node.funding_history(PERP)[-1]}
            assert (first["version"], first["time"]) == (2, 3_601_000)

            peers.price(2200, 3_602_000)  # worth 194, below its MMR of 220
            heads = sorted(node.replica.graph.heads)
            done = await client.liquidate(trader, PERP, E9)
            appeared = await next_event(liquidations)
            assert appeared == {"event": "appeared", **done["liquidation"], "final": False}
            assert appeared["account"] == trader
            liquidate = OpId(bytes.fromhex(done["op_id"][2:]))
            gift = {"to": ADDRESSES[TRADER], "token": "USDC", "amount": 100 * E9}
            node.receive([sorted_before(peers, MAKER, heads, "transfer", gift, liquidate)])
            # it sorts first: the trader is worth 294, and replay refuses the liquidate
            assert node.replica.status(liquidate) == "rejected:not_liquidatable"
            vanished = await next_event(liquidations)
            assert vanished == {**appeared, "event": "vanished"}
            assert node.positions(ADDRESSES[TRADER])[0]["size"] == str(E9)

            peers.price(2100, 3_603_000)  # 100 more down: worth 194, below 210
            again = await client.liquidate(trader, PERP, E9)
            taken = await next_event(liquidations)
            assert taken == {"event": "appeared", **again["liquidation"], "final": False}
            peers.certify(3_604_000)
            final = await next_event(liquidations)
            assert final == {**taken, "event": "changed", "final": True}
            assert node.positions(ADDRESSES[TRADER]) == []

            peers.price(2100, 7_201_000)  # the second interval: the next funding, and none between
            second = await next_event(funding)
            assert second == {"market": PERP, **node.funding_history(PERP)[-1]}
            assert len(node.funding_history(PERP)) == 2

    with_node(perp_genesis(), tmp_path, body, index=LIQUIDATOR)


def test_perp_subscription_params_are_checked(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            for topic, params, words in (
                ("funding", {"market": "ETH/USDC"}, "spot market, not a perpetual"),
                ("liquidations", {"market": "BTC-PERP"}, "no market 'BTC-PERP'"),
                ("positions", {"account": "0x" + "00" * 20}, "not a participant of this channel"),
                ("account", {"account": "0x12"}, "account"),
                ("account", {"market": PERP}, "unknown parameters"),
                ("liquidations", {"account": hex0x(ADDRESSES[TRADER])}, "unknown parameters"),
            ):
                with pytest.raises(ApiError) as refused:
                    async with client.subscribe(topic, **params):
                        pass
                assert refused.value.code == INVALID_PARAMS
                assert words in refused.value.message
            async with client.subscribe("positions", account=hex0x(ADDRESSES[MAKER])) as events:
                assert await next_event(events) == {"type": "snapshot", "account": hex0x(ADDRESSES[MAKER]), "seq": 0,
                                                    "positions": []}

    with_node(perp_genesis(), tmp_path, body, index=TRADER)


def test_a_liquidation_streams_and_becomes_final_on_every_node(tmp_path: Path) -> None:
    """Four nodes with their consensus, each behind its API: the oracle's node posts prices, the
    maker's rests a sell, the trader's takes it; after a drop the liquidator's node liquidates.
    The trader's positions stream shows the long open, move with the mark and close; the
    liquidations streams of the trader's and the liquidator's nodes show the liquidation appear,
    then become final once a checkpoint holds it; every node ends with the same positions."""
    genesis = testing.make_genesis(
        node_kit.KEYS, [USDC, ETH], roles=ROLES, markets=[MARKET, WIDE],
        initial=[InitialBalance(address_of(key), USDC.symbol, 1000 * E9) for key in node_kit.KEYS],
    )
    trader_hex = hex0x(address_of(node_kit.KEYS[TRADER]))

    async def main() -> None:
        network = MemoryNetwork()
        async with AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            nodes, clients = [], []
            for index in range(4):
                node = await stack.enter_async_context(node_kit.memory_node(genesis, index, tmp_path, network))
                url = await nursery.start(serve_api, node, "token")
                nodes.append(node)
                clients.append(await stack.enter_async_context(AsyncClient(Endpoint(url, "token"))))
            network.connect_all()
            trader, maker, oracle, liquidator = clients
            positions = await stack.enter_async_context(trader.subscribe("positions"))
            streams = [await stack.enter_async_context(c.subscribe("liquidations", market=PERP))
                       for c in (trader, liquidator)]
            local = LocalPositions()
            local.apply(await next_event(positions))
            await oracle.post_price(PERP, 3000 * E9)
            with trio.fail_after(30):
                await poll(lambda: all(node.mark_prices()[0]["fresh"] for node in nodes))
            await maker.place_order(PERP, "sell", E9, price=3000 * E9)
            with trio.fail_after(30):
                await poll(lambda: nodes[TRADER].order_book(PERP, 1, 2)["asks"] != [])
            await trader.place_order(PERP, "buy", E9, price=3000 * E9, tif="ioc")
            local.apply(await next_event(positions))
            assert [(p["side"], p["size"]) for p in local.positions()] == [("long", str(E9))]

            await oracle.post_price(PERP, 2200 * E9)  # worth 194, below its MMR of 220
            with trio.fail_after(30):
                await poll(lambda: nodes[LIQUIDATOR].liquidatable() != [])
            done = await liquidator.liquidate(trader_hex, PERP, E9)
            for events in streams:
                appeared = await next_event(events, within=30)
                assert appeared == {"event": "appeared", **done["liquidation"], "final": False}
                final = await next_event(events, within=30)
                assert final == {**appeared, "event": "changed", "final": True}
            while local.rows:  # the mark's move, then the close
                local.apply(await next_event(positions, within=30))
            assert local.positions() == nodes[TRADER].positions(address_of(node_kit.KEYS[TRADER])) == []
            with trio.fail_after(30):
                await poll(lambda: len({json.dumps(node.positions()) for node in nodes}) == 1)
            assert {p["account"] for p in nodes[0].positions()} == {
                hex0x(address_of(node_kit.KEYS[i])) for i in (MAKER, LIQUIDATOR)}
            nursery.cancel_scope.cancel()

    run_real_time(main)
