"""The SQLite store (sqlite-utils for the schema, WAL, one writer connection, a reader connection for
each thread that reads): opening, the commit, sync state and maintenance here; record reads in
:mod:`.sqlite_records`, log reads in :mod:`.sqlite_log`.

Durability: ``synchronous=FULL`` by default, so a commit that returned survives power loss as well as
a killed process; ``NORMAL`` survives a killed process only. Commits run on the replica's commit thread
through the writer connection; reads run on the reader connection of their thread (the event loop's,
or a worker's), which WAL lets proceed while a write is in flight.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

import sqlite_utils

from ..document.records import ConflictValue
from ..errors import DamagedMemory, StorageError, StoreUnreadable
from . import sqlite_fold, sqlite_quarantine, sqlite_stamps, sqlite_trust
from .checkpoint import Checkpointer
from .codec import encode_claim, encode_stub_claim
from .lock import DatabaseLock
from .schema import create_or_migrate
from .sqlite_erase import erase
from .sqlite_log import LogReads
from .sqlite_records import RecordReads, file_read
from .sqlite_states import pack as pack_state
from .sqlite_states import put as put_state
from .values import Commit, CommitResult, Erased, LocalSigner, Quarantined, VersionVector
from .vectors import StagedVectors

_COMPACT = json.JSONEncoder(separators=(",", ":"))
Synchronous = Literal["FULL", "NORMAL", "OFF"]
QUICK_CHECK_ERRORS = 20
"""At most this many problems are reported by the integrity check on open."""
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _channel_list(text: str | None) -> tuple[str, ...]:
    """The channels of an ``erased`` row (none for a row kept before they were, or unreadable)."""
    try:
        found = json.loads(text) if text else []
    except ValueError:
        return ()
    return tuple(c for c in found if isinstance(c, str)) if isinstance(found, list) else ()


class SQLiteStore(RecordReads, LogReads):
    """A :class:`~crdtmem.store.base.Store` in one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL", check: bool = True):
        self.signer: LocalSigner | None = None
        self.on_damaged: Callable[[DamagedMemory], object] | None = None
        """Told of every memory a read found damaged and left out (a list, a query)."""
        self.path = Path(path)
        self.check = check
        self.integrity: list[str] = []
        """What ``PRAGMA quick_check`` reported on open: ``["ok"]``, or the problems found (at most
        :data:`QUICK_CHECK_ERRORS`); empty when not checked."""
        self._file_lock = DatabaseLock(self.path)
        self.synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_thread: int | None = None
        self._thread_readers: dict[int, sqlite3.Connection] = {}
        """Readers of other threads (the indexer reads its batches on a worker thread). Each thread
        reads on its own connection: statements of two threads on one connection would share one
        read transaction, so a read on the loop could see a snapshot older than a write it had
        already acknowledged."""
        self._readers_lock = threading.Lock()
        self._vectors: dict[str, VersionVector] = {}
        self._beyond: dict[str, dict[str, set[int]]] = {}
        self._version = 0
        self._erased: set[str] = set()
        self._horizon: dict[str, VersionVector] = {}
        self._next_delta_id = 1
        self._lock = threading.Lock()
        """The writer lock: one commit (or log restart, see Checkpointer) at a time."""
        self._state = threading.Lock()
        """Guards the in-memory version vectors, which commits replace and the loop reads. Separate
        from the writer lock, so reading a vector never waits for a commit or a checkpoint."""
        self._checkpointer = Checkpointer(self._connect, self._lock)

    pack_state = staticmethod(pack_state)
    """A snapshot's bytes as this store keeps them (``Snapshot.packed``): what the snapshot task
    runs on a worker thread, so that deflating a large state holds up neither the loop nor commits."""

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        self._file_lock.acquire()  # before anything touches the file (StoreLocked if in use)
        try:
            self._writer = self._connect()
            create_or_migrate(sqlite_utils.Database(self._writer))
            self._writer.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer does it
            self._reader = self._connect()
            self._reader_thread = threading.get_ident()
            if self.check:
                self.integrity = self.quick_check()
            self._load_sync_state()
            with contextlib.suppress(sqlite3.DatabaseError):  # a damaged file opens all the same
                sqlite_stamps.advance(self._writer)  # the next start reads only the rows after it
            self._checkpointer.start()
        except sqlite3.Error as exc:
            self.close()
            raise StoreUnreadable(f"cannot open store {self.path}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def quick_check(self, *, full: bool = False) -> list[str]:
        """``PRAGMA quick_check``: ``["ok"]`` or the problems found. It reads every page once
        (about 5 s per GB), without the index cross-checks of ``full`` (``integrity_check``,
        about 2.5 times as long)."""
        pragma = "integrity_check" if full else "quick_check"
        try:
            rows = self._r.execute(f"PRAGMA {pragma}({QUICK_CHECK_ERRORS})").fetchall()
        except sqlite3.DatabaseError as exc:  # too damaged to walk: that is the report
            return [str(exc)]
        return [str(row[0]) for row in rows]

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=OFF")
        # what a commit deletes or overwrites is zeroed, not left in free pages: a forgotten
        # memory's bytes (and the snapshots it had before) must leave the file
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def close(self) -> None:
        self._checkpointer.stop()
        with self._readers_lock:
            others, self._thread_readers = list(self._thread_readers.values()), {}
        for conn in (*others, self._reader, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = None
        self._file_lock.release()

    @property
    def _r(self) -> sqlite3.Connection:
        """The calling thread's reader connection. A connection shares one snapshot of the file
        among the statements it runs at once: a read on a worker thread (the indexer's batch of
        records) still stepping would hold the event loop's reads on that snapshot, older than the
        in-memory vectors, so each thread reads on a connection of its own."""
        if self._reader is None:
            raise StorageError("store is closed")
        thread = threading.get_ident()
        if thread == self._reader_thread:
            return self._reader
        with self._readers_lock:
            conn = self._thread_readers.get(thread)
            if conn is None:
                conn = self._thread_readers[thread] = self._connect()
        return conn

    @property
    def _w(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StorageError("store is closed")
        return self._writer

    def _load_sync_state(self) -> None:
        conn = self._r
        for channel, origin, seq in conn.execute("SELECT channel, origin, seq FROM vv WHERE seq > 0"):
            self._vectors.setdefault(channel, {})[origin] = seq  # (a 0 row: stored past a gap only)
        rows = conn.execute(
            "SELECT l.channel, l.origin, l.seq FROM log l LEFT JOIN vv v "
            "ON v.channel = l.channel AND v.origin = l.origin WHERE l.seq > coalesce(v.seq, 0)"
        )
        for channel, origin, seq in rows:
            self._beyond.setdefault(channel, {}).setdefault(origin, set()).add(seq)
        # versions only grow and a document row is only ever replaced by a higher one, so the
        # highest stored version is the counter (no separate row to update on every commit)
        (highest,) = conn.execute("SELECT coalesce(max(version), 0) FROM docs").fetchone()
        self._erased = {doc_id for (doc_id,) in conn.execute("SELECT doc_id FROM erased")}
        for channel, origin, seq in conn.execute("SELECT channel, origin, seq FROM horizon"):
            self._horizon.setdefault(channel, {})[origin] = int(seq)
        (gone,) = conn.execute("SELECT coalesce(max(version), 0) FROM erased").fetchone()
        self._version = max(int(highest), int(gone), int(self.get_meta("version_counter") or 0))
        (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM deltas").fetchone()
        # compaction deletes delta rows, the newest among them too: a row id is never given again
        # (a snapshot counts rows by id, so a reused id would read as already folded in)
        (snapped,) = conn.execute("SELECT coalesce(max(snap_id), 0) FROM docs").fetchone()
        floor = int(self.get_meta("delta_id_floor") or 0)
        self._next_delta_id = max(int(top), int(snapped), floor) + 1

    # -- meta ---------------------------------------------------------------------------------

    @file_read
    def get_meta(self, key: str) -> str | None:
        row = self._r.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._w.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- the write path -----------------------------------------------------------------------

    def commit(self, work: Sequence[Commit]) -> list[CommitResult]:
        with self._lock:
            staged = StagedVectors(self._vectors, self._beyond)
            version, next_id = self._version, self._next_delta_id
            conn = self._w
            horizon: list[tuple[str, str, int]] = []
            results: list[CommitResult] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                # local deltas (no seqs yet) are new by construction; only remote ones may be known
                known = self._known_ids(conn, [d.uid for unit in work for d in unit.deltas if d.seqs])
                for unit in work:
                    result, version, next_id = self._commit_one(conn, unit, staged, known, version, next_id)
                    horizon += sqlite_fold.apply_unit(conn, unit, staged)
                    results.append(result)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageError(f"commit to {self.path} failed, nothing was written: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            with self._state:
                staged.publish()
                self._erased.update(doc_id for unit in work for doc_id in unit.erase)
                for channel, origin, seq in horizon:
                    mine = self._horizon.setdefault(channel, {})
                    mine[origin] = max(mine.get(origin, 0), seq)
            self._version, self._next_delta_id = version, next_id
            self._checkpointer.committed()
            return results

    @staticmethod
    def _known_ids(conn: sqlite3.Connection, uids: list[str]) -> dict[str, int]:
        known: dict[str, int] = {}
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(conn.execute(f"SELECT uid, id FROM deltas WHERE uid IN ({marks})", chunk))
        return known

    def _commit_one(
        self,
        conn: sqlite3.Connection,
        unit: Commit,
        staged: StagedVectors,
        known: dict[str, int],
        version: int,
        next_id: int,
    ) -> tuple[CommitResult, int, int]:
        result = CommitResult()
        for doc_id in unit.erase:
            version += 1
            result.versions[doc_id] = version
            marker = next((d.hlc for d in unit.deltas if d.doc_id == doc_id), "")
            erase(conn, doc_id, version, marker)
        log_rows: list[tuple[str, str, int, int | None]] = []
        new_rows: list[tuple[int, str, str, str, str, bytes, bytes, bytes | None, bytes | None]] = []
        relinked: list[tuple[int, str, str, int]] = []
        undecided: set[str] = set()
        for delta in unit.deltas:
            delta_id = known.get(delta.uid)
            new = delta_id is None
            seqs = delta.seqs or {
                channel: staged.vector(channel).get(delta.origin, 0) + 1 for channel in delta.channels
            }
            if delta_id is None:  # known deltas are only logged under channels they lack
                delta_id = known[delta.uid] = next_id
                next_id += 1
                signed = delta.signature
                if not delta.seqs and self.signer is not None:  # a local delta: signed as it is numbered
                    signed = result.signatures[delta.uid] = self.signer(delta, seqs)
                new_rows.append(
                    (
                        delta_id,
                        delta.uid,
                        delta.origin,
                        delta.doc_id,
                        delta.hlc,
                        delta.deps,
                        delta.update,
                        signed.sig if signed is not None else None,
                        encode_claim(signed)
                        if signed is not None
                        else (encode_stub_claim(delta.header) if delta.header is not None else None),
                    )
                )
            for channel, last in seqs.items():
                for seq in (*delta.also.get(channel, ()), last):
                    if staged.is_logged(channel, delta.origin, seq):
                        if new and delta.seqs:  # logged before the delta: decided against, until now
                            relinked.append((delta_id, channel, delta.origin, seq))
                            undecided.add(delta.uid)
                        continue
                    staged.advance(channel, delta.origin, seq)
                    log_rows.append((channel, delta.origin, seq, delta_id))
            result.seqs[delta.uid] = seqs
            result.rows[delta.uid] = delta_id
        for decision in unit.decided:  # logged without a delta: the vectors move past it
            refused = decision.delta
            for channel in refused.seqs:
                for seq in refused.all_seqs(channel):
                    if not staged.is_logged(channel, refused.origin, seq):
                        staged.advance(channel, refused.origin, seq)
                        log_rows.append((channel, refused.origin, seq, None))
        if new_rows:
            conn.executemany(
                "INSERT INTO deltas(id, uid, origin, doc_id, hlc, deps, [update], sig, claim) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                new_rows,
            )
        if log_rows:
            conn.executemany(
                "INSERT OR IGNORE INTO log(channel, origin, seq, delta_id) VALUES (?, ?, ?, ?)",
                log_rows,
            )
            touched = {(c, o) for c, o, _, _ in log_rows}
            conn.executemany(
                "INSERT OR REPLACE INTO vv(channel, origin, seq) VALUES (?, ?, ?)",
                [(c, o, staged.vector(c).get(o, 0)) for c, o in touched],
            )
        if unit.pending_drop:
            conn.executemany("DELETE FROM pending WHERE uid = ?", [(u,) for u in unit.pending_drop])
        if unit.pending_add:
            sqlite_trust.add_pending(conn, unit.pending_add)
        if unit.decided:
            sqlite_trust.record(conn, unit.decided)
        if undecided:
            sqlite_trust.relink(conn, relinked, list(undecided))
        doc_rows = []
        for doc in unit.docs:
            version += 1
            result.versions[doc.doc_id] = version
            record = doc.record
            if doc.kind == "conversation":  # its messages are read from its state (see _record)
                record = {**record, "content": None}
            doc_rows.append(
                (
                    doc.doc_id,
                    doc.kind,
                    _COMPACT.encode(record),
                    doc.user_id,
                    doc.tenant_id,
                    int(doc.deleted),
                    int(doc.conflicted),
                    version,
                    doc.updated_hlc,
                )
            )
        if doc_rows:
            # an upsert keeps the row where it is (REPLACE would move it); the snapshot is not
            # touched (its own table, doc_states), and the deltas of this commit are its tail
            conn.executemany(
                "INSERT INTO docs(id, kind, snap_id, record, user_id, tenant_id, deleted, conflicted, "
                "version, updated_hlc) VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                "SET kind = excluded.kind, record = excluded.record, "
                "user_id = excluded.user_id, tenant_id = excluded.tenant_id, deleted = excluded.deleted, "
                "conflicted = excluded.conflicted, version = excluded.version, "
                "updated_hlc = excluded.updated_hlc",
                doc_rows,
            )
            listed = [(c, d.doc_id) for d in unit.docs if d.new for c in d.channels]
            if listed:  # a new memory's channels; an update of a known one has none to list
                conn.executemany("INSERT OR IGNORE INTO doc_channels(channel, doc_id) VALUES (?, ?)", listed)
            cleared = [(d.doc_id,) for d in unit.docs if d.had_conflicts]
            if cleared:
                conn.executemany("DELETE FROM conflicts WHERE doc_id = ?", cleared)
            flagged = [
                (c.memory_id, c.field, c.user_id, c.tenant_id, _encode_values(c.values))
                for d in unit.docs
                for c in d.conflicts
            ]
            if flagged:
                conn.executemany(
                    "INSERT OR REPLACE INTO conflicts(doc_id, field, user_id, tenant_id, vals) "
                    "VALUES (?, ?, ?, ?, ?)",
                    flagged,
                )
        if unit.fresh:
            conn.executemany("DELETE FROM stale WHERE doc_id = ?", [(d,) for d in unit.fresh])
        if unit.stale:
            conn.executemany("INSERT OR IGNORE INTO stale(doc_id) VALUES (?)", [(d,) for d in unit.stale])
        for snap in unit.snapshots:  # kept only if newer than the stored one
            if conn.execute(
                "UPDATE docs SET snap_id = ? WHERE id = ? AND snap_id < ?",
                (snap.upto, snap.doc_id, snap.upto),
            ).rowcount:
                put_state(conn, snap.doc_id, snap.state, snap.packed)
        if unit.snapshots:  # every few hundred deltas of a busy memory: the next start reads less
            sqlite_stamps.advance(conn)
        return result, version, next_id

    def horizon(self, channel: str) -> VersionVector:
        with self._state:
            return dict(self._horizon.get(channel, {}))

    def logged_before(self, channel: str, hlc: str) -> VersionVector:
        rows = self._r.execute(
            "SELECT l.origin, max(l.seq) FROM log l JOIN deltas d ON d.id = l.delta_id "
            "WHERE l.channel = ? AND d.hlc < ? GROUP BY l.origin",
            (channel, hlc),
        )
        return {origin: int(seq) for origin, seq in rows}

    @file_read
    def folded_states(self, min_bytes: int) -> list[tuple[str, int]]:
        rows = self._r.execute(
            "SELECT s.doc_id, coalesce(s.size, length(s.state)) FROM doc_states s "
            "JOIN docs ON docs.id = s.doc_id WHERE coalesce(s.size, length(s.state)) >= ? "
            "AND NOT EXISTS (SELECT 1 FROM deltas d WHERE d.doc_id = s.doc_id) ORDER BY s.doc_id",
            (min_bytes,),
        )
        return [(doc_id, int(size)) for doc_id, size in rows]

    def fold_blockers(self, fold: dict[str, VersionVector]) -> list[str]:
        found: set[str] = set()
        for channel, vector in fold.items():
            for origin, upto in vector.items():
                found.update(sqlite_fold.blockers(self._r, channel, origin, upto))
        return sorted(found)

    def is_erased(self, doc_id: str) -> bool:
        with self._state:
            return doc_id in self._erased

    def erased_since(self, version: int, limit: int | None = None) -> list[tuple[str, int]]:
        rows = self._r.execute(
            "SELECT doc_id, version FROM erased WHERE version > ? ORDER BY version LIMIT ?",
            (version, -1 if limit is None else int(limit)),
        )
        return [(doc_id, int(v)) for doc_id, v in rows]

    @file_read
    def erasures_since(self, version: int, limit: int | None = None) -> list[Erased]:
        rows = self._r.execute(
            "SELECT doc_id, version, channels, hlc FROM erased WHERE version > ? ORDER BY version LIMIT ?",
            (version, -1 if limit is None else int(limit)),
        )
        return [Erased(doc_id, int(v), _channel_list(names), hlc or "") for doc_id, v, names, hlc in rows]

    def scrub(self) -> None:
        """Copy the write-ahead log into the file and truncate it to nothing, so the old page
        images it holds (a forgotten memory's among them) leave the disk; commits zero what they
        free (``secure_delete``). Waits for readers to leave the log (a few tries)."""
        for _ in range(50):
            with self._lock:
                ((busy, _, _),) = self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            if not busy:
                return
            threading.Event().wait(0.02)
        raise StorageError(f"could not truncate the write-ahead log of {self.path}: readers kept it busy")

    def version_vector(self, channel: str) -> VersionVector:
        with self._state:
            return dict(self._vectors.get(channel, {}))

    def is_logged(self, channel: str, origin: str, seq: int) -> bool:
        with self._state:
            if seq <= self._vectors.get(channel, {}).get(origin, 0):
                return True
            return seq in self._beyond.get(channel, {}).get(origin, ())

    def channels(self) -> list[str]:
        with self._state:
            return sorted(channel for channel, vector in self._vectors.items() if vector)

    @file_read
    def last_hlc(self) -> str:
        return sqlite_stamps.highest(self._r)[1]

    @file_read
    def doc_count(self) -> int:
        return int(self._r.execute("SELECT count(*) FROM docs").fetchone()[0])

    @file_read
    def outbox_marks(self, sink: str) -> dict[str, VersionVector]:
        marks: dict[str, VersionVector] = {}
        rows = self._r.execute("SELECT channel, origin, seq FROM outbox WHERE sink = ?", (sink,))
        for channel, origin, seq in rows:
            marks.setdefault(channel, {})[origin] = int(seq)
        return marks

    def raise_outbox_marks(self, sink: str, marks: dict[str, VersionVector]) -> None:
        rows = [(sink, c, o, s) for c, vector in marks.items() for o, s in vector.items()]
        if not rows:
            return
        with self._lock:
            conn = self._w
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO outbox(sink, channel, origin, seq) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(sink, channel, origin) DO UPDATE SET seq = max(seq, excluded.seq)",
                    rows,
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageError(f"storing outbox marks in {self.path} failed: {exc}") from exc

    @file_read
    def quarantined(self) -> list[Quarantined]:
        return sqlite_quarantine.read(self._r)

    def quarantine(self, entry: Quarantined) -> None:
        self._write_alone(lambda conn: sqlite_quarantine.add(conn, entry), "recording a quarantine")

    def release(self, memory_id: str) -> bool:
        return self._write_alone(lambda conn: sqlite_quarantine.remove(conn, memory_id), "releasing a memory")

    def _write_alone(self, write: Callable[[sqlite3.Connection], _T], what: str) -> _T:
        """``write`` in a transaction of its own (between commits)."""
        with self._lock:
            conn = self._w
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = write(conn)
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageError(f"{what} in {self.path} failed: {exc}") from exc

    @file_read
    def integrity_check(self) -> str:
        return str(self._r.execute("PRAGMA integrity_check").fetchone()[0])


def _encode_values(values: tuple[ConflictValue, ...]) -> str:
    return _COMPACT.encode([[v.value, v.hlc, v.replica] for v in values])
