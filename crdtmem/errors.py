"""The crdtmem error tree.

Every error crdtmem raises on purpose is a :class:`CrdtmemError`. Errors from sqlite3, pycrdt and
msgpack are translated at the adapter edge (``raise ... from exc``), so callers catch one tree::

    CrdtmemError
    ├── InvalidInput               bad arguments from the caller (unknown kind, bad id, wrong type)
    │   ├── UnknownKind            a memory kind that is not fact|preference|list|counter|conversation
    │   ├── InvalidChannel         a channel name that does not parse
    │   ├── WrongKind              an operation that does not fit the memory's kind
    │   ├── MemoryExists           a create with the id of a live memory
    │   ├── LimitExceeded          past one of the bounds of crdtmem.limits (names it)
    │   └── MissingExtra           an optional dependency is not installed (also an ImportError)
    ├── NotFound                   no memory with that id on this replica
    ├── MemoryDeleted              the memory is deleted (and not in conflict): write refused
    ├── NoSuchConflict             resolve() on a field that has no conflict
    ├── PayloadError               a sync payload was refused; nothing was applied
    │   ├── MalformedPayload       not a crdtmem payload, truncated, or fields of the wrong shape
    │   ├── PayloadTooLarge        larger than the configured limit
    │   ├── UnsupportedVersion     a payload format version this build does not speak
    │   ├── ClockSkewError         a remote timestamp is further ahead than the allowed drift
    │   └── EpochMismatch          an epoch of another lineage, or a change not carried over it
    ├── BehindHorizon              a pull from a vector below the folded log: ask for states
    ├── StorageError               the durable store failed; the write was not acknowledged
    │   ├── StoreLocked            the database file is in use by another running replica
    │   ├── StoreUnreadable        the database file does not open (not SQLite, or its schema damaged)
    │   ├── DamagedMemory          a memory's stored rows do not read back (found by the store)
    │   ├── MemoryQuarantined      a memory found damaged is set aside; the others are served
    │   └── IndexUnavailable       the search index's engine failed (a server unreachable, its files)
    ├── BusError                   the NATS bus refused a stream or consumer (misconfigured)
    ├── TooManyRequests            a node's states or pull requests over its rate (retry_after)
    └── ReplicaClosed              the replica was used after stop() (a SyncReplica after close())
"""

from __future__ import annotations


class CrdtmemError(Exception):
    """Base class of every error crdtmem raises on purpose."""


class InvalidInput(CrdtmemError, ValueError):
    """An argument from the caller is invalid; nothing was changed."""


class UnknownKind(InvalidInput):
    """The memory kind is not one of fact, preference, list, counter, conversation."""


class InvalidChannel(InvalidInput):
    """A channel name does not parse as one of the four channel shapes."""


class WrongKind(InvalidInput):
    """The operation does not apply to this memory's kind (e.g. increment on a fact)."""


class MemoryExists(InvalidInput):
    """A create named the id of a live memory (the id of a deleted one takes a new incarnation)."""


class LimitExceeded(InvalidInput):
    """A request goes past one of the bounds of :class:`crdtmem.limits.Limits`; nothing was changed.
    ``limit`` names the bound (a field of ``Limits``), ``maximum`` is its value."""

    def __init__(self, limit: str, maximum: int, message: str):
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum


class MissingExtra(InvalidInput, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the extra
    (``pip install 'crdtmem[EXTRA]'``)."""


class NotFound(CrdtmemError, KeyError):
    """No memory with this id exists on this replica."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "not found"


class MemoryDeleted(CrdtmemError):
    """The memory is deleted; resolve a delete conflict or add a new memory instead."""


class NoSuchConflict(CrdtmemError):
    """resolve() named a field that is not in conflict."""


class PayloadError(CrdtmemError):
    """A sync payload was refused as a whole; the replica's state is unchanged."""


class MalformedPayload(PayloadError):
    """The payload is not a well-formed crdtmem payload (garbage, truncated, wrong field types)."""


class PayloadTooLarge(PayloadError):
    """The payload exceeds the replica's ``max_payload_bytes``, or a delta would take a memory
    past what the replica takes (:class:`crdtmem.limits.Limits`)."""


class UnsupportedVersion(PayloadError):
    """The payload was written in a format version this build does not understand."""


class ClockSkewError(PayloadError):
    """A remote timestamp lies further in the future than ``max_drift_ms`` allows."""


class EpochMismatch(PayloadError):
    """A rebase entry or a state of a rebased memory cannot be taken: it is of another lineage of
    epochs, or this document holds changes it lacks that cannot be carried over onto it (a foreign
    writer's structure), or carrying over was not asked for: refused, nothing applied
    (``docs/protocol.md`` §7.11)."""


class BehindHorizon(CrdtmemError):
    """A peer asked for log entries that compaction folded; it must catch up from states
    (``docs/protocol.md`` §7.10)."""


class StorageError(CrdtmemError):
    """The durable store failed; the operation was not acknowledged."""


class StoreLocked(StorageError):
    """Another process (or another store in this one) has the database file open; nothing was
    touched. One file belongs to one running replica."""


class StoreUnreadable(StorageError):
    """The database file does not open: not an SQLite file, or damaged where its schema lives."""


class DamagedMemory(StorageError):
    """A memory's stored rows do not read back (garbage in its record, its state or its deltas, or
    an unreadable page under them). ``memory_id`` names it."""

    def __init__(self, memory_id: str, reason: str):
        super().__init__(f"memory {memory_id!r} is damaged in storage: {reason}")
        self.memory_id = memory_id
        self.reason = reason


class MemoryQuarantined(StorageError):
    """The memory was found damaged in storage and is quarantined: every call on it fails with this
    (see docs/operating.md, "When storage is damaged"); every other memory is served as usual."""

    def __init__(self, memory_id: str, reason: str):
        super().__init__(
            f"memory {memory_id!r} is quarantined: its stored data does not read back ({reason}); "
            "the node serves every other memory (docs/operating.md: 'When storage is damaged')"
        )
        self.memory_id = memory_id
        self.reason = reason


class IndexUnavailable(StorageError):
    """The search index's engine failed: a Qdrant server unreachable or refusing, local index files
    that do not open. The store, and every write, are unaffected; the index catches up once it works."""


class ReplicaClosed(CrdtmemError):
    """The replica was closed; open a new one."""


class BusError(CrdtmemError):
    """The NATS bus refused what the node asked of it (a stream bound to other subjects, a
    consumer it cannot create); the message says what to change."""


class TooManyRequests(CrdtmemError):
    """A node asked the fleet for states or pulls faster than its rate; retry after ``retry_after``
    seconds."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after
