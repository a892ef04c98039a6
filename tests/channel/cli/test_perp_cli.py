"""The perpetual commands (`parley positions`, `account`, `liquidate`, `oracle post`) against a
real node and its API, in whole units, with their refusals as one line and exit code 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from typer.testing import CliRunner

from channel.api.client import Endpoint
from channel.cli.main import app
from channel.runtime.node import Node
from tests.channel.api.test_perp_api import LIQUIDATOR, MAKER, TRADER, Peers, hex0x, perp_genesis, perp_order
from tests.channel.api.trading_kit import ADDRESSES, with_node

runner = CliRunner()
E9 = 10**9


def test_positions_account_liquidate_and_oracle_post(tmp_path: Path) -> None:
    data_dir = tmp_path / f"node{LIQUIDATOR}"
    trader, maker = hex0x(ADDRESSES[TRADER]), hex0x(ADDRESSES[MAKER])

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--node", str(data_dir)])
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    def script() -> None:
        code, output = invoke("positions")  # a table (folded to the test terminal's 80 columns)
        assert code == 0, output
        assert "long" in output
        assert "short" in output
        code, output = invoke("positions", "--account", trader, "--json")
        assert code == 0, output
        assert [(p["side"], p["size"]) for p in json.loads(output)] == [("long", str(E9))]
        code, output = invoke("account", trader, "--json")
        assert code == 0, output
        assert json.loads(output)["collateral"]["USDC"]["health"] == "liquidatable"
        code, output = invoke("account", trader)
        assert code == 0, output
        assert "liquidatable" in output
        code, output = invoke("liquidate", maker, "ETH-PERP")  # above its maintenance margin
        assert code == 1
        assert output.startswith("error:")
        assert "not_liquidatable" in output
        code, output = invoke("liquidate", trader, "ETH-PERP", "0.0005")  # off the step
        assert code == 1
        assert "step" in output
        code, output = invoke("liquidate", trader, "ETH-PERP")  # all of it
        assert code == 0, output
        assert "took 1.000 of" in output
        assert "at 2123.00 (closed at" in output
        assert "33 USDC to insurance" in output
        code, output = invoke("oracle", "post", "ETH-PERP", "2200")  # a liquidator is not an oracle
        assert code == 1
        assert "not_permitted" in output
        code, output = invoke("positions", "--json")
        assert {(p["account"], p["side"]) for p in json.loads(output)} == {
            (hex0x(ADDRESSES[LIQUIDATOR]), "long"), (maker, "short")}

    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = Peers(node)
        peers.price(3000, 1_000)
        peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
        peers.send(TRADER, "order.place", perp_order("buy", E9, 3000, "ioc"))
        peers.price(2200, 2_000)
        await trio.to_thread.run_sync(script)

    with_node(perp_genesis(), tmp_path, body, index=LIQUIDATOR)


def test_oracle_post_through_the_cli(tmp_path: Path) -> None:
    from tests.channel.api.test_perp_api import ORACLE

    data_dir = tmp_path / f"node{ORACLE}"

    def script() -> Any:
        result = runner.invoke(app, ["oracle", "post", "ETH-PERP", "3000.5", "--node", str(data_dir), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["status"] == "tentative"
        result = runner.invoke(app, ["oracle", "post", "ETH-PERP", "3000.005", "--node", str(data_dir)])
        assert result.exit_code == 1
        assert "tick" in result.output

    async def body(node: Node, endpoint: Endpoint) -> None:
        await trio.to_thread.run_sync(script)
        posted = node.replica.ledger.oracle_posts
        assert [post.price for post in posted.values()] == [3000 * E9 + E9 // 2]

    with_node(perp_genesis(), tmp_path, body, index=ORACLE)
