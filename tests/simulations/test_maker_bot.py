"""The market-making bot (`simulations.maker_bot`, `parley bot maker`) on the ccxt class against
a real node: its ladder, re-quoting on a fill, the inventory limit, cancelling on stop, and
reconciling its resting quotes after its node restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import ccxt
import pytest
import trio

from channel.api.ccxt import parley
from channel.api.client import Endpoint
from channel.runtime.node import Node
from simulations.maker_bot import MakerBot
from tests.channel.api.ccxt_kit import GENESIS
from tests.channel.api.trading_kit import E9, SYMBOL, order_body, sign_order, with_node

TENTH = E9 // 10


def prices(bot: MakerBot) -> list[tuple[str, float]]:
    return sorted(bot.quotes.values(), key=lambda quote: quote[1])


def test_the_bot_quotes_requotes_on_fills_keeps_its_inventory_limit_and_cancels(tmp_path: Path) -> None:
    bot = MakerBot(parley({"apiKey": str(tmp_path / "node0")}), SYMBOL, spread=1, size=0.1, levels=2,
                   max_inventory=0.15)

    async def body(node: Node, endpoint: Endpoint) -> None:
        # participant 1's wide quotes make the mid 2000
        node.receive([sign_order(node, 1, 1, order_body("buy", E9, 1990 * E9))])
        node.receive([sign_order(node, 1, 2, order_body("sell", E9, 2010 * E9))])
        assert await trio.to_thread.run_sync(bot.step)
        assert prices(bot) == [("buy", 1998.0), ("buy", 1999.0), ("sell", 2001.0), ("sell", 2002.0)]
        assert not await trio.to_thread.run_sync(bot.step)  # every quote rests: nothing to do
        for seq in (1, 2):  # participant 2 sells into the bot's best bid, twice
            node.receive([sign_order(node, 2, seq, order_body("sell", TENTH, 1999 * E9))])
            assert await trio.to_thread.run_sync(bot.step)
            if seq == 1:  # 0.1 ETH bought: still under the 0.15 limit
                assert prices(bot) == [("buy", 1998.0), ("buy", 1999.0), ("sell", 2001.0), ("sell", 2002.0)]
        assert prices(bot) == [("sell", 2001.0), ("sell", 2002.0)]  # 0.2 bought: asks only
        mine = {order["order_id"] for order in node.open_orders(SYMBOL, node.address)}
        assert mine == set(bot.quotes)
        await trio.to_thread.run_sync(bot.stop)
        assert node.open_orders(SYMBOL, node.address) == []

    with_node(GENESIS, tmp_path, body)


def test_the_bot_waits_out_its_node_restarting_and_keeps_the_quotes_still_resting(tmp_path: Path) -> None:
    bot = MakerBot(parley({"apiKey": str(tmp_path / "node0")}), SYMBOL, spread=0.5, size=0.1, levels=1, mid=2000)

    async def first(node: Node, endpoint: Endpoint) -> None:
        assert await trio.to_thread.run_sync(bot.step)

    with_node(GENESIS, tmp_path, first)
    quoted = dict(bot.quotes)
    with pytest.raises(ccxt.NetworkError):
        bot.step()  # the node is down (run() waits this out)

    async def restarted(node: Node, endpoint: Endpoint) -> None:
        assert not await trio.to_thread.run_sync(bot.step)  # a new port in api.json; the quotes rest
        assert {order["order_id"] for order in node.open_orders(SYMBOL, node.address)} == set(quoted)

    with_node(GENESIS, tmp_path, restarted)
    assert bot.quotes == quoted


def test_parley_bot_maker_quotes_until_sigterm_then_cancels(tmp_path: Path) -> None:
    """The command as a process: its ladder appears in the node's book; SIGTERM cancels it."""
    async def body(node: Node, endpoint: Endpoint) -> None:
        command = [sys.executable, "-m", "channel", "bot", "maker", "--node", str(tmp_path / "node0"),
                   "--market", SYMBOL, "--spread", "0.5", "--size", "0.1", "--levels", "2", "--mid", "2000",
                   "--interval", "0.2"]
        log = tmp_path / "bot.log"
        with log.open("wb") as out:
            process = await trio.lowlevel.open_process(command, stdout=out, stderr=subprocess.STDOUT,
                                                       env={**os.environ, "PYTHONPATH": os.getcwd()})
        try:
            for _ in range(300):  # its ladder, within 30 s
                if len(node.open_orders(SYMBOL, node.address)) == 4:
                    break
                await trio.sleep(0.1)
            book = node.order_book(SYMBOL, 5, 2)
            assert book["bids"] == [[str(1999_500_000_000), str(TENTH)], [str(1999 * E9), str(TENTH)]]
            assert book["asks"] == [[str(2000_500_000_000), str(TENTH)], [str(2001 * E9), str(TENTH)]]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        output = log.read_text()
        assert process.returncode == 0, output
        assert "quoted ETH/USDC: buy 0.1@1999.0" in output
        assert "stopped: ETH/USDC quotes cancelled" in output
        assert node.open_orders(SYMBOL, node.address) == []

    with_node(GENESIS, tmp_path, body)


def test_parley_bot_maker_refuses_an_unknown_market_in_one_line(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        result = await trio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "channel", "bot", "maker", "--node", str(tmp_path / "node0"), "--market",
             "BTC/USDC", "--spread", "1", "--size", "0.1"], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()}, check=False))
        assert result.returncode == 1
        assert result.stderr.strip() == "error: BTC/USDC is not a market of this channel"

    with_node(GENESIS, tmp_path, body)


def test_on_a_swap_the_bot_quotes_around_the_oracle_and_limits_its_position(tmp_path: Path) -> None:
    """ETH/USDC:USDC (ETH-PERP) with an empty book: the bot quotes around the oracle's 3,000; the
    maker lifts its ask twice, so its short passes the limit and it only bids."""
    from tests.channel.api.test_perp_api import MAKER, TRADER, Peers, perp_genesis, perp_order

    swap = "ETH/USDC:USDC"
    bot = MakerBot(parley({"apiKey": str(tmp_path / f"node{TRADER}")}), swap, spread=1, size=0.1, levels=2,
                   max_inventory=0.15)

    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = Peers(node)
        peers.price(3000, 1_000)
        assert await trio.to_thread.run_sync(bot.step)
        assert prices(bot) == [("buy", 2998.0), ("buy", 2999.0), ("sell", 3001.0), ("sell", 3002.0)]
        for _ in range(2):
            peers.send(MAKER, "order.place", perp_order("buy", TENTH, 3001, "ioc"))
            assert await trio.to_thread.run_sync(bot.step)
        assert node.positions(node.address)[0]["side"] == "short"
        assert prices(bot) == [("buy", 2998.0), ("buy", 2999.0)]  # short 0.2: bids only
        await trio.to_thread.run_sync(bot.stop)
        assert node.open_orders("ETH-PERP", node.address) == []

    with_node(perp_genesis(), tmp_path, body, index=TRADER)
