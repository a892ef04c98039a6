"""The perp feed's law (channel/runtime/perp_feed.py), as a hypothesis property over random order
flow, oracle moves, checkpoints, liquidations and late transfers that re-order the suffix:

- after every step, each account's positions rebuilt from its ``positions`` snapshot and updates,
  and its last ``account`` event, equal `perps.positions_json` and `perps.account_json`, with the
  seq going up by one per update and no update that says nothing;
- the ``funding`` events are the fundings the ledger holds, each once, in order;
- the funding payments recorded per position (``parley_fundingPayments``) sum to what the
  market's funding pool holds: every settlement is recorded, and nothing else;
- once everything is certified, the ``liquidations`` events folded by op id (the last event of
  each, ``vanished`` ones dropped) are exactly what every liquidate did, all final.

It drives a replica and the feed directly (no server), as `Node.announce` does, from a 4.5x long
and short opened at the oracle's 3,000, so that the price moves make accounts liquidatable.
"""

from __future__ import annotations

from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from channel.runtime import perps
from channel.runtime.events import EventHub
from channel.runtime.perp_feed import PerpFeed
from crdt.ops import SignedOp, sign_op
from crdt.replica import Cut, Replica
from tests.channel.api.test_perp_api import ADDRESSES, KEYS, LIQUIDATOR, MAKER, ORACLE, TRADER, perp_genesis
from tests.channel.api.test_perp_stream import LocalPositions

E9 = 10**9
PERP = "ETH-PERP"
GENESIS = perp_genesis()

orders = st.tuples(st.just("order"), st.sampled_from([TRADER, MAKER, LIQUIDATOR]), st.sampled_from(["buy", "sell"]),
                   st.integers(1, 16), st.integers(-10, 10), st.sampled_from(["gtc", "ioc"]),
                   st.sampled_from([False, False, True]))
prices = st.tuples(st.just("price"), st.integers(-400, 400))  # a move of the oracle price
checkpoints = st.tuples(st.just("certify"), st.sampled_from([1_000, 3_600_000]))
liquidations = st.tuples(st.just("liquidate"), st.sampled_from([TRADER, MAKER]), st.integers(1, 16))
transfers = st.tuples(st.just("late_transfer"), st.sampled_from([TRADER, MAKER, LIQUIDATOR]),
                      st.sampled_from([TRADER, MAKER]), st.integers(1, 300), st.integers(0, 5))
closes = st.tuples(st.just("close"), st.sampled_from([TRADER, MAKER]))
steps = st.lists(st.one_of(orders, orders, orders, prices, checkpoints, checkpoints, liquidations, transfers, closes),
                 min_size=10, max_size=40)


