"""Search: memories by meaning, from the index that follows the replica (:mod:`crdtmem.index`).

:class:`Search` is part of :class:`~crdtmem.engine.replica.Replica` (which inherits it) and reads
only the parts it declares. Its scope and grant filters are those of :mod:`.reads`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..document.query import Where
from ..document.query import parse as parse_filters
from ..document.records import Kind
from ..errors import InvalidInput
from ..index import Indexer, SearchFilter, SearchResult
from .materialize import Materializer
from .opened import Opened
from .reads import with_readable


class Search(Opened):
    """:meth:`search` and :meth:`search_count` (the replica needs ``index=``)."""

    index: Indexer | None
    _materializer: Materializer

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: Kind | None = None,
        tags: Sequence[str] = (),
        topic: str | None = None,
        limit: int = 10,
        include_conflicted: bool = True,
        filters: Mapping[str, Any] | None = None,
        channels: Sequence[str] | None = None,
        threshold: float | None = None,
        offset: int = 0,
        readable: Sequence[str] | None = None,
    ) -> list[SearchResult]:
        """Memories by meaning, best first, each with its score (cosine similarity: 1 is the same
        text, 0 or less unrelated), restricted by every given scope filter and by ``filters``
        (mem0's form, as in :meth:`list`). ``threshold`` drops results that score lower; without
        one, unrelated results are dropped (0 or less, or under the embedder's noise floor: 0.1 for
        the lexical default). ``offset`` skips the first results (a later page; offset + limit is
        at most 1000); ``readable`` keeps memories on a channel these grants match (as in
        :meth:`list`). Needs ``index=``."""
        index, flt, where = await self._search_args(
            user_id, tenant_id, kind, tags, topic, include_conflicted, filters, channels, readable
        )
        return await index.search(query, flt, limit, where=where, threshold=threshold, offset=offset)

    async def search_count(
        self,
        query: str,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: Kind | None = None,
        tags: Sequence[str] = (),
        topic: str | None = None,
        include_conflicted: bool = True,
        filters: Mapping[str, Any] | None = None,
        channels: Sequence[str] | None = None,
        threshold: float | None = None,
        readable: Sequence[str] | None = None,
    ) -> int:
        """How many results :meth:`search` has for these arguments over all its pages (at most 1000)."""
        index, flt, where = await self._search_args(
            user_id, tenant_id, kind, tags, topic, include_conflicted, filters, channels, readable
        )
        return await index.count(query, flt, where=where, threshold=threshold)

    async def _search_args(
        self,
        user_id: str | None,
        tenant_id: str | None,
        kind: Kind | None,
        tags: Sequence[str],
        topic: str | None,
        include_conflicted: bool,
        filters: Mapping[str, Any] | None,
        channels: Sequence[str] | None,
        readable: Sequence[str] | None,
    ) -> tuple[Indexer, SearchFilter, Where | None]:
        self._check_open()
        if self.index is None:
            raise InvalidInput(
                "this replica has no index: open it with Replica(..., index=True) "
                "(a node indexes unless started with --no-index)"
            )
        await self._materializer.settle()  # results are read from the store's records
        flt = SearchFilter.build(
            user_id=user_id,
            tenant_id=tenant_id,
            kind=kind,
            topic=topic,
            tags=tags,
            channels=channels,
            include_conflicted=include_conflicted,
        )
        return self.index, flt, with_readable(parse_filters(filters), readable)
