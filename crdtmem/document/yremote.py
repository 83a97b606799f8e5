"""Where a merged update's items landed in a root array, read from the update instead of from Yrs.

An array observer learns what a transaction changed from Yrs' change delta (``ArrayEvent.delta``),
which walks the array's items from the start to count positions: ~0.3 ms at 10,000 messages, most
of what applying a remote append costs. A remote append is one item (or a run of them) whose left
origin is the array's last item and whose right origin is none (``yappend``, Yjs' ``push``), plus
the writer's map entries (the lifecycle entry every write re-asserts, which deletes the entry it
replaces). When the update says exactly that, the delta is known without the walk: the new values,
appended at the end.

:func:`appended` reads the update's structs (:func:`.ystructs.read`, one linear pass) and accepts it
only if every item is accounted for:

- a run continuing the array after ``tail`` (an item of the array no live element follows): each
  item's origin is the run's last id so far, with no right origin, holding Any values, not deleted;
  or the first element of an empty array (the array named, no origins);
- or an item that is not in the array: another root named, or an origin (else a right origin) that
  is an item known to be elsewhere (``elsewhere``: earlier updates' such items) or one of this
  update's own such items. Yrs gives an item that names no parent its origin's parent;

and every deletion it makes is of an item known to be elsewhere. Anything else (a nested type, a
garbage-collected range, an origin it cannot place, an insert before the end, a deletion it cannot
place) returns None and the caller asks Yrs. The caller still checks the outcome: the array grew by
exactly the run, and the document's state vector moved by exactly the update's structs (Yrs
integrated all of them and nothing it held back from before; ``yroots.YDoc.apply_update``).

:func:`learned` reads, after Yrs' own delta showed an append at the end, which of the update's items
it was and that its others are elsewhere: how the tail and the items elsewhere are known again after
an update this module could not place (the first remote append after a document is loaded).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from .ystructs import Item, ItemId, Structs

FAST_AT = 2048
"""Arrays shorter than this ask Yrs: its walk costs less than reading the update in Python."""
_MOST_CLOCKS = 64  # an item or a deleted range longer than this is not what an append writes


@dataclass(slots=True)
class Landing:
    """What an update did to an array: ``values`` appended at its end, the last of them item
    ``tail``; ``elsewhere``: the ids of its other items (every clock of them), not in the array."""

    values: list[Any]
    tail: ItemId | None
    elsewhere: set[ItemId]


def _ids(item: Item) -> list[ItemId] | None:
    if item.length > _MOST_CLOCKS:
        return None
    return [(item.client, item.clock + n) for n in range(item.length)]


def _last(item: Item) -> ItemId:
    return item.client, item.clock + item.length - 1


def appended(
    structs: Structs, root: str, tail: ItemId | None, length: int, elsewhere: Container[ItemId]
) -> Landing | None:
    """The landing of an update that only appends to array ``root`` (``length`` elements before
    it, ``tail`` its last item if known) and changes things elsewhere; None if it may do more."""
    if structs.gaps:
        return None
    values: list[Any] = []
    end = tail
    others: set[ItemId] = set()
    for item in structs.order:
        if item.parent_id is not None:
            return None
        if item.root is not None:  # names its parent: no origin, no right origin
            if item.root != root:
                ids = _ids(item)
                if ids is None:
                    return None
                others.update(ids)
                continue
            if length or values or item.values is None or item.deleted:
                return None  # the array named: only the first element of an empty array
            values += item.values
            end = _last(item)
            continue
        if item.origin is not None and item.origin == end and item.right is None and end is not None:
            if item.values is None or item.deleted:
                return None
            values += item.values
            end = _last(item)
            continue
        near = item.origin if item.origin is not None else item.right
        if near is None or not (near in others or near in elsewhere):
            return None
        ids = _ids(item)
        if ids is None:
            return None
        others.update(ids)
    if not values:
        return None
    for client, ranges in structs.deletes.items():
        for start, count in ranges:
            if count > _MOST_CLOCKS:
                return None
            for clock in range(start, start + count):
                if (client, clock) not in others and (client, clock) not in elsewhere:
                    return None
    return Landing(values, end, others)


def learned(structs: Structs, values: list[Any]) -> Landing | None:
    """After Yrs reported ``values`` appended at the end of the array by this update: the one item
    that holds exactly them is the array's new last item, and the update's other live items are
    elsewhere (else Yrs would have reported them too). None if that is not certain."""
    if structs.gaps or not values:
        return None
    holding = [i for i in structs.order if i.values == values and not i.deleted]
    if len(holding) != 1:
        return None
    others: set[ItemId] = set()
    for item in structs.order:
        if item is holding[0] or item.deleted:
            continue  # an item deleted in its own update shows in no delta: nothing is known of it
        if item.parent_id is not None:
            return None
        ids = _ids(item)
        if ids is None:
            return None
        others.update(ids)
    return Landing(values, _last(holding[0]), others)


def integrated(before: dict[int, int], structs: Structs) -> dict[int, int] | None:
    """The state vector a document at ``before`` has after integrating exactly ``structs``, each
    client's starting where the document's ends; None if they do not start there."""
    after = dict(before)
    for client, row in structs.items.items():
        if row:
            if row[0].clock != before.get(client, 0):
                return None
            after[client] = row[-1].clock + row[-1].length
    return after
