"""The capacity model of docs/scale-out.md: its tables are the arithmetic of ``benchmarks/sim_capacity.py``
applied to the doc's own inputs (so the doc cannot drift from the model), the arithmetic is right on
a workload small enough to check by hand, and a bounded measurement and simulation run."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.scripts import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    return load_benchmark("sim_capacity")


def test_the_doc_tables_are_the_model_of_the_doc_inputs(sim: ModuleType) -> None:
    text = (ROOT / "docs" / "scale-out.md").read_text()
    workload, measured = sim.inputs_from_doc(text)
    assert workload.users == 1_000_000 and workload.memories_per_user == 1_000
    assert workload.devices_per_user == 10
    assert sim.render_inputs(workload, measured) in text, "the input table, as the model reads it"
    assert sim.render(workload, measured) in text, "the output tables: run sim_capacity.py --from-doc"
    assert sim.check_doc(text) == []
    _, limits = sim.model(workload, measured)
    assert f"**{limits[0].name}**" in text, "the doc names the limit that bites first"


def test_the_arithmetic_on_a_workload_checked_by_hand(sim: ModuleType) -> None:
    w = sim.Workload(
        users=86_400,
        memories_per_user=10,
        devices_per_user=5,
        writes_per_user_day=2,
        peak_factor=3.0,
        devices_online=0.5,
        stream_replicas=3,
        retention_days=2,
        start_nodes=4,
        copies_per_user=2,
        utilization=0.5,
        node_disk_gb=1.0,
        nats_disk_gb=1.0,
        api_max_bytes=1_000,
        vector_dim=4,
        qdrant_node_ram_gb=0.001,
        node_ram_gb=0.001,
        heartbeat_s=20.0,
        partitions=8,
    )
    m = sim.Measured(
        delta_bytes=100,
        message_bytes=200,
        stream_record_bytes=250,
        local_writes_per_s=2,
        applies_per_s=1,
        store_bytes_per_memory=1_000,
        point_payload_bytes=100,
        index_points_per_s=4,
        index_skips_per_s=8,
        publishes_per_s=10,
        subject_bytes=17,
        link_bytes=100_000,
        heartbeat_us=1_000,
    )
    rows, limits = sim.model(w, m)
    got = {row.name: row.value for row in rows}
    assert got["writes/s, daily mean"] == 2  # 86,400 users x 2 a day
    assert got["writes/s, peak"] == 6
    assert got["stream bytes per day"] == pytest.approx(172_800 * 250 / 1e9)
    assert got["stream bytes retained, all replicas"] == pytest.approx(172_800 * 250 * 2 * 3 / 1e9)
    assert got["fan-out: device pushes per write"] == 2  # 4 other devices, half online
    assert (got["fan-out: index embeds per write"], got["fan-out: index point reads per write"]) == (1, 2)
    assert got["nodes for remote applies"] == 12  # 6/s x (2-1) copies / (1/s x 0.5)
    assert got["nodes for local writes"] == 6  # 6/s / (2/s x 0.5)
    assert got["nodes for disk"] == math.ceil(864_000 * 2 * 1_000 / 1e9)
    assert got["nodes for indexing"] == 5  # 6/s x (1/4 + 1/8) s / 0.5
    # device links: 86,400 x 5 x 0.5 = 216,000; per node the lower of 0.5 x 20 s / 1 ms = 10,000
    # (CPU) and 0.5 x 1 MB / 100 kB = 5 (memory)
    assert (got["device links at peak"], got["device links per node"]) == (216_000, 5)
    assert got["nodes for device links"] == 43_200
    assert got["nodes (partitioned)"] == 43_200
    assert got["streams"] == 4 + 2  # the default layout and the users split in two ranges
    assert got["consumers, at most"] == 6 * 43_200
    assert got["filter subjects per users consumer, by channel"] == 4  # 86,400 x 2 / 43,200
    assert got["users consumer config by channel / NATS max payload"] == pytest.approx(4 * 20 / 1_000)
    # 8 partitions on 2 of 43,200 nodes each: a node serves at most one, crdtmem.users.*.p7.*
    assert got["filter subjects per users consumer, by partition"] == 1
    assert got["users consumer config by partition, bytes"] == len("crdtmem.users.*.p7.*") + 3
    assert got["users streams for the publish rate"] == 2  # 6/s / (10/s x 0.5)
    assert got["users streams for the retained bytes"] == 1  # 172,800 x 250 B x 2 days in 1 GB
    assert got["partitions per users stream"] == 4  # 8 partitions in 2 ranges
    assert got["index vector RAM"] == pytest.approx(864_000 * (16 + 128) / 1e9)
    assert got["index shards (Qdrant nodes)"] == math.ceil(864_000 * 144 / 1e6)
    per_user_peak = 2 * 3 / 86_400
    reached = {limit.name: limit.users_at_start for limit in limits}
    assert reached["every node applies every other node's writes"] == pytest.approx(
        1 * 0.5 * 4 / 3 / per_user_peak
    )
    # each of 4 nodes embeds a quarter of the writes and skips the rest
    assert reached["every node indexes every write"] == pytest.approx(
        0.5 / (per_user_peak * (1 / 16 + 3 / 32))
    )
    assert reached["one node's disk holds every memory"] == pytest.approx(1e9 / (10 * 1_000))
    assert reached["device links on each node"] == pytest.approx(5 * 4 / (5 * 0.5))
    assert [limit.users_at_start for limit in limits] == sorted(reached.values())


async def test_a_bounded_measurement_and_simulation(sim: ModuleType) -> None:
    measured = await sim.measure(memories=120, publishes=300, links=200, heartbeat_window=1.0)
    for name, value in vars(measured).items():
        # a second of 200 links' heartbeats may fall within one CPU clock tick of the server
        assert value >= 0 if name == "heartbeat_us" else value > 0, name
    assert measured.message_bytes > measured.delta_bytes, "a message carries the delta and its envelope"
    assert measured.stream_record_bytes > measured.message_bytes + measured.subject_bytes
    workload = sim.Workload()
    simulated = sim.simulate(workload, nodes=10, users=5_000)
    assert 1.0 <= simulated.busiest_node_over_mean < 1 / workload.utilization, "the planned headroom holds"
    rows, _ = sim.model(workload, measured)
    pushes = next(r.value for r in rows if r.name == "fan-out: device pushes per write")
    assert simulated.device_pushes_mean == pytest.approx(pushes, abs=0.1)
