"""The erase marker of a forgotten memory, and the stubs its content leaves in the log.

Forgetting a memory (``Replica.forget``) writes one more delta on the memory's channels: its
*erase marker*. The marker's update is a self-contained Yrs update (written by a throwaway client,
so it depends on nothing: its ``deps`` are the empty state vector) that sets the root map
``erased`` to ``{"by": origin, "hlc": stamp}``. It carries no content of the memory, so every
replica can keep it for good and relay it like any delta; a peer that does not know markers applies
it as a harmless root it does not read (``docs/protocol.md`` §7.9).

Every other delta of a forgotten memory keeps its place in the log (its uid, origin, stamp and
sequence numbers, which version vectors count), but loses its content: its update becomes the empty
update and its deps the empty state vector, unsigned. Such a *stub* tells a peer which entries to
log without content, so its vectors move past them instead of waiting for deltas nobody sends.
"""

from __future__ import annotations

import secrets

from .yroots import YDoc, YMap

ROOT = "erased"
EMPTY_DEPS = b"\x00"
"""The empty Yrs state vector: a delta with these deps depends on nothing."""
EMPTY_UPDATE = b"\x00\x00"
"""A Yrs v1 update with no structs and no deletions: a stub's update."""


def marker_update(origin: str, hlc: str) -> bytes:
    """The Yrs update of an erase marker by ``origin`` at ``hlc`` (depends on nothing)."""
    doc = YDoc(client_id=secrets.randbits(52) + 1)  # a throwaway writer: its clock starts at 0
    root = YMap(doc, ROOT)
    with doc.transaction():
        root["by"] = origin
        root["hlc"] = hlc
    return doc.get_update()


def is_marker(deps: bytes, update: bytes) -> bool:
    """Whether a delta is an erase marker: it depends on nothing and writes the ``erased`` root."""
    if deps != EMPTY_DEPS or ROOT.encode() not in update:
        return False
    doc = YDoc()
    try:
        doc.apply_update(update)
        return bool(YMap(doc, ROOT).plain())
    except Exception:  # not a Yrs update: not a marker (the ordinary checks refuse it)
        return False


def is_stub(deps: bytes, update: bytes) -> bool:
    """Whether a delta is the stub of an erased one (its content removed)."""
    return update == EMPTY_UPDATE and deps == EMPTY_DEPS
