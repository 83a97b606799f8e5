"""Documents' snapshots in the SQLite store: ``doc_states`` (``doc_id``, ``state``, ``codec``, ``size``).

A snapshot folds its document's deltas up to ``docs.snap_id`` (see ``schema.py``). It has a table of
its own because SQLite rewrites a whole row, overflow pages included, when any column of it changes:
in the ``docs`` row, which every commit to the memory rewrites (record, version), a snapshot made
each write cost the size of the document's state.

A snapshot of :data:`PACK_AT` bytes or more is kept deflated (``codec`` 1, zlib level 1; NULL: the
Yrs update as it is). A Yrs v1 state spells out every item's map keys, client id and stamp strings,
so a conversation's snapshot deflates to a third of its size with varied text (1.90 MB -> 0.64 MB
for 10,000 messages) and to a seventh with repetitive text. Until the log is folded every delta is
kept beside the snapshot that holds it, so the snapshot is the largest part of a long memory's
bytes that the log does not need. ``size`` keeps the state's own length, which the rebase rule
compares (``SQLiteStore.folded_states``). :func:`pack` is what the snapshot task runs off the event
loop (``Snapshot.packed``), so the commit thread only writes the bytes.
"""

from __future__ import annotations

import sqlite3
import zlib
from typing import Any

CREATE = (
    "CREATE TABLE IF NOT EXISTS doc_states (doc_id TEXT PRIMARY KEY, state BLOB, codec INTEGER, size INTEGER)"
)
PACK_AT = 1024
"""States at least this long are stored deflated; smaller ones gain little and stay as they are."""
DEFLATE = 1
"""``codec`` of a zlib (RFC 1950) stream of the state."""
_LEVEL = 1  # 1.75 MB in ~25 ms here; level 6 saves 15% more at four times the time


def create(db: Any, tables: set[str]) -> None:
    if "doc_states" not in tables:
        db.execute(CREATE)
        return
    columns = {row[1] for row in db.execute("PRAGMA table_info(doc_states)").fetchall()}
    for name in ("codec", "size"):  # schema 3 stored every state as it is (NULL: as it is)
        if name not in columns:
            db.execute(f"ALTER TABLE doc_states ADD COLUMN {name} INTEGER")


def pack(state: bytes) -> bytes | None:
    """``state`` deflated, or None when it is too small to be stored so."""
    return zlib.compress(state, _LEVEL) if len(state) >= PACK_AT else None


def unpack(blob: bytes, codec: int | None) -> bytes:
    """The state a ``doc_states`` row holds; ValueError when its bytes or codec do not read."""
    if codec is None:
        return blob
    if codec != DEFLATE:
        raise ValueError(f"unknown snapshot codec {codec!r}")
    try:
        return zlib.decompress(blob)
    except zlib.error as exc:
        raise ValueError(f"the snapshot does not inflate: {exc}") from exc


def put(conn: sqlite3.Connection, doc_id: str, state: bytes, packed: bytes | None = None) -> None:
    """Store ``state`` as the snapshot of ``doc_id`` (inside the caller's transaction); ``packed``
    is ``pack(state)`` if the caller made it already."""
    if packed is None:
        packed = pack(state)
    blob, codec = (state, None) if packed is None else (packed, DEFLATE)
    conn.execute(
        "INSERT INTO doc_states(doc_id, state, codec, size) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(doc_id) DO UPDATE SET state = excluded.state, codec = excluded.codec, "
        "size = excluded.size",
        (doc_id, blob, codec, len(state)),
    )
