"""MemoryEvent: the change feed, in the seed design's schema.

One event per change this replica commits, local or remote: ``create`` when a memory first appears
(or its id, deleted, takes a new incarnation),
``conflict`` when a change leaves it with concurrent differing values, ``resolve`` when a change
clears its last conflict, ``delete`` when it becomes deleted, ``update`` otherwise; and
``forgotten`` when the memory is erased here (``Replica.forget``, here or on a replica whose erase
marker arrived): that event carries the memory's id and channels and nothing of its content
(``memory`` and ``source`` are None). ``event_id`` is ``"{replica_id}:{version}"``: unique on this
replica, and the same change never yields two events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .document.records import Memory, Source

EventType = Literal["create", "update", "delete", "conflict", "resolve", "forgotten"]


def classify(before: Memory | None, after: Memory) -> EventType:
    """The event type of a change from ``before`` (None: not known here yet) to ``after``."""
    if before is None:
        return "create"
    if after.conflicted and set(after.conflicts) - set(before.conflicts):
        return "conflict"
    if before.conflicted and not after.conflicted:
        return "resolve"
    if after.deleted and not before.deleted:
        return "delete"
    if before.deleted and not after.deleted:
        return "create"  # a new incarnation of a deleted memory's id
    return "update"


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    event_id: str
    event_type: EventType
    timestamp: str
    memory: Memory | None
    """The memory after the change; None only for ``forgotten`` (the memory is gone)."""
    source: Source | None
    """The memory's source; None only for ``forgotten``."""
    channels: tuple[str, ...]
    origin: str
    """The replica whose write caused the change (for ``forgotten``: whose erase marker)."""
    content_from: int | None = None
    """For a conversation whose change only added messages at the end: how many messages it had
    before (``memory.content[content_from:]`` are the new ones). None otherwise."""
    memory_id: str = ""
    """The memory's id, on every event (``memory.id`` where there is a memory)."""

    def __post_init__(self) -> None:
        if not self.memory_id and self.memory is not None:
            object.__setattr__(self, "memory_id", self.memory.id)  # frozen: set once, here

    @classmethod
    def forgotten(
        cls, event_id: str, timestamp: str, memory_id: str, channels: tuple[str, ...], origin: str
    ) -> MemoryEvent:
        """The event of a memory erased here: its id and channels, nothing of its content."""
        return cls(event_id, "forgotten", timestamp, None, None, channels, origin, memory_id=memory_id)

    @property
    def version(self) -> int:
        """The local version of the change (the number in ``event_id``)."""
        if self.memory is not None:
            return self.memory.version
        return int(self.event_id.rpartition(":")[2])

    def to_dict(self) -> dict[str, Any]:
        """The seed schema as JSON: ``memory.type`` is the kind; extra fields are additive
        (``memory_id`` on every event). A ``forgotten`` event has no ``memory`` and no ``source``.

        An event for messages added at the end of a conversation carries only those messages as
        ``memory.content``, with ``content_from``, the number of messages before them: a consumer
        appends them to what it holds (a long conversation is not sent whole at every turn). Without
        ``content_from``, ``memory.content`` is the whole content.
        """
        data: dict[str, Any] = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "memory_id": self.memory_id,
        }
        if self.memory is not None:
            memory = self.memory.to_dict()
            memory["type"] = self.memory.kind
            data["memory"] = memory
            data["source"] = memory["source"]
            if self.content_from is not None:
                memory["content"] = self.memory.content[self.content_from :]
                data["content_from"] = self.content_from
        data["channels"] = list(self.channels)
        data["origin"] = self.origin
        return data
