"""The perpetual markets' reference bots (`simulations.perp_bots`, `parley bot liquidator` and
`parley bot oracle`) against a real node: the liquidator takes what is below maintenance margin
and counts what replay refused; the feeder posts a file's prices and a seeded random walk,
rounded to the tick, the same walk for the same seed."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import trio
from typer.testing import CliRunner

from channel.api.client import Client, Endpoint
from channel.cli.main import app
from channel.runtime.node import Node
from simulations.perp_bots import LiquidatorBot, OracleFeeder, file_prices, random_walk
from tests.channel.api.test_perp_api import LIQUIDATOR, MAKER, ORACLE, TRADER, Peers, perp_genesis, perp_order
from tests.channel.api.trading_kit import with_node

E9 = 10**9
runner = CliRunner()


def test_the_liquidator_takes_what_is_below_maintenance_margin(tmp_path: Path) -> None:
    async def body(node: Node, endpoint: Endpoint) -> None:
        peers = Peers(node)
        peers.price(3000, 1_000)
        peers.send(MAKER, "order.place", perp_order("sell", E9, 3000))
        peers.send(TRADER, "order.place", perp_order("buy", E9, 3000, "ioc"))
        with Client(endpoint) as client:
            bot = LiquidatorBot(client)
            assert await trio.to_thread.run_sync(bot.step) == 0  # nobody is below maintenance margin
            peers.price(2200, 2_000)
            assert await trio.to_thread.run_sync(bot.step) == 1
            assert bot.taken[0]["account"] == "0x" + node.genesis.participants[TRADER].address.hex()
            assert bot.taken[0]["price"] == str(2090 * E9)
            assert await trio.to_thread.run_sync(bot.step) == 0  # nothing left to take
        assert node.replica.ledger.position("ETH-PERP", node.address).size == E9

    with_node(perp_genesis(), tmp_path, body, index=LIQUIDATOR)


def test_the_oracle_feeder_posts_a_file_and_a_seeded_walk(tmp_path: Path) -> None:
    prices = tmp_path / "prices.txt"
    prices.write_text("# ETH\n3000\n\n3001.005  # off the tick: rounded down\n2999.5\n")
    assert list(file_prices(prices)) == [Decimal("3000"), Decimal("3001.005"), Decimal("2999.5")]
    walk = list(itertools.islice(random_walk(7, Decimal(3000), 20), 5))
    assert walk == list(itertools.islice(random_walk(7, Decimal(3000), 20), 5))  # the seed fixes it
    assert walk != list(itertools.islice(random_walk(8, Decimal(3000), 20), 5))
    assert all(abs(b / a - 1) == Decimal("0.002") for a, b in itertools.pairwise(walk))

    async def body(node: Node, endpoint: Endpoint) -> None:
        with Client(endpoint) as client:
            feeder = OracleFeeder(client, "ETH-PERP", file_prices(prices))
            while await trio.to_thread.run_sync(feeder.step):
                pass
        assert feeder.posted == [3000 * E9, 3001 * E9, 2999 * E9 + E9 // 2]
        latest = node.replica.ledger.oracle_posts
        assert [post.price for post in latest.values()] == [2999 * E9 + E9 // 2]

        def cli() -> None:
            result = runner.invoke(app, ["bot", "oracle", "--node", str(tmp_path / f"node{ORACLE}"),
                                         "--market", "ETH-PERP", "--from", str(prices), "--interval", "0"])
            assert result.exit_code == 0, result.output
            assert "posted ETH-PERP 3001" in result.output
            assert "3 prices posted" in result.output
            result = runner.invoke(app, ["bot", "oracle", "--node", str(tmp_path / f"node{ORACLE}"),
                                         "--market", "ETH-PERP"])
            assert result.exit_code == 1
            assert "--from FILE or --random-walk SEED" in result.output

        await trio.to_thread.run_sync(cli)

    with_node(perp_genesis(), tmp_path, body, index=ORACLE)
