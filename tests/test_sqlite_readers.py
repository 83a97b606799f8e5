"""Reads from another thread (the indexer reads its batches on a worker thread) never make a read on
the event loop's thread see a snapshot older than an acknowledged write."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from crdtmem import Replica

U1 = "user:u1:memories"


async def test_a_statement_left_open_on_another_thread_does_not_hold_back_reads(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        for i in range(3):
            await replica.add(f"memory {i}", user_id="u1")
        store = replica.store
        opened, release = threading.Event(), threading.Event()

        def reader() -> None:  # a read on a worker thread, its statement still stepping
            cursor = store._r.execute("SELECT id FROM docs")  # type: ignore[attr-defined]
            cursor.fetchone()
            opened.set()
            release.wait(10)
            cursor.close()

        worker = threading.Thread(target=reader)
        worker.start()
        try:
            assert opened.wait(10)
            made = await replica.add("written while the other thread reads", user_id="u1")
            ids = [r["id"] for r in store.query_records(channel=U1)]
            assert made.id in ids
        finally:
            release.set()
            worker.join(10)


async def test_each_thread_reads_on_its_own_connection_and_close_closes_them(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        store = replica.store
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.append(store._r))  # type: ignore[attr-defined]
        worker.start()
        worker.join(10)
        assert seen and seen[0] is not store._r  # type: ignore[attr-defined]
    assert store._thread_readers == {}  # type: ignore[attr-defined]


async def test_a_read_stepping_on_a_worker_thread_leaves_the_loops_reads_current(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        await replica.add(0, kind="counter", user_id="u1", memory_id="c")
        store = replica.store
        stepping, done = threading.Event(), threading.Event()

        def worker_read() -> None:
            cursor = store._r.execute("SELECT name FROM sqlite_master")  # type: ignore[attr-defined]
            cursor.fetchone()  # still stepping: this connection keeps its snapshot
            stepping.set()
            done.wait(30)
            cursor.close()

        reader = threading.Thread(target=worker_read)
        reader.start()
        try:
            assert await asyncio.to_thread(stepping.wait, 30)
            await replica.increment("c")
            assert store.version_vector(U1) == {"a": 2}
            logged = {d.seqs[U1] for d in store.deltas_since([U1], {})}
            assert logged == {1, 2}, "the loop's read sees the commit its vectors claim"
            assert store._r is not None  # type: ignore[attr-defined]
        finally:
            done.set()
            await asyncio.to_thread(reader.join)
    # every reader connection a thread opened is closed with the store
    assert store._thread_readers == {}  # type: ignore[attr-defined]


async def test_a_page_of_records_is_read_from_one_snapshot(tmp_path: Path) -> None:
    """A page sized by ``max_chars`` is chosen by one statement and read by another: a memory of the
    page changed between the two must still come back as the page chose it, or a reader that
    follows versions (the indexer) would take the later version as its mark and skip a change of
    another memory committed in between."""
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        first = await replica.add("first", user_id="u1")
        second = await replica.add("second", user_id="u1")
        store = replica.store
        loop = asyncio.get_running_loop()

        async def change_both() -> None:
            await replica.update(first.id, content="first, changed")  # outside the page
            await replica.update(second.id, content="second, changed")  # in it, at a later version

        def read_page() -> list[tuple[str, int]]:
            conn = store._r  # type: ignore[attr-defined]
            changed: list[str] = []

            def between(sql: str) -> None:  # the page is chosen; its records are read next
                if not changed and sql.startswith("SELECT d.id, d.kind, d.record"):
                    changed.append(sql)
                    asyncio.run_coroutine_threadsafe(change_both(), loop).result(30)

            conn.set_trace_callback(between)
            try:
                page = store.query_records(
                    include_deleted=True, since_version=first.version, ascending=True, max_chars=1 << 20
                )
            finally:
                conn.set_trace_callback(None)
            assert changed, "the page was read by one statement: nothing to change in between"
            return [(r["id"], r["version"]) for r in page]

        assert await asyncio.to_thread(read_page) == [(second.id, second.version)]
        assert (await replica.get(first.id)).version > second.version  # the change it must not skip
