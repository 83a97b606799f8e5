"""Search latency and index build speed of the vector engines, all measured in one run.

Every engine goes through its crdtmem adapter (``crdtmem.index.engines``), exactly as the indexer
uses it: ``upsert`` in batches of 256 (with the stale-version check), ``search`` with a
``SearchFilter(user_id=...)`` and limit 10. Engines:

- ``edge``: :class:`QdrantEdgeEngine`, Qdrant Edge embedded, a shard on disk;
- ``qdrant-local``: :class:`QdrantClientEngine.local`, qdrant-client local mode on disk;
- ``memory``: :class:`MemoryEngine`, exact brute force in plain Python (the reference for recall).

Data: 384-d random unit vectors (numpy, seeded) with indexer-shaped payloads: 100 users, 10 tenants,
kinds, topics, tags, channels, 2% deleted, 1% conflicted, ~150 characters of content. Each engine
grows through the sizes (default 1k, 10k, 100k) in a fresh directory; at every size it answers the
same seeded queries (a random unit vector, a random user) after a few untimed warm-up queries.
Engines take turns at every size, so slow drift of a shared machine hits them alike.

Reported per engine and size: search p50/p99 (ms), build throughput (points/s for that step), and at
the largest size the full rebuild time (every point upserted into an empty collection), recall@10
against the exact engine, and p50 speedup of Edge over qdrant-client local mode. Targets (issue):
Edge p50 <= 2 ms at 100k and >= 50x faster than qdrant-client local mode; ``--check`` exits 1 if
either is missed. ``--optimize`` also times ``QdrantEdgeEngine.optimize()`` (HNSW build) at the
largest size and measures filtered and unfiltered search after it.

qdrant-client local mode scores every point in Python (about 1 s per search at 100k), so it answers
fewer queries there (``--slow-queries``, default 20); the table says how many each engine answered.
The speedup over it compares the two engines on the same queries: Edge's p50 over exactly the queries
qdrant-client answered. That baseline is weak (pure-Python scoring), so the script also measures what
an application sees:

- end to end: ``Replica.search(text, user_id=...)`` on a replica whose index (Edge, the default
  hashing embedder) holds ``--e2e-memories`` memories of varied English text (``_text.py``),
  embedding the query and reading each hit's record from the store, against the engine alone
  (``engine.search`` with the query already embedded) on the same collection, the same queries, the
  same count, interleaved one by one. Reported as the ratio of the p50s (information, no target).

Run: ``python benchmarks/bench_search.py`` (about 4-5 min, most of it building qdrant-client local
mode to 100k and the end-to-end replica) or ``--quick`` (about 40 s: 1k and 10k points, 2,000
memories end to end). Results: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import _common
import _text
import numpy as np

from crdtmem import Replica
from crdtmem.index import IndexSettings
from crdtmem.index.base import Point, SearchFilter, VectorEngine
from crdtmem.index.engines import MemoryEngine, QdrantClientEngine, QdrantEdgeEngine

DIM = 384
BATCH = 256
LIMIT = 10
USERS = 100
KINDS = ("fact",) * 6 + ("preference",) * 2 + ("list", "conversation")
WORDS = [
    "user", "prefers", "dark", "mode", "meeting", "moved", "tuesday", "allergic", "peanuts", "project",
    "deadline", "friday", "likes", "jazz", "coffee", "black", "timezone", "berlin", "daughter",
    "birthday", "march", "flight", "booked", "aisle", "seat", "vegan",
]  # fmt: skip

TARGET_P50_MS = 2.0
TARGET_SPEEDUP = 50.0


def make_payload(i: int, rng: np.random.Generator) -> dict[str, Any]:
    user = f"user-{i % USERS:03d}"
    tenant = f"tenant-{i % 10}"
    channels = [f"user:{user}:memories"]
    if i % 5 == 0:
        channels.append(f"tenant:{tenant}:shared")
    topics = [f"topic-{int(t)}" for t in rng.choice(50, size=int(rng.integers(0, 3)), replace=False)]
    channels += [f"topic:{t}:updates" for t in topics]
    words = rng.choice(len(WORDS), size=24)
    return {
        "memory_id": f"01J{i:09d}",
        "version": i + 1,
        "kind": KINDS[i % len(KINDS)],
        "user_id": user,
        "tenant_id": tenant,
        "topics": topics,
        "channels": channels,
        "tags": [f"tag-{int(t)}" for t in rng.choice(20, size=int(rng.integers(1, 4)), replace=False)],
        "deleted": i % 50 == 7,
        "conflicted": i % 100 == 3,
        "model": "hashing-384",
        "content": " ".join(WORDS[int(w)] for w in words)[:150],
    }


def unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


@dataclass
class Dataset:
    vectors: np.ndarray
    payloads: list[dict[str, Any]]
    queries: list[tuple[list[float], SearchFilter]]

    def points(self, start: int, stop: int) -> list[Point]:
        rows = self.vectors[start:stop].tolist()
        return [Point(p["memory_id"], row, p) for p, row in zip(self.payloads[start:stop], rows, strict=True)]


def make_dataset(size: int, queries: int, seed: int = 7) -> Dataset:
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(rng, size)
    payloads = [make_payload(i, rng) for i in range(size)]
    query_vectors = unit_vectors(rng, queries).tolist()
    users = rng.integers(0, USERS, size=queries)
    flts = [SearchFilter(user_id=f"user-{int(u):03d}") for u in users]
    return Dataset(vectors, payloads, list(zip(query_vectors, flts, strict=True)))


@dataclass
class Step:
    size: int
    build_seconds: float
    added: int
    latencies_ms: list[float]
    hits: list[list[str]] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    @property
    def build_rate(self) -> float:
        return self.added / self.build_seconds if self.build_seconds else float("nan")


@dataclass
class EngineRun:
    label: str
    engine: VectorEngine
    max_queries: Callable[[int], int]
    loaded: int = 0
    build_seconds: float = 0.0
    steps: list[Step] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


def grow(run: EngineRun, data: Dataset, size: int) -> tuple[int, float]:
    added = size - run.loaded
    start = time.perf_counter()
    for lo in range(run.loaded, size, BATCH):
        written = run.engine.upsert(data.points(lo, min(size, lo + BATCH)))
        assert written == min(size, lo + BATCH) - lo, f"{run.label}: a fresh point was not written"
    seconds = time.perf_counter() - start
    run.loaded = size
    run.build_seconds += seconds
    return added, seconds


def measure(
    engine: VectorEngine,
    queries: Sequence[tuple[list[float], SearchFilter]],
    warmup: int = 5,
    keep: int = 50,
) -> tuple[list[float], list[list[str]]]:
    for vector, flt in queries[:warmup]:
        engine.search(vector, flt, LIMIT)
    latencies, hits = [], []
    for n, (vector, flt) in enumerate(queries):
        start = time.perf_counter()
        found = engine.search(vector, flt, LIMIT)
        latencies.append((time.perf_counter() - start) * 1000)
        if flt.user_id is not None:
            assert all(h.payload["user_id"] == flt.user_id for h in found), "a hit of another user"
        if n < keep:
            hits.append([h.id for h in found])
    return latencies, hits


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    pairs = list(zip(found, exact, strict=False))
    total = sum(len(e) for _, e in pairs)
    return sum(len(set(f) & set(e)) for f, e in pairs) / total if total else float("nan")


def open_engines(names: Sequence[str], root: Path, queries: int, slow_queries: int) -> list[EngineRun]:
    runs = []
    for name in names:
        if name == "edge":
            runs.append(EngineRun(name, QdrantEdgeEngine(root / "edge"), lambda size: queries))
        elif name == "qdrant-local":
            runs.append(
                EngineRun(
                    name,
                    QdrantClientEngine.local(root / "qdrant-local", "bench"),
                    lambda size: queries if size <= 1_000 else max(slow_queries, queries * 1_000 // size),
                )
            )
        elif name == "memory":
            runs.append(
                EngineRun(
                    name, MemoryEngine(), lambda size: queries if size <= 10_000 else max(slow_queries, 50)
                )
            )
        else:
            raise SystemExit(f"unknown engine {name!r}: use edge, qdrant-local, memory")
    for run in runs:
        run.engine.ensure_collection(DIM)
    return runs


def optimize_edge(run: EngineRun, data: Dataset, queries: int) -> None:
    engine = run.engine
    assert isinstance(engine, QdrantEdgeEngine)
    unfiltered = [(v, SearchFilter()) for v, _ in data.queries[:queries]]
    before, _ = measure(engine, unfiltered)
    start = time.perf_counter()
    engine.optimize()
    run.extra["optimize_s"] = time.perf_counter() - start
    after_filtered, _ = measure(engine, data.queries[:queries])
    after, _ = measure(engine, unfiltered)
    run.extra["unfiltered_p50_ms_before_optimize"] = statistics.median(before)
    run.extra["filtered_p50_ms_after_optimize"] = statistics.median(after_filtered)
    run.extra["unfiltered_p50_ms_after_optimize"] = statistics.median(after)


async def end_to_end(root: Path, memories: int, queries: int) -> dict[str, float]:
    """``Replica.search`` against ``engine.search`` on the same Edge collection and queries."""
    rng = random.Random(13)
    users = 100
    async with Replica(
        root / "e2e.db", replica_id="e2e", synchronous="OFF", index=IndexSettings(engine="edge")
    ) as replica:
        assert replica.index is not None
        start = time.perf_counter()
        for first in range(0, memories, 250):
            await asyncio.gather(
                *(
                    replica.add(_text.sentence(rng), user_id=f"user-{i % users:03d}")
                    for i in range(first, min(memories, first + 250))
                )
            )
        await replica.index.wait_idle(timeout=3600)
        built = time.perf_counter() - start
        engine, embedder = replica.index.engine, replica.index.embedder
        asked = [
            (" ".join(_text.sentence(rng).split()[:6]), f"user-{rng.randrange(users):03d}")
            for _ in range(queries)
        ]
        vectors = embedder.embed([q for q, _ in asked])
        for (query, user), vector in list(zip(asked, vectors, strict=True))[:5]:  # warm-up
            await replica.search(query, user_id=user)
            engine.search(vector, SearchFilter(user_id=user), LIMIT)
        full, alone = [], []
        for n, ((query, user), vector) in enumerate(zip(asked, vectors, strict=True)):
            order = ("replica", "engine") if n % 2 == 0 else ("engine", "replica")
            for side in order:
                started = time.perf_counter()
                if side == "replica":
                    await replica.search(query, user_id=user)
                    full.append((time.perf_counter() - started) * 1000)
                else:
                    engine.search(vector, SearchFilter(user_id=user), LIMIT)
                    alone.append((time.perf_counter() - started) * 1000)
    return {
        "memories": memories,
        "queries": queries,
        "build_s": built,
        "replica_p50_ms": statistics.median(full),
        "replica_p99_ms": Step(memories, 0, 0, full).p99,
        "engine_p50_ms": statistics.median(alone),
        "engine_p99_ms": Step(memories, 0, 0, alone).p99,
    }


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1k and 10k points, fewer queries: about 30 s")
    p.add_argument("--dir", default=None, help="directory for the engines' files (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--check", action="store_true", help="exit 1 when a target at 100k is missed")
    p.add_argument("--sizes", default=None, help="comma-separated point counts (default 1000,10000,100000)")
    p.add_argument("--engines", default="edge,qdrant-local,memory", help="comma-separated engines")
    p.add_argument("--queries", type=int, default=None, help="timed searches per engine and size (200)")
    p.add_argument(
        "--slow-queries", type=int, default=None, help="searches for qdrant-local and memory past 1k (20)"
    )
    p.add_argument("--optimize", action="store_true", help="also time Edge optimize() at the largest size")
    p.add_argument(
        "--e2e-memories",
        type=int,
        default=None,
        help="memories in the end-to-end Replica.search run (default 20000, quick 2000; 0 skips it)",
    )
    args = p.parse_args()
    sizes = (
        sorted(int(s) for s in args.sizes.split(","))
        if args.sizes
        else ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    )
    queries = args.queries or (100 if args.quick else 200)
    slow_queries = args.slow_queries or (10 if args.quick else 20)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]

    _common.print_machine()
    libraries = f"qdrant-client {version('qdrant-client')}, qdrant-edge-py {version('qdrant-edge-py')}"
    print(f"{libraries}, numpy {np.__version__}; sizes {sizes}, {DIM}-d, {USERS} users, batches of {BATCH}")
    began = time.perf_counter()
    start = time.perf_counter()
    data = make_dataset(sizes[-1], queries)
    print(
        f"dataset: {sizes[-1]:,} points, {queries} queries ({time.perf_counter() - start:.1f} s, not timed)"
    )

    # qdrant-client warns past 20k points in local mode; that is what this benchmark measures
    warnings.filterwarnings("ignore", "Local mode is not recommended", UserWarning)
    with _common.workdir(args) as root:
        runs = open_engines(names, root, queries, slow_queries)
        try:
            for size in sizes:
                for run in runs:
                    added, seconds = grow(run, data, size)
                    count = run.max_queries(size)
                    latencies, hits = measure(run.engine, data.queries[:count])
                    run.steps.append(Step(size, seconds, added, latencies, hits))
                    step = run.steps[-1]
                    print(
                        f"  {run.label:<13}{size:>8,} points: build {step.build_rate:>9,.0f} points/s, "
                        f"search p50 {step.p50:8.3f} ms p99 {step.p99:8.3f} ms ({count} queries)",
                        flush=True,
                    )
            edge = next((r for r in runs if r.label == "edge"), None)
            if args.optimize and edge is not None:
                optimize_edge(edge, data, queries)
                print(f"  edge optimize(): {edge.extra['optimize_s']:.1f} s", flush=True)
        finally:
            for run in runs:
                run.engine.close()
        e2e_memories = (
            args.e2e_memories if args.e2e_memories is not None else (2_000 if args.quick else 20_000)
        )
        e2e = asyncio.run(end_to_end(root, e2e_memories, queries)) if e2e_memories else None

    return report(args, runs, sizes, time.perf_counter() - began, e2e)


def report(
    args: argparse.Namespace,
    runs: list[EngineRun],
    sizes: list[int],
    elapsed: float,
    e2e: dict[str, float] | None,
) -> int:
    print(f"\nSearch, filtered by user_id, limit {LIMIT} (ms); build = points/s of that step")
    print(f"{'engine':<14}{'points':>9}{'p50 ms':>10}{'p99 ms':>10}{'queries':>9}{'build pts/s':>13}")
    for run in runs:
        for step in run.steps:
            print(
                f"{run.label:<14}{step.size:>9,}{step.p50:>10.3f}{step.p99:>10.3f}"
                f"{len(step.latencies_ms):>9}{step.build_rate:>13,.0f}"
            )
    largest = sizes[-1]
    print(f"\nRebuild of {largest:,} points (empty collection, batches of {BATCH}):")
    for run in runs:
        print(f"  {run.label:<13}{run.build_seconds:8.1f} s  ({largest / run.build_seconds:,.0f} points/s)")
    exact = next((r for r in runs if r.label == "memory"), None)
    recalls: dict[str, dict[int, float]] = {}
    if exact is not None:
        print(f"\nrecall@{LIMIT} against the exact engine (first queries of each size):")
        for run in runs:
            if run is exact:
                continue
            recalls[run.label] = {
                s.size: recall(s.hits, e.hits) for s, e in zip(run.steps, exact.steps, strict=True)
            }
            print(f"  {run.label:<13}" + "  ".join(f"{k:,}: {v:.3f}" for k, v in recalls[run.label].items()))
    for run in runs:
        for key, value in run.extra.items():
            print(f"  {run.label} {key}: {value:.3f}")

    by_label = {r.label: r for r in runs}
    ratios, met = [], []
    if "edge" in by_label:
        edge_p50 = by_label["edge"].steps[-1].p50
        ok = edge_p50 <= TARGET_P50_MS if largest >= 100_000 else None
        verdict = "" if ok is None else f"  target <= {TARGET_P50_MS} ms: {'MET' if ok else 'NOT MET'}"
        print(f"\nedge search p50 at {largest:,}: {edge_p50:.3f} ms{verdict}")
        met.append(ok)
    if "edge" in by_label and "qdrant-local" in by_label:
        for edge_step, local_step in zip(by_label["edge"].steps, by_label["qdrant-local"].steps, strict=True):
            same_queries = statistics.median(edge_step.latencies_ms[: len(local_step.latencies_ms)])
            speedup = local_step.p50 / same_queries
            is_target = edge_step.size == largest and largest >= 100_000
            ok = speedup >= TARGET_SPEEDUP if is_target else None
            verdict = "" if ok is None else f"  target >= {TARGET_SPEEDUP:g}x: {'MET' if ok else 'NOT MET'}"
            print(
                f"speedup edge / qdrant-local at {edge_step.size:>7,}: {speedup:9.1f}x "
                f"(p50 over the same {len(local_step.latencies_ms)} queries){verdict}"
            )
            ratios.append(
                {
                    "name": f"search p50 edge / qdrant-local, {edge_step.size:,} points",
                    "subject": "edge",
                    "baseline": "qdrant-local",
                    "value": speedup,
                    "low": speedup,
                    "high": speedup,
                    "of_medians": speedup,
                    "target": TARGET_SPEEDUP if is_target else None,
                    "met": ok,
                }
            )
            met.append(ok)
    if e2e is not None:
        e2e_ratio = e2e["replica_p50_ms"] / e2e["engine_p50_ms"]
        print(
            f"\nend to end, {e2e['memories']:,.0f} memories (built and indexed in {e2e['build_s']:.1f} s), "
            f"{e2e['queries']:.0f} queries each: Replica.search p50 {e2e['replica_p50_ms']:.3f} ms "
            f"p99 {e2e['replica_p99_ms']:.3f} ms; engine alone p50 {e2e['engine_p50_ms']:.3f} ms "
            f"p99 {e2e['engine_p99_ms']:.3f} ms; Replica.search / engine p50 {e2e_ratio:.2f}x (info)"
        )
        ratios.append(
            {
                "name": f"Replica.search / engine alone, p50, {e2e['memories']:,.0f} memories (info)",
                "subject": "Replica.search",
                "baseline": "engine.search",
                "value": e2e_ratio,
                "low": e2e_ratio,
                "high": e2e_ratio,
                "of_medians": e2e_ratio,
                "target": None,
                "met": None,
            }
        )
    print(f"\ntotal {elapsed:.0f} s")

    if args.json:
        result = {
            "benchmark": "search",
            "quick": bool(args.quick),
            "machine": {
                **_common.machine(),
                "qdrant-client": version("qdrant-client"),
                "qdrant-edge-py": version("qdrant-edge-py"),
            },
            "series": {
                f"{r.label} {s.size}": {"unit": "ms", "median": s.p50, "p99": s.p99, "rates": s.latencies_ms}
                for r in runs
                for s in r.steps
            },
            "builds": {r.label: {"seconds": r.build_seconds, "points": largest} for r in runs},
            "recall": recalls,
            "extra": {r.label: r.extra for r in runs},
            "ratios": ratios,
            "end_to_end": e2e,
            "seconds": elapsed,
        }
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if args.check and any(ok is False for ok in met) else 0


if __name__ == "__main__":
    sys.exit(main())
