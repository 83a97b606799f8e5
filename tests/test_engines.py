"""Run the VectorEngine conformance suite against every adapter, plus what is specific to each:
``open_engine``, the filter translation a Qdrant server receives, error translation, file locks."""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import qdrant_edge
from qdrant_client import models

from crdtmem import InvalidInput, StorageError
from crdtmem.index import engines
from crdtmem.index.base import SearchFilter, VectorEngine
from crdtmem.index.engines import (
    DEFAULT_ENGINE,
    MemoryEngine,
    QdrantClientEngine,
    QdrantEdgeEngine,
    open_engine,
)
from crdtmem.index.engines.qdrant_client import to_qdrant_filter
from crdtmem.index.engines.qdrant_edge import FLAGS_FIELD
from tests.conformance.engine_suite import DIM, EngineSuite, PersistentEngineSuite, point, unit


class TestMemoryEngine(EngineSuite):
    def make_engine(self, tmp_path: Path) -> VectorEngine:
        return MemoryEngine()


class TestQdrantClientInMemory(EngineSuite):
    def make_engine(self, tmp_path: Path) -> VectorEngine:
        return QdrantClientEngine.in_memory("test")


class TestQdrantClientLocal(PersistentEngineSuite):
    persistent = True

    def make_engine(self, tmp_path: Path) -> VectorEngine:
        return QdrantClientEngine.local(tmp_path / "qdrant", "test")

    def reopen(self, tmp_path: Path) -> VectorEngine:
        return QdrantClientEngine.local(tmp_path / "qdrant", "test")


class TestQdrantEdge(PersistentEngineSuite):
    persistent = True

    def make_engine(self, tmp_path: Path) -> VectorEngine:
        return QdrantEdgeEngine(tmp_path / "edge")

    def reopen(self, tmp_path: Path) -> VectorEngine:
        return QdrantEdgeEngine(tmp_path / "edge")


# -- open_engine ----------------------------------------------------------------------------------


def test_open_engine_builds_each_kind(tmp_path: Path) -> None:
    opened = {
        "memory": open_engine("memory"),
        "qdrant-memory": open_engine("qdrant-memory"),
        "qdrant-local": open_engine("qdrant-local", tmp_path / "local"),
        "edge": open_engine("edge", tmp_path / "index", collection="memories"),
        "https://127.0.0.1:6333": open_engine("https://127.0.0.1:6333", api_key="secret"),
    }
    try:
        assert isinstance(opened["memory"], MemoryEngine)
        assert isinstance(opened["edge"], QdrantEdgeEngine)
        assert opened["edge"].path == tmp_path / "index" / "memories"
        assert {spec: e.name for spec, e in opened.items()} == {
            "memory": "memory",
            "qdrant-memory": "qdrant-memory",
            "qdrant-local": "qdrant-local",
            "edge": "edge",
            "https://127.0.0.1:6333": "qdrant-server",
        }
        assert all(isinstance(e, VectorEngine) for e in opened.values())
    finally:
        for engine in opened.values():
            engine.close()
    assert DEFAULT_ENGINE == "edge"


@pytest.mark.parametrize("spec", ["", "qdrant", "Edge", "ftp://x", "sqlite"])
def test_open_engine_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(InvalidInput, match="unknown engine"):
        open_engine(spec)


@pytest.mark.parametrize("spec", ["edge", "qdrant-local"])
def test_embedded_engines_need_a_path(spec: str) -> None:
    with pytest.raises(InvalidInput, match="path"):
        open_engine(spec, None)


def test_exported_members() -> None:
    assert sorted(engines.__all__) == sorted(
        ["DEFAULT_COLLECTION", "DEFAULT_ENGINE", "ENGINE_SPECS", "MemoryEngine", "QdrantClientEngine",
         "QdrantEdgeEngine", "open_engine"]
    )  # fmt: skip
    for name in engines.__all__:
        assert getattr(engines, name) is not None
    with pytest.raises(AttributeError):
        engines.NoSuchEngine  # noqa: B018


