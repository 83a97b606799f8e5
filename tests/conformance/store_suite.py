"""The Store port's conformance suite: every adapter runs it (see ``test_store.py``).

Subclass :class:`StoreSuite`, implement :meth:`StoreSuite.make_store` (a new, unopened store) and
:meth:`StoreSuite.reopen` (close the store and open the same data again), and pytest runs every test
below against the adapter. The suite talks to the store only through the port
(:class:`crdtmem.store.Store`), with real deltas, documents and conflicts as the replica writes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crdtmem import Conflict, ConflictValue, Hlc, HybridLogicalClock, StorageError
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.records import Scope, Source
from crdtmem.engine.changes import Dots, doc_write
from crdtmem.store import Commit, DeltaRecord, DocWrite, Snapshot, Store
from crdtmem.store.base import Decision, Erased, PendingDelta, Quarantined

USER = "user:u1:memories"
TOPIC = "topic:t1:updates"
TENANT = "tenant:acme:shared"
START_MS = 1_700_000_000_000


def hlc(n: int) -> str:
    return Hlc(START_MS + n).encode()


def delta(
    n: int,
    *,
    origin: str = "o1",
    doc_id: str = "d1",
    channels: tuple[str, ...] = (USER,),
    seqs: dict[str, int] | None = None,
    deps: bytes = b"\x00",
) -> DeltaRecord:
    """A delta numbered ``n`` (its hlc); ``seqs`` None means a local delta (the store numbers it)."""
    stamp = hlc(n)
    update = f"update {origin} {n}".encode()
    if seqs is None:
        return DeltaRecord(f"{origin}:{stamp}", origin, doc_id, stamp, deps, update, channels)
    return DeltaRecord(f"{origin}:{stamp}", origin, doc_id, stamp, deps, update, tuple(seqs), dict(seqs))


def parked(waiting: DeltaRecord, sender: str = "{}", at: int = 0) -> PendingDelta:
    return PendingDelta(waiting, sender, at)


def doc(
    doc_id: str,
    *,
    kind: str = "fact",
    content: Any = "x",
    user_id: str | None = "u1",
    tenant_id: str | None = None,
    channels: tuple[str, ...] = (USER,),
    deleted: bool = False,
    conflicts: tuple[Conflict, ...] = (),
    n: int = 0,
) -> DocWrite:
    record = {"id": doc_id, "kind": kind, "content": content, "deleted": deleted, "channels": list(channels)}
    return DocWrite(
        doc_id=doc_id,
        kind=kind,
        record=record,
        channels=channels,
        user_id=user_id,
        tenant_id=tenant_id,
        deleted=deleted,
        conflicted=bool(conflicts),
        updated_hlc=hlc(n),
        conflicts=conflicts,
    )


def conflict(
    doc_id: str, field: str = "content", *, user_id: str | None = "u1", tenant_id: str | None = None
) -> Conflict:
    values = (ConflictValue("b", hlc(2), "r2"), ConflictValue({"nested": [1, 2]}, hlc(1), "r1"))
    return Conflict(doc_id, field, values, user_id, tenant_id)


def snapshot(store: Store, channels: tuple[str, ...] = (USER, TOPIC, TENANT)) -> tuple[Any, ...]:
    """Everything observable through the port, for before/after comparisons."""
    return (
        {c: store.version_vector(c) for c in channels},
        store.channels(),
        [(d.uid, d.seqs) for d in store.deltas_since(channels, {})],
        sorted(d.uid for d in store.pending()),
        store.query_records(include_deleted=True),
        store.conflicts(),
        store.doc_count(),
        store.last_hlc(),
    )


class Writer:
    """A real memory document and its changes as the replica commits them (real Yrs updates)."""

    def __init__(self, doc_id: str, kind: str = "fact"):
        ticks = iter(range(START_MS, START_MS + 10**6))
        self.doc_id = doc_id
        self.doc = MemoryDoc.empty(doc_id, 5)
        self.dots = Dots("w", HybridLogicalClock(lambda: next(ticks)))
        content: Any = [{"role": "user", "text": "hi"}] if kind == "conversation" else "v0"
        self.commit = self._change(
            lambda: self.doc.create(
                memory_id=doc_id,
                kind=kind,  # type: ignore[arg-type]
                content=content,
                source=Source(None, None, "u1"),
                scope=Scope("u1", None, (), False),
                metadata={},
                tags=[],
                next_dot=self.dots,
            ),
            new=True,
        )

    def _change(self, change: Any, new: bool = False) -> Commit:
        with self.doc.change():
            change()
        assert self.dots.last is not None
        stamp = self.dots.last.hlc
        write, _ = doc_write(self.doc, before=None if new else self.doc.materialize())
        delta = DeltaRecord(
            f"w:{stamp}",
            "w",
            self.doc_id,
            stamp,
            self.doc.last_delta.deps,
            self.doc.last_delta.update,
            (USER,),
        )
        return Commit(deltas=[delta], docs=[write])

    def update(self, n: int) -> Commit:
        if self.doc.kind == "conversation":
            return self._change(
                lambda: self.doc.append_message(role="user", text=f"m{n}", next_dot=self.dots)
            )
        return self._change(lambda: self.doc.update(next_dot=self.dots, content=f"v{n}"))


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


class StoreSuite:
    """The tests every Store adapter passes. Subclasses supply the adapter."""

    def make_store(self, tmp_path: Path) -> Store:
        raise NotImplementedError

    def reopen(self, store: Store) -> Store:
        """Close ``store`` and return the same data opened again."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = self.make_store(tmp_path)
        store.open()
        self.opened = [store]
        yield store
        for opened in self.opened:
            opened.close()

    def _reopen(self, store: Store) -> Store:
        again = self.reopen(store)
        self.opened.append(again)
        return again

    # -- basics ---------------------------------------------------------------------------------

    def test_empty_store(self, store: Store) -> None:
        assert store.version_vector(USER) == {}
        assert store.channels() == []
        assert store.deltas_since([USER], {}) == []
        assert store.pending() == []
        assert store.last_hlc() == ""
        assert store.doc_count() == 0
        assert store.load_state("d1") is None
        assert store.load_record("d1") is None
        assert store.query_records() == []
        assert store.conflicts() == []
        assert store.history("d1") == []
        assert not store.has_delta("o1:x")
        assert not store.is_logged(USER, "o1", 1)

    def test_meta(self, store: Store) -> None:
        assert store.get_meta("replica_id") is None
        store.set_meta("replica_id", "r1")
        store.set_meta("other", "x")
        store.set_meta("replica_id", "r2")
        assert store.get_meta("replica_id") == "r2"
        assert store.get_meta("other") == "x"

    def test_empty_commit(self, store: Store) -> None:
        assert store.commit([]) == []
        (result,) = store.commit([Commit()])
        assert result.versions == {} and result.seqs == {}
        assert snapshot(store)[0] == {USER: {}, TOPIC: {}, TENANT: {}}

    def test_document_round_trip(self, store: Store) -> None:
        write = doc("d1", content={"nested": ["value", 1]})
        (result,) = store.commit([Commit(docs=[write])])
        version = result.versions["d1"]
        assert version > 0
        assert store.load_record("d1") == {**write.record, "version": version}
        assert store.doc_count() == 1
        rewrite = doc("d1", content="second")
        (again,) = store.commit([Commit(docs=[rewrite])])
        assert again.versions["d1"] > version
        assert store.load_record("d1") == {**rewrite.record, "version": again.versions["d1"]}
        assert store.doc_count() == 1

    def test_a_document_is_its_snapshot_and_the_deltas_after_it(self, store: Store) -> None:
        writer = Writer("d1")
        rows = [store.commit([writer.commit])[0].rows]
        rows += [store.commit([writer.update(n)])[0].rows for n in range(1, 4)]
        row_ids = [r for found in rows for r in found.values()]
        assert row_ids == sorted(row_ids)
        stored = store.load_doc("d1")
        assert stored is not None and stored.snapshot is None and stored.upto == 0
        assert [row for row, _ in stored.tail] == row_ids
        assert MemoryDoc.from_parts("d1", None, stored.tail, 1).read() == writer.doc.read()
        assert MemoryDoc.from_state("d1", store.load_state("d1") or b"", 1).read() == writer.doc.read()
        # a snapshot folding the first three deltas: the tail is what came after
        folded = MemoryDoc.from_parts("d1", None, stored.tail[:3], 1)
        store.commit([Commit(snapshots=[Snapshot("d1", folded.state(), row_ids[2])])])
        stored = store.load_doc("d1")
        assert stored is not None and stored.snapshot == folded.state() and stored.upto == row_ids[2]
        assert [row for row, _ in stored.tail] == row_ids[3:]
        assert MemoryDoc.from_parts("d1", stored.snapshot, stored.tail, 1).read() == writer.doc.read()
        # an older snapshot changes nothing; one of a document without a record is not kept
        store.commit([Commit(snapshots=[Snapshot("d1", b"older", row_ids[1]), Snapshot("nobody", b"x", 9)])])
        assert store.load_doc("d1") == stored
        assert store.load_doc("nobody") is None
        again = self._reopen(store)
        assert again.load_doc("d1") == stored
        assert MemoryDoc.from_state("d1", again.load_state("d1") or b"", 1).read() == writer.doc.read()

    def test_stale_marks_come_and_go_with_their_commits_and_survive_reopening(self, store: Store) -> None:
        assert store.stale() == []
        store.commit([Commit(deltas=[delta(1, doc_id="a")], stale=["a"]), Commit(stale=["b", "a"])])
        assert store.stale() == ["a", "b"]
        bad = Commit(deltas=[delta(2, seqs={USER: "not a seq"})], fresh=["a"])  # type: ignore[dict-item]
        with pytest.raises((TypeError, StorageError)):
            store.commit([bad])
        assert store.stale() == ["a", "b"]  # a failed commit clears nothing
        store.commit([Commit(docs=[doc("a")], fresh=["a"])])
        again = self._reopen(store)
        assert again.stale() == ["b"]
        again.commit([Commit(fresh=["b"]), Commit(stale=["b"])])  # in order: the later unit wins
        assert again.stale() == ["b"]

    def test_a_conversation_record_comes_back_whole(self, store: Store) -> None:
        writer = Writer("c1", "conversation")
        store.commit([writer.commit])
        for n in range(5):
            store.commit([writer.update(n)])
        record = writer.doc.materialize().to_dict()
        loaded = store.load_record("c1")
        assert loaded is not None
        assert loaded["content"] == record["content"] and len(loaded["content"]) == 6
        assert [r["content"] for r in store.query_records(kind="conversation")] == [record["content"]]

    def test_versions_increase_within_and_across_commits(self, store: Store) -> None:
        results = store.commit([Commit(docs=[doc("a"), doc("b")]), Commit(docs=[doc("c")])])
        first = [results[0].versions["a"], results[0].versions["b"], results[1].versions["c"]]
        (later,) = store.commit([Commit(docs=[doc("a")])])
        versions = [*first, later.versions["a"]]
        assert versions == sorted(set(versions))

    # -- sequence numbers and version vectors ---------------------------------------------------

    def test_local_deltas_get_the_next_seq_per_channel(self, store: Store) -> None:
        results = store.commit(
            [
                Commit(deltas=[delta(1, channels=(USER, TOPIC))]),
                Commit(deltas=[delta(2, channels=(USER,)), delta(3, channels=(USER, TOPIC))]),
            ]
        )
        assert results[0].seqs == {delta(1).uid: {USER: 1, TOPIC: 1}}
        assert results[1].seqs == {delta(2).uid: {USER: 2}, delta(3).uid: {USER: 3, TOPIC: 2}}
        (other,) = store.commit([Commit(deltas=[delta(4, origin="o2")])])
        assert other.seqs == {delta(4, origin="o2").uid: {USER: 1}}  # each origin has its own sequence
        assert store.version_vector(USER) == {"o1": 3, "o2": 1}
        assert store.version_vector(TOPIC) == {"o1": 2}
        assert store.channels() == sorted([USER, TOPIC])
        logged = {d.uid: d.seqs for d in store.deltas_since([USER, TOPIC], {})}
        assert logged == {
            delta(1).uid: {USER: 1, TOPIC: 1},
            delta(2).uid: {USER: 2},
            delta(3).uid: {USER: 3, TOPIC: 2},
            delta(4, origin="o2").uid: {USER: 1},
        }

    def test_local_seqs_continue_after_remote_ones(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(1, seqs={USER: 1}), delta(2, seqs={USER: 2})])])
        (result,) = store.commit([Commit(deltas=[delta(3)])])
        assert result.seqs[delta(3).uid] == {USER: 3}

    def test_vector_advances_only_over_contiguous_seqs(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(1, seqs={USER: 1})])])
        store.commit([Commit(deltas=[delta(3, seqs={USER: 3}), delta(4, seqs={USER: 4})])])
        assert store.version_vector(USER) == {"o1": 1}  # 2 is missing: never claim 3 and 4
        assert store.is_logged(USER, "o1", 1)
        assert not store.is_logged(USER, "o1", 2)
        assert store.is_logged(USER, "o1", 3) and store.is_logged(USER, "o1", 4)
        assert not store.is_logged(USER, "o1", 5)
        # past the gap, the entries are stored and served to peers all the same
        assert [d.seqs for d in store.deltas_since([USER], {USER: {"o1": 1}})] == [{USER: 3}, {USER: 4}]
        store.commit([Commit(deltas=[delta(2, seqs={USER: 2})])])
        assert store.version_vector(USER) == {"o1": 4}
        store.commit([Commit(deltas=[delta(6, seqs={USER: 6})])])
        assert store.version_vector(USER) == {"o1": 4}
        store.commit([Commit(deltas=[delta(5, seqs={USER: 5})])])
        assert store.version_vector(USER) == {"o1": 6}

    def test_reversed_arrival_in_one_batch(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(n, seqs={USER: n}) for n in range(5, 0, -1)])])
        assert store.version_vector(USER) == {"o1": 5}

    def test_gaps_are_per_origin_and_channel(self, store: Store) -> None:
        store.commit(
            [
                Commit(deltas=[delta(1, seqs={USER: 2, TOPIC: 1})]),
                Commit(deltas=[delta(2, origin="o2", seqs={USER: 1})]),
            ]
        )
        assert store.version_vector(USER) == {"o2": 1}
        assert store.version_vector(TOPIC) == {"o1": 1}

    def test_duplicate_deltas_are_ignored(self, store: Store) -> None:
        first = delta(1, seqs={USER: 1})
        store.commit([Commit(deltas=[first])])
        before = snapshot(store)
        store.commit([Commit(deltas=[first])])
        store.commit([Commit(deltas=[first, first])])
        assert snapshot(store) == before
        assert len(store.history("d1")) == 1
        both = delta(2, seqs={USER: 2})
        store.commit([Commit(deltas=[both, both])])
        assert store.version_vector(USER) == {"o1": 2}
        assert [d.uid for d in store.deltas_since([USER], {})] == [first.uid, both.uid]

    def test_known_delta_is_logged_under_a_new_channel(self, store: Store) -> None:
        """A relay may first deliver a delta on one channel and later on another."""
        store.commit([Commit(deltas=[delta(1, channels=(USER, TOPIC), seqs={USER: 1})])])
        assert store.version_vector(TOPIC) == {}
        store.commit([Commit(deltas=[delta(1, channels=(USER, TOPIC), seqs={TOPIC: 1})])])
        assert store.version_vector(TOPIC) == {"o1": 1}
        assert store.is_logged(TOPIC, "o1", 1)
        assert store.channels() == sorted([USER, TOPIC])
        (both,) = store.deltas_since([USER, TOPIC], {})
        assert both.seqs == {USER: 1, TOPIC: 1}
        assert [d.seqs for d in store.deltas_since([TOPIC], {})] == [{TOPIC: 1}]
        assert len(store.history("d1")) == 1  # stored once

    def test_known_delta_new_channel_in_the_same_batch(self, store: Store) -> None:
        store.commit(
            [
                Commit(deltas=[delta(1, seqs={USER: 1})]),
                Commit(deltas=[delta(1, seqs={TOPIC: 1})]),
            ]
        )
        assert store.version_vector(USER) == {"o1": 1}
        assert store.version_vector(TOPIC) == {"o1": 1}
        assert [d.seqs for d in store.deltas_since([USER, TOPIC], {})] == [{USER: 1, TOPIC: 1}]

    # -- atomicity ------------------------------------------------------------------------------

    def test_a_failing_unit_leaves_nothing(self, store: Store) -> None:
        store.commit(
            [Commit(deltas=[delta(1)], docs=[doc("d1")], pending_add=[parked(delta(9, seqs={USER: 9}))])]
        )
        (probe,) = store.commit([Commit(docs=[doc("probe")])])
        before = snapshot(store)
        good = Commit(
            deltas=[delta(2), delta(3, origin="o2", seqs={TOPIC: 1})],
            docs=[doc("d1", content="changed", conflicts=(conflict("d1"),)), doc("d2")],
            pending_add=[parked(delta(4, origin="o3", seqs={USER: 5}))],
            pending_drop=[delta(9).uid],
        )
        bad = Commit(deltas=[delta(5, seqs={USER: "not a seq"})])  # type: ignore[dict-item]
        for batch in ([good, bad], [bad, good]):
            with pytest.raises((TypeError, StorageError)):
                store.commit(batch)
            assert snapshot(store) == before
            assert store.load_record("d1") is not None and store.load_record("d1")["content"] == "x"
            assert store.load_state("d2") is None
            assert not store.has_delta(delta(2).uid)
        (result,) = store.commit([good])  # the failed attempts consumed no seqs or versions
        assert result.seqs[delta(2).uid] == {USER: 2}
        assert min(result.versions.values()) == probe.versions["probe"] + 1
        assert store.load_record("d1")["content"] == "changed"  # type: ignore[index]

    # -- pulling deltas -------------------------------------------------------------------------

    def test_deltas_since_filters_by_vector_channel_and_limit(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(1, channels=(USER, TOPIC))])])
        store.commit([Commit(deltas=[delta(2, origin="o2", seqs={USER: 1})])])
        store.commit([Commit(deltas=[delta(3, channels=(TOPIC,))])])
        store.commit([Commit(deltas=[delta(4, channels=(USER,))])])
        store.commit([Commit(deltas=[delta(5, origin="o2", seqs={USER: 2, TENANT: 1})])])
        everything = store.deltas_since([USER, TOPIC, TENANT], {})
        assert [d.uid for d in everything] == [  # local log order, each once
            delta(1).uid,
            delta(2, origin="o2").uid,
            delta(3).uid,
            delta(4).uid,
            delta(5, origin="o2").uid,
        ]
        assert everything[0].seqs == {USER: 1, TOPIC: 1}
        assert set(everything[0].channels) == {USER, TOPIC}
        assert everything[0].update == delta(1).update and everything[0].deps == b"\x00"
        user_only = store.deltas_since([USER], {})
        assert [d.seqs for d in user_only] == [{USER: 1}, {USER: 1}, {USER: 2}, {USER: 2}]
        peer = {USER: {"o1": 1, "o2": 1}, TOPIC: {"o1": 2}}
        assert [d.uid for d in store.deltas_since([USER, TOPIC], peer)] == [
            delta(4).uid,
            delta(5, origin="o2").uid,
        ]
        assert store.deltas_since([USER, TOPIC, TENANT], store_vectors(store)) == []
        assert [d.uid for d in store.deltas_since([USER, TOPIC, TENANT], {}, limit=2)] == [
            delta(1).uid,
            delta(2, origin="o2").uid,
        ]
        assert store.deltas_since([USER], {}, limit=0) == []
        assert store.deltas_since(["topic:none:updates"], {}) == []

    def test_paging_with_limit_reaches_everything(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(n, channels=(USER,))]) for n in range(1, 12)])
        seen: list[str] = []
        vector: dict[str, int] = {}
        while page := store.deltas_since([USER], {USER: vector}, limit=3):
            seen += [d.uid for d in page]
            vector["o1"] = max(d.seqs[USER] for d in page)
        assert seen == [delta(n).uid for n in range(1, 12)]

    def test_a_page_starts_at_the_lowest_seq_a_peer_misses(self, store: Store) -> None:
        """A relay that got an origin's seqs 2..8 before seq 1 logs seq 1 last; a page must still
        hold seq 1 (each origin in its own order, origins by when their next delta was logged), or a
        peer paging by its vector would never reach it."""
        store.commit([Commit(deltas=[delta(n, seqs={USER: n}) for n in range(2, 9)])])
        store.commit([Commit(deltas=[delta(20, origin="o2", seqs={USER: 1})])])
        store.commit([Commit(deltas=[delta(1, seqs={USER: 1})])])
        page = store.deltas_since([USER], {}, limit=3)
        assert [(d.origin, d.seqs[USER]) for d in page] == [("o2", 1), ("o1", 1), ("o1", 2)]
        everything = store.deltas_since([USER], {})
        assert [d.seqs[USER] for d in everything if d.origin == "o1"] == list(range(1, 9))
        vector: dict[str, int] = {}
        for _ in range(5):  # paging by the contiguous vector reaches everything
            page = store.deltas_since([USER], {USER: vector}, limit=3)
            for d in page:
                if d.seqs[USER] == vector.get(d.origin, 0) + 1:
                    vector[d.origin] = d.seqs[USER]
        assert vector == {"o1": 8, "o2": 1}

    def test_a_page_counts_deltas_not_the_seqs_a_coalesced_one_covers(self, store: Store) -> None:
        for n in range(4):  # four coalesced deltas, each covering three seqs
            first = 3 * n + 1
            merged = dataclasses.replace(
                delta(first + 2, seqs={USER: first + 2}),
                uid=f"{delta(first + 2).uid}/{hlc(first)}",
                also={USER: (first, first + 1)},
            )
            store.commit([Commit(deltas=[merged])])
        page = store.deltas_since([USER], {}, limit=3)
        assert [d.all_seqs(USER) for d in page] == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]

    def test_history_and_last_hlc(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(5, doc_id="a")])])
        store.commit([Commit(deltas=[delta(2, origin="o2", doc_id="a", seqs={USER: 1})])])
        store.commit([Commit(deltas=[delta(9, doc_id="b")])])
        store.commit([Commit(deltas=[delta(7, doc_id="a")])])
        assert [d.uid for d in store.history("a")] == [
            delta(5).uid,
            delta(2, origin="o2").uid,
            delta(7).uid,
        ]
        assert [d.update for d in store.history("b")] == [delta(9).update]
        assert store.last_hlc() == hlc(9)
        assert store.has_delta(delta(7).uid)

    # -- pending ----------------------------------------------------------------------------------

    def test_pending_add_and_drop(self, store: Store) -> None:
        waiting = delta(3, origin="o2", seqs={USER: 3, TOPIC: 1}, deps=b"\x01\x05\x02")
        store.commit([Commit(pending_add=[parked(waiting, sender='{"principal": "user:p"}', at=1234)])])
        (row,) = store.pending()
        assert (row.sender, row.received_ms) == ('{"principal": "user:p"}', 1234)
        stored = row.delta
        assert (stored.uid, stored.origin, stored.doc_id, stored.hlc) == (
            waiting.uid,
            waiting.origin,
            waiting.doc_id,
            waiting.hlc,
        )
        assert (stored.deps, stored.update, stored.seqs) == (waiting.deps, waiting.update, waiting.seqs)
        assert store.has_delta(waiting.uid)
        assert store.version_vector(USER) == {}  # waiting is not stored-and-applied
        assert store.deltas_since([USER, TOPIC], {}) == []
        store.commit([Commit(pending_add=[parked(waiting)])])
        assert len(store.pending()) == 1
        store.commit([Commit(deltas=[waiting], pending_drop=[waiting.uid, "o9:never-pending"])])
        assert store.pending() == []
        assert store.has_delta(waiting.uid)
        assert store.is_logged(USER, "o2", 3)

    # -- queries ----------------------------------------------------------------------------------

    def _populate(self, store: Store) -> None:
        store.commit(
            [
                Commit(docs=[doc("f1", user_id="u1", channels=(USER,))]),
                Commit(docs=[doc("l1", kind="list", content=["a"], user_id="u1", channels=(USER, TOPIC))]),
                Commit(docs=[doc("t1", user_id=None, tenant_id="acme", channels=(TENANT,))]),
                Commit(docs=[doc("s1", user_id="u1", tenant_id="acme", channels=(TENANT, USER))]),
                Commit(docs=[doc("u2", user_id="u2", channels=("user:u2:memories",))]),
                Commit(docs=[doc("gone", user_id="u1", deleted=True)]),
                Commit(
                    docs=[
                        doc(
                            "racing", user_id="u1", deleted=True, conflicts=(conflict("racing", "lifecycle"),)
                        )
                    ]
                ),
            ]
        )

    def test_query_records_filters(self, store: Store) -> None:
        self._populate(store)
        assert ids(store.query_records()) == ["racing", "u2", "s1", "t1", "l1", "f1"]
        assert ids(store.query_records(include_deleted=True))[:2] == ["racing", "gone"]
        assert ids(store.query_records(user_id="u1")) == ["racing", "s1", "l1", "f1"]
        assert ids(store.query_records(tenant_id="acme")) == ["s1", "t1"]
        assert ids(store.query_records(user_id="u1", tenant_id="acme")) == ["s1"]
        assert ids(store.query_records(channel=TOPIC)) == ["l1"]
        assert ids(store.query_records(channel=TENANT)) == ["s1", "t1"]
        assert ids(store.query_records(channel=USER, include_deleted=True)) == [
            "racing",
            "gone",
            "s1",
            "l1",
            "f1",
        ]
        assert ids(store.query_records(kind="list")) == ["l1"]
        assert ids(store.query_records(kind="counter")) == []
        assert ids(store.query_records(kind="fact", user_id="u1", channel=USER)) == ["racing", "s1", "f1"]
        assert ids(store.query_records(limit=2)) == ["racing", "u2"]
        assert ids(store.query_records(user_id="nobody")) == []
        store.commit([Commit(docs=[doc("f1", user_id="u1", content="newest")])])
        newest = store.query_records(limit=1)
        assert ids(newest) == ["f1"] and newest[0]["content"] == "newest"

    def test_query_records_limit_zero(self, store: Store) -> None:
        self._populate(store)
        assert store.query_records(limit=0) == []
        assert store.query_records(user_id="u1", limit=0) == []

    def test_conflicts_filters(self, store: Store) -> None:
        store.commit(
            [
                Commit(docs=[doc("b", conflicts=(conflict("b", "metadata.x"), conflict("b", "content")))]),
                Commit(docs=[doc("a", user_id="u2", conflicts=(conflict("a", user_id="u2"),))]),
                Commit(
                    docs=[
                        doc(
                            "c",
                            user_id=None,
                            tenant_id="acme",
                            conflicts=(conflict("c", "lifecycle", user_id=None, tenant_id="acme"),),
                        )
                    ]
                ),
            ]
        )
        found = store.conflicts()
        assert [(c.memory_id, c.field) for c in found] == [
            ("a", "content"),
            ("b", "content"),
            ("b", "metadata.x"),
            ("c", "lifecycle"),
        ]
        assert found[1] == conflict("b", "content")  # values, hlcs and replicas round-trip
        assert [c.memory_id for c in store.conflicts(user_id="u1")] == ["b", "b"]
        assert [c.memory_id for c in store.conflicts(tenant_id="acme")] == ["c"]
        assert [c.field for c in store.conflicts(doc_id="b")] == ["content", "metadata.x"]
        assert store.conflicts(user_id="u2", doc_id="b") == []
        store.commit([Commit(docs=[doc("b")])])  # rewritten without conflicts: they are gone
        assert store.conflicts(doc_id="b") == []
        assert len(store.conflicts()) == 2

    # -- outbox marks -----------------------------------------------------------------------------

    def test_outbox_marks_per_sink_only_go_up(self, store: Store) -> None:
        assert store.outbox_marks("bus") == {}
        store.raise_outbox_marks("bus", {USER: {"o1": 3, "o2": 1}, TOPIC: {"o1": 2}})
        store.raise_outbox_marks("other", {USER: {"o1": 9}})
        store.raise_outbox_marks("bus", {USER: {"o1": 2, "o3": 4}})  # o1 stays at 3
        store.raise_outbox_marks("bus", {})
        assert store.outbox_marks("bus") == {USER: {"o1": 3, "o2": 1, "o3": 4}, TOPIC: {"o1": 2}}
        assert store.outbox_marks("other") == {USER: {"o1": 9}}
        again = self._reopen(store)
        assert again.outbox_marks("bus") == {USER: {"o1": 3, "o2": 1, "o3": 4}, TOPIC: {"o1": 2}}

    def test_outbox_marks_are_apart_from_the_log(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(1), delta(2)], docs=[doc("d1")])])
        store.raise_outbox_marks("bus", {USER: {"o1": 1}})
        before = snapshot(store)
        store.raise_outbox_marks("bus", {USER: {"o1": 2}})
        assert snapshot(store) == before  # the log, vectors and documents are untouched
        marks = store.outbox_marks("bus")
        assert [d.seqs for d in store.deltas_since([USER], {USER: {"o1": 1}})] == [{USER: 2}]
        assert store.deltas_since([USER], marks) == []

    # -- quarantine -------------------------------------------------------------------------------

    def test_quarantined_memories_are_kept_until_released_or_forgotten(self, store: Store) -> None:
        assert store.quarantined() == []
        store.commit(
            [Commit(deltas=[delta(1, doc_id="d1"), delta(2, doc_id="d2")], docs=[doc("d1"), doc("d2")])]
        )
        store.quarantine(Quarantined("d1", "its record is not JSON", 1_000))
        store.quarantine(Quarantined("d2", "a delta does not decode", 2_000))
        store.quarantine(Quarantined("d1", "found again", 3_000))  # the first finding stays
        expected = [
            Quarantined("d1", "its record is not JSON", 1_000),
            Quarantined("d2", "a delta does not decode", 2_000),
        ]
        assert store.quarantined() == expected
        again = self._reopen(store)
        assert again.quarantined() == expected
        assert again.release("d1") and not again.release("d1") and not again.release("never")
        again.commit([Commit(erase=["d2"])])
        assert again.quarantined() == []
        assert self._reopen(again).quarantined() == []

    def test_an_erasure_keeps_the_channels_and_the_marker_stamp(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(1)], docs=[doc("d1", channels=(USER, TOPIC))])])
        marker = delta(2, doc_id="d1", channels=(USER, TOPIC))
        (result,) = store.commit([Commit(deltas=[marker], erase=["d1"])])
        (unseen,) = store.commit([Commit(deltas=[delta(3, doc_id="d2")], erase=["d2"])])  # never stored
        expected = [
            Erased("d1", result.versions["d1"], tuple(sorted((USER, TOPIC))), marker.hlc),
            Erased("d2", unseen.versions["d2"], (), delta(3).hlc),
        ]
        assert store.erasures_since(0) == expected
        assert [(e.doc_id, e.version) for e in expected] == store.erased_since(0)
        assert store.erasures_since(0, 1) == expected[:1]
        assert store.erasures_since(expected[0].version) == expected[1:]
        assert self._reopen(store).erasures_since(0) == expected

    # -- reopen -----------------------------------------------------------------------------------

    # -- decisions ------------------------------------------------------------------------------

    def test_a_decision_moves_the_vector_past_a_delta_it_does_not_export(self, store: Store) -> None:
        refused = dataclasses.replace(delta(2, origin="o2", seqs={USER: 2}), also={USER: (1,)})
        store.commit([Commit(deltas=[delta(3, origin="o2", seqs={USER: 3})])])
        assert store.version_vector(USER) == {}
        denied = Decision(refused, "denied", "user:p", "f1", "AccessDenied: no")
        store.commit([Commit(decided=[denied])])
        assert store.version_vector(USER) == {"o2": 3}
        assert [d.uid for d in store.deltas_since([USER], {})] == [delta(3, origin="o2").uid]
        assert (
            store.decided_seqs(USER, "o2", 0, 3) == {1, 2} and store.decided_seqs(USER, "o2", 1, 1) == set()
        )
        assert store.decided_seqs(USER, "o1", 0, 3) == set()
        assert not store.has_delta(refused.uid) and store.history(refused.doc_id)[0].uid != refused.uid
        (kept,) = store.decisions("denied")
        assert (kept.uid, kept.sender, kept.rights, kept.reason) == (
            refused.uid,
            "user:p",
            "f1",
            "AccessDenied: no",
        )
        assert kept.delta.also == {USER: (1,)} and store.decisions("rejected") == []
        again = Decision(refused, "denied", "user:p", "f2", "AccessDenied: still no")
        store.commit([Commit(decided=[again])])
        assert [d.rights for d in store.decisions()] == ["f2"]
        assert store.entries_without_delta(USER) == {"o2": {1, 2}}
        assert store.entries_without_delta(TOPIC) == {}
        # its sender's rights changed and it applies now: the entries get it, the decision goes
        store.commit([Commit(deltas=[refused])])
        assert store.decisions() == [] and store.version_vector(USER) == {"o2": 3}
        assert store.decided_seqs(USER, "o2", 0, 3) == set()
        assert [d.uid for d in store.deltas_since([USER], {})] == [refused.uid, delta(3, origin="o2").uid]
        assert store.entries_without_delta(USER) == {}

    def test_entries_decided_against_outlive_their_decision_when_the_memory_is_forgotten(
        self, store: Store
    ) -> None:
        refused = delta(1, origin="o2", seqs={USER: 1})
        store.commit([Commit(decided=[Decision(refused, "rejected", "user:p", "f1", "superseded")])])
        store.commit([Commit(deltas=[delta(2, origin="o2", seqs={USER: 2})])])
        store.commit([Commit(deltas=[delta(3, seqs={USER: 1})], erase=["d1"])])
        assert store.decisions() == []  # a decision holds the delta's content: it goes with the memory
        assert store.version_vector(USER) == {"o1": 1, "o2": 2}
        assert store.entries_without_delta(USER) == {"o2": {1}}
        assert self._reopen(store).entries_without_delta(USER) == {"o2": {1}}

    def test_reopen_restores_state(self, store: Store) -> None:
        store.set_meta("replica_id", "r1")
        store.commit(
            [
                Commit(
                    deltas=[
                        delta(1, channels=(USER, TOPIC)),
                        delta(2, origin="o2", seqs={USER: 1}),
                        delta(4, origin="o2", seqs={USER: 3}),  # past a gap
                    ],
                    docs=[doc("d1", conflicts=(conflict("d1"),)), doc("d2", deleted=True)],
                    pending_add=[parked(delta(8, origin="o3", seqs={USER: 2}))],
                )
            ]
        )
        (last,) = store.commit([Commit(docs=[doc("d3")])])
        before = snapshot(store)
        store_doc_before = store.load_doc("d1")
        assert store_doc_before is not None and len(store_doc_before.tail) == 3  # d1: deltas 1, 2, 4
        again = self._reopen(store)
        assert snapshot(again) == before
        assert again.get_meta("replica_id") == "r1"
        assert again.is_logged(USER, "o2", 3) and not again.is_logged(USER, "o2", 2)
        assert again.load_doc("d1") == store_doc_before
        (local,) = again.commit([Commit(deltas=[delta(10)], docs=[doc("d4")])])
        assert local.seqs[delta(10).uid] == {USER: 2}  # seqs continue, never reused
        assert local.versions["d4"] > last.versions["d3"]  # so does the version counter
        again.commit([Commit(deltas=[delta(3, origin="o2", seqs={USER: 2})])])
        assert again.version_vector(USER) == {"o1": 2, "o2": 3}  # the gap filled after reopen

    def test_reopen_twice_keeps_counters(self, store: Store) -> None:
        store.commit([Commit(deltas=[delta(1)], docs=[doc("a")])])
        again = self._reopen(store)
        (second,) = again.commit([Commit(deltas=[delta(2)], docs=[doc("b")])])
        third_store = self._reopen(again)
        (third,) = third_store.commit([Commit(deltas=[delta(3)], docs=[doc("c")])])
        assert third.seqs[delta(3).uid] == {USER: 3}
        assert third.versions["c"] > second.versions["b"]
        assert [d.seqs[USER] for d in third_store.deltas_since([USER], {})] == [1, 2, 3]


def store_vectors(store: Store) -> dict[str, dict[str, int]]:
    return {c: store.version_vector(c) for c in store.channels()}
