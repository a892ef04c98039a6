"""The perpetual API over the real HTTP server (channel/runtime/perps.py, the parley_* perp
methods): positions, an account's margin and health, mark prices, funding history, the accounts
a liquidator may take, and the oracle's and the liquidator's methods with their refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from channel.api.client import ApiError, AsyncClient, Endpoint
from channel.runtime.node import Node
from crdt import testing
from crdt.genesis import Genesis, InitialBalance, Role
from crdt.ops import address_of, sign_op
from crdt.replica import Cut
from tests.channel.api.trading_kit import ADDRESSES, ETH, KEYS, MARKET, USDC, with_node
from tests.crdt.markets.test_perp_positions import WIDE

E9 = 10**9
TRADER, MAKER, ORACLE, LIQUIDATOR = range(4)
ROLES = [Role.TRADER, Role.MARKET_MAKER, Role.ORACLE, Role.LIQUIDATOR]


def perp_genesis() -> Genesis:
    """ETH-PERP (no circuit breaker to speak of) on USDC; every participant holds 1,000 USDC."""
    return testing.make_genesis(
        KEYS, [USDC, ETH], roles=ROLES, markets=[MARKET, WIDE],
        initial=[InitialBalance(address_of(k), USDC.symbol, 1000 * E9) for k in KEYS],
    )


class Peers:
    """The other participants' operations, signed here and delivered to the node as gossip."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.seqs = [0] * len(KEYS)
        self.version = 0

    def send(self, who: int, kind: str, body: dict[str, Any]) -> None:
        self.seqs[who] += 1
        op = sign_op(self.node.replica.ctx, KEYS[who], self.seqs[who], sorted(self.node.replica.graph.heads), kind,
                     body)
        self.node.receive([op])
        assert op.op_id in self.node.replica.graph.ops

    def price(self, price: int, time: int) -> None:
        """The oracle's price, fixed by a checkpoint at `time`."""
        self.send(ORACLE, "oracle.price", {"market": "ETH-PERP", "price": price * E9})
        self.version += 1
        self.node.replica.certify(Cut(self.version, tuple(sorted(self.node.replica.graph.heads)), time))


def perp_order(side: str, qty: int, price: int, tif: str = "gtc") -> dict[str, Any]:
    return {"market": "ETH-PERP", "side": side, "type": "limit", "tif": tif, "price": price * E9, "qty": qty,
            "reduce_only": False, "expires": 0}


def hex0x(data: bytes) -> str:
    return "0x" + data.hex()


