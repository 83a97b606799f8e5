"""The in-process MemoryEvent feed: bounded per-subscriber queues, never unbounded buffering."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ..errors import CrdtmemError
from ..events import MemoryEvent


class FeedOverflow(CrdtmemError):
    """The subscriber fell too far behind and was dropped; catch up with list() or a pull."""


class Subscription:
    """An async iterator of MemoryEvents, registered with the feed from the moment it is created
    (so no event committed after ``events()`` returned is missed). ``aclose()`` unregisters it."""

    def __init__(self, feed: EventFeed, channels: tuple[str, ...] | None, max_queue: int):
        self._feed = feed
        self.channels = set(channels) if channels is not None else None
        self.queue: asyncio.Queue[MemoryEvent | None] = asyncio.Queue()
        self.max_queue = max_queue
        self.overflowed = False
        self.closed = False

    def offer(self, event: MemoryEvent) -> None:
        if self.overflowed or self.closed:
            return
        if self.channels is not None and not self.channels.intersection(event.channels):
            return
        if self.queue.qsize() >= self.max_queue:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)

    def end(self) -> None:
        self.queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MemoryEvent:
        if self.closed:
            raise StopAsyncIteration
        return self._take(await self.queue.get())

    def _take(self, event: MemoryEvent | None) -> MemoryEvent:
        if event is None:
            self._unregister()
            if self.overflowed:
                raise FeedOverflow(
                    f"event subscriber fell more than {self.max_queue} events behind and was "
                    "dropped; read current state with list() and subscribe again"
                )
            raise StopAsyncIteration
        return event

    async def get(self, timeout: float) -> MemoryEvent | None:
        """The next event, or None if none arrives within ``timeout`` seconds. Ends like iteration:
        StopAsyncIteration when the feed closes, FeedOverflow when this subscriber fell behind."""
        if self.closed:
            raise StopAsyncIteration
        if not self.queue.empty():  # the common case under load: no timer to arm
            return self._take(self.queue.get_nowait())
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        self._unregister()

    def _unregister(self) -> None:
        self.closed = True
        self._feed.discard(self)


class EventFeed:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self.published = 0

    def publish(self, events: Iterable[MemoryEvent]) -> None:
        for event in events:
            self.published += 1
            for subscriber in list(self._subscribers):
                subscriber.offer(event)

    def subscribe(self, channels: tuple[str, ...] | None, *, max_queue: int = 10_000) -> Subscription:
        subscription = Subscription(self, channels, max_queue)
        self._subscribers.add(subscription)
        return subscription

    def discard(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.end()

    def __len__(self) -> int:
        return len(self._subscribers)
