"""Per-memory async locks: one writer per memory document at a time, from change to commit.

A change to a document and its commit happen under the memory's lock, so a second write never builds
on a first one that might still fail to commit (its delta would depend on one that was never logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def hold(self, keys: Iterable[str]) -> _Held:
        """Hold the locks of every key (``async with``); taken in sorted order so two holders never
        deadlock. A lock exists while someone holds or waits for it, and is dropped after."""
        return _Held(self, sorted(set(keys)))

    def __len__(self) -> int:
        """How many keys have a lock now (held or waited for)."""
        return len(self._locks)

    def _enter(self, ordered: list[str]) -> None:
        users, locks = self._users, self._locks
        for key in ordered:
            users[key] = users.get(key, 0) + 1
            if key not in locks:  # not setdefault: it would make a Lock on every hold
                locks[key] = asyncio.Lock()

    def _leave(self, ordered: list[str], taken: int) -> None:
        users, locks = self._users, self._locks
        for key in ordered[:taken]:
            locks[key].release()
        for key in ordered:
            users[key] -= 1
            if not users[key]:
                del users[key], locks[key]


class _Held:
    """One ``hold``: a class rather than a generator-based context manager, which costs a generator
    and its frames on every write and every remote apply."""

    __slots__ = ("_keys", "_owner", "_taken")

    def __init__(self, owner: KeyedLocks, keys: list[str]):
        self._owner = owner
        self._keys = keys
        self._taken = 0

    async def __aenter__(self) -> None:
        owner, keys = self._owner, self._keys
        owner._enter(keys)
        try:
            for key in keys:
                await owner._locks[key].acquire()
                self._taken += 1
        except BaseException:  # cancelled while waiting: what was taken is given back
            owner._leave(keys, self._taken)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner._leave(self._keys, self._taken)
