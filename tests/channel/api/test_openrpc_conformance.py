"""Every JSON-RPC method's real answer conforms to the result schema the OpenRPC document gives
it (channel/api/schemas.py), checked with jsonschema against the document itself; and the
schemas refuse what the API must never send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from channel.api.client import AsyncClient, Endpoint
from channel.api.schemas import RESULTS
from channel.api.server import METHODS, certificate_json, openrpc_document
from channel.runtime.node import Node
from crdt.ops import sign_op
from tests.channel.api.schema_kit import assert_conforms, conforms
from tests.channel.api.test_perp_api import LIQUIDATOR, MAKER, TRADER, Peers, hex0x, perp_genesis, perp_order
from tests.channel.api.trading_kit import ADDRESSES, KEYS, SYMBOL, order_body, sign_order, trading_genesis, with_node
from tests.channel.cli.test_certificates_cli import GENESIS, certificates

E9 = 10**9
DOCUMENT = openrpc_document()


def test_every_method_has_a_param_and_result_schema() -> None:
    assert set(RESULTS) == set(METHODS), "a method without its result model, or a model of no method"
    for method in DOCUMENT["methods"]:
        assert method["result"]["schema"], method["name"]
        for param in method["params"]:
            assert param["schema"], (method["name"], param["name"])


def checked(seen: set[str], method: str, result: Any) -> Any:
    assert_conforms(DOCUMENT, method, result)
    seen.add(method)
    return result


def test_spot_methods_answer_as_their_schemas_say(tmp_path: Path) -> None:
    seen: set[str] = set()

    async def body(node: Node, endpoint: Endpoint) -> None:
        other = hex0x(ADDRESSES[1])
        node.receive([sign_order(node, 1, 1, order_body("sell", E9, 2000 * E9))])
        async with AsyncClient(endpoint) as client:
            call = client.call
            checked(seen, "parley_transfer", await call("parley_transfer", other, "USDC", str(5 * E9)))
            checked(seen, "parley_submit", await call("parley_submit", "withdraw", {"token": "USDC", "amount": "1000"}))
            placed = checked(seen, "parley_placeOrder", await call(
                "parley_placeOrder", SYMBOL, "buy", str(E9 // 2), str(2000 * E9), "limit", "ioc"))
            assert placed["order"]["fills"]  # a fill, from the taker's side
            resting = checked(seen, "parley_placeOrder", await call(
                "parley_placeOrder", SYMBOL, "buy", str(E9), str(1990 * E9)))
            for level in (2, 3):
                book = checked(seen, "parley_orderBook", await call("parley_orderBook", SYMBOL, 10, level))
                assert book["bids"]
                assert book["asks"]
            batch = checked(seen, "parley_placeOrders", await call("parley_placeOrders", [
                {"market": SYMBOL, "side": "buy", "qty": str(E9), "price": str(1980 * E9)},
                {"market": SYMBOL, "side": "buy", "qty": str(10**6 * E9), "price": str(1970 * E9)},  # unfunded
            ]))
            assert "order" in batch[0]
            assert "error" in batch[1]
            many = checked(seen, "parley_submitMany", await call("parley_submitMany", [
                {"kind": "transfer", "body": {"to": other, "token": "USDC", "amount": str(E9)}},
                {"kind": "transfer", "body": {"to": other, "token": "USDC", "amount": str(10**9 * E9)}},
            ]))
            assert "op_id" in many[0]
            assert "error" in many[1]
            checked(seen, "parley_openOrders", await call("parley_openOrders"))
            checked(seen, "parley_order", await call("parley_order", placed["op_id"]))
            checked(seen, "parley_myTrades", await call("parley_myTrades"))
            assert checked(seen, "parley_trades", await call("parley_trades", SYMBOL))
            checked(seen, "parley_markets", await call("parley_markets"))
            checked(seen, "parley_cancelOrder", await call("parley_cancelOrder", resting["op_id"]))
            checked(seen, "parley_cancelAll", await call("parley_cancelAll", SYMBOL))
            checked(seen, "parley_balances", await call("parley_balances"))
            checked(seen, "parley_status", await call("parley_status", placed["op_id"]))
            checked(seen, "parley_status", await call("parley_status", "0x" + "00" * 32))  # unknown
            checked(seen, "parley_heads", await call("parley_heads"))
            checked(seen, "parley_peers", await call("parley_peers"))
            checked(seen, "parley_stats", await call("parley_stats"))
            checked(seen, "parley_checkpoints", await call("parley_checkpoints"))
            checked(seen, "parley_exitStatus", await call("parley_exitStatus"))
            checked(seen, "rpc.discover", await call("rpc.discover"))

    with_node(trading_genesis(), tmp_path, body)
    assert len(seen) == 21


def test_perp_methods_answer_as_their_schemas_say(tmp_path: Path) -> None:
    seen: set[str] = set()

    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = Peers(node)
        peers.price(3000, 1_000)
        peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
        peers.send(TRADER, "order.place", perp_order("buy", E9, 3000, "ioc"))
        peers.price(3000, 9_000)  # a funding interval
        peers.price(2200, 10_000)  # the trader is liquidatable
        # the maker equivocates: a second operation with its last seq
        twin = sign_op(node.replica.ctx, KEYS[MAKER], peers.seqs[MAKER], [], "transfer",
                       {"to": ADDRESSES[TRADER], "token": "USDC", "amount": E9})
        node.receive([twin])
        async with AsyncClient(endpoint) as client:
            call = client.call
            assert checked(seen, "parley_liquidatable", await call("parley_liquidatable"))
            assert checked(seen, "parley_positions", await call("parley_positions"))
            checked(seen, "parley_account", await call("parley_account", hex0x(ADDRESSES[TRADER])))
            checked(seen, "parley_markPrices", await call("parley_markPrices"))
            checked(seen, "parley_fundingHistory", await call("parley_fundingHistory", "ETH-PERP"))
            checked(seen, "parley_fundingPayments", await call("parley_fundingPayments", hex0x(ADDRESSES[TRADER])))
            done = checked(seen, "parley_liquidate", await call(
                "parley_liquidate", hex0x(ADDRESSES[TRADER]), "ETH-PERP", str(E9)))
            assert done["liquidation"] is not None
            evidence = checked(seen, "parley_evidence", await call("parley_evidence"))
            assert [e["kind"] for e in evidence] == ["equivocation"]
            checked(seen, "parley_stats", await call("parley_stats"))
            checked(seen, "parley_balances", await call("parley_balances", hex0x(ADDRESSES[LIQUIDATOR])))

    with_node(perp_genesis(), tmp_path, body, index=LIQUIDATOR)
    assert len(seen) == 10


def test_a_certificate_answers_as_its_schema_says() -> None:
    # a node without a network holds no certificate; the handler's shape, from real certificates
    for certificate in certificates(2):
        assert_conforms(DOCUMENT, "parley_certificate", certificate_json(certificate, GENESIS))


def test_the_schemas_refuse_what_the_api_must_never_send() -> None:
    receipt = {"op_id": "0x" + "ab" * 32, "seq": 1, "status": "tentative"}
    assert conforms(DOCUMENT, "parley_transfer", receipt)
    assert not conforms(DOCUMENT, "parley_transfer", {**receipt, "extra": 1})  # an unknown key
    assert not conforms(DOCUMENT, "parley_transfer", {k: v for k, v in receipt.items() if k != "seq"})
    assert not conforms(DOCUMENT, "parley_transfer", {**receipt, "op_id": "0xab"})  # not 32 bytes
    parts = {"0x" + "11" * 20: {"USDC": {"free": "5", "held": "0", "locked": "0", "withdrawn": "0"}}}
    assert conforms(DOCUMENT, "parley_balances", parts)
    assert not conforms(DOCUMENT, "parley_balances", {"0x" + "11" * 20: {"USDC": {"free": 5.5}}})  # a float
    assert not conforms(DOCUMENT, "parley_balances", {"0x" + "11" * 20: {"USDC": {"free": "1e9"}}})
