"""A LangGraph store on a crdtmem replica: :class:`CrdtmemStore`, a ``langgraph.store.base.BaseStore``.

LangGraph keeps long-term memory in a store: JSON objects under a namespace (a tuple of labels) and
a key. Here each item is a crdtmem ``fact`` whose content is the object, so an item put on one replica
reaches every replica that shares its scope, and two puts of one item that did not see each other
are flagged as a conflict instead of one silently overwriting the other::

    (namespace, key)      one memory, id langgraph/{channels}/{label}/.../{key}: the same on every
                          replica, so puts of one item anywhere land on one memory
    value                 the fact's content (a register: concurrent puts are a conflict listed by
                          replica.conflicts(); reads return the value with the highest timestamp)
    namespace -> scope    the memory's scope (user, tenant, topics), hence its channels: who it syncs
                          to and which tokens may read and write it; ``scope=`` decides, e.g.
                          namespace_scope(user=1) puts ("memories", "alice@example.com") in
                          alice@example.com's user scope
    delete                deletes the memory; a later put of the key revives it (a new incarnation)
    search                namespace prefix and filters on the value's fields; with a query, by
                          meaning through the replica's index (Replica(..., index=...)), best first,
                          each item with its score
    list_namespaces       prefix/suffix (with "*" labels), max_depth, limit, offset

Ids are escaped parts joined by ``/`` (``%`` and ``/`` inside a part written as ``%25``, ``%2F``);
one longer than an app id may be (256 characters) is ``langgraph#`` and the SHA-256 of its parts.

The store runs its operations on the replica's event loop: pass an async :class:`Replica` and use
the async methods (``aput``, ``aget``, ``asearch``, ...) on its loop and the blocking ones from other
threads, or pass a :class:`SyncReplica` and use either from anywhere. A batch runs like LangGraph's
own ``InMemoryStore`` runs one: reads see the state before the batch's puts, and of several puts of
one item the last counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..extras import require

require("langgraph", "langgraph", "langgraph (for crdtmem.integrations.langgraph)")

from langgraph.store.base import (  # noqa: E402
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from ..clock import Hlc  # noqa: E402
from ..document.records import Memory, Scope  # noqa: E402
from ..engine.replica import Replica  # noqa: E402
from ..engine.sync_api import SyncReplica  # noqa: E402
from ..errors import InvalidInput, MemoryExists, NotFound  # noqa: E402
from ..ids import MAX_ID_LENGTH, escape_id  # noqa: E402

__all__ = ["CrdtmemStore", "LangGraphEmbedder", "Namespace", "NamespaceScope", "ScopeOf", "namespace_scope"]

Namespace = tuple[str, ...]
ScopeOf = Callable[[Namespace], Scope]
"""Decides the scope (and so the channels) of an item from its namespace."""

PREFIX = "langgraph"
"""First part of every item's memory id, and the metadata key that records its namespace and key."""

_INDEX_WAIT_S = 5.0
"""How long a search by query waits for the index to take the writes made before it."""

_MAX_SEARCH = 1000
"""Most hits one index query may return (the index's own bound)."""


def namespace_scope(
    *, user: int | None = None, tenant: int | None = None, topics: Sequence[int] = (), shared: bool = False
) -> NamespaceScope:
    """A scope read from an item's namespace labels: ``user``, ``tenant`` and ``topics`` are
    positions in the namespace. ``namespace_scope(user=1)`` puts ``("memories", "alice")`` in user
    ``alice``'s scope (channel ``user:alice:memories``); a namespace too short for a position is
    refused."""
    return NamespaceScope(user, tenant, tuple(topics), shared)


