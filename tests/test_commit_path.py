"""The commit path: a lone writer commits inline, concurrent writers group, WAL checkpoints run off
the write path and keep the log bounded. Real SQLite files throughout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.store import checkpoint


async def test_a_lone_writer_commits_inline_and_concurrent_writers_share_commits(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        committer = replica._committer
        for i in range(20):
            await replica.add(f"fact {i}", user_id="u1")
        assert committer.inline_units == 20, f"{committer.inline_units} of 20 inline"

        before_units, before_groups = committer.units, committer.groups
        await asyncio.gather(*(replica.add(f"together {i}", user_id="u1") for i in range(64)))
        units, groups = committer.units - before_units, committer.groups - before_groups
        assert units == 64
        assert groups <= units // 2, f"64 concurrent writes took {groups} commits: no group commit"

        listed = await replica.list(user_id="u1", limit=200)
        assert len(listed) == 84


async def test_checkpoints_keep_the_log_bounded_under_continuous_writes(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with Replica(db, replica_id="a") as replica:
        checkpointer = replica._store._checkpointer  # type: ignore[attr-defined]
        sizes = []
        for i in range(700):
            await replica.add(f"a fact that is written while the log is checkpointed {i}", user_id="u1")
            if i % 100 == 99:
                sizes.append(os.path.getsize(f"{db}-wal"))
        assert checkpointer.checkpoints >= 2
        assert checkpointer.errors == 0
        # ~17 pages per write: without restarting the log it would grow ~7 MB per 100 writes to the end
        assert max(sizes) < 32 * 2**20, f"the WAL kept growing: {sizes}"
        assert sizes[-1] <= 1.3 * sizes[3], f"the WAL kept growing: {sizes}"
    async with Replica(db, replica_id="a") as reopened:
        assert len(await reopened.list(user_id="u1", limit=1000)) == 700
        assert reopened._store.integrity_check() == "ok"  # type: ignore[attr-defined]


async def test_a_write_cancelled_during_its_commit_does_not_let_the_next_one_build_on_old_state(tmp_path):
    """The commit thread finishes a unit whose writer was cancelled; the next write must build on it,
    or the two replicas' views of the memory would diverge for good."""
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        made = await a.add("v0", user_id="u1")
        asyncio.get_running_loop().call_soon(lambda: None)  # other work queued: the commit goes to the thread
        first = asyncio.create_task(a.update(made.id, content="v1", metadata={"k": "one"}))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        second = await a.update(made.id, content="v2")
        assert (second.content, second.metadata) == ("v2", {"k": "one"})
        async with Replica(None, replica_id="b") as b:
            await b.apply(await a.export_since(a.store.channels()))
            on_b = await b.get(made.id)
        assert (on_b.content, on_b.metadata) == ("v2", {"k": "one"})
        assert a._committer._outstanding == 0


async def _drain(subscription, replica: Replica) -> list:
    """The events before a barrier write made now: all the subscription gets for earlier commits (the
    feed delivers in commit order), with no quiet period to guess."""
    barrier = await replica.add("barrier", user_id="barrier")
    events = []
    while True:
        event = await asyncio.wait_for(subscription.__anext__(), 30)
        if event.memory.id == barrier.id:
            return events
        events.append(event)


async def test_a_writer_cancelled_while_its_commit_lands_still_gets_its_event(tmp_path: Path) -> None:
    """The caller gave up, but the change is durable: it gets its event and its eager push like any."""
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        memories = [await a.add(f"m{i}", user_id="u1") for i in range(20)]
        events = a.events()
        pushed: list = []
        a.on_commit(pushed.extend)
        tasks = [asyncio.create_task(a.update(m.id, content=f"new {m.id}")) for m in memories]
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # every task now waits for the commit thread
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        durable = [m for m in memories if (await a.get(m.id)).content == f"new {m.id}"]
        assert len(durable) > 10  # some cancelled writes landed: the case under test
        pushed_count = len(pushed)
        assert len(await _drain(events, a)) == len(durable) == pushed_count


