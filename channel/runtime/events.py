"""Node events for API subscribers: a fan-out that drops a subscriber who cannot keep up.

A subscriber names a topic and, for the market topics, parameters (``{"market": ...}`` and a
book's ``depth``; the API checks them). A topic may have a greeter, which `open` calls with
each new subscriber before anything else can be published to it, so that what the greeter
sends (a book's snapshot) comes first and matches the state the next event changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

SUBSCRIBER_BUFFER = 1024  # events queued per subscriber before it is dropped


@dataclass(slots=True)
class Subscriber:
    topic: str
    send: trio.MemorySendChannel[dict[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    dropped: bool = False

    @property
    def market(self) -> str | None:
        """The market it asked for (None: every market)."""
        market: str | None = self.params.get("market")
        return market


Greeter = Callable[[Subscriber], None]


@dataclass(slots=True)
class EventHub:
    """Fan-out of node events to API subscribers. A subscriber that cannot keep up is dropped
    (its channel closes, `dropped` is set) instead of slowing the node down."""

    subscribers: list[Subscriber] = field(default_factory=list)
    greeters: dict[str, Greeter] = field(default_factory=dict)  # topic -> what a new subscriber gets first

    def open(
        self, topic: str, params: Mapping[str, Any] | None = None
    ) -> tuple[Subscriber, trio.MemoryReceiveChannel[dict[str, Any]]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        subscriber = Subscriber(topic, send, dict(params or {}))
        self.subscribers.append(subscriber)
        greet = self.greeters.get(topic)
        if greet is not None:
            greet(subscriber)
        return subscriber, receive

    def close(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        subscriber.send.close()

    def watching(self, topic: str, market: str | None = None) -> list[Subscriber]:
        """The subscribers of `topic`; with a `market`, those that asked for it or for every market."""
        return [
            s for s in self.subscribers
            if s.topic == topic and (market is None or s.market is None or s.market == market)
        ]

    def wants(self, topic: str, market: str | None = None) -> bool:
        return bool(self.watching(topic, market))

    def publish(self, topic: str, event: dict[str, Any], market: str | None = None) -> None:
        """Send `event` to every subscriber of `topic` (of `market`'s events, when given)."""
        for subscriber in self.watching(topic, market):
            self.deliver(subscriber, event)

    def deliver(self, subscriber: Subscriber, event: dict[str, Any]) -> None:
        """Queue one event for one subscriber; drop the subscriber if its queue is full."""
        try:
            subscriber.send.send_nowait(event)
        except trio.WouldBlock:
            subscriber.dropped = True
            self.close(subscriber)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close(subscriber)
