"""The channel rules every remote delta must pass before its unit commits, each delta against the
rights of its own sender.

A delta names the channels it is logged on (its ``seqs``); a sender cannot be trusted to name them
right. So, with each memory's channels read from its merged document:

- every channel a delta is logged on must be one of its memory's channels;
- a memory's channels must not change (its scope is fixed at creation);
- the sender that delivered the delta must be allowed to write *every* channel of the memory (the
  REST rule). A delta that waited for its dependencies is checked against the rights of whoever
  delivered *it*, never against those of the sender whose payload completed it.

A delta about to wait is checked too, when its memory is known here (else when it is applied).

Failures raise :class:`~crdtmem.errors.MalformedPayload` (the delta is wrong in itself) or
:class:`~crdtmem.access.AccessDenied` (its sender may not write that memory). Neither names the
channels of a memory the sender may not read: an error about what a principal cannot see looks like
one about a memory that is not there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..access import AccessDenied, may_read_memory, may_write_memory
from ..document.records import Memory
from ..errors import MalformedPayload
from .waiting import Delivered

ChannelsOf = Callable[[str], tuple[str, ...] | None]
"""A memory's channels as stored here, or None if it is not."""


def check_units(
    logged: Iterable[Delivered],
    parked: Iterable[Delivered],
    changed: dict[str, tuple[str, ...]],
    before: dict[str, Memory | None],
    stored_channels: ChannelsOf,
) -> None:
    """Raise if any delta of a unit breaks a channel rule (module docstring). ``changed``: the
    channels of each memory the unit changes, read from its merged document."""
    channels: dict[str, tuple[str, ...] | None] = dict(changed)
    for doc_id, memory in before.items():
        now = channels.get(doc_id)
        if memory is not None and now is not None and set(now) != set(memory.channels):
            raise MalformedPayload(
                f"a delta moves memory {doc_id} from {list(memory.channels)} to {list(now)}; "
                "a memory's scope is fixed when it is created"
            )

    def channels_of(doc_id: str) -> tuple[str, ...] | None:
        if doc_id not in channels:
            channels[doc_id] = stored_channels(doc_id)
        return channels[doc_id]

    rights: Rights = {}
    for item in logged:
        _check(item, channels_of(item.delta.doc_id) or (), rights)
    for item in parked:
        on = channels_of(item.delta.doc_id)
        if on is not None:
            _check(item, on, rights)


Rights = dict[tuple[int, tuple[str, ...]], tuple[bool, bool]]
"""``(id(sender), channels) -> (may read or write, may write)``, worked out once per sender and
channel set within one :func:`check_units` (a principal is immutable, and lives as long as it)."""


def _check(item: Delivered, channels: tuple[str, ...], rights: Rights) -> None:
    delta, sender = item.delta, item.sender
    key = (id(sender), channels)
    known = rights.get(key)
    if known is None:
        writable = may_write_memory(sender, channels)
        known = rights[key] = (writable or may_read_memory(sender, channels), writable)
    visible, writable = known
    if all(channel in channels for channel in delta.seqs) and writable:
        return  # the common case: nothing stray, and the sender may write the memory
    stray = sorted(set(delta.seqs) - set(channels))
    if stray:
        where = f"is on {', '.join(channels) or 'no channel here'}" if visible else "is not on them"
        raise MalformedPayload(
            f"delta {delta.uid} is logged on {', '.join(stray)}, but memory {delta.doc_id} {where}"
        )
    if not writable:
        if visible:
            raise AccessDenied(
                f"{sender.name} may not write memory {delta.doc_id}: it is on {', '.join(channels)} "
                "(writing needs every one)"
            )
        raise AccessDenied(f"{sender.name} may not write memory {delta.doc_id}, or there is no such memory")


def unseen(item: Delivered, stored_channels: ChannelsOf) -> bool:
    """Whether ``item`` is for a memory stored here that its sender may not read: then it waits
    like a delta for a memory not stored here, and is decided once it is applied."""
    on = stored_channels(item.delta.doc_id)
    return on is not None and not may_read_memory(item.sender, on)
