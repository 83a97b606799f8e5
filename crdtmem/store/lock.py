"""One process per database file: an exclusive lock on a sidecar ``<db>.lock`` file.

SQLite lets several processes open one file, and two replicas on one file would interleave their
sequence numbers and version vectors. SQLite's own ``locking_mode=EXCLUSIVE`` is no answer: the store
uses several connections (a writer, a reader, the checkpointer), and in WAL mode an exclusive
connection shuts the others out too. So the store takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a
file beside the database before it opens a connection; a second opener (another process, or a
second store in this one) gets :class:`~crdtmem.errors.StoreLocked` at once, having touched nothing.

The lock belongs to the open file description: the kernel drops it when the holder exits, however
it exits (``kill -9`` too), so a stale lock file never blocks a restart and is never deleted (deleting
it would let two processes lock two different files of one name). The holder writes its pid into it,
for the error message. On a platform without ``fcntl`` (Windows) there is no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreLocked

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class DatabaseLock:
    """The exclusive lock of one database file. :meth:`acquire` before opening, :meth:`release` after
    closing."""

    def __init__(self, db: Path):
        self.db = db
        self.path = lock_path(db)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None or fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            by = f" by process {holder}" if holder else ""
            raise StoreLocked(
                f"{self.db} is in use{by}: one database file belongs to one running "
                f"replica (stop the other one, or give this one its own --db)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the description releases the lock


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
