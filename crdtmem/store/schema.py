"""The SQLite store's schema: created on a new file, brought forward on an old one.

Version 2 (storage v2): a document's ``state`` is a snapshot that folds its deltas up to row
``snap_id``; the deltas after it are its tail (``deltas`` by ``doc_id, id``), and commits no longer
rewrite the state. A version-1 store kept every document's whole state, written with each of its
deltas, so on opening one every row's snapshot holds every delta stored so far: ``snap_id`` starts
at the highest delta row (one ALTER TABLE with that default, however many documents).

Version 3: the snapshot lives in its own table, ``doc_states`` (``doc_id``, ``state``), not in the
``docs`` row. SQLite rewrites a whole row, overflow pages included, whenever any column of it changes,
so a snapshot in the row made every commit that rewrote the record (each write to the memory) cost
the size of the state: ~1 ms per append to a 10,000-message conversation. A version-2 store's
snapshots move to the new table on opening (one transaction).

Version 4: a snapshot of 1 KiB or more is stored deflated (``doc_states.codec``, ``size``; rows of
version 3 read as they are), and ``deltas`` has no index on ``hlc``: the highest stamp, all it
served, comes from a mark in ``meta`` (``sqlite_stamps.py``). Opening a version-3 store adds the
two columns and drops the index; its snapshots are deflated as they are next rewritten.
"""

from __future__ import annotations

from typing import Any

from . import sqlite_fold, sqlite_quarantine, sqlite_states, sqlite_trust

SCHEMA_VERSION = "4"


def create_or_migrate(db: Any) -> None:
    """Create the tables a new store lacks; migrate a version-1 or 2 store (sqlite_utils ``Database``)."""
    tables = set(db.table_names())
    if "docs" in tables and "snap_id" not in db["docs"].columns_dict:
        _migrate_from_1(db)
    if "docs" in tables and "state" in db["docs"].columns_dict:
        _migrate_from_2(db)
        tables = set(db.table_names())
    if "meta" not in tables:
        db["meta"].create({"key": str, "value": str}, pk="key")
        db["meta"].insert({"key": "schema_version", "value": SCHEMA_VERSION})
        db["meta"].insert({"key": "version_counter", "value": "0"})
    if "docs" not in tables:
        db["docs"].create(
            {
                "id": str,
                "kind": str,
                "snap_id": int,
                "record": str,
                "user_id": str,
                "tenant_id": str,
                "deleted": int,
                "conflicted": int,
                "version": int,
                "updated_hlc": str,
            },
            pk="id",
        )
        # partial: a memory without a user (or tenant) costs its commit no page in that index,
        # and `user_id = ?` implies the index's condition, so queries still use it
        db.execute(
            "CREATE INDEX idx_docs_user_id_version ON docs(user_id, version) WHERE user_id IS NOT NULL"
        )
        db.execute(
            "CREATE INDEX idx_docs_tenant_id_version ON docs(tenant_id, version) WHERE tenant_id IS NOT NULL"
        )
        db["docs"].create_index(["version"])
    sqlite_states.create(db, tables)
    # queries name it (sqlite.py: a page of records by version); a store made without it gets it
    db.execute("CREATE INDEX IF NOT EXISTS idx_docs_version ON docs(version)")
    # small tables keyed by their primary key: WITHOUT ROWID stores each row once, in the key's
    # B-tree, so a commit dirties one page per table instead of two (the table and its key index)
    if "doc_channels" not in tables:
        db.execute(
            "CREATE TABLE doc_channels (channel TEXT, doc_id TEXT, PRIMARY KEY (channel, doc_id)) "
            "WITHOUT ROWID"
        )
    if "deltas" not in tables:
        db["deltas"].create(
            {
                "id": int,
                "uid": str,
                "origin": str,
                "doc_id": str,
                "hlc": str,
                "deps": bytes,
                "update": bytes,
            },
            pk="id",
        )
        db["deltas"].create_index(["uid"], unique=True)
        db["deltas"].create_index(["doc_id", "id"])
    if "log" not in tables:
        db.execute(
            "CREATE TABLE log (channel TEXT, origin TEXT, seq INTEGER, delta_id INTEGER, "
            "PRIMARY KEY (channel, origin, seq)) WITHOUT ROWID"
        )
    if "vv" not in tables:
        db.execute(
            "CREATE TABLE vv (channel TEXT, origin TEXT, seq INTEGER, PRIMARY KEY (channel, origin)) "
            "WITHOUT ROWID"
        )
    if "pending" not in tables:
        db["pending"].create({"uid": str, "doc_id": str, "delta": bytes}, pk="uid")
    if "outbox" not in tables:
        db.execute(
            "CREATE TABLE outbox (sink TEXT, channel TEXT, origin TEXT, seq INTEGER, "
            "PRIMARY KEY (sink, channel, origin)) WITHOUT ROWID"
        )
    if "stale" not in tables:  # records behind their deltas (materialized after the commit)
        db.execute("CREATE TABLE stale (doc_id TEXT PRIMARY KEY) WITHOUT ROWID")
    if "erased" not in tables:  # forgotten memories: the local version their erasure took, the
        # channels they were on (JSON) and their erase marker's stamp
        db.execute(
            "CREATE TABLE erased (doc_id TEXT PRIMARY KEY, version INTEGER, channels TEXT, hlc TEXT) "
            "WITHOUT ROWID"
        )
        db.execute("CREATE INDEX idx_erased_version ON erased(version)")
    elif "channels" not in db["erased"].columns_dict:  # kept before: no channels for those rows
        db.execute("ALTER TABLE erased ADD COLUMN channels TEXT")
        db.execute("ALTER TABLE erased ADD COLUMN hlc TEXT")
    if "conflicts" not in tables:
        db["conflicts"].create(
            {"doc_id": str, "field": str, "user_id": str, "tenant_id": str, "vals": str},
            pk=("doc_id", "field"),
        )
        db["conflicts"].create_index(["user_id"])
    sqlite_trust.create(db, tables)
    sqlite_fold.create(db, tables)
    sqlite_quarantine.create(db, tables)
    db.execute("DROP INDEX IF EXISTS idx_deltas_hlc")  # version 3 had it (sqlite_stamps.py)
    db.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version' AND value != ?",
        (SCHEMA_VERSION, SCHEMA_VERSION),
    )


def _migrate_from_1(db: Any) -> None:
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")  # one transaction: the column and the version move together
    try:
        (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM deltas").fetchone()
        conn.execute(f"ALTER TABLE docs ADD COLUMN snap_id INTEGER NOT NULL DEFAULT {int(top)}")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate_from_2(db: Any) -> None:
    """Move every snapshot from ``docs.state`` to ``doc_states`` and drop the column (one transaction)."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(sqlite_states.CREATE)
        conn.execute(
            "INSERT INTO doc_states(doc_id, state) SELECT id, state FROM docs WHERE state IS NOT NULL"
        )
        conn.execute("ALTER TABLE docs DROP COLUMN state")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
