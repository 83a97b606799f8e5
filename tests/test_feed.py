"""The MemoryEvent feed: in order, filtered by channel, bounded per subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdtmem import FeedOverflow, Memory, MemoryEvent, Replica, Scope, Source
from crdtmem.engine.feed import EventFeed


def event(n: int, channel: str = "user:u1:memories") -> MemoryEvent:
    memory = Memory(
        id=f"m{n}",
        kind="fact",
        content=str(n),
        metadata={},
        tags=(),
        source=Source(),
        scope=Scope(),
        channels=(channel,),
        created_at="",
        updated_at="",
        deleted=False,
        conflicted=False,
        version=n,
    )
    return MemoryEvent(f"r:{n}", "create", "", memory, memory.source, (channel,), "r")


async def drain(stream: AsyncIterator[MemoryEvent], count: int) -> list[MemoryEvent]:
    return [await asyncio.wait_for(stream.__anext__(), 1) for _ in range(count)]


async def test_events_arrive_in_order_and_filtered() -> None:
    feed = EventFeed()
    everything = feed.subscribe(None)
    topic = feed.subscribe(("topic:t1:updates",))
    first_all = asyncio.ensure_future(everything.__anext__())
    first_topic = asyncio.ensure_future(topic.__anext__())
    await asyncio.sleep(0)
    assert len(feed) == 2
    feed.publish([event(1), event(2, "topic:t1:updates"), event(3)])
    assert [(await first_all).memory.id, *[e.memory.id for e in await drain(everything, 2)]] == [
        "m1",
        "m2",
        "m3",
    ]
    assert (await first_topic).memory.id == "m2"
    assert feed.published == 3
    feed.close()
    with pytest.raises(StopAsyncIteration):
        await everything.__anext__()


async def test_overflow_raises_and_stays_bounded() -> None:
    feed = EventFeed()
    stream = feed.subscribe(None, max_queue=3)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    (subscriber,) = feed._subscribers
    feed.publish([event(n) for n in range(1, 100)])
    assert subscriber.queue.qsize() <= 4  # max_queue events and the overflow marker, no more
    feed.publish([event(n) for n in range(100, 200)])
    assert subscriber.queue.qsize() <= 4
    received = [(await first).memory.id, *[e.memory.id for e in await drain(stream, 2)]]
    assert received == ["m1", "m2", "m3"]
    with pytest.raises(FeedOverflow, match="3 events behind"):
        await stream.__anext__()
    assert len(feed) == 0  # the dropped subscriber is gone
    feed.publish([event(200)])  # publishing goes on for everyone else


async def test_a_slow_subscriber_does_not_affect_a_fast_one() -> None:
    feed = EventFeed()
    slow = feed.subscribe(None, max_queue=2)
    fast = feed.subscribe(None, max_queue=1000)
    slow_first = asyncio.ensure_future(slow.__anext__())
    fast_first = asyncio.ensure_future(fast.__anext__())
    await asyncio.sleep(0)
    feed.publish([event(n) for n in range(1, 51)])
    assert (await fast_first).memory.id == "m1"
    assert len(await drain(fast, 49)) == 49
    await slow_first
    await drain(slow, 1)
    with pytest.raises(FeedOverflow):
        await slow.__anext__()


async def test_replica_events_overflow(tmp_path: Path) -> None:
    async with Replica(tmp_path / "r.db", replica_id="r") as replica:
        stream = replica.events(max_queue=5)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        made = [await replica.add(f"m{n}") for n in range(20)]
        received = [(await first).memory.id]
        with pytest.raises(FeedOverflow):
            while True:
                received.append((await asyncio.wait_for(stream.__anext__(), 1)).memory.id)
        assert received == [m.id for m in made[: len(received)]]  # in order, nothing skipped
        assert len(received) <= 1 + 5  # the one in the consumer's hands, then at most max_queue
        assert len(replica.feed) == 0
        # a dropped subscriber catches up from state, then subscribes again
        assert len(await replica.list()) == 20
        again = replica.events()
        next_event = asyncio.ensure_future(again.__anext__())
        await asyncio.sleep(0)
        late = await replica.add("late")
        assert (await next_event).memory.id == late.id
        await again.aclose()
