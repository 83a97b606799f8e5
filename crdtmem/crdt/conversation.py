"""Conversation: an append-only merged log of messages.

Layout: a Yrs array of ``{"id", "role", "text", "hlc", "by"}`` maps-as-values.

Write rule: messages are only ever appended, never edited or removed.
Merge: Yrs array merge. Concurrent appends at the same end are ordered by Yrs' integration rule (by
client id), so every replica shows the same interleaving once it has the same updates.

Reads: :meth:`Conversation.messages` converts and checks the whole array. :class:`MessageLog` keeps
the checked messages of one document in step with the array's change deltas instead, so reading a
long conversation after an append costs the new messages, not all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
        items = self._array if isinstance(self._array, list) else self._array.to_py()
        return [m for m in map(_message, items or []) if m is not None]

    def append(self, role: str, text: str, dot: Dot) -> Message:
        message = Message(dot.key(), role, text, dot.hlc, dot.replica)
        self._array.append(message.to_dict())
        return message

    def latest_hlc(self) -> str:
        return max((m.hlc for m in self.messages()), default="")

    def clear(self) -> None:
        """Delete every observed message: only a new incarnation of a deleted memory does this
        (``docs/protocol.md`` §5.9); a concurrent append survives."""
        self._array.clear()


def _message(raw: object) -> Message | None:
    """``raw`` as a message, or None when it is not one (a foreign client may write anything)."""
    if not isinstance(raw, dict):
        return None
    values = [raw.get(k) for k in Message.__slots__]
    if not all(isinstance(v, str) for v in values) or not is_hlc_text(values[3]):
        return None
    return Message(*values)  # type: ignore[arg-type]  # every value is a str (checked above)


class MessageLog:
    """The messages of one conversation array, kept in step with it by its change deltas.

    Built from the array's items, then fed every change as Yrs reports it (``[{"retain": n},
    {"insert": [...]}, {"delete": n}]``, positions in the array) through :meth:`follow`. Items that
    are not messages keep their position (as None) so later positions still line up. Messages are
    held in their record form (:meth:`Message.to_dict`), converted and checked once.

    A change it cannot follow (``None``: e.g. a foreign client's nested shared type) puts it out of
    step (:attr:`in_step` False) until :meth:`reset` rebuilds it from the array.
    """

    __slots__ = ("_latest", "_slots", "in_step")

    def __init__(self, items: Iterable[object]):
        self._slots: list[dict[str, str] | None] = []
        self._latest: str | None = None
        self.in_step = True
        self.reset(items)

    def reset(self, items: Iterable[object]) -> None:
        self._slots = [_record(raw) for raw in items]
        self._latest = None
        self.in_step = True

    def follow(self, delta: Sequence[dict[str, Any]] | None) -> None:
        """Apply one transaction's change delta (it runs inside Yrs' commit, so it never raises)."""
        if not self.in_step:
            return
        if delta is None:
            self.in_step = False
            return
        try:
            self._apply(delta)
        except Exception:  # a delta that does not fit the model: rebuild on the next read
            self.in_step = False

    def _apply(self, delta: Sequence[dict[str, Any]]) -> None:
        at = 0
        for step in delta:
            if "retain" in step:
                at += step["retain"]
            elif "insert" in step:
                added = [_record(raw) for raw in step["insert"]]
                self._slots[at:at] = added
                at += len(added)
                if self._latest is not None:
                    self._latest = max([self._latest, *(m["hlc"] for m in added if m is not None)])
            elif "delete" in step:
                del self._slots[at : at + step["delete"]]
                self._latest = None

    def records(self) -> list[dict[str, str]]:
        """Every message in array order, as fresh ``{"id", "role", "text", "hlc", "by"}`` dicts (a
        caller may change them without touching the log)."""
        return [dict(m) for m in self._slots if m is not None]

    def latest_hlc(self) -> str:
        if self._latest is None:
            self._latest = max((m["hlc"] for m in self._slots if m is not None), default="")
        return self._latest


def _record(raw: object) -> dict[str, str] | None:
    message = _message(raw)
    return None if message is None else message.to_dict()
