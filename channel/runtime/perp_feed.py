"""Live perpetual data for the API's subscriptions: positions, account margin, funding, liquidations.

Like `channel.runtime.market_feed`, the node calls `PerpFeed.update` from `Node.announce`, after
every batch of operations its replica applied and after every checkpoint it certified. Every
event is in the JSON shapes of `channel.runtime.perps` (what the parley_* perp methods return).
Topics, each published only while someone subscribes:

- ``positions`` (optional ``account``, this node's participant by default): first ``{type:
  "snapshot", account, seq, positions}`` (`perps.positions_json` of the account), then for each
  change ``{type: "update", account, seq, positions, closed}``: the positions that opened or
  changed (size, entry, but also a new mark price, funding owed or liquidation price) and the
  markets whose position closed. ``seq`` counts the account's updates one by one, as a book's
  deltas do: a client that sees a gap subscribes again.
- ``account`` (optional ``account``): first ``{type: "snapshot", seq, ...}`` with
  `perps.account_json`, then ``{type: "update", seq, ...}`` with the whole of it each time any
  part changed (collateral, value, margins, health, positions).
- ``funding`` (optional ``market``, a perp market): each funding of a market as a checkpoint
  applies it, ``{market, version, time, rate, index, mark_price}`` (an entry of
  `perps.funding_history_json`). Fundings happen in certified checkpoints only, so they are
  final when sent and never change. No snapshot: ``parley_fundingHistory`` gives the past.
- ``liquidations`` (optional ``market``): each liquidate that took effect, as
  `perps.liquidation_json` with ``event`` and ``final``: ``appeared``, ``changed`` (a late
  operation moved what it did, or it became final) or ``vanished`` (a late operation made it
  refused, e.g. the account was no longer below maintenance margin). No snapshot, as trades.

Invariants, and why they hold:
- a state rebuilt from a snapshot and its updates is the replica's after every update: the feed
  keeps what it last published of each watched account, and trio runs a change of the replica
  and the update that follows it with no checkpoint between them (`Node.announce` is called
  synchronously by every receive path and by certify), so at every checkpoint, when a
  subscription can begin, that copy is the replica's state;
- it costs what is watched: an update reads the positions and margin of each watched account
  (a handful of perp markets each) and compares them with the copy; fundings are compared by
  count per market; a liquidate is looked up while it is tentative, only (once final, nothing
  can change it), so the feed never scans the history;
- nothing already known is news: the fundings the node holds when the feed starts are taken as
  published, and a liquidate is followed from the batch that carried it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from channel.runtime import perps
from channel.runtime.events import EventHub, Subscriber
from crdt.ops import SignedOp
from crdt.replica import Replica
from crdt.types import Address, OpId

LIQUIDATE = "liquidate"
POSITIONS, ACCOUNT, FUNDING, LIQUIDATIONS = "positions", "account", "funding", "liquidations"


def watched_account(subscriber: Subscriber, default: Address) -> Address:
    """The account a positions or account subscriber follows (the API checks it is a participant)."""
    account: Address | None = subscriber.params.get("account")
    return default if account is None else account


class PerpFeed:
    """The perpetual topics of one node's `EventHub`, kept from its replica (see the module)."""

    def __init__(self, replica: Replica, events: EventHub, account: Address) -> None:
        self.replica = replica
        self.events = events
        self.account = account
        # per watched account: the positions (by market) and the account JSON last published, and seqs
        self._positions: dict[Address, dict[str, dict[str, Any]]] = {}
        self._accounts: dict[Address, dict[str, Any]] = {}
        self._seq: dict[tuple[str, Address], int] = {}
        ledger = replica.ledger
        self._fundings = {market: len(ledger.funding_history.get(market, ())) for market in perps.perp_markets(ledger)}
        self._liquidations: dict[OpId, dict[str, Any] | None] = {}  # tentative liquidates -> what was published
        events.greeters[POSITIONS] = self._greet_positions
        events.greeters[ACCOUNT] = self._greet_account

    def update(self, ops: Sequence[SignedOp]) -> None:
        """Publish what `ops` (just applied; none after a certify) changed."""
        self._publish_positions()
        self._publish_accounts()
        self._publish_fundings()
        self._publish_liquidations(ops)

    # -- positions and accounts ----------------------------------------------------------------------

    def _read_positions(self, account: Address) -> dict[str, dict[str, Any]]:
        return {row["market"]: row for row in perps.positions_json(self.replica.ledger, account)}

    def _greet_positions(self, subscriber: Subscriber) -> None:
        account = watched_account(subscriber, self.account)
        if account not in self._positions:
            self._positions[account] = self._read_positions(account)
        self.events.deliver(subscriber, {
            "type": "snapshot", "account": perps.hex0x(account), "seq": self._seq.get((POSITIONS, account), 0),
            "positions": list(self._positions[account].values()),
        })

    def _greet_account(self, subscriber: Subscriber) -> None:
        account = watched_account(subscriber, self.account)
        if account not in self._accounts:
            self._accounts[account] = perps.account_json(self.replica.ledger, account)
        self.events.deliver(subscriber, {
            "type": "snapshot", "seq": self._seq.get((ACCOUNT, account), 0), **self._accounts[account],
        })

    def _watchers(self, topic: str) -> dict[Address, list[Subscriber]]:
        found: dict[Address, list[Subscriber]] = {}
        for subscriber in self.events.watching(topic):
            found.setdefault(watched_account(subscriber, self.account), []).append(subscriber)
        return found

    def _next_seq(self, topic: str, account: Address) -> int:
        seq = self._seq[(topic, account)] = self._seq.get((topic, account), 0) + 1
        return seq

    def _publish_positions(self) -> None:
        watchers = self._watchers(POSITIONS)
        for account in [a for a in self._positions if a not in watchers]:  # no one reads it any more
            del self._positions[account]
        for account, subscribers in sorted(watchers.items()):
            old, new = self._positions.get(account, {}), self._read_positions(account)
            if new == old:
                continue
            self._positions[account] = new
            event = {
                "type": "update", "account": perps.hex0x(account), "seq": self._next_seq(POSITIONS, account),
                "positions": [row for market, row in new.items() if old.get(market) != row],
                "closed": sorted(market for market in old if market not in new),
            }
            for subscriber in subscribers:
                self.events.deliver(subscriber, event)

    def _publish_accounts(self) -> None:
        watchers = self._watchers(ACCOUNT)
        for account in [a for a in self._accounts if a not in watchers]:
            del self._accounts[account]
        for account, subscribers in sorted(watchers.items()):
            new = perps.account_json(self.replica.ledger, account)
            if new == self._accounts.get(account):
                continue
            self._accounts[account] = new
            event = {"type": "update", "seq": self._next_seq(ACCOUNT, account), **new}
            for subscriber in subscribers:
                self.events.deliver(subscriber, event)

    # -- funding -------------------------------------------------------------------------------------

    def _publish_fundings(self) -> None:
        ledger = self.replica.ledger
        for market, published in self._fundings.items():
            history = ledger.funding_history.get(market, ())
            if len(history) == published:
                continue
            self._fundings[market] = len(history)
            if len(history) < published or not self.events.wants(FUNDING, market):
                continue  # (shorter: a certified history never is; nothing to announce then)
            for row in perps.funding_history_json(ledger, market, len(history) - published):
                self.events.publish(FUNDING, {"market": market, **row}, market)

    # -- liquidations --------------------------------------------------------------------------------

    def _publish_liquidations(self, ops: Sequence[SignedOp]) -> None:
        replica = self.replica
        for op in ops:
            if op.kind == LIQUIDATE and op.op_id not in self._liquidations:
                self._liquidations[op.op_id] = None
        if not self._liquidations:
            return
        certified = replica.is_final
        wanted = self.events.wants(LIQUIDATIONS)
        for op_id in list(self._liquidations):  # in the order they arrived
            old = self._liquidations[op_id]
            found = perps.liquidation_json(op_id, replica.ledger)
            new = None if found is None else {**found, "final": certified(op_id)}
            if new != old:
                if old is not None and new is None:
                    event: dict[str, Any] | None = {"event": "vanished", **old, "final": certified(op_id)}
                elif new is not None:
                    event = {"event": "appeared" if old is None else "changed", **new}
                else:
                    event = None
                if event is not None and wanted:
                    self.events.publish(LIQUIDATIONS, event, event["market"])
                self._liquidations[op_id] = new
            if certified(op_id):  # final or refused for good: it cannot change any more
                del self._liquidations[op_id]

