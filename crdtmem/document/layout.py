"""The layout of a memory document: its Yrs document, its root types (bound on first use: a
document only being merged and stored never needs them), and what it tells without being read as a
record (id, kind, creator, scope, epoch, state, sizes).

Root types of the document (``docs/protocol.md`` is the normative description)::

    header     Map    written once at creation: format, id, kind, created, source, scope
    content    Map    fact/preference: MV-register; list: OR-set; counter: PN-counter
    messages   Array  conversation messages (conversation kind only)
    lifecycle  Map    MV-register of "active" | "deleted"
    metadata   Map    one MV-register per key, keys "{key}#{dot}"
    tags       Map    OR-set of tags
    embedding  Map    MV-register of {"vector": [...], "model": str} (never a user-facing conflict)

Every write and read of :class:`~crdtmem.document.memory.MemoryDoc` goes through these roots; it
inherits :class:`Layout`.
"""

from __future__ import annotations

from functools import cached_property

from ..crdt import MVRegister, ORSet
from ..errors import MalformedPayload
from . import epoch as epochs
from . import statevector
from .reading import scope_of
from .records import KINDS, Kind, Scope
from .yroots import YArray, YDoc, YMap

ROOTS = ("_header", "_content", "_messages", "_lifecycle", "_metadata", "_tags", "_embedding")
"""The attributes the roots are bound to."""


class Layout:
    """A memory's Yrs document and its roots."""

    def __init__(self, doc: YDoc):
        self.doc = doc

    def _bind(self, doc: YDoc) -> None:
        """Make ``doc`` this document's Yrs document; the roots bind to it on their next use."""
        for name in ROOTS:
            self.__dict__.pop(name, None)
        self.doc = doc

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

    @property
    def id(self) -> str:
        return str(self._header.get("id"))

    def scope(self) -> Scope:
        return scope_of(self._header.get("scope") or {})

    def sizes(self, most: int | None = None, exact_over: int = 0) -> tuple[int, int, int]:
        """``(metadata keys, tag entries, content entries)`` without reading any value: cheap enough
        to bound a remote change before the document is read (reading costs per entry). A tag or
        list item added concurrently by several replicas has an entry for each.

        With ``most``, metadata keys are counted only until they pass it: a count over ``most`` is
        reported as ``most + 1`` (a pushed memory of 20,000 keys is refused after 2,001, not after
        its 20,000 keys were copied out and split).

        With ``exact_over``, metadata keys are counted only when the map holds more entries than
        that; otherwise its entry count stands for them, an upper bound no larger than
        ``exact_over`` (keys are dots: never fewer entries than keys). Counting keys lists them all,
        and a bound check needs no exact count below its bound."""
        entries, tags, content = self.doc.map_lens(_SIZED)
        if entries <= exact_over or not entries:
            return entries, tags, content
        keys = self.doc.map_keys("metadata")
        if most is None or entries <= most:
            return len({key.rpartition("#")[0] for key in keys if "#" in key}), tags, content
        seen: set[str] = set()
        for key in keys:
            if "#" in key:
                seen.add(key.rpartition("#")[0])
                if len(seen) > most:
                    break
        return len(seen), tags, content


_SIZED = ("metadata", "tags", "content")
