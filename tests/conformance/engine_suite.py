"""The VectorEngine port's conformance suite: every engine adapter runs it (see ``tests/test_engines.py``).

Subclass :class:`EngineSuite` and implement :meth:`EngineSuite.make_engine` (a new engine, no
collection yet). Engines that keep their points on disk set ``persistent = True`` and implement
:meth:`EngineSuite.reopen` (a new engine object on the same files, after the old one was closed).

The suite talks to the engine only through :class:`crdtmem.index.base.VectorEngine`, on small
hand-made 4-d vectors whose cosine similarities are known, with payloads shaped like the indexer's.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest

from crdtmem import InvalidInput, StorageError
from crdtmem.index.base import Hit, Point, SearchFilter, VectorEngine

DIM = 4


def payload(
    memory_id: str,
    version: int = 1,
    *,
    user_id: str | None = "u1",
    tenant_id: str | None = None,
    kind: str = "fact",
    topics: tuple[str, ...] = (),
    channels: tuple[str, ...] | None = None,
    tags: tuple[str, ...] = (),
    deleted: bool = False,
    conflicted: bool = False,
    content: str = "",
) -> dict[str, Any]:
    if channels is None:
        channels = (f"user:{user_id}:memories",) if user_id else ()
    return {
        "memory_id": memory_id,
        "version": version,
        "kind": kind,
        "user_id": user_id,
        "tenant_id": tenant_id,
        "topics": list(topics),
        "channels": list(channels),
        "tags": list(tags),
        "deleted": deleted,
        "conflicted": conflicted,
        "model": "test-model",
        "content": content or f"memory {memory_id}",
    }


def point(memory_id: str, vector: list[float], version: int = 1, **fields: Any) -> Point:
    return Point(memory_id, vector, payload(memory_id, version, **fields))


def unit(i: int) -> list[float]:
    vector = [0.0] * DIM
    vector[i] = 1.0
    return vector


def ids(hits: list[Hit]) -> list[str]:
    return [hit.id for hit in hits]


# The filter fixture: who owns what, which flags are set. Vectors are all different so that ranking
# is well defined, and all close enough to the query to show up with a large limit.
SCOPED = [
    point("u1-fact", [1.0, 0.1, 0.0, 0.0], tenant_id="acme", topics=("t1",), tags=("a", "b"),
          channels=("user:u1:memories", "topic:t1:updates")),
    point("u1-pref", [1.0, 0.2, 0.0, 0.0], tenant_id="acme", kind="preference", tags=("a",)),
    point("u1-conf", [1.0, 0.3, 0.0, 0.0], tenant_id="acme", tags=("b",), conflicted=True),
    point("u1-del", [1.0, 0.4, 0.0, 0.0], tenant_id="acme", deleted=True),
    point("u1-del-conf", [1.0, 0.5, 0.0, 0.0], tenant_id="acme", deleted=True, conflicted=True),
    point("u2-fact", [1.0, 0.0, 0.1, 0.0], user_id="u2", tenant_id="acme", topics=("t1",), tags=("a", "b"),
          channels=("user:u2:memories", "tenant:acme:shared")),
    point("u3-list", [1.0, 0.0, 0.2, 0.0], user_id="u3", tenant_id="other", kind="list", topics=("t2",),
          channels=("user:u3:memories", "tenant:other:shared")),
    point("shared", [1.0, 0.0, 0.3, 0.0], user_id=None, tenant_id="acme", topics=("t1",),
          channels=("tenant:acme:shared",)),
]  # fmt: skip

FILTER_CASES: list[tuple[SearchFilter, set[str]]] = [
    (SearchFilter(), {"u1-fact", "u1-pref", "u1-conf", "u2-fact", "u3-list", "shared"}),
    (SearchFilter(user_id="u1"), {"u1-fact", "u1-pref", "u1-conf"}),
    (SearchFilter(user_id="u2"), {"u2-fact"}),
    (SearchFilter(user_id="nobody"), set()),
    (SearchFilter(user_id="u1", include_deleted=True),
     {"u1-fact", "u1-pref", "u1-conf", "u1-del", "u1-del-conf"}),
    (SearchFilter(user_id="u1", include_conflicted=False), {"u1-fact", "u1-pref"}),
    (SearchFilter(user_id="u1", include_deleted=True, include_conflicted=False),
     {"u1-fact", "u1-pref", "u1-del"}),
    (SearchFilter(tenant_id="acme"), {"u1-fact", "u1-pref", "u1-conf", "u2-fact", "shared"}),
    (SearchFilter(tenant_id="other"), {"u3-list"}),
    (SearchFilter(kind="fact"), {"u1-fact", "u1-conf", "u2-fact", "shared"}),
    (SearchFilter(kind="list"), {"u3-list"}),
    (SearchFilter(topic="t1"), {"u1-fact", "u2-fact", "shared"}),
    (SearchFilter(topic="t2"), {"u3-list"}),
    (SearchFilter(tags=("a",)), {"u1-fact", "u1-pref", "u2-fact"}),
    (SearchFilter(tags=("b",)), {"u1-fact", "u1-conf", "u2-fact"}),
    (SearchFilter(tags=("a", "b")), {"u1-fact", "u2-fact"}),
    (SearchFilter(tags=("a", "zzz")), set()),
    (SearchFilter(channels=("tenant:acme:shared",)), {"u2-fact", "shared"}),
    (SearchFilter(channels=("user:u1:memories", "tenant:acme:shared")),
     {"u1-fact", "u1-pref", "u1-conf", "u2-fact", "shared"}),
    (SearchFilter(channels=("topic:t1:updates",)), {"u1-fact"}),
    (SearchFilter(channels=()), set()),
    (SearchFilter(user_id="u1", kind="fact", tags=("b",)), {"u1-fact", "u1-conf"}),
    (SearchFilter(user_id="u1", tenant_id="acme", topic="t1", tags=("a",), channels=("topic:t1:updates",)),
     {"u1-fact"}),
    (SearchFilter(user_id="u2", tenant_id="other"), set()),
    (SearchFilter(include_deleted=True, include_conflicted=False),
     {"u1-fact", "u1-pref", "u1-del", "u2-fact", "u3-list", "shared"}),
]  # fmt: skip


class EngineSuite:
    persistent: ClassVar[bool] = False

    def make_engine(self, tmp_path: Path) -> VectorEngine:
        raise NotImplementedError

    def reopen(self, tmp_path: Path) -> VectorEngine:
        """A new engine on the files of the (closed) engine ``make_engine(tmp_path)`` returned."""
        raise NotImplementedError

    @pytest.fixture
    def engine(self, tmp_path: Path) -> Any:
        engine = self.make_engine(tmp_path)
        yield engine
        engine.close()

    @pytest.fixture
    def ready(self, engine: VectorEngine) -> VectorEngine:
        engine.ensure_collection(DIM)
        return engine

    @pytest.fixture
    def scoped(self, ready: VectorEngine) -> VectorEngine:
        assert ready.upsert(SCOPED) == len(SCOPED)
        return ready

    # -- the collection ------------------------------------------------------------------------

    def test_is_a_vector_engine(self, engine: VectorEngine) -> None:
        assert isinstance(engine, VectorEngine)
        assert isinstance(engine.name, str) and engine.name

    def test_ensure_collection_is_idempotent(self, ready: VectorEngine) -> None:
        ready.upsert([point("a", unit(0))])
        ready.ensure_collection(DIM)
        ready.ensure_collection(DIM)
        assert ready.count() == 1
        assert ready.versions() == {"a": 1}

    def test_dimension_mismatch_is_invalid_input(self, ready: VectorEngine) -> None:
        ready.upsert([point("a", unit(0))])
        with pytest.raises(InvalidInput):
            ready.ensure_collection(DIM + 1)
        assert ready.versions() == {"a": 1}, "a refused ensure_collection must not touch the points"

    @pytest.mark.parametrize("dim", [0, -1, 2.5, "4", True])
    def test_bad_dimension_is_invalid_input(self, engine: VectorEngine, dim: Any) -> None:
        with pytest.raises(InvalidInput):
            engine.ensure_collection(dim)

    def test_calls_before_ensure_collection_raise_storage_error(self, engine: VectorEngine) -> None:
        with pytest.raises(StorageError, match="ensure_collection"):
            engine.upsert([point("a", unit(0))])
        with pytest.raises(StorageError):
            engine.search(unit(0), SearchFilter(), 5)
        with pytest.raises(StorageError):
            engine.versions()
        with pytest.raises(StorageError):
            engine.payloads()
        with pytest.raises(StorageError):
            engine.count()

    # -- upsert, versions, delete, count ---------------------------------------------------------

    def test_upsert_versions_delete_count(self, ready: VectorEngine) -> None:
        assert ready.count() == 0
        assert ready.versions() == {}
        written = ready.upsert([point("a", unit(0), 3), point("b", unit(1), 1), point("c", unit(2), 7)])
        assert written == 3
        assert ready.count() == 3
        assert ready.versions() == {"a": 3, "b": 1, "c": 7}
        assert ready.versions(["a", "c", "missing"]) == {"a": 3, "c": 7}
        assert ready.versions([]) == {}
        ready.delete(["a", "missing"])
        assert ready.count() == 2
        assert ready.versions() == {"b": 1, "c": 7}
        ready.delete([])
        assert ready.upsert([]) == 0
        assert ready.count() == 2

    def test_payloads_come_back_as_stored(self, ready: VectorEngine) -> None:
        """What verify() compares with the store: every field, for all points or the ones asked."""
        ready.upsert(
            [point("a", unit(0), 3, tags=("x",), conflicted=True, content="hi"), point("b", unit(1))]
        )
        expected = {"a": payload("a", 3, tags=("x",), conflicted=True, content="hi"), "b": payload("b")}
        assert ready.payloads() == expected
        assert ready.payloads(["b", "missing"]) == {"b": expected["b"]}
        assert ready.payloads([]) == {}
        ready.upsert([point("a", unit(0), 4, deleted=True)])
        assert ready.payloads(["a"])["a"] == payload("a", 4, deleted=True)
        ready.delete(["a"])
        assert set(ready.payloads()) == {"b"}

    def test_any_string_is_a_memory_id(self, ready: VectorEngine) -> None:
        odd = ["01J9Z3-ULID-like", "with spaces and / slashes", "ünïcode-🙂", "x" * 300]
        ready.upsert([point(memory_id, unit(i % DIM), i + 1) for i, memory_id in enumerate(odd)])
        assert ready.versions() == {memory_id: i + 1 for i, memory_id in enumerate(odd)}
        hits = ready.search(unit(0), SearchFilter(), 10)
        assert set(ids(hits)) == set(odd)

    def test_newer_version_replaces_vector_and_payload(self, ready: VectorEngine) -> None:
        ready.upsert([point("a", unit(0), 1, content="old")])
        assert ready.upsert([point("a", unit(1), 2, content="new")]) == 1
        assert ready.count() == 1
        assert ready.versions() == {"a": 2}
        (hit,) = ready.search(unit(1), SearchFilter(), 5)
        assert hit.payload["content"] == "new"
        assert hit.score == pytest.approx(1.0, abs=1e-4)

    def test_stale_upsert_never_overwrites_a_newer_version(self, ready: VectorEngine) -> None:
        ready.upsert([point("a", unit(0), 5, content="v5")])
        assert ready.upsert([point("a", unit(1), 3, content="v3")]) == 0
        assert ready.versions() == {"a": 5}
        (hit,) = ready.search(unit(0), SearchFilter(), 5)
        assert hit.payload["content"] == "v5" and hit.payload["version"] == 5
        assert hit.score == pytest.approx(1.0, abs=1e-4), "the stale vector must not have been written"

    def test_stale_points_are_skipped_point_by_point(self, ready: VectorEngine) -> None:
        ready.upsert([point("a", unit(0), 5), point("b", unit(1), 5)])
        written = ready.upsert([point("a", unit(2), 4), point("b", unit(2), 6), point("c", unit(2), 1)])
        assert written == 2
        assert ready.versions() == {"a": 5, "b": 6, "c": 1}

    def test_equal_version_is_rewritten(self, ready: VectorEngine) -> None:
        """Re-embedding (a new model) re-upserts the same versions: they must land."""
        ready.upsert([point("a", unit(0), 4, content="first embedding")])
        assert ready.upsert([point("a", unit(1), 4, content="second embedding")]) == 1
        (hit,) = ready.search(unit(1), SearchFilter(), 5)
        assert hit.payload["content"] == "second embedding"

    def test_duplicate_ids_in_one_batch_keep_the_highest_version(self, ready: VectorEngine) -> None:
        batch = [point("a", unit(0), 2, content="v2"), point("a", unit(1), 9, content="v9"),
                 point("a", unit(2), 5, content="v5")]  # fmt: skip
        assert ready.upsert(batch) == 1
        assert ready.versions() == {"a": 9}
        (hit,) = ready.search(unit(0), SearchFilter(), 5)
        assert hit.payload["content"] == "v9"

    def test_delete_then_upsert_any_version(self, ready: VectorEngine) -> None:
        ready.upsert([point("a", unit(0), 5)])
        ready.delete(["a"])
        assert ready.upsert([point("a", unit(0), 1)]) == 1
        assert ready.versions() == {"a": 1}

    def test_bad_points_are_invalid_input_and_write_nothing(self, ready: VectorEngine) -> None:
        bad: list[Point] = [
            Point("short", [1.0, 0.0], payload("short")),
            Point("long", [1.0] * (DIM + 1), payload("long")),
            Point("nan", [math.nan, 0.0, 0.0, 0.0], payload("nan")),
            Point("inf", [math.inf, 0.0, 0.0, 0.0], payload("inf")),
            Point("", unit(0), payload("")),
            Point("noversion", unit(0), {"memory_id": "noversion"}),
            Point("other-id", unit(0), payload("not-other-id")),
        ]
        for one in bad:
            with pytest.raises(InvalidInput):
                ready.upsert([point("good", unit(0)), one])
        assert ready.count() == 0

    def test_many_points_page_through_versions(self, ready: VectorEngine) -> None:
        total = 1100  # more than one page of the Qdrant adapters' scroll and retrieve
        points = [point(f"m{i}", [1.0, i / total, 0.5, 0.0], i + 1) for i in range(total)]
        assert ready.upsert(points) == total
        assert ready.count() == total
        assert ready.versions() == {f"m{i}": i + 1 for i in range(total)}
        assert ready.upsert(points) == total  # the version check of a full batch reads every id
        ready.delete([f"m{i}" for i in range(0, total, 2)])
        assert ready.count() == total // 2

    # -- search ---------------------------------------------------------------------------------

    def test_ranking_by_cosine_similarity(self, ready: VectorEngine) -> None:
        ready.upsert([
            point("same", [2.0, 0.0, 0.0, 0.0]),  # cosine 1, whatever its length
            point("close", [3.0, 0.5, 0.0, 0.0]),  # 3 / sqrt(9.25)
            point("diagonal", [1.0, 1.0, 0.0, 0.0]),  # 1 / sqrt(2)
            point("orthogonal", [0.0, 0.0, 4.0, 0.0]),  # 0
            point("opposite", [-1.0, 0.0, 0.0, 0.0]),  # -1
        ])  # fmt: skip
        hits = ready.search([0.5, 0.0, 0.0, 0.0], SearchFilter(), 10)
        assert ids(hits) == ["same", "close", "diagonal", "orthogonal", "opposite"]
        expected = [1.0, 3 / math.sqrt(9.25), 1 / math.sqrt(2), 0.0, -1.0]
        assert [h.score for h in hits] == pytest.approx(expected, abs=1e-4)
        assert ids(ready.search([1.0, 0.0, 0.0, 0.0], SearchFilter(), 2)) == ["same", "close"]
        assert ids(ready.search([0.0, 0.0, 1.0, 0.0], SearchFilter(), 1)) == ["orthogonal"]
        assert ready.search([1.0, 0.0, 0.0, 0.0], SearchFilter(), 0) == []

    def test_hits_carry_the_memory_id_and_its_payload(self, scoped: VectorEngine) -> None:
        by_id = {p.id: p for p in SCOPED}
        hits = scoped.search(unit(0), SearchFilter(include_deleted=True), 20)
        assert sorted(ids(hits)) == sorted(by_id)
        for hit in hits:
            assert hit.payload == by_id[hit.id].payload
            assert isinstance(hit.score, float)

    def test_every_filter_field(self, scoped: VectorEngine) -> None:
        for flt, expected in FILTER_CASES:
            hits = scoped.search(unit(0), flt, 50)
            assert sorted(ids(hits)) == sorted(expected), flt

    def test_one_users_search_never_returns_another_users_memory(self, scoped: VectorEngine) -> None:
        for user in ("u1", "u2", "u3"):
            for query in (unit(0), unit(1), unit(2), unit(3), [-1.0, -1.0, -1.0, -1.0]):
                for deleted in (False, True):
                    flt = SearchFilter(user_id=user, include_deleted=deleted)
                    hits = scoped.search(query, flt, 50)
                    assert hits, f"{user} has memories"
                    assert {h.payload["user_id"] for h in hits} == {user}
                    assert all(h.id.startswith(user) for h in hits)

    def test_filtered_search_ranks_within_the_filter(self, scoped: VectorEngine) -> None:
        hits = scoped.search([1.0, 0.3, 0.0, 0.0], SearchFilter(user_id="u1"), 2)
        assert ids(hits) == ["u1-conf", "u1-pref"]

    def test_bad_search_arguments_are_invalid_input(self, scoped: VectorEngine) -> None:
        with pytest.raises(InvalidInput):
            scoped.search([1.0, 0.0], SearchFilter(), 5)
        with pytest.raises(InvalidInput):
            scoped.search([math.nan, 0.0, 0.0, 0.0], SearchFilter(), 5)
        with pytest.raises(InvalidInput):
            scoped.search(unit(0), SearchFilter(), -1)
        with pytest.raises(InvalidInput):
            scoped.search(unit(0), {"user_id": "u1"}, 5)  # type: ignore[arg-type]

    # -- lifecycle ------------------------------------------------------------------------------

    def test_close_is_idempotent_and_later_calls_raise_storage_error(self, tmp_path: Path) -> None:
        engine = self.make_engine(tmp_path)
        engine.ensure_collection(DIM)
        engine.upsert([point("a", unit(0))])
        engine.close()
        engine.close()
        with pytest.raises(StorageError):
            engine.count()
        with pytest.raises(StorageError):
            engine.upsert([point("b", unit(0))])
        with pytest.raises(StorageError):
            engine.search(unit(0), SearchFilter(), 5)

    def test_usable_from_other_threads(self, ready: VectorEngine) -> None:
        """The indexer calls the engine from worker threads while searches come from others."""

        def write(worker: int) -> int:
            return sum(
                ready.upsert([point(f"w{worker}-{i}", [1.0, worker / 4, i / 20, 0.0], i + 1)])
                for i in range(20)
            )

        def read(worker: int) -> list[Hit]:
            return [hit for _ in range(20) for hit in ready.search(unit(0), SearchFilter(user_id="u1"), 5)]

        with ThreadPoolExecutor(max_workers=5) as pool:
            writes = [pool.submit(write, worker) for worker in range(3)]
            reads = [pool.submit(read, worker) for worker in range(2)]
            assert [f.result() for f in writes] == [20, 20, 20]
            assert all(hit.payload["user_id"] == "u1" for f in reads for hit in f.result())
        assert ready.count() == 60
        assert len(ready.search(unit(0), SearchFilter(user_id="u1"), 5)) == 5


class PersistentEngineSuite(EngineSuite):
    """The suite plus what only engines that keep files must do: survive a reopen."""

    def test_points_survive_reopen(self, tmp_path: Path) -> None:
        engine = self.make_engine(tmp_path)
        engine.ensure_collection(DIM)
        engine.upsert(SCOPED)
        newer = point("u1-fact", [1.0, 0.1, 0.0, 0.0], 2, tenant_id="acme", topics=("t1",), tags=("a", "b"),
                      channels=("user:u1:memories", "topic:t1:updates"))  # fmt: skip
        engine.upsert([newer])
        engine.delete(["shared"])
        before = engine.versions()
        engine.close()

        again = self.reopen(tmp_path)
        try:
            again.ensure_collection(DIM)
            assert again.versions() == before
            assert again.count() == len(SCOPED) - 1
            assert set(ids(again.search(unit(0), SearchFilter(user_id="u1"), 10))) == {
                "u1-fact", "u1-pref", "u1-conf"}  # fmt: skip
            assert again.upsert([point("u1-fact", unit(0), 1)]) == 0, "versions survive reopen"
        finally:
            again.close()

    def test_reopen_with_another_dimension_is_invalid_input(self, tmp_path: Path) -> None:
        engine = self.make_engine(tmp_path)
        engine.ensure_collection(DIM)
        engine.upsert([point("a", unit(0))])
        engine.close()
        again = self.reopen(tmp_path)
        try:
            with pytest.raises(InvalidInput):
                again.ensure_collection(DIM + 3)
            again.ensure_collection(DIM)
            assert again.versions() == {"a": 1}
        finally:
            again.close()
