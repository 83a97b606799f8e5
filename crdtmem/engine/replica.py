"""The replica: the engine an app embeds. Writes, reads, conflicts, exchange, events.

Data flow of a local write (see DESIGN.md)::

    add/update/... ─▶ MemoryDoc change (one Yrs transaction) ─▶ Delta
      ─▶ GroupCommitter: delta log + doc state + conflicts in one SQLite transaction
      ─▶ acknowledge ─▶ cache ─▶ MemoryEvent feed / observers

and of a remote payload::

    apply(bytes) ─▶ validate whole payload ─▶ causal apply to MemoryDocs (remote.py) ─▶ one commit
      ─▶ cache ─▶ events (one per changed memory)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

from ..access import Principal
from ..clock import DEFAULT_MAX_DRIFT_MS, Hlc, HybridLogicalClock, WallClock, system_wall_ms
from ..document.memory import UNSET, MemoryDoc
from ..document.query import Every, Where
from ..document.query import parse as parse_filters
from ..document.query import readable as readable_channels
from ..document.records import Conflict, HistoryEntry, Kind, Memory, Scope, Source, check_kind
from ..errors import (
    CrdtmemError,
    DamagedMemory,
    InvalidInput,
    MalformedPayload,
    NotFound,
    ReplicaClosed,
)
from ..ids import (
    Channel,
    check_id,
    check_memory_id,
    check_replica_id,
    new_client_id,
    new_memory_id,
    parse_channels,
)
from ..index import Indexer, IndexSettings, SearchFilter, SearchResult, open_indexer
from ..limits import DEFAULT_LIMITS, Limits
from ..store.base import Commit, DeltaRecord, Store, VersionVector
from ..store.memory import MemoryStore
from ..store.sqlite import SQLiteStore, Synchronous
from . import payload as wire
from .cache import DocCache, MemoryCache
from .catchup import CatchUp, decode_states, export_states, is_behind, is_states
from .changes import Dots, as_list, check_embedding, check_metadata, doc_write
from .committer import GroupCommitter
from .compaction import DEFAULT_LEASE_MS, Compacted, Compaction
from .erasure import Erasure
from .feed import EventFeed, Subscription
from .inbound import ApplyResult
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Publisher
from .quarantine import Quarantine, report_integrity
from .remote import RemoteApply
from .signing import KeyPolicy, Keyring, Signer, open_keyring
from .snapshots import EVERY_DELTAS as SNAPSHOT_EVERY
from .snapshots import Snapshots
from .waiting import Resolver, WaitingLimits
from .workset import WorkingSet

_List = list  # Replica.list shadows the builtin inside the class body


Change = Callable[[MemoryDoc, Dots], Memory | None]
"""One local change to a document; a create returns the record it made (see MemoryDoc.create)."""


class Replica:
    """One replica of the memory store.

    Args:
        path: SQLite file, or None for an in-memory replica (nothing durable).
        replica_id: this replica's unique id (``[A-Za-z0-9_.-]``). Stored in the file; reopening a
            file with a different id is refused. Defaults to the stored id or a random one.
        channels: the channels this replica subscribes to; remote deltas only for other channels are
            ignored. None subscribes to every channel.
        store: use this store instead of ``path`` (e.g. a custom adapter).
        wall_clock: injected wall clock in milliseconds (tests make it deterministic).
        max_drift_ms: refuse remote timestamps further ahead than this.
        max_payload_bytes: refuse larger payloads in :meth:`apply` (default ``limits.payload_bytes``).
        cache_size: bound of the materialized-memory cache (entries; its bytes:
            ``limits.record_cache_bytes``); ``warm`` memories are loaded on open.
        synchronous: SQLite ``synchronous`` mode; FULL survives power loss, NORMAL a killed process.
        index: index merged memories for :meth:`search` (True: embedded defaults; or IndexSettings).
        waiting_limits: bounds of the deltas waiting for their dependencies (per sender, per
            origin, age); see :mod:`crdtmem.engine.waiting`.
        limits: the bounds of what one write may carry and a memory may hold, and the node's
            request bounds (:class:`crdtmem.limits.Limits`; its defaults by default).
        snapshot_every: a document's state is stored as a snapshot plus the deltas after it; a new
            snapshot is written (off the acknowledgement path) once that tail holds this many
            deltas, or as many bytes as the snapshot.
        lease_ms: a peer that synced within this long keeps :meth:`compact` from folding log
            entries it lacks (its lease, renewed whenever it syncs).
        retention_ms: log entries older than this fold even if a peer whose lease ran out lacks
            them (None: only what every known peer acknowledged folds).

    Use as ``async with Replica(...) as r`` or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        replica_id: str | None = None,
        channels: Sequence[str] | None = None,
        store: Store | None = None,
        wall_clock: WallClock = system_wall_ms,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        max_payload_bytes: int | None = None,
        cache_size: int = 10_000,
        doc_cache_size: int = 1_024,
        warm: int = 1_000,
        synchronous: Synchronous = "FULL",
        index: IndexSettings | bool | None = None,
        waiting_limits: WaitingLimits | None = None,
        snapshot_every: int = SNAPSHOT_EVERY,
        limits: Limits | None = None,
        lease_ms: int = DEFAULT_LEASE_MS,
        retention_ms: int | None = None,
    ):
        if replica_id is not None:
            check_replica_id(replica_id)
        self._requested_id = replica_id
        self.path = Path(path) if path is not None else None
        self.channels: tuple[str, ...] | None = parse_channels(channels) if channels is not None else None
        self._store: Store = store or (
            SQLiteStore(self.path, synchronous=synchronous) if self.path else MemoryStore()
        )
        self.clock = HybridLogicalClock(wall_clock, max_drift_ms)
        self.limits = limits or DEFAULT_LIMITS
        self.max_payload_bytes = max_payload_bytes or self.limits.payload_bytes
        self._client_id = new_client_id()
        self.quarantine = Quarantine(self._store, wall_clock)
        """Memories whose stored data does not read back, set aside (see :mod:`.quarantine`)."""
        self._store.on_damaged = self.quarantine.add
        self._work = WorkingSet(
            self._store,
            self._client_id,
            cache_size=cache_size,
            doc_cache_size=doc_cache_size,
            cache_bytes=self.limits.record_cache_bytes,
            doc_cache_bytes=self.limits.doc_cache_bytes,
            quarantine=self.quarantine,
        )
        self.cache: MemoryCache = self._work.records
        """Materialized memories by id (a bounded LRU, never ahead of the store)."""
        self.doc_cache: DocCache = self._work.docs
        """Loaded documents by id (a bounded LRU, never ahead of the store)."""
        self._warm = warm
        # fsync-ing commits go to the commit thread (group commit); cheap ones run inline
        self._committer = GroupCommitter(self._store, inline=store is None and synchronous != "FULL")
        self._locks = KeyedLocks()
        self._in_flight = 0  # writes and applies between entry and acknowledgement
        self.feed = EventFeed()
        self._publisher = Publisher(
            self._committer, self._work, self.feed, alone=lambda: self._in_flight == 1
        )
        self.snapshots = self._publisher.snapshots = Snapshots(
            self._committer, self._work, self._locks, every_deltas=snapshot_every
        )
        """Writes a document's snapshot when its tail of deltas has grown (off the acknowledgement path)."""
        self._remote = RemoteApply(
            clock=self.clock,
            store=self._store,
            work=self._work,
            locks=self._locks,
            subscribed=self._subscribed,
            publisher=self._publisher,
            replica_id=lambda: self._id,
            wall=wall_clock,
            keyring=lambda: self.keyring,
            bounds=self.limits,
            limits=waiting_limits
            or WaitingLimits(
                self.limits.pending_per_sender, self.limits.pending_per_origin, self.limits.pending_age_s
            ),
        )
        self.resolve_rights: Resolver | None = None
        """The current rights of a principal by name, where a tokens table knows them (a node sets
        it): deltas waiting since before a restart are checked against them, and
        :meth:`reexamine` applies what was denied under rights that changed since."""
        self._applying = 0
        self._materializer = self._remote.materializer = Materializer(
            self._work, self._locks, self._publisher, self.clock, busy=lambda: self._applying > 0
        )
        self.compaction = Compaction(
            self._store,
            self._committer,
            self.snapshots,
            wall_clock,
            lease_ms=lease_ms,
            retention_ms=retention_ms,
        )
        """Peers' acknowledgements and leases, and log compaction (:meth:`compact`)."""
        self._catchup = CatchUp(
            store=self._store,
            work=self._work,
            locks=self._locks,
            publisher=self._publisher,
            materializer=self._materializer,
            clock=self.clock,
            subscribed=self._subscribed,
        )
        self.erasure = self._remote.erasure = Erasure(
            store=self._store,
            work=self._work,
            locks=self._locks,
            publisher=self._publisher,
            materializer=self._materializer,
            snapshots=self.snapshots,
            waiting=self._remote.waiting,
            clock=self.clock,
            replica_id=lambda: self._id,
        )
        """Forgets memories here and takes erase markers from peers (:meth:`forget`)."""
        self.key_policy = KeyPolicy()
        """Which origins' keys to trust (a node sets it from its tokens file before start)."""
        self.keyring: Keyring | None = None
        """The keys this replica verifies remote deltas with, and its own (once started)."""
        self.signer: Signer | None = None
        """This replica's signing key (once started)."""
        self._id = ""
        self._open = False
        self._index_settings = IndexSettings() if index is True else (index or None)
        self.index: Indexer | None = None
        """The indexer following this replica, when it was opened with ``index=...``."""

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def store(self) -> Store:
        return self._store

    @property
    def pending_count(self) -> int:
        """Remote deltas stored but waiting for causal dependencies that have not arrived yet."""
        return len(self._remote.waiting)

    def storage_status(self) -> dict[str, Any]:
        """What the integrity check on open found (``["ok"]``, the problems, or None when the
        store has no check) and the quarantined memories, with why."""
        integrity = getattr(self._store, "integrity", None)
        return {"integrity": list(integrity) if integrity else None, "quarantined": self.quarantine.listing()}

    def trust_status(self) -> dict[str, Any]:
        """What the trust checks refused and evicted since start, and who has deltas waiting."""
        return self._remote.status()

    async def start(self) -> Replica:
        if self._open:
            return self
        self._store.open()
        report_integrity(self.path, getattr(self._store, "integrity", None))
        try:
            stored = self._store.get_meta("replica_id")
            if stored and self._requested_id and stored != self._requested_id:
                raise InvalidInput(
                    f"{self.path} belongs to replica {stored!r}, not {self._requested_id!r}; "
                    "each replica needs its own file"
                )
            self._id = self._requested_id or stored or f"r-{new_memory_id()[:12]}"
            self._publisher.replica_id = self._id
            if not stored:
                self._store.set_meta("replica_id", self._id)
            last = self._store.last_hlc()
            if last:
                self.clock.restore(Hlc.decode(last))
            self.signer, self.keyring = open_keyring(self._store, self._id, self.key_policy)
            self.quarantine.load()  # before anything reads a memory
            self._remote.load_pending(self.resolve_rights)
            self.compaction.load()
            self._work.warm(self.channels, self._warm)
            self._committer.start()
            self._materializer.load(self._store.stale())  # records a crash left behind their deltas
        except BaseException:
            self._store.close()
            raise
        self._open = True
        if self._index_settings is not None:
            try:
                indexer = open_indexer(
                    self.path,
                    self.store,
                    self.on_commit,
                    self._index_settings,
                    settle=self._materializer.settle,
                )
                self.index = await indexer.start()
            except BaseException:
                await self.stop()
                raise
        return self

    async def stop(self) -> None:
        if not self._open:
            return
        self._open = False
        if self.index is not None:
            await self.index.stop()
            self.index = None
        with contextlib.suppress(CrdtmemError):  # the stale marks are durable: done on the next open
            await self._materializer.settle()
        await self._materializer.stop()
        self.feed.close()
        await self.snapshots.stop()
        self._committer.stop()
        with contextlib.suppress(CrdtmemError):  # marks only hold the horizon back; rebuilt on sync
            self.compaction.save()
        self._store.close()

    close = stop

    async def settle(self) -> None:
        """Finish what follows acknowledged changes off their path: read back the memories of
        applied batches (their records and events) and write the snapshots that are due."""
        self._check_open()
        await self._materializer.settle()
        await self.snapshots.settle()

    async def __aenter__(self) -> Replica:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _check_open(self) -> None:
        if not self._open:
            raise ReplicaClosed("the replica is not open; use 'async with Replica(...)' or start()")

    # -- local writes -------------------------------------------------------------------------

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
        undone, and the id cannot be used again. Raises NotFound if the memory is not here."""
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
            return await self._write_locked(memory_id, change, new, check_exists)
        finally:
            self._in_flight -= 1

    async def _write_locked(self, memory_id: str, change: Change, new: bool, check_exists: bool) -> Memory:
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
                raise NotFound(f"no memory with id {memory_id!r} on replica {self._id}")
            stale = memory_id in self._materializer  # a batch changed it; its record is behind
            before = None if existing is None else self._materializer.before(memory_id)
            dots = Dots(self._id, self.clock)
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
                        f"{self._id}:{hlc}",
                        self._id,
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
                {memory_id: self._id},
                after=lambda: self._materializer.taken(memory_id),
            )
            return events[0].memory

    def _check_holds(self, memory: Memory, before: Memory | None) -> None:
        """A local write may not take a memory past the bounds of what it holds; a memory already
        past them (merged from a replica with larger bounds) may still shrink or stay as it is."""
        counts = _holds(memory)
        earlier = _holds(before) if before is not None else (0, 0, 0, 0)
        self.limits.check_memory(*(n if n > e else 0 for n, e in zip(counts, earlier, strict=True)))

    # -- reads --------------------------------------------------------------------------------

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
    ) -> _List[Memory]:
        """Memories matching every given filter, most recently changed first. Deleted memories are
        left out unless ``include_deleted``, except those in a delete conflict.

        ``filters`` is a filter in mem0's form on any field, metadata included (operators, AND, OR,
        NOT: :mod:`crdtmem.document.query`); the store evaluates it. ``before_version`` keeps the
        memories changed before that local version: the next page after a memory is
        ``before_version=memory.version``. ``readable`` keeps the memories on a channel one of these
        grants (``*``, or channels with ``*`` parts: a token's read rights) matches."""
        self._check_open()
        scope = self._scope_args(user_id, tenant_id, topic, kind, channel, include_deleted)
        where = _with_readable(parse_filters(filters), readable)
        await self._materializer.settle()
        records = self._store.query_records(
            **scope,
            where=where,
            limit=limit,
            since_version=since_version,
            before_version=before_version,
            ascending=ascending,
        )
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
        scope = self._scope_args(user_id, tenant_id, topic, kind, channel, include_deleted)
        where = _with_readable(parse_filters(filters), readable)
        await self._materializer.settle()
        return self._store.count_records(**scope, where=where)

    def _scope_args(
        self,
        user_id: str | None,
        tenant_id: str | None,
        topic: str | None,
        kind: Kind | None,
        channel: str | None,
        include_deleted: bool,
    ) -> dict[str, Any]:
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

    # -- search -------------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: Kind | None = None,
        tags: Sequence[str] = (),
        topic: str | None = None,
        limit: int = 10,
        include_conflicted: bool = True,
        filters: Mapping[str, Any] | None = None,
        channels: Sequence[str] | None = None,
        threshold: float | None = None,
        offset: int = 0,
        readable: Sequence[str] | None = None,
    ) -> _List[SearchResult]:
        """Memories by meaning, best first, each with its score (cosine similarity: 1 is the same
        text, 0 or less unrelated), restricted by every given scope filter and by ``filters``
        (mem0's form, as in :meth:`list`). ``threshold`` drops results that score lower; without
        one, unrelated results are dropped (0 or less, or under the embedder's noise floor: 0.1 for
        the lexical default). ``offset`` skips the first results (a later page; offset + limit is
        at most 1000); ``readable`` keeps memories on a channel these grants match (as in
        :meth:`list`). Needs ``index=``."""
        index, flt, where = await self._search_args(
            user_id, tenant_id, kind, tags, topic, include_conflicted, filters, channels, readable
        )
        return await index.search(query, flt, limit, where=where, threshold=threshold, offset=offset)

    async def search_count(
        self,
        query: str,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: Kind | None = None,
        tags: Sequence[str] = (),
        topic: str | None = None,
        include_conflicted: bool = True,
        filters: Mapping[str, Any] | None = None,
        channels: Sequence[str] | None = None,
        threshold: float | None = None,
        readable: Sequence[str] | None = None,
    ) -> int:
        """How many results :meth:`search` has for these arguments over all its pages (at most 1000)."""
        index, flt, where = await self._search_args(
            user_id, tenant_id, kind, tags, topic, include_conflicted, filters, channels, readable
        )
        return await index.count(query, flt, where=where, threshold=threshold)

    async def _search_args(
        self,
        user_id: str | None,
        tenant_id: str | None,
        kind: Kind | None,
        tags: Sequence[str],
        topic: str | None,
        include_conflicted: bool,
        filters: Mapping[str, Any] | None,
        channels: Sequence[str] | None,
        readable: Sequence[str] | None,
    ) -> tuple[Indexer, SearchFilter, Where | None]:
        self._check_open()
        if self.index is None:
            raise InvalidInput(
                "this replica has no index: open it with Replica(..., index=True) "
                "(a node indexes unless started with --no-index)"
            )
        await self._materializer.settle()  # results are read from the store's records
        flt = SearchFilter.build(
            user_id=user_id,
            tenant_id=tenant_id,
            kind=kind,
            topic=topic,
            tags=tags,
            channels=channels,
            include_conflicted=include_conflicted,
        )
        return self.index, flt, _with_readable(parse_filters(filters), readable)

    # -- exchange -----------------------------------------------------------------------------

    def version_vector(self, channel: str) -> VersionVector:
        """``{origin: highest contiguous seq}`` this replica has stored for ``channel``."""
        self._check_open()
        return self._store.version_vector(parse_channels([channel])[0])

    def version_vectors(self, channels: Sequence[str] | None = None) -> dict[str, VersionVector]:
        self._check_open()
        names = parse_channels(channels) if channels is not None else self._known_channels()
        return {c: self._store.version_vector(c) for c in names}

    def _known_channels(self) -> tuple[str, ...]:
        return self.channels if self.channels is not None else tuple(self._store.channels())

    async def export_since(
        self,
        channels: str | Sequence[str],
        since: VersionVector | dict[str, VersionVector] | None = None,
        *,
        limit: int | None = None,
        version: int = wire.VERSION,
    ) -> bytes:
        """The deltas of ``channels`` that a peer at ``since`` is missing, as a payload.

        Args:
            channels: one channel name, or several.
            since: the peer's version vector (``{origin: seq}`` for one channel, or
                ``{channel: {origin: seq}}``); None or empty exports everything.
            limit: at most this many deltas (the peer asks again with its new vector for more).
            version: the payload version (1 for a reader that speaks only 1: no signatures).
        """
        self._check_open()
        names = parse_channels([channels] if isinstance(channels, str) else channels)
        try:
            vectors = wire.normalize_since(names, since)
        except MalformedPayload as exc:
            raise InvalidInput(str(exc)) from exc
        if is_behind(self._store, vectors, names):  # the log no longer holds what the peer misses
            return self.export_states(names, limit=limit)
        deltas = self._store.deltas_since(names, vectors, limit)
        mine = {c: self._store.version_vector(c) for c in names}
        return wire.encode(wire.Payload(self._id, deltas, mine, self.keys_for(deltas)), version)

    def export_states(
        self,
        channels: Sequence[str],
        *,
        after: str | None = None,
        limit: int | None = None,
        covers: dict[str, VersionVector] | None = None,
    ) -> bytes:
        """A page of document states of ``channels``, for a peer behind the horizon of the log
        (:mod:`crdtmem.engine.catchup`): the first page with ``after=None``, then ``after`` = the
        page's ``next`` and ``covers`` = the first page's, until ``next`` is None."""
        self._check_open()
        names = parse_channels(channels)
        return export_states(
            self._store,
            self._id,
            names,
            after=after,
            limit=limit,
            covers=covers,
            max_bytes=self.max_payload_bytes,
        )

    def behind(self, channels: Sequence[str], vectors: dict[str, VersionVector]) -> bool:
        """Whether a peer at ``vectors`` misses entries this replica's log folded (it needs states)."""
        return is_behind(self._store, vectors, parse_channels(channels))

    async def compact(self) -> Compacted:
        """Fold the log entries every known peer holds (or older than ``retention_ms`` and not held
        by a lease) into the documents' snapshots (:mod:`crdtmem.engine.compaction`)."""
        self._check_open()
        await self._materializer.settle()  # a document folds into its snapshot once it has a record
        return await self.compaction.compact()

    def acknowledged(self, peer: str, vectors: dict[str, VersionVector]) -> None:
        """Record that ``peer`` holds ``vectors`` (renews its lease); a node calls it as peers sync."""
        self._check_open()
        self.compaction.acknowledged(peer, vectors)

    def keys_for(self, deltas: Sequence[DeltaRecord]) -> dict[str, bytes]:
        """The public keys to send along with these deltas (receivers pin them on first use)."""
        return self.keyring.keys_for(deltas) if self.keyring is not None else {}

    async def apply(self, data: bytes) -> ApplyResult:
        """Merge a payload from :meth:`export_since` (any replica, any order, any number of times).

        The payload is validated as a whole first; a bad one raises a PayloadError subclass and
        changes nothing. Deltas whose causal dependencies have not arrived are stored and applied
        as soon as they do.
        """
        self._check_open()
        if is_states(data):
            return await self.apply_states(data)
        return await self.apply_payload(wire.decode(data, max_bytes=self.max_payload_bytes))

    async def apply_states(self, data: bytes, *, sender: Principal | None = None) -> ApplyResult:
        """Merge a states page (:meth:`export_states`): its erase markers, then its documents; on
        its last page, this replica's vectors rise to what the states hold."""
        self._check_open()
        page = decode_states(data, max_bytes=self.max_payload_bytes)
        if page.markers:
            await self.apply_payload(wire.Payload(page.sender, page.markers), sender=sender, isolate=True)
        self._in_flight += 1
        try:
            changed, refused = await self._catchup.apply(page, sender)
            changed += await self._remote.retry({doc_id for doc_id, _ in page.states})
        finally:
            self._in_flight -= 1
        return ApplyResult(changed, 0, self.pending_count, 0, rejected=refused)

    async def apply_payload(
        self, received: wire.Payload, *, sender: Principal | None = None, isolate: bool = False
    ) -> ApplyResult:
        """:meth:`apply` for a payload already decoded (and validated) by :func:`payload.decode`.

        This is the entry point of every transport (HTTP push and pull, the replication WebSocket, a
        message bus): each delta is authenticated and authorized against ``sender``'s rights.

        Args:
            sender: who delivered the payload (a server passes its caller's principal; a node that
                pulled passes its peer's). Deltas of an origin the sender may not introduce are
                refused and counted (``ApplyResult.unauthenticated``); a payload that changes a
                memory the sender may not write is refused with
                :class:`~crdtmem.access.AccessDenied` and changes nothing. None: the caller vouches
                for the payload (every origin but this replica's own, every channel).
            isolate: for a stream of payloads (a link, a pull): instead of refusing the whole payload
                when a memory's deltas fail their checks, apply the others and reject those (counted
                in ``ApplyResult.rejected``, skipped when resent), so one bad memory cannot hold the
                stream back for good.
        """
        self._check_open()
        self._in_flight += 1
        self._applying += 1
        try:
            result = await self._remote.apply(received, sender, isolate=isolate)
            if received.vectors:  # what the sender holds: its acknowledgement, for compaction
                self.compaction.acknowledged(received.sender, received.vectors)
            return result
        finally:
            self._in_flight -= 1
            self._applying -= 1
            if self._materializer.waiting:
                self._materializer.kick()

    async def reexamine(self) -> int:
        """Apply again the deltas denied to senders whose rights have changed since (their current
        rights from :attr:`resolve_rights`); returns how many applied. A node runs it on start."""
        self._check_open()
        if self.resolve_rights is None:
            return 0
        self._in_flight += 1
        try:
            return await self._remote.reexamine(self.resolve_rights)
        finally:
            self._in_flight -= 1

    def _subscribed(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels

    # -- events -------------------------------------------------------------------------------

    def events(self, channels: Sequence[str] | None = None, *, max_queue: int = 10_000) -> Subscription:
        """MemoryEvents for ``channels`` (None: all) from now on, one per committed change.

        A consumer that falls ``max_queue`` events behind gets :class:`~crdtmem.engine.feed.FeedOverflow`
        instead of unbounded buffering; it can catch up with :meth:`list` or ``export_since``.
        """
        self._check_open()
        names = parse_channels(channels) if channels is not None else None
        return self.feed.subscribe(names, max_queue=max_queue)

    def on_commit(self, listener: Callable[[_List[DeltaRecord]], None]) -> Callable[[], None]:
        """Call ``listener(deltas)`` after every commit, with every delta's sequence numbers (the sync
        layer pushes from here)."""
        self._publisher.listeners.append(listener)
        return lambda: self._publisher.listeners.remove(listener)


def _holds(memory: Memory) -> tuple[int, int, int, int]:
    """(metadata keys, tags, list items, messages) of a memory."""
    content = memory.content
    sized = isinstance(content, Sized) and not isinstance(content, str)
    items = len(content) if memory.kind == "list" and sized else 0
    messages = len(content) if memory.kind == "conversation" and sized else 0
    return len(memory.metadata), len(memory.tags), items, messages


def _with_readable(where: Where | None, readable: Sequence[str] | None) -> Where | None:
    grants = None if readable is None else readable_channels(readable)
    if grants is None:
        return where
    return grants if where is None else Every((where, grants))
