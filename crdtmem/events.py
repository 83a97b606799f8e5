"""MemoryEvent: the change feed, in the seed design's schema.

One event per change this replica commits, local or remote: ``create`` when a memory first appears
(or its id, deleted, takes a new incarnation),
``conflict`` when a change leaves it with concurrent differing values, ``resolve`` when a change
clears its last conflict, ``delete`` when it becomes deleted, ``update`` otherwise. ``event_id`` is
``"{replica_id}:{version}"``: unique on this replica, and the same change never yields two events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .document.records import Memory, Source

EventType = Literal["create", "update", "delete", "conflict", "resolve"]


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
    memory: Memory
    source: Source
    channels: tuple[str, ...]
    origin: str
    """The replica whose write caused the change."""
    content_from: int | None = None
    """For a conversation whose change only added messages at the end: how many messages it had
    before (``memory.content[content_from:]`` are the new ones). None otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """The seed schema as JSON: ``memory.type`` is the kind; extra fields are additive.

        An event for messages added at the end of a conversation carries only those messages as
        ``memory.content``, with ``content_from``, the number of messages before them: a consumer
        appends them to what it holds (a long conversation is not sent whole at every turn). Without
        ``content_from``, ``memory.content`` is the whole content.
        """
        memory = self.memory.to_dict()
        memory["type"] = self.memory.kind
        data = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "memory": memory,
            "source": memory["source"],
            "channels": list(self.channels),
            "origin": self.origin,
        }
        if self.content_from is not None:
            memory["content"] = self.memory.content[self.content_from :]
            data["content_from"] = self.content_from
        return data
