"""Carrying a replica's own changes over a rebase: a three-way merge onto the new epoch.

A replica whose document holds changes a new epoch lacks (made concurrently with the rebase) takes
the epoch anyway and writes the difference again on it, as one ordinary change
(``docs/protocol.md`` §7.11). Three documents take part::

    base    what the rebaser held: every item of the old epoch within the epoch's ``base`` vector
    ours    the old-epoch document this replica holds
    theirs  the new epoch's document (the rebase entry, or a state of the epoch)

Every entry of a crdtmem document names its writer and is written by it alone (a register or
counter entry under its replica id, a set entry under its dot, a message with its dot), so the
difference is read entry by entry, from the Yrs items behind them (:mod:`.ystructs`):

- **set**: an entry live in ours whose item lies outside ``base`` (the rebaser never held it),
  written by this replica, is set again, with the same key and value (its own stamp, so reads,
  siblings and conflicts are what they would have been). Entries of other writers are carried by
  their writers, each when it takes the epoch: two carriers of one entry could set different
  versions of it concurrently, and an array would hold a message twice.
- **delete**: an entry of theirs that ours held and no longer holds (deleted here, by this replica
  or by a change it received) is deleted. "Held" is certain for a key written once (a set entry);
  for an entry of a one-step epoch when every item the rebaser held and this document lacks was
  written by a Yrs client known to write for other replicas (a key's entries are written by one
  replica only, so ours held its newest); and when ours holds a later entry of the same writer (a
  writer's entries are delivered in its order). In doubt an entry is kept: at worst a register
  sibling this replica had overwritten comes back as a conflict, never a write lost. An entry
  written on the new epoch (not by the epoch's own client) is never deleted.
- messages: this replica's messages outside ``base`` are appended in their order; messages of
  theirs that ours held and deleted (a new incarnation) are deleted.

The header, the ``epoch`` and ``erased`` roots are never carried.
"""

from __future__ import annotations

from typing import Any

from . import statevector, ystructs
from .epoch import Epoch, epoch_of
from .yroots import YArray, YDoc, YMap

CARRIED_MAPS = ("content", "lifecycle", "metadata", "tags", "embedding")
SINGLE_VERSION = ("tags",)
"""Map roots whose keys are written once (a dot each); ``content`` too for lists."""


def base_for(old: YDoc, incoming: Epoch) -> bytes | None:
    """The ``base`` of the epoch after ``old``'s own in ``incoming``'s lineage (None: ``incoming``
    is not of ``old``'s lineage, or not later)."""
    mine = epoch_of(old)
    n = mine.n if mine is not None else 0
    if n >= incoming.n:
        return None
    chain = incoming.chain()
    if mine is not None and chain[n - 1][0] != mine.client:
        return None
    return chain[n][1]


def carry_over(old: YDoc, new: YDoc, incoming: Epoch, replica_id: str, kind: str) -> bool:
    """Write onto ``new`` (a document of epoch ``incoming``, in an open transaction) what ``old``
    holds that the epoch lacks (module docstring); returns whether anything was written."""
    base_bytes = base_for(old, incoming)
    if base_bytes is None:
        raise ValueError("the epoch is not one this document may take")
    base = statevector.decode(base_bytes)
    ours = ystructs.decode(old.get_update())
    theirs = ystructs.decode(new.get_update())
    mine = epoch_of(old)
    one_step = incoming.n == (mine.n if mine is not None else 0) + 1
    have = statevector.decode(old.get_state())
    missing = [client for client, clock in base.items() if clock > have.get(client, 0)]
    writers = _writers_by_client(ours)
    newest = _newest_by_writer(old)
    written = False

    def outside(client: int, clock: int) -> bool:
        return clock >= base.get(client, 0)

    def held(value: Any, once: bool) -> bool:
        if once:
            return True
        by = value.get("by") if isinstance(value, dict) else None
        if not isinstance(by, str):
            return one_step and not missing
        if one_step and all(by not in writers.get(client, {by}) for client in missing):
            return True  # every item the rebaser held and this replica lacks is another writer's
        hlc = value.get("hlc")
        return isinstance(hlc, str) and hlc <= newest.get(by, "")

    for root in CARRIED_MAPS:
        once = root in SINGLE_VERSION or (root == "content" and kind == "list")
        ours_map, theirs_map = YMap(old, root).plain(), YMap(new, root)
        original = {key: _live(items) for key, items in theirs.keyed(root).items()}
        for key, items in ours.keyed(root).items():
            live = _live(items)
            if live is not None and key in ours_map:
                value = ours_map[key]
                own = outside(live.client, live.clock) and _writer(value, key) == replica_id
                if own and theirs_map.get(key) != value:
                    theirs_map[key] = value
                    written = True
                continue
            if key not in theirs_map:
                continue
            there = original.get(key)
            if there is None or there.client != incoming.client:
                continue  # written on the new epoch: not what this replica deleted
            if held(theirs_map.get(key), once):
                del theirs_map[key]
                written = True
    return _carry_messages(old, new, ours, theirs, incoming, replica_id, outside, held) or written


