"""What a long memory costs in the SQLite file (schema 4): snapshots stored deflated, no index on
``deltas.hlc`` (the highest stamp comes from a mark in ``meta``), and a version-3 store brought
forward on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crdtmem import Replica
from crdtmem.clock import Hlc
from crdtmem.errors import MemoryQuarantined
from crdtmem.store import sqlite_stamps, sqlite_states
from crdtmem.store.schema import SCHEMA_VERSION
from crdtmem.store.sqlite import SQLiteStore
from crdtmem.testing import assert_store_consistent


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


async def test_a_long_conversation_snapshot_is_stored_deflated_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with Replica(path, snapshot_every=50) as replica:
        memory = await replica.add([], kind="conversation", user_id="u1")
        for i in range(120):
            await replica.append_message(memory.id, role="user", text=f"message {i} about the weather")
        await replica.snapshots.settle()
        before = replica.store.load_doc(memory.id)
    [(blob, codec, size)] = _rows(path, "SELECT state, codec, size FROM doc_states")
    assert codec == sqlite_states.DEFLATE and isinstance(blob, bytes) and size > len(blob) * 2
    async with Replica(path, cache_size=0) as again:
        stored = again.store.load_doc(memory.id)
        assert stored is not None and stored.snapshot is not None and len(stored.snapshot) == size
        assert before is not None and stored == before
        content = (await again.get(memory.id)).content
        assert [m["text"] for m in content] == [f"message {i} about the weather" for i in range(120)]
        assert_store_consistent(again)


async def test_a_small_snapshot_is_stored_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with Replica(path, snapshot_every=5) as replica:
        memory = await replica.add("v0", user_id="u1")
        for i in range(6):
            await replica.update(memory.id, content=f"v{i}")
        await replica.snapshots.settle()
    [(blob, codec, size)] = _rows(path, "SELECT state, codec, size FROM doc_states")
    assert codec is None and len(blob) == size < sqlite_states.PACK_AT  # type: ignore[arg-type]


async def test_a_snapshot_that_does_not_inflate_quarantines_its_memory_only(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with Replica(path, snapshot_every=20) as replica:
        memory = await replica.add([], kind="conversation", user_id="u1")
        other = await replica.add("kept", user_id="u1")
        for i in range(40):
            await replica.append_message(memory.id, role="user", text=f"message {i} about the weather")
        await replica.snapshots.settle()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE doc_states SET state = substr(state, 1, 40) WHERE doc_id = ?", (memory.id,))
    conn.close()
    async with Replica(path, cache_size=0, warm=0) as again:
        assert (await again.get(other.id)).content == "kept"
        with pytest.raises(MemoryQuarantined):
            await again.get(memory.id)
        (listed,) = again.storage_status()["quarantined"]
        assert listed["memory_id"] == memory.id and "inflate" in listed["reason"]


async def test_the_highest_stamp_survives_restarts_without_an_index(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with Replica(path, snapshot_every=10) as replica:
        memory = await replica.add("v0", user_id="u1")
        for i in range(25):  # snapshots move the mark; the last writes come after it
            await replica.update(memory.id, content=f"v{i}")
        await replica.snapshots.settle()
        for i in range(3):
            await replica.update(memory.id, content=f"after {i}")
    (highest,) = _rows(path, "SELECT max(hlc) FROM deltas")[0]
    mark = _rows(path, "SELECT value FROM meta WHERE key = 'hlc_mark'")
    assert mark and str(mark[0][0]).split(" ")[1] < str(highest)  # the newest rows are past the mark
    store = SQLiteStore(path)
    store.open()
    try:
        assert store.last_hlc() == highest
    finally:
        store.close()
    # a stamp ahead of everything, in a row before the mark, still counts
    conn = sqlite3.connect(path)
    with conn:
        ahead = Hlc.decode(str(highest))
        future = Hlc(ahead.wall_ms + 60_000, 0).encode()
        conn.execute("UPDATE deltas SET hlc = ? WHERE id = (SELECT min(id) FROM deltas)", (future,))
        conn.execute("DELETE FROM meta WHERE key = ?", (sqlite_stamps.KEY,))
    conn.close()
    async with Replica(path) as again:
        assert again.store.last_hlc() == future
        written = await again.update(memory.id, content="later")
        assert written.updated_at is not None
    assert _rows(path, "SELECT max(hlc) FROM deltas")[0][0] > future  # type: ignore[operator]


async def test_a_schema_3_store_loses_the_stamp_index_and_keeps_its_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with Replica(path, snapshot_every=50) as replica:
        memory = await replica.add([], kind="conversation", user_id="u1")
        for i in range(60):
            await replica.append_message(memory.id, role="user", text=f"message {i}")
        await replica.snapshots.settle()
        stored = replica.store.load_doc(memory.id)
        assert stored is not None and stored.snapshot is not None
    conn = sqlite3.connect(path)  # back to what schema 3 wrote: raw snapshots, an index on hlc
    with conn:
        conn.execute("CREATE INDEX idx_deltas_hlc ON deltas(hlc)")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        conn.execute("DELETE FROM meta WHERE key = ?", (sqlite_stamps.KEY,))
        conn.execute("DROP TABLE doc_states")
        conn.execute("CREATE TABLE doc_states (doc_id TEXT PRIMARY KEY, state BLOB)")
        conn.execute("INSERT INTO doc_states VALUES (?, ?)", (memory.id, stored.snapshot))
    conn.close()
    async with Replica(path, cache_size=0) as again:
        assert again.store.get_meta("schema_version") == SCHEMA_VERSION == "4"
        assert again.store.load_doc(memory.id) == stored
        assert len((await again.get(memory.id)).content) == 60
        assert_store_consistent(again)
    names = {str(n) for (n,) in _rows(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_deltas_hlc" not in names
    columns = {str(row[1]) for row in _rows(path, "PRAGMA table_info(doc_states)")}
    assert {"codec", "size"} <= columns
