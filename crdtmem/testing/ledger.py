"""The ledger of acknowledged writes, which knows what every replica must hold.

:class:`AcknowledgedWrites` is a ledger of the writes a replica acknowledged. Run writes through it
(``await acked.run(replica, memory_id, op)``) and it records, for each write, which earlier writes the
writing replica had applied at that moment, i.e. exactly which ones the write overwrote or removed.
After a full exchange, :func:`~crdtmem.testing.checks.assert_acknowledged_present` then knows the
*exact* expected state:

- register fields (content, metadata keys, lifecycle): the set of values of acknowledged writes that
  no later write observed (one value: a clean read; several: a conflict listing exactly them);
- lists and tags (add-wins OR-sets): every added element whose add no removal observed;
- counters: the initial value plus every acknowledged increment;
- conversations: every acknowledged message, no more and no fewer;
- a new incarnation of a deleted memory (:class:`~crdtmem.testing.strategies.Revive`) removes what
  its write observed of the old one (values, elements, messages; a counter starts from its new
  value) and nothing it did not observe.

Rebased memories (``docs/protocol.md`` §7.11): a document of a later epoch holds every write within
the ``base`` of the epochs after the write's own, and a write its replica carried over a rebase
wherever the carried change is; call :meth:`AcknowledgedWrites.watch` on each replica to follow
the changes it carries. A carried change always holds its writer's values, but not always the
removals its writer had made or received concurrently with the rebase (``docs/protocol.md`` §10:
a carrier keeps an entry when it cannot tell it had observed it). So a value, element or message
removed only by writes that a replica's document holds as carried over a rebase, not as they were
made, may read as still there; everything else is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pycrdt

from ..crdt.dots import decode_value, encode_value
from ..document import epoch as epochs
from ..document import statevector
from ..document.erasure import is_marker
from ..document.memory import UNSET
from ..document.records import REGISTER_KINDS, Kind, Memory
from ..store.base import DeltaRecord, Store
from .state import ReplicaLike, current_records
from .strategies import (
    AddItems,
    AppendMessage,
    Delete,
    Increment,
    MemorySpec,
    Operation,
    RemoveItems,
    Resolve,
    Revive,
    Update,
)

if TYPE_CHECKING:
    from ..engine.replica import Replica

__all__ = ["AcknowledgedWrites"]


@dataclass(slots=True)
class _Entry:
    """One acknowledged value in a register or one acknowledged add in an OR-set."""

    uid: str
    text: str
    live: bool = True
    removed_by: list[str] = field(default_factory=list)
    """The writes that observed it and overwrote or removed it."""


@dataclass(slots=True)
class _MemoryLedger:
    kind: Kind
    channels: tuple[str, ...]
    registers: dict[str, list[_Entry]] = field(default_factory=dict)
    items: list[_Entry] = field(default_factory=list)
    tags: list[_Entry] = field(default_factory=list)
    increments: list[tuple[str, int]] = field(default_factory=list)
    """A counter's changes: (uid of the write, amount)."""
    messages: list[_Entry] = field(default_factory=list)
    """Messages as entries whose text is the JSON of ``[role, text]``."""
    marks: dict[str, list[_Mark]] = field(default_factory=dict)
    """Each write's epoch and Yrs (client, clock after it): a replica whose document, of that
    epoch, has a state vector that reaches it, or whose document's epochs include a later one
    whose ``base`` reaches it, had applied the write (deltas, or a state folding them: the log
    alone does not tell, once it is compacted). A write carried over a rebase by its writer has
    the carried change's mark too."""
    writers: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Each write's replica and the number of the epoch it was made on."""

    def observed_by(self, seen: _Seen) -> set[str]:
        return {uid for uid, marks in self.marks.items() if any(seen.holds(m) for m in marks)}

    def may_come_back(self, entry: _Entry, seen: _Seen) -> bool:
        """Whether a removed ``entry`` may still read as live in a document that holds ``seen``:
        when no write that removed it is in that document as it was made (in its epoch, or in the
        ``base`` an epoch was rebuilt from), only as a change carried over a rebase. A carrier does
        not always remove what a removal concurrent with the rebase removed (``docs/protocol.md``
        §10: it keeps an entry when it cannot tell it had observed it); it always writes its sets."""
        return not entry.live and not any(
            seen.holds(self.marks[uid][0]) for uid in entry.removed_by if uid in self.marks
        )

    def mark(self, uid: str, update: bytes, seen: _Seen, writer: str) -> None:
        mark = seen.mark(update)
        if mark is not None:
            self.marks[uid] = [mark]
            self.writers[uid] = (writer, seen.n)

    def carried(self, update: bytes, seen: _Seen, writer: str) -> None:
        """``writer`` carried its changes made on earlier epochs over onto its document's epoch
        with the change ``update`` (``docs/protocol.md`` §7.11): a replica that holds that change
        holds them."""
        mark = seen.mark(update)
        if mark is None:
            return
        for uid, (by, n) in self.writers.items():
            if by == writer and n < seen.n:
                self.marks[uid].append(mark)


