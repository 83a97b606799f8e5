"""crdtmem: real-time memory sync for AI agents.

Every memory is a CRDT document (pycrdt); replicas exchange delta states and converge whatever order
changes arrive in; concurrent writes that no rule can merge are flagged as conflicts. Start with
:class:`Replica`.
"""

from .clock import Hlc, HybridLogicalClock
from .document.records import Conflict, ConflictValue, HistoryEntry, Memory, Scope, Source
from .engine.feed import FeedOverflow
from .engine.inbound import ApplyResult
from .engine.replica import Replica
from .engine.sync_api import SyncReplica
from .errors import (
    ClockSkewError,
    CrdtmemError,
    EpochMismatch,
    IndexUnavailable,
    InvalidChannel,
    InvalidInput,
    LimitExceeded,
    MalformedPayload,
    MemoryDeleted,
    MemoryExists,
    MemoryQuarantined,
    NoSuchConflict,
    NotFound,
    PayloadError,
    PayloadTooLarge,
    ReplicaClosed,
    StorageError,
    StoreLocked,
    UnknownKind,
    UnsupportedVersion,
    WrongKind,
)
from .events import MemoryEvent
from .ids import Channel
from .limits import Limits

__version__ = "0.1.0"

__all__ = [
    "ApplyResult",
    "Channel",
    "ClockSkewError",
    "EpochMismatch",
    "Conflict",
    "ConflictValue",
    "CrdtmemError",
    "FeedOverflow",
    "HistoryEntry",
    "Hlc",
    "HybridLogicalClock",
    "InvalidChannel",
    "InvalidInput",
    "LimitExceeded",
    "Limits",
    "MalformedPayload",
    "Memory",
    "MemoryDeleted",
    "MemoryExists",
    "MemoryEvent",
    "MemoryQuarantined",
    "NoSuchConflict",
    "NotFound",
    "PayloadError",
    "PayloadTooLarge",
    "Replica",
    "ReplicaClosed",
    "Scope",
    "Source",
    "IndexUnavailable",
    "StorageError",
    "StoreLocked",
    "SyncReplica",
    "UnknownKind",
    "UnsupportedVersion",
    "WrongKind",
    "__version__",
]
