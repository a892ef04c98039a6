"""Perpetual markets benchmark: the cost of a checkpoint's `close_epoch` as open positions grow,
and of perp fills (a margin check on every risk-increasing fill) beside spot fills.

    python benchmarks/perp.py [--positions 1000] [--fills 4000] [--seed 1]

Prints one JSON line per measurement, each with its baseline measured in the same run
(interleaved, best of five, in CPU time of this process, as benchmarks/ingest.py does):

- ``close_epoch``: a checkpoint of a perp market (oracle median, circuit breaker, a premium
  sample from the book, a funding interval crossed) with ``positions`` open positions, beside
  the same checkpoint with none open: funding is an index per market, settled when a position
  is touched, so the cost must not grow with the positions (issue 13's target: under 10 ms at
  1,000 positions);
- ``fills``: a crossing flow of ioc orders against resting makers, the same flow on a spot
  market and on a perp market: ``perp_per_s`` against ``spot_per_s``, accept + apply of decoded
  operations (each perp fill checks both accounts' margin when their risk grows).

With the compiled crdt core both builds are measured, as benchmarks/book.py does.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, pure_too
from benchmarks.ingest import best_of
from crdt.genesis import Genesis, InitialBalance, Participant, Role, Token
from crdt.hashing import keccak256
from crdt.ledger import Ledger
from crdt.markets import Market, MarketKind
from crdt.markets.config import PerpParams
from crdt.ops import SignedOp, address_of, sign_op
from crdt.types import Symbol

E9 = 10**9
USDC = Token(Symbol("USDC"), bytes.fromhex("a0" * 20), 6)
ETH = Token(Symbol("ETH"), bytes.fromhex("c0" * 20), 18)
SPOT = Market(symbol="ETH/USDC", kind=MarketKind.SPOT, base=ETH.symbol, quote=USDC.symbol, tick_size=10**7,
              step_size=10**6, min_qty=10**6, max_qty=1000 * E9, min_price=10**7, max_price=10**6 * E9,
              maker_fee=200_000, taker_fee=500_000)
PERP = replace(SPOT, symbol="ETH-PERP", kind=MarketKind.PERP, base=Symbol("ETH"), perp=PerpParams(
    imr=100_000_000, mmr=50_000_000, max_notional_at_open=(10**9 * E9,) * 10, max_funding_rate=1_000_000,
    funding_interval=1_000, insurance_pool_ratio=300_000_000, circuit_band=500_000_000, halt_checkpoints=1,
    mtb_long=100_000_000, mtb_short=100_000_000, oracle_staleness=3_600_000, impact_notional=1000 * E9,
))


def channel(traders: int) -> tuple[Genesis, list[bytes]]:
    """`traders` traders (and market makers) and one oracle, each holding 1,000,000 USDC and
    1,000 ETH."""
    keys = [keccak256(b"perp-bench" + i.to_bytes(4, "big")) for i in range(traders + 1)]
    keys.sort(key=address_of)
    roles = [Role.ORACLE] + [Role.MARKET_MAKER] * traders
    participants = [Participant(address_of(k), role) for k, role in zip(keys, roles, strict=True)]
    genesis = Genesis.create(
        chain_id=1, adjudicator=b"\x11" * 20, participants=participants, tokens=[USDC, ETH],
        initial_balances=[InitialBalance(p.address, t, 10**6 * E9 if t == USDC.symbol else 1000 * E9)
                          for p in participants for t in (USDC.symbol, ETH.symbol)],
        markets=[SPOT, PERP],
    )
    return genesis, keys


class Signer:
    def __init__(self, genesis: Genesis, keys: list[bytes]) -> None:
        self.genesis, self.keys = genesis, keys
        self.seqs = [0] * len(keys)

    def sign(self, who: int, kind: str, body: dict[str, Any]) -> SignedOp:
        self.seqs[who] += 1
        return sign_op(self.genesis.context(), self.keys[who], self.seqs[who], [], kind, body)


def order(market: str, side: str, price: int, qty: int, tif: str = "gtc") -> dict[str, Any]:
    return {"market": market, "side": side, "type": "limit", "tif": tif, "price": price, "qty": qty,
            "reduce_only": False, "expires": 0}


def with_positions(count: int, seed: int) -> tuple[Ledger, int]:
    """A ledger with `count` open perp positions (pairs of accounts against each other at
    prices around 3,000) and a book of resting orders both sides; its last checkpoint version."""
    genesis, keys = channel(max(count, 2))
    signer, ledger, rng = Signer(genesis, keys), Ledger(genesis), random.Random(seed)
    assert ledger.apply(signer.sign(0, "oracle.price", {"market": "ETH-PERP", "price": 3000 * E9})) is None
    ledger.close_epoch(1, 1)
    for i in range(1, count, 2):
        price = (3000 + rng.randrange(-20, 20)) * E9
        assert ledger.apply(signer.sign(i, "order.place", order("ETH-PERP", "sell", price, E9))) is None
        assert ledger.apply(signer.sign(i + 1, "order.place", order("ETH-PERP", "buy", price, E9, "ioc"))) is None
    for level in range(1, 21):  # a book for the premium's impact prices
        ledger.apply(signer.sign(1, "order.place", order("ETH-PERP", "buy", (2900 - level) * E9, E9)))
        ledger.apply(signer.sign(2, "order.place", order("ETH-PERP", "sell", (3100 + level) * E9, E9)))
    return ledger, 1


def checkpoint_cost(positions: int, seed: int) -> None:
    busy, version = with_positions(positions, seed)
    idle, _ = with_positions(2, seed)
    counts = {"busy": len(busy.positions), "idle": len(idle.positions)}
    state = {"busy": version, "idle": version}

    def close(ledger: Ledger, name: str) -> None:
        frame = ledger.begin()
        for _ in range(10):  # ten checkpoints, each crossing a funding interval (1 s)
            state[name] += 1
            ledger.close_epoch(state[name], state[name] * 1_000)
        ledger.end()
        ledger.undo(frame)  # the same state again for the next round
        state[name] -= 10

    best = best_of(5, busy=lambda: close(busy, "busy"), idle=lambda: close(idle, "idle"))
    emit(measure="close_epoch", positions=counts["busy"], ms=round(best["busy"] / 10 * 1e3, 3),
         baseline_positions=counts["idle"], baseline_ms=round(best["idle"] / 10 * 1e3, 3),
         target_ms=10)


def crossing(genesis: Genesis, keys: list[bytes], market: str, fills: int) -> list[SignedOp]:
    """Makers rest asks, takers lift them with ioc orders, in turn."""
    signer, ops = Signer(genesis, keys), []
    if market == "ETH-PERP":
        ops.append(signer.sign(0, "oracle.price", {"market": market, "price": 3000 * E9}))
    traders = len(keys) - 1
    for i in range(fills):
        maker, taker = 1 + (2 * i) % traders, 1 + (2 * i + 1) % traders
        ops.append(signer.sign(maker, "order.place", order(market, "sell", 3000 * E9, E9 // 100)))
        ops.append(signer.sign(taker, "order.place", order(market, "buy", 3000 * E9, E9 // 100, "ioc")))
    return ops


def fill_rates(fills: int) -> None:
    genesis, keys = channel(20)
    spot, perp = crossing(genesis, keys, "ETH/USDC", fills), crossing(genesis, keys, "ETH-PERP", fills)

    def run(ops: list[SignedOp], prices: bool) -> Ledger:
        ledger = Ledger(genesis)
        start = 0
        if prices:
            ledger.apply(ops[0])
            ledger.close_epoch(1, 1)
            start = 1
        for op in ops[start:]:
            ledger.apply(op)
        return ledger

    best = best_of(5, spot=lambda: run(spot, False), perp=lambda: run(perp, True))
    made = run(perp, True)
    emit(measure="fills", fills=made.fill_count, positions=len(made.positions),
         spot_per_s=round(2 * fills / best["spot"]), perp_per_s=round(2 * fills / best["perp"]),
         perp_over_spot=round(best["spot"] / best["perp"], 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=1000)
    parser.add_argument("--fills", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--this-build-only", action="store_true", help="Skip the pure-Python build's run.")
    args = parser.parse_args()
    checkpoint_cost(args.positions, args.seed)
    fill_rates(args.fills)
    pure_too()


if __name__ == "__main__":
    main()