def _carry_messages(
    old: YDoc,
    new: YDoc,
    ours: ystructs.Structs,
    theirs: ystructs.Structs,
    incoming: Epoch,
    replica_id: str,
    outside: Any,
    held: Any,
) -> bool:
    fresh: set[str] = set()
    for item in ours.in_root("messages"):
        if item.deleted or item.values is None:
            continue
        for offset, message in enumerate(item.values):
            if isinstance(message, dict) and outside(item.client, item.clock + offset):
                fresh.add(str(message.get("id")))
    originals: set[str] = set()
    for item in theirs.in_root("messages"):
        if not item.deleted and item.values is not None and item.client == incoming.client:
            originals.update(str(m.get("id")) for m in item.values if isinstance(m, dict))
    ours_list = [m for m in YArray(old, "messages").to_py() if isinstance(m, dict)]
    kept = {str(m.get("id")) for m in ours_list}
    array = YArray(new, "messages")
    written = False
    for index in reversed(range(len(theirs_list := array.to_py()))):
        message = theirs_list[index]
        if not isinstance(message, dict):
            continue
        ident = str(message.get("id"))
        if ident in originals and ident not in kept and held(message, False):
            array.remove(index)
            written = True
    present = {str(m.get("id")) for m in array.to_py() if isinstance(m, dict)}
    for message in ours_list:
        ident = str(message.get("id"))
        if ident in fresh and message.get("by") == replica_id and ident not in present:
            array.append(message)
            written = True
    return written


def _live(items: list[ystructs.Item]) -> ystructs.Item | None:
    live = [i for i in items if not i.deleted]
    return live[-1] if live else None


def _writer(value: Any, key: str) -> str:
    """Who wrote an entry: its ``by`` (dot entries), else its key (counter entries)."""
    if isinstance(value, dict) and isinstance(value.get("by"), str):
        return str(value["by"])
    return key


def _writers_by_client(structs: ystructs.Structs) -> dict[int, set[str]]:
    """Whose entries each Yrs client wrote, as far as the document shows (a client is one process
    of one replica; an epoch's client copied everyone's)."""
    out: dict[int, set[str]] = {}
    for client, row in structs.items.items():
        for item in row:
            for value in item.values or ():
                if isinstance(value, dict) and isinstance(value.get("by"), str):
                    out.setdefault(client, set()).add(value["by"])
    return out


def _newest_by_writer(doc: YDoc) -> dict[str, str]:
    """The newest stamp of each writer among the entries and messages ``doc`` holds."""
    newest: dict[str, str] = {}
    values: list[Any] = [v for root in CARRIED_MAPS for v in YMap(doc, root).plain().values()]
    values += YArray(doc, "messages").to_py()
    for value in values:
        if not isinstance(value, dict):
            continue
        by, hlc = value.get("by"), value.get("hlc")
        if isinstance(by, str) and isinstance(hlc, str) and hlc > newest.get(by, ""):
            newest[by] = hlc
    return newest
