"""Markets on the command line: `parley genesis new --market/--markets`, `parley workload
--orders` and the books, open orders and fills of `parley replay`, checked against a replica
built here from the same operations."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from channel.cli.main import app
from channel.cli.markets import markets_report
from channel.runtime import keystore
from channel.runtime.genesis_file import (
    DEMO_ETH,
    DEMO_MARKETS,
    DEMO_USDC,
    create_genesis_folder,
    load_genesis,
    save_genesis,
)
from crdt.genesis import Genesis, market_mapping
from crdt.markets import Market, MarketKind
from crdt.replica import Cut, Replica
from crdt.types import Symbol
from crdt.units import format_e9
from simulations.workload import Workload, order_mix

runner = CliRunner()
PASSWORD = "correct horse"
E9 = 10**9
TOKENS = ("--token", "USDC:6", "--token", "ETH:18", "--token", "BTC:8")
FULL_SPEC = ("ETH/USDC:spot:tick=0.01,step=0.001,min_qty=0.001,max_qty=1000,min_price=0.01,max_price=1000000,"
             "maker_fee=0.0002,taker_fee=0.0005")
ETH_USDC = Market(
    symbol="ETH/USDC", kind=MarketKind.SPOT, base=Symbol("ETH"), quote=Symbol("USDC"), tick_size=10**7,
    step_size=10**6, min_qty=10**6, max_qty=1000 * E9, min_price=10**7, max_price=10**6 * E9, maker_fee=200_000,
    taker_fee=500_000,
)
ETH_USDC_TABLE = market_mapping(ETH_USDC)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("password") / "password"
    path.write_text(PASSWORD + "\n")
    return path


def genesis_new(out: Path, password_file: Path, *args: str) -> tuple[int, str]:
    return invoke("genesis", "new", "--out", str(out), "-n", "4", *TOKENS, "--password-file", str(password_file),
                  "--light-kdf", *args)


@pytest.fixture(scope="module")
def trading_channel(tmp_path_factory: pytest.TempPathFactory, password_file: Path) -> Path:
    out = tmp_path_factory.mktemp("trading") / "channel"
    code, output = genesis_new(out, password_file, "--initial", "1000", "--market", FULL_SPEC,
                               "--market", "BTC/USDC:spot:tick=1,step=0.0001")
    assert code == 0, output
    return out


# -- genesis new -------------------------------------------------------------------------------------


def test_genesis_new_takes_a_market_in_human_units(trading_channel: Path) -> None:
    genesis = load_genesis(trading_channel / "genesis.toml")
    eth_usdc = genesis.market("ETH/USDC")
    assert eth_usdc == ETH_USDC
    btc_usdc = genesis.market("BTC/USDC")
    assert btc_usdc is not None
    assert (btc_usdc.tick_size, btc_usdc.step_size, btc_usdc.min_qty, btc_usdc.min_price) == (E9, E9 // 10**4,
                                                                                            E9 // 10**4, E9)
    # the defaults of the keys left out (see --help)
    assert (btc_usdc.max_qty, btc_usdc.max_price) == (10**6 * E9, 10**6 * E9)
    assert (btc_usdc.maker_fee, btc_usdc.taker_fee) == (200_000, 500_000)
    assert [market.symbol for market in genesis.markets] == ["BTC/USDC", "ETH/USDC"]  # sorted, as loaded


def test_a_maximum_left_out_is_rounded_down_to_the_tick(tmp_path: Path, password_file: Path) -> None:
    code, output = genesis_new(tmp_path / "ch", password_file, "--market", "ETH/USDC:spot:tick=0.3,step=0.007")
    assert code == 0, output
    [market] = load_genesis(tmp_path / "ch" / "genesis.toml").markets
    assert market.max_price == 10**6 * E9 - (10**6 * E9) % (3 * 10**8)
    assert market.max_qty % market.step_size == 0
    assert 10**6 * E9 - market.step_size < market.max_qty <= 10**6 * E9


def test_the_genesis_written_loads_back_identically(tmp_path: Path, password_file: Path) -> None:
    genesis, _ = create_genesis_folder(tmp_path / "a", 2, password=PASSWORD, tokens=[DEMO_USDC, DEMO_ETH],
                                       initial=5 * E9, markets=[ETH_USDC], light_kdf=True)
    loaded = load_genesis(tmp_path / "a" / "genesis.toml")
    assert loaded == genesis
    assert loaded.markets == (ETH_USDC,)
    save_genesis(loaded, tmp_path / "again.toml")
    assert (tmp_path / "again.toml").read_bytes() == (tmp_path / "a" / "genesis.toml").read_bytes()
    assert Genesis.from_mapping(tomllib.loads((tmp_path / "again.toml").read_text())) == genesis


def test_the_markets_written_are_a_markets_file(trading_channel: Path, tmp_path: Path, password_file: Path) -> None:
    """The [[markets]] of a genesis written by --market are what --markets reads, and give the
    same markets again."""
    written = tomllib.loads((trading_channel / "genesis.toml").read_text())["markets"]
    genesis = load_genesis(trading_channel / "genesis.toml")
    assert written == [market_mapping(market) for market in genesis.markets]
    path = tmp_path / "markets.toml"
    path.write_text(tomli_w.dumps({"markets": written}))
    code, output = genesis_new(tmp_path / "ch", password_file, "--markets", str(path))
    assert code == 0, output
    assert load_genesis(tmp_path / "ch" / "genesis.toml").markets == genesis.markets
    assert "ETH/USDC" in output  # the markets table


def test_a_markets_file_and_a_market_together(tmp_path: Path, password_file: Path) -> None:
    path = tmp_path / "markets.toml"
    path.write_text(tomli_w.dumps({"markets": [ETH_USDC_TABLE]}))
    code, output = genesis_new(tmp_path / "ch", password_file, "--markets", str(path), "--market", "BTC/USDC:spot")
    assert code == 0, output
    genesis = load_genesis(tmp_path / "ch" / "genesis.toml")
    assert [market.symbol for market in genesis.markets] == ["BTC/USDC", "ETH/USDC"]
    assert genesis.market("ETH/USDC") == ETH_USDC


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # unknown tokens
        ("DOGE/USDC:spot", "--market 'DOGE/USDC:spot': base 'DOGE': must be a token of the genesis"),
        ("ETH/EUR:spot", "quote 'EUR': must be a token of the genesis"),
        ("ETH:spot", "quote '' (from SYMBOL, which must be BASE/QUOTE)"),
        ("ETH/ETH:spot", "quote 'ETH': must differ from base"),
        # ticks, steps and limits
        ("ETH/USDC:spot:tick=0", "tick=0 (0 e9): must be positive"),
        ("ETH/USDC:spot:step=-0.001", "step=-0.001 (-1000000 e9): must be positive"),
        ("ETH/USDC:spot:min_price=0.015", "min_price=0.015 (15000000 e9): must be a positive multiple of tick_size"),
        ("ETH/USDC:spot:step=0.01,max_qty=0.015", "max_qty=0.015 (15000000 e9): must be a positive multiple"),
        ("ETH/USDC:spot:min_qty=2000000", "max_qty (default 1000000, 1000000000000000 e9): must be at least min_qty"),
        ("ETH/USDC:spot:step=0.0000000001", "step=0.0000000001: more than 9 decimal places"),
        # fees
        ("ETH/USDC:spot:taker_fee=1.5", "taker_fee=1.5 (1500000000 e9): must be in [0, 10**9)"),
        ("ETH/USDC:spot:maker_fee=-0.0001", "maker_fee=-0.0001 (-100000 e9): must be in [0, 10**9)"),
        ("ETH/USDC:spot:maker_fee=1", "maker_fee=1 (1000000000 e9): must be in [0, 10**9)"),
        # kinds
        ("ETH-PERP:perp:imr=0.2,mmr=0.3", "mmr=0.3 (300000000 e9): must be in (0, imr 200000000)"),
        ("ETH-PERP:perp:halt_checkpoints=1.5", "halt_checkpoints=1.5: must be a whole number"),
        ("ETH-PERP:perp:quote=EUR", "quote='EUR': must be a token of the genesis"),
        ("ETH-PERP:perp:cap=0", "cap=0 (0 e9): must be"),
        ("ETH/USDC:spot:imr=0.1", "unknown key 'imr'; the keys are tick"),
        ("ETH/USDC:swap", "kind 'swap': must be 'spot'"),
        # malformed specs
        ("ETH/USDC", "--market 'ETH/USDC': must be SYMBOL:KIND[:KEY=VALUE,...]"),
        ("ETH/USDC:spot:tick", "expected KEY=VALUE, got 'tick'"),
        ("ETH/USDC:spot:tick=0.01,,step=1", "expected KEY=VALUE, got ''"),
        ("ETH/USDC:spot:lot=1", "unknown key 'lot'; the keys are tick, step, min_qty"),
        ("ETH/USDC:spot:tick=1,tick=2", "tick is given twice"),
        ("ETH/USDC:spot:tick=one", "tick=one: not a decimal amount"),
        (":spot", "symbol '': must be text of 1 to 32 bytes"),
    ],
)
def test_a_bad_market_is_a_clear_error(tmp_path: Path, password_file: Path, spec: str, message: str) -> None:
    code, output = genesis_new(tmp_path / "ch", password_file, "--market", spec)
    assert code == 1, output
    assert "Traceback" not in output
    line = " ".join(output.split())
    assert line.startswith("error: ")
    assert message in line
    assert not (tmp_path / "ch").exists()  # checked before any key is made


def test_a_second_market_of_the_same_symbol_is_refused(tmp_path: Path, password_file: Path) -> None:
    code, output = genesis_new(tmp_path / "ch", password_file, "--market", "ETH/USDC:spot", "--market", "ETH/USDC:spot")
    assert code == 1
    assert "symbol 'ETH/USDC': 'ETH/USDC' is also markets[0]'s symbol" in " ".join(output.split())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"markets": [{**ETH_USDC_TABLE, "tick_size": 0}]}, "markets[0].tick_size: must be positive, got 0"),
        ({"markets": [{**ETH_USDC_TABLE, "taker_fee": E9}]}, "markets[0].taker_fee: must be in [0, 10**9)"),
        ({"markets": [{**ETH_USDC_TABLE, "base": "SOL"}]}, "markets[0].base: must be a token of the genesis"),
        ({"markets": [{**ETH_USDC_TABLE, "kind": "perp"}]}, "markets[0].imr: missing"),
        ({"markets": [{**ETH_USDC_TABLE, "lot": 1}]}, "markets[0].lot: unknown field"),
        ({"markets": [{**ETH_USDC_TABLE, "tick_size": "0.01"}]}, "markets[0].tick_size: must be an integer"),
        ({"markets": [5]}, "markets[0]: must be a table"),
        ({"markets": {"symbol": "ETH/USDC"}}, "markets must be an array of tables ([[markets]])"),
        ({"market": []}, "holds [[markets]] tables only, not 'market'"),
        ({}, "no [[markets]] tables"),
    ],
)
def test_a_bad_markets_file_is_a_clear_error(
    tmp_path: Path, password_file: Path, content: dict[str, Any], message: str
) -> None:
    path = tmp_path / "markets.toml"
    path.write_text(tomli_w.dumps(content))
    code, output = genesis_new(tmp_path / "ch", password_file, "--markets", str(path))
    assert code == 1, output
    assert "Traceback" not in output
    assert f"error: markets file {path}: " in output
    assert message in " ".join(output.split())
    assert not (tmp_path / "ch").exists()


def test_a_missing_markets_file_is_a_clear_error(tmp_path: Path, password_file: Path) -> None:
    code, output = genesis_new(tmp_path / "ch", password_file, "--markets", str(tmp_path / "absent.toml"))
    assert code == 1
    assert f"no markets file at {tmp_path / 'absent.toml'}" in output


# -- the demo's genesis ---------------------------------------------------------------------------------


def test_the_demo_genesis_trades_eth_usdc_when_it_holds_both(tmp_path: Path) -> None:
    genesis, _ = create_genesis_folder(tmp_path / "demo", 2, password=PASSWORD, tokens=[DEMO_USDC, DEMO_ETH],
                                       initial=1000 * E9, light_kdf=True)
    assert genesis.markets == DEMO_MARKETS
    assert {(b.token, b.amount) for b in genesis.initial_balances} == {("USDC", 1000 * E9), ("ETH", 1000 * E9)}
    assert DEMO_ETH.decimals == 18
    usdc_only, _ = create_genesis_folder(tmp_path / "usdc", 2, password=PASSWORD, tokens=[DEMO_USDC],
                                         initial=0, light_kdf=True)
    assert usdc_only.markets == ()
    none, _ = create_genesis_folder(tmp_path / "none", 2, password=PASSWORD, tokens=[DEMO_USDC, DEMO_ETH],
                                    initial=0, markets=[], light_kdf=True)
    assert none.markets == ()


# -- workload --orders and replay ---------------------------------------------------------------------


COUNT, SEED, ORDERS = 600, 5, 80


@pytest.fixture(scope="module")
def order_file(trading_channel: Path, password_file: Path) -> Path:
    path = trading_channel.parent / "orders.cbor"
    code, output = invoke("workload", str(trading_channel), "--out", str(path), "--count", str(COUNT), "--seed",
                          str(SEED), "--orders", str(ORDERS), "--password-file", str(password_file))
    assert code == 0, output
    return path


def direct_replica(folder: Path) -> Replica:
    """The same workload made and replayed here, without the CLI."""
    genesis = load_genesis(folder / "genesis.toml")
    keys = {key.address: key.private_key for key in keystore.load_all(folder / "keys", PASSWORD)}
    workload = Workload(genesis, [keys[p.address] for p in genesis.participants], seed=SEED, mix=order_mix(ORDERS))
    replica = Replica(genesis)
    replica.receive_many(workload.ops(COUNT))
    return replica


def hexed(data: bytes) -> str:
    return "0x" + data.hex()


def test_replay_json_shows_the_books_and_fills_of_the_replica(trading_channel: Path, order_file: Path) -> None:
    code, output = invoke("replay", str(order_file), "--genesis", str(trading_channel / "genesis.toml"), "--json")
    assert code == 0, output
    report = json.loads(output)
    replica = direct_replica(trading_channel)
    replica.ledger.check_conservation()
    assert report["state_hash"] == hexed(replica.state_hash())
    kinds = {entry["kind"] for entry in report["rejected"]}
    assert kinds <= {"order.place", "order.cancel", "order.cancel_all", "transfer", "withdraw", "lock"}
    ledger = replica.ledger
    assert set(report["markets"]) == {"BTC/USDC", "ETH/USDC"}
    fills = 0
    for symbol, market in report["markets"].items():
        book = ledger.book(symbol)
        for side, orders in (("bids", book.bids()), ("asks", book.asks())):
            assert market[side] == [
                {"order_id": hexed(o.order_id), "owner": hexed(o.owner), "price": str(o.price),
                 "remaining": str(o.remaining), "placed": o.placed}
                for o in orders
            ]
        resting = sorted([*book.bids(), *book.asks()], key=lambda o: o.placed)
        assert [(o["order_id"], o["side"], o["hold"]) for o in market["open_orders"]] == [
            (hexed(o.order_id), o.side, str(o.hold)) for o in resting
        ]
        expected = [f for f in replica.fills() if f.market == symbol]
        assert market["fills"] == [
            {"taker_order": hexed(f.taker_order), "maker_order": hexed(f.maker_order), "taker": hexed(f.taker),
             "maker": hexed(f.maker), "market": symbol, "price": str(f.price), "qty": str(f.qty),
             "taker_fee": str(f.taker_fee), "maker_fee": str(f.maker_fee), "final": False}
            for f in expected
        ]
        fills += len(expected)
    assert fills > 0
    assert report["markets"]["ETH/USDC"]["bids"]
    assert report["markets"]["ETH/USDC"]["asks"]
    assert report["fee_pool"] == {t.symbol: str(ledger.fees(t.symbol)) for t in replica.genesis.tokens}
    for participant in replica.genesis.participants:
        for token in replica.genesis.tokens:
            assert report["balances"][hexed(participant.address)][token.symbol]["held"] == str(
                ledger.held(participant.address, token.symbol)
            )


def test_a_fill_is_final_once_its_taker_is_certified(trading_channel: Path) -> None:
    replica = direct_replica(trading_channel)
    order = replica.applied_order()
    middle = order[len(order) // 2]
    replica.certify(Cut(1, (middle.op_id,), 1))
    certified = replica.graph.closure([middle.op_id])
    report = markets_report(replica)
    finals = [(fill["final"], bytes.fromhex(fill["taker_order"][2:]) in certified)
              for market in report.values() for fill in market["fills"]]
    assert all(final == inside for final, inside in finals)
    assert {final for final, _ in finals} == {True, False}


def test_replay_prints_a_summary_per_market(trading_channel: Path, order_file: Path) -> None:
    code, output = invoke("replay", str(order_file), "--genesis", str(trading_channel / "genesis.toml"))
    assert code == 0, output
    replica = direct_replica(trading_channel)
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in output.splitlines() if line.startswith("│") and "/USDC" in line}
    for market in replica.genesis.markets:
        book = replica.ledger.book(market.symbol)
        bid, ask = book.best_bid(), book.best_ask()
        fills = [f for f in replica.fills() if f.market == market.symbol]
        assert rows[market.symbol] == [
            format_e9(bid.price) if bid else "-", format_e9(ask.price) if ask else "-", str(len(book.bids())),
            str(len(book.asks())), str(len(fills)), f"{format_e9(sum(f.qty for f in fills))} {market.base}",
        ]


def test_orders_need_markets(tmp_path: Path, password_file: Path) -> None:
    code, output = invoke("genesis", "new", "--out", str(tmp_path / "plain"), "-n", "2", "--password-file",
                          str(password_file), "--light-kdf")
    assert code == 0, output
    code, output = invoke("workload", str(tmp_path / "plain"), "--orders", "50", "--password-file", str(password_file))
    assert code == 1
    assert "--orders needs markets" in " ".join(output.split())


def test_a_perp_market_on_the_command_line(tmp_path: Path, password_file: Path) -> None:
    code, output = genesis_new(tmp_path / "ch", password_file, "--market",
                               "ETH-PERP:perp:imr=0.2,mmr=0.1,funding_interval_ms=600000,cap=50000,mtb=0.02")
    assert code == 0, output
    market = load_genesis(tmp_path / "ch" / "genesis.toml").market("ETH-PERP")
    assert market is not None
    assert market.perp is not None
    assert (market.base, market.quote, market.kind) == ("ETH", "USDC", "perp")
    assert (market.perp.imr, market.perp.mmr, market.perp.funding_interval) == (2 * 10**8, 10**8, 600_000)
    assert market.perp.max_notional_at_open == (50_000 * 10**9,) * 5  # one cap a leverage, 1x to 5x
    assert (market.perp.mtb_long, market.perp.mtb_short) == (2 * 10**7, 2 * 10**7)
    assert (market.perp.oracle_staleness, market.perp.impact_notional) == (60_000, 1000 * 10**9)  # defaults
