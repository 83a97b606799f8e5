"""Memories set aside because their stored data does not read back.

A garbage record, a state, snapshot or delta that Yrs cannot decode, or an unreadable page under a
memory's rows: the store reports it (:class:`~crdtmem.errors.DamagedMemory`), and the memory is
*quarantined* from then on, until the process stops. A quarantined
memory answers every call with :class:`~crdtmem.errors.MemoryQuarantined` (a StorageError: 503 over
HTTP), is left out of lists, and remote deltas for it wait (like those for a memory not seen yet)
instead of failing the payload that carries them; every other memory is served as usual.

Damage is found where a memory is read: its record on open (the memories warmed into the cache) and
in lists, its state when it is written, merged into or read back. The store's integrity check on
open covers the file's pages; ``crdtmem check`` reads every memory of a stopped file.
"""

from __future__ import annotations

import logging

from ..errors import DamagedMemory, MemoryQuarantined

log = logging.getLogger("crdtmem.storage")


class Quarantine:
    """The quarantined memories of one replica, with why."""

    def __init__(self) -> None:
        self.memories: dict[str, str] = {}

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self.memories

    def __len__(self) -> int:
        return len(self.memories)

    def add(self, damage: DamagedMemory) -> MemoryQuarantined:
        """Set the damaged memory aside (logged once, as an error); returns the error to raise."""
        if damage.memory_id not in self.memories:
            self.memories[damage.memory_id] = damage.reason
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

    def listing(self) -> list[dict[str, str]]:
        return [{"memory_id": m, "reason": r} for m, r in sorted(self.memories.items())]


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
