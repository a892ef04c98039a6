"""What the local API may ask of a node: values in, values out.

`channel.api.server` serves any `NodeService`; `channel.runtime.node.Node` is the one the node
runs. The API never reaches into the replica, the hash graph, the consensus driver or the store:
a method here returns a fresh value (JSON-ready dicts and lists, a frozen `Certificate`), so
nothing the API holds can change under it or be changed through it.

Errors: `submit` raises `RequestRejected` (replay would give the operation no effect: nothing
signed), `NotReady` (the node does not know its own last seq yet) or `StorageUnavailable` (the
store refused the write); a trading read of a market the genesis does not hold raises
`UnknownMarket`. The API maps each to its JSON-RPC code.

The trading reads return the shapes of `channel.runtime.trading` (e9 integers as decimal
strings), which the WebSocket streams of books, trades, orders and fills share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from channel.errors import ChannelError
from channel.runtime.events import Subscriber
from channel.runtime.metrics import NodeMetrics
from crdt.certificate import Certificate
from crdt.genesis import Genesis
from crdt.ledger import Reason
from crdt.types import Address


class RequestRejected(ChannelError):
    """A client request that replay would give no effect; nothing was signed."""

    def __init__(self, reason: Reason | str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = str(reason)


class RequestIdConflict(ChannelError):
    """A request id already used for another request; nothing was signed."""


RequestRefused = RequestRejected | RequestIdConflict  # what refuses one item of a batch


@dataclass(frozen=True, slots=True)
class Submission:
    """One operation to sign (`NodeService.submit_many`): as `submit`'s arguments."""

    kind: str
    body: dict[str, Any]
    request_id: str | None = None
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class NotReady(ChannelError):
    """The node does not know its own last seq yet (its store is new); nothing was signed."""


class UnknownMarket(ChannelError):
    """A trading read named a market that is not in the genesis."""

    def __init__(self, market: str) -> None:
        super().__init__(f"no market {market!r} in this channel")
        self.market = market


NO_CHAIN, NO_CERTIFICATE, ALREADY_EXITING = "no_chain", "no_certificate", "already_exiting"


class ExitRefused(ChannelError):
    """The emergency exit cannot start; `reason` is ``no_chain`` (no chain configured),
    ``no_certificate`` (no checkpoint certified yet) or ``already_exiting``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Events(Protocol):
    def open(
        self, topic: str, params: Mapping[str, Any] | None = None
    ) -> tuple[Subscriber, trio.MemoryReceiveChannel[dict[str, Any]]]:
        """A subscription to `topic` (with `params` the API checked: a ``market``, a book's
        ``depth``); a book's snapshot is queued on it before this returns."""
        ...

    def close(self, subscriber: Subscriber) -> None: ...


class NodeService(Protocol):
    @property
    def genesis(self) -> Genesis: ...

    @property
    def events(self) -> Events: ...

    @property
    def address(self) -> Address:
        """This node's participant: the author of what it signs."""
        ...

    async def submit(
        self, kind: str, body: dict[str, Any], request_id: str | None = None,
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Sign, store, apply and gossip; ``{op_id, seq, status}``. A reused `request_id` gives
        the first answer, or `RequestIdConflict` for another request; `prepare` completes the
        body after that check."""
        ...

    async def submit_many(self, items: Sequence[Submission]) -> list[dict[str, Any] | RequestRefused]:
        """A batch, stored in one commit: a receipt or the refusal of each item, in order."""
        ...

    def stats(self) -> dict[str, Any]: ...

    @property
    def metrics(self) -> NodeMetrics:
        """The latency histograms `/metrics` serves."""
        ...

    def peers(self) -> dict[str, Any]: ...

    def balances(self) -> dict[str, dict[str, dict[str, int]]]: ...

    def operation(self, op_id: bytes) -> dict[str, Any]: ...

    def heads(self) -> dict[str, Any]: ...

    def checkpoints(self) -> list[dict[str, Any]]: ...

    def certificate(self, version: int | None = None) -> Certificate | None: ...

    def evidence(self) -> list[dict[str, Any]]: ...

    def missing_parents(self) -> int: ...

    # -- the emergency exit (`channel.runtime.exits`) ---------------------------------------------

    def start_exit(self) -> dict[str, Any]:
        """Start the emergency exit in the background (`ExitRefused` if it cannot); its status."""
        ...

    def exit_status(self) -> dict[str, Any]:
        """The exit's phase and numbers (``idle`` before any)."""
        ...

    # -- trading (every market argument may raise `UnknownMarket`) ------------------------------

    def markets(self) -> list[dict[str, Any]]:
        """Every market of the genesis, its configuration (`channel.runtime.trading.market_json`)."""
        ...

    def order_book(self, market: str, depth: int, level: int) -> dict[str, Any]:
        """The market's book now: level 2 (a [price, qty] per price) or 3 (every order), the
        first `depth` prices of each side, best first, with the best bid and ask and the
        certified version it was read at."""
        ...

    def open_orders(self, market: str | None, account: Address | None) -> list[dict[str, Any]]:
        """The open orders, oldest placement first (of one market, of one account, if given)."""
        ...

    def order(self, order_id: bytes) -> dict[str, Any] | None:
        """Everything about one order (status, fills, remaining, filled, final); None if this
        node holds no order.place with that id."""
        ...

    def my_trades(self, market: str | None, limit: int) -> list[dict[str, Any]]:
        """The last `limit` fills of this node's participant, oldest first, each with its side,
        liquidity (taker or maker) and the fee it paid."""
        ...

    def trades(self, market: str, limit: int) -> list[dict[str, Any]]:
        """The market's last `limit` fills, oldest first."""
        ...

    def sweep_price(self, market: str, side: str, qty: int) -> int | None:
        """The worst price a taker of `qty` on `side` meets in the book now (the whole other
        side if it holds less); None if the other side is empty. A market order without a
        price uses it as its bound."""
        ...

    # -- perpetual markets (the shapes of `channel.runtime.perps`) ------------------------------

    def positions(self, account: Address | None = None) -> list[dict[str, Any]]:
        """Every open perp position (of one account, if given), valued at its market's price."""
        ...

    def account(self, account: Address) -> dict[str, Any]:
        """An account's cross margin per collateral token (value, margins, free collateral,
        health) and its positions."""
        ...

    def mark_prices(self) -> list[dict[str, Any]]:
        """Each perp market's price, freshness, halt, funding index and rate, open interest."""
        ...

    def funding_history(self, market: str, limit: int = 100) -> list[dict[str, Any]]:
        """A perp market's last `limit` fundings, oldest first."""
        ...

    def funding_payments(self, account: Address, market: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """An account's last `limit` funding settlements (of one perp market), oldest first."""
        ...

    def liquidatable(self) -> list[dict[str, Any]]:
        """The accounts below maintenance margin, with their positions."""
        ...

    def liquidation(self, op_id: bytes) -> dict[str, Any] | None:
        """What a liquidate did, if it took effect."""
        ...
