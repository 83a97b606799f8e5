"""Forgetting a document in the SQLite store (``Commit.erase``; see :mod:`crdtmem.store.base`).

The document's deltas become stubs: each row keeps its uid, origin, stamp and log entries, its deps
become the empty state vector and its update the empty update, without the signature of its
content; its claim, and the origin's header signature in it, stay (a stub's proof). Its record, snapshot,
channel rows, conflicts, stale mark, quarantine, pending and decided deltas are deleted, and the
``erased`` table keeps the id with the local version of the erasure, the channels the document was
on and the stamp of its erase marker (what its ``forgotten`` event names). The connections run with
``secure_delete``, so the freed bytes are zeroed; :meth:`SQLiteStore.scrub` then truncates the
write-ahead log.
"""

from __future__ import annotations

import json
import sqlite3

from ..document.erasure import EMPTY_DEPS, EMPTY_UPDATE

_GONE = (
    ("docs", "id"),
    ("doc_states", "doc_id"),
    ("doc_channels", "doc_id"),
    ("conflicts", "doc_id"),
    ("stale", "doc_id"),
    ("pending", "doc_id"),
    ("decided", "doc_id"),
    ("quarantined", "doc_id"),
)


def erase(conn: sqlite3.Connection, doc_id: str, version: int, hlc: str) -> None:
    """Forget ``doc_id`` inside the caller's transaction (``hlc``: its erase marker's stamp)."""
    rows = conn.execute("SELECT channel FROM doc_channels WHERE doc_id = ? ORDER BY channel", (doc_id,))
    channels = [channel for (channel,) in rows]
    conn.execute(
        # the claim stays: with the origin's header signature in it, the stub stays verifiable
        "UPDATE deltas SET deps = ?, [update] = ?, sig = NULL WHERE doc_id = ?",
        (EMPTY_DEPS, EMPTY_UPDATE, doc_id),
    )
    for table, column in _GONE:
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (doc_id,))
    conn.execute(
        "INSERT OR REPLACE INTO erased(doc_id, version, channels, hlc) VALUES (?, ?, ?, ?)",
        (doc_id, version, json.dumps(channels), hlc),
    )
