"""Put after delete: the id of a deleted memory takes a new incarnation, a conflict only when the
write did not observe the delete (protocol.md §5.9). Random histories of revivals racing deletes and
updates are in tests/test_merge_laws.py and the replica machine (tests/test_convergence_machine.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdtmem import InvalidInput, MemoryDeleted, MemoryExists, Replica

START_MS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> int:
        self.ms += 1
        return self.ms


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica, Replica]]:
    clock = Clock()
    replicas = [Replica(tmp_path / f"{n}.db", replica_id=n, wall_clock=clock) for n in ("a", "b", "c")]
    async with replicas[0], replicas[1], replicas[2]:
        yield replicas[0], replicas[1], replicas[2]


async def sync(source: Replica, target: Replica) -> None:
    channels = source.store.channels()
    await target.apply(await source.export_since(channels, target.version_vectors(channels)))


async def add(replica: Replica, content: Any, **fields: Any) -> Any:
    return await replica.add(content, user_id="org:alice", memory_id="prefs/theme", **fields)


async def test_a_put_that_observed_the_delete_is_a_clean_new_incarnation(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, _ = trio
    first = await add(a, {"theme": "dark"}, metadata={"source": "settings"}, tags=["ui"])
    await a.set_embedding(first.id, [1.0, 0.0], "m")
    await a.delete(first.id)
    with pytest.raises(MemoryDeleted, match="create it anew"):
        await a.update(first.id, content="no")
    events = a.events()
    revived = await add(a, {"theme": "light"}, metadata={"by": "agent"}, tags=["prefs"])
    assert not revived.deleted and not revived.conflicted
    # nothing of the old incarnation is left: content, metadata keys, tags, embedding
    assert (revived.content, revived.metadata, revived.tags) == (
        {"theme": "light"},
        {"by": "agent"},
        ("prefs",),
    )
    assert revived.embedding is None
    assert revived.created_at == first.created_at and revived.source == first.source  # the header stays
    event = await anext(aiter(events))
    assert event.event_type == "create"
    assert (await a.update(first.id, content={"theme": "sepia"})).content == {"theme": "sepia"}

    await sync(a, b)  # a replica that gets the delete and the revival reads the same, cleanly
    assert (await b.get(first.id)).content == {"theme": "sepia"}
    assert await b.conflicts() == [] and await a.conflicts() == []
    with pytest.raises(MemoryExists, match="already exists"):
        await add(a, "twice")


async def test_every_kind_starts_over(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    cases: list[tuple[str, Any, Any, Any]] = [
        ("list", ["milk", "eggs"], ["bread"], ["bread"]),
        ("counter", 40, 3, 3),
        ("conversation", [{"role": "user", "text": "hi"}], [{"role": "user", "text": "again"}], ["again"]),
    ]
    for kind, old, new, expected in cases:
        memory = await a.add(old, kind=kind, user_id="u1", memory_id=f"m-{kind}")  # type: ignore[arg-type]
        if kind == "counter":
            await a.increment(memory.id, 2)
        await sync(a, b)
        await b.delete(memory.id)
        revived = await b.add(new, kind=kind, user_id="u1", memory_id=memory.id)  # type: ignore[arg-type]
        content = [m["text"] for m in revived.content] if kind == "conversation" else revived.content
        assert content == expected, kind
        await sync(b, a)
        again = await a.get(memory.id)
        assert again.content == revived.content and not again.conflicted, kind


async def test_an_update_racing_the_delete_is_still_a_lifecycle_conflict(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    """A put concurrent with the delete cannot revive (the id is live where it is written): the app
    updates, and the update and the delete are siblings, as before."""
    a, b, _ = trio
    memory = await add(a, "tea")
    await sync(a, b)
    await a.delete(memory.id)
    with pytest.raises(MemoryExists):
        await add(b, "coffee")  # b has not seen the delete: the id is live there
    await b.update(memory.id, content="coffee")
    await sync(a, b)
    await sync(b, a)
    for replica in (a, b):
        (conflict,) = await replica.conflicts()
        assert conflict.field == "lifecycle"


async def test_concurrent_revivals_conflict_only_where_their_values_differ(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    a, b, c = trio
    memory = await add(a, "tea", tags=["old"])
    await a.delete(memory.id)
    await sync(a, b)
    await sync(a, c)
    await add(b, {"drink": "coffee"}, tags=["b"])
    await add(c, {"drink": "mate"}, tags=["c"])
    for source, target in [(b, a), (c, a), (a, b), (a, c)]:
        await sync(source, target)
    merged = await a.get(memory.id)
    assert merged.conflicts == ("content",)  # both re-asserted active: no lifecycle conflict
    assert set(merged.tags) == {"b", "c"}
    values = {str(v.value) for v in (await a.conflicts())[0].values}
    assert values == {str({"drink": "coffee"}), str({"drink": "mate"})}
    assert await b.conflicts() == await a.conflicts() == await c.conflicts()


async def test_a_revival_racing_an_update_after_the_delete_keeps_both(
    trio: tuple[Replica, Replica, Replica],
) -> None:
    """b deletes and revives; a, which saw neither, updates meanwhile: its write survives the merge
    (the revival never observed it), and every replica reads the same."""
    a, b, _ = trio
    memory = await add(a, "v1")
    await sync(a, b)
    await b.delete(memory.id)
    await add(b, "v2")
    await a.update(memory.id, metadata={"k": 1})  # concurrent with the delete and the revival
    await sync(b, a)
    await sync(a, b)
    got = await a.get(memory.id)
    assert not got.deleted and got.content == "v2"
    assert got.metadata == {"k": 1}  # a's write survives: the revival never observed it
    assert await a.conflicts() == await b.conflicts()


async def test_a_new_incarnation_keeps_kind_and_scope(trio: tuple[Replica, Replica, Replica]) -> None:
    a, _, _ = trio
    memory = await add(a, "tea")
    await a.delete(memory.id)
    with pytest.raises(InvalidInput, match="was a fact"):
        await a.add(["x"], kind="list", user_id="org:alice", memory_id=memory.id)
    with pytest.raises(InvalidInput, match="another scope"):
        await a.add("tea", user_id="bob", memory_id=memory.id)
    assert (await a.get(memory.id)).deleted  # refused revivals changed nothing


async def test_a_revival_survives_a_restart_and_returns_to_the_index(tmp_path: Path) -> None:
    async with Replica(tmp_path / "r.db", replica_id="r", index=True) as replica:
        assert replica.index is not None
        memory = await replica.add("User owns a red bicycle", user_id="u1", memory_id="bike")
        await replica.delete(memory.id)
        await replica.index.wait_idle()
        assert await replica.search("red bicycle", user_id="u1") == []
        await replica.add("User owns a blue bicycle", user_id="u1", memory_id="bike")
        await replica.index.wait_idle()
        (hit,) = await replica.search("blue bicycle", user_id="u1")
        assert hit.memory.content == "User owns a blue bicycle"
    async with Replica(tmp_path / "r.db", replica_id="r") as reopened:
        assert (await reopened.get("bike")).content == "User owns a blue bicycle"
