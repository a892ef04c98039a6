"""The node's web page in a real browser: Debian's chromium driven by Playwright, against a
running 4-node channel of real processes (`simulations.cluster`) with a spot and a perp market.

Each step waits on the page's state (Playwright's `expect`, which polls the DOM), never on a
sleep, and saves a screenshot under pytest's tmp dir (``page-steps/``), or under
``$PARLEY_ARTIFACTS`` when that is set (CI keeps them). A JavaScript error, a CSP violation or a
failed request of the page fails the test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from channel.api.client import Client, Endpoint
from channel.runtime.genesis_file import DEMO_ETH, DEMO_MARKETS, DEMO_USDC
from crdt.genesis import Role
from simulations.cluster import Cluster, NodeProcess, create_cluster, start_all, stop_all
from simulations.demos.perps import PERP

pytestmark = pytest.mark.slow

E9 = 10**9
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPOT, SWAP = DEMO_MARKETS[0].symbol, PERP.symbol
ORACLE, MAKER, TRADER, LIQUIDATOR = range(4)
WAIT_MS = 60_000  # the longest any one page state may take to appear (2 loaded cores)


def chromium() -> str:
    """The system chromium, or skip (locally) / fail (CI=true) without it, as the anvil tests do."""
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if found is None:
        message = "chromium not found: apt-get install -y chromium (Playwright's own download cannot work here)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Pages:
    """One browser; a page per node, and what went wrong in any of them."""

    browser: Any
    cluster: Cluster
    shots: Path
    problems: list[str] = field(default_factory=list)
    step: int = 0

    def open(self, index: int) -> Any:
        endpoint = Endpoint.for_node(self.cluster.node_dirs[index])
        page = self.browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: self.problems.append(f"node {index}: {error}"))
        page.on("console", lambda message: message.type == "error" and self.problems.append(
            f"node {index} console: {message.text}"))
        page.on("requestfailed", lambda request: self.problems.append(
            f"node {index}: {request.url} failed ({request.failure})"))
        page.goto(endpoint.url + "/")
        page.fill("#token", endpoint.token)
        page.click("#token-form button")
        from playwright.sync_api import expect

        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        return page

    def shot(self, page: Any, name: str) -> None:
        self.step += 1
        page.screenshot(path=str(self.shots / f"{self.step:02d}-{name}.png"), full_page=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = create_cluster(tmp_path / "cluster", 4, tokens=[DEMO_USDC, DEMO_ETH], initial=10_000 * E9,
                             markets=[DEMO_MARKETS[0], PERP],
                             roles=[Role.ORACLE, Role.MARKET_MAKER, Role.TRADER, Role.LIQUIDATOR])
    processes = [NodeProcess(cluster.config(i)) for i in range(4)]
    start_all(processes)
    try:
        yield cluster
    finally:
        stop_all(processes)


@pytest.fixture
def pages(cluster: Cluster, tmp_path: Path) -> Iterator[Pages]:
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)

    shots = Path(os.environ.get("PARLEY_ARTIFACTS") or tmp_path) / "page-steps"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield Pages(browser, cluster, shots)
        finally:
            browser.close()


def place(page: Any, market: str, side: str, qty: str, price: str | None = None, *,
          post_only: bool = False, reduce_only: bool = False) -> None:
    page.select_option("#order-market", market)
    page.select_option("#order-side", side)
    page.select_option("#order-type", "limit" if price is not None else "market")
    if price is not None:
        page.fill("#order-price", price)
    page.fill("#order-qty", qty)
    page.set_checked("#order-post-only", post_only and price is not None)
    page.set_checked("#order-reduce-only", reduce_only)
    page.click("#order-submit")


def side_rows(page: Any, market: str, side: str) -> Any:
    return page.locator(f'article[data-market="{market}"] table.{side} tbody tr')


def watch_fill_statuses(page: Any) -> None:
    """Record, in the page, every status any row of the fills table shows (a tentative fill can
    become final between two polls of `expect`; the page's DOM saw it either way)."""
    page.evaluate("""() => {
        window.seenFillStatuses = [];
        const note = () => {
            for (const cell of document.querySelectorAll("#fills tbody td:last-child")) {
                const seen = window.seenFillStatuses;
                if (seen[seen.length - 1] !== cell.textContent) seen.push(cell.textContent);
            }
        };
        new MutationObserver(note).observe(document.querySelector("#fills tbody"),
                                           {childList: true, subtree: true, characterData: true});
    }""")


def test_the_page_serves_its_files_with_a_strict_policy(cluster: Cluster) -> None:
    endpoint = Endpoint.for_node(cluster.node_dirs[0])
    for path, media_type in (("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")):
        response = httpx.get(endpoint.url + path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "'unsafe-inline'" not in policy
        assert "connect-src 'self' ws://127.0.0.1:*" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in httpx.get(endpoint.url + "/").text  # no inline script for the policy to allow
    assert httpx.get(endpoint.url + "/nothing.js").status_code == 404
    assert httpx.post(endpoint.url + "/rpc", json={"jsonrpc": "2.0", "id": 1, "method": "parley_stats"}
                      ).status_code == 401  # the page is public, the API still is not


def test_trading_on_the_page_across_a_four_node_channel(pages: Pages, cluster: Cluster) -> None:
    from playwright.sync_api import expect

    stranger = pages.browser.new_page()  # a wrong token: refused, said so, and asked for again
    stranger.set_default_timeout(WAIT_MS)
    stranger.goto(Endpoint.for_node(cluster.node_dirs[TRADER]).url + "/")
    stranger.fill("#token", "not-the-token")
    stranger.click("#token-form button")
    expect(stranger.locator("#errors .error")).to_have_text(
        "connecting: the API token is wrong (see <data_dir>/api-token) (code 401)")
    expect(stranger.locator("#login")).to_be_visible()
    assert stranger.evaluate("sessionStorage.length") == 0
    stranger.close()

    trader, maker = pages.open(TRADER), pages.open(MAKER)
    trader.reload()  # the token is asked for once: the tab's session storage keeps it
    expect(trader.locator("body")).to_have_attribute("data-ready", "true")
    expect(trader.locator("#login")).to_be_hidden()
    expect(trader.locator("#h-peers")).to_have_text("3 connected")
    expect(trader.locator("#balances tbody tr[data-token=USDC] td").nth(1)).to_have_text("10000.0000")
    pages.shot(trader, "trader-connected")

    # a limit order on the trader's page, in the book on the maker's page
    place(trader, SPOT, "sell", "0.5", "2001")
    order = trader.locator("#orders tbody tr")
    expect(order).to_have_count(1)
    expect(order.locator("td").nth(2)).to_have_text("2001.00")
    asks = side_rows(maker, SPOT, "asks")
    expect(asks).to_have_count(1)
    expect(asks.locator("td.price")).to_have_text("2001.00")
    expect(asks.locator("td.qty")).to_have_text("0.500")
    pages.shot(trader, "trader-order-placed")
    pages.shot(maker, "maker-sees-the-ask")

    # cancelled on the trader's page: gone from the maker's book
    order.locator("button.cancel").click()
    expect(order).to_have_count(0)
    expect(asks).to_have_count(0)
    pages.shot(maker, "maker-sees-the-cancel")

    # the maker rests a post-only bid; the trader sells into it: a fill, tentative then final
    place(maker, SPOT, "buy", "0.4", "1999.5", post_only=True)
    expect(side_rows(trader, SPOT, "bids").locator("td.price")).to_have_text("1999.50")
    watch_fill_statuses(trader)
    place(trader, SPOT, "sell", "0.25")
    fill = trader.locator("#fills tbody tr")
    expect(fill).to_have_count(1)
    expect(fill.locator("td").nth(2)).to_have_text("1999.50")
    expect(fill.locator("td").nth(4)).to_have_text("taker")
    expect(fill.locator("td").last).to_have_text("final")
    assert trader.evaluate("window.seenFillStatuses") == ["tentative", "final"]
    expect(side_rows(maker, SPOT, "bids").locator("td.qty")).to_have_text("0.150")
    expect(maker.locator(f'article[data-market="{SPOT}"] table.trades tbody tr td').last).to_have_text("final")
    expect(maker.locator("#fills tbody tr td").nth(4)).to_have_text("maker")
    pages.shot(trader, "trader-fill-final")

    # a perp position: the oracle's price, the maker's ask, the trader's market buy
    with Client.for_node(cluster.node_dirs[ORACLE]) as oracle:
        oracle.post_price(SWAP, 2000 * E9)
    expect(maker.locator(f'article[data-market="{SWAP}"] .mark')).to_contain_text("mark 2000.00")
    place(maker, SWAP, "sell", "1", "2001", post_only=True)
    expect(side_rows(trader, SWAP, "asks").locator("td.price")).to_have_text("2001.00")
    place(trader, SWAP, "buy", "1")
    position = trader.locator("#positions tbody tr")
    expect(position).to_have_count(1)
    expect(position.locator("td").nth(1)).to_have_text("long")
    expect(position.locator("td").nth(2)).to_have_text("1.000")
    expect(position.locator("td").nth(3)).to_have_text("2001.00")
    expect(position.locator("td").nth(6)).not_to_have_text("none")
    expect(trader.locator("#margin tbody tr[data-token=USDC] td").last).to_have_text("ok")
    expect(maker.locator("#positions tbody tr td").nth(1)).to_have_text("short")
    pages.shot(trader, "trader-position")
    pages.shot(maker, "maker-position")

    # closed reduce-only against the maker's bid: flat on both pages
    place(maker, SWAP, "buy", "1", "1999", post_only=True)
    expect(side_rows(trader, SWAP, "bids").locator("td.price")).to_have_text("1999.00")
    place(trader, SWAP, "sell", "1", reduce_only=True)
    expect(position).to_have_count(0)
    expect(maker.locator("#positions tbody tr")).to_have_count(0)
    place(trader, SWAP, "sell", "1", "2100", reduce_only=True)  # nothing left to reduce: the refusal, as text
    expect(trader.locator("#errors .error").first).to_contain_text("reason nothing_to_reduce")
    pages.shot(trader, "trader-flat")

    # a transfer of 25 USDC from the trader's page reaches the maker's balance
    maker_usdc = maker.locator("#balances tbody tr[data-token=USDC] td").nth(1)
    before = maker_usdc.inner_text()
    trader.select_option("#transfer-to", "0x" + cluster.genesis.participants[MAKER].address.hex())
    trader.select_option("#transfer-token", "USDC")
    trader.fill("#transfer-amount", "25")
    trader.click("#transfer-submit")
    expect(maker_usdc).to_have_text(f"{Decimal(before) + 25:.4f}")
    pages.shot(maker, "maker-got-the-transfer")

    # the emergency exit, confirmed: this channel has no chain, so the node refuses, typed
    trader.click("#exit-start")
    expect(trader.locator("#exit-dialog")).to_be_visible()
    trader.click("#exit-confirm")
    refusal = trader.locator("#errors .error").first
    expect(refusal).to_contain_text("emergency exit: cannot exit: this node has no chain configured")
    expect(refusal).to_contain_text("(code -32005, reason no_chain)")
    pages.shot(trader, "trader-exit-refused")
    assert pages.problems == [], pages.problems


def test_the_emergency_exit_from_the_page_on_a_chain(tmp_path: Path) -> None:
    """Nodes on the embedded chain (served over JSON-RPC): alice deposits, then exits from her
    node's page; the page follows the exit through the dispute window to the claim."""
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    from settlement.server import ChainServerProcess
    from tests.channel.runtime.test_onchain import build

    expect.set_options(timeout=WAIT_MS)
    shots = Path(os.environ.get("PARLEY_ARTIFACTS") or tmp_path) / "page-exit-steps"
    shots.mkdir(parents=True, exist_ok=True)
    server = ChainServerProcess()
    world = build(tmp_path, server, settle_every=10_000)  # the nodes do not settle by themselves
    try:
        start_all(world.processes)
        genesis = world.cluster.genesis
        alice = "0x" + genesis.participants[0].address.hex()
        world.adjudicator.deposit(genesis.channel_id, world.token, 100 * E9, alice)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                pages = Pages(browser, world.cluster, shots)
                page = pages.open(0)
                expect(page.locator("#balances tbody tr[data-token=USDC] td").nth(1)).to_have_text("100.0000")
                expect(page.locator("#h-chain")).to_contain_text("open: v0")
                pages.shot(page, "deposit-credited")
                page.click("#exit-start")
                page.click("#exit-cancel")  # the confirmation is a real choice: cancelling sends nothing
                expect(page.locator("#exit-dialog")).to_be_hidden()
                expect(page.locator("#exit-status")).to_have_attribute("data-phase", "idle")
                page.click("#exit-start")
                page.click("#exit-confirm")
                status = page.locator("#exit-status")
                expect(status).to_have_attribute("data-phase", "waiting")
                expect(status).to_contain_text("s of the window remaining")
                expect(page.locator("#exit-events li").first).to_contain_text("close: closing the channel with")
                expect(page.locator("#exit-start")).to_be_disabled()
                pages.shot(page, "exit-waiting")
                world.chain.increase_time(3600 + 60)  # the dispute window passes
                expect(status).to_have_attribute("data-phase", "claimed")
                expect(status).to_contain_text("claimed 100.0000 USDC")
                expect(page.locator("#h-chain")).to_contain_text("concluded")
                pages.shot(page, "exit-claimed")
                assert pages.problems == [], pages.problems
            finally:
                browser.close()
        assert world.usdc.balance_of(alice) == 100 * 10**6  # in the wallet, in the token's decimals
    finally:
        stop_all(world.processes)
        server.stop()
