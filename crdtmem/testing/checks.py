"""Checks for replicas: convergence, store consistency, and that no acknowledged write was lost.

All checks read through ``replica.store`` and ``replica.version_vectors()``, so they are plain
functions that work on an open :class:`~crdtmem.engine.replica.Replica` (or a
:class:`~crdtmem.engine.sync_api.SyncReplica`) from sync or async code alike.

No write is lost: :func:`assert_acknowledged_present` holds a replica to the exact state that the
:class:`~crdtmem.testing.ledger.AcknowledgedWrites` ledger derives from the acknowledged writes (see
:mod:`crdtmem.testing.ledger` for what it expects of each kind of field, and where rebased memories
leave it room); :func:`assert_forgotten_absent` checks that a forgotten memory left nothing behind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ..document import epoch as epochs
from ..document import statevector
from ..document.erasure import is_marker
from ..document.memory import MemoryDoc
from ..store.base import DeltaRecord, VersionVector
from .ledger import AcknowledgedWrites
from .state import ReplicaLike, canonical, canonical_state, current_records, in_channels

__all__ = [
    "AcknowledgedWrites",
    "ReplicaLike",
    "assert_acknowledged_present",
    "assert_converged",
    "assert_forgotten_absent",
    "assert_store_consistent",
    "canonical_state",
    "current_records",
]


def _vectors(replica: ReplicaLike, channels: Sequence[str] | None) -> dict[str, VersionVector]:
    vectors = replica.version_vectors(channels) if channels is not None else replica.version_vectors()
    return {c: v for c, v in vectors.items() if v}


def assert_converged(
    replicas: Sequence[ReplicaLike], channels: Sequence[str] | None = None, *, no_pending: bool = True
) -> None:
    """Assert that every replica holds identical memories, conflicts and version vectors.

    Args:
        replicas: open replicas, after a full exchange.
        channels: compare only memories and vectors of these channels (for partial replication);
            None compares everything.
        no_pending: also require that no replica holds deltas still waiting for dependencies.
    """
    if len(replicas) < 2:
        return
    first = replicas[0]
    reference = canonical_state(first, channels)
    reference_vectors = _vectors(first, channels)
    problems: list[str] = []
    for other in replicas[1:]:
        state = canonical_state(other, channels)
        for memory_id in sorted(set(reference) | set(state)):
            mine, theirs = reference.get(memory_id), state.get(memory_id)
            if mine != theirs:
                problems.append(
                    f"memory {memory_id}:\n  {first.id}: {mine or '<missing>'}"
                    f"\n  {other.id}: {theirs or '<missing>'}"
                )
        vectors = _vectors(other, channels)
        if vectors != reference_vectors:
            problems.append(f"version vectors:\n  {first.id}: {reference_vectors}\n  {other.id}: {vectors}")
    if no_pending:
        for replica in replicas:
            waiting = replica.store.pending()
            if waiting:
                problems.append(
                    f"{replica.id} still has {len(waiting)} pending deltas: {[d.uid for d in waiting]}"
                )
    if problems:
        raise AssertionError("replicas did not converge:\n" + "\n".join(problems))


def assert_store_consistent(replica: ReplicaLike) -> None:
    """Assert what the store promises about itself:

    - every stored record and conflict set is what the stored Yrs state (its snapshot and the tail
      of deltas after it) materializes to;
    - every logged delta of a memory is contained in its stored state (re-applying changes nothing),
      and replaying its whole history alone gives the same document as its snapshot and tail;
    - version vectors claim only logged deltas: for each channel and origin, seqs 1..vv are logged,
      decided against (logged without the delta, e.g. a superseded delta of an earlier epoch; its
      decision is deleted when its memory is forgotten, the entry stays), or folded (below the
      store's horizon; then the history of a memory need not be whole).
    """
    store = replica.store
    problems: list[str] = []
    horizons = {c: store.horizon(c) for c in replica.version_vectors()}
    folded = any(horizons.values())
    for memory_id, (record, conflicts) in current_records(store).items():
        state = store.load_state(memory_id)
        if state is None:
            problems.append(f"{memory_id}: record without state")
            continue
        doc = MemoryDoc.from_state(memory_id, state, 0)
        expected = {k: v for k, v in doc.materialize().to_dict().items() if k != "version"}
        stored = {k: v for k, v in record.items() if k != "version"}
        if canonical(expected) != canonical(stored):
            problems.append(f"{memory_id}: record {canonical(stored)} but state reads {canonical(expected)}")
        if [c.to_dict() for c in doc.conflicts()] != [c.to_dict() for c in conflicts]:
            problems.append(f"{memory_id}: stored conflicts differ from the state's")
        state_vector, reading = doc.doc.get_state(), canonical(expected)
        history = store.history(memory_id)
        for delta in history:
            if _of_the_epoch(doc, delta.deps, delta.update):
                doc.apply(delta.update)
        if (
            doc.doc.get_state() != state_vector
            or canonical({k: v for k, v in doc.materialize().to_dict().items() if k != "version"}) != reading
        ):
            problems.append(f"{memory_id}: its logged deltas are not all in its stored state")
        if folded:  # compaction took older deltas out of the log: the history is no longer whole
            continue
        replayed = _replay(memory_id, history)  # the whole history alone, without the snapshot
        replayed_reading = {k: v for k, v in replayed.materialize().to_dict().items() if k != "version"}
        if replayed.state_vector() != doc.state_vector() or canonical(replayed_reading) != reading:
            problems.append(f"{memory_id}: its snapshot and tail differ from its whole history replayed")
    decided = store.decisions()
    forgot = bool(store.erased_since(0, 1))
    for channel, vector in replica.version_vectors().items():
        logged: dict[str, set[int]] = {}
        for delta in store.deltas_since([channel], {}):
            logged.setdefault(delta.origin, set()).add(delta.seqs[channel])
        for decision in decided:  # logged without the delta (docs/protocol.md §7.4, §7.11)
            refused = decision.delta
            if channel in refused.seqs:
                claimed = {refused.seqs[channel], *refused.also.get(channel, ())}
                logged.setdefault(refused.origin, set()).update(claimed)
        if forgot:  # a forgotten memory's decisions went with its content; their entries stay
            for origin, seqs in store.entries_without_delta(channel).items():
                logged.setdefault(origin, set()).update(seqs)
        for origin, seq in vector.items():
            gone = horizons.get(channel, {}).get(origin, 0)  # folded: in the snapshots, not the log
            missing = set(range(gone + 1, seq + 1)) - logged.get(origin, set())
            if missing:
                problems.append(
                    f"{channel}: vector claims {origin}:{seq} but seqs {sorted(missing)} are not logged"
                )
    if problems:
        raise AssertionError(f"store of {replica.id} is inconsistent:\n" + "\n".join(problems))


def _replay(memory_id: str, history: list[DeltaRecord]) -> MemoryDoc:
    """A memory's logged deltas replayed alone, in a causal order: the log's, but for a delta of an
    epoch logged before that epoch's rebase entry (the replica took the epoch from a state, wrote or
    received deltas of it, then received the entry), which is replayed right after the entry."""
    entries = {epochs.rebase_client(d.update) for d in history if epochs.is_rebase(d.deps, d.update)}
    replayed = MemoryDoc.empty(memory_id, 0)
    held: dict[int, list[DeltaRecord]] = {}
    for delta in history:
        if epochs.is_rebase(delta.deps, delta.update):
            client = epochs.rebase_client(delta.update)
            entries.discard(client)
            if _of_the_epoch(replayed, delta.deps, delta.update):
                replayed.adopt(delta.update)  # a later epoch replaces what came before
            for later in held.pop(client or 0, []):
                if _of_the_epoch(replayed, later.deps, later.update):
                    replayed.apply(later.update)
            continue
        awaited = [c for c in statevector.decode(delta.deps) if c in entries]
        if awaited:
            held.setdefault(awaited[0], []).append(delta)
        elif _of_the_epoch(replayed, delta.deps, delta.update):
            replayed.apply(delta.update)
    return replayed


def _of_the_epoch(doc: MemoryDoc, deps: bytes, update: bytes) -> bool:
    """Whether a logged delta applies to ``doc``: a rebase entry of a later epoch, or a delta of
    its epoch (one of an earlier epoch is superseded there, docs/protocol.md §7.11)."""
    current = doc.epoch
    if epochs.is_rebase(deps, update):
        incoming = epochs.rebase_epoch(update)
        return incoming is not None and (current is None or incoming.n > current.n)
    return current is None or epochs.delta_epoch(current, deps) == current.n


def assert_acknowledged_present(replica: ReplicaLike, acked: AcknowledgedWrites) -> None:
    """Assert that ``replica`` holds exactly what the acknowledged writes imply
    (:mod:`crdtmem.testing.ledger`).

    Call it after a full exchange. Memories outside the replica's subscribed channels are skipped.
    """
    problems: list[str] = []
    for memory_id in acked.memory_ids:
        if replica.channels is not None and not in_channels(acked.channels_of(memory_id), replica.channels):
            continue
        if memory_id in acked.forgotten:
            continue
        observed = acked.observed(replica, memory_id)
        if not observed:
            problems.append(f"acknowledged memory {memory_id} is missing")
            continue
        expected = acked.expected(memory_id)
        extra = acked.may_come_back(replica, memory_id)
        for name in sorted(set(expected) | set(observed)):
            want, have = expected.get(name, []), observed.get(name, [])
            if want == have:
                continue
            if isinstance(want, list) and isinstance(have, list) and _within(want, have, extra.get(name, [])):
                continue
            more = f" (or with some of {extra[name]!r})" if extra.get(name) else ""
            problems.append(f"{memory_id} {name}: expected {want!r}{more}, found {have!r}")
    if problems:
        raise AssertionError(
            f"replica {replica.id} lost or invented acknowledged writes:\n" + "\n".join(problems)
        )


def _within(want: list[Any], have: list[Any], extra: list[Any]) -> bool:
    """Whether ``have`` holds every one of ``want`` and, beside them, only some of ``extra``."""
    if not extra:
        return False
    rest = Counter(canonical(v) for v in have)
    rest.subtract(Counter(canonical(v) for v in want))
    allowed = Counter(canonical(v) for v in extra)
    return all(n >= 0 for n in rest.values()) and all(n <= allowed[k] for k, n in rest.items() if n > 0)


def assert_forgotten_absent(
    replica: ReplicaLike, memory_id: str, channels: Sequence[str], secrets: Iterable[str] = ()
) -> None:
    """Assert that a forgotten memory left nothing behind on ``replica``: no record, state, pending
    or decided delta, every logged delta of it a stub without content, the memory marked forgotten
    (if the replica syncs one of its ``channels``), and none of ``secrets`` (text written to it) in
    the bytes of the replica's files (its SQLite file and write-ahead log)."""
    from ..document.erasure import EMPTY_UPDATE

    store = replica.store
    problems: list[str] = []
    if store.load_record(memory_id) is not None:
        problems.append("its record is still stored")
    if replica.channels is None or in_channels(channels, replica.channels):
        if not store.is_erased(memory_id):
            problems.append("it is not marked forgotten")
        kept = [
            d.uid
            for d in store.history(memory_id)
            if d.update != EMPTY_UPDATE and not is_marker(d.deps, d.update)
        ]
        if kept:
            problems.append(f"deltas with content are still logged: {kept}")
    if any(p.doc_id == memory_id for p in store.pending()):
        problems.append("deltas of it are still pending")
    if any(d.delta.doc_id == memory_id for d in store.decisions()):
        problems.append("deltas of it are still kept as decided")
    path = getattr(replica, "path", None)
    if path is not None:
        for name in (str(path), f"{path}-wal"):
            try:
                with open(name, "rb") as file:
                    data = file.read()
            except FileNotFoundError:
                continue
            for secret in secrets:
                if secret.encode() in data:
                    problems.append(f"{secret!r} is still in the bytes of {name}")
    if problems:
        raise AssertionError(f"forgotten memory {memory_id} on replica {replica.id}: " + "; ".join(problems))
