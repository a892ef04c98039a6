"""What the local API may ask of a node: values in, values out.

`channel.api.server` serves any `NodeService`; `channel.runtime.node.Node` is the one the node
runs. The API never reaches into the replica, the hash graph, the consensus driver or the store:
a method here returns a fresh value (JSON-ready dicts and lists, a frozen `Certificate`), so
nothing the API holds can change under it or be changed through it.

Errors: `submit` raises `RequestRejected` (replay would give the operation no effect: nothing
signed), `NotReady` (the node does not know its own last seq yet) or `StorageUnavailable` (the
store refused the write); the API maps each to its JSON-RPC code.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from channel.errors import ChannelError
from channel.runtime.events import Subscriber
from crdt.certificate import Certificate
from crdt.genesis import Genesis
from crdt.ledger import Reason


class RequestRejected(ChannelError):
    """A client request that replay would give no effect; nothing was signed."""

    def __init__(self, reason: Reason | str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = str(reason)


class NotReady(ChannelError):
    """The node does not know its own last seq yet (its store is new); nothing was signed."""


class Events(Protocol):
    def open(self, topic: str) -> tuple[Subscriber, trio.MemoryReceiveChannel[dict[str, Any]]]: ...

    def close(self, subscriber: Subscriber) -> None: ...


class NodeService(Protocol):
    @property
    def genesis(self) -> Genesis: ...

    @property
    def events(self) -> Events: ...

    async def submit(self, kind: str, body: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
        """Sign, store, apply and gossip; ``{op_id, seq, status}``."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def peers(self) -> dict[str, Any]: ...

    def balances(self) -> dict[str, dict[str, dict[str, int]]]: ...

    def operation(self, op_id: bytes) -> dict[str, Any]: ...

    def heads(self) -> dict[str, Any]: ...

    def checkpoints(self) -> list[dict[str, Any]]: ...

    def certificate(self, version: int | None = None) -> Certificate | None: ...

    def evidence(self) -> list[dict[str, Any]]: ...

    def missing_parents(self) -> int: ...
