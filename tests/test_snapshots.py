"""A document stored as a snapshot plus the tail of deltas after it: snapshots are taken off the
acknowledgement path, and a document rebuilt from snapshot and tail is the document itself."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem import Replica
from crdtmem.document.memory import MemoryDoc
from crdtmem.testing import assert_converged, assert_store_consistent

CH = "user:u1:memories"


def _tail(replica: Replica, memory_id: str) -> int:
    stored = replica.store.load_doc(memory_id)
    assert stored is not None
    return len(stored.tail)


async def test_a_long_tail_gets_a_snapshot_after_the_write_is_acknowledged(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a", snapshot_every=10) as replica:
        conversation = await replica.add([], kind="conversation", user_id="u1")
        fact = await replica.add("v0", user_id="u1")
        for i in range(45):
            await replica.append_message(conversation.id, role="user", text=f"turn {i}")
            await replica.update(fact.id, content=f"v{i + 1}")
        await replica.snapshots.settle()
        assert replica.snapshots.taken >= 8
        for memory_id in (conversation.id, fact.id):
            stored = replica.store.load_doc(memory_id)
            assert stored is not None and stored.snapshot is not None
            assert len(stored.tail) < 10, f"{len(stored.tail)} deltas after the snapshot"
            rebuilt = MemoryDoc.from_parts(memory_id, stored.snapshot, stored.tail, 1)
            assert rebuilt.materialize(replica.cache.get(memory_id).version) == await replica.get(memory_id)
        expected = {m: await replica.get(m) for m in (conversation.id, fact.id)}
        assert_store_consistent(replica)
    async with Replica(tmp_path / "a.db", cache_size=0) as reopened:
        for memory_id, memory in expected.items():
            assert await reopened.get(memory_id) == memory
        await reopened.append_message(conversation.id, role="user", text="after reopening")
        assert len((await reopened.get(conversation.id)).content) == 46


async def test_a_snapshot_never_holds_a_change_that_is_not_committed(tmp_path: Path) -> None:
    """Writes keep coming while snapshots are taken; each snapshot folds only committed deltas, so
    whatever the interleaving, snapshot + tail is the document."""
    async with Replica(tmp_path / "a.db", replica_id="a", snapshot_every=2) as replica:
        ids = [(await replica.add(f"m{i}", user_id="u1")).id for i in range(4)]
        await asyncio.gather(
            *(replica.update(ids[i % 4], content=f"v{i}", metadata={"i": i}) for i in range(60))
        )
        await replica.snapshots.settle()
        assert replica.snapshots.taken > 0
        assert_store_consistent(replica)


_ops = st.lists(
    st.tuples(st.sampled_from(["update", "append", "sync", "reopen"]), st.integers(0, 1), st.integers(0, 9)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, every=st.integers(1, 6))
def test_records_rebuilt_from_snapshot_and_tail_equal_those_read_from_the_whole_state(
    tmp_path_factory: object, ops: list[tuple[str, int, int]], every: int
) -> None:
    directory: Path = tmp_path_factory.mktemp("snap")  # type: ignore[attr-defined]
    ticks = itertools.count(1_700_000_000_000)
    asyncio.run(_run(directory, ops, every, ticks))


async def _run(
    directory: Path, ops: list[tuple[str, int, int]], every: int, ticks: itertools.count[int]
) -> None:
    def open_replica(name: str) -> Replica:
        return Replica(
            directory / f"{name}.db", replica_id=name, snapshot_every=every, wall_clock=lambda: next(ticks)
        )

    replicas = [await open_replica(n).start() for n in ("a", "b")]
    try:
        fact = await replicas[0].add("v", user_id="u1", memory_id="fact")
        chat = await replicas[0].add([], kind="conversation", user_id="u1", memory_id="chat")
        await replicas[1].apply(await replicas[0].export_since([CH]))
        for op, who, n in ops:
            replica = replicas[who]
            if op == "update":
                await replica.update(fact.id, content=f"{replica.id}{n}", metadata={"n": n})
            elif op == "append":
                await replica.append_message(chat.id, role="user", text=f"{replica.id} says {n}")
            elif op == "sync":
                await replicas[1 - who].apply(await replica.export_since([CH]))
            else:
                await replica.snapshots.settle()
                await replica.stop()
                replicas[who] = await open_replica(replica.id).start()
        for replica in replicas:
            await replica.snapshots.settle()
            assert_store_consistent(replica)
        for a, b in ((0, 1), (1, 0)):
            await replicas[b].apply(await replicas[a].export_since([CH]))
        assert_converged(replicas)
    finally:
        for replica in replicas:
            await replica.stop()
