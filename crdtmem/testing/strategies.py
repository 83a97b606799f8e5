"""Hypothesis strategies for crdtmem: names, channels, memories and the operations on them.

Every operation is a small frozen dataclass with one coroutine, ``await op.apply(replica, memory_id)``,
so a test can draw a list of operations, print it when it fails (the dataclass repr is the
reproduction), and replay it on any replica::

    @given(spec=memory_specs(), ops=st.lists(operations("list")))
    ...

Values are drawn from a JSON subset that survives a round trip through Yrs and SQLite unchanged:
no NaN or infinities (they are not JSON) and no lone surrogates (they are not UTF-8).
``Operation.uniquify(token)`` rewrites the values an operation writes so that no two writes in a run
share a value; a lost write is then visible as a missing value rather than hidden by a duplicate.
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from ..crdt.dots import decode_value, encode_value
from ..document.memory import UNSET
from ..document.records import KINDS, REGISTER_KINDS, Kind, Memory, Scope

if TYPE_CHECKING:
    from ..engine.replica import Replica

__all__ = [
    "AddItems",
    "AppendMessage",
    "Delete",
    "Increment",
    "MemorySpec",
    "Operation",
    "RemoveItems",
    "Resolve",
    "Revive",
    "Update",
    "app_ids",
    "channel_names",
    "initial_content",
    "json_values",
    "memory_kinds",
    "memory_specs",
    "names",
    "operations",
    "replica_ids",
    "texts",
    "unique_value",
]

DEFAULT_USERS = ("alice", "org:bob@example.com")
DEFAULT_TENANTS = ("acme",)
DEFAULT_TOPICS = ("travel", "work & 50% fun")
"""Small pools, so that writes collide; some ids are what apps use and escape in channel names."""
DEFAULT_METADATA_KEYS = ("source", "confidence", "lang")
DEFAULT_ROLES = ("user", "assistant", "system")

_NAME_ALPHABET = string.ascii_letters + string.digits + "_.-"

# -- names and values ---------------------------------------------------------------------------


def names(*, min_size: int = 1, max_size: int = 16) -> st.SearchStrategy[str]:
    """Ids of the narrow alphabet (replica ids, and every id of protocol revision 1):
    ``[A-Za-z0-9_.-]{1,128}``."""
    return st.text(_NAME_ALPHABET, min_size=min_size, max_size=max_size)


@functools.cache
def app_ids(*, max_size: int = 24) -> st.SearchStrategy[str]:
    """App ids (user, tenant, agent, session, topic and memory ids) as apps have them: any text
    without control characters, often with the characters a channel name escapes
    (``"org:alice"``, ``"alice@example.com"``, ``"50% off"``)."""
    special = st.sampled_from("%:*, @./#")
    other = st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="\u2028\u2029")
    return st.text(st.one_of(special, other), min_size=1, max_size=max_size).filter(
        lambda s: s not in (".", "..")
    )


def replica_ids() -> st.SearchStrategy[str]:
    return names(max_size=24)


def channel_names(
    *,
    users: st.SearchStrategy[str] | None = None,
    tenants: st.SearchStrategy[str] | None = None,
    topics: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[str]:
    """Wire names of the four channel shapes (``user:u:memories``, ..., ``system:global``)."""
    return st.one_of(
        (users or names()).map(lambda u: f"user:{u}:memories"),
        (tenants or names()).map(lambda t: f"tenant:{t}:shared"),
        (topics or names()).map(lambda t: f"topic:{t}:updates"),
        st.just("system:global"),
    )


@functools.cache
def texts(*, max_size: int = 24) -> st.SearchStrategy[str]:
    """Unicode text that is valid UTF-8 (no lone surrogates)."""
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=max_size)


@functools.cache
def json_values(*, max_leaves: int = 4) -> st.SearchStrategy[Any]:
    """Small JSON values: null, bools, ints (also beyond 2**53), finite floats, text, lists, objects."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(max_size=12),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(texts(max_size=6), children, max_size=3),
        ),
        max_leaves=max_leaves,
    )


def unique_value(value: Any, token: str) -> Any:
    """``value`` made unique by ``token``: strings get a suffix, anything else is wrapped."""
    if isinstance(value, str):
        return f"{value}~{token}"
    return {"value": value, "unique": token}


