"""What the checks read of a replica: the :class:`ReplicaLike` they accept, and its memories as
reads see them (:func:`current_records`, :func:`canonical_state`), straight from its store."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..document.memory import MemoryDoc
from ..document.records import Conflict
from ..store.base import Store, VersionVector

__all__ = ["ReplicaLike", "canonical", "canonical_state", "current_records", "in_channels"]


class ReplicaLike(Protocol):
    """What the checks need: a Replica or a SyncReplica."""

    @property
    def id(self) -> str: ...

    @property
    def store(self) -> Store: ...

    channels: tuple[str, ...] | None

    def version_vectors(self, channels: Sequence[str] | None = None) -> dict[str, VersionVector]: ...


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def in_channels(memory_channels: Iterable[str], channels: Sequence[str] | None) -> bool:
    return channels is None or bool(set(memory_channels) & set(channels))


def current_records(store: Store) -> dict[str, tuple[dict[str, Any], list[Conflict]]]:
    """``{memory id: (record, conflicts)}`` as reads see them, straight from the store.

    A memory whose stored record is behind its deltas (``Store.stale``: a batch applied and not yet
    read back, see ``crdtmem.engine.materialize``) is read from its state here, so the checks do
    not depend on when the replica materializes.
    """
    stale = set(store.stale())
    found: dict[str, tuple[dict[str, Any], list[Conflict]]] = {}
    for record in store.query_records(include_deleted=True):
        memory_id = record["id"]
        if memory_id not in stale:
            found[memory_id] = (record, store.conflicts(doc_id=memory_id))
    for memory_id in stale:
        state = store.load_state(memory_id)
        if state is not None:
            memory, conflicts = MemoryDoc.from_state(memory_id, state, 0).read()
            found[memory_id] = (memory.to_dict(), conflicts)
    return found


def canonical_state(replica: ReplicaLike, channels: Sequence[str] | None = None) -> dict[str, str]:
    """``{memory id: canonical JSON}`` of every memory (deleted ones too) in ``channels`` (None: all).

    The JSON holds the materialized record without its local ``version``, plus the full conflict
    sets (every concurrent value with its hlc and replica); object keys are sorted.
    """
    state: dict[str, str] = {}
    for memory_id, (record, conflicts) in current_records(replica.store).items():
        if not in_channels(record["channels"], channels):
            continue
        data = {k: v for k, v in record.items() if k != "version"}
        data["conflict_sets"] = [c.to_dict() for c in conflicts]
        state[memory_id] = canonical(data)
    return state
