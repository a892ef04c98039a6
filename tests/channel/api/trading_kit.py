"""A channel with a spot market, ETH/USDC, for the trading tests of the API and the CLI.

The participants have fixed keys, so a test signs the other participants' orders itself
(`order_body`, `sign_order`) and delivers them with `Node.receive`, as a peer would. `with_node`
runs participant `index`'s node (its store and replica, no network) behind the real HTTP
server and writes its ``api.json``, so the clients and the CLI reach it as a running node.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from channel.api.client import Endpoint
from channel.api.server import serve_api
from channel.runtime import keystore
from channel.runtime.node import Node, api_token
from channel.runtime.store import Store
from crdt import testing
from crdt.genesis import Genesis, InitialBalance, Role, Token
from crdt.markets.config import Market, MarketKind
from crdt.ops import SignedOp, address_of, sign_op
from crdt.types import Address, Symbol

E9 = 10**9
ETH = Token(Symbol("ETH"), Address(b"\x33" * 20), 18)
USDC = Token(Symbol("USDC"), Address(b"\x22" * 20), 6)
SYMBOL = "ETH/USDC"
# 0.01 USDC tick, 0.001 ETH step, 0.001 to 1,000 ETH, 0.01 to 1,000,000 USDC; 2 bps maker, 5 bps taker
MARKET = Market(
    symbol=SYMBOL, kind=MarketKind.SPOT, base=ETH.symbol, quote=USDC.symbol, tick_size=E9 // 100,
    step_size=E9 // 1000, min_qty=E9 // 1000, max_qty=1000 * E9, min_price=E9 // 100, max_price=1_000_000 * E9,
    maker_fee=200_000, taker_fee=500_000,
)
HOLDINGS = {ETH.symbol: 10 * E9, USDC.symbol: 100_000 * E9}  # what each participant starts with
KEYS = sorted(testing.test_keys(b"parley-trading-%d", 4), key=address_of)
ADDRESSES = [address_of(key) for key in KEYS]
ROLES = [Role.TRADER, Role.TRADER, Role.TRADER, Role.OBSERVER]


def trading_genesis(keys: Sequence[bytes] = KEYS, roles: Sequence[Role] = ROLES) -> Genesis:
    """The ETH/USDC channel of `keys` (this kit's by default), each holding `HOLDINGS`."""
    return testing.make_genesis(
        keys, [USDC, ETH], roles=roles, markets=[MARKET],
        initial=[InitialBalance(address_of(k), t, amount) for k in keys for t, amount in HOLDINGS.items()],
    )


def with_node(genesis: Genesis, tmp_path: Path, body: Callable[[Node, Endpoint], Awaitable[None]],
              index: int = 0) -> None:
    """Run participant `index`'s node and its API (data directory ``tmp_path/node<index>``)
    for as long as `body` runs."""
    serve_node(genesis, keystore.Key(ADDRESSES[index], KEYS[index]), tmp_path / f"node{index}", body)


def serve_node(genesis: Genesis, key: keystore.Key, data_dir: Path,
               body: Callable[[Node, Endpoint], Awaitable[None]]) -> None:
    """Run `key`'s node on a new store in `data_dir`, with its API (and ``api.json``, as a running
    node writes it), for as long as `body` runs (at most 60 s)."""
    store = Store(data_dir / "node.sqlite")

    async def main() -> None:
        node = Node.restore(genesis, key, store, fresh_channel=True)
        token = api_token(data_dir)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_api, node, token)
            (data_dir / "api.json").write_text(json.dumps({"url": url}))
            with trio.fail_after(60):
                await body(node, Endpoint(url, token))
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        store.close()


def order_body(side: str, qty: int, price: int, *, order_type: str = "limit", tif: str = "gtc",
               market: str = SYMBOL) -> dict[str, Any]:
    return {"market": market, "side": side, "type": order_type, "tif": tif, "price": price, "qty": qty,
            "reduce_only": False, "expires": 0}


def sign_order(node: Node, index: int, seq: int, body: dict[str, Any]) -> SignedOp:
    """Participant `index`'s order.place after everything `node` holds: its parents are the
    node's heads, so it sorts after them."""
    return sign_op(node.replica.ctx, KEYS[index], seq, sorted(node.replica.graph.heads), "order.place", body)
