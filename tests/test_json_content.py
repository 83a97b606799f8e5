"""Facts and preferences hold any JSON value, merged as registers: concurrent writes of different
values are a conflict, compared in canonical form (object key order does not matter)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdtmem import InvalidInput, Replica, SyncReplica

VALUES: list[Any] = [
    {"city": "Lisbon", "since": 2019, "tags": ["home", None], "nested": {"ok": True}},
    ["tea", {"sugar": 0}],
    42,
    2**70,
    -3.25,
    True,
    False,
    None,
    "",
    "plain text",
]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        yield a, b


async def sync(source: Replica, target: Replica) -> None:
    channels = source.store.channels()
    await target.apply(await source.export_since(channels, target.version_vectors(channels)))


@pytest.mark.parametrize("value", VALUES, ids=repr)
async def test_every_json_value_is_content_and_survives_sync_and_restart(tmp_path: Path, value: Any) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        for kind in ("fact", "preference"):
            memory = await a.add(value, kind=kind, user_id="u1")  # type: ignore[arg-type]
            assert memory.content == value
            assert (await a.get(memory.id)).content == value
            await sync(a, b)
            assert (await b.get(memory.id)).content == value
            assert [m.content for m in await b.list(kind=kind)] == [value]  # type: ignore[arg-type]
    async with Replica(tmp_path / "b.db", replica_id="b") as reopened:
        assert [m.content for m in await reopened.list()] == [value, value]


async def test_update_sets_any_value_and_leaves_content_alone_without_one(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        memory = await a.add({"v": 1}, user_id="u1")
        assert (await a.update(memory.id, content=[1, 2])).content == [1, 2]
        assert (await a.update(memory.id, metadata={"k": "x"})).content == [1, 2]
        assert (await a.update(memory.id, content=None)).content is None  # JSON null is a value
        assert (await a.update(memory.id, add_tags=["t"])).content is None
        history = await a.history(memory.id)
        assert [h.content for h in history] == [{"v": 1}, [1, 2], [1, 2], None, None]
        with pytest.raises(InvalidInput, match="needs content"):
            await a.add(kind="fact", user_id="u1")


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), {1, 2}, b"bytes", object(), _nested(70)],
    ids=["nan", "inf", "set", "bytes", "object", "70-deep"],
)
async def test_values_json_cannot_carry_are_refused(tmp_path: Path, bad: Any) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        with pytest.raises(InvalidInput):
            await a.add(bad, user_id="u1")
        assert await a.list() == []
        assert (await a.add(_nested(60), user_id="u1")).content == _nested(60)  # inside the limit


async def test_equal_objects_in_any_key_order_are_one_value(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    memory = await a.add("start", user_id="u1")
    await sync(a, b)
    await a.update(memory.id, content={"a": 1, "b": {"x": [1, 2], "y": None}})
    await b.update(memory.id, content={"b": {"y": None, "x": [1, 2]}, "a": 1})
    await sync(a, b)
    await sync(b, a)
    assert not (await a.get(memory.id)).conflicted
    assert await a.conflicts() == await b.conflicts() == []


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [({"a": 1}, {"a": 2}), ([1, 2], [2, 1]), (1, 1.0), (True, 1), (None, "null"), ({"a": 1}, "x")],
)
async def test_concurrent_different_values_are_a_conflict_listing_both(
    pair: tuple[Replica, Replica], mine: Any, theirs: Any
) -> None:
    a, b = pair
    memory = await a.add("start", user_id="u1")
    await sync(a, b)
    await a.update(memory.id, content=mine)
    await b.update(memory.id, content=theirs)
    await sync(a, b)
    await sync(b, a)
    (conflict,) = await a.conflicts()
    assert await b.conflicts() == [conflict]
    assert conflict.field == "content"
    assert sorted(repr(v.value) for v in conflict.values) == sorted([repr(mine), repr(theirs)])
    resolved = await b.resolve(memory.id, field="content", value={"chosen": [mine, theirs]})
    assert resolved.content == {"chosen": [mine, theirs]} and not resolved.conflicted
    await sync(b, a)
    assert await a.conflicts() == []


def test_sync_replica_takes_json_content(tmp_path: Path) -> None:
    with SyncReplica(tmp_path / "s.db", replica_id="s") as replica:
        memory = replica.add({"todo": ["coffee"]}, user_id="u1")
        assert replica.update(memory.id, content={"todo": []}).content == {"todo": []}
        assert replica.get(memory.id).content == {"todo": []}
