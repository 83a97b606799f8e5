"""Reading records from the SQLite store: one memory's document and record, pages of records by
scope and version, counts, ids and conflicts (:class:`RecordReads`, a part of
:class:`~crdtmem.store.sqlite.SQLiteStore`), and the wrapper that turns an SQLite failure into a
:class:`~crdtmem.errors.StorageError` naming the file."""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

from ..document.memory import MemoryDoc
from ..document.query import Where
from ..document.records import Conflict, ConflictValue
from ..errors import DamagedMemory, MalformedPayload, StorageError
from .sqlite_query import to_sql
from .sqlite_states import unpack as unpack_state
from .values import StoredDoc, fold

_P = ParamSpec("_P")
_T = TypeVar("_T")


def file_read(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """A read of the file: an SQLite failure (an unreadable page, an I/O error) becomes a
    StorageError naming the file, instead of escaping as sqlite3's own exception."""

    @functools.wraps(method)
    def read(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store = args[0]
            raise StorageError(f"reading {getattr(store, 'path', 'the store')} failed: {exc}") from exc

    return read


@contextlib.contextmanager
def one_snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the statements of one read on one snapshot of the file. Each statement outside a
    transaction reads the newest commit when it starts, so a read of two statements (a page chosen,
    then its records; a document's snapshot row, then its deltas) would otherwise join two states:
    a record at a version that stands for changes the page left out, a state missing the deltas a
    compaction folded in between. Inside a read already begun, the statements join its snapshot."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")  # a read: nothing to keep or undo, only the snapshot to release


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB), not busy or failing."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (11, 26)


class RecordReads:
    """The record reads of :class:`~crdtmem.store.sqlite.SQLiteStore`, on the calling thread's
    reader connection (``_r``)."""

    on_damaged: Callable[[DamagedMemory], object] | None

    @property
    def _r(self) -> sqlite3.Connection:  # the store's: one reader connection per thread
        raise NotImplementedError

    @file_read
    def load_doc(self, doc_id: str) -> StoredDoc | None:
        with one_snapshot(self._r) as conn:
            return self._load_doc(conn, doc_id)

    def _load_doc(self, conn: sqlite3.Connection, doc_id: str) -> StoredDoc | None:
        try:
            row = conn.execute(
                "SELECT s.state, d.snap_id, s.codec FROM docs d LEFT JOIN doc_states s "
                "ON s.doc_id = d.id WHERE d.id = ?",
                (doc_id,),
            ).fetchone()
            snapshot, upto = (None, 0) if row is None else (row[0], int(row[1]))
            if snapshot is not None:
                snapshot = unpack_state(bytes(snapshot), row[2])
            tail = [
                (delta_id, bytes(update))
                for delta_id, update in conn.execute(
                    "SELECT id, [update] FROM deltas WHERE doc_id = ? AND id > ? ORDER BY id", (doc_id, upto)
                )
            ]
        except sqlite3.DatabaseError as exc:
            if is_corrupt(exc):
                raise DamagedMemory(doc_id, f"its rows are on a damaged page: {exc}") from exc
            raise
        except (TypeError, ValueError) as exc:  # a value of the wrong type, a state that does not inflate
            raise DamagedMemory(doc_id, f"its state or deltas are not what was stored: {exc}") from exc
        if snapshot is None and not tail:
            return None
        return StoredDoc(bytes(snapshot) if snapshot is not None else None, upto, tail)

    def load_state(self, doc_id: str) -> bytes | None:
        stored = self.load_doc(doc_id)
        return None if stored is None else fold(stored)

    @file_read
    def load_record(self, doc_id: str) -> dict[str, Any] | None:
        with one_snapshot(self._r) as conn:  # a conversation's messages: from the same state
            try:
                row = conn.execute(
                    "SELECT id, kind, record, version FROM docs WHERE id = ?", (doc_id,)
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                if is_corrupt(exc):
                    raise DamagedMemory(doc_id, f"its record is on a damaged page: {exc}") from exc
                raise
            return None if row is None else self._record(row)

    def _record(self, row: tuple[str, str, str, int]) -> dict[str, Any]:
        """A stored record, whole: a conversation's messages come from its state (the stored record
        leaves them out; records written by a version-1 store still hold them, and are current).
        Raises DamagedMemory if the row does not read back."""
        doc_id, kind, text, version = row
        try:
            record = json.loads(text)
        except (TypeError, ValueError) as exc:  # ValueError: JSON and UTF-8 errors alike
            raise DamagedMemory(doc_id, f"its record is not JSON: {exc}") from exc
        if not isinstance(record, dict) or not isinstance(version, int):
            raise DamagedMemory(doc_id, "its record is not a JSON object with a version")
        record["version"] = version
        if kind == "conversation" and record.get("content") is None:
            stored = self.load_doc(doc_id)
            parts = stored.tail if stored is not None else []
            try:
                doc = MemoryDoc.from_parts(doc_id, stored.snapshot if stored else None, parts, 0)
            except MalformedPayload as exc:
                raise DamagedMemory(doc_id, str(exc)) from exc
            record["content"] = doc.messages()
        return record

    def _records(self, rows: Iterable[tuple[str, str, str, int]]) -> list[dict[str, Any]]:
        """The records of ``rows``, leaving out (and reporting to :attr:`on_damaged`) those that do
        not read back, so one damaged memory never hides the others."""
        records = []
        for row in rows:
            try:
                records.append(self._record(row))
            except DamagedMemory as exc:
                if self.on_damaged is not None:
                    self.on_damaged(exc)
        return records

    @file_read
    def query_records(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        since_version: int | None = None,
        ascending: bool = False,
        where: Where | None = None,
        before_version: int | None = None,
        max_chars: int | None = None,
    ) -> list[dict[str, Any]]:
        conditions, args = _conditions(user_id, tenant_id, channel, kind, include_deleted, where)
        if since_version is not None:
            conditions.append("d.version > ?")
            args.append(since_version)
        if before_version is not None:
            conditions.append("d.version < ?")
            args.append(before_version)
        order = " ORDER BY d.version " + ("ASC" if ascending else "DESC")
        # Without a user or tenant (whose indexes hold the version), the page walks the version
        # index and stops at its limit. Left to itself SQLite looks the channel's memories up by id
        # and sorts them by version, which reads every one's version from its row: a column stored
        # after the state and the record, so past their overflow pages (all of every 1 MiB value).
        hint = " INDEXED BY idx_docs_version" if user_id is None and tenant_id is None else ""
        page = f"SELECT d.rowid{', length(d.record)' if max_chars is not None else ''} FROM docs d{hint}"
        if conditions:
            page += " WHERE " + " AND ".join(conditions)
        page += order
        if limit is not None:
            page += f" LIMIT {int(limit)}"
        # one snapshot: a page chosen by size and then read must not come back with a record
        # changed in between (at a version standing for changes the page left out), and a
        # conversation's messages are read from the state its record was made from
        with one_snapshot(self._r) as conn:
            if max_chars is not None:  # the sizes are read in SQLite, the records decoded only for the page
                chosen = _within(conn.execute(page, args).fetchall(), max_chars)
                page, args = ",".join("?" * len(chosen)), chosen
            # the page is chosen first and only its records are read: ordered with the records, SQLite
            # copies every matching record (1 MiB values) into a sort, for each page
            sql = f"SELECT d.id, d.kind, d.record, d.version FROM docs d WHERE d.rowid IN ({page}){order}"
            return self._records(conn.execute(sql, args).fetchall())

    @file_read
    def count_records(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        where: Where | None = None,
    ) -> int:
        conditions, args = _conditions(user_id, tenant_id, channel, kind, include_deleted, where)
        sql = "SELECT count(*) FROM docs d"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        (count,) = self._r.execute(sql, args).fetchone()
        return int(count)

    @file_read
    def query_ids(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        where: Where | None = None,
        limit: int | None = None,
    ) -> list[str]:
        conditions, args = _conditions(user_id, tenant_id, channel, kind, include_deleted, where)
        sql = "SELECT d.id FROM docs d"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [row[0] for row in self._r.execute(sql, args)]

    @file_read
    def conflicts(
        self, *, user_id: str | None = None, tenant_id: str | None = None, doc_id: str | None = None
    ) -> list[Conflict]:
        where, args = [], []
        for column, value in (("user_id", user_id), ("tenant_id", tenant_id), ("doc_id", doc_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT doc_id, field, user_id, tenant_id, vals FROM conflicts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY doc_id, field"
        return [
            Conflict(doc, field, _decode_values(vals), user, tenant)
            for doc, field, user, tenant, vals in self._r.execute(sql, args)
        ]


def _within(sized: list[tuple[int, int]], max_chars: int) -> list[object]:
    """The leading rows of ``sized`` (rowid, record length) whose records add up to at most
    ``max_chars``; at least the first one."""
    chosen: list[object] = []
    total = 0
    for rowid, size in sized:
        total += size or 0
        if chosen and total > max_chars:
            break
        chosen.append(rowid)
    return chosen


def _conditions(
    user_id: str | None,
    tenant_id: str | None,
    channel: str | None,
    kind: str | None,
    include_deleted: bool,
    where: Where | None,
) -> tuple[list[str], list[object]]:
    conditions: list[str] = []
    args: list[object] = []
    for column, value in (("user_id", user_id), ("tenant_id", tenant_id), ("kind", kind)):
        if value is not None:
            conditions.append(f"d.{column} = ?")
            args.append(value)
    if channel is not None:
        conditions.append("d.id IN (SELECT doc_id FROM doc_channels WHERE channel = ?)")
        args.append(channel)
    if not include_deleted:
        conditions.append("(d.deleted = 0 OR d.conflicted = 1)")
    if where is not None:
        condition, more = to_sql(where)
        conditions.append(condition)
        args.extend(more)
    return conditions, args


def _decode_values(text: str) -> tuple[ConflictValue, ...]:
    return tuple(ConflictValue(value, hlc, replica) for value, hlc, replica in json.loads(text))
