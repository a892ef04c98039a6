"""Trading in the simulator: its markets, the genesis that holds them, and the order flow.

The markets are the demos' (`channel.runtime.genesis_file.DEMO_MARKETS`): the spot market
``ETH/USDC`` (a 0.01 USDC tick, a 0.001 ETH step, 2 bps maker and 5 bps taker fees) and the
perpetual ``ETH-PERP`` on USDC with the same grid (10% initial margin, 5% maintenance, funding
every 5 s of checkpoint time, a 10% circuit band, a 5% take bound). Every participant starts
with the scenario's initial balance of USDC, and of ETH when the spot market is on; oracles
have the oracle role (they post prices and move funds, and cannot trade), everyone else is a
trader.

`OrderFlow` draws one node's orders from its own random stream: a cancel of one of its open
orders (``cancel_share``), or a limit order on a market drawn uniformly, 70% passive (1-20
ticks on its own side of the mid, 15% of those post-only), 30% crossing the mid by 1-10 ticks
(GTC or IOC), for 0.001-1 ETH. The mid is the scenario's, the perp's as its honest oracles
post it. Only integers, and only the node's stream: the flow is a function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from channel.runtime.genesis_file import DEMO_MARKETS
from crdt.genesis import Genesis, Role, Token
from crdt.markets.book import BUY, GTC, IOC, LIMIT, POST_ONLY, SELL
from crdt.markets.config import E9, Market, MarketKind, PerpParams
from crdt.testing import make_genesis
from crdt.types import Address, OpId, Symbol
from simulations.sim.scenario import Scenario, TradingSpec

USDC = Token(Symbol("USDC"), Address(b"\x5c" * 20), 6)
ETH = Token(Symbol("ETH"), Address(b"\xe7" * 20), 18)
SPOT = DEMO_MARKETS[0]  # ETH/USDC
PERP = replace(
    SPOT, symbol="ETH-PERP", kind=MarketKind.PERP, base=Symbol("ETH"),
    perp=PerpParams(
        imr=100_000_000, mmr=50_000_000, max_notional_at_open=(10**7 * E9,) * 10, max_funding_rate=5_000_000,
        funding_interval=5_000, insurance_pool_ratio=300_000_000, circuit_band=100_000_000, halt_checkpoints=3,
        mtb_long=50_000_000, mtb_short=50_000_000, oracle_staleness=600_000, impact_notional=1000 * E9,
    ),
)
MARKETS = {"spot": SPOT, "perp": PERP}
MAX_QTY_STEPS = 1000  # 1 ETH at the 0.001 step


def markets_of(spec: TradingSpec | None) -> list[Market]:
    return [MARKETS[name] for name in spec.markets] if spec is not None else []


def make_channel(scenario: Scenario, keys: list[bytes]) -> Genesis:
    """The run's genesis: USDC for everyone (and ETH with the spot market), the markets, and
    the oracle role for the scenario's oracles."""
    spec = scenario.trading
    tokens = [USDC] + ([ETH] if spec is not None and "spot" in spec.markets else [])
    oracles = set(spec.oracles) if spec is not None else set()
    roles = [Role.ORACLE if i in oracles else Role.TRADER for i in range(len(keys))]
    return make_genesis(keys, tokens, roles=roles, initial=scenario.initial_balance_e9, markets=markets_of(spec))


class OrderFlow:
    """One trading node's orders (see the module docstring)."""

    def __init__(self, spec: TradingSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.markets = markets_of(spec)

    def next(self, open_orders: list[OpId]) -> tuple[str, dict[str, Any]]:
        """The next operation: (kind, body), given this node's open orders, by id."""
        rng = self.rng
        if open_orders and rng.random() < self.spec.cancel_share:
            return "order.cancel", {"order": rng.choice(open_orders)}
        market = rng.choice(self.markets)
        tick, mid = market.tick_size, self.spec.mid_e9
        side = rng.choice((BUY, SELL))
        toward = 1 if side == BUY else -1  # toward the other side of the book
        tif = GTC
        if rng.randrange(100) < 70:
            price = mid - toward * rng.randrange(1, 21) * tick
            tif = POST_ONLY if rng.randrange(100) < 15 else GTC
        else:
            price = mid + toward * rng.randrange(1, 11) * tick
            tif = rng.choice((GTC, IOC))
        qty = rng.randrange(1, MAX_QTY_STEPS + 1) * market.step_size
        body = {"market": market.symbol, "side": side, "type": LIMIT, "tif": tif, "price": price, "qty": qty,
                "reduce_only": False, "expires": 0}
        return "order.place", body

    def oracle_price(self, mid: int) -> int:
        """An honest oracle's post: the mid moved by up to the noise, on the tick."""
        noise = self.spec.oracle_noise_ticks
        return mid + self.rng.randint(-noise, noise) * PERP.tick_size
