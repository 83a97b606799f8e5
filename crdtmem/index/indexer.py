"""The indexer: keeps a vector engine equal to the replica's merged state, off the write path.

It follows the store in version order, which *is* the replica's change feed: every committed change,
local or remote, gives its memory a new, higher local version. The indexer keeps a high-water mark
``indexed_version`` (everything at or below it is in the engine) in the store's meta table, and
after every commit it reads the records changed since, in batches, embeds them and upserts them with
their version in the payload, or deletes the points of deleted memories. Because the mark is stored
only after the engine accepted the batch, a crash between a store commit and the index upsert is
repaired on the next start by simply catching up from the mark. Upserts carry versions, so a stale one
never overwrites a newer point (each engine enforces it). A removed point refuses nothing, so engine
writes run through ``off_loop`` (a cancelled caller waits for its thread): ``rebuild()`` cancels the
task, then reads and deletes only once the task's write in flight has landed, never under it.

Vectors record the model that made them; if the embedder's model differs from the one the index was
built with, the indexer starts over from version 0 and re-embeds everything.

**Shared mode** (``shared=True``: several nodes indexing into one Qdrant server collection). A local
version means nothing to another node, so points carry the document's *revision* instead
(``document/revision.py``: computed from the merged state alone, equal on every node that holds the
same state, higher for a state that has seen more). The indexer reads each changed memory's state
from the store and materializes the point from that very state, so the point's content and its
revision always belong together. Deleted memories are written as tombstones (their point stays,
flagged ``deleted``, which every search excludes unless asked) instead of being removed, because a
removed point could not refuse a slower node's older upsert. A forgotten memory's point becomes an
erased one (no content, no scope, a fixed vector, :data:`ERASED_VERSION`): nothing replaces it.
``verify()`` and ``rebuild()`` look only at the memories this node holds: the collection also holds
the rest of the fleet's, which are not orphans. Before embedding, a shared indexer reads the stored
points of its batch and leaves out the memories the collection already holds at a newer revision
(counted in ``points_refused``: this node is behind) or at the same revision, model and text
(``points_skipped``: another node indexed that state first), so of the nodes holding a memory,
usually only the first to index a change embeds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..document.memory import MemoryDoc
from ..document.query import Where, matches
from ..document.records import Memory
from ..document.revision import revision_of
from ..errors import DamagedMemory, InvalidInput
from ..lru import LRU
from ..offloop import off_loop
from .base import (
    LEXICAL_PREFIX,
    Embedder,
    Hit,
    Point,
    RecordSource,
    SearchFilter,
    Settle,
    Subscribe,
    VectorEngine,
)
from .points import (
    EMBEDDED_CONTENT_CHARS,
    EMBEDDED_EXTRA_CHARS,
    ERASED_VERSION,
    disagrees,
    erased_payload,
    indexable,
    memory_text,
    payload,
    text_hash,
)

__all__ = [
    "EMBEDDED_CONTENT_CHARS",
    "EMBEDDED_EXTRA_CHARS",
    "ERASED_VERSION",
    "Indexer",
    "Progress",
    "SearchResult",
    "Verification",
    "indexable",
    "memory_text",
    "text_hash",
]

log = logging.getLogger("crdtmem.index")

Progress = Callable[[int, int], None]
"""Called with (done, total) while rebuilding."""


FILTER_IDS = 4096
"""A record filter that admits at most this many memories restricts the engine to their ids."""
FILTER_SCAN = 1000
"""Otherwise the engine's nearest points are read up to this many and filtered one by one."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A memory that matched a search, its cosine similarity to the query, and the model that
    scored it (``crdtmem/hashing-...``: lexical, shared words; any other: by meaning)."""

    memory: Memory
    score: float
    model: str = ""

    @property
    def lexical(self) -> bool:
        """Scored by shared words (the offline default embedder), not by meaning."""
        return self.model.startswith(LEXICAL_PREFIX)


@dataclass(frozen=True, slots=True)
class Verification:
    """What :meth:`Indexer.verify` found: ids missing from the index, stale points (older version
    than the store), orphans (points for memories that should not be indexed), and mismatched points
    (the store's version, but a payload that disagrees with the store's record: the deleted or
    conflicted flag, the text that was embedded, or the model that embedded it)."""

    expected: int
    indexed: int
    missing: tuple[str, ...]
    stale: tuple[str, ...]
    orphans: tuple[str, ...]
    mismatched: tuple[str, ...] = ()
    ahead: tuple[str, ...] = ()
    """Shared mode: points another node wrote from a state this node has not merged yet (a higher
    revision). Not a fault: this node's own upserts of them are refused until it catches up."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stale or self.orphans or self.mismatched)


