"""Metrics through prometheus_client: a registry per node, help text on every metric, latency
histograms for writes, applies, pushes and searches, process metrics, and every metric name the code
counts or the docs list is declared."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from crdtmem import Replica
from crdtmem.index import IndexSettings
from crdtmem.metrics import COUNTERS, HISTOGRAMS, Metrics
from crdtmem.server import Node, PeerConfig
from tests.support.processes import ServerProcess

REPO = Path(__file__).resolve().parents[1]
U1 = "user:u1:memories"


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_two_registries_count_apart() -> None:
    a, b = Metrics(), Metrics()
    a.inc("crdtmem_auth_failures_total")
    a.inc("crdtmem_frames_sent_total", peer="x", source="log")
    a.observe("crdtmem_search_seconds", 0.003)
    assert a.value("crdtmem_auth_failures_total") == 1
    assert a.value("crdtmem_frames_sent_total", peer="x", source="log") == 1
    assert b.value("crdtmem_auth_failures_total") == 0
    assert a.value("crdtmem_search_seconds_count") == 1 and b.value("crdtmem_search_seconds_count") == 0
    assert a.total("crdtmem_frames_sent_total") == 1


def test_every_declared_metric_is_exposed_with_its_help_text() -> None:
    body, content_type = Metrics().exposition()
    assert content_type.startswith("text/plain")
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (help_text, _) in {**COUNTERS, **HISTOGRAMS}.items():
        family = families[name.removesuffix("_total")]
        assert family.documentation == help_text and help_text
    histogram = families["crdtmem_write_seconds"]
    assert histogram.type == "histogram"


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    metrics = Metrics()
    metrics.inc("crdtmem_pull_deltas_total", 3)
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF") and "crdtmem_pull_deltas_total 3.0" in body.decode()


def test_a_failing_block_is_not_timed() -> None:
    metrics = Metrics()
    try:
        with metrics.timer("crdtmem_apply_seconds", source="push"):
            raise ValueError("refused")
    except ValueError:
        pass
    with metrics.timer("crdtmem_apply_seconds", source="push"):
        pass
    assert metrics.value("crdtmem_apply_seconds_count", source="push") == 1


def _counted_names() -> set[str]:
    pattern = re.compile(r"""\.(?:inc|observe|timer)\(\s*["'](crdtmem_[a-z_]+)["']""")
    names: set[str] = set()
    for path in (REPO / "crdtmem").rglob("*.py"):
        names.update(pattern.findall(path.read_text()))
    return names


def test_every_metric_the_code_counts_is_declared() -> None:
    counted = _counted_names()
    assert {"crdtmem_http_requests_total", "crdtmem_apply_seconds", "crdtmem_push_seconds"} <= counted
    assert counted <= set(COUNTERS) | set(HISTOGRAMS)


def test_every_metric_the_docs_name_exists() -> None:
    documented = set(re.findall(r"`(crdtmem_[a-z_]+)", (REPO / "docs" / "operating.md").read_text()))
    gauges = {"crdtmem_index_lag_versions", "crdtmem_memories", "crdtmem_pending_deltas"}
    gauges |= {"crdtmem_event_subscribers", "crdtmem_peers_connected", "crdtmem_links"}
    gauges |= {"crdtmem_pending_evicted", "crdtmem_deltas_refused"}
    gauges |= {"crdtmem_bus_connected", "crdtmem_bus_publish_lag_entries"}
    gauges |= {"crdtmem_bus_consumer_lag_messages"}
    gauges |= {"crdtmem_index_points_written", "crdtmem_index_points_refused"}
    gauges |= {"crdtmem_index_points_skipped"}
    gauges |= {"crdtmem_memories_quarantined", "crdtmem_storage_integrity_problems"}
    gauges |= {"crdtmem_cache_bytes", "crdtmem_cache_entries"}
    gauges |= {"crdtmem_log_folded_entries", "crdtmem_erasures"}
    gauges |= {"crdtmem_gc_frozen_objects"}
    assert set(COUNTERS) | set(HISTOGRAMS) <= documented
    assert documented <= set(COUNTERS) | set(HISTOGRAMS) | gauges


async def test_two_nodes_in_one_process_record_their_own_latencies(tmp_path: Path) -> None:
    async with (
        Node(
            Replica(
                tmp_path / "hub.db", replica_id="hub", channels=[U1], index=IndexSettings(engine="memory")
            )
        ) as hub,
        Node(
            Replica(tmp_path / "edge.db", replica_id="edge", channels=[U1]), peers=[PeerConfig(hub.url)]
        ) as edge,
        aiohttp.ClientSession() as http,
    ):
        await asyncio.wait_for(edge.peers[0].synced.wait(), 10)
        async with http.post(f"{hub.url}/v1/memories", json={"content": "tea", "user_id": "u1"}) as r:
            assert r.status == 201
            memory = await r.json()
        async with http.patch(f"{hub.url}/v1/memories/{memory['id']}", json={"content": "green tea"}) as r:
            assert r.status == 200
        async with http.post(f"{hub.url}/v1/memories", json={"content": "x", "kind": "bogus"}) as r:
            assert r.status == 400  # refused writes are not timed
        async with http.post(f"{hub.url}/v1/search", json={"query": "tea"}) as r:
            assert r.status == 200

        async def replicated() -> bool:
            try:
                content = (await edge.replica.get(memory["id"])).content
            except KeyError:
                return False
            return (
                content == "green tea" and hub.metrics.value("crdtmem_push_seconds_count", peer="edge") >= 2
            )

        for _ in range(500):  # bounded: the edge applied both writes and the hub has both acks
            if await replicated():
                break
            await asyncio.sleep(0.02)
        assert await replicated()

        async with http.get(f"{hub.url}/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            hub_text = await r.text()
        async with http.get(f"{edge.url}/metrics") as r:
            edge_text = await r.text()

    assert _sample(hub_text, "crdtmem_write_seconds_count", op="create") == 1
    assert _sample(hub_text, "crdtmem_write_seconds_count", op="update") == 1
    assert _sample(hub_text, "crdtmem_search_seconds_count") == 1
    assert _sample(hub_text, "crdtmem_push_seconds_count", peer="edge") >= 2
    assert _sample(hub_text, "crdtmem_http_requests_total", status="400") == 1
    assert _sample(edge_text, "crdtmem_write_seconds_count", op="create") == 0
    assert _sample(edge_text, "crdtmem_apply_seconds_count", source="link") >= 2
    assert _sample(edge_text, "crdtmem_apply_seconds_count", source="pull") >= 1
    assert _sample(edge_text, "crdtmem_peers_connected") == 1
    assert _sample(hub_text, "crdtmem_links") == 1
    assert _sample(hub_text, "crdtmem_memories") == 1
    for text in (hub_text, edge_text):
        families = text_string_to_metric_families(text)
        assert all(f.documentation for f in families), "a metric without help text"
        assert _sample(text, "process_resident_memory_bytes") > 0
        assert "python_info" in _families(text)


async def test_crdtmem_serve_keeps_its_startup_heap_out_of_full_collections(procs, session, tmp_path) -> None:
    """A full collection walks every tracked object and holds the event loop meanwhile; the process
    of ``crdtmem serve`` freezes what it holds once it serves (modules, the search engine's client),
    so a full collection walks only what the node made since. A node in a caller's process leaves
    the caller's heap alone."""
    server = ServerProcess(tmp_path, "hub")
    procs.append(server.start())
    async with session.get(f"{server.url}/metrics") as response:
        text = await response.text()
    assert _sample(text, "crdtmem_gc_frozen_objects") > 10_000
    async with Node(Replica(None, replica_id="lib")) as node, session.get(f"{node.url}/metrics") as response:
        assert _sample(await response.text(), "crdtmem_gc_frozen_objects") == 0
