"""The read side of a replica: one memory, memories by scope and filter (a page or a count), a
memory's history, open conflicts.

:class:`Reads` is part of :class:`~crdtmem.engine.replica.Replica` (which inherits it) and reads
only the parts it declares, which the replica builds. Reads return what is acknowledged: memories a
batch of remote deltas changed are read back first (:mod:`.materialize`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from .. import offloop
from ..document.query import Every, Where
from ..document.query import parse as parse_filters
from ..document.query import readable as readable_channels
from ..document.records import Conflict, HistoryEntry, Kind, Memory, check_kind
from ..errors import DamagedMemory, InvalidInput, MalformedPayload, NotFound
from ..ids import Channel, parse_channels
from ..store.base import Store
from .materialize import Materializer
from .opened import Opened
from .quarantine import Quarantine
from .workset import WorkingSet

_List = list  # Reads.list shadows the builtin inside the class body


class Reads(Opened):
    """:meth:`get`, :meth:`list`, :meth:`count`, :meth:`history`, :meth:`history_page`, :meth:`conflicts`."""

    _id: str
    _store: Store
    _work: WorkingSet
    _materializer: Materializer
    quarantine: Quarantine

    async def get(self, memory_id: str) -> Memory:
        """The memory with this id (deleted ones too, with ``deleted=True``); raises NotFound."""
        self._check_open()
        if memory_id in self._materializer:
            await self._materializer.flush([memory_id])
        return self._record_or_raise(memory_id)

    async def list(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        topic: str | None = None,
        kind: Kind | None = None,
        channel: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        since_version: int | None = None,
        ascending: bool = False,
        filters: Mapping[str, Any] | None = None,
        readable: Sequence[str] | None = None,
        before_version: int | None = None,
        max_chars: int | None = None,
        off_loop: bool = False,
    ) -> _List[Memory]:
        """Memories matching every given filter, most recently changed first. Deleted memories are
        left out unless ``include_deleted``, except those in a delete conflict.

        ``filters`` is a filter in mem0's form on any field, metadata included (operators, AND, OR,
        NOT: :mod:`crdtmem.document.query`); the store evaluates it. ``before_version`` keeps the
        memories changed before that local version: the next page after a memory is
        ``before_version=memory.version``. ``readable`` keeps the memories on a channel one of these
        grants (``*``, or channels with ``*`` parts: a token's read rights) matches. ``max_chars``
        ends the list early once the records add up to that many characters of JSON (at least one
        memory is returned): a page of large memories is a few of them, not ``limit``. ``off_loop``
        reads and decodes the records on a worker thread (:mod:`crdtmem.offloop`), for a caller on
        the event loop that reads pages of megabytes (an event stream's replay)."""
        self._check_open()
        scope = scope_args(user_id, tenant_id, topic, kind, channel, include_deleted)
        where = with_readable(parse_filters(filters), readable)
        await self._materializer.settle()
        query = functools.partial(
            self._store.query_records,
            **scope,
            where=where,
            limit=limit,
            since_version=since_version,
            before_version=before_version,
            ascending=ascending,
            max_chars=max_chars,
        )
        records = await offloop.off_loop(query) if off_loop else query()
        return self._work.memories(records)

    async def count(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        topic: str | None = None,
        kind: Kind | None = None,
        channel: str | None = None,
        include_deleted: bool = False,
        filters: Mapping[str, Any] | None = None,
        readable: Sequence[str] | None = None,
    ) -> int:
        """How many memories :meth:`list` would return with these filters and no limit."""
        self._check_open()
        scope = scope_args(user_id, tenant_id, topic, kind, channel, include_deleted)
        where = with_readable(parse_filters(filters), readable)
        await self._materializer.settle()
        return self._store.count_records(**scope, where=where)

    async def history(self, memory_id: str) -> _List[HistoryEntry]:
        """Every change this replica applied to the memory, oldest first, with the state after it."""
        entries, _ = await self.history_page(memory_id)
        return entries

    async def history_page(
        self, memory_id: str, *, offset: int = 0, limit: int | None = None
    ) -> tuple[_List[HistoryEntry], int]:
        """``limit`` entries of :meth:`history` from the ``offset``-th on, and how many it has in
        all. Only the page's states are materialized."""
        self._check_open()
        self.quarantine.check(memory_id)
        for name, value in (("offset", offset), ("limit", limit if limit is not None else 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"{name} must be a non-negative int, not {value!r}")
        deltas = [] if self._store.is_erased(memory_id) else self._store.history(memory_id)
        if not deltas:
            raise NotFound(f"no memory with id {memory_id!r} on replica {self._id}")
        doc = self._work.new_doc(memory_id)
        entries: _List[HistoryEntry] = []
        total = 0
        for delta in deltas:
            try:
                doc.apply(delta.update)
            except MalformedPayload as exc:
                raise self.quarantine.add(DamagedMemory(memory_id, f"delta {delta.uid}: {exc}")) from exc
            if not doc.exists:
                continue
            total += 1
            if total <= offset or (limit is not None and len(entries) >= limit):
                continue
            memory = doc.materialize()
            entries.append(
                HistoryEntry(
                    delta.origin,
                    delta.hlc,
                    memory.content,
                    memory.deleted,
                    memory.conflicted,
                    memory.metadata,
                    memory.tags,
                )
            )
        return entries, total

    async def conflicts(
        self, *, user_id: str | None = None, tenant_id: str | None = None, memory_id: str | None = None
    ) -> _List[Conflict]:
        """Open conflicts, sorted by memory id and field."""
        self._check_open()
        await self._materializer.settle()
        return self._store.conflicts(user_id=user_id, tenant_id=tenant_id, doc_id=memory_id)

    def _record_or_raise(self, memory_id: str) -> Memory:
        memory = self._work.record(memory_id)
        if memory is None:
            raise NotFound(f"no memory with id {memory_id!r} on replica {self._id}")
        return memory


def scope_args(
    user_id: str | None,
    tenant_id: str | None,
    topic: str | None,
    kind: Kind | None,
    channel: str | None,
    include_deleted: bool,
) -> dict[str, Any]:
    """The store's scope arguments for these filters, checked (a topic is its channel)."""
    if topic is not None:
        if channel is not None:
            raise InvalidInput("pass either topic or channel, not both")
        channel = str(Channel.topic(topic))
    if channel is not None:
        channel = parse_channels([channel])[0]
    if kind is not None:
        check_kind(kind)
    return {
        "user_id": user_id,
        "tenant_id": tenant_id,
        "channel": channel,
        "kind": kind,
        "include_deleted": include_deleted,
    }


def with_readable(where: Where | None, readable: Sequence[str] | None) -> Where | None:
    """``where``, further restricted to memories on a channel one of the grants ``readable`` matches."""
    grants = None if readable is None else readable_channels(readable)
    if grants is None:
        return where
    return grants if where is None else Every((where, grants))