BATCH_CHARS = 2 * 1024 * 1024
"""A batch read from the store ends early once its records add up to this much JSON (at least one):
it is read and decoded on the event loop, in one piece."""

_READ_ONLY_CLIENT = 1
"""The Yrs client id of documents the indexer only reads (shared mode); nothing is written with it."""


class Indexer:
    """Follow ``source`` (woken by ``subscribe``) into ``engine`` with ``embedder``.

    ``start()``/``stop()`` or ``async with``.
    """

    def __init__(
        self,
        source: RecordSource,
        subscribe: Subscribe,
        engine: VectorEngine,
        embedder: Embedder,
        *,
        batch: int = 256,
        name: str = "default",
        shared: bool = False,
        settle: Settle | None = None,
    ):
        self.source = source
        self._settle = settle
        self._subscribe = subscribe
        self.engine = engine
        self.embedder = embedder
        self.batch = batch
        self._mark_key = f"index:{name}:version"
        self._model_key = f"index:{name}:model"
        self.indexed_version = 0
        self.indexed_at = time.time()
        self.shared = shared
        self.points_written = 0
        self.points_refused = 0
        self.points_skipped = 0
        self.batches = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        # text digest -> vector, so an update that leaves the text alone is not re-embedded
        self._vectors: LRU[list[float]] = LRU(4096)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> Indexer:
        store = self.source
        await asyncio.to_thread(self.engine.ensure_collection, self.embedder.dim)
        model = store.get_meta(self._model_key)
        mark = int(store.get_meta(self._mark_key) or 0)
        if model != self.embedder.model:
            if model is not None:
                log.warning(
                    "index model changed from %s to %s: re-embedding everything", model, self.embedder.model
                )
            mark = 0
            store.set_meta(self._model_key, self.embedder.model)
        self.indexed_version = mark
        self._unsubscribe = self._subscribe(lambda deltas: self._wake.set())
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="crdtmem-indexer")
        return self

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.engine.close)

    async def __aenter__(self) -> Indexer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- following the store ------------------------------------------------------------------

    def current_version(self) -> int:
        """The replica's newest local version (what the index should reach)."""
        newest = self.source.query_records(include_deleted=True, limit=1)
        version = int(newest[0]["version"]) if newest else 0
        gone = self.source.erased_since(version)
        return gone[-1][1] if gone else version

    def lag(self) -> int:
        """How many versions the index is behind the store."""
        return max(0, self.current_version() - self.indexed_version)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until everything committed so far is indexed (tests, reindex, the demo): the records
        of applied batches are read back first, so their memories are indexed as they now read.
        Raises TimeoutError once the index has made no progress for ``timeout`` seconds (a slow
        embedder that keeps indexing is waited for)."""
        deadline = time.monotonic() + timeout
        if self._settle is not None:
            await self._settle()
        seen = self.indexed_version
        while self.indexed_version < self.current_version():
            if self.indexed_version != seen:
                seen, deadline = self.indexed_version, time.monotonic() + timeout
            if time.monotonic() > deadline:
                raise TimeoutError(f"index still {self.lag()} versions behind, no progress for {timeout} s")
            self._wake.set()
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=0.5)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._index_next_batch():
                    pass
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following; the mark did not move, so nothing is lost
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("indexing failed, will retry: %s", self.last_error)
                await asyncio.sleep(1.0)
                self._wake.set()
            self._idle.set()

    async def _index_next_batch(self) -> bool:
        # read on a worker thread: a batch is up to 2 MiB of records, read and decoded while writers
        # go on (SQLite releases the interpreter lock while it reads pages)
        records = await off_loop(
            functools.partial(
                self.source.query_records,
                include_deleted=True,
                since_version=self.indexed_version,
                ascending=True,
                limit=self.batch,
                max_chars=BATCH_CHARS,
            )
        )
        # forgotten memories leave the store's records: their erasures are a version stream beside
        # them, and their points go
        gone = self.source.erased_since(self.indexed_version, self.batch)
        if records:
            # read after the records: an erasure above the newest record read may have come after
            # a change the records missed, and the mark would pass that change; it waits a batch
            newest = int(records[-1]["version"])
            gone = [(doc_id, version) for doc_id, version in gone if version <= newest]
        elif gone:
            changed: bool = await off_loop(self._changed_since_mark)
            if changed:  # a change came in between the two reads, below the erasures: read again
                return True
        if not records and not gone:
            return False
        full = True  # (a short batch may have been cut by its size: read until one is empty)
        changes = sorted(
            [(int(r["version"]), r["id"], r) for r in records] + [(v, d, None) for d, v in gone],
            key=lambda change: change[0],
        )[: self.batch]
        upto = changes[-1][0]
        memories = self._memories([r for _, _, r in changes if r is not None])
        if memories:
            await self._write(memories)
        forgotten = [doc_id for _, doc_id, r in changes if r is None]
        if forgotten and self.shared:  # a removed point could not refuse a slower node's old state
            erased = [self._erased_point(doc_id) for doc_id in forgotten]
            self.points_written += await off_loop(functools.partial(self.engine.upsert, erased))
        elif forgotten:
            await off_loop(functools.partial(self.engine.delete, forgotten))
        self.indexed_version = upto
        await off_loop(functools.partial(self.source.set_meta, self._mark_key, str(upto)))
        self.indexed_at = time.time()
        self.batches += 1
        return full

    def _changed_since_mark(self) -> bool:
        """Whether a record changed after the mark (read after the erasures: with none, every
        erasure read stands alone above the mark)."""
        return bool(
            self.source.query_records(
                include_deleted=True, since_version=self.indexed_version, ascending=True, limit=1
            )
        )

    def _memories(self, records: Sequence[dict[str, Any]]) -> list[Memory]:
        """The memories to index from store records: as they are, or (shared mode) materialized from
        the stored state with its revision as their version. A memory whose state is gone is left
        out (nothing to index; verify() reports a point that lingers)."""
        if not self.shared:
            return [Memory.from_dict(r) for r in records]
        memories = []
        for record in records:
            state = self.source.load_state(record["id"])
            if state is None:
                continue
            doc = MemoryDoc.from_state(record["id"], state, _READ_ONLY_CLIENT)
            memories.append(doc.materialize(revision_of(doc.doc)))
        return memories

    def _erased_point(self, memory_id: str) -> Point:
        """Shared mode: what stands for a forgotten memory. No content, a fixed vector, deleted, and
        :data:`ERASED_VERSION`, above every revision: no node's upsert of the memory's content,
        whatever state it still holds, can replace it, and the id is never used again."""
        vector = [1.0] + [0.0] * (self.embedder.dim - 1)
        return Point(memory_id, vector, erased_payload(memory_id, self.embedder.model))

    def _keeps(self, memory: Memory) -> bool:
        """Whether the memory has a point: an indexable one, or (shared mode) any, as a tombstone."""
        return self.shared or indexable(memory)

    async def _write(self, memories: Sequence[Memory]) -> None:
        keep = [m for m in memories if self._keeps(m)]
        drop = [m.id for m in memories if not self._keeps(m)]
        texts = [memory_text(m) for m in keep]
        if self.shared and keep:
            keep, texts = await self._not_yet_indexed(keep, texts)
        own = [self._caller_vector(m) for m in keep]
        embedded = iter(await self._embed([t for t, v in zip(texts, own, strict=True) if v is None]))
        vectors = [v if v is not None else next(embedded) for v in own]
        points = [
            Point(m.id, vector, payload(m, self.embedder.model, text))
            for m, vector, text in zip(keep, vectors, texts, strict=True)
        ]
        if points:
            written = await off_loop(functools.partial(self.engine.upsert, points))
            self.points_written += written
            self.points_refused += len(points) - written
        if drop:
            await off_loop(functools.partial(self.engine.delete, drop))

    async def _not_yet_indexed(
        self, memories: Sequence[Memory], texts: Sequence[str]
    ) -> tuple[list[Memory], list[str]]:
        """The memories (and their texts) the shared collection does not hold yet at their revision:
        embedding the others would only be refused (a newer revision) or repeat another node's work
        (the same revision, model and text). The engine's conditional upsert still decides."""
        stored = await asyncio.to_thread(self.engine.payloads, [m.id for m in memories])
        keep: list[Memory] = []
        kept_texts: list[str] = []
        for memory, text in zip(memories, texts, strict=True):
            held = stored.get(memory.id)
            if held is not None and int(held["version"]) > memory.version:
                self.points_refused += 1
            elif (
                held is not None
                and int(held["version"]) == memory.version
                and held.get("model") == self.embedder.model
                and held.get("text_hash") == text_hash(text)
            ):
                self.points_skipped += 1
            else:
                keep.append(memory)
                kept_texts.append(text)
        return keep, kept_texts

    def _caller_vector(self, memory: Memory) -> list[float] | None:
        """The memory's own vector (``set_embedding``, ``add(embedding=)``) when the index's model
        made it: used as it is, normalised, instead of embedding the text."""
        vector = memory.embedding
        if (
            vector is None
            or memory.embedding_model != self.embedder.model
            or len(vector) != self.embedder.dim
        ):
            return None
        norm = math.sqrt(math.fsum(x * x for x in vector))
        return [x / norm for x in vector] if norm > 0.0 else None

    async def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        digests = [text_hash(t) for t in texts]
        vectors: dict[str, list[float]] = {}
        for digest in digests:
            cached = self._vectors.get(digest)
            if cached is not None:
                vectors[digest] = cached
        missing = {d: t for d, t in zip(digests, texts, strict=True) if d not in vectors}
        if missing:
            fresh = await asyncio.to_thread(self.embedder.embed, list(missing.values()))
            for digest, vector in zip(missing, fresh, strict=True):
                vectors[digest] = vector
                self._vectors.put(digest, vector)
        return [vectors[d] for d in digests]

    # -- search -------------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        flt: SearchFilter,
        limit: int = 10,
        *,
        where: Where | None = None,
        threshold: float | None = None,
        offset: int = 0,
    ) -> list[SearchResult]:
        """The ``limit`` memories nearest to ``query`` that pass ``flt`` and the record filter
        ``where``, best first, after the first ``offset`` of them, scoring at least ``threshold``
        (by default: above 0 and at least the embedder's ``min_score``, if it has one, the lexical
        default's noise floor; -1 keeps all).

        The store selects the memories ``where`` admits (at most :data:`FILTER_IDS` of them; the
        engine then ranks only those); past that, the engine's nearest :data:`FILTER_SCAN` points
        are read and filtered one by one."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be an int between 1 and 1000")
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 1000 - limit:
            raise InvalidInput("offset must be an int from 0, with offset + limit at most 1000")
        hits, flt, floor = await self._hits(query, flt, where, threshold, offset + limit)
        results: list[SearchResult] = []
        skipped = 0
        for hit in hits:
            if hit.score < floor:
                break  # best first: the rest score lower
            memory = self._passing(hit.id, flt, where)
            if memory is None:
                continue
            if skipped < offset:
                skipped += 1
                continue
            results.append(SearchResult(memory, hit.score, self.embedder.model))
            if len(results) == limit:
                break
        return results

    async def count(
        self, query: str, flt: SearchFilter, *, where: Where | None = None, threshold: float | None = None
    ) -> int:
        """How many memories :meth:`search` finds for ``query`` over all its pages (at most 1000)."""
        hits, flt, floor = await self._hits(query, flt, where, threshold, FILTER_SCAN)
        above = [hit for hit in hits if hit.score >= floor]
        if where is None or flt.ids is not None:
            return len(above)  # the engine applied every condition
        return sum(1 for hit in above if self._passing(hit.id, flt, where) is not None)

    async def _hits(
        self, query: str, flt: SearchFilter, where: Where | None, threshold: float | None, fetch: int
    ) -> tuple[list[Hit], SearchFilter, float]:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("search needs a non-empty query string")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1
        ):
            raise InvalidInput("threshold must be a number between -1 and 1 (a cosine similarity)")
        if where is not None:
            ids = self.source.query_ids(
                user_id=flt.user_id,
                tenant_id=flt.tenant_id,
                kind=flt.kind,
                include_deleted=flt.include_deleted,
                where=where,
                limit=FILTER_IDS + 1,
            )
            if len(ids) <= FILTER_IDS:
                flt = dataclasses.replace(flt, ids=tuple(ids))
            else:
                fetch = FILTER_SCAN
        (vector,) = await self._embed([query])  # cached: the next page embeds nothing
        hits = await asyncio.to_thread(self.engine.search, vector, flt, fetch)
        if threshold is None:  # nothing unrelated: above 0, and above the embedder's noise floor
            floor = max(float(getattr(self.embedder, "min_score", 0.0)), math.nextafter(0.0, 1.0))
        else:
            floor = float(threshold)
        return hits, flt, floor

    def _passing(self, memory_id: str, flt: SearchFilter, where: Where | None) -> Memory | None:
        try:
            record = self.source.load_record(memory_id)
        except DamagedMemory as exc:  # quarantined by the replica; the other hits are served
            report = getattr(self.source, "on_damaged", None)
            if report is not None:
                report(exc)
            return None
        if record is None:
            return None  # an orphan point: the next verify/rebuild removes it
        if not matches(where, record):
            return None
        memory = Memory.from_dict(record)
        if not flt.include_conflicted and memory.conflicted:
            return None
        if not indexable(memory) and not flt.include_deleted:
            return None
        return memory

    # -- maintenance --------------------------------------------------------------------------

    async def verify(self) -> Verification:
        """Compare what the engine holds with the store, point by point: no missing, stale, orphan or
        mismatched points means ok."""
        expected: dict[str, dict[str, Any]] = {}
        for memory in self._memories(self.source.query_records(include_deleted=True)):
            if self._keeps(memory):
                expected[memory.id] = payload(memory, self.embedder.model, memory_text(memory))
        if self.shared:  # the fleet's other memories are not this node's to judge
            indexed = await asyncio.to_thread(self.engine.payloads, list(expected))
        else:
            indexed = await asyncio.to_thread(self.engine.payloads)
        missing = sorted(set(expected) - set(indexed))
        both = set(expected) & set(indexed)
        stale = sorted(i for i in both if indexed[i]["version"] < expected[i]["version"])
        ahead = sorted(i for i in both if indexed[i]["version"] > expected[i]["version"])
        mismatched = sorted(i for i in both - set(stale) - set(ahead) if disagrees(indexed[i], expected[i]))
        orphans = sorted(set(indexed) - set(expected))
        return Verification(
            len(expected),
            len(indexed),
            tuple(missing),
            tuple(stale),
            tuple(orphans),
            tuple(mismatched),
            tuple(ahead),
        )

    async def rebuild(self, progress: Progress | None = None) -> Verification:
        """Re-embed and re-upsert every memory from the store, drop orphans, then verify."""
        if self._task is not None:  # returns once the engine write the task had in flight landed
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        records = self.source.query_records(include_deleted=True, ascending=True)
        total = len(records)
        done = 0
        for start in range(0, total, self.batch):
            chunk = records[start : start + self.batch]
            await self._write(self._memories(chunk))
            done += len(chunk)
            if progress:
                progress(done, total)
        if not self.shared:  # a shared collection's other points belong to the rest of the fleet
            present = {m.id for m in map(Memory.from_dict, records) if indexable(m)}
            indexed = await asyncio.to_thread(self.engine.versions)
            orphans = sorted(set(indexed) - present)
            if orphans:
                await off_loop(functools.partial(self.engine.delete, orphans))
        if records:
            self.indexed_version = max(int(r["version"]) for r in records)
            self.source.set_meta(self._mark_key, str(self.indexed_version))
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="crdtmem-indexer")
        return await self.verify()

    def status(self) -> dict[str, Any]:
        return {
            "engine": self.engine.name,
            "model": self.embedder.model,
            "indexed_version": self.indexed_version,
            "lag_versions": self.lag(),
            "seconds_since_indexed": round(time.time() - self.indexed_at, 3),
            "shared": self.shared,
            "points_written": self.points_written,
            "points_refused": self.points_refused,
            "points_skipped": self.points_skipped,
            "last_error": self.last_error,
        }