class Channel:
    """A replica, its feed, and one subscriber of each topic (and of each account's positions)."""

    def __init__(self) -> None:
        self.replica = Replica(GENESIS)
        self.hub = EventHub()
        self.feed = PerpFeed(self.replica, self.hub, ADDRESSES[TRADER])
        self.seqs = [0] * len(KEYS)
        self.version, self.time = 0, 0
        self.liquidates: list[bytes] = []
        self.history: list[list[bytes]] = [[]]  # the heads after each step: where a late operation starts
        self.streams: dict[str, Any] = {}
        opened = [(f"positions{i}", "positions", {"account": ADDRESSES[i]}) for i in (TRADER, MAKER)]
        opened += [("account", "account", {}), ("funding", "funding", {}), ("liquidations", "liquidations", {})]
        for name, topic, params in opened:
            self.streams[name] = self.hub.open(topic, params)[1]
        self.mark = 3000
        self.step(("price", 0))  # a fresh price of 3,000: risk may open
        self.step(("order", MAKER, "sell", 15, 0, "gtc", False))  # and a 4.5x short and long open at it
        self.step(("order", TRADER, "buy", 15, 0, "ioc", False))
        self.step(("order", LIQUIDATOR, "buy", 1, 20, "gtc", False))  # a bid above the oracle: a premium, funding
        self.history = [sorted(self.replica.graph.heads)]

    def drain(self, name: str) -> list[dict[str, Any]]:
        events = []
        while True:
            try:
                events.append(self.streams[name].receive_nowait())
            except trio.WouldBlock:
                return events

    def send(self, who: int, kind: str, body: dict[str, Any], parents: list[bytes] | None = None) -> SignedOp:
        self.seqs[who] += 1
        heads = sorted(self.replica.graph.heads) if parents is None else parents
        op = sign_op(self.replica.ctx, KEYS[who], self.seqs[who], heads, kind, body)
        self.feed.update(self.replica.receive_many([op]).accepted)
        return op

    def certify(self, elapsed: int) -> None:
        self.version += 1
        self.time += elapsed
        self.replica.certify(Cut(self.version, tuple(sorted(self.replica.graph.heads)), self.time))
        self.feed.update([])

    def step(self, action: tuple[Any, ...]) -> None:
        match action:
            case ("order", who, side, qty, offset, tif, reduce_only):  # around the oracle price
                self.send(who, "order.place", {"market": PERP, "side": side, "type": "limit", "tif": tif,
                                               "price": (self.mark + offset) * E9, "qty": qty * E9 // 10,
                                               "reduce_only": reduce_only, "expires": 0})
            case ("price", move):
                self.mark = min(max(self.mark + move, 1000), 5000)
                self.send(ORACLE, "oracle.price", {"market": PERP, "price": self.mark * E9})
                self.certify(1_000)
            case ("certify", elapsed):
                self.certify(elapsed)
            case ("liquidate", who, qty):  # refused unless below maintenance margin: kept to check it vanishes
                op = self.send(LIQUIDATOR, "liquidate", {"account": ADDRESSES[who], "market": PERP,
                                                         "qty": qty * E9 // 10})
                self.liquidates.append(op.op_id)
            case ("close", who):  # the liquidator rests what closes the position, which takes it reduce-only
                size = self.replica.ledger.position(PERP, ADDRESSES[who]).size
                if size:
                    sides = ("buy", "sell") if size > 0 else ("sell", "buy")
                    for author, side, tif, reduce_only in ((LIQUIDATOR, sides[0], "gtc", False),
                                                           (who, sides[1], "ioc", True)):
                        self.send(author, "order.place", {"market": PERP, "side": side, "type": "limit", "tif": tif,
                                                          "price": self.mark * E9, "qty": abs(size),
                                                          "reduce_only": reduce_only, "expires": 0})
            case ("late_transfer", who, to, amount, back):
                if who != to:  # on heads of `back` steps ago, so it may sort before what came since
                    parents = self.history[max(0, len(self.history) - 1 - back)]
                    own = self.replica.graph.chains.get(ADDRESSES[who], {}).get(self.seqs[who], ())
                    self.send(who, "transfer", {"to": ADDRESSES[to], "token": "USDC", "amount": amount * E9},
                              sorted({*parents, *own[:1]}))
        self.history.append(sorted(self.replica.graph.heads))


@settings(max_examples=40, deadline=None)
@given(steps)
def test_the_streams_rebuild_the_ledger_after_every_step(actions: list[tuple[Any, ...]]) -> None:
    channel = Channel()
    ledger = channel.replica.ledger
    rebuilt = {i: LocalPositions() for i in (TRADER, MAKER)}
    account: dict[str, Any] = {}
    fundings: list[dict[str, Any]] = []
    liquidated: dict[str, dict[str, Any]] = {}

    def check() -> None:
        for i, local in rebuilt.items():
            for event in channel.drain(f"positions{i}"):
                local.apply(event)
            assert local.positions() == perps.positions_json(ledger, ADDRESSES[i])
        for event in channel.drain("account"):
            assert event["seq"] == account.get("seq", -1) + 1
            account.clear()
            account.update(event)
        assert {k: v for k, v in account.items() if k not in ("type", "seq")} == perps.account_json(
            ledger, ADDRESSES[TRADER])
        fundings.extend(channel.drain("funding"))
        assert fundings == [{"market": PERP, **row} for row in perps.funding_history_json(ledger, PERP, 10**6)]
        for event in channel.drain("liquidations"):
            liquidated[event["op_id"]] = event
        # every settlement is recorded: the records sum to what the market's funding pool holds (the flow
        # has no delisting, which would move the pool's dust to insurance)
        recorded = sum(paid for (market, _), rows in ledger.funding_paid.items() if market == PERP
                       for _, _, paid in rows)
        assert recorded == ledger.funding_pool.get(PERP, 0)
        assert all(paid != 0 for rows in ledger.funding_paid.values() for _, _, paid in rows)

    check()
    for action in actions:
        channel.step(action)
        check()
    for who in (TRADER, MAKER):  # touching both positions settles what they owe
        channel.step(("close", who))
        check()
    channel.certify(1_000)  # everything final
    check()
    expected = {}
    for op_id in channel.liquidates:
        done = perps.liquidation_json(op_id, ledger)
        if done is not None:
            expected[done["op_id"]] = {**done, "final": True}
    assert {op_id: {k: v for k, v in event.items() if k != "event"}
            for op_id, event in liquidated.items() if event["event"] != "vanished"} == expected