class NamespaceScope:
    """The scope function :func:`namespace_scope` makes. A search within a namespace prefix long
    enough to hold every position reads only that scope's channel."""

    def __init__(self, user: int | None, tenant: int | None, topics: tuple[int, ...], shared: bool):
        self.user, self.tenant, self.topics, self.shared = user, tenant, topics, shared
        positions = [at for at in (user, tenant, *topics) if at is not None]
        self.depth: int | None = None if any(at < 0 for at in positions) else max(positions, default=-1) + 1
        """How long a namespace prefix fixes the scope (None: positions counted from the end)."""

    def __call__(self, namespace: Namespace) -> Scope:
        return Scope(
            user_id=self._label(namespace, self.user, "user id") if self.user is not None else None,
            tenant_id=self._label(namespace, self.tenant, "tenant id") if self.tenant is not None else None,
            topics=tuple(self._label(namespace, at, "topic") for at in self.topics),
            shared=self.shared,
        )

    @staticmethod
    def _label(namespace: Namespace, at: int, what: str) -> str:
        if not -len(namespace) <= at < len(namespace):
            raise InvalidInput(f"namespace {namespace!r:.200} has no label at position {at} for the {what}")
        return namespace[at]


class LangGraphEmbedder:
    """The embeddings of a LangGraph index config (``{"dims", "embed"}``: a LangChain ``Embeddings``,
    an embedding function, or a provider string) as a crdtmem embedder, so that a replica's index and
    a :class:`CrdtmemStore` given the same config embed alike::

        config = {"dims": 1536, "embed": embed_texts, "fields": ["text"]}
        replica = Replica("agent.db", index=IndexSettings(embedder=LangGraphEmbedder(config)))
        store = CrdtmemStore(replica, index=config)

    ``model`` names it in the index (default: ``langgraph/`` and the provider string or the
    function's name); vectors come out L2-normalised.
    """

    def __init__(self, config: IndexConfig, *, model: str | None = None):
        if not isinstance(config.get("dims"), int) or config["dims"] < 1:
            raise InvalidInput('an index config needs "dims", the size of its vectors')
        embed = config.get("embed")
        if embed is None:
            raise InvalidInput('an index config needs "embed": Embeddings, a function or a provider string')
        self.embeddings = ensure_embeddings(embed)
        self.dim: int = config["dims"]
        named = embed if isinstance(embed, str) else getattr(embed, "__name__", type(embed).__name__)
        self.model: str = model or f"langgraph/{named}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self.embeddings.embed_documents(list(texts))
        out = []
        for vector in vectors:
            if len(vector) != self.dim:
                raise InvalidInput(f"{self.model} made {len(vector)} numbers, not dims={self.dim}")
            norm = math.sqrt(math.fsum(x * x for x in vector))
            out.append([x / norm for x in vector] if norm > 0.0 else [0.0] * self.dim)
        return out


