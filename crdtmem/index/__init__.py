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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import Embedder, Hit, Point, RecordSource, SearchFilter, Subscribe, VectorEngine
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
    """

    engine: str | None = None
    path: str | Path | None = None
    embedder: str | Embedder = "hashing"
    api_key: str | None = None
    batch: int = 256
    collection: str = "crdtmem"


def open_indexer(
    db_path: str | Path | None, source: RecordSource, subscribe: Subscribe, settings: IndexSettings
) -> Indexer:
    """An indexer for the replica whose SQLite file is ``db_path`` (None: in memory)."""
    from .embedders import load_embedder
    from .engines import DEFAULT_ENGINE, open_engine

    spec = settings.engine or (DEFAULT_ENGINE if db_path is not None else "memory")
    path = settings.path
    if path is None and db_path is not None:
        path = Path(f"{db_path}.index")
    embedder = load_embedder(settings.embedder) if isinstance(settings.embedder, str) else settings.embedder
    # one collection per vector size: a model of another size starts a fresh collection (and, like
    # any model change, re-embeds everything) instead of failing on the old one
    collection = f"{settings.collection}-{embedder.dim}"
    engine = open_engine(spec, path, collection=collection, api_key=settings.api_key)
    return Indexer(source, subscribe, engine, embedder, batch=settings.batch, name=collection)