_Mark = tuple[int, int, int]
"""``(epoch, client, clock)``: a Yrs client's clock in one epoch's document, the epoch named by its
client (0: the memory's first document). A replica keeps its Yrs client across epochs, whose
clocks start again from 0, so a clock means nothing without its epoch."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a replica's document of a memory holds: its epoch (client and number), its state
    vector, and for each earlier epoch the ``base`` of the epoch after it (every item of it that
    the rebase rebuilt, ``docs/protocol.md`` §7.11)."""

    vector: dict[int, int]
    epoch: int = 0
    n: int = 0
    bases: dict[int, dict[int, int]] = field(default_factory=dict)

    def mark(self, update: bytes) -> _Mark | None:
        """The mark of a change this document holds, written by the first client of ``update``."""
        block = statevector.first_block(update)
        return None if block is None else (self.epoch, block[1], self.vector.get(block[1], 0))

    def holds(self, mark: _Mark) -> bool:
        epoch, client, clock = mark
        vector = self.vector if epoch == self.epoch else self.bases.get(epoch, {})
        return vector.get(client, 0) >= clock


def _seen(store: Store, memory_id: str) -> _Seen:
    state = store.load_state(memory_id)
    if state is None:
        return _Seen({})
    vector = statevector.decode(pycrdt.get_state(state))
    epoch = epochs.state_epoch(state)
    if epoch is None:
        return _Seen(vector)
    chain = epoch.chain()
    before = [0, *(client for client, _ in chain[:-1])]  # the epoch each base was built from
    bases = {e: statevector.decode(base) for e, (_, base) in zip(before, chain, strict=True)}
    return _Seen(vector, epoch.client, epoch.n, bases)


class _Change:
    """Records one acknowledged change; ``observed`` are the delta uids its replica had applied."""

    def __init__(self, ledger: _MemoryLedger, uid: str, observed: set[str]):
        self.ledger, self.uid, self.observed = ledger, uid, observed | {uid}

    def write(self, register: str, value: Any) -> None:
        self.clear(register)
        self.ledger.registers.setdefault(register, []).append(_Entry(self.uid, encode_value(value)))

    def clear(self, register: str) -> None:
        for entry in self.ledger.registers.get(register, []):
            if entry.uid in self.observed:
                self._remove(entry)

    def _remove(self, entry: _Entry) -> None:
        entry.live = False
        if self.uid not in entry.removed_by:
            entry.removed_by.append(self.uid)

    def add(self, entries: list[_Entry], value: Any) -> None:
        entries.append(_Entry(self.uid, encode_value(value)))

    def remove(self, entries: list[_Entry], value: Any) -> None:
        text = encode_value(value)
        for entry in entries:
            if entry.text == text and entry.uid in self.observed:
                self._remove(entry)

    def remove_all(self, entries: list[_Entry]) -> None:
        for entry in entries:
            if entry.uid in self.observed:
                self._remove(entry)

    def increment(self, amount: int) -> None:
        self.ledger.increments.append((self.uid, amount))

    def append(self, role: str, text: str) -> None:
        self.ledger.messages.append(_Entry(self.uid, encode_value([role, text])))

    def initial(self, kind: Kind, content: Any) -> None:
        """The content a create or a revival writes (after a revival's removals)."""
        ledger = self.ledger
        if kind in REGISTER_KINDS:
            self.write("content", content)
        elif kind == "list":
            for item in content or ():
                self.add(ledger.items, item)
        elif kind == "counter":
            seen = sum(amount for uid, amount in ledger.increments if uid in self.observed)
            self.increment((content or 0) - seen)
        else:
            for message in content or ():
                self.append(message["role"], message["text"])


