"""Run the Store conformance suite against every adapter, plus SQLite-only durability checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crdtmem import Replica, StorageError
from crdtmem.store import Commit, MemoryStore, SQLiteStore, Store
from crdtmem.store.base import Erased

from .store_suite import USER, StoreSuite, delta, doc, snapshot


class TestMemoryStore(StoreSuite):
    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()

    def reopen(self, store: Store) -> Store:
        store.close()  # an in-memory store keeps its data for as long as the object lives
        store.open()
        return store


class TestSQLiteStore(StoreSuite):
    def make_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(tmp_path / "store.db")

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, SQLiteStore)
        store.close()
        again = SQLiteStore(store.path, synchronous=store.synchronous)
        again.open()
        return again


# -- SQLite only ----------------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SQLiteStore(tmp_path / "store.db")
    store.open()
    yield store
    store.close()


def test_wal_mode_and_synchronous(tmp_path: Path) -> None:
    for mode, expected in (("FULL", 2), ("NORMAL", 1)):
        store = SQLiteStore(tmp_path / f"{mode}.db", synchronous=mode)  # type: ignore[arg-type]
        store.open()
        try:
            assert store._w.execute("PRAGMA synchronous").fetchone()[0] == expected
            assert store._r.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert store.integrity_check() == "ok"
        finally:
            store.close()


def test_sqlite_error_is_a_storage_error_and_writes_nothing(sqlite_store: SQLiteStore) -> None:
    sqlite_store.commit([Commit(deltas=[delta(1)], docs=[doc("d1")])])
    before = snapshot(sqlite_store)
    unbindable = doc("d2")
    object.__setattr__(unbindable, "user_id", {"not": "text"})  # sqlite3 cannot bind a dict
    with pytest.raises(StorageError, match="nothing was written"):
        sqlite_store.commit([Commit(deltas=[delta(2)], docs=[doc("d3")]), Commit(docs=[unbindable])])
    assert snapshot(sqlite_store) == before
    assert sqlite_store.load_record("d3") is None
    (result,) = sqlite_store.commit([Commit(deltas=[delta(2)])])
    assert result.seqs[delta(2).uid] == {USER: 2}


def test_committed_data_is_visible_to_a_second_connection(sqlite_store: SQLiteStore) -> None:
    sqlite_store.commit([Commit(deltas=[delta(1)], docs=[doc("d1")])])
    with sqlite3.connect(sqlite_store.path) as other:
        assert other.execute("SELECT count(*) FROM docs").fetchone()[0] == 1
        assert other.execute("SELECT seq FROM vv").fetchall() == [(1,)]
    other.close()


def test_closed_store_raises_storage_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    store.open()
    store.close()
    with pytest.raises(StorageError):
        store.load_record("d1")
    with pytest.raises(StorageError):
        store.commit([Commit(docs=[doc("d1")])])


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite file" * 100)
    store = SQLiteStore(path)
    with pytest.raises(StorageError, match="cannot open"):
        store.open()
    assert path.read_bytes() == b"this is not an SQLite file" * 100


async def test_replica_on_a_garbage_file_raises_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"\x00garbage" * 512)
    with pytest.raises(StorageError):
        await Replica(path).start()


def test_version_counter_survives_a_crash_during_schema_creation(tmp_path: Path) -> None:
    """The schema is created in several autocommit statements; a process killed after ``meta`` was
    created but before its ``version_counter`` row was inserted leaves a file whose version counter is
    never persisted, so document versions repeat after every restart. This reproduces that file."""
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    store.open()
    store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM meta")  # the state right after CREATE TABLE meta
    raw.close()
    store = SQLiteStore(path)
    store.open()
    (first,) = store.commit([Commit(docs=[doc("a")])])
    store.close()
    store = SQLiteStore(path)
    store.open()
    try:
        (second,) = store.commit([Commit(docs=[doc("b")])])
        assert second.versions["b"] > first.versions["a"], "document versions were reused after reopen"
    finally:
        store.close()


def test_erasures_kept_before_their_channels_were_open_with_none(tmp_path: Path) -> None:
    """A file whose ``erased`` table predates the channels and marker stamp opens, and its older
    erasures name none (the feed does not announce them on resume)."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE erased (doc_id TEXT PRIMARY KEY, version INTEGER) WITHOUT ROWID")
        db.execute("INSERT INTO erased VALUES ('gone', 7)")
    db.close()
    store = SQLiteStore(path)
    store.open()
    try:
        assert store.erasures_since(0) == [Erased("gone", 7, (), "")]
        store.commit([Commit(deltas=[delta(8, doc_id="d1")], docs=[doc("d1")])])
        (result,) = store.commit([Commit(deltas=[delta(9, doc_id="d1")], erase=["d1"])])
        assert store.erasures_since(7) == [Erased("d1", result.versions["d1"], (USER,), delta(9).hlc)]
    finally:
        store.close()
