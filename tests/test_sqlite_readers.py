"""Reads on other threads (the indexer reads its batches of records on a worker thread) never hold
the event loop's reads on an old snapshot of the file: each thread reads on a connection of its own."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from crdtmem import Replica

U1 = "user:u1:memories"


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
    assert store._other_readers == []  # type: ignore[attr-defined]
