"""Which queued commit units the commit thread takes next: small units go ahead of large ones.

The store has one writer, so a small write (a metadata change) that arrives behind large units (a
1 MiB value, a pushed page of 2,000 deltas) would wait for all of them to be written and synced. The
commit thread instead takes, each round, the small units that may overtake, as one group, and lets
large units commit one at a time; a writer who sends large units then delays a small one by at most
the large unit being written when it arrived.

The rule, over the units in the order they were queued:

- A unit is *large* over 32 rows or 64 KiB of updates and states (:func:`shape_of`), as the
  replica's inline path counts them.
- A unit's *keys* are the memories it touches (through any of its parts) and the uids of the deltas
  it logs, parks or drops. Two units that share a key keep their order; so do every unit before and
  after a *barrier*, a unit whose reach is wider than its documents (an erasure, a fold, states
  covering vectors, decisions): barriers never move and nothing passes them.
- A round takes the head unit's group: the small units, in queue order, that no earlier unit left
  behind in this round shares a key with (and is not a barrier), up to ``max_group``. A large head is
  taken alone when no small unit may overtake it, or when the round before let small units overtake
  a large one (so a large unit waits at most one group of small ones: no starvation).

Why reordering is safe: units that share no memory and no delta are independent to the store. Local
deltas are numbered when they commit (their sequence numbers follow the commit order, whatever the
queue order was); remote deltas carry their own numbers, and version vectors only claim contiguous
runs (a delta that lands before an earlier one of its origin is held as *beyond* until the gap
fills). Every unit is still acknowledged only after its own transaction committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..store.base import Commit

LARGE_ROWS_OVER = 32
LARGE_BYTES_OVER = 64 * 1024


@dataclass(frozen=True, slots=True)
class UnitShape:
    """What the commit order needs of a unit: whether it is large, and its keys (None: a barrier)."""

    large: bool
    keys: frozenset[str] | None


def is_large(work: Commit) -> bool:
    """Whether ``work`` is over 32 rows or 64 KiB of updates and states."""
    rows = len(work.deltas) + len(work.docs) + len(work.pending_add) + len(work.pending_drop)
    rows += len(work.decided) + len(work.snapshots) + len(work.states)
    if rows > LARGE_ROWS_OVER:
        return True
    size = sum(len(d.update) for d in work.deltas) + sum(len(p.delta.update) for p in work.pending_add)
    size += sum(len(s.state) for s in work.snapshots) + sum(len(s.state) for s in work.states)
    return size > LARGE_BYTES_OVER


def shape_of(work: Commit) -> UnitShape:
    if work.erase or work.fold or work.covers or work.decided:
        return UnitShape(is_large(work), None)
    keys = {f"doc:{d.doc_id}" for d in work.deltas} | {f"uid:{d.uid}" for d in work.deltas}
    keys.update(f"doc:{w.doc_id}" for w in work.docs)
    keys.update(f"doc:{p.delta.doc_id}" for p in work.pending_add)
    keys.update(f"uid:{p.uid}" for p in work.pending_add)
    keys.update(f"uid:{uid}" for uid in work.pending_drop)
    keys.update(f"doc:{s.doc_id}" for s in (*work.snapshots, *work.states))
    keys.update(f"doc:{doc_id}" for doc_id in (*work.stale, *work.fresh))
    return UnitShape(is_large(work), frozenset(keys))


def next_group(queued: Sequence[UnitShape], max_group: int, overtook: bool) -> tuple[list[int], bool]:
    """The positions in ``queued`` (oldest first, not empty) to commit next as one group, and whether
    that group lets small units overtake a large one (pass it as ``overtook`` next round)."""
    if queued[0].large and overtook:
        return [0], False
    taken: list[int] = []
    passed_large = False
    left: list[UnitShape] = []  # units this round leaves behind, in order
    for position, unit in enumerate(queued):
        if len(taken) >= max_group:
            break
        if not unit.large and unit.keys is not None and not any(_conflict(unit, earlier) for earlier in left):
            taken.append(position)
            passed_large = passed_large or any(earlier.large for earlier in left)
            continue
        if unit.keys is None and not taken and not left:  # a barrier at the head goes alone
            return [0], False
        left.append(unit)
        if unit.keys is None:
            break  # nothing passes a barrier
    if not taken:
        return [0], False
    return taken, passed_large


def _conflict(unit: UnitShape, earlier: UnitShape) -> bool:
    if unit.keys is None or earlier.keys is None:
        return True
    return not unit.keys.isdisjoint(earlier.keys)
