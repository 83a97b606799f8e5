"""The Qdrant Edge adapter: Qdrant's engine embedded in the process (``qdrant-edge-py``), one shard
persisted in a directory. No server, no background threads of ours; the crdtmem embedded default.

Layout and behaviour match :mod:`.qdrant_client`: cosine distance, uuid5 point ids with the memory id
in the payload, keyword payload indexes on ``user_id`` (the tenant field), ``tenant_id``, ``kind``,
``topics``, ``channels``, ``tags``, and the same read-then-write stale-upsert check. A shard directory
is locked by the process that opened it (Edge's write-ahead log), so the single-writer assumption of
that check holds by construction; this object also serialises its own writes.

Two things differ, both hazards of qdrant-edge-py 0.9:

- **Boolean filters.** Its ``MatchValue(True)`` is converted to the integer 1, which matches no
  boolean payload value, so a filter on ``deleted``/``conflicted`` would silently match nothing (or,
  under ``must_not``, everything). The adapter therefore stores one more keyword field, ``_flags``
  (``live`` | ``conflicted`` | ``deleted`` | ``deleted+conflicted``), indexes it and filters on it;
  it is removed from the payload that hits return. The booleans are stored unchanged.
- **No background optimizer.** Writes land in appendable segments that are searched exactly. Searches
  scoped to a user (a few thousand points at most) stay fast that way: Qdrant picks the payload index
  and scores the subset exactly (0.6-1.1 ms p50 at 100k points, 1k per user). Unscoped searches scan
  (about 10 ms at 100k), and replaced points are not vacuumed, until
  :meth:`QdrantEdgeEngine.optimize` builds the HNSW graph and merges segments (then 0.35 ms scoped,
  1.2 ms unscoped). It takes 50-100 s for 100k 384-d points on 2 cores and **holds the GIL
  throughout**: every thread of the process, an asyncio event loop included, stops until it returns.
  So the adapter never calls it by itself; run it offline (a maintenance command, or right after a
  rebuild before serving).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as edge

from ...errors import IndexUnavailable, InvalidInput
from ..base import Hit, Point, SearchFilter
from ._common import (
    BOOL_FIELDS,
    KEYWORD_FIELDS,
    TENANT_FIELD,
    check_dim,
    check_filter,
    check_limit,
    check_points,
    check_vector,
    chunked,
    fresh_points,
    matches_nothing,
    point_uuid,
    require_dim,
    stored_payload,
)

FLAGS_FIELD = "_flags"
_PAGE = 1024


def flags_of(payload: Mapping[str, Any]) -> str:
    deleted = payload.get("deleted") is True
    conflicted = payload.get("conflicted") is True
    if deleted and conflicted:
        return "deleted+conflicted"
    return "deleted" if deleted else "conflicted" if conflicted else "live"


def to_edge_filter(flt: SearchFilter) -> edge.Filter | None:
    """The Edge filter that means the same as ``flt`` (see ``_common.passes``)."""
    must: list[edge.FieldCondition] = []

    def equals(key: str, value: str) -> edge.FieldCondition:
        return edge.FieldCondition(key=key, match=edge.MatchValue(value))

    def any_of(key: str, values: Sequence[str]) -> edge.FieldCondition:
        return edge.FieldCondition(key=key, match=edge.MatchAny(list(values)))

    for key, value in (("user_id", flt.user_id), ("tenant_id", flt.tenant_id), ("kind", flt.kind)):
        if value is not None:
            must.append(equals(key, value))
    if flt.topic is not None:
        must.append(equals("topics", flt.topic))
    must.extend(equals("tags", tag) for tag in flt.tags)
    if flt.channels is not None:
        must.append(any_of("channels", flt.channels))
    if flt.ids is not None:
        must.append(any_of("memory_id", flt.ids))
    allowed = ["live"]
    if flt.include_conflicted:
        allowed.append("conflicted")
    if flt.include_deleted:
        allowed.append("deleted")
    if flt.include_conflicted and flt.include_deleted:
        allowed.append("deleted+conflicted")
    if len(allowed) < 4:
        must.append(any_of(FLAGS_FIELD, allowed))
    return edge.Filter(must=list(must)) if must else None


class QdrantEdgeEngine:
    """A :class:`VectorEngine` on one Qdrant Edge shard in the directory ``path``.

    The shard is created (or opened, if ``path`` holds one) by :meth:`ensure_collection`; every other
    call before it raises IndexUnavailable.
    """

    name = "edge"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._shard: edge.EdgeShard | None = None
        self._dim: int | None = None
        self._closed = False
        self._lock = threading.Lock()

    # -- the VectorEngine port ---------------------------------------------------------------

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
        with self._lock:
            self._check_open()
            if self._shard is None:
                self._shard = self._open(dim)
            elif self._dim != dim:
                raise InvalidInput(f"the Edge shard at {self.path} has {self._dim}-d vectors, not {dim}")
            self._dim = dim
            shard = self._shard
            with self._errors("create payload indexes"):
                present = shard.info().payload_schema
                for field in (*KEYWORD_FIELDS, FLAGS_FIELD):
                    if field not in present:
                        # Per-value HNSW links (enable_hnsw) would multiply optimize() time, and a
                        # user-scoped search is answered from the payload index anyway.
                        params = edge.KeywordIndexParams(is_tenant=field == TENANT_FIELD, enable_hnsw=False)
                        shard.update(edge.UpdateOperation.create_field_index(field, params))
                for field in BOOL_FIELDS:
                    if field not in present:
                        params_bool = edge.BoolIndexParams(enable_hnsw=False)
                        shard.update(edge.UpdateOperation.create_field_index(field, params_bool))

    def upsert(self, points: Sequence[Point]) -> int:
        with self._lock:
            shard, dim = self._ready()
            batch = check_points(points, dim)
            if not batch:
                return 0
            stored = self._stored_versions(shard, [p.id for p, _ in batch])
            fresh = fresh_points(batch, stored)
            edge_points = [
                edge.Point(point_uuid(p.id), vector, {**stored_payload(p), FLAGS_FIELD: flags_of(p.payload)})
                for p, vector in fresh
            ]
            with self._errors("upsert"):
                if edge_points:
                    shard.update(edge.UpdateOperation.upsert_points(edge_points))
            return len(edge_points)

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            shard, _ = self._ready()
            with self._errors("delete"):
                for chunk in chunked(ids, _PAGE):
                    point_ids: list[edge.PointId] = [point_uuid(i) for i in chunk]
                    shard.update(edge.UpdateOperation.delete_points(point_ids))

    def versions(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        shard, _ = self._ready()
        if ids is not None:
            return self._stored_versions(shard, ids)
        return {i: int(p["version"]) for i, p in self._scroll(shard, ["memory_id", "version"]).items()}

    def payloads(self, ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        shard, _ = self._ready()
        if ids is None:
            return self._scroll(shard, True)
        found: dict[str, dict[str, Any]] = {}
        with self._errors("retrieve"):
            for chunk in chunked(dict.fromkeys(ids), _PAGE):
                point_ids: list[edge.PointId] = [point_uuid(i) for i in chunk]
                found.update(
                    _by_memory_id(r.payload)
                    for r in shard.retrieve(point_ids, True, False)
                    if _is_ours(r.payload)
                )
        return found

    def _scroll(self, shard: edge.EdgeShard, fields: list[str] | bool) -> dict[str, dict[str, Any]]:
        """Every crdtmem point's payload (only ``fields`` of it, or all), by memory id."""
        found: dict[str, dict[str, Any]] = {}
        offset: edge.PointId | None = None
        with self._errors("scroll"):
            while True:
                request = edge.ScrollRequest(
                    offset=offset, limit=_PAGE, with_payload=fields, with_vector=False
                )
                records, offset = shard.scroll(request)
                found.update(_by_memory_id(r.payload) for r in records if _is_ours(r.payload))
                if offset is None:
                    return found

    def search(self, vector: Sequence[float], flt: SearchFilter, limit: int) -> list[Hit]:
        check_filter(flt)
        check_limit(limit)
        shard, dim = self._ready()
        query = check_vector(vector, dim, "the query vector")
        if limit == 0 or matches_nothing(flt):
            return []
        request = edge.QueryRequest(
            limit=limit, query=edge.Query.Nearest(query), filter=to_edge_filter(flt), with_payload=True
        )
        with self._errors("search"):
            points = shard.query(request)
        return [_hit(point.payload, point.score) for point in points]

    def count(self) -> int:
        shard, _ = self._ready()
        with self._errors("count"):
            return shard.count(edge.CountRequest(exact=True))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            shard, self._shard = self._shard, None
            if shard is not None:
                with self._errors("close"):
                    shard.close()

    # -- Edge only ----------------------------------------------------------------------------

    def optimize(self) -> bool:
        """Build the HNSW index and merge/vacuum segments; True if it changed anything.

        Blocks the whole process until done (qdrant-edge-py 0.9 holds the GIL): see the module
        docstring before calling it anywhere but offline."""
        with self._lock:
            shard, _ = self._ready()
            with self._errors("optimize"):
                return shard.optimize()

    # -- helpers ------------------------------------------------------------------------------

    def _open(self, dim: int) -> edge.EdgeShard:
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine),
            # Payload pages stay in memory: filters and the version check read them on every call.
            payload_memory=edge.Memory.Cached,
        )
        where = os.fspath(self.path)
        if self.path.is_dir() and any(self.path.iterdir()):
            try:
                return edge.EdgeShard.load(where, config)
            except Exception as exc:
                if "incompatible" in str(exc):
                    raise InvalidInput(
                        f"the Edge shard at {where} does not take {dim}-d cosine vectors ({exc}); "
                        "use another path or rebuild it for the new embedder"
                    ) from exc
                raise IndexUnavailable(f"cannot open the Edge shard at {where}: {exc}") from exc
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            return edge.EdgeShard.create(where, config)
        except Exception as exc:
            raise IndexUnavailable(f"cannot create an Edge shard at {where}: {exc}") from exc

    def _stored_versions(self, shard: edge.EdgeShard, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._errors("retrieve"):
            for chunk in chunked(dict.fromkeys(ids), _PAGE):
                point_ids: list[edge.PointId] = [point_uuid(i) for i in chunk]
                for record in shard.retrieve(point_ids, ["memory_id", "version"], False):
                    found.update(_version_of(record.payload))
        return found

    def _check_open(self) -> None:
        if self._closed:
            raise IndexUnavailable(f"edge engine at {self.path}: used after close()")

    def _ready(self) -> tuple[edge.EdgeShard, int]:
        self._check_open()
        dim = require_dim(self._dim, self.name)
        shard = self._shard
        if shard is None:
            raise IndexUnavailable(f"edge engine at {self.path}: used after close()")
        return shard, dim

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        # qdrant-edge-py raises bare Exception for everything; a TypeError is our bug, not storage.
        try:
            yield
        except (InvalidInput, IndexUnavailable, TypeError):
            raise
        except Exception as exc:
            raise IndexUnavailable(f"edge engine at {self.path}: {action} failed: {exc}") from exc


def _is_ours(payload: Mapping[str, Any] | None) -> bool:
    return bool(payload) and "memory_id" in (payload or {})


def _by_memory_id(payload: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    held = {k: v for k, v in (payload or {}).items() if k != FLAGS_FIELD}  # the adapter's own field
    return str(held["memory_id"]), held


def _version_of(payload: Mapping[str, Any] | None) -> dict[str, int]:
    if not payload or "memory_id" not in payload:
        return {}
    return {str(payload["memory_id"]): int(payload["version"])}


def _hit(payload: Mapping[str, Any] | None, score: float) -> Hit:
    clean = {k: v for k, v in (payload or {}).items() if k != FLAGS_FIELD}
    return Hit(str(clean.get("memory_id", "")), float(score), clean)
