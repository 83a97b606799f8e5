"""Documents' snapshots in the SQLite store: ``doc_states`` (``doc_id``, ``state``).

A snapshot folds its document's deltas up to ``docs.snap_id`` (see ``schema.py``). It has a table of
its own because SQLite rewrites a whole row, overflow pages included, when any column of it changes:
in the ``docs`` row, which every commit to the memory rewrites (record, version), a snapshot made
each write cost the size of the document's state.
"""

from __future__ import annotations

import sqlite3
from typing import Any

CREATE = "CREATE TABLE IF NOT EXISTS doc_states (doc_id TEXT PRIMARY KEY, state BLOB)"


def create(db: Any, tables: set[str]) -> None:
    if "doc_states" not in tables:
        db.execute(CREATE)


def put(conn: sqlite3.Connection, doc_id: str, state: bytes) -> None:
    """Store ``state`` as the snapshot of ``doc_id`` (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO doc_states(doc_id, state) VALUES (?, ?) "
        "ON CONFLICT(doc_id) DO UPDATE SET state = excluded.state",
        (doc_id, state),
    )
