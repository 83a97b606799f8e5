"""Per-memory async locks: one writer per memory document at a time, from change to commit.

A change to a document and its commit happen under the memory's lock, so a second write never builds
on a first one that might still fail to commit (its delta would depend on one that was never logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold the locks of every key; taken in sorted order so two holders never deadlock."""
        ordered = sorted(set(keys))
        for key in ordered:
            self._users[key] = self._users.get(key, 0) + 1
            if key not in self._locks:  # not setdefault: it would make a Lock on every hold
                self._locks[key] = asyncio.Lock()
        taken: list[str] = []
        try:
            for key in ordered:
                await self._locks[key].acquire()
                taken.append(key)
            yield
        finally:
            for key in taken:
                self._locks[key].release()
            for key in ordered:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key], self._locks[key]
