"""The memory document: one pycrdt ``Doc`` per memory, its construction, the merge of updates and
states across epochs, and every write (create, update, delete, increment, ..., resolve).

Every write that changes a live memory also re-asserts ``active`` in ``lifecycle``; an update that races
a delete therefore leaves two lifecycle siblings, a detected conflict rather than a silent resurrection
or a silent loss. A cleanly deleted memory takes no update, but its id can be written again
(:meth:`MemoryDoc.revive`): a new incarnation that observed the delete, hence no conflict.

Beside it, by concept: the document's root types and what its header tells (:mod:`.layout`) and a
conversation's messages as read (:mod:`.messages`), two classes :class:`MemoryDoc` inherits; what
a write brings, checked (:mod:`.inputs`); the record and conflicts read from the document
(:mod:`.reading`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..crdt import Conversation, Dot, MessageList, MVRegister, ORSet, PNCounter, frozen
from ..crdt.dots import JSONValue, encode_value
from ..errors import (
    EpochMismatch,
    InvalidInput,
    MalformedPayload,
    MemoryDeleted,
    MemoryExists,
    NoSuchConflict,
    WrongKind,
)
from ..ids import is_v1_id
from . import carry, reading
from . import epoch as epochs
from .inputs import UNSET as UNSET
from .inputs import Unset as Unset
from .inputs import as_read, check_content, check_key, check_keys, check_message, first_of_each, unique
from .layout import Layout
from .messages import Messages
from .reading import ACTIVE, DELETED, scope_of
from .records import REGISTER_KINDS, Conflict, Kind, Memory, Scope, Source
from .yroots import YDoc

FORMAT = "crdtmem.memory/1"
FORMAT_WIDE_IDS = "crdtmem.memory/2"
"""The format of a memory whose scope has an id outside protocol revision 1's alphabet
(``docs/protocol.md`` §8): a revision-1 client would derive other channel names for it."""
FORMATS = (FORMAT, FORMAT_WIDE_IDS)
EMPTY_UPDATE = b"\x00\x00"
"""A Yrs v1 update with no structs and no deletions."""

DotSource = Callable[[], Dot]
"""Returns a fresh dot (replica id + a fresh HLC tick) for each write inside a change."""


@dataclass(frozen=True, slots=True)
class Delta:
    """The Yrs update of one change and the state vector it was made on (its dependencies)."""

    update: bytes
    deps: bytes


class MemoryDoc(Messages, Layout):
    """A memory's CRDT document. Not thread-safe: use it from one thread (the replica's loop)."""

    # The store's copy of this document is a snapshot plus a tail of deltas (docs/architecture.md
    # §4); the engine keeps these figures about it to decide when to take a new snapshot.
    stored_upto = 0
    """The highest delta row id (the store's) whose update is in this document."""
    tail_deltas = 0
    """Deltas stored after the store's snapshot of this document."""
    tail_bytes = 0
    """Their bytes."""
    snapshot_bytes = 0
    """The size of the store's snapshot."""
    carried: Delta | None = None
    """The change that carried this replica's changes over a rebase it just took
    (:meth:`adopt_carrying`), until the engine logs it as a local delta and clears it."""

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def empty(cls, memory_id: str, client_id: int) -> MemoryDoc:
        return cls(YDoc(client_id, memory_id))

    @classmethod
    def from_state(cls, memory_id: str, state: bytes, client_id: int) -> MemoryDoc:
        memory = cls.empty(memory_id, client_id)
        memory.apply(state)
        return memory

    @classmethod
    def from_parts(
        cls, memory_id: str, snapshot: bytes | None, tail: Iterable[tuple[int, bytes]], client_id: int
    ) -> MemoryDoc:
        """The document from the store's snapshot and the deltas stored after it, ``(row id,
        update)`` in row order, with the figures kept about that copy. Row order is a causal order,
        but for the rebase entry of an epoch the document took from a state (a states page): that
        entry may come after deltas of its epoch, and the document holds it already."""
        memory = cls.empty(memory_id, client_id)
        if snapshot:
            memory.apply(snapshot)
            memory.snapshot_bytes = len(snapshot)
        for row, update in tail:
            client = epochs.rebase_client(update)
            if client is not None and (memory.epoch is None or memory.epoch.client != client):
                memory.adopt(update)  # a new epoch replaces what came before
            else:
                memory.apply(update)
            memory.stored_upto = row
            memory.tail_deltas += 1
            memory.tail_bytes += len(update)
        return memory

    def apply(self, update: bytes) -> None:
        """Merge a Yrs update (idempotent, commutative). Raises MalformedPayload if it won't parse."""
        try:
            self.doc.apply_update(update)
        except Exception as exc:  # pycrdt raises plain ValueError/RuntimeError variants
            raise MalformedPayload(f"update does not decode as a Yrs update: {exc}") from exc

    def adopt(self, update: bytes) -> None:
        """Replace the whole document by ``update``: a new epoch of it (:mod:`.epoch`), which
        holds everything the document held. Raises MalformedPayload if it won't parse."""
        fresh = YDoc(self.doc.raw.client_id(), self.doc.raw.guid())
        try:
            fresh.apply_update(update)
        except Exception as exc:
            raise MalformedPayload(f"rebase does not decode as a Yrs update: {exc}") from exc
        self._bind(fresh)
        self._log = self._log_subscription = None
        self.snapshot_bytes = 0  # the store's snapshot is of the old epoch: take a new one soon

    def adopt_carrying(self, update: bytes, incoming: epochs.Epoch, carry_as: str | None) -> None:
        """Take the ``incoming`` epoch (a rebase entry's update, or a state of it) in place of this
        document. What this document holds that the epoch lacks (changes made concurrently with the
        rebase) is written again on the epoch as one change (:mod:`.carry`), which :attr:`carried`
        then holds, to be logged as a local delta of ``carry_as``. With ``carry_as`` None, or for an
        epoch of another lineage, a document that holds such changes refuses the epoch
        (EpochMismatch)."""
        clean = not self.exists or epochs.adoptable(self.doc, incoming)
        if not self.exists or carry_as is None or carry.base_for(self.doc, incoming) is None:
            if not clean:
                raise EpochMismatch(
                    f"epoch {incoming.n} of memory {self.id} lacks changes this replica holds, made "
                    "concurrently with its rebase; the memory stays at its epoch here"
                )
            self.adopt(update)
            return
        old, kind = self.doc, self.kind
        self.adopt(update)
        try:
            with self.change():
                written = carry.carry_over(old, self.doc, incoming, carry_as, kind)
        except ValueError as exc:  # a structure the carrier does not read (a foreign writer's)
            self.adopt(update if clean else old.get_update())
            if clean:
                return
            raise EpochMismatch(f"the changes of memory {self.id} could not be carried over: {exc}") from exc
        self.carried = self.last_delta if written else None

    def merge_state(self, state: bytes, carry_as: str | None = None) -> None:
        """Merge a whole document state from a peer, across epochs (:mod:`.epoch`): a state of the
        same epoch merges (``apply``); one of a later epoch replaces this document, carrying over
        what this one holds that it lacks (:meth:`adopt_carrying`); one of an earlier epoch is
        dropped (what it holds that this epoch lacks is carried over by the replicas that wrote it,
        each when it takes this epoch, ``docs/protocol.md`` §7.11)."""
        local, incoming = self.epoch, epochs.state_epoch(state)
        if not self.exists or local == incoming:
            self.apply(state)
        elif incoming is not None and (local is None or incoming.n > local.n):
            self.adopt_carrying(state, incoming, carry_as)
        elif carry_as is None and not epochs.within(local, incoming, state):
            raise EpochMismatch(
                f"the state of memory {self.id} is of epoch {incoming.n if incoming else 0}, before "
                f"this replica's {local.n if local else 0}, and holds changes that epoch lacks"
            )

    # -- writes -------------------------------------------------------------------------------

    @contextmanager
    def change(self) -> Iterator[None]:
        """Group writes into one Yrs transaction; :meth:`last_delta` then holds its update: the
        transaction's own insertions and deletions (``docs/protocol.md`` §5.1), never the document's
        whole delete set, so a delta is the size of the change however long the history.

        A document of a format this build does not implement is refused (protocol.md §5.1)."""
        written = self._header.get("format")
        if written is not None and written not in FORMATS:
            raise InvalidInput(
                f"memory {self._header.get('id')!r} is in format {written!r}; this build writes "
                f"{' and '.join(FORMATS)} only (upgrade crdtmem to change it)"
            )
        before = self.doc.get_state()
        with self.doc.transact_capturing() as captured:
            yield
        update = captured.update if captured.update is not None else EMPTY_UPDATE
        self.last_delta = Delta(update, bytes(before))

    last_delta: Delta
    """The update of the last :meth:`change` (and the state vector before it), until
    :meth:`drop_delta`."""

    def drop_delta(self) -> None:
        """Let go of :attr:`last_delta` once it is stored: a document kept in memory need not hold
        its last change twice (the update of a write of a 1 MiB value is 1 MiB)."""
        self.__dict__.pop("last_delta", None)

    def create(
        self,
        *,
        memory_id: str,
        kind: Kind,
        content: Any,
        source: Source,
        scope: Scope,
        metadata: dict[str, JSONValue],
        tags: Iterable[JSONValue],
        next_dot: DotSource,
    ) -> Memory:
        """Write a new memory into this empty document; returns its record.

        The record is built from what was written rather than read back: exactly what :meth:`read`
        returns for the new document (``tests/test_memory.py`` checks that on generated memories),
        without converting the document back to Python.
        """
        content = check_content(kind, content)
        dot = next_dot()
        self._header.update(
            {
                "format": document_format(scope),
                "id": memory_id,
                "kind": kind,
                "created": dot.hlc,
                "created_by": dot.replica,
                "source": source.to_dict(),
                "scope": scope.to_dict(),
            }
        )
        self._lifecycle.write(ACTIVE, dot)
        last = dot
        if kind in REGISTER_KINDS:
            MVRegister(self._content).write(content, dot)
            value: Any = content
        elif kind == "list":
            value = unique(content)
            items = ORSet(self._content)
            for item in content:
                last = next_dot()
                items.add(item, last)
        elif kind == "counter":
            if content:
                PNCounter(self._content).add(dot.replica, content, dot.hlc)
            value = content
        else:
            messages = []
            for role, text in content:
                last = next_dot()
                messages.append(frozen(Conversation(self._messages).append(role, text, last)))
            value = MessageList.of(messages)
        texts = {
            key: encode_value(item) for key, item in zip(check_keys(metadata), metadata.values(), strict=True)
        }
        tags = list(tags)
        tag_texts = [encode_value(tag) for tag in tags]
        dots = _fresh(next_dot, len(texts) + len(tag_texts))
        MVRegister.write_field_texts(
            self._metadata, [(key, text, dot) for (key, text), dot in zip(texts.items(), dots, strict=False)]
        )
        self._tags.add_texts(zip(tag_texts, dots[len(texts) :], strict=True))
        if dots:
            last = dots[-1]
        written = scope_of(self._header.get("scope") or {})  # as read() will see it
        return Memory(
            id=memory_id,
            kind=kind,
            content=value,
            metadata={key: as_read(metadata[key], texts[key]) for key in sorted(texts)},
            tags=tuple(as_read(tag, text) for text, tag in first_of_each(tag_texts, tags).items()),
            source=Source(source.agent_id, source.session_id, source.user_id),
            scope=written,
            channels=written.channels(),
            created_at=dot.hlc,
            updated_at=last.hlc,
            deleted=False,
            conflicted=False,
            version=0,
            embedding=None,
            embedding_model=None,
            conflicts=(),
        )

    def _live_for_write(self, next_dot: DotSource) -> Dot:
        """Refuse writes to a cleanly deleted memory; re-assert ``active`` (see module docstring)."""
        if self.cleanly_deleted:
            memory_id = self._header.get("id")
            raise MemoryDeleted(
                f"memory {memory_id!r} is deleted; to write this id again, create it anew "
                "(add with memory_id=..., or POST /v1/memories with its id): a new incarnation"
            )
        dot = next_dot()
        self._lifecycle.write(ACTIVE, dot)
        return dot

    def revive(
        self,
        *,
        kind: Kind,
        content: Any,
        scope: Scope,
        metadata: dict[str, JSONValue],
        tags: Iterable[JSONValue],
        next_dot: DotSource,
    ) -> None:
        """Write a new incarnation over this cleanly deleted memory (a put after a delete).

        The write observed the delete, so it is a clean revival, not a conflict: it re-asserts
        ``active`` over the ``deleted`` sibling and removes everything of the old incarnation it
        observed (content, list items, messages, metadata keys, tags, embedding; a counter is
        brought to the new value), then writes the new content, metadata and tags. A write that
        did not observe the delete is an update racing it: a lifecycle conflict, as ever. The
        header stays: kind and scope must be the old ones (they decide the channels), and
        ``created_at`` and ``source`` keep describing the first incarnation.
        """
        memory_id = self._header.get("id")
        if not self.cleanly_deleted:
            raise MemoryExists(f"a memory with id {memory_id!r} already exists")
        if kind != self.kind:
            raise InvalidInput(
                f"memory {memory_id!r} was a {self.kind}; its id takes a new {self.kind} only (a new "
                f"{kind} needs another id)"
            )
        if scope != self.scope():
            raise InvalidInput(
                f"memory {memory_id!r} had another scope; its id takes a memory of the same scope only "
                "(the scope decides its channels; use another id)"
            )
        content = check_content(kind, content)
        dot = next_dot()
        self._lifecycle.write(ACTIVE, dot)
        self._embedding.clear()
        MVRegister.write_fields(self._metadata, [], MVRegister.fields(self._metadata))
        self._tags.clear()
        if kind in REGISTER_KINDS:
            MVRegister(self._content).write(content, dot)
        elif kind == "list":
            ORSet(self._content).clear()
            self._add_items(content, next_dot)
        elif kind == "counter":
            counter = PNCounter(self._content)
            if content != counter.value():
                counter.add(dot.replica, content - counter.value(), dot.hlc)
        else:
            conversation = Conversation(self._messages)
            conversation.clear()
            for role, text in content:
                conversation.append(role, text, next_dot())
        self._write_fields_and_tags(metadata, tags, next_dot)

    @property
    def cleanly_deleted(self) -> bool:
        """Deleted, with no update racing the delete (a write here would be a revival)."""
        lifecycle = self._lifecycle.siblings()
        return bool(lifecycle) and not MVRegister.in_conflict(lifecycle) and lifecycle[0].value == DELETED

    def update(
        self,
        *,
        next_dot: DotSource,
        content: Any = UNSET,
        metadata: dict[str, JSONValue] | None = None,
        remove_metadata: Iterable[str] = (),
        add_tags: Iterable[JSONValue] = (),
        remove_tags: Iterable[JSONValue] = (),
    ) -> None:
        dot = self._live_for_write(next_dot)
        if content is not UNSET:
            if self.kind not in REGISTER_KINDS:
                raise WrongKind(
                    f"update(content=...) is for facts and preferences; this memory is a {self.kind} "
                    "(use increment, add_items/remove_items or append_message)"
                )
            MVRegister(self._content).write(check_content(self.kind, content), dot)
        self._write_fields_and_tags(
            metadata or {}, add_tags, next_dot, [check_key(k) for k in remove_metadata]
        )
        self._tags.remove_all(remove_tags)

    def _write_fields_and_tags(
        self,
        metadata: dict[str, JSONValue],
        tags: Iterable[JSONValue],
        next_dot: DotSource,
        clears: list[str] | None = None,
    ) -> None:
        """Write metadata keys, then add tags: each value encoded once, one dot run, one batch each
        (the same entries as a dot per key then per tag, in that order)."""
        texts = [
            (key, encode_value(item))
            for key, item in zip(check_keys(metadata), metadata.values(), strict=True)
        ]
        tag_texts = [encode_value(tag) for tag in tags]
        dots = _fresh(next_dot, len(texts) + len(tag_texts))
        if texts or clears:
            writes = [(key, text, dot) for (key, text), dot in zip(texts, dots, strict=False)]
            MVRegister.write_field_texts(self._metadata, writes, clears or ())
        if tag_texts:
            self._tags.add_texts(zip(tag_texts, dots[len(texts) :], strict=True))

    def delete(self, next_dot: DotSource) -> None:
        self._lifecycle.write(DELETED, next_dot())

    def increment(self, amount: int, next_dot: DotSource) -> None:
        self._require("counter", "increment")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidInput(f"increment amount must be an int, got {amount!r}")
        dot = self._live_for_write(next_dot)
        PNCounter(self._content).add(dot.replica, amount, dot.hlc)

    def add_items(self, items: Iterable[JSONValue], next_dot: DotSource) -> None:
        self._require("list", "add_items")
        items = list(items)
        if not items:
            return
        self._live_for_write(next_dot)
        self._add_items(items, next_dot)

    def _add_items(self, items: Iterable[JSONValue], next_dot: DotSource) -> None:
        content = ORSet(self._content)
        for item in items:
            content.add(item, next_dot())

    def remove_items(self, items: Iterable[JSONValue], next_dot: DotSource) -> None:
        self._require("list", "remove_items")
        self._live_for_write(next_dot)
        ORSet(self._content).remove_all(items)

    def append_message(self, role: str, text: str, next_dot: DotSource) -> None:
        self._require("conversation", "append_message")
        role, text = check_message({"role": role, "text": text})
        dot = self._live_for_write(next_dot)
        Conversation(self._messages).append(role, text, dot)

    def set_embedding(self, vector: list[float], model: str, next_dot: DotSource) -> None:
        self._embedding.write({"vector": [float(x) for x in vector], "model": model}, next_dot())

    def resolve(self, field: str, value: JSONValue, next_dot: DotSource) -> None:
        """Write ``value`` over every sibling of a conflicted ``field``, which clears the conflict."""
        register = self._register(field)
        if register is None or not MVRegister.in_conflict(register.siblings()):
            raise NoSuchConflict(f"field {field!r} of memory {self._header.get('id')} is not in conflict")
        if field == "lifecycle":
            if value not in (ACTIVE, DELETED):
                raise InvalidInput("a lifecycle conflict resolves to 'active' or 'deleted'")
        elif field == "content":
            value = check_content(self.kind, value)
        register.write(value, next_dot())

    def _register(self, field: str) -> MVRegister | None:
        if field == "content":
            return MVRegister(self._content) if self.kind in REGISTER_KINDS else None
        if field == "lifecycle":
            return self._lifecycle
        if field.startswith("metadata."):
            return MVRegister(self._metadata, check_key(field.removeprefix("metadata.")))
        return None

    def _require(self, kind: Kind, operation: str) -> None:
        if self.kind != kind:
            raise WrongKind(f"{operation} applies to {kind} memories; this memory is a {self.kind}")

    # -- reads --------------------------------------------------------------------------------

    def conflicts(self) -> list[Conflict]:
        """Every conflicted field, sorted by field name; identical on replicas with equal state."""
        return self.read()[1]

    def header_channels(self) -> tuple[str, tuple[str, ...]]:
        """``(memory id, channels)`` from the header alone (:func:`.reading.header_channels`); raises
        MalformedPayload. For a batch of remote deltas, whose documents are read back later."""
        return reading.header_channels(self.doc)

    def materialize(self, version: int = 0) -> Memory:
        """The plain record for the current merged state."""
        return self.read(version)[0]

    def read(self, version: int = 0) -> tuple[Memory, list[Conflict]]:
        """The record and the conflicts of the current merged state, from one snapshot
        (:func:`.reading.read`)."""
        return reading.read(self.doc, self._message_log, version)


def document_format(scope: Scope) -> str:
    """``crdtmem.memory/1``, or ``/2`` when a user, tenant or topic id needs revision 2's ids."""
    ids = [i for i in (scope.user_id, scope.tenant_id, *scope.topics) if i is not None]
    return FORMAT if all(is_v1_id(i) for i in ids) else FORMAT_WIDE_IDS


def _fresh(next_dot: DotSource, count: int) -> list[Dot]:
    """``count`` dots from ``next_dot``, in one clock run when it offers one (``run``)."""
    run = getattr(next_dot, "run", None)
    if run is not None:
        dots: list[Dot] = run(count)
        return dots
    return [next_dot() for _ in range(count)]
