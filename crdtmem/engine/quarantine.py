"""Memories set aside because their stored data does not read back.

A garbage record, a state, snapshot or delta that Yrs cannot decode, or an unreadable page under a
memory's rows: the store reports it (:class:`~crdtmem.errors.DamagedMemory`), and the memory is
*quarantined* from then on. The store keeps the quarantine (id, reason, time), so a restarted
replica sets the memory aside from the start instead of finding the damage again only when the
memory is touched; it lasts until an operator releases it (``crdtmem check --db FILE --release
ID``, on a stopped file, once the memory reads back). A quarantined
memory answers every call with :class:`~crdtmem.errors.MemoryQuarantined` (a StorageError: 503 over
HTTP), is left out of lists, and remote deltas for it wait (like those for a memory not seen yet)
instead of failing the payload that carries them; every other memory is served as usual.

Damage is found where a memory is read: its record on open (the memories warmed into the cache) and
in lists, its state when it is written, merged into or read back. The store's integrity check on
open covers the file's pages; ``crdtmem check`` reads every memory of a stopped file.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import CrdtmemError, DamagedMemory, MemoryQuarantined
from ..store.base import Quarantined, Store

log = logging.getLogger("crdtmem.storage")


class Quarantine:
    """The quarantined memories of one replica, with why and since when; kept in ``store`` (if
    given) from the moment each is found."""

    def __init__(self, store: Store | None = None, wall_ms: Callable[[], int] | None = None) -> None:
        self.memories: dict[str, str] = {}
        self.since: dict[str, int] = {}
        """Memory id: when it was quarantined (ms since the epoch)."""
        self._store = store
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))

    def load(self) -> int:
        """Set aside the memories the store kept as quarantined (logged once, as an error, if any);
        returns how many."""
        if self._store is None:
            return 0
        kept = self._store.quarantined()
        for entry in kept:
            self.memories[entry.memory_id] = entry.reason
            self.since[entry.memory_id] = entry.since_ms
        if kept:
            log.error(
                "%d memor%s quarantined since before this start (%s); 503 for %s until released "
                "(docs/operating.md, 'When storage is damaged')",
                len(kept),
                "y" if len(kept) == 1 else "ies",
                ", ".join(e.memory_id for e in kept[:10]) + (", ..." if len(kept) > 10 else ""),
                "it" if len(kept) == 1 else "them",
                extra={"event": "memories_quarantined", "memory_ids": [e.memory_id for e in kept]},
            )
        return len(kept)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self.memories

    def __len__(self) -> int:
        return len(self.memories)

    def add(self, damage: DamagedMemory) -> MemoryQuarantined:
        """Set the damaged memory aside (logged once, as an error); returns the error to raise."""
        if damage.memory_id not in self.memories:
            self.memories[damage.memory_id] = damage.reason
            self.since[damage.memory_id] = since = self._wall_ms()
            self._keep(Quarantined(damage.memory_id, damage.reason, since))
            log.error(
                "memory %s quarantined: %s; every other memory is served (docs/operating.md, "
                "'When storage is damaged')",
                damage.memory_id,
                damage.reason,
                extra={"event": "memory_quarantined", "memory_id": damage.memory_id, "reason": damage.reason},
            )
        return MemoryQuarantined(damage.memory_id, self.memories[damage.memory_id])

    def check(self, memory_id: str) -> None:
        """Raise MemoryQuarantined if ``memory_id`` is quarantined."""
        reason = self.memories.get(memory_id)
        if reason is not None:
            raise MemoryQuarantined(memory_id, reason)

    def _keep(self, entry: Quarantined) -> None:
        if self._store is None:
            return
        try:
            self._store.quarantine(entry)
        except CrdtmemError as exc:  # damage may reach the writes too: the quarantine still holds here
            log.warning(
                "memory %s is quarantined until the process stops (the store did not keep it: %s)",
                entry.memory_id,
                exc,
            )

    def listing(self) -> list[dict[str, Any]]:
        """``{"memory_id", "reason", "since"}`` (an ISO 8601 time) of each, by id."""
        return [
            {"memory_id": m, "reason": r, "since": _iso(self.since.get(m, 0))}
            for m, r in sorted(self.memories.items())
        ]


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="milliseconds")


def report_integrity(where: object, problems: list[str] | None) -> None:
    """Log what the store's integrity check on open found, if it found anything."""
    if problems and problems != ["ok"]:
        log.error(
            "integrity check of %s found %d problem(s): %s; the node serves what it can read and "
            "answers 503 for the rest (docs/operating.md, 'When storage is damaged')",
            where,
            len(problems),
            "; ".join(problems[:5]),
            extra={"event": "integrity_problems", "problems": problems},
        )
