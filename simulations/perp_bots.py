"""The reference bots of the perpetual markets, on the plain API client: a liquidator
(`parley bot liquidator`) and an oracle feeder (`parley bot oracle`). Each is a few dozen lines
on purpose: read them, then write your own.

- `LiquidatorBot` asks its node for the accounts below maintenance margin
  (``parley_liquidatable``) and takes each of their positions, the largest first, skipping
  halted markets. A refusal (the account recovered, another liquidator was first: replay says
  ``not_liquidatable`` or ``no_position``) is counted and the bot goes on.
- `OracleFeeder` posts one price a cycle from a source: the lines of a file (one price in whole
  quote units each; blank lines and ``#`` comments skipped), or a seeded random walk (``step_bps``
  basis points up or down each cycle, reproducible from its seed), rounded to the market's tick.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from channel.api.client import ApiError, Client

E9 = 10**9


@dataclass
class LiquidatorBot:
    client: Client
    taken: list[dict[str, Any]] = field(default_factory=list)  # what each successful liquidate did
    refused: dict[str, int] = field(default_factory=dict)  # refusals by reason

    def step(self) -> int:
        """One pass over the liquidatable accounts; how many positions it took."""
        halted = {row["market"] for row in self.client.mark_prices() if row["halted"]}
        count = 0
        for row in self.client.liquidatable():
            for position in row["positions"]:
                if position["market"] in halted:
                    continue
                try:
                    done = self.client.liquidate(row["account"], position["market"], int(position["size"]))
                except ApiError as exc:
                    reason = str(exc.data.get("reason", exc.message)) if isinstance(exc.data, dict) else exc.message
                    self.refused[reason] = self.refused.get(reason, 0) + 1
                    continue
                self.taken.append(done["liquidation"] or {"op_id": done["op_id"]})
                count += 1
        return count

    def run(self, keep_going: Callable[[], bool], interval: float = 1.0) -> None:
        while keep_going():
            self.step()
            time.sleep(interval)


def file_prices(path: Path) -> Iterator[Decimal]:
    """The prices in a file, one a line (whole quote units)."""
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            yield Decimal(text)


def random_walk(seed: int, start: Decimal, step_bps: int) -> Iterator[Decimal]:
    """A seeded walk from `start`: each step up or down `step_bps` basis points."""
    rng = random.Random(f"oracle:{seed}")
    price = start
    while True:
        yield price
        price = price * (10_000 + rng.choice((-step_bps, step_bps))) / 10_000


@dataclass
class OracleFeeder:
    client: Client
    market: str
    prices: Iterator[Decimal]
    posted: list[int] = field(default_factory=list)  # e9, in order
    tick: int = 0  # the market's tick (e9), read from the node at the first step

    def step(self) -> bool:
        """Post the next price; False once the source is exhausted."""
        price = next(self.prices, None)
        if price is None:
            return False
        if not self.tick:
            self.tick = next(int(m["tick_size"]) for m in self.client.markets() if m["symbol"] == self.market)
        tick = self.tick
        e9 = int(price * E9) // tick * tick
        self.client.post_price(self.market, max(e9, tick))
        self.posted.append(max(e9, tick))
        return True

    def run(self, keep_going: Callable[[], bool], interval: float = 1.0) -> None:
        while keep_going() and self.step():
            time.sleep(interval)
