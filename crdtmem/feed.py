"""The in-process MemoryEvent feed: bounded per-subscriber queues, never unbounded buffering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from .errors import CrdtmemError
from .events import MemoryEvent


class FeedOverflow(CrdtmemError):
    """The subscriber fell too far behind and was dropped; catch up with list() or a pull."""


class _Subscriber:
    def __init__(self, channels: tuple[str, ...] | None, max_queue: int):
        self.channels = set(channels) if channels is not None else None
        self.queue: asyncio.Queue[MemoryEvent | None] = asyncio.Queue()
        self.max_queue = max_queue
        self.overflowed = False

    def offer(self, event: MemoryEvent) -> None:
        if self.overflowed:
            return
        if self.channels is not None and not self.channels.intersection(event.channels):
            return
        if self.queue.qsize() >= self.max_queue:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


class EventFeed:
    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self.published = 0

    def publish(self, events: Iterable[MemoryEvent]) -> None:
        for event in events:
            self.published += 1
            for subscriber in list(self._subscribers):
                subscriber.offer(event)

    async def subscribe(
        self, channels: tuple[str, ...] | None, *, max_queue: int = 10_000
    ) -> AsyncIterator[MemoryEvent]:
        subscriber = _Subscriber(channels, max_queue)
        self._subscribers.add(subscriber)
        try:
            while True:
                event = await subscriber.queue.get()
                if event is None:
                    if subscriber.overflowed:
                        raise FeedOverflow(
                            f"event subscriber fell more than {max_queue} events behind and was "
                            "dropped; read current state with list() and subscribe again"
                        )
                    return
                yield event
        finally:
            self._subscribers.discard(subscriber)

    def close(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.queue.put_nowait(None)

    def __len__(self) -> int:
        return len(self._subscribers)