class CrdtmemStore(BaseStore):
    """LangGraph's ``BaseStore`` on a replica (see the module docstring for the mapping).

    Args:
        replica: an async :class:`Replica` (operations run on the loop it runs on) or a
            :class:`SyncReplica` (on its private loop).
        scope: the scope of every item (a :class:`Scope`; default: no user or tenant, the
            ``system:global`` channel), or a function of the item's namespace that returns it
            (:func:`namespace_scope`).
        index: LangGraph's index config (``{"dims", "embed", "fields"}``): every put embeds the text
            at the config's ``fields`` (default ``["$"]``, the whole value), or at the put's own
            ``index=[...]`` paths, and gives the vector to the memory; the replica's index searches
            with them when it embeds by the same config (:class:`LangGraphEmbedder`). Without it the
            replica's index embeds each item's whole value its own way.

    TTLs are not supported (``supports_ttl`` is False: a put with a ``ttl`` is refused by
    ``BaseStore``).
    """

    supports_ttl = False

    def __init__(
        self,
        replica: Replica | SyncReplica,
        *,
        scope: Scope | ScopeOf | None = None,
        index: IndexConfig | None = None,
    ):
        if isinstance(replica, SyncReplica):
            self.replica: Replica = replica.replica
            self._loop: asyncio.AbstractEventLoop | None = replica.loop
        else:
            self.replica = replica
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None  # taken from the first async call
        self._scope_of: ScopeOf
        self._channel: str | None = None
        """The one channel every item is on, when that is known (lists read only that channel)."""
        if callable(scope):
            self._scope_of = scope
        else:
            fixed = scope or Scope()
            self._scope_of = lambda _namespace: fixed
            if len(fixed.channels()) == 1:
                self._channel = fixed.channels()[0]
        self.index_config = index
        self._embedder: LangGraphEmbedder | None = None
        self._fields: list[str] = ["$"]
        if index is not None:
            self._embedder = LangGraphEmbedder(index)
            self._fields = list(index.get("fields") or ["$"])
            engine = self.replica.index
            if engine is not None and engine.embedder.model != self._embedder.model:
                raise InvalidInput(
                    f"the replica's index embeds with {engine.embedder.model}, not this config's "
                    f"{self._embedder.model}: open it with IndexSettings(embedder=LangGraphEmbedder(config))"
                )

    # -- BaseStore ----------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        loop = self._loop
        if loop is None:
            raise InvalidInput(
                "this store's replica runs on an event loop it has not seen yet: create the store on "
                "that loop, or call an async method (aput, aget, asearch, ...) there first"
            )
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise InvalidInput(
                "a blocking store method was called on the replica's own event loop, where it would "
                "wait for itself: use the async methods (aput, aget, asearch, alist_namespaces)"
            )
        return asyncio.run_coroutine_threadsafe(self._run(list(ops)), loop).result()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        running = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = running
        if running is not self._loop:  # e.g. a SyncReplica's loop, called from an app's loop
            future = asyncio.run_coroutine_threadsafe(self._run(list(ops)), self._loop)
            return await asyncio.wrap_future(future)
        return await self._run(list(ops))

    # -- operations ---------------------------------------------------------------------------

    async def _run(self, ops: list[Op]) -> list[Result]:
        for op in ops:
            if not isinstance(op, (GetOp, SearchOp, ListNamespacesOp, PutOp)):
                raise ValueError(f"Unknown operation type: {type(op)}")
            validate_op_namespace(op)
        results: list[Result] = []
        puts: dict[tuple[Namespace, str], PutOp] = {}
        listed: dict[str | None, list[Memory]] = {}  # by the channel read (None: all), once a batch
        for op in ops:
            if isinstance(op, GetOp):
                results.append(await self._get(op.namespace, op.key))
                continue
            if isinstance(op, PutOp):
                puts[(tuple(op.namespace), op.key)] = op
                results.append(None)
                continue
            prefix = tuple(op.namespace_prefix) if isinstance(op, SearchOp) else ()
            channel = self._channel_of(prefix)
            if channel not in listed:
                listed[channel] = await self._items(channel)
            if isinstance(op, SearchOp):
                results.append(await self._search(op, listed[channel]))
            else:
                results.append(_list_namespaces(op, [_namespace_of(m) for m in listed[channel]]))
        for op in puts.values():
            await self._put(op)
        return results

    async def _get(self, namespace: Namespace, key: str) -> Item | None:
        try:
            memory = await self.replica.get(self.memory_id(namespace, key))
        except NotFound:
            return None
        if memory.deleted or not self._owns(memory):
            return None
        return Item(**_fields(memory))

    async def _put(self, op: PutOp) -> None:
        namespace = tuple(op.namespace)
        memory_id = self.memory_id(namespace, op.key)
        try:
            current: Memory | None = await self.replica.get(memory_id)
        except NotFound:
            current = None
        live = current is not None and not current.deleted
        if op.value is None:
            if live:
                await self.replica.delete(memory_id)
            return
        if not isinstance(op.value, Mapping):
            raise InvalidInput(f"a store value must be a dict, got {type(op.value).__name__}")
        value = dict(op.value)
        vector = await self._vector(value, op.index)
        if live:
            await self._update(memory_id, value, vector)
            return
        scope = self._scope_of(namespace)
        try:
            await self.replica.add(
                value,
                memory_id=memory_id,
                user_id=scope.user_id,
                tenant_id=scope.tenant_id,
                topics=scope.topics,
                shared=scope.shared,
                metadata={PREFIX: {"namespace": list(namespace), "key": op.key}},
                tags=[_prefix_tag(namespace[:depth]) for depth in range(1, len(namespace) + 1)],
                embedding=vector,
                embedding_model=self._embedder.model if vector is not None and self._embedder else None,
            )
        except MemoryExists:  # created since we looked (a remote apply)
            await self._update(memory_id, value, vector)

    async def _update(self, memory_id: str, value: dict[str, Any], vector: list[float] | None) -> None:
        await self.replica.update(memory_id, content=value)
        if vector is not None and self._embedder is not None:
            await self.replica.set_embedding(memory_id, vector, self._embedder.model)

    async def _vector(self, value: dict[str, Any], paths: Any) -> list[float] | None:
        """The vector of the text at the put's ``index`` paths (or the config's fields), all of it
        embedded as one text; None without an index config, for ``index=False``, or with no text."""
        if self._embedder is None or paths is False:
            return None
        texts = [
            text
            for path in (paths if isinstance(paths, list) else self._fields)
            for text in get_text_at_path(value, path if path == "$" else tokenize_path(path))
        ]
        if not texts:
            return None
        (vector,) = await asyncio.to_thread(self._embedder.embed, ["\n".join(texts)])
        return vector

    def _channel_of(self, prefix: Namespace) -> str | None:
        """A channel every item under ``prefix`` is on, where the store's scope tells; else None."""
        if not prefix or self._channel is not None or not isinstance(self._scope_of, NamespaceScope):
            return self._channel
        depth = self._scope_of.depth
        if depth is None or len(prefix) < depth:
            return None
        return self._scope_of(prefix).channels()[0]

    async def _items(self, channel: str | None) -> list[Memory]:
        """Every live item of this store (on ``channel``, if given), most recently updated first."""
        memories = await self.replica.list(kind="fact", channel=channel)
        mine = [m for m in memories if not m.deleted and self._owns(m)]
        mine.sort(key=lambda m: m.id)
        mine.sort(key=lambda m: m.updated_at, reverse=True)
        return mine

    async def _search(self, op: SearchOp, listed: list[Memory]) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        _check_filter(op.filter or {})
        found = [
            m
            for m in listed
            if _namespace_of(m)[: len(prefix)] == prefix and _matches(_value(m), op.filter or {})
        ]
        end = op.offset + op.limit
        if not op.query or self.replica.index is None or not found:
            return [_item(m) for m in found[op.offset : end]]
        with contextlib.suppress(TimeoutError):  # a search sees the puts before it, as in LangGraph's stores
            await self.replica.index.wait_idle(timeout=_INDEX_WAIT_S)
        wanted = {m.id: m for m in found}
        tags = [_prefix_tag(prefix)] if prefix else []
        asked = min(_MAX_SEARCH, max(end, 1) * 4)
        while True:
            hits = await self.replica.search(op.query, tags=tags, limit=asked, threshold=-1.0)
            ranked = [(wanted[h.memory.id], h.score) for h in hits if h.memory.id in wanted]
            if len(ranked) >= end or len(hits) < asked or asked >= _MAX_SEARCH:
                break
            asked = min(_MAX_SEARCH, asked * 4)
        return [_item(m, score) for m, score in ranked[op.offset : end]]

    # -- mapping ------------------------------------------------------------------------------

    def memory_id(self, namespace: Namespace, key: str) -> str:
        """The id of the memory that holds ``key`` in ``namespace`` (the same on every replica)."""
        parts = [PREFIX, ",".join(self._scope_of(tuple(namespace)).channels()), *namespace, key]
        text = "/".join(escape_id(part, "/") for part in parts)
        if len(text) <= MAX_ID_LENGTH:
            return text
        return f"{PREFIX}#" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _owns(self, memory: Memory) -> bool:
        """Whether ``memory`` is an item of this store: what it records as its namespace and key
        gives its id under this store's scopes."""
        mark = memory.metadata.get(PREFIX)
        if not isinstance(mark, dict):
            return False
        namespace, key = mark.get("namespace"), mark.get("key")
        if not isinstance(key, str) or not isinstance(namespace, list):
            return False
        if not all(isinstance(label, str) for label in namespace):
            return False
        try:
            return self.memory_id(tuple(namespace), key) == memory.id
        except InvalidInput:  # a namespace this store's scope function refuses
            return False


