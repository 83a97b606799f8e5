"""The highest stamp the SQLite store holds, which the clock restores past on open, without an index.

An index on ``deltas.hlc`` would answer ``max(hlc)`` at once, at ~34 bytes a delta (4% of a long
conversation's file) written by every commit, for a query run once per start. Instead ``meta``
keeps a mark, ``hlc_mark`` = ``"{row id} {stamp}"``: the highest stamp of every delta row up to
that id. Row ids only grow and a row's stamp never changes (a stub keeps it; a folded row's stamp is
kept in ``folded_hlc`` as well), so the highest stamp is the mark's, or that of a row after it,
which the rowid B-tree finds by range. The mark moves at every open and with every commit that
writes a snapshot (every few hundred deltas of a busy memory), so a start reads the rows since
then, not the whole log. A damaged page among those rows costs only the stamps on it: they are
read in windows of row ids, and a window that does not read is passed over (a damaged file still
opens, its memories quarantined as they are read).
"""

from __future__ import annotations

import sqlite3

KEY = "hlc_mark"
WINDOW = 256


def _mark(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (KEY,)).fetchone()
    if row is None:
        return 0, ""
    upto, _, stamp = str(row[0]).partition(" ")
    return (int(upto), stamp) if upto.isdigit() else (0, "")


def highest(conn: sqlite3.Connection) -> tuple[int, str]:
    """(the highest delta row id, the highest stamp of every delta row ever stored, folded or not)."""
    upto, stamp = _mark(conn)
    try:
        top, newest = conn.execute("SELECT max(id), max(hlc) FROM deltas WHERE id > ?", (upto,)).fetchone()
    except sqlite3.DatabaseError:
        top, newest = _by_windows(conn, upto)
    (folded,) = conn.execute("SELECT value FROM meta WHERE key = 'folded_hlc'").fetchone() or ("",)
    return max(upto, int(top or 0)), max(stamp, str(newest or ""), str(folded or ""))


def _by_windows(conn: sqlite3.Connection, upto: int) -> tuple[int, str]:
    try:
        (end,) = conn.execute("SELECT max(id) FROM deltas").fetchone()
    except sqlite3.DatabaseError:  # the newest rows do not read: the mark is all there is
        return upto, ""
    newest = ""
    for start in range(upto, int(end or 0), WINDOW):
        try:
            (found,) = conn.execute(
                "SELECT max(hlc) FROM deltas WHERE id > ? AND id <= ?", (start, start + WINDOW)
            ).fetchone()
        except sqlite3.DatabaseError:
            continue
        newest = max(newest, str(found or ""))
    return int(end or 0), newest


def advance(conn: sqlite3.Connection) -> None:
    """Move the mark to the newest row (inside the caller's write transaction, or on its own)."""
    upto, stamp = highest(conn)
    if upto:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (KEY, f"{upto} {stamp}"),
        )
