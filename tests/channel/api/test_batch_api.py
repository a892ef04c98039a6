"""Batch submission (`parley_placeOrders`, `parley_submitMany`), end to end: a node with the
ETH/USDC market (`trading_kit`) behind the real HTTP server, driven by the real clients and
ccxt. A batch is dry run item after item, its accepted items are signed with consecutive seqs
and stored in one commit; a refused item costs no seq and refuses nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trio

from channel.api.ccxt import parley_async
from channel.api.client import ApiError, AsyncClient, Endpoint, Rejected, refusal
from channel.api.server import INVALID_PARAMS, MAX_BATCH, REJECTED
from channel.runtime.node import Node
from tests.channel.api.trading_kit import E9, SYMBOL, trading_genesis, with_node

GENESIS = trading_genesis()
PRICE = 2000 * E9


def counting_commits(node: Node) -> list[int]:
    """The number of operations in each commit of the node's own operations (the store's real
    method, wrapped to count)."""
    commits: list[int] = []
    append = node.store.append_own_ops

    async def counted(ops: Any, source: bytes, **kwargs: Any) -> int:
        rows = list(ops)
        commits.append(len(rows))
        return await append(rows, source, **kwargs)

    node.store.append_own_ops = counted  # type: ignore[method-assign]
    return commits


def ask(price: int, qty: int = E9 // 10, **extra: Any) -> dict[str, Any]:
    return {"market": SYMBOL, "side": "sell", "qty": qty, "price": price, **extra}


def test_a_batch_of_orders_is_one_commit_with_one_result_each(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        commits = counting_commits(node)
        first = node.next_seq()
        async with AsyncClient(endpoint) as client:
            results = await client.place_orders([
                ask(PRICE + 10 * E9),
                ask(PRICE + 20 * E9, qty=11 * E9),  # more ETH than the participant has: refused
                ask(PRICE + 30 * E9, tif="post_only"),
                {"market": SYMBOL, "side": "buy", "qty": E9 // 10, "price": PRICE + 10 * E9, "tif": "ioc"},
            ])
        assert commits == [3]  # one commit (one fsync) for the three it signed
        placed, unfunded, posted, crossing = results
        assert [placed["seq"], posted["seq"], crossing["seq"]] == [first, first + 1, first + 2]  # no seq lost
        error = refusal(unfunded)
        assert isinstance(error, Rejected)
        assert error.reason == "insufficient_balance"
        assert refusal(placed) is None
        # each receipt holds its order's state once the whole batch is applied: the fourth was
        # dry run after the first, met the participant's own ask, and self-trade prevention
        # removed that ask ("expire maker")
        assert placed["order"]["status"] == "self_trade"
        assert posted["order"]["status"] == "open"
        assert [o["order_id"] for o in node.open_orders()] == [posted["op_id"]]

    with_node(GENESIS, tmp_path, body)


def test_an_item_may_spend_what_an_earlier_item_frees(tmp_path: Path) -> None:
    """All the ETH rests in an ask; a batch that cancels it and sells the ETH again is taken:
    each item is dry run after the ones before it."""
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            resting = await client.place_order(SYMBOL, "sell", 10 * E9, PRICE + 10 * E9)
            alone = await client.place_orders([ask(PRICE + 20 * E9, qty=10 * E9)])
            assert refusal(alone[0]) is not None  # the ETH is held by the resting ask
            cancel, again = await client.submit_many([
                ("order.cancel", {"order": resting["op_id"]}),
                ("order.place", {"market": SYMBOL, "side": "sell", "type": "limit", "tif": "gtc",
                                 "price": str(PRICE + 20 * E9), "qty": str(10 * E9), "reduce_only": False,
                                 "expires": "0"}),
            ])
        assert refusal(cancel) is None
        assert refusal(again) is None
        assert again["seq"] == cancel["seq"] + 1
        assert [o["order_id"] for o in node.open_orders()] == [again["op_id"]]

    with_node(GENESIS, tmp_path, body)


def test_request_ids_of_a_batch_answer_retries_and_refuse_reuse(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        commits = counting_commits(node)
        orders = [ask(PRICE + 10 * E9, request_id="q-1"), ask(PRICE + 20 * E9, request_id="q-2")]
        async with AsyncClient(endpoint) as client:
            first = await client.place_orders(orders)
            retried = await client.place_orders(orders)  # a retry: the first answers, nothing signed
            assert [r["op_id"] for r in retried] == [r["op_id"] for r in first]
            reused = await client.place_orders([ask(PRICE + 30 * E9, request_id="q-1"),
                                                ask(PRICE + 40 * E9, request_id="q-3"),
                                                ask(PRICE + 40 * E9, request_id="q-3"),  # the same, twice
                                                ask(PRICE + 50 * E9, request_id="q-3")])  # another, same id
        assert commits == [2, 1]
        conflict, new, twice, other = reused
        assert reused[0]["error"]["data"] == {"reason": "request_id_conflict"}
        assert twice["op_id"] == new["op_id"]
        assert other["error"]["data"] == {"reason": "request_id_conflict"}
        assert conflict["error"]["code"] == INVALID_PARAMS
        assert len(node.open_orders()) == 3

    with_node(GENESIS, tmp_path, body)


def test_a_malformed_item_refuses_the_whole_batch_unsigned(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        seq = node.next_seq()
        async with AsyncClient(endpoint) as client:
            for orders, words in (
                ([ask(PRICE), {"market": SYMBOL, "side": "sideways", "qty": "1", "price": "1"}], "orders[1]"),
                ([ask(PRICE), {"market": SYMBOL, "side": "sell", "qty": "1", "price": "1", "colour": 1}],
                 "orders[1]: unknown parameters"),
                ([], "1 to 100"),
                ([ask(PRICE)] * (MAX_BATCH + 1), "1 to 100"),
                ("not a list", "array"),
            ):
                with pytest.raises(ApiError) as caught:
                    await client.call("parley_placeOrders", [
                        {k: str(v) if isinstance(v, int) else v for k, v in o.items()} for o in orders
                    ] if isinstance(orders, list) else orders)
                assert caught.value.code == INVALID_PARAMS, caught.value
                assert words in str(caught.value), caught.value
            with pytest.raises(ApiError, match=r"items\[0\]") as caught:
                await client.call("parley_submitMany", [{"kind": "transfer", "body": {}}, {"kind": 3, "body": {}}])
            assert caught.value.code == INVALID_PARAMS
        assert node.next_seq() == seq  # nothing signed

    with_node(GENESIS, tmp_path, body)


def test_ccxt_create_orders_is_one_call_with_rejected_orders_in_place(tmp_path: Path) -> None:
    async def strategy(endpoint: Endpoint) -> list[dict[str, Any]]:
        exchange = parley_async({"urls": {"api": {"rpc": endpoint.url}}, "secret": endpoint.token})
        try:
            await exchange.load_markets()
            return list(await exchange.create_orders([
                {"symbol": SYMBOL, "type": "limit", "side": "sell", "amount": 0.1, "price": 2010},
                {"symbol": SYMBOL, "type": "limit", "side": "sell", "amount": 50, "price": 2020},  # unfunded
                {"symbol": SYMBOL, "type": "limit", "side": "sell", "amount": 0.2, "price": 2030,
                 "params": {"clientOrderId": "mm-3"}},
            ]))
        finally:
            await exchange.close()

    async def body(node: Node, endpoint: Endpoint) -> None:
        commits = counting_commits(node)
        orders = await trio.to_thread.run_sync(lambda: asyncio.run(strategy(endpoint)))  # ccxt's own loop
        assert commits == [2]
        assert [o["status"] for o in orders] == ["open", "rejected", "open"]
        assert orders[1]["info"]["error"]["data"] == {"reason": "insufficient_balance"}
        assert orders[2]["clientOrderId"] == "mm-3"
        assert orders[2]["price"] == 2030.0
        assert {o["id"] for o in (orders[0], orders[2])} == {o["order_id"] for o in node.open_orders()}

    with_node(GENESIS, tmp_path, body)


def test_the_socket_client_places_a_batch_too(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client, client.socket() as rpc:
            results = await rpc.place_orders([ask(PRICE + i * E9) for i in range(1, 21)])  # a 20-level ladder
        assert [refusal(r) for r in results] == [None] * 20
        assert len(node.open_orders()) == 20
        assert [r["order"]["status"] for r in results] == ["open"] * 20

    with_node(GENESIS, tmp_path, body)


def test_an_order_refused_in_a_batch_is_what_the_call_alone_refuses(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        async with AsyncClient(endpoint) as client:
            (batched,) = await client.place_orders([{"market": SYMBOL, "side": "buy", "qty": E9, "type": "market"}])
            with pytest.raises(Rejected) as alone:
                await client.place_order(SYMBOL, "buy", E9, type="market")
        assert batched["error"]["code"] == REJECTED == alone.value.code
        assert batched["error"]["data"] == alone.value.data == {"reason": "no_liquidity"}
        assert batched["error"]["message"] == alone.value.message

    with_node(GENESIS, tmp_path, body)


def test_a_market_order_prices_from_the_book_the_items_before_it_leave(tmp_path: Path) -> None:
    """On an empty book a market buy alone has nothing to take; after an ask earlier in its
    batch it takes its sweep price from that ask (and meets the participant's own order)."""
    async def body(node: Node, endpoint: Endpoint) -> None:
        market_buy = {"market": SYMBOL, "side": "buy", "qty": E9 // 10, "type": "market"}
        async with AsyncClient(endpoint) as client:
            (alone,) = await client.place_orders([market_buy])
            placed, taker = await client.place_orders([ask(PRICE), market_buy])
        assert alone["error"]["data"] == {"reason": "no_liquidity"}
        assert refusal(taker) is None
        assert taker["seq"] == placed["seq"] + 1
        assert taker["order"]["price"] == str(PRICE)
        assert placed["order"]["status"] == "self_trade"

    with_node(GENESIS, tmp_path, body)