def memory_kinds() -> st.SearchStrategy[Kind]:
    return st.sampled_from(KINDS)


def _messages() -> st.SearchStrategy[dict[str, str]]:
    return st.builds(lambda role, text: {"role": role, "text": text}, st.sampled_from(DEFAULT_ROLES), texts())


@functools.cache
def initial_content(kind: Kind) -> st.SearchStrategy[Any]:
    """Content ``Replica.add`` accepts for ``kind``."""
    if kind in REGISTER_KINDS:
        return texts() | json_values(max_leaves=3)
    if kind == "counter":
        return st.integers(min_value=-1000, max_value=1000)
    if kind == "list":
        return st.lists(json_values(max_leaves=2), max_size=3)
    return st.lists(_messages(), max_size=2)


# -- memories -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorySpec:
    """Everything ``Replica.add`` needs to create one memory."""

    kind: Kind
    content: Any
    user_id: str | None = None
    tenant_id: str | None = None
    topics: tuple[str, ...] = ()
    shared: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[Any, ...] = ()

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels the memory will be published on."""
        return Scope(self.user_id, self.tenant_id, self.topics, self.shared).channels()

    async def create(self, replica: Replica, memory_id: str | None = None) -> Memory:
        return await replica.add(
            self.content,
            kind=self.kind,
            user_id=self.user_id,
            tenant_id=self.tenant_id,
            topics=self.topics,
            shared=self.shared,
            metadata=dict(self.metadata),
            tags=self.tags,
            memory_id=memory_id,
        )

    def uniquify(self, token: str) -> MemorySpec:
        """A copy whose content, items, messages, metadata values and tags are unique to ``token``."""
        content = self.content
        if self.kind in REGISTER_KINDS:
            content = unique_value(content, token)
        elif self.kind == "list":
            content = [unique_value(v, f"{token}.{i}") for i, v in enumerate(content)]
        elif self.kind == "conversation":
            content = [{**m, "text": unique_value(m["text"], f"{token}.{i}")} for i, m in enumerate(content)]
        return dataclasses.replace(
            self,
            content=content,
            metadata={k: unique_value(v, f"{token}.{k}") for k, v in self.metadata.items()},
            tags=tuple(unique_value(t, f"{token}.t{i}") for i, t in enumerate(self.tags)),
        )


def memory_specs(
    kinds: Sequence[Kind] = KINDS,
    *,
    users: Sequence[str] = DEFAULT_USERS,
    tenants: Sequence[str] = DEFAULT_TENANTS,
    topics: Sequence[str] = DEFAULT_TOPICS,
    metadata_keys: Sequence[str] = DEFAULT_METADATA_KEYS,
) -> st.SearchStrategy[MemorySpec]:
    """Memories of the given kinds with initial content and a scope drawn from small pools of users,
    tenants and topics, so that memories share channels and every channel shape occurs."""
    return _memory_specs(tuple(kinds), tuple(users), tuple(tenants), tuple(topics), tuple(metadata_keys))


@functools.cache  # building strategies is slow next to drawing from them; machines draw thousands
def _memory_specs(
    kinds: tuple[Kind, ...],
    users: tuple[str, ...],
    tenants: tuple[str, ...],
    topics: tuple[str, ...],
    metadata_keys: tuple[str, ...],
) -> st.SearchStrategy[MemorySpec]:
    @st.composite
    def build(draw: st.DrawFn) -> MemorySpec:
        kind = draw(st.sampled_from(kinds))
        return MemorySpec(
            kind=kind,
            content=draw(initial_content(kind)),
            user_id=draw(st.none() | st.sampled_from(users)) if users else None,
            tenant_id=draw(st.none() | st.sampled_from(tenants)) if tenants else None,
            topics=tuple(draw(st.lists(st.sampled_from(topics), max_size=2, unique=True))) if topics else (),
            shared=draw(st.booleans()),
            metadata=draw(
                st.dictionaries(st.sampled_from(metadata_keys), json_values(max_leaves=2), max_size=2)
            ),
            tags=tuple(draw(st.lists(json_values(max_leaves=1), max_size=2))),
        )

    return build()


# -- operations ---------------------------------------------------------------------------------


class Operation:
    """One write to an existing memory. Subclasses are frozen dataclasses."""

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        raise NotImplementedError

    def uniquify(self, token: str) -> Operation:
        """A copy whose written values are unique to ``token`` (removals are left alone)."""
        return self


@dataclass(frozen=True)
class Update(Operation):
    """``Replica.update``: content (facts and preferences), metadata keys and tags in one change."""

    content: Any = UNSET
    """Any JSON value (``None`` too); ``UNSET`` leaves the content alone."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    remove_metadata: tuple[str, ...] = ()
    add_tags: tuple[Any, ...] = ()
    remove_tags: tuple[Any, ...] = ()

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        return await replica.update(
            memory_id,
            content=self.content,
            metadata=dict(self.metadata),
            remove_metadata=self.remove_metadata,
            add_tags=self.add_tags,
            remove_tags=self.remove_tags,
        )

    def uniquify(self, token: str) -> Update:
        return dataclasses.replace(
            self,
            content=UNSET if self.content is UNSET else unique_value(self.content, token),
            metadata={k: unique_value(v, f"{token}.{k}") for k, v in self.metadata.items()},
            add_tags=tuple(unique_value(t, f"{token}.t{i}") for i, t in enumerate(self.add_tags)),
        )


