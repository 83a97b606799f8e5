"""The public Replica API end to end, on real SQLite files.

Writes and reads of every kind, list filters, history, counters, OR-set lists, conversations,
conflicts and their resolution (content, metadata, lifecycle), the MemoryEvent stream, reopen, and
both lifecycle styles (``async with`` and ``start()``/``stop()``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdtmem import (
    Conflict,
    ConflictValue,
    MemoryEvent,
    Replica,
    ReplicaClosed,
    Scope,
    Source,
    WrongKind,
)
from crdtmem.engine import payload as wire

START_MS = 1_700_000_000_000
USER_CHANNEL = "user:u1:memories"


class ManualClock:
    def __init__(self, now_ms: int = START_MS):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def tick(self, ms: int = 1) -> None:
        self.now_ms += ms


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def replica(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Replica]:
    async with Replica(tmp_path / "r1.db", replica_id="r1", wall_clock=clock) as r:
        yield r


@pytest.fixture
async def pair(tmp_path: Path, clock: ManualClock) -> AsyncIterator[tuple[Replica, Replica]]:
    a = Replica(tmp_path / "a.db", replica_id="a", wall_clock=clock)
    b = Replica(tmp_path / "b.db", replica_id="b", wall_clock=clock)
    async with a, b:
        yield a, b


async def sync(source: Replica, target: Replica) -> Any:
    channels = source.store.channels()
    if not channels:
        return None
    return await target.apply(await source.export_since(channels, target.version_vectors(channels)))


async def sync_both(a: Replica, b: Replica) -> None:
    await sync(a, b)
    await sync(b, a)


class Collector:
    """Consumes ``replica.events()`` in a task, so the subscription is live before any change."""

    def __init__(self, replica: Replica, channels: list[str] | None = None):
        self.events: list[MemoryEvent] = []
        self._stream = replica.events(channels)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        first = asyncio.get_running_loop().create_future()

        async def consume() -> None:
            iterator = self._stream.__aiter__()
            step = asyncio.ensure_future(iterator.__anext__())
            await asyncio.sleep(0)  # the generator body runs and subscribes
            first.set_result(None)
            try:
                while True:
                    self.events.append(await step)
                    step = asyncio.ensure_future(iterator.__anext__())
            except StopAsyncIteration:
                pass

        self._task = asyncio.ensure_future(consume())
        await first
        return self

    async def settle(self) -> list[MemoryEvent]:
        for _ in range(5):
            await asyncio.sleep(0)
        return self.events

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def types(self) -> list[str]:
        return [e.event_type for e in self.events]


# -- writes and reads of every kind ---------------------------------------------------------------


async def test_add_every_kind_with_initial_content(replica: Replica) -> None:
    fact = await replica.add(
        "User prefers tea",
        user_id="u1",
        agent_id="phone",
        session_id="s1",
        tenant_id="acme",
        topics=["drinks"],
        metadata={"confidence": 0.9, "source": {"kind": "chat", "turn": 3}},
        tags=["diet", {"nested": True}],
    )
    assert fact.kind == fact.type == "fact"
    assert fact.content == "User prefers tea"
    assert fact.metadata == {"confidence": 0.9, "source": {"kind": "chat", "turn": 3}}
    assert fact.tags == ("diet", {"nested": True})
    assert fact.source == Source("phone", "s1", "u1")
    assert fact.scope == Scope("u1", "acme", ("drinks",), False)
    assert fact.channels == ("topic:drinks:updates", USER_CHANNEL)
    assert not fact.deleted and not fact.conflicted and fact.conflicts == ()
    assert fact.version > 0 and fact.created_at <= fact.updated_at

    preference = await replica.add("dark mode", kind="preference", user_id="u1")
    items = await replica.add(["milk", "eggs", "milk", 3, {"qty": 2}], kind="list", user_id="u1")
    counter = await replica.add(2**60 + 1, kind="counter", user_id="u1")
    conversation = await replica.add(
        [{"role": "user", "text": "hi"}, ("assistant", "hello")], kind="conversation", user_id="u1"
    )
    assert preference.content == "dark mode"
    assert items.content == ["milk", "eggs", 3, {"qty": 2}]  # a set, in first-insertion order
    assert counter.content == 2**60 + 1  # exact beyond 2**53
    assert [(m["role"], m["text"]) for m in conversation.content] == [("user", "hi"), ("assistant", "hello")]
    assert all(m["by"] == "r1" and m["id"] and m["hlc"] for m in conversation.content)

    for memory in (fact, preference, items, counter, conversation):
        assert await replica.get(memory.id) == memory

    empty = [
        await replica.add(kind="list"),
        await replica.add(kind="counter"),
        await replica.add(kind="conversation"),
    ]
    assert [m.content for m in empty] == [[], 0, []]
    assert empty[0].channels == ("system:global",)
    tenant_wide = await replica.add("policy", tenant_id="acme")
    shared = await replica.add("shared", user_id="u1", tenant_id="acme", shared=True)
    assert tenant_wide.channels == ("tenant:acme:shared",)
    assert shared.channels == ("tenant:acme:shared", USER_CHANNEL)
    chosen = await replica.add("with id", memory_id="my-memory.1")
    assert chosen.id == "my-memory.1"


async def test_update_content_metadata_and_tags(replica: Replica, clock: ManualClock) -> None:
    memory = await replica.add("v1", user_id="u1", metadata={"a": 1, "b": 2}, tags=["x", "y"])
    clock.tick()
    updated = await replica.update(
        memory.id,
        content="v2",
        metadata={"b": 3, "c": [1]},
        remove_metadata=["a"],
        add_tags=["z"],
        remove_tags=["x"],
    )
    assert updated.content == "v2"
    assert updated.metadata == {"b": 3, "c": [1]}
    assert updated.tags == ("y", "z")
    assert updated.version > memory.version
    assert updated.updated_at > memory.updated_at
    assert updated.created_at == memory.created_at
    assert await replica.get(memory.id) == updated
    only_meta = await replica.update(memory.id, metadata={"d": None})
    assert only_meta.content == "v2" and only_meta.metadata["d"] is None


async def test_delete(replica: Replica) -> None:
    keep = await replica.add("keep", user_id="u1")
    gone = await replica.add("gone", user_id="u1")
    deleted = await replica.delete(gone.id)
    assert deleted.deleted and not deleted.conflicted and deleted.content == "gone"
    assert (await replica.get(gone.id)).deleted
    assert [m.id for m in await replica.list()] == [keep.id]
    assert {m.id for m in await replica.list(include_deleted=True)} == {keep.id, gone.id}


async def test_list_filters(replica: Replica, clock: ManualClock) -> None:
    made = {}
    for name, kwargs in {
        "u1-fact": {"user_id": "u1"},
        "u1-topic": {"user_id": "u1", "topics": ["t1"]},
        "u2-fact": {"user_id": "u2", "topics": ["t1", "t2"]},
        "acme": {"tenant_id": "acme"},
        "u1-acme": {"user_id": "u1", "tenant_id": "acme", "shared": True},
        "global": {},
    }.items():
        clock.tick()
        made[name] = (await replica.add(name, **kwargs)).id
    clock.tick()
    made["u1-list"] = (await replica.add(["a"], kind="list", user_id="u1", topics=["t2"])).id
    made["u1-counter"] = (await replica.add(1, kind="counter", user_id="u1")).id

    async def names(**filters: Any) -> list[str]:
        by_id = {v: k for k, v in made.items()}
        return [by_id[m.id] for m in await replica.list(**filters)]

    assert await names() == list(reversed(made))  # most recently changed first
    assert await names(user_id="u1") == ["u1-counter", "u1-list", "u1-acme", "u1-topic", "u1-fact"]
    assert await names(user_id="u2") == ["u2-fact"]
    assert await names(tenant_id="acme") == ["u1-acme", "acme"]
    assert await names(topic="t1") == ["u2-fact", "u1-topic"]
    assert await names(topic="t2") == ["u1-list", "u2-fact"]
    assert await names(kind="list") == ["u1-list"]
    assert await names(kind="counter", user_id="u1") == ["u1-counter"]
    assert await names(kind="fact", topic="t1", user_id="u1") == ["u1-topic"]
    assert await names(channel="system:global") == ["global"]
    assert await names(channel="tenant:acme:shared") == ["u1-acme", "acme"]
    assert await names(limit=2) == ["u1-counter", "u1-list"]
    assert await names(user_id="nobody") == []
    clock.tick()
    await replica.update(made["u1-fact"], content="touched")
    assert (await names())[0] == "u1-fact"
    await replica.delete(made["u1-topic"])
    assert await names(topic="t1") == ["u2-fact"]
    assert await names(topic="t1", include_deleted=True) == ["u1-topic", "u2-fact"]


async def test_history(replica: Replica, clock: ManualClock) -> None:
    memory = await replica.add("v1", user_id="u1")
    clock.tick()
    await replica.update(memory.id, content="v2", metadata={"k": "v"})
    clock.tick()
    await replica.update(memory.id, add_tags=["t"])
    clock.tick()
    await replica.delete(memory.id)
    history = await replica.history(memory.id)
    assert [(h.content, h.deleted, h.metadata, h.tags) for h in history] == [
        ("v1", False, {}, ()),
        ("v2", False, {"k": "v"}, ()),
        ("v2", False, {"k": "v"}, ("t",)),
        ("v2", True, {"k": "v"}, ("t",)),
    ]
    assert all(h.origin == "r1" and not h.conflicted for h in history)
    assert [h.hlc for h in history] == sorted({h.hlc for h in history})


async def test_counter_increment_and_decrement(replica: Replica) -> None:
    counter = await replica.add(10, kind="counter", user_id="u1")
    assert (await replica.increment(counter.id)).content == 11
    assert (await replica.increment(counter.id, 5)).content == 16
    assert (await replica.decrement(counter.id)).content == 15
    assert (await replica.decrement(counter.id, 20)).content == -5
    assert (await replica.increment(counter.id, -5)).content == -10
    assert (await replica.increment(counter.id, 2**62)).content == 2**62 - 10
    assert (await replica.get(counter.id)).content == 2**62 - 10
    zero = await replica.increment(counter.id, 0)
    assert zero.content == 2**62 - 10


async def test_counter_merges_increments_from_replicas(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    counter = await a.add(1, kind="counter", user_id="u1")
    await sync(a, b)
    await a.increment(counter.id, 10)
    await b.increment(counter.id, 100)
    await b.decrement(counter.id, 1000)
    await sync_both(a, b)
    assert (await a.get(counter.id)).content == (await b.get(counter.id)).content == 1 + 10 + 100 - 1000
    assert await a.conflicts() == []


async def test_list_add_and_remove_items(replica: Replica) -> None:
    items = await replica.add(["a", "b"], kind="list", user_id="u1")
    assert (await replica.add_items(items.id, "c", "a", {"k": 1})).content == ["a", "b", "c", {"k": 1}]
    assert (await replica.remove_items(items.id, "a", "missing")).content == ["b", "c", {"k": 1}]
    assert (await replica.add_items(items.id, "a")).content == ["b", "c", {"k": 1}, "a"]
    assert (await replica.remove_items(items.id, {"k": 1})).content == ["b", "c", "a"]


async def test_adding_no_items_writes_nothing(replica: Replica) -> None:
    """``add_items(id)`` with no items is a no-op (``LocalWrites.write`` in writes.py means to return
    early for it): no delta, no new version, no event."""
    items = await replica.add(["a"], kind="list", user_id="u1")
    vector = replica.version_vector(USER_CHANNEL)
    async with Collector(replica) as seen:
        assert await replica.add_items(items.id) == items
        await seen.settle()
    assert seen.events == []
    assert replica.version_vector(USER_CHANNEL) == vector
    assert (await replica.get(items.id)).version == items.version


async def test_list_add_wins_over_concurrent_remove(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    items = await a.add(["x", "y"], kind="list", user_id="u1")
    await sync(a, b)
    await a.remove_items(items.id, "x")
    await b.add_items(items.id, "x")
    await sync_both(a, b)
    assert (await a.get(items.id)).content == (await b.get(items.id)).content
    assert "x" in (await a.get(items.id)).content
    assert "y" in (await a.get(items.id)).content


async def test_append_message(replica: Replica, clock: ManualClock) -> None:
    conversation = await replica.add([{"role": "user", "text": "one"}], kind="conversation", user_id="u1")
    for text in ("two", "three"):
        clock.tick()
        await replica.append_message(conversation.id, role="assistant", text=text)
    content = (await replica.get(conversation.id)).content
    assert [m["text"] for m in content] == ["one", "two", "three"]
    assert len({m["id"] for m in content}) == 3


async def test_concurrent_appends_interleave_identically(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    conversation = await a.add(kind="conversation", user_id="u1")
    await sync(a, b)
    await a.append_message(conversation.id, role="user", text="from a")
    await b.append_message(conversation.id, role="user", text="from b")
    await sync_both(a, b)
    on_a = [m["text"] for m in (await a.get(conversation.id)).content]
    assert on_a == [m["text"] for m in (await b.get(conversation.id)).content]
    assert sorted(on_a) == ["from a", "from b"]


async def test_set_embedding(replica: Replica) -> None:
    memory = await replica.add("text", user_id="u1")
    embedded = await replica.set_embedding(memory.id, [0.1, 0.2, 0.3], "mini-lm")
    assert embedded.embedding == (0.1, 0.2, 0.3)
    assert embedded.embedding_model == "mini-lm"
    assert embedded.content == "text" and not embedded.conflicted


# -- conflicts and resolution ---------------------------------------------------------------------


async def test_content_conflict_is_detected_and_resolved(
    pair: tuple[Replica, Replica], clock: ManualClock
) -> None:
    a, b = pair
    memory = await a.add("tea", user_id="u1")
    await sync(a, b)
    clock.tick()
    await a.update(memory.id, content="coffee")
    await b.update(memory.id, content="water")
    await sync_both(a, b)
    conflicts_a, conflicts_b = await a.conflicts(), await b.conflicts()
    assert conflicts_a == conflicts_b
    (found,) = conflicts_a
    assert isinstance(found, Conflict)
    assert (found.memory_id, found.field, found.user_id) == (memory.id, "content", "u1")
    assert {(v.value, v.replica) for v in found.values} == {("coffee", "a"), ("water", "b")}
    assert all(isinstance(v, ConflictValue) for v in found.values)
    on_a, on_b = await a.get(memory.id), await b.get(memory.id)
    assert on_a.conflicted and on_a.conflicts == ("content",)
    assert on_a.content == on_b.content == found.values[0].value  # reads agree: highest (hlc, replica)
    assert await a.conflicts(user_id="u1") == conflicts_a
    assert await a.conflicts(user_id="u2") == []
    assert await a.conflicts(memory_id=memory.id) == conflicts_a

    clock.tick()
    resolved = await b.resolve(memory.id, field="content", value="green tea")
    assert resolved.content == "green tea" and not resolved.conflicted
    assert await b.conflicts() == []
    await sync(b, a)
    assert await a.conflicts() == []
    assert (await a.get(memory.id)).content == "green tea"


async def test_equal_concurrent_values_are_not_a_conflict(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    memory = await a.add("tea", user_id="u1")
    await sync(a, b)
    await a.update(memory.id, content="coffee")
    await b.update(memory.id, content="coffee")
    await sync_both(a, b)
    assert await a.conflicts() == await b.conflicts() == []


async def test_a_write_that_saw_both_siblings_resolves(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    memory = await a.add("tea", user_id="u1")
    await sync(a, b)
    await a.update(memory.id, content="coffee")
    await b.update(memory.id, content="water")
    await sync_both(a, b)
    assert await a.conflicts()
    await a.update(memory.id, content="juice")
    await sync(a, b)
    assert await a.conflicts() == await b.conflicts() == []
    assert (await b.get(memory.id)).content == "juice"


async def test_metadata_conflict_is_detected_and_resolved(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    memory = await a.add("fact", user_id="u1", metadata={"source": "chat", "other": 1})
    await sync(a, b)
    await a.update(memory.id, metadata={"source": "email"})
    await b.update(memory.id, metadata={"source": "phone", "other": 1})
    await sync_both(a, b)
    (found,) = await a.conflicts()
    assert found.field == "metadata.source"
    assert {v.value for v in found.values} == {"email", "phone"}
    assert await b.conflicts() == [found]
    resolved = await a.resolve(memory.id, field="metadata.source", value="merged")
    assert resolved.metadata == {"source": "merged", "other": 1}
    await sync(a, b)
    assert await b.conflicts() == []
    assert (await b.get(memory.id)).metadata == {"source": "merged", "other": 1}


async def test_update_racing_delete_is_a_lifecycle_conflict(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    memory = await a.add("fact", user_id="u1")
    await sync(a, b)
    await a.delete(memory.id)
    await b.update(memory.id, content="still true")
    await sync_both(a, b)
    (found,) = await a.conflicts()
    assert await b.conflicts() == [found]
    assert found.field == "lifecycle"
    assert {v.value for v in found.values} == {"active", "deleted"}
    on_a = await a.get(memory.id)
    assert on_a.conflicted and on_a.conflicts == ("lifecycle",)
    assert on_a.content == "still true"  # the update was not silently dropped
    assert memory.id in [m.id for m in await a.list()]  # a delete in conflict stays listed
    assert memory.id in [m.id for m in await b.list()]

    kept = await a.resolve(memory.id, field="lifecycle", value="deleted")
    assert kept.deleted and not kept.conflicted
    await sync(a, b)
    assert await b.conflicts() == []
    assert (await b.get(memory.id)).deleted
    assert await b.list() == []


async def test_lifecycle_conflict_resolved_to_active(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    memory = await a.add("fact", user_id="u1")
    await sync(a, b)
    await a.delete(memory.id)
    await b.update(memory.id, content="still true")
    await sync_both(a, b)
    revived = await b.resolve(memory.id, field="lifecycle", value="active")
    assert not revived.deleted and not revived.conflicted
    await sync(b, a)
    assert not (await a.get(memory.id)).deleted
    assert (await a.update(memory.id, content="writable again")).content == "writable again"


async def test_conflict_filters_by_tenant(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    memory = await a.add("policy", tenant_id="acme")
    await sync(a, b)
    await a.update(memory.id, content="one")
    await b.update(memory.id, content="two")
    await sync_both(a, b)
    assert [c.memory_id for c in await a.conflicts(tenant_id="acme")] == [memory.id]
    assert await a.conflicts(tenant_id="other") == []


# -- the event stream ---------------------------------------------------------------------------


async def test_one_event_per_change_with_the_right_type(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    async with Collector(a) as on_a, Collector(b) as on_b:
        memory = await a.add("tea", user_id="u1", metadata={"k": 1}, tags=["x"])
        await a.update(memory.id, content="coffee")
        await sync(a, b)
        await b.update(memory.id, content="water")
        await a.update(memory.id, content="juice")
        await sync_both(a, b)
        resolved = await a.resolve(memory.id, field="content", value="tea")
        await sync(a, b)
        await a.delete(memory.id)
        await sync(a, b)
        # a duplicate delivery changes nothing and must not produce an event
        duplicate = await b.apply(await a.export_since(USER_CHANNEL))
        assert duplicate.applied == 0 and duplicate.duplicates > 0 and duplicate.events == ()
        await on_a.settle()
        await on_b.settle()
    assert on_a.types() == ["create", "update", "update", "conflict", "resolve", "delete"]
    assert on_b.types() == ["create", "update", "conflict", "resolve", "delete"]
    assert on_a.events[4].memory == resolved
    assert [e.origin for e in on_b.events] == ["a", "b", "a", "a", "a"]
    for events, replica_id in ((on_a.events, "a"), (on_b.events, "b")):
        assert len({e.event_id for e in events}) == len(events)
        assert all(e.event_id.startswith(f"{replica_id}:") for e in events)
        assert all(e.channels == (USER_CHANNEL,) and e.source.user_id == "u1" for e in events)
        assert all(e.timestamp.endswith("Z") for e in events)
    first = on_a.events[0].to_dict()
    assert first["event_type"] == "create" and first["memory"]["type"] == "fact"
    assert first["memory"]["content"] == "tea" and first["channels"] == [USER_CHANNEL]


async def test_events_report_what_apply_returned(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    async with Collector(b) as on_b:
        await a.add("one", user_id="u1")
        await a.add("two", user_id="u1")
        result = await sync(a, b)
        await on_b.settle()
    assert result.applied == 2 and len(result.events) == 2
    assert list(result.events) == on_b.events


async def test_events_filtered_by_channel(replica: Replica) -> None:
    async with Collector(replica, ["topic:t1:updates"]) as topic, Collector(replica) as everything:
        await replica.add("no topic", user_id="u1")
        on_topic = await replica.add("on topic", user_id="u1", topics=["t1"])
        await replica.update(on_topic.id, content="changed")
        await topic.settle()
        await everything.settle()
    assert [e.memory.content for e in topic.events] == ["on topic", "changed"]
    assert len(everything.events) == 3


async def test_no_event_for_a_refused_write(replica: Replica) -> None:
    async with Collector(replica) as seen:
        memory = await replica.add("x", user_id="u1")
        with pytest.raises(WrongKind):
            await replica.increment(memory.id)
        await seen.settle()
    assert seen.types() == ["create"]


async def test_events_stream_starts_when_requested(replica: Replica) -> None:
    """``events()`` promises events "from now on": a change made right after the call, before the
    consumer first awaits the iterator, must be delivered."""
    stream = replica.events()
    memory = await replica.add("made right after subscribing", user_id="u1")
    first = asyncio.ensure_future(stream.__anext__())
    done, _ = await asyncio.wait([first], timeout=10)
    if not done:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
    assert done, "the event of a change made after events() was called was lost"
    assert first.result().memory.id == memory.id


async def test_stop_ends_event_streams(tmp_path: Path) -> None:
    replica = await Replica(tmp_path / "r.db", replica_id="r").start()
    async with Collector(replica) as seen:
        await replica.add("x")
        await seen.settle()
        await replica.stop()
        assert seen._task is not None
        await asyncio.wait_for(seen._task, 2)
    assert seen.types() == ["create"]


# -- exchange -------------------------------------------------------------------------------------


async def test_out_of_order_delivery_waits_for_dependencies(tmp_path: Path, clock: ManualClock) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a", wall_clock=clock) as a,
        Replica(tmp_path / "b.db", replica_id="b", wall_clock=clock) as b,
    ):
        memory = await a.add("v1", user_id="u1")
        await a.update(memory.id, content="v2")
        await a.update(memory.id, content="v3")
        deltas = a.store.deltas_since([USER_CHANNEL], {})
        assert len(deltas) == 3
        for delta in reversed(deltas[1:]):
            result = await b.apply(wire.encode(wire.Payload("a", [delta])))
            assert result.applied == 0 and result.pending >= 1
        assert await b.list() == []
        assert b.version_vector(USER_CHANNEL) == {}
    async with Replica(tmp_path / "b.db", replica_id="b", wall_clock=clock) as b:
        assert len(b.store.pending()) == 2 == b.pending_count  # waiting deltas survive a restart
        result = await b.apply(wire.encode(wire.Payload("a", [deltas[0]])))
        assert (result.applied, result.pending, b.pending_count) == (
            1,
            0,
            0,
        )  # the other two were received before
        assert (await b.get(memory.id)).content == "v3"
        assert b.version_vector(USER_CHANNEL) == {"a": 3}
        assert b.store.pending() == []


async def test_apply_is_idempotent_and_counts(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    await a.add("one", user_id="u1")
    await a.add("two", user_id="u1", topics=["t1"])
    data = await a.export_since([USER_CHANNEL, "topic:t1:updates"])
    first = await b.apply(data)
    assert (first.applied, first.duplicates, first.pending, first.ignored) == (2, 0, 0, 0)
    again = await b.apply(data)
    assert (again.applied, again.duplicates) == (0, 2)
    assert a.version_vectors() == b.version_vectors()


async def test_partial_replication_ignores_other_channels(tmp_path: Path, clock: ManualClock) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a", wall_clock=clock) as a,
        Replica(tmp_path / "b.db", replica_id="b", wall_clock=clock, channels=["topic:t1:updates"]) as b,
    ):
        await a.add("only user", user_id="u1")
        both = await a.add("user and topic", user_id="u1", topics=["t1"])
        result = await b.apply(await a.export_since([USER_CHANNEL, "topic:t1:updates"]))
        assert (result.applied, result.ignored) == (1, 1)
        assert [m.id for m in await b.list()] == [both.id]
        assert b.version_vectors() == {"topic:t1:updates": {"a": 1}}


async def test_paged_export_converges(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    for n in range(7):
        await a.add(f"m{n}", user_id="u1")
    pages = 0
    while True:
        data = await a.export_since(USER_CHANNEL, b.version_vector(USER_CHANNEL), limit=3)
        result = await b.apply(data)
        pages += 1
        if result.applied == 0:
            break
    assert pages == 4
    assert sorted(m.content for m in await b.list()) == [f"m{n}" for n in range(7)]
    assert b.version_vector(USER_CHANNEL) == a.version_vector(USER_CHANNEL) == {"a": 7}


async def test_relay_keeps_the_origin(tmp_path: Path, clock: ManualClock) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a", wall_clock=clock) as a,
        Replica(tmp_path / "b.db", replica_id="b", wall_clock=clock) as b,
        Replica(tmp_path / "c.db", replica_id="c", wall_clock=clock) as c,
    ):
        memory = await a.add("hop", user_id="u1")
        await sync(a, b)
        await sync(b, c)
        assert (await c.get(memory.id)).content == "hop"
        assert c.version_vector(USER_CHANNEL) == {"a": 1}
        assert (await c.history(memory.id))[0].origin == "a"


# -- reopen and lifecycle ---------------------------------------------------------------------------


async def test_reopen_restores_everything(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "a.db"
    async with (
        Replica(path, replica_id="a", wall_clock=clock) as a,
        Replica(None, replica_id="b", wall_clock=clock) as b,
    ):
        fact = await a.add("tea", user_id="u1", metadata={"k": "v"}, tags=["t"])
        items = await a.add(["x"], kind="list", user_id="u1", topics=["t1"])
        counter = await a.add(5, kind="counter", tenant_id="acme")
        gone = await a.add("gone", user_id="u1")
        await a.delete(gone.id)
        await sync(a, b)
        await a.update(fact.id, content="coffee")
        await b.update(fact.id, content="water")
        await sync(b, a)
        memories = await a.list(include_deleted=True)
        conflicts = await a.conflicts()
        vectors = a.version_vectors()
        histories = {m.id: await a.history(m.id) for m in memories}
        assert conflicts and len(memories) == 4
    async with Replica(path, wall_clock=clock) as again:
        assert again.id == "a"
        cached = {m.id for m in memories}
        assert len(again.cache) == len(cached) and all(i in again.cache for i in cached)
        hits = again.cache.hits
        assert await again.get(fact.id) == next(m for m in memories if m.id == fact.id)
        assert again.cache.hits == hits + 1  # served warm, not from the store
        assert await again.list(include_deleted=True) == memories
        assert await again.conflicts() == conflicts
        assert again.version_vectors() == vectors
        assert {m.id: await again.history(m.id) for m in memories} == histories
        # writes continue: the next sequence number, a later clock, the same conflict to resolve
        await again.increment(counter.id)
        assert again.version_vector("tenant:acme:shared") == {"a": vectors["tenant:acme:shared"]["a"] + 1}
        await again.add_items(items.id, "y")
        resolved = await again.resolve(fact.id, field="content", value="tea")
        assert not resolved.conflicted and await again.conflicts() == []
        assert resolved.updated_at > max(m.updated_at for m in memories)


async def test_reopen_with_the_same_wall_clock_loses_nothing(tmp_path: Path) -> None:
    """A restart within the same millisecond (or after the wall clock stepped back) must not reuse
    the timestamps of dots written before it: a reused dot overwrites another write's entry."""
    clock = ManualClock()
    lists, facts = tmp_path / "lists.db", tmp_path / "facts.db"
    async with Replica(lists, replica_id="r", wall_clock=clock) as replica:
        items = await replica.add(["a", "b", "c"], kind="list", user_id="u1")
    async with Replica(lists, replica_id="r", wall_clock=clock) as replica:
        assert (await replica.add_items(items.id, "d")).content == ["a", "b", "c", "d"]
    async with Replica(facts, replica_id="r", wall_clock=clock) as replica:
        fact = await replica.add("x", user_id="u1", tags=["t1", "t2", "t3"])
    async with Replica(facts, replica_id="r", wall_clock=clock) as replica:
        assert (await replica.update(fact.id, add_tags=["t4"])).tags == ("t1", "t2", "t3", "t4")


