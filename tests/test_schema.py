"""A store written before snapshots (schema 1: every document's whole state rewritten with each
delta) opens, migrates and reads the same; it goes on with snapshot + tail from there.

``tests/data/store-v1.db`` was written by crdtmem at schema 1 (``tests/data/make_store_v1.py``): a
fact updated 40 times with a conflict, a 32-message conversation, a list, a counter, a deleted memory.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from crdtmem import Replica
from crdtmem.store.schema import SCHEMA_VERSION
from crdtmem.testing import assert_converged, assert_store_consistent

V1 = Path(__file__).parent / "data" / "store-v1.db"
CHANNELS = ["user:u1:memories", "user:u2:memories", "tenant:acme:shared"]


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(V1, path)
    return path


def _stored(path: Path) -> dict[str, dict[str, object]]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        return {
            doc_id: {**json.loads(record), "version": version}
            for doc_id, record, version in conn.execute("SELECT id, record, version FROM docs")
        }
    finally:
        conn.close()


async def test_a_schema_1_store_opens_migrates_and_reads_the_same(old_store: Path, tmp_path: Path) -> None:
    before = _stored(old_store)
    assert len(before) == 5 and len(before["conv-1"]["content"]) == 32  # type: ignore[arg-type]
    async with Replica(old_store, cache_size=0) as replica:
        assert replica.id == "old"
        assert replica.store.get_meta("schema_version") == SCHEMA_VERSION
        for memory_id, record in before.items():
            assert (await replica.get(memory_id)).to_dict() == record
        assert {c.field for c in await replica.conflicts(memory_id="fact-1")} == {"content"}
        assert_store_consistent(replica)
        history = await replica.history("fact-1")
        assert len(history) == 42
        # it goes on: new deltas are the tail after each migrated state
        await replica.append_message("conv-1", role="user", text="after the migration")
        await replica.update("fact-1", content="settled")
        stored = replica.store.load_doc("conv-1")
        assert stored is not None and stored.snapshot is not None and len(stored.tail) == 1
        assert_store_consistent(replica)
        expected = {m: await replica.get(m) for m in before}
    async with Replica(old_store) as again, Replica(tmp_path / "fresh.db", replica_id="fresh") as fresh:
        for memory_id, memory in expected.items():
            assert await again.get(memory_id) == memory
        assert len((await again.get("conv-1")).content) == 33
        await fresh.apply(await again.export_since(CHANNELS))
        assert_converged([again, fresh])


async def test_migration_is_one_step_and_idempotent(old_store: Path) -> None:
    for _ in range(2):
        async with Replica(old_store) as replica:
            assert replica.store.get_meta("schema_version") == SCHEMA_VERSION
            assert (await replica.get("counter-1")).content == 7
    conn = sqlite3.connect(old_store)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(docs)")]
        (highest,) = conn.execute("SELECT max(id) FROM deltas").fetchone()
        snaps = {snap for (snap,) in conn.execute("SELECT DISTINCT snap_id FROM docs")}
    finally:
        conn.close()
    assert columns.count("snap_id") == 1
    assert snaps == {highest}  # every migrated state folds every delta stored before it


V2 = Path(__file__).parent / "data" / "store-v2.db"


async def test_a_schema_2_store_moves_its_snapshots_out_of_the_docs_rows(tmp_path: Path) -> None:
    """``tests/data/store-v2.db`` (``tests/data/make_store_v2.py``): two memories with a snapshot in
    ``docs.state`` and a tail after it, one without a snapshot."""
    path = tmp_path / "v2.db"
    shutil.copy(V2, path)
    conn = sqlite3.connect(path)
    try:
        kept = dict(conn.execute("SELECT id, state FROM docs WHERE state IS NOT NULL"))
    finally:
        conn.close()
    assert set(kept) == {"fact-1", "conv-1"}
    async with Replica(path, cache_size=0) as replica:
        assert replica.store.get_meta("schema_version") == SCHEMA_VERSION
        assert (await replica.get("fact-1")).content == "v24"
        assert [m["text"] for m in (await replica.get("conv-1")).content] == [f"turn {i}" for i in range(25)]
        assert (await replica.get("fact-2")).content == "no snapshot yet"
        for memory_id, state in kept.items():
            stored = replica.store.load_doc(memory_id)
            assert stored is not None and stored.snapshot == state
        assert_store_consistent(replica)
        await replica.append_message("conv-1", role="user", text="after the migration")
        await replica.snapshots.settle()
    conn = sqlite3.connect(path)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(docs)")]
        states = dict(conn.execute("SELECT doc_id, state FROM doc_states"))
    finally:
        conn.close()
    assert "state" not in columns and "snap_id" in columns
    assert states == kept  # the snapshots moved unchanged (one append is no reason for a new one)
    async with Replica(path) as again:
        assert len((await again.get("conv-1")).content) == 26
