"""Semantic search over merged memories: embedders, vector engines, and the indexer that keeps the
engine equal to the store.

    async with Replica("phone.db", replica_id="phone", index=True) as r:
        await r.add("User prefers dark mode", user_id="u1")
        await r.index.wait_idle()
        hits = await r.search("what theme does the user like?", user_id="u1")

Layout::

    base.py        the ports: Embedder, VectorEngine, Point, SearchFilter, Hit
    embedders.py   the offline default (hashing), MiniLM via sentence-transformers, fastembed
    engines/       Qdrant Edge (embedded), qdrant-client (local mode or a server by URL), in-memory
    indexer.py     follows the store in version order; search, verify, rebuild
    points.py      what a point holds: the bounded text a memory is embedded by, its payload
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .base import Embedder, Hit, Point, RecordSource, SearchFilter, Settle, Subscribe, VectorEngine
from .indexer import Indexer, SearchResult, Verification

__all__ = [
    "Embedder",
    "Hit",
    "IndexSettings",
    "Indexer",
    "Point",
    "SearchFilter",
    "SearchResult",
    "VectorEngine",
    "Verification",
    "open_indexer",
]


ENV_QDRANT_URL = "CRDTMEM_QDRANT_URL"
ENV_QDRANT_API_KEY = "CRDTMEM_QDRANT_API_KEY"
ENV_QDRANT_COLLECTION = "CRDTMEM_QDRANT_COLLECTION"


@dataclass
class IndexSettings:
    """How a replica indexes its memories.

    Args:
        engine: "edge" (Qdrant Edge, embedded; the default), "qdrant-local" (qdrant-client local
            mode), "memory" (in-process, exact; tests), or a Qdrant server URL.
        path: where an embedded engine keeps its files; default ``{db}.index`` next to the replica's
            SQLite file (in-memory replicas use the "memory" engine).
        embedder: "hashing" (offline default, lexical), "minilm" (all-MiniLM-L6-v2, semantic; needs
            the ``minilm`` extra), "fastembed:<model>", or an Embedder object.
        api_key: for a Qdrant server.
        batch: memories per embedding/upsert batch.
        collection: the collection's name, used as given; None: ``crdtmem-{dim}`` (one collection per
            vector size, so another embedder starts a fresh one).
        shared: whether other nodes index into the same collection: points then carry revisions,
            comparable across nodes, and deleted memories leave tombstones (see
            ``docs/scale-out.md``). None: shared when ``engine`` is a server URL. Every node of a
            shared collection must use the same embedder.
    """

    engine: str | None = None
    path: str | Path | None = None
    embedder: str | Embedder = "hashing"
    api_key: str | None = None
    batch: int = 256
    collection: str | None = None
    shared: bool | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: object) -> IndexSettings:
        """Settings from ``given`` (keyword arguments of this class), with a Qdrant server's URL,
        API key and collection taken from ``$CRDTMEM_QDRANT_URL``, ``$CRDTMEM_QDRANT_API_KEY`` and
        ``$CRDTMEM_QDRANT_COLLECTION`` where ``given`` leaves them None."""
        env = os.environ if environ is None else environ
        settings = cls(**given)  # type: ignore[arg-type]
        return replace(
            settings,
            engine=settings.engine or env.get(ENV_QDRANT_URL) or None,
            api_key=settings.api_key or env.get(ENV_QDRANT_API_KEY) or None,
            collection=settings.collection or env.get(ENV_QDRANT_COLLECTION) or None,
        )

    @property
    def is_shared(self) -> bool:
        if self.shared is not None:
            return self.shared
        return self.engine is not None and self.engine.startswith(("http://", "https://"))


def open_indexer(
    db_path: str | Path | None,
    source: RecordSource,
    subscribe: Subscribe,
    settings: IndexSettings,
    *,
    settle: Settle | None = None,
) -> Indexer:
    """An indexer for the replica whose SQLite file is ``db_path`` (None: in memory); ``settle``
    brings the source's records up to date with what it committed (see :meth:`Indexer.wait_idle`)."""
    from .embedders import load_embedder
    from .engines import DEFAULT_ENGINE, open_engine

    spec = settings.engine or (DEFAULT_ENGINE if db_path is not None else "memory")
    path = settings.path
    if path is None and db_path is not None:
        path = Path(f"{db_path}.index")
    embedder = load_embedder(settings.embedder) if isinstance(settings.embedder, str) else settings.embedder
    # by default one collection per vector size: a model of another size starts a fresh collection
    # (and, like any model change, re-embeds everything) instead of failing on the old one
    collection = settings.collection or f"crdtmem-{embedder.dim}"
    engine = open_engine(spec, path, collection=collection, api_key=settings.api_key)
    return Indexer(
        source,
        subscribe,
        engine,
        embedder,
        batch=settings.batch,
        name=collection,
        shared=settings.is_shared,
        settle=settle,
    )
