"""The replica: the engine an app embeds. Construction and lifecycle, events.

Its other sides are classes it inherits, each with the parts it reads declared: :mod:`.reads`
(get, list, count, history, conflicts), :mod:`.search` (search by meaning), :mod:`.exchange`
(version vectors, export and apply of payloads and states pages, compaction) and :mod:`.writes`
(add, update, change, delete, forget, increment, ..., resolve). The replica builds
the parts they share in ``__init__`` and opens them in :meth:`Replica.start`.

Data flow of a local write (see DESIGN.md)::

    add/update/... ─▶ MemoryDoc change (one Yrs transaction) ─▶ Delta            (writes.py)
      ─▶ GroupCommitter: delta log + doc state + conflicts in one SQLite transaction
      ─▶ acknowledge ─▶ cache ─▶ MemoryEvent feed / observers                     (publish.py)

and of a remote payload::

    apply(bytes) ─▶ validate whole payload ─▶ causal apply to MemoryDocs (remote.py) ─▶ one commit
      ─▶ cache ─▶ events (one per changed memory)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..clock import DEFAULT_MAX_DRIFT_MS, Hlc, HybridLogicalClock, WallClock, system_wall_ms
from ..errors import CrdtmemError, InvalidInput
from ..ids import (
    check_replica_id,
    new_client_id,
    new_memory_id,
    parse_channels,
)
from ..index import Indexer, IndexSettings, open_indexer
from ..limits import DEFAULT_LIMITS, Limits
from ..store.base import DeltaRecord, Store
from ..store.memory import MemoryStore
from ..store.sqlite import SQLiteStore, Synchronous
from .cache import DocCache, MemoryCache
from .catchup import CatchUp
from .committer import GroupCommitter
from .compaction import DEFAULT_LEASE_MS, Compaction
from .erasure import Erasure
from .exchange import Exchange
from .feed import EventFeed, Subscription
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Publisher
from .quarantine import Quarantine, report_integrity
from .reads import Reads
from .rebase import Rebaser
from .remote import RemoteApply
from .search import Search
from .signing import KeyPolicy, Keyring, Signer, open_keyring
from .snapshots import EVERY_DELTAS as SNAPSHOT_EVERY
from .snapshots import Snapshots
from .waiting import Resolver, WaitingLimits
from .workset import WorkingSet
from .writes import LocalWrites, Writes


class Replica(Reads, Search, Exchange, Writes):
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
            deltas and an eighth of the snapshot's bytes, or as many bytes as the snapshot.
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
            self._committer,
            self._work,
            self._locks,
            every_deltas=snapshot_every,
            packer=self._store.pack_state if isinstance(self._store, SQLiteStore) else None,
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
                self.limits.pending_per_sender,
                self.limits.pending_per_origin,
                self.limits.pending_age_s,
                self.limits.pending_bytes_per_sender,
                self.limits.pending_bytes_per_origin,
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
        self._writes = LocalWrites(
            store=self._store,
            work=self._work,
            locks=self._locks,
            materializer=self._materializer,
            publisher=self._publisher,
            clock=self.clock,
            limits=self.limits,
            replica_id=lambda: self._id,
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
            replica_id=lambda: self._id,
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
        self.compaction.rebaser = Rebaser(
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

    # -- events -------------------------------------------------------------------------------

    def events(self, channels: Sequence[str] | None = None, *, max_queue: int = 10_000) -> Subscription:
        """MemoryEvents for ``channels`` (None: all) from now on, one per committed change (and one
        ``forgotten`` per memory erased here, with no ``memory``: see :mod:`crdtmem.events`).

        A consumer that falls ``max_queue`` events behind gets :class:`~crdtmem.engine.feed.FeedOverflow`
        instead of unbounded buffering; it can catch up with :meth:`list` or ``export_since``.
        """
        self._check_open()
        names = parse_channels(channels) if channels is not None else None
        return self.feed.subscribe(names, max_queue=max_queue)

    def on_commit(self, listener: Callable[[list[DeltaRecord]], None]) -> Callable[[], None]:
        """Call ``listener(deltas)`` after every commit, with every delta's sequence numbers (the sync
        layer pushes from here). It runs on the event loop inside the commit step, before the
        commit's events: keep it short; an exception it raises is logged (the commit stands)."""
        self._publisher.listeners.append(listener)
        return lambda: self._publisher.listeners.remove(listener)
