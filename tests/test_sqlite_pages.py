"""A page of records read by version from the SQLite store reads that page, not the whole channel."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from crdtmem import Replica

U1 = "user:u1:memories"


async def test_a_page_of_a_channel_walks_the_version_index_and_reads_only_its_records(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        made = [await replica.add(f"memory {i}", user_id="u1") for i in range(5)]
        made.append(await replica.add("x" * 300_000, user_id="u1"))
        store = replica.store
        queries: list[str] = []
        store._r.set_trace_callback(queries.append)  # type: ignore[attr-defined]
        try:
            page = store.query_records(channel=U1, since_version=made[0].version, ascending=True, limit=2)
            back = store.query_records(channel=U1, before_version=made[-1].version, limit=2)
        finally:
            store._r.set_trace_callback(None)  # type: ignore[attr-defined]
        assert [r["id"] for r in page] == [m.id for m in made[1:3]]
        assert [r["id"] for r in back] == [m.id for m in made[4:2:-1]]
        plans = []
        with sqlite3.connect(tmp_path / "a.db") as db:
            for sql in queries:
                if sql in ("BEGIN", "COMMIT"):  # the read transaction a page is read in
                    continue
                plans.append(" | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)))
        for plan in plans:
            assert "idx_docs_version" in plan, plan
            assert plan.count("TEMP B-TREE") <= 1, plan  # the page's own few rows, never the channel


@pytest.mark.parametrize("on_file", [True, False])
async def test_a_page_bounded_in_characters_ends_after_the_record_that_reaches_the_bound(
    tmp_path: Path, on_file: bool
) -> None:
    async with Replica(tmp_path / "a.db" if on_file else None, replica_id="a") as replica:
        small = await replica.add("small", user_id="u1")
        large = [await replica.add("x" * 100_000, user_id="u1") for _ in range(3)]
        after = await replica.add("after", user_id="u1")
        page = await replica.list(channel=U1, since_version=0, ascending=True, limit=50, max_chars=150_000)
        assert [m.id for m in page] == [small.id, large[0].id]
        page = await replica.list(channel=U1, since_version=small.version, ascending=True, max_chars=10)
        assert [m.id for m in page] == [large[0].id]  # at least one, however large
        rest = await replica.list(channel=U1, since_version=large[2].version, ascending=True, max_chars=10)
        assert [m.id for m in rest] == [after.id]


@pytest.mark.parametrize("on_file", [True, False])
async def test_a_page_read_off_the_loop_is_the_same_page_read_on_a_worker_thread(
    tmp_path: Path, on_file: bool
) -> None:
    async with Replica(tmp_path / "a.db" if on_file else None, replica_id="a") as replica:
        for i in range(5):
            await replica.add(f"memory {i}", user_id="u1", metadata={"i": i})
        await replica.add("x" * 100_000, user_id="u1")
        store = replica.store
        threads: list[int] = []
        query = store.query_records

        def spied(**kwargs: Any) -> list[dict[str, Any]]:
            threads.append(threading.get_ident())
            return query(**kwargs)

        store.query_records = spied  # type: ignore[method-assign]
        args: dict[str, Any] = {"channel": U1, "since_version": 1, "ascending": True, "limit": 4}
        on_loop = await replica.list(**args, max_chars=1_000)
        off_loop = await replica.list(**args, max_chars=1_000, off_loop=True)
        assert [m.to_dict() for m in off_loop] == [m.to_dict() for m in on_loop] and len(on_loop) > 1
        assert threads[0] == threading.get_ident() and threads[1] != threading.get_ident()


async def test_reads_off_the_loop_have_connections_of_their_own_closed_with_the_store(tmp_path: Path) -> None:
    """One SQLite connection runs one statement at a time: a worker thread decoding a page of
    megabytes on the loop's connection would hold up every read the loop makes meanwhile."""
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        await replica.add("a memory", user_id="u1")
        store = replica.store
        on_loop = store._r  # type: ignore[attr-defined]
        off_loop = await asyncio.to_thread(lambda: store._r)  # type: ignore[attr-defined]
        assert off_loop is not on_loop and store._r is on_loop  # type: ignore[attr-defined]
        assert [m.content for m in await replica.list(channel=U1, off_loop=True)] == ["a memory"]
    with pytest.raises(sqlite3.ProgrammingError):
        off_loop.execute("SELECT 1")  # closed with the store