class AcknowledgedWrites:
    """A ledger of acknowledged writes (see the module docstring).

    Run every write of a test through :meth:`create` and :meth:`run` (the operations of
    :mod:`~crdtmem.testing.strategies`). A write that raises was not acknowledged and is not
    recorded. Do not let the replica apply remote payloads while a ledger write on it is in
    progress: the ledger reads what the replica had applied just before the write.
    """

    def __init__(self) -> None:
        self._memories: dict[str, _MemoryLedger] = {}
        self.acknowledged = 0
        self.forgotten: set[str] = set()
        """Memories forgotten (``Replica.forget``): every write to them is gone, by design."""
        self._writing = False

    def watch(self, replica: Replica) -> Callable[[], None]:
        """Follow ``replica``'s commits for the changes it carries over a rebase (a local delta
        logged while it applies a peer's payload, ``docs/protocol.md`` §7.11): a replica that holds
        such a change holds the writes it carried. Call it on every replica the ledger's writes go
        to, right after it starts; returns the function that stops following it."""

        def committed(deltas: list[DeltaRecord]) -> None:
            if self._writing:  # the ledger's own write, recorded by create or run
                return
            for delta in deltas:
                ledger = self._memories.get(delta.doc_id)
                if (
                    ledger is None
                    or delta.origin != replica.id
                    or delta.uid in ledger.marks
                    or epochs.is_rebase(delta.deps, delta.update)
                    or is_marker(delta.deps, delta.update)
                ):
                    continue
                ledger.carried(delta.update, _seen(replica.store, delta.doc_id), replica.id)

        return replica.on_commit(committed)

    def forget(self, memory_id: str) -> None:
        """``memory_id`` was forgotten: nothing written to it is expected anywhere any more."""
        self.forgotten.add(memory_id)

    @property
    def memory_ids(self) -> list[str]:
        return sorted(self._memories)

    async def create(self, replica: Replica, spec: MemorySpec, memory_id: str | None = None) -> Memory:
        """``spec.create(replica)``, recorded."""
        self._writing = True
        try:
            memory = await spec.create(replica, memory_id)
        finally:
            self._writing = False
        (delta,) = replica.store.history(memory.id)
        ledger = _MemoryLedger(memory.kind, memory.channels)
        ledger.mark(delta.uid, delta.update, _seen(replica.store, memory.id), replica.id)
        self._memories[memory.id] = ledger
        change = _Change(ledger, delta.uid, set())
        change.write("lifecycle", "active")
        change.initial(spec.kind, spec.content)
        for key, value in spec.metadata.items():
            change.write(f"metadata.{key}", value)
        for tag in spec.tags:
            change.add(ledger.tags, tag)
        self.acknowledged += 1
        return memory

    async def run(self, replica: Replica, memory_id: str, op: Operation) -> Memory:
        """``op.apply(replica, memory_id)``, recorded, with read-your-writes checked on the result."""
        ledger = self._memories.get(memory_id)
        if ledger is None:
            raise KeyError(f"memory {memory_id!r} was not created through this ledger")
        logged = {d.uid for d in replica.store.history(memory_id)}
        observed = ledger.observed_by(_seen(replica.store, memory_id))
        self._writing = True
        try:
            memory: Memory = await op.apply(replica, memory_id)
        finally:
            self._writing = False
        new = [d for d in replica.store.history(memory_id) if d.uid not in logged]
        if not new:
            return memory  # the operation wrote nothing (e.g. removing nothing)
        if len(new) != 1:
            raise AssertionError(f"one write to {memory_id} logged {len(new)} deltas: {[d.uid for d in new]}")
        ledger.mark(new[0].uid, new[0].update, _seen(replica.store, memory_id), replica.id)
        self._record(_Change(ledger, new[0].uid, observed), op)
        _check_read_your_write(memory, op)
        self.acknowledged += 1
        return memory

    @staticmethod
    def _record(change: _Change, op: Operation) -> None:
        ledger = change.ledger
        if isinstance(op, Delete):
            change.write("lifecycle", "deleted")
            return
        if isinstance(op, Resolve):
            change.write(op.field, op.value)
            return
        change.write("lifecycle", "active")
        if isinstance(op, Revive):
            for name in ledger.registers:
                if name != "lifecycle":
                    change.clear(name)
            for entries in (ledger.items, ledger.tags, ledger.messages):
                change.remove_all(entries)
            change.initial(op.kind, op.content)
            for key, value in op.metadata.items():
                change.write(f"metadata.{key}", value)
            for tag in op.tags:
                change.add(ledger.tags, tag)
        elif isinstance(op, Update):
            if op.content is not UNSET:
                change.write("content", op.content)
            for key, value in op.metadata.items():
                change.write(f"metadata.{key}", value)
            for key in op.remove_metadata:
                change.clear(f"metadata.{key}")
            for tag in op.add_tags:
                change.add(ledger.tags, tag)
            for tag in op.remove_tags:
                change.remove(ledger.tags, tag)
        elif isinstance(op, Increment):
            change.increment(op.amount)
        elif isinstance(op, AddItems):
            for item in op.items:
                change.add(ledger.items, item)
        elif isinstance(op, RemoveItems):
            for item in op.items:
                change.remove(ledger.items, item)
        elif isinstance(op, AppendMessage):
            change.append(op.role, op.text)
        else:
            raise TypeError(f"the ledger does not know how to record {op!r}")

    def expected(self, memory_id: str) -> dict[str, Any]:
        """The exact state every replica must reach after a full exchange, for error messages."""
        ledger = self._memories[memory_id]
        found: dict[str, Any] = {
            name: sorted({e.text for e in entries if e.live}) for name, entries in ledger.registers.items()
        }
        if ledger.kind == "list":
            found["items"] = sorted({e.text for e in ledger.items if e.live})
        elif ledger.kind == "counter":
            found["total"] = sum(amount for _, amount in ledger.increments)
        elif ledger.kind == "conversation":
            found["messages"] = sorted(tuple(decode_value(e.text)) for e in ledger.messages if e.live)
        found["tags"] = sorted({e.text for e in ledger.tags if e.live})
        return found

    def may_come_back(self, replica: ReplicaLike, memory_id: str) -> dict[str, list[Any]]:
        """What else :meth:`observed` may show on ``replica`` beside :meth:`expected`: removed
        values whose removals reached its document only carried over a rebase
        (:meth:`_MemoryLedger.may_come_back`), in :meth:`expected`'s form."""
        ledger = self._memories[memory_id]
        seen = _seen(replica.store, memory_id)
        found: dict[str, list[Any]] = {
            name: [e.text for e in entries if ledger.may_come_back(e, seen)]
            for name, entries in ledger.registers.items()
        }
        if ledger.kind == "list":
            found["items"] = [e.text for e in ledger.items if ledger.may_come_back(e, seen)]
        elif ledger.kind == "conversation":
            found["messages"] = [
                tuple(decode_value(e.text)) for e in ledger.messages if ledger.may_come_back(e, seen)
            ]
        found["tags"] = [e.text for e in ledger.tags if ledger.may_come_back(e, seen)]
        return found

    def observed(self, replica: ReplicaLike, memory_id: str) -> dict[str, Any]:
        """The same view as :meth:`expected`, read from ``replica``'s store."""
        ledger = self._memories[memory_id]
        current = current_records(replica.store).get(memory_id)
        if current is None:
            return {}
        memory = Memory.from_dict(current[0])
        conflicts = {c.field: c for c in current[1]}

        def register(name: str, winner: Any, present: bool) -> list[str]:
            if name in conflicts:
                return sorted({encode_value(v.value) for v in conflicts[name].values})
            return [encode_value(winner)] if present else []

        found: dict[str, Any] = {
            "lifecycle": register("lifecycle", "deleted" if memory.deleted else "active", True)
        }
        if memory.kind in REGISTER_KINDS:
            found["content"] = register("content", memory.content, True)
        for key in set(memory.metadata) | {
            n.removeprefix("metadata.") for n in ledger.registers if n.startswith("metadata.")
        }:
            found[f"metadata.{key}"] = register(
                f"metadata.{key}", memory.metadata.get(key), key in memory.metadata
            )
        if memory.kind == "list":
            found["items"] = sorted(encode_value(v) for v in memory.content)
        elif memory.kind == "counter":
            found["total"] = memory.content
        elif memory.kind == "conversation":
            found["messages"] = sorted((m["role"], m["text"]) for m in memory.content)
        found["tags"] = sorted(encode_value(t) for t in memory.tags)
        return found

    def channels_of(self, memory_id: str) -> tuple[str, ...]:
        return self._memories[memory_id].channels


