"""The SQLite table of quarantined memories, beside the store's own (``sqlite.py`` uses it).

``quarantined`` keeps each memory found damaged (``doc_id``, ``reason``, ``since`` in ms) so that a
restarted node serves ``503`` for it at once, instead of finding the damage again only when the
memory is touched. A row goes when an operator releases the memory (``crdtmem check --release``) or
when the memory is forgotten. A table added to older files when they open (no data to convert).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .values import Quarantined


def create(db: Any, tables: set[str]) -> None:
    """Create the table if the file lacks it (``db`` is a sqlite_utils Database)."""
    if "quarantined" not in tables:
        db.execute(
            "CREATE TABLE quarantined (doc_id TEXT PRIMARY KEY, reason TEXT, since INTEGER) WITHOUT ROWID"
        )


def read(conn: sqlite3.Connection) -> list[Quarantined]:
    rows = conn.execute("SELECT doc_id, reason, since FROM quarantined ORDER BY doc_id")
    return [Quarantined(str(doc_id), str(reason), int(since or 0)) for doc_id, reason, since in rows]


def add(conn: sqlite3.Connection, entry: Quarantined) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO quarantined(doc_id, reason, since) VALUES (?, ?, ?)",
        (entry.memory_id, entry.reason[:1000], entry.since_ms),
    )


def remove(conn: sqlite3.Connection, memory_id: str) -> bool:
    return conn.execute("DELETE FROM quarantined WHERE doc_id = ?", (memory_id,)).rowcount > 0