def _namespace_of(memory: Memory) -> Namespace:
    return tuple(memory.metadata[PREFIX]["namespace"])


def _value(memory: Memory) -> dict[str, Any]:
    """The item's value: the fact's content (a resolution may have written any JSON value there,
    which reads as ``{"value": ...}``)."""
    content = memory.content
    return content if isinstance(content, dict) else {"value": content}


def _time(hlc: str) -> datetime:
    return datetime.fromtimestamp(Hlc.decode(hlc).wall_ms / 1000, tz=UTC)


def _fields(memory: Memory) -> dict[str, Any]:
    return {
        "namespace": _namespace_of(memory),
        "key": memory.metadata[PREFIX]["key"],
        "value": _value(memory),
        "created_at": _time(memory.created_at),
        "updated_at": _time(memory.updated_at),
    }


def _item(memory: Memory, score: float | None = None) -> SearchItem:
    return SearchItem(**_fields(memory), score=score)


def _prefix_tag(namespace: Namespace) -> str:
    """The tag an item carries for each prefix of its namespace (``langgraph:{label}/{label}...``), so
    a search within a prefix asks the index for items carrying that prefix's tag."""
    return f"{PREFIX}:" + "/".join(escape_id(label, "/") for label in namespace)


def _list_namespaces(op: ListNamespacesOp, namespaces: list[Namespace]) -> list[Namespace]:
    """The namespaces (of live items) matching every condition, cut to ``max_depth``, sorted."""
    found = {ns for ns in namespaces if all(_namespace_matches(c, ns) for c in op.match_conditions or ())}
    if op.max_depth is not None:
        found = {ns[: op.max_depth] for ns in found}
    return sorted(found)[op.offset : op.offset + op.limit]