async def test_reopen_warm_limits(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with Replica(path, replica_id="r") as replica:
        made = [await replica.add(f"m{n}", user_id="u1") for n in range(5)]
    async with Replica(path, warm=2) as replica:
        assert len(replica.cache) == 2
        assert made[-1].id in replica.cache and made[-2].id in replica.cache
    async with Replica(path, warm=0) as replica:
        assert len(replica.cache) == 0
        assert (await replica.get(made[0].id)).content == "m0"
    async with Replica(path, channels=["system:global"]) as replica:
        assert len(replica.cache) == 0  # warmed from its own channels only


async def test_async_with(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "r.db", replica_id="r")
    async with replica as opened:
        assert opened is replica
        memory = await replica.add("x")
    with pytest.raises(ReplicaClosed):
        await replica.get(memory.id)
    async with replica:  # a stopped replica can be started again
        assert (await replica.get(memory.id)).content == "x"


async def test_start_and_stop(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "r.db")
    assert await replica.start() is replica
    assert await replica.start() is replica  # idempotent
    assert replica.id.startswith("r-")
    memory = await replica.add("x")
    await replica.stop()
    await replica.stop()  # idempotent
    with pytest.raises(ReplicaClosed):
        await replica.add("y")
    other = Replica(tmp_path / "r.db")
    await other.start()
    try:
        assert other.id == replica.id  # the generated id is stored in the file
        assert (await other.get(memory.id)).content == "x"
    finally:
        await other.close()


async def test_in_memory_replica(clock: ManualClock) -> None:
    async with Replica(None, replica_id="mem", wall_clock=clock) as replica:
        memory = await replica.add("x", user_id="u1")
        assert (await replica.get(memory.id)).content == "x"
        assert replica.version_vector(USER_CHANNEL) == {"mem": 1}


async def test_concurrent_writes_to_one_memory_are_serialized(replica: Replica) -> None:
    counter = await replica.add(kind="counter", user_id="u1")
    items = await replica.add(kind="list", user_id="u1")
    await asyncio.gather(
        *(replica.increment(counter.id) for _ in range(50)),
        *(replica.add_items(items.id, n) for n in range(50)),
    )
    assert (await replica.get(counter.id)).content == 50
    assert sorted((await replica.get(items.id)).content) == list(range(50))
    assert replica.version_vector(USER_CHANNEL) == {"r1": 102}
    assert await replica.conflicts() == []
