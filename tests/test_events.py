"""MemoryEvent: an event for messages added at the end of a conversation carries those messages,
not the whole conversation, and the stream of events rebuilds the conversation exactly."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmem import Replica

CH = "user:u1:memories"


def _follow(held: dict[str, list[Any]], event: dict[str, Any]) -> None:
    """What a feed consumer does with an event's JSON."""
    memory = event["memory"]
    if "content_from" in event:
        start = event["content_from"]
        assert len(held[memory["id"]]) == start, "an append event must follow the content the consumer has"
        held[memory["id"]] = held[memory["id"]][:start] + memory["content"]
    else:
        held[memory["id"]] = memory["content"]


async def test_an_append_event_carries_only_the_new_message() -> None:
    async with Replica(None, replica_id="a") as replica:
        events = replica.events()
        chat = await replica.add([{"role": "user", "text": "hello"}], kind="conversation", user_id="u1")
        for i in range(50):
            await replica.append_message(chat.id, role="assistant", text=f"reply {i}")
        received = [await events.get(0) for _ in range(51)]
        assert all(e is not None for e in received)
        sent = [json.loads(json.dumps(e.to_dict())) for e in received if e is not None]
        assert len(sent[0]["memory"]["content"]) == 1 and "content_from" not in sent[0]
        assert [e["content_from"] for e in sent[1:]] == list(range(1, 51))
        assert all(len(e["memory"]["content"]) == 1 for e in sent[1:])
        assert sent[-1]["memory"]["content"][0]["text"] == "reply 49"
        # in process, the event's record is the whole record (shared with the cache, not copied)
        last = received[-1]
        assert last is not None and len(last.memory.content) == 51
        assert last.memory.content is (await replica.get(chat.id)).content
        held: dict[str, list[Any]] = {}
        for event in sent:
            _follow(held, event)
        assert held[chat.id] == list((await replica.get(chat.id)).content)


_steps = st.lists(
    st.tuples(st.sampled_from(["append", "append", "sync"]), st.integers(0, 1), st.integers(1, 3)),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(_steps)
def test_the_event_stream_of_appends_rebuilds_the_conversation(steps: list[tuple[str, int, int]]) -> None:
    asyncio.run(_rebuild(steps))


async def _rebuild(steps: list[tuple[str, int, int]]) -> None:
    ticks = itertools.count(1_700_000_000_000)
    async with (
        Replica(None, replica_id="a", wall_clock=lambda: next(ticks)) as a,
        Replica(None, replica_id="b", wall_clock=lambda: next(ticks)) as b,
    ):
        replicas = (a, b)
        streams = [r.events() for r in replicas]
        chat = await a.add([], kind="conversation", user_id="u1", memory_id="chat")
        await b.apply(await a.export_since([CH]))
        for step, who, n in steps:
            replica = replicas[who]
            if step == "append":
                for k in range(n):
                    await replica.append_message(chat.id, role="user", text=f"{replica.id}{k}")
            else:  # concurrent appends meet: the merged order may put messages before others' ends
                await replicas[1 - who].apply(await replica.export_since([CH]))
        for replica, stream in zip(replicas, streams, strict=True):
            held: dict[str, list[Any]] = {}
            while (event := await stream.get(0)) is not None:
                _follow(held, json.loads(json.dumps(event.to_dict())))
            assert held[chat.id] == list((await replica.get(chat.id)).content)
