"""Conversation: an append-only merged log of messages.

Layout: a Yrs array of ``{"id", "role", "text", "hlc", "by"}`` maps-as-values.

Write rule: messages are only ever appended, never edited or removed.
Merge: Yrs array merge. Concurrent appends at the same end are ordered by Yrs' integration rule (by
client id), so every replica shows the same interleaving once it has the same updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dots import Dot, is_hlc_text


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    role: str
    text: str
    hlc: str
    by: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "role": self.role, "text": self.text, "hlc": self.hlc, "by": self.by}


class Conversation:
    def __init__(self, yarray: Any):
        self._array = yarray

    def messages(self) -> list[Message]:
        found = []
        items = self._array if isinstance(self._array, list) else self._array.to_py()
        for raw in items or []:
            if (
                isinstance(raw, dict)
                and all(isinstance(raw.get(k), str) for k in Message.__slots__)
                and is_hlc_text(raw["hlc"])
            ):
                found.append(Message(**{k: raw[k] for k in Message.__slots__}))
        return found

    def append(self, role: str, text: str, dot: Dot) -> Message:
        message = Message(dot.key(), role, text, dot.hlc, dot.replica)
        self._array.append(message.to_dict())
        return message

    def latest_hlc(self) -> str:
        return max((m.hlc for m in self.messages()), default="")
