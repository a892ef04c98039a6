"""Perpetual markets in the genesis (crdt/genesis.py, crdt/markets/config.py `PerpParams`):
a perp market round-trips through its TOML table, every bad perpetual field is refused with a
typed error naming it (issue 13; positions are in test_perp_positions.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from crdt import testing
from crdt.genesis import Genesis, InvalidMarket, market_mapping
from crdt.markets.config import MARKET_FIELDS, PERP_FIELDS, Market, MarketKind, PerpParams
from tests.crdt.crdt_support import ADJUDICATOR, KEYS, TOKENS, USDC

E9 = 10**9
ETH_PERP = Market(
    symbol="ETH-PERP", kind=MarketKind.PERP, base="ETH", quote=USDC.symbol,  # type: ignore[arg-type]
    tick_size=10**7, step_size=10**6, min_qty=10**6, max_qty=1000 * E9, min_price=10**7, max_price=10**6 * E9,
    maker_fee=1_000_000, taker_fee=2_000_000,
    perp=PerpParams(
        imr=200_000_000, mmr=100_000_000,  # 20% (5x at most), 10%
        max_notional_at_open=(10**6 * E9, 500_000 * E9, 200_000 * E9, 100_000 * E9, 50_000 * E9),
        max_funding_rate=1_000_000, funding_interval=3_600_000, insurance_pool_ratio=300_000_000,
        circuit_band=100_000_000, halt_checkpoints=3, mtb_long=50_000_000, mtb_short=50_000_000,
        oracle_staleness=60_000, impact_notional=50 * E9,
    ),
)


def genesis(*markets: Market) -> Genesis:
    return testing.make_genesis(KEYS[:4], TOKENS, initial=100 * E9, adjudicator=ADJUDICATOR, markets=markets)


def test_a_perp_market_round_trips_through_its_table() -> None:
    g = genesis(ETH_PERP)
    assert g.market("ETH-PERP") == ETH_PERP
    table = market_mapping(ETH_PERP)
    assert sorted(table) == sorted(MARKET_FIELDS + PERP_FIELDS)
    assert table["kind"] == "perp"
    assert table["max_notional_at_open"][0] == 10**6 * E9
    assert Genesis.from_mapping(g.to_mapping()) == g


BAD_PERP: list[tuple[dict[str, Any], str]] = [
    ({"imr": 0}, "imr"), ({"imr": E9}, "imr"), ({"imr": "1"}, "imr"),
    ({"mmr": 0}, "mmr"), ({"mmr": 200_000_000}, "mmr"), ({"mmr": 300_000_000}, "mmr"),
    ({"max_funding_rate": 0}, "max_funding_rate"), ({"max_funding_rate": E9 + 1}, "max_funding_rate"),
    ({"funding_interval": 0}, "funding_interval"), ({"insurance_pool_ratio": -1}, "insurance_pool_ratio"),
    ({"insurance_pool_ratio": E9 + 1}, "insurance_pool_ratio"), ({"circuit_band": 0}, "circuit_band"),
    ({"halt_checkpoints": -1}, "halt_checkpoints"), ({"mtb_long": 0}, "mtb_long"),
    ({"mtb_short": E9 + 1}, "mtb_short"), ({"oracle_staleness": 0}, "oracle_staleness"),
    ({"impact_notional": 0}, "impact_notional"),
    ({"max_notional_at_open": [E9] * 4}, "max_notional_at_open"),  # 5 leverages for imr 20%
    ({"max_notional_at_open": [E9, 2 * E9, E9, E9, E9]}, "max_notional_at_open"),  # grows with leverage
    ({"max_notional_at_open": [E9, E9, E9, E9, 0]}, "max_notional_at_open"),
    ({"max_notional_at_open": "1"}, "max_notional_at_open"),
    ({"base": ""}, "base"), ({"base": "USDC"}, "quote"), ({"quote": "ETH"}, "quote"),
    ({"kind": "future"}, "kind"), ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("change", "field"), BAD_PERP)
def test_a_bad_perp_field_is_refused_by_name(change: dict[str, Any], field: str) -> None:
    mapping = genesis(ETH_PERP).to_mapping()
    mapping["markets"] = [{**mapping["markets"][0], **change}]
    with pytest.raises(InvalidMarket) as caught:
        Genesis.from_mapping(mapping)
    assert (caught.value.index, caught.value.field) == (0, field)


def test_a_perp_table_missing_a_perp_field_names_it() -> None:
    mapping = genesis(ETH_PERP).to_mapping()
    table = dict(mapping["markets"][0])
    del table["oracle_staleness"]
    mapping["markets"] = [table]
    with pytest.raises(InvalidMarket) as caught:
        Genesis.from_mapping(mapping)
    assert caught.value.field == "oracle_staleness"


def test_equal_caps_at_higher_leverage_are_allowed() -> None:
    flat = replace(ETH_PERP, perp=replace(ETH_PERP.perp, max_notional_at_open=(E9,) * 5))  # type: ignore[type-var]
    assert genesis(flat).market("ETH-PERP") == flat


