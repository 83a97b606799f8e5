"""The plain, typed records the public API returns: memories, conflicts, history entries.

Records are frozen snapshots of materialized CRDT state. ``to_dict()`` gives the JSON form the REST
API and the MemoryEvent feed use; ``from_dict()`` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

from ..errors import UnknownKind
from ..ids import Channel

Kind = Literal["fact", "preference", "list", "counter", "conversation"]
KINDS: tuple[Kind, ...] = ("fact", "preference", "list", "counter", "conversation")


def check_kind(kind: object) -> Kind:
    """``kind`` if it is one of :data:`KINDS`; raises UnknownKind otherwise."""
    if kind not in KINDS:
        raise UnknownKind(f"unknown memory kind {kind!r:.40}; expected one of {', '.join(KINDS)}")
    return kind


REGISTER_KINDS: tuple[Kind, ...] = ("fact", "preference")


@dataclass(frozen=True, slots=True)
class Source:
    """Who wrote the memory first: the agent, its session and whose memory it is."""

    agent_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (also the document header's ``source``, docs/protocol.md §3.1)."""
        return {"agent_id": self.agent_id, "session_id": self.session_id, "user_id": self.user_id}


def _channels(user_id: Any, tenant_id: Any, topics: tuple[Any, ...], shared: Any) -> tuple[str, ...]:
    """:meth:`Scope.channels` of these parts; raises what the channels' ids raise."""
    found: list[Channel] = []
    if user_id:
        found.append(Channel.user(user_id))
    if tenant_id and (shared or not user_id):
        found.append(Channel.tenant(tenant_id))
    found.extend(Channel.topic(t) for t in topics)
    if not user_id and not tenant_id:
        found.append(Channel.system())
    return tuple(sorted({str(c) for c in found}))


_REMEMBERED_TOPICS = 16
"""Scopes with at most this many topics have their channels remembered (:func:`_remembered`)."""
_remembered = lru_cache(maxsize=4096, typed=True)(_channels)
"""The channels of the scopes seen last (a pure function of the parts, each compared with its
type: 1 and True are different keys). An error is not remembered: it is raised again each time."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Who may see the memory; decides its channels. Fixed when the memory is created."""

    user_id: str | None = None
    tenant_id: str | None = None
    topics: tuple[str, ...] = ()
    shared: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (also the document header's ``scope``, docs/protocol.md §3.1)."""
        return {
            "user_id": self.user_id,
            "tenant_id": self.tenant_id,
            "topics": list(self.topics),
            "shared": self.shared,
        }

    def channels(self) -> tuple[str, ...]:
        """The channels this scope publishes on, sorted.

        - ``user:{user_id}:memories`` when there is a user;
        - ``tenant:{tenant_id}:shared`` when there is a tenant and the memory is shared, or a tenant
          and no user (a tenant-wide memory);
        - ``topic:{topic}:updates`` for each topic;
        - ``system:global`` when there is neither user nor tenant.
        """
        if len(self.topics) <= _REMEMBERED_TOPICS:  # read back with every memory: remembered
            try:
                return _remembered(self.user_id, self.tenant_id, self.topics, self.shared)
            except TypeError:  # unhashable parts (a header as a foreign writer left it)
                pass
        return _channels(self.user_id, self.tenant_id, self.topics, self.shared)


@dataclass(frozen=True, slots=True)
class ConflictValue:
    """One concurrent value of a conflicted field, with the write that produced it."""

    value: Any
    hlc: str
    replica: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """A field with concurrent, differing values. ``values[0]`` is what reads currently return."""

    memory_id: str
    field: str
    values: tuple[ConflictValue, ...]
    user_id: str | None = None
    tenant_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Memory:
    """A materialized memory, as returned by ``get``, ``list`` and the event feed.

    Records are shared, not copied: the record cache hands the same one to every reader. Treat a
    record as read-only (copy ``content`` or ``metadata`` before changing them).
    """

    id: str
    kind: Kind
    content: Any
    metadata: dict[str, Any]
    tags: tuple[Any, ...]
    source: Source
    scope: Scope
    channels: tuple[str, ...]
    created_at: str
    updated_at: str
    deleted: bool
    conflicted: bool
    version: int = 0
    embedding: tuple[float, ...] | None = None
    embedding_model: str | None = None
    conflicts: tuple[str, ...] = field(default=())

    @property
    def type(self) -> Kind:
        """The seed schema calls the kind ``type``."""
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (written out by hand: ``dataclasses.asdict`` deep-copies recursively and is
        the slowest step of a write)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "content": self.content,
            "metadata": self.metadata,
            "tags": list(self.tags),
            "source": self.source.to_dict(),
            "scope": self.scope.to_dict(),
            "channels": list(self.channels),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deleted": self.deleted,
            "conflicted": self.conflicted,
            "version": self.version,
            "embedding": list(self.embedding) if self.embedding is not None else None,
            "embedding_model": self.embedding_model,
            "conflicts": list(self.conflicts),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Memory:
        scope = dict(data["scope"])
        scope["topics"] = tuple(scope.get("topics") or ())
        embedding = data.get("embedding")
        return cls(
            id=data["id"],
            kind=data["kind"],
            content=data["content"],
            metadata=dict(data["metadata"]),
            tags=tuple(data["tags"]),
            source=Source(**data["source"]),
            scope=Scope(**scope),
            channels=tuple(data["channels"]),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            deleted=bool(data["deleted"]),
            conflicted=bool(data["conflicted"]),
            version=int(data.get("version", 0)),
            embedding=tuple(embedding) if embedding is not None else None,
            embedding_model=data.get("embedding_model"),
            conflicts=tuple(data.get("conflicts") or ()),
        )

    def with_version(self, version: int) -> Memory:
        from dataclasses import replace

        return replace(self, version=version)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change to a memory, in the order this replica applied it, with the state after it."""

    origin: str
    hlc: str
    content: Any
    deleted: bool
    conflicted: bool
    metadata: dict[str, Any]
    tags: tuple[Any, ...]
