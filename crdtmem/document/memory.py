"""The memory document: one pycrdt ``Doc`` per memory, its layout, its writes and its reads.

Root types of the document (``docs/protocol.md`` is the normative description)::

    header     Map    written once at creation: format, id, kind, created, source, scope
    content    Map    fact/preference: MV-register; list: OR-set; counter: PN-counter
    messages   Array  conversation messages (conversation kind only)
    lifecycle  Map    MV-register of "active" | "deleted"
    metadata   Map    one MV-register per key, keys "{key}#{dot}"
    tags       Map    OR-set of tags
    embedding  Map    MV-register of {"vector": [...], "model": str} (never a user-facing conflict)

Every write that changes a live memory also re-asserts ``active`` in ``lifecycle``; an update that races
a delete therefore leaves two lifecycle siblings, a detected conflict rather than a silent resurrection
or a silent loss. A cleanly deleted memory takes no update, but its id can be written again
(:meth:`MemoryDoc.revive`): a new incarnation that observed the delete, hence no conflict.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..crdt import Conversation, Dot, MessageList, MessageLog, MVRegister, ORSet, PNCounter, Sibling, frozen
from ..crdt.dots import JSONValue, check_text, decode_value, encode_value, is_hlc_text
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
from . import carry, statevector
from . import epoch as epochs
from .records import KINDS, REGISTER_KINDS, Conflict, ConflictValue, Kind, Memory, Scope, Source, check_kind
from .yroots import YArray, YDoc, YMap, snapshot

FORMAT = "crdtmem.memory/1"
FORMAT_WIDE_IDS = "crdtmem.memory/2"
"""The format of a memory whose scope has an id outside protocol revision 1's alphabet
(``docs/protocol.md`` §8): a revision-1 client would derive other channel names for it."""
FORMATS = (FORMAT, FORMAT_WIDE_IDS)
EMPTY_UPDATE = b"\x00\x00"
"""A Yrs v1 update with no structs and no deletions."""
ACTIVE, DELETED = "active", "deleted"


class Unset(enum.Enum):
    """The default of an argument whose every value, ``None`` included, means something (a fact's
    content may be JSON ``null``)."""

    UNSET = "UNSET"


UNSET = Unset.UNSET

DotSource = Callable[[], Dot]
"""Returns a fresh dot (replica id + a fresh HLC tick) for each write inside a change."""


@dataclass(frozen=True, slots=True)
class Delta:
    """The Yrs update of one change and the state vector it was made on (its dependencies)."""

    update: bytes
    deps: bytes


def check_content(kind: str, content: Any) -> Any:
    """Validate initial content for ``kind``; returns it normalized."""
    check_kind(kind)
    if kind in REGISTER_KINDS:
        if content is UNSET:
            raise InvalidInput(f"a {kind} needs content: any JSON value (text, number, object, ...)")
        if isinstance(content, str):
            return check_text(content, f"{kind} content")
        return decode_value(encode_value(content))  # as the register reads it back: plain JSON
    if content is UNSET:
        content = None
    if kind == "counter":
        if content is None:
            return 0
        if isinstance(content, bool) or not isinstance(content, int):
            raise InvalidInput(f"counter content must be an int, got {type(content).__name__}")
        return content
    if kind == "list":
        if content is None:
            return []
        if isinstance(content, (str, bytes)) or not isinstance(content, (list, tuple)):
            raise InvalidInput("list content must be a list of items")
        return list(content)
    if content is None:
        return []
    if not isinstance(content, (list, tuple)):
        raise InvalidInput("conversation content must be a list of {'role', 'text'} messages")
    return [check_message(m) for m in content]


def check_message(message: Any) -> tuple[str, str]:
    if isinstance(message, dict):
        role, text = message.get("role"), message.get("text")
    elif isinstance(message, (list, tuple)) and len(message) == 2:
        role, text = message
    else:
        raise InvalidInput(f"a message is {{'role': str, 'text': str}}, got {message!r}")
    if not isinstance(role, str) or not role or not isinstance(text, str):
        raise InvalidInput(f"a message needs a non-empty string role and a string text, got {message!r}")
    return check_text(role, "a message role"), check_text(text, "a message text")


class MemoryDoc:
    """A memory's CRDT document. Not thread-safe: use it from one thread (the replica's loop)."""

    _log: MessageLog | None = None
    """A conversation's messages, kept in step with its array (built on the first read)."""
    _log_subscription: Any = None

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

    def __init__(self, doc: YDoc):
        self.doc = doc

    # Root types are bound on first use: a document only being merged and stored never needs them.
    @cached_property
    def _header(self) -> YMap:
        return YMap(self.doc, "header")

    @cached_property
    def _content(self) -> YMap:
        return YMap(self.doc, "content")

    @cached_property
    def _messages(self) -> YArray:
        return YArray(self.doc, "messages")

    @cached_property
    def _lifecycle(self) -> MVRegister:
        return MVRegister(YMap(self.doc, "lifecycle"))

    @cached_property
    def _metadata(self) -> YMap:
        return YMap(self.doc, "metadata")

    @cached_property
    def _tags(self) -> ORSet:
        return ORSet(YMap(self.doc, "tags"))

    @cached_property
    def _embedding(self) -> MVRegister:
        return MVRegister(YMap(self.doc, "embedding"))

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
        update)`` in row order (which is a causal order), with the figures kept about that copy."""
        memory = cls.empty(memory_id, client_id)
        if snapshot:
            memory.apply(snapshot)
            memory.snapshot_bytes = len(snapshot)
        for row, update in tail:
            if epochs.rebase_client(update) is not None:  # a new epoch replaces what came before
                memory.adopt(update)
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
        for name in ("_header", "_content", "_messages", "_lifecycle", "_metadata", "_tags", "_embedding"):
            self.__dict__.pop(name, None)
        self._log = self._log_subscription = None
        self.doc = fresh
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

    @property
    def created_by(self) -> str | None:
        """The replica that created the memory (``header.created_by``)."""
        value = self._header.get("created_by")
        return value if isinstance(value, str) else None

    @property
    def epoch(self) -> epochs.Epoch | None:
        """The document's epoch (None: never rebased)."""
        return epochs.epoch_of(self.doc)

    def state(self) -> bytes:
        return bytes(self.doc.get_update())

    def state_vector(self) -> statevector.StateVector:
        return statevector.decode(self.doc.get_state())

    def blocks(self) -> int:
        """How many Yrs blocks this document has had (map entries and array elements written,
        deleted ones included): the sum of its state vector's clocks."""
        return sum(self.state_vector().values())

    @property
    def exists(self) -> bool:
        return "id" in self._header

    @property
    def kind(self) -> Kind:
        kind = self._header.get("kind")
        if kind not in KINDS:
            raise MalformedPayload(f"memory document has no valid kind: {kind!r}")
        return kind  # type: ignore[no-any-return]

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
            value = _unique(content)
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
            key: encode_value(item)
            for key, item in zip(_check_keys(metadata), metadata.values(), strict=True)
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
        written = _scope(self._header.get("scope") or {})  # as read() will see it
        return Memory(
            id=memory_id,
            kind=kind,
            content=value,
            metadata={key: _as_read(metadata[key], texts[key]) for key in sorted(texts)},
            tags=tuple(_as_read(tag, text) for text, tag in _first_of_each(tag_texts, tags).items()),
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
            metadata or {}, add_tags, next_dot, [_check_key(k) for k in remove_metadata]
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
            for key, item in zip(_check_keys(metadata), metadata.values(), strict=True)
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

    def _message_log(self) -> MessageLog:
        """The conversation's messages, read in full once and then kept in step by the array's
        change deltas (see :class:`MessageLog`), so a read after an append checks the new messages.

        Inside an open transaction a throwaway log is read in full: the transaction's own changes
        reach the kept one only when it commits.
        """
        if self.doc.txn is not None:
            return MessageLog(self._messages.to_py())
        log = self._log
        if log is None:
            log = self._log = MessageLog(self._messages.to_py())
            self._log_subscription = self._messages.observe(log.follow)
        elif not log.in_step:
            log.reset(self._messages.to_py())
        return log

    def messages(self) -> MessageList:
        """A conversation's messages in array order, as its record holds them (read-only)."""
        return self._message_log().content()

    def messages_added_since(self, earlier: object) -> int | None:
        """For ``earlier``, the content of an earlier record of this conversation: when every change
        since only added messages at the end, how many it held (the messages after that are new).
        None when that is not known (another change, or a record this document did not make)."""
        return self._log.added_since(earlier) if self._log is not None else None

    def _register(self, field: str) -> MVRegister | None:
        if field == "content":
            return MVRegister(self._content) if self.kind in REGISTER_KINDS else None
        if field == "lifecycle":
            return self._lifecycle
        if field.startswith("metadata."):
            return MVRegister(self._metadata, _check_key(field.removeprefix("metadata.")))
        return None

    def _require(self, kind: Kind, operation: str) -> None:
        if self.kind != kind:
            raise WrongKind(f"{operation} applies to {kind} memories; this memory is a {self.kind}")

    # -- reads --------------------------------------------------------------------------------

    def conflicts(self) -> list[Conflict]:
        """Every conflicted field, sorted by field name; identical on replicas with equal state."""
        return self.read()[1]

    @property
    def id(self) -> str:
        return str(self._header.get("id"))

    def scope(self) -> Scope:
        return _scope(self._header.get("scope") or {})

    def header_channels(self) -> tuple[str, tuple[str, ...]]:
        """``(memory id, channels)`` from the header alone, checked as :meth:`read` checks it (an
        id, a known kind, a creation stamp, a scope that names channels); raises MalformedPayload.
        For a batch of remote deltas, whose documents are read back later."""
        header = snapshot(self.doc, maps=("header",), arrays=())["header"] or {}
        if "id" not in header:
            raise MalformedPayload("memory document has no header (was it created?)")
        if header.get("kind") not in KINDS:
            raise MalformedPayload(f"memory document has no valid kind: {header.get('kind')!r}")
        memory_id = str(header["id"])
        if not is_hlc_text(header.get("created")):
            raise MalformedPayload(f"memory {memory_id!r} has no valid creation stamp")
        return memory_id, _scope(header.get("scope") or {}).channels()

    def sizes(self) -> tuple[int, int, int]:
        """``(metadata keys, tag entries, content entries)`` without reading any value: cheap enough
        to bound a remote change before the document is read (reading costs per entry). A tag or
        list item added concurrently by several replicas has an entry for each."""
        with self.doc.transaction():  # one Yrs transaction for the three roots, not one each
            metadata = {key.rpartition("#")[0] for key in self._metadata if "#" in key}
            return len(metadata), len(YMap(self.doc, "tags").keys()), len(self._content.keys())

    def materialize(self, version: int = 0) -> Memory:
        """The plain record for the current merged state."""
        return self.read(version)[0]

    def read(self, version: int = 0) -> tuple[Memory, list[Conflict]]:
        """The record and the conflicts of the current merged state, from one snapshot.

        Every root is converted to plain Python once, from one snapshot (:func:`_snapshot`), and
        everything is computed from those values.
        """
        roots = snapshot(self.doc, arrays=())
        header = roots["header"] or {}
        content_raw = roots["content"] or {}
        lifecycle_raw = roots["lifecycle"] or {}
        metadata_raw = roots["metadata"] or {}
        tags_raw = roots["tags"] or {}
        embedding_raw = roots["embedding"] or {}
        if "id" not in header:
            raise MalformedPayload("memory document has no header (was it created?)")
        kind = header.get("kind")
        if kind not in KINDS:
            raise MalformedPayload(f"memory document has no valid kind: {kind!r}")
        memory_id = str(header["id"])
        created = header.get("created")
        if not is_hlc_text(created):
            raise MalformedPayload(f"memory {memory_id!r} has no valid creation stamp: {created!r:.40}")
        stamps = [created]
        registers: dict[str, list[Sibling]] = {"lifecycle": MVRegister(lifecycle_raw).siblings()}
        if kind in REGISTER_KINDS:
            siblings = MVRegister(content_raw).siblings()
            registers["content"] = siblings
            content: Any = siblings[0].value if siblings else ""
        elif kind == "list":
            content, latest = ORSet(content_raw).read()
            stamps.append(latest)
        elif kind == "counter":
            counter = PNCounter(content_raw)
            content = counter.value()
            stamps.append(counter.latest_hlc())
        else:
            log = self._message_log()
            content = log.content()
            stamps.append(log.latest_hlc())
        metadata: dict[str, Any] = {}
        for key, siblings in sorted(MVRegister.grouped(metadata_raw).items()):
            metadata[key] = siblings[0].value
            registers[f"metadata.{key}"] = siblings
        for siblings in registers.values():
            stamps.extend(s.dot.hlc for s in siblings)
        tags, latest = ORSet(tags_raw).read()
        stamps.append(latest)
        scope = _scope(header.get("scope") or {})
        conflicts = [
            Conflict(
                memory_id,
                name,
                tuple(ConflictValue(s.value, s.dot.hlc, s.dot.replica) for s in siblings),
                scope.user_id,
                scope.tenant_id,
            )
            for name, siblings in sorted(registers.items())
            if MVRegister.in_conflict(siblings)
        ]
        embedding = MVRegister.read(MVRegister(embedding_raw).siblings())
        vector = decode_value(embedding.text) if embedding else None
        source = header.get("source") or {}
        lifecycle = registers["lifecycle"]
        memory = Memory(
            id=memory_id,
            kind=kind,
            content=content,
            metadata=metadata,
            tags=tuple(tags),
            source=Source(source.get("agent_id"), source.get("session_id"), source.get("user_id")),
            scope=scope,
            channels=scope.channels(),
            created_at=created,
            updated_at=max(stamps),
            deleted=bool(lifecycle) and lifecycle[0].value == DELETED,
            conflicted=bool(conflicts),
            version=version,
            embedding=tuple(vector["vector"]) if vector else None,
            embedding_model=vector["model"] if vector else None,
            conflicts=tuple(c.field for c in conflicts),
        )
        return memory, conflicts


def document_format(scope: Scope) -> str:
    """``crdtmem.memory/1``, or ``/2`` when a user, tenant or topic id needs revision 2's ids."""
    ids = [i for i in (scope.user_id, scope.tenant_id, *scope.topics) if i is not None]
    return FORMAT if all(is_v1_id(i) for i in ids) else FORMAT_WIDE_IDS


def _scope(raw: dict[str, Any]) -> Scope:
    return Scope(
        user_id=raw.get("user_id"),
        tenant_id=raw.get("tenant_id"),
        topics=tuple(raw.get("topics") or ()),
        shared=bool(raw.get("shared")),
    )


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or "#" in key or len(key) > 256:
        raise InvalidInput(f"metadata keys are non-empty strings without '#', got {key!r}")
    return check_text(key, "a metadata key")


def _as_read(value: JSONValue, text: str) -> JSONValue:
    """``value`` as it reads back from its canonical JSON ``text``: a plain scalar is itself (JSON
    carries it exactly), anything else is decoded (tuples become lists, keys are sorted)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    return decode_value(text)


def _first_of_each(texts: list[str], values: list[JSONValue]) -> dict[str, JSONValue]:
    """The first value of each canonical text, in order (as an OR-set reads its elements back)."""
    first: dict[str, JSONValue] = {}
    for text, value in zip(texts, values, strict=True):
        first.setdefault(text, value)
    return first


def _fresh(next_dot: DotSource, count: int) -> list[Dot]:
    """``count`` dots from ``next_dot``, in one clock run when it offers one (``run``)."""
    run = getattr(next_dot, "run", None)
    if run is not None:
        dots: list[Dot] = run(count)
        return dots
    return [next_dot() for _ in range(count)]


def _check_keys(keys: Iterable[object]) -> list[str]:
    """:func:`_check_key` of each key, their text checked in one piece (a lone surrogate anywhere
    fails it, and is then found key by key)."""
    checked: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not key or "#" in key or len(key) > 256:
            raise InvalidInput(f"metadata keys are non-empty strings without '#', got {key!r}")
        checked.append(key)
    try:
        "".join(checked).encode("utf-8")
    except UnicodeEncodeError:
        for key in checked:
            check_text(key, "a metadata key")
    return checked


def _unique(values: Iterable[JSONValue]) -> list[JSONValue]:
    """``values`` as an OR-set reads them back: canonical JSON, first occurrence of each, in order."""
    seen: dict[str, JSONValue] = {}
    for value in values:
        text = encode_value(value)
        if text not in seen:
            seen[text] = decode_value(text)
    return list(seen.values())