def _namespace_matches(condition: MatchCondition, namespace: Namespace) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        part = namespace[: len(path)]
    elif condition.match_type == "suffix":
        part = namespace[len(namespace) - len(path) :]
    else:
        raise ValueError(f"Unsupported match type: {condition.match_type}")
    return all(p == "*" or p == label for p, label in zip(path, part, strict=True))


def _matches(value: dict[str, Any], flt: dict[str, Any]) -> bool:
    """LangGraph's filter: every top-level field equal to the filter's, compared as JSON (nested
    objects field by field, lists item by item), or meeting its operators ($eq, $ne, $gt, $gte,
    $lt, $lte)."""
    return all(_compare(value.get(field), wanted) for field, wanted in flt.items())


_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


def _check_filter(flt: Any) -> None:
    """Refuse operators the filter does not know, whether or not any item would reach them."""
    if isinstance(flt, dict):
        for key, wanted in flt.items():
            if isinstance(key, str) and key.startswith("$") and key not in _OPERATORS:
                raise InvalidInput(
                    f"unsupported filter operator {key!r:.40}; use $eq, $ne, $gt, $gte, $lt or $lte"
                )
            _check_filter(wanted)
    elif isinstance(flt, (list, tuple)):
        for wanted in flt:
            _check_filter(wanted)


def _compare(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(value, op, operand) for op, operand in wanted.items())
        return isinstance(value, dict) and all(_compare(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(wanted)
            and all(_compare(v, w) for v, w in zip(value, wanted, strict=True))
        )
    return bool(value == wanted)


def _operator(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    try:
        left, right = float(value), float(operand)
    except (TypeError, ValueError):
        return False  # a missing or non-numeric field meets no comparison
    return {"$gt": left > right, "$gte": left >= right, "$lt": left < right, "$lte": left <= right}[operator]