@dataclass(frozen=True)
class Revive(Operation):
    """``Replica.add`` with the id of a deleted memory: a new incarnation of the same kind and scope
    (refused while the memory is live, or while its delete is in conflict)."""

    kind: Kind
    content: Any
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[Any, ...] = ()

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        old = await replica.get(memory_id)
        return await replica.add(
            self.content,
            kind=self.kind,
            user_id=old.scope.user_id,
            tenant_id=old.scope.tenant_id,
            topics=old.scope.topics,
            shared=old.scope.shared,
            metadata=dict(self.metadata),
            tags=self.tags,
            memory_id=memory_id,
        )

    def uniquify(self, token: str) -> Revive:
        spec = MemorySpec(self.kind, self.content, metadata=self.metadata, tags=self.tags).uniquify(token)
        return Revive(self.kind, spec.content, spec.metadata, spec.tags)


@dataclass(frozen=True)
class Delete(Operation):
    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        return await replica.delete(memory_id)


@dataclass(frozen=True)
class Increment(Operation):
    """``Replica.increment`` (a negative amount decrements)."""

    amount: int

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        return await replica.increment(memory_id, self.amount)


@dataclass(frozen=True)
class AddItems(Operation):
    items: tuple[Any, ...]

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        return await replica.add_items(memory_id, *self.items)

    def uniquify(self, token: str) -> AddItems:
        return AddItems(tuple(unique_value(v, f"{token}.{i}") for i, v in enumerate(self.items)))


@dataclass(frozen=True)
class RemoveItems(Operation):
    items: tuple[Any, ...]

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        return await replica.remove_items(memory_id, *self.items)


@dataclass(frozen=True)
class AppendMessage(Operation):
    role: str
    text: str

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        return await replica.append_message(memory_id, role=self.role, text=self.text)

    def uniquify(self, token: str) -> AppendMessage:
        return dataclasses.replace(self, text=unique_value(self.text, token))


@dataclass(frozen=True)
class Resolve(Operation):
    """``Replica.resolve``: settle ``content``, ``lifecycle`` or ``metadata.{key}`` to ``value``."""

    field: str
    value: Any

    async def apply(self, replica: Replica, memory_id: str) -> Memory:
        return await replica.resolve(memory_id, field=self.field, value=self.value)

    def uniquify(self, token: str) -> Resolve:
        if self.field == "lifecycle":
            return self
        return dataclasses.replace(self, value=unique_value(self.value, token))


