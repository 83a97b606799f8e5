"""mem0's ``AsyncMemory`` on a crdtmem :class:`~crdtmem.engine.replica.Replica`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ..clock import Hlc
from ..document.memory import UNSET
from ..document.records import Memory as Record
from ..engine.replica import Replica
from ..errors import InvalidInput, NotFound
from ._shapes import (
    Extractor,
    clean_metadata,
    entity_ids,
    expiration_of,
    item,
    messages_of,
    op_text,
    scoped_filters,
    settings,
    top_k_of,
    unexpired,
)

_PAGE = 200


class AsyncMemory:
    """mem0's ``AsyncMemory``: the same methods as :class:`Memory`, as coroutines.

    Args:
        config: ``{"path": SQLite file, "replica_id": ..., "embedder": "hashing" | "minilm" |
            an Embedder, "index": IndexSettings, "channels": [...], "extractor": Extractor}``; mem0's
            ``history_db_path`` names the file too; its ``vector_store``, ``llm`` and ``version`` are
            ignored (crdtmem brings its own index and no LLM).
        replica: use this started replica instead (opened with ``index=``) and leave it open on close.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, *, replica: Replica | None = None):
        chosen = settings(config)
        self.extractor: Extractor | None = chosen.pop("extractor", None)
        self._settings = chosen
        self._own = replica is None
        self.replica: Replica | None = replica
        self._opening: asyncio.Lock | None = None

    @classmethod
    def from_config(cls, config_dict: Mapping[str, Any]) -> AsyncMemory:
        return cls(config_dict)

    async def _open(self) -> Replica:
        if self.replica is not None:
            return self.replica
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.replica is None:
                self.replica = await Replica(**self._settings).start()
        return self.replica

    async def aclose(self) -> None:
        """Stop the replica this object opened (not one it was given)."""
        if self._own and self.replica is not None:
            replica, self.replica = self.replica, None
            await replica.stop()

    def close(self) -> asyncio.Task[None] | None:
        """mem0's ``close()``: stops the replica (awaitable; ``await m.aclose()`` is the same)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return loop.create_task(self.aclose())

    async def __aenter__(self) -> AsyncMemory:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- writes -------------------------------------------------------------------------------

    async def add(
        self,
        messages: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        infer: bool | None = None,
        memory_type: str | None = None,
        prompt: str | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
        expiration_date: Any = None,
    ) -> dict[str, Any]:
        """Store memories from ``messages`` (a string, one ``{"role", "content"}`` message or a list
        of them) → ``{"results": [{"id", "memory", "event", ...}]}``.

        ``infer``: True runs the configured extractor; False stores each non-system message as a
        memory (with its ``role``, and ``actor_id`` from a message's ``name``); None (the default)
        infers when an extractor is configured. ``embedding`` is the caller's vector for a single
        message (see :meth:`Replica.add`). ``expiration_date`` (``YYYY-MM-DD``) hides the memories
        from ``search`` and ``get_all`` after that day unless they pass ``show_expired=True``."""
        ids = entity_ids(user_id, agent_id, run_id, "add")
        if memory_type is not None:
            raise InvalidInput("procedural memories (memory_type) need an LLM; crdtmem bundles none")
        base = clean_metadata(metadata)
        if expiration_date is not None:
            base["expiration_date"] = expiration_of(expiration_date)
        listed = messages_of(messages)
        if infer is None:
            infer = self.extractor is not None
        replica = await self._open()
        if infer:
            return {"results": await self._infer(replica, listed, ids, base)}
        kept = [m for m in listed if m.get("role") != "system" and m.get("content") is not None]
        if embedding is not None and len(kept) != 1:
            raise InvalidInput("embedding= goes with a single message")
        results = []
        for message in kept:
            extra = {"role": message.get("role", "user")}
            if message.get("name"):
                extra["actor_id"] = message["name"]
            memory = await self._create(
                replica, message["content"], ids, {**base, **extra}, embedding, embedding_model
            )
            results.append(
                {
                    "id": memory.id,
                    "memory": memory.content,
                    "event": "ADD",
                    "actor_id": extra.get("actor_id"),
                    "role": extra["role"],
                }
            )
        return {"results": results}

    async def _create(
        self,
        replica: Replica,
        content: Any,
        ids: dict[str, str],
        metadata: dict[str, Any],
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> Record:
        return await replica.add(
            content,
            user_id=ids.get("user_id"),
            agent_id=ids.get("agent_id"),
            session_id=ids.get("run_id"),
            metadata=metadata,
            embedding=embedding,
            embedding_model=embedding_model,
        )

    async def _infer(
        self, replica: Replica, messages: list[dict[str, Any]], ids: dict[str, str], base: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if self.extractor is None:
            raise InvalidInput(
                "add(infer=True) needs an extractor: crdtmem bundles no LLM. Configure one with "
                "Memory.from_config({'extractor': my_extractor}) (see crdtmem.mem0.Extractor), "
                "or pass infer=False to store the messages as they are"
            )
        text = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")
        existing = []
        if text.strip():
            existing = (await self.search(text, filters=dict(ids), top_k=10))["results"]
        operations = self.extractor(messages, existing)
        if inspect.isawaitable(operations):
            operations = await operations
        known = {item["id"] for item in existing}
        results = []
        for op in operations:
            event = str(op.get("event", "")).upper()
            if event == "ADD":
                memory = await self._create(replica, op_text(op), ids, dict(base))
                results.append({"id": memory.id, "memory": memory.content, "event": "ADD"})
            elif event in ("UPDATE", "DELETE"):
                target = str(op.get("id"))
                if target not in known:
                    raise InvalidInput(
                        f"the extractor's {event} names {target!r}, not one of the memories it was shown"
                    )
                before = await replica.get(target)
                if event == "UPDATE":
                    after = await replica.update(target, content=op_text(op))
                    results.append(
                        {
                            "id": target,
                            "memory": after.content,
                            "event": "UPDATE",
                            "previous_memory": before.content,
                        }
                    )
                else:
                    await replica.delete(target)
                    results.append({"id": target, "memory": before.content, "event": "DELETE"})
            elif event != "NONE":
                raise InvalidInput(
                    f"unknown extractor event {event!r:.40}; expected ADD, UPDATE, DELETE or NONE"
                )
        return results

    async def update(
        self,
        memory_id: str,
        text: Any = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        data: Any = None,
        expiration_date: Any = UNSET,
    ) -> dict[str, str]:
        """Replace a memory's text (``text``, or mem0's older ``data``) and/or merge ``metadata``;
        ``expiration_date`` sets the day after which it is hidden (None: never)."""
        if text is None:
            text = data
        if text is None and metadata is None and expiration_date is UNSET:
            raise InvalidInput("At least one of text, metadata, or expiration_date must be provided.")
        replica = await self._open()
        memory = await self._live(replica, memory_id)
        if memory is None:
            raise InvalidInput(f"Memory with id {memory_id} not found. Please provide a valid 'memory_id'")
        changes: dict[str, Any] = {"metadata": clean_metadata(metadata)}
        if expiration_date is None:
            changes["remove_metadata"] = ["expiration_date"]
        elif expiration_date is not UNSET:
            changes["metadata"]["expiration_date"] = expiration_of(expiration_date)
        changes["metadata"] = changes["metadata"] or None
        if text is not None:
            changes["content"] = text
        await replica.update(memory_id, **changes)
        return {"message": "Memory updated successfully!"}

    async def delete(self, memory_id: str) -> dict[str, str]:
        replica = await self._open()
        if await self._live(replica, memory_id) is None:
            raise InvalidInput(f"Memory with id {memory_id} not found")
        await replica.delete(memory_id)
        return {"message": "Memory deleted successfully!"}

    async def delete_all(
        self, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> dict[str, str]:
        """Delete every memory of the given user, agent and/or run (at least one of them)."""
        ids = {k: v for k, v in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)) if v}
        if not ids:
            raise InvalidInput(
                "At least one filter is required to delete all memories. "
                "If you want to delete all memories, use the `reset()` method."
            )
        entity_ids(user_id, agent_id, run_id, "delete_all")
        await self._delete_where(ids)
        return {"message": "Memories deleted successfully!"}

    async def reset(self) -> None:
        """Delete every memory this replica holds (the deletes replicate to its peers)."""
        await self._delete_where(None)

    async def _delete_where(self, filters: dict[str, Any] | None) -> None:
        replica = await self._open()
        while True:
            page = await replica.list(filters=filters, limit=_PAGE)
            if not page:
                return
            for memory in page:
                await replica.delete(memory.id)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, memory_id: str) -> dict[str, Any] | None:
        """The memory as mem0 shows it, or None if there is none (or it was deleted)."""
        replica = await self._open()
        memory = await self._live(replica, memory_id)
        return None if memory is None else {**item(memory), "score": None}

    async def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        limit: int | None = None,
        show_expired: bool = False,
    ) -> dict[str, Any]:
        """The newest ``top_k`` (default 20) memories that pass ``filters`` (which, or the
        arguments, name at least one of user_id, agent_id and run_id) → ``{"results": [...]}``;
        expired ones only with ``show_expired``."""
        where = unexpired(scoped_filters(filters, user_id, agent_id, run_id, "get_all"), show_expired)
        count = top_k_of(top_k, limit)
        replica = await self._open()
        memories = await replica.list(filters=where, limit=count) if count else []
        return {"results": [item(m) for m in memories]}

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        top_k: int | None = None,
        limit: int | None = None,
        filters: Mapping[str, Any] | None = None,
        threshold: float | None = None,
        rerank: bool = False,
        explain: bool = False,
        show_expired: bool = False,
    ) -> dict[str, Any]:
        """The ``top_k`` (default 20) memories nearest to ``query`` that pass ``filters`` and score
        at least ``threshold`` (0 to 1; by default anything above 0) → ``{"results": [{..., "score"}]}``.
        ``rerank`` is accepted and ignored (no reranker is bundled); ``explain`` adds each result's
        ``score_details``; expired memories only with ``show_expired``."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("Invalid query: cannot be empty or whitespace-only.")
        where = unexpired(scoped_filters(filters, user_id, agent_id, run_id, "search"), show_expired)
        count = top_k_of(top_k, limit)
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1
        ):
            raise InvalidInput(f"Invalid threshold: {threshold!r}. Must be between 0 and 1 (inclusive).")
        replica = await self._open()
        if not count:
            return {"results": []}
        if replica.index is None:
            raise InvalidInput("this replica has no index; open it with Replica(..., index=True)")
        await replica.index.wait_idle()  # what was added before the search is found by it
        found = await replica.search(
            query.strip(), filters=where, limit=min(count, 1000), threshold=threshold
        )
        results = [{**item(r.memory), "score": r.score} for r in found]
        if explain:
            for result, hit in zip(results, found, strict=True):
                result["score_details"] = {
                    "semantic_score": hit.score,
                    "model": hit.model,
                    "lexical": hit.lexical,
                    "threshold": threshold,
                    "final_score": hit.score,
                }
        return {"results": results}

    async def history(self, memory_id: str) -> list[dict[str, Any]]:
        """The memory's changes, oldest first: ``{"id", "memory_id", "old_memory", "new_memory",
        "event", "created_at", "updated_at", "is_deleted", "actor_id", "role"}``."""
        replica = await self._open()
        try:
            entries = await replica.history(memory_id)
        except NotFound:
            return []
        found: list[dict[str, Any]] = []
        previous: Any = None
        created = None
        for entry in entries:
            when = Hlc.decode(entry.hlc).isoformat()
            created = created or when
            if not found or (previous is None and not entry.deleted and found[-1]["event"] == "DELETE"):
                event = "ADD"
            elif entry.deleted:
                if found[-1]["event"] == "DELETE":
                    continue
                event = "DELETE"
            else:
                event = "UPDATE"
            found.append(
                {
                    "id": f"{entry.origin}:{entry.hlc}",
                    "memory_id": memory_id,
                    "old_memory": previous,
                    "new_memory": None if entry.deleted else entry.content,
                    "event": event,
                    "created_at": created,
                    "updated_at": when,
                    "is_deleted": entry.deleted,
                    "actor_id": entry.metadata.get("actor_id"),
                    "role": entry.metadata.get("role"),
                }
            )
            previous = None if entry.deleted else entry.content
        return found

    async def _live(self, replica: Replica, memory_id: str) -> Record | None:
        try:
            memory = await replica.get(memory_id)
        except NotFound:
            return None
        return None if memory.deleted else memory