async def test_an_apply_cancelled_while_its_commit_lands_keeps_the_waiting_set(tmp_path: Path) -> None:
    """A delta parked by a cancelled apply is retried when its dependency arrives (it stayed behind)."""
    channel = "user:u1:memories"
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory = await a.add("v0", user_id="u1")
        await b.apply(await a.export_since(channel, {}))
        await a.update(memory.id, content="v1")
        await a.update(memory.id, content="v2")
        first, second = a.store.deltas_since([channel], {channel: {"a": 1}})
        other = await b.add("keeps the commit thread busy", user_id="u1")
        busy = asyncio.create_task(b.update(other.id, content="x"))  # b is not alone: thread commits
        parking = asyncio.create_task(b.apply(wire.encode(wire.Payload("a", [second]))))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        parking.cancel()
        await asyncio.gather(parking, busy, return_exceptions=True)
        assert b.pending_count == len(b.store.pending())
        await b.apply(wire.encode(wire.Payload("a", [first])))
        assert (await b.get(memory.id)).content == "v2"
        assert b.store.pending() == [] and b.pending_count == 0


async def test_one_payload_applied_twice_at_once_changes_and_announces_once(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory = await a.add("hello", user_id="u1")
        await a.update(memory.id, content="world")
        payload = await a.export_since(["user:u1:memories"])
        events = b.events()
        one, two = await asyncio.gather(b.apply(payload), b.apply(payload))
        assert sorted([one.applied, two.applied]) == [0, 2] and one.duplicates + two.duplicates == 2
        assert [e.event_type for e in await _drain(events, b)] == ["create"]
        assert (await b.get(memory.id)).version == 1
        assert len(await b.history(memory.id)) == 2


async def test_a_timeout_around_a_write_whose_commit_lands_late_is_a_timeout(tmp_path: Path) -> None:
    """The cancellation a timeout sends must come back as TimeoutError, with the write durable and
    announced (a CancelledError subclass here escaped ``asyncio.timeout`` on Python 3.11)."""
    async with Replica(tmp_path / "r.db", replica_id="r") as replica:
        real = replica.store.commit

        def slow(work):  # the commit thread takes its time
            time.sleep(0.3)
            return real(work)

        replica.store.commit = slow  # type: ignore[method-assign]
        events = replica.events()
        busy = asyncio.create_task(replica.add("keeps the write off the inline path", user_id="u1"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await replica.add("late", user_id="u1")
        await busy
        assert sorted(m.content for m in await replica.list()) == [
            "keeps the write off the inline path",
            "late",
        ]
        assert len(await _drain(events, replica)) == 2


async def test_a_big_unit_commits_on_the_commit_thread_even_alone(tmp_path: Path) -> None:
    """Only a small unit commits on the event loop: a page of deltas or a large value is serialized
    and written on the commit thread, so the loop serves others during its commit."""
    async with Replica(None, replica_id="src") as source:
        for i in range(100):
            await source.add(f"fact {i}", user_id="u1")
        page = await source.export_since("user:u1:memories", {})
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        committer = replica._committer
        await replica.add("small", user_id="u1")
        assert committer.inline_units == 1
        await replica.add("x" * (256 * 1024), user_id="u1")
        assert committer.inline_units == 1, "a 256 KiB value committed on the event loop"
        result = await replica.apply(page)
        assert result.applied == 100
        assert committer.inline_units == 1, "a page of 100 deltas committed on the event loop"
        await replica.settle()  # the page's memories read back: one unit of 100 records
        assert committer.inline_units == 1, "100 records read back committed on the event loop"


async def test_a_small_write_commits_ahead_of_large_writes_queued_before_it(tmp_path: Path) -> None:
    """The store's writer lock is held (as by a long commit) while three large writes and then a
    small one queue: the small one lands before the large ones still queued, and they keep their
    order. Each write is acknowledged with what its own commit assigned."""
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        committer = replica._committer
        held, release = threading.Event(), threading.Event()

        def hold_the_writer() -> None:
            with replica._store._lock:  # type: ignore[attr-defined]
                held.set()
                release.wait()

        holder = threading.Thread(target=hold_the_writer)
        holder.start()
        held.wait()
        try:
            large = [
                asyncio.ensure_future(replica.add(f"{i}" + "x" * 200_000, user_id="u1")) for i in range(3)
            ]
            while committer._outstanding < 3:
                await asyncio.sleep(0)
            small = asyncio.ensure_future(replica.add("small", user_id="u1"))
            while committer._outstanding < 4:
                await asyncio.sleep(0)
        finally:
            release.set()
            await asyncio.to_thread(holder.join)
        first, second, third = [memory.version for memory in await asyncio.gather(*large)]
        mine = (await small).version
        assert first < second < third
        assert mine < third and mine < second, "the small write waited behind large ones queued before it"
        assert committer.overtaking_units >= 1
        listed = {m.version: m.content for m in await replica.list(user_id="u1", limit=10)}
        assert listed[mine] == "small"


class _ScriptedLog:
    """A connection whose PASSIVE checkpoints report these cumulative checkpointed frame counts."""

    def __init__(self, counts: list[int]):
        self.counts = counts
        self.passes = 0

    def execute(self, sql: str) -> _ScriptedLog:
        assert sql == "PRAGMA wal_checkpoint(PASSIVE)"
        self.passes += 1
        return self

    def fetchall(self) -> list[tuple[int, int, int]]:
        count = self.counts[self.passes - 1]
        return [(0, count, count)]


@pytest.mark.parametrize(
    ("counts", "passes"),
    [([10], 1), ([5000, 5030], 2), ([5000, 9000, 9010], 3), ([5000, 9000, 13000, 17000, 1], 4)],
)
def test_passive_checkpoints_repeat_while_large_commits_keep_arriving(counts: list[int], passes: int) -> None:
    """What is left for the RESTART (which holds the writer lock) is copied first while writers go on,
    a bounded number of passes."""
    log = _ScriptedLog(counts)
    checkpoint._copy_while_writers_go_on(log)  # type: ignore[arg-type]
    assert log.passes == passes


@pytest.mark.parametrize(
    ("left", "in_a_row", "now"),
    [(0, 0, True), (256, 0, True), (257, 0, False), (5000, 1, False), (5000, 2, True), (5000, 9, True)],
)
def test_a_restart_is_put_off_while_much_is_left_to_copy_but_not_for_ever(
    left: int, in_a_row: int, now: bool
) -> None:
    """Every commit waits while a RESTART holds the writer lock: it runs when little is left to copy,
    or after it was put off a few rounds in a row (so the log still restarts under large commits)."""
    assert checkpoint.restart_now(left, in_a_row) is now


def test_a_restart_gives_up_on_a_reader_still_using_the_log_and_restarts_it_later(tmp_path: Path) -> None:
    """A reader holding a snapshot keeps the log from restarting: the round gives up (busy) instead
    of holding the writer lock until the reader is done, and a later round restarts the log."""
    db = tmp_path / "a.db"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    writer, reader = connect(), connect()
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t(x)")
    writer.execute("INSERT INTO t VALUES (1)")
    lock = threading.Lock()
    checkpointer = checkpoint.Checkpointer(connect, lock)
    conn = checkpointer.connection()
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)  # a snapshot of the log
    writer.execute("INSERT INTO t VALUES (2)")
    checkpointer.run_round(conn)
    assert (checkpointer.busy, checkpointer.checkpoints) == (1, 0)
    assert not lock.locked()
    reader.execute("COMMIT")
    checkpointer.run_round(conn)
    assert (checkpointer.busy, checkpointer.checkpoints) == (1, 1)
    writer.execute("INSERT INTO t VALUES (3)")  # the log starts over: its first frames again
    assert writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] <= 2
    for c in (conn, reader, writer):
        c.close()


async def test_a_commit_listener_that_fails_does_not_fail_the_write_that_landed(tmp_path: Path) -> None:
    """What follows a commit happens once per commit that landed: a listener that raises is logged,
    the other listeners still run, the write returns its memory, its event is published and reads
    see it."""
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        memory = await replica.add("before", user_id="u1")
        told: list[str] = []

        def fails(deltas: list) -> None:
            raise RuntimeError("a listener's bug")

        replica.on_commit(fails)
        replica.on_commit(lambda deltas: told.extend(d.doc_id for d in deltas))
        events = replica.events()
        updated = await replica.update(memory.id, content="after")
        assert updated.content == "after" and told == [memory.id]
        event = await events.get(timeout=5)
        assert event is not None and event.memory is not None and event.memory.content == "after"
        assert (await replica.get(memory.id)).content == "after"
        await events.aclose()
