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
                        conn = self._connect()
                        # RESTART waits for readers still using the log; never hold the writer lock
                        # long for that: a busy checkpoint is simply tried again next time
                        conn.execute("PRAGMA busy_timeout=50")
                    self._commits = 0
                    _copy_while_writers_go_on(conn)
                    with self._writer_lock:  # what is left to copy is small now: restart the log
                        ((busy, _, _),) = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                    if busy:
                        self.busy += 1
                    else:
                        self.checkpoints += 1
                except sqlite3.Error:
                    self.errors += 1  # e.g. the disk is full: the writer sees that on its own commits
        finally:
            if conn is not None:
                conn.close()


PASSES_AT_MOST = 4
REMAINDER_FRAMES = 64


def _copy_while_writers_go_on(conn: sqlite3.Connection) -> None:
    """PASSIVE checkpoints, again while the last one found many new frames to copy: with large
    commits (1 MiB values) megabytes arrive during one pass, and what the RESTART after it copies, it
    copies holding the writer lock, so every commit waits for it."""
    copied = 0
    for _ in range(PASSES_AT_MOST):
        ((_, _, checkpointed),) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if checkpointed - copied <= REMAINDER_FRAMES:
            return
        copied = checkpointed
