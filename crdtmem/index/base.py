"""The index ports: an embedder turns text into vectors, a vector engine stores and searches points.

Both are small protocols so the indexer (``indexer.py``) never depends on a particular model or
engine. Every engine adapter passes ``tests/conformance/engine_suite.py``; every embedder passes
``tests/conformance/embedder_suite.py``.

A *point* is one memory: its id, its vector, and a payload the engine can filter on::

    {"memory_id": str, "version": int, "kind": str, "user_id": str | None, "tenant_id": str | None,
     "topics": [str], "channels": [str], "tags": [str], "deleted": bool, "conflicted": bool,
     "model": str, "content": str}

``version`` is the replica-local version of the memory the point was built from, or, in a collection
shared by several nodes, its revision (``document/revision.py``), which every node computes alike;
an upsert never replaces a point with a higher version (see :meth:`VectorEngine.upsert`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..document.query import Where
from ..document.records import check_kind
from ..errors import InvalidInput
from ..ids import check_id, parse_channels

LEXICAL_PREFIX = "crdtmem/hashing"
"""Models named so score by shared words and pieces of words, not by meaning."""


@runtime_checkable
class Embedder(Protocol):
    """Text -> vector. ``model`` names the model (recorded with every vector); ``dim`` its size."""

    model: str
    dim: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector of length ``dim`` per text, in order."""
        ...


@dataclass(frozen=True, slots=True)
class Point:
    id: str
    vector: list[float]
    payload: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.payload["version"])


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Conditions every hit must meet (all given ones, ANDed). ``None`` means no condition."""

    user_id: str | None = None
    tenant_id: str | None = None
    kind: str | None = None
    topic: str | None = None
    tags: tuple[str, ...] = ()
    """Every one of these tags."""
    channels: tuple[str, ...] | None = None
    """At least one of these channels (the caller's readable channels); None: no restriction."""
    include_deleted: bool = False
    include_conflicted: bool = True
    ids: tuple[str, ...] | None = None
    """One of these memory ids (the ids a record filter selected in the store); None: any."""

    @classmethod
    def build(
        cls,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: str | None = None,
        topic: str | None = None,
        tags: Sequence[str] = (),
        channels: Sequence[str] | None = None,
        include_conflicted: bool = True,
    ) -> SearchFilter:
        """A validated filter from search arguments."""
        if isinstance(tags, (str, bytes)):
            raise InvalidInput("tags must be a list, not a single string")
        return cls(
            user_id=check_id(user_id, "user_id") if user_id is not None else None,
            tenant_id=check_id(tenant_id, "tenant_id") if tenant_id is not None else None,
            kind=check_kind(kind) if kind is not None else None,
            topic=check_id(topic, "topic") if topic is not None else None,
            tags=tuple(str(t) for t in tags),
            channels=parse_channels(channels) if channels is not None else None,
            include_conflicted=include_conflicted,
        )


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class VectorEngine(Protocol):
    """Stores points in one collection and searches them. Synchronous; the indexer calls it from a
    worker thread. Point ids are memory ids (any string; adapters map them to what the engine
    accepts, e.g. a UUID derived from the string)."""

    name: str

    def ensure_collection(self, dim: int) -> None:
        """Create the collection (cosine distance) and payload indexes if missing; raise
        InvalidInput if it exists with another dimension."""
        ...

    def upsert(self, points: Sequence[Point]) -> int:
        """Insert or replace points, except where the stored point has a higher ``version``
        (a stale upsert never overwrites a newer one). Returns how many were written."""
        ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def versions(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        """``{id: version}`` of stored points (all of them when ``ids`` is None)."""
        ...

    def payloads(self, ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """``{id: payload}`` of stored points (all of them when ``ids`` is None), as stored: what
        :meth:`Indexer.verify` compares with the store, field by field."""
        ...

    def search(self, vector: Sequence[float], flt: SearchFilter, limit: int) -> list[Hit]:
        """Nearest points by cosine similarity that pass ``flt``, best first."""
        ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class RecordSource(Protocol):
    """What the indexer follows: the store's materialized records, in version order, and its marks.

    A :class:`~crdtmem.store.base.Store` satisfies it; the indexer never sees the replica itself.
    """

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def load_record(self, doc_id: str) -> dict[str, Any] | None: ...

    def load_state(self, doc_id: str) -> bytes | None: ...

    def query_records(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        since_version: int | None = None,
        ascending: bool = False,
        where: Where | None = None,
        max_chars: int | None = None,
    ) -> list[dict[str, Any]]: ...

    def erased_since(self, version: int, limit: int | None = None) -> list[tuple[str, int]]:
        """``(memory id, version)`` of the memories forgotten after ``version``, oldest first."""
        ...

    def query_ids(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        where: Where | None = None,
        limit: int | None = None,
    ) -> list[str]: ...


CommitListener = Callable[[Any], None]
Subscribe = Callable[[CommitListener], Callable[[], None]]
"""Registers a listener called after every commit; returns the function that unregisters it."""

Settle = Callable[[], Awaitable[None]]
"""Brings the source's records up to date with the deltas it has committed (an applied batch's
memories are read back after their commit): until then their records, and so the index, lag."""
