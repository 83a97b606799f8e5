"""The SQLite tables of the trust model, beside the store's own (``sqlite.py`` uses these).

- ``pending`` keeps, with each waiting delta, who delivered it (``sender``) and when (``received``);
  rows written before these columns existed have no sender and are dropped on open: they were never
  claimed by a version vector, so their senders send them again.
- ``deltas.sig`` and ``deltas.claim`` keep a signed delta's origin signature and claim (NULL for
  deltas stored unsigned, or before signing existed: they keep working as they are);
- ``decided`` keeps the deltas decided against (:class:`~crdtmem.store.base.Decision`); their
  ``log`` rows have no ``delta_id``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .codec import decode_delta, encode_delta
from .values import Decision, PendingDelta


def create(db: Any, tables: set[str]) -> None:
    """Create or upgrade the trust model's tables (``db`` is a sqlite_utils Database)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(pending)").fetchall()}
    for name, kind in (("origin", "TEXT"), ("sender", "TEXT"), ("received", "INTEGER")):
        if name not in columns:
            db.execute(f"ALTER TABLE pending ADD COLUMN {name} {kind}")
    db.execute("DELETE FROM pending WHERE sender IS NULL")
    columns = {row[1] for row in db.execute("PRAGMA table_info(deltas)").fetchall()}
    for name in ("sig", "claim"):  # a delta's origin signature and its claim (NULL: unsigned)
        if name not in columns:
            db.execute(f"ALTER TABLE deltas ADD COLUMN {name} BLOB")
    if "decided" not in tables:
        db.execute(
            "CREATE TABLE decided (id INTEGER PRIMARY KEY, uid TEXT UNIQUE, origin TEXT, doc_id TEXT, "
            "kind TEXT, sender TEXT, rights TEXT, reason TEXT, delta BLOB)"
        )


def add_pending(conn: sqlite3.Connection, waiting: list[PendingDelta]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO pending(uid, doc_id, delta, origin, sender, received) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(p.uid, p.doc_id, encode_delta(p.delta), p.origin, p.sender, p.received_ms) for p in waiting],
    )


def read_pending(conn: sqlite3.Connection) -> list[PendingDelta]:
    rows = conn.execute("SELECT delta, sender, received FROM pending ORDER BY received, uid")
    return [PendingDelta(decode_delta(bytes(blob)), sender, int(received)) for blob, sender, received in rows]


def record(conn: sqlite3.Connection, decisions: list[Decision]) -> None:
    """Store decisions (a later one replaces an earlier one of the same delta)."""
    conn.executemany(
        "INSERT INTO decided(uid, origin, doc_id, kind, sender, rights, reason, delta) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(uid) DO UPDATE SET kind = excluded.kind, "
        "sender = excluded.sender, rights = excluded.rights, reason = excluded.reason",
        [
            (
                d.uid,
                d.delta.origin,
                d.delta.doc_id,
                d.kind,
                d.sender,
                d.rights,
                d.reason[:1000],
                encode_delta(d.delta),
            )
            for d in decisions
        ],
    )


def relink(conn: sqlite3.Connection, rows: list[tuple[int, str, str, int]], uids: list[str]) -> None:
    """Deltas stored now whose entries were logged before (``rows``: delta id, channel, origin,
    seq): entries logged without a delta (decided against) get it, and the decisions go. Entries
    of another delta (one coalesced run covering this one) stay as they are."""
    conn.executemany(
        "UPDATE log SET delta_id = ? WHERE channel = ? AND origin = ? AND seq = ? AND delta_id IS NULL", rows
    )
    conn.executemany("DELETE FROM decided WHERE uid = ?", [(u,) for u in uids])


def read_decisions(conn: sqlite3.Connection, kind: str | None) -> list[Decision]:
    sql = "SELECT delta, kind, sender, rights, reason FROM decided"
    rows = conn.execute(
        sql + " WHERE kind = ? ORDER BY id" if kind else sql + " ORDER BY id", (kind,) if kind else ()
    )
    return [
        Decision(decode_delta(bytes(blob)), k, sender, rights, reason)
        for blob, k, sender, rights, reason in rows
    ]
