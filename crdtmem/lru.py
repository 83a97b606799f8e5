"""A bounded least-recently-used map, shared by the engine's caches and the indexer's vector cache.

Bounded by entry count and, optionally, by bytes: each entry is charged an approximate size (given
with :meth:`LRU.put` or measured by the map's ``size`` function) and the least recently used entries
are evicted while the total is over ``max_bytes``. An entry larger than the whole budget is not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """A bounded least-recently-used map (by count, and by approximate bytes if ``max_bytes``)."""

    def __init__(
        self, capacity: int, *, max_bytes: int | None = None, size: Callable[[V], int] | None = None
    ):
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.capacity = capacity
        self.max_bytes = max_bytes
        """The budget of the entries' sizes together (None: count only)."""
        self.bytes = 0
        """The entries' sizes together, as charged when they were put (0 without ``max_bytes``)."""
        self._measure = size
        self._items: OrderedDict[str, V] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.hits = self.misses = 0
        self.evicted = 0
        """Entries evicted to stay within the bounds, and entries too large to keep."""

    def get(self, key: str) -> V | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V, size: int | None = None) -> None:
        """Keep ``value`` as the most recently used; ``size``: its approximate bytes (measured with
        the map's ``size`` function when not given; ignored without ``max_bytes``)."""
        if self.capacity == 0:
            return
        items = self._items
        if self.max_bytes is not None:
            if size is None:
                size = self._measure(value) if self._measure is not None else 0
            if size > self.max_bytes:  # kept, it would evict everything and still be over
                self.discard(key)
                self.evicted += 1
                return
            self.bytes += size - self._sizes.get(key, 0)
            self._sizes[key] = size
            items[key] = value
            items.move_to_end(key)
            while self.bytes > self.max_bytes:
                self._evict_oldest()
        else:
            items[key] = value
            items.move_to_end(key)
        while len(items) > self.capacity:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        key, _ = self._items.popitem(last=False)
        self.bytes -= self._sizes.pop(key, 0)
        self.evicted += 1

    def discard(self, key: str) -> None:
        if self._items.pop(key, None) is not None:
            self.bytes -= self._sizes.pop(key, 0)

    def clear(self) -> None:
        self._items.clear()
        self._sizes.clear()
        self.bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