def _check_read_your_write(memory: Memory, op: Operation) -> None:
    """The replica that acknowledged a write must show it in the memory it returned."""
    problem = ""
    if isinstance(op, Delete) and not (memory.deleted and "lifecycle" not in memory.conflicts):
        problem = "deleted memory does not read as deleted"
    elif isinstance(op, Resolve) and op.field in memory.conflicts:
        problem = f"resolved field {op.field!r} is still in conflict"
    elif isinstance(op, Revive):
        problem = _revived_problem(memory, op)
    elif isinstance(op, Update):
        if op.content is not UNSET and (memory.content != op.content or "content" in memory.conflicts):
            problem = f"content reads {memory.content!r}"
        for key, value in op.metadata.items():
            if key not in op.remove_metadata and memory.metadata.get(key) != value:
                problem = f"metadata {key!r} reads {memory.metadata.get(key)!r}"
        tags = {encode_value(t) for t in memory.tags}
        removed = {encode_value(t) for t in op.remove_tags}
        if any(encode_value(t) not in tags for t in op.add_tags if encode_value(t) not in removed):
            problem = f"added tags missing from {memory.tags!r}"
        if removed & tags:
            problem = f"removed tags still in {memory.tags!r}"
    elif isinstance(op, AddItems):
        present = {encode_value(v) for v in memory.content}
        if any(encode_value(v) not in present for v in op.items):
            problem = f"added items missing from {memory.content!r}"
    elif isinstance(op, RemoveItems):
        if {encode_value(v) for v in op.items} & {encode_value(v) for v in memory.content}:
            problem = f"removed items still in {memory.content!r}"
    elif isinstance(op, AppendMessage) and not any(
        m["role"] == op.role and m["text"] == op.text for m in memory.content
    ):
        problem = "appended message missing"
    if problem:
        raise AssertionError(f"read-your-writes: after {op!r} on {memory.id}: {problem}")


def _revived_problem(memory: Memory, op: Revive) -> str:
    """What the writer's read of a memory it just revived shows of an older incarnation, if anything
    (nothing of it can be left: the revival observed all of it, and nothing concurrent has arrived)."""
    if memory.deleted or memory.conflicted:
        return "a revived memory reads as deleted or conflicted"
    have: Any = memory.content
    want: Any = op.content
    if op.kind == "list":
        want = [decode_value(t) for t in dict.fromkeys(encode_value(v) for v in op.content)]
    elif op.kind == "counter":
        want = op.content or 0
    elif op.kind == "conversation":
        have = [[m["role"], m["text"]] for m in memory.content]
        want = [[m["role"], m["text"]] for m in op.content]
    if encode_value(have) != encode_value(want):
        return f"content reads {memory.content!r}, not {want!r}"
    if encode_value(memory.metadata) != encode_value(dict(op.metadata)):
        return f"metadata reads {memory.metadata!r}"
    if {encode_value(t) for t in memory.tags} != {encode_value(t) for t in op.tags}:
        return f"tags read {memory.tags!r}"
    return ""
