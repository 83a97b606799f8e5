"""The qdrant-client adapter: one code path for qdrant-client's local mode and a Qdrant server.

``QdrantClientEngine.local(path)`` (or ``.in_memory()``) runs qdrant-client's pure-Python local mode;
``QdrantClientEngine.remote(url, api_key=...)`` talks to a Qdrant server or cluster. Both go through
the same methods: the same collection (cosine distance), the same payload indexes (keyword indexes on
``user_id`` (the tenant field), ``tenant_id``, ``kind``, ``topics``, ``channels``, ``tags``; bool
indexes on ``deleted`` and ``conflicted``; an integer index on ``version``; local mode accepts and
ignores them), the same filters.

Point ids are uuid5 of the memory id (Qdrant takes only ints and UUIDs); the memory id travels in the
payload as ``memory_id`` and is what :class:`Hit` carries.

Stale upserts: ``upsert`` first reads the stored ``version`` of every id in the batch and drops the
points whose stored version is higher (they are counted as refused), then writes the rest as a
*conditional* upsert: ``update_filter`` makes Qdrant replace an existing point only if its stored
``version`` is not higher than the new one (new points are inserted regardless). Qdrant evaluates
that filter when it applies the operation to the shard, under the shard's update lock, so a point
written by another node between our read and our write still wins if it is newer: with several
nodes indexing into one server collection, a slower node never overwrites a newer point (the rule
and its limits: ``docs/scale-out.md``, "A search index shared by the fleet"). The read is only a
shortcut that saves sending vectors that would be refused. ``update_filter`` needs Qdrant 1.16 or
later on the server; local mode implements it too, which is how the tests exercise it.

Every error from qdrant-client, httpx or local mode's storage becomes an
:class:`~crdtmem.errors.IndexUnavailable` (a StorageError).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ApiException

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

DEFAULT_COLLECTION = "crdtmem"
_PAGE = 1024
VERSION_FIELD = "version"
"""Indexed as an integer: every conditional upsert filters on it."""
_CONDITIONAL_CHUNK = 32
"""Points per conditional upsert: the condition lists one clause per point and is checked against
every replaced point, so a request costs O(chunk^2) filter checks."""
_QDRANT_ERRORS = (
    ApiException,
    QdrantException,
    httpx.HTTPError,
    sqlite3.Error,
    OSError,
    RuntimeError,
    ValueError,
)
"""What qdrant-client raises: API/transport errors from a server, and RuntimeError (storage folder
locked), ValueError (collection not found) and sqlite3/OS errors from local mode."""


def to_qdrant_filter(flt: SearchFilter) -> models.Filter | None:
    """The qdrant filter that means the same as ``flt`` (see ``_common.passes``)."""
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []

    def equals(key: str, value: str | bool) -> models.FieldCondition:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    for key, value in (("user_id", flt.user_id), ("tenant_id", flt.tenant_id), ("kind", flt.kind)):
        if value is not None:
            must.append(equals(key, value))
    if flt.topic is not None:
        must.append(equals("topics", flt.topic))
    must.extend(equals("tags", tag) for tag in flt.tags)
    if flt.channels is not None:
        must.append(models.FieldCondition(key="channels", match=models.MatchAny(any=list(flt.channels))))
    if flt.ids is not None:
        must.append(models.FieldCondition(key="memory_id", match=models.MatchAny(any=list(flt.ids))))
    # must_not, not must == False: a point without the flag is neither deleted nor conflicted.
    if not flt.include_deleted:
        must_not.append(equals("deleted", True))
    if not flt.include_conflicted:
        must_not.append(equals("conflicted", True))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


def not_newer_than(points: Sequence[tuple[Point, list[float]]]) -> models.Filter:
    """The condition under which Qdrant may replace a stored point with one of ``points``: its
    stored ``version`` is not higher than the new point's. One clause per point (its id and its
    version), so one request carries points of different versions."""
    return models.Filter(
        should=[
            models.Filter(
                must=[
                    models.HasIdCondition(has_id=[point_uuid(p.id)]),
                    models.FieldCondition(key=VERSION_FIELD, range=models.Range(lte=p.version)),
                ]
            )
            for p, _ in points
        ]
    )


def _payload_schema(field: str) -> models.PayloadSchemaType | models.KeywordIndexParams:
    if field == VERSION_FIELD:
        return models.PayloadSchemaType.INTEGER
    if field in BOOL_FIELDS:
        return models.PayloadSchemaType.BOOL
    return models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=field == TENANT_FIELD)


class QdrantClientEngine:
    """A :class:`VectorEngine` on a ``QdrantClient`` (local mode or a server), one collection.

    Args:
        client: the client; closed by :meth:`close` when ``owns_client``.
        collection: the collection name.
        name: what :attr:`name` reports ("qdrant-local", "qdrant-memory", "qdrant-server").
        owns_client: whether :meth:`close` closes the client.
        thread_safe_reads: whether searches may run while a write is under way. True for a server
            (httpx is thread-safe); local mode's in-process arrays are not, so there every call is
            serialised.
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str = DEFAULT_COLLECTION,
        *,
        name: str = "qdrant",
        owns_client: bool = True,
        thread_safe_reads: bool = False,
    ) -> None:
        if not collection:
            raise InvalidInput("a collection name must not be empty")
        self.name = name
        self.collection = collection
        self._client = client
        self._owns_client = owns_client
        self._dim: int | None = None
        self._closed = False
        self._write_lock = threading.RLock()
        self._read_lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if thread_safe_reads else self._write_lock
        )

    @classmethod
    def local(cls, path: str | os.PathLike[str], collection: str = DEFAULT_COLLECTION) -> QdrantClientEngine:
        """qdrant-client local mode persisted in the directory ``path`` (one process at a time)."""
        try:
            # The indexer calls from worker threads; this object serialises its writes itself.
            client = QdrantClient(path=os.fspath(path), force_disable_check_same_thread=True)
        except _QDRANT_ERRORS as exc:
            raise IndexUnavailable(f"cannot open qdrant local storage at {os.fspath(path)!r}: {exc}") from exc
        return cls(client, collection, name="qdrant-local")

    @classmethod
    def in_memory(cls, collection: str = DEFAULT_COLLECTION) -> QdrantClientEngine:
        """qdrant-client local mode in memory (``location=":memory:"``), gone on close."""
        client = QdrantClient(location=":memory:", force_disable_check_same_thread=True)
        return cls(client, collection, name="qdrant-memory")

    @classmethod
    def remote(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        timeout: int = 10,
    ) -> QdrantClientEngine:
        """A Qdrant server or cluster at ``url`` (``http(s)://host:6333``). Nothing is sent until the
        first call; an unreachable server surfaces there as IndexUnavailable."""
        try:
            # check_compatibility would call the server now and only warn if it is down.
            client = QdrantClient(url=url, api_key=api_key, timeout=timeout, check_compatibility=False)
        except _QDRANT_ERRORS as exc:
            raise IndexUnavailable(f"cannot configure a qdrant client for {url!r}: {exc}") from exc
        return cls(client, collection, name="qdrant-server", thread_safe_reads=True)

    # -- the VectorEngine port ---------------------------------------------------------------

    def ensure_collection(self, dim: int) -> None:
        check_dim(dim)
        self._check_open()
        with self._errors("create the collection", writes=True):
            if not self._client.collection_exists(self.collection):
                try:
                    self._client.create_collection(
                        self.collection,
                        vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                    )
                except _QDRANT_ERRORS:
                    if not self._client.collection_exists(self.collection):
                        raise  # not a lost race with another creator
            info = self._client.get_collection(self.collection)
        self._check_vectors(info.config.params.vectors, dim)
        with self._errors("create payload indexes", writes=True), warnings.catch_warnings():
            # Local mode warns that payload indexes have no effect there; they matter on a server.
            warnings.filterwarnings("ignore", "Payload indexes have no effect", UserWarning)
            for field in (*KEYWORD_FIELDS, *BOOL_FIELDS, VERSION_FIELD):
                if field not in (info.payload_schema or {}):
                    self._client.create_payload_index(
                        self.collection, field, field_schema=_payload_schema(field), wait=True
                    )
        self._dim = dim

    def upsert(self, points: Sequence[Point]) -> int:
        with self._write_lock:
            batch = check_points(points, self._ready())
            if not batch:
                return 0
            stored = self._stored_versions([p.id for p, _ in batch])
            fresh = fresh_points(batch, stored)
            with self._errors("upsert", writes=True):
                for chunk in chunked(fresh, _CONDITIONAL_CHUNK):
                    structs = [
                        models.PointStruct(id=point_uuid(p.id), vector=vector, payload=stored_payload(p))
                        for p, vector in chunk
                    ]
                    self._client.upsert(
                        self.collection, structs, wait=True, update_filter=not_newer_than(chunk)
                    )
            return len(fresh)

    def delete(self, ids: Sequence[str]) -> None:
        with self._write_lock:
            self._ready()
            with self._errors("delete"):
                for chunk in chunked(ids, _PAGE):
                    selector = models.PointIdsList(points=[point_uuid(i) for i in chunk])
                    self._client.delete(self.collection, points_selector=selector, wait=True)

    def versions(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        self._ready()
        if ids is not None:
            return self._stored_versions(ids)
        return {i: int(p["version"]) for i, p in self._scroll(["memory_id", "version"]).items()}

    def payloads(self, ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        self._ready()
        if ids is None:
            return self._scroll(True)
        found: dict[str, dict[str, Any]] = {}
        with self._errors("retrieve"):
            for chunk in chunked(dict.fromkeys(ids), _PAGE):
                records = self._client.retrieve(
                    self.collection, ids=[point_uuid(i) for i in chunk], with_payload=True, with_vectors=False
                )
                found.update(_by_memory_id(record.payload) for record in records if _is_ours(record.payload))
        return found

    def _scroll(self, fields: list[str] | bool) -> dict[str, dict[str, Any]]:
        """Every crdtmem point's payload (only ``fields`` of it, or all), by memory id."""
        found: dict[str, dict[str, Any]] = {}
        offset: Any = None
        with self._errors("scroll"):
            while True:
                records, offset = self._client.scroll(
                    self.collection, limit=_PAGE, offset=offset, with_payload=fields, with_vectors=False
                )
                found.update(_by_memory_id(record.payload) for record in records if _is_ours(record.payload))
                if offset is None:
                    return found

    def search(self, vector: Sequence[float], flt: SearchFilter, limit: int) -> list[Hit]:
        check_filter(flt)
        check_limit(limit)
        query = check_vector(vector, self._ready(), "the query vector")
        if limit == 0 or matches_nothing(flt):
            return []
        with self._errors("search"):
            response = self._client.query_points(
                self.collection,
                query=query,
                query_filter=to_qdrant_filter(flt),
                limit=limit,
                with_payload=True,
            )
        return [_hit(point.payload, point.score) for point in response.points]

    def count(self) -> int:
        self._ready()
        with self._errors("count"):
            return self._client.count(self.collection, exact=True).count

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._owns_client:
                with self._errors("close", writes=True):
                    self._client.close()

    # -- helpers ------------------------------------------------------------------------------

    def _stored_versions(self, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._errors("retrieve"):
            for chunk in chunked(dict.fromkeys(ids), _PAGE):
                records = self._client.retrieve(
                    self.collection,
                    ids=[point_uuid(i) for i in chunk],
                    with_payload=["memory_id", "version"],
                    with_vectors=False,
                )
                for record in records:
                    found.update(_version_of(record.payload))
        return found

    def _check_vectors(self, vectors: Any, dim: int) -> None:
        if not isinstance(vectors, models.VectorParams):
            raise InvalidInput(
                f"collection {self.collection!r} uses named vectors; crdtmem needs one unnamed vector"
            )
        if vectors.size != dim:
            raise InvalidInput(
                f"collection {self.collection!r} has {vectors.size}-d vectors, not {dim}: "
                "use another collection or rebuild it for the new embedder"
            )
        if vectors.distance != models.Distance.COSINE:
            raise InvalidInput(f"collection {self.collection!r} uses {vectors.distance} distance, not cosine")

    def _check_open(self) -> None:
        if self._closed:
            raise IndexUnavailable(f"{self.name} engine: used after close()")

    def _ready(self) -> int:
        self._check_open()
        return require_dim(self._dim, self.name)

    @contextlib.contextmanager
    def _errors(self, action: str, *, writes: bool = False) -> Iterator[None]:
        """Hold the lock the call needs and translate what qdrant-client raises."""
        try:
            with self._write_lock if writes else self._read_lock:
                yield
        except InvalidInput:
            raise
        except _QDRANT_ERRORS as exc:
            where = f"collection {self.collection!r}"
            raise IndexUnavailable(f"{self.name}: {action} failed on {where}: {exc}") from exc


def _is_ours(payload: dict[str, Any] | None) -> bool:
    return bool(payload) and "memory_id" in (payload or {})  # not a crdtmem point: leave it alone


def _by_memory_id(payload: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    held = dict(payload or {})
    return str(held["memory_id"]), held


def _version_of(payload: dict[str, Any] | None) -> dict[str, int]:
    if not payload or "memory_id" not in payload:
        return {}  # not a crdtmem point; leave it alone
    return {str(payload["memory_id"]): int(payload["version"])}


def _hit(payload: dict[str, Any] | None, score: float) -> Hit:
    payload = dict(payload or {})
    return Hit(str(payload.get("memory_id", "")), float(score), payload)
