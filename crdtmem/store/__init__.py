"""Durable storage: the port (:mod:`.base`), SQLite (:mod:`.sqlite`), an in-memory double (:mod:`.memory`)."""

from .base import Commit, CommitResult, DeltaRecord, DocWrite, Snapshot, Store, StoredDoc
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "Commit",
    "CommitResult",
    "DeltaRecord",
    "DocWrite",
    "MemoryStore",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "StoredDoc",
]
