"""What every engine adapter shares: argument checks, point ids, the payload fields it indexes, and
the reference meaning of a :class:`SearchFilter` (which the Qdrant adapters translate to filters).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ...errors import IndexUnavailable, InvalidInput
from ..base import Point, SearchFilter

POINT_NAMESPACE = uuid.UUID("b7801784-0843-5ac2-9854-f2d6c86dbcd1")
"""Namespace of the uuid5 point ids. Part of the on-disk format: changing it orphans every point."""

KEYWORD_FIELDS = ("user_id", "tenant_id", "kind", "topics", "channels", "tags")
BOOL_FIELDS = ("deleted", "conflicted")
TENANT_FIELD = "user_id"
"""Almost every search is scoped to one user; Qdrant lays its storage out by this field."""

_T = TypeVar("_T")


def point_uuid(memory_id: str) -> str:
    """The engine-side id of a memory: uuid5 of its id (Qdrant accepts only ints and UUIDs)."""
    return str(uuid.uuid5(POINT_NAMESPACE, memory_id))


def check_dim(dim: object) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise InvalidInput(f"a collection needs a positive int dimension, not {dim!r}")
    return dim


def require_dim(dim: int | None, engine: str) -> int:
    """The collection's dimension, or a clear error if ``ensure_collection`` was never called."""
    if dim is None:
        raise IndexUnavailable(f"{engine} engine: no collection yet; call ensure_collection(dim) first")
    return dim


def check_vector(vector: Sequence[float], dim: int, what: str) -> list[float]:
    """``vector`` as a list of floats, or InvalidInput if it has the wrong length or a NaN/inf."""
    try:
        values = list(map(float, vector))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not a sequence of numbers") from exc
    if len(values) != dim:
        raise InvalidInput(f"{what} has {len(values)} dimensions; the collection has {dim}")
    # One C-level sum instead of a Python loop: NaN or +-inf anywhere makes the sum non-finite (so
    # does an overflow past 1e308, which no embedding reaches).
    if not math.isfinite(sum(values)):
        raise InvalidInput(f"{what} contains NaN or infinity")
    return values


def check_points(points: Sequence[Point], dim: int) -> list[tuple[Point, list[float]]]:
    """Validate a batch and keep one point per id: the highest version (the last one on a tie).

    Returns (point, vector as floats) pairs; the point's payload carries ``memory_id`` = its id.
    """
    latest: dict[str, tuple[Point, list[float]]] = {}
    for point in points:
        if not isinstance(point, Point):
            raise InvalidInput(f"upsert takes Point objects, not {type(point).__name__}")
        if not isinstance(point.id, str) or not point.id:
            raise InvalidInput(f"a point id must be a non-empty string, not {point.id!r}")
        payload_id = point.payload.get("memory_id", point.id)
        if payload_id != point.id:
            raise InvalidInput(f"point {point.id!r} carries memory_id {payload_id!r} in its payload")
        version = point.payload.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidInput(f"point {point.id!r} needs an int 'version' in its payload, not {version!r}")
        vector = check_vector(point.vector, dim, f"the vector of point {point.id!r}")
        held = latest.get(point.id)
        if held is None or held[0].version <= version:
            latest[point.id] = (point, vector)
    return list(latest.values())


def stored_payload(point: Point) -> dict[str, Any]:
    return {**point.payload, "memory_id": point.id}


def fresh_points(
    batch: Sequence[tuple[Point, list[float]]], stored: Mapping[str, int]
) -> list[tuple[Point, list[float]]]:
    """The points whose stored version (if any) is not higher: a stale upsert never wins."""
    return [(p, v) for p, v in batch if stored.get(p.id, p.version) <= p.version]


def check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidInput(f"limit must be a non-negative int, not {limit!r}")
    return limit


def check_filter(flt: object) -> SearchFilter:
    if not isinstance(flt, SearchFilter):
        raise InvalidInput(f"search takes a SearchFilter, not {type(flt).__name__}")
    return flt


def matches_nothing(flt: SearchFilter) -> bool:
    """An empty ``channels`` tuple means "readable channels: none", and an empty ``ids`` tuple "no
    memory passed the record filter": no point can pass either."""
    return (flt.channels is not None and len(flt.channels) == 0) or (flt.ids is not None and not flt.ids)


def passes(payload: Mapping[str, Any], flt: SearchFilter) -> bool:
    """The reference meaning of a filter; the Qdrant adapters build the same condition.

    A point passes when every given condition holds: ``user_id``/``tenant_id``/``kind`` equal,
    ``topic`` among its topics, every one of ``tags`` among its tags, at least one of ``channels``
    among its channels, its ``memory_id`` among ``ids``, and, unless included, it is not ``deleted``
    / not ``conflicted``.
    """
    if flt.user_id is not None and payload.get("user_id") != flt.user_id:
        return False
    if flt.tenant_id is not None and payload.get("tenant_id") != flt.tenant_id:
        return False
    if flt.kind is not None and payload.get("kind") != flt.kind:
        return False
    if flt.topic is not None and flt.topic not in _values(payload.get("topics")):
        return False
    if flt.tags and not set(flt.tags) <= set(_values(payload.get("tags"))):
        return False
    if flt.channels is not None and set(flt.channels).isdisjoint(_values(payload.get("channels"))):
        return False
    if flt.ids is not None and payload.get("memory_id") not in flt.ids:
        return False
    if not flt.include_deleted and payload.get("deleted") is True:
        return False
    return flt.include_conflicted or payload.get("conflicted") is not True


def _values(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