def _present_or_fresh(present: tuple[str, ...], fresh: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly values already present (so removals observe something), sometimes absent ones.
    ``present`` holds canonical JSON texts, so that it can be part of a cache key."""
    if not present:
        return fresh
    return st.one_of(st.sampled_from(present).map(decode_value), fresh)


def operations(
    kind: Kind | None = None,
    *,
    memory: Memory | None = None,
    metadata_keys: Sequence[str] = DEFAULT_METADATA_KEYS,
) -> st.SearchStrategy[Operation]:
    """Operations that fit a memory of ``kind``.

    Args:
        kind: the memory kind; taken from ``memory`` when that is given.
        memory: the memory as the writing replica sees it now. Removals then mostly target items,
            tags and metadata keys it holds, resolutions are drawn only for its open conflicts, and
            revivals (:class:`Revive`) only when it is cleanly deleted.
        metadata_keys: the pool metadata keys are drawn from (small, so writes collide).
    """
    if memory is None:
        if kind is None:
            raise ValueError("operations() needs a kind or a memory")
        return _operations(kind, tuple(metadata_keys), (), (), (), None, False)
    items = memory.content if memory.kind == "list" else ()
    return _operations(
        memory.kind,
        tuple(metadata_keys),
        tuple(sorted(encode_value(k) for k in memory.metadata)),
        tuple(encode_value(t) for t in memory.tags),
        tuple(encode_value(i) for i in items),
        memory.conflicts,
        memory.deleted and "lifecycle" not in memory.conflicts,
    )


@functools.lru_cache(maxsize=1024)  # building strategies is slow next to drawing from them
def _operations(
    kind: Kind,
    metadata_keys: tuple[str, ...],
    present_keys: tuple[str, ...],
    present_tags: tuple[str, ...],
    present_items: tuple[str, ...],
    conflicts: tuple[str, ...] | None,
    deleted: bool,
) -> st.SearchStrategy[Operation]:
    updates: st.SearchStrategy[Operation] = st.builds(
        Update,
        content=st.just(UNSET) | texts() | json_values(max_leaves=2)
        if kind in REGISTER_KINDS
        else st.just(UNSET),
        metadata=st.dictionaries(st.sampled_from(metadata_keys), json_values(max_leaves=2), max_size=2),
        remove_metadata=st.lists(
            _present_or_fresh(present_keys, st.sampled_from(metadata_keys)), max_size=1
        ).map(tuple),
        add_tags=st.lists(json_values(max_leaves=1), max_size=2).map(tuple),
        remove_tags=st.lists(_present_or_fresh(present_tags, json_values(max_leaves=1)), max_size=1).map(
            tuple
        ),
    )
    own = [updates]
    if kind == "counter":
        own = [st.builds(Increment, st.integers(min_value=-50, max_value=50))]
    elif kind == "list":
        own = [
            st.lists(json_values(max_leaves=2), min_size=1, max_size=3).map(lambda v: AddItems(tuple(v))),
            st.lists(_present_or_fresh(present_items, json_values(max_leaves=1)), min_size=1, max_size=2).map(
                lambda v: RemoveItems(tuple(v))
            ),
        ]
    elif kind == "conversation":
        own = [st.builds(AppendMessage, st.sampled_from(DEFAULT_ROLES), texts())]
    revivals = st.builds(
        Revive,
        st.just(kind),
        initial_content(kind),
        st.dictionaries(st.sampled_from(metadata_keys), json_values(max_leaves=2), max_size=2),
        st.lists(json_values(max_leaves=1), max_size=2).map(tuple),
    )
    # Weighted by repetition: mostly the kind's own writes, sometimes metadata and tags, rarely a
    # delete (after which most writes are refused, and a revival is likely), and resolutions only
    # where they can succeed.
    choices = [*own, *own, updates, st.just(Delete())]
    if deleted:
        choices += [revivals, revivals]
    if conflicts is None:
        fields = ["lifecycle", *(f"metadata.{k}" for k in metadata_keys)]
        choices.append(_resolutions(tuple([*fields, "content"] if kind in REGISTER_KINDS else fields)))
    elif conflicts:
        choices.append(_resolutions(conflicts))
    return st.one_of(choices)


def _resolutions(fields: tuple[str, ...]) -> st.SearchStrategy[Operation]:
    @st.composite
    def build(draw: st.DrawFn) -> Resolve:
        name = draw(st.sampled_from(fields))
        if name == "lifecycle":
            value: Any = draw(st.sampled_from(["active", "deleted"]))
        elif name == "content":
            value = draw(texts() | json_values(max_leaves=2))
        else:
            value = draw(json_values(max_leaves=2))
        return Resolve(name, value)

    return build()
