"""The trading commands: human units converted exactly, and `parley order`, `cancel`, `book`,
`orders` and `trades` against a real node and its API (`tests.channel.api.trading_kit`), with
their errors as one line and exit code 1, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from typer.testing import CliRunner

from channel.api.client import Endpoint
from channel.cli.main import app
from channel.cli.trade import checked, parse_units, units
from channel.errors import UserError
from channel.runtime.node import Node
from channel.runtime.trading import market_json
from tests.channel.api.trading_kit import E9, MARKET, SYMBOL, order_body, sign_order, trading_genesis, with_node

runner = CliRunner()
GENESIS = trading_genesis()
CONFIG = market_json(MARKET)


@pytest.mark.parametrize(
    ("text", "e9"),
    [("0.1", 10**8), ("2000.05", 2000 * E9 + 5 * 10**7), ("0.000000001", 1), (" 12 ", 12 * E9), ("1e-1", 10**8),
     ("18446744073.709551615", 2**64 - 1)],
)
def test_human_units_convert_exactly(text: str, e9: int) -> None:
    assert parse_units(text, "qty") == e9


@pytest.mark.parametrize(
    ("text", "message"),
    [("abc", "must be a decimal number"), ("-1", "must be a positive number"), ("0", "must be a positive number"),
     ("nan", "must be a positive number"), ("inf", "must be a positive number"),
     ("0.0000000001", "more than 9 decimal places"), ("18446744073.709551616", "too large")],
)
def test_bad_numbers_are_user_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_units(text, "qty")


def test_prices_and_quantities_are_checked_against_the_market_in_its_units() -> None:
    assert checked(CONFIG, "0.1", "qty") == E9 // 10
    assert checked(CONFIG, "2000.01", "price") == 2000 * E9 + E9 // 100
    with pytest.raises(UserError, match=r"qty 0.0005 is not a multiple of the ETH/USDC step 0.001 ETH"):
        checked(CONFIG, "0.0005", "qty")
    with pytest.raises(UserError, match=r"price 2000.001 is not a multiple of the ETH/USDC tick 0.01 USDC"):
        checked(CONFIG, "2000.001", "price")
    with pytest.raises(UserError, match=r"qty 5000 is outside the ETH/USDC limits \[0.001, 1000.000\] ETH"):
        checked(CONFIG, "5000", "qty")
    assert (units(E9 // 10, 3), units(2000 * E9, 2), units(40_000_000, 0), units(7 * E9, 0)) == (
        "0.100", "2000.00", "0.04", "7")


def cli_session(tmp_path: Path, script: Any) -> None:
    """Run node 0 and its API, and `script(node, invoke)` in a worker thread beside it, where
    ``invoke(*args)`` runs one ``parley`` command against the node (--node is added)."""
    data_dir = tmp_path / "node0"

    async def body(node: Node, endpoint: Endpoint) -> None:
        def invoke(*args: str) -> tuple[int, str]:
            result = runner.invoke(app, [*args, "--node", str(data_dir)])
            assert "Traceback" not in result.output
            return result.exit_code, result.output

        await trio.to_thread.run_sync(script, node, invoke)

    with_node(GENESIS, tmp_path, body)


def test_order_book_orders_trades_and_cancel(tmp_path: Path) -> None:
    def script(node: Node, invoke: Any) -> None:
        code, output = invoke("order", "buy", SYMBOL, "0.1", "--price", "2000", "--json")
        assert code == 0, output
        bid = json.loads(output)
        assert (bid["order"]["qty"], bid["order"]["price"], bid["order"]["status"]) == (
            str(E9 // 10), str(2000 * E9), "open")
        code, output = invoke("order", "buy", SYMBOL, "0.25", "--price", "1999.5", "--post-only")
        assert code == 0, output
        assert "open" in output
        assert "buy 0.250 ETH at 1999.50 USDC (limit, post_only): filled 0.000, remaining 0.250" in output
        code, output = invoke("book", SYMBOL)
        assert code == 0, output
        for shown in ("2000.00", "0.100", "1999.50", "0.350", "best bid 2000.00", "best ask -"):
            assert shown in output
        code, output = invoke("book", SYMBOL, "--json", "--depth", "1")
        assert json.loads(output)["bids"] == [[str(2000 * E9), str(E9 // 10)]]
        code, output = invoke("orders", "--json")
        assert [o["order_id"] for o in json.loads(output)] == [bid["op_id"], json.loads(
            invoke("orders", "--json", "--market", SYMBOL)[1])[1]["order_id"]]
        code, output = invoke("orders")
        assert code == 0
        assert "1999.50" in output
        node.receive([sign_order(node, 1, 1, order_body("buy", E9 // 10, 2001 * E9))])
        code, output = invoke("order", "sell", SYMBOL, "0.05", "--price", "2001", "--ioc")
        assert code == 0, output
        assert "filled 0.050" in output
        assert "fill 0.050 ETH at 2001.00 USDC as taker, fee 0.050025 USDC (tentative)" in output
        code, output = invoke("trades", SYMBOL, "--mine")
        assert code == 0
        assert "taker" in output
        assert "2001.00" in output
        code, output = invoke("trades", SYMBOL, "--json")
        [trade] = json.loads(output)
        assert (trade["side"], trade["qty"]) == ("sell", str(E9 // 20))
        code, output = invoke("cancel", bid["op_id"])
        assert code == 0, output
        assert "cancelled" in output
        code, output = invoke("cancel", "--all", SYMBOL, "--json")
        assert code == 0, output
        assert json.loads(output)["status"] == "tentative"
        assert json.loads(invoke("orders", "--json")[1]) == []

    cli_session(tmp_path, script)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["order", "buy", "BTC/USDC", "0.1", "--price", "1"],
         "no market 'BTC/USDC' in this channel (its markets: ETH/USDC)"),
        (["order", "buy", SYMBOL, "100", "--price", "2000"],
         "insufficient balance: you have 100000 USDC, and a buy of this size needs 200100 USDC"),
        (["order", "buy", SYMBOL, "0.1"], "a limit order needs --price"),
        (["order", "buy", SYMBOL, "0.1", "--price", "2000", "--ioc", "--post-only"], "at most one of --ioc"),
        (["order", "hold", SYMBOL, "0.1", "--price", "2000"], "side must be buy or sell"),
        (["order", "buy", SYMBOL, "0.1", "--market"], "rejected: no_liquidity"),
        (["order", "buy", SYMBOL, "0.1", "--price", "2000.001"], "not a multiple of the ETH/USDC tick 0.01 USDC"),
        (["order", "sell", SYMBOL, "0.1", "--price", "2000", "--reduce-only"], "reduce_only_not_spot"),
        (["cancel"], "give an ORDER id or --all MARKET"),
        (["cancel", "0x" + "ab" * 32], "rejected: unknown_order"),
        (["cancel", "--all", "BTC/USDC"], "rejected: unknown_market"),
        (["book", "BTC/USDC"], "no market 'BTC/USDC'"),
        (["trades", "BTC/USDC"], "no market 'BTC/USDC'"),
        (["orders", "--market", "BTC/USDC"], "no market 'BTC/USDC'"),
    ],
)
def test_trading_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    def script(node: Node, invoke: Any) -> None:
        code, output = invoke(*args)
        assert code == 1, output
        assert message in " ".join(output.split())
        assert node.next_seq() == 1  # nothing signed

    cli_session(tmp_path, script)


def test_commands_without_a_node_say_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["book", SYMBOL, "--node", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "no running node found" in result.output
