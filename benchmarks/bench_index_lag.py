"""Write-to-searchable lag: from an acknowledged write until a search finds it, p50 and p99.

A replica with the embedded default index (Qdrant Edge, hashing embedder) holds 5,000 memories (500
with ``--quick``); then, one at a time, a new memory is written and the clock runs until ``search``
returns it (the indexer works off the write path, so this is the index lag a reader sees). Baseline
in the same run: embed + upsert + search of the same text straight on the engine (what the indexer
cannot beat).

    python benchmarks/bench_index_lag.py [--quick] [--json FILE] [--dir DIR]

Reported: p50 and p99 of both, and their p50 ratio (information, no target).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crdtmem import Replica
from crdtmem.index import IndexSettings, Point, SearchFilter


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    base, probes = (500, 50) if args.quick else (5_000, 200)
    with tempfile.TemporaryDirectory(prefix="crdtmem-bench-lag-", dir=args.dir) as tmp:
        async with Replica(
            Path(tmp) / "r.db", replica_id="r", synchronous="NORMAL", index=IndexSettings()
        ) as r:
            assert r.index is not None
            for i in range(base):
                await r.add(f"background memory number {i} about topic {i % 50}", user_id=f"u{i % 20}")
            await r.index.wait_idle(timeout=600)
            lags: list[float] = []
            raw: list[float] = []
            engine, embedder = r.index.engine, r.index.embedder
            for i in range(probes):
                text = f"probe {i} zebra{i} quartz{i}"
                started = time.perf_counter()
                memory = await r.add(text, user_id="probe")
                while True:
                    hits = await r.search(f"zebra{i} quartz{i}", user_id="probe", limit=1)
                    if hits and hits[0].memory.id == memory.id:
                        break
                    await asyncio.sleep(0.0005)
                lags.append((time.perf_counter() - started) * 1000)
                # baseline: the same work done directly, no store, no follower
                started = time.perf_counter()
                (vector,) = await asyncio.to_thread(embedder.embed, [text + " raw"])
                payload = {
                    "memory_id": f"raw{i}",
                    "version": 1,
                    "kind": "fact",
                    "user_id": "raw",
                    "tenant_id": None,
                    "topics": [],
                    "channels": [],
                    "tags": [],
                    "deleted": False,
                    "conflicted": False,
                    "model": embedder.model,
                    "content": text,
                }
                await asyncio.to_thread(engine.upsert, [Point(f"raw{i}", vector, payload)])
                await asyncio.to_thread(engine.search, vector, SearchFilter(user_id="raw"), 1)
                raw.append((time.perf_counter() - started) * 1000)
    print(f"write-to-searchable lag over {probes} writes, {base} memories indexed (edge, hashing)")
    for label, values in (("crdtmem write -> search finds it", lags), ("raw embed + upsert + search", raw)):
        print(f"  {label:<34} p50 {statistics.median(values):7.2f} ms   p99 {pct(values, 0.99):7.2f} ms")
    ratio = statistics.median(lags) / statistics.median(raw)
    print(f"  ratio p50 {ratio:.2f}x")
    if args.json:
        from _common import machine

        result = {
            "benchmark": "index_lag",
            "quick": bool(args.quick),
            "machine": machine(),
            "memories": base,
            "probes": probes,
            "lag_ms": {"p50": statistics.median(lags), "p99": pct(lags, 0.99)},
            "raw_ms": {"p50": statistics.median(raw), "p99": pct(raw, 0.99)},
            "ratios": [
                {
                    "name": "write-to-searchable / raw embed+upsert+search, p50 (info)",
                    "subject": "crdtmem",
                    "baseline": "raw",
                    "value": ratio,
                    "target": None,
                    "met": None,
                }
            ],
        }
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="fewer memories and probes: about 10 s")
    cli.add_argument("--json", default=None, help="also write the results as JSON to this file")
    cli.add_argument("--dir", default=None, help="where the replica's files go (default: a temp dir)")
    asyncio.run(main(cli.parse_args()))
