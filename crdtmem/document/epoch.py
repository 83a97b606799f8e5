"""Rebasing a memory document: a new *epoch* of it, rebuilt from its live content, without tombstones.

Yrs keeps a tombstone for every map entry ever overwritten or deleted, inside the document state: a
fact updated 10,000 times carries about 18 bytes of them per update, for good, whatever the log
compaction folds. Rebasing rebuilds the document from what it holds now (every live entry of every
root, under the same keys, with the same values: register siblings, hence conflicts, stay as they
are) in a fresh Yrs document written by a fresh client: the next *epoch* of the memory.

The rebase travels as a delta of the memory (a *rebase entry*, ``docs/protocol.md`` §7.11)::

    deps    the one-client state vector {c: 1}, c being the new epoch's Yrs client
    update  the whole new document, written by client c alone from clock 0, with the root
            ``epoch`` = {"n", "client", "base", "lineage", "by", "hlc"}

A rebase entry depends on its own first struct: a receiver that does not know rebases never finds
that dependency met and never applies it (nor any delta of the new epoch, which all depend on
client c), so it cannot merge two epochs into one document. ``base`` is the state vector of the
document the epoch was built from; ``lineage`` lists every earlier epoch's ``[client, base]``.

A delta *belongs* to the epoch whose client its deps name (none: epoch 0). A delta of an earlier
epoch is *covered* when every struct it inserts lies within the base of the epoch that followed
its own: the rebuilt document holds its effect already. Otherwise it was made concurrently with a
rebase.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import pycrdt

from . import statevector
from .yroots import ARRAY_ROOTS, MAP_ROOTS, YArray, YDoc, YMap

ROOT = "epoch"
_ROOT_BYTES = ROOT.encode()


@dataclass(frozen=True, slots=True)
class Epoch:
    """A rebased document's ``epoch`` root."""

    n: int
    client: int
    """The Yrs client that wrote the epoch's first state (every later delta of it depends on it)."""
    base: bytes
    """The state vector (v1) of the previous epoch's document this one was built from."""
    lineage: tuple[tuple[int, bytes], ...] = ()
    """``(client, base)`` of every earlier epoch, epoch 1 first."""
    by: str = ""
    hlc: str = ""

    def chain(self) -> tuple[tuple[int, bytes], ...]:
        """``(client, base)`` of epochs 1 .. n."""
        return (*self.lineage, (self.client, self.base))

    def to_yrs(self) -> dict[str, str]:
        return {
            "n": str(self.n),
            "client": str(self.client),
            "base": self.base.hex(),
            "lineage": json.dumps([[str(c), b.hex()] for c, b in self.lineage]),
            "by": self.by,
            "hlc": self.hlc,
        }

    @classmethod
    def from_yrs(cls, raw: object) -> Epoch | None:
        if not isinstance(raw, dict) or not raw:
            return None
        try:
            lineage = tuple((int(c), bytes.fromhex(b)) for c, b in json.loads(raw["lineage"]))
            return cls(
                int(raw["n"]),
                int(raw["client"]),
                bytes.fromhex(raw["base"]),
                lineage,
                str(raw.get("by", "")),
                str(raw.get("hlc", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def epoch_of(doc: YDoc) -> Epoch | None:
    """The document's epoch (None: epoch 0, never rebased). An empty root is not converted: a
    remote apply reads the epoch of a document again after every delta applied to it."""
    return Epoch.from_yrs(YMap(doc, ROOT).plain()) if doc.map_len(ROOT) else None


def rebase_deps(client: int) -> bytes:
    """A rebase entry's deps: ``{client: 1}``."""
    return _varuint(1) + _varuint(client) + _varuint(1)


def rebuild(doc: YDoc, memory_id: str, by: str, hlc: str) -> tuple[bytes, Epoch]:
    """The next epoch of ``doc``: its live content in a fresh document; returns ``(update, epoch)``."""
    previous = epoch_of(doc)
    client = secrets.randbits(52) + 1  # a fresh writer: its clock starts at 0; a safe JS integer
    epoch = Epoch(
        (previous.n if previous else 0) + 1,
        client,
        doc.get_state(),
        previous.chain() if previous else (),
        by,
        hlc,
    )
    fresh = YDoc(client, memory_id)
    maps = {name: YMap(doc, name).plain() for name in MAP_ROOTS}
    arrays = {name: YArray(doc, name).to_py() for name in ARRAY_ROOTS}
    with fresh.transaction():
        for name, values in maps.items():
            target = YMap(fresh, name)
            for key in sorted(values):
                target[key] = values[key]
        for name, items in arrays.items():
            array = YArray(fresh, name)
            for item in items:
                array.append(item)
        YMap(fresh, ROOT).update(epoch.to_yrs())
    return fresh.get_update(), epoch


def is_rebase(deps: bytes, update: bytes) -> bool:
    """Whether a delta is a rebase entry (module docstring)."""
    if _ROOT_BYTES not in update:  # what rebase_client looks for first, before decoding anything
        return False
    try:
        need = statevector.decode(deps)
    except Exception:  # not a state vector: not a rebase entry (the ordinary checks refuse it)
        return False
    if len(need) != 1 or next(iter(need.values())) != 1:
        return False
    return rebase_client(update) == next(iter(need))


def rebase_client(update: bytes) -> int | None:
    """The new epoch's client if ``update`` is a rebase entry's update, else None."""
    epoch = rebase_epoch(update)
    return epoch.client if epoch is not None else None


def rebase_epoch(update: bytes) -> Epoch | None:
    """The epoch a rebase entry's update starts (one writer from clock 0, whose ``epoch`` root
    names it), or None if ``update`` is not one."""
    if _ROOT_BYTES not in update:
        return None
    try:
        block = statevector.first_block(update)
    except Exception:
        return None
    if block is None or block[0] != 1 or block[2] != 0:
        return None
    doc = YDoc()
    try:
        doc.apply_update(update)
    except Exception:
        return None
    epoch = epoch_of(doc)
    return epoch if epoch is not None and epoch.client == block[1] else None


def delta_epoch(current: Epoch, deps: bytes) -> int:
    """The epoch (0 .. current.n) whose document a delta with these deps was made on."""
    try:
        named = statevector.decode(deps)
    except Exception:
        return 0
    for n, (client, _) in reversed(list(enumerate(current.chain(), start=1))):
        if client in named:
            return n
    return 0


def unplaced(current: Epoch, deps: bytes, known: statevector.StateVector) -> bool:
    """Whether a delta whose ``deps`` name no epoch client of ``current``'s chain (so not of
    epochs 1 .. n) may yet be of a later epoch than ``current``, one whose rebase entry has not
    arrived: it names a client that no base of the chain holds, nor ``known`` (the document's
    clients, and those that wrote deltas of the memory seen here).

    A delta of epoch 0 names clients of the memory's first document: those the base of epoch 1
    holds, and writers of changes made concurrently with the rebase, whose deltas reach every
    replica of the memory. A delta of a later epoch names that epoch's fresh client, which writes
    nothing but its rebase entry. Such a delta waits for its dependencies (the rebase entry)
    instead of being superseded, which would log its entries without it for good."""
    try:
        named = statevector.decode(deps)
    except Exception:
        return False
    clients = set(known)
    for client, base in current.chain():
        clients.add(client)
        try:
            clients.update(statevector.decode(base))
        except Exception:
            continue
    return any(clock > 0 and client not in clients for client, clock in named.items())


def covered(current: Epoch, deps: bytes, update: bytes) -> bool:
    """Whether a delta of an earlier epoch than ``current`` is held by the epoch after its own
    (every struct it inserts lies within that epoch's base). A delta of the current epoch, or one
    that inserts nothing, is not covered."""
    n = delta_epoch(current, deps)
    if n >= current.n:
        return False
    return _inside(update, current.chain()[n][1])


def holds(doc: YDoc, update: bytes) -> bool:
    """Whether ``doc`` holds every struct ``update`` inserts (and it inserts some): applying it
    would change nothing."""
    return _inside(update, doc.get_state())


def _inside(update: bytes, base: bytes) -> bool:
    """Whether ``update`` inserts something and every struct it inserts lies within ``base`` (a
    state vector). Read from the encoded update (Yrs' diff against ``base``), not by applying it:
    an update whose dependencies are absent would stay pending, invisible."""
    try:
        return statevector.first_block(update) is not None and (
            statevector.first_block(pycrdt.get_update(update, base)) is None
        )
    except Exception:
        return False


def state_epoch(state: bytes) -> Epoch | None:
    """The epoch of a whole document state (None: never rebased, or not a Yrs update)."""
    if ROOT.encode() not in state:
        return None
    doc = YDoc()
    try:
        doc.apply_update(state)
    except Exception:
        return None
    return epoch_of(doc)


def within(local: Epoch | None, incoming: Epoch | None, state: bytes) -> bool:
    """Whether ``state``, of an earlier epoch (``incoming``) than the document's (``local``), holds
    nothing the document's epoch lacks: it lies within the base of the epoch after its own."""
    n = incoming.n if incoming is not None else 0
    if local is None or n >= local.n:
        return False
    if incoming is not None and local.chain()[n - 1][0] != incoming.client:
        return False
    return _inside(state, local.chain()[n][1])


def adoptable(local: YDoc, incoming: Epoch) -> bool:
    """Whether a document may be replaced by the ``incoming`` epoch: it holds nothing that epoch
    lacks (it is at an earlier epoch, and its state lies within the base of the epoch after it)."""
    mine = epoch_of(local)
    n = mine.n if mine is not None else 0
    if n >= incoming.n:
        return False
    if mine is not None and incoming.chain()[n - 1][0] != mine.client:
        return False  # another epoch n than this document's
    base = statevector.decode(incoming.chain()[n][1])
    return statevector.covers(base, statevector.decode(local.get_state()))


def _varuint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
