"""An in-memory :class:`~crdtmem.store.base.Store`: the test double, and ``Replica(None)``.

Same contract as the SQLite store (both run ``tests/conformance/test_store.py``), nothing durable.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..document.erasure import EMPTY_DEPS, EMPTY_UPDATE
from ..document.query import Where, matches
from ..document.records import Conflict
from ..errors import DamagedMemory
from .paging import merge_streams, split_covered
from .values import (
    Commit,
    CommitResult,
    Decision,
    DeltaRecord,
    DocWrite,
    Erased,
    LocalSigner,
    PendingDelta,
    Quarantined,
    StoredDoc,
    VersionVector,
    fold,
    stub_proof,
)
from .vectors import StagedVectors


class MemoryStore:
    def __init__(self) -> None:
        self.signer: LocalSigner | None = None
        self.on_damaged: Callable[[DamagedMemory], object] | None = None  # memory is never damaged
        self._lock = threading.RLock()
        self._meta: dict[str, str] = {}
        self._docs: dict[str, tuple[DocWrite, int]] = {}
        self._deltas: list[DeltaRecord] = []
        self._uids: set[str] = set()
        self._index: dict[str, int] = {}
        self._log: dict[tuple[str, str, int], int] = {}
        self._vectors: dict[str, VersionVector] = {}
        self._beyond: dict[str, dict[str, set[int]]] = {}
        self._pending: dict[str, PendingDelta] = {}
        self._decided: dict[str, Decision] = {}
        self._version = 0
        self._outbox: dict[str, dict[str, VersionVector]] = {}
        self._by_doc: dict[str, list[int]] = {}
        """Each document's deltas (indexes into ``_deltas``; a delta's row id is its index + 1)."""
        self._snapshots: dict[str, tuple[bytes, int]] = {}
        self._stale: set[str] = set()
        self._erased: dict[str, int] = {}
        self._erasures: dict[str, Erased] = {}
        self._horizon: dict[str, VersionVector] = {}
        self._folded_hlc = ""
        self._quarantined: dict[str, Quarantined] = {}

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def commit(self, work: Sequence[Commit]) -> list[CommitResult]:
        with self._lock:
            staged = StagedVectors(self._vectors, self._beyond)
            results = []
            staged_deltas: list[DeltaRecord] = []
            staged_index: dict[str, int] = {}
            staged_log: dict[tuple[str, str, int], int] = {}
            version = self._version
            docs: dict[str, tuple[DocWrite, int]] = {}
            undecided: set[str] = set()
            erasing: dict[str, int] = {}
            markers: dict[str, str] = {}  # the stamp of each erasure's marker
            for unit in work:
                result = CommitResult()
                for doc_id in unit.erase:
                    version += 1
                    erasing[doc_id] = result.versions[doc_id] = version
                    markers[doc_id] = next((d.hlc for d in unit.deltas if d.doc_id == doc_id), "")
                    docs.pop(doc_id, None)
                for delta in unit.deltas:
                    seqs = delta.seqs or {
                        c: staged.vector(c).get(delta.origin, 0) + 1 for c in delta.channels
                    }
                    known = self._index.get(delta.uid, staged_index.get(delta.uid))
                    if known is not None:  # known already: only log it under new channels
                        index = known
                    else:
                        index = len(self._deltas) + len(staged_deltas)
                        signed = delta.signature
                        if not delta.seqs and self.signer is not None:  # local: signed as it is numbered
                            signed = result.signatures[delta.uid] = self.signer(delta, seqs)
                        staged_deltas.append(
                            replace(delta, seqs=dict(seqs), channels=tuple(seqs), signature=signed)
                        )
                        staged_index[delta.uid] = index
                    result.rows[delta.uid] = index + 1
                    for channel, last in seqs.items():
                        for seq in (*delta.also.get(channel, ()), last):
                            key = (channel, delta.origin, seq)
                            if staged.is_logged(*key):
                                if staged_log.get(key, self._log.get(key)) == -1:  # decided, until now
                                    staged_log[key] = index
                                    undecided.add(delta.uid)
                                continue
                            staged.advance(*key)
                            staged_log[key] = index
                    result.seqs[delta.uid] = seqs
                for decision in unit.decided:  # logged without a delta (-1): vectors move past it
                    refused = decision.delta
                    for channel in refused.seqs:
                        for seq in refused.all_seqs(channel):
                            if not staged.is_logged(channel, refused.origin, seq):
                                staged.advance(channel, refused.origin, seq)
                                staged_log[(channel, refused.origin, seq)] = -1
                for doc in unit.docs:
                    version += 1
                    docs[doc.doc_id] = (doc, version)
                    result.versions[doc.doc_id] = version
                results.append(result)
            # nothing above can fail half-way; publish everything at once
            for doc_id, erased_at in erasing.items():
                stored = self._docs.get(doc_id)
                channels = tuple(sorted(stored[0].channels)) if stored is not None else ()
                self._erasures[doc_id] = Erased(doc_id, erased_at, channels, markers.get(doc_id, ""))
                self._erase(doc_id)
            self._erased.update(erasing)
            for offset, delta in enumerate(staged_deltas, start=len(self._deltas)):
                self._by_doc.setdefault(delta.doc_id, []).append(offset)
            self._deltas.extend(staged_deltas)
            self._index.update(staged_index)
            self._log.update(staged_log)
            self._uids.update(staged_index)
            self._docs.update(docs)
            for unit in work:
                for uid in unit.pending_drop:
                    self._pending.pop(uid, None)
                for waiting in unit.pending_add:
                    self._pending.setdefault(waiting.uid, waiting)
                for decision in unit.decided:
                    self._decided.pop(decision.uid, None)  # a later decision goes to the end
                    self._decided[decision.uid] = decision
                self._stale.difference_update(unit.fresh)
                self._stale.update(unit.stale)
                for snap in unit.snapshots:
                    held = self._snapshots.get(snap.doc_id, (b"", 0))[1]
                    if snap.doc_id in self._docs and snap.upto > held:
                        self._snapshots[snap.doc_id] = (snap.state, snap.upto)
            for uid in undecided:
                self._decided.pop(uid, None)
            for unit in work:
                self._fold_and_cover(unit, staged)
            staged.publish()
            self._version = version
            return results

    def _erase(self, doc_id: str) -> None:
        for i in self._by_doc.get(doc_id, ()):
            gone = self._deltas[i]
            self._deltas[i] = replace(
                gone, deps=EMPTY_DEPS, update=EMPTY_UPDATE, signature=None, header=stub_proof(gone)
            )
        self._docs.pop(doc_id, None)
        self._snapshots.pop(doc_id, None)
        self._stale.discard(doc_id)
        self._quarantined.pop(doc_id, None)
        for uid in [uid for uid, p in self._pending.items() if p.doc_id == doc_id]:
            del self._pending[uid]
        for uid in [uid for uid, d in self._decided.items() if d.delta.doc_id == doc_id]:
            del self._decided[uid]

    def _fold_and_cover(self, unit: Commit, staged: StagedVectors) -> None:
        for snap in unit.states:
            if snap.doc_id in self._docs:
                held = self._snapshots.get(snap.doc_id, (b"", 0))[1]
                self._snapshots[snap.doc_id] = (snap.state, max(held, snap.upto))
        for channel, vector in unit.covers.items():
            for origin, seq in vector.items():
                if staged.raise_to(channel, origin, seq):
                    self._raise_horizon(channel, origin, seq)
        if not unit.fold:
            return
        keep = {
            i
            for doc_id in self._erased
            for i in self._by_doc.get(doc_id, ())
            if self._deltas[i].update != EMPTY_UPDATE
        }
        candidates: set[int] = set()
        for channel, vector in unit.fold.items():
            for origin, upto in vector.items():
                entries = sorted(
                    (k[2], i) for k, i in self._log.items() if k[:2] == (channel, origin) and k[2] <= upto
                )
                for seq, i in entries:
                    if i >= 0 and self._in_tail(i):
                        upto = seq - 1
                        break
                if upto <= 0:
                    continue
                for seq, i in entries:
                    if seq <= upto and i not in keep:
                        del self._log[(channel, origin, seq)]
                        if i >= 0:
                            candidates.add(i)
                self._raise_horizon(channel, origin, upto)
        still = set(self._log.values())
        for i in candidates - still:
            delta = self._deltas[i]
            self._folded_hlc = max(self._folded_hlc, delta.hlc)
            self._by_doc[delta.doc_id].remove(i)
            self._index.pop(delta.uid, None)
            self._uids.discard(delta.uid)
            self._deltas[i] = replace(
                delta, deps=EMPTY_DEPS, update=EMPTY_UPDATE, signature=None, header=stub_proof(delta)
            )

    def _in_tail(self, i: int) -> bool:
        doc_id = self._deltas[i].doc_id
        if doc_id not in self._docs:  # no record yet (a batch not read back), unless forgotten
            return doc_id not in self._erased
        return i + 1 > self._snapshots.get(doc_id, (b"", 0))[1]

    def _raise_horizon(self, channel: str, origin: str, seq: int) -> None:
        mine = self._horizon.setdefault(channel, {})
        mine[origin] = max(mine.get(origin, 0), seq)

    def horizon(self, channel: str) -> VersionVector:
        with self._lock:
            return dict(self._horizon.get(channel, {}))

    def logged_before(self, channel: str, hlc: str) -> VersionVector:
        found: VersionVector = {}
        with self._lock:
            for (c, origin, seq), i in self._log.items():
                if c == channel and i >= 0 and self._deltas[i].hlc < hlc:
                    found[origin] = max(found.get(origin, 0), seq)
        return found

    def folded_states(self, min_bytes: int) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(
                (doc_id, len(state))
                for doc_id, (state, _) in self._snapshots.items()
                if len(state) >= min_bytes and not self._by_doc.get(doc_id)
            )

    def fold_blockers(self, fold: dict[str, VersionVector]) -> list[str]:
        with self._lock:
            found = {
                self._deltas[i].doc_id
                for (channel, origin, seq), i in self._log.items()
                if i >= 0 and seq <= fold.get(channel, {}).get(origin, 0) and self._in_tail(i)
            }
        return sorted(found)

    def is_erased(self, doc_id: str) -> bool:
        return doc_id in self._erased

    def erased_since(self, version: int, limit: int | None = None) -> list[tuple[str, int]]:
        with self._lock:
            found = sorted((v, d) for d, v in self._erased.items() if v > version)
        return [(d, v) for v, d in found[:limit]]

    def erasures_since(self, version: int, limit: int | None = None) -> list[Erased]:
        with self._lock:
            return [self._erasures[doc_id] for doc_id, _ in self.erased_since(version, limit)]

    def scrub(self) -> None:
        pass  # nothing outlives the process

    def load_doc(self, doc_id: str) -> StoredDoc | None:
        with self._lock:
            snapshot, upto = self._snapshots.get(doc_id, (None, 0))
            tail = [(i + 1, self._deltas[i].update) for i in self._by_doc.get(doc_id, ()) if i + 1 > upto]
        if snapshot is None and not tail:
            return None
        return StoredDoc(snapshot, upto, tail)

    def load_state(self, doc_id: str) -> bytes | None:
        stored = self.load_doc(doc_id)
        return None if stored is None else fold(stored)

    def load_record(self, doc_id: str) -> dict[str, Any] | None:
        entry = self._docs.get(doc_id)
        return None if entry is None else {**copy.deepcopy(entry[0].record), "version": entry[1]}

    def query_records(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        since_version: int | None = None,
        ascending: bool = False,
        where: Where | None = None,
        before_version: int | None = None,
        max_chars: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            entries = sorted(self._docs.values(), key=lambda e: e[1], reverse=not ascending)
        found: list[dict[str, Any]] = []
        chars = 0
        for doc, version in entries:
            if since_version is not None and version <= since_version:
                continue
            if before_version is not None and version >= before_version:
                continue
            if not _passes(doc, user_id, tenant_id, channel, kind, include_deleted, where):
                continue
            if limit is not None and len(found) >= limit:
                break
            chars += len(json.dumps(doc.record))
            if found and max_chars is not None and chars > max_chars:
                break
            found.append({**copy.deepcopy(doc.record), "version": version})
        return found

    def count_records(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        where: Where | None = None,
    ) -> int:
        with self._lock:
            docs = [doc for doc, _ in self._docs.values()]
        return sum(_passes(doc, user_id, tenant_id, channel, kind, include_deleted, where) for doc in docs)

    def query_ids(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        where: Where | None = None,
        limit: int | None = None,
    ) -> list[str]:
        with self._lock:
            docs = [doc for doc, _ in self._docs.values()]
        found = [
            doc.doc_id
            for doc in docs
            if _passes(doc, user_id, tenant_id, channel, kind, include_deleted, where)
        ]
        return found if limit is None else found[:limit]

    def conflicts(
        self, *, user_id: str | None = None, tenant_id: str | None = None, doc_id: str | None = None
    ) -> list[Conflict]:
        with self._lock:
            docs = [d for d, _ in self._docs.values()]
        found = [
            c
            for d in docs
            for c in d.conflicts
            if (user_id is None or c.user_id == user_id)
            and (tenant_id is None or c.tenant_id == tenant_id)
            and (doc_id is None or c.memory_id == doc_id)
        ]
        return sorted(found, key=lambda c: (c.memory_id, c.field))

    def version_vector(self, channel: str) -> VersionVector:
        with self._lock:
            return dict(self._vectors.get(channel, {}))

    def is_logged(self, channel: str, origin: str, seq: int) -> bool:
        with self._lock:
            if seq <= self._vectors.get(channel, {}).get(origin, 0):
                return True
            return seq in self._beyond.get(channel, {}).get(origin, ())

    def channels(self) -> list[str]:
        with self._lock:
            return sorted(c for c, v in self._vectors.items() if v)

    def deltas_since(
        self, channels: Iterable[str], vectors: dict[str, VersionVector], limit: int | None = None
    ) -> list[DeltaRecord]:
        wanted: dict[int, dict[str, list[int]]] = {}
        streams: dict[tuple[str, str], list[tuple[int, int]]] = {}
        channel_set = set(channels)
        with self._lock:
            for (channel, origin, seq), index in self._log.items():
                if index < 0:  # decided against: nothing to export
                    continue
                if channel in channel_set and seq > vectors.get(channel, {}).get(origin, 0):
                    wanted.setdefault(index, {}).setdefault(channel, []).append(seq)
                    streams.setdefault((channel, origin), []).append((index, seq))
            ids = merge_streams([sorted(s, key=lambda row: row[1]) for s in streams.values()], limit)
            found: list[DeltaRecord] = []
            for i in ids:
                seqs, also = split_covered(wanted[i])
                found.append(replace(self._deltas[i], seqs=seqs, channels=tuple(seqs), also=also))
            return found

    def decided_seqs(self, channel: str, origin: str, after: int, upto: int) -> set[int]:
        with self._lock:
            return {
                seq
                for (c, o, seq), index in self._log.items()
                if c == channel and o == origin and after < seq <= upto and index < 0
            }

    def has_delta(self, uid: str) -> bool:
        return uid in self._uids or uid in self._pending

    def logged_deltas(self, uids: Sequence[str]) -> set[str]:
        return {uid for uid in uids if uid in self._uids}

    def stale(self) -> list[str]:
        with self._lock:
            return sorted(self._stale)

    def pending(self) -> list[PendingDelta]:
        return sorted(self._pending.values(), key=lambda p: (p.received_ms, p.uid))

    def decisions(self, kind: str | None = None) -> list[Decision]:
        with self._lock:
            return [d for d in self._decided.values() if kind is None or d.kind == kind]

    def entries_without_delta(self, channel: str) -> dict[str, set[int]]:
        with self._lock:
            found: dict[str, set[int]] = {}
            for (logged, origin, seq), index in self._log.items():
                if logged == channel and index < 0:
                    found.setdefault(origin, set()).add(seq)
            return found

    def quarantined(self) -> list[Quarantined]:
        with self._lock:
            return [self._quarantined[k] for k in sorted(self._quarantined)]

    def quarantine(self, entry: Quarantined) -> None:
        with self._lock:
            self._quarantined.setdefault(entry.memory_id, entry)

    def release(self, memory_id: str) -> bool:
        with self._lock:
            return self._quarantined.pop(memory_id, None) is not None

    def markers_of(self, doc_ids: Iterable[str], channels: Iterable[str]) -> list[DeltaRecord]:
        wanted = set(channels)
        out: list[DeltaRecord] = []
        with self._lock:
            for doc_id in sorted({d for d in doc_ids if d in self._erased}):
                for i in self._by_doc.get(doc_id, ()):
                    if self._deltas[i].update == EMPTY_UPDATE:
                        continue
                    covered: dict[str, list[int]] = {}
                    for (channel, _, seq), index in self._log.items():
                        if index == i and channel in wanted:
                            covered.setdefault(channel, []).append(seq)
                    if covered:
                        seqs, also = split_covered(covered)
                        out.append(replace(self._deltas[i], seqs=seqs, channels=tuple(seqs), also=also))
        return out

    def history(self, doc_id: str) -> list[DeltaRecord]:
        return [self._deltas[i] for i in self._by_doc.get(doc_id, ())]

    def last_hlc(self) -> str:
        return max(max((d.hlc for d in self._deltas), default=""), self._folded_hlc)

    def doc_count(self) -> int:
        return len(self._docs)

    def outbox_marks(self, sink: str) -> dict[str, VersionVector]:
        with self._lock:
            return {c: dict(v) for c, v in self._outbox.get(sink, {}).items()}

    def raise_outbox_marks(self, sink: str, marks: dict[str, VersionVector]) -> None:
        with self._lock:
            stored = self._outbox.setdefault(sink, {})
            for channel, vector in marks.items():
                mine = stored.setdefault(channel, {})
                for origin, seq in vector.items():
                    mine[origin] = max(mine.get(origin, 0), seq)


def _passes(
    doc: Any,
    user_id: str | None,
    tenant_id: str | None,
    channel: str | None,
    kind: str | None,
    include_deleted: bool,
    where: Where | None,
) -> bool:
    if user_id is not None and doc.user_id != user_id:
        return False
    if tenant_id is not None and doc.tenant_id != tenant_id:
        return False
    if kind is not None and doc.kind != kind:
        return False
    if channel is not None and channel not in doc.channels:
        return False
    if doc.deleted and not doc.conflicted and not include_deleted:
        return False
    return matches(where, doc.record)