def test_positions_account_marks_and_liquidatable_through_the_api(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = Peers(node)
        async with AsyncClient(endpoint) as client:
            assert await client.mark_prices() == [{
                "market": "ETH-PERP", "price": None, "fixed_at": None, "fresh": False, "halted": False,
                "funding_index": "0", "funding_rate": "0", "open_interest": "0",
            }]
            with pytest.raises(ApiError, match="oracle_stale"):  # no price yet: no risk may open
                await client.place_order("ETH-PERP", "buy", E9, price=3000 * E9, tif="ioc")
            peers.price(3000, 1_000)
            peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
            placed = await client.place_order("ETH-PERP", "buy", E9, price=3000 * E9, tif="ioc")
            assert placed["order"]["status"] == "filled"
            me = hex0x(ADDRESSES[TRADER])
            positions = await client.positions()
            assert [(p["account"], p["side"], p["size"]) for p in positions] == sorted(
                [(me, "long", str(E9)), (hex0x(ADDRESSES[MAKER]), "short", str(E9))])
            mine = await client.positions(me)
            assert len(mine) == 1
            assert mine[0]["entry_price"] == mine[0]["mark_price"] == str(3000 * E9)
            assert mine[0]["unrealised_pnl"] == "0"
            # 1,000 less the 0.2% taker fee on 3,000 is 994; liquidatable at (3000 - 994) / 0.9
            assert mine[0]["liquidation_price"] == str(-(-(3000 * E9 - 994 * E9) * E9 // (E9 - 100_000_000)))
            account = await client.account()
            assert account["collateral"]["USDC"] == {
                "balance": str(994 * E9), "debt": "0", "account_value": str(994 * E9),
                "initial_margin": str(600 * E9), "maintenance_margin": str(300 * E9),
                "free_collateral": str(394 * E9), "health": "ok",
            }
            assert await client.liquidatable() == []
            marks = await client.mark_prices()
            assert (marks[0]["price"], marks[0]["fresh"], marks[0]["open_interest"]) == (str(3000 * E9), True,
                                                                                       str(E9))
            assert await client.funding_history("ETH-PERP") == []
            with pytest.raises(ApiError, match="spot market, not a perpetual"):
                await client.funding_history("ETH/USDC")
            with pytest.raises(ApiError, match="not_permitted"):  # a trader is not an oracle
                await client.post_price("ETH-PERP", 3100 * E9)
            with pytest.raises(ApiError, match="not_permitted"):  # nor a liquidator
                await client.liquidate(hex0x(ADDRESSES[MAKER]), "ETH-PERP", E9)
            with pytest.raises(ApiError, match="insufficient_margin"):  # 394 may leave, not 400
                await client.submit("withdraw", {"token": "USDC", "amount": str(400 * E9)})

            peers.price(2200, 2_000)  # 800 down on 994: worth 194, below the MMR of 220
            account = await client.account()
            assert account["collateral"]["USDC"]["health"] == "liquidatable"
            found = await client.liquidatable()
            assert [(row["account"], row["account_value"], row["maintenance_margin"]) for row in found] == [
                (me, str(194 * E9), str(220 * E9))]
            assert found[0]["positions"][0]["market"] == "ETH-PERP"

    with_node(perp_genesis(), tmp_path, body, index=TRADER)


def test_the_liquidator_and_the_oracle_use_their_methods(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = Peers(node)
        peers.price(3000, 1_000)
        peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
        peers.send(TRADER, "order.place", perp_order("buy", E9, 3000, "ioc"))
        peers.price(2200, 2_000)
        async with AsyncClient(endpoint) as client:
            with pytest.raises(ApiError, match="not_liquidatable"):
                await client.liquidate(hex0x(ADDRESSES[MAKER]), "ETH-PERP", E9)
            with pytest.raises(ApiError, match="unknown_market"):
                await client.liquidate(hex0x(ADDRESSES[TRADER]), "BTC-PERP", E9)
            done = await client.liquidate(hex0x(ADDRESSES[TRADER]), "ETH-PERP", E9)
            record = done["liquidation"]
            # 2200 · 0.95 = 2090, above the bankruptcy price 2200 - 194 = 2006; 30% of the 110 premium insured
            assert (record["price"], record["taken_at"], record["insurance"]) == (
                str(2090 * E9), str(2123 * E9), str(33 * E9))
            positions = await client.positions()
            assert {(p["account"], p["side"]) for p in positions} == {
                (hex0x(ADDRESSES[LIQUIDATOR]), "long"), (hex0x(ADDRESSES[MAKER]), "short")}
            with pytest.raises(ApiError, match="not_permitted"):  # a liquidator is not an oracle
                await client.post_price("ETH-PERP", 2200 * E9)

    with_node(perp_genesis(), tmp_path, body, index=LIQUIDATOR)


def test_an_oracle_posts_prices_through_the_api(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            receipt = await client.post_price("ETH-PERP", 3000 * E9)
            assert (await client.status(receipt["op_id"]))["status"] == "tentative"
            with pytest.raises(ApiError, match="not_perp"):
                await client.post_price("ETH/USDC", 3000 * E9)
            node.replica.certify(Cut(1, tuple(sorted(node.replica.graph.heads)), 1_000))
            assert (await client.mark_prices())[0]["price"] == str(3000 * E9)

    genesis = perp_genesis()
    with_node(genesis, tmp_path, body, index=ORACLE)


def test_an_accounts_funding_payments_through_the_api(tmp_path: Path) -> None:
    """A long pays the funding of an interval whose premium is positive (the book's bid above the
    oracle price) when its position is next touched: one settlement, of exactly what it owed."""

    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = Peers(node)
        peers.price(3000, 1_000)
        peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
        peers.send(MAKER, "order.place", perp_order("buy", 2 * E9, 2990))
        async with AsyncClient(endpoint) as client:
            await client.place_order("ETH-PERP", "buy", E9, price=3000 * E9, tif="ioc")
            peers.price(2900, 3_601_000)  # the interval ends with the bid 90 above the oracle
            owed = int((await client.positions(hex0x(ADDRESSES[TRADER])))[0]["pending_funding"])
            assert owed > 0
            assert await client.funding_payments() == []  # owed, not settled: nothing touched it
            await client.place_order("ETH-PERP", "sell", E9 // 2, price=2990 * E9, tif="ioc", reduce_only=True)
            me = hex0x(ADDRESSES[TRADER])
            assert await client.funding_payments() == [
                {"market": "ETH-PERP", "account": me, "version": 2, "time": 3_601_000, "paid": str(owed)}]
            assert await client.funding_payments(me, "ETH-PERP", 1) == await client.funding_payments()
            # the maker's short received its share when its position moved too
            maker = await client.funding_payments(hex0x(ADDRESSES[MAKER]))
            assert [int(row["paid"]) < 0 for row in maker] == [True]
            with pytest.raises(ApiError, match="spot market, not a perpetual"):
                await client.funding_payments(me, "ETH/USDC")
            with pytest.raises(ApiError, match="not a participant"):
                await client.funding_payments("0x" + "00" * 20)

    with_node(perp_genesis(), tmp_path, body, index=TRADER)
