"""Reading the delta log from the SQLite store: deltas past a peer's version vectors, a page at a
time (:meth:`LogReads.deltas_since`), which deltas are logged, entries decided against, the waiting
deltas and decisions, a forgotten memory's erase markers and a memory's history
(:class:`LogReads`, a part of :class:`~crdtmem.store.sqlite.SQLiteStore`)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence

from ..document.erasure import EMPTY_UPDATE
from . import sqlite_trust
from .codec import decode_stored
from .paging import merge_streams, split_covered
from .sqlite_records import file_read
from .values import Decision, DeltaRecord, PendingDelta, VersionVector


class LogReads:
    """The log reads of :class:`~crdtmem.store.sqlite.SQLiteStore`, on the calling thread's reader
    connection (``_r``); the in-memory vectors under ``_state``."""

    _state: threading.Lock
    _vectors: dict[str, VersionVector]
    _beyond: dict[str, dict[str, set[int]]]

    @property
    def _r(self) -> sqlite3.Connection:  # the store's: one reader connection per thread
        raise NotImplementedError

    def is_erased(self, doc_id: str) -> bool:  # the store's
        raise NotImplementedError

    @file_read
    def deltas_since(
        self, channels: Iterable[str], vectors: dict[str, VersionVector], limit: int | None = None
    ) -> list[DeltaRecord]:
        wanted: dict[int, dict[str, list[int]]] = {}
        streams: list[list[tuple[int, int]]] = []
        conn = self._r
        for channel in channels:
            peer = vectors.get(channel, {})
            with self._state:
                origins = set(self._vectors.get(channel, {})) | set(self._beyond.get(channel, {}))
            for origin in sorted(origins):
                stream = self._stream(conn, channel, origin, peer.get(origin, 0), limit)
                for delta_id, seq in stream:
                    wanted.setdefault(delta_id, {}).setdefault(channel, []).append(seq)
                streams.append(stream)
        ids = merge_streams(streams, limit)
        found: dict[int, DeltaRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT id, uid, origin, doc_id, hlc, deps, [update], sig, claim FROM deltas "
                f"WHERE id IN ({marks})",
                chunk,
            )
            for delta_id, uid, origin, doc_id, hlc, deps, update, sig, claim in rows:
                seqs, also = split_covered(wanted[delta_id])
                signed, proof = decode_stored(sig, claim)
                found[delta_id] = DeltaRecord(
                    uid,
                    origin,
                    doc_id,
                    hlc,
                    bytes(deps),
                    bytes(update),
                    tuple(seqs),
                    seqs,
                    also,
                    signed,
                    proof,
                )
        return [found[delta_id] for delta_id in ids]

    @file_read
    def decided_seqs(self, channel: str, origin: str, after: int, upto: int) -> set[int]:
        rows = self._r.execute(
            "SELECT seq FROM log WHERE channel = ? AND origin = ? AND seq > ? AND seq <= ? "
            "AND delta_id IS NULL",
            (channel, origin, after, upto),
        )
        return {int(seq) for (seq,) in rows}

    @staticmethod
    def _stream(
        conn: sqlite3.Connection, channel: str, origin: str, after: int, limit: int | None
    ) -> list[tuple[int, int]]:
        """``(delta_id, seq)`` of one channel and origin past ``after``, in seq order: enough rows for
        ``limit`` deltas (a page takes no more from one stream), which is more rows than ``limit``
        when a coalesced delta covers several seqs."""
        query = (  # entries decided against have no delta: nothing to export
            "SELECT delta_id, seq FROM log WHERE channel = ? AND origin = ? AND seq > ? "
            "AND delta_id IS NOT NULL ORDER BY seq LIMIT ?"
        )
        if limit is None:
            return conn.execute(query, (channel, origin, after, -1)).fetchall()
        rows: list[tuple[int, int]] = []
        while True:
            batch = conn.execute(query, (channel, origin, after, limit)).fetchall()
            rows += batch
            if len(batch) < limit or len({delta_id for delta_id, _ in rows}) >= limit:
                return rows
            after = batch[-1][1]

    @file_read
    def has_delta(self, uid: str) -> bool:
        conn = self._r
        if conn.execute("SELECT 1 FROM deltas WHERE uid = ?", (uid,)).fetchone():
            return True
        return conn.execute("SELECT 1 FROM pending WHERE uid = ?", (uid,)).fetchone() is not None

    @file_read
    def logged_deltas(self, uids: Sequence[str]) -> set[str]:
        conn = self._r
        if len(uids) == 1:  # the eager-push case: one delta per frame
            row = conn.execute("SELECT uid FROM deltas WHERE uid = ?", (uids[0],)).fetchall()
            return {uid for (uid,) in row}
        found: set[str] = set()
        for start in range(0, len(uids), 500):
            chunk = list(uids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT uid FROM deltas WHERE uid IN ({marks})", chunk)
            found.update(uid for (uid,) in rows)
        return found

    @file_read
    def stale(self) -> list[str]:
        return [doc_id for (doc_id,) in self._r.execute("SELECT doc_id FROM stale ORDER BY doc_id")]

    @file_read
    def pending(self) -> list[PendingDelta]:
        return sqlite_trust.read_pending(self._r)

    @file_read
    def decisions(self, kind: str | None = None) -> list[Decision]:
        return sqlite_trust.read_decisions(self._r, kind)

    @file_read
    def entries_without_delta(self, channel: str) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        rows = self._r.execute(
            "SELECT origin, seq FROM log WHERE channel = ? AND delta_id IS NULL", (channel,)
        )
        for origin, seq in rows:
            found.setdefault(origin, set()).add(int(seq))
        return found

    @file_read
    def markers_of(self, doc_ids: Iterable[str], channels: Iterable[str]) -> list[DeltaRecord]:
        wanted, conn = set(channels), self._r
        out: list[DeltaRecord] = []
        for doc_id in sorted({d for d in doc_ids if self.is_erased(d)}):
            rows = conn.execute(
                "SELECT id, uid, origin, doc_id, hlc, deps, [update], sig, claim FROM deltas "
                "WHERE doc_id = ? AND [update] != ? ORDER BY id",
                (doc_id, EMPTY_UPDATE),
            ).fetchall()
            for delta_id, uid, origin, doc, hlc, deps, update, sig, claim in rows:
                signed, _ = decode_stored(sig, claim)
                covered: dict[str, list[int]] = {}
                for channel in sorted(wanted):  # the log's key is (channel, origin, seq)
                    if signed is not None and channel not in signed.seqs:
                        continue
                    found = conn.execute(
                        "SELECT seq FROM log WHERE channel = ? AND origin = ? AND delta_id = ?",
                        (channel, origin, delta_id),
                    ).fetchall()
                    if found:
                        covered[channel] = [int(seq) for (seq,) in found]
                if covered:
                    seqs, also = split_covered(covered)
                    out.append(
                        DeltaRecord(
                            uid, origin, doc, hlc, bytes(deps), bytes(update), tuple(seqs), seqs, also, signed
                        )
                    )
        return out

    @file_read
    def history(self, doc_id: str) -> list[DeltaRecord]:
        rows = self._r.execute(
            "SELECT uid, origin, doc_id, hlc, deps, [update] FROM deltas WHERE doc_id = ? ORDER BY id",
            (doc_id,),
        )
        return [
            DeltaRecord(uid, origin, doc, hlc, bytes(deps), bytes(update), ())
            for uid, origin, doc, hlc, deps, update in rows
        ]
