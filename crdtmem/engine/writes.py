"""Local writes: the replica's write methods, and the path each takes, one change to one memory
from its lock to its acknowledged commit.

    Replica.add/update/... ─▶ lock the memory ─▶ MemoryDoc change (one Yrs transaction) ─▶ Delta
      ─▶ the bounds of what a memory holds ─▶ Publisher.commit (durable) ─▶ the memory after it

:class:`Writes` is part of :class:`~crdtmem.engine.replica.Replica` (which inherits it): its methods
(add, update, change, delete, forget, increment, ..., resolve) check their arguments and turn each
write into a :data:`Change`. :class:`LocalWrites` holds the parts the path uses; the replica builds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any

from ..clock import HybridLogicalClock
from ..document.memory import UNSET, MemoryDoc
from ..document.records import Kind, Memory, Scope, Source
from ..errors import InvalidInput, NotFound
from ..ids import check_id, check_memory_id, new_memory_id
from ..limits import Limits
from ..store.base import Commit, DeltaRecord, Store
from .changes import Dots, as_list, check_embedding, check_metadata, doc_write
from .erasure import Erasure
from .locks import KeyedLocks
from .materialize import Materializer
from .opened import Opened
from .publish import Publisher
from .workset import WorkingSet

Change = Callable[[MemoryDoc, Dots], Memory | None]
"""One local change to a document; a create returns the record it made (see MemoryDoc.create)."""


class LocalWrites:
    """Applies local changes and commits them, one memory at a time (its lock held throughout)."""

    def __init__(
        self,
        *,
        store: Store,
        work: WorkingSet,
        locks: KeyedLocks,
        materializer: Materializer,
        publisher: Publisher,
        clock: HybridLogicalClock,
        limits: Limits,
        replica_id: Callable[[], str],
    ):
        self._store = store
        self._work = work
        self._locks = locks
        self._materializer = materializer
        self._publisher = publisher
        self._clock = clock
        self._limits = limits
        self._replica_id = replica_id

    async def write(self, memory_id: str, change: Change, *, new: bool, check_exists: bool) -> Memory:
        """Make ``change`` to the memory under its lock and commit it; returns the memory after it.

        Args:
            new: a create (the document may not exist yet).
            check_exists: a create of a chosen id, which may find the id's deleted memory.
        """
        replica_id = self._replica_id()
        async with self._locks.hold([memory_id]):
            if self._store.is_erased(memory_id):
                raise NotFound(f"memory {memory_id!r} was forgotten here; its id cannot be used again")
            # a create of a chosen id may find the id's deleted memory: the change revives it
            existing = self._work.doc(memory_id) if not new or check_exists else None
            if existing is not None:
                doc = existing
            elif new:
                doc = self._work.new_doc(memory_id)
            else:
                raise NotFound(f"no memory with id {memory_id!r} on replica {replica_id}")
            stale = memory_id in self._materializer  # a batch changed it; its record is behind
            before = None if existing is None else self._materializer.before(memory_id)
            dots = Dots(replica_id, self._clock)
            try:
                with doc.change():
                    created = change(doc, dots)
            except BaseException:
                self._work.forget([memory_id])  # a failed change may have left partial edits
                raise
            if dots.last is None and not stale:  # nothing was written (e.g. an empty add_items)
                return before or doc.materialize()
            try:
                write, memory = doc_write(doc, before=before, created=created)
                self._check_holds(memory, before)
            except BaseException:
                self._work.forget([memory_id])
                raise
            deltas = []
            if dots.last is not None:
                hlc = dots.last.hlc
                deltas.append(
                    DeltaRecord(
                        f"{replica_id}:{hlc}",
                        replica_id,
                        memory_id,
                        hlc,
                        doc.last_delta.deps,
                        doc.last_delta.update,
                        memory.channels,
                    )
                )
            events = await self._publisher.commit(
                Commit(deltas=deltas, docs=[write], fresh=[memory_id] if stale else []),
                {memory_id: (doc, memory)},
                {memory_id: before},
                {memory_id: replica_id},
                after=lambda: self._materializer.taken(memory_id),
            )
            committed = events[0].memory
            assert committed is not None  # a change's event carries its memory
            return committed

    def _check_holds(self, memory: Memory, before: Memory | None) -> None:
        """A local write may not take a memory past the bounds of what it holds; a memory already
        past them (merged from a replica with larger bounds) may still shrink or stay as it is."""
        counts = _holds(memory)
        earlier = _holds(before) if before is not None else (0, 0, 0, 0)
        self._limits.check_memory(*(n if n > e else 0 for n, e in zip(counts, earlier, strict=True)))


def _holds(memory: Memory) -> tuple[int, int, int, int]:
    """(metadata keys, tags, list items, messages) of a memory."""
    content = memory.content
    sized = isinstance(content, Sized) and not isinstance(content, str)
    items = len(content) if memory.kind == "list" and sized else 0
    messages = len(content) if memory.kind == "conversation" and sized else 0
    return len(memory.metadata), len(memory.tags), items, messages


class Writes(Opened):
    """:meth:`add`, :meth:`update`, :meth:`change`, :meth:`delete`, :meth:`forget`, :meth:`increment`,
    :meth:`decrement`, :meth:`add_items`, :meth:`remove_items`, :meth:`append_message`,
    :meth:`set_embedding`, :meth:`resolve`."""

    channels: tuple[str, ...] | None
    limits: Limits
    erasure: Erasure
    _store: Store
    _materializer: Materializer
    _writes: LocalWrites
    _in_flight: int  # writes and applies between entry and acknowledgement

    async def add(
        self,
        content: Any = UNSET,
        *,
        kind: Kind = "fact",
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        tenant_id: str | None = None,
        topics: Iterable[str] = (),
        shared: bool = False,
        metadata: dict[str, Any] | None = None,
        tags: Iterable[Any] = (),
        memory_id: str | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> Memory:
        """Create a memory. ``content``: any JSON value for fact/preference (text, number, bool, null,
        list, object), list of items for list, int for counter, list of ``{"role", "text"}`` for
        conversation.

        ``memory_id`` chooses the id (any app id; default a random one). An id in use by a live
        memory is refused; the id of a deleted memory takes a new incarnation of it (same kind and
        scope): the delete was observed, so this is no conflict (protocol.md §5.9).

        ``embedding`` (with ``embedding_model``, the model that made it) is the caller's vector for
        the memory; search uses it instead of embedding the text when the index's model is the same.
        """
        self._check_open()
        vector = None if embedding is None else check_embedding(embedding, embedding_model)
        for name, value in (
            ("user_id", user_id),
            ("tenant_id", tenant_id),
            ("agent_id", agent_id),
            ("session_id", session_id),
        ):
            if value is not None:
                check_id(value, name)
        if memory_id is not None:
            check_memory_id(memory_id)
        topic_list = tuple(check_id(t, "topic") for t in as_list(topics, "topics"))
        chosen = memory_id is not None  # a caller's id may clash; a fresh random one cannot
        memory_id = memory_id or new_memory_id()
        source = Source(agent_id, session_id, user_id)
        scope = Scope(user_id, tenant_id, topic_list, shared)
        if self.channels is not None and not set(scope.channels()) & set(self.channels):
            raise InvalidInput(
                f"this replica subscribes to {list(self.channels)}; a memory on {list(scope.channels())} "
                "would never sync from here (subscribe to one of its channels)"
            )
        metadata = check_metadata(metadata)
        tag_list = as_list(tags, "tags")
        self.limits.check_write(
            content=content if kind in ("fact", "preference") else None,
            items=content if kind == "list" and isinstance(content, (list, tuple)) else (),
            messages=content if kind == "conversation" and isinstance(content, (list, tuple)) else (),
            metadata=metadata,
            tags=tag_list,
            topics=topic_list,
        )

        def create(doc: MemoryDoc, dots: Dots) -> Memory | None:
            if doc.exists:
                doc.revive(
                    kind=kind,
                    content=content,
                    scope=scope,
                    metadata=metadata,
                    tags=tag_list,
                    next_dot=dots,
                )
            created = (
                None
                if doc.exists
                else doc.create(
                    memory_id=memory_id,
                    kind=kind,
                    content=content,
                    source=source,
                    scope=scope,
                    metadata=metadata,
                    tags=tag_list,
                    next_dot=dots,
                )
            )
            if vector is not None:
                doc.set_embedding(vector, str(embedding_model), dots)
                if created is not None:
                    created = dataclasses.replace(
                        created, embedding=tuple(vector), embedding_model=embedding_model
                    )
            return created

        return await self._write(memory_id, create, new=True, check_exists=chosen)

    async def update(
        self,
        memory_id: str,
        *,
        content: Any = UNSET,
        metadata: dict[str, Any] | None = None,
        remove_metadata: Iterable[str] = (),
        add_tags: Iterable[Any] = (),
        remove_tags: Iterable[Any] = (),
    ) -> Memory:
        """Change a memory's metadata keys and tags, and a fact or preference's content. Every update,
        even one with nothing to change, re-asserts that the memory is live (protocol.md §5.3), so
        it counts as a write: racing a delete elsewhere, it makes a lifecycle conflict."""
        return await self.change(
            memory_id,
            content=content,
            metadata=metadata,
            remove_metadata=remove_metadata,
            add_tags=add_tags,
            remove_tags=remove_tags,
        )

    async def change(
        self,
        memory_id: str,
        *,
        content: Any = UNSET,
        metadata: dict[str, Any] | None = None,
        remove_metadata: Iterable[str] = (),
        add_tags: Iterable[Any] = (),
        remove_tags: Iterable[Any] = (),
        increment: int | None = None,
        add_items: Iterable[Any] = (),
        remove_items: Iterable[Any] = (),
        append_message: tuple[str, str] | None = None,
    ) -> Memory:
        """Several changes to one memory as one write (one delta, one event): all of them, or, when
        any is refused (bad value, wrong kind), none. ``append_message`` is ``(role, text)``; the
        others are as in :meth:`update`, :meth:`increment`, :meth:`add_items`, :meth:`remove_items`.
        With none of the last four it is :meth:`update`."""
        metadata = check_metadata(metadata)
        removed, added, dropped = (as_list(x, "keys") for x in (remove_metadata, add_tags, remove_tags))
        new_items, old_items = as_list(add_items, "add_items"), as_list(remove_items, "remove_items")

        others = increment is not None or new_items or old_items or append_message is not None
        self.limits.check_write(
            content=None if content is UNSET else content,
            metadata=metadata,
            remove_metadata=removed,
            tags=added + dropped,
            items=new_items + old_items,
            message=append_message,
        )

        def change(doc: MemoryDoc, dots: Dots) -> None:
            if content is not UNSET or metadata or removed or added or dropped or not others:
                doc.update(
                    next_dot=dots,
                    content=content,
                    metadata=metadata,
                    remove_metadata=removed,
                    add_tags=added,
                    remove_tags=dropped,
                )
            if increment is not None:
                doc.increment(increment, dots)
            if new_items:
                doc.add_items(new_items, dots)
            if old_items:
                doc.remove_items(old_items, dots)
            if append_message is not None:
                doc.append_message(*append_message, dots)

        return await self._write(memory_id, change)

    async def delete(self, memory_id: str) -> Memory:
        """Mark a memory deleted. A concurrent update elsewhere makes this a lifecycle conflict."""
        return await self._write(memory_id, lambda doc, dots: doc.delete(dots))

    async def forget(self, memory_id: str) -> None:
        """Erase a memory: its content leaves this replica's state, log, history, index and file,
        and an erase marker on its channels takes it from every replica that syncs them (and keeps
        it from coming back from a peer that still has it). Unlike :meth:`delete`, this cannot be
        undone, and the id cannot be used again. Raises NotFound if the memory is not here.
        Subscribers of its channels get a ``forgotten`` event (its id and channels, no content), here
        and on every replica the marker reaches."""
        self._check_open()
        check_memory_id(memory_id)
        if memory_id in self._materializer:
            await self._materializer.flush([memory_id])
        self._in_flight += 1
        try:
            await self.erasure.forget(memory_id)
        finally:
            self._in_flight -= 1

    def forgotten(self, memory_id: str) -> bool:
        """Whether the memory was forgotten here (by :meth:`forget`, here or on a peer)."""
        self._check_open()
        return self._store.is_erased(memory_id)

    async def increment(self, memory_id: str, amount: int = 1) -> Memory:
        return await self._write(memory_id, lambda doc, dots: doc.increment(amount, dots))

    async def decrement(self, memory_id: str, amount: int = 1) -> Memory:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidInput(f"decrement amount must be an int, got {amount!r}")
        return await self.increment(memory_id, -amount)

    async def add_items(self, memory_id: str, *items: Any) -> Memory:
        self.limits.check_write(items=items)
        return await self._write(memory_id, lambda doc, dots: doc.add_items(items, dots))

    async def remove_items(self, memory_id: str, *items: Any) -> Memory:
        self.limits.check_write(items=items)
        return await self._write(memory_id, lambda doc, dots: doc.remove_items(items, dots))

    async def append_message(self, memory_id: str, *, role: str, text: str) -> Memory:
        self.limits.check_write(message=(role, text))
        return await self._write(memory_id, lambda doc, dots: doc.append_message(role, text, dots))

    async def set_embedding(self, memory_id: str, vector: Sequence[float], model: str) -> Memory:
        """Give a memory the caller's vector, made by ``model``: search uses it instead of embedding
        the memory's text when the index's model is ``model`` (and the sizes agree)."""
        values = check_embedding(vector, model)
        return await self._write(memory_id, lambda doc, dots: doc.set_embedding(values, model, dots))

    async def resolve(self, memory_id: str, *, field: str, value: Any) -> Memory:
        """Settle a conflicted ``field`` (``content``, ``lifecycle`` or ``metadata.{key}``) to
        ``value``. The resolution is an ordinary write and replicates like one."""
        return await self._write(memory_id, lambda doc, dots: doc.resolve(field, value, dots))

    async def _write(
        self,
        memory_id: str,
        change: Change,
        *,
        new: bool = False,
        check_exists: bool = True,
    ) -> Memory:
        self._check_open()
        check_memory_id(memory_id)
        self._in_flight += 1
        try:
            return await self._writes.write(memory_id, change, new=new, check_exists=check_exists)
        finally:
            self._in_flight -= 1
