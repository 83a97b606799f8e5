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


class FrozenMessage(dict[str, str]):
    """A message in record form (``{"id", "role", "text", "hlc", "by"}``) that refuses changes.

    Records of one conversation share their message objects (a record after an append holds the
    previous record's messages plus the new ones), so a caller's edit must not be able to reach
    another record: it raises TypeError instead. ``dict(message)`` gives an editable copy.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a message of a memory record is read-only; copy it with dict(message)")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type[FrozenMessage], tuple[dict[str, str]]]:
        return FrozenMessage, (dict(self),)


class MessageList(list[FrozenMessage]):
    """A conversation's messages as a record holds them: read-only (records share them, see
    :class:`FrozenMessage`). ``list(messages)`` gives an editable copy."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("the messages of a memory record are read-only; copy them with list(messages)")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type[MessageList], tuple[list[FrozenMessage]]]:
        return MessageList, (list(self),)

    @staticmethod
    def of(messages: Iterable[FrozenMessage]) -> MessageList:
        made = MessageList()
        list.extend(made, messages)
        return made

    def plus(self, more: Iterable[FrozenMessage]) -> MessageList:
        """A new list: these messages, then ``more`` (references copied, nothing converted)."""
        made = MessageList()
        # list.extend walks a list subclass with the list's own iterator, in C; a slice assignment
        # (list.__setitem__) copies a subclass into a new list first: twice the time at 10,000
        list.extend(made, self)
        list.extend(made, more)
        return made


def frozen(message: Message) -> FrozenMessage:
    return FrozenMessage(message.to_dict())


class MessageLog:
    """The messages of one conversation array, kept in step with it by its change deltas.

    Built from the array's items, then fed every change as Yrs reports it (``[{"retain": n},
    {"insert": [...]}, {"delete": n}]``, positions in the array) through :meth:`follow`. Items that
    are not messages keep their position (as None) so later positions still line up. Messages are
    held in their record form (:class:`FrozenMessage`), converted and checked once.

    :meth:`content` hands out the messages as a :class:`MessageList`, the same object until the next
    change; a change never edits a list handed out, it makes a new one (an append: the old messages
    plus the new, which copies references only). :meth:`added_since` tells, for a list handed out
    earlier, which messages came after it when every change since only added messages at the end:
    that is what an event for an append carries.

    A change it cannot follow (``None``: e.g. a foreign client's nested shared type) puts it out of
    step (:attr:`in_step` False) until :meth:`reset` rebuilds it from the array.
    """

    __slots__ = ("_content", "_epoch", "_handed", "_latest", "_slots", "in_step")

    _KEEP = 4
    """Lists handed out that :meth:`added_since` still recognises."""

    def __init__(self, items: Iterable[object]):
        self._slots: list[FrozenMessage | None] = []
        self._latest: str | None = None
        self._content: MessageList | None = None
        self._epoch = 0
        self._handed: dict[int, tuple[MessageList, int, int]] = {}
        self.in_step = True
        self.reset(items)

    def reset(self, items: Iterable[object]) -> None:
        self._slots = [_record(raw) for raw in items]
        self._latest = None
        self._content = None
        self._epoch += 1
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
        appended: list[FrozenMessage] = []
        only_appends = True
        for step in delta:
            if "retain" in step:
                at += step["retain"]
            elif "insert" in step:
                added = [_record(raw) for raw in step["insert"]]
                only_appends = only_appends and at == len(self._slots)
                self._slots[at:at] = added
                at += len(added)
                appended += [m for m in added if m is not None]
                if self._latest is not None:
                    self._latest = max([self._latest, *(m["hlc"] for m in appended)])
            elif "delete" in step:
                del self._slots[at : at + step["delete"]]
                self._latest = None
                only_appends = False
        if only_appends and self._content is not None:
            self._content = self._content.plus(appended) if appended else self._content
        else:
            self._content = None
            self._epoch += 1

    def content(self) -> MessageList:
        """Every message in array order (read-only; the same list until the next change)."""
        content = self._content
        if content is None:
            content = self._content = MessageList.of(m for m in self._slots if m is not None)
        if id(content) not in self._handed:
            self._handed[id(content)] = (content, self._epoch, len(content))
            while len(self._handed) > self._KEEP:
                del self._handed[next(iter(self._handed))]
        return content

    def added_since(self, earlier: object) -> int | None:
        """If ``earlier`` is a list :meth:`content` handed out and every change since only added
        messages at the end: how many messages it held (the new ones follow). Else None."""
        handed = self._handed.get(id(earlier))
        if handed is None or handed[0] is not earlier or handed[1] != self._epoch or not self.in_step:
            return None
        return handed[2]

    def latest_hlc(self) -> str:
        if self._latest is None:
            self._latest = max((m["hlc"] for m in self._slots if m is not None), default="")
        return self._latest


def _record(raw: object) -> FrozenMessage | None:
    message = _message(raw)
    return None if message is None else frozen(message)
