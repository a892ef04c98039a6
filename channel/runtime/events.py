"""Node events for API subscribers: a fan-out that drops a subscriber who cannot keep up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

SUBSCRIBER_BUFFER = 1024  # events queued per subscriber before it is dropped


@dataclass(slots=True)
class Subscriber:
    topic: str
    send: trio.MemorySendChannel[dict[str, Any]]
    dropped: bool = False


@dataclass(slots=True)
class EventHub:
    """Fan-out of node events to API subscribers. A subscriber that cannot keep up is dropped
    (its channel closes) instead of slowing the node down."""

    subscribers: list[Subscriber] = field(default_factory=list)

    def open(self, topic: str) -> tuple[Subscriber, trio.MemoryReceiveChannel[dict[str, Any]]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        subscriber = Subscriber(topic, send)
        self.subscribers.append(subscriber)
        return subscriber, receive

    def close(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        subscriber.send.close()

    def wants(self, topic: str) -> bool:
        return any(s.topic == topic for s in self.subscribers)

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.topic != topic:
                continue
            try:
                subscriber.send.send_nowait(event)
            except trio.WouldBlock:
                subscriber.dropped = True
                self.close(subscriber)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.close(subscriber)
