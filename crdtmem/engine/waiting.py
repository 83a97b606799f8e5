"""The deltas waiting for their causal dependencies, each with the rights of whoever delivered it.

A waiting delta is authorized, once it can be applied, against its *deliverer's* rights, never
against those of the sender whose payload completes it (``DESIGN.md``, trust model). So each keeps
its sender, durably (the store's ``pending`` table holds the sender's rights as JSON).

Waiting costs memory and disk before anything is checked, so the set is bounded:

- per sender and per origin (``WaitingLimits``), in deltas and in bytes (a waiting delta is held in
  memory too, and one delta may be megabytes): past a bound, the oldest waiting deltas of that
  sender or origin are evicted (right after the commit that parked the newcomers);
- by age: a delta that waited longer than ``max_age_s`` is dropped.

An evicted or expired delta was never logged, so no version vector claims it: its sender sends it
again with the next catch-up (every pull starts from the receiver's vectors). The bounds hold across
restarts: what the store kept is loaded within them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..access import OPEN, Principal
from ..errors import InvalidInput
from ..store.base import DeltaRecord, PendingDelta

Resolver = Callable[[str], Principal | None]
"""The current rights of a principal, by name (None: it has none any more)."""


@dataclass(frozen=True, slots=True)
class WaitingLimits:
    per_sender: int = 10_000
    """Deltas one sender may have waiting."""
    per_origin: int = 10_000
    """Deltas of one origin that may be waiting, whoever delivered them."""
    max_age_s: float = 3_600.0
    """Seconds a delta may wait before it is dropped."""
    per_sender_bytes: int = 64 * 1024 * 1024
    """Bytes of deltas (their updates and dependencies) one sender may have waiting."""
    per_origin_bytes: int = 64 * 1024 * 1024
    """Bytes of deltas of one origin that may be waiting, whoever delivered them."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """A delta with who delivered it (whose rights it is checked against) and when (ms)."""

    delta: DeltaRecord
    sender: Principal
    received_ms: int

    @property
    def uid(self) -> str:
        return self.delta.uid

    @property
    def size(self) -> int:
        """What it holds in bytes (its update and dependencies), as the bytes bounds count it."""
        return len(self.delta.update) + len(self.delta.deps)

    def to_store(self) -> PendingDelta:
        return PendingDelta(self.delta, json.dumps(self.sender.to_json()), self.received_ms)


def to_store(items: Iterable[Delivered]) -> list[PendingDelta]:
    """:meth:`Delivered.to_store` for many, each sender's rights encoded once (a push parks
    thousands of deltas of one sender: encoding its rights for each was most of parking them)."""
    rights: dict[int, str] = {}
    out = []
    for item in items:
        encoded = rights.get(id(item.sender))
        if encoded is None:
            encoded = rights[id(item.sender)] = json.dumps(item.sender.to_json())
        out.append(PendingDelta(item.delta, encoded, item.received_ms))
    return out


class WaitingSet:
    """In arrival order (the oldest first), indexed by sender and by origin."""

    def __init__(self, limits: WaitingLimits | None = None):
        self.limits = limits or WaitingLimits()
        self._items: dict[str, Delivered] = {}
        self._senders: dict[str, dict[str, None]] = {}  # insertion-ordered: the oldest first
        self._origins: dict[str, dict[str, None]] = {}
        self._bytes: dict[tuple[int, str], int] = {}  # (0: sender, 1: origin; name) -> bytes waiting
        self.evicted = 0
        """Deltas evicted over a bound or dropped for their age, since start."""

    def __contains__(self, uid: object) -> bool:
        return uid in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Delivered]:
        return iter(list(self._items.values()))

    def get(self, uid: str) -> Delivered | None:
        return self._items.get(uid)

    def of_memories(self, doc_ids: set[str]) -> list[Delivered]:
        return [w for w in self._items.values() if w.delta.doc_id in doc_ids]

    def count(self, sender: str) -> int:
        return len(self._senders.get(sender, ()))

    def by_sender(self) -> dict[str, int]:
        return {name: len(uids) for name, uids in self._senders.items()}

    def expired(self, now_ms: int) -> list[str]:
        """Uids that waited longer than the limit (the oldest come first, so this stops early)."""
        horizon = now_ms - int(self.limits.max_age_s * 1000)
        old = []
        for waiting in self._items.values():
            if waiting.received_ms > horizon:
                break
            old.append(waiting.uid)
        return old

    def bytes_of(self, sender: str) -> int:
        """Bytes the sender has waiting."""
        return self._bytes.get((0, sender), 0)

    def total_bytes(self) -> int:
        """Bytes waiting, whoever sent them."""
        return sum(size for (kind, _), size in self._bytes.items() if kind == 0)

    def over_bounds(self, senders: Iterable[str], origins: Iterable[str]) -> list[str]:
        """The oldest uids to evict so that these senders and origins are within their bounds (in
        deltas and in bytes)."""
        victims: dict[str, None] = {}
        for kind, index, names, bound, byte_bound in (
            (0, self._senders, senders, self.limits.per_sender, self.limits.per_sender_bytes),
            (1, self._origins, origins, self.limits.per_origin, self.limits.per_origin_bytes),
        ):
            for name in set(names):
                uids = [u for u in index.get(name, {}) if u not in victims]
                count, size = len(uids), self._bytes.get((kind, name), 0)
                size -= sum(self._items[u].size for u in index.get(name, {}) if u in victims)
                for uid in uids:  # the oldest first
                    if count <= bound and size <= byte_bound:
                        break
                    victims[uid] = None
                    count -= 1
                    size -= self._items[uid].size
        return list(victims)

    def settle(self, added: Iterable[Delivered], dropped: Iterable[str], *, evicted: int = 0) -> None:
        """The set after a commit that stored ``added`` and removed ``dropped``."""
        for uid in dropped:
            waiting = self._items.pop(uid, None)
            if waiting is not None:
                for kind, index, key in (
                    (0, self._senders, waiting.sender.name),
                    (1, self._origins, waiting.delta.origin),
                ):
                    uids = index[key]
                    del uids[uid]
                    if uids:
                        self._bytes[kind, key] -= waiting.size
                    else:
                        del index[key]
                        self._bytes.pop((kind, key), None)
        for waiting in added:
            if waiting.uid not in self._items:
                self._items[waiting.uid] = waiting
                size = waiting.size
                for kind, index, key in (
                    (0, self._senders, waiting.sender.name),
                    (1, self._origins, waiting.delta.origin),
                ):
                    index.setdefault(key, {})[waiting.uid] = None
                    self._bytes[kind, key] = self._bytes.get((kind, key), 0) + size
        self.evicted += evicted

    def load(self, stored: list[PendingDelta], resolve: Resolver | None, now_ms: int) -> list[str]:
        """Take up what the store kept (oldest first), within the bounds and the age limit, each
        with its sender's current rights where ``resolve`` knows them. Returns the uids to drop."""
        dropped: list[str] = []
        horizon = now_ms - int(self.limits.max_age_s * 1000)
        kept: list[Delivered] = []
        for row in stored:
            sender = _sender(row.sender, resolve)
            if sender is None or row.received_ms <= horizon:
                dropped.append(row.uid)
            else:
                kept.append(Delivered(row.delta, sender, row.received_ms))
        self.settle(kept, [])
        over = self.over_bounds(self._senders, self._origins)
        self.settle([], over)
        dropped += over
        self.evicted += len(dropped)
        return dropped


_OPEN_BEFORE_STATES = {k: v for k, v in OPEN.to_json().items() if k != "states"}
"""How senders stored before the ``states`` right named the open principal."""


def _sender(stored: str, resolve: Resolver | None) -> Principal | None:
    """The rights a waiting delta is checked against: its sender's current ones where known."""
    try:
        entry = json.loads(stored)
        principal = (
            OPEN
            if entry in (OPEN.to_json(), _OPEN_BEFORE_STATES)
            else Principal.from_json(entry, "a waiting delta's sender")
        )
    except (ValueError, TypeError, InvalidInput):
        return None
    if resolve is None or principal == OPEN:
        return principal
    return resolve(principal.name)
