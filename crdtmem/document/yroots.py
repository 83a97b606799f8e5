"""A memory document's Yrs document and root types, through Yrs' own binding (``pycrdt._pycrdt``).

pycrdt's ``Doc``, ``Map`` and ``Array`` wrap every access in Python-level bookkeeping: a document
creates locks (one of them asks anyio which event loop is running), and each item set enters and
leaves a transaction context, checks the value's type and may build a prelim type. The memory layout
only ever stores JSON values in its roots, never nested shared types, so :class:`YDoc`,
:class:`YMap` and :class:`YArray` go straight to the Yrs objects pycrdt binds, inside the document's
current transaction. A change writes several times faster; the bytes of the update are the same
(the Yjs interop test and the conformance tests hold them to that).

:meth:`YArray.append` names the array's last item when it knows it (the last item it appended, no
update merged since) and hands Yrs the item to integrate after it (:mod:`.yappend`): Yrs' insert by
index walks the whole array, which at 10,000 messages was most of an append.

Reads of whole roots go through :func:`snapshot`: Yrs converts each root to JSON text in one
transaction and Python parses it all with one ``json.loads``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pycrdt import _pycrdt

from . import statevector, yappend, yremote, ystructs
from .yappend import ItemId

JSON = Any

MAP_ROOTS = ("header", "content", "lifecycle", "metadata", "tags", "embedding")
ARRAY_ROOTS = ("messages",)


class YDoc:
    """One Yrs document: transactions, state vector, updates. Use it from one thread."""

    __slots__ = (
        "__weakref__",
        "_captured",
        "_capturing",
        "_subscription",
        "incoming",
        "merges",
        "raw",
        "txn",
        "watch",
    )

    def __init__(self, client_id: int | None = None, guid: str | None = None):
        self.raw: Any = _pycrdt.Doc(client_id, None, guid)
        self.txn: Any = None
        """The open transaction, inside :meth:`transaction`."""
        self.merges = 0
        """Updates applied so far (:meth:`apply_update`): what an array's known tail is checked by."""
        self.watch = False
        """An observed array is long enough to read where a merged update's items land
        (:mod:`.yremote`): :meth:`apply_update` then hands its observers the update."""
        self.incoming: Incoming | None = None
        """The update :meth:`apply_update` is merging, while its transaction commits."""
        self._subscription: Any = None
        self._capturing = False
        self._captured: bytes | None = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One Yrs transaction; nested uses join the outer one. Committed on exit, even on error
        (as pycrdt does: Yrs has no rollback)."""
        if self.txn is not None:
            yield self.txn
            return
        txn = self.txn = self.raw.create_transaction()
        try:
            yield txn
        finally:
            self.txn = None
            txn.commit()
            txn.drop()

    @contextmanager
    def transact_capturing(self) -> Iterator[Captured]:
        """One Yrs transaction whose own update (v1) is kept: ``with doc.transact_capturing() as
        captured: ...``, then ``captured.update``.

        The update is what Yrs reports for the transaction when it commits: the structs it inserted
        and the items it deleted, nothing else (``get_update(state before)`` would also carry every
        deletion the document ever had). None if the transaction changed nothing.
        """
        if self.txn is not None:
            raise RuntimeError("a capturing transaction cannot run inside another transaction")
        if self._subscription is None:  # subscribed once per document, on its first local change
            self._subscription = self.raw.observe(_capture_into(weakref.ref(self)))
        captured = Captured()
        self._capturing, self._captured = True, None
        try:
            with self.transaction():  # commits on exit: the observer runs then
                yield captured
        finally:
            captured.update, self._captured, self._capturing = self._captured, None, False

    def get_state(self) -> bytes:
        """The state vector (v1 encoding)."""
        if self.txn is not None:
            return bytes(self.raw.get_state(self.txn))
        txn = self.raw.create_transaction()  # without the context manager: on every delta applied
        try:
            return bytes(self.raw.get_state(txn))
        finally:
            txn.commit()
            txn.drop()

    def map_len(self, name: str) -> int:
        """How many keys the root map ``name`` holds: one Yrs call, without listing them (a remote
        apply asks a document's ``epoch`` root after every delta it applies)."""
        if self.txn is not None:
            return int(self.raw.get_or_insert_map(self.txn, name).len(self.txn))
        txn = self.raw.create_transaction()
        try:
            return int(self.raw.get_or_insert_map(txn, name).len(txn))
        finally:
            txn.commit()
            txn.drop()

    def map_lens(self, names: tuple[str, ...]) -> list[int]:
        """:meth:`map_len` of several root maps, in one transaction."""
        raw, txn = self.raw, self.txn
        if txn is not None:
            return [int(raw.get_or_insert_map(txn, name).len(txn)) for name in names]
        txn = raw.create_transaction()
        try:
            return [int(raw.get_or_insert_map(txn, name).len(txn)) for name in names]
        finally:
            txn.commit()
            txn.drop()

    def map_keys(self, name: str) -> list[str]:
        """The keys of the root map ``name``."""
        raw, txn = self.raw, self.txn
        if txn is not None:
            return list(raw.get_or_insert_map(txn, name).keys(txn))
        txn = raw.create_transaction()
        try:
            return list(raw.get_or_insert_map(txn, name).keys(txn))
        finally:
            txn.commit()
            txn.drop()

    def map_values(self, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
        """The values under ``keys`` of the root map ``name`` (those it holds), as the binding
        converts them: plain values for JSON ones, binding objects for shared types."""
        raw, txn = self.raw, self.txn
        own = txn is None
        if own:
            txn = raw.create_transaction()
        try:
            ymap = raw.get_or_insert_map(txn, name)
            return {key: ymap.get(txn, key) for key in keys if ymap.has(txn, key)}
        finally:
            if own:
                txn.commit()
                txn.drop()

    def get_update(self, state: bytes | None = None) -> bytes:
        """The update from ``state`` (a state vector; None: from the beginning)."""
        with self.transaction() as txn:
            return bytes(self.raw.get_update(txn, b"\x00" if state is None else state))

    def apply_update(self, update: bytes) -> None:
        self.merges += 1
        if self.txn is not None:  # with other changes: observers ask Yrs what changed
            self.raw.apply_update(self.txn, update)
            return
        txn = self.txn = self.raw.create_transaction()
        incoming: Incoming | None = None
        before: dict[int, int] | None = None
        try:
            if self.watch:
                before = statevector.decode(bytes(self.raw.get_state(txn)))
                incoming = self.incoming = Incoming(update)
            self.raw.apply_update(txn, update)
        except BaseException:
            before = None  # whatever an array read from the update is not to be trusted
            raise
        finally:
            self.txn = None
            try:
                txn.commit()  # the observers run here
            finally:
                txn.drop()
                self.incoming = None
                if incoming is not None and incoming.landed:
                    self._settle(incoming, before)

    def _settle(self, incoming: Incoming, before: dict[int, int] | None) -> None:
        """Keep what arrays read from ``incoming`` only if Yrs integrated exactly its structs: all
        of them, from where the document's clocks ended, and nothing it held back before."""
        structs = incoming.structs()
        expected = None
        if structs is not None and before is not None:
            expected = yremote.integrated(before, structs)
        exact = expected is not None and statevector.decode(self.get_state()) == expected
        for array, landing, told in incoming.landed:
            array.landed(landing if exact else None, told)


def _capture_into(ref: weakref.ref[YDoc]) -> Callable[[Any], None]:
    """The observer that keeps a capturing transaction's update. It holds its document weakly: Yrs
    holds the observer, and Python's garbage collector cannot see through Yrs, so an observer
    holding the document would keep it (and all it holds) alive for as long as the process runs."""

    def on_transaction(event: Any) -> None:
        doc = ref()
        if doc is not None and doc._capturing:
            doc._captured = bytes(event.update)

    return on_transaction


class Incoming:
    """An update :meth:`YDoc.apply_update` is merging, read (once) by the arrays observing it."""

    __slots__ = ("_structs", "landed", "update")

    def __init__(self, update: bytes):
        self.update = update
        self._structs: ystructs.Structs | bool | None = False
        self.landed: list[tuple[YArray, yremote.Landing, bool]] = []
        """(array, where the update's items landed in it, whether its observer was told so)."""

    def structs(self) -> ystructs.Structs | None:
        if self._structs is False:
            try:
                self._structs = ystructs.read(self.update)
            except ValueError:
                self._structs = None
        return self._structs if isinstance(self._structs, ystructs.Structs) else None


class Captured:
    """What :meth:`YDoc.transact_capturing` yields: ``update`` once the transaction committed."""

    __slots__ = ("update",)

    def __init__(self) -> None:
        self.update: bytes | None = None


def _current(doc: YDoc) -> Any:
    return doc.txn


class YMap:
    """A root map of JSON values (the subset of ``dict`` the CRDTs in :mod:`crdtmem.crdt` use).

    Every method runs in the document's current transaction; outside one it opens its own.
    """

    __slots__ = ("_doc", "_name", "_ref")

    def __init__(self, doc: YDoc, name: str):
        self._doc = doc
        self._name = name
        self._ref: Any = None

    def _map(self, txn: Any) -> Any:
        if self._ref is None:
            self._ref = self._doc.raw.get_or_insert_map(txn, self._name)
        return self._ref

    def plain(self) -> dict[str, JSON]:
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                return self.plain()
        value: dict[str, JSON] = json.loads(self._map(txn).to_json(txn))
        return value

    def get(self, key: str, default: JSON = None) -> JSON:
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                return self.get(key, default)
        ymap = self._map(txn)
        return ymap.get(txn, key) if ymap.has(txn, key) else default

    def __setitem__(self, key: str, value: JSON) -> None:
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                self[key] = value
                return
        self._map(txn).insert(txn, key, value)

    def __delitem__(self, key: str) -> None:
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                del self[key]
                return
        ymap = self._map(txn)
        if not ymap.has(txn, key):
            raise KeyError(key)
        ymap.remove(txn, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __len__(self) -> int:
        """How many entries the map holds, counted by Yrs (no key is copied out)."""
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                return len(self)
        return int(self._map(txn).len(txn))

    def keys(self) -> list[str]:
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                return self.keys()
        return list(self._map(txn).keys(txn))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> Iterator[tuple[str, JSON]]:
        return iter(self.plain().items())

    def values(self) -> Iterator[JSON]:
        return iter(self.plain().values())

    def update(self, values: dict[str, JSON]) -> None:
        self.insert_many(values.items())

    def insert_many(self, entries: Iterable[tuple[str, JSON]]) -> None:
        """Set many keys in one transaction, looking the transaction and the map up once."""
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                self.insert_many(entries)
                return
        ymap = self._map(txn)
        for key, value in entries:
            ymap.insert(txn, key, value)


class YArray:
    """A root array of JSON values (what :class:`~crdtmem.crdt.Conversation` uses)."""

    __slots__ = (
        "_callback",
        "_doc",
        "_elsewhere",
        "_len",
        "_local",
        "_local_other",
        "_name",
        "_observed",
        "_ref",
        "_tail",
    )

    _ELSEWHERE = 256
    """Ids of items known not to be in this array, kept to place the next update's (:mod:`.yremote`)."""

    def __init__(self, doc: YDoc, name: str):
        self._doc = doc
        self._name = name
        self._ref: Any = None
        self._tail: tuple[ItemId, int] | None = None
        """An item of this array no live element follows (the last appended here, or by a merged
        update whose items :mod:`.yremote` placed), and :attr:`YDoc.merges` when it was: an update
        merged since may have appended after it."""
        self._observed = False
        self._local: list[tuple[int, JSON]] = []
        """Appends made through this object in the open transaction, while observed."""
        self._local_other = False
        """... and whether it made any other change in it (then Yrs tells the delta)."""
        self._len = 0
        """The array's length after the last transaction that changed it, while observed."""
        self._elsewhere: dict[ItemId, None] = {}
        self._callback: Callable[[list[dict[str, Any]] | None], None] | None = None

    def _array(self, txn: Any) -> Any:
        if self._ref is None:
            self._ref = self._doc.raw.get_or_insert_array(txn, self._name)
        return self._ref

    def to_py(self) -> list[JSON]:
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                return self.to_py()
        value: list[JSON] = json.loads(self._array(txn).to_json(txn))
        return value

    def observe(self, callback: Callable[[list[dict[str, Any]] | None], None]) -> Any:
        """Call ``callback`` as each transaction that changes this array commits, with the change
        delta (``[{"retain": n}, {"insert": [...]}, {"delete": n}]``), or with None for a change a
        delta of JSON values cannot describe: a shared type inserted into the array, or a change
        inside one it holds (a foreign client may write those; crdtmem never does).

        The delta of this replica's own appends is known as they are made; that of a merged update
        that only appends to a long array is read from the update (:mod:`.yremote`); otherwise
        Yrs is asked, which walks the array. Returns the subscription: the callback runs while it
        is referenced.
        """

        def on_events(events: list[Any]) -> None:
            local, self._local = self._local, []
            other, self._local_other = self._local_other, False
            txn = events[0].transaction if events else None
            try:
                if local and not other:
                    # A transaction of this replica's own appends (crdtmem's writes to the array
                    # are only ever those): the delta is known. Asking Yrs for it walks the array.
                    known: list[dict[str, Any]] = []
                    at = 0
                    for position, value in local:
                        if position > at:
                            known.append({"retain": position - at})
                        known.append({"insert": [value]})
                        at = position + 1
                    callback(known)
                    return
                incoming = self._doc.incoming
                if incoming is not None and not local and not other and self._merged(events, incoming):
                    return
                for event in events:  # the binding's event classes declare no attributes: Any
                    own: Any = event if isinstance(event, _pycrdt.ArrayEvent) else None
                    delta = own.delta if own is not None and not own.path else None
                    if delta is not None and not all(
                        _plain(v) for step in delta for v in step.get("insert", ())
                    ):
                        delta = None
                    callback(delta)
                    if incoming is not None and len(events) == 1 and delta is not None:
                        self._learn(incoming, delta)
            finally:
                if txn is not None and self._ref is not None:
                    self._len = self._ref.len(txn)
                    self._doc.watch = self._len >= yremote.FAST_AT

        with self._doc.transaction() as txn:
            array = self._array(txn)
            self._len = array.len(txn)
        self._observed = True
        self._callback = callback
        self._doc.watch = self._len >= yremote.FAST_AT
        return array.observe_deep(on_events)

    def _valid_tail(self) -> ItemId | None:
        """The tail, if no update other than the one being merged came since it was known."""
        tail = self._tail
        return tail[0] if tail is not None and tail[1] == self._doc.merges - 1 else None

    def _merged(self, events: list[Any], incoming: Incoming) -> bool:
        """Tell the callback what a merged update appended, read from the update; False if that
        cannot be done (then Yrs is asked)."""
        if len(events) != 1 or not isinstance(events[0], _pycrdt.ArrayEvent):
            return False
        event: Any = events[0]  # the binding's event classes declare no attributes
        if event.path:
            return False
        structs = incoming.structs()
        if structs is None or self._callback is None:
            return False
        landing = yremote.appended(structs, self._name, self._valid_tail(), self._len, self._elsewhere)
        if landing is None or self._ref.len(event.transaction) != self._len + len(landing.values):
            return False
        known: list[dict[str, Any]] = [{"retain": self._len}] if self._len else []
        known.append({"insert": landing.values})
        incoming.landed.append((self, landing, True))
        self._callback(known)
        return True

    def _learn(self, incoming: Incoming, delta: list[dict[str, Any]]) -> None:
        """After Yrs told an append at the end: which of the update's items it was (:mod:`.yremote`)."""
        head: list[dict[str, Any]] = [{"retain": self._len}] if self._len else []
        if len(delta) != len(head) + 1 or delta[: len(head)] != head or list(delta[-1]) != ["insert"]:
            return
        structs = incoming.structs()
        landing = yremote.learned(structs, list(delta[-1]["insert"])) if structs is not None else None
        if landing is not None:
            incoming.landed.append((self, landing, False))

    def landed(self, landing: yremote.Landing | None, told: bool) -> None:
        """The merge of an update this array read is over: keep what it read (its tail, the items
        elsewhere), or, when Yrs did not integrate exactly the update (``landing`` None), forget
        it, and if the callback was told from the update, put it out of step."""
        if landing is None:
            self._tail = None
            self._elsewhere.clear()
            if told and self._callback is not None:
                self._callback(None)
            return
        self._tail = (landing.tail, self._doc.merges) if landing.tail is not None else None
        self._elsewhere.update(dict.fromkeys(landing.elsewhere))
        while len(self._elsewhere) > self._ELSEWHERE:
            del self._elsewhere[next(iter(self._elsewhere))]

    def append(self, value: JSON) -> None:
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                self.append(value)
                return
        array = self._array(txn)
        end = array.len(txn)
        doc = self._doc
        client = doc.raw.client_id()
        clock = statevector.decode(bytes(doc.raw.get_state(txn))).get(client, 0)
        tail, update = self._tail, None
        if tail is not None and tail[1] == doc.merges:  # else Yrs walks to the end, once
            update = yappend.update_after(tail[0], client, clock, value)
        if update is None:
            array.insert(txn, end, value)
        else:
            doc.raw.apply_update(txn, update)
            if array.len(txn) != end + 1:  # never: the item's clock and origin are the document's own
                raise RuntimeError(f"appending after item {tail} did not integrate into {self._name!r}")
        self._tail = ((client, clock), doc.merges)
        if self._observed:
            self._local.append((end, value))

    def remove(self, index: int) -> None:
        """Delete the element at ``index``."""
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                self.remove(index)
                return
        self._array(txn).remove_range(txn, index, 1)
        self._local_other = True
        self._tail = None

    def clear(self) -> None:
        """Delete every element (the ones this document holds; concurrent inserts survive)."""
        txn = _current(self._doc)
        if txn is None:
            with self._doc.transaction():
                self.clear()
                return
        array = self._array(txn)
        array.remove_range(txn, 0, array.len(txn))
        self._local_other = True
        self._tail = None


def _plain(value: object) -> bool:
    """A JSON value as Yrs hands it over (nested values of a plain map or list are plain too)."""
    return value is None or isinstance(value, (dict, list, str, int, float, bool))


def snapshot(
    doc: YDoc, maps: Iterable[str] = MAP_ROOTS, arrays: Iterable[str] = ARRAY_ROOTS
) -> dict[str, JSON]:
    """Roots of a memory document (by default all of them) as plain JSON values: ``{root name: value}``.
    Outside a transaction it opens one of its own directly (every record read back comes here)."""
    ydoc, txn = doc.raw, doc.txn
    own = txn is None
    if own:
        txn = ydoc.create_transaction()
    try:
        parts = [f'"{name}":{ydoc.get_or_insert_map(txn, name).to_json(txn)}' for name in maps]
        parts += [f'"{name}":{ydoc.get_or_insert_array(txn, name).to_json(txn)}' for name in arrays]
    finally:
        if own:
            txn.commit()
            txn.drop()
    value: dict[str, JSON] = json.loads("{" + ",".join(parts) + "}")
    return value
