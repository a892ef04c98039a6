"""Take docs/page.png from a real run: a 4-node channel of node processes with ETH/USDC and
ETH-PERP, a maker's ladders, some trades, a trader's resting order and perp position, and the
trader's page in Debian's chromium.

    PYTHONPATH=$PWD .venv/bin/python scripts/page_screenshot.py [OUT.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from channel.api.client import Client, Endpoint
from channel.runtime.genesis_file import DEMO_ETH, DEMO_MARKETS, DEMO_USDC
from crdt.genesis import Role
from simulations.cluster import NodeProcess, create_cluster, start_all, stop_all, wait_until
from simulations.demos.perps import PERP

E9 = 10**9
SPOT, SWAP = DEMO_MARKETS[0].symbol, PERP.symbol
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cluster = create_cluster(Path(folder), 4, tokens=[DEMO_USDC, DEMO_ETH], initial=10_000 * E9,
                                 markets=[DEMO_MARKETS[0], PERP],
                                 roles=[Role.ORACLE, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR])
        processes = [NodeProcess(cluster.config(i)) for i in range(4)]
        start_all(processes)
        try:
            oracle, maker, trader = (Client.for_node(cluster.node_dirs[i]) for i in (0, 1, 2))
            oracle.post_price(SWAP, 2000 * E9)
            wait_until(lambda: maker.mark_prices()[0]["fixed_at"] is not None, what="the oracle's price, fixed")
            for market in (SPOT, SWAP):
                for level in range(1, 6):
                    maker.place_order(market, "buy", level * E9 // 5, 2000 * E9 - level * E9 // 2, tif="post_only")
                    maker.place_order(market, "sell", level * E9 // 5, 2000 * E9 + level * E9 // 2, tif="post_only")
            for i in range(8):  # trades for the chart, walking into the ladder and back
                trader.place_order(SPOT, "buy" if i % 3 else "sell", E9 // 10, type="market")
            trader.place_order(SWAP, "buy", E9 // 2, type="market")
            trader.place_order(SPOT, "buy", E9 // 4, 1996 * E9)  # a resting order of the trader
            trader.place_order(SWAP, "sell", E9 // 4, 2004 * E9, reduce_only=True)
            endpoint = Endpoint.for_node(cluster.node_dirs[2])
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(endpoint.url + "/")
                page.fill("#token", endpoint.token)
                page.click("#token-form button")
                expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=60_000)
                expect(page.locator("#positions tbody tr")).to_have_count(1, timeout=60_000)
                expect(page.locator("#fills tbody tr td.tentative")).to_have_count(0, timeout=60_000)
                expect(page.locator("#h-peers")).to_have_text("3 connected", timeout=60_000)
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            stop_all(processes)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/page.png"))
