"""Durable storage: the port (:mod:`.base`), SQLite (:mod:`.sqlite`), an in-memory double (:mod:`.memory`)."""

from .base import Commit, CommitResult, DeltaRecord, DocWrite, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["Commit", "CommitResult", "DeltaRecord", "DocWrite", "MemoryStore", "SQLiteStore", "Store"]
