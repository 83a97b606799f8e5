"""An exact, brute-force vector engine in plain Python: the test double for :class:`VectorEngine`.

Every search scores every point that passes the filter, so results are exact cosine similarities
(the reference the approximate engines are checked against) and cost O(points x dim) in Python:
fine for tests and a few thousand memories, not for production sizes.
"""

from __future__ import annotations

import copy
import heapq
import math
import operator
import threading
from collections.abc import Sequence
from typing import Any

from ...errors import IndexUnavailable, InvalidInput
from ..base import Hit, Point, SearchFilter
from ._common import (
    check_dim,
    check_filter,
    check_limit,
    check_points,
    check_vector,
    fresh_points,
    matches_nothing,
    passes,
    require_dim,
    stored_payload,
)


class MemoryEngine:
    """Points in a dict, gone with the object; after ``close()`` every call raises IndexUnavailable.

    Thread-safe: one lock serialises every call, so the stale-version check and the write of an
    upsert are atomic.
    """

    name = "memory"

    def __init__(self) -> None:
        self._dim: int | None = None
        self._points: dict[str, tuple[list[float], float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
        with self._lock:
            self._check_open()
            if self._dim is not None and self._dim != dim:
                raise InvalidInput(f"the collection has {self._dim} dimensions, not {dim}; rebuild it")
            self._dim = dim

    def upsert(self, points: Sequence[Point]) -> int:
        with self._lock:
            dim = self._ready()
            batch = check_points(points, dim)
            stored = {p.id: self._points[p.id][2]["version"] for p, _ in batch if p.id in self._points}
            fresh = fresh_points(batch, stored)
            for point, vector in fresh:
                norm = math.sqrt(sum(map(operator.mul, vector, vector)))
                self._points[point.id] = (vector, norm, copy.deepcopy(stored_payload(point)))
            return len(fresh)

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            self._ready()
            for memory_id in ids:
                self._points.pop(memory_id, None)

    def versions(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        with self._lock:
            self._ready()
            wanted = self._points.keys() if ids is None else [i for i in ids if i in self._points]
            return {i: int(self._points[i][2]["version"]) for i in wanted}

    def payloads(self, ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._ready()
            wanted = self._points.keys() if ids is None else [i for i in ids if i in self._points]
            return {i: copy.deepcopy(self._points[i][2]) for i in wanted}

    def search(self, vector: Sequence[float], flt: SearchFilter, limit: int) -> list[Hit]:
        check_filter(flt)
        check_limit(limit)
        with self._lock:
            query = check_vector(vector, self._ready(), "the query vector")
            if limit == 0 or matches_nothing(flt):
                return []
            query_norm = math.sqrt(sum(map(operator.mul, query, query)))
            scored = []
            for memory_id, (stored, norm, payload) in self._points.items():
                if not passes(payload, flt):
                    continue
                dot = sum(map(operator.mul, query, stored))
                scale = query_norm * norm
                scored.append((dot / scale if scale else 0.0, memory_id, payload))
            best = heapq.nlargest(limit, scored, key=operator.itemgetter(0))
            return [Hit(memory_id, score, copy.deepcopy(payload)) for score, memory_id, payload in best]

    def count(self) -> int:
        with self._lock:
            self._ready()
            return len(self._points)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise IndexUnavailable("memory engine: used after close()")

    def _ready(self) -> int:
        self._check_open()
        return require_dim(self._dim, self.name)
