"""The capacity model of a crdtmem fleet (``docs/scale-out.md``, "Capacity model"), computed from
per-operation figures measured here, and checked by a simulation.

    python benchmarks/sim_capacity.py              # measure, print the model, check the doc's tables
    python benchmarks/sim_capacity.py --quick      # smaller measurement (about 20 s)
    python benchmarks/sim_capacity.py --from-doc   # no measurement: the model of the doc's inputs

Three parts:

- ``measure()``: per-operation figures from real parts in this process: the Yrs delta of a fact
  update, the bus message the outbox publishes for it (the same ``payload.encode`` call) and its
  JetStream file-store record, durable local writes/s (16 concurrent writers, SQLite FULL), remote
  deltas applied and acknowledged/s, SQLite bytes per memory, a search point's payload, memories/s
  a shared-mode indexer embeds and writes (Qdrant Edge, hashing embedder) and, on a second node
  holding the same states, checks and leaves out, bare JetStream publishes/s on one stream of a
  local ``nats-server`` (64 in flight), and a ``crdtmem serve`` process's memory per idle device
  link and CPU per WebSocket heartbeat.
- ``model()``: the paper arithmetic: subjects, streams, consumers, write rates, stream bytes, fan-out
  per write, nodes needed per resource, index shards, and, for a starting fleet, the number of users
  at which each limit bites.
- ``simulate()``: a Monte Carlo check of the two figures the arithmetic takes on trust: how evenly
  users hash onto nodes (the busiest node against the mean, by the same SHA-256 the bus uses for
  message ids), and how many of a writer's other devices are online at peak (the device fan-out).

``tests/test_capacity_model.py`` recomputes the doc's output table from the doc's input table, so the
doc cannot drift from this arithmetic, and runs a bounded measurement and simulation.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "scale-out.md"
DAY = 86_400
GB = 1e9


@dataclass(frozen=True)
class Workload:
    """What the model is asked about (the operator's assumptions, not measurements)."""

    users: int = 1_000_000
    memories_per_user: int = 1_000
    devices_per_user: int = 10
    writes_per_user_day: int = 100
    peak_factor: float = 4.0
    """Peak-hour write rate over the daily mean."""
    devices_online: float = 0.3
    """Fraction of a user's devices connected at peak."""
    stream_replicas: int = 3
    retention_days: int = 7
    start_nodes: int = 3
    """The fleet the limits are first reached on (every node holds every channel)."""
    copies_per_user: int = 2
    """Nodes holding each user's channel once nodes are partitioned by user."""
    utilization: float = 0.5
    """Plan each node at this fraction of its measured rate."""
    node_disk_gb: float = 2_000
    nats_disk_gb: float = 4_000
    api_max_bytes: int = 1_048_576
    """NATS max_payload: bounds a consumer's configuration (its filter subjects) in one request."""
    vector_dim: int = 384
    qdrant_node_ram_gb: float = 64
    node_ram_gb: float = 64
    heartbeat_s: float = 20
    """A device link's WebSocket heartbeat interval (the peer client's)."""
    partitions: int = 1_024
    """Partitions of the bus layout (``--bus-partitions``): a partitioned node's consumer filters on
    one wildcard subject per partition it serves, not one subject per user."""


@dataclass(frozen=True)
class Measured:
    """Per-operation figures, measured by :func:`measure` (or read from the doc)."""

    delta_bytes: float
    message_bytes: float
    stream_record_bytes: float
    local_writes_per_s: float
    applies_per_s: float
    store_bytes_per_memory: float
    point_payload_bytes: float
    index_points_per_s: float
    """Memories a shared-mode indexer embeds and writes per second (the first node to index them)."""
    index_skips_per_s: float
    """Memories a shared-mode indexer checks and leaves out per second (another node indexed them)."""
    publishes_per_s: float
    subject_bytes: float
    link_bytes: float
    """Server memory (RSS) per idle device link (a replication WebSocket after its hello)."""
    heartbeat_us: float
    """Server CPU per WebSocket heartbeat (a ping and its pong), in microseconds."""


# -- the model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    value: float
    unit: str
    how: str


@dataclass(frozen=True)
class Limit:
    name: str
    users_at_start: float
    """Users at which this limit is reached on the starting fleet (every node holds every user)."""
    action: str


def model(w: Workload, m: Measured) -> tuple[list[Row], list[Limit]]:
    """The capacity rows for ``w`` and the limits, smallest first (the first one bites first)."""
    users, k = w.users, w.copies_per_user
    writes_day = users * w.writes_per_user_day
    mean = writes_day / DAY
    peak = mean * w.peak_factor
    per_user_peak = w.writes_per_user_day * w.peak_factor / DAY
    stream_day = writes_day * m.stream_record_bytes
    retained = stream_day * w.retention_days
    memories = users * w.memories_per_user
    nodes_apply = math.ceil(peak * (k - 1) / (m.applies_per_s * w.utilization))
    nodes_local = math.ceil(peak / (m.local_writes_per_s * w.utilization))
    nodes_disk = math.ceil(memories * k * m.store_bytes_per_memory / (w.node_disk_gb * GB))
    index_work = 1 / m.index_points_per_s + (k - 1) / m.index_skips_per_s  # seconds per write
    nodes_index = math.ceil(peak * index_work / w.utilization)
    links = users * w.devices_per_user * w.devices_online
    links_per_node = min(
        w.utilization * w.heartbeat_s / (m.heartbeat_us / 1e6),
        w.utilization * w.node_ram_gb * GB / m.link_bytes,
    )
    nodes_links = math.ceil(links / links_per_node)
    nodes = max(nodes_apply, nodes_local, nodes_disk, nodes_index, nodes_links, k)
    filter_bytes = users * k / nodes * (m.subject_bytes + 3)
    served = math.ceil(w.partitions * k / nodes)  # partitions per node, each on k nodes
    wildcard = len(f"crdtmem.users.*.p{w.partitions - 1}.*")
    partition_bytes = served * (wildcard + 3)
    streams_rate = math.ceil(peak / (m.publishes_per_s * w.utilization))
    streams_bytes = math.ceil(retained / (w.nats_disk_gb * GB))  # a stream's replica on one server
    user_streams = max(streams_rate, streams_bytes)
    streams = 4 + (user_streams if user_streams > 1 else 0)  # the default users stream keeps the older
    vector_ram = memories * (4 * w.vector_dim + 128)  # float32 vector + HNSW links (m=16)
    rows = [
        Row("subjects (user channels + system)", users + 1, "", "one subject per channel"),
        Row(
            "streams",
            streams,
            "",
            "default layout (users, tenants, topics, system), and one per users range once split",
        ),
        Row("memories", memories, "", "users x memories per user"),
        Row("writes/s, daily mean", mean, "/s", "users x writes per day / 86,400"),
        Row("writes/s, peak", peak, "/s", "mean x peak factor"),
        Row("stream bytes per day", stream_day / GB, "GB", "writes per day x stream record bytes"),
        Row("stream bytes retained, per replica", retained / GB, "GB", "x retention days"),
        Row(
            "stream bytes retained, all replicas",
            retained * w.stream_replicas / GB,
            "GB",
            "x stream replicas",
        ),
        Row("fan-out: stream copies per write", w.stream_replicas, "", "stream replicas"),
        Row("fan-out: node deliveries per write", k, "", "nodes holding the user (partitioned)"),
        Row(
            "fan-out: device pushes per write",
            (w.devices_per_user - 1) * w.devices_online,
            "",
            "the writer's other devices x fraction online",
        ),
        Row("fan-out: index embeds per write", 1, "", "the first holder to index it"),
        Row("fan-out: index point reads per write", k, "", "every holder; k-1 skip the embedding"),
        Row("nodes for remote applies", nodes_apply, "", "peak x (k-1) / (applies/s x utilization)"),
        Row("nodes for local writes", nodes_local, "", "peak / (local writes/s x utilization)"),
        Row("nodes for disk", nodes_disk, "", "memories x k x store bytes / node disk"),
        Row(
            "nodes for indexing",
            nodes_index,
            "",
            "peak x (1/indexed/s + (k-1)/skipped/s) / utilization",
        ),
        Row("device links at peak", links, "", "users x devices x fraction online"),
        Row(
            "device links per node",
            links_per_node,
            "",
            "utilization x the lower of heartbeat s / CPU per heartbeat, RAM / bytes per link",
        ),
        Row("nodes for device links", nodes_links, "", "device links / links per node"),
        Row("nodes (partitioned)", nodes, "", "the largest of the five, at least k"),
        Row("consumers, at most", nodes * streams, "", "one durable pull consumer per node per stream"),
        Row(
            "filter subjects per users consumer, by channel",
            users * k / nodes,
            "",
            "users x k / nodes (a layout without partitions)",
        ),
        Row("users consumer config, by channel", filter_bytes / 1e6, "MB", "x (subject bytes + 3), JSON"),
        Row(
            "users consumer config by channel / NATS max payload",
            filter_bytes / w.api_max_bytes,
            "",
            "above 1: the consumer cannot be created",
        ),
        Row(
            "filter subjects per users consumer, by partition",
            served,
            "",
            "partitions x k / nodes, one wildcard subject each",
        ),
        Row(
            "users consumer config by partition, bytes",
            partition_bytes,
            "",
            "x (wildcard subject bytes + 3), JSON",
        ),
        Row(
            "users streams for the publish rate",
            streams_rate,
            "",
            "peak / (stream publishes/s x utilization)",
        ),
        Row(
            "users streams for the retained bytes",
            streams_bytes,
            "",
            "retained per replica / NATS server disk",
        ),
        Row(
            "partitions per users stream",
            math.ceil(w.partitions / user_streams),
            "",
            "partitions / the larger of the two: one StreamSpec per range of partitions",
        ),
        Row("index points", memories, "", "one per memory (tombstones included)"),
        Row("index vector RAM", vector_ram / GB, "GB", "points x (4 x dim + 128 HNSW)"),
        Row(
            "index shards (Qdrant nodes)",
            math.ceil(vector_ram / (w.qdrant_node_ram_gb * GB)),
            "",
            "vector RAM / RAM per node",
        ),
        Row(
            "index payload on disk",
            memories * m.point_payload_bytes / GB,
            "GB",
            "points x payload bytes",
        ),
    ]
    n0 = w.start_nodes
    util = w.utilization
    limits = [
        Limit(
            "every node applies every other node's writes",
            m.applies_per_s * util * n0 / (n0 - 1) / per_user_peak,
            "partition nodes by user (each user's channel on k nodes), so a write is applied k-1 times",
        ),
        Limit(
            "one node's disk holds every memory",
            w.node_disk_gb * GB / (w.memories_per_user * m.store_bytes_per_memory),
            "partition nodes by user",
        ),
        Limit(
            "every node indexes every write",
            util
            / (per_user_peak * (1 / (n0 * m.index_points_per_s) + (n0 - 1) / (n0 * m.index_skips_per_s))),
            "partition nodes by user: only a user's k holders index it",
        ),
        Limit(
            "device links on each node",
            links_per_node * n0 / (w.devices_per_user * w.devices_online),
            "add nodes (a device links to any node that holds its user)",
        ),
        Limit(
            "local writes spread over the fleet",
            m.local_writes_per_s * util * n0 / per_user_peak,
            "add nodes (devices connect to any node)",
        ),
        Limit(
            "one users stream's publish rate",
            m.publishes_per_s * util / per_user_peak,
            "split the users stream by partition range (a StreamSpec per range, ahead of the defaults)",
        ),
        Limit(
            "one users stream's retained bytes on a NATS server",
            w.nats_disk_gb * GB / (w.writes_per_user_day * w.retention_days * m.stream_record_bytes),
            "shorten the retention (nodes behind it catch up from document states) or split the stream by "
            "partition range",
        ),
    ]
    return rows, sorted(limits, key=lambda limit: limit.users_at_start)


def _figure(value: float, unit: str = "") -> str:
    if unit in ("GB", "MB") or (value and abs(value) < 100 and value != int(value)):
        text = f"{value:,.1f}" if abs(value) >= 1 else f"{value:.2f}"
    else:
        text = f"{round(value):,}"
    return f"{text} {unit}".strip() if unit not in ("/s", "") else (text + unit)


def render(w: Workload, m: Measured) -> str:
    """The doc's output table and the sentence on the first limit, as the doc holds them."""
    rows, limits = model(w, m)
    lines = ["| quantity | value | how |", "|---|---|---|"]
    lines += [f"| {r.name} | {_figure(r.value, r.unit)} | {r.how} |" for r in rows]
    lines += [
        "",
        f"Limits on a {w.start_nodes}-node fleet where every node holds every user, first to bite first:",
        "",
    ]
    lines += ["| limit | reached at (users) | what the operator does then |", "|---|---|---|"]
    lines += [f"| {lim.name} | {_figure(lim.users_at_start)} | {lim.action} |" for lim in limits]
    return "\n".join(lines)


# -- the doc's inputs --------------------------------------------------------------------------------

_INPUT_ROW = re.compile(r"^\| `(\w+)` \| ([-0-9.,]+) \|", re.M)


def inputs_from_doc(text: str) -> tuple[Workload, Measured]:
    """The workload and measured figures the doc's input table states (`name` | value | ...)."""
    found = {name: float(value.replace(",", "")) for name, value in _INPUT_ROW.findall(text)}
    ints = {f.name for f in fields(Workload) if f.type in ("int", int)}
    workload = Workload(
        **{f.name: (int if f.name in ints else float)(found[f.name]) for f in fields(Workload)}
    )
    measured = Measured(**{f.name: found[f.name] for f in fields(Measured)})
    return workload, measured


def render_inputs(w: Workload, m: Measured) -> str:
    lines = ["| input | value | kind |", "|---|---|---|"]
    for f in fields(w):
        value = getattr(w, f.name)
        shown = f"{value:,}" if f.type in ("int", int) else f"{value:,g}"
        lines.append(f"| `{f.name}` | {shown} | assumed |")
    for name, value in asdict(m).items():
        lines.append(f"| `{name}` | {round(value, 1):,} | measured |")
    return "\n".join(lines)


# -- the simulation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Simulated:
    busiest_node_over_mean: float
    """Users on the busiest node over the mean, users hashed onto nodes."""
    device_pushes_mean: float
    device_pushes_p99: float


def simulate(w: Workload, nodes: int, users: int, seed: int = 7) -> Simulated:
    """Hash ``users`` user ids onto ``nodes`` nodes (``copies_per_user`` distinct nodes each, from
    the SHA-256 of the id), and draw each writer's other online devices."""
    load = [0] * nodes
    for u in range(users):
        digest = int.from_bytes(hashlib.sha256(f"user-{u}@example.com".encode()).digest()[:8], "big")
        first = digest % nodes
        load[first] += 1
        for copy in range(1, min(w.copies_per_user, nodes)):  # the next copies on distinct nodes
            load[(first + 1 + (digest // nodes + copy - 1) % (nodes - 1)) % nodes] += 1
    rng = random.Random(seed)
    others = w.devices_per_user - 1
    pushes = sorted(sum(rng.random() < w.devices_online for _ in range(others)) for _ in range(20_000))
    return Simulated(
        max(load) / (sum(load) / nodes),
        statistics.fmean(pushes),
        float(pushes[int(0.99 * len(pushes))]),
    )


# -- the measurement ----------------------------------------------------------------------------------


async def measure(
    memories: int = 2_000, publishes: int = 3_000, links: int = 1_000, heartbeat_window: float = 10.0
) -> Measured:
    """Figures from real parts (see the module docstring); ``memories`` bounds the run."""
    sys.path.insert(0, str(ROOT))
    from crdtmem import Replica
    from crdtmem.bus.subjects import Layout, message_id
    from crdtmem.engine import payload as wire
    from crdtmem.index.embedders import HashingEmbedder
    from crdtmem.index.points import memory_text, payload

    rng = random.Random(1)
    words = [
        "tea",
        "coffee",
        "prefers",
        "dark",
        "mode",
        "meeting",
        "tuesday",
        "allergic",
        "peanuts",
        "lives",
        "oslo",
        "works",
        "remote",
    ]

    def text() -> str:
        return "The user " + " ".join(rng.choice(words) for _ in range(8))

    with tempfile.TemporaryDirectory() as tmp:
        async with Replica(Path(tmp) / "a.db", replica_id="node-a") as a:
            ids = [(await a.add(text(), user_id=f"user-{i % 100}@example.com")).id for i in range(memories)]
            marks = {c: a.version_vector(c) for c in a.store.channels()}
            queue = list(ids)
            started = time.perf_counter()

            async def writer() -> None:
                while queue:
                    await a.update(queue.pop(), content=text())

            await asyncio.gather(*(writer() for _ in range(16)))
            local = memories / (time.perf_counter() - started)
            updates = a.store.deltas_since(a.store.channels(), marks)
            layout = Layout.of()
            messages, records = [], []
            for record in updates:
                channel = next(iter(record.seqs))
                data = wire.encode(wire.Payload(a.id, [record], {}, a.keys_for([record])))
                subject = layout.subject(channel)
                msg_id = message_id(record.origin, channel, record.seqs[channel], data)
                header = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n"
                messages.append(data)
                # the JetStream file store's record: 22-byte header, subject, headers, data, 8-byte hash
                records.append((22 + len(subject) + len(header) + len(data) + 8, len(subject)))
            channels = a.store.channels()
            pages = []
            async with Replica(None, replica_id="reader") as reader:
                while True:  # pages of 256 deltas, as a peer (or the bus consumer) takes them
                    page = await a.export_since(channels, reader.version_vectors(channels), limit=256)
                    if not (await reader.apply(page)).applied:
                        break
                    pages.append(page)
            embedder = HashingEmbedder()
            payloads = [
                len(json.dumps(payload(m, embedder.model, memory_text(m))).encode())
                for m in (await a.list(limit=200))
            ]
            indexed = await _index_rate(a, Path(tmp) / "edge", embedder)
        store_bytes = sum(p.stat().st_size for p in Path(tmp).glob("a.db*"))  # closed: checkpointed
        async with Replica(Path(tmp) / "b.db", replica_id="node-b") as b:
            started = time.perf_counter()
            applied = sum([(await b.apply(page)).applied for page in pages])
            applies = applied / (time.perf_counter() - started)
            skipped = await _index_rate(b, Path(tmp) / "edge", embedder)  # a indexed these states
        publish_rate = await _bare_publishes(Path(tmp), messages, publishes)
        link_bytes, heartbeat_us = await _device_links(Path(tmp), links, heartbeat_window)
    return Measured(
        delta_bytes=statistics.fmean(len(r.update) for r in updates),
        message_bytes=statistics.fmean(len(d) for d in messages),
        stream_record_bytes=statistics.fmean(r for r, _ in records),
        local_writes_per_s=local,
        applies_per_s=applies,
        store_bytes_per_memory=store_bytes / memories,
        point_payload_bytes=statistics.fmean(payloads),
        index_points_per_s=indexed,
        index_skips_per_s=skipped,
        publishes_per_s=publish_rate,
        subject_bytes=statistics.fmean(s for _, s in records),
        link_bytes=link_bytes,
        heartbeat_us=heartbeat_us,
    )


async def _index_rate(replica: Any, path: Path, embedder: Any) -> float:
    """Memories/s a shared-mode indexer on ``replica`` gets through, into the Edge shard at ``path``."""
    from crdtmem.index.engines import QdrantEdgeEngine
    from crdtmem.index.indexer import Indexer

    engine = QdrantEdgeEngine(path)
    engine.ensure_collection(embedder.dim)  # not timed: once per engine
    await replica.settle()  # applied batches' records are written off the apply path
    count = replica.store.doc_count()
    started = time.perf_counter()
    async with Indexer(replica.store, replica.on_commit, engine, embedder, shared=True) as indexer:
        await indexer.wait_idle(timeout=600)
        return float(count / (time.perf_counter() - started))


async def _device_links(tmp: Path, links: int, window: float) -> tuple[float, float]:
    """A ``crdtmem serve`` process with ``links`` idle device links (replication WebSockets, hello
    exchanged, one user channel each): its RSS growth per link, and its CPU per heartbeat while every
    link pings once a second for ``window`` seconds."""
    import aiohttp

    from crdtmem.engine import payload as wire
    from crdtmem.sync.protocol import decode_frame, encode_frame
    from tests.support.processes import ServerProcess

    server = ServerProcess(tmp, "node", extra=["--synchronous", "NORMAL"]).start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        # no connector limit: every link holds its connection
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            held = []

            async def link(i: int) -> None:
                ws = await session.ws_connect(f"{server.url}/v1/sync/ws", heartbeat=1.0)
                hello = encode_frame(
                    "hello",
                    replica=f"device-{i}",
                    channels=[f"user:user-{i // 10}@example.com:memories"],
                    mode="eager",
                    interval_ms=1000,
                    vectors={},
                    versions=list(wire.VERSIONS),
                )
                await ws.send_bytes(hello)
                answer = await ws.receive(timeout=30)
                if decode_frame(answer.data).type != "hello":
                    raise RuntimeError(f"device link {i} refused: {answer.data!r:.200}")
                held.append(ws)

            warm = 20  # the first links allocate what every later one shares
            for i in range(warm):
                await link(i)
            await asyncio.sleep(0.5)
            before = _rss(pid)
            for start in range(warm, warm + links, 100):
                await asyncio.gather(*(link(i) for i in range(start, min(start + 100, warm + links))))
            await asyncio.sleep(0.5)
            per_link = (_rss(pid) - before) / links
            cpu, started = _cpu_seconds(pid), time.perf_counter()
            await asyncio.sleep(window)
            elapsed = time.perf_counter() - started
            heartbeats = (warm + links) * elapsed
            per_heartbeat = (_cpu_seconds(pid) - cpu) / heartbeats * 1e6
            for ws in held:
                await ws.close()
        return per_link, per_heartbeat
    finally:
        server.stop()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")


def _cpu_seconds(pid: int) -> float:
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / 100  # utime + stime, in clock ticks of 1/100 s


async def _bare_publishes(tmp: Path, messages: list[bytes], count: int) -> float:
    """JetStream publishes/s to one file-backed stream on a local nats-server, 64 in flight."""
    import nats

    from tests.support.nats import NatsServer

    server = NatsServer(tmp).start()
    try:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.>"])
        window: list[Any] = []
        started = time.perf_counter()
        for i in range(count):
            window.append(js.publish(f"bench.user.u{i % 100}", messages[i % len(messages)]))
            if len(window) == 64:
                await asyncio.gather(*window)
                window = []
        await asyncio.gather(*window)
        rate = count / (time.perf_counter() - started)
        await client.close()
        return rate
    finally:
        server.stop()


# -- the command --------------------------------------------------------------------------------------


def check_doc(text: str) -> list[str]:
    """What in the doc disagrees with the model of the doc's own inputs (empty: nothing)."""
    workload, measured = inputs_from_doc(text)
    expected = render(workload, measured)
    return [] if expected in text else [expected]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller measurement")
    parser.add_argument("--from-doc", action="store_true", help="model the doc's inputs, measure nothing")
    parser.add_argument("--json", action="store_true", help="print the measured figures as JSON")
    args = parser.parse_args()
    text = DOC.read_text()
    try:
        workload, recorded = inputs_from_doc(text)
    except KeyError as missing:
        print(f"the doc has no capacity inputs ({missing} missing): modelling the defaults")
        workload, recorded = Workload(), None
    problems = check_doc(text) if recorded is not None else []
    print(
        "doc tables agree with the model of its inputs"
        if not problems
        else "DOC DRIFTED; expected:\n" + problems[0]
    )
    if args.from_doc and recorded is not None:
        print(render(workload, recorded))
        return 1 if problems else 0
    sizes = (500, 1_000, 300, 3.0) if args.quick else (2_000, 3_000, 1_000, 10.0)
    measured = asyncio.run(measure(*sizes))
    if args.json:
        print(json.dumps(asdict(measured)))
    print(render_inputs(workload, measured))
    print()
    print(render(workload, measured))
    rows, _ = model(workload, measured)
    nodes = int(next(r.value for r in rows if r.name == "nodes (partitioned)"))
    sim = simulate(workload, nodes, 20_000 if args.quick else 200_000)
    print()
    print(
        f"simulation: busiest node {sim.busiest_node_over_mean:.3f}x the mean over {nodes} nodes; "
        f"device pushes per write mean {sim.device_pushes_mean:.2f}, p99 {sim.device_pushes_p99:.0f}"
    )
    if recorded is None:
        return 0
    _, first_recorded = model(workload, recorded)
    _, first_now = model(workload, measured)
    same = first_recorded[0].name == first_now[0].name
    print(
        f"first limit: doc '{first_recorded[0].name}', measured now '{first_now[0].name}': "
        + ("same" if same else "DIFFERENT")
    )
    return 0 if same and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