def test_importing_the_package_loads_no_engine_library() -> None:
    code = (
        "import sys, crdtmem.index.engines as e; e.open_engine('memory');"
        "print(sorted(m for m in ('qdrant_client', 'qdrant_edge') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- Qdrant server: the filter it receives, and an unreachable server -------------------------------


def test_qdrant_filter_for_a_full_search_filter() -> None:
    flt = SearchFilter(user_id="u1", tenant_id="acme", kind="fact", topic="t1", tags=("a", "b"),
                       channels=("user:u1:memories", "tenant:acme:shared"))  # fmt: skip
    built = to_qdrant_filter(flt)
    assert built == models.Filter(
        must=[
            models.FieldCondition(key="user_id", match=models.MatchValue(value="u1")),
            models.FieldCondition(key="tenant_id", match=models.MatchValue(value="acme")),
            models.FieldCondition(key="kind", match=models.MatchValue(value="fact")),
            models.FieldCondition(key="topics", match=models.MatchValue(value="t1")),
            models.FieldCondition(key="tags", match=models.MatchValue(value="a")),
            models.FieldCondition(key="tags", match=models.MatchValue(value="b")),
            models.FieldCondition(
                key="channels", match=models.MatchAny(any=["user:u1:memories", "tenant:acme:shared"])
            ),
        ],
        must_not=[models.FieldCondition(key="deleted", match=models.MatchValue(value=True))],
    )
    assert to_qdrant_filter(SearchFilter(include_deleted=True)) is None
    both = to_qdrant_filter(SearchFilter(include_conflicted=False))
    assert both is not None and both.must is None
    assert both.must_not == [
        models.FieldCondition(key="deleted", match=models.MatchValue(value=True)),
        models.FieldCondition(key="conflicted", match=models.MatchValue(value=True)),
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_unreachable_server_raises_storage_error() -> None:
    engine = open_engine(f"http://127.0.0.1:{_closed_port()}", collection="x")
    try:
        with pytest.raises(StorageError, match="qdrant-server: create the collection failed") as info:
            engine.ensure_collection(DIM)
        assert info.value.__cause__ is not None, "the qdrant/httpx error is chained"
    finally:
        engine.close()


# -- local files: one process at a time, garbage ---------------------------------------------------


def test_qdrant_local_folder_in_use_raises_storage_error(tmp_path: Path) -> None:
    first = QdrantClientEngine.local(tmp_path / "q")
    try:
        # qdrant-client leaves its lock file open when the folder is locked; it warns when collected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with pytest.raises(StorageError, match="cannot open") as info:
                QdrantClientEngine.local(tmp_path / "q")
            del info
            gc.collect()
    finally:
        first.close()


def test_edge_shard_in_use_raises_storage_error(tmp_path: Path) -> None:
    first = QdrantEdgeEngine(tmp_path / "e")
    first.ensure_collection(DIM)
    second = QdrantEdgeEngine(tmp_path / "e")
    try:
        with pytest.raises(StorageError, match="cannot open"):
            second.ensure_collection(DIM)
    finally:
        second.close()
        first.close()


def test_edge_on_a_damaged_shard_raises_storage_error(tmp_path: Path) -> None:
    engine = QdrantEdgeEngine(tmp_path / "e")
    engine.ensure_collection(DIM)
    engine.close()
    (tmp_path / "e" / "edge_config.json").write_text("not json")
    again = QdrantEdgeEngine(tmp_path / "e")
    try:
        with pytest.raises(StorageError, match="cannot open the Edge shard"):
            again.ensure_collection(DIM)
    finally:
        again.close()


# -- Edge specifics ---------------------------------------------------------------------------------


def test_edge_bool_match_is_still_broken_so_flags_are_needed() -> None:
    """qdrant-edge-py 0.9 turns MatchValue(True) into the integer 1, which matches no bool payload;
    the adapter filters on a keyword field instead. When this fails, bool matching works upstream
    and the ``_flags`` workaround in qdrant_edge.py can go."""
    assert type(qdrant_edge.MatchValue(True).value) is int


def test_edge_hits_do_not_leak_the_flags_field(tmp_path: Path) -> None:
    engine = QdrantEdgeEngine(tmp_path / "e")
    try:
        engine.ensure_collection(DIM)
        engine.upsert([point("a", unit(0), deleted=True, conflicted=True)])
        (hit,) = engine.search(unit(0), SearchFilter(include_deleted=True), 5)
        assert FLAGS_FIELD not in hit.payload
        assert hit.payload["deleted"] is True and hit.payload["conflicted"] is True
    finally:
        engine.close()


def test_edge_optimize_keeps_points_and_results(tmp_path: Path) -> None:
    engine = QdrantEdgeEngine(tmp_path / "e")
    try:
        engine.ensure_collection(DIM)
        engine.upsert([point(f"m{i}", [1.0, i / 50, 0.0, 0.0], i + 1) for i in range(50)])
        before = engine.search([1.0, 0.5, 0.0, 0.0], SearchFilter(user_id="u1"), 3)
        engine.optimize()
        assert engine.count() == 50
        after = engine.search([1.0, 0.5, 0.0, 0.0], SearchFilter(user_id="u1"), 3)
        # m24 and m26 are equally close up to float32 rounding: compare sets, not their order
        assert after[0].id == before[0].id == "m25"
        assert {h.id for h in after} == {h.id for h in before} == {"m24", "m25", "m26"}
    finally:
        engine.close()
