"""Compaction in the SQLite store: folding log entries into the documents' snapshots (``Commit.fold``).

Per channel and origin, the entries up to the requested seq leave the ``log``, as far as they run
contiguously through deltas whose document snapshot already holds them (a delta row at or below its
document's ``snap_id``), or through deltas of forgotten memories (stubs), or entries decided against.
Erase markers keep their entries and rows: a marker must outlive every compaction. A delta row goes
once no log entry refers to it any more (a delta logged in two channels stays until both folded).
The ``horizon`` table keeps, per channel and origin, how far the log is folded; the highest stamp of
what was folded is kept in ``meta`` (``folded_hlc``) so the clock restores past it.
"""

from __future__ import annotations

import sqlite3

from ..document.erasure import EMPTY_UPDATE
from .sqlite_states import put as put_state
from .values import Commit
from .vectors import StagedVectors

_UNFOLDED = (  # a delta its document's snapshot does not hold (yet), or of a document with no row yet
    "(d.id > docs.snap_id OR (docs.id IS NULL AND d.doc_id NOT IN (SELECT doc_id FROM erased)))"
)


def create(db: object, tables: set[str]) -> None:
    if "horizon" not in tables:
        db.execute(  # type: ignore[attr-defined]
            "CREATE TABLE horizon (channel TEXT, origin TEXT, seq INTEGER, PRIMARY KEY (channel, origin)) "
            "WITHOUT ROWID"
        )


def markers(conn: sqlite3.Connection) -> set[int]:
    """Row ids of the erase markers (deltas of forgotten memories that are not stubs)."""
    rows = conn.execute(
        "SELECT d.id FROM deltas d JOIN erased e ON e.doc_id = d.doc_id WHERE d.[update] != ?",
        (EMPTY_UPDATE,),
    )
    return {int(i) for (i,) in rows}


def blockers(conn: sqlite3.Connection, channel: str, origin: str, upto: int) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT d.doc_id FROM log l JOIN deltas d ON d.id = l.delta_id "
        "LEFT JOIN docs ON docs.id = d.doc_id "
        f"WHERE l.channel = ? AND l.origin = ? AND l.seq <= ? AND {_UNFOLDED}",
        (channel, origin, upto),
    )
    return [str(doc_id) for (doc_id,) in rows]


def fold(
    conn: sqlite3.Connection, channel: str, origin: str, upto: int, keep: set[int], candidates: set[int]
) -> int:
    """Fold one channel and origin up to ``upto`` (or below the first entry a snapshot does not hold
    yet); returns the seq it folded to (0: nothing). Adds the delta rows it unlogged to ``candidates``."""
    (first,) = conn.execute(
        "SELECT min(l.seq) FROM log l JOIN deltas d ON d.id = l.delta_id "
        "LEFT JOIN docs ON docs.id = d.doc_id "
        f"WHERE l.channel = ? AND l.origin = ? AND l.seq <= ? AND {_UNFOLDED}",
        (channel, origin, upto),
    ).fetchone()
    if first is not None:
        upto = int(first) - 1
    if upto <= 0:
        return 0
    rows = conn.execute(
        "SELECT seq, delta_id FROM log WHERE channel = ? AND origin = ? AND seq <= ?", (channel, origin, upto)
    ).fetchall()
    gone = [(channel, origin, seq) for seq, delta_id in rows if delta_id is None or delta_id not in keep]
    candidates.update(int(d) for _, d in rows if d is not None and d not in keep)
    conn.executemany("DELETE FROM log WHERE channel = ? AND origin = ? AND seq = ?", gone)
    conn.execute(
        "INSERT INTO horizon(channel, origin, seq) VALUES (?, ?, ?) ON CONFLICT(channel, origin) "
        "DO UPDATE SET seq = max(seq, excluded.seq)",
        (channel, origin, upto),
    )
    return upto


def drop_unlogged(conn: sqlite3.Connection, candidates: set[int]) -> int:
    """Delete the candidate delta rows no log entry refers to any more (one scan of the log)."""
    if not candidates:
        return 0
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS fold_candidates (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM fold_candidates")
    conn.executemany("INSERT INTO fold_candidates(id) VALUES (?)", [(i,) for i in candidates])
    still = {
        int(i)
        for (i,) in conn.execute(
            "SELECT DISTINCT delta_id FROM log WHERE delta_id IN (SELECT id FROM fold_candidates)"
        )
    }
    gone = sorted(candidates - still)
    if gone:
        (newest,) = conn.execute(
            "SELECT max(hlc) FROM deltas WHERE id IN (SELECT id FROM fold_candidates)"
        ).fetchone()
        if newest:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('folded_hlc', ?) ON CONFLICT(key) "
                "DO UPDATE SET value = max(value, excluded.value)",
                (newest,),
            )
        conn.executemany("DELETE FROM deltas WHERE id = ?", [(i,) for i in gone])
        conn.execute(  # row ids are never reused (SQLiteStore._load_sync_state)
            "INSERT INTO meta(key, value) VALUES ('delta_id_floor', ?) ON CONFLICT(key) "
            "DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) "
            "AS TEXT)",
            (str(max(gone)),),
        )
    conn.execute("DELETE FROM fold_candidates")
    return len(gone)


def raise_horizon(conn: sqlite3.Connection, rows: list[tuple[str, str, int]]) -> None:
    conn.executemany(
        "INSERT INTO horizon(channel, origin, seq) VALUES (?, ?, ?) ON CONFLICT(channel, origin) "
        "DO UPDATE SET seq = max(seq, excluded.seq)",
        rows,
    )


def apply_unit(conn: sqlite3.Connection, unit: Commit, staged: StagedVectors) -> list[tuple[str, str, int]]:
    """A unit's received states, covered entries and compaction; returns the horizon raised."""
    raised: list[tuple[str, str, int]] = []
    for snap in unit.states:
        if conn.execute(
            "UPDATE docs SET snap_id = max(snap_id, ?) WHERE id = ?", (snap.upto, snap.doc_id)
        ).rowcount:
            put_state(conn, snap.doc_id, snap.state)
    for channel, vector in unit.covers.items():
        for origin, seq in vector.items():
            if staged.raise_to(channel, origin, seq):
                raised.append((channel, origin, seq))
        if staged.changed(channel):
            conn.executemany(
                "INSERT OR REPLACE INTO vv(channel, origin, seq) VALUES (?, ?, ?)",
                [(channel, o, s) for o, s in staged.vector(channel).items()],
            )
    if raised:
        raise_horizon(conn, raised)
    if unit.fold:
        keep, candidates = markers(conn), set[int]()
        for channel, vector in unit.fold.items():
            for origin, upto in vector.items():
                folded = fold(conn, channel, origin, upto, keep, candidates)
                if folded:
                    raised.append((channel, origin, folded))
        drop_unlogged(conn, candidates)
    return raised
