"""WAL checkpoints off the write path.

By default SQLite checkpoints a WAL database from inside a committing transaction once the log holds
``wal_autocheckpoint`` pages (1000): that one commit copies the log into the database file and syncs
it, a stall of milliseconds in the middle of an unlucky write. It was the p99 of every write and
sync benchmark.

The store turns automatic checkpoints off on its writer connection and a :class:`Checkpointer` runs
them on its own thread and connection instead, every ``every`` commits and once a second while
commits keep coming:

1. a PASSIVE checkpoint copies the log into the database while writers go on (it never blocks them),
   and again while the last pass found many frames committed during the one before (large commits);
2. then, holding the store's writer lock, a RESTART checkpoint copies the few frames committed
   meanwhile and lets the next write start the log over from its beginning. Without this step a
   busy log would never be fully copied at a moment a write begins, and the file would grow without
   bound (every fsync of a growing file also syncs its size).

Every commit waits while the RESTART holds the writer lock (a lone writer's commit on the event loop
too), so the RESTART only runs when little is left to copy: when the passive passes left more than
``RESTART_FRAMES`` uncopied (megabytes of large commits arriving), it is put off to the next round,
at most ``RESTARTS_PUT_OFF`` rounds in a row (so the log still restarts under a steady stream of
large commits); and it waits at most ``RESTART_WAIT_MS`` for readers still using the log (a reader
on a worker thread decoding a page of records), then gives up until the next round. Measured before
these bounds: a RESTART after large commits held the writer lock up to ~80 ms.

Measured (``docs/benchmarks.md``): with ``synchronous=NORMAL`` the p99 of a local write drops from
about 6 ms to about 1.2 ms; with FULL from about 2.1 ms to about 1.5 ms.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a background thread. Use ``start()``/``stop()``."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        writer_lock: threading.Lock,
        *,
        every: int = 256,
        interval: float = 1.0,
    ):
        self._connect = connect
        self._writer_lock = writer_lock
        self._every = every
        self._interval = interval
        self._commits = 0  # since the last checkpoint; written by committers, reset by the thread
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        """Checkpoints that restarted the log."""
        self.busy = 0
        """Checkpoints a reader kept from restarting the log (tried again next time)."""
        self.put_off = 0
        """Restarts put off because the passive passes left too much to copy under the lock."""
        self._put_off_in_a_row = 0
        self.errors = 0

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="crdtmem-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def committed(self) -> None:
        """Count one commit (called by the store after each one; cheap)."""
        self._commits += 1
        if self._commits == self._every:
            self._wake.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping:
                self._wake.wait(self._interval)
                self._wake.clear()
                if self._stopping or self._commits == 0:
                    continue
                try:
                    if conn is None:
                        conn = self.connection()
                    self.run_round(conn)
                except sqlite3.Error:
                    self.errors += 1  # e.g. the disk is full: the writer sees that on its own commits
        finally:
            if conn is not None:
                conn.close()

    def connection(self) -> sqlite3.Connection:
        """The checkpointer's own connection: a RESTART waits for readers still using the log, and
        never holds the writer lock long for that (a busy checkpoint is tried again next round)."""
        conn = self._connect()
        conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        return conn

    def run_round(self, conn: sqlite3.Connection) -> None:
        """One round: passive passes, then the RESTART if :func:`restart_now` says so."""
        self._commits = 0
        left = _copy_while_writers_go_on(conn)
        if not restart_now(left, self._put_off_in_a_row):
            self._put_off_in_a_row += 1
            self.put_off += 1
            self._commits = max(self._commits, 1)  # the next round runs, commits or not
            return
        self._put_off_in_a_row = 0
        with self._writer_lock:  # what is left to copy is small now: restart the log
            ((busy, _, _),) = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        if busy:
            self.busy += 1
        else:
            self.checkpoints += 1


PASSES_AT_MOST = 4
REMAINDER_FRAMES = 64
"""New frames (pages, 4 KiB) a passive pass may find and still be the last one."""
RESTART_FRAMES = 256
"""Frames (1 MiB) a RESTART may be left to copy holding the writer lock, and then sync."""
RESTARTS_PUT_OFF = 2
"""Rounds in a row a RESTART may be put off because more than ``RESTART_FRAMES`` were left."""
RESTART_WAIT_MS = 5
"""How long a RESTART, holding the writer lock, waits for readers still using the log."""


def restart_now(left: int, put_off_in_a_row: int) -> bool:
    """Whether to restart the log now, with ``left`` frames not yet copied after the passive passes
    and the restart put off that many rounds in a row before this one."""
    return left <= RESTART_FRAMES or put_off_in_a_row >= RESTARTS_PUT_OFF


def _copy_while_writers_go_on(conn: sqlite3.Connection) -> int:
    """PASSIVE checkpoints, again while the last one found many new frames to copy: with large
    commits (1 MiB values) megabytes arrive during one pass, and what the RESTART after it copies, it
    copies holding the writer lock, so every commit waits for it. Returns the frames the last pass
    left in the log uncopied."""
    copied = 0
    for _ in range(PASSES_AT_MOST):
        ((_, logged, checkpointed),) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if checkpointed - copied <= REMAINDER_FRAMES:
            break
        copied = checkpointed
    left: int = max(0, logged - checkpointed)
    return left
